//! BM25 text search as a channel (a content channel: it reads the request's text, applies
//! the filter inside tantivy, and needs no fitting).

use super::{Allow, Channel, ChannelHits, Request, Retriever};
use crate::error::Result;
use crate::text::{TextIndex, TextQuery};

/// The text index of one engine.
pub(crate) struct TextChannel<'a> {
    pub index: &'a TextIndex,
    /// What the request's text also searches (`Synonyms::expand` of its terms).
    pub synonyms: &'a [(Vec<String>, Vec<String>)],
}

impl Retriever for TextChannel<'_> {
    fn channel(&self) -> Channel {
        Channel::Text
    }

    /// Its best `n` under the request's filter. `ok` is not applied here: the caller's
    /// candidate set applies it, and the channel's normalisation spans every match.
    fn propose(&self, req: &Request<'_>, n: usize, _ok: &Allow<'_>) -> Result<Option<ChannelHits>> {
        let Some(text) = req.text else {
            return Ok(None);
        };
        let hits = self.index.search(&TextQuery {
            text,
            filter: req.filter,
            limit: n,
            title_boost: 0.0,
            fuzzy: req.typos,
            synonyms: self.synonyms,
        })?;
        Ok(Some(
            hits.into_iter().map(|h| (h.item.0, h.score)).collect(),
        ))
    }

    fn score(&self, _req: &Request<'_>, _cands: &[u32]) -> Option<ChannelHits> {
        None
    }
}
