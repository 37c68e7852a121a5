//! Integration tests: one binary, one module per concern.

mod bad_input;
mod bench;
mod cli;
mod crash;
mod damaged;
mod models;
mod query;
mod scifact;
mod sql;
mod storage;
mod support;
mod text_lang;
