//! Kill -9 a writing child process at random points; every acknowledged write must survive.
//!
//! The child is this test binary run with `--ignored --exact crash::child_writer`; it prints
//! `ACK <i>` after each `commit()` returns. Cycles: `SHOPDB_CRASH_CYCLES` (default 30).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shopdb::{Engine, Event, EventKind, Filter, HnswParams, Product};

use crate::support::{tempdir, vector, Rng};

const DIM: usize = 8;

fn engine(dir: &std::path::Path) -> Engine {
    Engine::builder()
        .dim(DIM)
        .hnsw(HnswParams {
            snapshot_every: 25,
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

/// The child: writes and acknowledges until killed.
#[test]
#[ignore = "run by crash::kill_nine_loses_no_acknowledged_write as a child process"]
fn child_writer() {
    let Some(dir) = std::env::var_os("SHOPDB_CRASH_DIR") else {
        return;
    };
    let e = engine(std::path::Path::new(&dir));
    let mut i = e.product_count() as u64;
    let mut out = std::io::stdout();
    loop {
        // Alternate single writes and small batches.
        let n = 1 + i % 3;
        let batch: Vec<Product> = (i..i + n).map(product).collect();
        e.upsert_products(batch).unwrap();
        let events = (i..i + n)
            .map(|j| {
                Event::new(
                    format!("u{}", j % 5),
                    format!("p{j}"),
                    EventKind::View,
                    1_600_000_000 + j as i64,
                )
            })
            .collect();
        e.append_events(events).unwrap();
        e.commit().unwrap();
        use std::io::Write;
        writeln!(out, "ACK {}", i + n - 1).unwrap();
        out.flush().unwrap();
        i += n;
    }
}

#[test]
fn kill_nine_loses_no_acknowledged_write() {
    let cycles: usize = std::env::var("SHOPDB_CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let dir = tempdir();
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng(42);
    let mut acked: Option<u64> = None;
    for cycle in 0..cycles {
        let mut child = Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "crash::child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("SHOPDB_CRASH_DIR", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(n) = line
                    .strip_prefix("ACK ")
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    let _ = tx.send(n);
                }
            }
        });
        // Some kills land during open and recovery, most during writes.
        let delay = Duration::from_millis(20 + rng.below(400));
        let started = Instant::now();
        while started.elapsed() < delay {
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        for n in rx.try_iter() {
            acked = Some(acked.map_or(n, |a| a.max(n)));
        }
        let e = engine(dir.path());
        let s = e.stats();
        if let Some(max) = acked {
            for i in 0..=max {
                let id = format!("p{i}");
                assert!(
                    e.get_product(&id).unwrap().is_some(),
                    "cycle {cycle}: acknowledged {id} lost"
                );
                let text = e.search_text(&format!("tok{i}"), &Filter::All, 1).unwrap();
                assert_eq!(
                    text.first().map(|h| h.id.as_str()),
                    Some(id.as_str()),
                    "cycle {cycle}: {id} not found by text"
                );
                let near = e.search_vector(&vector(i, DIM), &Filter::All, 3).unwrap();
                assert!(
                    near.iter().any(|h| h.id == id),
                    "cycle {cycle}: {id} not found by vector"
                );
            }
            assert!(
                s.products as u64 > max,
                "cycle {cycle}: {} products, acked up to p{max}",
                s.products
            );
        }
        assert_eq!(
            s.products as u64, s.text_docs,
            "cycle {cycle}: catalog and text disagree: {s:?}"
        );
        assert_eq!(
            s.products, s.vectors,
            "cycle {cycle}: catalog and vectors disagree: {s:?}"
        );
        assert_eq!(
            s.products as u64, s.events,
            "cycle {cycle}: one event per product: {s:?}"
        );
        // One sequence number per product and per event: no gaps, nothing applied twice.
        assert_eq!(
            s.seq,
            s.products as u64 + s.events,
            "cycle {cycle}: sequence gap: {s:?}"
        );
    }
    assert!(
        acked.is_some_and(|a| a > 10),
        "the child acknowledged too little to test anything: {acked:?}"
    );
}
