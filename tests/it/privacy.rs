//! Privacy a shop can switch on: user ids stored only as keyed hashes (pseudonymous users)
//! and a retention policy for old behaviour data; both leave no byte of what they hide in
//! any file of the directory.

use shopdb::{Engine, Error, Event, EventKind, KeyProblem, Query, Retention, TrainOptions};

use super::models::{generated_shop, marker_occurrences, shop_with_marker};
use super::support::tempdir;

const KEY: &[u8] = b"0123456789abcdef-shop-secret";

/// Bytes of `marker` left in every file under `dir`, and the files holding it.
fn marker_bytes(dir: &std::path::Path, marker: &[u8]) -> (usize, Vec<String>) {
    let mut found = Vec::new();
    marker_occurrences(dir, marker, &mut found);
    let files: Vec<String> = found
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(f, _)| f.clone())
        .collect();
    (found.iter().map(|(_, n)| n * marker.len()).sum(), files)
}

#[test]
fn pseudonymous_user_ids_reach_no_file_and_the_user_is_still_served() {
    let dir = tempdir();
    let marker = "zq-pseudonymous-4c2e91b7";
    let ids = |hits: Vec<shopdb::Hit>| hits.into_iter().map(|h| h.id).collect::<Vec<_>>();
    let personal;
    {
        let e = Engine::builder()
            .dim(8)
            .user_key(KEY)
            .open(dir.path())
            .unwrap();
        shop_with_marker(&e, marker);
        personal = ids(e.query(&Query::new().user(marker).k(10)).unwrap());
        let cold = ids(e.query(&Query::new().user("never-seen").k(10)).unwrap());
        assert_ne!(personal, cold, "the marker's history shapes their list");
        assert_eq!(e.user_history(marker, None).unwrap().len(), 8);
        assert!(e.user_ids().contains(&marker.to_string()));
        e.compact().unwrap();
    }
    let (left, files) = marker_bytes(dir.path(), marker.as_bytes());
    println!("pseudonymous users: bytes of the marker id in the directory after commit, train and compaction: {left}");
    assert_eq!(left, 0, "{files:?}");
    // Nor is the key stored.
    let (key_left, files) = marker_bytes(dir.path(), KEY);
    assert_eq!(key_left, 0, "{files:?}");

    // Reopened with the key: the same user, the same list. An id this process has not been
    // given is listed as its pseudonym, which every API takes back.
    let e = Engine::builder().user_key(KEY).open(dir.path()).unwrap();
    let listed = e.user_ids();
    assert!(!listed.contains(&marker.to_string()));
    assert!(
        listed.iter().all(|u| u.starts_with("pseudonym:")),
        "{listed:?}"
    );
    assert_eq!(
        ids(e.query(&Query::new().user(marker).k(10)).unwrap()),
        personal
    );
    assert!(
        e.user_ids().contains(&marker.to_string()),
        "seen ids are shown"
    );
    let other = listed
        .iter()
        .find(|u| e.user_history(u, None).is_ok_and(|h| h.len() == 10))
        .expect("a generated user, by pseudonym");
    let history = e.user_history(other, None).unwrap();
    assert!(history.iter().all(|ev| &ev.user == other));
    let item_users = e.item_events(&history[0].item).unwrap();
    assert!(item_users.iter().any(|(u, _)| u == other));

    // Forgetting works by id; the user is gone, now and after reopening.
    e.forget_user(marker).unwrap();
    e.commit().unwrap();
    assert!(matches!(
        e.user_history(marker, None),
        Err(Error::UnknownUser(_))
    ));
    assert!(!e.user_ids().contains(&marker.to_string()));
    drop(e);
    let e = Engine::builder().user_key(KEY).open(dir.path()).unwrap();
    assert!(matches!(
        e.user_history(marker, None),
        Err(Error::UnknownUser(_))
    ));
}

#[test]
fn wrong_missing_short_and_unexpected_user_keys_are_typed_errors() {
    let dir = tempdir();
    {
        let e = Engine::builder()
            .dim(8)
            .user_key(KEY)
            .open(dir.path())
            .unwrap();
        generated_shop(&e, 5, 30, 3);
    }
    let open = |b: shopdb::EngineBuilder| b.open(dir.path()).err();
    assert!(matches!(
        open(Engine::builder()),
        Some(Error::UserKey(KeyProblem::Missing))
    ));
    assert!(matches!(
        open(Engine::builder().user_key(b"0123456789abcdef-another-key")),
        Some(Error::UserKey(KeyProblem::Wrong))
    ));
    for short in [&b""[..], b"0123456789abcde"] {
        assert!(
            matches!(
                open(Engine::builder().user_key(short)),
                Some(Error::Invalid {
                    field: "user_key",
                    ..
                })
            ),
            "{short:?}"
        );
    }
    // The failed opens changed nothing: the right key still opens every user.
    let e = Engine::builder().user_key(KEY).open(dir.path()).unwrap();
    assert_eq!(e.user_ids().len(), 5);
    drop(e);

    // A database created without a key keeps ids as they are; a key cannot be added later.
    let plain = tempdir();
    drop(Engine::builder().dim(8).open(plain.path()).unwrap());
    assert!(matches!(
        Engine::builder().user_key(KEY).open(plain.path()).err(),
        Some(Error::UserKey(KeyProblem::NotPseudonymous))
    ));
    // An empty key on a new directory creates nothing usable.
    let fresh = tempdir();
    assert!(matches!(
        Engine::builder().user_key(b"").open(fresh.path()).err(),
        Some(Error::Invalid { .. })
    ));
    assert!(!fresh.path().join("config.json").exists());
}

#[test]
fn the_shell_takes_the_user_key_from_a_file() {
    use super::cli::{shopdb, SEED};
    let tmp = tempdir();
    std::fs::write(tmp.path().join("user.key"), b"0123456789abcdef-cli-key\n").unwrap();
    let keyed = ["db", "--dim", "4", "--user-key-file", "user.key", "--csv"];
    let with_key = |sql: &str| {
        let mut args = keyed.to_vec();
        args.extend(["-c", sql]);
        shopdb(tmp.path(), &args, None)
    };
    with_key(SEED).ok();
    let rows = with_key("SELECT user_id, item_id FROM events WHERE user_id = 'u2' ORDER BY ts")
        .ok()
        .stdout;
    assert_eq!(rows.trim(), "user_id,item_id\nu2,p2\nu2,p4", "{rows}");
    let missing = shopdb(tmp.path(), &["db", "-c", "SHOW STATS"], None);
    assert_ne!(missing.code, 0);
    assert!(
        missing.stderr.contains("user key"),
        "stderr: {}",
        missing.stderr
    );
    std::fs::write(tmp.path().join("short.key"), b"short\n").unwrap();
    let short = shopdb(
        tmp.path(),
        &["db", "--user-key-file", "short.key", "-c", "SHOW STATS"],
        None,
    );
    assert_ne!(short.code, 0);
    assert!(short.stderr.contains("user_key"), "{}", short.stderr);
}

/// The byte forms a timestamp may take in a file: big- and little-endian `i64`, bincode's
/// variable-length form (a 0xFC tag and the zigzag value as a little-endian `u32`), decimal.
fn ts_forms(ts: i64) -> Vec<Vec<u8>> {
    let zigzag = (ts as u64) << 1;
    let mut varint = vec![0xFC];
    varint.extend_from_slice(&(zigzag as u32).to_le_bytes());
    vec![
        ts.to_be_bytes().to_vec(),
        ts.to_le_bytes().to_vec(),
        varint,
        ts.to_string().into_bytes(),
    ]
}

fn ts_bytes(dir: &std::path::Path, ts: i64) -> (usize, Vec<String>) {
    let mut total = 0;
    let mut files = Vec::new();
    for form in ts_forms(ts) {
        let (n, f) = marker_bytes(dir, &form);
        total += n;
        files.extend(f);
    }
    (total, files)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn retention_drops_old_and_surplus_events_and_leaves_no_byte_of_them() {
    let dir = tempdir();
    let e = Engine::builder().dim(8).open(dir.path()).unwrap();
    let now = now();
    const DAY: i64 = 86_400;
    // Markers: an event 400 days old (the age rule drops it) and the oldest of six recent
    // events of one user (keeping four drops two). Odd seconds make the timestamps unique.
    let old = now - 400 * DAY - 4_321;
    let surplus = [now - 10 * DAY - 777, now - 9 * DAY - 555];
    let products = (0..30)
        .map(|i| shopdb::Product::new(format!("i{i}")).title(format!("item {i}")))
        .collect();
    e.upsert_products(products).unwrap();
    let mut events = vec![Event::new("keeper", "i0", EventKind::Purchase, old)];
    events.extend(
        (1..4).map(|i| Event::new("keeper", format!("i{i}"), EventKind::View, now - i * 3_600)),
    );
    events.extend(
        surplus
            .iter()
            .enumerate()
            .map(|(i, &ts)| Event::new("busy", format!("i{}", 10 + i), EventKind::Click, ts)),
    );
    events.extend((0..4).map(|i| {
        Event::new(
            "busy",
            format!("i{}", 20 + i),
            EventKind::Click,
            now - DAY * (4 - i),
        )
    }));
    for u in 0..20 {
        events.extend((0..3).map(|j| {
            Event::new(
                format!("u{u}"),
                format!("i{}", (u + 7 * j) % 30),
                EventKind::View,
                now - (u * 3 + j) * 60,
            )
        }));
    }
    e.append_events(events).unwrap();
    e.commit().unwrap();
    e.train(&TrainOptions::default()).unwrap();
    let markers = [old, surplus[0], surplus[1]];
    for ts in markers {
        let (n, _) = ts_bytes(dir.path(), ts);
        assert!(n > 0, "the marker {ts} is found while its event is stored");
    }
    let events_before = e.stats().events;

    // Bad policies are refused and change nothing.
    for bad in [
        Retention::default(),
        Retention::default().max_age_days(0),
        Retention::default().max_events_per_user(0),
    ] {
        assert!(
            matches!(e.set_retention(Some(bad)), Err(Error::Invalid { .. })),
            "{bad:?}"
        );
    }
    assert_eq!(e.retention(), None);

    let policy = Retention::default()
        .max_age_days(365)
        .max_events_per_user(4);
    e.set_retention(Some(policy)).unwrap();
    let committed = e.commit().unwrap();
    assert_eq!(
        committed.expired_events, 3,
        "one old event, two beyond four"
    );
    assert_eq!(e.stats().events, events_before - 3);
    let keeper: Vec<i64> = e
        .user_history("keeper", None)
        .unwrap()
        .iter()
        .map(|ev| ev.ts)
        .collect();
    assert_eq!(keeper.len(), 3);
    assert!(!keeper.contains(&old));
    let busy: Vec<String> = e
        .user_history("busy", None)
        .unwrap()
        .into_iter()
        .map(|ev| ev.item)
        .collect();
    assert_eq!(busy, ["i20", "i21", "i22", "i23"], "the newest four");
    assert!(e
        .item_events("i0")
        .unwrap()
        .iter()
        .all(|(u, _)| u != "keeper"));
    assert!(e
        .item_events("i10")
        .unwrap()
        .iter()
        .all(|(u, _)| u != "busy"));

    e.train(&TrainOptions::default()).unwrap();
    e.compact().unwrap();
    for ts in markers {
        let (n, files) = ts_bytes(dir.path(), ts);
        println!("retention: bytes of dropped event {ts} left after compaction: {n}");
        assert_eq!(n, 0, "{files:?}");
    }
    // The engine still serves, and the policy is stored: after reopening, a new event older
    // than a year is dropped by the commit that brings it and never stored.
    assert_eq!(e.query(&Query::new().user("busy").k(5)).unwrap().len(), 5);
    drop(e);
    let e = Engine::open(dir.path()).unwrap();
    assert_eq!(e.retention(), Some(policy));
    e.append_event(Event::new("late", "i5", EventKind::View, old + 1))
        .unwrap();
    e.append_event(Event::new("late", "i6", EventKind::View, now - 60))
        .unwrap();
    let committed = e.commit().unwrap();
    assert_eq!(committed.expired_events, 1);
    assert_eq!(e.user_history("late", None).unwrap().len(), 1);
    // Removing the policy keeps what is left and drops nothing more.
    e.set_retention(None).unwrap();
    e.append_event(Event::new("late", "i7", EventKind::View, old + 2))
        .unwrap();
    assert_eq!(e.commit().unwrap().expired_events, 0);
    assert_eq!(e.retention(), None);
    assert_eq!(e.user_history("late", None).unwrap().len(), 2);
}

#[test]
fn retention_through_the_shell_and_its_bad_inputs() {
    use super::cli::{compact, Scratch};
    let s = Scratch::seeded();
    let docs = s.json(
        "SHOW RETENTION; SET RETENTION (max_events_per_user = 1); SHOW RETENTION; \
         SELECT user_id, item_id FROM events ORDER BY user_id; COMPACT; \
         SET RETENTION (max_age_days = 36500, max_events_per_user = 2); SHOW RETENTION; \
         SET RETENTION OFF; SHOW RETENTION",
    );
    let got: Vec<String> = docs.iter().map(compact).collect();
    assert_eq!(got[0], "", "no policy at first");
    assert!(
        got[1].starts_with(
            "retention policy set: keep each user's newest 1 events; 3 events dropped"
        ),
        "{}",
        got[1]
    );
    assert_eq!(got[2], "NULL,1");
    // u1 keeps its last event (p3 at 1700000200), u2 its last (p4).
    assert_eq!(got[3], "u1,p3; u2,p4");
    assert!(got[4].starts_with("compacted the store"), "{}", got[4]);
    assert!(got[5].contains("0 events dropped"), "{}", got[5]);
    assert_eq!(got[6], "36500,2");
    assert!(got[7].starts_with("retention policy removed"), "{}", got[7]);
    assert_eq!(got[8], "");

    for (bad, says) in [
        (
            "SET RETENTION (max_age_days = 0)",
            "0 would drop every event",
        ),
        (
            "SET RETENTION (max_events_per_user = 0)",
            "0 would drop every event",
        ),
        ("SET RETENTION (max_age_days = 36501)", "a century"),
        (
            "SET RETENTION (max_age_days = -1)",
            "expected a whole number",
        ),
        (
            "SET RETENTION (max_age_days = 1.5)",
            "expected a whole number",
        ),
        ("SET RETENTION (keep = 3)", "expected a rule"),
        ("SET RETENTION", "expected ("),
        ("SET search_path = 'x'", "expected RETENTION after SET"),
    ] {
        let out = s.sql(bad);
        assert_ne!(out.code, 0, "{bad}");
        assert!(out.stderr.contains(says), "{bad}: {}", out.stderr);
    }
    // Nothing was changed by the refused statements.
    assert_eq!(compact(&s.json("SHOW RETENTION")[0]), "");
}
