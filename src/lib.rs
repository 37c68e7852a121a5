//! # shopdb
//!
//! An embedded search-and-recommend database engine for e-commerce. One [`Engine`] lives in
//! one directory and holds the catalog, a BM25 text index (English and Chinese), an HNSW
//! vector index, the interaction log and a knowledge graph.
//!
//! ```
//! use shopdb::{Engine, Event, EventKind, Filter, Product};
//!
//! # fn main() -> shopdb::Result<()> {
//! let dir = tempfile::tempdir().map_err(|e| shopdb::Error::Io { path: "tmp".into(), source: e })?;
//! let engine = Engine::builder().dim(4).open(dir.path())?;
//!
//! engine.upsert_product(
//!     Product::new("p1")
//!         .title("Trail running shoe 男士轻便跑步鞋")
//!         .brand("Acme")
//!         .category("shoes/running")
//!         .price(59.9)
//!         .embedding(vec![0.9, 0.1, 0.0, 0.0]),
//! )?;
//! engine.upsert_product(
//!     Product::new("p2")
//!         .title("Leather office shoe")
//!         .brand("Oxford")
//!         .category("shoes/formal")
//!         .price(120.0)
//!         .embedding(vec![0.0, 0.2, 0.9, 0.1]),
//! )?;
//! engine.append_event(Event::new("u1", "p1", EventKind::Purchase, 1_700_000_000))?;
//! engine.commit()?; // durable and visible from here on
//!
//! // English stemming: "runs" finds "running"; Chinese segmentation: 跑步鞋 finds 男士轻便跑步鞋.
//! assert_eq!(engine.search_text("runs", &Filter::All, 10)?[0].id, "p1");
//! assert_eq!(engine.search_text("跑步鞋", &Filter::All, 10)?[0].id, "p1");
//!
//! // Filters apply inside every channel.
//! let cheap = Filter::price(None, Some(100.0));
//! let near = engine.search_vector(&[0.0, 0.2, 0.9, 0.1], &cheap, 10)?;
//! assert_eq!(near[0].id, "p1");
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod catalog;
mod codec;
mod config;
pub mod demo;
mod engine;
mod error;
pub mod eval;
mod events;
mod filter;
mod fsutil;
mod graph;
pub mod import;
#[allow(missing_docs)]
pub mod models;
mod query;
pub mod sql;
mod store;
mod text;
mod train;
mod vector;
mod writer;

pub use catalog::Product;
pub use config::{Config, HnswParams, Limits, Metric};
pub use engine::{Appended, Committed, Engine, EngineBuilder, Recovery, Scored, Stats};
pub use error::{Error, Result};
pub use events::{Event, EventKind};
pub use filter::Filter;
pub use query::{Channel, ChannelScore, Explanation, Fusion, Hit, Query};
pub use train::{
    Cleaning, EvalOn, EvalOptions, EvalReport, EvalRow, EventWeights, RatingWeight, SplitKind,
    TrainOptions, TrainReport,
};
