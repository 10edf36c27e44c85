//! What the simulated agents and Berth's executor ask the volume control service
//! ([`crate::control`]): mount claims and releases as containers start and stop, the lease
//! and liveness a stop's wait and the failure detector read, and the fence and assign calls.
//! The simulator's own part is only when each call is made and what the world looks like.

use berth_control_model::model::AssignMode;
use berth_scheduler::executor::{AssignMode as EngineMode, Command};

use crate::clock::Ms;
use crate::control::Answer;
use crate::state::Sim;

impl Sim<'_> {
    fn engine_id(&self, n: u32) -> String {
        self.node_ids[n as usize].clone()
    }

    /// Whether the policy runs Berth's volume driver, whose agents claim mounts at the control
    /// service (`manual` follows Berth's plans by hand, so it does too).
    pub(crate) fn claims_mounts(&self) -> bool {
        !self.policy.is_swarm()
    }

    /// Task `t` mounted its volume: its node's agent claims it at the task's epoch. A refused
    /// claim leaves the service's holder as it was, and is counted (`claims_refused`).
    pub(crate) fn claim_mount(&mut self, t: u32) {
        if !self.claims_mounts() {
            return;
        }
        let task = &self.tasks[t as usize];
        let Some(d) = self.slots[task.slot_idx as usize].dataset else {
            return;
        };
        let (node, epoch) = (self.engine_id(task.node), task.epoch);
        let ds = &self.datasets[d as usize];
        let (name, backend) = (ds.name.clone(), ds.backend);
        if let Err(e) = self
            .control
            .claim(d, &name, backend, &node, epoch, self.now)
        {
            self.metrics.claims_refused += 1;
            self.log_event(format!(
                "control service refuses the mount of {name} on {node}: {e}"
            ));
        }
    }

    /// Task `t` stopped: its node's agent releases the mount, if its calls reach the service
    /// (else the claim stays until [`Sim::release_stale_claims`], or a fence drops it).
    pub(crate) fn release_mount(&mut self, t: u32) {
        if !self.claims_mounts() {
            return;
        }
        let task = &self.tasks[t as usize];
        let Some(d) = self.slots[task.slot_idx as usize].dataset else {
            return;
        };
        if !self.nodes[task.node as usize].lease_contact(self.control_up) {
            return;
        }
        let node = self.engine_id(task.node);
        self.control.release(d, &node, self.now);
    }

    /// `node`'s agent reaches the service again: the mounts whose containers ended meanwhile
    /// (died with the node, stopped while it was cut off) are released.
    pub(crate) fn release_stale_claims(&mut self, node: u32) {
        if !self.claims_mounts() {
            return;
        }
        let id = self.engine_id(node);
        for d in 0..self.datasets.len() as u32 {
            if !self.control.holds(d, &id) {
                continue;
            }
            let slot = self.datasets[d as usize].slot_idx;
            let mounted = self.slots[slot as usize].tasks.iter().any(|&t| {
                let t = &self.tasks[t as usize];
                t.node == node && t.alive()
            });
            if !mounted {
                self.control.release(d, &id, self.now);
            }
        }
    }

    /// What is left of `node`'s lease at the service now (`GET /v1/berth/nodes`), its agent's
    /// heartbeats fed up to now first.
    pub(crate) fn control_lease_left(&mut self, node: u32) -> Ms {
        self.sync_lease(node);
        let id = self.engine_id(node);
        self.control.lease_left(&id, self.now)
    }

    /// When the service's liveness stops counting `node` alive (heard from within `interval ×
    /// misses`): now, if it already does not. Its heartbeats are fed up to now first.
    pub(crate) fn detect_at(&mut self, node: u32) -> Ms {
        self.sync_lease(node);
        let id = self.engine_id(node);
        let t = self.control.liveness.timing();
        let window = t.interval_ms * u64::from(t.misses);
        match self
            .control
            .liveness
            .view(&id, self.now)
            .last_heartbeat_age_ms
        {
            Some(age) if age < window => self.now + (window - age),
            _ => self.now,
        }
    }

    /// The failure detector's verdict on `node` is "lost": `berth run`'s rule
    /// (`NodeLiveness::verdict`) on what the service reports of it now.
    pub(crate) fn control_says_lost(&self, node: u32) -> bool {
        let id = self.engine_id(node);
        self.control
            .state
            .nodes
            .get(&id)
            .map(|n| self.control.liveness.record(n, self.now))
            .and_then(|r| r.verdict())
            == Some(true)
    }

    /// A fence or an assignment of `volume`, with its holder's heartbeats fed up to now so the
    /// service sees the lease the node really has.
    pub(crate) fn control_call(&mut self, volume: &str, cmd: &Command) -> Answer {
        if let Some(h) = self.control.holder(volume).and_then(|h| self.node_index(h)) {
            self.sync_lease(h);
        }
        match cmd {
            Command::Fence {
                node, expect_epoch, ..
            } => self
                .control
                .fence(volume, node.as_str(), *expect_epoch, self.now),
            Command::Assign {
                primary,
                epoch,
                mode,
                ..
            } => {
                let mode = match mode {
                    EngineMode::Move { .. } => AssignMode::Move,
                    EngineMode::Promote { .. } => {
                        self.standby_to_model(volume);
                        AssignMode::Promote
                    }
                    EngineMode::Recreate => AssignMode::Recreate,
                };
                self.control
                    .assign(volume, primary.as_str(), *epoch, mode, self.now)
            }
            _ => Answer::Done(0),
        }
    }

    /// The world's standby of `volume` written into the model: its node, and a ship position
    /// only for a copy whose disk is there and whose first sync has ended (`replication_lag`
    /// behind). A copy the simulator marked revoked still counts: a standby is never mounted
    /// until promoted, and a copy dropped as stale on its node is the world's bookkeeping, not
    /// something the service would know of.
    fn standby_to_model(&mut self, volume: &str) {
        let Some(d) = self.volumes.get(volume).copied() else {
            return;
        };
        let ds = &self.datasets[d as usize];
        let lag = self.scn.services[ds.service as usize].data.replication_lag;
        let sb = ds.standby.and_then(|c| {
            let c = &self.copies[c as usize];
            let node = c.node?;
            let usable = c.alive && c.ready_at <= self.now;
            Some((
                self.engine_id(node),
                usable.then_some(self.now.saturating_sub(lag)),
            ))
        });
        self.control
            .set_standby(volume, sb.as_ref().map(|(n, p)| (n.as_str(), *p)));
    }
}
