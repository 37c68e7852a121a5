//! Bad inputs: each gets a typed error, none panics, and what was stored before is intact.

use std::io::Write;

use shopdb::import::{self, OnError};
use shopdb::{Engine, Error, Event, EventKind, Filter, Product};

use crate::support::{open, products, tempdir, vector};

type Case = (
    &'static str,
    Box<dyn Fn(&Engine, &std::path::Path) -> shopdb::Result<()>>,
    fn(&Error) -> bool,
);

fn nested(depth: usize) -> Filter {
    let mut f = Filter::brand("x");
    for _ in 0..depth {
        f = Filter::Not(Box::new(f));
    }
    f
}

fn write(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().write_all(bytes).unwrap();
    p
}

#[test]
fn bad_inputs_get_typed_errors_and_change_nothing() {
    let dir = tempdir();
    let files = tempdir();
    let e = open(dir.path());
    e.upsert_products(products(20, 8)).unwrap();
    e.append_event(Event::new("u1", "p1", EventKind::View, 1_700_000_000))
        .unwrap();
    e.commit().unwrap();
    let before = e.stats();
    let far_future = 4_000_000_000i64;
    let p = |id: &str| Product::new(id).title("t");
    let invalid = |e: &Error| matches!(e, Error::Invalid { .. });
    let limit = |e: &Error| matches!(e, Error::LimitExceeded { .. });
    let dim = |e: &Error| matches!(e, Error::DimensionMismatch { .. });
    let unknown_item = |e: &Error| matches!(e, Error::UnknownItem(_));
    let bad_row = |e: &Error| matches!(e, Error::BadRow { .. });
    let cases: Vec<Case> = vec![
        (
            "NaN in vector",
            Box::new(move |e, _| e.upsert_product(p("x").embedding(vec![f32::NAN; 8]))),
            invalid,
        ),
        (
            "inf in vector",
            Box::new(move |e, _| e.upsert_product(p("x").embedding(vec![f32::INFINITY; 8]))),
            invalid,
        ),
        (
            "zero vector",
            Box::new(move |e, _| e.upsert_product(p("x").embedding(vec![0.0; 8]))),
            invalid,
        ),
        (
            "short vector",
            Box::new(move |e, _| e.upsert_product(p("x").embedding(vec![1.0; 7]))),
            dim,
        ),
        (
            "long vector",
            Box::new(move |e, _| e.upsert_product(p("x").embedding(vec![1.0; 9]))),
            dim,
        ),
        (
            "empty id",
            Box::new(move |e, _| e.upsert_product(p(""))),
            invalid,
        ),
        (
            "huge id",
            Box::new(move |e, _| e.upsert_product(p(&"x".repeat(10_000)))),
            limit,
        ),
        (
            "control char id",
            Box::new(move |e, _| e.upsert_product(p("a\u{0}b"))),
            invalid,
        ),
        (
            "huge title",
            Box::new(move |e, _| e.upsert_product(p("x").title("w ".repeat(40_000)))),
            limit,
        ),
        (
            "NaN price",
            Box::new(move |e, _| e.upsert_product(p("x").price(f64::NAN))),
            invalid,
        ),
        (
            "negative price",
            Box::new(move |e, _| e.upsert_product(p("x").price(-1.0))),
            invalid,
        ),
        (
            "duplicate id in batch",
            Box::new(move |e, _| e.upsert_products(vec![p("x"), p("x")])),
            invalid,
        ),
        (
            "batch with one bad row",
            Box::new(move |e, _| e.upsert_products(vec![p("ok1"), p("bad").price(-5.0)])),
            invalid,
        ),
        (
            "delete unknown product",
            Box::new(|e, _| e.delete_product("nope")),
            unknown_item,
        ),
        (
            "event for unknown item",
            Box::new(|e, _| {
                e.append_event(Event::new("u", "nope", EventKind::View, 1))
                    .map(|_| ())
            }),
            unknown_item,
        ),
        (
            "event far in the future",
            Box::new(move |e, _| {
                e.append_event(Event::new("u", "p1", EventKind::View, far_future))
                    .map(|_| ())
            }),
            invalid,
        ),
        (
            "event before 1970",
            Box::new(|e, _| {
                e.append_event(Event::new("u", "p1", EventKind::View, -5))
                    .map(|_| ())
            }),
            invalid,
        ),
        (
            "NaN rating",
            Box::new(|e, _| {
                e.append_event(Event::new("u", "p1", EventKind::Rating(f32::NAN), 5))
                    .map(|_| ())
            }),
            invalid,
        ),
        (
            "empty user",
            Box::new(|e, _| {
                e.append_event(Event::new("", "p1", EventKind::View, 5))
                    .map(|_| ())
            }),
            invalid,
        ),
        (
            "k = 0",
            Box::new(|e, _| e.search_text("tok1", &Filter::All, 0).map(|_| ())),
            limit,
        ),
        (
            "k = 10^9",
            Box::new(|e, _| {
                e.search_text("tok1", &Filter::All, 1_000_000_000)
                    .map(|_| ())
            }),
            limit,
        ),
        (
            "vector k = 0",
            Box::new(|e, _| e.search_vector(&vector(1, 8), &Filter::All, 0).map(|_| ())),
            limit,
        ),
        (
            "query vector NaN",
            Box::new(|e, _| e.search_vector(&[f32::NAN; 8], &Filter::All, 5).map(|_| ())),
            invalid,
        ),
        (
            "query vector wrong dim",
            Box::new(|e, _| e.search_vector(&[1.0; 3], &Filter::All, 5).map(|_| ())),
            dim,
        ),
        (
            "query text too long",
            Box::new(|e, _| {
                e.search_text(&"a".repeat(100_000), &Filter::All, 5)
                    .map(|_| ())
            }),
            limit,
        ),
        (
            "too many query terms",
            Box::new(|e, _| {
                e.search_text(
                    &(0..500).map(|i| format!("w{i} ")).collect::<String>(),
                    &Filter::All,
                    5,
                )
                .map(|_| ())
            }),
            limit,
        ),
        (
            "5,000 nested filters",
            Box::new(|e, _| e.search_text("tok1", &nested(5000), 5).map(|_| ())),
            limit,
        ),
        (
            "price filter min > max",
            Box::new(|e, _| {
                e.search_text("tok1", &Filter::price(Some(9.0), Some(1.0)), 5)
                    .map(|_| ())
            }),
            invalid,
        ),
        (
            "price filter NaN",
            Box::new(|e, _| {
                e.search_vector(&vector(1, 8), &Filter::price(Some(f64::NAN), None), 5)
                    .map(|_| ())
            }),
            invalid,
        ),
        (
            "empty category filter",
            Box::new(|e, _| {
                e.search_text("tok1", &Filter::category(" / "), 5)
                    .map(|_| ())
            }),
            invalid,
        ),
        (
            "unknown user history",
            Box::new(|e, _| e.user_history("ghost", None).map(|_| ())),
            |e| matches!(e, Error::UnknownUser(_)),
        ),
        (
            "unknown entity",
            Box::new(|e, _| e.neighbors("nobody", None).map(|_| ())),
            invalid,
        ),
        (
            "jsonl row not json",
            Box::new(|e, d| {
                import::products_jsonl(
                    e,
                    &write(d, "a.jsonl", b"{\"id\":\"ok\"}\n{not json\n"),
                    OnError::Abort,
                )
                .map(|_| ())
            }),
            bad_row,
        ),
        (
            "jsonl invalid utf-8",
            Box::new(|e, d| {
                import::products_jsonl(
                    e,
                    &write(d, "b.jsonl", b"{\"id\":\"\xff\xfe\"}\n"),
                    OnError::Abort,
                )
                .map(|_| ())
            }),
            bad_row,
        ),
        (
            "jsonl NaN-dimension vector",
            Box::new(|e, d| {
                import::products_jsonl(
                    e,
                    &write(d, "c.jsonl", b"{\"id\":\"v\",\"embedding\":[1,2]}\n"),
                    OnError::Abort,
                )
                .map(|_| ())
            }),
            bad_row,
        ),
        (
            "csv unknown kind",
            Box::new(|e, d| {
                import::events_csv(
                    e,
                    &write(d, "a.csv", b"user,item,kind,ts\nu,p1,teleport,5\n"),
                    OnError::Abort,
                )
                .map(|_| ())
            }),
            bad_row,
        ),
        (
            "csv bad timestamp",
            Box::new(|e, d| {
                import::events_csv(
                    e,
                    &write(d, "b.csv", b"user,item,kind,ts\nu,p1,view,yesterday\n"),
                    OnError::Abort,
                )
                .map(|_| ())
            }),
            bad_row,
        ),
        (
            "csv unknown item",
            Box::new(|e, d| {
                import::events_csv(
                    e,
                    &write(d, "c.csv", b"user,item,kind,ts\nu,zzz,view,5\n"),
                    OnError::Abort,
                )
                .map(|_| ())
            }),
            bad_row,
        ),
        (
            "csv missing header",
            Box::new(|e, d| {
                import::events_csv(e, &write(d, "d.csv", b"a,b\n1,2\n"), OnError::Abort).map(|_| ())
            }),
            bad_row,
        ),
        (
            "missing file",
            Box::new(|e, d| {
                import::events_csv(e, &d.join("absent.csv"), OnError::Abort).map(|_| ())
            }),
            |e| matches!(e, Error::Io { .. }),
        ),
    ];
    assert!(cases.len() >= 25);
    for (name, run, expected) in &cases {
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&e, files.path())));
        let result = result.unwrap_or_else(|_| panic!("{name}: panicked"));
        match result {
            Ok(()) => panic!("{name}: accepted"),
            Err(err) => assert!(expected(&err), "{name}: unexpected error {err:?}"),
        }
        e.commit().unwrap();
        assert_eq!(e.stats(), before, "{name}: the store changed");
    }
    // Skip mode imports the good rows and reports the bad one with its line.
    let path = write(
        files.path(),
        "mixed.jsonl",
        b"{\"id\":\"good\",\"title\":\"fine\"}\n{\"id\":\"\",\"title\":\"x\"}\n",
    );
    let report = import::products_jsonl(&e, &path, OnError::Skip).unwrap();
    assert_eq!((report.imported, report.skipped), (1, 1));
    assert!(
        matches!(&report.errors[0], Error::BadRow { line: 2, .. }),
        "{:?}",
        report.errors
    );
    assert!(e.get_product("good").unwrap().is_some());
    // Data stored before every bad input is intact.
    assert_eq!(
        e.get_product("p3").unwrap().unwrap().title,
        "tok3 product number 3"
    );
    assert_eq!(e.search_text("tok3", &Filter::All, 1).unwrap()[0].id, "p3");
    assert_eq!(e.user_history("u1", None).unwrap().len(), 1);
}
