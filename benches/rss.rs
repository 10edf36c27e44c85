//! Peak memory and wall time of `plan` on every benchmark shape, one fresh process per shape.
//!
//! `cargo bench -p berth --bench rss` runs every shape by re-executing this binary with
//! `--shape NODES TASKS VARIANT`, so each child's `VmHWM` (peak resident set, from
//! `/proc/self/status`) belongs to that shape alone. Each line reports the RSS once the input
//! cluster is built (`rss_model`) and the peak after planning (`peak_rss`), the time to build
//! the model (not part of the engine) and the end-to-end `plan` time (model in → every task
//! placed, result dropped). Linux only (reads `/proc`); single-threaded like the engine.

use std::process::Command;
use std::time::Instant;

use berth::scheduler::schedule::plan;
use berth::scheduler::testing::{Shape, synthetic};

/// (nodes, tasks) measured, the criterion bench's shapes; every variant of each.
const SHAPES: &[(usize, u64)] = &[
    (1_000, 1_000),
    (1_000, 10_000),
    (1_000, 100_000),
    (5_000, 100_000),
    (10_000, 100_000),
    (100_000, 1_000),
];
const VARIANTS: &[&str] = &["plain", "constraint", "constraint+preference"];

fn shape(nodes: usize, tasks: u64, variant: &str) -> Shape {
    let (constraint, preference) = match variant {
        "plain" => (false, false),
        "constraint" => (true, false),
        "preference" => (false, true),
        "constraint+preference" => (true, true),
        other => panic!("unknown variant `{other}`"),
    };
    Shape {
        nodes,
        tasks,
        constraint,
        preference,
    }
}

/// A `kB` field of `/proc/self/status`, in MiB.
fn status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    let kb: f64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("a number of kB");
    kb / 1024.0
}

fn child(nodes: usize, tasks: u64, variant: &str) {
    let t0 = Instant::now();
    let cluster = synthetic(shape(nodes, tasks, variant));
    let build = t0.elapsed();
    let rss_model = status_mib("VmRSS:");
    let t1 = Instant::now();
    let p = plan(&cluster).expect("synthetic cluster is valid");
    let placed = p.new_placements().count() as u64;
    let pending = p.pending.len();
    drop(p);
    let wall = t1.elapsed();
    assert_eq!(placed, tasks, "every task must be placed");
    assert_eq!(pending, 0, "no task may stay pending");
    let peak = status_mib("VmHWM:");
    println!(
        "{:>7} {:>7} {:<22} {:>9.1} {:>9.1} {:>10.1} {:>9.1} {:>12.0}",
        nodes,
        tasks,
        variant,
        build.as_secs_f64() * 1e3,
        wall.as_secs_f64() * 1e3,
        rss_model,
        peak,
        tasks as f64 / wall.as_secs_f64(),
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--shape") {
        let nodes = args[i + 1].parse().expect("nodes");
        let tasks = args[i + 2].parse().expect("tasks");
        child(nodes, tasks, &args[i + 3]);
        return;
    }
    // `cargo test --benches` runs bench targets with `--test`-less args too; keep it cheap
    // there: only `cargo bench` passes `--bench`.
    if !args.iter().any(|a| a == "--bench") {
        println!("rss: pass --bench (cargo bench) to measure");
        return;
    }
    let exe = std::env::current_exe().expect("current exe");
    println!(
        "{:>7} {:>7} {:<22} {:>9} {:>9} {:>10} {:>9} {:>12}",
        "nodes", "tasks", "variant", "model_ms", "plan_ms", "rss_model", "peak_rss", "tasks/s"
    );
    println!("{:>58} {:>10} {:>9}", "", "(MiB)", "(MiB)");
    for &(nodes, tasks) in SHAPES {
        for variant in VARIANTS {
            let status = Command::new(&exe)
                .args(["--shape", &nodes.to_string(), &tasks.to_string(), variant])
                .status()
                .expect("re-exec self");
            assert!(status.success(), "shape {nodes}x{tasks} {variant} failed");
        }
    }
}
