//! The engine's shared state: what a query reads, a commit publishes and training reads.
//!
//! `query`, `train` and `writer` work on a `&State`; `engine` owns it beside what only the
//! engine itself needs (the directory lock, the staging buffer, the commit and training
//! locks, the hot-query cache, the retrain policy).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::catalog::{ItemTable, Product};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::events::{EventIndex, StoredEvent, UserId};
use crate::generation::ModelSet;
use crate::graph::Dictionary;
use crate::store::Store;
use crate::text::TextIndex;
pub(crate) use crate::users::UserTable;
use crate::vector::VectorIndex;

/// Everything readers share with the one writer.
pub(crate) struct State {
    pub dir: PathBuf,
    pub config: Config,
    /// The source of truth.
    pub store: Store,
    /// Derived: BM25.
    pub text: TextIndex,
    /// Derived: embeddings.
    pub vectors: VectorIndex,
    /// Committed products by internal id.
    pub items: RwLock<ItemTable>,
    /// Committed users.
    pub users: RwLock<UserTable>,
    /// Knowledge-graph names.
    pub kg: RwLock<Dictionary>,
    /// Committed events, per user and per item.
    pub events: RwLock<EventIndex>,
    /// Search synonyms (applied at query time).
    pub synonyms: RwLock<crate::synonyms::Synonyms>,
    /// The retention policy every commit applies to the log.
    pub retention: RwLock<Option<crate::retention::Retention>>,
    /// The model generation serving queries, if any.
    pub models: RwLock<Option<Arc<ModelSet>>>,
    /// The last durable sequence number.
    pub seq: AtomicU64,
    /// Bumped by every commit and every new model generation (cache keys include it).
    pub generation: AtomicU64,
    /// The encoder the database was created with, when it was opened without it (queries
    /// then note that their text is searched by its words only).
    pub missing_encoder: Option<String>,
    /// The sentence encoder that embeds products without a vector at commit and text
    /// queries for the vector channel.
    #[cfg(feature = "embed")]
    pub embedder: Option<Arc<crate::embed::Embedder>>,
}

impl State {
    /// The vector of a query's text, when the engine has an encoder and the text is not empty.
    #[cfg(feature = "embed")]
    pub fn embed_query(&self, text: Option<&str>) -> Result<Option<Vec<f32>>> {
        match (&self.embedder, text.map(str::trim)) {
            (Some(e), Some(t)) if !t.is_empty() => Ok(e.embed(&[t])?.pop()),
            _ => Ok(None),
        }
    }

    /// Without the `embed` feature a text query has no vector.
    #[cfg(not(feature = "embed"))]
    pub fn embed_query(&self, _text: Option<&str>) -> Result<Option<Vec<f32>>> {
        Ok(None)
    }

    /// The last committed sequence number.
    pub fn seq(&self) -> u64 {
        self.seq.load(Ordering::SeqCst)
    }

    /// The generation the hot-query cache is valid for.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// A new model generation serves: cached answers are stale.
    pub fn new_generation(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Records that the store is durable up to `seq` before the derived indexes catch up, so
    /// that a failure while updating them never makes the next commit reuse sequence numbers.
    pub fn set_durable_seq(&self, seq: u64) {
        self.seq.store(seq, Ordering::SeqCst);
    }

    pub fn publish(&self, seq: u64) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.seq.store(seq, Ordering::SeqCst);
    }

    pub fn events_count(&self) -> u64 {
        self.events.read().total
    }

    pub fn check_k(&self, k: usize) -> Result<()> {
        if k == 0 || k > self.config.limits.max_k {
            return Err(Error::LimitExceeded {
                what: "k",
                got: k,
                limit: self.config.limits.max_k,
            });
        }
        Ok(())
    }

    pub fn check_query_text(&self, text: &str) -> Result<()> {
        let l = &self.config.limits;
        if text.len() > l.max_query_bytes {
            return Err(Error::LimitExceeded {
                what: "query text bytes",
                got: text.len(),
                limit: l.max_query_bytes,
            });
        }
        let terms = crate::text::analyze(text).len();
        if terms > l.max_query_terms {
            return Err(Error::LimitExceeded {
                what: "query terms",
                got: terms,
                limit: l.max_query_terms,
            });
        }
        Ok(())
    }

    /// The stored events of a user, oldest first; the most recent `limit` when given.
    pub fn user_events(&self, uid: UserId, limit: Option<usize>) -> Result<Vec<StoredEvent>> {
        let idx = self.events.read();
        let evs = idx
            .by_user
            .get(uid.0 as usize)
            .map_or(&[][..], Vec::as_slice);
        let from = limit.map_or(0, |l| evs.len().saturating_sub(l));
        Ok(evs[from..].to_vec())
    }

    /// Every stored event, grouped by user in time order (for training and export).
    pub fn all_events(&self) -> Result<Vec<StoredEvent>> {
        let idx = self.events.read();
        Ok(idx.by_user.iter().flatten().copied().collect())
    }

    /// The committed record of a product, embedding included.
    pub fn stored_product(&self, id: &str) -> Result<Option<Product>> {
        crate::catalog::stored_product(&self.store, id)
    }
}
