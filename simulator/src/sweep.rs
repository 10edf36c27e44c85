//! A sweep: N seeds of each scenario (each seed draws its own random fault schedule and
//! heartbeat jitter), run in parallel across cores, aggregated in seed order so the result
//! does not depend on which core finished first. The first failure (lowest scenario, then
//! seed) is what gets shrunk.

use std::fmt::Write as _;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;
use serde::Serialize;

use crate::clock::Ms;
use crate::metrics::percentile;
use crate::policy::PolicyKind;
use crate::report::{align, bytes_column, secs};
use crate::runner::run_one;
use crate::scenario::Scenario;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PolicyAgg {
    pub policy: PolicyKind,
    pub runs: u64,
    /// Over every service of every run.
    pub unavailable_p50_ms: Ms,
    pub unavailable_p99_ms: Ms,
    pub lost_writes: u64,
    pub runs_losing_writes: u64,
    pub double_writer_windows: u64,
    pub moves: u64,
    pub bytes_moved: u64,
    pub violations: u64,
    pub bound_failures: u64,
    pub events: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FailureRef {
    pub scenario: usize,
    pub scenario_name: String,
    pub seed: u64,
    pub policy: PolicyKind,
    pub what: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Aggregate {
    pub scenarios: Vec<String>,
    pub runs: u64,
    pub first_seed: u64,
    pub policies: Vec<PolicyAgg>,
    pub failures: Vec<FailureRef>,
    pub first_failure: Option<FailureRef>,
}

/// One (scenario, seed) job's numbers per policy: (policy, service unavailability, lost,
/// double windows, moves, bytes, events, failure).
type JobOut = Vec<(
    PolicyKind,
    Vec<Ms>,
    u64,
    u64,
    u64,
    u64,
    u64,
    Option<(bool, String)>,
)>;

pub fn sweep(
    scns: &[Scenario],
    runs: u64,
    first_seed: u64,
    policies: &[PolicyKind],
    progress: bool,
) -> Aggregate {
    let jobs: Vec<(usize, u64)> = (0..scns.len())
        .flat_map(|s| (0..runs).map(move |i| (s, first_seed + i)))
        .collect();
    let pb = if progress {
        ProgressBar::with_draw_target(Some(jobs.len() as u64), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} runs  {elapsed} eta {eta}")
    {
        pb.set_style(style);
    }
    let outs: Vec<JobOut> = jobs
        .par_iter()
        .map(|&(s, seed)| {
            let scn = &scns[s];
            let schedule = scn.schedule(seed);
            let out = policies
                .iter()
                .map(|&p| match run_one(scn, p, seed, &schedule) {
                    Ok(o) => {
                        let fail = if let Some(v) = &o.violation {
                            Some((true, format!("{}: {}", v.invariant, v.message)))
                        } else {
                            o.bound_failures.first().map(|b| (false, b.clone()))
                        };
                        (
                            p,
                            o.services.iter().map(|s| s.unavailable_ms).collect(),
                            o.lost_writes,
                            o.metrics.double_writer_windows,
                            o.metrics.moves,
                            o.metrics.bytes_moved,
                            o.metrics.events,
                            fail,
                        )
                    }
                    Err(e) => (p, Vec::new(), 0, 0, 0, 0, 0, Some((true, e.to_string()))),
                })
                .collect();
            pb.inc(1);
            out
        })
        .collect();
    pb.finish_and_clear();

    let mut aggs = Vec::new();
    let mut failures = Vec::new();
    for &p in policies {
        let mut unavail = Vec::new();
        let mut a = PolicyAgg {
            policy: p,
            runs: 0,
            unavailable_p50_ms: 0,
            unavailable_p99_ms: 0,
            lost_writes: 0,
            runs_losing_writes: 0,
            double_writer_windows: 0,
            moves: 0,
            bytes_moved: 0,
            violations: 0,
            bound_failures: 0,
            events: 0,
        };
        for (j, out) in outs.iter().enumerate() {
            for (q, u, lost, dw, moves, by, ev, fail) in out {
                if *q != p {
                    continue;
                }
                a.runs += 1;
                unavail.extend_from_slice(u);
                a.lost_writes += lost;
                a.runs_losing_writes += u64::from(*lost > 0);
                a.double_writer_windows += dw;
                a.moves += moves;
                a.bytes_moved += by;
                a.events += ev;
                if let Some((fatal, what)) = fail {
                    if *fatal {
                        a.violations += 1;
                    } else {
                        a.bound_failures += 1;
                    }
                    let (s, seed) = jobs[j];
                    failures.push(FailureRef {
                        scenario: s,
                        scenario_name: scns[s].name.clone(),
                        seed,
                        policy: p,
                        what: what.clone(),
                    });
                }
            }
        }
        a.unavailable_p50_ms = percentile(&unavail, 50);
        a.unavailable_p99_ms = percentile(&unavail, 99);
        aggs.push(a);
    }
    failures.sort_by_key(|f| (f.scenario, f.seed, f.policy));
    let first_failure = failures.first().cloned();
    failures.truncate(20);
    Aggregate {
        scenarios: scns.iter().map(|s| s.name.clone()).collect(),
        runs,
        first_seed,
        policies: aggs,
        failures,
        first_failure,
    }
}

pub fn summary(a: &Aggregate) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "sweep (berth-sim commit {}): {} × {} seeds from {} ({} runs per policy)",
        env!("BERTH_SIM_COMMIT"),
        a.scenarios.join(", "),
        a.runs,
        a.first_seed,
        a.runs * a.scenarios.len() as u64
    );
    let mut rows = vec![
        [
            "policy",
            "unavail p50",
            "unavail p99",
            "lost writes",
            "runs w/ loss",
            "double writers",
            "moves",
            "bytes moved",
            "violations",
            "bounds",
        ]
        .map(String::from)
        .to_vec(),
    ];
    let moved = bytes_column(a.policies.iter().map(|p| p.bytes_moved));
    for (p, moved) in a.policies.iter().zip(moved) {
        rows.push(vec![
            p.policy.as_str().to_string(),
            secs(p.unavailable_p50_ms),
            secs(p.unavailable_p99_ms),
            p.lost_writes.to_string(),
            p.runs_losing_writes.to_string(),
            p.double_writer_windows.to_string(),
            p.moves.to_string(),
            moved,
            p.violations.to_string(),
            p.bound_failures.to_string(),
        ]);
    }
    for l in align(&rows) {
        let _ = writeln!(o, "{l}");
    }
    for f in &a.failures {
        let _ = writeln!(
            o,
            "FAILED {} seed {} under {}: {}",
            f.scenario_name,
            f.seed,
            f.policy.as_str(),
            f.what
        );
    }
    o
}
