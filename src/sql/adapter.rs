//! The one place the query language calls the engine's read path and trainer.
//!
//! Statements go through [`query`], [`train`] and [`evaluate`] so that a change in the
//! engine's read API touches this file only.

use std::sync::Arc;

use crate::catalog::Product;
use crate::engine::Engine;
use crate::error::Result;
use crate::evaluate::{EvalOptions, EvalReport};
use crate::filter::Filter;
use crate::query::Query;
use crate::train::{TrainOptions, TrainReport};

use super::plan::{TrainSettings, Tuning};

/// What a retrieval asks the engine for.
pub(crate) struct Request<'a> {
    pub text: Option<&'a str>,
    pub vector: Option<&'a [f32]>,
    pub user: Option<&'a str>,
    pub similar_to: Option<&'a str>,
    pub filter: &'a Filter,
    pub k: usize,
    pub explain: bool,
    pub tuning: &'a Tuning,
}

/// One retrieved product.
pub(crate) struct Hit {
    pub id: String,
    pub score: f32,
    /// The record; without its embedding.
    pub product: Arc<Product>,
    /// One line per channel.
    pub explanation: Option<String>,
}

/// Retrieves up to `k` products, best first, through `Engine::query`.
///
/// # Errors
/// The engine's: [`Error::UnknownItem`](crate::Error::UnknownItem),
/// [`Error::LimitExceeded`](crate::Error::LimitExceeded),
/// [`Error::DimensionMismatch`](crate::Error::DimensionMismatch), ...
pub(crate) fn query(engine: &Engine, r: &Request<'_>) -> Result<Vec<Hit>> {
    let mut q = Query::new()
        .filter(r.filter.clone())
        .k(r.k)
        .explain(r.explain);
    if let Some(t) = r.text {
        q = q.text(t);
    }
    if let Some(v) = r.vector {
        q = q.vector(v.to_vec());
    }
    if let Some(u) = r.user {
        q = q.user(u);
    }
    if let Some(i) = r.similar_to {
        q = q.similar_to(i);
    }
    let t = r.tuning;
    if let Some(f) = t.fusion {
        q = q.fusion(f);
    }
    if let Some(n) = t.max_per_brand {
        q = q.max_per_brand(n);
    }
    if let Some(x) = t.exclude_purchased {
        q = q.exclude_purchased(x);
    }
    if let Some(n) = t.candidates {
        q = q.candidates(n);
    }
    if let Some(x) = t.typos {
        q = q.typos(x);
    }
    if let Some(e) = t.exposure {
        q = q.exposure(e);
    }
    Ok(engine
        .query(&q)?
        .into_iter()
        .map(|h| Hit {
            id: h.id,
            score: h.score,
            product: h.product,
            explanation: h.explanation.map(|e| e.to_string().trim_end().to_string()),
        })
        .collect())
}

/// Trains every model with the default options and the statement's settings.
///
/// # Errors
/// As `Engine::train`.
pub(crate) fn train(
    engine: &Engine,
    settings: &TrainSettings,
    progress: bool,
    cancel: Option<crate::CancelToken>,
) -> Result<TrainReport> {
    let mut opts = TrainOptions {
        progress,
        cancel,
        ..TrainOptions::default()
    };
    if settings.tune == Some(false) {
        opts.tune = None;
    }
    if settings.sequence == Some(true) {
        opts.sequence = Some(crate::models::SeqConfig::default());
    }
    if let Some(t) = opts.tune.as_mut() {
        if let Some(secs) = settings.tune_budget_secs {
            t.budget = std::time::Duration::from_secs_f64(secs);
        }
        if let Some(secs) = settings.sequence_budget_secs {
            t.sequence_budget = std::time::Duration::from_secs_f64(secs);
        }
    }
    engine.train(&opts)
}

/// What tuning chose for the serving generation.
pub(crate) fn tuning(engine: &Engine) -> Option<crate::tune::TuneReport> {
    engine.tuning_report()
}

/// Offline evaluation with the default options.
///
/// # Errors
/// As `Engine::evaluate`.
pub(crate) fn evaluate(engine: &Engine) -> Result<EvalReport> {
    engine.evaluate(&EvalOptions::default())
}

/// The model generation serving queries (0 before the first training).
pub(crate) fn model_generation(engine: &Engine) -> u64 {
    engine.model_generation()
}

/// The noise the serving generation's popularity scores carry (`count_noise`), if any.
pub(crate) fn popularity_noise(engine: &Engine) -> Option<crate::models::NoiseInfo> {
    let models = engine.state.models.read();
    models
        .as_ref()?
        .models
        .typed::<crate::models::Popularity>()?
        .noise()
        .copied()
}
