//! Offline evaluation: data splits and metrics, with RecBole's definitions so that numbers are
//! comparable with published ones.
//!
//! - Splits: per-user random ratio split (RecBole `RS` with `group_by: user`, e.g. 80/10/10),
//!   per-user leave-last-one-out by time, and a global temporal cut. All are deterministic; the
//!   random one uses the crate's own [`SplitMix64`] generator.
//! - Ranking metrics by **full ranking**: for every user with at least one test item, all items
//!   are scored, items the user has in the exclusion sets (train; for the test split also
//!   validation) are removed, and the top `k` are compared with the user's test items. Recall,
//!   Precision, NDCG (binary relevance, ideal DCG over `min(|test items|, k)`), MRR (first hit
//!   within `k`) and Hit are averaged over users; item coverage is the share of all items that
//!   appear in at least one user's top `k`, the Gini index of how often each item is shown and
//!   the share of shown slots in the long tail (beyond the top 20% items by interactions)
//!   measure exposure beyond accuracy. Ties are pessimistic: a held-out item scored the same
//!   as other candidates ranks below all of them ([`select_top_k_pessimistic`]), so no model gains
//!   from ties and no order of item ids leaks into a figure. The per-user figures come from
//!   the crate's ranking metrics (`metrics`).
//! - Test-only (the models' quality tests): rating metrics (RMSE, MAE), a global random row
//!   split, and `evaluate_ranking` with one exclusion set.

use crate::metrics::binary_at_k;
use crate::models::{Csr, Interactions, ModelError, SplitMix64};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// How to split the log for offline evaluation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SplitKind {
    /// Per user, a random 80/10/10 split (RecBole's default), seeded.
    RecBole {
        /// Random seed.
        seed: u64,
    },
    /// Per user by time: the last interaction to test, the one before to validation.
    LeaveOneOut,
    /// One global time cut: the last fractions go to validation and test.
    Temporal {
        /// Fraction for validation.
        valid: f64,
        /// Fraction for test.
        test: f64,
    },
}

/// A train/validation/test split of one [`Interactions`]; all three keep the original shape.
#[derive(Clone, Debug, Default)]
pub struct Split {
    /// What the models fit on.
    pub train: Interactions,
    /// For tuning hyper-parameters.
    pub valid: Interactions,
    /// For the final report only.
    pub test: Interactions,
}

impl Split {
    /// The training and validation parts together: everything before the test part.
    pub fn before_test(&self) -> Interactions {
        let mut out = self.train.clone();
        out.rows.extend_from_slice(&self.valid.rows);
        out
    }
}

fn empty_like(data: &Interactions) -> Interactions {
    Interactions {
        n_users: data.n_users,
        n_items: data.n_items,
        rows: Vec::new(),
    }
}

/// Row indices grouped by user, in original order within each user.
fn rows_by_user(data: &Interactions) -> Vec<Vec<usize>> {
    let mut by_user: Vec<Vec<usize>> = vec![Vec::new(); data.n_users];
    for (k, r) in data.rows.iter().enumerate() {
        if let Some(list) = by_user.get_mut(r.user as usize) {
            list.push(k);
        }
    }
    by_user
}

/// Group sizes of RecBole's `_calcu_split_ids`: floor of each ratio times the total for the
/// later parts, the rest to the first part, and groups too small to give a later part at least
/// one row still give it one while the first part keeps more than one.
fn recbole_counts(total: usize, ratios: &[f64]) -> Vec<usize> {
    let sum: f64 = ratios.iter().sum();
    let ratios: Vec<f64> = ratios.iter().map(|r| r / sum).collect();
    let tot = total as f64;
    let mut cnt: Vec<usize> = ratios.iter().map(|r| (r * tot) as usize).collect();
    let later: usize = cnt.iter().skip(1).sum();
    cnt[0] = total.saturating_sub(later);
    let n = ratios.len();
    for i in 1..n {
        if cnt[0] <= 1 {
            break;
        }
        let x = ratios[n - i] * tot;
        if 0.0 < x && x < 1.0 {
            cnt[n - i] += 1;
            cnt[0] -= 1;
        }
    }
    cnt
}

fn check_ratio(name: &'static str, x: f64) -> Result<(), ModelError> {
    if !(x.is_finite() && (0.0..1.0).contains(&x)) {
        return Err(ModelError::InvalidParam {
            name,
            reason: format!("must be in [0, 1), got {x}"),
        });
    }
    Ok(())
}

/// RecBole-style random split per user: each user's interactions are shuffled (seeded) and cut
/// by `ratios = [train, valid, test]` (normalised to sum 1), with RecBole's rounding (floor for
/// valid and test; a small user still gives one row to test, then to valid, while keeping more
/// than one in train).
///
/// # Errors
/// [`ModelError::InvalidParam`] when a ratio is negative or not finite, or they sum to 0;
/// the errors of [`Interactions::validate`].
pub fn split_random_by_user(
    data: &Interactions,
    ratios: [f64; 3],
    seed: u64,
) -> Result<Split, ModelError> {
    data.validate()?;
    if ratios.iter().any(|r| !(r.is_finite() && *r >= 0.0)) || ratios.iter().sum::<f64>() <= 0.0 {
        return Err(ModelError::InvalidParam {
            name: "ratios",
            reason: "must be finite, >= 0 and not all 0".into(),
        });
    }
    let mut rng = SplitMix64::new(seed);
    let mut out = Split {
        train: empty_like(data),
        valid: empty_like(data),
        test: empty_like(data),
    };
    for mut rows in rows_by_user(data) {
        rng.shuffle(&mut rows);
        let cnt = recbole_counts(rows.len(), &ratios);
        for (pos, &k) in rows.iter().enumerate() {
            let part = if pos < cnt[0] {
                &mut out.train
            } else if pos < cnt[0] + cnt[1] {
                &mut out.valid
            } else {
                &mut out.test
            };
            part.rows.push(data.rows[k]);
        }
    }
    Ok(out)
}

/// Leave-last-one-out by time, per user: the latest interaction (ties: later row) goes to test,
/// the second latest to validation, the rest to train. A user with two interactions gives one to
/// test and none to validation; a user with one keeps it in train.
///
/// # Errors
/// The errors of [`Interactions::validate`].
pub fn split_leave_one_out(data: &Interactions) -> Result<Split, ModelError> {
    data.validate()?;
    let mut out = Split {
        train: empty_like(data),
        valid: empty_like(data),
        test: empty_like(data),
    };
    for mut rows in rows_by_user(data) {
        rows.sort_by_key(|&k| (data.rows[k].ts, k));
        let n = rows.len();
        for (pos, &k) in rows.iter().enumerate() {
            let part = if n >= 2 && pos == n - 1 {
                &mut out.test
            } else if n >= 3 && pos == n - 2 {
                &mut out.valid
            } else {
                &mut out.train
            };
            part.rows.push(data.rows[k]);
        }
    }
    Ok(out)
}

/// Global temporal cut: all interactions sorted by time (ties: row order); the last
/// `test_frac` go to test, the `valid_frac` before them to validation, the rest to train
/// (counts rounded to the nearest row).
///
/// # Errors
/// [`ModelError::InvalidParam`] when a fraction is outside `[0, 1)` or they sum to 1 or more;
/// the errors of [`Interactions::validate`].
pub fn split_temporal(
    data: &Interactions,
    valid_frac: f64,
    test_frac: f64,
) -> Result<Split, ModelError> {
    data.validate()?;
    check_ratio("valid_frac", valid_frac)?;
    check_ratio("test_frac", test_frac)?;
    if valid_frac + test_frac >= 1.0 {
        return Err(ModelError::InvalidParam {
            name: "valid_frac + test_frac",
            reason: "must be < 1".into(),
        });
    }
    let n = data.rows.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&k| (data.rows[k].ts, k));
    let n_test = ((n as f64) * test_frac).round() as usize;
    let n_valid = ((n as f64) * valid_frac).round() as usize;
    let n_train = n.saturating_sub(n_test + n_valid);
    let mut out = Split {
        train: empty_like(data),
        valid: empty_like(data),
        test: empty_like(data),
    };
    for (pos, &k) in order.iter().enumerate() {
        let part = if pos < n_train {
            &mut out.train
        } else if pos < n_train + n_valid {
            &mut out.valid
        } else {
            &mut out.test
        };
        part.rows.push(data.rows[k]);
    }
    Ok(out)
}

/// Global random split of rows (e.g. 80/20 of ratings for RMSE): returns `(train, test)` with
/// `round(n · test_frac)` rows in test.
///
/// # Errors
/// [`ModelError::InvalidParam`] when `test_frac` is outside `[0, 1)`; the errors of
/// [`Interactions::validate`].
#[cfg(test)]
pub fn split_random_rows(
    data: &Interactions,
    test_frac: f64,
    seed: u64,
) -> Result<(Interactions, Interactions), ModelError> {
    data.validate()?;
    check_ratio("test_frac", test_frac)?;
    let mut order: Vec<usize> = (0..data.rows.len()).collect();
    SplitMix64::new(seed).shuffle(&mut order);
    let n_test = ((order.len() as f64) * test_frac).round() as usize;
    let (mut train, mut test) = (empty_like(data), empty_like(data));
    for (pos, &k) in order.iter().enumerate() {
        if pos < n_test {
            test.rows.push(data.rows[k]);
        } else {
            train.rows.push(data.rows[k]);
        }
    }
    Ok((train, test))
}

/// The rows of at most `max` users of `set`, drawn at random with a fixed seed.
pub fn sample_users(set: &Interactions, max: usize, seed: u64) -> Interactions {
    let mut users: Vec<u32> = set.rows.iter().map(|r| r.user).collect();
    users.sort_unstable();
    users.dedup();
    if users.len() > max {
        SplitMix64::new(seed).shuffle(&mut users);
        users.truncate(max);
    }
    let keep: std::collections::HashSet<u32> = users.into_iter().collect();
    Interactions {
        n_users: set.n_users,
        n_items: set.n_items,
        rows: set
            .rows
            .iter()
            .filter(|r| keep.contains(&r.user))
            .copied()
            .collect(),
    }
}

/// Ranking metrics at one cut-off `k`, averaged over evaluated users.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsAtK {
    /// The cut-off.
    pub k: usize,
    /// Mean of `hits / |test items|`.
    pub recall: f64,
    /// Mean of `hits / k`.
    pub precision: f64,
    /// Mean NDCG with binary relevance; ideal DCG over `min(|test items|, k)` positions.
    pub ndcg: f64,
    /// Mean reciprocal rank of the first hit within `k` (0 when none).
    pub mrr: f64,
    /// Share of users with at least one hit within `k`.
    pub hit: f64,
    /// Share of all items recommended to at least one user within `k`.
    pub coverage: f64,
    /// Gini index of how often each item is recommended within `k` (0 even, 1 one item).
    pub gini: f64,
    /// Share of the recommended slots within `k` that go to the long tail: items outside
    /// the top 20% by interactions in the exclusion sets (the data the models saw).
    pub long_tail: f64,
}

/// The result of [`evaluate_ranking`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Users evaluated (those with at least one test item).
    pub n_users: usize,
    /// One entry per requested cut-off, in the order given.
    pub at: Vec<MetricsAtK>,
}

impl Metrics {
    /// The metrics at cut-off `k`, if it was requested.
    pub fn at_k(&self, k: usize) -> Option<&MetricsAtK> {
        self.at.iter().find(|m| m.k == k)
    }
}

/// Full-ranking evaluation: excludes the user's `train` items, ranks all other items by the
/// scorer's output and compares the top `k` with the user's `test` items, for every `k` in `ks`.
/// Users run in parallel (rayon); the scorer gets a zeroed buffer of `n_items` slots. NaN
/// scores count as `-inf` (never recommended). To evaluate on a test split with a validation
/// split, exclude both: see [`evaluate_ranking_excluding`].
#[cfg(test)]
pub fn evaluate_ranking<F>(
    train: &Interactions,
    test: &Interactions,
    ks: &[usize],
    scorer: F,
) -> Metrics
where
    F: Fn(u32, &mut [f32]) + Sync,
{
    evaluate_ranking_excluding(&[train], test, ks, scorer)
}

/// As [`evaluate_ranking`], excluding the items of every set in `exclude` (e.g. train and
/// validation when scoring the test split, as RecBole does).
pub fn evaluate_ranking_excluding<F>(
    exclude: &[&Interactions],
    test: &Interactions,
    ks: &[usize],
    scorer: F,
) -> Metrics
where
    F: Fn(u32, &mut [f32]) + Sync,
{
    evaluate_ranking_paged(exclude, test, ks, None, scorer)
}

/// One user's metrics at each cut-off and ranked lists (see `evaluate_ranking_paged`).
type UserRanking = (Vec<[f64; 5]>, Vec<Vec<u32>>);

/// How each user's page is cut from the ranking under exposure controls: the best `pool`
/// items (pessimistic ties) go through [`crate::exposure::page`], with each item's
/// popularity its interactions in the excluded sets and its long-tail side the split of the
/// long-tail share (the top 20% of items by those interactions are the head).
pub(crate) struct Paging<'a> {
    /// The controls.
    pub exposure: crate::exposure::Exposure,
    /// Each item's brand key (0: none).
    pub brands: &'a [u64],
    /// Items ranked before the page is cut (at least the largest cut-off).
    pub pool: usize,
}

/// As [`evaluate_ranking_excluding`], with each user's list cut by `paging` when given.
pub(crate) fn evaluate_ranking_paged<F>(
    exclude: &[&Interactions],
    test: &Interactions,
    ks: &[usize],
    paging: Option<&Paging<'_>>,
    scorer: F,
) -> Metrics
where
    F: Fn(u32, &mut [f32]) + Sync,
{
    let n_items = exclude
        .iter()
        .map(|e| e.n_items)
        .chain(std::iter::once(test.n_items))
        .max()
        .unwrap_or(0);
    let n_users = exclude
        .iter()
        .map(|e| e.n_users)
        .chain(std::iter::once(test.n_users))
        .max()
        .unwrap_or(0);
    let triplets = |d: &Interactions| -> Vec<(u32, u32, f32)> {
        d.rows
            .iter()
            .filter(|r| (r.user as usize) < n_users && (r.item as usize) < n_items)
            .map(|r| (r.user, r.item, 1.0))
            .collect()
    };
    let mut ex_trip = Vec::new();
    for e in exclude {
        ex_trip.extend(triplets(e));
    }
    let ex = Csr::from_triplets(n_users, n_items, ex_trip.into_iter());
    let te = Csr::from_triplets(n_users, n_items, triplets(test).into_iter());
    let users: Vec<u32> = (0..n_users)
        .filter(|&u| te.row_len(u) > 0)
        .map(|u| u as u32)
        .collect();
    let max_k = ks.iter().copied().max().unwrap_or(0);
    let counts = item_counts(&ex, n_items);
    let head = head_items(&counts);
    // Per user: the metrics at each cut-off, and the ranked list of each cut-off (one list
    // for all of them unless pages are cut: a page of k is cut for k slots).
    let per_user: Vec<UserRanking> = users
        .par_iter()
        .map_init(
            || (vec![0f32; n_items], Vec::<(u32, f32)>::new()),
            |(scores, cands), &u| {
                scores.iter_mut().for_each(|s| *s = 0.0);
                scorer(u, scores);
                for &j in ex.row(u as usize).0 {
                    scores[j as usize] = f32::NEG_INFINITY;
                }
                cands.clear();
                cands.extend(
                    scores
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| !s.is_nan() && **s > f32::NEG_INFINITY)
                        .map(|(j, &s)| (j as u32, s)),
                );
                let relevant = te.row(u as usize).0;
                let lists: Vec<Vec<u32>> = match paging {
                    None => {
                        select_top_k_pessimistic(cands, relevant, max_k);
                        vec![cands.iter().map(|c| c.0).collect()]
                    }
                    Some(p) => {
                        select_top_k_pessimistic(cands, relevant, p.pool.max(max_k));
                        let page_cands: Vec<crate::exposure::Candidate> = cands
                            .iter()
                            .map(|&(j, score)| crate::exposure::Candidate {
                                score,
                                popularity: counts.get(j as usize).copied().unwrap_or(0) as f32,
                                long_tail: !head.get(j as usize).copied().unwrap_or(false),
                                brand: p.brands.get(j as usize).copied().unwrap_or(0),
                            })
                            .collect();
                        ks.iter()
                            .map(|&k| {
                                let (page, _) =
                                    crate::exposure::page(&page_cands, k, None, &p.exposure);
                                page.into_iter().map(|i| cands[i].0).collect()
                            })
                            .collect()
                    }
                };
                let list = |ki: usize| {
                    lists
                        .get(ki)
                        .or(lists.first())
                        .map_or(&[][..], Vec::as_slice)
                };
                let m = ks
                    .iter()
                    .enumerate()
                    .map(|(ki, &k)| {
                        let (r, p, n, mrr, h) = binary_at_k(list(ki), relevant, k);
                        [r, p, n, mrr, h]
                    })
                    .collect();
                (m, lists)
            },
        )
        .collect();
    let n_eval = per_user.len();
    let at = ks
        .iter()
        .enumerate()
        .map(|(ki, &k)| {
            let mut sums = [0f64; 5];
            let mut exposure = vec![0u64; n_items];
            let (mut slots, mut tail) = (0u64, 0u64);
            for (m, lists) in &per_user {
                for (s, v) in sums.iter_mut().zip(m[ki]) {
                    *s += v;
                }
                let Some(ranked) = lists.get(ki).or(lists.first()) else {
                    continue;
                };
                for &j in ranked.iter().take(k) {
                    exposure[j as usize] += 1;
                    slots += 1;
                    tail += u64::from(!head[j as usize]);
                }
            }
            let d = (n_eval as f64).max(1.0);
            MetricsAtK {
                k,
                recall: sums[0] / d,
                precision: sums[1] / d,
                ndcg: sums[2] / d,
                mrr: sums[3] / d,
                hit: sums[4] / d,
                coverage: if n_items == 0 {
                    0.0
                } else {
                    exposure.iter().filter(|&&c| c > 0).count() as f64 / n_items as f64
                },
                gini: gini(&mut exposure),
                long_tail: if slots == 0 {
                    0.0
                } else {
                    tail as f64 / slots as f64
                },
            }
        })
        .collect();
    Metrics {
        n_users: n_eval,
        at,
    }
}

/// Each item's interactions in `seen` (users who took it).
fn item_counts(seen: &Csr, n_items: usize) -> Vec<u64> {
    let mut counts = vec![0u64; n_items];
    for u in 0..seen.n_rows {
        for &j in seen.row(u).0 {
            if let Some(c) = counts.get_mut(j as usize) {
                *c += 1;
            }
        }
    }
    counts
}

/// The popular head: the top 20% of items by `counts` (rounded up; ties by item id), as a
/// mask. Everything else is the long tail.
fn head_items(counts: &[u64]) -> Vec<bool> {
    let n_items = counts.len();
    let mut order: Vec<usize> = (0..n_items).collect();
    order.sort_by_key(|&j| (std::cmp::Reverse(counts[j]), j));
    let mut head = vec![false; n_items];
    for &j in order.iter().take(n_items.div_ceil(5)) {
        head[j] = true;
    }
    head
}

/// Gini index of `exposure` over all items: 0 when every item is recommended equally often,
/// towards 1 when a few items take every slot (0 for no exposure at all). Sorts in place.
pub fn gini(exposure: &mut [u64]) -> f64 {
    exposure.sort_unstable();
    let n = exposure.len() as f64;
    let total: f64 = exposure.iter().map(|&x| x as f64).sum();
    if total == 0.0 || exposure.len() < 2 {
        return 0.0;
    }
    let weighted: f64 = exposure
        .iter()
        .enumerate()
        .map(|(i, &x)| (2.0 * (i as f64 + 1.0) - n - 1.0) * x as f64)
        .sum();
    weighted / (n * total)
}

/// Keeps the `k` best `(item, score)` pairs, best first, with **pessimistic ties**: at equal
/// scores every item of `relevant` (sorted) is ranked below every other item, so a target tied
/// with other candidates counts as ranked below all of them (the published next-item protocol:
/// rank = 1 + #(score above) + #(others at the same score)). Ties among items of the same kind
/// are broken by item id, which then only decides which non-relevant items fill a list (item
/// coverage), never a metric.
pub fn select_top_k_pessimistic(cands: &mut Vec<(u32, f32)>, relevant: &[u32], k: usize) {
    if k == 0 {
        cands.clear();
        return;
    }
    let order = |a: &(u32, f32), b: &(u32, f32)| {
        let rel = |i: u32| relevant.binary_search(&i).is_ok();
        b.1.total_cmp(&a.1)
            .then_with(|| rel(a.0).cmp(&rel(b.0)))
            .then(a.0.cmp(&b.0))
    };
    if cands.len() > k {
        cands.select_nth_unstable_by(k - 1, order);
        cands.truncate(k);
    }
    cands.sort_unstable_by(order);
}

#[cfg(test)]
fn check_pairs(pred: &[f32], actual: &[f32]) -> Result<(), ModelError> {
    if pred.len() != actual.len() {
        return Err(ModelError::LengthMismatch {
            what: "predictions",
            expected: actual.len(),
            got: pred.len(),
        });
    }
    if pred.is_empty() {
        return Err(ModelError::Empty("no predictions"));
    }
    if pred.iter().chain(actual).any(|x| !x.is_finite()) {
        return Err(ModelError::NonFinite {
            what: "prediction or rating",
        });
    }
    Ok(())
}

/// Root mean squared error.
///
/// # Errors
/// [`ModelError::LengthMismatch`] for different lengths, [`ModelError::Empty`] for no pairs,
/// [`ModelError::NonFinite`] for a NaN or infinite value.
#[cfg(test)]
pub fn rmse(pred: &[f32], actual: &[f32]) -> Result<f64, ModelError> {
    check_pairs(pred, actual)?;
    let s: f64 = pred
        .iter()
        .zip(actual)
        .map(|(&p, &a)| (f64::from(p) - f64::from(a)).powi(2))
        .sum();
    Ok((s / pred.len() as f64).sqrt())
}

/// Mean absolute error.
///
/// # Errors
/// As [`rmse`].
#[cfg(test)]
pub fn mae(pred: &[f32], actual: &[f32]) -> Result<f64, ModelError> {
    check_pairs(pred, actual)?;
    let s: f64 = pred
        .iter()
        .zip(actual)
        .map(|(&p, &a)| (f64::from(p) - f64::from(a)).abs())
        .sum();
    Ok(s / pred.len() as f64)
}

/// `(user, item)` pairs and true ratings of the rows of `data` that carry a rating, for
/// [`rmse`] / [`mae`] with a predictor's `predict_many`.
#[cfg(test)]
pub fn rating_pairs(data: &Interactions) -> (Vec<(u32, u32)>, Vec<f32>) {
    data.rows
        .iter()
        .filter_map(|r: &crate::models::Interaction| r.rating.map(|x| ((r.user, r.item), x)))
        .unzip()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Interaction;

    fn row(user: u32, item: u32, ts: i64) -> Interaction {
        Interaction {
            user,
            item,
            weight: 1.0,
            rating: None,
            ts,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn ties_are_pessimistic_hand_computed() {
        // 1 user, 8 items; item 0 in train. Scores: items 1 and 2 at 0.9; the target, item 5,
        // tied at 0.5 with items 3, 4 and 6; item 7 at 0.1. Pessimistic rank of the target =
        // 1 + #(above: 1, 2) + #(others tied: 3, 4, 6) = 6, whatever the item ids.
        let train = Interactions {
            n_users: 1,
            n_items: 8,
            rows: vec![row(0, 0, 0)],
        };
        let test = Interactions {
            n_users: 1,
            n_items: 8,
            rows: vec![row(0, 5, 1)],
        };
        let scores = [0.99, 0.9, 0.9, 0.5, 0.5, 0.5, 0.5, 0.1];
        let m = evaluate_ranking(&train, &test, &[5, 6, 10], |_, s| {
            s.copy_from_slice(&scores)
        });
        let at = |k| m.at_k(k).copied().unwrap_or_default();
        // Rank 6 is outside the top 5 (an optimistic or id-order tie break would put it at 3).
        assert!(
            close(at(5).hit, 0.0) && close(at(5).ndcg, 0.0),
            "{:?}",
            at(5)
        );
        assert!(close(at(6).hit, 1.0));
        assert!(close(at(6).ndcg, 1.0 / 7f64.log2()), "{}", at(6).ndcg);
        assert!(close(at(6).mrr, 1.0 / 6.0));
        assert!(close(at(10).ndcg, 1.0 / 7f64.log2()));
        // The same with the target given the lowest id of its tie group (item 3): still 6.
        let test3 = Interactions {
            n_users: 1,
            n_items: 8,
            rows: vec![row(0, 3, 1)],
        };
        let m3 = evaluate_ranking(&train, &test3, &[6], |_, s| s.copy_from_slice(&scores));
        let a = m3.at_k(6).copied().unwrap_or_default();
        assert!(close(a.mrr, 1.0 / 6.0), "{a:?}");
        // A target alone at its score is ranked by it: item 7 at 0.1 is rank 7.
        let test7 = Interactions {
            n_users: 1,
            n_items: 8,
            rows: vec![row(0, 7, 1)],
        };
        let m7 = evaluate_ranking(&train, &test7, &[10], |_, s| s.copy_from_slice(&scores));
        assert!(close(m7.at_k(10).map_or(0.0, |a| a.mrr), 1.0 / 7.0));
    }

    #[test]
    fn gini_and_long_tail_hand_computed() {
        assert!(close(gini(&mut [5, 5, 5, 5]), 0.0));
        // One of four items takes every slot: (2·4 - 4 - 1)·8 / (4·8) = 0.75.
        assert!(close(gini(&mut [0, 8, 0, 0]), 0.75));
        // Sorted 1, 3: (-1·1 + 1·3) / (2·4) = 0.25.
        assert!(close(gini(&mut [3, 1]), 0.25));
        assert!(close(gini(&mut []), 0.0) && close(gini(&mut [0, 0]), 0.0));

        // 10 items; train makes item 0 and 1 the head (top 20%). Two users, top-2 lists
        // {0, 5} and {0, 6}: 2 of 4 slots in the tail; exposure 2, 1, 1 on 10 items.
        let train = Interactions {
            n_users: 3,
            n_items: 10,
            rows: vec![row(2, 0, 0), row(2, 1, 0), row(1, 1, 0), row(0, 1, 0)],
        };
        let test = Interactions {
            n_users: 3,
            n_items: 10,
            rows: vec![row(0, 5, 1), row(1, 6, 1)],
        };
        let m = evaluate_ranking(&train, &test, &[2], |u, s| {
            s[0] = 3.0;
            s[5 + u as usize] = 2.0;
        });
        let a = m.at_k(2).copied().unwrap_or_default();
        assert!(close(a.long_tail, 0.5), "{a:?}");
        assert!(close(a.coverage, 0.3));
        assert!(
            close(a.gini, gini(&mut [2, 1, 1, 0, 0, 0, 0, 0, 0, 0])),
            "{a:?}"
        );
    }

    #[test]
    fn select_top_k_pessimistic_puts_relevant_items_last_among_equals() {
        let mut c = vec![(4, 1.0), (1, 1.0), (9, 2.0), (2, 1.0), (7, 0.5)];
        select_top_k_pessimistic(&mut c, &[1, 2], 4);
        assert_eq!(c, vec![(9, 2.0), (4, 1.0), (1, 1.0), (2, 1.0)]);
        let mut c = vec![(4, 1.0), (1, 1.0)];
        select_top_k_pessimistic(&mut c, &[1], 1);
        assert_eq!(c, vec![(4, 1.0)]);
        select_top_k_pessimistic(&mut c, &[], 0);
        assert!(c.is_empty());
    }

    #[test]
    fn evaluate_ranking_excludes_train_and_averages() {
        // 2 users, 5 items. Scores: item id descending (4 best).
        let train = Interactions {
            n_users: 2,
            n_items: 5,
            rows: vec![row(0, 4, 0), row(1, 0, 0)],
        };
        let test = Interactions {
            n_users: 2,
            n_items: 5,
            rows: vec![row(0, 3, 1), row(1, 1, 1)],
        };
        let m = evaluate_ranking(&train, &test, &[1, 2], |_, s| {
            for (j, x) in s.iter_mut().enumerate() {
                *x = j as f32;
            }
        });
        assert_eq!(m.n_users, 2);
        // User 0: item 4 excluded, ranking 3, 2, 1, 0 -> hit at rank 1.
        // User 1: ranking 4, 3, 2, 1 -> item 1 at rank 4: no hit at 1 or 2.
        let a1 = m.at_k(1).copied().unwrap_or_default();
        assert!(close(a1.recall, 0.5) && close(a1.precision, 0.5) && close(a1.ndcg, 0.5));
        assert!(close(a1.mrr, 0.5) && close(a1.hit, 0.5));
        // Top-1 lists: {3}, {4} -> coverage 2/5.
        assert!(close(a1.coverage, 0.4));
        let a2 = m.at_k(2).copied().unwrap_or_default();
        assert!(close(a2.precision, 0.25) && close(a2.recall, 0.5));
        // Top-2 lists: {3, 2}, {4, 3} -> coverage 3/5.
        assert!(close(a2.coverage, 0.6));

        // Excluding a validation set too removes item 3 for user 0.
        let valid = Interactions {
            n_users: 2,
            n_items: 5,
            rows: vec![row(0, 3, 2)],
        };
        let m = evaluate_ranking_excluding(&[&train, &valid], &test, &[1], |_, s| {
            for (j, x) in s.iter_mut().enumerate() {
                *x = j as f32;
            }
        });
        let a1 = m.at_k(1).copied().unwrap_or_default();
        assert!(close(a1.hit, 0.0));
    }

    #[test]
    fn rmse_mae_hand_computed() {
        let pred = [1.0, 2.0, 3.0];
        let actual = [1.0, 3.0, 5.0];
        assert!(close(rmse(&pred, &actual).unwrap(), (5.0f64 / 3.0).sqrt()));
        assert!(close(mae(&pred, &actual).unwrap(), 1.0));
        assert!(rmse(&pred, &actual[..2]).is_err());
        assert!(mae(&[], &[]).is_err());
    }

    #[test]
    fn recbole_counts_match_reference() {
        assert_eq!(recbole_counts(20, &[0.8, 0.1, 0.1]), vec![16, 2, 2]);
        assert_eq!(recbole_counts(5, &[0.8, 0.1, 0.1]), vec![3, 1, 1]);
        assert_eq!(recbole_counts(2, &[0.8, 0.1, 0.1]), vec![1, 0, 1]);
        assert_eq!(recbole_counts(1, &[0.8, 0.1, 0.1]), vec![1, 0, 0]);
        assert_eq!(recbole_counts(29, &[0.8, 0.1, 0.1]), vec![25, 2, 2]);
    }

    #[test]
    fn splits_partition_and_are_deterministic() {
        let mut rows = Vec::new();
        for u in 0..7u32 {
            for i in 0..(3 + u * 4) {
                rows.push(row(u, i, i64::from(i) * 10 + i64::from(u)));
            }
        }
        let data = Interactions {
            n_users: 7,
            n_items: 40,
            rows,
        };
        let a = split_random_by_user(&data, [0.8, 0.1, 0.1], 7).unwrap();
        let b = split_random_by_user(&data, [0.8, 0.1, 0.1], 7).unwrap();
        assert_eq!(a.train.rows, b.train.rows);
        assert_eq!(a.test.rows, b.test.rows);
        assert_eq!(
            a.train.len() + a.valid.len() + a.test.len(),
            data.len(),
            "partition"
        );
        // User 6 has 27 rows: 23 / 2 / 2.
        let count = |d: &Interactions, u: u32| d.rows.iter().filter(|r| r.user == u).count();
        assert_eq!(
            (count(&a.train, 6), count(&a.valid, 6), count(&a.test, 6)),
            (23, 2, 2)
        );

        let l = split_leave_one_out(&data).unwrap();
        for u in 0..7u32 {
            let last = data.rows.iter().filter(|r| r.user == u).map(|r| r.ts).max();
            let t: Vec<i64> = l
                .test
                .rows
                .iter()
                .filter(|r| r.user == u)
                .map(|r| r.ts)
                .collect();
            assert_eq!(t.first().copied(), last);
        }
        assert_eq!(l.test.len(), 7);
        assert_eq!(l.valid.len(), 7);

        let t = split_temporal(&data, 0.1, 0.2).unwrap();
        let max_train = t.train.rows.iter().map(|r| r.ts).max().unwrap();
        let min_valid = t.valid.rows.iter().map(|r| r.ts).min().unwrap();
        let min_test = t.test.rows.iter().map(|r| r.ts).min().unwrap();
        assert!(max_train <= min_valid && min_valid <= min_test);
        assert_eq!(t.test.len(), (data.len() as f64 * 0.2).round() as usize);
        assert!(split_temporal(&data, 0.5, 0.5).is_err());
    }
}
