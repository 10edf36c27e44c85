//! The volume control service in the simulator: berth-volume's own control model
//! (`control::model::State`: datasets, epochs, mount claims, fence and assign) and node
//! liveness (`control::liveness::Liveness`: heartbeats, leases, the detector's window), called
//! as `berth-volume control` calls them, with the simulated clock as both of the service's
//! clocks. The simulator keeps no rule of its own for who may fence, assign, mount or hold a
//! lease: it asks these, and [`Answer`] turns their replies into what `berth run` makes of the
//! service's HTTP answers (`daemon/src/control.rs`, `daemon/src/controller/failover.rs`).
//!
//! What stays the simulator's: which node holds a `replicated` dataset's standby (the engine's
//! `executor::pick_standby`, written into the model's dataset before a promotion — the real
//! service picks its own), and the world (which copies exist, who writes).

use std::collections::BTreeMap;

use berth_control_model::liveness::{Liveness, Timing};
use berth_control_model::model::{
    AssignMode, ControlError, Dataset, NewDataset, Node, Standby, State,
};
use berth_control_model::options::{META_BACKEND, META_NAME};
use berth_control_model::wire::Heartbeat;
use berth_scheduler::model::Backend;

use crate::clock::Ms;

/// The control service's state and liveness, on the simulated clock.
pub struct ControlRt {
    pub state: State,
    pub liveness: Liveness,
    /// The service waits out a holder's lease before a fence or an assignment takes its volume
    /// (`berth.fence_lease` > 0, as every bundled scenario has it). Without, it grants the
    /// agent its lease but waits none out: the simulator's model from before leases, which the
    /// real service has no setting for.
    waits_leases: bool,
    /// The model's dataset ID by simulator dataset, from the volume's first mount on.
    ids: BTreeMap<u32, String>,
}

/// A fence's or an assignment's reply, as `berth run` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Accepted (or the replay of what was): the volume is now at this epoch.
    Done(u64),
    /// 423: the holder's lease runs this much longer; the same call is made again then.
    NotYet { retry_after: Ms, reason: String },
    /// 409 (or another 4xx): the precondition failed, with the current epoch when the service
    /// says it; the executor re-plans.
    Refused {
        current_epoch: Option<u64>,
        reason: String,
    },
}

impl Answer {
    /// The HTTP status `control::api` answers `e` with, read back as `berth run` reads it:
    /// 423 a wait with its `retry_after_ms`, anything else (409, 400, 404, 405, 412) a refusal,
    /// with the epoch only where the service's error body carries one.
    fn of(e: ControlError) -> Answer {
        match e {
            ControlError::Leased { remaining_ms, .. } => Answer::NotYet {
                retry_after: remaining_ms,
                reason: e.to_string(),
            },
            ControlError::Epoch { epoch, .. } => Answer::Refused {
                current_epoch: Some(epoch),
                reason: e.to_string(),
            },
            e => Answer::Refused {
                current_epoch: None,
                reason: e.to_string(),
            },
        }
    }
}

/// A model dataset ID for simulator dataset `d`: a fixed lowercase UUID, so the model's maps
/// order the same way in every run.
fn dataset_id(d: u32) -> String {
    format!("00000000-0000-4000-8000-{:012x}", u64::from(d) + 1)
}

impl ControlRt {
    /// The service as it starts: every node registered (`nodes`: engine node ID, display
    /// name), no dataset yet.
    pub fn new(timing: Timing, waits_leases: bool, nodes: &[(String, String)]) -> ControlRt {
        let mut state = State::default();
        for (id, host) in nodes {
            state.register_node(Node {
                uuid: id.clone(),
                host: host.clone(),
                transfer: String::new(),
                dead: false,
            });
        }
        ControlRt {
            state,
            liveness: Liveness::new(timing),
            waits_leases,
            ids: BTreeMap::new(),
        }
    }

    /// The heartbeat of `node`'s agent, received at `now` (the simulator answers at once):
    /// the lease granted, or `None` if the service refused it.
    pub fn heartbeat(&mut self, node: &str, hb: &Heartbeat, now: Ms) -> Option<Ms> {
        let dead = self.state.nodes.get(node).map(|n| n.dead)?;
        if !self.waits_leases {
            return Some(self.liveness.heartbeat(node, now, !dead));
        }
        self.liveness
            .admit(node, dead, hb, now)
            .ok()
            .map(|r| r.lease_ms)
    }

    /// How much longer `node`'s lease runs at the service (what `GET /v1/berth/nodes` says).
    pub fn lease_left(&self, node: &str, now: Ms) -> Ms {
        if self.waits_leases {
            self.liveness.lease_left_ms(node, now)
        } else {
            0
        }
    }

    /// The leases a fence or an assignment of `volume` is checked against: the holder's, the
    /// only one `State::check_handover` reads (the service passes every node's).
    fn leases(&self, volume: &str, now: Ms) -> BTreeMap<String, u64> {
        let holder = self
            .state
            .by_name(volume)
            .and_then(|d| d.mounted_on.clone());
        holder
            .map(|h| {
                let left = self.lease_left(&h, now);
                (h, left)
            })
            .filter(|(_, l)| *l > 0)
            .into_iter()
            .collect()
    }

    /// The node holding `volume`'s mount claim, if any.
    pub fn holder(&self, volume: &str) -> Option<&str> {
        self.state.by_name(volume)?.mounted_on.as_deref()
    }

    /// The model's dataset for simulator dataset `d`, created (as Docker's Create does, on the
    /// first mount) with `primary` if it does not exist yet.
    fn ensure(&mut self, d: u32, name: &str, backend: Backend, primary: &str) -> Option<String> {
        if let Some(id) = self.ids.get(&d) {
            return Some(id.clone());
        }
        let metadata = BTreeMap::from([
            (META_NAME.to_string(), name.to_string()),
            (META_BACKEND.to_string(), backend.as_str().to_string()),
        ]);
        let id = dataset_id(d);
        self.state
            .create(
                NewDataset {
                    primary: primary.to_string(),
                    dataset_id: Some(id.clone()),
                    maximum_size: None,
                    metadata,
                },
                None,
            )
            .ok()?;
        self.ids.insert(d, id.clone());
        Some(id)
    }

    /// `node`'s agent claims the volume's writable mount at `epoch` (a container mounting it).
    pub fn claim(
        &mut self,
        d: u32,
        name: &str,
        backend: Backend,
        node: &str,
        epoch: u64,
        now: Ms,
    ) -> Result<(), ControlError> {
        let Some(id) = self.ensure(d, name, backend, node) else {
            return Err(ControlError::NotFound(name.to_string()));
        };
        self.state.claim_mount(&id, node, epoch, now).map(|_| ())
    }

    /// `node`'s agent releases the volume's mount (the container using it stopped).
    pub fn release(&mut self, d: u32, node: &str, now: Ms) {
        if let Some(id) = self.ids.get(&d) {
            let _ = self.state.release_mount(id, node, now);
        }
    }

    /// Whether `node`'s agent would be granted simulator dataset `d`'s mount now (at the
    /// dataset's current epoch, the one an agent asks for): the model's own check, nothing
    /// changed. A dataset the service has no record of yet is created by the Mount itself.
    pub fn may_mount(&self, d: u32, node: &str) -> Result<(), ControlError> {
        let Some(id) = self.ids.get(&d) else {
            return Ok(());
        };
        let epoch = self.state.datasets.get(id).map_or(0, |ds| ds.epoch);
        self.state.check_claim(id, node, epoch)
    }

    /// Simulator dataset `d` as the control service holds it, if it has a record of it.
    pub fn dataset_of(&self, d: u32) -> Option<&Dataset> {
        self.state.datasets.get(self.ids.get(&d)?)
    }

    /// Whether `node` holds simulator dataset `d`'s mount claim.
    pub fn holds(&self, d: u32, node: &str) -> bool {
        self.ids
            .get(&d)
            .and_then(|id| self.state.datasets.get(id))
            .is_some_and(|ds| ds.mounted_on.as_deref() == Some(node))
    }

    /// `POST /v1/berth/volumes/{volume}/fence`.
    pub fn fence(&mut self, volume: &str, node: &str, expect_epoch: u64, now: Ms) -> Answer {
        let leases = self.leases(volume, now);
        match self
            .state
            .fence_checked(volume, node, expect_epoch, now, &leases)
        {
            Ok(d) => Answer::Done(d.epoch),
            Err(e) => Answer::of(e),
        }
    }

    /// `POST /v1/berth/volumes/{volume}/assign`.
    pub fn assign(
        &mut self,
        volume: &str,
        primary: &str,
        epoch: u64,
        mode: AssignMode,
        now: Ms,
    ) -> Answer {
        let leases = self.leases(volume, now);
        match self
            .state
            .assign_checked(volume, primary, epoch, mode, now, &leases)
        {
            Ok(d) => Answer::Done(d.epoch),
            Err(e) => Answer::of(e),
        }
    }

    /// What the service holds of `volume` (for a test or a trace).
    pub fn dataset(&self, volume: &str) -> Option<&Dataset> {
        self.state.by_name(volume)
    }

    /// Writes the world's standby of `volume` into the model: `node`, whose last complete ship
    /// started at `position` (`None`: it holds nothing usable yet). The engine picked the node
    /// (`Sim::pick_standby`), not the model's `fill_standbys`: the one rule still the
    /// simulator's.
    pub fn set_standby(&mut self, volume: &str, node: Option<(&str, Option<Ms>)>) {
        let Some(id) = self.state.by_name(volume).map(|d| d.dataset_id.clone()) else {
            return;
        };
        let Some(d) = self.state.datasets.get_mut(&id) else {
            return;
        };
        let epoch = d.epoch;
        d.standbys.clear();
        if let Some((n, position)) = node {
            d.standbys.insert(
                n.to_string(),
                Standby {
                    epoch: position.map(|_| epoch),
                    position_ms: position,
                    lag_bytes: position.map(|_| 0),
                },
            );
        }
    }
}

/// How long `berth run` keeps retrying a call the service answers "not yet" before it reports
/// the command failed (`controller/failover.rs`, `RETRY_FOR`).
pub const RETRY_FOR: Ms = 60_000;
/// The shortest wait before such a retry (`controller/failover.rs`).
pub const RETRY_MIN: Ms = 20;

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> ControlRt {
        let nodes = [("a", "w1"), ("b", "w2")].map(|(i, h)| (i.to_string(), h.to_string()));
        ControlRt::new(Timing::default(), true, &nodes)
    }

    /// The service's rules, not the simulator's: a running lease is a wait for as long as it
    /// runs, a stale epoch a refusal with the current one, the fence itself the model's.
    #[test]
    fn a_fence_waits_for_the_holders_lease_and_a_stale_one_is_refused() {
        let mut c = service();
        let hb = berth_control_model::lease::AgentTiming::default().heartbeat();
        assert_eq!(c.heartbeat("a", &hb, 1_000), Some(5_000));
        c.claim(0, "v-1", Backend::Local, "a", 1, 1_000)
            .expect("a mounts");
        assert_eq!(c.holder("v-1"), Some("a"));
        match c.fence("v-1", "a", 1, 2_500) {
            Answer::NotYet { retry_after, .. } => assert_eq!(retry_after, 3_500),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            c.fence("v-1", "a", 0, 6_000),
            Answer::Refused {
                current_epoch: Some(1),
                reason: "volume v-1 is at epoch 1: the fence expected epoch 0".into(),
            }
        );
        assert_eq!(c.fence("v-1", "a", 1, 6_000), Answer::Done(2));
        assert_eq!(c.holder("v-1"), None, "the fence dropped a's claim");
        assert_eq!(
            c.assign("v-1", "b", 2, AssignMode::Move, 6_010),
            Answer::Done(2)
        );
        assert!(
            c.claim(0, "v-1", Backend::Local, "a", 1, 6_020).is_err(),
            "a is fenced"
        );
        c.claim(0, "v-1", Backend::Local, "b", 2, 6_020)
            .expect("b mounts at the new epoch");
    }
}
