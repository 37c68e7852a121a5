//! The interaction log: events, their validation and their keys in the store.
//!
//! "Here is a user (or an item), give me their events in time order." The store keeps events
//! in an append-only log of blocks of 256 sequence numbers (appends touch only the tail);
//! the per-user and per-item indexes live in memory and are rebuilt at open. An event equal
//! to a stored one in user, item, kind and timestamp is a duplicate and stores nothing, so
//! delivery may be at-least-once; a rating appended again with a new value replaces the old.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::catalog::{validate_id, ItemId};
use crate::config::Limits;
use crate::error::{Error, Result};
use crate::retention::Retention;
use crate::store::{be_u32, be_u64, key, Batch, Store};

/// Store prefix of the log: block `u64` (seq >> 8) -> event records (seq, uid, iid, kind,
/// value, ts).
pub(crate) const EVENT: u8 = b'E';

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

    pub(crate) fn code(&self) -> u8 {
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

/// Length of an encoded event record: seq, user, item, kind, value, ts.
const RECORD_LEN: usize = 29;

/// Events are stored in blocks of this many consecutive sequence numbers (as a power of 2):
/// one store key per block instead of one per event keeps batched appends cheap.
const BLOCK_BITS: u32 = 8;

/// The block holding the event with this sequence number.
pub(crate) fn block_of(seq: u64) -> u64 {
    seq >> BLOCK_BITS
}

/// Key of a block of the append-only log; blocks are in sequence order, so appends touch
/// only the tail of the tree.
pub(crate) fn block_key(block: u64) -> Vec<u8> {
    key(EVENT, &[&block.to_be_bytes()])
}

/// Appends an event record to a block value.
pub(crate) fn encode_into(e: &StoredEvent, out: &mut Vec<u8>) {
    out.extend_from_slice(&e.seq.to_be_bytes());
    out.extend_from_slice(&e.user.0.to_be_bytes());
    out.extend_from_slice(&e.item.0.to_be_bytes());
    out.push(e.kind.code());
    out.extend_from_slice(&e.kind.value().to_be_bytes());
    out.extend_from_slice(&e.ts.to_be_bytes());
}

/// Decodes a block value; `None` when it is damaged.
pub(crate) fn decode_block(v: &[u8]) -> Option<Vec<StoredEvent>> {
    if !v.len().is_multiple_of(RECORD_LEN) {
        return None;
    }
    v.chunks_exact(RECORD_LEN)
        .map(|r| {
            let seq = be_u64(r, 0)?;
            let user = UserId(be_u32(r, 8)?);
            let item = ItemId(be_u32(r, 12)?);
            let value = f32::from_bits(be_u32(r, 17)?);
            let kind = EventKind::from_code(r[16], value)?;
            let ts = be_u64(r, 21)? as i64;
            Some(StoredEvent {
                user,
                item,
                kind,
                ts,
                seq,
            })
        })
        .collect()
}

/// The in-memory per-user (time order) and per-item indexes over the event log, rebuilt at
/// open by one scan of the log.
#[derive(Default)]
pub(crate) struct EventIndex {
    /// Events of each user, sorted by (ts, seq).
    pub by_user: Vec<Vec<StoredEvent>>,
    /// (user, ts) of each item's events, in arrival order.
    pub by_item: Vec<Vec<(UserId, i64)>>,
    /// Number of stored events.
    pub total: u64,
}

impl EventIndex {
    /// The stored event equal to `(user, item, kind, ts)`, if any.
    pub fn find(
        &self,
        user: UserId,
        item: ItemId,
        kind: EventKind,
        ts: i64,
    ) -> Option<&StoredEvent> {
        let evs = self.by_user.get(user.0 as usize)?;
        let start = evs.partition_point(|e| e.ts < ts);
        evs[start..]
            .iter()
            .take_while(|e| e.ts == ts)
            .find(|e| e.item == item && e.kind.code() == kind.code())
    }

    /// Adds an event (its sequence is the largest so far).
    pub fn insert(&mut self, e: StoredEvent) {
        let u = e.user.0 as usize;
        if self.by_user.len() <= u {
            self.by_user.resize_with(u + 1, Vec::new);
        }
        let evs = &mut self.by_user[u];
        let at = evs.partition_point(|x| (x.ts, x.seq) <= (e.ts, e.seq));
        evs.insert(at, e);
        let i = e.item.0 as usize;
        if self.by_item.len() <= i {
            self.by_item.resize_with(i + 1, Vec::new);
        }
        self.by_item[i].push((e.user, e.ts));
        self.total += 1;
    }

    /// Removes one event (a rating replaced by a newer value).
    pub fn remove(&mut self, e: &StoredEvent) {
        if let Some(evs) = self.by_user.get_mut(e.user.0 as usize) {
            let before = evs.len();
            evs.retain(|x| x.seq != e.seq);
            if evs.len() < before {
                self.total -= 1;
                if let Some(list) = self.by_item.get_mut(e.item.0 as usize) {
                    if let Some(pos) = list.iter().position(|(u, ts)| *u == e.user && *ts == e.ts) {
                        list.remove(pos);
                    }
                }
            }
        }
    }

    /// Removes many events at once (the ones a retention policy drops): one pass over each
    /// touched user's and item's list.
    pub fn remove_many(&mut self, gone: &[StoredEvent]) {
        let mut users: HashMap<u32, HashSet<u64>> = HashMap::new();
        let mut items: HashMap<u32, HashMap<(u32, i64), usize>> = HashMap::new();
        for e in gone {
            users.entry(e.user.0).or_default().insert(e.seq);
        }
        for (u, seqs) in users {
            let Some(evs) = self.by_user.get_mut(u as usize) else {
                continue;
            };
            let before = evs.len();
            evs.retain(|x| {
                let drop = seqs.contains(&x.seq);
                if drop {
                    *items
                        .entry(x.item.0)
                        .or_default()
                        .entry((x.user.0, x.ts))
                        .or_default() += 1;
                }
                !drop
            });
            self.total -= (before - evs.len()) as u64;
        }
        for (i, mut counts) in items {
            if let Some(list) = self.by_item.get_mut(i as usize) {
                list.retain(|(u, ts)| match counts.get_mut(&(u.0, *ts)) {
                    Some(n) if *n > 0 => {
                        *n -= 1;
                        false
                    }
                    _ => true,
                });
            }
        }
    }

    /// Removes and returns every event of a user.
    pub fn remove_user(&mut self, user: UserId) -> Vec<StoredEvent> {
        let Some(evs) = self.by_user.get_mut(user.0 as usize) else {
            return Vec::new();
        };
        let evs = std::mem::take(evs);
        for e in &evs {
            if let Some(list) = self.by_item.get_mut(e.item.0 as usize) {
                list.retain(|(u, _)| *u != user);
            }
        }
        self.total -= evs.len() as u64;
        evs
    }
}

/// A block read from `store`; a damaged one is `Corrupt`.
fn decode_stored_block(store: &Store, v: &[u8]) -> Result<Vec<StoredEvent>> {
    decode_block(v).ok_or_else(|| Error::corrupt(store.path(), "undecodable event block"))
}

/// The committed log, read at open into its in-memory indexes.
pub(crate) fn load(store: &Store) -> Result<EventIndex> {
    let mut index = EventIndex::default();
    for r in store.scan(&[EVENT]) {
        let (_, v) = r?;
        let block = decode_stored_block(store, &v)?;
        for e in block {
            index.insert(e);
        }
    }
    Ok(index)
}

/// What a durable commit changes in the event index.
#[derive(Default)]
pub(crate) struct EventChanges {
    new: Vec<StoredEvent>,
    replaced: Vec<StoredEvent>,
    forgotten: Vec<UserId>,
    /// Stored events the retention policy drops.
    expired: Vec<StoredEvent>,
}

impl EventChanges {
    /// Whether the commit adds, replaces, expires and forgets nothing.
    pub fn is_empty(&self) -> bool {
        self.new.is_empty()
            && self.replaced.is_empty()
            && self.forgotten.is_empty()
            && self.expired.is_empty()
    }
}

impl EventIndex {
    /// Publishes a durable commit's event changes.
    pub fn apply(&mut self, changes: EventChanges) {
        for e in &changes.replaced {
            self.remove(e);
        }
        self.remove_many(&changes.expired);
        for e in changes.new {
            if !changes.forgotten.contains(&e.user) {
                self.insert(e);
            }
        }
        for uid in &changes.forgotten {
            self.remove_user(*uid);
        }
    }
}

/// One commit's event writes, staged beside the committed index.
pub(crate) struct EventDraft<'a> {
    index: &'a EventIndex,
    /// Events of this commit by (user, item, kind, ts), to catch duplicates inside it.
    in_batch: HashMap<(u32, u32, u8, i64), usize>,
    changes: EventChanges,
    /// Records to add to the log's blocks, and sequences to remove from them.
    added: Vec<StoredEvent>,
    removed: HashSet<u64>,
    /// Events that were already stored (or a rating whose value is replaced).
    pub duplicates: usize,
}

impl<'a> EventDraft<'a> {
    pub fn new(index: &'a EventIndex) -> Self {
        EventDraft {
            index,
            in_batch: HashMap::new(),
            changes: EventChanges::default(),
            added: Vec::new(),
            removed: HashSet::new(),
            duplicates: 0,
        }
    }

    /// Stages an event; `false` when an equal one is stored (or staged), which stores
    /// nothing. A rating with a new value replaces the stored one.
    pub fn add(&mut self, e: StoredEvent) -> bool {
        let identity = (e.user.0, e.item.0, e.kind.code(), e.ts);
        let previous = match self.in_batch.get(&identity) {
            Some(&at) => Some(self.changes.new[at]),
            None => self.index.find(e.user, e.item, e.kind, e.ts).copied(),
        };
        match previous {
            Some(prev) if prev.kind == e.kind => {
                self.duplicates += 1;
                return false;
            }
            Some(prev) => {
                self.duplicates += 1;
                self.removed.insert(prev.seq);
                match self.in_batch.get(&identity) {
                    Some(&at) => self.changes.new[at] = e,
                    None => {
                        self.changes.replaced.push(prev);
                        self.in_batch.insert(identity, self.changes.new.len());
                        self.changes.new.push(e);
                    }
                }
            }
            None => {
                self.in_batch.insert(identity, self.changes.new.len());
                self.changes.new.push(e);
            }
        }
        self.added.push(e);
        true
    }

    /// Stages the removal of every event of a user, stored or staged.
    pub fn forget(&mut self, user: UserId) {
        let stored = self
            .index
            .by_user
            .get(user.0 as usize)
            .map_or(&[][..], Vec::as_slice);
        for ev in stored
            .iter()
            .chain(self.changes.new.iter().filter(|e| e.user == user))
        {
            self.removed.insert(ev.seq);
        }
        self.changes.forgotten.push(user);
    }

    /// Stages the removal of the events `policy` no longer keeps at `now` (unix seconds),
    /// stored or staged by this commit; returns how many. Called after every other write of
    /// the commit, so a user's history is complete when the policy reads it.
    pub fn expire(&mut self, policy: &Retention, now: i64) -> usize {
        let mut staged: HashMap<u32, Vec<StoredEvent>> = HashMap::new();
        for e in &self.changes.new {
            staged.entry(e.user.0).or_default().push(*e);
        }
        let users = staged
            .keys()
            .map(|&u| u as usize + 1)
            .max()
            .unwrap_or(0)
            .max(self.index.by_user.len());
        let mut dropped_staged = HashSet::new();
        let mut dropped = 0;
        for u in 0..users {
            let uid = UserId(u as u32);
            if self.changes.forgotten.contains(&uid) {
                continue;
            }
            let stored = self.index.by_user.get(u).map_or(&[][..], Vec::as_slice);
            let new = staged.remove(&uid.0);
            let history: std::borrow::Cow<'_, [StoredEvent]> = match new {
                None => match stored.first() {
                    Some(first) if policy.drops_any(stored.len(), first.ts, now) => {
                        std::borrow::Cow::Borrowed(stored)
                    }
                    _ => continue,
                },
                Some(new) => {
                    let mut all: Vec<StoredEvent> = stored
                        .iter()
                        .filter(|e| !self.removed.contains(&e.seq))
                        .copied()
                        .chain(new)
                        .collect();
                    all.sort_by_key(|e| (e.ts, e.seq));
                    std::borrow::Cow::Owned(all)
                }
            };
            let gone = &history[..policy.expired_prefix(&history, |e| e.ts, now)];
            for e in gone {
                self.removed.insert(e.seq);
                if self.index.find(e.user, e.item, e.kind, e.ts).map(|s| s.seq) == Some(e.seq) {
                    self.changes.expired.push(*e);
                } else {
                    dropped_staged.insert(e.seq);
                }
            }
            dropped += gone.len();
        }
        if !dropped_staged.is_empty() {
            self.changes
                .new
                .retain(|e| !dropped_staged.contains(&e.seq));
            self.added.retain(|e| !dropped_staged.contains(&e.seq));
        }
        dropped
    }

    /// Rewrites every block of the log this commit touches into `batch`.
    pub fn stage_blocks(&self, store: &Store, batch: &mut Batch) -> Result<()> {
        let mut blocks: std::collections::BTreeSet<u64> =
            self.added.iter().map(|e| block_of(e.seq)).collect();
        blocks.extend(self.removed.iter().map(|s| block_of(*s)));
        for block in blocks {
            let key = block_key(block);
            let mut records = match store.get(&key)? {
                Some(v) => decode_stored_block(store, &v)?,
                None => Vec::new(),
            };
            records.extend(
                self.added
                    .iter()
                    .filter(|e| block_of(e.seq) == block)
                    .copied(),
            );
            records.retain(|e| !self.removed.contains(&e.seq));
            if records.is_empty() {
                batch.remove(key);
            } else {
                let mut value = Vec::with_capacity(records.len() * RECORD_LEN);
                for e in &records {
                    encode_into(e, &mut value);
                }
                batch.put(key, value);
            }
        }
        Ok(())
    }

    /// The changes to publish once the commit is durable.
    pub fn into_changes(self) -> EventChanges {
        self.changes
    }
}

/// The current unix time in seconds (0 if the clock is before 1970).
pub(crate) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
