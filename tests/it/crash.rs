//! The crash matrix: kill -9 a writing child process during each phase of the write path;
//! every acknowledged write must survive and the stores must agree.
//!
//! The child is this test binary run with `--ignored --exact crash::child_writer`; it prints
//! `ACK P <i>` once products `p0..=pi` are committed, `ACK E <i>` once their events are,
//! `ACK M <g>` once model generation `g` is saved, and `OPENING` / `OPEN` around `open`.
//! Phases: product ingest, event ingest, commit, vector snapshot, model save (training),
//! recovery (kills during `open`'s replay), store compaction, compaction under a
//! retention policy (each user keeps their newest [`KEEP`] events), and online backups (each
//! complete backup must open read-only and agree with itself; an interrupted one is only a
//! `.partial` directory, never taken for a backup). `SHOPDB_CRASH_CYCLES`
//! (default 56) is the total number of kills, shared evenly by the phases.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use shopdb::{Engine, Event, EventKind, Filter, HnswParams, Product, Retention, TrainOptions};

use crate::support::{tempdir, vector, Rng};

const DIM: usize = 8;

const PHASES: [&str; 9] = [
    "products",
    "events",
    "commit",
    "snapshot",
    "model",
    "recovery",
    "compact",
    "retention",
    "backup",
];

/// Where the backup phase's backups go: beside the database directory.
fn backups_of(dir: &Path) -> std::path::PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push("-backups");
    dir.with_file_name(name)
}

/// Events per user the retention phase keeps.
const KEEP: u32 = 3;

/// Users the events cycle through.
const USERS: u64 = 5;

fn engine(dir: &Path, phase: &str) -> Engine {
    let snapshot_every = match phase {
        // Never snapshot: every open replays the whole change log into the vector graph.
        "recovery" => 1_000_000,
        _ => 25,
    };
    Engine::builder()
        .dim(DIM)
        .hnsw(HnswParams {
            snapshot_every,
            ..HnswParams::default()
        })
        .open(dir)
        .expect("open")
}

fn product(i: u64) -> Product {
    Product::new(format!("p{i}"))
        .title(format!("tok{i} crash item"))
        .brand("Acme")
        .price(i as f64)
        .embedding(vector(i, DIM))
}

fn event(j: u64) -> Event {
    Event::new(
        format!("u{}", j % USERS),
        format!("p{j}"),
        EventKind::View,
        1_600_000_000 + j as i64,
    )
}

fn say(line: &str) {
    let mut out = std::io::stdout();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

/// Products `from..to` and one event each, committed as the phase wants; acknowledged.
fn write_round(e: &Engine, phase: &str, from: u64, to: u64) {
    match phase {
        "products" => {
            // Large product batches, their events in a commit of their own.
            e.upsert_products((from..to).map(product).collect())
                .unwrap();
            e.commit().unwrap();
            say(&format!("ACK P {}", to - 1));
            e.append_events((from..to).map(event).collect()).unwrap();
            e.commit().unwrap();
        }
        "events" => {
            // One commit per event.
            e.upsert_products((from..to).map(product).collect())
                .unwrap();
            e.commit().unwrap();
            say(&format!("ACK P {}", to - 1));
            for j in from..to {
                e.append_event(event(j)).unwrap();
                e.commit().unwrap();
                say(&format!("ACK E {j}"));
            }
        }
        _ => {
            e.upsert_products((from..to).map(product).collect())
                .unwrap();
            e.append_events((from..to).map(event).collect()).unwrap();
            e.commit().unwrap();
        }
    }
    say(&format!("ACK P {}", to - 1));
    say(&format!("ACK E {}", to - 1));
}

/// What the phase does after a round's commits.
fn after_round(e: &Engine, phase: &str) {
    match phase {
        "snapshot" => e.checkpoint().unwrap(),
        "compact" | "retention" => e.compact().unwrap(),
        "backup" => {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let dest = backups_of(e.dir()).join(format!("b{}-{stamp}", e.product_count()));
            e.backup(dest).unwrap();
        }
        "model" => {
            let options = TrainOptions {
                mlp: None,
                ..TrainOptions::default()
            };
            let report = e.train(&options).unwrap();
            say(&format!("ACK M {}", report.generation));
        }
        _ => {}
    }
}

/// The child: writes and acknowledges until killed.
#[test]
#[ignore = "run by crash::kill_nine_loses_no_acknowledged_write as a child process"]
fn child_writer() {
    let (Some(dir), Ok(phase)) = (
        std::env::var_os("SHOPDB_CRASH_DIR"),
        std::env::var("SHOPDB_CRASH_PHASE"),
    ) else {
        return;
    };
    say("OPENING");
    let started = std::time::Instant::now();
    let e = engine(Path::new(&dir), &phase);
    say(&format!("OPEN {}", started.elapsed().as_micros()));
    if phase == "retention" && e.retention().is_none() {
        e.set_retention(Some(Retention::default().max_events_per_user(KEEP)))
            .unwrap();
        e.commit().unwrap();
    }
    // A killed round may have committed products but not yet their events: add those first
    // (the retention phase commits both at once, and keeps fewer events than products).
    let mut i = e.product_count() as u64;
    let with_events = e.stats().events;
    if with_events < i && phase != "retention" {
        e.append_events((with_events..i).map(event).collect())
            .unwrap();
        e.commit().unwrap();
        say(&format!("ACK E {}", i - 1));
    }
    let mut round = 0u64;
    loop {
        let n = match phase.as_str() {
            "products" | "recovery" => 40,
            "events" => 5,
            _ => 1 + round % 3,
        };
        write_round(&e, &phase, i, i + n);
        after_round(&e, &phase);
        i += n;
        round += 1;
    }
}

/// The highest acknowledgements seen so far, and where the kills landed.
#[derive(Default, Debug)]
struct Acked {
    products: Option<u64>,
    events: Option<u64>,
    model: u64,
    killed_while_opening: usize,
    /// How long the last child's `open` took, in microseconds.
    last_open_us: u64,
}

/// When to kill the child.
enum Kill {
    /// This long after its `open` returned.
    After(Duration),
    /// This far into `open` (from the child's `OPENING`).
    IntoOpen(Duration),
}

/// Runs one child, kills it with SIGKILL, and folds its acknowledgements in.
fn run_and_kill(dir: &Path, phase: &str, kill: Kill, acked: &mut Acked) {
    let mut child = crate::support::child_test("crash::child_writer", "SHOPDB_CRASH_DIR", dir)
        .env("SHOPDB_CRASH_PHASE", phase)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    // Waits for the child's line that ends with (or, for `OPEN <us>`, starts with) `mark`;
    // the test harness may print its own words before ours on the first line.
    let mut wait_for = |mark: &str| {
        let give_up = std::time::Instant::now() + Duration::from_secs(60);
        while let Ok(line) =
            rx.recv_timeout(give_up.saturating_duration_since(std::time::Instant::now()))
        {
            let found = line.ends_with(mark) || line.starts_with(mark);
            lines.push(line);
            if found {
                break;
            }
        }
    };
    match kill {
        // Timed from the end of `open`, so that a loaded machine still leaves time to write.
        Kill::After(_) => wait_for("OPEN "),
        Kill::IntoOpen(_) => wait_for("OPENING"),
    }
    match kill {
        Kill::After(delay) | Kill::IntoOpen(delay) => std::thread::sleep(delay),
    }
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap();
    lines.extend(rx.try_iter());
    let max = |a: Option<u64>, n: u64| Some(a.map_or(n, |a| a.max(n)));
    for line in &lines {
        let mut parts = line.split(' ');
        let (Some("ACK"), Some(what), Some(n)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        match what {
            "P" => acked.products = max(acked.products, n),
            "E" => acked.events = max(acked.events, n),
            "M" => acked.model = acked.model.max(n),
            _ => {}
        }
    }
    let opened = lines.iter().find_map(|l| l.strip_prefix("OPEN "));
    match opened.and_then(|us| us.parse().ok()) {
        Some(us) => acked.last_open_us = us,
        None if lines.iter().any(|l| l.ends_with("OPENING")) => acked.killed_while_opening += 1,
        None => {}
    }
}

/// Reopens after a kill and checks every acknowledged write and the stores' agreement.
fn check(dir: &Path, phase: &str, cycle: usize, acked: &Acked, ann_misses: &mut usize) {
    let at = format!(
        "{phase} cycle {cycle} (kills during open so far: {})",
        acked.killed_while_opening
    );
    let e = Engine::builder()
        .dim(DIM)
        .open(dir)
        .unwrap_or_else(|err| panic!("{at}: reopening failed: {err:?}"));
    let s = e.stats();
    if let Some(max) = acked.products {
        for i in 0..=max {
            let id = format!("p{i}");
            assert!(
                e.get_product(&id).unwrap().is_some(),
                "{at}: acknowledged {id} lost"
            );
            let text = e.search_text(&format!("tok{i}"), &Filter::All, 1).unwrap();
            assert_eq!(
                text.first().map(|h| h.id.as_str()),
                Some(id.as_str()),
                "{at}: {id} not found by text"
            );
            // The vector index holds it (exact scan: its own vector is at distance 0) ...
            let exact = e.search_vector_exact(&vector(i, DIM), 1).unwrap();
            assert_eq!(
                exact.first().map(|h| h.id.as_str()),
                Some(id.as_str()),
                "{at}: {id} not in the vector index"
            );
            // ... and the graph search normally finds it (approximate: misses are counted).
            let near = e.search_vector(&vector(i, DIM), &Filter::All, 10).unwrap();
            if !near.iter().any(|h| h.id == id) {
                *ann_misses += 1;
            }
        }
        assert!(s.products as u64 > max, "{at}: {s:?}, acked up to p{max}");
    }
    if phase == "retention" {
        check_retention(&e, &at, acked);
        return;
    }
    if phase == "backup" {
        check_backups(dir, &at);
    }
    if let Some(max) = acked.events {
        for j in 0..=max {
            let users = e.item_events(&format!("p{j}")).unwrap();
            assert_eq!(
                users.len(),
                1,
                "{at}: acknowledged event of p{j}: {users:?}"
            );
        }
    }
    assert!(
        e.model_generation() >= acked.model,
        "{at}: model generation {} < acknowledged {}",
        e.model_generation(),
        acked.model
    );
    assert_eq!(e.recovery().model_error, None, "{at}");
    assert_eq!(
        s.products as u64, s.text_docs,
        "{at}: catalog and text disagree: {s:?}"
    );
    assert_eq!(
        s.products, s.vectors,
        "{at}: catalog and vectors disagree: {s:?}"
    );
    assert!(s.events <= s.products as u64, "{at}: {s:?}");
    // One sequence number per product and per event: no gaps, nothing applied twice.
    assert_eq!(
        s.seq,
        s.products as u64 + s.events,
        "{at}: sequence gap: {s:?}"
    );
}

/// The retention phase: products and their events commit together, so the committed
/// events are exactly those of the committed products, and each user holds the newest
/// [`KEEP`] of theirs; the policy itself survives every kill.
fn check_retention(e: &Engine, at: &str, acked: &Acked) {
    let s = e.stats();
    let n = s.products as u64;
    if n > 0 {
        assert_eq!(
            e.retention(),
            Some(Retention::default().max_events_per_user(KEEP)),
            "{at}: the policy was lost"
        );
    }
    let kept_from = n.saturating_sub(USERS * u64::from(KEEP));
    for j in 0..n {
        let users = e.item_events(&format!("p{j}")).unwrap();
        let expected = usize::from(j >= kept_from);
        assert_eq!(
            users.len(),
            expected,
            "{at}: event of p{j} of {n} (acknowledged up to {:?}): {users:?}",
            acked.events
        );
    }
    if let Some(max) = acked.events {
        assert!(n > max, "{at}: acknowledged event of p{max} lost");
    }
    assert_eq!(s.events, n - kept_from, "{at}: {s:?}");
    assert_eq!(s.products as u64, s.text_docs, "{at}: {s:?}");
    assert_eq!(s.products, s.vectors, "{at}: {s:?}");
    // One sequence number per product, per event (a dropped one used its number) and for
    // the policy.
    let policy = u64::from(e.retention().is_some());
    assert_eq!(s.seq, 2 * n + policy, "{at}: sequence gap: {s:?}");
}

/// Backups checked so far, and interrupted ones seen.
static BACKUPS_CHECKED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static BACKUPS_PARTIAL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Every complete backup opens read-only and its stores agree (it is then removed, so each
/// is checked once); a `.partial` one is not taken for a backup.
fn check_backups(dir: &Path, at: &str) {
    let Ok(entries) = std::fs::read_dir(backups_of(dir)) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".partial") {
            assert!(
                Engine::open_read_only(&path).is_err(),
                "{at}: a partial backup {name} opened"
            );
            BACKUPS_PARTIAL.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::fs::remove_dir_all(&path).unwrap();
            continue;
        }
        let replica = Engine::open_read_only(&path)
            .unwrap_or_else(|err| panic!("{at}: backup {name} does not open: {err:?}"));
        let s = replica.stats();
        assert_eq!(s.products as u64, s.text_docs, "{at}: {name}: {s:?}");
        assert_eq!(s.products, s.vectors, "{at}: {name}: {s:?}");
        assert_eq!(s.seq, s.products as u64 + s.events, "{at}: {name}: {s:?}");
        drop(replica);
        std::fs::remove_dir_all(&path).unwrap();
        BACKUPS_CHECKED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn kill_nine_loses_no_acknowledged_write() {
    let total: usize = std::env::var("SHOPDB_CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(56);
    let per_phase = total.div_ceil(PHASES.len()).max(1);
    let mut rng = Rng(42);
    let mut cycles = 0;
    let mut ann_misses = 0;
    let mut checked = 0;
    // `SHOPDB_CRASH_PHASES=recovery,compact` runs only those phases.
    let only = std::env::var("SHOPDB_CRASH_PHASES").unwrap_or_default();
    for phase in PHASES {
        if !only.is_empty() && !only.split(',').any(|p| p == phase) {
            continue;
        }
        let dir = tempdir();
        let mut acked = Acked::default();
        for cycle in 0..per_phase {
            // Kills land anywhere from process start-up to well into the writes; training
            // snapshots and compaction take longer than a commit, so their phases wait longer.
            let window = match phase {
                "model" | "snapshot" | "compact" | "retention" | "backup" => 1500,
                _ => 400,
            };
            let kill = if phase == "recovery" && cycle % 2 == 1 {
                // Every other kill lands inside open's replay (timed from the last open).
                Kill::IntoOpen(Duration::from_micros(rng.below(acked.last_open_us.max(1))))
            } else {
                Kill::After(Duration::from_millis(20 + rng.below(window)))
            };
            run_and_kill(dir.path(), phase, kill, &mut acked);
            check(dir.path(), phase, cycle, &acked, &mut ann_misses);
            cycles += 1;
        }
        println!("crash phase {phase}: {per_phase} kills, acknowledged {acked:?}, 0 lost");
        checked += acked.products.map_or(0, |p| p + 1) + acked.events.map_or(0, |e| e + 1);
        assert!(
            acked.products.is_some_and(|a| a > 10),
            "{phase}: the child acknowledged too little to test anything: {acked:?}"
        );
        if phase == "model" {
            assert!(acked.model > 0, "no model generation was acknowledged");
        }
        if phase == "backup" {
            check_backups(dir.path(), phase);
            let complete = BACKUPS_CHECKED.load(std::sync::atomic::Ordering::SeqCst);
            let partial = BACKUPS_PARTIAL.load(std::sync::atomic::Ordering::SeqCst);
            println!("  backups: {complete} complete ones opened read-only, {partial} interrupted ones refused");
            assert!(complete > 0, "no backup completed");
            let _ = std::fs::remove_dir_all(backups_of(dir.path()));
        }
        if phase == "recovery" {
            assert!(acked.killed_while_opening > 0, "no kill landed during open");
            println!(
                "  kills during open: {} (the last completed open took {} us)",
                acked.killed_while_opening, acked.last_open_us
            );
        }
    }
    println!(
        "crash matrix: {cycles} kill -9 cycles, {checked} acknowledged writes (products and \
         events, last check of each phase), 0 lost; graph-search misses of a present vector \
         (k 10, all checks): {ann_misses}"
    );
}
