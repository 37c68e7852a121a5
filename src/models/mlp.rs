//! Multi-layer perceptron (MLP) re-ranker.
//!
//! A small, dependency-light feed-forward network used to re-score search
//! candidates: `n_inputs` features → one or more fully connected hidden layers
//! with ReLU → a single sigmoid output, read as the probability that a
//! candidate is relevant (clicked, bought, ...).
//!
//! # Training
//!
//! [`Mlp::fit`] (and [`Mlp::fit_weighted`] for per-row weights) minimises the
//! (weighted) mean binary cross-entropy with Adam on shuffled mini-batches,
//! plus an optional L2 penalty on the weight matrices (not the biases).
//! A validation split is held out — by *group* when query ids are supplied, so
//! that all rows of one query land on the same side — and training stops early
//! once the validation loss has not improved for `patience` epochs. The
//! weights of the best epoch are restored. Input features are standardised
//! with a mean and standard deviation learned on the training split; both are
//! stored in the model, so callers always pass raw features.
//!
//! # Inference
//!
//! [`Mlp::predict_into`] is the hot query path: it writes probabilities into
//! a caller-provided slice and uses an [`MlpScratch`] for intermediate
//! activations, so after the scratch has been sized for a model it performs
//! no heap allocation. Rows are processed in tiles of 48 so the working set
//! stays in L1 whatever the number of candidates. On x86-64 CPUs with AVX2 and
//! FMA a kernel compiled for those features is selected at run time; other
//! CPUs use a portable kernel (same code, without fused multiply-add).
//!
//! # Determinism and persistence
//!
//! All randomness (initialisation, shuffling, the validation split) comes from
//! the crate's SplitMix64 generator seeded by [`MlpConfig::seed`]: the
//! same data and configuration give a bit-identical model. [`Mlp`] derives
//! `Serialize`/`Deserialize` (flat `Vec<f32>` weights, no ndarray serde
//! feature needed); call [`Mlp::validate`] after decoding a model from disk.
//! The module performs no I/O.
#![warn(missing_docs)]

use std::fmt;

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis, Zip};
use serde::{Deserialize, Serialize};

use super::linalg::Avx2Fma;
use super::SplitMix64;

/// Output columns per register block of the inference kernel: two rows of 32
/// columns are eight 8-lane accumulators, which fit the 16 AVX registers.
const BLOCK_COLS: usize = 32;
/// Rows processed together by the inference kernel (even, so rows pair up);
/// sized so a tile's activations stay in L1.
const TILE_ROWS: usize = 48;
/// Rows per chunk when evaluating a loss over a whole split.
const EVAL_CHUNK: usize = 4096;
/// Adam first-moment decay.
const ADAM_BETA1: f64 = 0.9;
/// Adam second-moment decay.
const ADAM_BETA2: f64 = 0.999;
/// Adam denominator epsilon.
const ADAM_EPS: f32 = 1e-8;

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Errors returned by training, inference and model validation.
#[derive(Debug, Clone, PartialEq)]
pub enum MlpError {
    /// The training set has no rows.
    EmptyTrainingSet,
    /// The feature matrix has no columns.
    NoFeatures,
    /// Two sizes that must agree do not.
    ShapeMismatch {
        /// What was being compared (e.g. `"labels"`, `"feature columns"`).
        what: &'static str,
        /// The size that was required.
        expected: usize,
        /// The size that was supplied.
        found: usize,
    },
    /// A feature value is NaN or infinite.
    NonFiniteInput {
        /// Row of the offending value.
        row: usize,
        /// Column of the offending value.
        col: usize,
    },
    /// A label is NaN or outside `[0, 1]`.
    InvalidLabel {
        /// Row of the offending label.
        row: usize,
        /// The offending value.
        value: f32,
    },
    /// A row weight is NaN, infinite or negative.
    InvalidWeight {
        /// Row of the offending weight.
        row: usize,
        /// The offending value.
        value: f32,
    },
    /// The row weights of the training split sum to zero.
    ZeroTotalWeight,
    /// A configuration value is out of range.
    InvalidConfig {
        /// The offending [`MlpConfig`] field.
        field: &'static str,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A model's shapes are inconsistent or its parameters are not finite
    /// (typically a corrupted or hand-edited model decoded from disk).
    InvalidModel {
        /// Human-readable description of the first problem found.
        reason: String,
    },
    /// Training produced non-finite losses before any usable epoch
    /// (try a smaller learning rate).
    Diverged,
}

impl fmt::Display for MlpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MlpError::EmptyTrainingSet => write!(f, "training set is empty"),
            MlpError::NoFeatures => write!(f, "feature matrix has no columns"),
            MlpError::ShapeMismatch {
                what,
                expected,
                found,
            } => write!(
                f,
                "shape mismatch for {what}: expected {expected}, found {found}"
            ),
            MlpError::NonFiniteInput { row, col } => {
                write!(f, "non-finite feature value at row {row}, column {col}")
            }
            MlpError::InvalidLabel { row, value } => {
                write!(f, "label {value} at row {row} is not in [0, 1]")
            }
            MlpError::InvalidWeight { row, value } => write!(
                f,
                "row weight {value} at row {row} is not a finite non-negative number"
            ),
            MlpError::ZeroTotalWeight => {
                write!(f, "row weights of the training split sum to zero")
            }
            MlpError::InvalidConfig { field, reason } => {
                write!(f, "invalid MLP configuration: {field} {reason}")
            }
            MlpError::InvalidModel { reason } => write!(f, "invalid MLP model: {reason}"),
            MlpError::Diverged => write!(
                f,
                "training diverged (non-finite loss); try a smaller learning rate"
            ),
        }
    }
}

impl std::error::Error for MlpError {}

fn invalid_model(reason: String) -> MlpError {
    MlpError::InvalidModel { reason }
}

// ---------------------------------------------------------------------------
// Configuration and report
// ---------------------------------------------------------------------------

/// Training hyper-parameters for [`Mlp::fit`].
///
/// | field | default |
/// | --- | --- |
/// | `hidden` | `[64]` |
/// | `learning_rate` | `1e-3` |
/// | `batch_size` | `256` |
/// | `max_epochs` | `100` |
/// | `patience` | `10` |
/// | `l2` | `1e-4` |
/// | `seed` | `42` |
/// | `validation_fraction` | `0.1` |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlpConfig {
    /// Widths of the hidden ReLU layers, input side first. Must be non-empty
    /// with every width > 0. Default `[64]`.
    pub hidden: Vec<usize>,
    /// Adam step size (finite, > 0). Default `1e-3`.
    pub learning_rate: f32,
    /// Rows per mini-batch (> 0). Default `256`.
    pub batch_size: usize,
    /// Upper bound on the number of passes over the training split (> 0).
    /// Default `100`.
    pub max_epochs: usize,
    /// Early stopping: training stops after this many consecutive epochs
    /// without a new best monitored loss (`0` stops at the first epoch that
    /// does not improve). The monitored loss is the validation loss, or the
    /// training loss when there is no validation split. Default `10`.
    pub patience: usize,
    /// L2 penalty coefficient on weight matrices (biases are not penalised);
    /// `l2 * w` is added to each weight gradient. Finite, >= 0. Default `1e-4`.
    pub l2: f32,
    /// Seed of the SplitMix64 generator driving initialisation, shuffling and
    /// the validation split. Default `42`.
    pub seed: u64,
    /// Fraction of rows (or of groups, when groups are given) held out for
    /// validation, in `[0, 1)`. `0` disables the validation split. The
    /// held-out count is rounded and capped so at least one row (group)
    /// remains for training. Default `0.1`.
    pub validation_fraction: f32,
}

impl Default for MlpConfig {
    fn default() -> Self {
        Self {
            hidden: vec![64],
            learning_rate: 1e-3,
            batch_size: 256,
            max_epochs: 100,
            patience: 10,
            l2: 1e-4,
            seed: 42,
            validation_fraction: 0.1,
        }
    }
}

impl MlpConfig {
    /// Checks every field is in range; [`Mlp::fit`] calls this first.
    pub fn validate(&self) -> Result<(), MlpError> {
        let bad = |field, reason| Err(MlpError::InvalidConfig { field, reason });
        if self.hidden.is_empty() {
            return bad("hidden", "must list at least one hidden layer");
        }
        if self.hidden.contains(&0) {
            return bad("hidden", "layer widths must be > 0");
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad("learning_rate", "must be finite and > 0");
        }
        if self.batch_size == 0 {
            return bad("batch_size", "must be > 0");
        }
        if self.max_epochs == 0 {
            return bad("max_epochs", "must be > 0");
        }
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            return bad("l2", "must be finite and >= 0");
        }
        if !(self.validation_fraction >= 0.0 && self.validation_fraction < 1.0) {
            return bad("validation_fraction", "must be in [0, 1)");
        }
        Ok(())
    }
}

/// What happened during [`Mlp::fit`].
#[derive(Debug, Clone, PartialEq)]
pub struct FitReport {
    /// Number of epochs actually run (<= `max_epochs`).
    pub epochs: usize,
    /// 1-based epoch whose weights were restored into the returned model.
    pub best_epoch: usize,
    /// Validation loss (weighted mean binary cross-entropy, no L2 term) of the
    /// restored weights; `None` when there was no validation split.
    pub best_val_loss: Option<f32>,
    /// Per-epoch training loss: weighted mean binary cross-entropy (no L2
    /// term) over the epoch's mini-batches, each measured before its update.
    pub train_loss_curve: Vec<f32>,
    /// Per-epoch validation loss after the epoch; empty when there was no
    /// validation split.
    pub val_loss_curve: Vec<f32>,
}

// ---------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------

/// One fully connected layer; `weights` is row-major `n_in x n_out`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Dense {
    n_in: usize,
    n_out: usize,
    weights: Vec<f32>,
    bias: Vec<f32>,
}

/// A trained MLP re-ranker: standardisation → hidden ReLU layers → sigmoid.
///
/// Build one with [`Mlp::fit`]; score candidates with [`Mlp::predict`] or,
/// on the hot path, [`Mlp::predict_into`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mlp {
    n_inputs: usize,
    /// Per-feature mean of the training split.
    feature_mean: Vec<f32>,
    /// Per-feature population standard deviation of the training split;
    /// `0` marks a constant feature, which the model then ignores.
    feature_std: Vec<f32>,
    /// Hidden layers followed by the single-unit output layer.
    layers: Vec<Dense>,
}

/// Reusable buffers for [`Mlp::predict_into`].
///
/// Its size depends only on the model (not on the number of rows scored), so
/// one scratch per worker thread can be reused across queries. A scratch made
/// with [`MlpScratch::new`] for a model never allocates when used with it; a
/// default (empty) scratch or one made for a smaller model grows once on first
/// use.
#[derive(Debug, Clone, Default)]
pub struct MlpScratch {
    inv_std: Vec<f32>,
    ping: Vec<f32>,
    pong: Vec<f32>,
    x_tile: Vec<f32>,
}

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
    fn prepare(&mut self, model: &Mlp) {
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

/// Scale applied after centring; constant features (std 0, subnormal or
/// non-finite) are mapped to 0 so the model ignores them.
fn inv_std(std: f32) -> f32 {
    if std.is_normal() && std > 0.0 {
        1.0 / std
    } else {
        0.0
    }
}

impl Mlp {
    /// Trains a model on features `x` (rows = candidates) and labels `y` in
    /// `[0, 1]` (usually 0/1) with every row weighted equally.
    ///
    /// `groups`, if given, holds one query/group id per row; the validation
    /// split then holds out whole groups. See [`Mlp::fit_weighted`] for
    /// errors and details.
    pub fn fit(
        x: ArrayView2<f32>,
        y: ArrayView1<f32>,
        groups: Option<&[u32]>,
        cfg: &MlpConfig,
    ) -> Result<(Mlp, FitReport), MlpError> {
        Self::fit_weighted(x, y, groups, None, cfg)
    }

    /// Like [`Mlp::fit`] with optional per-row weights (finite, >= 0), e.g.
    /// from [`balanced_class_weights`] to counter rare positives. Losses —
    /// training, validation and early stopping — are weighted means.
    ///
    /// # Errors
    /// * [`MlpError::InvalidConfig`] for an out-of-range `cfg`;
    /// * [`MlpError::EmptyTrainingSet`] / [`MlpError::NoFeatures`] for an empty `x`;
    /// * [`MlpError::ShapeMismatch`] if `y`, `groups` or `weights` do not have
    ///   one entry per row;
    /// * [`MlpError::NonFiniteInput`], [`MlpError::InvalidLabel`],
    ///   [`MlpError::InvalidWeight`] for bad values;
    /// * [`MlpError::ZeroTotalWeight`] if the training rows weigh nothing;
    /// * [`MlpError::Diverged`] if no epoch produced a finite loss.
    pub fn fit_weighted(
        x: ArrayView2<f32>,
        y: ArrayView1<f32>,
        groups: Option<&[u32]>,
        weights: Option<&[f32]>,
        cfg: &MlpConfig,
    ) -> Result<(Mlp, FitReport), MlpError> {
        cfg.validate()?;
        let (n, d) = x.dim();
        if n == 0 {
            return Err(MlpError::EmptyTrainingSet);
        }
        if d == 0 {
            return Err(MlpError::NoFeatures);
        }
        check_len("labels", n, y.len())?;
        if let Some(g) = groups {
            check_len("groups", n, g.len())?;
        }
        if let Some(w) = weights {
            check_len("row weights", n, w.len())?;
        }
        locate_non_finite(x)?;
        if let Some((row, &value)) = y
            .iter()
            .enumerate()
            .find(|(_, v)| !(**v >= 0.0 && **v <= 1.0))
        {
            return Err(MlpError::InvalidLabel { row, value });
        }
        let row_w: Vec<f32> = match weights {
            Some(w) => {
                if let Some((row, &value)) = w
                    .iter()
                    .enumerate()
                    .find(|(_, v)| !(v.is_finite() && **v >= 0.0))
                {
                    return Err(MlpError::InvalidWeight { row, value });
                }
                w.to_vec()
            }
            None => vec![1.0; n],
        };
        let labels: Vec<f32> = y.iter().copied().collect();

        let mut rng = SplitMix64::new(cfg.seed);
        let (mut train_idx, mut val_idx) = split_rows(n, groups, cfg.validation_fraction, &mut rng);
        if total_weight(&row_w, &train_idx) <= 0.0 {
            return Err(MlpError::ZeroTotalWeight);
        }
        if !val_idx.is_empty() && total_weight(&row_w, &val_idx) <= 0.0 {
            // A weightless validation split cannot rank epochs: train on everything.
            train_idx = (0..n).collect();
            val_idx.clear();
        }

        let (feature_mean, feature_std) = feature_stats(x, &train_idx);
        let inv: Vec<f32> = feature_std.iter().map(|&s| inv_std(s)).collect();
        let xs = Array2::from_shape_fn((n, d), |(r, c)| (x[[r, c]] - feature_mean[c]) * inv[c]);

        let mut layers = init_layers(d, &cfg.hidden, &mut rng);
        let data = TrainData {
            xs: &xs,
            y: &labels,
            w: &row_w,
        };
        let has_val = !val_idx.is_empty();
        let mut report = FitReport {
            epochs: 0,
            best_epoch: 0,
            best_val_loss: None,
            train_loss_curve: Vec::new(),
            val_loss_curve: Vec::new(),
        };
        let mut best = f64::INFINITY;
        let mut best_layers = to_dense(&layers);
        let mut since_best = 0usize;
        let mut step = 0u64;
        let mut order = train_idx;

        for epoch in 1..=cfg.max_epochs {
            report.epochs = epoch;
            rng.shuffle(&mut order);
            let mut loss_sum = 0.0f64;
            let mut weight_sum = 0.0f64;
            for batch in order.chunks(cfg.batch_size) {
                let batch_w = total_weight(&row_w, batch);
                if batch_w <= 0.0 {
                    continue;
                }
                step += 1;
                loss_sum += train_step(&mut layers, &data, batch, batch_w, cfg, step);
                weight_sum += batch_w;
            }
            let train_loss = loss_sum / weight_sum;
            report.train_loss_curve.push(train_loss as f32);
            let monitored = if has_val {
                let v = mean_loss(&layers, &data, &val_idx);
                report.val_loss_curve.push(v as f32);
                v
            } else {
                train_loss
            };
            if !train_loss.is_finite() {
                break;
            }
            if monitored < best {
                best = monitored;
                report.best_epoch = epoch;
                best_layers = to_dense(&layers);
                since_best = 0;
            } else {
                since_best += 1;
                if since_best >= cfg.patience {
                    break;
                }
            }
        }
        if report.best_epoch == 0 {
            return Err(MlpError::Diverged);
        }
        if has_val {
            report.best_val_loss = Some(best as f32);
        }
        let mut model = Mlp {
            n_inputs: d,
            feature_mean,
            feature_std,
            layers: best_layers,
        };
        model.flush_subnormal_weights();
        model.validate().map_err(|_| MlpError::Diverged)?;
        Ok((model, report))
    }

    /// Number of input features the model expects per row.
    pub fn n_inputs(&self) -> usize {
        self.n_inputs
    }

    /// Widths of the hidden layers, input side first.
    pub fn hidden_sizes(&self) -> Vec<usize> {
        match self.layers.split_last() {
            Some((_, hidden)) => hidden.iter().map(|l| l.n_out).collect(),
            None => Vec::new(),
        }
    }

    /// Per-feature means used for standardisation (learned at fit).
    pub fn feature_mean(&self) -> &[f32] {
        &self.feature_mean
    }

    /// Per-feature standard deviations used for standardisation (learned at
    /// fit); `0` marks a constant feature the model ignores.
    pub fn feature_std(&self) -> &[f32] {
        &self.feature_std
    }

    /// Sets weights and biases too small to be normal floats to zero; returns how many.
    ///
    /// The L2 penalty shrinks the weights of units that never activate towards zero, into
    /// the subnormal range, where every multiplication takes a slow microcode path: a
    /// forward pass over such a model ran many times slower. Their contribution is below
    /// 1e-38, so zero scores the same. [`Mlp::fit`] does this; call it after decoding a
    /// model saved without it.
    pub fn flush_subnormal_weights(&mut self) -> usize {
        let mut flushed = 0;
        for layer in &mut self.layers {
            for v in layer.weights.iter_mut().chain(layer.bias.iter_mut()) {
                if v.is_subnormal() {
                    *v = 0.0;
                    flushed += 1;
                }
            }
        }
        flushed
    }

    /// Checks that shapes are consistent (input width, layer chaining, a
    /// single output unit, vector lengths) and that every parameter is finite
    /// (standard deviations also >= 0). Call after decoding a model.
    pub fn validate(&self) -> Result<(), MlpError> {
        self.check_shapes()?;
        if let Some(i) = self.feature_mean.iter().position(|v| !v.is_finite()) {
            return Err(invalid_model(format!("feature mean {i} is not finite")));
        }
        if let Some(i) = self
            .feature_std
            .iter()
            .position(|v| !(v.is_finite() && *v >= 0.0))
        {
            return Err(invalid_model(format!(
                "feature std {i} is not a finite non-negative number"
            )));
        }
        for (l, layer) in self.layers.iter().enumerate() {
            if layer.weights.iter().any(|v| !v.is_finite()) {
                return Err(invalid_model(format!("layer {l} has non-finite weights")));
            }
            if layer.bias.iter().any(|v| !v.is_finite()) {
                return Err(invalid_model(format!("layer {l} has non-finite biases")));
            }
        }
        Ok(())
    }

    /// Cheap structural checks that make the inference kernels panic-free.
    fn check_shapes(&self) -> Result<(), MlpError> {
        if self.n_inputs == 0 {
            return Err(invalid_model("model has zero inputs".into()));
        }
        if self.feature_mean.len() != self.n_inputs || self.feature_std.len() != self.n_inputs {
            return Err(invalid_model(format!(
                "standardisation vectors have lengths {} and {}, expected {}",
                self.feature_mean.len(),
                self.feature_std.len(),
                self.n_inputs
            )));
        }
        if self.layers.len() < 2 {
            return Err(invalid_model(
                "need at least one hidden layer and an output layer".into(),
            ));
        }
        let mut prev = self.n_inputs;
        for (l, layer) in self.layers.iter().enumerate() {
            if layer.n_in != prev || layer.n_out == 0 {
                return Err(invalid_model(format!(
                    "layer {l} is {}x{} but its input has width {prev}",
                    layer.n_in, layer.n_out
                )));
            }
            if Some(layer.weights.len()) != layer.n_in.checked_mul(layer.n_out)
                || layer.bias.len() != layer.n_out
            {
                return Err(invalid_model(format!(
                    "layer {l} has {} weights and {} biases for shape {}x{}",
                    layer.weights.len(),
                    layer.bias.len(),
                    layer.n_in,
                    layer.n_out
                )));
            }
            prev = layer.n_out;
        }
        if prev != 1 {
            return Err(invalid_model(format!(
                "output layer has {prev} units, expected 1"
            )));
        }
        Ok(())
    }

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

/// Per-row class weights that give positives (`y >= 0.5`) and negatives the
/// same total weight: `n / (2 n_pos)` and `n / (2 n_neg)`. All ones if a class
/// is absent. Pass the result to [`Mlp::fit_weighted`].
///
/// # Errors
/// [`MlpError::InvalidLabel`] for a NaN label or one outside `[0, 1]`.
pub fn balanced_class_weights(y: ArrayView1<f32>) -> Result<Vec<f32>, MlpError> {
    if let Some((row, &value)) = y
        .iter()
        .enumerate()
        .find(|(_, v)| !(**v >= 0.0 && **v <= 1.0))
    {
        return Err(MlpError::InvalidLabel { row, value });
    }
    let n = y.len();
    let n_pos = y.iter().filter(|v| **v >= 0.5).count();
    let n_neg = n - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return Ok(vec![1.0; n]);
    }
    let w_pos = (n as f64 / (2.0 * n_pos as f64)) as f32;
    let w_neg = (n as f64 / (2.0 * n_neg as f64)) as f32;
    Ok(y.iter()
        .map(|v| if *v >= 0.5 { w_pos } else { w_neg })
        .collect())
}

fn check_len(what: &'static str, expected: usize, found: usize) -> Result<(), MlpError> {
    if expected == found {
        Ok(())
    } else {
        Err(MlpError::ShapeMismatch {
            what,
            expected,
            found,
        })
    }
}

/// Returns the first non-finite element of `x` as an error.
fn locate_non_finite(x: ArrayView2<f32>) -> Result<(), MlpError> {
    match x.indexed_iter().find(|(_, v)| !v.is_finite()) {
        Some(((row, col), _)) => Err(MlpError::NonFiniteInput { row, col }),
        None => Ok(()),
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

fn forward_portable(model: &Mlp, x: ArrayView2<f32>, scratch: &mut MlpScratch, out: &mut [f32]) {
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
fn sigmoid(z: f32) -> f32 {
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

// ---------------------------------------------------------------------------
// Training internals
// ---------------------------------------------------------------------------

/// A layer under training with its Adam moments.
struct TrainLayer {
    w: Array2<f32>,
    b: Array1<f32>,
    m_w: Array2<f32>,
    v_w: Array2<f32>,
    m_b: Array1<f32>,
    v_b: Array1<f32>,
}

/// Standardised features, labels and row weights of the whole data set.
struct TrainData<'a> {
    xs: &'a Array2<f32>,
    y: &'a [f32],
    w: &'a [f32],
}

fn total_weight(w: &[f32], rows: &[usize]) -> f64 {
    rows.iter().map(|&r| f64::from(w[r])).sum()
}

/// Splits row indices into (train, validation), both sorted. With `groups`,
/// whole groups are held out. At least one row (group) always stays in train.
fn split_rows(
    n: usize,
    groups: Option<&[u32]>,
    fraction: f32,
    rng: &mut SplitMix64,
) -> (Vec<usize>, Vec<usize>) {
    let all = || (0..n).collect::<Vec<usize>>();
    if fraction <= 0.0 || n < 2 {
        return (all(), Vec::new());
    }
    let held_out = |count: usize| {
        ((count as f64 * f64::from(fraction)).round() as usize).min(count.saturating_sub(1))
    };
    match groups {
        None => {
            let mut idx = all();
            rng.shuffle(&mut idx);
            let (val, train) = idx.split_at(held_out(n));
            let mut val = val.to_vec();
            let mut train = train.to_vec();
            val.sort_unstable();
            train.sort_unstable();
            (train, val)
        }
        Some(g) => {
            let mut ids = g.to_vec();
            ids.sort_unstable();
            ids.dedup();
            rng.shuffle(&mut ids);
            let mut val_ids = ids[..held_out(ids.len())].to_vec();
            val_ids.sort_unstable();
            (0..n).partition(|&r| val_ids.binary_search(&g[r]).is_err())
        }
    }
}

/// Mean and population std per feature over `rows`, accumulated in f64.
/// Constant features get std 0.
fn feature_stats(x: ArrayView2<f32>, rows: &[usize]) -> (Vec<f32>, Vec<f32>) {
    let d = x.ncols();
    let count = rows.len().max(1) as f64;
    let mut mean = vec![0.0f64; d];
    for &r in rows {
        for (m, &v) in mean.iter_mut().zip(x.row(r)) {
            *m += f64::from(v);
        }
    }
    mean.iter_mut().for_each(|m| *m /= count);
    let mut var = vec![0.0f64; d];
    for &r in rows {
        for ((s, &m), &v) in var.iter_mut().zip(&mean).zip(x.row(r)) {
            let delta = f64::from(v) - m;
            *s += delta * delta;
        }
    }
    let std = var
        .iter()
        .map(|s| {
            let v = (s / count).sqrt() as f32;
            if v.is_normal() {
                v
            } else {
                0.0
            }
        })
        .collect();
    (mean.iter().map(|&m| m as f32).collect(), std)
}

/// He-normal weights for ReLU layers, Glorot-style (`1/fan_in`) for the
/// sigmoid output; zero biases.
fn init_layers(n_inputs: usize, hidden: &[usize], rng: &mut SplitMix64) -> Vec<TrainLayer> {
    let mut sizes = Vec::with_capacity(hidden.len() + 2);
    sizes.push(n_inputs);
    sizes.extend_from_slice(hidden);
    sizes.push(1);
    let n_layers = sizes.len() - 1;
    sizes
        .windows(2)
        .enumerate()
        .map(|(l, pair)| {
            let (n_in, n_out) = (pair[0], pair[1]);
            let gain = if l + 1 == n_layers { 1.0 } else { 2.0 };
            let scale = (gain / n_in as f64).sqrt();
            let w = Array2::from_shape_fn((n_in, n_out), |_| (rng.normal() * scale) as f32);
            TrainLayer {
                w,
                b: Array1::zeros(n_out),
                m_w: Array2::zeros((n_in, n_out)),
                v_w: Array2::zeros((n_in, n_out)),
                m_b: Array1::zeros(n_out),
                v_b: Array1::zeros(n_out),
            }
        })
        .collect()
}

fn to_dense(layers: &[TrainLayer]) -> Vec<Dense> {
    layers
        .iter()
        .map(|l| Dense {
            n_in: l.w.nrows(),
            n_out: l.w.ncols(),
            weights: l.w.iter().copied().collect(),
            bias: l.b.to_vec(),
        })
        .collect()
}

/// Forward pass keeping every layer's input; the last element is the logits.
fn forward_train(layers: &[TrainLayer], x: Array2<f32>) -> Vec<Array2<f32>> {
    let mut acts = Vec::with_capacity(layers.len() + 1);
    let mut cur = x;
    let last = layers.len().saturating_sub(1);
    for (l, layer) in layers.iter().enumerate() {
        let mut z = cur.dot(&layer.w);
        z += &layer.b;
        if l < last {
            z.mapv_inplace(|v| v.max(0.0));
        }
        acts.push(std::mem::replace(&mut cur, z));
    }
    acts.push(cur);
    acts
}

/// Numerically stable binary cross-entropy of a logit.
fn bce_logit(z: f32, y: f32) -> f64 {
    let (z, y) = (f64::from(z), f64::from(y));
    z.max(0.0) - z * y + (-z.abs()).exp().ln_1p()
}

/// Weighted mean BCE of the current network over `rows`.
fn mean_loss(layers: &[TrainLayer], data: &TrainData<'_>, rows: &[usize]) -> f64 {
    let mut loss = 0.0;
    let mut weight = 0.0;
    for chunk in rows.chunks(EVAL_CHUNK) {
        let acts = forward_train(layers, data.xs.select(Axis(0), chunk));
        if let Some(logits) = acts.last() {
            for (&r, &z) in chunk.iter().zip(logits.iter()) {
                let w = f64::from(data.w[r]);
                loss += w * bce_logit(z, data.y[r]);
                weight += w;
            }
        }
    }
    loss / weight
}

/// One Adam step on a mini-batch; returns the batch's weighted loss sum
/// (before the update).
fn train_step(
    layers: &mut [TrainLayer],
    data: &TrainData<'_>,
    batch: &[usize],
    batch_w: f64,
    cfg: &MlpConfig,
    step: u64,
) -> f64 {
    let acts = forward_train(layers, data.xs.select(Axis(0), batch));
    let Some(logits) = acts.last() else {
        return 0.0;
    };
    let mut loss = 0.0;
    let mut delta = Array2::<f32>::zeros((batch.len(), 1));
    for ((&r, &z), dz) in batch.iter().zip(logits.iter()).zip(delta.iter_mut()) {
        let (y, w) = (data.y[r], f64::from(data.w[r]));
        loss += w * bce_logit(z, y);
        *dz = (w / batch_w) as f32 * (sigmoid(z) - y);
    }

    let t = step.min(i32::MAX as u64) as i32;
    let bias1 = 1.0 - ADAM_BETA1.powi(t);
    let bias2 = 1.0 - ADAM_BETA2.powi(t);
    let lr_t = (f64::from(cfg.learning_rate) * bias2.sqrt() / bias1) as f32;
    let (b1, b2) = (ADAM_BETA1 as f32, ADAM_BETA2 as f32);
    let adam = |p: &mut f32, m: &mut f32, v: &mut f32, g: f32| {
        *m = b1 * *m + (1.0 - b1) * g;
        *v = b2 * *v + (1.0 - b2) * g * g;
        *p -= lr_t * *m / (v.sqrt() + ADAM_EPS);
    };

    for l in (0..layers.len()).rev() {
        let a_prev = &acts[l];
        let layer = &mut layers[l];
        let mut g_w = a_prev.t().dot(&delta);
        if cfg.l2 > 0.0 {
            g_w.scaled_add(cfg.l2, &layer.w);
        }
        let g_b = delta.sum_axis(Axis(0));
        let next_delta = if l > 0 {
            let mut d = delta.dot(&layer.w.t());
            Zip::from(&mut d).and(a_prev).for_each(|d, &a| {
                if a <= 0.0 {
                    *d = 0.0;
                }
            });
            Some(d)
        } else {
            None
        };
        Zip::from(&mut layer.w)
            .and(&mut layer.m_w)
            .and(&mut layer.v_w)
            .and(&g_w)
            .for_each(|p, m, v, &g| adam(p, m, v, g));
        Zip::from(&mut layer.b)
            .and(&mut layer.m_b)
            .and(&mut layer.v_b)
            .and(&g_b)
            .for_each(|p, m, v, &g| adam(p, m, v, g));
        match next_delta {
            Some(d) => delta = d,
            None => break,
        }
    }
    loss
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array1, Array2};

    /// XOR quadrants in 2-D with a margin around the axes.
    fn xor_data(n: usize, seed: u64) -> (Array2<f32>, Array1<f32>) {
        let mut rng = SplitMix64::new(seed);
        let mut x = Array2::zeros((n, 2));
        let mut y = Array1::zeros(n);
        let mut i = 0;
        while i < n {
            let a = (rng.next_f64() * 2.0 - 1.0) as f32;
            let b = (rng.next_f64() * 2.0 - 1.0) as f32;
            if a.abs() < 0.1 || b.abs() < 0.1 {
                continue;
            }
            // Shift and scale so standardisation has real work to do.
            x[[i, 0]] = a * 10.0 + 50.0;
            x[[i, 1]] = b * 0.01 - 3.0;
            y[i] = if a * b > 0.0 { 1.0 } else { 0.0 };
            i += 1;
        }
        (x, y)
    }

    /// Inside/outside a ring in 2-D plus three noise features.
    fn ring_data(n: usize, seed: u64) -> (Array2<f32>, Array1<f32>) {
        let mut rng = SplitMix64::new(seed);
        let mut x = Array2::zeros((n, 5));
        let mut y = Array1::zeros(n);
        let mut i = 0;
        while i < n {
            let a = rng.next_f64() * 2.0 - 1.0;
            let b = rng.next_f64() * 2.0 - 1.0;
            let r = (a * a + b * b).sqrt();
            if (r - 0.6).abs() < 0.08 {
                continue;
            }
            x[[i, 0]] = a as f32;
            x[[i, 1]] = b as f32;
            for c in 2..5 {
                x[[i, c]] = rng.normal() as f32;
            }
            y[i] = if r < 0.6 { 1.0 } else { 0.0 };
            i += 1;
        }
        (x, y)
    }

    fn random_matrix(rows: usize, cols: usize, seed: u64) -> Array2<f32> {
        let mut rng = SplitMix64::new(seed);
        Array2::from_shape_fn((rows, cols), |_| rng.normal() as f32)
    }

    fn accuracy(p: &Array1<f32>, y: &Array1<f32>) -> f64 {
        let hits = p
            .iter()
            .zip(y)
            .filter(|(p, y)| (**p >= 0.5) == (**y >= 0.5))
            .count();
        hits as f64 / y.len() as f64
    }

    #[test]
    fn subnormal_weights_are_flushed_without_changing_scores() {
        let mut m = small_model(4, vec![8], 3);
        let x = random_matrix(50, 4, 4);
        let tiny = f32::MIN_POSITIVE / 8.0;
        assert!(tiny.is_subnormal());
        m.layers[0].weights[0] = tiny;
        m.layers[0].bias[1] = -tiny;
        let before = m.predict(x.view()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.flush_subnormal_weights(), 2);
        assert_eq!(m.layers[0].weights[0], 0.0);
        assert_eq!(m.flush_subnormal_weights(), 0);
        let after = m.predict(x.view()).unwrap_or_else(|e| panic!("{e}"));
        for (a, b) in before.iter().zip(&after) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    /// A model with a given architecture, trained briefly on random data.
    fn small_model(d: usize, hidden: Vec<usize>, seed: u64) -> Mlp {
        let x = random_matrix(300, d, seed);
        let y = x.column(0).mapv(|v| if v > 0.0 { 1.0 } else { 0.0 });
        let cfg = MlpConfig {
            hidden,
            max_epochs: 3,
            batch_size: 64,
            learning_rate: 1e-2,
            seed,
            ..MlpConfig::default()
        };
        match Mlp::fit(x.view(), y.view(), None, &cfg) {
            Ok((m, _)) => m,
            Err(e) => panic!("fit failed: {e}"),
        }
    }

    /// Straightforward f64 reference forward pass.
    fn reference_predict(m: &Mlp, x: &Array2<f32>) -> Vec<f64> {
        x.rows()
            .into_iter()
            .map(|row| {
                let mut h: Vec<f64> = row
                    .iter()
                    .enumerate()
                    .map(|(c, &v)| {
                        (f64::from(v) - f64::from(m.feature_mean[c]))
                            * f64::from(inv_std(m.feature_std[c]))
                    })
                    .collect();
                for (l, layer) in m.layers.iter().enumerate() {
                    let mut z: Vec<f64> = layer.bias.iter().map(|&b| f64::from(b)).collect();
                    for (i, hv) in h.iter().enumerate() {
                        for (j, zj) in z.iter_mut().enumerate() {
                            *zj += hv * f64::from(layer.weights[i * layer.n_out + j]);
                        }
                    }
                    if l + 1 < m.layers.len() {
                        z.iter_mut().for_each(|v| *v = v.max(0.0));
                    }
                    h = z;
                }
                1.0 / (1.0 + (-h[0]).exp())
            })
            .collect()
    }

    #[test]
    fn learns_xor() {
        let (x, y) = xor_data(1500, 1);
        let cfg = MlpConfig {
            hidden: vec![32],
            learning_rate: 1e-2,
            batch_size: 32,
            max_epochs: 200,
            patience: 20,
            l2: 0.0,
            seed: 7,
            validation_fraction: 0.2,
        };
        let (model, report) = Mlp::fit(x.view(), y.view(), None, &cfg).expect("fit");
        let (xt, yt) = xor_data(1000, 99);
        let acc = accuracy(&model.predict(xt.view()).expect("predict"), &yt);
        eprintln!(
            "XOR: accuracy {acc:.4}, epochs {}, best {}",
            report.epochs, report.best_epoch
        );
        assert!(acc > 0.95, "XOR accuracy {acc}, report {report:?}");
        assert!(report.best_val_loss.is_some());
    }

    #[test]
    fn learns_ring_with_two_hidden_layers() {
        let (x, y) = ring_data(2000, 3);
        let cfg = MlpConfig {
            hidden: vec![32, 16],
            learning_rate: 5e-3,
            batch_size: 64,
            max_epochs: 200,
            patience: 15,
            ..MlpConfig::default()
        };
        let (model, report) = Mlp::fit(x.view(), y.view(), None, &cfg).expect("fit");
        let (xt, yt) = ring_data(1000, 123);
        let acc = accuracy(&model.predict(xt.view()).expect("predict"), &yt);
        eprintln!(
            "ring: accuracy {acc:.4}, epochs {}, best {}",
            report.epochs, report.best_epoch
        );
        assert!(acc > 0.95, "ring accuracy {acc}, report {report:?}");
        assert_eq!(model.hidden_sizes(), vec![32, 16]);
    }

    #[test]
    fn early_stopping_on_overfitting_task() {
        // Weak signal (sign of feature 0, 30% of labels flipped), few rows
        // and many parameters: the validation loss turns up after a while.
        let x = random_matrix(200, 20, 11);
        let mut rng = SplitMix64::new(12);
        let y = Array1::from_shape_fn(200, |r| {
            let clean = x[[r, 0]] > 0.0;
            if (rng.next_f64() < 0.3) != clean {
                1.0
            } else {
                0.0
            }
        });
        let cfg = MlpConfig {
            hidden: vec![128],
            learning_rate: 1e-3,
            batch_size: 16,
            max_epochs: 300,
            patience: 5,
            l2: 0.0,
            seed: 5,
            validation_fraction: 0.3,
        };
        let (model, report) = Mlp::fit(x.view(), y.view(), None, &cfg).expect("fit");
        eprintln!(
            "overfit: stopped after {} of {} epochs, best epoch {}",
            report.epochs, cfg.max_epochs, report.best_epoch
        );
        assert!(report.epochs < cfg.max_epochs, "{report:?}");
        assert!(report.best_epoch > 1, "{report:?}");
        assert_eq!(report.epochs, report.best_epoch + cfg.patience);
        assert_eq!(report.train_loss_curve.len(), report.epochs);
        assert_eq!(report.val_loss_curve.len(), report.epochs);
        let best = report.best_val_loss.expect("validation split");
        let min = report
            .val_loss_curve
            .iter()
            .copied()
            .fold(f32::INFINITY, f32::min);
        assert_eq!(best, min);
        assert_eq!(report.val_loss_curve[report.best_epoch - 1], best);
        // The training loss kept falling after the best epoch (overfitting).
        let last_train = report.train_loss_curve[report.epochs - 1];
        assert!(last_train < report.train_loss_curve[report.best_epoch - 1]);

        // The returned weights are the best epoch's: recompute the split.
        let mut rng = SplitMix64::new(cfg.seed);
        let (_, val) = split_rows(200, None, cfg.validation_fraction, &mut rng);
        assert_eq!(val.len(), 60);
        let p = model.predict(x.view()).expect("predict");
        let loss: f64 = val
            .iter()
            .map(|&r| {
                let (p, y) = (f64::from(p[r]).clamp(1e-7, 1.0 - 1e-7), f64::from(y[r]));
                -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
            })
            .sum::<f64>()
            / val.len() as f64;
        assert!(
            (loss - f64::from(best)).abs() < 1e-3 * f64::from(best).max(1.0),
            "restored val loss {loss} vs best {best}"
        );
    }

    #[test]
    fn group_split_keeps_groups_together() {
        let groups: Vec<u32> = (0..1000u32).map(|r| (r * 7919) % 100).collect();
        let mut rng = SplitMix64::new(9);
        let (train, val) = split_rows(1000, Some(&groups), 0.2, &mut rng);
        assert_eq!(train.len() + val.len(), 1000);
        let mut val_groups: Vec<u32> = val.iter().map(|&r| groups[r]).collect();
        val_groups.sort_unstable();
        val_groups.dedup();
        assert_eq!(val_groups.len(), 20);
        assert!(train
            .iter()
            .all(|&r| val_groups.binary_search(&groups[r]).is_err()));

        // Single group: nothing can be held out.
        let one = vec![3u32; 50];
        let (train, val) = split_rows(50, Some(&one), 0.5, &mut rng);
        assert_eq!((train.len(), val.len()), (50, 0));

        // fit with groups runs end to end.
        let (x, y) = xor_data(400, 4);
        let groups: Vec<u32> = (0..400u32).map(|r| r / 8).collect();
        let cfg = MlpConfig {
            max_epochs: 5,
            ..MlpConfig::default()
        };
        let (_, report) = Mlp::fit(x.view(), y.view(), Some(&groups), &cfg).expect("fit");
        assert_eq!(report.val_loss_curve.len(), report.epochs);
    }

    #[test]
    fn no_validation_split_monitors_training_loss() {
        let (x, y) = xor_data(200, 8);
        let cfg = MlpConfig {
            validation_fraction: 0.0,
            max_epochs: 4,
            ..MlpConfig::default()
        };
        let (_, report) = Mlp::fit(x.view(), y.view(), None, &cfg).expect("fit");
        assert_eq!(report.best_val_loss, None);
        assert!(report.val_loss_curve.is_empty());
        assert_eq!(report.train_loss_curve.len(), 4);

        // A single row trains too (no validation possible).
        let (model, _) = Mlp::fit(
            x.slice(ndarray::s![..1, ..]),
            y.slice(ndarray::s![..1]),
            None,
            &MlpConfig::default(),
        )
        .expect("fit one row");
        assert!(model.validate().is_ok());
    }

    #[test]
    fn shape_mismatches_are_errors() {
        let x = random_matrix(10, 3, 1);
        let y = Array1::<f32>::zeros(9);
        let cfg = MlpConfig::default();
        assert!(matches!(
            Mlp::fit(x.view(), y.view(), None, &cfg),
            Err(MlpError::ShapeMismatch {
                what: "labels",
                expected: 10,
                found: 9
            })
        ));
        let y = Array1::<f32>::zeros(10);
        let groups = vec![0u32; 9];
        assert!(matches!(
            Mlp::fit(x.view(), y.view(), Some(&groups), &cfg),
            Err(MlpError::ShapeMismatch { what: "groups", .. })
        ));
        let w = vec![1.0f32; 11];
        assert!(matches!(
            Mlp::fit_weighted(x.view(), y.view(), None, Some(&w), &cfg),
            Err(MlpError::ShapeMismatch {
                what: "row weights",
                ..
            })
        ));
        assert_eq!(
            Mlp::fit(
                Array2::<f32>::zeros((0, 3)).view(),
                Array1::zeros(0).view(),
                None,
                &cfg
            )
            .err(),
            Some(MlpError::EmptyTrainingSet)
        );
        assert_eq!(
            Mlp::fit(
                Array2::<f32>::zeros((4, 0)).view(),
                Array1::zeros(4).view(),
                None,
                &cfg
            )
            .err(),
            Some(MlpError::NoFeatures)
        );

        let model = small_model(3, vec![8], 2);
        assert_eq!(
            model.predict(random_matrix(5, 4, 3).view()).err(),
            Some(MlpError::ShapeMismatch {
                what: "feature columns",
                expected: 3,
                found: 4
            })
        );
        let mut scratch = MlpScratch::new(&model);
        let mut out = vec![0.0; 4];
        assert!(matches!(
            model.predict_into(random_matrix(5, 3, 3).view(), &mut scratch, &mut out),
            Err(MlpError::ShapeMismatch {
                what: "output slice",
                expected: 5,
                found: 4
            })
        ));
        // Zero rows is fine.
        let empty = model
            .predict(Array2::<f32>::zeros((0, 3)).view())
            .expect("empty");
        assert!(empty.is_empty());
    }

    #[test]
    fn non_finite_inputs_are_errors() {
        let cfg = MlpConfig::default();
        let mut x = random_matrix(10, 3, 1);
        let y = Array1::<f32>::zeros(10);
        x[[3, 1]] = f32::NAN;
        assert_eq!(
            Mlp::fit(x.view(), y.view(), None, &cfg).err(),
            Some(MlpError::NonFiniteInput { row: 3, col: 1 })
        );
        x[[3, 1]] = f32::INFINITY;
        assert_eq!(
            Mlp::fit(x.view(), y.view(), None, &cfg).err(),
            Some(MlpError::NonFiniteInput { row: 3, col: 1 })
        );
        let x = random_matrix(10, 3, 1);
        let mut y = Array1::<f32>::zeros(10);
        y[2] = f32::NAN;
        assert!(matches!(
            Mlp::fit(x.view(), y.view(), None, &cfg),
            Err(MlpError::InvalidLabel { row: 2, .. })
        ));
        y[2] = 1.5;
        assert!(matches!(
            Mlp::fit(x.view(), y.view(), None, &cfg),
            Err(MlpError::InvalidLabel { row: 2, .. })
        ));
        let y = Array1::<f32>::zeros(10);
        let mut w = vec![1.0f32; 10];
        w[4] = -1.0;
        assert!(matches!(
            Mlp::fit_weighted(x.view(), y.view(), None, Some(&w), &cfg),
            Err(MlpError::InvalidWeight { row: 4, .. })
        ));
        w[4] = f32::NAN;
        assert!(matches!(
            Mlp::fit_weighted(x.view(), y.view(), None, Some(&w), &cfg),
            Err(MlpError::InvalidWeight { row: 4, .. })
        ));
        let zeros = vec![0.0f32; 10];
        assert_eq!(
            Mlp::fit_weighted(x.view(), y.view(), None, Some(&zeros), &cfg).err(),
            Some(MlpError::ZeroTotalWeight)
        );

        let model = small_model(3, vec![8], 2);
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut q = random_matrix(70, 3, 4);
            q[[65, 2]] = bad;
            assert_eq!(
                model.predict(q.view()).err(),
                Some(MlpError::NonFiniteInput { row: 65, col: 2 })
            );
            // Non-contiguous (column-major) view takes the other path.
            let qt = q.t().to_owned();
            assert_eq!(
                model.predict(qt.t()).err(),
                Some(MlpError::NonFiniteInput { row: 65, col: 2 })
            );
        }
    }

    #[test]
    fn invalid_config_is_rejected() {
        let x = random_matrix(10, 3, 1);
        let y = Array1::<f32>::zeros(10);
        let cases = [
            MlpConfig {
                hidden: vec![],
                ..MlpConfig::default()
            },
            MlpConfig {
                hidden: vec![4, 0],
                ..MlpConfig::default()
            },
            MlpConfig {
                learning_rate: f32::NAN,
                ..MlpConfig::default()
            },
            MlpConfig {
                batch_size: 0,
                ..MlpConfig::default()
            },
            MlpConfig {
                max_epochs: 0,
                ..MlpConfig::default()
            },
            MlpConfig {
                l2: -1.0,
                ..MlpConfig::default()
            },
            MlpConfig {
                validation_fraction: 1.0,
                ..MlpConfig::default()
            },
        ];
        for cfg in cases {
            assert!(
                matches!(
                    Mlp::fit(x.view(), y.view(), None, &cfg),
                    Err(MlpError::InvalidConfig { .. })
                ),
                "{cfg:?}"
            );
        }
        assert!(MlpConfig::default().validate().is_ok());
    }

    #[test]
    fn predict_matches_predict_into_and_reference() {
        // Hidden widths 77 = 2*32 + 8 + 5 and 13 = 8 + 5 exercise every
        // column-block width; 101 rows = 48 + 48 + 5 leave a partial tile with
        // an odd row; 13 inputs exercise the dot-product tail.
        let model = small_model(13, vec![77, 13], 21);
        let x = random_matrix(101, 13, 22);
        let p = model.predict(x.view()).expect("predict");
        let mut scratch = MlpScratch::default();
        let mut out = vec![0.0; 101];
        model
            .predict_into(x.view(), &mut scratch, &mut out)
            .expect("predict_into");
        assert_eq!(p.to_vec(), out);
        // Reusing the scratch gives identical results.
        let mut again = vec![0.0; 101];
        model
            .predict_into(x.view(), &mut scratch, &mut again)
            .expect("predict_into");
        assert_eq!(out, again);
        // Column-major input (copied per tile) gives identical results.
        let xt = x.t().to_owned();
        assert_eq!(model.predict(xt.t()).expect("predict").to_vec(), out);
        // Portable kernel agrees closely with the dispatched one.
        let mut portable = vec![0.0; 101];
        scratch.prepare(&model);
        forward_portable(&model, x.view(), &mut scratch, &mut portable);
        for (a, b) in portable.iter().zip(&out) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        // And both agree with an f64 reference.
        for (a, b) in out.iter().zip(reference_predict(&model, &x)) {
            assert!((f64::from(*a) - b).abs() < 1e-5, "{a} vs {b}");
        }
        // Sub-slice of rows (still standard layout) works too.
        let part = model
            .predict(x.slice(ndarray::s![40..75, ..]))
            .expect("predict");
        assert_eq!(part.to_vec(), out[40..75].to_vec());
    }

    #[test]
    fn clone_gives_identical_outputs_and_training_is_deterministic() {
        let (x, y) = xor_data(300, 5);
        let cfg = MlpConfig {
            max_epochs: 10,
            batch_size: 32,
            ..MlpConfig::default()
        };
        let (a, ra) = Mlp::fit(x.view(), y.view(), None, &cfg).expect("fit");
        let (b, rb) = Mlp::fit(x.view(), y.view(), None, &cfg).expect("fit");
        assert_eq!(a, b);
        assert_eq!(ra, rb);
        let c = a.clone();
        assert_eq!(
            a.predict(x.view()).expect("predict"),
            c.predict(x.view()).expect("predict")
        );
        let (d, _) = Mlp::fit(
            x.view(),
            y.view(),
            None,
            &MlpConfig {
                seed: 43,
                ..cfg.clone()
            },
        )
        .expect("fit");
        assert_ne!(a, d);
    }

    #[test]
    fn unit_weights_equal_unweighted_and_balanced_weights() {
        let (x, y) = xor_data(300, 6);
        let cfg = MlpConfig {
            max_epochs: 5,
            ..MlpConfig::default()
        };
        let ones = vec![1.0f32; 300];
        let (a, _) = Mlp::fit(x.view(), y.view(), None, &cfg).expect("fit");
        let (b, _) = Mlp::fit_weighted(x.view(), y.view(), None, Some(&ones), &cfg).expect("fit");
        assert_eq!(a, b);

        let y = Array1::from(vec![1.0, 0.0, 0.0, 0.0]);
        let w = balanced_class_weights(y.view()).expect("weights");
        assert_eq!(w, vec![2.0, 2.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0]);
        let all_neg = Array1::<f32>::zeros(3);
        assert_eq!(
            balanced_class_weights(all_neg.view()).expect("w"),
            vec![1.0; 3]
        );

        // Rare positives: weighting lifts the scores of positives.
        let x = random_matrix(2000, 4, 30);
        let y = x.column(0).mapv(|v| if v > 1.6 { 1.0 } else { 0.0 });
        let cfg = MlpConfig {
            max_epochs: 20,
            hidden: vec![16],
            learning_rate: 5e-3,
            ..MlpConfig::default()
        };
        let w = balanced_class_weights(y.view()).expect("weights");
        let (plain, _) = Mlp::fit(x.view(), y.view(), None, &cfg).expect("fit");
        let (weighted, _) =
            Mlp::fit_weighted(x.view(), y.view(), None, Some(&w), &cfg).expect("fit");
        let mean_pos = |m: &Mlp| {
            let p = m.predict(x.view()).expect("predict");
            let (s, c) = p
                .iter()
                .zip(&y)
                .filter(|(_, y)| **y > 0.5)
                .fold((0.0, 0), |(s, c), (p, _)| (s + p, c + 1));
            s / c as f32
        };
        assert!(mean_pos(&weighted) > mean_pos(&plain));
    }

    #[test]
    fn validate_detects_corruption() {
        let model = small_model(4, vec![8], 3);
        assert!(model.validate().is_ok());
        assert_eq!(model.n_inputs(), 4);

        let mut bad = model.clone();
        bad.layers[0].weights[5] = f32::NAN;
        assert!(matches!(bad.validate(), Err(MlpError::InvalidModel { .. })));

        let mut bad = model.clone();
        bad.feature_std[1] = -1.0;
        assert!(matches!(bad.validate(), Err(MlpError::InvalidModel { .. })));

        let x = random_matrix(3, 4, 1);
        let mut bad = model.clone();
        bad.layers[1].weights.pop();
        assert!(matches!(bad.validate(), Err(MlpError::InvalidModel { .. })));
        assert!(matches!(
            bad.predict(x.view()),
            Err(MlpError::InvalidModel { .. })
        ));

        let mut bad = model.clone();
        bad.layers.truncate(1);
        assert!(matches!(
            bad.predict(x.view()),
            Err(MlpError::InvalidModel { .. })
        ));

        let mut bad = model.clone();
        bad.feature_mean.push(0.0);
        assert!(matches!(
            bad.predict(x.view()),
            Err(MlpError::InvalidModel { .. })
        ));

        let mut bad = model.clone();
        bad.layers[0].n_out = usize::MAX / 2;
        assert!(matches!(
            bad.predict(x.view()),
            Err(MlpError::InvalidModel { .. })
        ));
        let _ = MlpScratch::new(&bad);

        let mut bad = model;
        bad.layers[0].n_out = 9;
        assert!(matches!(
            bad.predict(x.view()),
            Err(MlpError::InvalidModel { .. })
        ));
    }

    #[test]
    fn constant_features_are_ignored() {
        let (x2, y) = xor_data(500, 10);
        let mut x = Array2::<f32>::from_elem((500, 3), 7.25);
        x.column_mut(0).assign(&x2.column(0));
        x.column_mut(1).assign(&x2.column(1));
        let cfg = MlpConfig {
            max_epochs: 3,
            ..MlpConfig::default()
        };
        let (model, _) = Mlp::fit(x.view(), y.view(), None, &cfg).expect("fit");
        assert_eq!(model.feature_std()[2], 0.0);
        assert_eq!(model.feature_mean()[2], 7.25);
        let mut shifted = x.clone();
        shifted.column_mut(2).fill(-1e6);
        assert_eq!(
            model.predict(x.view()).expect("p"),
            model.predict(shifted.view()).expect("p")
        );
    }

    /// Release-mode latency of a 32-64-1 network over 1000 rows.
    /// `cargo test --release -- --ignored --nocapture predict_latency`
    #[test]
    #[ignore]
    fn predict_latency() {
        use std::time::Instant;
        let model = small_model(32, vec![64], 1);
        let x = random_matrix(1000, 32, 2);
        let mut scratch = MlpScratch::new(&model);
        let mut out = vec![0.0f32; 1000];
        // Many short samples; the minimum filters out preemption by other
        // processes on this small shared machine, the median shows typical cost.
        let time = |f: &mut dyn FnMut()| {
            for _ in 0..500 {
                f();
            }
            let mut samples = Vec::with_capacity(2000);
            for _ in 0..2000 {
                let t = Instant::now();
                for _ in 0..10 {
                    f();
                }
                samples.push(t.elapsed().as_secs_f64() * 1e6 / 10.0);
            }
            samples.sort_by(f64::total_cmp);
            (samples[0], samples[samples.len() / 2])
        };
        let (best, median) = time(&mut || {
            model
                .predict_into(std::hint::black_box(x.view()), &mut scratch, &mut out)
                .expect("predict");
            std::hint::black_box(&out);
        });
        println!("predict_into (dispatched): best {best:.2} us, median {median:.2} us / 1000 rows");
        let (best, median) = time(&mut || {
            forward_portable(
                &model,
                std::hint::black_box(x.view()),
                &mut scratch,
                &mut out,
            );
            std::hint::black_box(&out);
        });
        println!("portable kernel (no FMA):  best {best:.2} us, median {median:.2} us");
        let (best, median) = time(&mut || {
            let p = model
                .predict(std::hint::black_box(x.view()))
                .expect("predict");
            std::hint::black_box(&p);
        });
        println!("predict (allocating):      best {best:.2} us, median {median:.2} us");
        // ndarray/matrixmultiply equivalent for comparison.
        let l0 = &model.layers[0];
        let l1 = &model.layers[1];
        let w0 = Array2::from_shape_vec((32, 64), l0.weights.clone()).expect("w0");
        let b0 = Array1::from(l0.bias.clone());
        let w1 = Array1::from(l1.weights.clone());
        let mean = Array1::from(model.feature_mean.clone());
        let inv = Array1::from(scratch.inv_std.clone());
        let (best, median) = time(&mut || {
            let xs = (&x - &mean) * &inv;
            let mut h = xs.dot(&w0);
            h += &b0;
            h.mapv_inplace(|v| v.max(0.0));
            let z = h.dot(&w1);
            let p = z.mapv(|v| sigmoid(v + l1.bias[0]));
            std::hint::black_box(&p);
        });
        println!("ndarray dot equivalent:    best {best:.2} us, median {median:.2} us");
    }
}
