//! The commit protocol: staged operations -> one atomic store batch -> fsync -> derived indexes.
//!
//! 1. Every operation gets the next sequence number; records, the change-log entry (`C`) and
//!    the counters go into one sled batch, applied atomically.
//! 2. `flush()` makes it durable: this is the acknowledgement point.
//! 3. The in-memory tables, the text index (commit payload = sequence) and the vector index
//!    are updated. A crash here loses nothing: `open` replays the change log above each
//!    index's recorded sequence.

use std::collections::HashMap;
use std::sync::Arc;

use crate::catalog::StoredProduct;
use crate::catalog::{ItemId, Product};
use crate::error::{Error, Result};
use crate::events::{self, Event, StoredEvent, UserId};
use crate::graph::{self, item_entity, product_edges, Draft, REL_LINK};
use crate::state::State;
use crate::store::{self, be_u64, key, meta_key, meta_value, Batch};

/// A staged write.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    Upsert(Box<Product>),
    Delete(String),
    Events(Vec<Event>),
    Forget(String),
    Triples(Vec<(String, String, String)>),
    Links(Vec<(String, String)>),
}

/// What the derived indexes must do once the store batch is durable.
enum Derived {
    Upsert(ItemId, Arc<Product>, Option<Vec<f32>>),
    Delete(ItemId, String),
}

fn relation(kg: &mut Draft<'_>, name: &str, batch: &mut Batch) -> Result<u16> {
    kg.relation(name, batch)
        .ok_or_else(|| Error::invalid("relation", "more than 65,535 relation types"))
}

/// The dictionary ids of a product's brand and category edges, allocating new names.
fn edges_of(kg: &mut Draft<'_>, p: &Product, batch: &mut Batch) -> Result<Vec<(u16, u32)>> {
    let mut out = Vec::new();
    for (rel, tail) in product_edges(p) {
        let r = relation(kg, rel, batch)?;
        out.push((r, kg.entity(&tail, batch)));
    }
    Ok(out)
}

/// Removes a product's brand and category edges from the store, where a database written
/// before they were derived from the record holds them (only products with an entity of
/// their own, i.e. older or linked ones, can).
fn remove_stored_automatic_edges(
    kg: &mut Draft<'_>,
    id: &str,
    old: Option<&Product>,
    batch: &mut Batch,
) -> Result<()> {
    let (Some(old), Some(head)) = (old, kg.entity_id(&item_entity(id))) else {
        return Ok(());
    };
    for (r, t) in edges_of(kg, old, batch)? {
        graph::remove_edge(batch, head, r, t);
    }
    Ok(())
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
}

/// Applies `ops` (called with the engine's commit lock held).
pub(crate) fn commit(state: &State, ops: Vec<Op>) -> Result<Committed> {
    let n_ops = ops.len();
    let mut seq = state.seq();
    let mut batch = Batch::default();
    let mut derived: Vec<Derived> = Vec::new();
    let mut new_users: HashMap<String, UserId> = HashMap::new();
    let mut forgotten: Vec<UserId> = Vec::new();
    let mut duplicate_events = 0usize;
    // Event changes to publish in memory once the batch is durable.
    let mut new_events: Vec<StoredEvent> = Vec::new();
    let mut replaced_events: Vec<StoredEvent> = Vec::new();
    // Event records to add to and remove from the log's blocks.
    let mut added: Vec<StoredEvent> = Vec::new();
    let mut removed_seqs: std::collections::HashSet<u64> = std::collections::HashSet::new();

    // Readers keep the committed dictionary while the batch is written and flushed: new
    // names wait in a draft until the batch is durable.
    let result = (|| -> Result<crate::graph::Additions> {
        let items = state.items.read();
        let users = state.users.read();
        let committed_kg = state.kg.read();
        let mut kg = Draft::new(&committed_kg);
        let mut next_item = items.capacity() as u32;
        let mut next_user = users.names.len() as u32;
        let mut new_items: HashMap<String, ItemId> = HashMap::new();
        // Latest state of products touched in this commit.
        let mut current: HashMap<String, Option<Arc<Product>>> = HashMap::new();
        let event_index = state.events.read();
        // Events of this commit by (user, item, kind, ts), to catch duplicates inside it.
        let mut batch_events: HashMap<(u32, u32, u8, i64), usize> = HashMap::new();

        for op in ops {
            match op {
                Op::Upsert(p) => {
                    seq += 1;
                    let p = *p;
                    let iid = match items
                        .lookup(&p.id)
                        .or_else(|| new_items.get(&p.id).copied())
                    {
                        Some(iid) => iid,
                        None => {
                            let iid = ItemId(next_item);
                            next_item += 1;
                            new_items.insert(p.id.clone(), iid);
                            batch.put(
                                key(store::ITEM_ID, &[&iid.0.to_be_bytes()]),
                                p.id.as_bytes().to_vec(),
                            );
                            iid
                        }
                    };
                    let old = match current.get(&p.id) {
                        Some(state) => state.clone(),
                        None => items.get(iid).cloned(),
                    };
                    // Brand and category edges are read from the product record; only
                    // their tail entities go into the dictionary (once per brand/category).
                    edges_of(&mut kg, &p, &mut batch)?;
                    remove_stored_automatic_edges(&mut kg, &p.id, old.as_deref(), &mut batch)?;
                    let record = StoredProduct {
                        iid: iid.0,
                        seq,
                        product: p,
                    };
                    batch.put(
                        key(store::PRODUCT, &[record.product.id.as_bytes()]),
                        crate::codec::encode(&record)?,
                    );
                    batch.put(
                        key(store::CHANGE, &[&seq.to_be_bytes()]),
                        record.product.id.as_bytes().to_vec(),
                    );
                    let mut p = record.product;
                    let embedding = p.embedding.take();
                    let arc = Arc::new(p);
                    current.insert(arc.id.clone(), Some(arc.clone()));
                    derived.push(Derived::Upsert(iid, arc, embedding));
                }
                Op::Delete(id) => {
                    seq += 1;
                    let Some(iid) = items.lookup(&id).or_else(|| new_items.get(&id).copied())
                    else {
                        continue;
                    };
                    let old = match current.get(&id) {
                        Some(state) => state.clone(),
                        None => items.get(iid).cloned(),
                    };
                    remove_stored_automatic_edges(&mut kg, &id, old.as_deref(), &mut batch)?;
                    batch.remove(key(store::PRODUCT, &[id.as_bytes()]));
                    batch.put(
                        key(store::CHANGE, &[&seq.to_be_bytes()]),
                        id.as_bytes().to_vec(),
                    );
                    current.insert(id.clone(), None);
                    derived.push(Derived::Delete(iid, id));
                }
                Op::Events(evs) => {
                    for e in evs {
                        seq += 1;
                        let uid = match users
                            .get(&e.user)
                            .or_else(|| new_users.get(&e.user).copied())
                        {
                            Some(u) if !forgotten.contains(&u) => u,
                            _ => {
                                let uid = UserId(next_user);
                                next_user += 1;
                                new_users.insert(e.user.clone(), uid);
                                batch.put(
                                    key(store::USER, &[e.user.as_bytes()]),
                                    uid.0.to_be_bytes().to_vec(),
                                );
                                batch.put(
                                    key(store::USER_ID, &[&uid.0.to_be_bytes()]),
                                    e.user.as_bytes().to_vec(),
                                );
                                uid
                            }
                        };
                        let Some(iid) = items
                            .lookup(&e.item)
                            .or_else(|| new_items.get(&e.item).copied())
                        else {
                            return Err(Error::UnknownItem(e.item));
                        };
                        let stored = StoredEvent {
                            user: uid,
                            item: iid,
                            kind: e.kind,
                            ts: e.ts,
                            seq,
                        };
                        let identity = (uid.0, iid.0, e.kind.code(), e.ts);
                        let previous = match batch_events.get(&identity) {
                            Some(&at) => Some(new_events[at]),
                            None => event_index.find(uid, iid, e.kind, e.ts).copied(),
                        };
                        match previous {
                            Some(prev) if prev.kind == e.kind => {
                                duplicate_events += 1;
                                seq -= 1;
                                continue;
                            }
                            Some(prev) => {
                                // A rating with a new value replaces the stored one.
                                duplicate_events += 1;
                                removed_seqs.insert(prev.seq);
                                match batch_events.get(&identity) {
                                    Some(&at) => new_events[at] = stored,
                                    None => {
                                        replaced_events.push(prev);
                                        batch_events.insert(identity, new_events.len());
                                        new_events.push(stored);
                                    }
                                }
                            }
                            None => {
                                batch_events.insert(identity, new_events.len());
                                new_events.push(stored);
                            }
                        }
                        added.push(stored);
                    }
                }
                Op::Forget(user) => {
                    seq += 1;
                    if let Some(uid) = users.get(&user) {
                        let stored = event_index
                            .by_user
                            .get(uid.0 as usize)
                            .map_or(&[][..], Vec::as_slice);
                        for ev in stored
                            .iter()
                            .chain(new_events.iter().filter(|e| e.user == uid))
                        {
                            removed_seqs.insert(ev.seq);
                        }
                        batch.remove(key(store::USER_ID, &[&uid.0.to_be_bytes()]));
                        forgotten.push(uid);
                    }
                    if let Some(uid) = new_users.remove(&user) {
                        batch.remove(key(store::USER_ID, &[&uid.0.to_be_bytes()]));
                        forgotten.push(uid);
                    }
                    batch.remove(key(store::USER, &[user.as_bytes()]));
                }
                Op::Triples(triples) => {
                    for (h, r, t) in triples {
                        seq += 1;
                        let head = kg.entity(&h, &mut batch);
                        let rel = relation(&mut kg, &r, &mut batch)?;
                        let tail = kg.entity(&t, &mut batch);
                        graph::put_edge(&mut batch, head, rel, tail);
                    }
                }
                Op::Links(links) => {
                    for (item, entity) in links {
                        seq += 1;
                        let head = kg.entity(&item_entity(&item), &mut batch);
                        let rel = relation(&mut kg, REL_LINK, &mut batch)?;
                        let tail = kg.entity(&entity, &mut batch);
                        graph::put_edge(&mut batch, head, rel, tail);
                    }
                }
            }
        }
        // Rewrite every event block this commit touches.
        let mut blocks: std::collections::BTreeSet<u64> =
            added.iter().map(|e| events::block_of(e.seq)).collect();
        blocks.extend(removed_seqs.iter().map(|s| events::block_of(*s)));
        for block in blocks {
            let key = events::block_key(block);
            let mut records = match state.store.get(&key)? {
                Some(v) => events::decode_block(&v).ok_or_else(|| {
                    Error::corrupt(state.dir.join("store"), "undecodable event block")
                })?,
                None => Vec::new(),
            };
            records.extend(
                added
                    .iter()
                    .filter(|e| events::block_of(e.seq) == block)
                    .copied(),
            );
            records.retain(|e| !removed_seqs.contains(&e.seq));
            if records.is_empty() {
                batch.remove(key);
            } else {
                let mut value = Vec::with_capacity(records.len() * 29);
                for e in &records {
                    events::encode_into(e, &mut value);
                }
                batch.put(key, value);
            }
        }
        batch.put(meta_key("seq"), meta_value(seq));
        state.store.apply(std::mem::take(&mut batch))?;
        if state.config.durable_commits {
            state.store.flush()?;
        }
        Ok(kg.into_additions())
    })();

    // Durable from here on (a failed batch's draft is dropped with it). Publish to the
    // in-memory tables, each under its write lock for the in-memory update only, then the
    // derived indexes.
    let additions = result?;
    state.set_durable_seq(seq);
    // Write locks are taken only for the tables this commit changes.
    if !additions.is_empty() {
        state.kg.write().extend(additions);
    }
    if !derived.is_empty() {
        let mut items = state.items.write();
        for d in &derived {
            match d {
                Derived::Upsert(iid, p, _) => items.set(*iid, &p.id, Some(p.clone())),
                Derived::Delete(iid, id) => items.set(*iid, id, None),
            }
        }
    }
    if !(replaced_events.is_empty() && new_events.is_empty() && forgotten.is_empty()) {
        let mut idx = state.events.write();
        for e in &replaced_events {
            idx.remove(e);
        }
        for e in new_events {
            if !forgotten.contains(&e.user) {
                idx.insert(e);
            }
        }
        for uid in &forgotten {
            idx.remove_user(*uid);
        }
    }
    if !(forgotten.is_empty() && new_users.is_empty()) {
        let mut users = state.users.write();
        for uid in &forgotten {
            if let Some(slot) = users.names.get_mut(uid.0 as usize) {
                if let Some(name) = slot.take() {
                    users.ids.remove(&name);
                }
            }
        }
        for (name, uid) in new_users {
            let i = uid.0 as usize;
            if users.names.len() <= i {
                users.names.resize(i + 1, None);
            }
            users.names[i] = Some(name.clone());
            users.ids.insert(name, uid);
        }
    }
    let mut vec_upserts: Vec<(ItemId, Vec<f32>)> = Vec::new();
    let mut text_changed = false;
    for d in derived {
        text_changed = true;
        match d {
            Derived::Upsert(iid, p, emb) => {
                state.text.upsert(iid, &p)?;
                match emb {
                    Some(v) => vec_upserts.push((iid, v)),
                    None => {
                        vec_upserts.retain(|(i, _)| *i != iid);
                        state.vectors.remove(iid);
                    }
                }
            }
            Derived::Delete(iid, _) => {
                state.text.delete(iid);
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
    })
}

/// Drops change-log entries that every derived index has applied (the text index applies
/// each commit; the vector index up to its snapshot).
pub(crate) fn compact_changes(state: &State) -> Result<()> {
    let upto = state.vectors.snapshot_seq().min(state.seq());
    let mut batch = Batch::default();
    for r in state.store.scan(&[store::CHANGE]) {
        let (k, _) = r?;
        match be_u64(&k, 1) {
            Some(s) if s <= upto => batch.remove(k.to_vec()),
            _ => break,
        }
    }
    if batch.len > 0 {
        state.store.apply(batch)?;
    }
    Ok(())
}
