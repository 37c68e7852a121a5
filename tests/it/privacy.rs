//! Privacy a shop can switch on: user ids stored only as keyed hashes (pseudonymous users)
//! and a retention policy for old behaviour data; both leave no byte of what they hide in
//! any file of the directory.

use shopdb::{Engine, Error, KeyProblem, Query};

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
