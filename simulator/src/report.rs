//! The report: the side-by-side comparison table first (what an operator reads), then each
//! policy's per-service numbers, violations and bound failures — as text for people and as
//! JSON for CI. The JSON holds no path, clock or host fact, so the same scenario and seed give
//! the same bytes anywhere.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::clock::{Ms, fmt_ms};
use crate::faults::Fault;
use crate::metrics::{DataKind, SlotOutages};
use crate::policy::PolicyKind;
use crate::runner::{KindLost, PendingSlot, RunOutcome};
use crate::scenario::Scenario;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Row {
    pub policy: PolicyKind,
    pub unavailable_p50_ms: Ms,
    pub unavailable_p99_ms: Ms,
    pub slot_outages: SlotOutages,
    pub lost_writes: u64,
    pub lost_writes_by_kind: BTreeMap<DataKind, KindLost>,
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
                    slot_outages: r.slot_outages.clone(),
                    lost_writes: r.lost_writes,
                    lost_writes_by_kind: r.lost_writes_by_kind.clone(),
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
         lease {}, fence lease {}, data path {}, fence {}, attach {}, promote {}, {}/s{}, start {} \
         | manual: operator {}",
        fmt_ms(sw.heartbeat),
        fmt_ms(sw.heartbeat_jitter),
        sw.grace_multiplier,
        fmt_ms(sw.restart_delay),
        fmt_ms(sw.start_latency),
        fmt_ms(bt.heartbeat),
        bt.misses,
        fmt_ms(bt.lease),
        fmt_ms(bt.fence_lease),
        bt.data_path.as_str(),
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

/// One size on its own (a parameter), in the unit that suits it.
pub fn bytes(b: u64) -> String {
    berth_units::fmt_size(b)
}

/// A column of sizes, every cell in the unit of the largest: `10.0 GiB` above `8.0 GiB`, never
/// above `8192 MiB`, so the column compares at a glance.
pub fn bytes_column(values: impl IntoIterator<Item = u64> + Clone) -> Vec<String> {
    let shift = berth_units::unit_shift(values.clone().into_iter().max().unwrap_or(0));
    values
        .into_iter()
        .map(|b| berth_units::fmt_size_in(b, shift))
        .collect()
}

/// Rows of cells as aligned lines: the first column left-aligned, the others right-aligned,
/// each as wide as its widest cell (counted in characters: `…` is one).
pub fn align(rows: &[Vec<String>]) -> Vec<String> {
    let widths = widths(rows);
    rows.iter()
        .map(|row| {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                let pad = widths[i] - cell.chars().count();
                if i == 0 {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                } else {
                    line.extend(std::iter::repeat_n(' ', pad + 2));
                    line.push_str(cell);
                }
            }
            line.trim_end().to_string()
        })
        .collect()
}

fn widths(rows: &[Vec<String>]) -> Vec<usize> {
    let mut w: Vec<usize> = Vec::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            let n = cell.chars().count();
            match w.get_mut(i) {
                Some(x) => *x = (*x).max(n),
                None => w.push(n),
            }
        }
    }
    w
}

/// Per service, each policy's unavailable time and lost writes side by side, under one
/// heading per policy; `-` where a service takes no writes.
fn per_service(r: &Report) -> Vec<String> {
    let Some(first) = r.runs.first() else {
        return Vec::new();
    };
    let mut rows = vec![vec!["service".to_string()]];
    for _ in &r.runs {
        rows[0].push("unavailable".into());
        rows[0].push("lost writes".into());
    }
    for (i, s) in first.services.iter().enumerate() {
        let mut row = vec![s.name.clone()];
        for run in &r.runs {
            let svc = &run.services[i];
            row.push(secs(svc.unavailable_ms));
            row.push(if svc.acked_writes > 0 || svc.lost_writes > 0 {
                svc.lost_writes.to_string()
            } else {
                "-".into()
            });
        }
        rows.push(row);
    }
    let w = widths(&rows);
    let mut head = " ".repeat(w[0]);
    for (k, run) in r.runs.iter().enumerate() {
        // Each policy's name right-aligned over its two columns (2 spaces before each).
        let span = w[1 + 2 * k] + w[2 + 2 * k] + 4;
        let name = run.policy.as_str();
        head.push_str(&format!("{name:>span$}"));
    }
    let mut out = vec![head];
    out.extend(align(&rows));
    out
}

/// The rescheduling table of a scenario with `[rebalance]` (empty otherwise): per policy the
/// moves, the bytes they copied, each moved slot's downtime, the time to balanced and the
/// balance measures at the end.
fn rescheduling(r: &Report) -> Vec<String> {
    let runs: Vec<_> = r
        .runs
        .iter()
        .filter_map(|run| run.rescheduling.as_ref().map(|x| (run, x)))
        .collect();
    if runs.is_empty() {
        return Vec::new();
    }
    let mut rows = vec![
        [
            "rescheduling",
            "moves",
            "bytes moved",
            "downtime/slot p50",
            "max",
            "down at once (one service)",
            "balanced after",
            "spread end",
            "zone skew end",
            "double writers",
            "lost writes",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for (run, x) in runs {
        rows.push(vec![
            run.policy.as_str().to_string(),
            if x.rolled_back > 0 {
                format!("{} ({} rolled back)", x.moves, x.rolled_back)
            } else {
                x.moves.to_string()
            },
            bytes(x.bytes),
            if x.downtime_ms.is_empty() {
                "-".into()
            } else {
                secs(x.downtime_p50())
            },
            if x.downtime_ms.is_empty() {
                "-".into()
            } else {
                secs(x.downtime_max())
            },
            format!("{} ({})", x.peak_down, x.peak_down_service),
            x.time_to_balanced_ms.map_or("never".into(), secs),
            x.end.load_spread.to_string(),
            x.end.zone_skew.to_string(),
            run.metrics.double_writer_windows.to_string(),
            run.lost_writes.to_string(),
        ]);
    }
    align(&rows)
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
    let moved = bytes_column(r.comparison.iter().map(|row| row.bytes_moved));
    let mut rows = vec![
        [
            "policy",
            "unavail p50",
            "unavail p99",
            "lost writes",
            "double writers",
            "moves",
            "bytes moved",
            "empty volumes",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for (row, moved) in r.comparison.iter().zip(moved) {
        rows.push(vec![
            row.policy.as_str().to_string(),
            secs(row.unavailable_p50_ms),
            secs(row.unavailable_p99_ms),
            row.lost_writes.to_string(),
            format!(
                "{} ({})",
                row.double_writer_windows,
                secs(row.double_writer_ms)
            ),
            row.moves.to_string(),
            moved,
            row.empty_volume_starts.to_string(),
        ]);
    }
    for l in align(&rows) {
        let _ = writeln!(o, "{l}");
    }
    // Below the table, apart from it: the table's lines are all of the same width.
    if r.comparison.iter().any(|row| row.slot_outages.slots > 0) {
        let _ = writeln!(o);
    }
    for row in r.comparison.iter().filter(|row| row.slot_outages.slots > 0) {
        let s = &row.slot_outages;
        let _ = writeln!(
            o,
            "{}: {} stateful slots out ({} outages): p50 {}, p99 {}, last {}",
            row.policy.as_str(),
            s.slots,
            s.outages,
            secs(s.p50_ms),
            secs(s.p99_ms),
            secs(s.max_ms)
        );
    }
    let _ = writeln!(o);
    let resched = rescheduling(r);
    for l in &resched {
        let _ = writeln!(o, "{l}");
    }
    if !resched.is_empty() {
        let _ = writeln!(o);
    }
    for l in per_service(r) {
        let _ = writeln!(o, "{l}");
    }
    let kinds: Vec<DataKind> = DataKind::ALL
        .into_iter()
        .filter(|k| {
            r.comparison
                .iter()
                .any(|row| row.lost_writes_by_kind.contains_key(k))
        })
        .collect();
    if !kinds.is_empty() {
        // What README's guarantees are stated per: the kind of data, not the service.
        let mut rows = vec![vec!["lost writes by data".to_string()]];
        rows[0].extend(
            r.comparison
                .iter()
                .map(|row| row.policy.as_str().to_string()),
        );
        for k in &kinds {
            let mut line = vec![k.as_str().to_string()];
            for row in &r.comparison {
                let l = row.lost_writes_by_kind.get(k).copied().unwrap_or_default();
                line.push(if l.beyond_guarantee > 0 {
                    format!("{} ({} beyond)", l.lost_writes, l.beyond_guarantee)
                } else {
                    l.lost_writes.to_string()
                });
            }
            rows.push(line);
        }
        let _ = writeln!(o);
        for l in align(&rows) {
            let _ = writeln!(o, "{l}");
        }
        if rows.iter().flatten().any(|c| c.ends_with(" beyond)")) {
            let _ = writeln!(
                o,
                "beyond: lost by datasets that lost more disks than their kind survives \
                 (local 1, replicated 2, recreate a majority), outside the guarantees"
            );
        }
    }
    let mut pending: Vec<(&PendingSlot, Vec<&str>)> = Vec::new();
    for run in &r.runs {
        for p in &run.pending {
            match pending.iter_mut().find(|(q, _)| *q == p) {
                Some((_, policies)) => policies.push(run.policy.as_str()),
                None => pending.push((p, vec![run.policy.as_str()])),
            }
        }
    }
    if !pending.is_empty() {
        let _ = writeln!(o, "\npending for the whole run (the engine's reason):");
    }
    for (p, policies) in pending {
        let under = if policies.len() == r.runs.len() {
            String::new()
        } else {
            format!(" (under {})", policies.join(", "))
        };
        let _ = writeln!(
            o,
            "  {} slot {} pending{under}: {}",
            p.service, p.slot, p.reason
        );
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
