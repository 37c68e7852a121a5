//! `Engine`: open/create a database directory, the writer, commit and recovery.
//!
//! Directory layout:
//!
//! ```text
//! DIR/LOCK          advisory lock: one writing process per directory
//! DIR/config.json   settings that fix the format (dimension, metric, analyzer)
//! DIR/store/        sled: the source of truth (products, events, graph, change log)
//! DIR/text/         tantivy: derived BM25 index, commit payload = applied sequence
//! DIR/vectors/      hnsw_rs snapshots: MANIFEST + gen-NNNNNN/ directories
//! DIR/models/       trained models (checksummed files)
//! ```

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde::Serialize;

use crate::catalog::{validate_id, validate_vector, ItemId, Product};
use crate::config::{Config, HnswParams, Limits, Metric, StoredConfig};
use crate::error::{Error, Result};
use crate::events::now_secs;
use crate::events::{self, Event};
use crate::filter::Filter;
use crate::graph::{self, Dictionary};
use crate::state::State;
use crate::store::Store;
use crate::text::{TextIndex, TextQuery};
use crate::vector::{LoadOutcome, VectorIndex};
use crate::writer::{Committed, Op};

/// Builder for [`Engine`] with documented defaults (see [`Config`]).
#[derive(Clone, Debug, Default)]
pub struct EngineBuilder {
    config: Config,
    explicit_dim: bool,
    explicit_metric: bool,
}

impl EngineBuilder {
    /// Vector dimension (default 64). Fixed when the directory is created; reopening with a
    /// different value is [`Error::ConfigMismatch`]. Left unset, an existing directory's value
    /// is used.
    pub fn dim(mut self, dim: usize) -> Self {
        self.config.dim = dim;
        self.explicit_dim = true;
        self
    }

    /// Vector metric (default cosine); fixed like the dimension.
    pub fn metric(mut self, metric: Metric) -> Self {
        self.config.metric = metric;
        self.explicit_metric = true;
        self
    }

    /// Input limits (default [`Limits::default`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.config.limits = limits;
        self
    }

    /// HNSW parameters (default [`HnswParams::default`]).
    pub fn hnsw(mut self, params: HnswParams) -> Self {
        self.config.hnsw = params;
        self
    }

    /// Whether `commit` fsyncs (default true).
    pub fn durable_commits(mut self, durable: bool) -> Self {
        self.config.durable_commits = durable;
        self
    }

    /// Opens the database in `dir`, creating it when absent, and recovers derived indexes.
    ///
    /// # Errors
    /// [`Error::Locked`] when another process has it open, [`Error::ConfigMismatch`] when a
    /// persisted setting differs, [`Error::Io`] and [`Error::Corrupt`] for damaged stores.
    pub fn open(self, dir: impl AsRef<Path>) -> Result<Engine> {
        Engine::open_with(dir.as_ref(), self)
    }
}

/// What `open` found and repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Product changes replayed into the text index.
    pub text_replayed: usize,
    /// The text index was rebuilt from the catalog (new, damaged, or behind a compacted log).
    pub text_rebuilt: bool,
    /// Product changes replayed into the vector index.
    pub vector_replayed: usize,
    /// The vector index was rebuilt from the catalog's vectors.
    pub vector_rebuilt: bool,
    /// The vector snapshot failed its checksum (and was rebuilt).
    pub vector_snapshot_damaged: bool,
    /// The stored model generation could not be loaded (the engine serves without models
    /// until the next training); the reason.
    pub model_error: Option<String>,
}

/// Counts and sizes, for `SHOW STATS` and tests.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Stats {
    /// Last committed sequence number.
    pub seq: u64,
    /// Live products in the catalog.
    pub products: usize,
    /// Documents in the text index.
    pub text_docs: u64,
    /// Live vectors in the vector index.
    pub vectors: usize,
    /// Graph nodes including tombstones.
    pub vector_slots: usize,
    /// Stored events.
    pub events: u64,
    /// Users with at least one event.
    pub users: usize,
    /// Named knowledge-graph entities: brands, category levels, imported entities, and the
    /// products that a triple or link names (every product is implicitly `item:<id>`).
    pub entities: usize,
    /// Knowledge-graph relation types.
    pub relations: usize,
    /// Bytes used by the store.
    pub store_bytes: u64,
    /// Bytes used by the text index.
    pub text_bytes: u64,
}

/// Entries kept by the hot-query cache before it starts over.
const QUERY_CACHE_ENTRIES: usize = 1024;

#[derive(Default)]
struct QueryCache {
    generation: u64,
    entries: HashMap<String, Vec<crate::query::Hit>>,
    hits: u64,
    misses: u64,
}

/// Facet counts of a search.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facets {
    /// `(brand, matching products)`.
    pub brands: Vec<(String, usize)>,
    /// `(category path, matching products)`, every level of the tree.
    pub categories: Vec<(String, usize)>,
}

/// A scored item returned by a single channel search.
#[derive(Clone, Debug, PartialEq)]
pub struct Scored {
    /// External product id.
    pub id: String,
    /// Channel score, larger is better.
    pub score: f32,
}

/// Result of appending events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Appended {
    /// Events staged.
    pub staged: usize,
}

#[derive(Default)]
struct Pending {
    ops: Vec<Op>,
    /// Ids that will be live after the pending ops (for validating events).
    upserted: HashSet<String>,
    deleted: HashSet<String>,
}

/// The database. Share it as `Arc<Engine>`: reads take `&self` and run concurrently with the
/// one writer; writes are staged and become visible together at [`Engine::commit`].
pub struct Engine {
    /// What queries read, commits publish and training reads.
    pub(crate) state: State,
    _lock: File,
    pending: Mutex<Pending>,
    /// Serialises commits (the pending buffer lock is released while a commit runs so that
    /// staging does not wait on I/O).
    commit_lock: Mutex<()>,
    recovery: Recovery,
    /// One training at a time.
    training_lock: Mutex<()>,
    retrain: Mutex<Option<crate::train::RetrainPolicy>>,
    query_cache: Mutex<QueryCache>,
    /// (events, time) at the last training, for the retrain policy.
    last_training: Mutex<(u64, std::time::Instant)>,
}

/// A derived index records the store sequence it applied, and with durable commits it is
/// only ever written after the store was flushed up to that sequence. An index ahead of the
/// store therefore means the store lost committed writes (a damaged or truncated sled log
/// opens as an older, consistent state without any error from sled): that is reported,
/// rather than "repaired" by rebuilding the indexes from what is left.
///
/// With `durable_commits(false)` the store may legitimately lose its last unflushed commits
/// in a crash while an index kept them, so the check is made only for durable databases.
fn store_not_behind(dir: &Path, seq: u64, text: u64, vectors: Option<u64>) -> Result<()> {
    let ahead = [
        ("text index", text),
        ("vector snapshot", vectors.unwrap_or(0)),
    ]
    .into_iter()
    .find(|(_, applied)| *applied > seq);
    match ahead {
        Some((index, applied)) => Err(Error::corrupt(
            dir.join("store"),
            format!("the store ends at sequence {seq} but the {index} applied {applied}: committed writes are missing from the store"),
        )),
        None => Ok(()),
    }
}

impl Engine {
    /// Opens (or creates) a database with default settings. See [`Engine::builder`].
    ///
    /// # Errors
    /// As [`EngineBuilder::open`].
    pub fn open(dir: impl AsRef<Path>) -> Result<Engine> {
        EngineBuilder::default().open(dir)
    }

    /// A builder to set the dimension, metric, limits and index parameters.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    fn open_with(dir: &Path, b: EngineBuilder) -> Result<Engine> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let lock_path = dir.join("LOCK");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?;
        fs2::FileExt::try_lock_exclusive(&lock).map_err(|_| Error::Locked(dir.to_path_buf()))?;

        let mut config = b.config.clone();
        let requested = StoredConfig::from_config(&config);
        let cfg_path = dir.join("config.json");
        match StoredConfig::load(&cfg_path)? {
            Some(stored) => {
                stored.check(&requested, b.explicit_dim, b.explicit_metric)?;
                config.dim = stored.dim;
                config.metric = stored.metric;
            }
            None => {
                if config.dim == 0 || config.dim > 65_536 {
                    return Err(Error::invalid(
                        "config.dim",
                        format!("{} is not in 1..=65536", config.dim),
                    ));
                }
                requested.save(&cfg_path)?;
            }
        }

        let store = Store::open(&dir.join("store"))?;
        let seq = store.meta_u64("seq")?;
        let events = events::load(&store)?;
        let (items, with_vectors) = crate::catalog::load(&store)?;
        let users = crate::users::load(&store)?;
        let (vectors, vec_applied, outcome) = VectorIndex::open(
            &dir.join("vectors"),
            config.dim,
            config.metric,
            &config.hnsw,
        )?;
        for (iid, v) in &with_vectors {
            vectors.set_raw(*iid, v);
        }
        let kg = Dictionary::load(&store)?;

        // Text index: open, or rebuild when damaged.
        let text_dir = dir.join("text");
        let (text, text_applied, text_damaged) = match TextIndex::open(&text_dir) {
            Ok((t, a)) => (t, a, false),
            Err(Error::Locked(p)) => return Err(Error::Locked(p)),
            Err(_) => {
                std::fs::remove_dir_all(&text_dir).map_err(|e| Error::io(&text_dir, e))?;
                let (t, _) = TextIndex::open(&text_dir)?;
                (t, 0, true)
            }
        };

        if config.durable_commits {
            let vec_applied = (outcome == LoadOutcome::Loaded).then_some(vec_applied);
            store_not_behind(dir, seq, text_applied, vec_applied)?;
        }

        let mut engine = Engine {
            state: State {
                dir: dir.to_path_buf(),
                config,
                store,
                text,
                vectors,
                items: RwLock::new(items),
                users: RwLock::new(users),
                kg: RwLock::new(kg),
                events: RwLock::new(events),
                models: RwLock::new(None),
                seq: AtomicU64::new(seq),
                generation: AtomicU64::new(0),
            },
            _lock: lock,
            pending: Mutex::new(Pending::default()),
            commit_lock: Mutex::new(()),
            recovery: Recovery::default(),
            training_lock: Mutex::new(()),
            retrain: Mutex::new(None),
            query_cache: Mutex::new(QueryCache::default()),
            last_training: Mutex::new((0, std::time::Instant::now())),
        };
        match crate::generation::load(dir) {
            Ok(m) => {
                let m = m.map(Arc::new);
                if let Some(m) = &m {
                    m.spawn_factor_index(&engine.state.config.hnsw, true);
                }
                *engine.state.models.write() = m;
            }
            Err(e) => engine.recovery.model_error = Some(e.to_string()),
        }
        engine.recover_text(text_applied, text_damaged)?;
        engine.recover_vectors(vec_applied, outcome, with_vectors)?;
        Ok(engine)
    }

    fn changes_after(&self, after: u64) -> Result<Vec<String>> {
        crate::catalog::changes_after(&self.state.store, after)
    }

    fn oldest_change(&self) -> Result<u64> {
        crate::catalog::oldest_change(&self.state.store)
    }

    fn recover_text(&mut self, applied: u64, damaged: bool) -> Result<()> {
        let seq = self.state.seq();
        let oldest = self.oldest_change()?;
        // A full rebuild when the index is new/damaged, ahead of the store, or behind the
        // compacted part of the change log.
        let must_rebuild = damaged
            || applied > seq
            || (applied < seq && applied == 0 && self.state.items.read().live > 0)
            || (oldest > 0 && applied + 1 < oldest);
        if must_rebuild {
            self.state.text.clear()?;
            let items = self.state.items.read();
            for (i, p) in items.items.iter().enumerate() {
                if let Some(p) = p {
                    self.state.text.upsert(ItemId(i as u32), p)?;
                }
            }
            drop(items);
            self.state.text.commit(seq)?;
            self.recovery.text_rebuilt = true;
        } else if applied < seq {
            let changed = self.changes_after(applied)?;
            let items = self.state.items.read();
            for id in &changed {
                if let Some(iid) = items.lookup(id) {
                    match items.get(iid) {
                        Some(p) => self.state.text.upsert(iid, p)?,
                        None => self.state.text.delete(iid),
                    }
                }
            }
            drop(items);
            self.state.text.commit(seq)?;
            self.recovery.text_replayed = changed.len();
        }
        Ok(())
    }

    fn recover_vectors(
        &mut self,
        applied: u64,
        outcome: LoadOutcome,
        all: Vec<(ItemId, Vec<f32>)>,
    ) -> Result<()> {
        let seq = self.state.seq();
        let oldest = self.oldest_change()?;
        self.recovery.vector_snapshot_damaged = outcome == LoadOutcome::Damaged;
        let must_rebuild =
            outcome != LoadOutcome::Loaded || applied > seq || (oldest > 0 && applied + 1 < oldest);
        if must_rebuild {
            if !all.is_empty() || outcome == LoadOutcome::Damaged {
                self.state.vectors.rebuild(&all);
                self.state.vectors.snapshot(seq)?;
                self.recovery.vector_rebuilt = true;
            }
        } else if applied < seq {
            let changed = self.changes_after(applied)?;
            let mut upserts = Vec::new();
            for id in &changed {
                let iid = self.state.items.read().lookup(id);
                if let Some(iid) = iid {
                    match self.state.stored_product(id)?.and_then(|p| p.embedding) {
                        Some(v) => upserts.push((iid, v)),
                        None => self.state.vectors.remove(iid),
                    }
                }
            }
            let refs: Vec<(ItemId, &[f32])> =
                upserts.iter().map(|(i, v)| (*i, v.as_slice())).collect();
            self.state.vectors.upsert(&refs);
            self.recovery.vector_replayed = changed.len();
        }
        Ok(())
    }

    /// What `open` repaired.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// The settings in force.
    pub fn config(&self) -> &Config {
        &self.state.config
    }

    /// The database directory.
    pub fn dir(&self) -> &Path {
        &self.state.dir
    }

    /// The last committed sequence number.
    pub fn seq(&self) -> u64 {
        self.state.seq()
    }

    // ---------------------------------------------------------------- writes (staged)

    /// Stages an insert or replacement of a product; visible after [`commit`](Self::commit).
    ///
    /// # Errors
    /// [`Error::Invalid`], [`Error::LimitExceeded`] or [`Error::DimensionMismatch`]; nothing is
    /// staged then.
    pub fn upsert_product(&self, product: Product) -> Result<()> {
        self.upsert_products(vec![product])
    }

    /// Stages a batch of products. The batch is all-or-nothing: if any product is invalid,
    /// the error names it and none is staged.
    ///
    /// # Errors
    /// As [`upsert_product`](Self::upsert_product), plus [`Error::Invalid`] for an id repeated
    /// inside the batch.
    pub fn upsert_products(&self, mut products: Vec<Product>) -> Result<()> {
        let mut seen = HashSet::new();
        for (i, p) in products.iter_mut().enumerate() {
            p.validate(&self.state.config.limits, self.state.config.dim)
                .map_err(|e| match e {
                    Error::Invalid { field, reason } => Error::Invalid {
                        field,
                        reason: format!("batch row {i}: {reason}"),
                    },
                    other => other,
                })?;
            if !seen.insert(p.id.clone()) {
                return Err(Error::invalid(
                    "product.id",
                    format!("{:?} appears twice in the batch", p.id),
                ));
            }
        }
        let mut pending = self.pending.lock();
        for p in products {
            pending.deleted.remove(&p.id);
            pending.upserted.insert(p.id.clone());
            pending.ops.push(Op::Upsert(Box::new(p)));
        }
        Ok(())
    }

    /// Stages a delete. Deleting an absent product is [`Error::UnknownItem`].
    ///
    /// # Errors
    /// [`Error::UnknownItem`].
    pub fn delete_product(&self, id: &str) -> Result<()> {
        let mut pending = self.pending.lock();
        let live = (self.state.items.read().live_iid(id).is_some()
            && !pending.deleted.contains(id))
            || pending.upserted.contains(id);
        if !live {
            return Err(Error::UnknownItem(id.to_string()));
        }
        pending.upserted.remove(id);
        pending.deleted.insert(id.to_string());
        pending.ops.push(Op::Delete(id.to_string()));
        Ok(())
    }

    /// Stages one event. See [`append_events`](Self::append_events).
    ///
    /// # Errors
    /// As [`append_events`](Self::append_events).
    pub fn append_event(&self, event: Event) -> Result<Appended> {
        self.append_events(vec![event])
    }

    /// Stages a batch of events, all-or-nothing.
    ///
    /// Rules: the item must be in the catalog (or staged); the timestamp must be in
    /// `0..=now + Limits::max_future_secs`; an event equal to a stored one in user, item,
    /// kind and timestamp is a duplicate and stores nothing (a rating's value is replaced).
    ///
    /// # Errors
    /// [`Error::UnknownItem`], [`Error::Invalid`], [`Error::LimitExceeded`].
    pub fn append_events(&self, events: Vec<Event>) -> Result<Appended> {
        let now = now_secs();
        let mut pending = self.pending.lock();
        {
            let items = self.state.items.read();
            for (i, e) in events.iter().enumerate() {
                e.validate(&self.state.config.limits, now)
                    .map_err(|err| match err {
                        Error::Invalid { field, reason } => Error::Invalid {
                            field,
                            reason: format!("batch row {i}: {reason}"),
                        },
                        other => other,
                    })?;
                let live = (items.live_iid(&e.item).is_some()
                    && !pending.deleted.contains(&e.item))
                    || pending.upserted.contains(&e.item);
                if !live {
                    return Err(Error::UnknownItem(e.item.clone()));
                }
            }
        }
        let n = events.len();
        if n > 0 {
            pending.ops.push(Op::Events(events));
        }
        Ok(Appended { staged: n })
    }

    /// Stages removal of every event and trace of a user (their id leaves the store at this
    /// commit; models forget them at the next training; the store's files may keep old
    /// versions holding the id until [`compact`](Self::compact)).
    ///
    /// # Errors
    /// [`Error::Invalid`] for a malformed id.
    pub fn forget_user(&self, user: &str) -> Result<()> {
        validate_id("user", user, &self.state.config.limits)?;
        let mut pending = self.pending.lock();
        for op in pending.ops.iter_mut() {
            if let Op::Events(evs) = op {
                evs.retain(|e| e.user != user);
            }
        }
        pending.ops.push(Op::Forget(user.to_string()));
        Ok(())
    }

    /// Stages knowledge-graph triples `(head entity, relation, tail entity)`.
    ///
    /// # Errors
    /// [`Error::Invalid`] for empty or overlong names.
    pub fn add_triples(&self, triples: Vec<(String, String, String)>) -> Result<()> {
        for (h, r, t) in &triples {
            validate_id("triple.head", h, &self.state.config.limits)?;
            validate_id("triple.relation", r, &self.state.config.limits)?;
            validate_id("triple.tail", t, &self.state.config.limits)?;
        }
        self.pending.lock().ops.push(Op::Triples(triples));
        Ok(())
    }

    /// Stages links from products to knowledge-graph entities (relation `link`).
    ///
    /// # Errors
    /// [`Error::UnknownItem`] for a product not in the catalog.
    pub fn link_items(&self, links: Vec<(String, String)>) -> Result<()> {
        let pending = self.pending.lock();
        let items = self.state.items.read();
        for (item, entity) in &links {
            if items.live_iid(item).is_none() && !pending.upserted.contains(item) {
                return Err(Error::UnknownItem(item.clone()));
            }
            validate_id("link.entity", entity, &self.state.config.limits)?;
        }
        drop(items);
        drop(pending);
        self.pending.lock().ops.push(Op::Links(links));
        Ok(())
    }

    /// Drops every staged, uncommitted write.
    pub fn rollback(&self) {
        *self.pending.lock() = Pending::default();
    }

    /// Number of staged operations.
    pub fn pending_ops(&self) -> usize {
        self.pending.lock().ops.len()
    }

    /// Makes every staged write durable and visible, atomically in the store, then in the
    /// text and vector indexes. When this returns `Ok`, the writes survive a crash.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Backend`] when the store fails; the store is then unchanged.
    /// The same errors from the text or vector index come after the store is durable: the
    /// writes then survive, and the next open replays them into the indexes.
    pub fn commit(&self) -> Result<Committed> {
        let _commit = self.commit_lock.lock();
        let pending = std::mem::take(&mut *self.pending.lock());
        if pending.ops.is_empty() {
            return Ok(Committed {
                seq: self.seq(),
                ..Committed::default()
            });
        }
        let committed = crate::writer::commit(&self.state, pending.ops)?;
        drop(_commit);
        self.maybe_retrain()?;
        Ok(committed)
    }

    /// Trains every model from the interaction log and swaps the new generation in. Readers
    /// keep using the previous generation until the swap.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the log is unusable for a model, [`Error::Io`] when the model
    /// file cannot be written (the previous generation keeps serving).
    pub fn train(&self, options: &crate::train::TrainOptions) -> Result<crate::train::TrainReport> {
        let _one_training = self.training_lock.lock();
        let report = crate::train::train(&self.state, options)?;
        *self.last_training.lock() = (self.state.events_count(), std::time::Instant::now());
        Ok(report)
    }

    /// Offline evaluation: splits the log, fits each model on the training part, and scores
    /// the held-out part by full ranking over every item the user has not seen.
    ///
    /// # Errors
    /// [`Error::Invalid`] for an unusable split or log.
    pub fn evaluate(
        &self,
        options: &crate::evaluate::EvalOptions,
    ) -> Result<crate::evaluate::EvalReport> {
        crate::evaluate::evaluate(&self.state, options)
    }

    /// The one call: fused search and recommendation. See [`Query`](crate::Query).
    ///
    /// # Errors
    /// [`Error::LimitExceeded`] for k, candidate counts or query text over the limits,
    /// [`Error::Invalid`] / [`Error::DimensionMismatch`] for a bad vector or filter,
    /// [`Error::UnknownItem`] for an unknown `similar_to` item, [`Error::TimedOut`] when the
    /// time budget (`Limits::max_query_time` or [`Query::time_budget`](crate::Query)) runs out.
    pub fn query(&self, query: &crate::query::Query) -> Result<Vec<crate::query::Hit>> {
        crate::query::validate(&self.state, query)?;
        // The hot-query cache: keyed by the whole request, valid for one generation (every
        // commit and every new model generation moves it on).
        let key = format!("{query:?}");
        let generation = self.state.generation();
        {
            let mut cache = self.query_cache.lock();
            if cache.generation != generation {
                cache.entries.clear();
                cache.generation = generation;
            }
            if let Some(hits) = cache.entries.get(&key).cloned() {
                cache.hits += 1;
                return Ok(hits);
            }
            cache.misses += 1;
        }
        let hits = crate::query::run(&self.state, query)?;
        let mut cache = self.query_cache.lock();
        if cache.generation == generation {
            if cache.entries.len() >= QUERY_CACHE_ENTRIES {
                cache.entries.clear();
            }
            cache.entries.insert(key, hits.clone());
        }
        Ok(hits)
    }

    /// Hot-query cache counters: `(hits, misses)` since open.
    pub fn query_cache_stats(&self) -> (u64, u64) {
        let c = self.query_cache.lock();
        (c.hits, c.misses)
    }

    /// Facet counts of a search: how many matching products each brand and each category
    /// level has, under the filter. Sorted by count, then name.
    ///
    /// # Errors
    /// As [`search_text`](Self::search_text).
    pub fn facets(&self, text: &str, filter: &Filter) -> Result<Facets> {
        self.state.check_query_text(text)?;
        filter.validate(&self.state.config.limits)?;
        let matching = self.state.text.matching(text, filter)?;
        let items = self.state.items.read();
        let mut brands: HashMap<String, usize> = HashMap::new();
        let mut categories: HashMap<String, usize> = HashMap::new();
        for iid in matching {
            let Some(p) = items.get(iid) else { continue };
            if !p.brand.is_empty() {
                *brands.entry(p.brand.clone()).or_default() += 1;
            }
            for c in crate::catalog::category_ancestors(&p.category) {
                *categories.entry(c).or_default() += 1;
            }
        }
        let sorted = |m: HashMap<String, usize>| {
            let mut v: Vec<(String, usize)> = m.into_iter().collect();
            v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            v
        };
        Ok(Facets {
            brands: sorted(brands),
            categories: sorted(categories),
        })
    }

    /// The model generation serving queries (0 when never trained).
    pub fn model_generation(&self) -> u64 {
        self.state
            .models
            .read()
            .as_ref()
            .map_or(0, |m| m.generation)
    }

    /// What tuning tried and chose for the serving model generation (`None` before the first
    /// training or when it trained without tuning).
    pub fn tuning_report(&self) -> Option<crate::tune::TuneReport> {
        self.state
            .models
            .read()
            .as_ref()
            .and_then(|m| m.tuning.clone())
    }

    /// Sets (or with `None` turns off) automatic retraining, checked at each commit.
    pub fn set_retrain_policy(&self, policy: Option<crate::train::RetrainPolicy>) {
        *self.retrain.lock() = policy;
    }

    /// Trains when the retrain policy says it is due. Returns the report when it trained.
    fn maybe_retrain(&self) -> Result<Option<crate::train::TrainReport>> {
        let Some(policy) = *self.retrain.lock() else {
            return Ok(None);
        };
        let (events_then, at) = *self.last_training.lock();
        let by_events = policy
            .after_events
            .is_some_and(|n| self.state.events_count().saturating_sub(events_then) >= n);
        let by_time = policy
            .after_secs
            .is_some_and(|s| at.elapsed().as_secs() >= s);
        if by_events || by_time {
            return self.train(&crate::train::TrainOptions::default()).map(Some);
        }
        Ok(None)
    }

    /// Writes a vector snapshot now (also done automatically every
    /// `HnswParams::snapshot_every` changes), so the next open loads instead of replaying.
    ///
    /// # Errors
    /// [`Error::Io`] when the snapshot cannot be written; the previous one stays valid.
    pub fn checkpoint(&self) -> Result<()> {
        let _commit = self.commit_lock.lock();
        self.state.vectors.snapshot(self.seq())?;
        crate::writer::compact_changes(&self.state)
    }

    /// Rewrites the store so that it holds only current records, then swaps it in.
    ///
    /// Why: the store's log keeps superseded versions of records (a forgotten user's id, a
    /// deleted product) until it happens to reuse that space, so after
    /// [`forget_user`](Self::forget_user) and [`commit`](Self::commit) their bytes may still
    /// be on disk. After `compact` returns they are in no file of the directory (models
    /// forget the user at the next [`train`](Self::train), which deletes older generations).
    /// Also checkpoints the vector index and drops the applied change log.
    ///
    /// Writers wait while it runs; readers keep reading. A crash at any point leaves either
    /// the old or the new store, which [`open`](Self::open) picks up.
    ///
    /// # Errors
    /// [`Error::Io`] when the copy cannot be written; the old store is then still in use.
    pub fn compact(&self) -> Result<()> {
        let _commit = self.commit_lock.lock();
        self.state.vectors.snapshot(self.seq())?;
        crate::writer::compact_changes(&self.state)?;
        self.state.store.compact()
    }

    // ---------------------------------------------------------------- reads

    /// The committed product with this id, embedding included.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the record cannot be decoded.
    pub fn get_product(&self, id: &str) -> Result<Option<Product>> {
        self.state.stored_product(id)
    }

    /// Number of live products.
    pub fn product_count(&self) -> usize {
        self.state.items.read().live
    }

    /// Every live product id, in internal id order.
    pub fn product_ids(&self) -> Vec<String> {
        let items = self.state.items.read();
        let mut by_iid: Vec<(u32, &String)> = items
            .ids
            .iter()
            .filter(|(_, iid)| items.get(**iid).is_some())
            .map(|(id, iid)| (iid.0, id))
            .collect();
        by_iid.sort();
        by_iid.into_iter().map(|(_, id)| id.clone()).collect()
    }

    /// BM25 search over title, description, brand and category, with a filter applied inside
    /// the search. The text channel alone; [`Engine::query`] fuses every channel.
    ///
    /// # Errors
    /// [`Error::LimitExceeded`] for k outside 1..=`max_k` or an overlong query,
    /// [`Error::Invalid`] for a bad filter.
    pub fn search_text(&self, text: &str, filter: &Filter, k: usize) -> Result<Vec<Scored>> {
        self.state.check_k(k)?;
        self.state.check_query_text(text)?;
        filter.validate(&self.state.config.limits)?;
        let hits = self.state.text.search(&TextQuery {
            text,
            filter,
            limit: k,
            title_boost: 0.0,
            fuzzy: false,
        })?;
        Ok(self.name_hits(hits.into_iter().map(|h| (h.item, h.score))))
    }

    pub(crate) fn name_hits(&self, hits: impl Iterator<Item = (ItemId, f32)>) -> Vec<Scored> {
        let items = self.state.items.read();
        hits.filter_map(|(iid, score)| {
            items.get(iid).map(|p| Scored {
                id: p.id.clone(),
                score,
            })
        })
        .collect()
    }

    /// Nearest products to a vector under the engine's metric, with a filter applied during
    /// the graph walk (or an exact scan of the allowed items when few pass).
    ///
    /// # Errors
    /// [`Error::DimensionMismatch`], [`Error::Invalid`] for NaN/inf/zero vectors or a bad
    /// filter, [`Error::LimitExceeded`] for k.
    pub fn search_vector(&self, vector: &[f32], filter: &Filter, k: usize) -> Result<Vec<Scored>> {
        let hits = self.vector_hits(vector, filter, k)?;
        Ok(self.name_hits(hits.into_iter()))
    }

    pub(crate) fn vector_hits(
        &self,
        vector: &[f32],
        filter: &Filter,
        k: usize,
    ) -> Result<Vec<(ItemId, f32)>> {
        self.state.check_k(k)?;
        validate_vector(vector, self.state.config.dim)?;
        filter.validate(&self.state.config.limits)?;
        let items = self.state.items.read();
        Ok(crate::channel::search_vectors(
            &self.state.vectors,
            &items,
            filter,
            vector,
            k,
            self.state.config.hnsw.exact_scan_below,
        ))
    }

    /// Exact nearest neighbours over every vector (no graph): the reference for ANN recall.
    ///
    /// # Errors
    /// As [`search_vector`](Self::search_vector).
    pub fn search_vector_exact(&self, vector: &[f32], k: usize) -> Result<Vec<Scored>> {
        self.state.check_k(k)?;
        validate_vector(vector, self.state.config.dim)?;
        let hits = self.state.vectors.search_exact(vector, k);
        Ok(self.name_hits(hits.into_iter().map(|h| (h.item, h.score))))
    }

    /// A user's events in time order (oldest first); the last `limit` when given.
    ///
    /// # Errors
    /// [`Error::UnknownUser`] when the user has no events.
    pub fn user_history(&self, user: &str, limit: Option<usize>) -> Result<Vec<Event>> {
        let uid = self
            .state
            .users
            .read()
            .get(user)
            .ok_or_else(|| Error::UnknownUser(user.to_string()))?;
        let evs = self.state.user_events(uid, limit)?;
        let items = self.state.items.read();
        Ok(evs
            .into_iter()
            .map(|e| Event {
                user: user.to_string(),
                item: items.name(e.item).unwrap_or_default().to_string(),
                kind: e.kind,
                ts: e.ts,
            })
            .collect())
    }

    /// Ids of every user with at least one committed event, sorted.
    pub fn user_ids(&self) -> Vec<String> {
        let users = self.state.users.read();
        let idx = self.state.events.read();
        let mut out: Vec<String> = idx
            .by_user
            .iter()
            .enumerate()
            .filter(|(_, evs)| !evs.is_empty())
            .filter_map(|(u, _)| users.names.get(u).and_then(|n| n.clone()))
            .collect();
        out.sort_unstable();
        out
    }

    /// Users who interacted with an item and when, in arrival order (the per-item index).
    ///
    /// # Errors
    /// [`Error::UnknownItem`].
    pub fn item_events(&self, item: &str) -> Result<Vec<(String, i64)>> {
        let iid = self
            .state
            .items
            .read()
            .live_iid(item)
            .ok_or_else(|| Error::UnknownItem(item.to_string()))?;
        let users = self.state.users.read();
        let idx = self.state.events.read();
        let list = idx
            .by_item
            .get(iid.0 as usize)
            .map_or(&[][..], Vec::as_slice);
        Ok(list
            .iter()
            .filter_map(|(uid, ts)| {
                users
                    .names
                    .get(uid.0 as usize)
                    .and_then(|n| n.clone())
                    .map(|n| (n, *ts))
            })
            .collect())
    }

    /// Knowledge-graph neighbours of an entity: `(relation, entity)`, outgoing edges first,
    /// then incoming ones with the relation prefixed by `~`. Products are `item:<id>`.
    /// `relation` keeps only edges of that relation.
    ///
    /// A product's brand and category edges are read from its record; the products of a
    /// brand or category (`~brand`, `~category`) are found by a scan of the catalog.
    ///
    /// # Errors
    /// [`Error::Invalid`] for an unknown entity.
    pub fn neighbors(&self, entity: &str, relation: Option<&str>) -> Result<Vec<(String, String)>> {
        let items = self.state.items.read();
        let kg = self.state.kg.read();
        let eid = kg.entity_ids.get(entity).copied();
        let product = entity
            .strip_prefix("item:")
            .and_then(|id| items.live_iid(id))
            .and_then(|iid| items.get(iid));
        if eid.is_none() && product.is_none() {
            return Err(Error::invalid(
                "entity",
                format!("{entity:?} is not in the graph"),
            ));
        }
        let wanted = |shown: &str| relation.is_none_or(|r| r == shown);
        let mut out: Vec<(String, String)> = Vec::new();
        if let Some(p) = product {
            for (rel, tail) in graph::product_edges(p) {
                if wanted(rel) {
                    out.push((rel.to_string(), tail));
                }
            }
        }
        let name = |id: u32| kg.entities.get(id as usize).cloned().unwrap_or_default();
        let rel_name = |id: u16| kg.relations.get(id as usize).map_or("", String::as_str);
        if let Some(eid) = eid {
            for (rel, other) in graph::edges(&self.state.store, eid, true)? {
                if wanted(rel_name(rel)) {
                    out.push((rel_name(rel).to_string(), name(other)));
                }
            }
        }
        for rel in [graph::REL_BRAND, graph::REL_CATEGORY] {
            let shown = format!("~{rel}");
            if !entity.starts_with(&format!("{rel}:")) || !wanted(&shown) {
                continue;
            }
            for p in items.items.iter().flatten() {
                if graph::product_edges(p)
                    .iter()
                    .any(|(r, tail)| *r == rel && tail == entity)
                {
                    out.push((shown.clone(), graph::item_entity(&p.id)));
                }
            }
        }
        if let Some(eid) = eid {
            for (rel, other) in graph::edges(&self.state.store, eid, false)? {
                let shown = format!("~{}", rel_name(rel));
                if wanted(&shown) {
                    out.push((shown, name(other)));
                }
            }
        }
        // A database written before the automatic edges were derived also stores them.
        let mut seen = std::collections::HashSet::new();
        out.retain(|edge| seen.insert(edge.clone()));
        Ok(out)
    }

    /// Counts and sizes of every store.
    pub fn stats(&self) -> Stats {
        let kg = self.state.kg.read();
        Stats {
            seq: self.seq(),
            products: self.product_count(),
            text_docs: self.state.text.num_docs(),
            vectors: self.state.vectors.len(),
            vector_slots: self.state.vectors.slots(),
            events: self.state.events_count(),
            users: self.state.users.read().ids.len(),
            entities: kg.entities.len(),
            relations: kg.relations.len(),
            store_bytes: self.state.store.size_on_disk(),
            text_bytes: self.state.text.size_on_disk(),
        }
    }

    /// HNSW parameters in force.
    pub fn hnsw_params(&self) -> &HnswParams {
        &self.state.config.hnsw
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Best effort: a snapshot makes the next open fast. Durability never depends on it.
        if self.state.vectors.pending_changes() > 0 {
            let _ = self.state.vectors.snapshot(self.seq());
        }
        let _ = self.state.store.flush();
    }
}
