//! # Next-item recommendation on Amazon Toys with the sequential (SASRec-style) model
//!
//! Run with `cargo run --release --example sequence_toys [-- --key value ...]`. Reads
//! `$SHOPDB_DATA/amazon-toys/Toys_user_sequence.txt` (`SHOPDB_DATA` defaults to `../shared/data`
//! next to the crate; without the file it prints one line and exits).
//!
//! Protocol (leave-one-out, as in the published SASRec figures): per user sequence `s`, the
//! validation target is `s[-2]`, the test target `s[-1]`. The model fits on every `s[:-2]` and
//! early-stops on validation NDCG@10 (full ranking, history excluded, pessimistic ties). The
//! test is then ranked after the history `s[:-1]` by that same model (the validation item is
//! input, never a training target), and by a model refitted on every `s[:-1]` for the chosen
//! number of epochs (the protocol of the published figures; `--refit 0` skips it). Nothing is
//! tuned on the test targets.
//!
//! Options (defaults are [`SeqConfig::default`]): `--dim`, `--max-len`, `--blocks`, `--heads`,
//! `--dropout`, `--negatives`, `--batch`, `--lr`, `--wd`, `--epochs`, `--patience`,
//! `--eval-every`, `--seed`, `--threads`, `--refit`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use shopdb::import::{read_sequences, OnError};
use shopdb::models::sasrec::{SeqConfig, SeqEpoch, SeqHooks, SeqModel};
use shopdb::Limits;

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

fn parse_args(cfg: &mut SeqConfig) -> AnyResult<bool> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut refit = true;
    for pair in args.chunks(2) {
        let [key, value] = pair else {
            return Err(format!("option {pair:?} has no value").into());
        };
        match key.as_str() {
            "--dim" => cfg.dim = value.parse()?,
            "--max-len" => cfg.max_len = value.parse()?,
            "--blocks" => cfg.blocks = value.parse()?,
            "--heads" => cfg.heads = value.parse()?,
            "--dropout" => cfg.dropout = value.parse()?,
            "--negatives" => cfg.negatives = value.parse()?,
            "--batch" => cfg.batch_size = value.parse()?,
            "--lr" => cfg.learning_rate = value.parse()?,
            "--wd" => cfg.weight_decay = value.parse()?,
            "--epochs" => cfg.max_epochs = value.parse()?,
            "--patience" => cfg.patience = value.parse()?,
            "--eval-every" => cfg.eval_every = value.parse()?,
            "--seed" => cfg.seed = value.parse()?,
            "--threads" => cfg.threads = value.parse()?,
            "--refit" => refit = value != "0",
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    Ok(refit)
}

fn main() -> AnyResult<()> {
    let mut cfg = SeqConfig::default();
    let refit = parse_args(&mut cfg)?;
    let root = std::env::var_os("SHOPDB_DATA").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"),
        PathBuf::from,
    );
    let path = root.join("amazon-toys/Toys_user_sequence.txt");
    if !path.exists() {
        println!("sequence_toys: {} not found, nothing to do", path.display());
        return Ok(());
    }
    let (seqs, _) = read_sequences(&path, &Limits::default(), OnError::Abort)?;
    // Dense item ids in the order of the item ids themselves, never in the order the
    // sequences mention them (that order would leak the test items into the ids).
    let mut names: BTreeMap<&str, u32> = BTreeMap::new();
    for s in &seqs {
        for item in &s.items {
            names.insert(item.as_str(), 0);
        }
    }
    for (id, slot) in names.values_mut().enumerate() {
        *slot = id as u32;
    }
    let n_items = names.len();
    let full: Vec<Vec<u32>> = seqs
        .iter()
        .filter(|s| s.items.len() >= 3)
        .map(|s| s.items.iter().map(|i| names[i.as_str()]).collect())
        .collect();
    let train: Vec<Vec<u32>> = full.iter().map(|s| s[..s.len() - 2].to_vec()).collect();
    let valid: Vec<(usize, u32)> = full
        .iter()
        .enumerate()
        .map(|(u, s)| (u, s[s.len() - 2]))
        .collect();
    let test_hist: Vec<Vec<u32>> = full.iter().map(|s| s[..s.len() - 1].to_vec()).collect();
    let test: Vec<(usize, u32)> = full
        .iter()
        .enumerate()
        .map(|(u, s)| (u, s[s.len() - 1]))
        .collect();
    let threads = if cfg.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        cfg.threads
    };
    println!(
        "Toys: {} users, {n_items} items, {} interactions; {cfg:?}, {threads} threads",
        full.len(),
        full.iter().map(Vec::len).sum::<usize>()
    );
    let on_epoch = |e: &SeqEpoch| {
        let v = e
            .valid_ndcg
            .map_or(String::new(), |v| format!("  valid NDCG@10 {v:.4}"));
        println!(
            "epoch {:>3}  loss {:.4}  {:.2} s{v}",
            e.epoch, e.loss, e.seconds
        );
    };
    let hooks = SeqHooks {
        on_epoch: Some(&on_epoch),
        cancel: None,
    };
    let started = Instant::now();
    let (model, report) = SeqModel::fit(&train, n_items, &cfg, &valid, &hooks)?;
    let fit_secs = started.elapsed().as_secs_f64();
    let train_secs: f64 = report.epoch_seconds.iter().sum();
    let v = model.evaluate(&train, &valid, 10)?;
    println!(
        "validation: NDCG@10 {:.4}  HR@10 {:.4}  ({} users; best epoch {} of {}; {:.2} s/epoch \
         training, {:.1} s validating; fit {:.1} s)",
        v.ndcg,
        v.hit_rate,
        v.users,
        report.best_epoch,
        report.epochs,
        train_secs / report.epochs.max(1) as f64,
        report.eval_seconds,
        fit_secs
    );
    let t = model.evaluate(&test_hist, &test, 10)?;
    println!(
        "test (validation-phase model, history s[:-1]): NDCG@10 {:.4}  HR@10 {:.4}  ({} users); \
         fit {fit_secs:.1} s",
        t.ndcg, t.hit_rate, t.users
    );
    if refit {
        let cfg2 = SeqConfig {
            max_epochs: report.best_epoch,
            ..cfg.clone()
        };
        let t0 = Instant::now();
        let (m, _) = SeqModel::fit(&test_hist, n_items, &cfg2, &[], &SeqHooks::default())?;
        let secs = t0.elapsed().as_secs_f64();
        let t = m.evaluate(&test_hist, &test, 10)?;
        println!(
            "test (refitted on s[:-1] for {} epochs, {secs:.1} s, {:.2} s/epoch): NDCG@10 {:.4}  \
             HR@10 {:.4}; validation fit + refit {:.1} s",
            report.best_epoch,
            secs / report.best_epoch.max(1) as f64,
            t.ndcg,
            t.hit_rate,
            fit_secs + secs
        );
    }
    Ok(())
}
