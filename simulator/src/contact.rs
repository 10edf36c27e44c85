//! Faults applied to the world, and what losing or regaining the managers does to a node:
//! heartbeat timers armed (Swarm's DOWN, Berth's detection, holder leases) or reset, missed
//! shutdowns delivered, and the policy told.

use berth_scheduler::model::Backend;

use berth_control_model::wire::HeartbeatReply;

use crate::clock::{Ms, transfer_ms};
use crate::event::{Ev, NodeMark};
use crate::faults::FaultAction;
use crate::policy;
use crate::policy_kind::PolicyKind;
use crate::scenario::DataPath;
use crate::state::{Sim, agent_timing, boot};
use crate::world::{AgentState, TaskState};

impl Sim<'_> {
    /// Applies one fault action, then what it did to each agent's heartbeats: a node whose
    /// agent no longer reaches the control service (or reaches it again) is lost (or back)
    /// for Berth, whatever Swarm sees.
    pub(crate) fn apply_fault(&mut self, a: FaultAction) {
        let swarm_back = self.apply_action(a);
        let mut back = false;
        for n in 0..self.nodes.len() as u32 {
            let rt = &self.nodes[n as usize];
            match (rt.berth_contact, rt.lease_contact(self.control_up)) {
                (true, false) => self.berth_lost(n),
                (false, true) => {
                    self.berth_back(n);
                    back = true;
                }
                _ => {}
            }
        }
        if let Some(n) = swarm_back {
            // After the heartbeats: the policy sees the node back for Swarm and for Berth.
            self.contact_back(n);
        } else if a == FaultAction::ControlUp {
            if self.policy.is_berth() {
                policy::berth::catch_up(self);
            }
        } else if back && self.policy.is_berth() {
            policy::berth::on_back(self, 0);
        }
    }

    /// The action itself; a node that reaches the managers again is returned, to be handled
    /// once its agent's heartbeats are.
    fn apply_action(&mut self, a: FaultAction) -> Option<u32> {
        let name = |s: &Self, n: u32| s.node_names[n as usize].clone();
        match a {
            FaultAction::Crash { node } => {
                if !self.nodes[node as usize].up {
                    return None;
                }
                self.log_event(format!("fault: {} crashes", name(self, node)));
                self.node_log.push((self.now, node, NodeMark::Down));
                let had_contact = self.nodes[node as usize].in_contact();
                self.nodes[node as usize].up = false;
                // Whatever was frozen or stopped on it is gone; it boots afresh.
                self.nodes[node as usize].frozen = false;
                for t in &mut self.tasks {
                    if t.node == node && t.alive() {
                        t.state = TaskState::Dead;
                        t.ended = Some(self.now);
                    }
                }
                if had_contact {
                    self.contact_lost(node);
                }
            }
            FaultAction::Recover { node } => {
                if self.nodes[node as usize].up {
                    return None;
                }
                self.log_event(format!("fault: {} boots", name(self, node)));
                self.node_log.push((self.now, node, NodeMark::Up));
                let rt = &mut self.nodes[node as usize];
                rt.up = true;
                // Its agent starts with the node: a new process, no lease yet.
                rt.agent = AgentState::Running;
                rt.agent_since = self.now;
                rt.keeper = std::sync::Arc::new(berth_control_model::lease::Keeper::new(
                    crate::state::agent_timing(),
                ));
                rt.fed = None;
                if self.nodes[node as usize].in_contact() {
                    return Some(node);
                }
            }
            FaultAction::WipeDisk { node } => {
                self.log_event(format!("fault: {} loses its disk", name(self, node)));
                self.node_log.push((self.now, node, NodeMark::DiskLost));
                for c in &mut self.copies {
                    if c.node == Some(node) {
                        c.alive = false;
                    }
                }
            }
            FaultAction::CutOff { node, storage } => {
                let n = &mut self.nodes[node as usize];
                if !n.reach_managers {
                    return None;
                }
                let had_contact = n.in_contact();
                n.reach_managers = false;
                n.reach_storage = storage;
                self.log_event(format!(
                    "fault: {} cut off from the managers{}",
                    name(self, node),
                    if storage {
                        " (still reaches storage)"
                    } else {
                        ""
                    }
                ));
                self.node_log.push((self.now, node, NodeMark::CutOff));
                if had_contact {
                    self.contact_lost(node);
                }
            }
            FaultAction::Heal { node } => {
                let n = &mut self.nodes[node as usize];
                if n.reach_managers {
                    return None;
                }
                n.reach_managers = true;
                n.reach_storage = true;
                let up = n.up;
                self.log_event(format!("fault: {} reconnected", name(self, node)));
                self.node_log.push((self.now, node, NodeMark::Healed));
                if up && !self.nodes[node as usize].frozen {
                    return Some(node);
                }
            }
            FaultAction::SlowDisk { node, factor } => {
                self.log_event(format!(
                    "fault: {} disk {}x slower",
                    name(self, node),
                    factor
                ));
                self.nodes[node as usize].slow = factor.max(1);
            }
            FaultAction::FastDisk { node } => {
                self.nodes[node as usize].slow = 1;
            }
            FaultAction::QuorumLoss => {
                if !self.quorum {
                    return None;
                }
                self.log_event("fault: managers lose quorum".into());
                self.markers.push((self.now, "quorum lost".into()));
                self.quorum = false;
                self.driver.set_active(false);
            }
            FaultAction::QuorumBack => {
                if self.quorum {
                    return None;
                }
                self.log_event("managers regain quorum (leader election)".into());
                self.markers.push((self.now, "quorum back".into()));
                self.quorum = true;
                // Nodes not seen since the leader change get the longer grace.
                let sw = &self.scn.swarm;
                let wait = sw.leader_change_multiplier * sw.grace_multiplier * sw.heartbeat;
                for i in 0..self.nodes.len() as u32 {
                    let n = &self.nodes[i as usize];
                    if !n.in_contact() && !n.swarm_down {
                        self.q.push(
                            self.now + wait,
                            Ev::SwarmDown {
                                node: i,
                                generation: n.generation,
                            },
                        );
                    }
                }
                policy::on_control_plane_back(self);
            }
            FaultAction::SchedulerDown => {
                if !self.policy.is_berth() || !self.scheduler_up {
                    return None;
                }
                self.log_event(
                    "fault: berth scheduler restarts; plans in flight are dropped".into(),
                );
                self.markers.push((self.now, "scheduler restart".into()));
                self.scheduler_up = false;
                self.driver.abandon_all(self.now);
                self.driver.set_active(false);
            }
            FaultAction::SchedulerUp => {
                if !self.policy.is_berth() || self.scheduler_up {
                    return None;
                }
                self.log_event("berth scheduler is back; re-planning".into());
                self.scheduler_up = true;
                policy::on_control_plane_back(self);
            }
            FaultAction::Drain { node } => {
                if self.nodes[node as usize].draining {
                    return None;
                }
                self.log_event(format!("operator drains {}", name(self, node)));
                self.node_log.push((self.now, node, NodeMark::Drain));
                self.nodes[node as usize].draining = true;
                policy::on_drain(self, node);
            }
            FaultAction::Activate { node } => {
                self.log_event(format!("operator reactivates {}", name(self, node)));
                self.node_log.push((self.now, node, NodeMark::Active));
                self.nodes[node as usize].draining = false;
            }
            FaultAction::AgentKill { node } => {
                if self.nodes[node as usize].agent == AgentState::Dead {
                    return None;
                }
                self.log_event(format!("fault: {}'s volume agent dies", name(self, node)));
                self.markers
                    .push((self.now, format!("agent killed on {}", name(self, node))));
                self.nodes[node as usize].agent = AgentState::Dead;
                if self.scn.berth.data_path == DataPath::Fuse {
                    // The kernel aborts its FUSE connections: every mount it served is dead
                    // (ENOTCONN) for good, whatever happens to the agent next.
                    for t in self.nodes[node as usize].mounts.clone() {
                        if let Some(g) = &self.tasks[t as usize].gate {
                            g.refuse("the agent serving the mount died");
                        }
                    }
                }
            }
            FaultAction::AgentStart { node } => {
                if self.nodes[node as usize].agent != AgentState::Dead {
                    return None;
                }
                self.log_event(format!("{}'s volume agent starts again", name(self, node)));
                let rt = &mut self.nodes[node as usize];
                rt.agent = AgentState::Running;
                rt.agent_since = self.now;
                // A new process: no lease until its first heartbeat is answered.
                rt.keeper = std::sync::Arc::new(berth_control_model::lease::Keeper::new(
                    crate::state::agent_timing(),
                ));
                rt.fed = None;
                if self.scn.berth.data_path == DataPath::Fuse && rt.up && !rt.frozen {
                    self.restart_dead_mounts(node);
                }
            }
            FaultAction::AgentStop { node } => {
                if self.nodes[node as usize].agent != AgentState::Running {
                    return None;
                }
                self.log_event(format!(
                    "fault: {}'s volume agent is paused",
                    name(self, node)
                ));
                self.markers
                    .push((self.now, format!("agent paused on {}", name(self, node))));
                self.nodes[node as usize].agent = AgentState::Paused;
            }
            FaultAction::AgentCont { node } => {
                if self.nodes[node as usize].agent != AgentState::Paused {
                    return None;
                }
                self.log_event(format!("{}'s volume agent runs again", name(self, node)));
                let rt = &mut self.nodes[node as usize];
                rt.agent = AgentState::Running;
                rt.agent_since = self.now;
            }
            FaultAction::Freeze { node } => {
                let rt = &self.nodes[node as usize];
                if rt.frozen || !rt.up {
                    return None;
                }
                let had_contact = rt.in_contact();
                self.log_event(format!(
                    "fault: {} freezes (every process stopped)",
                    name(self, node)
                ));
                self.node_log.push((self.now, node, NodeMark::CutOff));
                self.markers
                    .push((self.now, format!("{} frozen", name(self, node))));
                self.nodes[node as usize].frozen = true;
                if had_contact {
                    self.contact_lost(node);
                }
            }
            FaultAction::Thaw { node } => {
                if !self.nodes[node as usize].frozen {
                    return None;
                }
                self.log_event(format!("{} thaws", name(self, node)));
                self.node_log.push((self.now, node, NodeMark::Healed));
                let rt = &mut self.nodes[node as usize];
                rt.frozen = false;
                rt.agent_since = self.now;
                if rt.in_contact() {
                    return Some(node);
                }
            }
            FaultAction::ControlDown => {
                if !self.control_up {
                    return None;
                }
                self.log_event("fault: the volume control service is unreachable".into());
                self.markers.push((self.now, "control service lost".into()));
                self.control_up = false;
                if self.policy.is_berth() {
                    self.driver.set_active(false);
                }
            }
            FaultAction::ControlUp => {
                if self.control_up {
                    return None;
                }
                self.log_event("the volume control service answers again".into());
                self.markers.push((self.now, "control service back".into()));
                self.control_up = true;
            }
        }
        None
    }

    /// The node stopped reaching the managers (crash, partition, freeze): arm Swarm's timer.
    pub(crate) fn contact_lost(&mut self, node: u32) {
        let sw = &self.scn.swarm;
        let now = self.now;
        let n = &mut self.nodes[node as usize];
        n.generation += 1;
        n.beats.advance(now, sw.heartbeat, sw.heartbeat_jitter);
        let swarm_deadline = (n.beats.last + sw.grace_multiplier * n.beats.period).max(now);
        let generation = n.generation;
        if self.quorum {
            self.q
                .push(swarm_deadline, Ev::SwarmDown { node, generation });
        }
    }

    /// The last heartbeat the node's agent sent at or before `t` while in contact: at once
    /// when contact resumed, then on its grid (`berth.heartbeat`, from its phase).
    pub(crate) fn last_beat(&self, node: u32, t: Ms) -> Ms {
        let hb = self.scn.berth.heartbeat;
        let rt = &self.nodes[node as usize];
        let phase = rt.berth_phase;
        let grid = if t >= phase {
            phase + (t - phase) / hb * hb
        } else {
            0
        };
        grid.max(rt.berth_since.min(t))
    }

    /// The agent's heartbeat sent at `sent` reaches the control service at once, which admits
    /// it and grants a lease (`Liveness::admit`, berth-volume's own rule); the agent's keeper
    /// takes the reply, then it claims every mount again, as the agent does after each
    /// heartbeat (`Agent::revalidate`). A heartbeat the service refuses renews nothing.
    pub(crate) fn feed_lease(&mut self, node: u32, sent: Ms) {
        let id = self.node_ids[node as usize].clone();
        let granted = self
            .control
            .heartbeat(&id, &agent_timing().heartbeat(), sent);
        let rt = &mut self.nodes[node as usize];
        rt.fed = Some(sent);
        let Some(lease_ms) = granted else {
            rt.keeper.failed();
            return;
        };
        rt.keeper.renewed(
            boot(sent),
            boot(sent),
            HeartbeatReply {
                lease_ms,
                dead: false,
                // The simulated agents run without failsafe.
                nodes: 0,
            },
        );
        self.revalidate(node);
    }

    /// Brings the node's keeper up to now. Beats of an unbroken stretch are fed lazily, only
    /// the last before the instant the gate is asked: skipping some may open a new lease
    /// period where the agent saw none, but every mount is claimed again right after, as the
    /// agent does after each heartbeat, so what the gate admits is the same.
    pub(crate) fn sync_lease(&mut self, node: u32) {
        if !self.nodes[node as usize].berth_contact {
            return;
        }
        let last = self.last_beat(node, self.now);
        if self.nodes[node as usize].fed.is_some_and(|f| f >= last) {
            return;
        }
        self.feed_lease(node, last);
    }

    /// Every mount on the node claimed again at the control service: one whose dataset moved
    /// on to a newer epoch is refused (its writes fail from then on; with `direct`, the agent
    /// stops its container, which takes `berth.stop_latency`); the others are validated in
    /// the agent's current lease period.
    fn revalidate(&mut self, node: u32) {
        let period = self.nodes[node as usize].keeper.period();
        let direct = self.scn.berth.data_path == DataPath::Direct;
        let stop_at = self.now + self.scn.berth.stop_latency;
        let mut mounts = std::mem::take(&mut self.nodes[node as usize].mounts);
        mounts.retain(|&t| self.tasks[t as usize].alive());
        for &t in &mounts {
            let task = &self.tasks[t as usize];
            let Some(gate) = &task.gate else { continue };
            let moved = self
                .slots
                .get(task.slot_idx as usize)
                .and_then(|s| s.dataset)
                .is_some_and(|d| self.datasets[d as usize].epoch > task.epoch);
            if moved {
                if !gate.is_refused() {
                    gate.refuse("its data moved to another node");
                    if direct {
                        self.q.push(stop_at, Ev::StopTask { task: t });
                    }
                }
            } else {
                gate.validate(period);
            }
        }
        self.nodes[node as usize].mounts = mounts;
    }

    /// The agent's heartbeats no longer reach the control service (the node crashed, was cut
    /// off or froze, the agent died or hangs, the control service is unreachable): arm
    /// Berth's detection and the lease's end.
    pub(crate) fn berth_lost(&mut self, node: u32) {
        self.sync_lease(node);
        let detect = self.detect_at(node);
        let bt = &self.scn.berth;
        let now = self.now;
        let left = self.nodes[node as usize].keeper.left(boot(now)).as_millis() as Ms;
        let n = &mut self.nodes[node as usize];
        n.berth_contact = false;
        n.berth_generation += 1;
        n.berth_lost_at = Some(now);
        let generation = n.berth_generation;
        if self.policy.is_berth() {
            // When the service's liveness stops counting it alive (`interval × misses` after
            // its last heartbeat): Berth's detector reads that verdict then.
            self.q.push(detect, Ev::BerthDetect { node, generation });
            // When the gate closes (`fuse`), or the agent's watchdog had its containers
            // stopped (`direct`): who may write changes then.
            let end = match bt.data_path {
                DataPath::Fuse => now + left,
                DataPath::Direct => now + bt.lease,
            };
            self.q.push(end, Ev::LeaseExpired { node, generation });
        }
    }

    /// The agent's heartbeats reach the control service again: it beats at once, and claims
    /// its mounts again.
    pub(crate) fn berth_back(&mut self, node: u32) {
        let now = self.now;
        let n = &mut self.nodes[node as usize];
        n.berth_contact = true;
        n.berth_generation += 1;
        n.berth_reconnects += 1;
        n.berth_lost_at = None;
        n.berth_down = false;
        n.berth_since = now;
        self.feed_lease(node, now);
        self.release_stale_claims(node);
    }

    /// The agent started again on a running node: containers whose mount died with the old
    /// one are stopped (`Agent::reattach`) and started again on a mount it serves, where their
    /// data still is at the same epoch; the others stay stopped.
    fn restart_dead_mounts(&mut self, node: u32) {
        let mounts = self.nodes[node as usize].mounts.clone();
        for t in mounts {
            let task = &self.tasks[t as usize];
            if !task.alive() || !task.gate.as_ref().is_some_and(|g| g.is_refused()) {
                continue;
            }
            let (slot, copy, epoch, desired) = (task.slot_idx, task.copy, task.epoch, task.desired);
            let current = self.slots[slot as usize]
                .dataset
                .is_some_and(|d| self.datasets[d as usize].epoch == epoch);
            self.retire_task(t);
            if desired && current {
                let latency = self.scn.berth.start_latency;
                self.start_task(slot, node, copy, latency);
            }
        }
    }

    /// The node reaches the managers again: it beats at once, is Ready again, hears the
    /// shutdowns it missed; then the policy reacts.
    pub(crate) fn contact_back(&mut self, node: u32) {
        let sw = &self.scn.swarm;
        let now = self.now;
        let n = &mut self.nodes[node as usize];
        n.generation += 1;
        n.reconnects += 1;
        n.beats.restart(now, sw.heartbeat, sw.heartbeat_jitter);
        let was_swarm_down = std::mem::replace(&mut n.swarm_down, false);
        // Containers the managers replaced meanwhile are shut down now; they stop a stop's
        // time later (until then, with nothing else stopping them, they write).
        let stop = match self.policy {
            PolicyKind::Berth | PolicyKind::BerthMoveAll => self.scn.berth.stop_latency,
            _ => sw.stop_latency,
        };
        let retired: Vec<u32> = self
            .tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| t.node == node && !t.desired && t.alive())
            .map(|(i, _)| i as u32)
            .collect();
        for t in retired {
            self.q.push(now + stop, Ev::StopTask { task: t });
        }
        // The node reports what ended while it was away: a replacement waiting for one of
        // those tasks starts.
        policy::swarm_default::release(self, None);
        policy::on_node_back(self, node, was_swarm_down);
        self.repair_standbys();
    }

    /// A replicated dataset that lost its standby (promoted, or no node was free) gets a new
    /// one as soon as a node can take it — the volume driver's job, whatever the policy.
    pub(crate) fn repair_standbys(&mut self) {
        for d in 0..self.datasets.len() {
            let ds = &self.datasets[d];
            if ds.backend != Backend::Replicated || ds.standby.is_some() {
                continue;
            }
            let Some(cur) = ds.current.filter(|c| self.copies[*c as usize].alive) else {
                continue;
            };
            let Some(home) = self.copies[cur as usize].node else {
                continue;
            };
            let (service, size) = (ds.service, ds.size_bytes);
            if let Some(n) = self.pick_standby(service, home) {
                let len = self.copies[cur as usize].len;
                let c = self.new_copy(d as u32, Some(n), len);
                self.copies[c as usize].ready_at =
                    self.now + transfer_ms(size, self.scn.berth.move_bandwidth);
                self.metrics.bytes_moved += size;
                self.datasets[d].standby = Some(c);
                self.datasets[d].unreplicated.clear();
            }
        }
    }
}
