//! Where a dataset's bytes live on a node. `local`: a directory under the node's data root,
//! copied on a move. `replicated`: the same on the primary, plus standby copies on other nodes
//! (`replica`). `shared`: a directory on storage every node mounts, re-pointed on a move.
//! All keep a per-dataset epoch marker so a node knows whether its copy is current.

pub mod layout;
pub mod local;
pub mod shared;

use std::path::Path;

/// A backend failure.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("IO on {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "dataset {dataset} must be copied from {source_node}, whose agent has no known transfer address"
    )]
    NoSource {
        dataset: String,
        source_node: String,
    },
    #[error(
        "dataset {dataset}: this node's copy is at epoch {have:?} but the newest copy is the one of epoch {want}"
    )]
    StaleCopy {
        dataset: String,
        have: Option<u64>,
        want: u64,
    },
    #[error(
        "dataset {dataset} was promoted on this node, but this node holds no standby copy of it"
    )]
    NoStandbyCopy { dataset: String },
    #[error(
        "copying dataset {dataset} from {source_node} failed; the source is intact and the next mount retries"
    )]
    Transfer {
        dataset: String,
        source_node: String,
        #[source]
        source: crate::transfer::TransferError,
    },
}

/// Maps an IO error on `path` to a `BackendError`.
pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackendError + '_ {
    move |source| BackendError::Io {
        path: path.display().to_string(),
        source,
    }
}
