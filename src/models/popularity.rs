//! Popularity: the cold-start fallback and the baseline every personalised model must beat.
//!
//! An item's score is the sum of its interaction weights (or counts), optionally decayed
//! exponentially with age: an event `half_life` time units older than the newest event in the
//! data counts half. Scores are kept globally and per category; category membership is given
//! at fit time as `item_categories[item] = [category ids]`.
//!
//! With [`ScoreNoise`] (the engine's `count_noise`) the scores are released with Laplace
//! noise instead: see [`Popularity::fit_noisy`].

use super::{check_len, Interactions, ModelError};
use serde::{Deserialize, Serialize};

/// Hyper-parameters of [`Popularity`].
///
/// Defaults: weighted sums (`use_weights = true`), no time decay (`half_life = None`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PopularityParams {
    /// Sum weights (`true`) or count events (`false`).
    pub use_weights: bool,
    /// Exponential decay half-life in the unit of `Interaction::ts`, relative to the newest
    /// event; `None` disables decay.
    pub half_life: Option<f64>,
}

impl Default for PopularityParams {
    fn default() -> Self {
        PopularityParams {
            use_weights: true,
            half_life: None,
        }
    }
}

/// Laplace noise on the scores, for [`Popularity::fit_noisy`].
pub struct ScoreNoise<'a> {
    /// ε per released score.
    pub epsilon: f64,
    /// The most one (user, item) pair may add to an item's score with weights on
    /// (`use_weights`): a pair's summed, decayed weight above it counts as `clip`.
    pub clip: f64,
    /// Laplace noise of the given scale for an item (the same for the same item).
    pub draw: &'a (dyn Fn(u32, f64) -> f64 + Sync),
}

/// What noise a fitted model's scores carry.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct NoiseInfo {
    /// ε per released score.
    pub epsilon: f64,
    /// Δ: the most one shopper's interactions with one item move its score.
    pub sensitivity: f64,
    /// The Laplace scale, Δ/ε.
    pub scale: f64,
}

/// A fitted popularity model.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Popularity {
    params: PopularityParams,
    scores: Vec<f32>,
    /// Items of each category, most popular first.
    categories: Vec<Vec<u32>>,
    /// Latest interaction time per item (`i64::MIN` for none), for the recency feature.
    #[serde(default)]
    last_ts: Vec<i64>,
    /// The newest interaction time in the data.
    #[serde(default)]
    t_max: i64,
    /// The noise on `scores`, when fitted with it.
    #[serde(default)]
    noise: Option<NoiseInfo>,
    /// Items with a positive score, most popular first: computed on first use.
    #[serde(skip)]
    ranked: std::sync::OnceLock<Vec<u32>>,
}

impl Popularity {
    /// Counts (decayed) popularity. `item_categories` may be shorter than `n_items` (missing
    /// items have no category) or empty.
    ///
    /// # Errors
    /// [`ModelError::InvalidParam`] for a non-positive or non-finite half-life,
    /// [`ModelError::LengthMismatch`] when `item_categories` is longer than `n_items`,
    /// [`ModelError::IdOutOfRange`] for a category id of `u32::MAX`, and the errors of
    /// [`Interactions::validate`].
    pub fn fit(
        data: &Interactions,
        item_categories: &[Vec<u32>],
        params: &PopularityParams,
    ) -> Result<Self, ModelError> {
        Self::fit_with(data, item_categories, params, None)
    }

    /// [`fit`](Self::fit), then every item's score (those nobody interacted with too) is
    /// released as `max(0, score + Laplace(Δ/ε))`: the category lists and the ranking are
    /// made from the released scores, so nothing this model shows holds the exact ones.
    ///
    /// Δ, one shopper's largest contribution to one item's score: a score is a sum over
    /// (user, item) pairs of the pair's weight times the half-life decay. The training
    /// matrix has one row per pair whose weight is the sum of the shopper's event weights
    /// on the item, each time-decayed by the history rule; both decays count from the
    /// newest event, so they are at most 1, but a shopper can repeat events, so a pair's
    /// sum has no bound of its own. Here each pair's decayed sum is clipped at
    /// `noise.clip` (the caller passes the largest weight one event can have), so adding or
    /// removing one shopper's interactions with one item moves that item's score by at most
    /// Δ = `clip` with weights, Δ = 1 when counting (`use_weights = false`: a pair counts
    /// once, decayed), and no other item's score. (With a half-life the decay counts from the
    /// newest event in the data, which that shopper's event may be: the bound takes the
    /// reference time as public.) The noise has scale Δ/ε; clamping at 0 is
    /// post-processing and costs no privacy.
    ///
    /// # Errors
    /// As [`fit`](Self::fit); [`ModelError::InvalidParam`] for an ε or clip that is not
    /// finite and positive.
    pub fn fit_noisy(
        data: &Interactions,
        item_categories: &[Vec<u32>],
        params: &PopularityParams,
        noise: &ScoreNoise<'_>,
    ) -> Result<Self, ModelError> {
        for (name, v) in [("epsilon", noise.epsilon), ("clip", noise.clip)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(ModelError::InvalidParam {
                    name,
                    reason: format!("must be finite and > 0, got {v}"),
                });
            }
        }
        Self::fit_with(data, item_categories, params, Some(noise))
    }

    fn fit_with(
        data: &Interactions,
        item_categories: &[Vec<u32>],
        params: &PopularityParams,
        noise: Option<&ScoreNoise<'_>>,
    ) -> Result<Self, ModelError> {
        data.validate()?;
        if let Some(h) = params.half_life {
            if !(h.is_finite() && h > 0.0) {
                return Err(ModelError::InvalidParam {
                    name: "half_life",
                    reason: format!("must be finite and > 0, got {h}"),
                });
            }
        }
        if item_categories.len() > data.n_items {
            return Err(ModelError::LengthMismatch {
                what: "item_categories",
                expected: data.n_items,
                got: item_categories.len(),
            });
        }
        let t_max = data.rows.iter().map(|r| r.ts).max().unwrap_or(0);
        let mut acc = vec![0f64; data.n_items];
        let mut last_ts = vec![i64::MIN; data.n_items];
        // With noise: each (user, item) pair's decayed sum, clipped afterwards.
        let mut pairs: std::collections::HashMap<(u32, u32), f64> =
            std::collections::HashMap::new();
        for r in &data.rows {
            let last = &mut last_ts[r.item as usize];
            *last = (*last).max(r.ts);
            let w = if params.use_weights {
                f64::from(r.weight)
            } else {
                1.0
            };
            let decay = match params.half_life {
                Some(h) => (-((t_max - r.ts) as f64) / h * std::f64::consts::LN_2).exp(),
                None => 1.0,
            };
            if noise.is_some() {
                *pairs.entry((r.user, r.item)).or_insert(0.0) += w * decay;
            } else {
                acc[r.item as usize] += w * decay;
            }
        }
        let info = noise.map(|n| {
            let sensitivity = if params.use_weights { n.clip } else { 1.0 };
            NoiseInfo {
                epsilon: n.epsilon,
                sensitivity,
                scale: sensitivity / n.epsilon,
            }
        });
        if let (Some(n), Some(info)) = (noise, info) {
            for ((_, item), sum) in pairs {
                acc[item as usize] += sum.min(info.sensitivity);
            }
            for (item, v) in acc.iter_mut().enumerate() {
                *v = (*v + (n.draw)(item as u32, info.scale)).max(0.0);
            }
        }
        let scores: Vec<f32> = acc.iter().map(|&v| v as f32).collect();
        let mut n_cat = 0usize;
        for cats in item_categories {
            for &c in cats {
                if c == u32::MAX {
                    return Err(ModelError::IdOutOfRange {
                        kind: "category",
                        id: u64::from(c),
                        len: u32::MAX as usize,
                    });
                }
                n_cat = n_cat.max(c as usize + 1);
            }
        }
        let mut categories: Vec<Vec<u32>> = vec![Vec::new(); n_cat];
        for (item, cats) in item_categories.iter().enumerate() {
            for &c in cats {
                let list = &mut categories[c as usize];
                if list.last() != Some(&(item as u32)) {
                    list.push(item as u32);
                }
            }
        }
        for list in &mut categories {
            list.sort_unstable_by(|&a, &b| {
                scores[b as usize]
                    .total_cmp(&scores[a as usize])
                    .then(a.cmp(&b))
            });
            list.dedup();
        }
        Ok(Popularity {
            params: *params,
            scores,
            categories,
            last_ts,
            t_max,
            noise: info,
            ranked: std::sync::OnceLock::new(),
        })
    }

    /// A model from the fields of an earlier layout (no noise recorded).
    pub(crate) fn from_parts(
        params: PopularityParams,
        scores: Vec<f32>,
        categories: Vec<Vec<u32>>,
        last_ts: Vec<i64>,
        t_max: i64,
    ) -> Self {
        Popularity {
            params,
            scores,
            categories,
            last_ts,
            t_max,
            noise: None,
            ranked: std::sync::OnceLock::new(),
        }
    }

    /// The noise the scores carry (`None` when fitted without).
    pub fn noise(&self) -> Option<&NoiseInfo> {
        self.noise.as_ref()
    }

    /// The items with a positive score, most popular first (ties by id), as a dense score
    /// vector would rank them. Sorted once, on first use.
    pub fn ranked(&self) -> &[u32] {
        self.ranked.get_or_init(|| {
            let mut v: Vec<u32> = (0..self.scores.len() as u32)
                .filter(|&i| {
                    let s = self.scores[i as usize];
                    s.is_finite() && s > 0.0
                })
                .collect();
            v.sort_unstable_by(|&a, &b| {
                self.scores[b as usize]
                    .total_cmp(&self.scores[a as usize])
                    .then(a.cmp(&b))
            });
            v
        })
    }

    /// Whether `item` is in the popular head: the top 20% of all items (rounded up) by this
    /// popularity, the split the evaluation's long-tail share uses (items tied with the last
    /// head item count as head). Items with no positive score are never head.
    pub fn in_head(&self, item: u32) -> bool {
        let s = self.item_score(item);
        if !(s.is_finite() && s > 0.0) {
            return false;
        }
        let ranked = self.ranked();
        let n = self.scores.len().div_ceil(5).min(ranked.len());
        match n.checked_sub(1).and_then(|i| ranked.get(i)) {
            Some(&last) => s >= self.item_score(last),
            None => false,
        }
    }

    /// Number of items (the required score-buffer length).
    pub fn n_items(&self) -> usize {
        self.scores.len()
    }

    /// Number of categories (one past the largest category id seen).
    pub fn n_categories(&self) -> usize {
        self.categories.len()
    }

    /// The parameters used to fit.
    pub fn params(&self) -> &PopularityParams {
        &self.params
    }

    /// Time since the item's latest interaction, relative to the newest one in the data
    /// (`None` for an item nobody interacted with).
    pub fn item_age(&self, item: u32) -> Option<i64> {
        self.last_ts
            .get(item as usize)
            .filter(|t| **t != i64::MIN)
            .map(|t| self.t_max.saturating_sub(*t).max(0))
    }

    /// Popularity of one item (0 for an unknown item).
    pub fn item_score(&self, item: u32) -> f32 {
        self.scores.get(item as usize).copied().unwrap_or(0.0)
    }

    /// Writes every item's popularity.
    ///
    /// # Errors
    /// [`ModelError::LengthMismatch`] when `scores.len() != n_items`.
    pub fn score(&self, scores: &mut [f32]) -> Result<(), ModelError> {
        check_len(scores, self.scores.len())?;
        scores.copy_from_slice(&self.scores);
        Ok(())
    }

    /// Writes popularity for the items of category `cat` and `f32::NEG_INFINITY` for all
    /// others (an unknown category gives all `NEG_INFINITY`).
    ///
    /// # Errors
    /// [`ModelError::LengthMismatch`] when `scores.len() != n_items`.
    pub fn score_in_category(&self, cat: u32, scores: &mut [f32]) -> Result<(), ModelError> {
        check_len(scores, self.scores.len())?;
        scores.iter_mut().for_each(|s| *s = f32::NEG_INFINITY);
        for &i in self.category_items(cat) {
            scores[i as usize] = self.scores[i as usize];
        }
        Ok(())
    }

    /// The items of category `cat`, most popular first (empty for an unknown category).
    pub fn category_items(&self, cat: u32) -> &[u32] {
        self.categories
            .get(cat as usize)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}
