//! User-based collaborative filtering (user-KNN).
//!
//! Fitting finds every training user's `k` most similar users (cosine with shrinkage over
//! optionally IDF/BM25-weighted item vectors, so that blockbusters count less). A user is scored
//! by the similarity-weighted interactions of those neighbours. A user unknown at training time
//! is scored from a history by computing the similarities on the fly (one sparse pass over the
//! users who share an item with the history).

use super::itemcf::positive_part;
use super::{
    check_len, check_param, knn_rows, row_norms, select_top_k, Csr, Interactions, ModelError,
    Neighbours, Weighting,
};
use serde::{Deserialize, Serialize};

/// Hyper-parameters of [`UserCf`].
///
/// The defaults (`k = 80`, `shrink = 10`, BM25 item weighting with `k1 = 1.2, b = 0.75`) are the
/// values tuned on the MovieLens-100K validation split (see `models/tests.rs`,
/// `ml100k_tune_usercf`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserCfParams {
    /// Neighbours kept per user (>= 1).
    pub k: usize,
    /// Shrinkage added to the cosine denominator.
    pub shrink: f32,
    /// Re-weighting of items (the columns of the user vectors).
    pub weighting: Weighting,
}

impl Default for UserCfParams {
    fn default() -> Self {
        UserCfParams {
            k: 80,
            shrink: 10.0,
            weighting: Weighting::Bm25 { k1: 1.2, b: 0.75 },
        }
    }
}

/// A fitted user-KNN model.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UserCf {
    n_users: usize,
    n_items: usize,
    params: UserCfParams,
    neighbours: Neighbours,
    /// Raw positive weights, user rows: what neighbours contribute.
    user_items: Csr,
    /// Weighted item -> user matrix, for similarities of a new history.
    item_users_w: Csr,
    user_norms: Vec<f32>,
    item_idf: Vec<f32>,
    avg_len: f32,
}

impl UserCf {
    /// Fits the user neighbour lists.
    ///
    /// # Errors
    /// [`ModelError::InvalidParam`] for bad parameters; the errors of
    /// [`Interactions::validate`] for bad input.
    pub fn fit(data: &Interactions, params: &UserCfParams) -> Result<Self, ModelError> {
        if params.k == 0 {
            return Err(ModelError::InvalidParam {
                name: "k",
                reason: "must be >= 1".into(),
            });
        }
        check_param("shrink", params.shrink, 0.0)?;
        params.weighting.validate()?;
        let user_items = positive_part(&data.user_item_csr()?);
        let weighted = params.weighting.apply(&user_items);
        let user_norms = row_norms(&weighted);
        let item_users_w = weighted.transpose();
        let shrink = params.shrink;
        let neighbours = knn_rows(&weighted, &item_users_w, params.k, true, |u, v, dot| {
            let d = user_norms[u] * user_norms[v as usize] + shrink;
            if d > 0.0 {
                dot / d
            } else {
                0.0
            }
        });
        Ok(UserCf {
            n_users: data.n_users,
            n_items: data.n_items,
            params: *params,
            neighbours,
            item_idf: Weighting::column_idf(&user_items),
            avg_len: Weighting::avg_row_len(&user_items),
            user_items,
            item_users_w,
            user_norms,
        })
    }

    /// Number of items (the required score-buffer length).
    pub fn n_items(&self) -> usize {
        self.n_items
    }

    /// Number of training users.
    pub fn n_users(&self) -> usize {
        self.n_users
    }

    /// The parameters used to fit.
    pub fn params(&self) -> &UserCfParams {
        &self.params
    }

    /// The stored neighbours of a training user, most similar first.
    pub fn neighbours(&self, user: u32) -> &[(u32, f32)] {
        self.neighbours.row(user as usize)
    }

    /// Scores every item for a training user: `scores[j] = sum_v sim(u, v) * w_vj` over the
    /// user's neighbours `v`. Items the user already has are not masked out.
    ///
    /// # Errors
    /// [`ModelError::IdOutOfRange`] for an unknown user, [`ModelError::LengthMismatch`] when
    /// `scores.len() != n_items`.
    pub fn score_user(&self, user: u32, scores: &mut [f32]) -> Result<(), ModelError> {
        check_len(scores, self.n_items)?;
        if user as usize >= self.n_users {
            return Err(ModelError::IdOutOfRange {
                kind: "user",
                id: u64::from(user),
                len: self.n_users,
            });
        }
        self.score_from_neighbours(self.neighbours.row(user as usize), scores);
        Ok(())
    }

    /// The `k` training users most similar to a history (similarities computed on the fly).
    pub fn similar_users(&self, history: &[(u32, f32)]) -> Vec<(u32, f32)> {
        let mut h: Vec<(u32, f32)> = history
            .iter()
            .copied()
            .filter(|&(i, w)| (i as usize) < self.n_items && w.is_finite() && w > 0.0)
            .collect();
        h.sort_unstable_by_key(|e| e.0);
        let mut merged: Vec<(u32, f32)> = Vec::with_capacity(h.len());
        for (i, w) in h {
            match merged.last_mut() {
                Some(last) if last.0 == i => last.1 += w,
                _ => merged.push((i, w)),
            }
        }
        let cols: Vec<u32> = merged.iter().map(|e| e.0).collect();
        let vals: Vec<f32> = merged.iter().map(|e| e.1).collect();
        let wv = self
            .params
            .weighting
            .weigh_row(&cols, &vals, &self.item_idf, self.avg_len);
        let norm = wv.iter().map(|x| x * x).sum::<f32>().sqrt();
        let mut acc = vec![0f32; self.n_users];
        for (&i, &a) in cols.iter().zip(&wv) {
            let (us, bs) = self.item_users_w.row(i as usize);
            for (&v, &b) in us.iter().zip(bs) {
                acc[v as usize] += a * b;
            }
        }
        let mut cands: Vec<(u32, f32)> = acc
            .iter()
            .enumerate()
            .filter(|(_, &d)| d > 0.0)
            .map(|(v, &d)| {
                let den = norm * self.user_norms[v] + self.params.shrink;
                (v as u32, if den > 0.0 { d / den } else { 0.0 })
            })
            .filter(|e| e.1 > 0.0 && e.1.is_finite())
            .collect();
        select_top_k(&mut cands, self.params.k);
        cands
    }

    /// Scores every item for a user not seen in training, from a history of `(item, weight)`.
    /// Costs one pass over the users sharing an item with the history.
    ///
    /// # Errors
    /// [`ModelError::LengthMismatch`] when `scores.len() != n_items`.
    pub fn score_history(
        &self,
        history: &[(u32, f32)],
        scores: &mut [f32],
    ) -> Result<(), ModelError> {
        check_len(scores, self.n_items)?;
        let nb = self.similar_users(history);
        self.score_from_neighbours(&nb, scores);
        Ok(())
    }

    /// As [`UserCf::score_user`], for the items the neighbours have only (every other item
    /// scores 0). `None` for an unknown user.
    pub fn score_user_sparse(&self, user: u32) -> Option<super::SparseScores> {
        ((user as usize) < self.n_users)
            .then(|| self.sparse_from_neighbours(self.neighbours.row(user as usize)))
    }

    /// As [`UserCf::score_history`], for the items the neighbours have only.
    pub fn score_history_sparse(&self, history: &[(u32, f32)]) -> super::SparseScores {
        let nb = self.similar_users(history);
        self.sparse_from_neighbours(&nb)
    }

    fn sparse_from_neighbours(&self, nb: &[(u32, f32)]) -> super::SparseScores {
        let mut out = super::SparseScores::new(self.n_items);
        for &(v, s) in nb {
            let (items, ws) = self.user_items.row(v as usize);
            for (&j, &w) in items.iter().zip(ws) {
                if (j as usize) < self.n_items {
                    out.add(j, s * w);
                }
            }
        }
        out
    }

    fn score_from_neighbours(&self, nb: &[(u32, f32)], scores: &mut [f32]) {
        scores.iter_mut().for_each(|s| *s = 0.0);
        for &(v, s) in nb {
            let (items, ws) = self.user_items.row(v as usize);
            for (&j, &w) in items.iter().zip(ws) {
                if let Some(x) = scores.get_mut(j as usize) {
                    *x += s * w;
                }
            }
        }
    }
}
