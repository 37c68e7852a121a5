//! The sentence encoder through the binary: `shopdb DIR --embedder DIR` embeds products
//! inserted without a vector and searches by meaning, and `shopdb demo --embedder DIR` adds
//! a search by meaning to its examples. Needs the real all-MiniLM-L6-v2 files
//! (`SHOPDB_MINILM`, else `target/minilm` from `tools/fetch_minilm.sh`); skips without them.

use std::path::{Path, PathBuf};

use super::cli::shopdb;
use super::support::tempdir;

fn minilm_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("SHOPDB_MINILM")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/minilm"));
    let found = ["config.json", "tokenizer.json", "model.safetensors"]
        .iter()
        .all(|f| dir.join(f).is_file());
    if !found {
        println!("skipped: no all-MiniLM-L6-v2 (set SHOPDB_MINILM or run tools/fetch_minilm.sh target/minilm)");
    }
    found.then_some(dir)
}

#[test]
fn the_shell_embeds_products_and_searches_by_meaning() {
    let Some(model) = minilm_dir() else { return };
    let tmp = tempdir();
    let model = model.display().to_string();
    let run = |sql: &str| {
        shopdb(
            tmp.path(),
            &["db", "--embedder", &model, "--csv", "-c", sql],
            None,
        )
    };
    run("INSERT INTO products (id, title, category) VALUES \
         ('boots', 'Waterproof leather hiking boots', 'shoes'), \
         ('sandals', 'Beach sandals for summer', 'shoes'), \
         ('kettle', 'Electric kettle 1.7 litres', 'kitchen'), \
         ('laptop', 'Laptop sleeve 14 inch', 'bags')")
    .ok();
    // No product holds any of these words: BM25 alone finds nothing.
    let query = "something to keep my feet dry on muddy trails";
    let words = run(&format!("SELECT count(*) FROM search('{query}')"))
        .ok()
        .stdout;
    assert_eq!(words.trim(), "count(*)\n0", "no product matches a word");
    let by_meaning = run(&format!("SELECT id FROM search('{query}') LIMIT 1"))
        .ok()
        .stdout;
    assert_eq!(by_meaning.trim(), "id\nboots");
    // The database remembers its encoder: opened without one it still serves, and a text
    // search says that it searched words only (opening it with another model is refused,
    // checked in the library's tests).
    let without = |sql: &str| {
        shopdb(tmp.path(), &["db", "--csv", "-c", sql], None)
            .ok()
            .stdout
    };
    assert_eq!(
        without("SELECT count(*) FROM products").trim(),
        "count(*)\n4"
    );
    // (Notes travel with the hits: a search whose words match.)
    let explain = "EXPLAIN SELECT id FROM search('waterproof boots') LIMIT 1";
    let explained = without(explain);
    assert!(
        explained.contains("opened without it, the text is searched by its words only"),
        "{explained}"
    );
    assert!(!run(explain).ok().stdout.contains("opened without it"));
}

#[test]
fn the_demo_adds_a_search_by_meaning() {
    let Some(model) = minilm_dir() else { return };
    let tmp = tempdir();
    let model = model.display().to_string();
    let out = shopdb(
        tmp.path(),
        &["demo", "shop", "--small", "--embedder", &model],
        None,
    )
    .ok()
    .stdout;
    let example = shopdb::demo::SEMANTIC_EXAMPLE;
    let at = out
        .find(example)
        .unwrap_or_else(|| panic!("the example is run: {out}"));
    let after = &out[at..];
    assert!(after.contains("(5 rows)"), "{after}");
}
