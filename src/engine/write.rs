//! Writes: staging (validated, all-or-nothing), rollback, commit, and the maintenance that
//! writes the directory (checkpoint, compact).

use super::*;

/// Events per commit of a Parquet import: bounds its memory.
#[cfg(feature = "parquet")]
const EVENT_IMPORT_CHUNK: usize = 1_000_000;

impl Engine {
    /// Stages an insert or replacement of a product; visible after [`commit`](Self::commit).
    ///
    /// # Errors
    /// [`Error::Invalid`], [`Error::LimitExceeded`] or [`Error::DimensionMismatch`]; nothing is
    /// staged then.
    pub fn upsert_product(&self, product: Product) -> Result<()> {
        self.upsert_products(vec![product])
    }

    /// Stages a batch of products. The batch is all-or-nothing: if any product is invalid,
    /// the error names it and none is staged.
    ///
    /// # Errors
    /// As [`upsert_product`](Self::upsert_product), plus [`Error::Invalid`] for an id repeated
    /// inside the batch.
    pub fn upsert_products(&self, mut products: Vec<Product>) -> Result<()> {
        let mut seen = HashSet::new();
        for (i, p) in products.iter_mut().enumerate() {
            p.validate(&self.state.config.limits, self.state.config.dim)
                .map_err(|e| in_row(i, e))?;
            if !seen.insert(p.id.clone()) {
                return Err(Error::invalid(
                    "product.id",
                    format!("{:?} appears twice in the batch", p.id),
                ));
            }
        }
        let mut pending = self.pending()?;
        for p in products {
            pending.deleted.remove(&p.id);
            pending.upserted.insert(p.id.clone());
            pending.ops.push(Op::Upsert(Box::new(p)));
        }
        Ok(())
    }

    /// Stages a delete. Deleting an absent product is [`Error::UnknownItem`].
    ///
    /// # Errors
    /// [`Error::UnknownItem`].
    pub fn delete_product(&self, id: &str) -> Result<()> {
        let mut pending = self.pending()?;
        let live = (self.state.items.read().live_iid(id).is_some()
            && !pending.deleted.contains(id))
            || pending.upserted.contains(id);
        if !live {
            return Err(Error::UnknownItem(id.to_string()));
        }
        pending.upserted.remove(id);
        pending.deleted.insert(id.to_string());
        pending.ops.push(Op::Delete(id.to_string()));
        Ok(())
    }

    /// Stages one event. See [`append_events`](Self::append_events).
    ///
    /// # Errors
    /// As [`append_events`](Self::append_events).
    pub fn append_event(&self, event: Event) -> Result<Appended> {
        self.append_events(vec![event])
    }

    /// Stages a batch of events, all-or-nothing.
    ///
    /// Rules: the item must be in the catalog (or staged); the timestamp must be in
    /// `0..=now + Limits::max_future_secs`; an event equal to a stored one in user, item,
    /// kind and timestamp is a duplicate and stores nothing (a rating's value is replaced).
    ///
    /// # Errors
    /// [`Error::UnknownItem`], [`Error::Invalid`], [`Error::LimitExceeded`].
    pub fn append_events(&self, events: Vec<Event>) -> Result<Appended> {
        let mut pending = self.pending()?;
        self.check_events(&events, &pending)?;
        let n = events.len();
        if n > 0 {
            pending.ops.push(Op::Events(events));
        }
        Ok(Appended { staged: n })
    }

    /// What [`append_events`](Self::append_events) checks before staging: each event valid,
    /// its product in the catalog or staged.
    fn check_events(&self, events: &[Event], pending: &Pending) -> Result<()> {
        let now = now_secs();
        let items = self.state.items.read();
        for (i, e) in events.iter().enumerate() {
            e.validate(&self.state.config.limits, now)
                .map_err(|err| in_row(i, err))?;
            let live = (items.live_iid(&e.item).is_some() && !pending.deleted.contains(&e.item))
                || pending.upserted.contains(&e.item);
            if !live {
                return Err(Error::UnknownItem(e.item.clone()));
            }
        }
        Ok(())
    }

    /// Stages removal of every event and trace of a user (their id leaves the store at this
    /// commit; models forget them at the next training; the store's files may keep old
    /// versions holding the id until [`compact`](Self::compact)).
    ///
    /// # Errors
    /// [`Error::Invalid`] for a malformed id.
    pub fn forget_user(&self, user: &str) -> Result<()> {
        validate_id("user", user, &self.state.config.limits)?;
        let mut pending = self.pending()?;
        for op in pending.ops.iter_mut() {
            if let Op::Events(evs) = op {
                evs.retain(|e| e.user != user);
            }
        }
        pending.ops.push(Op::Forget(user.to_string()));
        Ok(())
    }

    /// Stages a retention policy for the interaction log (`None` removes it). From the commit
    /// that stores it, every commit drops the events the policy no longer keeps (the number
    /// is [`Committed::expired_events`]), and [`compact`](Self::compact) applies it once more
    /// and rewrites the store so that no byte of a dropped event is left. The models forget
    /// them at the next training. The policy is stored with the database.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a policy [`Retention::validate`](crate::Retention::validate)
    /// refuses.
    pub fn set_retention(&self, policy: Option<crate::retention::Retention>) -> Result<()> {
        if let Some(p) = &policy {
            p.validate()?;
        }
        self.pending()?.ops.push(Op::Retention(policy));
        Ok(())
    }

    /// The retention policy in force (committed), if any.
    pub fn retention(&self) -> Option<crate::retention::Retention> {
        *self.state.retention.read()
    }

    /// Imports events from a Parquet file or folder (the layout of
    /// [`export_events`](Self::export_events)); returns the events read. Every file is read
    /// and every event checked as [`append_events`](Self::append_events) does before the
    /// first commit, so a bad file applies nothing; then the events are read again and
    /// committed in chunks of a million, so memory stays bounded however large the log.
    /// Exact duplicates of stored events store nothing: should the import stop after its
    /// check (a crash, a full disk), importing the same files again completes it. Needs the
    /// `parquet` feature.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for a file that is not Parquet, is cut, or lacks a column of the
    /// right type; the staging errors of [`append_events`](Self::append_events) (unknown
    /// items, bad timestamps). Nothing is applied then.
    #[cfg(feature = "parquet")]
    pub fn import_events_parquet(&self, path: impl AsRef<std::path::Path>) -> Result<usize> {
        self.import_events_parquet_with(path.as_ref(), false)
    }

    /// [`import_events_parquet`](Self::import_events_parquet), with a bar of events on
    /// stderr for each pass when `progress` is set (the shell's `IMPORT EVENTS`).
    #[cfg(feature = "parquet")]
    pub(crate) fn import_events_parquet_with(
        &self,
        path: &std::path::Path,
        progress: bool,
    ) -> Result<usize> {
        let bar = crate::export::events_bar(progress, 0, "checking");
        let n = crate::export::read_events(path, EVENT_IMPORT_CHUNK, |events| {
            bar.inc(events.len() as u64);
            self.check_events(&events, &*self.pending()?)
        })?;
        bar.finish_and_clear();
        let bar = crate::export::events_bar(progress, n as u64, "importing");
        let imported = crate::export::read_events(path, EVENT_IMPORT_CHUNK, |events| {
            let len = events.len() as u64;
            self.stage_and_commit(|| self.append_events(events).map(|_| ()))?;
            bar.inc(len);
            Ok(())
        })?;
        bar.finish_and_clear();
        Ok(imported)
    }

    /// Imports products from a Parquet file or folder (the layout of
    /// [`export_products`](Self::export_products); only `id` is required), all or nothing;
    /// returns the products read. Needs the `parquet` feature.
    ///
    /// # Errors
    /// As [`import_events_parquet`](Self::import_events_parquet), with the validation of
    /// [`upsert_products`](Self::upsert_products).
    #[cfg(feature = "parquet")]
    pub fn import_products_parquet(&self, path: impl AsRef<std::path::Path>) -> Result<usize> {
        let products = crate::export::read_products(path.as_ref())?;
        let imported = products.len();
        self.stage_and_commit(|| self.upsert_products(products))?;
        Ok(imported)
    }

    /// Stages with `stage`, then commits; on any error, drops what was staged.
    #[cfg(feature = "parquet")]
    fn stage_and_commit(&self, stage: impl FnOnce() -> Result<()>) -> Result<()> {
        let out = stage().and_then(|()| self.commit().map(|_| ()));
        if out.is_err() {
            self.rollback();
        }
        out
    }

    /// Stages knowledge-graph triples `(head entity, relation, tail entity)`.
    ///
    /// # Errors
    /// [`Error::Invalid`] for empty or overlong names.
    pub fn add_triples(&self, triples: Vec<(String, String, String)>) -> Result<()> {
        for (h, r, t) in &triples {
            validate_id("triple.head", h, &self.state.config.limits)?;
            validate_id("triple.relation", r, &self.state.config.limits)?;
            validate_id("triple.tail", t, &self.state.config.limits)?;
        }
        self.pending()?.ops.push(Op::Triples(triples));
        Ok(())
    }

    /// Stages links from products to knowledge-graph entities (relation `link`).
    ///
    /// # Errors
    /// [`Error::UnknownItem`] for a product not in the catalog.
    pub fn link_items(&self, links: Vec<(String, String)>) -> Result<()> {
        let pending = self.pending()?;
        let items = self.state.items.read();
        for (item, entity) in &links {
            if items.live_iid(item).is_none() && !pending.upserted.contains(item) {
                return Err(Error::UnknownItem(item.clone()));
            }
            validate_id("link.entity", entity, &self.state.config.limits)?;
        }
        drop(items);
        drop(pending);
        self.pending()?.ops.push(Op::Links(links));
        Ok(())
    }

    /// Stages a search synonym: a search for `word` (a word or a phrase of up to four words)
    /// also looks for `synonym`, weighted below the words typed; with `two_way`, the other
    /// way round too. Applied at query time from the next commit on (no reindexing), shown
    /// in explanations, stored like every other record.
    ///
    /// # Errors
    /// [`Error::Invalid`] when a side has no searchable word (empty or stop words only), has
    /// more than four words or is overlong, or both sides are the same.
    pub fn add_synonym(&self, word: &str, synonym: &str, two_way: bool) -> Result<()> {
        let changes = synonym_pairs(word, synonym, two_way, &self.state.config.limits)?
            .into_iter()
            .map(|(word, synonym)| crate::synonyms::SynonymChange::Add { word, synonym })
            .collect();
        self.pending()?.ops.push(Op::Synonyms(changes));
        Ok(())
    }

    /// Stages removal of a synonym rule (both directions with `two_way`). Removing a rule
    /// that does not exist changes nothing.
    ///
    /// # Errors
    /// As [`add_synonym`](Self::add_synonym).
    pub fn remove_synonym(&self, word: &str, synonym: &str, two_way: bool) -> Result<()> {
        let changes = synonym_pairs(word, synonym, two_way, &self.state.config.limits)?
            .into_iter()
            .map(|(word, synonym)| crate::synonyms::SynonymChange::Remove { word, synonym })
            .collect();
        self.pending()?.ops.push(Op::Synonyms(changes));
        Ok(())
    }

    /// Drops every staged, uncommitted write.
    pub fn rollback(&self) {
        *self.pending.lock() = Pending::default();
    }

    /// Number of staged operations.
    pub fn pending_ops(&self) -> usize {
        self.pending.lock().ops.len()
    }

    /// Makes every staged write durable and visible, atomically in the store, then in the
    /// text and vector indexes. When this returns `Ok`, the writes survive a crash.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Backend`] when the store fails; the store is then unchanged.
    /// The same errors from the text or vector index come after the store is durable: the
    /// writes then survive, and the next open replays them into the indexes.
    pub fn commit(&self) -> Result<Committed> {
        let _commit = self.commit_lock.lock();
        let pending = {
            let mut staged = self.pending.lock();
            // Embedded while the staging buffer is held, so that a failure leaves every
            // staged write in place.
            self.embed_products(&mut staged.ops)?;
            std::mem::take(&mut *staged)
        };
        if pending.ops.is_empty() {
            return Ok(Committed {
                seq: self.seq(),
                ..Committed::default()
            });
        }
        let committed = crate::writer::commit(&self.state, pending.ops)?;
        drop(_commit);
        self.maybe_retrain()?;
        Ok(committed)
    }

    /// Gives the staged products without an embedding one from the engine's encoder, in one
    /// batched call; nothing without an encoder.
    #[cfg(feature = "embed")]
    fn embed_products(&self, ops: &mut [crate::writer::Op]) -> Result<()> {
        let Some(embedder) = &self.state.embedder else {
            return Ok(());
        };
        let mut missing: Vec<&mut Product> = ops
            .iter_mut()
            .filter_map(|op| match op {
                crate::writer::Op::Upsert(p) if p.embedding.is_none() => Some(&mut **p),
                _ => None,
            })
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let texts: Vec<String> = missing.iter().map(|p| product_text(p)).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        for (p, v) in missing.iter_mut().zip(embedder.embed(&refs)?) {
            p.embedding = Some(v);
        }
        Ok(())
    }

    #[cfg(not(feature = "embed"))]
    fn embed_products(&self, _ops: &mut [crate::writer::Op]) -> Result<()> {
        Ok(())
    }

    /// Writes a vector snapshot now (also done automatically every
    /// `HnswParams::snapshot_every` changes), so the next open loads instead of replaying.
    ///
    /// # Errors
    /// [`Error::Io`] when the snapshot cannot be written; the previous one stays valid.
    pub fn checkpoint(&self) -> Result<()> {
        self.writable("a checkpoint")?;
        let _commit = self.commit_lock.lock();
        self.state.vectors.snapshot(self.seq())?;
        crate::writer::compact_changes(&self.state)
    }

    /// An online backup into the new directory `dest`: one committed state (every write
    /// acknowledged before the call, none committed after its capture), with a manifest of
    /// each file's length and CRC-32, made in `DEST.partial/` and renamed when complete.
    /// Commits wait while the state is captured (a dump of the store's records; the text
    /// index, the vector snapshot and the model generation are hard links, their files are
    /// never changed once written); staging, queries and training go on. Serve it with
    /// [`Engine::open_read_only`] (any number of processes), or restore it by opening it
    /// with [`Engine::open`].
    ///
    /// # Errors
    /// [`Error::Invalid`] when `dest` exists or is inside the database; [`Error::Io`] when
    /// it cannot be written (the partial directory is removed); [`Error::ReadOnly`] on a
    /// replica.
    pub fn backup(&self, dest: impl AsRef<std::path::Path>) -> Result<crate::backup::BackupReport> {
        self.writable("a backup")?;
        let dir = self.state.dir.clone();
        crate::backup::backup(&self.state, dest.as_ref(), |partial| {
            let _commit = self.commit_lock.lock();
            let started = std::time::Instant::now();
            let seq = self.seq();
            // The vector snapshot made current, so the backup opens without a replay.
            if self.state.vectors.pending_changes() > 0 {
                self.state.vectors.snapshot(seq)?;
                crate::writer::compact_changes(&self.state)?;
            }
            self.state
                .store
                .dump_to(&partial.join(crate::backup::STORE_DUMP))?;
            crate::text::TextIndex::copy_index(&dir.join("text"), &partial.join("text"))?;
            crate::fsutil::link_files(&dir.join("vectors"), &partial.join("vectors"), |_| true)?;
            crate::generation::copy_current(&dir, &partial.join("models"))?;
            std::fs::copy(dir.join("config.json"), partial.join("config.json"))
                .map_err(|e| Error::io(dir.join("config.json"), e))?;
            Ok((seq, started.elapsed().as_secs_f64()))
        })
    }

    /// Rewrites the store so that it holds only current records, then swaps it in.
    ///
    /// Why: the store's log keeps superseded versions of records (a forgotten user's id, a
    /// deleted product) until it happens to reuse that space, so after
    /// [`forget_user`](Self::forget_user) and [`commit`](Self::commit) their bytes may still
    /// be on disk. After `compact` returns they are in no file of the directory (models
    /// forget the user at the next [`train`](Self::train), which deletes older generations).
    /// Also applies the [retention policy](Self::set_retention) (a commit of its own),
    /// checkpoints the vector index and drops the applied change log.
    ///
    /// Writers wait while it runs; readers keep reading. A crash at any point leaves either
    /// the old or the new store, which [`open`](Self::open) picks up.
    ///
    /// # Errors
    /// [`Error::Io`] when the copy cannot be written; the old store is then still in use.
    pub fn compact(&self) -> Result<()> {
        self.writable("compaction")?;
        let _commit = self.commit_lock.lock();
        // The retention policy first, so that what it drops by now leaves the files too.
        if self.state.retention.read().is_some() {
            crate::writer::commit(&self.state, Vec::new())?;
        }
        self.state.vectors.snapshot(self.seq())?;
        crate::writer::compact_changes(&self.state)?;
        self.state.store.compact()
    }
}

/// The one-way rules a synonym rule stands for, both sides normalised.
fn synonym_pairs(
    word: &str,
    synonym: &str,
    two_way: bool,
    limits: &crate::config::Limits,
) -> Result<Vec<(String, String)>> {
    validate_id("synonym.word", word, limits)?;
    validate_id("synonym.synonym", synonym, limits)?;
    let w = crate::synonyms::normalise("synonym.word", word)?;
    let s = crate::synonyms::normalise("synonym.synonym", synonym)?;
    if crate::text::analyze(&w) == crate::text::analyze(&s) {
        return Err(Error::invalid(
            "synonym",
            format!("{word:?} and {synonym:?} are the same words"),
        ));
    }
    let mut out = vec![(w.clone(), s.clone())];
    if two_way {
        out.push((s, w));
    }
    Ok(out)
}

/// The text a product is embedded from: its title, brand, category and description, the
/// empty ones left out, joined by spaces (the BEIR/MTEB convention `title + " " + text`
/// under which sentence encoders' published retrieval figures are measured).
#[cfg(feature = "embed")]
fn product_text(p: &Product) -> String {
    [&p.title, &p.brand, &p.category, &p.description]
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A validation error of row `i` of a batch, saying which row.
fn in_row(i: usize, e: Error) -> Error {
    match e {
        Error::Invalid { field, reason } => Error::Invalid {
            field,
            reason: format!("batch row {i}: {reason}"),
        },
        other => other,
    }
}
