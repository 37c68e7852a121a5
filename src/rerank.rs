//! Candidate generation from the trained models, per-candidate features, and the MLP
//! re-ranker: shared by the query path, training and offline evaluation so that features are
//! computed the same way everywhere.

use std::collections::HashMap;

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fusion::{ChannelNorm, ChannelWeights, Formula};
use crate::models::mlp::{Mlp, MlpConfig};
use crate::models::{Interaction, Interactions, ItemCf, KgRelatedness, Mf, Popularity, UserCf};
use crate::query::{Channel, Fusion};

/// The collaborative and popularity models of one generation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct BaseModels {
    pub item_cf: ItemCf,
    pub user_cf: UserCf,
    pub mf: Mf,
    pub popularity: Popularity,
    pub kg: KgRelatedness,
}

/// Candidates of one channel: `(item, raw score)`, best first.
pub(crate) type ChannelHits = Vec<(u32, f32)>;

/// Channels the models provide, in feature order.
pub(crate) const MODEL_CHANNELS: [Channel; 5] = [
    Channel::ItemCf,
    Channel::UserCf,
    Channel::Mf,
    Channel::Kg,
    Channel::Popularity,
];

/// Number of features per candidate: three per model channel, then eight about the item and
/// the shopper (see [`features`]).
pub(crate) const N_FEATURES: usize = 3 * MODEL_CHANNELS.len() + 8;

/// History items the knowledge-graph path count looks at (the user's strongest).
const KG_PATH_HISTORY: usize = 20;

/// What the features know about an item. Names are kept as 64-bit hashes (0: none), so
/// that building a candidate's row allocates nothing.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ItemInfo {
    /// Top-level category.
    pub category: u64,
    /// Brand, lower-case.
    pub brand: u64,
    /// Price, when known and positive.
    pub price: Option<f64>,
}

/// FNV-1a step.
#[inline]
fn fnv(h: u64, b: u8) -> u64 {
    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
}

const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// A name's key: FNV-1a over its UTF-8 bytes, lower-cased when `lower`; 0 for an empty name
/// (a non-empty one never maps to 0).
fn name_key(name: &str, lower: bool) -> u64 {
    if name.is_empty() {
        return 0;
    }
    let h = if !lower {
        name.bytes().fold(FNV_START, fnv)
    } else if name.is_ascii() {
        name.bytes()
            .fold(FNV_START, |h, b| fnv(h, b.to_ascii_lowercase()))
    } else {
        let mut buf = [0u8; 4];
        name.chars()
            .flat_map(char::to_lowercase)
            .fold(FNV_START, |h, c| {
                c.encode_utf8(&mut buf).bytes().fold(h, fnv)
            })
    };
    h.max(1)
}

impl ItemInfo {
    /// The features' view of a product.
    pub fn of(p: &crate::catalog::Product) -> Self {
        let top = p
            .category
            .split(['/', '>'])
            .map(str::trim)
            .find(|s| !s.is_empty())
            .unwrap_or("");
        ItemInfo {
            category: name_key(top, false),
            brand: name_key(&p.brand, true),
            price: p.price.filter(|x| x.is_finite() && *x > 0.0),
        }
    }
}

/// The top `n` items of a score vector that pass `ok`, best first. `ok` is called in score
/// order on as few items as possible (a filter check costs more than a comparison).
pub(crate) fn top_allowed(scores: &[f32], n: usize, ok: &dyn Fn(u32) -> bool) -> ChannelHits {
    let positive = |s: &f32| s.is_finite() && *s > 0.0;
    // Large score vectors: a threshold read off a strided sample keeps about eight times
    // what the first round needs, instead of collecting every positive score. Exact: every
    // item at or above the threshold is kept, so when `n` of them pass `ok` they are the
    // top `n` of the whole vector.
    let first = (n * 2).max(16);
    if scores.len() > 64 * first {
        let stride = (scores.len() / 4_096).max(1);
        let mut sample: Vec<f32> = scores
            .iter()
            .step_by(stride)
            .copied()
            .filter(positive)
            .collect();
        let keep = (8 * first) as f64 / scores.len() as f64;
        let k = ((sample.len() as f64 * keep).ceil() as usize).max(1);
        if k < sample.len() {
            sample.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
            let threshold = sample[k - 1];
            let head: Vec<(u32, f32)> = scores
                .iter()
                .enumerate()
                .filter(|(_, s)| positive(s) && **s >= threshold)
                .map(|(i, s)| (i as u32, *s))
                .collect();
            let out = top_allowed_of(head, n, ok);
            if out.len() >= n {
                return out;
            }
        }
    }
    let v: Vec<(u32, f32)> = scores
        .iter()
        .enumerate()
        .filter(|(_, s)| positive(s))
        .map(|(i, s)| (i as u32, *s))
        .collect();
    top_allowed_of(v, n, ok)
}

/// The top `n` of `v` that pass `ok`, best first, checking `ok` in score order.
fn top_allowed_of(mut v: Vec<(u32, f32)>, n: usize, ok: &dyn Fn(u32) -> bool) -> ChannelHits {
    let mut out = Vec::with_capacity(n);
    let mut want = (n * 2).max(16);
    let mut done = 0;
    while out.len() < n && done < v.len() {
        let rest = &mut v[done..];
        let take = want.min(rest.len());
        if take < rest.len() {
            rest.select_nth_unstable_by(take - 1, |a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        }
        let head = &mut rest[..take];
        head.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        for &(i, s) in head.iter() {
            if out.len() >= n {
                break;
            }
            if ok(i) {
                out.push((i, s));
            }
        }
        done += take;
        want *= 4;
    }
    out
}

/// The top `n` of a sparse model's scores that pass `ok` (positive, finite scores only, as
/// [`top_allowed`] takes them from a dense vector).
fn top_sparse(s: crate::models::SparseScores, n: usize, ok: &dyn Fn(u32) -> bool) -> ChannelHits {
    let v: Vec<(u32, f32)> = s
        .into_entries()
        .into_iter()
        .filter(|(_, x)| x.is_finite() && *x > 0.0)
        .collect();
    top_allowed_of(v, n, ok)
}

/// Runs every model channel for a user (known to the models, or described by `history`).
///
/// The neighbourhood channels (item-CF, user-CF, KG) score only the items the history or the
/// neighbours reach, and popularity is read in place: only MF without its factor index
/// touches every item.
pub(crate) fn model_channels(
    b: &BaseModels,
    n_users: usize,
    user: Option<u32>,
    history: &[(u32, f32)],
    n: usize,
    ok: &(dyn Fn(u32) -> bool + Sync),
    factor_index: Option<&crate::vector::VectorIndex>,
) -> Vec<(Channel, ChannelHits)> {
    let n_items = b.popularity.n_items();
    let mut out = Vec::with_capacity(MODEL_CHANNELS.len());
    let history: Vec<(u32, f32)> = history
        .iter()
        .copied()
        .filter(|(i, _)| (*i as usize) < n_items)
        .collect();
    let dense = |fill: &dyn Fn(&mut [f32]) -> bool| -> Option<ChannelHits> {
        let mut scores = vec![0f32; n_items];
        fill(&mut scores).then(|| top_allowed(&scores, n, ok))
    };
    let mut ann_hits: Option<ChannelHits> = None;
    if !history.is_empty() {
        out.push((
            Channel::ItemCf,
            top_sparse(b.item_cf.score_history_sparse(&history), n, ok),
        ));
    }
    match user.filter(|u| (*u as usize) < n_users) {
        Some(u) => {
            if let Some(s) = b.user_cf.score_user_sparse(u) {
                out.push((Channel::UserCf, top_sparse(s, n, ok)));
            }
            let ann = match (factor_index, b.mf.user_vector(u)) {
                // Large catalogs: user-to-item recall is a graph walk over the item factors.
                (Some(index), Some(uf))
                    if crate::catalog::validate_vector(uf, b.mf.dim()).is_ok() =>
                {
                    let keep = |i: crate::catalog::ItemId| ok(i.0);
                    let hits = index.search(uf, n, crate::vector::Allowed::Predicate(&keep));
                    Some(
                        hits.into_iter()
                            .filter(|h| h.score > 0.0)
                            .map(|h| (h.item.0, h.score))
                            .collect::<ChannelHits>(),
                    )
                }
                _ => None,
            };
            match ann {
                Some(hits) => ann_hits = Some(hits),
                None => {
                    if let Some(hits) = dense(&|s| b.mf.score_user(u, s).is_ok()) {
                        out.push((Channel::Mf, hits));
                    }
                }
            }
        }
        None if !history.is_empty() => {
            out.push((
                Channel::UserCf,
                top_sparse(b.user_cf.score_history_sparse(&history), n, ok),
            ));
            if let Some(hits) = dense(&|s| b.mf.score_history(&history, s).is_ok()) {
                out.push((Channel::Mf, hits));
            }
        }
        None => {}
    }
    if !history.is_empty() {
        out.push((
            Channel::Kg,
            top_sparse(b.kg.score_history_sparse(&history), n, ok),
        ));
    }
    let pop = &b.popularity;
    out.push((
        Channel::Popularity,
        pop.ranked()
            .iter()
            .filter(|&&i| ok(i))
            .take(n)
            .map(|&i| (i, pop.item_score(i)))
            .collect(),
    ));
    if let Some(hits) = ann_hits {
        out.push((Channel::Mf, hits));
    }
    out
}

/// What the features need to know about the shopper.
pub(crate) struct UserContext {
    history_len: f32,
    category_share: HashMap<u64, f32>,
    brand_share: HashMap<u64, f32>,
    /// Mean log price of the priced history items.
    mean_log_price: Option<f64>,
    /// The strongest history items, for the knowledge-graph path count.
    strongest: Vec<(u32, f32)>,
}

impl UserContext {
    /// Builds the context from the history and a lookup of item facts.
    pub fn new(history: &[(u32, f32)], info: &dyn Fn(u32) -> ItemInfo) -> Self {
        let mut category_share: HashMap<u64, f32> = HashMap::new();
        let mut brand_share: HashMap<u64, f32> = HashMap::new();
        let n = history.len().max(1) as f32;
        let (mut log_price, mut priced) = (0f64, 0usize);
        for (i, _) in history {
            let it = info(*i);
            if it.category != 0 {
                *category_share.entry(it.category).or_default() += 1.0 / n;
            }
            if it.brand != 0 {
                *brand_share.entry(it.brand).or_default() += 1.0 / n;
            }
            if let Some(p) = it.price {
                log_price += p.ln();
                priced += 1;
            }
        }
        let mut strongest = history.to_vec();
        strongest.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        strongest.truncate(KG_PATH_HISTORY);
        UserContext {
            history_len: history.len() as f32,
            category_share,
            brand_share,
            mean_log_price: (priced > 0).then(|| log_price / priced as f64),
            strongest,
        }
    }
}

/// The union of the channels' candidates, in first-seen order.
pub(crate) fn union(channels: &[(Channel, ChannelHits)], ok: &dyn Fn(u32) -> bool) -> Vec<u32> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (_, hits) in channels {
        for (i, _) in hits {
            if ok(*i) && seen.insert(*i) {
                out.push(*i);
            }
        }
    }
    out
}

/// One feature row per candidate: for each model channel its min-max normalised score and
/// reciprocal rank (0 when absent), then log popularity, log history length, the user's share
/// of history in the item's category and brand, the fraction of channels proposing it, each
/// channel's raw score (log-squashed), the item's recency (log days since its latest
/// interaction), its log price relative to the user's mean (0 when either is unknown) and
/// the log count of the user's strongest history items it shares a knowledge-graph entity
/// with.
pub(crate) fn features(
    cands: &[u32],
    channels: &[(Channel, ChannelHits)],
    b: &BaseModels,
    ctx: &UserContext,
    info: &dyn Fn(u32) -> ItemInfo,
) -> Array2<f32> {
    let mut x = Array2::<f32>::zeros((cands.len(), N_FEATURES));
    let base = 2 * MODEL_CHANNELS.len();
    let index: HashMap<u32, usize> = cands.iter().enumerate().map(|(r, i)| (*i, r)).collect();
    for (ci, c) in MODEL_CHANNELS.iter().enumerate() {
        let Some((_, hits)) = channels.iter().find(|(ch, _)| ch == c) else {
            continue;
        };
        let min = hits.iter().map(|h| h.1).fold(f32::INFINITY, f32::min);
        let max = hits.iter().map(|h| h.1).fold(f32::NEG_INFINITY, f32::max);
        for (rank, (item, s)) in hits.iter().enumerate() {
            if let Some(&r) = index.get(item) {
                x[[r, 2 * ci]] = if max > min {
                    (s - min) / (max - min)
                } else {
                    1.0
                };
                x[[r, 2 * ci + 1]] = 1.0 / (rank as f32 + 1.0);
                // The raw score, squashed: how confident the channel is, across users.
                x[[r, base + 5 + ci]] = s.signum() * s.abs().ln_1p();
            }
        }
    }
    let tail = base + 5 + MODEL_CHANNELS.len();
    for (r, item) in cands.iter().enumerate() {
        let it = info(*item);
        x[[r, base]] = b.popularity.item_score(*item).max(0.0).ln_1p();
        x[[r, base + 1]] = ctx.history_len.ln_1p();
        x[[r, base + 2]] = ctx.category_share.get(&it.category).copied().unwrap_or(0.0);
        x[[r, base + 3]] = ctx.brand_share.get(&it.brand).copied().unwrap_or(0.0);
        x[[r, tail]] = b
            .popularity
            .item_age(*item)
            .map_or(0.0, |age| (age as f32 / 86_400.0).ln_1p());
        if let (Some(p), Some(mean)) = (it.price, ctx.mean_log_price) {
            x[[r, tail + 1]] = (p.ln() - mean) as f32;
        }
        x[[r, tail + 2]] =
            (b.kg.linked_history(*item, &ctx.strongest, KG_PATH_HISTORY) as f32).ln_1p();
        let present = (0..MODEL_CHANNELS.len())
            .filter(|ci| x[[r, 2 * ci + 1]] > 0.0)
            .count();
        x[[r, base + 4]] = present as f32 / MODEL_CHANNELS.len() as f32;
    }
    x
}

/// Candidates per channel, at training, evaluation and by default at query time: the same
/// list length everywhere, because min-max normalised features depend on it (training with
/// 50 while evaluating with 100 cost the re-ranker 0.015 NDCG@10 on MovieLens validation).
pub(crate) const CANDIDATES: usize = 100;
/// Users sampled for the re-ranker's training rows.
const TRAIN_USERS: usize = 1_000;

/// Trains the re-ranker: a fifth of each sampled user's interactions is held out, the base
/// models are fitted on the rest, the pipeline retrieves candidates, and the MLP learns which
/// candidates were held out (negatives: retrieved candidates the user did not take). Returns `None` when
/// the log is too small to hold anything out.
pub(crate) fn train_mlp(
    data: &Interactions,
    fit: &dyn Fn(&Interactions) -> Result<BaseModels>,
    info: &dyn Fn(u32) -> ItemInfo,
    cfg: &MlpConfig,
    rule: crate::eval::SplitKind,
) -> Result<Option<TrainedRanker>> {
    let mut by_user: HashMap<u32, Vec<Interaction>> = HashMap::new();
    for r in &data.rows {
        by_user.entry(r.user).or_default().push(*r);
    }
    let mut users: Vec<u32> = by_user
        .iter()
        .filter(|(_, v)| v.len() >= 3)
        .map(|(u, _)| *u)
        .collect();
    users.sort_unstable();
    if users.len() < 10 {
        return Ok(None);
    }
    let stride = users.len().div_ceil(TRAIN_USERS);
    let users: Vec<u32> = users.into_iter().step_by(stride.max(1)).collect();
    // Hold out part of each sampled user's interactions by the rule of the split, so the
    // re-ranker learns the task it is rated on: the latest one (leave-one-out), the latest
    // fifth (temporal) or a random fifth (random split); at least one. These are the positives.
    let mut held: HashMap<u32, std::collections::HashSet<u32>> = HashMap::new();
    let mut rest = Interactions {
        n_users: data.n_users,
        n_items: data.n_items,
        rows: Vec::with_capacity(data.rows.len()),
    };
    for (u, rows) in &by_user {
        if users.binary_search(u).is_err() {
            rest.rows.extend(rows.iter().copied());
            continue;
        }
        let mut order: Vec<usize> = (0..rows.len()).collect();
        if matches!(rule, crate::eval::SplitKind::RecBole { .. }) {
            crate::models::SplitMix64::new(0x5eed ^ u64::from(*u)).shuffle(&mut order);
        } else {
            // Latest first (ties: later row first).
            order.sort_by_key(|&i| std::cmp::Reverse((rows[i].ts, i)));
        }
        let n_out = match rule {
            crate::eval::SplitKind::LeaveOneOut => 1,
            _ => (rows.len() / 5).max(1),
        };
        let out: std::collections::HashSet<u32> =
            order[..n_out].iter().map(|&i| rows[i].item).collect();
        rest.rows
            .extend(rows.iter().filter(|r| !out.contains(&r.item)));
        held.insert(*u, out);
    }
    let base = fit(&rest)?;
    let csr = rest
        .user_item_csr()
        .map_err(|e| Error::invalid("training", e.to_string()))?;
    let mut xs: Vec<Array2<f32>> = Vec::new();
    let mut ys: Vec<f32> = Vec::new();
    let mut groups: Vec<u32> = Vec::new();
    for u in &users {
        let Some(targets) = held.get(u) else { continue };
        let history = csr.row_pairs(*u as usize);
        let seen: std::collections::HashSet<u32> = history.iter().map(|h| h.0).collect();
        let ok = |i: u32| !seen.contains(&i);
        let chans = model_channels(
            &base,
            data.n_users,
            Some(*u),
            &history,
            CANDIDATES,
            &ok,
            None,
        );
        let cands = union(&chans, &ok);
        if cands.is_empty() {
            continue;
        }
        let ctx = UserContext::new(&history, info);
        xs.push(features(&cands, &chans, &base, &ctx, info));
        ys.extend(
            cands
                .iter()
                .map(|c| if targets.contains(c) { 1.0 } else { 0.0 }),
        );
        groups.extend(std::iter::repeat_n(*u, cands.len()));
    }
    if ys.iter().all(|y| *y == 0.0) {
        return Ok(None);
    }
    // Users are split: the network and the channel weights learn on four fifths and are
    // compared with the seed formula on the held-out fifth; `Fusion::Auto` uses what ranked
    // best there.
    let n_groups = xs.len();
    let n_fit = (n_groups * 4 / 5).max(1);
    let mut offsets = vec![0usize];
    for x in &xs {
        offsets.push(offsets[offsets.len() - 1] + x.nrows());
    }
    let views: Vec<_> = xs[..n_fit].iter().map(|x| x.view()).collect();
    let x = ndarray::concatenate(ndarray::Axis(0), &views)
        .map_err(|e| Error::invalid("training", e.to_string()))?;
    let rows = offsets[n_fit];
    let y = ndarray::Array1::from(ys[..rows].to_vec());
    if y.iter().all(|v| *v == 0.0) {
        return Ok(None);
    }
    // Plain (unweighted) cross-entropy: on MovieLens validation it ranked better than
    // class-balanced weights (NDCG@10 0.2587 against 0.2497).
    let (mlp, _) = Mlp::fit_weighted(x.view(), y.view(), Some(&groups[..rows]), None, cfg)
        .map_err(|e| Error::invalid("training", e.to_string()))?;
    let labels: Vec<&[f32]> = (0..n_groups)
        .map(|g| &ys[offsets[g]..offsets[g + 1]])
        .collect();
    let mut weights = fit_channel_weights(&xs[..n_fit], &labels[..n_fit]);
    let seed = ChannelWeights::seed(crate::fusion::DEFAULT_BETA);
    let alone = one_channel_weights();
    let mut alone_ndcg = vec![0.0; alone.len()];
    let (mut mlp_ndcg, mut linear_ndcg, mut learned_ndcg, mut users_scored) = (0.0, 0.0, 0.0, 0);
    for g in n_fit..n_groups {
        if labels[g].iter().all(|v| *v == 0.0) {
            continue;
        }
        let Ok(p) = mlp.predict(xs[g].view()) else {
            continue;
        };
        mlp_ndcg += ndcg_at_10(p.as_slice().unwrap_or(&[]), labels[g]);
        linear_ndcg += ndcg_at_10(&weighted_scores(&xs[g], &seed), labels[g]);
        learned_ndcg += ndcg_at_10(&weighted_scores(&xs[g], &weights), labels[g]);
        for (w, sum) in alone.iter().zip(alone_ndcg.iter_mut()) {
            *sum += ndcg_at_10(&weighted_scores(&xs[g], w), labels[g]);
        }
        users_scored += 1;
    }
    // One channel alone is one of the learned options: when it ranks the held-out users
    // better than the weights fitted on the others, it is what `Fusion::Learned` serves, so
    // `Fusion::Auto` never chooses below the best single channel on held-out users.
    if let Some((w, best)) = alone
        .iter()
        .zip(&alone_ndcg)
        .max_by(|a, b| a.1.total_cmp(b.1))
    {
        if *best > learned_ndcg {
            weights = *w;
            learned_ndcg = *best;
        }
    }
    let n = users_scored.max(1) as f64;
    Ok(Some(TrainedRanker {
        mlp,
        weights,
        holdout_ndcg: mlp_ndcg / n,
        linear_holdout_ndcg: linear_ndcg / n,
        learned_holdout_ndcg: learned_ndcg / n,
        holdout_users: users_scored,
    }))
}

/// Linear fusion of feature rows: each model channel's normalised score (feature `2 * ci`,
/// as [`crate::fusion::ChannelNorm`] computes it) times its weight.
fn weighted_scores(x: &Array2<f32>, w: &ChannelWeights) -> Vec<f32> {
    (0..x.nrows())
        .map(|r| {
            MODEL_CHANNELS
                .iter()
                .enumerate()
                .map(|(ci, c)| w.get(*c) * x[[r, 2 * ci]])
                .sum()
        })
        .collect()
}

/// Weights a channel may take in the coordinate search: zero, then a geometric ladder wide
/// enough for one channel to dominate the others (only ratios matter).
const WEIGHT_GRID: [f32; 12] = [
    0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// The weights of each model channel alone.
fn one_channel_weights() -> Vec<ChannelWeights> {
    MODEL_CHANNELS
        .iter()
        .map(|c| {
            let mut w = ChannelWeights::seed(0.0);
            w.set(Channel::Popularity, 0.0);
            w.set(*c, 1.0);
            w
        })
        .collect()
}

/// Fits per-channel linear weights by coordinate ascent on mean NDCG@10 over the training
/// users' candidate lists: a few passes over the channels, each keeping the grid value that
/// ranks best. A change must improve the mean to be kept, so the result is never worse on
/// these users than the seed formula or any channel alone.
fn fit_channel_weights(xs: &[Array2<f32>], labels: &[&[f32]]) -> ChannelWeights {
    let mean_ndcg = |w: &ChannelWeights| -> f64 {
        let total: f64 = xs
            .iter()
            .zip(labels)
            .map(|(x, y)| ndcg_at_10(&weighted_scores(x, w), y))
            .sum();
        total / xs.len().max(1) as f64
    };
    // Start from the best of the seed formula and each channel alone: from the seed, a
    // greedy search can stall short of one dominant channel.
    let (mut best, mut best_ndcg) =
        std::iter::once(ChannelWeights::seed(crate::fusion::DEFAULT_BETA))
            .chain(one_channel_weights())
            .map(|w| (w, mean_ndcg(&w)))
            .fold((ChannelWeights::seed(0.0), f64::NEG_INFINITY), |a, b| {
                if b.1 > a.1 {
                    b
                } else {
                    a
                }
            });
    for _pass in 0..5 {
        let before = best_ndcg;
        for c in MODEL_CHANNELS {
            for v in WEIGHT_GRID {
                let mut w = best;
                w.set(c, v);
                let n = mean_ndcg(&w);
                if n > best_ndcg + 1e-9 {
                    (best, best_ndcg) = (w, n);
                }
            }
        }
        if best_ndcg <= before + 1e-9 {
            break;
        }
    }
    best
}

/// NDCG@10 of one ranked list with binary labels.
fn ndcg_at_10(scores: &[f32], labels: &[f32]) -> f64 {
    let mut order: Vec<usize> = (0..scores.len().min(labels.len())).collect();
    order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
    let dcg: f64 = order
        .iter()
        .take(10)
        .enumerate()
        .filter(|(_, i)| labels[**i] > 0.0)
        .map(|(r, _)| 1.0 / (r as f64 + 2.0).log2())
        .sum();
    let positives = labels.iter().filter(|v| **v > 0.0).count().min(10);
    let idcg: f64 = (0..positives).map(|r| 1.0 / (r as f64 + 2.0).log2()).sum();
    if idcg > 0.0 {
        dcg / idcg
    } else {
        0.0
    }
}

/// The trained re-ranker and learned channel weights, and how they compared with the seed
/// formula on held-out users.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct TrainedRanker {
    pub mlp: Mlp,
    /// Linear fusion weights fitted on the training users' candidates, or one channel alone
    /// when that ranked the held-out users better.
    pub weights: ChannelWeights,
    /// NDCG@10 of the re-ranker's order on held-out users' candidates.
    pub holdout_ndcg: f64,
    /// NDCG@10 of the seed formula (`Fusion::default_linear`) on the same candidates.
    pub linear_holdout_ndcg: f64,
    /// NDCG@10 of the learned weights on the same candidates.
    pub learned_holdout_ndcg: f64,
    /// Held-out users behind the comparison.
    pub holdout_users: usize,
}

/// Fewer held-out users than this cannot show that the network ranks better.
const MIN_HOLDOUT_USERS: usize = 100;

impl TrainedRanker {
    /// What `Fusion::Auto` uses for recommendations: the best of the network, the learned
    /// weights and the seed formula on held-out users (the seed formula when too few users
    /// were held out to tell).
    pub fn auto(&self) -> Fusion {
        if self.holdout_users < MIN_HOLDOUT_USERS {
            return Fusion::default_linear();
        }
        let learned = self.learned_holdout_ndcg;
        if self.holdout_ndcg > learned.max(self.linear_holdout_ndcg) {
            Fusion::Mlp
        } else if learned > self.linear_holdout_ndcg {
            Fusion::Learned
        } else {
            Fusion::default_linear()
        }
    }
}

/// The default re-ranker configuration: one hidden layer of 64, early stopping.
pub(crate) fn default_mlp_config() -> MlpConfig {
    MlpConfig {
        hidden: vec![64],
        max_epochs: 60,
        patience: 6,
        batch_size: 256,
        learning_rate: 1e-3,
        ..MlpConfig::default()
    }
}

/// Fused scores of `cands` (recommendation: model channels only), as the query path computes
/// them: the formula of [`crate::fusion`] or, for `Mlp`, the network's probability.
pub(crate) fn fuse(
    fusion: Fusion,
    cands: &[u32],
    channels: &[(Channel, ChannelHits)],
    b: &BaseModels,
    ranker: Option<&TrainedRanker>,
    ctx: &UserContext,
    info: &dyn Fn(u32) -> ItemInfo,
) -> Vec<f32> {
    if let (Fusion::Mlp, Some(r)) = (fusion, ranker) {
        let x = features(cands, channels, b, ctx, info);
        if let Ok(p) = r.mlp.predict(x.view()) {
            return p.to_vec();
        }
    }
    let fusion = match fusion {
        Fusion::Mlp | Fusion::Auto => Fusion::default_linear(),
        f => f,
    };
    let present: Vec<Channel> = channels.iter().map(|(c, _)| *c).collect();
    let formula = Formula::resolve(fusion, ranker.map(|r| &r.weights), &present);
    let norms: Vec<ChannelNorm<u32>> = channels
        .iter()
        .map(|(c, hits)| ChannelNorm::new(*c, hits))
        .collect();
    cands
        .iter()
        .map(|i| crate::fusion::fuse_item(&norms, *i, &formula).0)
        .collect()
}

/// The model channels' scores of given candidates only (a personalised search re-ranks its
/// content candidates; it does not need each channel's best items over the whole catalog).
pub(crate) fn model_scores_for(
    b: &BaseModels,
    n_users: usize,
    user: Option<u32>,
    history: &[(u32, f32)],
    cands: &[u32],
) -> Vec<(Channel, ChannelHits)> {
    let n_items = b.popularity.n_items();
    let cands: Vec<u32> = cands
        .iter()
        .copied()
        .filter(|i| (*i as usize) < n_items)
        .collect();
    let history: Vec<(u32, f32)> = history
        .iter()
        .copied()
        .filter(|(i, _)| (*i as usize) < n_items)
        .collect();
    let mut out = Vec::new();
    let pick = |score: &dyn Fn(u32) -> f32| -> ChannelHits {
        let mut v: ChannelHits = cands
            .iter()
            .map(|&i| (i, score(i)))
            .filter(|(_, s)| s.is_finite() && *s > 0.0)
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    };
    let known = user.filter(|u| (*u as usize) < n_users);
    if !history.is_empty() {
        let s = b.item_cf.score_history_sparse(&history);
        out.push((Channel::ItemCf, pick(&|i| s.get(i))));
    }
    let user_cf = match known {
        Some(u) => b.user_cf.score_user_sparse(u),
        None => (!history.is_empty()).then(|| b.user_cf.score_history_sparse(&history)),
    };
    if let Some(s) = user_cf {
        out.push((Channel::UserCf, pick(&|i| s.get(i))));
    }
    match known.and_then(|u| b.mf.user_vector(u)) {
        Some(uf) => {
            let mut v: ChannelHits = cands
                .iter()
                .filter_map(|&i| {
                    let f = b.mf.item_vector(i)?;
                    let s: f32 = uf.iter().zip(f).map(|(a, c)| a * c).sum();
                    (s.is_finite() && s > 0.0).then_some((i, s))
                })
                .collect();
            v.sort_by(|a, c| c.1.total_cmp(&a.1).then(a.0.cmp(&c.0)));
            out.push((Channel::Mf, v));
        }
        None if !history.is_empty() => {
            let mut scores = vec![0f32; n_items];
            if b.mf.score_history(&history, &mut scores).is_ok() {
                out.push((
                    Channel::Mf,
                    pick(&|i| scores.get(i as usize).copied().unwrap_or(0.0)),
                ));
            }
        }
        None => {}
    }
    if !history.is_empty() {
        let s = b.kg.score_history_sparse(&history);
        out.push((Channel::Kg, pick(&|i| s.get(i))));
    }
    let mut pop: ChannelHits = cands
        .iter()
        .map(|&i| (i, b.popularity.item_score(i)))
        .filter(|(_, s)| s.is_finite() && *s > 0.0)
        .collect();
    pop.sort_by(|a, c| c.1.total_cmp(&a.1).then(a.0.cmp(&c.0)));
    out.push((Channel::Popularity, pop));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sorting everything, then filtering: what `top_allowed` must return.
    fn brute(scores: &[f32], n: usize, ok: &dyn Fn(u32) -> bool) -> ChannelHits {
        let mut v: Vec<(u32, f32)> = scores
            .iter()
            .enumerate()
            .filter(|(i, s)| s.is_finite() && **s > 0.0 && ok(*i as u32))
            .map(|(i, s)| (i as u32, *s))
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }

    #[test]
    fn top_allowed_equals_a_full_sort_on_large_vectors() {
        let mut rng = crate::models::SplitMix64::new(11);
        let scores: Vec<f32> = (0..200_000)
            .map(|i| match i % 7 {
                0 => 0.0,
                1 => -1.0,
                2 => f32::NAN,
                // Many ties, so the threshold lands on equal scores.
                3 => 0.5,
                _ => rng.next_f64() as f32,
            })
            .collect();
        let filters: [&dyn Fn(u32) -> bool; 4] = [
            &|_| true,
            &|i| i % 3 == 0,
            // Only a few items pass: the fast path falls back to the full scan.
            &|i| i % 10_007 == 5,
            &|_| false,
        ];
        for ok in filters {
            for n in [1, 10, 100, 500] {
                assert_eq!(top_allowed(&scores, n, ok), brute(&scores, n, ok), "n {n}");
            }
        }
        let small = [0.3, 0.9, 0.0, 0.9, 0.1];
        assert_eq!(top_allowed(&small, 2, &|_| true), vec![(1, 0.9), (3, 0.9)]);
    }

    #[test]
    fn item_info_keys_are_case_blind_for_brands_and_take_the_top_category() {
        let a = ItemInfo::of(
            &crate::Product::new("a")
                .brand("ACME")
                .category("Shoes/Running"),
        );
        let b = ItemInfo::of(
            &crate::Product::new("b")
                .brand("acme")
                .category(" Shoes > Trail"),
        );
        let c = ItemInfo::of(&crate::Product::new("c").brand("Globex").category("shoes"));
        assert_eq!(a.brand, b.brand);
        assert_eq!(a.category, b.category);
        assert_ne!(a.brand, c.brand);
        assert_ne!(a.category, c.category, "categories keep their case");
        let de = ItemInfo::of(&crate::Product::new("e").brand("ÄPFEL Co"));
        let de2 = ItemInfo::of(&crate::Product::new("f").brand("äpfel co"));
        assert_eq!(de.brand, de2.brand);
        assert_ne!(de.brand, a.brand);
        let none = ItemInfo::of(&crate::Product::new("d"));
        assert_eq!((none.brand, none.category), (0, 0));
    }
}
