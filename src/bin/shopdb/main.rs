//! `shopdb`: the shell and the demo.
//!
//! ```text
//! shopdb DIR                      interactive shell on the database in DIR (created if absent)
//! shopdb DIR -c "SQL; SQL"        run statements and exit
//! shopdb DIR script.sql           run a script (or -f script.sql); stdin when it is not a terminal
//!                                 (each statement runs as soon as its `;` is read)
//! shopdb demo [DIR] [--small]     generate the demo shop (default DIR demo.shopdb)
//! shopdb bench --dataset D ...    the benchmark harness (see `shopdb bench --help`)
//! ```
//!
//! The exit code is 0 when every statement succeeded, 1 when one failed (scripts stop at the
//! first error) or the database could not be opened, 2 for bad arguments.

mod bench;
mod shell;

use std::io::{BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use shopdb::demo::{DemoOptions, DemoReport};
use shopdb::sql::Session;
use shopdb::Engine;

use shell::{Mode, Runner};

/// mimalloc rather than the system allocator: the indexing threads and the writer allocate
/// many small blocks at once, and glibc's arenas made ingest wait on their locks.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An embedded search-and-recommend database: SQL-like shell.
#[derive(Parser, Debug)]
#[command(name = "shopdb", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// The database directory (created when absent).
    dir: Option<PathBuf>,

    /// A script of statements separated by `;` to run instead of the shell.
    script: Option<PathBuf>,

    /// Run these statements and exit (repeatable; each may hold several statements).
    #[arg(short = 'c', long = "command", value_name = "SQL")]
    commands: Vec<String>,

    /// Run the statements in FILE and exit.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        conflicts_with = "script"
    )]
    file: Option<PathBuf>,

    /// Print results as JSON, one document per statement and line.
    #[arg(long, conflicts_with = "csv")]
    json: bool,

    /// Print results as CSV with a header line.
    #[arg(long)]
    csv: bool,

    /// A directory IMPORT may read from and EXPORT write to (repeatable). Default: the current
    /// directory only.
    #[arg(long = "allow-dir", value_name = "PATH")]
    allow_dirs: Vec<PathBuf>,

    /// Vector dimension when creating a new database (default 64; an existing database
    /// keeps its own).
    #[arg(long)]
    dim: Option<usize>,

    /// Print how long each statement took.
    #[arg(long)]
    timer: bool,

    /// Keep user ids only as keyed hashes (HMAC-SHA256) under the key in FILE (its bytes, a
    /// trailing newline removed; at least 16). Chosen when a database is created; a database
    /// created with a key needs it at every open. A file keeps the key off the command line.
    #[arg(long = "user-key-file", value_name = "FILE")]
    user_key_file: Option<PathBuf>,

    /// A sentence encoder folder (config.json, tokenizer.json, model.safetensors, e.g.
    /// all-MiniLM-L6-v2 from `tools/fetch_minilm.sh DIR`): products inserted without an
    /// embedding get one, and search('text') also searches by meaning. A database created
    /// with an encoder is always opened with the same one.
    #[cfg(feature = "embed")]
    #[arg(long, value_name = "DIR")]
    embedder: Option<PathBuf>,

    /// Serve DIR, a backup made with BACKUP TO, read-only: queries work, writes are refused,
    /// nothing is written to DIR and any number of processes may serve it at once.
    #[arg(long)]
    read_only: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate the demo shop: products in English and Chinese, users, a year of events,
    /// trained models; then run a few example queries.
    Demo(DemoArgs),
    /// Benchmark quality, latency, ingest and training on a data set; writes report.json,
    /// report.md and SVG plots into --out.
    Bench(Box<bench::BenchArgs>),
}

#[derive(Args, Debug)]
struct DemoArgs {
    /// Where to create it. An existing demo database is only replaced with --force.
    #[arg(default_value = "demo.shopdb")]
    dir: PathBuf,

    /// A small shop (300 products, 150 users, 6,000 events) for a quick look or tests.
    #[arg(long)]
    small: bool,

    /// Replace DIR when it holds a shopdb database (any other existing directory is refused).
    #[arg(long)]
    force: bool,

    /// Do not run the example queries at the end.
    #[arg(long)]
    no_examples: bool,

    /// Products to generate (default 3,000; 300 with --small).
    #[arg(long, value_name = "N")]
    products: Option<usize>,

    /// Shoppers to generate (default 2,000; 150 with --small).
    #[arg(long, value_name = "N")]
    users: Option<usize>,

    /// Events to generate, about (default 300,000; 6,000 with --small): a large log to try
    /// export, import and training at scale.
    #[arg(long, value_name = "N")]
    events: Option<usize>,

    /// Do not train the models at the end (nor run the examples, which need them).
    #[arg(long)]
    no_train: bool,

    /// A sentence encoder folder (see `shopdb --help`): the products' vectors come from it,
    /// and one more example searches by meaning.
    #[cfg(feature = "embed")]
    #[arg(long, value_name = "DIR")]
    embedder: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Some(Command::Demo(args)) => demo(args),
        Some(Command::Bench(args)) => bench::run(args),
        None => match &cli.dir {
            Some(dir) => run(&cli, dir),
            None => {
                Err("missing the database directory: shopdb DIR (see shopdb --help)".to_string())
            }
        },
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn open(cli: Option<&Cli>, dir: &Path, dim: Option<usize>) -> Result<Engine, String> {
    let mut builder = Engine::builder();
    let user_key_file = cli.and_then(|c| c.user_key_file.as_deref());
    if cli.is_some_and(|c| c.read_only) {
        builder = builder.read_only(true);
    }
    #[cfg(feature = "embed")]
    if let Some(model) = cli.and_then(|c| c.embedder.as_ref()) {
        builder = builder.embedder(model);
    }
    if let Some(d) = dim {
        builder = builder.dim(d);
    }
    if let Some(path) = user_key_file {
        let mut key = std::fs::read(path)
            .map_err(|e| format!("cannot read the user key {}: {e}", path.display()))?;
        while matches!(key.last(), Some(b'\n' | b'\r')) {
            key.pop();
        }
        builder = builder.user_key(key);
    }
    builder
        .open(dir)
        .map_err(|e| format!("cannot open {}: {e}", dir.display()))
}

/// A token that Ctrl-C cancels: a running `TRAIN` stops (the shell goes on, the previous model
/// generation serving). A second Ctrl-C before the next `TRAIN` ends the process; at the
/// prompt the line editor reads Ctrl-C itself.
fn interrupt_cancels_training() -> shopdb::CancelToken {
    let token = shopdb::CancelToken::new();
    let armed = token.clone();
    let installed = ctrlc::set_handler(move || {
        if armed.is_cancelled() {
            // A second Ctrl-C while the first is being acted on: leave.
            std::process::exit(130);
        }
        armed.cancel();
    });
    if let Err(e) = installed {
        eprintln!("note: Ctrl-C will not cancel TRAIN here: {e}");
    }
    token
}

fn run(cli: &Cli, dir: &Path) -> Result<ExitCode, String> {
    let engine = open(Some(cli), dir, cli.dim)?;
    let mut session = Session::new(&engine);
    session.set_train_progress(std::io::stderr().is_terminal());
    session.set_cancel(interrupt_cancels_training());
    if cli.allow_dirs.is_empty() {
        let cwd = std::env::current_dir().map_err(|e| format!("current directory: {e}"))?;
        session.allow_dir(&cwd).map_err(|e| e.to_string())?;
    }
    for d in &cli.allow_dirs {
        session
            .allow_dir(d)
            .map_err(|e| format!("--allow-dir {}: {e}", d.display()))?;
    }
    let mode = if cli.json {
        Mode::Json
    } else if cli.csv {
        Mode::Csv
    } else {
        Mode::Table
    };
    let mut runner = Runner::new(&session, mode, cli.timer);
    let script = cli.script.as_ref().or(cli.file.as_ref());
    if !cli.commands.is_empty() {
        for c in &cli.commands {
            if !runner.run_script(c, false) {
                return Ok(ExitCode::FAILURE);
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    // A script file or a pipe: each statement runs as soon as its `;` has been read.
    let streamed = if let Some(path) = script {
        let cannot = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
        let file = std::fs::File::open(path).map_err(cannot)?;
        Some(
            runner
                .run_stream(&mut BufReader::new(file))
                .map_err(cannot)?,
        )
    } else if !std::io::stdin().is_terminal() {
        let ok = runner
            .run_stream(&mut std::io::stdin().lock())
            .map_err(|e| format!("cannot read stdin: {e}"))?;
        Some(ok)
    } else {
        None
    };
    if let Some(ok) = streamed {
        return Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    shell::interactive(&mut runner, &engine, dir).map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}

/// Whether `dir` looks like a shopdb database (so that `--force` may remove it).
fn is_database(dir: &Path) -> bool {
    dir.join("config.json").is_file() && dir.join("store").is_dir()
}

fn demo(args: &DemoArgs) -> Result<ExitCode, String> {
    let dir = &args.dir;
    if dir.exists() {
        let empty = std::fs::read_dir(dir)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if !empty {
            if !args.force {
                return Err(format!(
                    "{} already exists; pass --force to replace it, or open it with: shopdb {}",
                    dir.display(),
                    dir.display()
                ));
            }
            if !is_database(dir) {
                return Err(format!(
                    "{} exists and is not a shopdb database; refusing to remove it",
                    dir.display()
                ));
            }
            std::fs::remove_dir_all(dir)
                .map_err(|e| format!("cannot remove {}: {e}", dir.display()))?;
        }
    }
    let base = if args.small {
        DemoOptions::small()
    } else {
        DemoOptions::default()
    };
    let options = DemoOptions {
        progress: std::io::stderr().is_terminal(),
        products: args.products.unwrap_or(base.products),
        users: args.users.unwrap_or(base.users),
        events: args.events.unwrap_or(base.events),
        train: !args.no_train,
        ..base
    };
    let started = Instant::now();
    #[cfg(feature = "embed")]
    let engine = match &args.embedder {
        Some(model) => Engine::builder()
            .embedder(model)
            .open(dir)
            .map_err(|e| format!("cannot open {}: {e}", dir.display()))?,
        None => open(None, dir, Some(64))?,
    };
    #[cfg(not(feature = "embed"))]
    let engine = open(None, dir, Some(64))?;
    let report = shopdb::demo::generate(&engine, &options).map_err(|e| format!("demo: {e}"))?;
    print_report(&report, started.elapsed().as_secs_f64());
    if !args.no_examples && !args.no_train {
        let session = Session::new(&engine);
        let mut runner = Runner::new(&session, Mode::Table, false);
        for sql in &report.examples {
            println!("\nshopdb> {sql};");
            if !runner.run_script(sql, false) {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    println!("\nThe demo shop is ready: shopdb {}", dir.display());
    Ok(ExitCode::SUCCESS)
}

fn print_report(r: &DemoReport, secs: f64) {
    println!(
        "Generated {} products, {} users and {} events in {secs:.1} s.",
        r.products, r.users, r.events
    );
    for (phase, s) in &r.timings {
        println!("  {phase:<20} {s:>7.2} s");
    }
    if let Some(t) = &r.trained {
        print!("{t}");
    }
}
