//! Where a `replicated` dataset's standby copy goes: a node the service could run on — the
//! placement pipeline's static filters: its constraints and its image's platforms — that runs
//! none of its replicas and holds none of its other standbys (replica anti-affinity would
//! otherwise refuse to promote it). Among those, the service's spread preferences
//! (`--placement-pref spread=…`, outermost first; the node label `zone` for a service without
//! any) prefer another branch than the primary's, then the node holding the fewest copies,
//! ties by node ID.

use crate::constraint;
use crate::model::{Cluster, Node, NodeId};
use crate::plugins::platform::platform_matches;
use crate::plugins::preference_spread::{domain_value, is_supported};

/// The caller's facts about one node, aligned with `cluster.nodes`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StandbyFacts {
    /// Powered, reachable, not draining, and free of the service's replicas and standbys.
    pub free: bool,
    /// Live copies the node holds (of any dataset).
    pub copies: u32,
}

/// The spread descriptors a standby is kept apart from its primary by.
fn spread_levels(prefs: &[String]) -> Vec<String> {
    let levels: Vec<String> = prefs
        .iter()
        .map(|p| p.strip_prefix("spread=").unwrap_or(p).trim().to_string())
        .filter(|d| is_supported(d))
        .collect();
    if levels.is_empty() {
        vec![format!("{}zone", constraint::NODE_LABEL_PREFIX)]
    } else {
        levels
    }
}

/// The node for a standby of `service`'s dataset whose primary is `primary`; `None` when no
/// node qualifies (or the service's constraints do not parse: its tasks could not be placed
/// either). `cluster.nodes` is in node ID order (`Cluster::normalize`), which breaks ties.
pub fn pick_standby(
    cluster: &Cluster,
    service: &str,
    primary: &NodeId,
    facts: &[StandbyFacts],
) -> Option<NodeId> {
    let svc = cluster.service_by_name(service)?;
    let constraints = constraint::parse_all(&svc.placement.constraints).ok()?;
    let platforms = &svc.placement.platforms;
    let fits = |n: &Node| {
        constraint::node_matches(&constraints, n)
            && (platforms.is_empty() || platforms.iter().any(|p| platform_matches(p, &n.platform)))
    };
    let levels = spread_levels(&svc.placement.preferences);
    let home = cluster.nodes.binary_search_by(|n| n.id.cmp(primary)).ok();
    // Per level, whether a node shares the primary's branch (1) or not (0): outermost first,
    // so a node in another zone wins over one merely on another rack of the same zone.
    let same_branch = |i: usize| -> Vec<u8> {
        levels
            .iter()
            .map(|d| match home {
                Some(h) => u8::from(
                    domain_value(d, &cluster.nodes[i]) == domain_value(d, &cluster.nodes[h]),
                ),
                None => 0,
            })
            .collect()
    };
    (0..cluster.nodes.len())
        .filter(|&i| Some(i) != home && facts.get(i).is_some_and(|f| f.free))
        .filter(|&i| fits(&cluster.nodes[i]))
        .min_by_key(|&i| (same_branch(i), facts[i].copies, i))
        .map(|i| cluster.nodes[i].id.clone())
}
