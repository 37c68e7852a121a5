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
    /// The same codes sixteen items to a block, for [`Codes::top_every`] on a CPU with
    /// AVX-512 VNNI (built by [`Codes::of_rows`] there, empty elsewhere).
    blocks: Blocks,
}

/// Codes laid out for `vpdpbusd` (AVX-512 VNNI), which adds four `u8 x i8` products into
/// each of sixteen `i32` lanes, and ordered by the items' norms, largest first.
///
/// Position `p` holds item `order[p]`; block `b` holds positions `16 b .. 16 b + 16`: for
/// each group `g` of four dimensions, the four codes of each of its sixteen items, offset
/// by 128 into `u8` (64 bytes a group). One instruction then advances sixteen items' dot
/// products by four dimensions, where the row layout needs a horizontal sum per item. The
/// offset adds `128 * sum(q)` to every dot product, which the scan subtracts once.
/// Dimensions past `dim` (up to a multiple of four) and positions past the last item are
/// code 0 (byte 128).
///
/// The order lets a scan stop early: no item of block `b` or later scores above
/// `|q| * max_norm[b]` (Cauchy-Schwarz), so once the `k`-th best lower bound passes that,
/// the rest of the catalog cannot enter. Factor models give popular items long vectors
/// and rare ones short, so a scan reads the long head and skips much of the tail.
#[derive(Clone, Debug, Default)]
struct Blocks {
    /// Groups of four dimensions: `dim.div_ceil(4)`.
    groups: usize,
    /// `64 * groups` bytes a block.
    bytes: Vec<u8>,
    /// By position: the item.
    order: Vec<u32>,
    /// By position (padded to whole blocks with 0): the codes' scale and `|v|_1`.
    scale: Vec<f32>,
    l1: Vec<f32>,
    /// By block: the largest `|v|_2` in it (its first item's).
    max_norm: Vec<f32>,
}

impl Blocks {
    /// The blocked copy of the codes of `c` whose float rows are `rows`, if this CPU can
    /// scan it.
    fn of(c: &Codes, rows: &[f32]) -> Blocks {
        let dim = c.dim;
        if dim == 0 || !vnni_detected() {
            return Blocks::default();
        }
        let n = (c.codes.len() / dim)
            .min(rows.len() / dim)
            .min(c.scale.len())
            .min(c.l1.len());
        let norms: Vec<f32> = rows
            .chunks_exact(dim)
            .take(n)
            .map(|v| v.iter().map(|x| x * x).sum::<f32>().sqrt())
            .collect();
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_by(|&a, &b| {
            norms[b as usize]
                .total_cmp(&norms[a as usize])
                .then(a.cmp(&b))
        });
        let groups = dim.div_ceil(4);
        let blocks = n.div_ceil(16);
        let mut bytes = vec![128u8; blocks * 64 * groups];
        let mut scale = vec![0f32; blocks * 16];
        let mut l1 = vec![0f32; blocks * 16];
        let mut max_norm = vec![0f32; blocks];
        for (pos, &item) in order.iter().enumerate() {
            let item = item as usize;
            let (block, lane) = (pos / 16, pos % 16);
            for (d, &code) in c.codes[item * dim..item * dim + dim].iter().enumerate() {
                let at = (block * groups + d / 4) * 64 + lane * 4 + d % 4;
                bytes[at] = (i16::from(code) + 128) as u8;
            }
            scale[pos] = c.scale[item];
            l1[pos] = c.l1[item];
            max_norm[block] = max_norm[block].max(norms[item]);
        }
        Blocks {
            groups,
            bytes,
            order,
            scale,
            l1,
            max_norm,
        }
    }
}

/// Whether this CPU has AVX-512 VNNI (and the AVX-512 foundation it builds on).
fn vnni_detected() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
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
            c.blocks = Blocks::of(&c, rows);
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
        // The blocked copy is built whole by `of_rows`; a changed row drops it.
        self.blocks = Blocks::default();
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
        #[cfg(target_arch = "x86_64")]
        if !self.blocks.bytes.is_empty() {
            if let Some(kern) = Avx2Fma::detect() {
                // SAFETY: blocks are built only when AVX-512 F and VNNI were detected, and
                // an `Avx2Fma` value exists only if AVX2 and FMA were.
                return unsafe { vnni::scan_blocks(self, kern, vectors, q, k, keep) };
            }
        }
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

#[cfg(target_arch = "x86_64")]
mod vnni {
    //! [`Codes::top_every`] over the blocked codes with AVX-512 VNNI: pass 1 computes
    //! sixteen items' dot products, bounds and the comparison with the floor in registers;
    //! pass 2 is the shared [`rescore`].

    use std::arch::x86_64::{
        _mm512_add_ps, _mm512_cmp_ps_mask, _mm512_cvtepi32_ps, _mm512_dpbusd_epi32,
        _mm512_loadu_ps, _mm512_loadu_si512, _mm512_mul_ps, _mm512_set1_epi32, _mm512_set1_ps,
        _mm512_setzero_si512, _mm512_storeu_ps, _mm512_sub_epi32, _CMP_GE_OQ,
    };

    use super::{rescore, Codes, TopK};
    use crate::models::linalg::{self, Avx2Fma};

    /// # Safety
    /// The CPU must have AVX-512 F and VNNI, AVX2 and FMA.
    #[target_feature(enable = "avx512f,avx512vnni,avx2,fma")]
    pub(super) unsafe fn scan_blocks<P: Fn(u32) -> bool>(
        codes: &Codes,
        kern: Avx2Fma,
        vectors: &[f32],
        q: &[f32],
        k: usize,
        keep: P,
    ) -> Vec<(f32, u32)> {
        let dim = codes.dim;
        let groups = codes.blocks.groups;
        if q.len() != dim || dim == 0 || k == 0 || groups == 0 {
            return Vec::new();
        }
        let blocks = &codes.blocks;
        let n = blocks.order.len();
        let mut q_codes = vec![0i8; groups * 4];
        let q_scale = linalg::quantize_i8(q, &mut q_codes[..dim]);
        let q_l1: f32 = q_codes.iter().map(|c| f32::from(c.unsigned_abs())).sum();
        let q_sum: i32 = q_codes.iter().map(|&c| i32::from(c)).sum();
        let half_scale = 0.5 * q_scale * 1.001;
        // With room for the float rounding of a score against the product of two norms.
        let q_norm = q.iter().map(|x| x * x).sum::<f32>().sqrt() * 1.0001;
        // The query's four codes of each group, as one `i32` to broadcast.
        let q_words: Vec<i32> = q_codes
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0] as u8, c[1] as u8, c[2] as u8, c[3] as u8]))
            .collect();
        let mut lower = TopK::new(k);
        let mut cands: Vec<(u32, f32, f32, f32)> = Vec::new();
        let mut floor = f32::NEG_INFINITY;
        let offset = _mm512_set1_epi32(128 * q_sum);
        let v_q_scale = _mm512_set1_ps(q_scale);
        let v_half = _mm512_set1_ps(half_scale);
        let v_q_l1 = _mm512_set1_ps(q_l1);
        let v_eps = _mm512_set1_ps(1e-6);
        let mut approx = [0f32; 16];
        let mut err = [0f32; 16];
        let mut upper = [0f32; 16];
        let runs = blocks
            .bytes
            .chunks_exact(64 * groups)
            .zip(blocks.scale.chunks_exact(16))
            .zip(blocks.l1.chunks_exact(16))
            .zip(&blocks.max_norm);
        for (b, (((block, sv), l1), &max_norm)) in runs.enumerate() {
            if floor > q_norm * max_norm + 1e-6 {
                // Every item from here on is shorter: none can reach the k best.
                break;
            }
            let first = b * 16;
            let lanes = n.saturating_sub(first).min(16);
            let valid: u16 = if lanes == 16 {
                u16::MAX
            } else {
                (1u16 << lanes) - 1
            };
            let mut acc = _mm512_setzero_si512();
            for (g, &w) in block.chunks_exact(64).zip(&q_words) {
                // SAFETY: `g` is 64 bytes; an unaligned load reads exactly those.
                let a = unsafe { _mm512_loadu_si512(g.as_ptr().cast()) };
                acc = _mm512_dpbusd_epi32(acc, a, _mm512_set1_epi32(w));
            }
            let dots = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc, offset));
            // SAFETY: `sv` and `l1` are 16 floats each.
            let (sv, l1) = unsafe { (_mm512_loadu_ps(sv.as_ptr()), _mm512_loadu_ps(l1.as_ptr())) };
            let a = _mm512_mul_ps(dots, _mm512_mul_ps(v_q_scale, sv));
            let e = _mm512_add_ps(
                _mm512_mul_ps(v_half, _mm512_add_ps(_mm512_mul_ps(sv, v_q_l1), l1)),
                v_eps,
            );
            let u = _mm512_add_ps(a, e);
            let hit = _mm512_cmp_ps_mask(u, _mm512_set1_ps(floor), _CMP_GE_OQ) & valid;
            if hit == 0 {
                continue;
            }
            // SAFETY: each store writes 16 floats into a 16-float array.
            unsafe {
                _mm512_storeu_ps(approx.as_mut_ptr(), a);
                _mm512_storeu_ps(err.as_mut_ptr(), e);
                _mm512_storeu_ps(upper.as_mut_ptr(), u);
            }
            let mut bits = hit;
            while bits != 0 {
                let j = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if upper[j] >= floor {
                    let Some(&item) = blocks.order.get(first + j) else {
                        continue;
                    };
                    if keep(item) {
                        lower.push(approx[j] - err[j], item);
                        cands.push((item, 1.0, 0.0, upper[j]));
                    }
                    floor = lower.threshold();
                }
            }
        }
        rescore(kern, cands, floor, vectors, q, k)
    }
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

    /// On a CPU with AVX-512 VNNI the whole-catalog scan reads the blocked codes; its
    /// answer is the row scan's, for dimensions that are and are not multiples of four and
    /// a last block that is not full, and a changed row falls back to the rows.
    #[test]
    fn the_blocked_scan_is_the_row_scan() {
        for dim in [5, 32, 64] {
            let n = 1_000 + dim;
            let mut v = rows(n, dim, 7 + dim as u64);
            // Lengths that fall off as factor models' do (the scan stops early on them),
            // with two equally long items in every few.
            for (i, row) in v.chunks_exact_mut(dim).enumerate() {
                let len = 1.0 / (1.0 + (i / 2 % 97) as f32);
                row.iter_mut().for_each(|x| *x *= len);
            }
            let q = rows(1, dim, 3);
            let mut codes = Codes::of_rows(&v, dim);
            assert_eq!(codes.blocks.bytes.is_empty(), !vnni_detected(), "dim {dim}");
            let ids = |v: &[(f32, u32)]| v.iter().map(|x| x.1).collect::<Vec<_>>();
            let keep = |i: u32| i % 5 != 2;
            for k in [1, 10, 100] {
                let every = codes.top_every(&v, &q, k, keep);
                let plain = codes.top(&v, &q, k, 0..n as u32, |_| Some((1.0, 0.0)), keep);
                assert_eq!(every.len(), k);
                assert_eq!(ids(&every), ids(&plain), "dim {dim} k {k}");
                let mut want: Vec<(f32, u32)> = (0..n as u32)
                    .filter(|&i| keep(i))
                    .map(|i| {
                        let row = &v[i as usize * dim..(i as usize + 1) * dim];
                        (q.iter().zip(row).map(|(x, y)| x * y).sum(), i)
                    })
                    .collect();
                want.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                want.truncate(k);
                assert_eq!(ids(&every), ids(&want), "brute force: dim {dim} k {k}");
            }
            // Item 0 becomes the best match: the blocks are dropped and the rows answer.
            let far: Vec<f32> = q.iter().map(|x| 10.0 * x).collect();
            v[..dim].copy_from_slice(&far);
            codes.set(0, &far);
            assert!(codes.blocks.bytes.is_empty());
            assert_eq!(codes.top_every(&v, &q, 1, keep)[0].1, 0);
        }
    }
}
