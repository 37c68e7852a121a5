//! `SELECT ... FROM trending(since => 1700000000) [WHERE ...] [LIMIT n]`: the products the
//! most distinct shoppers touched since a time ([`Engine::trending`](crate::Engine::trending),
//! with its noise when the engine has `count_noise`). The columns are `id`, `title` and
//! `count`; `WHERE` takes product conditions (brand, category, price, attributes), evaluated
//! before counting; no `ORDER BY` (they come ranked). `LIMIT` defaults to 10.

use sqlparser::ast::{self, Expr, FunctionArg, FunctionArgExpr, Spanned};
use sqlparser::tokenizer::Span;

use crate::error::Result;
use crate::filter::Filter;

use super::expr::{literal, own_columns, Scope};
use super::predicate::where_clause;
use super::{Ctx, Lit, Plan};

/// A column of `trending(...)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrendingColumn {
    /// The product id.
    Id,
    /// Its title.
    Title,
    /// Distinct shoppers since the time (noisy with `count_noise`).
    Count,
}

/// `SELECT ... FROM trending(...)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Trending {
    /// Events at or after this time (unix seconds) count.
    pub since: i64,
    /// Which products count.
    pub filter: Filter,
    /// Output columns with their headings.
    pub columns: Vec<(TrendingColumn, String)>,
    /// At most this many.
    pub limit: usize,
}

const USAGE: &str = "expected trending(since => unix seconds), e.g. trending(since => 1700000000)";

/// Plans `trending(args)` as the source of `s`; `limit` is the statement's `LIMIT`.
pub(super) fn plan(
    s: &ast::Select,
    q: &ast::Query,
    args: &[FunctionArg],
    span: Span,
    limit: Option<usize>,
    cx: Ctx,
) -> Result<Plan> {
    let mut since = None;
    for a in args {
        let e = match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) if since.is_none() => e,
            FunctionArg::Named {
                name,
                arg: FunctionArgExpr::Expr(e),
                ..
            } if name.value.eq_ignore_ascii_case("since") && since.is_none() => e,
            FunctionArg::Named { name, .. } => {
                return Err(cx.err(
                    name.span,
                    format!(
                        "unknown or repeated argument {} of trending; {USAGE}",
                        name.value
                    ),
                ))
            }
            _ => return Err(cx.err(span, USAGE)),
        };
        since = Some(seconds(e, cx)?);
    }
    let Some(since) = since else {
        return Err(cx.err(span, USAGE));
    };
    let filter = match &s.selection {
        None => Filter::All,
        Some(w) => match where_clause(w, Scope::Products, cx)?.split() {
            (filter, None) => filter,
            (_, Some(_)) => {
                return Err(cx.err(
                    w.span(),
                    "trending(...) takes WHERE conditions on products that combine with AND (brand, category, price, attributes)",
                ))
            }
        },
    };
    if let Some(ob) = &q.order_by {
        return Err(cx.err(
            ob.span(),
            "trending(...) takes no ORDER BY: its products come ranked by count",
        ));
    }
    let columns = own_columns(
        &s.projection,
        "trending",
        &[
            (&["id"], TrendingColumn::Id),
            (&["title"], TrendingColumn::Title),
            (&["count"], TrendingColumn::Count),
        ],
        cx,
    )?;
    Ok(Plan::Trending(Trending {
        since,
        filter,
        columns,
        limit: limit.unwrap_or(10),
    }))
}

/// `since`: whole unix seconds, not negative.
fn seconds(e: &Expr, cx: Ctx) -> Result<i64> {
    match literal(e) {
        Some(Lit::Num { text, .. }) => match text.parse::<i64>() {
            Ok(v) if v >= 0 => Ok(v),
            _ => Err(cx.err_expr(
                e,
                format!("expected since as whole unix seconds >= 0, found {text}"),
            )),
        },
        _ => Err(cx.err_expr(e, "expected since as whole unix seconds >= 0")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trending_columns_arguments_and_errors() {
        let Ok(Plan::Trending(t)) = crate::sql::plan(
            "SELECT id, count AS n FROM trending(since => 1700000000) WHERE brand = 'Acme' LIMIT 3",
        ) else {
            panic!("not a trending plan")
        };
        assert_eq!(t.since, 1_700_000_000);
        assert_eq!(t.limit, 3);
        assert_eq!(t.filter, Filter::brand("Acme"));
        assert_eq!(
            t.columns,
            [
                (TrendingColumn::Id, "id".to_string()),
                (TrendingColumn::Count, "n".to_string())
            ]
        );
        let Ok(Plan::Trending(t)) = crate::sql::plan("SELECT * FROM trending(0)") else {
            panic!("not a trending plan")
        };
        assert_eq!((t.since, t.limit, t.filter), (0, 10, Filter::All));
        assert_eq!(t.columns.len(), 3);
        for (sql, words) in [
            ("SELECT * FROM trending()", "expected trending(since"),
            ("SELECT * FROM trending", "table function"),
            (
                "SELECT * FROM trending(since => 1, until => 2)",
                "unknown or repeated argument until",
            ),
            (
                "SELECT * FROM trending(since => 1, since => 2)",
                "unknown or repeated argument since",
            ),
            ("SELECT * FROM trending(since => -5)", "found -5"),
            ("SELECT * FROM trending(since => 1.5)", "found 1.5"),
            ("SELECT * FROM trending(since => 'yesterday')", "whole unix"),
            (
                "SELECT * FROM trending(since => 1) WHERE brand = 'a' OR title = 'b'",
                "combine with AND",
            ),
            (
                "SELECT * FROM trending(since => 1) ORDER BY count",
                "no ORDER BY",
            ),
            (
                "SELECT score FROM trending(since => 1)",
                "unknown column score",
            ),
        ] {
            match crate::sql::plan(sql) {
                Err(crate::Error::Syntax(e)) => assert!(e.contains(words), "{sql}: {e}"),
                other => panic!("{sql}: {other:?}"),
            }
        }
    }
}
