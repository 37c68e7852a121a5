//! Training: [`Mlp::fit`] and [`Mlp::fit_weighted`] (input checks, the validation split,
//! standardisation, Adam on shuffled mini-batches, early stopping on the monitored loss),
//! and [`balanced_class_weights`].

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis, Zip};

use super::infer::sigmoid;
use super::{check_len, inv_std, locate_non_finite, Dense, FitReport, Mlp, MlpConfig, MlpError};
use crate::models::SplitMix64;

/// Rows per chunk when evaluating a loss over a whole split.
const EVAL_CHUNK: usize = 4096;
/// Adam first-moment decay.
const ADAM_BETA1: f64 = 0.9;
/// Adam second-moment decay.
const ADAM_BETA2: f64 = 0.999;
/// Adam denominator epsilon.
const ADAM_EPS: f32 = 1e-8;

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
pub(super) fn split_rows(
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
