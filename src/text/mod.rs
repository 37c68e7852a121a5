//! Full-text search: analyzers and BM25 retrieval with filters, on tantivy.
//!
//! "Here are words and a filter, give me scored items." The index is derived: every document
//! carries the item's internal id, and each commit records the log sequence it applied in
//! tantivy's commit payload, so `engine` can replay what is missing after a crash.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use parking_lot::{Mutex, RwLock};
use tantivy::collector::TopDocs;
use tantivy::query::{
    AllQuery, BooleanQuery, ConstScoreQuery, FuzzyTermQuery, InvertedIndexRangeQuery, Occur, Query,
    RangeQuery, TermQuery,
};
use tantivy::schema::{
    Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions, STRING,
};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, Stemmer, StopWordFilter, TextAnalyzer, Token,
    TokenStream, Tokenizer,
};
use tantivy::{DocAddress, Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use crate::catalog::{category_ancestors, ItemId, Product};
use crate::error::{Error, Result};
use crate::filter::Filter;

mod spell;
use spell::Spell;

/// Name under which the analyzer is registered with tantivy.
const ANALYZER: &str = "shopdb";
/// Separator between attribute name and value in the attribute term.
const ATTR_SEP: char = '\u{1f}';
/// Memory budget of the tantivy writer: tantivy needs at least 15 MB per thread; 64 MB keeps
/// a batch of 100k products in one segment.
const WRITER_MEMORY: usize = 64 << 20;

/// Name of the analyzer of the surface-form field (`words`).
const SURFACE_ANALYZER: &str = "shopdb_words";
/// Weight of a corrected word's BM25 score by the number of edits it took, relative to an
/// exact match (weight 1), so that exact matches rank first.
const TYPO_WEIGHT: [f32; 3] = [1.0, 0.6, 0.35];
/// Words shorter than this (in characters, as typed) get no typo tolerance: too many short
/// words lie one edit apart. As Meilisearch and Typesense do by default.
const TYPO_ONE_EDIT_CHARS: usize = 5;
/// Words at least this long tolerate two edits.
const TYPO_TWO_EDITS_CHARS: usize = 9;
/// At most this many corrections of one word are searched (the most frequent at the fewest
/// edits).
const MAX_CORRECTIONS: usize = 3;
/// Weight of a synonym's BM25 score relative to the words typed.
const SYNONYM_WEIGHT: f32 = 0.8;

#[derive(Clone, Copy)]
struct Fields {
    iid: Field,
    text: Field,
    title: Field,
    brand: Field,
    category: Field,
    price: Field,
    attr: Field,
    /// The surface forms (lowercased, neither stemmed nor stop-word filtered) of the
    /// non-Chinese words of `text`: only its term dictionary is read, by typo correction
    /// (an edit at a word's end can change its stem beyond recognition: `runnign` stems to
    /// itself, `running` to `run`).
    words: Field,
}

/// A BM25 hit.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TextHit {
    pub item: ItemId,
    pub score: f32,
}

/// BM25 search options.
#[derive(Clone, Debug)]
pub(crate) struct TextQuery<'a> {
    pub text: &'a str,
    pub filter: &'a Filter,
    pub limit: usize,
    /// Extra weight of title matches (0 = title not searched separately).
    pub title_boost: f32,
    /// Correct words the index does not know (one edit from 5 letters, two from 9), and
    /// search the corrections, weighted down.
    pub fuzzy: bool,
    /// Synonyms to search too, as `(the query's terms, the synonym's terms)` from
    /// `Synonyms::expand`.
    pub synonyms: &'a [(Vec<String>, Vec<String>)],
}

/// One clause of a boolean query.
type Clause = (Occur, Box<dyn Query>);

/// A query word the index does not know and what typo tolerance searched instead.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Correction {
    /// The word as typed, lowercased.
    pub word: String,
    /// The index terms (stems) searched in its place, with the edits each took, most
    /// frequent first.
    pub terms: Vec<(String, u8)>,
}

pub(crate) struct TextIndex {
    reader: IndexReader,
    /// None when opened read-only (a replica): writes are refused before they reach it.
    writer: Option<Mutex<IndexWriter>>,
    fields: Fields,
    /// The surface words' deletion lists (typo candidates at one edit), refreshed with the
    /// reader.
    spell: RwLock<Arc<Spell>>,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let analyzed = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(ANALYZER)
            .set_index_option(IndexRecordOption::WithFreqs),
    );
    let iid = b.add_u64_field("iid", NumericOptions::default().set_indexed().set_fast());
    let text = b.add_text_field("text", analyzed.clone());
    let title = b.add_text_field("title", analyzed);
    let brand = b.add_text_field("brand", STRING);
    let category = b.add_text_field("category", STRING);
    let price = b.add_f64_field("price", NumericOptions::default().set_indexed().set_fast());
    let attr = b.add_text_field("attr", STRING);
    let words = b.add_text_field(
        "words",
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(SURFACE_ANALYZER)
                .set_index_option(IndexRecordOption::Basic),
        ),
    );
    (
        b.build(),
        Fields {
            iid,
            text,
            title,
            brand,
            category,
            price,
            attr,
            words,
        },
    )
}

fn jieba() -> &'static jieba_rs::Jieba {
    static JIEBA: OnceLock<jieba_rs::Jieba> = OnceLock::new();
    JIEBA.get_or_init(jieba_rs::Jieba::new)
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x2FA1F)
}

/// Splits text into words: runs of Chinese characters are segmented by jieba (search mode,
/// so both `跑步鞋` and `跑步` are emitted), other alphanumeric runs are words of their own.
/// With `latin_only`, Chinese runs are dropped (the surface-form field, which only typo
/// correction reads, and Chinese gets none).
#[derive(Clone, Default)]
struct MixedTokenizer {
    tokens: Vec<Token>,
    latin_only: bool,
}

impl Tokenizer for MixedTokenizer {
    type TokenStream<'a> = OwnedTokenStream;
    fn token_stream<'a>(&'a mut self, text: &'a str) -> OwnedTokenStream {
        self.tokens.clear();
        split_words(text, self.latin_only, &mut self.tokens);
        OwnedTokenStream {
            tokens: std::mem::take(&mut self.tokens),
            index: 0,
        }
    }
}

/// A token stream that owns its tokens so filters can rewrite them.
struct OwnedTokenStream {
    tokens: Vec<Token>,
    index: usize,
}

impl TokenStream for OwnedTokenStream {
    fn advance(&mut self) -> bool {
        self.index += 1;
        self.index <= self.tokens.len()
    }
    fn token(&self) -> &Token {
        &self.tokens[self.index - 1]
    }
    fn token_mut(&mut self) -> &mut Token {
        &mut self.tokens[self.index - 1]
    }
}

fn split_words(text: &str, latin_only: bool, out: &mut Vec<Token>) {
    // Runs of the same kind: (start byte, end byte, is_cjk).
    let mut runs: Vec<(usize, usize, bool)> = Vec::new();
    let mut current: Option<(usize, bool)> = None;
    for (i, c) in text.char_indices() {
        let kind = if is_cjk(c) {
            Some(true)
        } else if c.is_alphanumeric() {
            Some(false)
        } else {
            None
        };
        match (current, kind) {
            (Some((_, cjk)), Some(k)) if cjk == k => {}
            (Some((s, cjk)), k) => {
                runs.push((s, i, cjk));
                current = k.map(|k| (i, k));
            }
            (None, k) => current = k.map(|k| (i, k)),
        }
    }
    if let Some((s, cjk)) = current {
        runs.push((s, text.len(), cjk));
    }
    let mut position = 0;
    let mut push = |from: usize, word: &str| {
        out.push(Token {
            offset_from: from,
            offset_to: from + word.len(),
            position,
            text: word.to_string(),
            position_length: 1,
        });
        position += 1;
    };
    for (s, e, cjk) in runs {
        let run = &text[s..e];
        if cjk && latin_only {
            continue;
        }
        if cjk {
            for t in jieba().cut_for_search(run, true) {
                if t.word.chars().any(char::is_alphanumeric) {
                    push(s + t.byte_start, t.word);
                }
            }
        } else {
            push(s, run);
        }
    }
}

fn analyzer() -> TextAnalyzer {
    let builder = TextAnalyzer::builder(MixedTokenizer::default())
        .filter(RemoveLongFilter::limit(48))
        .filter(LowerCaser);
    match StopWordFilter::new(Language::English) {
        Some(stop) => builder
            .filter(stop)
            .filter(Stemmer::new(Language::English))
            .build(),
        None => builder.filter(Stemmer::new(Language::English)).build(),
    }
}

thread_local! {
    static ANALYZERS: std::cell::RefCell<Option<TextAnalyzer>> = const { std::cell::RefCell::new(None) };
    static SURFACE_ANALYZERS: std::cell::RefCell<Option<TextAnalyzer>> = const { std::cell::RefCell::new(None) };
}

/// This thread's copy of an analyzer, built once: building one builds the stop-word set,
/// which costs more than analysing a query.
fn cached(
    slot: &'static std::thread::LocalKey<std::cell::RefCell<Option<TextAnalyzer>>>,
    build: fn() -> TextAnalyzer,
) -> TextAnalyzer {
    slot.with(|s| s.borrow_mut().get_or_insert_with(build).clone())
}

/// The surface-form analyzer: words lowercased, nothing removed or stemmed.
fn surface_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(MixedTokenizer {
        tokens: Vec::new(),
        latin_only: true,
    })
    .filter(RemoveLongFilter::limit(48))
    .filter(LowerCaser)
    .build()
}

/// The non-Chinese words of `text` as typed (lowercased), in order, repeats dropped.
fn surface_words(text: &str) -> Vec<String> {
    let mut a = cached(&SURFACE_ANALYZERS, surface_analyzer);
    let mut stream = a.token_stream(text);
    let mut seen = BTreeSet::new();
    let mut words = Vec::new();
    while stream.advance() {
        let t = &stream.token().text;
        if seen.insert(t.clone()) {
            words.push(t.clone());
        }
    }
    words
}

/// How many edits typo tolerance allows in a word of this many characters.
fn typo_budget(chars: usize) -> u8 {
    if chars >= TYPO_TWO_EDITS_CHARS {
        2
    } else if chars >= TYPO_ONE_EDIT_CHARS {
        1
    } else {
        0
    }
}

/// Calls `f` with every term of `field`'s dictionary (each segment's) that the fuzzy
/// query's automaton accepts, and the number of the segment's documents holding it.
fn fuzzy_terms(
    searcher: &tantivy::Searcher,
    field: Field,
    fuzzy: &FuzzyTermQuery,
    f: &mut dyn FnMut(&str, u64),
) -> Result<()> {
    let automaton = fuzzy.automaton()?;
    for segment in searcher.segment_readers() {
        let inverted = segment.inverted_index(field)?;
        let mut stream = inverted
            .terms()
            .search(&automaton)
            .into_stream()
            .map_err(tantivy::TantivyError::from)?;
        while stream.advance() {
            if let Ok(term) = std::str::from_utf8(stream.key()) {
                f(term, u64::from(stream.value().doc_freq));
            }
        }
    }
    Ok(())
}

/// Optimal string alignment distance (Levenshtein with adjacent transpositions counted as
/// one edit, as the automata that find the candidates count them), over characters.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev2 = vec![0usize; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0usize; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(prev2[j - 2] + 1);
            }
            cur[j] = d;
        }
        std::mem::swap(&mut prev2, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Analyzes text exactly as the index does: the distinct terms, in first-seen order.
pub(crate) fn analyze(text: &str) -> Vec<String> {
    let mut a = cached(&ANALYZERS, analyzer);
    let mut stream = a.token_stream(text);
    let mut seen = BTreeSet::new();
    let mut terms = Vec::new();
    while stream.advance() {
        let t = stream.token().text.clone();
        if seen.insert(t.clone()) {
            terms.push(t);
        }
    }
    terms
}

/// `text` with every word whose index term is in `terms` wrapped in `open` and `close`
/// (Chinese words as jieba finds them; overlapping words are marked once, as one span).
pub(crate) fn highlight(text: &str, terms: &BTreeSet<String>, open: &str, close: &str) -> String {
    let mut a = cached(&ANALYZERS, analyzer);
    let mut stream = a.token_stream(text);
    let mut spans: Vec<(usize, usize)> = Vec::new();
    while stream.advance() {
        let t = stream.token();
        if terms.contains(&t.text) && t.offset_to <= text.len() {
            spans.push((t.offset_from, t.offset_to));
        }
    }
    spans.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::new();
    for (s, e) in spans {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    let mut out = String::with_capacity(text.len() + merged.len() * (open.len() + close.len()));
    let mut at = 0;
    for (s, e) in merged {
        // Offsets come from the tokenizer, on character boundaries of `text`.
        let (Some(before), Some(word)) = (text.get(at..s), text.get(s..e)) else {
            continue;
        };
        out.push_str(before);
        out.push_str(open);
        out.push_str(word);
        out.push_str(close);
        at = e;
    }
    out.push_str(text.get(at..).unwrap_or(""));
    out
}

/// tantivy trusts its segment files once opened (a damaged doc store panics when a document
/// is read), so every segment file's footer checksum is verified first: damage found here
/// makes the engine rebuild the index from the store instead.
/// The ids of the segments a `meta.json` lists, as their files are named (hex, no dashes).
fn committed_segments(meta: &[u8]) -> Option<Vec<String>> {
    let v: serde_json::Value = serde_json::from_slice(meta).ok()?;
    v.get("segments")?
        .as_array()?
        .iter()
        .map(|s| Some(s.get("segment_id")?.as_str()?.replace('-', "")))
        .collect()
}

fn verify_checksums(index: &Index, dir: &Path) -> Result<()> {
    let damaged = index
        .validate_checksum()
        .map_err(|e| Error::corrupt(dir, e.to_string()))?;
    if damaged.is_empty() {
        Ok(())
    } else {
        Err(Error::corrupt(
            dir,
            format!("segment files fail their checksum: {damaged:?}"),
        ))
    }
}

impl TextIndex {
    /// Opens or creates the index in `dir`. Returns the index and the log sequence its last
    /// commit applied (0 for a new index).
    pub fn open(dir: &Path) -> Result<(TextIndex, u64)> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        Self::open_mode(dir, true)
    }

    /// Opens an existing index for searching only: no writer, so several processes may
    /// serve one copy (a backup's).
    pub fn open_read_only(dir: &Path) -> Result<(TextIndex, u64)> {
        Self::open_mode(dir, false)
    }

    fn open_mode(dir: &Path, writable: bool) -> Result<(TextIndex, u64)> {
        let (schema, fields) = schema();
        let mmap = tantivy::directory::MmapDirectory::open(dir)
            .map_err(|e| Error::corrupt(dir, e.to_string()))?;
        let index = if writable {
            Index::open_or_create(mmap, schema)
        } else {
            Index::open(mmap)
        }
        .map_err(|e| Error::corrupt(dir, e.to_string()))?;
        verify_checksums(&index, dir)?;
        index.tokenizers().register(ANALYZER, analyzer());
        index
            .tokenizers()
            .register(SURFACE_ANALYZER, surface_analyzer());
        let applied = index
            .load_metas()
            .map_err(|e| Error::corrupt(dir, e.to_string()))?
            .payload
            .and_then(|p| p.parse::<u64>().ok())
            .unwrap_or(0);
        let writer = if writable {
            let w = index
                .writer_with_num_threads(1, WRITER_MEMORY)
                .map_err(|e| match e {
                    tantivy::TantivyError::LockFailure(..) => Error::Locked(dir.to_path_buf()),
                    other => Error::from(other),
                })?;
            Some(Mutex::new(w))
        } else {
            None
        };
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let spell = Spell::default().refreshed(&reader.searcher(), fields.words)?;
        Ok((
            TextIndex {
                reader,
                writer,
                fields,
                spell: RwLock::new(Arc::new(spell)),
            },
            applied,
        ))
    }

    /// Stages a product for the next [`commit`](Self::commit), replacing any earlier version.
    pub fn upsert(&self, iid: ItemId, p: &Product) -> Result<()> {
        let f = &self.fields;
        let mut doc = TantivyDocument::default();
        doc.add_u64(f.iid, u64::from(iid.0));
        let body = [
            p.title.as_str(),
            p.description.as_str(),
            p.brand.as_str(),
            &p.category.replace('/', " "),
        ]
        .join("\n");
        doc.add_text(f.text, &body);
        doc.add_text(f.words, &body);
        doc.add_text(f.title, &p.title);
        if !p.brand.is_empty() {
            doc.add_text(f.brand, p.brand.to_lowercase());
        }
        for c in category_ancestors(&p.category) {
            doc.add_text(f.category, c);
        }
        if let Some(price) = p.price {
            doc.add_f64(f.price, price);
        }
        for (k, v) in &p.attributes {
            doc.add_text(f.attr, format!("{k}{ATTR_SEP}{v}"));
        }
        let w = self.writer()?;
        w.delete_term(Term::from_field_u64(f.iid, u64::from(iid.0)));
        w.add_document(doc)?;
        Ok(())
    }

    /// The writer; `ReadOnly` for a read-only index.
    fn writer(&self) -> Result<parking_lot::MutexGuard<'_, IndexWriter>> {
        self.writer
            .as_ref()
            .map(Mutex::lock)
            .ok_or(Error::ReadOnly("indexing"))
    }

    /// Stages a delete for the next commit.
    pub fn delete(&self, iid: ItemId) -> Result<()> {
        let w = self.writer()?;
        w.delete_term(Term::from_field_u64(self.fields.iid, u64::from(iid.0)));
        Ok(())
    }

    /// Stages removal of every document (used by a full rebuild).
    pub fn clear(&self) -> Result<()> {
        self.writer()?.delete_all_documents()?;
        Ok(())
    }

    /// Copies the index in `from` to the new directory `to` by hard links (tantivy never
    /// changes a file it wrote; copies where links are not possible), skipping lock files,
    /// and checks the copy opens and passes its checksums; returns the sequence its last
    /// commit applied. A merge finishing in the background may replace files while they
    /// are linked: the copy is then made again (at most five times).
    pub fn copy_index(from: &Path, to: &Path) -> Result<u64> {
        let mut last = None;
        for _ in 0..5 {
            if to.exists() {
                std::fs::remove_dir_all(to).map_err(|e| Error::io(to, e))?;
            }
            // Only the committed segments' files: the writer may be writing others (a
            // segment of staged documents, a merge) at this moment.
            let meta_path = from.join("meta.json");
            let meta = crate::fsutil::read(&meta_path)?;
            let segments = committed_segments(&meta)
                .ok_or_else(|| Error::corrupt(&meta_path, "no segment list"))?;
            std::fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
            std::fs::write(to.join("meta.json"), &meta).map_err(|e| Error::io(to, e))?;
            crate::fsutil::link_files(from, to, |name| {
                name == ".managed.json" || segments.iter().any(|s| name.starts_with(s.as_str()))
            })?;
            match Self::open_read_only(to) {
                Ok((_, applied)) => return Ok(applied),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::corrupt(to, "the text index could not be copied")))
    }

    /// Commits staged changes, recording `seq` as applied, and makes them visible to searches.
    pub fn commit(&self, seq: u64) -> Result<()> {
        let mut w = self.writer()?;
        let mut prepared = w.prepare_commit()?;
        prepared.set_payload(&seq.to_string());
        prepared.commit()?;
        drop(w);
        self.reader.reload()?;
        // Lists for the new segments only; an upgradable read lets searches go on while
        // they are built and keeps two commits from publishing out of order.
        let current = self.spell.upgradable_read();
        let spell = current.refreshed(&self.reader.searcher(), self.fields.words)?;
        *parking_lot::RwLockUpgradableReadGuard::upgrade(current) = Arc::new(spell);
        Ok(())
    }

    /// Heap bytes of the typo candidates' deletion lists.
    pub fn spell_bytes(&self) -> usize {
        self.spell.read().bytes()
    }

    /// Number of documents visible to searches.
    pub fn num_docs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Size of the index files in bytes.
    pub fn size_on_disk(&self) -> u64 {
        self.reader
            .searcher()
            .space_usage()
            .map(|u| u.total().get_bytes())
            .unwrap_or(0)
    }

    fn filter_query(&self, filter: &Filter) -> Box<dyn Query> {
        self.filter_clause(filter, false)
    }

    /// `filter` as a tantivy query; `excluded` when a `Not` encloses it.
    fn filter_clause(&self, filter: &Filter, excluded: bool) -> Box<dyn Query> {
        let f = &self.fields;
        let term = |field: Field, value: &str| -> Box<dyn Query> {
            Box::new(TermQuery::new(
                Term::from_field_text(field, value),
                IndexRecordOption::Basic,
            ))
        };
        match filter {
            // An empty conjunction holds for every product, as in `Filter::matches`; tantivy's
            // empty BooleanQuery would match none.
            Filter::All => Box::new(AllQuery),
            Filter::And(v) if v.is_empty() => Box::new(AllQuery),
            Filter::Brand(b) => term(f.brand, &b.to_lowercase()),
            Filter::Category(c) => {
                term(f.category, &category_ancestors(c).pop().unwrap_or_default())
            }
            Filter::Price { min, max } => {
                let bound = |v: &Option<f64>| match v {
                    Some(x) => Bound::Included(Term::from_field_f64(f.price, *x)),
                    None => Bound::Unbounded,
                };
                let (lo, hi) = match (min, max) {
                    (None, None) => (
                        Bound::Included(Term::from_field_f64(f.price, f64::MIN)),
                        Bound::Included(Term::from_field_f64(f.price, f64::MAX)),
                    ),
                    _ => (bound(min), bound(max)),
                };
                // The fast column reads a range in one pass over the prices (a range over
                // the inverted index visits every distinct price in it: 30 ms for a range
                // holding 100k products, against well under 1 ms). Under a `Not`, the
                // inverted index: tantivy's fast-field range doc set overflows (a panic in
                // debug builds) when a conjunction holding it is excluded, as in
                // `Not(And([Price, ..]))`.
                if excluded {
                    Box::new(InvertedIndexRangeQuery::new(lo, hi))
                } else {
                    Box::new(RangeQuery::new(lo, hi))
                }
            }
            Filter::Attribute { key, value } => term(f.attr, &format!("{key}{ATTR_SEP}{value}")),
            Filter::And(v) => Box::new(BooleanQuery::new(
                v.iter()
                    .map(|c| (Occur::Must, self.filter_clause(c, excluded)))
                    .collect(),
            )),
            Filter::Or(v) => {
                if v.is_empty() {
                    Box::new(BooleanQuery::new(vec![(
                        Occur::MustNot,
                        Box::new(AllQuery) as Box<dyn Query>,
                    )]))
                } else {
                    Box::new(BooleanQuery::new(
                        v.iter()
                            .map(|c| (Occur::Should, self.filter_clause(c, excluded)))
                            .collect(),
                    ))
                }
            }
            Filter::Not(c) => Box::new(BooleanQuery::new(vec![
                (Occur::Must, Box::new(AllQuery) as Box<dyn Query>),
                (Occur::MustNot, self.filter_clause(c, true)),
            ])),
        }
    }

    /// BM25 search. `q.limit` must be in 1..=the engine's `max_k` (checked by the caller).
    pub fn search(&self, q: &TextQuery<'_>) -> Result<Vec<TextHit>> {
        if q.limit == 0 {
            return Ok(Vec::new());
        }
        let searcher = self.reader.searcher();
        let (should, _) = self.text_clauses(
            &searcher,
            q.text,
            q.title_boost,
            q.fuzzy,
            q.synonyms,
            IndexRecordOption::WithFreqs,
        )?;
        if should.is_empty() {
            return Ok(Vec::new());
        }
        let text_query: Box<dyn Query> = Box::new(BooleanQuery::new(should));
        let query: Box<dyn Query> = if q.filter.is_all() {
            text_query
        } else {
            Box::new(BooleanQuery::new(vec![
                (Occur::Must, text_query),
                (
                    Occur::Must,
                    Box::new(ConstScoreQuery::new(self.filter_query(q.filter), 0.0)),
                ),
            ]))
        };
        let top = searcher.search(&query, &TopDocs::with_limit(q.limit).order_by_score())?;
        self.resolve(&searcher, top)
    }

    /// The clauses of a text query, each `Should`: every analysed term on the text field (and
    /// on the title, weighted by `title_boost`), and with `typos`, the corrections of the
    /// words the index does not know, weighted by their edits (`TYPO_WEIGHT`). Returns the
    /// corrections made.
    fn text_clauses(
        &self,
        searcher: &tantivy::Searcher,
        text: &str,
        title_boost: f32,
        typos: bool,
        synonyms: &[(Vec<String>, Vec<String>)],
        record: IndexRecordOption,
    ) -> Result<(Vec<Clause>, Vec<Correction>)> {
        let f = self.fields;
        let mut should: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let mut push = |term: &str, weight: f32| {
            let mut add = |field: Field, weight: f32| {
                let q: Box<dyn Query> =
                    Box::new(TermQuery::new(Term::from_field_text(field, term), record));
                let q: Box<dyn Query> = if weight == 1.0 {
                    q
                } else {
                    Box::new(tantivy::query::BoostQuery::new(q, weight))
                };
                should.push((Occur::Should, q));
            };
            add(f.text, weight);
            if title_boost > 0.0 {
                add(f.title, title_boost * weight);
            }
        };
        let terms = analyze(text);
        for t in &terms {
            push(t, 1.0);
        }
        let corrections = if typos {
            self.corrections(searcher, text, &terms)?
        } else {
            Vec::new()
        };
        for c in &corrections {
            for (t, edits) in &c.terms {
                push(
                    t,
                    TYPO_WEIGHT[usize::from(*edits).min(TYPO_WEIGHT.len() - 1)],
                );
            }
        }
        // A synonym of one term is one more term; a phrase must match whole.
        let mut phrases: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for (_, syn) in synonyms {
            match syn.as_slice() {
                [] => {}
                [t] => push(t, SYNONYM_WEIGHT),
                many => {
                    let mut fields = vec![(f.text, SYNONYM_WEIGHT)];
                    if title_boost > 0.0 {
                        fields.push((f.title, title_boost * SYNONYM_WEIGHT));
                    }
                    for (field, weight) in fields {
                        let all: Vec<(Occur, Box<dyn Query>)> = many
                            .iter()
                            .map(|t| {
                                let q: Box<dyn Query> = Box::new(TermQuery::new(
                                    Term::from_field_text(field, t),
                                    record,
                                ));
                                (Occur::Must, q)
                            })
                            .collect();
                        phrases.push((
                            Occur::Should,
                            Box::new(tantivy::query::BoostQuery::new(
                                Box::new(BooleanQuery::new(all)),
                                weight,
                            )),
                        ));
                    }
                }
            }
        }
        should.extend(phrases);
        Ok((should, corrections))
    }

    /// Typo tolerance: for each word of `text` of at least `TYPO_ONE_EDIT_CHARS` letters
    /// whose stem the index does not know (a known word is never corrected), the index terms
    /// within its edit budget: the surface words one edit away (the deletion lists of
    /// `spell`, then stemmed); when there are none, the surface words two edits away (from
    /// 9 letters) and then the stems within budget of its stem, both found with tantivy's
    /// Levenshtein automata; of those, the ones at the fewest edits, most frequent first, at
    /// most `MAX_CORRECTIONS`. Chinese words are never corrected.
    fn corrections(
        &self,
        searcher: &tantivy::Searcher,
        text: &str,
        terms: &[String],
    ) -> Result<Vec<Correction>> {
        let f = self.fields;
        let mut out = Vec::new();
        let spell = Arc::clone(&self.spell.read());
        // The common case, every term known, costs one dictionary lookup per term.
        let mut unknown = BTreeSet::new();
        for t in terms {
            if searcher.doc_freq(&Term::from_field_text(f.text, t))? == 0 {
                unknown.insert(t.as_str());
            }
        }
        if unknown.is_empty() {
            return Ok(out);
        }
        for word in surface_words(text) {
            let budget = typo_budget(word.chars().count());
            if budget == 0 {
                continue;
            }
            // A stop word has no stem and is not searched at all.
            let Some(stem) = analyze(&word).into_iter().next() else {
                continue;
            };
            if !unknown.contains(stem.as_str()) {
                continue;
            }
            let mut found: std::collections::BTreeMap<String, u8> = Default::default();
            let add = |found: &mut std::collections::BTreeMap<String, u8>, term, edits: usize| {
                let edits = edits.min(usize::from(budget)) as u8;
                let e = found.entry(term).or_insert(edits);
                *e = (*e).min(edits);
            };
            // The surface words near the word as typed, stemmed.
            for (candidate, edits, _) in self.near_surface(searcher, &spell, &word, budget)? {
                if let Some(t) = analyze(&candidate).into_iter().next() {
                    add(&mut found, t, edits);
                }
            }
            // Only when there are none, the stem against the stemmed dictionary (on the typo
            // benchmark this walk added 0.2% of queries found).
            if found.is_empty() {
                let fuzzy = FuzzyTermQuery::new(Term::from_field_text(f.text, &stem), budget, true);
                fuzzy_terms(searcher, f.text, &fuzzy, &mut |candidate, _| {
                    add(
                        &mut found,
                        candidate.to_string(),
                        edit_distance(&stem, candidate),
                    );
                })?;
            }
            let Some(fewest) = found.values().copied().min() else {
                continue;
            };
            let mut terms = Vec::new();
            for (term, edits) in found {
                if edits == fewest {
                    let df = searcher.doc_freq(&Term::from_field_text(f.text, &term))?;
                    if df > 0 {
                        terms.push((df, term, edits));
                    }
                }
            }
            terms.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            terms.truncate(MAX_CORRECTIONS);
            if !terms.is_empty() {
                out.push(Correction {
                    word,
                    terms: terms.into_iter().map(|(_, t, e)| (t, e)).collect(),
                });
            }
        }
        Ok(out)
    }

    /// Completions of a word's beginning from the surface-form dictionary, the most
    /// frequent first, at most `n`: the words that start with `prefix`, then, when fewer and
    /// `prefix` has 4 or more letters, those that start within one edit of it (typos).
    /// Returns `(word, documents holding it, edits)`.
    pub fn complete(&self, prefix: &str, n: usize) -> Result<Vec<(String, u64, u8)>> {
        let prefix = prefix.to_lowercase();
        if prefix.is_empty() || n == 0 || prefix.chars().any(is_cjk) {
            return Ok(Vec::new());
        }
        let searcher = self.reader.searcher();
        let field = self.fields.words;
        let mut found: std::collections::HashMap<String, (u64, u8)> = Default::default();
        let mut end = prefix.clone();
        end.push(char::MAX);
        for segment in searcher.segment_readers() {
            let inverted = segment.inverted_index(field)?;
            let mut stream = inverted
                .terms()
                .range()
                .ge(prefix.as_bytes())
                .lt(end.as_bytes())
                .into_stream()
                .map_err(tantivy::TantivyError::from)?;
            while stream.advance() {
                if let Ok(w) = std::str::from_utf8(stream.key()) {
                    let e = found.entry(w.to_string()).or_insert((0, 0));
                    e.0 += u64::from(stream.value().doc_freq);
                }
            }
        }
        if found.len() < n && prefix.chars().count() >= 4 {
            let fuzzy = FuzzyTermQuery::new_prefix(Term::from_field_text(field, &prefix), 1, true);
            fuzzy_terms(&searcher, field, &fuzzy, &mut |w, df| {
                let e = found.entry(w.to_string()).or_insert((0, 1));
                if e.1 == 1 {
                    e.0 += df;
                }
            })?;
        }
        let mut out: Vec<(String, u64, u8)> =
            found.into_iter().map(|(w, (df, e))| (w, df, e)).collect();
        out.sort_by(|a, b| {
            a.2.cmp(&b.2)
                .then(b.1.cmp(&a.1))
                .then_with(|| a.0.cmp(&b.0))
        });
        out.truncate(n);
        Ok(out)
    }

    /// `text` with each word the catalog does not hold replaced by the catalog's closest
    /// word within the typo budget (fewest edits, then the most frequent), for showing a
    /// corrected query (`wireles head` -> `wireless head`). Words that are known, short,
    /// Chinese or without a close word stay as typed.
    pub fn respell(&self, text: &str) -> Result<String> {
        let searcher = self.reader.searcher();
        let spell = Arc::clone(&self.spell.read());
        let field = self.fields.words;
        let mut out = Vec::new();
        for piece in text.split_whitespace() {
            let word = piece.to_lowercase();
            let budget = typo_budget(word.chars().count());
            let plain = word.chars().all(|c| c.is_alphanumeric() && !is_cjk(c));
            if budget == 0 || !plain || searcher.doc_freq(&Term::from_field_text(field, &word))? > 0
            {
                out.push(piece.to_string());
                continue;
            }
            // The fewest edits, then the most documents, then the first in order.
            let mut best: Option<(usize, u64, String)> = None;
            let consider = |best: &mut Option<(usize, u64, String)>, w: &str, edits, df| {
                let better = best.as_ref().is_none_or(|(e, d, b)| {
                    (edits, std::cmp::Reverse(df), w) < (*e, std::cmp::Reverse(*d), b.as_str())
                });
                if better {
                    *best = Some((edits, df, w.to_string()));
                }
            };
            for (candidate, edits, df) in self.near_surface(&searcher, &spell, &word, budget)? {
                consider(&mut best, &candidate, edits, df);
            }
            out.push(best.map_or_else(|| piece.to_string(), |(_, _, w)| w));
        }
        Ok(out.join(" "))
    }

    /// The surface words within `budget` edits of `word`, as `(word, edits, documents)`:
    /// those one edit away from the deletion lists; only when there are none and the budget
    /// is 2, those two edits away from tantivy's Levenshtein automaton (a word may then come
    /// once per segment). The one lookup behind corrections and respelling.
    fn near_surface(
        &self,
        searcher: &tantivy::Searcher,
        spell: &Spell,
        word: &str,
        budget: u8,
    ) -> Result<Vec<(String, usize, u64)>> {
        let mut near = spell.near(word);
        if near.is_empty() && budget >= 2 {
            let field = self.fields.words;
            let fuzzy = FuzzyTermQuery::new(Term::from_field_text(field, word), budget, true);
            fuzzy_terms(searcher, field, &fuzzy, &mut |candidate, df| {
                near.push((candidate.to_string(), edit_distance(word, candidate), df));
            })?;
        }
        Ok(near)
    }

    /// What typo tolerance does with `text` (for `EXPLAIN`): its corrections.
    pub fn explain_typos(&self, text: &str) -> Result<Vec<Correction>> {
        self.corrections(&self.reader.searcher(), text, &analyze(text))
    }

    /// The reference the benchmark harness times `search` against: the same analysed terms
    /// as a plain tantivy disjunction on the text field, top `limit` by BM25, with none of
    /// the engine's work around it (title boost, typo tolerance, filters, mapping documents
    /// back to items). Returns the number of documents found.
    #[cfg(feature = "cli")]
    pub fn search_bare(&self, text: &str, limit: usize) -> Result<usize> {
        let terms = analyze(text);
        if terms.is_empty() || limit == 0 {
            return Ok(0);
        }
        let should: Vec<(Occur, Box<dyn Query>)> = terms
            .iter()
            .map(|t| {
                let q: Box<dyn Query> = Box::new(TermQuery::new(
                    Term::from_field_text(self.fields.text, t),
                    IndexRecordOption::WithFreqs,
                ));
                (Occur::Should, q)
            })
            .collect();
        let searcher = self.reader.searcher();
        let top = searcher.search(
            &BooleanQuery::new(should),
            &TopDocs::with_limit(limit).order_by_score(),
        )?;
        Ok(top.len())
    }

    /// Every item matching the text (any term, typo tolerance and synonyms as in `search`)
    /// and the filter.
    pub fn matching(
        &self,
        text: &str,
        filter: &Filter,
        synonyms: &[(Vec<String>, Vec<String>)],
    ) -> Result<Vec<ItemId>> {
        let searcher = self.reader.searcher();
        let (should, _) = self.text_clauses(
            &searcher,
            text,
            0.0,
            true,
            synonyms,
            IndexRecordOption::Basic,
        )?;
        if should.is_empty() {
            return Ok(Vec::new());
        }
        let query = BooleanQuery::new(vec![
            (
                Occur::Must,
                Box::new(BooleanQuery::new(should)) as Box<dyn Query>,
            ),
            (Occur::Must, self.filter_query(filter)),
        ]);
        let docs = searcher.search(&query, &tantivy::collector::DocSetCollector)?;
        let top: Vec<(f32, DocAddress)> = docs.into_iter().map(|d| (0.0, d)).collect();
        Ok(self
            .resolve(&searcher, top)?
            .into_iter()
            .map(|h| h.item)
            .collect())
    }

    /// The products that pass `filter`, from the inverted index (so a selective filter costs
    /// what it selects, not a pass over the catalog), or `None` when more than `limit` pass.
    pub fn filtered(&self, filter: &Filter, limit: usize) -> Result<Option<Vec<ItemId>>> {
        let query = self.filter_query(filter);
        let searcher = self.reader.searcher();
        let count = searcher.search(&query, &tantivy::collector::Count)?;
        if count > limit {
            return Ok(None);
        }
        let docs = searcher.search(&query, &tantivy::collector::DocSetCollector)?;
        let top: Vec<(f32, DocAddress)> = docs.into_iter().map(|d| (0.0, d)).collect();
        Ok(Some(
            self.resolve(&searcher, top)?
                .into_iter()
                .map(|h| h.item)
                .collect(),
        ))
    }

    fn resolve(
        &self,
        searcher: &tantivy::Searcher,
        top: Vec<(f32, DocAddress)>,
    ) -> Result<Vec<TextHit>> {
        let mut out = Vec::with_capacity(top.len());
        // One column handle per segment: opening it is far costlier than a lookup.
        let mut columns = std::collections::HashMap::new();
        for (score, addr) in top {
            let column = match columns.entry(addr.segment_ord) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => v.insert(
                    searcher
                        .segment_reader(addr.segment_ord)
                        .fast_fields()
                        .u64("iid")?,
                ),
            };
            if let Some(iid) = column.first(addr.doc_id) {
                out.push(TextHit {
                    item: ItemId(iid as u32),
                    score,
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn index(titles: &[&str]) -> (tempfile::TempDir, TextIndex) {
        let dir = tempfile::tempdir().unwrap();
        let (index, _) = TextIndex::open(dir.path()).unwrap();
        for (i, t) in titles.iter().enumerate() {
            index
                .upsert(ItemId(i as u32), &Product::new(format!("p{i}")).title(*t))
                .unwrap();
        }
        index.commit(1).unwrap();
        (dir, index)
    }

    fn search(index: &TextIndex, text: &str, fuzzy: bool) -> Vec<u32> {
        index
            .search(&TextQuery {
                text,
                filter: &Filter::All,
                limit: 10,
                title_boost: 0.0,
                fuzzy,
                synonyms: &[],
            })
            .unwrap()
            .into_iter()
            .map(|h| h.item.0)
            .collect()
    }

    #[test]
    fn filters_select_exactly_what_matches_on_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let (index, _) = TextIndex::open(dir.path()).unwrap();
        let products: Vec<Product> = (0..300)
            .map(|i| {
                let p = Product::new(format!("p{i}"))
                    .brand(if i % 3 == 0 { "Acme" } else { "Other" })
                    .category(if i % 2 == 0 {
                        "shoes/running"
                    } else {
                        "shirts"
                    });
                if i % 10 == 3 {
                    p
                } else {
                    p.price((i % 97) as f64 + 0.5)
                }
            })
            .collect();
        for (i, p) in products.iter().enumerate() {
            index.upsert(ItemId(i as u32), p).unwrap();
        }
        index.commit(1).unwrap();
        let range = |lo: f64, hi: f64| Filter::price(Some(lo), Some(hi));
        let filters = [
            range(10.0, 20.0),
            Filter::price(None, Some(5.0)),
            Filter::price(Some(90.0), None),
            range(10.0, 60.0).and(Filter::brand("Acme")),
            range(0.0, 3.0).or(range(95.0, 100.0)),
            range(0.0, 50.0).not(),
            range(0.0, 50.0).and(Filter::brand("Acme")).not(),
            Filter::category("shoes").and(range(20.0, 80.0).not()),
            Filter::category("shoes").or(range(1.0, 2.0)).not(),
        ];
        for f in &filters {
            let mut got: Vec<u32> = index
                .filtered(f, usize::MAX)
                .unwrap()
                .unwrap()
                .into_iter()
                .map(|i| i.0)
                .collect();
            got.sort_unstable();
            let want: Vec<u32> = (0..300u32)
                .filter(|&i| f.matches(&products[i as usize]))
                .collect();
            assert!(!want.is_empty(), "{f:?} selects nothing");
            assert_eq!(got, want, "{f:?}");
        }
    }

    const SHOP: &[&str] = &[
        "Leather Oxford Shoe",
        "Acme Running Shoe for road running",
        "Wireless Headphones",
        "Oxford Shirt",
        "Rune stone pendant",
    ];

    #[test]
    fn edit_distance_counts_a_transposition_as_one_edit() {
        assert_eq!(edit_distance("running", "running"), 0);
        assert_eq!(edit_distance("runing", "running"), 1);
        assert_eq!(edit_distance("runnign", "running"), 1);
        assert_eq!(edit_distance("rnuning", "running"), 1);
        assert_eq!(edit_distance("shoos", "shoes"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("跑步鞋", "跑步"), 1);
    }

    #[test]
    fn the_edit_budget_follows_the_typed_length() {
        assert_eq!(typo_budget(4), 0);
        assert_eq!(typo_budget(5), 1);
        assert_eq!(typo_budget(8), 1);
        assert_eq!(typo_budget(9), 2);
    }

    #[test]
    fn words_of_later_commits_and_of_a_reopened_index_are_corrected() {
        let (dir, idx) = index(SHOP);
        // "hikign" stems to itself, two edits from "hike": only the surface word "hiking",
        // one edit away, finds it, so these searches fail if a segment's list is missing.
        assert!(search(&idx, "hikign", true).is_empty());
        idx.upsert(ItemId(9), &Product::new("p9").title("Hiking Boots"))
            .unwrap();
        idx.commit(2).unwrap();
        assert_eq!(search(&idx, "hikign", true), vec![9]);
        assert_eq!(search(&idx, "runnign", true).first(), Some(&1));
        assert!(idx.spell_bytes() > 0);
        drop(idx);
        let (idx, _) = TextIndex::open(dir.path()).unwrap();
        assert_eq!(search(&idx, "hikign", true), vec![9]);
        assert_eq!(search(&idx, "runnign", true).first(), Some(&1));
        assert_eq!(idx.respell("hikign boots").unwrap(), "hiking boots");
    }

    #[test]
    fn misspelt_words_find_their_product_and_exact_words_are_left_alone() {
        let (_d, idx) = index(SHOP);
        // "runing" stems to "rune", which the index knows (the pendant): a known stem is
        // not corrected, so only "shoos" is.
        let c = idx.explain_typos("runing shoos").unwrap();
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].word, "shoos");
        assert_eq!(c[0].terms[0], ("shoe".to_string(), 1));
        // The surface dictionary finds what the stem alone cannot: "runnign" stems to
        // itself, five edits from "run", one from "running".
        let c = idx.explain_typos("runnign").unwrap();
        assert_eq!(c[0].terms, vec![("run".to_string(), 1)]);
        let hits = search(&idx, "runnign shoos", true);
        assert_eq!(hits.first(), Some(&1), "{hits:?}");
        assert!(search(&idx, "runnign shoos", false).is_empty());
        // Two edits only from nine letters.
        assert_eq!(search(&idx, "headphnoes", true).first(), Some(&2));
        assert!(search(&idx, "wirelxxs", true).is_empty());
        assert_eq!(search(&idx, "wirelss", true).first(), Some(&2));
        // Correct words are never corrected: the same hits with and without.
        for q in ["oxford shoe", "running", "wireless headphones", "rune"] {
            assert!(idx.explain_typos(q).unwrap().is_empty(), "{q}");
            assert_eq!(search(&idx, q, true), search(&idx, q, false), "{q}");
        }
        // Short words are not corrected.
        assert!(idx.explain_typos("shoo").unwrap().is_empty());
    }

    #[test]
    fn highlights_mark_matched_words_in_english_and_chinese() {
        let terms: BTreeSet<String> = analyze("running shoes 跑步").into_iter().collect();
        assert_eq!(
            highlight("Acme Running Shoe, for runners", &terms, "<em>", "</em>"),
            "Acme <em>Running</em> <em>Shoe</em>, for runners"
        );
        // jieba's search mode emits 跑步鞋 and 跑步: one span.
        let h = highlight("轻便跑步鞋", &terms, "[", "]");
        assert!(h.contains("[跑步"), "{h}");
        assert_eq!(h.matches('[').count(), 1, "{h}");
        assert_eq!(highlight("nothing here", &terms, "[", "]"), "nothing here");
    }

    #[test]
    fn chinese_words_are_not_corrected() {
        let (_d, idx) = index(&["跑步鞋 轻便", "皮鞋"]);
        assert!(idx.explain_typos("跑步靴子靴子").unwrap().is_empty());
        assert!(surface_words("跑步鞋 Running")
            .iter()
            .all(|w| w == "running"));
    }

    #[test]
    fn matching_counts_corrected_words_as_search_does() {
        let (_d, idx) = index(SHOP);
        let mut m: Vec<u32> = idx
            .matching("wirelss", &Filter::All, &[])
            .unwrap()
            .into_iter()
            .map(|i| i.0)
            .collect();
        m.sort();
        assert_eq!(m, vec![2]);
    }
}
