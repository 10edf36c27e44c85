//! Integration tests: the bundled scenarios under Berth, determinism (byte-identical JSON and
//! SVG), seed sensitivity, scenario errors, a small sweep, shrinking, and the CLI's exit codes.
//! Fixed short seeds and shortened durations keep the whole file fast in debug builds.

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_sim::plot;
use berth_sim::policy::PolicyKind;
use berth_sim::report::Report;
use berth_sim::runner::run_one;
use berth_sim::scenario::{self, Scenario};
use berth_sim::{shrink, sweep};

fn scenario_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(format!("{name}.toml"))
}

fn load(name: &str) -> Scenario {
    scenario::load(&scenario_path(name)).expect("bundled scenario loads")
}

fn report(scn: &Scenario, seed: u64, policies: &[PolicyKind]) -> Report {
    let schedule = scn.schedule(seed);
    let runs = policies
        .iter()
        .map(|&p| run_one(scn, p, seed, &schedule).expect("run"))
        .collect();
    Report::new(scn, seed, &schedule, runs)
}

fn assert_berth_holds(scn: &Scenario, seed: u64) {
    let r = report(scn, seed, &[PolicyKind::Berth]);
    let run = &r.runs[0];
    assert!(
        run.violation.is_none(),
        "{}: {:?}\n{}",
        scn.name,
        run.violation,
        run.trace_tail.join("\n")
    );
    assert!(
        run.bound_failures.is_empty(),
        "{}: {:?}",
        scn.name,
        run.bound_failures
    );
    assert_eq!(run.metrics.double_writer_windows, 0, "{}", scn.name);
}

#[test]
fn bundled_scenarios_hold_under_berth() {
    for name in [
        "seed-cluster",
        "partition",
        "zone-loss",
        "rolling-drain",
        "docker-inspect",
    ] {
        let scn = load(name);
        assert_berth_holds(&scn, scn.seed);
    }
    // chaos is random: a few fixed seeds, over its first 40 minutes.
    let mut chaos = load("chaos");
    chaos.duration = 40 * 60_000;
    for seed in [1, 2, 3] {
        assert_berth_holds(&chaos, seed);
    }
}

#[test]
fn large_cluster_loads_and_holds() {
    // The full simulated day is a release-mode run (CI, BENCHMARKS.md); here its first 20
    // minutes with faults pulled forward.
    let mut scn = load("large-10k");
    assert_eq!(scn.nodes.len(), 10_000);
    scn.duration = 20 * 60_000;
    if let Some(r) = &mut scn.random {
        r.start_after = 60_000;
        r.every = 5 * 60_000;
    }
    assert!(!scn.schedule(scn.seed).is_empty());
    assert_berth_holds(&scn, scn.seed);
}

#[test]
fn seed_cluster_tells_the_story() {
    let scn = load("seed-cluster");
    let r = report(&scn, scn.seed, &PolicyKind::ALL);
    let row = |p: PolicyKind| r.comparison.iter().find(|c| c.policy == p).expect("row");
    // Swarm starts Redis on an empty volume: every acknowledged write before the crash is gone.
    assert!(row(PolicyKind::SwarmDefault).lost_writes > 100_000);
    assert!(row(PolicyKind::SwarmDefault).empty_volume_starts >= 1);
    // Berth loses at most InfluxDB's replication lag (500 ms × 200 writes/s).
    assert!(row(PolicyKind::Berth).lost_writes <= 100);
    assert_eq!(row(PolicyKind::Berth).empty_volume_starts, 0);
    // The human is slower than Berth on the promotable dataset.
    let influx = |p: PolicyKind| {
        r.runs
            .iter()
            .find(|x| x.policy == p)
            .expect("run")
            .services
            .iter()
            .find(|s| s.name == "influxdb")
            .expect("svc")
            .unavailable_ms
    };
    assert!(
        influx(PolicyKind::Berth) < 15_000,
        "{}",
        influx(PolicyKind::Berth)
    );
    assert!(influx(PolicyKind::Manual) > 15 * 60_000);
}

#[test]
fn same_seed_gives_byte_identical_json_and_svg() {
    let scn = load("partition");
    let a = report(&scn, 3, &PolicyKind::ALL);
    let b = report(&scn, 3, &PolicyKind::ALL);
    assert_eq!(a.to_json(), b.to_json());
    assert_eq!(plot::svg(&scn, &a), plot::svg(&scn, &b));
    let mut chaos = load("chaos");
    chaos.duration = 30 * 60_000;
    let a = report(&chaos, 9, &[PolicyKind::Berth, PolicyKind::SwarmDefault]);
    let b = report(&chaos, 9, &[PolicyKind::Berth, PolicyKind::SwarmDefault]);
    assert_eq!(a.to_json(), b.to_json());
    assert_eq!(plot::svg(&chaos, &a), plot::svg(&chaos, &b));
    assert!(plot::svg(&chaos, &a).starts_with("<svg"));
}

#[test]
fn another_seed_changes_the_random_faults() {
    let scn = load("chaos");
    let a = scn.schedule(1);
    let b = scn.schedule(2);
    assert!(!a.is_empty() && !b.is_empty());
    assert_ne!(a, b);
    assert_eq!(a, scn.schedule(1));
    // Scheduled-only scenarios do not depend on the seed for their faults.
    let seed = load("seed-cluster");
    assert_eq!(seed.schedule(1), seed.schedule(2));
}

#[test]
fn bad_scenario_names_file_line_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(scenario_path("seed-cluster"))
        .expect("read")
        .replace("node = \"worker2\"", "node = \"worker9\"");
    std::fs::write(&path, &text).expect("write");
    let err = scenario::load(&path).expect_err("must fail").to_string();
    let line = text
        .lines()
        .position(|l| l.contains("worker9"))
        .expect("line")
        + 1;
    assert_eq!(
        err,
        format!(
            "{}:{line}:8: field `node`: unknown node `worker9`",
            path.display()
        )
    );
}

#[test]
fn small_sweep_aggregates_in_seed_order() {
    let mut chaos = load("chaos");
    chaos.duration = 20 * 60_000;
    let scns = vec![chaos];
    let a = sweep::sweep(&scns, 20, 100, &[PolicyKind::Berth], false);
    assert_eq!(a.policies[0].runs, 20);
    assert_eq!(a.policies[0].violations, 0, "{:?}", a.failures);
    assert_eq!(a.policies[0].double_writer_windows, 0);
    assert!(a.first_failure.is_none());
    // Parallel, yet the same numbers every time.
    assert_eq!(a, sweep::sweep(&scns, 20, 100, &[PolicyKind::Berth], false));
}

#[test]
fn shrinking_cuts_a_failing_schedule_down() {
    let mut chaos = load("chaos");
    chaos.duration = 40 * 60_000;
    if let Some(r) = &mut chaos.random {
        r.every = 4 * 60_000;
    }
    // An impossible bound: any unavailability at all fails.
    chaos.bounds.berth_max_unavailable_p99 = Some(0);
    let seed = (1..50)
        .find(|&s| {
            let sch = chaos.schedule(s);
            sch.len() >= 5
                && run_one(&chaos, PolicyKind::Berth, s, &sch)
                    .expect("run")
                    .failed()
        })
        .expect("some seed fails the impossible bound");
    let schedule = chaos.schedule(seed);
    let out = shrink::shrink(&chaos, PolicyKind::Berth, seed, &schedule);
    assert!(out.failed);
    assert!(
        out.faults.len() < schedule.len(),
        "{} of {}",
        out.faults.len(),
        schedule.len()
    );
    assert!(out.faults.len() <= 2, "{:?}", out.faults);
    // The shrunk schedule still fails on its own, and survives a round trip through TOML.
    let text = shrink::to_toml(&chaos, &out);
    let back = scenario::parse_faults(&chaos, "shrunk.toml", &text).expect("parses");
    assert_eq!(back, out.faults);
    assert!(
        run_one(&chaos, PolicyKind::Berth, seed, &back)
            .expect("run")
            .failed()
    );
}

#[test]
fn cli_exit_codes() {
    let bin = env!("CARGO_BIN_EXE_berth-sim");
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("r.json");
    let svg = dir.path().join("p.svg");
    let ok = Command::new(bin)
        .args([
            "run",
            scenario_path("partition").to_str().expect("utf-8"),
            "--report",
        ])
        .arg(&json)
        .arg("--plot")
        .arg(&svg)
        .output()
        .expect("runs");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(
        out.contains("swarm-default") && out.contains("berth"),
        "{out}"
    );
    assert!(
        std::fs::read_to_string(&json)
            .expect("json")
            .contains("\"comparison\"")
    );
    assert!(
        std::fs::read_to_string(&svg)
            .expect("svg")
            .starts_with("<svg")
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "name = \"x\"\nduration = \"soon\"\nservices = []\n").expect("write");
    let err = Command::new(bin)
        .arg("run")
        .arg(&bad)
        .output()
        .expect("runs");
    assert_eq!(err.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&err.stderr);
    assert!(msg.contains("bad.toml:2:12: field `duration`:"), "{msg}");

    // A bound nobody can meet: exit 2, with the reproduce line.
    let tight = dir.path().join("tight.toml");
    let text = std::fs::read_to_string(scenario_path("partition"))
        .expect("read")
        .replace(
            "berth_max_unavailable_p99 = \"30s\"",
            "berth_max_unavailable_p99 = \"1ms\"",
        );
    std::fs::write(&tight, text).expect("write");
    let fail = Command::new(bin)
        .args(["run", "--policy", "berth"])
        .arg(&tight)
        .output()
        .expect("runs");
    assert_eq!(fail.status.code(), Some(2));
    let out = String::from_utf8_lossy(&fail.stdout);
    assert!(
        out.contains("BOUND BROKEN") && out.contains("reproduce: berth-sim run"),
        "{out}"
    );
}

#[test]
fn a_lease_longer_than_detection_is_caught_as_a_double_writer() {
    // Misconfigured: the cut-off holder still writes when Berth promotes the standby. Only
    // without the data path does `berth.lease` decide when a cut-off holder stops (the agent's
    // watchdog); through it, the agent's own gate does.
    let mut scn = load("partition");
    scn.berth.data_path = berth_sim::scenario::DataPath::Direct;
    scn.berth.lease = 10_000;
    let r = report(&scn, scn.seed, &[PolicyKind::Berth]);
    let v = r.runs[0]
        .violation
        .as_ref()
        .expect("single-writer violation");
    assert_eq!(v.invariant, "single-writer");
    // Either cut-off holder: `shared` refuses no old epoch either.
    assert!(
        v.message.contains("pg-1") || v.message.contains("uploads-1"),
        "{}",
        v.message
    );
    assert!(r.failed());
    // The same double writer is only counted under Swarm's behaviour.
    let swarm = report(&scn, scn.seed, &[PolicyKind::SwarmDefault]);
    assert!(swarm.runs[0].violation.is_none());
    assert!(swarm.runs[0].metrics.double_writer_windows >= 1);
}

#[test]
fn berth_replans_after_a_scheduler_restart_and_a_quorum_loss() {
    let scn = load("seed-cluster");
    let faults = scenario::parse_faults(
        &scn,
        "restart.toml",
        r#"
[[faults]]
at = "10m"
kind = "crash"
node = "worker1"
recover_after = "30m"
[[faults]]
at = "10m04s"
kind = "scheduler-restart"
duration = "10s"
[[faults]]
at = "50m"
kind = "quorum-loss"
duration = "1m"
[[faults]]
at = "50m10s"
kind = "crash"
node = "worker3"
recover_after = "5m"
"#,
    )
    .expect("faults parse");
    let run = run_one(&scn, PolicyKind::Berth, scn.seed, &faults).expect("run");
    assert!(run.violation.is_none(), "{:?}", run.violation);
    let trace = run.trace.join("\n");
    assert!(trace.contains("plans in flight are dropped"), "{trace}");
    assert!(trace.contains("re-planning"), "{trace}");
    // The promotion cut short by the restart is finished by the re-plan: InfluxDB is back
    // within seconds of the scheduler, and again after the quorum returns.
    let influx = run
        .services
        .iter()
        .find(|s| s.name == "influxdb")
        .expect("svc");
    assert!(influx.unavailable_ms < 120_000, "{}", influx.unavailable_ms);
    assert!(influx.lost_writes <= 200);
}

#[test]
fn a_scenario_from_real_docker_inspect_output() {
    let scn = load("docker-inspect");
    // Swarm node IDs for the engine, hostnames for people; logspout (global) is skipped.
    assert_eq!(scn.nodes.len(), 4);
    assert!(
        scn.nodes
            .iter()
            .any(|n| n.name == "worker1" && n.id != n.name)
    );
    assert_eq!(
        scn.services
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["api", "mongo"]
    );
    assert_eq!(scn.notes, ["global service `logspout` is not simulated"]);
    // The run starts from the placement Swarm really had (tasks.json).
    assert!(!scn.cluster.tasks.is_empty());
    // What Swarm really did (examples/docker-inspect/worker1-down): mongo.1 restarted on
    // worker2, next to mongo.2. The engine without berth.* labels decides the same.
    let r = report(
        &scn,
        scn.seed,
        &[PolicyKind::SwarmDefault, PolicyKind::Berth],
    );
    let swarm = r.runs[0].trace.join("\n");
    assert!(swarm.contains("swarm: mongo slot 1 → worker2"), "{swarm}");
    let berth = r.runs[1].trace.join("\n");
    assert!(
        berth.contains("already runs a replica (anti-affinity)"),
        "{berth}"
    );
}

#[test]
fn a_target_lost_before_its_own_detection_is_replanned_at_once() {
    // Found by sweeping the partition scenario's seeds: with this seed's heartbeat phases
    // worker2 is detected first and uploads is sent to worker1 — cut off too, but not yet
    // detected. The start is dropped, and Berth must ask the engine again right away rather
    // than at the next detection (which here was 20 minutes later).
    let scn = load("partition");
    let r = report(&scn, 1000, &[PolicyKind::Berth]);
    let run = &r.runs[0];
    assert!(
        run.trace
            .iter()
            .any(|l| l.contains("start on worker1 dropped")),
        "{:#?}",
        run.trace
    );
    assert!(run.bound_failures.is_empty(), "{:?}", run.bound_failures);
    let uploads = run
        .services
        .iter()
        .find(|s| s.name == "uploads")
        .expect("svc");
    assert!(
        uploads.unavailable_ms < 15_000,
        "{}",
        uploads.unavailable_ms
    );
}

/// Every mount a plan's start makes is one the control service grants: a node-back plan
/// assigns a volume that a node-down plan fenced and never assigned (a `recreate` member kept
/// through its grace, a slot with no target) before starting its slot, under Berth and under
/// the operator following its plans. These runs had 1 (docker-inspect), 2 + 1 (seed-cluster)
/// and 8 (chaos, seed 1) refused before.
#[test]
fn no_start_mounts_a_volume_the_control_service_refuses() {
    for (name, seed) in [
        ("docker-inspect", None),
        ("seed-cluster", None),
        ("chaos", Some(1)),
        ("chaos", Some(58)),
    ] {
        let scn = load(name);
        let seed = seed.unwrap_or(scn.seed);
        let r = report(&scn, seed, &[PolicyKind::Berth, PolicyKind::Manual]);
        for run in &r.runs {
            assert_eq!(
                run.metrics.claims_refused,
                0,
                "{name} seed {seed} {:?}:\n{}",
                run.policy,
                run.trace_tail.join("\n")
            );
        }
    }
}
