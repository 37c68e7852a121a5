//! Backups: "here is a live database, give me a consistent copy of it; here is a copy, is it
//! whole?"
//!
//! A backup is a directory that holds one committed state: `store.dump` (every record of the
//! store, a flat file, since sled's files change in place and allow one process only), the
//! text index and the vector snapshot (hard links: their files are never changed once
//! written), the model generation and `config.json`, and `BACKUP.json`, the manifest: the
//! sequence and each file's length and CRC-32. It is made in `DEST.partial/` and renamed to
//! `DEST` only when complete, so a backup interrupted by a crash is never taken for a whole
//! one.
//!
//! Commits wait while the state is captured (the store is dumped and the other files are
//! linked); staging goes on, and the checksums are computed after the commits resume. A
//! backup is served read-only by any number of processes (`Engine::open_read_only`), or
//! restored by opening it as a database (`Engine::open`), which rebuilds `store/` from the
//! dump.

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::state::State;

/// The manifest's file name.
pub(crate) const MANIFEST: &str = "BACKUP.json";
/// The store's records in a backup.
pub(crate) const STORE_DUMP: &str = "store.dump";
const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Manifest {
    format: u32,
    /// The last sequence number the backup holds.
    seq: u64,
    files: Vec<FileEntry>,
}

#[derive(Serialize, Deserialize)]
struct FileEntry {
    /// Relative to the backup directory, `/`-separated.
    path: String,
    len: u64,
    crc32: u32,
}

/// What [`Engine::backup`](crate::Engine::backup) made.
#[derive(Clone, Debug, PartialEq)]
pub struct BackupReport {
    /// The last sequence number the backup holds: every write committed before the backup
    /// started, and none committed after its capture.
    pub seq: u64,
    /// Files in the backup (the manifest excluded).
    pub files: usize,
    /// Their total size.
    pub bytes: u64,
    /// How long commits waited while the state was captured, in seconds.
    pub capture_seconds: f64,
    /// The whole backup, in seconds.
    pub seconds: f64,
}

/// Backs the database up into `dest` (which must not exist). `capture` runs with commits
/// kept out (the caller holds the commit lock inside it) and copies the state into the
/// directory it is given.
pub(crate) fn backup(
    state: &State,
    dest: &Path,
    capture: impl FnOnce(&Path) -> Result<(u64, f64)>,
) -> Result<BackupReport> {
    let started = Instant::now();
    if dest.starts_with(&state.dir) {
        return Err(Error::invalid(
            "backup.dir",
            "inside the database directory".to_string(),
        ));
    }
    let (seq, capture_seconds, files, bytes) =
        crate::fsutil::build_dir(dest, "backup.dir", |partial| {
            let (seq, capture_seconds) = capture(partial)?;
            let mut files = Vec::new();
            list_files(partial, partial, &mut files)?;
            files.sort_by(|a, b| a.path.cmp(&b.path));
            let bytes = files.iter().map(|f| f.len).sum::<u64>();
            for f in &files {
                let path = partial.join(&f.path);
                std::fs::File::open(&path)
                    .and_then(|file| file.sync_all())
                    .map_err(|e| Error::io(&path, e))?;
            }
            let manifest = Manifest {
                format: FORMAT,
                seq,
                files,
            };
            let json = serde_json::to_vec_pretty(&manifest)
                .map_err(|e| Error::backend("serde_json", e))?;
            crate::fsutil::write_atomic(&partial.join(MANIFEST), &json)?;
            Ok((seq, capture_seconds, manifest.files.len(), bytes))
        })?;
    Ok(BackupReport {
        seq,
        files,
        bytes,
        capture_seconds,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn list_files(root: &Path, dir: &Path, out: &mut Vec<FileEntry>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_dir() {
            list_files(root, &path, out)?;
            continue;
        }
        let rel = path
            .strip_prefix(root)
            .map_err(|_| Error::corrupt(&path, "outside the backup"))?;
        let rel: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let bytes = crate::fsutil::read(&path)?;
        out.push(FileEntry {
            path: rel.join("/"),
            len: bytes.len() as u64,
            crc32: crate::fsutil::crc32(&bytes),
        });
    }
    Ok(())
}

/// Whether `dir` is a backup (it holds a manifest).
pub(crate) fn is_backup(dir: &Path) -> bool {
    dir.join(MANIFEST).is_file()
}

/// Checks a backup against its manifest: every listed file present with its length and
/// CRC-32, nothing a path outside the directory. Returns the backup's sequence.
///
/// # Errors
/// [`Error::Corrupt`] naming the first file that differs, or the directory when it is an
/// interrupted backup's `DEST.partial` (a backup killed after its manifest was written but
/// before the rename to `DEST` looks whole; it is still not taken for one).
pub(crate) fn verify(dir: &Path) -> Result<u64> {
    if crate::fsutil::is_partial(dir) {
        return Err(Error::corrupt(
            dir,
            "an interrupted backup (never renamed from .partial): take the backup again",
        ));
    }
    let path = dir.join(MANIFEST);
    let manifest: Manifest = serde_json::from_slice(&crate::fsutil::read(&path)?)
        .map_err(|e| Error::corrupt(&path, e.to_string()))?;
    if manifest.format != FORMAT {
        return Err(Error::corrupt(
            &path,
            format!(
                "backup format {} (this build reads {FORMAT})",
                manifest.format
            ),
        ));
    }
    for f in &manifest.files {
        let plain = f
            .path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
        if !plain {
            return Err(Error::corrupt(&path, format!("file name {:?}", f.path)));
        }
        let file = dir.join(&f.path);
        let bytes = crate::fsutil::read(&file)?;
        if bytes.len() as u64 != f.len || crate::fsutil::crc32(&bytes) != f.crc32 {
            return Err(Error::corrupt(
                &file,
                format!(
                    "{} bytes with CRC-32 {:08x}, the backup's manifest says {} bytes with {:08x}",
                    bytes.len(),
                    crate::fsutil::crc32(&bytes),
                    f.len,
                    f.crc32
                ),
            ));
        }
    }
    if !manifest.files.iter().any(|f| f.path == STORE_DUMP) {
        return Err(Error::corrupt(&path, "the backup lists no store dump"));
    }
    Ok(manifest.seq)
}
