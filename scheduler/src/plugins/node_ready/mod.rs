//! Swarm's ReadyFilter: only a node that is `ready` and `active` takes new tasks. Paused and
//! drained nodes keep what runs on them but get nothing new.

use crate::framework::{CycleState, FilterKind, FilterPlugin, Plugin, Reason, Status, TaskSpec};
use crate::model::{Availability, NodeState};
use crate::snapshot::NodeInfo;

pub const NAME: &str = "NodeReady";
pub const DOWN: &str = "node down";
pub const NOT_READY: &str = "node not ready";
pub const DRAINED: &str = "node drained";
pub const PAUSED: &str = "node paused";

pub struct NodeReady;

impl Plugin for NodeReady {
    fn name(&self) -> &'static str {
        NAME
    }
}

impl FilterPlugin for NodeReady {
    fn kind(&self) -> FilterKind {
        FilterKind::Static
    }

    fn filter(&self, _cx: &CycleState, _task: &TaskSpec, info: &NodeInfo) -> Status {
        let n = info.node;
        let reason = match (n.state, n.availability) {
            (NodeState::Ready, Availability::Active) => return Status::SUCCESS,
            (NodeState::Down, _) => DOWN,
            (NodeState::Unknown | NodeState::Disconnected, _) => NOT_READY,
            (NodeState::Ready, Availability::Drain) => DRAINED,
            (NodeState::Ready, Availability::Pause) => PAUSED,
        };
        Status::unschedulable(NAME, Reason::Static(reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Service;
    use crate::plugins::test_support::{node, reason, run_filter};

    #[test]
    fn only_ready_active_nodes_pass() {
        let svc = Service::new("web");
        let cases = [
            (NodeState::Ready, Availability::Active, ""),
            (NodeState::Down, Availability::Active, DOWN),
            (NodeState::Unknown, Availability::Active, NOT_READY),
            (NodeState::Disconnected, Availability::Active, NOT_READY),
            (NodeState::Ready, Availability::Drain, DRAINED),
            (NodeState::Ready, Availability::Pause, PAUSED),
            (NodeState::Down, Availability::Drain, DOWN),
        ];
        for (state, availability, want) in cases {
            let mut n = node("n1");
            n.state = state;
            n.availability = availability;
            let got = run_filter(&NodeReady, &svc, None, &NodeInfo::new(0, &n));
            assert_eq!(reason(&got), want, "{state:?}/{availability:?}");
        }
    }
}
