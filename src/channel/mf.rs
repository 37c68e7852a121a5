//! Matrix factorisation (implicit ALS) as a channel: a known shopper's factor against every
//! item's (or a graph walk over the item factors in large catalogs), a new shopper folded in
//! from their history.

use std::any::Any;
use std::sync::{Arc, OnceLock};

use super::{
    load_model, model_err, pick, save_model, top_dense, Allow, Channel, ChannelHits, ChannelSpec,
    FitInput, Request, Retriever,
};
use crate::catalog::{validate_vector, ItemId};
use crate::error::Result;
use crate::models::Mf;
use crate::vector::{Allowed, VectorIndex};

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

/// The factors, and their item side in an HNSW graph (inner product) once built.
pub(crate) struct MfChannel {
    pub mf: Mf,
    /// Built in the background after training or loading when the catalog is large (see
    /// `ModelSet::spawn_factor_index`); until then MF scores every item.
    pub index: Arc<OnceLock<VectorIndex>>,
}

impl MfChannel {
    fn new(mf: Mf) -> Self {
        MfChannel {
            mf,
            index: Arc::default(),
        }
    }

    /// Large catalogs: user-to-item recall as a graph walk over the item factors.
    fn walk(&self, user: u32, n: usize, ok: &Allow<'_>) -> Option<ChannelHits> {
        let index = self.index.get()?;
        let uf = self.mf.user_vector(user)?;
        validate_vector(uf, self.mf.dim()).ok()?;
        let keep = |i: ItemId| ok(i.0);
        let hits = index.search(uf, n, Allowed::Predicate(&keep));
        Some(
            hits.into_iter()
                .filter(|h| h.score > 0.0)
                .map(|h| (h.item.0, h.score))
                .collect(),
        )
    }
}

impl Retriever for MfChannel {
    fn channel(&self) -> Channel {
        Channel::Mf
    }

    fn propose(&self, req: &Request<'_>, n: usize, ok: &Allow<'_>) -> Result<Option<ChannelHits>> {
        let n_items = self.mf.n_items();
        Ok(match req.user {
            Some(u) => self
                .walk(u, n, ok)
                .or_else(|| top_dense(n_items, n, ok, &|s| self.mf.score_user(u, s).is_ok())),
            None if !req.history.is_empty() => top_dense(n_items, n, ok, &|s| {
                self.mf.score_history(req.history, s).is_ok()
            }),
            None => None,
        })
    }

    fn score(&self, req: &Request<'_>, cands: &[u32]) -> Option<ChannelHits> {
        match req.user.and_then(|u| self.mf.user_vector(u)) {
            Some(uf) => {
                let mut v: ChannelHits = cands
                    .iter()
                    .filter_map(|&i| {
                        let f = self.mf.item_vector(i)?;
                        let s: f32 = uf.iter().zip(f).map(|(a, c)| a * c).sum();
                        (s.is_finite() && s > 0.0).then_some((i, s))
                    })
                    .collect();
                v.sort_by(|a, c| c.1.total_cmp(&a.1).then(a.0.cmp(&c.0)));
                Some(v)
            }
            None if !req.history.is_empty() => {
                let mut scores = vec![0f32; self.mf.n_items()];
                self.mf
                    .score_history(req.history, &mut scores)
                    .is_ok()
                    .then(|| pick(cands, &|i| scores.get(i as usize).copied().unwrap_or(0.0)))
            }
            None => None,
        }
    }

    fn score_all(&self, req: &Request<'_>, scores: &mut [f32]) {
        let _ = match req.user {
            Some(u) => self.mf.score_user(u, scores),
            None => self.mf.score_history(req.history, scores),
        };
    }

    fn save(&self) -> Result<Vec<u8>> {
        save_model(&self.mf)
    }

    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
}
