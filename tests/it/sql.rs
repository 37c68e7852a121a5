//! The query language through the real binary: every statement kind with checked output,
//! error positions, all-or-nothing writes, limits. Plus the pure planner.

use shopdb::sql::{plan, Field, Plan, Pred, TrainSettings};
use shopdb::{Error, Filter, Fusion};

use super::cli::{compact, Scratch};

/// Runs every case in one script with `--json` and checks each statement's rows (as
/// `a,b; c,d`) or status; `*` accepts anything, a trailing `*` accepts any continuation.
fn check(s: &Scratch, cases: &[(&str, &str)]) {
    let script: Vec<&str> = cases.iter().map(|(sql, _)| *sql).collect();
    let docs = s.json(&script.join(";\n"));
    assert_eq!(docs.len(), cases.len(), "one result per statement");
    for ((sql, expected), doc) in cases.iter().zip(&docs) {
        let got = compact(doc);
        let ok = match expected.strip_suffix('*') {
            Some(prefix) => got.starts_with(prefix),
            None => got == *expected,
        };
        assert!(ok, "{sql}\n  expected: {expected}\n  got:      {got}");
    }
}

#[test]
fn every_statement_kind() {
    let s = Scratch::new();
    s.write("data/more.jsonl", concat!(
        r#"{"id": "p5", "title": "Summer dress 连衣裙", "brand": "Lumen", "category": "clothing/dresses", "price": 39, "attributes": {"color": "red"}, "embedding": [0.2, 0.2, 0.2, 0.9]}"#,
        "\n"
    ));
    s.write(
        "data/more.csv",
        "user_id,item_id,kind,ts\nu3,p5,purchase,1700000500\nu3,p1,click,1700000600\n",
    );
    s.write("data/ml/u.genre", "unknown|0\nComedy|1\n");
    s.write(
        "data/ml/u.item",
        "1|Toy Story (1995)|01-Jan-1995||http://x|0|1\n2|Heat (1995)|01-Jan-1995||http://x|1|0\n",
    );
    s.write(
        "data/ml/u.data",
        "7\t1\t5\t874965758\n7\t2\t3\t874965759\n8\t1\t4\t874965760\n",
    );
    s.write("data/seq.txt", "s1 q2 p1 q1\ns2 q1 q2\n");
    s.write(
        "data/x.kg",
        "head_id:token\trelation_id:token\ttail_id:token\nm.1\tfilm.genre\tm.2\n",
    );
    s.write(
        "data/x.link",
        "item_id:token\tentity_id:token\n1\tm.1\nnope\tm.3\n",
    );
    check(
        &s,
        &[
            (super::cli::SEED.split(';').next().unwrap_or(""), "inserted 4 products (seq 4)"),
            (super::cli::SEED.split(';').nth(1).unwrap_or(""), "inserted 5 events (seq 9)"),
            ("INSERT INTO events (user_id, item_id, kind, ts) VALUES ('u1', 'p1', 'view', 1700000000)", "inserted 1 event, 1 already stored*"),
            // Scans: filters on every column kind, ORDER BY, LIMIT/OFFSET.
            ("SELECT id, brand, price FROM products WHERE category = 'shoes' ORDER BY price DESC", "p2,Oxford,120.0; p3,Nimbus,89.5; p1,Acme,59.9"),
            ("SELECT id FROM products WHERE color = 'red' AND price BETWEEN 50 AND 100 ORDER BY id", "p1; p3"),
            ("SELECT id FROM products WHERE category LIKE 'shoes/running%' OR brand IN ('oxford') ORDER BY id", "p1; p2; p3"),
            ("SELECT id FROM products WHERE category LIKE '%trail' OR title LIKE 'Travel%' ORDER BY id", "p3; p4"),
            ("SELECT id FROM products WHERE NOT (attr('color') = 'red') AND title LIKE '%shoe%'", "p2"),
            ("SELECT id FROM products WHERE price >= 59.9 AND price < 120 ORDER BY id", "p1; p3"),
            ("SELECT id FROM products WHERE 100 < price", "p2"),
            ("SELECT id, title FROM products ORDER BY id LIMIT 2 OFFSET 1", "p2,Oxford leather office shoe; p3,Trail running shoe"),
            ("SELECT id, size FROM products WHERE size IS NULL AND id IN ('p4')", "p4,NULL"),
            ("SELECT * FROM products WHERE id = 'p4'", "p4,Travel backpack 双肩背包,Acme,bags/backpacks,45.0,color=blue"),
            ("SELECT id AS product, attributes FROM products WHERE brand <> 'Acme' ORDER BY product", "*"),
            // Events: by user, by item, everything.
            ("SELECT * FROM events WHERE user_id = 'u1' ORDER BY ts", "u1,p1,view,1700000000; u1,p1,purchase,1700000100; u1,p3,click,1700000200"),
            ("SELECT user_id, kind FROM events WHERE item_id = 'p2'", "u2,4.5"),
            ("SELECT item_id FROM events WHERE ts > 1700000150 AND kind <> 'cart' ORDER BY ts DESC", "p2; p3"),
            ("SELECT user_id, item_id FROM events ORDER BY ts DESC LIMIT 1", "u2,p4"),
            // Retrieval: text (English, Chinese), vector, filters, score, similar, recommend.
            ("SELECT id FROM search('running shoes') WHERE price < 80", "p1"),
            ("SELECT id FROM search('跑步鞋')", "p1"),
            ("SELECT id FROM search('背包')", "p4"),
            ("SELECT id FROM search(vector => [0.0, 0.2, 0.9, 0.1]) LIMIT 1", "p2"),
            ("SELECT id FROM search('shoe', vector => [0.0, 0.2, 0.9, 0.1], fusion => 'rrf') LIMIT 1", "p2"),
            ("SELECT id FROM search('shoe') WHERE category = 'shoes/running' ORDER BY id", "p1; p3"),
            ("SELECT id FROM search('shoe') WHERE score > 1000000", ""),
            ("SELECT id FROM search('shoe') WHERE id <> 'p1' AND category = 'shoes' ORDER BY id", "p2; p3"),
            ("SELECT id FROM similar('p1') LIMIT 1", "p3"),
            ("SELECT id FROM similar('p1') WHERE category = 'bags'", "p4"),
            // Before training, recommendations have only content channels to go on.
            ("SELECT id FROM recommend('u1') WHERE category = 'bags'", "*"),
            ("SELECT id FROM search('shoe') LIMIT 0", ""),
            // Introspection.
            ("SHOW TABLES", "products,4,*"),
            ("DESCRIBE events", "user_id,text,who; item_id,text,which product (must exist); kind,text,*"),
            ("SHOW STATS", "*"),
            // Models.
            ("SHOW MODELS", ""),
            ("TRAIN", "model generation 1 trained on log sequence *"),
            ("SHOW MODELS", "history,chosen,recency=*"),
            // One row per model channel, in registry order, then the fusion modes.
            ("EVALUATE", "item_cf,10,*"),
            ("SELECT id FROM recommend('u1') WHERE category = 'bags'", "p4"),
            ("EXPLAIN SELECT id FROM recommend('u2') WHERE category = 'shoes' LIMIT 1", "*"),
            ("EXPLAIN SELECT id FROM products WHERE price < 1", "Scan(*"),
            // Writes.
            ("DELETE FROM products WHERE id IN ('p3', 'p3')", "deleted 1 product (seq *"),
            ("SELECT id FROM products WHERE category = 'shoes' ORDER BY id", "p1; p2"),
            ("DELETE FROM users WHERE id = 'u2'", "forgot 1 user and their events*"),
            ("SELECT * FROM events WHERE user_id = 'u2'", ""),
            // Imports (the scratch directory is the binary's current directory).
            ("IMPORT PRODUCTS FROM 'data/more.jsonl'", "imported 1 products"),
            ("IMPORT EVENTS FROM 'data/more.csv' ON ERROR SKIP", "imported 2 events"),
            ("IMPORT MOVIELENS FROM 'data/ml'", "imported 5 products and ratings"),
            ("IMPORT KG FROM 'data/x.kg' LINKS 'data/x.link'", "imported 2 triples and links, skipped 1"),
            ("SELECT id, title, category FROM products WHERE id IN ('1', 'p5') ORDER BY id", "1,Toy Story (1995),genre/Comedy; p5,Summer dress 连衣裙,clothing/dresses"),
            ("SELECT item_id, kind FROM events WHERE user_id = '7' ORDER BY item_id", "1,5.0; 2,3.0"),
            ("IMPORT SEQUENCES FROM 'data/seq.txt'", "imported 7 purchases and new products"),
            ("SELECT item_id FROM events WHERE user_id = 's1' ORDER BY ts", "q2; p1; q1"),
            ("TRAIN WITH (tune = off)", "model generation 2 trained on log sequence *"),
            ("SHOW MODELS", ""),
            ("TRAIN WITH (tune = on, tune_budget = 5)", "model generation 3 trained *"),
            ("SHOW MODELS", "history,chosen,recency=*"),
        ],
    );
    // EXPLAIN gives every hit an explanation, one line per channel.
    let docs = s.json("EXPLAIN SELECT id, score FROM search('shoe') LIMIT 2");
    assert_eq!(
        docs[0]["columns"],
        serde_json::json!(["id", "score", "explanation"])
    );
    for row in docs[0]["rows"].as_array().expect("rows") {
        assert!(
            row["explanation"]
                .as_str()
                .is_some_and(|e| e.contains("bm25")),
            "{row}"
        );
    }
}

#[test]
fn tables_are_aligned_with_wide_characters() {
    let s = Scratch::seeded();
    let out = s.sql("SELECT id, title, price FROM products WHERE category = 'shoes/running' OR brand = 'Acme' ORDER BY id").ok();
    assert_eq!(
        out.stdout,
        "\
id | title                                        | price
---+----------------------------------------------+------
p1 | Acme 男士轻便跑步鞋 Lightweight Running Shoe |  59.9
p3 | Trail running shoe                           |  89.5
p4 | Travel backpack 双肩背包                     |    45
(3 rows)
"
    );
}

/// (statement, position, words of the message)
const MALFORMED: &[(&str, &str, &str)] = &[
    (
        "TRAIN WITH (tune = maybe)",
        "1:20",
        "expected on or off, found maybe",
    ),
    (
        "TRAIN WITH (tune_budget = -3)",
        "1:27",
        "expected a number of seconds",
    ),
    (
        "TRAIN WITH (epochs = 3)",
        "1:13",
        "expected a setting: tune, tune_budget, sequence or sequence_budget, found epochs",
    ),
    ("IMPORT SEQUENCES 'x.txt'", "1:18", "expected FROM"),
    (
        "SELEC * FROM products",
        "1:1",
        "expected an SQL statement, found SELEC",
    ),
    (
        "SELECT * FROM",
        "1:14",
        "expected identifier, found end of statement",
    ),
    (
        "SELECT * FROM search('x' LIMIT 3",
        "1:26",
        "expected ), found LIMIT",
    ),
    (
        "SELECT * FROM serch('x')",
        "1:15",
        "expected search(...), recommend(...), similar(...), suggest(...) or trending(...)",
    ),
    (
        "SELECT id FROM products WHERE price < 'cheap'",
        "1:39",
        "expected a number to compare price with",
    ),
    (
        "INSERT INTO products (id, price) VALUES ('p9', 'x')",
        "1:48",
        "expected a price",
    ),
    (
        "INSERT INTO products (id, title) VALUES ('p9', 'a', 'b')",
        "1:41",
        "expected 2 values",
    ),
    (
        "INSERT INTO events (user_id, item_id, kind) VALUES ('u', 'p1', 'buyy')",
        "1:64",
        "expected an event kind",
    ),
    (
        "SELECT * FROM products WHERE price +",
        "1:37",
        "expected an expression",
    ),
    ("DELETE FROM products", "1:1", "expected WHERE id = '...'"),
    (
        "DELETE FROM products WHERE brand = 'Acme'",
        "1:28",
        "expected id = '...' or id IN (...)",
    ),
    (
        "SELECT * FROM products LIMIT 1.5",
        "1:30",
        "expected LIMIT as a non-negative integer",
    ),
    (
        "IMPORT PRODUCTS 'x.jsonl'",
        "1:17",
        "expected FROM, found 'x.jsonl'",
    ),
    (
        "IMPORT STUFF FROM 'x'",
        "1:8",
        "expected PRODUCTS, EVENTS, SEQUENCES, MOVIELENS, MODEL or KG",
    ),
    (
        "SELECT * FROM search('x', usr => 'u')",
        "1:27",
        "expected text, user, vector",
    ),
    (
        "SELECT * FROM products WHERE score > 1",
        "1:30",
        "expected a column of products",
    ),
    (
        "SELECT * FROM products WHERE title = 'it''s",
        "1:38",
        "unterminated string literal; expected the closing quote",
    ),
    ("TRAIN NOW", "1:7", "expected end of statement, found NOW"),
    (
        "SELECT id\nFROM products\nWHERE price <> >",
        "3:16",
        "expected an expression, found >",
    ),
    (
        "SELECT id FROM events WHERE color = 'red'",
        "1:29",
        "expected user_id, item_id, kind, ts or value",
    ),
    (
        "SELECT * FROM search('x', vector => [1, 'a'])",
        "1:41",
        "expected a vector component",
    ),
    (
        "SELECT * FROM similar('p1', fusion => 'best')",
        "1:39",
        "expected fusion => 'auto', 'mlp', 'learned', 'linear' or 'rrf'",
    ),
    (
        "SHOW FRUIT",
        "1:6",
        "expected SHOW STATS, SHOW MODELS, SHOW SYNONYMS or SHOW TABLES",
    ),
];

#[test]
fn malformed_statements_say_where_and_what_was_expected() {
    let s = Scratch::seeded();
    for (sql, pos, words) in MALFORMED {
        // Through the planner alone...
        match plan(sql) {
            Err(Error::Syntax(m)) => {
                assert!(m.contains(&format!(" at {pos}: ")), "{sql:?}: {m}");
                assert!(m.contains(words), "{sql:?}: {m}");
            }
            other => panic!("{sql:?}: {other:?}"),
        }
        // ...and through the binary, with the line and a caret.
        let out = s.sql(sql);
        assert_eq!(out.code, 1, "{sql:?}");
        assert!(out.stderr.starts_with("error: "), "{sql:?}: {}", out.stderr);
        assert!(
            out.stderr.contains(&format!(" at {pos}: ")) && out.stderr.contains(words),
            "{sql:?}: {}",
            out.stderr
        );
        assert!(
            out.stderr.trim_end().ends_with('^'),
            "{sql:?}: {}",
            out.stderr
        );
    }
}

#[test]
fn errors_in_scripts_point_into_the_script() {
    let s = Scratch::seeded();
    let script = s.write("bad.sql", "SELECT id FROM products WHERE id = 'p1';\n\n  -- a comment\n  SELECT id\n    FROM products WHERE price < 'x';\n");
    let out = s.run(&[script.to_str().expect("utf8")], None);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("error at 5:33: expected a number"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("    FROM products WHERE price < 'x';\n"),
        "{}",
        out.stderr
    );
}

#[test]
fn writes_are_all_or_nothing() {
    let s = Scratch::seeded();
    let before = s
        .sql("SELECT * FROM products ORDER BY id; SELECT * FROM events ORDER BY ts")
        .ok()
        .stdout;
    let failing = [
        // The third row's vector has the wrong dimension.
        "INSERT INTO products (id, title, embedding) VALUES ('n1', 'a', [1, 0, 0, 0]), ('n2', 'b', NULL), ('n3', 'c', [1, 0])",
        // The same id twice in one statement.
        "INSERT INTO products (id, title) VALUES ('n1', 'a'), ('n1', 'b')",
        // A negative price in the last row.
        "INSERT INTO products (id, price) VALUES ('n1', 1), ('n2', -5)",
        // An unknown item in the last event.
        "INSERT INTO events (user_id, item_id, kind, ts) VALUES ('u9', 'p1', 'view', 1700000000), ('u9', 'nope', 'view', 1700000001)",
        // A timestamp far in the future.
        "INSERT INTO events (user_id, item_id, kind, ts) VALUES ('u9', 'p1', 'view', 1700000000), ('u9', 'p2', 'view', 99999999999)",
        // One unknown id among known ones.
        "DELETE FROM products WHERE id IN ('p1', 'p2', 'nope')",
        "DELETE FROM users WHERE id IN ('u1', 'nobody')",
        // A bad row in an imported file.
    ];
    for sql in failing {
        let out = s.sql(sql);
        assert_eq!(out.code, 1, "{sql} should fail");
    }
    s.write(
        "bad.jsonl",
        "{\"id\": \"n1\"}\n{\"id\": \"n2\", \"price\": \"free\"}\n",
    );
    assert_eq!(s.sql("IMPORT PRODUCTS FROM 'bad.jsonl'").code, 1);
    let after = s
        .sql("SELECT * FROM products ORDER BY id; SELECT * FROM events ORDER BY ts")
        .ok()
        .stdout;
    assert_eq!(before, after, "nothing was applied");
    // The same statements, fixed, go through.
    s.sql("INSERT INTO products (id, price) VALUES ('n1', 1), ('n2', 5); DELETE FROM products WHERE id IN ('n1', 'n2')").ok();
}

#[test]
fn limits_are_typed_errors() {
    let s = Scratch::seeded();
    // WHERE nesting beyond Limits::max_filter_depth (32).
    let deep = format!(
        "SELECT id FROM products WHERE {}price > 1",
        "NOT ".repeat(40)
    );
    assert!(matches!(
        plan(&deep),
        Err(Error::LimitExceeded {
            what: "filter nesting depth",
            got: 41,
            limit: 32
        })
    ));
    let out = s.sql(&deep);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("filter nesting depth is 41, the limit is 32"),
        "{}",
        out.stderr
    );
    // Parentheses beyond sqlparser's recursion limit.
    let parens = format!(
        "SELECT id FROM products WHERE {}price > 1{}",
        "(".repeat(200),
        ")".repeat(200)
    );
    assert!(matches!(plan(&parens), Err(Error::Syntax(m)) if m.contains("nests deeper than 50")));
    // A flood of operators (a left-deep tree that would overflow the stack when dropped).
    let flood = format!(
        "SELECT id FROM products WHERE {}price > 1",
        "price > 1 AND ".repeat(20_000)
    );
    assert!(matches!(
        plan(&flood),
        Err(Error::LimitExceeded {
            what: "operators in one statement",
            ..
        })
    ));
    let out = s.run(&[], Some(&flood));
    assert!(
        out.stderr.contains("operators in one statement"),
        "{}",
        out.stderr
    );
    // A long chain within the limit is flat, not deep.
    let chain = format!(
        "SELECT id FROM products WHERE {}price > 1",
        "price > 1 AND ".repeat(400)
    );
    assert_eq!(
        s.sql(&chain).ok().stdout,
        "id\n--\np1\np2\np3\np4\n(4 rows)\n"
    );
    // Statements over 1 MiB.
    let long = format!("SELECT id FROM search('{}')", "a".repeat(1 << 20));
    assert!(matches!(
        plan(&long),
        Err(Error::LimitExceeded {
            what: "statement bytes",
            ..
        })
    ));
    let out = s.run(&[], Some(&long));
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("statement bytes"), "{}", out.stderr);
    // LIMIT beyond the engine's max_k.
    let out = s.sql("SELECT id FROM search('shoe') LIMIT 5000");
    assert!(out.stderr.contains("limit exceeded"), "{}", out.stderr);
}

#[test]
fn the_planner_is_pure_and_typed() {
    let Ok(Plan::Retrieve(r)) = plan("SELECT id, score FROM search('red shoes', user => 'u1') WHERE brand = 'Acme' AND price <= 100 AND score >= 0.25 LIMIT 3;") else {
        panic!("not a retrieval");
    };
    assert_eq!(r.limit, 3);
    assert_eq!(
        r.filter,
        Filter::And(vec![
            Filter::brand("Acme"),
            Filter::price(None, Some(100.0))
        ])
    );
    assert!(matches!(
        r.residual,
        Some(Pred::Cmp {
            field: Field::Score,
            ..
        })
    ));
    let Ok(Plan::InsertProducts(rows)) = plan(
        "INSERT INTO products (id, embedding, color, size) VALUES ('p1', [0.5, -1e-3], 'red', 42)",
    ) else {
        panic!("not an insert");
    };
    assert_eq!(rows[0].embedding, Some(vec![0.5, -0.001]));
    assert_eq!(
        rows[0].attributes.get("size").map(String::as_str),
        Some("42")
    );
    assert!(
        matches!(plan("DELETE FROM users WHERE id = 'u1' OR id = 'u2'"), Ok(Plan::ForgetUsers(u)) if u == ["u1", "u2"])
    );
    let Ok(Plan::Retrieve(r)) = plan(
        "SELECT * FROM recommend('u1', alpha => 0.75, beta => 0.25, max_per_brand => 2, exclude_purchased => false)",
    ) else {
        panic!("not a retrieval");
    };
    assert_eq!(
        r.tuning.fusion,
        Some(Fusion::Linear {
            alpha: 0.75,
            beta: 0.25
        })
    );
    assert_eq!(
        (r.tuning.max_per_brand, r.tuning.exclude_purchased),
        (Some(2), Some(false))
    );
    assert!(matches!(plan("TRAIN;"), Ok(Plan::Train(t)) if t == TrainSettings::default()));
    assert!(matches!(
        plan("train with (TUNE = off, tune_budget = 2.5)"),
        Ok(Plan::Train(TrainSettings { tune: Some(false), tune_budget_secs: Some(b), sequence: None, sequence_budget_secs: None })) if b == 2.5
    ));
    assert!(matches!(
        plan("TRAIN WITH (sequence = on, sequence_budget = 0)"),
        Ok(Plan::Train(TrainSettings { sequence: Some(true), sequence_budget_secs: Some(b), .. })) if b == 0.0
    ));
    assert!(matches!(
        plan("TRAIN WITH (sequence = on)"),
        Ok(Plan::Train(TrainSettings {
            sequence: Some(true),
            tune: None,
            ..
        }))
    ));
    assert!(
        matches!(plan("TRAIN WITH (sequence = maybe)"), Err(Error::Syntax(m)) if m.contains("on or off"))
    );
    // One statement at a time (scripts are split first).
    assert!(
        matches!(plan("SELECT * FROM products; SELECT 1"), Err(Error::Syntax(m)) if m.contains("at 1:23: expected end of statement, found ';'"))
    );
    assert!(matches!(plan("  evaluate  "), Ok(Plan::Evaluate)));
    assert!(matches!(plan("show stats"), Ok(Plan::ShowStats)));
}
