//! The node-local backends' on-disk layout, `<data-root>/datasets/<id>/{data,epoch,standby,
//! hashes.json}`, and how a node brings its copy up to the current epoch: pull it from the node
//! holding the newest whole copy, adopt its own standby copy (`replicated`, promoted), or start
//! empty (new, or recreated).
//!
//! Markers: `epoch` says "this copy is the whole data of epoch N" and is written last; `standby`
//! says "this copy is a complete ship from the primary's copy of epoch N". A copy carries at most
//! one of them, and a copy with neither is never handed out nor served as a source.

use std::path::{Path, PathBuf};

use berth_control_model::wire::VolumeRecord;

use super::BackendError;
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

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// Writes `v` to `f` through a temp file and a rename, so a reader sees the old or the new.
fn write_atomic(f: &Path, v: &str) -> Result<(), BackendError> {
    let tmp = f.with_extension("tmp");
    std::fs::write(&tmp, v).map_err(io(&tmp))?;
    std::fs::rename(&tmp, f).map_err(io(f))
}

fn remove_if_there(p: &Path) -> Result<(), BackendError> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(p)(e)),
        _ => Ok(()),
    }
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Layout {
        Layout { root: root.into() }
    }

    /// The data root.
    pub fn root(&self) -> &Path {
        &self.root
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

    fn standby_file(&self, id: &str) -> PathBuf {
        self.dir(id).join("standby")
    }

    /// The epoch this node's copy is whole for, if it has one.
    pub fn local_epoch(&self, id: &str) -> Option<u64> {
        read_u64(&self.epoch_file(id))
    }

    /// Records that this node's copy is whole for `epoch` (written atomically, and last): it is
    /// no longer a standby copy.
    pub fn set_epoch(&self, id: &str, epoch: u64) -> Result<(), BackendError> {
        remove_if_there(&self.standby_file(id))?;
        write_atomic(&self.epoch_file(id), &epoch.to_string())
    }

    /// Withdraws the claim that this copy is whole: it may hold writes the data no longer has
    /// (a demoted primary), so it is neither handed out nor a source until replaced.
    pub fn clear_epoch(&self, id: &str) -> Result<(), BackendError> {
        remove_if_there(&self.epoch_file(id))
    }

    /// The epoch of the primary copy this node's standby copy was last completely shipped from.
    pub fn standby_epoch(&self, id: &str) -> Option<u64> {
        read_u64(&self.standby_file(id))
    }

    /// Records a complete ship from the primary's copy of `epoch`.
    pub fn set_standby(&self, id: &str, epoch: u64) -> Result<(), BackendError> {
        write_atomic(&self.standby_file(id), &epoch.to_string())
    }

    /// Marks a ship as under way: until it completes, the copy is a mix of two ships.
    pub fn clear_standby(&self, id: &str) -> Result<(), BackendError> {
        remove_if_there(&self.standby_file(id))
    }

    /// Datasets with a whole copy here and their epochs.
    pub fn held(&self) -> Vec<(String, u64)> {
        let mut out: Vec<_> = self
            .present()
            .into_iter()
            .filter_map(|id| self.local_epoch(&id).map(|ep| (id, ep)))
            .collect();
        out.sort();
        out
    }

    /// Every dataset with a directory here, whole, standby or partial.
    pub fn present(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(self.root.join("datasets")) else {
            return Vec::new();
        };
        let mut out: Vec<String> = rd
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|id| uuid::Uuid::parse_str(id).is_ok())
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

/// Makes this node's copy current for `d` (whose primary is `node`) and returns its path: a
/// new or recreated dataset gets an empty directory (a recreated one's older copy is discarded);
/// a promoted standby's copy is adopted as it stands; a moved one is pulled from the node
/// holding the newest whole copy, or is already here when this node holds it.
pub async fn prepare(
    layout: &Layout,
    d: &VolumeRecord,
    node: &str,
    opts: &TransferOptions,
) -> Result<PathBuf, BackendError> {
    let id = &d.dataset_id;
    let data = layout.data_dir(id);
    if layout.local_epoch(id) == Some(d.epoch) {
        return Ok(data);
    }
    if d.recreated {
        layout.remove(id)?;
        std::fs::create_dir_all(&data).map_err(io(&data))?;
    } else if d.promoted {
        if !data.is_dir() {
            return Err(BackendError::NoStandbyCopy {
                dataset: id.clone(),
            });
        }
        if layout.standby_epoch(id).is_none() {
            // Stopped mid-ship: every file is a whole version the primary held, newer than
            // the recorded position, but the files may come from two ships.
            tracing::warn!(dataset = %id, "promoting a standby copy whose last ship did not complete");
        }
        let partial =
            crate::transfer::remove_partials(&data).map_err(|source| BackendError::Transfer {
                dataset: id.clone(),
                source_node: node.to_string(),
                source,
            })?;
        if partial > 0 {
            tracing::info!(dataset = %id, files = partial, "removed an interrupted ship's partial files");
        }
    } else {
        match &d.source {
            Some(src) if src.node != node => {
                let addr = src.transfer.clone().ok_or_else(|| BackendError::NoSource {
                    dataset: id.clone(),
                    source_node: src.node.clone(),
                })?;
                let started = std::time::Instant::now();
                // Whatever this node held is about to be replaced by the newest copy.
                layout.clear_standby(id)?;
                let stats = crate::transfer::pull(&addr, id, src.epoch, layout, opts).await;
                let m = crate::metrics::agent();
                match &stats {
                    Ok(s) => {
                        m.moves.with_label_values(&["ok"]).inc();
                        m.move_bytes.inc_by(s.bytes);
                    }
                    Err(_) => m.moves.with_label_values(&["failed"]).inc(),
                }
                let stats = stats.map_err(|source| BackendError::Transfer {
                    dataset: id.clone(),
                    source_node: src.node.clone(),
                    source,
                })?;
                tracing::info!(dataset = %id, from = %src.node, copied = stats.copied, skipped = stats.skipped, hashed = stats.hashed,
                    bytes = stats.bytes, removed = stats.removed, ms = started.elapsed().as_millis() as u64,
                    "dataset pulled");
            }
            Some(src) => {
                // This node holds the newest copy itself (a move back before the other node
                // ever finished its copy), but only if its copy is the one of that epoch.
                let have = layout.local_epoch(id);
                if let Some(want) = src.epoch
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
    }
    layout.set_epoch(id, d.epoch)?;
    Ok(data)
}
