//! sqlparser's AST to a [`Plan`]: which verb, on which table, with which typed values.
//!
//! "Here is a parsed statement, what exactly does it ask for?" Every shape and type check
//! happens here, before anything touches an engine, so that a statement that plans can only
//! fail at execution for reasons that depend on the data (an unknown item, a vector of the
//! wrong dimension). Errors carry the position of the offending expression.
//!
//! Architecture Invariant: planning is a pure function of the text: no engine, no file
//! system, no clock. `IMPORT` paths are checked against the allowed directories when run.
//!
//! One file per job:
//!
//! - `mod.rs` (here): the plan types, the entry points [`plan`] and [`plan_source`], and the
//!   dispatch of a statement to its planner;
//! - `expr`: sqlparser expressions to typed values, shared by every statement (literals,
//!   numbers, vectors, table names, column references, operator chains);
//! - `write`: `INSERT` and `DELETE`;
//! - `select`: `SELECT` from a table or a table function (columns, `ORDER BY`, `LIMIT`, the
//!   named-argument knobs);
//! - `predicate`: `WHERE` to a [`Pred`], and a `Pred` to the engine's [`Filter`] plus the
//!   residual checked on each row;
//! - `verb`: the keyword verbs sqlparser does not know (`TRAIN [WITH (...)]`, `EVALUATE`,
//!   `IMPORT ...`), planned from their tokens.

mod aggregate;
mod expr;
mod predicate;
mod select;
mod suggest;
mod trending;
mod verb;
mod write;

use sqlparser::ast::{Expr, Spanned, Statement};
use sqlparser::tokenizer::Span;

use crate::catalog::Product;
use crate::channel::Fusion;
use crate::error::{Error, Result};
use crate::events::EventKind;
use crate::filter::Filter;
use crate::import::OnError;

use super::parse::{self, plan_error, Parsed, Pos, Source};
pub use aggregate::{AggCall, AggFunc, AggSource, Aggregate, GroupValue, Having};
pub use suggest::{Suggest, SuggestColumn};
pub use trending::{Trending, TrendingColumn};

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
    /// A rating's number; `NULL` for the other kinds (read only: the kind carries it).
    Value,
    /// `highlight(col)` over `search('text')`: the column with the words the search matched
    /// wrapped in `<em>` and `</em>`.
    Highlight(Box<Field>),
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
            Field::Value => "value".into(),
            Field::Highlight(f) => format!("highlight({})", f.name()),
        }
    }

    fn numeric(&self) -> bool {
        matches!(self, Field::Price | Field::Score | Field::Ts | Field::Value)
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

    /// The comparison a SQL operator is, if it is one.
    fn of(op: &sqlparser::ast::BinaryOperator) -> Option<CmpOp> {
        use sqlparser::ast::BinaryOperator as B;
        Some(match op {
            B::Eq => CmpOp::Eq,
            B::NotEq => CmpOp::NotEq,
            B::Lt => CmpOp::Lt,
            B::LtEq => CmpOp::LtEq,
            B::Gt => CmpOp::Gt,
            B::GtEq => CmpOp::GtEq,
            _ => return None,
        })
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
/// fusion, `max_per_brand => 2`, `max_brand_share => 0.3`, `min_long_tail => 0.2`,
/// `popularity_gamma => 0.5`,
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
    /// Typo tolerance of a search (`typos => false` turns it off).
    pub typos: Option<bool>,
    /// Exposure controls (`max_brand_share => 0.3`, `min_long_tail => 0.2`,
    /// `popularity_gamma => 0.5`).
    pub exposure: Option<crate::exposure::Exposure>,
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

/// The settings of `TRAIN WITH (tune = on|off, tune_budget = SECONDS, sequence = on|off,
/// sequence_budget = SECONDS)`; unset ones keep the defaults.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrainSettings {
    /// Tune each model on a held-out part of the log first (default on).
    pub tune: Option<bool>,
    /// The tuning budget in seconds.
    pub tune_budget_secs: Option<f64>,
    /// Train the sequence model (default off).
    pub sequence: Option<bool>,
    /// The budget of the sequence model's race of settings, in seconds.
    pub sequence_budget_secs: Option<f64>,
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
    /// `IMPORT MODEL mf FROM 'dir' [WITH (skip_unknown = true)]`: MF factors fitted
    /// elsewhere, as a new model generation.
    Mf {
        /// The folder of `user_factors` and `item_factors`.
        dir: String,
        /// Skip the factors of unknown ids instead of refusing the import.
        skip_unknown: bool,
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

/// What `EXPORT ... TO 'dir'` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportData {
    /// The interaction log, by day.
    Events,
    /// The catalog.
    Products,
    /// The MF model's user and item factors.
    Mf,
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
    /// `INSERT INTO synonyms (word, synonym[, two_way])`: `(word, synonym, two_way)` rules.
    AddSynonyms(Vec<(String, String, bool)>),
    /// `DELETE FROM synonyms WHERE word = '...' [AND synonym = '...']`: those rules and
    /// their reverse.
    RemoveSynonyms {
        /// The rules' word.
        word: String,
        /// One synonym of it, or every one.
        synonym: Option<String>,
    },
    /// `SHOW SYNONYMS`.
    ShowSynonyms,
    /// `SET RETENTION (max_age_days = N, max_events_per_user = M)` or `SET RETENTION OFF`
    /// ([`Engine::set_retention`](crate::Engine::set_retention)).
    SetRetention(Option<crate::retention::Retention>),
    /// `SHOW RETENTION`: the policy in force (no row without one).
    ShowRetention,
    /// `COMPACT`: apply the retention policy and rewrite the store
    /// ([`Engine::compact`](crate::Engine::compact)).
    Compact,
    /// `EXPORT EVENTS | PRODUCTS | MODEL mf TO 'dir'`: Apache Parquet files in a new
    /// directory (the `parquet` feature).
    Export {
        /// What to write.
        data: ExportData,
        /// The new directory (under an allowed directory).
        path: String,
    },
    /// `BACKUP TO 'dir'`: an online backup into a new directory (under an allowed
    /// directory), servable read-only ([`Engine::backup`](crate::Engine::backup)).
    Backup {
        /// The new directory.
        path: String,
    },
    /// A retrieval.
    Retrieve(Retrieve),
    /// A table scan.
    Scan(Scan),
    /// `SELECT` with aggregates or `GROUP BY`.
    Aggregate(Aggregate),
    /// `SELECT ... FROM suggest(...)`: search-as-you-type.
    Suggest(Suggest),
    /// `SELECT ... FROM trending(since => t)`: distinct shoppers per product since `t`.
    Trending(Trending),
    /// `TRAIN [WITH (...)]`.
    Train(TrainSettings),
    /// `EVALUATE`.
    Evaluate,
    /// `EXPORT USER 'u' TO 'file.json'`: everything held about one shopper, as JSON
    /// ([`Engine::export_user`](crate::Engine::export_user)).
    ExportUser {
        /// The shopper.
        user: String,
        /// The file to write (under an allowed directory).
        path: String,
    },
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

/// Plans one statement (a trailing `;` is allowed) without running it.
///
/// Pure: no engine, no file system, no clock. Positions in errors count from line 1,
/// column 1 of `sql`.
///
/// # Errors
/// [`Error::Syntax`] with `line:column` for text that is not a statement of the dialect,
/// [`Error::LimitExceeded`] for a statement over `MAX_STATEMENT_BYTES` or `MAX_OPERATORS`,
/// or a `WHERE` nested deeper than [`Limits::max_filter_depth`](crate::Limits).
pub fn plan(sql: &str) -> Result<Plan> {
    plan_source(&Source {
        text: sql.to_string(),
        line: 1,
        column: 1,
    })
}

/// Plans one statement cut out of a script by [`split_script`](super::split_script);
/// positions in errors are positions in the script.
///
/// # Errors
/// As [`plan`].
pub fn plan_source(source: &Source) -> Result<Plan> {
    match parse::parse(source)? {
        Parsed::Verb { verb, tokens, end } => verb::plan(verb, &tokens, end),
        Parsed::Sql { statement, start } => statement_plan(&statement, Ctx { start }),
    }
}

const STATEMENTS: &str =
    "SELECT, INSERT, DELETE, EXPLAIN, SHOW STATS, SHOW MODELS, SHOW TABLES, DESCRIBE, TRAIN, EVALUATE or IMPORT";

fn statement_plan(st: &Statement, cx: Ctx) -> Result<Plan> {
    match st {
        Statement::Query(q) => select::select(q, false, cx),
        Statement::Insert(ins) => write::insert(ins, cx),
        Statement::Delete(del) => write::delete(del, cx),
        Statement::Explain { statement, .. } => match &**statement {
            Statement::Query(q) => select::select(q, true, cx),
            other => Ok(Plan::Explain(Box::new(statement_plan(other, cx)?))),
        },
        Statement::ExplainTable { table_name, .. } => {
            Ok(Plan::Describe(expr::table_name_of(table_name, cx)?))
        }
        Statement::ShowTables { .. } => Ok(Plan::ShowTables),
        Statement::ShowVariable { variable } => match variable.as_slice() {
            [v] if v.value.eq_ignore_ascii_case("stats") => Ok(Plan::ShowStats),
            [v] if v.value.eq_ignore_ascii_case("models") => Ok(Plan::ShowModels),
            [v] if v.value.eq_ignore_ascii_case("synonyms") => Ok(Plan::ShowSynonyms),
            [v] if v.value.eq_ignore_ascii_case("retention") => Ok(Plan::ShowRetention),
            [v, ..] => Err(cx.err(
                v.span,
                format!(
                    "expected SHOW STATS, SHOW MODELS, SHOW SYNONYMS or SHOW TABLES, found SHOW {}",
                    v.value
                ),
            )),
            [] => Err(plan_error(
                cx.start,
                "expected SHOW STATS, SHOW MODELS, SHOW SYNONYMS or SHOW TABLES",
            )),
        },
        _ => Err(plan_error(
            cx.start,
            format!("unsupported statement; expected {STATEMENTS}"),
        )),
    }
}
