//! What the fuzz targets run, shared with the corpus replay test.
//!
//! Each entry point takes the fuzzer's bytes, drives one part of the engine with them and
//! checks what must hold for any input: no panic, a typed error or a result that obeys the
//! request, and, where the API promises it, a store left as it was after an error. The targets
//! in `fuzz/fuzz_targets/` call these functions and `tests/it/fuzz_corpus.rs` replays every
//! file of `fuzz/corpus/` through them, so `cargo test` runs the same checks on stable without
//! cargo-fuzz. Not part of the public API: it may change in any release.
//!
//! A failed check panics (that is how a fuzzer learns of a finding); nothing here is called by
//! the engine itself.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::catalog::Product;
use crate::channel::Fusion;
use crate::config::{HnswParams, Metric};
use crate::engine::{Engine, Stats};
use crate::error::{Error, Result};
use crate::events::{Event, EventKind};
use crate::filter::Filter;
use crate::import::{self, OnError};
use crate::query::Query;

mod ops;

pub use ops::ops;

/// Vector dimension of every engine built here.
pub const DIM: usize = 8;

/// Reads typed values off the fuzzer's bytes. Past the end every read is zero or empty, so
/// every input decodes to something.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// Reads from `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    /// Whether every byte was read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next byte (0 past the end).
    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        usize::from(self.byte()) % n.max(1)
    }

    /// A flag.
    pub fn flag(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    /// One of `options` (which is not empty).
    pub fn pick<T: Clone>(&mut self, options: &[T]) -> T {
        let i = self.below(options.len());
        options[i].clone()
    }

    /// A run of at most `max` bytes, its length read first.
    pub fn bytes(&mut self, max: usize) -> &'a [u8] {
        let len = (usize::from(self.byte()) << 8 | usize::from(self.byte())).min(max);
        let (head, rest) = self.data.split_at(len.min(self.data.len()));
        self.data = rest;
        head
    }

    /// Text of at most `max` bytes (invalid UTF-8 replaced).
    pub fn text(&mut self, max: usize) -> String {
        String::from_utf8_lossy(self.bytes(max)).into_owned()
    }

    /// Every byte not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

/// Floats that break arithmetic: NaN, infinities, zero, subnormals, extremes.
const F32S: [f32; 12] = [
    0.5,
    1.0,
    -1.0,
    0.0,
    -0.0,
    f32::NAN,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::MIN_POSITIVE,
    1e-45,
    f32::MAX,
    3.25,
];

/// Counts around every limit (k, candidates), and far past them.
const COUNTS: [usize; 12] = [
    1,
    10,
    0,
    2,
    5,
    100,
    1000,
    1001,
    10_000,
    10_001,
    1_000_000_000,
    usize::MAX,
];

/// A directory removed when dropped (the library has no temp-dir dependency).
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// A new, empty directory under the system's temporary directory.
    ///
    /// # Errors
    /// [`Error::Io`] when it cannot be created.
    pub fn new(tag: &str) -> Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("shopdb-fuzz-{tag}-{}-{n}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        }
        std::fs::create_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        Ok(Scratch { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `bytes` to `name` inside the directory and returns the file's path.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<PathBuf> {
        let path = self.path.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))?;
        Ok(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A small shop on disk: 40 products (English and Chinese titles, three brands, nested
/// categories, vectors), 12 users with a few dozen events, and optionally trained models.
pub struct Shop {
    /// The engine (its directory is removed when the shop is dropped).
    pub engine: Engine,
    _dir: Scratch,
}

/// Brands of the shop, plus names that are not (filters on them match nothing).
pub const BRANDS: [&str; 5] = ["Acme", "Globex", "Initech", "nobody", ""];
/// Categories of the shop, plus prefixes and strays.
pub const CATEGORIES: [&str; 6] = [
    "shoes",
    "shoes/running",
    "bags/backpacks",
    "shoes/formal",
    " / ",
    "none",
];
/// Title words (text queries are made of them, or of anything).
const WORDS: [&str; 8] = [
    "running",
    "shoe",
    "leather",
    "backpack",
    "跑步鞋",
    "背包",
    "trail",
    "red",
];

impl Shop {
    /// Builds the shop; `trained` also trains every model on it (about a second).
    ///
    /// # Errors
    /// Any engine error (none is expected).
    pub fn new(trained: bool) -> Result<Shop> {
        let dir = Scratch::new("shop")?;
        let engine = Engine::builder()
            .dim(DIM)
            .durable_commits(false)
            .open(dir.path())?;
        engine.upsert_products((0..40).map(shop_product).collect())?;
        engine.append_events(shop_events())?;
        engine.commit()?;
        if trained {
            engine.train(&crate::train::TrainOptions::default())?;
        }
        Ok(Shop { engine, _dir: dir })
    }
}

fn shop_vector(i: usize) -> Vec<f32> {
    (0..DIM)
        .map(|d| (((i * 7 + d * 3) % 11) as f32 - 5.0) / 5.0 + 0.01)
        .collect()
}

fn shop_product(i: usize) -> Product {
    Product::new(format!("p{i}"))
        .title(format!(
            "{} {} {i}",
            WORDS[i % WORDS.len()],
            WORDS[(i / 3) % WORDS.len()]
        ))
        .brand(BRANDS[i % 3])
        .category(CATEGORIES[1 + i % 3])
        .price(5.0 + i as f64)
        .attribute("color", if i.is_multiple_of(2) { "red" } else { "blue" })
        .embedding(shop_vector(i))
}

fn shop_events() -> Vec<Event> {
    let kinds = [
        EventKind::View,
        EventKind::Click,
        EventKind::Cart,
        EventKind::Purchase,
        EventKind::Rating(4.0),
    ];
    let mut out = Vec::new();
    for u in 0..12usize {
        for j in 0..10usize {
            let item = (u * 3 + j * j) % 40;
            out.push(Event::new(
                format!("u{u}"),
                format!("p{item}"),
                kinds[(u + j) % kinds.len()],
                1_700_000_000 + (u * 100 + j) as i64,
            ));
        }
    }
    out
}

/// What a failed write must leave untouched: the counts of every store (not sizes on disk,
/// which background merges may change).
pub fn fingerprint(engine: &Engine) -> Stats {
    Stats {
        store_bytes: 0,
        text_bytes: 0,
        typo_list_bytes: 0,
        ..engine.stats()
    }
}

// ------------------------------------------------------------------ statement parser

/// Arbitrary text into the query language's front end: splitting, completeness, planning.
pub fn sql_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = crate::sql::is_complete(text);
    if let Ok(plan) = crate::sql::plan(text) {
        // Plans are printable (EXPLAIN shows them).
        let _ = format!("{plan:?}");
    }
    if let Ok(statements) = crate::sql::split_script(text) {
        for s in &statements {
            // A piece of a script is never longer than the script, and plans like a statement.
            assert!(s.text.len() <= text.len());
            let _ = crate::sql::plan_source(s);
        }
    }
}

// ------------------------------------------------------------------ import readers

/// Arbitrary bytes as an import file (products JSONL, events CSV or TSV, a MovieLens folder,
/// RecBole `.kg` + `.link`) into `shop`, in abort or skip mode.
///
/// Checks: nothing is left staged, and an import that fails (in abort mode for the formats
/// that have a skip mode) stored nothing.
pub fn import(shop: &Shop, data: &[u8]) {
    let mut input = Input::new(data);
    let format = input.below(5);
    let on_error = if input.flag() {
        OnError::Skip
    } else {
        OnError::Abort
    };
    let engine = &shop.engine;
    let before = fingerprint(engine);
    let Ok(files) = Scratch::new("import") else {
        return;
    };
    let result = import_file(engine, &files, format, on_error, &mut input);
    assert_eq!(engine.pending_ops(), 0, "an import left writes staged");
    if let Err(e) = result {
        let atomic = format > 2 || on_error == OnError::Abort;
        if atomic && !matches!(e, Error::Io { .. }) {
            assert_eq!(
                fingerprint(engine),
                before,
                "a failed import stored rows: {e}"
            );
        }
    }
}

fn import_file(
    engine: &Engine,
    files: &Scratch,
    format: usize,
    on_error: OnError,
    input: &mut Input<'_>,
) -> Result<import::ImportReport> {
    match format {
        0 => import::products_jsonl(engine, &files.write("in.jsonl", input.rest())?, on_error),
        1 => import::events_csv(engine, &files.write("in.csv", input.rest())?, on_error),
        2 => import::events_csv(engine, &files.write("in.tsv", input.rest())?, on_error),
        3 => {
            files.write("ml/u.genre", input.bytes(256))?;
            files.write("ml/u.item", input.bytes(2048))?;
            files.write("ml/u.data", input.rest())?;
            import::movielens(engine, &files.path().join("ml"))
        }
        _ => {
            let kg = files.write("in.kg", input.bytes(2048))?;
            let link = files.write("in.link", input.rest())?;
            import::recbole_kg(engine, &kg, &link)
        }
    }
}

// ------------------------------------------------------------------ query builder

/// A query as decoded, with the parts the checks need kept beside it.
struct Request {
    query: Query,
    text: Option<String>,
    vector: Option<Vec<f32>>,
    filter: Filter,
    k: usize,
    similar_to: Option<String>,
}

fn arbitrary_filter(input: &mut Input<'_>, depth: usize) -> Filter {
    let leaf = depth >= 40;
    match input.below(10) {
        0 => Filter::All,
        1 => Filter::brand(input.pick(&BRANDS)),
        2 => Filter::category(input.pick(&CATEGORIES)),
        3 => {
            let bound =
                |input: &mut Input<'_>| input.flag().then(|| f64::from(input.pick(&F32S)) * 30.0);
            Filter::price(bound(input), bound(input))
        }
        4 => Filter::attribute(input.text(16), input.pick(&["red", "blue", ""])),
        5 if !leaf => Filter::And(children(input, depth)),
        6 if !leaf => Filter::Or(children(input, depth)),
        7 if !leaf => Filter::Not(Box::new(arbitrary_filter(input, depth + 1))),
        8 => {
            // A deep chain at once: nesting limits are where stacks overflow.
            let mut f = Filter::brand("Acme");
            for _ in 0..input.pick(&[33, 100, 5000]) {
                f = Filter::Not(Box::new(f));
            }
            f
        }
        _ => Filter::brand(input.text(300)),
    }
}

fn children(input: &mut Input<'_>, depth: usize) -> Vec<Filter> {
    (0..input.below(4))
        .map(|_| arbitrary_filter(input, depth + 1))
        .collect()
}

fn arbitrary_vector(input: &mut Input<'_>) -> Vec<f32> {
    let dim = input.pick(&[DIM, DIM, DIM, 0, 1, DIM - 1, DIM + 1, 1000]);
    let pattern = input.below(3);
    (0..dim)
        .map(|i| match pattern {
            0 => shop_vector(3)[i % DIM],
            1 => input.pick(&F32S),
            _ => f32::from(input.byte()) - 128.0,
        })
        .collect()
}

fn arbitrary_text(input: &mut Input<'_>) -> String {
    match input.below(4) {
        0 => (0..input.below(6))
            .map(|_| input.pick(&WORDS))
            .collect::<Vec<_>>()
            .join(" "),
        1 => input.pick(&WORDS).repeat(input.pick(&[1, 100, 2000])),
        _ => input.text(512),
    }
}

fn arbitrary_id(input: &mut Input<'_>, prefix: &str) -> String {
    match input.below(4) {
        0 => format!("{prefix}{}", input.below(45)),
        1 => input.pick(&["", "ghost", "a\u{0}b"]).to_string(),
        2 => "x".repeat(input.pick(&[256, 257, 10_000])),
        _ => input.text(64),
    }
}

fn arbitrary_fusion(input: &mut Input<'_>) -> Fusion {
    match input.below(4) {
        0 => Fusion::Auto,
        1 => Fusion::Mlp,
        2 => Fusion::Linear {
            alpha: input.pick(&F32S),
            beta: input.pick(&F32S),
        },
        _ => Fusion::Rrf {
            k: input.pick(&F32S) * 60.0,
        },
    }
}

fn arbitrary_request(input: &mut Input<'_>) -> Request {
    let text = input.flag().then(|| arbitrary_text(input));
    let vector = input.flag().then(|| arbitrary_vector(input));
    let user = input.flag().then(|| arbitrary_id(input, "u"));
    let similar_to = input.flag().then(|| arbitrary_id(input, "p"));
    let filter = arbitrary_filter(input, 0);
    let k = input.pick(&COUNTS);
    let mut q = Query::new()
        .filter(filter.clone())
        .k(k)
        .candidates(input.pick(&COUNTS))
        .fusion(arbitrary_fusion(input))
        .exclude_purchased(input.flag())
        .explain(input.flag());
    if let Some(t) = &text {
        q = q.text(t.clone());
    }
    if let Some(v) = &vector {
        q = q.vector(v.clone());
    }
    if let Some(u) = user {
        q = q.user(u);
    }
    if let Some(s) = &similar_to {
        q = q.similar_to(s.clone());
    }
    if input.flag() {
        q = q.mmr(input.pick(&F32S));
    }
    if input.flag() {
        q = q.max_per_brand(input.pick(&COUNTS));
    }
    if input.flag() {
        // Shares and gammas in and out of range, NaN and infinities included.
        let mut e = crate::exposure::Exposure::new();
        if input.flag() {
            e = e.max_brand_share(input.pick(&F32S));
        }
        if input.flag() {
            e = e.min_long_tail_share(input.pick(&F32S));
        }
        if input.flag() {
            e = e.popularity_gamma(input.pick(&F32S));
        }
        q = q.exposure(e);
    }
    if input.flag() {
        q = q.time_budget(std::time::Duration::from_nanos(
            u64::from(input.byte()) * 1_000_000,
        ));
    }
    Request {
        query: q,
        text,
        vector,
        filter,
        k,
        similar_to,
    }
}

/// Arbitrary requests (text, vectors with NaN and infinities, filters, k, candidate counts,
/// fusion, diversity, budgets) against a trained shop, through [`Engine::query`] and the
/// single-channel searches.
///
/// Checks: every answer is a typed error or at most k distinct hits, each a live product that
/// passes the filter, with a finite score.
pub fn query(shop: &Shop, data: &[u8]) {
    let mut input = Input::new(data);
    let r = arbitrary_request(&mut input);
    let engine = &shop.engine;
    if let Ok(hits) = engine.query(&r.query) {
        let ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
        check_hits(engine, &r, &ids);
        for h in &hits {
            assert!(h.score.is_finite(), "{}: score {}", h.id, h.score);
            assert!(
                r.similar_to.as_deref() != Some(h.id.as_str()),
                "seed item returned"
            );
        }
    }
    let text = r.text.as_deref().unwrap_or("shoe");
    if let Ok(hits) = engine.search_text(text, &r.filter, r.k) {
        check_scored(engine, &r, &hits);
    }
    if let Some(v) = &r.vector {
        if let Ok(hits) = engine.search_vector(v, &r.filter, r.k) {
            check_scored(engine, &r, &hits);
        }
    }
    if let Ok(f) = engine.facets(text, &r.filter) {
        assert!(f.brands.iter().all(|(_, n)| *n > 0));
    }
}

fn check_scored(engine: &Engine, r: &Request, hits: &[crate::engine::Scored]) {
    let ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
    check_hits(engine, r, &ids);
}

fn check_hits(engine: &Engine, r: &Request, ids: &[&str]) {
    assert!(ids.len() <= r.k, "{} hits for k {}", ids.len(), r.k);
    let mut seen = std::collections::HashSet::new();
    for id in ids {
        assert!(seen.insert(*id), "{id} returned twice");
        let p = engine.get_product(id);
        let Ok(Some(p)) = p else {
            panic!("hit {id} is not a live product: {p:?}");
        };
        assert!(r.filter.matches(&p), "{id} does not pass {:?}", r.filter);
    }
}

// ------------------------------------------------------------------ loaders

/// Arbitrary bytes as the files the engine reads back: the vector snapshot manifest, the
/// snapshot's slot file (raw, or a valid envelope around arbitrary bytes so decoding is
/// reached), the model file (the same two ways), one channel's state as the model file holds
/// it, `config.json`, and the store's product and event-block records.
///
/// Checks: a typed error or a value; opening the vector index on a damaged snapshot still
/// succeeds (it is rebuilt from the catalog).
pub fn loaders(data: &[u8]) {
    let mut input = Input::new(data);
    let which = input.below(8);
    let bytes = input.rest();
    let Ok(dir) = Scratch::new("load") else {
        return;
    };
    match which {
        0 => {
            let _ = dir.write("vectors/MANIFEST", bytes);
            open_vectors(&dir);
        }
        1 | 2 => {
            let (magic, version) = (crate::vector::SLOTS_MAGIC, crate::vector::SLOTS_VERSION);
            let slots = file_bytes(which == 1, magic, version, bytes);
            if write_snapshot(&dir, &slots).is_ok() {
                open_vectors(&dir);
            }
        }
        3 | 4 => {
            let (magic, version) = (
                crate::generation::MODEL_MAGIC,
                crate::generation::MODEL_VERSION,
            );
            let model = file_bytes(which == 3, magic, version, bytes);
            let written = dir
                .write("models/CURRENT", b"gen-000001.bin")
                .and_then(|_| dir.write("models/gen-000001.bin", &model));
            if written.is_ok() {
                let _ = crate::generation::load(dir.path());
            }
        }
        7 => {
            // One channel's state, as the model file holds it (the sequence model's layout
            // checks included).
            let (pick, state) = bytes.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
            let registry = crate::channel::REGISTRY;
            let spec = &registry[usize::from(pick) % registry.len()];
            let _ = (spec.load)(state);
        }
        5 => {
            if let Ok(path) = dir.write("config.json", bytes) {
                let _ = crate::config::StoredConfig::load(&path);
            }
        }
        _ => {
            let _ = crate::codec::decode::<crate::catalog::StoredProduct>(bytes, "fuzz");
            let _ = crate::events::decode_block(bytes);
        }
    }
}

/// The bytes as a whole file, or wrapped in a valid envelope so that decoding is reached.
fn file_bytes(wrap: bool, magic: &[u8; 4], version: u32, bytes: &[u8]) -> Vec<u8> {
    if wrap {
        crate::codec::envelope(magic, version, bytes)
    } else {
        bytes.to_vec()
    }
}

/// A snapshot generation whose manifest vouches for `slots` (right length and checksum).
fn write_snapshot(dir: &Scratch, slots: &[u8]) -> Result<()> {
    dir.write("vectors/gen-000001/slots.bin", slots)?;
    let manifest = serde_json::json!({
        "generation": 1,
        "applied_seq": 1,
        "basename": "graph",
        "files": [{
            "name": "slots.bin",
            "len": slots.len(),
            "crc32": crate::fsutil::crc32(slots),
        }],
    });
    dir.write("vectors/MANIFEST", manifest.to_string().as_bytes())?;
    Ok(())
}

fn open_vectors(dir: &Scratch) {
    let opened = crate::vector::VectorIndex::open(
        &dir.path().join("vectors"),
        DIM,
        Metric::Cosine,
        &HnswParams::default(),
    );
    let (index, _, _) = match opened {
        Ok(o) => o,
        Err(e) => panic!("the vector index did not open over a damaged snapshot: {e}"),
    };
    // Whatever was loaded must answer a search without panicking.
    let _ = index.search(&shop_vector(1), 5, crate::vector::Allowed::All);
}
