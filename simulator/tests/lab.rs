//! `scenarios/lab.toml`, the chaos lab as a scenario: Berth holds its bounds there, and every
//! fault still hits the writer it is aimed at (the faults name fixed nodes, chosen from where
//! the engine puts each writer; a placement change would make a fault miss, and the
//! comparison in BENCHMARKS.md ("Simulator vs the chaos lab") with it). Prints the predicted
//! time from each fault to the writer's first write on its new node.

use std::path::Path;

use berth_sim::policy::PolicyKind;
use berth_sim::runner::run_one;
use berth_sim::scenario;

/// `1m03.734s` or `3.734s` (the trace's clock) in ms.
fn trace_ms(s: &str) -> Option<u64> {
    let s = s.strip_suffix('s')?;
    let (m, rest) = match s.split_once('m') {
        Some((m, rest)) => (m.parse::<u64>().ok()?, rest),
        None => (0, s),
    };
    let (sec, ms) = rest.split_once('.')?;
    Some(m * 60_000 + sec.parse::<u64>().ok()? * 1000 + ms.parse::<u64>().ok()?)
}

/// The time of the first trace line at or after `from` that starts with `prefix`.
fn first_after(trace: &[String], from: u64, prefix: &str) -> Option<(u64, String)> {
    trace.iter().find_map(|l| {
        let l = l.trim_start();
        let (at, msg) = l.split_once("  ")?;
        let at = trace_ms(at)?;
        (at >= from && msg.starts_with(prefix)).then(|| (at, msg.to_string()))
    })
}

#[test]
fn lab_faults_hit_their_writers_and_berth_holds() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/lab.toml");
    let scn = scenario::load(&path).expect("lab.toml loads");
    let schedule = scn.schedule(scn.seed);
    let start_swarm = scn.swarm.start_latency;

    let berth = run_one(&scn, PolicyKind::Berth, scn.seed, &schedule).expect("berth run");
    assert!(
        berth.violation.is_none(),
        "{:?}\n{}",
        berth.violation,
        berth.trace_tail.join("\n")
    );
    assert!(
        berth.bound_failures.is_empty(),
        "{:?}",
        berth.bound_failures
    );
    assert_eq!(berth.metrics.double_writer_windows, 0);
    assert_eq!(berth.lost_writes, 0);

    let swarm = run_one(&scn, PolicyKind::SwarmDefault, scn.seed, &schedule).expect("swarm run");

    // Under berth the trace shows the writer running on its new node; under swarm-default,
    // Swarm's placement of the new task.
    let on_berth = (&berth.trace, "cb slot 1 running on");
    let on_swarm = (&swarm.trace, "swarm: cs slot 1 →");
    // (fault, its time in ms, the run and line that show the writer on its new node).
    let aimed = [
        ("kill-worker, berth", 60_000, on_berth),
        ("kill-worker, swarm", 120_000, on_swarm),
        ("partition, swarm", 180_000, on_swarm),
        ("partition, berth", 240_000, on_berth),
        ("drain, swarm", 300_000, on_swarm),
        ("drain, berth", 360_000, on_berth),
        ("kill-daemon, berth", 420_000, on_berth),
    ];
    for (what, at, (trace, prefix)) in aimed {
        assert!(
            schedule.iter().any(|f| f.at == at),
            "{what}: no fault at {at} ms"
        );
        let (when, line) = first_after(trace, at, prefix).unwrap_or_else(|| {
            panic!(
                "{what}: the writer never moved after the fault at {at} ms\n{}",
                trace.join("\n")
            )
        });
        // Swarm's line is the placement; its task writes once started.
        let ready = if prefix.starts_with("swarm") {
            when + start_swarm
        } else {
            when
        };
        assert!(
            ready - at < 30_000,
            "{what}: '{line}' {} ms after the fault: the fault missed its writer",
            ready - at
        );
        eprintln!(
            "{what}: predicted {:.3} s to serve again ({line})",
            (ready - at) as f64 / 1000.0
        );
    }
}
