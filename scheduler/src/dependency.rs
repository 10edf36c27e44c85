//! The `berth.depends-on` graph: which services fail over and start before which. Built with
//! petgraph; a cycle is an error naming its members, because no order can honour it.

use std::collections::{BTreeMap, BTreeSet};

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DependencyError {
    #[error("service `{service}`: berth.depends-on names unknown service `{dependency}`")]
    Unknown { service: String, dependency: String },
    #[error("berth.depends-on forms a cycle: {}", .members.join(" -> "))]
    Cycle { members: Vec<String> },
}

/// Services in dependency order, dependencies first; independent services by name, so the
/// order is the same whatever order the input listed them in. Also each service's depth
/// (0 for a service with no dependencies), which failover plans use as their wave number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Order {
    pub sequence: Vec<usize>,
    pub depth: Vec<u32>,
}

/// `names[i]` is service i's name, `deps[i]` the names it depends on.
pub fn order(names: &[&str], deps: &[&[String]]) -> Result<Order, DependencyError> {
    let by_name: BTreeMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let mut graph: DiGraph<usize, ()> = DiGraph::with_capacity(names.len(), 0);
    let idx: Vec<NodeIndex> = (0..names.len()).map(|i| graph.add_node(i)).collect();
    for (i, ds) in deps.iter().enumerate() {
        for d in ds.iter() {
            let &j = by_name
                .get(d.as_str())
                .ok_or_else(|| DependencyError::Unknown {
                    service: names[i].to_string(),
                    dependency: d.clone(),
                })?;
            graph.add_edge(idx[j], idx[i], ());
        }
    }
    for scc in tarjan_scc(&graph) {
        let self_loop = scc.len() == 1 && graph.contains_edge(scc[0], scc[0]);
        if scc.len() > 1 || self_loop {
            let mut members: Vec<String> =
                scc.iter().map(|n| names[graph[*n]].to_string()).collect();
            members.sort();
            members.push(members[0].clone());
            return Err(DependencyError::Cycle { members });
        }
    }
    // Kahn's algorithm with a name-ordered ready set: deterministic, dependencies first.
    let mut indegree: Vec<usize> = idx
        .iter()
        .map(|n| {
            graph
                .neighbors_directed(*n, petgraph::Direction::Incoming)
                .count()
        })
        .collect();
    let mut depth = vec![0u32; names.len()];
    let mut ready: BTreeSet<(&str, usize)> = (0..names.len())
        .filter(|i| indegree[*i] == 0)
        .map(|i| (names[i], i))
        .collect();
    let mut sequence = Vec::with_capacity(names.len());
    while let Some(first) = ready.pop_first() {
        let i = first.1;
        sequence.push(i);
        for n in graph.neighbors_directed(idx[i], petgraph::Direction::Outgoing) {
            let j = graph[n];
            depth[j] = depth[j].max(depth[i] + 1);
            indegree[j] -= 1;
            if indegree[j] == 0 {
                ready.insert((names[j], j));
            }
        }
    }
    debug_assert_eq!(sequence.len(), names.len(), "acyclic after the SCC check");
    Ok(Order { sequence, depth })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deps(v: &[&[&str]]) -> Vec<Vec<String>> {
        v.iter()
            .map(|d| d.iter().map(|s| s.to_string()).collect())
            .collect()
    }

    fn run(names: &[&str], d: &[&[&str]]) -> Result<Order, DependencyError> {
        let d = deps(d);
        let refs: Vec<&[String]> = d.iter().map(|v| v.as_slice()).collect();
        order(names, &refs)
    }

    #[test]
    fn dependencies_first_then_by_name() {
        let o = run(
            &["web", "api", "mongo", "cache"],
            &[&["api"], &["mongo", "cache"], &[], &[]],
        )
        .unwrap();
        let names = ["web", "api", "mongo", "cache"];
        let seq: Vec<&str> = o.sequence.iter().map(|i| names[*i]).collect();
        assert_eq!(seq, ["cache", "mongo", "api", "web"]);
        assert_eq!(o.depth, vec![2, 1, 0, 0]);
    }

    #[test]
    fn cycles_and_unknowns_are_errors() {
        let err = run(&["a", "b", "c"], &[&["b"], &["c"], &["a"]]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "berth.depends-on forms a cycle: a -> b -> c -> a"
        );
        let err = run(&["a"], &[&["a"]]).unwrap_err();
        assert_eq!(err.to_string(), "berth.depends-on forms a cycle: a -> a");
        let err = run(&["a"], &[&["zz"]]).unwrap_err();
        assert!(err.to_string().contains("unknown service `zz`"));
    }
}
