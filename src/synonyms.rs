//! The synonym table: words or phrases a search also looks for (`sneakers` -> `trainers`),
//! stored in the store like every other record and applied when a query is analysed, so
//! that adding one needs no reindexing.
//!
//! A rule is one-way (`word` -> `synonym`); a two-way rule is stored as both directions.
//! Both sides are kept as typed (lowercased) and matched as the text index's terms
//! (`text::analyze`: stemmed, stop words dropped, Chinese segmented), so `Sneakers` in a
//! query finds a rule written for `sneaker`, and a phrase's terms must all be in the query
//! (in order) for its rule to apply.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::store::{key, Batch, Store};

/// Store prefix: word, `0x00`, synonym -> empty.
pub(crate) const SYNONYM: u8 = b'S';

/// Longest phrase, in terms, a rule's word may be.
pub(crate) const MAX_PHRASE_TERMS: usize = 4;

/// A staged change of the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SynonymChange {
    Add { word: String, synonym: String },
    Remove { word: String, synonym: String },
}

/// Normalises one side of a rule: lowercased, whitespace collapsed; `Invalid` when it has no
/// searchable term.
pub(crate) fn normalise(what: &'static str, s: &str) -> Result<String> {
    let n = s
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    let terms = crate::text::analyze(&n);
    if terms.is_empty() {
        return Err(Error::invalid(
            what,
            format!("{s:?} has no searchable word (empty, or stop words only)"),
        ));
    }
    if terms.len() > MAX_PHRASE_TERMS {
        return Err(Error::invalid(
            what,
            format!("{s:?} has more than {MAX_PHRASE_TERMS} words"),
        ));
    }
    Ok(n)
}

/// The committed rules.
#[derive(Clone, Debug, Default)]
pub(crate) struct Synonyms {
    /// Word as typed -> its synonyms as typed.
    rules: BTreeMap<String, Vec<String>>,
    /// The word's analysed terms -> the analysed terms of each synonym.
    by_terms: BTreeMap<Vec<String>, Vec<Vec<String>>>,
}

impl Synonyms {
    fn insert(&mut self, word: String, synonym: String) {
        let list = self.rules.entry(word).or_default();
        if !list.contains(&synonym) {
            list.push(synonym);
        }
    }

    fn reindex(&mut self) {
        self.by_terms.clear();
        for (w, syns) in &self.rules {
            let e = self.by_terms.entry(crate::text::analyze(w)).or_default();
            for s in syns {
                let t = crate::text::analyze(s);
                if !e.contains(&t) {
                    e.push(t);
                }
            }
        }
    }

    /// Publishes a durable commit's changes.
    pub fn apply(&mut self, changes: &[SynonymChange]) {
        for c in changes {
            match c {
                SynonymChange::Add { word, synonym } => self.insert(word.clone(), synonym.clone()),
                SynonymChange::Remove { word, synonym } => {
                    if let Some(list) = self.rules.get_mut(word) {
                        list.retain(|s| s != synonym);
                        if list.is_empty() {
                            self.rules.remove(word);
                        }
                    }
                }
            }
        }
        self.reindex();
    }

    /// Every rule as `(word, synonym)`, sorted.
    pub fn rules(&self) -> Vec<(String, String)> {
        self.rules
            .iter()
            .flat_map(|(w, s)| s.iter().map(move |s| (w.clone(), s.clone())))
            .collect()
    }

    /// What a query with these analysed `terms` (in order) also searches: for each rule
    /// whose word's terms appear consecutively, `(word's terms, synonym's terms)`, each
    /// synonym once and never one the query already holds whole.
    pub fn expand(&self, terms: &[String]) -> Vec<(Vec<String>, Vec<String>)> {
        let mut out: Vec<(Vec<String>, Vec<String>)> = Vec::new();
        if self.by_terms.is_empty() {
            return out;
        }
        for len in 1..=MAX_PHRASE_TERMS.min(terms.len()) {
            for window in terms.windows(len) {
                let Some(syns) = self.by_terms.get(window) else {
                    continue;
                };
                for s in syns {
                    let present = s.iter().all(|t| terms.contains(t));
                    if !present && !out.iter().any(|(_, x)| x == s) {
                        out.push((window.to_vec(), s.clone()));
                    }
                }
            }
        }
        out
    }
}

fn rule_key(word: &str, synonym: &str) -> Vec<u8> {
    key(SYNONYM, &[word.as_bytes(), &[0], synonym.as_bytes()])
}

/// Stages a change into a commit's batch.
pub(crate) fn stage(change: &SynonymChange, batch: &mut Batch) {
    match change {
        SynonymChange::Add { word, synonym } => batch.put(rule_key(word, synonym), Vec::new()),
        SynonymChange::Remove { word, synonym } => batch.remove(rule_key(word, synonym)),
    }
}

/// The committed rules, read at open.
pub(crate) fn load(store: &Store) -> Result<Synonyms> {
    let mut table = Synonyms::default();
    for r in store.scan(&[SYNONYM]) {
        let (k, _) = r?;
        let rest = &k[1..];
        let Some(sep) = rest.iter().position(|b| *b == 0) else {
            return Err(Error::corrupt(
                "store",
                "a synonym record has no separator".to_string(),
            ));
        };
        let word = String::from_utf8_lossy(&rest[..sep]).into_owned();
        let synonym = String::from_utf8_lossy(&rest[sep + 1..]).into_owned();
        table.insert(word, synonym);
    }
    table.reindex();
    Ok(table)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn table(rules: &[(&str, &str)]) -> Synonyms {
        let mut t = Synonyms::default();
        let changes: Vec<SynonymChange> = rules
            .iter()
            .map(|(w, s)| SynonymChange::Add {
                word: w.to_string(),
                synonym: s.to_string(),
            })
            .collect();
        t.apply(&changes);
        t
    }

    fn terms(s: &str) -> Vec<String> {
        crate::text::analyze(s)
    }

    #[test]
    fn rules_match_analysed_terms_and_phrases_in_order() {
        let t = table(&[
            ("sneakers", "trainers"),
            ("tv", "television"),
            ("running shoes", "trainers"),
        ]);
        // Plural and case do not matter: both sides are matched as index terms.
        let e = t.expand(&terms("White Sneaker"));
        assert_eq!(e, vec![(terms("sneakers"), terms("trainers"))]);
        assert_eq!(t.expand(&terms("shoes running")), vec![]);
        assert_eq!(
            t.expand(&terms("running shoes")),
            vec![(terms("running shoes"), terms("trainers"))]
        );
        // One-way: the synonym does not bring the word back.
        assert!(t.expand(&terms("trainers")).is_empty());
        // A synonym the query already holds is not added again.
        assert!(t.expand(&terms("sneakers trainers")).is_empty());
    }

    #[test]
    fn removal_and_normalisation() {
        let mut t = table(&[("tv", "television"), ("tv", "telly")]);
        t.apply(&[SynonymChange::Remove {
            word: "tv".into(),
            synonym: "telly".into(),
        }]);
        assert_eq!(
            t.rules(),
            vec![("tv".to_string(), "television".to_string())]
        );
        assert_eq!(
            normalise("word", "  Running   SHOES ").unwrap(),
            "running shoes"
        );
        assert!(normalise("word", "the and").is_err());
        assert!(normalise("word", "").is_err());
        assert!(normalise("word", "a b c d e f g h").is_err());
    }
}
