//! The faults a run injects on the writer's node (and, for some, on a manager), each as an
//! immediate action and a timeline of later steps (a link restored, a node thawed, an agent
//! restarted), and how the cluster is brought back afterwards.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use berth_lab::wait_for;
use serde::Serialize;

use crate::cluster::Cluster;
use crate::workload::System;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// kill -9 of the writer's node: its dockerd, containers and volume agent.
    KillWorker,
    /// The writer's node loses its link for `--partition-secs` and keeps running.
    Partition,
    /// kill-worker, then kill -9 of the leading `berth run` once it has a failover command in
    /// flight, restarted 1 s later (a standby takes over meanwhile).
    KillDaemon,
    /// `docker node update --availability drain` of the writer's node.
    Drain,
    /// kill-worker, then kill -9 of the serving control member (the Raft leader) once the
    /// leading `berth run` has a failover command in flight; restarted when the run heals.
    KillControl,
    /// SIGKILL of the writer node's volume agent alone (node, engine and writer run on); the
    /// agent is restarted `--agent-restart-secs` later, as systemd would after its lease ran
    /// out. Berth only.
    KillAgent,
    /// SIGSTOP of the writer node's agent for `--pause-secs`, then SIGCONT. Berth only.
    PauseAgent,
    /// SIGSTOP of every process of the writer's node (dockerd, containerd, shims, the writer,
    /// the agent) for `--freeze-secs`, then SIGCONT: a paused VM, a stalled host.
    FreezeNode,
    /// The writer node's link cut for `--flap-down-secs` and restored for `--flap-up-secs`,
    /// `--flaps` times.
    Flap,
    /// The writer node's dockerd stopped (its containers stop with it; no live-restore) and
    /// started again; the agent runs on.
    RestartDockerd,
    /// Swarm's leader killed together with the writer's worker; under Berth the leading
    /// `berth run` is made to run there first, and the control service's leader to run
    /// elsewhere.
    KillManager,
    /// Swarm's leader killed together with the writer's worker, with the leading `berth run`
    /// and the control service's Raft leader made to run there first. Berth only.
    KillManagerControl,
    /// kill-worker with idle ballast on every other worker, then the node brought back and
    /// `berth rebalance` asked until the slot moves back onto it (`nodeback.rs`). Berth only:
    /// Swarm never moves a task back.
    NodeBack,
    /// Every control member killed (the service unreachable for every node) for
    /// `--outage-secs`, then started again; nothing else fails. The run reports
    /// `containers_stopped`. Berth only; not in the default set (it lasts over a minute).
    ControlOutage,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = clap::ValueEnum::to_possible_value(self).expect("no skipped variant");
        f.write_str(v.get_name())
    }
}

impl Fault {
    /// Whether the fault exists without Berth (no daemon, control service or agent to hit).
    pub fn applies_to(self, system: System) -> bool {
        match system {
            System::Berth => true,
            System::Swarm => !matches!(
                self,
                Fault::KillDaemon
                    | Fault::KillControl
                    | Fault::KillAgent
                    | Fault::PauseAgent
                    | Fault::KillManagerControl
                    | Fault::NodeBack
                    | Fault::ControlOutage
            ),
        }
    }

    /// Whether the writer's task is gone after the fault, so that only a new task can serve
    /// the slot again. Otherwise the old task may rightly carry on (a link restored, a node
    /// thawed, an agent back) if nothing failed the slot over.
    pub fn ends_writer(self) -> bool {
        matches!(
            self,
            Fault::KillWorker
                | Fault::KillDaemon
                | Fault::Drain
                | Fault::KillControl
                | Fault::RestartDockerd
                | Fault::KillManager
                | Fault::KillManagerControl
                | Fault::NodeBack
        )
    }
}

/// How long the timed faults last.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub partition: Duration,
    pub agent_restart: Duration,
    pub pause: Duration,
    pub freeze: Duration,
    pub flap_down: Duration,
    pub flap_up: Duration,
    pub flaps: u32,
    pub outage: Duration,
}

/// A later step of a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Cut,
    Heal,
    Thaw,
    ResumeAgent,
    RestartAgent,
    /// Once the restarted engine answers: have it load the `berth` plugin again (what the
    /// agent's systemd unit does after starting, `ExecStartPost`), so that Swarm places
    /// Berth tasks on the node.
    ActivatePlugin,
    /// Every control member that is not running started again.
    StartControl,
}

/// Which manager a manager fault kills — Swarm's leader, so that Swarm loses its leader too,
/// in both systems — and, under Berth, `berth run` made to lead there and the control
/// service's leader moved off it (kill-manager) or onto it (kill-manager-control). Done before
/// the workload is deployed, so that the daemon leads for the whole run.
pub fn prepare(c: &mut Cluster, fault: Fault, system: System) -> Result<Option<String>> {
    if !matches!(fault, Fault::KillManager | Fault::KillManagerControl) {
        return Ok(None);
    }
    let Some(target) = c.swarm_leader() else {
        bail!("{fault}: Swarm reports no leader");
    };
    if system == System::Berth {
        let on_target = fault == Fault::KillManagerControl;
        c.move_control_leader(|m| (m == target) == on_target)?;
        c.lead_daemon_on(&target)?;
    }
    Ok(Some(target))
}

/// A fault in progress.
pub struct Injected {
    /// The writer's node.
    pub node: String,
    /// The manager killed with it.
    pub manager: Option<String>,
    /// Whether that manager led Swarm's Raft group.
    pub swarm_leader_killed: Option<bool>,
    /// What the harness saw that a reader of the report should know.
    pub notes: Vec<String>,
    t0: Instant,
    /// Steps still to take, by time since the fault.
    steps: Vec<(Duration, Step)>,
    /// When the last step was taken.
    last_step: Option<Instant>,
    drained: bool,
}

/// Injects `fault` on `node` now (the caller took the fault's instant just before).
pub fn inject(
    c: &mut Cluster,
    fault: Fault,
    node: &str,
    manager: Option<String>,
    t: Timing,
) -> Result<Injected> {
    let t0 = Instant::now();
    let mut i = Injected {
        node: node.to_string(),
        swarm_leader_killed: None,
        manager,
        notes: Vec::new(),
        t0,
        steps: Vec::new(),
        last_step: None,
        drained: false,
    };
    match fault {
        Fault::KillWorker | Fault::NodeBack => c.kill_node(node),
        Fault::Partition => {
            c.lab.node(node).cut();
            i.steps.push((t.partition, Step::Heal));
        }
        Fault::KillDaemon => {
            let leader = c.leading_daemon();
            kill_node_until_mid_failover(c, node, leader.as_deref(), "berth run", &mut i);
            match leader {
                Some(m) => {
                    c.kill_daemon(&m);
                    std::thread::sleep(Duration::from_secs(1));
                    c.start_daemon(&m)?;
                    i.notes.push(format!("killed the leading berth run on {m}"));
                }
                None => i.notes.push("no berth run led; none killed".into()),
            }
        }
        Fault::Drain => {
            c.manager()
                .docker_ok(&["node", "update", "--availability", "drain", node]);
            i.drained = true;
        }
        Fault::KillControl => {
            let leader = c.leading_daemon();
            kill_node_until_mid_failover(c, node, leader.as_deref(), "the control leader", &mut i);
            match c.kill_control_leader() {
                Some(m) => i.notes.push(format!("killed the control leader on {m}")),
                None => i.notes.push("no control member served; none killed".into()),
            }
        }
        Fault::KillAgent => {
            c.kill_agent(node);
            i.steps.push((t.agent_restart, Step::RestartAgent));
        }
        Fault::PauseAgent => {
            c.pause_agent(node, true);
            i.steps.push((t.pause, Step::ResumeAgent));
        }
        Fault::FreezeNode => {
            let n = c.lab.node(node).freeze().len();
            i.notes.push(format!("froze {n} processes"));
            i.steps.push((t.freeze, Step::Thaw));
        }
        Fault::Flap => {
            c.lab.node(node).cut();
            let mut at = Duration::ZERO;
            for k in 0..t.flaps {
                at += t.flap_down;
                i.steps.push((at, Step::Heal));
                if k + 1 < t.flaps {
                    at += t.flap_up;
                    i.steps.push((at, Step::Cut));
                }
            }
        }
        Fault::RestartDockerd => {
            c.lab.node(node).restart_dockerd();
            if c.has_berth() {
                i.steps.push((Duration::ZERO, Step::ActivatePlugin));
            }
        }
        Fault::ControlOutage => {
            let killed = c.kill_all_control();
            i.notes.push(format!(
                "killed every control member ({}) for {} s",
                killed.join(", "),
                t.outage.as_secs()
            ));
            i.steps.push((t.outage, Step::StartControl));
        }
        Fault::KillManager | Fault::KillManagerControl => {
            let Some(m) = i.manager.clone() else {
                bail!("{fault}: no manager chosen");
            };
            let swarm_leader = c.swarm_leader();
            let daemon = c.leading_daemon();
            let control = c.control_leader();
            c.kill_node(&m);
            c.kill_node(node);
            i.swarm_leader_killed = Some(swarm_leader.as_deref() == Some(m.as_str()));
            if c.has_berth() {
                i.notes.push(format!(
                    "at the fault berth run led on {}, the control service on {}",
                    daemon.as_deref().unwrap_or("none"),
                    control.as_deref().unwrap_or("none")
                ));
            }
        }
    }
    Ok(i)
}

/// Kills `node`, then waits until the failover is mid-way: until `berth run` on `leader` has a
/// failover command in flight (the fence waiting out the lost node's lease, typically), or
/// 10 s at the latest, after which `next` is killed anyway.
fn kill_node_until_mid_failover(
    c: &mut Cluster,
    node: &str,
    leader: Option<&str>,
    next: &str,
    i: &mut Injected,
) {
    c.kill_node(node);
    let seen =
        leader.is_some_and(|m| wait_for(Duration::from_secs(10), || c.failover_in_flight(m)));
    if !seen {
        i.notes.push(format!(
            "no failover command seen in flight; killed {next} anyway"
        ));
    }
}

impl Injected {
    /// Takes the steps that are due, and restarts an agent that exited on its own.
    pub fn tick(&mut self, c: &mut Cluster) -> Result<()> {
        let restarted = c.tend_agents()?;
        self.notes.extend(restarted);
        while let Some(&(at, step)) = self.steps.first() {
            if self.t0.elapsed() < at || !self.take(c, step)? {
                break;
            }
            self.steps.remove(0);
            self.last_step = Some(Instant::now());
        }
        Ok(())
    }

    /// Whether every step has been taken, and how long ago the last was (or the fault, for a
    /// fault without later steps).
    pub fn done_for(&self) -> Option<Duration> {
        self.steps
            .is_empty()
            .then(|| self.last_step.unwrap_or(self.t0).elapsed())
    }

    /// Takes one step; `false` if it cannot be taken yet.
    fn take(&mut self, c: &mut Cluster, step: Step) -> Result<bool> {
        let node = self.node.clone();
        match step {
            Step::Cut => c.lab.node(&node).cut(),
            Step::Heal => c.lab.node(&node).heal(),
            Step::Thaw => c.lab.node(&node).thaw(),
            Step::ResumeAgent => c.pause_agent(&node, false),
            Step::RestartAgent => {
                c.start_agent(&node)?;
                c.wait_plugin(&node)?;
            }
            Step::StartControl => c.start_missing_control()?,
            Step::ActivatePlugin => {
                let n = c.lab.node(&node);
                if !n.docker(&["info"]).status.success() {
                    return Ok(false);
                }
                c.wait_plugin(&node)?;
                self.notes.push(format!(
                    "dockerd back and the plugin listed {:.1} s after the fault",
                    self.t0.elapsed().as_secs_f64()
                ));
            }
        }
        Ok(true)
    }

    /// Takes the remaining steps at their times, then brings the cluster back whole.
    pub fn finish(mut self, c: &mut Cluster) -> Result<Vec<String>> {
        while !self.steps.is_empty() {
            self.tick(c)?;
            std::thread::sleep(Duration::from_millis(100));
        }
        if self.drained {
            c.manager()
                .docker_ok(&["node", "update", "--availability", "active", &self.node]);
        }
        c.restore()?;
        Ok(self.notes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_command_lines() {
        use clap::ValueEnum;
        let names: Vec<String> = Fault::value_variants()
            .iter()
            .map(|f| f.to_string())
            .collect();
        assert_eq!(
            names,
            [
                "kill-worker",
                "partition",
                "kill-daemon",
                "drain",
                "kill-control",
                "kill-agent",
                "pause-agent",
                "freeze-node",
                "flap",
                "restart-dockerd",
                "kill-manager",
                "kill-manager-control",
                "node-back",
                "control-outage"
            ]
        );
        for f in Fault::value_variants() {
            assert_eq!(Fault::from_str(&f.to_string(), false), Ok(*f));
            assert_eq!(
                serde_json::to_value(f).unwrap(),
                serde_json::Value::String(f.to_string())
            );
        }
    }

    #[test]
    fn faults_on_berths_own_processes_apply_to_berth_only() {
        let swarm: Vec<Fault> = clap::ValueEnum::value_variants()
            .iter()
            .copied()
            .filter(|f: &Fault| f.applies_to(System::Swarm))
            .collect();
        assert_eq!(
            swarm,
            [
                Fault::KillWorker,
                Fault::Partition,
                Fault::Drain,
                Fault::FreezeNode,
                Fault::Flap,
                Fault::RestartDockerd,
                Fault::KillManager
            ]
        );
    }
}
