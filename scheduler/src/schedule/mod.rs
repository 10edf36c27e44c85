//! Placing every missing task of a cluster: the entry point the CLI, the daemon, the failover
//! planner and the simulator share.
//!
//! Order of work: tasks that already run on a usable node stay where they are (Swarm never
//! moves a running task) and are booked first; then services are planned in dependency order
//! (`berth.depends-on`, then by name), a replicated service's missing slots as one batch, a
//! stateful service slot by slot (each slot has its own dataset), a global service node by
//! node.

pub(crate) mod batch;
mod prepare;
mod swarm_fill;

use std::collections::BTreeSet;

use serde::Serialize;

pub use batch::{Key, Reasons};
pub use prepare::{PlanError, Prepared};

use crate::framework::{DatasetHome, MAX_SCORERS, Profile, SlotDataset, TaskSpec};
use crate::model::{
    Availability, Backend, Cluster, FailoverMode, Mode, NodeId, NodeState, Strategy,
};
use crate::plugins::platform::platform_matches;
use crate::snapshot::Snapshot;

/// The winning scores of a placement, as ranked: `raw[i]` is the profile's i-th score plugin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScoreCard {
    pub strategy: Strategy,
    pub total: u64,
    pub raw: [i64; MAX_SCORERS],
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PluginScore {
    pub plugin: &'static str,
    pub weight: u32,
    pub raw: i64,
    pub normalized: u32,
}

impl ScoreCard {
    fn from_key(strategy: Strategy, k: &Key) -> Self {
        ScoreCard {
            strategy,
            total: k.total,
            raw: k.raw,
        }
    }

    /// Each score plugin's contribution, for explanations.
    pub fn breakdown(&self) -> Vec<PluginScore> {
        Profile::for_strategy(self.strategy)
            .scorers
            .iter()
            .zip(self.raw)
            .map(|((p, w), raw)| PluginScore {
                plugin: p.name(),
                weight: *w,
                raw,
                normalized: p.normalize(raw),
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
    fn new(service: &str, slot: Option<u64>, node: Option<NodeId>, nodes: u32, r: Reasons) -> Self {
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

/// Plans a whole cluster.
pub fn plan(cluster: &Cluster) -> Result<Plan, PlanError> {
    let prep = Prepared::new(cluster)?;
    Ok(run(&prep, None).0)
}

/// Whether a task that runs on this node keeps running there: Swarm moves tasks off down and
/// drained nodes, and leaves them on paused ones.
fn keeps_tasks(state: NodeState, availability: Availability) -> bool {
    state == NodeState::Ready && availability != Availability::Drain
}

/// Runs the plan; with `stop_before = Some(i)`, stops when service `i`'s turn comes (with its
/// kept tasks booked) and returns the snapshot as that service would see it, for `explain`.
pub fn run<'a>(prep: &'a Prepared, stop_before: Option<usize>) -> (Plan, Snapshot<'a>) {
    let cluster = &prep.cluster;
    let mut snap = Snapshot::new(&cluster.nodes);
    let mut plan = Plan {
        nodes: cluster.nodes.len() as u32,
        ..Plan::default()
    };

    // Book what already runs and stays.
    let mut kept_slots: Vec<BTreeSet<u64>> = vec![BTreeSet::new(); cluster.services.len()];
    let mut kept_nodes: Vec<BTreeSet<u32>> = vec![BTreeSet::new(); cluster.services.len()];
    for t in &cluster.tasks {
        if !t.is_active() {
            continue;
        }
        let (Some(&si), Some(node_id)) = (prep.service_by_id.get(&t.service_id), &t.node_id) else {
            continue;
        };
        let Some(ni) = snap.index_of(node_id) else {
            continue;
        };
        let node = &cluster.nodes[ni as usize];
        if !keeps_tasks(node.state, node.availability) {
            continue;
        }
        let service = &cluster.services[si];
        let policy = &prep.policies[si];
        match (service.mode, t.slot) {
            (Mode::Replicated { replicas }, Some(slot)) => {
                if slot == 0 || slot > replicas || kept_slots[si].contains(&slot) {
                    continue;
                }
                if let Some(st) = &policy.stateful {
                    // A task running away from its dataset's primary is fenced out by the
                    // driver: it is not a replica to keep.
                    let ds = prep.datasets.get(&st.volume_for_slot(slot));
                    if ds
                        .and_then(|d| d.primary.as_ref())
                        .is_some_and(|p| p != node_id)
                    {
                        continue;
                    }
                }
                kept_slots[si].insert(slot);
            }
            (Mode::Global, _) => {
                if !kept_nodes[si].insert(ni) {
                    continue;
                }
            }
            _ => continue,
        }
        let spec = TaskSpec {
            service,
            service_idx: si as u32,
            policy,
            constraints: &prep.constraints[si],
            slot: t.slot,
            dataset: None,
        };
        let info = &mut snap.nodes[ni as usize];
        info.add_task(si as u32);
        for r in &prep.profiles[&policy.strategy].reserves {
            r.reserve(&spec, info);
        }
        plan.placements.push(Placement {
            service: service.name.clone(),
            slot: if matches!(service.mode, Mode::Global) {
                None
            } else {
                t.slot
            },
            node: node_id.clone(),
            new: false,
            score: None,
        });
    }

    for &si in &prep.order.sequence {
        if stop_before == Some(si) {
            break;
        }
        let service = &cluster.services[si];
        let policy = &prep.policies[si];
        let profile = &prep.profiles[&policy.strategy];
        match service.mode {
            Mode::Replicated { replicas } => {
                let missing: Vec<u64> = (1..=replicas)
                    .filter(|s| !kept_slots[si].contains(s))
                    .collect();
                if missing.is_empty() {
                    continue;
                }
                if let Some(st) = &policy.stateful {
                    for slot in missing {
                        let ds = slot_dataset(
                            prep,
                            &snap,
                            &st.volume_for_slot(slot),
                            st.failover,
                            st.backend,
                        );
                        let out = batch::place(
                            profile,
                            &mut snap,
                            &task_spec(prep, si, Some(slot), Some(&ds)),
                            1,
                        );
                        if let Some(k) = out.placed.first() {
                            let node = cluster.nodes[k.node() as usize].id.clone();
                            plan.datasets.push(dataset_change(
                                prep,
                                &ds,
                                &service.name,
                                slot,
                                &node,
                            ));
                            plan.placements.push(new_placement(
                                &service.name,
                                Some(slot),
                                node,
                                policy.strategy,
                                k,
                            ));
                        }
                        if let Some(r) = out.pending {
                            plan.pending.push(Pending::new(
                                &service.name,
                                Some(slot),
                                None,
                                plan.nodes,
                                r,
                            ));
                        }
                    }
                } else {
                    let out = batch::place(
                        profile,
                        &mut snap,
                        &task_spec(prep, si, None, None),
                        missing.len(),
                    );
                    let placed = out.placed.len();
                    for (slot, k) in missing.iter().zip(&out.placed) {
                        let node = cluster.nodes[k.node() as usize].id.clone();
                        plan.placements.push(new_placement(
                            &service.name,
                            Some(*slot),
                            node,
                            policy.strategy,
                            k,
                        ));
                    }
                    if let Some(r) = out.pending {
                        for slot in &missing[placed..] {
                            plan.pending.push(Pending::new(
                                &service.name,
                                Some(*slot),
                                None,
                                plan.nodes,
                                r.clone(),
                            ));
                        }
                    }
                }
            }
            Mode::Global => {
                let task = task_spec(prep, si, None, None);
                for ni in 0..cluster.nodes.len() as u32 {
                    let node = &cluster.nodes[ni as usize];
                    // Swarm's global orchestrator only makes tasks for nodes that take tasks,
                    // match the constraints and the platform; the rest get none, not a pending one.
                    let member = node.accepts_tasks()
                        && crate::constraint::node_matches(&prep.constraints[si], node)
                        && (service.placement.platforms.is_empty()
                            || service
                                .placement
                                .platforms
                                .iter()
                                .any(|p| platform_matches(p, &node.platform)));
                    if !member || kept_nodes[si].contains(&ni) {
                        continue;
                    }
                    match batch::place_on(profile, &mut snap, &task, ni) {
                        Ok(k) => plan.placements.push(new_placement(
                            &service.name,
                            None,
                            node.id.clone(),
                            policy.strategy,
                            &k,
                        )),
                        Err((reason, unresolvable)) => {
                            let r = Reasons {
                                counts: [(reason, 1)].into_iter().collect(),
                                unresolvable,
                            };
                            plan.pending.push(Pending::new(
                                &service.name,
                                None,
                                Some(node.id.clone()),
                                1,
                                r,
                            ));
                        }
                    }
                }
            }
        }
    }

    plan.placements
        .sort_by(|a, b| (&a.service, a.slot, &a.node).cmp(&(&b.service, b.slot, &b.node)));
    plan.pending
        .sort_by(|a, b| (&a.service, a.slot, &a.node).cmp(&(&b.service, b.slot, &b.node)));
    plan.datasets.sort_by(|a, b| a.dataset.cmp(&b.dataset));
    (plan, snap)
}

fn new_placement(
    service: &str,
    slot: Option<u64>,
    node: NodeId,
    strategy: Strategy,
    k: &Key,
) -> Placement {
    Placement {
        service: service.to_string(),
        slot,
        node,
        new: true,
        score: Some(ScoreCard::from_key(strategy, k)),
    }
}

/// Where a slot's dataset is, against the current node states.
pub fn slot_dataset(
    prep: &Prepared,
    snap: &Snapshot,
    name: &str,
    failover: FailoverMode,
    backend: Backend,
) -> SlotDataset {
    let ds = prep.datasets.get(name);
    let usable = |id: &NodeId| {
        snap.index_of(id)
            .filter(|i| prep.cluster.nodes[*i as usize].can_hold_data())
    };
    let home = match ds.and_then(|d| d.primary.as_ref()) {
        None => DatasetHome::New,
        Some(p) => match usable(p) {
            Some(i) => DatasetHome::Primary(i),
            None => {
                let node = prep.cluster.node(p);
                let why = match node {
                    Some(n) if n.is_fenced() => "fenced",
                    Some(n) => n.state.as_str(),
                    None => "unknown",
                };
                DatasetHome::Lost {
                    node: p.clone(),
                    why,
                }
            }
        },
    };
    SlotDataset {
        name: name.to_string(),
        home,
        backend: ds.map(|d| d.backend).unwrap_or(backend),
        failover,
        standby: ds.and_then(|d| d.standby.as_ref()).and_then(usable),
    }
}

fn dataset_change(
    prep: &Prepared,
    ds: &SlotDataset,
    service: &str,
    slot: u64,
    node: &NodeId,
) -> DatasetChange {
    let epoch = prep.datasets.get(&ds.name).map(|d| d.epoch).unwrap_or(0);
    let (action, epoch) = match &ds.home {
        DatasetHome::New => (DatasetAction::Create, epoch + 1),
        DatasetHome::Primary(_) => (DatasetAction::Keep, epoch.max(1)),
        DatasetHome::Lost { node: lost, .. } => match (ds.failover, ds.backend) {
            (FailoverMode::Move, Backend::Replicated) => {
                (DatasetAction::Promote { from: lost.clone() }, epoch + 1)
            }
            (FailoverMode::Move, _) => (DatasetAction::Move { from: lost.clone() }, epoch + 1),
            _ => (DatasetAction::Recreate { lost: lost.clone() }, epoch + 1),
        },
    };
    DatasetChange {
        dataset: ds.name.clone(),
        service: service.to_string(),
        slot,
        node: node.clone(),
        epoch,
        action,
    }
}

pub(crate) fn task_spec<'a>(
    prep: &'a Prepared,
    si: usize,
    slot: Option<u64>,
    dataset: Option<&'a SlotDataset>,
) -> TaskSpec<'a> {
    TaskSpec {
        service: &prep.cluster.services[si],
        service_idx: si as u32,
        policy: &prep.policies[si],
        constraints: &prep.constraints[si],
        slot,
        dataset,
    }
}

#[cfg(test)]
mod tests;
