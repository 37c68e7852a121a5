//! Item-based collaborative filtering (item-KNN).
//!
//! Fitting computes, for every item `i`, its `k` most similar items from co-occurrence in user
//! histories and stores them as a [`Neighbours`] list. Scoring needs only a history, so the
//! engine can score straight from the live interaction log: a new event changes the
//! recommendations at once, without retraining.
//!
//! Two similarity families are offered:
//! - [`ItemSimilarity::Cosine`]: `sim(i, j) = dot(v_i, v_j) / (|v_i| |v_j| + shrink)` where `v_i`
//!   is item `i`'s column of the (optionally IDF/BM25-weighted) user-item matrix;
//! - [`ItemSimilarity::Rp3Beta`]: the random-walk similarity of Paudel et al. (2017), `P_iu^a ·
//!   P_uj^a / pop_j^b` with row-stochastic transition probabilities, which penalises popular
//!   targets.
//!
//! Only positive weights are used (negative feedback is ignored by this model).

use super::{
    check_len, check_param, knn_rows, row_norms, Csr, Interactions, ModelError, Neighbours,
    Weighting,
};
use serde::{Deserialize, Serialize};

/// How item-item similarity is measured.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum ItemSimilarity {
    /// Cosine with shrinkage: `dot / (|a| |b| + shrink)`.
    Cosine,
    /// RP3beta: 3-step random walk item -> user -> item with transition probabilities raised to
    /// `alpha`, divided by the target item's popularity to the power `beta`. `shrink` is unused.
    Rp3Beta {
        /// Exponent on the transition probabilities (> 0; 1 = plain random walk).
        alpha: f32,
        /// Popularity penalty exponent (>= 0; 0 = P3alpha).
        beta: f32,
    },
}

/// Hyper-parameters of [`ItemCf`].
///
/// The default is RP3beta with `alpha = 1.0`, `beta = 0.6`, `k = 200` and L1-normalised
/// neighbour rows: the best item-CF setting on the MovieLens-100K validation split (see
/// `models/tests.rs`, `ml100k_tune_rp3beta`). [`ItemCfParams::cosine`] gives the tuned cosine
/// variant.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ItemCfParams {
    /// Neighbours kept per item (>= 1).
    pub k: usize,
    /// Shrinkage added to the cosine denominator; damps similarities built on little support.
    pub shrink: f32,
    /// Similarity family.
    pub similarity: ItemSimilarity,
    /// Re-weighting of users (the columns of the item vectors): IDF / BM25 make heavy users count
    /// less.
    pub weighting: Weighting,
    /// L1-normalise every item's neighbour list, so that each history item spreads the same total
    /// mass (dampens popular history items with many strong neighbours).
    pub normalize: bool,
}

impl Default for ItemCfParams {
    fn default() -> Self {
        ItemCfParams {
            k: 200,
            shrink: 0.0,
            similarity: ItemSimilarity::Rp3Beta {
                alpha: 1.0,
                beta: 0.6,
            },
            weighting: Weighting::None,
            normalize: true,
        }
    }
}

impl ItemCfParams {
    /// Cosine item-KNN as tuned on the MovieLens-100K validation split (`ml100k_tune_itemcf`):
    /// `k = 100`, `shrink = 200`, BM25 user weighting (`k1 = 1.2, b = 0.75`), normalised rows.
    pub fn cosine() -> Self {
        ItemCfParams {
            k: 100,
            shrink: 200.0,
            similarity: ItemSimilarity::Cosine,
            weighting: Weighting::Bm25 { k1: 1.2, b: 0.75 },
            normalize: true,
        }
    }
}

impl ItemCfParams {
    fn validate(&self) -> Result<(), ModelError> {
        if self.k == 0 {
            return Err(ModelError::InvalidParam {
                name: "k",
                reason: "must be >= 1".into(),
            });
        }
        check_param("shrink", self.shrink, 0.0)?;
        self.weighting.validate()?;
        if let ItemSimilarity::Rp3Beta { alpha, beta } = self.similarity {
            check_param("rp3.alpha", alpha, f32::MIN_POSITIVE)?;
            check_param("rp3.beta", beta, 0.0)?;
        }
        Ok(())
    }
}

/// A fitted item-KNN model: the top-`k` neighbours of every item.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ItemCf {
    n_items: usize,
    params: ItemCfParams,
    neighbours: Neighbours,
}

impl ItemCf {
    /// Fits the neighbour lists on `data`.
    ///
    /// # Errors
    /// [`ModelError::InvalidParam`] for bad parameters; the errors of
    /// [`Interactions::validate`] for bad input.
    pub fn fit(data: &Interactions, params: &ItemCfParams) -> Result<Self, ModelError> {
        params.validate()?;
        let iu = positive_part(&data.item_user_csr()?);
        let weighted = params.weighting.apply(&iu);
        let mut neighbours = match params.similarity {
            ItemSimilarity::Cosine => {
                let norms = row_norms(&weighted);
                let ui = weighted.transpose();
                let shrink = params.shrink;
                knn_rows(&weighted, &ui, params.k, true, |i, j, dot| {
                    let d = norms[i] * norms[j as usize] + shrink;
                    if d > 0.0 {
                        dot / d
                    } else {
                        0.0
                    }
                })
            }
            ItemSimilarity::Rp3Beta { alpha, beta } => {
                let item_tot: Vec<f32> = (0..weighted.n_rows)
                    .map(|r| weighted.row(r).1.iter().sum())
                    .collect();
                let mut left = weighted.clone();
                for (r, &t) in item_tot.iter().enumerate() {
                    let (a, b) = (left.indptr[r], left.indptr[r + 1]);
                    for v in &mut left.values[a..b] {
                        *v = if t > 0.0 { (*v / t).powf(alpha) } else { 0.0 };
                    }
                }
                let mut right = weighted.transpose();
                for r in 0..right.n_rows {
                    let (a, b) = (right.indptr[r], right.indptr[r + 1]);
                    let t: f32 = right.values[a..b].iter().sum();
                    for v in &mut right.values[a..b] {
                        *v = if t > 0.0 { (*v / t).powf(alpha) } else { 0.0 };
                    }
                }
                let pen: Vec<f32> = item_tot
                    .iter()
                    .map(|&p| if p > 0.0 { p.powf(beta) } else { 1.0 })
                    .collect();
                knn_rows(&left, &right, params.k, true, |_, j, acc| {
                    acc / pen[j as usize]
                })
            }
        };
        if params.normalize {
            neighbours = l1_normalise(neighbours);
        }
        Ok(ItemCf {
            n_items: data.n_items,
            params: *params,
            neighbours,
        })
    }

    /// Number of items the model was fitted on (the required score-buffer length).
    pub fn n_items(&self) -> usize {
        self.n_items
    }

    /// The parameters used to fit.
    pub fn params(&self) -> &ItemCfParams {
        &self.params
    }

    /// The stored neighbours of `item`, most similar first (empty for an unknown item).
    pub fn neighbours(&self, item: u32) -> &[(u32, f32)] {
        self.neighbours.row(item as usize)
    }

    /// The stored similarity of `b` as a neighbour of `a` (`0` when not among `a`'s top-k).
    pub fn similarity(&self, a: u32, b: u32) -> f32 {
        self.neighbours.get(a as usize, b).unwrap_or(0.0)
    }

    /// Scores every item for a history of `(item, weight)`:
    /// `scores[j] = sum_i w_i * sim(i, j)`. History items are not masked out (the caller
    /// excludes what the user already has). Unknown items in the history are skipped.
    ///
    /// # Errors
    /// [`ModelError::LengthMismatch`] when `scores.len() != n_items`.
    pub fn score_history(
        &self,
        history: &[(u32, f32)],
        scores: &mut [f32],
    ) -> Result<(), ModelError> {
        check_len(scores, self.n_items)?;
        self.neighbours.accumulate(history, scores);
        Ok(())
    }

    /// As `score_history`, for the items the history reaches only (every other item scores
    /// 0): cost in the history's neighbours, not in the catalog size.
    pub fn score_history_sparse(&self, history: &[(u32, f32)]) -> super::SparseScores {
        self.neighbours.accumulate_sparse(history, self.n_items)
    }

    /// Explains a recommendation: the history item contributing most to `candidate`'s score and
    /// its contribution (`w * sim`), or `None` when no history item links to it.
    pub fn explain(&self, candidate: u32, history: &[(u32, f32)]) -> Option<(u32, f32)> {
        self.neighbours.best_contributor(candidate, history)
    }
}

/// Drops non-positive entries.
pub(crate) fn positive_part(m: &Csr) -> Csr {
    let trip = (0..m.n_rows).flat_map(|r| {
        let (c, v) = m.row(r);
        c.iter()
            .zip(v)
            .filter(|(_, &v)| v > 0.0)
            .map(move |(&c, &v)| (r as u32, c, v))
    });
    Csr::from_triplets(m.n_rows, m.n_cols, trip)
}

/// Divides every row by its sum.
fn l1_normalise(n: Neighbours) -> Neighbours {
    let rows: Vec<Vec<(u32, f32)>> = (0..n.n_rows())
        .map(|r| {
            let row = n.row(r);
            let s: f32 = row.iter().map(|e| e.1).sum();
            if s > 0.0 {
                row.iter().map(|&(j, v)| (j, v / s)).collect()
            } else {
                row.to_vec()
            }
        })
        .collect();
    Neighbours::from_rows(rows)
}
