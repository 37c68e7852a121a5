//! The typo benchmark: queries made from the catalog's own titles, searched as typed and with
//! typos, through the fused search a shop's search box calls ([`Engine::query`] with text).
//!
//! Each query is 1 to 3 consecutive words of a sampled product's title, with at least one
//! word of 5 or more letters. Its typo forms: **one typo** (one edit, a deletion, insertion,
//! substitution or transposition of neighbours, in one word of 5+ letters) and **every word**
//! (one edit in each word of 5+ letters, two in words of 9+). A query finds its product when
//! the product is in the top 10. The same queries are also searched with typo tolerance off,
//! which says what it recovers and checks that it changes nothing for correctly spelled
//! queries (their top 10 must be identical with it on and off).

use std::collections::HashSet;
use std::time::Instant;

use super::report::TypoRow;
use super::{speed, Phase};
use crate::engine::Engine;
use crate::error::Result;
use crate::models::SplitMix64;
use crate::query::Query;

/// Words shorter than this get no typo, as typo tolerance corrects none.
const ONE_EDIT: usize = 5;
/// Words at least this long get two typos in the "every word" form.
const TWO_EDITS: usize = 9;

/// One benchmark query: the words as in the title, and their two typo forms.
struct TypoQuery {
    product: String,
    /// Its title: a hit with the same title is the same answer to the shopper (generated
    /// catalogs repeat titles across brands' lines), and counts as found.
    title: String,
    clean: String,
    one_typo: String,
    every_word: String,
}

/// The title's words as a shopper types them: lowercase letters and digits, no Chinese.
fn words(title: &str) -> Vec<String> {
    title
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect()
}

/// `word` with one random edit (never the word itself).
fn edit(word: &str, rng: &mut SplitMix64) -> String {
    let chars: Vec<char> = word.chars().collect();
    for _ in 0..16 {
        let n = chars.len();
        let at = rng.below32(n);
        let c = (b'a' + rng.below32(26) as u8) as char;
        let mut out = chars.clone();
        match rng.below32(4) {
            0 if n > 1 => {
                out.remove(at);
            }
            1 => out.insert(at, c),
            2 => out[at] = c,
            _ if at + 1 < n => out.swap(at, at + 1),
            _ => continue,
        }
        let s: String = out.into_iter().collect();
        if s != word {
            return s;
        }
    }
    format!("{word}x")
}

/// `n` deterministic queries from the catalog (fewer if it has too few usable titles).
fn queries(engine: &Engine, n: usize, seed: u64) -> Result<Vec<TypoQuery>> {
    let ids = engine.product_ids();
    let mut rng = SplitMix64::new(seed);
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n.saturating_mul(20) {
        if out.len() >= n || ids.is_empty() {
            break;
        }
        let id = &ids[rng.below32(ids.len())];
        let Some(p) = engine.get_product(id)? else {
            continue;
        };
        let w = words(&p.title);
        if w.is_empty() {
            continue;
        }
        let len = 1 + rng.below32(3.min(w.len()));
        let start = rng.below32(w.len() - len + 1);
        let picked = &w[start..start + len];
        let long: Vec<usize> = (0..len).filter(|&i| picked[i].len() >= ONE_EDIT).collect();
        if long.is_empty() {
            continue;
        }
        let clean = picked.join(" ");
        if !seen.insert(clean.clone()) {
            continue;
        }
        let target = long[rng.below32(long.len())];
        let one: Vec<String> = picked
            .iter()
            .enumerate()
            .map(|(i, w)| {
                if i == target {
                    edit(w, &mut rng)
                } else {
                    w.clone()
                }
            })
            .collect();
        let every: Vec<String> = picked
            .iter()
            .map(|w| {
                if w.len() >= TWO_EDITS {
                    let once = edit(w, &mut rng);
                    edit(&once, &mut rng)
                } else if w.len() >= ONE_EDIT {
                    edit(w, &mut rng)
                } else {
                    w.clone()
                }
            })
            .collect();
        out.push(TypoQuery {
            product: id.clone(),
            title: p.title.clone(),
            clean,
            one_typo: one.join(" "),
            every_word: every.join(" "),
        });
    }
    Ok(out)
}

/// A search's top 10 as `(id, title)`.
type Hits = Vec<(String, String)>;

/// The top 10 of a text search, and the time it took (ms).
fn search(engine: &Engine, text: &str, typos: bool) -> Result<(Hits, f64)> {
    let t = Instant::now();
    let hits = engine.query(&Query::new().text(text).k(10).typos(typos))?;
    let ms = speed::ms_since(t);
    Ok((
        hits.into_iter()
            .map(|h| (h.id, h.product.title.clone()))
            .collect(),
        ms,
    ))
}

/// Runs the benchmark on `n` queries.
pub(crate) fn run(engine: &Engine, n: usize, phase: &Phase) -> Result<Option<TypoRow>> {
    let qs = queries(engine, n, 11)?;
    if qs.is_empty() {
        return Ok(None);
    }
    let bar = phase.bar("typo benchmark", qs.len());
    let mut row = TypoRow {
        queries: qs.len(),
        ..TypoRow::default()
    };
    let (mut clean_on, mut clean_off, mut typo_on, mut typo_off) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut clean_found, mut one_found, mut one_found_off, mut every_found) = (0, 0, 0, 0);
    let (mut one_given_clean, mut every_given_clean, mut unchanged) = (0, 0, 0);
    // Shoppers for the personalised half of the suggestion calls.
    let users: Vec<String> = engine.user_ids().into_iter().take(64).collect();
    let (mut suggest_ms, mut word_found) = (Vec::new(), 0);
    // The first search of a text warms what the second reads: on and off take turns at
    // going first.
    let pair = |text: &str, on_first: bool| -> Result<[(Hits, f64); 2]> {
        if on_first {
            let on = search(engine, text, true)?;
            Ok([on, search(engine, text, false)?])
        } else {
            let off = search(engine, text, false)?;
            Ok([search(engine, text, true)?, off])
        }
    };
    for (i, q) in qs.iter().enumerate() {
        let found = |hits: &Hits| {
            hits.iter()
                .any(|(id, title)| *id == q.product || *title == q.title)
        };
        let [(on, t_on), (off, t_off)] = pair(&q.clean, i % 2 == 0)?;
        clean_on.push(t_on);
        clean_off.push(t_off);
        unchanged += usize::from(on == off);
        let clean_ok = found(&on);
        clean_found += usize::from(clean_ok);
        let [(one, t_on), (one_off, t_off)] = pair(&q.one_typo, i % 2 == 1)?;
        typo_on.push(t_on);
        typo_off.push(t_off);
        one_found += usize::from(found(&one));
        one_found_off += usize::from(found(&one_off));
        one_given_clean += usize::from(clean_ok && found(&one));
        let (every, _) = search(engine, &q.every_word, true)?;
        every_found += usize::from(found(&every));
        every_given_clean += usize::from(clean_ok && found(&every));
        // Typed so far: the query up to the middle of its last word (at least 2 letters).
        let last = q.clean.rsplit(' ').next().unwrap_or("");
        let cut = last
            .chars()
            .count()
            .div_ceil(2)
            .max(2)
            .min(last.chars().count());
        let head_len = q.clean.len() - last.len();
        let typed: String = q.clean[..head_len]
            .chars()
            .chain(last.chars().take(cut))
            .collect();
        let user = if i % 2 == 1 {
            users.get(i % users.len().max(1)).map(String::as_str)
        } else {
            None
        };
        let t = Instant::now();
        let suggestions = engine.suggest(&typed, user, 8)?;
        suggest_ms.push(speed::ms_since(t));
        word_found += usize::from(
            suggestions
                .iter()
                .any(|s| s.id.is_none() && s.text.rsplit(' ').next() == Some(last)),
        );
        bar.inc(1);
    }
    bar.finish_and_clear();
    let share = |x: usize, of: usize| if of == 0 { 0.0 } else { x as f64 / of as f64 };
    let n = qs.len();
    row.clean_found = share(clean_found, n);
    row.one_typo_found = share(one_found, n);
    row.one_typo_found_without_tolerance = share(one_found_off, n);
    row.every_word_found = share(every_found, n);
    row.one_typo_recovered = share(one_given_clean, clean_found);
    row.every_word_recovered = share(every_given_clean, clean_found);
    row.clean_unchanged = share(unchanged, n);
    row.suggest_word_found = share(word_found, n);
    for v in [
        &mut clean_on,
        &mut clean_off,
        &mut typo_on,
        &mut typo_off,
        &mut suggest_ms,
    ] {
        v.sort_by(f64::total_cmp);
    }
    row.clean_p50_ms = speed::quantile(&clean_on, 0.5);
    row.clean_off_p50_ms = speed::quantile(&clean_off, 0.5);
    row.typo_p50_ms = speed::quantile(&typo_on, 0.5);
    row.typo_off_p50_ms = speed::quantile(&typo_off, 0.5);
    row.suggest_p50_ms = speed::quantile(&suggest_ms, 0.5);
    row.suggest_p99_ms = speed::quantile(&suggest_ms, 0.99);
    row.typo_list_bytes = engine.stats().typo_list_bytes;
    Ok(Some(row))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn an_edit_changes_the_word_by_one_edit() {
        let mut rng = SplitMix64::new(3);
        for w in ["running", "headphones", "shoes", "aa"] {
            for _ in 0..200 {
                let e = edit(w, &mut rng);
                assert_ne!(e, w);
                let d = crate::text::edit_distance(w, &e);
                assert_eq!(d, 1, "{w} -> {e}");
            }
        }
    }

    #[test]
    fn words_are_lowercase_ascii_runs() {
        assert_eq!(
            words("Acme Running-Shoe 42 跑步鞋"),
            vec!["acme", "running", "shoe", "42"]
        );
    }
}
