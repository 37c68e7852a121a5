//! Typo tolerance: the shopper's misspelt search through the real binary, and the harness's
//! typo benchmark (queries from the catalog's titles) on the tiny generated shop.

use shopdb::bench::{self, BenchOptions, Dataset, Scale};

use super::cli::{demo_shop, shopdb};
use super::support::tempdir;

fn titles(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.starts_with('p'))
        .map(|l| l.split('|').nth(1).unwrap_or("").trim().to_string())
        .collect()
}

#[test]
fn runing_shoos_finds_running_shoes_on_the_demo_shop() {
    let tmp = demo_shop();
    let run = |sql: &str| {
        let out = shopdb(tmp.path(), &["shop"], Some(sql)).ok();
        titles(&out.stdout)
    };
    let exact = run("SELECT id, title FROM search('running shoes') LIMIT 3;");
    assert_eq!(exact.len(), 3, "{exact:?}");
    for typed in [
        "runing shoos",
        "runnign shoes",
        "running shoos",
        "rnning sheos",
    ] {
        let hits = run(&format!("SELECT id, title FROM search('{typed}') LIMIT 3;"));
        assert_eq!(hits.len(), 3, "{typed}: {hits:?}");
        for t in &hits {
            assert!(t.contains("Running Shoe"), "{typed}: {hits:?}");
        }
    }
    // Off, the misspelt words match nothing.
    let out = shopdb(
        tmp.path(),
        &["shop"],
        Some("SELECT id FROM search('runing shoos', typos => false) LIMIT 3;"),
    );
    let rows = titles(&out.stdout);
    assert!(rows.is_empty() || out.code != 0, "{}", out.stdout);
}

#[test]
fn the_typo_benchmark_recovers_one_typo_queries_and_leaves_correct_ones_alone() {
    let tmp = tempdir();
    let options = BenchOptions {
        speed: false,
        typos: 300,
        ..BenchOptions::new(Dataset::Generated(Scale::Tiny), tmp.path().join("db"))
    };
    let report = bench::run(&options).expect("bench run");
    let t = report.typo.clone().expect("typo row");
    eprintln!("{t:?}");
    assert!(t.queries >= 100, "{t:?}");
    // Correctly spelled queries: typo tolerance never changes their top 10.
    assert_eq!(t.clean_unchanged, 1.0, "{t:?}");
    // One typo in one word: what the queries found as typed are still found, and
    // tolerance finds far more than none.
    assert!(t.one_typo_recovered >= 0.9, "{t:?}");
    assert!(
        t.one_typo_found > t.one_typo_found_without_tolerance + 0.2,
        "{t:?}"
    );
    assert!(t.every_word_found <= t.clean_found, "{t:?}");
    // Half a last word typed: its whole word is mostly among the 8 suggestions.
    assert!(t.suggest_word_found >= 0.5, "{t:?}");
    assert!(
        t.suggest_p99_ms >= t.suggest_p50_ms && t.suggest_p50_ms > 0.0,
        "{t:?}"
    );
    let md = report.markdown();
    assert!(md.contains("## Typo tolerance"), "{md}");
}
