//! Binpack (kube's `MostAllocated`): prefer the fullest node that still fits, leaving whole
//! nodes free for large tasks or for scaling down. Chosen with `berth.strategy=binpack`.

use crate::framework::{MAX_NODE_SCORE, Plugin, ScorePlugin, TaskSpec};
use crate::plugins::least_allocated::{SCALE, percent, used_share};
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

    fn describe(&self, raw: i64) -> String {
        if raw < 0 {
            return "capacity unknown: ranked after every node that reports it".into();
        }
        format!("{} of CPU and memory used with this task", percent(raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::test_support::{FourCores, node, with_task};
    use crate::testing::{ServiceExt, replicated};

    #[test]
    fn fuller_node_scores_higher() {
        let mut svc = replicated("batch", 1).reserve_memory_gib(1);
        svc.reservations.nano_cpus = 1_000_000_000;
        let (a, b) = (node("a").memory_gib_4(), node("b").memory_gib_4());
        let ia = NodeInfo::new(0, &a);
        let mut ib = NodeInfo::new(1, &b);
        ib.reserved.memory_bytes = 2 << 30;
        ib.reserved.nano_cpus = 2_000_000_000;
        with_task(&svc, |task| {
            assert!(Binpack.score(task, &ib) > Binpack.score(task, &ia));
            assert_eq!(Binpack.normalize(Binpack.score(task, &ib)), 75);
            assert_eq!(
                Binpack.describe(Binpack.score(task, &ib)),
                "75.0% of CPU and memory used with this task"
            );
        });
    }
}
