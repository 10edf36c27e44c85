//! The `local` backend's on-disk layout, `<data-root>/datasets/<id>/{data,epoch,hashes.json}`, and
//! how a node brings its copy up to the current epoch (pulling from the previous primary).

use std::path::{Path, PathBuf};

use super::BackendError;
use crate::control::Dataset;
use crate::transfer::TransferOptions;

/// A data root and the paths under it.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackendError + '_ {
    move |source| BackendError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Layout {
        Layout { root: root.into() }
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.root.join("datasets").join(id)
    }

    /// The directory handed to Docker as the mountpoint.
    pub fn data_dir(&self, id: &str) -> PathBuf {
        self.dir(id).join("data")
    }

    /// This node's digests of the dataset's files (see `transfer::HashCache`).
    pub fn hash_cache(&self, id: &str) -> PathBuf {
        self.dir(id).join("hashes.json")
    }

    fn epoch_file(&self, id: &str) -> PathBuf {
        self.dir(id).join("epoch")
    }

    /// The epoch this node's copy is current for, if it has one.
    pub fn local_epoch(&self, id: &str) -> Option<u64> {
        std::fs::read_to_string(self.epoch_file(id))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Records that this node's copy is current at `epoch` (written atomically).
    pub fn set_epoch(&self, id: &str, epoch: u64) -> Result<(), BackendError> {
        let f = self.epoch_file(id);
        let tmp = f.with_extension("tmp");
        std::fs::write(&tmp, epoch.to_string()).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &f).map_err(io(&f))
    }

    /// Datasets with a copy here and their epochs.
    pub fn held(&self) -> Vec<(String, u64)> {
        let Ok(rd) = std::fs::read_dir(self.root.join("datasets")) else {
            return Vec::new();
        };
        let mut out: Vec<_> = rd
            .filter_map(Result::ok)
            .filter_map(|e| {
                let id = e.file_name().to_string_lossy().into_owned();
                self.local_epoch(&id).map(|ep| (id, ep))
            })
            .collect();
        out.sort();
        out
    }

    /// Removes this node's copy.
    pub fn remove(&self, id: &str) -> Result<(), BackendError> {
        let d = self.dir(id);
        match std::fs::remove_dir_all(&d) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&d)(e)),
            _ => Ok(()),
        }
    }
}

/// Makes this node's copy current for `d` (whose primary is `node`): a new dataset gets an
/// empty directory; a moved one is pulled from the previous primary's agent at `source`, or is
/// already here when this node itself holds the newest copy.
pub async fn prepare(
    layout: &Layout,
    d: &Dataset,
    node: &str,
    source: Option<String>,
    opts: &TransferOptions,
) -> Result<PathBuf, BackendError> {
    let id = &d.dataset_id;
    let data = layout.data_dir(id);
    if layout.local_epoch(id) == Some(d.epoch) {
        return Ok(data);
    }
    match d.previous_primary.as_deref() {
        Some(prev) if prev != node => {
            let addr = source.ok_or_else(|| BackendError::NoSource {
                dataset: id.clone(),
                source_node: prev.to_string(),
            })?;
            let started = std::time::Instant::now();
            let stats = crate::transfer::pull(&addr, id, d.source_epoch, layout, opts)
                .await
                .map_err(|source| BackendError::Transfer {
                    dataset: id.clone(),
                    source_node: prev.to_string(),
                    source,
                })?;
            tracing::info!(dataset = %id, from = %prev, copied = stats.copied, skipped = stats.skipped, hashed = stats.hashed,
                bytes = stats.bytes, removed = stats.removed, ms = started.elapsed().as_millis() as u64,
                "dataset pulled");
        }
        Some(_) => {
            // This node holds the newest copy itself (a move back before the other node ever
            // finished its copy), but only if its copy is the one of that epoch.
            let have = layout.local_epoch(id);
            if let Some(want) = d.source_epoch
                && have != Some(want)
            {
                return Err(BackendError::StaleCopy {
                    dataset: id.clone(),
                    have,
                    want,
                });
            }
        }
        None => std::fs::create_dir_all(&data).map_err(io(&data))?,
    }
    layout.set_epoch(id, d.epoch)?;
    Ok(data)
}
