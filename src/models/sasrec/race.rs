//! Choosing among settings by racing them against the baseline's learning curve, within a
//! time budget (see [`SeqModel::fit_raced`]).

use std::time::{Duration, Instant};

use super::train::{check_inputs, layout_of, pool_of, Trainer};
use super::{SeqConfig, SeqFitReport, SeqHooks, SeqModel};
use crate::models::ModelError;

/// A challenger is dropped once its best validation NDCG@10 so far has been below the
/// baseline's at the same epoch for this many evaluations in a row.
pub const BEHIND_EVALS: usize = 2;
/// A challenger replaces the leader only when it rates this much better (relative), as in
/// the engine's other tuning...
pub const MIN_GAIN: f64 = 0.01;
/// ... and by more than this many standard errors of the per-target differences (paired:
/// the same validation targets), so that a gain within the noise of a small shop's few
/// hundred targets does not move the choice.
pub const MIN_STANDARD_ERRORS: f64 = 2.0;
/// Most floats the two trainers of a race hold together (1 GiB): each holds its weights, its
/// best weights, two optimiser moments, a decay mask and a gradient per thread (a Toys-sized
/// model, 0.8M parameters on two threads, about 25 MB). A larger race is not run: the first
/// setting is fitted alone.
pub const MAX_RACE_FLOATS: usize = 1 << 28;

/// One setting of a race ([`SeqModel::fit_raced`]).
#[derive(Clone, Debug, PartialEq)]
pub struct SeqEntry {
    /// The setting.
    pub config: SeqConfig,
    /// Epochs it trained (0: never started).
    pub epochs: usize,
    /// Its best validation NDCG@10 (`None`: never validated).
    pub ndcg: Option<f64>,
    /// Seconds spent training and validating it.
    pub seconds: f64,
    /// How its training ended.
    pub end: SeqEnd,
}

/// How a setting's training in a race ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SeqEnd {
    /// Early stopping (or its last epoch): a finished contender.
    #[default]
    Finished,
    /// Dropped: behind the baseline's curve for [`BEHIND_EVALS`] evaluations in a row.
    Behind,
    /// The budget ran out first (never started, or stopped unfinished).
    Budget,
    /// Not raced: no validation targets, or a model above [`MAX_RACE_FLOATS`].
    Skipped,
}

/// What a race tried and chose.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SeqRace {
    /// Every setting, in the order given.
    pub entries: Vec<SeqEntry>,
    /// Index of the winner in `entries`.
    pub chosen: usize,
    /// Whether the budget stopped a challenger or kept one from starting.
    pub budget_exhausted: bool,
    /// Seconds spent on the challengers (the race's cost beyond a plain fit of the baseline).
    pub seconds: f64,
}

impl SeqRace {
    /// The winner's setting.
    pub fn winner(&self) -> Option<&SeqConfig> {
        self.entries.get(self.chosen).map(|e| &e.config)
    }
}

/// The baseline's best validation NDCG@10 up to `epoch` (its last one when it stopped
/// sooner).
fn best_until(report: &SeqFitReport, epoch: usize) -> f64 {
    report
        .valid_ndcg
        .iter()
        .take_while(|(e, _)| *e <= epoch)
        .map(|(_, n)| *n)
        .fold(f64::NEG_INFINITY, f64::max)
}

/// Whether `challenger`'s per-target NDCG beats `leader`'s by [`MIN_GAIN`] and by
/// [`MIN_STANDARD_ERRORS`] standard errors of the paired differences.
pub(super) fn clearly_better(challenger: &[f64], leader: &[f64]) -> bool {
    let n = challenger.len();
    if n == 0 || n != leader.len() {
        return false;
    }
    let nf = n as f64;
    let mean = |x: &[f64]| x.iter().sum::<f64>() / nf;
    let (c, l) = (mean(challenger), mean(leader));
    let d = c - l;
    let var = challenger
        .iter()
        .zip(leader)
        .map(|(a, b)| (a - b - d).powi(2))
        .sum::<f64>()
        / (nf - 1.0).max(1.0);
    let se = (var / nf).sqrt();
    c > l * (1.0 + MIN_GAIN) && d > MIN_STANDARD_ERRORS * se
}

impl SeqModel {
    /// Chooses among `settings` (the first is the baseline) on `train` and `valid`, each
    /// fitted as [`SeqModel::fit`] fits it, and returns the winner's model and fit report,
    /// and the race.
    ///
    /// The baseline trains to its early stop first. Then each other setting in turn, while
    /// `budget` (the time spent on them) lasts: it is dropped once its best validation
    /// NDCG@10 so far is below the baseline's at the same epoch for [`BEHIND_EVALS`]
    /// evaluations in a row, and otherwise trains to its own early stop and replaces the
    /// leader when it rates [`MIN_GAIN`] better and by [`MIN_STANDARD_ERRORS`] standard
    /// errors of the per-target differences. A setting still training when the budget ends
    /// is not chosen. Dropping those behind suits settings that learn faster than the
    /// baseline (a lower dropout rate: ahead early, then over-fitted); one that learns more
    /// slowly would be dropped unseen. A race the baseline wins returns the model a plain fit
    /// of it returns. No validation targets, or a model above [`MAX_RACE_FLOATS`], fit the
    /// first setting alone. Every setting trains on the first's thread count.
    ///
    /// # Errors
    /// As [`SeqModel::fit`], for any setting; [`ModelError::InvalidParam`] for no setting.
    pub fn fit_raced(
        train: &[Vec<u32>],
        n_items: usize,
        settings: &[SeqConfig],
        valid: &[(usize, u32)],
        budget: Duration,
        hooks: &SeqHooks<'_>,
    ) -> Result<(SeqModel, SeqFitReport, SeqRace), ModelError> {
        let Some(base) = settings.first() else {
            return Err(ModelError::InvalidParam {
                name: "settings",
                reason: "no setting to fit".into(),
            });
        };
        for cfg in settings {
            check_inputs(train, n_items, cfg, valid)?;
        }
        let (threads, pool) = pool_of(base.threads)?;
        let mut largest = 0usize;
        for cfg in settings {
            largest = largest.max(layout_of(n_items, cfg)?.total);
        }
        let racing = !valid.is_empty()
            && largest.saturating_mul(5 + threads).saturating_mul(2) <= MAX_RACE_FLOATS;
        let entry =
            |cfg: &SeqConfig, t: Option<&Trainer<'_>>, seconds: f64, end: SeqEnd| SeqEntry {
                config: cfg.clone(),
                epochs: t.map_or(0, Trainer::epochs),
                ndcg: t.and_then(Trainer::best_ndcg),
                seconds,
                end,
            };

        // The baseline trains to its early stop, as a plain fit would.
        let started = Instant::now();
        let mut leader = Trainer::new(train, n_items, base, valid, threads)?;
        leader.run(&pool, hooks)?;
        let baseline = leader.report().clone();
        let mut entries = vec![entry(
            base,
            Some(&leader),
            started.elapsed().as_secs_f64(),
            SeqEnd::Finished,
        )];
        let mut chosen = 0usize;
        let mut spent = 0.0f64;
        let mut budget_exhausted = false;
        for cfg in settings.iter().skip(1) {
            let left = budget.as_secs_f64() - spent;
            if !racing {
                entries.push(entry(cfg, None, 0.0, SeqEnd::Skipped));
                continue;
            }
            if left <= 0.0 {
                budget_exhausted = true;
                entries.push(entry(cfg, None, 0.0, SeqEnd::Budget));
                continue;
            }
            let started = Instant::now();
            let mut t = Trainer::new(train, n_items, cfg, valid, threads)?;
            let mut behind = 0usize;
            let mut end = SeqEnd::Finished;
            let mut seen = 0usize;
            while !t.is_done() {
                if started.elapsed().as_secs_f64() >= left {
                    end = SeqEnd::Budget;
                    budget_exhausted = true;
                    break;
                }
                t.epoch(&pool, hooks)?;
                let evals = &t.report().valid_ndcg;
                if evals.len() > seen {
                    seen = evals.len();
                    let epoch = t.epochs();
                    let own = t.best_ndcg().unwrap_or(f64::NEG_INFINITY);
                    behind = if own < best_until(&baseline, epoch) {
                        behind + 1
                    } else {
                        0
                    };
                    if behind >= BEHIND_EVALS && !t.is_done() {
                        end = SeqEnd::Behind;
                        t.stop();
                    }
                }
            }
            let seconds = started.elapsed().as_secs_f64();
            spent += seconds;
            entries.push(entry(cfg, Some(&t), seconds, end));
            if end == SeqEnd::Finished && clearly_better(t.best_each(), leader.best_each()) {
                chosen = entries.len() - 1;
                leader = t;
            }
        }
        let (model, report) = leader.finish()?;
        let race = SeqRace {
            entries,
            chosen,
            budget_exhausted,
            seconds: spent,
        };
        Ok((model, report, race))
    }
}
