//! The surface-word dictionary's one-deletion neighbourhoods: typo candidates at one edit
//! without a Levenshtein automaton.
//!
//! Two words are within one edit (insertion, deletion, substitution or transposition of
//! neighbours) only if they are equal, one is the other with a character deleted, or both
//! give the same word with one character deleted (the symmetric-delete idea of SymSpell).
//! So each dictionary word is listed under the hash of itself and of each of its one-char
//! deletions, and a typed word looks up the same keys: a few binary searches instead of
//! building a DFA and walking the term dictionary with it (on the harness's typo benchmark
//! the automaton was most of the typo path's cost). Candidates are checked with
//! [`edit_distance`], so hash collisions and pairs two edits apart are dropped.
//!
//! One [`SegmentWords`] per tantivy segment, built when a segment first becomes searchable
//! and kept while it is (segments never change, so commits build only the new ones; a merge
//! builds its merged segment once). Two edits still go through the automaton in `text`.

use std::collections::HashMap;
use std::sync::Arc;

use tantivy::index::SegmentId;
use tantivy::schema::Field;

use super::edit_distance;
use crate::error::Result;

/// Words shorter than this are not listed: a typed word has at least
/// `TYPO_ONE_EDIT_CHARS` (5) letters, so its one-edit neighbours have at least 4.
const MIN_CHARS: usize = 4;

/// One segment's surface words of `MIN_CHARS`+ letters and their deletion keys.
pub(super) struct SegmentWords {
    /// The words, back to back.
    text: String,
    /// Where each word ends in `text`.
    ends: Vec<u32>,
    /// Documents of the segment holding each word (deleted ones included, as tantivy counts).
    doc_freq: Vec<u32>,
    /// `(key, word)`: the hash of the word and of each one-char deletion of it, sorted.
    keys: Vec<(u64, u32)>,
}

/// FNV-1a over a word's bytes with the byte range `skip` left out (a deletion, without
/// building the shorter string).
fn key(word: &[u8], skip: std::ops::Range<usize>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, b) in word.iter().enumerate() {
        if !skip.contains(&i) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The keys of `word`: itself and each one-char deletion (by characters, so UTF-8 stays
/// whole), each once.
fn keys_of(word: &str, out: &mut Vec<u64>) {
    out.clear();
    let bytes = word.as_bytes();
    out.push(key(bytes, 0..0));
    for (i, c) in word.char_indices() {
        out.push(key(bytes, i..i + c.len_utf8()));
    }
    out.sort_unstable();
    out.dedup();
}

impl SegmentWords {
    /// Lists the words of `field` in one segment.
    fn build(segment: &tantivy::SegmentReader, field: Field) -> Result<SegmentWords> {
        let inverted = segment.inverted_index(field)?;
        let mut stream = inverted
            .terms()
            .stream()
            .map_err(tantivy::TantivyError::from)?;
        let mut words = Vec::new();
        while stream.advance() {
            if let Ok(word) = std::str::from_utf8(stream.key()) {
                words.push((word.to_string(), stream.value().doc_freq));
            }
        }
        Ok(SegmentWords::from_words(words))
    }

    /// Lists `(word, documents holding it)`, skipping words under `MIN_CHARS` letters.
    fn from_words(words: impl IntoIterator<Item = (String, u32)>) -> SegmentWords {
        let mut out = SegmentWords {
            text: String::new(),
            ends: Vec::new(),
            doc_freq: Vec::new(),
            keys: Vec::new(),
        };
        let mut keys = Vec::new();
        for (word, doc_freq) in words {
            if word.chars().count() < MIN_CHARS {
                continue;
            }
            let (Ok(index), Ok(end)) = (
                u32::try_from(out.ends.len()),
                u32::try_from(out.text.len() + word.len()),
            ) else {
                break;
            };
            out.text.push_str(&word);
            out.ends.push(end);
            out.doc_freq.push(doc_freq);
            keys_of(&word, &mut keys);
            out.keys.extend(keys.iter().map(|&k| (k, index)));
        }
        out.keys.sort_unstable();
        out.keys.shrink_to_fit();
        out
    }

    fn word(&self, index: u32) -> &str {
        let i = index as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.text.get(start..self.ends[i] as usize).unwrap_or("")
    }

    /// Calls `f` with each listed word within one edit of `typed` (whose keys are `keys`),
    /// the edits and the word's document count.
    fn near(&self, typed: &str, keys: &[u64], f: &mut dyn FnMut(&str, usize, u64)) {
        let mut seen: Vec<u32> = Vec::new();
        for &k in keys {
            let from = self.keys.partition_point(|&(h, _)| h < k);
            for &(h, index) in &self.keys[from..] {
                if h != k {
                    break;
                }
                if seen.contains(&index) {
                    continue;
                }
                seen.push(index);
                let word = self.word(index);
                let edits = edit_distance(typed, word);
                if edits <= 1 {
                    f(word, edits, u64::from(self.doc_freq[index as usize]));
                }
            }
        }
    }

    /// Heap bytes held.
    fn bytes(&self) -> usize {
        self.text.capacity() + self.ends.capacity() * 8 + self.keys.capacity() * 16
    }
}

/// The deletion lists of every searchable segment.
#[derive(Clone, Default)]
pub(super) struct Spell {
    segments: Vec<(SegmentId, Arc<SegmentWords>)>,
}

impl Spell {
    /// The lists for `searcher`'s segments: those of `self` reused, the new ones built,
    /// those no longer searchable dropped.
    pub fn refreshed(&self, searcher: &tantivy::Searcher, field: Field) -> Result<Spell> {
        let old: HashMap<SegmentId, &Arc<SegmentWords>> =
            self.segments.iter().map(|(id, w)| (*id, w)).collect();
        let mut segments = Vec::new();
        for segment in searcher.segment_readers() {
            let id = segment.segment_id();
            let words = match old.get(&id) {
                Some(w) => Arc::clone(w),
                None => Arc::new(SegmentWords::build(segment, field)?),
            };
            segments.push((id, words));
        }
        Ok(Spell { segments })
    }

    /// The words within one edit of `typed` with their edits and document counts summed
    /// over the segments, in no particular order.
    pub fn near(&self, typed: &str) -> Vec<(String, usize, u64)> {
        let mut keys = Vec::new();
        keys_of(typed, &mut keys);
        let mut found: HashMap<String, (usize, u64)> = HashMap::new();
        for (_, s) in &self.segments {
            s.near(typed, &keys, &mut |word, edits, df| {
                let e = found.entry(word.to_string()).or_insert((edits, 0));
                e.1 += df;
            });
        }
        found.into_iter().map(|(w, (e, df))| (w, e, df)).collect()
    }

    /// Heap bytes held by the lists.
    pub fn bytes(&self) -> usize {
        self.segments.iter().map(|(_, s)| s.bytes()).sum()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The lists find exactly the words within one edit, as a brute-force scan does.
    #[test]
    fn deletion_keys_find_every_word_within_one_edit_and_no_other() {
        let dict = [
            "running",
            "runner",
            "runing",
            "shoes",
            "shoe",
            "shows",
            "shoos",
            "wireless",
            "wirless",
            "headphones",
            "héllo",
            "hello",
            "hallo",
            "zzzz",
            "abcd",
            "bacd",
        ];
        let words = SegmentWords::from_words(
            dict.iter()
                .enumerate()
                .map(|(i, w)| (w.to_string(), i as u32 + 1)),
        );
        let mut keys = Vec::new();
        let probes = [
            "runnig",
            "shoos",
            "shoess",
            "sheos",
            "wireles",
            "hedphones",
            "hèllo",
            "abdc",
            "qqqqq",
            "hell",
            "runnnng",
        ];
        for typed in probes {
            let mut got = Vec::new();
            keys_of(typed, &mut keys);
            words.near(typed, &keys, &mut |w, e, df| {
                got.push((w.to_string(), e, df))
            });
            got.sort();
            let mut want: Vec<(String, usize, u64)> = dict
                .iter()
                .enumerate()
                .filter(|(_, w)| edit_distance(typed, w) <= 1)
                .map(|(i, w)| (w.to_string(), edit_distance(typed, w), i as u64 + 1))
                .collect();
            want.sort();
            assert_eq!(got, want, "{typed}");
        }
    }

    #[test]
    fn a_deletion_key_equals_the_key_of_the_shorter_word() {
        assert_eq!(key(b"shoes", 3..4), key(b"shos", 0..0));
        assert_eq!(key("héllo".as_bytes(), 1..3), key(b"hllo", 0..0));
        assert_ne!(key(b"shoes", 0..0), key(b"shoe", 0..0));
    }
}
