//! The failover executor: carries out the engine's failover plans against a backend it never
//! touches itself. Sans-IO and deterministic, like the rest of the engine: the caller brings
//! the time and what it observed, and performs the commands; the simulator and `berth run`
//! drive the same executor, one against its model, the other against Docker and the volume
//! control service.
//!
//! ```text
//! observe(now, Observation) ──▶ plan runs (failover::plan_failover) ──▶ next(now) ──▶ [(CommandId, Command)]
//!        ▲                                                                                 │ backend
//!        └──────────── complete(id, Outcome, now) ◀─────────────────────────────────────────┘
//! ```
//!
//! - [`Executor::observe`] is level-triggered ([`reconcile`]): a node newly dead is fenced and
//!   planned for, a node back is let in again, a drained node emptied, a plan that lost a lane
//!   re-planned; after a pause ([`Executor::set_active`]) it catches up from the world as it is.
//!   [`Executor::run_plan`] runs one event's plan directly (an operator acting by hand).
//! - [`Executor::next`] hands out the commands ready to run (and fires due timers), marking
//!   them in flight; [`Executor::complete`] takes an outcome back. A refused or failed command
//!   drops its lane, never half-applies it; the lost node is planned again at the next
//!   observation. [`Executor::wake_at`] says when the next timer is due (a `recreate` grace).
//! - Every [`Command`] is one idempotent backend operation carrying the epoch it expects, so
//!   [`ExecutorState`] (serde) can be persisted after each change and resumed with
//!   [`Executor::from_state`] after a crash: in-flight commands are handed out again.
//! - [`Executor::busy_slots`]: slots a run is working on; a controller leaves their services
//!   alone meanwhile. [`Executor::history`]: one [`FailoverRecord`] per run.
//! - A node newly declared dead gets its `berth.fenced` label first; its node-down plan is
//!   made at the observation after the label command came back
//!   ([`Executor::wants_observation`]), so the plan sees the cluster with the label.
//! - A node seen for the first time counts as alive, active and never reconnected: a node
//!   already dead or drained when the controller starts is acted on.
//! - What is not state but worth a log line comes out of [`Executor::take_notices`].
//!
//! The loop around it is [`Driver`] ([`driver`]), the one `berth run` and the simulator both
//! use: persist the state before any command it records starts, resume from a persisted
//! state (its timers on a clock that goes on from there), observe when the executor waits
//! for it, catch up explicitly. In short: on every Swarm change or detector verdict
//! `observe`; `poll(now)`, persist the batch's state, perform each command (each may run in
//! parallel; none touches a slot another one holds), `complete` it, observe again when
//! `complete` or the batch says so; sleep until the next change or `wake_at`. Without a Swarm
//! leader, `set_active(false)`.
//!
//! Runs ([`run`]) follow the plan's waves: lanes (one per slot, [`lane`]) of a wave run side by
//! side, a wave starts when the previous one ended; a drain never has more slots of a service
//! stopped at once than `berth.max-unavailable`. With `incremental`, a copying move pre-copies
//! the bulk while the old task still serves.

pub mod command;
pub mod driver;
pub mod history;
pub mod lane;
#[cfg(test)]
mod moves_tests;
#[cfg(test)]
mod props;
pub mod reconcile;
pub mod run;
pub mod standby;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use command::{AssignMode, Command, CommandId, Outcome, TimerId};
pub use driver::{Batch, Driver, Job, Ticket, Timers};
pub use history::{Actor, FailoverRecord, RunEnd};
pub use reconcile::{FailedTask, NodeHealth, Observation, Seen};
pub use run::{PlanRun, RunKind};
pub use standby::{StandbyFacts, pick_standby};

use crate::failover::Event;
use crate::model::NodeId;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Pre-copy a copying move's bulk while the slot still runs (only the delta moves after
    /// the stop).
    pub incremental: bool,
    /// Time a target choice takes. The controller's plan is made already (0); the simulator
    /// models the engine's latency.
    pub decide_ms: u64,
    /// Plan from observations. Off for an operator who only runs plans by hand
    /// ([`Executor::run_plan`]); observations then only keep what is known of the nodes.
    pub reconcile: bool,
    /// Fail over stateful slots only, as a controller beside Swarm does: Swarm reschedules
    /// stateless tasks itself (the simulator's Berth, which is the whole controller, does both).
    #[serde(default)]
    pub stateful_only: bool,
    /// Keep at most this many ended runs in the history (a long-lived controller persists its
    /// state after every change); `None` keeps all (a simulation's report reads them all).
    #[serde(default)]
    pub history_limit: Option<usize>,
    /// How long a node-down plan waits to see the lost node's old task stop before it moves
    /// the data and starts the slot elsewhere ([`Command::StopSlot`]'s `wait_ms`): at most one
    /// node lease (the control service's `--lease`, 5 s by default), by then the agent, if it
    /// lives, has stopped the task itself.
    #[serde(default = "default_stop_wait_ms")]
    pub stop_wait_ms: u64,
}

fn default_stop_wait_ms() -> u64 {
    5_000
}

impl Default for Config {
    fn default() -> Self {
        Config {
            incremental: true,
            decide_ms: 0,
            reconcile: true,
            stateful_only: false,
            history_limit: None,
            stop_wait_ms: default_stop_wait_ms(),
        }
    }
}

/// A command handed out (or about to be).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlight {
    pub command: Command,
    /// The run and lane it belongs to; `None` for a node label.
    pub lane: Option<(u64, u32)>,
    /// Handed out by `next` (and not completed).
    pub issued: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    pub at: u64,
    pub run: u64,
    pub lane: u32,
}

/// Work in the order it became ready.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ready {
    Command(CommandId),
    Timer(TimerId, u64),
}

/// Everything the executor knows; persist it after every change, resume from it after a
/// crash.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutorState {
    pub config: Config,
    pub next_id: u64,
    pub next_run: u64,
    pub runs: BTreeMap<u64, PlanRun>,
    pub ready: Vec<Ready>,
    pub inflight: BTreeMap<CommandId, InFlight>,
    pub timers: BTreeMap<TimerId, Timer>,
    pub busy: BTreeSet<(String, u64)>,
    pub nodes: BTreeMap<NodeId, Seen>,
    /// Lost nodes whose plan had a lane dropped: re-planned at the next observation.
    pub retry: BTreeSet<NodeId>,
    pub retry_due: bool,
    /// Lost nodes whose plan found no target for a slot (every node not Ready, as while
    /// Swarm's managers elect a leader and mark every node unknown): planned again as soon as
    /// a node becomes schedulable, rather than left pending until something else happens.
    #[serde(default)]
    pub waiting: BTreeSet<NodeId>,
    /// Nodes declared dead whose fence label is being set (the command awaited, `None`
    /// once it came back): their plan is made at the next observation.
    pub fencing: BTreeMap<NodeId, Option<CommandId>>,
    /// Volumes fenced away from a node (the value) and not started anywhere since.
    pub stale: BTreeMap<String, NodeId>,
    pub active: bool,
    pub catch_up: bool,
    pub history: Vec<FailoverRecord>,
    /// The latest time the executor was given (its own time base, which [`Driver`] carries
    /// across a restart); 0 in a state written before it was kept.
    #[serde(default)]
    pub clock_ms: u64,
}

impl ExecutorState {
    /// The latest time this state knows of: the time it was last given, or, in a state
    /// written before that was kept, its latest run start or end.
    pub fn last_time(&self) -> u64 {
        self.history
            .iter()
            .flat_map(|h| [Some(h.started_ms), h.ended_ms])
            .flatten()
            .fold(self.clock_ms, u64::max)
    }
}

/// What happened inside the executor, for a log or a trace; not part of its state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// The engine was asked for a plan.
    Planned {
        event: Event,
    },
    PlanFailed {
        event: Event,
        error: String,
    },
    /// The plan had no step for a slot not already being worked on.
    Nothing {
        event: Event,
        by: Actor,
    },
    Launched {
        run: u64,
        event: Event,
        by: Actor,
        steps: usize,
    },
    /// A slot waits (for an operator, its node, room).
    Waits {
        service: String,
        slot: u64,
        reason: String,
    },
    /// A node came back within a `recreate` grace period: its member stays.
    GraceKept {
        node: NodeId,
    },
    Readmitted {
        service: String,
        slot: u64,
        node: NodeId,
    },
    LaneDropped {
        slot: Option<(String, u64)>,
        reason: String,
    },
    /// A rescheduling move failed after its slot stopped: the slot is started again on
    /// `node`, where it ran.
    RolledBack {
        service: String,
        slot: u64,
        node: NodeId,
        reason: String,
    },
    /// More slots of a service stopped at once than its drain budget.
    DrainBudget {
        service: String,
        stopped: u32,
        budget: u32,
    },
}

/// Work handed out in order: a command to perform, or a timer to fire at `at`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Work {
    Command(CommandId, Command),
    Timer(TimerId, u64),
}

#[derive(Clone, Debug, Default)]
pub struct Executor {
    state: ExecutorState,
    notices: Vec<Notice>,
}

impl Executor {
    pub fn new(config: Config) -> Self {
        Executor {
            state: ExecutorState {
                config,
                active: true,
                catch_up: false,
                ..ExecutorState::default()
            },
            notices: Vec::new(),
        }
    }

    /// Resumes from persisted state. Commands that were handed out are handed out again:
    /// each is idempotent, so one that took effect before the crash is a no-op.
    pub fn from_state(mut state: ExecutorState) -> Self {
        let mut again: Vec<Ready> = Vec::new();
        for (id, f) in &mut state.inflight {
            if f.issued {
                f.issued = false;
                again.push(Ready::Command(*id));
            }
        }
        again.append(&mut state.ready);
        state.ready = again;
        Executor {
            state,
            notices: Vec::new(),
        }
    }

    pub fn state(&self) -> &ExecutorState {
        &self.state
    }

    /// Keeps the latest time given (the state's own clock, see [`ExecutorState::clock_ms`]).
    fn saw(&mut self, now: u64) {
        self.state.clock_ms = self.state.clock_ms.max(now);
    }

    /// Fires the timers due at `now`, then hands out every command ready to run, marked in
    /// flight.
    pub fn next(&mut self, now: u64) -> Vec<(CommandId, Command)> {
        self.saw(now);
        loop {
            let due = self
                .state
                .timers
                .iter()
                .filter(|(_, t)| t.at <= now)
                .min_by_key(|(id, t)| (t.at, **id))
                .map(|(id, _)| *id);
            match due {
                Some(id) => self.fire(id, now),
                None => break,
            }
        }
        self.next_work()
            .into_iter()
            .filter_map(|w| match w {
                Work::Command(id, c) => Some((id, c)),
                Work::Timer(..) => None,
            })
            .collect()
    }

    /// Hands out, in the order it became ready, every command to run and every timer newly
    /// armed, without firing any: for a caller with its own event queue, which fires each
    /// timer with [`Executor::fire`] at its time.
    pub fn next_work(&mut self) -> Vec<Work> {
        let ready = std::mem::take(&mut self.state.ready);
        let mut out = Vec::with_capacity(ready.len());
        for r in ready {
            match r {
                Ready::Command(id) => {
                    if let Some(f) = self.state.inflight.get_mut(&id)
                        && !f.issued
                    {
                        f.issued = true;
                        out.push(Work::Command(id, f.command.clone()));
                    }
                }
                Ready::Timer(id, at) => {
                    if self.state.timers.contains_key(&id) {
                        out.push(Work::Timer(id, at));
                    }
                }
            }
        }
        out
    }

    /// Takes back work handed out but never started (the caller could not persist the state
    /// that records it): each command is handed out again, first, by the next call.
    pub fn hand_back(&mut self, work: &[Work]) {
        let mut again = Vec::with_capacity(work.len());
        for w in work {
            match w {
                Work::Command(id, _) => {
                    if let Some(f) = self.state.inflight.get_mut(id)
                        && f.issued
                    {
                        f.issued = false;
                        again.push(Ready::Command(*id));
                    }
                }
                Work::Timer(id, at) => {
                    if self.state.timers.contains_key(id) {
                        again.push(Ready::Timer(*id, *at));
                    }
                }
            }
        }
        again.append(&mut self.state.ready);
        self.state.ready = again;
    }

    /// A timer's time has come (ignored if its lane ended meanwhile).
    pub fn fire(&mut self, id: TimerId, now: u64) {
        self.saw(now);
        if let Some(t) = self.state.timers.remove(&id) {
            self.lane_timer(now, t.run, t.lane);
        }
    }

    /// The outcome of a command. Returns true when a lane was dropped for a node that is
    /// planned again at the next observation (observe soon). An unknown or already completed
    /// id is ignored (a replay after a restart, a run abandoned meanwhile).
    pub fn complete(&mut self, id: CommandId, outcome: Outcome, now: u64) -> bool {
        self.saw(now);
        let Some(f) = self.state.inflight.remove(&id) else {
            return false;
        };
        match f.lane {
            Some((run, lane)) if self.state.runs.contains_key(&run) => {
                self.lane_outcome(now, run, lane, &f.command, outcome)
            }
            Some(_) => false,
            None => {
                if let Command::SetFenceLabel { node } = &f.command {
                    self.label_settled(node);
                }
                false
            }
        }
    }

    /// Whether the command is still awaited (a caller that applies effects itself checks
    /// this first: an abandoned run's commands have none).
    pub fn is_in_flight(&self, id: CommandId) -> bool {
        self.state.inflight.contains_key(&id)
    }

    /// The run and lane a command belongs to, and what kind of run.
    pub fn origin(&self, id: CommandId) -> Option<(u64, u32, &RunKind)> {
        let (run, lane) = self.state.inflight.get(&id)?.lane?;
        Some((run, lane, &self.state.runs.get(&run)?.kind))
    }

    /// Whether an observation is due now (a node's fence label came back: its plan waits
    /// for the cluster with the label; a node is to be planned again, from a timer rather
    /// than an outcome, and no label is awaited first).
    pub fn wants_observation(&self) -> bool {
        self.state.fencing.values().any(Option::is_none)
            || (self.state.retry_due
                && self.state.fencing.is_empty()
                && self.state.active
                && self.state.config.reconcile)
    }

    /// When the earliest timer is due.
    pub fn wake_at(&self) -> Option<u64> {
        self.state.timers.values().map(|t| t.at).min()
    }

    /// Slots (service, slot) some run is working on: leave their services alone.
    pub fn busy_slots(&self) -> impl Iterator<Item = (&str, u64)> {
        self.state.busy.iter().map(|(s, n)| (s.as_str(), *n))
    }

    /// Whether a lost node's slot waits for a node to become schedulable: the caller should
    /// observe often until then (Swarm sends no event when a node turns Ready again after its
    /// managers elected a leader).
    pub fn waits_for_room(&self) -> bool {
        !self.state.waiting.is_empty()
    }

    pub fn is_busy(&self, service: &str, slot: u64) -> bool {
        self.state.busy.contains(&(service.to_string(), slot))
    }

    /// Drops the oldest ended runs beyond `Config::history_limit` (runs still going stay).
    fn trim_history(&mut self) {
        let Some(limit) = self.state.config.history_limit else {
            return;
        };
        let ended = self
            .state
            .history
            .iter()
            .filter(|h| h.ended_ms.is_some())
            .count();
        let mut excess = ended.saturating_sub(limit);
        if excess > 0 {
            self.state.history.retain(|h| {
                if excess > 0 && h.ended_ms.is_some() {
                    excess -= 1;
                    false
                } else {
                    true
                }
            });
        }
    }

    pub fn history(&self) -> &[FailoverRecord] {
        &self.state.history
    }

    /// What happened since the last call, in order.
    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }
}
