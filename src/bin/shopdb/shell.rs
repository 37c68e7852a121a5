//! Running scripts and the interactive shell (rustyline: line editing, history).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;
use shopdb::sql::{is_complete, split_script, Completeness, ResultSet, Session};
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
  INSERT INTO products (id, title, brand, category, price, embedding, color) VALUES (...), (...);
  INSERT INTO events (user_id, item_id, kind, ts) VALUES ('u1', 'p1', 'purchase', 1732000000);
  DELETE FROM products WHERE id IN ('p1', 'p2');  DELETE FROM users WHERE id = 'u1';
  TRAIN;  TRAIN WITH (tune = off);  TRAIN WITH (tune_budget = 30);  EVALUATE;
  SHOW MODELS;  SHOW STATS;  SHOW TABLES;  DESCRIBE products;
  IMPORT PRODUCTS FROM 'file.jsonl' [ON ERROR SKIP];  IMPORT EVENTS FROM 'file.csv';
  IMPORT SEQUENCES FROM 'user_sequence.txt';  IMPORT MOVIELENS FROM 'ml-100k';
  IMPORT KG FROM 'x.kg' LINKS 'x.link';

Shell commands:
  .help              this text
  .quit, .exit, \\q   leave
  .timer on|off      print each statement's run time (also \\timing [on|off])
  .mode table|json|csv
  .tables            SHOW TABLES
";

/// Prints `line:col` of a syntax error as the line with a caret under the column.
fn caret(script: &str, message: &str) -> Option<String> {
    let at = message.find(" at ")? + 4;
    let rest = &message[at..];
    let pos = rest.split(':').take(2).collect::<Vec<_>>();
    let line: usize = pos.first()?.trim().parse().ok()?;
    let column: usize = pos.get(1)?.trim().parse().ok()?;
    let text = script.lines().nth(line.checked_sub(1)?)?;
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
                report(script, &e.to_string());
                return false;
            }
        };
        let mut ok = true;
        for source in &sources {
            let started = Instant::now();
            match self.session.execute_source(source) {
                Ok(rs) => {
                    if !self.print(&rs) {
                        return ok;
                    }
                    if self.timer {
                        eprintln!("Run Time: {:.3} s", started.elapsed().as_secs_f64());
                    }
                }
                Err(e) => {
                    report(script, &e.to_string());
                    ok = false;
                    if !keep_going {
                        return false;
                    }
                }
            }
        }
        ok
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

    /// Handles a `.command` or `\command`; false to leave the shell.
    fn meta(&mut self, line: &str) -> bool {
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
            ".quit" | ".exit" | "\\q" => return false,
            ".help" | "\\?" | "\\h" => print!("{HELP}"),
            ".timer" | "\\timing" => match flag(arg, self.timer) {
                Some(on) => {
                    self.timer = on;
                    println!("Timing is {}.", if on { "on" } else { "off" });
                }
                None => eprintln!("error: expected {cmd} on|off"),
            },
            ".mode" => match arg {
                Some("table") => self.mode = Mode::Table,
                Some("json") => self.mode = Mode::Json,
                Some("csv") => self.mode = Mode::Csv,
                _ => eprintln!("error: expected .mode table|json|csv"),
            },
            ".tables" | "\\dt" => {
                self.run_script("SHOW TABLES", true);
            }
            _ => eprintln!("error: unknown command {cmd}; .help lists them"),
        }
        true
    }
}

fn report(script: &str, message: &str) {
    eprintln!("error: {message}");
    if message.starts_with("syntax error at ") || message.starts_with("error at ") {
        if let Some(c) = caret(script, message) {
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
                    if !runner.meta(trimmed) {
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
