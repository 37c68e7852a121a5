//! Runs an [`Aggregate`]: reads its rows (a table scan or every match of a search), folds
//! them into groups keyed by the `GROUP BY` values, then applies `HAVING`, `ORDER BY`,
//! `OFFSET` and `LIMIT` to the groups.
//!
//! Memory is one accumulator per group and aggregate (a set of values for
//! `count(DISTINCT ...)`), never the rows themselves.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

use crate::error::Result;

use super::execute::{compare, Row, Session};
use super::output::{ResultSet, Value};
use super::plan::{AggCall, AggFunc, AggSource, Aggregate, GroupValue, Having, Table};

impl Session<'_> {
    pub(super) fn aggregate(&self, a: &Aggregate) -> Result<ResultSet> {
        let mut groups = Groups::new(a);
        match &a.source {
            AggSource::Scan {
                table: Table::Events,
                predicate,
            } => self.each_event(predicate.as_ref(), &mut |row| {
                groups.add(row);
                true
            })?,
            AggSource::Scan { predicate, .. } => {
                self.each_product(predicate.as_ref(), &mut |row| {
                    groups.add(row);
                    true
                })?
            }
            AggSource::Search {
                text,
                filter,
                residual,
            } => {
                for p in self.engine.search_matches(text, filter)? {
                    let row = Row::Product {
                        p: &p,
                        id: &p.id,
                        score: None,
                        explanation: None,
                    };
                    if residual.as_ref().is_none_or(|r| row.matches(r)) {
                        groups.add(&row);
                    }
                }
            }
        }
        Ok(groups.finish(a))
    }
}

/// One group's state: its key cells and one accumulator per aggregate.
struct Group {
    key: Vec<Value>,
    accs: Vec<Acc>,
}

/// The fold of one aggregate over a group's rows.
enum Acc {
    Count(i64),
    Distinct(HashSet<String>),
    Extreme(Option<Value>),
    Sum { total: f64, n: u64, whole: bool },
}

impl Acc {
    fn new(call: &AggCall) -> Acc {
        match call.func {
            AggFunc::Count if call.distinct => Acc::Distinct(HashSet::new()),
            AggFunc::Count => Acc::Count(0),
            AggFunc::Min | AggFunc::Max => Acc::Extreme(None),
            AggFunc::Sum | AggFunc::Avg => Acc::Sum {
                total: 0.0,
                n: 0,
                whole: true,
            },
        }
    }

    /// Folds one row's value in (`None` for `count(*)`, which counts every row).
    fn add(&mut self, func: AggFunc, v: Option<Value>) {
        let v = match v {
            None => {
                if let Acc::Count(n) = self {
                    *n += 1;
                }
                return;
            }
            // NULL is skipped by every aggregate but count(*).
            Some(Value::Null) => return,
            Some(v) => v,
        };
        match self {
            Acc::Count(n) => *n += 1,
            Acc::Distinct(set) => {
                set.insert(cell_key(&v));
            }
            Acc::Extreme(best) => {
                let better = best.as_ref().is_none_or(|b| {
                    let o = v.sort_cmp(b);
                    if func == AggFunc::Min {
                        o == Ordering::Less
                    } else {
                        o == Ordering::Greater
                    }
                });
                if better {
                    *best = Some(v);
                }
            }
            Acc::Sum { total, n, whole } => {
                // Attribute values are text: those that read as numbers count, others
                // are skipped as NULL is.
                let x = match &v {
                    Value::Int(i) => Some(*i as f64),
                    Value::Float(f) => {
                        *whole = false;
                        Some(*f)
                    }
                    Value::Text(t) => t.trim().parse::<f64>().ok().inspect(|x| {
                        if x.fract() != 0.0 {
                            *whole = false;
                        }
                    }),
                    Value::Null => None,
                };
                if let Some(x) = x.filter(|x| x.is_finite()) {
                    *total += x;
                    *n += 1;
                }
            }
        }
    }

    fn value(&self, func: AggFunc) -> Value {
        match self {
            Acc::Count(n) => Value::Int(*n),
            Acc::Distinct(set) => Value::Int(i64::try_from(set.len()).unwrap_or(i64::MAX)),
            Acc::Extreme(v) => v.clone().unwrap_or(Value::Null),
            Acc::Sum { n: 0, .. } => Value::Null,
            Acc::Sum { total, n, whole } => {
                if func == AggFunc::Avg {
                    Value::Float(*total / *n as f64)
                } else if *whole && total.abs() < 9.0e15 {
                    Value::Int(*total as i64)
                } else {
                    Value::Float(*total)
                }
            }
        }
    }
}

/// A cell as a map key, its type kept apart (the number 1 and the text '1' differ).
fn cell_key(v: &Value) -> String {
    match v {
        Value::Null => "n".to_string(),
        Value::Int(i) => format!("i{i}"),
        Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => format!("i{}", *f as i64),
        Value::Float(f) => format!("f{}", f.to_bits()),
        Value::Text(t) => format!("t{t}"),
    }
}

struct Groups<'a> {
    a: &'a Aggregate,
    index: HashMap<String, usize>,
    groups: Vec<Group>,
}

impl<'a> Groups<'a> {
    fn new(a: &'a Aggregate) -> Self {
        let mut g = Groups {
            a,
            index: HashMap::new(),
            groups: Vec::new(),
        };
        // Without GROUP BY every row is in one group, which exists even when no row does
        // (`count(*)` of nothing is 0).
        if a.group_by.is_empty() {
            g.index.insert(String::new(), 0);
            g.groups.push(Group {
                key: Vec::new(),
                accs: a.aggregates.iter().map(Acc::new).collect(),
            });
        }
        g
    }

    fn add(&mut self, row: &Row<'_>) {
        let key: Vec<Value> = self.a.group_by.iter().map(|f| row.value(f)).collect();
        let mut name = String::new();
        for cell in &key {
            name.push_str(&cell_key(cell));
            name.push('\u{1f}');
        }
        let at = match self.index.get(&name) {
            Some(&i) => i,
            None => {
                self.groups.push(Group {
                    key,
                    accs: self.a.aggregates.iter().map(Acc::new).collect(),
                });
                self.index.insert(name, self.groups.len() - 1);
                self.groups.len() - 1
            }
        };
        let group = &mut self.groups[at];
        for (acc, call) in group.accs.iter_mut().zip(&self.a.aggregates) {
            acc.add(call.func, call.arg.as_ref().map(|f| row.value(f)));
        }
    }

    fn finish(self, a: &Aggregate) -> ResultSet {
        // Each group's values: its key cells, then its aggregates.
        let mut rows: Vec<(Vec<Value>, Vec<Value>)> = self
            .groups
            .into_iter()
            .map(|g| {
                let aggs = g
                    .accs
                    .iter()
                    .zip(&a.aggregates)
                    .map(|(acc, call)| acc.value(call.func))
                    .collect();
                (g.key, aggs)
            })
            .collect();
        let get = |row: &(Vec<Value>, Vec<Value>), v: GroupValue| -> Value {
            match v {
                GroupValue::Key(i) => row.0.get(i).cloned().unwrap_or(Value::Null),
                GroupValue::Agg(i) => row.1.get(i).cloned().unwrap_or(Value::Null),
            }
        };
        if let Some(h) = &a.having {
            rows.retain(|row| having(h, &|v| get(row, v)));
        }
        rows.sort_by(|x, y| {
            for o in &a.order {
                let c = get(x, o.value).sort_cmp(&get(y, o.value));
                let c = if o.descending { c.reverse() } else { c };
                if c != Ordering::Equal {
                    return c;
                }
            }
            // Ties (and no ORDER BY) in the order of the GROUP BY values.
            for (p, q) in x.0.iter().zip(&y.0) {
                let c = p.sort_cmp(q);
                if c != Ordering::Equal {
                    return c;
                }
            }
            Ordering::Equal
        });
        let rows = rows
            .iter()
            .skip(a.offset)
            .take(a.limit.unwrap_or(usize::MAX))
            .map(|row| a.columns.iter().map(|c| get(row, c.value)).collect())
            .collect();
        ResultSet {
            columns: a.columns.iter().map(|c| c.label.clone()).collect(),
            rows,
            status: None,
        }
    }
}

/// Evaluates `HAVING` on one group; recursion is bounded by the planner's depth limit.
fn having(h: &Having, get: &dyn Fn(GroupValue) -> Value) -> bool {
    match h {
        Having::Cmp { value, op, lit } => compare(&get(*value), lit).is_some_and(|o| op.holds(o)),
        Having::And(v) => v.iter().all(|x| having(x, get)),
        Having::Or(v) => v.iter().any(|x| having(x, get)),
        Having::Not(x) => !having(x, get),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accumulators_skip_null_and_keep_whole_sums_whole() {
        let mut sum = Acc::new(&AggCall {
            func: AggFunc::Sum,
            arg: None,
            distinct: false,
        });
        for v in [
            Value::Int(2),
            Value::Null,
            Value::Text("3".into()),
            Value::Text("x".into()),
        ] {
            sum.add(AggFunc::Sum, Some(v));
        }
        assert_eq!(sum.value(AggFunc::Sum), Value::Int(5));
        sum.add(AggFunc::Sum, Some(Value::Float(0.5)));
        assert_eq!(sum.value(AggFunc::Sum), Value::Float(5.5));
        assert_eq!(sum.value(AggFunc::Avg), Value::Float(5.5 / 3.0));

        let mut min = Acc::Extreme(None);
        for v in [
            Value::Float(3.0),
            Value::Null,
            Value::Float(1.5),
            Value::Float(2.0),
        ] {
            min.add(AggFunc::Min, Some(v));
        }
        assert_eq!(min.value(AggFunc::Min), Value::Float(1.5));
        let mut empty = Acc::Extreme(None);
        empty.add(AggFunc::Max, Some(Value::Null));
        assert_eq!(empty.value(AggFunc::Max), Value::Null);

        let mut distinct = Acc::Distinct(HashSet::new());
        for v in ["a", "b", "a"] {
            distinct.add(AggFunc::Count, Some(Value::Text(v.into())));
        }
        distinct.add(AggFunc::Count, Some(Value::Int(1)));
        distinct.add(AggFunc::Count, Some(Value::Text("1".into())));
        assert_eq!(distinct.value(AggFunc::Count), Value::Int(4));

        let mut rows = Acc::Count(0);
        rows.add(AggFunc::Count, None);
        rows.add(AggFunc::Count, None);
        let mut values = Acc::Count(0);
        values.add(AggFunc::Count, Some(Value::Null));
        values.add(AggFunc::Count, Some(Value::Int(7)));
        assert_eq!(
            (rows.value(AggFunc::Count), values.value(AggFunc::Count)),
            (Value::Int(2), Value::Int(1))
        );
    }
}
