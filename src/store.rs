//! The source of truth: one sled tree holding every record under a one-byte key prefix.
//!
//! "Here is a key family, give me its records." Keeping every family in one tree means one
//! `apply_batch` commits products, events, graph edges and the sequence counter atomically.
//!
//! Key families (integers big-endian so byte order is numeric order). Each kind of record
//! owns its keys, encoding, loading at open and staging into a commit's batch: products in
//! `catalog`, users in `users`, events in `events`, the knowledge graph in `graph`; this
//! module holds only the counters.
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `M` | meta name | meta value (counters, `u64` LE) |
//! | `P` | product id | `StoredProduct` (bincode) |
//! | `I` | item iid `u32` | product id (kept after delete: ids are never reused) |
//! | `C` | seq `u64` | product id whose record changed (replayed into text and vector indexes) |
//! | `U` | user id | uid `u32` |
//! | `V` | uid `u32` | user id |
//! | `E` | block `u64` (seq >> 8) | event records: seq, uid, iid, kind, value, ts (append-only log) |
//! | `N` / `n` | entity name / eid `u32` | eid / entity name |
//! | `R` / `r` | relation name / rid `u16` | rid / relation name |
//! | `T` / `t` | head, rid, tail / tail, rid, head | empty (edges, both directions) |
//! | `S` | word, `0x00`, synonym | empty (search synonyms, `synonyms`) |

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::error::{Error, Result};

/// The store's own records (counters). Every other family's prefix is defined by the
/// module that owns the record (table above; `prefixes_are_distinct` checks them).
pub(crate) const META: u8 = b'M';

/// Builds a key from a prefix and parts.
pub(crate) fn key(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
    let len = 1 + parts.iter().map(|p| p.len()).sum::<usize>();
    let mut k = Vec::with_capacity(len);
    k.push(prefix);
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

/// Reads a big-endian `u32` at `at`, if the slice is long enough.
pub(crate) fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)?.try_into().ok().map(u32::from_be_bytes)
}

/// Reads a big-endian `u64` at `at`, if the slice is long enough.
pub(crate) fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8)?.try_into().ok().map(u64::from_be_bytes)
}

/// The store. Cloning is cheap and clones share one handle, so that [`Store::compact`] can
/// swap the rewritten database in for every user at once.
#[derive(Clone)]
pub(crate) struct Store {
    db: Arc<RwLock<sled::Db>>,
    path: PathBuf,
}

/// A set of writes applied atomically by [`Store::apply`].
#[derive(Default)]
pub(crate) struct Batch {
    inner: sled::Batch,
    pub len: usize,
}

impl Batch {
    pub fn put(&mut self, key: Vec<u8>, value: impl Into<Vec<u8>>) {
        self.inner.insert(key, value.into());
        self.len += 1;
    }

    pub fn remove(&mut self, key: Vec<u8>) {
        self.inner.remove(key);
        self.len += 1;
    }
}

impl Store {
    /// Opens the store at `path`, first finishing or undoing an interrupted
    /// [`compact`](Self::compact).
    pub fn open(path: &Path) -> Result<Store> {
        finish_compaction(path)?;
        let db = open_sled(path)?;
        Ok(Store {
            db: Arc::new(RwLock::new(db)),
            path: path.to_path_buf(),
        })
    }

    /// A handle on the current database (cheap: sled handles are reference counted).
    fn db(&self) -> sled::Db {
        self.db.read().clone()
    }

    /// Where the store lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A sled error on this store.
    fn err(&self) -> impl Fn(sled::Error) -> Error + '_ {
        |e| Error::sled(&self.path, e)
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>> {
        self.db().get(key).map_err(self.err())
    }

    /// Every `(key, value)` under a prefix, in key order.
    pub fn scan(
        &self,
        prefix: &[u8],
    ) -> impl DoubleEndedIterator<Item = Result<(sled::IVec, sled::IVec)>> {
        let path = self.path.clone();
        self.db()
            .scan_prefix(prefix)
            .map(move |r| r.map_err(|e| Error::sled(&path, e)))
    }

    /// Every `(key, value)` with `from <= key` under `prefix`.
    pub fn range_from(
        &self,
        prefix: &[u8],
        from: Vec<u8>,
    ) -> impl Iterator<Item = Result<(sled::IVec, sled::IVec)>> {
        let prefix = prefix.to_vec();
        let path = self.path.clone();
        self.db()
            .range(from..)
            .take_while(move |r| {
                r.as_ref()
                    .map(|(k, _)| k.starts_with(&prefix))
                    .unwrap_or(true)
            })
            .map(move |r| r.map_err(|e| Error::sled(&path, e)))
    }

    pub fn apply(&self, batch: Batch) -> Result<()> {
        self.db().apply_batch(batch.inner).map_err(self.err())
    }

    /// Makes every applied batch durable (fsync).
    pub fn flush(&self) -> Result<()> {
        self.db().flush().map_err(self.err())?;
        Ok(())
    }

    pub fn meta_u64(&self, name: &str) -> Result<u64> {
        Ok(self
            .get(&key(META, &[name.as_bytes()]))?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_le_bytes))
            .unwrap_or(0))
    }

    pub fn size_on_disk(&self) -> u64 {
        self.db().size_on_disk().unwrap_or(0)
    }
}

impl Store {
    /// Rewrites the store into a fresh sled database holding only the current records, and
    /// swaps it in. sled keeps superseded versions of a record in its log until it happens
    /// to rewrite that segment, so a removed key's bytes can stay on disk indefinitely; a
    /// rewrite is the one way to make sure they are gone (see `Engine::compact`).
    ///
    /// Crash-safe: the copy is built and fsynced in `store.new/`, then `store/` is renamed to
    /// `store.old/` and `store.new/` to `store/`. [`Store::open`] finishes or undoes whatever
    /// a crash interrupted. The caller must keep writers out while this runs.
    pub fn compact(&self) -> Result<()> {
        let fresh = sibling(&self.path, "new");
        let old = sibling(&self.path, "old");
        remove_dir_if_present(&fresh)?;
        remove_dir_if_present(&old)?;
        self.copy_to(&fresh)?;
        let parent = self.path.parent().unwrap_or_else(|| Path::new("."));
        let mut slot = self.db.write();
        slot.flush().map_err(self.err())?;
        std::fs::rename(&self.path, &old).map_err(|e| Error::io(&self.path, e))?;
        std::fs::rename(&fresh, &self.path).map_err(|e| Error::io(&fresh, e))?;
        crate::fsutil::sync_dir(parent)?;
        *slot = open_sled(&self.path)?;
        drop(slot);
        remove_dir_if_present(&old)
    }

    /// Writes every record to the flat file `to` (a backup's `store.dump`): a magic, then
    /// `(key length u32 LE, key, value length u32 LE, value)` per record in key order, then
    /// the record count `u64` LE; fsynced. Streams, so memory stays bounded. The caller
    /// keeps writers out while this runs (the dump is then one consistent state).
    pub fn dump_to(&self, to: &Path) -> Result<u64> {
        use std::io::Write as _;
        let io = |e| Error::io(to, e);
        let file = std::fs::File::create(to).map_err(io)?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        out.write_all(DUMP_MAGIC).map_err(io)?;
        let mut n = 0u64;
        for r in self.db().iter() {
            let (k, v) = r.map_err(self.err())?;
            for part in [&k[..], &v[..]] {
                let len = u32::try_from(part.len())
                    .map_err(|_| Error::invalid("store record", "longer than 4 GiB"))?;
                out.write_all(&len.to_le_bytes()).map_err(io)?;
                out.write_all(part).map_err(io)?;
            }
            n += 1;
        }
        out.write_all(&n.to_le_bytes()).map_err(io)?;
        let file = out.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        Ok(n)
    }

    /// A store holding the records of the dump `from` (see [`dump_to`](Self::dump_to)): at
    /// `path` when given (a backup restored as a database), else in a temporary sled
    /// database that is removed when the store is dropped (a read-only replica, which never
    /// writes beside the dump it serves). A dump that does not decode is `Corrupt`.
    pub fn from_dump(from: &Path, path: Option<&Path>) -> Result<Store> {
        let bytes = crate::fsutil::read(from)?;
        let bad = |why: &str| Error::corrupt(from, format!("store dump: {why}"));
        let body = bytes
            .strip_prefix(DUMP_MAGIC)
            .ok_or_else(|| bad("not a store dump"))?;
        let (records, count) = body.split_at(body.len().saturating_sub(8));
        let count = count
            .try_into()
            .ok()
            .map(u64::from_le_bytes)
            .ok_or_else(|| bad("truncated"))?;
        let (db, store_path) = match path {
            Some(p) => {
                if p.exists() {
                    return Err(Error::invalid(
                        "store",
                        format!(
                            "{} exists; a dump is only loaded into a new store",
                            p.display()
                        ),
                    ));
                }
                (open_sled(p)?, p.to_path_buf())
            }
            None => (
                sled::Config::new()
                    .temporary(true)
                    .cache_capacity(256 << 20)
                    .open()
                    .map_err(|e| Error::sled(from, e))?,
                from.to_path_buf(),
            ),
        };
        let mut at = 0usize;
        let mut part = || -> Option<&[u8]> {
            let len = u32::from_le_bytes(records.get(at..at + 4)?.try_into().ok()?) as usize;
            let bytes = records.get(at + 4..at + 4 + len)?;
            at += 4 + len;
            Some(bytes)
        };
        let mut batch = sled::Batch::default();
        let mut n = 0u64;
        while let Some(k) = part() {
            let v = part().ok_or_else(|| bad("a key without its value"))?;
            batch.insert(k, v);
            n += 1;
            if n.is_multiple_of(10_000) {
                db.apply_batch(std::mem::take(&mut batch))
                    .map_err(|e| Error::sled(&store_path, e))?;
            }
        }
        if at != records.len() || n != count {
            return Err(bad(&format!(
                "{n} records read, {count} written, {} bytes left over",
                records.len().saturating_sub(at)
            )));
        }
        db.apply_batch(batch)
            .map_err(|e| Error::sled(&store_path, e))?;
        db.flush().map_err(|e| Error::sled(&store_path, e))?;
        Ok(Store {
            db: Arc::new(RwLock::new(db)),
            path: store_path,
        })
    }

    /// Copies every record into a new sled database at `to` and makes it durable.
    fn copy_to(&self, to: &Path) -> Result<()> {
        let target = open_sled(to)?;
        let to_err = |e| Error::sled(to, e);
        let mut batch = sled::Batch::default();
        let mut in_batch = 0usize;
        for r in self.db().iter() {
            let (k, v) = r.map_err(self.err())?;
            batch.insert(k, v);
            in_batch += 1;
            if in_batch == 10_000 {
                target
                    .apply_batch(std::mem::take(&mut batch))
                    .map_err(to_err)?;
                in_batch = 0;
            }
        }
        target.apply_batch(batch).map_err(to_err)?;
        target.flush().map_err(to_err)?;
        Ok(())
    }
}

/// The first bytes of a store dump.
const DUMP_MAGIC: &[u8] = b"SHOPDB-STORE-DUMP-1\n";

/// How long `open` waits for a closing sled instance of this process to let go of the store.
const SLED_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

fn open_sled(path: &Path) -> Result<sled::Db> {
    wait_for_sled_release(path)?;
    remove_unfinished_sled_snapshots(path)?;
    sled::Config::new()
        .path(path)
        .cache_capacity(256 << 20)
        .open()
        .map_err(|e| match e {
            sled::Error::Io(source) if source.to_string().contains("could not acquire lock") => {
                Error::Locked(path.to_path_buf())
            }
            other => Error::sled(path, other),
        })
}

/// Waits until no sled instance holds the store's lock (sled locks the file `db` in it).
///
/// The engine's own `LOCK` is taken first, so whoever still holds this one is a sled
/// instance of this process that is closing: dropping a sled database returns while jobs on
/// sled's I/O threads still hold it, and a reopen right after a close failed with "could not
/// acquire lock" on a loaded machine. Waiting here also keeps
/// [`remove_unfinished_sled_snapshots`] from removing a snapshot that such a job is writing.
fn wait_for_sled_release(path: &Path) -> Result<()> {
    let lock_path = path.join("db");
    let file = match std::fs::OpenOptions::new().read(true).open(&lock_path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(&lock_path, e)),
    };
    let started = std::time::Instant::now();
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        if fs2::FileExt::try_lock_exclusive(&file).is_ok() {
            // Closing `file` releases the lock for sled to take.
            return Ok(());
        }
        if started.elapsed() >= SLED_RELEASE_WAIT {
            return Err(Error::Locked(path.to_path_buf()));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(100));
    }
}

/// sled writes its snapshot to `snap.<lsn>.generating` and renames it when complete, but at
/// open it also reads `.generating` files, and the newest name sorts last: after a kill while
/// sled wrote a snapshot (it does so during open, too), the half-written file made the store
/// unopenable ("Corruption { at: None }"). Such a file is never needed: sled falls back to the
/// previous snapshot, or to the log, which is the source of truth.
fn remove_unfinished_sled_snapshots(path: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(path, e)),
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            std::fs::remove_file(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
        }
    }
    Ok(())
}

/// `store.new` / `store.old` beside `store`.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    path.with_file_name(name)
}

fn remove_dir_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(path, e)),
        _ => Ok(()),
    }
}

/// Brings the directory back to one store after a crash during [`Store::compact`]:
/// `store.new/` beside `store/` is an unfinished copy (dropped); `store.new/` without
/// `store/` is a finished copy caught between the two renames (moved into place);
/// `store.old/` is the superseded store (dropped once `store/` exists).
fn finish_compaction(path: &Path) -> Result<()> {
    let fresh = sibling(path, "new");
    let old = sibling(path, "old");
    if !path.exists() {
        if fresh.exists() {
            std::fs::rename(&fresh, path).map_err(|e| Error::io(&fresh, e))?;
        } else if old.exists() {
            std::fs::rename(&old, path).map_err(|e| Error::io(&old, e))?;
        }
    }
    remove_dir_if_present(&fresh)?;
    remove_dir_if_present(&old)
}

/// Encodes a meta counter value.
pub(crate) fn meta_value(v: u64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

/// Key of a meta counter.
pub(crate) fn meta_key(name: &str) -> Vec<u8> {
    key(META, &[name.as_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_distinct() {
        use crate::{catalog, events, graph, synonyms, users};
        let all = [
            META,
            catalog::PRODUCT,
            catalog::ITEM_ID,
            catalog::CHANGE,
            users::USER,
            users::USER_ID,
            events::EVENT,
            graph::ENTITY,
            graph::ENTITY_ID,
            graph::RELATION,
            graph::RELATION_ID,
            graph::EDGE,
            graph::EDGE_REV,
            synonyms::SYNONYM,
        ];
        let distinct: std::collections::HashSet<u8> = all.iter().copied().collect();
        assert_eq!(distinct.len(), all.len());
    }

    fn store_with(path: &Path, n: u32) -> Store {
        let s = Store::open(path).unwrap();
        let mut b = Batch::default();
        for i in 0..n {
            b.put(
                key(crate::catalog::PRODUCT, &[&i.to_be_bytes()]),
                vec![7u8; 10],
            );
        }
        s.apply(b).unwrap();
        s.flush().unwrap();
        s
    }

    fn count(s: &Store) -> usize {
        s.scan(&[crate::catalog::PRODUCT]).count()
    }

    #[test]
    fn compact_keeps_every_record_and_open_finishes_an_interrupted_swap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let s = store_with(&path, 100);
        s.compact().unwrap();
        assert_eq!(count(&s), 100);
        assert!(!sibling(&path, "new").exists() && !sibling(&path, "old").exists());
        drop(s);

        // A crash between the two renames: only the finished copy is left.
        std::fs::rename(&path, sibling(&path, "new")).unwrap();
        let s = Store::open(&path).unwrap();
        assert_eq!(count(&s), 100);
        assert!(!sibling(&path, "new").exists());
        drop(s);

        // A crash while copying: a partial copy beside the store is dropped.
        std::fs::create_dir_all(sibling(&path, "new")).unwrap();
        std::fs::write(sibling(&path, "new").join("db"), b"partial").unwrap();
        // A crash after the swap: the superseded store is dropped.
        std::fs::create_dir_all(sibling(&path, "old")).unwrap();
        let s = Store::open(&path).unwrap();
        assert_eq!(count(&s), 100);
        assert!(!sibling(&path, "new").exists() && !sibling(&path, "old").exists());
    }

    #[test]
    fn a_half_written_sled_snapshot_does_not_make_the_store_unopenable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        drop(store_with(&path, 50));
        // What a kill while sled writes a snapshot leaves: a short `.generating` file whose
        // name sorts after every finished snapshot.
        let half = path.join("snap.FFFFFFFFFFFFFFFF.generating");
        std::fs::write(&half, [1u8, 2, 3, 4, 5]).unwrap();
        let s = Store::open(&path).unwrap();
        assert_eq!(count(&s), 50);
        assert!(!half.exists());
    }

    #[test]
    fn open_waits_for_a_closing_sled_instance_to_release_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        drop(store_with(&path, 20));
        // Stand-in for sled's I/O threads of a database being closed: the lock on `db` is
        // held for a while after the handle is gone.
        let held = std::fs::File::open(path.join("db")).unwrap();
        fs2::FileExt::lock_exclusive(&held).unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(held);
        });
        let s = Store::open(&path).unwrap();
        assert_eq!(count(&s), 20);
        release.join().unwrap();
        // A lock that is never released gives a typed error, not a hang.
        drop(s);
        let held = std::fs::File::open(path.join("db")).unwrap();
        fs2::FileExt::lock_exclusive(&held).unwrap();
        let started = std::time::Instant::now();
        assert!(matches!(Store::open(&path), Err(Error::Locked(_))));
        assert!(started.elapsed() >= SLED_RELEASE_WAIT);
    }
}
