//! Tests of the sequential recommender: the hand-written gradient against finite
//! differences, learning order on generated chains, determinism, the evaluation against the
//! crate's reference, the scoring contract and decoding damaged models.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::net::{self, Dims, Layout};
use super::train::testing;
use super::*;
use crate::models::{Interaction, Interactions, ItemCf, ItemCfParams, SplitMix64};

/// Every tensor of a layout as `(name, start, len)`.
fn tensors(lay: &Layout) -> Vec<(String, usize, usize)> {
    let d = lay.dims.dim;
    let f = lay.dims.ffn;
    let mut out = vec![
        ("item".to_string(), lay.item, lay.dims.n_items * d),
        ("pos".to_string(), lay.pos, lay.dims.max_len * d),
    ];
    for (b, o) in lay.blocks.iter().enumerate() {
        let mut add = |name: &str, start: usize, len: usize| {
            out.push((format!("block{b}.{name}"), start, len));
        };
        add("ln1.gain", o.ln1, d);
        add("ln1.bias", o.ln1 + d, d);
        // Wqkv is `d x 3d`: row r holds Q, K, V columns side by side; check each as a whole
        // matrix through its columns below.
        add("wqkv", o.wqkv, 3 * d * d);
        add("bq", o.bqkv, d);
        add("bk", o.bqkv + d, d);
        add("bv", o.bqkv + 2 * d, d);
        add("wo", o.wo, d * d);
        add("bo", o.bo, d);
        add("ln2.gain", o.ln2, d);
        add("ln2.bias", o.ln2 + d, d);
        add("w1", o.w1, d * f);
        add("b1", o.b1, f);
        add("w2", o.w2, f * d);
        add("b2", o.b2, d);
    }
    out.push(("final_ln.gain".into(), lay.lnf, d));
    out.push(("final_ln.bias".into(), lay.lnf + d, d));
    out
}

/// The sub-range of the Q, K or V columns (`which` 0, 1, 2) of a `d x 3d` matrix at `start`.
fn qkv_columns(start: usize, d: usize, which: usize) -> Vec<usize> {
    (0..d)
        .flat_map(|r| (0..d).map(move |c| start + r * 3 * d + which * d + c))
        .collect()
}

fn rel_error(a: &[f64], b: &[f64]) -> (f64, f64, f64) {
    let diff: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        .sqrt();
    let na = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    (diff / (na + nb).max(1e-12), na, nb)
}

#[test]
fn gradient_matches_finite_differences_for_every_tensor() {
    let dims = Dims {
        n_items: 7,
        dim: 8,
        max_len: 4,
        blocks: 2,
        heads: 2,
        ffn: 8,
    };
    let (lay, mut w) = testing::init(dims, 5);
    // Move the biases and layer norms off their initial values so their gradients are generic.
    let mut rng = SplitMix64::new(9);
    for (name, start, len) in tensors(&lay) {
        if !(name.contains("item") || name.contains("pos") || name.starts_with("block0.w")) {
            for x in &mut w[start..start + len] {
                *x += (rng.normal() * 0.2) as f32;
            }
        }
    }
    // One sequence longer than the window (truncated), several lengths, a repeated item.
    let seqs: Vec<Vec<u32>> = vec![
        vec![0, 1, 2, 3, 4, 5, 6],
        vec![3, 1],
        vec![6, 2, 5],
        vec![1, 1, 4, 0],
    ];
    // Negatives with a duplicate and several that hit targets (masked).
    let negs = [2u32, 5, 5, 0, 6, 3];
    let mut grad = Vec::new();
    testing::loss_and_grad(&lay, &w, &seqs, &negs, Some(&mut grad));
    let eps = 3e-3f32;
    let numeric = |w: &mut Vec<f32>, i: usize| {
        let keep = w[i];
        w[i] = keep + eps;
        let up = testing::loss_and_grad(&lay, w, &seqs, &negs, None);
        w[i] = keep - eps;
        let down = testing::loss_and_grad(&lay, w, &seqs, &negs, None);
        w[i] = keep;
        (up - down) / (2.0 * f64::from(eps))
    };
    let mut checked = 0usize;
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for (name, start, len) in tensors(&lay) {
        if name.ends_with("wqkv") {
            for (k, part) in ["wq", "wk", "wv"].iter().enumerate() {
                groups.push((name.replace("wqkv", part), qkv_columns(start, dims.dim, k)));
            }
        } else {
            groups.push((name, (start..start + len).collect()));
        }
    }
    for (name, idx) in &groups {
        let num: Vec<f64> = idx.iter().map(|&i| numeric(&mut w, i)).collect();
        let ana: Vec<f64> = idx.iter().map(|&i| f64::from(grad[i])).collect();
        checked += idx.len();
        let (rel, nn, na) = rel_error(&num, &ana);
        eprintln!("{name:>16}: relative error {rel:.2e}, |gradient| {na:.2e}");
        if name.ends_with(".bk") {
            // Adding the same vector to every key shifts every score of a row equally: the
            // softmax ignores it, so the true gradient is zero.
            assert!(
                na < 1e-6 && nn < 1e-3,
                "{name}: |analytic| {na}, |numeric| {nn}"
            );
            continue;
        }
        assert!(
            nn > 1e-4,
            "{name}: the loss should depend on it (|numeric| {nn})"
        );
        assert!(
            rel < 1e-2,
            "{name}: relative error {rel} (|numeric| {nn}, |analytic| {na})"
        );
    }
    assert_eq!(checked, lay.total, "every parameter is checked");
}

/// Cyclic chains of `len` items; every user walks `steps` consecutive items from a random start.
/// Item ids are shuffled so that nothing follows the id order.
fn chain_log(chains: usize, len: usize, users: usize, seed: u64) -> (Vec<Vec<u32>>, usize) {
    let n_items = chains * len;
    let mut ids: Vec<u32> = (0..n_items as u32).collect();
    let mut rng = SplitMix64::new(seed);
    rng.shuffle(&mut ids);
    let seqs = (0..users)
        .map(|_| {
            let c = rng.below(chains as u64) as usize;
            let start = rng.below(len as u64) as usize;
            let steps = 4 + rng.below(3) as usize;
            (0..steps)
                .map(|t| ids[c * len + (start + t) % len])
                .collect()
        })
        .collect();
    (seqs, n_items)
}

#[test]
fn learns_the_order_that_co_occurrence_cannot_see() {
    let (seqs, n_items) = chain_log(30, 8, 2400, 17);
    let histories: Vec<Vec<u32>> = seqs.iter().map(|s| s[..s.len() - 1].to_vec()).collect();
    let targets: Vec<(usize, u32)> = seqs
        .iter()
        .enumerate()
        .map(|(u, s)| (u, s[s.len() - 1]))
        .collect();
    let cfg = SeqConfig {
        dim: 16,
        max_len: 8,
        blocks: 1,
        heads: 1,
        dropout: 0.1,
        negatives: 32,
        batch_size: 64,
        learning_rate: 5e-3,
        max_epochs: 30,
        patience: 3,
        eval_every: 5,
        threads: 2,
        ..SeqConfig::default()
    };
    // No validation targets: the held-out next items are never seen.
    let (model, report) =
        SeqModel::fit(&histories, n_items, &cfg, &[], &SeqHooks::default()).expect("fit");
    assert_eq!(report.epochs, cfg.max_epochs);
    let first = model.evaluate(&histories, &targets, 1).expect("evaluate");
    // Item-CF over the same histories sees co-occurrence only: the item after a walk and the
    // item before it co-occur with it equally often.
    let rows: Vec<Interaction> = histories
        .iter()
        .enumerate()
        .flat_map(|(u, s)| {
            s.iter().map(move |&i| Interaction {
                user: u as u32,
                item: i,
                weight: 1.0,
                rating: None,
                ts: 0,
            })
        })
        .collect();
    let data = Interactions {
        n_users: histories.len(),
        n_items,
        rows,
    };
    let cf = ItemCf::fit(&data, &ItemCfParams::default()).expect("item-CF");
    let mut scores = vec![0f32; n_items];
    let mut cf_first = 0usize;
    for &(u, t) in &targets {
        let h: Vec<(u32, f32)> = histories[u].iter().map(|&i| (i, 1.0)).collect();
        cf.score_history(&h, &mut scores).expect("scores");
        for &(i, _) in &h {
            scores[i as usize] = f32::NEG_INFINITY;
        }
        let ts = scores[t as usize];
        let above = scores
            .iter()
            .enumerate()
            .filter(|&(j, &s)| s > ts || (s == ts && j != t as usize))
            .count();
        cf_first += usize::from(above == 0);
    }
    let cf_share = cf_first as f64 / targets.len() as f64;
    eprintln!(
        "next item first: model {:.3}, item-CF {cf_share:.3} ({} users)",
        first.hit_rate, first.users
    );
    assert!(
        first.hit_rate >= 0.8,
        "next item ranked first for {:.3} of the users (item-CF {cf_share:.3})",
        first.hit_rate
    );
    assert!(
        cf_share <= 0.65,
        "item-CF ranks the next item first for {cf_share:.3}: the log does not test order"
    );
}

fn small_log(seed: u64) -> (Vec<Vec<u32>>, usize) {
    chain_log(6, 5, 120, seed)
}

fn quick_cfg() -> SeqConfig {
    SeqConfig {
        dim: 8,
        max_len: 6,
        blocks: 2,
        heads: 2,
        negatives: 8,
        batch_size: 16,
        max_epochs: 3,
        eval_every: 1,
        patience: 10,
        threads: 1,
        ..SeqConfig::default()
    }
}

#[test]
fn one_thread_fits_are_bit_identical_and_report_every_epoch() {
    let (seqs, n_items) = small_log(3);
    let valid: Vec<(usize, u32)> = (0..seqs.len())
        .step_by(3)
        .map(|u| (u, seqs[u][0]))
        .collect();
    let epochs = AtomicUsize::new(0);
    let on_epoch = |e: &SeqEpoch| {
        assert!(e.loss.is_finite() && e.valid_ndcg.is_some());
        epochs.fetch_add(1, Ordering::Relaxed);
    };
    let hooks = SeqHooks {
        on_epoch: Some(&on_epoch),
        cancel: None,
    };
    let cfg = quick_cfg();
    let (a, ra) = SeqModel::fit(&seqs, n_items, &cfg, &valid, &hooks).unwrap();
    let (b, rb) = SeqModel::fit(&seqs, n_items, &cfg, &valid, &SeqHooks::default()).unwrap();
    assert_eq!(a, b);
    assert_eq!(ra.valid_ndcg, rb.valid_ndcg);
    assert_eq!(epochs.load(Ordering::Relaxed), ra.epochs);
    assert_eq!(ra.valid_ndcg.len(), ra.epochs);
    assert!(ra.best_epoch >= 1 && ra.best_epoch <= ra.epochs);
    let best = ra.valid_ndcg.iter().map(|v| v.1).fold(f64::MIN, f64::max);
    assert_eq!(ra.best_ndcg, Some(best));
    // The returned weights are the best evaluation's.
    let again = a.evaluate(&seqs, &valid, 10).unwrap();
    assert!((again.ndcg - best).abs() < 1e-9, "{} vs {best}", again.ndcg);
    // Two threads sum the gradients in another order, reproducibly.
    let two = SeqConfig {
        threads: 2,
        ..cfg.clone()
    };
    let (c, _) = SeqModel::fit(&seqs, n_items, &two, &valid, &SeqHooks::default()).unwrap();
    let (c2, _) = SeqModel::fit(&seqs, n_items, &two, &valid, &SeqHooks::default()).unwrap();
    c.validate().unwrap();
    assert_eq!(c, c2);
    let other_seed = SeqConfig { seed: 7, ..cfg };
    let (d, _) = SeqModel::fit(&seqs, n_items, &other_seed, &valid, &SeqHooks::default()).unwrap();
    assert_ne!(a, d);
}

#[test]
fn a_race_keeps_the_baseline_unless_another_setting_rates_clearly_better() {
    let (mut train, n_items) = chain_log(20, 8, 600, 5);
    let valid: Vec<(usize, u32)> = train
        .iter_mut()
        .enumerate()
        .filter_map(|(u, s)| Some((u, s.pop()?)))
        .collect();
    let good = SeqConfig {
        dim: 16,
        max_len: 8,
        dropout: 0.1,
        negatives: 32,
        batch_size: 64,
        learning_rate: 5e-3,
        max_epochs: 40,
        patience: 3,
        eval_every: 2,
        threads: 1,
        ..SeqConfig::default()
    };
    // Learns nothing in the epochs it has.
    let stuck = SeqConfig {
        learning_rate: 1e-7,
        ..good.clone()
    };
    let hooks = SeqHooks::default();
    let hour = std::time::Duration::from_secs(3_600);
    let (plain, plain_report) = SeqModel::fit(&train, n_items, &good, &valid, &hooks).unwrap();
    let (plain_stuck, stuck_report) =
        SeqModel::fit(&train, n_items, &stuck, &valid, &hooks).unwrap();

    // A setting that learns replaces a baseline that cannot, with the model a plain fit of
    // it gives.
    let settings = [stuck.clone(), good.clone()];
    let (m, report, race) =
        SeqModel::fit_raced(&train, n_items, &settings, &valid, hour, &hooks).unwrap();
    assert_eq!(race.chosen, 1, "{race:?}");
    assert!(!race.budget_exhausted);
    assert_eq!(race.entries[0].epochs, stuck_report.epochs);
    assert_eq!(race.entries[1].end, SeqEnd::Finished);
    assert!(race.entries[1].ndcg.unwrap() > 2.0 * race.entries[0].ndcg.unwrap());
    assert_eq!(race.entries[1].epochs, plain_report.epochs);
    assert_eq!(m, plain);
    assert_eq!(report.valid_ndcg, plain_report.valid_ndcg);

    // A baseline that rates best stays, with the plain fit's model; the challenger that
    // cannot learn falls behind its curve and is dropped early.
    let settings = [good.clone(), stuck.clone()];
    let (m, _, race) =
        SeqModel::fit_raced(&train, n_items, &settings, &valid, hour, &hooks).unwrap();
    assert_eq!(race.chosen, 0, "{race:?}");
    assert_eq!(m, plain);
    assert_eq!(race.entries[1].end, SeqEnd::Behind);
    assert_eq!(race.entries[1].epochs, BEHIND_EVALS * good.eval_every);

    // The same setting twice: equal ratings never move the choice.
    let settings = [good.clone(), good.clone()];
    let (_, _, race) =
        SeqModel::fit_raced(&train, n_items, &settings, &valid, hour, &hooks).unwrap();
    assert_eq!(race.chosen, 0, "{race:?}");

    // No budget: the baseline alone.
    let zero = std::time::Duration::ZERO;
    let settings = [stuck.clone(), good.clone()];
    let (m, _, race) =
        SeqModel::fit_raced(&train, n_items, &settings, &valid, zero, &hooks).unwrap();
    assert!(race.budget_exhausted);
    assert_eq!(race.entries[1].end, SeqEnd::Budget);
    assert_eq!((race.chosen, race.entries[1].epochs), (0, 0), "{race:?}");
    assert_eq!(m, plain_stuck);

    // One setting, or no validation targets: no race.
    let (m, _, race) = SeqModel::fit_raced(
        &train,
        n_items,
        std::slice::from_ref(&good),
        &valid,
        hour,
        &hooks,
    )
    .unwrap();
    assert_eq!((race.entries.len(), race.chosen), (1, 0));
    assert_eq!(m, plain);
    let (_, _, race) = SeqModel::fit_raced(&train, n_items, &settings, &[], hour, &hooks).unwrap();
    assert_eq!(race.entries[1].end, SeqEnd::Skipped);
    assert!(
        (race.chosen, race.budget_exhausted) == (0, false),
        "{race:?}"
    );
    // Every setting is checked before any trains.
    let bad = SeqConfig {
        dropout: 2.0,
        ..good.clone()
    };
    let err = SeqModel::fit_raced(&train, n_items, &[good, bad], &valid, hour, &hooks);
    assert!(matches!(
        err,
        Err(ModelError::InvalidParam {
            name: "dropout",
            ..
        })
    ));
    let err = SeqModel::fit_raced(&train, n_items, &[], &valid, hour, &hooks);
    assert!(matches!(err, Err(ModelError::InvalidParam { .. })));
}

#[test]
fn clearly_better_needs_the_gain_and_the_standard_errors() {
    use super::race::clearly_better;
    // Every target 0.1 better: no spread in the differences.
    let leader = vec![0.5; 100];
    let up: Vec<f64> = leader.iter().map(|x| x + 0.1).collect();
    assert!(clearly_better(&up, &leader));
    assert!(!clearly_better(&leader, &up));
    assert!(!clearly_better(&leader, &leader));
    // A 2% gain in the mean made of a few large swings among many targets: within the noise.
    let mut noisy = vec![0.0; 1000];
    let mut base = vec![0.0; 1000];
    for i in 0..50 {
        noisy[i] = 1.0;
        base[i + 50] = 1.0;
    }
    noisy[100] = 1.0;
    assert!(!clearly_better(&noisy, &base));
    // Mismatched or empty targets never win.
    assert!(!clearly_better(&up[..10], &leader));
    assert!(!clearly_better(&[], &[]));
}

#[test]
fn a_cancelled_fit_returns_cancelled() {
    let (seqs, n_items) = small_log(4);
    let cancel = AtomicBool::new(true);
    let hooks = SeqHooks {
        on_epoch: None,
        cancel: Some(&cancel),
    };
    let err = SeqModel::fit(&seqs, n_items, &quick_cfg(), &[], &hooks).unwrap_err();
    assert_eq!(err, ModelError::Cancelled);
    // Cancelled from the progress callback after the first epoch: no second epoch ends.
    let cancel = AtomicBool::new(false);
    let ended = AtomicUsize::new(0);
    let on_epoch = |_: &SeqEpoch| {
        ended.fetch_add(1, Ordering::Relaxed);
        cancel.store(true, Ordering::Relaxed);
    };
    let hooks = SeqHooks {
        on_epoch: Some(&on_epoch),
        cancel: Some(&cancel),
    };
    let err = SeqModel::fit(&seqs, n_items, &quick_cfg(), &[], &hooks).unwrap_err();
    assert_eq!(err, ModelError::Cancelled);
    assert_eq!(ended.load(Ordering::Relaxed), 1);
}

#[test]
fn evaluation_agrees_with_the_crate_full_ranking_evaluation() {
    let (seqs, n_items) = small_log(5);
    let (model, _) =
        SeqModel::fit(&seqs, n_items, &quick_cfg(), &[], &SeqHooks::default()).unwrap();
    let histories: Vec<Vec<u32>> = seqs.iter().map(|s| s[..s.len() - 1].to_vec()).collect();
    let targets: Vec<(usize, u32)> = seqs
        .iter()
        .enumerate()
        .map(|(u, s)| (u, s[s.len() - 1]))
        .collect();
    let to_rows = |pairs: Vec<(usize, u32)>| Interactions {
        n_users: seqs.len(),
        n_items,
        rows: pairs
            .into_iter()
            .map(|(u, i)| Interaction {
                user: u as u32,
                item: i,
                weight: 1.0,
                rating: None,
                ts: 0,
            })
            .collect(),
    };
    let exclude = to_rows(
        histories
            .iter()
            .enumerate()
            .flat_map(|(u, h)| h.iter().map(move |&i| (u, i)))
            .collect(),
    );
    let test = to_rows(targets.clone());
    let reference =
        crate::eval::evaluate_ranking_excluding(&[&exclude], &test, &[1, 10], |u, out| {
            model.score_history(&histories[u as usize], out).unwrap();
        });
    for k in [1, 10] {
        let ours = model.evaluate(&histories, &targets, k).unwrap();
        let theirs = reference.at_k(k).unwrap();
        assert_eq!(ours.users, reference.n_users);
        assert!(
            (ours.ndcg - theirs.ndcg).abs() < 1e-6,
            "k {k}: {ours:?} vs {theirs:?}"
        );
        assert!(
            (ours.hit_rate - theirs.hit).abs() < 1e-9,
            "k {k}: {ours:?} vs {theirs:?}"
        );
    }
    // Ties are pessimistic: a model that scores everything 0 ranks every target last.
    let mut flat = model.clone();
    flat.weights.iter_mut().for_each(|w| *w = 0.0);
    let e = flat.evaluate(&histories, &targets, 10).unwrap();
    assert_eq!((e.ndcg, e.hit_rate), (0.0, 0.0));
}

#[test]
fn scoring_skips_unknown_items_and_explains_with_attention() {
    let (seqs, n_items) = small_log(6);
    let (model, _) =
        SeqModel::fit(&seqs, n_items, &quick_cfg(), &[], &SeqHooks::default()).unwrap();
    assert_eq!(model.n_items(), n_items);
    let mut a = vec![1f32; n_items];
    assert!(!model.score_history(&[], &mut a).unwrap());
    assert!(a.iter().all(|&s| s == 0.0));
    assert!(!model
        .score_history(&[n_items as u32, u32::MAX], &mut a)
        .unwrap());
    let h = [seqs[0][0], seqs[0][1], seqs[0][2]];
    assert!(model.score_history(&h, &mut a).unwrap());
    assert!(a.iter().all(|s| s.is_finite()) && a.iter().any(|&s| s != 0.0));
    let mut b = vec![0f32; n_items];
    model
        .score_history(&[h[0], n_items as u32 + 5, h[1], h[2]], &mut b)
        .unwrap();
    assert_eq!(a, b, "unknown ids are skipped");
    let q = model.encode(&h).unwrap();
    assert_eq!(q.len(), model.dim());
    assert!((crate::models::linalg::dot(&q, &model.weights[..model.dim()]) - a[0]).abs() < 1e-4);
    assert_eq!(model.encode(&[]).unwrap(), vec![0.0; model.dim()]);
    let err = model
        .score_history(&h, &mut vec![0f32; n_items + 1])
        .unwrap_err();
    assert!(matches!(err, ModelError::LengthMismatch { .. }));
    // The window keeps the last `max_len` items: older ones change nothing.
    let long: Vec<u32> = (0..20).map(|i| seqs[i][0]).collect();
    let mut c = vec![0f32; n_items];
    let mut d = vec![0f32; n_items];
    model.score_history(&long, &mut c).unwrap();
    model
        .score_history(&long[20 - model.max_len()..], &mut d)
        .unwrap();
    assert_eq!(c, d);
    // Attention: one weight per history entry, a distribution over the known, windowed ones.
    let att = model
        .attention(&[h[0], n_items as u32, h[1], h[2]])
        .unwrap();
    assert_eq!(att.len(), 4);
    assert_eq!(att[1], 0.0);
    assert!(att.iter().all(|&x| (0.0..=1.0).contains(&x)));
    assert!((att.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{att:?}");
    let att = model.attention(&long).unwrap();
    assert!(att[..20 - model.max_len()].iter().all(|&x| x == 0.0));
    assert!((att.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    assert!(model.attention(&[]).unwrap().is_empty());
}

#[test]
fn bad_inputs_are_typed_errors() {
    let (seqs, n_items) = small_log(7);
    let hooks = SeqHooks::default();
    let bad_cfgs = [
        SeqConfig {
            dim: 0,
            ..quick_cfg()
        },
        SeqConfig {
            dim: 10,
            heads: 3,
            ..quick_cfg()
        },
        SeqConfig {
            max_len: 0,
            ..quick_cfg()
        },
        SeqConfig {
            blocks: 0,
            ..quick_cfg()
        },
        SeqConfig {
            dropout: 1.0,
            ..quick_cfg()
        },
        SeqConfig {
            dropout: f32::NAN,
            ..quick_cfg()
        },
        SeqConfig {
            negatives: 0,
            ..quick_cfg()
        },
        SeqConfig {
            batch_size: 0,
            ..quick_cfg()
        },
        SeqConfig {
            learning_rate: f32::NAN,
            ..quick_cfg()
        },
        SeqConfig {
            weight_decay: -1.0,
            ..quick_cfg()
        },
        SeqConfig {
            max_epochs: 0,
            ..quick_cfg()
        },
        SeqConfig {
            eval_every: 0,
            ..quick_cfg()
        },
    ];
    for cfg in &bad_cfgs {
        let err = SeqModel::fit(&seqs, n_items, cfg, &[], &hooks).unwrap_err();
        assert!(
            matches!(err, ModelError::InvalidParam { .. }),
            "{cfg:?}: {err}"
        );
    }
    let cfg = quick_cfg();
    let mut bad = seqs.clone();
    bad[3].push(n_items as u32);
    assert!(matches!(
        SeqModel::fit(&bad, n_items, &cfg, &[], &hooks),
        Err(ModelError::IdOutOfRange { kind: "item", .. })
    ));
    assert!(matches!(
        SeqModel::fit(&seqs, n_items, &cfg, &[(seqs.len(), 0)], &hooks),
        Err(ModelError::IdOutOfRange { kind: "user", .. })
    ));
    assert!(matches!(
        SeqModel::fit(&seqs, n_items, &cfg, &[(0, n_items as u32)], &hooks),
        Err(ModelError::IdOutOfRange { kind: "item", .. })
    ));
    assert!(matches!(
        SeqModel::fit(&[vec![1], vec![]], n_items, &cfg, &[], &hooks),
        Err(ModelError::Empty(_))
    ));
    assert!(matches!(
        SeqModel::fit(&seqs, 0, &cfg, &[], &hooks),
        Err(ModelError::InvalidParam { .. })
    ));
}

#[test]
fn damaged_models_are_refused_never_panic() {
    let (seqs, n_items) = small_log(8);
    let (model, _) =
        SeqModel::fit(&seqs, n_items, &quick_cfg(), &[], &SeqHooks::default()).unwrap();
    model.validate().unwrap();
    let config = bincode::config::standard();
    let bytes = bincode::serde::encode_to_vec(&model, config).unwrap();
    let (back, _): (SeqModel, usize) = bincode::serde::decode_from_slice(&bytes, config).unwrap();
    assert_eq!(back, model);
    let history = [seqs[0][0], seqs[0][1]];
    let mut out = vec![0f32; n_items];
    let mut refused = 0usize;
    let mut rng = SplitMix64::new(1);
    for trial in 0..300 {
        let mut damaged = bytes.clone();
        if trial % 3 == 0 {
            damaged.truncate(rng.below(bytes.len() as u64) as usize);
        } else {
            for _ in 0..1 + trial % 4 {
                let at = rng.below(bytes.len() as u64) as usize;
                damaged[at] ^= 1 << rng.below(8);
            }
        }
        let limited = bincode::config::standard().with_limit::<{ 1 << 24 }>();
        let decoded: Result<(SeqModel, usize), _> =
            bincode::serde::decode_from_slice(&damaged, limited);
        match decoded {
            Err(_) => refused += 1,
            Ok((m, _)) => match m.validate() {
                Err(_) => {
                    refused += 1;
                    // Inference on an unvalidated model is still an error, not a panic.
                    let mut buf = vec![0f32; m.n_items()];
                    let _ = m.score_history(&history, &mut buf);
                    let _ = m.attention(&history);
                    let _ = m.encode(&history);
                }
                Ok(()) => {
                    let mut buf = vec![0f32; m.n_items()];
                    m.score_history(&history, &mut buf).unwrap();
                }
            },
        }
        if trial % 3 == 0 {
            assert!(
                decoded_is_refused(&damaged),
                "a truncated model must not decode"
            );
        }
    }
    assert!(refused >= 100, "{refused}");
    // A NaN weight and a wrong shape are refused.
    let mut nan = model.clone();
    nan.weights[3] = f32::NAN;
    assert!(matches!(nan.validate(), Err(ModelError::NonFinite { .. })));
    let mut short = model.clone();
    short.weights.pop();
    assert!(short.validate().is_err());
    assert!(short.score_history(&history, &mut out).is_err());
    let mut wide = model.clone();
    wide.dim = 1 << 20;
    assert!(wide.validate().is_err());
    assert!(wide.encode(&history).is_err());
}

fn decoded_is_refused(bytes: &[u8]) -> bool {
    let limited = bincode::config::standard().with_limit::<{ 1 << 24 }>();
    match bincode::serde::decode_from_slice::<SeqModel, _>(bytes, limited) {
        Err(_) => true,
        Ok((m, _)) => m.validate().is_err(),
    }
}

#[test]
fn the_fast_exponential_is_accurate() {
    let mut worst = 0f64;
    let mut x = -87.0f32;
    while x <= 88.0 {
        let mut v = [x];
        net::exp_shifted(&mut v, 0.0);
        let exact = f64::from(x).exp();
        worst = worst.max((f64::from(v[0]) - exact).abs() / exact);
        x += 0.0137;
    }
    assert!(worst < 5e-7, "worst relative error {worst}");
    let mut v = [f32::NEG_INFINITY, 0.0];
    net::exp_shifted(&mut v, 0.0);
    assert!(v[0] < 1e-37 && v[1] == 1.0);
}
