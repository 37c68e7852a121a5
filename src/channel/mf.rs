//! Matrix factorisation (implicit ALS) as a channel: a known shopper's factor against every
//! item's (`factors::ItemSide`: a scan, or a graph walk in large catalogs), a new shopper
//! folded in from their history.

use std::any::Any;

use super::factors::{ItemSide, Rows};
use super::{
    load_model, model_err, pick, save_model, Allow, Channel, ChannelHits, ChannelSpec, FitInput,
    Request, Retriever,
};
use crate::error::{Error, Result};
use crate::models::{linalg, Mf};

pub(crate) const SPEC: ChannelSpec = ChannelSpec {
    channel: Channel::Mf,
    fit: |i: &FitInput<'_>| {
        let mf = Mf::fit(i.data, &i.opts.mf).map_err(model_err)?;
        Ok(Box::new(MfChannel::new(mf)))
    },
    load: |b: &[u8]| {
        let mf = load_model::<Mf>(b, "model file: mf")?;
        Ok(Box::new(MfChannel::new(mf)))
    },
};

/// The factors, and the search structures over their item side.
pub(crate) struct MfChannel {
    pub mf: Mf,
    pub items: ItemSide,
}

impl MfChannel {
    pub(crate) fn new(mf: Mf) -> Self {
        MfChannel {
            mf,
            items: ItemSide::default(),
        }
    }

    fn rows(&self) -> Rows<'_> {
        Rows {
            rows: self.mf.item_factors(),
            dim: self.mf.dim(),
        }
    }

    /// The shopper's factor: a known shopper's own, else folded in from the history.
    fn query(&self, req: &Request<'_>) -> Option<Vec<f32>> {
        match req.user.and_then(|u| self.mf.user_vector(u)) {
            Some(uf) => Some(uf.to_vec()),
            None if !req.history.is_empty() => self.mf.fold_in(req.history).ok(),
            None => None,
        }
    }
}

impl Retriever for MfChannel {
    fn channel(&self) -> Channel {
        Channel::Mf
    }

    fn propose(&self, req: &Request<'_>, n: usize, ok: &Allow<'_>) -> Result<Option<ChannelHits>> {
        Ok(self.query(req).map(|q| {
            let mut hits = self.items.top(self.rows(), &q, n, ok);
            hits.retain(|(_, s)| *s > 0.0);
            hits
        }))
    }

    fn score(&self, req: &Request<'_>, cands: &[u32]) -> Option<ChannelHits> {
        let q = self.query(req)?;
        Some(pick(cands, &|i| {
            self.mf.item_vector(i).map_or(0.0, |f| linalg::dot(&q, f))
        }))
    }

    fn score_all(&self, req: &Request<'_>, scores: &mut [f32]) {
        let _ = match req.user {
            Some(u) => self.mf.score_user(u, scores),
            None => self.mf.score_history(req.history, scores),
        };
    }

    fn item_side(&self) -> Option<(&ItemSide, Rows<'_>)> {
        Some((&self.items, self.rows()))
    }

    fn save(&self) -> Result<Vec<u8>> {
        save_model(&self.mf)
    }

    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
}

/// MF factors fitted outside the engine, by the application's ids: the layout of Spark's
/// `ALSModel.userFactors` / `itemFactors` (and of `EXPORT MODEL mf`). Imported with
/// [`Engine::import_mf`](crate::Engine::import_mf).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MfFactors {
    /// `(user id, factor)`.
    pub users: Vec<(String, Vec<f32>)>,
    /// `(item id, factor)`.
    pub items: Vec<(String, Vec<f32>)>,
}

/// Options of [`Engine::import_mf`](crate::Engine::import_mf).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MfImportOptions {
    /// Skip the factors of ids the engine does not know (counted in the report) instead of
    /// refusing the import. Default false.
    pub skip_unknown: bool,
}

/// What an import of MF factors did; kept with the model generation it made.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MfImportReport {
    /// The model generation now serving.
    pub generation: u64,
    /// The factors' dimension.
    pub dim: usize,
    /// Users served by an imported factor.
    pub users: usize,
    /// Items with an imported factor.
    pub items: usize,
    /// Users of the generation the files have no factor for, folded in from their history
    /// against the imported item factors.
    pub folded_users: usize,
    /// Items of the generation the files have no factor for: the MF channel never proposes
    /// them.
    pub items_without: usize,
    /// Factors of ids the engine does not know, skipped (`skip_unknown`).
    pub unknown_users: usize,
    /// As `unknown_users`, for items.
    pub unknown_items: usize,
    /// Factors of users and items the engine knows but the serving generation does not
    /// (added after its training): skipped; they are served as new shoppers and products
    /// until the next training.
    pub newer: usize,
    /// Seconds taken to check the factors and build the generation (before its file is
    /// written).
    pub seconds: f64,
}

/// How an import maps the files' ids: the generation's dense ids below `n_users` /
/// `n_items`, `None` for an id the engine does not know.
pub(crate) struct IdMap<'a> {
    pub user: &'a dyn Fn(&str) -> Option<u32>,
    pub item: &'a dyn Fn(&str) -> Option<u32>,
    pub n_users: usize,
    pub n_items: usize,
}

/// One side of `factors` placed by dense id; counts unknown and newer ids into `report`.
fn place<'f>(
    rows: &'f [(String, Vec<f32>)],
    what: &str,
    id: &dyn Fn(&str) -> Option<u32>,
    n: usize,
    dim: usize,
    skip_unknown: bool,
) -> Result<Placed<'f>> {
    let mut newer = 0;
    let mut out: Vec<Option<&[f32]>> = vec![None; n];
    let mut missing = Vec::new();
    let mut seen = std::collections::HashSet::with_capacity(rows.len());
    for (name, f) in rows {
        if !seen.insert(name.as_str()) {
            return Err(Error::invalid(
                "import",
                format!("{what} {name:?} has two factors"),
            ));
        }
        if f.len() != dim {
            return Err(Error::invalid(
                "import",
                format!(
                    "{what} {name:?} has a factor of {} values, the first one {dim}",
                    f.len()
                ),
            ));
        }
        if let Some(v) = f.iter().find(|v| !v.is_finite()) {
            return Err(Error::invalid(
                "import",
                format!("{what} {name:?} has a factor holding {v}"),
            ));
        }
        match id(name) {
            None => missing.push(name.as_str()),
            Some(i) => match out.get_mut(i as usize) {
                Some(slot) => *slot = Some(f.as_slice()),
                None => newer += 1,
            },
        }
    }
    if !missing.is_empty() && !skip_unknown {
        let shown: Vec<String> = missing.iter().take(5).map(|m| format!("{m:?}")).collect();
        return Err(Error::invalid(
            "import",
            format!(
                "{} {what} ids the engine does not know (e.g. {}); nothing was imported \
                 (skip_unknown = true imports the others)",
                missing.len(),
                shown.join(", ")
            ),
        ));
    }
    Ok((out, missing.len(), newer))
}

/// Factors by dense id, unknown ids skipped, newer ids skipped.
type Placed<'f> = (Vec<Option<&'f [f32]>>, usize, usize);

/// The MF channel of imported factors, checked in full before anything is built: one
/// dimension, finite values, no id twice, ids the engine knows (or skipped with
/// `skip_unknown`). `params` are the fold-in's regularisation and confidence; users without
/// a factor are folded in from `history`.
pub(crate) fn import(
    factors: &MfFactors,
    params: &crate::models::MfParams,
    ids: &IdMap<'_>,
    history: &dyn Fn(u32) -> Result<Vec<(u32, f32)>>,
    opts: &MfImportOptions,
) -> Result<(MfChannel, MfImportReport)> {
    let started = std::time::Instant::now();
    let dim = match (factors.users.first(), factors.items.first()) {
        (Some(u), Some(_)) => u.1.len(),
        _ => {
            return Err(Error::invalid(
                "import",
                "MF factors need at least one user and one item",
            ))
        }
    };
    if dim == 0 {
        return Err(Error::invalid("import", "MF factors of dimension 0"));
    }
    let mut report = MfImportReport {
        dim,
        ..MfImportReport::default()
    };
    let (users, unknown_users, newer_users) = place(
        &factors.users,
        "user",
        ids.user,
        ids.n_users,
        dim,
        opts.skip_unknown,
    )?;
    let (items, unknown_items, newer_items) = place(
        &factors.items,
        "item",
        ids.item,
        ids.n_items,
        dim,
        opts.skip_unknown,
    )?;
    let mut histories = std::collections::HashMap::new();
    for (u, f) in users.iter().enumerate() {
        if f.is_none() {
            histories.insert(u as u32, history(u as u32)?);
        }
    }
    let params = crate::models::MfParams {
        factors: dim,
        ..*params
    };
    let (mf, folded) = Mf::from_factors(&params, &users, &items, |u| {
        histories.get(&u).cloned().unwrap_or_default()
    })
    .map_err(model_err)?;
    report.users = users.iter().filter(|f| f.is_some()).count();
    report.items = items.iter().filter(|f| f.is_some()).count();
    report.folded_users = folded;
    report.items_without = items.len() - report.items;
    report.unknown_users = unknown_users;
    report.unknown_items = unknown_items;
    report.newer = newer_users + newer_items;
    report.seconds = started.elapsed().as_secs_f64();
    Ok((MfChannel::new(mf), report))
}
