//! Rescheduling in `berth run`: when to ask the engine for a rebalance plan (an operator's
//! request through the API, or the automatic mode once the cluster has been quiet for a
//! while), and what became of each move, for the API, `berth rebalance` and the metrics.
//! The moves themselves run in the executor (`Executor::run_moves`), with the failover's
//! epoch-fenced commands; this module only keeps the books.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use berth_scheduler::executor::lane::LaneStep;
use berth_scheduler::executor::{Actor, Command as ExecCommand, Executor, RunKind};
use berth_scheduler::failover::Action;
use berth_scheduler::model::{Availability, Cluster, NodeState};
use berth_scheduler::rebalance::{Budget, RebalancePlan};

use crate::metrics::Metrics;

/// `berth run --rebalance-auto`: rebalance on its own, at most `budget.max_moves` moves per
/// run, only after `quiet` without a failover, a node joining, leaving or changing state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auto {
    pub budget: Budget,
    pub quiet: Duration,
}

/// An operator's request (`POST /v1/rebalance`); what it leaves out is the planner's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_per_sec: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_moves: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub margin: Option<u32>,
    /// Set by the API: names the request in [`Progress::request`].
    #[serde(default)]
    pub id: u64,
}

impl Request {
    pub fn budget(&self) -> Budget {
        let d = Budget::default();
        Budget {
            max_in_flight: self.max_in_flight.unwrap_or(d.max_in_flight),
            bytes_per_sec: self.bytes_per_sec.unwrap_or(d.bytes_per_sec),
            max_moves: self.max_moves.or(d.max_moves),
            margin: self.margin.unwrap_or(d.margin),
        }
    }
}

/// One move of the current or last rescheduling run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveProgress {
    pub service: String,
    pub slot: u64,
    pub from: String,
    pub to: String,
    pub mode: String,
    pub bytes: u64,
    pub wave: u32,
    /// waiting (an earlier wave runs), choosing, copying (pre-copy while the slot serves),
    /// stopping, fencing, moving (the last delta, a promotion or a re-point), starting; then
    /// moved, rolled-back (restarted where it ran) or failed (it never stopped).
    pub state: String,
    /// From the old task seen stopped to the slot running again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_ms: Option<u64>,
}

impl MoveProgress {
    pub fn ended(&self) -> bool {
        matches!(self.state.as_str(), "moved" | "rolled-back" | "failed")
    }
}

/// `GET /v1/rebalance`: the current or last rescheduling run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Whether the automatic mode is on.
    pub auto: bool,
    /// The last operator request taken (its id), and whether one waits for the next pass.
    pub request: Option<u64>,
    pub requested: bool,
    pub running: bool,
    pub run: Option<u64>,
    pub by: Option<String>,
    pub moves: Vec<MoveProgress>,
    /// Slots the plan held back (pinned, data not safe, budget, margin).
    pub held: usize,
    /// What the last request or automatic round came to, when it started no run or ended.
    pub message: Option<String>,
}

/// A move that ended, for the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub result: &'static str,
    pub bytes: u64,
    pub downtime_ms: Option<u64>,
}

impl Ended {
    pub fn record(&self, m: &Metrics) {
        m.rebalance_moves.with_label_values(&[self.result]).inc();
        m.rebalance_bytes.inc_by(self.bytes);
        if let Some(ms) = self.downtime_ms {
            m.rebalance_downtime.observe(ms as f64 / 1000.0);
        }
    }
}

/// The controller's books on rescheduling.
#[derive(Debug, Default)]
pub struct Rebalancer {
    auto: Option<Auto>,
    /// Since when (monotonic ms) no failover ran and the nodes did not change.
    quiet_since: Option<u64>,
    nodes: Vec<(String, NodeState, Availability)>,
    /// When each moving slot's old task was seen stopped.
    stopped: BTreeMap<(String, u64), u64>,
    pub progress: Progress,
}

impl Rebalancer {
    pub fn new(auto: Option<Auto>) -> Rebalancer {
        Rebalancer {
            progress: Progress {
                auto: auto.is_some(),
                ..Progress::default()
            },
            auto,
            ..Rebalancer::default()
        }
    }

    /// What a pass saw: the quiet window starts again at a failover under way or a change
    /// of the nodes (one joined, left, went down, came back, was drained).
    pub fn saw(&mut self, now: u64, cluster: &Cluster, failover_running: bool) {
        let nodes: Vec<_> = cluster
            .nodes
            .iter()
            .map(|n| (n.id.0.clone(), n.state, n.availability))
            .collect();
        if failover_running || nodes != self.nodes || self.quiet_since.is_none() {
            self.quiet_since = Some(now);
        }
        self.nodes = nodes;
    }

    /// The budget to plan with now, if a rescheduling round is due: an operator's request
    /// first, else the automatic mode once the quiet window has passed.
    pub fn due(&self, now: u64, request: Option<&Request>) -> Option<(Budget, Actor)> {
        if self.progress.running {
            return None;
        }
        if let Some(r) = request {
            return Some((r.budget(), Actor::Operator));
        }
        let auto = self.auto.as_ref()?;
        let quiet = u64::try_from(auto.quiet.as_millis()).unwrap_or(u64::MAX);
        let since = self.quiet_since?;
        (now.saturating_sub(since) >= quiet).then(|| (auto.budget.clone(), Actor::Berth))
    }

    /// A round that started no run (balanced, nothing movable, or an error).
    pub fn nothing(&mut self, now: u64, request: Option<u64>, message: String) {
        if request.is_some() {
            self.progress.request = request;
        }
        self.progress.message = Some(message);
        self.progress.run = None;
        self.progress.by = None;
        self.progress.moves.clear();
        self.progress.held = 0;
        // An automatic round waits a whole quiet window before it looks again.
        self.quiet_since = Some(now);
    }

    /// A run started for `plan`.
    pub fn started(&mut self, run: u64, plan: &RebalancePlan, by: Actor, request: Option<u64>) {
        if request.is_some() {
            self.progress.request = request;
        }
        self.stopped.clear();
        self.progress.running = true;
        self.progress.run = Some(run);
        self.progress.by = Some(by.as_str().to_string());
        self.progress.held = plan.held.len();
        self.progress.message = None;
        self.progress.moves = plan
            .moves
            .iter()
            .map(|m| MoveProgress {
                service: m.service.clone(),
                slot: m.slot,
                from: m.from.to_string(),
                to: m.to.to_string(),
                mode: m.mode.as_str().to_string(),
                bytes: m.bytes,
                wave: m.wave,
                state: "waiting".into(),
                downtime_ms: None,
            })
            .collect();
    }

    /// A rescheduling run's command came back done: a stop starts the slot's downtime, a
    /// start ends its move.
    pub fn command_done(&mut self, command: &ExecCommand, now: u64) -> Option<Ended> {
        match command {
            ExecCommand::StopSlot { service, slot, .. } => {
                self.stopped.insert((service.clone(), *slot), now);
                None
            }
            ExecCommand::StartSlot {
                service,
                slot,
                node,
                ..
            } => {
                let m = self
                    .progress
                    .moves
                    .iter_mut()
                    .find(|m| &m.service == service && m.slot == *slot && !m.ended())?;
                let down = self
                    .stopped
                    .remove(&(service.clone(), *slot))
                    .map(|t| now.saturating_sub(t));
                m.downtime_ms = down;
                let moved = m.to == node.0;
                m.state = if moved { "moved" } else { "rolled-back" }.into();
                Some(Ended {
                    result: if moved { "moved" } else { "rolled-back" },
                    bytes: if moved { m.bytes } else { 0 },
                    downtime_ms: down,
                })
            }
            _ => None,
        }
    }

    /// Each move's step from the executor's run; once the run is over, a move that never
    /// ended has failed before its stop (the slot kept serving). Returns the moves that ended
    /// so.
    pub fn refresh(&mut self, now: u64, exec: &Executor) -> Vec<Ended> {
        if !self.progress.running {
            return Vec::new();
        }
        let Some(run) = self.progress.run else {
            return Vec::new();
        };
        match exec.state().runs.get(&run) {
            Some(r) if r.kind == RunKind::Rebalance => {
                for l in &r.lanes {
                    let Some((service, slot)) = &l.slot else {
                        continue;
                    };
                    let Some(m) = self
                        .progress
                        .moves
                        .iter_mut()
                        .find(|m| &m.service == service && m.slot == *slot && !m.ended())
                    else {
                        continue;
                    };
                    if l.wave > r.wave {
                        continue;
                    }
                    if let Some(step) = l.current() {
                        m.state = step_name(step).into();
                    }
                }
                Vec::new()
            }
            _ => {
                self.progress.running = false;
                self.quiet_since = Some(now);
                let mut out = Vec::new();
                for m in self.progress.moves.iter_mut().filter(|m| !m.ended()) {
                    m.state = "failed".into();
                    out.push(Ended {
                        result: "failed",
                        bytes: 0,
                        downtime_ms: None,
                    });
                }
                let count = |s: &str| self.progress.moves.iter().filter(|m| m.state == s).count();
                self.progress.message = Some(format!(
                    "{} moved, {} rolled back, {} failed",
                    count("moved"),
                    count("rolled-back"),
                    count("failed")
                ));
                out
            }
        }
    }
}

fn step_name(step: &LaneStep) -> &'static str {
    match step {
        LaneStep::PreCopy => "copying",
        LaneStep::Engine(a) => match a {
            Action::ChooseTarget { .. } => "choosing",
            Action::StopTask { .. } => "stopping",
            Action::Fence { .. } => "fencing",
            Action::MoveDataset { .. }
            | Action::PromoteStandby { .. }
            | Action::RecreateDataset { .. } => "moving",
            Action::StartTask { .. } => "starting",
            _ => "waiting",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_scheduler::executor::Config;
    use berth_scheduler::model::{Node, NodeId};

    fn cluster(n: usize) -> Cluster {
        Cluster {
            nodes: (0..n)
                .map(|i| Node {
                    id: NodeId::new(format!("n{i}")),
                    ..Node::default()
                })
                .collect(),
            ..Cluster::default()
        }
    }

    #[test]
    fn the_automatic_mode_waits_for_a_quiet_window_and_an_operator_does_not() {
        let r = Rebalancer::new(None);
        assert_eq!(r.due(0, None), None, "off by default");
        let req = Request {
            max_moves: Some(1),
            ..Request::default()
        };
        let (b, by) = r.due(0, Some(&req)).unwrap();
        assert_eq!((b.max_moves, by), (Some(1), Actor::Operator));

        let budget = Budget {
            max_moves: Some(3),
            ..Budget::default()
        };
        let mut r = Rebalancer::new(Some(Auto {
            budget: budget.clone(),
            quiet: Duration::from_secs(60),
        }));
        r.saw(0, &cluster(3), false);
        assert_eq!(r.due(59_999, None), None);
        // A node joins: the window starts again.
        r.saw(30_000, &cluster(4), false);
        assert_eq!(r.due(60_000, None), None);
        r.saw(60_000, &cluster(4), false);
        assert_eq!(r.due(90_000, None), Some((budget.clone(), Actor::Berth)));
        // A failover under way starts it again too.
        r.saw(90_000, &cluster(4), true);
        assert_eq!(r.due(120_000, None), None);
        // A round that moved nothing waits a whole window before looking again.
        r.nothing(150_000, None, "balanced".into());
        assert_eq!(r.due(200_000, None), None);
        assert_eq!(r.due(210_000, None), Some((budget, Actor::Berth)));
    }

    #[test]
    fn a_move_ends_moved_with_its_downtime_or_rolled_back_or_failed() {
        let mut r = Rebalancer::new(None);
        let mv = |slot: u64| berth_scheduler::rebalance::Move {
            service: "db".into(),
            slot,
            dataset: format!("db-{slot}"),
            from: NodeId::new("a"),
            to: NodeId::new("b"),
            mode: berth_scheduler::rebalance::MoveMode::PreCopy,
            bytes: 100,
            wave: 0,
            reason: String::new(),
            before: Default::default(),
            after: Default::default(),
        };
        let plan = RebalancePlan {
            moves: vec![mv(1), mv(2), mv(3)],
            ..RebalancePlan::default()
        };
        r.started(7, &plan, Actor::Operator, Some(1));
        assert!(r.progress.running);
        assert!(
            r.due(0, Some(&Request::default())).is_none(),
            "one run at a time"
        );
        let stop = |slot| ExecCommand::StopSlot {
            service: "db".into(),
            slot,
            node: NodeId::new("a"),
            wait_ms: None,
        };
        let start = |slot, node: &str| ExecCommand::StartSlot {
            service: "db".into(),
            slot,
            node: NodeId::new(node),
            volume: None,
            epoch: None,
        };
        assert_eq!(r.command_done(&stop(1), 1_000), None);
        assert_eq!(
            r.command_done(&start(1, "b"), 3_500),
            Some(Ended {
                result: "moved",
                bytes: 100,
                downtime_ms: Some(2_500)
            })
        );
        r.command_done(&stop(2), 4_000);
        assert_eq!(
            r.command_done(&start(2, "a"), 4_200).unwrap().result,
            "rolled-back"
        );
        // The run is gone from the executor: slot 3 never got to its stop.
        let ended = r.refresh(5_000, &Executor::new(Config::default()));
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].result, "failed");
        assert!(!r.progress.running);
        assert_eq!(
            r.progress.message.as_deref(),
            Some("1 moved, 1 rolled back, 1 failed")
        );
        assert_eq!(r.progress.request, Some(1));
    }
}
