//! Small dense kernels for the factor models: dot products and updates written so that the
//! compiler vectorises them (eight independent accumulators), and a Cholesky solver for the
//! small `dim x dim` systems of fold-in.

use super::ModelError;

/// Lanes of independent accumulators in the portable dot product.
const LANES: usize = 8;

/// The vector kernels of the factor models, implemented portably ([`Portable`]) and with
/// AVX2 + FMA intrinsics ([`Avx2Fma`], x86-64 only, chosen at run time).
pub(crate) trait Kernels: Copy + Send + Sync {
    /// `sum a[k] * b[k]` over the common length.
    fn dot(self, a: &[f32], b: &[f32]) -> f32;
    /// `y += alpha * x` over the common length.
    fn axpy(self, alpha: f32, x: &[f32], y: &mut [f32]);
    /// `sum a[k] * b[k]` of int8 codes over the common length, exactly (in `i32`); codes lie
    /// in `-127..=127` ([`quantize_i8`]).
    fn dot_i8(self, a: &[i8], b: &[i8]) -> i32;
    /// [`Kernels::dot_i8`] of `q` with four rows at once (a scan's inner step: one
    /// horizontal reduction for the four).
    #[inline(always)]
    fn dot_i8_x4(self, q: &[i8], rows: [&[i8]; 4]) -> [i32; 4] {
        rows.map(|r| self.dot_i8(q, r))
    }
    /// `out[r] = rows[r] . q` for the row-major `rows` (`q.len()` floats a row, as many rows
    /// as `out` has slots and `rows` holds): a dense scan of every item's vector, the factor
    /// models' full scoring.
    #[inline(always)]
    fn gemv(self, rows: &[f32], q: &[f32], out: &mut [f32]) {
        if q.is_empty() {
            out.iter_mut().for_each(|o| *o = 0.0);
            return;
        }
        for (o, row) in out.iter_mut().zip(rows.chunks_exact(q.len())) {
            *o = self.dot(q, row);
        }
    }
    /// `out = m * x` for a symmetric row-major `dim x dim` matrix `m`, computed as
    /// `sum_k x[k] * m[k, :]` (vertical updates only, no horizontal reductions).
    #[inline(always)]
    fn symv(self, m: &[f32], x: &[f32], out: &mut [f32]) {
        let dim = x.len();
        out.iter_mut().for_each(|o| *o = 0.0);
        for (&xk, row) in x.iter().zip(m.chunks_exact(dim.max(1))) {
            self.axpy(xk, row, out);
        }
    }
}

/// Portable kernels written for auto-vectorisation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Portable;

impl Kernels for Portable {
    #[inline(always)]
    fn dot(self, a: &[f32], b: &[f32]) -> f32 {
        dot(a, b)
    }

    #[inline(always)]
    fn axpy(self, alpha: f32, x: &[f32], y: &mut [f32]) {
        for (yi, xi) in y.iter_mut().zip(x) {
            *yi += alpha * xi;
        }
    }

    #[inline(always)]
    fn dot_i8(self, a: &[i8], b: &[i8]) -> i32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| i32::from(*x) * i32::from(*y))
            .sum()
    }
}

/// Scalar int8 codes of `v` into `out` (same length): `out[k] = round(v[k] / scale)` with
/// `scale = max |v[k]| / 127`, which is returned (0 for an all-zero vector), so that
/// `v[k] ~ scale * out[k]` and `a.b ~ scale_a * scale_b * (codes_a . codes_b)`.
pub(crate) fn quantize_i8(v: &[f32], out: &mut [i8]) -> f32 {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max <= 0.0 || !max.is_finite() {
        out.iter_mut().for_each(|o| *o = 0);
        return 0.0;
    }
    let inv = 127.0 / max;
    for (o, x) in out.iter_mut().zip(v) {
        *o = (x * inv).round().clamp(-127.0, 127.0) as i8;
    }
    max / 127.0
}

/// Every item's score against a query vector: `out[r] = rows[r] . q` for the row-major
/// `rows` of `q.len()` floats, on the fastest kernels this CPU has (a factor model's full
/// scoring). `what` names the query in the error.
///
/// # Errors
/// [`ModelError::LengthMismatch`] when `out` does not have `n_items` slots or `q` is not
/// `dim` long.
pub(crate) fn score_rows(
    rows: &[f32],
    q: &[f32],
    dim: usize,
    out: &mut [f32],
    n_items: usize,
    what: &'static str,
) -> Result<(), ModelError> {
    super::check_len(out, n_items)?;
    if q.len() != dim {
        return Err(ModelError::LengthMismatch {
            what,
            expected: dim,
            got: q.len(),
        });
    }
    match Avx2Fma::detect() {
        Some(k) => k.gemv(rows, q, out),
        None => Portable.gemv(rows, q, out),
    }
    Ok(())
}

/// `e^x` to about 2e-7 relative error (softmax in the sequence model and the sentence
/// encoder, GELU's `erf` in the encoder) for `x` in `[-87, 88]` (clamped there; `-inf` gives
/// about 1e-38, not 0): `x = n ln 2 + r` with `|r| <= ln 2 / 2`, a degree-6 Taylor polynomial
/// of `e^r`, and `2^n` built in the exponent bits. `n` is rounded by adding and subtracting
/// 1.5 * 2^23 (no `floor` call, which the baseline x86-64 target cannot vectorise).
#[inline(always)]
pub(crate) fn fast_exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // The low mantissa bits of `shifted` hold `n` (two's complement offset by 2^22).
    let ni = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let bits = (ni.wrapping_add(127) as u32) << 23;
    p * f32::from_bits(bits)
}

/// `sum a[k] * b[k]` over the common length (portable).
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; LANES];
    let ca = a.chunks_exact(LANES);
    let cb = b.chunks_exact(LANES);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..LANES {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s = 0f32;
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    let q = [
        acc[0] + acc[4],
        acc[1] + acc[5],
        acc[2] + acc[6],
        acc[3] + acc[7],
    ];
    s + ((q[0] + q[2]) + (q[1] + q[3]))
}

/// AVX2 + FMA kernels. The value is a proof that the CPU has both features: it can only be
/// made by [`Avx2Fma::detect`], the crate's one CPU-feature check (the factor models and the
/// re-ranker's network both dispatch on it).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2Fma {
    _proof: (),
}

impl Avx2Fma {
    /// The kernels, if this CPU has AVX2 and FMA (std caches the CPUID answer, so this is two
    /// atomic loads after the first call).
    pub(crate) fn detect() -> Option<Avx2Fma> {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Some(Avx2Fma { _proof: () });
            }
        }
        None
    }
}

impl Kernels for Avx2Fma {
    #[inline(always)]
    fn dot(self, a: &[f32], b: &[f32]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: an `Avx2Fma` value exists only if AVX2 and FMA were detected.
            unsafe { x86::dot(a, b) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            dot(a, b)
        }
    }

    #[inline(always)]
    fn axpy(self, alpha: f32, x: &[f32], y: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: an `Avx2Fma` value exists only if AVX2 and FMA were detected.
            unsafe { x86::axpy(alpha, x, y) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Portable.axpy(alpha, x, y)
        }
    }

    #[inline(always)]
    fn dot_i8(self, a: &[i8], b: &[i8]) -> i32 {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: an `Avx2Fma` value exists only if AVX2 and FMA were detected.
            unsafe { x86::dot_i8(a, b) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Portable.dot_i8(a, b)
        }
    }

    #[inline(always)]
    fn dot_i8_x4(self, q: &[i8], rows: [&[i8]; 4]) -> [i32; 4] {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: an `Avx2Fma` value exists only if AVX2 and FMA were detected.
            unsafe { x86::dot_i8_x4(q, rows) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Portable.dot_i8_x4(q, rows)
        }
    }

    #[inline(always)]
    fn gemv(self, rows: &[f32], q: &[f32], out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: an `Avx2Fma` value exists only if AVX2 and FMA were detected.
            unsafe { x86::gemv(rows, q, out) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Portable.gemv(rows, q, out)
        }
    }

    #[inline(always)]
    fn symv(self, m: &[f32], x: &[f32], out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: an `Avx2Fma` value exists only if AVX2 and FMA were detected.
            unsafe { x86::symv(m, x, out) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Portable.symv(m, x, out)
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! AVX2 + FMA intrinsics. Every load and store stays inside the slices: the vector loops
    //! run while `i + 8 <= n` with `n` the common length, and the tails use checked indexing.

    use std::arch::x86_64::{
        _mm256_add_ps, _mm256_castps256_ps128, _mm256_extractf128_ps, _mm256_fmadd_ps,
        _mm256_hadd_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_setzero_ps, _mm256_storeu_ps,
        _mm_add_ps, _mm_add_ss, _mm_cvtss_f32, _mm_movehl_ps, _mm_shuffle_ps, _mm_storeu_ps,
    };

    /// `sum a[k] * b[k]` over the common length.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut i = 0usize;
        // SAFETY: loads read `[i, i + 8)` or `[i + 8, i + 16)` with the loop bounds keeping them
        // below `n`, the length of both slices' common prefix.
        let mut s = unsafe {
            let mut acc0 = _mm256_setzero_ps();
            let mut acc1 = _mm256_setzero_ps();
            while i + 16 <= n {
                acc0 =
                    _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
                acc1 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(i + 8)),
                    _mm256_loadu_ps(pb.add(i + 8)),
                    acc1,
                );
                i += 16;
            }
            if i + 8 <= n {
                acc0 =
                    _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
                i += 8;
            }
            let acc = _mm256_add_ps(acc0, acc1);
            let s4 = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
            let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
            _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)))
        };
        for k in i..n {
            s = a[k].mul_add(b[k], s);
        }
        s
    }

    /// `sum a[k] * b[k]` of int8 codes in `-127..=127` over the common length. 32 codes at a
    /// time: `|a|` times `b` with `a`'s sign (`maddubs` multiplies unsigned by signed bytes;
    /// pairs of products stay below 2 * 127 * 127, inside `i16`), then widened to `i32`.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) unsafe fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
        use std::arch::x86_64::{
            __m256i, _mm256_add_epi32, _mm256_castsi256_si128, _mm256_extracti128_si256,
            _mm256_loadu_si256, _mm256_madd_epi16, _mm256_maddubs_epi16, _mm256_set1_epi16,
            _mm256_setzero_si256, _mm256_sign_epi8, _mm_add_epi32, _mm_cvtsi128_si32,
            _mm_shuffle_epi32,
        };
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut i = 0usize;
        // SAFETY: loads read bytes `[i, i + 32)` with `i + 32 <= n`, inside both slices.
        let mut s = unsafe {
            let ones = _mm256_set1_epi16(1);
            let mut acc = _mm256_setzero_si256();
            while i + 32 <= n {
                let va = _mm256_loadu_si256(pa.add(i).cast::<__m256i>());
                let vb = _mm256_loadu_si256(pb.add(i).cast::<__m256i>());
                let p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(va, va), _mm256_sign_epi8(vb, va));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p16, ones));
                i += 32;
            }
            let s4 = _mm_add_epi32(
                _mm256_castsi256_si128(acc),
                _mm256_extracti128_si256(acc, 1),
            );
            let s2 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0b01_00_11_10));
            let s1 = _mm_add_epi32(s2, _mm_shuffle_epi32(s2, 0b10_11_00_01));
            _mm_cvtsi128_si32(s1)
        };
        for k in i..n {
            s += i32::from(a[k]) * i32::from(b[k]);
        }
        s
    }

    /// [`dot_i8`] of `q` with four rows, 32 codes at a time, `|q|` and its signs computed
    /// once for the four, and one horizontal reduction for all four sums.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) unsafe fn dot_i8_x4(q: &[i8], rows: [&[i8]; 4]) -> [i32; 4] {
        use std::arch::x86_64::{
            __m128i, __m256i, _mm256_add_epi32, _mm256_castsi256_si128, _mm256_extracti128_si256,
            _mm256_hadd_epi32, _mm256_loadu_si256, _mm256_madd_epi16, _mm256_maddubs_epi16,
            _mm256_set1_epi16, _mm256_setzero_si256, _mm256_sign_epi8, _mm_add_epi32,
            _mm_storeu_si128,
        };
        let n = rows.iter().fold(q.len(), |n, r| n.min(r.len()));
        let pq = q.as_ptr();
        let p = rows.map(<[i8]>::as_ptr);
        let mut i = 0usize;
        let mut out = [0i32; 4];
        // SAFETY: loads read bytes `[i, i + 32)` with `i + 32 <= n`, inside `q` and every
        // row; the store writes the 16 bytes of `out`.
        unsafe {
            let ones = _mm256_set1_epi16(1);
            let mut acc = [_mm256_setzero_si256(); 4];
            while i + 32 <= n {
                let vq = _mm256_loadu_si256(pq.add(i).cast::<__m256i>());
                let aq = _mm256_sign_epi8(vq, vq);
                for (a, &pr) in acc.iter_mut().zip(&p) {
                    let vr = _mm256_loadu_si256(pr.add(i).cast::<__m256i>());
                    let p16 = _mm256_maddubs_epi16(aq, _mm256_sign_epi8(vr, vq));
                    *a = _mm256_add_epi32(*a, _mm256_madd_epi16(p16, ones));
                }
                i += 32;
            }
            let h = _mm256_hadd_epi32(
                _mm256_hadd_epi32(acc[0], acc[1]),
                _mm256_hadd_epi32(acc[2], acc[3]),
            );
            let s = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
            _mm_storeu_si128(out.as_mut_ptr().cast::<__m128i>(), s);
        }
        for (o, r) in out.iter_mut().zip(rows) {
            for k in i..n {
                *o += i32::from(q[k]) * i32::from(r[k]);
            }
        }
        out
    }

    /// `out = m * x` for a symmetric row-major `dim x dim` matrix (`dim = x.len()`), as
    /// `sum_k x[k] * m[k, :]`, 32 output columns at a time held in registers. Falls back to
    /// scalar code for shapes that do not match.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) unsafe fn symv(m: &[f32], x: &[f32], out: &mut [f32]) {
        let dim = x.len();
        if m.len() < dim * dim || out.len() < dim {
            return;
        }
        let pm = m.as_ptr();
        let po = out.as_mut_ptr();
        let mut c = 0usize;
        // SAFETY: row `k` of `m` spans `[k * dim, (k + 1) * dim)` inside `m` (checked above);
        // loads read columns `[c, c + 32)` with `c + 32 <= dim`, stores write `out[c..c + 32]`
        // with `dim <= out.len()`.
        unsafe {
            while c + 32 <= dim {
                let mut a0 = _mm256_setzero_ps();
                let mut a1 = _mm256_setzero_ps();
                let mut a2 = _mm256_setzero_ps();
                let mut a3 = _mm256_setzero_ps();
                for (k, &xk) in x.iter().enumerate() {
                    let v = _mm256_set1_ps(xk);
                    let r = pm.add(k * dim + c);
                    a0 = _mm256_fmadd_ps(v, _mm256_loadu_ps(r), a0);
                    a1 = _mm256_fmadd_ps(v, _mm256_loadu_ps(r.add(8)), a1);
                    a2 = _mm256_fmadd_ps(v, _mm256_loadu_ps(r.add(16)), a2);
                    a3 = _mm256_fmadd_ps(v, _mm256_loadu_ps(r.add(24)), a3);
                }
                _mm256_storeu_ps(po.add(c), a0);
                _mm256_storeu_ps(po.add(c + 8), a1);
                _mm256_storeu_ps(po.add(c + 16), a2);
                _mm256_storeu_ps(po.add(c + 24), a3);
                c += 32;
            }
        }
        for col in c..dim {
            let mut acc = 0f32;
            for (k, &xk) in x.iter().enumerate() {
                acc = xk.mul_add(m[k * dim + col], acc);
            }
            out[col] = acc;
        }
    }

    /// `out[r] = rows[r] . q` over whole rows of `q.len()` floats. Four rows at a time, each
    /// with its own accumulator and `q` loaded once per eight columns, then one horizontal
    /// reduction for the four: the per-row call and reduction of a `dot` loop cost as much as
    /// the arithmetic at 64 dimensions.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) unsafe fn gemv(rows: &[f32], q: &[f32], out: &mut [f32]) {
        let d = q.len();
        if d == 0 {
            out.iter_mut().for_each(|o| *o = 0.0);
            return;
        }
        let n = out.len().min(rows.len() / d);
        let wide = d - d % 8;
        let (pr, pq, po) = (rows.as_ptr(), q.as_ptr(), out.as_mut_ptr());
        let mut r = 0usize;
        // SAFETY: rows `r..r + 4` lie inside `rows` (`r + 4 <= n <= rows.len() / d`); loads
        // read columns `[k, k + 8)` with `k + 8 <= wide <= d`, of `q` and of those rows; the
        // store writes `out[r..r + 4]` with `r + 4 <= n <= out.len()`.
        unsafe {
            while r + 4 <= n {
                let (r0, r1, r2, r3) = (
                    pr.add(r * d),
                    pr.add((r + 1) * d),
                    pr.add((r + 2) * d),
                    pr.add((r + 3) * d),
                );
                let mut a0 = _mm256_setzero_ps();
                let mut a1 = _mm256_setzero_ps();
                let mut a2 = _mm256_setzero_ps();
                let mut a3 = _mm256_setzero_ps();
                let mut k = 0usize;
                while k < wide {
                    let v = _mm256_loadu_ps(pq.add(k));
                    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(r0.add(k)), v, a0);
                    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(r1.add(k)), v, a1);
                    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(r2.add(k)), v, a2);
                    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(r3.add(k)), v, a3);
                    k += 8;
                }
                // Lane sums of the four accumulators into one vector of four.
                let h01 = _mm256_hadd_ps(a0, a1);
                let h23 = _mm256_hadd_ps(a2, a3);
                let h = _mm256_hadd_ps(h01, h23);
                let s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
                _mm_storeu_ps(po.add(r), s);
                r += 4;
            }
        }
        for row in r..n {
            out[row] = super::dot(&rows[row * d..(row + 1) * d], q);
        }
        if wide < d {
            for row in 0..r {
                let tail = &rows[row * d + wide..(row + 1) * d];
                out[row] += tail.iter().zip(&q[wide..]).map(|(a, b)| a * b).sum::<f32>();
            }
        }
    }

    /// `y += alpha * x` over the common length.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) unsafe fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
        let n = x.len().min(y.len());
        let (px, py) = (x.as_ptr(), y.as_mut_ptr());
        let mut i = 0usize;
        // SAFETY: loads and stores touch `[i, i + 8)` with `i + 8 <= n`, inside both slices;
        // `x` and `y` cannot alias (shared and exclusive borrows).
        unsafe {
            let va = _mm256_set1_ps(alpha);
            while i + 8 <= n {
                let v = _mm256_fmadd_ps(va, _mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(py.add(i)));
                _mm256_storeu_ps(py.add(i), v);
                i += 8;
            }
        }
        for k in i..n {
            y[k] = alpha.mul_add(x[k], y[k]);
        }
    }
}

/// Asks the CPU to bring the first cache lines of `v` (up to 256 bytes) towards L1; a hint
/// with no effect on results (and none off x86-64). The graph walk calls it for a node's
/// neighbours' codes before scoring them, as hnswlib does for its vectors, and the exact scan
/// for the float vectors it is about to score.
#[inline(always)]
pub(crate) fn prefetch<T>(v: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let lines = std::mem::size_of_val(v).div_ceil(64).min(4);
        let p = v.as_ptr().cast::<i8>();
        for l in 0..lines {
            // SAFETY: a prefetch never faults and reads nothing the program sees; the address
            // stays inside `v` (line `l` starts at byte `64 * l < size_of_val(v)`), and SSE
            // is part of the x86-64 baseline.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.add(64 * l)) }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// Solves `a x = b` for a symmetric positive definite row-major `n x n` matrix `a`
/// (overwritten by its Cholesky factor).
///
/// # Errors
/// [`ModelError::Numerical`] when `a` is not positive definite,
/// [`ModelError::LengthMismatch`] when the shapes disagree.
pub(crate) fn cholesky_solve(a: &mut [f64], b: &[f64]) -> Result<Vec<f64>, ModelError> {
    let n = b.len();
    if a.len() != n * n {
        return Err(ModelError::LengthMismatch {
            what: "cholesky matrix",
            expected: n * n,
            got: a.len(),
        });
    }
    cholesky_factor(a, n)?;
    let mut x = b.to_vec();
    cholesky_apply(a, &mut x);
    Ok(x)
}

/// Overwrites the lower triangle of the symmetric positive definite row-major `n x n`
/// matrix `a` with its Cholesky factor `L` (`a = L Lᵀ`); the upper triangle is left as is.
///
/// # Errors
/// [`ModelError::Numerical`] when a pivot is not positive; [`ModelError::LengthMismatch`]
/// when `a` is not `n x n`.
pub(crate) fn cholesky_factor(a: &mut [f64], n: usize) -> Result<(), ModelError> {
    if a.len() != n * n {
        return Err(ModelError::LengthMismatch {
            what: "cholesky matrix",
            expected: n * n,
            got: a.len(),
        });
    }
    for j in 0..n {
        let mut d = a[j * n + j];
        for k in 0..j {
            d -= a[j * n + k] * a[j * n + k];
        }
        if d.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            return Err(ModelError::Numerical(format!(
                "matrix not positive definite at pivot {j}"
            )));
        }
        let d = d.sqrt();
        a[j * n + j] = d;
        for i in (j + 1)..n {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = s / d;
        }
    }
    Ok(())
}

/// Solves `L Lᵀ x = b` in place (`b` becomes `x`) with the factor [`cholesky_factor`] left
/// in the lower triangle of `l` (`b.len()` rows).
pub(crate) fn cholesky_apply(l: &[f64], b: &mut [f64]) {
    let n = b.len();
    // Forward: L y = b.
    for i in 0..n {
        let mut s = b[i];
        for k in 0..i {
            s -= l[i * n + k] * b[k];
        }
        b[i] = s / l[i * n + i];
    }
    // Backward: Lᵀ x = y.
    for i in (0..n).rev() {
        let mut s = b[i];
        for k in (i + 1)..n {
            s -= l[k * n + i] * b[k];
        }
        b[i] = s / l[i * n + i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::models::SplitMix64::new(seed);
        (0..n).map(|_| rng.next_f64() as f32 - 0.5).collect()
    }

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() <= 1e-4 * (1.0 + a.abs().max(b.abs()))
    }

    fn check<K: Kernels>(k: K) {
        for n in [0, 1, 7, 8, 15, 16, 31, 32, 33, 64, 100, 130] {
            let (a, b) = (data(n, 1), data(n, 2));
            let want: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!(close(k.dot(&a, &b), want), "dot n={n}");
            let ca: Vec<i8> = (0..n)
                .map(|i| ((i * 37 + 11) % 255) as i8)
                .map(|c| c.max(-127))
                .collect();
            let cb: Vec<i8> = (0..n)
                .map(|i| ((i * 91 + 5) % 255) as i8)
                .map(|c| c.max(-127))
                .collect();
            let want_i: i32 = ca
                .iter()
                .zip(&cb)
                .map(|(x, y)| i32::from(*x) * i32::from(*y))
                .sum();
            assert_eq!(k.dot_i8(&ca, &cb), want_i, "dot_i8 n={n}");
            let rows: Vec<Vec<i8>> = (0..4)
                .map(|r| {
                    cb.iter()
                        .map(|c| c.wrapping_mul(r as i8 + 1).max(-127))
                        .collect()
                })
                .collect();
            let got = k.dot_i8_x4(&ca, [&rows[0], &rows[1], &rows[2], &rows[3]]);
            for (g, row) in got.iter().zip(&rows) {
                let want: i32 = ca
                    .iter()
                    .zip(row)
                    .map(|(x, y)| i32::from(*x) * i32::from(*y))
                    .sum();
                assert_eq!(*g, want, "dot_i8_x4 n={n}");
            }
            let mut y = b.clone();
            k.axpy(0.5, &a, &mut y);
            for ((yi, ai), bi) in y.iter().zip(&a).zip(&b) {
                assert!(close(*yi, bi + 0.5 * ai), "axpy n={n}");
            }
        }
        for dim in [1, 5, 32, 40, 64, 70] {
            let mut m = data(dim * dim, 3);
            for r in 0..dim {
                for c in 0..r {
                    m[r * dim + c] = m[c * dim + r];
                }
            }
            let x = data(dim, 4);
            let mut out = vec![0.0; dim];
            k.symv(&m, &x, &mut out);
            for (r, o) in out.iter().enumerate() {
                let want: f32 = (0..dim).map(|c| m[r * dim + c] * x[c]).sum();
                assert!(close(*o, want), "symv dim={dim} row={r}");
            }
        }
        for dim in [0, 1, 3, 8, 17, 64, 70] {
            for n in [0, 1, 3, 4, 5, 9, 33] {
                let rows = data(n * dim, 5);
                let q = data(dim, 6);
                let mut out = vec![f32::NAN; n];
                k.gemv(&rows, &q, &mut out);
                for (r, o) in out.iter().enumerate() {
                    let want: f32 = (0..dim).map(|c| rows[r * dim + c] * q[c]).sum();
                    assert!(
                        close(*o, want),
                        "gemv dim={dim} n={n} row={r}: {o} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn portable_kernels_match_reference() {
        check(Portable);
    }

    #[test]
    fn simd_kernels_match_reference() {
        match Avx2Fma::detect() {
            Some(k) => check(k),
            None => println!("skipping: no AVX2 + FMA on this CPU"),
        }
    }

    #[test]
    fn int8_codes_approximate_the_vector() {
        let v = data(64, 9);
        let mut c = vec![0i8; 64];
        let scale = quantize_i8(&v, &mut c);
        let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(c.iter().any(|x| x.unsigned_abs() == 127));
        for (x, q) in v.iter().zip(&c) {
            assert!((x - scale * f32::from(*q)).abs() <= max / 254.0 + 1e-6);
        }
        assert_eq!(quantize_i8(&[0.0; 4], &mut [1i8; 4]), 0.0);
    }

    #[test]
    fn cholesky_solves_spd_system() {
        // A = [[4, 2], [2, 3]], b = [2, 1] -> x = [0.5, 0].
        let mut a = vec![4.0, 2.0, 2.0, 3.0];
        let x = cholesky_solve(&mut a, &[2.0, 1.0]).unwrap();
        assert!((x[0] - 0.5).abs() < 1e-12 && x[1].abs() < 1e-12);
        let mut bad = vec![1.0, 2.0, 2.0, 1.0];
        assert!(cholesky_solve(&mut bad, &[1.0, 1.0]).is_err());
    }
}
