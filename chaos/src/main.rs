//! `berth-chaos`: faults injected into a real multi-node Swarm running a stateful workload,
//! under Berth and under plain Swarm, with every acknowledged write counted.
//!
//! ```text
//! berth-chaos --runs N --faults kill-worker,partition,… --report FILE.json
//!             [--systems berth,swarm] [--workload writer,postgres,redis,etcd]
//!             [--backend shared,replicated] [--swarm-storage local,shared]
//!             [--seed S] [--managers 3 --workers 3] [--timing default|fast]
//!             [--slots N]
//! ```
//! Shared storage is a GlusterFS volume replicated across the workers (a brick in each, a
//! client in every node), so a worker killed or cut off takes its brick with it. Berth runs
//! each workload on every `--backend` (a `recreate` database on its members' own `local`
//! disks), plain Swarm on every `--swarm-storage` (a `local` volume; `shared`: a bind mount of
//! the GlusterFS volume).
//! Berth runs as an operator runs it: a volume agent in every node, the control service
//! replicated on every manager, `berth run --elect` on every manager (one leads). Each run
//! deploys a fresh workload (one slot; the `writer`: `berth-testapp writer` appends a numbered
//! record, fsyncs, then acknowledges it to the checker outside the cluster, every task under
//! its own name), waits until it writes, injects one fault on the node it runs on, and waits
//! until the slot serves again. Then it restores the cluster, reads the copy the slot now
//! runs on and every other copy on disk, and counts:
//! - `seconds_to_serve`: fault → first acknowledgement from a new task; when no task took
//!   over (a fault the old task may outlive: a flap, a thaw), fault → the old task's first
//!   acknowledgement after its first outage; `null` if nothing served at the end;
//! - `lost_acked`: acknowledged writes missing from the copy the slot continues from;
//! - `double_writers`: pairs of tasks that wrote during overlapping intervals (on any copy);
//! - `fences` (Berth): the slot volume's epoch rise; `tasks`: every task that wrote, with its
//!   first and last write relative to the fault; `max_gap_seconds` and `down_seconds`: the
//!   longest and the total time without acknowledgements; `run_seconds`: the run's wall time;
//! - node-back (the node brought back, then `berth rebalance --live` asked to move the slot
//!   back): `moves` (each as `berth run` reported it, with its own `berth_downtime_ms`),
//!   `move_downtime_seconds` (per move, the writer's outage: last acknowledgement before, first
//!   after), `seconds_to_move_back`; a Berth run fails unless the slot moved back within 60 s,
//!   and may fence once more per move that landed;
//! - `containers_stopped` (control-outage): Swarm task containers that died on any node from
//!   the fault until the cluster was restored, read from the engines' events.
//!
//! An acknowledgement that cannot be read or a copy that cannot be read is listed under the
//! run's `problems` and fails it (a Berth run): a verdict on evidence the harness could not
//! read proves nothing.
//!
//! Exit status: 0 when every Berth run served again with nothing lost, one writer at a time,
//! at most one fence and no problem; 1 otherwise (the report still lists every run); 2 a
//! usage error or a lab that could not be built. Needs root and a Docker Engine (dockerds in
//! network namespaces).

mod checker;
mod cluster;
mod fault;
mod http;
mod mass;
mod nodeback;
mod proc;
mod report;
mod run;
mod verdict;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;

use berth_control_model::profile::Profile;
use fault::{Fault, Timing};
use workload::{Backend, Kind, System, Workload};

#[derive(Parser, Debug)]
#[command(
    name = "berth-chaos",
    version,
    about = "Chaos runs on a real Swarm: Berth vs plain Swarm, acknowledged writes counted"
)]
struct Args {
    /// Runs per fault and system.
    #[arg(long, default_value_t = 1)]
    runs: u32,
    /// Faults, comma-separated (see --help for each): kill-worker, partition, kill-daemon,
    /// drain, kill-control, kill-agent, pause-agent, freeze-node, flap, restart-dockerd,
    /// kill-manager, kill-manager-control, node-back, control-outage. Those on Berth's own
    /// processes, node-back (a rebalance) and control-outage run under Berth only.
    /// control-outage is asked by name only (it lasts over a minute), with --failsafe to test
    /// the agents' failsafe mode.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "kill-worker,partition,kill-daemon,drain,kill-control,kill-agent,pause-agent,freeze-node,flap,restart-dockerd,kill-manager,kill-manager-control,node-back"
    )]
    faults: Vec<Fault>,
    /// Systems, comma-separated: berth, swarm.
    #[arg(long, value_delimiter = ',', default_value = "berth,swarm")]
    systems: Vec<System>,
    /// Workloads, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "writer")]
    workload: Vec<Kind>,
    /// Where a Berth slot's data lives, comma-separated: shared, replicated, local. A
    /// workload that replicates itself (etcd) keeps its members on `local` whatever this says.
    #[arg(long, value_delimiter = ',', default_value = "shared")]
    backend: Vec<Backend>,
    /// Where a plain Swarm service's data lives, comma-separated: local (a `local` volume),
    /// shared (a bind mount of the GlusterFS volume).
    #[arg(long, value_delimiter = ',', default_value = "local")]
    swarm_storage: Vec<Backend>,
    /// What the lab's shared storage is: gluster (a GlusterFS volume replicated across the
    /// workers, which can fail), host (one directory of the host, which cannot).
    #[arg(long, default_value = "gluster")]
    shared_storage: SharedStorage,
    /// Where the JSON report goes.
    #[arg(long)]
    report: Option<PathBuf>,
    /// First seed; run k uses seed + k (it picks the delay before the fault).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value_t = 3)]
    managers: usize,
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// Copy the lab's logs (volume control, agents, berth run, every node's dockerd) here
    /// before the lab is torn down; by default they are copied only after a failed run, to
    /// /tmp/berth-chaos-logs.
    #[arg(long)]
    logs: Option<PathBuf>,
    /// partition: how long the link is down, seconds.
    #[arg(long, default_value_t = 25)]
    partition_secs: u64,
    /// kill-agent: the agent is started again this long after it was killed (systemd's
    /// RestartSec), seconds; longer than the lease, so a failover can happen meanwhile.
    #[arg(long, default_value_t = 12)]
    agent_restart_secs: u64,
    /// pause-agent: how long the agent stays stopped, seconds.
    #[arg(long, default_value_t = 15)]
    pause_secs: u64,
    /// freeze-node: how long every process of the node stays stopped, seconds.
    #[arg(long, default_value_t = 15)]
    freeze_secs: u64,
    /// flap: seconds the link is down each time.
    #[arg(long, default_value_t = 3)]
    flap_down_secs: u64,
    /// flap: seconds the link is up between cuts.
    #[arg(long, default_value_t = 3)]
    flap_up_secs: u64,
    /// flap: how many cuts.
    #[arg(long, default_value_t = 4)]
    flaps: u32,
    /// How long a run waits for the slot to serve again, seconds; then the fault is ended, the
    /// cluster restored and the run judged (a run that did not serve by then fails).
    #[arg(long, default_value_t = 150)]
    serve_limit_secs: u64,
    /// `berth run --elect-ttl` of the daemons, seconds: a standby takes over this long after
    /// a leader dies.
    #[arg(long, default_value_t = 3)]
    elect_ttl_secs: u64,
    /// The timing profile the control service, the agents and `berth run` start with
    /// (`--timing` of each): default (1s heartbeats, 5s lease) or fast (250ms, 1.5s).
    #[arg(long, default_value = "default")]
    timing: Profile,
    /// A mass failover: this many `writer` slots, in services of ten taking `--backend`'s
    /// backends in turn, all on the faulted node, each slot's writes checked on their own; a
    /// run's `seconds_to_serve` is its last slot's. 0: the one-slot workloads of `--workload`.
    #[arg(long, default_value_t = 0)]
    slots: u32,
    /// How long control-outage keeps every control member down, seconds.
    #[arg(long, default_value_t = 60)]
    outage_secs: u64,
    /// Start the agents with `--failsafe` (ARCHITECTURE.md, "Fencing", rule 9).
    #[arg(long)]
    failsafe: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum SharedStorage {
    Gluster,
    Host,
}

/// The (system, backend) pairs one workload runs a fault under, in order.
fn combos(a: &Args, own: Option<Backend>, fault: Fault) -> Vec<(System, Backend)> {
    let mut out = Vec::new();
    for &system in a.systems.iter().filter(|s| fault.applies_to(**s)) {
        let backends: Vec<Backend> = match (system, own) {
            (System::Berth, Some(b)) => vec![b],
            (System::Berth, None) => a.backend.clone(),
            (System::Swarm, _) => a.swarm_storage.clone(),
        };
        for b in backends {
            if !out.contains(&(system, b)) {
                out.push((system, b));
            }
        }
    }
    out
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match run_all(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("berth-chaos: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run_all(a: &Args) -> Result<bool> {
    anyhow::ensure!(a.runs > 0, "--runs must be at least 1");
    anyhow::ensure!(a.flaps > 0, "--flaps must be at least 1");
    anyhow::ensure!(
        a.workers >= 2,
        "--workers must be at least 2 (a slot needs somewhere to go)"
    );
    let kills_a_manager = a
        .faults
        .iter()
        .any(|f| matches!(f, Fault::KillManager | Fault::KillManagerControl));
    anyhow::ensure!(
        !kills_a_manager || a.managers >= 3,
        "kill-manager and kill-manager-control need --managers 3 or more (Swarm and the control service keep a quorum)"
    );
    anyhow::ensure!(
        !a.swarm_storage.contains(&Backend::Replicated),
        "--swarm-storage takes local and shared: plain Swarm has no replicated storage"
    );
    let mut needs = vec![
        berth_lab::Need::Docker,
        berth_lab::Need::Root,
        berth_lab::Need::LabTools,
    ];
    let gluster = a.shared_storage == SharedStorage::Gluster;
    if gluster {
        needs.push(berth_lab::Need::Program("glusterd", "glusterfs-server"));
        needs.push(berth_lab::Need::Program(
            "mount.glusterfs",
            "glusterfs-client",
        ));
    }
    if let Some(why) = berth_lab::gate::missing(&needs) {
        anyhow::bail!("berth-chaos needs {why}");
    }
    let timing = Timing {
        partition: Duration::from_secs(a.partition_secs),
        agent_restart: Duration::from_secs(a.agent_restart_secs),
        pause: Duration::from_secs(a.pause_secs),
        freeze: Duration::from_secs(a.freeze_secs),
        flap_down: Duration::from_secs(a.flap_down_secs),
        flap_up: Duration::from_secs(a.flap_up_secs),
        flaps: a.flaps,
        outage: Duration::from_secs(a.outage_secs),
    };
    let bins = cluster::Bins::beside_me()?;
    eprintln!(
        "berth-chaos: building a swarm of {} managers and {} workers",
        a.managers, a.workers
    );
    let mut c = cluster::Cluster::start(
        a.managers,
        a.workers,
        bins,
        Duration::from_secs(a.elect_ttl_secs),
        a.timing,
        gluster,
    )?;
    // Interrupted (Ctrl-C, CI's timeout), the lab is torn down all the same: nothing of it may
    // stay on the host.
    let id = c.lab.id;
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .context("signal handlers")?;
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            eprintln!("berth-chaos: signal {sig}: tearing the lab down");
            berth_lab::swarm::teardown(id);
            std::process::exit(130);
        }
    });
    if a.backend.contains(&Backend::Replicated) {
        // See `agents_on_workers_only`: otherwise a standby may be a manager, never promoted.
        eprintln!("berth-chaos: replicated: volume agents on the workers only");
        c.agents_on_workers_only();
    }
    if a.failsafe {
        c.agents_in_failsafe_mode();
    }
    if a.systems.contains(&System::Berth) {
        c.start_berth()?;
    }
    let checker = checker::Checker::start(&c.lab.gateway).context("starting the checker")?;
    let workloads: Vec<Box<dyn Workload>> = a
        .workload
        .iter()
        .map(|k| -> Box<dyn Workload> {
            match k {
                Kind::Writer => Box::new(workload::writer::Writer::new(checker.clone())),
                Kind::Postgres => Box::new(workload::postgres::workload()),
                Kind::Redis => Box::new(workload::redis::workload()),
                Kind::Etcd => Box::new(workload::etcd::workload()),
            }
        })
        .collect();
    let mut results: Vec<run::RunResult> = Vec::new();
    let mut n = 0u64;
    if a.slots > 0 {
        anyhow::ensure!(
            !a.backend.contains(&Backend::Local),
            "--slots: a `move` slot on `local` waits for its node; take shared or replicated"
        );
        // node-back judges one writer's move back (chaos/src/nodeback.rs); a mass run has
        // thirty and no move-back check of its own.
        anyhow::ensure!(
            !a.faults.contains(&Fault::NodeBack),
            "--slots: node-back moves one slot back; run it without --slots"
        );
        for k in 0..a.runs {
            for &fault in &a.faults {
                for (system, _) in combos(a, None, fault) {
                    let seed = a.seed + n;
                    n += 1;
                    eprintln!(
                        "berth-chaos: run {k}: {} slots / {system} / {fault} (seed {seed})",
                        a.slots
                    );
                    let backends = match system {
                        System::Berth => &a.backend,
                        System::Swarm => &a.swarm_storage,
                    };
                    let setup = mass::MassSetup {
                        checker: &checker,
                        system,
                        backends,
                        slots: a.slots,
                        fault,
                        seed,
                        timing,
                        serve_limit: Duration::from_secs(a.serve_limit_secs),
                    };
                    let r = mass::one(&mut c, &setup).or_else(|e| {
                        failed_run(
                            &c,
                            a,
                            e,
                            format!("{} slots {system} / {fault} (seed {seed})", a.slots),
                        )
                    })?;
                    eprintln!("berth-chaos:   {}", r.summary());
                    results.push(r);
                }
            }
        }
    }
    for k in 0..if a.slots > 0 { 0 } else { a.runs } {
        for w in &workloads {
            for &fault in &a.faults {
                for (system, backend) in combos(a, w.own_backend(), fault) {
                    let seed = a.seed + n;
                    n += 1;
                    eprintln!(
                        "berth-chaos: run {k}: {} / {system} {backend} / {fault} (seed {seed})",
                        w.name()
                    );
                    let setup = run::Setup {
                        workload: w.as_ref(),
                        system,
                        backend,
                        fault,
                        seed,
                        timing,
                        serve_limit: Duration::from_secs(a.serve_limit_secs),
                    };
                    let r = run::one(&mut c, &setup).or_else(|e| {
                        failed_run(
                            &c,
                            a,
                            e,
                            format!("{system} {backend} / {fault} (seed {seed})"),
                        )
                    })?;
                    eprintln!("berth-chaos:   {}", r.summary());
                    results.push(r);
                }
            }
        }
    }
    let mut report = report::Report::new(results);
    report.timing = a.timing.to_string();
    report.failsafe = a.failsafe;
    eprintln!("{}", report.table());
    let json = serde_json::to_string_pretty(&report)?;
    match &a.report {
        Some(p) => std::fs::write(p, json + "\n").with_context(|| format!("{}", p.display()))?,
        None => println!("{json}"),
    }
    let ok = report.berth_ok();
    let keep = a
        .logs
        .clone()
        .or_else(|| (!ok).then(|| PathBuf::from("/tmp/berth-chaos-logs")));
    if let Some(dir) = &keep {
        c.copy_logs(dir)?;
    }
    if !ok {
        eprintln!(
            "berth-chaos: a Berth run lost an acknowledged write, had two writers, fenced a volume once too often, never served again, did not move a slot back (node-back) or could not read its evidence; logs in {}",
            keep.as_deref().unwrap_or(c.logs()).display()
        );
    }
    Ok(ok)
}

/// A run that could not finish: the lab's logs are kept (`--logs`, or /tmp/berth-chaos-logs)
/// and the error names the run and where they are.
fn failed_run(
    c: &cluster::Cluster,
    a: &Args,
    e: anyhow::Error,
    what: String,
) -> Result<run::RunResult> {
    let dir = a
        .logs
        .clone()
        .unwrap_or_else(|| PathBuf::from("/tmp/berth-chaos-logs"));
    let _ = c.copy_logs(&dir);
    Err(e.context(format!("{what}; logs in {}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// control-outage lasts over a minute: CI's sweep, which takes the default set, must not
    /// pay for it; it is asked by name.
    #[test]
    fn control_outage_is_asked_by_name_only() {
        let a = Args::try_parse_from(["berth-chaos"]).expect("defaults parse");
        assert!(!a.faults.contains(&Fault::ControlOutage), "{:?}", a.faults);
        assert!(a.faults.contains(&Fault::KillControl));
        assert!(!a.failsafe);
        assert_eq!(a.outage_secs, 60);
        let a = Args::try_parse_from(["berth-chaos", "--faults", "control-outage", "--failsafe"])
            .expect("by name");
        assert_eq!(a.faults, [Fault::ControlOutage]);
        assert!(a.failsafe);
    }
}
