//! Integration tests: one binary, one module per concern.

mod bad_input;
mod crash;
mod damaged;
mod models;
mod query;
mod storage;
mod support;
mod text_lang;
