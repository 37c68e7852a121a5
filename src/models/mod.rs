//! Recommendation models: pure math over a weighted user-item interaction matrix.
//!
//! Every model here is fitted from an [`Interactions`] value (dense, 0-based user and item ids)
//! and scores **all** items into a caller-owned `&mut [f32]` of length `n_items`, so that full
//! ranking (evaluation) and the query path share one fast code path. Models never do I/O; they
//! derive `serde::Serialize`/`Deserialize` so the engine can persist them.
//!
//! | model | file | scores from |
//! |---|---|---|
//! | [`ItemCf`] | `itemcf.rs` | a live history (no retraining needed for new events) |
//! | [`UserCf`] | `usercf.rs` | a training user, or a live history |
//! | [`ItemKnnRating`], [`UserKnnRating`] | `rating.rs` | explicit ratings (rating prediction) |
//! | [`Mf`] | `mf.rs` | implicit ALS factors, or a folded-in history |
//! | [`Popularity`] | `popularity.rs` | nothing (global or per category) |
//! | [`KgRelatedness`] | `kg.rs` | a live history, through shared entities |
//!
//! Conventions shared by all models:
//! - a *history* is `&[(item, weight)]`; duplicate items are allowed and add up; item ids the
//!   model has never seen (newer than the fit) are skipped, so the engine can score from the live
//!   log without retraining;
//! - a score buffer must have exactly `n_items` entries, otherwise
//!   [`ModelError::LengthMismatch`] is returned;
//! - scores are finite; excluded items (e.g. outside a category) are `f32::NEG_INFINITY`.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;

pub mod content;
pub mod itemcf;
pub mod kg;
pub(crate) mod linalg;
pub mod mf;
pub mod mlp;
pub mod popularity;
pub mod rating;
pub mod sasrec;
pub mod usercf;

#[cfg(test)]
mod tests;

pub use content::{ContentInputs, ContentKnn, ContentParams};
pub use itemcf::{ItemCf, ItemCfParams, ItemSimilarity};
pub use kg::{KgParams, KgRelatedness};
pub use mf::{Mf, MfParams};
pub use popularity::{NoiseInfo, Popularity, PopularityParams, ScoreNoise};
pub use rating::{ItemKnnRating, RatingParams, UserKnnRating};
pub use sasrec::{
    SeqConfig, SeqEnd, SeqEntry, SeqEpoch, SeqFitReport, SeqHooks, SeqModel, SeqRace,
};
pub use usercf::{UserCf, UserCfParams};

/// One cleaned, weighted interaction: dense ids, 0-based.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Interaction {
    /// Dense user id, `< Interactions::n_users`.
    pub user: u32,
    /// Dense item id, `< Interactions::n_items`.
    pub item: u32,
    /// Implicit-feedback strength (e.g. view 1, cart 3, purchase 5); duplicates add up.
    pub weight: f32,
    /// Explicit rating, if the event carried one (used by the rating predictors only).
    pub rating: Option<f32>,
    /// Event time (any monotone unit, e.g. unix seconds).
    pub ts: i64,
}

/// The factor position decay gives an item of a history that `later` other items were
/// touched after: `decay^later` (the latest item weighs 1). A `decay` outside (0, 1) is no
/// decay. Training's evaluation ([`Interactions::history_csr`]) and the query path's live
/// history use this one rule.
pub fn position_weight(decay: f32, later: usize) -> f32 {
    if decay > 0.0 && decay < 1.0 {
        decay.powi(later.min(i32::MAX as usize) as i32)
    } else {
        1.0
    }
}

/// The training matrix every model fits on.
#[derive(Clone, Debug, Default)]
pub struct Interactions {
    /// Number of users; every `Interaction::user` is below it.
    pub n_users: usize,
    /// Number of items; every `Interaction::item` is below it.
    pub n_items: usize,
    /// The interactions, in any order.
    pub rows: Vec<Interaction>,
}

impl Interactions {
    /// Number of interaction rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when there are no interaction rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Checks that every id is in range and every weight, rating and the shape are sane.
    ///
    /// # Errors
    /// [`ModelError::IdOutOfRange`] for an id past `n_users`/`n_items`,
    /// [`ModelError::NonFinite`] for a NaN or infinite weight or rating, and
    /// [`ModelError::InvalidParam`] when `n_users` or `n_items` exceeds `u32::MAX`.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.n_users > u32::MAX as usize || self.n_items > u32::MAX as usize {
            return Err(ModelError::InvalidParam {
                name: "n_users/n_items",
                reason: "must fit in u32".into(),
            });
        }
        for r in &self.rows {
            if r.user as usize >= self.n_users {
                return Err(ModelError::IdOutOfRange {
                    kind: "user",
                    id: u64::from(r.user),
                    len: self.n_users,
                });
            }
            if r.item as usize >= self.n_items {
                return Err(ModelError::IdOutOfRange {
                    kind: "item",
                    id: u64::from(r.item),
                    len: self.n_items,
                });
            }
            if !r.weight.is_finite() {
                return Err(ModelError::NonFinite { what: "weight" });
            }
            if let Some(x) = r.rating {
                if !x.is_finite() {
                    return Err(ModelError::NonFinite { what: "rating" });
                }
            }
        }
        Ok(())
    }

    /// User -> items view (rows are users), duplicate `(user, item)` weights summed,
    /// column indices sorted.
    ///
    /// # Errors
    /// As [`Interactions::validate`].
    pub fn user_item_csr(&self) -> Result<Csr, ModelError> {
        self.validate()?;
        Ok(Csr::from_triplets(
            self.n_users,
            self.n_items,
            self.rows.iter().map(|r| (r.user, r.item, r.weight)),
        ))
    }

    /// Each user's history as the query path weighs it under position decay `decay` (see
    /// [`position_weight`]): the user x item view with every item's summed weight times
    /// `decay` to the power of the number of the user's items last touched after it. A
    /// `decay` of 1 (or any value outside (0, 1)) gives [`Interactions::user_item_csr`].
    ///
    /// # Errors
    /// As [`Interactions::validate`].
    pub fn history_csr(&self, decay: f32) -> Result<Csr, ModelError> {
        if !(decay > 0.0 && decay < 1.0) {
            return self.user_item_csr();
        }
        self.validate()?;
        let mut by_user: Vec<Vec<(u32, f32, i64)>> = vec![Vec::new(); self.n_users];
        for r in &self.rows {
            if let Some(list) = by_user.get_mut(r.user as usize) {
                list.push((r.item, r.weight, r.ts));
            }
        }
        let mut triplets = Vec::with_capacity(self.rows.len());
        for (u, mut list) in by_user.into_iter().enumerate() {
            // One entry per item: summed weight, latest time.
            list.sort_unstable_by_key(|x| x.0);
            let mut items: Vec<(u32, f32, i64)> = Vec::with_capacity(list.len());
            for (item, w, ts) in list {
                match items.last_mut() {
                    Some(last) if last.0 == item => {
                        last.1 += w;
                        last.2 = last.2.max(ts);
                    }
                    _ => items.push((item, w, ts)),
                }
            }
            let mut times: Vec<i64> = items.iter().map(|x| x.2).collect();
            times.sort_unstable();
            for (item, w, ts) in items {
                let later = times.len() - times.partition_point(|t| *t <= ts);
                triplets.push((u as u32, item, w * position_weight(decay, later)));
            }
        }
        Ok(Csr::from_triplets(
            self.n_users,
            self.n_items,
            triplets.into_iter(),
        ))
    }

    /// Each user's items in the order they were last touched, oldest first (ties by item):
    /// the order position decay counts in ([`Interactions::history_csr`]), for the models
    /// that read a history's order. Rows of a user id past `n_users` are skipped.
    pub fn sequences(&self) -> Vec<Vec<u32>> {
        let mut by_user: Vec<Vec<(i64, u32)>> = vec![Vec::new(); self.n_users];
        for r in &self.rows {
            if let Some(list) = by_user.get_mut(r.user as usize) {
                list.push((r.ts, r.item));
            }
        }
        by_user
            .into_iter()
            .map(|mut list| {
                // Latest touch per item, then in time order.
                list.sort_unstable_by_key(|&(ts, item)| (item, std::cmp::Reverse(ts)));
                list.dedup_by_key(|e| e.1);
                list.sort_unstable();
                list.into_iter().map(|(_, item)| item).collect()
            })
            .collect()
    }

    /// Item -> users view (rows are items), duplicate weights summed, column indices sorted.
    ///
    /// # Errors
    /// As [`Interactions::validate`].
    pub fn item_user_csr(&self) -> Result<Csr, ModelError> {
        self.validate()?;
        Ok(Csr::from_triplets(
            self.n_items,
            self.n_users,
            self.rows.iter().map(|r| (r.item, r.user, r.weight)),
        ))
    }

    /// Concatenates several interaction sets (e.g. train + validation, to exclude both when
    /// ranking for the test split); the shape is the largest of the parts.
    pub fn concat(parts: &[&Interactions]) -> Interactions {
        let mut out = Interactions::default();
        for p in parts {
            out.n_users = out.n_users.max(p.n_users);
            out.n_items = out.n_items.max(p.n_items);
            out.rows.extend_from_slice(&p.rows);
        }
        out
    }
}

/// Errors of model fitting and scoring.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ModelError {
    /// A hyper-parameter or argument is outside its valid range.
    InvalidParam {
        /// The parameter's name.
        name: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// A user, item, entity or category id is not below the known count.
    IdOutOfRange {
        /// What kind of id (`"user"`, `"item"`, ...).
        kind: &'static str,
        /// The offending id.
        id: u64,
        /// The number of known ids of that kind.
        len: usize,
    },
    /// A buffer or side input has the wrong length.
    LengthMismatch {
        /// Which buffer.
        what: &'static str,
        /// The length required.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// A weight, rating or factor is NaN or infinite.
    NonFinite {
        /// Which value.
        what: &'static str,
    },
    /// The input holds nothing the model can learn from.
    Empty(&'static str),
    /// A numerical routine failed (e.g. a matrix was not positive definite).
    Numerical(String),
    /// The caller cancelled a long-running fit.
    Cancelled,
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelError::InvalidParam { name, reason } => {
                write!(f, "invalid parameter {name}: {reason}")
            }
            ModelError::IdOutOfRange { kind, id, len } => {
                write!(f, "{kind} id {id} out of range (have {len})")
            }
            ModelError::LengthMismatch {
                what,
                expected,
                got,
            } => write!(f, "{what}: expected length {expected}, got {got}"),
            ModelError::NonFinite { what } => write!(f, "non-finite {what}"),
            ModelError::Empty(what) => write!(f, "nothing to fit: {what}"),
            ModelError::Numerical(why) => write!(f, "numerical failure: {why}"),
            ModelError::Cancelled => write!(f, "cancelled"),
        }
    }
}

impl std::error::Error for ModelError {}

/// Compressed sparse rows: row `r` holds columns `indices[indptr[r]..indptr[r + 1]]`
/// (sorted, unique) with the matching `values`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Csr {
    /// Number of rows.
    pub n_rows: usize,
    /// Number of columns.
    pub n_cols: usize,
    /// Row start offsets, `n_rows + 1` entries.
    pub indptr: Vec<usize>,
    /// Column ids, sorted within each row.
    pub indices: Vec<u32>,
    /// Values, parallel to `indices`.
    pub values: Vec<f32>,
}

impl Csr {
    /// Builds a CSR matrix from `(row, col, value)` triplets, summing duplicates.
    /// Triplets whose row or column is out of range are dropped (callers validate first).
    pub fn from_triplets(
        n_rows: usize,
        n_cols: usize,
        triplets: impl Iterator<Item = (u32, u32, f32)> + Clone,
    ) -> Csr {
        let mut counts = vec![0usize; n_rows + 1];
        for (r, c, _) in triplets.clone() {
            if (r as usize) < n_rows && (c as usize) < n_cols {
                counts[r as usize + 1] += 1;
            }
        }
        for i in 0..n_rows {
            counts[i + 1] += counts[i];
        }
        let total = counts[n_rows];
        let mut fill = counts.clone();
        let mut pairs: Vec<(u32, f32)> = vec![(0, 0.0); total];
        for (r, c, v) in triplets {
            if (r as usize) < n_rows && (c as usize) < n_cols {
                let slot = &mut fill[r as usize];
                pairs[*slot] = (c, v);
                *slot += 1;
            }
        }
        let mut indptr = Vec::with_capacity(n_rows + 1);
        let mut indices = Vec::with_capacity(total);
        let mut values = Vec::with_capacity(total);
        indptr.push(0);
        for r in 0..n_rows {
            let row = &mut pairs[counts[r]..counts[r + 1]];
            row.sort_unstable_by_key(|p| p.0);
            let mut last: Option<u32> = None;
            for &(c, v) in row.iter() {
                if last == Some(c) {
                    if let Some(x) = values.last_mut() {
                        *x += v;
                    }
                } else {
                    indices.push(c);
                    values.push(v);
                    last = Some(c);
                }
            }
            indptr.push(indices.len());
        }
        Csr {
            n_rows,
            n_cols,
            indptr,
            indices,
            values,
        }
    }

    /// Columns and values of row `r`; empty for an out-of-range row.
    pub fn row(&self, r: usize) -> (&[u32], &[f32]) {
        if r >= self.n_rows {
            return (&[], &[]);
        }
        let (a, b) = (self.indptr[r], self.indptr[r + 1]);
        (&self.indices[a..b], &self.values[a..b])
    }

    /// Row `r` as `(column, value)` pairs (empty when out of range): a user's history.
    pub fn row_pairs(&self, r: usize) -> Vec<(u32, f32)> {
        let (cols, vals) = self.row(r);
        cols.iter().copied().zip(vals.iter().copied()).collect()
    }

    /// Number of stored entries in row `r` (0 when out of range).
    pub fn row_len(&self, r: usize) -> usize {
        if r >= self.n_rows {
            0
        } else {
            self.indptr[r + 1] - self.indptr[r]
        }
    }

    /// Number of stored entries.
    pub fn nnz(&self) -> usize {
        self.indices.len()
    }

    /// The transposed matrix (columns become rows), indices sorted.
    pub fn transpose(&self) -> Csr {
        let mut counts = vec![0usize; self.n_cols + 1];
        for &c in &self.indices {
            counts[c as usize + 1] += 1;
        }
        for i in 0..self.n_cols {
            counts[i + 1] += counts[i];
        }
        let mut fill = counts.clone();
        let mut indices = vec![0u32; self.nnz()];
        let mut values = vec![0f32; self.nnz()];
        for r in 0..self.n_rows {
            let (cols, vals) = self.row(r);
            for (&c, &v) in cols.iter().zip(vals) {
                let slot = &mut fill[c as usize];
                indices[*slot] = r as u32;
                values[*slot] = v;
                *slot += 1;
            }
        }
        Csr {
            n_rows: self.n_cols,
            n_cols: self.n_rows,
            indptr: counts,
            indices,
            values,
        }
    }
}

/// Column re-weighting applied to the vectors compared by a neighbourhood model (for item-CF the
/// vectors are items over users, so this down-weights heavy users; for user-CF it down-weights
/// popular items).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Weighting {
    /// Raw summed weights.
    None,
    /// Multiply by the BM25 inverse document frequency of the column,
    /// `ln(1 + (N - df + 0.5) / (df + 0.5))` with `N` rows.
    Idf,
    /// BM25: saturate each weight with `k1`, normalise by row length with `b`, times the IDF.
    Bm25 {
        /// Term-frequency saturation (larger = closer to raw weights).
        k1: f32,
        /// Row-length normalisation strength in `[0, 1]`.
        b: f32,
    },
}

impl Weighting {
    /// Checks the parameters.
    ///
    /// # Errors
    /// [`ModelError::InvalidParam`] for a negative or non-finite `k1`, or `b` outside `[0, 1]`.
    pub fn validate(&self) -> Result<(), ModelError> {
        if let Weighting::Bm25 { k1, b } = *self {
            if !(k1.is_finite() && k1 >= 0.0) {
                return Err(ModelError::InvalidParam {
                    name: "bm25.k1",
                    reason: "must be finite and >= 0".into(),
                });
            }
            if !(0.0..=1.0).contains(&b) {
                return Err(ModelError::InvalidParam {
                    name: "bm25.b",
                    reason: "must be in [0, 1]".into(),
                });
            }
        }
        Ok(())
    }

    /// Per-column IDF for a matrix whose rows are the compared vectors.
    pub(crate) fn column_idf(m: &Csr) -> Vec<f32> {
        let mut df = vec![0u32; m.n_cols];
        for &c in &m.indices {
            df[c as usize] += 1;
        }
        let n = m.n_rows as f32;
        df.iter()
            .map(|&d| {
                let d = d as f32;
                (1.0 + (n - d + 0.5) / (d + 0.5)).ln().max(0.0)
            })
            .collect()
    }

    /// Average row sum (the BM25 average document length), at least `f32::MIN_POSITIVE`.
    pub(crate) fn avg_row_len(m: &Csr) -> f32 {
        if m.n_rows == 0 {
            return 1.0;
        }
        (m.values.iter().sum::<f32>() / m.n_rows as f32).max(f32::MIN_POSITIVE)
    }

    /// Weighs one row (`cols`, `vals`) given the column IDF and average row length of the
    /// matrix it belongs to (or is compared with).
    pub(crate) fn weigh_row(
        &self,
        cols: &[u32],
        vals: &[f32],
        idf: &[f32],
        avg_len: f32,
    ) -> Vec<f32> {
        let idf_of = |c: u32| idf.get(c as usize).copied().unwrap_or(0.0);
        match *self {
            Weighting::None => vals.to_vec(),
            Weighting::Idf => cols
                .iter()
                .zip(vals)
                .map(|(&c, &w)| w * idf_of(c))
                .collect(),
            Weighting::Bm25 { k1, b } => {
                let len: f32 = vals.iter().sum();
                let norm = (1.0 - b) + b * len / avg_len;
                cols.iter()
                    .zip(vals)
                    .map(|(&c, &w)| {
                        let denom = k1 * norm + w;
                        if denom > 0.0 {
                            w * (k1 + 1.0) / denom * idf_of(c)
                        } else {
                            0.0
                        }
                    })
                    .collect()
            }
        }
    }

    /// Returns a copy of `m` (rows = compared vectors) with weighted values.
    pub(crate) fn apply(&self, m: &Csr) -> Csr {
        let idf = Self::column_idf(m);
        let avg = Self::avg_row_len(m);
        let mut out = m.clone();
        for r in 0..m.n_rows {
            let (c, v) = m.row(r);
            let w = self.weigh_row(c, v, &idf, avg);
            out.values[m.indptr[r]..m.indptr[r + 1]].copy_from_slice(&w);
        }
        out
    }
}

/// A top-K neighbour list per row (item or user), best first, stored flat for compact
/// serialisation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Neighbours {
    indptr: Vec<usize>,
    entries: Vec<(u32, f32)>,
}

impl Neighbours {
    /// Packs per-row lists (each already sorted best first).
    pub(crate) fn from_rows(rows: Vec<Vec<(u32, f32)>>) -> Neighbours {
        let mut indptr = Vec::with_capacity(rows.len() + 1);
        indptr.push(0);
        let total: usize = rows.iter().map(Vec::len).sum();
        let mut entries = Vec::with_capacity(total);
        for r in rows {
            entries.extend_from_slice(&r);
            indptr.push(entries.len());
        }
        Neighbours { indptr, entries }
    }

    /// Number of rows.
    pub fn n_rows(&self) -> usize {
        self.indptr.len().saturating_sub(1)
    }

    /// Total number of stored `(neighbour, score)` pairs.
    pub fn n_entries(&self) -> usize {
        self.entries.len()
    }

    /// Neighbours of row `r`, best first; empty when out of range.
    pub fn row(&self, r: usize) -> &[(u32, f32)] {
        if r + 1 >= self.indptr.len() {
            return &[];
        }
        &self.entries[self.indptr[r]..self.indptr[r + 1]]
    }

    /// The stored score of `b` in row `a`, if `b` is one of `a`'s neighbours.
    pub fn get(&self, a: usize, b: u32) -> Option<f32> {
        self.row(a).iter().find(|e| e.0 == b).map(|e| e.1)
    }

    /// As [`Neighbours::accumulate`], for the touched items only: the score of every `j`
    /// some history row reaches, summed in the same order (so each score equals the dense
    /// one bit for bit). `j >= n_items` is skipped.
    pub(crate) fn accumulate_sparse(&self, history: &[(u32, f32)], n_items: usize) -> SparseScores {
        let mut out = SparseScores::new(n_items);
        for &(i, w) in history {
            if !w.is_finite() {
                continue;
            }
            for &(j, s) in self.row(i as usize) {
                if (j as usize) < n_items {
                    out.add(j, w * s);
                }
            }
        }
        out
    }

    /// `scores[j] = sum over (i, w) in history of w * score(i -> j)`; unknown rows are skipped.
    pub(crate) fn accumulate(&self, history: &[(u32, f32)], scores: &mut [f32]) {
        scores.iter_mut().for_each(|s| *s = 0.0);
        for &(i, w) in history {
            if !w.is_finite() {
                continue;
            }
            for &(j, s) in self.row(i as usize) {
                if let Some(x) = scores.get_mut(j as usize) {
                    *x += w * s;
                }
            }
        }
    }

    /// The history row that contributes most to `candidate`, with its contribution
    /// `w * score(i -> candidate)` summed over duplicates of `i`.
    pub(crate) fn best_contributor(
        &self,
        candidate: u32,
        history: &[(u32, f32)],
    ) -> Option<(u32, f32)> {
        let mut per: Vec<(u32, f32)> = Vec::new();
        for &(i, w) in history {
            if !w.is_finite() {
                continue;
            }
            if let Some(s) = self.get(i as usize, candidate) {
                match per.iter_mut().find(|p| p.0 == i) {
                    Some(p) => p.1 += w * s,
                    None => per.push((i, w * s)),
                }
            }
        }
        per.into_iter()
            .filter(|p| p.1 > 0.0)
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
    }
}

/// Ranking order: higher score first, then lower id (deterministic ties).
pub fn rank_order(a: &(u32, f32), b: &(u32, f32)) -> Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// Keeps the `k` best `(id, score)` pairs of `cands` (by [`rank_order`]), sorted best first.
pub fn select_top_k(cands: &mut Vec<(u32, f32)>, k: usize) {
    if k == 0 {
        cands.clear();
        return;
    }
    if cands.len() > k {
        cands.select_nth_unstable_by(k - 1, rank_order);
        cands.truncate(k);
    }
    cands.sort_unstable_by(rank_order);
}

/// The `k` best items of a full score vector, best first; NaN and `-inf` scores never appear.
pub fn top_k(scores: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut cands: Vec<(u32, f32)> = scores
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.is_nan() && **s > f32::NEG_INFINITY)
        .map(|(i, &s)| (i as u32, s))
        .collect();
    select_top_k(&mut cands, k);
    cands
}

/// Checks that a score buffer has one slot per item.
pub(crate) fn check_len(scores: &[f32], n_items: usize) -> Result<(), ModelError> {
    if scores.len() != n_items {
        return Err(ModelError::LengthMismatch {
            what: "scores",
            expected: n_items,
            got: scores.len(),
        });
    }
    Ok(())
}

/// Checks that a float hyper-parameter is finite and at least `min`.
pub(crate) fn check_param(name: &'static str, x: f32, min: f32) -> Result<(), ModelError> {
    if !x.is_finite() || x < min {
        return Err(ModelError::InvalidParam {
            name,
            reason: format!("must be finite and >= {min}, got {x}"),
        });
    }
    Ok(())
}

/// Scores of the items a sparse model reaches (the others score 0): what a query needs when
/// a catalog has a million items and a history reaches a few thousand.
///
/// The scores sit in a dense array by item, borrowed from a pool of this thread's and
/// handed back on drop with only the reached entries cleared: an add is one array update,
/// where a hash map (the previous layout) hashed, probed and grew; a user-CF history
/// reaches tens of thousands of (item, score) pairs. A pooled array costs 4 bytes per
/// catalog item per thread that scored.
pub struct SparseScores {
    /// By item: the score; 0 where unreached.
    dense: Vec<f32>,
    /// By item, one bit each: reached.
    seen: Vec<u64>,
    /// The reached items, in the order first reached.
    reached: Vec<u32>,
}

/// Dense arrays kept per thread for [`SparseScores`] (at most this many).
const SPARSE_POOL: usize = 4;

thread_local! {
    static SPARSE_ARRAYS: std::cell::RefCell<Vec<(Vec<f32>, Vec<u64>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

impl SparseScores {
    /// Empty scores over items `0..n_items` (adds past the end are ignored).
    pub fn new(n_items: usize) -> SparseScores {
        let (mut dense, mut seen) = SPARSE_ARRAYS
            .try_with(|p| p.borrow_mut().pop())
            .ok()
            .flatten()
            .unwrap_or_default();
        // A pooled array is all zeros: `drop` clears what it reached.
        dense.resize(n_items, 0.0);
        seen.resize(n_items.div_ceil(64), 0);
        SparseScores {
            dense,
            seen,
            reached: Vec::new(),
        }
    }

    /// Adds `x` to item `j`'s score.
    #[inline]
    pub fn add(&mut self, j: u32, x: f32) {
        let j = j as usize;
        let (Some(s), Some(bits)) = (self.dense.get_mut(j), self.seen.get_mut(j / 64)) else {
            return;
        };
        let bit = 1u64 << (j % 64);
        if *bits & bit == 0 {
            *bits |= bit;
            self.reached.push(j as u32);
        }
        *s += x;
    }

    /// Item `j`'s score (0 when unreached).
    #[inline]
    pub fn get(&self, j: u32) -> f32 {
        self.dense.get(j as usize).copied().unwrap_or(0.0)
    }

    /// Number of reached items.
    pub fn len(&self) -> usize {
        self.reached.len()
    }

    /// Whether no item was reached.
    pub fn is_empty(&self) -> bool {
        self.reached.is_empty()
    }

    /// `(item, score)` of every reached item, in the order first reached.
    pub fn into_entries(self) -> Vec<(u32, f32)> {
        self.reached
            .iter()
            .map(|&j| (j, self.dense.get(j as usize).copied().unwrap_or(0.0)))
            .collect()
    }
}

impl std::fmt::Debug for SparseScores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SparseScores")
            .field("items", &self.dense.len())
            .field("reached", &self.reached.len())
            .finish()
    }
}

impl Clone for SparseScores {
    fn clone(&self) -> SparseScores {
        let mut c = SparseScores::new(self.dense.len());
        for (j, x) in self.reached.iter().map(|&j| (j, self.get(j))) {
            c.add(j, x);
        }
        c
    }
}

impl Drop for SparseScores {
    fn drop(&mut self) {
        for &j in &self.reached {
            let j = j as usize;
            if let Some(s) = self.dense.get_mut(j) {
                *s = 0.0;
            }
            if let Some(bits) = self.seen.get_mut(j / 64) {
                *bits = 0;
            }
        }
        if self.dense.is_empty() {
            return;
        }
        let arrays = (
            std::mem::take(&mut self.dense),
            std::mem::take(&mut self.seen),
        );
        // A thread that is exiting has no pool: the arrays are freed instead.
        let _ = SPARSE_ARRAYS.try_with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < SPARSE_POOL {
                p.push(arrays);
            }
        });
    }
}

/// SplitMix64: a tiny, fast, deterministic PRNG (Steele, Lea and Flood 2014) for splits,
/// initialisation and generated test data; the crate's only random number generator (the
/// evaluation splits, the re-ranker, the factor models and the demo shop all draw from it).
/// Not cryptographic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[0, n)` (Lemire's multiply-shift; `0` when `n == 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, n)` from the high 32 bits only (`(hi32 * n) >> 32`; `n` below 2^32):
    /// the generated shop's draw, which rounds differently from [`below`](Self::below) on
    /// rare draws, kept so that the demo data stays the same.
    pub fn below32(&mut self, n: usize) -> usize {
        ((self.next_u64() >> 32).wrapping_mul(n as u64) >> 32) as usize
    }

    /// `true` with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }

    /// Standard normal by Box-Muller with `u1 = 1 - U` in `(0, 1]` (the re-ranker's
    /// initialisation).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Standard normal by Box-Muller with `u1 = max(U, f64::MIN_POSITIVE)` (the generated
    /// shop's draws): the distribution of [`normal`](Self::normal) from other values, kept
    /// so that the demo data stays the same.
    pub fn gauss(&mut self) -> f64 {
        let u = self.next_f64().max(f64::MIN_POSITIVE);
        let v = self.next_f64();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            xs.swap(i, j);
        }
    }
}

/// Sparse `left x right` products row by row, keeping the `k` best positive entries per row.
///
/// For row `i` of `left` (features of entity `i`), `acc[j] = sum_f left[i, f] * right[f, j]`,
/// then `finish(i, j, acc[j])` turns the raw product into the stored score. Rows run in parallel
/// (rayon); each thread owns one dense accumulator of `right.n_cols` slots.
pub(crate) fn knn_rows<F>(
    left: &Csr,
    right: &Csr,
    k: usize,
    exclude_self: bool,
    finish: F,
) -> Neighbours
where
    F: Fn(usize, u32, f32) -> f32 + Sync,
{
    use rayon::prelude::*;
    let n_out = right.n_cols;
    let rows: Vec<Vec<(u32, f32)>> = (0..left.n_rows)
        .into_par_iter()
        .map_init(
            || (vec![0f32; n_out], vec![u32::MAX; n_out], Vec::<u32>::new()),
            |(acc, stamp, touched), i| {
                touched.clear();
                let mark = i as u32;
                let (feats, avals) = left.row(i);
                for (&f, &a) in feats.iter().zip(avals) {
                    if a == 0.0 {
                        continue;
                    }
                    let (js, bvals) = right.row(f as usize);
                    for (&j, &b) in js.iter().zip(bvals) {
                        let ju = j as usize;
                        if stamp[ju] != mark {
                            stamp[ju] = mark;
                            acc[ju] = 0.0;
                            touched.push(j);
                        }
                        acc[ju] += a * b;
                    }
                }
                let mut cands: Vec<(u32, f32)> = touched
                    .iter()
                    .filter(|&&j| !(exclude_self && j as usize == i))
                    .map(|&j| (j, finish(i, j, acc[j as usize])))
                    .filter(|&(_, s)| s.is_finite() && s > 0.0)
                    .collect();
                select_top_k(&mut cands, k);
                cands.shrink_to_fit();
                cands
            },
        )
        .collect();
    Neighbours::from_rows(rows)
}

/// L2 norm of every row.
pub(crate) fn row_norms(m: &Csr) -> Vec<f32> {
    (0..m.n_rows)
        .map(|r| m.row(r).1.iter().map(|v| v * v).sum::<f32>().sqrt())
        .collect()
}
