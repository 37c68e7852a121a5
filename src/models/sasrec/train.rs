//! Fitting: input checks, initialisation, AdamW on shuffled mini-batches split over worker
//! threads, full-ranking validation and early stopping.

use std::sync::atomic::Ordering;
use std::time::Instant;

use rayon::prelude::*;

use super::net::{self, Batch, Dims, Dropout, Layout, Work};
use super::{SeqConfig, SeqEpoch, SeqEval, SeqFitReport, SeqHooks, SeqModel, MAX_PARAMS};
use crate::models::{ModelError, SplitMix64};

/// Adam first-moment decay.
const BETA1: f64 = 0.9;
/// Adam second-moment decay.
const BETA2: f64 = 0.98;
/// Adam denominator epsilon.
const ADAM_EPS: f32 = 1e-8;
/// Users per evaluation chunk (one `chunk x n_items` score matrix per thread).
const EVAL_CHUNK: usize = 128;
/// Parameters per chunk of the parallel optimiser step.
const STEP_CHUNK: usize = 1 << 14;
/// The cut-off of the validation metric.
const VALID_K: usize = 10;

/// Checks that every `(user, target)` names a user of `n_users` and an item of `n_items`.
pub(super) fn check_targets(
    n_users: usize,
    n_items: usize,
    targets: &[(usize, u32)],
) -> Result<(), ModelError> {
    for &(u, t) in targets {
        if u >= n_users {
            return Err(ModelError::IdOutOfRange {
                kind: "user",
                id: u as u64,
                len: n_users,
            });
        }
        if t as usize >= n_items {
            return Err(ModelError::IdOutOfRange {
                kind: "item",
                id: u64::from(t),
                len: n_items,
            });
        }
    }
    Ok(())
}

/// The last `max_len` known items (`< n_items`) of `history`.
fn known_window(history: &[u32], n_items: usize, max_len: usize, out: &mut Vec<u32>) {
    out.clear();
    for &it in history.iter().rev() {
        if out.len() == max_len {
            break;
        }
        if (it as usize) < n_items {
            out.push(it);
        }
    }
    out.reverse();
}

/// Per-thread buffers of [`evaluate`].
#[derive(Default)]
struct EvalScratch {
    work: Work,
    batch: Batch,
    window: Vec<u32>,
    queries: Vec<f32>,
    scores: Vec<f32>,
}

/// Mean NDCG@k and HR@k of per-target NDCG@k values.
pub(super) fn summary(each: &[f64]) -> SeqEval {
    let users = each.len();
    let denom = (users as f64).max(1.0);
    let ndcg: f64 = each.iter().sum();
    let hits = each.iter().filter(|&&x| x > 0.0).count();
    SeqEval {
        users,
        ndcg: ndcg / denom,
        hit_rate: hits as f64 / denom,
    }
}

/// The NDCG@k of ranking each target after its history, in the order of `targets` (0 for a
/// target outside the top k, an empty history, or a target in its own history); runs on the
/// current rayon pool.
pub(super) fn evaluate_each(
    lay: &Layout,
    w: &[f32],
    histories: &[Vec<u32>],
    targets: &[(usize, u32)],
    k: usize,
) -> Result<Vec<f64>, ModelError> {
    let Dims {
        n_items,
        dim: d,
        max_len,
        ..
    } = lay.dims;
    let emb = w
        .get(lay.item..lay.item + n_items * d)
        .ok_or_else(|| ModelError::Numerical("weights too short".into()))?;
    let parts: Vec<Result<Vec<f64>, ModelError>> = targets
        .par_chunks(EVAL_CHUNK)
        .map_init(EvalScratch::default, |s, chunk| {
            s.batch.clear();
            // Row of each user's encoding in `queries`, or none for an empty window.
            let mut rows = Vec::with_capacity(chunk.len());
            for &(u, _) in chunk {
                let hist = histories.get(u).map_or(&[][..], Vec::as_slice);
                known_window(hist, n_items, max_len, &mut s.window);
                if s.window.is_empty() {
                    rows.push(None);
                } else {
                    rows.push(Some(s.batch.segs.len()));
                    s.batch.push(&s.window, None, max_len, 0);
                }
            }
            net::forward(lay, w, &s.batch, None, &mut s.work)?;
            let nq = s.batch.segs.len();
            s.queries.clear();
            for &(start, len) in &s.batch.segs {
                let r = start + len - 1;
                s.queries.extend_from_slice(&s.work.out[r * d..(r + 1) * d]);
            }
            s.scores.clear();
            s.scores.resize(nq * n_items, 0.0);
            net::gemm(
                false,
                true,
                nq,
                n_items,
                d,
                &s.queries,
                emb,
                0.0,
                &mut s.scores,
            )?;
            let mut out = vec![0f64; chunk.len()];
            for ((&(u, target), row), gain) in chunk.iter().zip(&rows).zip(out.iter_mut()) {
                let Some(q) = *row else {
                    continue;
                };
                let scores = &mut s.scores[q * n_items..(q + 1) * n_items];
                let mut excluded_target = false;
                for &j in histories.get(u).map_or(&[][..], Vec::as_slice) {
                    if j == target {
                        excluded_target = true;
                    }
                    if let Some(x) = scores.get_mut(j as usize) {
                        *x = f32::NEG_INFINITY;
                    }
                }
                if excluded_target {
                    continue;
                }
                let t = target as usize;
                let ts = scores[t];
                if ts.is_nan() || ts == f32::NEG_INFINITY {
                    continue;
                }
                // Pessimistic ties: every other candidate scoring at least the target's score
                // ranks above it; excluded items score -inf (below any finite target score).
                let rank = scores.iter().filter(|&&x| x >= ts).count();
                if rank <= k {
                    *gain = 1.0 / ((rank + 1) as f64).log2();
                }
            }
            Ok(out)
        })
        .collect();
    let mut each = Vec::with_capacity(targets.len());
    for p in parts {
        each.extend(p?);
    }
    Ok(each)
}

/// A training worker: its share of the mini-batch, its activations and its gradient.
struct Worker {
    work: Work,
    batch: Batch,
    grad: Vec<f32>,
    loss: f64,
    active: bool,
}

/// Everything a step's workers share.
struct StepInput<'a> {
    lay: &'a Layout,
    w: &'a [f32],
    train: &'a [Vec<u32>],
    negs: &'a [u32],
    dropout: Option<Dropout>,
    inv_total: f32,
}

impl Worker {
    fn step(&mut self, input: &StepInput<'_>, part: &[usize]) -> Result<(), ModelError> {
        self.active = !part.is_empty();
        self.loss = 0.0;
        if !self.active {
            return Ok(());
        }
        let max_len = input.lay.dims.max_len;
        self.batch.clear();
        for &u in part {
            let s = &input.train[u];
            let s = &s[s.len().saturating_sub(max_len + 1)..];
            let n = s.len() - 1;
            self.batch.push(&s[..n], Some(&s[1..]), max_len, u as u64);
        }
        // The gradient buffer is zero here: the optimiser step clears it after reading it.
        net::forward(
            input.lay,
            input.w,
            &self.batch,
            input.dropout,
            &mut self.work,
        )?;
        self.loss = net::sampled_softmax(
            input.lay,
            input.w,
            &self.batch,
            input.negs,
            input.inv_total,
            &mut self.work,
            &mut self.grad,
        )?;
        net::backward(
            input.lay,
            input.w,
            &self.batch,
            &mut self.work,
            &mut self.grad,
        )
    }
}

/// Normal initial weights: Xavier for the embeddings and matrices, zero biases, unit
/// layer-norm gains.
fn init_weights(lay: &Layout, rng: &mut SplitMix64) -> Vec<f32> {
    let Dims {
        n_items,
        dim: d,
        max_len,
        ffn: f,
        ..
    } = lay.dims;
    let mut w = vec![0f32; lay.total];
    let mut normal = |w: &mut [f32], fan_in: usize, fan_out: usize| {
        let std = (2.0 / (fan_in + fan_out) as f64).sqrt();
        for x in w.iter_mut() {
            *x = (rng.normal() * std) as f32;
        }
    };
    normal(&mut w[lay.item..lay.item + n_items * d], n_items, d);
    normal(&mut w[lay.pos..lay.pos + max_len * d], max_len, d);
    for b in &lay.blocks {
        normal(&mut w[b.wqkv..b.wqkv + 3 * d * d], d, d);
        normal(&mut w[b.wo..b.wo + d * d], d, d);
        normal(&mut w[b.w1..b.w1 + d * f], d, f);
        normal(&mut w[b.w2..b.w2 + f * d], f, d);
    }
    for g in lay
        .blocks
        .iter()
        .flat_map(|b| [b.ln1, b.ln2])
        .chain(std::iter::once(lay.lnf))
    {
        w[g..g + d].iter_mut().for_each(|x| *x = 1.0);
    }
    w
}

/// Splits `chunk` into `parts` contiguous runs of about equal row counts.
fn split_by_rows<'a>(chunk: &'a [usize], rows: &[usize], parts: usize) -> Vec<&'a [usize]> {
    let total: usize = chunk.iter().map(|&u| rows[u]).sum();
    let mut out = Vec::with_capacity(parts);
    let mut start = 0usize;
    let mut acc = 0usize;
    for p in 1..parts {
        let goal = total * p / parts;
        let mut end = start;
        while end < chunk.len() && acc + rows[chunk[end]] <= goal {
            acc += rows[chunk[end]];
            end += 1;
        }
        out.push(&chunk[start..end]);
        start = end;
    }
    out.push(&chunk[start..]);
    out
}

/// AdamW state.
struct Adam {
    m: Vec<f32>,
    v: Vec<f32>,
    /// 1 where weight decay applies, else 0.
    decay: Vec<f32>,
    t: i32,
}

impl Adam {
    fn new(lay: &Layout) -> Adam {
        let mut decay = vec![0f32; lay.total];
        for (a, b) in lay.decayed() {
            decay[a..b].iter_mut().for_each(|x| *x = 1.0);
        }
        Adam {
            m: vec![0.0; lay.total],
            v: vec![0.0; lay.total],
            decay,
            t: 0,
        }
    }

    /// One step with the sum of the workers' gradients, which are left zeroed for the next
    /// batch. Parallel over parameter chunks (the result does not depend on the chunking).
    fn step(&mut self, w: &mut [f32], workers: &mut [Worker], lr: f32, wd: f32) {
        self.t += 1;
        let bc1 = 1.0 - BETA1.powi(self.t);
        let bc2 = 1.0 - BETA2.powi(self.t);
        let lr_t = (f64::from(lr) * bc2.sqrt() / bc1) as f32;
        let wd_t = lr * wd;
        let (b1, b2) = (BETA1 as f32, BETA2 as f32);
        let Some((first, rest)) = workers.split_first_mut() else {
            return;
        };
        // Sum into the first worker's buffer, in worker order.
        for other in rest.iter_mut() {
            first
                .grad
                .par_chunks_mut(STEP_CHUNK)
                .zip(other.grad.par_chunks_mut(STEP_CHUNK))
                .for_each(|(acc, g)| {
                    for (a, x) in acc.iter_mut().zip(g.iter_mut()) {
                        *a += *x;
                        *x = 0.0;
                    }
                });
        }
        w.par_chunks_mut(STEP_CHUNK)
            .zip(self.m.par_chunks_mut(STEP_CHUNK))
            .zip(self.v.par_chunks_mut(STEP_CHUNK))
            .zip(self.decay.par_chunks(STEP_CHUNK))
            .zip(first.grad.par_chunks_mut(STEP_CHUNK))
            .for_each(|((((wc, mc), vc), dc), gc)| {
                for ((((w, m), v), &d), g) in wc
                    .iter_mut()
                    .zip(mc.iter_mut())
                    .zip(vc.iter_mut())
                    .zip(dc)
                    .zip(gc.iter_mut())
                {
                    let x = *g;
                    *g = 0.0;
                    *m = b1 * *m + (1.0 - b1) * x;
                    *v = b2 * *v + (1.0 - b2) * x * x;
                    *w -= lr_t * *m / (v.sqrt() + ADAM_EPS) + wd_t * d * *w;
                }
            });
    }
}

/// Checks a fit's inputs: the configuration, the catalog size, every item and every
/// validation target.
pub(super) fn check_inputs(
    train: &[Vec<u32>],
    n_items: usize,
    cfg: &SeqConfig,
    valid: &[(usize, u32)],
) -> Result<(), ModelError> {
    cfg.validate()?;
    if n_items == 0 || n_items > u32::MAX as usize {
        return Err(ModelError::InvalidParam {
            name: "n_items",
            reason: format!("must be in 1..=2^32-1, got {n_items}"),
        });
    }
    for s in train {
        if let Some(&it) = s.iter().find(|&&it| it as usize >= n_items) {
            return Err(ModelError::IdOutOfRange {
                kind: "item",
                id: u64::from(it),
                len: n_items,
            });
        }
    }
    check_targets(train.len(), n_items, valid)
}

/// The parameter layout of a model of `cfg` over `n_items`, within [`MAX_PARAMS`].
pub(super) fn layout_of(n_items: usize, cfg: &SeqConfig) -> Result<Layout, ModelError> {
    let dims = Dims {
        n_items,
        dim: cfg.dim,
        max_len: cfg.max_len,
        blocks: cfg.blocks,
        heads: cfg.heads,
        ffn: cfg.dim,
    };
    Layout::new(dims)
        .filter(|l| l.total <= MAX_PARAMS)
        .ok_or_else(|| ModelError::InvalidParam {
            name: "n_items/dim",
            reason: "too many parameters".into(),
        })
}

/// The worker threads of `threads` (`0`: one per core) and their pool.
pub(super) fn pool_of(threads: usize) -> Result<(usize, rayon::ThreadPool), ModelError> {
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| ModelError::Numerical(format!("thread pool: {e}")))?;
    Ok((threads, pool))
}

/// One model in training: its weights, optimiser state, workers and early-stopping state,
/// advanced an epoch at a time, so that several settings can be trained side by side
/// ([`race`]). Its generator is its own: interleaving trainers changes none of them.
pub(super) struct Trainer<'a> {
    train: &'a [Vec<u32>],
    valid: &'a [(usize, u32)],
    cfg: SeqConfig,
    lay: Layout,
    /// Predicted positions of each sequence.
    rows: Vec<usize>,
    /// The sequences with something to predict, in this epoch's order.
    order: Vec<usize>,
    rng: SplitMix64,
    w: Vec<f32>,
    adam: Adam,
    workers: Vec<Worker>,
    negs: Vec<u32>,
    report: SeqFitReport,
    best: Option<(f64, Vec<f32>)>,
    /// Each validation target's NDCG@10 at the best evaluation.
    best_each: Vec<f64>,
    since_best: usize,
    /// Early stopping's patience ran out or `max_epochs` were run.
    done: bool,
}

impl<'a> Trainer<'a> {
    /// A trainer at epoch 0, after [`check_inputs`].
    pub(super) fn new(
        train: &'a [Vec<u32>],
        n_items: usize,
        cfg: &SeqConfig,
        valid: &'a [(usize, u32)],
        threads: usize,
    ) -> Result<Self, ModelError> {
        let lay = layout_of(n_items, cfg)?;
        let rows: Vec<usize> = train
            .iter()
            .map(|s| s.len().saturating_sub(1).min(cfg.max_len))
            .collect();
        let order: Vec<usize> = (0..train.len()).filter(|&u| rows[u] > 0).collect();
        if order.is_empty() {
            return Err(ModelError::Empty("no sequence with two or more items"));
        }
        let mut rng = SplitMix64::new(cfg.seed);
        let w = init_weights(&lay, &mut rng);
        let adam = Adam::new(&lay);
        let workers = (0..threads)
            .map(|_| Worker {
                work: Work::default(),
                batch: Batch::default(),
                grad: vec![0.0; lay.total],
                loss: 0.0,
                active: false,
            })
            .collect();
        Ok(Trainer {
            train,
            valid,
            cfg: cfg.clone(),
            lay,
            rows,
            order,
            rng,
            w,
            adam,
            workers,
            negs: vec![0u32; cfg.negatives],
            report: SeqFitReport::default(),
            best: None,
            best_each: Vec::new(),
            since_best: 0,
            done: false,
        })
    }

    /// Epochs run so far.
    pub(super) fn epochs(&self) -> usize {
        self.report.epochs
    }

    /// Whether training is over (patience ran out, or the last epoch was run).
    pub(super) fn is_done(&self) -> bool {
        self.done
    }

    /// The best validation NDCG@10 so far.
    pub(super) fn best_ndcg(&self) -> Option<f64> {
        self.best.as_ref().map(|(n, _)| *n)
    }

    /// Each validation target's NDCG@10 at the best evaluation, in the order of the targets
    /// (empty before the first).
    pub(super) fn best_each(&self) -> &[f64] {
        &self.best_each
    }

    /// Ends training here (as early stopping would).
    pub(super) fn stop(&mut self) {
        self.done = true;
    }

    /// The fit report so far.
    pub(super) fn report(&self) -> &SeqFitReport {
        &self.report
    }

    /// Runs the next epoch on `pool`, and its validation when due (every
    /// [`SeqConfig::eval_every`] epochs and at the last); marks the trainer done when
    /// early stopping's patience runs out or the last epoch was run.
    pub(super) fn epoch(
        &mut self,
        pool: &rayon::ThreadPool,
        hooks: &SeqHooks<'_>,
    ) -> Result<(), ModelError> {
        if self.done {
            return Ok(());
        }
        let epoch = self.report.epochs + 1;
        let n_items = self.lay.dims.n_items;
        let threads = self.workers.len();
        let started = Instant::now();
        self.rng.shuffle(&mut self.order);
        let (mut loss_sum, mut row_sum) = (0f64, 0usize);
        for chunk in self.order.chunks(self.cfg.batch_size) {
            if hooks.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                return Err(ModelError::Cancelled);
            }
            for n in self.negs.iter_mut() {
                *n = self.rng.below(n_items as u64) as u32;
            }
            let step_seed = self.rng.next_u64();
            let total: usize = chunk.iter().map(|&u| self.rows[u]).sum();
            let parts = split_by_rows(chunk, &self.rows, threads);
            let input = StepInput {
                lay: &self.lay,
                w: &self.w,
                train: self.train,
                negs: &self.negs,
                dropout: (self.cfg.dropout > 0.0).then_some(Dropout {
                    rate: self.cfg.dropout,
                    seed: step_seed,
                }),
                inv_total: 1.0 / total as f32,
            };
            let workers = &mut self.workers;
            let results: Vec<Result<(), ModelError>> = pool.install(|| {
                workers
                    .par_iter_mut()
                    .zip(parts.par_iter())
                    .map(|(wk, part)| wk.step(&input, part))
                    .collect()
            });
            for r in results {
                r?;
            }
            loss_sum += self.workers.iter().map(|wk| wk.loss).sum::<f64>();
            row_sum += total;
            let (lr, wd) = (self.cfg.learning_rate, self.cfg.weight_decay);
            let (adam, w, workers) = (&mut self.adam, &mut self.w, &mut self.workers);
            pool.install(|| adam.step(w, workers, lr, wd));
        }
        let seconds = started.elapsed().as_secs_f64();
        let loss = loss_sum / row_sum.max(1) as f64;
        let report = &mut self.report;
        report.epochs = epoch;
        report.epoch_seconds.push(seconds);
        report.losses.push(loss);
        if !loss.is_finite() {
            return Err(ModelError::Numerical("training diverged".into()));
        }
        let mut valid_ndcg = None;
        let last = epoch >= self.cfg.max_epochs;
        if !self.valid.is_empty() && (epoch.is_multiple_of(self.cfg.eval_every) || last) {
            let t0 = Instant::now();
            let (lay, w, train, valid) = (&self.lay, &self.w, self.train, self.valid);
            let each = pool.install(|| evaluate_each(lay, w, train, valid, VALID_K))?;
            let eval = summary(&each);
            report.eval_seconds += t0.elapsed().as_secs_f64();
            report.valid_ndcg.push((epoch, eval.ndcg));
            valid_ndcg = Some(eval.ndcg);
            if self.best.as_ref().is_none_or(|(b, _)| eval.ndcg > *b) {
                self.best = Some((eval.ndcg, self.w.clone()));
                self.best_each = each;
                report.best_epoch = epoch;
                report.best_ndcg = Some(eval.ndcg);
                self.since_best = 0;
            } else {
                self.since_best += 1;
                self.done = self.since_best >= self.cfg.patience.max(1);
            }
        }
        self.done |= last;
        if let Some(cb) = hooks.on_epoch {
            cb(&SeqEpoch {
                epoch,
                loss,
                seconds,
                valid_ndcg,
            });
        }
        Ok(())
    }

    /// Trains until done.
    pub(super) fn run(
        &mut self,
        pool: &rayon::ThreadPool,
        hooks: &SeqHooks<'_>,
    ) -> Result<(), ModelError> {
        while !self.done {
            self.epoch(pool, hooks)?;
        }
        Ok(())
    }

    /// The best evaluation's weights (the last weights without validation targets).
    pub(super) fn finish(self) -> Result<(SeqModel, SeqFitReport), ModelError> {
        let mut report = self.report;
        let weights = match self.best {
            Some((_, b)) => b,
            None => {
                report.best_epoch = report.epochs;
                self.w
            }
        };
        let model = SeqModel {
            n_items: self.lay.dims.n_items,
            dim: self.cfg.dim,
            max_len: self.cfg.max_len,
            blocks: self.cfg.blocks,
            heads: self.cfg.heads,
            weights,
        };
        model
            .validate()
            .map_err(|_| ModelError::Numerical("training diverged (non-finite weights)".into()))?;
        Ok((model, report))
    }
}

impl SeqModel {
    /// Trains a model on `train` (one time-ordered item sequence per user, ids `< n_items`),
    /// early-stopping on `valid`: `(user index into train, next item)` pairs ranked after the
    /// user's whole training sequence (an empty `valid` trains `max_epochs` epochs and keeps
    /// the last weights). Sequences with fewer than two items teach nothing but may still be
    /// validation histories.
    ///
    /// # Errors
    /// [`ModelError::InvalidParam`] for a bad `cfg` or `n_items`,
    /// [`ModelError::IdOutOfRange`] for an item `>= n_items` or a validation user past
    /// `train`, [`ModelError::Empty`] when no sequence has two items,
    /// [`ModelError::Cancelled`] when [`SeqHooks::cancel`] was set, and
    /// [`ModelError::Numerical`] when training diverged.
    pub fn fit(
        train: &[Vec<u32>],
        n_items: usize,
        cfg: &SeqConfig,
        valid: &[(usize, u32)],
        hooks: &SeqHooks<'_>,
    ) -> Result<(SeqModel, SeqFitReport), ModelError> {
        check_inputs(train, n_items, cfg, valid)?;
        let (threads, pool) = pool_of(cfg.threads)?;
        let mut t = Trainer::new(train, n_items, cfg, valid, threads)?;
        t.run(&pool, hooks)?;
        t.finish()
    }
}

#[cfg(test)]
pub(super) mod testing {
    //! Hooks into the training internals for the gradient check.
    use super::*;

    /// Mean sampled-softmax loss of a batch and (optionally) its gradient, no dropout.
    pub fn loss_and_grad(
        lay: &Layout,
        w: &[f32],
        seqs: &[Vec<u32>],
        negs: &[u32],
        grad: Option<&mut Vec<f32>>,
    ) -> f64 {
        let max_len = lay.dims.max_len;
        let mut batch = Batch::default();
        for (u, s) in seqs.iter().enumerate() {
            let s = &s[s.len().saturating_sub(max_len + 1)..];
            let n = s.len() - 1;
            batch.push(&s[..n], Some(&s[1..]), max_len, u as u64);
        }
        let total = batch.rows();
        let mut work = Work::default();
        let mut scratch = vec![0f32; lay.total];
        net::forward(lay, w, &batch, None, &mut work).unwrap();
        let loss = net::sampled_softmax(
            lay,
            w,
            &batch,
            negs,
            1.0 / total as f32,
            &mut work,
            &mut scratch,
        )
        .unwrap();
        if let Some(g) = grad {
            net::backward(lay, w, &batch, &mut work, &mut scratch).unwrap();
            *g = scratch;
        }
        loss / total as f64
    }

    /// Initial weights of a model of shape `dims`.
    pub fn init(dims: Dims, seed: u64) -> (Layout, Vec<f32>) {
        let lay = Layout::new(dims).unwrap();
        let w = init_weights(&lay, &mut SplitMix64::new(seed));
        (lay, w)
    }
}
