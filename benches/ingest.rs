//! Ingest throughput: products with 64-d vectors into catalog + text + vector index, and
//! batched events. Deterministic generated data.
//!
//! `cargo bench --bench ingest`

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use shopdb::{Engine, Event, EventKind, Product};

const DIM: usize = 64;

fn rng(seed: &mut u64) -> f32 {
    *seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
}

/// Products in 50 categories; vectors are the category centroid plus noise (clustered, as
/// real embeddings are).
fn products(n: usize, offset: usize) -> Vec<Product> {
    let mut seed = 7u64;
    let centroids: Vec<Vec<f32>> = (0..50)
        .map(|_| (0..DIM).map(|_| rng(&mut seed) - 0.5).collect())
        .collect();
    (offset..offset + n)
        .map(|i| {
            let c = i % 50;
            let v: Vec<f32> = centroids[c]
                .iter()
                .map(|x| x + 0.15 * (rng(&mut seed) - 0.5))
                .collect();
            Product::new(format!("p{i}"))
                .title(format!(
                    "Product {i} lightweight running shoe model {}",
                    i % 997
                ))
                .description("Breathable mesh upper, cushioned sole, for road and trail.")
                .brand(format!("brand{}", i % 40))
                .category(format!("cat{}/sub{}", c % 10, c))
                .price(5.0 + (i % 300) as f64)
                .embedding(v)
        })
        .collect()
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
                (dir, e, products(BATCH, 0))
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
                let batch: Vec<Product> = products(BATCH, 0)
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
    engine.upsert_products(products(2_000, 0)).expect("upsert");
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
                            format!("p{}", (i * 7) % 2_000),
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
