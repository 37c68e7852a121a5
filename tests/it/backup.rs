//! Backups and read replicas: an online backup taken while a writer keeps committing holds
//! every write acknowledged before it started, opens read-only (in several processes at
//! once, writing nothing), is refused when damaged, and restores as a database.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use shopdb::{Engine, Error, Event, EventKind, Filter, Product, Query, TrainOptions};

use super::support::{tempdir, vector};

const DIM: usize = 8;

fn product(i: u64) -> Product {
    Product::new(format!("p{i}"))
        .title(format!("tok{i} backup item"))
        .brand(format!("b{}", i % 5))
        .category(format!("c{}", i % 7))
        .embedding(vector(i, DIM))
}

fn event(i: u64) -> Event {
    Event::new(
        format!("u{}", i % 9),
        format!("p{i}"),
        EventKind::Purchase,
        1_700_000_000 + i as i64,
    )
}

/// Every file under `dir` with its bytes, sorted by path.
fn files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    fn walk(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<(String, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap().display().to_string();
                out.push((rel, std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for (rel, bytes) in files(from) {
        let p = to.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
}

/// Every product up to `max` is in the engine, found by id, text and vector, with its event.
fn holds(e: &Engine, max: u64, at: &str) {
    for i in 0..=max {
        let id = format!("p{i}");
        assert!(e.get_product(&id).unwrap().is_some(), "{at}: {id} lost");
        let text = e.search_text(&format!("tok{i}"), &Filter::All, 1).unwrap();
        assert_eq!(text[0].id, id, "{at}: {id} not found by text");
        let near = e.search_vector_exact(&vector(i, DIM), 1).unwrap();
        assert_eq!(near[0].id, id, "{at}: {id} not in the vector index");
        assert_eq!(e.item_events(&id).unwrap().len(), 1, "{at}: event of {id}");
    }
}

#[test]
fn a_backup_under_writes_holds_every_acknowledged_write_and_serves_read_only() {
    let tmp = tempdir();
    let (db, dest) = (tmp.path().join("db"), tmp.path().join("backup"));
    let e = Arc::new(Engine::builder().dim(DIM).open(&db).unwrap());
    e.upsert_products((0..200).map(product).collect()).unwrap();
    e.append_events((0..200).map(event).collect()).unwrap();
    e.commit().unwrap();
    e.train(&TrainOptions {
        mlp: None,
        ..TrainOptions::default()
    })
    .unwrap();

    // A writer commits one product and its event at a time; `acked` is the last one whose
    // commit returned.
    let acked = Arc::new(AtomicU64::new(199));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (e, acked, stop) = (e.clone(), acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 200;
            while !stop.load(Ordering::SeqCst) {
                e.upsert_product(product(i)).unwrap();
                e.append_event(event(i)).unwrap();
                e.commit().unwrap();
                acked.store(i, Ordering::SeqCst);
                i += 1;
            }
        })
    };
    while acked.load(Ordering::SeqCst) < 260 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let before = acked.load(Ordering::SeqCst);
    let report = e.backup(&dest).unwrap();
    let during = acked.load(Ordering::SeqCst);
    while acked.load(Ordering::SeqCst) < during + 20 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    println!(
        "backup under writes: sequence {} ({} files, {} bytes) in {:.3} s, commits waited {:.3} s; \
         acknowledged before it p{before}, while it ran up to p{during}",
        report.seq, report.files, report.bytes, report.seconds, report.capture_seconds
    );
    assert!(!tmp.path().join("backup.partial").exists());

    let served = files(&dest);
    let replica = Engine::open_read_only(&dest).unwrap();
    assert!(replica.is_read_only());
    holds(&replica, before, "replica");
    assert_eq!(replica.seq(), report.seq);
    let s = replica.stats();
    assert_eq!(s.products as u64, s.text_docs);
    assert_eq!(s.products, s.vectors);
    assert!(s.products as u64 > before);
    assert_eq!(replica.model_generation(), e.model_generation());
    let recs = replica.query(&Query::new().user("u3").k(5)).unwrap();
    assert_eq!(recs.len(), 5);
    // Two replicas of one backup at once; neither takes a lock.
    let second = Engine::open_read_only(&dest).unwrap();
    assert_eq!(second.stats().products, s.products);

    // Writes of every kind are refused, and nothing changed.
    for refused in [
        replica.upsert_product(product(1)).err(),
        replica.append_event(event(1)).err(),
        replica.forget_user("u1").err(),
        replica.train(&TrainOptions::default()).err(),
        replica.compact().err(),
        replica.checkpoint().err(),
        replica.backup(tmp.path().join("again")).err(),
    ] {
        assert!(matches!(refused, Some(Error::ReadOnly(_))), "{refused:?}");
    }
    drop((replica, second));
    assert_eq!(files(&dest), served, "serving wrote nothing to the backup");

    // Not a backup, or a backup's directory already there: typed errors.
    assert!(matches!(
        Engine::open_read_only(&db),
        Err(Error::Corrupt { .. })
    ));
    assert!(matches!(e.backup(&dest), Err(Error::Invalid { .. })));
    assert!(matches!(
        e.backup(db.join("inside")),
        Err(Error::Invalid { .. })
    ));

    // Restored by opening a copy as a database: every write, and writable.
    let restored = tmp.path().join("restored");
    copy_dir(&dest, &restored);
    let r = Engine::open(&restored).unwrap();
    holds(&r, before, "restored");
    assert!(!restored.join("BACKUP.json").exists());
    r.upsert_product(product(100_000)).unwrap();
    r.commit().unwrap();
    drop(r);
    let r = Engine::open(&restored).unwrap();
    assert!(r.get_product("p100000").unwrap().is_some());
}

#[test]
fn a_damaged_or_partial_backup_is_refused() {
    let tmp = tempdir();
    let (db, dest) = (tmp.path().join("db"), tmp.path().join("backup"));
    let e = Engine::builder().dim(DIM).open(&db).unwrap();
    e.upsert_products((0..50).map(product).collect()).unwrap();
    e.append_events((0..50).map(event).collect()).unwrap();
    e.commit().unwrap();
    e.backup(&dest).unwrap();
    let damage = |name: &str, f: &dyn Fn(&std::path::Path)| {
        let copy = tmp.path().join(format!("damaged-{name}"));
        copy_dir(&dest, &copy);
        f(&copy);
        for open in [
            Engine::open_read_only(&copy).err(),
            Engine::open(&copy).err(),
        ] {
            assert!(
                matches!(open, Some(Error::Corrupt { .. }) | Some(Error::Io { .. })),
                "{name}: {open:?}"
            );
        }
    };
    damage("dump byte", &|d| {
        let p = d.join("store.dump");
        let mut b = std::fs::read(&p).unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 0x40;
        std::fs::write(p, b).unwrap();
    });
    damage("dump truncated", &|d| {
        let p = d.join("store.dump");
        let b = std::fs::read(&p).unwrap();
        std::fs::write(p, &b[..b.len() - 3]).unwrap();
    });
    damage("text file gone", &|d| {
        let text = d.join("text");
        let victim = std::fs::read_dir(&text)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "idx"))
            .unwrap();
        std::fs::remove_file(victim).unwrap();
    });
    damage("manifest cut", &|d| {
        let p = d.join("BACKUP.json");
        let b = std::fs::read(&p).unwrap();
        std::fs::write(p, &b[..b.len() / 2]).unwrap();
    });
    // A backup interrupted before its rename is only a `.partial` directory, which is not
    // taken for a backup (it has no manifest until the end) and is replaced by the next one.
    let partial = tmp.path().join("next.partial");
    std::fs::create_dir_all(partial.join("text")).unwrap();
    std::fs::write(partial.join("store.dump"), b"half").unwrap();
    assert!(Engine::open_read_only(&partial).is_err());
    // One killed after its manifest was written but before the rename holds a whole copy;
    // it is still not taken for a backup, read-only or restored.
    let whole = tmp.path().join("whole.partial");
    copy_dir(&dest, &whole);
    for open in [
        Engine::open_read_only(&whole).err(),
        Engine::open(&whole).err(),
    ] {
        assert!(
            matches!(&open, Some(Error::Corrupt { reason, .. }) if reason.contains("interrupted backup")),
            "{open:?}"
        );
    }
    e.backup(tmp.path().join("next")).unwrap();
    assert!(!partial.exists());
    assert_eq!(
        Engine::open_read_only(tmp.path().join("next"))
            .unwrap()
            .stats()
            .products,
        50
    );
}

#[test]
fn several_shell_processes_serve_one_backup_and_refuse_writes() {
    use super::cli::{shopdb, Scratch, SEED};
    let s = Scratch::new();
    s.sql(SEED).ok();
    let said = s.sql("BACKUP TO 'snap'").ok().stdout;
    assert!(said.contains("backed up sequence"), "{said}");
    let dir = s.path().to_path_buf();
    let serve = || {
        let dir = dir.clone();
        std::thread::spawn(move || {
            shopdb(
                &dir,
                &[
                    "snap",
                    "--read-only",
                    "--csv",
                    "-c",
                    "SELECT id FROM search('running shoe') ORDER BY id",
                ],
                None,
            )
        })
    };
    let (a, b) = (serve(), serve());
    for out in [a.join().unwrap(), b.join().unwrap()] {
        assert_eq!(out.ok().stdout.trim(), "id\np1\np2\np3");
    }
    let write = shopdb(
        s.path(),
        &[
            "snap",
            "--read-only",
            "-c",
            "DELETE FROM products WHERE id = 'p1'",
        ],
        None,
    );
    assert_ne!(write.code, 0);
    assert!(write.stderr.contains("read-only"), "{}", write.stderr);
}

#[test]
fn a_replica_of_a_pseudonymous_database_needs_its_key() {
    let tmp = tempdir();
    let key = b"0123456789abcdef-replica-key";
    let (db, dest) = (tmp.path().join("db"), tmp.path().join("backup"));
    let e = Engine::builder().dim(DIM).user_key(key).open(&db).unwrap();
    e.upsert_products((0..5).map(product).collect()).unwrap();
    e.append_events((0..5).map(event).collect()).unwrap();
    e.commit().unwrap();
    e.backup(&dest).unwrap();
    assert!(matches!(
        Engine::open_read_only(&dest).err(),
        Some(Error::UserKey(shopdb::KeyProblem::Missing))
    ));
    let replica = Engine::builder()
        .user_key(key)
        .read_only(true)
        .open(&dest)
        .unwrap();
    assert_eq!(replica.user_history("u3", None).unwrap().len(), 1);
}
