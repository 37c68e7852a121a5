//! The benchmark harness behind `shopdb bench`: one run loads a data set, and measures in
//! one report what a user chooses an engine by: ingest rates, training time per model,
//! quality of every method alone and of every fusion mode (the ablation), query latency and
//! throughput on one and two threads, approximate against exact vector search, the engine's
//! BM25 against bare tantivy on the same index, and peak memory.
//!
//! Quality is measured on the test part of the split (recommendation) or on the test qrels
//! (search); nothing here tunes on them. Speed is measured, never asserted.

mod data;
mod plot;
mod report;
mod speed;
mod typo;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub use data::{write_events_csv, write_products_jsonl, write_vectors, Dataset, Scale};
pub use report::{
    AnnRow, IngestRow, LatencyRow, Memory, OverheadRow, PhaseMemory, QualityRow, Report, Sizes,
    TrainingRow, TypoRow,
};
pub use speed::peak_rss_mb;

use crate::beir::{BeirSet, SearchMethod};
use crate::channel::Fusion;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::evaluate::{EvalOn, EvalOptions};
use crate::filter::Filter;
use crate::progress::Progress;
use crate::query::Query;
use crate::train::{SplitKind, TrainOptions};

/// The five ranking metrics, in the report's order.
const METRICS: [&str; 5] = ["recall", "precision", "ndcg", "mrr", "hit"];
/// Beyond accuracy, for recommendations: item coverage, the Gini index of exposure and the
/// long-tail share of the recommended slots.
const EXPOSURE: [&str; 3] = ["coverage", "gini", "long_tail"];
/// At most this many user × item scores in the recommendation quality phase: above it, a
/// fixed random sample of the test users is scored (the note in the report says how many).
const MAX_RANKING_CELLS: f64 = 2e9;
/// Never fewer sampled users than this.
const MIN_SAMPLED_USERS: usize = 1_000;
/// Exact scans are slow on large catalogs: at most this many ANN comparisons.
const MAX_ANN_QUERIES: usize = 200;

/// How a run goes.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// What to load.
    pub dataset: Dataset,
    /// The recommendation split. Default RecBole (random 80/10/10 per user, seed 2020).
    pub split: SplitKind,
    /// A BEIR folder's judged queries to rate: `qrels/<qrels>.tsv`. Default `test`; `train`
    /// is where search settings are chosen.
    pub qrels: String,
    /// The metrics' cut-off. Default 10.
    pub k: usize,
    /// Requests per operation and thread count in the latency phase. Default 1,000.
    pub queries: usize,
    /// Measure speed (latency, ANN recall, BM25 overhead). Default true.
    pub speed: bool,
    /// Store a generated shop's embeddings (vector index, vector search, ANN figures).
    /// Default true; without them the products rate is catalog + text alone.
    pub vectors: bool,
    /// Where the engine is created; must not exist yet (or be empty). The caller removes it.
    pub db_dir: PathBuf,
    /// Progress bars on stderr. Default false.
    pub progress: bool,
    /// Tune each model inside training and every evaluation phase (the engine's default).
    /// Default true; false measures the models at their fixed defaults.
    pub tune: bool,
    /// Train the sequence model too (off by default, as in the engine).
    pub sequence: bool,
    /// Seconds the sequence model's race of settings may take when tuning (finite, `>= 0`;
    /// `None`: [`TuneOptions`](crate::TuneOptions)'s default).
    pub sequence_budget: Option<f64>,
    /// Queries of the typo benchmark (`typo`), made from the catalog's titles; 0 skips
    /// it. Default 1,000.
    pub typos: usize,
    /// Rate the fused recommendations under each exposure control ([`exposure_settings`]),
    /// in the test phase, as the task `exposure`. Default true.
    pub exposure: bool,
    /// A BEIR folder's vectors come from this sentence encoder (a local model folder, see
    /// [`Embedder`](crate::Embedder)) instead of its `embeddings/` files: the engine embeds
    /// every document at commit and the harness embeds the queries. Default none.
    #[cfg(feature = "embed")]
    pub embedder: Option<PathBuf>,
    /// Write the test phase's fitting part (`interactions.parquet`, `mf_params.json`) into
    /// this folder, for fitting MF elsewhere (`tools/spark_als.py`). Default none.
    #[cfg(feature = "parquet")]
    pub fit_export: Option<PathBuf>,
    /// MF factors fitted elsewhere on that fitting part (`user_factors`, `item_factors`
    /// Parquet), rated in the test phase as `mf_imported` beside the engine's `mf`.
    /// Default none.
    #[cfg(feature = "parquet")]
    pub import_mf: Option<PathBuf>,
}

/// The exposure sweep: no control, then popularity debiasing, a long-tail share and a
/// brand's share at a few strengths each (a brand cap changes nothing on a catalog without
/// brands).
pub fn exposure_settings() -> Vec<(String, crate::exposure::Exposure)> {
    use crate::exposure::Exposure;
    let mut v = vec![("none".to_string(), Exposure::new())];
    for g in [0.25f32, 0.5, 1.0] {
        v.push((format!("gamma {g}"), Exposure::new().popularity_gamma(g)));
    }
    for t in [0.2f32, 0.4] {
        v.push((
            format!("long tail {t}"),
            Exposure::new().min_long_tail_share(t),
        ));
    }
    for s in [0.3f32, 0.2] {
        v.push((
            format!("brand share {s}"),
            Exposure::new().max_brand_share(s),
        ));
    }
    v
}

impl BenchOptions {
    /// Defaults for `dataset`, with the engine in `db_dir`.
    pub fn new(dataset: Dataset, db_dir: impl Into<PathBuf>) -> Self {
        BenchOptions {
            dataset,
            split: SplitKind::RecBole { seed: 2020 },
            qrels: "test".to_string(),
            k: 10,
            queries: 1_000,
            speed: true,
            vectors: true,
            db_dir: db_dir.into(),
            progress: false,
            tune: true,
            sequence: false,
            sequence_budget: None,
            typos: 1_000,
            exposure: true,
            #[cfg(feature = "embed")]
            embedder: None,
            #[cfg(feature = "parquet")]
            fit_export: None,
            #[cfg(feature = "parquet")]
            import_mf: None,
        }
    }
}

/// The name of a split in the report and on the command line.
pub fn split_name(split: SplitKind) -> &'static str {
    match split {
        SplitKind::RecBole { .. } => "recbole",
        SplitKind::LeaveOneOut => "loo",
        SplitKind::Temporal { .. } => "temporal",
    }
}

/// Parses `recbole`, `loo` or `temporal` (last 10% validation, 10% test).
pub fn parse_split(s: &str) -> Option<SplitKind> {
    match s {
        "recbole" => Some(SplitKind::RecBole { seed: 2020 }),
        "loo" => Some(SplitKind::LeaveOneOut),
        "temporal" => Some(SplitKind::Temporal {
            valid: 0.1,
            test: 0.1,
        }),
        _ => None,
    }
}

/// Progress bars, one per phase, or none.
pub(crate) struct Phase {
    enabled: bool,
}

impl Phase {
    /// A bar of `len` steps.
    pub(crate) fn bar(&self, what: &str, len: usize) -> Progress {
        if !self.enabled {
            return Progress::hidden();
        }
        let bar = Progress::bar(
            len as u64,
            "{msg:32} [{bar:30}] {pos}/{len} {per_sec} {elapsed_precise}",
        );
        bar.set_message(what.to_string());
        bar
    }

    /// A spinner for a phase of unknown length.
    pub(crate) fn spinner(&self, what: &str) -> Progress {
        if !self.enabled {
            return Progress::hidden();
        }
        let bar = Progress::spinner("{msg:32} {spinner} {elapsed_precise}");
        bar.set_message(what.to_string());
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        bar
    }
}

impl Report {
    /// Writes `report.json`, `report.md`, `latency_recall.svg`, `ablation.svg` and, with an
    /// exposure sweep, `exposure.svg` into `dir` (created when absent).
    ///
    /// # Errors
    /// [`Error::Io`] when a file cannot be written, [`Error::Backend`] when a plot fails.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let json = serde_json::to_string_pretty(self)
            .map_err(|e| Error::invalid("report", e.to_string()))?;
        write_file(&dir.join("report.json"), json.as_bytes())?;
        write_file(&dir.join("report.md"), self.markdown().as_bytes())?;
        plot::latency_recall(self, &dir.join("latency_recall.svg"))?;
        plot::ablation(self, &dir.join("ablation.svg"))?;
        plot::exposure(self, &dir.join("exposure.svg"))?;
        Ok(())
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

/// Runs the benchmark.
///
/// # Errors
/// [`Error::Invalid`] for `k == 0` or a `db_dir` that holds files; the loaders' errors
/// ([`Error::Io`], [`Error::BadRow`], [`Error::Corrupt`]) and the engine's.
pub fn run(options: &BenchOptions) -> Result<Report> {
    let started = Instant::now();
    if options.k == 0 {
        return Err(Error::invalid("k", "must be at least 1"));
    }
    if options
        .sequence_budget
        .is_some_and(|s| !(s.is_finite() && s >= 0.0))
    {
        return Err(Error::invalid(
            "sequence_budget",
            "must be a finite number of seconds >= 0",
        ));
    }
    let occupied = std::fs::read_dir(&options.db_dir).is_ok_and(|mut d| d.next().is_some());
    if occupied {
        return Err(Error::invalid(
            "db_dir",
            format!("{} is not empty", options.db_dir.display()),
        ));
    }
    let phase = Phase {
        enabled: options.progress,
    };
    let loaded = data::load(options, &phase)?;
    let engine = &loaded.engine;
    let mut report = Report {
        dataset: options.dataset.name(),
        split: match options.dataset {
            Dataset::Beir(_) => options.qrels.clone(),
            _ => split_name(options.split).to_string(),
        },
        ingest: loaded.ingest.clone(),
        notes: loaded.notes.clone(),
        ..Report::default()
    };
    let stats = engine.stats();
    report.sizes = Sizes {
        products: stats.products,
        vectors: stats.vectors,
        users: stats.users,
        events: stats.events,
        search_queries: loaded.search.as_ref().map_or(0, |s| s.qrels.len()),
    };
    let mut after_phase = Vec::new();
    let mut mark = |phase: &str| {
        after_phase.push(PhaseMemory {
            phase: phase.to_string(),
            peak_rss_mb: peak_rss_mb().unwrap_or(0.0),
            at_seconds: started.elapsed().as_secs_f64(),
        });
    };
    mark("load");
    let trained = stats.events > 0;
    if trained {
        report.training = train(engine, &train_options(options), &phase)?;
        mark("training");
        recommend_quality(engine, options, &phase, &mut report)?;
        mark("recommend_quality");
    }
    if let Some(set) = &loaded.search {
        search_quality(engine, set, options.k, &phase, &mut report)?;
        mark("search_quality");
    }
    if options.typos > 0 {
        report.typo = typo::run(engine, options.typos, &phase)?;
        mark("typo");
    }
    if options.speed {
        latency(engine, &loaded, options, trained, &phase, &mut report)?;
        mark("latency");
    }
    report.memory = Memory {
        peak_rss_mb: peak_rss_mb().unwrap_or(0.0),
        after_phase,
    };
    report.total_seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The engine's default training options, without tuning when the run asks so.
fn train_options(options: &BenchOptions) -> TrainOptions {
    let mut t = TrainOptions::default();
    if !options.tune {
        t.tune = None;
    }
    if options.sequence {
        t.sequence = Some(crate::models::SeqConfig::default());
    }
    // `run` checked the budget is finite and not negative.
    let budget = options
        .sequence_budget
        .filter(|s| s.is_finite() && *s >= 0.0);
    if let (Some(secs), Some(tune)) = (budget, t.tune.as_mut()) {
        tune.sequence_budget = std::time::Duration::from_secs_f64(secs.min(86_400.0));
    }
    t
}

/// Trains every model on the whole log: seconds per model and in total.
fn train(engine: &Engine, opts: &TrainOptions, phase: &Phase) -> Result<Vec<TrainingRow>> {
    let bar = phase.spinner("training");
    let t = Instant::now();
    let r = engine.train(opts)?;
    let total = t.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let mut rows: Vec<TrainingRow> = r
        .timings
        .into_iter()
        .map(|(model, seconds)| TrainingRow { model, seconds })
        .collect();
    rows.push(TrainingRow {
        model: "total".to_string(),
        seconds: total,
    });
    Ok(rows)
}

/// Full-ranking quality of every model and fusion mode on the test part of the split.
fn recommend_quality(
    engine: &Engine,
    options: &BenchOptions,
    phase: &Phase,
    report: &mut Report,
) -> Result<()> {
    let cells = report.sizes.users as f64 * report.sizes.products as f64;
    let max_users = (cells > MAX_RANKING_CELLS).then(|| {
        let n = (MAX_RANKING_CELLS / report.sizes.products.max(1) as f64) as usize;
        n.max(MIN_SAMPLED_USERS)
    });
    // Leave-one-out is the next-item protocol of published results: they give @10 and @50,
    // and the validation phase beside the test phase shows whether the test phase lost
    // information (the two agree within noise when behaviour does not change over time).
    let next_item = options.split == SplitKind::LeaveOneOut;
    let mut ks = vec![options.k];
    if next_item && options.k != 50 {
        ks.push(50);
    }
    let mut phases = vec![("recommend", EvalOn::Test)];
    if next_item {
        phases.push(("recommend_valid", EvalOn::Valid));
    }
    #[cfg(feature = "parquet")]
    let imported = match &options.import_mf {
        Some(dir) => Some(std::sync::Arc::new(crate::export::read_factors(dir)?)),
        None => None,
    };
    for (task, on) in phases {
        let bar = phase.spinner("evaluating recommendations");
        let test = on == EvalOn::Test;
        let eval = engine.evaluate(&EvalOptions {
            #[cfg(feature = "parquet")]
            imported_mf: imported.clone().filter(|_| test),
            #[cfg(feature = "parquet")]
            fit_export: options.fit_export.clone().filter(|_| test),
            split: options.split,
            ks: ks.clone(),
            on,
            max_users,
            train: train_options(options),
            exposures: if options.exposure && test {
                exposure_settings()
            } else {
                Vec::new()
            },
            ..EvalOptions::default()
        })?;
        bar.finish_and_clear();
        if max_users.is_some() && on == EvalOn::Test {
            report.notes.push(format!(
                "recommendation quality on a fixed random sample of {} test users: full ranking of every user over {} products would take hours",
                eval.users, report.sizes.products
            ));
        }
        if on == EvalOn::Test {
            report.tuning = eval.tuning.clone();
        }
        if let Some(f) = eval.fitted_on {
            report.notes.push(format!(
                "{task}: {} users scored, models fitted on {} and each user's history from it; ties pessimistic (a held-out item tied with other candidates ranks below all of them)",
                eval.users,
                f.name()
            ));
        }
        report.quality.extend(
            eval.rows
                .into_iter()
                .filter(|r| {
                    METRICS.contains(&r.metric.as_str()) || EXPOSURE.contains(&r.metric.as_str())
                })
                .map(|r| match r.model.strip_prefix("exposure:") {
                    Some(setting) => QualityRow {
                        task: "exposure".to_string(),
                        method: setting.to_string(),
                        metric: r.metric,
                        k: r.k,
                        value: r.value,
                    },
                    None => QualityRow {
                        task: task.to_string(),
                        method: r.model,
                        metric: r.metric,
                        k: r.k,
                        value: r.value,
                    },
                }),
        );
    }
    Ok(())
}

/// Recall, precision, nDCG (graded), MRR and hit of one ranking, in [`METRICS`] order.
fn search_metrics(
    ranked: &[String],
    rels: &std::collections::HashMap<String, u32>,
    k: usize,
) -> [f64; 5] {
    let [ndcg, recall, mrr] = crate::beir::score_ranking(ranked, rels, k);
    let found = ranked
        .iter()
        .take(k)
        .filter(|id| rels.get(*id).is_some_and(|g| *g > 0))
        .count();
    let hit = if found > 0 { 1.0 } else { 0.0 };
    [recall, found as f64 / k as f64, ndcg, mrr, hit]
}

/// How deep each labelled search retrieves: BEIR's protocol ranks the top 100 once and
/// scores nDCG@10 on its head and Recall@100 on the whole (with an approximate index, a
/// search for 10 alone is a shallower, less exact walk).
const SEARCH_DEPTH: usize = 100;

/// Quality of each search method on the labelled queries, one query at a time (so the
/// median time per query is the method's latency in the latency-against-recall plot).
fn search_quality(
    engine: &Engine,
    set: &BeirSet,
    k: usize,
    phase: &Phase,
    report: &mut Report,
) -> Result<()> {
    let mut methods = vec![("bm25", SearchMethod::Bm25)];
    if set.query_vectors.is_some() && engine.stats().vectors > 0 {
        methods.push(("vector", SearchMethod::Vector));
        methods.push((
            "fused_linear",
            SearchMethod::Hybrid(Fusion::default_linear()),
        ));
        methods.push(("fused_rrf", SearchMethod::Hybrid(Fusion::Rrf { k: 60.0 })));
    }
    let qids = set.query_ids();
    for (name, method) in methods {
        let bar = phase.bar(&format!("search quality: {name}"), qids.len());
        let mut sums = [0.0; 5];
        let mut deep_recall = 0.0;
        let depth = SEARCH_DEPTH.max(k);
        let mut times = Vec::with_capacity(qids.len());
        for qid in &qids {
            let t = Instant::now();
            let ranked = crate::beir::retrieve(engine, set, method, qid, depth)?;
            times.push(speed::ms_since(t));
            if let Some(rels) = set.qrels.get(qid) {
                for (s, v) in sums.iter_mut().zip(search_metrics(&ranked, rels, k)) {
                    *s += v;
                }
                deep_recall += search_metrics(&ranked, rels, depth)[0];
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        let n = qids.len().max(1) as f64;
        for (metric, sum) in METRICS.iter().zip(sums) {
            report.quality.push(QualityRow {
                task: "search".to_string(),
                method: name.to_string(),
                metric: metric.to_string(),
                k,
                value: sum / n,
            });
        }
        if depth > k {
            report.quality.push(QualityRow {
                task: "search".to_string(),
                method: name.to_string(),
                metric: "recall".to_string(),
                k: depth,
                value: deep_recall / n,
            });
        }
        times.sort_by(f64::total_cmp);
        report
            .search_latency
            .push((name.to_string(), speed::quantile(&times, 0.5)));
    }
    Ok(())
}

/// Deterministic picks from the data set's users, products and texts.
struct Picker(crate::models::SplitMix64);

impl Picker {
    fn pick<'a>(&mut self, xs: &'a [String]) -> Option<&'a String> {
        crate::demo::pick(&mut self.0, xs)
    }
}

/// Up to `2 * n` distinct requests made by `make`, split in two halves (one per thread
/// count), so that no request is answered from the hot-query cache.
fn distinct_halves(n: usize, mut make: impl FnMut() -> Option<Query>) -> [Vec<Query>; 2] {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(2 * n);
    for _ in 0..20 * n {
        if out.len() >= 2 * n {
            break;
        }
        let Some(q) = make() else { break };
        if seen.insert(format!("{q:?}")) {
            out.push(q);
        }
    }
    let second = out.split_off(out.len() / 2);
    [out, second]
}

fn user_names(engine: &Engine) -> Vec<String> {
    let users = engine.state.users.read();
    (0..users.uid_count() as u32)
        .filter_map(|u| users.external(crate::events::UserId(u)))
        .collect()
}

/// Latency and throughput per operation on 1 and 2 threads, then ANN recall and the BM25
/// overhead.
fn latency(
    engine: &Engine,
    loaded: &data::Loaded,
    options: &BenchOptions,
    trained: bool,
    phase: &Phase,
    report: &mut Report,
) -> Result<()> {
    let (k, n) = (options.k, options.queries.max(1));
    let users = if trained {
        user_names(engine)
    } else {
        Vec::new()
    };
    let items = engine.product_ids();
    let texts = &loaded.texts;
    let mut rng = Picker(crate::models::SplitMix64::new(7));
    let mut ops: Vec<(&str, [Vec<Query>; 2])> = Vec::new();
    if !users.is_empty() && !texts.is_empty() {
        let qs = distinct_halves(n, || {
            let (t, u) = (rng.pick(texts)?, rng.pick(&users)?);
            Some(Query::new().text(t.clone()).user(u.clone()).k(k))
        });
        ops.push(("query_personalized_hybrid", qs));
    }
    if !texts.is_empty() {
        let qs = distinct_halves(n, || Some(Query::new().text(rng.pick(texts)?.clone()).k(k)));
        ops.push(("search", qs));
    }
    if !users.is_empty() {
        let qs = distinct_halves(n, || {
            Some(Query::new().user(rng.pick(&users)?.clone()).k(k))
        });
        ops.push(("recommend", qs));
    }
    if trained || engine.stats().vectors > 0 {
        let qs = distinct_halves(n, || {
            Some(Query::new().similar_to(rng.pick(&items)?.clone()).k(k))
        });
        ops.push(("similar_to", qs));
    }
    for (name, halves) in &ops {
        for (threads, requests) in [1, 2].into_iter().zip(halves) {
            if requests.is_empty() {
                continue;
            }
            let bar = phase.bar(&format!("{name}, {threads} thread(s)"), requests.len());
            let (hits_before, _) = engine.query_cache_stats();
            let mut row = speed::measure(name, threads, requests, &bar, |q| {
                engine.query(q).map(|_| ())
            })?;
            row.cache_hits = engine.query_cache_stats().0 - hits_before;
            bar.finish_and_clear();
            report.latency.push(row);
        }
    }
    direct_searches(engine, loaded, k, n, phase, report)
}

/// The two single-channel searches that bypass `Engine::query` (BM25 and vector), then the
/// BM25 overhead and ANN recall.
fn direct_searches(
    engine: &Engine,
    loaded: &data::Loaded,
    k: usize,
    n: usize,
    phase: &Phase,
    report: &mut Report,
) -> Result<()> {
    let texts: Vec<String> = loaded.texts.iter().cycle().take(n).cloned().collect();
    if !texts.is_empty() {
        for threads in [1, 2] {
            let bar = phase.bar(&format!("search_text, {threads} thread(s)"), texts.len());
            let row = speed::measure("search_text", threads, &texts, &bar, |t| {
                engine.search_text(t, &Filter::All, k).map(|_| ())
            })?;
            bar.finish_and_clear();
            report.latency.push(row);
        }
        let bar = phase.bar("BM25: engine against tantivy", texts.len());
        report.bm25_overhead = Some(speed::bm25_overhead(engine, &texts, k, &bar)?);
        bar.finish_and_clear();
    }
    if engine.stats().vectors == 0 || loaded.vectors.is_empty() {
        return Ok(());
    }
    let vectors: Vec<Vec<f32>> = loaded.vectors.iter().cycle().take(n).cloned().collect();
    for threads in [1, 2] {
        let bar = phase.bar(&format!("search_vector, {threads} thread(s)"), n);
        let row = speed::measure("search_vector", threads, &vectors, &bar, |v| {
            engine.search_vector(v, &Filter::All, k).map(|_| ())
        })?;
        bar.finish_and_clear();
        report.latency.push(row);
    }
    let mut probes = data::sample_vectors(engine, MAX_ANN_QUERIES / 2);
    probes.extend(loaded.vectors.iter().take(MAX_ANN_QUERIES / 2).cloned());
    let bar = phase.bar("ANN recall against exact scan", probes.len());
    report.ann = Some(speed::ann_recall(engine, &probes, k, &bar)?);
    bar.finish_and_clear();
    Ok(())
}
