//! BEIR benchmark folders: read one, load its corpus into an engine, and score the engine's
//! search on it the way BEIR (pytrec_eval) does.
//!
//! A BEIR folder holds `corpus.jsonl` (`{"_id", "title", "text"}` per line), `queries.jsonl`
//! (`{"_id", "text"}`), `qrels/<split>.tsv` (`query-id corpus-id score`, with a header line)
//! and, optionally, precomputed embeddings in `embeddings/`: `corpus.f32` + `corpus.ids` and
//! `queries.f32` + `queries.ids`, raw little-endian `f32` rows (one row per id line, every
//! row the same width).
//!
//! Metrics follow pytrec_eval's definitions:
//!
//! - **nDCG@k**: DCG with gain = relevance grade and discount `log2(rank + 1)` (rank 1-based)
//!   over the top `k`, divided by the DCG of the ideal ranking built from the query's qrels.
//! - **Recall@k**: relevant documents (grade > 0) in the top `k` over all relevant documents.
//! - **MRR@k**: reciprocal rank of the first relevant document within the top `k`, else 0.
//!
//! Every query of the split's qrels is scored; a query with no retrieved document scores 0.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Deserialize;

use crate::catalog::Product;
use crate::channel::Fusion;
use crate::config::Limits;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::query::Query;

/// Products staged per commit by [`load_into`].
const BATCH: usize = 1_000;
/// Candidates per channel for [`SearchMethod::Hybrid`] (at least the deepest cut-off).
const HYBRID_CANDIDATES: usize = 100;

/// One document of a BEIR corpus.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BeirDoc {
    /// The corpus `_id`.
    pub id: String,
    /// The title (empty when absent).
    pub title: String,
    /// The body text.
    pub text: String,
}

/// A BEIR data set with the qrels of one split.
#[derive(Clone, Debug, Default)]
pub struct BeirSet {
    /// Every document of `corpus.jsonl`, in file order.
    pub corpus: Vec<BeirDoc>,
    /// The split's queries (those named in its qrels): id to text.
    pub queries: HashMap<String, String>,
    /// The split's relevance judgements: query id to (corpus id to grade). Negative grades in
    /// the file are stored as 0 (not relevant).
    pub qrels: HashMap<String, HashMap<String, u32>>,
    /// Corpus embeddings by corpus id, when `embeddings/corpus.f32` exists.
    pub corpus_vectors: Option<HashMap<String, Vec<f32>>>,
    /// Query embeddings of the split's queries, when `embeddings/queries.f32` exists.
    pub query_vectors: Option<HashMap<String, Vec<f32>>>,
}

impl BeirSet {
    /// The split's query ids, sorted (the evaluation order).
    pub fn query_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.qrels.keys().cloned().collect();
        ids.sort();
        ids
    }
}

/// How [`evaluate_search`] retrieves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SearchMethod {
    /// BM25 alone: [`Engine::search_text`].
    Bm25,
    /// The query's embedding alone: [`Engine::search_vector`].
    Vector,
    /// [`Engine::query`] with the text and the embedding, fused this way, with
    /// `max(100, deepest k)` candidates per channel.
    Hybrid(Fusion),
}

impl SearchMethod {
    /// A short label for tables.
    pub fn label(&self) -> String {
        match self {
            SearchMethod::Bm25 => "bm25".to_string(),
            SearchMethod::Vector => "vector".to_string(),
            SearchMethod::Hybrid(Fusion::Linear { alpha, beta }) => {
                format!("hybrid linear(alpha {alpha}, beta {beta})")
            }
            SearchMethod::Hybrid(Fusion::Rrf { k }) => format!("hybrid rrf(k {k})"),
            SearchMethod::Hybrid(other) => format!("hybrid {other:?}"),
        }
    }
}

#[derive(Deserialize)]
struct CorpusRow {
    #[serde(rename = "_id")]
    id: serde_json::Value,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct QueryRow {
    #[serde(rename = "_id")]
    id: serde_json::Value,
    #[serde(default)]
    text: Option<String>,
}

fn bad(path: &Path, line: u64, reason: impl Into<String>) -> Error {
    Error::BadRow {
        path: path.to_path_buf(),
        line,
        reason: reason.into(),
    }
}

/// An id that may be written as a JSON string or number.
fn id_text(path: &Path, line: u64, v: &serde_json::Value) -> Result<String> {
    let id = match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        other => return Err(bad(path, line, format!("_id {other} is not a string"))),
    };
    if id.is_empty() {
        return Err(bad(path, line, "empty _id"));
    }
    Ok(id)
}

/// Calls `f(line number, line)` for every non-blank line (UTF-8, trailing `\r` removed).
fn each_line(path: &Path, mut f: impl FnMut(u64, &str) -> Result<()>) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    for (i, bytes) in BufReader::new(file).split(b'\n').enumerate() {
        let line = i as u64 + 1;
        let bytes = bytes.map_err(|e| Error::io(path, e))?;
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            bad(
                path,
                line,
                format!("invalid UTF-8 at byte {}", e.valid_up_to()),
            )
        })?;
        let text = text.strip_suffix('\r').unwrap_or(text);
        if !text.trim().is_empty() {
            f(line, text)?;
        }
    }
    Ok(())
}

fn read_corpus(path: &Path) -> Result<Vec<BeirDoc>> {
    let mut docs = Vec::new();
    let mut seen = HashSet::new();
    each_line(path, |line, text| {
        let row: CorpusRow =
            serde_json::from_str(text).map_err(|e| bad(path, line, e.to_string()))?;
        let id = id_text(path, line, &row.id)?;
        if !seen.insert(id.clone()) {
            return Err(bad(path, line, format!("duplicate _id {id:?}")));
        }
        docs.push(BeirDoc {
            id,
            title: row.title.unwrap_or_default(),
            text: row.text.unwrap_or_default(),
        });
        Ok(())
    })?;
    Ok(docs)
}

fn read_queries(path: &Path) -> Result<HashMap<String, String>> {
    let mut queries = HashMap::new();
    each_line(path, |line, text| {
        let row: QueryRow =
            serde_json::from_str(text).map_err(|e| bad(path, line, e.to_string()))?;
        let id = id_text(path, line, &row.id)?;
        if queries
            .insert(id.clone(), row.text.unwrap_or_default())
            .is_some()
        {
            return Err(bad(path, line, format!("duplicate _id {id:?}")));
        }
        Ok(())
    })?;
    Ok(queries)
}

/// Judgements: query id to (corpus id to grade).
type Qrels = HashMap<String, HashMap<String, u32>>;

/// Reads a qrels TSV: `query-id corpus-id score`, an optional header line, tab-separated.
/// Returns the judgements and the line on which each query first appears.
fn read_qrels(path: &Path) -> Result<(Qrels, HashMap<String, u64>)> {
    let mut qrels: Qrels = HashMap::new();
    let mut first_line = HashMap::new();
    let mut header_checked = false;
    each_line(path, |line, text| {
        if !header_checked {
            header_checked = true;
            if text.starts_with("query-id") || text.starts_with("query_id") {
                return Ok(());
            }
        }
        let f: Vec<&str> = text.split('\t').map(str::trim).collect();
        if f.len() != 3 || f[0].is_empty() || f[1].is_empty() {
            return Err(bad(
                path,
                line,
                "expected query-id, corpus-id, score separated by tabs",
            ));
        }
        let score: i64 = f[2]
            .parse()
            .map_err(|_| bad(path, line, format!("score {:?} is not an integer", f[2])))?;
        let grade = u32::try_from(score.max(0)).unwrap_or(u32::MAX);
        first_line.entry(f[0].to_string()).or_insert(line);
        qrels
            .entry(f[0].to_string())
            .or_default()
            .insert(f[1].to_string(), grade);
        Ok(())
    })?;
    Ok((qrels, first_line))
}

/// Reads `<name>.f32` + `<name>.ids` from `dir`: `None` when the `.f32` file is absent.
///
/// # Errors
/// [`Error::Io`]; [`Error::Corrupt`] when the `.f32` size is not a whole number of rows of one
/// width for the ids listed, or an id repeats.
pub fn read_vectors(dir: &Path, name: &str) -> Result<Option<HashMap<String, Vec<f32>>>> {
    let f32_path = dir.join(format!("{name}.f32"));
    if !f32_path.exists() {
        return Ok(None);
    }
    read_vector_files(&f32_path, &dir.join(format!("{name}.ids"))).map(Some)
}

/// Reads an embeddings file pair: raw little-endian `f32` rows in `f32_path`, one row per
/// line of `ids_path`, every row the same width.
///
/// # Errors
/// [`Error::Io`]; [`Error::Corrupt`] when the `.f32` size is not a whole number of rows of one
/// width for the ids listed, or an id repeats.
pub fn read_vector_files(f32_path: &Path, ids_path: &Path) -> Result<HashMap<String, Vec<f32>>> {
    let (f32_path, ids_path) = (f32_path.to_path_buf(), ids_path.to_path_buf());
    let mut ids = Vec::new();
    each_line(&ids_path, |_, text| {
        ids.push(text.trim().to_string());
        Ok(())
    })?;
    let mut bytes = Vec::new();
    std::fs::File::open(&f32_path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| Error::io(&f32_path, e))?;
    if ids.is_empty() {
        return Err(Error::corrupt(&ids_path, "no ids"));
    }
    let row_bytes = bytes.len() / ids.len();
    if bytes.len() % ids.len() != 0 || row_bytes == 0 || row_bytes % 4 != 0 {
        return Err(Error::corrupt(
            &f32_path,
            format!(
                "{} bytes is not {} rows of little-endian f32 ({} ids in {})",
                bytes.len(),
                ids.len(),
                ids.len(),
                ids_path.display()
            ),
        ));
    }
    let mut out = HashMap::with_capacity(ids.len());
    for (id, row) in ids.into_iter().zip(bytes.chunks_exact(row_bytes)) {
        let v: Vec<f32> = row
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if out.insert(id.clone(), v).is_some() {
            return Err(Error::corrupt(&ids_path, format!("id {id:?} repeats")));
        }
    }
    Ok(out)
}

/// Reads a BEIR folder with the qrels of `split` (`qrels/<split>.tsv`), e.g. `"test"`.
/// Only the queries named in those qrels are kept (as BEIR's loader does); embeddings are read
/// from `embeddings/` when present.
///
/// # Errors
/// [`Error::Io`] for a missing or unreadable file, [`Error::BadRow`] for a malformed line or a
/// qrels query absent from `queries.jsonl`, [`Error::Corrupt`] for `.f32` files whose size does
/// not match their ids or whose corpus and query widths differ, [`Error::Invalid`] for a
/// `split` that is not a plain file name.
pub fn load(dir: impl AsRef<Path>, split: &str) -> Result<BeirSet> {
    let dir = dir.as_ref();
    if split.is_empty() || split.starts_with('.') || split.contains(['/', '\\']) {
        return Err(Error::invalid(
            "beir.split",
            format!("{split:?} is not a qrels file name (test, train, dev)"),
        ));
    }
    let corpus = read_corpus(&dir.join("corpus.jsonl"))?;
    let mut all_queries = read_queries(&dir.join("queries.jsonl"))?;
    let qrels_path: PathBuf = dir.join("qrels").join(format!("{split}.tsv"));
    let (qrels, first_line) = read_qrels(&qrels_path)?;
    let mut queries = HashMap::with_capacity(qrels.len());
    for qid in qrels.keys() {
        match all_queries.remove(qid) {
            Some(text) => {
                queries.insert(qid.clone(), text);
            }
            None => {
                let line = first_line.get(qid).copied().unwrap_or(0);
                return Err(bad(
                    &qrels_path,
                    line,
                    format!("query {qid:?} is not in queries.jsonl"),
                ));
            }
        }
    }
    let emb = dir.join("embeddings");
    let corpus_vectors = read_vectors(&emb, "corpus")?;
    let query_vectors = read_vectors(&emb, "queries")?.map(|mut all| {
        all.retain(|id, _| qrels.contains_key(id));
        all
    });
    let width = |m: &Option<HashMap<String, Vec<f32>>>| {
        m.as_ref().and_then(|m| m.values().next().map(Vec::len))
    };
    if let (Some(c), Some(q)) = (width(&corpus_vectors), width(&query_vectors)) {
        if c != q {
            return Err(Error::corrupt(
                emb.join("queries.f32"),
                format!("rows of {q} values, the corpus rows have {c}"),
            ));
        }
    }
    Ok(BeirSet {
        corpus,
        queries,
        qrels,
        corpus_vectors,
        query_vectors,
    })
}

/// The longest prefix of `s` of at most `max` bytes ending on a character boundary.
fn prefix(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Upserts every document as a [`Product`] (id, title, description = text, embedding when the
/// set has one), committing every 1,000 documents. Titles and texts longer than the engine's
/// `max_text_bytes` are cut to it.
///
/// # Errors
/// The engine's validation errors (an id over `max_id_bytes`, a vector of the wrong dimension,
/// zero or not finite) and commit errors.
pub fn load_into(engine: &Engine, set: &BeirSet) -> Result<()> {
    let max_text = engine.config().limits.max_text_bytes;
    for chunk in set.corpus.chunks(BATCH) {
        let products: Vec<Product> = chunk
            .iter()
            .map(|d| {
                let mut p = Product::new(d.id.clone())
                    .title(prefix(&d.title, max_text))
                    .description(prefix(&d.text, max_text));
                if let Some(v) = set.corpus_vectors.as_ref().and_then(|m| m.get(&d.id)) {
                    p = p.embedding(v.clone());
                }
                p
            })
            .collect();
        engine.upsert_products(products)?;
        engine.commit()?;
    }
    Ok(())
}

/// Fits a query into `limits`: whole words are dropped from the end until the text has at most
/// `max_query_bytes` bytes and `max_query_terms` distinct analysed terms. Returns the text and
/// whether it was cut.
pub fn fit_query(text: &str, limits: &Limits) -> (String, bool) {
    let fits = |t: &str| {
        t.len() <= limits.max_query_bytes && crate::text::analyze(t).len() <= limits.max_query_terms
    };
    if fits(text) {
        return (text.to_string(), false);
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    // Binary search for the most words that fit (fewer words never add terms or bytes).
    let (mut lo, mut hi) = (0usize, words.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if fits(&words[..mid].join(" ")) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let mut out = words[..lo].join(" ");
    if lo == 0 {
        // One overlong word: cut it by bytes.
        out = prefix(words.first().copied().unwrap_or(""), limits.max_query_bytes).to_string();
    }
    (out, true)
}

/// The ranked ids `method` retrieves for one query, at most `k`.
pub(crate) fn retrieve(
    engine: &Engine,
    set: &BeirSet,
    method: SearchMethod,
    qid: &str,
    k: usize,
) -> Result<Vec<String>> {
    let limits = &engine.config().limits;
    let text = set.queries.get(qid).map(|t| fit_query(t, limits).0);
    let vector = set.query_vectors.as_ref().and_then(|m| m.get(qid));
    match method {
        SearchMethod::Bm25 => match text {
            Some(t) => Ok(engine
                .search_text(&t, &Filter::All, k)?
                .into_iter()
                .map(|s| s.id)
                .collect()),
            None => Ok(Vec::new()),
        },
        SearchMethod::Vector => match vector {
            Some(v) => Ok(engine
                .search_vector(v, &Filter::All, k)?
                .into_iter()
                .map(|s| s.id)
                .collect()),
            None => Ok(Vec::new()),
        },
        SearchMethod::Hybrid(fusion) => {
            let text = text.filter(|t| !t.trim().is_empty());
            if text.is_none() && vector.is_none() {
                return Ok(Vec::new());
            }
            let mut q = Query::new()
                .fusion(fusion)
                .k(k)
                .candidates(HYBRID_CANDIDATES.max(k));
            if let Some(t) = text {
                q = q.text(t);
            }
            if let Some(v) = vector {
                q = q.vector(v.clone());
            }
            Ok(engine.query(&q)?.into_iter().map(|h| h.id).collect())
        }
    }
}

/// nDCG@k, Recall@k and MRR@k of one ranking against one query's judgements (see the
/// module documentation; computed by the crate's ranking metrics).
pub fn score_ranking(ranked: &[String], rels: &HashMap<String, u32>, k: usize) -> [f64; 3] {
    let grades = ranked.iter().map(|id| rels.get(id).copied().unwrap_or(0));
    crate::metrics::graded_at_k(grades, rels.values().copied(), k)
}

/// Scores `method` on every query of the split: `("ndcg" | "recall" | "mrr", k, mean)` for
/// each `k` in `k_eval`, in that order. Queries run in parallel; each retrieves the deepest
/// `k`. Query texts over the engine's limits are cut with [`fit_query`]; a query without a
/// text (or, for [`SearchMethod::Vector`], without an embedding) retrieves nothing and scores 0.
///
/// # Errors
/// [`Error::Invalid`] when `k_eval` is empty or `method` needs embeddings the set lacks; the
/// engine's errors (e.g. [`Error::LimitExceeded`] for a `k` over `max_k`).
pub fn evaluate_search(
    engine: &Engine,
    set: &BeirSet,
    method: SearchMethod,
    k_eval: &[usize],
) -> Result<Vec<(String, usize, f64)>> {
    let k_max = k_eval.iter().copied().max().unwrap_or(0);
    if k_max == 0 {
        return Err(Error::invalid("k_eval", "needs at least one k > 0"));
    }
    if method != SearchMethod::Bm25 && set.query_vectors.is_none() {
        return Err(Error::invalid(
            "beir.query_vectors",
            "this method needs query embeddings (embeddings/queries.f32)",
        ));
    }
    let qids = set.query_ids();
    let per_query: Vec<Vec<[f64; 3]>> = qids
        .par_iter()
        .map(|qid| -> Result<Vec<[f64; 3]>> {
            let ranked = retrieve(engine, set, method, qid, k_max)?;
            let empty = HashMap::new();
            let rels = set.qrels.get(qid).unwrap_or(&empty);
            Ok(k_eval
                .iter()
                .map(|&k| score_ranking(&ranked, rels, k))
                .collect())
        })
        .collect::<Result<_>>()?;
    let n = per_query.len().max(1) as f64;
    let mut out = Vec::with_capacity(3 * k_eval.len());
    for (m, name) in ["ndcg", "recall", "mrr"].iter().enumerate() {
        for (ki, &k) in k_eval.iter().enumerate() {
            let sum: f64 = per_query.iter().map(|q| q[ki][m]).sum();
            out.push((name.to_string(), k, sum / n));
        }
    }
    Ok(out)
}
