//! Engine settings: the ones that fix the on-disk format (persisted, checked on reopen) and the
//! ones that may change between runs (limits, tuning).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How vectors are compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Metric {
    /// Cosine similarity (vectors are normalised on insert). The default.
    #[default]
    Cosine,
    /// Inner product, unnormalised (maximum inner product search).
    Dot,
    /// Euclidean distance; the score is the negated distance.
    L2,
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Metric::Cosine => "cosine",
            Metric::Dot => "dot",
            Metric::L2 => "l2",
        };
        f.write_str(s)
    }
}

/// Limits checked before any work is done; an input over a limit gets
/// [`Error::LimitExceeded`](crate::Error::LimitExceeded).
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Longest product, user or entity id in bytes. Default 256.
    pub max_id_bytes: usize,
    /// Longest text field (title, description, brand, category, attribute value) in bytes.
    /// Default 64 KiB: long enough for any product page, short enough to bound indexing cost.
    pub max_text_bytes: usize,
    /// Most attributes on one product. Default 64.
    pub max_attributes: usize,
    /// Longest query text in bytes. Default 4 KiB.
    pub max_query_bytes: usize,
    /// Most distinct terms in a text query. Default 64.
    pub max_query_terms: usize,
    /// Deepest nesting of filters. Default 32 (tantivy overflows the stack on thousands of
    /// nested clauses, so the bound is checked before a query is built).
    pub max_filter_depth: usize,
    /// Largest number of hits one call may return. Default 1,000.
    pub max_k: usize,
    /// Largest candidate count per retrieval channel. Default 10,000.
    pub max_candidates: usize,
    /// Events whose timestamp is more than this many seconds after the wall clock are refused.
    /// Default one day (clock skew between an application's machines).
    pub max_future_secs: i64,
    /// Longest time one [`Engine::query`](crate::Engine::query) may run before it stops with
    /// [`Error::TimedOut`](crate::Error::TimedOut). Checked between pipeline stages, so a
    /// stage that started in time runs to its end. A query may ask for less
    /// ([`Query::time_budget`](crate::Query::time_budget)), never for more. Default 10 s:
    /// queries take milliseconds, so only a runaway request meets it.
    pub max_query_time: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_id_bytes: 256,
            max_text_bytes: 64 * 1024,
            max_attributes: 64,
            max_query_bytes: 4096,
            max_query_terms: 64,
            max_filter_depth: 32,
            max_k: 1000,
            max_candidates: 10_000,
            max_future_secs: 86_400,
            max_query_time: std::time::Duration::from_secs(10),
        }
    }
}

/// HNSW graph parameters. They shape the graph but not the file format, so they may change
/// between runs (a new value applies to points inserted afterwards).
#[derive(Clone, Debug, PartialEq)]
pub struct HnswParams {
    /// Neighbours kept per node (M). Default 16.
    pub max_connections: usize,
    /// Candidate list size while inserting. Default 100.
    pub ef_construction: usize,
    /// Candidate list size while searching (raised to k when k is larger). Default 64.
    pub ef_search: usize,
    /// Below this fraction of items passing a filter, vector search scans the allowed items
    /// exactly instead of walking the graph (filtered graph walks slow down sharply when few
    /// nodes pass). Default 0.05: on 100,000 x 64 vectors the two cost the same at about
    /// 5.8% (`cargo run --release --example filter_switch`: at 5% the scan took 0.83 ms
    /// against 1.02 ms for the walk, at 10% 1.40 against 0.67 ms).
    pub exact_scan_below: f64,
    /// An index whose float vectors take at most this many bytes is searched by an exact
    /// scan instead of a graph walk: exact results at a small cost (the scan reads int8
    /// codes, a quarter of these bytes; SciFact's 5,183 x 384 vectors, 8 MB, take 0.07 ms a
    /// query, against 0.05 ms for the walk at recall@10 0.99). Default 10,240,000 (10,000
    /// KiB, Qdrant's `full_scan_threshold`); 0 always walks.
    pub exact_scan_bytes: usize,
    /// Changes applied since the last snapshot that trigger a new snapshot at commit, or a
    /// quarter of the index's size when larger (a snapshot writes the whole graph, so
    /// snapshots at a fixed interval would cost time quadratic in the catalog).
    /// Default 20,000.
    pub snapshot_every: usize,
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams {
            max_connections: 16,
            ef_construction: 100,
            ef_search: 64,
            exact_scan_below: 0.05,
            exact_scan_bytes: 10_240_000,
            snapshot_every: 20_000,
        }
    }
}

/// All settings of an engine. Build it with [`EngineBuilder`](crate::EngineBuilder).
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Vector dimension (persisted). Default 64.
    pub dim: usize,
    /// Vector metric (persisted). Default cosine.
    pub metric: Metric,
    /// Input limits.
    pub limits: Limits,
    /// Vector index parameters.
    pub hnsw: HnswParams,
    /// Whether `commit` calls fsync through sled's `flush`. Default true; turning it off makes
    /// commits faster and loses the durability promise.
    pub durable_commits: bool,
    /// ε of the Laplace noise on shown counts (persisted), when set; see
    /// [`EngineBuilder::count_noise`](crate::EngineBuilder::count_noise). Default off.
    pub count_noise: Option<f64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            dim: 64,
            metric: Metric::Cosine,
            limits: Limits::default(),
            hnsw: HnswParams::default(),
            durable_commits: true,
            count_noise: None,
        }
    }
}

/// The version of the directory layout written by this build.
pub(crate) const FORMAT_VERSION: u32 = 1;

/// The analyzer name stored with the text index; a different analyzer would need a reindex.
pub(crate) const ANALYZER: &str = "en_stem_stop+zh_jieba/1";

/// The part of [`Config`] that fixes the on-disk format, saved as `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct StoredConfig {
    pub format_version: u32,
    pub dim: usize,
    pub metric: Metric,
    pub analyzer: String,
    /// The sentence encoder whose vectors the database holds, when it was created with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedder: Option<StoredEmbedder>,
    /// Set when user ids are stored as keyed hashes: the HMAC of a fixed text under the key,
    /// which tells the right key from a wrong one (the key itself is never stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_key_check: Option<String>,
    /// ε of the noise on shown counts, when the database was created with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count_noise: Option<f64>,
}

/// The identity of a sentence encoder: a database is never queried with another model's
/// vectors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredEmbedder {
    pub name: String,
    pub dim: usize,
    /// The sha256 of the weights.
    pub checksum: String,
}

impl std::fmt::Display for StoredEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = self.checksum.get(..12).unwrap_or(&self.checksum);
        write!(f, "{} (dim {}, sha256 {short})", self.name, self.dim)
    }
}

impl StoredConfig {
    pub fn from_config(c: &Config) -> Self {
        StoredConfig {
            format_version: FORMAT_VERSION,
            dim: c.dim,
            metric: c.metric,
            analyzer: ANALYZER.to_string(),
            embedder: None,
            user_key_check: None,
            count_noise: c.count_noise,
        }
    }

    /// Loads `config.json`, or `None` when the directory is new.
    pub fn load(path: &Path) -> Result<Option<Self>> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::corrupt(path, e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| Error::backend("serde_json", e))?;
        crate::fsutil::write_atomic(path, &bytes)
    }

    /// Compares a stored configuration with the requested one.
    ///
    /// `explicit_dim`/`explicit_metric` say whether the caller set them; unset values adopt
    /// the stored ones.
    pub fn check(
        &self,
        requested: &StoredConfig,
        explicit_dim: bool,
        explicit_metric: bool,
    ) -> Result<()> {
        if self.format_version != requested.format_version {
            return Err(Error::ConfigMismatch {
                setting: "format_version",
                stored: self.format_version.to_string(),
                requested: requested.format_version.to_string(),
            });
        }
        if explicit_dim && self.dim != requested.dim {
            return Err(Error::ConfigMismatch {
                setting: "dim",
                stored: self.dim.to_string(),
                requested: requested.dim.to_string(),
            });
        }
        if explicit_metric && self.metric != requested.metric {
            return Err(Error::ConfigMismatch {
                setting: "metric",
                stored: self.metric.to_string(),
                requested: requested.metric.to_string(),
            });
        }
        // Only the weights' checksum identifies a model: the folder may be renamed.
        let same_model = match (&self.embedder, &requested.embedder) {
            (Some(a), Some(b)) => a.checksum == b.checksum && a.dim == b.dim,
            (stored, wanted) => stored.is_none() && wanted.is_none(),
        };
        // A database opened without an encoder keeps its vectors; one opened with an encoder
        // must have been created with the same one.
        if requested.embedder.is_some() && !same_model {
            let show = |e: &Option<StoredEmbedder>| {
                e.as_ref()
                    .map_or_else(|| "none".to_string(), |e| e.to_string())
            };
            return Err(Error::ConfigMismatch {
                setting: "embedder",
                stored: show(&self.embedder),
                requested: show(&requested.embedder),
            });
        }
        if self.analyzer != requested.analyzer {
            return Err(Error::ConfigMismatch {
                setting: "analyzer",
                stored: self.analyzer.clone(),
                requested: requested.analyzer.clone(),
            });
        }
        Ok(())
    }
}
