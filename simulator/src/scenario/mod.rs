//! A scenario: the cluster, the timings of Swarm, Berth and the operator, the client workload,
//! the faults and the CI bounds — loaded from TOML (see `simulator/scenarios/*.toml`, each
//! feature commented there) and resolved into the shapes the simulator uses.
//!
//! Errors name the file, the line, the column and the field: `zone-loss.toml:41:8: field
//! `node`: unknown node `w9``.

mod file;
mod load;
mod rebalance;

use std::collections::BTreeMap;

use berth_scheduler::model::{Cluster, Policy};
use serde::Serialize;

pub use load::{ScenarioError, load, load_faults, parse, parse_faults};
pub use rebalance::Rescheduling;

use crate::clock::Ms;
use crate::faults::{Fault, RandomFaults};

/// Swarm's own timings (defaults are SwarmKit's, see the reference notes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SwarmTiming {
    pub heartbeat: Ms,
    pub heartbeat_jitter: Ms,
    pub grace_multiplier: u64,
    /// Nodes not seen since a leader change get this many times the usual grace.
    pub leader_change_multiplier: u64,
    pub restart_delay: Ms,
    pub start_latency: Ms,
    pub stop_latency: Ms,
}

/// Berth's timings: its own detection, fencing and data handoff.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BerthTiming {
    pub heartbeat: Ms,
    pub misses: u64,
    /// A holder that has not reached the managers for this long stops accepting writes. Must
    /// be shorter than detection (`heartbeat × misses`), or a cut-off holder may still write
    /// after its dataset moved — which the checker then reports.
    pub lease: Ms,
    /// The control service refuses to fence a volume away from a node until this long after
    /// the node's last contact (berth-volume's node lease, `control --lease`); 0: it fences at
    /// once (the model before leases were granted by heartbeats).
    pub fence_lease: Ms,
    pub fence: Ms,
    /// Re-pointing shared storage to a new node.
    pub attach: Ms,
    pub promote: Ms,
    pub move_bandwidth: u64,
    /// Copy the bulk while the task still runs, and only the delta after it stops.
    pub incremental: bool,
    pub start_latency: Ms,
    pub stop_latency: Ms,
    /// Time to compute a plan.
    pub plan: Ms,
    /// How long the scheduler is away in a `scheduler-restart` fault unless the fault says.
    pub restart: Ms,
    /// How Berth's containers reach their volumes (`berth-volume agent --data-path`).
    pub data_path: DataPath,
}

/// How a container reaches its volume: what decides whether a write of a node whose agent is
/// dead, paused or frozen, or whose lease ended, gets through (ARCHITECTURE.md, "Fencing").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataPath {
    /// Served by the node's agent (FUSE): a write passes only while the agent runs and its
    /// gate admits it (`berth_control_model::gate::MountGate::check`, on the agent's lease kept
    /// by `berth_control_model::lease::Keeper`).
    Fuse,
    /// The container writes the copy itself; only a running agent stops it, when its lease
    /// has ended (`berth.lease` after losing contact, the agent's watchdog before the data
    /// path) or its mount's claim is refused. A dead or paused agent stops nothing.
    Direct,
}

impl DataPath {
    pub fn parse(s: &str) -> Option<DataPath> {
        match s {
            "fuse" => Some(DataPath::Fuse),
            "direct" => Some(DataPath::Direct),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DataPath::Fuse => "fuse",
            DataPath::Direct => "direct",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ManualTiming {
    /// From the node being marked down to a human acting (paged, logged in, decided).
    pub operator_response: Ms,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeSpec {
    /// What people call it (the hostname for nodes from `docker node inspect`).
    pub name: String,
    /// The engine's node ID (Swarm's ID from `docker inspect`; the name otherwise).
    pub id: String,
    pub manager: bool,
    pub zone: String,
}

/// The simulator's facts about a stateful service's data and its clients.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DataSpec {
    pub size_bytes: u64,
    pub writes_per_sec: u64,
    pub write_bytes: u64,
    /// `replicated`: how far the standby copy trails the primary.
    pub replication_lag: Ms,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServiceSpec {
    pub name: String,
    pub replicas: u64,
    /// Parsed `berth.*` labels (the engine's own parser).
    #[serde(skip)]
    pub policy: Policy,
    pub data: DataSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Bounds {
    pub berth_max_unavailable_p99: Option<Ms>,
    pub berth_max_lost_writes: Option<u64>,
    pub berth_max_double_writer_windows: Option<u64>,
    /// `lost_writes.<kind>`: what each kind of data may lose in one run under Berth.
    pub lost_writes: LostWritesBounds,
}

/// A bound on one kind of data's lost acknowledged writes in a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LostBound {
    Max(u64),
    /// `"lag"`: at most the standby's lag at each failover, i.e. per fence of a dataset the
    /// writes its service acknowledges in `replication_lag` (0 without a standby).
    Lag,
}

/// Per kind of data, as the guarantees are stated: the backends for `move` (`shared`,
/// `replicated`, `local`), and `recreate` for databases that replicate themselves.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LostWritesBounds {
    pub shared: Option<LostBound>,
    pub replicated: Option<LostBound>,
    pub local: Option<LostBound>,
    pub recreate: Option<LostBound>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Scenario {
    /// The file it came from, for messages and reproduce commands.
    pub path: String,
    pub name: String,
    pub description: String,
    pub duration: Ms,
    pub seed: u64,
    pub swarm: SwarmTiming,
    pub berth: BerthTiming,
    pub manual: ManualTiming,
    /// Sorted by engine ID (the name, unless from `docker inspect`): a node's index is its
    /// position here and in `cluster.nodes`.
    pub nodes: Vec<NodeSpec>,
    /// Sorted by name.
    pub services: Vec<ServiceSpec>,
    pub faults: Vec<Fault>,
    pub random: Option<RandomFaults>,
    pub bounds: Bounds,
    /// The engine's model of the cluster (nodes and services, no tasks yet).
    #[serde(skip)]
    pub cluster: Cluster,
    #[serde(skip)]
    pub zones: BTreeMap<String, Vec<u32>>,
    /// Things loaded but not simulated (e.g. global services from `docker inspect`).
    pub notes: Vec<String>,
    /// `[rebalance]`: run under the rescheduling policies.
    pub rebalance: Option<Rescheduling>,
}

impl Scenario {
    pub fn node_names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    pub fn node_ids(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.id.clone()).collect()
    }

    /// The fault schedule of a run: the scheduled faults plus the random ones of this seed.
    pub fn schedule(&self, seed: u64) -> Vec<Fault> {
        let mut all = self.faults.clone();
        if let Some(r) = &self.random {
            all.extend(r.draw(seed, self.duration));
        }
        all.sort_by_key(|f| f.at);
        all
    }
}
