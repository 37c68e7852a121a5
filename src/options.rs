//! Training's settings, and the rule that turns a shopper's events into a weighted history:
//! shared by training (which weighs the log with it) and the query path (which weighs a live
//! history with the rule stored in the model generation), so the two never drift apart.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::eval::SplitKind;
use crate::events::EventKind;
use crate::models::mlp::MlpConfig;
#[cfg(doc)]
use crate::models::Interactions;
use crate::models::{
    position_weight, ContentParams, ItemCfParams, KgParams, MfParams, PopularityParams, SeqConfig,
    UserCfParams,
};

/// How much each kind of event counts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventWeights {
    /// Default 1.
    pub view: f32,
    /// Default 2.
    pub click: f32,
    /// Default 4.
    pub cart: f32,
    /// Default 8.
    pub purchase: f32,
    /// How ratings count.
    pub rating: RatingWeight,
}

/// How a rating event counts.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum RatingWeight {
    /// Every rating is one implicit interaction of weight 1 (RecBole's default on MovieLens).
    Implicit,
    /// The weight is the rating value.
    Value,
    /// Ratings below the threshold are dropped; the rest weigh 1.
    AtLeast(f32),
}

/// A shopper's most recent events that make their history on the query path (and when an
/// imported model folds them in).
pub(crate) const HISTORY_EVENTS: usize = 100;

impl Default for EventWeights {
    fn default() -> Self {
        EventWeights {
            view: 1.0,
            click: 2.0,
            cart: 4.0,
            purchase: 8.0,
            rating: RatingWeight::Implicit,
        }
    }
}

impl EventWeights {
    pub(crate) fn weight(&self, kind: EventKind) -> Option<f32> {
        Some(match kind {
            EventKind::View => self.view,
            EventKind::Click => self.click,
            EventKind::Cart => self.cart,
            EventKind::Purchase => self.purchase,
            EventKind::Rating(v) => match self.rating {
                RatingWeight::Implicit => 1.0,
                RatingWeight::Value => v,
                RatingWeight::AtLeast(t) if v >= t => 1.0,
                RatingWeight::AtLeast(_) => return None,
            },
        })
        .filter(|w| *w > 0.0)
    }
}

/// Stops a training in progress from another thread (a signal handler, a request that timed
/// out): set in [`TrainOptions::cancel`], then [`cancel`](Self::cancel) from anywhere. The
/// training stops at its next check (between models, between mini-batches of the sequence
/// model, between tuning trials) with [`Error::Cancelled`], and the previous model
/// generation keeps serving. Clones share one flag.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every training holding this token (or a clone) to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether [`cancel`](Self::cancel) was called since the last [`reset`](Self::reset).
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Clears the flag, so the token can serve the next training.
    pub fn reset(&self) {
        self.0.store(false, Ordering::Relaxed);
    }

    /// The flag itself, for loops that poll it.
    pub(crate) fn flag(&self) -> &AtomicBool {
        &self.0
    }
}

/// `Err(Error::Cancelled)` once `token` (if any) was cancelled.
pub(crate) fn check_cancel(token: Option<&CancelToken>) -> Result<()> {
    match token {
        Some(t) if t.is_cancelled() => Err(Error::Cancelled),
        _ => Ok(()),
    }
}

/// Options of [`Engine::train`].
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// Event weights.
    pub weights: EventWeights,
    /// Exponential time decay: an event this many days older than the newest counts half.
    /// Default none.
    pub half_life_days: Option<f64>,
    /// Position decay of a shopper's history when it is scored (item-CF, knowledge graph and
    /// the re-ranker's history features; the models fit on undecayed weights): an item that
    /// `n` other items were touched after weighs `recency^n`, so the latest item counts most.
    /// 1 is no decay. Default 1; per-shop tuning picks it on next-item data.
    pub recency: f32,
    /// Users averaging more events per active day than this are dropped as robots.
    /// Default 2,000.
    pub max_events_per_day: f64,
    /// Item-based CF.
    pub item_cf: ItemCfParams,
    /// User-based CF.
    pub user_cf: UserCfParams,
    /// Matrix factorisation (implicit ALS).
    pub mf: MfParams,
    /// Popularity.
    pub popularity: PopularityParams,
    /// Knowledge-graph relatedness.
    pub kg: KgParams,
    /// Content from the history (text and product vectors).
    pub content: ContentParams,
    /// The sequence model (a self-attentive next-item model trained on each shopper's items
    /// in order); `None` leaves the channel empty. Default `None`: on Amazon Toys (19k
    /// shoppers) it trains for minutes, where every other model takes seconds. With tuning
    /// on, this setting is the baseline of a race of dropout rates
    /// ([`TuneOptions::sequence_budget`](crate::TuneOptions::sequence_budget)).
    pub sequence: Option<SeqConfig>,
    /// The MLP re-ranker; `None` skips it (fusion then falls back to linear).
    pub mlp: Option<MlpConfig>,
    /// How training holds out part of the log to tune on and to train the re-ranker and the
    /// channel weights on: the rule of a split kind ([`SplitKind::LeaveOneOut`]: each user's
    /// latest interaction, the next-item task a shop serves; the default).
    /// [`Engine::evaluate`](crate::Engine::evaluate) uses its own split's rule instead.
    pub holdout: SplitKind,
    /// Per-shop tuning of item-CF, user-CF and MF on a held-out part of the log before the
    /// final fit, and of the sequence model's dropout within its fit
    /// ([`TuneOptions`](crate::TuneOptions)); `None` fits the parameters above as they are.
    /// Default on, with a 60 s budget.
    pub tune: Option<crate::tune::TuneOptions>,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Stops the training when cancelled (see [`CancelToken`]). Default none.
    pub cancel: Option<CancelToken>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            weights: EventWeights::default(),
            half_life_days: None,
            recency: 1.0,
            max_events_per_day: 2_000.0,
            item_cf: ItemCfParams::default(),
            user_cf: UserCfParams::default(),
            mf: MfParams::default(),
            popularity: PopularityParams::default(),
            kg: KgParams::default(),
            content: ContentParams::default(),
            sequence: None,
            mlp: Some(default_mlp_config()),
            holdout: SplitKind::LeaveOneOut,
            tune: Some(crate::tune::TuneOptions::default()),
            progress: false,
            cancel: None,
        }
    }
}

/// How a shopper's events become their history `(item, weight)`: the event weights, rating
/// mode and time decay of one model generation. Stored with the generation, so that the
/// query path weighs a live history exactly as training weighed the log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct HistoryRule {
    pub weights: EventWeights,
    /// An event this many days older than `reference_ts` counts half.
    pub half_life_days: Option<f64>,
    /// Where the decay counts from: the newest event of the log the generation was trained
    /// on (a later live event counts more than 1).
    pub reference_ts: i64,
    /// Position decay ([`TrainOptions::recency`]).
    pub recency: f32,
}

impl HistoryRule {
    /// The rule of these options for a log whose newest event is at `reference_ts`.
    pub fn new(opts: &TrainOptions, reference_ts: i64) -> Self {
        HistoryRule {
            weights: opts.weights.clone(),
            half_life_days: opts.half_life_days,
            reference_ts,
            recency: opts.recency,
        }
    }

    /// The weight of one event; `None` for a kind that does not count (e.g. a low rating
    /// under [`RatingWeight::AtLeast`]).
    pub fn weight(&self, kind: EventKind, ts: i64) -> Option<f32> {
        let mut w = self.weights.weight(kind)?;
        if let Some(h) = self.half_life_days.filter(|h| *h > 0.0) {
            let age_days = (self.reference_ts - ts) as f64 / 86_400.0;
            w *= 0.5f64.powf(age_days / h) as f32;
        }
        Some(w)
    }

    /// A history from events in time order: weights summed per item, each item's sum then
    /// weighed by position decay (the number of items whose latest event is later than its
    /// own), sorted by item. The same rule as [`Interactions::history_csr`] on the training
    /// matrix.
    pub fn history(&self, events: impl Iterator<Item = (u32, EventKind, i64)>) -> Vec<(u32, f32)> {
        let mut agg: std::collections::HashMap<u32, (f32, i64)> = std::collections::HashMap::new();
        for (item, kind, ts) in events {
            if let Some(w) = self.weight(kind, ts) {
                let e = agg.entry(item).or_insert((0.0, ts));
                e.0 += w;
                e.1 = e.1.max(ts);
            }
        }
        let mut times: Vec<i64> = agg.values().map(|v| v.1).collect();
        times.sort_unstable();
        let mut out: Vec<(u32, f32)> = agg
            .into_iter()
            .map(|(item, (w, ts))| {
                let later = times.len() - times.partition_point(|t| *t <= ts);
                (item, w * position_weight(self.recency, later))
            })
            .collect();
        out.sort_unstable_by_key(|h| h.0);
        out
    }
}

impl HistoryRule {
    /// The items of a history from events in time order, in the order they were last
    /// touched, oldest first (kinds that do not count left out): the live twin of
    /// [`Interactions::sequences`].
    pub fn recent(&self, events: impl Iterator<Item = (u32, EventKind, i64)>) -> Vec<u32> {
        let mut last: std::collections::HashMap<u32, i64> = std::collections::HashMap::new();
        for (item, kind, ts) in events {
            if self.weight(kind, ts).is_some() {
                let e = last.entry(item).or_insert(ts);
                *e = (*e).max(ts);
            }
        }
        let mut order: Vec<(i64, u32)> = last.into_iter().map(|(i, t)| (t, i)).collect();
        order.sort_unstable();
        order.into_iter().map(|(_, i)| i).collect()
    }
}

impl Default for HistoryRule {
    fn default() -> Self {
        HistoryRule::new(&TrainOptions::default(), 0)
    }
}

/// The default re-ranker configuration: one hidden layer of 64, early stopping.
pub(crate) fn default_mlp_config() -> MlpConfig {
    MlpConfig {
        hidden: vec![64],
        max_epochs: 60,
        patience: 6,
        batch_size: 256,
        learning_rate: 1e-3,
        ..MlpConfig::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{Interaction, Interactions};

    /// The live history (events) and the offline one (the training matrix) under one rule:
    /// the same weights, the latest item weighing most, a repeated item placed by its latest
    /// event.
    #[test]
    fn position_decay_is_one_rule_live_and_offline() {
        let rule = HistoryRule {
            recency: 0.5,
            ..HistoryRule::default()
        };
        // Item 7 first, then 3, then 9, then 7 again: 7 is the latest, 9 one back, 3 two.
        let events = [
            (7, EventKind::View, 10),
            (3, EventKind::Purchase, 20),
            (9, EventKind::Click, 30),
            (7, EventKind::Click, 40),
        ];
        let live = rule.history(events.iter().copied());
        assert_eq!(live, vec![(3, 8.0 * 0.25), (7, 3.0), (9, 2.0 * 0.5)]);

        let rows = events
            .iter()
            .map(|&(item, kind, ts)| Interaction {
                user: 0,
                item,
                weight: rule.weight(kind, ts).unwrap_or(0.0),
                rating: None,
                ts,
            })
            .collect();
        let data = Interactions {
            n_users: 1,
            n_items: 10,
            rows,
        };
        let offline = data.history_csr(rule.recency).unwrap().row_pairs(0);
        assert_eq!(offline, live);
        // The order both read: by each item's latest event, oldest first.
        assert_eq!(rule.recent(events.iter().copied()), vec![3, 9, 7]);
        assert_eq!(data.sequences(), vec![vec![3, 9, 7]]);
        // No decay: the plain sums.
        let plain = data.history_csr(1.0).unwrap().row_pairs(0);
        assert_eq!(plain, vec![(3, 8.0), (7, 3.0), (9, 2.0)]);
    }
}
