//! Item-based CF as a channel: items similar to the shopper's history.

use std::any::Any;

use super::{
    history_propose, history_score, load_model, model_err, save_model, Allow, Channel, ChannelHits,
    ChannelSpec, FitInput, Reason, Request, Retriever,
};
use crate::error::Result;
use crate::models::ItemCf;

pub(crate) const SPEC: ChannelSpec = ChannelSpec {
    channel: Channel::ItemCf,
    fit: |i: &FitInput<'_>| {
        let m = ItemCf::fit(i.data, &i.opts.item_cf).map_err(model_err)?;
        Ok(Box::new(m))
    },
    load: |b: &[u8]| Ok(Box::new(load_model::<ItemCf>(b, "model file: item_cf")?)),
};

impl Retriever for ItemCf {
    fn channel(&self) -> Channel {
        Channel::ItemCf
    }

    fn propose(&self, req: &Request<'_>, n: usize, ok: &Allow<'_>) -> Result<Option<ChannelHits>> {
        Ok(history_propose(req, n, ok, &|h| {
            self.score_history_sparse(h)
        }))
    }

    fn score(&self, req: &Request<'_>, cands: &[u32]) -> Option<ChannelHits> {
        history_score(req, cands, &|h| self.score_history_sparse(h))
    }

    fn score_all(&self, req: &Request<'_>, scores: &mut [f32]) {
        let _ = self.score_history(req.history, scores);
    }

    fn explain(&self, item: u32, req: &Request<'_>) -> Option<Reason> {
        ItemCf::explain(self, item, req.history).map(|(h, _)| Reason::HistoryItem(h))
    }

    fn save(&self) -> Result<Vec<u8>> {
        save_model(self)
    }

    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
}
