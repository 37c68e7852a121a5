//! Vector search: an HNSW graph (hnsw_rs) with tombstones, filters, exact fallback and
//! crash-safe snapshots.
//!
//! "Here is a query vector and a filter, give me the nearest items." Graph nodes are *slots*;
//! an item's live slot changes when its vector changes, and old slots become tombstones that
//! the search skips. The raw vectors are kept in memory (indexed by item) for exact scans and
//! for exact re-scoring of graph candidates.
//!
//! Snapshots: `vectors/gen-NNNNNN/` holds hnsw_rs's dump plus `slots.bin`; `vectors/MANIFEST`
//! (JSON, written atomically) names the live generation, the log sequence it contains, and the
//! length and CRC-32 of every file. hnsw_rs's loader panics or exits on damaged files, so a file
//! is handed to it only after its checksum matched; otherwise the index is rebuilt from the
//! catalog's vectors.

use std::path::{Path, PathBuf};

use hnsw_rs::anndists::dist::{DistDot, DistL2};
use hnsw_rs::api::AnnT;
use hnsw_rs::hnsw::{Hnsw, PointIndexation};
use hnsw_rs::hnswio::HnswIo;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::catalog::ItemId;
use crate::config::{HnswParams, Metric};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::models::linalg::{self, Avx2Fma, Kernels, Portable};

mod codes;
mod walk;

pub(crate) use codes::{CatalogCodes, Codes};
use walk::{Cand, FlatGraph, Space};

/// No slot.
const NONE: u32 = u32::MAX;
/// Unit vectors are scaled by this before entering a dot-product graph: hnsw_rs asserts that
/// a dot product of unit vectors is at most 1.000002, which f32 rounding can break on long
/// vectors.
const UNIT_SHRINK: f32 = 0.99999;
/// Upper bound of hnsw_rs layers.
const MAX_LAYERS: usize = 16;
pub(crate) const SLOTS_MAGIC: &[u8; 4] = b"SLOT";
pub(crate) const SLOTS_VERSION: u32 = 1;

enum Graph {
    /// Unit vectors, distance `1 - dot`: used for cosine and for dot (re-scored exactly).
    Dot(Hnsw<'static, f32, DistDot>),
    /// Raw vectors, Euclidean distance.
    L2(Hnsw<'static, f32, DistL2>),
}

impl Graph {
    fn new(metric: Metric, p: &HnswParams, capacity: usize) -> Graph {
        let cap = capacity.max(1024);
        match metric {
            Metric::L2 => Graph::L2(Hnsw::new(
                p.max_connections,
                cap,
                MAX_LAYERS,
                p.ef_construction,
                DistL2 {},
            )),
            _ => Graph::Dot(Hnsw::new(
                p.max_connections,
                cap,
                MAX_LAYERS,
                p.ef_construction,
                DistDot {},
            )),
        }
    }

    fn insert(&self, points: &[(&[f32], usize)]) {
        let parallel = points.len() >= 64;
        match self {
            Graph::Dot(h) if parallel => h.parallel_insert_slice(&points.to_vec()),
            Graph::L2(h) if parallel => h.parallel_insert_slice(&points.to_vec()),
            Graph::Dot(h) => points.iter().for_each(|p| h.insert_slice(*p)),
            Graph::L2(h) => points.iter().for_each(|p| h.insert_slice(*p)),
        }
    }

    /// hnsw_rs's nodes, which the engine's own search loop copies ([`FlatGraph`]).
    fn indexation(&self) -> &PointIndexation<'static, f32> {
        match self {
            Graph::Dot(h) => h.get_point_indexation(),
            Graph::L2(h) => h.get_point_indexation(),
        }
    }

    /// Neighbours per node on the upper layers (M).
    fn max_connections(&self) -> usize {
        match self {
            Graph::Dot(h) => h.get_max_nb_connection() as usize,
            Graph::L2(h) => h.get_max_nb_connection() as usize,
        }
    }

    /// The flat copy of the whole graph.
    fn flatten(&self) -> FlatGraph {
        let mut flat = FlatGraph::new(self.max_connections());
        let plan = flat.plan(self.indexation(), true);
        flat.apply(plan);
        flat
    }

    fn dump(&self, dir: &Path, basename: &str) -> Result<String> {
        let r = match self {
            Graph::Dot(h) => h.file_dump(dir, basename),
            Graph::L2(h) => h.file_dump(dir, basename),
        };
        r.map_err(|e| Error::backend("hnsw", e))
    }

    fn load(metric: Metric, dir: &Path, basename: &str) -> Result<Graph> {
        // `load_hnsw` ties the index to the loader's lifetime; the loader is a few hundred
        // bytes and holds no data once loading is done (no mmap), so it is leaked once per
        // load to give the index a 'static lifetime.
        let io: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new(dir, basename)));
        let g = match metric {
            Metric::L2 => io.load_hnsw::<f32, DistL2>().map(Graph::L2),
            _ => io.load_hnsw::<f32, DistDot>().map(Graph::Dot),
        };
        g.map_err(|e| Error::corrupt(dir, e.to_string()))
    }
}

/// What is kept beside the graph dump.
#[derive(Serialize, Deserialize)]
struct SlotFile {
    dim: usize,
    metric: Metric,
    /// `slot_item[slot]` = item.
    slot_item: Vec<u32>,
    /// `item_slot[item]` = live slot or `NONE`.
    item_slot: Vec<u32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
struct FileEntry {
    name: String,
    len: u64,
    crc32: u32,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
struct Manifest {
    generation: u64,
    applied_seq: u64,
    basename: String,
    files: Vec<FileEntry>,
}

struct Inner {
    graph: Graph,
    /// The graph's adjacency as the search loop reads it.
    flat: FlatGraph,
    slot_item: Vec<u32>,
    item_slot: Vec<u32>,
    /// Raw vectors by item (normalised for cosine), `dim` floats each; zeros when absent.
    vectors: Vec<f32>,
    /// By item: `1 / |v|` under dot (the graph is walked by angle), `|v|^2` under L2; empty
    /// under cosine.
    aux: Vec<f32>,
    /// The vectors as int8 codes, which the graph walk and the exact scan read: a quarter of
    /// the bytes, so four times the vectors per cache line. Candidates are re-scored on the
    /// float vectors.
    codes: Codes,
    live: usize,
}

impl Inner {
    fn new(graph: Graph, dim: usize) -> Inner {
        Inner {
            flat: FlatGraph::new(graph.max_connections()),
            graph,
            slot_item: Vec::new(),
            item_slot: Vec::new(),
            vectors: Vec::new(),
            aux: Vec::new(),
            codes: Codes::new(dim),
            live: 0,
        }
    }
}

/// The graph walk's view of the stored vectors, through their int8 codes: cosine by dot
/// product of unit vectors, dot by angle (`q.v / |v|`: the graph's order), L2 by
/// `|v|^2 - 2 q.v`.
struct Walk<'a, K> {
    kern: K,
    /// The query's int8 codes and their scale.
    q: &'a [i8],
    q_scale: f32,
    metric: Metric,
    inner: &'a Inner,
    pred: Option<&'a (dyn Fn(ItemId) -> bool + Sync)>,
}

impl<K: Kernels> Walk<'_, K> {
    #[inline(always)]
    fn codes(&self, slot: u32) -> Option<(usize, &[i8], f32)> {
        let item = *self.inner.slot_item.get(slot as usize)? as usize;
        let (codes, scale) = self.inner.codes.get(item)?;
        Some((item, codes, scale))
    }
}

impl<K: Kernels> Space for Walk<'_, K> {
    #[inline(always)]
    fn dist(&self, slot: u32) -> f32 {
        let Some((item, v, scale)) = self.codes(slot) else {
            return f32::INFINITY;
        };
        let dot = self.kern.dot_i8(self.q, v) as f32 * (self.q_scale * scale);
        let aux = || self.inner.aux.get(item).copied().unwrap_or(0.0);
        match self.metric {
            Metric::Cosine => -dot,
            Metric::Dot => -dot * aux(),
            Metric::L2 => aux() - 2.0 * dot,
        }
    }

    #[inline(always)]
    fn allowed(&self, slot: u32) -> bool {
        let Some(&item) = self.inner.slot_item.get(slot as usize) else {
            return false;
        };
        self.inner.item_slot.get(item as usize) == Some(&slot)
            && self.pred.is_none_or(|p| p(ItemId(item)))
    }

    #[inline(always)]
    fn prefetch(&self, slot: u32) {
        if let Some((_, v, _)) = self.codes(slot) {
            linalg::prefetch(v);
        }
    }
}

/// How to restrict a vector search.
pub(crate) enum Allowed<'a> {
    /// Every item.
    All,
    /// Only items for which the predicate holds (checked during the graph walk).
    Predicate(&'a (dyn Fn(ItemId) -> bool + Sync)),
    /// Exactly these items: scanned exhaustively, no graph walk.
    Exact(&'a [ItemId]),
    /// Every item below this id, scanned exhaustively (the exact reference).
    Every(u32),
}

impl std::fmt::Debug for VectorIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VectorIndex")
            .field("dim", &self.dim)
            .field("metric", &self.metric)
            .field("live", &self.len())
            .finish()
    }
}

/// A vector hit; `score` is larger-is-better (cosine, dot, or negated L2 distance).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct VectorHit {
    pub item: ItemId,
    pub score: f32,
}

pub(crate) struct VectorIndex {
    dir: PathBuf,
    dim: usize,
    metric: Metric,
    params: HnswParams,
    inner: RwLock<Inner>,
    /// (generation, applied seq, changes since the snapshot)
    snap: parking_lot::Mutex<(u64, u64, usize)>,
}

/// How the index came up at open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LoadOutcome {
    /// No snapshot existed.
    Fresh,
    /// The snapshot was loaded.
    Loaded,
    /// The snapshot was damaged and will be rebuilt from the log.
    Damaged,
}

impl VectorIndex {
    /// Opens the vector index in `dir`: loads the checksummed snapshot when it is intact.
    /// Returns the index, the log sequence it contains, and what happened.
    pub fn open(
        dir: &Path,
        dim: usize,
        metric: Metric,
        params: &HnswParams,
    ) -> Result<(VectorIndex, u64, LoadOutcome)> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let fresh = || Inner::new(Graph::new(metric, params, 0), dim);
        let (inner, gen, applied, outcome) = match Self::load_snapshot(dir, dim, metric) {
            Ok(Some((inner, m))) => (inner, m.generation, m.applied_seq, LoadOutcome::Loaded),
            Ok(None) => (fresh(), 0, 0, LoadOutcome::Fresh),
            Err(_) => (fresh(), 0, 0, LoadOutcome::Damaged),
        };
        Ok((
            VectorIndex {
                dir: dir.to_path_buf(),
                dim,
                metric,
                params: params.clone(),
                inner: RwLock::new(inner),
                snap: parking_lot::Mutex::new((gen, applied, 0)),
            },
            applied,
            outcome,
        ))
    }

    fn manifest_path(dir: &Path) -> PathBuf {
        dir.join("MANIFEST")
    }

    /// Every name in the manifest must be a plain file name inside the snapshot directory, and
    /// the files hnsw_rs will read must be among the checksummed ones: a damaged or crafted
    /// manifest must not send the loader elsewhere or past the checksums.
    fn check_manifest_names(m: &Manifest, mpath: &Path) -> Result<()> {
        let plain =
            |n: &str| !n.is_empty() && n != "." && n != ".." && !n.contains(['/', '\\', '\0']);
        if let Some(bad) = m.files.iter().map(|f| f.name.as_str()).find(|n| !plain(n)) {
            return Err(Error::corrupt(
                mpath,
                format!("file name {bad:?} is not a plain name"),
            ));
        }
        if !plain(&m.basename) {
            return Err(Error::corrupt(
                mpath,
                "the graph's base name is not a plain name",
            ));
        }
        for ext in ["hnsw.graph", "hnsw.data"] {
            let want = format!("{}.{ext}", m.basename);
            if !m.files.iter().any(|f| f.name == want) {
                return Err(Error::corrupt(mpath, format!("{want} is not checksummed")));
            }
        }
        Ok(())
    }

    /// Loads and verifies the snapshot, or `Ok(None)` when there is none.
    fn load_snapshot(dir: &Path, dim: usize, metric: Metric) -> Result<Option<(Inner, Manifest)>> {
        let mpath = Self::manifest_path(dir);
        let bytes = match std::fs::read(&mpath) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&mpath, e)),
        };
        let m: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| Error::corrupt(&mpath, e.to_string()))?;
        Self::check_manifest_names(&m, &mpath)?;
        let gdir = dir.join(format!("gen-{:06}", m.generation));
        for f in &m.files {
            let path = gdir.join(&f.name);
            let data = fsutil::read(&path)?;
            if data.len() as u64 != f.len || fsutil::crc32(&data) != f.crc32 {
                return Err(Error::corrupt(
                    &path,
                    "length or checksum differs from the manifest",
                ));
            }
        }
        let slots_path = gdir.join("slots.bin");
        let slots: SlotFile = crate::codec::decode_file(
            SLOTS_MAGIC,
            SLOTS_VERSION,
            &fsutil::read(&slots_path)?,
            &slots_path,
        )?;
        if slots.dim != dim || slots.metric != metric {
            return Err(Error::corrupt(
                &slots_path,
                "dimension or metric differs from the engine's",
            ));
        }
        if slots.slot_item.is_empty() {
            return Ok(None);
        }
        let graph = Graph::load(metric, &gdir, &m.basename)?;
        let live = slots.item_slot.iter().filter(|s| **s != NONE).count();
        let mut inner = Inner::new(graph, dim);
        inner.flat = inner.graph.flatten();
        inner.slot_item = slots.slot_item;
        inner.item_slot = slots.item_slot;
        inner.live = live;
        Ok(Some((inner, m)))
    }

    /// An index that lives only in memory (never snapshotted): the MF item factors.
    pub fn in_memory(
        dim: usize,
        metric: Metric,
        params: &HnswParams,
        capacity: usize,
    ) -> VectorIndex {
        VectorIndex {
            dir: PathBuf::new(),
            dim,
            metric,
            params: params.clone(),
            inner: RwLock::new(Inner::new(Graph::new(metric, params, capacity), dim)),
            snap: parking_lot::Mutex::new((0, 0, 0)),
        }
    }

    /// Sets an item's raw vector without touching the graph (used at open, before replay,
    /// for vectors the snapshot already holds).
    pub fn set_raw(&self, item: ItemId, v: &[f32]) {
        let prepared = self.prepare(v);
        let mut inner = self.inner.write();
        self.store_raw(&mut inner, item, &prepared);
    }

    fn store_raw(&self, inner: &mut Inner, item: ItemId, v: &[f32]) {
        let dim = self.dim;
        let at = item.0 as usize * dim;
        if inner.vectors.len() < at + dim {
            inner.vectors.resize(at + dim, 0.0);
        }
        inner.vectors[at..at + dim].copy_from_slice(v);
        let i = item.0 as usize;
        inner.codes.set(i, v);
        let norm2 = linalg::dot(v, v);
        let aux = match self.metric {
            Metric::Cosine => return,
            Metric::Dot if norm2 > 0.0 => 1.0 / norm2.sqrt(),
            Metric::Dot => 0.0,
            Metric::L2 => norm2,
        };
        if inner.aux.len() <= i {
            inner.aux.resize(i + 1, 0.0);
        }
        inner.aux[i] = aux;
    }

    /// The vector as stored: unit length for cosine, unchanged otherwise.
    fn prepare(&self, v: &[f32]) -> Vec<f32> {
        match self.metric {
            Metric::Cosine => unit(v),
            _ => v.to_vec(),
        }
    }

    /// What enters the graph.
    fn graph_vector(&self, stored: &[f32]) -> Vec<f32> {
        match self.metric {
            Metric::L2 => stored.to_vec(),
            _ => unit(stored).into_iter().map(|x| x * UNIT_SHRINK).collect(),
        }
    }

    /// Inserts or replaces vectors (already validated). The graph insertion runs without
    /// blocking searches; new slots become visible together when the maps are updated.
    pub fn upsert(&self, items: &[(ItemId, &[f32])]) {
        if items.is_empty() {
            return;
        }
        let stored: Vec<Vec<f32>> = items.iter().map(|(_, v)| self.prepare(v)).collect();
        let graph_vecs: Vec<Vec<f32>> = stored.iter().map(|v| self.graph_vector(v)).collect();
        let plan = {
            let inner = self.inner.upgradable_read();
            let first = inner.slot_item.len();
            let points: Vec<(&[f32], usize)> = graph_vecs
                .iter()
                .enumerate()
                .map(|(i, v)| (v.as_slice(), first + i))
                .collect();
            // Reserve the slots first so a concurrent reader that meets a new node before the
            // maps are updated sees an unknown slot and skips it.
            let mut inner = parking_lot::RwLockUpgradableReadGuard::upgrade(inner);
            inner.slot_item.extend(items.iter().map(|(it, _)| it.0));
            let inner = parking_lot::RwLockWriteGuard::downgrade(inner);
            inner.graph.insert(&points);
            // Read the changed neighbourhoods while searches go on; apply them below.
            inner.flat.plan(inner.graph.indexation(), false)
        };
        let mut inner = self.inner.write();
        inner.flat.apply(plan);
        let first = inner.slot_item.len() - items.len();
        for (i, ((item, _), v)) in items.iter().zip(&stored).enumerate() {
            let slot = (first + i) as u32;
            let idx = item.0 as usize;
            if inner.item_slot.len() <= idx {
                inner.item_slot.resize(idx + 1, NONE);
            }
            if inner.item_slot[idx] == NONE {
                inner.live += 1;
            }
            inner.item_slot[idx] = slot;
            self.store_raw(&mut inner, *item, v);
        }
        drop(inner);
        self.snap.lock().2 += items.len();
    }

    /// Tombstones an item's vector.
    pub fn remove(&self, item: ItemId) {
        let mut inner = self.inner.write();
        let idx = item.0 as usize;
        if let Some(slot) = inner.item_slot.get_mut(idx) {
            if *slot != NONE {
                *slot = NONE;
                inner.live -= 1;
            }
        }
        drop(inner);
        self.snap.lock().2 += 1;
    }

    /// Number of live vectors.
    pub fn len(&self) -> usize {
        self.inner.read().live
    }

    /// Graph nodes, tombstones included.
    pub fn slots(&self) -> usize {
        self.inner.read().slot_item.len()
    }

    /// The stored vector of an item (unit length under cosine).
    pub fn vector(&self, item: ItemId) -> Option<Vec<f32>> {
        let inner = self.inner.read();
        if inner
            .item_slot
            .get(item.0 as usize)
            .is_none_or(|s| *s == NONE)
        {
            return None;
        }
        let at = item.0 as usize * self.dim;
        inner.vectors.get(at..at + self.dim).map(<[f32]>::to_vec)
    }

    fn score(&self, q: &[f32], v: &[f32]) -> f32 {
        match self.metric {
            Metric::L2 => -q
                .iter()
                .zip(v)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f32>()
                .sqrt(),
            _ => q.iter().zip(v).map(|(a, b)| a * b).sum(),
        }
    }

    /// Top-`k` items by the engine's metric. `q` must be validated by the caller.
    pub fn search(&self, q: &[f32], k: usize, allowed: Allowed<'_>) -> Vec<VectorHit> {
        let q = self.prepare(q);
        let inner = self.inner.read();
        let items = match Avx2Fma::detect() {
            Some(kern) => self.candidates_simd(kern, &inner, &q, k, &allowed),
            None => self.candidates(Portable, &inner, &q, k, &allowed),
        };
        self.rescore(&inner, &q, items, k)
    }

    /// The live ones of `items` scored exactly by the engine's metric, best first (items
    /// without a vector are left out). `q` must be validated by the caller.
    pub fn score_items(&self, q: &[f32], items: Vec<u32>) -> Vec<VectorHit> {
        let q = self.prepare(q);
        let inner = self.inner.read();
        let k = items.len();
        self.rescore(&inner, &q, items, k)
    }

    /// The live ones of `items` scored exactly by the engine's metric, best `k` first.
    fn rescore(&self, inner: &Inner, q: &[f32], items: Vec<u32>, k: usize) -> Vec<VectorHit> {
        let mut hits: Vec<VectorHit> = items
            .into_iter()
            .filter_map(|item| {
                let slot = *inner.item_slot.get(item as usize)?;
                if slot == NONE {
                    return None;
                }
                let at = item as usize * self.dim;
                let v = inner.vectors.get(at..at + self.dim)?;
                Some(VectorHit {
                    item: ItemId(item),
                    score: self.score(q, v),
                })
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.item.cmp(&b.item)));
        hits.dedup_by_key(|h| h.item);
        hits.truncate(k);
        hits
    }

    /// [`Self::candidates`] compiled for AVX2 + FMA as a whole, so that the distance kernel
    /// is inlined into the walk and the scan (a `target_feature` function is not inlined into
    /// code compiled without it).
    fn candidates_simd(
        &self,
        kern: Avx2Fma,
        inner: &Inner,
        q: &[f32],
        k: usize,
        allowed: &Allowed<'_>,
    ) -> Vec<u32> {
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2,fma")]
            unsafe fn run(
                index: &VectorIndex,
                kern: Avx2Fma,
                inner: &Inner,
                q: &[f32],
                k: usize,
                allowed: &Allowed<'_>,
            ) -> Vec<u32> {
                index.candidates(kern, inner, q, k, allowed)
            }
            // SAFETY: an `Avx2Fma` value exists only if AVX2 and FMA were detected.
            unsafe { run(self, kern, inner, q, k, allowed) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self.candidates(kern, inner, q, k, allowed)
        }
    }

    /// Whether a search without a list of allowed items scans every vector instead of
    /// walking the graph: a small index is scanned whole, exact at little cost.
    fn scans_whole(&self, inner: &Inner) -> bool {
        inner.live.saturating_mul(self.dim * 4) <= self.params.exact_scan_bytes
    }

    /// The items to re-score exactly: an exact scan of the listed items, or a graph walk.
    #[inline(always)]
    fn candidates<K: Kernels>(
        &self,
        kern: K,
        inner: &Inner,
        q: &[f32],
        k: usize,
        allowed: &Allowed<'_>,
    ) -> Vec<u32> {
        let small = self.scans_whole(inner);
        let n = u32::try_from(inner.item_slot.len()).unwrap_or(u32::MAX);
        match allowed {
            Allowed::Exact(items) => self.scan(inner, q, k, items.iter().map(|i| i.0)),
            Allowed::Every(n) => self.scan(inner, q, k, 0..*n),
            Allowed::All if small => self.scan(inner, q, k, 0..n),
            Allowed::Predicate(p) if small => {
                self.scan(inner, q, k, (0..n).filter(|&i| p(ItemId(i))))
            }
            Allowed::All => self.walk(kern, inner, q, k, None),
            Allowed::Predicate(p) => self.walk(kern, inner, q, k, Some(*p)),
        }
    }

    /// The best `k` of `items` by an exact scan of the codes ([`Codes::top`]). Under L2 it
    /// ranks by `2 q.v - |v|^2` (the same order as the distance).
    #[inline(always)]
    fn scan(
        &self,
        inner: &Inner,
        q: &[f32],
        k: usize,
        items: impl Iterator<Item = u32>,
    ) -> Vec<u32> {
        let l2 = self.metric == Metric::L2;
        let affine = |i: usize| {
            if inner.item_slot.get(i).is_none_or(|s| *s == NONE) {
                return None;
            }
            Some(if l2 {
                (2.0, -inner.aux.get(i).copied().unwrap_or(0.0))
            } else {
                (1.0, 0.0)
            })
        };
        inner
            .codes
            .top(&inner.vectors, q, k, items, affine, |_| true)
            .into_iter()
            .map(|(_, item)| item)
            .collect()
    }

    /// The engine's graph walk ([`FlatGraph::search`]) over the stored vectors: cosine by dot
    /// product of unit vectors, dot by angle (the graph's order; re-scored by the caller, so
    /// it asks for more candidates), L2 by `|v|^2 - 2 q.v`. Tombstones and the predicate are
    /// checked per node, which is kept on the frontier either way.
    #[inline(always)]
    fn walk<K: Kernels>(
        &self,
        kern: K,
        inner: &Inner,
        q: &[f32],
        k: usize,
        pred: Option<&(dyn Fn(ItemId) -> bool + Sync)>,
    ) -> Vec<u32> {
        let dim = self.dim;
        // Dot is walked by angle and re-scored exactly, so it looks at more candidates.
        let want = match self.metric {
            Metric::Dot => (k * 4).max(k + 32),
            _ => k,
        };
        let ef = self.params.ef_search.max(want);
        let unit_q;
        let qw: &[f32] = match self.metric {
            Metric::Dot => {
                unit_q = unit(q);
                &unit_q
            }
            _ => q,
        };
        let mut q_codes = vec![0i8; dim];
        let q_scale = linalg::quantize_i8(qw, &mut q_codes);
        let space = Walk {
            kern,
            q: &q_codes,
            q_scale,
            metric: self.metric,
            inner,
            pred,
        };
        let everything = pred.is_none() && inner.live == inner.slot_item.len();
        let mut found: Vec<Cand> = Vec::with_capacity(ef);
        inner.flat.search(&space, ef, everything, &mut found);
        // The best `2 k` by the codes are re-scored on the float vectors by the caller: the
        // codes' order is close to the true one, not equal to it (on 100k x 64 embeddings,
        // re-scoring all `ef` candidates instead gave the same recall to four decimals).
        found
            .into_iter()
            .take(want.max(2 * k))
            .filter_map(|c| inner.slot_item.get(c.slot as usize).copied())
            .collect()
    }

    /// Exact top-`k` over every live vector (the reference for ANN recall).
    pub fn search_exact(&self, q: &[f32], k: usize) -> Vec<VectorHit> {
        let q = self.prepare(q);
        let inner = self.inner.read();
        let n = u32::try_from(inner.item_slot.len()).unwrap_or(u32::MAX);
        let items = match Avx2Fma::detect() {
            Some(kern) => self.candidates_simd(kern, &inner, &q, k, &Allowed::Every(n)),
            None => self.scan(&inner, &q, k, 0..n),
        };
        self.rescore(&inner, &q, items, k)
    }

    /// Rebuilds the graph from the live raw vectors (after damage, or when tombstones dominate).
    pub fn rebuild(&self, items: &[(ItemId, Vec<f32>)]) {
        {
            let mut inner = self.inner.write();
            inner.graph = Graph::new(self.metric, &self.params, items.len());
            inner.flat = FlatGraph::new(inner.graph.max_connections());
            inner.slot_item.clear();
            inner.item_slot.clear();
            inner.live = 0;
        }
        let refs: Vec<(ItemId, &[f32])> = items.iter().map(|(i, v)| (*i, v.as_slice())).collect();
        for chunk in refs.chunks(10_000) {
            self.upsert(chunk);
        }
    }

    /// Changes since the last snapshot.
    pub fn pending_changes(&self) -> usize {
        self.snap.lock().2
    }

    /// The sequence the last snapshot contains.
    pub fn snapshot_seq(&self) -> u64 {
        self.snap.lock().1
    }

    /// Writes a new snapshot generation holding everything up to `seq` and switches the
    /// manifest to it. The caller holds the writer lock, so no upsert runs concurrently.
    pub fn snapshot(&self, seq: u64) -> Result<()> {
        let (gen, _, _) = *self.snap.lock();
        let next = gen + 1;
        let gdir = self.dir.join(format!("gen-{next:06}"));
        if gdir.exists() {
            std::fs::remove_dir_all(&gdir).map_err(|e| Error::io(&gdir, e))?;
        }
        std::fs::create_dir_all(&gdir).map_err(|e| Error::io(&gdir, e))?;
        let inner = self.inner.read();
        let mut names = Vec::new();
        let basename = if inner.slot_item.is_empty() {
            String::from("graph")
        } else {
            let b = inner.graph.dump(&gdir, "graph")?;
            names.push(format!("{b}.hnsw.graph"));
            names.push(format!("{b}.hnsw.data"));
            b
        };
        let slots = SlotFile {
            dim: self.dim,
            metric: self.metric,
            slot_item: inner.slot_item.clone(),
            item_slot: inner.item_slot.clone(),
        };
        // The copy for the search loop is refreshed whole here (an insert batch reads again
        // only the nodes its new nodes linked to), at a cost that snapshots' spacing amortises.
        let plan = inner.flat.plan(inner.graph.indexation(), true);
        drop(inner);
        self.inner.write().flat.apply(plan);
        let bytes = crate::codec::encode_file(SLOTS_MAGIC, SLOTS_VERSION, &slots)?;
        std::fs::write(gdir.join("slots.bin"), &bytes)
            .map_err(|e| Error::io(gdir.join("slots.bin"), e))?;
        names.push("slots.bin".to_string());
        let mut files = Vec::new();
        for name in names {
            let path = gdir.join(&name);
            let data = fsutil::read(&path)?;
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io(&path, e))?;
            files.push(FileEntry {
                name,
                len: data.len() as u64,
                crc32: fsutil::crc32(&data),
            });
        }
        fsutil::sync_dir(&gdir)?;
        let m = Manifest {
            generation: next,
            applied_seq: seq,
            basename,
            files,
        };
        let json = serde_json::to_vec_pretty(&m).map_err(|e| Error::backend("serde_json", e))?;
        fsutil::write_atomic(&Self::manifest_path(&self.dir), &json)?;
        *self.snap.lock() = (next, seq, 0);
        // Older generations are garbage now; a failure to remove them costs only disk space.
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("gen-") && name != format!("gen-{next:06}") {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        Ok(())
    }
}

/// `v` scaled to unit length (validated vectors are never all zero).
pub(crate) fn unit(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter().map(|x| x / n).collect()
    } else {
        v.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::ItemId;

    /// Clustered vectors (a few directions plus noise), as embeddings are.
    fn vectors(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut rng = crate::models::SplitMix64::new(seed);
        let mut g = || rng.next_f64() as f32 - 0.5;
        let centres: Vec<Vec<f32>> = (0..8).map(|_| (0..dim).map(|_| g()).collect()).collect();
        (0..n)
            .map(|i| {
                let c = &centres[i % centres.len()];
                c.iter().map(|x| x + 0.6 * g()).collect()
            })
            .collect()
    }

    fn brute(
        metric: Metric,
        data: &[Vec<f32>],
        q: &[f32],
        k: usize,
        ok: impl Fn(usize) -> bool,
    ) -> Vec<u32> {
        let score = |v: &[f32]| -> f32 {
            match metric {
                Metric::Cosine => {
                    let (uq, uv) = (unit(q), unit(v));
                    uq.iter().zip(&uv).map(|(a, b)| a * b).sum()
                }
                Metric::Dot => q.iter().zip(v).map(|(a, b)| a * b).sum(),
                Metric::L2 => -q.iter().zip(v).map(|(a, b)| (a - b) * (a - b)).sum::<f32>(),
            }
        };
        let mut all: Vec<(f32, u32)> = data
            .iter()
            .enumerate()
            .filter(|(i, _)| ok(*i))
            .map(|(i, v)| (score(v), i as u32))
            .collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        all.into_iter().take(k).map(|(_, i)| i).collect()
    }

    /// Builds an in-memory index in insert batches (so the search loop's copy of the graph is
    /// kept by incremental updates, not taken whole).
    fn index(metric: Metric, data: &[Vec<f32>]) -> VectorIndex {
        // These tests are about the graph walk: never the small index's exact scan.
        let params = HnswParams {
            ef_search: 64,
            exact_scan_bytes: 0,
            ..HnswParams::default()
        };
        let index = VectorIndex::in_memory(data[0].len(), metric, &params, data.len());
        let items: Vec<(ItemId, &[f32])> = data
            .iter()
            .enumerate()
            .map(|(i, v)| (ItemId(i as u32), v.as_slice()))
            .collect();
        // On one thread hnsw_rs inserts in a fixed order with its seeded levels, so the graph,
        // and every recall these tests assert, is the same in every run (two threads made
        // the tombstone test's recall vary between 0.94 and 0.97 from run to run).
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        one.install(|| {
            for chunk in items.chunks(250) {
                index.upsert(chunk);
            }
        });
        index
    }

    fn recall(got: &[VectorHit], want: &[u32]) -> f64 {
        got.iter().filter(|h| want.contains(&h.item.0)).count() as f64 / want.len().max(1) as f64
    }

    #[test]
    fn the_search_loop_finds_the_true_neighbours_under_every_metric() {
        let data = vectors(3000, 24, 5);
        let queries = vectors(60, 24, 99);
        for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
            let index = index(metric, &data);
            assert_eq!(index.inner.read().flat.len(), data.len());
            let mut total = 0.0;
            for q in &queries {
                let want = brute(metric, &data, q, 10, |_| true);
                let exact: Vec<u32> = index.search_exact(q, 10).iter().map(|h| h.item.0).collect();
                assert_eq!(exact, want, "{metric:?}: the exact scan is exact");
                let got = index.search(q, 10, Allowed::All);
                assert_eq!(got.len(), 10);
                assert!(got.windows(2).all(|w| w[0].score >= w[1].score));
                total += recall(&got, &want);
            }
            let r = total / queries.len() as f64;
            // hnsw_rs's own search on the same graph, at the same ef and candidate count.
            let mut theirs = 0.0;
            let want_n = if metric == Metric::Dot { 42 } else { 10 };
            for q in &queries {
                let want = brute(metric, &data, q, 10, |_| true);
                let inner = index.inner.read();
                let gq = index.graph_vector(&index.prepare(q));
                let found = match &inner.graph {
                    Graph::Dot(h) => h.search(&gq, want_n, 64),
                    Graph::L2(h) => h.search(&gq, want_n, 64),
                };
                theirs += found
                    .iter()
                    .filter(|n| want.contains(&inner.slot_item[n.d_id]))
                    .count() as f64
                    / 10.0;
            }
            let theirs = theirs / queries.len() as f64;
            println!("{metric:?}: recall@10 {r:.3}, hnsw_rs's own search {theirs:.3}");
            assert!(
                r >= 0.85 && r + 0.02 >= theirs,
                "{metric:?}: recall@10 {r:.3} against hnsw_rs's {theirs:.3}"
            );
        }
    }

    #[test]
    fn tombstones_and_predicates_are_never_returned_and_recall_holds() {
        let data = vectors(3000, 24, 6);
        let queries = vectors(40, 24, 77);
        let index = index(Metric::Cosine, &data);
        for i in (0..data.len()).filter(|i| i % 3 == 0) {
            index.remove(ItemId(i as u32));
        }
        let even = |item: ItemId| item.0.is_multiple_of(2);
        let (mut r_live, mut r_even) = (0.0, 0.0);
        for q in &queries {
            let got = index.search(q, 10, Allowed::All);
            assert!(
                got.iter().all(|h| h.item.0 % 3 != 0),
                "a removed item came back"
            );
            r_live += recall(&got, &brute(Metric::Cosine, &data, q, 10, |i| i % 3 != 0));
            let got = index.search(q, 10, Allowed::Predicate(&even));
            assert!(got.iter().all(|h| h.item.0 % 2 == 0 && h.item.0 % 3 != 0));
            r_even += recall(
                &got,
                &brute(Metric::Cosine, &data, q, 10, |i| i % 6 == 2 || i % 6 == 4),
            );
            let exact = index.search_exact(q, 10);
            assert!(exact.iter().all(|h| h.item.0 % 3 != 0));
        }
        let n = queries.len() as f64;
        assert!(
            r_live / n >= 0.95,
            "recall with tombstones {:.3}",
            r_live / n
        );
        assert!(
            r_even / n >= 0.9,
            "recall under a predicate {:.3}",
            r_even / n
        );
    }

    #[test]
    fn a_small_index_is_scanned_exactly_and_a_large_one_walked() {
        let data = vectors(2000, 24, 8);
        let queries = vectors(30, 24, 31);
        let odd = |item: ItemId| item.0 % 2 == 1;
        // 2,000 x 24 floats = 192,000 bytes: scanned under the default threshold.
        let small = VectorIndex::in_memory(24, Metric::Cosine, &HnswParams::default(), 2000);
        let items: Vec<(ItemId, &[f32])> = data
            .iter()
            .enumerate()
            .map(|(i, v)| (ItemId(i as u32), v.as_slice()))
            .collect();
        small.upsert(&items);
        small.remove(ItemId(4));
        assert!(small.scans_whole(&small.inner.read()));
        for q in &queries {
            let ids = |h: Vec<VectorHit>| h.into_iter().map(|h| h.item.0).collect::<Vec<_>>();
            let want = brute(Metric::Cosine, &data, q, 10, |i| i != 4);
            assert_eq!(ids(small.search(q, 10, Allowed::All)), want);
            let want_odd = brute(Metric::Cosine, &data, q, 10, |i| i % 2 == 1);
            assert_eq!(ids(small.search(q, 10, Allowed::Predicate(&odd))), want_odd);
        }
        // One byte under its size, the same index walks the graph.
        let walked = VectorIndex::in_memory(
            24,
            Metric::Cosine,
            &HnswParams {
                exact_scan_bytes: 1999 * 24 * 4 - 1,
                ..HnswParams::default()
            },
            2000,
        );
        walked.upsert(&items);
        walked.remove(ItemId(4));
        assert!(!walked.scans_whole(&walked.inner.read()));
    }

    #[test]
    fn the_incremental_copy_of_the_graph_matches_a_whole_one() {
        let data = vectors(2000, 16, 8);
        let index = index(Metric::L2, &data);
        let inner = index.inner.read();
        let whole = inner.graph.flatten();
        let (a, b) = (&inner.flat, &whole);
        assert_eq!((a.len(), a.top_layer()), (b.len(), b.top_layer()));
        let same = (0..a.len() as u32)
            .filter(|s| a.row0(*s) == b.row0(*s))
            .count();
        // A reverse link an insert added to a node that a later insert of the same batch
        // pruned from the new node's own list is not read again (rare), so allow a few.
        assert!(
            same * 100 >= a.len() * 99,
            "{same} of {} layer-0 rows agree",
            a.len()
        );
    }

    #[test]
    fn a_reloaded_snapshot_searches_as_before() {
        let dir = tempfile::tempdir().unwrap();
        let params = HnswParams::default();
        let data = vectors(1500, 16, 9);
        let queries = vectors(20, 16, 10);
        let (index, _, _) = VectorIndex::open(dir.path(), 16, Metric::Cosine, &params).unwrap();
        let items: Vec<(ItemId, &[f32])> = data
            .iter()
            .enumerate()
            .map(|(i, v)| (ItemId(i as u32), v.as_slice()))
            .collect();
        for chunk in items.chunks(500) {
            index.upsert(chunk);
        }
        index.snapshot(1).unwrap();
        let before: Vec<Vec<VectorHit>> = queries
            .iter()
            .map(|q| index.search(q, 10, Allowed::All))
            .collect();
        drop(index);
        let (index, _, outcome) =
            VectorIndex::open(dir.path(), 16, Metric::Cosine, &params).unwrap();
        assert_eq!(outcome, LoadOutcome::Loaded);
        for (i, v) in data.iter().enumerate() {
            index.set_raw(ItemId(i as u32), v);
        }
        for (q, want) in queries.iter().zip(&before) {
            let got: Vec<u32> = index
                .search(q, 10, Allowed::All)
                .iter()
                .map(|h| h.item.0)
                .collect();
            let want: Vec<u32> = want.iter().map(|h| h.item.0).collect();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn a_manifest_naming_files_outside_the_snapshot_is_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let params = HnswParams::default();
        let (index, _, _) = VectorIndex::open(dir.path(), 4, Metric::L2, &params).unwrap();
        let v: Vec<Vec<f32>> = (0..20).map(|i| vec![i as f32, 1.0, 0.5, 0.25]).collect();
        let items: Vec<(ItemId, &[f32])> = v
            .iter()
            .enumerate()
            .map(|(i, x)| (ItemId(i as u32), x.as_slice()))
            .collect();
        index.upsert(&items);
        index.snapshot(20).unwrap();
        drop(index);
        let (_, _, outcome) = VectorIndex::open(dir.path(), 4, Metric::L2, &params).unwrap();
        assert!(matches!(outcome, LoadOutcome::Loaded));
        let mpath = dir.path().join("MANIFEST");
        let good: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
        let base = good["basename"].as_str().unwrap().to_string();
        let crafted = [
            (
                "basename",
                serde_json::json!(format!("../gen-000001/{base}")),
            ),
            ("basename", serde_json::json!("other")),
            (
                "files",
                serde_json::json!([{"name": "../../etc/passwd", "len": 1, "crc32": 0}]),
            ),
        ];
        for (field, value) in crafted {
            let mut m = good.clone();
            m[field] = value;
            std::fs::write(&mpath, serde_json::to_vec(&m).unwrap()).unwrap();
            let err = VectorIndex::load_snapshot(dir.path(), 4, Metric::L2).err();
            assert!(
                matches!(err, Some(Error::Corrupt { .. })),
                "{field}: {err:?}"
            );
        }
    }
}
