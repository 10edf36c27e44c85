//! The simulated world's state: what is physically true at the current virtual instant
//! (nodes, containers, slots, datasets and copies, the event queue, the engine's executor), and
//! the physics every part of the simulator shares — placing tasks, retiring them, copies,
//! the engine's views. The loop that advances it is `sim.rs`; the reactions are `policy/`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use berth_control_model::gate::MountGate;
use berth_control_model::lease::{AgentTiming, Keeper};

use berth_scheduler::constraint::{self, Constraint};
use berth_scheduler::executor::{self, Driver, StandbyFacts, Timers};
use berth_scheduler::model::{Backend, Cluster, FailoverMode};
use berth_scheduler::schedule;

use berth_control_model::liveness::Timing;

use crate::clock::{Ms, fmt_ms};
use crate::control::ControlRt;
use crate::event::{Ev, NodeMark};
use crate::faults::{Fault, timeline};
use crate::metrics::Metrics;
use crate::policy_kind::PolicyKind;
use crate::queue::Queue;
use crate::rescheduling::ReschedRt;
use crate::scenario::Scenario;
use crate::storage::{CopyRt, DatasetRt};
use crate::trace::Trace;
use crate::violation::Violation;
use crate::world::{AgentState, Beats, NodeRt, ServiceRt, SlotRt, TaskRt, TaskState};

/// Trace lines kept for the failure report (and `run --trace`).
pub const TRACE_LINES: usize = 400;

/// The agent's own defaults (`berth-volume agent`): its drift margin is what the gate keeps
/// back from the lease.
pub fn agent_timing() -> AgentTiming {
    AgentTiming::default()
}

/// The lease the control service grants (`control --lease`): `berth.fence_lease`; a scenario
/// without one (the control service fences at once) gets `berth.lease` plus the agent's drift
/// margin, so the gate closes `berth.lease` after the last heartbeat.
pub fn control_lease_ms(scn: &Scenario) -> Ms {
    let bt = &scn.berth;
    if bt.fence_lease > 0 {
        bt.fence_lease
    } else {
        bt.lease + agent_timing().drift_margin.as_millis() as Ms
    }
}

/// An instant of the simulator's clock on the agent's boot clock: the simulated node booted
/// when the run started, and its clock counts through a freeze.
pub fn boot(t: Ms) -> Duration {
    Duration::from_millis(t)
}

pub struct Sim<'a> {
    pub scn: &'a Scenario,
    pub policy: PolicyKind,
    pub seed: u64,
    pub now: Ms,
    pub q: Queue<Ev>,
    pub nodes: Vec<NodeRt>,
    pub services: Vec<ServiceRt>,
    pub slots: Vec<SlotRt>,
    pub tasks: Vec<TaskRt>,
    pub datasets: Vec<DatasetRt>,
    pub copies: Vec<CopyRt>,
    pub quorum: bool,
    pub scheduler_up: bool,
    /// The volume control service answers (no `control-loss` under way).
    pub control_up: bool,
    /// The volume control service's state and node liveness: berth-volume's own model.
    pub control: ControlRt,
    /// Per slot (service, slot): when Swarm's stop of its task on a lost but reachable node
    /// lands, which may be after the stop step is over (it waits at most for the lease).
    pub pending_stop: BTreeMap<(String, u64), Ms>,
    /// Swarm's replacements created but not started yet, each (new task, the old task whose
    /// end the managers wait to hear of): SwarmKit starts a replacement only once the task it
    /// replaces has stopped (`policy::swarm_default::release`).
    pub swarm_waits: Vec<(u32, u32)>,
    /// The engine's failover executor (Berth's, or the operator following its plans), in the
    /// driver `berth run` uses too; the simulator's event queue runs its timers, and it keeps
    /// no journal (a scheduler restart here is one without state).
    pub driver: Driver,
    /// Per executor lane (run, lane): the copy its start mounts, and the acknowledged writes
    /// when its pre-copy started (the delta is what came after).
    pub lane_copy: BTreeMap<(u64, u32), u32>,
    pub lane_mark: BTreeMap<(u64, u32), u64>,
    /// Fence and assign calls the control service answered "not yet", by ticket: when the
    /// first such answer came (`berth run` gives up after `control::RETRY_FOR`).
    pub retrying: BTreeMap<executor::Ticket, Ms>,
    /// Bumped whenever the engine's task list may change (tasks, contact); each view
    /// (Swarm's, Berth's) rebuilds its tasks only when it moved on.
    pub tasks_gen: u64,
    pub view_gen: [u64; 2],
    /// Per node, which views (bit 0 Swarm's, bit 1 Berth's) carry the fence label.
    pub view_fenced: Vec<u8>,
    /// Dataset index by volume name.
    pub volumes: BTreeMap<String, u32>,
    pub constraints: Vec<Vec<Constraint>>,
    /// The engine's input, patched in place for each decision (nodes are not re-cloned).
    pub view_berth: Cluster,
    /// The same without `berth.*` labels: what plain Swarm decides from.
    pub view_swarm: Cluster,
    pub metrics: Metrics,
    pub trace: Trace,
    pub violation: Option<Violation>,
    pub node_log: Vec<(Ms, u32, NodeMark)>,
    pub markers: Vec<(Ms, String)>,
    /// Display names, by node index.
    pub node_names: Vec<String>,
    /// Engine node IDs, by node index (sorted: `node_index` searches them).
    pub node_ids: Vec<String>,
    pub faults: Vec<Fault>,
    /// Closed double-writer windows (dataset, from, to), for the plot.
    pub double_log: Vec<(u32, Ms, Ms)>,
    /// Rescheduling's books and measures (a scenario with `[rebalance]`).
    pub resched: ReschedRt,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("initial placement: {0}")]
    Plan(#[from] schedule::PlanError),
}

impl<'a> Sim<'a> {
    pub fn new(
        scn: &'a Scenario,
        policy: PolicyKind,
        seed: u64,
        faults: Vec<Fault>,
    ) -> Result<Sim<'a>, SimError> {
        let sw = &scn.swarm;
        let bt = &scn.berth;
        let nodes = (0..scn.nodes.len() as u32)
            .map(|i| {
                let mut prng = crate::rng::SimRng::derive(
                    seed,
                    crate::rng::Stream::BerthHeartbeat,
                    u64::from(i),
                );
                let keeper = Arc::new(Keeper::new(agent_timing()));
                NodeRt {
                    up: true,
                    frozen: false,
                    agent: AgentState::Running,
                    agent_since: 0,
                    keeper,
                    fed: None,
                    mounts: Vec::new(),
                    berth_contact: true,
                    berth_generation: 0,
                    berth_lost_at: None,
                    berth_reconnects: 0,
                    berth_since: 0,
                    reach_managers: true,
                    reach_storage: true,
                    draining: false,
                    slow: 1,
                    swarm_down: false,
                    berth_down: false,
                    fenced: false,
                    generation: 0,
                    reconnects: 0,
                    berth_phase: prng.range(0, bt.heartbeat - 1),
                    beats: Beats::new(seed, i, sw.heartbeat, sw.heartbeat_jitter),
                }
            })
            .collect();
        let mut constraints = Vec::new();
        for s in &scn.cluster.services {
            constraints.push(constraint::parse_all(&s.placement.constraints).unwrap_or_default());
        }
        let mut view_swarm = scn.cluster.clone();
        for s in &mut view_swarm.services {
            s.labels.retain(|k, _| !k.starts_with("berth."));
        }
        let names = scn.node_names();
        let ids = scn.node_ids();
        let registered: Vec<(String, String)> = ids.iter().cloned().zip(names).collect();
        let control = ControlRt::new(
            Timing {
                interval_ms: bt.heartbeat,
                misses: u32::try_from(bt.misses).unwrap_or(u32::MAX),
                lease_ms: control_lease_ms(scn),
            },
            bt.fence_lease > 0,
            &registered,
        );
        let mut sim = Sim {
            scn,
            policy,
            seed,
            now: 0,
            q: Queue::default(),
            nodes,
            services: Vec::new(),
            slots: Vec::new(),
            tasks: Vec::new(),
            datasets: Vec::new(),
            copies: Vec::new(),
            quorum: true,
            scheduler_up: true,
            control_up: true,
            control,
            pending_stop: BTreeMap::new(),
            driver: Driver::new(
                executor::Config {
                    incremental: bt.incremental,
                    decide_ms: bt.plan,
                    reconcile: policy.is_berth(),
                    stateful_only: false,
                    history_limit: None,
                    // A lost node's stop is waited for at most the control service's lease.
                    stop_wait_ms: bt.fence_lease,
                },
                Timers::Queued,
                false,
            ),
            lane_copy: BTreeMap::new(),
            lane_mark: BTreeMap::new(),
            retrying: BTreeMap::new(),
            swarm_waits: Vec::new(),
            volumes: BTreeMap::new(),
            tasks_gen: 1,
            view_gen: [0; 2],
            view_fenced: Vec::new(),
            constraints,
            view_berth: scn.cluster.clone(),
            view_swarm,
            metrics: Metrics::default(),
            trace: Trace::new(TRACE_LINES),
            violation: None,
            node_log: Vec::new(),
            markers: Vec::new(),
            node_names: scn.node_names(),
            node_ids: scn.node_ids(),
            faults,
            double_log: Vec::new(),
            resched: ReschedRt::default(),
        };
        // Every agent holds a lease when the run starts (it registered and beat at 0).
        for n in 0..sim.nodes.len() as u32 {
            sim.feed_lease(n, 0);
        }
        sim.place_initial()?;
        if let Some(r) = &scn.rebalance {
            // A node that joins later takes nothing until then (the initial plan already saw
            // it drained: `scenario::load`).
            for &(at, n) in &r.joins {
                sim.nodes[n as usize].draining = true;
                sim.q.push(
                    at,
                    Ev::Fault(crate::faults::FaultAction::Activate { node: n }),
                );
            }
            sim.q.push(0, Ev::Sample);
            match policy {
                PolicyKind::Berth | PolicyKind::BerthMoveAll => {
                    sim.q.push(r.resync, Ev::RebalancePass)
                }
                PolicyKind::SwarmForce => sim.q.push(r.force_at, Ev::ForceUpdate { step: 0 }),
                PolicyKind::SwarmDefault | PolicyKind::Manual => {}
            }
        }
        for (t, a) in timeline(&sim.faults) {
            sim.q.push(t, Ev::Fault(a));
        }
        for (i, s) in sim.services.iter().enumerate() {
            if s.writes_every_nanos > 0 {
                sim.q.push(0, Ev::Write(i as u32));
            }
        }
        Ok(sim)
    }

    /// All policies start from the same placement — the engine's, with Berth's labels — so the
    /// faults hit the same tasks and the comparison is of the reaction alone.
    fn place_initial(&mut self) -> Result<(), SimError> {
        let plan = schedule::plan(&self.scn.cluster)?;
        let mut first = 0u32;
        for (si, spec) in self.scn.services.iter().enumerate() {
            let st = spec.policy.stateful.as_ref();
            let rate = spec.data.writes_per_sec;
            self.services.push(ServiceRt {
                first_slot: first,
                replicas: spec.replicas,
                stateful: st.is_some(),
                self_replicating: st.is_some_and(|s| s.failover == FailoverMode::Recreate),
                writes_every_nanos: if st.is_some() && rate > 0 {
                    1_000_000_000 / rate
                } else {
                    0
                },
                next_write: 0,
                acked: 0,
                rejected: 0,
                rr: 0,
                available: true,
                down_since: None,
                unavailable_ms: 0,
                outages: Vec::new(),
            });
            for slot in 1..=spec.replicas {
                let dataset = st.map(|st| {
                    let d = self.datasets.len() as u32;
                    self.volumes.insert(st.volume_for_slot(slot), d);
                    self.datasets.push(DatasetRt {
                        name: st.volume_for_slot(slot),
                        service: si as u32,
                        slot,
                        slot_idx: first + (slot - 1) as u32,
                        backend: st.backend,
                        size_bytes: spec.data.size_bytes,
                        epoch: 1,
                        current: None,
                        standby: None,
                        acked: 0,
                        unreplicated: Default::default(),
                        writers: Vec::new(),
                        rr: 0,
                        double_since: None,
                        home: None,
                    });
                    d
                });
                self.slots.push(SlotRt {
                    service: si as u32,
                    slot,
                    tasks: Vec::new(),
                    dataset,
                    serving: false,
                    down_since: None,
                    outages: Vec::new(),
                });
            }
            first += spec.replicas as u32;
        }
        for p in &plan.placements {
            let (Some(si), Some(slot), Some(node)) = (
                self.service_index(&p.service),
                p.slot,
                self.node_index(p.node.as_str()),
            ) else {
                continue;
            };
            let slot_idx = self.services[si as usize].first_slot + (slot - 1) as u32;
            let copy = match self.slots[slot_idx as usize].dataset {
                Some(d) => {
                    let c = self.new_copy(d, Some(node), 0);
                    let ds = &mut self.datasets[d as usize];
                    ds.current = Some(c);
                    ds.home = Some(node);
                    Some(c)
                }
                None => None,
            };
            let t = self.add_task(slot_idx, node, copy, TaskState::Running);
            self.tasks[t as usize].started = 0;
        }
        // Standbys once every replica is placed, so none lands next to a sibling replica.
        for d in 0..self.datasets.len() {
            let ds = &self.datasets[d];
            if ds.backend != Backend::Replicated {
                continue;
            }
            let (service, home) = (ds.service, ds.home);
            if let Some(home) = home
                && let Some(sb) = self.pick_standby(service, home)
            {
                let c = self.new_copy(d as u32, Some(sb), 0);
                self.datasets[d].standby = Some(c);
            }
        }
        for p in &plan.pending {
            self.trace.push(
                0,
                format!(
                    "{} slot {} pending: {}",
                    p.service,
                    p.slot.unwrap_or_default(),
                    p.message()
                ),
            );
        }
        Ok(())
    }

    pub fn service_index(&self, name: &str) -> Option<u32> {
        self.scn
            .services
            .binary_search_by(|s| s.name.as_str().cmp(name))
            .ok()
            .map(|i| i as u32)
    }

    /// A node's index from its engine ID.
    pub fn node_index(&self, id: &str) -> Option<u32> {
        self.node_ids
            .binary_search_by(|n| n.as_str().cmp(id))
            .ok()
            .map(|i| i as u32)
    }

    pub fn dataset_index(&self, name: &str) -> Option<u32> {
        // Datasets are few per service; find via the slot template.
        self.datasets
            .iter()
            .position(|d| d.name == name)
            .map(|i| i as u32)
    }

    /// A new copy of dataset `d` on `node` (`None` = shared storage) holding `len` writes.
    /// Shared datasets have exactly one copy, reused.
    pub fn new_copy(&mut self, d: u32, node: Option<u32>, len: u64) -> u32 {
        let ds = &self.datasets[d as usize];
        if ds.backend == Backend::Shared {
            if let Some(c) = ds.current {
                return c;
            }
            self.copies.push(CopyRt {
                dataset: d,
                node: None,
                len,
                alive: true,
                revoked: false,
                ready_at: 0,
            });
            return (self.copies.len() - 1) as u32;
        }
        self.copies.push(CopyRt {
            dataset: d,
            node,
            len,
            alive: true,
            revoked: false,
            ready_at: 0,
        });
        (self.copies.len() - 1) as u32
    }

    /// The engine's choice of a standby node (`executor::pick_standby`), from what the
    /// world knows: which nodes are up and free of the service's replicas and standbys, and
    /// how many live copies each holds.
    pub fn pick_standby(&self, service: u32, primary: u32) -> Option<u32> {
        let mut facts: Vec<StandbyFacts> = self
            .nodes
            .iter()
            .map(|rt| StandbyFacts {
                free: rt.up && !rt.swarm_down && !rt.draining,
                copies: 0,
            })
            .collect();
        for c in &self.copies {
            if let Some(n) = c.node
                && c.alive
                && !c.revoked
            {
                facts[n as usize].copies += 1;
            }
        }
        for ds in &self.datasets {
            if ds.service == service
                && let Some(n) = ds.standby.and_then(|c| self.copies[c as usize].node)
            {
                facts[n as usize].free = false;
            }
        }
        let svc = &self.services[service as usize];
        let first = svc.first_slot as usize;
        for slot in &self.slots[first..first + svc.replicas as usize] {
            for &t in &slot.tasks {
                facts[self.tasks[t as usize].node as usize].free = false;
            }
        }
        let primary = berth_scheduler::model::NodeId::new(self.node_ids[primary as usize].clone());
        let name = &self.scn.services[service as usize].name;
        executor::pick_standby(&self.scn.cluster, name, &primary, &facts)
            .and_then(|n| self.node_index(n.as_str()))
    }

    /// Adds a task (starting or running) to a slot.
    pub fn add_task(
        &mut self,
        slot_idx: u32,
        node: u32,
        copy: Option<u32>,
        state: TaskState,
    ) -> u32 {
        let slot = &self.slots[slot_idx as usize];
        let epoch = slot
            .dataset
            .map(|d| self.datasets[d as usize].epoch)
            .unwrap_or(0);
        let id = self.tasks.len() as u32;
        self.tasks_gen += 1;
        self.tasks.push(TaskRt {
            service: slot.service,
            slot: slot.slot,
            slot_idx,
            node,
            state,
            desired: true,
            epoch,
            copy,
            started: self.now,
            ended: None,
            gate: None,
        });
        if self.policy.is_berth() && slot.dataset.is_some() {
            // The Mount claims the volume at the control service in the agent's current lease
            // period; its writes pass the gate from then on.
            let rt = &mut self.nodes[node as usize];
            let name = slot
                .dataset
                .map(|d| self.datasets[d as usize].name.clone())
                .unwrap_or_default();
            let gate = MountGate::new(&name, Some(rt.keeper.clone()), rt.keeper.period());
            rt.mounts.push(id);
            self.tasks[id as usize].gate = Some(gate);
        }
        self.slots[slot_idx as usize].tasks.push(id);
        if let Some(d) = self.slots[slot_idx as usize].dataset {
            let ds = &mut self.datasets[d as usize];
            ds.home = Some(node);
            if let Some(c) = copy {
                ds.current = Some(c);
                // Mounting the standby makes it the primary copy (what a replicating volume
                // driver does when Swarm happens to land the task there).
                if ds.standby == Some(c) {
                    ds.standby = None;
                    ds.unreplicated.clear();
                }
            }
        }
        self.claim_mount(id);
        if state == TaskState::Running {
            self.check_constraints(id);
        }
        id
    }

    /// The managers no longer want the task; it stops now if its node can hear them,
    /// otherwise it keeps running (and writing) until the node reconnects.
    /// Retires every task the slot still wants running, before its replacement starts.
    pub fn retire_slot_tasks(&mut self, slot: u32) {
        let old: Vec<u32> = self.slots[slot as usize]
            .tasks
            .iter()
            .copied()
            .filter(|&t| self.tasks[t as usize].desired)
            .collect();
        for t in old {
            self.retire_task(t);
        }
    }

    pub fn retire_task(&mut self, t: u32) {
        let node = self.tasks[t as usize].node;
        let reachable = self.nodes[node as usize].in_contact();
        let task = &mut self.tasks[t as usize];
        task.desired = false;
        self.tasks_gen += 1;
        if reachable || !task.alive() {
            let stopped = task.alive();
            if stopped {
                task.state = TaskState::Stopped;
            }
            if task.ended.is_none() {
                task.ended = Some(self.now);
            }
            let slot = task.slot_idx;
            self.slots[slot as usize].tasks.retain(|x| *x != t);
            if stopped {
                self.release_mount(t);
            }
        }
    }

    /// Starts a container: running after `latency` (scaled by a slow disk).
    pub fn start_task(&mut self, slot_idx: u32, node: u32, copy: Option<u32>, latency: Ms) -> u32 {
        let t = self.add_task(slot_idx, node, copy, TaskState::Starting);
        let slow = Ms::from(self.nodes[node as usize].slow);
        self.q
            .push(self.now + latency * slow, Ev::TaskReady { task: t });
        t
    }

    /// The copy a task on `node` mounts for dataset `d` under plain Swarm: the shared copy, or
    /// whatever volume of that name the node's disk has — or a new, empty one.
    pub fn local_volume(&mut self, d: u32, node: u32) -> (u32, bool) {
        let ds = &self.datasets[d as usize];
        if ds.backend == Backend::Shared {
            return (self.new_copy(d, None, 0), false);
        }
        let found = self
            .copies
            .iter()
            .enumerate()
            .rev()
            .find(|(_, c)| c.dataset == d && c.node == Some(node) && c.alive && !c.revoked)
            .map(|(i, _)| i as u32);
        match found {
            Some(c) => (c, false),
            None => (self.new_copy(d, Some(node), 0), true),
        }
    }

    /// Whether the managers want any task on `node` (a fault on an empty node needs no plan).
    pub fn hosts_desired(&self, node: u32) -> bool {
        self.slots
            .iter()
            .flat_map(|s| s.tasks.iter())
            .any(|&t| self.tasks[t as usize].node == node && self.tasks[t as usize].desired)
    }

    /// Whether some slot has no task the managers want (waiting for room or for a node).
    pub fn has_missing_slots(&self) -> bool {
        self.slots
            .iter()
            .any(|s| !s.tasks.iter().any(|&t| self.tasks[t as usize].desired))
    }

    /// Whether some other live copy of `d` holds writes an empty copy would not.
    pub fn data_exists_elsewhere(&self, d: u32) -> bool {
        self.copies
            .iter()
            .any(|c| c.dataset == d && c.alive && !c.revoked && c.len > 0)
    }

    /// Longest live copy among a self-replicating service's members.
    pub fn service_max_len(&self, service: u32) -> u64 {
        self.copies
            .iter()
            .filter(|c| c.alive && self.datasets[c.dataset as usize].service == service)
            .map(|c| c.len)
            .max()
            .unwrap_or(0)
    }

    /// Acknowledged writes of a dataset on no copy it can continue from: its current copy,
    /// or — while it waits with that copy's disk gone — its standby.
    pub fn dataset_lost(&self, d: u32) -> u64 {
        let ds = &self.datasets[d as usize];
        let len = |c: Option<u32>| {
            c.map(|c| &self.copies[c as usize])
                .filter(|c| c.alive)
                .map(|c| c.len)
                .unwrap_or(0)
        };
        let current_gone = ds.current.is_some_and(|c| !self.copies[c as usize].alive);
        let best = if current_gone {
            len(ds.standby)
        } else {
            len(ds.current)
        };
        ds.acked.saturating_sub(best)
    }

    pub fn log_event(&mut self, msg: String) {
        self.trace.push(self.now, msg);
    }

    /// Fatal for every policy: Swarm itself never runs a task against its constraints.
    pub(crate) fn check_constraints(&mut self, t: u32) {
        let task = &self.tasks[t as usize];
        let node = &self.scn.cluster.nodes[task.node as usize];
        if !constraint::node_matches(&self.constraints[task.service as usize], node) {
            let msg = format!(
                "{} slot {} runs on {} against its constraints",
                self.scn.services[task.service as usize].name,
                task.slot,
                self.node_names[task.node as usize]
            );
            self.fail("constraints", msg);
        }
    }

    pub fn fail(&mut self, invariant: &'static str, message: String) {
        if self.violation.is_none() {
            self.trace
                .push(self.now, format!("VIOLATION {invariant}: {message}"));
            self.violation = Some(Violation {
                invariant,
                at: self.now,
                message,
            });
        }
    }

    pub fn fmt_now(&self) -> String {
        fmt_ms(self.now)
    }
}
