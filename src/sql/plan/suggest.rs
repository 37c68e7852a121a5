//! `SELECT ... FROM suggest('runn' [, user => 'u1']) [LIMIT n]`: search-as-you-type
//! ([`Engine::suggest`](crate::Engine::suggest)). Its rows are suggestions, not products:
//! the columns are `suggestion` (the text to show), `id` (the product a title suggestion
//! opens; `NULL` for a completed query) and `score`; no `WHERE` or `ORDER BY` (they come
//! ranked). `LIMIT` defaults to 8.

use sqlparser::ast::{self, FunctionArg, FunctionArgExpr, Spanned};
use sqlparser::tokenizer::Span;

use crate::error::Result;

use super::expr::{own_columns, string_arg};
use super::{Ctx, Plan};

/// A column of `suggest(...)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SuggestColumn {
    /// The text to show.
    Suggestion,
    /// The product a title suggestion stands for.
    Id,
    /// Its rank score.
    Score,
}

/// `SELECT ... FROM suggest(...)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Suggest {
    /// What is in the search box.
    pub text: String,
    /// The shopper whose affinities rank the titles.
    pub user: Option<String>,
    /// Output columns with their headings.
    pub columns: Vec<(SuggestColumn, String)>,
    /// At most this many.
    pub limit: usize,
}

/// Plans `suggest(args)` as the source of `s`; `limit` is the statement's `LIMIT`.
pub(super) fn plan(
    s: &ast::Select,
    q: &ast::Query,
    args: &[FunctionArg],
    span: Span,
    limit: Option<usize>,
    cx: Ctx,
) -> Result<Plan> {
    let mut text = None;
    let mut user = None;
    for a in args {
        match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) if text.is_none() => {
                text = Some(string_arg(e, "the typed text", cx)?);
            }
            FunctionArg::Named {
                name,
                arg: FunctionArgExpr::Expr(e),
                ..
            } if name.value.eq_ignore_ascii_case("user") && user.is_none() => {
                user = Some(string_arg(e, "a user id", cx)?);
            }
            FunctionArg::Named { name, .. } => {
                return Err(cx.err(
                    name.span,
                    format!(
                        "unknown or repeated argument {} of suggest; expected suggest('typed text', user => 'u1')",
                        name.value
                    ),
                ))
            }
            _ => {
                return Err(cx.err(
                    span,
                    "expected suggest('typed text') or suggest('typed text', user => 'u1')",
                ))
            }
        }
    }
    let Some(text) = text else {
        return Err(cx.err(span, "expected suggest('typed text')"));
    };
    if let Some(w) = &s.selection {
        return Err(cx.err(
            w.span(),
            "suggest(...) takes no WHERE: its suggestions are not products",
        ));
    }
    if let Some(ob) = &q.order_by {
        return Err(cx.err(
            ob.span(),
            "suggest(...) takes no ORDER BY: its suggestions come ranked",
        ));
    }
    let columns = own_columns(
        &s.projection,
        "suggest",
        &[
            (&["suggestion", "text"], SuggestColumn::Suggestion),
            (&["id"], SuggestColumn::Id),
            (&["score"], SuggestColumn::Score),
        ],
        cx,
    )?;
    Ok(Plan::Suggest(Suggest {
        text,
        user,
        columns,
        limit: limit.unwrap_or(8),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggest_columns_arguments_and_errors() {
        let Ok(Plan::Suggest(s)) = crate::sql::plan(
            "SELECT suggestion AS s, score FROM suggest('runn', user => 'u1') LIMIT 3",
        ) else {
            panic!("not a suggest plan")
        };
        assert_eq!(s.text, "runn");
        assert_eq!(s.user.as_deref(), Some("u1"));
        assert_eq!(s.limit, 3);
        assert_eq!(
            s.columns,
            [
                (SuggestColumn::Suggestion, "s".to_string()),
                (SuggestColumn::Score, "score".to_string())
            ]
        );
        for (sql, words) in [
            ("SELECT * FROM suggest()", "expected suggest('typed text')"),
            (
                "SELECT * FROM suggest('a', item => 'p1')",
                "unknown or repeated argument item",
            ),
            ("SELECT * FROM suggest('a') WHERE id = 'p1'", "no WHERE"),
            ("SELECT * FROM suggest('a') ORDER BY score", "no ORDER BY"),
            ("SELECT title FROM suggest('a')", "unknown column title"),
        ] {
            match crate::sql::plan(sql) {
                Err(e) => assert!(e.to_string().contains(words), "{sql}: {e}"),
                Ok(p) => panic!("{sql}: {p:?}"),
            }
        }
    }
}
