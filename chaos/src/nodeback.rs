//! `node-back`: the writer's node killed (its slot fails over), then brought back, and Berth
//! asked to rebalance as an operator asks it (`berth rebalance --live`, a request through the
//! leading `berth run`'s API): the slot must move back onto the returned node within
//! [`MOVE_BACK_LIMIT`]. The run's verdict covers the move as well as the failover (nothing
//! lost, one writer at a time), and the move's downtime is measured as the writer's own outage.
//!
//! A slot alone has no reason to move back: the node it failed over to is as good as the one
//! it left. So before the fault, ballast (idle stateless tasks) runs on every other worker,
//! [`BALLAST_PER_NODE`] each — the rebalance planner's default margin — and after the failover
//! the slot shares a node with ballast while the returned node sits empty: the lopsided cluster
//! rescheduling is for.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use berth_lab::swarm::IMAGE;
use berth_lab::wait_for;
use serde::Serialize;

use crate::cluster::Cluster;
use crate::verdict::Ack;

/// From the node back (Swarm reports it ready, its agent serves) until the slot must
/// acknowledge writes on it again.
pub const MOVE_BACK_LIMIT: Duration = Duration::from_secs(60);

/// Idle tasks on each other worker: `berth rebalance`'s default margin, the least load gap
/// that makes a move worth it.
const BALLAST_PER_NODE: usize = 2;

/// How long one `berth rebalance --live` may follow its run before it is given up.
const ONE_REQUEST: Duration = Duration::from_secs(45);

/// Idle stateless tasks on every worker but the writer's.
pub struct Ballast {
    pub service: String,
}

impl Ballast {
    /// Deploys the ballast and waits until every task of it runs.
    pub fn deploy(c: &Cluster, writer: &str, name: &str) -> Result<Ballast> {
        let others = c
            .lab
            .nodes
            .iter()
            .filter(|n| n.role == berth_lab::swarm::Role::Worker && n.name != writer)
            .count();
        let replicas = others * BALLAST_PER_NODE;
        let service = format!("{name}-ballast");
        c.manager().docker_ok(&[
            "service",
            "create",
            "--detach",
            "--quiet",
            "--no-resolve-image",
            "--name",
            &service,
            "--replicas",
            &replicas.to_string(),
            "--replicas-max-per-node",
            &BALLAST_PER_NODE.to_string(),
            "--constraint",
            "node.role==worker",
            "--constraint",
            &format!("node.id!={}", c.ids[writer]),
            IMAGE,
            "sleep",
            "infinity",
        ]);
        let running = wait_for(Duration::from_secs(60), || {
            let out = c.manager().docker(&[
                "service",
                "ps",
                &service,
                "--filter",
                "desired-state=running",
                "--format",
                "{{.CurrentState}}",
            ]);
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.starts_with("Running"))
                .count()
                == replicas
        });
        let b = Ballast { service };
        if !running {
            b.remove(c);
            bail!("the ballast's {replicas} tasks did not all run within 60 s");
        }
        Ok(b)
    }

    pub fn remove(&self, c: &Cluster) {
        let _ = c.manager().docker(&["service", "rm", &self.service]);
    }
}

/// One move of the rescheduling run, as `berth run` reported it (`GET /v1/rebalance`).
#[derive(Debug, Clone, Serialize)]
pub struct MoveSeen {
    pub slot: u64,
    /// Lab node names.
    pub from: String,
    pub to: String,
    pub mode: String,
    /// moved, rolled-back or failed (or the step it was in when the run was given up).
    pub state: String,
    /// Berth's own measure: the old task seen stopped to the slot's start command done.
    pub berth_downtime_ms: Option<u64>,
}

/// What the move back came to.
#[derive(Debug, Clone, Serialize)]
pub struct MoveBack {
    /// The rescheduling run that moved something (empty: none did within the limit).
    pub moves: Vec<MoveSeen>,
    /// Per move of the writer's slot: the writer's own outage, from the last acknowledgement
    /// of a task before the move to the first of the task after it, seconds.
    pub move_downtime_seconds: Vec<f64>,
    /// Node back → the slot acknowledging on it again, seconds; `null` if it did not within
    /// the limit.
    pub seconds_to_move_back: Option<f64>,
    /// `berth rebalance` requests made until one moved something (a request during the
    /// failover's last steps is refused, one before the planner sees the node plans nothing).
    pub rebalance_requests: u32,
    /// The slot runs on the node it was killed on, acknowledging from a task started after
    /// the node came back.
    pub moved_back: bool,
}

impl MoveBack {
    /// Moves that landed (each fenced the volume once).
    pub fn landed(&self) -> u64 {
        self.moves.iter().filter(|m| m.state == "moved").count() as u64
    }
}

/// Asks Berth to rebalance until a run moves something, then waits until the slot
/// (`service`, whose writes `acks` reads) acknowledges from a new task on `home`, the node
/// that came back. Called once the cluster is whole again.
pub fn move_back(
    c: &Cluster,
    service: &str,
    home: &str,
    acks: impl Fn() -> Vec<Ack>,
    notes: &mut Vec<String>,
) -> Result<MoveBack> {
    let t_back = Instant::now();
    let before: BTreeSet<String> = acks().into_iter().map(|a| a.task).collect();
    let mut out = MoveBack {
        moves: Vec::new(),
        move_downtime_seconds: Vec::new(),
        seconds_to_move_back: None,
        rebalance_requests: 0,
        moved_back: false,
    };
    while t_back.elapsed() < MOVE_BACK_LIMIT {
        out.rebalance_requests += 1;
        match rebalance(c) {
            Ok(p) => {
                let moves = p["moves"].as_array().cloned().unwrap_or_default();
                if !moves.is_empty() {
                    out.moves = moves.iter().map(|m| seen(c, m)).collect();
                    break;
                }
                if let Some(m) = p["message"].as_str() {
                    notes.push(format!(
                        "rebalance {:.1} s after the node came back: {m}",
                        t_back.elapsed().as_secs_f64()
                    ));
                }
            }
            Err(e) => notes.push(format!(
                "rebalance {:.1} s after the node came back: {e:#}",
                t_back.elapsed().as_secs_f64()
            )),
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let left = MOVE_BACK_LIMIT.saturating_sub(t_back.elapsed());
    let mut new_first = None;
    wait_for(left, || {
        new_first = acks()
            .into_iter()
            .filter(|a| !before.contains(&a.task))
            .map(|a| a.at)
            .min();
        new_first.is_some() && c.running_on(service).is_some_and(|(n, _)| n == home)
    });
    let Some(first) = new_first else {
        return Ok(out);
    };
    out.moved_back = c.running_on(service).is_some_and(|(n, _)| n == home);
    out.seconds_to_move_back = Some(first.duration_since(t_back).as_secs_f64());
    // The new task writes a while before the run takes its history and reads the copy back.
    std::thread::sleep(Duration::from_secs(3));
    let all = acks();
    let old_last = all
        .iter()
        .filter(|a| before.contains(&a.task))
        .map(|a| a.at)
        .max();
    if let Some(last) = old_last {
        // Two writers at once would make this 0; the verdict counts them.
        out.move_downtime_seconds
            .push(first.saturating_duration_since(last).as_secs_f64());
    }
    Ok(out)
}

/// One `berth rebalance --live` against the leading `berth run`, followed until its run ends;
/// the run's progress (`GET /v1/rebalance`) as JSON.
fn rebalance(c: &Cluster) -> Result<serde_json::Value> {
    let leader = c.leading_daemon().context("no berth run leads")?;
    let mut child = Command::new(c.berth_bin())
        .args(["rebalance", "--live", "--api"])
        .arg(format!("http://{}", c.daemon_api(&leader)))
        .arg("--token-file")
        .arg(c.token_file())
        .args(["--output", "json", "--interval", "500ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting berth rebalance")?;
    let t = Instant::now();
    while child.try_wait()?.is_none() {
        if t.elapsed() > ONE_REQUEST {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "berth rebalance did not end within {} s",
                ONE_REQUEST.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&stdout).with_context(|| {
        format!(
            "berth rebalance ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

fn seen(c: &Cluster, m: &serde_json::Value) -> MoveSeen {
    let name = |id: &serde_json::Value| {
        let id = id.as_str().unwrap_or_default();
        c.ids
            .iter()
            .find(|(_, v)| *v == id)
            .map(|(n, _)| n.clone())
            .unwrap_or_else(|| id.to_string())
    };
    MoveSeen {
        slot: m["slot"].as_u64().unwrap_or_default(),
        from: name(&m["from"]),
        to: name(&m["to"]),
        mode: m["mode"].as_str().unwrap_or_default().to_string(),
        state: m["state"].as_str().unwrap_or_default().to_string(),
        berth_downtime_ms: m["downtime_ms"].as_u64(),
    }
}
