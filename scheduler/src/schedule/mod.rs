//! Placing every missing task of a cluster: the entry point the CLI, the daemon, the failover
//! planner and the simulator share.
//!
//! Order of work: tasks that already run on a usable node stay where they are (Swarm never
//! moves a running task) and are booked first; then services are planned in dependency order
//! (`berth.depends-on`, then by name), a replicated service's missing slots as one batch, a
//! stateful service slot by slot (each slot has its own dataset), a global service node by
//! node.

pub(crate) mod batch;
pub mod index;
mod prepare;
pub mod run;
mod swarm_fill;
mod verdict;

use serde::Serialize;

pub use index::{Index, PlanError};
pub use prepare::Prepared;
pub use run::{Kept, ServicePlan, slot_dataset, task_spec};
pub use verdict::{Key, Reasons};

use crate::framework::{MAX_SCORERS, Profile};
use crate::model::{Cluster, NodeId, Strategy};
use crate::snapshot::Snapshot;

/// The winning scores of a placement, as ranked: `raw[i]` is the profile's i-th score plugin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ScoreCard {
    pub strategy: Strategy,
    pub total: u64,
    pub raw: [i64; MAX_SCORERS],
}

/// One score plugin's part in a node's rank. Serialised for people and scripts as the plugin,
/// its 0–100 score and what that score stands for; the raw number (an encoding that only
/// orders nodes) and the fixed weight stay inside.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PluginScore {
    pub plugin: &'static str,
    #[serde(skip)]
    pub weight: u32,
    #[serde(skip)]
    pub raw: i64,
    #[serde(rename = "score")]
    pub normalized: u32,
    /// The score in the terms of the strategy the user chose (`1 task of this service here,
    /// 4 tasks in all`).
    pub detail: String,
}

impl ScoreCard {
    pub(crate) fn from_key(strategy: Strategy, k: &Key) -> Self {
        ScoreCard {
            strategy,
            total: k.total,
            raw: k.raw,
        }
    }

    /// Each score plugin's contribution, for explanations.
    pub fn breakdown(&self) -> Vec<PluginScore> {
        Profile::of(self.strategy)
            .scorers
            .iter()
            .zip(self.raw)
            .map(|((p, w), raw)| PluginScore {
                plugin: p.name(),
                weight: *w,
                raw,
                normalized: p.normalize(raw),
                detail: p.describe(raw),
            })
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub service: String,
    /// `None` for a global service's task.
    pub slot: Option<u64>,
    pub node: NodeId,
    /// False for a task that already runs there and stays.
    pub new: bool,
    /// Set for new placements.
    pub score: Option<ScoreCard>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    pub service: String,
    pub slot: Option<u64>,
    /// For a global service: the node its task is meant for.
    pub node: Option<NodeId>,
    /// Nodes considered (the denominator of "0/N nodes available").
    pub nodes: u32,
    /// Reasons with their node counts, most frequent first, then by wording.
    pub reasons: Vec<(String, u32)>,
    pub unresolvable: bool,
}

impl Pending {
    pub(crate) fn new(
        service: &str,
        slot: Option<u64>,
        node: Option<NodeId>,
        nodes: u32,
        r: Reasons,
    ) -> Self {
        let mut reasons: Vec<(String, u32)> = r
            .counts
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Pending {
            service: service.to_string(),
            slot,
            node,
            nodes,
            reasons,
            unresolvable: r.unresolvable,
        }
    }

    /// kube-scheduler's wording: `0/5 nodes available: 3 insufficient memory, 2 node down`.
    pub fn message(&self) -> String {
        let parts: Vec<String> = self
            .reasons
            .iter()
            .map(|(r, n)| format!("{n} {r}"))
            .collect();
        format!("0/{} nodes available: {}", self.nodes, parts.join(", "))
    }
}

/// What happens to a stateful slot's dataset under this plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "action")]
pub enum DatasetAction {
    /// First placement: create it on the node.
    Create,
    /// The slot restarts where its data is.
    Keep,
    /// Fence the lost primary and attach the shared storage on the new node.
    Move { from: NodeId },
    /// Fence the lost primary and promote the standby copy.
    Promote { from: NodeId },
    /// Fence the lost primary; a fresh member resyncs from its peers.
    Recreate { lost: NodeId },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DatasetChange {
    pub dataset: String,
    pub service: String,
    pub slot: u64,
    pub node: NodeId,
    /// The epoch the dataset has once the change is made (fencing token).
    pub epoch: u64,
    #[serde(flatten)]
    pub action: DatasetAction,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub nodes: u32,
    /// Every task's node, kept and new, by service name then slot then node.
    pub placements: Vec<Placement>,
    pub pending: Vec<Pending>,
    pub datasets: Vec<DatasetChange>,
}

impl Plan {
    pub fn new_placements(&self) -> impl Iterator<Item = &Placement> {
        self.placements.iter().filter(|p| p.new)
    }

    pub fn all_placed(&self) -> bool {
        self.pending.is_empty()
    }
}

/// Plans a whole cluster. The input is read where it is, never copied.
pub fn plan(cluster: &Cluster) -> Result<Plan, PlanError> {
    let ix = Index::new(cluster)?;
    Ok(run_indexed(cluster, &ix, None).0)
}

/// Runs the plan on an indexed cluster; with `stop_before = Some(s)`, stops when service `s`'s
/// turn comes (with every kept task booked) and returns the snapshot as that service would
/// see it, for `explain`.
pub fn run_indexed<'c>(
    cluster: &'c Cluster,
    ix: &Index,
    stop_before: Option<usize>,
) -> (Plan, Snapshot<'c>) {
    let mut snap = Snapshot::new(ix.node_refs(cluster));
    let kept = Kept::new(cluster, ix);
    run::book(cluster, ix, &kept, &mut snap);
    let mut plans = vec![ServicePlan::default(); ix.services.len()];
    for &s in &ix.order.sequence {
        if stop_before == Some(s) {
            break;
        }
        plans[s] = run::place_service(cluster, ix, &kept, &mut snap, s);
    }
    (run::emit(cluster, ix, &kept, &plans), snap)
}

/// [`run_indexed`] on a [`Prepared`] cluster.
pub fn run<'a>(prep: &'a Prepared, stop_before: Option<usize>) -> (Plan, Snapshot<'a>) {
    run_indexed(&prep.cluster, &prep.index, stop_before)
}

#[cfg(test)]
mod tests;
