//! sqlparser's AST to a [`Plan`]: which verb, on which table, with which typed values.
//!
//! "Here is a parsed statement, what exactly does it ask for?" Every shape and type check
//! happens here, before anything touches an engine, so that a statement that plans can only
//! fail at execution for reasons that depend on the data (an unknown item, a vector of the
//! wrong dimension). Errors carry the position of the offending expression.
//!
//! Architecture Invariant: planning is a pure function of the text: no engine, no file
//! system, no clock. `IMPORT` paths are checked against the allowed directories when run.

use std::collections::BTreeSet;

use sqlparser::ast::{
    self, BinaryOperator, Expr, FromTable, FunctionArg, FunctionArgExpr, FunctionArguments,
    GroupByExpr, InTarget, LimitClause, ObjectName, ObjectNamePart, OrderByKind, OrderBySort,
    SelectItem, SetExpr, Spanned, Statement, TableFactor, TableObject, UnaryOperator,
    Value as SqlValue,
};
use sqlparser::tokenizer::Span;

use crate::catalog::{category_levels, Product};
use crate::channel::Fusion;
use crate::config::Limits;
use crate::error::{Error, Result};
use crate::events::EventKind;
use crate::filter::Filter;
use crate::import::OnError;

use super::parse::{plan_error, Parsed, Pos};

/// A table a statement reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    /// The catalog.
    Products,
    /// The interaction log.
    Events,
    /// Users (only `DELETE FROM users`, which forgets them, and `DESCRIBE`).
    Users,
}

/// A column that can be selected, compared or sorted on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    /// Product id.
    Id,
    /// Product title.
    Title,
    /// Product description.
    Description,
    /// Product brand.
    Brand,
    /// Product category path.
    Category,
    /// Product price.
    Price,
    /// Every attribute, as `key=value; ...`.
    Attributes,
    /// One attribute.
    Attribute(String),
    /// The product's vector.
    Embedding,
    /// Retrieval score (search, recommend, similar).
    Score,
    /// Why a hit is there (retrieval with `EXPLAIN`).
    Explanation,
    /// Event user id.
    User,
    /// Event item id.
    Item,
    /// Event kind: view, click, cart, purchase, or a rating's number.
    Kind,
    /// Event time, unix seconds.
    Ts,
}

impl Field {
    /// The column's name as a heading.
    pub fn name(&self) -> String {
        match self {
            Field::Id => "id".into(),
            Field::Title => "title".into(),
            Field::Description => "description".into(),
            Field::Brand => "brand".into(),
            Field::Category => "category".into(),
            Field::Price => "price".into(),
            Field::Attributes => "attributes".into(),
            Field::Attribute(k) => k.clone(),
            Field::Embedding => "embedding".into(),
            Field::Score => "score".into(),
            Field::Explanation => "explanation".into(),
            Field::User => "user_id".into(),
            Field::Item => "item_id".into(),
            Field::Kind => "kind".into(),
            Field::Ts => "ts".into(),
        }
    }

    fn numeric(&self) -> bool {
        matches!(self, Field::Price | Field::Score | Field::Ts)
    }
}

/// An output column: a field under a heading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    /// What is shown.
    pub field: Field,
    /// The heading (the field's name, or the `AS` alias).
    pub label: String,
}

impl Column {
    fn of(field: Field) -> Self {
        Column {
            label: field.name(),
            field,
        }
    }
}

/// A literal value in a condition.
#[derive(Clone, Debug, PartialEq)]
pub enum Lit {
    /// `NULL`.
    Null,
    /// `TRUE` / `FALSE`.
    Bool(bool),
    /// A number, with its text as written (used when it is compared with text).
    Num {
        /// The value.
        value: f64,
        /// The text as written, e.g. `42`.
        text: String,
    },
    /// A string.
    Text(String),
}

impl Lit {
    /// The literal as text (numbers as written).
    pub fn text(&self) -> Option<String> {
        match self {
            Lit::Null => None,
            Lit::Bool(b) => Some(b.to_string()),
            Lit::Num { text, .. } => Some(text.clone()),
            Lit::Text(s) => Some(s.clone()),
        }
    }
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `<>` or `!=`
    NotEq,
    /// `<`
    Lt,
    /// `<=`
    LtEq,
    /// `>`
    Gt,
    /// `>=`
    GtEq,
}

impl CmpOp {
    /// The operator with its operands swapped: `1 < price` is `price > 1`.
    fn flip(self) -> Self {
        match self {
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::LtEq => CmpOp::GtEq,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::GtEq => CmpOp::LtEq,
            other => other,
        }
    }

    /// Whether `ordering` (value compared with literal) satisfies the operator.
    pub fn holds(self, ordering: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            CmpOp::Eq => ordering == Equal,
            CmpOp::NotEq => ordering != Equal,
            CmpOp::Lt => ordering == Less,
            CmpOp::LtEq => ordering != Greater,
            CmpOp::Gt => ordering == Greater,
            CmpOp::GtEq => ordering != Less,
        }
    }
}

/// A `WHERE` condition. [`Pred::Filter`] leaves (brand, category, price, attributes) are
/// what the engine evaluates inside retrieval; the other leaves are checked on each row.
#[derive(Clone, Debug, PartialEq)]
pub enum Pred {
    /// A condition the engine's [`Filter`] expresses.
    Filter(Filter),
    /// `field op literal`.
    Cmp {
        /// The column.
        field: Field,
        /// The operator.
        op: CmpOp,
        /// The literal (never `NULL`).
        value: Lit,
    },
    /// `field IN (literals)`.
    In {
        /// The column.
        field: Field,
        /// The accepted values.
        values: Vec<Lit>,
    },
    /// `field LIKE pattern` with `%` (any run) and `_` (one character).
    Like {
        /// The column.
        field: Field,
        /// The pattern.
        pattern: String,
    },
    /// `field IS NULL` (an absent price, attribute, ...).
    IsNull(Field),
    /// Every sub-condition holds.
    And(Vec<Pred>),
    /// At least one sub-condition holds.
    Or(Vec<Pred>),
    /// The sub-condition does not hold.
    Not(Box<Pred>),
}

impl Pred {
    /// Nesting depth: a leaf is 1 (a [`Filter`] leaf counts its own depth).
    pub fn depth(&self) -> usize {
        let mut max = 0;
        let mut stack = vec![(self, 0usize)];
        while let Some((p, d)) = stack.pop() {
            match p {
                Pred::And(v) | Pred::Or(v) => {
                    max = max.max(d + 1);
                    stack.extend(v.iter().map(|c| (c, d + 1)));
                }
                Pred::Not(c) => {
                    max = max.max(d + 1);
                    stack.push((c, d + 1));
                }
                Pred::Filter(f) => max = max.max(d + f.depth()),
                _ => max = max.max(d + 1),
            }
        }
        max
    }

    /// The condition as a [`Filter`], when every leaf is one.
    pub fn to_filter(&self) -> Option<Filter> {
        Some(match self {
            Pred::Filter(f) => f.clone(),
            Pred::And(v) => Filter::And(v.iter().map(Pred::to_filter).collect::<Option<Vec<_>>>()?),
            Pred::Or(v) => Filter::Or(v.iter().map(Pred::to_filter).collect::<Option<Vec<_>>>()?),
            Pred::Not(c) => Filter::Not(Box::new(c.to_filter()?)),
            _ => return None,
        })
    }

    /// Splits into the part the engine can evaluate (the `AND`ed top-level conditions that
    /// are filters) and the rest, checked on each hit afterwards.
    pub fn split(self) -> (Filter, Option<Pred>) {
        let parts = match self {
            Pred::And(v) => v,
            other => vec![other],
        };
        let mut filters = Vec::new();
        let mut rest = Vec::new();
        for p in parts {
            match p.to_filter() {
                Some(f) => filters.push(f),
                None => rest.push(p),
            }
        }
        let filter = match filters.len() {
            0 => Filter::All,
            1 => filters.pop().unwrap_or(Filter::All),
            _ => Filter::And(filters),
        };
        let rest = match rest.len() {
            0 => None,
            1 => rest.pop(),
            _ => Some(Pred::And(rest)),
        };
        (filter, rest)
    }

    fn mentions(&self, field: &Field) -> bool {
        let mut stack = vec![self];
        while let Some(p) = stack.pop() {
            match p {
                Pred::Cmp { field: f, .. }
                | Pred::In { field: f, .. }
                | Pred::Like { field: f, .. }
                | Pred::IsNull(f)
                    if f == field =>
                {
                    return true
                }
                Pred::And(v) | Pred::Or(v) => stack.extend(v),
                Pred::Not(c) => stack.push(c),
                _ => {}
            }
        }
        false
    }
}

/// Where a retrieval's candidates come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Retrieval {
    /// `search('text' [, user => 'u'] [, vector => [...]])`.
    Search {
        /// Keywords.
        text: Option<String>,
        /// A query vector.
        vector: Option<Vec<f32>>,
        /// Personalise for this user.
        user: Option<String>,
    },
    /// `recommend('user')`.
    Recommend {
        /// The user.
        user: String,
    },
    /// `similar('item')`.
    Similar {
        /// The item.
        item: String,
    },
}

/// A sort key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderKey {
    /// The column.
    pub field: Field,
    /// `DESC`.
    pub descending: bool,
}

/// `SELECT ... FROM search(..) | recommend(..) | similar(..)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Retrieve {
    /// The table function.
    pub source: Retrieval,
    /// Conditions evaluated inside retrieval.
    pub filter: Filter,
    /// Conditions checked on each hit afterwards (`score > 0.5`, `id <> 'p1'`, ...).
    pub residual: Option<Pred>,
    /// Output columns.
    pub columns: Vec<Column>,
    /// Sort keys; none keeps the engine's ranking.
    pub order: Vec<OrderKey>,
    /// `LIMIT` (default 10).
    pub limit: usize,
    /// `OFFSET`.
    pub offset: usize,
    /// `EXPLAIN`: fill the explanation column.
    pub explain: bool,
    /// Named-argument knobs.
    pub tuning: Tuning,
}

/// Retrieval knobs given as named arguments of `search`, `recommend` and `similar`
/// (`fusion => 'auto' | 'mlp' | 'learned' | 'linear' | 'rrf'`, `alpha => 0.7, beta => 0.3` for linear
/// fusion, `max_per_brand => 2`,
/// `exclude_purchased => false`, `candidates => 500`); unset ones keep the engine's defaults.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tuning {
    /// How channel scores are fused.
    pub fusion: Option<Fusion>,
    /// At most this many hits per brand.
    pub max_per_brand: Option<usize>,
    /// Whether items the user bought are left out.
    pub exclude_purchased: Option<bool>,
    /// Candidates per channel.
    pub candidates: Option<usize>,
}

/// `SELECT ... FROM products | events`.
#[derive(Clone, Debug, PartialEq)]
pub struct Scan {
    /// The table.
    pub table: Table,
    /// `WHERE`.
    pub predicate: Option<Pred>,
    /// Output columns.
    pub columns: Vec<Column>,
    /// Sort keys; none keeps the table's order.
    pub order: Vec<OrderKey>,
    /// `LIMIT`, none for every row.
    pub limit: Option<usize>,
    /// `OFFSET`.
    pub offset: usize,
}

/// The settings of `TRAIN WITH (tune = on|off, tune_budget = SECONDS)`; unset ones keep the
/// defaults.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrainSettings {
    /// Tune each model on a held-out part of the log first (default on).
    pub tune: Option<bool>,
    /// The tuning budget in seconds.
    pub tune_budget_secs: Option<f64>,
}

/// An `IMPORT` statement; paths as written, resolved and checked when run.
#[derive(Clone, Debug, PartialEq)]
pub enum Import {
    /// `IMPORT PRODUCTS FROM 'file.jsonl' [ON ERROR SKIP]`.
    Products {
        /// The file.
        path: String,
        /// Bad-row policy.
        on_error: OnError,
    },
    /// `IMPORT EVENTS FROM 'file.csv' [ON ERROR SKIP]`.
    Events {
        /// The file.
        path: String,
        /// Bad-row policy.
        on_error: OnError,
    },
    /// `IMPORT SEQUENCES FROM 'user_sequence.txt' [ON ERROR SKIP]`: one line per user,
    /// `user item1 item2 ...`, time ordered.
    Sequences {
        /// The file.
        path: String,
        /// Bad-row policy.
        on_error: OnError,
    },
    /// `IMPORT MOVIELENS FROM 'dir'`.
    MovieLens {
        /// The MovieLens 100K folder.
        dir: String,
    },
    /// `IMPORT KG FROM 'x.kg' LINKS 'x.link'`.
    Kg {
        /// Triples file.
        kg: String,
        /// Item-to-entity links file.
        links: String,
    },
}

/// A row of `INSERT INTO events`.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    /// User id.
    pub user: String,
    /// Item id.
    pub item: String,
    /// Kind.
    pub kind: EventKind,
    /// Unix seconds; `None` is the time the statement runs.
    pub ts: Option<i64>,
}

/// A planned statement: checked for shape and types, not yet run.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// `INSERT INTO products`: upserts, all or nothing.
    InsertProducts(Vec<Product>),
    /// `INSERT INTO events`, all or nothing.
    InsertEvents(Vec<NewEvent>),
    /// `DELETE FROM products WHERE id ...`.
    DeleteProducts(Vec<String>),
    /// `DELETE FROM users WHERE id ...`: forget the users everywhere.
    ForgetUsers(Vec<String>),
    /// A retrieval.
    Retrieve(Retrieve),
    /// A table scan.
    Scan(Scan),
    /// `TRAIN [WITH (...)]`.
    Train(TrainSettings),
    /// `EVALUATE`.
    Evaluate,
    /// `SHOW STATS`.
    ShowStats,
    /// `SHOW TABLES`.
    ShowTables,
    /// `SHOW MODELS`: the serving generation's models, the settings tuning chose and what it
    /// tried.
    ShowModels,
    /// `DESCRIBE table`.
    Describe(Table),
    /// `IMPORT ...`.
    Import(Import),
    /// `EXPLAIN` of a statement other than a retrieval: show the plan without running it.
    Explain(Box<Plan>),
}

/// Positions for errors: a span's start, or the statement's start when sqlparser has none.
#[derive(Clone, Copy)]
struct Ctx {
    start: Pos,
}

impl Ctx {
    fn at(&self, span: Span) -> Pos {
        if span.start.line == 0 {
            self.start
        } else {
            span.start.into()
        }
    }

    fn err(&self, span: Span, message: impl std::fmt::Display) -> Error {
        plan_error(self.at(span), message)
    }

    fn err_expr(&self, e: &Expr, message: impl std::fmt::Display) -> Error {
        self.err(e.span(), message)
    }
}

/// Plans a parsed statement.
pub(crate) fn plan(parsed: Parsed) -> Result<Plan> {
    match parsed {
        Parsed::Verb(plan) => Ok(*plan),
        Parsed::Sql { statement, start } => statement_plan(&statement, Ctx { start }),
    }
}

const STATEMENTS: &str =
    "SELECT, INSERT, DELETE, EXPLAIN, SHOW STATS, SHOW MODELS, SHOW TABLES, DESCRIBE, TRAIN, EVALUATE or IMPORT";

fn statement_plan(st: &Statement, cx: Ctx) -> Result<Plan> {
    match st {
        Statement::Query(q) => select(q, false, cx),
        Statement::Insert(ins) => insert(ins, cx),
        Statement::Delete(del) => delete(del, cx),
        Statement::Explain { statement, .. } => match &**statement {
            Statement::Query(q) => select(q, true, cx),
            other => Ok(Plan::Explain(Box::new(statement_plan(other, cx)?))),
        },
        Statement::ExplainTable { table_name, .. } => {
            Ok(Plan::Describe(table_name_of(table_name, cx)?))
        }
        Statement::ShowTables { .. } => Ok(Plan::ShowTables),
        Statement::ShowVariable { variable } => match variable.as_slice() {
            [v] if v.value.eq_ignore_ascii_case("stats") => Ok(Plan::ShowStats),
            [v] if v.value.eq_ignore_ascii_case("models") => Ok(Plan::ShowModels),
            [v, ..] => Err(cx.err(
                v.span,
                format!(
                    "expected SHOW STATS, SHOW MODELS or SHOW TABLES, found SHOW {}",
                    v.value
                ),
            )),
            [] => Err(plan_error(
                cx.start,
                "expected SHOW STATS, SHOW MODELS or SHOW TABLES",
            )),
        },
        _ => Err(plan_error(
            cx.start,
            format!("unsupported statement; expected {STATEMENTS}"),
        )),
    }
}

fn single_name(name: &ObjectName, cx: Ctx) -> Result<(String, Span)> {
    match name.0.as_slice() {
        [ObjectNamePart::Identifier(id)] => Ok((id.value.to_ascii_lowercase(), id.span)),
        _ => Err(cx.err(name.span(), format!("expected a table name, found {name}"))),
    }
}

fn table_name_of(name: &ObjectName, cx: Ctx) -> Result<Table> {
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

fn unnest(mut e: &Expr) -> &Expr {
    while let Expr::Nested(inner) = e {
        e = inner;
    }
    e
}

/// A literal, with unary signs folded into numbers; `None` when `e` is not a literal.
fn literal(e: &Expr) -> Option<Lit> {
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

fn string_arg(e: &Expr, what: &str, cx: Ctx) -> Result<String> {
    match literal(e) {
        Some(Lit::Text(s)) => Ok(s),
        Some(Lit::Num { text, .. }) => Ok(text),
        _ => Err(cx.err_expr(e, format!("expected {what} as a quoted string"))),
    }
}

fn number(e: &Expr, what: &str, cx: Ctx) -> Result<f64> {
    match literal(e) {
        Some(Lit::Num { value, .. }) if value.is_finite() => Ok(value),
        _ => Err(cx.err_expr(e, format!("expected {what} as a finite number"))),
    }
}

fn count(e: &Expr, what: &str, cx: Ctx) -> Result<usize> {
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
fn vector(e: &Expr, cx: Ctx) -> Result<Vec<f32>> {
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

fn insert(ins: &ast::Insert, cx: Ctx) -> Result<Plan> {
    let TableObject::TableName(name) = &ins.table else {
        return Err(plan_error(
            cx.start,
            "expected INSERT INTO products or INSERT INTO events",
        ));
    };
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

fn delete(del: &ast::Delete, cx: Ctx) -> Result<Plan> {
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

/// The operands of a chain `a op b op c` (through parentheses), left to right, without
/// recursion.
fn chain<'a>(e: &'a Expr, op: &BinaryOperator) -> Vec<&'a Expr> {
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

// ---------------------------------------------------------------- SELECT

/// What a `SELECT` reads: decides which columns exist.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    Hits,
    Products,
    Events,
}

fn select(q: &ast::Query, explain: bool, cx: Ctx) -> Result<Plan> {
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
    let group_by = match &s.group_by {
        GroupByExpr::All(_) => true,
        GroupByExpr::Expressions(e, m) => !e.is_empty() || !m.is_empty(),
    };
    if s.distinct.is_some()
        || s.top.is_some()
        || s.into.is_some()
        || group_by
        || s.having.is_some()
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
        return Err(cx.err(s.select_token.0.span, "DISTINCT, TOP, INTO, GROUP BY, HAVING, windows and the like are not supported; expected SELECT columns FROM source [WHERE ...] [ORDER BY ...] [LIMIT n]"));
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
    match source {
        Some((source, tuning)) => {
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
const TUNING_ARGS: [&str; 6] = [
    "fusion",
    "alpha",
    "beta",
    "max_per_brand",
    "exclude_purchased",
    "candidates",
];

fn table_function(
    name: &str,
    span: Span,
    args: &[FunctionArg],
    cx: Ctx,
) -> Result<(Retrieval, Tuning)> {
    let allowed: &[&str] = match name {
        "search" => &["text", "user", "vector", TUNING_ARGS[0], TUNING_ARGS[1], TUNING_ARGS[2], TUNING_ARGS[3], TUNING_ARGS[4], TUNING_ARGS[5]],
        "recommend" => &["user", TUNING_ARGS[0], TUNING_ARGS[1], TUNING_ARGS[2], TUNING_ARGS[3], TUNING_ARGS[4], TUNING_ARGS[5]],
        "similar" => &["item", TUNING_ARGS[0], TUNING_ARGS[1], TUNING_ARGS[2], TUNING_ARGS[3], TUNING_ARGS[4], TUNING_ARGS[5]],
        _ => {
            return Err(cx.err(span, format!("unknown table function {name}; expected search(...), recommend(...) or similar(...)")))
        }
    };
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
    Ok(Tuning {
        fusion,
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
                let field = field_of(e, scope, cx)?
                    .ok_or_else(|| cx.err_expr(e, "expected a column name, attr('name') or *"))?;
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

/// The column an expression names: an identifier (unknown ones are attributes for products)
/// or `attr('name')`. `None` when the expression is not a column reference.
fn field_of(e: &Expr, scope: Scope, cx: Ctx) -> Result<Option<Field>> {
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
            } else {
                return Err(cx.err(
                    span,
                    format!(
                        "unknown column {name} in events; expected user_id, item_id, kind or ts"
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

// ---------------------------------------------------------------- WHERE

/// Nesting depth of the logical structure of `e` (`AND`/`OR` chains, `NOT`, `IN` lists),
/// measured without recursion, as [`Pred::depth`] will count it.
fn logical_depth(e: &Expr) -> usize {
    let mut max = 0;
    let mut stack = vec![(e, 1usize)];
    while let Some((x, d)) = stack.pop() {
        max = max.max(d);
        match unnest(x) {
            Expr::BinaryOp {
                op: op @ (BinaryOperator::And | BinaryOperator::Or),
                ..
            } => {
                stack.extend(chain(x, op).into_iter().map(|c| (c, d + 1)));
            }
            Expr::UnaryOp {
                op: UnaryOperator::Not,
                expr,
            } => stack.push((expr, d + 1)),
            Expr::In {
                negated,
                target: InTarget::List(l),
                ..
            } => {
                max = max.max(d + usize::from(*negated) + usize::from(l.len() > 1));
            }
            Expr::Between { negated: true, .. }
            | Expr::Like { negated: true, .. }
            | Expr::IsNotNull(_) => max = max.max(d + 1),
            _ => {}
        }
    }
    max
}

fn where_clause(w: &Expr, scope: Scope, cx: Ctx) -> Result<Pred> {
    let limit = Limits::default().max_filter_depth;
    let depth = logical_depth(w);
    if depth > limit {
        return Err(Error::LimitExceeded {
            what: "filter nesting depth",
            got: depth,
            limit,
        });
    }
    let p = Where { scope, cx, limit }.pred(w, 1)?;
    let depth = p.depth();
    if depth > limit {
        return Err(Error::LimitExceeded {
            what: "filter nesting depth",
            got: depth,
            limit,
        });
    }
    if scope == Scope::Products && p.mentions(&Field::Score) {
        return Err(cx.err_expr(
            w,
            "expected a column of products (score exists only for search(...), recommend(...) and similar(...))",
        ));
    }
    Ok(p)
}

struct Where {
    scope: Scope,
    cx: Ctx,
    limit: usize,
}

const CONDITIONS: &str = "a condition such as price < 100, brand = 'Acme', category LIKE 'shoes%', attr('color') = 'red', score > 0.5, or AND/OR/NOT of them";

impl Where {
    fn pred(&self, e: &Expr, depth: usize) -> Result<Pred> {
        let cx = self.cx;
        if depth > self.limit + 2 {
            // Unreachable after `logical_depth`; a bound on the recursion all the same.
            return Err(Error::LimitExceeded {
                what: "filter nesting depth",
                got: depth,
                limit: self.limit,
            });
        }
        let e = unnest(e);
        match e {
            Expr::BinaryOp {
                op: op @ (BinaryOperator::And | BinaryOperator::Or),
                ..
            } => {
                let parts = chain(e, op)
                    .into_iter()
                    .map(|x| self.pred(x, depth + 1))
                    .collect::<Result<Vec<_>>>()?;
                Ok(if *op == BinaryOperator::And {
                    Pred::And(parts)
                } else {
                    Pred::Or(parts)
                })
            }
            Expr::UnaryOp {
                op: UnaryOperator::Not,
                expr,
            } => Ok(Pred::Not(Box::new(self.pred(expr, depth + 1)?))),
            Expr::BinaryOp { left, op, right } => {
                let op = match op {
                    BinaryOperator::Eq => CmpOp::Eq,
                    BinaryOperator::NotEq => CmpOp::NotEq,
                    BinaryOperator::Lt => CmpOp::Lt,
                    BinaryOperator::LtEq => CmpOp::LtEq,
                    BinaryOperator::Gt => CmpOp::Gt,
                    BinaryOperator::GtEq => CmpOp::GtEq,
                    other => {
                        return Err(cx.err_expr(
                            e,
                            format!("operator {other} is not supported; expected {CONDITIONS}"),
                        ))
                    }
                };
                let (field, op, lit, lit_expr) = match (self.field(left)?, self.field(right)?) {
                    (Some(f), None) => (f, op, literal(right), &**right),
                    (None, Some(f)) => (f, op.flip(), literal(left), &**left),
                    (Some(_), Some(_)) => {
                        return Err(cx.err_expr(
                            e,
                            "expected a column compared with a literal, found two columns",
                        ))
                    }
                    (None, None) => return Err(cx.err_expr(e, format!("expected {CONDITIONS}"))),
                };
                let lit = lit.ok_or_else(|| {
                    cx.err_expr(lit_expr, "expected a literal (a quoted string or a number)")
                })?;
                self.compare(field, op, lit, lit_expr)
            }
            Expr::Between {
                expr,
                negated,
                low,
                high,
            } => {
                let field = self.column(expr)?;
                let lo = literal(low).ok_or_else(|| cx.err_expr(low, "expected a literal"))?;
                let hi = literal(high).ok_or_else(|| cx.err_expr(high, "expected a literal"))?;
                let p = if field == Field::Price {
                    let lo = number(low, "a price", cx)?;
                    let hi = number(high, "a price", cx)?;
                    if lo > hi {
                        return Err(cx.err_expr(
                            low,
                            format!("expected the low end first, found BETWEEN {lo} AND {hi}"),
                        ));
                    }
                    Pred::Filter(Filter::price(Some(lo), Some(hi)))
                } else {
                    Pred::And(vec![
                        self.compare(field.clone(), CmpOp::GtEq, lo, low)?,
                        self.compare(field, CmpOp::LtEq, hi, high)?,
                    ])
                };
                Ok(if *negated { Pred::Not(Box::new(p)) } else { p })
            }
            Expr::In {
                expr,
                target: InTarget::List(list),
                negated,
                ..
            } => {
                let field = self.column(expr)?;
                if list.is_empty() {
                    return Err(cx.err_expr(e, "expected at least one value in IN (...)"));
                }
                let mut alts = list
                    .iter()
                    .map(|x| {
                        let lit = literal(x).ok_or_else(|| cx.err_expr(x, "expected a literal"))?;
                        self.compare(field.clone(), CmpOp::Eq, lit, x)
                    })
                    .collect::<Result<Vec<_>>>()?;
                let p = if alts.iter().all(|a| matches!(a, Pred::Filter(_))) || alts.len() == 1 {
                    if alts.len() == 1 {
                        alts.pop().unwrap_or(Pred::Or(Vec::new()))
                    } else {
                        Pred::Or(alts)
                    }
                } else {
                    Pred::In {
                        field,
                        values: list.iter().filter_map(literal).collect(),
                    }
                };
                Ok(if *negated { Pred::Not(Box::new(p)) } else { p })
            }
            Expr::Like {
                negated,
                any: false,
                expr,
                pattern,
                escape_char: None,
            } => {
                let field = self.column(expr)?;
                let pattern_text = match literal(pattern) {
                    Some(Lit::Text(s)) => s,
                    _ => {
                        return Err(
                            cx.err_expr(pattern, "expected a quoted LIKE pattern such as 'shoes%'")
                        )
                    }
                };
                if field.numeric() || matches!(field, Field::Embedding | Field::Explanation) {
                    return Err(cx.err_expr(
                        expr,
                        format!("expected a text column for LIKE, found {}", field.name()),
                    ));
                }
                let prefix = pattern_text
                    .strip_suffix('%')
                    .filter(|p| !p.contains(['%', '_']));
                let p = match (&field, prefix) {
                    (Field::Category, Some(prefix)) if !category_levels(prefix).is_empty() => {
                        Pred::Filter(Filter::category(category_levels(prefix).join("/")))
                    }
                    _ => Pred::Like {
                        field,
                        pattern: pattern_text,
                    },
                };
                Ok(if *negated { Pred::Not(Box::new(p)) } else { p })
            }
            Expr::IsNull(x) => Ok(Pred::IsNull(self.column(x)?)),
            Expr::IsNotNull(x) => Ok(Pred::Not(Box::new(Pred::IsNull(self.column(x)?)))),
            _ => Err(cx.err_expr(e, format!("expected {CONDITIONS}"))),
        }
    }

    fn field(&self, e: &Expr) -> Result<Option<Field>> {
        let f = field_of(e, self.scope, self.cx)?;
        if let Some(f) = &f {
            if matches!(f, Field::Embedding | Field::Explanation | Field::Attributes) {
                return Err(self.cx.err_expr(
                    e,
                    format!("expected a comparable column, found {}", f.name()),
                ));
            }
        }
        Ok(f)
    }

    fn column(&self, e: &Expr) -> Result<Field> {
        self.field(e)?
            .ok_or_else(|| self.cx.err_expr(e, "expected a column"))
    }

    /// One comparison, as a filter when the engine can evaluate it.
    fn compare(&self, field: Field, op: CmpOp, lit: Lit, at: &Expr) -> Result<Pred> {
        let cx = self.cx;
        if lit == Lit::Null {
            return Err(cx.err_expr(
                at,
                "comparisons with NULL are never true; expected IS NULL or IS NOT NULL",
            ));
        }
        let not = |p: Pred| Pred::Not(Box::new(p));
        if field.numeric() {
            let Lit::Num { value, .. } = lit else {
                return Err(cx.err_expr(
                    at,
                    format!("expected a number to compare {} with", field.name()),
                ));
            };
            if !value.is_finite() {
                return Err(cx.err_expr(at, "expected a finite number"));
            }
            if field == Field::Ts && value.fract() != 0.0 {
                return Err(cx.err_expr(at, "expected integer unix seconds for ts"));
            }
            if field == Field::Price {
                let f = match op {
                    CmpOp::Eq | CmpOp::NotEq => Filter::price(Some(value), Some(value)),
                    CmpOp::Lt => Filter::price(None, Some(value.next_down())),
                    CmpOp::LtEq => Filter::price(None, Some(value)),
                    CmpOp::Gt => Filter::price(Some(value.next_up()), None),
                    CmpOp::GtEq => Filter::price(Some(value), None),
                };
                return Ok(if op == CmpOp::NotEq {
                    not(Pred::Filter(f))
                } else {
                    Pred::Filter(f)
                });
            }
            return Ok(Pred::Cmp {
                field,
                op,
                value: lit,
            });
        }
        // Text columns compare with text; numbers are taken as written (`size = 42`).
        let text = match (&field, &lit) {
            (Field::Kind, Lit::Num { .. }) => {
                return Ok(Pred::Cmp {
                    field,
                    op,
                    value: lit,
                })
            }
            (_, Lit::Text(s)) => s.clone(),
            (_, Lit::Num { text, .. }) => text.clone(),
            (_, Lit::Bool(b)) => b.to_string(),
            (_, Lit::Null) => String::new(),
        };
        let filter = match (&field, op) {
            (Field::Brand, CmpOp::Eq | CmpOp::NotEq) => Some(Filter::brand(text.clone())),
            (Field::Category, CmpOp::Eq | CmpOp::NotEq) => {
                let levels = category_levels(&text);
                if levels.is_empty() {
                    return Err(cx.err_expr(
                        at,
                        "expected a category path such as 'shoes' or 'shoes/running'",
                    ));
                }
                Some(Filter::category(levels.join("/")))
            }
            (Field::Attribute(k), CmpOp::Eq | CmpOp::NotEq) => {
                Some(Filter::attribute(k.clone(), text.clone()))
            }
            _ => None,
        };
        Ok(match filter {
            Some(f) if op == CmpOp::NotEq => not(Pred::Filter(f)),
            Some(f) => Pred::Filter(f),
            None => Pred::Cmp {
                field,
                op,
                value: Lit::Text(text),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(sql: &str) -> Plan {
        match crate::sql::plan(sql) {
            Ok(p) => p,
            Err(e) => panic!("{sql}: {e}"),
        }
    }

    #[test]
    fn filters_are_pushed_down_and_the_rest_is_residual() {
        let Plan::Retrieve(r) = p("SELECT id FROM search('shoe') WHERE price < 100 AND category = 'shoes' AND score >= 0.5 LIMIT 3") else {
            panic!("not a retrieval");
        };
        assert_eq!(r.limit, 3);
        let Filter::And(parts) = &r.filter else {
            panic!("{:?}", r.filter)
        };
        assert_eq!(parts[1], Filter::category("shoes"));
        assert!(matches!(
            r.residual,
            Some(Pred::Cmp {
                field: Field::Score,
                op: CmpOp::GtEq,
                ..
            })
        ));
    }

    #[test]
    fn unknown_columns_are_attributes() {
        let Plan::Scan(s) = p("SELECT id FROM products WHERE color = 'red' OR attr('size') = 42")
        else {
            panic!()
        };
        assert_eq!(
            s.predicate,
            Some(Pred::Or(vec![
                Pred::Filter(Filter::attribute("color", "red")),
                Pred::Filter(Filter::attribute("size", "42"))
            ]))
        );
    }

    #[test]
    fn long_and_chains_are_flat() {
        let sql = format!(
            "SELECT * FROM products WHERE {} price > 0",
            "price > 0 AND ".repeat(400)
        );
        let Plan::Scan(s) = p(&sql) else { panic!() };
        assert_eq!(s.predicate.map(|p| p.depth()), Some(2));
    }
}
