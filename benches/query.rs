//! Query latency on a generated shop: 100k products with 64-d vectors, 1M events, trained
//! models. Prints p50/p99 over a fixed query set (single thread), then criterion timings.
//!
//! `cargo bench --bench query` (set `SHOPDB_BENCH_PRODUCTS` / `SHOPDB_BENCH_EVENTS` to scale).

use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use shopdb::{Engine, Event, EventKind, Filter, Fusion, Product, Query, TrainOptions};

const DIM: usize = 64;
const CATEGORIES: usize = 200;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const WORDS: [&str; 16] = [
    "running",
    "shoe",
    "leather",
    "bag",
    "phone",
    "case",
    "wireless",
    "headphones",
    "cotton",
    "shirt",
    "steel",
    "bottle",
    "wooden",
    "chair",
    "garden",
    "lamp",
];

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn build(dir: &std::path::Path) -> Engine {
    let n_products = env("SHOPDB_BENCH_PRODUCTS", 100_000);
    let n_events = env("SHOPDB_BENCH_EVENTS", 1_000_000);
    let n_users = n_events / 50;
    let e = Engine::builder().dim(DIM).open(dir).expect("open");
    let mut rng = Rng(11);
    let centroids: Vec<Vec<f32>> = (0..CATEGORIES)
        .map(|_| (0..DIM).map(|_| rng.f32() - 0.5).collect())
        .collect();
    let t = Instant::now();
    for chunk in (0..n_products).collect::<Vec<_>>().chunks(10_000) {
        let batch: Vec<Product> = chunk
            .iter()
            .map(|&i| {
                let c = i % CATEGORIES;
                Product::new(format!("p{i}"))
                    .title(format!(
                        "{} {} {} model {i}",
                        WORDS[c % 16],
                        WORDS[(c / 16 + i) % 16],
                        WORDS[i % 16]
                    ))
                    .brand(format!("brand{}", i % 300))
                    .category(format!("c{}/s{c}", c % 20))
                    .price(1.0 + (i % 500) as f64)
                    .embedding(
                        centroids[c]
                            .iter()
                            .map(|x| x + 0.1 * (rng.f32() - 0.5))
                            .collect(),
                    )
            })
            .collect();
        e.upsert_products(batch).expect("upsert");
        e.commit().expect("commit");
    }
    eprintln!(
        "products: {n_products} in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let mut events = Vec::with_capacity(100_000);
    for j in 0..n_events {
        let u = j % n_users;
        let taste = (u * 7) % CATEGORIES;
        let c = if rng.below(10) < 8 {
            taste
        } else {
            rng.below(CATEGORIES)
        };
        let item = c + CATEGORIES * rng.below(n_products / CATEGORIES / 4);
        let kind = [
            EventKind::View,
            EventKind::Click,
            EventKind::Cart,
            EventKind::Purchase,
        ][rng.below(4)];
        events.push(Event::new(
            format!("u{u}"),
            format!("p{item}"),
            kind,
            1_600_000_000 + j as i64,
        ));
        if events.len() == 100_000 {
            e.append_events(std::mem::take(&mut events))
                .expect("append");
            e.commit().expect("commit");
        }
    }
    e.append_events(events).expect("append");
    e.commit().expect("commit");
    eprintln!("events: {n_events} in {:.1} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    e.train(&TrainOptions::default()).expect("train");
    eprintln!("training: {:.1} s", t.elapsed().as_secs_f64());
    e
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
    let dir = tempfile::tempdir().expect("tempdir");
    let e = build(dir.path());
    let n_users = env("SHOPDB_BENCH_EVENTS", 1_000_000) / 50;
    let mut rng = Rng(5);
    let make = |kind: usize, rng: &mut Rng| {
        let u = format!("u{}", rng.below(n_users));
        let text = format!("{} {}", WORDS[rng.below(16)], WORDS[rng.below(16)]);
        match kind {
            0 => Query::new().text(text).user(u).k(10).candidates(500),
            1 => Query::new().user(u).k(10).candidates(200),
            2 => Query::new().text(text).k(10).candidates(500),
            _ => Query::new()
                .text(text)
                .user(u)
                .filter(Filter::price(None, Some(100.0)))
                .k(10)
                .candidates(500),
        }
    };
    for (kind, name) in [
        (0, "personalized_hybrid"),
        (1, "recommend_mlp"),
        (2, "search_text"),
        (3, "personalized_filtered"),
    ] {
        let qs: Vec<Query> = (0..500).map(|_| make(kind, &mut rng)).collect();
        percentiles(name, &e, &qs);
    }
    let linear: Vec<Query> = (0..500)
        .map(|_| make(1, &mut rng).fusion(Fusion::default_linear()))
        .collect();
    percentiles("recommend_linear", &e, &linear);

    let mut g = c.benchmark_group("query");
    g.sample_size(50);
    let q = make(0, &mut rng);
    g.bench_function("personalized_hybrid", |b| {
        b.iter(|| e.query(&q).expect("query"))
    });
    let q = make(1, &mut rng);
    g.bench_function("recommend_mlp", |b| b.iter(|| e.query(&q).expect("query")));
    let v: Vec<f32> = (0..DIM).map(|_| rng.f32() - 0.5).collect();
    g.bench_function("vector_search_k10", |b| {
        b.iter(|| e.search_vector(&v, &Filter::All, 10).expect("vector"))
    });
    g.bench_function("text_search_k10", |b| {
        b.iter(|| {
            e.search_text("running shoe", &Filter::All, 10)
                .expect("text")
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
