//! "Here is some text, give me its vector": a BERT-family sentence encoder (such as
//! all-MiniLM-L6-v2) run in-process on the CPU.
//!
//! The only user of candle and tokenizers. [`Embedder::load`] reads a model from a local
//! folder (`config.json`, `tokenizer.json`, `model.safetensors`; never the network) and checks
//! each file before use; [`Embedder::embed`] turns texts into unit-length vectors the way
//! sentence-transformers does: WordPiece tokens framed by `[CLS]` and `[SEP]`, at most
//! [`MAX_TOKENS`], the BERT forward pass, the mean of the last hidden states over the real
//! (unpadded) tokens, L2 normalisation. candle only parses the config and the safetensors
//! file; the forward pass is hand-written in `bert` (see there why).
//!
//! Architecture Invariant: nothing here panics on a bad model folder: every shape the
//! forward pass relies on is checked against the weights at load.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use candle_core::{Device, Tensor};
use candle_transformers::models::bert::{Config as BertConfig, HiddenAct};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use tokenizers::{Tokenizer, TruncationParams};

use crate::error::{Error, Result};
use crate::fsutil::read;

mod bert;

/// Tokens per text, `[CLS]` and `[SEP]` included: all-MiniLM-L6-v2's `max_seq_length`
/// (the vectors it was evaluated with were cut there; longer texts are truncated).
pub const MAX_TOKENS: usize = 256;

/// Layers above this are refused as a damaged config rather than allocated.
const MAX_LAYERS: usize = 64;

/// The model's files, in the order they are loaded.
const CONFIG_FILE: &str = "config.json";
const TOKENIZER_FILE: &str = "tokenizer.json";
const WEIGHTS_FILE: &str = "model.safetensors";

/// What identifies the model that produced a vector: vectors of two models with different
/// identities must never be compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbedderInfo {
    /// The model folder's name, or the config's `_name_or_path` when the folder has none.
    pub name: String,
    /// The vectors' dimension (the model's `hidden_size`).
    pub dim: usize,
    /// The sha256 of `model.safetensors`, in lowercase hex.
    pub checksum: String,
}

/// A sentence encoder loaded from a local folder. `Send + Sync`: share it behind an `Arc`.
pub struct Embedder {
    bert: bert::Bert,
    tokenizer: Tokenizer,
    info: EmbedderInfo,
    /// Tokens per text after truncation: [`MAX_TOKENS`], or less if the model's position
    /// table is shorter.
    max_tokens: usize,
    /// Buffers of finished lone-text forward passes, for the next ones: fresh buffers of a
    /// few megabytes each cost page faults and page clearing on every query.
    scratch: Mutex<Vec<bert::Scratch>>,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("info", &self.info)
            .field("max_tokens", &self.max_tokens)
            .finish_non_exhaustive()
    }
}

impl Embedder {
    /// Loads the model in `dir`: `config.json` (a BERT config), `tokenizer.json` (a Hugging
    /// Face tokenizer; its own truncation and padding are replaced by this module's) and
    /// `model.safetensors`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if a file is missing or unreadable, [`Error::Corrupt`] naming the file if
    /// one cannot be parsed or the weights do not have the shapes the config describes.
    pub fn load(dir: &Path) -> Result<Embedder> {
        let config_path = dir.join(CONFIG_FILE);
        let config_bytes = read(&config_path)?;
        let config: BertConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| Error::corrupt(&config_path, e.to_string()))?;
        check_config(&config).map_err(|reason| Error::corrupt(&config_path, reason))?;
        let name = model_name(dir, &config_bytes);

        let tokenizer_path = dir.join(TOKENIZER_FILE);
        let tokenizer_bytes = read(&tokenizer_path)?;
        let mut tokenizer = Tokenizer::from_bytes(&tokenizer_bytes)
            .map_err(|e| Error::corrupt(&tokenizer_path, e.to_string()))?;
        let max_tokens = MAX_TOKENS.min(config.max_position_embeddings);
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                ..TruncationParams::default()
            }))
            .map_err(|e| Error::corrupt(&tokenizer_path, e.to_string()))?;
        let vocab = tokenizer.get_vocab_size(true);
        if vocab > config.vocab_size {
            return Err(Error::corrupt(
                &tokenizer_path,
                format!(
                    "{vocab} tokens but the model ({CONFIG_FILE}) has only {} embeddings",
                    config.vocab_size
                ),
            ));
        }

        let weights_path = dir.join(WEIGHTS_FILE);
        let weights = read(&weights_path)?;
        let checksum = hex(&Sha256::digest(&weights));
        let tensors = candle_core::safetensors::load_buffer(&weights, &Device::Cpu)
            .map_err(|e| Error::corrupt(&weights_path, e.to_string()))?;
        drop(weights);
        check_weights(&config, &tensors).map_err(|reason| {
            Error::corrupt(&weights_path, format!("{reason} (per {CONFIG_FILE})"))
        })?;
        let bert = bert::Bert::load(&config, &tensors).map_err(|reason| {
            Error::corrupt(&weights_path, format!("{reason} (per {CONFIG_FILE})"))
        })?;
        drop(tensors);

        Ok(Embedder {
            bert,
            tokenizer,
            info: EmbedderInfo {
                name,
                dim: config.hidden_size,
                checksum,
            },
            max_tokens,
            scratch: Mutex::new(Vec::new()),
        })
    }

    /// The model's identity: name, dimension and weights checksum.
    pub fn info(&self) -> &EmbedderInfo {
        &self.info
    }

    /// The vectors' dimension.
    pub fn dim(&self) -> usize {
        self.info.dim
    }

    /// How many tokens of `text` the model sees: `[CLS]` and `[SEP]` included, at most
    /// [`MAX_TOKENS`].
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] if the tokenizer fails.
    pub fn tokens(&self, text: &str) -> Result<usize> {
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| Error::backend("tokenizers", e))?;
        Ok(encoding.get_ids().len().min(self.max_tokens))
    }

    /// One unit-length vector of [`dim`](Self::dim) floats per text, in order. Texts longer
    /// than [`MAX_TOKENS`] tokens are truncated; an empty text still gets a vector (that of
    /// `[CLS] [SEP]`). Each text runs on its own, unpadded: a lone text shares its matrix
    /// products between rayon's threads, several texts run in parallel, longest first. The
    /// result does not depend on the batch.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] if the tokenizer or the forward pass fails.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| Error::backend("tokenizers", e))?;
        let ids = |i: usize| {
            let ids = encodings[i].get_ids();
            &ids[..ids.len().min(self.max_tokens)]
        };
        if texts.len() == 1 {
            let pool = || self.scratch.lock().unwrap_or_else(PoisonError::into_inner);
            let mut scratch = pool().pop().unwrap_or_default();
            let v = self.forward(ids(0), true, &mut scratch);
            pool().push(scratch);
            return Ok(vec![v?]);
        }
        // Longest first, so the last texts to start are the shortest (less idle time).
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(ids(i).len()));
        let vectors = order
            .par_iter()
            .with_max_len(1)
            .map_init(bert::Scratch::default, |scratch, &i| {
                self.forward(ids(i), false, scratch)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut out = vec![Vec::new(); texts.len()];
        for (&i, v) in order.iter().zip(vectors) {
            out[i] = v;
        }
        Ok(out)
    }

    /// The pooled, normalised vector of one text's token ids; `split` shares the matrix
    /// products between threads.
    fn forward(&self, ids: &[u32], split: bool, scratch: &mut bert::Scratch) -> Result<Vec<f32>> {
        let states = self
            .bert
            .forward(ids, split, scratch)
            .map_err(|e| Error::backend("shopdb bert", e))?;
        Ok(mean_normalised(states, self.info.dim))
    }
}

/// The L2-normalised mean of `states` (the row-major hidden states of a text's real tokens,
/// `dim` floats each).
fn mean_normalised(states: &[f32], dim: usize) -> Vec<f32> {
    let mut sum = vec![0f32; dim];
    let mut count = 0usize;
    for state in states.chunks_exact(dim.max(1)) {
        for (s, x) in sum.iter_mut().zip(state) {
            *s += x;
        }
        count += 1;
    }
    // The mean's scale cancels in the normalisation; divide anyway so the rounding matches
    // sentence-transformers' (sum / count, then normalise).
    let count = count.max(1) as f32;
    sum.iter_mut().for_each(|s| *s /= count);
    let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        sum.iter_mut().for_each(|s| *s /= norm);
    }
    sum
}

/// The folder's name, else the config's `_name_or_path`, else `unnamed`.
fn model_name(dir: &Path, config: &[u8]) -> String {
    let folder = dir
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from(dir))
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    folder
        .or_else(|| {
            serde_json::from_slice::<serde_json::Value>(config)
                .ok()?
                .get("_name_or_path")?
                .as_str()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "unnamed".to_owned())
}

/// The config values the forward pass divides by or allocates from, and the one activation
/// it implements (exact GELU), checked before use.
fn check_config(c: &BertConfig) -> std::result::Result<(), String> {
    if c.hidden_act != HiddenAct::Gelu {
        let act = format!("{:?}", c.hidden_act).to_lowercase();
        return Err(format!("hidden_act {act} is not supported (only gelu)"));
    }
    let positive = [
        ("vocab_size", c.vocab_size),
        ("hidden_size", c.hidden_size),
        ("num_hidden_layers", c.num_hidden_layers),
        ("num_attention_heads", c.num_attention_heads),
        ("intermediate_size", c.intermediate_size),
        ("type_vocab_size", c.type_vocab_size),
    ];
    if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
        return Err(format!("{name} is 0"));
    }
    if !c.hidden_size.is_multiple_of(c.num_attention_heads) {
        return Err(format!(
            "hidden_size {} is not a multiple of num_attention_heads {}",
            c.hidden_size, c.num_attention_heads
        ));
    }
    if c.num_hidden_layers > MAX_LAYERS {
        return Err(format!(
            "num_hidden_layers {} is over {MAX_LAYERS}",
            c.num_hidden_layers
        ));
    }
    if c.max_position_embeddings < 2 {
        return Err(format!(
            "max_position_embeddings {} leaves no room for [CLS] and [SEP]",
            c.max_position_embeddings
        ));
    }
    if !(c.layer_norm_eps.is_finite() && c.layer_norm_eps > 0.0) {
        return Err(format!(
            "layer_norm_eps {} is not positive",
            c.layer_norm_eps
        ));
    }
    Ok(())
}

/// Checks that the weights are the config's: the word embeddings' shape (vocabulary x
/// hidden size) and a last layer at the config's depth. The remaining tensors' shapes are
/// checked by [`bert::Bert::load`] as it packs them.
fn check_weights(
    c: &BertConfig,
    tensors: &std::collections::HashMap<String, Tensor>,
) -> std::result::Result<(), String> {
    let find = |suffix: &str| {
        tensors
            .iter()
            .find(|(name, _)| name.as_str() == suffix || name.ends_with(&format!(".{suffix}")))
            .map(|(_, t)| t)
    };
    let words = "embeddings.word_embeddings.weight";
    let Some(t) = find(words) else {
        return Err(format!("no tensor {words}"));
    };
    let want = [c.vocab_size, c.hidden_size];
    if t.dims() != want {
        return Err(format!(
            "{words} has shape {:?}, expected {want:?} (vocab_size x hidden_size)",
            t.dims()
        ));
    }
    let last = format!(
        "encoder.layer.{}.output.dense.weight",
        c.num_hidden_layers - 1
    );
    if find(&last).is_none() {
        return Err(format!(
            "no tensor {last}: fewer than {} layers",
            c.num_hidden_layers
        ));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
