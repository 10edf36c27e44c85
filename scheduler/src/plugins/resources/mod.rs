//! Swarm's ResourceFilter (kube's NodeResourcesFit): the task's reserved CPU and memory must fit
//! in what the node has left. Skipped for a task that reserves nothing, as in Swarm.
//! Also the reserve plugin that books the reservation on the chosen node.

use crate::framework::{
    CycleState, FilterKind, FilterPlugin, Plugin, Reason, ReservePlugin, Status, TaskSpec,
};
use crate::snapshot::NodeInfo;

pub const NAME: &str = "Resources";
pub const INSUFFICIENT_CPU: &str = "insufficient cpu";
pub const INSUFFICIENT_MEMORY: &str = "insufficient memory";

pub struct Resources;

impl Plugin for Resources {
    fn name(&self) -> &'static str {
        NAME
    }
}

impl FilterPlugin for Resources {
    fn kind(&self) -> FilterKind {
        FilterKind::Monotone
    }

    fn pre_filter(&self, _cx: &mut CycleState, task: &TaskSpec) -> Status {
        if task.service.reservations.is_zero() {
            Status::SKIP
        } else {
            Status::SUCCESS
        }
    }

    fn filter(&self, _cx: &CycleState, task: &TaskSpec, info: &NodeInfo) -> Status {
        let want = task.service.reservations;
        let free = info.available();
        // Memory first: it is the one operators most often run out of, and kube reports it so.
        if want.memory_bytes > free.memory_bytes {
            return Status::unschedulable(NAME, Reason::Static(INSUFFICIENT_MEMORY));
        }
        if want.nano_cpus > free.nano_cpus {
            return Status::unschedulable(NAME, Reason::Static(INSUFFICIENT_CPU));
        }
        Status::SUCCESS
    }
}

impl ReservePlugin for Resources {
    fn reserve(&self, task: &TaskSpec, info: &mut NodeInfo) -> Status {
        info.reserved = info.reserved + task.service.reservations;
        Status::SUCCESS
    }

    fn unreserve(&self, task: &TaskSpec, info: &mut NodeInfo) {
        info.reserved = info.reserved - task.service.reservations;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Service;
    use crate::plugins::test_support::{node, reason, run_filter};

    #[test]
    fn fits_until_full() {
        let n = node("n1"); // 4 CPUs, 8 GiB
        let mut svc = Service::new("db");
        svc.reservations.nano_cpus = 1_500_000_000;
        svc.reservations.memory_bytes = 3 << 30;
        let mut info = NodeInfo::new(0, &n);
        assert!(run_filter(&Resources, &svc, None, &info).is_success());
        info.reserved.memory_bytes = 6 << 30;
        assert_eq!(
            reason(&run_filter(&Resources, &svc, None, &info)),
            INSUFFICIENT_MEMORY
        );
        info.reserved.memory_bytes = 0;
        info.reserved.nano_cpus = 3_000_000_000;
        assert_eq!(
            reason(&run_filter(&Resources, &svc, None, &info)),
            INSUFFICIENT_CPU
        );
    }

    #[test]
    fn no_reservation_always_fits() {
        let mut n = node("n1");
        n.resources = Default::default();
        let info = NodeInfo::new(0, &n);
        assert!(run_filter(&Resources, &Service::new("web"), None, &info).is_success());
    }

    #[test]
    fn reserve_then_unreserve_restores_the_node() {
        let n = node("n1");
        let mut svc = Service::new("db");
        svc.reservations.memory_bytes = 3 << 30;
        let mut info = NodeInfo::new(0, &n);
        crate::plugins::test_support::with_task(&svc, |task| {
            assert!(Resources.reserve(task, &mut info).is_success());
            assert_eq!(info.available().memory_bytes, 5 << 30);
            Resources.unreserve(task, &mut info);
            assert_eq!(info.available().memory_bytes, 8 << 30);
        });
    }
}
