//! Faults applied to the world, and what losing or regaining the managers does to a node:
//! heartbeat timers armed (Swarm's DOWN, Berth's detection, holder leases) or reset, missed
//! shutdowns delivered, and the policy told.

use berth_scheduler::model::Backend;

use crate::clock::transfer_ms;
use crate::event::{Ev, NodeMark};
use crate::faults::FaultAction;
use crate::policy;
use crate::policy_kind::PolicyKind;
use crate::state::Sim;
use crate::world::TaskState;

impl Sim<'_> {
    pub(crate) fn apply_fault(&mut self, a: FaultAction) {
        let name = |s: &Self, n: u32| s.node_names[n as usize].clone();
        match a {
            FaultAction::Crash { node } => {
                if !self.nodes[node as usize].up {
                    return;
                }
                self.log_event(format!("fault: {} crashes", name(self, node)));
                self.node_log.push((self.now, node, NodeMark::Down));
                let had_contact = self.nodes[node as usize].in_contact();
                self.nodes[node as usize].up = false;
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
                    return;
                }
                self.log_event(format!("fault: {} boots", name(self, node)));
                self.node_log.push((self.now, node, NodeMark::Up));
                self.nodes[node as usize].up = true;
                if self.nodes[node as usize].reach_managers {
                    self.contact_back(node);
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
                    return;
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
                    return;
                }
                n.reach_managers = true;
                n.reach_storage = true;
                let up = n.up;
                self.log_event(format!("fault: {} reconnected", name(self, node)));
                self.node_log.push((self.now, node, NodeMark::Healed));
                if up {
                    self.contact_back(node);
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
                    return;
                }
                self.log_event("fault: managers lose quorum".into());
                self.markers.push((self.now, "quorum lost".into()));
                self.quorum = false;
                self.driver.set_active(false);
            }
            FaultAction::QuorumBack => {
                if self.quorum {
                    return;
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
                if self.policy != PolicyKind::Berth || !self.scheduler_up {
                    return;
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
                if self.policy != PolicyKind::Berth || self.scheduler_up {
                    return;
                }
                self.log_event("berth scheduler is back; re-planning".into());
                self.scheduler_up = true;
                policy::on_control_plane_back(self);
            }
            FaultAction::Drain { node } => {
                if self.nodes[node as usize].draining {
                    return;
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
        }
    }

    /// The node stopped reaching the managers (crash or partition): arm the timers.
    pub(crate) fn contact_lost(&mut self, node: u32) {
        let sw = &self.scn.swarm;
        let bt = &self.scn.berth;
        let now = self.now;
        let n = &mut self.nodes[node as usize];
        n.generation += 1;
        n.lost_at = Some(now);
        n.beats.advance(now, sw.heartbeat, sw.heartbeat_jitter);
        let swarm_deadline = (n.beats.last + sw.grace_multiplier * n.beats.period).max(now);
        let generation = n.generation;
        if self.quorum {
            self.q
                .push(swarm_deadline, Ev::SwarmDown { node, generation });
        }
        if self.policy == PolicyKind::Berth {
            let phase = n.berth_phase;
            let last = if now >= phase {
                phase + (now - phase) / bt.heartbeat * bt.heartbeat
            } else {
                0
            };
            self.q.push(
                (last + bt.misses * bt.heartbeat).max(now),
                Ev::BerthDetect { node, generation },
            );
            self.q
                .push(now + bt.lease, Ev::LeaseExpired { node, generation });
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
        n.lost_at = None;
        n.beats.restart(now, sw.heartbeat, sw.heartbeat_jitter);
        let was_swarm_down = std::mem::replace(&mut n.swarm_down, false);
        n.berth_down = false;
        // Containers the managers replaced meanwhile are shut down now.
        let retired: Vec<u32> = self
            .tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| t.node == node && !t.desired && t.alive())
            .map(|(i, _)| i as u32)
            .collect();
        for t in retired {
            self.retire_task(t);
        }
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
