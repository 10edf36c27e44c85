//! SwarmKit's own batch fill, used for the default profile when no spread level applies, so an
//! unlabelled service lands exactly where Swarm would put it.
//!
//! A greedy "least loaded node first" is *not* what Swarm does when a service's tasks are
//! already uneven. SwarmKit's `scheduleNTasksOnNodes` takes the n least loaded nodes (n = tasks
//! to place) in `nodeLess` order, then fills the current node until the *next* node is less
//! loaded, moving forward only — it never returns to an earlier node in that first pass — and
//! then goes round-robin over the nodes that still pass the pipeline. Measured on a real
//! Swarm: 5 tasks on worker3, scaled to 15 with worker1 and worker2 empty, Swarm lands
//! 7/2/6, not 5/5/5 (`tests/swarm_e2e.rs` checks Berth does the same). Tasks a pass cannot place
//! wait for Swarm's next pass; here the passes repeat until one places nothing.
//!
//! Ties that Swarm leaves to heap and map order break by node ID, as everywhere in Berth.

use crate::framework::{CycleState, FilterPlugin, Profile, Reason, TaskSpec};
use crate::snapshot::{NodeInfo, Snapshot};

use super::index::Class;
use super::verdict::{Failed, Key, Outcome, count_reasons, first_failure, key};

/// SwarmKit's `nodeLess`: fewer tasks of this service, then fewer tasks.
fn less(a: &NodeInfo, b: &NodeInfo, service: u32) -> bool {
    let (sa, sb) = (a.service_tasks(service), b.service_tasks(service));
    if sa != sb {
        return sa < sb;
    }
    a.total_tasks < b.total_tasks
}

/// `active`: every filter that applies; `rest`: those the static class does not answer for.
#[allow(clippy::too_many_arguments)]
pub fn place(
    profile: &Profile,
    snap: &mut Snapshot,
    task: &TaskSpec,
    count: usize,
    cx: &CycleState,
    active: &[&dyn FilterPlugin],
    rest: &[&dyn FilterPlugin],
    class: &Class,
) -> Outcome {
    let n = snap.nodes.len();
    let svc = task.service_idx;
    let mut failed: Vec<Failed> = vec![Failed::Static; n];
    let mut placed: Vec<Key> = Vec::with_capacity(count.min(1 << 20));
    while placed.len() < count {
        let want = count - placed.len();
        let mut candidates: Vec<u32> = Vec::new();
        for &i in &class.passing {
            let info = &snap.nodes[i as usize];
            failed[i as usize] = match first_failure(rest, cx, task, info) {
                None => {
                    candidates.push(i);
                    Failed::No
                }
                Some((r, _)) => Failed::Because(r),
            };
        }
        if candidates.is_empty() {
            break;
        }
        candidates.sort_by_key(|&i| {
            let info = &snap.nodes[i as usize];
            (info.service_tasks(svc), info.total_tasks, i)
        });
        candidates.truncate(want);
        fill(
            profile,
            snap,
            task,
            want,
            &candidates,
            cx,
            rest,
            &mut placed,
        );
    }
    let pending = (placed.len() < count).then(|| {
        count_reasons(
            failed,
            Reason::Static("no room left"),
            snap,
            cx,
            task,
            active,
        )
    });
    Outcome { placed, pending }
}

/// One pass of `scheduleNTasksOnNodes` over `nodes` (sorted, each passing every filter;
/// `filters` need not include the static ones, which cannot change during a batch).
#[allow(clippy::too_many_arguments)]
fn fill(
    profile: &Profile,
    snap: &mut Snapshot,
    task: &TaskSpec,
    want: usize,
    nodes: &[u32],
    cx: &CycleState,
    filters: &[&dyn FilterPlugin],
    placed: &mut Vec<Key>,
) {
    let count = nodes.len();
    let svc = task.service_idx;
    let mut failed = vec![false; count];
    let mut iter = 0usize;
    let mut done = 0usize;
    loop {
        let i = nodes[iter % count] as usize;
        placed.push(key(profile, task, &snap.nodes[i]));
        let info = &mut snap.nodes[i];
        info.add_task(svc);
        for r in &profile.reserves {
            r.reserve(task, info);
        }
        done += 1;
        if done == want {
            return;
        }
        if iter + 1 < count {
            // First pass: fill this node until the next one is less loaded.
            let next = nodes[(iter + 1) % count] as usize;
            if less(&snap.nodes[next], &snap.nodes[i], svc) {
                iter += 1;
            }
        } else {
            // Later passes: one task at a time to each node that still fits.
            iter += 1;
        }
        let start = iter;
        while failed[iter % count]
            || first_failure(filters, cx, task, &snap.nodes[nodes[iter % count] as usize]).is_some()
        {
            failed[iter % count] = true;
            iter += 1;
            if iter - start == count {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::model::Cluster;
    use crate::schedule::plan;
    use crate::testing::*;

    fn counts(c: &Cluster) -> Vec<(String, usize)> {
        let p = plan(c).unwrap();
        let mut out: Vec<(String, usize)> = Vec::new();
        for pl in p.placements.iter().filter(|p| p.service == "s") {
            match out.iter_mut().find(|(n, _)| *n == pl.node.as_str()) {
                Some(e) => e.1 += 1,
                None => out.push((pl.node.to_string(), 1)),
            }
        }
        out.sort();
        out
    }

    #[test]
    fn scale_up_from_uneven_fills_forward_like_swarm() {
        // Measured on a real Swarm: 5 tasks on w3, scaled to 15 with w1 and w2 empty → one of
        // the empty nodes got 7, the other 2, w3 6. Swarm breaks the w1/w2 tie by heap order,
        // Berth by node ID.
        let mut c = Cluster {
            nodes: vec![node("w1"), node("w2"), node("w3")],
            services: vec![replicated("s", 15)],
            ..Cluster::default()
        };
        c.tasks = (1..=5).map(|slot| running("s", slot, "w3")).collect();
        assert_eq!(
            counts(&c),
            [("w1".into(), 2), ("w2".into(), 7), ("w3".into(), 6)]
        );
    }

    #[test]
    fn empty_cluster_is_round_robin_and_limits_hold() {
        let c = Cluster {
            nodes: vec![node("a"), node("b"), node("c")],
            services: vec![replicated("s", 7)],
            ..Cluster::default()
        };
        assert_eq!(
            counts(&c),
            [("a".into(), 3), ("b".into(), 2), ("c".into(), 2)]
        );
        let mut capped = c.clone();
        capped.services[0].placement.max_replicas = 2;
        let p = plan(&capped).unwrap();
        assert_eq!(p.pending.len(), 1);
        assert_eq!(
            p.pending[0].message(),
            "0/3 nodes available: 3 max replicas per node (2) reached"
        );
    }
}
