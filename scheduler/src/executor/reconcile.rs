//! Level-triggered reconcile: the controller hands over what it observes (the cluster, the
//! failure detector's verdicts, containers reported failed) and the executor compares it with
//! what it saw last, node by node. A node newly declared dead is fenced and its plan run; a
//! node back is let in again (its stale copies revoked, its failed containers restarted, a
//! holder fenced by a move that never happened re-admitted); a node newly drained is emptied;
//! lost nodes whose plan lost a lane are planned again. After a pause (no leader, the
//! controller restarting) it catches up from the world as it is, never replaying a plan.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::FastMap;
use crate::failover::Event;
use crate::model::{Cluster, Mode, NodeId, NodeState};

use super::command::Command;
use super::history::{Actor, FailoverRecord};
use super::lane::{Lane, LaneStep};
use super::run::{PlanRun, RunKind};
use super::{Executor, Notice, Ready};

/// The controller's view beyond the cluster, for one node (aligned with `cluster.nodes`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeHealth {
    /// The failure detector declares the node dead.
    pub dead: bool,
    /// How many times the node re-established contact: a change means it came back, even
    /// from an outage shorter than the detector's.
    pub reconnects: u64,
}

/// A container Swarm wants running that was reported failed on a node in contact.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FailedTask {
    pub service: String,
    pub slot: u64,
    pub node: NodeId,
}

/// What the controller observed.
#[derive(Clone, Copy, Debug)]
pub struct Observation<'a> {
    /// The managers' view: a node Down here (Swarm's verdict or the detector's) is down for
    /// the planner; tasks are the ones meant to run and not reported failed.
    pub cluster: &'a Cluster,
    /// `None`: Swarm's node state is the detector.
    pub health: Option<&'a [NodeHealth]>,
    pub failed: &'a [FailedTask],
}

impl<'a> Observation<'a> {
    /// Swarm's own verdicts only (the controller without a detector of its own).
    pub fn of(cluster: &'a Cluster) -> Self {
        Observation {
            cluster,
            health: None,
            failed: &[],
        }
    }
}

/// What the executor last saw of a node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// Declared dead by the detector.
    pub dead: bool,
    /// Dead, or Down in the managers' view.
    pub down: bool,
    pub draining: bool,
    pub reconnects: u64,
    /// Could take a task: Ready and active in the managers' view, and not declared dead.
    #[serde(default)]
    pub schedulable: bool,
}

impl Observation<'_> {
    fn seen(&self, i: usize) -> Seen {
        let n = &self.cluster.nodes[i];
        let h = self.health.and_then(|h| h.get(i)).copied();
        let dead = h.map_or(n.state == NodeState::Down, |h| h.dead);
        Seen {
            dead,
            down: dead || n.state == NodeState::Down,
            draining: n.availability == crate::model::Availability::Drain,
            reconnects: h.map_or(0, |h| h.reconnects),
            schedulable: !dead
                && n.state == NodeState::Ready
                && n.availability == crate::model::Availability::Active,
        }
    }

    /// Whether the managers want any task on `node` (failed ones included).
    fn hosts(&self, node: &NodeId) -> bool {
        self.cluster
            .tasks
            .iter()
            .any(|t| t.is_active() && t.node_id.as_ref() == Some(node))
            || self.failed.iter().any(|f| &f.node == node)
    }

    fn failed_on(&self, node: &NodeId) -> bool {
        self.failed.iter().any(|f| &f.node == node)
    }

    /// Whether some slot has no task the managers want (waiting for room or for a node).
    fn missing_slots(&self) -> bool {
        let c = self.cluster;
        // Per service, which slots have a task: a lookup map by ID and name, never iterated.
        let mut by_id: FastMap<&str, usize> = FastMap::default();
        let mut by_name: FastMap<&str, usize> = FastMap::default();
        let mut have: Vec<Vec<bool>> = Vec::with_capacity(c.services.len());
        for (i, s) in c.services.iter().enumerate() {
            by_id.insert(s.id.0.as_str(), i);
            by_name.insert(s.name.as_str(), i);
            let n = match s.mode {
                Mode::Replicated { replicas } => replicas as usize,
                Mode::Global => 0,
            };
            have.push(vec![false; n]);
        }
        let mut mark = |i: Option<&usize>, slot: u64| {
            if let Some(&i) = i
                && let Some(h) = (slot as usize)
                    .checked_sub(1)
                    .and_then(|k| have[i].get_mut(k))
            {
                *h = true;
            }
        };
        for t in c.tasks.iter().filter(|t| t.is_active()) {
            if let Some(slot) = t.slot {
                mark(by_id.get(t.service_id.0.as_str()), slot);
            }
        }
        for f in self.failed {
            mark(by_name.get(f.service.as_str()), f.slot);
        }
        have.iter().any(|h| h.iter().any(|x| !x))
    }
}

impl Executor {
    /// The controller may change the world (a Swarm leader answers, the controller is up) or
    /// not. While paused, observations only update what the executor knows (and a node back
    /// still keeps its `recreate` members); the first observation after it catches up.
    pub fn set_active(&mut self, active: bool) {
        if active && !self.state.active {
            self.catch_up();
        }
        self.state.active = active;
    }

    /// The next observation (while active) catches up from the world as it is: every node
    /// already dead is planned again, drains resumed, what failed on reachable nodes
    /// restarted — as after a pause, or a restart from a persisted state.
    pub fn catch_up(&mut self) {
        self.state.catch_up = true;
    }

    /// Level-triggered: compares the observation with the last one and launches, drops or
    /// re-plans runs. Nodes are handled in node ID order.
    pub fn observe(&mut self, now: u64, obs: Observation<'_>) {
        self.saw(now);
        let mut order: Vec<usize> = (0..obs.cluster.nodes.len()).collect();
        if !obs.cluster.nodes.windows(2).all(|w| w[0].id <= w[1].id) {
            order.sort_by(|&a, &b| obs.cluster.nodes[a].id.cmp(&obs.cluster.nodes[b].id));
        }
        let catch_up = self.state.active && std::mem::take(&mut self.state.catch_up);
        let mut backs = Vec::new();
        let mut detects = Vec::new();
        let mut drains = Vec::new();
        let mut room = false;
        // A merge of two ID-ordered walks rather than a map lookup per node: observations
        // come at every contact change, and clusters have 10k nodes.
        let mut first_sight = Vec::new();
        let mut known = self.state.nodes.iter_mut().peekable();
        for &i in &order {
            let id = &obs.cluster.nodes[i].id;
            let now_seen = obs.seen(i);
            while known.next_if(|(k, _)| *k < id).is_some() {}
            let before = match known.next_if(|(k, _)| *k == id) {
                Some((_, s)) => std::mem::replace(s, now_seen.clone()),
                None => {
                    // First sight: alive, active and never reconnected until seen otherwise,
                    // so a node already dead, drained or back is acted on (level-triggered).
                    first_sight.push((id.clone(), now_seen.clone()));
                    Seen::default()
                }
            };
            let back = !now_seen.dead && (before.dead || before.reconnects != now_seen.reconnects);
            if back {
                backs.push((i, before.dead));
            }
            if now_seen.dead && !before.dead {
                detects.push(i);
            }
            if now_seen.draining && !before.draining {
                drains.push(i);
            }
            room |= now_seen.schedulable && !before.schedulable;
        }
        drop(known);
        self.state.nodes.extend(first_sight);
        if !self.state.config.reconcile {
            return;
        }
        for &(i, _) in &backs {
            // A `recreate` slot still in its grace period for this node keeps its member.
            self.abort_grace_for(now, &obs.cluster.nodes[i].id.clone());
        }
        if !self.state.active {
            return;
        }
        if catch_up {
            self.state.waiting.clear();
            self.catch_up_now(now, &obs, &order);
            return;
        }
        if room && !self.state.waiting.is_empty() {
            // A node can take a task again: the slots left without a target are planned anew
            // (the fence they went through is replayed as done).
            let waiting = std::mem::take(&mut self.state.waiting);
            self.state.retry.extend(waiting);
            self.state.retry_due = true;
        }
        self.plan_fenced(now, &obs);
        for i in detects {
            self.on_detect(now, &obs, i);
        }
        for (i, was_dead) in backs {
            self.on_back(now, &obs, i, was_dead);
        }
        for i in drains {
            let id = obs.cluster.nodes[i].id.clone();
            self.run_plan(
                now,
                obs.cluster,
                Event::NodeDrained(id),
                self.state.config.stateful_only,
                Actor::Berth,
            );
        }
        if std::mem::take(&mut self.state.retry_due) {
            self.retry(now, &obs);
        }
    }

    fn on_detect(&mut self, now: u64, obs: &Observation<'_>, i: usize) {
        let id = obs.cluster.nodes[i].id.clone();
        let label = self.issue(Command::SetFenceLabel { node: id.clone() }, None);
        self.state.ready.push(Ready::Command(label));
        // A node without tasks needs no plan (the engine would return no steps); most random
        // faults in a large cluster hit such nodes.
        if obs.hosts(&id) {
            if obs.cluster.nodes[i].is_fenced() {
                self.run_plan(
                    now,
                    obs.cluster,
                    Event::NodeDown(id),
                    self.state.config.stateful_only,
                    Actor::Berth,
                );
            } else {
                // Planned once the label is set (the next observation), so the plan is made
                // for the cluster as it then is.
                self.state.fencing.insert(id, Some(label));
            }
        }
        self.state.retry_due = true;
    }

    /// Node-down plans of nodes whose fence label has been set meanwhile.
    fn plan_fenced(&mut self, now: u64, obs: &Observation<'_>) {
        let settled: Vec<NodeId> = self
            .state
            .fencing
            .iter()
            .filter(|(_, c)| c.is_none())
            .map(|(n, _)| n.clone())
            .collect();
        for n in settled {
            self.state.fencing.remove(&n);
            if self.state.nodes.get(&n).is_some_and(|s| s.dead) {
                self.run_plan(
                    now,
                    obs.cluster,
                    Event::NodeDown(n),
                    self.state.config.stateful_only,
                    Actor::Berth,
                );
            }
        }
    }

    /// A fence label came back: the node's plan is due at the next observation.
    pub(super) fn label_settled(&mut self, node: &NodeId) {
        if let Some(c) = self.state.fencing.get_mut(node) {
            *c = None;
        }
    }

    fn on_back(&mut self, now: u64, obs: &Observation<'_>, i: usize, was_dead: bool) {
        let node = &obs.cluster.nodes[i];
        let id = node.id.clone();
        // Its return is planned now: a re-plan of it as lost, pending, is moot.
        self.state.retry.remove(&id);
        self.state.waiting.remove(&id);
        let fenced = node.is_fenced();
        let dead = obs.failed_on(&id);
        if dead || ((was_dead || fenced) && (obs.hosts(&id) || obs.missing_slots())) {
            self.run_plan(
                now,
                obs.cluster,
                Event::NodeBack(id.clone()),
                self.state.config.stateful_only,
                Actor::Berth,
            );
        } else if fenced {
            // What the plan's `unfence` step would do, without asking the engine for nothing.
            let c = self.issue(Command::ClearFenceLabel { node: id.clone() }, None);
            self.state.ready.push(Ready::Command(c));
        }
        self.readmit(now, obs, &id);
        self.state.retry_due = true;
    }

    /// Re-plans lost nodes whose plan lost a lane half-way: the world changed, so the engine
    /// is asked again (level-triggered), rather than replaying the old plan.
    fn retry(&mut self, now: u64, obs: &Observation<'_>) {
        if !self.state.fencing.is_empty() {
            // After the plans of the nodes being fenced, as if they were made at once.
            self.state.retry_due = true;
            return;
        }
        let nodes = std::mem::take(&mut self.state.retry);
        for n in nodes {
            // A node back meanwhile had its node-back plan made while the lane still held its
            // slot (so the plan left the slot out): the slot is planned as a return now, or it
            // would wait for the next change of that node.
            let event = match self.state.nodes.get(&n) {
                Some(s) if s.dead => Event::NodeDown(n),
                Some(_) => Event::NodeBack(n),
                None => continue,
            };
            self.run_plan(
                now,
                obs.cluster,
                event,
                self.state.config.stateful_only,
                Actor::Berth,
            );
        }
    }

    /// A holder fenced by a node-down plan whose move never completed (its target was lost
    /// half-way) is still the dataset's primary when its node returns, but at a stale epoch,
    /// which the driver refuses. The node-back plan does not cover it (it only revokes copies
    /// whose primary moved elsewhere), so the executor re-admits it: assigned again at the
    /// current epoch, its slot restarted in place.
    fn readmit(&mut self, now: u64, obs: &Observation<'_>, node: &NodeId) {
        let c = obs.cluster;
        let mut stale = Vec::new();
        for t in &c.tasks {
            if !t.is_active() || t.node_id.as_ref() != Some(node) {
                continue;
            }
            let (Some(svc), Some(slot)) = (c.service(&t.service_id), t.slot) else {
                continue;
            };
            let Some(st) = svc.policy().ok().and_then(|p| p.stateful) else {
                continue;
            };
            let volume = st.volume_for_slot(slot);
            let key = (svc.name.clone(), slot);
            let Some(ds) = c.dataset(&volume) else {
                continue;
            };
            if self.state.stale.get(&volume) == Some(node)
                && ds.primary.as_ref() == Some(node)
                && !self.state.busy.contains(&key)
            {
                // A fenced volume is presented at the epoch before its fence (the one its
                // holder last mounted at): it is assigned again at the fence's epoch.
                stale.push((key, volume, ds.epoch + u64::from(ds.fenced)));
            }
        }
        stale.sort();
        stale.dedup();
        for ((service, slot), volume, epoch) in stale {
            self.notices.push(Notice::Readmitted {
                service: service.clone(),
                slot,
                node: node.clone(),
            });
            let run = self.state.next_run;
            self.state.next_run += 1;
            let assign = crate::failover::Action::MoveDataset {
                dataset: volume.clone(),
                from: node.clone(),
                to: node.clone(),
                epoch,
                backend: c.dataset(&volume).map(|d| d.backend).unwrap_or_default(),
                copy: false,
            };
            let start = crate::failover::Action::StartTask { node: node.clone() };
            let steps = [assign, start]
                .into_iter()
                .map(|a| crate::failover::Step {
                    wave: 0,
                    service: Some(service.clone()),
                    slot: Some(slot),
                    action: a,
                })
                .collect::<Vec<_>>();
            self.state.history.push(FailoverRecord {
                run,
                by: Actor::Berth,
                event: None,
                steps: steps.clone(),
                started_ms: now,
                ended_ms: None,
                end: None,
                rebalance: false,
            });
            self.trim_history();
            let key = (service, slot);
            self.state.busy.insert(key.clone());
            let lane = Lane {
                wave: 0,
                slot: Some(key),
                steps: steps
                    .into_iter()
                    .map(|s| LaneStep::Engine(s.action))
                    .collect(),
                i: 0,
                volume: Some(volume),
                epoch: Some(epoch),
                budget: 1,
                done: false,
                stopped: false,
                dropped: false,
                rolled_back: false,
            };
            self.insert_run(
                now,
                run,
                PlanRun {
                    kind: RunKind::Readmit,
                    lanes: vec![lane],
                    wave: 0,
                    last_wave: 0,
                    open: 0,
                    drain: false,
                    lost: None,
                    stopped: Default::default(),
                },
            );
        }
    }

    /// After a pause: re-plan every node already declared dead, resume drains, restart what
    /// failed on reachable nodes.
    fn catch_up_now(&mut self, now: u64, obs: &Observation<'_>, order: &[usize]) {
        // One pass over the tasks, not one per node: 10k nodes × tasks would dominate.
        let mut hosting: BTreeSet<&NodeId> = obs
            .cluster
            .tasks
            .iter()
            .filter(|t| t.is_active())
            .filter_map(|t| t.node_id.as_ref())
            .collect();
        let failed: BTreeSet<&NodeId> = obs.failed.iter().map(|f| &f.node).collect();
        hosting.extend(failed.iter().copied());
        for &i in order {
            let id = obs.cluster.nodes[i].id.clone();
            let seen = obs.seen(i);
            let hosts = hosting.contains(&id);
            let event = if seen.dead && hosts {
                Event::NodeDown(id)
            } else if seen.draining && hosts {
                Event::NodeDrained(id)
            } else if !seen.down && failed.contains(&id) {
                Event::NodeBack(id)
            } else {
                continue;
            };
            self.run_plan(
                now,
                obs.cluster,
                event,
                self.state.config.stateful_only,
                Actor::Berth,
            );
        }
    }
}
