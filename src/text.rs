//! Full-text search: analyzers and BM25 retrieval with filters, on tantivy.
//!
//! "Here are words and a filter, give me scored items." The index is derived: every document
//! carries the item's internal id, and each commit records the log sequence it applied in
//! tantivy's commit payload, so `engine` can replay what is missing after a crash.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::path::Path;
use std::sync::OnceLock;

use parking_lot::Mutex;
use tantivy::collector::TopDocs;
use tantivy::query::{
    AllQuery, BooleanQuery, ConstScoreQuery, FuzzyTermQuery, InvertedIndexRangeQuery, Occur, Query,
    TermQuery,
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

/// Name under which the analyzer is registered with tantivy.
const ANALYZER: &str = "shopdb";
/// Separator between attribute name and value in the attribute term.
const ATTR_SEP: char = '\u{1f}';
/// Memory budget of the tantivy writer: tantivy needs at least 15 MB per thread; 64 MB keeps
/// a batch of 100k products in one segment.
const WRITER_MEMORY: usize = 64 << 20;

/// Weight of a typo-tolerant (edit distance 1) match relative to an exact term match, so that
/// exact matches rank first.
const FUZZY_BOOST: f32 = 0.3;
/// Words shorter than this get no typo tolerance (too many false matches).
const FUZZY_MIN_CHARS: usize = 5;
/// Words at least this long tolerate two edits.
const FUZZY_TWO_EDITS_CHARS: usize = 8;

#[derive(Clone, Copy)]
struct Fields {
    iid: Field,
    text: Field,
    title: Field,
    brand: Field,
    category: Field,
    price: Field,
    attr: Field,
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
    /// Add edit-distance-1 matches for long words, weighted down.
    pub fuzzy: bool,
}

pub(crate) struct TextIndex {
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    fields: Fields,
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
#[derive(Clone, Default)]
struct MixedTokenizer {
    tokens: Vec<Token>,
}

impl Tokenizer for MixedTokenizer {
    type TokenStream<'a> = OwnedTokenStream;
    fn token_stream<'a>(&'a mut self, text: &'a str) -> OwnedTokenStream {
        self.tokens.clear();
        split_words(text, &mut self.tokens);
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

fn split_words(text: &str, out: &mut Vec<Token>) {
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

/// Analyzes text exactly as the index does: the distinct terms, in first-seen order.
pub(crate) fn analyze(text: &str) -> Vec<String> {
    let mut a = analyzer();
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

/// tantivy trusts its segment files once opened (a damaged doc store panics when a document
/// is read), so every segment file's footer checksum is verified first: damage found here
/// makes the engine rebuild the index from the store instead.
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
        let (schema, fields) = schema();
        let mmap = tantivy::directory::MmapDirectory::open(dir)
            .map_err(|e| Error::corrupt(dir, e.to_string()))?;
        let index =
            Index::open_or_create(mmap, schema).map_err(|e| Error::corrupt(dir, e.to_string()))?;
        verify_checksums(&index, dir)?;
        index.tokenizers().register(ANALYZER, analyzer());
        let applied = index
            .load_metas()
            .map_err(|e| Error::corrupt(dir, e.to_string()))?
            .payload
            .and_then(|p| p.parse::<u64>().ok())
            .unwrap_or(0);
        let writer = index
            .writer_with_num_threads(1, WRITER_MEMORY)
            .map_err(|e| match e {
                tantivy::TantivyError::LockFailure(..) => Error::Locked(dir.to_path_buf()),
                other => Error::from(other),
            })?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok((
            TextIndex {
                reader,
                writer: Mutex::new(writer),
                fields,
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
        let w = self.writer.lock();
        w.delete_term(Term::from_field_u64(f.iid, u64::from(iid.0)));
        w.add_document(doc)?;
        Ok(())
    }

    /// Stages a delete for the next commit.
    pub fn delete(&self, iid: ItemId) {
        let w = self.writer.lock();
        w.delete_term(Term::from_field_u64(self.fields.iid, u64::from(iid.0)));
    }

    /// Stages removal of every document (used by a full rebuild).
    pub fn clear(&self) -> Result<()> {
        self.writer.lock().delete_all_documents()?;
        Ok(())
    }

    /// Commits staged changes, recording `seq` as applied, and makes them visible to searches.
    pub fn commit(&self, seq: u64) -> Result<()> {
        let mut w = self.writer.lock();
        let mut prepared = w.prepare_commit()?;
        prepared.set_payload(&seq.to_string());
        prepared.commit()?;
        drop(w);
        self.reader.reload()?;
        Ok(())
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
                // The inverted index, not the fast column: tantivy's fast-field range doc set
                // overflows (a panic in debug builds) when a conjunction holding it is
                // excluded, as in `Not(And([Price, ..]))`.
                Box::new(InvertedIndexRangeQuery::new(lo, hi))
            }
            Filter::Attribute { key, value } => term(f.attr, &format!("{key}{ATTR_SEP}{value}")),
            Filter::And(v) => Box::new(BooleanQuery::new(
                v.iter()
                    .map(|c| (Occur::Must, self.filter_query(c)))
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
                            .map(|c| (Occur::Should, self.filter_query(c)))
                            .collect(),
                    ))
                }
            }
            Filter::Not(c) => Box::new(BooleanQuery::new(vec![
                (Occur::Must, Box::new(AllQuery) as Box<dyn Query>),
                (Occur::MustNot, self.filter_query(c)),
            ])),
        }
    }

    /// BM25 search. `q.limit` must be in 1..=the engine's `max_k` (checked by the caller).
    pub fn search(&self, q: &TextQuery<'_>) -> Result<Vec<TextHit>> {
        let terms = analyze(q.text);
        if terms.is_empty() || q.limit == 0 {
            return Ok(Vec::new());
        }
        let f = &self.fields;
        let searcher = self.reader.searcher();
        let mut should: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for t in &terms {
            should.push((
                Occur::Should,
                Box::new(TermQuery::new(
                    Term::from_field_text(f.text, t),
                    IndexRecordOption::WithFreqs,
                )),
            ));
            if q.title_boost > 0.0 {
                should.push((
                    Occur::Should,
                    Box::new(tantivy::query::BoostQuery::new(
                        Box::new(TermQuery::new(
                            Term::from_field_text(f.title, t),
                            IndexRecordOption::WithFreqs,
                        )),
                        q.title_boost,
                    )),
                ));
            }
            // Typo tolerance only for long words the index does not know: a known word needs
            // no correction, and the edit-distance automaton is the costliest part of a query.
            if q.fuzzy
                && t.chars().count() >= FUZZY_MIN_CHARS
                && t.chars().all(|c| !is_cjk(c))
                && searcher.doc_freq(&Term::from_field_text(f.text, t))? == 0
            {
                should.push((
                    Occur::Should,
                    Box::new(tantivy::query::BoostQuery::new(
                        Box::new(FuzzyTermQuery::new(
                            Term::from_field_text(f.text, t),
                            // Stemming can add a second edit ("headphonez" against the stem
                            // "headphon"), so long words get two.
                            if t.chars().count() >= FUZZY_TWO_EDITS_CHARS {
                                2
                            } else {
                                1
                            },
                            true,
                        )),
                        FUZZY_BOOST,
                    )),
                ));
            }
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

    /// Every item matching the text (any term, typo tolerance as in `search`) and the filter.
    pub fn matching(&self, text: &str, filter: &Filter) -> Result<Vec<ItemId>> {
        let terms = analyze(text);
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        let f = &self.fields;
        let should: Vec<(Occur, Box<dyn Query>)> = terms
            .iter()
            .map(|t| {
                (
                    Occur::Should,
                    Box::new(TermQuery::new(
                        Term::from_field_text(f.text, t),
                        IndexRecordOption::Basic,
                    )) as Box<dyn Query>,
                )
            })
            .collect();
        let query = BooleanQuery::new(vec![
            (
                Occur::Must,
                Box::new(BooleanQuery::new(should)) as Box<dyn Query>,
            ),
            (Occur::Must, self.filter_query(filter)),
        ]);
        let searcher = self.reader.searcher();
        let docs = searcher.search(&query, &tantivy::collector::DocSetCollector)?;
        let top: Vec<(f32, DocAddress)> = docs.into_iter().map(|d| (0.0, d)).collect();
        Ok(self
            .resolve(&searcher, top)?
            .into_iter()
            .map(|h| h.item)
            .collect())
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
