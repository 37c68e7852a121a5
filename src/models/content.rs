//! Content-based item neighbours: items close to each other by what they are, not by who
//! bought them.
//!
//! Fitting computes, for every item, its `k` most similar items by a blend of two content
//! similarities, and stores them as a [`Neighbours`] list that scores a history the way
//! item-CF does (`score[j] = sum_i w_i * sim(i, j)`):
//!
//! - **text**: cosine of IDF-weighted term vectors (the analysed title, the brand and every
//!   level of the category), computed with item-CF's cosine on an item x term matrix. Terms
//!   carried by more than [`ContentParams::max_term_items`] items are left out: they say little
//!   and would make the sparse product quadratic in a large catalog.
//! - **vector**: cosine of the product vectors, from nearest-neighbour lists the caller
//!   computes with the vector index (this module performs no search and no I/O).
//!
//! `sim = text_weight * text + vector_weight * vector` (each in [0, 1]; a missing part counts
//! 0). Neither part needs interactions, so a product nobody has bought yet still has
//! neighbours, and a shop without text or vectors gets an empty model that scores nothing.

use super::{check_len, Interaction, Interactions, ItemCf, ItemCfParams, ModelError, Neighbours};
use super::{ItemSimilarity, Weighting};
use serde::{Deserialize, Serialize};

/// Hyper-parameters of [`ContentKnn`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContentParams {
    /// Neighbours kept per item (>= 1). Default 50.
    pub k: usize,
    /// Weight of the text similarity (>= 0). Default 1.
    pub text_weight: f32,
    /// Weight of the vector similarity (>= 0). Default 1.
    pub vector_weight: f32,
    /// Terms on more items than this are ignored. Default 5,000.
    pub max_term_items: usize,
}

impl Default for ContentParams {
    fn default() -> Self {
        ContentParams {
            k: 50,
            text_weight: 1.0,
            vector_weight: 1.0,
            max_term_items: 5_000,
        }
    }
}

impl ContentParams {
    fn validate(&self) -> Result<(), ModelError> {
        if self.k == 0 {
            return Err(ModelError::InvalidParam {
                name: "content.k",
                reason: "must be >= 1".into(),
            });
        }
        super::check_param("content.text_weight", self.text_weight, 0.0)?;
        super::check_param("content.vector_weight", self.vector_weight, 0.0)?;
        Ok(())
    }
}

/// What content fitting reads about the catalog.
#[derive(Clone, Debug, Default)]
pub struct ContentInputs {
    /// Term ids per item (distinct), each `< n_terms`.
    pub item_terms: Vec<Vec<u32>>,
    /// Size of the term dictionary.
    pub n_terms: usize,
    /// Per item, its nearest items by product vector with their cosine, best first (empty
    /// for an item without a vector, or for every item when the shop has none).
    pub vector_neighbours: Vec<Vec<(u32, f32)>>,
}

/// A fitted content model: the top-`k` content neighbours of every item.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContentKnn {
    n_items: usize,
    params: ContentParams,
    neighbours: Neighbours,
}

impl ContentKnn {
    /// Fits the neighbour lists of `n_items` items from `inputs`.
    ///
    /// # Errors
    /// [`ModelError::InvalidParam`] for bad parameters; [`ModelError::IdOutOfRange`] for a
    /// term or neighbour id out of range; [`ModelError::NonFinite`] for a NaN similarity.
    pub fn fit(
        n_items: usize,
        inputs: &ContentInputs,
        params: &ContentParams,
    ) -> Result<Self, ModelError> {
        params.validate()?;
        let mut rows: Vec<Vec<(u32, f32)>> = vec![Vec::new(); n_items];
        if params.text_weight > 0.0 {
            for (i, list) in text_neighbours(n_items, inputs, params)?
                .into_iter()
                .enumerate()
            {
                if let Some(row) = rows.get_mut(i) {
                    row.extend(list.into_iter().map(|(j, s)| (j, params.text_weight * s)));
                }
            }
        }
        if params.vector_weight > 0.0 {
            for (i, list) in inputs.vector_neighbours.iter().enumerate().take(n_items) {
                for &(j, s) in list {
                    if j as usize >= n_items {
                        return Err(ModelError::IdOutOfRange {
                            kind: "item",
                            id: u64::from(j),
                            len: n_items,
                        });
                    }
                    if !s.is_finite() {
                        return Err(ModelError::NonFinite { what: "similarity" });
                    }
                    if s > 0.0 && j as usize != i {
                        rows[i].push((j, params.vector_weight * s.min(1.0)));
                    }
                }
            }
        }
        for row in &mut rows {
            // Sum the two parts of a pair, keep the best k.
            row.sort_unstable_by_key(|e| e.0);
            row.dedup_by(|b, a| {
                if a.0 == b.0 {
                    a.1 += b.1;
                    true
                } else {
                    false
                }
            });
            row.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            row.truncate(params.k);
        }
        Ok(ContentKnn {
            n_items,
            params: *params,
            neighbours: Neighbours::from_rows(rows),
        })
    }

    /// Number of items the model was fitted on (the required score-buffer length).
    pub fn n_items(&self) -> usize {
        self.n_items
    }

    /// The parameters used to fit.
    pub fn params(&self) -> &ContentParams {
        &self.params
    }

    /// Whether any item has a content neighbour (a shop without text or vectors has none).
    pub fn is_empty(&self) -> bool {
        self.neighbours.n_entries() == 0
    }

    /// The stored neighbours of `item`, most similar first (empty for an unknown item).
    pub fn neighbours(&self, item: u32) -> &[(u32, f32)] {
        self.neighbours.row(item as usize)
    }

    /// Scores every item for a history of `(item, weight)`: `scores[j] = sum_i w_i *
    /// sim(i, j)`. Unknown history items are skipped.
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

    /// As `score_history`, for the items the history reaches only.
    pub fn score_history_sparse(&self, history: &[(u32, f32)]) -> super::SparseScores {
        self.neighbours.accumulate_sparse(history, self.n_items)
    }

    /// The history item contributing most to `candidate`'s score and its contribution.
    pub fn explain(&self, candidate: u32, history: &[(u32, f32)]) -> Option<(u32, f32)> {
        self.neighbours.best_contributor(candidate, history)
    }
}

/// Text neighbours: item-CF's cosine on the item x term matrix (terms as the "users"), IDF
/// weighting, common terms dropped.
fn text_neighbours(
    n_items: usize,
    inputs: &ContentInputs,
    params: &ContentParams,
) -> Result<Vec<Vec<(u32, f32)>>, ModelError> {
    let mut df = vec![0usize; inputs.n_terms];
    for terms in inputs.item_terms.iter().take(n_items) {
        for &t in terms {
            let slot = df.get_mut(t as usize).ok_or(ModelError::IdOutOfRange {
                kind: "term",
                id: u64::from(t),
                len: inputs.n_terms,
            })?;
            *slot += 1;
        }
    }
    let rows: Vec<Interaction> = inputs
        .item_terms
        .iter()
        .take(n_items)
        .enumerate()
        .flat_map(|(i, terms)| {
            terms
                .iter()
                .filter(|&&t| (2..=params.max_term_items).contains(&df[t as usize]))
                .map(move |&t| Interaction {
                    user: t,
                    item: i as u32,
                    weight: 1.0,
                    rating: None,
                    ts: 0,
                })
        })
        .collect();
    if rows.is_empty() {
        return Ok(vec![Vec::new(); n_items]);
    }
    let data = Interactions {
        n_users: inputs.n_terms,
        n_items,
        rows,
    };
    let cf = ItemCf::fit(
        &data,
        &ItemCfParams {
            k: params.k,
            shrink: 0.0,
            similarity: ItemSimilarity::Cosine,
            weighting: Weighting::Idf,
            normalize: false,
        },
    )?;
    Ok((0..n_items as u32)
        .map(|i| cf.neighbours(i).to_vec())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Items 0-2 share title terms, 3-4 share a brand, 5 shares nothing; item 5's vector is
    /// close to item 0's.
    fn inputs() -> ContentInputs {
        ContentInputs {
            item_terms: vec![
                vec![0, 1, 2],
                vec![0, 1, 3],
                vec![0, 4],
                vec![5, 6],
                vec![5, 7],
                vec![8],
            ],
            n_terms: 9,
            vector_neighbours: vec![
                vec![(5, 0.9)],
                vec![],
                vec![],
                vec![],
                vec![],
                vec![(0, 0.9)],
            ],
        }
    }

    #[test]
    fn neighbours_blend_text_and_vectors() {
        let m = ContentKnn::fit(6, &inputs(), &ContentParams::default()).unwrap();
        let of = |i: u32| m.neighbours(i).iter().map(|e| e.0).collect::<Vec<_>>();
        // Item 1 shares two terms with 0 and one with 2: 0 first.
        assert_eq!(of(1), vec![0, 2]);
        assert_eq!(of(3), vec![4]);
        // Item 0: its vector neighbour 5 (0.9) beside its text neighbours.
        assert!(of(0).contains(&5) && of(0).contains(&1), "{:?}", of(0));
        assert_eq!(of(5), vec![0]);
        // A history scores by its items' neighbours; the explanation names the item.
        let mut s = vec![0f32; 6];
        m.score_history(&[(3, 1.0)], &mut s).unwrap();
        assert!(s[4] > 0.0 && s.iter().enumerate().all(|(i, x)| i == 4 || *x == 0.0));
        assert_eq!(m.explain(4, &[(1, 1.0), (3, 1.0)]).map(|e| e.0), Some(3));
        // Text off: only the vector pairs remain.
        let vec_only = ContentParams {
            text_weight: 0.0,
            ..ContentParams::default()
        };
        let m = ContentKnn::fit(6, &inputs(), &vec_only).unwrap();
        assert!(m.neighbours(1).is_empty());
        assert_eq!(m.neighbours(0), &[(5, 0.9)]);
    }

    #[test]
    fn a_shop_without_content_gets_an_empty_model() {
        let none = ContentInputs {
            item_terms: vec![Vec::new(); 4],
            n_terms: 0,
            vector_neighbours: Vec::new(),
        };
        let m = ContentKnn::fit(4, &none, &ContentParams::default()).unwrap();
        assert!(m.is_empty());
        // A term on one item only links nothing either.
        let single = ContentInputs {
            item_terms: vec![vec![0], vec![1], vec![], vec![]],
            n_terms: 2,
            vector_neighbours: Vec::new(),
        };
        assert!(ContentKnn::fit(4, &single, &ContentParams::default())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let mut bad = inputs();
        bad.item_terms[0].push(99);
        assert!(matches!(
            ContentKnn::fit(6, &bad, &ContentParams::default()),
            Err(ModelError::IdOutOfRange { .. })
        ));
        let mut bad = inputs();
        bad.vector_neighbours[1] = vec![(77, 0.5)];
        assert!(matches!(
            ContentKnn::fit(6, &bad, &ContentParams::default()),
            Err(ModelError::IdOutOfRange { .. })
        ));
        let mut bad = inputs();
        bad.vector_neighbours[1] = vec![(2, f32::NAN)];
        assert!(matches!(
            ContentKnn::fit(6, &bad, &ContentParams::default()),
            Err(ModelError::NonFinite { .. })
        ));
        let zero_k = ContentParams {
            k: 0,
            ..ContentParams::default()
        };
        assert!(ContentKnn::fit(6, &inputs(), &zero_k).is_err());
    }
}
