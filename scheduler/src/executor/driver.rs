//! The one loop around an [`Executor`], shared by `berth run` and the simulator. Sans-IO like
//! the executor: the caller brings its clock's time and what it observed, persists what it is
//! told to, performs the commands and hands back their outcomes. What the driver adds is what
//! every caller must get right the same way:
//!
//! - **Persist before a command starts.** [`Driver::poll`] returns a [`Batch`]: the work now
//!   ready and, when the state changed since it was last persisted, the state to persist
//!   first. The caller writes it, says so ([`Driver::persisted`]) and only then starts the
//!   work; a write that fails hands the work back ([`Driver::not_persisted`]), to be handed out
//!   again once a write succeeds, so no command ever runs that the journal does not show.
//! - **Incarnations.** [`Driver::resume`] replaces the executor with a persisted state (a
//!   restart, or a new leader reading the journal); outcomes of commands the replaced one
//!   handed out carry the old incarnation in their [`Ticket`] and are ignored.
//! - **Time that survives a restart.** The caller's clock is monotonic and starts anew with its
//!   process (or is another machine's); the executor's time goes on from the persisted state's
//!   last instant ([`ExecutorState::clock_ms`]), the downtime not counted: a timer restored
//!   from the journal waits at least what it had left, never less. Wall-clock time decides
//!   nothing.
//! - **Observe when told.** [`Batch::observe`]: the executor waits for an observation (a lost
//!   node's fence label came back, its plan waits for the cluster with it). [`Driver::complete`]
//!   returns true when a lane of a lost node was dropped: observe soon, so it is planned again.
//! - **Catch-up is explicit** ([`Driver::catch_up`]), after a resume or whenever the caller
//!   lost track of the world; pausing (no leader) is [`Driver::set_active`].
//!
//! ```text
//! observe(now, obs) / complete(ticket, outcome, now) / fire(timer, now)
//!        │
//!        ▼
//!   poll(now) ──▶ Batch { journal, work, observe }
//!        journal? ──▶ caller persists ──▶ persisted() | not_persisted(batch)
//!        work ──────▶ caller performs each command ──▶ complete(ticket, outcome, now)
//!        observe ───▶ caller observes
//! ```

use super::command::{Command, CommandId, Outcome, TimerId};
use super::reconcile::Observation;
use super::{Actor, Config, Executor, ExecutorState, FailoverRecord, Notice, Work};
use crate::failover::Event;
use crate::model::Cluster;

/// How the caller runs the executor's timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timers {
    /// Each [`Driver::poll`] fires the timers due by then; the caller sleeps until
    /// [`Driver::wake_at`] at the latest (a controller).
    Polled,
    /// The caller keeps its own event queue: each timer armed is listed in [`Batch::work`] and
    /// the caller fires it with [`Driver::fire`] at its time (the simulator).
    Queued,
}

/// Names a command handed out by one incarnation of the executor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket {
    pub incarnation: u64,
    pub id: CommandId,
}

/// One piece of work handed out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Job {
    /// Perform the command, then [`Driver::complete`] it.
    Command(Ticket, Command),
    /// ([`Timers::Queued`]) Fire this timer at this time (the caller's).
    Timer(TimerId, u64),
}

/// What [`Driver::poll`] hands out.
#[must_use = "the state must be persisted before the work starts"]
#[derive(Debug, Default)]
pub struct Batch {
    /// The executor's state (JSON), to persist before any of `work` starts; `None` when it
    /// has not changed since it was last persisted and there is no work, or the driver keeps
    /// no journal.
    pub journal: Option<Vec<u8>>,
    pub work: Vec<Job>,
    /// The executor waits for an observation now.
    pub observe: bool,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.journal.is_none() && self.work.is_empty() && !self.observe
    }
}

#[derive(Debug)]
pub struct Driver {
    exec: Executor,
    timers: Timers,
    /// Whether the caller persists the state (a controller) or not (the simulator).
    journal: bool,
    /// The state as last persisted (or read back): a poll that changed nothing writes nothing.
    persisted: Option<Vec<u8>>,
    /// The state of the batch awaiting [`Driver::persisted`].
    pending: Option<Vec<u8>>,
    incarnation: u64,
    /// Executor time minus the caller's time: what makes the executor's clock go on from a
    /// resumed state's last instant.
    offset: i128,
}

impl Driver {
    /// A fresh executor; its time is the caller's.
    pub fn new(config: Config, timers: Timers, journal: bool) -> Driver {
        Driver {
            exec: Executor::new(config),
            timers,
            journal,
            persisted: None,
            pending: None,
            incarnation: 0,
            offset: 0,
        }
    }

    /// The executor resumed from `state` (read from the journal at the caller's time `now`),
    /// run with `config` (the caller's, not the one persisted). Commands it had handed out are
    /// handed out again (each is idempotent), and the next observation catches up from the
    /// world as it is. Outcomes of the commands the replaced executor handed out are ignored
    /// from now on.
    pub fn resume(&mut self, state: Option<ExecutorState>, config: Config, now: u64) {
        self.incarnation += 1;
        self.pending = None;
        match state {
            Some(mut state) => {
                state.config = config;
                self.persisted = self.journal.then(|| encode(&state));
                self.exec = Executor::from_state(state);
                self.exec.catch_up();
                self.rebase_clock(now);
            }
            None => {
                self.offset = 0;
                self.persisted = None;
                self.exec = Executor::new(config);
            }
        }
    }

    /// The caller's clock was replaced (another process's, a test's): the executor's time goes
    /// on from its last instant, at the new clock's `now`.
    pub fn rebase_clock(&mut self, now: u64) {
        self.offset = i128::from(self.exec.state().last_time()) - i128::from(now);
    }

    /// The executor's time at the caller's time `now` (never before the state's last instant).
    pub fn executor_time(&self, now: u64) -> u64 {
        let t = (i128::from(now) + self.offset).clamp(0, i128::from(u64::MAX)) as u64;
        t.max(self.exec.state().clock_ms)
    }

    /// The caller's time of an executor time.
    pub fn caller_time(&self, t: u64) -> u64 {
        (i128::from(t) - self.offset).clamp(0, i128::from(u64::MAX)) as u64
    }

    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Read-only access: history, busy slots, in-flight commands, a command's origin.
    pub fn executor(&self) -> &Executor {
        &self.exec
    }

    pub fn state(&self) -> &ExecutorState {
        self.exec.state()
    }

    pub fn history(&self) -> &[FailoverRecord] {
        self.exec.history()
    }

    pub fn take_notices(&mut self) -> Vec<Notice> {
        self.exec.take_notices()
    }

    pub fn observe(&mut self, now: u64, obs: Observation<'_>) {
        let t = self.executor_time(now);
        self.exec.observe(t, obs);
    }

    /// Runs one event's plan by hand (an operator following Berth's plan).
    pub fn run_plan(
        &mut self,
        now: u64,
        cluster: &Cluster,
        event: Event,
        stateful_only: bool,
        by: Actor,
    ) {
        let t = self.executor_time(now);
        self.exec.run_plan(t, cluster, event, stateful_only, by);
    }

    /// Starts a rescheduling plan's moves ([`Executor::run_moves`]); the run, if any lane
    /// started.
    pub fn run_moves(
        &mut self,
        now: u64,
        cluster: &Cluster,
        steps: &[crate::failover::Step],
        by: Actor,
    ) -> Option<u64> {
        let t = self.executor_time(now);
        self.exec.run_moves(t, cluster, steps, by)
    }

    /// A command's outcome. Returns true when a lane of a lost node was dropped: observe soon,
    /// so the node is planned again. An outcome from another incarnation, or for a command no
    /// longer awaited, is ignored (false).
    pub fn complete(&mut self, ticket: Ticket, outcome: Outcome, now: u64) -> bool {
        if ticket.incarnation != self.incarnation {
            return false;
        }
        let t = self.executor_time(now);
        self.exec.complete(ticket.id, outcome, t)
    }

    /// Whether the command is still awaited.
    pub fn is_awaited(&self, ticket: Ticket) -> bool {
        ticket.incarnation == self.incarnation && self.exec.is_in_flight(ticket.id)
    }

    /// ([`Timers::Queued`]) A timer handed out by [`Driver::poll`] is due.
    pub fn fire(&mut self, id: TimerId, now: u64) {
        let t = self.executor_time(now);
        self.exec.fire(id, t);
    }

    /// The controller may act (it leads) or not; a pause ended catches up.
    pub fn set_active(&mut self, active: bool) {
        self.exec.set_active(active);
    }

    /// The next observation catches up from the world as it is.
    pub fn catch_up(&mut self) {
        self.exec.catch_up();
    }

    /// Every run dropped where it stands (a restart without state).
    pub fn abandon_all(&mut self, now: u64) {
        let t = self.executor_time(now);
        self.exec.abandon_all(t);
    }

    /// When the earliest timer is due, in the caller's time.
    pub fn wake_at(&self) -> Option<u64> {
        self.exec.wake_at().map(|t| self.caller_time(t))
    }

    /// The work now ready (firing the timers due first, with [`Timers::Polled`]), the state
    /// to persist before it starts, and whether an observation is due.
    pub fn poll(&mut self, now: u64) -> Batch {
        let work = match self.timers {
            Timers::Polled => {
                let t = self.executor_time(now);
                self.exec
                    .next(t)
                    .into_iter()
                    .map(|(id, c)| Work::Command(id, c))
                    .collect()
            }
            Timers::Queued => self.exec.next_work(),
        };
        // Written when it changed, and before any command starts even if it did not: with a
        // shared journal the write is also what proves this caller still leads.
        let journal = if self.journal {
            let state = encode(self.exec.state());
            let write = !work.is_empty() || self.persisted.as_deref() != Some(&state[..]);
            self.pending = write.then(|| state.clone());
            write.then_some(state)
        } else {
            None
        };
        let incarnation = self.incarnation;
        Batch {
            journal,
            work: work
                .into_iter()
                .map(|w| match w {
                    Work::Command(id, c) => Job::Command(Ticket { incarnation, id }, c),
                    Work::Timer(id, at) => Job::Timer(id, self.caller_time(at)),
                })
                .collect(),
            observe: self.exec.wants_observation(),
        }
    }

    /// The last batch's state is persisted: its work may start.
    pub fn persisted(&mut self) {
        if let Some(s) = self.pending.take() {
            self.persisted = Some(s);
        }
    }

    /// The last batch's state could not be persisted: none of its work starts, and all of it
    /// is handed out again by a later poll (with the state to persist again).
    pub fn not_persisted(&mut self, batch: Batch) {
        self.pending = None;
        let work: Vec<Work> = batch
            .work
            .into_iter()
            .filter_map(|j| match j {
                Job::Command(t, c) if t.incarnation == self.incarnation => {
                    Some(Work::Command(t.id, c))
                }
                Job::Command(..) => None,
                Job::Timer(id, at) => Some(Work::Timer(id, self.executor_time(at))),
            })
            .collect();
        self.exec.hand_back(&work);
    }

    /// Forgets what was persisted: the next poll writes the state whole (a journal that must
    /// be written again, e.g. another leader may have written it meanwhile).
    pub fn forget_persisted(&mut self) {
        self.persisted = None;
    }
}

/// The executor's state as a journal keeps it (JSON).
pub fn encode(state: &ExecutorState) -> Vec<u8> {
    serde_json::to_vec(state).expect("the executor's state serialises")
}
