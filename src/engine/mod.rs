//! `Engine`: open/create a database directory and recover it (here); staged writes and
//! commit (`write`), training and the serving generation (`models`), reads (`read`).
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
use crate::error::{Error, KeyProblem, Result};
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
    explicit_noise: bool,
    #[cfg(feature = "embed")]
    embedder: Option<std::path::PathBuf>,
    user_key: Option<UserKey>,
    read_only: bool,
}

/// A user key, kept out of `Debug` output.
#[derive(Clone)]
struct UserKey(Vec<u8>);

impl std::fmt::Debug for UserKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UserKey({} bytes)", self.0.len())
    }
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

    /// A sentence encoder (such as all-MiniLM-L6-v2, see [`Embedder`](crate::Embedder))
    /// loaded from the folder `dir` at open: products committed without an embedding get one
    /// from their title, brand, category and description, and a query's text is embedded for
    /// the vector channel. The dimension is the model's. The model's identity is stored with
    /// the database: opening it with another model is [`Error::ConfigMismatch`], and so is
    /// opening a database created without an encoder with one.
    #[cfg(feature = "embed")]
    pub fn embedder(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.embedder = Some(dir.into());
        self
    }

    /// Pseudonymous users: user ids are stored only as keyed hashes (HMAC-SHA256 under `key`,
    /// at least [`MIN_USER_KEY_BYTES`](crate::MIN_USER_KEY_BYTES) random bytes), never as
    /// given, in any file of the directory; the key itself is never written there. Chosen
    /// when the database is created: every later open must pass the same key
    /// ([`Error::UserKey`] when it is missing or wrong, and when a key is given for a database
    /// created without one).
    ///
    /// Every API still takes the application's ids. A hash cannot be reversed, so the APIs
    /// that list users ([`Engine::user_ids`], [`Engine::item_events`]) return the ids this
    /// process has been given since it opened and `pseudonym:<hex>` for the others; every
    /// API takes that form back.
    pub fn user_key(mut self, key: impl AsRef<[u8]>) -> Self {
        self.user_key = Some(UserKey(key.as_ref().to_vec()));
        self
    }

    /// Open a backup read-only (see [`Engine::open_read_only`]).
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Laplace noise of privacy parameter `epsilon` on the counts the engine shows: every
    /// popularity score (cold-start lists, explanations, `SHOW MODELS`) and
    /// [`Engine::trending`]'s counts. What it protects and what it does not is in the
    /// README ("Noise on shown counts"); in short, whether one shopper interacted with one
    /// item, at `epsilon` per released count, and not the event log or the other models.
    ///
    /// `epsilon` must be finite and in (0, 10]: smaller is more noise (Laplace of scale
    /// Δ/ε, Δ the most one shopper's interactions with one item can move the count); above
    /// 10 the noise is under a tenth of one shopper's contribution and protects nothing, so
    /// it is refused like NaN, 0, negatives and infinity ([`Error::Invalid`] at open, before
    /// anything is written). Fixed when the directory is created, like the dimension:
    /// reopening with another value (or with one, for a database created without) is
    /// [`Error::ConfigMismatch`]; left unset, the stored value is used.
    pub fn count_noise(mut self, epsilon: f64) -> Self {
        self.config.count_noise = Some(epsilon);
        self.explicit_noise = true;
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
    /// Heap bytes of typo tolerance's word lists (the text index's surface words and their
    /// one-character deletions, in memory only).
    pub typo_list_bytes: u64,
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

/// A search-as-you-type suggestion ([`Engine::suggest`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Suggestion {
    /// What to show: the typed text with its last word completed, or a product's title.
    pub text: String,
    /// The product, for a title.
    pub id: Option<String>,
    /// Larger is better: documents holding the completed word, or the title's search score
    /// (raised by the shopper's affinity with its brand and category).
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
    /// The directory lock; none for a read-only replica, which never writes to it.
    _lock: Option<File>,
    /// Opened by [`Engine::open_read_only`]: every write is refused.
    read_only: bool,
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

/// A backup opened as a database (not read-only): checked against its manifest, `store/`
/// rebuilt from the dump (in `store.restore/`, renamed when complete), then the manifest and
/// the dump removed, which makes the directory an ordinary database. An open interrupted
/// midway finishes the restore the next time.
fn restore_backup(dir: &Path) -> Result<()> {
    if !crate::backup::is_backup(dir) {
        return Ok(());
    }
    let store = dir.join("store");
    let dump = dir.join(crate::backup::STORE_DUMP);
    if !store.exists() {
        crate::backup::verify(dir)?;
        let building = dir.join("store.restore");
        if building.exists() {
            std::fs::remove_dir_all(&building).map_err(|e| Error::io(&building, e))?;
        }
        drop(Store::from_dump(&dump, Some(&building))?);
        std::fs::rename(&building, &store).map_err(|e| Error::io(&store, e))?;
        crate::fsutil::sync_dir(dir)?;
    }
    for f in [dump, dir.join(crate::backup::MANIFEST)] {
        match std::fs::remove_file(&f) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&f, e)),
        }
    }
    crate::fsutil::sync_dir(dir)
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
    /// `ReadOnly` on a replica: `what` goes to the primary.
    pub(crate) fn writable(&self, what: &'static str) -> Result<()> {
        if self.read_only {
            Err(Error::ReadOnly(what))
        } else {
            Ok(())
        }
    }

    /// The staging buffer, for a write; `ReadOnly` on a replica.
    fn pending(&self) -> Result<parking_lot::MutexGuard<'_, Pending>> {
        self.writable("a write")?;
        Ok(self.pending.lock())
    }

    /// Whether the engine serves a backup read-only ([`Engine::open_read_only`]).
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

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

    /// Opens a backup ([`Engine::backup`]) to serve it: queries, searches and every other
    /// read work; writes, training, compaction and backups are [`Error::ReadOnly`]. Nothing is
    /// written to `dir` and no lock is taken, so any number of processes can serve one
    /// backup; each loads the store's records into a temporary store of its own (memory or
    /// the system's temporary directory). The backup is checked against its manifest first.
    ///
    /// To refresh a replica, make a new backup beside the old one, switch what the replicas
    /// open (for example a symbolic link renamed over the old one) and reopen.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for a file that differs from the manifest, or a directory that is
    /// not a backup (a live database has no manifest: back it up first); the open errors of
    /// [`EngineBuilder::open`].
    pub fn open_read_only(dir: impl AsRef<Path>) -> Result<Engine> {
        EngineBuilder::default().read_only(true).open(dir)
    }

    fn open_with(dir: &Path, b: EngineBuilder) -> Result<Engine> {
        if let Some(epsilon) = b.config.count_noise {
            crate::noise::validate_epsilon(epsilon)?;
        }
        let read_only = b.read_only;
        let lock = if read_only {
            if !crate::backup::is_backup(dir) {
                return Err(Error::corrupt(
                    dir.join(crate::backup::MANIFEST),
                    "not a backup: a database is opened read-only from a backup (Engine::backup)",
                ));
            }
            crate::backup::verify(dir)?;
            None
        } else {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            let lock_path = dir.join("LOCK");
            let lock = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(|e| Error::io(&lock_path, e))?;
            lock_or_wait(&lock, dir)?;
            restore_backup(dir)?;
            Some(lock)
        };

        let mut config = b.config.clone();
        let mut requested = StoredConfig::from_config(&config);
        #[cfg_attr(not(feature = "embed"), allow(unused_mut))]
        let mut explicit_dim = b.explicit_dim;
        #[cfg(feature = "embed")]
        let embedder = match &b.embedder {
            Some(model) => {
                let e = crate::embed::Embedder::load(model)?;
                if b.explicit_dim && b.config.dim != e.dim() {
                    return Err(Error::DimensionMismatch {
                        expected: e.dim(),
                        got: b.config.dim,
                    });
                }
                let info = e.info();
                config.dim = info.dim;
                requested.dim = info.dim;
                requested.embedder = Some(crate::config::StoredEmbedder {
                    name: info.name.clone(),
                    dim: info.dim,
                    checksum: info.checksum.clone(),
                });
                explicit_dim = true;
                Some(Arc::new(e))
            }
            None => None,
        };
        let pseudonyms = match &b.user_key {
            Some(UserKey(key)) => Some(Arc::new(crate::pseudonym::Pseudonyms::new(key)?)),
            None => None,
        };
        requested.user_key_check = pseudonyms.as_ref().map(|p| p.check_value());
        let cfg_path = dir.join("config.json");
        let mut missing_encoder = None;
        match StoredConfig::load(&cfg_path)? {
            Some(stored) => {
                stored.check(&requested, explicit_dim, b.explicit_metric)?;
                if requested.embedder.is_none() {
                    missing_encoder = stored.embedder.as_ref().map(|e| e.to_string());
                }
                match (&stored.user_key_check, &pseudonyms) {
                    (Some(check), Some(p)) => p.check(check)?,
                    (Some(_), None) => return Err(Error::UserKey(KeyProblem::Missing)),
                    (None, Some(_)) => return Err(Error::UserKey(KeyProblem::NotPseudonymous)),
                    (None, None) => {}
                }
                config.dim = stored.dim;
                config.metric = stored.metric;
                config.count_noise = crate::noise::reconcile(
                    stored.count_noise,
                    requested.count_noise,
                    b.explicit_noise,
                )?;
            }
            None if read_only => {
                return Err(Error::corrupt(cfg_path, "the backup has no config.json"));
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

        let store = if read_only {
            Store::from_dump(&dir.join(crate::backup::STORE_DUMP), None)?
        } else {
            Store::open(&dir.join("store"))?
        };
        let seq = store.meta_u64("seq")?;
        if config.count_noise.is_some() {
            crate::noise::ensure_seed(&store)?;
        }
        let events = events::load(&store)?;
        let (items, with_vectors) = crate::catalog::load(&store)?;
        let users = crate::users::load(&store, pseudonyms)?;
        let synonyms = crate::synonyms::load(&store)?;
        let retention = crate::retention::load(&store)?;
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
        let opened = if read_only {
            TextIndex::open_read_only(&text_dir)
        } else {
            TextIndex::open(&text_dir)
        };
        let (text, text_applied, text_damaged) = match opened {
            Err(e) if read_only => return Err(e),
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
                synonyms: RwLock::new(synonyms),
                retention: RwLock::new(retention),
                missing_encoder,
                models: RwLock::new(None),
                seq: AtomicU64::new(seq),
                generation: AtomicU64::new(0),
                #[cfg(feature = "embed")]
                embedder,
            },
            _lock: lock,
            read_only,
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
                    m.prepare_item_sides(&engine.state.config.hnsw, true);
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
        if self.read_only {
            // A backup's index is captured with its store: nothing to replay.
            let behind =
                must_rebuild || (applied < seq && !self.changes_after(applied)?.is_empty());
            return if behind {
                Err(Error::corrupt(
                    self.state.dir.join("text"),
                    format!("the backup's text index applied sequence {applied}, its store ends at {seq}"),
                ))
            } else {
                Ok(())
            };
        }
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
                        None => self.state.text.delete(iid)?,
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
                if !self.read_only {
                    self.state.vectors.snapshot(seq)?;
                }
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

    /// The sentence encoder the engine was opened with, if any.
    #[cfg(feature = "embed")]
    pub fn embedder(&self) -> Option<&crate::embed::Embedder> {
        self.state.embedder.as_deref()
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

mod models;
mod read;
mod write;

/// How long opening waits for a held directory lock before `Error::Locked`.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Takes the directory's advisory lock (`lock` is its `LOCK` file), retrying with backoff for
/// up to [`LOCK_WAIT`]: a child process this process is forking shares the lock's file
/// description until it calls `exec` (which closes it), so under load a reopen right after
/// an engine was dropped can find the lock still held. Another process's lock is still
/// `Error::Locked`, after that wait.
fn lock_or_wait(lock: &File, dir: &Path) -> Result<()> {
    let started = std::time::Instant::now();
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        if fs2::FileExt::try_lock_exclusive(lock).is_ok() {
            return Ok(());
        }
        if started.elapsed() >= LOCK_WAIT {
            return Err(Error::Locked(dir.to_path_buf()));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(100));
    }
}
