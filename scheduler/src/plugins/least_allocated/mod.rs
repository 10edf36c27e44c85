//! LeastAllocated (kube's NodeResourcesFit `LeastAllocated`): prefer the node with the largest
//! share of CPU and memory still free after this task — spreads load by resources rather than
//! by task count. Chosen with `berth.strategy=least-allocated`.

use crate::framework::{MAX_NODE_SCORE, Plugin, ScorePlugin, TaskSpec};
use crate::snapshot::NodeInfo;

pub const NAME: &str = "LeastAllocated";

/// Fixed-point scale of raw scores (percent × 1000), so nearly equal nodes still differ.
pub const SCALE: i64 = 1000;

pub struct LeastAllocated;

impl Plugin for LeastAllocated {
    fn name(&self) -> &'static str {
        NAME
    }
}

/// Mean over CPU and memory of `used * 100 * SCALE / capacity` after adding the task; a
/// resource the node does not report counts as fully used, so unknown nodes rank last.
pub fn used_share(task: &TaskSpec, info: &NodeInfo) -> i64 {
    let cap = info.node.resources;
    let used = info.reserved + task.service.reservations;
    let share = |used: i64, cap: i64| {
        if cap <= 0 {
            100 * SCALE
        } else {
            (i128::from(used.clamp(0, cap)) * 100 * i128::from(SCALE) / i128::from(cap)) as i64
        }
    };
    (share(used.nano_cpus, cap.nano_cpus) + share(used.memory_bytes, cap.memory_bytes)) / 2
}

impl ScorePlugin for LeastAllocated {
    fn score(&self, task: &TaskSpec, info: &NodeInfo) -> i64 {
        100 * SCALE - used_share(task, info)
    }

    fn normalize(&self, raw: i64) -> u32 {
        (raw / SCALE).clamp(0, i64::from(MAX_NODE_SCORE)) as u32
    }

    fn describe(&self, raw: i64) -> String {
        format!(
            "{} of CPU and memory free with this task",
            percent(raw.clamp(0, 100 * SCALE))
        )
    }
}

/// A share in `used_share`'s fixed point as a percentage with one decimal (`62.5%`).
pub fn percent(share: i64) -> String {
    format!("{}.{}%", share / SCALE, (share % SCALE) / (SCALE / 10))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Node;
    use crate::plugins::test_support::{FourCores, node, with_task};
    use crate::testing::{ServiceExt, replicated};

    #[test]
    fn emptier_node_scores_higher() {
        let mut svc = replicated("db", 1).reserve_memory_gib(1);
        svc.reservations.nano_cpus = 1_000_000_000;
        let (a, b) = (node("a").memory_gib_4(), node("b").memory_gib_4());
        let ia = NodeInfo::new(0, &a);
        let mut ib = NodeInfo::new(1, &b);
        ib.reserved.memory_bytes = 2 << 30;
        let unknown = Node::new("c");
        with_task(&svc, |task| {
            assert_eq!(
                LeastAllocated.normalize(LeastAllocated.score(task, &ia)),
                75
            );
            assert_eq!(
                LeastAllocated.normalize(LeastAllocated.score(task, &ib)),
                50
            );
            assert_eq!(LeastAllocated.score(task, &NodeInfo::new(2, &unknown)), 0);
            assert_eq!(
                LeastAllocated.describe(LeastAllocated.score(task, &ia)),
                "75.0% of CPU and memory free with this task"
            );
        });
    }
}
