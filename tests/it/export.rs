//! Parquet export (feature `parquet`): the log by day, the catalog and the MF factors read
//! back with the parquet crate's own reader (and with pyarrow when it is installed) equal
//! what the engine holds, and the same state exports to byte-identical files.

use std::collections::BTreeSet;
use std::path::Path;

use arrow_array::{
    Array, Float32Array, Float64Array, Int64Array, ListArray, RecordBatch, StringArray,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use shopdb::{Engine, Error, Event, EventKind, Product, TrainOptions};

use super::support::{tempdir, vector};

fn read(path: &Path) -> Vec<RecordBatch> {
    let file = std::fs::File::open(path).unwrap();
    ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

fn strings<'a>(b: &'a RecordBatch, name: &str) -> &'a StringArray {
    b.column_by_name(name)
        .unwrap()
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap()
}

/// Every file under `dir`, relative path and bytes, sorted.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for day in std::fs::read_dir(dir).unwrap() {
        let day = day.unwrap().path();
        let list: Vec<_> = if day.is_dir() {
            std::fs::read_dir(&day)
                .unwrap()
                .map(|f| f.unwrap().path())
                .collect()
        } else {
            vec![day.clone()]
        };
        for f in list {
            let rel = f.strip_prefix(dir).unwrap().display().to_string();
            out.push((rel, std::fs::read(&f).unwrap()));
        }
    }
    out.sort();
    out
}

const DAY: i64 = 86_400;
const T0: i64 = 1_700_006_400; // 2023-11-15 00:00 UTC

#[test]
fn events_products_and_factors_export_to_parquet_and_read_back() {
    let tmp = tempdir();
    let e = Engine::builder()
        .dim(4)
        .open(tmp.path().join("db"))
        .unwrap();
    let products: Vec<Product> = (0..40)
        .map(|i| {
            let p = Product::new(format!("i{i}"))
                .title(format!("item {i}"))
                .brand(format!("b{}", i % 3))
                .category("c/d")
                .attribute("color", "red");
            match i % 4 {
                0 => p,
                1 => p.price(9.5).embedding(vector(i, 4)),
                _ => p.price(i as f64).embedding(vector(i, 4)),
            }
        })
        .collect();
    e.upsert_products(products).unwrap();
    let mut events = Vec::new();
    for u in 0..12u64 {
        for j in 0..6u64 {
            let kind = if j == 5 {
                EventKind::Rating(3.5)
            } else {
                [EventKind::View, EventKind::Click, EventKind::Purchase][(j % 3) as usize]
            };
            let ts = T0 + ((u + j) % 3) as i64 * DAY + (u * 60 + j) as i64;
            events.push(Event::new(
                format!("u{u}"),
                format!("i{}", (u * 3 + j) % 40),
                kind,
                ts,
            ));
        }
    }
    e.append_events(events).unwrap();
    e.commit().unwrap();

    // Events: one file per UTC day, every event once.
    let out = tmp.path().join("events");
    let report = e.export_events(&out).unwrap();
    assert_eq!(report.files, 3);
    assert_eq!(report.rows, e.stats().events);
    let days: Vec<String> = files(&out).into_iter().map(|(p, _)| p).collect();
    assert_eq!(
        days,
        [
            "day=2023-11-15/part-0.parquet",
            "day=2023-11-16/part-0.parquet",
            "day=2023-11-17/part-0.parquet"
        ]
    );
    let mut exported = BTreeSet::new();
    for (rel, _) in files(&out) {
        let mut last_ts = i64::MIN;
        for b in read(&out.join(&rel)) {
            let ts = b
                .column_by_name("ts")
                .unwrap()
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            let value = b
                .column_by_name("value")
                .unwrap()
                .as_any()
                .downcast_ref::<Float32Array>()
                .unwrap();
            for r in 0..b.num_rows() {
                assert!(ts.value(r) >= last_ts, "time order in {rel}");
                last_ts = ts.value(r);
                exported.insert((
                    strings(&b, "user").value(r).to_string(),
                    strings(&b, "item").value(r).to_string(),
                    strings(&b, "kind").value(r).to_string(),
                    value.value(r).to_bits(),
                    ts.value(r),
                ));
            }
        }
    }
    let mut held = BTreeSet::new();
    for u in e.user_ids() {
        for ev in e.user_history(&u, None).unwrap() {
            held.insert((
                ev.user,
                ev.item,
                ev.kind.name().to_string(),
                ev.kind.value().to_bits(),
                ev.ts,
            ));
        }
    }
    assert_eq!(exported, held);
    // The same state, the same bytes.
    let again = tmp.path().join("events-again");
    e.export_events(&again).unwrap();
    assert_eq!(files(&out), files(&again), "a re-export is byte-identical");

    // Products: every live product with its fields and vector.
    let out = tmp.path().join("products");
    assert_eq!(e.export_products(&out).unwrap().rows, 40);
    let batches = read(&out.join("products.parquet"));
    let mut seen = 0;
    for b in &batches {
        let price = b
            .column_by_name("price")
            .unwrap()
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        let emb = b
            .column_by_name("embedding")
            .unwrap()
            .as_any()
            .downcast_ref::<ListArray>()
            .unwrap();
        for r in 0..b.num_rows() {
            let id = strings(b, "id").value(r);
            let p = e.get_product(id).unwrap().unwrap();
            assert_eq!(strings(b, "title").value(r), p.title);
            assert_eq!(strings(b, "brand").value(r), p.brand);
            assert_eq!(strings(b, "attributes").value(r), r#"{"color":"red"}"#);
            assert_eq!(price.is_null(r), p.price.is_none(), "{id}");
            if let Some(v) = p.price {
                assert_eq!(price.value(r), v);
            }
            assert_eq!(emb.is_null(r), p.embedding.is_none(), "{id}");
            if let Some(v) = &p.embedding {
                let row = emb.value(r);
                let got = row.as_any().downcast_ref::<Float32Array>().unwrap();
                assert_eq!(got.values().to_vec(), *v);
            }
            seen += 1;
        }
    }
    assert_eq!(seen, 40);

    // MF factors: none before training, then one row per user and per item.
    assert!(matches!(
        e.export_mf(tmp.path().join("mf0")),
        Err(Error::NotTrained(_))
    ));
    e.train(&TrainOptions::default()).unwrap();
    let out = tmp.path().join("mf");
    let report = e.export_mf(&out).unwrap();
    let users: usize = read(&out.join("user_factors.parquet"))
        .iter()
        .map(RecordBatch::num_rows)
        .sum();
    let items = read(&out.join("item_factors.parquet"));
    assert_eq!(users, 12);
    assert_eq!(
        report.rows as usize,
        users + items.iter().map(RecordBatch::num_rows).sum::<usize>()
    );
    let features = items[0]
        .column_by_name("features")
        .unwrap()
        .as_any()
        .downcast_ref::<ListArray>()
        .unwrap();
    let dim = features.value(0).len();
    assert!(dim > 0);
    for r in 0..features.len() {
        assert_eq!(
            features.value(r).len(),
            dim,
            "every item has the same number of factors"
        );
    }

    // A directory that exists is refused, and nothing is written into it.
    assert!(matches!(e.export_events(&out), Err(Error::Invalid { .. })));

    // Any Parquet reader: pyarrow, when installed.
    let script = "import sys, pyarrow.dataset as ds; print(ds.dataset(sys.argv[1], format='parquet', partitioning='hive').count_rows())";
    match std::process::Command::new("python3")
        .args(["-c", script])
        .arg(tmp.path().join("events"))
        .output()
    {
        Ok(o) if o.status.success() => {
            let n: u64 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
            assert_eq!(n, e.stats().events, "pyarrow reads every event");
        }
        _ => println!("skipped: pyarrow is not installed (pip install pyarrow)"),
    }
}

#[test]
fn export_statements_in_the_shell() {
    use super::cli::{Scratch, SEED};
    let s = Scratch::new();
    s.sql(SEED).ok();
    let said = s.sql("EXPORT EVENTS TO 'out/events'").ok().stdout;
    assert!(said.contains("exported 5 rows of events"), "{said}");
    let said = s.sql("EXPORT PRODUCTS TO 'out/products'").ok().stdout;
    assert!(said.contains("exported 4 rows of products"), "{said}");
    let refused = s.sql("EXPORT MODEL mf TO 'out/mf'");
    assert_ne!(refused.code, 0, "no model trained yet");
    let outside = s.sql("EXPORT EVENTS TO '/etc/shopdb-events'");
    assert_ne!(outside.code, 0);
    assert!(
        outside.stderr.contains("outside the allowed directories"),
        "{}",
        outside.stderr
    );
}

/// A small shop, exported: (engine, products dir, events dir).
fn exported_shop(root: &Path) -> (Engine, std::path::PathBuf, std::path::PathBuf) {
    let e = Engine::builder().dim(4).open(root.join("db")).unwrap();
    e.upsert_products(
        (0..20)
            .map(|i| {
                let p = Product::new(format!("i{i}"))
                    .title(format!("item {i}"))
                    .attribute("size", "m");
                if i % 2 == 0 {
                    p.price(i as f64 + 0.5).embedding(vector(i, 4))
                } else {
                    p
                }
            })
            .collect(),
    )
    .unwrap();
    e.append_events(
        (0..60u64)
            .map(|j| {
                let kind = if j % 7 == 0 {
                    EventKind::Rating(4.0)
                } else {
                    EventKind::Click
                };
                Event::new(
                    format!("u{}", j % 8),
                    format!("i{}", j % 20),
                    kind,
                    T0 + (j as i64) * 7_000,
                )
            })
            .collect(),
    )
    .unwrap();
    e.commit().unwrap();
    let (products, events) = (root.join("p"), root.join("e"));
    e.export_products(&products).unwrap();
    e.export_events(&events).unwrap();
    (e, products, events)
}

#[test]
fn an_export_imports_into_a_new_engine_and_exports_to_the_same_bytes() {
    let tmp = tempdir();
    let (source, products, events) = exported_shop(tmp.path());
    let copy = Engine::builder()
        .dim(4)
        .open(tmp.path().join("copy"))
        .unwrap();
    assert_eq!(copy.import_products_parquet(&products).unwrap(), 20);
    let n = copy.import_events_parquet(&events).unwrap();
    assert_eq!(n as u64, source.stats().events);
    for u in source.user_ids() {
        assert_eq!(
            copy.user_history(&u, None).unwrap(),
            source.user_history(&u, None).unwrap()
        );
    }
    copy.export_products(tmp.path().join("p2")).unwrap();
    copy.export_events(tmp.path().join("e2")).unwrap();
    assert_eq!(files(&products), files(&tmp.path().join("p2")));
    assert_eq!(files(&events), files(&tmp.path().join("e2")));
}

#[test]
fn bad_parquet_inputs_are_typed_errors_and_apply_nothing() {
    use arrow_array::ArrayRef;
    use std::sync::Arc;
    let tmp = tempdir();
    let (e, _, events) = exported_shop(tmp.path());
    let before = e.stats();
    let write = |name: &str, columns: Vec<(&str, ArrayRef)>| {
        let path = tmp.path().join(name);
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(
            std::fs::File::create(&path).unwrap(),
            batch.schema(),
            None,
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        path
    };
    let s = |v: &[&str]| Arc::new(StringArray::from(v.to_vec())) as ArrayRef;
    // `ts` as text instead of int64.
    let wrong_type = write(
        "wrong-type.parquet",
        vec![
            ("user", s(&["u1"])),
            ("item", s(&["i1"])),
            ("kind", s(&["view"])),
            ("value", Arc::new(Float32Array::from(vec![0.0])) as ArrayRef),
            ("ts", s(&["yesterday"])),
        ],
    );
    // No `kind` column.
    let missing = write(
        "missing.parquet",
        vec![
            ("user", s(&["u1"])),
            ("item", s(&["i1"])),
            ("value", Arc::new(Float32Array::from(vec![0.0])) as ArrayRef),
            ("ts", Arc::new(Int64Array::from(vec![T0])) as ArrayRef),
        ],
    );
    // A product that does not exist.
    let unknown = write(
        "unknown.parquet",
        vec![
            ("user", s(&["u1"])),
            ("item", s(&["no-such-item"])),
            ("kind", s(&["view"])),
            ("value", Arc::new(Float32Array::from(vec![0.0])) as ArrayRef),
            ("ts", Arc::new(Int64Array::from(vec![T0])) as ArrayRef),
        ],
    );
    // A cut file, and a file that is not Parquet at all.
    let first = files(&events).remove(0);
    let cut = tmp.path().join("cut.parquet");
    std::fs::write(&cut, &first.1[..first.1.len() / 2]).unwrap();
    let text = tmp.path().join("text.parquet");
    std::fs::write(&text, b"user,item\nu1,i1\n").unwrap();
    for (path, expect) in [
        (&wrong_type, "column \"ts\" is Utf8, expected int64"),
        (&missing, "no column \"kind\""),
        (&cut, "parquet"),
        (&text, "parquet"),
    ] {
        match e.import_events_parquet(path) {
            Err(Error::Corrupt { reason, .. }) => assert!(reason.contains(expect), "{reason}"),
            other => panic!("{path:?}: {other:?}"),
        }
    }
    assert!(matches!(
        e.import_events_parquet(&unknown),
        Err(Error::UnknownItem(_))
    ));
    // A folder with one bad file among good ones applies nothing either.
    let mixed = tmp.path().join("mixed");
    std::fs::create_dir_all(&mixed).unwrap();
    std::fs::copy(&wrong_type, mixed.join("z.parquet")).unwrap();
    std::fs::write(mixed.join("a.parquet"), &first.1).unwrap();
    assert!(e.import_events_parquet(&mixed).is_err());
    assert_eq!(e.stats(), before, "nothing applied");
    assert_eq!(e.pending_ops(), 0);
}
