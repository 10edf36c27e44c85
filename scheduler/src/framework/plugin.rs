//! One small trait per extension point; a plugin implements only the ones it needs.

use crate::constraint::Constraint;
use crate::model::{Backend, FailoverMode, NodeId, Policy, Service};
use crate::snapshot::NodeInfo;

use super::{CycleState, Status};

/// Scores are normalised to `0..=MAX_NODE_SCORE`, kube-scheduler's scale.
pub const MAX_NODE_SCORE: u32 = 100;

pub trait Plugin: Send + Sync {
    fn name(&self) -> &'static str;
}

/// Where a stateful slot's dataset is now, resolved against the node list before the cycle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatasetHome {
    /// Not created yet: any node may become its primary.
    New,
    /// Its primary is up and not fenced: the slot must go there.
    Primary(u32),
    /// Its primary is down or fenced; what happens depends on the failover mode and backend.
    Lost { node: NodeId, why: &'static str },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotDataset {
    pub name: String,
    pub home: DatasetHome,
    pub backend: Backend,
    pub failover: FailoverMode,
    /// Standby copy's node for the `replicated` backend, preferred when the primary is lost.
    pub standby: Option<u32>,
}

/// One task to place, as the plugins see it. Everything is parsed and validated before the
/// cycle starts, so plugins never fail on bad input.
pub struct TaskSpec<'a> {
    pub service: &'a Service,
    /// Dense index of the service, for per-node task counts.
    pub service_idx: u32,
    pub policy: &'a Policy,
    pub constraints: &'a [Constraint],
    pub slot: Option<u64>,
    pub dataset: Option<&'a SlotDataset>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterKind {
    /// Depends only on the node and what every task of a service asks of it — its
    /// constraints, platforms, volume drivers and log driver, nothing else of the task:
    /// evaluated once per node for all services that ask the same (a static class).
    Static,
    /// Depends only on the node and the slot (its dataset): evaluated once per node per batch.
    Slot,
    /// Depends on what is placed; once it fails on a node it keeps failing as more tasks are
    /// added in the batch, so a failing node can be dropped for the rest of the batch.
    Monotone,
}

pub trait FilterPlugin: Plugin {
    fn kind(&self) -> FilterKind;

    /// Computes per-cycle state, returns `Status::SKIP` when the plugin does not apply, or an
    /// unschedulable status that rejects every node at once.
    fn pre_filter(&self, _cx: &mut CycleState, _task: &TaskSpec) -> Status {
        Status::SUCCESS
    }

    fn filter(&self, cx: &CycleState, task: &TaskSpec, node: &NodeInfo) -> Status;
}

pub trait ScorePlugin: Plugin {
    /// Raw score, higher is better. It reads only the node's own state, so a placement changes
    /// only that node's score (what keeps a batch O(T log N)).
    fn score(&self, task: &TaskSpec, node: &NodeInfo) -> i64;

    /// Maps a raw score onto `0..=MAX_NODE_SCORE` so plugins can be weighted together.
    fn normalize(&self, raw: i64) -> u32;

    /// What a raw score means in the terms a user chose the strategy by (task counts, the
    /// share of a node in use), for explanations: the raw number itself is an encoding.
    fn describe(&self, raw: i64) -> String;
}

/// One level of a spread tree: nodes are grouped by the value of `descriptor`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpreadLevel {
    /// `node.labels.<k>` or `engine.labels.<k>`.
    pub descriptor: String,
    /// `None`: soft, as Swarm's placement preferences (fill the emptiest branch first, overflow
    /// when it has no room). `Some(k)`: hard, never let a domain exceed the least loaded by
    /// more than `k`.
    pub max_skew: Option<u32>,
    /// The plugin that contributed the level, for explanations.
    pub plugin: &'static str,
}

pub trait SpreadPlugin: Plugin {
    fn levels(&self, task: &TaskSpec) -> Vec<SpreadLevel>;
}

pub trait ReservePlugin: Plugin {
    fn reserve(&self, task: &TaskSpec, node: &mut NodeInfo) -> Status;
    /// Undoes `reserve`; used when a later step of a plan fails. Idempotent.
    fn unreserve(&self, task: &TaskSpec, node: &mut NodeInfo);
}
