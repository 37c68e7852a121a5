//! Small file helpers: atomic replacement and checksums.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsynced,
/// renamed over the target, then the directory fsynced. A crash leaves either the old or the
/// new content, never a mix.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    }
    fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    sync_dir(dir)
}

/// Fsyncs a directory so that renames inside it are durable. The empty path (the parent of
/// a bare relative name) is the current directory.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// CRC-32 of a byte slice.
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// Reads a whole file, mapping errors to [`Error::Io`].
pub(crate) fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| Error::io(path, e))
}

/// `dst` as a hard link to `src` (instant, and safe for a file that is never changed in
/// place), or a copy where the file system cannot link. `NotFound` when `src` is gone.
pub(crate) fn link_or_copy(src: &Path, dst: &Path) -> std::io::Result<()> {
    fs::hard_link(src, dst).or_else(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Err(e),
        _ => fs::copy(src, dst).map(|_| ()),
    })
}

/// Makes `to` (created) hold every file of `from` whose name `keep` accepts, recursively:
/// hard links where the file system allows (instant, and safe for files that are never
/// changed in place), copies elsewhere. Returns the number of files.
pub(crate) fn link_files(
    from: &Path,
    to: &Path,
    keep: impl Fn(&str) -> bool + Copy,
) -> Result<usize> {
    std::fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
    let mut n = 0;
    for entry in std::fs::read_dir(from).map_err(|e| Error::io(from, e))? {
        let entry = entry.map_err(|e| Error::io(from, e))?;
        let name = entry.file_name();
        let Some(name_str) = name.to_str() else {
            continue;
        };
        let (src, dst) = (entry.path(), to.join(&name));
        let kind = entry.file_type().map_err(|e| Error::io(&src, e))?;
        if kind.is_dir() {
            n += link_files(&src, &dst, keep)?;
        } else if kind.is_file() && keep(name_str) {
            match link_or_copy(&src, &dst) {
                Ok(()) => n += 1,
                // The file went away (a merge or a newer snapshot replaced it): the caller
                // checks the copy.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&src, e)),
            }
        }
    }
    Ok(n)
}

/// The suffix of the directory [`build_dir`] fills before renaming it.
pub(crate) const PARTIAL_SUFFIX: &str = ".partial";

/// Whether `dir` is named as [`build_dir`]'s unfinished directory (`DEST.partial`): a run
/// killed after filling it but before the rename leaves one whose contents look whole.
pub(crate) fn is_partial(dir: &Path) -> bool {
    dir.file_name()
        .is_some_and(|n| n.to_string_lossy().ends_with(PARTIAL_SUFFIX))
}

/// Makes a directory's contents in `DEST.partial/` and renames it to `dest` once `fill`
/// succeeds, so that an interrupted run never leaves something taken for a whole result
/// (a `.partial` left by one is replaced by the next). `what` names the setting in errors.
pub(crate) fn build_dir<T>(
    dest: &Path,
    what: &'static str,
    fill: impl FnOnce(&Path) -> Result<T>,
) -> Result<T> {
    if dest.exists() {
        return Err(Error::invalid(
            what,
            format!(
                "{} exists; the result goes to a new directory",
                dest.display()
            ),
        ));
    }
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(PARTIAL_SUFFIX);
    let partial = dest.with_file_name(name);
    if partial.exists() {
        fs::remove_dir_all(&partial).map_err(|e| Error::io(&partial, e))?;
    }
    fs::create_dir_all(&partial).map_err(|e| Error::io(&partial, e))?;
    let out = match fill(&partial) {
        Ok(out) => out,
        Err(e) => {
            let _ = fs::remove_dir_all(&partial);
            return Err(e);
        }
    };
    fs::rename(&partial, dest).map_err(|e| Error::io(dest, e))?;
    if let Some(parent) = dest.parent() {
        sync_dir(parent)?;
    }
    Ok(out)
}
