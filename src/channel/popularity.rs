//! Popularity as a channel: the most taken items (with decay), the cold-start fallback.

use std::any::Any;

use super::{
    load_model, model_err, pick, save_model, Allow, Channel, ChannelHits, ChannelSpec, FitInput,
    Request, Retriever,
};
use crate::error::Result;
use crate::models::Popularity;

pub(crate) const SPEC: ChannelSpec = ChannelSpec {
    channel: Channel::Popularity,
    fit: |i: &FitInput<'_>| {
        let m =
            Popularity::fit(i.data, i.item_categories, &i.opts.popularity).map_err(model_err)?;
        // Ranked now rather than by the first recommendation.
        let _ = m.ranked();
        Ok(Box::new(m))
    },
    load: |b: &[u8]| {
        let m = load_model::<Popularity>(b, "model file: popularity")?;
        let _ = m.ranked();
        Ok(Box::new(m))
    },
};

impl Retriever for Popularity {
    fn channel(&self) -> Channel {
        Channel::Popularity
    }

    fn propose(&self, _req: &Request<'_>, n: usize, ok: &Allow<'_>) -> Result<Option<ChannelHits>> {
        let hits = self.ranked().iter().filter(|&&i| ok(i)).take(n);
        Ok(Some(hits.map(|&i| (i, self.item_score(i))).collect()))
    }

    fn score(&self, _req: &Request<'_>, cands: &[u32]) -> Option<ChannelHits> {
        Some(pick(cands, &|i| self.item_score(i)))
    }

    fn score_all(&self, _req: &Request<'_>, scores: &mut [f32]) {
        let _ = Popularity::score(self, scores);
    }

    fn save(&self) -> Result<Vec<u8>> {
        save_model(self)
    }

    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
}
