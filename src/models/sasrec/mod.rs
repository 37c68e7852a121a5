//! SASRec-style sequential recommender: next-item prediction with causal self-attention.
//!
//! A user's history (item ids, oldest first) is encoded by a small transformer: item
//! embeddings (shared with the output layer) times `sqrt(dim)` plus learned positional
//! embeddings, then [`SeqConfig::blocks`] pre-layer-norm blocks of causal multi-head
//! self-attention and a point-wise ReLU feed-forward layer (both with residuals and dropout),
//! then a final layer norm. The score of item `j` after a history is the dot product of the
//! encoded last position with item `j`'s embedding. Unlike the co-occurrence models
//! ([`ItemCf`](crate::models::ItemCf), [`Mf`](crate::models::Mf)) it sees the *order* of a
//! history: what comes next after `A, B` can differ from what comes next after `B, A`.
//!
//! # Training
//!
//! [`SeqModel::fit`] predicts the next item at every position of every training sequence
//! (its last [`SeqConfig::max_len`] + 1 items) with a sampled softmax: the true next item
//! against [`SeqConfig::negatives`] items drawn uniformly and shared by the mini-batch (a
//! drawn negative equal to the target is masked out). AdamW on shuffled mini-batches of
//! sequences; weight decay applies to the embeddings and weight matrices only. Every
//! [`SeqConfig::eval_every`] epochs the model ranks the validation targets over all items
//! (the user's training items excluded, pessimistic ties) and training stops once validation
//! NDCG@10 has not improved for [`SeqConfig::patience`] evaluations; the best evaluation's
//! weights are returned.
//!
//! The forward and backward passes are written out by hand (`net.rs`): the real positions of
//! a mini-batch are packed into one `(rows x dim)` matrix, so every dense layer is a single
//! matrix product, and attention runs per sequence within its own rows (no padding is ever
//! computed). The mini-batch is split into [`SeqConfig::threads`] contiguous parts, each with
//! its own gradient buffer; the parts' gradients are summed in a fixed order before the step.
//!
//! # Determinism and persistence
//!
//! Initialisation, shuffling, negatives and dropout masks come from the crate's SplitMix64
//! generator seeded by [`SeqConfig::seed`]; a sequence's dropout masks depend on the step and
//! the sequence, not on the thread that handles it. The same data, configuration and
//! `threads` give a bit-identical model; a different thread count sums the gradients in a
//! different order (float rounding), so the models differ slightly. [`SeqModel`] derives
//! `Serialize`/`Deserialize` (one flat `Vec<f32>` of weights); call [`SeqModel::validate`]
//! after decoding. The module performs no I/O.
//!
//! # Layout
//!
//! `mod.rs` (here) holds the public types and the model's checks and inference; `net.rs` the
//! parameter layout, the forward and backward passes and the loss; `train.rs` fitting (AdamW,
//! batching, threads, evaluation and early stopping).
#![warn(missing_docs)]

mod net;
mod race;
mod train;

#[cfg(test)]
mod tests;

use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};

pub use self::race::{
    SeqEnd, SeqEntry, SeqRace, BEHIND_EVALS, MAX_RACE_FLOATS, MIN_GAIN, MIN_STANDARD_ERRORS,
};

use self::net::{Batch, Dims, Layout, Work};
use crate::models::linalg;
use crate::models::{check_len, ModelError};

/// Largest accepted embedding width.
pub const MAX_DIM: usize = 1024;
/// Largest accepted history window.
pub const MAX_LEN: usize = 1024;
/// Largest accepted number of blocks.
pub const MAX_BLOCKS: usize = 16;
/// Largest accepted number of parameters (a model of 2^28 floats is 1 GiB).
pub const MAX_PARAMS: usize = 1 << 28;

/// Training hyper-parameters for [`SeqModel::fit`]. The defaults suit a catalogue of ~10k
/// items and ~20k short sequences (Amazon 5-core scale): on Amazon Toys (leave-one-out, full
/// ranking, the `sequence_toys` example) they early-stop after about 100 epochs of ~1 s on two
/// cores, and the model refitted for that many epochs ranks the test items at NDCG@10 0.069,
/// HR@10 0.114 (two seeds), against 0.058 / 0.097 published for SASRec with 256 sampled
/// negatives.
///
/// | field | default |
/// | --- | --- |
/// | `dim` | `64` |
/// | `max_len` | `50` |
/// | `blocks` | `1` |
/// | `heads` | `1` |
/// | `dropout` | `0.5` |
/// | `negatives` | `1024` |
/// | `batch_size` | `128` |
/// | `learning_rate` | `2e-3` |
/// | `weight_decay` | `0.0` |
/// | `max_epochs` | `200` |
/// | `patience` | `4` |
/// | `eval_every` | `5` |
/// | `seed` | `42` |
/// | `threads` | `0` (all cores) |
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeqConfig {
    /// Embedding and hidden width (also the feed-forward width); a multiple of `heads`,
    /// `1..=`[`MAX_DIM`]. Default `64`.
    pub dim: usize,
    /// History window: the last `max_len` items of a history are encoded, and training uses
    /// the last `max_len + 1` items of a sequence. `1..=`[`MAX_LEN`]. Default `50`.
    pub max_len: usize,
    /// Self-attention blocks, `1..=`[`MAX_BLOCKS`]. Default `1` (a second block scored a
    /// little higher on the Toys validation targets for 50% more time per epoch).
    pub blocks: usize,
    /// Attention heads per block (divides `dim`). Default `1`.
    pub heads: usize,
    /// Drop rate in `[0, 0.9]` of the input embedding, the attention output, the
    /// feed-forward hidden layer and its output. Default `0.5` (small, sparse catalogues
    /// such as Amazon 5-core overfit quickly: 0.3 scored clearly lower there). The engine's
    /// per-shop tuning races 0.3 and 0.2 beside the configured rate
    /// ([`SeqModel::fit_raced`]).
    pub dropout: f32,
    /// Negatives per mini-batch of the sampled softmax (drawn uniformly, shared by every
    /// position of the batch), `> 0`. Default `1024`: on Toys it reached the validation
    /// score of 256 negatives in about half the epochs (each ~30% dearer) and ended higher;
    /// 256 is the published SASRec recipe.
    pub negatives: usize,
    /// Sequences per mini-batch, `> 0`. Default `128`.
    pub batch_size: usize,
    /// AdamW step size (finite, `> 0`). Default `2e-3` (converges in fewer epochs than
    /// `1e-3` to the same validation score).
    pub learning_rate: f32,
    /// Decoupled weight decay per step, times the learning rate, on the embeddings and weight
    /// matrices (finite, `>= 0`). Default `0`.
    pub weight_decay: f32,
    /// Upper bound on the passes over the training sequences, `> 0`. Default `200`.
    pub max_epochs: usize,
    /// Early stopping: training stops after this many consecutive evaluations without a new
    /// best validation NDCG@10 (`0` acts as `1`). Default `4`.
    pub patience: usize,
    /// Epochs between validation evaluations (`> 0`; the last epoch is always evaluated).
    /// A full-ranking evaluation of ~20k users costs about one epoch. Default `5`.
    pub eval_every: usize,
    /// Seed of the SplitMix64 generator driving initialisation, shuffling, negatives and
    /// dropout. Default `42`.
    pub seed: u64,
    /// Worker threads for training and evaluation (`0`: one per core). Each mini-batch is
    /// split into this many parts of about equal positions, one per thread, and the parts'
    /// gradients are summed in a fixed order, so a fit is reproducible for a given seed and
    /// thread count; another thread count rounds the sums differently and gives a slightly
    /// different model. The step waits for the slowest part: on a machine where other work
    /// holds a core, more threads than free cores is slower. Default `0`.
    pub threads: usize,
}

impl Default for SeqConfig {
    fn default() -> Self {
        SeqConfig {
            dim: 64,
            max_len: 50,
            blocks: 1,
            heads: 1,
            dropout: 0.5,
            negatives: 1024,
            batch_size: 128,
            learning_rate: 2e-3,
            weight_decay: 0.0,
            max_epochs: 200,
            patience: 4,
            eval_every: 5,
            seed: 42,
            threads: 0,
        }
    }
}

fn invalid(name: &'static str, reason: &str) -> ModelError {
    ModelError::InvalidParam {
        name,
        reason: reason.into(),
    }
}

impl SeqConfig {
    /// Checks every field is in range; [`SeqModel::fit`] calls this first.
    ///
    /// # Errors
    /// [`ModelError::InvalidParam`] naming the first field out of range.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.dim == 0 || self.dim > MAX_DIM {
            return Err(invalid("dim", "must be in 1..=1024"));
        }
        if self.heads == 0 || !self.dim.is_multiple_of(self.heads) {
            return Err(invalid("heads", "must be > 0 and divide dim"));
        }
        if self.max_len == 0 || self.max_len > MAX_LEN {
            return Err(invalid("max_len", "must be in 1..=1024"));
        }
        if self.blocks == 0 || self.blocks > MAX_BLOCKS {
            return Err(invalid("blocks", "must be in 1..=16"));
        }
        if !(0.0..=0.9).contains(&self.dropout) {
            return Err(invalid("dropout", "must be in [0, 0.9]"));
        }
        if self.negatives == 0 || self.negatives > 1 << 20 {
            return Err(invalid("negatives", "must be in 1..=2^20"));
        }
        if self.batch_size == 0 {
            return Err(invalid("batch_size", "must be > 0"));
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(invalid("learning_rate", "must be finite and > 0"));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(invalid("weight_decay", "must be finite and >= 0"));
        }
        if self.max_epochs == 0 {
            return Err(invalid("max_epochs", "must be > 0"));
        }
        if self.eval_every == 0 {
            return Err(invalid("eval_every", "must be > 0"));
        }
        Ok(())
    }
}

/// One epoch of [`SeqModel::fit`], as passed to [`SeqHooks::on_epoch`].
#[derive(Clone, Debug, PartialEq)]
pub struct SeqEpoch {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean sampled-softmax loss per predicted position over the epoch.
    pub loss: f64,
    /// Wall-clock seconds of the epoch's training steps (evaluation excluded).
    pub seconds: f64,
    /// Validation NDCG@10 after this epoch, if it was evaluated.
    pub valid_ndcg: Option<f64>,
}

/// Callbacks of [`SeqModel::fit`]: progress after every epoch and cancellation.
#[derive(Clone, Copy, Default)]
pub struct SeqHooks<'a> {
    /// Called after every epoch (on the calling thread).
    pub on_epoch: Option<&'a (dyn Fn(&SeqEpoch) + Sync)>,
    /// Checked before every mini-batch; once `true` the fit stops with
    /// [`ModelError::Cancelled`].
    pub cancel: Option<&'a AtomicBool>,
}

impl std::fmt::Debug for SeqHooks<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeqHooks")
            .field("on_epoch", &self.on_epoch.is_some())
            .field("cancel", &self.cancel)
            .finish()
    }
}

/// What happened during [`SeqModel::fit`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SeqFitReport {
    /// Epochs run (`<= max_epochs`).
    pub epochs: usize,
    /// 1-based epoch whose weights were returned (the last one without validation targets).
    pub best_epoch: usize,
    /// Validation NDCG@10 of the returned weights (`None` without validation targets).
    pub best_ndcg: Option<f64>,
    /// Training seconds of every epoch (evaluation excluded).
    pub epoch_seconds: Vec<f64>,
    /// Mean training loss of every epoch.
    pub losses: Vec<f64>,
    /// `(epoch, validation NDCG@10)` of every evaluation.
    pub valid_ndcg: Vec<(usize, f64)>,
    /// Seconds spent evaluating on the validation targets.
    pub eval_seconds: f64,
}

/// Ranking quality of next-item predictions ([`SeqModel::evaluate`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SeqEval {
    /// Targets ranked.
    pub users: usize,
    /// Mean NDCG@k (one relevant item: `1 / log2(rank + 1)` when `rank <= k`).
    pub ndcg: f64,
    /// Share of targets ranked within the first `k`.
    pub hit_rate: f64,
}

/// A trained sequential recommender. Build one with [`SeqModel::fit`]; score with
/// [`SeqModel::score_history`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeqModel {
    n_items: usize,
    dim: usize,
    max_len: usize,
    blocks: usize,
    heads: usize,
    /// Every parameter, in the order of the layout in `net.rs`: item embedding, positional
    /// embedding, the blocks, the final layer norm.
    weights: Vec<f32>,
}

impl SeqModel {
    /// Number of items the model scores (ids `0..n_items`).
    pub fn n_items(&self) -> usize {
        self.n_items
    }

    /// Embedding width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// History window: only the last `max_len` known items of a history are encoded.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    fn dims(&self) -> Dims {
        Dims {
            n_items: self.n_items,
            dim: self.dim,
            max_len: self.max_len,
            blocks: self.blocks,
            heads: self.heads,
            ffn: self.dim,
        }
    }

    /// The layout, after the cheap structural checks that keep inference panic-free.
    fn layout(&self) -> Result<Layout, ModelError> {
        let bad = |reason: String| ModelError::InvalidParam {
            name: "sequence model",
            reason,
        };
        if self.n_items == 0 || self.n_items > u32::MAX as usize {
            return Err(bad(format!("n_items {} out of range", self.n_items)));
        }
        if self.dim == 0
            || self.dim > MAX_DIM
            || self.heads == 0
            || !self.dim.is_multiple_of(self.heads)
            || self.max_len == 0
            || self.max_len > MAX_LEN
            || self.blocks == 0
            || self.blocks > MAX_BLOCKS
        {
            return Err(bad(format!(
                "shape dim {} heads {} max_len {} blocks {} out of range",
                self.dim, self.heads, self.max_len, self.blocks
            )));
        }
        let lay = Layout::new(self.dims())
            .filter(|l| l.total <= MAX_PARAMS)
            .ok_or_else(|| bad("too many parameters".into()))?;
        if self.weights.len() != lay.total {
            return Err(bad(format!(
                "{} weights, expected {}",
                self.weights.len(),
                lay.total
            )));
        }
        Ok(lay)
    }

    /// Checks that the shape is in range, the weight vector has the layout's length and every
    /// weight is finite. Call after decoding a model.
    ///
    /// # Errors
    /// [`ModelError::InvalidParam`] for a bad shape, [`ModelError::NonFinite`] for a NaN or
    /// infinite weight.
    pub fn validate(&self) -> Result<(), ModelError> {
        self.layout()?;
        if self.weights.iter().any(|w| !w.is_finite()) {
            return Err(ModelError::NonFinite {
                what: "sequence model weight",
            });
        }
        Ok(())
    }

    /// The known items of `history` (ids `< n_items`), the last `max_len` of them, with their
    /// indices in `history`.
    fn window(&self, history: &[u32]) -> (Vec<u32>, Vec<usize>) {
        let mut items = Vec::new();
        let mut at = Vec::new();
        for (i, &it) in history.iter().enumerate().rev() {
            if items.len() == self.max_len {
                break;
            }
            if (it as usize) < self.n_items {
                items.push(it);
                at.push(i);
            }
        }
        items.reverse();
        at.reverse();
        (items, at)
    }

    /// Runs the encoder over one history window; `None` for an empty window.
    fn run(&self, items: &[u32]) -> Result<Option<(Layout, Work)>, ModelError> {
        let lay = self.layout()?;
        if items.is_empty() {
            return Ok(None);
        }
        let mut batch = Batch::default();
        batch.push(items, None, self.max_len, 0);
        let mut work = Work::default();
        net::forward(&lay, &self.weights, &batch, None, &mut work)?;
        Ok(Some((lay, work)))
    }

    /// The encoded history: the final hidden state at its last position (`dim` floats), the
    /// query vector that [`SeqModel::score_history`] multiplies with every item embedding.
    /// Unknown ids (`>= n_items`) are skipped; an empty history encodes to zeros.
    ///
    /// # Errors
    /// [`ModelError::InvalidParam`] for a model whose shapes are inconsistent.
    pub fn encode(&self, history: &[u32]) -> Result<Vec<f32>, ModelError> {
        let (items, _) = self.window(history);
        match self.run(&items)? {
            None => Ok(vec![0.0; self.dim]),
            Some((_, work)) => {
                let d = self.dim;
                let n = items.len();
                Ok(work.out[(n - 1) * d..n * d].to_vec())
            }
        }
    }

    /// Scores every item as the next one after `history` (item ids, oldest first) into `out`
    /// (`n_items` slots): the dot product of [`SeqModel::encode`] with each item embedding.
    /// History items are not excluded (the caller filters them). Returns `false`, with every
    /// score 0, when no history item is known.
    ///
    /// # Errors
    /// [`ModelError::LengthMismatch`] when `out` does not have `n_items` slots,
    /// [`ModelError::InvalidParam`] for a model whose shapes are inconsistent.
    pub fn score_history(&self, history: &[u32], out: &mut [f32]) -> Result<bool, ModelError> {
        check_len(out, self.n_items)?;
        let (items, _) = self.window(history);
        if items.is_empty() {
            out.iter_mut().for_each(|s| *s = 0.0);
            return Ok(false);
        }
        let q = self.encode(&items)?;
        self.score_vector(&q, out)?;
        Ok(true)
    }

    /// Scores every item against an encoded history `q` ([`SeqModel::encode`]) into `out`
    /// (`n_items` slots): one dense scan of the item embeddings.
    ///
    /// # Errors
    /// [`ModelError::LengthMismatch`] when `q` is not `dim` long or `out` not `n_items`,
    /// [`ModelError::InvalidParam`] for a model whose shapes are inconsistent.
    pub fn score_vector(&self, q: &[f32], out: &mut [f32]) -> Result<(), ModelError> {
        self.layout()?;
        let emb = self.item_embeddings();
        linalg::score_rows(emb, q, self.dim, out, self.n_items, "encoded history")
    }

    /// The embedding of item `i` (what [`SeqModel::score_vector`] multiplies `q` with), or
    /// `None` past `n_items` or for a model whose shapes are inconsistent.
    pub fn item_vector(&self, i: u32) -> Option<&[f32]> {
        let i = i as usize;
        if i >= self.n_items {
            return None;
        }
        self.item_embeddings().get(i * self.dim..(i + 1) * self.dim)
    }

    /// Every item's embedding, row-major (`n_items x dim`); empty for a model whose shapes
    /// are inconsistent.
    pub fn item_embeddings(&self) -> &[f32] {
        self.layout()
            .ok()
            .and_then(|lay| {
                self.weights
                    .get(lay.item..lay.item + self.n_items * self.dim)
            })
            .unwrap_or(&[])
    }

    /// Attention of the last history position over the history (one weight per entry of
    /// `history`, summing to 1 over the encoded window), averaged over heads and blocks: which
    /// earlier items the prediction looked at, for explanations. Unknown ids and items
    /// before the window get 0; an empty history gives all zeros.
    ///
    /// # Errors
    /// [`ModelError::InvalidParam`] for a model whose shapes are inconsistent.
    pub fn attention(&self, history: &[u32]) -> Result<Vec<f32>, ModelError> {
        let (items, at) = self.window(history);
        let mut out = vec![0f32; history.len()];
        if let Some((lay, work)) = self.run(&items)? {
            let weights = work.attention_of_last(&lay, 0, items.len());
            for (&i, &a) in at.iter().zip(&weights) {
                out[i] = a;
            }
        }
        Ok(out)
    }

    /// Full-ranking next-item quality: for every `(user, target)` the target is ranked among
    /// all items after `histories[user]`, the history's own items removed from the candidates,
    /// with pessimistic ties (`rank = 1 + #(scoring above) + #(others scoring equal)`).
    /// Returns NDCG@k and HR@k over all `targets`; a target inside its own history (never a
    /// candidate) or after a history with no known item counts as a miss. Users run in
    /// parallel on the current rayon pool.
    ///
    /// # Errors
    /// [`ModelError::IdOutOfRange`] for a user past `histories` or a target `>= n_items`,
    /// [`ModelError::InvalidParam`] for `k == 0` or a model whose shapes are inconsistent.
    pub fn evaluate(
        &self,
        histories: &[Vec<u32>],
        targets: &[(usize, u32)],
        k: usize,
    ) -> Result<SeqEval, ModelError> {
        let lay = self.layout()?;
        if k == 0 {
            return Err(invalid("k", "must be > 0"));
        }
        train::check_targets(histories.len(), self.n_items, targets)?;
        let each = train::evaluate_each(&lay, &self.weights, histories, targets, k)?;
        Ok(train::summary(&each))
    }
}
