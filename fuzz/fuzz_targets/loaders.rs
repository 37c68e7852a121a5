//! Arbitrary bytes as the files the engine reads back (vector manifest and slot file, model
//! file, config.json, store records): a typed error or a value, never a panic.
//!
//! `cargo fuzz run loaders --sanitizer none -- -max_total_time=60`
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shopdb::fuzzing::loaders(data));
