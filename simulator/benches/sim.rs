//! Simulator throughput, measured with criterion:
//! - `events/seed-cluster-1h`: one simulated hour of the seed cluster under Berth; throughput
//!   is reported in simulated events (client writes, faults, detections, plan steps) per
//!   second of wall time, on one core.
//! - `day/large-10k`: a simulated day of 10,000 nodes with hourly random faults, Berth policy.
//!
//! `cargo bench -p berth-sim --bench sim` (about two minutes on 2 cores); the numbers are in
//! BENCHMARKS.md.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use berth_sim::policy::PolicyKind;
use berth_sim::runner::run_one;
use berth_sim::scenario;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn load(name: &str) -> scenario::Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(format!("{name}.toml"));
    scenario::load(&path).expect("bundled scenario")
}

fn events(c: &mut Criterion) {
    let scn = load("seed-cluster");
    let schedule = scn.schedule(scn.seed);
    let n = run_one(&scn, PolicyKind::Berth, scn.seed, &schedule)
        .expect("run")
        .metrics
        .events;
    let mut g = c.benchmark_group("events");
    g.throughput(Throughput::Elements(n));
    g.sample_size(20);
    g.bench_function("seed-cluster-1h", |b| {
        b.iter(|| black_box(run_one(&scn, PolicyKind::Berth, scn.seed, &schedule).expect("run")))
    });
    g.finish();
}

fn large_day(c: &mut Criterion) {
    let scn = load("large-10k");
    let schedule = scn.schedule(scn.seed);
    let mut g = c.benchmark_group("day");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(60));
    g.bench_function("large-10k", |b| {
        b.iter(|| black_box(run_one(&scn, PolicyKind::Berth, scn.seed, &schedule).expect("run")))
    });
    g.finish();
}

criterion_group!(benches, events, large_day);
criterion_main!(benches);
