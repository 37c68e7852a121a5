//! Per-candidate features, the MLP re-ranker and the one fusion path: shared by the query
//! path, training and offline evaluation, so that features and fused scores are computed
//! the same way everywhere.

use std::collections::HashMap;

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::catalog::ItemInfo;
use crate::channel::{
    union, Channel, ChannelHits, ChannelScore, Fusion, Models, Request, REGISTRY,
};
use crate::error::{Error, Result};
use crate::fusion::{ChannelNorm, ChannelWeights, Formula};
use crate::metrics::ndcg_at_10;
use crate::models::mlp::{Mlp, MlpConfig};
use crate::models::{Interaction, Interactions, KgRelatedness, Popularity};

/// Number of features per candidate: three per model channel, then eight about the item and
/// the shopper (see [`features`]).
pub(crate) const N_FEATURES: usize = 3 * REGISTRY.len() + 8;

/// History items the knowledge-graph path count looks at (the user's strongest).
const KG_PATH_HISTORY: usize = 20;

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
    models: &Models,
    ctx: &UserContext,
    info: &dyn Fn(u32) -> ItemInfo,
) -> Array2<f32> {
    let n_channels = REGISTRY.len();
    let mut x = Array2::<f32>::zeros((cands.len(), N_FEATURES));
    let base = 2 * n_channels;
    let index: HashMap<u32, usize> = cands.iter().enumerate().map(|(r, i)| (*i, r)).collect();
    for (ci, spec) in REGISTRY.iter().enumerate() {
        let Some((_, hits)) = channels.iter().find(|(ch, _)| *ch == spec.channel) else {
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
    let tail = base + 5 + n_channels;
    let popularity = models.typed::<Popularity>();
    let kg = models.typed::<KgRelatedness>();
    for (r, item) in cands.iter().enumerate() {
        let it = info(*item);
        if let Some(pop) = popularity {
            x[[r, base]] = pop.item_score(*item).max(0.0).ln_1p();
            x[[r, tail]] = pop
                .item_age(*item)
                .map_or(0.0, |age| (age as f32 / 86_400.0).ln_1p());
        }
        x[[r, base + 1]] = ctx.history_len.ln_1p();
        x[[r, base + 2]] = ctx.category_share.get(&it.category).copied().unwrap_or(0.0);
        x[[r, base + 3]] = ctx.brand_share.get(&it.brand).copied().unwrap_or(0.0);
        if let (Some(p), Some(mean)) = (it.price, ctx.mean_log_price) {
            x[[r, tail + 1]] = (p.ln() - mean) as f32;
        }
        if let Some(kg) = kg {
            x[[r, tail + 2]] =
                (kg.linked_history(*item, &ctx.strongest, KG_PATH_HISTORY) as f32).ln_1p();
        }
        let present = (0..n_channels)
            .filter(|ci| x[[r, 2 * ci + 1]] > 0.0)
            .count();
        x[[r, base + 4]] = present as f32 / n_channels as f32;
    }
    x
}

/// Candidates per channel, at training, evaluation and by default at query time: the same
/// list length everywhere, because min-max normalised features depend on it (training with
/// 50 while evaluating with 100 cost the re-ranker 0.015 NDCG@10 on MovieLens validation).
pub(crate) const CANDIDATES: usize = 100;
/// Users sampled for the re-ranker's training rows.
const TRAIN_USERS: usize = 1_000;

/// The part of a log the re-ranker learns from: part of each sampled user's interactions is
/// held out by the rule of the split (the latest one for leave-one-out), and the base models
/// are fitted on the rest.
pub(crate) struct HeldOut {
    /// The sampled users, ascending.
    users: Vec<u32>,
    /// What each sampled user's held-out part holds (the positives).
    held: HashMap<u32, std::collections::HashSet<u32>>,
    /// The log without the held-out parts: what the base models are fitted on.
    pub rest: Interactions,
}

impl HeldOut {
    /// Holds out part of each of up to [`TRAIN_USERS`] users' interactions; `None` when the
    /// log is too small to hold anything out (fewer than 10 users with three interactions).
    pub(crate) fn new(data: &Interactions, rule: crate::eval::SplitKind) -> Option<HeldOut> {
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
            return None;
        }
        let stride = users.len().div_ceil(TRAIN_USERS);
        let users: Vec<u32> = users.into_iter().step_by(stride.max(1)).collect();
        // Hold out part of each sampled user's interactions by the rule of the split, so the
        // re-ranker learns the task it is rated on: the latest one (leave-one-out), the latest
        // fifth (temporal) or a random fifth (random split); at least one. These are the
        // positives.
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
        Some(HeldOut { users, held, rest })
    }
}

/// Trains the re-ranker on `split` with `base`, the models fitted on `split.rest`: the
/// pipeline retrieves candidates, and the MLP learns which candidates were held out
/// (negatives: retrieved candidates the user did not take; it trains on the positives and a
/// sample of the negatives, [`fit_rows`]). Returns `None` when no candidate was a positive.
pub(crate) fn train_mlp(
    split: &HeldOut,
    base: &Models,
    info: &dyn Fn(u32) -> ItemInfo,
    cfg: &MlpConfig,
    recency: f32,
) -> Result<Option<TrainedRanker>> {
    let (users, held, rest) = (&split.users, &split.held, &split.rest);
    let csr = rest
        .history_csr(recency)
        .map_err(|e| Error::invalid("training", e.to_string()))?;
    let sequences = rest.sequences();
    let mut xs: Vec<Array2<f32>> = Vec::new();
    let mut ys: Vec<f32> = Vec::new();
    let mut groups: Vec<u32> = Vec::new();
    for u in users {
        let Some(targets) = held.get(u) else { continue };
        let history = csr.row_pairs(*u as usize);
        let seen: std::collections::HashSet<u32> = history.iter().map(|h| h.0).collect();
        let ok = |i: u32| !seen.contains(&i);
        let (user, known) = base.known(Some(*u), &history);
        let recent = base.known_recent(sequences.get(*u as usize).map_or(&[], Vec::as_slice));
        let req = Request::shopper(user, &known).with_recent(&recent);
        let chans = base.propose(&req, CANDIDATES, &ok)?;
        let cands = union(&chans, &ok);
        if cands.is_empty() {
            continue;
        }
        let ctx = UserContext::new(&history, info);
        xs.push(features(&cands, &chans, base, &ctx, info));
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
    // The network learns from each training user's positives, the negatives the seed
    // formula ranks highest (the ones a re-ranker must reorder) and a few others (so that it
    // also scores the rest of a list sensibly): a fifth of the rows, and a fifth of the time.
    let seed = ChannelWeights::seed(crate::fusion::DEFAULT_BETA);
    let mut picked: Vec<(usize, f32)> = Vec::new();
    for g in 0..n_fit {
        let rows = fit_rows(
            &weighted_scores(&xs[g], &seed),
            &ys[offsets[g]..offsets[g + 1]],
            g,
        );
        picked.extend(rows.into_iter().map(|(r, w)| (offsets[g] + r, w)));
    }
    let mut x = Array2::<f32>::zeros((picked.len(), N_FEATURES));
    for (mut row, &(i, _)) in x.rows_mut().into_iter().zip(&picked) {
        let g = offsets.partition_point(|o| *o <= i) - 1;
        row.assign(&xs[g].row(i - offsets[g]));
    }
    let y = ndarray::Array1::from(picked.iter().map(|&(i, _)| ys[i]).collect::<Vec<f32>>());
    let fit_groups: Vec<u32> = picked.iter().map(|&(i, _)| groups[i]).collect();
    let fit_weights: Vec<f32> = picked.iter().map(|&(_, w)| w).collect();
    if y.iter().all(|v| *v == 0.0) {
        return Ok(None);
    }
    // Plain (unweighted) cross-entropy: on MovieLens validation it ranked better than
    // class-balanced weights (NDCG@10 0.2587 against 0.2497).
    let (mlp, _) = Mlp::fit_weighted(
        x.view(),
        y.view(),
        Some(&fit_groups),
        Some(&fit_weights),
        cfg,
    )
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

/// Negatives per training user the seed formula ranks highest, kept for the network.
const HARD_NEGATIVES: usize = 40;
/// Other negatives per training user, drawn at random, kept for the network.
const RANDOM_NEGATIVES: usize = 20;

/// The rows of one user's candidate list the network trains on, with their weights: every
/// positive and the [`HARD_NEGATIVES`] negatives `seed_scores` ranks highest (weight 1), and
/// [`RANDOM_NEGATIVES`] of the other negatives drawn at random (seeded by the list's index
/// `g`), each weighing for the ones not drawn, so that the loss stays an unbiased estimate of
/// the loss over the whole list. In list order.
fn fit_rows(seed_scores: &[f32], labels: &[f32], g: usize) -> Vec<(usize, f32)> {
    let mut negatives: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] <= 0.0).collect();
    negatives.sort_by(|&a, &b| seed_scores[b].total_cmp(&seed_scores[a]).then(a.cmp(&b)));
    let mut rest = negatives.split_off(HARD_NEGATIVES.min(negatives.len()));
    let others = rest.len();
    crate::models::SplitMix64::new(0x4e67 ^ g as u64).shuffle(&mut rest);
    rest.truncate(RANDOM_NEGATIVES);
    let weight = others as f32 / rest.len().max(1) as f32;
    let mut rows: Vec<(usize, f32)> = (0..labels.len())
        .filter(|&i| labels[i] > 0.0)
        .chain(negatives)
        .map(|i| (i, 1.0))
        .collect();
    rows.extend(rest.into_iter().map(|i| (i, weight)));
    rows.sort_unstable_by_key(|r| r.0);
    rows
}

/// Linear fusion of feature rows: each model channel's normalised score (feature `2 * ci`,
/// as [`crate::fusion::ChannelNorm`] computes it) times its weight.
fn weighted_scores(x: &Array2<f32>, w: &ChannelWeights) -> Vec<f32> {
    (0..x.nrows())
        .map(|r| {
            REGISTRY
                .iter()
                .enumerate()
                .map(|(ci, spec)| w.get(spec.channel) * x[[r, 2 * ci]])
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
    REGISTRY
        .iter()
        .map(|spec| {
            let mut w = ChannelWeights::seed(0.0);
            w.set(Channel::Popularity, 0.0);
            w.set(spec.channel, 1.0);
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
        for spec in REGISTRY {
            for v in WEIGHT_GRID {
                let mut w = best;
                w.set(spec.channel, v);
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
/// The network is served only when it ranks held-out users this much better (relative) than
/// the linear options: it costs more per query, and a smaller lead is within the noise of a
/// few hundred users.
const MLP_MARGIN: f64 = 0.02;

impl TrainedRanker {
    /// What `Fusion::Auto` uses for recommendations: the best of the network, the learned
    /// weights and the seed formula on held-out users, the network only by a margin
    /// ([`MLP_MARGIN`]); the seed formula when too few users were held out to tell.
    pub fn auto(&self) -> Fusion {
        if self.holdout_users < MIN_HOLDOUT_USERS {
            return Fusion::default_linear();
        }
        let learned = self.learned_holdout_ndcg;
        if self.holdout_ndcg > learned.max(self.linear_holdout_ndcg) * (1.0 + MLP_MARGIN) {
            Fusion::Mlp
        } else if learned > self.linear_holdout_ndcg {
            Fusion::Learned
        } else {
            Fusion::default_linear()
        }
    }
}

/// What one call of [`fuse`] fuses.
pub(crate) struct FuseInput<'a> {
    /// The fusion asked for (`Auto` included).
    pub fusion: Fusion,
    /// A search (text or vector): the trained modes fall back to the seed formula.
    pub searching: bool,
    /// The candidates, in the order their scores are returned.
    pub cands: &'a [u32],
    /// Every channel's hits (content and model channels).
    pub channels: &'a [(Channel, ChannelHits)],
    /// The model generation's channels, when trained.
    pub models: Option<&'a Models>,
    /// Its re-ranker and learned weights, when trained.
    pub ranker: Option<&'a TrainedRanker>,
    /// The shopper's history (for the re-ranker's features).
    pub history: &'a [(u32, f32)],
    /// Item facts (for the re-ranker's features).
    pub info: &'a dyn Fn(u32) -> ItemInfo,
    /// Return each channel's part of each candidate's score.
    pub explain: bool,
}

/// The fused scores of one request's candidates.
pub(crate) struct Fused {
    /// Per candidate, in the order given.
    pub scores: Vec<f32>,
    /// Per candidate, each channel's part (empty unless asked for).
    pub parts: Vec<Vec<ChannelScore>>,
    /// What happened on the way (fallbacks, the mode used), for explanations.
    pub notes: Vec<String>,
}

/// The one fusion path, used by queries and by offline evaluation alike.
///
/// `Auto` becomes what ranked best on held-out users at training. The trained modes (`Mlp`,
/// `Learned`) need a trained generation and a recommendation; otherwise the seed formula
/// is used, with a note. When the re-ranker fails on a candidate set (its input does not
/// match, a non-finite output), the call does not fail: the learned weights rank instead
/// (the seed formula before any training), with a note saying why. Under `Mlp` every
/// channel's part is reported with a contribution of 0: the network's probability is not a
/// sum.
///
/// A cold start ([`cold_start`]: a recommendation with no history) is not fused, whatever
/// fusion was asked: its candidates are ranked by [`COLD_START_FALLBACK`]'s own scores (each
/// score is that channel's raw score, its part the whole score), with a note saying so.
pub(crate) fn fuse(input: &FuseInput<'_>) -> Fused {
    let mut notes = Vec::new();
    let present: Vec<Channel> = input.channels.iter().map(|(c, _)| *c).collect();
    let fallback = cold_start(input.searching, input.history)
        && input
            .channels
            .iter()
            .any(|(c, hits)| *c == COLD_START_FALLBACK && !hits.is_empty());
    let (formula, mlp_scores) = if fallback {
        notes.push(format!(
            "cold-start fallback (no history): ranked by {} alone, with its own scores",
            COLD_START_FALLBACK.name()
        ));
        (Formula::Alone(COLD_START_FALLBACK), None)
    } else {
        fuse_history(input, &present, &mut notes)
    };
    let norms: Vec<ChannelNorm<u32>> = input
        .channels
        .iter()
        .map(|(c, hits)| ChannelNorm::new(*c, hits))
        .collect();
    let mut scores = Vec::with_capacity(input.cands.len());
    let mut parts = Vec::new();
    for (r, &i) in input.cands.iter().enumerate() {
        let sum = if input.explain {
            let (sum, p) = crate::fusion::fuse_item(&norms, i, &formula);
            parts.push(p);
            sum
        } else {
            crate::fusion::fused_sum(&norms, i, &formula)
        };
        scores.push(match &mlp_scores {
            Some(m) => m.get(r).copied().unwrap_or(0.0),
            None => sum,
        });
    }
    Fused {
        scores,
        parts,
        notes,
    }
}

/// The channel that ranks a cold start: popularity needs no history.
pub(crate) const COLD_START_FALLBACK: Channel = Channel::Popularity;

/// Whether a request is a cold start: a recommendation with no history (an unknown user, one
/// whose every event is on a deleted product, or no user at all). Only the channels that
/// need no history can answer it, so [`fuse`] ranks it by [`COLD_START_FALLBACK`]'s own
/// scores, and the request leaves out the user (whose trained factors, if any, describe
/// products that are gone).
pub(crate) fn cold_start(searching: bool, history: &[(u32, f32)]) -> bool {
    !searching && history.is_empty()
}

/// The formula (and the network's scores under `Mlp`) of a request with a history: the
/// fusion asked for, resolved.
fn fuse_history(
    input: &FuseInput<'_>,
    present: &[Channel],
    notes: &mut Vec<String>,
) -> (Formula, Option<Vec<f32>>) {
    let ranker = input.ranker.filter(|_| input.models.is_some());
    let mut fusion = resolve_fusion(input.fusion, ranker, input.searching, notes);
    let mut mlp_scores: Option<Vec<f32>> = None;
    if let (Fusion::Mlp, Some(r), Some(models)) = (fusion, ranker, input.models) {
        let model_chans: Vec<(Channel, ChannelHits)> = input
            .channels
            .iter()
            .filter(|(c, _)| !c.is_content())
            .cloned()
            .collect();
        let ctx = UserContext::new(input.history, input.info);
        let x = features(input.cands, &model_chans, models, &ctx, input.info);
        match r.mlp.predict(x.view()) {
            Ok(p) if p.iter().all(|v| v.is_finite()) => {
                notes.push("fused by the MLP re-ranker".to_string());
                mlp_scores = Some(p.to_vec());
            }
            failed => {
                let why = match failed {
                    Err(e) => e.to_string(),
                    Ok(_) => "a non-finite score".to_string(),
                };
                notes.push(format!(
                    "the MLP re-ranker failed ({why}): the learned channel weights used"
                ));
                fusion = Fusion::Learned;
            }
        }
    }
    if fusion == Fusion::Learned {
        notes.push("fused with the channel weights learned at training".to_string());
    }
    let formula = Formula::resolve(fusion, ranker.map(|r| &r.weights), present);
    (formula, mlp_scores)
}

/// The concrete fusion a call uses: `Auto` becomes what ranked best on held-out users at
/// training; the trained modes fall back to the seed formula (with a note) for searches and
/// untrained engines.
fn resolve_fusion(
    asked: Fusion,
    ranker: Option<&TrainedRanker>,
    searching: bool,
    notes: &mut Vec<String>,
) -> Fusion {
    let trained = ranker.filter(|_| !searching);
    match (asked, trained) {
        (Fusion::Auto, Some(r)) => r.auto(),
        (Fusion::Mlp | Fusion::Learned, Some(_)) => asked,
        (Fusion::Mlp | Fusion::Learned, None) => {
            notes.push(format!(
                "{} fusion needs a trained model set and no search text: linear fusion used",
                if asked == Fusion::Mlp {
                    "MLP"
                } else {
                    "learned"
                }
            ));
            Fusion::default_linear()
        }
        (Fusion::Auto, None) => Fusion::default_linear(),
        (f @ (Fusion::Linear { .. } | Fusion::Rrf { .. }), _) => f,
    }
}

/// A model generation as offline evaluation scores it.
pub(crate) struct Pipeline<'a> {
    pub models: &'a Models,
    pub ranker: Option<&'a TrainedRanker>,
    /// Item facts (for the re-ranker's features).
    pub info: &'a (dyn Fn(u32) -> ItemInfo + Sync),
}

impl Pipeline<'_> {
    /// A recommendation for a shopper the models know: every model channel's candidates
    /// that pass `ok`, fused. Returns the candidates and their fused scores.
    pub fn recommend(
        &self,
        fusion: Fusion,
        user: u32,
        history: &[(u32, f32)],
        recent: &[u32],
        n: usize,
        ok: &crate::channel::Allow<'_>,
    ) -> Result<(Vec<u32>, Vec<f32>)> {
        // A cold start is asked anonymously, as the query path asks it.
        let user = Some(user).filter(|_| !cold_start(false, history));
        let (known_user, known) = self.models.known(user, history);
        let recent = self.models.known_recent(recent);
        let chans = self.models.propose(
            &Request::shopper(known_user, &known).with_recent(&recent),
            n,
            ok,
        )?;
        let cands = union(&chans, ok);
        let fused = fuse(&FuseInput {
            fusion,
            searching: false,
            cands: &cands,
            channels: &chans,
            models: Some(self.models),
            ranker: self.ranker,
            history,
            info: self.info,
            explain: false,
        });
        Ok((cands, fused.scores))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranker(mlp_ndcg: f64, learned: f64, linear: f64, users: usize) -> TrainedRanker {
        let x = ndarray::Array2::from_shape_fn((20, 2), |(r, c)| (r * (c + 1)) as f32);
        let y = ndarray::Array1::from_shape_fn(20, |r| (r % 2) as f32);
        let cfg = MlpConfig {
            hidden: vec![2],
            max_epochs: 1,
            ..MlpConfig::default()
        };
        let (mlp, _) = Mlp::fit_weighted(x.view(), y.view(), None, None, &cfg).unwrap();
        TrainedRanker {
            mlp,
            weights: ChannelWeights::seed(0.5),
            holdout_ndcg: mlp_ndcg,
            linear_holdout_ndcg: linear,
            learned_holdout_ndcg: learned,
            holdout_users: users,
        }
    }

    #[test]
    fn a_cold_start_is_ranked_by_the_fallback_alone() {
        let channels = vec![(COLD_START_FALLBACK, vec![(3u32, 12.0), (1, 5.0), (2, 4.0)])];
        let info = |_: u32| ItemInfo::default();
        let r = ranker(0.30, 0.28, 0.27, 500);
        let input = |history: &'static [(u32, f32)]| FuseInput {
            fusion: Fusion::Mlp,
            searching: false,
            cands: &[1, 2, 3],
            channels: &channels,
            models: None,
            ranker: Some(&r),
            history,
            info: &info,
            explain: true,
        };
        let fused = fuse(&input(&[]));
        assert_eq!(fused.scores, vec![5.0, 4.0, 12.0]);
        let contributions: Vec<f32> = fused.parts.iter().map(|p| p[0].contribution).collect();
        assert_eq!(contributions, fused.scores);
        assert_eq!(fused.notes.len(), 1, "{:?}", fused.notes);
        assert!(
            fused.notes[0].starts_with("cold-start fallback (no history): ranked by popularity")
        );
        // With a history the asked fusion applies (here the seed formula: no models).
        let fused = fuse(&input(&[(7, 1.0)]));
        assert!(
            fused.notes.iter().all(|n| !n.contains("cold-start")),
            "{:?}",
            fused.notes
        );
        assert!((fused.scores[2] - 0.05).abs() < 1e-6, "{:?}", fused.scores);
        // A search is never a cold start.
        let search = FuseInput {
            searching: true,
            ..input(&[])
        };
        assert!(fuse(&search)
            .notes
            .iter()
            .all(|n| !n.contains("cold-start")));
    }

    #[test]
    fn auto_serves_the_network_only_by_a_margin() {
        // A clear lead: the network.
        assert_eq!(ranker(0.30, 0.28, 0.27, 500).auto(), Fusion::Mlp);
        // Ahead by less than the margin: the better linear option.
        assert_eq!(ranker(0.281, 0.28, 0.27, 500).auto(), Fusion::Learned);
        assert_eq!(
            ranker(0.281, 0.27, 0.28, 500).auto(),
            Fusion::default_linear()
        );
        // Too few held-out users to tell: the seed formula.
        assert_eq!(
            ranker(0.40, 0.28, 0.27, 50).auto(),
            Fusion::default_linear()
        );
    }
}
