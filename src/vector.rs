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
use hnsw_rs::hnsw::Hnsw;
use hnsw_rs::hnswio::HnswIo;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::catalog::ItemId;
use crate::config::{HnswParams, Metric};
use crate::error::{Error, Result};
use crate::fsutil;

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

    fn search(&self, q: &[f32], k: usize, ef: usize, keep: &dyn Fn(&usize) -> bool) -> Vec<usize> {
        let filter: &dyn hnsw_rs::filter::FilterT = &keep;
        let found = match self {
            Graph::Dot(h) => h.search_filter(q, k, ef, Some(filter)),
            Graph::L2(h) => h.search_filter(q, k, ef, Some(filter)),
        };
        found.into_iter().map(|n| n.d_id).collect()
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
    slot_item: Vec<u32>,
    item_slot: Vec<u32>,
    /// Raw vectors by item (normalised for cosine), `dim` floats each; zeros when absent.
    vectors: Vec<f32>,
    live: usize,
}

/// How to restrict a vector search.
pub(crate) enum Allowed<'a> {
    /// Every item.
    All,
    /// Only items for which the predicate holds (checked during the graph walk).
    Predicate(&'a (dyn Fn(ItemId) -> bool + Sync)),
    /// Exactly these items: scanned exhaustively, no graph walk.
    Exact(&'a [ItemId]),
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
        let fresh = || Inner {
            graph: Graph::new(metric, params, 0),
            slot_item: Vec::new(),
            item_slot: Vec::new(),
            vectors: Vec::new(),
            live: 0,
        };
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
        Ok(Some((
            Inner {
                graph,
                slot_item: slots.slot_item,
                item_slot: slots.item_slot,
                vectors: Vec::new(),
                live,
            },
            m,
        )))
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
            inner: RwLock::new(Inner {
                graph: Graph::new(metric, params, capacity),
                slot_item: Vec::new(),
                item_slot: Vec::new(),
                vectors: Vec::new(),
                live: 0,
            }),
            snap: parking_lot::Mutex::new((0, 0, 0)),
        }
    }

    /// Sets an item's raw vector without touching the graph (used at open, before replay,
    /// for vectors the snapshot already holds).
    pub fn set_raw(&self, item: ItemId, v: &[f32]) {
        let prepared = self.prepare(v);
        let mut inner = self.inner.write();
        Self::store_raw(&mut inner, self.dim, item, &prepared);
    }

    fn store_raw(inner: &mut Inner, dim: usize, item: ItemId, v: &[f32]) {
        let at = item.0 as usize * dim;
        if inner.vectors.len() < at + dim {
            inner.vectors.resize(at + dim, 0.0);
        }
        inner.vectors[at..at + dim].copy_from_slice(v);
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
        {
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
        }
        let mut inner = self.inner.write();
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
            Self::store_raw(&mut inner, self.dim, *item, v);
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
        let live_vec = |item: u32| -> Option<&[f32]> {
            let slot = *inner.item_slot.get(item as usize)?;
            if slot == NONE {
                return None;
            }
            let at = item as usize * self.dim;
            inner.vectors.get(at..at + self.dim)
        };
        let mut hits: Vec<VectorHit> = match allowed {
            Allowed::Exact(items) => items
                .iter()
                .filter_map(|it| {
                    live_vec(it.0).map(|v| VectorHit {
                        item: *it,
                        score: self.score(&q, v),
                    })
                })
                .collect(),
            Allowed::All | Allowed::Predicate(_) => {
                let pred = match allowed {
                    Allowed::Predicate(p) => Some(p),
                    _ => None,
                };
                let keep = |slot: &usize| -> bool {
                    let Some(&item) = inner.slot_item.get(*slot) else {
                        return false;
                    };
                    inner.item_slot.get(item as usize) == Some(&(*slot as u32))
                        && pred.is_none_or(|p| p(ItemId(item)))
                };
                // Dot is walked by angle and re-scored exactly, so it looks at more candidates.
                let want = match self.metric {
                    Metric::Dot => (k * 4).max(k + 32),
                    _ => k,
                };
                let ef = self.params.ef_search.max(want);
                let gq = self.graph_vector(&q);
                inner
                    .graph
                    .search(&gq, want, ef, &keep)
                    .into_iter()
                    .filter_map(|slot| {
                        let item = *inner.slot_item.get(slot)?;
                        live_vec(item).map(|v| VectorHit {
                            item: ItemId(item),
                            score: self.score(&q, v),
                        })
                    })
                    .collect()
            }
        };
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.item.cmp(&b.item)));
        hits.dedup_by_key(|h| h.item);
        hits.truncate(k);
        hits
    }

    /// Exact top-`k` over every live vector (the reference for ANN recall).
    pub fn search_exact(&self, q: &[f32], k: usize) -> Vec<VectorHit> {
        let items: Vec<ItemId> = {
            let inner = self.inner.read();
            inner
                .item_slot
                .iter()
                .enumerate()
                .filter(|(_, s)| **s != NONE)
                .map(|(i, _)| ItemId(i as u32))
                .collect()
        };
        self.search(q, k, Allowed::Exact(&items))
    }

    /// Rebuilds the graph from the live raw vectors (after damage, or when tombstones dominate).
    pub fn rebuild(&self, items: &[(ItemId, Vec<f32>)]) {
        {
            let mut inner = self.inner.write();
            inner.graph = Graph::new(self.metric, &self.params, items.len());
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
        drop(inner);
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
