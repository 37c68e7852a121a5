//! Vector nearest neighbours as a channel (a content channel: it reads the request's vector,
//! applies the filter during the graph walk or by an exact scan, and needs no fitting).

use super::{Allow, Channel, ChannelHits, Request, Retriever};
use crate::catalog::{ItemId, ItemTable};
use crate::error::Result;
use crate::filter::Filter;
use crate::text::TextIndex;
use crate::vector::{Allowed, VectorIndex};

/// The vector index of one engine, with the catalog its filters read.
pub(crate) struct VectorChannel<'a> {
    pub index: &'a VectorIndex,
    pub items: &'a ItemTable,
    /// The text index, whose inverted lists give a filter's products.
    pub text: &'a TextIndex,
    /// Below this fraction of the catalog passing the filter, scan the allowed items
    /// exactly instead of walking the graph.
    pub exact_scan_below: f64,
    /// The most neighbours one search may ask for.
    pub max_k: usize,
}

impl Retriever for VectorChannel<'_> {
    fn channel(&self) -> Channel {
        Channel::Vector
    }

    /// One more than `n` (a `similar_to` item is usually its own nearest neighbour) under
    /// the request's filter; like the text channel it leaves `ok` to the caller.
    fn propose(&self, req: &Request<'_>, n: usize, _ok: &Allow<'_>) -> Result<Option<ChannelHits>> {
        let Some(v) = req.vector else {
            return Ok(None);
        };
        let k = (n + 1).min(self.max_k);
        let hits = search(
            self.index,
            self.items,
            self.text,
            req.filter,
            v,
            k,
            self.exact_scan_below,
        );
        Ok(Some(hits.into_iter().map(|(i, s)| (i.0, s)).collect()))
    }

    /// The exact similarity of each candidate that has a vector (a search's text candidates
    /// that the walk did not reach), so that their part is their score rather than nothing.
    fn score(&self, req: &Request<'_>, cands: &[u32]) -> Option<ChannelHits> {
        let v = req.vector?;
        let hits = self.index.score_items(v, cands.to_vec());
        Some(hits.into_iter().map(|h| (h.item.0, h.score)).collect())
    }
}

/// The `k` nearest products to `v` that pass `filter`: an exact scan of the allowed items
/// when fewer than `exact_scan_below` of the catalog pass, otherwise a graph walk with the
/// filter as a predicate. The allowed items come from the text index's inverted lists (a
/// count first, the items only when few), so a selective filter costs what it selects; the
/// catalog is scanned only if the text index fails. The vector and filter must have been
/// validated.
pub(crate) fn search(
    index: &VectorIndex,
    items: &ItemTable,
    text: &TextIndex,
    filter: &Filter,
    v: &[f32],
    k: usize,
    exact_scan_below: f64,
) -> Vec<(ItemId, f32)> {
    let pred = |iid: ItemId| items.get(iid).is_some_and(|p| filter.matches(p));
    let limit = (exact_scan_below * items.live as f64) as usize;
    let hits = if filter.is_all() {
        index.search(v, k, Allowed::All)
    } else if let Ok(found) = text.filtered(filter, limit) {
        match found {
            // The record is the truth (the index may hold a product the commit just changed).
            Some(mut allowed) => {
                allowed.retain(|i| pred(*i));
                index.search(v, k, Allowed::Exact(&allowed))
            }
            None => index.search(v, k, Allowed::Predicate(&pred)),
        }
    } else {
        let allowed: Vec<ItemId> = items
            .items
            .iter()
            .enumerate()
            .filter(|(_, p)| p.as_ref().is_some_and(|p| filter.matches(p)))
            .map(|(i, _)| ItemId(i as u32))
            .collect();
        let fraction = allowed.len() as f64 / items.live.max(1) as f64;
        if fraction < exact_scan_below {
            index.search(v, k, Allowed::Exact(&allowed))
        } else {
            index.search(v, k, Allowed::Predicate(&pred))
        }
    };
    hits.into_iter().map(|h| (h.item, h.score)).collect()
}
