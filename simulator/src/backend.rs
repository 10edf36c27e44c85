//! The simulator as one backend of the engine's executor (`berth_scheduler::executor`), run by
//! the same `Driver` as `berth run`'s: each [`Command`] takes a modelled time, then takes
//! effect on the world and its [`Outcome`] goes back to the driver through the event queue;
//! each timer the driver arms is an event at its time; when the driver waits for an
//! observation, it gets one.
//!
//! | command | duration |
//! |---|---|
//! | fence | `berth.fence` per call; a call the control service answers "not yet" (423: the holder's lease runs) is made again when that lease ends, as `berth run` does, for at most 60 s |
//! | stop-slot, node up (drain, node back) | `berth.stop_latency` |
//! | stop-slot, node lost | the first of: the stop seen (`berth.stop_latency`, if the managers reach the node), the node DOWN for Swarm (at once), the node's lease over (as the control service's liveness says); at most `berth.fence_lease` |
//! | (timer) `recreate` grace | the service's `berth.recreate-grace` |
//! | (timer) target choice | `berth.plan` (the executor's `decide_ms`) |
//! | assign move, shared | `berth.attach` |
//! | assign move, copy | bytes / `berth.move_bandwidth` (× slow disk); after a pre-copy only the writes acknowledged since it started |
//! | pre-copy | the dataset's size / `berth.move_bandwidth` |
//! | assign promote | `berth.promote` |
//! | start-slot | `berth.start_latency` (× slow disk) |
//! | assign recreate, drop-stale, clear-fence-label | 0 |
//!
//! A node label set or cleared outside a plan, and a re-admission, take effect at once.
//!
//! Fence and assign are calls to the control service ([`crate::control`]): berth-volume's own
//! model decides them (a stale epoch, a mount held elsewhere, a lease still running), and its
//! answer becomes the command's outcome as in `berth run` — done, refused (409: the executor
//! re-plans) or retried when the lease ends (423).

use berth_scheduler::executor::{
    Actor, AssignMode, Command, FailedTask, Job, NodeHealth, Notice, Observation, Outcome, RunKind,
    Ticket,
};
use berth_scheduler::failover::Event;

use crate::clock::{Ms, transfer_ms};
use crate::control::{Answer, RETRY_FOR, RETRY_MIN};
use crate::event::Ev;
use crate::policy_kind::PolicyKind;
use crate::state::Sim;
use crate::world::TaskState;

fn event_name(e: &Event) -> &'static str {
    match e {
        Event::NodeDown(_) => "node-down",
        Event::NodeDrained(_) => "node-drained",
        Event::NodeBack(_) => "node-back",
    }
}

impl Sim<'_> {
    /// Hands the executor what the managers and Berth's detector see now, then carries out
    /// what it decided.
    pub fn observe(&mut self) {
        let berth = self.policy.is_berth();
        let health: Vec<NodeHealth> = self
            .nodes
            .iter()
            .map(|n| NodeHealth {
                dead: if berth { n.berth_down } else { n.swarm_down },
                reconnects: if berth {
                    n.berth_reconnects
                } else {
                    n.reconnects
                },
            })
            .collect();
        let mut failed = Vec::new();
        for slot in &self.slots {
            for &t in &slot.tasks {
                let task = &self.tasks[t as usize];
                if task.desired
                    && task.state == TaskState::Dead
                    && self.nodes[task.node as usize].in_contact()
                {
                    failed.push(FailedTask {
                        service: self.scn.services[task.service as usize].name.clone(),
                        slot: task.slot,
                        node: berth_scheduler::model::NodeId::new(
                            self.node_ids[task.node as usize].clone(),
                        ),
                    });
                }
            }
        }
        self.view(true);
        let obs = Observation {
            cluster: &self.view_berth,
            health: Some(&health),
            failed: &failed,
        };
        self.driver.observe(self.now, obs);
        self.pump();
    }

    /// Runs one event's plan by hand (`Actor::Operator`: stateful slots only).
    pub fn run_plan(&mut self, event: Event, by: Actor) {
        self.view(true);
        let stateful_only = by == Actor::Operator;
        self.driver
            .run_plan(self.now, &self.view_berth, event, stateful_only, by);
        self.pump();
    }

    /// Schedules whatever the executor has ready: each command's completion after its
    /// modelled time, each timer at its time.
    pub fn pump(&mut self) {
        loop {
            self.take_notices();
            let batch = self.driver.poll(self.now);
            if batch.work.is_empty() {
                if batch.observe {
                    self.observe();
                }
                return;
            }
            for job in batch.work {
                match job {
                    Job::Timer(id, at) => self.q.push(at, Ev::Timer { id }),
                    Job::Command(ticket, cmd) => {
                        let origin = self
                            .driver
                            .executor()
                            .origin(ticket.id)
                            .map(|(r, l, k)| (r, l, k.clone()));
                        match origin {
                            None | Some((_, _, RunKind::Readmit)) => {
                                if let Some(out) = self.perform(ticket, &cmd, origin.is_some()) {
                                    self.complete(ticket, out);
                                }
                            }
                            Some((run, lane, _)) => {
                                let d = self.command_ms(run, lane, &cmd);
                                self.q.push(self.now + d, Ev::Command { ticket });
                            }
                        }
                    }
                }
            }
        }
    }

    /// A command's modelled time is over: it takes effect.
    pub fn on_command(&mut self, ticket: Ticket) {
        if !self.driver.is_awaited(ticket) {
            // Its run was dropped (a scheduler restart).
            return;
        }
        let Some(cmd) = self
            .driver
            .state()
            .inflight
            .get(&ticket.id)
            .map(|f| f.command.clone())
        else {
            return;
        };
        let origin = self.driver.executor().origin(ticket.id);
        let readmit = matches!(origin, Some((_, _, RunKind::Readmit)));
        let rebalance = matches!(origin, Some((_, _, RunKind::Rebalance)));
        if let Some(out) = self.perform(ticket, &cmd, readmit) {
            if rebalance {
                self.resched.command_done(self.now, &cmd, &out);
            }
            self.complete(ticket, out);
        }
        self.pump();
    }

    fn complete(&mut self, ticket: Ticket, out: Outcome) {
        self.retrying.remove(&ticket);
        if self.driver.complete(ticket, out, self.now) {
            // Once this lane has released the slot (same instant, later in the queue).
            self.q.push(self.now, Ev::Retry);
        }
    }

    fn take_notices(&mut self) {
        for n in self.driver.take_notices() {
            match n {
                Notice::Planned { .. } => self.metrics.engine_calls += 1,
                Notice::PlanFailed { event, error } => {
                    self.log_event(format!("plan_failover({event:?}) failed: {error}"))
                }
                Notice::Nothing { event, by } => {
                    self.log_event(format!("{}: nothing to do for {event:?}", by.as_str()))
                }
                Notice::Launched {
                    event, by, steps, ..
                } => {
                    let node = self
                        .node_index(event.node().as_str())
                        .map(|i| self.node_names[i as usize].clone())
                        .unwrap_or_else(|| event.node().to_string());
                    let label = format!(
                        "{}: {} {node} ({steps} steps)",
                        by.as_str(),
                        event_name(&event)
                    );
                    self.markers.push((self.now, label.clone()));
                    self.log_event(label);
                    self.metrics.failovers += 1;
                }
                Notice::Waits {
                    service,
                    slot,
                    reason,
                } => self.log_event(format!("{service} slot {slot} waits: {reason}")),
                Notice::GraceKept { node } => {
                    let name = self.display(node.as_str());
                    self.log_event(format!(
                        "berth: {name} is back within the grace period; its member stays"
                    ))
                }
                Notice::Readmitted {
                    service,
                    slot,
                    node,
                } => {
                    let name = self.display(node.as_str());
                    self.log_event(format!(
                        "berth: re-admits {service} slot {slot} on {name} at the current epoch"
                    ))
                }
                Notice::LaneDropped { .. } => {}
                Notice::RolledBack {
                    service,
                    slot,
                    node,
                    reason,
                } => {
                    let name = self.display(node.as_str());
                    self.log_event(format!(
                        "berth: moving {service} slot {slot} failed ({reason}); restarted on {name}"
                    ))
                }
                Notice::DrainBudget {
                    service,
                    stopped,
                    budget,
                } => {
                    if self.policy == PolicyKind::Berth {
                        let msg = format!(
                            "drain stopped {stopped} slots of {service} at once \
                             (berth.max-unavailable={budget})"
                        );
                        self.fail("budget", msg);
                    }
                }
            }
        }
    }

    pub(crate) fn display(&self, id: &str) -> String {
        self.node_index(id)
            .map(|i| self.node_names[i as usize].clone())
            .unwrap_or_else(|| id.to_string())
    }

    fn slot_of(&self, service: &str, slot: u64) -> Option<u32> {
        let si = self.service_index(service)?;
        Some(self.services[si as usize].first_slot + (slot - 1) as u32)
    }

    fn slow(&self, node: &berth_scheduler::model::NodeId) -> Ms {
        self.node_index(node.as_str())
            .map(|n| Ms::from(self.nodes[n as usize].slow))
            .unwrap_or(1)
    }

    /// How long the command takes, decided when it starts.
    fn command_ms(&mut self, run: u64, lane: u32, cmd: &Command) -> Ms {
        let bt = &self.scn.berth;
        match cmd {
            // One call; the control service's answer decides what follows (`perform`).
            Command::Fence { .. } => bt.fence,
            Command::StopSlot { wait_ms: None, .. } => bt.stop_latency,
            // A lost node's stop: waited for until seen, until Swarm marks the node DOWN, or
            // until its lease ends, at most the bound.
            Command::StopSlot {
                service,
                slot,
                node,
                wait_ms: Some(bound),
            } => {
                let n = self.node_index(node.as_str());
                // What `berth run` reads of the node's lease (`GET /v1/berth/nodes`).
                let lease_left = n.map_or(0, |n| self.control_lease_left(n));
                let rt = n.map(|n| &self.nodes[n as usize]);
                let until = match rt {
                    None => 0,
                    Some(rt) if rt.swarm_down => 0,
                    // The managers reach it: Swarm stops the task a stop's time from now,
                    // seen then — unless the node's lease ends first (its agent's heartbeats
                    // do not arrive): the wait is over then, the task still stopping.
                    Some(rt) if rt.in_contact() => {
                        self.pending_stop
                            .insert((service.clone(), *slot), self.now + bt.stop_latency);
                        if rt.lease_contact(self.control_up) {
                            bt.stop_latency
                        } else {
                            bt.stop_latency.min(lease_left)
                        }
                    }
                    // Swarm still says Ready but cannot reach it: never seen stopped.
                    Some(_) => lease_left,
                };
                until.min(*bound)
            }
            Command::PreCopy { volume, .. } => {
                let d = self.volume(volume);
                let size = d.map(|d| self.datasets[d as usize].size_bytes).unwrap_or(0);
                let mark = d.map(|d| self.datasets[d as usize].acked).unwrap_or(0);
                self.lane_mark.insert((run, lane), mark);
                transfer_ms(size, bt.move_bandwidth)
            }
            Command::Assign {
                mode,
                primary,
                volume,
                ..
            } => match mode {
                AssignMode::Move { copy: false, .. } => bt.attach,
                AssignMode::Move { from, .. } => {
                    let bytes = self.move_bytes(run, lane, self.volume(volume));
                    let s = self.slow(from).max(self.slow(primary));
                    transfer_ms(bytes, self.scn.berth.move_bandwidth) * s
                }
                AssignMode::Promote { .. } => bt.promote,
                AssignMode::Recreate => 0,
            },
            Command::StartSlot { node, .. } => bt.start_latency * self.slow(node),
            Command::DropStale { .. }
            | Command::SetFenceLabel { .. }
            | Command::ClearFenceLabel { .. } => 0,
        }
    }

    fn volume(&self, name: &str) -> Option<u32> {
        self.volumes.get(name).copied()
    }

    /// Bytes the final copy of a move carries: everything, or only the delta after a pre-copy.
    fn move_bytes(&self, run: u64, lane: u32, dataset: Option<u32>) -> u64 {
        let Some(d) = dataset else { return 0 };
        let ds = &self.datasets[d as usize];
        match self.lane_mark.get(&(run, lane)) {
            Some(mark) => {
                let wb = self.scn.services[ds.service as usize].data.write_bytes;
                ds.acked.saturating_sub(*mark) * wb
            }
            None => ds.size_bytes,
        }
    }

    /// The command takes effect: fence and assign first at the control service, whose "not
    /// yet" schedules the same call again (`None`: no outcome yet); then on the world.
    fn perform(&mut self, ticket: Ticket, cmd: &Command, readmit: bool) -> Option<Outcome> {
        if let Command::Fence { volume, .. } | Command::Assign { volume, .. } = cmd {
            match self.control_call(volume, cmd) {
                Answer::Done(epoch) => {
                    if let Some(d) = self.volume(volume) {
                        let ds = &mut self.datasets[d as usize];
                        if matches!(cmd, Command::Fence { .. }) && epoch > ds.epoch {
                            self.metrics.fences += 1;
                        }
                        ds.epoch = epoch;
                    }
                }
                Answer::Refused {
                    current_epoch,
                    reason,
                } => {
                    self.metrics.control_refusals += 1;
                    self.log_event(format!("control service refuses {volume}: {reason}"));
                    return Some(Outcome::Refused {
                        current_epoch,
                        reason,
                    });
                }
                Answer::NotYet {
                    retry_after,
                    reason,
                } => {
                    let since = *self.retrying.entry(ticket).or_insert(self.now);
                    if self.now - since >= RETRY_FOR {
                        return Some(Outcome::Failed {
                            reason: format!("still failing after {RETRY_FOR} ms: {reason}"),
                        });
                    }
                    self.metrics.control_waits += 1;
                    let at = self.now + retry_after.max(RETRY_MIN) + self.scn.berth.fence;
                    self.q.push(at, Ev::Command { ticket });
                    return None;
                }
            }
        }
        Some(self.take_effect(ticket, cmd, readmit))
    }

    /// The command takes effect on the world.
    fn take_effect(&mut self, ticket: Ticket, cmd: &Command, readmit: bool) -> Outcome {
        let key = self
            .driver
            .executor()
            .origin(ticket.id)
            .map(|(r, l, _)| (r, l));
        match cmd {
            Command::SetFenceLabel { node } | Command::ClearFenceLabel { node } => {
                if let Some(n) = self.node_index(node.as_str()) {
                    self.nodes[n as usize].fenced = matches!(cmd, Command::SetFenceLabel { .. });
                }
                Outcome::Done
            }
            // The control service took it (`perform`); nothing else changes until the assign.
            Command::Fence { .. } => Outcome::Done,
            Command::PreCopy { volume, .. } => {
                if let Some(d) = self.volume(volume) {
                    self.metrics.bytes_moved += self.datasets[d as usize].size_bytes;
                }
                Outcome::Done
            }
            Command::StopSlot {
                service,
                slot,
                node,
                wait_ms,
            } => {
                let (Some(s), Some(n)) =
                    (self.slot_of(service, *slot), self.node_index(node.as_str()))
                else {
                    return Outcome::Done;
                };
                let stop_at = self.pending_stop.remove(&(service.clone(), *slot));
                if wait_ms.is_some() && !self.nodes[n as usize].in_contact() {
                    // A lost node Swarm cannot reach: nothing stops there now. Its slot stays
                    // pinned to it (the service scaled to 0), and its task is retired when the
                    // slot starts elsewhere, as before the stop step.
                    return Outcome::Done;
                }
                if let Some(at) = stop_at.filter(|at| *at > self.now) {
                    // The wait ended with the lease; Swarm's stop lands later.
                    let victims: Vec<u32> = self.slots[s as usize]
                        .tasks
                        .iter()
                        .copied()
                        .filter(|&t| {
                            self.tasks[t as usize].node == n && self.tasks[t as usize].desired
                        })
                        .collect();
                    for t in victims {
                        self.tasks[t as usize].desired = false;
                        self.tasks_gen += 1;
                        self.q.push(at, Ev::StopTask { task: t });
                    }
                    return Outcome::Done;
                }
                let victims: Vec<u32> = self.slots[s as usize]
                    .tasks
                    .iter()
                    .copied()
                    .filter(|&t| self.tasks[t as usize].node == n && self.tasks[t as usize].desired)
                    .collect();
                for t in victims {
                    self.retire_task(t);
                }
                Outcome::Done
            }
            Command::Assign { .. } if readmit => Outcome::Done,
            Command::Assign {
                volume,
                primary,
                mode,
                ..
            } => self.assign(key, volume, primary, mode),
            Command::StartSlot {
                service,
                slot,
                node,
                ..
            } => {
                let (Some(s), Some(n)) =
                    (self.slot_of(service, *slot), self.node_index(node.as_str()))
                else {
                    return Outcome::Failed {
                        reason: "unknown slot or node".into(),
                    };
                };
                if readmit {
                    self.readmit(s, n);
                    return Outcome::Done;
                }
                let copy = key.and_then(|k| self.lane_copy.remove(&k));
                if let Some(k) = key {
                    self.lane_mark.remove(&k);
                }
                self.start(s, n, copy)
            }
            Command::DropStale { volume, node, .. } => {
                let (Some(d), Some(n)) = (self.volume(volume), self.node_index(node.as_str()))
                else {
                    return Outcome::Done;
                };
                let s = self.datasets[d as usize].slot_idx;
                let current = self.datasets[d as usize].current;
                for (i, c) in self.copies.iter_mut().enumerate() {
                    if c.dataset == d && c.node == Some(n) && Some(i as u32) != current {
                        c.revoked = true;
                    }
                }
                let victims: Vec<u32> = self.slots[s as usize]
                    .tasks
                    .iter()
                    .copied()
                    .filter(|&t| self.tasks[t as usize].node == n)
                    .collect();
                for t in victims {
                    self.retire_task(t);
                }
                Outcome::Done
            }
        }
    }

    fn assign(
        &mut self,
        key: Option<(u64, u32)>,
        volume: &str,
        primary: &berth_scheduler::model::NodeId,
        mode: &AssignMode,
    ) -> Outcome {
        let (Some(d), Some(to)) = (self.volume(volume), self.node_index(primary.as_str())) else {
            return Outcome::Failed {
                reason: "unknown volume or node".into(),
            };
        };
        let c = match mode {
            AssignMode::Move { copy: true, .. } => {
                let src = self.datasets[d as usize].current;
                let len = src.map(|c| self.copies[c as usize].len).unwrap_or(0);
                self.metrics.moves += 1;
                let new = self.new_copy(d, Some(to), len);
                if let Some(src) = src
                    && src != new
                {
                    self.copies[src as usize].revoked = true;
                }
                let (run, lane) = key.unwrap_or_default();
                let bytes = self.move_bytes(run, lane, Some(d));
                self.metrics.bytes_moved += bytes;
                new
            }
            // The holder itself, assigned its volume again at the new epoch (a node-back
            // plan's re-admission): its copy stays the data, nothing moves.
            AssignMode::Move { from, .. } if from == primary => return Outcome::Done,
            AssignMode::Move { copy: false, .. } => {
                self.metrics.moves += 1;
                self.new_copy(d, None, 0)
            }
            AssignMode::Promote { .. } => {
                let sb = self.datasets[d as usize].standby;
                let ok = sb.is_some_and(|c| {
                    let c = &self.copies[c as usize];
                    c.alive && c.node == Some(to)
                });
                let Some(sb) = sb.filter(|_| ok) else {
                    self.log_event(format!(
                        "berth: standby of {} is not on {}: lane dropped",
                        self.datasets[d as usize].name, self.node_names[to as usize]
                    ));
                    return Outcome::Refused {
                        current_epoch: None,
                        reason: "the standby is not on the target".into(),
                    };
                };
                self.metrics.moves += 1;
                let ds = &mut self.datasets[d as usize];
                ds.current = Some(sb);
                ds.unreplicated.clear();
                ds.standby = None;
                let svc = ds.service;
                // A new standby elsewhere, usable once it has resynced.
                if let Some(n) = self.pick_standby(svc, to) {
                    let len = self.copies[sb as usize].len;
                    let c = self.new_copy(d, Some(n), len);
                    let size = self.datasets[d as usize].size_bytes;
                    self.copies[c as usize].ready_at =
                        self.now + transfer_ms(size, self.scn.berth.move_bandwidth);
                    self.metrics.bytes_moved += size;
                    self.datasets[d as usize].standby = Some(c);
                }
                if let Some(k) = key {
                    self.lane_copy.insert(k, sb);
                }
                return Outcome::Done;
            }
            AssignMode::Recreate => {
                self.metrics.moves += 1;
                self.new_copy(d, Some(to), 0)
            }
        };
        self.datasets[d as usize].current = Some(c);
        if let Some(k) = key {
            self.lane_copy.insert(k, c);
        }
        Outcome::Done
    }

    /// The re-admitted holder restarts in place on the copy it had.
    fn readmit(&mut self, s: u32, n: u32) {
        let stale: Vec<u32> = self.slots[s as usize]
            .tasks
            .iter()
            .copied()
            .filter(|&t| {
                let t = &self.tasks[t as usize];
                t.node == n && t.desired && t.alive()
            })
            .collect();
        for t in stale {
            let copy = self.tasks[t as usize].copy;
            self.retire_task(t);
            let latency = self.scn.berth.start_latency;
            self.start_task(s, n, copy, latency);
        }
    }

    /// `start-slot`: the new holder mounts the copy the lane prepared, or — for a plain
    /// restart (node back) — the dataset's current copy if it is on that node. A `move` slot
    /// is never started on an empty volume while its data exists elsewhere.
    fn start(&mut self, s: u32, n: u32, mut copy: Option<u32>) -> Outcome {
        let node = self.node_names[n as usize].clone();
        let node = node.as_str();
        let rt = &self.nodes[n as usize];
        // Berth's volumes are mounted by the node's agent: without one answering, no mount.
        let no_agent = self.policy.is_berth()
            && self.slots[s as usize].dataset.is_some()
            && !rt.lease_contact(self.control_up);
        if !rt.in_contact() || rt.berth_down || rt.swarm_down || no_agent {
            self.log_event(format!("start on {node} dropped: the node is gone"));
            return Outcome::Failed {
                reason: "the node is gone".into(),
            };
        }
        if let Some(d) = self.slots[s as usize].dataset
            && self.claims_mounts()
            && let Err(e) = self.control.may_mount(d, &self.node_ids[n as usize])
        {
            // The node's agent refuses the Mount the control service refuses (fenced, another
            // primary or holder): the container never runs, and `berth run`'s start fails.
            self.metrics.claims_refused += 1;
            let msg = format!(
                "start on {node} fails: the control service refuses the mount of {}: {e}",
                self.datasets[d as usize].name
            );
            self.log_event(msg);
            return Outcome::Failed {
                reason: format!("mount refused: {e}"),
            };
        }
        if let Some(d) = self.slots[s as usize].dataset {
            if copy.is_none() {
                let ds = &self.datasets[d as usize];
                let current = ds.current.filter(|&c| {
                    let c = &self.copies[c as usize];
                    c.alive && !c.revoked && (c.node.is_none() || c.node == Some(n))
                });
                let self_rep = self.services[ds.service as usize].self_replicating;
                copy = match current {
                    Some(c) => Some(c),
                    // A member whose disk is gone rejoins empty and resyncs.
                    None if self_rep => Some(self.new_copy(d, Some(n), 0)),
                    None => {
                        if self.data_exists_elsewhere(d) {
                            let msg = format!(
                                "{}: refusing to start on {node} without its data",
                                self.datasets[d as usize].name
                            );
                            self.log_event(msg);
                            // The slot waits; its node's return or a new plan deals with it.
                            return Outcome::Done;
                        }
                        // The data is physically gone (disk lost): nothing better exists.
                        Some(self.new_copy(d, Some(n), 0))
                    }
                };
            }
            let self_rep =
                self.services[self.datasets[d as usize].service as usize].self_replicating;
            if let Some(c) = copy
                && !self_rep
                && self.copies[c as usize].len == 0
                && self.datasets[d as usize].acked > 0
                && self.data_exists_elsewhere(d)
            {
                self.metrics.empty_volume_starts += 1;
                if self.policy.is_berth() {
                    let msg = format!(
                        "{} would start on an empty volume on {node} while its data exists",
                        self.datasets[d as usize].name
                    );
                    self.fail("no-empty-volume", msg);
                }
            }
        }
        self.retire_slot_tasks(s);
        let t = self.add_task(s, n, copy, TaskState::Running);
        let latency = self.scn.berth.start_latency;
        self.tasks[t as usize].started = self.now.saturating_sub(latency);
        if let Some(c) = copy {
            // A recreated member resyncs from its peers first.
            let d = self.copies[c as usize].dataset;
            let svc = self.datasets[d as usize].service;
            if self.services[svc as usize].self_replicating {
                let max = self.service_max_len(svc);
                if self.copies[c as usize].len < max {
                    let size = self.datasets[d as usize].size_bytes;
                    let slow = Ms::from(self.nodes[n as usize].slow);
                    let done = self.now + transfer_ms(size, self.scn.berth.move_bandwidth) * slow;
                    self.copies[c as usize].ready_at = done;
                    self.copies[c as usize].len = max;
                    self.metrics.bytes_moved += size;
                    self.q.push(done, Ev::Resynced { copy: c });
                }
            }
        }
        let sl = &self.slots[s as usize];
        let msg = format!(
            "{} slot {} running on {node}",
            self.scn.services[sl.service as usize].name, sl.slot
        );
        self.log_event(msg);
        Outcome::Done
    }
}
