//! Search-as-you-type and highlighting: `suggest(...)` and `highlight(col)` through the real
//! binary on the demo shop, their malformed forms, and `Engine::suggest` /
//! `Engine::highlight` on a small catalog.

use shopdb::{Engine, Event, EventKind, Product};

use super::cli::{compact, demo_shop, shopdb, Scratch};
use super::support::tempdir;

fn product(id: &str, title: &str, brand: &str, category: &str) -> Product {
    Product {
        title: title.into(),
        brand: brand.into(),
        category: category.into(),
        ..Product::new(id)
    }
}

#[test]
fn suggest_completes_the_last_word_and_finds_titles_on_the_demo_shop() {
    let tmp = demo_shop();
    let out = shopdb(
        tmp.path(),
        &["shop", "--json"],
        Some(
            "SELECT * FROM suggest('runn') LIMIT 8;\n\
             SELECT suggestion FROM suggest('wireles head') LIMIT 3;\n\
             SELECT suggestion, id FROM suggest('runing sh', user => 'u0001') LIMIT 6;\n\
             SELECT * FROM suggest('runn') LIMIT 0;\n\
             SELECT highlight(title) AS t FROM search('runing shoos') LIMIT 3;\n\
             SELECT highlight(title) FROM search('跑步鞋') LIMIT 3;",
        ),
    )
    .ok();
    let docs: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(docs.len(), 6, "{}", out.stdout);
    let rows = |d: &serde_json::Value| -> Vec<Vec<String>> {
        compact(d)
            .split("; ")
            .filter(|r| !r.is_empty())
            .map(|r| r.split(',').map(str::to_string).collect())
            .collect()
    };
    let first = rows(&docs[0]);
    assert_eq!(first.len(), 8, "{first:?}");
    // The word first (no product), then titles of products, each a running shoe.
    assert_eq!(
        first[0][..2],
        ["running".to_string(), "NULL".to_string()],
        "{first:?}"
    );
    let titles: Vec<&Vec<String>> = first.iter().filter(|r| r[1] != "NULL").collect();
    assert!(titles.len() >= 4, "{first:?}");
    for t in &titles {
        assert!(t[0].contains("Running"), "{first:?}");
        assert!(t[1].starts_with('p'), "{first:?}");
    }
    // A typo before the last word is respelt in the completion.
    let second = rows(&docs[1]);
    assert_eq!(second[0], ["wireless headphones"], "{second:?}");
    let third = rows(&docs[2]);
    assert!(third.iter().any(|r| r[0] == "running shoes"), "{third:?}");
    assert!(rows(&docs[3]).is_empty());
    // Highlights: the corrected words are marked in English, the segmented word in Chinese.
    let english = rows(&docs[4]);
    assert_eq!(english.len(), 3, "{english:?}");
    for r in &english {
        assert!(
            r[0].contains("<em>Running</em> <em>Shoe</em>"),
            "{english:?}"
        );
    }
    let chinese = rows(&docs[5]);
    assert_eq!(chinese.len(), 3, "{chinese:?}");
    for r in &chinese {
        assert!(r[0].contains("<em>跑步鞋</em>"), "{chinese:?}");
        assert!(!r[0].contains("<em>Running"), "{chinese:?}");
    }
}

#[test]
fn malformed_suggest_and_highlight_are_positioned_errors() {
    let s = Scratch::seeded();
    for (sql, words) in [
        (
            "SELECT highlight(title) FROM recommend('u1')",
            "1:30: highlight(...) marks",
        ),
        (
            "SELECT highlight(price) FROM search('shoe')",
            "1:8: expected highlight(title)",
        ),
        (
            "SELECT highlight(title) FROM products",
            "1:8: highlight(...) marks",
        ),
        (
            "SELECT * FROM suggest('a', item => 'p1')",
            "1:28: unknown or repeated argument item",
        ),
        (
            "SELECT title FROM suggest('a')",
            "1:8: unknown column title",
        ),
        ("SELECT * FROM suggest('a') WHERE id = 'p1'", "no WHERE"),
    ] {
        let out = s.run(&["-c", sql], None);
        assert_ne!(out.code, 0, "{sql}: {}", out.stdout);
        assert!(out.stderr.contains(words), "{sql}: {}", out.stderr);
    }
    let out = s
        .run(
            &[
                "--json",
                "-c",
                "SELECT id, highlight(title) FROM search('trail') LIMIT 1",
            ],
            None,
        )
        .ok();
    assert!(
        out.stdout.contains("<em>Trail</em> running shoe"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_shoppers_affinity_raises_their_brand_and_highlights_mark_corrected_words() {
    let tmp = tempdir();
    let engine = Engine::open(tmp.path()).expect("open");
    engine
        .upsert_products(vec![
            product("a", "Trail running shoe", "Acme", "shoes/running"),
            product("b", "Trail running shoe", "Nimbus", "shoes/running"),
            product("c", "Road running shoe", "Nimbus", "shoes/running"),
            product("d", "Canvas tote bag", "Acme", "bags"),
        ])
        .expect("upsert");
    let events = (0..6)
        .map(|i| Event::new("fan", "c", EventKind::Click, 1_700_000_000 + i))
        .collect();
    engine.append_events(events).expect("events");
    engine.commit().expect("commit");

    let anyone = engine.suggest("trail runn", None, 6).expect("suggest");
    assert_eq!(anyone[0].text, "trail running", "{anyone:?}");
    assert!(anyone[0].id.is_none());
    let titled: Vec<&str> = anyone.iter().filter_map(|s| s.id.as_deref()).collect();
    assert!(titled.contains(&"a") && titled.contains(&"b"), "{anyone:?}");
    // The Nimbus fan sees the Nimbus trail shoe above the Acme one.
    let fan = engine
        .suggest("trail runn", Some("fan"), 6)
        .expect("suggest");
    let order: Vec<&str> = fan.iter().filter_map(|s| s.id.as_deref()).collect();
    let at = |id: &str| order.iter().position(|x| *x == id);
    assert!(at("b") < at("a"), "{fan:?}");
    // Bad input: typed errors, not panics.
    assert!(engine.suggest("trail", None, 0).is_err());
    assert!(engine.suggest(&"x".repeat(100_000), None, 5).is_err());

    let marked = engine
        .highlight("runing shoos", "Trail Running Shoe for roads")
        .expect("highlight");
    assert_eq!(marked, "Trail <em>Running</em> <em>Shoe</em> for roads");
}
