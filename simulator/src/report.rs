//! The report: the side-by-side comparison table first (what an operator reads), then each
//! policy's per-service numbers, violations and bound failures — as text for people and as
//! JSON for CI. The JSON holds no path, clock or host fact, so the same scenario and seed give
//! the same bytes anywhere.

use std::fmt::Write as _;

use serde::Serialize;

use crate::clock::{Ms, fmt_ms};
use crate::faults::Fault;
use crate::policy::PolicyKind;
use crate::runner::RunOutcome;
use crate::scenario::Scenario;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Row {
    pub policy: PolicyKind,
    pub unavailable_p50_ms: Ms,
    pub unavailable_p99_ms: Ms,
    pub lost_writes: u64,
    pub double_writer_windows: u64,
    pub double_writer_ms: Ms,
    pub moves: u64,
    pub bytes_moved: u64,
    pub empty_volume_starts: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    pub tool: String,
    pub scenario: String,
    pub seed: u64,
    pub duration_ms: Ms,
    pub nodes: usize,
    pub services: usize,
    /// Every timing the policies react with, one line.
    pub parameters: String,
    /// What the scenario loaded but does not simulate.
    pub notes: Vec<String>,
    /// The fault schedule of this seed, one line per fault.
    pub faults: Vec<String>,
    pub comparison: Vec<Row>,
    pub runs: Vec<RunOutcome>,
}

impl Report {
    pub fn new(scn: &Scenario, seed: u64, faults: &[Fault], runs: Vec<RunOutcome>) -> Report {
        let names = scn.node_names();
        Report {
            tool: format!("berth-sim {}", env!("CARGO_PKG_VERSION")),
            scenario: scn.name.clone(),
            seed,
            duration_ms: scn.duration,
            nodes: scn.nodes.len(),
            services: scn.services.len(),
            parameters: parameters(scn),
            notes: scn.notes.clone(),
            faults: faults.iter().map(|f| f.describe(&names)).collect(),
            comparison: runs
                .iter()
                .map(|r| Row {
                    policy: r.policy,
                    unavailable_p50_ms: r.unavailable_p50_ms,
                    unavailable_p99_ms: r.unavailable_p99_ms,
                    lost_writes: r.lost_writes,
                    double_writer_windows: r.metrics.double_writer_windows,
                    double_writer_ms: r.metrics.double_writer_ms,
                    moves: r.metrics.moves,
                    bytes_moved: r.metrics.bytes_moved,
                    empty_volume_starts: r.metrics.empty_volume_starts,
                })
                .collect(),
            runs,
        }
    }

    pub fn failed(&self) -> bool {
        self.runs.iter().any(RunOutcome::failed)
    }

    pub fn to_json(&self) -> String {
        let mut s =
            serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
        s.push('\n');
        s
    }
}

fn parameters(scn: &Scenario) -> String {
    let (sw, bt) = (&scn.swarm, &scn.berth);
    format!(
        "swarm: heartbeat {} ±{} × {}, restart delay {}, start {} | berth: detect {} × {}, \
         lease {}, fence {}, attach {}, promote {}, {}/s{}, start {} | manual: operator {}",
        fmt_ms(sw.heartbeat),
        fmt_ms(sw.heartbeat_jitter),
        sw.grace_multiplier,
        fmt_ms(sw.restart_delay),
        fmt_ms(sw.start_latency),
        fmt_ms(bt.heartbeat),
        bt.misses,
        fmt_ms(bt.lease),
        fmt_ms(bt.fence),
        fmt_ms(bt.attach),
        fmt_ms(bt.promote),
        bytes(bt.move_bandwidth),
        if bt.incremental { " incremental" } else { "" },
        fmt_ms(bt.start_latency),
        fmt_ms(scn.manual.operator_response)
    )
}

pub fn secs(ms: Ms) -> String {
    format!("{}.{}s", ms / 1000, (ms % 1000) / 100)
}

pub fn bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut u = 0;
    while v >= 10 * 1024 && u < UNITS.len() - 1 {
        v /= 1024;
        u += 1;
    }
    format!("{v} {}", UNITS[u])
}

/// The human summary: header, comparison table, per-service table, then failures.
pub fn summary(r: &Report, reproduce: &str) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{} (commit {}) — scenario `{}`, seed {}, {} simulated, {} nodes, {} services",
        r.tool,
        env!("BERTH_SIM_COMMIT"),
        r.scenario,
        r.seed,
        fmt_ms(r.duration_ms),
        r.nodes,
        r.services
    );
    let _ = writeln!(o, "{}", r.parameters);
    for n in &r.notes {
        let _ = writeln!(o, "note: {n}");
    }
    let _ = writeln!(o, "faults ({}):", r.faults.len());
    for f in r.faults.iter().take(12) {
        let _ = writeln!(o, "  {f}");
    }
    if r.faults.len() > 12 {
        let _ = writeln!(o, "  … {} more", r.faults.len() - 12);
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{:<14} {:>12} {:>12} {:>12} {:>15} {:>7} {:>12} {:>13}",
        "policy",
        "unavail p50",
        "unavail p99",
        "lost writes",
        "double writers",
        "moves",
        "bytes moved",
        "empty volumes"
    );
    for row in &r.comparison {
        let _ = writeln!(
            o,
            "{:<14} {:>12} {:>12} {:>12} {:>15} {:>7} {:>12} {:>13}",
            row.policy.as_str(),
            secs(row.unavailable_p50_ms),
            secs(row.unavailable_p99_ms),
            row.lost_writes,
            format!(
                "{} ({})",
                row.double_writer_windows,
                secs(row.double_writer_ms)
            ),
            row.moves,
            bytes(row.bytes_moved),
            row.empty_volume_starts
        );
    }
    let _ = writeln!(o);
    let _ = write!(o, "{:<14}", "unavailable");
    for run in &r.runs {
        let _ = write!(o, " {:>22}", run.policy.as_str());
    }
    let _ = writeln!(o);
    if let Some(first) = r.runs.first() {
        for (i, s) in first.services.iter().enumerate() {
            let _ = write!(o, "{:<14}", s.name);
            for run in &r.runs {
                let svc = &run.services[i];
                let cell = if svc.acked_writes > 0 || svc.lost_writes > 0 {
                    format!("{} lost {}", secs(svc.unavailable_ms), svc.lost_writes)
                } else {
                    secs(svc.unavailable_ms)
                };
                let _ = write!(o, " {cell:>22}");
            }
            let _ = writeln!(o);
        }
    }
    for run in &r.runs {
        if !run.unavailable_at_end.is_empty() && run.violation.is_none() {
            let _ = writeln!(
                o,
                "\n{}: still unavailable at the end: {}",
                run.policy.as_str(),
                run.unavailable_at_end.join(", ")
            );
        }
    }
    for run in &r.runs {
        if let Some(v) = &run.violation {
            let _ = writeln!(
                o,
                "\nINVARIANT VIOLATED under {} at {}: {} — {}",
                run.policy.as_str(),
                fmt_ms(v.at),
                v.invariant,
                v.message
            );
            let _ = writeln!(o, "seed {}; event trace tail:", run.seed);
            for l in &run.trace_tail {
                let _ = writeln!(o, "  {l}");
            }
            let _ = writeln!(o, "reproduce: {reproduce} --policy {}", run.policy.as_str());
        }
        for b in &run.bound_failures {
            let _ = writeln!(o, "\nBOUND BROKEN under {}: {b}", run.policy.as_str());
            let _ = writeln!(o, "reproduce: {reproduce} --policy {}", run.policy.as_str());
        }
    }
    o
}
