//! The item side of the factor channels (MF and the sequence model): each item has a vector,
//! a shopper is one query vector, and the channel proposes the items with the largest dot
//! products. Below [`ANN_MIN_ITEMS`] items that is an exact scan of the vectors' int8 codes
//! ([`CatalogCodes::top`]: the float vectors are read only for items that can still enter the
//! top, and the scan stops once no shorter vector can);
//! above it, a graph walk over an HNSW index of the vectors, built in the background.

use std::sync::{Arc, OnceLock};

use super::{Allow, ChannelHits};
use crate::catalog::{validate_vector, ItemId};
use crate::config::{HnswParams, Metric};
use crate::vector::{Allowed, CatalogCodes, VectorIndex};

/// From this many items on, a factor channel proposes by a graph walk instead of a scan.
/// On the 100k-product bench shop with 64-d factors, the two scans of a recommendation (MF
/// and the sequence model) are about 14% of it (perf): every one of 1,000 scans stopped
/// early, after 15.8% of the catalog on average. An inner-product graph walk re-scores
/// thousands of candidates exactly (53 ms a recommendation when it was first measured,
/// before the engine's own search loop; not measured since) and costs minutes to build at
/// a million items; the scan at a million has not been measured since it stops early.
pub(crate) const ANN_MIN_ITEMS: usize = 1_000_000;

/// The derived search structures over a factor channel's item vectors (never stored: rebuilt
/// from the model file).
#[derive(Clone, Default)]
pub(crate) struct ItemSide {
    codes: OnceLock<CatalogCodes>,
    /// Large catalogs only; queries scan until it is built.
    index: Arc<OnceLock<VectorIndex>>,
}

impl std::fmt::Debug for ItemSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ItemSide")
            .field("codes", &self.codes.get().is_some())
            .field("index", &self.index.get().is_some())
            .finish()
    }
}

/// A factor channel's item vectors: row-major, `dim` floats per item.
#[derive(Clone, Copy)]
pub(crate) struct Rows<'a> {
    pub rows: &'a [f32],
    pub dim: usize,
}

impl Rows<'_> {
    fn n_items(&self) -> usize {
        self.rows.len().checked_div(self.dim).unwrap_or(0)
    }
}

impl ItemSide {
    fn codes(&self, rows: Rows<'_>) -> &CatalogCodes {
        self.codes
            .get_or_init(|| CatalogCodes::of_rows(rows.rows, rows.dim))
    }

    /// Builds what queries need: the codes, and when the catalog has at least
    /// [`ANN_MIN_ITEMS`] items the graph as well (minutes at a million items: the caller
    /// runs it on a background thread). Returns whether a graph was built.
    pub(crate) fn prepare(&self, rows: Rows<'_>, params: &HnswParams) -> bool {
        let _ = self.codes(rows);
        let n = rows.n_items();
        if n < ANN_MIN_ITEMS || self.index.get().is_some() {
            return false;
        }
        let index = VectorIndex::in_memory(rows.dim, Metric::Dot, params, n);
        let vectors: Vec<(ItemId, &[f32])> = rows
            .rows
            .chunks_exact(rows.dim)
            .enumerate()
            .filter(|(_, v)| validate_vector(v, rows.dim).is_ok())
            .map(|(i, v)| (ItemId(i as u32), v))
            .collect();
        for chunk in vectors.chunks(10_000) {
            index.upsert(chunk);
        }
        let _ = self.index.set(index);
        true
    }

    /// Whether [`ItemSide::prepare`] would build a graph for `rows`.
    pub(crate) fn wants_index(rows: Rows<'_>) -> bool {
        rows.n_items() >= ANN_MIN_ITEMS
    }

    /// The best `n` items passing `ok` by `q . v`, best first, with their dot products (any
    /// sign). Exact below [`ANN_MIN_ITEMS`] items; a graph walk once its index is built.
    ///
    /// Nothing when no score can be told from zero (`|q|` times the longest item vector at
    /// most [`CatalogCodes::MIN_SCORE`]): such a vector, as MF folds in from a history of
    /// products without factors, ties every item, and ranking them read every item's vector
    /// (33 ms a similar-item query on the 100k shop).
    pub(crate) fn top(&self, rows: Rows<'_>, q: &[f32], n: usize, ok: &Allow<'_>) -> ChannelHits {
        if validate_vector(q, rows.dim).is_err() || !self.codes(rows).ranks(q) {
            return Vec::new();
        }
        if let Some(index) = self.index.get() {
            let keep = |i: ItemId| ok(i.0);
            return index
                .search(q, n, Allowed::Predicate(&keep))
                .into_iter()
                .map(|h| (h.item.0, h.score))
                .collect();
        }
        self.codes(rows)
            .top(rows.rows, q, n, ok)
            .into_iter()
            .map(|(s, i)| (i, s))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::SplitMix64;

    /// Both ways of proposing (the scan of the codes, and an index of the vectors, which a
    /// catalog this small scans exactly) give the exact top `n` by dot product among the
    /// items `ok` passes, negative products included; a zero or wrong-length query gives
    /// nothing.
    #[test]
    fn the_scan_and_the_index_propose_the_exact_top() {
        let (n_items, dim) = (3_000, 24);
        let mut rng = SplitMix64::new(5);
        let rows: Vec<f32> = (0..n_items * dim).map(|_| rng.gauss() as f32).collect();
        let q: Vec<f32> = (0..dim).map(|_| rng.gauss() as f32).collect();
        let r = Rows { rows: &rows, dim };
        let ok = |i: u32| !i.is_multiple_of(5);
        let mut want: Vec<(u32, f32)> = (0..n_items as u32)
            .filter(|&i| ok(i))
            .map(|i| {
                let v = &rows[i as usize * dim..(i as usize + 1) * dim];
                (i, v.iter().zip(&q).map(|(a, b)| a * b).sum::<f32>())
            })
            .collect();
        want.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let check = |got: &ChannelHits, n: usize| {
            let ids = |v: &[(u32, f32)]| v.iter().map(|h| h.0).collect::<Vec<_>>();
            assert_eq!(ids(got), ids(&want[..n]));
            for (g, w) in got.iter().zip(&want) {
                assert!((g.1 - w.1).abs() < 1e-3, "{g:?} vs {w:?}");
            }
        };
        let scan = ItemSide::default();
        assert!(!scan.prepare(r, &HnswParams::default()));
        check(&scan.top(r, &q, 50, &ok), 50);
        // Every allowed item, so the last ones have negative products.
        let all = want.len();
        check(&scan.top(r, &q, all, &ok), all);
        assert!(want[all - 1].1 < 0.0);
        assert!(scan.top(r, &vec![0.0; dim], 10, &ok).is_empty());
        assert!(scan.top(r, &q[1..], 10, &ok).is_empty());

        let walk = ItemSide::default();
        let index = VectorIndex::in_memory(dim, Metric::Dot, &HnswParams::default(), n_items);
        let vectors: Vec<(ItemId, &[f32])> = rows
            .chunks_exact(dim)
            .enumerate()
            .map(|(i, v)| (ItemId(i as u32), v))
            .collect();
        index.upsert(&vectors);
        assert!(walk.index.set(index).is_ok());
        check(&walk.top(r, &q, 50, &ok), 50);
    }
}
