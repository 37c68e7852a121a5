//! The commit protocol: staged operations -> one atomic store batch -> fsync -> derived indexes.
//!
//! 1. Every operation gets the next sequence number; records, the change-log entry (`C`) and
//!    the counters go into one sled batch, applied atomically.
//! 2. `flush()` makes it durable: this is the acknowledgement point.
//! 3. The in-memory tables, the text index (commit payload = sequence) and the vector index
//!    are updated. A crash here loses nothing: `open` replays the change log above each
//!    index's recorded sequence.

use crate::catalog::{CatalogDraft, ItemId, Product, ProductChange};
use crate::error::{Error, Result};
use crate::events::{Event, EventDraft, StoredEvent};
use crate::graph::Draft;
use crate::retention::Retention;
use crate::state::State;
use crate::store::{meta_key, meta_value, Batch};
use crate::synonyms::SynonymChange;
use crate::users::UserDraft;

/// A staged write.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    Upsert(Box<Product>),
    Delete(String),
    Events(Vec<Event>),
    Forget(String),
    Triples(Vec<(String, String, String)>),
    Links(Vec<(String, String)>),
    Synonyms(Vec<SynonymChange>),
    /// A new retention policy, or none.
    Retention(Option<Retention>),
}

/// Result of a commit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Committed {
    /// The last sequence number now durable.
    pub seq: u64,
    /// Operations applied by this commit.
    pub ops: usize,
    /// Events that were already stored (exact duplicates) and so added nothing.
    pub duplicate_events: usize,
    /// Events the retention policy dropped (stored ones, and ones of this commit already
    /// outside it).
    pub expired_events: usize,
}

/// A commit's staged changes, to publish once its batch is durable.
struct Staged {
    duplicate_events: usize,
    expired_events: usize,
    /// The new retention policy, when the commit changed it.
    retention: Option<Option<Retention>>,
    products: Vec<ProductChange>,
    users: crate::users::UserChanges,
    events: crate::events::EventChanges,
    names: crate::graph::Additions,
    synonyms: Vec<SynonymChange>,
}

/// Applies `ops` (called with the engine's commit lock held).
///
/// Each kind of record stages its own writes into one batch beside the committed tables
/// (`CatalogDraft`, `UserDraft`, `EventDraft`, the graph's `Draft`), which readers keep
/// reading under shared locks; once the batch is durable each publishes its changes.
pub(crate) fn commit(state: &State, ops: Vec<Op>) -> Result<Committed> {
    let n_ops = ops.len();
    let mut seq = state.seq();
    let staged = (|| -> Result<Staged> {
        let items = state.items.read();
        let users = state.users.read();
        let kg = state.kg.read();
        let event_index = state.events.read();
        let mut products = CatalogDraft::new(&items);
        let mut users = UserDraft::new(&users);
        let mut kg = Draft::new(&kg);
        let mut events = EventDraft::new(&event_index);
        let mut batch = Batch::default();
        let mut synonyms = Vec::new();
        let mut retention = None;
        for op in ops {
            match op {
                Op::Upsert(p) => {
                    seq += 1;
                    let old = products.latest(&p.id);
                    kg.stage_product(&p, old.as_deref(), &mut batch)?;
                    products.upsert(*p, seq, &mut batch)?;
                }
                Op::Delete(id) => {
                    seq += 1;
                    let Some(iid) = products.iid(&id) else {
                        continue;
                    };
                    let old = products.latest(&id);
                    kg.stage_product_delete(&id, old.as_deref(), &mut batch)?;
                    products.delete(&id, iid, seq, &mut batch);
                }
                Op::Events(evs) => {
                    for e in evs {
                        seq += 1;
                        let user = users.uid(&e.user, &mut batch);
                        let Some(item) = products.iid(&e.item) else {
                            return Err(Error::UnknownItem(e.item));
                        };
                        let stored = StoredEvent {
                            user,
                            item,
                            kind: e.kind,
                            ts: e.ts,
                            seq,
                        };
                        if !events.add(stored) {
                            seq -= 1;
                        }
                    }
                }
                Op::Forget(user) => {
                    seq += 1;
                    for uid in users.forget(&user, &mut batch) {
                        events.forget(uid);
                    }
                }
                Op::Triples(triples) => {
                    for (h, r, t) in triples {
                        seq += 1;
                        kg.stage_triple(&h, &r, &t, &mut batch)?;
                    }
                }
                Op::Links(links) => {
                    for (item, entity) in links {
                        seq += 1;
                        kg.stage_link(&item, &entity, &mut batch)?;
                    }
                }
                Op::Synonyms(changes) => {
                    for c in changes {
                        seq += 1;
                        crate::synonyms::stage(&c, &mut batch);
                        synonyms.push(c);
                    }
                }
                Op::Retention(policy) => {
                    seq += 1;
                    crate::retention::stage(policy.as_ref(), &mut batch)?;
                    retention = Some(policy);
                }
            }
        }
        // The policy in force after this commit drops what it no longer keeps, the commit's
        // own events included.
        let policy = match &retention {
            Some(p) => *p,
            None => *state.retention.read(),
        };
        let expired_events = match policy {
            Some(p) => events.expire(&p, crate::events::now_secs()),
            None => 0,
        };
        events.stage_blocks(&state.store, &mut batch)?;
        batch.put(meta_key("seq"), meta_value(seq));
        state.store.apply(batch)?;
        if state.config.durable_commits {
            state.store.flush()?;
        }
        Ok(Staged {
            duplicate_events: events.duplicates,
            expired_events,
            retention,
            products: products.changes,
            users: users.into_changes(),
            events: events.into_changes(),
            names: kg.into_additions(),
            synonyms,
        })
    })()?;

    // Durable from here on (a failed batch's drafts are dropped with it). Publish to the
    // in-memory tables, each under its write lock for the in-memory update only and only
    // when this commit changed it, then the derived indexes.
    state.set_durable_seq(seq);
    if !staged.names.is_empty() {
        state.kg.write().extend(staged.names);
    }
    if !staged.products.is_empty() {
        state.items.write().apply(&staged.products);
    }
    if !staged.events.is_empty() {
        state.events.write().apply(staged.events);
    }
    if !staged.users.is_empty() {
        state.users.write().apply(staged.users);
    }
    if !staged.synonyms.is_empty() {
        state.synonyms.write().apply(&staged.synonyms);
    }
    if let Some(policy) = staged.retention {
        *state.retention.write() = policy;
    }
    let (duplicate_events, expired_events) = (staged.duplicate_events, staged.expired_events);
    let derived = staged.products;
    let mut vec_upserts: Vec<(ItemId, Vec<f32>)> = Vec::new();
    let mut text_changed = false;
    for d in derived {
        text_changed = true;
        match d {
            ProductChange::Upsert(iid, p, emb) => {
                state.text.upsert(iid, &p)?;
                match emb {
                    Some(v) => vec_upserts.push((iid, v)),
                    None => {
                        vec_upserts.retain(|(i, _)| *i != iid);
                        state.vectors.remove(iid);
                    }
                }
            }
            ProductChange::Delete(iid, _) => {
                state.text.delete(iid)?;
                vec_upserts.retain(|(i, _)| *i != iid);
                state.vectors.remove(iid);
            }
        }
    }
    if text_changed {
        state.text.commit(seq)?;
    }
    let refs: Vec<(ItemId, &[f32])> = vec_upserts
        .iter()
        .map(|(i, v)| (*i, v.as_slice()))
        .collect();
    state.vectors.upsert(&refs);
    state.publish(seq);
    // A snapshot writes the whole graph: waiting for a quarter of its size in changes (at
    // least `snapshot_every`) keeps the total snapshot cost linear in the catalog size.
    let due = state
        .config
        .hnsw
        .snapshot_every
        .max(state.vectors.len() / 4);
    if state.vectors.pending_changes() >= due {
        state.vectors.snapshot(seq)?;
        compact_changes(state)?;
    }
    Ok(Committed {
        seq,
        ops: n_ops,
        duplicate_events,
        expired_events,
    })
}

/// Drops change-log entries that every derived index has applied (the text index applies
/// each commit; the vector index up to its snapshot).
pub(crate) fn compact_changes(state: &State) -> Result<()> {
    let upto = state.vectors.snapshot_seq().min(state.seq());
    crate::catalog::drop_changes_upto(&state.store, upto)
}
