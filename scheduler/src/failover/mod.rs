//! Failover planning: given the cluster and an event (a node lost, drained, or back), the
//! ordered steps that restore every slot without losing acknowledged writes or ever having two
//! writers — fence first (epoch + 1), then choose a target with the same engine `plan` uses,
//! then stop the old task, then move, promote or recreate the data, then start the task.
//!
//! Pure and deterministic: the planner reads a [`Cluster`] and returns a [`FailoverPlan`]; the
//! daemon executes it against Docker and the volume driver, the simulator against its model.
//! Steps carry a `wave`: a wave starts only when the previous one has finished. Waves follow
//! the `berth.depends-on` graph (dependencies first) and, for a drain, cut each service's
//! moves into groups of `berth.max-unavailable`.

mod steps;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use steps::plan_failover;

use crate::model::{Backend, NodeId};
use crate::schedule::PlanError;

/// What happened to a node.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "event", content = "node")]
pub enum Event {
    /// Swarm marked it down (missed heartbeats) or Berth's own detection declared it dead.
    NodeDown(NodeId),
    /// An operator drained it: its tasks must move, gracefully, while it is still up.
    NodeDrained(NodeId),
    /// It is ready again after being down.
    NodeBack(NodeId),
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::NodeDown(n) => write!(f, "node-down={n}"),
            Event::NodeDrained(n) => write!(f, "node-drained={n}"),
            Event::NodeBack(n) => write!(f, "node-back={n}"),
        }
    }
}

impl Event {
    pub fn node(&self) -> &NodeId {
        match self {
            Event::NodeDown(n) | Event::NodeDrained(n) | Event::NodeBack(n) => n,
        }
    }

    /// Parses the CLI form: `node-down=ID`, `node-drained=ID`, `node-back=ID`.
    pub fn parse(s: &str) -> Result<Event, FailoverError> {
        let (kind, node) = s
            .split_once('=')
            .ok_or_else(|| FailoverError::BadEvent(s.to_string()))?;
        let node = NodeId::new(node.trim());
        match kind.trim() {
            "node-down" => Ok(Event::NodeDown(node)),
            "node-drained" => Ok(Event::NodeDrained(node)),
            "node-back" => Ok(Event::NodeBack(node)),
            _ => Err(FailoverError::BadEvent(s.to_string())),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "action")]
pub enum Action {
    /// Bump the dataset's epoch: the old holder's mounts are refused from now on, so it can
    /// never write again even if it wakes up.
    Fence {
        dataset: String,
        node: NodeId,
        epoch: u64,
    },
    /// Stop the slot's task on `node` before its data moves: a drained node, or a lost one
    /// (which the managers may still reach when only its agent died).
    StopTask {
        node: NodeId,
    },
    /// `recreate` waits this long for the node before giving up on its member.
    WaitGrace {
        seconds: u64,
    },
    /// The node the engine picked, with the winning score.
    ChooseTarget {
        node: NodeId,
        why: String,
    },
    /// Hand the dataset to `to`: copy the bytes (`local` from a live node) or re-point
    /// (`shared`).
    MoveDataset {
        dataset: String,
        from: NodeId,
        to: NodeId,
        epoch: u64,
        backend: Backend,
        copy: bool,
    },
    /// Promote the standby copy on `to` (`replicated`); writes since the last sync are lost.
    PromoteStandby {
        dataset: String,
        from: NodeId,
        to: NodeId,
        epoch: u64,
    },
    /// A fresh, empty dataset on `node`; the database resyncs it from its peers.
    RecreateDataset {
        dataset: String,
        node: NodeId,
        epoch: u64,
    },
    StartTask {
        node: NodeId,
    },
    /// `manual`: an operator decides.
    WaitForOperator {
        reason: String,
    },
    /// The data is on the lost node's disk; nothing can start until the node is back.
    WaitForNode {
        node: NodeId,
        reason: String,
    },
    /// No node can take the slot now.
    Pending {
        reason: String,
    },
    /// The node is back: its copy is older than the dataset's epoch and must not be mounted.
    RevokeStale {
        dataset: String,
        node: NodeId,
        epoch: u64,
    },
    /// The node is back and healthy: lift Berth's fence label.
    Unfence {
        node: NodeId,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub wave: u32,
    /// `None` for node-level steps (unfence).
    pub service: Option<String>,
    pub slot: Option<u64>,
    #[serde(flatten)]
    pub action: Action,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverPlan {
    #[serde(flatten)]
    pub event: Event,
    pub steps: Vec<Step>,
}

impl FailoverPlan {
    pub fn waves(&self) -> u32 {
        self.steps.iter().map(|s| s.wave + 1).max().unwrap_or(0)
    }
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FailoverError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("event names unknown node `{0}`")]
    UnknownNode(NodeId),
    #[error("bad event `{0}`: expected node-down=ID, node-drained=ID or node-back=ID")]
    BadEvent(String),
}
