//! The scenario file as written: serde shapes of the TOML, with durations, sizes and rates as
//! text. Only `load` sees these; the simulator works on the resolved [`super::Scenario`].
//!
//! Every table denies unknown fields: a typo such as `recover_afer` must fail with its line,
//! not silently leave the node down forever.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use toml::Spanned;

use crate::clock::{self, Ms};

/// A value parsed from text by `parse`; a bad string becomes a serde error, which toml
/// reports with the value's line and column.
macro_rules! text_value {
    ($name:ident, $parse:path, $what:literal) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct $name(pub u64);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$name, E> {
                        $parse(v).map($name).map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}

text_value!(
    Dur,
    clock::parse_duration,
    "a duration string such as \"5s\""
);
text_value!(Size, clock::parse_size, "a size string such as \"2GiB\"");
text_value!(
    Rate,
    clock::parse_rate,
    "a bandwidth string such as \"100MiB/s\""
);

impl Dur {
    pub fn ms(self) -> Ms {
        self.0
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Simulated time of one run.
    pub duration: Dur,
    #[serde(default = "default_seed")]
    pub seed: u64,
    #[serde(default)]
    pub swarm: SwarmFile,
    #[serde(default)]
    pub berth: BerthFile,
    #[serde(default)]
    pub manual: ManualFile,
    #[serde(default)]
    pub nodes: Vec<NodeFile>,
    #[serde(default)]
    pub node_groups: Vec<GroupFile>,
    /// Nodes, services and (optionally) tasks from real `docker inspect` output.
    #[serde(default)]
    pub inspect: Option<InspectFile>,
    #[serde(default)]
    pub services: Vec<ServiceFile>,
    /// `[data.<service>]`: data facts for services that come from `[inspect]`.
    #[serde(default)]
    pub data: BTreeMap<String, DataFile>,
    #[serde(default)]
    pub faults: Vec<FaultFile>,
    #[serde(default)]
    pub random: Option<RandomFile>,
    #[serde(default)]
    pub bounds: BoundsFile,
    /// Rescheduling: `berth run --rebalance-auto`'s knobs, a forced update's instant, nodes
    /// that join.
    #[serde(default)]
    pub rebalance: Option<RebalanceFile>,
}

fn default_seed() -> u64 {
    1
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwarmFile {
    pub heartbeat: Option<Dur>,
    pub heartbeat_jitter: Option<Dur>,
    pub grace_multiplier: Option<u64>,
    pub leader_change_multiplier: Option<u64>,
    pub restart_delay: Option<Dur>,
    pub start_latency: Option<Dur>,
    pub stop_latency: Option<Dur>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BerthFile {
    pub heartbeat: Option<Dur>,
    pub misses: Option<u64>,
    pub lease: Option<Dur>,
    pub fence_lease: Option<Dur>,
    pub fence: Option<Dur>,
    pub attach: Option<Dur>,
    pub promote: Option<Dur>,
    pub move_bandwidth: Option<Rate>,
    pub incremental: Option<bool>,
    pub start_latency: Option<Dur>,
    pub stop_latency: Option<Dur>,
    pub plan: Option<Dur>,
    pub restart: Option<Dur>,
    /// `fuse` (default) or `direct`: how containers reach their volumes.
    pub data_path: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManualFile {
    pub operator_response: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    pub name: Spanned<String>,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub zone: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub cpus: Option<u32>,
    pub memory: Option<Size>,
}

/// `count` identical nodes named `{prefix}{index}` (zero-padded), zones assigned round-robin.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupFile {
    pub prefix: Spanned<String>,
    pub count: u32,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub zones: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub cpus: Option<u32>,
    pub memory: Option<Size>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceFile {
    pub name: Spanned<String>,
    #[serde(default = "one")]
    pub replicas: u64,
    #[serde(default)]
    pub constraints: Vec<String>,
    #[serde(default)]
    pub preferences: Vec<String>,
    /// The service's Docker labels, `berth.*` included, exactly as on `docker service create`.
    /// Spanned, so an error about one points at its line.
    #[serde(default)]
    pub labels: BTreeMap<String, Spanned<String>>,
    pub reserve_memory: Option<Size>,
    /// Simulator-only facts about a stateful service's data and clients.
    #[serde(default)]
    pub data: Option<DataFile>,
}

fn one() -> u64 {
    1
}

/// Paths relative to the scenario file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InspectFile {
    /// `docker node inspect $(docker node ls -q)`.
    pub nodes: Spanned<String>,
    /// `docker service inspect $(docker service ls -q)`.
    pub services: Spanned<String>,
    /// The Engine API's `GET /tasks`: start from the real placement instead of the engine's.
    pub tasks: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataFile {
    pub size: Option<Size>,
    pub writes_per_sec: Option<u64>,
    pub write_bytes: Option<Size>,
    pub replication_lag: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultFile {
    pub at: Dur,
    pub kind: Spanned<String>,
    pub node: Option<Spanned<String>>,
    #[serde(default)]
    pub nodes: Vec<Spanned<String>>,
    pub zone: Option<Spanned<String>>,
    /// crash, zone-loss: when the node boots again (absent: never).
    pub recover_after: Option<Dur>,
    /// agent-crash: when the agent is started again (absent: never).
    pub restart_after: Option<Dur>,
    /// partition, slow-disk, quorum-loss, scheduler-restart, drain, agent-pause, node-freeze,
    /// control-loss: how long it lasts.
    pub duration: Option<Dur>,
    /// partition: whether the cut-off node still reaches its storage (default true).
    pub storage: Option<bool>,
    /// slow-disk: how many times slower starts and copies get.
    pub factor: Option<u32>,
    /// flap: down time and up time of each cycle, and the number of cycles.
    pub down: Option<Dur>,
    pub up: Option<Dur>,
    pub count: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomFile {
    /// Mean time between random faults.
    pub every: Dur,
    pub kinds: Vec<Spanned<String>>,
    /// No random fault before this (the cluster settles first).
    pub start_after: Option<Dur>,
    /// Recovery time range of each random fault.
    pub recover_min: Option<Dur>,
    pub recover_max: Option<Dur>,
    /// `workers` (default) or `all`.
    pub targets: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoundsFile {
    pub berth_max_unavailable_p99: Option<Dur>,
    pub berth_max_lost_writes: Option<u64>,
    pub berth_max_double_writer_windows: Option<u64>,
    #[serde(default)]
    pub lost_writes: LostWritesFile,
}

/// `[bounds] lost_writes.shared = 0`, `lost_writes.replicated = "lag"`, …
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LostWritesFile {
    pub shared: Option<LostBoundFile>,
    pub replicated: Option<LostBoundFile>,
    pub local: Option<LostBoundFile>,
    pub recreate: Option<LostBoundFile>,
}

impl From<LostWritesFile> for super::LostWritesBounds {
    fn from(f: LostWritesFile) -> Self {
        let b = |v: Option<LostBoundFile>| v.map(|v| v.0);
        super::LostWritesBounds {
            shared: b(f.shared),
            replicated: b(f.replicated),
            local: b(f.local),
            recreate: b(f.recreate),
        }
    }
}

/// A number of writes, or the word `lag`.
#[derive(Debug)]
pub struct LostBoundFile(pub super::LostBound);

impl<'de> Deserialize<'de> for LostBoundFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = LostBoundFile;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a number of writes, or \"lag\" (at most the standby's lag per failover)",
                )
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(|v| LostBoundFile(super::LostBound::Max(v)))
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                if v == "lag" {
                    Ok(LostBoundFile(super::LostBound::Lag))
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(v), &self))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `[rebalance]` (resolved by `super::rebalance`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RebalanceFile {
    /// `--rebalance-quiet`: how long the cluster must be quiet before a run (default 10m).
    pub quiet: Option<Dur>,
    /// `--rebalance-max-moves` (default 2).
    pub max_moves: Option<u32>,
    /// `--rebalance-max-in-flight` (default 1).
    pub max_in_flight: Option<u32>,
    /// `--rebalance-margin` (default 2).
    pub margin: Option<u32>,
    /// How often `berth run`'s controller passes over the swarm (`--resync`, default 10s).
    pub resync: Option<Dur>,
    /// `swarm-force`: when the operator runs `docker service update --force` on every service.
    pub force_at: Dur,
    /// How often the balance measures are sampled (default 10s).
    pub sample: Option<Dur>,
    #[serde(default)]
    pub join: Vec<JoinFile>,
}

/// Nodes that join the swarm at `at`: before it they run nothing and take nothing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinFile {
    pub at: Dur,
    pub nodes: Vec<Spanned<String>>,
}
