//! Implicit-feedback matrix factorisation: alternating least squares with a conjugate-gradient
//! inner solver (Hu, Koren and Volinsky 2008; Takács et al. 2011), as in the `implicit`
//! library's CPU solver.
//!
//! Each observed `(u, i)` with summed weight `w` has preference `p = 1` (for `w > 0`; `p = 0`
//! for negative feedback `w < 0`) and confidence `c = 1 + alpha · |w|`; every unobserved cell
//! has `p = 0, c = 1`. One ALS sweep solves, for every user,
//! `(YᵀY + λI + Yᵀ(C_u − I)Y) x_u = Yᵀ C_u p_u`, then the same for items. The solve is
//! warm-started from the previous factor and runs `cg_steps` conjugate-gradient steps without
//! ever forming `Yᵀ C_u Y`: each step costs one `dim x dim` product with the shared Gram matrix
//! plus two `dim`-vector operations per observed item. Users (then items) are solved in
//! parallel with rayon.
//!
//! Users unseen at training time are handled by [`Mf::fold_in`], an exact solve of the same
//! normal equations (Cholesky, `O(dim³ + |history| · dim²)`).

use super::linalg::{self, cholesky_solve, Avx2Fma, Kernels, Portable};
use super::{check_param, Csr, Interactions, ModelError, SplitMix64};
use ndarray::ArrayView2;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Hyper-parameters of [`Mf`].
///
/// Defaults: 64 factors, `regularization = 20`, `alpha = 1`, 15 iterations, 3 CG steps, seed 42,
/// initial factors uniform in `±init_scale/2` with `init_scale = 0.01`. The regularisation and
/// alpha are the values tuned on the MovieLens-100K validation split (see `models/tests.rs`,
/// `ml100k_tune_mf`); they are data dependent and worth re-tuning.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MfParams {
    /// Latent dimension (>= 1).
    pub factors: usize,
    /// L2 regularisation `λ` added to the diagonal (>= 0).
    pub regularization: f32,
    /// Confidence slope: `c = 1 + alpha · |w|` (>= 0).
    pub alpha: f32,
    /// ALS sweeps (each solves all users, then all items).
    pub iterations: usize,
    /// Conjugate-gradient steps per solve (>= 1; 3 is the `implicit` default).
    pub cg_steps: usize,
    /// Seed of the factor initialisation.
    pub seed: u64,
    /// Width of the uniform initialisation.
    pub init_scale: f32,
}

impl Default for MfParams {
    fn default() -> Self {
        MfParams {
            factors: 64,
            regularization: 20.0,
            alpha: 1.0,
            iterations: 15,
            cg_steps: 3,
            seed: 42,
            init_scale: 0.01,
        }
    }
}

impl MfParams {
    fn validate(&self) -> Result<(), ModelError> {
        if self.factors == 0 {
            return Err(ModelError::InvalidParam {
                name: "factors",
                reason: "must be >= 1".into(),
            });
        }
        if self.cg_steps == 0 {
            return Err(ModelError::InvalidParam {
                name: "cg_steps",
                reason: "must be >= 1".into(),
            });
        }
        check_param("regularization", self.regularization, 0.0)?;
        check_param("alpha", self.alpha, 0.0)?;
        check_param("init_scale", self.init_scale, 0.0)
    }
}

/// A fitted implicit ALS model: user and item factors, row-major.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Mf {
    n_users: usize,
    n_items: usize,
    dim: usize,
    params: MfParams,
    user_factors: Vec<f32>,
    item_factors: Vec<f32>,
    /// `YᵀY` (no regularisation), row-major `dim x dim`, kept for fold-in.
    item_gram: Vec<f32>,
    /// The Cholesky factor of `YᵀY + λI` (lower triangle, `f64`), made by the first fold-in
    /// of a short history ([`Mf::prior`]); `None` when that matrix is singular.
    #[serde(skip)]
    prior: std::sync::OnceLock<Option<Vec<f64>>>,
}

/// One side of the sparse problem: for row `r`, the other side's ids, `c − 1` and `c · p`.
struct Side {
    csr: Csr,
    /// `c − 1 = alpha · |w|`, parallel to `csr.indices`.
    cm1: Vec<f32>,
    /// `c · p` (0 for negative feedback), parallel to `csr.indices`.
    cp: Vec<f32>,
}

impl Side {
    fn new(csr: Csr, alpha: f32) -> Side {
        let cm1 = csr.values.iter().map(|w| alpha * w.abs()).collect();
        let cp = csr
            .values
            .iter()
            .map(|&w| if w > 0.0 { 1.0 + alpha * w } else { 0.0 })
            .collect();
        Side { csr, cm1, cp }
    }
}

impl Mf {
    /// Fits user and item factors with `iterations` ALS-CG sweeps.
    ///
    /// # Errors
    /// [`ModelError::InvalidParam`] for bad parameters, [`ModelError::NonFinite`] if the factors
    /// diverge, and the errors of [`Interactions::validate`].
    pub fn fit(data: &Interactions, params: &MfParams) -> Result<Self, ModelError> {
        params.validate()?;
        let dim = params.factors;
        let ui = data.user_item_csr()?;
        let iu = ui.transpose();
        let users = Side::new(ui, params.alpha);
        let items = Side::new(iu, params.alpha);
        let mut rng = SplitMix64::new(params.seed);
        let mut init = |n: usize| -> Vec<f32> {
            (0..n * dim)
                .map(|_| ((rng.next_f64() - 0.5) * f64::from(params.init_scale)) as f32)
                .collect()
        };
        let mut x = init(data.n_users);
        let mut y = init(data.n_items);
        for _ in 0..params.iterations {
            let gy = gram(&y, dim, params.regularization)?;
            solve_side(&mut x, &y, &gy, &users, dim, params.cg_steps);
            let gx = gram(&x, dim, params.regularization)?;
            solve_side(&mut y, &x, &gx, &items, dim, params.cg_steps);
        }
        if x.iter().chain(&y).any(|v| !v.is_finite()) {
            return Err(ModelError::NonFinite { what: "factors" });
        }
        let item_gram = gram(&y, dim, 0.0)?;
        Ok(Mf {
            n_users: data.n_users,
            n_items: data.n_items,
            dim,
            params: *params,
            user_factors: x,
            item_factors: y,
            item_gram,
            prior: std::sync::OnceLock::new(),
        })
    }

    /// A model from factors fitted elsewhere (`users[u]`, `items[i]` by internal id, each
    /// `params.factors` long when present). An item without a factor gets the zero vector
    /// (never recommended by this model); a user without one is folded in from
    /// `history(u)` against the given item factors ([`Mf::fold_in`] with `params`), as a
    /// user newer than a model is (one without a history keeps the zero vector). Returns
    /// the model and how many users were folded in.
    ///
    /// # Errors
    /// [`ModelError::InvalidParam`] for bad parameters, [`ModelError::LengthMismatch`] for a
    /// factor of another length, [`ModelError::NonFinite`] for a NaN or infinite value.
    pub fn from_factors(
        params: &MfParams,
        users: &[Option<&[f32]>],
        items: &[Option<&[f32]>],
        history: impl Fn(u32) -> Vec<(u32, f32)>,
    ) -> Result<(Self, usize), ModelError> {
        params.validate()?;
        let dim = params.factors;
        let flatten = |rows: &[Option<&[f32]>], what: &'static str| {
            let mut out = vec![0f32; rows.len() * dim];
            for (row, f) in out.chunks_exact_mut(dim).zip(rows) {
                if let Some(f) = f {
                    if f.len() != dim {
                        return Err(ModelError::LengthMismatch {
                            what,
                            expected: dim,
                            got: f.len(),
                        });
                    }
                    if f.iter().any(|v| !v.is_finite()) {
                        return Err(ModelError::NonFinite { what });
                    }
                    row.copy_from_slice(f);
                }
            }
            Ok(out)
        };
        let item_factors = flatten(items, "item factor")?;
        let user_factors = flatten(users, "user factor")?;
        let item_gram = gram(&item_factors, dim, 0.0)?;
        let mut mf = Mf {
            n_users: users.len(),
            n_items: items.len(),
            dim,
            params: *params,
            user_factors,
            item_factors,
            item_gram,
            prior: std::sync::OnceLock::new(),
        };
        let mut folded = 0;
        for (u, f) in users.iter().enumerate() {
            if f.is_some() {
                continue;
            }
            let h = history(u as u32);
            if h.is_empty() {
                continue; // nothing to fold in: the zero vector, as for a new shopper
            }
            let x = mf.fold_in(&h)?;
            if x.iter().any(|v| !v.is_finite()) {
                return Err(ModelError::NonFinite {
                    what: "folded-in user factor",
                });
            }
            mf.user_factors[u * dim..(u + 1) * dim].copy_from_slice(&x);
            folded += 1;
        }
        Ok((mf, folded))
    }

    /// Latent dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of items (the required score-buffer length).
    pub fn n_items(&self) -> usize {
        self.n_items
    }

    /// Number of training users.
    pub fn n_users(&self) -> usize {
        self.n_users
    }

    /// The parameters used to fit.
    pub fn params(&self) -> &MfParams {
        &self.params
    }

    /// All user factors, row-major `n_users x dim`.
    pub fn user_factors(&self) -> &[f32] {
        &self.user_factors
    }

    /// All item factors, row-major `n_items x dim`.
    pub fn item_factors(&self) -> &[f32] {
        &self.item_factors
    }

    /// The factor of one user, if known.
    pub fn user_vector(&self, user: u32) -> Option<&[f32]> {
        let a = (user as usize).checked_mul(self.dim)?;
        self.user_factors.get(a..a + self.dim)
    }

    /// The factor of one item, if known.
    pub fn item_vector(&self, item: u32) -> Option<&[f32]> {
        let a = (item as usize).checked_mul(self.dim)?;
        self.item_factors.get(a..a + self.dim)
    }

    /// Scores every item for a training user: `scores[j] = x_u · y_j`.
    ///
    /// # Errors
    /// [`ModelError::IdOutOfRange`] for an unknown user, [`ModelError::LengthMismatch`] when
    /// `scores.len() != n_items`.
    pub fn score_user(&self, user: u32, scores: &mut [f32]) -> Result<(), ModelError> {
        let x = self.user_vector(user).ok_or(ModelError::IdOutOfRange {
            kind: "user",
            id: u64::from(user),
            len: self.n_users,
        })?;
        self.score_vector(x, scores)
    }

    /// Scores every item for an arbitrary user vector (e.g. from [`Mf::fold_in`]).
    ///
    /// # Errors
    /// [`ModelError::LengthMismatch`] when `vector.len() != dim` or `scores.len() != n_items`.
    pub fn score_vector(&self, vector: &[f32], scores: &mut [f32]) -> Result<(), ModelError> {
        linalg::score_rows(
            &self.item_factors,
            vector,
            self.dim,
            scores,
            self.n_items,
            "user vector",
        )
    }

    /// Solves a user factor from a history of `(item, weight)` for a user not in training
    /// (exact least squares on the same objective, item factors fixed). Duplicate items add up;
    /// unknown items are skipped; an empty history gives the zero vector.
    ///
    /// # Errors
    /// [`ModelError::Numerical`] if the system is singular (only possible with
    /// `regularization = 0`).
    pub fn fold_in(&self, history: &[(u32, f32)]) -> Result<Vec<f32>, ModelError> {
        let d = self.dim;
        let mut h: Vec<(u32, f32)> = history
            .iter()
            .copied()
            .filter(|&(i, w)| (i as usize) < self.n_items && w.is_finite() && w != 0.0)
            .collect();
        h.sort_unstable_by_key(|e| e.0);
        let mut merged: Vec<(u32, f32)> = Vec::with_capacity(h.len());
        for (i, w) in h {
            match merged.last_mut() {
                Some(last) if last.0 == i => last.1 += w,
                _ => merged.push((i, w)),
            }
        }
        if merged.is_empty() {
            return Ok(vec![0.0; d]);
        }
        // `b = Σ c·p·y`, and the history's rank-one terms `(c − 1) y yᵀ` of the matrix.
        let mut b = vec![0f64; d];
        let mut terms: Vec<(f64, &[f32])> = Vec::with_capacity(merged.len());
        for &(i, w) in &merged {
            let Some(y) = self.item_vector(i) else {
                continue;
            };
            let cm1 = f64::from(self.params.alpha * w.abs());
            let cp = if w > 0.0 {
                1.0 + f64::from(self.params.alpha * w)
            } else {
                0.0
            };
            for (br, &yr) in b.iter_mut().zip(y) {
                *br += cp * f64::from(yr);
            }
            terms.push((cm1, y));
        }
        // A history shorter than half the dimension: the Woodbury identity on the cached
        // factor of `YᵀY + λI`, `O(n d²)` instead of the `O(d³)` factorisation below (an
        // item-to-item query folds in one item: 256 factors took 2 ms).
        if 2 * terms.len() < d {
            if let Some(x) = self.prior().and_then(|l| woodbury(l, &terms, b.clone())) {
                return Ok(x);
            }
        }
        let mut a: Vec<f64> = self.item_gram.iter().map(|&v| f64::from(v)).collect();
        for k in 0..d {
            a[k * d + k] += f64::from(self.params.regularization);
        }
        for (cm1, y) in &terms {
            for (r, &yr) in y.iter().enumerate() {
                let yr = f64::from(yr);
                let row = &mut a[r * d..(r + 1) * d];
                for (cell, &yc) in row.iter_mut().zip(*y) {
                    *cell += cm1 * yr * f64::from(yc);
                }
            }
        }
        let x = cholesky_solve(&mut a, &b)?;
        Ok(x.into_iter().map(|v| v as f32).collect())
    }

    /// The Cholesky factor of `YᵀY + λI`, made once; `None` when it is singular (only
    /// possible with `regularization = 0`).
    fn prior(&self) -> Option<&[f64]> {
        self.prior
            .get_or_init(|| {
                let d = self.dim;
                let mut a: Vec<f64> = self.item_gram.iter().map(|&v| f64::from(v)).collect();
                for k in 0..d {
                    a[k * d + k] += f64::from(self.params.regularization);
                }
                linalg::cholesky_factor(&mut a, d).ok().map(|()| a)
            })
            .as_deref()
    }

    /// Scores every item for a history: [`Mf::fold_in`] then [`Mf::score_vector`].
    ///
    /// # Errors
    /// As [`Mf::fold_in`] and [`Mf::score_vector`].
    pub fn score_history(
        &self,
        history: &[(u32, f32)],
        scores: &mut [f32],
    ) -> Result<(), ModelError> {
        let x = self.fold_in(history)?;
        self.score_vector(&x, scores)
    }
}

/// `(A + Σ c_i y_i y_iᵀ)⁻¹ b` from the Cholesky factor `l` of `A` (`b.len()` rows) and the
/// terms `(c_i, y_i)`, by the Woodbury identity: with `u_i = √c_i y_i` and `Z = A⁻¹ U`,
/// the solution is `A⁻¹ b − Z (I + Uᵀ Z)⁻¹ Uᵀ A⁻¹ b`. `None` if the small system is not
/// positive definite in floating point (the caller then solves directly).
fn woodbury(l: &[f64], terms: &[(f64, &[f32])], mut b: Vec<f64>) -> Option<Vec<f32>> {
    let n = terms.len();
    let dot = |a: &[f64], b: &[f64]| -> f64 { a.iter().zip(b).map(|(x, y)| x * y).sum() };
    let us: Vec<Vec<f64>> = terms
        .iter()
        .map(|(c, y)| {
            let s = c.sqrt();
            y.iter().map(|v| s * f64::from(*v)).collect()
        })
        .collect();
    linalg::cholesky_apply(l, &mut b);
    let zs: Vec<Vec<f64>> = us
        .iter()
        .map(|u| {
            let mut z = u.clone();
            linalg::cholesky_apply(l, &mut z);
            z
        })
        .collect();
    let mut small = vec![0f64; n * n];
    for (i, u) in us.iter().enumerate() {
        for (j, z) in zs.iter().enumerate() {
            small[i * n + j] = dot(u, z) + if i == j { 1.0 } else { 0.0 };
        }
    }
    let t: Vec<f64> = us.iter().map(|u| dot(u, &b)).collect();
    let w = cholesky_solve(&mut small, &t).ok()?;
    for (wj, z) in w.iter().zip(&zs) {
        for (x, zv) in b.iter_mut().zip(z) {
            *x -= wj * zv;
        }
    }
    Some(b.into_iter().map(|v| v as f32).collect())
}

/// `FᵀF + reg · I` for row-major factors `f` (`n x dim`).
fn gram(f: &[f32], dim: usize, reg: f32) -> Result<Vec<f32>, ModelError> {
    let n = f.len() / dim.max(1);
    let view = ArrayView2::from_shape((n, dim), f)
        .map_err(|e| ModelError::Numerical(format!("factor shape: {e}")))?;
    let mut g = view.t().dot(&view);
    for k in 0..dim {
        g[[k, k]] += reg;
    }
    Ok(g.iter().copied().collect())
}

/// Per-thread scratch vectors of the CG solve.
struct Scratch {
    r: Vec<f32>,
    p: Vec<f32>,
    ap: Vec<f32>,
}

/// One observed row of the sparse problem.
struct RowView<'a> {
    cols: &'a [u32],
    cm1: &'a [f32],
    cp: &'a [f32],
}

/// One half-sweep: updates every row of `x` given the fixed factors `y` and `gram = YᵀY + λI`.
fn solve_side(x: &mut [f32], y: &[f32], gram: &[f32], side: &Side, dim: usize, steps: usize) {
    let simd = Avx2Fma::detect();
    x.par_chunks_mut(dim).enumerate().for_each_init(
        || Scratch {
            r: vec![0.0; dim],
            p: vec![0.0; dim],
            ap: vec![0.0; dim],
        },
        |s, (row, xu)| {
            let a = side.csr.indptr.get(row).copied().unwrap_or(0);
            let b = side.csr.indptr.get(row + 1).copied().unwrap_or(a);
            let view = RowView {
                cols: &side.csr.indices[a..b],
                cm1: &side.cm1[a..b],
                cp: &side.cp[a..b],
            };
            match simd {
                Some(k) => cg_solve_simd(k, xu, y, gram, &view, steps, s),
                None => cg_solve(Portable, xu, y, gram, &view, steps, s),
            }
        },
    );
}

/// [`cg_solve`] with the AVX2 + FMA kernels, compiled with those features so that they inline.
#[allow(clippy::too_many_arguments)]
fn cg_solve_simd(
    k: Avx2Fma,
    x: &mut [f32],
    y: &[f32],
    gram: &[f32],
    row: &RowView<'_>,
    steps: usize,
    s: &mut Scratch,
) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `k` proves the CPU has AVX2 and FMA.
        unsafe { cg_solve_avx2(k, x, y, gram, row, steps, s) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        cg_solve(k, x, y, gram, row, steps, s)
    }
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn cg_solve_avx2(
    k: Avx2Fma,
    x: &mut [f32],
    y: &[f32],
    gram: &[f32],
    row: &RowView<'_>,
    steps: usize,
    s: &mut Scratch,
) {
    cg_solve(k, x, y, gram, row, steps, s)
}

/// Warm-started conjugate gradient on `(G + Σ (c−1) y yᵀ) x = Σ c p y`, `steps` steps.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn cg_solve<K: Kernels>(
    k: K,
    x: &mut [f32],
    y: &[f32],
    gram: &[f32],
    row: &RowView<'_>,
    steps: usize,
    s: &mut Scratch,
) {
    let dim = x.len();
    let Scratch { r, p, ap } = s;
    // r = b - A x
    k.symv(gram, x, r);
    r.iter_mut().for_each(|v| *v = -*v);
    for ((&j, &c1), &b) in row.cols.iter().zip(row.cm1).zip(row.cp) {
        let yj = &y[j as usize * dim..(j as usize + 1) * dim];
        let yx = k.dot(yj, x);
        k.axpy(b - c1 * yx, yj, r);
    }
    p.copy_from_slice(r);
    let mut rsold = k.dot(r, r);
    if rsold.is_nan() || rsold < 1e-20 {
        return;
    }
    for _ in 0..steps {
        k.symv(gram, p, ap);
        for (&j, &c1) in row.cols.iter().zip(row.cm1) {
            let yj = &y[j as usize * dim..(j as usize + 1) * dim];
            k.axpy(c1 * k.dot(yj, p), yj, ap);
        }
        let pap = k.dot(p, ap);
        if pap.is_nan() || pap <= 0.0 {
            break;
        }
        let alpha = rsold / pap;
        k.axpy(alpha, p, x);
        k.axpy(-alpha, ap, r);
        let rsnew = k.dot(r, r);
        if rsnew.is_nan() || rsnew < 1e-20 {
            break;
        }
        let beta = rsnew / rsold;
        for (pi, &ri) in p.iter_mut().zip(r.iter()) {
            *pi = ri + beta * *pi;
        }
        rsold = rsnew;
    }
}
