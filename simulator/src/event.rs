//! What can happen at an instant: the simulation's events, and the node marks the timeline
//! plot draws.

use serde::Serialize;

use berth_scheduler::executor::{Ticket, TimerId};

use crate::faults::FaultAction;

/// Everything that can happen at an instant.
#[derive(Clone, Copy, Debug)]
pub enum Ev {
    /// A client of a stateful service issues one write.
    Write(u32),
    Fault(FaultAction),
    /// The managers' heartbeat timer for the node ran out.
    SwarmDown {
        node: u32,
        generation: u64,
    },
    /// Berth's detector gave up on the node.
    BerthDetect {
        node: u32,
        generation: u64,
    },
    /// A cut-off holder's lease ran out (Berth's self-fencing).
    LeaseExpired {
        node: u32,
        generation: u64,
    },
    /// A container finished starting.
    TaskReady {
        task: u32,
    },
    /// A container told to stop (by Swarm, or by its node's agent) has stopped.
    StopTask {
        task: u32,
    },
    /// A fresh member finished its initial sync from its peers; it then applies what it
    /// missed meanwhile (the oplog tail) and is current.
    Resynced {
        copy: u32,
    },
    /// Swarm's orchestrator places every missing slot.
    SwarmReconcile,
    /// A replacement Swarm created has waited SwarmKit's longest for the task it replaces to
    /// stop; it starts now if it still waits.
    SwarmWaitOver {
        task: u32,
    },
    /// A human acts on a node that went down (or was drained).
    Operator {
        node: u32,
        generation: u64,
        drain: bool,
    },
    /// An executor command's modelled time is over.
    Command {
        ticket: Ticket,
    },
    /// An executor timer is due (a `recreate` grace, a target choice).
    Timer {
        id: TimerId,
    },
    /// A lane was dropped (its target went away): Berth asks the engine again.
    Retry,
    /// `berth run`'s controller pass for rescheduling (`[rebalance] resync`).
    RebalancePass,
    /// `swarm-force`: the forced update reaches slot index `step`.
    ForceUpdate {
        step: u32,
    },
    /// The balance measures are sampled (`[rebalance] sample`).
    Sample,
}

/// A node state change, for the timeline plot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeMark {
    Up,
    Down,
    CutOff,
    Healed,
    Drain,
    Active,
    DiskLost,
}
