//! Swarm's MaxReplicasFilter (`--replicas-max-per-node`): fewer than N tasks of this service on
//! the node. 0 means unlimited.

use std::sync::Arc;

use crate::framework::{CycleState, FilterKind, FilterPlugin, Plugin, Reason, Status, TaskSpec};
use crate::snapshot::NodeInfo;

pub const NAME: &str = "MaxReplicas";
const STATE: &str = "MaxReplicas/reason";

pub struct MaxReplicas;

impl Plugin for MaxReplicas {
    fn name(&self) -> &'static str {
        NAME
    }
}

impl FilterPlugin for MaxReplicas {
    fn kind(&self) -> FilterKind {
        FilterKind::Monotone
    }

    fn pre_filter(&self, cx: &mut CycleState, task: &TaskSpec) -> Status {
        let max = task.service.placement.max_replicas;
        if max == 0 {
            return Status::SKIP;
        }
        cx.write(
            STATE,
            Reason::Shared(Arc::from(format!("max replicas per node ({max}) reached"))),
        );
        Status::SUCCESS
    }

    fn filter(&self, cx: &CycleState, task: &TaskSpec, info: &NodeInfo) -> Status {
        let max = task.service.placement.max_replicas;
        if u64::from(info.service_tasks(task.service_idx)) < max {
            return Status::SUCCESS;
        }
        let reason = cx
            .read::<Reason>(STATE)
            .cloned()
            .unwrap_or(Reason::Static("max replicas per node reached"));
        Status::unschedulable(NAME, reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Service;
    use crate::plugins::test_support::{node, reason, run_filter};

    #[test]
    fn limit_per_node() {
        let mut svc = Service::new("api");
        svc.placement.max_replicas = 2;
        let n = node("n1");
        let mut info = NodeInfo::new(0, &n);
        info.add_task(0);
        assert!(run_filter(&MaxReplicas, &svc, None, &info).is_success());
        info.add_task(0);
        assert_eq!(
            reason(&run_filter(&MaxReplicas, &svc, None, &info)),
            "max replicas per node (2) reached"
        );
        info.remove_task(0);
        assert!(run_filter(&MaxReplicas, &svc, None, &info).is_success());
    }
}
