//! I/O faults: a full disk (a child process under a file-size limit, so writes fail with
//! EFBIG) and a read-only database directory (a child that drops root privileges) give
//! typed errors, and reopening afterwards finds the data as it was.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;

use shopdb::{Engine, Filter, Product};

use crate::support::{products, tempdir, vector};

const DIM: usize = 8;

fn child(test: &str, dir: &Path) -> (Vec<String>, std::process::ExitStatus, String) {
    let out = crate::support::child_test(test, "SHOPDB_FAULT_DIR", dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let lines = BufReader::new(&out.stdout[..])
        .lines()
        .map_while(Result::ok)
        .collect();
    (
        lines,
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The lines of `lines` after `prefix`, wherever the harness put them on the line.
fn after<'a>(lines: &'a [String], prefix: &str) -> Vec<&'a str> {
    lines
        .iter()
        .filter_map(|l| l.find(prefix).map(|at| &l[at + prefix.len()..]))
        .collect()
}

/// A typed error's variant name from its debug form.
fn variant(e: &shopdb::Error) -> String {
    format!("{e:?}")
        .split([' ', '{', '('])
        .next()
        .unwrap_or_default()
        .to_string()
}

fn large_product(i: u64) -> Product {
    Product::new(format!("big{i}"))
        .title(format!("bigtok{i} filler"))
        .description("x".repeat(4000))
        .embedding(vector(i, DIM))
}

/// The child: lowers its file-size limit to the store's current size, ignores SIGXFSZ,
/// and commits until a write fails; prints `ACK <i>` per commit and the error it got.
#[test]
#[ignore = "run by io_faults::disk_full_is_a_typed_error_and_loses_nothing as a child process"]
fn child_disk_full() {
    let Some(dir) = std::env::var_os("SHOPDB_FAULT_DIR") else {
        return;
    };
    let dir = Path::new(&dir);
    let e = Engine::builder().dim(DIM).open(dir).unwrap();
    let limit = std::fs::metadata(dir.join("store/db")).unwrap().len() + 64 * 1024;
    // SAFETY: plain libc calls with valid arguments; this process is the test's child and
    // runs one thread of its own.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let rl = libc::rlimit {
            rlim_cur: limit,
            rlim_max: limit,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &rl), 0);
    }
    for round in 0..500u64 {
        let batch = (round * 10..round * 10 + 10).map(large_product).collect();
        e.upsert_products(batch).unwrap();
        match e.commit() {
            Ok(_) => println!("\nACK {}", round * 10 + 9),
            Err(err) => {
                println!("\nFAILED {} {err}", variant(&err));
                // Later writes fail typed too (or succeed); they must not panic.
                e.upsert_product(large_product(1_000_000)).unwrap();
                match e.commit() {
                    Ok(_) => println!("\nTHEN ok"),
                    Err(err) => println!("\nTHEN {} {err}", variant(&err)),
                }
                break;
            }
        }
    }
    println!("\nDONE");
}

#[test]
fn disk_full_is_a_typed_error_and_loses_nothing() {
    let dir = tempdir();
    {
        let e = Engine::builder().dim(DIM).open(dir.path()).unwrap();
        e.upsert_products(products(50, DIM)).unwrap();
        e.commit().unwrap();
    }
    let (lines, status, stderr) = child("io_faults::child_disk_full", dir.path());
    let failed = after(&lines, "FAILED ");
    println!(
        "disk full: child {status}, {} commits acknowledged, then {failed:?}, later {:?}",
        after(&lines, "ACK ").len(),
        after(&lines, "THEN ")
    );
    assert!(
        status.success() && !after(&lines, "DONE").is_empty(),
        "child died: {status}\n{lines:?}\n{stderr}"
    );
    assert_eq!(
        failed.len(),
        1,
        "no write failed under the limit: {lines:?}"
    );
    assert!(
        failed[0].starts_with("Io ") || failed[0].starts_with("Backend "),
        "{failed:?}"
    );
    let acked = after(&lines, "ACK ")
        .iter()
        .filter_map(|s| s.parse::<u64>().ok())
        .max();
    // Reopened without the limit: the data from before and every acknowledged write.
    let e = Engine::builder().dim(DIM).open(dir.path()).unwrap();
    for i in 0..50u64 {
        let id = format!("p{i}");
        assert!(e.get_product(&id).unwrap().is_some(), "{id} lost");
        let hits = e.search_text(&format!("tok{i}"), &Filter::All, 1).unwrap();
        assert_eq!(hits[0].id, id);
    }
    let acked_count = acked.map_or(0, |max| max + 1);
    for i in 0..acked_count {
        assert!(
            e.get_product(&format!("big{i}")).unwrap().is_some(),
            "big{i} lost"
        );
    }
    // The failed commit is all-or-nothing: its ten products are all there or none is.
    let failed_batch = (acked_count..acked_count + 10)
        .filter(|i| e.get_product(&format!("big{i}")).unwrap().is_some())
        .count();
    println!(
        "disk full: after reopening, {failed_batch} of the failed commit's 10 products present"
    );
    assert!(failed_batch == 0 || failed_batch == 10, "{failed_batch}");
    let s = e.stats();
    assert_eq!(s.products as u64, s.text_docs, "{s:?}");
    assert_eq!(s.products, s.vectors, "{s:?}");
    assert_eq!(s.seq, s.products as u64, "{s:?}");
    // Writable again.
    e.upsert_product(Product::new("after").title("after the fault"))
        .unwrap();
    e.commit().unwrap();
}

/// Every file's bytes under `dir`, by relative path.
fn contents(dir: &Path, root: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            contents(&p, root, out);
        } else {
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            out.push((rel, std::fs::read(&p).unwrap()));
        }
    }
    out.sort();
}

/// Makes `dir` and everything in it readable (not writable) by every user.
fn readable_by_all(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let set = |p: &Path, mode| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
    set(dir, 0o755).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            readable_by_all(&p);
        } else {
            set(&p, 0o644).unwrap();
        }
    }
}

/// The child: drops root privileges (to `nobody`), so the root-owned directory is read-only
/// for it, then opens the database and, if that works, tries to write.
#[test]
#[ignore = "run by io_faults::read_only_directory_is_a_typed_error as a child process"]
fn child_read_only() {
    let Some(dir) = std::env::var_os("SHOPDB_FAULT_DIR") else {
        return;
    };
    // SAFETY: plain libc calls; this process is the test's child.
    let dropped = unsafe { libc::setgid(65534) == 0 && libc::setuid(65534) == 0 };
    if !dropped {
        println!("\nRESULT cannot drop privileges");
        return;
    }
    let probe = Path::new(&dir).join("probe");
    if std::fs::write(&probe, b"x").is_ok() {
        println!("\nRESULT directory is writable");
        return;
    }
    let outcome = match Engine::builder().dim(DIM).open(Path::new(&dir)) {
        Err(err) => format!("open {} {err}", variant(&err)),
        Ok(e) => {
            e.upsert_product(Product::new("ro").title("read only"))
                .unwrap();
            match e.commit() {
                Ok(_) => "commit succeeded".to_string(),
                Err(err) => format!("commit {} {err}", variant(&err)),
            }
        }
    };
    println!("\nRESULT {outcome}");
}

#[test]
fn read_only_directory_is_a_typed_error() {
    let dir = tempdir();
    {
        let e = Engine::builder().dim(DIM).open(dir.path()).unwrap();
        e.upsert_products(products(30, DIM)).unwrap();
        e.commit().unwrap();
    }
    readable_by_all(dir.path());
    let mut before = Vec::new();
    contents(dir.path(), dir.path(), &mut before);
    // Twice: the directory as it is, then with the lock file writable by everyone so that
    // the engine gets past the lock to the stores.
    for lock_writable in [false, true] {
        if lock_writable {
            use std::os::unix::fs::PermissionsExt;
            let lock = dir.path().join("LOCK");
            std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o666)).unwrap();
        }
        let (lines, status, stderr) = child("io_faults::child_read_only", dir.path());
        let result = after(&lines, "RESULT ");
        println!("read-only directory (lock writable: {lock_writable}): {result:?}");
        assert!(
            status.success(),
            "child died: {status}\n{lines:?}\n{stderr}"
        );
        assert_eq!(result.len(), 1, "{lines:?}");
        let r = result[0];
        assert!(
            r.starts_with("open Io ")
                || r.starts_with("open Backend ")
                || r.starts_with("commit Io ")
                || r.starts_with("open Corrupt "),
            "expected a typed error, got {r:?}"
        );
        let mut now = Vec::new();
        contents(dir.path(), dir.path(), &mut now);
        assert_eq!(
            before.iter().map(|(p, _)| p).collect::<Vec<_>>(),
            now.iter().map(|(p, _)| p).collect::<Vec<_>>()
        );
        assert!(before == now, "a file changed");
    }
    let e = Engine::builder().dim(DIM).open(dir.path()).unwrap();
    assert_eq!(e.product_count(), 30);
    assert_eq!(e.search_text("tok7", &Filter::All, 1).unwrap()[0].id, "p7");
}
