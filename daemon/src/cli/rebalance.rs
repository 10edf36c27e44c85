//! `berth rebalance`: the engine's rescheduling plan — which running stateful slots move
//! where, why, and what each copies. `--dry-run` prints it for a cluster dump (or `--live`,
//! the running Swarm) and moves nothing; `berth rebalance --live` asks the running controller
//! (`berth run`'s API, `--api`) to plan from its own view and carry the moves out, and shows
//! each move's progress until the run ends.

use anyhow::{Context, Result, anyhow, bail};
use clap::Args as ClapArgs;

use berth_scheduler::rebalance::{Budget, RebalancePlan, plan_rebalance};
use berth_units::{Size, parse_rate};

use super::{Input, Outcome, Output, live};
use crate::controller::rebalance::{Progress, Request};

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
    /// Without --dry-run: `berth run`'s API (its `--listen`), which plans and moves.
    #[arg(long, env = "BERTH_API", default_value = "http://127.0.0.1:9440")]
    api: String,
    /// Without --dry-run: how often to read the run's progress (`1s`, `500ms`).
    #[arg(long, env = "BERTH_INTERVAL", default_value = "1s", value_parser = super::run::parse_duration)]
    interval: std::time::Duration,
}

pub fn run(a: RebalanceArgs) -> Result<Outcome> {
    let budget = Budget {
        max_in_flight: a.max_in_flight,
        bytes_per_sec: parse_rate(&a.rate)?,
        max_moves: a.max_moves,
        margin: a.margin,
    };
    if !a.dry_run {
        if !a.input.live {
            bail!(
                "berth rebalance moves slots of the running cluster: give --live (berth run, at \
                 --api, plans from its own view of the swarm and carries the moves out), or \
                 --dry-run to see the plan for these files"
            );
        }
        return execute(&a, &budget);
    }
    let loaded = super::load(&a.input)?;
    let plan = plan_rebalance(&loaded.cluster, &budget).map_err(|e| loaded.blame(&e))?;
    match a.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
        Output::Table => print!("{}", table(&plan, &budget)),
    }
    Ok(Outcome::Complete)
}

/// Asks `berth run` for a rescheduling run and follows it: one line per move's change of
/// step, a summary at the end. Complete when every move landed (or there was none to make).
fn execute(a: &RebalanceArgs, budget: &Budget) -> Result<Outcome> {
    let token = live::token(&a.input.token_file)?;
    let tls_ca = a.input.tls_ca.as_deref();
    let request = Request {
        max_in_flight: Some(budget.max_in_flight),
        bytes_per_sec: Some(budget.bytes_per_sec),
        max_moves: budget.max_moves,
        margin: Some(budget.margin),
        id: 0,
    };
    let call = |method, path: &'static str, body: Vec<u8>| {
        live::api_call(&a.api, token.as_deref(), tls_ca, method, path, body)
    };
    live::runtime()?.block_on(async {
        let answer = call(
            axum::http::Method::POST,
            "/v1/rebalance",
            serde_json::to_vec(&request)?,
        )
        .await
        .context("asking berth run to rebalance")?;
        let id = serde_json::from_slice::<serde_json::Value>(&answer)?["request"]
            .as_u64()
            .ok_or_else(|| anyhow!("berth run's answer names no request"))?;
        if a.output == Output::Table {
            println!(
                "berth run at {} took request {id}; it plans at its next pass",
                a.api
            );
        }
        let mut shown: Vec<String> = Vec::new();
        loop {
            let body = call(axum::http::Method::GET, "/v1/rebalance", Vec::new()).await?;
            let p: Progress = serde_json::from_slice(&body)
                .context("berth run's API: /v1/rebalance does not decode")?;
            if p.request.is_some_and(|r| r >= id) {
                if a.output == Output::Table {
                    for line in progress_lines(&p) {
                        if !shown.contains(&line) {
                            println!("{line}");
                            shown.push(line);
                        }
                    }
                }
                if !p.running {
                    match a.output {
                        Output::Json => println!("{}", serde_json::to_string_pretty(&p)?),
                        Output::Table => {
                            if let Some(m) = &p.message {
                                println!("{m}");
                            }
                        }
                    }
                    let landed = p.moves.iter().all(|m| m.state == "moved");
                    return Ok(if landed {
                        Outcome::Complete
                    } else {
                        Outcome::Incomplete
                    });
                }
            }
            tokio::time::sleep(a.interval).await;
        }
    })
}

/// One line per move and its state.
fn progress_lines(p: &Progress) -> Vec<String> {
    p.moves
        .iter()
        .map(|m| {
            let down = m
                .downtime_ms
                .map(|ms| format!(", down {:.1} s", ms as f64 / 1000.0))
                .unwrap_or_default();
            format!(
                "wave {} {} slot {} {} -> {} ({}, {}): {}{down}",
                m.wave,
                m.service,
                m.slot,
                m.from,
                m.to,
                m.mode,
                Size(m.bytes),
                m.state
            )
        })
        .collect()
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
