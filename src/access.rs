//! Right of access: everything the engine holds about one shopper, in one document
//! ([`Engine::export_user`](crate::Engine::export_user), `EXPORT USER 'u' TO 'file.json'`).
//!
//! What the engine keeps about a shopper is their events (the log) and what the models
//! derive from them at query time: the shopper's current recommendations, each channel's
//! part in them and the history items the channels name as the reason. The document holds
//! all of it; the trained models hold no other per-shopper record than what serving
//! recomputes here (the factor model's user vectors are fitted from the same events and
//! dropped with them by `forget_user` and the next `TRAIN`).

use serde::Serialize;

use crate::events::{Event, EventKind};
use crate::query::Hit;

/// One shopper's data, as [`Engine::export_user`](crate::Engine::export_user) returns it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UserExport {
    /// The shopper's id.
    pub user: String,
    /// The engine's committed sequence number when the document was made.
    pub as_of_seq: u64,
    /// The model generation that produced `profile` and `recommendations` (0: none trained).
    pub model_generation: u64,
    /// Every stored event of the shopper, oldest first.
    pub events: Vec<ExportedEvent>,
    /// What the models derive from those events.
    pub profile: Profile,
    /// The shopper's current recommendations, with why each is there.
    pub recommendations: Vec<Recommended>,
}

/// One event as the query language shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExportedEvent {
    /// Product id.
    pub item: String,
    /// `view`, `click`, `cart`, `purchase` or `rating`.
    pub kind: String,
    /// A rating's value (none for the other kinds).
    pub value: Option<f32>,
    /// Unix time in seconds.
    pub ts: i64,
}

/// The derived profile: how much each channel carries of the shopper's recommendations.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Profile {
    /// Channels by their summed contribution to the recommendations' fused scores, largest
    /// first.
    pub channels: Vec<ChannelShare>,
    /// The history items the channels name as reasons, most named first.
    pub reasons: Vec<Reason>,
    /// Notes of the recommendation (cold start and the like).
    pub notes: Vec<String>,
}

/// A history item named as the reason for recommendations.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Reason {
    /// Product id of the history item.
    pub item: String,
    /// How many channel scores of the recommendations name it.
    pub times: usize,
}

/// One channel's part in a shopper's recommendations.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChannelShare {
    /// The channel's name (`item_cf`, `mf`, ...).
    pub channel: String,
    /// Its contributions to the fused scores, summed over the recommendations.
    pub contribution: f32,
    /// How many of the recommendations it scored.
    pub items: usize,
}

/// One recommendation and its explanation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Recommended {
    /// Product id.
    pub id: String,
    /// Product title.
    pub title: String,
    /// Fused score.
    pub score: f32,
    /// Each channel that scored it.
    pub channels: Vec<ChannelPart>,
}

/// One channel's score of one recommendation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChannelPart {
    /// The channel's name.
    pub channel: String,
    /// Its raw score.
    pub raw: f32,
    /// What it added to the fused score.
    pub contribution: f32,
    /// The history item it names as the reason, if any.
    pub because_of: Option<String>,
}

impl UserExport {
    /// The document from a shopper's events and their explained recommendations.
    pub(crate) fn new(
        user: &str,
        as_of_seq: u64,
        model_generation: u64,
        events: Vec<Event>,
        hits: &[Hit],
    ) -> UserExport {
        let mut profile = Profile::default();
        let mut reasons: Vec<Reason> = Vec::new();
        let mut recommendations = Vec::with_capacity(hits.len());
        for h in hits {
            let mut channels = Vec::new();
            if let Some(e) = &h.explanation {
                for c in &e.channels {
                    let name = c.channel.name();
                    match profile.channels.iter_mut().find(|s| s.channel == name) {
                        Some(s) => {
                            s.contribution += c.contribution;
                            s.items += 1;
                        }
                        None => profile.channels.push(ChannelShare {
                            channel: name.to_string(),
                            contribution: c.contribution,
                            items: 1,
                        }),
                    }
                    if let Some(b) = &c.because_of {
                        match reasons.iter_mut().find(|r| r.item == *b) {
                            Some(r) => r.times += 1,
                            None => reasons.push(Reason {
                                item: b.clone(),
                                times: 1,
                            }),
                        }
                    }
                    channels.push(ChannelPart {
                        channel: name.to_string(),
                        raw: c.raw,
                        contribution: c.contribution,
                        because_of: c.because_of.clone(),
                    });
                }
                for n in &e.notes {
                    if !profile.notes.contains(n) {
                        profile.notes.push(n.clone());
                    }
                }
            }
            recommendations.push(Recommended {
                id: h.id.clone(),
                title: h.product.title.clone(),
                score: h.score,
                channels,
            });
        }
        profile.channels.sort_by(|a, b| {
            b.contribution
                .total_cmp(&a.contribution)
                .then_with(|| a.channel.cmp(&b.channel))
        });
        reasons.sort_by(|a, b| b.times.cmp(&a.times).then_with(|| a.item.cmp(&b.item)));
        profile.reasons = reasons;
        UserExport {
            user: user.to_string(),
            as_of_seq,
            model_generation,
            events: events
                .into_iter()
                .map(|e| ExportedEvent {
                    item: e.item,
                    kind: e.kind.name().to_string(),
                    value: match e.kind {
                        EventKind::Rating(v) => Some(v),
                        _ => None,
                    },
                    ts: e.ts,
                })
                .collect(),
            profile,
            recommendations,
        }
    }
}
