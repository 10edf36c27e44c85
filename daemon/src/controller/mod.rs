//! The controller loop of `berth run`, in the style of kube-rs' runtime: Swarm's events only
//! wake it, a periodic resync makes it correct, every pass reads the whole state and makes it
//! converge (level-triggered), and errors back off exponentially.

pub mod decide;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_scheduler::model::Cluster;
use berth_scheduler::schedule::{self, Plan};
use futures_util::StreamExt;
use tokio::sync::Notify;

use crate::docker::{DockerApi, DockerError};
use crate::metrics::Metrics;
use crate::slots::Observed;
use decide::Command;

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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            dry_run: false,
            resync: Duration::from_secs(10),
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
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
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error("the engine refused the cluster: {0}")]
    Plan(#[from] berth_scheduler::schedule::PlanError),
}

pub struct Controller<D> {
    docker: D,
    config: Config,
    status: Arc<Mutex<Status>>,
    metrics: Metrics,
    wake: Arc<Notify>,
    /// `--consul`: the swarm's tasks registered in Consul at every pass.
    #[cfg(feature = "consul")]
    consul: Option<crate::consul::Registrar>,
}

impl<D: DockerApi> Controller<D> {
    pub fn new(docker: D, config: Config, metrics: Metrics) -> Controller<D> {
        Controller {
            docker,
            config,
            status: Arc::new(Mutex::new(Status::default())),
            metrics,
            wake: Arc::new(Notify::new()),
            #[cfg(feature = "consul")]
            consul: None,
        }
    }

    /// Also keeps Consul's catalog in line with the swarm, at every pass.
    #[cfg(feature = "consul")]
    pub fn with_consul(mut self, registrar: crate::consul::Registrar) -> Controller<D> {
        self.consul = Some(registrar);
        self
    }

    /// Shared view of the last pass, for the API.
    pub fn status(&self) -> Arc<Mutex<Status>> {
        self.status.clone()
    }

    /// One pass: observe, plan, decide, act. Returns the commands it carried out.
    pub async fn reconcile(&self) -> Result<Vec<Command>, ReconcileError> {
        let started = Instant::now();
        let observed = Observed::new(self.docker.state().await?);
        let (cluster, warnings) = observed.cluster();
        for w in &warnings {
            tracing::warn!(what = %w, "skipped an object the engine cannot read");
        }
        for e in &observed.invalid {
            tracing::warn!(error = %e, "template not run");
        }
        let plan = schedule::plan(&cluster)?;
        let commands = decide::decide(&observed, &cluster, &plan)?;
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
        tokio::pin!(shutdown);
        let mut backoff = self.config.backoff;
        loop {
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
