//! `berth-chaos`: faults injected into a real multi-node Swarm running a stateful writer, under
//! Berth and under plain Swarm, with every acknowledged write counted.
//!
//! ```text
//! berth-chaos --runs N --faults kill-worker,partition,kill-daemon,drain --report FILE.json
//!             [--systems berth,swarm] [--seed S] [--managers 3 --workers 3]
//! ```
//! Each run deploys a fresh writer (one slot; `berth-testapp writer`: append a numbered record,
//! fsync, then acknowledge it to the checker outside the cluster), waits until it writes,
//! injects one fault on the node it runs on, and waits until the slot serves again from a new
//! task. Then it reads the copy the slot now runs on, and every other copy on disk, and counts:
//! - `seconds_to_serve`: fault → first acknowledgement from the new task;
//! - `lost_acked`: acknowledged records missing from the copy the slot continues from;
//! - `double_writers`: pairs of tasks that wrote records of the slot during overlapping
//!   intervals (on any copy).
//!
//! Exit status: 0 when every Berth run served again with nothing lost and one writer at a
//! time; 1 otherwise (the report still lists every run); 2 a usage error or a lab that could
//! not be built. Needs root and a Docker Engine (dockerds in network namespaces).

mod checker;
mod cluster;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;

use run::{Fault, System};

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
    /// Faults, comma-separated: kill-worker, partition, kill-daemon, drain, kill-control
    /// (kill-worker, then the control service's Raft leader killed mid-failover).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "kill-worker,partition,kill-daemon,drain,kill-control"
    )]
    faults: Vec<Fault>,
    /// Systems, comma-separated: berth, swarm.
    #[arg(long, value_delimiter = ',', default_value = "berth,swarm")]
    systems: Vec<System>,
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
    /// How long a partition lasts, seconds.
    #[arg(long, default_value_t = 25)]
    partition_secs: u64,
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
    anyhow::ensure!(
        a.workers >= 2,
        "--workers must be at least 2 (a slot needs somewhere to go)"
    );
    if let Some(why) = berth_lab::gate::missing(&[
        berth_lab::Need::Docker,
        berth_lab::Need::Root,
        berth_lab::Need::LabTools,
    ]) {
        anyhow::bail!("berth-chaos needs {why}");
    }
    let bins = cluster::Bins::beside_me()?;
    eprintln!(
        "berth-chaos: building a swarm of {} managers and {} workers",
        a.managers, a.workers
    );
    let mut c = cluster::Cluster::start(a.managers, a.workers, bins)?;
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
    let with_berth = a.systems.contains(&System::Berth);
    if with_berth {
        c.start_berth_volumes()?;
        c.start_daemon()?;
    }
    let checker = checker::Checker::start(&c.lab.gateway).context("starting the checker")?;
    let mut results = Vec::new();
    let mut n = 0u64;
    for k in 0..a.runs {
        for &fault in &a.faults {
            for &system in &a.systems {
                if system == System::Swarm
                    && matches!(fault, Fault::KillDaemon | Fault::KillControl)
                {
                    continue; // no daemon or control service to kill without Berth
                }
                let seed = a.seed + n;
                n += 1;
                eprintln!("berth-chaos: run {k}: {system} / {fault} (seed {seed})");
                let r = match run::one(&mut c, &checker, system, fault, seed, a.partition_secs) {
                    Ok(r) => r,
                    Err(e) => {
                        let dir = a
                            .logs
                            .clone()
                            .unwrap_or_else(|| PathBuf::from("/tmp/berth-chaos-logs"));
                        let _ = c.copy_logs(&dir);
                        return Err(e.context(format!(
                            "{system} / {fault} (seed {seed}); logs in {}",
                            dir.display()
                        )));
                    }
                };
                eprintln!("berth-chaos:   {}", r.summary());
                results.push(r);
            }
        }
    }
    let report = run::Report::new(results);
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
            "berth-chaos: a Berth run lost an acknowledged write, had two writers, fenced a volume twice or never served again; logs in {}",
            keep.as_deref().unwrap_or(c.logs()).display()
        );
    }
    Ok(ok)
}
