//! The interaction log: events, their validation and their keys in the store.
//!
//! "Here is a user (or an item), give me their events in time order." Events are keyed by
//! `(user, ts, item, kind)`, so appending the same event twice stores it once: delivery may
//! be at-least-once. A rating appended again with a new value replaces the old value.

use serde::{Deserialize, Serialize};

use crate::catalog::{validate_id, ItemId};
use crate::config::Limits;
use crate::error::{Error, Result};
use crate::store::{be_u32, be_u64, key, EVENT, ITEM_EVENT};

/// Dense internal user id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UserId(pub u32);

/// What a user did with an item.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum EventKind {
    /// Saw the product page.
    View,
    /// Clicked the product in a list.
    Click,
    /// Put it in the cart.
    Cart,
    /// Bought it.
    Purchase,
    /// Rated it; the value must be finite (any scale, e.g. 1..=5).
    Rating(f32),
}

impl EventKind {
    /// The name used in files and the query language.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::View => "view",
            EventKind::Click => "click",
            EventKind::Cart => "cart",
            EventKind::Purchase => "purchase",
            EventKind::Rating(_) => "rating",
        }
    }

    /// Parses `view`, `click`, `cart`, `purchase`, or a number (a rating).
    pub fn parse(s: &str) -> Option<EventKind> {
        match s.trim().to_ascii_lowercase().as_str() {
            "view" => Some(EventKind::View),
            "click" => Some(EventKind::Click),
            "cart" | "add_to_cart" => Some(EventKind::Cart),
            "purchase" | "buy" => Some(EventKind::Purchase),
            other => other
                .parse::<f32>()
                .ok()
                .filter(|v| v.is_finite())
                .map(EventKind::Rating),
        }
    }

    fn code(&self) -> u8 {
        match self {
            EventKind::View => 0,
            EventKind::Click => 1,
            EventKind::Cart => 2,
            EventKind::Purchase => 3,
            EventKind::Rating(_) => 4,
        }
    }

    fn from_code(code: u8, value: f32) -> Option<EventKind> {
        Some(match code {
            0 => EventKind::View,
            1 => EventKind::Click,
            2 => EventKind::Cart,
            3 => EventKind::Purchase,
            4 => EventKind::Rating(value),
            _ => return None,
        })
    }

    /// The rating value, or 0 for other kinds.
    pub fn value(&self) -> f32 {
        match self {
            EventKind::Rating(v) => *v,
            _ => 0.0,
        }
    }
}

/// One interaction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// External user id.
    pub user: String,
    /// External product id; must be in the catalog.
    pub item: String,
    /// What happened.
    pub kind: EventKind,
    /// Unix time in seconds, not negative and not far in the future.
    pub ts: i64,
}

impl Event {
    /// An event.
    pub fn new(user: impl Into<String>, item: impl Into<String>, kind: EventKind, ts: i64) -> Self {
        Event {
            user: user.into(),
            item: item.into(),
            kind,
            ts,
        }
    }

    /// Checks ids, the rating value and the timestamp against `now` (unix seconds).
    pub(crate) fn validate(&self, limits: &Limits, now: i64) -> Result<()> {
        validate_id("event.user", &self.user, limits)?;
        validate_id("event.item", &self.item, limits)?;
        if let EventKind::Rating(v) = self.kind {
            if !v.is_finite() {
                return Err(Error::invalid(
                    "event.kind",
                    format!("rating {v} is not finite"),
                ));
            }
        }
        if self.ts < 0 {
            return Err(Error::invalid(
                "event.ts",
                format!("{} is before 1970", self.ts),
            ));
        }
        if self.ts > now.saturating_add(limits.max_future_secs) {
            return Err(Error::invalid(
                "event.ts",
                format!(
                    "{} is more than {} s after the current time {now}",
                    self.ts, limits.max_future_secs
                ),
            ));
        }
        Ok(())
    }
}

/// An event as stored, with dense ids.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct StoredEvent {
    pub user: UserId,
    pub item: ItemId,
    pub kind: EventKind,
    pub ts: i64,
    pub seq: u64,
}

/// Key in the per-user history.
pub(crate) fn user_key(user: UserId, ts: i64, item: ItemId, kind: EventKind) -> Vec<u8> {
    key(
        EVENT,
        &[
            &user.0.to_be_bytes(),
            &(ts as u64).to_be_bytes(),
            &item.0.to_be_bytes(),
            &[kind.code()],
        ],
    )
}

/// Key in the per-item index.
pub(crate) fn item_key(item: ItemId, ts: i64, user: UserId, kind: EventKind) -> Vec<u8> {
    key(
        ITEM_EVENT,
        &[
            &item.0.to_be_bytes(),
            &(ts as u64).to_be_bytes(),
            &user.0.to_be_bytes(),
            &[kind.code()],
        ],
    )
}

/// Value stored under a user key.
pub(crate) fn event_value(seq: u64, kind: EventKind) -> Vec<u8> {
    let mut v = Vec::with_capacity(12);
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&kind.value().to_be_bytes());
    v
}

/// Decodes a per-user history record.
pub(crate) fn decode_user_event(k: &[u8], v: &[u8]) -> Option<StoredEvent> {
    if k.len() != 18 || v.len() != 12 {
        return None;
    }
    let user = UserId(be_u32(k, 1)?);
    let ts = be_u64(k, 5)? as i64;
    let item = ItemId(be_u32(k, 13)?);
    let seq = be_u64(v, 0)?;
    let value = f32::from_bits(be_u32(v, 8)?);
    let kind = EventKind::from_code(k[17], value)?;
    Some(StoredEvent {
        user,
        item,
        kind,
        ts,
        seq,
    })
}

/// Decodes a per-item index key into `(item, ts, user, kind code)`.
pub(crate) fn decode_item_key(k: &[u8]) -> Option<(ItemId, i64, UserId, u8)> {
    if k.len() != 18 {
        return None;
    }
    Some((
        ItemId(be_u32(k, 1)?),
        be_u64(k, 5)? as i64,
        UserId(be_u32(k, 13)?),
        k[17],
    ))
}
