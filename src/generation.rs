//! One model generation: the fitted channels of the registry, the re-ranker, the history
//! rule they were trained with, and their checksummed file (`models/gen-N.bin` +
//! `models/CURRENT`).

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::channel::Models;
use crate::error::{Error, Result};
use crate::options::HistoryRule;

pub(crate) const MODEL_MAGIC: &[u8; 4] = b"MODL";
pub(crate) const MODEL_VERSION: u32 = 7;

/// What cleaning removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cleaning {
    /// Events read from the log.
    pub events_read: usize,
    /// Events of products deleted since.
    pub deleted_items: usize,
    /// Users dropped for an absurd event rate, and their events.
    pub robot_users: usize,
    /// Events of those users.
    pub robot_events: usize,
    /// Events whose kind has no weight (e.g. low ratings under `AtLeast`).
    pub unweighted: usize,
    /// Distinct (user, item) pairs kept.
    pub pairs: usize,
}

/// The trained models of one generation.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ModelSet {
    pub generation: u64,
    /// The log sequence the models were trained on.
    pub seq: u64,
    /// The model channels of the registry, fitted.
    pub models: Models,
    /// How a shopper's events were weighed into their history: the query path weighs a
    /// live history by the same rule.
    pub history_rule: HistoryRule,
    /// The re-ranker, when trained.
    pub mlp: Option<crate::rerank::TrainedRanker>,
    /// Category names by popularity category id.
    pub categories: Vec<String>,
    pub cleaning: Cleaning,
    /// What tuning tried and chose for this generation, when it ran.
    pub tuning: Option<crate::tune::TuneReport>,
    /// Set when the MF channel's factors were imported (`IMPORT MODEL mf`) rather than
    /// fitted with the rest of the generation.
    pub imported_mf: Option<crate::channel::MfImportReport>,
}

impl ModelSet {
    /// Prepares the factor channels' item sides (`channel::factors::ItemSide`): their int8
    /// codes, and in large catalogs a graph over their item vectors, on a background thread
    /// at open (queries scan until it is ready), in the caller's thread after training.
    /// Returns whether the catalog is large enough to have a graph.
    pub(crate) fn prepare_item_sides(
        self: &Arc<Self>,
        params: &crate::config::HnswParams,
        background: bool,
    ) -> bool {
        let large = self
            .models
            .iter()
            .filter_map(|r| r.item_side())
            .any(|(_, rows)| crate::channel::ItemSide::wants_index(rows));
        let set = Arc::clone(self);
        let params = params.clone();
        let build = move || {
            for r in set.models.iter() {
                if let Some((side, rows)) = r.item_side() {
                    side.prepare(rows, &params);
                }
            }
        };
        if background && large {
            std::thread::spawn(build);
        } else {
            build();
        }
        large
    }
}

pub(crate) fn save(dir: &Path, set: &ModelSet) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = format!("gen-{:06}.bin", set.generation);
    let bytes = crate::codec::encode_file(MODEL_MAGIC, MODEL_VERSION, set)?;
    crate::fsutil::write_atomic(&dir.join(&name), &bytes)?;
    crate::fsutil::write_atomic(&dir.join("CURRENT"), name.as_bytes())?;
    // Older generations may hold users forgotten since: remove them.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with("gen-") && n != name {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

/// Links (or copies) the current generation of the database in `db_dir` and its `CURRENT`
/// into `to` (a backup's `models/`); nothing when it was never trained. A training that
/// saves meanwhile removes the file `CURRENT` named: it is then read again.
pub(crate) fn copy_current(db_dir: &Path, to: &Path) -> Result<()> {
    let dir = db_dir.join("models");
    let current = dir.join("CURRENT");
    for _ in 0..5 {
        let name = match std::fs::read_to_string(&current) {
            Ok(n) => n.trim().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(&current, e)),
        };
        if !name.starts_with("gen-") || name.contains('/') || name.contains("..") {
            return Err(Error::corrupt(&current, format!("names {name:?}")));
        }
        std::fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
        let (src, dst) = (dir.join(&name), to.join(&name));
        match crate::fsutil::link_or_copy(&src, &dst) {
            Ok(()) => return crate::fsutil::write_atomic(&to.join("CURRENT"), name.as_bytes()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&src, e)),
        }
    }
    Err(Error::corrupt(
        &current,
        "the model generation changed five times while being copied",
    ))
}

/// Loads the current model generation: `Ok(None)` when never trained.
pub(crate) fn load(dir: &Path) -> Result<Option<ModelSet>> {
    let dir = dir.join("models");
    let current = dir.join("CURRENT");
    let name = match std::fs::read_to_string(&current) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&current, e)),
    };
    let name = name.trim();
    if !name.starts_with("gen-") || name.contains('/') || name.contains("..") {
        return Err(Error::corrupt(&current, format!("names {name:?}")));
    }
    let path = dir.join(name);
    let bytes = crate::fsutil::read(&path)?;
    let mut set: ModelSet = crate::codec::decode_file(MODEL_MAGIC, MODEL_VERSION, &bytes, &path)?;
    if let Some(ranker) = set.mlp.as_mut() {
        ranker.mlp.flush_subnormal_weights();
        ranker
            .mlp
            .validate()
            .map_err(|e| Error::corrupt(&path, format!("re-ranker: {e}")))?;
        if ranker.mlp.n_inputs() != crate::rerank::N_FEATURES {
            return Err(Error::corrupt(
                &path,
                format!(
                    "the re-ranker reads {} features, the registered channels give {}: train again",
                    ranker.mlp.n_inputs(),
                    crate::rerank::N_FEATURES
                ),
            ));
        }
    }
    Ok(Some(set))
}
