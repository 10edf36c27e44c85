//! The controller loop of `berth run`, in the style of kube-rs' runtime: Swarm's events only
//! wake it, a periodic resync makes it correct, every pass reads the whole state and makes it
//! converge (level-triggered), and errors back off exponentially.

pub mod clock;
pub mod decide;
pub mod failover;
#[cfg(test)]
mod failover_tests;
#[cfg(test)]
mod gate_tests;
pub mod journal;
#[cfg(all(test, feature = "consul"))]
mod journal_tests;
pub mod rebalance;
#[cfg(test)]
mod rebalance_tests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_scheduler::executor::{
    self, Command as ExecCommand, Driver, FailoverRecord, Job, NodeHealth, Notice, Observation,
    Outcome, RunKind, Ticket, Timers,
};
use berth_scheduler::model::Cluster;
use berth_scheduler::schedule::{self, Plan};
use berth_volume_client::ControlClient;
use futures_util::StreamExt;
use tokio::sync::{Notify, mpsc};

use crate::control::ControlApi;
use crate::docker::{DockerApi, DockerError};
use crate::metrics::Metrics;
use crate::slots::Observed;
use berth_leadership::Leadership;
use clock::{Clock, SystemClock};
use decide::Command;
use journal::{Journal, JournalError};

/// How `berth run` behaves.
#[derive(Debug, Clone)]
pub struct Config {
    /// Log what would be done, change nothing.
    pub dry_run: bool,
    /// Full re-read of the swarm at least this often, events or not.
    pub resync: Duration,
    /// First delay after a failed pass; doubles up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// How often the volume agents' heartbeats are read from the control service (the
    /// failure detector, faster than Swarm's own); a change of a node's verdict starts a pass.
    pub liveness_poll: Duration,
    /// How long a failover waits to see a lost node's old task stop before it moves the data
    /// and starts the slot elsewhere: at most one node lease (the control service's `--lease`,
    /// 5 s by default). By then a live agent has stopped the task itself; a node Swarm cannot
    /// reach is not waited on at all.
    pub stop_wait: Duration,
    /// The longest wait before another pass while Swarm's API does not answer (its managers
    /// electing a leader after theirs died, the local manager restarting). Such an outage
    /// lasts seconds and ends on its own: it is retried at this pace, not at the errors'
    /// exponential backoff (`max_backoff`), so the first pass after it is not late.
    pub swarm_retry: Duration,
    /// How often the swarm is read again while a lost node's slot waits for a node to take
    /// it (every node not Ready, as after Swarm's managers elected a new leader): nodes turn
    /// Ready again without an event, and the slot should start as soon as one does.
    pub room_poll: Duration,
    /// For how long a slot's wait keeps that pace; after it (no node came back: the slot
    /// really has nowhere to go) the swarm is read at `resync` again, events aside.
    pub room_poll_for: Duration,
    /// The automatic rescheduling mode (`--rebalance-auto`); off (`None`) by default.
    pub rebalance: Option<rebalance::Auto>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            dry_run: false,
            resync: Duration::from_secs(10),
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            liveness_poll: Duration::from_secs(1),
            stop_wait: Duration::from_secs(5),
            swarm_retry: Duration::from_secs(1),
            room_poll: Duration::from_secs(1),
            room_poll_for: Duration::from_secs(60),
            rebalance: None,
        }
    }
}

impl Config {
    /// The defaults, with the failure detector read at the profile's heartbeat interval and a
    /// lost node's stop waited on at most one of its leases: a poll slower than the heartbeats
    /// would add up to one poll to every detection.
    pub fn for_timing(profile: berth_control_model::profile::Profile) -> Config {
        let v = profile.values();
        Config {
            liveness_poll: v.interval,
            stop_wait: v.lease,
            ..Config::default()
        }
    }
}

/// What the last pass saw and decided, for the HTTP API.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub cluster: Option<Cluster>,
    pub plan: Option<Plan>,
    /// Commands of the last pass (or, with `--dry-run`, what would have been done).
    pub last_commands: Vec<String>,
    pub last_error: Option<String>,
    pub last_success: Option<Instant>,
    pub invalid_templates: Vec<String>,
    /// The executor's runs, oldest first (`/v1/failovers`).
    pub failovers: Vec<FailoverRecord>,
    /// Commands the executor has in flight, described.
    pub failover_commands: Vec<String>,
    /// The current or last rescheduling run (`/v1/rebalance`).
    pub rebalance: rebalance::Progress,
    /// An operator's request (`POST /v1/rebalance`), taken by the next pass.
    pub rebalance_request: Option<rebalance::Request>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error("the engine refused the cluster: {0}")]
    Plan(#[from] berth_scheduler::schedule::PlanError),
    #[error("cannot persist the executor's state: {0}")]
    Journal(JournalError),
    #[error("this daemon lost the leadership during the pass; it stopped acting")]
    NotLeader,
}

impl ReconcileError {
    /// Whether the pass failed because Swarm's API did not answer (no leader among the
    /// managers, the manager unreachable): transient, retried at `Config::swarm_retry`.
    pub fn swarm_unavailable(&self) -> bool {
        matches!(self, ReconcileError::Docker(DockerError::Unavailable(_)))
    }
}

impl From<JournalError> for ReconcileError {
    fn from(e: JournalError) -> ReconcileError {
        match e {
            JournalError::Deposed(_) => ReconcileError::NotLeader,
            other => ReconcileError::Journal(other),
        }
    }
}

/// What the heartbeat detector says of one node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Verdict {
    dead: bool,
    reconnects: u64,
}

/// A command's outcome, back from the task that performed it.
struct Completion {
    /// The executor incarnation and command that handed it out.
    ticket: Ticket,
    command: ExecCommand,
    outcome: Outcome,
}

/// What one drive of the executor left to do.
struct Drive {
    /// Slots the executor works on: `decide` leaves them alone.
    busy: BTreeSet<(String, u64)>,
    /// The executor waits for an observation: a pass should follow.
    observe: bool,
}

pub struct Controller<D, C = ControlClient> {
    docker: D,
    /// `--volume-control`: without it there are no datasets to fail over, and the executor
    /// only watches.
    control: Option<C>,
    /// The engine's executor in its driver (the simulator's too): journal before start,
    /// incarnations (an outcome of a command handed out before the journal was read again is
    /// not the new executor's), timers on the monotonic clock across restarts.
    driver: Mutex<Driver>,
    journal: Option<Journal>,
    /// Monotonic time for every timer and wait; wall time only for display.
    clock: Arc<dyn Clock>,
    /// One executor drive (or journal read) at a time, the lock held across the journal's
    /// write: the writes land in the order of the states they carry.
    turn: tokio::sync::Mutex<()>,
    completions: mpsc::UnboundedSender<Completion>,
    completed: Mutex<Option<mpsc::UnboundedReceiver<Completion>>>,
    /// The heartbeat detector's verdict per node ID, and how often each came back.
    liveness: Mutex<BTreeMap<String, Verdict>>,
    config: Config,
    status: Arc<Mutex<Status>>,
    metrics: Metrics,
    wake: Arc<Notify>,
    /// `--consul`: the swarm's tasks registered in Consul at every pass.
    #[cfg(feature = "consul")]
    consul: Option<crate::consul::Registrar>,
    /// Whether this daemon may act: always, or while it holds the Consul lock.
    leadership: Arc<Leadership>,
    /// When to rebalance, and what became of the moves. Locked after the driver, before the
    /// status.
    rebalancer: Mutex<rebalance::Rebalancer>,
}

impl<D: DockerApi> Controller<D, ControlClient> {
    pub fn new(docker: D, config: Config, metrics: Metrics) -> Controller<D, ControlClient> {
        Controller::with_control(docker, None, None, config, metrics)
    }
}

impl<D: DockerApi, C: ControlApi> Controller<D, C> {
    /// A controller that fails over through `control`, its executor resumed from `journal`
    /// (the state of a daemon killed mid-failover: in-flight commands are issued again, each
    /// idempotent).
    pub fn with_control(
        docker: D,
        control: Option<C>,
        journal: Option<(Journal, Option<executor::ExecutorState>)>,
        config: Config,
        metrics: Metrics,
    ) -> Controller<D, C> {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
        let mut driver = Driver::new(exec_config(&config), Timers::Polled, journal.is_some());
        let journal = match journal {
            Some((j, state)) => {
                // A fresh executor, or the one the journal holds: its commands in flight are
                // issued again, and its first observation catches up from the world.
                if state.is_some() {
                    driver.resume(state, exec_config(&config), clock.now_ms());
                }
                Some(j)
            }
            None => None,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let rebalancer = rebalance::Rebalancer::new(config.rebalance.clone());
        let status = Status {
            rebalance: rebalancer.progress.clone(),
            ..Status::default()
        };
        Controller {
            docker,
            control,
            driver: Mutex::new(driver),
            journal,
            clock,
            turn: tokio::sync::Mutex::new(()),
            completions: tx,
            completed: Mutex::new(Some(rx)),
            liveness: Mutex::new(BTreeMap::new()),
            config,
            status: Arc::new(Mutex::new(status)),
            metrics,
            wake: Arc::new(Notify::new()),
            rebalancer: Mutex::new(rebalancer),
            #[cfg(feature = "consul")]
            consul: None,
            leadership: Leadership::always(),
        }
    }

    /// Runs on `clock` (a test's): every executor timer and every wait of a command. The
    /// executor keeps its own time base, so swapping the clock before the first pass is safe.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Controller<D, C> {
        let now = clock.now_ms();
        self.driver
            .get_mut()
            .expect("driver lock")
            .rebase_clock(now);
        self.clock = clock;
        self
    }

    /// Acts only while `leadership` says so (`berth run --consul`: leader election).
    pub fn with_leadership(mut self, leadership: Arc<Leadership>) -> Controller<D, C> {
        self.leadership = leadership;
        self
    }

    /// The leadership gate, checked before anything that changes the world.
    fn leading(&self) -> Result<(), ReconcileError> {
        if self.leadership.is_leader() {
            Ok(())
        } else {
            Err(ReconcileError::NotLeader)
        }
    }

    /// Also keeps Consul's catalog in line with the swarm, at every pass.
    #[cfg(feature = "consul")]
    pub fn with_consul(mut self, registrar: crate::consul::Registrar) -> Controller<D, C> {
        self.consul = Some(registrar);
        self
    }

    /// Shared view of the last pass, for the API.
    pub fn status(&self) -> Arc<Mutex<Status>> {
        self.status.clone()
    }

    /// Wakes the loop for a pass (the API, after a rescheduling request).
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// One pass: observe, hand the executor what was seen (it fails over lost nodes' slots),
    /// plan, decide, act. Returns the slot-service commands it carried out.
    pub async fn reconcile(self: &Arc<Self>) -> Result<Vec<Command>, ReconcileError> {
        let started = Instant::now();
        let observed = Observed::new(self.docker.state().await?);
        let (mut cluster, warnings) = observed.cluster();
        for w in &warnings {
            tracing::warn!(what = %w, "skipped an object the engine cannot read");
        }
        for e in &observed.invalid {
            tracing::warn!(error = %e, "template not run");
        }
        // Without the volume records the executor would plan from guessed datasets and could
        // not fence anyway: it sits this pass out (its timers still run), placement goes on.
        let mut datasets_known = self.control.is_some();
        if let Some(c) = &self.control {
            match c.volumes().await {
                Ok(records) => {
                    cluster.datasets = observed.datasets(&records);
                    self.metrics.observe_volumes(&records);
                }
                Err(e) => {
                    datasets_known = false;
                    self.metrics.reconcile_errors.inc();
                    tracing::warn!(error = %e, "volume control unreachable: no failover this pass");
                }
            }
        }
        let health = self.health(&cluster);
        self.leading()?;
        let busy = if self.config.dry_run {
            BTreeSet::new()
        } else {
            let mut drive = self
                .drive_executor(datasets_known.then_some((&cluster, &health[..])))
                .await?;
            if datasets_known && let Some(d) = self.rebalance_round(&cluster).await? {
                drive.busy.extend(d.busy);
                drive.observe |= d.observe;
            }
            if drive.observe {
                // A lost node's fence label was set: its plan is made from the next pass's
                // read of the swarm, with the label.
                self.wake.notify_one();
            }
            drive.busy
        };
        let plan = schedule::plan(&cluster)?;
        let mut commands = decide::decide(&observed, &cluster, &plan)?;
        // A slot the executor is failing over is its alone until the run ends: a create or a
        // rollout now would race the fence and the move.
        commands.retain(|c| match c.slot() {
            Some((template, slot)) => !busy.contains(&(template.to_string(), slot)),
            None => true,
        });
        self.metrics.observe_plan(&plan, &observed);
        // Before the commands, so that a command that keeps failing never starves Consul; the
        // sync never fails the pass, and each of its calls is bounded in time.
        #[cfg(feature = "consul")]
        if let Some(c) = &self.consul {
            c.pass(&observed, self.config.dry_run).await;
        }
        {
            let mut st = self.status.lock().expect("status lock");
            st.cluster = Some(cluster);
            st.plan = Some(plan);
            st.invalid_templates = observed.invalid.iter().map(|e| e.to_string()).collect();
            st.last_commands = commands.iter().map(Command::describe).collect();
        }
        for c in &commands {
            self.leading()?;
            if self.config.dry_run {
                tracing::info!(command = %c.describe(), "dry run: would");
                continue;
            }
            tracing::info!(command = %c.describe(), "applying");
            self.apply(c).await?;
            self.metrics.command(c);
        }
        self.metrics
            .reconcile_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.reconciled();
        Ok(commands)
    }

    /// Starts a rescheduling run when one is due (an operator's request, or the automatic
    /// mode after its quiet window) and the engine proposes moves; its first commands go out
    /// at once. Never beside a failover in the automatic mode.
    async fn rebalance_round(
        self: &Arc<Self>,
        cluster: &Cluster,
    ) -> Result<Option<Drive>, ReconcileError> {
        let now = self.clock.now_ms();
        let request = self
            .status
            .lock()
            .expect("status lock")
            .rebalance_request
            .clone();
        let due = {
            let d = self.driver.lock().expect("driver lock");
            let failover = d
                .state()
                .runs
                .values()
                .any(|r| r.kind != RunKind::Rebalance);
            let mut rb = self.rebalancer.lock().expect("rebalancer lock");
            rb.saw(now, cluster, failover);
            rb.due(now, request.as_ref())
        };
        let Some((budget, by)) = due else {
            return Ok(None);
        };
        let id = request.as_ref().map(|r| r.id);
        let plan = berth_scheduler::rebalance::plan_rebalance(cluster, &budget);
        let started = {
            let mut d = self.driver.lock().expect("driver lock");
            let mut rb = self.rebalancer.lock().expect("rebalancer lock");
            let started = match &plan {
                Err(e) => {
                    rb.nothing(now, id, format!("the engine could not plan: {e}"));
                    false
                }
                Ok(p) if p.moves.is_empty() => {
                    rb.nothing(
                        now,
                        id,
                        format!(
                            "balanced: no move proposed ({} slots held back)",
                            p.held.len()
                        ),
                    );
                    false
                }
                Ok(p) => {
                    let steps = berth_scheduler::rebalance::move_steps(cluster, p);
                    match d.run_moves(now, cluster, &steps, by) {
                        Some(run) => {
                            tracing::info!(
                                run,
                                moves = p.moves.len(),
                                bytes = p.bytes,
                                by = by.as_str(),
                                "rebalance: moving slots"
                            );
                            rb.started(run, p, by, id);
                            true
                        }
                        None => {
                            rb.nothing(
                                now,
                                id,
                                "every slot to move is busy with a failover".into(),
                            );
                            false
                        }
                    }
                }
            };
            let mut st = self.status.lock().expect("status lock");
            if st.rebalance_request.as_ref().map(|r| r.id) == id {
                st.rebalance_request = None;
            }
            st.rebalance = rb.progress.clone();
            st.rebalance.requested = st.rebalance_request.is_some();
            started
        };
        if !started {
            if let Some(m) = &self.status.lock().expect("status lock").rebalance.message {
                tracing::info!(message = %m, "rebalance: no run");
            }
            return Ok(None);
        }
        self.drive_executor(None).await.map(Some)
    }

    /// Feeds the executor (an observation, if any; the clock always), persists its state,
    /// starts the commands it hands out, and returns the slots it is working on. The state
    /// is in the journal before any command starts: a crash after this point re-issues them.
    /// A journal write that fails starts nothing (the commands are handed out again with the
    /// next write); one the store refuses (this daemon was deposed) also steps down.
    async fn drive_executor(
        self: &Arc<Self>,
        seen: Option<(&Cluster, &[NodeHealth])>,
    ) -> Result<Drive, ReconcileError> {
        let _turn = self.turn.lock().await;
        let now = self.clock.now_ms();
        let (batch, busy, notices) = {
            let mut d = self.driver.lock().expect("driver lock");
            if let Some((cluster, health)) = seen {
                d.observe(
                    now,
                    Observation {
                        cluster,
                        health: Some(health),
                        failed: &[],
                    },
                );
            }
            // A standby (or a leader whose lease lapsed) hands nothing out and writes nothing;
            // what is ready stays in the state for when it leads.
            let batch = if self.leadership.is_leader() {
                d.poll(now)
            } else {
                executor::Batch::default()
            };
            let busy: BTreeSet<(String, u64)> = d
                .executor()
                .busy_slots()
                .map(|(s, n)| (s.to_string(), n))
                .collect();
            let mut st = self.status.lock().expect("status lock");
            st.failovers = displayed(&d, now, self.clock.wall_ms());
            st.failover_commands = d
                .state()
                .inflight
                .values()
                .map(|f| format!("{:?}", f.command))
                .collect();
            self.metrics.observe_failovers(d.history());
            let ended = {
                let mut rb = self.rebalancer.lock().expect("rebalancer lock");
                let ended = rb.refresh(now, d.executor());
                st.rebalance = rb.progress.clone();
                st.rebalance.requested = st.rebalance_request.is_some();
                ended
            };
            for e in &ended {
                e.record(&self.metrics);
            }
            self.metrics
                .rebalancing
                .set(i64::from(st.rebalance.running));
            (batch, busy, d.take_notices())
        };
        for n in notices {
            log_notice(&n);
        }
        let observe = batch.observe;
        // The driver's lock is released: the write (a Consul call, with --consul) blocks no
        // one, and `turn` keeps the next state from being written before this one.
        if let Some(state) = &batch.journal {
            let j = self
                .journal
                .as_ref()
                .expect("the driver journals only with a journal");
            if let Err(e) = j.save(state).await {
                let commands = batch.work.len();
                self.driver
                    .lock()
                    .expect("driver lock")
                    .not_persisted(batch);
                if let JournalError::Deposed(why) = &e {
                    tracing::warn!(reason = %why, commands, "failover journal write refused: no command started");
                    self.leadership.stand_by(None, Some(e.to_string()));
                }
                return Err(e.into());
            }
            self.driver.lock().expect("driver lock").persisted();
        }
        for job in batch.work {
            let Job::Command(ticket, command) = job else {
                continue; // timers are the driver's (polled)
            };
            tracing::info!(id = ticket.id.0, ?command, "failover: issuing");
            let me = self.clone();
            tokio::spawn(async move {
                let outcome =
                    failover::perform(&me.docker, me.control.as_ref(), me.clock.as_ref(), &command)
                        .await;
                let _ = me.completions.send(Completion {
                    ticket,
                    command,
                    outcome,
                });
            });
        }
        Ok(Drive { busy, observe })
    }

    /// Replaces the executor with the one the journal holds (`--consul`: on taking the lead, so
    /// this daemon resumes the previous leader's commands in flight); a missing journal is a
    /// fresh executor. Outcomes of the commands the replaced executor handed out are dropped.
    async fn resume(&self) -> anyhow::Result<()> {
        let Some(j) = &self.journal else {
            return Ok(());
        };
        let _turn = self.turn.lock().await;
        let state = j.load().await?;
        match &state {
            Some(st) => tracing::info!(
                runs = st.runs.len(),
                in_flight = st.inflight.len(),
                "resuming the failover executor from its journal"
            ),
            None => tracing::info!("no failover journal yet: a fresh executor"),
        }
        self.driver.lock().expect("driver lock").resume(
            state,
            exec_config(&self.config),
            self.clock.now_ms(),
        );
        Ok(())
    }

    /// The failure detector's verdict for each node of `cluster`: the heartbeats' where the
    /// node's agent has heartbeated since the control service started, Swarm's node state
    /// otherwise (no agent there, or a control service that just restarted and has heard
    /// from no one yet — which must not read as every node dead).
    fn health(&self, cluster: &Cluster) -> Vec<NodeHealth> {
        let verdicts = self.liveness.lock().expect("liveness lock");
        cluster
            .nodes
            .iter()
            .map(|n| match verdicts.get(&n.id.0) {
                Some(v) => NodeHealth {
                    dead: v.dead,
                    reconnects: v.reconnects,
                },
                None => NodeHealth {
                    dead: n.state == berth_scheduler::model::NodeState::Down,
                    reconnects: 0,
                },
            })
            .collect()
    }

    /// Reads the agents' heartbeats every `liveness_poll`; a node's verdict changing starts a
    /// pass at once, so a lost node is failed over seconds after its last heartbeat rather
    /// than at the next resync or Swarm's own verdict (about 15 s).
    async fn poll_liveness(self: Arc<Self>) {
        let Some(control) = &self.control else {
            return;
        };
        loop {
            match control.liveness().await {
                Ok(nodes) => {
                    let mut changed = false;
                    {
                        let mut verdicts = self.liveness.lock().expect("liveness lock");
                        for n in nodes {
                            // The verdict rule is the control model's, shared with the
                            // simulator; none yet for a node not heard from since the control
                            // service started, for less than a detection window.
                            let Some(dead) = n.verdict() else {
                                continue;
                            };
                            let v = verdicts.entry(n.node.clone()).or_default();
                            if v.dead != dead {
                                changed = true;
                                if !dead {
                                    v.reconnects += 1;
                                }
                                tracing::info!(node = %n.node, host = %n.host, dead, "heartbeat verdict changed");
                                v.dead = dead;
                            }
                        }
                    }
                    if changed {
                        self.wake.notify_one();
                    }
                }
                Err(e) => tracing::debug!(error = %e, "liveness not read"),
            }
            self.clock.sleep(self.config.liveness_poll).await;
        }
    }

    /// Takes the performed commands' outcomes back to the executor and starts what it has
    /// ready next. Every outcome already waiting is taken before the executor is driven once:
    /// thirty slots of a lost node finish their steps at about the same time, and one journal
    /// write and one hand-out for all of them keeps the lanes abreast, where a write per
    /// outcome would queue them behind each other. A pass follows only when the executor waits
    /// for an observation (a lost node's lane was dropped and is planned again; a fence label
    /// was set) or a slot was released (the controller may touch its service again).
    async fn take_outcomes(self: Arc<Self>) {
        let Some(mut rx) = self.completed.lock().expect("completions lock").take() else {
            return;
        };
        while let Some(first) = rx.recv().await {
            let mut ready = vec![first];
            while let Ok(c) = rx.try_recv() {
                ready.push(c);
            }
            let (replan, released, room_before) = self.complete_all(ready);
            let observe = match self.drive_executor(None).await {
                Ok(drive) => drive.observe,
                Err(e) => {
                    tracing::error!(error = %e, "failover: state not persisted");
                    false
                }
            };
            // A slot that just began to wait for a node to be Ready: the loop's next wait is
            // cut to `room_poll` (it was computed before).
            let waits = !room_before
                && self
                    .driver
                    .lock()
                    .expect("driver lock")
                    .executor()
                    .waits_for_room();
            if replan || released || observe || waits {
                self.wake.notify_one();
            }
        }
    }

    /// Hands `ready`'s outcomes to the executor in the order they came. Returns whether one
    /// asks for a re-plan, whether a slot was released, and whether the executor waited for
    /// room before the first.
    fn complete_all(&self, ready: Vec<Completion>) -> (bool, bool, bool) {
        let mut d = self.driver.lock().expect("driver lock");
        let busy = d.executor().busy_slots().count();
        let room_before = d.executor().waits_for_room();
        let mut replan = false;
        for c in ready {
            match &c.outcome {
                Outcome::Done => {
                    tracing::info!(id = c.ticket.id.0, command = ?c.command, "failover: done")
                }
                other => {
                    tracing::warn!(id = c.ticket.id.0, command = ?c.command, outcome = ?other, "failover: command did not succeed")
                }
            }
            self.metrics.executor_command(&c.command, &c.outcome);
            if !d.is_awaited(c.ticket) {
                tracing::info!(
                    id = c.ticket.id.0,
                    "failover: outcome of a command no longer awaited (handed out before the journal was read again); dropped"
                );
                continue;
            }
            let moving = c.outcome.is_done()
                && matches!(
                    d.executor().origin(c.ticket.id),
                    Some((_, _, RunKind::Rebalance))
                );
            let now = self.clock.now_ms();
            replan |= d.complete(c.ticket, c.outcome, now);
            if moving
                && let Some(e) = self
                    .rebalancer
                    .lock()
                    .expect("rebalancer lock")
                    .command_done(&c.command, now)
            {
                tracing::info!(command = ?c.command, result = e.result, downtime_ms = ?e.downtime_ms, "rebalance: a move ended");
                e.record(&self.metrics);
            }
        }
        (
            replan,
            d.executor().busy_slots().count() < busy,
            room_before,
        )
    }

    async fn apply(&self, c: &Command) -> Result<(), DockerError> {
        match c {
            Command::Quiesce {
                id, version, spec, ..
            }
            | Command::Rollout {
                id, version, spec, ..
            } => self.docker.update_service(id, *version, spec.clone()).await,
            Command::Create { spec, .. } => {
                self.docker.create_service(spec.clone()).await.map(|_| ())
            }
            Command::Remove { id, .. } => self.docker.remove_service(id).await,
        }
    }

    /// Runs until `shutdown` resolves: a pass on start, on every Swarm event (coalesced), and
    /// every `resync`; after a failed pass, again after an exponential backoff.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        let events = {
            let me = self.clone();
            tokio::spawn(async move { me.watch_events().await })
        };
        let outcomes = tokio::spawn(self.clone().take_outcomes());
        let liveness = tokio::spawn(self.clone().poll_liveness());
        tokio::pin!(shutdown);
        let mut backoff = self.config.backoff;
        // Since when Swarm's API has not answered a pass (monotonic ms), for the log.
        let mut swarm_down_since: Option<u64> = None;
        // Since when a lost node's slot has waited for a node to be Ready (monotonic ms).
        let mut room_since: Option<u64> = None;
        loop {
            // Leadership gate: a standby keeps its API and its reads (events, liveness) but
            // acts on nothing; it waits to lead. Its executor is paused, so that on taking
            // over it catches up from the world as it is (as after a restart).
            if !self.leadership.is_leader() {
                self.driver.lock().expect("driver lock").set_active(false);
                // Another daemon may lead and write the journal meanwhile: it is read again
                // when this one leads (after any write in progress has ended).
                if let Some(j) = &self.journal {
                    let _turn = self.turn.lock().await;
                    j.forget();
                }
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = self.leadership.gained() => {}
                    _ = self.clock.sleep(self.config.resync) => {}
                }
                continue;
            }
            // With the journal in Consul: read it on taking the lead (and after any failed
            // write), so this daemon carries on from what the previous leader wrote. Until it
            // is read, nothing is done.
            if self.journal.as_ref().is_some_and(Journal::needs_load)
                && let Err(e) = self.resume().await
            {
                tracing::error!(error = %e, retry_in = ?backoff, "failover journal not read: this daemon does not act");
                self.metrics.reconcile_errors.inc();
                self.status.lock().expect("status lock").last_error = Some(format!("{e:#}"));
                let wait = backoff;
                backoff = (backoff * 2).min(self.config.max_backoff);
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = self.clock.sleep(wait) => {}
                }
                continue;
            }
            self.driver.lock().expect("driver lock").set_active(true);
            let wait = match self.reconcile().await {
                Ok(_) => {
                    backoff = self.config.backoff;
                    if let Some(since) = swarm_down_since.take() {
                        tracing::info!(
                            after = ?Duration::from_millis(self.clock.now_ms().saturating_sub(since)),
                            "Swarm's API answers again"
                        );
                    }
                    let mut st = self.status.lock().expect("status lock");
                    st.last_error = None;
                    st.last_success = Some(Instant::now());
                    self.config.resync
                }
                Err(e) if e.swarm_unavailable() => {
                    // Swarm re-electing its leader (or the local manager away): the pass is
                    // tried again soon and steadily, and whatever the executor has in flight
                    // retries on its own; a failover waits only as long as Swarm does.
                    let now = self.clock.now_ms();
                    let since = *swarm_down_since.get_or_insert(now);
                    let wait = backoff.min(self.config.swarm_retry);
                    backoff = (backoff * 2).min(self.config.max_backoff);
                    tracing::warn!(
                        error = %e,
                        unavailable_for = ?Duration::from_millis(now.saturating_sub(since)),
                        retry_in = ?wait,
                        "Swarm's API does not answer (a manager election?); retrying"
                    );
                    self.metrics.reconcile_errors.inc();
                    self.metrics.swarm_unavailable.inc();
                    self.status.lock().expect("status lock").last_error = Some(e.to_string());
                    wait
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "reconcile failed");
                    self.metrics.reconcile_errors.inc();
                    self.status.lock().expect("status lock").last_error = Some(e.to_string());
                    let wait = backoff;
                    backoff = (backoff * 2).min(self.config.max_backoff);
                    wait
                }
            };
            // The executor's next timer (a `recreate` grace) also ends the wait, and a slot
            // waiting for a node to be Ready has the swarm read again soon.
            let (timer, room) = {
                let d = self.driver.lock().expect("driver lock");
                let timer = d
                    .wake_at()
                    .map(|at| Duration::from_millis(at.saturating_sub(self.clock.now_ms())));
                (timer, d.executor().waits_for_room())
            };
            let wait = timer.map_or(wait, |t| t.min(wait));
            let now = self.clock.now_ms();
            room_since = if room {
                Some(room_since.unwrap_or(now))
            } else {
                None
            };
            let poll_for = u64::try_from(self.config.room_poll_for.as_millis()).unwrap_or(u64::MAX);
            let wait = match room_since {
                Some(since) if now.saturating_sub(since) < poll_for => {
                    wait.min(self.config.room_poll)
                }
                _ => wait,
            };
            tokio::select! {
                _ = &mut shutdown => break,
                _ = self.clock.sleep(wait) => {}
                _ = self.wake.notified() => {
                    // Let a burst of events (a stack deploy is dozens) settle into one pass.
                    self.clock.sleep(Duration::from_millis(200)).await;
                }
            }
        }
        events.abort();
        outcomes.abort();
        liveness.abort();
    }

    async fn watch_events(&self) {
        let mut backoff = self.config.backoff;
        loop {
            let mut stream = self.docker.changes();
            while let Some(item) = stream.next().await {
                match item {
                    Ok(()) => {
                        backoff = self.config.backoff;
                        self.wake.notify_one();
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "event stream broke; the resync still runs");
                        break;
                    }
                }
            }
            self.clock.sleep(backoff).await;
            backoff = (backoff * 2).min(self.config.max_backoff);
        }
    }
}

/// The executor's configuration in `berth run`.
fn exec_config(config: &Config) -> executor::Config {
    executor::Config {
        // Swarm reschedules stateless tasks itself; Berth fails over the stateful slots.
        stateful_only: true,
        history_limit: Some(500),
        stop_wait_ms: u64::try_from(config.stop_wait.as_millis()).unwrap_or(u64::MAX),
        ..executor::Config::default()
    }
}

/// The history for `/v1/failovers`: run times on the executor's clock shown as Unix ms (the
/// wall clock now, less how long ago on the monotonic clock).
fn displayed(d: &Driver, now: u64, wall_now: u64) -> Vec<FailoverRecord> {
    let exec_now = d.executor_time(now);
    let wall = |t: u64| wall_now.saturating_sub(exec_now.saturating_sub(t));
    d.history()
        .iter()
        .map(|h| FailoverRecord {
            started_ms: wall(h.started_ms),
            ended_ms: h.ended_ms.map(wall),
            ..h.clone()
        })
        .collect()
}

fn log_notice(n: &Notice) {
    match n {
        Notice::PlanFailed { event, error } => {
            tracing::warn!(%event, %error, "failover: the engine could not plan")
        }
        Notice::LaneDropped { slot, reason } => {
            tracing::warn!(?slot, %reason, "failover: a slot's steps were dropped; it is planned again")
        }
        Notice::Waits {
            service,
            slot,
            reason,
        } => tracing::info!(%service, slot, %reason, "failover: slot waits"),
        other => tracing::info!(notice = ?other, "failover"),
    }
}

#[cfg(test)]
mod timing_tests {
    use berth_control_model::profile::Profile;

    use super::*;

    #[test]
    fn the_detector_is_read_at_the_profiles_heartbeat_and_a_stop_waits_one_lease() {
        let d = Config::for_timing(Profile::Default);
        assert_eq!(d.liveness_poll, Config::default().liveness_poll);
        assert_eq!(d.stop_wait, Config::default().stop_wait);
        let f = Config::for_timing(Profile::Fast);
        assert_eq!(f.liveness_poll, Duration::from_millis(250));
        assert_eq!(f.stop_wait, Profile::Fast.values().lease);
        assert_eq!(f.resync, d.resync, "only the liveness timings change");
    }
}
