//! The training pipeline: read the log, clean, weight, tune, fit every registered channel
//! and the re-ranker, persist, swap in. `evaluate` reuses its dataset and fitting.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::catalog::{category_ancestors, ItemId, ItemTable};
use crate::channel::{FitInput, FitStage, Models, REGISTRY};
use crate::error::{Error, Result};
pub use crate::eval::SplitKind;
use crate::events::EventKind;
pub use crate::generation::Cleaning;
use crate::generation::ModelSet;
use crate::graph::{self, item_entity};
use crate::models::{ContentInputs, Interaction, Interactions, ModelError};
use crate::options::check_cancel;
use crate::options::HistoryRule;
pub use crate::options::{CancelToken, EventWeights, RatingWeight, TrainOptions};
use crate::state::State;
use rayon::prelude::*;

/// Retrain automatically after this many committed events or this much time since the last
/// training, checked at each commit (the committing call runs the training; readers are not
/// blocked). Off unless configured.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct RetrainPolicy {
    /// Events committed since the last training.
    pub after_events: Option<u64>,
    /// Seconds since the last training.
    pub after_secs: Option<u64>,
}

/// The summary of a training run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrainReport {
    /// Model generation now serving.
    pub generation: u64,
    /// Log sequence trained on.
    pub seq: u64,
    /// What cleaning removed and kept.
    pub cleaning: Cleaning,
    /// Seconds per step.
    pub timings: Vec<(String, f64)>,
    /// How the fusion modes ranked held-out users' candidates, when the log was large
    /// enough to hold some out.
    pub fusion_holdout: Option<FusionHoldout>,
    /// What `Fusion::Auto` uses for recommendations: `mlp`, `learned` or `linear`.
    pub auto_fusion: String,
    /// What tuning tried and chose, when it ran.
    pub tuning: Option<crate::tune::TuneReport>,
    /// The epochs the sequence model trained for (its early stopping's choice), when it was
    /// fitted.
    pub sequence_epochs: Option<usize>,
}

/// NDCG@10 of each fusion mode on the candidates of users held out at training, and the
/// channel weights learned (on the other users).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FusionHoldout {
    /// Held-out users behind the figures.
    pub users: usize,
    /// The MLP re-ranker.
    pub mlp: f64,
    /// Linear fusion with the learned weights.
    pub learned: f64,
    /// The seed formula (`Fusion::default_linear`).
    pub linear: f64,
    /// The learned weights.
    pub weights: crate::fusion::ChannelWeights,
}

impl std::fmt::Display for TrainReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.cleaning;
        writeln!(
            f,
            "model generation {} trained on log sequence {}",
            self.generation, self.seq
        )?;
        writeln!(
            f,
            "events read {}, deleted-item events {}, robot users {} ({} events), unweighted {}, pairs kept {}",
            c.events_read, c.deleted_items, c.robot_users, c.robot_events, c.unweighted, c.pairs
        )?;
        if let Some(h) = &self.fusion_holdout {
            let w = &h.weights;
            writeln!(
                f,
                "fusion on {} held-out users, NDCG@10: MLP {:.4}, learned weights {:.4}, linear {:.4}; default fusion: {}",
                h.users, h.mlp, h.learned, h.linear, self.auto_fusion
            )?;
            writeln!(f, "learned weights: {w}")?;
        }
        if let Some(t) = &self.tuning {
            writeln!(
                f,
                "tuned on {} held-out users, {} settings tried in {:.1} s{} (SHOW MODELS lists them):",
                t.users,
                t.trials.len(),
                t.seconds,
                if t.budget_exhausted { ", budget used up" } else { "" }
            )?;
            for (model, setting) in &t.chosen {
                writeln!(f, "  {model:<8} {setting}")?;
            }
        }
        if let Some(n) = self.sequence_epochs {
            writeln!(f, "sequence model: {n} epochs (early stopping's choice)")?;
        }
        for (step, secs) in &self.timings {
            writeln!(f, "  {step:<12} {secs:>8.3} s")?;
        }
        Ok(())
    }
}

pub(crate) fn model_err(e: ModelError) -> Error {
    Error::invalid("training", e.to_string())
}

/// The training matrix built from the log.
pub(crate) struct Dataset {
    pub data: Interactions,
    pub item_categories: Vec<Vec<u32>>,
    pub categories: Vec<String>,
    pub item_entities: Vec<Vec<u32>>,
    pub n_entities: usize,
    pub cleaning: Cleaning,
    /// What the re-ranker's features know about each item.
    pub item_info: Vec<crate::catalog::ItemInfo>,
    /// How events were weighed.
    pub history_rule: HistoryRule,
    /// What the content channel reads of the catalog.
    pub content: ContentInputs,
    /// The noise on shown counts, when the engine has `count_noise`: its release is the log
    /// sequence here, and the model generation as well when [`train`] fits.
    pub noise: Option<crate::noise::CountNoise>,
}

/// Reads and cleans the log into one row per (user, item): weights summed (with decay),
/// the latest timestamp, the latest rating.
pub(crate) fn dataset(state: &State, opts: &TrainOptions) -> Result<Dataset> {
    let events = state.all_events()?;
    let items = state.items.read();
    let n_items = items.capacity();
    let n_users = state.users.read().uid_count();
    let mut cleaning = Cleaning {
        events_read: events.len(),
        ..Cleaning::default()
    };
    let max_ts = events.iter().map(|e| e.ts).max().unwrap_or(0);
    let history_rule = HistoryRule::new(opts, max_ts);
    // Robot detection: events per active day, per user.
    let mut per_user: HashMap<u32, (usize, std::collections::HashSet<i64>)> = HashMap::new();
    for e in &events {
        let entry = per_user.entry(e.user.0).or_default();
        entry.0 += 1;
        entry.1.insert(e.ts / 86_400);
    }
    let robots: std::collections::HashSet<u32> = per_user
        .iter()
        .filter(|(_, (n, days))| *n as f64 / days.len().max(1) as f64 > opts.max_events_per_day)
        .map(|(u, _)| *u)
        .collect();
    cleaning.robot_users = robots.len();
    let mut pairs: HashMap<(u32, u32), Interaction> = HashMap::new();
    for e in &events {
        if items.get(e.item).is_none() {
            cleaning.deleted_items += 1;
            continue;
        }
        if robots.contains(&e.user.0) {
            cleaning.robot_events += 1;
            continue;
        }
        let Some(w) = history_rule.weight(e.kind, e.ts) else {
            cleaning.unweighted += 1;
            continue;
        };
        let rating = match e.kind {
            EventKind::Rating(v) => Some(v),
            _ => None,
        };
        let row = pairs.entry((e.user.0, e.item.0)).or_insert(Interaction {
            user: e.user.0,
            item: e.item.0,
            weight: 0.0,
            rating: None,
            ts: e.ts,
        });
        row.weight += w;
        if e.ts >= row.ts {
            row.ts = e.ts;
            if rating.is_some() {
                row.rating = rating;
            }
        } else if row.rating.is_none() {
            row.rating = rating;
        }
    }
    let mut rows: Vec<Interaction> = pairs.into_values().collect();
    rows.sort_by_key(|r| (r.user, r.ts, r.item));
    cleaning.pairs = rows.len();

    // Categories (every level) and knowledge-graph entities per item.
    let mut cat_ids: HashMap<String, u32> = HashMap::new();
    let mut categories = Vec::new();
    let mut item_categories = vec![Vec::new(); n_items];
    let kg = state.kg.read();
    let mut item_entities = vec![Vec::new(); n_items];
    let item_info: Vec<crate::catalog::ItemInfo> =
        (0..n_items as u32).map(|i| items.facts(i)).collect();
    for (i, p) in items.items.iter().enumerate() {
        let Some(p) = p else { continue };
        for c in category_ancestors(&p.category) {
            let next = cat_ids.len() as u32;
            let id = *cat_ids.entry(c.clone()).or_insert_with(|| {
                categories.push(c.clone());
                next
            });
            item_categories[i].push(id);
        }
        let mut ents: Vec<u32> = graph::automatic_edges(&kg, p)
            .into_iter()
            .map(|(_, tail)| tail)
            .collect();
        if let Some(&eid) = kg.entity_ids.get(&item_entity(&p.id)) {
            for (rel, tail) in graph::edges(&state.store, eid, true)? {
                ents.push(tail);
                // One hop further from externally linked entities (actors, directors, ...).
                if kg
                    .relations
                    .get(rel as usize)
                    .is_some_and(|r| r == graph::REL_LINK)
                {
                    ents.extend(
                        graph::edges(&state.store, tail, true)?
                            .into_iter()
                            .map(|(_, t)| t),
                    );
                }
            }
        }
        ents.sort_unstable();
        ents.dedup();
        item_entities[i] = ents;
    }
    let content = content_inputs(state, &items, opts.content.k);
    Ok(Dataset {
        data: Interactions {
            n_users,
            n_items,
            rows,
        },
        item_categories,
        categories,
        item_entities,
        n_entities: kg.entities.len(),
        cleaning,
        item_info,
        history_rule,
        content,
        noise: match state.config.count_noise {
            Some(epsilon) => Some(crate::noise::CountNoise {
                epsilon,
                seed: crate::noise::seed(&state.store)?,
                release: [crate::noise::POPULARITY, state.seq(), 0],
            }),
            None => None,
        },
    })
}

/// Catalogs with more product vectors than this give the content channel no vector
/// neighbours (a graph search per product would dominate training: about 0.2 ms each on two
/// cores, so 20 s at this size); their text neighbours remain.
const MAX_CONTENT_VECTOR_ITEMS: usize = 200_000;

/// The content channel's inputs: each product's terms (its analysed title, brand and every
/// category level) and its nearest products by vector.
fn content_inputs(state: &State, items: &ItemTable, k: usize) -> ContentInputs {
    let mut dict: HashMap<String, u32> = HashMap::new();
    let mut item_terms = vec![Vec::new(); items.capacity()];
    for (i, p) in items.items.iter().enumerate() {
        let Some(p) = p else { continue };
        let mut terms: Vec<String> = crate::text::analyze(&p.title);
        if !p.brand.is_empty() {
            terms.push(format!("brand:{}", p.brand.to_lowercase()));
        }
        terms.extend(
            category_ancestors(&p.category)
                .into_iter()
                .map(|c| format!("category:{c}")),
        );
        let mut ids: Vec<u32> = terms
            .into_iter()
            .map(|t| {
                let next = dict.len() as u32;
                *dict.entry(t).or_insert(next)
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        item_terms[i] = ids;
    }
    let with_vectors = state.vectors.len();
    let vector_neighbours = if with_vectors == 0 || with_vectors > MAX_CONTENT_VECTOR_ITEMS {
        Vec::new()
    } else {
        (0..items.capacity() as u32)
            .into_par_iter()
            .map(|i| {
                let Some(v) = state.vectors.vector(ItemId(i)) else {
                    return Vec::new();
                };
                state
                    .vectors
                    .search(&v, k + 1, crate::vector::Allowed::All)
                    .into_iter()
                    .filter(|h| h.item.0 != i)
                    .map(|h| (h.item.0, h.score))
                    .collect()
            })
            .collect()
    };
    ContentInputs {
        item_terms,
        n_terms: dict.len(),
        vector_neighbours,
    }
}

/// Fits every model on `data` for `stage`, pushing per-model timings and advancing
/// `progress` once per model.
///
/// # Errors
/// A model's fitting errors; [`Error::Cancelled`] when `opts.cancel` was cancelled.
pub(crate) fn fit_all(
    ds: &Dataset,
    data: &Interactions,
    opts: &TrainOptions,
    timings: &mut Vec<(String, f64)>,
    progress: Option<&crate::progress::Progress>,
    stage: FitStage<'_>,
) -> Result<Models> {
    let label = match stage {
        FitStage::HeldOut => "held-out ",
        _ => "",
    };
    let mut channels = Vec::with_capacity(REGISTRY.len());
    for spec in REGISTRY {
        check_cancel(opts.cancel.as_ref())?;
        let name = spec.channel.name();
        if let Some(p) = progress {
            p.set_message(format!("{label}{name}"));
        }
        let input = FitInput {
            data,
            opts,
            item_categories: &ds.item_categories,
            item_entities: &ds.item_entities,
            n_entities: ds.n_entities,
            content: &ds.content,
            stage,
            noise: ds.noise,
            progress: progress.map(|p| (p, label)),
        };
        let start = Instant::now();
        channels.push((spec.fit)(&input)?);
        timings.push((format!("{label}{name}"), start.elapsed().as_secs_f64()));
        if let Some(p) = progress {
            p.inc(1);
        }
    }
    Ok(Models::new(data.n_users, data.n_items, channels))
}

/// Progress steps of [`fit_serving`] with `opts`.
fn fit_steps(opts: &TrainOptions) -> u64 {
    let fits = if opts.mlp.is_some() { 2 } else { 1 };
    (REGISTRY.len() * fits + fits - 1) as u64
}

/// Fits the models that serve on `data`, and the re-ranker when `opts.mlp` is set: the models
/// are first fitted on the log without a held-out part of some users' interactions (the
/// re-ranker learns from what they retrieve for those users), then on all of `data`, where a
/// channel may reuse what its held-out fit learned ([`FitStage::ServeAfter`]). Timings:
/// each serving model by name, and `mlp` for the held-out fit and the re-ranker together.
///
/// # Errors
/// As [`fit_all`].
pub(crate) fn fit_serving(
    ds: &Dataset,
    data: &Interactions,
    opts: &TrainOptions,
    timings: &mut Vec<(String, f64)>,
    progress: Option<&crate::progress::Progress>,
) -> Result<(Models, Option<crate::rerank::TrainedRanker>)> {
    let split = opts
        .mlp
        .as_ref()
        .and_then(|cfg| Some((cfg, crate::rerank::HeldOut::new(data, opts.holdout)?)));
    let Some((cfg, split)) = split else {
        if let Some(p) = progress {
            // The held-out fit and the re-ranker's step do not happen.
            p.inc(fit_steps(opts).saturating_sub(REGISTRY.len() as u64));
        }
        let models = fit_all(ds, data, opts, timings, progress, FitStage::Serve)?;
        return Ok((models, None));
    };
    let start = Instant::now();
    let held = fit_all(
        ds,
        &split.rest,
        opts,
        &mut Vec::new(),
        progress,
        FitStage::HeldOut,
    )?;
    let mut mlp_seconds = start.elapsed().as_secs_f64();
    let models = fit_all(
        ds,
        data,
        opts,
        timings,
        progress,
        FitStage::ServeAfter(&held),
    )?;
    check_cancel(opts.cancel.as_ref())?;
    if let Some(p) = progress {
        p.set_message("re-ranker");
    }
    let start = Instant::now();
    let info = |i: u32| ds.item_info.get(i as usize).cloned().unwrap_or_default();
    let ranker = crate::rerank::train_mlp(&split, &held, &info, cfg, opts.recency)?;
    mlp_seconds += start.elapsed().as_secs_f64();
    timings.push(("mlp".to_string(), mlp_seconds));
    if let Some(p) = progress {
        p.inc(1);
    }
    Ok((models, ranker))
}

fn models_dir(state: &State) -> PathBuf {
    state.dir.join("models")
}

/// The tuning report with the sequence model's race of settings added, when its fit ran one.
pub(crate) fn with_race(
    tuning: Option<crate::tune::TuneReport>,
    models: &Models,
) -> Option<crate::tune::TuneReport> {
    let mut tuning = tuning?;
    let race = models
        .typed::<crate::channel::SequenceChannel>()
        .and_then(|c| c.race.as_ref());
    if let Some(race) = race {
        crate::tune::add_race(&mut tuning, race);
    }
    Some(tuning)
}

/// What tuning rates settings on: a part of the data to fit on and a held-out part.
pub(crate) enum TuneOn<'a> {
    /// Hold out part of this data by the rule of the split kind.
    Holdout(&'a Interactions, SplitKind),
    /// These two parts (an evaluation's training and validation parts).
    Parts(&'a Interactions, &'a Interactions),
}

/// `opts` with the parameters tuning chose, and the tuning report; `opts` as they are when
/// tuning is off.
pub(crate) fn tuned_options(
    on: TuneOn<'_>,
    opts: &TrainOptions,
    timings: &mut Vec<(String, f64)>,
) -> Result<(TrainOptions, Option<crate::tune::TuneReport>)> {
    let Some(tune) = &opts.tune else {
        return Ok((opts.clone(), None));
    };
    let start = Instant::now();
    let held_out;
    let (fit, held) = match on {
        TuneOn::Holdout(data, split) => {
            held_out = crate::tune::holdout(data, split).map_err(model_err)?;
            (&held_out.0, &held_out.1)
        }
        TuneOn::Parts(fit, held) => (fit, held),
    };
    let from = crate::tune::Tuned {
        recency: opts.recency,
        item_cf: opts.item_cf,
        user_cf: opts.user_cf,
        mf: opts.mf,
    };
    let (chosen, report) = crate::tune::tune(
        fit,
        held,
        from,
        tune,
        opts.cancel.as_ref().map(|c| c.flag()),
    )
    .map_err(model_err)?;
    check_cancel(opts.cancel.as_ref())?;
    timings.push(("tune".to_string(), start.elapsed().as_secs_f64()));
    let tuned = TrainOptions {
        recency: chosen.recency,
        item_cf: chosen.item_cf,
        user_cf: chosen.user_cf,
        mf: chosen.mf,
        ..opts.clone()
    };
    Ok((tuned, Some(report)))
}

/// A new generation: the serving one with its MF channel built from `factors` (checked in
/// full first: nothing is applied on an error), saved and swapped in like a training's.
/// The other channels, the re-ranker and the fusion weights are the serving generation's:
/// they learned from its own MF scores. Users without a factor are folded in from their
/// live history, weighed by the generation's rule. Call with the training lock held.
pub(crate) fn import_mf(
    state: &State,
    factors: &crate::channel::MfFactors,
    opts: &crate::channel::MfImportOptions,
) -> Result<crate::channel::MfImportReport> {
    let started = Instant::now();
    let current = state.models.read().clone().ok_or(Error::NotTrained(
        "IMPORT MODEL mf replaces the MF model of a trained generation: TRAIN first",
    ))?;
    let params = current
        .models
        .typed::<crate::channel::MfChannel>()
        .map_or_else(crate::models::MfParams::default, |c| *c.mf.params());
    // The history is read while the import holds the user and item tables: it takes no
    // lock of theirs (a deleted item has no imported factor, so it weighs nothing).
    let n_items = current.models.n_items();
    let history = |u: u32| -> Result<Vec<(u32, f32)>> {
        let evs = state.user_events(
            crate::events::UserId(u),
            Some(crate::options::HISTORY_EVENTS),
        )?;
        Ok(current.history_rule.history(
            evs.iter()
                .filter(|e| (e.item.0 as usize) < n_items)
                .map(|e| (e.item.0, e.kind, e.ts)),
        ))
    };
    let dims = (current.models.n_users(), n_items);
    let (channel, mut report) = imported_channel(state, factors, dims, &params, &history, opts)?;
    // A copy of the serving generation (its file's form) with the MF channel replaced.
    let mut set: ModelSet =
        crate::codec::decode(&crate::codec::encode(&*current)?, "model generation")?;
    if !set.models.replace(Box::new(channel)) {
        return Err(Error::invalid(
            "import",
            "the serving generation has no MF channel",
        ));
    }
    set.generation = current.generation + 1;
    report.generation = set.generation;
    report.seconds = started.elapsed().as_secs_f64();
    set.imported_mf = Some(report.clone());
    crate::generation::save(&models_dir(state), &set)?;
    let set = Arc::new(set);
    set.prepare_item_sides(&state.config.hnsw, false);
    *state.models.write() = Some(set);
    state.new_generation();
    Ok(report)
}

/// The MF channel of `factors` by the engine's ids, for a generation of `(users, items)`
/// (see [`crate::channel::import_mf`]).
pub(crate) fn imported_channel(
    state: &State,
    factors: &crate::channel::MfFactors,
    (n_users, n_items): (usize, usize),
    params: &crate::models::MfParams,
    history: &dyn Fn(u32) -> Result<Vec<(u32, f32)>>,
    opts: &crate::channel::MfImportOptions,
) -> Result<(crate::channel::MfChannel, crate::channel::MfImportReport)> {
    let users = state.users.read();
    let items = state.items.read();
    let user = |name: &str| users.get(name).map(|u| u.0);
    let item = |name: &str| items.live_iid(name).map(|i| i.0);
    let ids = crate::channel::IdMap {
        user: &user,
        item: &item,
        n_users,
        n_items,
    };
    crate::channel::import_mf(factors, params, &ids, history, opts)
}

/// Trains every model from the log and swaps the new generation in.
/// Call with the engine's training lock held (one training at a time).
pub(crate) fn train(state: &State, opts: &TrainOptions) -> Result<TrainReport> {
    let seq = state.seq();
    let mut timings = Vec::new();
    let start = Instant::now();
    let mut ds = dataset(state, opts)?;
    timings.push(("read_log".to_string(), start.elapsed().as_secs_f64()));
    // One release of noisy popularity per generation (one training at a time).
    let generation = state.models.read().as_ref().map_or(0, |m| m.generation) + 1;
    if let Some(n) = ds.noise.as_mut() {
        n.release = [crate::noise::POPULARITY, seq, generation];
    }
    // Tuning, the fits, saving.
    let steps = 1 + fit_steps(opts) + 1;
    let pb = opts.progress.then(|| {
        crate::progress::Progress::bar(steps, "training {msg:40} [{bar:20}] {pos}/{len} {elapsed}")
    });
    if let Some(p) = &pb {
        p.set_message("tuning");
    }
    let on = TuneOn::Holdout(&ds.data, opts.holdout);
    let (tuned, tuning) = tuned_options(on, opts, &mut timings)?;
    let opts = &tuned;
    if let Some(p) = &pb {
        p.inc(1);
    }
    let (base, mlp) = fit_serving(&ds, &ds.data, opts, &mut timings, pb.as_ref())?;
    check_cancel(opts.cancel.as_ref())?;
    let tuning = with_race(tuning, &base);
    if let Some(p) = &pb {
        p.set_message("saving");
    }
    let set = ModelSet {
        generation,
        seq,
        models: base,
        // The rule the data was weighed with, and the position decay tuning chose.
        history_rule: HistoryRule::new(opts, ds.history_rule.reference_ts),
        mlp,
        categories: ds.categories,
        cleaning: ds.cleaning.clone(),
        tuning: tuning.clone(),
        imported_mf: None,
    };
    let t = Instant::now();
    crate::generation::save(&models_dir(state), &set)?;
    timings.push(("save".to_string(), t.elapsed().as_secs_f64()));
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    let fusion_holdout = set.mlp.as_ref().map(|r| FusionHoldout {
        users: r.holdout_users,
        mlp: r.holdout_ndcg,
        learned: r.learned_holdout_ndcg,
        linear: r.linear_holdout_ndcg,
        weights: r.weights,
    });
    let auto_fusion = match set.mlp.as_ref().map(|r| r.auto()) {
        Some(crate::channel::Fusion::Mlp) => "mlp",
        Some(crate::channel::Fusion::Learned) => "learned",
        _ => "linear",
    }
    .to_string();
    let sequence_epochs = set
        .models
        .typed::<crate::channel::SequenceChannel>()
        .filter(|c| c.model.is_some())
        .map(|c| c.epochs);
    let set = Arc::new(set);
    let t = Instant::now();
    if set.prepare_item_sides(&state.config.hnsw, false) {
        timings.push(("factor_index".to_string(), t.elapsed().as_secs_f64()));
    }
    *state.models.write() = Some(set);
    state.new_generation();
    Ok(TrainReport {
        generation,
        seq,
        cleaning: ds.cleaning,
        timings,
        fusion_holdout,
        auto_fusion,
        tuning,
        sequence_epochs,
    })
}
