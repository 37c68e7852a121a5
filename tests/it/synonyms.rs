//! Search synonyms through the real binary: added, applied at once without reindexing,
//! one-way and two-way, kept across reopening, shown in explanations, removed; malformed
//! forms are positioned errors.

use super::cli::{demo_shop, shopdb};

fn ids(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.starts_with('p'))
        .map(|l| l.split('|').next().unwrap_or("").trim().to_string())
        .collect()
}

#[test]
fn synonyms_apply_at_query_time_and_survive_reopening() {
    let tmp = demo_shop();
    let sql = |s: &str| shopdb(tmp.path(), &["shop"], Some(s));
    let search = |q: &str| {
        ids(&sql(&format!("SELECT id FROM search('{q}') LIMIT 5;"))
            .ok()
            .stdout)
    };
    assert!(search("trainers").is_empty(), "no product says trainers");
    let sneakers = search("sneakers");
    assert!(!sneakers.is_empty());

    // Two-way by default; each statement below runs in a new process (the rules are stored).
    sql("INSERT INTO synonyms (word, synonym) VALUES ('Trainers', 'sneakers');").ok();
    assert_eq!(
        search("trainers"),
        sneakers,
        "trainers searches as sneakers"
    );
    let listed = sql("SHOW SYNONYMS;").ok().stdout;
    assert!(listed.contains("trainers | sneakers"), "{listed}");
    assert!(listed.contains("sneakers | trainers"), "{listed}");
    let explained = sql("EXPLAIN SELECT id FROM search('trainers') LIMIT 1;")
        .ok()
        .stdout;
    assert!(
        explained.contains("synonym: \"trainer\" also searched as \"sneaker\""),
        "{explained}"
    );

    // One-way: the synonym does not bring the word back.
    sql("INSERT INTO synonyms (word, synonym, two_way) VALUES ('kicks', 'canvas sneaker', false);")
        .ok();
    assert!(!search("kicks").is_empty());
    let listed = sql("SHOW SYNONYMS;").ok().stdout;
    assert!(listed.contains("kicks    | canvas sneaker"), "{listed}");
    assert!(!listed.contains("canvas sneaker | kicks"), "{listed}");

    // Removal.
    sql("DELETE FROM synonyms WHERE word = 'trainers';").ok();
    assert!(search("trainers").is_empty());
    assert_eq!(search("sneakers"), sneakers);

    // Malformed forms: positioned, typed errors, nothing stored.
    for (bad, says) in [
        (
            "INSERT INTO synonyms (word) VALUES ('x');",
            "expected columns word and synonym",
        ),
        (
            "INSERT INTO synonyms (word, synonym, colour) VALUES ('a', 'b', 'c');",
            "found colour",
        ),
        (
            "INSERT INTO synonyms (word, synonym) VALUES ('the', 'shoe');",
            "no searchable word",
        ),
        (
            "INSERT INTO synonyms (word, synonym) VALUES ('shoes', 'Shoe');",
            "same words",
        ),
        (
            "INSERT INTO synonyms (word, synonym, two_way) VALUES ('a1', 'b1', 'yes');",
            "two_way as true or false",
        ),
        (
            "DELETE FROM synonyms;",
            "expected DELETE FROM synonyms WHERE word",
        ),
        (
            "DELETE FROM synonyms WHERE colour = 'x';",
            "expected DELETE FROM synonyms WHERE word",
        ),
        ("SHOW SYNONYM;", "SHOW SYNONYMS"),
    ] {
        let out = sql(bad);
        assert_ne!(out.code, 0, "{bad}");
        assert!(out.stderr.contains(says), "{bad}: {}", out.stderr);
        assert!(
            out.stderr.contains("at ") || out.stderr.contains("invalid"),
            "{bad}: {}",
            out.stderr
        );
    }
    let listed = sql("SHOW SYNONYMS;").ok().stdout;
    assert_eq!(
        listed.matches(" | ").count(),
        2,
        "header and kicks only: {listed}"
    );
    assert!(!listed.contains("trainers"), "{listed}");
}
