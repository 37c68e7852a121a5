//! Query latency on a generated shop (the generator of `shopdb demo` and `shopdb bench`):
//! 100k products with 64-d vectors, 1M events, trained models. Prints p50/p95/p99 over a
//! fixed query set (single thread), then criterion timings of each user-visible read:
//! text search, vector search, CF scoring (recommendation with linear fusion of the model
//! channels), the MLP re-ranker, and the fused personalised query.
//!
//! `cargo bench --bench query` (set `SHOPDB_BENCH_PRODUCTS` / `SHOPDB_BENCH_EVENTS` to scale;
//! `SHOPDB_BENCH_SEQUENCE=N` also trains the sequence model for N epochs: its query cost does
//! not depend on how long it trained). `SHOPDB_BENCH_DB=DIR` keeps the built shop in `DIR`
//! and reuses it when `DIR` already holds a trained one, so a change to the query path is
//! measured again without building and training again; `SHOPDB_BENCH_ONLY=NAME` prints the
//! percentiles of that query kind only (`recommend_mlp`, ...), for a profile of one path.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic on failure

use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use shopdb::demo::{DemoOptions, Shop};
use shopdb::{Engine, Filter, Fusion, Query, TrainOptions};

const DIM: usize = 64;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn build(dir: &std::path::Path) -> (Engine, Shop) {
    let events = env("SHOPDB_BENCH_EVENTS", 1_000_000);
    let options = DemoOptions {
        products: env("SHOPDB_BENCH_PRODUCTS", 100_000),
        users: events / 50,
        events,
        end_ts: Some(1_735_689_600),
        train: false,
        ..DemoOptions::default()
    };
    let mut shop = shopdb::demo::shop(&options, DIM);
    let e = Engine::builder().dim(DIM).open(dir).expect("open");
    if dir.join("models").join("CURRENT").exists() {
        eprintln!("reusing the shop in {}", dir.display());
        return (e, shop);
    }
    let hidden = shopdb::demo::Progress::hidden();
    let t = Instant::now();
    let products = std::mem::take(&mut shop.products);
    let n = shopdb::demo::store_products(&e, products, 10_000, &hidden).expect("products");
    eprintln!("products: {n} in {:.1} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let n = shopdb::demo::store_events(&e, &shop.events, &hidden).expect("events");
    eprintln!("events: {n} in {:.1} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let sequence = std::env::var("SHOPDB_BENCH_SEQUENCE")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(|epochs| shopdb::SeqConfig {
            max_epochs: epochs,
            ..shopdb::SeqConfig::default()
        });
    let options = TrainOptions {
        sequence,
        ..TrainOptions::default()
    };
    e.train(&options).expect("train");
    eprintln!("training: {:.1} s", t.elapsed().as_secs_f64());
    (e, shop)
}

fn percentiles(name: &str, e: &Engine, queries: &[Query]) {
    let mut times = Vec::with_capacity(queries.len());
    for q in queries {
        let t = Instant::now();
        let hits = e.query(q).expect("query");
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(!hits.is_empty());
    }
    times.sort_by(f64::total_cmp);
    let p = |f: f64| times[((times.len() as f64 * f) as usize).min(times.len() - 1)];
    eprintln!(
        "{name}: p50 {:.3} ms, p95 {:.3} ms, p99 {:.3} ms over {} queries",
        p(0.5),
        p(0.95),
        p(0.99),
        times.len()
    );
}

fn bench(c: &mut Criterion) {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = std::env::var_os("SHOPDB_BENCH_DB")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| temp.path().to_path_buf());
    let (e, shop) = build(&dir);
    let users: Vec<String> = {
        let mut u: Vec<String> = shop.events.iter().map(|ev| ev.user.clone()).collect();
        u.dedup();
        u
    };
    let texts: Vec<&str> = shop.queries.iter().map(|q| q.text.as_str()).collect();
    // Distinct requests, so the hot-query cache never answers.
    let make = |kind: usize, i: usize| {
        let u = users[(i * 7919) % users.len()].clone();
        let text = texts[i % texts.len()];
        match kind {
            0 => Query::new().text(text).user(u).k(10).candidates(500),
            1 => Query::new()
                .user(u)
                .k(10)
                .candidates(200)
                .fusion(Fusion::Mlp),
            2 => Query::new().text(text).k(10).candidates(500),
            3 => Query::new()
                .text(text)
                .user(u)
                .filter(Filter::price(None, Some(100.0)))
                .k(10)
                .candidates(500),
            _ => Query::new()
                .user(u)
                .k(10)
                .candidates(200)
                .fusion(Fusion::default_linear()),
        }
    };
    for (kind, name) in [
        (0, "personalized_hybrid"),
        (1, "recommend_mlp"),
        (2, "search_text"),
        (3, "personalized_filtered"),
        (4, "recommend_linear"),
    ] {
        if std::env::var("SHOPDB_BENCH_ONLY").is_ok_and(|only| only != name) {
            continue;
        }
        // Only distinct requests: a repeated one would be answered by the cache.
        let mut seen = std::collections::HashSet::new();
        let qs: Vec<Query> = (0..500)
            .map(|i| make(kind, i))
            .filter(|q| seen.insert(format!("{q:?}")))
            .collect();
        percentiles(name, &e, &qs);
    }

    let mut g = c.benchmark_group("query");
    g.sample_size(50);
    // Each iteration takes the next request of a long list, so the cache never answers.
    let mut bench_kind = |name: &str, kind: usize| {
        let qs: Vec<Query> = (10_000..60_000).map(|i| make(kind, i)).collect();
        let mut i = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % qs.len();
                e.query(&qs[i]).expect("query")
            })
        });
    };
    bench_kind("personalized_hybrid", 0);
    bench_kind("recommend_mlp", 1);
    bench_kind("recommend_cf_linear", 4);
    let v = shop.queries[0].vector.clone();
    g.bench_function("vector_search_k10", |b| {
        b.iter(|| e.search_vector(&v, &Filter::All, 10).expect("vector"))
    });
    g.bench_function("text_search_k10", |b| {
        b.iter(|| e.search_text(texts[0], &Filter::All, 10).expect("text"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
