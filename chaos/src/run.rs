//! One chaos run: a workload deployed, a fault injected on the node it writes on, the slot
//! watched until it serves again, the cluster restored, the copies read and judged.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use berth_lab::wait_for;
use serde::Serialize;

use crate::cluster::Cluster;
use crate::fault::{self, Fault, Timing};
use crate::nodeback::{self, Ballast, MoveBack};
use crate::verdict::{self, Evidence, ServedBy, Verdict, Window};
use crate::workload::{Backend, System, Workload};

#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub workload: &'static str,
    pub backend: Backend,
    pub fault: Fault,
    pub system: System,
    pub seed: u64,
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Under Berth: how many times the slot's volume was fenced (its epoch's rise); 1 for a
    /// failover, never 2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fences: Option<u64>,
    /// `replicated`: the lag the control service reported for the promoted standby (ms of
    /// writes it could lack), `null` without a promotion; `null` on other backends.
    pub lag_ms: Option<u64>,
    /// How long before the fault the oldest lost acknowledged write was acknowledged, ms;
    /// `null` when nothing was lost. On `replicated` it must be within `lag_ms`.
    pub lost_window_ms: Option<u64>,
    /// Acknowledgements and records cut off mid-line (not evidence, not problems).
    pub torn: usize,
    /// `control-outage`: the slot's task containers that died on any node from the fault until
    /// the cluster was restored (read from each engine's events); any is a failed run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub containers_stopped: Option<u64>,
    /// The writer's node before the fault.
    pub node: String,
    /// The manager killed with it (manager faults).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manager: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swarm_leader_killed: Option<bool>,
    pub storage: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// `--slots`: every slot's time to serve and each service's budget.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub mass: Option<crate::mass::judge::MassReport>,
    /// Wall time of the whole run, deploy to cleanup.
    pub run_seconds: f64,
    /// node-back: the rescheduling run that took the slot back (`moves`,
    /// `move_downtime_seconds`, …).
    #[serde(flatten)]
    pub node_back: Option<MoveBack>,
}

impl RunResult {
    /// What a Berth run must achieve: served again, nothing lost, one writer at a time, at
    /// most one fence (plus one per move a rebalance landed), and all evidence read; node-back:
    /// the slot moved back within the limit.
    /// On `replicated`, what was lost must lie within the lag the promotion reported.
    pub fn berth_ok(&self) -> bool {
        let mut v = self.verdict.clone();
        if self.loss_allowed() {
            // A loss within the promoted standby's lag is `replicated`'s promise kept.
            v.lost_acked = 0;
        }
        let moved = self.node_back.as_ref().map_or(0, MoveBack::landed);
        let back =
            self.fault != Fault::NodeBack || self.node_back.as_ref().is_some_and(|m| m.moved_back);
        v.safe_and_serving()
            && self.fences.is_none_or(|f| f <= 1 + moved)
            && back
            && self
                .mass
                .as_ref()
                .is_none_or(crate::mass::judge::MassReport::budgets_honoured)
            && self.containers_stopped.is_none_or(|n| n == 0)
    }

    /// Nothing lost, or (`replicated`) every lost write within the promoted standby's lag.
    pub fn loss_allowed(&self) -> bool {
        self.verdict.lost_acked == 0
            || (self.backend == Backend::Replicated
                && matches!((self.lost_window_ms, self.lag_ms), (Some(w), Some(l)) if w <= l))
    }

    pub fn summary(&self) -> String {
        let v = &self.verdict;
        let slots = self
            .mass
            .as_ref()
            .map(|m| format!(", {}/{} slots served", m.slots_served, m.slots))
            .unwrap_or_default();
        format!(
            "{} {} / {}: serves again after {}{}{slots}, {} acked, {} lost{}, {} double writers ({} tasks){}{}{}{}, run {:.0} s",
            self.system,
            self.backend,
            self.fault,
            v.seconds_to_serve
                .map(|s| format!("{s:.1} s"))
                .unwrap_or_else(|| "never".into()),
            match v.served_by {
                Some(ServedBy::SameTask) => " (same task)",
                _ => "",
            },
            v.acked,
            v.lost_acked,
            match (self.lost_window_ms, self.lag_ms) {
                (Some(w), Some(l)) => format!(" ({w} ms before the fault; lag {l} ms)"),
                (Some(w), None) => format!(" ({w} ms before the fault)"),
                (None, Some(l)) => format!(" (lag {l} ms)"),
                (None, None) => String::new(),
            },
            v.double_writers,
            v.writers,
            self.fences
                .map(|f| format!(", fenced {f}x"))
                .unwrap_or_default(),
            self.node_back
                .as_ref()
                .map(|m| match m.seconds_to_move_back {
                    Some(t) if m.moved_back => format!(
                        ", moved back after {t:.1} s (down {})",
                        m.move_downtime_seconds
                            .iter()
                            .map(|d| format!("{d:.2} s"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    _ => ", NOT MOVED BACK".into(),
                })
                .unwrap_or_default(),
            self.containers_stopped
                .map(|n| format!(", {n} containers stopped"))
                .unwrap_or_default(),
            if v.problems.is_empty() {
                String::new()
            } else {
                format!(", PROBLEMS: {}", v.problems.join("; "))
            },
            self.run_seconds,
        )
    }
}

/// How a run is made.
pub struct Setup<'a> {
    pub workload: &'a dyn Workload,
    pub system: System,
    pub backend: Backend,
    pub fault: Fault,
    pub seed: u64,
    pub timing: Timing,
    /// How long the run waits for the slot to serve again before it ends the fault anyway.
    pub serve_limit: Duration,
}

/// Writes acknowledged before the fault.
const WARM_UP: usize = 25;
/// After a fault the writer may survive has ended, how long the run still waits for a
/// failover before taking the old task's writes as the slot serving.
const KEEP_GRACE: Duration = Duration::from_secs(10);

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

pub fn one(c: &mut Cluster, s: &Setup) -> Result<RunResult> {
    let started = Instant::now();
    let w = s.workload;
    let manager = fault::prepare(c, s.fault, s.system)?;
    let d = w.deploy(c, s.system, s.backend, s.seed)?;
    if !wait_for(Duration::from_secs(120), || {
        w.history(&d).acks.len() >= WARM_UP && w.settled(c, &d)
    }) {
        bail!(
            "{}: the workload never acknowledged {WARM_UP} writes with all its members up (logs in {})",
            d.service,
            c.logs().display()
        );
    }
    let (node, _) = c.running_on(&d.service).context("the writer's task")?;
    let epoch_before = d.volume.as_ref().and_then(|v| c.volume_epoch(v));
    let ballast = match s.fault {
        Fault::NodeBack => Some(Ballast::deploy(c, &node, &d.id)?),
        _ => None,
    };
    std::thread::sleep(Duration::from_millis(1000 + (s.seed % 3) * 1000));
    let before: BTreeSet<String> = w.history(&d).acks.into_iter().map(|a| a.task).collect();
    let fault_ms = now_ms();
    let t0 = Instant::now();
    let mut inj = fault::inject(c, s.fault, &node, manager, s.timing)?;
    loop {
        inj.tick(c)?;
        let h = w.history(&d);
        let new_task = h
            .acks
            .iter()
            .any(|a| a.at >= t0 && !before.contains(&a.task));
        if new_task {
            break;
        }
        // A cluster that serves on under its own identity (etcd): acknowledging after the
        // fault, with the lost member recreated and joined again.
        if w.outlives_a_member() && h.acks.iter().any(|a| a.at >= t0) && w.settled(c, &d) {
            break;
        }
        // A fault the old task may outlive: once it is over and no failover came, the old
        // task acknowledging again is the slot serving.
        let old_serves = h
            .acks
            .iter()
            .any(|a| a.at.elapsed() < Duration::from_secs(1));
        if !s.fault.ends_writer() && inj.done_for().is_some_and(|d| d >= KEEP_GRACE) && old_serves {
            break;
        }
        if t0.elapsed() > s.serve_limit {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Keep writing a little on whoever serves, then end the fault and restore the cluster.
    std::thread::sleep(Duration::from_secs(3));
    let (swarm_leader_killed, killed_manager) = (inj.swarm_leader_killed, inj.manager.clone());
    let mut notes = inj.finish(c)?;
    // Let a returning node's old task be stopped (Swarm stops it once it reconnects).
    std::thread::sleep(Duration::from_secs(5));
    let node_back = match s.fault {
        Fault::NodeBack => Some(nodeback::move_back(
            c,
            &d.service,
            &node,
            || w.history(&d).acks,
            &mut notes,
        )?),
        _ => None,
    };
    let containers_stopped = (s.fault == Fault::ControlOutage)
        .then(|| c.task_containers_died(&d.service, (fault_ms / 1000) as u64));
    // The acknowledgements first: each was sent after its write was durable, so every one
    // taken now must be in the copy read next. (Taken after, a write acknowledged meanwhile
    // would count as lost.)
    let history = w.history(&d);
    let end = Instant::now();
    // The promotion's lag, while its assignment is the volume's latest.
    let lag_ms = match d.backend {
        Backend::Replicated => d
            .volume
            .as_ref()
            .and_then(|v| c.volume_record(v))
            .and_then(|r| r["lag_ms"].as_u64()),
        _ => None,
    };
    let back = w.read_back(c, &d);
    let mut problems = history.problems;
    problems.extend(back.problems);
    let lost_window_ms = verdict::lost_window_ms(&history.acks, &back.surviving, fault_ms);
    let v: Verdict = verdict::judge(
        &Evidence {
            acks: history.acks,
            surviving: back.surviving,
            writes: back.writes,
            problems,
        },
        Window {
            fault: t0,
            fault_ms,
            end,
        },
    );
    // One fence per failover: a daemon killed mid-failover that fenced or moved again after
    // its restart would show here as two.
    let fences = match (
        epoch_before,
        d.volume.as_ref().and_then(|v| c.volume_epoch(v)),
    ) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    // A slot that never served again: what its tasks said is the evidence of why (a database
    // that could not recover its files), and it goes with the service.
    if v.seconds_to_serve.is_none() {
        notes.extend(task_logs(c, &d.service));
    }
    // Clean up: the workload goes (Berth removes the slot service with its template), its
    // volumes stay on the lab's disk until the lab goes.
    c.manager().docker_ok(&["service", "rm", &d.remove]);
    if let Some(b) = &ballast {
        b.remove(c);
    }
    if !wait_for(Duration::from_secs(60), || {
        c.running_on(&d.service).is_none()
    }) {
        bail!("{}: its task outlived the service", d.service);
    }
    Ok(RunResult {
        workload: w.name(),
        backend: d.backend,
        fault: s.fault,
        system: s.system,
        seed: s.seed,
        verdict: v,
        lag_ms,
        lost_window_ms,
        fences,
        torn: history.torn + back.torn,
        containers_stopped,
        node,
        manager: killed_manager,
        swarm_leader_killed,
        storage: d.storage,
        notes,
        mass: None,
        run_seconds: started.elapsed().as_secs_f64(),
        node_back,
    })
}

/// The last log lines of every container `service` left on a node that is up, read from each
/// node's own engine (`docker service logs` gives up on a task whose node was lost).
fn task_logs(c: &Cluster, service: &str) -> Vec<String> {
    let mut notes = Vec::new();
    for n in c.lab.nodes.iter().filter(|n| n.is_up()) {
        let out = n.docker(&[
            "ps",
            "--all",
            "--quiet",
            "--filter",
            &format!("label=com.docker.swarm.service.name={service}"),
        ]);
        // Newest first: the last container is the one that tells why.
        let ids = String::from_utf8_lossy(&out.stdout).into_owned();
        if let Some(id) = ids.lines().next() {
            let out = n.docker(&["logs", "--tail", "15", id]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            notes.extend(
                text.lines()
                    .map(|l| format!("{service} on {} ({id}): {l}", n.name)),
            );
        }
    }
    notes
}
