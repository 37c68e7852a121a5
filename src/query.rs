//! The one call: `Engine::query` retrieves candidates from every channel, normalises their
//! scores, fuses them, applies business rules and explains each hit.
//!
//! Channels: BM25 text, ANN vector, item-CF from the user's recent history, user-CF, matrix
//! factorisation, knowledge-graph relatedness, popularity. With text or a vector the query is a
//! search and the collaborative channels re-rank its candidates; without them it is a
//! recommendation and every channel proposes candidates. Every channel honours the filter.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::catalog::{ItemId, Product};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::events::EventKind;
use crate::filter::Filter;
use crate::fusion::ChannelNorm;
use crate::text::TextQuery;
use crate::train::ModelSet;

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
    /// The seed's formula with min-max normalised scores:
    /// `alpha * content + beta * collaborative + 0.05 * popularity`, where `content` is the
    /// mean of the text and vector channels present and `collaborative` the mean of item-CF,
    /// user-CF, MF and KG present.
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
            alpha: crate::fusion::DEFAULT_ALPHA,
            beta: crate::fusion::DEFAULT_BETA,
        }
    }
}

/// A retrieval channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
    /// Popularity: the cold-start fallback.
    Popularity,
}

impl Channel {
    /// The channel's short name.
    pub fn name(&self) -> &'static str {
        match self {
            Channel::Text => "bm25",
            Channel::Vector => "vector",
            Channel::ItemCf => "item_cf",
            Channel::UserCf => "user_cf",
            Channel::Mf => "mf",
            Channel::Kg => "kg",
            Channel::Popularity => "popularity",
        }
    }

    pub(crate) fn is_content(&self) -> bool {
        matches!(self, Channel::Text | Channel::Vector)
    }
}

/// A request to [`Engine::query`]. Text alone is a search, a user alone is a recommendation,
/// both is a personalised search, `similar_to` is item-to-item.
#[derive(Clone, Debug)]
pub struct Query {
    text: Option<String>,
    vector: Option<Vec<f32>>,
    user: Option<String>,
    similar_to: Option<String>,
    filter: Filter,
    k: usize,
    fusion: Fusion,
    max_per_brand: Option<usize>,
    mmr: Option<f32>,
    exclude_purchased: bool,
    explain: bool,
    candidates: usize,
    time_budget: Option<Duration>,
}

impl Default for Query {
    fn default() -> Self {
        Query {
            text: None,
            vector: None,
            user: None,
            similar_to: None,
            filter: Filter::All,
            k: 10,
            fusion: Fusion::default(),
            max_per_brand: None,
            mmr: None,
            exclude_purchased: true,
            explain: false,
            candidates: crate::rerank::CANDIDATES,
            time_budget: None,
        }
    }
}

impl Query {
    /// An empty query: k = 10, automatic fusion, purchased items excluded, 100 candidates per
    /// channel.
    pub fn new() -> Self {
        Query::default()
    }
    /// Search text.
    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }
    /// Query vector.
    pub fn vector(mut self, vector: Vec<f32>) -> Self {
        self.vector = Some(vector);
        self
    }
    /// The shopper.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }
    /// Items like this one.
    pub fn similar_to(mut self, item: impl Into<String>) -> Self {
        self.similar_to = Some(item.into());
        self
    }
    /// Filter applied in every channel.
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filter = filter;
        self
    }
    /// Number of hits (1..=`Limits::max_k`).
    pub fn k(mut self, k: usize) -> Self {
        self.k = k;
        self
    }
    /// Fusion mode.
    pub fn fusion(mut self, fusion: Fusion) -> Self {
        self.fusion = fusion;
        self
    }
    /// Diversify with maximal marginal relevance: `lambda` 1 keeps the relevance order, lower
    /// values trade relevance for variety (embedding similarity between hits).
    pub fn mmr(mut self, lambda: f32) -> Self {
        self.mmr = Some(lambda.clamp(0.0, 1.0));
        self
    }
    /// At most this many hits per brand.
    pub fn max_per_brand(mut self, n: usize) -> Self {
        self.max_per_brand = Some(n);
        self
    }
    /// Whether items the user bought are left out (default true).
    pub fn exclude_purchased(mut self, yes: bool) -> Self {
        self.exclude_purchased = yes;
        self
    }
    /// Attach an [`Explanation`] to every hit.
    pub fn explain(mut self, yes: bool) -> Self {
        self.explain = yes;
        self
    }
    /// Candidates per channel (1..=`Limits::max_candidates`, default 100: the length the
    /// re-ranker was trained on).
    pub fn candidates(mut self, n: usize) -> Self {
        self.candidates = n;
        self
    }
    /// Stop with [`Error::TimedOut`] rather than start a stage after this much time (capped
    /// by `Limits::max_query_time`). A zero budget lets validation run and nothing else.
    pub fn time_budget(mut self, budget: Duration) -> Self {
        self.time_budget = Some(budget);
        self
    }
}

/// The time a query may still use. Checked between stages: a stage is not interrupted, so a
/// check before each one bounds the overrun by the slowest single stage.
struct Deadline {
    start: Instant,
    budget: Duration,
}

impl Deadline {
    fn new(q: &Query, limit: Duration) -> Self {
        Deadline {
            start: Instant::now(),
            budget: q.time_budget.map_or(limit, |b| b.min(limit)),
        }
    }

    /// `Err(TimedOut)` once the budget is spent (at once for a zero budget).
    fn check(&self, stage: &'static str) -> Result<()> {
        if self.start.elapsed() >= self.budget {
            return Err(Error::TimedOut {
                stage,
                budget: self.budget,
            });
        }
        Ok(())
    }
}

/// One channel's part in a hit.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelScore {
    /// The channel.
    pub channel: Channel,
    /// Its raw score.
    pub raw: f32,
    /// Min-max normalised over the channel's candidates.
    pub normalized: f32,
    /// 1-based rank in the channel.
    pub rank: usize,
    /// What it added to the fused score.
    pub contribution: f32,
}

/// Why a hit is there.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Explanation {
    /// Every channel that scored the item.
    pub channels: Vec<ChannelScore>,
    /// The history item behind the item-CF score.
    pub because_of: Option<String>,
    /// The knowledge-graph entity linking the item to the history.
    pub kg_entity: Option<String>,
    /// Query terms found in the item's text.
    pub matched_terms: Vec<String>,
    /// Cold start and other notes.
    pub notes: Vec<String>,
}

impl std::fmt::Display for Explanation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in &self.channels {
            write!(
                f,
                "{}: raw {:.4}, norm {:.3}, rank {}, +{:.4}",
                c.channel.name(),
                c.raw,
                c.normalized,
                c.rank,
                c.contribution
            )?;
            match c.channel {
                Channel::Text if !self.matched_terms.is_empty() => {
                    write!(f, " (matched {})", self.matched_terms.join(", "))?
                }
                Channel::ItemCf => {
                    if let Some(b) = &self.because_of {
                        write!(f, " (because of {b})")?;
                    }
                }
                Channel::Kg => {
                    if let Some(e) = &self.kg_entity {
                        write!(f, " (via {e})")?;
                    }
                }
                _ => {}
            }
            writeln!(f)?;
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        Ok(())
    }
}

/// A result of [`Engine::query`].
#[derive(Clone, Debug)]
pub struct Hit {
    /// Product id.
    pub id: String,
    /// Fused score, larger is better.
    pub score: f32,
    /// The product record (without its embedding).
    pub product: Arc<Product>,
    /// Why it is here, when asked for.
    pub explanation: Option<Explanation>,
}

/// Event weights for the live history (the same order as training's defaults).
fn history_weight(kind: EventKind) -> f32 {
    match kind {
        EventKind::View => 1.0,
        EventKind::Click => 2.0,
        EventKind::Cart => 4.0,
        EventKind::Purchase => 8.0,
        EventKind::Rating(_) => 1.0,
    }
}

/// Most recent history events used by the CF channels.
const HISTORY: usize = 100;

type ChannelHits = Vec<(ItemId, f32)>;

/// Maximal marginal relevance over the best `max(10 k, 100)` hits: each pick maximises
/// `lambda * relevance - (1 - lambda) * max similarity to the picks so far`, with relevance
/// min-max normalised and similarity the cosine of product embeddings (0 without one).
fn mmr(
    engine: &Engine,
    hits: Vec<(ItemId, f32, Vec<ChannelScore>)>,
    lambda: f32,
    k: usize,
) -> Vec<(ItemId, f32, Vec<ChannelScore>)> {
    let pool = (k * 10).max(100).min(hits.len());
    let (mut head, tail): (Vec<_>, Vec<_>) = {
        let mut h = hits;
        let t = h.split_off(pool);
        (h, t)
    };
    let max = head.iter().map(|h| h.1).fold(f32::NEG_INFINITY, f32::max);
    let min = head.iter().map(|h| h.1).fold(f32::INFINITY, f32::min);
    let rel = |s: f32| {
        if max > min {
            (s - min) / (max - min)
        } else {
            1.0
        }
    };
    let vecs: HashMap<ItemId, Vec<f32>> = head
        .iter()
        .filter_map(|h| {
            engine
                .vectors
                .vector(h.0)
                .map(|v| (h.0, crate::vector::unit(&v)))
        })
        .collect();
    let sim = |a: ItemId, b: ItemId| match (vecs.get(&a), vecs.get(&b)) {
        (Some(x), Some(y)) => x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>(),
        _ => 0.0,
    };
    let mut picked: Vec<(ItemId, f32, Vec<ChannelScore>)> = Vec::with_capacity(head.len());
    while !head.is_empty() {
        let best = head
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let redundancy = picked.iter().map(|p| sim(h.0, p.0)).fold(0.0, f32::max);
                (i, lambda * rel(h.1) - (1.0 - lambda) * redundancy)
            })
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
            .map(|(i, _)| i)
            .unwrap_or(0);
        picked.push(head.remove(best));
    }
    picked.extend(tail);
    picked
}

/// Every limit and value check of a query, done before any work (and before the query is
/// formatted as a cache key, which costs time in proportion to its size).
pub(crate) fn validate(engine: &Engine, q: &Query) -> Result<()> {
    let limits = &engine.config().limits;
    engine.check_k(q.k)?;
    if q.candidates == 0 || q.candidates > limits.max_candidates {
        return Err(Error::LimitExceeded {
            what: "candidates per channel",
            got: q.candidates,
            limit: limits.max_candidates,
        });
    }
    q.filter.validate(limits)?;
    if let Some(t) = &q.text {
        engine.check_query_text(t)?;
    }
    if let Some(v) = &q.vector {
        crate::catalog::validate_vector(v, engine.config().dim)?;
    }
    if let Some(user) = &q.user {
        crate::catalog::validate_id("query.user", user, limits)?;
    }
    if let Some(item) = &q.similar_to {
        crate::catalog::validate_id("query.similar_to", item, limits)?;
    }
    if q.mmr.is_some_and(f32::is_nan) {
        return Err(Error::invalid("query.mmr", "lambda is NaN"));
    }
    validate_fusion(q.fusion)
}

/// Fusion weights must be finite (and the RRF offset not negative): anything else turns
/// every score into NaN or infinity.
fn validate_fusion(fusion: Fusion) -> Result<()> {
    let ok = match fusion {
        Fusion::Linear { alpha, beta } => alpha.is_finite() && beta.is_finite(),
        Fusion::Rrf { k } => k.is_finite() && k >= 0.0,
        Fusion::Auto | Fusion::Mlp | Fusion::Learned => true,
    };
    if !ok {
        return Err(Error::invalid(
            "query.fusion",
            format!("{fusion:?}: weights must be finite, the RRF offset not negative"),
        ));
    }
    Ok(())
}

/// Runs a query that [`validate`] accepted.
pub(crate) fn run(engine: &Engine, q: &Query) -> Result<Vec<Hit>> {
    let limits = engine.config().limits.clone();
    let deadline = Deadline::new(q, limits.max_query_time);
    deadline.check("the user's history")?;
    let models: Option<Arc<ModelSet>> = engine.models.read().clone();
    let mut notes = Vec::new();
    if models.is_none() {
        notes.push(
            "cold start: no trained models; text, vector and knowledge graph only".to_string(),
        );
    }

    // The shopper's recent history, live from the log (a new event counts at once).
    let mut history: Vec<(u32, f32)> = Vec::new();
    let mut purchased: Vec<ItemId> = Vec::new();
    if let Some(user) = &q.user {
        match engine.users.read().get(user) {
            Some(u) => {
                let evs = engine.user_events(u, Some(HISTORY))?;
                let mut agg: HashMap<u32, f32> = HashMap::new();
                for e in &evs {
                    *agg.entry(e.item.0).or_default() += history_weight(e.kind);
                    if e.kind == EventKind::Purchase {
                        purchased.push(e.item);
                    }
                }
                history = agg.into_iter().collect();
                history.sort_unstable_by_key(|h| h.0);
            }
            None => notes.push(format!("cold start: user {user:?} has no history")),
        }
    }
    let mut seed_item = None;
    if let Some(item) = &q.similar_to {
        let iid = engine
            .items
            .read()
            .live_iid(item)
            .ok_or_else(|| Error::UnknownItem(item.clone()))?;
        seed_item = Some(iid);
        if history.is_empty() {
            history = vec![(iid.0, 1.0)];
        }
    }

    let n = q.candidates;
    let mut channels: Vec<(Channel, ChannelHits)> = Vec::new();
    let searching = q.text.is_some() || q.vector.is_some();
    if let Some(text) = &q.text {
        deadline.check("the text channel")?;
        let hits = engine.text.search(&TextQuery {
            text,
            filter: &q.filter,
            limit: n,
            title_boost: 0.0,
            fuzzy: true,
        })?;
        channels.push((
            Channel::Text,
            hits.into_iter().map(|h| (h.item, h.score)).collect(),
        ));
    }
    let query_vector = match (&q.vector, seed_item) {
        (Some(v), _) => Some(v.clone()),
        (None, Some(iid)) => engine.vectors.vector(iid),
        _ => None,
    };
    if let Some(v) = query_vector {
        deadline.check("the vector channel")?;
        // One more than asked, as the `similar_to` item itself is usually the nearest.
        let hits = engine.vector_hits(&v, &q.filter, (n + 1).min(limits.max_k))?;
        channels.push((Channel::Vector, hits));
    }
    deadline.check("the model channels")?;
    finish(
        engine,
        q,
        models.as_deref(),
        channels,
        &history,
        &purchased,
        seed_item,
        searching,
        notes,
        &deadline,
    )
}

/// The concrete fusion a call uses: `Auto` becomes what ranked best on held-out users at
/// training; the trained modes fall back to the seed formula (with a note) for searches and
/// untrained engines.
fn resolve_fusion(
    asked: Fusion,
    ranker: Option<&crate::rerank::TrainedRanker>,
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

#[allow(clippy::too_many_arguments)]
fn finish(
    engine: &Engine,
    q: &Query,
    models: Option<&ModelSet>,
    mut channels: Vec<(Channel, ChannelHits)>,
    history: &[(u32, f32)],
    purchased: &[ItemId],
    seed_item: Option<ItemId>,
    searching: bool,
    mut notes: Vec<String>,
    deadline: &Deadline,
) -> Result<Vec<Hit>> {
    let uid = q.user.as_deref().and_then(|u| engine.users.read().get(u));
    let items = engine.items.read();
    let ok = |iid: ItemId| -> bool {
        items.get(iid).is_some_and(|p| q.filter.matches(p))
            && Some(iid) != seed_item
            && !(q.exclude_purchased && purchased.contains(&iid))
    };
    let n = q.candidates;
    if let Some(m) = models {
        let ok32 = |i: u32| ok(ItemId(i));
        let user = uid.map(|u| u.0);
        let model_hits = if searching {
            // A search: the collaborative channels score its content candidates only.
            let mut content: Vec<u32> = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for (_, hits) in &channels {
                for (i, _) in hits {
                    if ok(*i) && seen.insert(i.0) {
                        content.push(i.0);
                    }
                }
            }
            crate::rerank::model_scores_for(&m.base, m.n_users, user, history, &content)
        } else {
            crate::rerank::model_channels(
                &m.base,
                m.n_users,
                user,
                history,
                n,
                &ok32,
                m.factor_index.get(),
            )
        };
        channels.extend(
            model_hits
                .into_iter()
                .map(|(c, hits)| (c, hits.into_iter().map(|(i, s)| (ItemId(i), s)).collect())),
        );
    }
    if channels.iter().all(|(_, h)| h.is_empty()) && !searching {
        notes.push("no channel had candidates".to_string());
    }

    // Candidate set: a search keeps its content candidates; a recommendation takes all.
    let mut cands: Vec<ItemId> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (c, hits) in &channels {
        if searching && !c.is_content() {
            continue;
        }
        for (i, _) in hits {
            if ok(*i) && seen.insert(*i) {
                cands.push(*i);
            }
        }
    }

    deadline.check("fusion")?;
    // Fusion: once trained, recommendations use what ranked best on held-out users; searches
    // use the linear formula.
    let ranker = models.and_then(|m| m.mlp.as_ref().map(|r| (m, r)));
    let fusion = resolve_fusion(q.fusion, ranker.map(|(_, r)| r), searching, &mut notes);
    let mlp_scores: Option<HashMap<ItemId, f32>> = match (fusion, ranker) {
        (Fusion::Mlp, Some((m, ranker))) => {
            let net = &ranker.mlp;
            let info = |i: u32| items.facts(i);
            let c32: Vec<u32> = cands.iter().map(|i| i.0).collect();
            let model_chans: Vec<(Channel, crate::rerank::ChannelHits)> = channels
                .iter()
                .filter(|(c, _)| !c.is_content())
                .map(|(c, h)| (*c, h.iter().map(|(i, s)| (i.0, *s)).collect()))
                .collect();
            let ctx = crate::rerank::UserContext::new(history, &info);
            let x = crate::rerank::features(&c32, &model_chans, &m.base, &ctx, &info);
            let p = net
                .predict(x.view())
                .map_err(|e| Error::invalid("re-ranker", e.to_string()))?;
            notes.push("fused by the MLP re-ranker".to_string());
            Some(cands.iter().copied().zip(p.iter().copied()).collect())
        }
        _ => None,
    };
    let present: Vec<Channel> = channels.iter().map(|(c, _)| *c).collect();
    let formula =
        crate::fusion::Formula::resolve(fusion, ranker.map(|(_, r)| &r.weights), &present);
    if fusion == Fusion::Learned {
        notes.push("fused with the channel weights learned at training".to_string());
    }

    // Each channel's normalised score and part; for a search, CF channels score the content
    // candidates.
    let norms: Vec<ChannelNorm<ItemId>> = channels
        .iter()
        .map(|(c, hits)| ChannelNorm::new(*c, hits))
        .collect();
    let mut hits: Vec<(ItemId, f32, Vec<ChannelScore>)> = cands
        .into_iter()
        .map(|i| {
            let (sum, parts) = crate::fusion::fuse_item(&norms, i, &formula);
            let score = match &mlp_scores {
                Some(m) => m.get(&i).copied().unwrap_or(0.0),
                None => sum,
            };
            (i, score, parts)
        })
        .collect();
    hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if let Some(lambda) = q.mmr {
        hits = mmr(engine, hits, lambda, q.k);
    }

    // Business rules: at most `max_per_brand` per brand, then the top k.
    let mut per_brand: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(q.k);
    let query_terms = q
        .text
        .as_deref()
        .map(crate::text::analyze)
        .unwrap_or_default();
    let kg_names = engine.kg.read();
    for (iid, score, parts) in hits {
        let Some(p) = items.get(iid) else { continue };
        if let Some(cap) = q.max_per_brand {
            let c = per_brand.entry(p.brand.to_lowercase()).or_default();
            if *c >= cap {
                continue;
            }
            *c += 1;
        }
        let explanation = q.explain.then(|| {
            let mut e = Explanation {
                channels: parts,
                notes: notes.clone(),
                ..Explanation::default()
            };
            if !query_terms.is_empty() {
                let doc_terms = crate::text::analyze(&format!(
                    "{} {} {} {}",
                    p.title,
                    p.description,
                    p.brand,
                    p.category.replace('/', " ")
                ));
                e.matched_terms = query_terms
                    .iter()
                    .filter(|t| doc_terms.contains(t))
                    .cloned()
                    .collect();
            }
            if let Some(m) = models {
                if e.channels.iter().any(|c| c.channel == Channel::ItemCf) {
                    e.because_of = m
                        .base
                        .item_cf
                        .explain(iid.0, history)
                        .and_then(|(h, _)| items.name(ItemId(h)).map(str::to_string));
                }
                if e.channels.iter().any(|c| c.channel == Channel::Kg) {
                    e.kg_entity = m
                        .base
                        .kg
                        .explain(iid.0, history)
                        .and_then(|(h, _)| m.base.kg.best_link(iid.0, h))
                        .and_then(|(ent, _)| kg_names.entities.get(ent as usize).cloned());
                }
            }
            e
        });
        out.push(Hit {
            id: p.id.clone(),
            score,
            product: p.clone(),
            explanation,
        });
        if out.len() >= q.k {
            break;
        }
    }
    Ok(out)
}
