//! One reconcile pass's Consul sync: compare what Berth wants registered with what the agent
//! has under Berth's mark, and close the gap. Level-triggered like the controller: nothing is
//! remembered between passes but what Consul itself answers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use super::{Agent, AgentService, BERTH, CheckStatus, ConsulError, Instance, MANAGED_BY};
use crate::metrics::Metrics;
use crate::slots::Observed;

/// Calls to the agent in flight at once: enough to register a large swarm in a pass, few
/// enough not to flood the agent.
const CONCURRENCY: usize = 8;

/// What the last sync did, for `/v1/services` and the logs.
#[derive(Debug, Clone, Default)]
pub struct SyncStatus {
    /// The agent's address.
    pub address: String,
    /// What Berth wants registered, as of the last pass.
    pub instances: Vec<Instance>,
    /// End of the last pass whose sync had no error.
    pub last_success: Option<Instant>,
    /// The last pass's first error, if it had any.
    pub last_error: Option<String>,
}

/// What one sync changed (or, in a dry run, would have changed).
#[derive(Debug, Default)]
pub struct SyncReport {
    /// IDs registered (new or changed).
    pub registered: Vec<String>,
    /// IDs removed: Berth's instances whose task is gone.
    pub deregistered: Vec<String>,
    /// Instances whose TTL check was refreshed.
    pub refreshed: usize,
    /// Calls that failed; the others were carried out.
    pub errors: Vec<ConsulError>,
}

enum Op<'a> {
    Register(&'a Instance),
    Refresh(&'a Instance),
    Deregister(String),
}

enum Done {
    Registered(String),
    Refreshed,
    Deregistered(String),
}

/// Keeps the local Consul agent's registrations in line with the swarm.
pub struct Registrar {
    agent: Agent,
    ttl: Duration,
    status: Arc<Mutex<SyncStatus>>,
    metrics: Metrics,
}

impl Registrar {
    /// `ttl`: how long an instance stays passing without a refresh; longer than the resync
    /// period, so a pass that comes on time always refreshes it before it lapses.
    pub fn new(agent: Agent, ttl: Duration, metrics: Metrics) -> Registrar {
        let status = SyncStatus {
            address: agent.address().to_string(),
            ..SyncStatus::default()
        };
        Registrar {
            agent,
            ttl,
            status: Arc::new(Mutex::new(status)),
            metrics,
        }
    }

    /// Shared view of the last sync, for the API.
    pub fn status(&self) -> Arc<Mutex<SyncStatus>> {
        self.status.clone()
    }

    /// The pass's sync, from what the pass observed. Never fails the pass: a Consul that is
    /// down must not stop scheduling; it is logged, counted and shown by `/v1/services`.
    pub async fn pass(&self, observed: &Observed, dry_run: bool) {
        let want = super::instances(observed);
        for s in [CheckStatus::Passing, CheckStatus::Critical] {
            let n = want.iter().filter(|i| i.status == s).count();
            self.metrics
                .consul_instances
                .with_label_values(&[s.as_str()])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let result = self.sync(&want, dry_run).await;
        let first_error = match &result {
            Ok(r) => r.errors.first().map(ToString::to_string),
            Err(e) => Some(e.to_string()),
        };
        if let Some(e) = &first_error {
            tracing::warn!(error = %e, "Consul sync incomplete; the next pass retries");
            self.metrics.consul_sync_errors.inc();
        }
        let mut st = self.status.lock().expect("consul status lock");
        st.instances = want;
        if first_error.is_none() {
            st.last_success = Some(Instant::now());
        }
        st.last_error = first_error;
    }

    /// Registers what is missing or changed, refreshes the rest, deregisters Berth's instances
    /// that are not in `want`. Only a failure to list the agent's services fails the whole
    /// sync; a failed call fails alone and is reported in [`SyncReport::errors`].
    pub async fn sync(&self, want: &[Instance], dry_run: bool) -> Result<SyncReport, ConsulError> {
        let have = self.agent.services().await?;
        let ours: BTreeMap<&str, &AgentService> = have
            .iter()
            .filter(|(_, s)| {
                s.meta
                    .as_ref()
                    .and_then(|m| m.get(MANAGED_BY))
                    .is_some_and(|v| v == BERTH)
            })
            .map(|(id, s)| (id.as_str(), s))
            .collect();
        let wanted: BTreeSet<&str> = want.iter().map(|i| i.id.as_str()).collect();
        let mut ops: Vec<Op> = ours
            .keys()
            .filter(|id| !wanted.contains(*id))
            .map(|id| Op::Deregister((*id).to_string()))
            .collect();
        for i in want {
            match ours.get(i.id.as_str()) {
                Some(s) if s.matches(i) => ops.push(Op::Refresh(i)),
                _ => ops.push(Op::Register(i)),
            }
        }
        let mut report = SyncReport::default();
        if dry_run {
            for op in ops {
                match op {
                    Op::Register(i) => {
                        tracing::info!(id = %i.id, name = %i.name, "dry run: would register in Consul");
                        report.registered.push(i.id.clone());
                    }
                    Op::Deregister(id) => {
                        tracing::info!(id = %id, "dry run: would deregister from Consul");
                        report.deregistered.push(id);
                    }
                    Op::Refresh(_) => report.refreshed += 1,
                }
            }
            return Ok(report);
        }
        let results: Vec<Result<Done, ConsulError>> = futures_util::stream::iter(ops)
            .map(|op| self.run(op))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for r in results {
            match r {
                Ok(Done::Registered(id)) => report.registered.push(id),
                Ok(Done::Deregistered(id)) => report.deregistered.push(id),
                Ok(Done::Refreshed) => report.refreshed += 1,
                Err(e) => report.errors.push(e),
            }
        }
        report.registered.sort();
        report.deregistered.sort();
        Ok(report)
    }

    async fn run(&self, op: Op<'_>) -> Result<Done, ConsulError> {
        match op {
            Op::Register(i) => {
                self.agent.register(i, self.ttl).await?;
                tracing::info!(id = %i.id, name = %i.name, address = %i.address, port = ?i.port,
                    status = i.status.as_str(), "registered in Consul");
                self.metrics
                    .consul_changes
                    .with_label_values(&["register"])
                    .inc();
                Ok(Done::Registered(i.id.clone()))
            }
            Op::Refresh(i) => match self.agent.update_check(i).await {
                Ok(()) => Ok(Done::Refreshed),
                // The instance is there but its check is not (removed by hand, or an agent
                // that lost it): registering again brings both back.
                Err(e) => {
                    tracing::debug!(id = %i.id, error = %e, "check refresh failed; registering again");
                    self.agent.register(i, self.ttl).await?;
                    self.metrics
                        .consul_changes
                        .with_label_values(&["register"])
                        .inc();
                    Ok(Done::Registered(i.id.clone()))
                }
            },
            Op::Deregister(id) => {
                self.agent.deregister(&id).await?;
                tracing::info!(id = %id, "deregistered from Consul (its task is gone)");
                self.metrics
                    .consul_changes
                    .with_label_values(&["deregister"])
                    .inc();
                Ok(Done::Deregistered(id))
            }
        }
    }
}
