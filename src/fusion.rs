//! The fusion formulas: how each channel's normalised score and rank become its part of one
//! fused score. The query path (which also explains every part) and offline evaluation both
//! call [`Formula`], so the figures measured are the formula served.

use std::collections::HashMap;
use std::hash::Hash;

use serde::{Deserialize, Serialize};

use crate::channel::{Channel, ChannelScore, Fusion, REGISTRY};

/// The weight in the seed formula of popularity and of content from the history: tie-breakers
/// beside the collaborative channels, not channels of their own there (content from the
/// history at an equal share cost MovieLens's seed formula 0.012 NDCG@10; learned weights and
/// the re-ranker give it what it earns).
const TIE_BREAKER_WEIGHT: f32 = 0.05;

pub(crate) use crate::channel::{DEFAULT_ALPHA, DEFAULT_BETA};

/// Number of [`Channel`] variants (the index of a channel's weight).
const N_CHANNELS: usize = Channel::ALL.len();

/// Per-channel weights of linear fusion for recommendations, fitted at training on held-out
/// interactions (see `Engine::train`): the part of channel `c` is `weight(c) * normalised`.
/// Content channels (text, vector) have none.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelWeights([f32; N_CHANNELS]);

impl ChannelWeights {
    /// The seed formula's weights for recommendations: `beta` spread over the collaborative
    /// channels (item-CF, user-CF, MF, KG), popularity and content from the history as
    /// tie-breakers.
    pub(crate) fn seed(beta: f32) -> Self {
        let n_collab = REGISTRY
            .iter()
            .filter(|s| is_collaborative(s.channel))
            .count()
            .max(1);
        let each = beta / n_collab as f32;
        let mut w = ChannelWeights([0.0; N_CHANNELS]);
        for spec in REGISTRY {
            w.set(
                spec.channel,
                if is_collaborative(spec.channel) {
                    each
                } else {
                    TIE_BREAKER_WEIGHT
                },
            );
        }
        w
    }

    /// The weight of a model channel (0 for the content channels).
    pub fn get(&self, c: Channel) -> f32 {
        self.0[c.index()]
    }

    /// Sets the weight of a model channel (content channels are ignored).
    pub(crate) fn set(&mut self, c: Channel, w: f32) {
        if !c.is_content() {
            self.0[c.index()] = w;
        }
    }

    /// Every model channel's weight, in registry order.
    pub fn iter(&self) -> impl Iterator<Item = (Channel, f32)> + '_ {
        REGISTRY.iter().map(|s| (s.channel, self.get(s.channel)))
    }
}

impl std::fmt::Display for ChannelWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (c, w)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{} {w}", c.name())?;
        }
        Ok(())
    }
}

/// A fusion formula resolved for one call (knowing which channels took part).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Formula {
    /// `weight(channel) * normalised`, summed.
    Weighted([f32; N_CHANNELS]),
    /// `1 / (k + rank)`, summed.
    Rrf { k: f32 },
    /// One channel's own raw scores; the other channels' parts are 0. The cold start's
    /// formula: with no history there is nothing to fuse, and the fallback's own scores
    /// (popularity's counts) say more than their min-max normalisation, which gives the last
    /// candidate 0.
    Alone(Channel),
}

impl Formula {
    /// The seed's formula: `alpha` spread over the content channels present, `beta` over the
    /// collaborative ones present (item-CF, user-CF, MF, KG), popularity and content from the
    /// history as tie-breakers.
    pub fn linear(alpha: f32, beta: f32, present: &[Channel]) -> Self {
        let count = |f: &dyn Fn(&Channel) -> bool| present.iter().filter(|c| f(c)).count().max(1);
        let n_content = count(&|c| c.is_content()) as f32;
        let n_collab = count(&|c| is_collaborative(*c)) as f32;
        let mut w = [0f32; N_CHANNELS];
        for c in present {
            w[c.index()] = if c.is_content() {
                alpha / n_content
            } else if is_collaborative(*c) {
                beta / n_collab
            } else {
                TIE_BREAKER_WEIGHT
            };
        }
        Formula::Weighted(w)
    }

    /// Learned weights for the model channels; content channels keep `alpha` spread over
    /// those present.
    pub fn learned(weights: &ChannelWeights, alpha: f32, present: &[Channel]) -> Self {
        let mut w = match Formula::linear(alpha, 0.0, present) {
            Formula::Weighted(w) => w,
            Formula::Rrf { .. } | Formula::Alone(_) => [0.0; N_CHANNELS],
        };
        for c in present.iter().filter(|c| !c.is_content()) {
            w[c.index()] = weights.get(*c);
        }
        Formula::Weighted(w)
    }

    /// The formula of a concrete fusion mode (`Auto` is resolved by the caller first and
    /// reads as the seed formula here). `Mlp` gives parts without contributions: the
    /// network's probability is not a sum.
    pub fn resolve(fusion: Fusion, learned: Option<&ChannelWeights>, present: &[Channel]) -> Self {
        match (fusion, learned) {
            (Fusion::Linear { alpha, beta }, _) => Formula::linear(alpha, beta, present),
            (Fusion::Rrf { k }, _) => Formula::Rrf { k },
            (Fusion::Learned, Some(w)) => Formula::learned(w, DEFAULT_ALPHA, present),
            (Fusion::Mlp, _) => Formula::Weighted([0.0; N_CHANNELS]),
            (Fusion::Learned | Fusion::Auto, _) => {
                Formula::linear(DEFAULT_ALPHA, DEFAULT_BETA, present)
            }
        }
    }

    /// Channel `c`'s part of the fused score for an item it scored `raw` (`normalized` after
    /// min-max normalisation) at `rank` (1-based).
    pub fn part(&self, c: Channel, raw: f32, normalized: f32, rank: usize) -> f32 {
        match self {
            Formula::Weighted(w) => w[c.index()] * normalized,
            Formula::Rrf { k } => 1.0 / (k + rank as f32),
            Formula::Alone(only) => {
                if c == *only {
                    raw
                } else {
                    0.0
                }
            }
        }
    }
}

fn is_collaborative(c: Channel) -> bool {
    !c.is_content() && !matches!(c, Channel::Popularity | Channel::Content)
}

/// One channel's candidates, indexed for scoring: raw score and rank per item, and the
/// range that normalisation uses.
///
/// A content channel (text, vector) whose best score is positive is scaled by that best
/// score (`max(raw, 0) / best`): BM25 and cosine have a natural zero (no shared term, an
/// unrelated vector), so a candidate keeps its share of the best match, where min-max over
/// the top candidates gives the last one 0 however well it matched. Every other channel, and
/// a content channel with no positive score (Euclidean, scored as the negated distance), is
/// min-max normalised. Chosen on SciFact's training queries (BM25 + MiniLM, equal weights,
/// the vector channel also scoring the text candidates): 0.7375 nDCG@10 against 0.7321 for
/// min-max; the gain comes from the text channel's scale, and the weight between the two
/// channels peaked at equal under both scales.
pub(crate) struct ChannelNorm<K> {
    channel: Channel,
    raw: HashMap<K, (f32, usize)>,
    min: f32,
    max: f32,
    by_best: bool,
}

impl<K: Copy + Eq + Hash> ChannelNorm<K> {
    /// Indexes a channel's hits (best first).
    pub fn new(channel: Channel, hits: &[(K, f32)]) -> Self {
        let max = hits.iter().map(|h| h.1).fold(f32::NEG_INFINITY, f32::max);
        ChannelNorm {
            channel,
            raw: hits
                .iter()
                .enumerate()
                .map(|(r, (i, s))| (*i, (*s, r + 1)))
                .collect(),
            min: hits.iter().map(|h| h.1).fold(f32::INFINITY, f32::min),
            max,
            by_best: channel.is_content() && max > 0.0 && max.is_finite(),
        }
    }

    /// The channel's score of `item`, normalised over its candidates (see the type; 1 when
    /// they all scored the same under min-max), with its part of the fused score under
    /// `formula`.
    pub fn score(&self, item: K, formula: &Formula) -> Option<ChannelScore> {
        let (raw, rank) = *self.raw.get(&item)?;
        let normalized = if self.by_best {
            raw.max(0.0) / self.max
        } else if self.max > self.min {
            (raw - self.min) / (self.max - self.min)
        } else {
            1.0
        };
        Some(ChannelScore {
            channel: self.channel,
            raw,
            normalized,
            rank,
            contribution: formula.part(self.channel, raw, normalized, rank),
            because_of: None,
        })
    }
}

/// Every channel's score of `item` under `formula`, and their sum (the fused score).
pub(crate) fn fuse_item<K: Copy + Eq + Hash>(
    norms: &[ChannelNorm<K>],
    item: K,
    formula: &Formula,
) -> (f32, Vec<ChannelScore>) {
    let parts: Vec<ChannelScore> = norms
        .iter()
        .filter_map(|n| n.score(item, formula))
        .collect();
    (parts.iter().map(|p| p.contribution).sum(), parts)
}

/// The fused score of `item` under `formula`, as [`fuse_item`] sums it, without the parts.
pub(crate) fn fused_sum<K: Copy + Eq + Hash>(
    norms: &[ChannelNorm<K>],
    item: K,
    formula: &Formula,
) -> f32 {
    norms
        .iter()
        .filter_map(|n| n.score(item, formula))
        .map(|p| p.contribution)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_formula_spreads_alpha_and_beta_over_the_channels_present() {
        let present = [
            Channel::Text,
            Channel::Vector,
            Channel::Mf,
            Channel::Popularity,
        ];
        let f = Formula::linear(0.6, 0.4, &present);
        assert!((f.part(Channel::Text, 9.0, 1.0, 1) - 0.3).abs() < 1e-6);
        assert!((f.part(Channel::Vector, 9.0, 0.5, 3) - 0.15).abs() < 1e-6);
        assert!((f.part(Channel::Mf, 9.0, 1.0, 1) - 0.4).abs() < 1e-6);
        assert!((f.part(Channel::Popularity, 9.0, 1.0, 1) - 0.05).abs() < 1e-6);
        assert_eq!(f.part(Channel::ItemCf, 9.0, 1.0, 1), 0.0, "absent channel");
    }

    #[test]
    fn learned_weights_replace_the_model_channels_only() {
        let mut w = ChannelWeights::seed(0.5);
        w.set(Channel::Mf, 2.0);
        w.set(Channel::Kg, 0.0);
        let present = [Channel::Text, Channel::Mf, Channel::Kg];
        let f = Formula::learned(&w, 0.5, &present);
        assert_eq!(f.part(Channel::Text, 9.0, 1.0, 1), 0.5);
        assert_eq!(f.part(Channel::Mf, 9.0, 0.5, 1), 1.0);
        assert_eq!(f.part(Channel::Kg, 9.0, 1.0, 1), 0.0);
    }

    #[test]
    fn normalisation_and_rrf_parts() {
        let n = ChannelNorm::new(Channel::ItemCf, &[(7u32, 4.0), (3, 2.0), (9, 1.0)]);
        let rrf = Formula::Rrf { k: 60.0 };
        let s = n.score(3, &rrf).unwrap();
        assert_eq!((s.rank, s.raw), (2, 2.0));
        assert!((s.normalized - 1.0 / 3.0).abs() < 1e-6);
        assert!((s.contribution - 1.0 / 62.0).abs() < 1e-6);
        assert!(n.score(4, &rrf).is_none());
        let single = ChannelNorm::new(Channel::Kg, &[(1u32, 0.3)]);
        assert_eq!(single.score(1, &rrf).unwrap().normalized, 1.0);
        let (total, parts) = fuse_item(&[n, single], 1, &Formula::linear(0.5, 0.5, &[]));
        assert_eq!(parts.len(), 1);
        assert_eq!(total, parts[0].contribution);
    }

    #[test]
    fn content_channels_are_scaled_by_their_best_score() {
        let rrf = Formula::Rrf { k: 60.0 };
        let text = ChannelNorm::new(Channel::Text, &[(1u32, 8.0), (2, 4.0), (3, 2.0)]);
        assert_eq!(text.score(1, &rrf).unwrap().normalized, 1.0);
        assert_eq!(text.score(2, &rrf).unwrap().normalized, 0.5);
        assert_eq!(
            text.score(3, &rrf).unwrap().normalized,
            0.25,
            "not 0 as min-max"
        );
        let cosine = ChannelNorm::new(Channel::Vector, &[(1u32, 0.8), (2, -0.2)]);
        assert_eq!(
            cosine.score(2, &rrf).unwrap().normalized,
            0.0,
            "below 0 counts 0"
        );
        // Euclidean scores are negated distances: no natural zero, so min-max.
        let l2 = ChannelNorm::new(Channel::Vector, &[(1u32, -1.0), (2, -2.0), (3, -3.0)]);
        assert_eq!(l2.score(2, &rrf).unwrap().normalized, 0.5);
        // Model channels keep min-max.
        let cf = ChannelNorm::new(Channel::ItemCf, &[(1u32, 8.0), (2, 4.0), (3, 2.0)]);
        assert_eq!(cf.score(3, &rrf).unwrap().normalized, 0.0);
    }
}
