//! Speed: per-query latency percentiles and throughput on one and two threads, approximate
//! against exact vector search, the engine's BM25 against bare tantivy, and peak memory.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use super::report::{AnnRow, LatencyRow, OverheadRow};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::progress::Progress;

/// The `q`-quantile (0..=1) of sorted milliseconds; 0 when empty.
pub(super) fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * q) as usize).min(sorted.len() - 1);
    sorted[i]
}

/// Milliseconds since `t`.
pub(super) fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// Runs `op` once for every request, `threads` at a time (each thread takes the next request
/// not yet taken), and reports the latency percentiles and the throughput. The first error
/// stops the run and is returned.
pub(super) fn measure<T: Sync>(
    operation: &str,
    threads: usize,
    requests: &[T],
    progress: &Progress,
    op: impl Fn(&T) -> Result<()> + Sync,
) -> Result<LatencyRow> {
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let per_thread: Vec<Result<Vec<f64>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|_| {
                s.spawn(|| -> Result<Vec<f64>> {
                    let mut times = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(r) = requests.get(i) else { break };
                        let t = Instant::now();
                        op(r)?;
                        times.push(ms_since(t));
                        progress.inc(1);
                    }
                    Ok(times)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::invalid("latency", "a request thread panicked")))
            })
            .collect()
    });
    let wall = started.elapsed().as_secs_f64();
    let mut times = Vec::with_capacity(requests.len());
    for t in per_thread {
        times.extend(t?);
    }
    times.sort_by(f64::total_cmp);
    Ok(LatencyRow {
        operation: operation.to_string(),
        threads: threads.max(1),
        p50_ms: quantile(&times, 0.50),
        p95_ms: quantile(&times, 0.95),
        p99_ms: quantile(&times, 0.99),
        qps: if wall > 0.0 {
            times.len() as f64 / wall
        } else {
            0.0
        },
        queries: times.len(),
        cache_hits: 0,
    })
}

/// Recall@k of the graph search against an exact scan for each query vector, with both
/// medians.
pub(super) fn ann_recall(
    engine: &Engine,
    queries: &[Vec<f32>],
    k: usize,
    progress: &Progress,
) -> Result<AnnRow> {
    let (mut graph_ms, mut exact_ms, mut recall_sum) = (Vec::new(), Vec::new(), 0.0);
    for q in queries {
        let t = Instant::now();
        let approx = engine.search_vector(q, &Filter::All, k)?;
        graph_ms.push(ms_since(t));
        let t = Instant::now();
        let exact = engine.search_vector_exact(q, k)?;
        exact_ms.push(ms_since(t));
        let found = exact
            .iter()
            .filter(|e| approx.iter().any(|a| a.id == e.id))
            .count();
        recall_sum += found as f64 / exact.len().max(1) as f64;
        progress.inc(1);
    }
    graph_ms.sort_by(f64::total_cmp);
    exact_ms.sort_by(f64::total_cmp);
    Ok(AnnRow {
        k,
        recall: recall_sum / queries.len().max(1) as f64,
        hnsw_p50_ms: quantile(&graph_ms, 0.5),
        exact_p50_ms: quantile(&exact_ms, 0.5),
        queries: queries.len(),
    })
}

/// The engine's `search_text` against a bare tantivy search of the same analysed terms on
/// the same index, alternating per query so both see the same cache state.
pub(super) fn bm25_overhead(
    engine: &Engine,
    texts: &[String],
    k: usize,
    progress: &Progress,
) -> Result<OverheadRow> {
    let (mut engine_ms, mut bare_ms) = (Vec::new(), Vec::new());
    for text in texts {
        let t = Instant::now();
        engine.search_text(text, &Filter::All, k)?;
        engine_ms.push(ms_since(t));
        let t = Instant::now();
        engine.state.text.search_bare(text, k)?;
        bare_ms.push(ms_since(t));
        progress.inc(1);
    }
    engine_ms.sort_by(f64::total_cmp);
    bare_ms.sort_by(f64::total_cmp);
    let (e, b) = (quantile(&engine_ms, 0.5), quantile(&bare_ms, 0.5));
    Ok(OverheadRow {
        engine_p50_ms: e,
        tantivy_p50_ms: b,
        ratio: if b > 0.0 { e / b } else { 0.0 },
        queries: texts.len(),
    })
}

/// The process's peak resident set in MiB (`VmHWM` in `/proc/self/status`), `None` where
/// the OS does not report it.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
