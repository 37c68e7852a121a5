//! Arbitrary UTF-8 into the query language's front end: splitting, completeness, planning.
//! Nothing may panic, overflow the stack or run away; every outcome is a plan or an error.
//!
//! `cargo fuzz run sql_parse --sanitizer none -- -max_total_time=60` (from the repository root).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = shopdb::sql::is_complete(text);
    if let Ok(plan) = shopdb::sql::plan(text) {
        // Plans are printable (EXPLAIN shows them).
        let _ = format!("{plan:?}");
    }
    if let Ok(statements) = shopdb::sql::split_script(text) {
        for s in &statements {
            // A piece of a script is never longer than the script, and plans like a statement.
            assert!(s.text.len() <= text.len());
            let _ = shopdb::sql::plan_source(s);
        }
    }
});
