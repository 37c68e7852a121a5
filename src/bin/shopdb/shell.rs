//! Running scripts and the interactive shell (rustyline: line editing, history).

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;
use shopdb::sql::{is_complete, split_script, Completeness, ResultSet, Session, Source};
use shopdb::Engine;

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Aligned columns.
    Table,
    /// One JSON document per statement and line.
    Json,
    /// CSV with a header.
    Csv,
}

/// Runs statements and prints their results.
pub struct Runner<'s, 'e> {
    session: &'s Session<'e>,
    mode: Mode,
    timer: bool,
}

const HELP: &str = "\
Statements end with ';' and may span lines.

  SELECT id, title, price, score FROM search('running shoes', user => 'u1')
      WHERE price < 100 AND category = 'shoes' ORDER BY price LIMIT 10;
  SELECT * FROM recommend('u1') LIMIT 10;        SELECT * FROM similar('p1') LIMIT 5;
  EXPLAIN SELECT * FROM search('跑步鞋') LIMIT 3;
  SELECT id, title FROM products WHERE brand = 'Acme' AND color = 'red' LIMIT 20;
  SELECT * FROM events WHERE user_id = 'u1' ORDER BY ts DESC LIMIT 20;
  SELECT count(*), avg(price) FROM products;  SELECT count(DISTINCT user_id) FROM events;
  SELECT brand, count(*) AS n FROM search('shoes') GROUP BY brand HAVING n > 2 ORDER BY n DESC;
  SELECT id, title FROM search('runing shoos') LIMIT 5;  (typos corrected; typos => false)
  INSERT INTO synonyms (word, synonym) VALUES ('sneakers', 'trainers');  SHOW SYNONYMS;
  INSERT INTO products (id, title, brand, category, price, embedding, color) VALUES (...), (...);
  INSERT INTO events (user_id, item_id, kind, ts) VALUES ('u1', 'p1', 'purchase', 1732000000);
  DELETE FROM products WHERE id IN ('p1', 'p2');  DELETE FROM users WHERE id = 'u1';
  TRAIN;  TRAIN WITH (tune = off);  TRAIN WITH (tune_budget = 30);  EVALUATE;
  TRAIN WITH (sequence = on, sequence_budget = 60);  (the sequence model; its race's seconds)
  SHOW MODELS;  SHOW STATS;  SHOW TABLES;  SHOW SYNONYMS;  DESCRIBE products;
  IMPORT PRODUCTS FROM 'file.jsonl' [ON ERROR SKIP];  IMPORT EVENTS FROM 'file.csv';
  IMPORT SEQUENCES FROM 'user_sequence.txt';  IMPORT MOVIELENS FROM 'ml-100k';
  IMPORT KG FROM 'x.kg' LINKS 'x.link';  EXPORT USER 'u1' TO 'u1.json';
  SELECT * FROM trending(since => 1732000000) LIMIT 10;  (distinct shoppers per product)
  EXPORT EVENTS TO 'out/events';  EXPORT PRODUCTS TO 'out/p';  EXPORT MODEL mf TO 'out/mf';
  IMPORT EVENTS FROM 'out/events';  (a Parquet folder or file; builds with --features parquet)
  IMPORT MODEL mf FROM 'spark/factors';  (MF factors fitted elsewhere, e.g. tools/spark_als.py)
  SET RETENTION (max_age_days = 365, max_events_per_user = 500);  SET RETENTION OFF;
  SHOW RETENTION;  COMPACT;  (drops forgotten users' and expired events' bytes from the files)
  BACKUP TO 'backups/today';  (online; serve it with: shopdb backups/today --read-only)

Shell commands:
  .help              this text
  .quit, .exit, \\q   leave
  .timer on|off      print each statement's run time (also \\timing [on|off])
  .mode table|json|csv
  .tables            SHOW TABLES
";

/// What a shell command asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Meta {
    /// Go on reading.
    Continue,
    /// Leave (`.quit`).
    Quit,
    /// The command was wrong or failed (a script stops there; the shell goes on).
    Failed,
}

/// What running some statements came to.
struct Ran {
    /// Every statement succeeded.
    ok: bool,
    /// Stdout is gone (a closed pipe): nothing more is run.
    closed: bool,
}

/// Input read by [`Runner::run_stream`] whose statements have not all run: whole lines,
/// from line `first` of the input on.
#[derive(Default)]
struct Pending {
    /// What the tokenizer reads: the lines, with what already ran of the first one blanked
    /// out (a space per character, so that columns stay those of the input).
    text: String,
    /// The lines as read, for the caret under an error.
    shown: String,
    /// The input's line number of the first line (1-based).
    first: u64,
}

impl Pending {
    fn clear(&mut self) {
        self.text.clear();
        self.shown.clear();
    }

    /// `split_script` of the pending text, positions made the input's.
    fn split(&self) -> Result<Vec<Source>, String> {
        let offset = self.first.saturating_sub(1);
        match split_script(&self.text) {
            Ok(sources) => Ok(sources
                .into_iter()
                .map(|s| Source {
                    line: s.line + offset,
                    ..s
                })
                .collect()),
            // Rare, and the end of the run: split again behind as many empty lines as came
            // before, so that the error names the input's line.
            Err(_) => {
                let mut padded = "\n".repeat(usize::try_from(offset).unwrap_or(0));
                padded.push_str(&self.text);
                Err(split_script(&padded).err().map_or_else(
                    || "cannot split the statements".to_string(),
                    |e| e.to_string(),
                ))
            }
        }
    }

    /// Drops what comes before the input position `line:column` (where a statement starts).
    fn keep_from(&mut self, line: u64, column: u64) {
        let skip = usize::try_from(line.saturating_sub(self.first)).unwrap_or(0);
        let line_start = |s: &str| {
            if skip == 0 {
                0
            } else {
                s.match_indices('\n')
                    .nth(skip - 1)
                    .map_or(s.len(), |(i, _)| i + 1)
            }
        };
        let (t, v) = (line_start(&self.text), line_start(&self.shown));
        self.text.drain(..t);
        self.shown.drain(..v);
        self.first += skip as u64;
        let blank = usize::try_from(column.saturating_sub(1)).unwrap_or(0);
        let end = self
            .text
            .char_indices()
            .nth(blank)
            .map_or(self.text.len(), |(i, _)| i);
        self.text.replace_range(..end, &" ".repeat(blank));
    }
}

/// Prints `line:col` of a syntax error as the line with a caret under the column; `script`
/// starts at line `first` of the input.
fn caret(script: &str, first: u64, message: &str) -> Option<String> {
    let at = message.find(" at ")? + 4;
    let rest = &message[at..];
    let pos = rest.split(':').take(2).collect::<Vec<_>>();
    let line: u64 = pos.first()?.trim().parse().ok()?;
    let column: usize = pos.get(1)?.trim().parse().ok()?;
    let text = script
        .lines()
        .nth(usize::try_from(line.checked_sub(first)?).ok()?)?;
    let pad: String = text
        .chars()
        .take(column.saturating_sub(1))
        .map(|c| {
            if c == '\t' {
                '\t'
            } else if is_wide(c) {
                '\u{3000}'
            } else {
                ' '
            }
        })
        .collect();
    Some(format!("  {text}\n  {pad}^"))
}

fn is_wide(c: char) -> bool {
    matches!(c as u32, 0x1100..=0x115F | 0x2E80..=0xA4CF | 0xAC00..=0xD7A3 | 0xF900..=0xFAFF | 0xFF00..=0xFF60 | 0xFFE0..=0xFFE6 | 0x20000..=0x3FFFD)
}

impl<'s, 'e> Runner<'s, 'e> {
    pub fn new(session: &'s Session<'e>, mode: Mode, timer: bool) -> Self {
        Runner {
            session,
            mode,
            timer,
        }
    }

    /// Runs every statement of `script`; stops at the first error unless `keep_going`.
    /// Returns whether every statement succeeded.
    pub fn run_script(&mut self, script: &str, keep_going: bool) -> bool {
        let sources = match split_script(script) {
            Ok(s) => s,
            Err(e) => {
                report(script, 1, &e.to_string());
                return false;
            }
        };
        self.run_sources(&sources, script, 1, keep_going).ok
    }

    /// Runs statements cut out of `shown` (which starts at line `first` of the input);
    /// stops at the first error unless `keep_going`, and when stdout is gone.
    fn run_sources(
        &mut self,
        sources: &[Source],
        shown: &str,
        first: u64,
        keep_going: bool,
    ) -> Ran {
        let mut ok = true;
        for source in sources {
            let started = Instant::now();
            match self.session.execute_source(source) {
                Ok(rs) => {
                    if !self.print(&rs) {
                        return Ran { ok, closed: true };
                    }
                    if self.timer {
                        eprintln!("Run Time: {:.3} s", started.elapsed().as_secs_f64());
                    }
                }
                Err(e) => {
                    report(shown, first, &e.to_string());
                    ok = false;
                    if !keep_going {
                        break;
                    }
                }
            }
        }
        Ran { ok, closed: false }
    }

    /// Runs the statements of a script or a pipe as they arrive, as `sqlite3` and `psql` do
    /// (so `tail -f events.sql | shopdb db` works): the input is read line by line and each
    /// statement runs, its output flushed, as soon as its terminating `;` has been read; a
    /// last statement without `;` runs at the end of the input. Shell commands (`.mode`,
    /// `.timer`, ...) are read on a line of their own where a statement could start. Stops at
    /// the first error (a failed statement or shell command), at `.quit` and when stdout is
    /// gone.
    ///
    /// Returns whether everything succeeded.
    ///
    /// # Errors
    /// Reading the input failed (also: it is not UTF-8); what came before has run.
    pub fn run_stream(&mut self, input: &mut dyn BufRead) -> std::io::Result<bool> {
        let mut pending = Pending::default();
        let mut number = 0u64;
        let mut line = String::new();
        loop {
            line.clear();
            if input.read_line(&mut line)? == 0 {
                break;
            }
            number += 1;
            let fresh = pending.text.is_empty();
            if fresh {
                let trimmed = line.trim();
                if trimmed.is_empty() {
                    continue;
                }
                if trimmed.starts_with('.') || trimmed.starts_with('\\') {
                    match self.meta(trimmed) {
                        Meta::Continue => continue,
                        Meta::Quit => return Ok(true),
                        Meta::Failed => return Ok(false),
                    }
                }
                pending.first = number;
            }
            pending.text.push_str(&line);
            pending.shown.push_str(&line);
            // A statement can only end on a line with a `;` (or on one closing a comment
            // that hid the rest of an earlier line): only those re-read the pending text, so
            // a long statement over many lines is not tokenized once per line. A first line
            // is read too, so that comment lines between statements are let go.
            if fresh || line.contains(';') || line.contains("*/") {
                if let Some(ok) = self.run_ended(&mut pending) {
                    return Ok(ok);
                }
            }
        }
        let sources = match pending.split() {
            Ok(s) => s,
            Err(message) => {
                report(&pending.shown, pending.first, &message);
                return Ok(false);
            }
        };
        Ok(self
            .run_sources(&sources, &pending.shown, pending.first, false)
            .ok)
    }

    /// Runs the statements of `pending` whose `;` has been read and keeps the rest; `Some`
    /// (whether all succeeded) when the run is over (an error, or stdout gone).
    fn run_ended(&mut self, pending: &mut Pending) -> Option<bool> {
        let (sources, rest) = match is_complete(&pending.text) {
            Completeness::Empty => {
                pending.clear();
                return None;
            }
            Completeness::Complete => match pending.split() {
                Ok(s) => (s, None),
                Err(message) => {
                    report(&pending.shown, pending.first, &message);
                    return Some(false);
                }
            },
            // The statements before the last, unterminated one have ended; an open string
            // or comment (which does not split) waits for more input.
            Completeness::Incomplete => match pending.split() {
                Ok(mut s) if s.len() >= 2 => {
                    let last = s.pop().map(|l| (l.line, l.column));
                    (s, last)
                }
                _ => return None,
            },
        };
        let ran = self.run_sources(&sources, &pending.shown, pending.first, false);
        match rest {
            Some((line, column)) => pending.keep_from(line, column),
            None => pending.clear(),
        }
        (ran.closed || !ran.ok).then_some(ran.ok)
    }

    /// Prints a result; false when stdout is gone (a closed pipe).
    fn print(&self, rs: &ResultSet) -> bool {
        let text = match self.mode {
            Mode::Table => rs.to_table(),
            Mode::Json => format!("{}\n", rs.to_json()),
            Mode::Csv => match rs.to_csv() {
                Ok(csv) => {
                    if !rs.has_rows() {
                        if let Some(s) = &rs.status {
                            eprintln!("{s}");
                        }
                    }
                    csv
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    return true;
                }
            },
        };
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .is_ok()
    }

    /// Handles a `.command` or `\command`.
    fn meta(&mut self, line: &str) -> Meta {
        let done = self.meta_command(line);
        let _ = std::io::stdout().flush();
        done
    }

    fn meta_command(&mut self, line: &str) -> Meta {
        let mut words = line.split_whitespace();
        let cmd = words.next().unwrap_or("");
        let arg = words.next();
        let flag = |arg: Option<&str>, current: bool| match arg {
            Some("on") => Some(true),
            Some("off") => Some(false),
            None => Some(!current),
            Some(_) => None,
        };
        match cmd {
            ".quit" | ".exit" | "\\q" => return Meta::Quit,
            ".help" | "\\?" | "\\h" => print!("{HELP}"),
            ".timer" | "\\timing" => match flag(arg, self.timer) {
                Some(on) => {
                    self.timer = on;
                    println!("Timing is {}.", if on { "on" } else { "off" });
                }
                None => {
                    eprintln!("error: expected {cmd} on|off");
                    return Meta::Failed;
                }
            },
            ".mode" => match arg {
                Some("table") => self.mode = Mode::Table,
                Some("json") => self.mode = Mode::Json,
                Some("csv") => self.mode = Mode::Csv,
                _ => {
                    eprintln!("error: expected .mode table|json|csv");
                    return Meta::Failed;
                }
            },
            ".tables" | "\\dt" => {
                if !self.run_script("SHOW TABLES", true) {
                    return Meta::Failed;
                }
            }
            _ => {
                eprintln!("error: unknown command {cmd}; .help lists them");
                return Meta::Failed;
            }
        }
        Meta::Continue
    }
}

/// Prints an error, with the caret under its position in `script` (which starts at line
/// `first` of the input).
fn report(script: &str, first: u64, message: &str) {
    eprintln!("error: {message}");
    if message.starts_with("syntax error at ") || message.starts_with("error at ") {
        if let Some(c) = caret(script, first, message) {
            eprintln!("{c}");
        }
    }
}

fn history_path(dir: &Path) -> PathBuf {
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => PathBuf::from(home).join(".shopdb_history"),
        _ => dir.join(".shopdb_history"),
    }
}

/// The interactive shell: reads statements until `;`, runs them, keeps going after errors.
pub fn interactive(
    runner: &mut Runner<'_, '_>,
    engine: &Engine,
    dir: &Path,
) -> Result<(), ReadlineError> {
    let mut rl = DefaultEditor::new()?;
    let history = history_path(dir);
    let _ = rl.load_history(&history);
    let stats = engine.stats();
    println!(
        "shopdb {} on {}: {} products, {} events, {} users.",
        env!("CARGO_PKG_VERSION"),
        dir.display(),
        stats.products,
        stats.events,
        stats.users
    );
    println!("Statements end with ';'. Type .help for help, .quit to leave.");
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() {
            "shopdb> "
        } else {
            "   ...> "
        };
        match rl.readline(prompt) {
            Ok(line) => {
                let trimmed = line.trim();
                if buffer.is_empty() && (trimmed.starts_with('.') || trimmed.starts_with('\\')) {
                    let _ = rl.add_history_entry(trimmed);
                    if runner.meta(trimmed) == Meta::Quit {
                        break;
                    }
                    continue;
                }
                buffer.push_str(&line);
                buffer.push('\n');
                match is_complete(&buffer) {
                    Completeness::Empty => buffer.clear(),
                    Completeness::Incomplete => {}
                    Completeness::Complete => {
                        let _ = rl.add_history_entry(buffer.trim_end());
                        runner.run_script(&buffer, true);
                        buffer.clear();
                    }
                }
            }
            Err(ReadlineError::Interrupted) => {
                if buffer.is_empty() {
                    println!("(.quit or Ctrl-D to leave)");
                }
                buffer.clear();
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                let _ = rl.save_history(&history);
                return Err(e);
            }
        }
    }
    let _ = rl.save_history(&history);
    Ok(())
}
