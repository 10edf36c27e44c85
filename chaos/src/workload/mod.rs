//! What runs in the slot during a chaos run, and how its writes are counted.
//!
//! A workload deploys one service per run — a Berth stateful template (one slot) or a plain
//! Swarm service — keeps the history of the writes a client outside the cluster had
//! acknowledged, and after the fault reads back what the copy the slot now runs on holds and
//! what every other copy it can find holds. The run ([`crate::run`]) owns the fault and the
//! clock; [`crate::verdict`] turns the evidence into the verdict. A workload never judges.
//!
//! [`writer::Writer`] (`berth-testapp writer`, Berth's own program) is the first; a database
//! workload implements the same trait with its own client.

pub mod db;
pub mod etcd;
pub mod postgres;
pub mod redis;
pub mod writer;

use std::time::Instant;

use anyhow::Result;
use serde::Serialize;

use crate::cluster::Cluster;
use crate::verdict::{Ack, Write};

/// Who runs the slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum System {
    /// A Berth stateful service: a template whose slot Berth places, fences and fails over.
    Berth,
    /// A plain Swarm service with a `local` volume, as Swarm users run one.
    Swarm,
}

impl std::fmt::Display for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            System::Berth => "berth",
            System::Swarm => "swarm",
        })
    }
}

/// Where a slot's data lives: under Berth its `berth.backend`; under plain Swarm the kind of
/// mount (a `local` volume, or a bind mount of the lab's GlusterFS volume).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// The lab's GlusterFS volume, replicated across the workers and mounted on every node
    /// (Berth: `berth.backend=shared`, the failover re-points it; Swarm: a bind mount of it).
    Shared,
    /// Berth's `replicated`: the primary's disk shipped to a standby node (`replicas=2`); a
    /// failover promotes the standby, losing at most its reported lag.
    Replicated,
    /// A node's own disk (Berth: `local`, as `recreate` members use; Swarm: a `local` volume).
    Local,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Shared => "shared",
            Backend::Replicated => "replicated",
            Backend::Local => "local",
        })
    }
}

impl Backend {
    /// The `volume-opt`s of a Berth volume on this backend, for `--mount`.
    pub fn volume_opts(self) -> String {
        match self {
            // Two copies: the primary's and one standby's, on another worker.
            Backend::Replicated => "volume-opt=backend=replicated,volume-opt=replicas=2".into(),
            b => format!("volume-opt=backend={b}"),
        }
    }

    /// Where a plain Swarm service's data lives on this backend, for `docker service create
    /// --mount`, and the report's description of it; `None` for a backend Swarm has no
    /// equivalent of. `shared` is a bind mount of the GlusterFS volume's directory `dir`
    /// (`{{.Task.Slot}}` in it gives each replica its own); `local` a named `local` volume.
    pub fn swarm_mount(self, name: &str, gluster_dir: &str) -> Option<(String, String)> {
        match self {
            Backend::Local => Some((
                format!("type=volume,source={name},target=/data"),
                "local volume".into(),
            )),
            Backend::Shared => Some((
                format!("type=bind,source={gluster_dir},target=/data"),
                "bind mount of the GlusterFS volume".into(),
            )),
            Backend::Replicated => None,
        }
    }
}

/// What one run deployed.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// The run's own name; its writes carry it, so runs never mix.
    pub id: String,
    /// The Swarm service whose task is the slot (under Berth, the slot service).
    pub service: String,
    /// What to remove afterwards (under Berth, the template: its slot goes with it).
    pub remove: String,
    /// Under Berth, the slot's volume (its epoch counts the fences).
    pub volume: Option<String>,
    /// Where the data lives, for the report ("berth shared", "local volume").
    pub storage: String,
    /// The backend the data is really on (a `recreate` database's members keep theirs on
    /// `local` whatever the run asked for).
    pub backend: Backend,
    /// When it was deployed: history before it belongs to other runs.
    pub since: Instant,
}

/// The acknowledged writes so far.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub acks: Vec<Ack>,
    /// Acknowledgements that could not be read; each fails the run.
    pub problems: Vec<String>,
    /// Acknowledgements cut off mid-way (a connection that ended inside a line): never
    /// complete, so not acknowledged; reported only.
    pub torn: usize,
}

/// What the copies hold after the fault.
#[derive(Debug, Clone)]
pub struct ReadBack {
    /// The keys in the copy the slot now runs on, or why it could not be read.
    pub surviving: Result<std::collections::BTreeSet<String>, String>,
    /// Every write of this run found on any copy.
    pub writes: Vec<Write>,
    /// Copies that could not be read; each fails the run.
    pub problems: Vec<String>,
    /// Records cut off mid-way in a copy (a writer killed mid-append); reported only.
    pub torn: usize,
}

pub trait Workload {
    /// Its name in `--workload` and in the report.
    fn name(&self) -> &'static str;
    /// Deploys one run's service under `system` (`backend` applies under Berth), named after
    /// `seed`; returns once Swarm accepted it (the run waits for its first writes).
    fn deploy(
        &self,
        c: &Cluster,
        system: System,
        backend: Backend,
        seed: u64,
    ) -> Result<Deployment>;
    /// Every write a client was told is durable since `d` was deployed.
    fn history(&self, d: &Deployment) -> History;
    /// Reads the copy the slot now runs on, and every copy of `d`'s data it can find.
    fn read_back(&self, c: &Cluster, d: &Deployment) -> ReadBack;
    /// The backend its data always lives on under Berth, whatever `--backend` says (a
    /// database that replicates itself keeps each member on its node's disk); `None`: the
    /// run's.
    fn own_backend(&self) -> Option<Backend> {
        None
    }
    /// Whether `d` is whole, so a fault tests what it promises (an etcd cluster whose every
    /// member has joined: acknowledgements alone may come from its founder alone).
    fn settled(&self, _c: &Cluster, _d: &Deployment) -> bool {
        true
    }
    /// Whether the service's acknowledging identity outlives the loss of the faulted task (a
    /// cluster whose majority serves on): then the slot serves again once that identity
    /// acknowledges after the fault and the service is whole again, not only when a new
    /// identity appears.
    fn outlives_a_member(&self) -> bool {
        false
    }
}

/// The workloads `--workload` takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// `berth-testapp writer`: appends numbered records, fsyncs, acknowledges each.
    Writer,
    /// PostgreSQL 15, one primary (`move`), written by the `postgres` crate.
    Postgres,
    /// Redis 7 with `appendfsync always`, one primary (`move`), written by the `redis` crate.
    Redis,
    /// etcd 3.4, three members on their own `local` volumes (`recreate`), written by `etcdctl`.
    Etcd,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Writer => "writer",
            Kind::Postgres => "postgres",
            Kind::Redis => "redis",
            Kind::Etcd => "etcd",
        })
    }
}

/// `docker service create`'s arguments every workload starts with: workers only, the host's
/// network (clients outside the cluster reach the task at its node's address), and the time
/// Swarm gives a stopped task before killing it.
pub(crate) fn worker_service_create(stop_grace: &str) -> Vec<String> {
    [
        "service",
        "create",
        "--detach",
        "--quiet",
        "--no-resolve-image",
        "--constraint",
        "node.role==worker",
        "--network",
        "host",
        "--stop-grace-period",
        stop_grace,
    ]
    .map(String::from)
    .to_vec()
}
