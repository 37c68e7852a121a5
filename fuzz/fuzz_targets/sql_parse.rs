//! Arbitrary UTF-8 into the query language's front end: splitting, completeness, planning.
//! Nothing may panic, overflow the stack or run away; every outcome is a plan or an error.
//!
//! `cargo fuzz run sql_parse --sanitizer none -- -max_total_time=60` (from the repository root).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shopdb::fuzzing::sql_parse(data));
