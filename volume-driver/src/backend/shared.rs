//! The `shared` backend: the data lives once on storage every node mounts (NFS, say), so a
//! move copies nothing; fencing at the control service is what keeps writers single.

use std::path::{Path, PathBuf};

use super::BackendError;

/// Makes sure the dataset's shared directory exists and returns it.
pub fn prepare(shared_root: &Path, id: &str) -> Result<PathBuf, BackendError> {
    let d = path(shared_root, id);
    std::fs::create_dir_all(&d).map_err(|source| BackendError::Io {
        path: d.display().to_string(),
        source,
    })?;
    Ok(d)
}

/// The dataset's directory on shared storage.
pub fn path(shared_root: &Path, id: &str) -> PathBuf {
    shared_root.join("datasets").join(id).join("data")
}
