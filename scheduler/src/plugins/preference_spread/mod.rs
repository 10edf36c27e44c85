//! Swarm's placement preferences (`--placement-pref spread=node.labels.zone`): nodes form a
//! tree by label value, outermost preference first; tasks are split evenly across branches,
//! a node without the label belongs to the "" branch, and a branch without room overflows to
//! the others. Descriptors other than `node.labels.*` / `engine.labels.*` are ignored, as
//! Swarm ignores them.

use crate::constraint::{ENGINE_LABEL_PREFIX, NODE_LABEL_PREFIX};
use crate::framework::{Plugin, SpreadLevel, SpreadPlugin, TaskSpec};
use crate::model::Node;

pub const NAME: &str = "PreferenceSpread";

pub struct PreferenceSpread;

impl Plugin for PreferenceSpread {
    fn name(&self) -> &'static str {
        NAME
    }
}

/// Strips the optional `spread=` that `docker service create --placement-pref` users write.
fn descriptor(pref: &str) -> &str {
    pref.strip_prefix("spread=").unwrap_or(pref).trim()
}

/// Whether Swarm can spread on this descriptor.
pub fn is_supported(descriptor: &str) -> bool {
    let lower = descriptor.to_ascii_lowercase();
    [NODE_LABEL_PREFIX, ENGINE_LABEL_PREFIX]
        .iter()
        .any(|p| lower.len() > p.len() && lower.starts_with(p))
}

/// The node's branch for a descriptor; a missing label is "" (Swarm's rule).
pub fn domain_value<'n>(descriptor: &str, node: &'n Node) -> &'n str {
    let lower = descriptor.to_ascii_lowercase();
    let (map, prefix_len) = if lower.starts_with(NODE_LABEL_PREFIX) {
        (&node.labels, NODE_LABEL_PREFIX.len())
    } else if lower.starts_with(ENGINE_LABEL_PREFIX) {
        (&node.engine_labels, ENGINE_LABEL_PREFIX.len())
    } else {
        return "";
    };
    map.get(&descriptor[prefix_len..])
        .map(String::as_str)
        .unwrap_or("")
}

impl SpreadPlugin for PreferenceSpread {
    fn levels(&self, task: &TaskSpec) -> Vec<SpreadLevel> {
        task.service
            .placement
            .preferences
            .iter()
            .map(|p| descriptor(p))
            .filter(|d| is_supported(d))
            .map(|d| SpreadLevel {
                descriptor: d.to_string(),
                max_skew: None,
                plugin: NAME,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_support() {
        let mut n = Node::new("a");
        n.labels.insert("zone".into(), "eu-1".into());
        n.engine_labels.insert("rack".into(), "r9".into());
        assert_eq!(domain_value("node.labels.zone", &n), "eu-1");
        assert_eq!(domain_value("NODE.LABELS.zone", &n), "eu-1");
        assert_eq!(domain_value("node.labels.Zone", &n), "");
        assert_eq!(domain_value("engine.labels.rack", &n), "r9");
        assert!(is_supported(descriptor("spread=node.labels.zone")));
        assert!(!is_supported("node.hostname"));
        assert!(!is_supported("node.labels."));
    }
}
