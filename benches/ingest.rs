//! Ingest throughput: generated products with 64-d vectors into catalog + text + vector
//! index (and without vectors), and batched events. Deterministic generated data.
//!
//! `cargo bench --bench ingest`

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic on failure

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use shopdb::demo::DemoOptions;
use shopdb::{Engine, Event, EventKind, Product};

const DIM: usize = 64;

/// `n` products of the generated shop (the generator of `shopdb demo` and `shopdb bench`):
/// bilingual titles and descriptions, brands, categories, attributes and 64-d vectors
/// clustered by category and brand, as real embeddings are.
fn products(n: usize) -> Vec<Product> {
    let options = DemoOptions {
        products: n,
        users: 0,
        events: 0,
        end_ts: Some(1_735_689_600),
        train: false,
        ..DemoOptions::default()
    };
    shopdb::demo::shop(&options, DIM).products
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("ingest");
    g.sample_size(10);

    const BATCH: usize = 5_000;
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("products_64d_batch_5000", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().expect("tempdir");
                let e = Engine::builder().dim(DIM).open(dir.path()).expect("open");
                (dir, e, products(BATCH))
            },
            // Timed: staging and the commit (store fsync, text commit, graph insertion).
            // The engine is dropped after timing.
            |(dir, e, batch)| {
                e.upsert_products(batch).expect("upsert");
                e.commit().expect("commit");
                (dir, e)
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("products_no_vector_batch_5000", |b| {
        b.iter_batched(
            || {
                let batch: Vec<Product> = products(BATCH)
                    .into_iter()
                    .map(|mut p| {
                        p.embedding = None;
                        p
                    })
                    .collect();
                let dir = tempfile::tempdir().expect("tempdir");
                let e = Engine::builder().dim(DIM).open(dir.path()).expect("open");
                (dir, e, batch)
            },
            |(dir, e, batch)| {
                e.upsert_products(batch).expect("upsert");
                e.commit().expect("commit");
                (dir, e)
            },
            BatchSize::PerIteration,
        )
    });

    const EVENTS: usize = 50_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::builder().dim(DIM).open(dir.path()).expect("open");
    engine.upsert_products(products(2_000)).expect("upsert");
    engine.commit().expect("commit");
    let mut round = 0i64;
    g.throughput(Throughput::Elements(EVENTS as u64));
    g.bench_function("events_batch_50000", |b| {
        b.iter_batched(
            || {
                round += 1;
                (0..EVENTS)
                    .map(|i| {
                        Event::new(
                            format!("u{}", i % 5_000),
                            format!("p{:05}", (i * 7) % 2_000 + 1),
                            EventKind::Click,
                            1_600_000_000 + round * 100_000 + i as i64,
                        )
                    })
                    .collect::<Vec<_>>()
            },
            |events| {
                engine.append_events(events).expect("append");
                engine.commit().expect("commit");
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
