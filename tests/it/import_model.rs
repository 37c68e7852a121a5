//! MF factors fitted elsewhere (feature `parquet`): `IMPORT MODEL mf` serves them as a new
//! model generation, checks every factor before anything changes, and takes Spark's ALS
//! output (the Spark round trip runs when pyspark and Java are installed).

use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{Float32Builder, ListBuilder};
use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use shopdb::{Channel, Engine, Error, MfFactors, MfImportOptions, Query, TrainOptions};

use super::models::generated_shop;
use super::support::tempdir;

fn trained(dir: &Path) -> Engine {
    let e = Engine::builder().dim(8).open(dir).unwrap();
    generated_shop(&e, 60, 120, 12);
    e.train(&TrainOptions {
        tune: None,
        ..TrainOptions::default()
    })
    .unwrap();
    e
}

/// `(id, raw MF score)` of a user's explained recommendations.
fn mf_scores(e: &Engine, user: &str) -> Vec<(String, Option<f32>)> {
    e.query(&Query::new().user(user).explain(true).k(10))
        .unwrap()
        .into_iter()
        .map(|h| {
            let mf = h
                .explanation
                .unwrap()
                .channels
                .iter()
                .find(|c| c.channel == Channel::Mf)
                .map(|c| c.raw);
            (h.id, mf)
        })
        .collect()
}

/// Every file under the model folder, name and bytes.
fn model_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("models"))
        .unwrap()
        .map(|f| {
            let f = f.unwrap();
            (
                f.file_name().to_string_lossy().into_owned(),
                std::fs::read(f.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn exported_factors_import_as_a_new_generation_that_serves_the_same() {
    let tmp = tempdir();
    let db = tmp.path().join("db");
    let e = trained(&db);
    let before = mf_scores(&e, "u3");
    let exported = e.export_mf(tmp.path().join("mf")).unwrap();
    let r = e
        .import_mf_parquet(tmp.path().join("mf"), &MfImportOptions::default())
        .unwrap();
    assert_eq!(r.generation, 2);
    assert_eq!(e.model_generation(), 2);
    assert_eq!((r.users + r.items) as u64, exported.rows);
    assert_eq!(r.folded_users, 0, "every user had a factor");
    assert_eq!(e.mf_import_report().unwrap(), r);
    // The same factors serve the same recommendations and MF scores.
    assert_eq!(mf_scores(&e, "u3"), before);
    drop(e);
    // The new generation is what opens next.
    let e = Engine::open(&db).unwrap();
    assert_eq!(e.model_generation(), 2);
    assert_eq!(mf_scores(&e, "u3"), before);
    assert!(e.mf_import_report().is_some());
    // A training fits MF again.
    e.train(&TrainOptions {
        tune: None,
        ..TrainOptions::default()
    })
    .unwrap();
    assert!(e.mf_import_report().is_none());
}

#[test]
fn imported_factors_are_what_mf_scores() {
    let tmp = tempdir();
    let e = trained(&tmp.path().join("db"));
    let dim = 3;
    // u0 points along the first axis; items i0..i119 along the second, except i7, which
    // points along the first: MF must put i7 first for u0 with a score of 2 * 5 = 10.
    let mut factors = MfFactors::default();
    factors.users.push(("u0".into(), vec![2.0, 0.0, 0.0]));
    for i in 0..120 {
        let f = if i == 7 {
            vec![5.0, 0.0, 0.0]
        } else {
            vec![0.0, 1.0, 0.1 * (i % 5) as f32]
        };
        factors.items.push((format!("i{i}"), f));
    }
    let r = e.import_mf(&factors, &MfImportOptions::default()).unwrap();
    assert_eq!((r.dim, r.users, r.items), (dim, 1, 120));
    assert_eq!(r.folded_users, 59, "the other users are folded in");
    let hits = e
        .query(&Query::new().user("u0").explain(true).k(50))
        .unwrap();
    let mf: Vec<(String, f32)> = hits
        .iter()
        .filter_map(|h| {
            let ex = h.explanation.as_ref()?;
            let c = ex.channels.iter().find(|c| c.channel == Channel::Mf)?;
            Some((h.id.clone(), c.raw))
        })
        .collect();
    let top = mf
        .iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .expect("MF scored some hits");
    // i7 may be in u0's history (then it is not recommended); otherwise it leads MF.
    let seen = e
        .user_history("u0", None)
        .unwrap()
        .iter()
        .any(|ev| ev.item == "i7");
    if !seen {
        assert_eq!(top.0, "i7");
        assert!((top.1 - 10.0).abs() < 1e-4, "{top:?}");
    }
    // Every other item scores u0 · y = 0 under these factors: MF proposes nothing else.
    assert!(mf.iter().all(|(id, _)| id == "i7"), "{mf:?}");
}

fn list(rows: &[Vec<f32>]) -> ArrayRef {
    let mut b = ListBuilder::new(Float32Builder::new());
    for r in rows {
        b.values().append_slice(r);
        b.append(true);
    }
    Arc::new(b.finish())
}

fn write(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        batch.schema(),
        None,
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// A factor folder: users and items as `(id, factor)`.
fn factor_dir(dir: &Path, users: &[(&str, Vec<f32>)], items: &[(&str, Vec<f32>)]) {
    for (name, rows) in [("user_factors", users), ("item_factors", items)] {
        let ids: Vec<&str> = rows.iter().map(|r| r.0).collect();
        let f: Vec<Vec<f32>> = rows.iter().map(|r| r.1.clone()).collect();
        write(
            &dir.join(format!("{name}.parquet")),
            vec![
                ("id", Arc::new(StringArray::from(ids)) as ArrayRef),
                ("features", list(&f)),
            ],
        );
    }
}

#[test]
fn bad_factor_files_are_typed_errors_and_apply_nothing() {
    let tmp = tempdir();
    let db = tmp.path().join("db");
    let e = trained(&db);
    let files = model_files(&db);
    let good_items: Vec<(&str, Vec<f32>)> = vec![("i1", vec![1.0, 0.0]), ("i2", vec![0.0, 1.0])];
    let root = tmp.path();
    let case = |name: &str| root.join(name);
    // Items of dimension 3 beside users of dimension 2.
    factor_dir(
        &case("dim"),
        &[("u1", vec![1.0, 2.0])],
        &[("i1", vec![1.0, 0.0, 0.0])],
    );
    // A NaN.
    factor_dir(&case("nan"), &[("u1", vec![1.0, f32::NAN])], &good_items);
    // Ids the engine does not know.
    factor_dir(
        &case("unknown"),
        &[("u1", vec![1.0, 2.0]), ("nobody", vec![0.5, 0.5])],
        &[("i1", vec![1.0, 0.0]), ("no-such-item", vec![0.0, 1.0])],
    );
    // The same user twice.
    factor_dir(
        &case("twice"),
        &[("u1", vec![1.0, 2.0]), ("u1", vec![2.0, 1.0])],
        &good_items,
    );
    for (dir, expect) in [
        ("dim", "3 values, the first one 2"),
        ("nan", "NaN"),
        (
            "unknown",
            "1 user ids the engine does not know (e.g. \"nobody\")",
        ),
        ("twice", "\"u1\" has two factors"),
    ] {
        match e.import_mf_parquet(case(dir), &MfImportOptions::default()) {
            Err(Error::Invalid { reason, .. }) => assert!(reason.contains(expect), "{reason}"),
            other => panic!("{dir}: {other:?}"),
        }
    }
    // Wrong schema: features as float64 scalars, ids as floats, no features column.
    write(
        &case("schema/user_factors.parquet"),
        vec![
            ("id", Arc::new(StringArray::from(vec!["u1"])) as ArrayRef),
            (
                "features",
                Arc::new(Float64Array::from(vec![1.0])) as ArrayRef,
            ),
        ],
    );
    write(
        &case("schema/item_factors.parquet"),
        vec![("id", Arc::new(StringArray::from(vec!["i1"])) as ArrayRef)],
    );
    write(
        &case("ids/user_factors.parquet"),
        vec![
            ("id", Arc::new(Float64Array::from(vec![1.5])) as ArrayRef),
            ("features", list(&[vec![1.0, 2.0]])),
        ],
    );
    std::fs::copy(
        case("schema/item_factors.parquet"),
        case("ids/item_factors.parquet"),
    )
    .unwrap();
    // A cut file.
    factor_dir(&case("cut"), &[("u1", vec![1.0, 2.0])], &good_items);
    let whole = std::fs::read(case("cut/item_factors.parquet")).unwrap();
    std::fs::write(
        case("cut/item_factors.parquet"),
        &whole[..whole.len() * 2 / 3],
    )
    .unwrap();
    for (dir, expect) in [
        (
            "schema",
            "column \"features\" is Float64, expected list<float32>",
        ),
        (
            "ids",
            "column \"id\" is Float64, expected string or integer",
        ),
        ("cut", "parquet"),
    ] {
        match e.import_mf_parquet(case(dir), &MfImportOptions::default()) {
            Err(Error::Corrupt { reason, .. }) => assert!(reason.contains(expect), "{reason}"),
            other => panic!("{dir}: {other:?}"),
        }
    }
    // No factor files at all.
    std::fs::create_dir_all(case("empty")).unwrap();
    assert!(matches!(
        e.import_mf_parquet(case("empty"), &MfImportOptions::default()),
        Err(Error::Invalid { .. })
    ));
    // Nothing was applied: the same generation, byte for byte.
    assert_eq!(e.model_generation(), 1);
    assert!(e.mf_import_report().is_none());
    assert_eq!(model_files(&db), files);
    // With skip_unknown the known ids import and the others are counted.
    let r = e
        .import_mf_parquet(case("unknown"), &MfImportOptions { skip_unknown: true })
        .unwrap();
    assert_eq!((r.users, r.items), (1, 1));
    assert_eq!((r.unknown_users, r.unknown_items), (1, 1));
    assert_eq!(e.model_generation(), 2);
}

#[test]
fn import_needs_a_trained_generation_and_spark_integer_ids_read() {
    let tmp = tempdir();
    let e = Engine::builder()
        .dim(8)
        .open(tmp.path().join("db"))
        .unwrap();
    generated_shop(&e, 20, 40, 5);
    // Spark's ALSModel writes integer ids: they read as their decimal form, so a shop
    // whose ids are numbers imports them as they are (here: unknown, so refused by name).
    let dir = tmp.path().join("spark");
    for name in ["user_factors", "item_factors"] {
        write(
            &dir.join(name).join("part-00000.parquet"),
            vec![
                ("id", Arc::new(Int64Array::from(vec![17])) as ArrayRef),
                ("features", list(&[vec![1.0, 2.0]])),
            ],
        );
    }
    assert!(matches!(
        e.import_mf_parquet(&dir, &MfImportOptions::default()),
        Err(Error::NotTrained(_))
    ));
    e.train(&TrainOptions {
        tune: None,
        ..TrainOptions::default()
    })
    .unwrap();
    match e.import_mf_parquet(&dir, &MfImportOptions::default()) {
        Err(Error::Invalid { reason, .. }) => assert!(reason.contains("\"17\""), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn import_model_statement_in_the_shell() {
    use super::cli::{Scratch, SEED};
    let s = Scratch::new();
    s.sql(SEED).ok();
    let refused = s.sql("IMPORT MODEL mf FROM 'nowhere'");
    assert_ne!(refused.code, 0);
    s.sql("TRAIN WITH (tune = off)").ok();
    s.sql("EXPORT MODEL mf TO 'out/mf'").ok();
    let said = s
        .sql("IMPORT MODEL mf FROM 'out/mf' WITH (skip_unknown = true)")
        .ok()
        .stdout;
    assert!(said.contains("generation 2: imported MF factors"), "{said}");
    let shown = s.sql("SHOW MODELS").ok().stdout;
    assert!(shown.contains("imported"), "{shown}");
    let bad = s.sql("IMPORT MODEL mf FROM 'out/mf' WITH (skip = true)");
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("skip_unknown"), "{}", bad.stderr);
}

/// Python with pyspark, pyarrow and numpy, and Java: the Spark round trip's needs.
fn spark_available() -> bool {
    let java = std::process::Command::new("java")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    let python = std::process::Command::new("python3")
        .args(["-c", "import pyspark, pyarrow, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    java && python
}

#[test]
fn spark_als_factors_round_trip_through_the_engine() {
    if !spark_available() {
        println!(
            "skipped: the Spark round trip needs java and python3 with pyspark, pyarrow and numpy"
        );
        return;
    }
    let tmp = tempdir();
    let e = trained(&tmp.path().join("db"));
    let events = tmp.path().join("events");
    e.export_events(&events).unwrap();
    let out = tmp.path().join("factors");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/spark_als.py");
    let run = std::process::Command::new("python3")
        .arg(&script)
        .arg(&events)
        .arg(&out)
        .args(["--factors", "16", "--iterations", "10"])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary = String::from_utf8_lossy(&run.stdout);
    println!("{summary}");
    let r = e
        .import_mf_parquet(&out, &MfImportOptions::default())
        .unwrap();
    assert_eq!((r.dim, r.users, r.folded_users), (16, 60, 0));
    assert_eq!(e.model_generation(), 2);
    // The Spark model serves: u3's recommendations carry MF scores from its factors.
    let scored = mf_scores(&e, "u3");
    assert_eq!(scored.len(), 10);
    assert!(
        scored.iter().any(|(_, s)| s.is_some_and(|s| s > 0.0)),
        "{scored:?}"
    );
}

#[test]
fn the_harness_exports_its_fitting_part_and_rates_imported_factors() {
    use super::cli::shopdb;
    use arrow_array::Array;
    let tmp = tempdir();
    // Relative paths, as a shell user types them.
    let bench = |extra: &[&str], out: &str| {
        let mut args = vec![
            "bench",
            "--dataset",
            "generated",
            "--scale",
            "tiny",
            "--queries",
            "10",
            "--typos",
            "0",
            "--no-exposure",
            "--no-tune",
            "--out",
            out,
        ];
        args.extend_from_slice(extra);
        shopdb(tmp.path(), &args, None).ok()
    };
    bench(&["--fit-export", "fit"], "own");
    let params: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("fit/mf_params.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(params["factors"], 64);
    // Factors for every user and item of the fitting part: each user's factor points at
    // their own items, so the imported model is a real (if crude) one.
    let file = std::fs::File::open(tmp.path().join("fit/interactions.parquet")).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let (mut users, mut items) = (
        std::collections::BTreeMap::new(),
        std::collections::BTreeSet::new(),
    );
    for b in reader {
        let b = b.unwrap();
        let col = |n: &str| {
            b.column_by_name(n)
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .clone()
        };
        let (u, i) = (col("user"), col("item"));
        assert!(!u.is_empty());
        for r in 0..u.len() {
            users
                .entry(u.value(r).to_string())
                .or_insert_with(Vec::new)
                .push(i.value(r).to_string());
            items.insert(i.value(r).to_string());
        }
    }
    let items: Vec<String> = items.into_iter().collect();
    let slot = |i: &str| items.iter().position(|x| x == i).unwrap() % 8;
    let item_rows: Vec<(&str, Vec<f32>)> = items
        .iter()
        .map(|i| {
            let mut f = vec![0.0; 8];
            f[slot(i)] = 1.0;
            (i.as_str(), f)
        })
        .collect();
    let user_rows: Vec<(&str, Vec<f32>)> = users
        .iter()
        .map(|(u, seen)| {
            let mut f = vec![0.01; 8];
            for i in seen {
                f[slot(i)] += 1.0;
            }
            (u.as_str(), f)
        })
        .collect();
    factor_dir(&tmp.path().join("factors"), &user_rows, &item_rows);
    let said = bench(&["--import-mf", "factors"], "imported");
    assert!(said.stdout.contains("| mf_imported |"), "{}", said.stdout);
    let own = std::fs::read_to_string(tmp.path().join("own/report.md")).unwrap();
    assert!(!own.contains("mf_imported"));
}
