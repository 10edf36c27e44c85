//! `berth rebalance`: the engine's rescheduling plan for a cluster dump — which running
//! stateful slots move where, why, and what each copies. Only `--dry-run` exists: carrying
//! moves out is the executor's, which does not run them yet.

use anyhow::{Result, bail};
use clap::Args as ClapArgs;

use berth_scheduler::rebalance::{Budget, RebalancePlan, plan_rebalance};
use berth_units::{Size, parse_rate};

use super::{Input, Outcome, Output, input};

#[derive(ClapArgs, Debug)]
pub struct RebalanceArgs {
    /// Print the plan (moves with their reasons and bytes, what is held back); move nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    input: Input,
    #[arg(long, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Moves in flight at once, cluster-wide (a service's own limit is its
    /// `berth.max-unavailable`).
    #[arg(long, default_value_t = 2)]
    max_in_flight: u32,
    /// Cluster-wide copy rate, for the time estimate (`100MiB/s`).
    #[arg(long, default_value = "100MiB/s")]
    rate: String,
    /// Moves in this plan; the rest is held back.
    #[arg(long)]
    max_moves: Option<u32>,
    /// Tasks of load a move must gain when it fixes no spread.
    #[arg(long, default_value_t = 2)]
    margin: u32,
}

pub fn run(a: RebalanceArgs) -> Result<Outcome> {
    if !a.dry_run {
        bail!(
            "berth rebalance moves nothing yet: the executor does not carry rescheduling moves \
             out. Use `berth rebalance --dry-run` to see the plan"
        );
    }
    let budget = Budget {
        max_in_flight: a.max_in_flight,
        bytes_per_sec: parse_rate(&a.rate)?,
        max_moves: a.max_moves,
        margin: a.margin,
    };
    let loaded = input::load(&a.input)?;
    let plan = plan_rebalance(&loaded.cluster, &budget).map_err(|e| loaded.blame(&e))?;
    match a.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
        Output::Table => print!("{}", table(&plan, &budget)),
    }
    Ok(Outcome::Complete)
}

/// Left-aligned columns, two spaces apart, trailing spaces trimmed.
fn columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for r in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (c, w) in r.iter().zip(&widths) {
            line.push_str(c);
            line.extend(std::iter::repeat_n(' ', w + 2 - c.chars().count()));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn table(plan: &RebalancePlan, budget: &Budget) -> String {
    let mut out = String::new();
    if plan.moves.is_empty() {
        out.push_str(
            "No move proposed: every running stateful slot is where the planner would keep it.\n",
        );
    } else {
        let plural =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        out.push_str(&format!(
            "{} in {}, {} to copy (about {} s at {}/s):\n",
            plural(plan.moves.len(), "move", "moves"),
            plural(plan.waves as usize, "wave", "waves"),
            Size(plan.bytes),
            plan.copy_secs,
            Size(budget.bytes_per_sec)
        ));
        let rows: Vec<Vec<String>> = plan
            .moves
            .iter()
            .map(|m| {
                vec![
                    m.wave.to_string(),
                    m.service.clone(),
                    m.slot.to_string(),
                    m.from.to_string(),
                    m.to.to_string(),
                    m.mode.as_str().to_string(),
                    Size(m.bytes).to_string(),
                    m.reason.clone(),
                ]
            })
            .collect();
        out.push_str(&columns(
            &[
                "WAVE", "SERVICE", "SLOT", "FROM", "TO", "MODE", "COPIES", "REASON",
            ],
            &rows,
        ));
    }
    if !plan.standbys.is_empty() {
        out.push_str("\nNew standbys (replicated datasets without a live one):\n");
        let rows: Vec<Vec<String>> = plan
            .standbys
            .iter()
            .map(|s| {
                vec![
                    s.dataset.clone(),
                    s.service.clone(),
                    s.slot.to_string(),
                    s.primary.to_string(),
                    s.node.to_string(),
                    Size(s.bytes).to_string(),
                    s.reason.clone(),
                ]
            })
            .collect();
        out.push_str(&columns(
            &[
                "DATASET", "SERVICE", "SLOT", "PRIMARY", "STANDBY", "COPIES", "REASON",
            ],
            &rows,
        ));
    }
    if !plan.held.is_empty() {
        out.push_str("\nHeld back:\n");
        let rows: Vec<Vec<String>> = plan
            .held
            .iter()
            .map(|h| {
                vec![
                    h.service.clone(),
                    h.slot.to_string(),
                    h.node.to_string(),
                    h.to.to_string(),
                    h.kind.as_str().to_string(),
                    h.reason.clone(),
                ]
            })
            .collect();
        out.push_str(&columns(
            &[
                "SERVICE",
                "SLOT",
                "NODE",
                "WOULD GO TO",
                "HELD BY",
                "REASON",
            ],
            &rows,
        ));
    }
    out
}
