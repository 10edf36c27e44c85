//! The simulation loop: one event at a time, in (time, sequence) order, on one thread. After
//! every event that can change who may write, [`Sim::refresh`] recomputes the writers of each
//! dataset and the availability of each service, and the checker runs.
//!
//! The loop dispatches; the world's state and physics are `state.rs` (nodes, containers,
//! copies, clients); what happens *because* of an event — Swarm's reschedule, a human's
//! action, Berth's executor — is the policy's, in `policy/`.

use crate::clock::{Ms, transfer_ms};
use crate::policy;
use crate::world::TaskState;

pub use crate::event::{Ev, NodeMark};
pub use crate::state::{Sim, SimError, TRACE_LINES};

impl Sim<'_> {
    /// Runs to the scenario's end or the first fatal violation.
    pub fn run(&mut self) {
        // Writers and availability as placed, before the first event.
        self.refresh();
        let end = self.scn.duration;
        while let Some(at) = self.q.peek_time() {
            if at > end || self.violation.is_some() {
                break;
            }
            let Some((at, ev)) = self.q.pop() else { break };
            self.now = at;
            self.metrics.events += 1;
            if let Ev::Write(s) = ev {
                self.on_write(s);
                continue;
            }
            self.handle(ev);
            self.refresh();
        }
        // A fatal violation stops the clock where it happened: the numbers cover what ran.
        if self.violation.is_none() {
            self.now = end.max(self.now);
        }
        self.finish();
        self.finish_rescheduling();
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Write(_) => {}
            Ev::Fault(a) => {
                // Containers die and nodes lose or regain contact: the view's tasks change.
                self.tasks_gen += 1;
                self.apply_fault(a)
            }
            Ev::SwarmDown { node, generation } => {
                let n = &mut self.nodes[node as usize];
                if n.generation != generation || n.swarm_down || !self.quorum {
                    return;
                }
                n.swarm_down = true;
                self.log_event(format!(
                    "swarm marks {} DOWN",
                    self.node_names[node as usize]
                ));
                // A replacement waiting for a task on this node waits no more.
                policy::swarm_default::release(self, None);
                policy::on_swarm_down(self, node);
            }
            Ev::BerthDetect { node, generation } => {
                let n = &self.nodes[node as usize];
                if n.berth_generation != generation || n.berth_down || !self.policy.is_berth() {
                    return;
                }
                // The verdict comes from the control service's heartbeats.
                if !self.quorum || !self.scheduler_up || !self.control_up {
                    // Re-armed when the scheduler / quorum is back.
                    return;
                }
                if !self.control_says_lost(node) {
                    return;
                }
                self.nodes[node as usize].berth_down = true;
                self.log_event(format!(
                    "berth detects {} dead",
                    self.node_names[node as usize]
                ));
                policy::berth::on_detect(self, node);
            }
            Ev::LeaseExpired { node, generation } => {
                if self.nodes[node as usize].berth_generation == generation {
                    self.log_event(format!(
                        "{}: leases expired",
                        self.node_names[node as usize]
                    ));
                }
            }
            Ev::TaskReady { task } => self.on_task_ready(task),
            Ev::StopTask { task } => self.stop_task(task),
            Ev::Resynced { copy } => {
                let d = self.copies[copy as usize].dataset;
                let svc = self.datasets[d as usize].service;
                let max = self.service_max_len(svc);
                let c = &mut self.copies[copy as usize];
                if c.alive {
                    c.len = c.len.max(max);
                }
            }
            Ev::SwarmReconcile => policy::swarm_default::reconcile(self),
            Ev::SwarmWaitOver { task } => policy::swarm_default::release(self, Some(task)),
            Ev::Operator {
                node,
                generation,
                drain,
            } => policy::manual::on_operator(self, node, generation, drain),
            Ev::Command { ticket } => self.on_command(ticket),
            Ev::Timer { id } => {
                self.driver.fire(id, self.now);
                self.pump();
            }
            Ev::Retry => policy::berth::retry_dropped(self),
            Ev::RebalancePass => policy::rebalance::pass(self),
            Ev::ForceUpdate { step } => policy::swarm_force::step(self, step),
            Ev::Sample => self.sample_balance(),
        }
    }

    /// The container has stopped (it may have died meanwhile); the managers no longer count
    /// it in its slot.
    fn stop_task(&mut self, t: u32) {
        let task = &mut self.tasks[t as usize];
        task.desired = false;
        let stopped = task.alive();
        if stopped {
            task.state = TaskState::Stopped;
        }
        if task.ended.is_none() {
            task.ended = Some(self.now);
        }
        let slot = task.slot_idx;
        self.slots[slot as usize].tasks.retain(|x| *x != t);
        self.tasks_gen += 1;
        if stopped {
            self.release_mount(t);
        }
        // Swarm's replacement for it may start, if the managers hear of the stop.
        policy::swarm_default::release(self, None);
        // Its node may take a standby now (a replica's node takes none).
        self.repair_standbys();
    }

    fn on_task_ready(&mut self, t: u32) {
        let task = &self.tasks[t as usize];
        if task.state != TaskState::Starting {
            return;
        }
        let node = task.node;
        if !self.nodes[node as usize].up {
            self.tasks[t as usize].state = TaskState::Dead;
            self.tasks_gen += 1;
            return;
        }
        self.tasks[t as usize].state = TaskState::Running;
        self.check_constraints(t);
        policy::swarm_force::on_ready(self, t);
        let svc = &self.services[self.tasks[t as usize].service as usize];
        if svc.self_replicating
            && let Some(c) = self.tasks[t as usize].copy
        {
            // A fresh member resyncs from its peers before it counts.
            let d = self.copies[c as usize].dataset;
            let size = self.datasets[d as usize].size_bytes;
            let max = self.service_max_len(self.tasks[t as usize].service);
            if self.copies[c as usize].len < max {
                self.copies[c as usize].len = max;
                let bw = self.scn.berth.move_bandwidth;
                let done =
                    self.now + transfer_ms(size, bw) * Ms::from(self.nodes[node as usize].slow);
                self.copies[c as usize].ready_at = done;
                self.metrics.bytes_moved += size;
                self.q.push(done, Ev::Resynced { copy: c });
            }
        }
    }

    fn finish(&mut self) {
        let now = self.now;
        for d in 0..self.datasets.len() {
            let ds = &self.datasets[d];
            if self.services[ds.service as usize].self_replicating {
                continue;
            }
            let lost = self.dataset_lost(d as u32);
            if lost > 0 {
                let msg = format!(
                    "end: dataset {} lost {lost} of {} acknowledged writes",
                    ds.name, ds.acked
                );
                self.log_event(msg);
            }
        }
        for svc in &mut self.services {
            if let Some(since) = svc.down_since.take() {
                svc.unavailable_ms += now - since;
                svc.outages.push((since, now));
            }
        }
        for sl in &mut self.slots {
            if let Some(since) = sl.down_since.take() {
                sl.outages.push((since, now));
            }
        }
        for d in 0..self.datasets.len() {
            if let Some(since) = self.datasets[d].double_since.take() {
                self.metrics.double_writer_ms += now - since;
                self.double_log.push((d as u32, since, now));
            }
        }
    }
}
