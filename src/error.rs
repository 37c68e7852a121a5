//! The one public error type.
//!
//! Variants are split by who is at fault: the caller (`Invalid*`, `Unknown*`, limits), the
//! data on disk (`Corrupt`, `ConfigMismatch`), or the environment (`Io`, `Locked`).

use std::path::PathBuf;

/// Everything that can go wrong in shopdb.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A product, event or query field failed validation; nothing was stored.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Which input field was rejected (e.g. `product.id`, `event.ts`).
        field: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// A vector has the wrong number of components.
    #[error("vector dimension mismatch: expected {expected}, got {got}")]
    DimensionMismatch {
        /// The dimension the engine was created with.
        expected: usize,
        /// The dimension that was passed.
        got: usize,
    },
    /// The item id is not in the catalog.
    #[error("unknown item: {0:?}")]
    UnknownItem(String),
    /// The user id has no events.
    #[error("unknown user: {0:?}")]
    UnknownUser(String),
    /// An input is over one of the engine's limits (checked before any work is done).
    #[error("limit exceeded: {what} is {got}, the limit is {limit}")]
    LimitExceeded {
        /// What was measured (e.g. `query text bytes`).
        what: &'static str,
        /// The value passed.
        got: usize,
        /// The largest accepted value.
        limit: usize,
    },
    /// A query used up its time budget before its next stage could start; nothing was
    /// returned and nothing was changed.
    #[error("query timed out before {stage}: the budget is {budget:?}")]
    TimedOut {
        /// The stage that would have run next (e.g. `text channel`).
        stage: &'static str,
        /// The budget in force.
        budget: std::time::Duration,
    },
    /// A row of an imported file could not be read.
    #[error("{path}:{line}: {reason}")]
    BadRow {
        /// The file being imported.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What was wrong with the row.
        reason: String,
    },
    /// A training was cancelled through its [`CancelToken`](crate::CancelToken); the previous
    /// model generation keeps serving.
    #[error("training cancelled; the previous model generation keeps serving")]
    Cancelled,
    /// Another process holds the write lock on this database directory.
    #[error("database {0} is locked by another process")]
    Locked(PathBuf),
    /// A setting that fixes the on-disk format differs from the one stored in the directory.
    #[error("setting {setting} is {stored} in the database but {requested} was requested")]
    ConfigMismatch {
        /// The setting's name.
        setting: &'static str,
        /// The value stored beside the data.
        stored: String,
        /// The value the caller asked for.
        requested: String,
    },
    /// The database keeps user ids as keyed hashes and its key was not given or is not the
    /// one it was created with, or a key was given for a database that keeps ids as they are
    /// (see [`EngineBuilder::user_key`](crate::EngineBuilder::user_key)).
    #[error("user key: {0}")]
    UserKey(KeyProblem),
    /// The engine was opened read-only (a replica serving a backup,
    /// [`Engine::open_read_only`](crate::Engine::open_read_only)): writes, training and
    /// compaction go to the primary.
    #[error("the database is open read-only; {0} goes to the primary")]
    ReadOnly(&'static str),
    /// A file failed its checksum or could not be decoded.
    #[error("corrupt file {path}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// What check failed.
        reason: String,
    },
    /// A path given to an import or load statement is outside the allowed directories.
    #[error("path {0} is outside the allowed directories")]
    PathNotAllowed(PathBuf),
    /// The operation needs a trained model that does not exist yet.
    #[error("no trained model: {0}")]
    NotTrained(&'static str),
    /// A statement of the query language could not be parsed or planned.
    #[error("{0}")]
    Syntax(String),
    /// An operating-system I/O error.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An error reported by one of the backends.
    #[error("{backend} error: {source}")]
    Backend {
        /// `sled`, `tantivy`, `hnsw`, `bincode`, `serde_json`, `csv` or `plotters` (the
        /// benchmark report).
        backend: &'static str,
        /// The backend's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// What is wrong with the user key given at open ([`Error::UserKey`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyProblem {
    /// The database keeps pseudonyms of user ids and no key was given.
    Missing,
    /// The key is not the one the database was created with.
    Wrong,
    /// The database was created without a key and keeps user ids as they are; pseudonyms
    /// are chosen when a database is created.
    NotPseudonymous,
}

impl std::fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyProblem::Missing => {
                "the database keeps user ids as keyed hashes; open it with its user key"
            }
            KeyProblem::Wrong => "not the key this database was created with",
            KeyProblem::NotPseudonymous => {
                "the database was created without a user key and keeps user ids as they are"
            }
        })
    }
}

/// `Result` with shopdb's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field,
            reason: reason.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// A backend's error, kept as the source.
    pub(crate) fn backend(
        backend: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Backend {
            backend,
            source: source.into(),
        }
    }

    /// A sled error on the store at `path`.
    pub(crate) fn sled(path: &std::path::Path, e: sled::Error) -> Self {
        match e {
            sled::Error::Io(source) => Error::Io {
                path: path.to_path_buf(),
                source,
            },
            sled::Error::Corruption { at, .. } => {
                Error::corrupt(path, format!("sled corruption at {at:?}"))
            }
            other => Error::backend("sled", other),
        }
    }
}

impl From<tantivy::TantivyError> for Error {
    fn from(e: tantivy::TantivyError) -> Self {
        Error::backend("tantivy", e)
    }
}
