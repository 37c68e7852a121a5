//! Retention: how long the interaction log keeps behaviour data.
//!
//! "Here is a shopper's history, which of its events does the policy drop?" The policy is a
//! record of the store (staged and committed like every write, so a crash never leaves half
//! of a change), loaded at open; every commit drops what it no longer keeps from the log
//! (`EventDraft::expire`), and `Engine::compact` applies it once more before rewriting the
//! store, which leaves no byte of a dropped event behind.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::{meta_key, Batch, Store};

/// Seconds in a day.
const DAY: i64 = 86_400;

/// The longest age a policy may name: a century (a larger number is a mistake).
const MAX_DAYS: u32 = 36_500;

/// How much of the interaction log to keep ([`Engine::set_retention`](crate::Engine::set_retention)).
/// Either rule may be unset; an event is dropped when either rule drops it. The dropped
/// events leave the models at the next training and every file at the next
/// [`compact`](crate::Engine::compact). A user whose every event is dropped keeps their id
/// (use [`forget_user`](crate::Engine::forget_user) to remove a shopper).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// Events whose timestamp is more than this many days before the wall clock at commit.
    pub max_age_days: Option<u32>,
    /// Each user's newest this-many events are kept (by timestamp), older ones dropped.
    pub max_events_per_user: Option<u32>,
}

impl Retention {
    /// Keeps the events of the last `days` days.
    pub fn max_age_days(mut self, days: u32) -> Self {
        self.max_age_days = Some(days);
        self
    }

    /// Keeps each user's newest `n` events.
    pub fn max_events_per_user(mut self, n: u32) -> Self {
        self.max_events_per_user = Some(n);
        self
    }

    /// Checks the rules.
    ///
    /// # Errors
    /// [`Error::Invalid`] for no rule at all, 0 days or 0 events (use
    /// [`forget_user`](crate::Engine::forget_user) to drop a whole history), or more than a
    /// century.
    pub fn validate(&self) -> Result<()> {
        if self.max_age_days.is_none() && self.max_events_per_user.is_none() {
            return Err(Error::invalid(
                "retention",
                "names no rule: set max_age_days or max_events_per_user (or remove the policy)",
            ));
        }
        match self.max_age_days {
            Some(0) => Err(Error::invalid(
                "retention.max_age_days",
                "0 would drop every event; at least 1",
            )),
            Some(d) if d > MAX_DAYS => Err(Error::invalid(
                "retention.max_age_days",
                format!("{d} is more than {MAX_DAYS} (a century)"),
            )),
            _ => Ok(()),
        }?;
        if self.max_events_per_user == Some(0) {
            return Err(Error::invalid(
                "retention.max_events_per_user",
                "0 would drop every event; at least 1 (forget_user removes a shopper)",
            ));
        }
        Ok(())
    }

    /// How many of a user's oldest events the policy drops at time `now` (unix seconds);
    /// `events` are the user's events oldest first (`ts` reads one's timestamp), so both
    /// rules drop a prefix.
    pub(crate) fn expired_prefix<E>(
        &self,
        events: &[E],
        ts: impl Fn(&E) -> i64,
        now: i64,
    ) -> usize {
        let by_count = self
            .max_events_per_user
            .map_or(0, |m| events.len().saturating_sub(m as usize));
        let by_age = self.max_age_days.map_or(0, |d| {
            let cutoff = now.saturating_sub(i64::from(d) * DAY);
            events.partition_point(|e| ts(e) < cutoff)
        });
        by_count.max(by_age)
    }

    /// Whether a user with `len` events, the oldest at `oldest_ts`, has any to drop.
    pub(crate) fn drops_any(&self, len: usize, oldest_ts: i64, now: i64) -> bool {
        let over = self.max_events_per_user.is_some_and(|m| len > m as usize);
        let old = self
            .max_age_days
            .is_some_and(|d| oldest_ts < now.saturating_sub(i64::from(d) * DAY));
        len > 0 && (over || old)
    }
}

impl std::fmt::Display for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(d) = self.max_age_days {
            parts.push(format!("events of the last {d} days"));
        }
        if let Some(n) = self.max_events_per_user {
            parts.push(format!("each user's newest {n} events"));
        }
        write!(f, "keep {}", parts.join(" and "))
    }
}

/// The policy's store record (a meta record).
fn record_key() -> Vec<u8> {
    meta_key("retention")
}

/// The stored policy, read at open.
pub(crate) fn load(store: &Store) -> Result<Option<Retention>> {
    match store.get(&record_key())? {
        None => Ok(None),
        Some(v) => serde_json::from_slice(&v)
            .map(Some)
            .map_err(|e| Error::corrupt(store.path(), format!("retention policy: {e}"))),
    }
}

/// Stages a new policy (or its removal).
pub(crate) fn stage(policy: Option<&Retention>, batch: &mut Batch) -> Result<()> {
    match policy {
        Some(p) => {
            let bytes = serde_json::to_vec(p).map_err(|e| Error::backend("serde_json", e))?;
            batch.put(record_key(), bytes);
        }
        None => batch.remove(record_key()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (timestamp, sequence) pairs.
    fn at(ts: &[i64]) -> Vec<(i64, u64)> {
        ts.iter().enumerate().map(|(i, &t)| (t, i as u64)).collect()
    }

    fn prefix(p: &Retention, evs: &[(i64, u64)], now: i64) -> usize {
        p.expired_prefix(evs, |e| e.0, now)
    }

    #[test]
    fn both_rules_drop_the_oldest_events() {
        let now = 100 * DAY;
        let evs = at(&[
            now - 40 * DAY,
            now - 31 * DAY,
            now - 29 * DAY,
            now - DAY,
            now,
        ]);
        let age = Retention::default().max_age_days(30);
        assert_eq!(prefix(&age, &evs, now), 2);
        assert!(age.drops_any(evs.len(), evs[0].0, now));
        assert!(!age.drops_any(3, evs[2].0, now));
        let count = Retention::default().max_events_per_user(4);
        assert_eq!(prefix(&count, &evs, now), 1);
        assert!(count.drops_any(5, now, now));
        assert!(!count.drops_any(4, 0, now));
        // Either rule drops: the larger prefix.
        let both = age.max_events_per_user(4);
        assert_eq!(prefix(&both, &evs, now), 2);
        assert_eq!(prefix(&both.max_events_per_user(1), &evs, now), 4);
        assert_eq!(prefix(&both, &[], now), 0);
        assert!(!both.drops_any(0, 0, now));
    }

    #[test]
    fn bad_policies_are_invalid() {
        for p in [
            Retention::default(),
            Retention::default().max_age_days(0),
            Retention::default().max_age_days(MAX_DAYS + 1),
            Retention::default().max_events_per_user(0),
            Retention::default().max_age_days(30).max_events_per_user(0),
        ] {
            assert!(matches!(p.validate(), Err(Error::Invalid { .. })), "{p:?}");
        }
        assert!(Retention::default().max_age_days(1).validate().is_ok());
        assert!(Retention::default()
            .max_events_per_user(1)
            .validate()
            .is_ok());
    }
}
