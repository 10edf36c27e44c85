//! `berth-sim`: parses the command line and hands over to the library.
//!
//! Exit codes, as for `berth`: 0 all good; 1 a bad scenario file or command line; 2 a result
//! that needs attention (an invariant violated, a scenario bound broken).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use berth_sim::policy::PolicyKind;
use berth_sim::scenario::{self, DataPath, Scenario};
use berth_sim::{plot, report, runner, shrink, sweep};
use clap::{Parser, Subcommand};
use rayon::prelude::*;

#[derive(Parser)]
#[command(
    name = "berth-sim",
    version,
    about = "Deterministic fault simulator for Berth's placement engine"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one scenario with one seed under one or all policies, side by side.
    Run {
        scenario: PathBuf,
        /// Defaults to the scenario's `seed`.
        #[arg(long)]
        seed: Option<u64>,
        /// swarm-default, manual, berth or all.
        #[arg(long, default_value = "all")]
        policy: String,
        /// Write the JSON report here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Write the SVG timeline here.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// Replace the scenario's faults (scheduled and random) with the `[[faults]]` of this
        /// file, e.g. a schedule written by `shrink`.
        #[arg(long)]
        faults: Option<PathBuf>,
        /// Print the last lines of each policy's event trace.
        #[arg(long)]
        trace: bool,
        /// How Berth's containers reach their volumes, instead of the scenario's
        /// `[berth] data_path`: fuse (through the agent) or direct.
        #[arg(long)]
        data_path: Option<String>,
    },
    /// Run many seeds of one or more scenarios in parallel and aggregate; shrink a failure.
    Sweep {
        #[arg(required = true)]
        scenarios: Vec<PathBuf>,
        #[arg(long, default_value_t = 200)]
        runs: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value = "all")]
        policy: String,
        /// Write the aggregate as JSON here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Where to write the shrunk schedule of a failure.
        #[arg(long, default_value = "berth-sim-shrunk.toml")]
        shrunk: PathBuf,
        /// How Berth's containers reach their volumes, instead of the scenario's
        /// `[berth] data_path`: fuse (through the agent) or direct.
        #[arg(long)]
        data_path: Option<String>,
    },
    /// Shrink the fault schedule of a failing seed to a minimal one that still fails.
    Shrink {
        scenario: PathBuf,
        #[arg(long)]
        seed: Option<u64>,
        #[arg(long, default_value = "berth")]
        policy: String,
        #[arg(long)]
        faults: Option<PathBuf>,
        #[arg(long, default_value = "berth-sim-shrunk.toml")]
        out: PathBuf,
        /// How Berth's containers reach their volumes, instead of the scenario's
        /// `[berth] data_path`: fuse (through the agent) or direct.
        #[arg(long)]
        data_path: Option<String>,
    },
}

/// `all`: the failover comparison, or for a scenario with `[rebalance]` the rescheduling one.
fn policies(s: &str, rescheduling: bool) -> Result<Vec<PolicyKind>, String> {
    if s == "all" {
        return Ok(if rescheduling {
            PolicyKind::RESCHEDULING.to_vec()
        } else {
            PolicyKind::ALL.to_vec()
        });
    }
    PolicyKind::parse(s).map(|p| vec![p]).ok_or_else(|| {
        format!(
            "--policy `{s}`: expected swarm-default, manual, berth, swarm-force, \
             berth-move-all or all"
        )
    })
}

enum Failure {
    Usage(String),
    Failed,
}

/// A bad command line or scenario file.
const USAGE: u8 = 1;
/// The run itself says something is wrong: the code every `berth` tool gives a result that
/// needs attention.
const FAILED: u8 = 2;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // clap's own exit code for a usage error is 2, which here means a failed run.
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match dispatch(cli) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(Failure::Failed)) => ExitCode::from(FAILED),
        Ok(Err(Failure::Usage(msg))) => {
            eprintln!("error: {msg}");
            ExitCode::from(USAGE)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(USAGE)
        }
    }
}

fn load(path: &Path, data_path: &Option<String>) -> Result<Scenario, Failure> {
    let mut scn = scenario::load(path).map_err(|e| Failure::Usage(e.to_string()))?;
    if let Some(d) = data_path {
        scn.berth.data_path = DataPath::parse(d)
            .ok_or_else(|| Failure::Usage(format!("--data-path `{d}`: expected fuse or direct")))?;
    }
    Ok(scn)
}

fn dispatch(cli: Cli) -> Result<Result<(), Failure>> {
    Ok(match cli.cmd {
        Cmd::Run {
            scenario,
            seed,
            policy,
            report,
            plot,
            faults,
            trace,
            data_path,
        } => (|| {
            let scn = load(&scenario, &data_path)?;
            let ps = policies(&policy, scn.rebalance.is_some()).map_err(Failure::Usage)?;
            let seed = seed.unwrap_or(scn.seed);
            let schedule = match &faults {
                Some(f) => {
                    scenario::load_faults(&scn, f).map_err(|e| Failure::Usage(e.to_string()))?
                }
                None => scn.schedule(seed),
            };
            // The policies are independent simulations: one core each, collected in order.
            let runs = ps
                .par_iter()
                .map(|&p| runner::run_one(&scn, p, seed, &schedule))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Failure::Usage(format!("{}: {e}", scn.path)))?;
            let rep = report::Report::new(&scn, seed, &schedule, runs);
            let mut repro = format!("berth-sim run {} --seed {seed}", scenario.display());
            if let Some(f) = &faults {
                repro.push_str(&format!(" --faults {}", f.display()));
            }
            if let Some(d) = &data_path {
                repro.push_str(&format!(" --data-path {d}"));
            }
            if trace {
                for run in &rep.runs {
                    println!("--- trace: {} ---", run.policy.as_str());
                    for l in &run.trace {
                        println!("{l}");
                    }
                }
            }
            print!("{}", report::summary(&rep, &repro));
            if let Some(path) = &report {
                std::fs::write(path, rep.to_json())
                    .with_context(|| format!("writing {}", path.display()))
                    .map_err(|e| Failure::Usage(format!("{e:#}")))?;
            }
            if let Some(path) = &plot {
                std::fs::write(path, plot::svg(&scn, &rep))
                    .with_context(|| format!("writing {}", path.display()))
                    .map_err(|e| Failure::Usage(format!("{e:#}")))?;
            }
            if rep.failed() {
                Err(Failure::Failed)
            } else {
                Ok(())
            }
        })(),
        Cmd::Sweep {
            scenarios,
            runs,
            seed,
            policy,
            report,
            shrunk,
            data_path,
        } => (|| {
            if runs == 0 {
                // An aggregate of nothing prints zeros that read like a clean bill of health.
                return Err(Failure::Usage(
                    "--runs 0: a sweep needs at least one run".into(),
                ));
            }
            let ps = policies(&policy, false).map_err(Failure::Usage)?;
            let mut scns = Vec::new();
            for s in &scenarios {
                scns.push(load(s, &data_path)?);
            }
            let agg = sweep::sweep(&scns, runs, seed, &ps, true);
            print!("{}", sweep::summary(&agg));
            if let Some(path) = &report {
                let json = serde_json::to_string_pretty(&agg).unwrap_or_default() + "\n";
                std::fs::write(path, json)
                    .map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?;
            }
            if let Some(f) = &agg.first_failure {
                let scn = &scns[f.scenario];
                let out = shrink::shrink(scn, f.policy, f.seed, &scn.schedule(f.seed));
                shrink::write(scn, &out, &shrunk).map_err(|e| Failure::Usage(e.to_string()))?;
                print!("{}", shrink::summary(scn, &out, &shrunk));
                return Err(Failure::Failed);
            }
            Ok(())
        })(),
        Cmd::Shrink {
            scenario,
            seed,
            policy,
            faults,
            out,
            data_path,
        } => (|| {
            let scn = load(&scenario, &data_path)?;
            let p = PolicyKind::parse(&policy).ok_or_else(|| {
                Failure::Usage(format!("--policy `{policy}`: expected one policy"))
            })?;
            let seed = seed.unwrap_or(scn.seed);
            let schedule = match &faults {
                Some(f) => {
                    scenario::load_faults(&scn, f).map_err(|e| Failure::Usage(e.to_string()))?
                }
                None => scn.schedule(seed),
            };
            let result = shrink::shrink(&scn, p, seed, &schedule);
            if !result.failed {
                println!("seed {seed} does not fail under {policy}: nothing to shrink");
                return Ok(());
            }
            shrink::write(&scn, &result, &out).map_err(|e| Failure::Usage(e.to_string()))?;
            print!("{}", shrink::summary(&scn, &result, &out));
            Err(Failure::Failed)
        })(),
    })
}
