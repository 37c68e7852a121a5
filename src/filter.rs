//! Typed filters, shared by every retrieval channel.
//!
//! One [`Filter`] value is evaluated two ways: compiled into a tantivy query by `text`, and
//! checked against the in-memory record by [`Filter::matches`] for the vector and model
//! channels. Both must agree; `tests/it/filters.rs` checks that they do.

use crate::catalog::{category_levels, Product};
use crate::config::Limits;
use crate::error::{Error, Result};

/// A condition on products. Build it with the constructors and combine with
/// [`Filter::and`], [`Filter::or`] and [`Filter::not`].
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Filter {
    /// Every product.
    #[default]
    All,
    /// Brand equals (case-insensitive).
    Brand(String),
    /// Category path starts with these levels: `shoes` matches `shoes/running`, not `shoestrings`.
    Category(String),
    /// `min <= price <= max`; an open end is `None`. Products without a price never match.
    Price {
        /// Lowest price allowed.
        min: Option<f64>,
        /// Highest price allowed.
        max: Option<f64>,
    },
    /// Attribute `key` equals `value` (exact).
    Attribute {
        /// Attribute name.
        key: String,
        /// Required value.
        value: String,
    },
    /// Every sub-filter matches.
    And(Vec<Filter>),
    /// At least one sub-filter matches.
    Or(Vec<Filter>),
    /// The sub-filter does not match.
    Not(Box<Filter>),
}

impl Filter {
    /// Brand equals `brand`.
    pub fn brand(brand: impl Into<String>) -> Self {
        Filter::Brand(brand.into())
    }

    /// Category path starts with `path`.
    pub fn category(path: impl Into<String>) -> Self {
        Filter::Category(path.into())
    }

    /// Price between `min` and `max`, both inclusive.
    pub fn price(min: Option<f64>, max: Option<f64>) -> Self {
        Filter::Price { min, max }
    }

    /// Attribute `key` equals `value`.
    pub fn attribute(key: impl Into<String>, value: impl Into<String>) -> Self {
        Filter::Attribute {
            key: key.into(),
            value: value.into(),
        }
    }

    /// Both `self` and `other`.
    pub fn and(self, other: Filter) -> Self {
        match (self, other) {
            (Filter::All, f) | (f, Filter::All) => f,
            (Filter::And(mut a), f) => {
                a.push(f);
                Filter::And(a)
            }
            (a, b) => Filter::And(vec![a, b]),
        }
    }

    /// Either `self` or `other`.
    pub fn or(self, other: Filter) -> Self {
        Filter::Or(vec![self, other])
    }

    /// Negation.
    #[allow(clippy::should_implement_trait)]
    pub fn not(self) -> Self {
        Filter::Not(Box::new(self))
    }

    /// Whether the filter lets everything through.
    pub fn is_all(&self) -> bool {
        matches!(self, Filter::All)
    }

    /// Nesting depth: a leaf is 1.
    pub fn depth(&self) -> usize {
        // Iterative so that a hostile, deeply nested filter cannot overflow the stack here.
        let mut max = 0;
        let mut stack = vec![(self, 1usize)];
        while let Some((f, d)) = stack.pop() {
            max = max.max(d);
            match f {
                Filter::And(v) | Filter::Or(v) => stack.extend(v.iter().map(|c| (c, d + 1))),
                Filter::Not(c) => stack.push((c, d + 1)),
                _ => {}
            }
        }
        max
    }

    /// Checks depth and values before the filter is used anywhere.
    pub(crate) fn validate(&self, limits: &Limits) -> Result<()> {
        let depth = self.depth();
        if depth > limits.max_filter_depth {
            return Err(Error::LimitExceeded {
                what: "filter nesting depth",
                got: depth,
                limit: limits.max_filter_depth,
            });
        }
        let mut stack = vec![self];
        while let Some(f) = stack.pop() {
            match f {
                Filter::Price { min, max } => {
                    for v in [min, max].into_iter().flatten() {
                        if !v.is_finite() {
                            return Err(Error::invalid(
                                "filter.price",
                                format!("{v} is not finite"),
                            ));
                        }
                    }
                    if let (Some(a), Some(b)) = (min, max) {
                        if a > b {
                            return Err(Error::invalid(
                                "filter.price",
                                format!("min {a} is above max {b}"),
                            ));
                        }
                    }
                }
                Filter::Category(p) if category_levels(p).is_empty() => {
                    return Err(Error::invalid("filter.category", "empty category path"));
                }
                Filter::And(v) | Filter::Or(v) => stack.extend(v.iter()),
                Filter::Not(c) => stack.push(c),
                _ => {}
            }
        }
        Ok(())
    }

    /// Evaluates the filter on a product record.
    pub fn matches(&self, p: &Product) -> bool {
        match self {
            Filter::All => true,
            Filter::Brand(b) => {
                p.brand.eq_ignore_ascii_case(b) || p.brand.to_lowercase() == b.to_lowercase()
            }
            Filter::Category(path) => {
                let want = category_levels(path);
                let have = category_levels(&p.category);
                have.len() >= want.len() && have.iter().zip(&want).all(|(a, b)| a == b)
            }
            Filter::Price { min, max } => match p.price {
                Some(price) => min.is_none_or(|m| price >= m) && max.is_none_or(|m| price <= m),
                None => false,
            },
            Filter::Attribute { key, value } => p.attributes.get(key) == Some(value),
            Filter::And(v) => v.iter().all(|f| f.matches(p)),
            Filter::Or(v) => v.iter().any(|f| f.matches(p)),
            Filter::Not(f) => !f.matches(p),
        }
    }
}
