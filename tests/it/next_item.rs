//! Next-item evaluation: the user-sequence format, and the leave-one-out test phase scoring
//! each user with everything before the test item.

use std::fmt::Write as _;
use std::path::Path;

use shopdb::import::{self, OnError};
use shopdb::{Engine, EvalOn, EvalOptions, FittedOn, SplitKind};

use crate::support::{tempdir, Rng};

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn bad_row(e: &shopdb::Error) -> (u64, String) {
    match e {
        shopdb::Error::BadRow { line, reason, .. } => (*line, reason.clone()),
        other => panic!("expected BadRow, got {other:?}"),
    }
}

#[test]
fn sequence_reader_good_and_bad_lines() {
    let dir = tempdir();
    let limits = shopdb::Limits::default();
    let good = write(
        dir.path(),
        "good.txt",
        "u1 a b c\r\n\nu2\tb  d\n   \nu3 a\n",
    );
    let (seqs, report) = import::read_sequences(&good, &limits, OnError::Abort).unwrap();
    let got: Vec<(&str, Vec<&str>, u64)> = seqs
        .iter()
        .map(|s| {
            (
                s.user.as_str(),
                s.items.iter().map(String::as_str).collect(),
                s.line,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("u1", vec!["a", "b", "c"], 1),
            ("u2", vec!["b", "d"], 3),
            ("u3", vec!["a"], 5)
        ]
    );
    assert_eq!(report.imported, 6);

    let long = "x".repeat(limits.max_id_bytes + 1);
    let cases: Vec<(String, u64, &str)> = vec![
        ("u1 a b\nu2\nu3 c\n".to_string(), 2, "has no items"),
        (
            "u1 a\nu2 b\nu1 c\n".to_string(),
            3,
            "already has a sequence on line 1",
        ),
        (format!("u1 a\nu2 {long}\n"), 2, "sequence.item"),
        (format!("{long} a\n"), 1, "sequence.user"),
    ];
    for (text, line, reason) in &cases {
        let p = write(dir.path(), "bad.txt", text);
        let e = import::read_sequences(&p, &limits, OnError::Abort).unwrap_err();
        let (l, r) = bad_row(&e);
        assert_eq!(l, *line, "{text:?}: {r}");
        assert!(r.contains(reason), "{text:?}: {r}");
    }
    let mut bytes = b"u1 a\nu2 b".to_vec();
    bytes.extend([0xff, 0xfe, b'\n']);
    let p = dir.path().join("utf8.txt");
    std::fs::write(&p, bytes).unwrap();
    let (l, r) = bad_row(&import::read_sequences(&p, &limits, OnError::Abort).unwrap_err());
    assert_eq!(l, 2, "{r}");
    assert!(r.contains("UTF-8"), "{r}");

    // Skip mode keeps the good lines and counts the bad ones.
    let p = write(dir.path(), "mixed.txt", "u1 a b\nu2\nu3 c\nu1 d\n");
    let (seqs, report) = import::read_sequences(&p, &limits, OnError::Skip).unwrap();
    assert_eq!(seqs.len(), 2);
    assert_eq!(report.skipped, 2);
    assert_eq!(report.errors.len(), 2);
}

#[test]
fn a_bad_sequence_file_stores_nothing_and_a_good_one_becomes_purchases_in_order() {
    let dir = tempdir();
    let e = Engine::builder()
        .dim(4)
        .open(dir.path().join("db"))
        .unwrap();
    let bad = write(dir.path(), "bad.txt", "u1 a b\nu2 c\nu3\n");
    assert!(matches!(
        import::sequences(&e, &bad, OnError::Abort),
        Err(shopdb::Error::BadRow { line: 3, .. })
    ));
    assert_eq!(e.stats().products, 0);
    assert_eq!(e.stats().events, 0);

    let good = write(dir.path(), "good.txt", "u1 c a b\nu2 b c\n");
    let r = import::sequences(&e, &good, OnError::Abort).unwrap();
    assert_eq!(r.imported, 5 + 3, "5 purchases and 3 new products");
    let s = e.stats();
    assert_eq!((s.products, s.users, s.events), (3, 2, 5));
    let history = e.user_history("u1", None).unwrap();
    let items: Vec<&str> = history.iter().map(|ev| ev.item.as_str()).collect();
    assert_eq!(items, ["c", "a", "b"], "time order is sequence order");
    assert!(history
        .windows(2)
        .all(|w| w[1].ts - w[0].ts == import::SEQUENCE_STEP_SECS));
    assert!(history
        .iter()
        .all(|ev| ev.kind == shopdb::EventKind::Purchase));
}

/// A sequence file of `users` users whose items are pairs: every user buys pairs `(x, x')`
/// one after the other, `x'` always right after `x`, so a pair's second item is predicted by
/// its first and by nothing else in the history.
fn pairs_file(dir: &Path, users: u64, pairs: u64, per_user: u64) -> std::path::PathBuf {
    let mut rng = Rng(11);
    let mut text = String::new();
    for u in 0..users {
        let _ = write!(text, "u{u}");
        let mut used = std::collections::HashSet::new();
        while (used.len() as u64) < per_user {
            let p = rng.below(pairs);
            if used.insert(p) {
                let _ = write!(text, " a{p} b{p}");
            }
        }
        text.push('\n');
    }
    write(dir, "pairs.txt", &text)
}

fn loo(on: EvalOn) -> EvalOptions {
    EvalOptions {
        split: SplitKind::LeaveOneOut,
        ks: vec![10],
        on,
        fused: false,
        ..EvalOptions::default()
    }
}

#[test]
fn the_leave_one_out_test_phase_scores_with_the_validation_item_in_the_history() {
    // The test item is the second of a pair whose first item is the validation item: it can
    // only be found with the validation item in the history and in the models.
    let dir = tempdir();
    let e = Engine::builder()
        .dim(4)
        .open(dir.path().join("db"))
        .unwrap();
    let file = pairs_file(dir.path(), 800, 150, 5);
    import::sequences(&e, &file, OnError::Abort).unwrap();
    let test = e.evaluate(&loo(EvalOn::Test)).unwrap();
    println!("test phase:\n{test}");
    assert_eq!(test.users, 800);
    for model in ["item_cf", "user_cf"] {
        let hit = test.get(model, "hit", 10).unwrap();
        // Without the validation item the test item is one of 290 items the user has not
        // bought, drawn at random: a hit rate of about 10 / 290.
        assert!(hit > 0.5, "{model}: test hit@10 {hit}");
    }
    assert_eq!(test.fitted_on, Some(FittedOn::TrainValid));
    // Validation keeps the classic protocol: fitted on the training part only.
    let valid = e.evaluate(&loo(EvalOn::Valid)).unwrap();
    assert_eq!(valid.fitted_on, Some(FittedOn::Train));
    // A validation item is the first of a pair, not predictable from the pairs before it.
    let item_cf_valid = valid.get("item_cf", "hit", 10).unwrap();
    assert!(item_cf_valid < 0.2, "item_cf valid hit@10 {item_cf_valid}");
}

#[test]
fn test_and_validation_agree_when_behaviour_does_not_change_over_time() {
    // Stationary next-item behaviour: each user walks a ring of items of their taste
    // ([`rings`]).
    let dir = tempdir();
    let e = Engine::builder()
        .dim(4)
        .open(dir.path().join("db"))
        .unwrap();
    let file = write(dir.path(), "rings.txt", &rings(1_500, false));
    import::sequences(&e, &file, OnError::Abort).unwrap();
    let test = e.evaluate(&loo(EvalOn::Test)).unwrap();
    let valid = e.evaluate(&loo(EvalOn::Valid)).unwrap();
    println!("test:\n{test}\nvalid:\n{valid}");
    let n = test.users as f64;
    for model in ["item_cf", "user_cf", "mf"] {
        let (t, v) = (
            test.get(model, "hit", 10).unwrap(),
            valid.get(model, "hit", 10).unwrap(),
        );
        // Four standard errors of the difference of two hit rates over n users each.
        let p = (t + v) / 2.0;
        let bound = 4.0 * (2.0 * p * (1.0 - p) / n).sqrt() + 1e-3;
        assert!(
            (t - v).abs() <= bound,
            "{model}: test hit@10 {t}, valid {v}, bound {bound}"
        );
        assert!(t > 0.2, "{model} learned the rings: test hit@10 {t}");
    }
}

/// Ring walks of `users` users, as a sequence file's text: each user walks a ring of 40 items
/// of their taste, one step forward at a time (sometimes two), so the next item follows from
/// the last one in the same way at every position. With `poison`, every user's last item is
/// replaced by an item of another taste, which the user never bought.
fn rings(users: u64, poison: bool) -> String {
    let (tastes, ring) = (6u64, 40u64);
    let mut rng = Rng(5);
    let mut text = String::new();
    for u in 0..users {
        let taste = u % tastes;
        let mut pos = rng.below(ring);
        let mut items = Vec::new();
        for _ in 0..8 {
            items.push(format!("t{taste}_{pos}"));
            pos = (pos + 1 + rng.below(4) / 3) % ring;
        }
        if poison {
            let other = (taste + 3) % tastes;
            if let Some(last) = items.last_mut() {
                *last = format!("t{other}_{}", u % ring);
            }
        }
        let _ = writeln!(text, "u{u} {}", items.join(" "));
    }
    text
}

#[test]
fn tuning_never_reads_the_test_part() {
    // The same log twice, the second with every test item replaced: what tuning tries and
    // chooses for the test phase must not change, while the test figures do.
    let dir = tempdir();
    let opts = EvalOptions {
        train: shopdb::TrainOptions {
            mlp: None,
            tune: Some(shopdb::TuneOptions {
                // Large enough that every planned setting is tried on any machine.
                budget: std::time::Duration::from_secs(3_600),
                sequence_budget: std::time::Duration::from_secs(3_600),
                ..shopdb::TuneOptions::default()
            }),
            // The sequence model's race of settings is tuning too.
            sequence: Some(shopdb::SeqConfig {
                dim: 8,
                max_len: 8,
                negatives: 8,
                batch_size: 32,
                max_epochs: 20,
                eval_every: 2,
                threads: 1,
                ..shopdb::SeqConfig::default()
            }),
            ..shopdb::TrainOptions::default()
        },
        ..loo(EvalOn::Test)
    };
    let mut reports = Vec::new();
    for (name, poison) in [("clean", false), ("poisoned", true)] {
        let e = Engine::builder()
            .dim(4)
            .open(dir.path().join(name))
            .unwrap();
        let file = write(dir.path(), &format!("{name}.txt"), &rings(600, poison));
        import::sequences(&e, &file, OnError::Abort).unwrap();
        reports.push((e.stats().products, e.evaluate(&opts).unwrap()));
    }
    let (clean, poisoned) = (&reports[0], &reports[1]);
    assert_eq!(clean.0, poisoned.0, "the same catalog");
    let (a, b) = (
        clean.1.tuning.as_ref().unwrap(),
        poisoned.1.tuning.as_ref().unwrap(),
    );
    assert!(!a.budget_exhausted && a.trials.len() > 10, "{a:?}");
    let raced = a.trials.iter().filter(|t| t.model == "sequence").count();
    assert_eq!(raced, 3, "the configured dropout and two lower ones: {a:?}");
    assert!(a.chosen("sequence").is_some(), "{a:?}");
    assert_eq!(a.chosen, b.chosen);
    let rated = |r: &shopdb::TuneReport| -> Vec<(String, String, f64)> {
        r.trials
            .iter()
            .map(|t| (t.model.clone(), t.setting.clone(), t.ndcg))
            .collect()
    };
    assert_eq!(rated(a), rated(b));
    let (c, p) = (
        clean.1.get("item_cf", "ndcg", 10).unwrap(),
        poisoned.1.get("item_cf", "ndcg", 10).unwrap(),
    );
    assert!(c > 0.1 && p < c / 4.0, "test ndcg clean {c}, poisoned {p}");
}

/// The sequence channel inside the engine: trained by `TRAIN` when asked, it learns an order
/// that co-occurrence cannot see (each shopper walks a ring of items in one direction), is
/// served from the live history, explains itself by a recent item and survives a reopen.
#[test]
fn the_sequence_channel_learns_order_and_serves_the_live_history() {
    use shopdb::{Channel, Event, EventKind, Product, Query, SeqConfig, TrainOptions};
    let dir = tempdir();
    let ring = 12u64;
    let opts = TrainOptions {
        sequence: Some(SeqConfig {
            dim: 16,
            max_len: 8,
            negatives: 8,
            dropout: 0.1,
            batch_size: 32,
            max_epochs: 60,
            eval_every: 5,
            patience: 3,
            threads: 1,
            ..SeqConfig::default()
        }),
        tune: None,
        mlp: None,
        ..TrainOptions::default()
    };
    {
        let e = Engine::open(dir.path()).unwrap();
        e.upsert_products(
            (0..ring)
                .map(|i| Product::new(format!("r{i}")).title(format!("item {i}")))
                .collect(),
        )
        .unwrap();
        let mut rng = Rng(11);
        let mut events = Vec::new();
        for u in 0..150u64 {
            let start = rng.below(ring);
            for j in 0..6 {
                events.push(Event::new(
                    format!("u{u}"),
                    format!("r{}", (start + j) % ring),
                    EventKind::Purchase,
                    1_700_000_000 + (u * 100 + j) as i64,
                ));
            }
        }
        e.append_events(events).unwrap();
        e.commit().unwrap();
        let report = e.train(&opts).unwrap();
        let epochs = report
            .sequence_epochs
            .expect("the report names the sequence fit");
        assert!(
            (1..=60).contains(&epochs) && epochs.is_multiple_of(5),
            "epochs {epochs} are a rated epoch within max_epochs"
        );
        assert!(report.to_string().contains("sequence model: "));
    }
    let e = Engine::open(dir.path()).unwrap();
    // A new shopper's first two purchases, after training: the next item of the ring should
    // come first from the sequence channel.
    let mut right = 0;
    for start in 0..ring {
        let user = format!("new{start}");
        for j in 0..2 {
            e.append_event(Event::new(
                user.clone(),
                format!("r{}", (start + j) % ring),
                EventKind::Purchase,
                1_750_000_000 + j as i64,
            ))
            .unwrap();
        }
        e.commit().unwrap();
        let hits = e
            .query(&Query::new().user(&user).k(3).explain(true))
            .unwrap();
        let want = format!("r{}", (start + 2) % ring);
        let seq_top = hits
            .iter()
            .filter_map(|h| {
                let ex = h.explanation.as_ref()?;
                let part = ex
                    .channels
                    .iter()
                    .find(|c| c.channel == Channel::Sequence)?;
                Some((part.rank, h.id.clone(), part.because_of.clone()))
            })
            .min();
        if let Some((1, id, because)) = seq_top {
            if id == want {
                right += 1;
                assert!(
                    because.is_some(),
                    "the sequence channel names a recent item"
                );
            }
        }
    }
    assert!(
        right * 4 >= ring * 3,
        "next ring item first for {right} of {ring}"
    );
}

/// A training cancelled through its token, before it starts or while the sequence model
/// trains, fails with `Cancelled` and leaves the previous generation serving, also after a
/// reopen.
#[test]
fn a_cancelled_training_leaves_the_previous_generation_serving() {
    use shopdb::{CancelToken, Event, EventKind, Product, Query, SeqConfig, TrainOptions};
    let dir = tempdir();
    let e = Engine::open(dir.path()).unwrap();
    e.upsert_products(
        (0..40)
            .map(|i| Product::new(format!("p{i}")).title(format!("item {i}")))
            .collect(),
    )
    .unwrap();
    let mut rng = Rng(5);
    let events = (0..600u64)
        .map(|n| {
            Event::new(
                format!("u{}", n % 60),
                format!("p{}", rng.below(40)),
                EventKind::Purchase,
                1_700_000_000 + n as i64,
            )
        })
        .collect();
    e.append_events(events).unwrap();
    e.commit().unwrap();
    let first = e.train(&TrainOptions::default()).unwrap();
    let before = e.query(&Query::new().user("u1").k(5)).unwrap();
    assert!(!before.is_empty());

    // Cancelled before it starts.
    let token = CancelToken::new();
    token.cancel();
    let opts = TrainOptions {
        cancel: Some(token.clone()),
        ..TrainOptions::default()
    };
    let err = e.train(&opts).unwrap_err();
    assert!(matches!(err, shopdb::Error::Cancelled), "{err:?}");
    assert_eq!(e.model_generation(), first.generation);

    // Cancelled from another thread while a sequence model with far more epochs than it can
    // finish trains (patience is never reached: every epoch is rated and the bar is high).
    token.reset();
    let opts = TrainOptions {
        sequence: Some(SeqConfig {
            dim: 16,
            max_len: 8,
            negatives: 8,
            max_epochs: 1_000_000,
            eval_every: 1_000_000,
            threads: 1,
            ..SeqConfig::default()
        }),
        tune: None,
        cancel: Some(token.clone()),
        ..TrainOptions::default()
    };
    let canceller = {
        let token = token.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            token.cancel();
        })
    };
    let err = e.train(&opts).unwrap_err();
    canceller.join().unwrap();
    assert!(matches!(err, shopdb::Error::Cancelled), "{err:?}");
    assert_eq!(e.model_generation(), first.generation);
    let after = e.query(&Query::new().user("u1").k(5)).unwrap();
    let ids = |h: &[shopdb::Hit]| h.iter().map(|h| h.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&after), ids(&before));
    drop(e);
    let e = Engine::open(dir.path()).unwrap();
    assert_eq!(e.model_generation(), first.generation);
    assert_eq!(
        ids(&e.query(&Query::new().user("u1").k(5)).unwrap()),
        ids(&before)
    );
}
