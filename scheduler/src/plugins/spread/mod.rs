//! Swarm's node order as a score: fewest tasks of this service first, then fewest tasks in
//! total (SwarmKit's `nodeLess`). It is the default profile's only score, so an unlabelled
//! service lands where Swarm would put it; ties go to the lowest node ID.

use crate::framework::{MAX_NODE_SCORE, Plugin, ScorePlugin, TaskSpec};
use crate::snapshot::NodeInfo;

pub const NAME: &str = "Spread";

pub struct Spread;

impl Plugin for Spread {
    fn name(&self) -> &'static str {
        NAME
    }
}

impl ScorePlugin for Spread {
    fn score(&self, task: &TaskSpec, info: &NodeInfo) -> i64 {
        // Lexicographic (service tasks, total tasks) packed into one number, negated so that
        // fewer is better. Both counts are u32, so the packing is exact.
        let svc = i64::from(info.service_tasks(task.service_idx));
        let total = i64::from(info.total_tasks);
        -((svc << 32) | total)
    }

    fn normalize(&self, raw: i64) -> u32 {
        // 100 for an empty node, halving-ish as this service's tasks pile up.
        let svc = ((-raw) >> 32) as u32;
        MAX_NODE_SCORE / (1 + svc)
    }

    fn describe(&self, raw: i64) -> String {
        let (svc, total) = ((-raw) >> 32, (-raw) & 0xffff_ffff);
        let tasks = |n: i64| if n == 1 { "task" } else { "tasks" };
        format!(
            "{svc} {} of this service here, {total} {} in all",
            tasks(svc),
            tasks(total)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Node, Service};
    use crate::plugins::test_support::with_task;

    #[test]
    fn service_tasks_then_total() {
        let (a, b) = (Node::new("a"), Node::new("b"));
        let mut ia = NodeInfo::new(0, &a);
        let mut ib = NodeInfo::new(1, &b);
        for _ in 0..10 {
            ia.add_task(1); // busy with another service
        }
        ib.add_task(0); // one of ours
        with_task(&Service::new("web"), |task| {
            assert!(Spread.score(task, &ia) > Spread.score(task, &ib));
            ia.add_task(0);
            assert!(Spread.score(task, &ia) < Spread.score(task, &ib));
            assert_eq!(Spread.normalize(Spread.score(task, &ib)), 50);
            assert_eq!(
                Spread.describe(Spread.score(task, &ia)),
                "1 task of this service here, 11 tasks in all"
            );
        });
    }
}
