//! The benchmark harness: the generic file format gives the figures the in-memory path
//! gives, and `shopdb bench` writes its three outputs in the documented shape.

use shopdb::bench::{self, BenchOptions, Dataset, Scale};
use shopdb::Error;

use super::cli::shopdb;
use super::support::tempdir;

/// Quality only: speed is measured by the harness, never asserted in a test.
fn quality_only(dataset: Dataset, db: &std::path::Path) -> bench::Report {
    let options = BenchOptions {
        speed: false,
        typos: 0,
        ..BenchOptions::new(dataset, db)
    };
    bench::run(&options).expect("bench run")
}

#[test]
fn generic_files_give_the_same_figures_as_the_in_memory_shop() {
    let tmp = tempdir();
    let d = tmp.path();
    let shop = shopdb::demo::shop(&Scale::Tiny.options(), 8);
    let (products, events) = (d.join("products.jsonl"), d.join("events.csv"));
    let (f32s, ids) = (d.join("items.f32"), d.join("items.ids"));
    bench::write_products_jsonl(&products, &shop.products).unwrap();
    bench::write_events_csv(&events, &shop.events).unwrap();
    bench::write_vectors(&f32s, &ids, &shop.products).unwrap();

    let memory = quality_only(
        Dataset::Shop {
            name: "tiny".to_string(),
            shop: Box::new(shop.clone()),
        },
        &d.join("db-memory"),
    );
    let files = quality_only(
        Dataset::Generic {
            products,
            events,
            embeddings: Some((f32s, ids)),
        },
        &d.join("db-files"),
    );
    assert_eq!(files.sizes.products, shop.products.len());
    assert_eq!(files.sizes.vectors, shop.products.len());
    assert_eq!(files.sizes.events, memory.sizes.events);
    assert_eq!(files.sizes.users, memory.sizes.users);

    let recommend = |r: &bench::Report| -> Vec<bench::QualityRow> {
        r.quality
            .iter()
            .filter(|q| q.task == "recommend")
            .cloned()
            .collect()
    };
    let (a, b) = (recommend(&memory), recommend(&files));
    // Eleven methods (seven models, four fusion modes) by five metrics and three of exposure.
    assert_eq!(a.len(), 88, "{a:?}");
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((&x.method, &x.metric, x.k), (&y.method, &y.metric, y.k));
        assert!(
            (x.value - y.value).abs() < 1e-9,
            "{} {}@{}: in memory {}, from files {}",
            x.method,
            x.metric,
            x.k,
            x.value,
            y.value
        );
    }
    // The models learned something from the latent tastes (not a run of zeros).
    let mf = memory.quality("recommend", "mf", "ndcg", 10).unwrap();
    let pop = memory
        .quality("recommend", "popularity", "ndcg", 10)
        .unwrap();
    assert!(mf > pop, "mf {mf} popularity {pop}");

    // The exposure sweep: uncut, it is the fused ranking it starts from; a long-tail share
    // never lowers the long-tail share of the pages; every setting is rated.
    let sweep = |method: &str, metric: &str| {
        memory
            .quality("exposure", method, metric, 10)
            .unwrap_or_else(|| panic!("no exposure row {method} {metric}"))
    };
    for (label, _) in bench::exposure_settings() {
        assert!((0.0..=1.0).contains(&sweep(&label, "ndcg")), "{label}");
    }
    let learned = memory
        .quality("recommend", "fused_learned", "ndcg", 10)
        .unwrap();
    assert!((sweep("none", "ndcg") - learned).abs() < 1e-12);
    assert!(sweep("long tail 0.4", "long_tail") >= sweep("none", "long_tail"));
    assert!(sweep("long tail 0.4", "long_tail") > 0.0);
}

#[test]
fn bad_bench_input_is_a_typed_error() {
    let tmp = tempdir();
    let d = tmp.path();
    let k0 = BenchOptions {
        k: 0,
        ..BenchOptions::new(Dataset::Generated(Scale::Tiny), d.join("db"))
    };
    assert!(matches!(bench::run(&k0), Err(Error::Invalid { .. })));
    let missing = BenchOptions::new(
        Dataset::Generic {
            products: d.join("absent.jsonl"),
            events: d.join("absent.csv"),
            embeddings: None,
        },
        d.join("db2"),
    );
    assert!(matches!(bench::run(&missing), Err(Error::Io { .. })));
    std::fs::write(d.join("occupied"), "x").unwrap();
    let occupied = BenchOptions::new(Dataset::Generated(Scale::Tiny), d);
    assert!(matches!(bench::run(&occupied), Err(Error::Invalid { .. })));
}

const METHODS: [&str; 13] = [
    "popularity",
    "item_cf",
    "user_cf",
    "mf",
    "kg",
    "content",
    "sequence",
    "bm25",
    "vector",
    "fused_linear",
    "fused_rrf",
    "fused_learned",
    "fused_mlp",
];
const METRICS: [&str; 8] = [
    "recall",
    "precision",
    "ndcg",
    "mrr",
    "hit",
    "coverage",
    "gini",
    "long_tail",
];

fn number(v: &serde_json::Value, what: &str) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"))
}

#[test]
fn cli_bench_writes_report_json_markdown_and_plots() {
    let tmp = tempdir();
    let out = tmp.path().join("out");
    let out_s = out.to_str().unwrap();
    let args = [
        "bench",
        "--dataset",
        "generated",
        "--scale",
        "tiny",
        "--queries",
        "20",
        "--out",
        out_s,
    ];
    shopdb(tmp.path(), &args, None).ok();
    assert!(
        !out.join("db").exists(),
        "the benchmark database is removed"
    );
    for svg in ["latency_recall.svg", "ablation.svg", "exposure.svg"] {
        let text = std::fs::read_to_string(out.join(svg)).unwrap();
        assert!(text.starts_with("<svg") && text.contains("</svg>"), "{svg}");
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("| fused_mlp |") && md.contains("## Latency"),
        "{md}"
    );

    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(r["dataset"], "generated-tiny");
    assert_eq!(r["split"], "recbole");
    let quality = r["quality"].as_array().unwrap();
    let settings: Vec<String> = bench::exposure_settings()
        .into_iter()
        .map(|(label, _)| label)
        .collect();
    for q in quality {
        let task = q["task"].as_str().unwrap();
        assert!(["recommend", "search", "exposure"].contains(&task), "{q}");
        let method = q["method"].as_str().unwrap();
        if task == "exposure" {
            assert!(settings.iter().any(|s| s == method), "{q}");
        } else {
            assert!(METHODS.contains(&method), "{q}");
        }
        assert!(METRICS.contains(&q["metric"].as_str().unwrap()), "{q}");
        // Labelled searches also report Recall@100 (BEIR's depth); everything else is @10.
        if task == "search" && q["k"] == 100 {
            assert_eq!(q["metric"], "recall", "{q}");
        } else {
            assert_eq!(q["k"], 10, "{q}");
        }
        let v = number(&q["value"], "value");
        assert!((0.0..=1.0).contains(&v), "{q}");
    }
    for task in ["recommend", "search"] {
        let methods: std::collections::HashSet<&str> = quality
            .iter()
            .filter(|q| q["task"] == task)
            .map(|q| q["method"].as_str().unwrap())
            .collect();
        let want: &[&str] = if task == "recommend" {
            &METHODS[..7]
        } else {
            &METHODS[7..11]
        };
        for m in want {
            assert!(methods.contains(m), "{task} lacks {m}: {methods:?}");
        }
    }
    let latency = r["latency"].as_array().unwrap();
    for op in [
        "query_personalized_hybrid",
        "search",
        "recommend",
        "similar_to",
    ] {
        for threads in [1, 2] {
            let row = latency
                .iter()
                .find(|l| l["operation"] == op && l["threads"] == threads)
                .unwrap_or_else(|| panic!("no {op} on {threads} thread(s)"));
            let p = |f: &str| number(&row[f], f);
            assert!(p("p50_ms") > 0.0 && p("p50_ms") <= p("p95_ms") && p("p95_ms") <= p("p99_ms"));
            assert!(p("qps") > 0.0, "{row}");
        }
    }
    for what in ["products", "events"] {
        let row = r["ingest"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["what"] == what)
            .unwrap_or_else(|| panic!("no {what} ingest rate"));
        assert!(number(&row["per_second"], "per_second") > 0.0);
    }
    let training = r["training"].as_array().unwrap();
    for model in ["item_cf", "user_cf", "mf", "kg", "mlp"] {
        assert!(
            training
                .iter()
                .any(|t| t["model"] == model && t["seconds"].is_number()),
            "no training time for {model}"
        );
    }
    assert!(number(&r["memory"]["peak_rss_mb"], "peak_rss_mb") > 0.0);
    assert!(number(&r["ann"]["recall"], "ann recall") > 0.5);
    assert!(number(&r["bm25_overhead"]["ratio"], "overhead") > 0.0);
}
