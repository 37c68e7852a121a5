//! Arbitrary requests (text, NaN/inf vectors, filters, k, candidates, fusion, budgets) against
//! a small trained shop: typed errors, or at most k distinct live hits that pass the filter.
//!
//! `cargo fuzz run query_builder --sanitizer none -- -max_total_time=60`
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use shopdb::fuzzing::{self, Shop};

static SHOP: OnceLock<Shop> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let shop = SHOP.get_or_init(|| Shop::new(true).expect("the fixture shop trains"));
    fuzzing::query(shop, data);
});
