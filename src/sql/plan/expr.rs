//! sqlparser expressions to typed values, shared by every statement: table names, literals
//! (numbers, strings, vectors, counts), column references and operator chains.

use sqlparser::ast::{
    BinaryOperator, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, ObjectName,
    ObjectNamePart, SelectItem, Spanned, UnaryOperator, Value as SqlValue,
};
use sqlparser::tokenizer::Span;

use crate::error::Result;

use super::{Ctx, Field, Lit, Table};

pub(super) fn single_name(name: &ObjectName, cx: Ctx) -> Result<(String, Span)> {
    match name.0.as_slice() {
        [ObjectNamePart::Identifier(id)] => Ok((id.value.to_ascii_lowercase(), id.span)),
        _ => Err(cx.err(name.span(), format!("expected a table name, found {name}"))),
    }
}

pub(super) fn table_name_of(name: &ObjectName, cx: Ctx) -> Result<Table> {
    let (n, span) = single_name(name, cx)?;
    match n.as_str() {
        "products" => Ok(Table::Products),
        "events" => Ok(Table::Events),
        "users" => Ok(Table::Users),
        _ => Err(cx.err(
            span,
            format!("unknown table {n}; expected products, events or users"),
        )),
    }
}

// ---------------------------------------------------------------- literals

pub(super) fn unnest(mut e: &Expr) -> &Expr {
    while let Expr::Nested(inner) = e {
        e = inner;
    }
    e
}

/// A literal, with unary signs folded into numbers; `None` when `e` is not a literal.
pub(super) fn literal(e: &Expr) -> Option<Lit> {
    match unnest(e) {
        Expr::Value(v) => Some(match &v.value {
            SqlValue::Number(n, _) => Lit::Num {
                value: n.parse::<f64>().ok()?,
                text: n.clone(),
            },
            SqlValue::SingleQuotedString(s)
            | SqlValue::EscapedStringLiteral(s)
            | SqlValue::NationalStringLiteral(s)
            | SqlValue::UnicodeStringLiteral(s)
            | SqlValue::TripleSingleQuotedString(s) => Lit::Text(s.clone()),
            SqlValue::Boolean(b) => Lit::Bool(*b),
            SqlValue::Null => Lit::Null,
            _ => return None,
        }),
        Expr::UnaryOp {
            op: op @ (UnaryOperator::Minus | UnaryOperator::Plus),
            expr,
        } => match unnest(expr) {
            Expr::Value(v) => match &v.value {
                SqlValue::Number(n, _) => {
                    let value = n.parse::<f64>().ok()?;
                    let minus = *op == UnaryOperator::Minus;
                    Some(Lit::Num {
                        value: if minus { -value } else { value },
                        text: if minus { format!("-{n}") } else { n.clone() },
                    })
                }
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
}

pub(super) fn string_arg(e: &Expr, what: &str, cx: Ctx) -> Result<String> {
    match literal(e) {
        Some(Lit::Text(s)) => Ok(s),
        Some(Lit::Num { text, .. }) => Ok(text),
        _ => Err(cx.err_expr(e, format!("expected {what} as a quoted string"))),
    }
}

pub(super) fn number(e: &Expr, what: &str, cx: Ctx) -> Result<f64> {
    match literal(e) {
        Some(Lit::Num { value, .. }) if value.is_finite() => Ok(value),
        _ => Err(cx.err_expr(e, format!("expected {what} as a finite number"))),
    }
}

pub(super) fn count(e: &Expr, what: &str, cx: Ctx) -> Result<usize> {
    match literal(e) {
        Some(Lit::Num { text, .. }) => text.parse::<usize>().map_err(|_| {
            cx.err_expr(
                e,
                format!("expected {what} as a non-negative integer, found {text}"),
            )
        }),
        _ => Err(cx.err_expr(e, format!("expected {what} as a non-negative integer"))),
    }
}

/// `[0.1, -0.2, ...]` as a vector.
pub(super) fn vector(e: &Expr, cx: Ctx) -> Result<Vec<f32>> {
    let Expr::Array(arr) = unnest(e) else {
        return Err(cx.err_expr(e, "expected a vector literal such as [0.1, -0.2, 0.3]"));
    };
    if arr.elem.is_empty() {
        return Err(cx.err_expr(e, "expected a non-empty vector"));
    }
    arr.elem
        .iter()
        .map(|x| {
            let v = number(x, "a vector component", cx)? as f32;
            if v.is_finite() {
                Ok(v)
            } else {
                Err(cx.err_expr(x, "expected a vector component within the f32 range"))
            }
        })
        .collect()
}

/// The operands of a chain `a op b op c` (through parentheses), left to right, without
/// recursion.
pub(super) fn chain<'a>(e: &'a Expr, op: &BinaryOperator) -> Vec<&'a Expr> {
    let mut out = Vec::new();
    let mut stack = vec![e];
    while let Some(x) = stack.pop() {
        match unnest(x) {
            Expr::BinaryOp { left, op: o, right } if o == op => {
                stack.push(right);
                stack.push(left);
            }
            other => out.push(other),
        }
    }
    out
}

// ---------------------------------------------------------------- columns

/// What a `SELECT` reads: decides which columns exist.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    Hits,
    Products,
    Events,
}

/// The column an expression names: an identifier (unknown ones are attributes for products)
/// or `attr('name')`. `None` when the expression is not a column reference.
pub(super) fn field_of(e: &Expr, scope: Scope, cx: Ctx) -> Result<Option<Field>> {
    let (name, quoted, span) = match unnest(e) {
        Expr::Identifier(id) => (id.value.clone(), id.quote_style.is_some(), id.span),
        Expr::CompoundIdentifier(parts) => match parts.as_slice() {
            [table, col]
                if ["products", "events", "search", "recommend", "similar"]
                    .contains(&table.value.to_ascii_lowercase().as_str()) =>
            {
                (col.value.clone(), col.quote_style.is_some(), col.span)
            }
            _ => return Err(cx.err_expr(e, "expected a column name")),
        },
        Expr::Function(f)
            if ["count", "min", "max", "avg", "sum"]
                .contains(&f.name.to_string().to_ascii_lowercase().as_str()) =>
        {
            return Err(cx.err_expr(
                e,
                format!(
                    "{}(...) is an aggregate, which WHERE cannot use; filter groups with HAVING",
                    f.name.to_string().to_ascii_lowercase()
                ),
            ));
        }
        Expr::Function(f) if scope != Scope::Events => {
            let fname = f.name.to_string().to_ascii_lowercase();
            if fname != "attr" && fname != "attribute" {
                return Err(cx.err_expr(
                    e,
                    format!("unknown function {fname}; expected attr('name')"),
                ));
            }
            let FunctionArguments::List(list) = &f.args else {
                return Err(cx.err_expr(e, "expected attr('name')"));
            };
            return match list.args.as_slice() {
                [FunctionArg::Unnamed(FunctionArgExpr::Expr(arg))] => Ok(Some(Field::Attribute(
                    string_arg(arg, "an attribute name", cx)?,
                ))),
                _ => Err(cx.err_expr(e, "expected attr('name') with one quoted name")),
            };
        }
        _ => return Ok(None),
    };
    let lower = name.to_ascii_lowercase();
    let known = |n: &str| !quoted && lower == n || quoted && name == n;
    let field = match scope {
        Scope::Events => {
            if known("user_id") || known("user") {
                Field::User
            } else if known("item_id") || known("item") {
                Field::Item
            } else if known("kind") {
                Field::Kind
            } else if known("ts") || known("timestamp") {
                Field::Ts
            } else if known("value") {
                Field::Value
            } else {
                return Err(cx.err(
                    span,
                    format!(
                        "unknown column {name} in events; expected user_id, item_id, kind, ts or value"
                    ),
                ));
            }
        }
        Scope::Hits | Scope::Products => match () {
            _ if known("id") => Field::Id,
            _ if known("title") => Field::Title,
            _ if known("description") => Field::Description,
            _ if known("brand") => Field::Brand,
            _ if known("category") => Field::Category,
            _ if known("price") => Field::Price,
            _ if known("attributes") => Field::Attributes,
            _ if known("embedding") => Field::Embedding,
            _ if known("score") => Field::Score,
            _ if known("explanation") => Field::Explanation,
            _ => Field::Attribute(name),
        },
    };
    Ok(Some(field))
}

/// The output columns of a table function whose rows are not products (`suggest`,
/// `trending`): `*` for every column of `known` in order, or columns named by `known`'s
/// names (the first of each is its heading), with an alias each if given.
pub(super) fn own_columns<C: Copy>(
    projection: &[SelectItem],
    function: &str,
    known: &[(&[&str], C)],
    cx: Ctx,
) -> Result<Vec<(C, String)>> {
    let heading = |names: &[&str]| names.first().copied().unwrap_or_default().to_string();
    let headings: Vec<String> = known.iter().map(|(names, _)| heading(names)).collect();
    let expected = match headings.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => headings.join(""),
    };
    let mut columns = Vec::new();
    for item in projection {
        let (e, alias) = match item {
            SelectItem::Wildcard(_) => {
                columns.extend(known.iter().map(|(names, c)| (*c, heading(names))));
                continue;
            }
            SelectItem::UnnamedExpr(e) => (e, None),
            SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.value.clone())),
            other => return Err(cx.err(other.span(), format!("expected {expected} or *"))),
        };
        let Expr::Identifier(id) = unnest(e) else {
            return Err(cx.err_expr(e, format!("expected {expected}")));
        };
        let name = id.value.to_ascii_lowercase();
        let Some((names, column)) = known
            .iter()
            .find(|(names, _)| names.contains(&name.as_str()))
        else {
            return Err(cx.err(
                id.span,
                format!("unknown column {name} of {function}(...); expected {expected}"),
            ));
        };
        columns.push((*column, alias.unwrap_or_else(|| heading(names))));
    }
    Ok(columns)
}
