//! The controller loop of `berth run`, in the style of kube-rs' runtime: Swarm's events only
//! wake it, a periodic resync makes it correct, every pass reads the whole state and makes it
//! converge (level-triggered), and errors back off exponentially.

pub mod decide;
pub mod failover;
#[cfg(test)]
mod gate_tests;
#[cfg(all(test, feature = "consul"))]
mod journal_tests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_scheduler::executor::{
    self, Command as ExecCommand, CommandId, Executor, FailoverRecord, NodeHealth, Notice,
    Observation, Outcome,
};
use berth_scheduler::model::Cluster;
use berth_scheduler::schedule::{self, Plan};
use berth_volume::client::ControlClient;
use futures_util::StreamExt;
use tokio::sync::{Notify, mpsc};

use crate::control::ControlApi;
use crate::docker::{DockerApi, DockerError};
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::slots::Observed;
use decide::Command;
use failover::{Journal, JournalError};

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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            dry_run: false,
            resync: Duration::from_secs(10),
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            liveness_poll: Duration::from_secs(1),
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
    /// The executor that handed it out ([`Controller::generation`]).
    generation: u64,
    id: CommandId,
    command: ExecCommand,
    outcome: Outcome,
}

/// Milliseconds of wall-clock time: the executor's timers are persisted with its state, so
/// they must mean the same after a restart (a monotonic clock restarts with the process).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub struct Controller<D, C = ControlClient> {
    docker: D,
    /// `--volume-control`: without it there are no datasets to fail over, and the executor
    /// only watches.
    control: Option<C>,
    executor: Mutex<Executor>,
    /// Bumped when the executor is replaced by one read from the journal: an outcome of a
    /// command the replaced one handed out is not the new one's (command IDs may coincide).
    generation: AtomicU64,
    journal: Option<Journal>,
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
        let (journal, executor) = match journal {
            Some((j, state)) => (Some(j), resumed_executor(state)),
            None => (None, resumed_executor(None)),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        Controller {
            docker,
            control,
            executor: Mutex::new(executor),
            generation: AtomicU64::new(0),
            journal,
            turn: tokio::sync::Mutex::new(()),
            completions: tx,
            completed: Mutex::new(Some(rx)),
            liveness: Mutex::new(BTreeMap::new()),
            config,
            status: Arc::new(Mutex::new(Status::default())),
            metrics,
            wake: Arc::new(Notify::new()),
            #[cfg(feature = "consul")]
            consul: None,
            leadership: Leadership::always(),
        }
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
            self.drive_executor(datasets_known.then_some((&cluster, &health[..])))
                .await?
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

    /// Feeds the executor (an observation, if any; the clock always), persists its state,
    /// starts the commands it hands out, and returns the slots it is working on. The state
    /// is in the journal before any command starts: a crash after this point re-issues them.
    /// A journal write Consul refuses (this daemon was deposed) starts nothing and steps down.
    async fn drive_executor(
        self: &Arc<Self>,
        seen: Option<(&Cluster, &[NodeHealth])>,
    ) -> Result<BTreeSet<(String, u64)>, ReconcileError> {
        let _turn = self.turn.lock().await;
        let now = now_ms();
        let (work, busy, notices, state, generation) = {
            let mut ex = self.executor.lock().expect("executor lock");
            if let Some((cluster, health)) = seen {
                ex.observe(
                    now,
                    Observation {
                        cluster,
                        health: Some(health),
                        failed: &[],
                    },
                );
            }
            // A standby (or a leader whose lease lapsed) hands nothing out; what is ready stays
            // in the state for when it leads.
            let work = if self.leadership.is_leader() {
                ex.next(now)
            } else {
                Vec::new()
            };
            let state = self.journal.as_ref().map(|_| failover::encode(ex.state()));
            let busy: BTreeSet<(String, u64)> =
                ex.busy_slots().map(|(s, n)| (s.to_string(), n)).collect();
            let mut st = self.status.lock().expect("status lock");
            st.failovers = ex.history().to_vec();
            st.failover_commands = ex
                .state()
                .inflight
                .values()
                .map(|f| format!("{:?}", f.command))
                .collect();
            self.metrics.observe_failovers(ex.history());
            (
                work,
                busy,
                ex.take_notices(),
                state,
                self.generation.load(Ordering::SeqCst),
            )
        };
        for n in notices {
            log_notice(&n);
        }
        // The executor's lock is released: the write (a Consul call, with --consul) blocks no
        // one, and `turn` keeps the next state from being written before this one.
        if let (Some(j), Some(state)) = (&self.journal, state)
            && let Err(e) = j.save(&state).await
        {
            if let JournalError::Deposed(why) = &e {
                tracing::warn!(reason = %why, commands = work.len(), "failover journal write refused: no command started");
                self.leadership.stand_by(None, Some(e.to_string()));
            }
            return Err(e.into());
        }
        for (id, command) in work {
            tracing::info!(id = id.0, ?command, "failover: issuing");
            let me = self.clone();
            tokio::spawn(async move {
                let outcome = failover::perform(&me.docker, me.control.as_ref(), &command).await;
                let _ = me.completions.send(Completion {
                    generation,
                    id,
                    command,
                    outcome,
                });
            });
        }
        Ok(busy)
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
        let mut ex = self.executor.lock().expect("executor lock");
        *ex = resumed_executor(state);
        self.generation.fetch_add(1, Ordering::SeqCst);
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
                            if n.last_heartbeat_age_ms.is_none() && !n.dead {
                                continue; // not heard from yet: no verdict
                            }
                            let dead = n.dead || !n.alive;
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
            tokio::time::sleep(self.config.liveness_poll).await;
        }
    }

    /// Takes the performed commands' outcomes back to the executor, one at a time, and has a
    /// pass follow (the executor may have more to do, or a slot to leave alone no longer).
    async fn take_outcomes(self: Arc<Self>) {
        let Some(mut rx) = self.completed.lock().expect("completions lock").take() else {
            return;
        };
        while let Some(c) = rx.recv().await {
            match &c.outcome {
                Outcome::Done => {
                    tracing::info!(id = c.id.0, command = ?c.command, "failover: done")
                }
                other => {
                    tracing::warn!(id = c.id.0, command = ?c.command, outcome = ?other, "failover: command did not succeed")
                }
            }
            self.metrics.executor_command(&c.command, &c.outcome);
            if c.generation != self.generation.load(Ordering::SeqCst) {
                tracing::info!(
                    id = c.id.0,
                    "failover: outcome of a command of the executor before the journal was read again; dropped (the journal's own is issued again)"
                );
                continue;
            }
            self.executor
                .lock()
                .expect("executor lock")
                .complete(c.id, c.outcome, now_ms());
            if let Err(e) = self.drive_executor(None).await {
                tracing::error!(error = %e, "failover: state not persisted");
            }
            self.wake.notify_one();
        }
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
        loop {
            // Leadership gate: a standby keeps its API and its reads (events, liveness) but
            // acts on nothing; it waits to lead. Its executor is paused, so that on taking
            // over it catches up from the world as it is (as after a restart).
            if !self.leadership.is_leader() {
                self.executor
                    .lock()
                    .expect("executor lock")
                    .set_active(false);
                // Another daemon may lead and write the journal meanwhile: it is read again
                // when this one leads (after any write in progress has ended).
                if let Some(j) = &self.journal {
                    let _turn = self.turn.lock().await;
                    j.forget();
                }
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = self.leadership.gained() => {}
                    _ = tokio::time::sleep(self.config.resync) => {}
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
                    _ = tokio::time::sleep(wait) => {}
                }
                continue;
            }
            self.executor
                .lock()
                .expect("executor lock")
                .set_active(true);
            let wait = match self.reconcile().await {
                Ok(_) => {
                    backoff = self.config.backoff;
                    let mut st = self.status.lock().expect("status lock");
                    st.last_error = None;
                    st.last_success = Some(Instant::now());
                    self.config.resync
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
            // The executor's next timer (a `recreate` grace) also ends the wait.
            let timer = self
                .executor
                .lock()
                .expect("executor lock")
                .wake_at()
                .map(|at| Duration::from_millis(at.saturating_sub(now_ms())));
            let wait = timer.map_or(wait, |t| t.min(wait));
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {
                    // Let a burst of events (a stack deploy is dozens) settle into one pass.
                    tokio::time::sleep(Duration::from_millis(200)).await;
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
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.config.max_backoff);
        }
    }
}

/// The executor resumed from `state` (a fresh one without), with this daemon's configuration.
fn resumed_executor(state: Option<executor::ExecutorState>) -> Executor {
    // Swarm reschedules stateless tasks itself; Berth fails over the stateful slots.
    let exec_config = executor::Config {
        stateful_only: true,
        history_limit: Some(500),
        ..executor::Config::default()
    };
    match state {
        Some(mut state) => {
            state.config = exec_config;
            let mut ex = Executor::from_state(state);
            // Catch up from the world as it is now, as after any pause.
            ex.set_active(false);
            ex.set_active(true);
            ex
        }
        None => Executor::new(exec_config),
    }
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
