//! Integration tests: one binary, one module per concern.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic on failure

mod access;
mod backup;
mod bad_input;
mod bench;
mod cli;
mod concurrency;
mod crash;
mod damaged;
#[cfg(feature = "parquet")]
mod export;
mod exposure;
mod fuzz_corpus;
#[cfg(feature = "parquet")]
mod import_model;
mod io_faults;
mod layering;
mod limits;
mod models;
mod next_item;
mod noise;
mod privacy;
mod query;
mod scifact;
#[cfg(feature = "embed")]
mod semantic;
mod shell_stream;
mod sql;
mod sql_aggregate;
mod storage;
mod suggest;
mod support;
mod synonyms;
mod text_lang;
mod typo;
mod vector_filter;
