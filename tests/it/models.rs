//! Training inside the engine and offline evaluation through the public API.

use shopdb::{import, Engine, EvalOptions, Event, EventKind, Filter, Product, Query, TrainOptions};

use crate::support::{tempdir, Rng};

/// A shop whose users have latent tastes: each user prefers one of 10 categories.
pub(super) fn generated_shop(e: &Engine, users: u64, items: u64, events_per_user: u64) {
    let products: Vec<Product> = (0..items)
        .map(|i| {
            Product::new(format!("i{i}"))
                .title(format!("item {i}"))
                .category(format!("c{}", i % 10))
                .brand(format!("b{}", i % 7))
        })
        .collect();
    e.upsert_products(products).unwrap();
    e.commit().unwrap();
    let mut rng = Rng(7);
    let mut events = Vec::new();
    for u in 0..users {
        let taste = u % 10;
        for j in 0..events_per_user {
            // 85% in the preferred category, among its first (most liked) items.
            let item = if rng.below(100) < 85 {
                let within = rng.below(items / 10) % (items / 30).max(1)
                    + rng.below(3) * (items / 30).max(1);
                (within * 10 + taste) % items
            } else {
                rng.below(items)
            };
            let kind = [
                EventKind::View,
                EventKind::Click,
                EventKind::Cart,
                EventKind::Purchase,
            ][rng.below(4) as usize];
            events.push(Event::new(
                format!("u{u}"),
                format!("i{item}"),
                kind,
                1_600_000_000 + (u * 1000 + j) as i64,
            ));
        }
    }
    e.append_events(events).unwrap();
    e.commit().unwrap();
}

#[test]
fn models_beat_popularity_on_generated_data() {
    let dir = tempdir();
    let e = Engine::builder().dim(8).open(dir.path()).unwrap();
    generated_shop(&e, 300, 600, 30);
    let report = e.evaluate(&EvalOptions::default()).unwrap();
    println!("{report}");
    let pop = report.get("popularity", "ndcg", 10).unwrap();
    for model in ["item_cf", "user_cf", "mf"] {
        let v = report.get(model, "ndcg", 10).unwrap();
        assert!(
            v > pop,
            "{model} NDCG@10 {v:.4} does not beat popularity {pop:.4}"
        );
    }
}

#[test]
fn learned_fusion_weights_are_reported_used_and_explained() {
    let dir = tempdir();
    let e = Engine::builder().dim(8).open(dir.path()).unwrap();
    generated_shop(&e, 300, 600, 30);
    let report = e.train(&TrainOptions::default()).unwrap();
    println!("{report}");
    let h = report
        .fusion_holdout
        .as_ref()
        .expect("300 users are enough to hold some out");
    // The held-out figures are what `Auto` chooses by.
    assert!(h.users > 0 && h.learned.is_finite() && h.mlp.is_finite());
    assert!(["mlp", "learned", "linear"].contains(&report.auto_fusion.as_str()));
    let w = h.weights;
    let hits = e
        .query(
            &shopdb::Query::new()
                .user("u3")
                .fusion(shopdb::Fusion::Learned)
                .explain(true)
                .k(10),
        )
        .unwrap();
    assert_eq!(hits.len(), 10);
    for hit in &hits {
        let ex = hit.explanation.as_ref().unwrap();
        assert!(
            ex.notes.iter().any(|n| n.contains("learned")),
            "{:?}",
            ex.notes
        );
        // Each part is the learned weight times the normalised score; they sum to the score.
        let mut sum = 0.0;
        for c in &ex.channels {
            let expected = w.get(c.channel) * c.normalized;
            assert!((c.contribution - expected).abs() < 1e-5, "{c:?}");
            sum += c.contribution;
        }
        assert!((sum - hit.score).abs() < 1e-4, "{} vs {sum}", hit.score);
    }
    // Taste 3 (user u3) shows in the learned ranking: most hits are in category c3.
    let c3 = hits.iter().filter(|h| h.product.category == "c3").count();
    assert!(c3 >= 6, "{c3} of 10 in the user's category");
}

#[test]
fn train_persists_and_forget_user_leaves_no_trace_in_models() {
    let dir = tempdir();
    let marker = "forget-me-7f3a9c";
    {
        let e = Engine::builder().dim(8).open(dir.path()).unwrap();
        generated_shop(&e, 50, 100, 10);
        e.append_events(
            (0..5)
                .map(|i| {
                    Event::new(
                        marker,
                        format!("i{i}"),
                        EventKind::Purchase,
                        1_650_000_000 + i,
                    )
                })
                .collect(),
        )
        .unwrap();
        e.commit().unwrap();
        let first = e.train(&TrainOptions::default()).unwrap();
        assert_eq!(first.generation, 1);
        let pairs_with = first.cleaning.pairs;
        e.forget_user(marker).unwrap();
        e.commit().unwrap();
        let second = e.train(&TrainOptions::default()).unwrap();
        assert_eq!(second.generation, 2);
        assert_eq!(
            second.cleaning.pairs,
            pairs_with - 5,
            "the forgotten user's 5 pairs are gone"
        );
        assert!(e.user_history(marker, None).is_err());
    }
    // The generation is loaded on reopen.
    let e = Engine::builder().dim(8).open(dir.path()).unwrap();
    assert_eq!(e.model_generation(), 2);
    assert!(e.recovery().model_error.is_none());
    // Only the current generation's file remains, and no model file names the user.
    let files: Vec<_> = std::fs::read_dir(dir.path().join("models"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(files.len(), 2, "CURRENT and one generation: {files:?}");
    for f in files {
        let bytes = std::fs::read(f.path()).unwrap();
        assert!(
            !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
            "{:?} holds the marker",
            f.path()
        );
    }
}

#[test]
fn damaged_model_file_is_a_typed_error_and_the_engine_still_serves() {
    let dir = tempdir();
    {
        let e = Engine::builder().dim(8).open(dir.path()).unwrap();
        generated_shop(&e, 20, 50, 5);
        e.train(&TrainOptions::default()).unwrap();
    }
    let gen = dir.path().join("models/gen-000001.bin");
    let mut bytes = std::fs::read(&gen).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&gen, &bytes).unwrap();
    let e = Engine::builder().dim(8).open(dir.path()).unwrap();
    let err = e.recovery().model_error.clone().unwrap();
    assert!(err.contains("checksum"), "{err}");
    assert_eq!(e.model_generation(), 0);
    assert!(!e.search_text("item", &Filter::All, 5).unwrap().is_empty());
}

/// MovieLens 100K with its knowledge graph imported, or `None` (after one line) when the data
/// folder is absent.
fn movielens_engine() -> Option<(tempfile::TempDir, Engine)> {
    let data = import::data_dir().join("ml-100k");
    if !data.join("u.data").exists() {
        println!("skipping: {} not found (set SHOPDB_DATA)", data.display());
        return None;
    }
    let dir = tempdir();
    let e = Engine::builder().dim(8).open(dir.path()).unwrap();
    import::movielens(&e, &data).unwrap();
    import::recbole_kg(&e, &data.join("ml-100k.kg"), &data.join("ml-100k.link")).unwrap();
    Some((dir, e))
}

#[test]
fn movielens_100k_recbole_protocol() {
    let Some((_dir, e)) = movielens_engine() else {
        return;
    };
    assert_eq!(e.stats().events, 100_000);
    let report = e.evaluate(&EvalOptions::default()).unwrap();
    println!("MovieLens 100K, RecBole protocol (random 80/10/10 per user, seed 2020, full ranking), test split:\n{report}");
    let best = ["item_cf", "user_cf", "mf"]
        .iter()
        .map(|m| report.get(m, "ndcg", 10).unwrap())
        .fold(0.0, f64::max);
    // Published BPR on this protocol: 0.2768 (tuned 0.2920). Measured here: see the closing note.
    assert!(best >= 0.30, "best NDCG@10 {best:.4}");
    assert!(report.get("popularity", "ndcg", 10).unwrap() < best);
    let fused = ["fused_linear", "fused_rrf", "fused_learned", "fused_mlp"]
        .iter()
        .filter_map(|m| report.get(m, "ndcg", 10))
        .fold(0.0, f64::max);
    println!(
        "best single model NDCG@10 {best:.4}, best fused {fused:.4} ({:+.1}%)",
        100.0 * (fused / best - 1.0)
    );
    assert!(
        report.get("fused_mlp", "ndcg", 10).is_some(),
        "the re-ranker was trained"
    );
}

/// Tuning aid: the same report on the validation split (tune here, never on test).
#[test]
#[ignore = "tuning aid; run by hand"]
fn movielens_100k_validation() {
    let Some((_dir, e)) = movielens_engine() else {
        return;
    };
    let opts = EvalOptions {
        on: shopdb::EvalOn::Valid,
        ..EvalOptions::default()
    };
    println!("validation split:\n{}", e.evaluate(&opts).unwrap());
}

#[test]
fn retrain_policy_trains_after_enough_new_events() {
    let dir = tempdir();
    let e = Engine::builder().dim(8).open(dir.path()).unwrap();
    generated_shop(&e, 20, 50, 5);
    assert_eq!(e.model_generation(), 0);
    e.set_retrain_policy(Some(shopdb::RetrainPolicy {
        after_events: Some(10),
        after_secs: None,
    }));
    e.append_events(
        (0..9)
            .map(|i| Event::new("late", format!("i{i}"), EventKind::View, 1_700_000_000 + i))
            .collect(),
    )
    .unwrap();
    e.commit().unwrap();
    // 100 events since the engine opened (never trained): due at the first commit.
    assert_eq!(e.model_generation(), 1);
    e.append_events(
        (0..9)
            .map(|i| Event::new("late2", format!("i{i}"), EventKind::View, 1_700_000_000 + i))
            .collect(),
    )
    .unwrap();
    e.commit().unwrap();
    assert_eq!(e.model_generation(), 1, "9 new events: not due yet");
    e.append_event(Event::new("late3", "i1", EventKind::View, 1_700_000_100))
        .unwrap();
    e.commit().unwrap();
    assert_eq!(e.model_generation(), 2, "10 new events: retrained");
    e.set_retrain_policy(None);
    e.append_events(
        (0..20)
            .map(|i| Event::new("late4", format!("i{i}"), EventKind::View, 1_700_000_000 + i))
            .collect(),
    )
    .unwrap();
    e.commit().unwrap();
    assert_eq!(e.model_generation(), 2, "policy off");
}

/// Every file under `dir` and the number of times `marker` occurs in it.
pub(super) fn marker_occurrences(
    dir: &std::path::Path,
    marker: &[u8],
    out: &mut Vec<(String, usize)>,
) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            marker_occurrences(&path, marker, out);
        } else {
            let bytes = std::fs::read(&path).unwrap();
            let n = bytes.windows(marker.len()).filter(|w| *w == marker).count();
            out.push((path.display().to_string(), n));
        }
    }
}

/// The generated shop, a `marker` user who buys eight items of category c3 only (so their
/// recommendations are personal), committed and trained.
pub(super) fn shop_with_marker(e: &Engine, marker: &str) {
    generated_shop(e, 40, 100, 10);
    e.append_events(
        (0..8)
            .map(|i| {
                Event::new(
                    marker,
                    format!("i{}", 3 + 10 * i),
                    EventKind::Purchase,
                    1_650_000_000 + i as i64,
                )
            })
            .collect(),
    )
    .unwrap();
    e.commit().unwrap();
    e.train(&TrainOptions::default()).unwrap();
}

#[test]
fn forgotten_user_leaves_no_byte_in_any_file_after_compaction() {
    let dir = tempdir();
    let marker = "zq-forgotten-5b1e0d77";
    let e = Engine::builder().dim(8).open(dir.path()).unwrap();
    shop_with_marker(&e, marker);
    let for_marker = Query::new().user(marker).k(10);
    let for_stranger = Query::new().user("never-seen-user").k(10);
    let ids = |hits: Vec<shopdb::Hit>| hits.into_iter().map(|h| h.id).collect::<Vec<_>>();
    let personal = ids(e.query(&for_marker).unwrap());
    let cold = ids(e.query(&for_stranger).unwrap());
    assert_ne!(personal, cold, "the marker's history must shape their list");

    e.forget_user(marker).unwrap();
    e.commit().unwrap();
    e.train(&TrainOptions::default()).unwrap();
    // Neither the hot-query cache nor a model still reflects the forgotten events: the
    // user gets what a never-seen user gets from the new models.
    let cold = ids(e.query(&for_stranger).unwrap());
    assert_eq!(ids(e.query(&for_marker).unwrap()), cold);

    let mut before = Vec::new();
    marker_occurrences(dir.path(), marker.as_bytes(), &mut before);
    let files_before = before.iter().filter(|(_, n)| *n > 0).count();
    e.compact().unwrap();
    let mut after = Vec::new();
    marker_occurrences(dir.path(), marker.as_bytes(), &mut after);
    let left: usize = after.iter().map(|(_, n)| n * marker.len()).sum();
    println!(
        "forgotten user: files holding the id before compaction {files_before}, \
         bytes of the id left after compaction {left} (files scanned: {})",
        after.len()
    );
    assert_eq!(
        left,
        0,
        "{:?}",
        after.iter().filter(|(_, n)| *n > 0).collect::<Vec<_>>()
    );

    // The compacted store still serves everything, now and after reopening.
    let stats = e.stats();
    e.upsert_product(Product::new("after-compaction").title("fresh"))
        .unwrap();
    e.commit().unwrap();
    drop(e);
    let e = Engine::builder().dim(8).open(dir.path()).unwrap();
    assert_eq!(e.stats().products, stats.products + 1);
    assert_eq!(e.stats().events, stats.events);
    assert!(e.get_product("after-compaction").unwrap().is_some());
    assert!(e.user_history(marker, None).is_err());
    assert_eq!(ids(e.query(&for_marker).unwrap()), cold);
    let mut reopened = Vec::new();
    marker_occurrences(dir.path(), marker.as_bytes(), &mut reopened);
    assert!(reopened.iter().all(|(_, n)| *n == 0));
}
