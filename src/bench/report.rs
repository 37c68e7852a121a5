//! The report: every figure of a run, written as `report.json` (the stable, scriptable form),
//! `report.md` (for people) and SVG plots. This module holds the figures and the Markdown;
//! [`Report::write`] (in the parent, which imports both this module and `plot`) writes the
//! files, so `plot` imports `report` and never the other way round.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// One quality figure: a method's metric at a cut-off on one task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QualityRow {
    /// `recommend` (held-out events, the test part), `recommend_valid` (the validation part,
    /// leave-one-out only) or `search` (labelled queries).
    pub task: String,
    /// popularity, item_cf, user_cf, mf, kg, bm25, vector, fused_linear, fused_rrf,
    /// fused_learned (the learned channel weights), fused_mlp.
    pub method: String,
    /// recall, precision, ndcg, mrr or hit; for recommendations also coverage, gini (of
    /// exposure) and long_tail (share of slots outside the top 20% items by interactions).
    pub metric: String,
    /// Cut-off.
    pub k: usize,
    /// Mean over users (recommend) or queries (search).
    pub value: f64,
}

/// Latency of one operation at one thread count.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencyRow {
    /// E.g. `query_personalized_hybrid`, `search`, `recommend`, `similar_to`.
    pub operation: String,
    /// Threads issuing queries at once.
    pub threads: usize,
    /// Median, milliseconds.
    pub p50_ms: f64,
    /// 95th percentile, milliseconds.
    pub p95_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Queries answered per second of wall time, all threads together.
    pub qps: f64,
    /// Queries timed.
    pub queries: usize,
    /// Answers served from the hot-query cache (the harness sends distinct requests, so 0
    /// unless the data set has too few distinct ones).
    pub cache_hits: u64,
}

/// One ingest rate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IngestRow {
    /// `products` (catalog, text and vector index), `products_text_only` (no vectors),
    /// `events`.
    pub what: String,
    /// Records per second, commits (with fsync) included.
    pub per_second: f64,
    /// Records ingested.
    pub count: usize,
    /// Seconds taken.
    pub seconds: f64,
}

/// One training step's time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingRow {
    /// `item_cf`, `user_cf`, `mf`, `popularity`, `kg`, `mlp`, ... or `total`.
    pub model: String,
    /// Wall seconds.
    pub seconds: f64,
}

/// Memory use.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct Memory {
    /// Peak resident set of the process (`VmHWM`), MiB; 0 where the OS does not report it.
    pub peak_rss_mb: f64,
    /// The peak so far at the end of each phase, in run order: where memory goes.
    #[serde(default)]
    pub after_phase: Vec<PhaseMemory>,
}

/// The peak resident set at the end of a phase.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhaseMemory {
    /// `load`, `training`, `recommend_quality`, `search_quality` or `latency`.
    pub phase: String,
    /// MiB.
    pub peak_rss_mb: f64,
    /// Seconds since the run started.
    pub at_seconds: f64,
}

/// Approximate against exact nearest neighbours.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnnRow {
    /// Cut-off.
    pub k: usize,
    /// Mean share of the exact top k the graph search returns.
    pub recall: f64,
    /// Median graph search time, milliseconds.
    pub hnsw_p50_ms: f64,
    /// Median exact scan time, milliseconds.
    pub exact_p50_ms: f64,
    /// Queries compared.
    pub queries: usize,
}

/// The engine's BM25 search against a bare tantivy search of the same terms on the same
/// index.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OverheadRow {
    /// Median `Engine::search_text`, milliseconds.
    pub engine_p50_ms: f64,
    /// Median bare tantivy search, milliseconds.
    pub tantivy_p50_ms: f64,
    /// `engine_p50_ms / tantivy_p50_ms`.
    pub ratio: f64,
    /// Queries compared.
    pub queries: usize,
}

/// The typo benchmark (`bench::typo`): shares of queries whose product (or one with the same
/// title) is in the top 10,
/// and the fused search's median time with typo tolerance on and off.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct TypoRow {
    /// Queries made from the catalog's titles.
    pub queries: usize,
    /// Share found as typed in the title.
    pub clean_found: f64,
    /// Share found with one typo in one word.
    pub one_typo_found: f64,
    /// The same with typo tolerance off.
    pub one_typo_found_without_tolerance: f64,
    /// Share found with a typo in every word of 5+ letters (two from 9).
    pub every_word_found: f64,
    /// Of the queries found as typed, the share also found with one typo.
    pub one_typo_recovered: f64,
    /// Of the queries found as typed, the share also found with a typo in every word.
    pub every_word_recovered: f64,
    /// Share of correctly typed queries whose top 10 is the same with typo tolerance on and
    /// off.
    pub clean_unchanged: f64,
    /// Median fused search, correctly typed queries, tolerance on, milliseconds.
    pub clean_p50_ms: f64,
    /// The same, tolerance off.
    pub clean_off_p50_ms: f64,
    /// Median fused search, one-typo queries, tolerance on, milliseconds.
    pub typo_p50_ms: f64,
    /// The same, tolerance off.
    pub typo_off_p50_ms: f64,
    /// Search-as-you-type (`Engine::suggest`, 8 suggestions) on each query cut inside its
    /// last word: the share whose whole last word is among the completions.
    #[serde(default)]
    pub suggest_word_found: f64,
    /// Median of those suggestion calls, milliseconds (half of them for a shopper).
    #[serde(default)]
    pub suggest_p50_ms: f64,
    /// Their 99th percentile, milliseconds.
    #[serde(default)]
    pub suggest_p99_ms: f64,
    /// Heap bytes of the typo lists (`Stats::typo_list_bytes`) when the benchmark ran.
    #[serde(default)]
    pub typo_list_bytes: u64,
}

/// Sizes of the data set as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct Sizes {
    /// Products in the catalog.
    pub products: usize,
    /// Products with a vector.
    pub vectors: usize,
    /// Users with events.
    pub users: usize,
    /// Events stored.
    pub events: u64,
    /// Labelled search queries.
    pub search_queries: usize,
}

/// Every figure of one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct Report {
    /// E.g. `generated-small`, `movielens-100k`, `beir-scifact`, `generic`.
    pub dataset: String,
    /// `recbole`, `loo` or `temporal` (the recommendation split); `test` for a BEIR folder
    /// (its test qrels).
    pub split: String,
    /// The ablation: every method alone and every fusion mode, per task.
    pub quality: Vec<QualityRow>,
    /// Query latency per operation, on 1 and 2 threads.
    pub latency: Vec<LatencyRow>,
    /// Ingest rates.
    pub ingest: Vec<IngestRow>,
    /// Training time per model.
    pub training: Vec<TrainingRow>,
    /// Peak memory.
    pub memory: Memory,
    /// Graph search against exact scan, when the data set has vectors.
    pub ann: Option<AnnRow>,
    /// Engine BM25 against bare tantivy, when the data set has text.
    pub bm25_overhead: Option<OverheadRow>,
    /// The typo benchmark, when the catalog has titles.
    #[serde(default)]
    pub typo: Option<TypoRow>,
    /// Per search method: median time of one labelled query, milliseconds (the latency
    /// side of the latency-against-recall plot).
    pub search_latency: Vec<(String, f64)>,
    /// What was loaded.
    pub sizes: Sizes,
    /// What was skipped and why, and other remarks.
    pub notes: Vec<String>,
    /// Wall seconds of the whole run.
    pub total_seconds: f64,
    /// What tuning tried and chose in the test phase of the recommendation quality, when it
    /// ran.
    #[serde(default)]
    pub tuning: Option<crate::tune::TuneReport>,
}

impl Report {
    /// The value of one quality figure.
    pub fn quality(&self, task: &str, method: &str, metric: &str, k: usize) -> Option<f64> {
        self.quality
            .iter()
            .find(|r| r.task == task && r.method == method && r.metric == metric && r.k == k)
            .map(|r| r.value)
    }

    /// The Markdown report.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# shopdb bench: {} (split {})\n",
            self.dataset, self.split
        );
        let z = &self.sizes;
        let _ = writeln!(
            s,
            "{} products ({} with vectors), {} users, {} events, {} labelled queries; {:.1} s in all.\n",
            z.products, z.vectors, z.users, z.events, z.search_queries, self.total_seconds
        );
        self.quality_tables(&mut s);
        if !self.latency.is_empty() {
            let _ = writeln!(s, "## Latency\n");
            let _ = writeln!(
                s,
                "| operation | threads | p50 ms | p95 ms | p99 ms | QPS | queries |\n|---|---|---|---|---|---|---|"
            );
            for r in &self.latency {
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.3} | {:.3} | {:.3} | {:.0} | {} |",
                    r.operation, r.threads, r.p50_ms, r.p95_ms, r.p99_ms, r.qps, r.queries
                );
            }
            let _ = writeln!(s);
        }
        if let Some(a) = &self.ann {
            let _ = writeln!(
                s,
                "ANN recall@{} against an exact scan: {:.4} ({} queries; graph p50 {:.3} ms, exact scan p50 {:.3} ms).\n",
                a.k, a.recall, a.queries, a.hnsw_p50_ms, a.exact_p50_ms
            );
        }
        if let Some(o) = &self.bm25_overhead {
            let _ = writeln!(
                s,
                "BM25 through the engine p50 {:.3} ms, bare tantivy p50 {:.3} ms: overhead ratio {:.2} ({} queries).\n",
                o.engine_p50_ms, o.tantivy_p50_ms, o.ratio, o.queries
            );
        }
        if let Some(t) = &self.typo {
            let _ = writeln!(
                s,
                "## Typo tolerance ({} queries from the catalog's titles, fused search, top 10)\n\n\
Found: the query's product, or one with the same title, is in the top 10.\n\n\
| queries | found | found, tolerance off | found of those found as typed |\n|---|---|---|---|\n\
| as typed | {:.1}% | | |\n\
| one typo | {:.1}% | {:.1}% | {:.1}% |\n\
| typo in every word of 5+ letters (two from 9) | {:.1}% | | {:.1}% |\n\n\
Correctly typed queries with the same top 10 with tolerance on and off: {:.1}%. \
Median search: as typed {:.3} ms (tolerance off {:.3} ms), one typo {:.3} ms (off {:.3} ms): \
ratio {:.2}. Typo lists in memory: {:.0} KiB.\n\nSuggestions (8, the query cut inside its last word, half of the calls for a shopper): the whole word among the completions {:.1}%, p50 {:.3} ms, p99 {:.3} ms.\n",
                t.queries,
                100.0 * t.clean_found,
                100.0 * t.one_typo_found,
                100.0 * t.one_typo_found_without_tolerance,
                100.0 * t.one_typo_recovered,
                100.0 * t.every_word_found,
                100.0 * t.every_word_recovered,
                100.0 * t.clean_unchanged,
                t.clean_p50_ms,
                t.clean_off_p50_ms,
                t.typo_p50_ms,
                t.typo_off_p50_ms,
                if t.typo_off_p50_ms > 0.0 {
                    t.typo_p50_ms / t.typo_off_p50_ms
                } else {
                    0.0
                },
                t.typo_list_bytes as f64 / 1024.0,
                100.0 * t.suggest_word_found,
                t.suggest_p50_ms,
                t.suggest_p99_ms,
            );
        }
        self.ingest_tables(&mut s);
        if let Some(t) = &self.tuning {
            let _ = writeln!(
                s,
                "## Tuning (test phase: on a held-out part of its fitting data)\n\n{} held-out users, {} settings in {:.1} s{}.\n\n| model | setting | held-out NDCG@10 | seconds | chosen |\n|---|---|---|---|---|",
                t.users,
                t.trials.len(),
                t.seconds,
                if t.budget_exhausted { ", budget used up" } else { "" }
            );
            for x in &t.trials {
                let chosen = t.chosen(&x.model) == Some(x.setting.as_str());
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.4} | {:.2} | {} |",
                    x.model,
                    x.setting,
                    x.ndcg,
                    x.seconds,
                    if chosen { "yes" } else { "" }
                );
            }
            let _ = writeln!(s);
        }
        let _ = writeln!(s, "Peak RSS: {:.0} MiB.\n", self.memory.peak_rss_mb);
        if !self.memory.after_phase.is_empty() {
            let _ = writeln!(s, "| after phase | peak RSS MiB | at s |\n|---|---|---|");
            for m in &self.memory.after_phase {
                let _ = writeln!(
                    s,
                    "| {} | {:.0} | {:.1} |",
                    m.phase, m.peak_rss_mb, m.at_seconds
                );
            }
            s.push('\n');
        }
        if !self.notes.is_empty() {
            let _ = writeln!(s, "## Notes\n");
            for n in &self.notes {
                let _ = writeln!(s, "- {n}");
            }
        }
        s
    }

    fn quality_tables(&self, s: &mut String) {
        for task in ["recommend", "recommend_valid", "exposure", "search"] {
            let rows: Vec<&QualityRow> = self.quality.iter().filter(|r| r.task == task).collect();
            let mut ks: Vec<usize> = Vec::new();
            for r in &rows {
                if !ks.contains(&r.k) {
                    ks.push(r.k);
                }
            }
            for k in ks {
                self.quality_table(s, task, &rows, k);
            }
        }
    }

    fn quality_table(&self, s: &mut String, task: &str, rows: &[&QualityRow], k: usize) {
        let _ = writeln!(s, "## Quality: {task} (@{k})\n");
        if task == "exposure" {
            let _ = writeln!(
                s,
                "The fused recommendations (learned weights; linear without the re-ranker) of the test phase, each user's page cut under one exposure control (`Query::exposure`): `gamma g` divides normalised scores by (1 + interactions)^g, `long tail t` gives at least that share of the page to items outside the top 20% by interactions, `brand share s` caps each brand's share; `none` is the same ranking uncut. Plot: `exposure.svg`.\n"
            );
        }
        // Recommendations also show exposure: coverage, Gini, long-tail share.
        let exposure = rows.iter().any(|r| r.metric == "gini");
        let mut metrics = vec!["recall", "precision", "ndcg", "mrr", "hit"];
        if exposure {
            metrics.extend(["coverage", "gini", "long_tail"]);
        }
        let _ = writeln!(
            s,
            "| method | {} |\n|---|{}",
            metrics.join(" | "),
            "---|".repeat(metrics.len())
        );
        let mut methods: Vec<&str> = Vec::new();
        for r in rows {
            if !methods.contains(&r.method.as_str()) {
                methods.push(&r.method);
            }
        }
        for m in methods {
            let g = |metric| {
                self.quality(task, m, metric, k)
                    .map_or("-".to_string(), |v| format!("{v:.4}"))
            };
            let cells: Vec<String> = metrics.iter().map(|metric| g(metric)).collect();
            let _ = writeln!(s, "| {m} | {} |", cells.join(" | "));
        }
        let _ = writeln!(s);
    }

    fn ingest_tables(&self, s: &mut String) {
        if !self.ingest.is_empty() {
            let _ = writeln!(
                s,
                "## Ingest\n\n| what | per second | count | seconds |\n|---|---|---|---|"
            );
            for r in &self.ingest {
                let _ = writeln!(
                    s,
                    "| {} | {:.0} | {} | {:.2} |",
                    r.what, r.per_second, r.count, r.seconds
                );
            }
            let _ = writeln!(s);
        }
        if !self.training.is_empty() {
            let _ = writeln!(s, "## Training\n\n| model | seconds |\n|---|---|");
            for r in &self.training {
                let _ = writeln!(s, "| {} | {:.2} |", r.model, r.seconds);
            }
            let _ = writeln!(s);
        }
    }
}
