//! Shared fixtures for the plugin unit tests.

use crate::constraint::Constraint;
use crate::framework::{CycleState, FilterPlugin, SlotDataset, Status, TaskSpec};
use crate::model::{Node, Policy, Service};
use crate::snapshot::NodeInfo;

/// Runs pre-filter then filter for one node, as a cycle would.
pub fn run_filter(
    plugin: &dyn FilterPlugin,
    service: &Service,
    dataset: Option<&SlotDataset>,
    info: &NodeInfo,
) -> Status {
    let policy: Policy = service.policy().expect("valid labels in test");
    let constraints: Vec<Constraint> =
        crate::constraint::parse_all(&service.placement.constraints).expect("valid constraints");
    let task = TaskSpec {
        service,
        service_idx: 0,
        policy: &policy,
        constraints: &constraints,
        slot: Some(1),
        dataset,
    };
    let mut cx = CycleState::new();
    let pre = plugin.pre_filter(&mut cx, &task);
    if pre.is_skip() {
        return Status::SUCCESS;
    }
    if !pre.is_success() {
        return pre;
    }
    plugin.filter(&cx, &task, info)
}

pub fn reason(s: &Status) -> String {
    s.reason.as_ref().map(|r| r.to_string()).unwrap_or_default()
}

pub fn node(id: &str) -> Node {
    let mut n = Node::new(id);
    n.platform.os = "linux".into();
    n.platform.architecture = "x86_64".into();
    n.resources.nano_cpus = 4_000_000_000;
    n.resources.memory_bytes = 8 << 30;
    n
}

/// Runs `f` with the task spec a cycle would build for `service` (its labels' policy, no
/// constraints, service index 0, no slot).
pub fn with_task<R>(service: &Service, f: impl FnOnce(&TaskSpec) -> R) -> R {
    let policy: Policy = service.policy().expect("valid labels in test");
    let task = TaskSpec {
        service,
        service_idx: 0,
        policy: &policy,
        constraints: &[],
        slot: None,
        dataset: None,
    };
    f(&task)
}

pub trait FourCores: Sized {
    /// 4 CPUs and 4 GiB, for resource-share scores with round numbers.
    fn memory_gib_4(self) -> Self;
}

impl FourCores for Node {
    fn memory_gib_4(mut self) -> Self {
        self.resources.nano_cpus = 4_000_000_000;
        self.resources.memory_bytes = 4 << 30;
        self
    }
}
