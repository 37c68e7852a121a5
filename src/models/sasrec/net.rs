//! The network: the parameter layout, the packed batch, the forward pass and its hand-written
//! backward pass, and the sampled-softmax loss.
//!
//! A batch packs the real positions of several sequences one after another (no padding): row
//! `i` of every `(N x d)` activation is one position of one sequence, and `segs` says where each
//! sequence starts and how long it is. The dense layers (Q/K/V, output projection, feed-forward,
//! the loss) are then single matrix products over all `N` rows; only attention works per
//! sequence (causal, within its segment). Positions are numbered as in SASRec's left-padded
//! window: the last of `n` items sits at `max_len - 1`.
//!
//! Block (pre-layer-norm): `h += drop(Attn(LN1(h)) Wo + bo)`, `h += drop(W2 drop(relu(W1
//! LN2(h) + b1)) + b2)`; the encoder ends with a final layer norm. The input is
//! `drop(E[item] * sqrt(d) + P[pos])` with `E` shared with the output.

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2};

use crate::models::linalg::{dot, fast_exp};
use crate::models::{ModelError, SplitMix64};

/// Layer-norm variance epsilon.
pub(super) const LN_EPS: f32 = 1e-6;

/// The shape of a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Dims {
    /// Items (rows of the item embedding).
    pub n_items: usize,
    /// Embedding width.
    pub dim: usize,
    /// Positions (rows of the positional embedding).
    pub max_len: usize,
    /// Self-attention blocks.
    pub blocks: usize,
    /// Attention heads per block (`dim % heads == 0`).
    pub heads: usize,
    /// Hidden width of the feed-forward layer.
    pub ffn: usize,
}

/// Offsets of one block's tensors in the flat parameter vector. Every layer norm's gain is
/// followed directly by its bias, and each weight matrix is row-major `inputs x outputs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct BlockOffsets {
    pub ln1: usize,
    pub wqkv: usize,
    pub bqkv: usize,
    pub wo: usize,
    pub bo: usize,
    pub ln2: usize,
    pub w1: usize,
    pub b1: usize,
    pub w2: usize,
    pub b2: usize,
}

/// Where every tensor lives in the flat parameter vector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Layout {
    pub dims: Dims,
    /// Item embedding, `n_items x dim`.
    pub item: usize,
    /// Positional embedding, `max_len x dim`.
    pub pos: usize,
    pub blocks: Vec<BlockOffsets>,
    /// Final layer norm (gain then bias).
    pub lnf: usize,
    /// Number of parameters.
    pub total: usize,
}

fn shape_error(what: &str) -> ModelError {
    ModelError::Numerical(format!("internal shape error: {what}"))
}

impl Layout {
    /// The layout of a model of shape `dims`; `None` when a size overflows.
    pub fn new(dims: Dims) -> Option<Layout> {
        let d = dims.dim;
        let mut at = 0usize;
        let mut take = |len: Option<usize>| -> Option<usize> {
            let start = at;
            at = at.checked_add(len?)?;
            Some(start)
        };
        let item = take(dims.n_items.checked_mul(d))?;
        let pos = take(dims.max_len.checked_mul(d))?;
        let mut blocks = Vec::with_capacity(dims.blocks);
        for _ in 0..dims.blocks {
            blocks.push(BlockOffsets {
                ln1: take(d.checked_mul(2))?,
                wqkv: take(d.checked_mul(d)?.checked_mul(3))?,
                bqkv: take(d.checked_mul(3))?,
                wo: take(d.checked_mul(d))?,
                bo: take(Some(d))?,
                ln2: take(d.checked_mul(2))?,
                w1: take(d.checked_mul(dims.ffn))?,
                b1: take(Some(dims.ffn))?,
                w2: take(dims.ffn.checked_mul(d))?,
                b2: take(Some(d))?,
            });
        }
        let lnf = take(d.checked_mul(2))?;
        Some(Layout {
            dims,
            item,
            pos,
            blocks,
            lnf,
            total: at,
        })
    }

    /// Ranges that get weight decay: the embeddings and the weight matrices (not the biases
    /// and layer norms).
    pub fn decayed(&self) -> Vec<(usize, usize)> {
        let d = self.dims.dim;
        let f = self.dims.ffn;
        let mut out = vec![(self.item, self.item + self.dims.n_items * d)];
        out.push((self.pos, self.pos + self.dims.max_len * d));
        for b in &self.blocks {
            out.push((b.wqkv, b.wqkv + 3 * d * d));
            out.push((b.wo, b.wo + d * d));
            out.push((b.w1, b.w1 + d * f));
            out.push((b.w2, b.w2 + f * d));
        }
        out
    }
}

/// Slice `start..start + len` of `w`, or an internal error.
fn part(w: &[f32], start: usize, len: usize) -> Result<&[f32], ModelError> {
    w.get(start..start + len)
        .ok_or_else(|| shape_error("parameter"))
}

/// Mutable slice `start..start + len` of `w`, or an internal error.
fn part_mut(w: &mut [f32], start: usize, len: usize) -> Result<&mut [f32], ModelError> {
    w.get_mut(start..start + len)
        .ok_or_else(|| shape_error("gradient"))
}

/// `c = op(a) op(b) + beta c` with `op(a)` `m x k` (stored `k x m` when `ta`) and `op(b)`
/// `k x n` (stored `n x k` when `tb`), all row-major.
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm(
    ta: bool,
    tb: bool,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    beta: f32,
    c: &mut [f32],
) -> Result<(), ModelError> {
    let a = a.get(..m * k).ok_or_else(|| shape_error("gemm a"))?;
    let b = b.get(..k * n).ok_or_else(|| shape_error("gemm b"))?;
    let c = c.get_mut(..m * n).ok_or_else(|| shape_error("gemm c"))?;
    let av = if ta {
        ArrayView2::from_shape((k, m), a).map(|v| v.reversed_axes())
    } else {
        ArrayView2::from_shape((m, k), a)
    }
    .map_err(|_| shape_error("gemm a view"))?;
    let bv = if tb {
        ArrayView2::from_shape((n, k), b).map(|v| v.reversed_axes())
    } else {
        ArrayView2::from_shape((k, n), b)
    }
    .map_err(|_| shape_error("gemm b view"))?;
    let mut cv = ArrayViewMut2::from_shape((m, n), c).map_err(|_| shape_error("gemm c view"))?;
    general_mat_mul(1.0, &av, &bv, beta, &mut cv);
    Ok(())
}

/// `y += alpha x`.
#[inline]
fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// Every row of `x` (`cols` wide) set to `bias`.
fn fill_rows(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len().max(1)) {
        row.copy_from_slice(bias);
    }
}

/// `out += column sums of x` (`out.len()` columns).
fn add_colsum(x: &[f32], out: &mut [f32]) {
    for row in x.chunks_exact(out.len().max(1)) {
        for (o, v) in out.iter_mut().zip(row) {
            *o += v;
        }
    }
}

fn mul_in_place(x: &mut [f32], mask: &[f32]) {
    for (a, m) in x.iter_mut().zip(mask) {
        *a *= m;
    }
}

/// Row-wise layer norm of `x` (`d` wide): `y = g * xhat + b`, keeping `xhat` and `1/std`.
fn layer_norm(x: &[f32], gb: &[f32], d: usize, xhat: &mut [f32], rstd: &mut [f32], y: &mut [f32]) {
    let (g, b) = gb.split_at(d);
    for (((xr, hr), yr), rs) in x
        .chunks_exact(d)
        .zip(xhat.chunks_exact_mut(d))
        .zip(y.chunks_exact_mut(d))
        .zip(rstd.iter_mut())
    {
        let mean = xr.iter().sum::<f32>() / d as f32;
        let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
        let r = 1.0 / (var + LN_EPS).sqrt();
        *rs = r;
        for k in 0..d {
            let h = (xr[k] - mean) * r;
            hr[k] = h;
            yr[k] = h * g[k] + b[k];
        }
    }
}

/// Backward of [`layer_norm`]: `dx += dL/dx`, `dgb += (dL/dg, dL/db)`.
fn layer_norm_backward(
    dy: &[f32],
    xhat: &[f32],
    rstd: &[f32],
    g: &[f32],
    d: usize,
    dx: &mut [f32],
    dgb: &mut [f32],
) {
    let (dg, db) = dgb.split_at_mut(d);
    for (((dyr, hr), dxr), &r) in dy
        .chunks_exact(d)
        .zip(xhat.chunks_exact(d))
        .zip(dx.chunks_exact_mut(d))
        .zip(rstd)
    {
        let mut mean_dh = 0f32;
        let mut mean_dhh = 0f32;
        for k in 0..d {
            let dh = dyr[k] * g[k];
            mean_dh += dh;
            mean_dhh += dh * hr[k];
            dg[k] += dyr[k] * hr[k];
            db[k] += dyr[k];
        }
        mean_dh /= d as f32;
        mean_dhh /= d as f32;
        for k in 0..d {
            let dh = dyr[k] * g[k];
            dxr[k] += r * (dh - mean_dh - hr[k] * mean_dhh);
        }
    }
}

/// A packed batch: the input items of several sequences back to back.
#[derive(Clone, Debug, Default)]
pub(super) struct Batch {
    /// Input item of every row.
    pub items: Vec<u32>,
    /// Window position of every row (`< max_len`).
    pub pos: Vec<u32>,
    /// Next item of every row (training only).
    pub targets: Vec<u32>,
    /// `(first row, length)` of every sequence.
    pub segs: Vec<(usize, usize)>,
    /// A stable id per sequence that seeds its dropout masks.
    pub seq_ids: Vec<u64>,
}

impl Batch {
    pub fn clear(&mut self) {
        self.items.clear();
        self.pos.clear();
        self.targets.clear();
        self.segs.clear();
        self.seq_ids.clear();
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.items.len()
    }

    /// Appends one sequence (at most `max_len` items, the caller truncates) with its targets
    /// (same length) or none.
    pub fn push(&mut self, inputs: &[u32], targets: Option<&[u32]>, max_len: usize, id: u64) {
        let n = inputs.len().min(max_len);
        let inputs = &inputs[inputs.len() - n..];
        self.segs.push((self.items.len(), n));
        self.seq_ids.push(id);
        self.items.extend_from_slice(inputs);
        self.pos.extend((0..n).map(|t| (max_len - n + t) as u32));
        if let Some(t) = targets {
            self.targets
                .extend_from_slice(&t[t.len() - n.min(t.len())..]);
        }
    }
}

/// Dropout for one forward pass: the drop rate and the seed of this step's masks.
#[derive(Clone, Copy, Debug)]
pub(super) struct Dropout {
    pub rate: f32,
    pub seed: u64,
}

/// Activations of one block kept for the backward pass.
#[derive(Clone, Debug, Default)]
struct BlockWork {
    ln1_xhat: Vec<f32>,
    ln1_rstd: Vec<f32>,
    a: Vec<f32>,
    qkv: Vec<f32>,
    probs: Vec<f32>,
    o: Vec<f32>,
    h_mid: Vec<f32>,
    ln2_xhat: Vec<f32>,
    ln2_rstd: Vec<f32>,
    f: Vec<f32>,
    u: Vec<f32>,
    rd: Vec<f32>,
    m1: Vec<f32>,
    m2: Vec<f32>,
    m3: Vec<f32>,
}

/// Reusable buffers of one worker: activations, dropout masks and backward scratch. They
/// grow to the largest batch seen and are then reused without allocating.
#[derive(Clone, Debug, Default)]
pub(super) struct Work {
    /// Residual streams: `h[0]` the (dropped) input, `h[b + 1]` the output of block `b`.
    h: Vec<Vec<f32>>,
    m0: Vec<f32>,
    blk: Vec<BlockWork>,
    /// Offset of every sequence's attention matrices in `probs`.
    prob_off: Vec<usize>,
    lnf_xhat: Vec<f32>,
    lnf_rstd: Vec<f32>,
    /// Encoder output, `N x d`.
    pub out: Vec<f32>,
    dres: Vec<f32>,
    dtmp: Vec<f32>,
    dout: Vec<f32>,
    dqkv: Vec<f32>,
    dff: Vec<f32>,
    dp: Vec<f32>,
    neg_emb: Vec<f32>,
    logits: Vec<f32>,
}

/// Zeroes `v` at length `len`.
fn sized(v: &mut Vec<f32>, len: usize) {
    v.clear();
    v.resize(len, 0.0);
}

/// Gives `v` length `len` without clearing it: for buffers the next pass overwrites.
fn fit_len(v: &mut Vec<f32>, len: usize) {
    v.resize(len, 0.0);
}

/// Fills `mask` rows `start..start + len` (`cols` wide) with `0` or `1 / (1 - rate)`.
fn fill_mask(mask: &mut [f32], rows: (usize, usize), cols: usize, rate: f32, rng: &mut SplitMix64) {
    let keep = 1.0 / (1.0 - rate);
    let threshold = (f64::from(rate) * 65536.0) as u64;
    let slice = &mut mask[rows.0 * cols..(rows.0 + rows.1) * cols];
    for chunk in slice.chunks_mut(4) {
        let bits = rng.next_u64();
        for (k, m) in chunk.iter_mut().enumerate() {
            let r = (bits >> (16 * k)) & 0xffff;
            *m = if r < threshold { 0.0 } else { keep };
        }
    }
}

/// Mixes a step seed with a sequence id into the seed of that sequence's masks.
fn mask_seed(seed: u64, id: u64) -> u64 {
    SplitMix64::new(seed ^ id.wrapping_mul(0xD1B5_4A32_D192_ED03)).next_u64()
}

impl Work {
    fn prepare(&mut self, lay: &Layout, batch: &Batch, dropout: Option<Dropout>) {
        let d = lay.dims.dim;
        let f = lay.dims.ffn;
        let n = batch.rows();
        let blocks = lay.dims.blocks;
        self.h.resize_with(blocks + 1, Vec::new);
        for h in &mut self.h {
            fit_len(h, n * d);
        }
        self.blk.resize_with(blocks, BlockWork::default);
        self.prob_off.clear();
        let mut total = 0usize;
        for &(_, len) in &batch.segs {
            self.prob_off.push(total);
            total += lay.dims.heads * len * len;
        }
        for bw in &mut self.blk {
            fit_len(&mut bw.ln1_xhat, n * d);
            fit_len(&mut bw.ln1_rstd, n);
            fit_len(&mut bw.a, n * d);
            fit_len(&mut bw.qkv, n * 3 * d);
            fit_len(&mut bw.probs, total);
            fit_len(&mut bw.o, n * d);
            fit_len(&mut bw.h_mid, n * d);
            fit_len(&mut bw.ln2_xhat, n * d);
            fit_len(&mut bw.ln2_rstd, n);
            fit_len(&mut bw.f, n * d);
            fit_len(&mut bw.u, n * f);
            fit_len(&mut bw.rd, n * f);
        }
        fit_len(&mut self.lnf_xhat, n * d);
        fit_len(&mut self.lnf_rstd, n);
        fit_len(&mut self.out, n * d);
        match dropout {
            Some(drop) if drop.rate > 0.0 => {
                fit_len(&mut self.m0, n * d);
                for bw in &mut self.blk {
                    fit_len(&mut bw.m1, n * d);
                    fit_len(&mut bw.m2, n * f);
                    fit_len(&mut bw.m3, n * d);
                }
                for (&seg, &id) in batch.segs.iter().zip(&batch.seq_ids) {
                    let mut rng = SplitMix64::new(mask_seed(drop.seed, id));
                    fill_mask(&mut self.m0, seg, d, drop.rate, &mut rng);
                    for bw in &mut self.blk {
                        fill_mask(&mut bw.m1, seg, d, drop.rate, &mut rng);
                        fill_mask(&mut bw.m2, seg, f, drop.rate, &mut rng);
                        fill_mask(&mut bw.m3, seg, d, drop.rate, &mut rng);
                    }
                }
            }
            _ => {
                self.m0.clear();
                for bw in &mut self.blk {
                    bw.m1.clear();
                    bw.m2.clear();
                    bw.m3.clear();
                }
            }
        }
    }

    /// The last block's attention weights of row `row` of sequence `seg` (all heads, all
    /// blocks averaged), over the sequence's rows.
    pub fn attention_of_last(&self, lay: &Layout, seg_index: usize, len: usize) -> Vec<f32> {
        let heads = lay.dims.heads;
        let mut out = vec![0f32; len];
        if len == 0 || self.blk.is_empty() {
            return out;
        }
        let Some(&off) = self.prob_off.get(seg_index) else {
            return out;
        };
        let scale = 1.0 / (heads * self.blk.len()) as f32;
        for bw in &self.blk {
            for h in 0..heads {
                let base = off + h * len * len + (len - 1) * len;
                if let Some(row) = bw.probs.get(base..base + len) {
                    axpy(scale, row, &mut out);
                }
            }
        }
        out
    }
}

/// The forward pass over a packed batch; the encoder output lands in `work.out`.
pub(super) fn forward(
    lay: &Layout,
    w: &[f32],
    batch: &Batch,
    dropout: Option<Dropout>,
    work: &mut Work,
) -> Result<(), ModelError> {
    let Dims {
        n_items,
        dim: d,
        max_len,
        heads,
        ffn: f,
        ..
    } = lay.dims;
    let n = batch.rows();
    work.prepare(lay, batch, dropout);
    let emb = part(w, lay.item, n_items * d)?;
    let pos = part(w, lay.pos, max_len * d)?;
    let scale = (d as f32).sqrt();
    let h0 = &mut work.h[0];
    for ((row, &it), &p) in h0.chunks_exact_mut(d).zip(&batch.items).zip(&batch.pos) {
        let (it, p) = (it as usize, p as usize);
        let e = emb
            .get(it * d..(it + 1) * d)
            .ok_or_else(|| shape_error("item id"))?;
        let pe = pos
            .get(p * d..(p + 1) * d)
            .ok_or_else(|| shape_error("position"))?;
        for k in 0..d {
            row[k] = e[k] * scale + pe[k];
        }
    }
    if !work.m0.is_empty() {
        mul_in_place(h0, &work.m0);
    }
    for (b, off) in lay.blocks.iter().enumerate() {
        let (done, rest) = work.h.split_at_mut(b + 1);
        let hin = &done[b];
        let hout = &mut rest[0];
        let bw = &mut work.blk[b];
        layer_norm(
            hin,
            part(w, off.ln1, 2 * d)?,
            d,
            &mut bw.ln1_xhat,
            &mut bw.ln1_rstd,
            &mut bw.a,
        );
        fill_rows(&mut bw.qkv, part(w, off.bqkv, 3 * d)?);
        gemm(
            false,
            false,
            n,
            3 * d,
            d,
            &bw.a,
            part(w, off.wqkv, 3 * d * d)?,
            1.0,
            &mut bw.qkv,
        )?;
        attention_forward(
            &bw.qkv,
            &batch.segs,
            &work.prob_off,
            heads,
            d,
            &mut bw.probs,
            &mut bw.o,
        );
        fill_rows(&mut bw.h_mid, part(w, off.bo, d)?);
        gemm(
            false,
            false,
            n,
            d,
            d,
            &bw.o,
            part(w, off.wo, d * d)?,
            1.0,
            &mut bw.h_mid,
        )?;
        if !bw.m1.is_empty() {
            mul_in_place(&mut bw.h_mid, &bw.m1);
        }
        axpy(1.0, hin, &mut bw.h_mid);
        layer_norm(
            &bw.h_mid,
            part(w, off.ln2, 2 * d)?,
            d,
            &mut bw.ln2_xhat,
            &mut bw.ln2_rstd,
            &mut bw.f,
        );
        fill_rows(&mut bw.u, part(w, off.b1, f)?);
        gemm(
            false,
            false,
            n,
            f,
            d,
            &bw.f,
            part(w, off.w1, d * f)?,
            1.0,
            &mut bw.u,
        )?;
        for (r, &u) in bw.rd.iter_mut().zip(&bw.u) {
            *r = u.max(0.0);
        }
        if !bw.m2.is_empty() {
            mul_in_place(&mut bw.rd, &bw.m2);
        }
        fill_rows(hout, part(w, off.b2, d)?);
        gemm(
            false,
            false,
            n,
            d,
            f,
            &bw.rd,
            part(w, off.w2, f * d)?,
            1.0,
            hout,
        )?;
        if !bw.m3.is_empty() {
            mul_in_place(hout, &bw.m3);
        }
        axpy(1.0, &bw.h_mid, hout);
    }
    let last = &work.h[lay.dims.blocks];
    layer_norm(
        last,
        part(w, lay.lnf, 2 * d)?,
        d,
        &mut work.lnf_xhat,
        &mut work.lnf_rstd,
        &mut work.out,
    );
    Ok(())
}

/// Causal self-attention within every segment: `probs` gets each head's `len x len` softmax
/// matrix (zeros above the diagonal), `o` the heads' outputs side by side.
fn attention_forward(
    qkv: &[f32],
    segs: &[(usize, usize)],
    prob_off: &[usize],
    heads: usize,
    d: usize,
    probs: &mut [f32],
    o: &mut [f32],
) {
    let dh = d / heads;
    let inv = 1.0 / (dh as f32).sqrt();
    let row3 = 3 * d;
    for (&(s0, len), &po) in segs.iter().zip(prob_off) {
        for h in 0..heads {
            let pm = &mut probs[po + h * len * len..po + (h + 1) * len * len];
            for i in 0..len {
                let q = &qkv[(s0 + i) * row3 + h * dh..][..dh];
                let prow = &mut pm[i * len..(i + 1) * len];
                let mut max = f32::NEG_INFINITY;
                for j in 0..=i {
                    let k = &qkv[(s0 + j) * row3 + d + h * dh..][..dh];
                    let s = dot(q, k) * inv;
                    prow[j] = s;
                    max = max.max(s);
                }
                let mut sum = 0f32;
                for p in &mut prow[..=i] {
                    *p = (*p - max).exp();
                    sum += *p;
                }
                let norm = 1.0 / sum;
                let orow = &mut o[(s0 + i) * d + h * dh..][..dh];
                orow.iter_mut().for_each(|x| *x = 0.0);
                for j in 0..=i {
                    prow[j] *= norm;
                    let v = &qkv[(s0 + j) * row3 + 2 * d + h * dh..][..dh];
                    axpy(prow[j], v, orow);
                }
            }
        }
    }
}

/// Backward of [`attention_forward`]: `dqkv` (zeroed here) from `dout` (`N x d`).
#[allow(clippy::too_many_arguments)]
fn attention_backward(
    qkv: &[f32],
    probs: &[f32],
    dout: &[f32],
    segs: &[(usize, usize)],
    prob_off: &[usize],
    heads: usize,
    d: usize,
    dqkv: &mut [f32],
    dp: &mut Vec<f32>,
) {
    let dh = d / heads;
    let inv = 1.0 / (dh as f32).sqrt();
    let row3 = 3 * d;
    dqkv.iter_mut().for_each(|x| *x = 0.0);
    for (&(s0, len), &po) in segs.iter().zip(prob_off) {
        fit_len(dp, len);
        for h in 0..heads {
            let pm = &probs[po + h * len * len..po + (h + 1) * len * len];
            for i in 0..len {
                let prow = &pm[i * len..(i + 1) * len];
                let doi = &dout[(s0 + i) * d + h * dh..][..dh];
                let mut rowdot = 0f32;
                for j in 0..=i {
                    let v = &qkv[(s0 + j) * row3 + 2 * d + h * dh..][..dh];
                    dp[j] = dot(doi, v);
                    rowdot += prow[j] * dp[j];
                }
                let qo = (s0 + i) * row3 + h * dh;
                for j in 0..=i {
                    let p = prow[j];
                    let ko = (s0 + j) * row3 + d + h * dh;
                    let vo = ko + d;
                    let ds = p * (dp[j] - rowdot) * inv;
                    for k in 0..dh {
                        dqkv[vo + k] += p * doi[k];
                        dqkv[qo + k] += ds * qkv[ko + k];
                        dqkv[ko + k] += ds * qkv[qo + k];
                    }
                }
            }
        }
    }
}

/// Lanes of the vectorised reductions.
const LANES: usize = 8;

/// Maximum of `x` (`-inf` when empty), in independent lanes so that it vectorises.
fn row_max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..LANES {
            acc[k] = acc[k].max(c[k]);
        }
    }
    let mut m = rest.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    for a in acc {
        m = m.max(a);
    }
    m
}

/// Sum of `x` in independent lanes (vectorises; the order is fixed, so it is deterministic).
fn lane_sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..LANES {
            acc[k] += c[k];
        }
    }
    let tail: f32 = rest.iter().sum();
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// `x[i] = exp(x[i] - shift)` for every entry, with a branch-free exponential the compiler
/// vectorises (the scalar `expf` call was a tenth of a training step with 1024 negatives).
pub(super) fn exp_shifted(x: &mut [f32], shift: f32) {
    for v in x.iter_mut() {
        *v = fast_exp(*v - shift);
    }
}

/// Sampled softmax over the next item at every row of the batch: the target against the
/// shared negatives `negs` (a negative equal to the target is masked out). Returns the summed
/// loss; leaves `dL/dout` (scaled by `inv_total`) in the work buffers for [`backward`] and adds
/// the output side of the item-embedding gradient into `grad`.
pub(super) fn sampled_softmax(
    lay: &Layout,
    w: &[f32],
    batch: &Batch,
    negs: &[u32],
    inv_total: f32,
    work: &mut Work,
    grad: &mut [f32],
) -> Result<f64, ModelError> {
    let d = lay.dims.dim;
    let n_items = lay.dims.n_items;
    let n = batch.rows();
    let s = negs.len();
    if batch.targets.len() != n {
        return Err(shape_error("targets"));
    }
    let emb = part(w, lay.item, n_items * d)?;
    let row_of = |it: u32| {
        let it = it as usize;
        emb.get(it * d..(it + 1) * d)
            .ok_or_else(|| shape_error("item id"))
    };
    fit_len(&mut work.neg_emb, s * d);
    for (dst, &j) in work.neg_emb.chunks_exact_mut(d).zip(negs) {
        dst.copy_from_slice(row_of(j)?);
    }
    fit_len(&mut work.logits, n * s);
    gemm(
        false,
        true,
        n,
        s,
        d,
        &work.out,
        &work.neg_emb,
        0.0,
        &mut work.logits,
    )?;
    sized(&mut work.dout, n * d);
    let mut loss = 0f64;
    let gitem = part_mut(grad, lay.item, n_items * d)?;
    for (i, &t) in batch.targets.iter().enumerate() {
        let out = &work.out[i * d..(i + 1) * d];
        let te = row_of(t)?;
        let pos = dot(out, te);
        let lrow = &mut work.logits[i * s..(i + 1) * s];
        let max = row_max(lrow).max(pos);
        let mut sum = (pos - max).exp();
        exp_shifted(lrow, max);
        // A negative that is the target itself is not a negative: it gets no probability.
        for (l, &j) in lrow.iter_mut().zip(negs) {
            if j == t {
                *l = 0.0;
            }
        }
        sum += lane_sum(lrow);
        loss += f64::from(sum.ln() + max - pos);
        let norm = inv_total / sum;
        lrow.iter_mut().for_each(|l| *l *= norm);
        let dpos = (pos - max).exp() * norm - inv_total;
        let dout = &mut work.dout[i * d..(i + 1) * d];
        axpy(dpos, te, dout);
        let t = t as usize;
        axpy(dpos, out, &mut gitem[t * d..(t + 1) * d]);
    }
    if !loss.is_finite() {
        return Err(ModelError::Numerical("non-finite training loss".into()));
    }
    gemm(
        false,
        false,
        n,
        d,
        s,
        &work.logits,
        &work.neg_emb,
        1.0,
        &mut work.dout,
    )?;
    // dL/dE[neg] = dlogits^T out, reusing the gathered rows as scratch.
    gemm(
        true,
        false,
        s,
        d,
        n,
        &work.logits,
        &work.out,
        0.0,
        &mut work.neg_emb,
    )?;
    for (src, &j) in work.neg_emb.chunks_exact(d).zip(negs) {
        let j = j as usize;
        axpy(1.0, src, &mut gitem[j * d..(j + 1) * d]);
    }
    Ok(loss)
}

/// The backward pass from `dL/dout` (left by [`sampled_softmax`]): adds every parameter's
/// gradient into `grad`.
pub(super) fn backward(
    lay: &Layout,
    w: &[f32],
    batch: &Batch,
    work: &mut Work,
    grad: &mut [f32],
) -> Result<(), ModelError> {
    let Dims {
        n_items,
        dim: d,
        max_len,
        heads,
        ffn: f,
        ..
    } = lay.dims;
    let n = batch.rows();
    sized(&mut work.dres, n * d);
    layer_norm_backward(
        &work.dout,
        &work.lnf_xhat,
        &work.lnf_rstd,
        part(w, lay.lnf, d)?,
        d,
        &mut work.dres,
        part_mut(grad, lay.lnf, 2 * d)?,
    );
    fit_len(&mut work.dtmp, n * d);
    fit_len(&mut work.dff, n * f);
    fit_len(&mut work.dqkv, n * 3 * d);
    for (b, off) in lay.blocks.iter().enumerate().rev() {
        let bw = &work.blk[b];
        // Feed-forward: hout = h_mid + m3 * (rd W2 + b2).
        work.dtmp.copy_from_slice(&work.dres);
        if !bw.m3.is_empty() {
            mul_in_place(&mut work.dtmp, &bw.m3);
        }
        add_colsum(&work.dtmp, part_mut(grad, off.b2, d)?);
        gemm(
            true,
            false,
            f,
            d,
            n,
            &bw.rd,
            &work.dtmp,
            1.0,
            part_mut(grad, off.w2, f * d)?,
        )?;
        gemm(
            false,
            true,
            n,
            f,
            d,
            &work.dtmp,
            part(w, off.w2, f * d)?,
            0.0,
            &mut work.dff,
        )?;
        if !bw.m2.is_empty() {
            mul_in_place(&mut work.dff, &bw.m2);
        }
        for (g, &u) in work.dff.iter_mut().zip(&bw.u) {
            if u <= 0.0 {
                *g = 0.0;
            }
        }
        add_colsum(&work.dff, part_mut(grad, off.b1, f)?);
        gemm(
            true,
            false,
            d,
            f,
            n,
            &bw.f,
            &work.dff,
            1.0,
            part_mut(grad, off.w1, d * f)?,
        )?;
        gemm(
            false,
            true,
            n,
            d,
            f,
            &work.dff,
            part(w, off.w1, d * f)?,
            0.0,
            &mut work.dtmp,
        )?;
        layer_norm_backward(
            &work.dtmp,
            &bw.ln2_xhat,
            &bw.ln2_rstd,
            part(w, off.ln2, d)?,
            d,
            &mut work.dres,
            part_mut(grad, off.ln2, 2 * d)?,
        );
        // Attention: h_mid = hin + m1 * (o Wo + bo).
        work.dtmp.copy_from_slice(&work.dres);
        if !bw.m1.is_empty() {
            mul_in_place(&mut work.dtmp, &bw.m1);
        }
        add_colsum(&work.dtmp, part_mut(grad, off.bo, d)?);
        gemm(
            true,
            false,
            d,
            d,
            n,
            &bw.o,
            &work.dtmp,
            1.0,
            part_mut(grad, off.wo, d * d)?,
        )?;
        // dL/do reuses `dout`, free since the final layer norm's backward.
        gemm(
            false,
            true,
            n,
            d,
            d,
            &work.dtmp,
            part(w, off.wo, d * d)?,
            0.0,
            &mut work.dout,
        )?;
        attention_backward(
            &bw.qkv,
            &bw.probs,
            &work.dout,
            &batch.segs,
            &work.prob_off,
            heads,
            d,
            &mut work.dqkv,
            &mut work.dp,
        );
        add_colsum(&work.dqkv, part_mut(grad, off.bqkv, 3 * d)?);
        gemm(
            true,
            false,
            d,
            3 * d,
            n,
            &bw.a,
            &work.dqkv,
            1.0,
            part_mut(grad, off.wqkv, 3 * d * d)?,
        )?;
        gemm(
            false,
            true,
            n,
            d,
            3 * d,
            &work.dqkv,
            part(w, off.wqkv, 3 * d * d)?,
            0.0,
            &mut work.dtmp,
        )?;
        layer_norm_backward(
            &work.dtmp,
            &bw.ln1_xhat,
            &bw.ln1_rstd,
            part(w, off.ln1, d)?,
            d,
            &mut work.dres,
            part_mut(grad, off.ln1, 2 * d)?,
        );
    }
    if !work.m0.is_empty() {
        mul_in_place(&mut work.dres, &work.m0);
    }
    let scale = (d as f32).sqrt();
    {
        let gitem = part_mut(grad, lay.item, n_items * d)?;
        for (row, &it) in work.dres.chunks_exact(d).zip(&batch.items) {
            let it = it as usize;
            let dst = gitem
                .get_mut(it * d..(it + 1) * d)
                .ok_or_else(|| shape_error("item id"))?;
            axpy(scale, row, dst);
        }
    }
    let gpos = part_mut(grad, lay.pos, max_len * d)?;
    for (row, &p) in work.dres.chunks_exact(d).zip(&batch.pos) {
        let p = p as usize;
        let dst = gpos
            .get_mut(p * d..(p + 1) * d)
            .ok_or_else(|| shape_error("position"))?;
        axpy(1.0, row, dst);
    }
    Ok(())
}
