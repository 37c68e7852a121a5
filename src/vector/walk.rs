//! The engine's own search loop over hnsw_rs's graph.
//!
//! hnsw_rs builds, stores, dumps and loads the graph; its search allocates per query, locks
//! every node it visits and calls the filter through a closure per node (a profile showed
//! malloc, sorting and the filter at a third of the search's time). [`FlatGraph`] is a
//! read-only copy of the adjacency in flat arrays (layer 0 at a fixed stride of `2 M` slots
//! per node, the sparse upper layers in maps) that [`FlatGraph::search`] walks with a reused
//! visited set, heaps kept between queries and neighbours prefetched before they are scored.
//! The copy is derived data: it is taken whole when a graph is loaded or snapshotted, and
//! after each insert batch only the new nodes and the nodes they linked to are read again.

use std::cell::Cell;
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use hnsw_rs::hnsw::{Point, PointIndexation};

/// No node.
const NONE: u32 = u32::MAX;

type PointRef = Arc<Point<'static, f32>>;

/// A node and its distance (smaller is nearer), ordered by distance then slot.
#[derive(Clone, Copy, Debug)]
pub(super) struct Cand {
    pub d: f32,
    pub slot: u32,
}

impl PartialEq for Cand {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Cand {}
impl PartialOrd for Cand {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Cand {
    fn cmp(&self, o: &Self) -> Ordering {
        self.d.total_cmp(&o.d).then(self.slot.cmp(&o.slot))
    }
}

/// The flat copy of one graph.
pub(super) struct FlatGraph {
    /// Neighbours per node at layer 0 (hnsw_rs keeps at most `2 M` there).
    stride: usize,
    /// `deg0[slot]`: neighbours of `slot` at layer 0.
    deg0: Vec<u16>,
    /// `adj0[slot * stride ..][..deg0[slot]]`: the neighbours' slots.
    adj0: Vec<u32>,
    /// `upper[l - 1][slot]`: the neighbours of `slot` at layer `l >= 1`.
    upper: Vec<HashMap<u32, Box<[u32]>>>,
    /// The entry node (on the top layer) or `NONE`.
    entry: u32,
    top: usize,
    /// hnsw_rs's node of each slot, to read a neighbourhood again without a scan.
    points: Vec<Option<PointRef>>,
    /// Nodes of each hnsw_rs layer already copied (layers only grow, at their end).
    layer_seen: Vec<usize>,
}

/// What [`FlatGraph::plan`] read from hnsw_rs, applied by [`FlatGraph::apply`] (reading
/// happens while searches go on; applying is a short write).
pub(super) struct FlatDelta {
    full: bool,
    new_points: Vec<(u32, usize, PointRef)>,
    /// `(slot, neighbours by layer)`.
    rows: Vec<(u32, Vec<Vec<u32>>)>,
    layer_seen: Vec<usize>,
}

/// Buffers one thread reuses across searches.
#[derive(Default)]
struct Scratch {
    stamps: Vec<u32>,
    stamp: u32,
    frontier: BinaryHeap<Reverse<Cand>>,
    best: BinaryHeap<Cand>,
}

thread_local! {
    static SCRATCH: Cell<Scratch> = Cell::new(Scratch::default());
}

impl FlatGraph {
    /// An empty copy for a graph with `m` neighbours per node on the upper layers.
    pub fn new(m: usize) -> FlatGraph {
        FlatGraph {
            stride: (2 * m).max(1),
            deg0: Vec::new(),
            adj0: Vec::new(),
            upper: Vec::new(),
            entry: NONE,
            top: 0,
            points: Vec::new(),
            layer_seen: Vec::new(),
        }
    }

    /// Nodes covered.
    pub fn len(&self) -> usize {
        self.deg0.len()
    }

    /// The top layer.
    #[cfg(test)]
    pub fn top_layer(&self) -> usize {
        self.top
    }

    /// A node's neighbours at layer 0.
    #[cfg(test)]
    pub fn row0(&self, slot: u32) -> &[u32] {
        let s = slot as usize;
        let deg = self.deg0.get(s).copied().unwrap_or(0) as usize;
        self.adj0
            .get(s * self.stride..s * self.stride + deg)
            .unwrap_or(&[])
    }

    /// Reads what changed in `pi` since the last [`FlatGraph::apply`]: its new nodes and the
    /// nodes they link to (whose lists the insertion extended), or every node when `full`.
    pub fn plan(&self, pi: &PointIndexation<'static, f32>, full: bool) -> FlatDelta {
        let levels = pi.get_max_level_observed() as usize + 1;
        let mut layer_seen = vec![0; levels];
        let mut new_points = Vec::new();
        for (layer, seen) in layer_seen.iter_mut().enumerate() {
            let skip = if full {
                0
            } else {
                self.layer_seen.get(layer).copied().unwrap_or(0)
            };
            let mut count = 0;
            for p in pi.get_layer_iterator(layer) {
                count += 1;
                if count > skip {
                    let slot = p.get_origin_id();
                    if let Ok(slot) = u32::try_from(slot) {
                        new_points.push((slot, layer, p));
                    }
                }
            }
            *seen = count;
        }
        let mut rows = Vec::with_capacity(new_points.len());
        let mut done: HashSet<u32> = HashSet::with_capacity(new_points.len() * 4);
        for (slot, _, p) in &new_points {
            let hood = p.get_neighborhood_id();
            if done.insert(*slot) {
                rows.push((*slot, ids(&hood)));
            }
            if full {
                continue;
            }
            // The nodes the new one linked to gained it as a neighbour: read them again.
            for n in hood.iter().flatten() {
                let Ok(ns) = u32::try_from(n.d_id) else {
                    continue;
                };
                if done.contains(&ns) {
                    continue;
                }
                let point = self
                    .points
                    .get(ns as usize)
                    .and_then(Option::as_ref)
                    .or_else(|| {
                        new_points
                            .iter()
                            .find(|(s, _, _)| *s == ns)
                            .map(|(_, _, p)| p)
                    });
                if let Some(point) = point {
                    done.insert(ns);
                    rows.push((ns, ids(&point.get_neighborhood_id())));
                }
            }
        }
        FlatDelta {
            full,
            new_points,
            rows,
            layer_seen,
        }
    }

    /// Applies a plan (made against this copy: nothing was applied in between).
    pub fn apply(&mut self, delta: FlatDelta) {
        if delta.full {
            *self = FlatGraph::new(self.stride / 2);
        }
        for (slot, layer, p) in delta.new_points {
            let s = slot as usize;
            if self.points.len() <= s {
                self.points.resize(s + 1, None);
                self.deg0.resize(s + 1, 0);
                self.adj0.resize((s + 1) * self.stride, NONE);
            }
            self.points[s] = Some(p);
            if self.entry == NONE || layer > self.top {
                self.entry = slot;
                self.top = layer;
            }
        }
        if self.upper.len() < self.top {
            self.upper.resize_with(self.top, HashMap::new);
        }
        for (slot, layers) in delta.rows {
            let s = slot as usize;
            if s >= self.deg0.len() {
                continue;
            }
            for (layer, ns) in layers.into_iter().enumerate() {
                if layer == 0 {
                    let n = ns.len().min(self.stride);
                    self.adj0[s * self.stride..s * self.stride + n].copy_from_slice(&ns[..n]);
                    self.deg0[s] = n as u16;
                } else if let Some(map) = self.upper.get_mut(layer - 1) {
                    if !ns.is_empty() {
                        map.insert(slot, ns.into_boxed_slice());
                    }
                }
            }
        }
        self.layer_seen = delta.layer_seen;
    }

    /// The nodes nearest by [`Space::dist`] among those [`Space::allowed`] accepts, at most
    /// `ef` of them, nearest first, into `out` (cleared first). `everything_allowed` says
    /// every node is accepted (no tombstone, no filter): the walk may then stop as soon as the
    /// frontier is farther than the `ef`-th result; otherwise it goes on until `ef` results
    /// are found, as hnswlib does. A node's neighbours are prefetched before they are scored.
    ///
    /// Everything here is inlined into the caller (no closures), so that a caller compiled
    /// for AVX2 gets the distance kernel inlined too.
    #[inline(always)]
    pub fn search<S: Space>(
        &self,
        space: &S,
        ef: usize,
        everything_allowed: bool,
        out: &mut Vec<Cand>,
    ) {
        out.clear();
        let n = self.len();
        if self.entry == NONE || n == 0 || ef == 0 {
            return;
        }
        let mut cur = self.entry;
        let mut dcur = space.dist(cur);
        for layer in (1..=self.top).rev() {
            let Some(map) = self.upper.get(layer - 1) else {
                continue;
            };
            loop {
                let mut moved = false;
                if let Some(ns) = map.get(&cur) {
                    for &nb in ns.iter() {
                        if nb as usize >= n {
                            continue;
                        }
                        let d = space.dist(nb);
                        if d < dcur {
                            dcur = d;
                            cur = nb;
                            moved = true;
                        }
                    }
                }
                if !moved {
                    break;
                }
            }
        }
        // This thread's buffers, taken out for the walk (a walk inside a walk, from a
        // filter, finds none and starts empty ones).
        let mut sc = SCRATCH.with(Cell::take);
        if sc.stamps.len() < n {
            sc.stamps.resize(n, 0);
        }
        sc.stamp = sc.stamp.wrapping_add(1);
        if sc.stamp == 0 {
            sc.stamps.iter_mut().for_each(|s| *s = 0);
            sc.stamp = 1;
        }
        let stamp = sc.stamp;
        let Scratch {
            stamps,
            frontier,
            best,
            ..
        } = &mut sc;
        frontier.clear();
        best.clear();
        frontier.push(Reverse(Cand { d: dcur, slot: cur }));
        if space.allowed(cur) {
            best.push(Cand { d: dcur, slot: cur });
        }
        if let Some(s) = stamps.get_mut(cur as usize) {
            *s = stamp;
        }
        let mut bound = best.peek().map_or(f32::INFINITY, |b| b.d);
        while let Some(Reverse(c)) = frontier.pop() {
            if c.d > bound && (best.len() >= ef || everything_allowed) {
                break;
            }
            let at = c.slot as usize * self.stride;
            let deg = self.deg0.get(c.slot as usize).copied().unwrap_or(0) as usize;
            let Some(row) = self.adj0.get(at..at + deg) else {
                continue;
            };
            for &nb in row {
                if (nb as usize) < n && stamps[nb as usize] != stamp {
                    space.prefetch(nb);
                }
            }
            for &nb in row {
                let Some(s) = stamps.get_mut(nb as usize) else {
                    continue;
                };
                if *s == stamp {
                    continue;
                }
                *s = stamp;
                let d = space.dist(nb);
                if best.len() < ef || d < bound {
                    frontier.push(Reverse(Cand { d, slot: nb }));
                    if space.allowed(nb) {
                        best.push(Cand { d, slot: nb });
                        if best.len() > ef {
                            best.pop();
                        }
                    }
                    bound = best.peek().map_or(f32::INFINITY, |b| b.d);
                }
            }
        }
        out.extend(best.drain());
        out.sort_unstable();
        SCRATCH.with(|cell| cell.set(sc));
    }
}

/// What the walk needs of the vectors: distances from the query, which nodes may be
/// returned, and a prefetch hint.
pub(super) trait Space {
    /// Distance from the query to the node (smaller is nearer); infinite for an unknown one.
    fn dist(&self, slot: u32) -> f32;
    /// Whether the node may be returned (it is walked through either way).
    fn allowed(&self, slot: u32) -> bool;
    /// Starts loading the node's vector.
    fn prefetch(&self, slot: u32);
}

/// Neighbour slots by layer.
fn ids(hood: &[Vec<hnsw_rs::hnsw::Neighbour>]) -> Vec<Vec<u32>> {
    let last = hood
        .iter()
        .rposition(|l| !l.is_empty())
        .map_or(0, |i| i + 1);
    hood[..last]
        .iter()
        .map(|l| {
            l.iter()
                .filter_map(|n| u32::try_from(n.d_id).ok())
                .collect()
        })
        .collect()
}

/// The `k` largest of `(score, item)` pairs, largest first (ties: smaller item first): a
/// bounded heap, so a scan of the whole catalog keeps `k` entries and compares most scores
/// with one threshold.
pub(super) struct TopK {
    k: usize,
    heap: BinaryHeap<Worst>,
}

/// Ordered so that the heap's top is the entry to drop first: the lowest score, and among
/// equal scores the largest item.
#[derive(Clone, Copy)]
struct Worst {
    score: f32,
    item: u32,
}

impl PartialEq for Worst {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Worst {}
impl PartialOrd for Worst {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Worst {
    fn cmp(&self, o: &Self) -> Ordering {
        o.score.total_cmp(&self.score).then(self.item.cmp(&o.item))
    }
}

impl TopK {
    pub fn new(k: usize) -> TopK {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    /// Scores below this cannot enter (minus infinity until `k` are held).
    #[inline(always)]
    pub fn threshold(&self) -> f32 {
        if self.heap.len() < self.k {
            f32::NEG_INFINITY
        } else {
            self.heap.peek().map_or(f32::NEG_INFINITY, |w| w.score)
        }
    }

    #[inline(always)]
    pub fn push(&mut self, score: f32, item: u32) {
        if self.k == 0 || score < self.threshold() {
            return;
        }
        self.heap.push(Worst { score, item });
        if self.heap.len() > self.k {
            self.heap.pop();
        }
    }

    /// `(score, item)`, largest score first.
    pub fn into_sorted(self) -> Vec<(f32, u32)> {
        let mut v: Vec<(f32, u32)> = self.heap.into_iter().map(|w| (w.score, w.item)).collect();
        v.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        v
    }
}
