//! The incremental planner ([`berth::scheduler::replan`]): how long from a delta to the new
//! plan the controller acts on, at 10k nodes with 100k tasks running.
//!
//! `node-down`: a node with its ~10 tasks is lost; timed is `apply(NodeDown)` plus reading
//! the new placements and pending tasks. Each sample then brings the node back (untimed), so
//! every iteration starts from the cluster at rest. `task-failed`: one task fails (and is
//! started again, untimed). `new`: building the planner (index, booking, first plan) from the
//! cluster, for comparison with a plan from scratch.
//!
//! `cargo bench -p berth --bench replan`; the numbers are in BENCHMARKS.md.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};

use berth::scheduler::model::{Cluster, NodeId};
use berth::scheduler::replan::{Delta, Replanner};
use berth::scheduler::testing::{Shape, at_rest, synthetic};

fn rest(constraint: bool, preference: bool) -> Cluster {
    at_rest(&synthetic(Shape {
        nodes: 10_000,
        tasks: 100_000,
        constraint,
        preference,
    }))
}

fn deltas(c: &mut Criterion) {
    let mut g = c.benchmark_group("replan/10kx100k");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (name, constraint, preference) in [
        ("plain", false, false),
        ("constraint+preference", true, true),
    ] {
        let cluster = rest(constraint, preference);
        let mut r = Replanner::new(cluster.clone()).expect("valid");
        assert!(r.new_placements().is_empty(), "at rest, nothing to place");
        // Nodes with tasks, taken in turn so no one node's cache decides the figure.
        let victims: Vec<NodeId> = cluster
            .tasks
            .iter()
            .step_by(997)
            .filter_map(|t| t.node_id.clone())
            .collect();
        let mut k = 0;
        g.bench_function(format!("node-down/{name}"), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let node = victims[k % victims.len()].clone();
                    k += 1;
                    let t = Instant::now();
                    r.apply(Delta::NodeDown(node.clone())).expect("known node");
                    let placed = r.new_placements();
                    let pending = r.pending();
                    timed += t.elapsed();
                    assert!(!placed.is_empty() && pending.is_empty());
                    black_box((placed, pending));
                    r.apply(Delta::NodeBack(node)).expect("known node");
                }
                timed
            })
        });
        let tasks: Vec<_> = cluster.tasks.iter().step_by(991).cloned().collect();
        g.bench_function(format!("task-failed/{name}"), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let task = tasks[k % tasks.len()].clone();
                    k += 1;
                    let t = Instant::now();
                    r.apply(Delta::TaskFailed(task.id.clone()))
                        .expect("known task");
                    black_box((r.new_placements(), r.pending()));
                    timed += t.elapsed();
                    r.apply(Delta::TaskStarted(task)).expect("known task");
                }
                timed
            })
        });
        g.bench_function(format!("new/{name}"), |b| {
            b.iter_batched(
                || cluster.clone(),
                |c| Replanner::new(c).expect("valid"),
                criterion::BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, deltas);
criterion_main!(benches);
