//! A reader's query latency with and without a writer committing in a loop, on the demo
//! shop (3,000 products, 2,000 users, 300k events, trained models).
//!
//! The reader runs personalised searches (text and user), every request distinct so the
//! hot-query cache never answers; the writer commits one event at a time, as fast as it can.
//! Each phase runs `SHOPDB_READERS_SECS` seconds (default 8) and prints p50, p99 and the
//! slowest query; then criterion times the same query in both conditions.
//!
//! `cargo bench --bench readers`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use shopdb::demo::{DemoOptions, Shop};
use shopdb::{Engine, Event, EventKind, Query, TrainOptions};

const DIM: usize = 64;

fn build(dir: &std::path::Path) -> (Engine, Shop) {
    let options = DemoOptions {
        end_ts: Some(1_735_689_600),
        train: false,
        ..DemoOptions::default()
    };
    let mut shop = shopdb::demo::shop(&options, DIM);
    let e = Engine::builder().dim(DIM).open(dir).expect("open");
    for chunk in std::mem::take(&mut shop.products).chunks(1_000) {
        e.upsert_products(chunk.to_vec()).expect("products");
        e.commit().expect("commit");
    }
    for chunk in shop.events.chunks(50_000) {
        e.append_events(chunk.to_vec()).expect("events");
        e.commit().expect("commit");
    }
    // A personalised search fuses with the seed formula: no re-ranker or tuning needed.
    let opts = TrainOptions {
        tune: None,
        mlp: None,
        ..TrainOptions::default()
    };
    e.train(&opts).expect("train");
    (e, shop)
}

/// The `i`-th distinct personalised search.
struct Requests {
    users: Vec<String>,
    texts: Vec<String>,
}

impl Requests {
    fn new(shop: &Shop) -> Self {
        let mut users: Vec<String> = shop.events.iter().map(|ev| ev.user.clone()).collect();
        users.dedup();
        let texts = shop.queries.iter().map(|q| q.text.clone()).collect();
        Requests { users, texts }
    }

    fn get(&self, i: usize) -> Query {
        Query::new()
            .text(self.texts[i % self.texts.len()].clone())
            .user(self.users[(i / self.texts.len() * 7919 + i) % self.users.len()].clone())
            .k(10)
    }
}

/// Commits single events until `stop`; returns how many.
fn writer(e: &Engine, users: &[String], items: &[String], stop: &AtomicBool) -> u64 {
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let i = n as usize;
        let ev = Event::new(
            users[(i * 31) % users.len()].clone(),
            items[(i * 17) % items.len()].clone(),
            EventKind::View,
            1_735_689_600 + n as i64,
        );
        e.append_event(ev).expect("stage");
        e.commit().expect("commit");
        n += 1;
    }
    n
}

/// Runs distinct requests for `secs`; returns each query's milliseconds.
fn reader(e: &Engine, requests: &Requests, from: usize, secs: f64) -> Vec<f64> {
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let mut times = Vec::new();
    let mut i = from;
    while Instant::now() < until {
        let q = requests.get(i);
        let t = Instant::now();
        e.query(&q).expect("query");
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        i += 1;
    }
    times
}

fn report(name: &str, mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    let p = |f: f64| times[((times.len() as f64 * f) as usize).min(times.len() - 1)];
    eprintln!(
        "{name}: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms over {} queries",
        p(0.5),
        p(0.99),
        p(1.0),
        times.len()
    );
    p(0.99)
}

fn bench(c: &mut Criterion) {
    let secs: f64 = std::env::var("SHOPDB_READERS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8.0);
    let dir = tempfile::tempdir().expect("tempdir");
    let (e, shop) = build(dir.path());
    let e = Arc::new(e);
    let requests = Arc::new(Requests::new(&shop));
    let items: Arc<Vec<String>> = Arc::new(e.product_ids());

    let alone = report("no writer", reader(&e, &requests, 0, secs));
    let stop = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(AtomicU64::new(0));
    let spawn_writer = || {
        let (e, stop, commits) = (e.clone(), stop.clone(), commits.clone());
        let (users, items) = (requests.clone(), items.clone());
        std::thread::spawn(move || {
            let n = writer(&e, &users.users, &items, &stop);
            commits.fetch_add(n, Ordering::SeqCst);
        })
    };
    let w = spawn_writer();
    let t = Instant::now();
    let busy = report(
        "one writer committing single events",
        reader(&e, &requests, 1_000_000, secs),
    );
    stop.store(true, Ordering::SeqCst);
    w.join().expect("writer");
    eprintln!(
        "writer: {} commits in {:.1} s; p99 with the writer / without: {:.2}x",
        commits.load(Ordering::SeqCst),
        t.elapsed().as_secs_f64(),
        busy / alone
    );

    let mut g = c.benchmark_group("readers");
    let mut i = 2_000_000;
    g.bench_function("personalised_search/no_writer", |b| {
        b.iter(|| {
            i += 1;
            e.query(&requests.get(i)).expect("query")
        })
    });
    stop.store(false, Ordering::SeqCst);
    let w = spawn_writer();
    g.bench_function("personalised_search/one_writer", |b| {
        b.iter(|| {
            i += 1;
            e.query(&requests.get(i)).expect("query")
        })
    });
    stop.store(true, Ordering::SeqCst);
    w.join().expect("writer");
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
