//! Human tables and the JSON shapes scripts rely on.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::rc::Rc;

use serde::Serialize;
use serde_json::json;

use berth_scheduler::explain::Explanation;
use berth_scheduler::failover::{Action, FailoverPlan};
use berth_scheduler::model::Cluster;
use berth_scheduler::schedule::{DatasetAction, Plan, ScoreCard};

/// A table cell, borrowed where the plan already holds the text.
enum Cell<'a> {
    Str(&'a str),
    Own(String),
    Shared(Rc<str>),
}

impl AsRef<str> for Cell<'_> {
    fn as_ref(&self) -> &str {
        match self {
            Cell::Str(s) => s,
            Cell::Own(s) => s,
            Cell::Shared(s) => s,
        }
    }
}

/// Left-aligned columns, two spaces apart.
fn table<S: AsRef<str>>(header: &[&str], rows: &[Vec<S>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.as_ref().chars().count());
        }
    }
    let mut out =
        String::with_capacity(rows.len() * (widths.iter().sum::<usize>() + 2 * widths.len()));
    let line = |cells: &mut dyn Iterator<Item = &str>, out: &mut String| {
        let start = out.len();
        let mut cells = cells.peekable();
        let mut i = 0;
        while let Some(c) = cells.next() {
            out.push_str(c);
            if cells.peek().is_some() {
                let pad = widths[i] - c.chars().count() + 2;
                out.extend(std::iter::repeat_n(' ', pad));
            }
            i += 1;
        }
        let trimmed = out[start..].trim_end().len();
        out.truncate(start + trimmed);
        out.push('\n');
    };
    line(&mut header.iter().copied(), &mut out);
    for r in rows {
        line(&mut r.iter().map(|c| c.as_ref()), &mut out);
    }
    out
}

fn slot(s: Option<u64>) -> String {
    s.map(|s| s.to_string()).unwrap_or_else(|| "-".into())
}

/// `{"placements":[{"service","slot","node"}], "pending":[{"service","slot","reasons"}]}`, in
/// that key order; a global service's entries carry `node` and no `slot`.
#[derive(Serialize)]
struct PlanJson<'a> {
    placements: Vec<PlacementJson<'a>>,
    pending: Vec<PendingJson<'a>>,
}

#[derive(Serialize)]
struct PlacementJson<'a> {
    service: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    slot: Option<u64>,
    node: &'a str,
}

#[derive(Serialize)]
struct PendingJson<'a> {
    service: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    slot: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<&'a str>,
    reasons: BTreeMap<&'a str, u32>,
}

/// Writes the plan's JSON straight to `out`: 100k placements are never one string in memory.
pub fn write_plan_json(plan: &Plan, out: &mut impl std::io::Write) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, &plan_json_value(plan))?;
    writeln!(out)
}

pub fn plan_json(plan: &Plan) -> String {
    serde_json::to_string_pretty(&plan_json_value(plan)).expect("plain structs always serialise")
}

fn plan_json_value(plan: &Plan) -> PlanJson<'_> {
    PlanJson {
        placements: plan
            .placements
            .iter()
            .map(|p| PlacementJson {
                service: &p.service,
                slot: p.slot,
                node: p.node.as_str(),
            })
            .collect(),
        pending: plan
            .pending
            .iter()
            .map(|p| PendingJson {
                service: &p.service,
                slot: p.slot,
                node: p.node.as_ref().map(|n| n.as_str()),
                reasons: p.reasons.iter().map(|(r, n)| (r.as_str(), *n)).collect(),
            })
            .collect(),
    }
}

pub fn plan_table(plan: &Plan, cluster: &Cluster) -> String {
    // One index, not a scan of the nodes per placement: 100k placements on 10k nodes.
    let hostnames: BTreeMap<&str, &str> = cluster
        .nodes
        .iter()
        .map(|n| (n.id.as_str(), n.hostname.as_str()))
        .collect();
    // A score card's text, once per distinct card: 100k placements share a few hundred.
    let mut scores: BTreeMap<ScoreCard, Rc<str>> = BTreeMap::new();
    let mut score_text = |c: ScoreCard| -> Rc<str> {
        scores
            .entry(c)
            .or_insert_with(|| {
                c.breakdown()
                    .iter()
                    .filter(|s| s.weight > 0)
                    .map(|s| format!("{} {}", s.plugin, s.normalized))
                    .collect::<Vec<_>>()
                    .join(", ")
                    .into()
            })
            .clone()
    };
    let rows: Vec<Vec<Cell>> = plan
        .placements
        .iter()
        .map(|p| {
            vec![
                Cell::Str(&p.service),
                Cell::Own(slot(p.slot)),
                Cell::Str(p.node.as_str()),
                Cell::Str(hostnames.get(p.node.as_str()).copied().unwrap_or_default()),
                Cell::Str(if p.new { "new" } else { "running" }),
                p.score
                    .map(&mut score_text)
                    .map(Cell::Shared)
                    .unwrap_or(Cell::Str("")),
            ]
        })
        .collect();
    let mut out = String::from("PLACEMENTS\n");
    out.push_str(&table(
        &["SERVICE", "SLOT", "NODE", "HOSTNAME", "STATUS", "SCORE"],
        &rows,
    ));
    if !plan.datasets.is_empty() {
        let rows: Vec<Vec<String>> = plan
            .datasets
            .iter()
            .map(|d| {
                let action = match &d.action {
                    DatasetAction::Create => "create".to_string(),
                    DatasetAction::Keep => "keep".to_string(),
                    DatasetAction::Move { from } => format!("move from {from}"),
                    DatasetAction::Promote { from } => {
                        format!("promote standby (primary {from} lost)")
                    }
                    DatasetAction::Recreate { lost } => format!("recreate (member on {lost} lost)"),
                };
                vec![
                    d.dataset.clone(),
                    d.service.clone(),
                    d.slot.to_string(),
                    d.node.to_string(),
                    d.epoch.to_string(),
                    action,
                ]
            })
            .collect();
        out.push_str("\nDATASETS\n");
        out.push_str(&table(
            &["DATASET", "SERVICE", "SLOT", "NODE", "EPOCH", "ACTION"],
            &rows,
        ));
    }
    if !plan.pending.is_empty() {
        let rows: Vec<Vec<String>> = plan
            .pending
            .iter()
            .map(|p| {
                let target = p
                    .node
                    .as_ref()
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| slot(p.slot));
                vec![p.service.clone(), target, p.message()]
            })
            .collect();
        out.push_str("\nPENDING\n");
        out.push_str(&table(&["SERVICE", "SLOT/NODE", "WHY"], &rows));
    }
    let new = plan.placements.iter().filter(|p| p.new).count();
    let _ = writeln!(
        out,
        "\n{} placed ({} new, {} running), {} pending",
        plan.placements.len(),
        new,
        plan.placements.len() - new,
        plan.pending.len()
    );
    out
}

pub fn explain_json(e: &Explanation) -> String {
    let v = json!({
        "service": e.service,
        "strategy": e.strategy.as_str(),
        "slot": e.slot,
        "running_on": e.running_on,
        "nodes": e.verdicts,
        "placements": e.placements.iter().map(|p| json!({"slot": p.slot, "node": p.node, "new": p.new})).collect::<Vec<_>>(),
        "pending": e.pending.iter().map(|p| json!({"slot": p.slot, "node": p.node, "message": p.message()})).collect::<Vec<_>>(),
    });
    serde_json::to_string_pretty(&v).expect("JSON values always serialise")
}

pub fn explain_table(e: &Explanation) -> String {
    let mut out = String::new();
    let task = match (e.slot, &e.running_on) {
        (Some(s), Some(n)) => format!("slot {s} (runs on {n}; judged as if placed again)"),
        (Some(s), None) => format!("next task slot {s}"),
        (None, _) => "next task".to_string(),
    };
    let _ = writeln!(
        out,
        "service {} (strategy {}), {task}: {} of {} nodes feasible",
        e.service,
        e.strategy.as_str(),
        e.verdicts.iter().filter(|v| v.feasible).count(),
        e.verdicts.len()
    );
    let rows: Vec<Vec<String>> = e
        .verdicts
        .iter()
        .map(|v| {
            let mut verdict = if v.feasible {
                let scores: Vec<String> = v
                    .scores
                    .iter()
                    .map(|s| {
                        format!(
                            "{} {}/100 ({})",
                            e.strategy.as_str(),
                            s.normalized,
                            s.detail
                        )
                    })
                    .collect();
                format!("feasible: {}", scores.join(", "))
            } else {
                format!(
                    "{}: {}",
                    v.plugin.unwrap_or("?"),
                    v.reason.as_deref().unwrap_or("")
                )
            };
            // A rejected node's reason says it all (the skew it would break included).
            for s in v.spread.iter().filter(|_| v.feasible) {
                let _ = write!(verdict, "; {}", s.describe());
            }
            if v.runs_slot {
                verdict.push_str("; runs this slot now");
            }
            vec![
                v.node.to_string(),
                v.hostname.clone(),
                v.domains.join(" "),
                verdict,
            ]
        })
        .collect();
    out.push_str(&table(&["NODE", "HOSTNAME", "DOMAIN", "VERDICT"], &rows));
    for p in &e.placements {
        let _ = writeln!(
            out,
            "slot {} on {} ({})",
            slot(p.slot),
            p.node,
            if p.new { "new" } else { "running" }
        );
    }
    for p in &e.pending {
        let _ = writeln!(out, "pending slot {}: {}", slot(p.slot), p.message());
    }
    out
}

pub fn failover_table(plan: &FailoverPlan) -> String {
    let describe = |a: &Action| -> String {
        match a {
            Action::Fence {
                dataset,
                node,
                epoch,
            } => format!("fence {dataset} on {node} (epoch -> {epoch})"),
            Action::StopTask { node } => format!("stop the task on {node}"),
            Action::WaitGrace { seconds } => format!("wait {seconds}s for the node to return"),
            Action::ChooseTarget { node, why } => format!("target {node} ({why})"),
            Action::MoveDataset {
                dataset,
                from,
                to,
                epoch,
                backend,
                copy,
            } => format!(
                "{} {dataset} {from} -> {to} ({} backend, epoch {epoch})",
                if *copy { "copy" } else { "re-point" },
                backend.as_str()
            ),
            Action::PromoteStandby {
                dataset,
                from,
                to,
                epoch,
            } => {
                format!("promote {dataset}'s standby on {to} (primary {from} lost, epoch {epoch})")
            }
            Action::RecreateDataset {
                dataset,
                node,
                epoch,
            } => format!("recreate {dataset} empty on {node} (epoch {epoch}); the member resyncs"),
            Action::StartTask { node } => format!("start the task on {node}"),
            Action::WaitForOperator { reason } => format!("wait for an operator: {reason}"),
            Action::WaitForNode { node, reason } => format!("wait for {node}: {reason}"),
            Action::Pending { reason } => format!("pending: {reason}"),
            Action::RevokeStale {
                dataset,
                node,
                epoch,
            } => format!("revoke {node}'s stale copy of {dataset} (current epoch {epoch})"),
            Action::Unfence { node } => format!("unfence {node}"),
        }
    };
    let rows: Vec<Vec<String>> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            vec![
                (i + 1).to_string(),
                s.wave.to_string(),
                s.service.clone().unwrap_or_else(|| "-".into()),
                slot(s.slot),
                describe(&s.action),
            ]
        })
        .collect();
    let mut out = format!(
        "failover plan for {}: {} steps in {} waves\n",
        plan.event,
        plan.steps.len(),
        plan.waves()
    );
    out.push_str(&table(&["#", "WAVE", "SERVICE", "SLOT", "STEP"], &rows));
    out
}
