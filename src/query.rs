//! The one call: `Engine::query` retrieves candidates from every channel, normalises their
//! scores, fuses them, applies business rules and explains each hit.
//!
//! Channels: BM25 text, ANN vector, item-CF from the user's recent history, user-CF, matrix
//! factorisation, knowledge-graph relatedness, popularity. With text or a vector the query is a
//! search and the collaborative channels re-rank its candidates; without them it is a
//! recommendation and every channel proposes candidates. Every channel honours the filter.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::catalog::{ItemId, Product};
pub use crate::channel::{Channel, ChannelScore, Fusion};
use crate::channel::{ChannelHits, Reason, Request, Retriever, TextChannel, VectorChannel};
use crate::error::{Error, Result};
use crate::events::EventKind;
use crate::exposure::{Candidate, Exposure};
use crate::filter::Filter;
use crate::generation::ModelSet;
use crate::options::HistoryRule;
use crate::rerank::FuseInput;
use crate::state::State;

/// A request to [`Engine::query`](crate::Engine::query). Text alone is a search, a user alone is a recommendation,
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
    exposure: Exposure,
    mmr: Option<f32>,
    exclude_purchased: bool,
    explain: bool,
    candidates: usize,
    time_budget: Option<Duration>,
    typos: bool,
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
            exposure: Exposure::default(),
            mmr: None,
            exclude_purchased: true,
            explain: false,
            candidates: crate::rerank::CANDIDATES,
            time_budget: None,
            typos: true,
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
    /// Exposure controls for the page: a brand's share, a long-tail share, popularity
    /// debiasing (see [`Exposure`]); checked when the query runs.
    pub fn exposure(mut self, exposure: Exposure) -> Self {
        self.exposure = exposure;
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
    /// Typo tolerance of the text channel (on by default): a word of 5 or more letters that
    /// no product contains is searched as the indexed words one edit away (two from 9
    /// letters), the most frequent first, weighted below exact matches. Chinese words are
    /// never corrected.
    pub fn typos(mut self, yes: bool) -> Self {
        self.typos = yes;
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

/// Why a hit is there.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Explanation {
    /// Every channel that scored the item.
    pub channels: Vec<ChannelScore>,
    /// The id of the history item behind the first channel that names one ("because you
    /// viewed X"); each channel's own is in [`ChannelScore::because_of`].
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
                Channel::Kg => {
                    if let Some(e) = &self.kg_entity {
                        write!(f, " (via {e})")?;
                    }
                }
                _ => {}
            }
            if let Some(b) = &c.because_of {
                write!(f, " (because of {b})")?;
            }
            writeln!(f)?;
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        Ok(())
    }
}

/// A result of [`Engine::query`](crate::Engine::query).
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

/// A fused candidate on its way to the page: item, score, channel parts, record.
type Ranked = (ItemId, f32, Vec<ChannelScore>, Arc<Product>);

/// Maximal marginal relevance over the best `max(10 k, 100)` hits: each pick maximises
/// `lambda * relevance - (1 - lambda) * max similarity to the picks so far`, with relevance
/// min-max normalised and similarity the cosine of product embeddings (0 without one).
fn mmr(
    state: &State,
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
            state
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
pub(crate) fn validate(state: &State, q: &Query) -> Result<()> {
    let limits = &state.config.limits;
    state.check_k(q.k)?;
    if q.candidates == 0 || q.candidates > limits.max_candidates {
        return Err(Error::LimitExceeded {
            what: "candidates per channel",
            got: q.candidates,
            limit: limits.max_candidates,
        });
    }
    q.filter.validate(limits)?;
    if let Some(t) = &q.text {
        state.check_query_text(t)?;
    }
    if let Some(v) = &q.vector {
        crate::catalog::validate_vector(v, state.config.dim)?;
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
    q.exposure.validate()?;
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
pub(crate) fn run(state: &State, q: &Query) -> Result<Vec<Hit>> {
    let limits = state.config.limits.clone();
    let deadline = Deadline::new(q, limits.max_query_time);
    // Before any lock is taken: the encoder runs for milliseconds.
    let text_vector = match (&q.vector, &q.similar_to) {
        (None, None) => state.embed_query(q.text.as_deref())?,
        _ => None,
    };
    deadline.check("the user's history")?;
    let models: Option<Arc<ModelSet>> = state.models.read().clone();
    let mut notes = Vec::new();
    if models.is_none() {
        notes.push(
            "cold start: no trained models; text, vector and knowledge graph only".to_string(),
        );
    }
    if let (Some(encoder), Some(_), None, None) =
        (&state.missing_encoder, &q.text, &q.vector, &q.similar_to)
    {
        notes.push(format!(
            "the database's vectors come from the encoder {encoder}; opened without it, the \
             text is searched by its words only (open with the encoder: \
             EngineBuilder::embedder, shopdb --embedder)"
        ));
    }
    let items = state.items.read();

    // The shopper's recent history, live from the log (a new event counts at once), weighed
    // by the rule the model generation was trained with.
    let default_rule;
    let rule = match &models {
        Some(m) => &m.history_rule,
        None => {
            default_rule = HistoryRule::default();
            &default_rule
        }
    };
    let mut history: Vec<(u32, f32)> = Vec::new();
    let mut recent: Vec<u32> = Vec::new();
    let mut purchased: Vec<ItemId> = Vec::new();
    let uid = q.user.as_deref().and_then(|u| state.users.read().get(u));
    if let Some(user) = &q.user {
        match uid {
            Some(u) => {
                let evs = state.user_events(u, Some(crate::options::HISTORY_EVENTS))?;
                let live = || {
                    evs.iter()
                        .filter(|e| items.get(e.item).is_some())
                        .map(|e| (e.item.0, e.kind, e.ts))
                };
                history = rule.history(live());
                recent = rule.recent(live());
                if history.is_empty() {
                    notes.push(format!(
                        "cold start: user {user:?} has no history of products still in the catalog"
                    ));
                }
                purchased = evs
                    .iter()
                    .filter(|e| e.kind == EventKind::Purchase)
                    .map(|e| e.item)
                    .collect();
            }
            None => notes.push(format!("cold start: user {user:?} has no history")),
        }
    }
    let mut seed_item = None;
    if let Some(item) = &q.similar_to {
        let iid = items
            .live_iid(item)
            .ok_or_else(|| Error::UnknownItem(item.clone()))?;
        seed_item = Some(iid);
        if history.is_empty() {
            history = vec![(iid.0, 1.0)];
            recent = vec![iid.0];
        }
    }
    let query_vector = match (&q.vector, seed_item) {
        (Some(v), _) => Some(v.clone()),
        (None, Some(iid)) => state.vectors.vector(iid),
        (None, None) => text_vector,
    };
    let searching = q.text.is_some() || q.vector.is_some();
    // A cold start is asked anonymously: the user's trained factors, if any, were fitted on
    // products that are gone.
    let asking = uid
        .map(|u| u.0)
        .filter(|_| !crate::rerank::cold_start(searching, &history));
    let (user, known, known_recent) = match &models {
        Some(m) => {
            let (user, known) = m.models.known(asking, &history);
            (user, known, m.models.known_recent(&recent))
        }
        None => (None, Vec::new(), Vec::new()),
    };
    let req = Request {
        user,
        history: &known,
        recent: &known_recent,
        text: q.text.as_deref(),
        vector: query_vector.as_deref(),
        filter: &q.filter,
        typos: q.typos,
    };
    let ok = |i: u32| -> bool {
        let iid = ItemId(i);
        items.get(iid).is_some_and(|p| q.filter.matches(p))
            && Some(iid) != seed_item
            && !(q.exclude_purchased && purchased.contains(&iid))
    };

    // Content channels first: with text or a vector the query is a search.
    let n = q.candidates;
    let mut channels: Vec<(Channel, ChannelHits)> = Vec::new();
    let synonyms = q
        .text
        .as_deref()
        .map(|t| state.synonyms.read().expand(&crate::text::analyze(t)))
        .unwrap_or_default();
    let text = TextChannel {
        index: &state.text,
        synonyms: &synonyms,
    };
    let vector = VectorChannel {
        index: &state.vectors,
        items: &items,
        text: &state.text,
        exact_scan_below: state.config.hnsw.exact_scan_below,
        max_k: limits.max_k,
    };
    for (stage, channel) in [
        ("the text channel", &text as &dyn Retriever),
        ("the vector channel", &vector),
    ] {
        deadline.check(stage)?;
        if let Some(hits) = channel.propose(&req, n, &ok)? {
            channels.push((channel.channel(), hits));
        }
    }
    // Each content channel also scores the others' candidates it did not propose (the vector
    // channel gives a text candidate its real similarity; the text channel only proposes).
    let content = crate::channel::union(&channels, &ok);
    for (c, hits) in channels.iter_mut() {
        let Some(channel) = [&text as &dyn Retriever, &vector]
            .into_iter()
            .find(|r| r.channel() == *c)
        else {
            continue;
        };
        let proposed: HashSet<u32> = hits.iter().map(|(i, _)| *i).collect();
        let missing: Vec<u32> = content
            .iter()
            .copied()
            .filter(|i| !proposed.contains(i))
            .collect();
        if missing.is_empty() {
            continue;
        }
        if let Some(more) = channel.score(&req, &missing) {
            hits.extend(more);
            hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        }
    }
    deadline.check("the model channels")?;
    if let Some(m) = &models {
        let model_hits = if searching {
            // A search: the collaborative channels score its content candidates only.
            let content = crate::channel::union(&channels, &ok);
            m.models.score(&req, &content)
        } else {
            m.models.propose(&req, n, &ok)?
        };
        channels.extend(model_hits);
    }
    if channels.iter().all(|(_, h)| h.is_empty()) && !searching {
        notes.push("no channel had candidates".to_string());
    }

    // Candidate set: a search keeps its content candidates; a recommendation takes all.
    let proposing = channels
        .iter()
        .filter(|(c, _)| !searching || c.is_content());
    let cands = crate::channel::union(proposing, &ok);

    deadline.check("fusion")?;
    let info = |i: u32| items.facts(i);
    let fused = crate::rerank::fuse(&FuseInput {
        fusion: q.fusion,
        searching,
        cands: &cands,
        channels: &channels,
        models: models.as_deref().map(|m| &m.models),
        ranker: models.as_deref().and_then(|m| m.mlp.as_ref()),
        history: &history,
        info: &info,
        explain: q.explain,
    });
    notes.extend(fused.notes);
    let mut parts = fused.parts.into_iter();
    let mut hits: Vec<(ItemId, f32, Vec<ChannelScore>)> = cands
        .iter()
        .zip(fused.scores)
        .map(|(i, score)| (ItemId(*i), score, parts.next().unwrap_or_default()))
        .collect();
    hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if let Some(lambda) = q.mmr {
        hits = mmr(state, hits, lambda, q.k);
    }

    // Business rules and exposure controls cut the page: at most `max_per_brand` per brand
    // and the exposure's share cap, long-tail quota and debiasing (`exposure::page`).
    let hits: Vec<Ranked> = hits
        .into_iter()
        .filter_map(|(iid, s, parts)| items.get(iid).map(|p| (iid, s, parts, Arc::clone(p))))
        .collect();
    // Only the long-tail share and debiasing read popularity: without them every query
    // skips the lookups.
    let popularity = models
        .as_deref()
        .filter(|_| q.exposure.reads_popularity())
        .and_then(|m| m.models.typed::<crate::models::Popularity>());
    let page_cands: Vec<Candidate> = hits
        .iter()
        .map(|(iid, score, _, _)| Candidate {
            score: *score,
            popularity: popularity.map_or(0.0, |p| p.item_score(iid.0)),
            long_tail: popularity.is_none_or(|p| !p.in_head(iid.0)),
            brand: items.facts(iid.0).brand,
        })
        .collect();
    let (page, page_notes) = crate::exposure::page(&page_cands, q.k, q.max_per_brand, &q.exposure);
    if q.exposure.is_on() {
        notes.push(q.exposure.describe());
        if q.exposure.reads_popularity() && popularity.is_none() {
            notes.push(
                "exposure: no trained popularity, so every item counts as long tail".to_string(),
            );
        }
        if let Some((asked, filled)) = page_notes.long_tail {
            if filled < asked {
                notes.push(format!(
                    "exposure: {filled} of {asked} long-tail slots filled (too few long-tail candidates)"
                ));
            }
        }
    }
    let mut slots: Vec<Option<Ranked>> = hits.into_iter().map(Some).collect();
    let mut out = Vec::with_capacity(q.k);
    let mut query_terms = q
        .text
        .as_deref()
        .map(crate::text::analyze)
        .unwrap_or_default();
    // What typo tolerance and synonyms searched beyond the words typed (for explanations).
    let mut text_notes = Vec::new();
    if let (true, true, Some(text)) = (q.explain, q.typos, q.text.as_deref()) {
        for c in state.text.explain_typos(text)? {
            let terms: Vec<String> = c
                .terms
                .iter()
                .map(|(t, e)| format!("{t} ({e} edit{})", if *e == 1 { "" } else { "s" }))
                .collect();
            text_notes.push(format!(
                "typo: {:?} searched as {}",
                c.word,
                terms.join(", ")
            ));
            query_terms.extend(c.terms.into_iter().map(|(t, _)| t));
        }
    }
    if q.explain {
        for (word, syn) in &synonyms {
            text_notes.push(format!(
                "synonym: {:?} also searched as {:?}",
                word.join(" "),
                syn.join(" ")
            ));
            query_terms.extend(syn.iter().cloned());
        }
    }
    for i in page {
        let Some((iid, score, parts, p)) = slots.get_mut(i).and_then(Option::take) else {
            continue;
        };
        let explanation = q.explain.then(|| {
            let mut e = Explanation {
                channels: parts,
                notes: notes.iter().chain(&text_notes).cloned().collect(),
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
            if let Some(m) = &models {
                for c in &mut e.channels {
                    let Some(reason) = m.models.get(c.channel).and_then(|r| r.explain(iid.0, &req))
                    else {
                        continue;
                    };
                    match reason {
                        Reason::HistoryItem(h) => {
                            c.because_of = items.name(ItemId(h)).map(str::to_string);
                        }
                        Reason::Entity(ent) => {
                            e.kg_entity = state.kg.read().entities.get(ent as usize).cloned();
                        }
                    }
                }
                // The first channel's history item (the channels are in registry order:
                // item-CF, then content, then sequence).
                e.because_of = e.channels.iter().find_map(|c| c.because_of.clone());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::{EventWeights, RatingWeight, TrainOptions};
    use crate::Engine;
    use crate::Event;

    /// A shop where the kinds of events disagree: who views what, who buys what and what is
    /// rated high follow different item groups, spread over 90 days.
    fn shop(dir: &std::path::Path) -> Engine {
        let engine = Engine::open(dir).expect("open");
        let products: Vec<Product> = (0..40)
            .map(|i| {
                Product::new(format!("p{i}"))
                    .title(format!("product {i}"))
                    .brand(format!("b{}", i % 5))
                    .category(format!("c{}/d{}", i % 4, i % 8))
            })
            .collect();
        engine.upsert_products(products).expect("products");
        let day = 86_400;
        let start = 1_700_000_000;
        let mut events = Vec::new();
        for u in 0..60u32 {
            for j in 0..12u32 {
                let item = (u * 7 + j * 3) % 40;
                let kind = match (u + j) % 4 {
                    0 => EventKind::View,
                    1 => EventKind::Click,
                    2 => EventKind::Purchase,
                    _ => EventKind::Rating(1.0 + ((u * j) % 5) as f32),
                };
                let ts = start + i64::from((u * 13 + j * 11) % 90) * day + i64::from(j);
                events.push(Event::new(format!("u{u}"), format!("p{item}"), kind, ts));
            }
        }
        engine.append_events(events).expect("events");
        engine.commit().expect("commit");
        engine
    }

    /// Item-CF's and KG's raw score of every hit of a recommendation, against each model
    /// scoring the history that training built for the same user under `opts`: the number
    /// of scores compared and the largest relative difference.
    fn served_against_offline(engine: &Engine, opts: &TrainOptions, user: &str) -> (usize, f32) {
        let hits = engine
            .query(
                &Query::new()
                    .user(user)
                    .k(40)
                    .fusion(Fusion::default_linear())
                    .exclude_purchased(false)
                    .explain(true),
            )
            .expect("query");
        let set = engine.state.models.read().clone().expect("trained");
        let ds = crate::train::dataset(&engine.state, opts).expect("dataset");
        let uid = engine.state.users.read().get(user).expect("user").0;
        let csr = ds.data.history_csr(opts.recency).expect("csr");
        let history = csr.row_pairs(uid as usize);
        let items = engine.state.items.read();
        let (mut compared, mut worst) = (0, 0f32);
        for c in [Channel::ItemCf, Channel::Kg] {
            let model = set.models.get(c).expect("channel fitted");
            let mut offline = vec![0f32; ds.data.n_items];
            model.score_all(&Request::shopper(Some(uid), &history), &mut offline);
            for h in &hits {
                let iid = items.lookup(&h.id).expect("id").0 as usize;
                let ex = h.explanation.as_ref().expect("explained");
                if let Some(part) = ex.channels.iter().find(|p| p.channel == c) {
                    let want = offline[iid];
                    worst = worst.max((part.raw - want).abs() / want.abs().max(1e-6));
                    compared += 1;
                }
            }
        }
        (compared, worst)
    }

    #[test]
    fn serving_weighs_the_history_as_training_did() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let engine = shop(tmp.path());
        let opts = TrainOptions {
            weights: EventWeights {
                view: 3.0,
                click: 0.5,
                cart: 1.0,
                purchase: 2.0,
                rating: RatingWeight::Value,
            },
            half_life_days: Some(10.0),
            recency: 0.7,
            tune: None,
            mlp: None,
            ..TrainOptions::default()
        };
        engine.train(&opts).expect("train");
        for user in ["u3", "u17", "u42"] {
            let (compared, worst) = served_against_offline(&engine, &opts, user);
            assert!(compared >= 10, "{user}: only {compared} scores compared");
            assert!(
                worst < 1e-5,
                "{user}: served and offline scores differ by {worst}"
            );
        }
        // The check can fail: the same models scoring the history built with the default
        // weights (what serving used before) differ from what is served.
        let (_, worst) = served_against_offline(&engine, &TrainOptions::default(), "u3");
        assert!(worst > 0.01, "default weights agree too closely ({worst})");
        // And so can the position decay alone: the same weights without it differ too.
        let no_decay = TrainOptions {
            recency: 1.0,
            ..opts.clone()
        };
        let (_, worst) = served_against_offline(&engine, &no_decay, "u3");
        assert!(
            worst > 0.01,
            "no position decay agrees too closely ({worst})"
        );
    }
}
