//! Inference: the forward pass over tiles of rows, its SIMD kernels (AVX2 + FMA where the CPU
//! has them, a portable kernel elsewhere) and prediction ([`Mlp::predict`],
//! [`Mlp::predict_into`]).

use ndarray::{Array1, ArrayView2};

use super::{check_len, inv_std, locate_non_finite, Dense, Mlp, MlpError, MlpScratch};
use crate::models::linalg::Avx2Fma;

/// Output columns per register block of the inference kernel: two rows of 32
/// columns are eight 8-lane accumulators, which fit the 16 AVX registers.
const BLOCK_COLS: usize = 32;
/// Rows processed together by the inference kernel (even, so rows pair up);
/// sized so a tile's activations stay in L1.
const TILE_ROWS: usize = 48;

impl MlpScratch {
    /// Creates a scratch sized for `model`.
    pub fn new(model: &Mlp) -> Self {
        let mut scratch = Self::default();
        scratch.prepare(model);
        scratch
    }

    /// Grows the buffers if needed and caches `1 / std` for `model`.
    ///
    /// Sizes come from the lengths of the model's vectors (equal to the
    /// declared widths once `check_shapes` passed), so a corrupted model can
    /// never request an absurd allocation here.
    pub(super) fn prepare(&mut self, model: &Mlp) {
        let width = model.layers.iter().map(|l| l.bias.len()).max().unwrap_or(0);
        grow(&mut self.ping, TILE_ROWS * width);
        grow(&mut self.pong, TILE_ROWS * width);
        grow(&mut self.x_tile, TILE_ROWS * model.feature_mean.len());
        self.inv_std.clear();
        self.inv_std
            .extend(model.feature_std.iter().map(|&s| inv_std(s)));
    }
}

fn grow(v: &mut Vec<f32>, len: usize) {
    if v.len() < len {
        v.resize(len, 0.0);
    }
}

impl Mlp {
    /// Scores every row of `x` (raw, unstandardised features); returns one
    /// probability in `[0, 1]` per row.
    ///
    /// Allocates the result and a scratch; use [`Mlp::predict_into`] on hot
    /// paths. Errors as [`Mlp::predict_into`].
    pub fn predict(&self, x: ArrayView2<f32>) -> Result<Array1<f32>, MlpError> {
        let mut out = vec![0.0; x.nrows()];
        let mut scratch = MlpScratch::new(self);
        self.predict_into(x, &mut scratch, &mut out)?;
        Ok(Array1::from(out))
    }

    /// Scores every row of `x` into `out` (one probability per row) without
    /// allocating, once `scratch` is sized for this model (see
    /// [`MlpScratch`]). Any memory layout of `x` is accepted; row-major
    /// (standard layout) input is read in place, others are copied tile by
    /// tile into the scratch.
    ///
    /// # Errors
    /// * [`MlpError::ShapeMismatch`] if `x` does not have [`Mlp::n_inputs`]
    ///   columns or `out.len() != x.nrows()`;
    /// * [`MlpError::NonFiniteInput`] if `x` holds a NaN or infinity (nothing
    ///   useful is written to `out` then);
    /// * [`MlpError::InvalidModel`] if the model's shapes are inconsistent.
    pub fn predict_into(
        &self,
        x: ArrayView2<f32>,
        scratch: &mut MlpScratch,
        out: &mut [f32],
    ) -> Result<(), MlpError> {
        self.check_shapes()?;
        check_len("feature columns", self.n_inputs, x.ncols())?;
        check_len("output slice", x.nrows(), out.len())?;
        check_finite(x)?;
        scratch.prepare(self);
        match Avx2Fma::detect() {
            Some(simd) => forward_simd(simd, self, x, scratch, out),
            None => forward_portable(self, x, scratch, out),
        }
        Ok(())
    }
}

/// Fast all-finite check: `v - v` is 0 for finite `v` and NaN otherwise, and
/// the lane-wise sums vectorise. Falls back to a scan to report the position.
#[allow(clippy::eq_op)] // `v - v` is deliberate: it is NaN exactly for NaN/inf.
fn check_finite(x: ArrayView2<f32>) -> Result<(), MlpError> {
    let all_finite = match x.as_slice() {
        Some(s) => {
            let (chunks, rest) = s.as_chunks::<16>();
            let mut acc = [0.0f32; 16];
            for chunk in chunks {
                for (a, &v) in acc.iter_mut().zip(chunk) {
                    *a += v - v;
                }
            }
            let total: f32 = acc.iter().sum::<f32>() + rest.iter().map(|v| v - v).sum::<f32>();
            total == 0.0
        }
        None => x.iter().all(|v| v.is_finite()),
    };
    if all_finite {
        Ok(())
    } else {
        locate_non_finite(x)
    }
}

// ---------------------------------------------------------------------------
// Inference kernels
// ---------------------------------------------------------------------------

/// [`forward_avx2_fma`] where the CPU has AVX2 and FMA (which `_simd` proves), else the
/// portable kernel.
fn forward_simd(
    _simd: Avx2Fma,
    model: &Mlp,
    x: ArrayView2<f32>,
    scratch: &mut MlpScratch,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: an `Avx2Fma` value exists only if the CPU has AVX2 and FMA, the only
        // requirement of this target-feature function.
        unsafe { forward_avx2_fma(model, x, scratch, out) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        forward_portable(model, x, scratch, out)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn forward_avx2_fma(model: &Mlp, x: ArrayView2<f32>, scratch: &mut MlpScratch, out: &mut [f32]) {
    forward_impl::<true>(model, x, scratch, out);
}

pub(super) fn forward_portable(
    model: &Mlp,
    x: ArrayView2<f32>,
    scratch: &mut MlpScratch,
    out: &mut [f32],
) {
    forward_impl::<false>(model, x, scratch, out);
}

/// `a * b + c`, fused when `FMA` (only used where the CPU has FMA).
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

#[inline(always)]
pub(super) fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// Full forward pass, tile by tile. Shapes must have been checked
/// (`check_shapes`, input/output sizes) and `scratch` prepared for `model`.
#[inline(always)]
fn forward_impl<const FMA: bool>(
    model: &Mlp,
    x: ArrayView2<f32>,
    scratch: &mut MlpScratch,
    out: &mut [f32],
) {
    let d = model.n_inputs;
    let Some((output, hidden)) = model.layers.split_last() else {
        return;
    };
    let Some((first, rest)) = hidden.split_first() else {
        return;
    };
    let MlpScratch {
        inv_std,
        ping,
        pong,
        x_tile,
    } = scratch;
    let mean = model.feature_mean.as_slice();
    let inv = inv_std.as_slice();
    let contiguous = x.as_slice();
    let mut cur: &mut [f32] = ping.as_mut_slice();
    let mut nxt: &mut [f32] = pong.as_mut_slice();

    for (t, out_tile) in out.chunks_mut(TILE_ROWS).enumerate() {
        let r0 = t * TILE_ROWS;
        let rows = out_tile.len();
        // Standardise the tile (row-major) into the scratch.
        let xs = &mut x_tile[..rows * d];
        match contiguous {
            Some(s) => {
                for (dst, src) in xs.chunks_exact_mut(d).zip(s[r0 * d..].chunks_exact(d)) {
                    standardise_row(dst, src.iter(), mean, inv);
                }
            }
            None => {
                for (k, dst) in xs.chunks_exact_mut(d).enumerate() {
                    standardise_row(dst, x.row(r0 + k).iter(), mean, inv);
                }
            }
        }
        dense_relu::<FMA>(xs, first, &mut nxt[..rows * first.n_out]);
        std::mem::swap(&mut cur, &mut nxt);
        for layer in rest {
            dense_relu::<FMA>(
                &cur[..rows * layer.n_in],
                layer,
                &mut nxt[..rows * layer.n_out],
            );
            std::mem::swap(&mut cur, &mut nxt);
        }
        let b = output.bias.first().copied().unwrap_or(0.0);
        for (o, h) in out_tile.iter_mut().zip(cur.chunks_exact(output.n_in)) {
            *o = sigmoid(dot::<FMA>(h, &output.weights) + b);
        }
    }
}

/// `dst = (src - mean) * inv`, element-wise over one row.
#[inline(always)]
fn standardise_row<'a>(
    dst: &mut [f32],
    src: impl Iterator<Item = &'a f32>,
    mean: &[f32],
    inv: &[f32],
) {
    for ((o, &v), (&m, &k)) in dst.iter_mut().zip(src).zip(mean.iter().zip(inv)) {
        *o = (v - m) * k;
    }
}

/// `out = relu(input · W + b)` for a tile of row-major rows, two rows at a
/// time (a remaining odd row alone).
#[inline(always)]
fn dense_relu<const FMA: bool>(input: &[f32], layer: &Dense, out: &mut [f32]) {
    let (n_in, n_out) = (layer.n_in, layer.n_out);
    let mut in_pairs = input.chunks_exact(2 * n_in);
    let mut out_pairs = out.chunks_exact_mut(2 * n_out);
    for (ip, op) in (&mut in_pairs).zip(&mut out_pairs) {
        let (x0, x1) = ip.split_at(n_in);
        let (o0, o1) = op.split_at_mut(n_out);
        let mut c0 = 0;
        while c0 + BLOCK_COLS <= n_out {
            two_rows::<BLOCK_COLS, FMA>(x0, x1, layer, c0, o0, o1);
            c0 += BLOCK_COLS;
        }
        while c0 + 8 <= n_out {
            two_rows::<8, FMA>(x0, x1, layer, c0, o0, o1);
            c0 += 8;
        }
        while c0 < n_out {
            two_rows::<1, FMA>(x0, x1, layer, c0, o0, o1);
            c0 += 1;
        }
    }
    let x0 = in_pairs.remainder();
    if x0.len() == n_in {
        let o0 = out_pairs.into_remainder();
        let mut c0 = 0;
        while c0 + 8 <= n_out {
            one_row::<8, FMA>(x0, layer, c0, o0);
            c0 += 8;
        }
        while c0 < n_out {
            one_row::<1, FMA>(x0, layer, c0, o0);
            c0 += 1;
        }
    }
}

/// Columns `c0..c0 + C` of two rows: `2 x C` accumulators in registers; per
/// input feature one weight-row slice is loaded and used for both rows.
#[inline(always)]
fn two_rows<const C: usize, const FMA: bool>(
    x0: &[f32],
    x1: &[f32],
    layer: &Dense,
    c0: usize,
    o0: &mut [f32],
    o1: &mut [f32],
) {
    let Ok(bias) = <&[f32; C]>::try_from(&layer.bias[c0..c0 + C]) else {
        return;
    };
    let (mut a0, mut a1) = (*bias, *bias);
    for ((&s0, &s1), w_row) in x0
        .iter()
        .zip(x1)
        .zip(layer.weights.chunks_exact(layer.n_out))
    {
        if let Ok(w) = <&[f32; C]>::try_from(&w_row[c0..c0 + C]) {
            for ((p, q), &wv) in a0.iter_mut().zip(a1.iter_mut()).zip(w) {
                *p = madd::<FMA>(s0, wv, *p);
                *q = madd::<FMA>(s1, wv, *q);
            }
        }
    }
    for (o, a) in o0[c0..c0 + C].iter_mut().zip(a0) {
        *o = a.max(0.0);
    }
    for (o, a) in o1[c0..c0 + C].iter_mut().zip(a1) {
        *o = a.max(0.0);
    }
}

/// Columns `c0..c0 + C` of a single row.
#[inline(always)]
fn one_row<const C: usize, const FMA: bool>(x0: &[f32], layer: &Dense, c0: usize, o0: &mut [f32]) {
    let Ok(bias) = <&[f32; C]>::try_from(&layer.bias[c0..c0 + C]) else {
        return;
    };
    let mut a0 = *bias;
    for (&s0, w_row) in x0.iter().zip(layer.weights.chunks_exact(layer.n_out)) {
        if let Ok(w) = <&[f32; C]>::try_from(&w_row[c0..c0 + C]) {
            for (p, &wv) in a0.iter_mut().zip(w) {
                *p = madd::<FMA>(s0, wv, *p);
            }
        }
    }
    for (o, a) in o0[c0..c0 + C].iter_mut().zip(a0) {
        *o = a.max(0.0);
    }
}

/// Dot product with eight independent partial sums (vectorises without
/// reassociation flags), reduced as a fixed tree.
#[inline(always)]
fn dot<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    let (a8, a_rest) = a.as_chunks::<8>();
    let (b8, b_rest) = b.as_chunks::<8>();
    let mut acc = [0.0f32; 8];
    for (xa, xb) in a8.iter().zip(b8) {
        for ((s, &u), &v) in acc.iter_mut().zip(xa).zip(xb) {
            *s = madd::<FMA>(u, v, *s);
        }
    }
    let mut tail = 0.0f32;
    for (&u, &v) in a_rest.iter().zip(b_rest) {
        tail = madd::<FMA>(u, v, tail);
    }
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7])) + tail
}
