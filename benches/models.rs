//! The models' scoring kernels on their own, on deterministic generated data: the MLP
//! re-ranker over 1,000 candidates (the engine's 23 features, and the 32-64-1 shape of the
//! published reference), matrix-factorisation and item-CF scoring of a 100k-item catalog.
//!
//! `cargo bench --bench models`

use criterion::{criterion_group, criterion_main, Criterion};
use ndarray::{Array1, Array2};
use shopdb::models::mlp::{Mlp, MlpConfig, MlpScratch};
use shopdb::models::SplitMix64;
use shopdb::models::{Interaction, Interactions, ItemCf, ItemCfParams, Mf, MfParams};

const ITEMS: usize = 100_000;
const USERS: usize = 20_000;
const EVENTS: usize = 1_000_000;

/// A model of `d` inputs and one hidden layer of 64, trained briefly on random rows (the
/// weights' values do not change the cost of a forward pass).
fn mlp(d: usize, rng: &mut SplitMix64) -> Mlp {
    let n = 2_000;
    let x = Array2::from_shape_fn((n, d), |_| rng.next_f64() as f32);
    let y = Array1::from_shape_fn(n, |i| f32::from(u8::from(x[[i, 0]] > 0.5)));
    let cfg = MlpConfig {
        hidden: vec![64],
        max_epochs: 2,
        ..MlpConfig::default()
    };
    match Mlp::fit(x.view(), y.view(), None, &cfg) {
        Ok((m, _)) => m,
        Err(e) => panic!("mlp: {e}"),
    }
}

/// Skewed random interactions: item popularity falls off like a power law.
fn interactions(rng: &mut SplitMix64) -> Interactions {
    let rows = (0..EVENTS)
        .map(|t| {
            let u = ((rng.next_f64() as f32) * USERS as f32) as u32 % USERS as u32;
            let i = (((rng.next_f64() as f32).powi(3)) * ITEMS as f32) as u32 % ITEMS as u32;
            Interaction {
                user: u,
                item: i,
                weight: 1.0,
                rating: None,
                ts: t as i64,
            }
        })
        .collect();
    Interactions {
        n_users: USERS,
        n_items: ITEMS,
        rows,
    }
}

fn bench(c: &mut Criterion) {
    let mut rng = SplitMix64::new(7);
    let mut g = c.benchmark_group("models");
    for (d, name) in [(23, "mlp_1000x23_h64"), (32, "mlp_1000x32_h64")] {
        let m = mlp(d, &mut rng);
        let x = Array2::from_shape_fn((1_000, d), |_| rng.next_f64() as f32);
        let mut scratch = MlpScratch::new(&m);
        let mut out = vec![0f32; 1_000];
        g.bench_function(name, |b| {
            b.iter(|| {
                m.predict_into(x.view(), &mut scratch, &mut out)
                    .map(|()| out[0])
            })
        });
    }
    let data = interactions(&mut rng);
    let mf = match Mf::fit(&data, &MfParams::default()) {
        Ok(m) => m,
        Err(e) => panic!("mf: {e}"),
    };
    let mut scores = vec![0f32; ITEMS];
    let mut u = 0u32;
    g.bench_function("mf_score_user_100k_items", |b| {
        b.iter(|| {
            u = (u + 1) % USERS as u32;
            mf.score_user(u, &mut scores).map(|()| scores[0])
        })
    });
    let cf = match ItemCf::fit(&data, &ItemCfParams::default()) {
        Ok(m) => m,
        Err(e) => panic!("item-cf: {e}"),
    };
    let history: Vec<(u32, f32)> = (0..50).map(|k| (k * 1_999 % ITEMS as u32, 1.0)).collect();
    g.bench_function("item_cf_score_history50_100k_items", |b| {
        b.iter(|| cf.score_history(&history, &mut scores).map(|()| scores[0]))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
