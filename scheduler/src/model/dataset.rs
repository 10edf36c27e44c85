//! Datasets: the data behind one slot of a stateful service, with its primary and epoch.

use serde::{Deserialize, Serialize};

use super::node::NodeId;

/// Where a dataset's bytes live, which decides what a failover can do with them.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// On the primary's own disk: a dead primary's data cannot be copied anywhere.
    #[default]
    Local,
    /// On storage every node can attach (NFS, SAN): a move is fence + re-point.
    Shared,
    /// Local with a standby copy on another node, behind by the replication lag.
    Replicated,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Local => "local",
            Backend::Shared => "shared",
            Backend::Replicated => "replicated",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dataset {
    /// The volume name, e.g. `mongo-data-1`.
    pub name: String,
    /// Name of the service whose slot owns it.
    pub service: String,
    pub slot: u64,
    /// The only node allowed to mount it; `None` until first placed.
    #[serde(default)]
    pub primary: Option<NodeId>,
    /// Fencing token: every change of primary increments it, and a holder with an older epoch
    /// is refused by the volume driver.
    #[serde(default)]
    pub epoch: u64,
    #[serde(default)]
    pub backend: Backend,
    #[serde(default)]
    pub size_bytes: u64,
    /// For `replicated`: the node holding the standby copy.
    #[serde(default)]
    pub standby: Option<NodeId>,
    /// The control service fenced the dataset away from `primary` and has assigned it to no
    /// node since (a failover cut short: no target, its lane lost, a `recreate` member kept
    /// through its grace). `epoch` is then the epoch *before* that fence, so a plan's fence of
    /// `primary` is a replay the service answers as done; no node may mount until an assignment
    /// at `epoch + 1`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fenced: bool,
}
