//! `scenarios/lab.toml`, the chaos lab as a scenario: Berth holds its bounds there, and every
//! fault still hits the writer it is aimed at (the faults name fixed nodes, chosen from where
//! the engine puts each writer; a placement change would make a fault miss, and the
//! comparison in BENCHMARKS.md ("Simulator vs the chaos lab") with it). Prints the predicted
//! time from each fault to the writer's first write on its new node. Also Swarm's own drain as
//! SwarmKit's restart supervisor does it: the replacement starts once the old task has stopped,
//! or its node is DOWN, or a minute has passed.

use std::path::Path;

use berth_sim::policy::PolicyKind;
use berth_sim::runner::RunOutcome;
use berth_sim::runner::run_one;
use berth_sim::scenario::{self, Scenario};

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

    // Plain Swarm's drain: the replacement is placed at the drain but started only once the
    // drained task has stopped, a stop's time later; the old task writes until then, and the
    // two never write at once.
    let drain = 300_000;
    let stop = scn.swarm.stop_latency;
    assert!(stop > 0);
    let (placed, line) = first_after(&swarm.trace, drain, "swarm: cs slot 1 goes to w3 once")
        .expect("the drain's replacement is placed");
    assert_eq!(placed, drain, "{line}");
    let (started, line) = first_after(&swarm.trace, drain, "swarm: cs slot 1 →").expect("started");
    assert_eq!(started, drain + stop, "{line}");
    assert!(line.ends_with("(its task on w2 has stopped)"), "{line}");
    assert!(
        first_after(&swarm.trace, drain, "double writer opens")
            .is_none_or(|(at, _)| at > drain + 60_000),
        "{}",
        swarm.trace.join("\n")
    );
}

fn lab() -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/lab.toml");
    scenario::load(&path).expect("lab.toml loads")
}

/// Plain Swarm on the lab with only these faults (TOML `[[faults]]`).
fn swarm_run(scn: &Scenario, faults: &str) -> RunOutcome {
    let faults = scenario::parse_faults(scn, "faults.toml", faults).expect("faults parse");
    run_one(scn, PolicyKind::SwarmDefault, scn.seed, &faults).expect("swarm run")
}

#[test]
fn a_drained_node_that_crashes_mid_stop_releases_its_replacement_when_down() {
    // cs starts on w2. Drained at 1m, w2 crashes 1 s later, before the 4.09 s stop lands:
    // the managers never hear of the stop, so the replacement waits for w2 to be DOWN.
    let scn = lab();
    let run = swarm_run(
        &scn,
        r#"
[[faults]]
at = "1m"
kind = "drain"
node = "w2"
[[faults]]
at = "1m1s"
kind = "crash"
node = "w2"
recover_after = "5m"
"#,
    );
    let (placed, line) = first_after(&run.trace, 60_000, "swarm: cs slot 1 goes to")
        .expect("the drain's replacement is placed");
    assert_eq!(placed, 60_000, "{line}");
    let (down, _) = first_after(&run.trace, 60_000, "swarm marks w2 DOWN").expect("w2 DOWN");
    let (started, line) = first_after(&run.trace, 60_000, "swarm: cs slot 1 →").expect("started");
    assert_eq!(started, down, "{line}\n{}", run.trace.join("\n"));
    assert!(
        line.ends_with("(w2, where its task ran, is DOWN)"),
        "{line}"
    );
    // Not the restart delay's later reconcile: the waiting task is the slot's only one.
    assert_eq!(
        run.trace
            .iter()
            .filter(|l| l.contains("swarm: cs slot 1 →"))
            .count(),
        1,
        "{}",
        run.trace.join("\n")
    );
}

#[test]
fn a_stop_longer_than_a_minute_starts_the_replacement_beside_it() {
    // SwarmKit waits at most TaskTimeout (1 min) for the old task; a container that takes
    // longer to stop then writes beside its replacement.
    let mut scn = lab();
    scn.swarm.stop_latency = 90_000;
    let run = swarm_run(
        &scn,
        r#"
[[faults]]
at = "1m"
kind = "drain"
node = "w2"
"#,
    );
    let (started, line) = first_after(&run.trace, 60_000, "swarm: cs slot 1 →").expect("started");
    assert_eq!(started, 120_000, "{line}");
    assert!(
        line.ends_with("(waited 1m for its task on w2 to stop)"),
        "{line}"
    );
    assert!(run.metrics.double_writer_windows >= 1);
    let (opens, _) = first_after(&run.trace, 60_000, "double writer opens").expect("two writers");
    assert_eq!(opens, 120_000 + scn.swarm.start_latency);
}
