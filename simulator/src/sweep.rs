//! A sweep: N seeds of each scenario (each seed draws its own random fault schedule and
//! heartbeat jitter), run in parallel across cores, aggregated in seed order so the result
//! does not depend on which core finished first. The first failure (lowest scenario, then
//! seed) is what gets shrunk.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;
use serde::Serialize;

use crate::clock::Ms;
use crate::metrics::{DataKind, percentile};
use crate::policy::PolicyKind;
use crate::report::{align, bytes_column, secs};
use crate::runner::{KindLost, run_one};
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
    /// Lost writes per kind of stateful data in the scenarios.
    pub by_kind: BTreeMap<DataKind, KindAgg>,
    pub violations: u64,
    pub bound_failures: u64,
    pub events: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KindAgg {
    pub lost_writes: u64,
    pub runs_losing_writes: u64,
    pub max_lost_in_a_run: u64,
    /// Lost by datasets that lost more disks than their kind tolerates, and in how many runs.
    pub beyond_guarantee: u64,
    pub runs_beyond_guarantee: u64,
    /// The most lost in one run by datasets within the guarantee's premise.
    pub max_within_guarantee_in_a_run: u64,
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

/// One policy's numbers from one (scenario, seed) job.
struct JobOut {
    policy: PolicyKind,
    /// Per service.
    unavailable: Vec<Ms>,
    lost: u64,
    lost_by_kind: BTreeMap<DataKind, KindLost>,
    double_windows: u64,
    moves: u64,
    bytes_moved: u64,
    events: u64,
    /// (fatal, what): a violation, or else the first broken bound.
    failure: Option<(bool, String)>,
}

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
    let outs: Vec<Vec<JobOut>> = jobs
        .par_iter()
        .map(|&(s, seed)| {
            let scn = &scns[s];
            let schedule = scn.schedule(seed);
            let out: Vec<JobOut> = policies
                .iter()
                .map(|&p| match run_one(scn, p, seed, &schedule) {
                    Ok(o) => JobOut {
                        policy: p,
                        unavailable: o.services.iter().map(|s| s.unavailable_ms).collect(),
                        lost: o.lost_writes,
                        lost_by_kind: o.lost_writes_by_kind.clone(),
                        double_windows: o.metrics.double_writer_windows,
                        moves: o.metrics.moves,
                        bytes_moved: o.metrics.bytes_moved,
                        events: o.metrics.events,
                        failure: match &o.violation {
                            Some(v) => Some((true, format!("{}: {}", v.invariant, v.message))),
                            None => o.bound_failures.first().map(|b| (false, b.clone())),
                        },
                    },
                    Err(e) => JobOut {
                        policy: p,
                        unavailable: Vec::new(),
                        lost: 0,
                        lost_by_kind: BTreeMap::new(),
                        double_windows: 0,
                        moves: 0,
                        bytes_moved: 0,
                        events: 0,
                        failure: Some((true, e.to_string())),
                    },
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
            by_kind: BTreeMap::new(),
            violations: 0,
            bound_failures: 0,
            events: 0,
        };
        for (j, out) in outs.iter().enumerate() {
            for o in out {
                if o.policy != p {
                    continue;
                }
                a.runs += 1;
                unavail.extend_from_slice(&o.unavailable);
                a.lost_writes += o.lost;
                a.runs_losing_writes += u64::from(o.lost > 0);
                for (&kind, l) in &o.lost_by_kind {
                    let k = a.by_kind.entry(kind).or_default();
                    let within = l.lost_writes - l.beyond_guarantee;
                    k.lost_writes += l.lost_writes;
                    k.runs_losing_writes += u64::from(l.lost_writes > 0);
                    k.max_lost_in_a_run = k.max_lost_in_a_run.max(l.lost_writes);
                    k.beyond_guarantee += l.beyond_guarantee;
                    k.runs_beyond_guarantee += u64::from(l.beyond_guarantee > 0);
                    k.max_within_guarantee_in_a_run = k.max_within_guarantee_in_a_run.max(within);
                }
                a.double_writer_windows += o.double_windows;
                a.moves += o.moves;
                a.bytes_moved += o.bytes_moved;
                a.events += o.events;
                if let Some((fatal, what)) = &o.failure {
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
    let kinds: Vec<DataKind> = DataKind::ALL
        .into_iter()
        .filter(|k| a.policies.iter().any(|p| p.by_kind.contains_key(k)))
        .collect();
    if !kinds.is_empty() {
        let _ = writeln!(
            o,
            "\nlost acknowledged writes by kind of data; \"beyond\": by datasets that lost \
             more disks than their kind survives (local 1, replicated 2, recreate a majority)"
        );
        let mut rows = vec![
            [
                "policy",
                "data",
                "lost writes",
                "runs w/ loss",
                "most in a run",
                "beyond",
                "runs beyond",
                "most in a run within",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for p in &a.policies {
            for k in &kinds {
                let g = p.by_kind.get(k).cloned().unwrap_or_default();
                rows.push(vec![
                    p.policy.as_str().to_string(),
                    k.as_str().to_string(),
                    g.lost_writes.to_string(),
                    g.runs_losing_writes.to_string(),
                    g.max_lost_in_a_run.to_string(),
                    g.beyond_guarantee.to_string(),
                    g.runs_beyond_guarantee.to_string(),
                    g.max_within_guarantee_in_a_run.to_string(),
                ]);
            }
        }
        for l in align(&rows) {
            let _ = writeln!(o, "{l}");
        }
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
