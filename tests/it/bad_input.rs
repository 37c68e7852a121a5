//! The bad-input catalogue: one table of bad inputs across the API, the query language (and
//! the `shopdb` binary) and import. Each row names the typed error it must get; none may
//! panic, and after each the store is exactly as it was.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use shopdb::import::{self, OnError};
use shopdb::sql::Session;
use shopdb::{Engine, Error, Event, EventKind, Filter, Fusion, Product, Query};

use crate::support::{open, products, tempdir, vector};

/// The error a row expects, by variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Invalid,
    Limit,
    Dim,
    UnknownItem,
    UnknownUser,
    BadRow,
    Io,
    Syntax,
    Locked,
    TimedOut,
    PathNotAllowed,
}

impl Expect {
    fn of(e: &Error) -> Option<Expect> {
        Some(match e {
            Error::Invalid { .. } => Expect::Invalid,
            Error::LimitExceeded { .. } => Expect::Limit,
            Error::DimensionMismatch { .. } => Expect::Dim,
            Error::UnknownItem(_) => Expect::UnknownItem,
            Error::UnknownUser(_) => Expect::UnknownUser,
            Error::BadRow { .. } => Expect::BadRow,
            Error::Io { .. } => Expect::Io,
            Error::Syntax(_) => Expect::Syntax,
            Error::Locked(_) => Expect::Locked,
            Error::TimedOut { .. } => Expect::TimedOut,
            Error::PathNotAllowed(_) => Expect::PathNotAllowed,
            _ => return None,
        })
    }
}

type Run = Box<dyn Fn(&Engine, &Path) -> shopdb::Result<()>>;

/// One row: what is tried, the error it must get, and the attempt.
type Case = (&'static str, Expect, Run);

/// Runs statements as the shell does, with `files` as the one `IMPORT` directory.
fn sql(e: &Engine, files: &Path, statement: &str) -> shopdb::Result<()> {
    let mut session = Session::new(e);
    session.allow_dir(files)?;
    session.execute(statement).map(|_| ())
}

/// `shopdb DIR -c statement` as a second process. A process reports its error as text, so
/// the row's variant is recognised by the variant's message.
fn second_process(dir: &Path, statement: &str) -> shopdb::Result<()> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shopdb"))
        .arg(dir)
        .args(["-c", statement])
        .output()
        .map_err(|e| Error::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        return Ok(());
    }
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    if stderr.contains("is locked by another process") {
        return Err(Error::Locked(dir.to_path_buf()));
    }
    panic!("second process failed otherwise: {stderr}");
}

/// Imports `bytes` as an events CSV file named `name`, aborting at the first bad row.
fn csv(e: &Engine, dir: &Path, name: &str, bytes: &[u8]) -> shopdb::Result<()> {
    import::events_csv(e, &write(dir, name, bytes), OnError::Abort).map(|_| ())
}

/// Imports `bytes` as a products JSONL file named `name`, aborting at the first bad row.
fn jsonl(e: &Engine, dir: &Path, name: &str, bytes: &[u8]) -> shopdb::Result<()> {
    import::products_jsonl(e, &write(dir, name, bytes), OnError::Abort).map(|_| ())
}

/// `SELECT ... WHERE` with a condition inside `depth` pairs of parentheses.
fn nested_parens(depth: usize) -> String {
    format!(
        "SELECT id FROM products WHERE {}price > 1{} LIMIT 1",
        "(".repeat(depth),
        ")".repeat(depth)
    )
}

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
    use Expect::*;
    let cases: Vec<Case> = vec![
        (
            "NaN in vector",
            Invalid,
            Box::new(move |e, _| e.upsert_product(p("x").embedding(vec![f32::NAN; 8]))),
        ),
        (
            "inf in vector",
            Invalid,
            Box::new(move |e, _| e.upsert_product(p("x").embedding(vec![f32::INFINITY; 8]))),
        ),
        (
            "zero vector",
            Invalid,
            Box::new(move |e, _| e.upsert_product(p("x").embedding(vec![0.0; 8]))),
        ),
        (
            "short vector",
            Dim,
            Box::new(move |e, _| e.upsert_product(p("x").embedding(vec![1.0; 7]))),
        ),
        (
            "long vector",
            Dim,
            Box::new(move |e, _| e.upsert_product(p("x").embedding(vec![1.0; 9]))),
        ),
        (
            "empty id",
            Invalid,
            Box::new(move |e, _| e.upsert_product(p(""))),
        ),
        (
            "huge id",
            Limit,
            Box::new(move |e, _| e.upsert_product(p(&"x".repeat(10_000)))),
        ),
        (
            "control char id",
            Invalid,
            Box::new(move |e, _| e.upsert_product(p("a\u{0}b"))),
        ),
        (
            "huge title",
            Limit,
            Box::new(move |e, _| e.upsert_product(p("x").title("w ".repeat(40_000)))),
        ),
        (
            "NaN price",
            Invalid,
            Box::new(move |e, _| e.upsert_product(p("x").price(f64::NAN))),
        ),
        (
            "negative price",
            Invalid,
            Box::new(move |e, _| e.upsert_product(p("x").price(-1.0))),
        ),
        (
            "duplicate id in batch",
            Invalid,
            Box::new(move |e, _| e.upsert_products(vec![p("x"), p("x")])),
        ),
        (
            "batch with one bad row",
            Invalid,
            Box::new(move |e, _| e.upsert_products(vec![p("ok1"), p("bad").price(-5.0)])),
        ),
        (
            "delete unknown product",
            UnknownItem,
            Box::new(|e, _| e.delete_product("nope")),
        ),
        (
            "event for unknown item",
            UnknownItem,
            Box::new(|e, _| {
                e.append_event(Event::new("u", "nope", EventKind::View, 1))
                    .map(|_| ())
            }),
        ),
        (
            "event far in the future",
            Invalid,
            Box::new(move |e, _| {
                e.append_event(Event::new("u", "p1", EventKind::View, far_future))
                    .map(|_| ())
            }),
        ),
        (
            "event before 1970",
            Invalid,
            Box::new(|e, _| {
                e.append_event(Event::new("u", "p1", EventKind::View, -5))
                    .map(|_| ())
            }),
        ),
        (
            "NaN rating",
            Invalid,
            Box::new(|e, _| {
                e.append_event(Event::new("u", "p1", EventKind::Rating(f32::NAN), 5))
                    .map(|_| ())
            }),
        ),
        (
            "empty user",
            Invalid,
            Box::new(|e, _| {
                e.append_event(Event::new("", "p1", EventKind::View, 5))
                    .map(|_| ())
            }),
        ),
        (
            "k = 0",
            Limit,
            Box::new(|e, _| e.search_text("tok1", &Filter::All, 0).map(|_| ())),
        ),
        (
            "k = 10^9",
            Limit,
            Box::new(|e, _| {
                e.search_text("tok1", &Filter::All, 1_000_000_000)
                    .map(|_| ())
            }),
        ),
        (
            "vector k = 0",
            Limit,
            Box::new(|e, _| e.search_vector(&vector(1, 8), &Filter::All, 0).map(|_| ())),
        ),
        (
            "query vector NaN",
            Invalid,
            Box::new(|e, _| e.search_vector(&[f32::NAN; 8], &Filter::All, 5).map(|_| ())),
        ),
        (
            "query vector wrong dim",
            Dim,
            Box::new(|e, _| e.search_vector(&[1.0; 3], &Filter::All, 5).map(|_| ())),
        ),
        (
            "query text too long",
            Limit,
            Box::new(|e, _| {
                e.search_text(&"a".repeat(100_000), &Filter::All, 5)
                    .map(|_| ())
            }),
        ),
        (
            "too many query terms",
            Limit,
            Box::new(|e, _| {
                e.search_text(
                    &(0..500).map(|i| format!("w{i} ")).collect::<String>(),
                    &Filter::All,
                    5,
                )
                .map(|_| ())
            }),
        ),
        (
            "5,000 nested filters",
            Limit,
            Box::new(|e, _| e.search_text("tok1", &nested(5000), 5).map(|_| ())),
        ),
        (
            "price filter min > max",
            Invalid,
            Box::new(|e, _| {
                e.search_text("tok1", &Filter::price(Some(9.0), Some(1.0)), 5)
                    .map(|_| ())
            }),
        ),
        (
            "price filter NaN",
            Invalid,
            Box::new(|e, _| {
                e.search_vector(&vector(1, 8), &Filter::price(Some(f64::NAN), None), 5)
                    .map(|_| ())
            }),
        ),
        (
            "empty category filter",
            Invalid,
            Box::new(|e, _| {
                e.search_text("tok1", &Filter::category(" / "), 5)
                    .map(|_| ())
            }),
        ),
        (
            "unknown user history",
            UnknownUser,
            Box::new(|e, _| e.user_history("ghost", None).map(|_| ())),
        ),
        (
            "unknown entity",
            Invalid,
            Box::new(|e, _| e.neighbors("nobody", None).map(|_| ())),
        ),
        (
            "jsonl row not json",
            BadRow,
            Box::new(|e, d| jsonl(e, d, "a.jsonl", b"{\"id\":\"ok\"}\n{not json\n")),
        ),
        (
            "jsonl invalid utf-8",
            BadRow,
            Box::new(|e, d| jsonl(e, d, "b.jsonl", b"{\"id\":\"\xff\xfe\"}\n")),
        ),
        (
            "jsonl NaN-dimension vector",
            BadRow,
            Box::new(|e, d| jsonl(e, d, "c.jsonl", b"{\"id\":\"v\",\"embedding\":[1,2]}\n")),
        ),
        (
            "csv unknown kind",
            BadRow,
            Box::new(|e, d| csv(e, d, "a.csv", b"user,item,kind,ts\nu,p1,teleport,5\n")),
        ),
        (
            "csv bad timestamp",
            BadRow,
            Box::new(|e, d| csv(e, d, "b.csv", b"user,item,kind,ts\nu,p1,view,yesterday\n")),
        ),
        (
            "csv unknown item",
            BadRow,
            Box::new(|e, d| csv(e, d, "c.csv", b"user,item,kind,ts\nu,zzz,view,5\n")),
        ),
        (
            "csv missing header",
            BadRow,
            Box::new(|e, d| csv(e, d, "d.csv", b"a,b\n1,2\n")),
        ),
        (
            "missing file",
            Io,
            Box::new(|e, d| {
                import::events_csv(e, &d.join("absent.csv"), OnError::Abort).map(|_| ())
            }),
        ),
        // ---- Engine::query and the other reads
        (
            "query k = 0",
            Limit,
            Box::new(|e, _| e.query(&Query::new().text("tok1").k(0)).map(|_| ())),
        ),
        (
            "query k = 10^9",
            Limit,
            Box::new(|e, _| {
                e.query(&Query::new().text("tok1").k(1_000_000_000))
                    .map(|_| ())
            }),
        ),
        (
            "query with 0 candidates",
            Limit,
            Box::new(|e, _| {
                e.query(&Query::new().text("tok1").candidates(0))
                    .map(|_| ())
            }),
        ),
        (
            "query with 10^9 candidates",
            Limit,
            Box::new(|e, _| {
                e.query(&Query::new().text("tok1").candidates(1_000_000_000))
                    .map(|_| ())
            }),
        ),
        (
            "query vector with inf",
            Invalid,
            Box::new(|e, _| {
                e.query(&Query::new().vector(vec![f32::INFINITY; 8]))
                    .map(|_| ())
            }),
        ),
        (
            "query zero vector",
            Invalid,
            Box::new(|e, _| e.query(&Query::new().vector(vec![0.0; 8])).map(|_| ())),
        ),
        (
            "query vector of the wrong dimension",
            Dim,
            Box::new(|e, _| e.query(&Query::new().vector(vector(1, 9))).map(|_| ())),
        ),
        (
            "query with 5,000 nested filters",
            Limit,
            Box::new(|e, _| {
                e.query(&Query::new().text("tok1").filter(nested(5000)))
                    .map(|_| ())
            }),
        ),
        (
            "query text of 5,000 nested parentheses",
            Limit,
            Box::new(|e, _| {
                let text = format!("{}tok1{}", "(".repeat(5000), ")".repeat(5000));
                e.query(&Query::new().text(text)).map(|_| ())
            }),
        ),
        (
            "query similar to an unknown item",
            UnknownItem,
            Box::new(|e, _| e.query(&Query::new().similar_to("nope")).map(|_| ())),
        ),
        (
            "query with a NaN fusion weight",
            Invalid,
            Box::new(|e, _| {
                let fusion = Fusion::Linear {
                    alpha: f32::NAN,
                    beta: 0.5,
                };
                e.query(&Query::new().text("tok1").fusion(fusion))
                    .map(|_| ())
            }),
        ),
        (
            "query with a negative RRF offset",
            Invalid,
            Box::new(|e, _| {
                e.query(&Query::new().text("tok1").fusion(Fusion::Rrf { k: -1.0 }))
                    .map(|_| ())
            }),
        ),
        (
            "query with a zero time budget",
            TimedOut,
            Box::new(|e, _| {
                e.query(&Query::new().text("tok1").time_budget(Duration::ZERO))
                    .map(|_| ())
            }),
        ),
        (
            "query with an empty user id",
            Invalid,
            Box::new(|e, _| e.query(&Query::new().user("")).map(|_| ())),
        ),
        (
            "exact vector search of the wrong dimension",
            Dim,
            Box::new(|e, _| e.search_vector_exact(&[1.0; 9], 5).map(|_| ())),
        ),
        (
            "facets of an overlong text",
            Limit,
            Box::new(|e, _| e.facets(&"a".repeat(5000), &Filter::All).map(|_| ())),
        ),
        (
            "events of an unknown item",
            UnknownItem,
            Box::new(|e, _| e.item_events("nope").map(|_| ())),
        ),
        // ---- more writes
        (
            "forget an empty user id",
            Invalid,
            Box::new(|e, _| e.forget_user("")),
        ),
        (
            "triple with an empty head",
            Invalid,
            Box::new(|e, _| e.add_triples(vec![(String::new(), "r".into(), "t".into())])),
        ),
        (
            "link an unknown item",
            UnknownItem,
            Box::new(|e, _| e.link_items(vec![("nope".into(), "entity".into())])),
        ),
        (
            "user id with a control character",
            Invalid,
            Box::new(|e, _| {
                e.append_event(Event::new("u\u{7}", "p1", EventKind::View, 5))
                    .map(|_| ())
            }),
        ),
        (
            "huge user id",
            Limit,
            Box::new(|e, _| {
                e.append_event(Event::new("u".repeat(10_000), "p1", EventKind::View, 5))
                    .map(|_| ())
            }),
        ),
        (
            "infinite rating",
            Invalid,
            Box::new(|e, _| {
                e.append_event(Event::new("u", "p1", EventKind::Rating(f32::INFINITY), 5))
                    .map(|_| ())
            }),
        ),
        (
            "too many attributes",
            Limit,
            Box::new(move |e, _| {
                let many = (0..100).fold(p("x"), |p, i| p.attribute(format!("k{i}"), "v"));
                e.upsert_product(many)
            }),
        ),
        (
            "second open in this process",
            Locked,
            Box::new(|e, _| Engine::builder().dim(8).open(e.dir()).map(|_| ())),
        ),
        (
            "second writer process",
            Locked,
            Box::new(|e, _| second_process(e.dir(), "INSERT INTO products (id) VALUES ('z')")),
        ),
        // ---- the query language
        (
            "SQL: 5,000 nested parentheses",
            Syntax,
            Box::new(|e, d| sql(e, d, &nested_parens(5000))),
        ),
        (
            "SQL: unbalanced quote",
            Syntax,
            Box::new(|e, d| sql(e, d, "SELECT id FROM search('tok1) LIMIT 5")),
        ),
        (
            "SQL: control character in a statement",
            Syntax,
            Box::new(|e, d| sql(e, d, "SELECT\u{1} id FROM products")),
        ),
        (
            "SQL: negative LIMIT",
            Syntax,
            Box::new(|e, d| sql(e, d, "SELECT id FROM search('tok1') LIMIT -1")),
        ),
        (
            "SQL: LIMIT 10^9",
            Limit,
            Box::new(|e, d| sql(e, d, "SELECT id FROM search('tok1') LIMIT 1000000000")),
        ),
        (
            "SQL: search text too long",
            Limit,
            Box::new(|e, d| {
                let text = "a ".repeat(3000);
                sql(e, d, &format!("SELECT id FROM search('{text}')"))
            }),
        ),
        (
            "SQL: vector of the wrong dimension",
            Dim,
            Box::new(|e, d| {
                sql(
                    e,
                    d,
                    "INSERT INTO products (id, title, embedding) VALUES ('v1', 't', [1, 2])",
                )
            }),
        ),
        (
            "SQL: empty id",
            Invalid,
            Box::new(|e, d| sql(e, d, "INSERT INTO products (id, title) VALUES ('', 'a')")),
        ),
        (
            "SQL: duplicate ids in one INSERT",
            Invalid,
            Box::new(|e, d| {
                sql(
                    e,
                    d,
                    "INSERT INTO products (id, title) VALUES ('d1', 'a'), ('d1', 'b')",
                )
            }),
        ),
        (
            "SQL: event on an unknown item",
            UnknownItem,
            Box::new(|e, d| {
                sql(
                    e,
                    d,
                    "INSERT INTO events (user_id, item_id, kind, ts) VALUES ('u9', 'nope', 'view', 5)",
                )
            }),
        ),
        (
            "SQL: event in the future",
            Invalid,
            Box::new(|e, d| {
                sql(
                    e,
                    d,
                    "INSERT INTO events (user_id, item_id, kind, ts) VALUES ('u9', 'p1', 'view', 4000000000)",
                )
            }),
        ),
        (
            "SQL: similar to an unknown item",
            UnknownItem,
            Box::new(|e, d| sql(e, d, "SELECT * FROM similar('nope') LIMIT 5")),
        ),
        (
            "SQL: IMPORT outside the allowed directories",
            PathNotAllowed,
            Box::new(|e, d| sql(e, d, "IMPORT PRODUCTS FROM '/etc/passwd'")),
        ),
        (
            "SQL: IMPORT a file with invalid UTF-8",
            BadRow,
            Box::new(|e, d| {
                let path = write(d, "sql.csv", b"user,item,kind,ts\n\xff\xfe,p1,view,5\n");
                sql(e, d, &format!("IMPORT EVENTS FROM '{}'", path.display()))
            }),
        ),
        // ---- import files
        (
            "csv with an unbalanced quote",
            BadRow,
            Box::new(|e, d| {
                csv(
                    e,
                    d,
                    "q.csv",
                    b"user,item,kind,ts\n\"u1,p1,view,5\nu2,p1,view,6\n",
                )
            }),
        ),
        (
            "csv with a control character in a user id",
            BadRow,
            Box::new(|e, d| csv(e, d, "ctl.csv", b"user,item,kind,ts\nu\x01x,p1,view,5\n")),
        ),
        (
            "csv event in the future",
            BadRow,
            Box::new(move |e, d| {
                let row = format!("user,item,kind,ts\nu1,p1,view,{far_future}\n");
                csv(e, d, "future.csv", row.as_bytes())
            }),
        ),
        (
            "csv with invalid UTF-8",
            BadRow,
            Box::new(|e, d| csv(e, d, "utf.csv", b"user,item,kind,ts\n\xff,p1,view,5\n")),
        ),
        (
            "jsonl number out of range (inf)",
            BadRow,
            Box::new(|e, d| jsonl(e, d, "inf.jsonl", b"{\"id\":\"i\",\"price\":1e400}\n")),
        ),
        (
            "jsonl zero vector",
            BadRow,
            Box::new(|e, d| {
                jsonl(
                    e,
                    d,
                    "zero.jsonl",
                    b"{\"id\":\"z\",\"embedding\":[0,0,0,0,0,0,0,0]}\n",
                )
            }),
        ),
        (
            "jsonl huge id",
            BadRow,
            Box::new(|e, d| {
                let row = format!("{{\"id\":\"{}\"}}\n", "x".repeat(10_000));
                jsonl(e, d, "huge.jsonl", row.as_bytes())
            }),
        ),
        (
            "jsonl control character in an id",
            BadRow,
            Box::new(|e, d| jsonl(e, d, "ctl.jsonl", b"{\"id\":\"a\\u0001b\"}\n")),
        ),
        (
            "jsonl with 5,000 nested brackets",
            BadRow,
            Box::new(|e, d| {
                let row = format!(
                    "{{\"id\":\"n\",\"attributes\":{{\"k\":{}{}}}}}\n",
                    "[".repeat(5000),
                    "]".repeat(5000)
                );
                jsonl(e, d, "deep.jsonl", row.as_bytes())
            }),
        ),
        (
            "MovieLens folder missing",
            Io,
            Box::new(|e, d| import::movielens(e, &d.join("no-such-ml")).map(|_| ())),
        ),
        (
            "MovieLens item row too short",
            BadRow,
            Box::new(|e, d| {
                write(d, "u.genre", b"Action|0\n");
                write(d, "u.item", b"1|short\n");
                import::movielens(e, d).map(|_| ())
            }),
        ),
        (
            "MovieLens rating row after good items (nothing stored)",
            BadRow,
            Box::new(|e, d| {
                write(d, "u.genre", b"Action|0\n");
                write(d, "u.item", b"901|Film|01-Jan-1995||http://x|1\n");
                write(
                    d,
                    "u.data",
                    b"1\t901\t4\t881250949\n1\t901\tfour\t881250950\n",
                );
                import::movielens(e, d).map(|_| ())
            }),
        ),
        (
            "MovieLens rating of an unknown item (nothing stored)",
            BadRow,
            Box::new(|e, d| {
                write(d, "u.genre", b"Action|0\n");
                write(d, "u.item", b"902|Film|01-Jan-1995||http://x|1\n");
                write(d, "u.data", b"1\t999999\t4\t881250949\n");
                import::movielens(e, d).map(|_| ())
            }),
        ),
        (
            "RecBole link row of one field after good triples (nothing stored)",
            BadRow,
            Box::new(|e, d| {
                let kg = write(d, "y.kg", b"m.1\tfilm.genre\tm.2\n");
                let link = write(d, "y.link", b"p1\n");
                import::recbole_kg(e, &kg, &link).map(|_| ())
            }),
        ),
        (
            "RecBole kg row of two fields",
            BadRow,
            Box::new(|e, d| {
                let kg = write(d, "x.kg", b"head\trelation\n");
                let link = write(d, "x.link", b"p1\tm.1\n");
                import::recbole_kg(e, &kg, &link).map(|_| ())
            }),
        ),
    ];
    println!("bad inputs tried: {}", cases.len());
    assert!(cases.len() >= 40);
    for (name, expected, run) in &cases {
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&e, files.path())));
        let result = result.unwrap_or_else(|_| panic!("{name}: panicked"));
        match result {
            Ok(()) => panic!("{name}: accepted"),
            Err(err) => assert_eq!(
                Expect::of(&err),
                Some(*expected),
                "{name}: unexpected error {err:?}"
            ),
        }
        assert_eq!(e.pending_ops(), 0, "{name}: a rejected write was staged");
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
