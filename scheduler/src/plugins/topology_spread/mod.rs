//! Berth's TopologySpread (`berth.topology-spread=node.labels.zone:1`): a hard spread like
//! Kubernetes' `topologySpreadConstraints` with `whenUnsatisfiable: DoNotSchedule` — a task may
//! go to a domain only if that keeps the domain within `max_skew` of the least loaded domain.
//! Unlike a Swarm preference, a full domain does not overflow into the others beyond the skew:
//! the task stays pending, which is what a replica set spread over zones needs.

use crate::framework::{Plugin, SpreadLevel, SpreadPlugin, TaskSpec};

pub const NAME: &str = "TopologySpread";

pub struct TopologySpread;

impl Plugin for TopologySpread {
    fn name(&self) -> &'static str {
        NAME
    }
}

impl SpreadPlugin for TopologySpread {
    fn levels(&self, task: &TaskSpec) -> Vec<SpreadLevel> {
        task.policy
            .topology_spread
            .iter()
            .map(|t| SpreadLevel {
                descriptor: t.key.clone(),
                max_skew: Some(t.max_skew),
                plugin: NAME,
            })
            .collect()
    }
}

/// Whether adding one task to a domain holding `count` keeps the skew within `max_skew`,
/// given the least loaded eligible domain holds `min`.
pub fn within_skew(count: u32, min: u32, max_skew: u32) -> bool {
    count < min + max_skew
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew() {
        assert!(within_skew(0, 0, 1));
        assert!(!within_skew(1, 0, 1));
        assert!(within_skew(1, 0, 2));
        assert!(within_skew(3, 3, 1));
    }
}
