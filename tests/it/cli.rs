//! The `shopdb` binary, driven as a user would: `-c`, script files and stdin; table, JSON and
//! CSV output; exit codes; the `IMPORT` sandbox; the demo.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::support::tempdir;

/// What a run of the binary printed and returned.
pub struct Out {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

impl Out {
    /// Panics with the run's output unless it succeeded.
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Runs `shopdb args` in `cwd`, feeding `stdin` (an empty, non-terminal stdin when `None`).
pub fn shopdb(cwd: &Path, args: &[&str], stdin: Option<&str>) -> Out {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_shopdb"))
        .args(args)
        .current_dir(cwd)
        .env("HOME", cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shopdb");
    let mut pipe = child.stdin.take().expect("stdin");
    let input = stdin.unwrap_or("").to_string();
    // Write from a thread: a large input must not block while the child's output fills up.
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().expect("wait shopdb");
    writer.join().expect("stdin writer");
    Out {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code().unwrap_or(-1),
    }
}

/// A scratch directory: the binary runs in it (so it is the default `IMPORT` directory) on
/// the 4-dimensional database `db` inside it.
pub struct Scratch {
    pub tmp: tempfile::TempDir,
}

/// A scratch directory holding the small demo shop in `shop`.
pub fn demo_shop() -> tempfile::TempDir {
    let tmp = tempdir();
    shopdb(
        tmp.path(),
        &["demo", "shop", "--small", "--no-examples"],
        None,
    )
    .ok();
    tmp
}

/// A small catalog and log: four products, five events.
pub const SEED: &str = "
INSERT INTO products (id, title, description, brand, category, price, embedding, color) VALUES
  ('p1', 'Acme 男士轻便跑步鞋 Lightweight Running Shoe', 'breathable mesh', 'Acme', 'shoes/running', 59.9, [0.9, 0.1, 0.0, 0.0], 'red'),
  ('p2', 'Oxford leather office shoe', 'classic', 'Oxford', 'shoes/formal', 120, [0.0, 0.2, 0.9, 0.1], 'black'),
  ('p3', 'Trail running shoe', 'grippy sole', 'Nimbus', 'shoes/running/trail', 89.5, [0.8, 0.3, 0.1, 0.0], 'red'),
  ('p4', 'Travel backpack 双肩背包', 'roomy', 'Acme', 'bags/backpacks', 45, [0.1, 0.9, 0.0, 0.2], 'blue');
INSERT INTO events (user_id, item_id, kind, ts) VALUES
  ('u1', 'p1', 'view', 1700000000), ('u1', 'p1', 'purchase', 1700000100), ('u1', 'p3', 'click', 1700000200),
  ('u2', 'p2', 4.5, 1700000300), ('u2', 'p4', 'cart', 1700000400);
";

impl Scratch {
    pub fn new() -> Self {
        Scratch { tmp: tempdir() }
    }

    /// A scratch database loaded with [`SEED`].
    pub fn seeded() -> Self {
        let s = Scratch::new();
        s.sql(SEED).ok();
        s
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Runs `shopdb db --dim 4 args...`.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Out {
        let mut all = vec!["db", "--dim", "4"];
        all.extend_from_slice(args);
        shopdb(self.path(), &all, stdin)
    }

    /// Runs statements with `-c`.
    pub fn sql(&self, sql: &str) -> Out {
        self.run(&["-c", sql], None)
    }

    /// Runs statements with `--json` and parses each output line.
    pub fn json(&self, sql: &str) -> Vec<serde_json::Value> {
        let out = self.run(&["--json", "-c", sql], None).ok();
        out.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// Writes a file into the scratch directory.
    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let p = self.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, content).expect("write");
        p
    }
}

/// The rows of a JSON result as `a,b; c,d` in column order.
pub fn compact(v: &serde_json::Value) -> String {
    if let Some(cols) = v.get("columns").and_then(|c| c.as_array()) {
        let rows = v["rows"].as_array().cloned().unwrap_or_default();
        rows.iter()
            .map(|r| {
                cols.iter()
                    .map(|c| match &r[c.as_str().unwrap_or("")] {
                        serde_json::Value::String(s) => s.clone(),
                        serde_json::Value::Null => "NULL".to_string(),
                        other => other.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect::<Vec<_>>()
            .join("; ")
    } else {
        v["status"].as_str().unwrap_or("").to_string()
    }
}

#[test]
fn command_script_file_and_stdin_modes_agree() {
    let s = Scratch::seeded();
    let sql = "SELECT id, price FROM products WHERE brand = 'acme' ORDER BY id;\nSELECT id FROM products WHERE price > 100;";
    let expected =
        "id | price\n---+------\np1 |  59.9\np4 |    45\n(2 rows)\nid\n--\np2\n(1 row)\n";
    assert_eq!(s.sql(sql).ok().stdout, expected);
    let script = s.write("q.sql", sql);
    assert_eq!(
        s.run(&[script.to_str().expect("utf8")], None).ok().stdout,
        expected
    );
    assert_eq!(s.run(&["-f", "q.sql"], None).ok().stdout, expected);
    assert_eq!(s.run(&[], Some(sql)).ok().stdout, expected);
    // -c may be repeated.
    let out = s
        .run(
            &[
                "-c",
                "SELECT id FROM products WHERE id = 'p2'",
                "-c",
                "SELECT id FROM products WHERE id = 'p3'",
            ],
            None,
        )
        .ok();
    assert_eq!(out.stdout, "id\n--\np2\n(1 row)\nid\n--\np3\n(1 row)\n");
}

#[test]
fn a_failing_statement_stops_the_script_with_exit_code_1() {
    let s = Scratch::seeded();
    let script = "SELECT id FROM products WHERE id = 'p1';\nSELEC oops;\nDELETE FROM products WHERE id = 'p1';";
    for out in [s.sql(script), s.run(&[], Some(script))] {
        assert_eq!(out.code, 1);
        assert_eq!(
            out.stdout, "id\n--\np1\n(1 row)\n",
            "the first statement ran"
        );
        assert!(out.stderr.contains("syntax error at 2:1"), "{}", out.stderr);
    }
    // The statement after the error did not run.
    assert_eq!(
        s.sql("SELECT id FROM products WHERE id = 'p1'").ok().stdout,
        "id\n--\np1\n(1 row)\n"
    );
    // An engine error is an error too.
    assert_eq!(s.sql("DELETE FROM products WHERE id = 'nope'").code, 1);
    // So is a missing script file, and an unopenable database.
    assert_eq!(s.run(&["missing.sql"], None).code, 1);
}

#[test]
fn usage_errors() {
    let s = Scratch::new();
    let out = shopdb(s.path(), &[], None);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("missing the database directory"),
        "{}",
        out.stderr
    );
    let out = shopdb(s.path(), &["db", "--no-such-flag"], None);
    assert_eq!(out.code, 2);
    let out = shopdb(
        s.path(),
        &["db", "--json", "--csv", "-c", "SHOW TABLES"],
        None,
    );
    assert_eq!(out.code, 2, "--json and --csv conflict");
}

#[test]
fn json_output_parses() {
    let s = Scratch::seeded();
    let docs = s.json(
        "SELECT id, price, color FROM products WHERE category = 'shoes' ORDER BY price; \
         SELECT * FROM events WHERE user_id = 'u2'; SHOW STATS; \
         INSERT INTO products (id, title) VALUES ('p9', 'x \"quoted\" \\ title')",
    );
    assert_eq!(docs.len(), 4);
    assert_eq!(
        docs[0]["columns"],
        serde_json::json!(["id", "price", "color"])
    );
    assert_eq!(
        docs[0]["rows"],
        serde_json::json!([
            {"id": "p1", "price": 59.9, "color": "red"},
            {"id": "p3", "price": 89.5, "color": "red"},
            {"id": "p2", "price": 120.0, "color": "black"}
        ])
    );
    assert_eq!(
        docs[1]["rows"],
        serde_json::json!([
            {"user_id": "u2", "item_id": "p2", "kind": 4.5, "ts": 1700000300},
            {"user_id": "u2", "item_id": "p4", "kind": "cart", "ts": 1700000400}
        ])
    );
    let stats = docs[2]["rows"].as_array().expect("rows");
    assert!(
        stats.contains(&serde_json::json!({"stat": "products", "value": 4})),
        "{stats:?}"
    );
    assert!(docs[3]["status"]
        .as_str()
        .is_some_and(|s| s.starts_with("inserted 1 product")));
    assert_eq!(
        s.json("SELECT title FROM products WHERE id = 'p9'")[0]["rows"][0]["title"],
        "x \"quoted\" \\ title"
    );
}

#[test]
fn csv_output_has_a_header_and_quotes() {
    let s = Scratch::seeded();
    s.sql("INSERT INTO products (id, title, price) VALUES ('p5', 'a, \"b\"', NULL)")
        .ok();
    let out = s
        .run(
            &[
                "--csv",
                "-c",
                "SELECT id, title, price FROM products WHERE id IN ('p4', 'p5') ORDER BY id",
            ],
            None,
        )
        .ok();
    assert_eq!(
        out.stdout,
        "id,title,price\np4,Travel backpack 双肩背包,45\np5,\"a, \"\"b\"\"\",\n"
    );
    // A status goes to stderr so that stdout stays CSV.
    let out = s
        .run(
            &["--csv", "-c", "DELETE FROM products WHERE id = 'p5'"],
            None,
        )
        .ok();
    assert_eq!(out.stdout, "");
    assert!(
        out.stderr.starts_with("deleted 1 product"),
        "{}",
        out.stderr
    );
}

#[test]
fn import_reads_only_allowed_directories() {
    let s = Scratch::seeded();
    let line = r#"{"id": "p7", "title": "imported", "embedding": [0.5, 0.5, 0.5, 0.5]}"#;
    s.write("in/products.jsonl", line);
    // The current directory is allowed by default, also through a relative path.
    assert!(s
        .sql("IMPORT PRODUCTS FROM 'in/products.jsonl'")
        .ok()
        .stdout
        .starts_with("imported 1 products"));

    let outside = tempdir();
    let secret = outside.path().join("products.jsonl");
    std::fs::write(&secret, line).expect("write");
    let secret_str = secret.to_str().expect("utf8").to_string();
    let refused = |out: Out| {
        assert_eq!(out.code, 1, "{}", out.stdout);
        assert!(
            out.stderr.contains("outside the allowed directories"),
            "{}",
            out.stderr
        );
    };
    refused(s.sql(&format!("IMPORT PRODUCTS FROM '{secret_str}'")));
    // `..` is resolved before the check: out and back in is fine, out is not.
    let name = s
        .path()
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name")
        .to_string();
    s.sql(&format!(
        "IMPORT PRODUCTS FROM 'in/../../{name}/in/products.jsonl'"
    ))
    .ok();
    let via_dots = outside
        .path()
        .join("..")
        .join(outside.path().file_name().expect("name"))
        .join("products.jsonl");
    refused(s.sql(&format!("IMPORT PRODUCTS FROM '{}'", via_dots.display())));
    refused(s.sql("IMPORT PRODUCTS FROM '../products.jsonl'"));
    refused(s.sql("IMPORT PRODUCTS FROM '/etc/passwd'"));
    refused(s.sql("IMPORT EVENTS FROM '/nonexistent/dir/events.csv'"));
    // A symbolic link inside the allowed directory pointing out of it.
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(outside.path(), s.path().join("link")).expect("symlink");
        refused(s.sql("IMPORT PRODUCTS FROM 'link/products.jsonl'"));
        refused(s.sql("IMPORT KG FROM 'in/x.kg' LINKS 'link/products.jsonl'"));
    }
    // --allow-dir replaces the default.
    let out = s.run(
        &[
            "--allow-dir",
            outside.path().to_str().expect("utf8"),
            "-c",
            &format!("IMPORT PRODUCTS FROM '{secret_str}'"),
        ],
        None,
    );
    assert!(out.ok().stdout.starts_with("imported 1 products"));
    refused(s.run(
        &[
            "--allow-dir",
            outside.path().to_str().expect("utf8"),
            "-c",
            "IMPORT PRODUCTS FROM 'in/products.jsonl'",
        ],
        None,
    ));
    // An allowed directory that does not exist is a startup error.
    assert_eq!(
        s.run(&["--allow-dir", "nope", "-c", "SHOW TABLES"], None)
            .code,
        1
    );
}

#[test]
fn demo_small_builds_a_usable_shop() {
    let tmp = tempdir();
    let out = shopdb(tmp.path(), &["demo", "shop", "--small"], None).ok();
    assert!(
        out.stdout
            .starts_with("Generated 300 products, 150 users and "),
        "{}",
        out.stdout
    );
    for needle in [
        "shopdb> SELECT id, title, price, score FROM search('跑步鞋') LIMIT 5;",
        "FROM recommend('u",
        "FROM similar('p",
        "explanation",
        "(5 rows)",
        "The demo shop is ready: shopdb shop",
    ] {
        assert!(
            out.stdout.contains(needle),
            "{needle} missing from:\n{}",
            out.stdout
        );
    }
    assert!(out.stdout.contains("跑步鞋 "), "Chinese titles");
    // The result opens in the shell, trained.
    let out = shopdb(
        tmp.path(),
        &[
            "shop",
            "--json",
            "-c",
            "SHOW STATS; SELECT id FROM search('running shoe') WHERE category = 'shoes' LIMIT 3",
        ],
        None,
    )
    .ok();
    let docs: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let stats = docs[0]["rows"].as_array().expect("rows");
    assert!(stats.contains(&serde_json::json!({"stat": "products", "value": 300})));
    assert!(stats.contains(&serde_json::json!({"stat": "model_generation", "value": 1})));
    assert_eq!(docs[1]["rows"].as_array().map(Vec::len), Some(3));
    // Deterministic: the library gives the same shop for the same options.
    let a = shopdb::demo::DemoOptions {
        end_ts: Some(1_700_000_000),
        train: false,
        ..shopdb::demo::DemoOptions::small()
    };
    let dir_a = tempdir();
    let dir_b = tempdir();
    let ea = shopdb::Engine::open(dir_a.path()).expect("open");
    let eb = shopdb::Engine::open(dir_b.path()).expect("open");
    let ra = shopdb::demo::generate(&ea, &a).expect("demo");
    let rb = shopdb::demo::generate(&eb, &a).expect("demo");
    assert_eq!(
        (ra.products, ra.users, ra.events),
        (rb.products, rb.users, rb.events)
    );
    assert_eq!(
        ea.get_product("p00042").expect("get"),
        eb.get_product("p00042").expect("get")
    );
    assert_eq!(
        ea.user_history("u0007", None).expect("h"),
        eb.user_history("u0007", None).expect("h")
    );
}

#[test]
fn demo_replaces_only_its_own_kind_of_directory() {
    let tmp = tempdir();
    shopdb(
        tmp.path(),
        &["demo", "shop", "--small", "--no-examples"],
        None,
    )
    .ok();
    let out = shopdb(
        tmp.path(),
        &["demo", "shop", "--small", "--no-examples"],
        None,
    );
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("already exists; pass --force"),
        "{}",
        out.stderr
    );
    shopdb(
        tmp.path(),
        &["demo", "shop", "--small", "--no-examples", "--force"],
        None,
    )
    .ok();
    std::fs::create_dir(tmp.path().join("notes")).expect("mkdir");
    std::fs::write(tmp.path().join("notes/keep.txt"), "precious").expect("write");
    let out = shopdb(tmp.path(), &["demo", "notes", "--small", "--force"], None);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("not a shopdb database"),
        "{}",
        out.stderr
    );
    assert!(tmp.path().join("notes/keep.txt").exists());
}

#[test]
fn a_cold_start_recommendation_shows_popularity_scores() {
    use super::support::{open, products, Rng};
    let tmp = tempdir();
    {
        let e = open(&tmp.path().join("db"));
        e.upsert_products(products(40, 8)).expect("products");
        let mut r = Rng(7);
        let events = (0..30u64)
            .flat_map(|u| {
                let taste = u % 3;
                (0..8).map(move |j| (u, taste, j))
            })
            .map(|(u, taste, j)| {
                let item = taste + 3 * r.below(13);
                shopdb::Event::new(
                    format!("u{u}"),
                    format!("p{item}"),
                    shopdb::EventKind::Click,
                    1_700_000_000 + (u * 10 + j) as i64,
                )
            })
            .collect();
        e.append_events(events).expect("events");
        e.commit().expect("commit");
        e.train(&shopdb::TrainOptions::default()).expect("train");
    }
    let out = shopdb(
        tmp.path(),
        &[
            "db",
            "-c",
            "SELECT id, score FROM recommend('nobody') LIMIT 3; \
             EXPLAIN SELECT id FROM recommend('nobody') LIMIT 1",
        ],
        None,
    )
    .ok();
    // id | score, a rule, three rows.
    let scores: Vec<f64> = out
        .stdout
        .lines()
        .skip(2)
        .take(3)
        .map(|l| {
            let cell = l.rsplit('|').next().expect("score column").trim();
            cell.parse()
                .unwrap_or_else(|e| panic!("{e}: {cell:?} in\n{}", out.stdout))
        })
        .collect();
    assert_eq!(scores.len(), 3, "{}", out.stdout);
    assert!(scores.iter().all(|s| *s > 0.0), "{}", out.stdout);
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("cold-start fallback (no history): ranked by popularity"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("MLP"), "{}", out.stdout);
}
