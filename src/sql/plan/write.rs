//! `INSERT INTO products | events` and `DELETE FROM products | users`: rows and ids,
//! checked for shape and type.

use std::collections::BTreeSet;

use sqlparser::ast::{
    self, BinaryOperator, Expr, FromTable, InTarget, SetExpr, Spanned, TableFactor, TableObject,
};
use sqlparser::tokenizer::Span;

use crate::catalog::Product;
use crate::error::Result;
use crate::events::EventKind;
use crate::sql::parse::plan_error;

use super::expr::{chain, literal, number, single_name, string_arg, table_name_of, unnest, vector};
use super::{Ctx, Lit, NewEvent, Plan, Table};

// ---------------------------------------------------------------- INSERT

const PRODUCT_COLUMNS: [&str; 7] = [
    "id",
    "title",
    "description",
    "brand",
    "category",
    "price",
    "embedding",
];
const EVENT_COLUMNS: [&str; 4] = ["user_id", "item_id", "kind", "ts"];

pub(super) fn insert(ins: &ast::Insert, cx: Ctx) -> Result<Plan> {
    let TableObject::TableName(name) = &ins.table else {
        return Err(plan_error(
            cx.start,
            "expected INSERT INTO products or INSERT INTO events",
        ));
    };
    if is_synonyms(name) {
        return insert_synonyms(ins, cx);
    }
    let table = table_name_of(name, cx)?;
    if ins.on.is_some()
        || ins.returning.is_some()
        || ins.or.is_some()
        || ins.overwrite
        || ins.ignore
    {
        return Err(plan_error(cx.start, "expected INSERT INTO table (columns) VALUES (...): ON CONFLICT, RETURNING, OR, IGNORE and OVERWRITE are not supported (INSERT INTO products already replaces a product with the same id)"));
    }
    let values = match ins.source.as_deref().map(|q| &*q.body) {
        Some(SetExpr::Values(v)) => v,
        _ => {
            return Err(plan_error(
                cx.start,
                "expected VALUES (...) after the column list",
            ))
        }
    };
    let mut columns: Vec<(String, Span)> = Vec::new();
    for c in &ins.columns {
        let (n, span) = single_name(c, cx)?;
        if columns.iter().any(|(m, _)| *m == n) {
            return Err(cx.err(span, format!("expected each column once, found {n} twice")));
        }
        columns.push((n, span));
    }
    if columns.is_empty() {
        let defaults: &[&str] = match table {
            Table::Products => &PRODUCT_COLUMNS,
            Table::Events => &EVENT_COLUMNS,
            Table::Users => &[],
        };
        columns = defaults
            .iter()
            .map(|c| (c.to_string(), Span::empty()))
            .collect();
    }
    for row in &values.rows {
        if row.content.len() != columns.len() {
            return Err(cx.err(
                row.opening_token.0.span,
                format!(
                    "expected {} values (one per column), found {}",
                    columns.len(),
                    row.content.len()
                ),
            ));
        }
    }
    match table {
        Table::Products => insert_products(&columns, values, cx),
        Table::Events => insert_events(&columns, values, cx),
        Table::Users => Err(cx.err(
            name.span(),
            "users are created by their events; expected INSERT INTO events",
        )),
    }
}

fn optional_text(e: &Expr, column: &str, cx: Ctx) -> Result<Option<String>> {
    match literal(e) {
        Some(Lit::Null) => Ok(None),
        Some(Lit::Text(s)) => Ok(Some(s)),
        Some(Lit::Num { text, .. }) => Ok(Some(text)),
        Some(Lit::Bool(b)) => Ok(Some(b.to_string())),
        None => Err(cx.err_expr(e, format!("expected a literal for column {column}"))),
    }
}

fn insert_products(columns: &[(String, Span)], values: &ast::Values, cx: Ctx) -> Result<Plan> {
    if !columns.iter().any(|(c, _)| c == "id") {
        return Err(plan_error(
            cx.start,
            "expected an id column in INSERT INTO products",
        ));
    }
    let mut rows = Vec::with_capacity(values.rows.len());
    for row in &values.rows {
        let mut p = Product::default();
        for ((column, _), e) in columns.iter().zip(&row.content) {
            match column.as_str() {
                "id" => match optional_text(e, column, cx)? {
                    Some(id) => p.id = id,
                    None => return Err(cx.err_expr(e, "expected a product id, found NULL")),
                },
                "title" => p.title = optional_text(e, column, cx)?.unwrap_or_default(),
                "description" => p.description = optional_text(e, column, cx)?.unwrap_or_default(),
                "brand" => p.brand = optional_text(e, column, cx)?.unwrap_or_default(),
                "category" => p.category = optional_text(e, column, cx)?.unwrap_or_default(),
                "price" => {
                    p.price = match literal(e) {
                        Some(Lit::Null) => None,
                        _ => Some(number(e, "a price", cx)?),
                    }
                }
                "embedding" | "vector" => {
                    p.embedding = match literal(e) {
                        Some(Lit::Null) => None,
                        _ => Some(vector(e, cx)?),
                    }
                }
                other => {
                    if let Some(v) = optional_text(e, column, cx)? {
                        p.attributes.insert(other.to_string(), v);
                    }
                }
            }
        }
        rows.push(p);
    }
    Ok(Plan::InsertProducts(rows))
}

fn insert_events(columns: &[(String, Span)], values: &ast::Values, cx: Ctx) -> Result<Plan> {
    let mut idx = [None; 4];
    for (i, (c, span)) in columns.iter().enumerate() {
        let slot = match c.as_str() {
            "user_id" | "user" => 0,
            "item_id" | "item" => 1,
            "kind" => 2,
            "ts" | "timestamp" => 3,
            other => {
                return Err(cx.err(
                    *span,
                    format!(
                        "unknown column {other} in events; expected user_id, item_id, kind, ts"
                    ),
                ))
            }
        };
        idx[slot] = Some(i);
    }
    let (Some(iu), Some(ii), Some(ik)) = (idx[0], idx[1], idx[2]) else {
        return Err(plan_error(
            cx.start,
            "expected columns user_id, item_id and kind (ts is optional, default now)",
        ));
    };
    let mut rows = Vec::with_capacity(values.rows.len());
    for row in &values.rows {
        let cell = |i: usize| row.content.get(i);
        let text = |i: usize, what: &str| -> Result<String> {
            match cell(i) {
                Some(e) => string_arg(e, what, cx),
                None => Err(plan_error(cx.start, format!("missing {what}"))),
            }
        };
        let user = text(iu, "a user id")?;
        let item = text(ii, "an item id")?;
        let kind = match cell(ik) {
            Some(e) => match literal(e) {
                Some(Lit::Text(s)) => EventKind::parse(&s).filter(|k| !matches!(k, EventKind::Rating(_))).ok_or_else(|| {
                    cx.err_expr(e, format!("expected an event kind 'view', 'click', 'cart', 'purchase' or a rating number, found '{s}'"))
                })?,
                Some(Lit::Num { value, .. }) if (value as f32).is_finite() => EventKind::Rating(value as f32),
                _ => return Err(cx.err_expr(e, "expected an event kind 'view', 'click', 'cart', 'purchase' or a rating number")),
            },
            None => return Err(plan_error(cx.start, "missing kind")),
        };
        let ts = match idx[3].and_then(cell) {
            None => None,
            Some(e) => match literal(e) {
                Some(Lit::Null) => None,
                Some(Lit::Num { text, .. }) => Some(text.parse::<i64>().map_err(|_| {
                    cx.err_expr(
                        e,
                        format!("expected ts as integer unix seconds, found {text}"),
                    )
                })?),
                _ => return Err(cx.err_expr(e, "expected ts as integer unix seconds")),
            },
        };
        rows.push(NewEvent {
            user,
            item,
            kind,
            ts,
        });
    }
    Ok(Plan::InsertEvents(rows))
}

// ---------------------------------------------------------------- DELETE

pub(super) fn delete(del: &ast::Delete, cx: Ctx) -> Result<Plan> {
    let tables = match &del.from {
        FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
    };
    if !del.tables.is_empty()
        || tables.len() != 1
        || del.using.is_some()
        || del.returning.is_some()
        || del.limit.is_some()
        || !del.order_by.is_empty()
    {
        return Err(plan_error(
            cx.start,
            "expected DELETE FROM products|users WHERE id = '...'",
        ));
    }
    let twj = &tables[0];
    let TableFactor::Table {
        name, args: None, ..
    } = &twj.relation
    else {
        return Err(plan_error(
            cx.start,
            "expected DELETE FROM products or DELETE FROM users",
        ));
    };
    if !twj.joins.is_empty() {
        return Err(plan_error(cx.start, "expected one source without joins"));
    }
    if is_synonyms(name) {
        return delete_synonyms(del.selection.as_ref(), cx);
    }
    let table = table_name_of(name, cx)?;
    let (what, columns): (&str, &[&str]) = match table {
        Table::Products => ("products", &["id"]),
        Table::Users => ("users", &["id", "user_id"]),
        Table::Events => {
            return Err(cx.err(
                name.span(),
                "expected DELETE FROM products or users: events are not deleted one by one; DELETE FROM users WHERE id = '...' forgets a user's events",
            ))
        }
    };
    let Some(selection) = &del.selection else {
        return Err(plan_error(
            cx.start,
            format!("expected WHERE id = '...' (DELETE FROM {what} without WHERE is refused)"),
        ));
    };
    let mut ids = Vec::new();
    for part in chain(selection, &BinaryOperator::Or) {
        let shape = || {
            cx.err_expr(
                part,
                format!("expected id = '...' or id IN (...) in DELETE FROM {what}"),
            )
        };
        let column_ok = |e: &Expr| matches!(unnest(e), Expr::Identifier(i) if columns.iter().any(|c| i.value.eq_ignore_ascii_case(c)));
        match part {
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } if column_ok(left) => ids.push(string_arg(right, "an id", cx)?),
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } if column_ok(right) => ids.push(string_arg(left, "an id", cx)?),
            Expr::In {
                expr,
                target: InTarget::List(list),
                negated: false,
                ..
            } if column_ok(expr) => {
                for e in list {
                    ids.push(string_arg(e, "an id", cx)?);
                }
            }
            _ => return Err(shape()),
        }
    }
    let mut seen = BTreeSet::new();
    ids.retain(|id| seen.insert(id.clone()));
    Ok(match table {
        Table::Users => Plan::ForgetUsers(ids),
        _ => Plan::DeleteProducts(ids),
    })
}

// ---------------------------------------------------------------- synonyms

/// Whether a statement names the synonym table.
fn is_synonyms(name: &ast::ObjectName) -> bool {
    matches!(name.0.as_slice(), [part] if part.as_ident().is_some_and(|i| i.value.eq_ignore_ascii_case("synonyms")))
}

/// `INSERT INTO synonyms (word, synonym[, two_way]) VALUES (...)`; `two_way` defaults to
/// true.
fn insert_synonyms(ins: &ast::Insert, cx: Ctx) -> Result<Plan> {
    let values = match ins.source.as_deref().map(|q| &*q.body) {
        Some(SetExpr::Values(v)) => v,
        _ => {
            return Err(plan_error(
                cx.start,
                "expected INSERT INTO synonyms (word, synonym[, two_way]) VALUES (...)",
            ))
        }
    };
    let mut columns: Vec<String> = Vec::new();
    for c in &ins.columns {
        let (n, span) = single_name(c, cx)?;
        if !["word", "synonym", "two_way"].contains(&n.as_str()) || columns.contains(&n) {
            return Err(cx.err(
                span,
                format!("expected the columns word, synonym and optionally two_way, each once, found {n}"),
            ));
        }
        columns.push(n);
    }
    if columns.is_empty() {
        columns = vec!["word".into(), "synonym".into()];
    }
    if !columns.iter().any(|c| c == "word") || !columns.iter().any(|c| c == "synonym") {
        return Err(plan_error(
            cx.start,
            "expected columns word and synonym in INSERT INTO synonyms",
        ));
    }
    let mut rules = Vec::with_capacity(values.rows.len());
    for row in &values.rows {
        if row.content.len() != columns.len() {
            return Err(cx.err(
                row.opening_token.0.span,
                format!(
                    "expected {} values (one per column), found {}",
                    columns.len(),
                    row.content.len()
                ),
            ));
        }
        let (mut word, mut synonym, mut two_way) = (String::new(), String::new(), true);
        for (c, e) in columns.iter().zip(&row.content) {
            match c.as_str() {
                "word" => word = string_arg(e, "a word", cx)?,
                "synonym" => synonym = string_arg(e, "a synonym", cx)?,
                _ => {
                    two_way = match literal(e) {
                        Some(Lit::Bool(b)) => b,
                        _ => return Err(cx.err_expr(e, "expected two_way as true or false")),
                    }
                }
            }
        }
        rules.push((word, synonym, two_way));
    }
    Ok(Plan::AddSynonyms(rules))
}

/// `DELETE FROM synonyms WHERE word = '...' [AND synonym = '...']`.
fn delete_synonyms(selection: Option<&Expr>, cx: Ctx) -> Result<Plan> {
    const SHAPE: &str = "expected DELETE FROM synonyms WHERE word = '...' [AND synonym = '...']";
    let Some(selection) = selection else {
        return Err(plan_error(cx.start, SHAPE));
    };
    let (mut word, mut synonym) = (None, None);
    for part in chain(selection, &BinaryOperator::And) {
        let Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } = part
        else {
            return Err(cx.err_expr(part, SHAPE));
        };
        let slot = match unnest(left) {
            Expr::Identifier(i) if i.value.eq_ignore_ascii_case("word") => &mut word,
            Expr::Identifier(i) if i.value.eq_ignore_ascii_case("synonym") => &mut synonym,
            _ => return Err(cx.err_expr(part, SHAPE)),
        };
        if slot.is_some() {
            return Err(cx.err_expr(part, SHAPE));
        }
        *slot = Some(string_arg(right, "a word", cx)?);
    }
    let Some(word) = word else {
        return Err(plan_error(cx.start, SHAPE));
    };
    Ok(Plan::RemoveSynonyms { word, synonym })
}
