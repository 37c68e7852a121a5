//! Int8 codes of float rows (one row per item), and the exact top-k scans that read them.
//!
//! A scan of every item is bound by memory speed: the codes are a quarter of the float
//! vectors' bytes, and a bound on their error tells which items can still enter the top k,
//! so only those are scored on their float vectors. Two layouts:
//!
//! - [`Codes`], one row of codes per item, set item by item: the vector index's stored
//!   vectors, scanned over any list of items ([`Codes::top`]);
//! - [`CatalogCodes`], built once from a whole catalog, sixteen items to a block and longest
//!   vectors first: the factor channels' (MF, the sequence model) "score every item against
//!   one vector" ([`CatalogCodes::top`]), which stops once no shorter vector can enter.

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

/// The int8 codes of a whole catalog laid out for a scan of every item: sixteen items to a
/// block, longest vectors first.
///
/// Position `p` holds item `order[p]`; block `b` holds positions `16 b .. 16 b + 16`: for
/// each group `g` of four dimensions, the four codes of each of its sixteen items (64 bytes
/// a group). A 32-byte register then holds four dimensions of eight items, and
/// `vpmaddubsw` + `vpmaddwd` (AVX2) turn it into eight items' partial dot products with no
/// horizontal sum, where one row per item needs a horizontal sum per item. Dimensions past
/// `dim` (up to a multiple of four) and positions past the last item are code 0. (An
/// AVX-512 VNNI kernel on this layout was measured no faster: the scan is bound by memory.)
///
/// The order lets a scan stop early: no item of block `b` or later scores above
/// `|q| * max_norm[b]` (Cauchy-Schwarz), so once the `k`-th best lower bound passes that,
/// the rest of the catalog cannot enter. Factor models give popular items long vectors
/// and rare ones short, so a scan reads the long head and skips much of the tail.
#[derive(Clone, Debug, Default)]
pub(crate) struct CatalogCodes {
    dim: usize,
    /// Groups of four dimensions: `dim.div_ceil(4)`.
    groups: usize,
    /// `64 * groups` codes a block.
    bytes: Vec<i8>,
    /// By position: the item.
    order: Vec<u32>,
    /// By position (padded to whole blocks with 0): the codes' scale and `|v|_1`.
    scale: Vec<f32>,
    l1: Vec<f32>,
    /// By block: the largest `|v|_2` in it (its first item's).
    max_norm: Vec<f32>,
}

impl CatalogCodes {
    /// The codes of every row of `rows` (row-major, `dim` floats a row, item `i` in row `i`).
    pub(crate) fn of_rows(rows: &[f32], dim: usize) -> CatalogCodes {
        if dim == 0 {
            return CatalogCodes::default();
        }
        let n = rows.len() / dim;
        let norms: Vec<f32> = rows
            .chunks_exact(dim)
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
        let mut c = CatalogCodes {
            dim,
            groups,
            bytes: vec![0i8; blocks * 64 * groups],
            scale: vec![0f32; blocks * 16],
            l1: vec![0f32; blocks * 16],
            max_norm: vec![0f32; blocks],
            order: Vec::new(),
        };
        let mut codes = vec![0i8; dim];
        for (pos, &item) in order.iter().enumerate() {
            let v = &rows[item as usize * dim..(item as usize + 1) * dim];
            let (block, lane) = (pos / 16, pos % 16);
            c.scale[pos] = linalg::quantize_i8(v, &mut codes);
            c.l1[pos] = v.iter().map(|x| x.abs()).sum();
            for (d, &code) in codes.iter().enumerate() {
                let at = (block * groups + d / 4) * 64 + lane * 4 + d % 4;
                c.bytes[at] = code;
            }
            c.max_norm[block] = c.max_norm[block].max(norms[item as usize]);
        }
        c.order = order;
        c
    }

    /// Scores at most this large cannot be told from zero: the scan's bounds carry this
    /// much room for float rounding.
    pub(crate) const MIN_SCORE: f32 = MARGIN;

    /// Whether some item can score above [`CatalogCodes::MIN_SCORE`] against `q` (by
    /// Cauchy-Schwarz, `|q|` times the longest item vector).
    pub(crate) fn ranks(&self, q: &[f32]) -> bool {
        let q_norm = q.iter().map(|x| x * x).sum::<f32>().sqrt();
        let longest = self.max_norm.first().copied().unwrap_or(0.0);
        q_norm * longest > Self::MIN_SCORE
    }

    /// The best `k` items by `q . v`, exactly, best first, where `v` is the item's float row
    /// in `vectors` (row-major, `dim` a row); `keep(item)` is asked only of items that could
    /// still enter the top. The two passes of [`Codes::top`], sixteen items a step.
    pub(crate) fn top<P>(&self, vectors: &[f32], q: &[f32], k: usize, keep: P) -> Vec<(f32, u32)>
    where
        P: Fn(u32) -> bool,
    {
        #[cfg(target_arch = "x86_64")]
        if let Some(kern) = Avx2Fma::detect() {
            /// Compiled for AVX2 + FMA as a whole (see [`Codes::top`]).
            #[target_feature(enable = "avx2,fma")]
            unsafe fn run<P: Fn(u32) -> bool>(
                codes: &CatalogCodes,
                kern: Avx2Fma,
                vectors: &[f32],
                q: &[f32],
                k: usize,
                keep: P,
            ) -> Vec<(f32, u32)> {
                // SAFETY: this function is compiled for, and called with, AVX2.
                let dots = |b: &[i8], w: &[i32]| unsafe { x86::block_dots(b, w) };
                codes.scan(dots, kern, vectors, q, k, keep)
            }
            // SAFETY: an `Avx2Fma` value exists only if AVX2 and FMA were detected.
            return unsafe { run(self, kern, vectors, q, k, keep) };
        }
        self.scan(block_dots, Portable, vectors, q, k, keep)
    }

    /// Both passes, with `dots(block, q_words)` giving a block's sixteen dot products.
    #[inline(always)]
    fn scan<D, K, P>(
        &self,
        dots: D,
        kern: K,
        vectors: &[f32],
        q: &[f32],
        k: usize,
        keep: P,
    ) -> Vec<(f32, u32)>
    where
        D: Fn(&[i8], &[i32]) -> [i32; 16],
        K: Kernels,
        P: Fn(u32) -> bool,
    {
        let (dim, groups) = (self.dim, self.groups);
        if q.len() != dim || dim == 0 || k == 0 {
            return Vec::new();
        }
        let qc = QueryCodes::of(q, groups * 4);
        // With room for the float rounding of a score against the product of two norms.
        let q_norm = q.iter().map(|x| x * x).sum::<f32>().sqrt() * 1.0001;
        // The query's four codes of each group, as one `i32` to broadcast.
        let q_words: Vec<i32> = qc
            .codes
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0] as u8, c[1] as u8, c[2] as u8, c[3] as u8]))
            .collect();
        let mut lower = TopK::new(k);
        let mut cands: Vec<(u32, f32, f32, f32)> = Vec::new();
        // The k-th best lower bound so far: it changes only when a candidate enters.
        let mut floor = f32::NEG_INFINITY;
        let runs = self
            .bytes
            .chunks_exact(64 * groups)
            .zip(self.scale.chunks_exact(16))
            .zip(self.l1.chunks_exact(16))
            .zip(&self.max_norm);
        for (b, (((block, sv), l1), &max_norm)) in runs.enumerate() {
            if floor > q_norm * max_norm + Self::MIN_SCORE {
                // Every item from here on is shorter: none can reach the k best.
                break;
            }
            let raw = dots(block, &q_words);
            // The sixteen bounds lane by lane (straight-line code the compiler vectorises),
            // and one branch for the block: most blocks have no item that can enter.
            let mut approx = [0f32; 16];
            let mut err = [0f32; 16];
            let mut upper = [0f32; 16];
            for j in 0..16 {
                (approx[j], err[j]) = qc.bound(raw[j], sv[j], l1[j]);
                upper[j] = approx[j] + err[j];
            }
            if upper.iter().all(|u| *u < floor) {
                continue;
            }
            let first = b * 16;
            for j in 0..16 {
                if upper[j] >= floor {
                    // Padding past the last item has no entry in `order`.
                    let Some(&item) = self.order.get(first + j) else {
                        break;
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

/// A block's sixteen dot products with the query's codes, in portable code.
#[inline(always)]
fn block_dots(block: &[i8], q_words: &[i32]) -> [i32; 16] {
    let mut acc = [0i32; 16];
    for (group, w) in block.chunks_exact(64).zip(q_words) {
        let qb = w.to_le_bytes().map(|b| i32::from(b as i8));
        for (a, item) in acc.iter_mut().zip(group.chunks_exact(4)) {
            *a += item
                .iter()
                .zip(qb)
                .map(|(&c, q)| i32::from(c) * q)
                .sum::<i32>();
        }
    }
    acc
}

/// Room a scan's bounds leave for the float rounding of a score: scores at most this large
/// cannot be told from zero.
const MARGIN: f32 = 1e-6;

/// A query's int8 codes and what the bound on a code score's error needs of them.
///
/// With `|e| <= scale / 2` per component on either side,
/// `|q.v - s_q s_v (c_q . c_v)| <= s_q / 2 * (s_v |c_q|_1 + |v|_1)`.
struct QueryCodes {
    /// `len` codes: the query's, then zeros.
    codes: Vec<i8>,
    scale: f32,
    /// `|c_q|_1`.
    l1: f32,
    /// Half a code step of the query, with room for the float rounding of both scores.
    half_scale: f32,
}

impl QueryCodes {
    /// The codes of `q`, padded with zeros to `len` (at least `q.len()`).
    fn of(q: &[f32], len: usize) -> QueryCodes {
        let mut codes = vec![0i8; len.max(q.len())];
        let scale = linalg::quantize_i8(q, &mut codes[..q.len()]);
        let l1 = codes.iter().map(|c| f32::from(c.unsigned_abs())).sum();
        QueryCodes {
            codes,
            scale,
            l1,
            half_scale: 0.5 * scale * 1.001,
        }
    }

    /// The score an item's code dot product `dot` stands for, and the bound on its error,
    /// for an item whose codes have scale `sv` and whose vector has `|v|_1 = l1`.
    #[inline(always)]
    fn bound(&self, dot: i32, sv: f32, l1: f32) -> (f32, f32) {
        (
            dot as f32 * (self.scale * sv),
            self.half_scale * (sv * self.l1 + l1) + MARGIN,
        )
    }
}

impl Codes {
    pub(crate) fn new(dim: usize) -> Codes {
        Codes {
            dim,
            ..Codes::default()
        }
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
        let qc = QueryCodes::of(s.q, dim);
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
            let dots = kern.dot_i8_x4(&qc.codes, ids.map(|i| self.row(i as usize)));
            // The four bounds lane by lane (straight-line code the compiler vectorises), and
            // one branch for the four: most groups have no item that can enter.
            let mut approx = [0f32; 4];
            let mut err = [0f32; 4];
            let mut upper = [0f32; 4];
            for j in 0..4 {
                let i = ids[j] as usize;
                let sv = self.scale.get(i).copied().unwrap_or(0.0);
                let l1 = self.l1.get(i).copied().unwrap_or(f32::INFINITY);
                (approx[j], err[j]) = qc.bound(dots[j], sv, l1);
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
            let (approx, err) = qc.bound(kern.dot_i8(&qc.codes, self.row(i)), sv, l1);
            floor = admit(ids[j], aff[j], approx, err);
        }
        rescore(kern, cands, floor, s.vectors, s.q, s.k)
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
mod x86 {
    //! [`CatalogCodes::top`]'s block kernel for AVX2: `vpmaddubsw` on the codes' magnitudes
    //! and the query's codes with their signs (no saturation: `|c| <= 127`), then
    //! `vpmaddwd`: eight items a register.

    use std::arch::x86_64::{
        _mm256_abs_epi8, _mm256_add_epi32, _mm256_loadu_si256, _mm256_madd_epi16,
        _mm256_maddubs_epi16, _mm256_set1_epi16, _mm256_set1_epi32, _mm256_setzero_si256,
        _mm256_sign_epi8, _mm256_storeu_si256,
    };

    /// A block's sixteen dot products with the query's codes (`q_words`: four codes a word).
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn block_dots(block: &[i8], q_words: &[i32]) -> [i32; 16] {
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_si256(); 2];
        for (g, &w) in block.chunks_exact(64).zip(q_words) {
            let qv = _mm256_set1_epi32(w);
            for (half, a) in acc.iter_mut().enumerate() {
                // SAFETY: `g` is 64 bytes; each unaligned load reads one half of them.
                let c = unsafe { _mm256_loadu_si256(g.as_ptr().add(32 * half).cast()) };
                let pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(c), _mm256_sign_epi8(qv, c));
                *a = _mm256_add_epi32(*a, _mm256_madd_epi16(pairs, ones));
            }
        }
        let mut out = [0i32; 16];
        // SAFETY: `out` is 64 bytes; each unaligned store writes one half of them.
        unsafe {
            _mm256_storeu_si256(out.as_mut_ptr().cast(), acc[0]);
            _mm256_storeu_si256(out.as_mut_ptr().add(8).cast(), acc[1]);
        }
        out
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

    fn codes_of(v: &[f32], dim: usize) -> Codes {
        let mut c = Codes::new(dim);
        for (i, row) in v.chunks_exact(dim).enumerate() {
            c.set(i, row);
        }
        c
    }

    /// The brute-force best `k` of the kept items by `q . v`.
    fn brute(v: &[f32], q: &[f32], k: usize, keep: impl Fn(u32) -> bool) -> Vec<u32> {
        let dim = q.len();
        let mut all: Vec<(f32, u32)> = (0..(v.len() / dim) as u32)
            .filter(|&i| keep(i))
            .map(|i| {
                let row = &v[i as usize * dim..(i as usize + 1) * dim];
                (q.iter().zip(row).map(|(x, y)| x * y).sum(), i)
            })
            .collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        all.into_iter().take(k).map(|x| x.1).collect()
    }

    fn ids(v: &[(f32, u32)]) -> Vec<u32> {
        v.iter().map(|x| x.1).collect()
    }

    /// The scan returns exactly the brute-force top k under an affine map, a skip list and
    /// a late filter, for dimensions that are and are not multiples of the kernel width.
    #[test]
    fn the_scan_is_the_exact_top_k() {
        for dim in [3, 16, 64, 70] {
            let n = 2_003;
            let v = rows(n, dim, dim as u64);
            let q = rows(1, dim, 99);
            let codes = codes_of(&v, dim);
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
                assert_eq!(ids(&got), ids(&want), "dim {dim} k {k}");
                for (g, w) in got.iter().zip(&want) {
                    assert!((g.0 - w.0).abs() < 1e-4, "dim {dim} k {k}");
                }
            }
        }
    }

    /// The whole-catalog scan is the brute-force top k with the portable kernel and with
    /// this CPU's (AVX2 on x86), for dimensions that are and are not multiples of four, a last
    /// block that is not full, lengths that fall off as factor models' do (the scan stops
    /// early on them), equally long items, and a late filter.
    #[test]
    fn the_catalog_scan_is_the_exact_top_k() {
        for dim in [3, 5, 32, 64, 70] {
            let n = 1_000 + dim;
            let mut v = rows(n, dim, 7 + dim as u64);
            for (i, row) in v.chunks_exact_mut(dim).enumerate() {
                let len = 1.0 / (1.0 + (i / 2 % 97) as f32);
                row.iter_mut().for_each(|x| *x *= len);
            }
            let q = rows(1, dim, 3);
            let codes = CatalogCodes::of_rows(&v, dim);
            let keep = |i: u32| i % 5 != 2;
            for k in [0, 1, 10, 100, 2_000] {
                let want = brute(&v, &q, k, keep);
                let portable = codes.scan(block_dots, Portable, &v, &q, k, keep);
                assert_eq!(ids(&portable), want, "portable: dim {dim} k {k}");

                assert_eq!(ids(&codes.top(&v, &q, k, keep)), want, "dim {dim} k {k}");
            }
        }
        assert!(CatalogCodes::of_rows(&[], 0)
            .top(&[], &[], 3, |_| true)
            .is_empty());
        // A query that ties every item at about zero ranks nothing; a short one still ranks.
        let v = rows(100, 8, 1);
        let codes = CatalogCodes::of_rows(&v, 8);
        assert!(!codes.ranks(&[0.0; 8]));
        assert!(!codes.ranks(&[1e-9; 8]));
        assert!(codes.ranks(&[1e-3; 8]));
        assert!(!CatalogCodes::default().ranks(&[1.0; 8]));
    }
}
