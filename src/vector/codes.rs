//! Int8 codes of float rows (one row per item), and the exact top-k scan that reads them.
//!
//! A scan of every item is bound by memory speed: the codes are a quarter of the float
//! vectors' bytes, and a bound on their error tells which items can still enter the top k,
//! so only those are scored on their float vectors. The vector index scans its stored
//! vectors this way, and the factor channels (MF, the sequence model) their item
//! embeddings: one scan for every dense "score every item against one vector".

use super::walk::TopK;
use crate::models::linalg::{self, Avx2Fma, Kernels, Portable};

/// The codes of rows of `dim` floats, by item.
#[derive(Clone, Debug, Default)]
pub(crate) struct Codes {
    dim: usize,
    /// `dim` codes per item ([`linalg::quantize_i8`]).
    codes: Vec<i8>,
    /// By item: the scale of its codes.
    scale: Vec<f32>,
    /// By item: `|v|_1`, for the bound on the codes' error.
    l1: Vec<f32>,
}

impl Codes {
    pub(crate) fn new(dim: usize) -> Codes {
        Codes {
            dim,
            ..Codes::default()
        }
    }

    /// The codes of every row of `rows` (row-major, `dim` floats a row).
    pub(crate) fn of_rows(rows: &[f32], dim: usize) -> Codes {
        let mut c = Codes::new(dim);
        if dim > 0 {
            for (i, v) in rows.chunks_exact(dim).enumerate() {
                c.set(i, v);
            }
        }
        c
    }

    /// Sets item `item`'s codes from its float vector (`dim` floats).
    pub(crate) fn set(&mut self, item: usize, v: &[f32]) {
        let dim = self.dim;
        let at = item * dim;
        if self.codes.len() < at + dim {
            self.codes.resize(at + dim, 0);
        }
        let scale = linalg::quantize_i8(v, &mut self.codes[at..at + dim]);
        if self.scale.len() <= item {
            self.scale.resize(item + 1, 0.0);
            self.l1.resize(item + 1, 0.0);
        }
        self.scale[item] = scale;
        self.l1[item] = v.iter().map(|x| x.abs()).sum();
    }

    /// Item `item`'s codes (empty when it has none).
    #[inline(always)]
    fn row(&self, item: usize) -> &[i8] {
        self.codes
            .get(item * self.dim..item * self.dim + self.dim)
            .unwrap_or(&[])
    }

    /// Item `item`'s codes and their scale.
    #[inline(always)]
    pub(crate) fn get(&self, item: usize) -> Option<(&[i8], f32)> {
        let at = item.checked_mul(self.dim)?;
        Some((self.codes.get(at..at + self.dim)?, *self.scale.get(item)?))
    }

    /// The best `k` of `items` by `a * (q . v) + b`, exactly, best first, where `v` is the
    /// item's float row in `vectors` (row-major, `dim` a row) and `affine(item)` gives
    /// `(a, b)` with `a > 0`, or `None` to skip the item. `keep(item)` is asked only of items
    /// that could still enter the top (a filter that is costly to ask of every item).
    ///
    /// Each item is first scored on its codes; the float score is computed only when the
    /// code score plus a bound on the codes' error reaches the `k`-th best float score so
    /// far. With `|e| <= scale / 2` per component on either side,
    /// `|q.v - s_q s_v (c_q . c_v)| <= s_q / 2 * (s_v |c_q|_1 + |v|_1)`.
    pub(crate) fn top<I, A, P>(
        &self,
        vectors: &[f32],
        q: &[f32],
        k: usize,
        items: I,
        affine: A,
        keep: P,
    ) -> Vec<(f32, u32)>
    where
        I: Iterator<Item = u32>,
        A: Fn(usize) -> Option<(f32, f32)>,
        P: Fn(u32) -> bool,
    {
        match Avx2Fma::detect() {
            Some(kern) => {
                #[cfg(target_arch = "x86_64")]
                {
                    /// The scan compiled for AVX2 + FMA as a whole, so that the kernels are
                    /// inlined into its loop (a `target_feature` function is not inlined
                    /// into code compiled without it).
                    #[target_feature(enable = "avx2,fma")]
                    unsafe fn run<I, A, P>(
                        codes: &Codes,
                        kern: Avx2Fma,
                        scan: Scan<'_, I, A, P>,
                    ) -> Vec<(f32, u32)>
                    where
                        I: Iterator<Item = u32>,
                        A: Fn(usize) -> Option<(f32, f32)>,
                        P: Fn(u32) -> bool,
                    {
                        codes.scan(kern, scan)
                    }
                    let scan = Scan {
                        vectors,
                        q,
                        k,
                        items,
                        affine,
                        keep,
                    };
                    // SAFETY: an `Avx2Fma` value exists only if AVX2 and FMA were detected.
                    unsafe { run(self, kern, scan) }
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    let scan = Scan {
                        vectors,
                        q,
                        k,
                        items,
                        affine,
                        keep,
                    };
                    self.scan(kern, scan)
                }
            }
            None => self.scan(
                Portable,
                Scan {
                    vectors,
                    q,
                    k,
                    items,
                    affine,
                    keep,
                },
            ),
        }
    }

    #[inline(always)]
    fn scan<K, I, A, P>(&self, kern: K, s: Scan<'_, I, A, P>) -> Vec<(f32, u32)>
    where
        K: Kernels,
        I: Iterator<Item = u32>,
        A: Fn(usize) -> Option<(f32, f32)>,
        P: Fn(u32) -> bool,
    {
        let dim = self.dim;
        if s.q.len() != dim || s.k == 0 {
            return Vec::new();
        }
        let mut q_codes = vec![0i8; dim];
        let q_scale = linalg::quantize_i8(s.q, &mut q_codes);
        let q_l1: f32 = q_codes.iter().map(|c| f32::from(c.unsigned_abs())).sum();
        // Half a code step of the query, with room for the float rounding of both scores.
        let half_scale = 0.5 * q_scale * 1.001;
        // Pass 1 over the codes, four items at a time: an item stays a candidate while the
        // upper bound of its score reaches the k-th best lower bound among the candidates
        // so far (items whose codes are missing always stay).
        let mut lower = TopK::new(s.k);
        let mut cands: Vec<(u32, f32, f32, f32)> = Vec::new();
        // The k-th best lower bound so far, cached: it changes only when a candidate enters.
        let mut floor = f32::NEG_INFINITY;
        let mut admit = |item: u32, (a, b): (f32, f32), approx: f32, err: f32| -> f32 {
            if (s.keep)(item) {
                lower.push(a * (approx - err) + b, item);
                cands.push((item, a, b, a * (approx + err) + b));
            }
            lower.threshold()
        };
        let mut ids = [0u32; 4];
        let mut aff = [(0f32, 0f32); 4];
        let mut held = 0;
        for item in s.items {
            let Some(ab) = (s.affine)(item as usize) else {
                continue;
            };
            if self.row(item as usize).len() != dim {
                // No codes: an infinite bound, so the float vector decides.
                floor = admit(item, ab, 0.0, f32::INFINITY);
                continue;
            }
            ids[held] = item;
            aff[held] = ab;
            held += 1;
            if held < 4 {
                continue;
            }
            held = 0;
            let dots = kern.dot_i8_x4(&q_codes, ids.map(|i| self.row(i as usize)));
            // The four bounds lane by lane (straight-line code the compiler vectorises), and
            // one branch for the four: most groups have no item that can enter.
            let mut approx = [0f32; 4];
            let mut err = [0f32; 4];
            let mut upper = [0f32; 4];
            for j in 0..4 {
                let i = ids[j] as usize;
                let sv = self.scale.get(i).copied().unwrap_or(0.0);
                let l1 = self.l1.get(i).copied().unwrap_or(f32::INFINITY);
                approx[j] = dots[j] as f32 * (q_scale * sv);
                // The bound, with room for the float rounding of both scores.
                err[j] = half_scale * (sv * q_l1 + l1) + 1e-6;
                upper[j] = aff[j].0 * (approx[j] + err[j]) + aff[j].1;
            }
            if upper.iter().all(|u| *u < floor) {
                continue;
            }
            for j in 0..4 {
                if upper[j] >= floor {
                    floor = admit(ids[j], aff[j], approx[j], err[j]);
                }
            }
        }
        for j in 0..held {
            let i = ids[j] as usize;
            let sv = self.scale.get(i).copied().unwrap_or(0.0);
            let l1 = self.l1.get(i).copied().unwrap_or(f32::INFINITY);
            let approx = kern.dot_i8(&q_codes, self.row(i)) as f32 * (q_scale * sv);
            let err = half_scale * (sv * q_l1 + l1) + 1e-6;
            floor = admit(ids[j], aff[j], approx, err);
        }
        rescore(kern, cands, floor, s.vectors, s.q, s.k)
    }

    /// [`Codes::top`] over every item `0..n` with its codes, `a = 1`, `b = 0`: the factor
    /// channels' scan. The same two passes, with the four items of a group read as one
    /// run of codes and of scales (no per-item lookups), which halves the scan's time.
    pub(crate) fn top_every<P>(
        &self,
        vectors: &[f32],
        q: &[f32],
        k: usize,
        keep: P,
    ) -> Vec<(f32, u32)>
    where
        P: Fn(u32) -> bool,
    {
        match Avx2Fma::detect() {
            Some(kern) => {
                #[cfg(target_arch = "x86_64")]
                {
                    /// Compiled for AVX2 + FMA as a whole (see [`Codes::top`]).
                    #[target_feature(enable = "avx2,fma")]
                    unsafe fn run<P: Fn(u32) -> bool>(
                        codes: &Codes,
                        kern: Avx2Fma,
                        vectors: &[f32],
                        q: &[f32],
                        k: usize,
                        keep: P,
                    ) -> Vec<(f32, u32)> {
                        codes.scan_every(kern, vectors, q, k, keep)
                    }
                    // SAFETY: an `Avx2Fma` value exists only if AVX2 and FMA were detected.
                    unsafe { run(self, kern, vectors, q, k, keep) }
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    self.scan_every(kern, vectors, q, k, keep)
                }
            }
            None => self.scan_every(Portable, vectors, q, k, keep),
        }
    }

    #[inline(always)]
    fn scan_every<K: Kernels, P: Fn(u32) -> bool>(
        &self,
        kern: K,
        vectors: &[f32],
        q: &[f32],
        k: usize,
        keep: P,
    ) -> Vec<(f32, u32)> {
        let dim = self.dim;
        if q.len() != dim || dim == 0 || k == 0 {
            return Vec::new();
        }
        let n = self
            .scale
            .len()
            .min(self.l1.len())
            .min(self.codes.len() / dim);
        let mut q_codes = vec![0i8; dim];
        let q_scale = linalg::quantize_i8(q, &mut q_codes);
        let q_l1: f32 = q_codes.iter().map(|c| f32::from(c.unsigned_abs())).sum();
        let half_scale = 0.5 * q_scale * 1.001;
        let mut lower = TopK::new(k);
        let mut cands: Vec<(u32, f32, f32, f32)> = Vec::new();
        let mut floor = f32::NEG_INFINITY;
        let mut admit = |item: u32, approx: f32, err: f32| -> f32 {
            if keep(item) {
                lower.push(approx - err, item);
                cands.push((item, 1.0, 0.0, approx + err));
            }
            lower.threshold()
        };
        let groups = n / 4;
        let runs = self.codes[..groups * 4 * dim]
            .chunks_exact(4 * dim)
            .zip(self.scale.chunks_exact(4))
            .zip(self.l1.chunks_exact(4));
        for (g, ((c, sv), l1)) in runs.enumerate() {
            let (r01, r23) = c.split_at(2 * dim);
            let (r0, r1) = r01.split_at(dim);
            let (r2, r3) = r23.split_at(dim);
            let dots = kern.dot_i8_x4(&q_codes, [r0, r1, r2, r3]);
            let mut approx = [0f32; 4];
            let mut upper = [0f32; 4];
            let mut err = [0f32; 4];
            for j in 0..4 {
                approx[j] = dots[j] as f32 * (q_scale * sv[j]);
                err[j] = half_scale * (sv[j] * q_l1 + l1[j]) + 1e-6;
                upper[j] = approx[j] + err[j];
            }
            if upper.iter().all(|u| *u < floor) {
                continue;
            }
            for j in 0..4 {
                if upper[j] >= floor {
                    floor = admit((g * 4 + j) as u32, approx[j], err[j]);
                }
            }
        }
        for i in groups * 4..n {
            let sv = self.scale[i];
            let approx = kern.dot_i8(&q_codes, self.row(i)) as f32 * (q_scale * sv);
            let err = half_scale * (sv * q_l1 + self.l1[i]) + 1e-6;
            floor = admit(i as u32, approx, err);
        }
        rescore(kern, cands, floor, vectors, q, k)
    }
}

/// Pass 2 of a scan: the float score `a * (q . v) + b` of every candidate `(item, a, b,
/// upper bound)` whose bound reaches `floor` (the k-th best lower bound), their vectors
/// prefetched a few items ahead (they are scattered over the catalog); the best `k`.
#[inline(always)]
fn rescore<K: Kernels>(
    kern: K,
    mut cands: Vec<(u32, f32, f32, f32)>,
    floor: f32,
    vectors: &[f32],
    q: &[f32],
    k: usize,
) -> Vec<(f32, u32)> {
    let dim = q.len();
    cands.retain(|c| c.3 >= floor);
    let row = |i: u32| {
        let i = i as usize;
        vectors.get(i * dim..i * dim + dim)
    };
    let mut top = TopK::new(k);
    for (j, &(item, a, b, _)) in cands.iter().enumerate() {
        if let Some(v) = cands.get(j + 8).and_then(|c| row(c.0)) {
            linalg::prefetch(v);
        }
        if let Some(v) = row(item) {
            let score = a * kern.dot(q, v) + b;
            if score.is_finite() {
                top.push(score, item);
            }
        }
    }
    top.into_sorted()
}

/// One call of [`Codes::top`].
struct Scan<'a, I, A, P> {
    vectors: &'a [f32],
    q: &'a [f32],
    k: usize,
    items: I,
    affine: A,
    keep: P,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::SplitMix64;

    fn rows(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix64::new(seed);
        (0..n * dim).map(|_| rng.next_f64() as f32 - 0.5).collect()
    }

    /// The scan returns exactly the brute-force top k under an affine map, a skip list and
    /// a late filter, for dimensions that are and are not multiples of the kernel width.
    #[test]
    fn the_scan_is_the_exact_top_k() {
        for dim in [3, 16, 64, 70] {
            let n = 2_003;
            let v = rows(n, dim, dim as u64);
            let q = rows(1, dim, 99);
            let codes = Codes::of_rows(&v, dim);
            let affine = |i: usize| {
                let a = if i.is_multiple_of(2) { 2.0 } else { 1.0 };
                (!i.is_multiple_of(11)).then_some((a, -(i as f32) * 1e-4))
            };
            let keep = |i: u32| i % 3 != 1;
            for k in [0, 1, 10, 200] {
                let got = codes.top(&v, &q, k, 0..n as u32, affine, keep);
                let mut want: Vec<(f32, u32)> = (0..n)
                    .filter_map(|i| {
                        let (a, b) = affine(i)?;
                        keep(i as u32).then(|| {
                            let d: f32 = q
                                .iter()
                                .zip(&v[i * dim..(i + 1) * dim])
                                .map(|(x, y)| x * y)
                                .sum();
                            (a * d + b, i as u32)
                        })
                    })
                    .collect();
                want.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                want.truncate(k);
                let ids = |v: &[(f32, u32)]| v.iter().map(|x| x.1).collect::<Vec<_>>();
                assert_eq!(ids(&got), ids(&want), "dim {dim} k {k}");
                // The whole-catalog scan, without the affine map and the skip list.
                let every = codes.top_every(&v, &q, k, keep);
                let plain = codes.top(&v, &q, k, 0..n as u32, |_| Some((1.0, 0.0)), keep);
                assert_eq!(ids(&every), ids(&plain), "every: dim {dim} k {k}");
                for (g, w) in got.iter().zip(&want) {
                    assert!((g.0 - w.0).abs() < 1e-4, "dim {dim} k {k}");
                }
            }
        }
    }
}
