//! Incremental re-planning for the controller: a [`Replanner`] holds a cluster and its plan,
//! takes [`Delta`]s as Swarm reports them (a node down or back, a task failed or started, a
//! service scaled) and re-plans only what a delta touches.
//!
//! ```
//! use berth_scheduler::model::{Cluster, Mode, Node, NodeId, Service, ServiceId, Task};
//! use berth_scheduler::replan::{Delta, Replanner};
//!
//! let task = |slot: u64, node: &str| Task {
//!     id: format!("web.{slot}"),
//!     service_id: ServiceId("web".into()),
//!     slot: Some(slot),
//!     node_id: Some(NodeId::new(node)),
//!     ..Task::default() // running
//! };
//! let mut web = Service::new("web");
//! web.mode = Mode::Replicated { replicas: 2 };
//! let cluster = Cluster {
//!     nodes: vec![Node::new("a"), Node::new("b")],
//!     services: vec![web],
//!     tasks: vec![task(1, "a"), task(2, "b")],
//!     ..Cluster::default()
//! };
//! let mut r = Replanner::new(cluster)?;           // takes the cluster; nothing is copied
//! assert!(r.new_placements().is_empty());         // everything runs
//! let changed = r.apply(Delta::NodeDown(NodeId::new("b")))?;
//! assert_eq!(changed.services, ["web"]);
//! assert_eq!(r.new_placements()[0].node.as_str(), "a"); // web's slot 2 moves to a
//! # Ok::<(), berth_scheduler::replan::ReplanError>(())
//! ```
//!
//! How it stays cheap: the [`Index`] (orders, static classes, domains) and the booking of
//! every task that stays ([`Kept`], per-node loads) are kept between deltas and updated in
//! place — a node delta re-evaluates that node's static verdicts and the slots whose tasks
//! run on it; a task delta its slot. Then the new placements of the previous plan are taken
//! back and every service that has a missing task is planned again, in dependency order, on
//! the loads as they now are: the same phases, in the same order, as a plan from scratch
//! ([`crate::schedule::run`]), which is why the result is the same plan (property-tested after
//! random sequences of deltas in `tests/properties.rs`). A service with nothing missing costs
//! nothing; one with missing tasks costs a batch (O(N + T log N)).
//!
//! Architecture invariant: [`Replanner::plan`] always equals `schedule::plan` of
//! [`Replanner::cluster`].

use std::collections::BTreeMap;

use crate::FastMap;

use thiserror::Error;

use crate::model::{Cluster, Mode, NodeId, NodeState, Task, TaskState};
use crate::schedule::run::{self, Claim, NewPlacement, claim, wins};
use crate::schedule::{
    Index, Kept, Pending, Placement, Plan, PlanError, ScoreCard, ServicePlan, index::slot_order,
};
use crate::snapshot::{Load, NodeInfo, Snapshot};

/// A change Swarm reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delta {
    /// The node stopped answering: its tasks no longer count, its slots are re-placed.
    NodeDown(NodeId),
    /// The node is ready again.
    NodeBack(NodeId),
    /// The task (by ID) failed: it no longer holds its slot.
    TaskFailed(String),
    /// A task runs (or changed): a new ID is added, a known one replaced.
    TaskStarted(Task),
    /// A replicated service (by name) now wants this many replicas.
    ServiceScaled { service: String, replicas: u64 },
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ReplanError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("unknown node `{0}`")]
    UnknownNode(NodeId),
    #[error("unknown task `{0}`")]
    UnknownTask(String),
    #[error("unknown service `{0}`")]
    UnknownService(String),
    #[error("service `{0}` is global: it has no replica count")]
    NotReplicated(String),
}

/// What a delta changed: the services whose new placements or pending tasks differ.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changed {
    pub services: Vec<String>,
}

/// A cluster and its current plan, kept up to date delta by delta.
pub struct Replanner {
    cluster: Cluster,
    ix: Index,
    /// Datasets given with the input (the rest are inferred from tasks).
    given: BTreeMap<String, crate::model::Dataset>,
    kept: Kept,
    /// Per dense node: the kept tasks plus the current plan's new placements.
    loads: Vec<Load>,
    /// Per dense service: its part of the current plan.
    plans: Vec<ServicePlan>,
    task_by_id: FastMap<String, u32>,
    /// Tasks by (service, slot) and by dense node, in position order: the tasks that may
    /// claim one slot, or a member node of a global service. Looked up, never iterated.
    by_slot: FastMap<(u32, u64), Vec<u32>>,
    by_node: Vec<Vec<u32>>,
}

impl Replanner {
    /// Checks, indexes and plans `cluster`, which the planner keeps (no copy is made).
    pub fn new(cluster: Cluster) -> Result<Replanner, ReplanError> {
        let ix = Index::new(&cluster)?;
        let given = cluster
            .datasets
            .iter()
            .map(|d| (d.name.clone(), d.clone()))
            .collect();
        let kept = Kept::new(&cluster, &ix);
        let mut snap = Snapshot::new(ix.node_refs(&cluster));
        run::book(&cluster, &ix, &kept, &mut snap);
        let loads = snap.into_loads();
        let mut r = Replanner {
            plans: vec![ServicePlan::default(); ix.services.len()],
            cluster,
            ix,
            given,
            kept,
            loads,
            task_by_id: FastMap::default(),
            by_slot: FastMap::default(),
            by_node: Vec::new(),
        };
        r.by_node = vec![Vec::new(); r.ix.nodes.len()];
        for k in 0..r.cluster.tasks.len() as u32 {
            r.index_task(k);
        }
        r.replan();
        Ok(r)
    }

    /// The cluster as the deltas left it.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Gives the cluster back, as the deltas left it.
    pub fn into_cluster(self) -> Cluster {
        self.cluster
    }

    /// What the rescheduling planner reads between node events
    /// ([`crate::rebalance::RebalanceIndex`]): the index, the kept tasks, the loads with the
    /// plan's new placements booked, and the per-service plans (by dense service).
    pub(crate) fn state(&self) -> (&Index, &Kept, &[Load], &[ServicePlan]) {
        (&self.ix, &self.kept, &self.loads, &self.plans)
    }

    /// Applies one delta and re-plans what it touches.
    pub fn apply(&mut self, delta: Delta) -> Result<Changed, ReplanError> {
        self.unplace_all();
        let result = self.change(delta);
        let before = self.replan();
        result?;
        let services = (0..self.plans.len())
            .filter(|s| before[*s] != self.plans[*s])
            .map(|s| self.ix.service(&self.cluster, s).name.clone())
            .collect();
        Ok(Changed { services })
    }

    fn change(&mut self, delta: Delta) -> Result<(), ReplanError> {
        match delta {
            Delta::NodeDown(id) => self.set_node_state(&id, NodeState::Down),
            Delta::NodeBack(id) => self.set_node_state(&id, NodeState::Ready),
            Delta::TaskFailed(id) => {
                let &k = self
                    .task_by_id
                    .get(&id)
                    .ok_or(ReplanError::UnknownTask(id))?;
                self.cluster.tasks[k as usize].state = TaskState::Failed;
                self.task_changed(k)
            }
            Delta::TaskStarted(task) => self.task_started(task),
            Delta::ServiceScaled { service, replicas } => self.scale(&service, replicas),
        }
    }

    fn set_node_state(&mut self, id: &NodeId, state: NodeState) -> Result<(), ReplanError> {
        let ni = self
            .ix
            .node_index(&self.cluster, id)
            .ok_or_else(|| ReplanError::UnknownNode(id.clone()))?;
        let pos = self.ix.nodes[ni as usize] as usize;
        self.cluster.nodes[pos].state = state;
        self.ix.refresh_node(&self.cluster, ni);
        // Every slot with a task on the node may change hands.
        let mut claims: Vec<Claim> = Vec::new();
        for &k in &self.by_node[ni as usize] {
            claims.extend(self.groups_of(k));
        }
        claims.sort_by_key(|c| match c {
            Claim::Slot(s, slot) => (0, *s, *slot),
            Claim::Node(s, n) => (1, *s, u64::from(*n)),
        });
        claims.dedup();
        for c in claims {
            self.regroup(c);
        }
        Ok(())
    }

    fn task_started(&mut self, task: Task) -> Result<(), ReplanError> {
        let s = *self
            .ix
            .service_by_id
            .get(task.service_id.0.as_str())
            .ok_or_else(|| ReplanError::UnknownService(task.service_id.0.clone()))?;
        let node = match &task.node_id {
            None => None,
            Some(id) => Some(
                self.ix
                    .node_index(&self.cluster, id)
                    .ok_or_else(|| ReplanError::UnknownNode(id.clone()))?,
            ),
        };
        match self.task_by_id.get(&task.id).copied() {
            Some(k) => {
                // Replaced: out of its old groups, into its new ones. A slot it holds is
                // released first, while its booking is still on its old node.
                let old = self.groups_of(k);
                for &g in &old {
                    if let Claim::Slot(s, slot) = g
                        && slot
                            .checked_sub(1)
                            .and_then(|i| self.kept.slots[s as usize].get(i as usize))
                            == Some(&Some(k))
                    {
                        self.set_kept(g, None);
                    }
                }
                self.unindex_task(k);
                self.cluster.tasks[k as usize] = task;
                self.ix.task_service[k as usize] = s;
                self.ix.task_node[k as usize] = node;
                self.index_task(k);
                for g in old {
                    self.infer_dataset(g);
                    self.regroup(g);
                }
                self.task_changed(k)
            }
            None => {
                let k = self.cluster.tasks.len() as u32;
                self.cluster.tasks.push(task);
                self.ix.task_service.push(s);
                self.ix.task_node.push(node);
                self.index_task(k);
                self.task_changed(k)
            }
        }
    }

    fn scale(&mut self, name: &str, replicas: u64) -> Result<(), ReplanError> {
        let s = self
            .ix
            .service_index(&self.cluster, name)
            .map_err(|_| ReplanError::UnknownService(name.to_string()))?;
        let pos = self.ix.services[s] as usize;
        let old = match self.cluster.services[pos].mode {
            Mode::Replicated { replicas } => replicas,
            Mode::Global => return Err(ReplanError::NotReplicated(name.to_string())),
        };
        // Dropped slots give their tasks back first.
        for slot in replicas + 1..=old {
            self.set_kept(Claim::Slot(s as u32, slot), None);
        }
        self.cluster.services[pos].mode = Mode::Replicated { replicas };
        self.kept.slots[s].resize(replicas as usize, None);
        for slot in old + 1..=replicas {
            self.regroup(Claim::Slot(s as u32, slot));
        }
        Ok(())
    }

    /// After task `k` changed: its slot's dataset and holder.
    fn task_changed(&mut self, k: u32) -> Result<(), ReplanError> {
        for g in self.groups_of(k) {
            self.infer_dataset(g);
            self.regroup(g);
        }
        Ok(())
    }

    /// The groups task `k` belongs to (whether or not it claims them now).
    fn groups_of(&self, k: u32) -> Vec<Claim> {
        let t = &self.cluster.tasks[k as usize];
        let s = self.ix.task_service[k as usize];
        let mut out = Vec::new();
        if let Some(slot) = t.slot {
            out.push(Claim::Slot(s, slot));
        }
        if let Some(n) = self.ix.task_node[k as usize] {
            out.push(Claim::Node(s, n));
        }
        out
    }

    fn index_task(&mut self, k: u32) {
        let id = self.cluster.tasks[k as usize].id.clone();
        if !id.is_empty() {
            self.task_by_id.insert(id, k);
        }
        for g in self.groups_of(k) {
            let list = match g {
                Claim::Slot(s, slot) => self.by_slot.entry((s, slot)).or_default(),
                Claim::Node(_, n) => &mut self.by_node[n as usize],
            };
            let at = list.binary_search(&k).unwrap_or_else(|e| e);
            list.insert(at, k);
        }
    }

    fn unindex_task(&mut self, k: u32) {
        for g in self.groups_of(k) {
            let list = match g {
                Claim::Slot(s, slot) => self.by_slot.get_mut(&(s, slot)),
                Claim::Node(_, n) => Some(&mut self.by_node[n as usize]),
            };
            if let Some(list) = list
                && let Ok(at) = list.binary_search(&k)
            {
                list.remove(at);
            }
        }
    }

    /// Re-infers a stateful slot's dataset from its tasks, as `Index::new` does, unless the
    /// dataset was given with the input.
    fn infer_dataset(&mut self, g: Claim) {
        let Claim::Slot(s, slot) = g else {
            return;
        };
        let service = self.ix.service(&self.cluster, s as usize);
        let (Some(st), Mode::Replicated { .. }) =
            (&self.ix.policies[s as usize].stateful, service.mode)
        else {
            return;
        };
        let name = st.volume_for_slot(slot);
        if self.given.contains_key(&name) {
            return;
        }
        let mut tasks: Vec<u32> = self
            .by_slot
            .get(&(s, slot))
            .map(|l| {
                l.iter()
                    .copied()
                    .filter(|k| self.cluster.tasks[*k as usize].node_id.is_some())
                    .collect()
            })
            .unwrap_or_default();
        tasks.sort_by(|a, b| {
            slot_order(
                &self.cluster.tasks[*a as usize],
                &self.cluster.tasks[*b as usize],
            )
        });
        match tasks.first() {
            None => {
                self.ix.datasets.remove(&name);
            }
            Some(&k) => {
                let ds = crate::model::Dataset {
                    name: name.clone(),
                    service: service.name.clone(),
                    slot,
                    primary: self.cluster.tasks[k as usize].node_id.clone(),
                    epoch: 1,
                    backend: st.backend,
                    size_bytes: 0,
                    standby: None,
                    fenced: false,
                };
                self.ix.datasets.insert(name, ds);
            }
        }
    }

    /// Works out which task holds a slot (or member node) now, and books the change.
    fn regroup(&mut self, g: Claim) {
        let list = match g {
            Claim::Slot(s, slot) => {
                if slot == 0 || slot as usize > self.kept.slots[s as usize].len() {
                    return;
                }
                self.by_slot.get(&(s, slot))
            }
            Claim::Node(s, n) => {
                if self.kept.nodes[s as usize].is_empty() {
                    return;
                }
                Some(&self.by_node[n as usize])
            }
        };
        let mut best: Option<u32> = None;
        for &k in list.map(Vec::as_slice).unwrap_or_default() {
            if claim(&self.cluster, &self.ix, k as usize) != Some(g) {
                continue;
            }
            let better = match best {
                None => true,
                // Slots go to the first by (node, task ID); a member node to any task.
                Some(b) => {
                    matches!(g, Claim::Slot(..))
                        && wins(
                            &self.cluster.tasks[k as usize],
                            &self.cluster.tasks[b as usize],
                        )
                }
            };
            if better {
                best = Some(k);
            }
        }
        self.set_kept(g, best);
    }

    /// Sets who holds `g`, moving the booking on the loads.
    fn set_kept(&mut self, g: Claim, holder: Option<u32>) {
        let (s, old_node, new_node) = match g {
            Claim::Slot(s, slot) => {
                let cell = &mut self.kept.slots[s as usize][slot as usize - 1];
                let old = cell.and_then(|k| self.ix.task_node[k as usize]);
                let was = cell.is_some();
                *cell = holder;
                match (was, holder.is_some()) {
                    (false, true) => self.kept.count[s as usize] += 1,
                    (true, false) => self.kept.count[s as usize] -= 1,
                    _ => {}
                }
                (s, old, holder.and_then(|k| self.ix.task_node[k as usize]))
            }
            Claim::Node(s, n) => {
                let cell = &mut self.kept.nodes[s as usize][n as usize];
                let was = *cell;
                *cell = holder.is_some();
                match (was, *cell) {
                    (false, true) => self.kept.count[s as usize] += 1,
                    (true, false) => self.kept.count[s as usize] -= 1,
                    _ => {}
                }
                (s, was.then_some(n), holder.map(|_| n))
            }
        };
        if old_node == new_node {
            return;
        }
        let slot = match g {
            Claim::Slot(_, slot) => Some(slot),
            Claim::Node(..) => None,
        };
        let spec = run::task_spec(&self.cluster, &self.ix, s as usize, slot, None);
        let reserves = &self.ix.profiles[&self.ix.policies[s as usize].strategy].reserves;
        if let Some(n) = old_node {
            let node = self.ix.node(&self.cluster, n);
            let load = std::mem::take(&mut self.loads[n as usize]);
            let mut info = NodeInfo::with_load(n, node, load);
            for r in reserves {
                r.unreserve(&spec, &mut info);
            }
            info.remove_task(s);
            self.loads[n as usize] = info.into_load();
        }
        if let Some(n) = new_node {
            let node = self.ix.node(&self.cluster, n);
            let load = std::mem::take(&mut self.loads[n as usize]);
            let mut info = NodeInfo::with_load(n, node, load);
            info.add_task(s);
            for r in reserves {
                r.reserve(&spec, &mut info);
            }
            self.loads[n as usize] = info.into_load();
        }
    }

    /// Takes the current plan's new placements back off the loads.
    fn unplace_all(&mut self) {
        for (s, sp) in self.plans.iter().enumerate() {
            for p in &sp.placed {
                let node = self.ix.node(&self.cluster, p.node);
                let load = std::mem::take(&mut self.loads[p.node as usize]);
                let mut info = NodeInfo::with_load(p.node, node, load);
                run::unplace(&self.cluster, &self.ix, &mut info, s, p);
                self.loads[p.node as usize] = info.into_load();
            }
        }
    }

    /// Plans every service with a missing task, in dependency order, on the loads as they are;
    /// returns the previous per-service plans.
    fn replan(&mut self) -> Vec<ServicePlan> {
        let refs = self.ix.node_refs(&self.cluster);
        let loads = std::mem::take(&mut self.loads);
        let mut snap = Snapshot::with_loads(refs, loads);
        let mut plans = vec![ServicePlan::default(); self.ix.services.len()];
        for &s in &self.ix.order.sequence {
            plans[s] = run::place_service(&self.cluster, &self.ix, &self.kept, &mut snap, s);
        }
        self.loads = snap.into_loads();
        std::mem::replace(&mut self.plans, plans)
    }

    /// The whole plan, kept and new placements alike: equal to `schedule::plan(self.cluster())`.
    pub fn plan(&self) -> Plan {
        run::emit(&self.cluster, &self.ix, &self.kept, &self.plans)
    }

    /// What the controller acts on: the new placements only, by service name then slot/node.
    pub fn new_placements(&self) -> Vec<Placement> {
        let mut out = Vec::new();
        for s in 0..self.plans.len() {
            let service = &self.ix.service(&self.cluster, s).name;
            let strategy = self.ix.policies[s].strategy;
            for p in &self.plans[s].placed {
                out.push(self.placement(service, strategy, p));
            }
        }
        out
    }

    fn placement(
        &self,
        service: &str,
        strategy: crate::model::Strategy,
        p: &NewPlacement,
    ) -> Placement {
        Placement {
            service: service.to_string(),
            slot: p.slot,
            node: self.ix.node(&self.cluster, p.node).id.clone(),
            new: true,
            score: Some(ScoreCard::from_key(strategy, &p.key)),
        }
    }

    /// Tasks that stay pending, with their reasons.
    pub fn pending(&self) -> Vec<Pending> {
        let mut out = Vec::new();
        for s in 0..self.plans.len() {
            let service = &self.ix.service(&self.cluster, s).name;
            for p in &self.plans[s].pending {
                out.push(Pending::new(
                    service,
                    p.slot,
                    p.node.map(|n| self.ix.node(&self.cluster, n).id.clone()),
                    p.nodes,
                    p.reasons.clone(),
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
