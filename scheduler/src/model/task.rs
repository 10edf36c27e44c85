//! Tasks: one container of a service, in a slot (replicated) or on a node (global).

use serde::{Deserialize, Serialize};

use super::node::NodeId;
use super::service::ServiceId;

/// Swarm's task states in lifecycle order; the order matters (`<= Running` is "active").
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    New,
    Pending,
    Assigned,
    Accepted,
    Preparing,
    Ready,
    Starting,
    #[default]
    Running,
    Complete,
    Shutdown,
    Failed,
    Rejected,
    Remove,
    Orphaned,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    #[serde(default)]
    pub id: String,
    pub service_id: ServiceId,
    /// Replica ordinal, 1-based like Swarm's; `None` for a global service's task.
    #[serde(default)]
    pub slot: Option<u64>,
    #[serde(default)]
    pub node_id: Option<NodeId>,
    #[serde(default)]
    pub state: TaskState,
    #[serde(default)]
    pub desired_state: TaskState,
}

impl Task {
    /// Counts against a node like Swarm's `ActiveTasksCount`: meant to run and not finished.
    pub fn is_active(&self) -> bool {
        self.desired_state <= TaskState::Running && self.state <= TaskState::Running
    }
}
