//! The report of many runs: every run, and a summary per workload, backend, system and fault.
//!
//! Every run carries `workload`, `backend`, `fault`, `system`, `seconds_to_serve`, `acked`,
//! `lost_acked`, `double_writers` and `lag_ms` (`null` unless a `replicated` volume was
//! promoted), whatever its workload.

use std::collections::BTreeMap;

use serde::Serialize;

use berth_control_model::profile::Profile;

use crate::fault::Fault;
use crate::run::RunResult;
use crate::workload::{Backend, System};

#[derive(Debug, Serialize)]
pub struct Summary {
    pub workload: &'static str,
    pub backend: Backend,
    pub system: System,
    pub fault: Fault,
    pub runs: usize,
    pub never_served: usize,
    pub p50_seconds_to_serve: Option<f64>,
    pub p99_seconds_to_serve: Option<f64>,
    pub max_seconds_to_serve: Option<f64>,
    pub lost_acked: usize,
    /// Runs that lost acknowledged writes beyond what their backend allows (`replicated`:
    /// the promoted standby's lag; otherwise any).
    pub runs_losing_beyond_promise: usize,
    /// The largest lag a `replicated` promotion reported, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_lag_ms: Option<u64>,
    /// Runs with two writers at once.
    pub runs_with_two_writers: usize,
    pub double_writers: usize,
    /// Runs that failed on evidence the harness could not read.
    pub runs_with_problems: usize,
    /// Mean wall time of one run, seconds.
    pub mean_run_seconds: f64,
    /// node-back: runs whose slot did not move back within the limit, and the writer's
    /// outage per move (nearest-rank median and largest), seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runs_not_moved_back: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_move_downtime_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_move_downtime_seconds: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    /// The timing profile the lab's control service, agents and `berth run` ran with.
    pub timing: String,
    /// Whether the agents ran with `--failsafe`.
    pub failsafe: bool,
    pub runs: Vec<RunResult>,
    pub summary: Vec<Summary>,
}

/// Nearest-rank percentile.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

impl Report {
    pub fn new(runs: Vec<RunResult>) -> Report {
        let mut groups: BTreeMap<(&'static str, Backend, System, Fault), Vec<&RunResult>> =
            BTreeMap::new();
        for r in &runs {
            groups
                .entry((r.workload, r.backend, r.system, r.fault))
                .or_default()
                .push(r);
        }
        let summary = groups
            .into_iter()
            .map(|((workload, backend, system, fault), rs)| {
                let mut t: Vec<f64> = rs
                    .iter()
                    .filter_map(|r| r.verdict.seconds_to_serve)
                    .collect();
                t.sort_by(f64::total_cmp);
                let mut down: Vec<f64> = rs
                    .iter()
                    .filter_map(|r| r.node_back.as_ref())
                    .flat_map(|m| m.move_downtime_seconds.iter().copied())
                    .collect();
                down.sort_by(f64::total_cmp);
                Summary {
                    workload,
                    backend,
                    system,
                    fault,
                    runs: rs.len(),
                    never_served: rs
                        .iter()
                        .filter(|r| r.verdict.seconds_to_serve.is_none())
                        .count(),
                    p50_seconds_to_serve: percentile(&t, 50.0),
                    p99_seconds_to_serve: percentile(&t, 99.0),
                    max_seconds_to_serve: t.last().copied(),
                    lost_acked: rs.iter().map(|r| r.verdict.lost_acked).sum(),
                    runs_losing_beyond_promise: rs.iter().filter(|r| !r.loss_allowed()).count(),
                    max_lag_ms: rs.iter().filter_map(|r| r.lag_ms).max(),
                    runs_with_two_writers: rs
                        .iter()
                        .filter(|r| r.verdict.double_writers > 0)
                        .count(),
                    double_writers: rs.iter().map(|r| r.verdict.double_writers).sum(),
                    runs_with_problems: rs
                        .iter()
                        .filter(|r| !r.verdict.problems.is_empty())
                        .count(),
                    mean_run_seconds: rs.iter().map(|r| r.run_seconds).sum::<f64>()
                        / rs.len() as f64,
                    runs_not_moved_back: (fault == Fault::NodeBack).then(|| {
                        rs.iter()
                            .filter(|r| !r.node_back.as_ref().is_some_and(|m| m.moved_back))
                            .count()
                    }),
                    p50_move_downtime_seconds: percentile(&down, 50.0),
                    max_move_downtime_seconds: down.last().copied(),
                }
            })
            .collect();
        Report {
            timing: Profile::default().to_string(),
            failsafe: false,
            runs,
            summary,
        }
    }

    /// Every Berth run served again, lost nothing, had one writer at a time, fenced at most
    /// once and was judged on evidence the harness could read.
    pub fn berth_ok(&self) -> bool {
        self.runs
            .iter()
            .filter(|r| r.system == System::Berth)
            .all(RunResult::berth_ok)
    }

    pub fn table(&self) -> String {
        let f = |v: Option<f64>| v.map(|s| format!("{s:.1}")).unwrap_or_else(|| "-".into());
        let mut out = String::from(
            "workload backend    system fault                 runs never  p50 s  p99 s  max s  lost acked  2-writer runs  run s\n",
        );
        for s in &self.summary {
            out.push_str(&format!(
                "{:<8} {:<10} {:<6} {:<20} {:>5} {:>5}  {:>5}  {:>5}  {:>5}  {:>10}  {:>13}  {:>5.0}{}{}{}\n",
                s.workload,
                s.backend.to_string(),
                s.system.to_string(),
                s.fault.to_string(),
                s.runs,
                s.never_served,
                f(s.p50_seconds_to_serve),
                f(s.p99_seconds_to_serve),
                f(s.max_seconds_to_serve),
                s.lost_acked,
                s.runs_with_two_writers,
                s.mean_run_seconds,
                s.max_lag_ms
                    .map(|l| format!("  max lag {l} ms"))
                    .unwrap_or_default(),
                match (s.runs_not_moved_back, s.p50_move_downtime_seconds) {
                    (Some(n), p50) => format!(
                        "  not moved back {n}; move down p50 {} max {} s",
                        f(p50),
                        f(s.max_move_downtime_seconds)
                    ),
                    (None, _) => String::new(),
                },
                if s.runs_with_problems > 0 {
                    format!("  {} run(s) with unreadable evidence", s.runs_with_problems)
                } else {
                    String::new()
                }
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodeback::{MoveBack, MoveSeen};
    use crate::verdict::{ServedBy, Verdict};

    /// The fields every run in the report has.
    const RUN_FIELDS: [&str; 9] = [
        "workload",
        "backend",
        "fault",
        "system",
        "seconds_to_serve",
        "acked",
        "lost_acked",
        "double_writers",
        "lag_ms",
    ];

    fn run(system: System, fault: Fault) -> RunResult {
        RunResult {
            workload: "writer",
            backend: Backend::Shared,
            fault,
            system,
            seed: 1,
            verdict: Verdict {
                seconds_to_serve: Some(8.0),
                served_by: Some(ServedBy::NewTask),
                acked: 500,
                lost_acked: 0,
                lost_examples: Vec::new(),
                double_writers: 0,
                overlap_seconds: 0.0,
                writers: 2,
                tasks: Vec::new(),
                max_gap_seconds: 8.0,
                down_seconds: 8.0,
                problems: Vec::new(),
            },
            fences: Some(1),
            lag_ms: None,
            lost_window_ms: None,
            torn: 0,
            containers_stopped: None,
            node: "w1".into(),
            manager: None,
            swarm_leader_killed: None,
            storage: "berth shared".into(),
            notes: Vec::new(),
            mass: None,
            run_seconds: 40.0,
            node_back: None,
        }
    }

    fn moved_back(downtime: f64) -> MoveBack {
        MoveBack {
            moves: vec![MoveSeen {
                slot: 1,
                from: "w2".into(),
                to: "w1".into(),
                mode: "re-point".into(),
                state: "moved".into(),
                berth_downtime_ms: Some(900),
            }],
            move_downtime_seconds: vec![downtime],
            seconds_to_move_back: Some(12.0),
            rebalance_requests: 2,
            moved_back: true,
        }
    }

    #[test]
    fn node_back_fails_without_the_move_back_and_allows_one_fence_per_landed_move() {
        let mut r = run(System::Berth, Fault::NodeBack);
        r.node_back = Some(moved_back(1.5));
        r.fences = Some(2);
        assert!(Report::new(vec![r.clone()]).berth_ok(), "{r:?}");
        let bad: [fn(&mut RunResult); 5] = [
            |r| r.node_back = None,
            |r| r.node_back.as_mut().unwrap().moved_back = false,
            // A move that did not land fenced nothing it may count.
            |r| r.node_back.as_mut().unwrap().moves[0].state = "rolled-back".into(),
            |r| r.fences = Some(3),
            |r| r.verdict.double_writers = 1,
        ];
        for make_bad in bad {
            let mut b = r.clone();
            make_bad(&mut b);
            assert!(!Report::new(vec![b.clone()]).berth_ok(), "{b:?}");
        }
        // Another fault with a second fence still fails.
        let mut k = run(System::Berth, Fault::KillWorker);
        k.fences = Some(2);
        assert!(!Report::new(vec![k]).berth_ok());
    }

    #[test]
    fn node_back_reports_moves_and_their_downtime() {
        let mut a = run(System::Berth, Fault::NodeBack);
        a.node_back = Some(moved_back(1.5));
        let mut b = a.clone();
        b.node_back = Some(moved_back(0.5));
        let mut c = a.clone();
        c.node_back = Some(MoveBack {
            moves: Vec::new(),
            move_downtime_seconds: Vec::new(),
            seconds_to_move_back: None,
            rebalance_requests: 30,
            moved_back: false,
        });
        let rep = Report::new(vec![a, b, c, run(System::Berth, Fault::KillWorker)]);
        let s = rep
            .summary
            .iter()
            .find(|s| s.fault == Fault::NodeBack)
            .unwrap();
        assert_eq!(s.runs_not_moved_back, Some(1));
        assert_eq!(s.p50_move_downtime_seconds, Some(0.5));
        assert_eq!(s.max_move_downtime_seconds, Some(1.5));
        let other = rep
            .summary
            .iter()
            .find(|s| s.fault == Fault::KillWorker)
            .unwrap();
        assert_eq!(other.runs_not_moved_back, None);
        let v = serde_json::to_value(&rep).unwrap();
        let run = &v["runs"][0];
        assert_eq!(run["moves"][0]["to"], "w1");
        assert_eq!(run["moves"][0]["berth_downtime_ms"], 900);
        assert_eq!(run["move_downtime_seconds"][0], 1.5);
        assert!(v["runs"][3].get("moves").is_none());
        // Other faults' summaries carry no move fields.
        assert_eq!(v["summary"][0]["fault"], "kill-worker");
        assert!(v["summary"][0].get("p50_move_downtime_seconds").is_none());
    }

    #[test]
    fn a_berth_run_fails_on_two_writers_a_lost_ack_two_fences_never_serving_or_a_problem() {
        let ok = run(System::Berth, Fault::KillAgent);
        assert!(Report::new(vec![ok.clone()]).berth_ok());
        let bad: [fn(&mut RunResult); 6] = [
            |r| r.verdict.double_writers = 1,
            |r| r.verdict.lost_acked = 1,
            |r| r.fences = Some(2),
            |r| r.verdict.seconds_to_serve = None,
            |r| r.verdict.problems.push("malformed acknowledgement".into()),
            // control-outage: a container stopped.
            |r| r.containers_stopped = Some(1),
        ];
        for make_bad in bad {
            let mut r = ok.clone();
            make_bad(&mut r);
            assert!(
                !Report::new(vec![ok.clone(), r.clone()]).berth_ok(),
                "{r:?}"
            );
            // The same outcome under plain Swarm is reported, not a failure of Berth.
            r.system = System::Swarm;
            assert!(Report::new(vec![ok.clone(), r]).berth_ok());
        }
    }

    #[test]
    fn a_control_outage_run_with_no_container_stopped_passes() {
        let mut r = run(System::Berth, Fault::ControlOutage);
        r.containers_stopped = Some(0);
        assert!(Report::new(vec![r.clone()]).berth_ok());
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["containers_stopped"], 0);
    }

    #[test]
    fn the_summary_counts_runs_with_two_writers_per_fault() {
        let mut a = run(System::Berth, Fault::FreezeNode);
        a.verdict.double_writers = 3;
        let b = run(System::Berth, Fault::FreezeNode);
        let s = Report::new(vec![a, b, run(System::Swarm, Fault::FreezeNode)]).summary;
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].system, s[0].runs), (System::Berth, 2));
        assert_eq!((s[0].runs_with_two_writers, s[0].double_writers), (1, 3));
        assert_eq!(s[1].runs_with_two_writers, 0);
    }

    #[test]
    fn every_run_carries_the_fields_the_report_promises() {
        for workload in ["writer", "postgres", "redis", "etcd"] {
            let mut r = run(System::Berth, Fault::KillWorker);
            r.workload = workload;
            let v = serde_json::to_value(Report::new(vec![r])).unwrap();
            let run = &v["runs"][0];
            for f in RUN_FIELDS {
                assert!(run.get(f).is_some(), "{workload}: no {f} in {run}");
            }
            assert_eq!(run["workload"], workload);
            assert_eq!(run["backend"], "shared");
            assert_eq!(run["fault"], "kill-worker");
            assert_eq!(run["system"], "berth");
            assert_eq!(run["seconds_to_serve"], 8.0);
            assert_eq!(
                (run["acked"].as_u64(), run["lost_acked"].as_u64()),
                (Some(500), Some(0))
            );
            assert_eq!(run["double_writers"], 0);
            assert!(run["lag_ms"].is_null());
        }
        let mut r = run(System::Berth, Fault::KillWorker);
        r.backend = Backend::Replicated;
        r.lag_ms = Some(640);
        let v = serde_json::to_value(Report::new(vec![r])).unwrap();
        assert_eq!(v["runs"][0]["backend"], "replicated");
        assert_eq!(v["runs"][0]["lag_ms"], 640);
    }

    #[test]
    fn replicated_may_lose_what_its_lag_covers_and_nothing_older() {
        let mut r = run(System::Berth, Fault::KillWorker);
        r.backend = Backend::Replicated;
        r.verdict.lost_acked = 12;
        r.lag_ms = Some(900);
        r.lost_window_ms = Some(850);
        assert!(Report::new(vec![r.clone()]).berth_ok(), "{r:?}");
        // Older than the lag: lost beyond the promise.
        r.lost_window_ms = Some(950);
        let rep = Report::new(vec![r.clone()]);
        assert!(!rep.berth_ok());
        assert_eq!(rep.summary[0].runs_losing_beyond_promise, 1);
        // A loss with no reported lag (no promotion) is not covered by one.
        r.lag_ms = None;
        assert!(!Report::new(vec![r.clone()]).berth_ok());
        // `shared` may lose nothing, whatever lag there was.
        r.backend = Backend::Shared;
        r.lag_ms = Some(5000);
        r.lost_window_ms = Some(10);
        assert!(!Report::new(vec![r.clone()]).berth_ok());
        // Within the lag, still only with one writer and serving.
        r.backend = Backend::Replicated;
        r.verdict.double_writers = 1;
        assert!(!Report::new(vec![r]).berth_ok());
    }

    #[test]
    fn the_summary_keeps_backends_apart() {
        let a = run(System::Swarm, Fault::KillWorker);
        let mut b = run(System::Swarm, Fault::KillWorker);
        b.backend = Backend::Local;
        b.verdict.lost_acked = 40;
        let s = Report::new(vec![a, b]).summary;
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].backend, s[0].lost_acked), (Backend::Shared, 0));
        assert_eq!((s[1].backend, s[1].lost_acked), (Backend::Local, 40));
        assert_eq!(s[1].runs_losing_beyond_promise, 1);
    }
}
