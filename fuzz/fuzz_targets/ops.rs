//! A random sequence of upserts, deletes, events, commits, rollbacks, forgets, reopens and
//! queries on a fresh engine, checked against an in-memory model after each commit and reopen.
//!
//! `cargo fuzz run ops --sanitizer none -- -max_total_time=60`
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shopdb::fuzzing::ops(data));
