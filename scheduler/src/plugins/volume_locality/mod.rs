//! Berth's VolumeLocality filter: a stateful slot goes where its dataset is.
//!
//! - a new dataset: any node (it is created where the slot lands);
//! - primary up and not fenced: only the primary;
//! - primary down or fenced, by failover mode and backend:
//!   `manual` waits for an operator; `recreate` goes anywhere (a fresh member resyncs from its
//!   peers); `move` on `shared` storage goes anywhere (after fencing); `move` on `replicated`
//!   goes to the standby copy; `move` on `local` storage waits for the node, because the bytes
//!   are on that node's disk and starting elsewhere would mean an empty volume — the one thing
//!   Swarm does that Berth exists to prevent.

use std::sync::Arc;

use crate::framework::{
    CycleState, DatasetHome, FilterKind, FilterPlugin, Plugin, Reason, Status, TaskSpec,
};
use crate::model::{Backend, FailoverMode};
use crate::snapshot::NodeInfo;

pub const NAME: &str = "VolumeLocality";
const STATE: &str = "VolumeLocality/only";

pub struct VolumeLocality;

/// The one node the slot may use, and what to say to every other node.
struct Only(u32, Reason);

impl Plugin for VolumeLocality {
    fn name(&self) -> &'static str {
        NAME
    }
}

impl FilterPlugin for VolumeLocality {
    fn kind(&self) -> FilterKind {
        FilterKind::Slot
    }

    fn pre_filter(&self, cx: &mut CycleState, task: &TaskSpec) -> Status {
        let Some(ds) = task.dataset else {
            return Status::SKIP;
        };
        let name = &ds.name;
        match &ds.home {
            DatasetHome::New => Status::SKIP,
            DatasetHome::Primary(idx) => {
                let why = format!("not the primary of dataset {name}");
                cx.write(STATE, Only(*idx, Reason::from(why)));
                Status::SUCCESS
            }
            DatasetHome::Lost { node, why } => match (ds.failover, ds.backend, ds.standby) {
                (FailoverMode::Manual, _, _) => Status::unresolvable(
                    NAME,
                    Reason::Shared(Arc::from(format!(
                        "waiting for an operator: dataset {name}'s node {node} is {why} (berth.failover=manual)"
                    ))),
                ),
                (FailoverMode::Recreate, _, _) | (FailoverMode::Move, Backend::Shared, _) => {
                    Status::SKIP
                }
                (FailoverMode::Move, Backend::Replicated, Some(standby)) => {
                    let why = format!("not the standby of dataset {name}");
                    cx.write(STATE, Only(standby, Reason::from(why)));
                    Status::SUCCESS
                }
                (FailoverMode::Move, Backend::Replicated, None)
                | (FailoverMode::Move, Backend::Local, _) => Status::unresolvable(
                    NAME,
                    Reason::Shared(Arc::from(format!(
                        "dataset {name}'s data is on {why} node {node} ({} backend): waiting for the node",
                        ds.backend.as_str()
                    ))),
                ),
            },
        }
    }

    fn filter(&self, cx: &CycleState, _task: &TaskSpec, info: &NodeInfo) -> Status {
        match cx.read::<Only>(STATE) {
            Some(Only(idx, _)) if *idx == info.idx => Status::SUCCESS,
            Some(Only(_, reason)) => Status::unschedulable(NAME, reason.clone()),
            None => Status::SUCCESS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::SlotDataset;
    use crate::model::{NodeId, Service};
    use crate::plugins::test_support::{node, reason, run_filter};

    fn ds(home: DatasetHome, failover: FailoverMode, backend: Backend) -> SlotDataset {
        SlotDataset {
            name: "mongo-data-1".into(),
            home,
            backend,
            failover,
            standby: Some(2),
        }
    }

    #[test]
    fn follows_the_dataset() {
        let svc = Service::new("mongo");
        let (a, b, c) = (node("a"), node("b"), node("c"));
        let (ia, ib, ic) = (
            NodeInfo::new(0, &a),
            NodeInfo::new(1, &b),
            NodeInfo::new(2, &c),
        );
        let lost = || DatasetHome::Lost {
            node: NodeId::new("a"),
            why: "down",
        };

        let on_a = ds(DatasetHome::Primary(0), FailoverMode::Move, Backend::Local);
        assert!(run_filter(&VolumeLocality, &svc, Some(&on_a), &ia).is_success());
        assert_eq!(
            reason(&run_filter(&VolumeLocality, &svc, Some(&on_a), &ib)),
            "not the primary of dataset mongo-data-1"
        );

        let new = ds(DatasetHome::New, FailoverMode::Move, Backend::Local);
        assert!(run_filter(&VolumeLocality, &svc, Some(&new), &ib).is_success());

        let manual = ds(lost(), FailoverMode::Manual, Backend::Shared);
        let got = run_filter(&VolumeLocality, &svc, Some(&manual), &ib);
        assert_eq!(
            got.code,
            crate::framework::Code::UnschedulableAndUnresolvable
        );
        assert!(
            reason(&got).starts_with("waiting for an operator"),
            "{}",
            reason(&got)
        );

        let local = ds(lost(), FailoverMode::Move, Backend::Local);
        assert_eq!(
            reason(&run_filter(&VolumeLocality, &svc, Some(&local), &ib)),
            "dataset mongo-data-1's data is on down node a (local backend): waiting for the node"
        );

        let shared = ds(lost(), FailoverMode::Move, Backend::Shared);
        assert!(run_filter(&VolumeLocality, &svc, Some(&shared), &ib).is_success());
        let recreate = ds(lost(), FailoverMode::Recreate, Backend::Local);
        assert!(run_filter(&VolumeLocality, &svc, Some(&recreate), &ib).is_success());

        let replicated = ds(lost(), FailoverMode::Move, Backend::Replicated);
        assert!(run_filter(&VolumeLocality, &svc, Some(&replicated), &ic).is_success());
        assert!(!run_filter(&VolumeLocality, &svc, Some(&replicated), &ib).is_success());
    }
}
