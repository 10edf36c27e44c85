//! Binpack (kube's `MostAllocated`): prefer the fullest node that still fits, leaving whole
//! nodes free for large tasks or for scaling down. Chosen with `berth.strategy=binpack`.

use crate::framework::{MAX_NODE_SCORE, Plugin, ScorePlugin, TaskSpec};
use crate::plugins::least_allocated::{SCALE, used_share};
use crate::snapshot::NodeInfo;

pub const NAME: &str = "Binpack";

pub struct Binpack;

impl Plugin for Binpack {
    fn name(&self) -> &'static str {
        NAME
    }
}

impl ScorePlugin for Binpack {
    fn score(&self, task: &TaskSpec, info: &NodeInfo) -> i64 {
        if info.node.resources.is_zero() {
            // Unknown capacity: rank below every node we can reason about.
            return -1;
        }
        used_share(task, info)
    }

    fn normalize(&self, raw: i64) -> u32 {
        (raw / SCALE).clamp(0, i64::from(MAX_NODE_SCORE)) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::constraint::Constraint;
    use crate::model::{Node, Policy, Service};

    #[test]
    fn fuller_node_scores_higher() {
        let mut svc = Service::new("batch");
        svc.reservations.memory_bytes = 1 << 30;
        svc.reservations.nano_cpus = 1_000_000_000;
        let policy = Policy::default();
        let cs: Vec<Constraint> = vec![];
        let task = TaskSpec {
            service: &svc,
            service_idx: 0,
            policy: &policy,
            constraints: &cs,
            slot: None,
            dataset: None,
        };
        let mut a = Node::new("a");
        a.resources.nano_cpus = 4_000_000_000;
        a.resources.memory_bytes = 4 << 30;
        let b = a.clone();
        let ia = NodeInfo::new(0, &a);
        let mut ib = NodeInfo::new(1, &b);
        ib.reserved.memory_bytes = 2 << 30;
        ib.reserved.nano_cpus = 2_000_000_000;
        assert!(Binpack.score(&task, &ib) > Binpack.score(&task, &ia));
        assert_eq!(Binpack.normalize(Binpack.score(&task, &ib)), 75);
    }
}
