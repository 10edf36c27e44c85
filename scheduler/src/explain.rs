//! Answers "why is X on node Y" and "why is X pending": every node's verdict for one service's
//! next task — the filter that rejected it, or its scores — evaluated at the moment the plan
//! reaches that service (after the services it depends on and those before it by name), plus
//! the plan's placements and pending reasons for the service.
//!
//! When every slot runs, the verdicts are for slot 1 as if it were placed again: its own task
//! is taken off its node first, so that node is judged on its merits rather than as "already
//! runs a replica". Scores are shown in the strategy's own terms (task counts, the share of a
//! node in use), and every spread level — a Swarm placement preference or a Berth topology
//! spread — shows the domain's count of the service's tasks against the least loaded one, as
//! the planner compares them: a domain a topology spread would push past its max skew makes
//! the node infeasible, and the feasible nodes are ranked in the order the planner tries them.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::framework::{CycleState, FilterKind};
use crate::model::{Cluster, Mode, NodeId, Strategy};
use crate::plugins::preference_spread::domain_value;
use crate::plugins::topology_spread::{self, within_skew};
use crate::schedule::batch::{first_failure, key, pre_filter};
use crate::schedule::run::{Kept, unbook};
use crate::schedule::{
    Index, Pending, Placement, PlanError, PluginScore, ScoreCard, run_indexed, slot_dataset,
    task_spec,
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeVerdict {
    pub node: NodeId,
    pub hostname: String,
    pub feasible: bool,
    /// The filter (or the topology spread) that rejected the node.
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
    /// How each spread level sees the node's domain.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub spread: Vec<SpreadVerdict>,
    /// The explained slot runs here now (its own task was taken off to judge the node).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub runs_slot: bool,
}

/// One spread level's view of a node's domain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SpreadVerdict {
    /// `node.labels.zone`.
    pub level: String,
    /// `TopologySpread` (`berth.topology-spread`, hard) or `PreferenceSpread` (Swarm's
    /// `--placement-pref`, soft).
    pub plugin: &'static str,
    /// The node's value (`""` for a node without the label, Swarm's rule).
    pub value: String,
    /// Tasks of the service already in the domain: over the whole cluster for a topology
    /// spread, within the enclosing domain of the outer level for a preference.
    pub count: u32,
    /// The fewest the planner compares against: the least loaded domain that could take the
    /// task (topology spread), or the least loaded sibling domain with a feasible node
    /// (preference).
    pub least: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_skew: Option<u32>,
    /// Topology spread: one more task here stays within the max skew. Preference: the
    /// domain is among the least loaded, so the planner tries it first.
    pub ok: bool,
}

impl SpreadVerdict {
    /// One line for a person: `node.labels.zone=a holds 1 (least 0, max skew 1): within skew`.
    pub fn describe(&self) -> String {
        let skew = self
            .max_skew
            .map(|k| format!(", max skew {k}"))
            .unwrap_or_default();
        let verdict = match (self.max_skew, self.ok) {
            (Some(_), true) => "within skew",
            (Some(_), false) => "would exceed the skew",
            (None, true) => "tried first",
            (None, false) => "tried after less loaded domains",
        };
        format!(
            "{}={} holds {} (least {}{skew}): {verdict}",
            self.level, self.value, self.count, self.least
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    pub service: String,
    pub strategy: Strategy,
    /// The slot the verdicts are for (`None` for a global service).
    pub slot: Option<u64>,
    /// The node the explained slot runs on now, if it runs.
    pub running_on: Option<NodeId>,
    /// Best node first (in the order the planner tries them); infeasible nodes after, by node
    /// ID.
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

    let (_, mut snap) = run_indexed(cluster, &ix, Some(si));
    // A slot that runs is judged as if placed again, without its own task.
    let running = slot.and_then(|s| {
        let ni = Kept::new(cluster, &ix).slot_node(&ix, si, s)?;
        unbook(cluster, &ix, &mut snap, si, s, ni);
        Some(ni)
    });
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
    let levels: Vec<_> = profile
        .spreads
        .iter()
        .flat_map(|s| s.levels(&task))
        .collect();
    let mut cx = CycleState::new();
    let active = pre_filter(profile, &mut cx, &task);
    // The filters that decide whether a domain could take the task at all (a topology
    // spread's least loaded domain is taken among those), as the batch planner decides it.
    let statics: Vec<_> = match &active {
        Ok(filters) => filters
            .iter()
            .copied()
            .filter(|f| matches!(f.kind(), FilterKind::Static | FilterKind::Slot))
            .collect(),
        Err(_) => Vec::new(),
    };
    let tables: Vec<_> = levels.iter().map(|l| ix.domain(l)).collect();
    let n = snap.nodes.len();
    let here: Vec<u32> = snap
        .nodes
        .iter()
        .map(|info| info.service_tasks(task.service_idx))
        .collect();
    let eligible: Vec<bool> = snap
        .nodes
        .iter()
        .map(|info| active.is_ok() && first_failure(&statics, &cx, &task, info).is_none())
        .collect();

    // Pass 1: filters and scores.
    let mut verdicts: Vec<(Option<crate::schedule::Key>, NodeVerdict)> = snap
        .nodes
        .iter()
        .enumerate()
        .map(|(i, info)| {
            let domains = levels
                .iter()
                .map(|l| {
                    format!(
                        "{}={}",
                        l.descriptor,
                        domain_value(&l.descriptor, info.node)
                    )
                })
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
                spread: Vec::new(),
                runs_slot: running == Some(i as u32),
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

    // Pass 2: the hard levels. A domain's count is over the whole cluster, its least loaded
    // rival among the domains with a node that could take the task (the batch planner's rule).
    for (d, level) in levels.iter().enumerate() {
        let Some(skew) = level.max_skew else { continue };
        let mut count: BTreeMap<u32, (u32, bool)> = BTreeMap::new();
        for i in 0..n {
            let e = count.entry(tables[d].of_node[i]).or_default();
            e.0 += here[i];
            e.1 |= eligible[i];
        }
        let least = count
            .values()
            .filter(|(_, el)| *el)
            .map(|(c, _)| *c)
            .min()
            .unwrap_or(0);
        for (i, (k, v)) in verdicts.iter_mut().enumerate() {
            let value = tables[d].of_node[i];
            let c = count[&value].0;
            let ok = within_skew(c, least, skew);
            v.spread.push(SpreadVerdict {
                level: level.descriptor.clone(),
                plugin: level.plugin,
                value: tables[d].values[value as usize].clone(),
                count: c,
                least,
                max_skew: Some(skew),
                ok,
            });
            if !ok && v.feasible {
                v.feasible = false;
                v.plugin = Some(topology_spread::NAME);
                v.reason = Some(format!(
                    "would exceed max skew {skew} on {}: {} holds {c}, the least loaded {least}",
                    level.descriptor, tables[d].values[value as usize]
                ));
                v.total = None;
                v.scores.clear();
                *k = None;
            }
        }
    }

    // Pass 3: the soft levels, per enclosing domain (the planner's tree): a domain is tried
    // first when no sibling with a feasible node holds fewer of the service's tasks.
    let path = |i: usize, depth: usize| -> Vec<u32> {
        (0..=depth).map(|d| tables[d].of_node[i]).collect()
    };
    let mut order: Vec<Vec<(u32, u32)>> = vec![Vec::new(); n];
    for (d, level) in levels.iter().enumerate() {
        let mut count: BTreeMap<Vec<u32>, (u32, bool)> = BTreeMap::new();
        for i in 0..n {
            let e = count.entry(path(i, d)).or_default();
            e.0 += here[i];
            e.1 |= verdicts[i].1.feasible;
        }
        for i in 0..n {
            let p = path(i, d);
            let c = count[&p].0;
            order[i].push((c, p[d]));
            // A node the task cannot go to is in no preference's competition.
            if level.max_skew.is_some() || !verdicts[i].1.feasible {
                continue;
            }
            let least = count
                .iter()
                .filter(|(q, (_, live))| *live && q[..d] == p[..d])
                .map(|(_, (c, _))| *c)
                .min()
                .unwrap_or(c);
            verdicts[i].1.spread.push(SpreadVerdict {
                level: level.descriptor.clone(),
                plugin: level.plugin,
                value: tables[d].values[p[d] as usize].clone(),
                count: c,
                least,
                max_skew: None,
                ok: c == least,
            });
        }
    }
    // The spread verdicts in level order, outermost first.
    for (_, v) in &mut verdicts {
        v.spread
            .sort_by_key(|s| levels.iter().position(|l| l.descriptor == s.level));
    }

    // Feasible in the order the planner tries them (least loaded domain first at each level,
    // then by rank), then the rest in node-ID order.
    let mut ranked: Vec<_> = verdicts.into_iter().zip(order).collect();
    ranked.sort_by(|((ka, a), oa), ((kb, b), ob)| match (ka, kb) {
        (Some(x), Some(y)) => oa.cmp(ob).then_with(|| y.cmp(x)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.node.cmp(&b.node),
    });
    Ok(Explanation {
        service: service.to_string(),
        strategy: policy.strategy,
        slot,
        running_on: running.map(|ni| snap.nodes[ni as usize].node.id.clone()),
        verdicts: ranked.into_iter().map(|((_, v), _)| v).collect(),
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
            e.verdicts[1].scores[0].detail,
            "1 task of this service here, 1 task in all"
        );
        assert_eq!(e.running_on, None, "slot 2 is not running");
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

    /// Issue 25: on a healthy stateful service, slot 1's own node was reported as "already
    /// runs a replica". Judged as if placed again, it is feasible and marked as running it.
    #[test]
    fn a_running_slot_is_judged_without_its_own_task() {
        let c = Cluster {
            nodes: vec![node("w1"), node("w2"), node("w3")],
            services: vec![replicated("db", 2).stateful("db-{slot}", "recreate")],
            tasks: vec![running("db", 1, "w1"), running("db", 2, "w2")],
            ..Cluster::default()
        };
        let e = explain(&c, "db").unwrap();
        assert_eq!(
            (e.slot, e.running_on.as_ref().map(|n| n.to_string())),
            (Some(1), Some("w1".into()))
        );
        let w1 = e
            .verdicts
            .iter()
            .find(|v| v.node.to_string() == "w1")
            .unwrap();
        assert!(w1.feasible, "{w1:?}");
        assert!(w1.runs_slot);
        assert!(
            e.verdicts.iter().all(|v| v.reason.as_deref()
                != Some("already runs a replica (anti-affinity)")
                || v.node.to_string() == "w2"),
            "only slot 2's node runs another replica: {:?}",
            e.verdicts
        );
        let w2 = e
            .verdicts
            .iter()
            .find(|v| v.node.to_string() == "w2")
            .unwrap();
        assert!(!w2.feasible && !w2.runs_slot);
    }

    /// A topology spread's reasoning: each node's zone against the least loaded zone, and a
    /// node whose zone would exceed the max skew is rejected by TopologySpread, as the planner
    /// rejects it (the slot is pending for the same reason).
    #[test]
    fn topology_spread_shows_the_domains_and_rejects_the_skew() {
        let c = Cluster {
            nodes: vec![
                node("a1").label("zone", "a"),
                node("a2").label("zone", "a"),
                node("b1").label("zone", "b"),
                node("c1").label("zone", "c").memory_gib(1),
            ],
            services: vec![
                replicated("db", 3)
                    .label("berth.topology-spread", "node.labels.zone:1")
                    .reserve_memory_gib(2),
            ],
            tasks: vec![running("db", 1, "a1"), running("db", 2, "b1")],
            ..Cluster::default()
        };
        let e = explain(&c, "db").unwrap();
        assert_eq!(e.slot, Some(3));
        let by: BTreeMap<String, &NodeVerdict> =
            e.verdicts.iter().map(|v| (v.node.to_string(), v)).collect();
        // Zone c is eligible (its node passes the static filters) and holds 0: the least.
        // a and b hold 1 each, so one more there makes a skew of 2 > 1.
        for n in ["a1", "a2", "b1"] {
            let v = by[n];
            assert!(!v.feasible, "{n}: {v:?}");
            assert_eq!(v.plugin, Some(topology_spread::NAME), "{n}: {v:?}");
            assert!(
                v.reason
                    .as_deref()
                    .unwrap()
                    .contains("would exceed max skew 1 on node.labels.zone"),
                "{n}: {v:?}"
            );
            assert_eq!(
                (v.spread[0].count, v.spread[0].least, v.spread[0].ok),
                (1, 0, false)
            );
        }
        let c1 = by["c1"];
        assert_eq!(c1.reason.as_deref(), Some("insufficient memory"));
        assert_eq!(
            (c1.spread[0].count, c1.spread[0].least, c1.spread[0].ok),
            (0, 0, true)
        );
        assert!(
            e.pending[0]
                .message()
                .contains("would exceed max skew 1 on node.labels.zone"),
            "the plan agrees: {:?}",
            e.pending
        );
        assert_eq!(
            c1.spread[0].describe(),
            "node.labels.zone=c holds 0 (least 0, max skew 1): within skew"
        );
    }

    /// A Swarm placement preference: the nodes are ranked as the planner tries them, least
    /// loaded zone first, and the first is where the plan puts the task.
    #[test]
    fn preference_ranks_as_the_planner_tries_and_says_why() {
        let c = Cluster {
            nodes: vec![
                node("a1").label("zone", "a"),
                node("a2").label("zone", "a"),
                node("b1").label("zone", "b"),
            ],
            services: vec![replicated("web", 3).preference("spread=node.labels.zone")],
            tasks: vec![running("web", 1, "b1"), running("web", 2, "a1")],
            ..Cluster::default()
        };
        let e = explain(&c, "web").unwrap();
        assert_eq!(e.slot, Some(3));
        let order: Vec<String> = e.verdicts.iter().map(|v| v.node.to_string()).collect();
        // Both zones hold one task; a comes first by value, and within it the emptier a2.
        assert_eq!(order, ["a2", "a1", "b1"]);
        let placed = e.placements.iter().find(|p| p.new).unwrap();
        assert_eq!(
            placed.node.to_string(),
            order[0],
            "the plan takes the first"
        );
        let a2 = &e.verdicts[0];
        assert_eq!(a2.spread.len(), 1);
        assert_eq!(
            a2.spread[0].describe(),
            "node.labels.zone=a holds 1 (least 1): tried first"
        );
        assert_eq!(
            a2.scores[0].detail,
            "0 tasks of this service here, 0 tasks in all"
        );
        let json = serde_json::to_value(a2).unwrap();
        assert!(
            json["scores"][0].get("raw").is_none(),
            "no raw internals: {json}"
        );
        assert_eq!(json["scores"][0]["score"], 100);
    }
}
