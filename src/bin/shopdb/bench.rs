//! `shopdb bench`: the command line of the benchmark harness (`shopdb::bench`).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use shopdb::bench::{BenchOptions, Dataset, Scale};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DatasetArg {
    Generated,
    Movielens,
    Beir,
    Sequences,
    Generic,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The data set.
    #[arg(long)]
    dataset: DatasetArg,

    /// Size of the generated data set: tiny (300 products), small (3,000 products, 300,000
    /// events), 100k (100,000 products, 1,000,000 events) or 1m (1,000,000 products,
    /// 10,000,000 events).
    #[arg(long, default_value = "small")]
    scale: String,

    /// The data folder (movielens, beir) or the user-sequence file (sequences).
    #[arg(long)]
    data: Option<PathBuf>,

    /// Products JSONL (generic).
    #[arg(long)]
    products: Option<PathBuf>,

    /// Events CSV with header user,item,kind,ts (generic).
    #[arg(long)]
    events: Option<PathBuf>,

    /// Raw little-endian f32 embeddings, one row per line of --ids (generic).
    #[arg(long, requires = "ids")]
    embeddings: Option<PathBuf>,

    /// The ids of the --embeddings rows, one per line.
    #[arg(long, requires = "embeddings")]
    ids: Option<PathBuf>,

    /// The recommendation split: recbole (random 80/10/10 per user), loo (leave last one
    /// out) or temporal (global time cut, last 10% test).
    #[arg(long, default_value = "recbole")]
    split: String,

    /// A BEIR folder's judged queries to rate (qrels/<NAME>.tsv): test, or train to choose
    /// search settings on.
    #[arg(long, default_value = "test")]
    qrels: String,

    /// Cut-off of every quality metric.
    #[arg(long, default_value_t = 10)]
    k: usize,

    /// Requests per operation and thread count in the latency phase.
    #[arg(long, default_value_t = 1_000)]
    queries: usize,

    /// Where report.json, report.md and the SVG plots go (created when absent).
    #[arg(long, default_value = "bench-report")]
    out: PathBuf,

    /// Generated data sets only: store the products without embeddings (no vector index;
    /// the products rate is then catalog + text alone).
    #[arg(long)]
    no_vectors: bool,

    /// Fit the models at their fixed defaults instead of tuning them on held-out data (the
    /// engine tunes by default; this measures what tuning buys).
    #[arg(long)]
    no_tune: bool,

    /// Train the sequence model too (a self-attentive next-item model; off by default, it
    /// trains for minutes on a shop of 20k shoppers).
    #[arg(long)]
    sequence: bool,

    /// Seconds the sequence model's race of settings (its dropout rates) may take, when
    /// tuning; 0 keeps the default setting without a race. Default: the engine's (60).
    #[arg(long, value_name = "SECONDS")]
    sequence_budget: Option<f64>,

    /// Queries of the typo benchmark (made from the catalog's titles, searched as typed and
    /// with typos); 0 skips it.
    #[arg(long, default_value_t = 1000)]
    typos: usize,

    /// Skip the exposure sweep (the fused recommendations rated under each exposure
    /// control: popularity debiasing, a long-tail share, a brand's share).
    #[arg(long)]
    no_exposure: bool,

    /// BEIR only: embed the documents and queries with the sentence encoder in this folder
    /// (config.json, tokenizer.json, model.safetensors; `tools/fetch_minilm.sh DIR` fetches
    /// all-MiniLM-L6-v2) instead of reading the folder's embeddings/.
    #[cfg(feature = "embed")]
    #[arg(long, value_name = "DIR")]
    embedder: Option<PathBuf>,

    /// Write the test phase's fitting part to this folder as Parquet (`interactions.parquet`:
    /// user, item, weight) with the MF settings tuning chose (`mf_params.json`), to fit MF
    /// elsewhere: `python3 tools/spark_als.py DIR FACTORS_DIR`.
    #[cfg(feature = "parquet")]
    #[arg(long, value_name = "DIR")]
    fit_export: Option<PathBuf>,

    /// Rate MF factors fitted elsewhere on that fitting part (a folder of `user_factors`
    /// and `item_factors` Parquet, Spark ALS's layout) as `mf_imported` beside `mf`.
    #[cfg(feature = "parquet")]
    #[arg(long, value_name = "DIR")]
    import_mf: Option<PathBuf>,

    /// Keep the benchmark database (OUT/db) instead of removing it at the end.
    #[arg(long)]
    keep_db: bool,
}

fn dataset(args: &BenchArgs) -> Result<Dataset, String> {
    let need = |p: &Option<PathBuf>, flag: &str| {
        p.clone()
            .ok_or_else(|| format!("--dataset {:?} needs {flag}", args.dataset))
    };
    Ok(match args.dataset {
        DatasetArg::Generated => {
            Dataset::Generated(Scale::parse(&args.scale).ok_or_else(|| {
                format!("--scale {:?}: expected tiny, small, 100k or 1m", args.scale)
            })?)
        }
        DatasetArg::Movielens => Dataset::MovieLens(need(&args.data, "--data DIR")?),
        DatasetArg::Beir => Dataset::Beir(need(&args.data, "--data DIR")?),
        DatasetArg::Sequences => Dataset::Sequences(need(&args.data, "--data FILE")?),
        DatasetArg::Generic => Dataset::Generic {
            products: need(&args.products, "--products F.jsonl")?,
            events: need(&args.events, "--events F.csv")?,
            embeddings: args.embeddings.clone().zip(args.ids.clone()),
        },
    })
}

/// Removes `dir` when it is absent, empty or a shopdb database; anything else is refused.
fn clear_db(dir: &Path) -> Result<(), String> {
    if !dir.exists() {
        return Ok(());
    }
    let empty = std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none());
    let database = dir.join("config.json").is_file() && dir.join("store").is_dir();
    if !empty && !database {
        return Err(format!(
            "{} exists and is not a shopdb database; refusing to remove it",
            dir.display()
        ));
    }
    std::fs::remove_dir_all(dir).map_err(|e| format!("cannot remove {}: {e}", dir.display()))
}

pub fn run(args: &BenchArgs) -> Result<ExitCode, String> {
    let split = shopdb::bench::parse_split(&args.split).ok_or_else(|| {
        format!(
            "--split {:?}: expected recbole, loo or temporal",
            args.split
        )
    })?;
    let db_dir = args.out.join("db");
    clear_db(&db_dir)?;
    let options = BenchOptions {
        split,
        qrels: args.qrels.clone(),
        k: args.k,
        queries: args.queries,
        progress: std::io::stderr().is_terminal(),
        vectors: !args.no_vectors,
        tune: !args.no_tune,
        sequence: args.sequence,
        sequence_budget: args.sequence_budget,
        typos: args.typos,
        exposure: !args.no_exposure,
        #[cfg(feature = "embed")]
        embedder: args.embedder.clone(),
        #[cfg(feature = "parquet")]
        fit_export: args.fit_export.clone(),
        #[cfg(feature = "parquet")]
        import_mf: args.import_mf.clone(),
        ..BenchOptions::new(dataset(args)?, &db_dir)
    };
    let result = shopdb::bench::run(&options);
    if !args.keep_db {
        clear_db(&db_dir)?;
    }
    let report = result.map_err(|e| format!("bench: {e}"))?;
    report
        .write(&args.out)
        .map_err(|e| format!("writing the report: {e}"))?;
    print!("{}", report.markdown());
    println!(
        "\nWritten: {}",
        [
            "report.json",
            "report.md",
            "latency_recall.svg",
            "ablation.svg",
            "exposure.svg"
        ]
        .iter()
        .filter(|f| args.out.join(f).exists())
        .map(|f| args.out.join(f).display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
    );
    Ok(ExitCode::SUCCESS)
}
