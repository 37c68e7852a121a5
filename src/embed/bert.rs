//! The BERT encoder's forward pass, written by hand for one text at a time on the CPU.
//!
//! Why not candle's `BertModel::forward`: on a 2-core AVX2 machine a 21-token query took
//! 15.3 ms there, of which 29% was gemm re-packing the weight matrices on every call, 18% the
//! gemm microkernel itself, about 8% clearing fresh pages for each op's new tensor, 5% thread
//! barriers and 8% scalar libm `erf`/`exp`. Here the weights are packed once at load into the
//! layout the microkernel reads, every buffer is reused across layers, GELU and softmax use
//! vectorisable `erf`/`exp` approximations (errors near 1e-7; `exp` is the sequence model's
//! `models::linalg::fast_exp`) and texts run unpadded, so neither an attention mask nor
//! padded rows cost anything.
//!
//! Layout: activations are row-major `tokens x width` `f32`. A matrix product writes
//! *panel-major* tiles ([`NR`] output columns a panel, all rows of a panel contiguous), so
//! the panels can be split between threads as disjoint slices; [`unpack`] then copies them
//! into row-major form, fusing the residual addition where there is one.

use std::collections::HashMap;

use candle_core::{DType, Tensor};
use candle_transformers::models::bert::Config as BertConfig;

use crate::models::linalg::{fast_exp as exp, Avx2Fma};

/// Output columns per packed panel (two AVX2 registers).
const NR: usize = 16;
/// Rows per register tile: 6 rows x 2 registers = 12 accumulators, plus two for the panel's
/// row and one broadcast, of the 16 AVX2 registers.
const MR: usize = 6;
/// Multiply-adds from which a product of one text is split between two threads: below, the
/// hand-off (a few microseconds) costs more than it saves.
const PAR_MIN_MACS: usize = 1 << 18;
/// Zero bias of one panel, for the attention products.
const ZERO_BIAS: [f32; NR] = [0.0; NR];

/// The matrix-product and element-wise kernels to run: AVX2 + FMA when the CPU has them,
/// else portable code.
#[derive(Clone, Copy, Debug)]
pub(super) enum Kern {
    /// Plain Rust, vectorised by the compiler for the baseline target.
    Portable,
    /// AVX2 + FMA intrinsics (the value proves the CPU has them).
    Avx2(Avx2Fma),
}

impl Kern {
    /// The fastest kernels this CPU supports.
    pub(super) fn detect() -> Kern {
        Kern::detect_simd().unwrap_or(Kern::Portable)
    }

    /// The SIMD kernels, if this CPU has them (the tests compare them with the portable ones).
    pub(super) fn detect_simd() -> Option<Kern> {
        Avx2Fma::detect().map(Kern::Avx2)
    }
}

/// A linear layer `y = x W^T + b` with `W` packed for [`matmul`].
struct Linear {
    /// Output features.
    n: usize,
    /// Input features.
    k: usize,
    /// [`pack`]ed weights.
    w: Vec<f32>,
    /// The bias, zero-padded to whole panels.
    bias: Vec<f32>,
}

/// A LayerNorm's scale and shift.
struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

/// One encoder layer.
struct Layer {
    /// Query, key and value projections fused into one `3 hidden x hidden` product.
    qkv: Linear,
    attn_out: Linear,
    attn_norm: Norm,
    intermediate: Linear,
    output: Linear,
    out_norm: Norm,
}

/// A BERT encoder's weights, checked and packed.
pub(super) struct Bert {
    hidden: usize,
    heads: usize,
    intermediate: usize,
    vocab: usize,
    max_positions: usize,
    eps: f32,
    /// `vocab x hidden`, row-major.
    word: Vec<f32>,
    /// `max_positions x hidden`, row-major.
    position: Vec<f32>,
    /// Token type 0's embedding (every token is of type 0 here).
    token_type: Vec<f32>,
    embed_norm: Norm,
    layers: Vec<Layer>,
    kern: Kern,
}

/// Per-thread buffers of one forward pass, grown to the longest text seen and then reused.
#[derive(Default)]
pub(super) struct Scratch {
    /// Hidden states, `tokens x hidden`.
    x: Vec<f32>,
    /// Queries, keys and values, `tokens x 3 hidden`.
    qkv: Vec<f32>,
    /// Attention output before its projection, `tokens x hidden`.
    ctx: Vec<f32>,
    /// Feed-forward activations, `tokens x intermediate`.
    inter: Vec<f32>,
    /// One head's attention probabilities, `tokens x tokens`.
    scores: Vec<f32>,
    /// A product's panel-major output.
    tiles: Vec<f32>,
    /// One head's keys or values packed as a product's right-hand side.
    packed: Vec<f32>,
}

/// Grows `v` to at least `n` floats (never shrinks; contents are overwritten by the caller).
fn room(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

impl Bert {
    /// Builds the encoder from the safetensors `tensors`, checking every shape against
    /// `config`. Names may carry any prefix (such as `bert.`); LayerNorm parameters may be
    /// named `weight`/`bias` or `gamma`/`beta`.
    ///
    /// # Errors
    ///
    /// The reason, for the caller to report as the weights file's corruption, when a tensor
    /// is missing, has another shape than the config implies or cannot be read as `f32`.
    pub(super) fn load(
        config: &BertConfig,
        tensors: &HashMap<String, Tensor>,
    ) -> std::result::Result<Bert, String> {
        let h = config.hidden_size;
        let inter = config.intermediate_size;
        let find = |suffix: &str| {
            tensors
                .iter()
                .find(|(name, _)| name.as_str() == suffix || name.ends_with(&format!(".{suffix}")))
                .map(|(_, t)| t)
        };
        let get = |names: &[&str], shape: &[usize]| -> std::result::Result<Vec<f32>, String> {
            let Some((name, t)) = names.iter().find_map(|n| find(n).map(|t| (n, t))) else {
                return Err(format!("no tensor {}", names[0]));
            };
            if t.dims() != shape {
                return Err(format!(
                    "{name} has shape {:?}, expected {shape:?}",
                    t.dims()
                ));
            }
            t.to_dtype(DType::F32)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|e| format!("{name}: {e}"))
        };
        let norm = |prefix: &str| -> std::result::Result<Norm, String> {
            Ok(Norm {
                gamma: get(
                    &[&format!("{prefix}.weight"), &format!("{prefix}.gamma")],
                    &[h],
                )?,
                beta: get(
                    &[&format!("{prefix}.bias"), &format!("{prefix}.beta")],
                    &[h],
                )?,
            })
        };
        let linear = |prefix: &str, n: usize, k: usize| -> std::result::Result<Linear, String> {
            let w = get(&[&format!("{prefix}.weight")], &[n, k])?;
            let b = get(&[&format!("{prefix}.bias")], &[n])?;
            Ok(Linear::new(n, k, &w, &b))
        };

        let word = get(
            &["embeddings.word_embeddings.weight"],
            &[config.vocab_size, h],
        )?;
        let position = get(
            &["embeddings.position_embeddings.weight"],
            &[config.max_position_embeddings, h],
        )?;
        let mut token_type = get(
            &["embeddings.token_type_embeddings.weight"],
            &[config.type_vocab_size, h],
        )?;
        token_type.truncate(h);
        let embed_norm = norm("embeddings.LayerNorm")?;

        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let (mut w, mut b) = (Vec::with_capacity(3 * h * h), Vec::with_capacity(3 * h));
            for part in ["query", "key", "value"] {
                let name = format!("{p}.attention.self.{part}");
                w.extend(get(&[&format!("{name}.weight")], &[h, h])?);
                b.extend(get(&[&format!("{name}.bias")], &[h])?);
            }
            layers.push(Layer {
                qkv: Linear::new(3 * h, h, &w, &b),
                attn_out: linear(&format!("{p}.attention.output.dense"), h, h)?,
                attn_norm: norm(&format!("{p}.attention.output.LayerNorm"))?,
                intermediate: linear(&format!("{p}.intermediate.dense"), inter, h)?,
                output: linear(&format!("{p}.output.dense"), h, inter)?,
                out_norm: norm(&format!("{p}.output.LayerNorm"))?,
            });
        }
        Ok(Bert {
            hidden: h,
            heads: config.num_attention_heads,
            intermediate: inter,
            vocab: config.vocab_size,
            max_positions: config.max_position_embeddings,
            eps: config.layer_norm_eps as f32,
            word,
            position,
            token_type,
            embed_norm,
            layers,
            kern: Kern::detect(),
        })
    }

    /// The last hidden states of the text `ids` (`ids.len() x hidden`, row-major, in
    /// `scratch`). With `split`, products big enough are shared between two rayon threads
    /// (for a lone text; a batch runs its texts in parallel instead).
    ///
    /// # Errors
    ///
    /// A message when a token id is outside the vocabulary or the text is longer than the
    /// position table (the tokenizer's vocabulary and the truncation, checked at load,
    /// exclude both).
    pub(super) fn forward<'s>(
        &self,
        ids: &[u32],
        split: bool,
        s: &'s mut Scratch,
    ) -> std::result::Result<&'s [f32], String> {
        let (t, h, kern) = (ids.len(), self.hidden, self.kern);
        if t > self.max_positions {
            return Err(format!(
                "{t} tokens, more than the {} positions",
                self.max_positions
            ));
        }
        let x = room(&mut s.x, t * h);
        for (pos, (&id, row)) in ids.iter().zip(x.chunks_exact_mut(h)).enumerate() {
            let id = id as usize;
            if id >= self.vocab {
                return Err(format!("token id {id} outside the vocabulary"));
            }
            let word = &self.word[id * h..(id + 1) * h];
            let position = &self.position[pos * h..(pos + 1) * h];
            for (((o, w), ty), p) in row.iter_mut().zip(word).zip(&self.token_type).zip(position) {
                *o = (w + ty) + p;
            }
            layer_norm(row, &self.embed_norm, self.eps);
        }
        if t == 0 {
            return Ok(&s.x[..0]);
        }

        let heads = self.heads;
        let dh = h / heads;
        let scale = 1.0 / (dh as f32).sqrt();
        for layer in &self.layers {
            // Self-attention: Q, K, V in one product, then each head on its own.
            let x = &s.x[..t * h];
            let qkv = room(&mut s.qkv, t * 3 * h);
            let tiles = room(&mut s.tiles, t * 3 * h.div_ceil(NR) * NR);
            layer.qkv.apply(kern, x, t, tiles, split);
            unpack(tiles, t, 3 * h, qkv, 3 * h, |d, v| *d = v);
            let qkv = &s.qkv[..t * 3 * h];
            let ctx = room(&mut s.ctx, t * h);
            let scores = room(&mut s.scores, t * t);
            for head in 0..heads {
                let (q0, k0, v0) = (head * dh, h + head * dh, 2 * h + head * dh);
                // scores = Q K^T / sqrt(dh): the keys are the product's "weights".
                pack(&mut s.packed, t, dh, |j, d| qkv[j * 3 * h + k0 + d]);
                let tiles = room(&mut s.tiles, t * t.div_ceil(NR) * NR);
                matmul(
                    kern,
                    &qkv[q0..],
                    3 * h,
                    t,
                    dh,
                    t,
                    &s.packed,
                    None,
                    tiles,
                    false,
                );
                unpack(tiles, t, t, scores, t, |d, v| *d = v * scale);
                for row in scores.chunks_exact_mut(t) {
                    softmax(kern, row);
                }
                // ctx = P V: the values, read by column, are the product's "weights".
                pack(&mut s.packed, dh, t, |c, j| qkv[j * 3 * h + v0 + c]);
                let tiles = room(&mut s.tiles, t * dh.div_ceil(NR) * NR);
                matmul(kern, scores, t, t, t, dh, &s.packed, None, tiles, false);
                unpack(tiles, t, dh, &mut ctx[q0..], h, |d, v| *d = v);
            }
            // Output projection, residual, LayerNorm.
            let tiles = room(&mut s.tiles, t * h.div_ceil(NR) * NR);
            layer.attn_out.apply(kern, ctx, t, tiles, split);
            let x = &mut s.x[..t * h];
            unpack(tiles, t, h, x, h, |d, v| *d += v);
            for row in x.chunks_exact_mut(h) {
                layer_norm(row, &layer.attn_norm, self.eps);
            }
            // Feed-forward: GELU(x W1 + b1) W2 + b2, residual, LayerNorm.
            let i = self.intermediate;
            let inter = room(&mut s.inter, t * i);
            let tiles = room(&mut s.tiles, t * i.div_ceil(NR) * NR);
            layer.intermediate.apply(kern, x, t, tiles, split);
            unpack(tiles, t, i, inter, i, |d, v| *d = v);
            gelu(kern, inter);
            let tiles = room(&mut s.tiles, t * h.div_ceil(NR) * NR);
            layer.output.apply(kern, inter, t, tiles, split);
            unpack(tiles, t, h, x, h, |d, v| *d += v);
            for row in x.chunks_exact_mut(h) {
                layer_norm(row, &layer.out_norm, self.eps);
            }
        }
        Ok(&s.x[..t * h])
    }
}

impl Linear {
    /// Packs the row-major `n x k` weight `w` (PyTorch's `[out, in]`) and the bias `b`.
    fn new(n: usize, k: usize, w: &[f32], b: &[f32]) -> Linear {
        let mut packed = Vec::new();
        pack(&mut packed, n, k, |j, kk| w[j * k + kk]);
        let mut bias = vec![0.0; n.div_ceil(NR) * NR];
        bias[..n].copy_from_slice(&b[..n]);
        Linear {
            n,
            k,
            w: packed,
            bias,
        }
    }

    /// `x W^T + b` of the `rows x k` row-major `x`, panel-major into `tiles`.
    fn apply(&self, kern: Kern, x: &[f32], rows: usize, tiles: &mut [f32], split: bool) {
        matmul(
            kern,
            x,
            self.k,
            rows,
            self.k,
            self.n,
            &self.w,
            Some(&self.bias),
            tiles,
            split,
        );
    }
}

/// Packs the `n x k` matrix `get(column, kk)` (the product's right-hand side, transposed)
/// into `out`: `ceil(n / NR)` panels of `k` rows of [`NR`] floats, k-major, columns past `n`
/// zero. This is the layout [`matmul`] streams through.
pub(super) fn pack(out: &mut Vec<f32>, n: usize, k: usize, get: impl Fn(usize, usize) -> f32) {
    let panels = n.div_ceil(NR);
    out.clear();
    out.resize(panels * k * NR, 0.0);
    for (p, panel) in out
        .chunks_exact_mut((k * NR).max(1))
        .enumerate()
        .take(panels)
    {
        let cols = NR.min(n - p * NR);
        for (kk, row) in panel.chunks_exact_mut(NR).enumerate() {
            for (c, o) in row[..cols].iter_mut().enumerate() {
                *o = get(p * NR + c, kk);
            }
        }
    }
}

/// `a B + bias` for the `rows x k` matrix `a` (row stride `lda`) and the [`pack`]ed `k x n`
/// matrix `b`, written panel-major into `out` (panel `p` holds `rows x NR` floats at
/// `p * rows * NR`; columns past `n` are junk). With `split` and enough work, the panels are
/// shared between two rayon threads, each writing its own half of `out`.
#[allow(clippy::too_many_arguments)]
pub(super) fn matmul(
    kern: Kern,
    a: &[f32],
    lda: usize,
    rows: usize,
    k: usize,
    n: usize,
    b: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    split: bool,
) {
    let panels = n.div_ceil(NR);
    if rows == 0 || panels == 0 {
        return;
    }
    let out = &mut out[..panels * rows * NR];
    let run = |first: usize, out: &mut [f32]| {
        for (i, o) in out.chunks_exact_mut(rows * NR).enumerate() {
            let p = first + i;
            let bias = bias.map_or(&ZERO_BIAS[..], |b| &b[p * NR..(p + 1) * NR]);
            panel(
                kern,
                a,
                lda,
                rows,
                k,
                &b[p * k * NR..(p + 1) * k * NR],
                bias,
                o,
            );
        }
    };
    if split && panels >= 2 && rows * k * n >= PAR_MIN_MACS {
        let half = panels / 2;
        let (lo, hi) = out.split_at_mut(half * rows * NR);
        rayon::join(|| run(0, lo), || run(half, hi));
    } else {
        run(0, out);
    }
}

/// One panel: `rows x NR` outputs from the packed `k x NR` panel `w`, in register tiles of at
/// most [`MR`] rows. The tiles' heights are balanced (19 rows run as 5, 5, 5, 4, not 6, 6,
/// 6, 1): a short tile loads the panel for few multiply-adds.
#[allow(clippy::too_many_arguments)]
fn panel(
    kern: Kern,
    a: &[f32],
    lda: usize,
    rows: usize,
    k: usize,
    w: &[f32],
    bias: &[f32],
    out: &mut [f32],
) {
    let tiles = rows.div_ceil(MR);
    let mut r = 0;
    for tile in 0..tiles {
        // The first `rows % tiles` tiles get one row more than the others.
        let m = rows / tiles + usize::from(tile < rows % tiles);
        let a = &a[r * lda..];
        let out = &mut out[r * NR..(r + m) * NR];
        match kern {
            #[cfg(target_arch = "x86_64")]
            Kern::Avx2(_) => {
                // SAFETY: an `Avx2Fma` value exists only if AVX2 and FMA were detected; the
                // tile checks its slices' lengths itself.
                unsafe {
                    match m {
                        6 => x86::tile::<6>(a, lda, k, w, bias, out),
                        5 => x86::tile::<5>(a, lda, k, w, bias, out),
                        4 => x86::tile::<4>(a, lda, k, w, bias, out),
                        3 => x86::tile::<3>(a, lda, k, w, bias, out),
                        2 => x86::tile::<2>(a, lda, k, w, bias, out),
                        _ => x86::tile::<1>(a, lda, k, w, bias, out),
                    }
                }
            }
            _ => portable_tile(a, lda, m, k, w, bias, out),
        }
        r += m;
    }
}

/// The portable register tile: `m` rows of `a` (stride `lda`) times the panel `w`, plus
/// `bias`, into `out` (`m x NR`). The inner loop over [`NR`] columns vectorises.
fn portable_tile(
    a: &[f32],
    lda: usize,
    m: usize,
    k: usize,
    w: &[f32],
    bias: &[f32],
    out: &mut [f32],
) {
    for (r, o) in out.chunks_exact_mut(NR).take(m).enumerate() {
        let mut acc = [0f32; NR];
        acc.copy_from_slice(&bias[..NR]);
        let row = &a[r * lda..r * lda + k];
        for (&x, wk) in row.iter().zip(w.chunks_exact(NR)) {
            for (s, &wv) in acc.iter_mut().zip(wk) {
                *s += x * wv;
            }
        }
        o.copy_from_slice(&acc);
    }
}

/// Copies the panel-major `tiles` of a `rows x n` product into the row-major `dst` (row
/// stride `ldd`) through `f(dst, value)`: assignment, a residual's addition or a scaling.
fn unpack(
    tiles: &[f32],
    rows: usize,
    n: usize,
    dst: &mut [f32],
    ldd: usize,
    f: impl Fn(&mut f32, f32),
) {
    for (p, t) in tiles
        .chunks_exact(rows * NR)
        .take(n.div_ceil(NR))
        .enumerate()
    {
        let c0 = p * NR;
        let w = NR.min(n - c0);
        for (r, src) in t.chunks_exact(NR).enumerate() {
            let d = &mut dst[r * ldd + c0..r * ldd + c0 + w];
            for (d, &v) in d.iter_mut().zip(&src[..w]) {
                f(d, v);
            }
        }
    }
}

/// PyTorch's LayerNorm of one row: `(x - mean) / sqrt(var + eps) * gamma + beta`, with the
/// biased variance.
fn layer_norm(x: &mut [f32], norm: &Norm, eps: f32) {
    let n = x.len() as f32;
    let mean = lane_sum(x.iter().copied()) / n;
    let var = lane_sum(x.iter().map(|v| (v - mean) * (v - mean))) / n;
    let inv = 1.0 / (var + eps).sqrt();
    for ((v, g), b) in x.iter_mut().zip(&norm.gamma).zip(&norm.beta) {
        *v = (*v - mean) * inv * g + b;
    }
}

/// A sum over eight interleaved partial sums (vectorisable; float addition is not
/// reassociated by the compiler otherwise).
fn lane_sum(values: impl Iterator<Item = f32>) -> f32 {
    let mut acc = [0f32; 8];
    for (i, v) in values.enumerate() {
        acc[i % 8] += v;
    }
    acc.iter().sum()
}

/// Exact (erf) GELU in place, on the AVX2 + FMA path when `kern` has it.
pub(super) fn gelu(kern: Kern, xs: &mut [f32]) {
    match kern {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an `Avx2Fma` value exists only if AVX2 and FMA were detected.
        Kern::Avx2(_) => unsafe { x86::gelu(xs) },
        _ => gelu_each(xs),
    }
}

/// The softmax of one row in place, max-subtracted.
fn softmax(kern: Kern, row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    match kern {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an `Avx2Fma` value exists only if AVX2 and FMA were detected.
        Kern::Avx2(_) => unsafe { x86::exp_shifted(row, max) },
        _ => exp_shifted_each(row, max),
    }
    let inv = 1.0 / lane_sum(row.iter().copied());
    row.iter_mut().for_each(|v| *v *= inv);
}

/// `x = gelu(x)` for each value; inlined into the AVX2 wrapper so it vectorises there too.
#[inline(always)]
fn gelu_each(xs: &mut [f32]) {
    for x in xs {
        *x = 0.5 * *x * (1.0 + erf(*x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// `x = exp(x - max)` for each value; inlined like [`gelu_each`].
#[inline(always)]
fn exp_shifted_each(xs: &mut [f32], max: f32) {
    for x in xs {
        *x = exp(*x - max);
    }
}

/// `erf(x)` by Abramowitz and Stegun 7.1.26 (absolute error at most 1.5e-7), branch-free.
#[inline(always)]
pub(super) fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152 + t * 1.061_405_4))));
    (1.0 - poly * exp(-a * a)).copysign(x)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! AVX2 + FMA code: the matrix product's register tile, and the element-wise loops
    //! compiled with the features enabled so the compiler vectorises them 8 wide.

    use std::arch::x86_64::{_mm256_fmadd_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_storeu_ps};

    use super::NR;

    /// `M` rows of `a` (row stride `lda`, `k` used) times the packed `k x NR` panel `w`, plus
    /// `bias`, into `out` (`M x NR`, row-major).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile<const M: usize>(
        a: &[f32],
        lda: usize,
        k: usize,
        w: &[f32],
        bias: &[f32],
        out: &mut [f32],
    ) {
        // Every pointer access below stays inside these (bounds-checked) slices.
        let a = &a[..(M - 1) * lda + k];
        let w = &w[..k * NR];
        let bias = &bias[..NR];
        let out = &mut out[..M * NR];
        let (pa, pw, po) = (a.as_ptr(), w.as_ptr(), out.as_mut_ptr());
        // SAFETY: bias holds NR = 16 floats: two loads of 8. In the loop `kk < k`, so the
        // panel loads read `[kk * 16, kk * 16 + 16)` of `w` (16 k floats) and `a` is read at
        // `r * lda + kk` with `r < M`, below `(M - 1) * lda + k`; the stores write
        // `[r * 16, r * 16 + 16)` of `out` (16 M floats).
        unsafe {
            let b0 = _mm256_loadu_ps(bias.as_ptr());
            let b1 = _mm256_loadu_ps(bias.as_ptr().add(8));
            let mut acc0 = [b0; M];
            let mut acc1 = [b1; M];
            for kk in 0..k {
                let w0 = _mm256_loadu_ps(pw.add(kk * NR));
                let w1 = _mm256_loadu_ps(pw.add(kk * NR + 8));
                for r in 0..M {
                    let x = _mm256_set1_ps(*pa.add(r * lda + kk));
                    acc0[r] = _mm256_fmadd_ps(x, w0, acc0[r]);
                    acc1[r] = _mm256_fmadd_ps(x, w1, acc1[r]);
                }
            }
            for r in 0..M {
                _mm256_storeu_ps(po.add(r * NR), acc0[r]);
                _mm256_storeu_ps(po.add(r * NR + 8), acc1[r]);
            }
        }
    }

    /// [`super::gelu_each`] compiled for AVX2 + FMA.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gelu(xs: &mut [f32]) {
        super::gelu_each(xs);
    }

    /// [`super::exp_shifted_each`] compiled for AVX2 + FMA.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp_shifted(xs: &mut [f32], max: f32) {
        super::exp_shifted_each(xs, max);
    }
}
