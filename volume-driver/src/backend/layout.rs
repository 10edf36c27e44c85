//! A node's data root, `<data-root>/datasets/<id>/{data,epoch,standby,hashes.json}`, and its
//! markers: `epoch` says "this copy is the whole data of epoch N" and is written last; `standby`
//! says "this copy is a complete ship from the primary's copy of epoch N". A copy carries at most
//! one of them, and a copy with neither is never handed out nor served as a source. Both the
//! backends (`local`) and the transfer (`pull`, `serve`) read it.

use std::path::{Path, PathBuf};

use super::{BackendError, io};

/// A data root and the paths under it.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
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
