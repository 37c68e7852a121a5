//! Aggregates and `GROUP BY` through the real binary: counts, distinct counts, min / max /
//! avg / sum over products, events and a search's matches, `HAVING`, `ORDER BY` an
//! aggregate, the empty cases, and positioned errors.

use super::cli::{compact, Scratch};

/// Runs the statements in one script and returns each result as `a,b; c,d`.
fn results(s: &Scratch, statements: &[&str]) -> Vec<String> {
    let docs = s.json(&statements.join(";\n"));
    assert_eq!(docs.len(), statements.len(), "one result per statement");
    docs.iter().map(compact).collect()
}

/// The cells of a one-row result as numbers.
fn numbers(row: &str) -> Vec<f64> {
    row.split(',')
        .map(|c| {
            c.parse::<f64>()
                .unwrap_or_else(|e| panic!("{e}: {c} in {row}"))
        })
        .collect()
}

#[test]
fn counts_and_groups_over_products_events_and_a_search() {
    let s = Scratch::seeded();
    let cases: &[(&str, &str)] = &[
        ("SELECT count(*) FROM products", "4"),
        ("SELECT count(DISTINCT brand), count(brand) FROM products", "3,4"),
        (
            "SELECT brand, count(*) AS n FROM products GROUP BY brand ORDER BY n DESC, brand",
            "Acme,2; Nimbus,1; Oxford,1",
        ),
        (
            "SELECT brand, count(*) FROM products GROUP BY brand HAVING count(*) > 1",
            "Acme,2",
        ),
        (
            "SELECT brand, max(price) FROM products GROUP BY 1 ORDER BY 2 DESC LIMIT 2",
            "Oxford,120.0; Nimbus,89.5",
        ),
        (
            "SELECT category, count(*) FROM products WHERE category LIKE 'shoes%' GROUP BY category",
            "shoes/formal,1; shoes/running,1; shoes/running/trail,1",
        ),
        (
            "SELECT attr('color') AS colour, count(*) FROM products GROUP BY colour ORDER BY count(*) DESC, colour",
            "red,2; black,1; blue,1",
        ),
        (
            "SELECT user_id, count(*), count(DISTINCT item_id), min(ts), max(ts) FROM events GROUP BY user_id",
            "u1,3,2,1700000000,1700000200; u2,2,2,1700000300,1700000400",
        ),
        (
            "SELECT count(*), sum(value), avg(value) FROM events WHERE user_id = 'u2'",
            "2,4.5,4.5",
        ),
        (
            "SELECT brand, count(*) FROM search('shoe') GROUP BY brand",
            "Acme,1; Nimbus,1; Oxford,1",
        ),
        ("SELECT count(*) FROM search('shoe') WHERE price < 100", "2"),
        // A misspelt search counts what the search finds.
        ("SELECT count(*) FROM search('backpak')", "1"),
        // Nothing matches: one group without GROUP BY, none with it.
        (
            "SELECT count(*), sum(price), min(title) FROM products WHERE brand = 'none'",
            "0,NULL,NULL",
        ),
        (
            "SELECT brand, count(*) FROM products WHERE brand = 'none' GROUP BY brand",
            "",
        ),
    ];
    let statements: Vec<&str> = cases.iter().map(|(sql, _)| *sql).collect();
    for ((sql, expected), got) in cases.iter().zip(results(&s, &statements)) {
        assert_eq!(got, *expected, "{sql}");
    }

    // Floats: compared as numbers.
    let got = results(
        &s,
        &["SELECT min(price), max(price), avg(price), sum(price) FROM products"],
    );
    let v = numbers(&got[0]);
    let prices = [59.9, 120.0, 89.5, 45.0];
    let sum: f64 = prices.iter().sum();
    for (x, want) in v.iter().zip([45.0, 120.0, sum / 4.0, sum]) {
        assert!((x - want).abs() < 1e-3, "{got:?}");
    }

    // A count agrees with the rows a scan returns after a write.
    s.sql(
        "INSERT INTO products (id, title, brand, price) VALUES ('p9', 'Canvas tote', 'Acme', 12)",
    )
    .ok();
    let got = results(
        &s,
        &[
            "SELECT count(*) FROM products WHERE brand = 'Acme'",
            "SELECT id FROM products WHERE brand = 'Acme'",
        ],
    );
    assert_eq!(got[0], "3");
    assert_eq!(got[1].split("; ").count(), 3, "{got:?}");
}

#[test]
fn malformed_aggregates_are_positioned_errors_and_change_nothing() {
    let s = Scratch::seeded();
    for (sql, words) in [
        (
            "SELECT brand, title, count(*) FROM products GROUP BY brand",
            "1:15",
        ),
        ("SELECT count(*) FROM recommend('u1')", "recommend"),
        ("SELECT sum(title) FROM products", "needs a number column"),
        ("SELECT id FROM products WHERE count(*) > 1", "HAVING"),
        (
            "SELECT count(*) FROM events GROUP BY colour",
            "unknown column colour",
        ),
    ] {
        let out = s.run(&["-c", sql], None);
        assert_ne!(out.code, 0, "{sql}: {}", out.stdout);
        assert!(out.stderr.contains(words), "{sql}: {}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{sql}: {}", out.stderr);
    }
    let got = results(&s, &["SELECT count(*) FROM products"]);
    assert_eq!(got, ["4"]);
}
