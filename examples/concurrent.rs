//! # Concurrent readers and one writer
//!
//! Share the engine as `Arc<Engine>`: queries take `&self` and run while a writer commits.
//! A query never waits on a commit's disk writes, and never sees a write before its commit.
//! Run with `cargo run --release --example concurrent`.

#[path = "support/shop.rs"]
mod shop;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shopdb::{Engine, Event, EventKind, Product, Query, TrainOptions};

fn main() -> shopdb::Result<()> {
    let dir = std::env::temp_dir().join(format!("shopdb-concurrent-{}", std::process::id()));
    let engine = Arc::new(Engine::builder().dim(shop::DIM).open(&dir)?);
    engine.upsert_products(shop::products())?;
    engine.append_events(shop::events())?;
    engine.commit()?;
    engine.train(&TrainOptions::default())?;

    // # Readers
    //
    // Two threads search and recommend in a loop and record how long each query took. A
    // product named `new-*` must only appear once the writer's `commit()` for it returned.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (engine, stop, acked) = (engine.clone(), stop.clone(), acked.clone());
            std::thread::spawn(move || -> shopdb::Result<Vec<Duration>> {
                let mut times = Vec::new();
                let mut i = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    let user = format!("u{:02}", (i * 7 + r) % 40);
                    let q = if i.is_multiple_of(2) {
                        Query::new().text("shoe").user(user).k(10)
                    } else {
                        Query::new().user(user).k(10)
                    };
                    let t = Instant::now();
                    let hits = engine.query(&q)?;
                    times.push(t.elapsed());
                    let committed = acked.load(Ordering::SeqCst);
                    for h in hits.iter().filter_map(|h| h.id.strip_prefix("new-")) {
                        let n: usize = h.parse().unwrap_or(usize::MAX);
                        assert!(n <= committed, "saw new-{n} before its commit");
                    }
                    i += 1;
                }
                Ok(times)
            })
        })
        .collect();

    // # The writer
    //
    // Stages a product and an event, commits (durable when it returns), then announces it.
    let until = Instant::now() + Duration::from_secs(2);
    let mut n = 0;
    while Instant::now() < until {
        n += 1;
        engine.upsert_product(
            Product::new(format!("new-{n}"))
                .title(format!("new running shoe {n}"))
                .category("shoes/running")
                .embedding(vec![0.9, 0.1, 0.1, 0.0]),
        )?;
        engine.append_event(Event::new(
            "u00",
            format!("new-{n}"),
            EventKind::View,
            1_700_200_000 + n as i64,
        ))?;
        engine.commit()?;
        acked.store(n, Ordering::SeqCst);
    }
    stop.store(true, Ordering::SeqCst);

    let mut times = Vec::new();
    for r in readers {
        match r.join() {
            Ok(t) => times.extend(t?),
            Err(_) => panic!("a reader failed"),
        }
    }
    times.sort();
    let p = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    println!(
        "{n} commits; {} queries: p50 {:?}, p99 {:?}, max {:?}",
        times.len(),
        p(0.5),
        p(0.99),
        p(1.0)
    );

    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
