//! `WHERE` to a [`Pred`], and a `Pred` to what the engine evaluates inside retrieval (a
//! [`Filter`]) plus the residual checked on each row.

use sqlparser::ast::{BinaryOperator, Expr, InTarget, UnaryOperator};

use crate::catalog::category_levels;
use crate::config::Limits;
use crate::error::{Error, Result};
use crate::filter::Filter;

use super::expr::{chain, field_of, literal, number, unnest, Scope};
use super::{CmpOp, Ctx, Field, Lit, Pred};

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

    pub(super) fn mentions(&self, field: &Field) -> bool {
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

// ---------------------------------------------------------------- WHERE

/// Nesting depth of the logical structure of `e` (`AND`/`OR` chains, `NOT`, `IN` lists),
/// measured without recursion, as [`Pred::depth`] will count it.
pub(super) fn logical_depth(e: &Expr) -> usize {
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

pub(super) fn where_clause(w: &Expr, scope: Scope, cx: Ctx) -> Result<Pred> {
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
                let op = match CmpOp::of(op) {
                    Some(op) => op,
                    None => {
                        let other = op;
                        return Err(cx.err_expr(
                            e,
                            format!("operator {other} is not supported; expected {CONDITIONS}"),
                        ));
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
    use crate::sql::plan::Plan;

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
