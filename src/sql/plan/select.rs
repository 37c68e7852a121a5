//! `SELECT` from a table (`products`, `events`) or a table function (`search`, `recommend`,
//! `similar`): the source, the columns, `ORDER BY`, `LIMIT`/`OFFSET`, and the named-argument
//! knobs ([`Tuning`]).

use sqlparser::ast::{
    self, Expr, FunctionArg, FunctionArgExpr, LimitClause, OrderByKind, OrderBySort, SelectItem,
    SetExpr, Spanned, TableFactor,
};
use sqlparser::tokenizer::Span;

use crate::channel::Fusion;
use crate::error::Result;
use crate::filter::Filter;
use crate::sql::parse::plan_error;

use super::aggregate::{self, AggFrom};
use super::expr::{
    count, field_of, literal, number, single_name, string_arg, unnest, vector, Scope,
};
use super::predicate::where_clause;
use super::suggest;
use super::trending;
use super::{Column, Ctx, Field, Lit, OrderKey, Plan, Retrieval, Retrieve, Scan, Table, Tuning};

pub(super) fn select(q: &ast::Query, explain: bool, cx: Ctx) -> Result<Plan> {
    if q.with.is_some()
        || q.fetch.is_some()
        || !q.locks.is_empty()
        || q.for_clause.is_some()
        || q.settings.is_some()
        || q.format_clause.is_some()
        || !q.pipe_operators.is_empty()
    {
        return Err(plan_error(
            cx.start,
            "expected SELECT columns FROM source [WHERE ...] [ORDER BY ...] [LIMIT n]: WITH, FETCH, FOR, SETTINGS, FORMAT and pipe operators are not supported",
        ));
    }
    let SetExpr::Select(s) = &*q.body else {
        return Err(plan_error(
            cx.start,
            "expected a single SELECT ... FROM (UNION, VALUES and subqueries are not supported)",
        ));
    };
    if s.distinct.is_some()
        || s.top.is_some()
        || s.into.is_some()
        || !s.lateral_views.is_empty()
        || s.qualify.is_some()
        || !s.sort_by.is_empty()
        || !s.cluster_by.is_empty()
        || !s.distribute_by.is_empty()
        || !s.named_window.is_empty()
        || s.prewhere.is_some()
        || !s.connect_by.is_empty()
        || s.exclude.is_some()
    {
        return Err(cx.err(s.select_token.0.span, "SELECT DISTINCT, TOP, INTO, windows and the like are not supported (count(DISTINCT col) is); expected SELECT columns FROM source [WHERE ...] [GROUP BY ...] [ORDER BY ...] [LIMIT n]"));
    }
    let [from] = s.from.as_slice() else {
        return Err(cx.err(s.select_token.0.span, "expected exactly one source after FROM: products, events, search(...), recommend(...) or similar(...)"));
    };
    if !from.joins.is_empty() {
        return Err(plan_error(cx.start, "expected one source without joins"));
    }
    let TableFactor::Table { name, args, .. } = &from.relation else {
        return Err(plan_error(
            cx.start,
            "expected products, events, search(...), recommend(...) or similar(...) after FROM",
        ));
    };
    let (n, nspan) = single_name(name, cx)?;
    let (limit, offset) = match &q.limit_clause {
        None => (None, 0),
        Some(LimitClause::LimitOffset {
            limit,
            offset,
            limit_by,
        }) => {
            if !limit_by.is_empty() {
                return Err(plan_error(cx.start, "expected LIMIT n [OFFSET m]"));
            }
            let l = match limit {
                Some(e) => Some(count(e, "LIMIT", cx)?),
                None => None,
            };
            let o = match offset {
                Some(o) => count(&o.value, "OFFSET", cx)?,
                None => 0,
            };
            (l, o)
        }
        Some(LimitClause::OffsetCommaLimit { offset, limit }) => (
            Some(count(limit, "LIMIT", cx)?),
            count(offset, "OFFSET", cx)?,
        ),
    };
    // Table functions whose rows are not products.
    if n == "suggest" || n == "trending" {
        let Some(a) = args else {
            let usage = if n == "suggest" {
                "suggest('typed text')"
            } else {
                "trending(since => unix seconds)"
            };
            return Err(cx.err(nspan, format!("{n} is a table function; expected {usage}")));
        };
        let plan = if n == "suggest" {
            suggest::plan(s, q, &a.args, nspan, limit, cx)?
        } else {
            trending::plan(s, q, &a.args, nspan, limit, cx)?
        };
        return Ok(if explain {
            Plan::Explain(Box::new(plan))
        } else {
            plan
        });
    }
    let (scope, source) = match args {
        Some(a) => (Scope::Hits, Some(table_function(&n, nspan, &a.args, cx)?)),
        None => match n.as_str() {
            "products" => (Scope::Products, None),
            "events" => (Scope::Events, None),
            "search" | "recommend" | "similar" => {
                return Err(cx.err(nspan, format!("{n} is a table function; expected {n}(...)")))
            }
            "users" => return Err(cx.err(nspan, "expected products or events: users cannot be listed; SELECT ... FROM events WHERE user_id = '...' shows one user's history")),
            _ => return Err(cx.err(nspan, format!("unknown table {n}; expected products, events, search(...), recommend(...) or similar(...)"))),
        },
    };
    let predicate = match &s.selection {
        Some(w) => Some(where_clause(w, scope, cx)?),
        None => None,
    };
    if aggregate::wanted(q, s) {
        let from = match source {
            Some((source, _)) => AggFrom::Function {
                source,
                span: nspan,
            },
            None if scope == Scope::Events => AggFrom::Table(Table::Events),
            None => AggFrom::Table(Table::Products),
        };
        return aggregate::plan(
            aggregate::Input {
                query: q,
                select: s,
                scope,
                from,
                predicate,
                limit,
                offset,
                explain,
            },
            cx,
        );
    }
    let mut columns = projection(&s.projection, scope, cx)?;
    let order = match &q.order_by {
        None => Vec::new(),
        Some(ob) => match &ob.kind {
            OrderByKind::All(_) => {
                return Err(plan_error(cx.start, "expected ORDER BY column [ASC|DESC]"))
            }
            OrderByKind::Expressions(list) => list
                .iter()
                .map(|o| {
                    let field = field_of(&o.expr, scope, cx)?
                        .ok_or_else(|| cx.err_expr(&o.expr, "expected a column to ORDER BY"))?;
                    let descending = match &o.options.sort {
                        Some(OrderBySort::Desc) => true,
                        Some(OrderBySort::Asc) | None => false,
                        Some(OrderBySort::Using(_)) => {
                            return Err(cx.err_expr(
                                &o.expr,
                                "expected ASC or DESC after the ORDER BY column",
                            ))
                        }
                    };
                    check_readable(&field, scope, o.expr.span(), cx)?;
                    Ok(OrderKey { field, descending })
                })
                .collect::<Result<Vec<_>>>()?,
        },
    };
    match source {
        Some((source, tuning)) => {
            let has_text = matches!(source, Retrieval::Search { text: Some(_), .. });
            if !has_text
                && columns
                    .iter()
                    .any(|c| matches!(c.field, Field::Highlight(_)))
            {
                return Err(cx.err(
                    nspan,
                    "highlight(...) marks the words a search matched; expected search('text'), not recommend(...), similar(...) or a vector search",
                ));
            }
            if explain && !columns.iter().any(|c| c.field == Field::Explanation) {
                columns.push(Column::of(Field::Explanation));
            }
            let (filter, residual) = match predicate {
                Some(p) => p.split(),
                None => (Filter::All, None),
            };
            Ok(Plan::Retrieve(Retrieve {
                source,
                filter,
                residual,
                columns,
                order,
                limit: limit.unwrap_or(10),
                offset,
                explain,
                tuning,
            }))
        }
        None => {
            let scan = Plan::Scan(Scan {
                table: if scope == Scope::Events {
                    Table::Events
                } else {
                    Table::Products
                },
                predicate,
                columns,
                order,
                limit,
                offset,
            });
            Ok(if explain {
                Plan::Explain(Box::new(scan))
            } else {
                scan
            })
        }
    }
}

/// Named arguments every table function takes (see [`Tuning`]).
const TUNING_ARGS: [&str; 9] = [
    "fusion",
    "alpha",
    "beta",
    "max_per_brand",
    "exclude_purchased",
    "candidates",
    "max_brand_share",
    "min_long_tail",
    "popularity_gamma",
];

fn table_function(
    name: &str,
    span: Span,
    args: &[FunctionArg],
    cx: Ctx,
) -> Result<(Retrieval, Tuning)> {
    let own: &[&str] = match name {
        "search" => &["text", "user", "vector", "typos"],
        "recommend" => &["user"],
        "similar" => &["item"],
        _ => {
            return Err(cx.err(span, format!("unknown table function {name}; expected search(...), recommend(...), similar(...), suggest(...) or trending(...)")))
        }
    };
    let allowed: Vec<&str> = own.iter().chain(TUNING_ARGS.iter()).copied().collect();
    let mut named: Vec<(&str, &Expr)> = Vec::new();
    let mut positional = 0;
    for a in args {
        let (key, e) = match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => {
                positional += 1;
                if positional > 1 || !named.is_empty() {
                    return Err(cx.err_expr(e, format!("expected at most one positional argument, first, in {name}(...); name the others, e.g. user => 'u1'")));
                }
                // search(vector) without text: a positional array is the vector.
                let key = if name == "search" && matches!(unnest(e), Expr::Array(_)) {
                    "vector"
                } else {
                    allowed[0]
                };
                (key, e)
            }
            FunctionArg::Named {
                name: n,
                arg: FunctionArgExpr::Expr(e),
                ..
            } => {
                let key = allowed
                    .iter()
                    .copied()
                    .find(|k| n.value.eq_ignore_ascii_case(k))
                    .ok_or_else(|| {
                        cx.err(
                            n.span,
                            format!(
                                "unknown argument {} of {name}; expected {}",
                                n.value,
                                allowed.join(", ")
                            ),
                        )
                    })?;
                (key, e)
            }
            _ => {
                return Err(cx.err(
                    span,
                    format!("expected arguments like {name}('...', name => value)"),
                ))
            }
        };
        if named.iter().any(|(k, _)| *k == key) {
            return Err(cx.err_expr(e, format!("expected each argument once, found {key} twice")));
        }
        named.push((key, e));
    }
    let get = |k: &str| named.iter().find(|(n, _)| *n == k).map(|(_, e)| *e);
    let tuning = tuning(&get, span, cx)?;
    let source = match name {
        "search" => {
            let text = get("text")
                .map(|e| string_arg(e, "the search text", cx))
                .transpose()?;
            let vector = get("vector").map(|e| vector(e, cx)).transpose()?;
            let user = get("user")
                .map(|e| string_arg(e, "a user id", cx))
                .transpose()?;
            if text.is_none() && vector.is_none() {
                return Err(cx.err(span, "expected search('text') or search(vector => [...])"));
            }
            Ok(Retrieval::Search { text, vector, user })
        }
        "recommend" => match get("user") {
            Some(e) => Ok(Retrieval::Recommend {
                user: string_arg(e, "a user id", cx)?,
            }),
            None => Err(cx.err(span, "expected recommend('user id')")),
        },
        _ => match get("item") {
            Some(e) => Ok(Retrieval::Similar {
                item: string_arg(e, "an item id", cx)?,
            }),
            None => Err(cx.err(span, "expected similar('item id')")),
        },
    }?;
    Ok((source, tuning))
}

fn tuning<'a>(get: &dyn Fn(&str) -> Option<&'a Expr>, span: Span, cx: Ctx) -> Result<Tuning> {
    let alpha = get("alpha").map(|e| number(e, "alpha", cx)).transpose()?;
    let beta = get("beta").map(|e| number(e, "beta", cx)).transpose()?;
    let weights = |alpha: Option<f64>, beta: Option<f64>| -> Result<Fusion> {
        let (alpha, beta) = (alpha.unwrap_or(0.5) as f32, beta.unwrap_or(0.5) as f32);
        if alpha >= 0.0 && beta >= 0.0 && alpha.is_finite() && beta.is_finite() {
            Ok(Fusion::Linear { alpha, beta })
        } else {
            Err(cx.err(span, "expected alpha and beta as non-negative weights"))
        }
    };
    let weighted = alpha.is_some() || beta.is_some();
    let fusion = match get("fusion") {
        Some(e) => {
            let name = string_arg(e, "'auto', 'mlp', 'learned', 'linear' or 'rrf'", cx)?
                .to_ascii_lowercase();
            match name.as_str() {
                "linear" => Some(weights(alpha, beta)?),
                _ if weighted => {
                    return Err(cx.err_expr(
                        e,
                        format!(
                        "expected fusion => 'linear' with alpha and beta ({name} has no weights)"
                    ),
                    ))
                }
                "auto" => Some(Fusion::Auto),
                "mlp" => Some(Fusion::Mlp),
                "learned" => Some(Fusion::Learned),
                "rrf" => Some(Fusion::Rrf { k: 60.0 }),
                _ => {
                    return Err(cx.err_expr(
                        e,
                        format!(
                            "expected fusion => 'auto', 'mlp', 'learned', 'linear' or 'rrf', found '{name}'"
                        ),
                    ))
                }
            }
        }
        None if weighted => Some(weights(alpha, beta)?),
        None => None,
    };
    let exclude_purchased = match get("exclude_purchased") {
        Some(e) => match literal(e) {
            Some(Lit::Bool(b)) => Some(b),
            _ => return Err(cx.err_expr(e, "expected exclude_purchased => true or false")),
        },
        None => None,
    };
    let typos = match get("typos") {
        Some(e) => match literal(e) {
            Some(Lit::Bool(b)) => Some(b),
            _ => return Err(cx.err_expr(e, "expected typos => true or false")),
        },
        None => None,
    };
    // Each control's range is `Exposure::validate`'s; here it gets a position.
    use crate::exposure::{Exposure, MAX_POPULARITY_GAMMA};
    type Set = fn(Exposure, f32) -> Exposure;
    let controls: [(&str, String, Set); 3] = [
        (
            "max_brand_share",
            "a share in (0, 1]".to_string(),
            Exposure::max_brand_share,
        ),
        (
            "min_long_tail",
            "a share in [0, 1]".to_string(),
            Exposure::min_long_tail_share,
        ),
        (
            "popularity_gamma",
            format!("a number in [0, {MAX_POPULARITY_GAMMA}]"),
            Exposure::popularity_gamma,
        ),
    ];
    let mut exposure = Exposure::new();
    let mut exposed = false;
    for (key, range, set) in controls {
        let Some(e) = get(key) else { continue };
        let v = number(e, key, cx)? as f32;
        if set(Exposure::new(), v).validate().is_err() {
            return Err(cx.err_expr(e, format!("expected {key} => {range}")));
        }
        exposure = set(exposure, v);
        exposed = true;
    }
    Ok(Tuning {
        fusion,
        typos,
        exposure: exposed.then_some(exposure),
        max_per_brand: get("max_per_brand")
            .map(|e| count(e, "max_per_brand", cx))
            .transpose()?,
        exclude_purchased,
        candidates: get("candidates")
            .map(|e| count(e, "candidates", cx))
            .transpose()?,
    })
}

fn default_columns(scope: Scope) -> Vec<Column> {
    let fields = match scope {
        Scope::Hits => vec![
            Field::Id,
            Field::Title,
            Field::Brand,
            Field::Category,
            Field::Price,
            Field::Score,
        ],
        Scope::Products => vec![
            Field::Id,
            Field::Title,
            Field::Brand,
            Field::Category,
            Field::Price,
            Field::Attributes,
        ],
        Scope::Events => vec![Field::User, Field::Item, Field::Kind, Field::Ts],
    };
    fields.into_iter().map(Column::of).collect()
}

fn projection(items: &[SelectItem], scope: Scope, cx: Ctx) -> Result<Vec<Column>> {
    let mut out = Vec::new();
    for item in items {
        match item {
            SelectItem::Wildcard(_) => out.extend(default_columns(scope)),
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                let field = match highlight(e, scope, cx)? {
                    Some(f) => f,
                    None => field_of(e, scope, cx)?.ok_or_else(|| {
                        cx.err_expr(e, "expected a column name, attr('name') or *")
                    })?,
                };
                check_readable(&field, scope, e.span(), cx)?;
                let label = match item {
                    SelectItem::ExprWithAlias { alias, .. } => alias.value.clone(),
                    _ => field.name(),
                };
                out.push(Column { field, label });
            }
            other => return Err(cx.err(other.span(), "expected a column name, attr('name') or *")),
        }
    }
    Ok(out)
}

/// `highlight(col)` in a select list: a text column of a search's hits.
fn highlight(e: &Expr, scope: Scope, cx: Ctx) -> Result<Option<Field>> {
    let Expr::Function(f) = unnest(e) else {
        return Ok(None);
    };
    if !f.name.to_string().eq_ignore_ascii_case("highlight") {
        return Ok(None);
    }
    if scope != Scope::Hits {
        return Err(cx.err_expr(
            e,
            "highlight(...) marks the words a search matched; expected it over search('text')",
        ));
    }
    let arg = match &f.args {
        sqlparser::ast::FunctionArguments::List(list) => match list.args.as_slice() {
            [FunctionArg::Unnamed(FunctionArgExpr::Expr(a))] => Some(a),
            _ => None,
        },
        _ => None,
    };
    let field = match arg {
        Some(a) => field_of(a, scope, cx)?,
        None => None,
    };
    match field {
        Some(inner @ (Field::Title | Field::Description | Field::Brand | Field::Category)) => {
            Ok(Some(Field::Highlight(Box::new(inner))))
        }
        _ => Err(cx.err_expr(
            e,
            "expected highlight(title), highlight(description), highlight(brand) or highlight(category)",
        )),
    }
}

fn check_readable(field: &Field, scope: Scope, span: Span, cx: Ctx) -> Result<()> {
    match (field, scope) {
        (Field::Score | Field::Explanation, Scope::Products) => Err(cx.err(
            span,
            format!(
                "{} exists only for search(...), recommend(...) and similar(...)",
                field.name()
            ),
        )),
        _ => Ok(()),
    }
}
