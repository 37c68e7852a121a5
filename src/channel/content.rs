//! Content from the history as a channel: items close to the shopper's recent items by
//! text and by product vector (a fitted neighbour list, so it scores like item-CF and a
//! product nobody has bought yet can still be recommended).

use std::any::Any;

use super::{
    history_propose, history_score, load_model, model_err, save_model, Allow, Channel, ChannelHits,
    ChannelSpec, FitInput, Reason, Request, Retriever,
};
use crate::error::Result;
use crate::models::ContentKnn;

pub(crate) const SPEC: ChannelSpec = ChannelSpec {
    channel: Channel::Content,
    fit: |i: &FitInput<'_>| {
        let m = ContentKnn::fit(i.data.n_items, i.content, &i.opts.content).map_err(model_err)?;
        Ok(Box::new(m))
    },
    load: |b: &[u8]| {
        Ok(Box::new(load_model::<ContentKnn>(
            b,
            "model file: content",
        )?))
    },
};

impl Retriever for ContentKnn {
    fn channel(&self) -> Channel {
        Channel::Content
    }

    fn propose(&self, req: &Request<'_>, n: usize, ok: &Allow<'_>) -> Result<Option<ChannelHits>> {
        if self.is_empty() {
            return Ok(None);
        }
        Ok(history_propose(req, n, ok, &|h| {
            self.score_history_sparse(h)
        }))
    }

    fn score(&self, req: &Request<'_>, cands: &[u32]) -> Option<ChannelHits> {
        if self.is_empty() {
            return None;
        }
        history_score(req, cands, &|h| self.score_history_sparse(h))
    }

    fn score_all(&self, req: &Request<'_>, scores: &mut [f32]) {
        let _ = self.score_history(req.history, scores);
    }

    /// "Because you viewed X": the recent item whose content is closest.
    fn explain(&self, item: u32, req: &Request<'_>) -> Option<Reason> {
        ContentKnn::explain(self, item, req.history).map(|(h, _)| Reason::HistoryItem(h))
    }

    fn save(&self) -> Result<Vec<u8>> {
        save_model(self)
    }

    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
}
