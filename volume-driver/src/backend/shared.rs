//! The `shared` backend: the data lives once on storage every node mounts (NFS, GlusterFS), so
//! a move copies nothing; fencing at the control service is what keeps writers single.

use std::path::{Path, PathBuf};

use super::BackendError;

fn io(p: &Path) -> impl FnOnce(std::io::Error) -> BackendError + '_ {
    move |source| BackendError::Io {
        path: p.display().to_string(),
        source,
    }
}

/// Makes sure the dataset's shared directory exists at `epoch` and returns it. When the dataset
/// was recreated at `recreated_at`, the one copy is emptied once, by the first node to prepare it
/// at that epoch (the epoch marker beside the data says it was done).
pub fn prepare(
    shared_root: &Path,
    id: &str,
    epoch: u64,
    recreated_at: Option<u64>,
) -> Result<PathBuf, BackendError> {
    let d = path(shared_root, id);
    let marker = d.with_file_name("epoch");
    let have: Option<u64> = std::fs::read_to_string(&marker)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    if let Some(r) = recreated_at
        && have < Some(r)
    {
        match std::fs::remove_dir_all(&d) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&d)(e)),
            _ => {}
        }
    }
    std::fs::create_dir_all(&d).map_err(io(&d))?;
    if have != Some(epoch) {
        let tmp = marker.with_extension("tmp");
        std::fs::write(&tmp, epoch.to_string()).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &marker).map_err(io(&marker))?;
    }
    Ok(d)
}

/// The dataset's directory on shared storage.
pub fn path(shared_root: &Path, id: &str) -> PathBuf {
    shared_root.join("datasets").join(id).join("data")
}
