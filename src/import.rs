//! Readers for the file formats the engine imports: products JSONL, events CSV/TSV, user
//! sequences (the S3-Rec / P5 `user_sequence.txt`), the MovieLens 100K folder, and
//! RecBole-style knowledge-graph `.kg` + `.link` files.
//!
//! A bad row reports file, line and reason ([`Error::BadRow`]); [`OnError`] picks whether it
//! aborts the import (nothing from the file is stored) or is skipped and counted.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::catalog::Product;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::events::{Event, EventKind};
use crate::progress::Progress;

/// Rows staged between commits during an import.
const CHUNK: usize = 20_000;

/// What to do with a bad row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnError {
    /// Stop at the first bad row; nothing from the file is stored. The default.
    #[default]
    Abort,
    /// Skip bad rows, count them and keep the first few errors.
    Skip,
}

/// What an import did.
#[derive(Debug, Default)]
pub struct ImportReport {
    /// Rows stored.
    pub imported: usize,
    /// Rows skipped (only with [`OnError::Skip`]).
    pub skipped: usize,
    /// The first errors met (at most 10).
    pub errors: Vec<Error>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProductRow {
    id: serde_json::Value,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    brand: Option<String>,
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    price: Option<f64>,
    #[serde(default)]
    attributes: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    embedding: Option<Vec<f32>>,
}

fn json_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn bar(len: u64, what: &str) -> Progress {
    let pb = Progress::bar(len, "{msg:12} [{bar:30}] {percent:>3}% {per_sec} {eta}");
    pb.set_message(what.to_string());
    pb
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn open(path: &Path) -> Result<BufReader<std::fs::File>> {
    std::fs::File::open(path)
        .map(BufReader::new)
        .map_err(|e| Error::io(path, e))
}

fn bad(path: &Path, line: u64, reason: impl Into<String>) -> Error {
    Error::BadRow {
        path: path.to_path_buf(),
        line,
        reason: reason.into(),
    }
}

/// Collects parsed rows, applying the bad-row policy.
struct Rows<T> {
    rows: Vec<T>,
    report: ImportReport,
    on_error: OnError,
}

impl<T> Rows<T> {
    fn new(on_error: OnError) -> Self {
        Rows {
            rows: Vec::new(),
            report: ImportReport::default(),
            on_error,
        }
    }

    fn push(&mut self, row: Result<T>) -> Result<()> {
        match row {
            Ok(r) => self.rows.push(r),
            Err(e) if self.on_error == OnError::Skip => {
                self.report.skipped += 1;
                if self.report.errors.len() < 10 {
                    self.report.errors.push(e);
                }
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }
}

/// Reads lines as UTF-8; invalid UTF-8 is a bad row.
fn lines(path: &Path) -> Result<impl Iterator<Item = (u64, std::io::Result<Vec<u8>>)>> {
    let reader = open(path)?;
    Ok(reader
        .split(b'\n')
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l)))
}

fn utf8(path: &Path, line: u64, bytes: Vec<u8>) -> Result<String> {
    let mut s = String::from_utf8(bytes).map_err(|e| {
        bad(
            path,
            line,
            format!("invalid UTF-8 at byte {}", e.utf8_error().valid_up_to()),
        )
    })?;
    if s.ends_with('\r') {
        s.pop();
    }
    Ok(s)
}

/// Parses one JSONL product line.
pub(crate) fn parse_product_line(text: &str) -> std::result::Result<Product, String> {
    let row: ProductRow = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut p = Product::new(json_text(&row.id));
    p.title = row.title.unwrap_or_default();
    p.description = row.description.unwrap_or_default();
    p.brand = row.brand.unwrap_or_default();
    p.category = row.category.unwrap_or_default();
    p.price = row.price;
    p.attributes = row
        .attributes
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| (k.clone(), json_text(v)))
        .collect();
    p.embedding = row.embedding;
    Ok(p)
}

/// Imports products from JSON lines: `{"id", "title", "description", "brand", "category",
/// "price", "attributes": {..}, "embedding": [..]}` (all but `id` optional).
///
/// # Errors
/// [`Error::BadRow`] (abort mode), [`Error::Io`], or an engine validation error naming the row.
pub fn products_jsonl(engine: &Engine, path: &Path, on_error: OnError) -> Result<ImportReport> {
    products_jsonl_with_vectors(engine, path, on_error, None)
}

/// [`products_jsonl`], with embeddings kept apart from the JSON lines (e.g. a `.f32` + `.ids`
/// pair the BEIR loader reads): a product whose id is in `vectors` gets
/// that embedding, replacing any in its line.
///
/// # Errors
/// As [`products_jsonl`]; a vector of the wrong dimension or not finite is a bad row.
pub fn products_jsonl_with_vectors(
    engine: &Engine,
    path: &Path,
    on_error: OnError,
    vectors: Option<&std::collections::HashMap<String, Vec<f32>>>,
) -> Result<ImportReport> {
    let pb = bar(file_len(path), "products");
    let mut rows = Rows::new(on_error);
    let limits = engine.config().limits.clone();
    let dim = engine.config().dim;
    for (line, bytes) in lines(path)? {
        let bytes = bytes.map_err(|e| Error::io(path, e))?;
        pb.inc(bytes.len() as u64 + 1);
        let parsed = utf8(path, line, bytes).and_then(|text| {
            if text.trim().is_empty() {
                return Ok(None);
            }
            let mut p = parse_product_line(&text).map_err(|e| bad(path, line, e))?;
            if let Some(v) = vectors.and_then(|m| m.get(&p.id)) {
                p.embedding = Some(v.clone());
            }
            p.validate(&limits, dim)
                .map_err(|e| bad(path, line, e.to_string()))?;
            Ok(Some(p))
        });
        rows.push(parsed)?;
    }
    pb.finish_and_clear();
    let products: Vec<Product> = rows.rows.into_iter().flatten().collect();
    let mut report = rows.report;
    report.imported = products.len();
    stage_products(engine, products)?;
    Ok(report)
}

fn stage_products(engine: &Engine, products: Vec<Product>) -> Result<()> {
    // Later rows win when an id repeats, as they would one by one.
    let mut last: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (i, p) in products.iter().enumerate() {
        last.insert(p.id.clone(), i);
    }
    let mut chunk = Vec::with_capacity(CHUNK);
    for (i, p) in products.into_iter().enumerate() {
        if last.get(&p.id) == Some(&i) {
            chunk.push(p);
        }
        if chunk.len() >= CHUNK {
            engine.upsert_products(std::mem::take(&mut chunk))?;
            engine.commit()?;
        }
    }
    engine.upsert_products(chunk)?;
    engine.commit()?;
    Ok(())
}

/// Imports events from CSV (or TSV when the file name ends in `.tsv`) with a header naming
/// `user`, `item`, `kind` and `ts` columns (`user_id`/`item_id`/`timestamp` also accepted).
/// `kind` is view, click, cart, purchase, or a number (a rating).
///
/// # Errors
/// [`Error::BadRow`] (abort mode), [`Error::Io`].
pub fn events_csv(engine: &Engine, path: &Path, on_error: OnError) -> Result<ImportReport> {
    let delimiter = if path.extension().is_some_and(|e| e == "tsv") {
        b'\t'
    } else {
        b','
    };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .from_reader(open(path)?);
    let headers = reader
        .headers()
        .map_err(|e| bad(path, 1, e.to_string()))?
        .clone();
    let col = |names: &[&str]| {
        headers
            .iter()
            .position(|h| names.contains(&h.trim().to_ascii_lowercase().as_str()))
    };
    let (Some(cu), Some(ci), Some(ck), Some(ct)) = (
        col(&["user", "user_id", "userid"]),
        col(&["item", "item_id", "itemid", "product", "product_id"]),
        col(&["kind", "event", "type", "rating"]),
        col(&["ts", "timestamp", "time"]),
    ) else {
        return Err(bad(
            path,
            1,
            "header must name user, item, kind and ts columns",
        ));
    };
    let pb = bar(file_len(path), "events");
    let mut rows = Rows::new(on_error);
    let limits = engine.config().limits.clone();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let known: std::collections::HashSet<String> = engine.product_ids().into_iter().collect();
    let mut record = csv::ByteRecord::new();
    loop {
        let line = reader.position().line();
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                rows.push(Err(bad(path, line, e.to_string())))?;
                continue;
            }
        }
        pb.set_position(reader.position().byte());
        let parsed = (|| {
            let field = |i: usize| -> Result<String> {
                let b = record
                    .get(i)
                    .ok_or_else(|| bad(path, line, format!("missing column {}", i + 1)))?;
                std::str::from_utf8(b)
                    .map(|s| s.trim().to_string())
                    .map_err(|_| bad(path, line, "invalid UTF-8"))
            };
            let kind_text = field(ck)?;
            let kind = EventKind::parse(&kind_text)
                .ok_or_else(|| bad(path, line, format!("unknown event kind {kind_text:?}")))?;
            let ts_text = field(ct)?;
            let ts = ts_text.parse::<i64>().map_err(|_| {
                bad(
                    path,
                    line,
                    format!("timestamp {ts_text:?} is not an integer"),
                )
            })?;
            let e = Event::new(field(cu)?, field(ci)?, kind, ts);
            e.validate(&limits, now)
                .map_err(|err| bad(path, line, err.to_string()))?;
            if !known.contains(&e.item) {
                return Err(bad(path, line, format!("unknown item {:?}", e.item)));
            }
            Ok(e)
        })();
        rows.push(parsed)?;
    }
    pb.finish_and_clear();
    let mut report = rows.report;
    report.imported = rows.rows.len();
    for chunk in rows.rows.chunks(CHUNK * 5) {
        engine.append_events(chunk.to_vec())?;
        engine.commit()?;
    }
    Ok(report)
}

/// The time of the first interaction of every imported sequence (2020-09-13 UTC): fixed, so
/// that an import is the same on every day; the next ones follow [`SEQUENCE_STEP_SECS`] apart.
pub const SEQUENCE_START_TS: i64 = 1_600_000_000;
/// Seconds between two consecutive items of an imported sequence.
pub const SEQUENCE_STEP_SECS: i64 = 60;

/// One user's time-ordered items, as read from a sequence file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sequence {
    /// The user id.
    pub user: String,
    /// The items, oldest first.
    pub items: Vec<String>,
    /// The line it was read from (1-based).
    pub line: u64,
}

/// Reads the S3-Rec / P5 `user_sequence.txt` format: one line per user, `user item1 item2 ...`
/// separated by spaces or tabs, items in time order (no timestamps). Blank lines are skipped.
/// A line with a user and no item, a user on two lines, an id over
/// [`Limits::max_id_bytes`](crate::config::Limits) or invalid UTF-8 is a bad row naming its
/// line.
///
/// # Errors
/// [`Error::BadRow`] (abort mode), [`Error::Io`].
pub fn read_sequences(
    path: &Path,
    limits: &crate::config::Limits,
    on_error: OnError,
) -> Result<(Vec<Sequence>, ImportReport)> {
    let mut rows = Rows::new(on_error);
    let mut first_line: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for (line, bytes) in lines(path)? {
        let bytes = bytes.map_err(|e| Error::io(path, e))?;
        let parsed = utf8(path, line, bytes).and_then(|text| {
            let mut fields = text.split_whitespace();
            let Some(user) = fields.next() else {
                return Ok(None);
            };
            let items: Vec<String> = fields.map(str::to_string).collect();
            if items.is_empty() {
                return Err(bad(path, line, format!("user {user:?} has no items")));
            }
            crate::catalog::validate_id("sequence.user", user, limits)
                .map_err(|e| bad(path, line, e.to_string()))?;
            for item in &items {
                crate::catalog::validate_id("sequence.item", item, limits)
                    .map_err(|e| bad(path, line, e.to_string()))?;
            }
            if let Some(first) = first_line.get(user) {
                return Err(bad(
                    path,
                    line,
                    format!("user {user:?} already has a sequence on line {first}"),
                ));
            }
            first_line.insert(user.to_string(), line);
            Ok(Some(Sequence {
                user: user.to_string(),
                items,
                line,
            }))
        });
        rows.push(parsed)?;
    }
    let sequences: Vec<Sequence> = rows.rows.into_iter().flatten().collect();
    let mut report = rows.report;
    report.imported = sequences.iter().map(|s| s.items.len()).sum();
    Ok((sequences, report))
}

/// Imports a sequence file ([`read_sequences`]): every item not yet in the catalog becomes a
/// product with only its id (created in the order of their ids, so that no item's dense id
/// follows the order of the sequences), and every item of a sequence a purchase by its user,
/// at [`SEQUENCE_START_TS`] plus [`SEQUENCE_STEP_SECS`] per position, so that time order is
/// sequence order. The whole file is read and checked before anything is stored.
///
/// # Errors
/// [`Error::BadRow`] (abort mode), [`Error::Io`].
pub fn sequences(engine: &Engine, path: &Path, on_error: OnError) -> Result<ImportReport> {
    let limits = engine.config().limits.clone();
    let (seqs, mut report) = read_sequences(path, &limits, on_error)?;
    let known: std::collections::HashSet<String> = engine.product_ids().into_iter().collect();
    let mut new_items: Vec<&str> = seqs
        .iter()
        .flat_map(|s| s.items.iter().map(String::as_str))
        .filter(|i| !known.contains(*i))
        .collect();
    new_items.sort_unstable();
    new_items.dedup();
    let now = crate::events::now_secs();
    let mut events = Vec::with_capacity(report.imported);
    for s in &seqs {
        for (pos, item) in s.items.iter().enumerate() {
            let ts = SEQUENCE_START_TS + SEQUENCE_STEP_SECS * pos as i64;
            let e = Event::new(s.user.as_str(), item.as_str(), EventKind::Purchase, ts);
            e.validate(&limits, now)
                .map_err(|err| bad(path, s.line, err.to_string()))?;
            events.push(e);
        }
    }
    let products: Vec<Product> = new_items.iter().map(|id| Product::new(*id)).collect();
    report.imported += products.len();
    stage_products(engine, products)?;
    for chunk in events.chunks(CHUNK * 5) {
        engine.append_events(chunk.to_vec())?;
        engine.commit()?;
    }
    Ok(report)
}

/// Decodes Latin-1 bytes (the MovieLens files' encoding).
fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|b| char::from(*b)).collect()
}

/// Imports the MovieLens 100K folder: `u.item` becomes products (title, genres as
/// categories `genre/<name>`, release date as an attribute), `u.data` rating events.
/// Product and user ids are MovieLens's numbers as text.
///
/// # Errors
/// [`Error::BadRow`], [`Error::Io`].
pub fn movielens(engine: &Engine, dir: &Path) -> Result<ImportReport> {
    let genres_path = dir.join("u.genre");
    let genres: Vec<String> = std::fs::read(&genres_path)
        .map_err(|e| Error::io(&genres_path, e))
        .map(|b| latin1(&b))?
        .lines()
        .filter_map(|l| l.split('|').next().map(str::to_string))
        .filter(|g| !g.is_empty())
        .collect();
    let item_path = dir.join("u.item");
    let mut products = Vec::new();
    for (line, bytes) in lines(&item_path)? {
        let bytes = bytes.map_err(|e| Error::io(&item_path, e))?;
        let text = latin1(&bytes);
        let text = text.trim_end();
        if text.is_empty() {
            continue;
        }
        let f: Vec<&str> = text.split('|').collect();
        if f.len() < 5 + genres.len() {
            return Err(bad(
                &item_path,
                line,
                format!("{} fields, expected {}", f.len(), 5 + genres.len()),
            ));
        }
        let flags = &f[f.len() - genres.len()..];
        let item_genres: Vec<&str> = genres
            .iter()
            .zip(flags)
            .filter(|(_, flag)| flag.trim() == "1")
            .map(|(g, _)| g.as_str())
            .collect();
        let mut p = Product::new(f[0])
            .title(f[1])
            .category(format!(
                "genre/{}",
                item_genres.first().copied().unwrap_or("unknown")
            ))
            .description(item_genres.join(" "));
        if !f[2].is_empty() {
            p = p.attribute("released", f[2]);
        }
        for g in &item_genres {
            p = p.attribute(format!("genre:{g}"), "1");
        }
        products.push(p);
    }
    let n_products = products.len();
    // Every file is read and checked before anything is stored: a bad row stores nothing.
    let data_path = dir.join("u.data");
    let mut events = Vec::new();
    let mut event_lines = Vec::new();
    for (line, bytes) in lines(&data_path)? {
        let bytes = bytes.map_err(|e| Error::io(&data_path, e))?;
        let text = utf8(&data_path, line, bytes)?;
        if text.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = text.split('\t').collect();
        let (Some(u), Some(i), Some(r), Some(t)) = (f.first(), f.get(1), f.get(2), f.get(3)) else {
            return Err(bad(
                &data_path,
                line,
                "expected user, item, rating, timestamp",
            ));
        };
        let rating: f32 = r
            .trim()
            .parse()
            .map_err(|_| bad(&data_path, line, "rating is not a number"))?;
        let ts: i64 = t
            .trim()
            .parse()
            .map_err(|_| bad(&data_path, line, "timestamp is not an integer"))?;
        events.push(Event::new(
            u.trim(),
            i.trim(),
            EventKind::Rating(rating),
            ts,
        ));
        event_lines.push(line);
    }
    let n_events = events.len();
    let now = crate::events::now_secs();
    let mut ids: std::collections::HashSet<String> = engine.product_ids().into_iter().collect();
    ids.extend(products.iter().map(|p| p.id.clone()));
    for (e, line) in events.iter().zip(&event_lines) {
        e.validate(&engine.config().limits, now)
            .map_err(|err| bad(&data_path, *line, err.to_string()))?;
        if !ids.contains(&e.item) {
            return Err(bad(&data_path, *line, format!("unknown item {:?}", e.item)));
        }
    }
    stage_products(engine, products)?;
    for chunk in events.chunks(CHUNK * 5) {
        engine.append_events(chunk.to_vec())?;
        engine.commit()?;
    }
    Ok(ImportReport {
        imported: n_products + n_events,
        ..ImportReport::default()
    })
}

/// Imports RecBole-style knowledge-graph files: `kg` has `head relation tail` rows, `link`
/// has `item entity` rows (tab-separated, with a header line). Links to items not in the
/// catalog are skipped and counted.
///
/// # Errors
/// [`Error::BadRow`], [`Error::Io`].
pub fn recbole_kg(engine: &Engine, kg: &Path, link: &Path) -> Result<ImportReport> {
    let mut report = ImportReport::default();
    let mut triples = Vec::new();
    for (line, bytes) in lines(kg)? {
        let text = utf8(kg, line, bytes.map_err(|e| Error::io(kg, e))?)?;
        if line == 1 && text.contains(":token") || text.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = text.split('\t').map(str::trim).collect();
        if f.len() != 3 || f.iter().any(|s| s.is_empty()) {
            return Err(bad(kg, line, "expected head, relation, tail"));
        }
        triples.push((f[0].to_string(), f[1].to_string(), f[2].to_string()));
    }
    report.imported += triples.len();
    // Both files are read and checked before anything is stored: a bad row stores nothing.
    let known: std::collections::HashSet<String> = engine.product_ids().into_iter().collect();
    let mut links = Vec::new();
    for (line, bytes) in lines(link)? {
        let text = utf8(link, line, bytes.map_err(|e| Error::io(link, e))?)?;
        if line == 1 && text.contains(":token") || text.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = text.split('\t').map(str::trim).collect();
        if f.len() != 2 || f.iter().any(|s| s.is_empty()) {
            return Err(bad(link, line, "expected item, entity"));
        }
        if known.contains(f[0]) {
            links.push((f[0].to_string(), f[1].to_string()));
        } else {
            report.skipped += 1;
        }
    }
    for chunk in triples.chunks(CHUNK * 5) {
        engine.add_triples(chunk.to_vec())?;
        engine.commit()?;
    }
    report.imported += links.len();
    engine.link_items(links)?;
    engine.commit()?;
    Ok(report)
}

/// The shared data folder: `SHOPDB_DATA`, or `../shared/data` when unset.
pub fn data_dir() -> PathBuf {
    std::env::var_os("SHOPDB_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared/data"))
}
