//! The data sets the harness runs on, and loading each into an engine with its ingest timed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::report::IngestRow;
use super::Phase;
use crate::beir::BeirSet;
use crate::catalog::Product;
use crate::demo::{DemoOptions, Shop};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::events::Event;
use crate::import::OnError;

/// Products per commit when the harness ingests a generated catalog: large enough that the
/// per-commit costs (fsync, text index commit) are spread over many products.
const PRODUCT_BATCH: usize = 10_000;
/// At most this many products go into the second, vector-less engine that measures the
/// catalog + text rate on its own.
const TEXT_ONLY_SAMPLE: usize = 200_000;
/// The newest generated event's time (2025-01-01 UTC): fixed, so that a generated data set
/// is the same on every day.
const GENERATED_END_TS: i64 = 1_735_689_600;
/// Vector dimension of generated data.
const GENERATED_DIM: usize = 64;

/// How big a generated data set is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// 300 products, 150 users, 6,000 events: seconds, even unoptimised (for tests).
    Tiny,
    /// The demo shop: 3,000 products, 2,000 users, 300,000 events.
    Small,
    /// 100,000 products, 50,000 users, 1,000,000 events: the criterion benches' size.
    HundredK,
    /// 1,000,000 products, 200,000 users, 10,000,000 events.
    Million,
}

impl Scale {
    /// Parses `tiny`, `small`, `100k` or `1m`.
    pub fn parse(s: &str) -> Option<Scale> {
        match s {
            "tiny" => Some(Scale::Tiny),
            "small" => Some(Scale::Small),
            "100k" => Some(Scale::HundredK),
            "1m" => Some(Scale::Million),
            _ => None,
        }
    }

    /// `tiny`, `small`, `100k` or `1m`.
    pub fn name(self) -> &'static str {
        match self {
            Scale::Tiny => "tiny",
            Scale::Small => "small",
            Scale::HundredK => "100k",
            Scale::Million => "1m",
        }
    }

    /// The generator's settings at this scale (no training: the harness times it itself).
    pub fn options(self) -> DemoOptions {
        let (products, users, events) = match self {
            Scale::Tiny => (300, 150, 6_000),
            Scale::Small => (3_000, 2_000, 300_000),
            Scale::HundredK => (100_000, 50_000, 1_000_000),
            Scale::Million => (1_000_000, 200_000, 10_000_000),
        };
        DemoOptions {
            products,
            users,
            events,
            end_ts: Some(GENERATED_END_TS),
            train: false,
            ..DemoOptions::default()
        }
    }
}

/// What to benchmark.
#[derive(Clone, Debug)]
pub enum Dataset {
    /// The built-in generator at a scale.
    Generated(Scale),
    /// A generated shop already in memory (what [`Dataset::Generated`] makes), under a name.
    Shop {
        /// The report's dataset name.
        name: String,
        /// The shop.
        shop: Box<Shop>,
    },
    /// A MovieLens 100K folder (`u.data`, `u.item`, ...; `ml-100k.kg` + `.link` when present).
    MovieLens(PathBuf),
    /// A BEIR folder; `embeddings/` is used when present. Scored on `qrels/test.tsv`.
    Beir(PathBuf),
    /// A user-sequence file (the S3-Rec / P5 `user_sequence.txt`: `user item1 item2 ...` per
    /// line, time ordered), read by [`crate::import::sequences`].
    Sequences(PathBuf),
    /// Products JSONL + events CSV (`user,item,kind,ts`), optionally embeddings as a raw
    /// little-endian `.f32` file and an `.ids` file (one id per row).
    Generic {
        /// Products JSONL.
        products: PathBuf,
        /// Events CSV.
        events: PathBuf,
        /// `(F.f32, F.ids)`.
        embeddings: Option<(PathBuf, PathBuf)>,
    },
}

impl Dataset {
    /// The report's name for it.
    pub fn name(&self) -> String {
        let folder = |p: &Path| {
            p.file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().to_string())
        };
        match self {
            Dataset::Generated(s) => format!("generated-{}", s.name()),
            Dataset::Shop { name, .. } => name.clone(),
            Dataset::MovieLens(dir) => match folder(dir).as_str() {
                "ml-100k" => "movielens-100k".to_string(),
                other => format!("movielens-{other}"),
            },
            Dataset::Beir(dir) => format!("beir-{}", folder(dir)),
            Dataset::Sequences(file) => {
                let stem = file
                    .file_stem()
                    .map_or_else(String::new, |n| n.to_string_lossy().to_string());
                format!("sequences-{}", stem.trim_end_matches("_user_sequence"))
            }
            Dataset::Generic { .. } => "generic".to_string(),
        }
    }
}

/// A data set loaded into an engine, with what the later phases need from it.
pub(super) struct Loaded {
    pub engine: Engine,
    /// Labelled searches, when the data set has them.
    pub search: Option<BeirSet>,
    /// Texts to search for in the latency phase (labelled queries first).
    pub texts: Vec<String>,
    /// Query vectors for the vector and ANN phases.
    pub vectors: Vec<Vec<f32>>,
    pub ingest: Vec<IngestRow>,
    pub notes: Vec<String>,
}

fn rate(what: &str, count: usize, t: Instant) -> IngestRow {
    let seconds = t.elapsed().as_secs_f64();
    IngestRow {
        what: what.to_string(),
        per_second: if seconds > 0.0 {
            count as f64 / seconds
        } else {
            0.0
        },
        count,
        seconds,
    }
}

fn open(dir: &Path, dim: usize) -> Result<Engine> {
    Engine::builder().dim(dim).open(dir)
}

/// Loads `dataset` into a new engine in `db_dir`.
/// With `vectors` false, a generated shop's products are stored without embeddings.
pub(super) fn load(options: &super::BenchOptions, phase: &Phase) -> Result<Loaded> {
    let (dataset, db_dir, vectors) = (&options.dataset, options.db_dir.as_path(), options.vectors);
    #[cfg(feature = "embed")]
    if let Some(model) = &options.embedder {
        return match dataset {
            Dataset::Beir(dir) => load_beir_embedded(dir, &options.qrels, model, db_dir, phase),
            _ => Err(Error::invalid(
                "bench.embedder",
                "a sentence encoder applies to BEIR folders (their documents and queries are text)",
            )),
        };
    }
    // The analyzer loads its Chinese dictionary on first use (about a second): load it now,
    // so the first timed ingest does not pay for it.
    crate::text::analyze("跑步鞋 running shoe");
    match dataset {
        Dataset::Generated(scale) => {
            let bar = phase.spinner("generating");
            let shop = crate::demo::shop(&scale.options(), GENERATED_DIM);
            bar.finish_and_clear();
            load_shop(shop, db_dir, phase, vectors)
        }
        Dataset::Shop { shop, .. } => load_shop((**shop).clone(), db_dir, phase, vectors),
        Dataset::MovieLens(dir) => load_movielens(dir, db_dir, phase),
        Dataset::Beir(dir) => load_beir(dir, &options.qrels, db_dir, phase),
        Dataset::Sequences(file) => load_sequences(file, db_dir, phase),
        Dataset::Generic {
            products,
            events,
            embeddings,
        } => load_generic(products, events, embeddings.as_ref(), db_dir, phase),
    }
}

/// A shop's labelled queries as a BEIR set (no corpus: the engine holds it).
fn shop_queries(shop: &Shop) -> BeirSet {
    let mut set = BeirSet::default();
    let mut vectors = HashMap::new();
    for (i, q) in shop.queries.iter().enumerate() {
        let id = format!("q{i}");
        set.queries.insert(id.clone(), q.text.clone());
        set.qrels
            .insert(id.clone(), q.relevant.iter().cloned().collect());
        vectors.insert(id, q.vector.clone());
    }
    set.query_vectors = Some(vectors);
    set
}

fn load_shop(mut shop: Shop, db_dir: &Path, phase: &Phase, with_vectors: bool) -> Result<Loaded> {
    let dim = shop
        .products
        .iter()
        .find_map(|p| p.embedding.as_ref().map(Vec::len))
        .unwrap_or(GENERATED_DIM);
    let mut search = shop_queries(&shop);
    let mut texts: Vec<String> = shop.queries.iter().map(|q| q.text.clone()).collect();
    let mut vectors = Vec::new();
    let mut ingest = Vec::new();
    let what = if with_vectors {
        vectors = shop.queries.iter().map(|q| q.vector.clone()).collect();
        ingest.push(text_only_rate(&shop.products, db_dir, dim, phase)?);
        "products"
    } else {
        search.query_vectors = None;
        shop.products.iter_mut().for_each(|p| p.embedding = None);
        "products_text_only"
    };
    let engine = open(db_dir, dim)?;
    let n = shop.products.len();
    let bar = phase.bar(what, n);
    let t = Instant::now();
    crate::demo::store_products(&engine, shop.products, PRODUCT_BATCH, &bar)?;
    ingest.push(rate(what, n, t));
    bar.finish_and_clear();
    let bar = phase.bar("events", shop.events.len());
    let t = Instant::now();
    let stored = crate::demo::store_events(&engine, &shop.events, &bar)?;
    ingest.push(rate("events", stored, t));
    bar.finish_and_clear();
    texts.extend(title_words(&engine, 2_000));
    Ok(Loaded {
        engine,
        search: Some(search),
        texts,
        vectors,
        ingest,
        notes: Vec::new(),
    })
}

/// Catalog + text without vectors, in a second engine beside `db_dir` (removed afterwards),
/// on at most [`TEXT_ONLY_SAMPLE`] products: what the vector index costs is the difference
/// with the `products` rate.
fn text_only_rate(
    products: &[Product],
    db_dir: &Path,
    dim: usize,
    phase: &Phase,
) -> Result<IngestRow> {
    let dir = sibling(db_dir, "text-only");
    let n = products.len().min(TEXT_ONLY_SAMPLE);
    let sample: Vec<Product> = products[..n]
        .iter()
        .map(|p| Product {
            embedding: None,
            ..p.clone()
        })
        .collect();
    let bar = phase.bar("products, text only", n);
    let row = {
        let engine = open(&dir, dim)?;
        let t = Instant::now();
        crate::demo::store_products(&engine, sample, PRODUCT_BATCH, &bar)?;
        rate("products_text_only", n, t)
    };
    bar.finish_and_clear();
    std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    Ok(row)
}

/// `<db_dir>-<suffix>`.
fn sibling(db_dir: &Path, suffix: &str) -> PathBuf {
    let mut name = db_dir.file_name().map_or_else(
        || std::ffi::OsString::from("db"),
        std::ffi::OsStr::to_os_string,
    );
    name.push(format!("-{suffix}"));
    db_dir.with_file_name(name)
}

fn load_movielens(dir: &Path, db_dir: &Path, phase: &Phase) -> Result<Loaded> {
    let engine = open(db_dir, GENERATED_DIM)?;
    let bar = phase.spinner("importing MovieLens");
    let t = Instant::now();
    crate::import::movielens(&engine, dir)?;
    let row = rate(
        "events",
        usize::try_from(engine.stats().events).unwrap_or(usize::MAX),
        t,
    );
    let (kg, link) = (dir.join("ml-100k.kg"), dir.join("ml-100k.link"));
    let mut notes = vec![
        "MovieLens ingest: the events rate includes reading u.item and storing the movies"
            .to_string(),
    ];
    if kg.exists() && link.exists() {
        crate::import::recbole_kg(&engine, &kg, &link)?;
    } else {
        notes.push("no ml-100k.kg / ml-100k.link: the kg method has no graph".to_string());
    }
    bar.finish_and_clear();
    let texts = title_words(&engine, 2_000);
    Ok(Loaded {
        engine,
        search: None,
        texts,
        vectors: Vec::new(),
        ingest: vec![row],
        notes,
    })
}

fn load_sequences(file: &Path, db_dir: &Path, phase: &Phase) -> Result<Loaded> {
    let engine = open(db_dir, GENERATED_DIM)?;
    let bar = phase.spinner("importing sequences");
    let t = Instant::now();
    crate::import::sequences(&engine, file, OnError::Abort)?;
    let row = rate(
        "events",
        usize::try_from(engine.stats().events).unwrap_or(usize::MAX),
        t,
    );
    bar.finish_and_clear();
    Ok(Loaded {
        engine,
        search: None,
        texts: Vec::new(),
        vectors: Vec::new(),
        ingest: vec![row],
        notes: vec![
            "sequences: every item a purchase, 60 s apart in sequence order (the file has no timestamps); the events rate includes reading the file and creating the products".to_string(),
        ],
    })
}

fn load_beir(dir: &Path, qrels: &str, db_dir: &Path, phase: &Phase) -> Result<Loaded> {
    let bar = phase.spinner("reading the BEIR folder");
    let set = crate::beir::load(dir, qrels)?;
    bar.finish_and_clear();
    let dim = set
        .corpus_vectors
        .as_ref()
        .and_then(|m| m.values().next().map(Vec::len))
        .unwrap_or(GENERATED_DIM);
    let engine = open(db_dir, dim)?;
    let bar = phase.spinner("loading the corpus");
    let t = Instant::now();
    crate::beir::load_into(&engine, &set)?;
    let row = rate("products", set.corpus.len(), t);
    bar.finish_and_clear();
    beir_loaded(engine, set, row)
}

/// A BEIR folder embedded by the engine's own sentence encoder: its `embeddings/` files are
/// ignored, every document is embedded at commit (the products rate includes it) and the
/// queries by the same model.
#[cfg(feature = "embed")]
fn load_beir_embedded(
    dir: &Path,
    qrels: &str,
    model: &Path,
    db_dir: &Path,
    phase: &Phase,
) -> Result<Loaded> {
    let bar = phase.spinner("reading the BEIR folder");
    let mut set = crate::beir::load(dir, qrels)?;
    set.corpus_vectors = None;
    set.query_vectors = None;
    bar.finish_and_clear();
    let engine = Engine::builder().embedder(model).open(db_dir)?;
    let bar = phase.spinner("loading and embedding the corpus");
    let t = Instant::now();
    crate::beir::load_into(&engine, &set)?;
    let mut row = rate("products", set.corpus.len(), t);
    row.what = "products (embedded at commit)".to_string();
    bar.finish_and_clear();
    let bar = phase.spinner("embedding the queries");
    let ids = set.query_ids();
    let texts: Vec<&str> = ids
        .iter()
        .filter_map(|q| set.queries.get(q).map(String::as_str))
        .collect();
    let embedder = engine
        .embedder()
        .ok_or_else(|| Error::invalid("bench.embedder", "the engine has no encoder"))?;
    let info = embedder.info().clone();
    let vectors = embedder.embed(&texts)?;
    set.query_vectors = Some(ids.into_iter().zip(vectors).collect());
    bar.finish_and_clear();
    let mut loaded = beir_loaded(engine, set, row)?;
    loaded.notes.push(format!(
        "vectors: the engine's own encoder {} (dim {}, sha256 {}), documents as title + text, \
         queries as typed; the folder's embeddings/ ignored",
        info.name,
        info.dim,
        info.checksum.get(..12).unwrap_or(&info.checksum)
    ));
    Ok(loaded)
}

/// The loaded BEIR set: its queries for the latency phase and its notes.
fn beir_loaded(engine: Engine, set: BeirSet, row: IngestRow) -> Result<Loaded> {
    let limits = engine.config().limits.clone();
    let mut texts: Vec<String> = set
        .query_ids()
        .iter()
        .filter_map(|q| set.queries.get(q))
        .map(|t| crate::beir::fit_query(t, &limits).0)
        .collect();
    texts.extend(title_words(&engine, 2_000));
    let vectors = set
        .query_vectors
        .as_ref()
        .map(|m| {
            let mut ids: Vec<&String> = m.keys().collect();
            ids.sort();
            ids.into_iter()
                .filter_map(|id| m.get(id).cloned())
                .collect()
        })
        .unwrap_or_default();
    let mut notes = vec!["BEIR: no interactions, so no recommendation figures".to_string()];
    if set.query_vectors.is_none() {
        notes.push("no embeddings/ folder: BM25 only".to_string());
    }
    Ok(Loaded {
        engine,
        search: Some(set),
        texts,
        vectors,
        ingest: vec![row],
        notes,
    })
}

fn load_generic(
    products: &Path,
    events: &Path,
    embeddings: Option<&(PathBuf, PathBuf)>,
    db_dir: &Path,
    phase: &Phase,
) -> Result<Loaded> {
    let vectors = match embeddings {
        Some((f32_path, ids_path)) => Some(crate::beir::read_vector_files(f32_path, ids_path)?),
        None => None,
    };
    let dim = vectors
        .as_ref()
        .and_then(|m| m.values().next().map(Vec::len))
        .unwrap_or(GENERATED_DIM);
    let engine = open(db_dir, dim)?;
    let bar = phase.spinner("importing products");
    let t = Instant::now();
    let r = crate::import::products_jsonl_with_vectors(
        &engine,
        products,
        OnError::Abort,
        vectors.as_ref(),
    )?;
    let mut ingest = vec![rate("products", r.imported, t)];
    bar.finish_and_clear();
    let bar = phase.spinner("importing events");
    let t = Instant::now();
    let r = crate::import::events_csv(&engine, events, OnError::Abort)?;
    ingest.push(rate("events", r.imported, t));
    bar.finish_and_clear();
    let texts = title_words(&engine, 2_000);
    let query_vectors = sample_vectors(&engine, 200);
    Ok(Loaded {
        engine,
        search: None,
        texts,
        vectors: query_vectors,
        ingest,
        notes: vec!["generic: ingest rates include parsing the files".to_string()],
    })
}

/// Up to `n` search texts taken from product titles: the first two words of every n-th
/// title, deduplicated.
pub(super) fn title_words(engine: &Engine, n: usize) -> Vec<String> {
    let ids = engine.product_ids();
    let step = (ids.len() / n.max(1)).max(1);
    let mut seen = std::collections::HashSet::new();
    ids.iter()
        .step_by(step)
        .filter_map(|id| engine.get_product(id).ok().flatten())
        .map(|p| {
            p.title
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|t| !t.is_empty() && seen.insert(t.clone()))
        .collect()
}

/// The stored vectors of up to `n` products spread over the catalog.
pub(super) fn sample_vectors(engine: &Engine, n: usize) -> Vec<Vec<f32>> {
    let ids = engine.product_ids();
    let step = (ids.len() / n.max(1)).max(1);
    ids.iter()
        .step_by(step)
        .filter_map(|id| engine.get_product(id).ok().flatten())
        .filter_map(|p| p.embedding)
        .take(n)
        .collect()
}

/// Writes products as JSON lines in the generic format (every field the product has, the
/// embedding left to [`write_vectors`]).
///
/// # Errors
/// [`Error::Io`].
pub fn write_products_jsonl(path: &Path, products: &[Product]) -> Result<()> {
    let mut out = String::new();
    for p in products {
        let mut row = serde_json::json!({ "id": p.id });
        let fields = [
            ("title", &p.title),
            ("description", &p.description),
            ("brand", &p.brand),
            ("category", &p.category),
        ];
        for (name, value) in fields {
            if !value.is_empty() {
                row[name] = serde_json::Value::from(value.as_str());
            }
        }
        if let Some(price) = p.price {
            row["price"] = serde_json::Value::from(price);
        }
        if !p.attributes.is_empty() {
            row["attributes"] = serde_json::json!(p.attributes);
        }
        out.push_str(&row.to_string());
        out.push('\n');
    }
    std::fs::write(path, out).map_err(|e| Error::io(path, e))
}

/// Writes events as the generic CSV: header `user,item,kind,ts`, a rating as its value.
///
/// # Errors
/// [`Error::Io`].
pub fn write_events_csv(path: &Path, events: &[Event]) -> Result<()> {
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut w = csv::Writer::from_writer(std::io::BufWriter::new(file));
    let io = |e: csv::Error| Error::io(path, std::io::Error::other(e));
    w.write_record(["user", "item", "kind", "ts"]).map_err(io)?;
    for e in events {
        let kind = match e.kind {
            crate::events::EventKind::Rating(v) => v.to_string(),
            other => other.name().to_string(),
        };
        w.write_record([e.user.as_str(), e.item.as_str(), &kind, &e.ts.to_string()])
            .map_err(io)?;
    }
    w.flush().map_err(|e| Error::io(path, e))
}

/// Writes the products' embeddings as `f32_path` (raw little-endian rows) and `ids_path`
/// (one id per row); products without one are left out.
///
/// # Errors
/// [`Error::Io`].
pub fn write_vectors(f32_path: &Path, ids_path: &Path, products: &[Product]) -> Result<()> {
    let mut bytes = Vec::new();
    let mut ids = String::new();
    for p in products {
        if let Some(v) = &p.embedding {
            bytes.extend(v.iter().flat_map(|x| x.to_le_bytes()));
            ids.push_str(&p.id);
            ids.push('\n');
        }
    }
    std::fs::write(f32_path, bytes).map_err(|e| Error::io(f32_path, e))?;
    std::fs::write(ids_path, ids).map_err(|e| Error::io(ids_path, e))
}
