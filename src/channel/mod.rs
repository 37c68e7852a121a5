//! The ranking half's vocabulary and its channel registry.
//!
//! A **channel** is one way of finding and scoring products for a request: BM25 text, vector
//! nearest neighbours, item-CF, user-CF, matrix factorisation, knowledge-graph relatedness,
//! popularity. Each implements [`Retriever`] in a file of its own in this folder; the model
//! channels (those fitted from the interaction log) are listed once, in [`REGISTRY`], and
//! training, evaluation, the query path, the re-ranker's features, the learned weights and
//! the model file all iterate that list. How to add a channel is in ARCHITECTURE.md.
//!
//! This module sits at the bottom of the ranking half: it imports the models, the catalog
//! and the indexes, never the query path, training or the engine.

mod content;
mod factors;
mod item_cf;
mod kg;
mod mf;
mod popularity;
mod sequence;
mod text;
mod user_cf;
mod vector;

use std::any::Any;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::models::{Interactions, SparseScores};
use crate::options::TrainOptions;

pub(crate) use factors::ItemSide;
pub(crate) use mf::{import as import_mf, IdMap, MfChannel};
pub use mf::{MfFactors, MfImportOptions, MfImportReport};
pub(crate) use sequence::SequenceChannel;
pub(crate) use text::TextChannel;
pub(crate) use vector::{search as search_vectors, VectorChannel};

/// A retrieval channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Channel {
    /// BM25 over title, description, brand and category.
    Text,
    /// Nearest neighbours of the query vector (or of the `similar_to` item's vector).
    Vector,
    /// Item-based CF from the user's recent history (or the `similar_to` item).
    ItemCf,
    /// User-based CF.
    UserCf,
    /// Matrix factorisation.
    Mf,
    /// Knowledge-graph relatedness to the history (or the `similar_to` item).
    Kg,
    /// Items close to the recent history (or the `similar_to` item) by text and product
    /// vector.
    Content,
    /// What comes next after the recent history, in order (a self-attentive sequence model;
    /// fitted only when asked for).
    Sequence,
    /// Popularity: the cold-start fallback.
    Popularity,
}

impl Channel {
    /// Every channel, in declaration order (a channel's index in per-channel tables).
    pub const ALL: [Channel; 9] = [
        Channel::Text,
        Channel::Vector,
        Channel::ItemCf,
        Channel::UserCf,
        Channel::Mf,
        Channel::Kg,
        Channel::Content,
        Channel::Sequence,
        Channel::Popularity,
    ];

    /// The channel's short name (also its key in the model file).
    pub fn name(&self) -> &'static str {
        match self {
            Channel::Text => "bm25",
            Channel::Vector => "vector",
            Channel::ItemCf => "item_cf",
            Channel::UserCf => "user_cf",
            Channel::Mf => "mf",
            Channel::Kg => "kg",
            Channel::Content => "content",
            Channel::Sequence => "sequence",
            Channel::Popularity => "popularity",
        }
    }

    /// The channel of a short name.
    pub fn from_name(name: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Text and vector: the channels that read the request's content, not the log.
    pub(crate) fn is_content(&self) -> bool {
        matches!(self, Channel::Text | Channel::Vector)
    }

    /// The channel's index in [`Channel::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// The seed formula's default weights of the content and the collaborative channels.
pub(crate) const DEFAULT_ALPHA: f32 = 0.5;
pub(crate) const DEFAULT_BETA: f32 = 0.5;

/// How channel scores become one score.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum Fusion {
    /// For recommendations once trained, whichever of the MLP re-ranker and
    /// [`Fusion::Learned`] ranked better on held-out users at training;
    /// [`Fusion::default_linear`] for searches and before training. The default.
    #[default]
    Auto,
    /// The MLP re-ranker's probability (recommendations; searches fall back to linear).
    Mlp,
    /// The seed's formula over normalised scores (the text and vector channels scaled by
    /// their best score, the others min-max):
    /// `alpha * content + beta * collaborative + 0.05 * (popularity + content from the
    /// history)`, where `content` is the mean of the text and vector channels present and
    /// `collaborative` the mean of item-CF, user-CF, MF and KG present.
    Linear {
        /// Weight of the content channels.
        alpha: f32,
        /// Weight of the collaborative channels.
        beta: f32,
    },
    /// Linear fusion with the per-channel weights fitted at training on held-out
    /// interactions, or the one channel that ranked held-out users better than those weights
    /// (recommendations; searches and untrained engines use [`Fusion::default_linear`]).
    Learned,
    /// Reciprocal rank fusion: the sum over channels of `1 / (k + rank)`.
    Rrf {
        /// The rank offset (60 in the original paper).
        k: f32,
    },
}

impl Fusion {
    /// `Linear { alpha: 0.5, beta: 0.5 }`.
    pub fn default_linear() -> Self {
        Fusion::Linear {
            alpha: DEFAULT_ALPHA,
            beta: DEFAULT_BETA,
        }
    }
}

/// One channel's part in a hit.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelScore {
    /// The channel.
    pub channel: Channel,
    /// Its raw score.
    pub raw: f32,
    /// Normalised over the channel's candidates: by the best score for the text and vector
    /// channels (when it is positive), min-max for the others.
    pub normalized: f32,
    /// 1-based rank in the channel.
    pub rank: usize,
    /// What it added to the fused score.
    pub contribution: f32,
    /// The history item behind this channel's score, when it names one (item-CF, content:
    /// the most similar item of the history; sequence: the recent item it attended to most).
    pub because_of: Option<String>,
}

/// Candidates of one channel: `(item, raw score)`, best first.
pub(crate) type ChannelHits = Vec<(u32, f32)>;

/// An item filter as the channels call it (catalog filter, exclusions).
pub(crate) type Allow<'a> = dyn Fn(u32) -> bool + Sync + 'a;

/// What a channel knows of one request.
#[derive(Clone, Copy)]
pub(crate) struct Request<'a> {
    /// The shopper, when the model generation knows them.
    pub user: Option<u32>,
    /// Their history as `(item, weight)`, items the generation knows only, sorted by item.
    pub history: &'a [(u32, f32)],
    /// The same items in the order the shopper last touched them, oldest first (for the
    /// channels that read order); may be empty when the caller has no order.
    pub recent: &'a [u32],
    /// Search text.
    pub text: Option<&'a str>,
    /// Query vector.
    pub vector: Option<&'a [f32]>,
    /// The request's catalog filter (content channels apply it inside their index; every
    /// channel is also given it as a predicate).
    pub filter: &'a Filter,
    /// Whether the text channel corrects words the index does not know.
    pub typos: bool,
}

impl<'a> Request<'a> {
    /// This request with the history's order (`recent`, oldest first).
    pub fn with_recent(self, recent: &'a [u32]) -> Self {
        Request { recent, ..self }
    }

    /// A request from a shopper alone (recommendation; offline evaluation).
    pub fn shopper(user: Option<u32>, history: &'a [(u32, f32)]) -> Self {
        Request {
            user,
            history,
            recent: &[],
            text: None,
            vector: None,
            filter: &Filter::All,
            typos: true,
        }
    }
}

/// What an explanation can say about a channel's score.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reason {
    /// The history item behind the score.
    HistoryItem(u32),
    /// The knowledge-graph entity linking the item to the history.
    Entity(u32),
}

/// A retrieval and scoring channel.
pub(crate) trait Retriever: Send + Sync {
    /// Which channel this is.
    fn channel(&self) -> Channel;

    /// Its best `n` candidates for a request that pass `ok`, best first, positive finite
    /// scores only; `None` when it has nothing to say about this request (no history, an
    /// unknown shopper, no text).
    fn propose(&self, req: &Request<'_>, n: usize, ok: &Allow<'_>) -> Result<Option<ChannelHits>>;

    /// Its scores of given candidates (a personalised search re-ranks its content
    /// candidates), best first, positive finite scores only. `None` when it has nothing to
    /// say, or (the content channels) when it only proposes.
    fn score(&self, req: &Request<'_>, cands: &[u32]) -> Option<ChannelHits>;

    /// Its score of every item into `scores` (offline evaluation of the channel alone);
    /// leaves `scores` as it is when it has nothing to say.
    fn score_all(&self, _req: &Request<'_>, _scores: &mut [f32]) {}

    /// Why it scored `item` for this request, for an explanation.
    fn explain(&self, _item: u32, _req: &Request<'_>) -> Option<Reason> {
        None
    }

    /// Its fitted state, for the model file (model channels).
    fn save(&self) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }

    /// For the few typed reads outside the channel (the re-ranker's item features); model
    /// channels return themselves.
    fn as_any(&self) -> Option<&dyn Any> {
        None
    }

    /// A factor channel's item vectors and the search structures over them, which the model
    /// generation prepares after training and loading (`ModelSet::prepare_item_sides`).
    fn item_side(&self) -> Option<(&factors::ItemSide, factors::Rows<'_>)> {
        None
    }
}

/// What a model channel is fitted on.
pub(crate) struct FitInput<'a> {
    /// The weighted (user, item) interactions.
    pub data: &'a Interactions,
    /// Every model's settings.
    pub opts: &'a TrainOptions,
    /// Category ids (every level) per item.
    pub item_categories: &'a [Vec<u32>],
    /// Knowledge-graph entities per item.
    pub item_entities: &'a [Vec<u32>],
    /// Entities in the dictionary.
    pub n_entities: usize,
    /// What the content channel reads of the catalog.
    pub content: &'a crate::models::ContentInputs,
    /// Which fit this is.
    pub stage: FitStage<'a>,
    /// The noise on shown counts (`count_noise`), for the popularity channel.
    pub noise: Option<crate::noise::CountNoise>,
    /// Where a long fit reports its progress, and the label of this fit.
    pub progress: Option<(&'a crate::progress::Progress, &'a str)>,
}

/// Which of a training's fits a [`FitInput`] is for.
#[derive(Clone, Copy)]
pub(crate) enum FitStage<'a> {
    /// The one fit: these models serve.
    Serve,
    /// A fit on a held-out part of the log, which the re-ranker learns from; it never
    /// serves, so it need not be refitted on everything.
    HeldOut,
    /// The serving fit after a held-out fit: a channel may reuse what it learned there (the
    /// sequence model takes its epoch count instead of early-stopping again).
    ServeAfter(&'a Models),
}

/// A model channel's entry in the registry: how it is fitted and loaded.
pub(crate) struct ChannelSpec {
    /// The channel (its name is the key in the model file).
    pub channel: Channel,
    /// Fits it from the log.
    pub fit: fn(&FitInput<'_>) -> Result<Box<dyn Retriever>>,
    /// Loads what [`Retriever::save`] wrote.
    pub load: fn(&[u8]) -> Result<Box<dyn Retriever>>,
}

/// The model channels, in feature order: fitted by training, scored by evaluation, asked
/// for candidates by every recommendation, read by the re-ranker, weighted by learned
/// fusion, stored in the model file.
pub(crate) const REGISTRY: &[ChannelSpec] = &[
    item_cf::SPEC,
    user_cf::SPEC,
    mf::SPEC,
    kg::SPEC,
    content::SPEC,
    sequence::SPEC,
    popularity::SPEC,
];

/// The model channels of one generation.
pub(crate) struct Models {
    n_users: usize,
    n_items: usize,
    channels: Vec<Box<dyn Retriever>>,
}

impl std::fmt::Debug for Models {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Models")
            .field("n_users", &self.n_users)
            .field("n_items", &self.n_items)
            .field(
                "channels",
                &self
                    .channels
                    .iter()
                    .map(|c| c.channel())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Models {
    /// Channels fitted (in registry order) on a log of `n_users` x `n_items`.
    pub fn new(n_users: usize, n_items: usize, channels: Vec<Box<dyn Retriever>>) -> Self {
        Models {
            n_users,
            n_items,
            channels,
        }
    }

    /// Items the models know (internal ids below this).
    pub fn n_items(&self) -> usize {
        self.n_items
    }

    /// Users the models know (internal ids below this).
    pub fn n_users(&self) -> usize {
        self.n_users
    }

    /// Puts `channel` in the place of the fitted channel of its kind (an imported model);
    /// `false` when the generation has none of that kind.
    pub fn replace(&mut self, channel: Box<dyn Retriever>) -> bool {
        match self
            .channels
            .iter_mut()
            .find(|c| c.channel() == channel.channel())
        {
            Some(slot) => {
                *slot = channel;
                true
            }
            None => false,
        }
    }

    /// The channels, in registry order.
    pub fn iter(&self) -> impl Iterator<Item = &dyn Retriever> {
        self.channels.iter().map(|c| c.as_ref())
    }

    /// The fitted channel of a kind, when present.
    pub fn get(&self, c: Channel) -> Option<&dyn Retriever> {
        self.iter().find(|r| r.channel() == c)
    }

    /// The first channel whose state is a `T` (the re-ranker's typed reads).
    pub fn typed<T: 'static>(&self) -> Option<&T> {
        self.iter()
            .find_map(|r| r.as_any().and_then(|a| a.downcast_ref::<T>()))
    }

    /// A shopper as the models see them: the id when they know it, and the history items
    /// they know.
    pub fn known(
        &self,
        user: Option<u32>,
        history: &[(u32, f32)],
    ) -> (Option<u32>, Vec<(u32, f32)>) {
        let history = history
            .iter()
            .copied()
            .filter(|(i, _)| (*i as usize) < self.n_items)
            .collect();
        (user.filter(|u| (*u as usize) < self.n_users), history)
    }

    /// The items of `recent` (oldest first) the generation knows.
    pub fn known_recent(&self, recent: &[u32]) -> Vec<u32> {
        recent
            .iter()
            .copied()
            .filter(|i| (*i as usize) < self.n_items)
            .collect()
    }

    /// Every channel's candidates for a request that [`Models::known`] normalised.
    pub fn propose(
        &self,
        req: &Request<'_>,
        n: usize,
        ok: &Allow<'_>,
    ) -> Result<Vec<(Channel, ChannelHits)>> {
        let mut out = Vec::with_capacity(self.channels.len());
        for r in self.iter() {
            if let Some(hits) = r.propose(req, n, ok)? {
                out.push((r.channel(), hits));
            }
        }
        Ok(out)
    }

    /// Every channel's scores of given candidates (those the models know).
    pub fn score(&self, req: &Request<'_>, cands: &[u32]) -> Vec<(Channel, ChannelHits)> {
        let cands: Vec<u32> = cands
            .iter()
            .copied()
            .filter(|i| (*i as usize) < self.n_items)
            .collect();
        self.iter()
            .filter_map(|r| r.score(req, &cands).map(|h| (r.channel(), h)))
            .collect()
    }
}

/// The model file's form: each channel's bytes under its name.
#[derive(Serialize, Deserialize)]
struct StoredModels {
    n_users: usize,
    n_items: usize,
    channels: Vec<(String, Vec<u8>)>,
}

impl Serialize for Models {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut channels = Vec::with_capacity(self.channels.len());
        for c in &self.channels {
            let bytes = c.save().map_err(serde::ser::Error::custom)?;
            channels.push((c.channel().name().to_string(), bytes));
        }
        StoredModels {
            n_users: self.n_users,
            n_items: self.n_items,
            channels,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Models {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let stored = StoredModels::deserialize(d)?;
        let mut channels = Vec::with_capacity(stored.channels.len());
        for (name, bytes) in &stored.channels {
            let spec = REGISTRY
                .iter()
                .find(|s| s.channel.name() == name)
                .ok_or_else(|| {
                    serde::de::Error::custom(format!("unknown model channel {name:?}"))
                })?;
            channels.push((spec.load)(bytes).map_err(serde::de::Error::custom)?);
        }
        Ok(Models::new(stored.n_users, stored.n_items, channels))
    }
}

/// A model's state for the model file.
pub(crate) fn save_model<T: Serialize>(model: &T) -> Result<Vec<u8>> {
    crate::codec::encode(model)
}

/// A model's state from the model file.
pub(crate) fn load_model<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &'static str,
) -> Result<T> {
    crate::codec::decode(bytes, what)
}

/// A model error as the channel reports it.
pub(crate) fn model_err(e: crate::models::ModelError) -> Error {
    Error::invalid("training", e.to_string())
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
pub(crate) fn top_sparse(s: SparseScores, n: usize, ok: &dyn Fn(u32) -> bool) -> ChannelHits {
    let v: Vec<(u32, f32)> = s
        .into_entries()
        .into_iter()
        .filter(|(_, x)| x.is_finite() && *x > 0.0)
        .collect();
    top_allowed_of(v, n, ok)
}

/// How a channel that scores from the history alone turns a history into scores.
pub(crate) type HistoryScorer<'a> = dyn Fn(&[(u32, f32)]) -> SparseScores + 'a;

/// Candidates of a channel that scores from the history alone (item-CF, KG): the best `n`
/// of `sparse(history)` that pass `ok`; nothing without a history.
pub(crate) fn history_propose(
    req: &Request<'_>,
    n: usize,
    ok: &Allow<'_>,
    sparse: &HistoryScorer<'_>,
) -> Option<ChannelHits> {
    (!req.history.is_empty()).then(|| top_sparse(sparse(req.history), n, ok))
}

/// Given candidates scored by a channel that scores from the history alone.
pub(crate) fn history_score(
    req: &Request<'_>,
    cands: &[u32],
    sparse: &HistoryScorer<'_>,
) -> Option<ChannelHits> {
    if req.history.is_empty() {
        return None;
    }
    let s = sparse(req.history);
    Some(pick(cands, &|i| s.get(i)))
}

/// Given candidates scored by `score`: positive finite scores, best first.
pub(crate) fn pick(cands: &[u32], score: &dyn Fn(u32) -> f32) -> ChannelHits {
    let mut v: ChannelHits = cands
        .iter()
        .map(|&i| (i, score(i)))
        .filter(|(_, s)| s.is_finite() && *s > 0.0)
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

/// The union of the channels' candidates that pass `ok`, in first-seen order.
pub(crate) fn union<'a>(
    channels: impl IntoIterator<Item = &'a (Channel, ChannelHits)>,
    ok: &dyn Fn(u32) -> bool,
) -> Vec<u32> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_round_trip_and_index_the_table() {
        for (i, c) in Channel::ALL.iter().enumerate() {
            assert_eq!(Channel::from_name(c.name()), Some(*c));
            assert_eq!(c.index(), i);
        }
        assert_eq!(Channel::from_name("nope"), None);
        for spec in REGISTRY {
            assert!(!spec.channel.is_content(), "{:?}", spec.channel);
        }
    }
}
