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
//!
//! # Layout
//!
//! `mod.rs` (here) holds the public types ([`Mlp`], [`MlpConfig`], [`MlpError`],
//! [`FitReport`], [`MlpScratch`]) and the model's checks; `infer.rs` the forward pass, its
//! SIMD kernels and prediction; `train.rs` fitting: Adam on mini-batches, the validation
//! split and early stopping.
#![warn(missing_docs)]

mod infer;
mod train;

#[cfg(test)]
mod tests;

use std::fmt;

use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

pub use train::balanced_class_weights;

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
