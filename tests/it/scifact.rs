//! SciFact (BEIR): BM25, vector and hybrid search quality, scored like BEIR (pytrec_eval).
//!
//! `scifact_test_split` reports the test split with fixed settings; those settings were chosen
//! by `scifact_tune_on_train` (ignored: `cargo test --test it scifact_tune -- --ignored
//! --nocapture`), which only looks at the train split's queries.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use shopdb::beir::{self, BeirSet, SearchMethod};
use shopdb::{import, Engine, Error, Filter, Fusion};

use crate::support::tempdir;

/// The SciFact folder, or `None` (after printing one line) when it is absent.
fn scifact_dir() -> Option<PathBuf> {
    let dir = import::data_dir().join("scifact");
    if dir.join("corpus.jsonl").exists() && dir.join("embeddings/corpus.f32").exists() {
        Some(dir)
    } else {
        println!("skipping: {} not found (set SHOPDB_DATA)", dir.display());
        None
    }
}

/// An engine in a temp dir holding the whole corpus with its MiniLM vectors.
fn loaded_engine(set: &BeirSet) -> (tempfile::TempDir, Engine) {
    let dir = tempdir();
    let engine = Engine::builder()
        .dim(384)
        .durable_commits(false)
        .open(dir.path())
        .unwrap();
    let t = Instant::now();
    beir::load_into(&engine, set).unwrap();
    assert_eq!(engine.product_count(), set.corpus.len());
    assert_eq!(engine.stats().vectors, set.corpus.len());
    println!(
        "loaded {} docs with 384-d vectors in {:.1}s",
        set.corpus.len(),
        t.elapsed().as_secs_f64()
    );
    (dir, engine)
}

fn metric(rows: &[(String, usize, f64)], name: &str, k: usize) -> f64 {
    rows.iter()
        .find(|(m, kk, _)| m == name && *kk == k)
        .map(|r| r.2)
        .unwrap_or(f64::NAN)
}

/// Scores one method and prints a table row: nDCG@10, Recall@100, MRR@10.
fn row(engine: &Engine, set: &BeirSet, method: SearchMethod) -> (f64, f64) {
    let t = Instant::now();
    let rows = beir::evaluate_search(engine, set, method, &[10, 100]).unwrap();
    let (ndcg, recall, mrr) = (
        metric(&rows, "ndcg", 10),
        metric(&rows, "recall", 100),
        metric(&rows, "mrr", 10),
    );
    println!(
        "| {:<36} | {ndcg:.4} | {recall:.4} | {mrr:.4} | {:>5.1}s |",
        method.label(),
        t.elapsed().as_secs_f64()
    );
    (ndcg, recall)
}

fn header(split: &str, set: &BeirSet) {
    println!(
        "\nSciFact {split} split, {} queries, {} docs",
        set.qrels.len(),
        set.corpus.len()
    );
    println!("| method                               | nDCG@10 | Recall@100 | MRR@10 | time |");
    println!("|---|---|---|---|---|");
}

/// RRF offset chosen on the train split by `scifact_tune_on_train`: nDCG@10 rises as k falls
/// (train, 809 queries: k 1 0.7330, k 2 0.7313, k 5 0.7295, k 10 0.7273, k 60 0.7157), so the
/// train argmax k = 1 is used. k = 60 (the paper's value) is reported beside it, untuned.
const RRF_K_TUNED: f32 = 1.0;

#[test]
fn scifact_test_split() {
    let Some(dir) = scifact_dir() else { return };
    let started = Instant::now();
    let set = beir::load(&dir, "test").unwrap();
    assert_eq!(set.corpus.len(), 5_183);
    assert_eq!(set.qrels.len(), 300);
    assert_eq!(set.qrels.values().map(HashMap::len).sum::<usize>(), 339);
    let limits = shopdb::Limits::default();
    let cut = set
        .queries
        .values()
        .filter(|q| beir::fit_query(q, &limits).1)
        .count();
    println!("queries cut to the engine's limits: {cut}");
    let (_tmp, engine) = loaded_engine(&set);

    header("test", &set);
    let (bm25, bm25_recall) = row(&engine, &set, SearchMethod::Bm25);
    let (vector, vector_recall) = row(&engine, &set, SearchMethod::Vector);
    // Linear fusion with only the two content channels weighs them 50/50 whatever alpha is;
    // 50/50 is also the best text/vector split on train (convex grid in the tuning test:
    // w 0.4 0.7318, w 0.5 0.7321, w 0.6 0.7218), and 100 candidates per channel (train: 50
    // 0.7295, 100 0.7321, 200 0.7321, 500 0.7329).
    let (linear, _) = row(
        &engine,
        &set,
        SearchMethod::Hybrid(Fusion::Linear {
            alpha: 0.5,
            beta: 0.5,
        }),
    );
    let (rrf60, _) = row(&engine, &set, SearchMethod::Hybrid(Fusion::Rrf { k: 60.0 }));
    let (rrf, rrf_recall) = row(
        &engine,
        &set,
        SearchMethod::Hybrid(Fusion::Rrf { k: RRF_K_TUNED }),
    );
    println!("total {:.1}s", started.elapsed().as_secs_f64());

    // Floors: the test-split figures measured when they were set, minus 0.01 (bm25 0.6859 /
    // 0.9216, vector 0.6451 / 0.9250, linear 0.7290, RRF k 60 0.7145, RRF k 1 0.7172 /
    // 0.9517). This build: vector 0.6417 / 0.9217 (the graph search; exact cosine is 0.6451),
    // linear 0.7291, RRF k 60 0.7090, RRF k 1 0.7118 / 0.9583.
    // References (shared/data/README.md): BM25 0.679 (Anserini), MiniLM exact cosine 0.645 /
    // Recall@100 0.925, RRF of the top-100 lists 0.716, convex combination of min-max
    // normalised scores 0.722-0.733. The issue's targets: BM25 >= 0.67, hybrid >= 0.70.
    assert!(bm25 >= 0.675, "BM25 nDCG@10 {bm25:.4}");
    assert!(bm25_recall >= 0.91, "BM25 Recall@100 {bm25_recall:.4}");
    assert!(vector >= 0.635, "vector nDCG@10 {vector:.4}");
    assert!(
        vector_recall >= 0.915,
        "vector Recall@100 {vector_recall:.4}"
    );
    assert!(linear >= 0.719, "hybrid linear nDCG@10 {linear:.4}");
    assert!(rrf60 >= 0.704, "hybrid RRF k 60 nDCG@10 {rrf60:.4}");
    assert!(rrf >= 0.707, "hybrid RRF k {RRF_K_TUNED} nDCG@10 {rrf:.4}");
    assert!(rrf_recall >= 0.94, "hybrid Recall@100 {rrf_recall:.4}");
}

/// Ranked `(id, score)` lists of both channels for every query, for client-side fusion.
type Lists = Vec<(String, Vec<(String, f32)>, Vec<(String, f32)>)>;

fn channel_lists(engine: &Engine, set: &BeirSet, n: usize) -> Lists {
    let limits = engine.config().limits.clone();
    let vectors = set.query_vectors.as_ref().unwrap();
    set.query_ids()
        .into_iter()
        .map(|qid| {
            let (text, _) = beir::fit_query(&set.queries[&qid], &limits);
            let t = engine.search_text(&text, &Filter::All, n).unwrap();
            let v = engine
                .search_vector(&vectors[&qid], &Filter::All, n)
                .unwrap();
            let pairs = |s: Vec<shopdb::Scored>| s.into_iter().map(|h| (h.id, h.score)).collect();
            (qid, pairs(t), pairs(v))
        })
        .collect()
}

fn min_max(list: &[(String, f32)]) -> HashMap<&str, f64> {
    let lo = list.iter().map(|h| h.1).fold(f32::INFINITY, f32::min);
    let hi = list.iter().map(|h| h.1).fold(f32::NEG_INFINITY, f32::max);
    list.iter()
        .map(|(id, s)| {
            let n = if hi > lo { (s - lo) / (hi - lo) } else { 1.0 };
            (id.as_str(), f64::from(n))
        })
        .collect()
}

/// nDCG@10 of the convex combination `(1 - w) * text + w * vector` of min-max scores, the
/// formula `Fusion::Linear` applies with w fixed at 0.5.
fn convex_ndcg(set: &BeirSet, lists: &Lists, w: f64) -> f64 {
    let mut sum = 0.0;
    for (qid, t, v) in lists {
        let (tn, vn) = (min_max(t), min_max(v));
        let mut fused: HashMap<&str, f64> = HashMap::new();
        for (id, s) in &tn {
            *fused.entry(id).or_default() += (1.0 - w) * s;
        }
        for (id, s) in &vn {
            *fused.entry(id).or_default() += w * s;
        }
        let mut ranked: Vec<(&str, f64)> = fused.into_iter().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
        let ids: Vec<String> = ranked.iter().map(|r| r.0.to_string()).collect();
        sum += beir::score_ranking(&ids, &set.qrels[qid], 10)[0];
    }
    sum / lists.len() as f64
}

/// The tuning grid, on the train split only (809 queries).
#[test]
#[ignore = "tuning grid on the train split; run with --ignored --nocapture"]
fn scifact_tune_on_train() {
    let Some(dir) = scifact_dir() else { return };
    let set = beir::load(&dir, "train").unwrap();
    let (_tmp, engine) = loaded_engine(&set);
    header("train", &set);
    row(&engine, &set, SearchMethod::Bm25);
    row(&engine, &set, SearchMethod::Vector);
    for alpha in [0.5, 1.0] {
        row(
            &engine,
            &set,
            SearchMethod::Hybrid(Fusion::Linear { alpha, beta: 0.5 }),
        );
    }
    for k in [1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 60.0, 100.0] {
        row(&engine, &set, SearchMethod::Hybrid(Fusion::Rrf { k }));
    }

    // The text channel of `Engine::query` adds edit-distance-1 matches (weight 0.3) for words
    // of 5+ characters; `search_text` does not. Text alone through `query`:
    let fuzzy_ndcg = {
        let limits = engine.config().limits.clone();
        let mut sum = 0.0;
        for qid in set.query_ids() {
            let (text, _) = beir::fit_query(&set.queries[&qid], &limits);
            let q = shopdb::Query::new()
                .text(text)
                .fusion(Fusion::Linear {
                    alpha: 0.5,
                    beta: 0.5,
                })
                .k(10)
                .candidates(100);
            let ids: Vec<String> = engine
                .query(&q)
                .unwrap()
                .into_iter()
                .map(|h| h.id)
                .collect();
            sum += beir::score_ranking(&ids, &set.qrels[&qid], 10)[0];
        }
        sum / set.qrels.len() as f64
    };
    println!("| text alone through Engine::query (fuzzy) | {fuzzy_ndcg:.4} |");

    // What a text-vs-vector weight would buy (Fusion::Linear fixes it at 0.5): the same
    // min-max convex combination computed here from the two top-100 lists.
    let lists = channel_lists(&engine, &set, 100);
    println!("\nconvex combination of min-max scores, train, nDCG@10 by vector weight w:");
    for w in [0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0] {
        println!("| w {w:.1} | {:.4} |", convex_ndcg(&set, &lists, w));
    }
    println!("\nthe same at w 0.5 by list depth (candidates per channel):");
    for n in [50, 200, 500] {
        let lists = channel_lists(&engine, &set, n);
        println!("| n {n} | {:.4} |", convex_ndcg(&set, &lists, 0.5));
    }
}

/// The reader and the metrics on a hand-made BEIR folder (runs without the data sets).
#[test]
fn beir_reader_and_metrics() {
    let tmp = tempdir();
    let d = tmp.path();
    let write = |p: &str, s: &[u8]| {
        let path = d.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, s).unwrap();
    };
    write(
        "corpus.jsonl",
        br#"{"_id": "d1", "title": "Red shoe", "text": "running shoes"}
{"_id": "d2", "title": "", "text": "blue bag"}
{"_id": 3, "text": "green hat"}
"#,
    );
    write(
        "queries.jsonl",
        br#"{"_id": "q1", "text": "shoe"}
{"_id": "q2", "text": "bag", "metadata": {}}
{"_id": "q3", "text": "not judged"}
"#,
    );
    write(
        "qrels/test.tsv",
        b"query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\t3\t1\nq2\td2\t1\nq2\td1\t0\n",
    );
    let rows = |v: &[[f32; 2]]| {
        v.iter()
            .flatten()
            .flat_map(|x| x.to_le_bytes())
            .collect::<Vec<u8>>()
    };
    write(
        "embeddings/corpus.f32",
        &rows(&[[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]),
    );
    write("embeddings/corpus.ids", b"d1\nd2\n3\n");
    write(
        "embeddings/queries.f32",
        &rows(&[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]),
    );
    write("embeddings/queries.ids", b"q1\nq2\nq3\n");

    let set = beir::load(d, "test").unwrap();
    assert_eq!(set.corpus.len(), 3);
    assert_eq!(set.corpus[2].id, "3");
    assert_eq!(set.queries.len(), 2, "only the split's queries");
    assert_eq!(set.qrels["q1"]["d1"], 2);
    assert_eq!(set.query_vectors.as_ref().unwrap().len(), 2);
    assert_eq!(set.corpus_vectors.as_ref().unwrap()["3"], vec![0.6, 0.8]);

    // Graded nDCG: ranking [3, x, d1] for rels {d1: 2, 3: 1}.
    let ranked: Vec<String> = ["3", "x", "d1"].iter().map(|s| s.to_string()).collect();
    let [ndcg, recall, mrr] = beir::score_ranking(&ranked, &set.qrels["q1"], 10);
    let dcg = 1.0 + 2.0 / 4f64.log2();
    let idcg = 2.0 + 1.0 / 3f64.log2();
    assert!((ndcg - dcg / idcg).abs() < 1e-12);
    assert_eq!((recall, mrr), (1.0, 1.0));
    let [ndcg1, recall1, _] = beir::score_ranking(&ranked, &set.qrels["q1"], 1);
    assert!((ndcg1 - 0.5).abs() < 1e-12);
    assert_eq!(recall1, 0.5);

    // End to end on a 2-d engine: every method finds the judged documents.
    let etmp = tempdir();
    let engine = Engine::builder().dim(2).open(etmp.path()).unwrap();
    beir::load_into(&engine, &set).unwrap();
    for method in [
        SearchMethod::Bm25,
        SearchMethod::Vector,
        SearchMethod::Hybrid(Fusion::Rrf { k: 60.0 }),
    ] {
        let m = beir::evaluate_search(&engine, &set, method, &[1, 10]).unwrap();
        assert_eq!(metric(&m, "mrr", 10), 1.0, "{method:?}: {m:?}");
    }

    // Bad inputs are typed errors.
    write("qrels/bad.tsv", b"q1\td1\n");
    assert!(matches!(
        beir::load(d, "bad"),
        Err(Error::BadRow { line: 1, .. })
    ));
    write("qrels/unknown.tsv", b"q1\td1\t1\nq9\td1\t1\n");
    assert!(matches!(
        beir::load(d, "unknown"),
        Err(Error::BadRow { line: 2, .. })
    ));
    assert!(matches!(beir::load(d, "missing"), Err(Error::Io { .. })));
    for split in ["", "../test", "qrels/test", ".hidden"] {
        assert!(
            matches!(beir::load(d, split), Err(Error::Invalid { .. })),
            "{split:?}"
        );
    }
    write("embeddings/corpus.f32", &[0u8; 10]);
    assert!(matches!(beir::load(d, "test"), Err(Error::Corrupt { .. })));
    write("corpus.jsonl", b"{\"_id\": \"d1\"}\nnot json\n");
    assert!(matches!(
        beir::load(d, "test"),
        Err(Error::BadRow { line: 2, .. })
    ));
}
