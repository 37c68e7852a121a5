//! Offline evaluation (`Engine::evaluate`): the training dataset split by a protocol, every
//! model tuned and fitted on the phase's fitting data, the held-out part scored by full
//! ranking, per registered channel and per fusion mode (through the query path's fusion).

use serde::Serialize;

use crate::channel::Request;
use crate::error::Result;
use crate::eval::{self, SplitKind};
use crate::models::Interactions;
use crate::state::State;
use crate::train::{dataset, fit_serving, model_err, tuned_options, TrainOptions, TuneOn};

/// Which part of the split is scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvalOn {
    /// The validation part (for tuning).
    Valid,
    /// The test part (for reporting).
    Test,
}

/// Options of [`Engine::evaluate`].
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// The split. Default RecBole with seed 2020.
    pub split: SplitKind,
    /// Cut-offs. Default 10 and 20.
    pub ks: Vec<usize>,
    /// Score validation or test. Default test.
    pub on: EvalOn,
    /// Model settings.
    pub train: TrainOptions,
    /// Also evaluate the fused pipeline (linear, RRF and, when trained, MLP fusion).
    /// Default true.
    pub fused: bool,
    /// Candidates per channel for the fused pipeline. Default 100.
    pub candidates: usize,
    /// Score at most this many users of the scored part, a fixed random sample (seed 2020),
    /// so that large catalogs can be measured in minutes. Default `None`: every user.
    pub max_users: Option<usize>,
    /// Exposure settings to rate, each `(label, controls)`: the fused pipeline (learned
    /// weights when the re-ranker is trained, else linear) with each user's page of each
    /// cut-off k cut under the controls for k slots, reported as the model
    /// `exposure:<label>` (with `Exposure::new()` as a label's controls, the uncut
    /// baseline). Default none.
    pub exposures: Vec<(String, crate::exposure::Exposure)>,
    /// MF factors fitted elsewhere on the same fitting part (e.g. Spark's ALS on the
    /// interactions [`fit_export`](Self::fit_export) wrote), mapped by id and scored as the
    /// model `mf_imported`, beside the engine's own `mf`. Default none.
    pub imported_mf: Option<std::sync::Arc<crate::channel::MfFactors>>,
    /// Write the fitting part as `interactions.parquet` (`user`, `item`, `weight`: one row per
    /// pair, the weight MF's confidence reads) and the MF settings tuning chose as
    /// `mf_params.json` into this folder, for training elsewhere. Needs the `parquet`
    /// feature. Default none.
    #[cfg(feature = "parquet")]
    pub fit_export: Option<std::path::PathBuf>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            split: SplitKind::RecBole { seed: 2020 },
            ks: vec![10, 20],
            on: EvalOn::Test,
            train: TrainOptions::default(),
            fused: true,
            candidates: crate::rerank::CANDIDATES,
            max_users: None,
            exposures: Vec::new(),
            imported_mf: None,
            #[cfg(feature = "parquet")]
            fit_export: None,
        }
    }
}

/// One figure of an evaluation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EvalRow {
    /// `popularity`, `item_cf`, `user_cf`, `mf` or `kg`.
    pub model: String,
    /// `recall`, `precision`, `ndcg`, `mrr`, `hit`, `coverage`, `gini` (of exposure) or
    /// `long_tail` (share of recommendations outside the top 20% items).
    pub metric: String,
    /// Cut-off.
    pub k: usize,
    /// Value.
    pub value: f64,
}

/// The result of [`Engine::evaluate`].
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct EvalReport {
    /// Users with at least one held-out interaction.
    pub users: usize,
    /// What the models were fitted on and the history scored with (`None` only for an
    /// empty report).
    pub fitted_on: Option<FittedOn>,
    /// What tuning tried and chose on the fitting data, when it ran.
    pub tuning: Option<crate::tune::TuneReport>,
    /// Every figure.
    pub rows: Vec<EvalRow>,
}

impl EvalReport {
    /// The value of one figure.
    pub fn get(&self, model: &str, metric: &str, k: usize) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.model == model && r.metric == metric && r.k == k)
            .map(|r| r.value)
    }
}

impl std::fmt::Display for EvalReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:<14} {:>4} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "model", "k", "recall", "precision", "ndcg", "mrr", "hit"
        )?;
        let mut models: Vec<&str> = Vec::new();
        for r in &self.rows {
            if !models.contains(&r.model.as_str()) {
                models.push(&r.model);
            }
        }
        let mut ks: Vec<usize> = self.rows.iter().map(|r| r.k).collect();
        ks.sort_unstable();
        ks.dedup();
        for m in models {
            for k in &ks {
                let g = |metric| self.get(m, metric, *k).unwrap_or(f64::NAN);
                writeln!(
                    f,
                    "{m:<14} {k:>4} {:>8.4} {:>8.4} {:>8.4} {:>8.4} {:>8.4}",
                    g("recall"),
                    g("precision"),
                    g("ndcg"),
                    g("mrr"),
                    g("hit")
                )?;
            }
        }
        Ok(())
    }
}

/// What the models of one evaluation phase are fitted on, and the history they score with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FittedOn {
    /// The training part only.
    Train,
    /// The training and the validation part: everything before the test part.
    TrainValid,
}

impl FittedOn {
    /// `train` or `train+valid`.
    pub fn name(self) -> &'static str {
        match self {
            FittedOn::Train => "train",
            FittedOn::TrainValid => "train+valid",
        }
    }

    /// The phase's fitting data. Validation always fits on the training part. The test phase
    /// of a split by time (leave-one-out, temporal) fits on everything before the test part,
    /// as next-item protocols do (SASRec, S3-Rec, RecTools): otherwise each user's most recent
    /// interaction, the validation one, would be in neither the models nor the history. The
    /// random split keeps RecBole's protocol (test scored with the models fitted on train).
    pub fn for_phase(split: SplitKind, on: EvalOn) -> FittedOn {
        match (split, on) {
            (_, EvalOn::Valid) | (SplitKind::RecBole { .. }, EvalOn::Test) => FittedOn::Train,
            (SplitKind::LeaveOneOut | SplitKind::Temporal { .. }, EvalOn::Test) => {
                FittedOn::TrainValid
            }
        }
    }
}

/// Splits the log, fits every model on the phase's fitting data ([`FittedOn::for_phase`])
/// and scores the held-out part by full ranking.
pub(crate) fn evaluate(state: &State, opts: &EvalOptions) -> Result<EvalReport> {
    let ds = dataset(state, &opts.train)?;
    let split = match opts.split {
        SplitKind::RecBole { seed } => eval::split_random_by_user(&ds.data, [0.8, 0.1, 0.1], seed),
        SplitKind::LeaveOneOut => eval::split_leave_one_out(&ds.data),
        SplitKind::Temporal { valid, test } => eval::split_temporal(&ds.data, valid, test),
    }
    .map_err(model_err)?;
    let (target, exclude): (&Interactions, Vec<&Interactions>) = match opts.on {
        EvalOn::Valid => (&split.valid, vec![&split.train]),
        EvalOn::Test => (&split.test, vec![&split.train, &split.valid]),
    };
    let fitted_on = FittedOn::for_phase(opts.split, opts.on);
    let train_valid;
    let fit_data: &Interactions = match fitted_on {
        FittedOn::Train => &split.train,
        FittedOn::TrainValid => {
            train_valid = split.before_test();
            &train_valid
        }
    };
    let sampled;
    let target = match opts.max_users {
        Some(max) => {
            sampled = eval::sample_users(target, max, 2020);
            &sampled
        }
        None => target,
    };
    let mut timings = Vec::new();
    // Tuning never reads the scored part: the test phase tunes on the training and validation
    // parts, the validation phase on a held-out part of the training part.
    let tune_on = match opts.on {
        EvalOn::Test => TuneOn::Parts(&split.train, &split.valid),
        EvalOn::Valid => TuneOn::Holdout(fit_data, opts.split),
    };
    let own_rule = TrainOptions {
        holdout: opts.split,
        ..opts.train.clone()
    };
    let (train_opts, tuning) = tuned_options(tune_on, &own_rule, &mut timings)?;
    let fit_opts = TrainOptions {
        mlp: train_opts.mlp.clone().filter(|_| opts.fused),
        ..train_opts.clone()
    };
    #[cfg(feature = "parquet")]
    if let Some(dir) = &opts.fit_export {
        crate::export::interactions(state, fit_data, &train_opts.mf, dir)?;
    }
    let (base, mlp) = fit_serving(&ds, fit_data, &fit_opts, &mut timings, None)?;
    let tuning = crate::train::with_race(tuning, &base);
    let csr = fit_data
        .history_csr(train_opts.recency)
        .map_err(model_err)?;
    let history = |u: u32| csr.row_pairs(u as usize);
    let imported = match &opts.imported_mf {
        Some(factors) => Some(
            crate::train::imported_channel(
                state,
                factors,
                (fit_data.n_users, fit_data.n_items),
                &train_opts.mf,
                &|u| Ok(history(u)),
                &crate::channel::MfImportOptions { skip_unknown: true },
            )?
            .0,
        ),
        None => None,
    };
    let sequences = fit_data.sequences();
    let recent = |u: u32| sequences.get(u as usize).map_or(&[][..], Vec::as_slice);
    let mut report = EvalReport {
        fitted_on: Some(fitted_on),
        tuning,
        ..EvalReport::default()
    };
    let mut push = |name: &str, m: eval::Metrics| {
        report.users = m.n_users;
        for a in &m.at {
            for (metric, value) in [
                ("recall", a.recall),
                ("precision", a.precision),
                ("ndcg", a.ndcg),
                ("mrr", a.mrr),
                ("hit", a.hit),
                ("coverage", a.coverage),
                ("gini", a.gini),
                ("long_tail", a.long_tail),
            ] {
                report.rows.push(EvalRow {
                    model: name.to_string(),
                    metric: metric.to_string(),
                    k: a.k,
                    value,
                });
            }
        }
    };
    let ks = &opts.ks;
    // Each model channel alone, ranking every item.
    for channel in base.iter() {
        push(
            channel.channel().name(),
            eval::evaluate_ranking_excluding(&exclude, target, ks, |u, s| {
                let h = history(u);
                channel.score_all(&Request::shopper(Some(u), &h).with_recent(recent(u)), s);
            }),
        );
    }
    if let Some(channel) = &imported {
        use crate::channel::Retriever;
        push(
            "mf_imported",
            eval::evaluate_ranking_excluding(&exclude, target, ks, |u, s| {
                let h = history(u);
                channel.score_all(&Request::shopper(Some(u), &h).with_recent(recent(u)), s);
            }),
        );
    }
    if opts.fused {
        // The fused pipeline: candidates from every model channel, then each fusion mode.
        let mut excluded = vec![std::collections::HashSet::new(); ds.data.n_users];
        for set in &exclude {
            for r in &set.rows {
                if let Some(s) = excluded.get_mut(r.user as usize) {
                    s.insert(r.item);
                }
            }
        }
        let info = |i: u32| ds.item_info.get(i as usize).cloned().unwrap_or_default();
        let mut modes = vec![
            ("fused_linear", crate::channel::Fusion::default_linear()),
            ("fused_rrf", crate::channel::Fusion::Rrf { k: 60.0 }),
        ];
        if mlp.is_some() {
            modes.push(("fused_learned", crate::channel::Fusion::Learned));
            modes.push(("fused_mlp", crate::channel::Fusion::Mlp));
        }
        let pipeline = crate::rerank::Pipeline {
            models: &base,
            ranker: mlp.as_ref(),
            info: &info,
        };
        let scorer_for = |fusion: crate::channel::Fusion| {
            let excluded = &excluded;
            let pipeline = &pipeline;
            let history = &history;
            let recent = &recent;
            move |u: u32, s: &mut [f32]| {
                let seen = excluded.get(u as usize);
                let ok = |i: u32| seen.is_none_or(|x| !x.contains(&i));
                s.iter_mut().for_each(|x| *x = -1.0);
                let Ok((cands, fused)) =
                    pipeline.recommend(fusion, u, &history(u), recent(u), opts.candidates, &ok)
                else {
                    return;
                };
                for (c, f) in cands.iter().zip(fused) {
                    if let Some(x) = s.get_mut(*c as usize) {
                        *x = f;
                    }
                }
            }
        };
        for (name, fusion) in modes {
            push(
                name,
                eval::evaluate_ranking_excluding(&exclude, target, ks, scorer_for(fusion)),
            );
        }
        // Exposure controls: one fused ranking per setting, each user's page cut under it.
        let fusion = if mlp.is_some() {
            crate::channel::Fusion::Learned
        } else {
            crate::channel::Fusion::default_linear()
        };
        let brands: Vec<u64> = ds.item_info.iter().map(|i| i.brand).collect();
        for (label, exposure) in &opts.exposures {
            let paging = eval::Paging {
                exposure: *exposure,
                brands: &brands,
                pool: opts.candidates,
            };
            push(
                &format!("exposure:{label}"),
                eval::evaluate_ranking_paged(
                    &exclude,
                    target,
                    ks,
                    Some(&paging),
                    scorer_for(fusion),
                ),
            );
        }
    }
    Ok(report)
}
