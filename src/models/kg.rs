//! Knowledge-graph relatedness: items are related through the entities they share (brand,
//! category, actors, external knowledge-graph neighbours, ...).
//!
//! Each item is a binary vector over entities weighted by the entity's inverse document
//! frequency `idf(e) = ln(n_items / df(e))`, so that a rare shared entity (a director) links two
//! items far more than a common one (the genre "Drama"). Relatedness is the cosine of these
//! vectors with shrinkage, `Σ_shared idf(e)² / (|a| |b| + shrink)`, and the `k` most related
//! items of each item are stored. Entities attached to more than `max_df_fraction` of the items
//! carry almost no information and are skipped (they would also cost `df²` work). Multi-hop
//! expansion (entities of entities) is the caller's choice: pass the expanded entity lists.

use super::itemcf::positive_part;
use super::{check_len, check_param, knn_rows, Csr, ModelError, Neighbours};
use serde::{Deserialize, Serialize};

/// Hyper-parameters of [`KgRelatedness`].
///
/// Defaults: `k = 300` related items per item, `shrink = 100`, entities on more than a fifth of
/// the items skipped (`max_df_fraction = 0.2`): the best values on the MovieLens-100K validation
/// split (`ml100k_tune_kg`), where the differences between settings were small.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct KgParams {
    /// Related items kept per item (>= 1).
    pub k: usize,
    /// Shrinkage added to the cosine denominator.
    pub shrink: f32,
    /// Entities attached to a larger fraction of the items are ignored (in `(0, 1]`).
    pub max_df_fraction: f32,
    /// Entities attached to more items than this are ignored too (>= 1): the pairs an entity
    /// contributes grow with the square of its item count (a category of 100,000 products
    /// is 10^10 pairs), and so common an entity says little about any one pair.
    pub max_df_items: usize,
}

impl Default for KgParams {
    fn default() -> Self {
        KgParams {
            k: 300,
            shrink: 100.0,
            max_df_fraction: 0.2,
            max_df_items: 1_000,
        }
    }
}

/// A fitted entity-overlap relatedness model.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KgRelatedness {
    n_items: usize,
    n_entities: usize,
    params: KgParams,
    /// IDF of every entity (0 for skipped or unused entities).
    entity_idf: Vec<f32>,
    /// Item -> entity, values `idf(e)`, sorted entity ids.
    item_entities: Csr,
    neighbours: Neighbours,
}

impl KgRelatedness {
    /// Fits from the entity lists of `n_items` items (`item_entities[i]`, may be shorter than
    /// `n_items`; duplicates ignored).
    ///
    /// # Errors
    /// [`ModelError::InvalidParam`] for bad parameters, [`ModelError::LengthMismatch`] when
    /// `item_entities` is longer than `n_items`, [`ModelError::IdOutOfRange`] for an entity id
    /// `>= n_entities`.
    pub fn fit(
        n_items: usize,
        item_entities: &[Vec<u32>],
        n_entities: usize,
        params: &KgParams,
    ) -> Result<Self, ModelError> {
        if params.k == 0 {
            return Err(ModelError::InvalidParam {
                name: "k",
                reason: "must be >= 1".into(),
            });
        }
        check_param("shrink", params.shrink, 0.0)?;
        if !(params.max_df_fraction > 0.0 && params.max_df_fraction <= 1.0) {
            return Err(ModelError::InvalidParam {
                name: "max_df_fraction",
                reason: "must be in (0, 1]".into(),
            });
        }
        if item_entities.len() > n_items {
            return Err(ModelError::LengthMismatch {
                what: "item_entities",
                expected: n_items,
                got: item_entities.len(),
            });
        }
        for ents in item_entities {
            if let Some(&e) = ents.iter().find(|&&e| e as usize >= n_entities) {
                return Err(ModelError::IdOutOfRange {
                    kind: "entity",
                    id: u64::from(e),
                    len: n_entities,
                });
            }
        }
        let binary = Csr::from_triplets(
            n_items,
            n_entities,
            item_entities
                .iter()
                .enumerate()
                .flat_map(|(i, es)| es.iter().map(move |&e| (i as u32, e, 1.0f32))),
        );
        let mut df = vec![0u32; n_entities];
        for &e in &binary.indices {
            df[e as usize] += 1;
        }
        if params.max_df_items == 0 {
            return Err(ModelError::InvalidParam {
                name: "max_df_items",
                reason: "must be >= 1".into(),
            });
        }
        let max_df = (params.max_df_fraction * n_items as f32)
            .max(1.0)
            .min(params.max_df_items as f32);
        let n = n_items.max(1) as f32;
        let entity_idf: Vec<f32> = df
            .iter()
            .map(|&d| {
                if d == 0 || d as f32 > max_df {
                    0.0
                } else {
                    (n / d as f32).ln().max(0.0)
                }
            })
            .collect();
        let mut weighted = binary;
        for (v, &e) in weighted.values.iter_mut().zip(&weighted.indices) {
            *v = entity_idf[e as usize];
        }
        let item_entities = positive_part(&weighted);
        let norms: Vec<f32> = (0..n_items)
            .map(|i| {
                item_entities
                    .row(i)
                    .1
                    .iter()
                    .map(|v| v * v)
                    .sum::<f32>()
                    .sqrt()
            })
            .collect();
        let entity_items = item_entities.transpose();
        let shrink = params.shrink;
        let neighbours = knn_rows(
            &item_entities,
            &entity_items,
            params.k,
            true,
            |i, j, dot| {
                let d = norms[i] * norms[j as usize] + shrink;
                if d > 0.0 {
                    dot / d
                } else {
                    0.0
                }
            },
        );
        Ok(KgRelatedness {
            n_items,
            n_entities,
            params: *params,
            entity_idf,
            item_entities,
            neighbours,
        })
    }

    /// Number of items (the required score-buffer length).
    pub fn n_items(&self) -> usize {
        self.n_items
    }

    /// Number of entities.
    pub fn n_entities(&self) -> usize {
        self.n_entities
    }

    /// The parameters used to fit.
    pub fn params(&self) -> &KgParams {
        &self.params
    }

    /// IDF weight of an entity (0 when unused, skipped or unknown).
    pub fn entity_idf(&self, entity: u32) -> f32 {
        self.entity_idf.get(entity as usize).copied().unwrap_or(0.0)
    }

    /// The stored related items of `item`, most related first.
    pub fn related(&self, item: u32) -> &[(u32, f32)] {
        self.neighbours.row(item as usize)
    }

    /// Scores every item from a history: `scores[j] = Σ_i w_i · rel(i, j)`.
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

    /// The shared entity that links `a` and `b` best (the rarest one, highest IDF), with its
    /// IDF; `None` when they share no informative entity.
    pub fn best_link(&self, a: u32, b: u32) -> Option<(u32, f32)> {
        let (ea, _) = self.item_entities.row(a as usize);
        let (eb, _) = self.item_entities.row(b as usize);
        let (mut x, mut y) = (0usize, 0usize);
        let mut best: Option<(u32, f32)> = None;
        while x < ea.len() && y < eb.len() {
            match ea[x].cmp(&eb[y]) {
                std::cmp::Ordering::Less => x += 1,
                std::cmp::Ordering::Greater => y += 1,
                std::cmp::Ordering::Equal => {
                    let e = ea[x];
                    let w = self.entity_idf(e);
                    if best.is_none_or(|(_, bw)| w > bw) {
                        best = Some((e, w));
                    }
                    x += 1;
                    y += 1;
                }
            }
        }
        best
    }

    /// How many of `history`'s items share an informative entity with `candidate` (the
    /// knowledge-graph paths of length two between them), looking at the first `max_history`.
    pub fn linked_history(
        &self,
        candidate: u32,
        history: &[(u32, f32)],
        max_history: usize,
    ) -> usize {
        if candidate as usize >= self.n_items {
            return 0;
        }
        history
            .iter()
            .filter(|(h, _)| (*h as usize) < self.n_items)
            .take(max_history)
            .filter(|(h, _)| self.best_link(candidate, *h).is_some())
            .count()
    }

    /// Explains a recommendation: the history item contributing most to `candidate` and its
    /// contribution; combine with [`KgRelatedness::best_link`] for the entity behind it.
    pub fn explain(&self, candidate: u32, history: &[(u32, f32)]) -> Option<(u32, f32)> {
        self.neighbours.best_contributor(candidate, history)
    }
}
