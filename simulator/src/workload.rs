//! Clients and who may accept their writes: one write event at a time per stateful service
//! (round-robin over its slots, or to the replica set for a self-replicating service), the
//! writability rule (alive, fenced-in, lease valid), and the recomputation after every other
//! event of each dataset's writers and each service's availability.

use berth_scheduler::model::Backend;

use crate::clock::Ms;
use crate::event::Ev;
use crate::scenario::DataPath;
use crate::state::Sim;
use crate::state::boot;
use crate::world::{AgentState, TaskState};
use berth_control_model::lease::Admit;

impl Sim<'_> {
    pub(crate) fn on_write(&mut self, s: u32) {
        let now = self.now;
        let svc = &mut self.services[s as usize];
        svc.next_write += 1;
        // The u64 product almost always fits; a 128-bit division on every write shows.
        let next = match svc.next_write.checked_mul(svc.writes_every_nanos) {
            Some(p) => p / 1_000_000,
            None => (svc.next_write as u128 * svc.writes_every_nanos as u128 / 1_000_000) as Ms,
        };
        self.q.push(next, Ev::Write(s));
        let first = svc.first_slot as usize;
        let replicas = svc.replicas as usize;
        if svc.self_replicating {
            if !svc.available {
                svc.rejected += 1;
                return;
            }
            svc.acked += 1;
            // Each member taking the write has everything before it first: one that missed
            // writes (its lease held them) catches up from the primary's log as it rejoins,
            // as a database's replication does. Copies stay prefixes of one history.
            let mut members = Vec::new();
            for slot in &self.slots[first..first + replicas] {
                let Some(d) = slot.dataset else { continue };
                for &w in &self.datasets[d as usize].writers {
                    if let Some(c) = self.tasks[w as usize].copy {
                        members.push(c);
                    }
                }
            }
            let head = members
                .iter()
                .map(|&c| self.copies[c as usize].len)
                .max()
                .unwrap_or(0);
            for c in members {
                self.copies[c as usize].len = head + 1;
            }
            return;
        }
        let k = (svc.rr % replicas as u64) as usize;
        svc.rr += 1;
        let Some(d) = self.slots[first + k].dataset else {
            return;
        };
        let ds = &mut self.datasets[d as usize];
        if ds.writers.is_empty() {
            self.services[s as usize].rejected += 1;
            return;
        }
        let w = ds.writers[(ds.rr % ds.writers.len() as u64) as usize];
        ds.rr += 1;
        ds.acked += 1;
        let Some(c) = self.tasks[w as usize].copy else {
            return;
        };
        self.copies[c as usize].len += 1;
        if ds.backend == Backend::Replicated && ds.current == Some(c) && ds.standby.is_some() {
            ds.unreplicated.push_back(now);
            let lag = self.scn.services[s as usize].data.replication_lag;
            ds.replicate(&mut self.copies, now, lag);
        }
    }

    /// Whether task `t` can acknowledge a write to dataset `d` right now.
    ///
    /// Storage as it is: `shared` gives every epoch the same directory, so nothing there
    /// refuses an old holder; `replicated` and `local` hold a copy per node, and a moved or
    /// promoted dataset lives on at a new epoch elsewhere (its standby takes no shipment from
    /// an older one), so an old holder's writes land on a copy nobody continues from — lost,
    /// and a second writer while they are acknowledged. Under Berth the data path decides
    /// ([`DataPath`]).
    pub(crate) fn writable(&self, t: u32, d: u32) -> bool {
        let task = &self.tasks[t as usize];
        if task.state != TaskState::Running {
            return false;
        }
        let node = &self.nodes[task.node as usize];
        // A frozen container writes nothing until it thaws.
        if !node.up || node.frozen {
            return false;
        }
        let Some(c) = task.copy else { return false };
        let copy = &self.copies[c as usize];
        let bt = &self.scn.berth;
        let berth = self.policy.is_berth();
        let direct = berth && bt.data_path == DataPath::Direct;
        // A revoked copy is still on the old node's disk: only the agent keeps a container
        // from it.
        if !copy.alive || (copy.revoked && !direct) || copy.ready_at > self.now {
            return false;
        }
        let ds = &self.datasets[d as usize];
        if ds.backend == Backend::Shared && !node.reach_storage {
            return false;
        }
        if !berth {
            return true;
        }
        match bt.data_path {
            // Served by the agent: a dead agent's mount fails (ENOTCONN), a paused one's
            // writes wait in the kernel, and a running one passes a write only when its gate
            // — berth-volume's own rule, on its own lease — admits it.
            DataPath::Fuse => {
                node.agent == AgentState::Running
                    && task
                        .gate
                        .as_ref()
                        .is_some_and(|g| g.check(boot(self.now)) == Admit::Go)
            }
            // The container writes the copy itself. Only the agent stops it: once its lease
            // has ended without contact (its watchdog, `berth.lease` after losing it) — if it
            // runs, and a stop's time after it ran again — or when its claim is refused
            // (`revalidate`, then the container stops).
            DataPath::Direct => {
                let fenced_by_agent = node.agent_runs()
                    && node.berth_lost_at.is_some_and(|lost| {
                        self.now >= (lost + bt.lease).max(node.agent_since + bt.stop_latency)
                    });
                !fenced_by_agent
            }
        }
    }

    /// Recomputes writers and availability, and runs the checker.
    pub fn refresh(&mut self) {
        let now = self.now;
        if self.policy.is_berth() {
            // Each holder's agent has had the heartbeats it sent meanwhile answered.
            for d in 0..self.datasets.len() {
                let slot = self.datasets[d].slot_idx as usize;
                for i in 0..self.slots[slot].tasks.len() {
                    let t = self.slots[slot].tasks[i];
                    self.sync_lease(self.tasks[t as usize].node);
                }
            }
        }
        for d in 0..self.datasets.len() {
            let slot = self.datasets[d].slot_idx as usize;
            let mut writers = std::mem::take(&mut self.datasets[d].writers);
            writers.clear();
            // Every live container of the slot, wanted or not: a replaced task on a cut-off
            // node still writes if nothing stops it.
            for &t in &self.slots[slot].tasks {
                if self.writable(t, d as u32) {
                    writers.push(t);
                }
            }
            let ds = &mut self.datasets[d];
            ds.writers = writers;
            if ds.backend == Backend::Replicated {
                let lag = self.scn.services[ds.service as usize].data.replication_lag;
                let link = ds
                    .current
                    .and_then(|c| self.copies[c as usize].node)
                    .is_some_and(|n| {
                        self.nodes[n as usize].up && self.nodes[n as usize].reach_managers
                    })
                    && ds
                        .standby
                        .and_then(|c| self.copies[c as usize].node)
                        .is_some_and(|n| {
                            self.nodes[n as usize].up && self.nodes[n as usize].reach_managers
                        });
                if link {
                    ds.replicate(&mut self.copies, now, lag);
                }
            }
        }
        for s in 0..self.services.len() {
            let svc = &self.services[s];
            let first = svc.first_slot as usize;
            let slots = &self.slots[first..first + svc.replicas as usize];
            let available = if !svc.stateful {
                slots.iter().any(|sl| {
                    sl.tasks.iter().any(|&t| {
                        let task = &self.tasks[t as usize];
                        task.state == TaskState::Running && self.nodes[task.node as usize].up
                    })
                })
            } else {
                let serving = slots
                    .iter()
                    .filter(|sl| {
                        sl.dataset
                            .is_some_and(|d| !self.datasets[d as usize].writers.is_empty())
                    })
                    .count() as u64;
                if svc.self_replicating {
                    serving > svc.replicas / 2
                } else {
                    serving == svc.replicas
                }
            };
            let svc = &mut self.services[s];
            if available != svc.available {
                svc.available = available;
                if available {
                    if let Some(since) = svc.down_since.take() {
                        svc.unavailable_ms += now - since;
                        svc.outages.push((since, now));
                    }
                } else {
                    svc.down_since = Some(now);
                }
            }
        }
        self.refresh_slots(now);
        crate::checker::after_event(self);
    }

    /// Each stateful slot's own outages: a slot serves while its dataset has a writer. (A
    /// service is available only with all its slots, so its outage is its last slot's.)
    fn refresh_slots(&mut self, now: Ms) {
        for sl in &mut self.slots {
            let Some(d) = sl.dataset else { continue };
            let serving = !self.datasets[d as usize].writers.is_empty();
            if serving == sl.serving {
                continue;
            }
            sl.serving = serving;
            if serving {
                if let Some(since) = sl.down_since.take() {
                    sl.outages.push((since, now));
                }
            } else {
                sl.down_since = Some(now);
            }
        }
    }
}
