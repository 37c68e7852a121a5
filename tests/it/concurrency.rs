//! Four readers query (search, recommend, get, the knowledge graph) while one writer ingests
//! and commits.
//!
//! Readers must never fail, never see a write before its commit (staged or rolled-back
//! products, knowledge-graph names a commit allocates), and never see counts go backwards. The p99 read latency is printed. Duration:
//! `SHOPDB_CONCURRENCY_SECS` (default 30).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shopdb::{Engine, Event, EventKind, Filter, Product, Query};

use crate::support::{tempdir, vector, Rng};

const DIM: usize = 8;

/// What the writer has told the readers so far.
#[derive(Default)]
struct Progress {
    /// Products `p0..=acked - 1` were committed (`commit()` returned).
    acked: AtomicU64,
    /// Products below this number may be in a commit that is running: nothing above it was
    /// ever handed to `commit()`.
    committing: AtomicU64,
    stop: AtomicBool,
}

fn product(i: u64) -> Product {
    Product::new(format!("p{i}"))
        .title(format!("common tok{i}"))
        .brand(["Acme", "Globex"][(i % 2) as usize])
        .embedding(vector(i, DIM))
}

/// The number in a product id `p<n>`; ghosts and anything else are `None`.
fn number(id: &str) -> Option<u64> {
    id.strip_prefix('p')?.parse().ok()
}

/// The writer: batches of products and events, each committed; every fifth round also
/// stages a ghost product and rolls it back.
fn write(e: &Engine, progress: &Progress, until: Instant) -> u64 {
    let mut next = progress.acked.load(Ordering::SeqCst);
    let mut round = 0u64;
    while Instant::now() < until {
        round += 1;
        if round.is_multiple_of(5) {
            e.upsert_product(
                Product::new(format!("ghost{round}")).title("common ghost never committed"),
            )
            .unwrap();
            e.add_triples(vec![(
                format!("ghost{round}"),
                "made_by".into(),
                format!("ghost_maker{round}"),
            )])
            .unwrap();
            std::thread::sleep(Duration::from_millis(2));
            e.rollback();
        }
        let n = 1 + round % 4;
        e.upsert_products((next..next + n).map(product).collect())
            .unwrap();
        let events = (next..next + n)
            .map(|j| {
                Event::new(
                    format!("u{}", j % 7),
                    format!("p{j}"),
                    EventKind::View,
                    1_600_000_000 + j as i64,
                )
            })
            .collect();
        e.append_events(events).unwrap();
        // Each product gets a maker of its own: a new entity name in every commit.
        e.add_triples(
            (next..next + n)
                .map(|j| (format!("item:p{j}"), "made_by".into(), format!("maker{j}")))
                .collect(),
        )
        .unwrap();
        // Staged but not yet committed: readers must not see these.
        std::thread::sleep(Duration::from_millis(2));
        progress.committing.store(next + n, Ordering::SeqCst);
        e.commit().unwrap();
        progress.acked.store(next + n, Ordering::SeqCst);
        next += n;
    }
    next
}

const KINDS: [&str; 5] = ["search", "recommend", "vector", "get", "graph"];

/// One reader's loop; returns the latency of every read by kind (index into `KINDS`).
fn read(e: &Engine, progress: &Progress, seed: u64) -> Result<Vec<(usize, Duration)>, String> {
    let mut rng = Rng(seed);
    let mut latencies = Vec::new();
    let (mut last_count, mut last_seq) = (0usize, 0u64);
    while !progress.stop.load(Ordering::SeqCst) {
        let acked = progress.acked.load(Ordering::SeqCst);
        let started = Instant::now();
        let kind = rng.below(KINDS.len() as u64) as usize;
        let seen: Vec<String> = match kind {
            0 => e
                .search_text("common", &Filter::All, 50)
                .map_err(|err| format!("search_text: {err}"))?
                .into_iter()
                .map(|h| h.id)
                .collect(),
            1 => e
                .query(&Query::new().user(format!("u{}", rng.below(7))).k(20))
                .map_err(|err| format!("recommend: {err}"))?
                .into_iter()
                .map(|h| h.id)
                .collect(),
            2 => e
                .search_vector(&vector(rng.below(acked + 1), DIM), &Filter::All, 10)
                .map_err(|err| format!("search_vector: {err}"))?
                .into_iter()
                .map(|h| h.id)
                .collect(),
            4 => {
                // A maker committed, one being committed or not yet staged, or a ghost's.
                let j = rng.below(acked + 4);
                let entity = if rng.below(8) == 0 {
                    format!("ghost_maker{j}")
                } else {
                    format!("maker{j}")
                };
                match e.neighbors(&entity, None) {
                    Ok(edges) => {
                        let want = ("~made_by".to_string(), format!("item:p{j}"));
                        if !edges.contains(&want) {
                            return Err(format!("{entity}: edges {edges:?} lack {want:?}"));
                        }
                        vec![format!("p{j}")]
                    }
                    Err(_) if j < acked && !entity.starts_with("ghost") => {
                        return Err(format!("committed {entity} not in the graph"));
                    }
                    Err(_) => Vec::new(),
                }
            }
            _ => {
                if acked == 0 {
                    continue;
                }
                let id = format!("p{}", rng.below(acked));
                match e.get_product(&id).map_err(|err| format!("get: {err}"))? {
                    Some(p) => vec![p.id],
                    None => return Err(format!("committed {id} not found (acked {acked})")),
                }
            }
        };
        latencies.push((kind, started.elapsed()));
        let committing = progress.committing.load(Ordering::SeqCst);
        for id in &seen {
            match number(id) {
                Some(n) if n < committing => {}
                _ => {
                    return Err(format!(
                        "saw {id} before its commit (committing {committing})"
                    ))
                }
            }
        }
        let (count, seq) = (e.product_count(), e.seq());
        if count < last_count || seq < last_seq {
            return Err(format!(
                "went backwards: products {last_count} -> {count}, seq {last_seq} -> {seq}"
            ));
        }
        (last_count, last_seq) = (count, seq);
    }
    Ok(latencies)
}

#[test]
fn four_readers_one_writer_no_errors_only_committed_data() {
    let secs: u64 = std::env::var("SHOPDB_CONCURRENCY_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let dir = tempdir();
    let e = Arc::new(Engine::builder().dim(DIM).open(dir.path()).unwrap());
    let progress = Arc::new(Progress::default());
    let until = Instant::now() + Duration::from_secs(secs);
    let readers: Vec<_> = (0..4)
        .map(|r| {
            let (e, progress) = (e.clone(), progress.clone());
            std::thread::spawn(move || read(&e, &progress, 100 + r))
        })
        .collect();
    let written = write(&e, &progress, until);
    progress.stop.store(true, Ordering::SeqCst);
    let mut latencies = Vec::new();
    let mut errors = Vec::new();
    for r in readers {
        match r.join().unwrap() {
            Ok(l) => latencies.extend(l),
            Err(err) => errors.push(err),
        }
    }
    println!(
        "concurrency: {secs} s, {written} products committed, {} reads, {} errors",
        latencies.len(),
        errors.len()
    );
    for (k, name) in KINDS.iter().enumerate() {
        let mut l: Vec<Duration> = latencies
            .iter()
            .filter(|(x, _)| *x == k)
            .map(|(_, d)| *d)
            .collect();
        l.sort();
        if let Some(last) = l.len().checked_sub(1) {
            let p = |q: f64| l[(last as f64 * q) as usize];
            println!(
                "  {name}: {} reads, p50 {:?} p99 {:?} max {:?}",
                l.len(),
                p(0.5),
                p(0.99),
                p(1.0)
            );
        }
    }
    let mut all: Vec<Duration> = latencies.iter().map(|(_, d)| *d).collect();
    all.sort();
    if let Some(last) = all.len().checked_sub(1) {
        println!("  all reads: p99 {:?}", all[last * 99 / 100]);
    }
    assert!(errors.is_empty(), "{errors:?}");
    assert!(written > 0 && latencies.len() > 100, "too little ran");
    assert_eq!(e.product_count() as u64, written);
    assert!(e.search_text("ghost", &Filter::All, 10).unwrap().is_empty());
    assert!(e.neighbors("ghost_maker5", None).is_err());
    assert!(e.neighbors(&format!("maker{}", written - 1), None).is_ok());
}
