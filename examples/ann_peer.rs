//! # Vector search beside hnswlib and faiss, on the same files
//!
//! `benches/ann_peer.sh` runs this after `peer_ann.py gen` and `peer_ann.py run` (the peer
//! tools beside the project); by hand:
//!
//! ```text
//! cargo run --release --example ann_peer -- DIR [--m 16] [--ef-construction 200] [--repeats 5]
//! ```
//!
//! `DIR` holds `items.f32` / `items.ids` / `queries.f32` as `peer_ann.py gen` writes them (raw
//! little-endian float32 rows). The engine ingests the items in batches of 10,000 with a
//! commit after each (cosine metric, the same M and ef_construction as the peers), then, on
//! one thread, measures its exact scan (`Engine::search_vector_exact`, the ground truth) and
//! its graph search (`Engine::search_vector`) at ef 16 ... 256: recall@10 and queries per
//! CPU-second (medians of `--repeats`). When `DIR/peer_ann.json` exists it prints both
//! curves and the engine's throughput over the peer's at recall 0.90, 0.95 and 0.99
//! (interpolated on each curve). Writes `DIR/engine_ann.json`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use shopdb::{Engine, Filter, HnswParams, Metric, Product};

const K: usize = 10;
const EFS: [usize; 5] = [16, 32, 64, 128, 256];

fn main() {
    if let Err(e) = run() {
        eprintln!("ann_peer: {e}");
        std::process::exit(1);
    }
}

/// CPU seconds of this process (user + system, every thread), from `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

fn read_f32s(path: &Path) -> Result<Vec<f32>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() % 4 != 0 {
        return Err(format!("{}: not whole float32s", path.display()));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

struct Point {
    ef: usize,
    recall: f64,
    qps_cpu: f64,
    qps_wall: f64,
}

/// Median over the repeats of the (wall, cpu) seconds of one run of `f` over all queries.
/// Each repeat runs `f` as many times as fill half a second, so that the CPU clock's
/// 10 ms ticks stay below 2% of a measurement.
fn timed(repeats: usize, mut f: impl FnMut()) -> (f64, f64) {
    let t0 = Instant::now();
    f();
    let rounds = (0.5 / t0.elapsed().as_secs_f64().max(1e-6))
        .ceil()
        .clamp(1.0, 1000.0) as usize;
    let mut wall = Vec::new();
    let mut cpu = Vec::new();
    for _ in 0..repeats.max(1) {
        let (w0, c0) = (Instant::now(), cpu_seconds());
        for _ in 0..rounds {
            f();
        }
        wall.push(w0.elapsed().as_secs_f64() / rounds as f64);
        cpu.push((cpu_seconds() - c0) / rounds as f64);
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (med(&mut wall), med(&mut cpu))
}

/// Queries per second at `recall` on a curve of `(recall, qps)` points, interpolated
/// linearly in log(qps) between the two points around it; `None` outside the curve.
fn at_recall(curve: &[(f64, f64)], recall: f64) -> Option<f64> {
    let mut c: Vec<(f64, f64)> = curve.to_vec();
    c.sort_by(|a, b| a.0.total_cmp(&b.0));
    for w in c.windows(2) {
        let ((r0, q0), (r1, q1)) = (w[0], w[1]);
        if r0 <= recall && recall <= r1 {
            if r1 - r0 < 1e-12 {
                return Some(q0.max(q1));
            }
            let t = (recall - r0) / (r1 - r0);
            return Some((q0.ln() + t * (q1.ln() - q0.ln())).exp());
        }
    }
    // Below every point's recall: the fastest point (each one reaches it).
    match c.first() {
        Some(first) if recall < first.0 => c.iter().map(|p| p.1).reduce(f64::max),
        _ => None,
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .ok_or("usage: ann_peer DIR [--m 16] [--ef-construction 200] [--repeats 5]")?,
    );
    let (mut m, mut efc, mut repeats) = (16usize, 200usize, 5usize);
    let mut reuse = false;
    while let Some(a) = args.next() {
        if a == "--reuse" {
            reuse = true;
            continue;
        }
        let v: usize = args
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or(format!("{a} needs a number"))?;
        match a.as_str() {
            "--m" => m = v,
            "--ef-construction" => efc = v,
            "--repeats" => repeats = v,
            _ => return Err(format!("unknown option {a}")),
        }
    }
    let ids: Vec<String> = std::fs::read_to_string(dir.join("items.ids"))
        .map_err(|e| format!("items.ids: {e}"))?
        .lines()
        .map(str::to_string)
        .collect();
    let items = read_f32s(&dir.join("items.f32"))?;
    let queries = read_f32s(&dir.join("queries.f32"))?;
    if ids.is_empty() || items.len() % ids.len() != 0 {
        return Err("items.f32 is not len(items.ids) rows".into());
    }
    let dim = items.len() / ids.len();
    let nq = queries.len() / dim;
    println!(
        "data {}: {} x {dim}, {nq} queries, k={K}, M={m}, ef_construction={efc}",
        dir.display(),
        ids.len()
    );

    let db = dir.join("engine-db");
    let reused = reuse && db.exists();
    if !reused {
        let _ = std::fs::remove_dir_all(&db);
    }
    let params = |ef: usize| HnswParams {
        max_connections: m,
        ef_construction: efc,
        ef_search: ef,
        ..HnswParams::default()
    };
    let open = |ef: usize| {
        Engine::builder()
            .dim(dim)
            .metric(Metric::Cosine)
            .hnsw(params(ef))
            .open(&db)
            .map_err(|e| e.to_string())
    };
    let (build_wall, build_cpu) = if reused {
        println!("engine build: reusing {} (--reuse)", db.display());
        (f64::NAN, f64::NAN)
    } else {
        let e = open(EFS[0])?;
        let (w0, c0) = (Instant::now(), cpu_seconds());
        for (chunk_ids, chunk) in ids.chunks(10_000).zip(items.chunks(10_000 * dim)) {
            let products = chunk_ids
                .iter()
                .zip(chunk.chunks_exact(dim))
                .map(|(id, v)| Product::new(id.clone()).embedding(v.to_vec()))
                .collect();
            e.upsert_products(products).map_err(|e| e.to_string())?;
            e.commit().map_err(|e| e.to_string())?;
        }
        let t = (w0.elapsed().as_secs_f64(), cpu_seconds() - c0);
        println!(
            "engine build: {:.1} s wall, {:.1} s CPU (batches of 10,000, a commit each)",
            t.0, t.1
        );
        t
    };

    let qs: Vec<&[f32]> = queries.chunks_exact(dim).collect();
    let all = Filter::All;
    let e = open(EFS[0])?;
    let mut truth: Vec<Vec<String>> = Vec::with_capacity(nq);
    for q in &qs {
        let hits = e.search_vector_exact(q, K).map_err(|e| e.to_string())?;
        truth.push(hits.into_iter().map(|h| h.id).collect());
    }
    let (ex_wall, ex_cpu) = timed(repeats, || {
        for q in &qs {
            let _ = std::hint::black_box(e.search_vector_exact(q, K));
        }
    });
    drop(e);
    let exact_qps = nq as f64 / ex_cpu.max(1e-9);
    let mut curve = Vec::new();
    for ef in EFS {
        let e = open(ef)?;
        let mut hit = 0usize;
        for (q, t) in qs.iter().zip(&truth) {
            let got = e.search_vector(q, &all, K).map_err(|e| e.to_string())?;
            hit += got.iter().filter(|h| t.contains(&h.id)).count();
        }
        let (w, c) = timed(repeats, || {
            for q in &qs {
                let _ = std::hint::black_box(e.search_vector(q, &all, K));
            }
        });
        curve.push(Point {
            ef,
            recall: hit as f64 / (nq * K) as f64,
            qps_cpu: nq as f64 / c.max(1e-9),
            qps_wall: nq as f64 / w.max(1e-9),
        });
    }

    println!(
        "{:<40} {:>9} {:>11} {:>10}",
        "method", "recall@10", "QPS/CPU-s", "QPS wall"
    );
    println!(
        "{:<40} {:>9.4} {:>11.0} {:>10.0}",
        "engine exact scan",
        1.0,
        exact_qps,
        nq as f64 / ex_wall.max(1e-9)
    );
    for p in &curve {
        println!(
            "{:<40} {:>9.4} {:>11.0} {:>10.0}",
            format!("engine graph ef={}", p.ef),
            p.recall,
            p.qps_cpu,
            p.qps_wall
        );
    }

    let peer: Option<serde_json::Value> = std::fs::read(dir.join("peer_ann.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let ours: Vec<(f64, f64)> = curve.iter().map(|p| (p.recall, p.qps_cpu)).collect();
    let mut ratios = serde_json::Map::new();
    if let Some(peer) = &peer {
        let theirs: Vec<(f64, f64)> = peer["hnswlib"]["by_ef"]
            .as_object()
            .map(|o| {
                o.values()
                    .filter_map(|v| Some((v["recall@10"].as_f64()?, v["qps_per_cpu_s"].as_f64()?)))
                    .collect()
            })
            .unwrap_or_default();
        let mut rows: Vec<(usize, &serde_json::Value)> = peer["hnswlib"]["by_ef"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(ef, v)| Some((ef.parse().ok()?, v)))
            .collect();
        rows.sort_by_key(|r| r.0);
        for (ef, v) in rows {
            println!(
                "{:<40} {:>9.4} {:>11.0} {:>10.0}",
                format!("hnswlib ef={ef}"),
                v["recall@10"].as_f64().unwrap_or(f64::NAN),
                v["qps_per_cpu_s"].as_f64().unwrap_or(f64::NAN),
                v["qps_wall"].as_f64().unwrap_or(f64::NAN)
            );
        }
        let flat = peer["exact"]["one_query_per_call"]["qps_per_cpu_s"].as_f64();
        if let Some(f) = flat {
            println!(
                "{:<40} {:>9.4} {:>11.0}",
                "faiss IndexFlatIP, 1 query/call", 1.0, f
            );
            println!("exact scan, engine / faiss: {:.2}x", exact_qps / f);
            ratios.insert("exact".into(), (exact_qps / f).into());
        }
        for r in [0.90, 0.95, 0.99] {
            match (at_recall(&ours, r), at_recall(&theirs, r)) {
                (Some(a), Some(b)) => {
                    println!(
                        "at recall {r:.2}: engine {a:.0} / hnswlib {b:.0} QPS per CPU-s = {:.2}x",
                        a / b
                    );
                    ratios.insert(format!("graph@{r:.2}"), (a / b).into());
                }
                _ => println!("at recall {r:.2}: outside one of the curves"),
            }
        }
        if let Some(b) = peer["hnswlib"]["build_cpu_s"].as_f64() {
            println!("build CPU, engine / hnswlib: {:.2}x ({build_cpu:.1} s / {b:.1} s; the engine's includes its store, text index and commits)", build_cpu / b);
            ratios.insert("build_cpu".into(), (build_cpu / b).into());
        }
    } else {
        println!(
            "no peer_ann.json in {}: run peer_ann.py run first for the ratios",
            dir.display()
        );
    }
    let report = serde_json::json!({
        "n": ids.len(), "dim": dim, "queries": nq, "k": K, "m": m, "ef_construction": efc,
        "build_wall_s": build_wall, "build_cpu_s": build_cpu,
        "exact_qps_per_cpu_s": exact_qps,
        "graph": curve.iter().map(|p| serde_json::json!({
            "ef": p.ef, "recall@10": p.recall, "qps_per_cpu_s": p.qps_cpu, "qps_wall": p.qps_wall,
        })).collect::<Vec<_>>(),
        "ratios": ratios,
    });
    let out = dir.join("engine_ann.json");
    std::fs::write(
        &out,
        serde_json::to_vec_pretty(&report).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("{}: {e}", out.display()))?;
    println!("wrote {}", out.display());
    if !reuse {
        let _ = std::fs::remove_dir_all(&db);
    }
    Ok(())
}
