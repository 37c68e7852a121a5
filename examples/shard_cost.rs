//! # What sharding a catalog by category costs in ranking quality
//!
//! Run with `cargo run --release --example shard_cost` (MovieLens 100K from `SHOPDB_DATA`,
//! default `../shared/data`; it prints one line and stops when the folder is absent).
//!
//! A shop too large for one engine can split its catalog by category across engines and
//! merge their answers in the application (scatter-gather). Each engine then sees only the
//! events on its own products: co-occurrence across categories is lost. This measures the
//! loss on MovieLens 100K (a film's category is its first genre) with the next-item protocol:
//! each user's latest rating is held out, every engine trains on the rest of its part of the
//! log (tuning off, so that the runs are deterministic), and a user's top 10 is
//!
//! - `one engine`: one engine on the whole log;
//! - `N shards, by score`: each shard's top 10 for the user, merged by the fused score;
//! - `N shards, interleaved`: the shards' lists taken in turn (rank 1 of each, then 2, ...),
//!   for when scores from separately trained engines are not comparable.
//!
//! Films the user rated before are left out of every list. Reported: HR@10 and NDCG@10 over
//! the users, and each engine's training time.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Instant;

use shopdb::{Engine, Event, Product, Query, TrainOptions};

fn main() -> shopdb::Result<()> {
    let data = std::env::var_os("SHOPDB_DATA")
        .map_or_else(|| PathBuf::from("../shared/data"), PathBuf::from)
        .join("ml-100k");
    if !data.join("u.data").is_file() {
        println!("skipped: MovieLens 100K not found at {}", data.display());
        return Ok(());
    }
    let root = std::env::temp_dir().join(format!("shopdb-shards-{}", std::process::id()));
    let result = run(&data, &root);
    let _ = std::fs::remove_dir_all(&root);
    result
}

/// The held-out event of each user, and the rest of the log.
fn leave_last_out(events: Vec<Event>) -> (Vec<Event>, HashMap<String, String>) {
    let mut by_user: HashMap<String, Vec<Event>> = HashMap::new();
    for e in events {
        by_user.entry(e.user.clone()).or_default().push(e);
    }
    let mut train = Vec::new();
    let mut test = HashMap::new();
    for (user, mut evs) in by_user {
        evs.sort_by(|a, b| a.ts.cmp(&b.ts).then(a.item.cmp(&b.item)));
        if evs.len() >= 2 {
            if let Some(last) = evs.pop() {
                test.insert(user, last.item);
            }
        }
        train.extend(evs);
    }
    (train, test)
}

/// An engine holding `products` and the events on them, trained.
fn engine(dir: PathBuf, products: &[Product], events: &[Event]) -> shopdb::Result<(Engine, f64)> {
    let e = Engine::builder().dim(8).open(dir)?;
    e.upsert_products(products.to_vec())?;
    e.commit()?;
    let ids: HashSet<&str> = products.iter().map(|p| p.id.as_str()).collect();
    e.append_events(
        events
            .iter()
            .filter(|ev| ids.contains(ev.item.as_str()))
            .cloned()
            .collect(),
    )?;
    e.commit()?;
    let t = Instant::now();
    e.train(&TrainOptions {
        tune: None,
        ..TrainOptions::default()
    })?;
    Ok((e, t.elapsed().as_secs_f64()))
}

/// A user's top `n` of one engine, films rated before left out: `(id, fused score)`.
fn top(e: &Engine, user: &str, seen: &HashSet<String>, n: usize) -> Vec<(String, f32)> {
    let k = (seen.len() + n).min(1_000);
    let Ok(hits) = e.query(&Query::new().user(user).k(k)) else {
        return Vec::new(); // a user with no history in this shard
    };
    hits.into_iter()
        .filter(|h| !seen.contains(&h.id))
        .take(n)
        .map(|h| (h.id, h.score))
        .collect()
}

/// HR@10 and NDCG@10 of `lists` against the held-out items.
fn rate(lists: &HashMap<String, Vec<String>>, test: &HashMap<String, String>) -> (f64, f64) {
    let (mut hr, mut ndcg) = (0.0, 0.0);
    for (user, item) in test {
        if let Some(pos) = lists
            .get(user)
            .and_then(|l| l.iter().take(10).position(|i| i == item))
        {
            hr += 1.0;
            ndcg += 1.0 / ((pos + 2) as f64).log2();
        }
    }
    let n = test.len().max(1) as f64;
    (hr / n, ndcg / n)
}

fn run(data: &std::path::Path, root: &std::path::Path) -> shopdb::Result<()> {
    // The whole data set, read through the engine's own loader.
    let source = Engine::builder().dim(8).open(root.join("source"))?;
    shopdb::import::movielens(&source, data)?;
    let products: Vec<Product> = source
        .product_ids()
        .iter()
        .filter_map(|id| source.get_product(id).ok().flatten())
        .collect();
    let mut events = Vec::new();
    for u in source.user_ids() {
        events.extend(source.user_history(&u, None)?);
    }
    drop(source);
    let (train, test) = leave_last_out(events);
    let mut seen: HashMap<String, HashSet<String>> = HashMap::new();
    for e in &train {
        seen.entry(e.user.clone())
            .or_default()
            .insert(e.item.clone());
    }
    let none = HashSet::new();
    let mut categories: Vec<String> = products.iter().map(|p| p.category.clone()).collect();
    categories.sort();
    categories.dedup();
    println!(
        "MovieLens 100K: {} films in {} categories, {} training events, {} held-out users",
        products.len(),
        categories.len(),
        train.len(),
        test.len()
    );
    println!("\n| setup | HR@10 | NDCG@10 | NDCG@10 vs one engine | training s (each engine) |");
    println!("|---|---|---|---|---|");
    let (one, secs) = engine(root.join("one"), &products, &train)?;
    let lists: HashMap<String, Vec<String>> = test
        .keys()
        .map(|u| {
            let l = top(&one, u, seen.get(u).unwrap_or(&none), 10);
            (u.clone(), l.into_iter().map(|(i, _)| i).collect())
        })
        .collect();
    let (hr1, ndcg1) = rate(&lists, &test);
    println!("| one engine | {hr1:.4} | {ndcg1:.4} | 1.00 | {secs:.2} |");
    drop(one);
    for shards in [2usize, 4] {
        // Categories dealt to shards in turn, in name order.
        let shard_of = |p: &Product| {
            categories
                .iter()
                .position(|c| c == &p.category)
                .unwrap_or(0)
                % shards
        };
        let mut engines = Vec::new();
        let mut times = Vec::new();
        for s in 0..shards {
            let part: Vec<Product> = products
                .iter()
                .filter(|p| shard_of(p) == s)
                .cloned()
                .collect();
            let (e, secs) = engine(root.join(format!("s{shards}-{s}")), &part, &train)?;
            engines.push(e);
            times.push(format!("{secs:.2}"));
        }
        let mut by_score = HashMap::new();
        let mut interleaved = HashMap::new();
        for u in test.keys() {
            let s = seen.get(u).unwrap_or(&none);
            let per: Vec<Vec<(String, f32)>> = engines.iter().map(|e| top(e, u, s, 10)).collect();
            let mut all: Vec<(String, f32)> = per.iter().flatten().cloned().collect();
            all.sort_by(|a, b| b.1.total_cmp(&a.1));
            by_score.insert(u.clone(), all.into_iter().map(|(i, _)| i).collect());
            let mut turns = Vec::new();
            for r in 0..10 {
                for l in &per {
                    if let Some((i, _)) = l.get(r) {
                        turns.push(i.clone());
                    }
                }
            }
            interleaved.insert(u.clone(), turns);
        }
        for (how, lists) in [("by score", &by_score), ("interleaved", &interleaved)] {
            let (hr, ndcg) = rate(lists, &test);
            println!(
                "| {shards} shards, {how} | {hr:.4} | {ndcg:.4} | {:.2} | {} |",
                ndcg / ndcg1.max(1e-12),
                times.join(", ")
            );
        }
    }
    Ok(())
}
