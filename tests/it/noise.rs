//! Noise on shown counts (`EngineBuilder::count_noise`): the noise scale measured through
//! `Engine::trending`, trending against a brute-force count, noisy popularity, and bad
//! inputs (ε, reopening, trending's arguments, SQL).

use std::collections::{HashMap, HashSet};

use shopdb::sql::Session;
use shopdb::{Channel, Engine, Error, Event, EventKind, Filter, Query, TrainOptions};

use crate::support::{products, tempdir, Rng};

const T0: i64 = 1_700_000_000;

fn quick_training() -> TrainOptions {
    TrainOptions {
        tune: None,
        mlp: None,
        ..TrainOptions::default()
    }
}

/// A database in `dir` with `n` products and `events` committed, with noise of `epsilon`
/// when given.
fn shop(dir: &std::path::Path, epsilon: Option<f64>, n: u64, events: Vec<Event>) -> Engine {
    let mut b = Engine::builder().dim(8);
    if let Some(epsilon) = epsilon {
        b = b.count_noise(epsilon);
    }
    let e = b.open(dir).unwrap();
    e.upsert_products(products(n, 8)).unwrap();
    e.append_events(events).unwrap();
    e.commit().unwrap();
    e
}

/// `users` shoppers each view `item` once at `T0 + u`.
fn viewers(item: &str, users: u64) -> Vec<Event> {
    (0..users)
        .map(|u| Event::new(format!("v{u}"), item, EventKind::View, T0 + u as i64))
        .collect()
}

/// Random events of 40 shoppers on 30 products over 1,000 s, with repeats.
fn random_events() -> Vec<Event> {
    let mut rng = Rng(11);
    (0..600)
        .map(|n| {
            let kind =
                [EventKind::View, EventKind::Click, EventKind::Purchase][rng.below(3) as usize];
            Event::new(
                format!("u{}", rng.below(40)),
                format!("p{}", rng.below(30)),
                kind,
                T0 + rng.below(1000) as i64 + n % 3,
            )
        })
        .collect()
}

#[test]
fn trending_without_noise_is_a_brute_force_count() {
    let dir = tempdir();
    let events = random_events();
    let e = shop(dir.path(), None, 30, events.clone());
    // A deleted product is not listed.
    e.delete_product("p3").unwrap();
    e.commit().unwrap();
    let live: HashSet<String> = e.product_ids().into_iter().collect();
    let acme: HashSet<String> = e
        .product_ids()
        .into_iter()
        .filter(|id| e.get_product(id).unwrap().unwrap().brand == "Acme")
        .collect();
    for since in [0, T0 + 400, T0 + 990, T0 + 5000] {
        for (filter, allowed) in [(Filter::All, &live), (Filter::brand("Acme"), &acme)] {
            let mut users: HashMap<&str, HashSet<&str>> = HashMap::new();
            for ev in events.iter().filter(|ev| ev.ts >= since) {
                if allowed.contains(&ev.item) {
                    users.entry(&ev.item).or_default().insert(&ev.user);
                }
            }
            let mut want: Vec<(String, f64)> = users
                .into_iter()
                .map(|(id, u)| (id.to_string(), u.len() as f64))
                .collect();
            want.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            let got: Vec<(String, f64)> = e
                .trending(since, 1000, &filter)
                .unwrap()
                .into_iter()
                .map(|c| (c.id, c.count))
                .collect();
            assert_eq!(got, want, "since {since}, {filter:?}");
            let top3 = e.trending(since, 3, &filter).unwrap();
            assert_eq!(top3.len(), want.len().min(3));
        }
    }
    assert!(e.trending(T0 + 5000, 10, &Filter::All).unwrap().is_empty());
}

/// The noise scale through the public API: 20,000 releases (one per `since`, all before every
/// event) of one product's count of 30 at ε = 0.5, so Laplace of scale b = 1/ε = 2. The
/// mean absolute deviation of Laplace(b) has standard deviation b, so its mean over n =
/// 20,000 has a standard error of b/√n (0.7% of b): checked within 3% of b (over 4
/// standard errors). The mean's standard error is b·√2/√n ≈ 0.02: checked within 0.1 of 30
/// (5 standard errors). At 30 the clamp at 0 acts with probability e^-15/2, never here.
#[test]
fn trending_noise_has_the_documented_scale() {
    let dir = tempdir();
    let epsilon = 0.5;
    let e = shop(dir.path(), Some(epsilon), 3, viewers("p0", 30));
    let n = 20_000;
    let (mut sum, mut abs) = (0.0, 0.0);
    for since in 0..n {
        let hits = e.trending(since, 10, &Filter::All).unwrap();
        let c = hits.iter().find(|c| c.id == "p0").expect("p0 listed").count;
        sum += c;
        abs += (c - 30.0).abs();
    }
    let (mean, mad) = (sum / n as f64, abs / n as f64);
    let scale = 1.0 / epsilon;
    println!("{n} releases of a count of 30 at epsilon {epsilon}: mean {mean:.4}, mean |noise| {mad:.4} (scale {scale})");
    assert!((mad - scale).abs() < 0.03 * scale, "mean |noise| {mad}");
    assert!((mean - 30.0).abs() < 0.1, "mean {mean}");

    // One release asked again gives the same figures, so it cannot be averaged away.
    let once = e.trending(7, 10, &Filter::All).unwrap();
    assert_eq!(once, e.trending(7, 10, &Filter::All).unwrap());
    // A commit is a new state of the log: a new release, new noise.
    e.upsert_products(products(4, 8).split_off(3)).unwrap();
    e.commit().unwrap();
    let after = e.trending(7, 10, &Filter::All).unwrap();
    let p0 = |v: &[shopdb::Count]| v.iter().find(|c| c.id == "p0").map(|c| c.count);
    assert_ne!(p0(&once), p0(&after));
    // The seed and the setting survive a reopen: the same state gives the same figures.
    drop(e);
    let e = Engine::builder().dim(8).open(dir.path()).unwrap();
    assert_eq!(e.config().count_noise, Some(epsilon));
    assert_eq!(e.trending(7, 10, &Filter::All).unwrap(), after);
    // Ranked on the released counts, which are never negative.
    for w in after.windows(2) {
        assert!(w[0].count >= w[1].count && w[1].count > 0.0);
    }

    // Without the option: the exact count, every time.
    let plain_dir = tempdir();
    let plain = shop(plain_dir.path(), None, 3, viewers("p0", 30));
    for since in 0..50 {
        let hits = plain.trending(since, 10, &Filter::All).unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!((hits[0].id.as_str(), hits[0].count), ("p0", 30.0));
    }
}

/// With noise, trending still finds the products many shoppers touched, with counts within
/// plausible bounds: at ε = 1 (scale 1), |noise| > 12 has probability e^-12 ≈ 6e-6.
#[test]
fn noisy_trending_differs_but_stays_close() {
    let dir = tempdir();
    let events = random_events();
    let e = shop(dir.path(), Some(1.0), 30, events.clone());
    let mut exact: HashMap<&str, HashSet<&str>> = HashMap::new();
    for ev in &events {
        exact.entry(&ev.item).or_default().insert(&ev.user);
    }
    let got = e.trending(0, 1000, &Filter::All).unwrap();
    let mut differ = 0;
    for c in &got {
        let truth = exact.get(c.id.as_str()).map_or(0, HashSet::len) as f64;
        assert!(
            (c.count - truth).abs() < 12.0,
            "{}: {} vs {truth}",
            c.id,
            c.count
        );
        if c.count != truth {
            differ += 1;
        }
    }
    assert_eq!(differ, got.len(), "every released count carries noise");
    assert!(got.len() >= 20, "most products are listed: {}", got.len());
}

/// Noisy popularity: untouched products get noise too (so a cold-start list may show
/// them), `SHOW MODELS` prints ε and the scale, a generation is one release (asked again, the
/// same), and a new generation is a new release.
#[test]
fn popularity_scores_carry_noise_per_generation() {
    let dir = tempdir();
    // Only p0..p2 were ever touched.
    let mut events = viewers("p0", 6);
    events.extend(viewers("p1", 4));
    events.extend(viewers("p2", 2));
    let e = shop(dir.path(), Some(1.0), 24, events);
    e.train(&quick_training()).unwrap();
    let cold = |e: &Engine| -> Vec<(String, f32)> {
        e.query(&Query::new().user("nobody").k(24).explain(true))
            .unwrap()
            .into_iter()
            .map(|h| {
                let raw = h
                    .explanation
                    .and_then(|x| {
                        x.channels
                            .into_iter()
                            .find(|c| c.channel == Channel::Popularity)
                    })
                    .map_or(f32::NAN, |c| c.raw);
                (h.id, raw)
            })
            .collect()
    };
    let first = cold(&e);
    // Each of 21 untouched products is listed with probability 1/2.
    let touched = ["p0", "p1", "p2"];
    assert!(
        first.iter().any(|(id, _)| !touched.contains(&id.as_str())),
        "{first:?}"
    );
    // Exact scores would be whole view counts (6, 4, 2); released ones are not.
    assert!(
        first
            .iter()
            .all(|(_, s)| s.is_finite() && *s > 0.0 && s.fract() != 0.0),
        "{first:?}"
    );
    assert_eq!(first, cold(&e));
    let models = Session::new(&e).execute("SHOW MODELS").unwrap();
    let noise_row = models
        .rows
        .iter()
        .map(|r| format!("{r:?}"))
        .find(|r| r.contains("noise"))
        .expect("a noise row");
    assert!(
        noise_row.contains("epsilon=1, sensitivity=8, laplace_scale=8"),
        "{noise_row}"
    );
    e.train(&quick_training()).unwrap();
    assert_ne!(first, cold(&e), "a new generation is a new release");

    // Without the option: the exact view counts, and untouched products are not listed.
    let plain_dir = tempdir();
    let mut events = viewers("p0", 6);
    events.extend(viewers("p1", 4));
    let plain = shop(plain_dir.path(), None, 24, events);
    plain.train(&quick_training()).unwrap();
    assert_eq!(
        cold(&plain),
        vec![("p0".to_string(), 6.0), ("p1".to_string(), 4.0)]
    );
    let models = Session::new(&plain).execute("SHOW MODELS").unwrap();
    assert!(!format!("{:?}", models.rows).contains("noise"));
}

#[test]
fn bad_epsilons_are_refused_before_anything_is_written() {
    let parent = tempdir();
    for bad in [f64::NAN, 0.0, -1.0, f64::INFINITY, 11.0] {
        let dir = parent.path().join("db");
        match Engine::builder().count_noise(bad).open(&dir) {
            Err(Error::Invalid { field, .. }) => assert_eq!(field, "config.count_noise"),
            Err(other) => panic!("{bad}: {other}"),
            Ok(_) => panic!("{bad} accepted"),
        }
        assert!(!dir.exists(), "{bad}: the directory was created");
    }
    assert!(Engine::builder()
        .count_noise(10.0)
        .open(parent.path().join("ok"))
        .is_ok());
}

#[test]
fn count_noise_is_fixed_at_creation() {
    let dir = tempdir();
    drop(Engine::builder().count_noise(0.5).open(dir.path()).unwrap());
    let json = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
    assert!(json.contains("\"count_noise\": 0.5"), "{json}");
    match Engine::builder().count_noise(1.0).open(dir.path()) {
        Err(Error::ConfigMismatch {
            setting,
            stored,
            requested,
        }) => assert_eq!(
            (setting, stored.as_str(), requested.as_str()),
            ("count_noise", "0.5", "1")
        ),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("another epsilon accepted"),
    }
    // Unset: the stored value; the same value: accepted.
    assert_eq!(
        Engine::open(dir.path()).unwrap().config().count_noise,
        Some(0.5)
    );
    assert!(Engine::builder().count_noise(0.5).open(dir.path()).is_ok());

    // A database created without noise cannot be reopened with it.
    let plain = tempdir();
    drop(Engine::open(plain.path()).unwrap());
    let json = std::fs::read_to_string(plain.path().join("config.json")).unwrap();
    assert!(!json.contains("count_noise"), "{json}");
    assert!(matches!(
        Engine::builder().count_noise(1.0).open(plain.path()),
        Err(Error::ConfigMismatch {
            setting: "count_noise",
            ..
        })
    ));
    assert_eq!(
        Engine::open(plain.path()).unwrap().config().count_noise,
        None
    );
}

#[test]
fn trending_refuses_bad_arguments() {
    let dir = tempdir();
    let e = shop(dir.path(), None, 3, viewers("p1", 2));
    let max_k = e.config().limits.max_k;
    for k in [0, max_k + 1] {
        assert!(matches!(
            e.trending(0, k, &Filter::All),
            Err(Error::LimitExceeded { what: "k", .. })
        ));
    }
    assert!(matches!(
        e.trending(-1, 10, &Filter::All),
        Err(Error::Invalid {
            field: "trending.since",
            ..
        })
    ));
    assert!(matches!(
        e.trending(0, 10, &Filter::price(Some(f64::NAN), None)),
        Err(Error::Invalid { .. })
    ));

    let s = Session::new(&e);
    let out = s
        .execute("SELECT * FROM trending(since => 1700000000) LIMIT 10")
        .unwrap();
    assert_eq!(out.columns, ["id", "title", "count"]);
    assert_eq!(out.rows.len(), 1);
    assert_eq!(
        format!("{:?}", out.rows[0][0]),
        format!("{:?}", shopdb::sql::Value::Text("p1".into()))
    );
    assert_eq!(
        format!("{:?}", out.rows[0][2]),
        format!("{:?}", shopdb::sql::Value::Float(2.0))
    );
    let filtered = s
        .execute("SELECT id FROM trending(since => 0) WHERE brand = 'Acme'")
        .unwrap();
    assert!(
        filtered.rows.is_empty(),
        "p1 is Globex: {:?}",
        filtered.rows
    );
    for sql in [
        "SELECT * FROM trending(since => -1)",
        "SELECT * FROM trending(since => 'today')",
        "SELECT * FROM trending(from => 1)",
        "SELECT * FROM trending()",
        "SELECT * FROM trending(since => 1) ORDER BY count",
    ] {
        assert!(matches!(s.execute(sql), Err(Error::Syntax(_))), "{sql}");
    }
    assert!(matches!(
        s.execute("SELECT * FROM trending(since => 0) LIMIT 100000"),
        Err(Error::LimitExceeded { what: "k", .. })
    ));
}
