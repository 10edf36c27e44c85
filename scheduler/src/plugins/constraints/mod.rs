//! Swarm's ConstraintFilter: every `--constraint` must hold. The reason names the first
//! constraint the node fails, so "did not match constraint node.labels.zone==b" counts apart
//! from "did not match constraint node.role==worker".

use std::sync::Arc;

use crate::framework::{CycleState, FilterKind, FilterPlugin, Plugin, Reason, Status, TaskSpec};
use crate::snapshot::NodeInfo;

pub const NAME: &str = "Constraints";
const STATE: &str = "Constraints/reasons";

pub struct Constraints;

struct Reasons(Vec<Reason>);

impl Plugin for Constraints {
    fn name(&self) -> &'static str {
        NAME
    }
}

impl FilterPlugin for Constraints {
    fn kind(&self) -> FilterKind {
        FilterKind::Static
    }

    fn pre_filter(&self, cx: &mut CycleState, task: &TaskSpec) -> Status {
        if task.constraints.is_empty() {
            return Status::SKIP;
        }
        let reasons = task
            .constraints
            .iter()
            .map(|c| {
                let suffix = if c.is_known_key() {
                    ""
                } else {
                    " (unknown key: matches no node)"
                };
                Reason::Shared(Arc::from(format!("did not match constraint {c}{suffix}")))
            })
            .collect();
        cx.write(STATE, Reasons(reasons));
        Status::SUCCESS
    }

    fn filter(&self, cx: &CycleState, task: &TaskSpec, info: &NodeInfo) -> Status {
        for (i, c) in task.constraints.iter().enumerate() {
            if !c.matches(info.node) {
                let reason = cx
                    .read::<Reasons>(STATE)
                    .map(|r| r.0[i].clone())
                    .unwrap_or_else(|| Reason::from(format!("did not match constraint {c}")));
                return Status::unschedulable(NAME, reason);
            }
        }
        Status::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Service;
    use crate::plugins::test_support::{node, reason, run_filter};

    #[test]
    fn names_the_failing_constraint() {
        let mut svc = Service::new("api");
        svc.placement.constraints = vec!["node.role==worker".into(), "node.labels.zone==b".into()];
        let mut n = node("n1");
        n.labels.insert("zone".into(), "a".into());
        let got = run_filter(&Constraints, &svc, None, &NodeInfo::new(0, &n));
        assert_eq!(reason(&got), "did not match constraint node.labels.zone==b");
        n.labels.insert("zone".into(), "B".into());
        assert!(run_filter(&Constraints, &svc, None, &NodeInfo::new(0, &n)).is_success());
        svc.placement.constraints = vec!["node.name==x".into()];
        assert_eq!(
            reason(&run_filter(&Constraints, &svc, None, &NodeInfo::new(0, &n))),
            "did not match constraint node.name==x (unknown key: matches no node)"
        );
    }
}
