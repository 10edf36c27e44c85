//! A plan run: the lanes of one [`FailoverPlan`] carried out wave by wave. Each lane's current
//! step is either a [`Command`] handed to the backend or a timer (a `recreate` grace, the
//! modelled time of a target choice, a step that only reports); its outcome advances the lane
//! or drops it. A wave starts when every lane of the previous one has ended.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::failover::{Action, Event, FailoverPlan, Step, plan_failover};
use crate::model::{Cluster, NodeId};

use super::command::{AssignMode, Command, CommandId, Outcome, TimerId};
use super::history::{Actor, FailoverRecord, RunEnd};
use super::lane::{self, Lane, LaneStep, Scope};
use super::{Executor, InFlight, Notice, Ready, Timer};

/// What a run was launched for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunKind {
    /// A failover plan for an event.
    Plan(Event),
    /// A holder fenced by a plan that never moved its data is let back in at the new epoch.
    Readmit,
    /// A rescheduling plan's moves of running slots ([`Executor::run_moves`]).
    Rebalance,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRun {
    pub kind: RunKind,
    pub lanes: Vec<Lane>,
    pub wave: u32,
    pub last_wave: u32,
    /// Lanes of the current wave not ended yet.
    pub open: u32,
    pub drain: bool,
    /// The node a node-down plan replaces: a lane dropped for lack of a target re-plans it.
    pub lost: Option<NodeId>,
    /// Slots of each service stopped by this run and not started yet.
    pub stopped: BTreeMap<String, u32>,
}

impl Executor {
    /// Asks the engine for the event's plan and starts it. `stateful_only`: an operator
    /// following the plan by hand, while Swarm replaces the stateless tasks.
    pub fn run_plan(
        &mut self,
        now: u64,
        cluster: &Cluster,
        event: Event,
        stateful_only: bool,
        by: Actor,
    ) {
        self.saw(now);
        self.notices.push(Notice::Planned {
            event: event.clone(),
        });
        match plan_failover(cluster, &event) {
            Ok(plan) => self.launch(now, cluster, plan, stateful_only, by),
            Err(e) => self.notices.push(Notice::PlanFailed {
                event,
                error: e.to_string(),
            }),
        }
    }

    fn launch(
        &mut self,
        now: u64,
        cluster: &Cluster,
        plan: FailoverPlan,
        stateful_only: bool,
        by: Actor,
    ) {
        let scope = Scope {
            stateful_only,
            incremental: self.state.config.incremental,
        };
        let (lanes, skipped) = lane::build(cluster, &plan.steps, scope, &self.state.busy);
        if lanes.is_empty() {
            if skipped == 0 {
                self.notices.push(Notice::Nothing {
                    event: plan.event.clone(),
                    by,
                });
            }
            return;
        }
        for l in &lanes {
            if let Some(s) = &l.slot {
                self.state.busy.insert(s.clone());
            }
        }
        let steps = lanes.iter().map(|l| l.steps.len()).sum::<usize>();
        let run = self.state.next_run;
        self.state.next_run += 1;
        self.notices.push(Notice::Launched {
            run,
            event: plan.event.clone(),
            by,
            steps,
        });
        let lost = match &plan.event {
            Event::NodeDown(n) => Some(n.clone()),
            _ => None,
        };
        self.state.history.push(FailoverRecord {
            run,
            by,
            event: Some(plan.event.clone()),
            steps: plan.steps.clone(),
            started_ms: now,
            ended_ms: None,
            end: None,
            rebalance: false,
        });
        self.trim_history();
        self.insert_run(
            now,
            run,
            PlanRun {
                drain: matches!(plan.event, Event::NodeDrained(_)),
                kind: RunKind::Plan(plan.event),
                wave: lanes.iter().map(|l| l.wave).min().unwrap_or(0),
                last_wave: lanes.iter().map(|l| l.wave).max().unwrap_or(0),
                lanes,
                open: 0,
                lost,
                stopped: BTreeMap::new(),
            },
        );
    }

    /// Starts a rescheduling plan's moves (`rebalance::move_steps`): each slot's lane
    /// pre-copies while the slot serves (with `incremental`), stops it, fences its old node,
    /// hands the data to the target (the copy catches up the last delta) and starts it there —
    /// the commands of a drain. A lane that fails once its slot has stopped puts the slot back
    /// where it ran instead ([`Notice::RolledBack`]). Slots another run is working on are left
    /// out. Returns the run, if any lane started.
    pub fn run_moves(
        &mut self,
        now: u64,
        cluster: &Cluster,
        steps: &[Step],
        by: Actor,
    ) -> Option<u64> {
        self.saw(now);
        let scope = Scope {
            stateful_only: true,
            incremental: self.state.config.incremental,
        };
        let (lanes, _) = lane::build(cluster, steps, scope, &self.state.busy);
        if lanes.is_empty() {
            return None;
        }
        for l in &lanes {
            if let Some(s) = &l.slot {
                self.state.busy.insert(s.clone());
            }
        }
        let run = self.state.next_run;
        self.state.next_run += 1;
        self.state.history.push(FailoverRecord {
            run,
            by,
            event: None,
            steps: steps.to_vec(),
            started_ms: now,
            ended_ms: None,
            end: None,
            rebalance: true,
        });
        self.trim_history();
        self.insert_run(
            now,
            run,
            PlanRun {
                kind: RunKind::Rebalance,
                wave: lanes.iter().map(|l| l.wave).min().unwrap_or(0),
                last_wave: lanes.iter().map(|l| l.wave).max().unwrap_or(0),
                lanes,
                open: 0,
                // Counted against `berth.max-unavailable` like a drain.
                drain: true,
                lost: None,
                stopped: BTreeMap::new(),
            },
        );
        Some(run)
    }

    /// Whether a rescheduling run is under way.
    pub fn rebalancing(&self) -> bool {
        self.state
            .runs
            .values()
            .any(|r| r.kind == RunKind::Rebalance)
    }

    /// A rescheduling lane failed at its current step. Once the slot has stopped, it must not
    /// stay down: its remaining steps are replaced by a restart where it ran — re-assigned
    /// there at the fence's epoch first when the fence took effect (the target never got the
    /// data, so there is still one writer). Returns false when there is nothing to put back.
    fn roll_back(&mut self, run: u64, lane: u32, reason: &str) -> bool {
        let r = self.state.runs.get_mut(&run).expect("run");
        if r.kind != RunKind::Rebalance {
            return false;
        }
        let l = &mut r.lanes[lane as usize];
        if l.rolled_back {
            return false;
        }
        let Some((stop, from)) = l.steps.iter().enumerate().find_map(|(i, s)| match s {
            LaneStep::Engine(Action::StopTask { node }) => Some((i, node.clone())),
            _ => None,
        }) else {
            return false;
        };
        if l.i < stop {
            // Nothing stopped yet: the slot still serves where it was.
            return false;
        }
        let fence = l.steps.iter().enumerate().find_map(|(i, s)| match s {
            LaneStep::Engine(Action::Fence { dataset, epoch, .. }) => {
                Some((i, dataset.clone(), *epoch))
            }
            _ => None,
        });
        let backend = l.steps.iter().find_map(|s| match s {
            LaneStep::Engine(Action::MoveDataset { backend, .. }) => Some(*backend),
            _ => None,
        });
        let mut back = Vec::new();
        match fence {
            Some((i, dataset, epoch)) if i < l.i => {
                back.push(LaneStep::Engine(Action::MoveDataset {
                    dataset,
                    from: from.clone(),
                    to: from.clone(),
                    epoch,
                    backend: backend.unwrap_or_default(),
                    copy: false,
                }));
                l.epoch = Some(epoch);
            }
            Some((_, _, epoch)) => l.epoch = Some(epoch.saturating_sub(1)),
            None => {}
        }
        back.push(LaneStep::Engine(Action::StartTask { node: from.clone() }));
        l.steps.truncate(l.i + 1);
        l.steps.extend(back);
        l.rolled_back = true;
        l.dropped = true;
        if let Some((service, slot)) = l.slot.clone() {
            self.notices.push(Notice::RolledBack {
                service,
                slot,
                node: from,
                reason: reason.to_string(),
            });
        }
        true
    }

    pub(super) fn insert_run(&mut self, now: u64, run: u64, r: PlanRun) {
        self.state.runs.insert(run, r);
        self.start_wave(now, run);
    }

    fn start_wave(&mut self, now: u64, run: u64) {
        loop {
            let Some(r) = self.state.runs.get_mut(&run) else {
                return;
            };
            if r.wave > r.last_wave {
                self.end_run(now, run, false);
                return;
            }
            let wave = r.wave;
            let ids: Vec<u32> = r
                .lanes
                .iter()
                .enumerate()
                .filter(|(_, l)| l.wave == wave && !l.done)
                .map(|(i, _)| i as u32)
                .collect();
            if ids.is_empty() {
                r.wave += 1;
                continue;
            }
            r.open = ids.len() as u32;
            for lane in ids {
                self.begin_step(now, run, lane);
            }
            return;
        }
    }

    /// Issues the lane's current step: a command for the backend, or a timer.
    fn begin_step(&mut self, now: u64, run: u64, lane: u32) {
        let decide = self.state.config.decide_ms;
        let r = &self.state.runs[&run];
        let l = &r.lanes[lane as usize];
        let Some(step) = l.current() else { return };
        let slot = l.slot.clone();
        let volume = || l.volume.clone().unwrap_or_default();
        let command = match step {
            LaneStep::PreCopy => {
                let (from, to) = l
                    .move_ends()
                    .expect("a pre-copy is only planned with a move");
                Some(Command::PreCopy {
                    volume: volume(),
                    from: from.clone(),
                    to: to.clone(),
                })
            }
            LaneStep::Engine(a) => match a {
                Action::Fence {
                    dataset,
                    node,
                    epoch,
                } => Some(Command::Fence {
                    volume: dataset.clone(),
                    node: node.clone(),
                    expect_epoch: epoch.saturating_sub(1),
                }),
                Action::StopTask { node } => {
                    // A lost node's task is waited for at most a lease; a live node's until
                    // it has stopped.
                    let lost = self.state.nodes.get(node).is_some_and(|s| s.dead);
                    let wait_ms = lost.then_some(self.state.config.stop_wait_ms);
                    slot.clone().map(|(service, slot)| Command::StopSlot {
                        service,
                        slot,
                        node: node.clone(),
                        wait_ms,
                    })
                }
                Action::MoveDataset {
                    dataset,
                    from,
                    to,
                    epoch,
                    copy,
                    ..
                } => Some(Command::Assign {
                    volume: dataset.clone(),
                    primary: to.clone(),
                    epoch: *epoch,
                    mode: AssignMode::Move {
                        from: from.clone(),
                        copy: *copy,
                    },
                }),
                Action::PromoteStandby {
                    dataset,
                    from,
                    to,
                    epoch,
                } => Some(Command::Assign {
                    volume: dataset.clone(),
                    primary: to.clone(),
                    epoch: *epoch,
                    mode: AssignMode::Promote { from: from.clone() },
                }),
                Action::RecreateDataset {
                    dataset,
                    node,
                    epoch,
                } => Some(Command::Assign {
                    volume: dataset.clone(),
                    primary: node.clone(),
                    epoch: *epoch,
                    mode: AssignMode::Recreate,
                }),
                Action::StartTask { node } => {
                    slot.clone().map(|(service, slot)| Command::StartSlot {
                        service,
                        slot,
                        node: node.clone(),
                        volume: l.volume.clone(),
                        epoch: l.epoch,
                    })
                }
                Action::RevokeStale {
                    dataset,
                    node,
                    epoch,
                } => Some(Command::DropStale {
                    volume: dataset.clone(),
                    node: node.clone(),
                    epoch: *epoch,
                }),
                Action::Unfence { node } => Some(Command::ClearFenceLabel { node: node.clone() }),
                Action::WaitGrace { .. }
                | Action::ChooseTarget { .. }
                | Action::WaitForOperator { .. }
                | Action::WaitForNode { .. }
                | Action::Pending { .. } => None,
            },
        };
        match command {
            Some(command) => {
                let id = self.issue(command, Some((run, lane)));
                self.state.ready.push(Ready::Command(id));
            }
            None => {
                let at = match step {
                    // A node already back (it returned while the lane was still fencing) is
                    // not waited for: the grace ends at once, and its return is planned.
                    LaneStep::Engine(Action::WaitGrace { .. }) if self.lost_is_back(run) => now,
                    LaneStep::Engine(Action::WaitGrace { seconds }) => {
                        now + seconds.saturating_mul(1_000)
                    }
                    LaneStep::Engine(Action::ChooseTarget { .. }) => now + decide,
                    // A stop/start without a slot has nothing to act on; reports end at once.
                    _ => now,
                };
                let id = TimerId(self.state.next_id);
                self.state.next_id += 1;
                self.state.timers.insert(id, Timer { at, run, lane });
                self.state.ready.push(Ready::Timer(id, at));
            }
        }
    }

    pub(super) fn issue(&mut self, command: Command, lane: Option<(u64, u32)>) -> CommandId {
        let id = CommandId(self.state.next_id);
        self.state.next_id += 1;
        self.state.inflight.insert(
            id,
            InFlight {
                command,
                lane,
                issued: false,
            },
        );
        id
    }

    /// A lane's command came back.
    pub(super) fn lane_outcome(
        &mut self,
        now: u64,
        run: u64,
        lane: u32,
        command: &Command,
        outcome: Outcome,
    ) -> bool {
        if !outcome.is_done() {
            let reason = match &outcome {
                Outcome::Refused { reason, .. } | Outcome::Failed { reason } => reason.clone(),
                Outcome::Done => String::new(),
            };
            if self.roll_back(run, lane, &reason) {
                self.advance(now, run, lane, true);
                return false;
            }
            let r = &self.state.runs[&run];
            let l = &r.lanes[lane as usize];
            self.notices.push(Notice::LaneDropped {
                slot: l.slot.clone(),
                reason,
            });
            // The world moved under the plan: ask the engine again for the lost node rather
            // than replaying the rest of this one.
            let lost = r.lost.clone();
            self.state.runs.get_mut(&run).expect("run").lanes[lane as usize].dropped = true;
            self.finish_lane(now, run, lane);
            if let Some(x) = lost {
                self.state.retry.insert(x);
                self.state.retry_due = true;
                return true;
            }
            return false;
        }
        match command {
            Command::Fence { volume, node, .. } => {
                self.state.stale.insert(volume.clone(), node.clone());
            }
            Command::StartSlot {
                volume: Some(v), ..
            } => {
                self.state.stale.remove(v);
            }
            Command::StopSlot { service, .. } => {
                let r = self.state.runs.get_mut(&run).expect("run");
                if r.drain {
                    let l = &mut r.lanes[lane as usize];
                    l.stopped = true;
                    let budget = l.budget;
                    let n = r.stopped.entry(service.clone()).or_default();
                    *n += 1;
                    if *n > budget {
                        self.notices.push(Notice::DrainBudget {
                            service: service.clone(),
                            stopped: *n,
                            budget,
                        });
                    }
                }
            }
            _ => {}
        }
        let ends = matches!(command, Command::StartSlot { .. });
        self.advance(now, run, lane, !ends);
        false
    }

    /// A lane's timer ran out.
    pub(super) fn lane_timer(&mut self, now: u64, run: u64, lane: u32) {
        let l = &self.state.runs[&run].lanes[lane as usize];
        let keep_going = match l.current() {
            Some(LaneStep::Engine(Action::WaitGrace { .. })) => {
                // Still waiting means the node did not come back (a return drops the lane)...
                if self.lost_is_back(run) {
                    // ...unless it came back before the wait began, when its node-back plan
                    // found the slot busy with this lane: the return is planned again, now
                    // that the slot is free (its member stays, as within the grace).
                    if let Some(n) = self.state.runs[&run].lost.clone() {
                        self.notices.push(Notice::GraceKept { node: n.clone() });
                        self.state.retry.insert(n);
                        self.state.retry_due = true;
                    }
                    false
                } else {
                    true
                }
            }
            Some(LaneStep::Engine(Action::ChooseTarget { .. })) => true,
            Some(LaneStep::Engine(Action::Pending { .. })) if l.slot.is_some() => {
                // No node could take the slot when the plan was made. Transient more often
                // than not (Swarm's new leader reports every node unknown until it hears from
                // them again): the lost node is planned again once a node becomes schedulable.
                if let Some(n) = self.state.runs[&run].lost.clone() {
                    self.state.waiting.insert(n);
                }
                if let Some((service, slot)) = l.slot.clone()
                    && let Some(LaneStep::Engine(Action::Pending { reason })) = l.current()
                {
                    self.notices.push(Notice::Waits {
                        service,
                        slot,
                        reason: reason.clone(),
                    });
                }
                false
            }
            Some(LaneStep::Engine(
                Action::WaitForOperator { reason }
                | Action::WaitForNode { reason, .. }
                | Action::Pending { reason },
            )) => {
                if let Some((service, slot)) = l.slot.clone() {
                    self.notices.push(Notice::Waits {
                        service,
                        slot,
                        reason: reason.clone(),
                    });
                }
                false
            }
            _ => false,
        };
        self.advance(now, run, lane, keep_going);
    }

    /// Whether the node a node-down run replaces is up again (not down for the managers nor
    /// declared dead).
    fn lost_is_back(&self, run: u64) -> bool {
        self.state.runs[&run]
            .lost
            .as_ref()
            .is_some_and(|n| self.state.nodes.get(n).is_some_and(|s| !s.down))
    }

    fn advance(&mut self, now: u64, run: u64, lane: u32, keep_going: bool) {
        let l = &mut self.state.runs.get_mut(&run).expect("run").lanes[lane as usize];
        l.i += 1;
        if keep_going && l.i < l.steps.len() {
            self.begin_step(now, run, lane);
        } else {
            self.finish_lane(now, run, lane);
        }
    }

    pub(super) fn finish_lane(&mut self, now: u64, run: u64, lane: u32) {
        let r = self.state.runs.get_mut(&run).expect("run");
        let l = &mut r.lanes[lane as usize];
        if l.done {
            return;
        }
        l.done = true;
        let slot = l.slot.clone();
        let stopped = std::mem::replace(&mut l.stopped, false);
        if let Some(s) = &slot {
            if stopped && let Some(n) = r.stopped.get_mut(&s.0) {
                *n = n.saturating_sub(1);
            }
            self.state.busy.remove(s);
        }
        // Whatever the lane still waited on is void.
        self.state
            .timers
            .retain(|_, t| !(t.run == run && t.lane == lane));
        let r = self.state.runs.get_mut(&run).expect("run");
        r.open = r.open.saturating_sub(1);
        if r.open == 0 {
            r.wave += 1;
            self.start_wave(now, run);
        }
    }

    fn end_run(&mut self, now: u64, run: u64, abandoned: bool) {
        let Some(r) = self.state.runs.remove(&run) else {
            return;
        };
        let dropped = r.lanes.iter().filter(|l| l.dropped).count() as u32;
        let end = if abandoned {
            RunEnd::Abandoned
        } else if dropped > 0 {
            RunEnd::Dropped { lanes: dropped }
        } else {
            RunEnd::Completed
        };
        if let Some(h) = self.state.history.iter_mut().rev().find(|h| h.run == run) {
            h.ended_ms = Some(now);
            h.end = Some(end);
        }
        self.trim_history();
    }

    /// Drops the lanes still waiting out a `recreate` grace for `node`: it is back, its
    /// member stays.
    pub(super) fn abort_grace_for(&mut self, now: u64, node: &NodeId) {
        let mut hit = Vec::new();
        for (&run, r) in &self.state.runs {
            if r.lost.as_ref() != Some(node) {
                continue;
            }
            for (i, l) in r.lanes.iter().enumerate() {
                if !l.done
                    && matches!(
                        l.current(),
                        Some(LaneStep::Engine(Action::WaitGrace { .. }))
                    )
                {
                    hit.push((run, i as u32));
                }
            }
        }
        for (run, lane) in hit {
            self.notices.push(Notice::GraceKept { node: node.clone() });
            self.finish_lane(now, run, lane);
        }
    }

    /// Every run is dropped where it stands (the controller restarted without its state, or
    /// chose to forget it): commands still out are ignored when they come back, and the next
    /// observation re-plans from the world as it is.
    pub fn abandon_all(&mut self, now: u64) {
        self.saw(now);
        let runs: Vec<u64> = self.state.runs.keys().copied().collect();
        for run in runs {
            self.end_run(now, run, true);
        }
        self.state.inflight.retain(|_, f| f.lane.is_none());
        self.state.timers.clear();
        self.state.ready.retain(|r| match r {
            Ready::Command(id) => self.state.inflight.contains_key(id),
            Ready::Timer(..) => false,
        });
        self.state.busy.clear();
    }
}
