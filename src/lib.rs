//! The README is the crate documentation, so its quickstart is compiled and run as a doctest.
#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod beir;
pub mod bench;
mod catalog;
mod channel;
mod codec;
mod config;
pub mod demo;
mod engine;
mod error;
pub mod eval;
mod events;
mod filter;
mod fsutil;
mod fusion;
#[doc(hidden)]
pub mod fuzzing;
mod generation;
mod graph;
pub mod import;
#[allow(missing_docs)]
pub mod models;
mod options;
mod query;
mod rerank;
pub mod sql;
mod state;
mod store;
mod text;
mod train;
mod tune;
mod vector;
mod writer;

pub use catalog::Product;
pub use channel::{Channel, ChannelScore, Fusion};
pub use config::{Config, HnswParams, Limits, Metric};
pub use engine::{Appended, Engine, EngineBuilder, Facets, Recovery, Scored, Stats};
pub use error::{Error, Result};
pub use events::{Event, EventKind};
pub use filter::Filter;
pub use fusion::ChannelWeights;
pub use query::{Explanation, Hit, Query};
pub use train::{
    Cleaning, EvalOn, EvalOptions, EvalReport, EvalRow, EventWeights, FittedOn, FusionHoldout,
    RatingWeight, RetrainPolicy, SplitKind, TrainOptions, TrainReport,
};
pub use tune::{Trial, TuneOptions, TuneReport};
pub use writer::Committed;
