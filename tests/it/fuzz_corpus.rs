//! Every file of `fuzz/corpus/<target>/` through the code its fuzz target runs
//! (`shopdb::fuzzing`), so the seeds and every crash reproducer kept there are checked on
//! stable by `cargo test`, without cargo-fuzz. Plus the fuzzers' findings as plain tests.

use std::path::{Path, PathBuf};

use shopdb::fuzzing::{self, Shop};
use shopdb::{Engine, Filter, Product};

use crate::support::tempdir;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

/// Runs `check` on every corpus file of `target`, naming the file that fails.
fn replay(target: &str, check: impl Fn(&[u8])) -> usize {
    let files = corpus(target);
    for (path, bytes) in &files {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(bytes)));
        assert!(outcome.is_ok(), "{target}: {} failed", path.display());
    }
    files.len()
}

#[test]
fn sql_parse_corpus_replays() {
    replay("sql_parse", fuzzing::sql_parse);
}

#[test]
fn import_readers_corpus_replays() {
    let shop = Shop::new(false).unwrap();
    replay("import_readers", |b| fuzzing::import(&shop, b));
}

#[test]
fn query_builder_corpus_replays() {
    let shop = Shop::new(true).unwrap();
    replay("query_builder", |b| fuzzing::query(&shop, b));
}

#[test]
fn loaders_corpus_replays() {
    replay("loaders", fuzzing::loaders);
}

#[test]
fn ops_corpus_replays() {
    replay("ops", fuzzing::ops);
}

/// The fuzz targets' own directory lists the same targets as this file.
#[test]
fn every_fuzz_target_has_a_replayed_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut targets: Vec<String> = std::fs::read_dir(root.join("fuzz_targets"))
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            p.file_stem().unwrap().to_string_lossy().into_owned()
        })
        .collect();
    targets.sort();
    assert_eq!(
        targets,
        [
            "import_readers",
            "loaders",
            "ops",
            "query_builder",
            "sql_parse"
        ]
    );
    for t in &targets {
        assert!(!corpus(t).is_empty());
    }
}

fn priced(dir: &Path) -> Engine {
    let e = Engine::builder().dim(4).open(dir).unwrap();
    e.upsert_products(
        (0..6)
            .map(|i| {
                Product::new(format!("p{i}"))
                    .title("shoe")
                    .brand(if i % 2 == 0 { "Acme" } else { "Globex" })
                    .price(10.0 * f64::from(i))
            })
            .collect(),
    )
    .unwrap();
    e.commit().unwrap();
    e
}

fn ids(e: &Engine, f: &Filter) -> Vec<String> {
    let mut v: Vec<String> = e
        .search_text("shoe", f, 10)
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    v.sort();
    v
}

/// Found by `query_builder`: an empty `And` matched nothing in text search but everything in
/// the other channels.
#[test]
fn an_empty_conjunction_holds_for_every_product_in_text_search() {
    let dir = tempdir();
    let e = priced(dir.path());
    assert_eq!(ids(&e, &Filter::And(vec![])).len(), 6);
    assert!(ids(&e, &Filter::Not(Box::new(Filter::And(vec![])))).is_empty());
}

/// Found by `query_builder`: a price range inside an excluded conjunction panicked inside
/// tantivy (an overflow in its fast-field range scan, debug builds).
#[test]
fn an_excluded_conjunction_with_a_price_range_is_answered() {
    let dir = tempdir();
    let e = priced(dir.path());
    let range = Filter::price(Some(15.0), None);
    let not_and = |other: Filter| Filter::Not(Box::new(Filter::And(vec![range.clone(), other])));
    assert_eq!(ids(&e, &not_and(Filter::All)), ["p0", "p1"]);
    assert_eq!(
        ids(&e, &not_and(Filter::price(None, Some(35.0)))),
        ["p0", "p1", "p4", "p5"]
    );
    assert_eq!(
        ids(&e, &not_and(Filter::brand("Acme"))),
        ["p0", "p1", "p3", "p5"]
    );
}
