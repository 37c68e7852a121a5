//! The shell reading a pipe: each statement runs, and its output is flushed, as soon as its
//! `;` has arrived (as `sqlite3` and `psql` do, so `tail -f events.sql | shopdb db` works);
//! an error stops the run at once; script features (statements over several lines, `;` in
//! strings and comments, shell commands, a last statement without `;`) keep working.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use super::cli::Scratch;

/// How long the binary may take to answer (generous: a loaded machine, a debug build).
const PATIENCE: Duration = Duration::from_secs(30);

/// `shopdb db --dim 4` on a scratch database, its stdin a pipe the test writes to.
struct Live {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Receiver<String>,
    stderr: std::thread::JoinHandle<String>,
    seen: String,
}

impl Live {
    fn spawn(s: &Scratch, args: &[&str]) -> Live {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shopdb"))
            .args(["db", "--dim", "4"])
            .args(args)
            .current_dir(s.path())
            .env("HOME", s.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn shopdb");
        let mut out = child.stdout.take().expect("stdout");
        let (tx, stdout) = channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0
                    || tx
                        .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                        .is_err()
                {
                    break;
                }
            }
        });
        let mut err = child.stderr.take().expect("stderr");
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        });
        Live {
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
            seen: String::new(),
        }
    }

    /// Writes to the binary's stdin (a write error is returned: the binary may have left).
    fn send(&mut self, text: &str) -> std::io::Result<()> {
        let pipe = self.stdin.as_mut().expect("stdin open");
        pipe.write_all(text.as_bytes())?;
        pipe.flush()
    }

    /// Waits until stdout holds `needle` (with stdin still open), failing after
    /// [`PATIENCE`].
    fn wait_for(&mut self, needle: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.seen.contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(chunk) => self.seen.push_str(&chunk),
                Err(_) => {
                    let _ = self.child.kill();
                    panic!(
                        "{needle:?} did not appear on stdout within {PATIENCE:?} of input; stdout so far:\n{}",
                        self.seen
                    );
                }
            }
        }
    }

    /// Closes stdin when `close`, waits for the exit (failing after [`PATIENCE`]) and returns
    /// everything printed and the exit code.
    fn finish(mut self, close: bool) -> (String, String, i32) {
        if close {
            drop(self.stdin.take());
        }
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "shopdb did not exit within {PATIENCE:?}; stdout:\n{}",
                    self.seen
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        while let Ok(chunk) = self.stdout.recv_timeout(PATIENCE) {
            self.seen.push_str(&chunk);
        }
        let stderr = self.stderr.join().expect("stderr reader");
        (self.seen, stderr, status.code().unwrap_or(-1))
    }
}

#[test]
fn each_statement_runs_as_its_semicolon_arrives() {
    let s = Scratch::seeded();
    let mut live = Live::spawn(&s, &[]);
    live.send("INSERT INTO events (user_id, item_id, kind, ts) VALUES ('u9', 'p4', 'view', 1700000900);\n")
        .unwrap();
    // Answered while stdin is still open: the shell did not wait for the end of the input.
    live.wait_for("inserted 1 event");
    // A statement ended on a line that starts the next one runs at once too; the open one
    // waits for its `;`, however the line is cut.
    live.send("SELECT item_id FROM events WHERE user_id = 'u9'; SELECT id\n")
        .unwrap();
    live.wait_for("item_id\n-------\np4\n(1 row)\n");
    live.send("  FROM products WHERE title = 'a;b' OR id = 'p2' -- not yet;\n")
        .unwrap();
    live.send("  ;\nSELECT id FROM products WHERE id = 'p3'")
        .unwrap();
    live.wait_for("id\n--\np2\n(1 row)\n");
    // The last statement, without `;`, runs at the end of the input.
    let (stdout, stderr, code) = live.finish(true);
    assert_eq!(code, 0, "stderr:\n{stderr}");
    let (first, rest) = stdout.split_once('\n').expect("lines");
    assert!(first.starts_with("inserted 1 event (seq "), "{stdout}");
    assert_eq!(
        rest,
        "item_id\n-------\np4\n(1 row)\nid\n--\np2\n(1 row)\nid\n--\np3\n(1 row)\n"
    );
}

#[test]
fn an_error_stops_the_pipe_at_once_and_nothing_after_it_runs() {
    let s = Scratch::seeded();
    let mut live = Live::spawn(&s, &[]);
    live.send("SELECT id FROM products WHERE id = 'p1';\n")
        .unwrap();
    live.wait_for("p1\n(1 row)\n");
    // The error and two statements after it in one write; stdin stays open, so the binary
    // must leave on the error, not at the end of the input.
    let _ = live.send(
        "SELECT id\n  FROM products WHER id = 'p1';\nDELETE FROM products WHERE id = 'p1';\nINSERT INTO events (user_id, item_id, kind) VALUES ('late', 'p2', 'view');\n",
    );
    let (stdout, stderr, code) = live.finish(false);
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(stdout, "id\n--\np1\n(1 row)\n");
    // Positioned in the input, with the caret under the line it names.
    assert!(stderr.contains("syntax error at 3:"), "{stderr}");
    assert!(
        stderr.contains("\n    FROM products WHER id = 'p1';\n"),
        "{stderr}"
    );
    assert!(stderr.contains('^'), "{stderr}");
    // Neither statement after the error ran.
    assert_eq!(
        s.sql("SELECT id FROM products WHERE id = 'p1'").ok().stdout,
        "id\n--\np1\n(1 row)\n"
    );
    assert_eq!(
        s.json("SELECT * FROM events WHERE user_id = 'late'")[0]["rows"],
        serde_json::json!([])
    );
}

#[test]
fn piped_scripts_keep_comments_shell_commands_and_a_last_statement_without_semicolon() {
    let s = Scratch::seeded();
    let script = "-- a comment; with a semicolon
/* a block ; comment
   over lines */
.mode json
.timer on
SELECT id FROM products
  WHERE title = 'x;y' /* ; */ OR id = 'p2';
.mode csv
SELECT id FROM products WHERE id = 'p3'
";
    let out = s.run(&[], Some(script)).ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", out.stdout);
    assert_eq!(lines[0], "Timing is on.");
    let doc: serde_json::Value = serde_json::from_str(lines[1]).expect("json");
    assert_eq!(
        doc["rows"],
        serde_json::json!([{"id": "p2"}]),
        "{}",
        out.stdout
    );
    assert_eq!(lines[2..], ["id", "p3"]);
    assert_eq!(
        out.stderr.matches("Run Time: ").count(),
        2,
        "{}",
        out.stderr
    );
    // The same script from a file.
    s.write("s.sql", script);
    assert_eq!(s.run(&["s.sql"], None).ok().stdout, out.stdout);
    // A wrong shell command is an error like a wrong statement; `.quit` ends the run.
    let out = s.run(&[], Some("SELECT id FROM products WHERE id = 'p1';\n.mode yaml\nDELETE FROM products WHERE id = 'p1';\n"));
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("expected .mode table|json|csv"),
        "{}",
        out.stderr
    );
    let out = s
        .run(&[], Some(".quit\nDELETE FROM products WHERE id = 'p1';\n"))
        .ok();
    assert_eq!(out.stdout, "");
    assert_eq!(
        s.sql("SELECT id FROM products WHERE id = 'p1'").ok().stdout,
        "id\n--\np1\n(1 row)\n"
    );
    // An unterminated string at the end of the input is a positioned error.
    let out = s.run(
        &[],
        Some("SELECT id FROM products WHERE id = 'p1';\n\nSELECT 'open\n"),
    );
    assert_eq!(out.code, 1);
    assert_eq!(out.stdout, "id\n--\np1\n(1 row)\n");
    assert!(
        out.stderr
            .contains("syntax error at 3:8: unterminated string"),
        "{}",
        out.stderr
    );
}
