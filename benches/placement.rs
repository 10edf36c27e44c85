//! End-to-end placement benchmarks: `plan(&cluster)` (model in → every task placed, plan
//! dropped) on the shapes of SwarmKit's own scheduler benchmarks, (N nodes, T tasks) ∈
//! {(1k,1k), (1k,10k), (1k,100k), (5k,100k), (10k,100k), (100k,1k), (100k,100k)}, each as
//! `plain`, `constraint` (`node.labels.group==g1`, half the nodes) and
//! `constraint+preference` (plus `spread=node.labels.zone` over 3 zones).
//!
//! `plan/10k-services`: 100 services × 1,000 replicas against 1 × 100,000 on 10k nodes
//! (constraint and zone preference on every service).
//!
//! Micro-benches explain the one shape dominated by the node count (100k nodes): `index`
//! (order, check, parse, static classes, domains; the input is not copied) and `filter_pass`
//! (every filter on every node, once, as a static class does).
//!
//! `cargo bench -p berth --bench placement`; the numbers are in BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

use berth::scheduler::framework::{CycleState, FilterPlugin, Profile, TaskSpec};
use berth::scheduler::model::{Cluster, Strategy};
use berth::scheduler::schedule::{Index, plan};
use berth::scheduler::snapshot::Snapshot;
use berth::scheduler::testing::{Shape, many_services, synthetic};

const SHAPES: &[(usize, u64)] = &[
    (1_000, 1_000),
    (1_000, 10_000),
    (1_000, 100_000),
    (5_000, 100_000),
    (10_000, 100_000),
    (100_000, 1_000),
    (100_000, 100_000),
];

const VARIANTS: &[(&str, bool, bool)] = &[
    ("plain", false, false),
    ("constraint", true, false),
    ("constraint+preference", true, true),
];

/// Builds the shape and checks, outside the timing, that `plan` places every task: a bench
/// that silently places nothing would measure nothing.
fn checked_cluster(shape: Shape) -> Cluster {
    let cluster = synthetic(shape);
    let p = plan(&cluster).expect("synthetic cluster is valid");
    assert!(
        p.pending.is_empty(),
        "{shape:?}: {} pending",
        p.pending.len()
    );
    assert_eq!(
        p.new_placements().count() as u64,
        shape.tasks,
        "{shape:?}: every task placed"
    );
    if shape.constraint {
        let even = |id: &str| {
            id.rsplit('-')
                .next()
                .unwrap()
                .parse::<usize>()
                .unwrap()
                .is_multiple_of(2)
        };
        assert!(
            p.placements.iter().all(|pl| even(pl.node.as_str())),
            "{shape:?}: constraint group==g1 (even nodes) honoured"
        );
    }
    cluster
}

fn placement(c: &mut Criterion) {
    for &(nodes, tasks) in SHAPES {
        let mut g = c.benchmark_group(format!("plan/{}x{}", short(nodes as u64), short(tasks)));
        let big = nodes as u64 * 10 + tasks >= 100_000;
        if big {
            g.sample_size(10)
                .warm_up_time(Duration::from_millis(500))
                .measurement_time(Duration::from_secs(3));
        } else {
            g.sample_size(30)
                .warm_up_time(Duration::from_millis(300))
                .measurement_time(Duration::from_secs(2));
        }
        for &(name, constraint, preference) in VARIANTS {
            let cluster = checked_cluster(Shape {
                nodes,
                tasks,
                constraint,
                preference,
            });
            g.bench_with_input(BenchmarkId::from_parameter(name), &cluster, |b, cl| {
                b.iter(|| plan(black_box(cl)).expect("plan"))
            });
        }
        g.finish();
    }
}

/// The parts of the 100k-node shape that scale with nodes, not tasks.
fn per_node_work(c: &mut Criterion) {
    let mut g = c.benchmark_group("nodes100k");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let cluster = synthetic(Shape {
        nodes: 100_000,
        tasks: 1_000,
        constraint: true,
        preference: false,
    });
    g.bench_function("synthetic_model_build", |b| {
        b.iter(|| {
            synthetic(Shape {
                nodes: 100_000,
                tasks: 1_000,
                constraint: true,
                preference: false,
            })
        })
    });
    g.bench_function("index", |b| {
        b.iter(|| Index::new(black_box(&cluster)).expect("valid"))
    });
    let ix = Index::new(&cluster).expect("valid");
    g.bench_function("snapshot", |b| {
        b.iter(|| Snapshot::new(black_box(ix.node_refs(&cluster))))
    });
    let snap = Snapshot::new(ix.node_refs(&cluster));
    let profile = Profile::for_strategy(Strategy::Spread);
    let task = TaskSpec {
        service: &cluster.services[0],
        service_idx: 0,
        policy: &ix.policies[0],
        constraints: &ix.constraints[0],
        slot: None,
        dataset: None,
    };
    g.bench_function("filter_pass", |b| {
        b.iter(|| {
            let mut cx = CycleState::new();
            let active: Vec<&dyn FilterPlugin> = profile
                .filters
                .iter()
                .filter(|f| f.pre_filter(&mut cx, &task).is_success())
                .map(|f| f.as_ref())
                .collect();
            let mut feasible = 0u32;
            for info in &snap.nodes {
                if active
                    .iter()
                    .all(|f| f.filter(&cx, &task, info).is_success())
                {
                    feasible += 1;
                }
            }
            assert_eq!(feasible, 50_000);
            feasible
        })
    });
    g.finish();
}

fn short(n: u64) -> String {
    if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

/// 100 services of 1,000 replicas against one of 100,000, on 10k nodes, each service with a
/// constraint and a zone preference: what static classes and integer domains are for.
fn services(c: &mut Criterion) {
    let mut g = c.benchmark_group("plan/10k-services");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (name, count, replicas) in [("100x1000", 100, 1_000), ("1x100000", 1, 100_000)] {
        let cluster = many_services(10_000, count, replicas);
        let p = plan(&cluster).expect("valid");
        assert!(p.pending.is_empty(), "{name}: every task placed");
        assert_eq!(p.new_placements().count(), 100_000, "{name}");
        g.bench_with_input(BenchmarkId::from_parameter(name), &cluster, |b, cl| {
            b.iter(|| plan(black_box(cl)).expect("plan"))
        });
    }
    g.finish();
}

criterion_group!(benches, placement, services, per_node_work);
criterion_main!(benches);
