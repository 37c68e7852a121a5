//! # Filtered vector search: when to scan the allowed items, when to walk the graph
//!
//! ```text
//! cargo run --release --example filter_switch [-- N]
//! ```
//!
//! A filtered vector search either scans the items that pass the filter exactly (their list
//! comes from the text index) or walks the graph with the filter as a predicate, skipping
//! the nodes that fail it. `HnswParams::exact_scan_below` picks the scan when fewer than that
//! fraction of the catalog pass. This measures both paths on `N` products (default 100,000)
//! with 64-d embedding-like vectors (rank 16 plus noise, unit length, deterministic) and a
//! price filter that passes a set fraction of them, uncorrelated with the vectors: one engine
//! built once, opened with the fraction at 0 (always walk) and at 1 (always scan). For each
//! fraction it prints each path's median latency over 200 queries on one thread, and the
//! walk's recall@10 against the scan (which is exact).

use std::time::Instant;

use shopdb::{Engine, Filter, HnswParams, Product};

const DIM: usize = 64;
const QUERIES: usize = 200;
const FRACTIONS: [f64; 8] = [0.001, 0.003, 0.01, 0.03, 0.05, 0.1, 0.3, 1.0];

/// SplitMix64: deterministic vectors.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }
}

/// Rank-16 vectors plus noise, unit length.
fn vectors(n: usize, rng: &mut Rng, basis: &[Vec<f32>]) -> Vec<Vec<f32>> {
    (0..n)
        .map(|_| {
            let z: Vec<f32> = (0..basis.len()).map(|_| rng.next()).collect();
            let mut v: Vec<f32> = (0..DIM)
                .map(|d| {
                    basis.iter().zip(&z).map(|(b, c)| b[d] * c).sum::<f32>() + 0.1 * rng.next()
                })
                .collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            v.iter_mut().for_each(|x| *x /= norm);
            v
        })
        .collect()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(0.0)
}

fn main() -> shopdb::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let dir = std::env::temp_dir().join(format!("shopdb-filter-switch-{}", std::process::id()));
    let result = run(n, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run(n: usize, dir: &std::path::Path) -> shopdb::Result<()> {
    let mut rng = Rng(7);
    let basis: Vec<Vec<f32>> = (0..16)
        .map(|_| (0..DIM).map(|_| rng.next()).collect())
        .collect();
    let items = vectors(n, &mut rng, &basis);
    let queries = vectors(QUERIES, &mut rng, &basis);
    let open = |fraction: f64| {
        Engine::builder()
            .dim(DIM)
            .hnsw(HnswParams {
                exact_scan_below: fraction,
                ..HnswParams::default()
            })
            .open(dir)
    };
    {
        let e = open(0.0)?;
        let t = Instant::now();
        for (c, chunk) in items.chunks(10_000).enumerate() {
            let products = chunk
                .iter()
                .enumerate()
                .map(|(j, v)| {
                    let i = c * 10_000 + j;
                    // A price that orders the products by a fixed permutation.
                    let price = ((i as u64 * 7_919) % n as u64) as f64 / n as f64;
                    Product::new(format!("p{i}"))
                        .title(format!("product {i}"))
                        .price(price)
                        .embedding(v.clone())
                })
                .collect();
            e.upsert_products(products)?;
            e.commit()?;
        }
        println!(
            "{n} products x {DIM} dims built in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    let walk = open(0.0)?;
    let mut rows = Vec::new();
    for f in FRACTIONS {
        let filter = Filter::price(None, Some(f));
        let mut times = [Vec::new(), Vec::new()];
        let mut walked = Vec::with_capacity(QUERIES);
        // The walk first, then the scan on the engine reopened to always scan.
        for q in &queries {
            let t = Instant::now();
            walked.push(walk.search_vector(q, &filter, 10)?);
            times[0].push(t.elapsed().as_secs_f64() * 1e3);
        }
        rows.push((f, times, walked));
    }
    drop(walk);
    let scan = open(1.0)?;
    println!("\n| passing | walk p50 ms | scan p50 ms | scan / walk | walk recall@10 |");
    println!("|---|---|---|---|---|");
    for (f, mut times, walked) in rows {
        let filter = Filter::price(None, Some(f));
        let mut recall = 0.0;
        for (q, got) in queries.iter().zip(&walked) {
            let t = Instant::now();
            let want = scan.search_vector(q, &filter, 10)?;
            times[1].push(t.elapsed().as_secs_f64() * 1e3);
            let hit = got
                .iter()
                .filter(|h| want.iter().any(|w| w.id == h.id))
                .count();
            recall += hit as f64 / want.len().max(1) as f64;
        }
        let [w, s] = times.map(median);
        println!(
            "| {:.1}% | {w:.3} | {s:.3} | {:.2} | {:.3} |",
            f * 100.0,
            s / w.max(1e-9),
            recall / QUERIES as f64
        );
    }
    Ok(())
}
