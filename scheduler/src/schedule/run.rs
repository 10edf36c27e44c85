//! A plan in three phases, each reusable on its own by the incremental planner
//! ([`crate::replan`]):
//!
//! 1. [`Kept`]: which running tasks stay — per replicated slot the one task that keeps it, per
//!    global service the nodes it keeps running on;
//! 2. booking: the kept tasks counted on their nodes ([`book`]);
//! 3. [`place_service`], for each service in dependency order: its missing slots (or member
//!    nodes) placed on the snapshot as it stands after the services before it.
//!
//! [`emit`] turns the result into a [`Plan`], already in its sorted order (service name, slot,
//! node), so no string is compared to sort it.

use crate::framework::{DatasetHome, SlotDataset, TaskSpec};
use crate::model::{Availability, Backend, Cluster, FailoverMode, Mode, NodeId, NodeState, Task};
use crate::plugins::platform::platform_matches;
use crate::snapshot::{NodeInfo, Snapshot};

use super::batch;
use super::index::Index;
use super::verdict::{Key, Reasons};
use super::{DatasetAction, DatasetChange, Pending, Placement, Plan, ScoreCard};

/// Whether a task that runs on this node keeps running there: Swarm moves tasks off down and
/// drained nodes, and leaves them on paused ones.
pub fn keeps_tasks(state: NodeState, availability: Availability) -> bool {
    state == NodeState::Ready && availability != Availability::Drain
}

/// A task's claim on what it runs in, if it runs and stays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Replicated: (service, slot).
    Slot(u32, u64),
    /// Global: (service, node).
    Node(u32, u32),
}

/// What the task at position `k` keeps, if anything: it is active, on a node that keeps
/// tasks, in a slot the service still has, and (stateful) on its dataset's primary.
pub fn claim(cluster: &Cluster, ix: &Index, k: usize) -> Option<Claim> {
    let t = &cluster.tasks[k];
    if !t.is_active() {
        return None;
    }
    let s = ix.task_service[k];
    let ni = ix.task_node[k]?;
    let node = ix.node(cluster, ni);
    if !keeps_tasks(node.state, node.availability) {
        return None;
    }
    let service = ix.service(cluster, s as usize);
    match (service.mode, t.slot) {
        (Mode::Replicated { replicas }, Some(slot)) => {
            if slot == 0 || slot > replicas {
                return None;
            }
            if let Some(st) = &ix.policies[s as usize].stateful {
                // A task running away from its dataset's primary is fenced out by the
                // driver: it is not a replica to keep.
                let ds = ix.datasets.get(&st.volume_for_slot(slot));
                if ds
                    .and_then(|d| d.primary.as_ref())
                    .is_some_and(|p| p != &node.id)
                {
                    return None;
                }
            }
            Some(Claim::Slot(s, slot))
        }
        (Mode::Global, _) => Some(Claim::Node(s, ni)),
        _ => None,
    }
}

/// Of two tasks claiming one slot, the one that keeps it: the first in the sorted input's
/// order (by node ID, then task ID).
pub fn wins(a: &Task, b: &Task) -> bool {
    (&a.node_id, &a.id) < (&b.node_id, &b.id)
}

/// The tasks that stay.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kept {
    /// Per dense service, replicated: slot `k` (1-based) at index `k - 1`, the position of the
    /// task that keeps it.
    pub slots: Vec<Vec<Option<u32>>>,
    /// Per dense service, global: per dense node, whether one of its tasks stays there.
    pub nodes: Vec<Vec<bool>>,
    /// Per dense service: how many slots or nodes are kept.
    pub count: Vec<u64>,
}

impl Kept {
    pub fn new(cluster: &Cluster, ix: &Index) -> Kept {
        let n = ix.nodes.len();
        let mut kept = Kept::default();
        for s in 0..ix.services.len() {
            match ix.service(cluster, s).mode {
                Mode::Replicated { replicas } => {
                    kept.slots.push(vec![None; replicas as usize]);
                    kept.nodes.push(Vec::new());
                }
                Mode::Global => {
                    kept.slots.push(Vec::new());
                    kept.nodes.push(vec![false; n]);
                }
            }
            kept.count.push(0);
        }
        for k in 0..cluster.tasks.len() {
            if let Some(c) = claim(cluster, ix, k) {
                kept.offer(cluster, c, k as u32);
            }
        }
        kept
    }

    /// Offers task `k` for what it claims; true if it now keeps it.
    pub fn offer(&mut self, cluster: &Cluster, c: Claim, k: u32) -> bool {
        match c {
            Claim::Slot(s, slot) => {
                let cell = &mut self.slots[s as usize][slot as usize - 1];
                match *cell {
                    None => {
                        *cell = Some(k);
                        self.count[s as usize] += 1;
                        true
                    }
                    Some(cur) if wins(&cluster.tasks[k as usize], &cluster.tasks[cur as usize]) => {
                        *cell = Some(k);
                        true
                    }
                    Some(_) => false,
                }
            }
            Claim::Node(s, ni) => {
                let cell = &mut self.nodes[s as usize][ni as usize];
                if *cell {
                    return false;
                }
                *cell = true;
                self.count[s as usize] += 1;
                true
            }
        }
    }

    /// The node a replicated slot's kept task runs on.
    pub fn slot_node(&self, ix: &Index, s: usize, slot: u64) -> Option<u32> {
        let k = self.slots[s].get(slot as usize - 1).copied().flatten()?;
        ix.task_node[k as usize]
    }
}

/// Counts every kept task on its node, with its reservations and ports.
pub fn book(cluster: &Cluster, ix: &Index, kept: &Kept, snap: &mut Snapshot) {
    for s in 0..ix.services.len() {
        for slot in 1..=kept.slots[s].len() as u64 {
            if let Some(ni) = kept.slot_node(ix, s, slot) {
                add(cluster, ix, snap, s, Some(slot), ni);
            }
        }
        for (ni, &on) in kept.nodes[s].iter().enumerate() {
            if on {
                add(cluster, ix, snap, s, None, ni as u32);
            }
        }
    }
}

fn add(cluster: &Cluster, ix: &Index, snap: &mut Snapshot, s: usize, slot: Option<u64>, ni: u32) {
    let policy = &ix.policies[s];
    let spec = task_spec(cluster, ix, s, slot, None);
    let info = &mut snap.nodes[ni as usize];
    info.add_task(s as u32);
    for r in &ix.profiles[&policy.strategy].reserves {
        r.reserve(&spec, info);
    }
}

/// Takes back a placement made by [`place_service`] off its node (the incremental planner's
/// undo).
pub fn unplace(cluster: &Cluster, ix: &Index, info: &mut NodeInfo, s: usize, p: &NewPlacement) {
    remove(cluster, ix, info, s, p.slot);
}

/// Takes a kept task of service `s` back off its node: `explain` asks where a running slot
/// would go, and its own task must not count against the node it runs on.
pub fn unbook(cluster: &Cluster, ix: &Index, snap: &mut Snapshot, s: usize, slot: u64, ni: u32) {
    remove(cluster, ix, &mut snap.nodes[ni as usize], s, Some(slot));
}

/// Counts a kept slot's task on another node: the rescheduling planner tries a move on the
/// snapshot before it proposes it.
pub fn rebook(cluster: &Cluster, ix: &Index, snap: &mut Snapshot, s: usize, slot: u64, ni: u32) {
    add(cluster, ix, snap, s, Some(slot), ni);
}

fn remove(cluster: &Cluster, ix: &Index, info: &mut NodeInfo, s: usize, slot: Option<u64>) {
    let policy = &ix.policies[s];
    let spec = task_spec(cluster, ix, s, slot, None);
    for r in &ix.profiles[&policy.strategy].reserves {
        r.unreserve(&spec, info);
    }
    info.remove_task(s as u32);
}

/// One new placement, by index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewPlacement {
    pub slot: Option<u64>,
    pub node: u32,
    pub key: Key,
}

/// One task left pending, by index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewPending {
    pub slot: Option<u64>,
    /// A global service's member node.
    pub node: Option<u32>,
    pub nodes: u32,
    pub reasons: Reasons,
}

/// What planning one service decided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServicePlan {
    /// In slot order (replicated) or node order (global).
    pub placed: Vec<NewPlacement>,
    pub pending: Vec<NewPending>,
    pub datasets: Vec<DatasetChange>,
}

impl ServicePlan {
    pub fn is_empty(&self) -> bool {
        self.placed.is_empty() && self.pending.is_empty() && self.datasets.is_empty()
    }
}

/// Places service `s`'s missing tasks on `snap` (which it updates).
pub fn place_service(
    cluster: &Cluster,
    ix: &Index,
    kept: &Kept,
    snap: &mut Snapshot,
    s: usize,
) -> ServicePlan {
    let mut out = ServicePlan::default();
    let service = ix.service(cluster, s);
    let policy = &ix.policies[s];
    let profile = &ix.profiles[&policy.strategy];
    let n = ix.nodes.len() as u32;
    match service.mode {
        Mode::Replicated { replicas } => {
            if kept.count[s] == replicas {
                return out;
            }
            let missing: Vec<u64> = (1..=replicas)
                .filter(|slot| kept.slots[s][*slot as usize - 1].is_none())
                .collect();
            if let Some(st) = &policy.stateful {
                for slot in missing {
                    let ds = slot_dataset(
                        cluster,
                        ix,
                        &st.volume_for_slot(slot),
                        st.failover,
                        st.backend,
                    );
                    let task = task_spec(cluster, ix, s, Some(slot), Some(&ds));
                    let o = batch::place(ix, profile, snap, &task, 1);
                    if let Some(k) = o.placed.first() {
                        let node = ix.node(cluster, k.node()).id.clone();
                        out.datasets
                            .push(dataset_change(ix, &ds, &service.name, slot, &node));
                        out.placed.push(NewPlacement {
                            slot: Some(slot),
                            node: k.node(),
                            key: *k,
                        });
                    }
                    if let Some(r) = o.pending {
                        out.pending.push(NewPending {
                            slot: Some(slot),
                            node: None,
                            nodes: n,
                            reasons: r,
                        });
                    }
                }
            } else {
                let task = task_spec(cluster, ix, s, None, None);
                let o = batch::place(ix, profile, snap, &task, missing.len());
                for (slot, k) in missing.iter().zip(&o.placed) {
                    out.placed.push(NewPlacement {
                        slot: Some(*slot),
                        node: k.node(),
                        key: *k,
                    });
                }
                if let Some(r) = o.pending {
                    for slot in &missing[o.placed.len()..] {
                        out.pending.push(NewPending {
                            slot: Some(*slot),
                            node: None,
                            nodes: n,
                            reasons: r.clone(),
                        });
                    }
                }
            }
        }
        Mode::Global => {
            let task = task_spec(cluster, ix, s, None, None);
            for ni in 0..n {
                if kept.nodes[s][ni as usize] {
                    continue;
                }
                let node = ix.node(cluster, ni);
                // Swarm's global orchestrator only makes tasks for nodes that take tasks,
                // match the constraints and the platform; the rest get none, not a pending one.
                let member = node.accepts_tasks()
                    && crate::constraint::node_matches(&ix.constraints[s], node)
                    && (service.placement.platforms.is_empty()
                        || service
                            .placement
                            .platforms
                            .iter()
                            .any(|p| platform_matches(p, &node.platform)));
                if !member {
                    continue;
                }
                match batch::place_on(profile, snap, &task, ni) {
                    Ok(k) => out.placed.push(NewPlacement {
                        slot: None,
                        node: ni,
                        key: k,
                    }),
                    Err((reason, unresolvable)) => out.pending.push(NewPending {
                        slot: None,
                        node: Some(ni),
                        nodes: 1,
                        reasons: Reasons {
                            counts: [(reason, 1)].into_iter().collect(),
                            unresolvable,
                        },
                    }),
                }
            }
        }
    }
    out
}

/// The whole plan, in order: kept and new placements by service name, then slot, then node.
pub fn emit(cluster: &Cluster, ix: &Index, kept: &Kept, plans: &[ServicePlan]) -> Plan {
    let mut plan = Plan {
        nodes: ix.nodes.len() as u32,
        ..Plan::default()
    };
    let node_id = |ni: u32| ix.node(cluster, ni).id.clone();
    for (s, sp) in plans.iter().enumerate() {
        let service = ix.service(cluster, s);
        let strategy = ix.policies[s].strategy;
        let mut new = sp.placed.iter().peekable();
        let placement = |slot, node, new: &NewPlacement| Placement {
            service: service.name.clone(),
            slot,
            node,
            new: true,
            score: Some(ScoreCard::from_key(strategy, &new.key)),
        };
        let kept_one = |slot, node| Placement {
            service: service.name.clone(),
            slot,
            node,
            new: false,
            score: None,
        };
        match service.mode {
            Mode::Replicated { replicas } => {
                for slot in 1..=replicas {
                    if let Some(ni) = kept.slot_node(ix, s, slot) {
                        plan.placements.push(kept_one(Some(slot), node_id(ni)));
                    } else if let Some(p) = new.next_if(|p| p.slot == Some(slot)) {
                        plan.placements
                            .push(placement(Some(slot), node_id(p.node), p));
                    }
                }
            }
            Mode::Global => {
                for ni in 0..ix.nodes.len() as u32 {
                    if kept.nodes[s][ni as usize] {
                        plan.placements.push(kept_one(None, node_id(ni)));
                    } else if let Some(p) = new.next_if(|p| p.node == ni) {
                        plan.placements.push(placement(None, node_id(ni), p));
                    }
                }
            }
        }
        for p in &sp.pending {
            plan.pending.push(Pending::new(
                &service.name,
                p.slot,
                p.node.map(node_id),
                p.nodes,
                p.reasons.clone(),
            ));
        }
        plan.datasets.extend(sp.datasets.iter().cloned());
    }
    plan.datasets.sort_by(|a, b| a.dataset.cmp(&b.dataset));
    plan
}

/// Where a slot's dataset is, against the current node states.
pub fn slot_dataset(
    cluster: &Cluster,
    ix: &Index,
    name: &str,
    failover: FailoverMode,
    backend: Backend,
) -> SlotDataset {
    let ds = ix.datasets.get(name);
    let usable = |id: &NodeId| {
        ix.node_index(cluster, id)
            .filter(|i| ix.node(cluster, *i).can_hold_data())
    };
    let home = match ds.and_then(|d| d.primary.as_ref()) {
        None => DatasetHome::New,
        Some(p) => match usable(p) {
            Some(i) => DatasetHome::Primary(i),
            None => {
                let node = ix.node_index(cluster, p).map(|i| ix.node(cluster, i));
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
    ix: &Index,
    ds: &SlotDataset,
    service: &str,
    slot: u64,
    node: &NodeId,
) -> DatasetChange {
    let epoch = ix.datasets.get(&ds.name).map(|d| d.epoch).unwrap_or(0);
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

pub fn task_spec<'a>(
    cluster: &'a Cluster,
    ix: &'a Index,
    s: usize,
    slot: Option<u64>,
    dataset: Option<&'a SlotDataset>,
) -> TaskSpec<'a> {
    TaskSpec {
        service: ix.service(cluster, s),
        service_idx: s as u32,
        policy: &ix.policies[s],
        constraints: &ix.constraints[s],
        slot,
        dataset,
    }
}
