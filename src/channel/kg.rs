//! Knowledge-graph relatedness as a channel: items sharing entities (brand, category levels,
//! imported entities) with the shopper's history.

use std::any::Any;

use super::{
    history_propose, history_score, load_model, model_err, save_model, Allow, Channel, ChannelHits,
    ChannelSpec, FitInput, Reason, Request, Retriever,
};
use crate::error::Result;
use crate::models::KgRelatedness;

pub(crate) const SPEC: ChannelSpec = ChannelSpec {
    channel: Channel::Kg,
    fit: |i: &FitInput<'_>| {
        let m = KgRelatedness::fit(i.data.n_items, i.item_entities, i.n_entities, &i.opts.kg)
            .map_err(model_err)?;
        Ok(Box::new(m))
    },
    load: |b: &[u8]| Ok(Box::new(load_model::<KgRelatedness>(b, "model file: kg")?)),
};

impl Retriever for KgRelatedness {
    fn channel(&self) -> Channel {
        Channel::Kg
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
        KgRelatedness::explain(self, item, req.history)
            .and_then(|(h, _)| self.best_link(item, h))
            .map(|(entity, _)| Reason::Entity(entity))
    }

    fn save(&self) -> Result<Vec<u8>> {
        save_model(self)
    }

    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
}
