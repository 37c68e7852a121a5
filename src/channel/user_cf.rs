//! User-based CF as a channel: what shoppers like this one took (a known shopper's stored
//! neighbours, or neighbours found from a new shopper's history).

use std::any::Any;

use super::{
    load_model, model_err, pick, save_model, top_sparse, Allow, Channel, ChannelHits, ChannelSpec,
    FitInput, Request, Retriever,
};
use crate::error::Result;
use crate::models::{SparseScores, UserCf};

pub(crate) const SPEC: ChannelSpec = ChannelSpec {
    channel: Channel::UserCf,
    fit: |i: &FitInput<'_>| {
        let m = UserCf::fit(i.data, &i.opts.user_cf).map_err(model_err)?;
        Ok(Box::new(m))
    },
    load: |b: &[u8]| Ok(Box::new(load_model::<UserCf>(b, "model file: user_cf")?)),
};

impl UserCf {
    /// A known shopper's scores, or a new shopper's from their history.
    fn sparse_for(&self, req: &Request<'_>) -> Option<SparseScores> {
        match req.user {
            Some(u) => self.score_user_sparse(u),
            None => (!req.history.is_empty()).then(|| self.score_history_sparse(req.history)),
        }
    }
}

impl Retriever for UserCf {
    fn channel(&self) -> Channel {
        Channel::UserCf
    }

    fn propose(&self, req: &Request<'_>, n: usize, ok: &Allow<'_>) -> Result<Option<ChannelHits>> {
        Ok(self.sparse_for(req).map(|s| top_sparse(s, n, ok)))
    }

    fn score(&self, req: &Request<'_>, cands: &[u32]) -> Option<ChannelHits> {
        self.sparse_for(req).map(|s| pick(cands, &|i| s.get(i)))
    }

    fn score_all(&self, req: &Request<'_>, scores: &mut [f32]) {
        let _ = match req.user {
            Some(u) => self.score_user(u, scores),
            None => self.score_history(req.history, scores),
        };
    }

    fn save(&self) -> Result<Vec<u8>> {
        save_model(self)
    }

    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
}
