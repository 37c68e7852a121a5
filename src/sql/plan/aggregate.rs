//! `SELECT` with aggregates or `GROUP BY` to an [`Aggregate`]: which rows, grouped by which
//! columns, reduced by which aggregates, then `HAVING`, `ORDER BY`, `LIMIT`.
//!
//! ```sql
//! SELECT count(*), avg(price) FROM products WHERE category = 'shoes';
//! SELECT brand, count(*) AS n FROM products GROUP BY brand HAVING count(*) > 5 ORDER BY n DESC LIMIT 10;
//! SELECT user_id, count(DISTINCT item_id), max(ts) FROM events GROUP BY user_id;
//! SELECT brand, count(*) FROM search('running shoes') GROUP BY brand ORDER BY count(*) DESC;
//! ```
//!
//! The aggregates are `count(*)`, `count(col)`, `count(DISTINCT col)`, `min(col)`,
//! `max(col)` (numbers or text), `avg(col)` and `sum(col)` (numbers: `price`, `ts`, an event's
//! `value`, or an attribute whose values are numbers). A select-list column that is not
//! aggregated must be a `GROUP BY` column; `ORDER BY` and `HAVING` name a `GROUP BY` column,
//! an aggregate or an output column (its alias, or its position for `ORDER BY`).
//!
//! Over `search('text')` an aggregate reads every product the text matches under the
//! filter, not only the best k: `count(*)` counts them all, and `GROUP BY brand` or
//! `GROUP BY category` gives the search's facet counts (`Engine::facets`: every level of the
//! category tree is a group, products without a brand or category are in none). The
//! ranking arguments (`user =>`, fusion knobs) do not change that set and are ignored; a
//! vector search has no set of matches and `recommend(...)` and `similar(...)` rank rather than
//! match, so none of them aggregates.

use sqlparser::ast::{
    self, BinaryOperator, DuplicateTreatment, Expr, Function, FunctionArg, FunctionArgExpr,
    FunctionArguments, GroupByExpr, ObjectNamePart, OrderByKind, OrderBySort, SelectItem, Spanned,
    UnaryOperator,
};
use sqlparser::tokenizer::Span;

use crate::config::Limits;
use crate::error::{Error, Result};
use crate::filter::Filter;

use super::expr::{chain, field_of, literal, unnest, Scope};
use super::predicate::logical_depth;
use super::{CmpOp, Ctx, Field, Lit, Plan, Pred, Retrieval, Table};

/// An aggregate function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggFunc {
    /// `count(*)`, `count(col)` (values that are not `NULL`), `count(DISTINCT col)`.
    Count,
    /// Smallest value: numbers numerically, text by code point.
    Min,
    /// Largest value.
    Max,
    /// Mean of the numbers.
    Avg,
    /// Sum of the numbers.
    Sum,
}

impl AggFunc {
    fn of(name: &str) -> Option<AggFunc> {
        match name.to_ascii_lowercase().as_str() {
            "count" => Some(AggFunc::Count),
            "min" => Some(AggFunc::Min),
            "max" => Some(AggFunc::Max),
            "avg" => Some(AggFunc::Avg),
            "sum" => Some(AggFunc::Sum),
            _ => None,
        }
    }

    /// The function's name, lower case.
    pub fn name(self) -> &'static str {
        match self {
            AggFunc::Count => "count",
            AggFunc::Min => "min",
            AggFunc::Max => "max",
            AggFunc::Avg => "avg",
            AggFunc::Sum => "sum",
        }
    }
}

/// One aggregate of a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AggCall {
    /// The function.
    pub func: AggFunc,
    /// The column; `None` for `count(*)`.
    pub arg: Option<Field>,
    /// `count(DISTINCT col)`.
    pub distinct: bool,
}

impl AggCall {
    /// The aggregate as a heading: `count(*)`, `count(DISTINCT brand)`, `sum(price)`.
    pub fn name(&self) -> String {
        match &self.arg {
            None => format!("{}(*)", self.func.name()),
            Some(f) if self.distinct => format!("{}(DISTINCT {})", self.func.name(), f.name()),
            Some(f) => format!("{}({})", self.func.name(), f.name()),
        }
    }
}

/// A value of one group: one of its `GROUP BY` columns or one of its aggregates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupValue {
    /// The `GROUP BY` column at this index of [`Aggregate::group_by`].
    Key(usize),
    /// The aggregate at this index of [`Aggregate::aggregates`].
    Agg(usize),
}

/// An output column of an aggregate: a group's value under a heading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupColumn {
    /// What is shown.
    pub value: GroupValue,
    /// The heading (`count(*)`, the column's name, or the `AS` alias).
    pub label: String,
}

/// A sort key of the groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupOrder {
    /// The value sorted on.
    pub value: GroupValue,
    /// `DESC`.
    pub descending: bool,
}

/// A `HAVING` condition on each group.
#[derive(Clone, Debug, PartialEq)]
pub enum Having {
    /// `value op literal`.
    Cmp {
        /// The group's value.
        value: GroupValue,
        /// The operator.
        op: CmpOp,
        /// The literal (never `NULL`).
        lit: Lit,
    },
    /// Every sub-condition holds.
    And(Vec<Having>),
    /// At least one sub-condition holds.
    Or(Vec<Having>),
    /// The sub-condition does not hold.
    Not(Box<Having>),
}

/// The rows an aggregate reads.
#[derive(Clone, Debug, PartialEq)]
pub enum AggSource {
    /// A table scan with its `WHERE`, as [`Scan`](super::Scan) reads it.
    Scan {
        /// `products` or `events`.
        table: Table,
        /// `WHERE`.
        predicate: Option<Pred>,
    },
    /// Every product `search('text')` matches under the filter (not only the top k).
    Search {
        /// The search text.
        text: String,
        /// Conditions evaluated inside the search.
        filter: Filter,
        /// Conditions checked on each match afterwards (`title LIKE ...`, `id <> ...`).
        residual: Option<Pred>,
    },
}

/// `SELECT` with aggregates or `GROUP BY`.
#[derive(Clone, Debug, PartialEq)]
pub struct Aggregate {
    /// The rows.
    pub source: AggSource,
    /// `GROUP BY` columns, each once; none makes one group of every row.
    pub group_by: Vec<Field>,
    /// Every aggregate the statement names (select list, `HAVING`, `ORDER BY`), each once.
    pub aggregates: Vec<AggCall>,
    /// Output columns.
    pub columns: Vec<GroupColumn>,
    /// `HAVING`.
    pub having: Option<Having>,
    /// Sort keys; none keeps the groups in the order of their `GROUP BY` values.
    pub order: Vec<GroupOrder>,
    /// `LIMIT`, none for every group.
    pub limit: Option<usize>,
    /// `OFFSET`.
    pub offset: usize,
}

/// The aggregate function an expression calls (`count(...)`, `min(...)`, ...), if any.
pub(super) fn aggregate_function(e: &Expr) -> Option<(AggFunc, &Function)> {
    match unnest(e) {
        Expr::Function(f) => match f.name.0.as_slice() {
            [ObjectNamePart::Identifier(id)] => AggFunc::of(&id.value).map(|a| (a, f)),
            _ => None,
        },
        _ => None,
    }
}

/// Whether a `SELECT` aggregates: it has `GROUP BY` or `HAVING`, or an aggregate in its
/// select list or `ORDER BY`.
pub(super) fn wanted(q: &ast::Query, s: &ast::Select) -> bool {
    let grouped = match &s.group_by {
        GroupByExpr::All(_) => true,
        GroupByExpr::Expressions(e, m) => !e.is_empty() || !m.is_empty(),
    };
    let in_projection = s.projection.iter().any(|item| match item {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
            aggregate_function(e).is_some()
        }
        _ => false,
    });
    let in_order = q.order_by.as_ref().is_some_and(|ob| match &ob.kind {
        OrderByKind::Expressions(list) => {
            list.iter().any(|o| aggregate_function(&o.expr).is_some())
        }
        OrderByKind::All(_) => false,
    });
    grouped || s.having.is_some() || in_projection || in_order
}

/// What an aggregating `SELECT` reads, as the select planner found it.
pub(super) enum AggFrom {
    /// `products` or `events`.
    Table(Table),
    /// A table function, at `span`.
    Function {
        /// Which one, with its arguments.
        source: Retrieval,
        /// Position of its name, for errors.
        span: Span,
    },
}

/// What the select planner hands over: the statement, its source and the clauses it has
/// already planned (`WHERE`, `LIMIT`, `OFFSET`).
pub(super) struct Input<'a> {
    pub query: &'a ast::Query,
    pub select: &'a ast::Select,
    pub scope: Scope,
    pub from: AggFrom,
    pub predicate: Option<Pred>,
    pub limit: Option<usize>,
    pub offset: usize,
    pub explain: bool,
}

/// Plans a `SELECT` for which [`wanted`] holds.
pub(super) fn plan(input: Input<'_>, cx: Ctx) -> Result<Plan> {
    let Input {
        query: q,
        select: s,
        scope,
        from,
        predicate,
        limit,
        offset,
        explain,
    } = input;
    let over_search = matches!(from, AggFrom::Function { .. });
    let source = match from {
        AggFrom::Table(table) => AggSource::Scan { table, predicate },
        AggFrom::Function {
            source:
                Retrieval::Search {
                    text: Some(text),
                    vector: None,
                    ..
                },
            ..
        } => {
            let (filter, residual) = predicate.map_or((Filter::All, None), Pred::split);
            if residual.as_ref().is_some_and(|r| r.mentions(&Field::Score)) {
                let span = s.selection.as_ref().map_or(Span::empty(), Spanned::span);
                return Err(cx.err(span, UNSCORED));
            }
            AggSource::Search {
                text,
                filter,
                residual,
            }
        }
        AggFrom::Function {
            source: Retrieval::Search { .. },
            span,
        } => {
            return Err(cx.err(span, "aggregates over search(...) read the products its text matches, and a vector search matches none (it ranks them all); expected search('text') without vector =>"));
        }
        AggFrom::Function { span, .. } => {
            return Err(cx.err(span, "GROUP BY and aggregates are not supported over recommend(...) or similar(...): they rank products rather than match them; aggregate over products, events or search('text')"));
        }
    };
    let mut p = Planner {
        scope,
        over_search,
        cx,
        group_by: Vec::new(),
        aggregates: Vec::new(),
    };
    let group_exprs: &[Expr] = match &s.group_by {
        GroupByExpr::All(_) => {
            return Err(cx.err(
                s.group_by.span(),
                "GROUP BY ALL is not supported; expected GROUP BY column [, column ...]",
            ))
        }
        GroupByExpr::Expressions(_, m) if !m.is_empty() => {
            return Err(cx.err(
                s.group_by.span(),
                "GROUP BY modifiers (ROLLUP, CUBE, TOTALS) are not supported; expected GROUP BY column [, column ...]",
            ))
        }
        GroupByExpr::Expressions(e, _) => e,
    };
    for e in group_exprs {
        let field = p.group_column(e, &s.projection)?;
        if !p.group_by.contains(&field) {
            p.group_by.push(field);
        }
    }
    let columns = p.columns(&s.projection)?;
    let order = match &q.order_by {
        None => Vec::new(),
        Some(ob) => match &ob.kind {
            OrderByKind::All(_) => {
                return Err(cx.err(
                    ob.span(),
                    "expected ORDER BY column, aggregate or output name [ASC|DESC]",
                ))
            }
            OrderByKind::Expressions(list) => list
                .iter()
                .map(|o| {
                    let descending = match &o.options.sort {
                        Some(OrderBySort::Desc) => true,
                        Some(OrderBySort::Asc) | None => false,
                        Some(OrderBySort::Using(_)) => {
                            return Err(cx.err_expr(&o.expr, "expected ASC or DESC after the ORDER BY key"))
                        }
                    };
                    let value = match literal(&o.expr) {
                        Some(Lit::Num { text, .. }) => {
                            let column = text
                                .parse::<usize>()
                                .ok()
                                .and_then(|n| n.checked_sub(1))
                                .and_then(|n| columns.get(n));
                            match column {
                                Some(c) => c.value,
                                None => {
                                    return Err(cx.err_expr(
                                        &o.expr,
                                        format!(
                                            "expected ORDER BY a column position from 1 to {}, found {text}",
                                            columns.len()
                                        ),
                                    ))
                                }
                            }
                        }
                        _ => p.value(&o.expr, &columns, "ORDER BY")?,
                    };
                    Ok(GroupOrder { value, descending })
                })
                .collect::<Result<Vec<_>>>()?,
        },
    };
    let having = match &s.having {
        None => None,
        Some(h) => {
            let limit = Limits::default().max_filter_depth;
            let depth = logical_depth(h);
            if depth > limit {
                return Err(Error::LimitExceeded {
                    what: "filter nesting depth",
                    got: depth,
                    limit,
                });
            }
            Some(p.having(h, &columns, 1, limit)?)
        }
    };
    let plan = Plan::Aggregate(Aggregate {
        source,
        group_by: p.group_by,
        aggregates: p.aggregates,
        columns,
        having,
        order,
        limit,
        offset,
    });
    Ok(if explain {
        Plan::Explain(Box::new(plan))
    } else {
        plan
    })
}

const UNSCORED: &str = "score is not available in aggregates over search(...): they read every match, unscored; expected conditions on product columns";

const AGGREGATES: &str = "an aggregate such as count(*), count(col), count(DISTINCT col), min(col), max(col), avg(col) or sum(col)";

/// The planner's state: the `GROUP BY` columns and the aggregates seen so far.
struct Planner {
    scope: Scope,
    over_search: bool,
    cx: Ctx,
    group_by: Vec<Field>,
    aggregates: Vec<AggCall>,
}

impl Planner {
    /// A `GROUP BY` expression: a column, an output column's alias or a select-list position.
    fn group_column(&self, e: &Expr, projection: &[SelectItem]) -> Result<Field> {
        let cx = self.cx;
        if let Some((func, _)) = aggregate_function(e) {
            return Err(cx.err_expr(
                e,
                format!(
                    "expected a column to GROUP BY, found the aggregate {}(...)",
                    func.name()
                ),
            ));
        }
        fn item_expr(item: &SelectItem) -> Option<&Expr> {
            match item {
                SelectItem::UnnamedExpr(x) | SelectItem::ExprWithAlias { expr: x, .. } => Some(x),
                _ => None,
            }
        }
        let target: Option<(&Expr, String)> = match (literal(e), unnest(e)) {
            (Some(Lit::Num { text, .. }), _) => {
                let item = text
                    .parse::<usize>()
                    .ok()
                    .and_then(|n| n.checked_sub(1))
                    .and_then(|n| projection.get(n))
                    .and_then(item_expr);
                match item {
                    Some(x) => Some((x, format!("GROUP BY {text}"))),
                    None => {
                        return Err(cx.err_expr(
                            e,
                            format!(
                            "expected GROUP BY a select-list position from 1 to {}, found {text}",
                            projection.len()
                        ),
                        ))
                    }
                }
            }
            (_, Expr::Identifier(id)) => {
                // A known column of the source wins over an alias of the same name; an alias
                // wins over an attribute (or an unknown event column) of its name.
                let direct = field_of(e, self.scope, cx);
                let known = matches!(&direct, Ok(Some(f)) if !matches!(f, Field::Attribute(_)));
                let alias = projection.iter().find_map(|item| match item {
                    SelectItem::ExprWithAlias { expr, alias }
                        if alias.value.eq_ignore_ascii_case(&id.value) =>
                    {
                        Some(expr)
                    }
                    _ => None,
                });
                match alias {
                    Some(x) if !known => Some((x, format!("GROUP BY {}", id.value))),
                    _ => None,
                }
            }
            _ => None,
        };
        let (x, via) = match target {
            Some((x, via)) => {
                if let Some((func, _)) = aggregate_function(x) {
                    return Err(cx.err_expr(
                        e,
                        format!(
                            "{via} names the aggregate {}(...); expected a column to GROUP BY",
                            func.name()
                        ),
                    ));
                }
                (x, Some(via))
            }
            None => (e, None),
        };
        let field = field_of(x, self.scope, cx)?.ok_or_else(|| match &via {
            Some(via) => cx.err_expr(
                e,
                format!("{via} names an expression; expected a column to GROUP BY"),
            ),
            None => cx.err_expr(
                e,
                "expected a column to GROUP BY, attr('name') or a select-list position",
            ),
        })?;
        self.check_column(&field, e, "GROUP BY")?;
        if self.over_search && !matches!(field, Field::Brand | Field::Category) {
            return Err(cx.err_expr(
                e,
                format!(
                    "over search(...), GROUP BY takes brand or category, the search's facets; found {}",
                    field.name()
                ),
            ));
        }
        Ok(field)
    }

    /// Rejects the columns that cannot be grouped or aggregated in this scope.
    fn check_column(&self, field: &Field, at: &Expr, clause: &str) -> Result<()> {
        let cx = self.cx;
        match field {
            Field::Embedding | Field::Explanation => Err(cx.err_expr(
                at,
                format!("expected a column other than {} in {clause}", field.name()),
            )),
            Field::Score if self.over_search => Err(cx.err_expr(at, UNSCORED)),
            Field::Score => Err(cx.err_expr(
                at,
                "score exists only for search(...), recommend(...) and similar(...)",
            )),
            _ => Ok(()),
        }
    }

    /// The select list.
    fn columns(&mut self, projection: &[SelectItem]) -> Result<Vec<GroupColumn>> {
        let cx = self.cx;
        let mut out = Vec::new();
        for item in projection {
            let (e, alias) = match item {
                SelectItem::UnnamedExpr(e) => (e, None),
                SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.value.clone())),
                other => {
                    return Err(cx.err(
                        other.span(),
                        format!("expected GROUP BY columns and {AGGREGATES}, not * (a SELECT with GROUP BY or aggregates names its columns)"),
                    ))
                }
            };
            let value = match aggregate_function(e) {
                Some((func, f)) => GroupValue::Agg(self.call(func, f, e)?),
                None => self.key(e, "the select list")?,
            };
            let label = alias.unwrap_or_else(|| self.label(value));
            out.push(GroupColumn { value, label });
        }
        Ok(out)
    }

    fn label(&self, value: GroupValue) -> String {
        match value {
            GroupValue::Key(i) => self.group_by.get(i).map(Field::name),
            GroupValue::Agg(i) => self.aggregates.get(i).map(AggCall::name),
        }
        .unwrap_or_default()
    }

    /// A column that must be one of the `GROUP BY` columns.
    fn key(&self, e: &Expr, clause: &str) -> Result<GroupValue> {
        let cx = self.cx;
        let field = field_of(e, self.scope, cx)?.ok_or_else(|| {
            cx.err_expr(
                e,
                format!("expected a GROUP BY column or {AGGREGATES} in {clause}"),
            )
        })?;
        match self.group_by.iter().position(|g| *g == field) {
            Some(i) => Ok(GroupValue::Key(i)),
            None => {
                let name = field.name();
                Err(cx.err_expr(
                    e,
                    format!("{name} in {clause} is neither a GROUP BY column nor inside an aggregate; expected GROUP BY {name} or an aggregate such as count({name})"),
                ))
            }
        }
    }

    /// An `ORDER BY` or `HAVING` operand: an aggregate, an output column's name, or a
    /// `GROUP BY` column.
    fn value(&mut self, e: &Expr, columns: &[GroupColumn], clause: &str) -> Result<GroupValue> {
        if let Some((func, f)) = aggregate_function(e) {
            return Ok(GroupValue::Agg(self.call(func, f, e)?));
        }
        if let Expr::Identifier(id) = unnest(e) {
            let named = columns.iter().find(|c| {
                if id.quote_style.is_some() {
                    c.label == id.value
                } else {
                    c.label.eq_ignore_ascii_case(&id.value)
                }
            });
            if let Some(c) = named {
                return Ok(c.value);
            }
        }
        self.key(e, clause)
    }

    /// An aggregate call; its index in `aggregates` (added when new).
    fn call(&mut self, func: AggFunc, f: &Function, e: &Expr) -> Result<usize> {
        let cx = self.cx;
        let name = func.name();
        let usage = if func == AggFunc::Count {
            "count(*), count(column) or count(DISTINCT column)".to_string()
        } else {
            format!("{name}(column)")
        };
        if f.over.is_some() {
            return Err(cx.err_expr(
                e,
                format!("window functions (OVER) are not supported; expected {usage}"),
            ));
        }
        if f.filter.is_some() {
            return Err(cx.err_expr(
                e,
                format!("FILTER (WHERE ...) is not supported; expected {usage} with the condition in WHERE"),
            ));
        }
        if !f.within_group.is_empty()
            || f.null_treatment.is_some()
            || f.uses_odbc_syntax
            || !matches!(f.parameters, FunctionArguments::None)
        {
            return Err(cx.err_expr(e, format!("expected {usage}")));
        }
        let FunctionArguments::List(list) = &f.args else {
            return Err(cx.err_expr(e, format!("expected {usage}")));
        };
        if !list.clauses.is_empty() {
            return Err(cx.err_expr(
                e,
                format!("expected {usage}: ORDER BY, LIMIT and other clauses inside an aggregate are not supported"),
            ));
        }
        let distinct = list.duplicate_treatment == Some(DuplicateTreatment::Distinct);
        if distinct && func != AggFunc::Count {
            return Err(cx.err_expr(
                e,
                format!(
                    "DISTINCT is supported only in count(DISTINCT column); expected {name}(column)"
                ),
            ));
        }
        let [arg] = list.args.as_slice() else {
            return Err(cx.err_expr(
                e,
                format!("expected one argument: {usage}, found {}", list.args.len()),
            ));
        };
        let arg = match arg {
            FunctionArg::Unnamed(FunctionArgExpr::Wildcard) => {
                if func != AggFunc::Count {
                    return Err(cx.err_expr(
                        e,
                        format!("{name}(*) is not supported; expected {name}(column)"),
                    ));
                }
                if distinct {
                    return Err(cx.err_expr(
                        e,
                        "count(DISTINCT *) is not supported; expected count(*) or count(DISTINCT column)",
                    ));
                }
                None
            }
            FunctionArg::Unnamed(FunctionArgExpr::Expr(x)) => {
                if let Some((inner, _)) = aggregate_function(x) {
                    return Err(cx.err_expr(
                        x,
                        format!("aggregates do not nest: expected a column inside {name}(...), found {}(...)", inner.name()),
                    ));
                }
                let field = field_of(x, self.scope, cx)?.ok_or_else(|| {
                    cx.err_expr(x, format!("expected a column inside {name}(...): {usage}"))
                })?;
                self.check_column(&field, x, &format!("{name}(...)"))?;
                self.check_type(func, &field, x)?;
                Some(field)
            }
            _ => return Err(cx.err_expr(e, format!("expected {usage}"))),
        };
        let call = AggCall {
            func,
            arg,
            distinct,
        };
        Ok(match self.aggregates.iter().position(|c| *c == call) {
            Some(i) => i,
            None => {
                self.aggregates.push(call);
                self.aggregates.len() - 1
            }
        })
    }

    /// `sum` and `avg` take numbers: `price`, `ts`, `value` or an attribute (read as numbers
    /// when run); `count`, `min` and `max` take any column.
    fn check_type(&self, func: AggFunc, field: &Field, at: &Expr) -> Result<()> {
        if !matches!(func, AggFunc::Sum | AggFunc::Avg)
            || field.numeric()
            || matches!(field, Field::Attribute(_))
        {
            return Ok(());
        }
        let (name, column) = (func.name(), field.name());
        let expected = if self.scope == Scope::Events {
            "ts or value (a rating's number)"
        } else {
            "price or a numeric attribute such as attr('size')"
        };
        let hint = if *field == Field::Kind {
            " (view, click, cart, purchase or a rating; a rating's number is value)"
        } else {
            ""
        };
        Err(self.cx.err_expr(
            at,
            format!("{name}({column}) needs a number column, and {column} is text{hint}; expected {expected}"),
        ))
    }

    /// A `HAVING` condition; `depth` is bounded by [`logical_depth`], checked first.
    fn having(
        &mut self,
        e: &Expr,
        columns: &[GroupColumn],
        depth: usize,
        limit: usize,
    ) -> Result<Having> {
        let cx = self.cx;
        if depth > limit + 2 {
            // Unreachable after `logical_depth`; a bound on the recursion all the same.
            return Err(Error::LimitExceeded {
                what: "filter nesting depth",
                got: depth,
                limit,
            });
        }
        let e = unnest(e);
        let expected = "expected a condition on aggregates or GROUP BY columns such as count(*) > 5, or AND/OR/NOT of them";
        match e {
            Expr::BinaryOp {
                op: op @ (BinaryOperator::And | BinaryOperator::Or),
                ..
            } => {
                let parts = chain(e, op)
                    .into_iter()
                    .map(|x| self.having(x, columns, depth + 1, limit))
                    .collect::<Result<Vec<_>>>()?;
                Ok(if *op == BinaryOperator::And {
                    Having::And(parts)
                } else {
                    Having::Or(parts)
                })
            }
            Expr::UnaryOp {
                op: UnaryOperator::Not,
                expr,
            } => Ok(Having::Not(Box::new(self.having(
                expr,
                columns,
                depth + 1,
                limit,
            )?))),
            Expr::BinaryOp { left, op, right } => {
                let op = match CmpOp::of(op) {
                    Some(op) => op,
                    None => {
                        let other = op;
                        return Err(cx.err_expr(
                            e,
                            format!("operator {other} is not supported in HAVING; {expected}"),
                        ));
                    }
                };
                let (value_expr, op, lit_expr) = match (literal(left), literal(right)) {
                    (None, Some(_)) => (&**left, op, &**right),
                    (Some(_), None) => (&**right, op.flip(), &**left),
                    _ => return Err(cx.err_expr(e, expected)),
                };
                let value = self.value(value_expr, columns, "HAVING")?;
                self.compare(value, op, lit_expr)
            }
            Expr::Between {
                expr,
                negated,
                low,
                high,
            } => {
                let value = self.value(expr, columns, "HAVING")?;
                let p = Having::And(vec![
                    self.compare(value, CmpOp::GtEq, low)?,
                    self.compare(value, CmpOp::LtEq, high)?,
                ]);
                Ok(if *negated {
                    Having::Not(Box::new(p))
                } else {
                    p
                })
            }
            _ => Err(cx.err_expr(e, expected)),
        }
    }

    fn compare(&self, value: GroupValue, op: CmpOp, at: &Expr) -> Result<Having> {
        let cx = self.cx;
        let lit = literal(at)
            .ok_or_else(|| cx.err_expr(at, "expected a literal (a number or a quoted string)"))?;
        if lit == Lit::Null {
            return Err(cx.err_expr(
                at,
                "comparisons with NULL are never true; expected a number or a quoted string",
            ));
        }
        let numeric = match value {
            GroupValue::Agg(i) => self.aggregates.get(i).is_some_and(|c| {
                matches!(c.func, AggFunc::Count | AggFunc::Sum | AggFunc::Avg)
                    || c.arg.as_ref().is_some_and(Field::numeric)
            }),
            GroupValue::Key(i) => self.group_by.get(i).is_some_and(Field::numeric),
        };
        if numeric && !matches!(lit, Lit::Num { .. }) {
            return Err(cx.err_expr(
                at,
                format!("expected a number to compare {} with", self.label(value)),
            ));
        }
        Ok(Having::Cmp { value, op, lit })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agg(sql: &str) -> Aggregate {
        match crate::sql::plan(sql) {
            Ok(Plan::Aggregate(a)) => a,
            other => panic!("{sql}: {other:?}"),
        }
    }

    fn error(sql: &str) -> String {
        match crate::sql::plan(sql) {
            Err(Error::Syntax(m)) => m,
            other => panic!("{sql}: expected a syntax error, got {other:?}"),
        }
    }

    fn count_star() -> AggCall {
        AggCall {
            func: AggFunc::Count,
            arg: None,
            distinct: false,
        }
    }

    #[test]
    fn count_without_group_by_is_one_group() {
        let a = agg("SELECT count(*) FROM products WHERE price < 100");
        assert!(a.group_by.is_empty());
        assert_eq!(a.aggregates, [count_star()]);
        assert_eq!(a.columns[0].label, "count(*)");
        assert!(matches!(
            a.source,
            AggSource::Scan {
                table: Table::Products,
                predicate: Some(_)
            }
        ));
        assert_eq!(a.limit, None);
    }

    #[test]
    fn group_by_with_alias_order_having_and_limit() {
        let a = agg("SELECT brand, count(*) AS n, avg(price) FROM products GROUP BY brand HAVING count(*) > 1 ORDER BY n DESC, brand LIMIT 2 OFFSET 1");
        assert_eq!(a.group_by, [Field::Brand]);
        assert_eq!(
            a.aggregates,
            [
                count_star(),
                AggCall {
                    func: AggFunc::Avg,
                    arg: Some(Field::Price),
                    distinct: false
                }
            ]
        );
        let labels: Vec<&str> = a.columns.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(labels, ["brand", "n", "avg(price)"]);
        assert_eq!(
            a.order,
            [
                GroupOrder {
                    value: GroupValue::Agg(0),
                    descending: true
                },
                GroupOrder {
                    value: GroupValue::Key(0),
                    descending: false
                }
            ]
        );
        assert!(matches!(
            &a.having,
            Some(Having::Cmp { value: GroupValue::Agg(0), op: CmpOp::Gt, lit: Lit::Num { value, .. } }) if *value == 1.0
        ));
        assert_eq!((a.limit, a.offset), (Some(2), 1));
    }

    #[test]
    fn aggregates_are_shared_and_may_appear_only_in_order_by() {
        let a = agg("SELECT brand FROM products GROUP BY brand ORDER BY COUNT(*) DESC, 1");
        assert_eq!(a.aggregates, [count_star()]);
        assert_eq!(a.columns.len(), 1);
        assert_eq!(a.order[1].value, GroupValue::Key(0));
        let a =
            agg("SELECT count(*), count(*) AS again FROM events HAVING count(*) BETWEEN 1 AND 9");
        assert_eq!(a.aggregates.len(), 1);
        assert_eq!(a.columns[1].value, GroupValue::Agg(0));
    }

    #[test]
    fn events_distinct_and_value() {
        let a = agg("SELECT user_id, count(DISTINCT item_id), sum(value), max(ts) FROM events WHERE kind <> 'view' GROUP BY 1");
        assert_eq!(a.group_by, [Field::User]);
        assert_eq!(a.columns[1].label, "count(DISTINCT item_id)");
        assert_eq!(a.columns[2].label, "sum(value)");
        assert!(matches!(
            a.source,
            AggSource::Scan {
                table: Table::Events,
                ..
            }
        ));
    }

    #[test]
    fn group_by_an_alias_or_an_attribute() {
        let a = agg("SELECT brand AS b, count(*) FROM products GROUP BY b");
        assert_eq!(a.group_by, [Field::Brand]);
        assert_eq!(a.columns[0].label, "b");
        let a = agg("SELECT color, sum(size) FROM products GROUP BY attr('color')");
        assert_eq!(a.group_by, [Field::Attribute("color".into())]);
        assert_eq!(a.aggregates[0].arg, Some(Field::Attribute("size".into())));
    }

    #[test]
    fn search_groups_by_facets_and_keeps_the_filter() {
        let a = agg("SELECT category, count(*) FROM search('shoe', user => 'u1') WHERE brand = 'Acme' AND title LIKE '%x%' GROUP BY category");
        assert_eq!(a.group_by, [Field::Category]);
        let AggSource::Search {
            text,
            filter,
            residual,
        } = &a.source
        else {
            panic!("{:?}", a.source)
        };
        assert_eq!(text, "shoe");
        assert_eq!(*filter, Filter::brand("Acme"));
        assert!(matches!(residual, Some(Pred::Like { .. })));
        assert!(matches!(
            crate::sql::plan("EXPLAIN SELECT count(*) FROM search('x')"),
            Ok(Plan::Explain(p)) if matches!(*p, Plan::Aggregate(_))
        ));
    }

    #[test]
    fn malformed_aggregates_say_where() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "SELECT title, count(*) FROM products GROUP BY brand",
                "1:8",
                "title in the select list is neither a GROUP BY column nor inside an aggregate",
            ),
            (
                "SELECT sum(title) FROM products",
                "1:12",
                "sum(title) needs a number column",
            ),
            (
                "SELECT avg(kind) FROM events",
                "1:12",
                "a rating's number is value",
            ),
            (
                "SELECT count(DISTINCT *) FROM products",
                "1:8",
                "count(DISTINCT *) is not supported",
            ),
            (
                "SELECT id FROM products WHERE count(*) > 5",
                "1:31",
                "count(...) is an aggregate, which WHERE cannot use; filter groups with HAVING",
            ),
            (
                "SELECT count(*) FROM events GROUP BY colour",
                "1:38",
                "unknown column colour in events",
            ),
            (
                "SELECT brand, count(*) FROM recommend('u1') GROUP BY brand",
                "1:29",
                "not supported over recommend(...) or similar(...)",
            ),
            (
                "SELECT count(*) FROM similar('p1')",
                "1:22",
                "not supported over recommend(...) or similar(...)",
            ),
            (
                "SELECT count(*) FROM search(vector => [1, 0])",
                "1:22",
                "expected search('text') without vector",
            ),
            (
                "SELECT title, count(*) FROM search('x') GROUP BY title",
                "1:50",
                "GROUP BY takes brand or category",
            ),
            (
                "SELECT count(*) FROM search('x') WHERE score > 1",
                "1:40",
                "score is not available in aggregates",
            ),
            ("SELECT * FROM products GROUP BY brand", "1:8", "not *"),
            (
                "SELECT sum(count(*)) FROM products",
                "1:12",
                "aggregates do not nest",
            ),
            (
                "SELECT min(*) FROM products",
                "1:8",
                "min(*) is not supported",
            ),
            (
                "SELECT sum(DISTINCT price) FROM products",
                "1:8",
                "DISTINCT is supported only in count(DISTINCT column)",
            ),
            (
                "SELECT count(*) FROM products GROUP BY count(*)",
                "1:40",
                "found the aggregate count(...)",
            ),
            (
                "SELECT count(*) FROM products GROUP BY embedding",
                "1:40",
                "other than embedding",
            ),
            (
                "SELECT brand FROM products GROUP BY brand ORDER BY price",
                "1:52",
                "price in ORDER BY is neither a GROUP BY column",
            ),
            (
                "SELECT brand FROM products GROUP BY brand ORDER BY 3",
                "1:52",
                "column position from 1 to 1",
            ),
            (
                "SELECT count(*) FROM products HAVING count(*) > 'many'",
                "1:49",
                "expected a number to compare count(*) with",
            ),
            (
                "SELECT count(*) FROM products HAVING price > 1",
                "1:38",
                "price in HAVING is neither",
            ),
            (
                "SELECT count(*) OVER () FROM products",
                "1:8",
                "window functions",
            ),
            (
                "SELECT count(price, id) FROM products",
                "1:8",
                "expected one argument",
            ),
            // sqlparser keeps no position for GROUP BY ALL: the error points at the statement.
            (
                "SELECT count(*) FROM products GROUP BY ALL",
                "1:1",
                "GROUP BY ALL is not supported",
            ),
        ];
        for (sql, pos, words) in cases {
            let m = error(sql);
            assert!(m.contains(&format!(" at {pos}: ")), "{sql}: {m}");
            assert!(m.contains(words), "{sql}: {m}");
        }
    }

    #[test]
    fn deep_having_is_a_limit() {
        let sql = format!(
            "SELECT count(*) FROM products HAVING {}count(*) > 1",
            "NOT ".repeat(40)
        );
        assert!(matches!(
            crate::sql::plan(&sql),
            Err(Error::LimitExceeded {
                what: "filter nesting depth",
                ..
            })
        ));
    }
}
