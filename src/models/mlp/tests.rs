//! Tests of training and inference together (most fit a model, then score with it).

use super::infer::{forward_portable, sigmoid};
use super::train::split_rows;
use super::*;
use crate::models::SplitMix64;
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
    let (weighted, _) = Mlp::fit_weighted(x.view(), y.view(), None, Some(&w), &cfg).expect("fit");
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
