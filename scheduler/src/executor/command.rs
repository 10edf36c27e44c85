//! The seam between the executor and the world: each [`Command`] is one idempotent operation a
//! backend performs, carrying the epoch it expects, and each [`Outcome`] is what the backend
//! answered. Identities are names (volume, node ID, service name + slot), never a backend's
//! own IDs, so a replayed command means the same thing after a restart.

use serde::{Deserialize, Serialize};

use crate::model::NodeId;

/// Names one issued command; unique within an executor's life (it survives a restart from
/// [`super::ExecutorState`]), so a replayed completion is recognised.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct CommandId(pub u64);

/// Names one armed timer (a `recreate` grace, the modelled think time of a target choice).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct TimerId(pub u64);

/// How `assign` hands a volume to its new primary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "mode")]
pub enum AssignMode {
    /// Re-point (`shared`) or copy the bytes from `from` (`local`, `copy`: the old node is
    /// alive and serves them). `from == primary` re-admits the old holder at the new epoch.
    Move { from: NodeId, copy: bool },
    /// Promote the standby copy on the new primary (`replicated`).
    Promote { from: NodeId },
    /// A fresh, empty volume; the database resyncs it from its peers.
    Recreate,
}

impl AssignMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            AssignMode::Move { .. } => "move",
            AssignMode::Promote { .. } => "promote",
            AssignMode::Recreate => "recreate",
        }
    }
}

/// One operation. Replaying a command that already took effect is a no-op for the backend;
/// that is what makes re-issuing every in-flight command after a restart safe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "command")]
pub enum Command {
    /// Volume control service `fence(volume, node, expect_epoch)`: the epoch becomes
    /// `expect_epoch + 1` and `node`'s mounts are refused from then on. A stale
    /// `expect_epoch` is refused with the current epoch.
    Fence {
        volume: String,
        node: NodeId,
        expect_epoch: u64,
    },
    /// Volume control service `assign(volume, primary, epoch, mode)`; refused unless `epoch`
    /// is the volume's current epoch.
    Assign {
        volume: String,
        primary: NodeId,
        epoch: u64,
        #[serde(flatten)]
        mode: AssignMode,
    },
    /// An incremental move's bulk copy to `to` while the slot still runs on `from` (the
    /// target's agent pre-pulls); only the delta moves once the slot has stopped.
    PreCopy {
        volume: String,
        from: NodeId,
        to: NodeId,
    },
    /// Docker: stop the slot's service (it was running on `node`), keeping the service (and
    /// its pin to `node`) until the slot starts elsewhere, then wait to see its task stop.
    ///
    /// - `wait_ms: None` — `node` is up (a drain, a node back): the task must be seen stopped
    ///   before the lane goes on; a backend that cannot see it within its own limit fails the
    ///   command, which drops the lane.
    /// - `wait_ms: Some(bound)` — `node` was declared lost: wait until Swarm reports the task
    ///   not running, or `node` not Ready (Swarm can no longer stop it; the volume's fence and
    ///   the agent's lease do), or the node's lease at the control service has ended (a live
    ///   agent has stopped the task by then; the fence that follows waits for that end
    ///   anyway), or `bound` ms passed, whichever comes first; then done. Never longer than
    ///   `bound` (one lease): a dead node must not hold its slot hostage.
    StopSlot {
        service: String,
        slot: u64,
        node: NodeId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wait_ms: Option<u64>,
    },
    /// Docker: point the slot's service at `node` and wait until its task runs. With a
    /// volume, the task mounts it at `epoch`, which the driver checks.
    StartSlot {
        service: String,
        slot: u64,
        node: NodeId,
        volume: Option<String>,
        epoch: Option<u64>,
    },
    /// The copy of `volume` on `node` is older than `epoch` and must never be mounted: the
    /// node's agent discards it (it does so on its own at its next reconcile; a controller
    /// may acknowledge at once).
    DropStale {
        volume: String,
        node: NodeId,
        epoch: u64,
    },
    /// Docker: set Berth's `berth.fenced` label on the node (it was declared dead).
    SetFenceLabel { node: NodeId },
    /// Docker: remove the label (the node is back and its copies are dealt with).
    ClearFenceLabel { node: NodeId },
}

impl Command {
    /// The slot whose Swarm service this command touches.
    pub fn slot(&self) -> Option<(&str, u64)> {
        match self {
            Command::StopSlot { service, slot, .. } | Command::StartSlot { service, slot, .. } => {
                Some((service.as_str(), *slot))
            }
            _ => None,
        }
    }
}

/// What the backend answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "outcome")]
pub enum Outcome {
    Done,
    /// The precondition did not hold (HTTP 409: the epoch moved on, the standby is not
    /// there); nothing changed.
    Refused {
        current_epoch: Option<u64>,
        reason: String,
    },
    /// It could not be carried out (the node is gone, Docker errored).
    Failed {
        reason: String,
    },
}

impl Outcome {
    pub fn is_done(&self) -> bool {
        matches!(self, Outcome::Done)
    }
}
