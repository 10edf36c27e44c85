//! Answers "why is X on node Y" and "why is X pending": every node's verdict for one service's
//! next task — the filter that rejected it, or its scores — evaluated at the moment the plan
//! reaches that service (after the services it depends on and those before it by name), plus
//! the plan's placements and pending reasons for the service.

use serde::Serialize;

use crate::framework::CycleState;
use crate::model::{Cluster, Mode, NodeId, Strategy};
use crate::plugins::preference_spread::domain_value;
use crate::schedule::batch::{first_failure, key, pre_filter};
use crate::schedule::{
    Index, Pending, Placement, PlanError, PluginScore, ScoreCard, run_indexed, slot_dataset,
    task_spec,
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeVerdict {
    pub node: NodeId,
    pub hostname: String,
    pub feasible: bool,
    /// The filter that rejected the node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Weighted, normalised total (feasible nodes only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scores: Vec<PluginScore>,
    /// The node's value for each spread level (`node.labels.zone=a`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    pub service: String,
    pub strategy: Strategy,
    /// The slot the verdicts are for (`None` for a global service).
    pub slot: Option<u64>,
    /// Best node first; infeasible nodes after, by node ID.
    pub verdicts: Vec<NodeVerdict>,
    pub placements: Vec<Placement>,
    pub pending: Vec<Pending>,
}

pub fn explain(cluster: &Cluster, service: &str) -> Result<Explanation, PlanError> {
    let ix = Index::new(cluster)?;
    let si = ix.service_index(cluster, service)?;
    let (full, _) = run_indexed(cluster, &ix, None);
    let placements: Vec<Placement> = full
        .placements
        .iter()
        .filter(|p| p.service == service)
        .cloned()
        .collect();
    let pending: Vec<Pending> = full
        .pending
        .iter()
        .filter(|p| p.service == service)
        .cloned()
        .collect();

    let svc = ix.service(cluster, si);
    let policy = &ix.policies[si];
    let slot = match svc.mode {
        Mode::Global => None,
        Mode::Replicated { replicas } => pending
            .iter()
            .find_map(|p| p.slot)
            .or_else(|| {
                // The first slot not running yet, else the first slot: "where would it go".
                (1..=replicas.max(1))
                    .find(|s| !placements.iter().any(|p| p.slot == Some(*s) && !p.new))
            })
            .or(Some(1)),
    };

    let (_, snap) = run_indexed(cluster, &ix, Some(si));
    let dataset = match (&policy.stateful, slot) {
        (Some(st), Some(s)) => Some(slot_dataset(
            cluster,
            &ix,
            &st.volume_for_slot(s),
            st.failover,
            st.backend,
        )),
        _ => None,
    };
    let task = task_spec(cluster, &ix, si, slot, dataset.as_ref());
    let profile = &ix.profiles[&policy.strategy];
    let levels: Vec<String> = profile
        .spreads
        .iter()
        .flat_map(|s| s.levels(&task))
        .map(|l| l.descriptor)
        .collect();
    let mut cx = CycleState::new();
    let active = pre_filter(profile, &mut cx, &task);
    let mut verdicts: Vec<(Option<crate::schedule::Key>, NodeVerdict)> = snap
        .nodes
        .iter()
        .map(|info| {
            let domains = levels
                .iter()
                .map(|d| format!("{d}={}", domain_value(d, info.node)))
                .collect();
            let mut v = NodeVerdict {
                node: info.node.id.clone(),
                hostname: info.node.hostname.clone(),
                feasible: false,
                plugin: None,
                reason: None,
                total: None,
                scores: Vec::new(),
                domains,
            };
            let failure = match &active {
                Err((reason, _)) => Some((reason.clone(), "PreFilter")),
                Ok(filters) => first_failure(filters, &cx, &task, info),
            };
            match failure {
                Some((reason, plugin)) => {
                    v.plugin = Some(plugin);
                    v.reason = Some(reason.to_string());
                    (None, v)
                }
                None => {
                    let k = key(profile, &task, info);
                    let card = ScoreCard {
                        strategy: policy.strategy,
                        total: k.total,
                        raw: k.raw,
                    };
                    v.feasible = true;
                    v.total = Some(k.total);
                    v.scores = card.breakdown();
                    (Some(k), v)
                }
            }
        })
        .collect();
    // Feasible by rank (highest key first), then the rest in node-ID order.
    verdicts.sort_by(|a, b| match (&a.0, &b.0) {
        (Some(x), Some(y)) => y.cmp(x),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.1.node.cmp(&b.1.node),
    });
    Ok(Explanation {
        service: service.to_string(),
        strategy: policy.strategy,
        slot,
        verdicts: verdicts.into_iter().map(|(_, v)| v).collect(),
        placements,
        pending,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn verdicts_name_the_filter_and_rank_the_rest() {
        let nodes = vec![
            node("a").memory_gib(1),
            node("b").label("zone", "b"),
            node("c").label("zone", "b"),
            node("d").label("zone", "a"),
        ];
        let mut c = Cluster {
            nodes,
            services: vec![
                replicated("db", 2)
                    .reserve_memory_gib(2)
                    .constraint("node.labels.zone==b"),
            ],
            ..Cluster::default()
        };
        c.tasks = vec![running("db", 1, "c")];
        let e = explain(&c, "db").unwrap();
        assert_eq!(e.slot, Some(2));
        let summary: Vec<(String, bool, Option<&str>)> = e
            .verdicts
            .iter()
            .map(|v| (v.node.to_string(), v.feasible, v.reason.as_deref()))
            .collect();
        assert_eq!(
            summary,
            [
                ("b".to_string(), true, None),
                ("c".to_string(), true, None),
                ("a".to_string(), false, Some("insufficient memory")),
                (
                    "d".to_string(),
                    false,
                    Some("did not match constraint node.labels.zone==b")
                ),
            ]
        );
        assert_eq!(e.verdicts[0].scores[0].normalized, 100);
        assert_eq!(
            e.verdicts[1].scores[0].normalized, 50,
            "c already runs one replica"
        );
        assert_eq!(
            e.placements
                .iter()
                .map(|p| (p.node.to_string(), p.new))
                .collect::<Vec<_>>(),
            [("c".into(), false), ("b".into(), true)]
        );
        assert!(
            explain(&c, "nope")
                .unwrap_err()
                .to_string()
                .contains("unknown service `nope`")
        );
    }
}
