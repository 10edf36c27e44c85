//! Where a `replicated` dataset's standby copy goes: a node the service could run on that
//! runs none of its replicas and holds none of its other standbys (replica anti-affinity
//! would otherwise refuse to promote it), in another zone than the primary when possible,
//! spreading standbys by the copies each node already holds, ties by node ID.

use crate::constraint;
use crate::model::{Cluster, NodeId};

/// The caller's facts about one node, aligned with `cluster.nodes`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StandbyFacts {
    /// Powered, reachable, not draining, and free of the service's replicas and standbys.
    pub free: bool,
    /// Live copies the node holds (of any dataset).
    pub copies: u32,
}

/// The node for a standby of `service`'s dataset whose primary is `primary`; `None` when no
/// node qualifies. The node label `zone` names a node's zone. `cluster.nodes` is in node ID
/// order (`Cluster::normalize`), which breaks ties.
pub fn pick_standby(
    cluster: &Cluster,
    service: &str,
    primary: &NodeId,
    facts: &[StandbyFacts],
) -> Option<NodeId> {
    let svc = cluster.service_by_name(service)?;
    let constraints = constraint::parse_all(&svc.placement.constraints).unwrap_or_default();
    let zone = |i: usize| cluster.nodes[i].labels.get("zone").map(String::as_str);
    let home = cluster.nodes.binary_search_by(|n| n.id.cmp(primary)).ok();
    let home_zone = home.and_then(zone);
    (0..cluster.nodes.len())
        .filter(|&i| Some(i) != home && facts.get(i).is_some_and(|f| f.free))
        .filter(|&i| constraint::node_matches(&constraints, &cluster.nodes[i]))
        .min_by_key(|&i| ((zone(i) == home_zone) as u8, facts[i].copies, i))
        .map(|i| cluster.nodes[i].id.clone())
}
