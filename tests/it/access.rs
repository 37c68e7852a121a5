//! Right of access through the real binary: `EXPORT USER 'u' TO 'file.json'` writes every
//! event of the shopper, their explained recommendations and each channel's part in them;
//! unknown and forgotten users, paths outside the allowed directories and malformed forms
//! are errors that write nothing.

use super::cli::{demo_shop, shopdb};

#[test]
fn export_user_holds_every_event_and_the_explained_recommendations() {
    let tmp = demo_shop();
    let sql = |s: &str| shopdb(tmp.path(), &["shop"], Some(s));
    let json = |s: &str| -> serde_json::Value {
        let out = shopdb(tmp.path(), &["shop", "--json", "-c", s], None).ok();
        serde_json::from_str(&out.stdout).unwrap()
    };
    let said = sql("EXPORT USER 'u0001' TO 'u0001.json';").ok().stdout;
    assert!(said.contains("exported"), "{said}");
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("u0001.json")).unwrap()).unwrap();
    assert_eq!(doc["user"], "u0001");

    // Every event, as the events table holds them, oldest first.
    let table = json("SELECT item_id, kind, ts FROM events WHERE user_id = 'u0001' ORDER BY ts");
    let rows = table["rows"].as_array().unwrap().clone();
    let events = doc["events"].as_array().unwrap();
    assert!(!events.is_empty());
    assert_eq!(events.len(), rows.len(), "{table}");
    let mut exported: Vec<(String, i64)> = events
        .iter()
        .map(|e| {
            (
                e["item"].as_str().unwrap().to_string(),
                e["ts"].as_i64().unwrap(),
            )
        })
        .collect();
    let mut listed: Vec<(String, i64)> = rows
        .iter()
        .map(|r| {
            (
                r["item_id"].as_str().unwrap().to_string(),
                r["ts"].as_i64().unwrap(),
            )
        })
        .collect();
    assert!(
        exported.windows(2).all(|w| w[0].1 <= w[1].1),
        "oldest first"
    );
    let kinds = ["view", "click", "cart", "purchase", "rating"];
    assert!(events
        .iter()
        .all(|e| kinds.contains(&e["kind"].as_str().unwrap())));
    exported.sort();
    listed.sort();
    assert_eq!(exported, listed);

    // The current recommendations, the same as recommend() serves, each explained.
    let served = json("SELECT id FROM recommend('u0001') LIMIT 10");
    let served: Vec<String> = served["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let recs = doc["recommendations"].as_array().unwrap();
    let ids: Vec<String> = recs
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, served);
    assert!(recs
        .iter()
        .all(|r| !r["channels"].as_array().unwrap().is_empty()));
    // The profile sums the channels' parts: their contributions add up to the scores'.
    let channels = doc["profile"]["channels"].as_array().unwrap();
    assert!(!channels.is_empty());
    let part: f64 = channels
        .iter()
        .map(|c| c["contribution"].as_f64().unwrap())
        .sum();
    let per_item: f64 = recs
        .iter()
        .flat_map(|r| r["channels"].as_array().unwrap().clone())
        .map(|c| c["contribution"].as_f64().unwrap())
        .sum();
    assert!((part - per_item).abs() < 1e-3, "{part} vs {per_item}");
    assert!(doc["model_generation"].as_u64().unwrap() > 0);

    // Unknown, then forgotten: an error and no file.
    let out = sql("EXPORT USER 'nobody' TO 'nobody.json';");
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("nobody"), "{}", out.stderr);
    assert!(!tmp.path().join("nobody.json").exists());
    sql("DELETE FROM users WHERE id = 'u0001';").ok();
    let out = sql("EXPORT USER 'u0001' TO 'again.json';");
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(!tmp.path().join("again.json").exists());

    // Outside the allowed directories, and malformed: positioned errors, nothing written.
    let out = sql("EXPORT USER 'u0002' TO '../outside.json';");
    assert_ne!(out.code, 0);
    assert!(!tmp.path().join("../outside.json").exists());
    for (bad, says) in [
        (
            "EXPORT USERS 'u0002' TO 'x.json';",
            "1:8: expected USER, EVENTS, PRODUCTS or MODEL after EXPORT",
        ),
        ("EXPORT USER u0002 TO 'x.json';", "1:13: expected a user id"),
        ("EXPORT USER 'u0002';", "expected TO"),
        ("EXPORT USER 'u0002' TO x;", "1:24: expected a file path"),
        ("EXPORT USER 'u0002' TO 'x.json' NOW;", "1:33"),
    ] {
        let out = sql(bad);
        assert_ne!(out.code, 0, "{bad}");
        assert!(out.stderr.contains(says), "{bad}: {}", out.stderr);
        assert!(!tmp.path().join("x.json").exists());
    }
}
