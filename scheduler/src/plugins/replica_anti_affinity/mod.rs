//! Berth's ReplicaAntiAffinity filter: at most one replica of the service per node, so losing
//! one node costs a replica set one member, not its majority. On by default for stateful
//! services, opt-in (`berth.anti-affinity=true`) for others.

use crate::framework::{CycleState, FilterKind, FilterPlugin, Plugin, Reason, Status, TaskSpec};
use crate::snapshot::NodeInfo;

pub const NAME: &str = "ReplicaAntiAffinity";
pub const ALREADY_RUNS: &str = "already runs a replica (anti-affinity)";

pub struct ReplicaAntiAffinity;

impl Plugin for ReplicaAntiAffinity {
    fn name(&self) -> &'static str {
        NAME
    }
}

impl FilterPlugin for ReplicaAntiAffinity {
    fn kind(&self) -> FilterKind {
        FilterKind::Monotone
    }

    fn pre_filter(&self, _cx: &mut CycleState, task: &TaskSpec) -> Status {
        if task.policy.anti_affinity {
            Status::SUCCESS
        } else {
            Status::SKIP
        }
    }

    fn filter(&self, _cx: &CycleState, task: &TaskSpec, info: &NodeInfo) -> Status {
        if info.service_tasks(task.service_idx) == 0 {
            Status::SUCCESS
        } else {
            Status::unschedulable(NAME, Reason::Static(ALREADY_RUNS))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Service;
    use crate::plugins::test_support::{node, reason, run_filter};

    #[test]
    fn one_per_node_when_asked() {
        let mut svc = Service::new("api");
        let n = node("n1");
        let mut info = NodeInfo::new(0, &n);
        info.add_task(0);
        assert!(run_filter(&ReplicaAntiAffinity, &svc, None, &info).is_success());
        svc.labels
            .insert("berth.anti-affinity".into(), "true".into());
        assert_eq!(
            reason(&run_filter(&ReplicaAntiAffinity, &svc, None, &info)),
            ALREADY_RUNS
        );
    }
}
