//! The README is the crate documentation, so its quickstart is compiled and run as a doctest.
#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
// Library code returns errors; its unit tests may unwrap.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod access;
mod backup;
mod catalog;
mod channel;
mod codec;
mod config;
#[cfg(feature = "embed")]
mod embed;
mod engine;
mod error;
mod eval;
mod evaluate;
mod events;
#[cfg(feature = "parquet")]
mod export;
mod exposure;
mod filter;
mod fsutil;
mod fusion;
mod generation;
mod graph;
pub mod import;
mod metrics;
mod noise;
mod options;
mod progress;
mod pseudonym;
mod query;
mod rerank;
mod retention;
pub mod sql;
mod state;
mod store;
mod synonyms;
mod text;
mod train;
mod tune;
mod users;
mod vector;
mod writer;

// What the `shopdb` binary, the integration tests, the criterion benches and the fuzz
// targets reach into: public (and hidden from the documentation) only with the `cli`
// feature; without it the harness, the demo, the BEIR loader and the fuzzing entry points
// are not compiled and the models are private.
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod beir;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod bench;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod demo;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "cli")]
#[doc(hidden)]
#[allow(missing_docs)]
pub mod models;
// Without `cli` nothing outside the library reaches the models' accessors, the seed's rating
// predictors or the generators' extra draws, which the tests and the benches use.
#[cfg(not(feature = "cli"))]
#[allow(dead_code, unused_imports)]
mod models;

pub use access::{
    ChannelPart, ChannelShare, ExportedEvent, Profile, Reason, Recommended, UserExport,
};
pub use backup::BackupReport;
pub use catalog::Product;
pub use channel::{Channel, ChannelScore, Fusion, MfFactors, MfImportOptions, MfImportReport};
pub use config::{Config, HnswParams, Limits, Metric};
#[cfg(feature = "embed")]
pub use embed::{Embedder, EmbedderInfo, MAX_TOKENS};
pub use engine::{Appended, Engine, EngineBuilder, Facets, Recovery, Scored, Stats, Suggestion};
pub use error::{Error, KeyProblem, Result};
pub use evaluate::{EvalOn, EvalOptions, EvalReport, EvalRow, FittedOn};
pub use events::{Event, EventKind};
#[cfg(feature = "parquet")]
pub use export::ExportReport;
pub use exposure::Exposure;
pub use filter::Filter;
pub use fusion::ChannelWeights;
pub use models::mlp::{MlpConfig, MlpError};
pub use models::{
    ContentParams, ItemCfParams, ItemSimilarity, KgParams, MfParams, ModelError, PopularityParams,
    SeqConfig, UserCfParams, Weighting,
};
pub use noise::Count;
pub use pseudonym::MIN_KEY_BYTES as MIN_USER_KEY_BYTES;
pub use query::{Explanation, Hit, Query};
pub use retention::Retention;
pub use train::{
    CancelToken, Cleaning, EventWeights, FusionHoldout, RatingWeight, RetrainPolicy, SplitKind,
    TrainOptions, TrainReport,
};
pub use tune::{Trial, TuneOptions, TuneReport};
pub use writer::Committed;
