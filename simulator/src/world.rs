//! The world: what is physically true at the current virtual instant — which nodes are powered
//! and reachable, which containers run where, which copies of each dataset exist — and the
//! *view* of it the managers have, which is what the engine is asked about.
//!
//! Architecture invariant: the engine never sees the world, only [`crate::sim::Sim::view`]: a
//! `model::Cluster` built from what the managers could know (a partitioned node's containers
//! still look "running" to them, a dead container on a reachable node does not).

use std::sync::Arc;

use berth_control_model::gate::MountGate;
use berth_control_model::lease::Keeper;

use crate::clock::Ms;
use crate::rng::{SimRng, Stream};

/// A node's lazily generated heartbeat stream (SwarmKit's: each heartbeat is answered with the
/// next period, `heartbeat ± jitter`, and the node is DOWN after `grace × period` of silence).
///
/// Beats are generated only up to the instant contact is lost — the same sequence an explicit
/// per-beat event would produce, without 17,280 events per node per simulated day.
pub struct Beats {
    rng: SimRng,
    /// The last beat the managers received.
    pub last: Ms,
    /// The period handed out with that beat.
    pub period: Ms,
}

impl Beats {
    pub fn new(seed: u64, node: u32, base: Ms, jitter: Ms) -> Beats {
        let mut rng = SimRng::derive(seed, Stream::SwarmHeartbeat, u64::from(node));
        // A random phase: nodes joined at different instants, so their first beat falls
        // anywhere in the first period (faults are meant to start after it).
        let phase = rng.range(0, base - 1);
        let period = rng.jitter(base, jitter);
        Beats {
            rng,
            last: phase,
            period,
        }
    }

    /// Replays beats up to `t` (the node is alive and connected until `t`).
    pub fn advance(&mut self, t: Ms, base: Ms, jitter: Ms) {
        while self.last + self.period <= t {
            self.last += self.period;
            self.period = self.rng.jitter(base, jitter);
        }
    }

    /// The node reconnected at `t`: it beats at once.
    pub fn restart(&mut self, t: Ms, base: Ms, jitter: Ms) {
        self.last = t;
        self.period = self.rng.jitter(base, jitter);
    }
}

/// The node's volume agent (`berth-volume agent`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentState {
    Running,
    /// Killed: with the FUSE data path, its mounts died with it (`ENOTCONN`).
    Dead,
    /// Stopped (SIGSTOP, a hang): it neither heartbeats nor serves a write.
    Paused,
}

pub struct NodeRt {
    /// Powered, with its engine running.
    pub up: bool,
    /// Every process on the node is stopped (a paused VM): nothing runs, beats or writes.
    pub frozen: bool,
    pub agent: AgentState,
    /// When the agent last became able to act (started, resumed, thawed).
    pub agent_since: Ms,
    /// The agent's lease as the agent keeps it: berth-volume's own keeper, fed with the
    /// heartbeats that reach the control service (`Sim::sync_lease`).
    pub keeper: Arc<Keeper>,
    /// When the last heartbeat the keeper was fed was sent.
    pub fed: Option<Ms>,
    /// Stateful tasks on the node with a mount served by its agent (their gates).
    pub mounts: Vec<u32>,
    /// The agent's heartbeats reach the control service (Berth's liveness and leases).
    pub berth_contact: bool,
    /// As `generation`, for Berth's timers (detection, lease end), bumped when the agent's
    /// heartbeats stop or resume.
    pub berth_generation: u64,
    /// When the agent's heartbeats stopped reaching the control service, while they still do
    /// not.
    pub berth_lost_at: Option<Ms>,
    /// Times its heartbeats came back (Berth's executor sees a return by it).
    pub berth_reconnects: u64,
    /// When its heartbeats last resumed: it beats at once, then on its grid.
    pub berth_since: Ms,
    /// Reaches the managers (and so the Raft leader's dispatcher and Berth's detector).
    pub reach_managers: bool,
    /// Reaches shared storage.
    pub reach_storage: bool,
    pub draining: bool,
    /// Start and copy slowdown (1 = normal).
    pub slow: u32,
    /// The managers marked it DOWN (missed heartbeats).
    pub swarm_down: bool,
    /// Berth's detector declared it dead.
    pub berth_down: bool,
    /// Berth's `berth.fenced` node label.
    pub fenced: bool,
    /// Bumped whenever contact is lost or regained: timers carry the generation they were set
    /// in and are ignored once it moved on (a blip shorter than the grace cancels nothing,
    /// it just makes the pending DOWN stale).
    pub generation: u64,
    /// Times it regained the managers (Berth's executor sees a return by it).
    pub reconnects: u64,
    /// Berth's heartbeat phase within its period.
    pub berth_phase: Ms,
    pub beats: Beats,
}

impl NodeRt {
    /// Reaches the managers: Swarm's heartbeats, and dockerd can be told to stop a task.
    pub fn in_contact(&self) -> bool {
        self.up && self.reach_managers && !self.frozen
    }

    /// Its agent heartbeats the control service (`control_up`: the service is reachable).
    pub fn lease_contact(&self, control_up: bool) -> bool {
        self.in_contact() && self.agent == AgentState::Running && control_up
    }

    /// The agent can act on the node (serve a write, stop a container).
    pub fn agent_runs(&self) -> bool {
        self.up && !self.frozen && self.agent == AgentState::Running
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TaskState {
    /// Container being created; not serving yet.
    Starting,
    Running,
    /// The container died with its node; the managers may not know yet.
    Dead,
    Stopped,
}

pub struct TaskRt {
    pub service: u32,
    /// 1-based like Swarm's.
    pub slot: u64,
    /// Global slot index (see `Sim::slots`).
    pub slot_idx: u32,
    pub node: u32,
    pub state: TaskState,
    /// The managers want it running. A task replaced while its node was cut off stays
    /// physically `Running` with `desired = false` until the node hears about it.
    pub desired: bool,
    /// The dataset epoch it mounted with (fencing token).
    pub epoch: u64,
    /// The copy it mounts (stateful tasks).
    pub copy: Option<u32>,
    pub started: Ms,
    pub ended: Option<Ms>,
    /// Berth, stateful: the gate of the mount its node's agent serves it (with `direct`, only
    /// whether its claim was refused is used).
    pub gate: Option<Arc<MountGate>>,
}

impl TaskRt {
    pub fn alive(&self) -> bool {
        matches!(self.state, TaskState::Starting | TaskState::Running)
    }
}

pub struct SlotRt {
    pub service: u32,
    pub slot: u64,
    /// Tasks the managers want running in this slot (usually one; two while a replacement of a
    /// cut-off task is starting).
    pub tasks: Vec<u32>,
    pub dataset: Option<u32>,
    /// A stateful slot: whether a writer of its dataset takes writes, since when it has not,
    /// and each span it did not (the time per slot of a mass failover).
    pub serving: bool,
    pub down_since: Option<Ms>,
    pub outages: Vec<(Ms, Ms)>,
}

/// One service at run time: the stateful ledger of a self-replicating (`recreate`) service,
/// availability bookkeeping for all.
pub struct ServiceRt {
    /// First global slot index; slots are contiguous.
    pub first_slot: u32,
    pub replicas: u64,
    pub stateful: bool,
    /// `recreate`: the database replicates itself; writes need a majority of members.
    pub self_replicating: bool,
    pub writes_every_nanos: u64,
    pub next_write: u64,
    /// Writes acknowledged (recreate services; others count per dataset).
    pub acked: u64,
    pub rejected: u64,
    pub rr: u64,
    pub available: bool,
    pub down_since: Option<Ms>,
    pub unavailable_ms: Ms,
    /// Unavailable spans, for the plot.
    pub outages: Vec<(Ms, Ms)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lazy_beats_match_beat_by_beat() {
        // Advancing straight to t gives the same last beat and period as advancing in small
        // steps: the lazy stream is the explicit one.
        let mut a = Beats::new(9, 3, 5_000, 500);
        let mut b = Beats::new(9, 3, 5_000, 500);
        a.advance(3_600_000, 5_000, 500);
        let mut t = 0;
        while t < 3_600_000 {
            t += 777;
            b.advance(t.min(3_600_000), 5_000, 500);
        }
        assert_eq!((a.last, a.period), (b.last, b.period));
        assert!(a.last <= 3_600_000 && 3_600_000 < a.last + a.period);
        assert!((4_500..=5_500).contains(&a.period));
    }

    #[test]
    fn nodes_get_different_phases() {
        let phases: Vec<Ms> = (0..8).map(|n| Beats::new(1, n, 5_000, 500).last).collect();
        assert!(phases.iter().all(|p| *p < 5_000));
        assert!(phases.windows(2).any(|w| w[0] != w[1]), "{phases:?}");
    }
}
