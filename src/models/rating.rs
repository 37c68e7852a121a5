//! Seed rating predictors: classic mean-centred neighbourhood models on explicit ratings.
//!
//! - [`ItemKnnRating`]: `r̂(u, i) = μ_i + Σ_j s(i, j) (r_uj − μ_j) / Σ_j s(i, j)` over the `k`
//!   items `j` rated by `u` that are most similar to `i` (positive similarities only);
//! - [`UserKnnRating`]: `r̂(u, i) = μ_u + Σ_v s(u, v) (r_vi − μ_v) / Σ_v s(u, v)` over the `k`
//!   users `v` who rated `i` that are most similar to `u`.
//!
//! Similarities are mean-centred cosines over the co-rated support (Pearson-style, centred on the
//! damped means), shrunk by support: `s · n / (n + shrink)`. They are computed on the fly by a
//! sorted merge of two sparse rating vectors, so fitting is only a pass over the ratings and the
//! model follows new ratings after a refit that costs seconds. Only rows with `rating: Some(_)`
//! are used; for duplicate `(user, item)` ratings the latest (by `ts`, then by position) wins.
//! Predictions fall back to the item mean, the user mean and the global mean, in that order of
//! availability, and are clamped to the observed rating range.

use super::{check_param, Csr, Interactions, ModelError};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Hyper-parameters shared by both rating predictors.
///
/// Defaults: `k = 40`, `shrink = 100`, `min_k = 1`, `mean_damping = 5` (a mean over `n` ratings
/// is pulled towards the global mean as if it had 5 extra global-mean ratings): the best sum of
/// both predictors' RMSE on a validation part of MovieLens-100K's training ratings
/// (`models/tests.rs`, `ml100k_tune_rating`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RatingParams {
    /// Neighbours used per prediction (>= 1).
    pub k: usize,
    /// Support shrinkage: a similarity over `n` co-ratings is multiplied by `n / (n + shrink)`.
    pub shrink: f32,
    /// Fewer usable neighbours than this falls back to the mean.
    pub min_k: usize,
    /// Damping of user and item means towards the global mean.
    pub mean_damping: f32,
}

impl Default for RatingParams {
    fn default() -> Self {
        RatingParams {
            k: 40,
            shrink: 100.0,
            min_k: 1,
            mean_damping: 5.0,
        }
    }
}

impl RatingParams {
    fn validate(&self) -> Result<(), ModelError> {
        if self.k == 0 {
            return Err(ModelError::InvalidParam {
                name: "k",
                reason: "must be >= 1".into(),
            });
        }
        check_param("shrink", self.shrink, 0.0)?;
        check_param("mean_damping", self.mean_damping, 0.0)
    }
}

/// Ratings and means shared by both predictors.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RatingBase {
    n_users: usize,
    n_items: usize,
    global_mean: f32,
    user_means: Vec<f32>,
    item_means: Vec<f32>,
    min_rating: f32,
    max_rating: f32,
    /// Raw ratings, user rows.
    by_user: Csr,
    /// Raw ratings, item rows.
    by_item: Csr,
}

impl RatingBase {
    fn build(data: &Interactions, damping: f32) -> Result<Self, ModelError> {
        data.validate()?;
        let mut rows: Vec<(u32, u32, i64, usize, f32)> = data
            .rows
            .iter()
            .enumerate()
            .filter_map(|(k, r)| r.rating.map(|x| (r.user, r.item, r.ts, k, x)))
            .collect();
        if rows.is_empty() {
            return Err(ModelError::Empty("no interaction carries a rating"));
        }
        rows.sort_unstable_by_key(|a| (a.0, a.1, a.2, a.3));
        let mut latest: Vec<(u32, u32, f32)> = Vec::with_capacity(rows.len());
        for (u, i, _, _, x) in rows {
            match latest.last_mut() {
                Some(last) if last.0 == u && last.1 == i => last.2 = x,
                _ => latest.push((u, i, x)),
            }
        }
        let n = latest.len() as f64;
        let global = (latest.iter().map(|t| f64::from(t.2)).sum::<f64>() / n) as f32;
        let (mut min_r, mut max_r) = (f32::INFINITY, f32::NEG_INFINITY);
        for t in &latest {
            min_r = min_r.min(t.2);
            max_r = max_r.max(t.2);
        }
        let by_user = Csr::from_triplets(data.n_users, data.n_items, latest.iter().copied());
        let by_item = by_user.transpose();
        let damped = |m: &Csr| -> Vec<f32> {
            (0..m.n_rows)
                .map(|r| {
                    let v = m.row(r).1;
                    let s: f32 = v.iter().sum();
                    (s + damping * global) / (v.len() as f32 + damping).max(f32::MIN_POSITIVE)
                })
                .map(|x| if x.is_finite() { x } else { global })
                .collect()
        };
        Ok(RatingBase {
            n_users: data.n_users,
            n_items: data.n_items,
            global_mean: global,
            user_means: damped(&by_user),
            item_means: damped(&by_item),
            min_rating: min_r,
            max_rating: max_r,
            by_user,
            by_item,
        })
    }

    fn clamp(&self, x: f32) -> f32 {
        if x.is_finite() {
            x.clamp(self.min_rating, self.max_rating)
        } else {
            self.global_mean
        }
    }

    /// Fallback when no neighbourhood estimate exists.
    fn fallback(&self, user: u32, item: u32) -> f32 {
        let item_known = (item as usize) < self.n_items && self.by_item.row_len(item as usize) > 0;
        let user_known = (user as usize) < self.n_users && self.by_user.row_len(user as usize) > 0;
        if item_known {
            self.item_means[item as usize]
        } else if user_known {
            self.user_means[user as usize]
        } else {
            self.global_mean
        }
    }
}

/// Centres each row of `m` on `means[row]`.
fn centre_rows(m: &Csr, means: &[f32]) -> Csr {
    let mut out = m.clone();
    for r in 0..m.n_rows {
        let mu = means.get(r).copied().unwrap_or(0.0);
        for v in &mut out.values[m.indptr[r]..m.indptr[r + 1]] {
            *v -= mu;
        }
    }
    out
}

/// Centred cosine over the common support of two sorted sparse vectors, shrunk by support.
fn support_cosine(a: (&[u32], &[f32]), b: (&[u32], &[f32]), shrink: f32) -> f32 {
    let (ai, av) = a;
    let (bi, bv) = b;
    let (mut x, mut y) = (0usize, 0usize);
    let (mut dot, mut sa, mut sb, mut n) = (0f64, 0f64, 0f64, 0u32);
    while x < ai.len() && y < bi.len() {
        match ai[x].cmp(&bi[y]) {
            std::cmp::Ordering::Less => x += 1,
            std::cmp::Ordering::Greater => y += 1,
            std::cmp::Ordering::Equal => {
                let (p, q) = (f64::from(av[x]), f64::from(bv[y]));
                dot += p * q;
                sa += p * p;
                sb += q * q;
                n += 1;
                x += 1;
                y += 1;
            }
        }
    }
    if n == 0 || sa <= 0.0 || sb <= 0.0 {
        return 0.0;
    }
    let n = f64::from(n);
    (dot / (sa * sb).sqrt() * n / (n + f64::from(shrink))) as f32
}

/// Weighted mean of deviations over the `k` most similar candidates with positive similarity;
/// `None` when fewer than `min_k` qualify.
fn neighbourhood_offset(mut cands: Vec<(f32, f32)>, p: &RatingParams) -> Option<f32> {
    cands.retain(|c| c.0 > 0.0 && c.0.is_finite());
    if cands.len() > p.k {
        cands.select_nth_unstable_by(p.k - 1, |a, b| b.0.total_cmp(&a.0));
        cands.truncate(p.k);
    }
    if cands.len() < p.min_k.max(1) {
        return None;
    }
    let (num, den) = cands
        .iter()
        .fold((0f32, 0f32), |(n, d), &(s, dev)| (n + s * dev, d + s));
    if den > 0.0 {
        Some(num / den)
    } else {
        None
    }
}

/// Dense per-thread accumulators of centred co-rating sums from one target row to every other
/// row, giving the same similarities as [`support_cosine`] (same summation order) for all
/// candidates at once.
struct SupportAcc {
    dot: Vec<f64>,
    sa: Vec<f64>,
    sb: Vec<f64>,
    n: Vec<u32>,
    stamp: Vec<usize>,
    generation: usize,
}

impl SupportAcc {
    fn new(len: usize) -> SupportAcc {
        SupportAcc {
            dot: vec![0.0; len],
            sa: vec![0.0; len],
            sb: vec![0.0; len],
            n: vec![0; len],
            stamp: vec![usize::MAX; len],
            generation: 0,
        }
    }

    /// `target` is a centred row over "support" ids; `cross` has one row per support id
    /// holding the centred values of every candidate.
    fn accumulate(&mut self, target: (&[u32], &[f32]), cross: &Csr) {
        self.generation += 1;
        let g = self.generation;
        for (&v, &p) in target.0.iter().zip(target.1) {
            let p = f64::from(p);
            let (cands, vals) = cross.row(v as usize);
            for (&j, &q) in cands.iter().zip(vals) {
                let j = j as usize;
                if j >= self.stamp.len() {
                    continue;
                }
                if self.stamp[j] != g {
                    self.stamp[j] = g;
                    self.dot[j] = 0.0;
                    self.sa[j] = 0.0;
                    self.sb[j] = 0.0;
                    self.n[j] = 0;
                }
                let q = f64::from(q);
                self.dot[j] += p * q;
                self.sa[j] += p * p;
                self.sb[j] += q * q;
                self.n[j] += 1;
            }
        }
    }

    fn sim(&self, j: u32, shrink: f32) -> f32 {
        let j = j as usize;
        if j >= self.stamp.len() || self.stamp[j] != self.generation {
            return 0.0;
        }
        let (sa, sb, n) = (self.sa[j], self.sb[j], self.n[j]);
        if n == 0 || sa <= 0.0 || sb <= 0.0 {
            return 0.0;
        }
        let n = f64::from(n);
        (self.dot[j] / (sa * sb).sqrt() * n / (n + f64::from(shrink))) as f32
    }
}

/// Runs `predict(key, pair index, sims)` for every pair, grouped by `key(pair)` so that one
/// [`SupportAcc`] pass serves a whole group; groups run in parallel.
fn grouped_predict<K, P>(pairs: &[(u32, u32)], acc_len: usize, key: K, predict: P) -> Vec<f32>
where
    K: Fn(&(u32, u32)) -> u32 + Sync,
    P: Fn(u32, &[usize], &mut SupportAcc, &mut Vec<(usize, f32)>) + Sync,
{
    let mut order: Vec<usize> = (0..pairs.len()).collect();
    order.sort_by_key(|&k| key(&pairs[k]));
    let mut groups: Vec<&[usize]> = Vec::new();
    let mut rest: &[usize] = &order;
    while let Some(&first) = rest.first() {
        let kf = key(&pairs[first]);
        let len = rest.iter().take_while(|&&k| key(&pairs[k]) == kf).count();
        let (g, r) = rest.split_at(len);
        groups.push(g);
        rest = r;
    }
    let results: Vec<Vec<(usize, f32)>> = groups
        .par_iter()
        .map_init(
            || SupportAcc::new(acc_len),
            |acc, g| {
                let mut out = Vec::with_capacity(g.len());
                if let Some(&first) = g.first() {
                    predict(key(&pairs[first]), g, acc, &mut out);
                }
                out
            },
        )
        .collect();
    let mut preds = vec![0f32; pairs.len()];
    for (k, v) in results.into_iter().flatten() {
        if let Some(slot) = preds.get_mut(k) {
            *slot = v;
        }
    }
    preds
}

/// Item-based mean-centred KNN rating predictor.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ItemKnnRating {
    params: RatingParams,
    base: RatingBase,
    /// Ratings centred on item means, item rows.
    item_centred: Csr,
}

impl ItemKnnRating {
    /// Fits on the rows of `data` that carry a rating.
    ///
    /// # Errors
    /// [`ModelError::Empty`] when no row has a rating, [`ModelError::InvalidParam`] for bad
    /// parameters, and the errors of [`Interactions::validate`].
    pub fn fit(data: &Interactions, params: &RatingParams) -> Result<Self, ModelError> {
        params.validate()?;
        let base = RatingBase::build(data, params.mean_damping)?;
        let item_centred = centre_rows(&base.by_item, &base.item_means);
        Ok(ItemKnnRating {
            params: *params,
            base,
            item_centred,
        })
    }

    /// The global mean rating of the training data.
    pub fn global_mean(&self) -> f32 {
        self.base.global_mean
    }

    /// The prediction given a similarity function from `item` to the user's other items.
    fn predict_with(&self, user: u32, item: u32, sim: impl Fn(u32) -> f32) -> f32 {
        let b = &self.base;
        if item as usize >= b.n_items || user as usize >= b.n_users {
            return b.clamp(b.fallback(user, item));
        }
        let (items, ratings) = b.by_user.row(user as usize);
        let cands: Vec<(f32, f32)> = items
            .iter()
            .zip(ratings)
            .filter(|(&j, _)| j != item)
            .map(|(&j, &r)| (sim(j), r - b.item_means[j as usize]))
            .collect();
        let mu = b.fallback(user, item);
        match neighbourhood_offset(cands, &self.params) {
            Some(off) if b.by_item.row_len(item as usize) > 0 => b.clamp(mu + off),
            _ => b.clamp(mu),
        }
    }

    /// Predicts the rating `user` would give `item` (always a finite value in the observed
    /// rating range; unknown users or items fall back to means).
    pub fn predict_rating(&self, user: u32, item: u32) -> f32 {
        let target = self.item_centred.row(item as usize);
        self.predict_with(user, item, |j| {
            support_cosine(
                target,
                self.item_centred.row(j as usize),
                self.params.shrink,
            )
        })
    }

    /// Predicts many `(user, item)` pairs (same values as [`ItemKnnRating::predict_rating`]),
    /// grouped by item so that each item's similarities are computed once; parallel.
    pub fn predict_many(&self, pairs: &[(u32, u32)]) -> Vec<f32> {
        let by_user_centred = self.item_centred.transpose();
        grouped_predict(
            pairs,
            self.base.n_items,
            |p| p.1,
            |item, group, acc, out| {
                acc.accumulate(self.item_centred.row(item as usize), &by_user_centred);
                for &k in group {
                    let (u, i) = pairs[k];
                    let shrink = self.params.shrink;
                    out.push((k, self.predict_with(u, i, |j| acc.sim(j, shrink))));
                }
            },
        )
    }
}

/// User-based mean-centred KNN rating predictor.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UserKnnRating {
    params: RatingParams,
    base: RatingBase,
    /// Ratings centred on user means, user rows.
    user_centred: Csr,
}

impl UserKnnRating {
    /// Fits on the rows of `data` that carry a rating.
    ///
    /// # Errors
    /// [`ModelError::Empty`] when no row has a rating, [`ModelError::InvalidParam`] for bad
    /// parameters, and the errors of [`Interactions::validate`].
    pub fn fit(data: &Interactions, params: &RatingParams) -> Result<Self, ModelError> {
        params.validate()?;
        let base = RatingBase::build(data, params.mean_damping)?;
        let user_centred = centre_rows(&base.by_user, &base.user_means);
        Ok(UserKnnRating {
            params: *params,
            base,
            user_centred,
        })
    }

    /// The global mean rating of the training data.
    pub fn global_mean(&self) -> f32 {
        self.base.global_mean
    }

    /// The prediction given a similarity function from `user` to the item's other raters.
    fn predict_with(&self, user: u32, item: u32, sim: impl Fn(u32) -> f32) -> f32 {
        let b = &self.base;
        let user_known = (user as usize) < b.n_users && b.by_user.row_len(user as usize) > 0;
        if item as usize >= b.n_items || !user_known {
            return b.clamp(b.fallback(user, item));
        }
        let (raters, ratings) = b.by_item.row(item as usize);
        let cands: Vec<(f32, f32)> = raters
            .iter()
            .zip(ratings)
            .filter(|(&v, _)| v != user)
            .map(|(&v, &r)| (sim(v), r - b.user_means[v as usize]))
            .collect();
        let mu = b.user_means[user as usize];
        match neighbourhood_offset(cands, &self.params) {
            Some(off) => b.clamp(mu + off),
            None => b.clamp(b.fallback(user, item)),
        }
    }

    /// Predicts the rating `user` would give `item` (always a finite value in the observed
    /// rating range; unknown users or items fall back to means).
    pub fn predict_rating(&self, user: u32, item: u32) -> f32 {
        let me = self.user_centred.row(user as usize);
        self.predict_with(user, item, |v| {
            support_cosine(me, self.user_centred.row(v as usize), self.params.shrink)
        })
    }

    /// Predicts many `(user, item)` pairs (same values as [`UserKnnRating::predict_rating`]),
    /// grouped by user so that each user's similarities are computed once; parallel.
    pub fn predict_many(&self, pairs: &[(u32, u32)]) -> Vec<f32> {
        let by_item_centred = self.user_centred.transpose();
        grouped_predict(
            pairs,
            self.base.n_users,
            |p| p.0,
            |user, group, acc, out| {
                acc.accumulate(self.user_centred.row(user as usize), &by_item_centred);
                for &k in group {
                    let (u, i) = pairs[k];
                    let shrink = self.params.shrink;
                    out.push((k, self.predict_with(u, i, |v| acc.sim(v, shrink))));
                }
            },
        )
    }
}
