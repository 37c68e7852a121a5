//! Per-shop tuning: the hyper-parameters of item-CF, user-CF and matrix factorisation chosen
//! on a held-out part of the shop's own log, within a time budget, before the final fit.
//!
//! Settings are fitted on one part of the data and rated by full-ranking NDCG@10 of another (a
//! fixed sample of at most [`TuneOptions::max_users`] users); the caller then refits the best
//! of each model on all the data it fits on. Scoring an evaluation's test part, the parts are
//! its training and validation parts, as in RecBole's and the next-item protocols. Training
//! the engine, or scoring the validation part, the data to fit on is split once more by the
//! rule of the split ([`holdout`]): leave-one-out holds out each user's latest interaction,
//! the random split a tenth of each user's, the temporal split the latest fraction. The test
//! part of an evaluation is never read, so it never influences a choice.
//!
//! Each model is searched coordinate-wise from its default: first the families (similarity and
//! user weighting), then line searches along each parameter from the best so far (neighbours,
//! shrinkage, RP3beta's beta, MF confidence, regularisation and factors). A setting is only
//! adopted when it rates 1% better than the best so far ([`MIN_GAIN`]), so with no budget
//! left, or no clear gain, the defaults stand.
//!
//! The sequence model is tuned differently, as one fit of it takes minutes where the others
//! take seconds: its channel races the settings of [`sequence_settings`] inside its own
//! early-stopped fit: each other setting against the configured one's learning curve
//! ([`SeqModel::fit_raced`](crate::models::SeqModel::fit_raced)), within
//! [`TuneOptions::sequence_budget`], and [`add_race`] lists the race in the report.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::eval;
use crate::eval::SplitKind;
use crate::models::{
    Interactions, ItemCf, ItemCfParams, ItemSimilarity, Mf, MfParams, ModelError, SeqConfig,
    SeqEnd, SeqRace, UserCf, UserCfParams, Weighting,
};

/// The cut-off of the tuning metric (NDCG@10).
const TUNE_K: usize = 10;
/// A setting replaces the best so far only when it rates this much better (relative): smaller
/// differences are within the noise of a few thousand held-out users, and chasing them
/// moved MovieLens's test figures down.
const MIN_GAIN: f64 = 0.01;
/// Most user x item scores one rating computes (full ranking of every sampled user).
const MAX_RATING_CELLS: usize = 500_000_000;
/// Never fewer sampled users than this.
const MIN_USERS: usize = 500;
/// Seed of the held-out user sample and of the random split.
const TUNE_SEED: u64 = 2021;

/// How tuning runs.
#[derive(Clone, Debug, PartialEq)]
pub struct TuneOptions {
    /// Stop trying new settings after this long (a setting being rated is finished, and each
    /// model's first setting is always rated). Default 60 s: on two cores the search takes
    /// about 5 s on the demo shop (2,000 users, 3,000 items, 300k events) and the whole budget
    /// on Amazon Toys (19,412 users, 11,924 items), where it stops among 256-factor MF trials.
    /// When the budget ends the search, the choice can depend on the machine's speed.
    pub budget: Duration,
    /// Rate settings on at most this many held-out users (a fixed random sample). Default
    /// 10,000: 5,000 made the choice noisy (NDCG@10 near 0.04 has a standard error of about
    /// 0.0025 over 5,000 users), 20,000 doubled the time. Large catalogs rate fewer: at most
    /// 5·10^8 user × item scores (500 users at a million items).
    pub max_users: usize,
    /// How long the sequence model's race of settings ([`sequence_settings`]) may spend on
    /// the settings beside the configured one, on top of `budget`: the configured setting
    /// trains to its early stop as it would untuned, then each other setting while this
    /// lasts, dropped as soon as it falls behind the first's learning curve
    /// ([`SeqModel::fit_raced`](crate::models::SeqModel::fit_raced)). Default 60 s: on
    /// Amazon Toys (0.8 s per epoch on two cores) the two other settings fall behind after
    /// 20-25 epochs each and the race costs about 40 s. Only used when
    /// [`TrainOptions::sequence`](crate::TrainOptions::sequence) is set.
    pub sequence_budget: Duration,
}

impl Default for TuneOptions {
    fn default() -> Self {
        TuneOptions {
            budget: Duration::from_secs(60),
            max_users: 10_000,
            sequence_budget: Duration::from_secs(60),
        }
    }
}

/// One tried setting.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    /// `history` (the position decay), `item_cf`, `user_cf`, `mf` or `sequence` (raced within
    /// its early-stopped fit: rated on the latest item of every sequence of three or more,
    /// and its setting names the epochs it trained).
    pub model: String,
    /// The setting, e.g. `cosine k=200 shrink=0 bm25(1.2,0.75) raw`.
    pub setting: String,
    /// Held-out NDCG@10.
    pub ndcg: f64,
    /// Seconds to fit and rate it.
    pub seconds: f64,
}

/// What tuning tried and chose.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TuneReport {
    /// Every tried setting, in the order tried.
    pub trials: Vec<Trial>,
    /// `(model, setting)` chosen for each model.
    pub chosen: Vec<(String, String)>,
    /// Held-out users the settings were rated on.
    pub users: usize,
    /// Seconds spent in all.
    pub seconds: f64,
    /// Whether the budget ran out before every planned setting was tried.
    pub budget_exhausted: bool,
}

impl TuneReport {
    /// The setting chosen for `model`.
    pub fn chosen(&self, model: &str) -> Option<&str> {
        self.chosen
            .iter()
            .find(|(m, _)| m == model)
            .map(|(_, s)| s.as_str())
    }
}

/// The parameters tuning searches.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Tuned {
    /// The history's position decay ([`TrainOptions::recency`](crate::TrainOptions::recency)).
    pub recency: f32,
    pub item_cf: ItemCfParams,
    pub user_cf: UserCfParams,
    pub mf: MfParams,
}

impl Tuned {
    /// `(model, setting)` of each model, as [`TuneReport::chosen`] lists them.
    fn settings(&self) -> Vec<(String, String)> {
        vec![
            ("history".to_string(), recency_setting(self.recency)),
            ("item_cf".to_string(), item_cf_setting(&self.item_cf)),
            ("user_cf".to_string(), user_cf_setting(&self.user_cf)),
            ("mf".to_string(), mf_setting(&self.mf)),
        ]
    }
}

/// Splits `data` into what tuning fits on and what it rates, by the rule of `split`: the
/// held-out part is what that split's test part would be on `data`.
///
/// # Errors
/// The split's errors (bad fractions, invalid interactions).
pub(crate) fn holdout(
    data: &Interactions,
    split: SplitKind,
) -> Result<(Interactions, Interactions), ModelError> {
    let s = match split {
        SplitKind::LeaveOneOut => eval::split_leave_one_out(data)?,
        SplitKind::RecBole { .. } => eval::split_random_by_user(data, [0.9, 0.0, 0.1], TUNE_SEED)?,
        SplitKind::Temporal { test, .. } => eval::split_temporal(data, 0.0, test)?,
    };
    Ok((s.before_test(), s.test))
}

fn weighting_name(w: Weighting) -> String {
    match w {
        Weighting::None => "raw".to_string(),
        Weighting::Idf => "idf".to_string(),
        Weighting::Bm25 { k1, b } => format!("bm25({k1},{b})"),
    }
}

/// A short readable form of item-CF parameters.
pub fn item_cf_setting(p: &ItemCfParams) -> String {
    let sim = match p.similarity {
        ItemSimilarity::Cosine => format!("cosine shrink={}", p.shrink),
        ItemSimilarity::Rp3Beta { alpha, beta } => format!("rp3beta alpha={alpha} beta={beta}"),
    };
    format!(
        "{sim} k={} {} {}",
        p.k,
        weighting_name(p.weighting),
        if p.normalize { "l1" } else { "unnormalised" }
    )
}

/// A short readable form of the history's position decay.
pub fn recency_setting(decay: f32) -> String {
    format!("recency={decay}")
}

/// A short readable form of user-CF parameters.
pub fn user_cf_setting(p: &UserCfParams) -> String {
    format!(
        "k={} shrink={} {}",
        p.k,
        p.shrink,
        weighting_name(p.weighting)
    )
}

/// A short readable form of MF parameters.
pub fn mf_setting(p: &MfParams) -> String {
    format!(
        "factors={} reg={} alpha={} it={}",
        p.factors, p.regularization, p.alpha, p.iterations
    )
}

/// The dropout rates the sequence model's race tries beside the configured one: the lower
/// rates that published SASRec recipes use on denser logs (0.2 on MovieLens-1M). The
/// configured default (0.5) suits sparse shops such as Amazon 5-core. Higher rates are not
/// raced: they learn more slowly, and the race drops a setting that falls behind the
/// baseline's learning curve (on Toys, 0.7 was at 0.054 validation NDCG@10 after 20 epochs
/// against 0.067 for 0.5).
pub const SEQUENCE_DROPOUTS: [f32; 2] = [0.3, 0.2];

/// The settings the sequence model races, the configured one first (the baseline): it with
/// each dropout rate of [`SEQUENCE_DROPOUTS`] it does not already have.
pub fn sequence_settings(start: &SeqConfig) -> Vec<SeqConfig> {
    let mut out = vec![start.clone()];
    for dropout in SEQUENCE_DROPOUTS {
        if (start.dropout - dropout).abs() > 1e-6 {
            out.push(SeqConfig {
                dropout,
                ..start.clone()
            });
        }
    }
    out
}

/// A sequence setting as the tuning report lists it.
pub fn sequence_setting(c: &SeqConfig) -> String {
    format!(
        "dim={} len={} blocks={} dropout={} lr={}",
        c.dim, c.max_len, c.blocks, c.dropout, c.learning_rate
    )
}

/// Adds the sequence model's race to a tuning report: a trial per setting (the epochs it
/// trained, how it ended, and its best validation NDCG@10) and the winner's trial as the
/// choice.
pub(crate) fn add_race(report: &mut TuneReport, race: &SeqRace) {
    report.chosen.retain(|(m, _)| m != "sequence");
    for (i, e) in race.entries.iter().enumerate() {
        let end = match e.end {
            SeqEnd::Finished => "",
            SeqEnd::Behind => ", fell behind",
            SeqEnd::Budget => ", budget used up",
            SeqEnd::Skipped => ", not raced",
        };
        let setting = format!("{} ({} epochs{end})", sequence_setting(&e.config), e.epochs);
        if i == race.chosen {
            report
                .chosen
                .push(("sequence".to_string(), setting.clone()));
        }
        report.trials.push(Trial {
            model: "sequence".to_string(),
            setting,
            ndcg: e.ndcg.unwrap_or(0.0),
            seconds: e.seconds,
        });
    }
    report.seconds += race.seconds;
    report.budget_exhausted |= race.budget_exhausted;
}

/// The search state of one run: the deadline, the rating data and the report.
struct Search<'a> {
    fit: &'a Interactions,
    held: Interactions,
    /// The held-out users' histories under the position decay chosen so far.
    history: crate::models::Csr,
    deadline: Instant,
    /// Ends the search early, like the deadline (the caller reports the cancellation).
    cancel: Option<&'a std::sync::atomic::AtomicBool>,
    report: TuneReport,
}

impl Search<'_> {
    fn over(&mut self) -> bool {
        if self
            .cancel
            .is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed))
        {
            return true;
        }
        let over = Instant::now() >= self.deadline;
        if over {
            self.report.budget_exhausted = true;
        }
        over
    }

    /// Rates one fitted scorer: mean NDCG@10 over the held-out sample.
    fn rate(&self, scorer: impl Fn(u32, &mut [f32]) + Sync) -> f64 {
        let m = eval::evaluate_ranking_excluding(&[self.fit], &self.held, &[TUNE_K], scorer);
        m.at_k(TUNE_K).map_or(0.0, |a| a.ndcg)
    }

    /// Tries `candidates` in order (after the current best), keeping the best; the first
    /// candidate is always tried (it is the baseline).
    fn run<P: Copy + PartialEq>(
        &mut self,
        model: &str,
        best: &mut Option<(P, f64)>,
        candidates: Vec<P>,
        name: impl Fn(&P) -> String,
        score: impl Fn(&Self, &P) -> Result<f64, ModelError>,
    ) {
        for p in candidates {
            let setting = name(&p);
            let tried = |t: &Trial| t.model == model && t.setting == setting;
            if best.is_some_and(|(b, _)| b == p) || self.report.trials.iter().any(tried) {
                continue;
            }
            if best.is_some() && self.over() {
                return;
            }
            let t = Instant::now();
            // A setting the data cannot fit (e.g. more factors than items) is not a choice.
            let Ok(ndcg) = score(self, &p) else {
                continue;
            };
            self.report.trials.push(Trial {
                model: model.to_string(),
                setting,
                ndcg,
                seconds: t.elapsed().as_secs_f64(),
            });
            if best.is_none_or(|(_, b)| ndcg > b * (1.0 + MIN_GAIN)) {
                *best = Some((p, ndcg));
            }
        }
    }

    /// Picks the history's position decay for the best item-CF setting so far, starting from
    /// `from`: each decay in [`RECENCY_STEPS`] rated with that one fitted model, adopted by
    /// the same rule as any setting. Leaves `history` weighed by the choice and `best` at its
    /// rating.
    fn recency(
        &mut self,
        best: &mut Option<(ItemCfParams, f64)>,
        from: f32,
    ) -> Result<f32, ModelError> {
        let Some((params, base)) = *best else {
            return Ok(from);
        };
        let model = ItemCf::fit(self.fit, &params)?;
        // The starting decay's rating is the item-CF setting's own (same model, same
        // histories): listed, not re-rated.
        self.report.trials.push(Trial {
            model: "history".to_string(),
            setting: recency_setting(from),
            ndcg: base,
            seconds: 0.0,
        });
        let mut chosen = (from, base);
        for decay in RECENCY_STEPS {
            if decay == from || self.over() {
                continue;
            }
            let t = Instant::now();
            let history = self.fit.history_csr(decay)?;
            let ndcg = self.rate(|u, out| {
                let _ = model.score_history(&history.row_pairs(u as usize), out);
            });
            self.report.trials.push(Trial {
                model: "history".to_string(),
                setting: recency_setting(decay),
                ndcg,
                seconds: t.elapsed().as_secs_f64(),
            });
            if ndcg > chosen.1 * (1.0 + MIN_GAIN) {
                chosen = (decay, ndcg);
            }
        }
        let (decay, ndcg) = chosen;
        if decay != from {
            self.history = self.fit.history_csr(decay)?;
            *best = Some((params, ndcg));
        }
        Ok(decay)
    }

    /// Line search along each step in turn: from the best setting, keep stepping up while the
    /// score improves; if the first step up did not improve, step down the same way.
    fn lines<P: Copy + PartialEq>(
        &mut self,
        model: &str,
        best: &mut Option<(P, f64)>,
        steps: &[Step<P>],
        name: impl Fn(&P) -> String + Copy,
        score: impl Fn(&Self, &P) -> Result<f64, ModelError> + Copy,
    ) {
        for step in steps {
            for up in [true, false] {
                let mut moved = false;
                while let Some((b, before)) = *best {
                    let Some(next) = step(&b, up) else {
                        break;
                    };
                    self.run(model, best, vec![next], name, score);
                    if best.is_none_or(|(_, after)| after <= before) {
                        break;
                    }
                    moved = true;
                }
                if moved || self.over() {
                    break;
                }
            }
        }
    }
}

fn item_cf_families(d: &ItemCfParams) -> Vec<ItemCfParams> {
    let bm25 = Weighting::Bm25 { k1: 1.2, b: 0.75 };
    let cosine = |weighting, shrink, normalize| ItemCfParams {
        k: d.k,
        shrink,
        similarity: ItemSimilarity::Cosine,
        weighting,
        normalize,
    };
    let rp3 = |beta, normalize| ItemCfParams {
        similarity: ItemSimilarity::Rp3Beta { alpha: 1.0, beta },
        normalize,
        ..*d
    };
    vec![
        *d,
        cosine(bm25, 0.0, false),
        cosine(Weighting::None, 0.0, false),
        cosine(bm25, 0.0, true),
        cosine(bm25, 100.0, false),
        rp3(0.3, true),
        rp3(0.0, true),
        rp3(0.3, false),
    ]
}

/// The position decays tuning rates for the history (1 is none): from a gentle fade to
/// the latest few items alone.
const RECENCY_STEPS: [f32; 5] = [1.0, 0.8, 0.6, 0.4, 0.2];

/// A step along one parameter from `p`, up or down; `None` past the parameter's range.
type Step<P> = fn(&P, bool) -> Option<P>;

/// Most factors tuning goes to: below a million items a recommendation scores every item's
/// factors, so the factor count is also a latency budget (MF scoring of 100k items takes
/// 0.97 ms at 64 factors in `cargo bench --bench models`, about four times that at 256).
const MAX_FACTORS: usize = 256;

fn scaled(x: usize, up: bool, lo: usize, hi: usize) -> Option<usize> {
    let y = if up { x.saturating_mul(2) } else { x / 2 };
    (lo..=hi).contains(&y).then_some(y).filter(|&y| y != x)
}

/// Shrinkage steps: 0 <-> 10, then by threes up to 1,000.
fn shrink_step(x: f32, up: bool) -> Option<f32> {
    let y = match (x, up) {
        (x, true) if x <= 0.0 => 10.0,
        (x, false) if x <= 10.0 => 0.0,
        (x, true) => x * 3.0,
        (x, false) => x / 3.0,
    };
    (y != x && y <= 1_000.0).then_some(y)
}

fn item_cf_steps(b: &ItemCfParams) -> Vec<Step<ItemCfParams>> {
    let mut steps: Vec<Step<ItemCfParams>> =
        vec![|p, up| scaled(p.k, up, 10, 1_600).map(|k| ItemCfParams { k, ..*p })];
    match b.similarity {
        ItemSimilarity::Cosine => steps
            .push(|p, up| shrink_step(p.shrink, up).map(|shrink| ItemCfParams { shrink, ..*p })),
        ItemSimilarity::Rp3Beta { .. } => steps.push(|p, up| match p.similarity {
            ItemSimilarity::Rp3Beta { alpha, beta } => {
                let beta = if up { beta + 0.15 } else { beta - 0.15 };
                (0.0..=1.0).contains(&beta).then_some(ItemCfParams {
                    similarity: ItemSimilarity::Rp3Beta { alpha, beta },
                    ..*p
                })
            }
            ItemSimilarity::Cosine => None,
        }),
    }
    steps
}

fn user_cf_candidates(d: &UserCfParams) -> Vec<UserCfParams> {
    vec![
        *d,
        UserCfParams {
            weighting: Weighting::None,
            ..*d
        },
    ]
}

fn user_cf_steps() -> Vec<Step<UserCfParams>> {
    vec![
        |p, up| scaled(p.k, up, 10, 1_600).map(|k| UserCfParams { k, ..*p }),
        |p, up| shrink_step(p.shrink, up).map(|shrink| UserCfParams { shrink, ..*p }),
    ]
}

fn mf_steps() -> Vec<Step<MfParams>> {
    vec![
        // Confidence: by twos, from 1/64 to 1,024.
        |p, up| {
            let alpha = if up { p.alpha * 2.0 } else { p.alpha / 2.0 };
            (1.0 / 64.0..=1_024.0)
                .contains(&alpha)
                .then_some(MfParams { alpha, ..*p })
        },
        // Regularisation: by twos, from 1/8 to 1,000.
        |p, up| {
            let regularization = if up {
                p.regularization * 2.0
            } else {
                p.regularization / 2.0
            };
            (0.125..=1_000.0)
                .contains(&regularization)
                .then_some(MfParams {
                    regularization,
                    ..*p
                })
        },
        |p, up| scaled(p.factors, up, 8, MAX_FACTORS).map(|factors| MfParams { factors, ..*p }),
    ]
}

/// Searches each model's parameters from `start`: every setting fitted on `fit` and rated on
/// `held` (users sampled down to [`TuneOptions::max_users`]).
///
/// # Errors
/// A model's fitting errors.
pub(crate) fn tune(
    fit: &Interactions,
    held: &Interactions,
    start: Tuned,
    opts: &TuneOptions,
    cancel: Option<&std::sync::atomic::AtomicBool>,
) -> Result<(Tuned, TuneReport), ModelError> {
    let began = Instant::now();
    if held.rows.is_empty() || fit.rows.is_empty() {
        // Nothing to hold out (every user has one interaction): the defaults stand.
        let report = TuneReport {
            chosen: start.settings(),
            seconds: began.elapsed().as_secs_f64(),
            ..TuneReport::default()
        };
        return Ok((start, report));
    }
    // At most MAX_RATING_CELLS user x item scores per rating, so that a large catalog's
    // baseline settings (always tried) stay within seconds.
    let cap = (MAX_RATING_CELLS / fit.n_items.max(1)).max(MIN_USERS);
    let held = eval::sample_users(held, opts.max_users.min(cap), TUNE_SEED);
    let history = fit.history_csr(start.recency)?;
    let mut users: Vec<u32> = held.rows.iter().map(|r| r.user).collect();
    users.sort_unstable();
    users.dedup();
    let mut s = Search {
        fit,
        held,
        history,
        deadline: began + opts.budget,
        cancel,
        report: TuneReport {
            users: users.len(),
            ..TuneReport::default()
        },
    };
    let item_score = |s: &Search<'_>, p: &ItemCfParams| -> Result<f64, ModelError> {
        let m = ItemCf::fit(s.fit, p)?;
        Ok(s.rate(|u, out| {
            let _ = m.score_history(&s.history.row_pairs(u as usize), out);
        }))
    };
    let mut item = None;
    let mut recency = start.recency;
    s.run(
        "item_cf",
        &mut item,
        item_cf_families(&start.item_cf),
        item_cf_setting,
        item_score,
    );
    if let Some((b, _)) = item {
        let flip = ItemCfParams {
            normalize: !b.normalize,
            ..b
        };
        s.run(
            "item_cf",
            &mut item,
            vec![flip],
            item_cf_setting,
            item_score,
        );
        recency = s.recency(&mut item, start.recency)?;
        s.lines(
            "item_cf",
            &mut item,
            &item_cf_steps(&b),
            item_cf_setting,
            item_score,
        );
    }

    let user_score = |s: &Search<'_>, p: &UserCfParams| -> Result<f64, ModelError> {
        let m = UserCf::fit(s.fit, p)?;
        Ok(s.rate(|u, out| {
            let _ = m.score_user(u, out);
        }))
    };
    let mut user = None;
    s.run(
        "user_cf",
        &mut user,
        user_cf_candidates(&start.user_cf),
        user_cf_setting,
        user_score,
    );
    s.lines(
        "user_cf",
        &mut user,
        &user_cf_steps(),
        user_cf_setting,
        user_score,
    );

    let mf_score = |s: &Search<'_>, p: &MfParams| -> Result<f64, ModelError> {
        let m = Mf::fit(s.fit, p)?;
        Ok(s.rate(|u, out| {
            let _ = m.score_user(u, out);
        }))
    };
    let mut mf = None;
    s.run("mf", &mut mf, vec![start.mf], mf_setting, mf_score);
    // The factor count moves the best confidence and regularisation: sweep again while a
    // sweep improves (at most three).
    for _ in 0..3 {
        let before = mf.map(|(p, _)| p);
        s.lines("mf", &mut mf, &mf_steps(), mf_setting, mf_score);
        if mf.map(|(p, _)| p) == before {
            break;
        }
    }

    let chosen = Tuned {
        recency,
        item_cf: item.map_or(start.item_cf, |(p, _)| p),
        user_cf: user.map_or(start.user_cf, |(p, _)| p),
        mf: mf.map_or(start.mf, |(p, _)| p),
    };
    let mut report = s.report;
    report.chosen = chosen.settings();
    report.seconds = began.elapsed().as_secs_f64();
    Ok((chosen, report))
}
