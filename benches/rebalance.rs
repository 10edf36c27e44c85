//! The rescheduling planner ([`berth::scheduler::rebalance`]) at 10k nodes with 100k tasks
//! running: 97,000 tasks of a stateless service and 1,000 stateful services of 3 slots, each
//! spread over three zones (`berth.topology-spread=node.labels.zone:1`), placed by the planner.
//!
//! `plan/100-added`: 100 empty nodes join the full cluster; timed is `plan_rebalance` from
//! the cluster to the plan (index, the placement run, judging every stateful slot, the moves).
//! `noop/at-rest`: the same check on the cluster at rest, which proposes nothing.
//! `noop/node-down`: one node lost (its tasks not yet replaced), the check after that event —
//! a full check from scratch. `schedule-plan/at-rest`: the placement run alone on the same
//! cluster, which every rebalance plan starts with.
//!
//! Incrementally ([`berth::scheduler::rebalance::RebalanceIndex`], built once from the cluster at
//! rest): `incremental/check-after-node-down` is `worth_moving` with the node lost (the event
//! already applied); `incremental/node-down+check+back+check` applies the loss, checks, applies
//! the node's return and checks again — two events and two checks per iteration.
//!
//! `cargo bench -p berth --bench rebalance`; the numbers are in BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};

use berth::scheduler::model::{Cluster, NodeState};
use berth::scheduler::rebalance::{Budget, NodeEvent, RebalanceIndex, plan_rebalance};
use berth::scheduler::testing::{NodeExt, ServiceExt, Shape, at_rest, node, replicated, synthetic};

fn at_rest_cluster() -> Cluster {
    let mut c = synthetic(Shape {
        nodes: 10_000,
        tasks: 97_000,
        constraint: false,
        preference: false,
    });
    for k in 0..1_000 {
        let name = format!("db-{k:04}");
        c.services.push(
            replicated(&name, 3)
                .stateful(&format!("{name}-{{slot}}"), "move")
                .label("berth.topology-spread", "node.labels.zone:1"),
        );
    }
    at_rest(&c)
}

fn rebalance(c: &mut Criterion) {
    let mut g = c.benchmark_group("rebalance/10kx100k");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5));
    let rest = at_rest_cluster();
    let budget = Budget::default();

    let mut added = rest.clone();
    for i in 0..100 {
        added
            .nodes
            .push(node(&format!("new-{i:03}")).label("zone", ["a", "b", "c"][i % 3]));
    }
    let plan = plan_rebalance(&added, &budget).expect("valid");
    assert!(!plan.moves.is_empty(), "the new nodes take slots");
    eprintln!(
        "plan/100-added: {} moves in {} waves, {} held back",
        plan.moves.len(),
        plan.waves,
        plan.held.len()
    );
    g.bench_function("plan/100-added", |b| {
        b.iter(|| black_box(plan_rebalance(&added, &budget).expect("valid")))
    });

    let plan = plan_rebalance(&rest, &budget).expect("valid");
    assert!(
        plan.moves.is_empty(),
        "at rest, nothing to move: {:?}",
        plan.moves.first()
    );
    g.bench_function("noop/at-rest", |b| {
        b.iter(|| black_box(plan_rebalance(&rest, &budget).expect("valid")))
    });

    // For comparison: the placement run alone (index, booking, every service's turn), which
    // every rebalance plan starts with.
    g.bench_function("schedule-plan/at-rest", |b| {
        b.iter(|| black_box(berth::scheduler::schedule::plan(&rest).expect("valid")))
    });

    let mut down = rest.clone();
    let victim = rest.tasks[rest.tasks.len() / 2]
        .node_id
        .clone()
        .expect("placed");
    let n = down
        .nodes
        .iter_mut()
        .find(|n| n.id == victim)
        .expect("node");
    n.state = NodeState::Down;
    let plan = plan_rebalance(&down, &budget).expect("valid");
    assert!(
        plan.moves.is_empty(),
        "a lost node is failover's: {:?}",
        plan.moves.first()
    );
    g.bench_function("noop/node-down", |b| {
        b.iter(|| black_box(plan_rebalance(&down, &budget).expect("valid")))
    });

    let mut r = RebalanceIndex::new(rest.clone()).expect("valid");
    assert!(!r.worth_moving(&budget), "at rest, nothing to move");
    r.apply(NodeEvent::Down(victim.clone()))
        .expect("known node");
    assert!(!r.worth_moving(&budget), "a lost node is failover's");
    assert_eq!(
        r.plan(&budget),
        plan,
        "the incremental plan is the full one"
    );
    g.bench_function("incremental/check-after-node-down", |b| {
        b.iter(|| black_box(r.worth_moving(&budget)))
    });
    g.bench_function("incremental/node-down+check+back+check", |b| {
        b.iter(|| {
            r.apply(NodeEvent::Back(victim.clone()))
                .expect("known node");
            let back = r.worth_moving(&budget);
            r.apply(NodeEvent::Down(victim.clone()))
                .expect("known node");
            black_box((back, r.worth_moving(&budget)))
        })
    });
    g.finish();
}

criterion_group!(benches, rebalance);
criterion_main!(benches);
