//! Arbitrary bytes as an import file (products JSONL, events CSV/TSV, MovieLens, RecBole
//! `.kg`/`.link`) into one small shop: typed errors, and a failed atomic import stores nothing.
//!
//! `cargo fuzz run import_readers --sanitizer none -- -max_total_time=60`
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use shopdb::fuzzing::{self, Shop};

static SHOP: OnceLock<Shop> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let shop = SHOP.get_or_init(|| Shop::new(false).expect("the fixture shop opens"));
    fuzzing::import(shop, data);
});
