//! Failover in `berth run`: the engine's executor (`berth_scheduler::executor`, the one the
//! simulator runs too) decides; this module carries its commands out against Docker and the
//! volume control service, and keeps its state on disk so a daemon killed mid-failover
//! resumes where it stopped. Every command is one idempotent call with the epoch as
//! precondition, so a command re-issued after a crash has no second effect.

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_scheduler::executor::{AssignMode, Command, ExecutorState, Outcome};
use berth_scheduler::model::FENCED_LABEL;
use berth_volume::control::wire::AssignMode as WireMode;

use crate::control::{ControlApi, ControlError};
use crate::docker::{DockerApi, DockerError};
use crate::slots::{Observed, slot_spec};

/// Where the executor's state is kept: written whole after every change, before any command
/// it hands out starts.
///
/// - On disk (`--state-dir/executor.json`; temp file, fsync, rename), so a crash leaves the
///   old or the new state, never a torn one; read once at start.
/// - With `--consul`, in one Consul KV key (`--journal-key`,
///   [`crate::consul::journal::ConsulJournal`]): every write is fenced by the leader session,
///   and a daemon reads it each time it takes the lead, so it resumes the previous leader's
///   commands in flight rather than only catching up from the world.
pub struct Journal(Backend);

enum Backend {
    File(PathBuf),
    #[cfg(feature = "consul")]
    Consul(Box<crate::consul::journal::ConsulJournal>),
}

/// Why the executor's state was not persisted.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Consul refused the write because this daemon no longer leads (its session does not hold
    /// the leader key) or another leader wrote the journal since this one read it.
    #[error("the journal write was refused: {0}")]
    Deposed(String),
    /// Consul did not answer, or the journal was not read since this daemon took the lead.
    #[error("{0}")]
    Consul(String),
}

impl Journal {
    pub fn new(state_dir: &Path) -> Journal {
        Journal(Backend::File(state_dir.join("executor.json")))
    }

    /// The journal in Consul KV.
    #[cfg(feature = "consul")]
    pub fn consul(journal: crate::consul::journal::ConsulJournal) -> Journal {
        Journal(Backend::Consul(Box::new(journal)))
    }

    /// Whether the state must be read (again) before this daemon acts: true for a Consul
    /// journal not read since it took the lead, or whose last write failed; never for a file,
    /// read once at start.
    pub fn needs_load(&self) -> bool {
        match &self.0 {
            Backend::File(_) => false,
            #[cfg(feature = "consul")]
            Backend::Consul(c) => c.needs_load(),
        }
    }

    /// Has a Consul journal read again before the next write (a daemon that stops leading:
    /// another may write it meanwhile); nothing for a file.
    pub fn forget(&self) {
        match &self.0 {
            Backend::File(_) => {}
            #[cfg(feature = "consul")]
            Backend::Consul(c) => c.forget(),
        }
    }

    /// The state last written; `None` if there is none. A state that does not decode is an
    /// error, never an empty state.
    pub async fn load(&self) -> anyhow::Result<Option<ExecutorState>> {
        let path = match &self.0 {
            Backend::File(path) => path,
            #[cfg(feature = "consul")]
            Backend::Consul(c) => return c.load().await,
        };
        match std::fs::read(path) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(|e| {
                anyhow::anyhow!("{}: not an executor state: {e}", path.display())
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
        }
    }

    /// Writes `state`, the executor's state serialised ([`encode`]).
    pub async fn save(&self, state: &[u8]) -> Result<(), JournalError> {
        let path = match &self.0 {
            Backend::File(path) => path,
            #[cfg(feature = "consul")]
            Backend::Consul(c) => return c.save(state).await,
        };
        use std::io::Write;
        let tmp = path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(state)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// The executor's state as the journal keeps it (JSON).
pub fn encode(state: &ExecutorState) -> Vec<u8> {
    serde_json::to_vec(state).expect("the executor's state serialises")
}

/// How long a command may keep being retried (the control service says "not yet" while a lost
/// node's lease runs; Docker may be briefly unavailable) before it is reported failed, which
/// drops its lane and has the node planned again.
const RETRY_FOR: Duration = Duration::from_secs(60);
/// How long a started slot may take to run its task.
const START_WITHIN: Duration = Duration::from_secs(120);

/// Carries out one command. Never panics on the world's answers: every error becomes an
/// [`Outcome`] the executor understands.
pub async fn perform<D: DockerApi, C: ControlApi>(
    docker: &D,
    control: Option<&C>,
    command: &Command,
) -> Outcome {
    let started = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(200);
    loop {
        let attempt = once(docker, control, command).await;
        match attempt {
            Attempt::Done => return Outcome::Done,
            Attempt::Refused {
                current_epoch,
                reason,
            } => {
                return Outcome::Refused {
                    current_epoch,
                    reason,
                };
            }
            Attempt::Failed(reason) => return Outcome::Failed { reason },
            Attempt::Retry(reason) | Attempt::RetryAfter(reason, _)
                if started.elapsed() >= RETRY_FOR =>
            {
                return Outcome::Failed {
                    reason: format!("still failing after {RETRY_FOR:?}: {reason}"),
                };
            }
            Attempt::RetryAfter(reason, after) => {
                // A lease runs out at a known time: retry right then, not a backoff later.
                let after = after.max(Duration::from_millis(20));
                tracing::info!(?command, %reason, retry_in = ?after, "waiting for a lease to end");
                tokio::time::sleep(after).await;
            }
            Attempt::Retry(reason) => {
                tracing::debug!(?command, %reason, retry_in = ?delay, "retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

enum Attempt {
    Done,
    Refused {
        current_epoch: Option<u64>,
        reason: String,
    },
    Failed(String),
    Retry(String),
    /// Retry after this long (the control service said when).
    RetryAfter(String, Duration),
}

impl From<ControlError> for Attempt {
    fn from(e: ControlError) -> Attempt {
        match e {
            ControlError::Refused {
                current_epoch,
                reason,
            } => Attempt::Refused {
                current_epoch,
                reason,
            },
            ControlError::NotYet {
                reason,
                retry_after: Some(after),
            } => Attempt::RetryAfter(reason, after),
            ControlError::NotYet { reason, .. } | ControlError::Unavailable(reason) => {
                Attempt::Retry(reason)
            }
        }
    }
}

impl From<DockerError> for Attempt {
    fn from(e: DockerError) -> Attempt {
        match e {
            DockerError::Unavailable(r) | DockerError::Conflict(r) => Attempt::Retry(r),
            DockerError::NotFound(r) | DockerError::Refused(r) => Attempt::Failed(r),
        }
    }
}

async fn once<D: DockerApi, C: ControlApi>(
    docker: &D,
    control: Option<&C>,
    command: &Command,
) -> Attempt {
    let no_control = || Attempt::Failed("berth run has no --volume-control".into());
    match command {
        Command::Fence {
            volume,
            node,
            expect_epoch,
        } => match control {
            Some(c) => match c.fence(volume, &node.0, *expect_epoch).await {
                Ok(_) => Attempt::Done,
                Err(e) => e.into(),
            },
            None => no_control(),
        },
        Command::Assign {
            volume,
            primary,
            epoch,
            mode,
        } => {
            let mode = match mode {
                AssignMode::Move { .. } => WireMode::Move,
                AssignMode::Promote { .. } => WireMode::Promote,
                AssignMode::Recreate => WireMode::Recreate,
            };
            match control {
                Some(c) => match c.assign(volume, &primary.0, *epoch, mode).await {
                    Ok(()) => Attempt::Done,
                    Err(e) => e.into(),
                },
                None => no_control(),
            }
        }
        // The target's agent pre-pulls a copy it is about to receive on its own; nothing to
        // ask of anyone here.
        Command::PreCopy { .. } => Attempt::Done,
        // The node's agent discards a copy older than the volume's epoch at its next
        // reconcile, and the control service refuses to let it be mounted meanwhile.
        Command::DropStale { .. } => Attempt::Done,
        Command::SetFenceLabel { node } => {
            match docker
                .set_node_label(&node.0, FENCED_LABEL, Some("true"))
                .await
            {
                Ok(()) => Attempt::Done,
                Err(e) => e.into(),
            }
        }
        Command::ClearFenceLabel { node } => {
            match docker.set_node_label(&node.0, FENCED_LABEL, None).await {
                Ok(()) => Attempt::Done,
                Err(e) => e.into(),
            }
        }
        Command::StopSlot { service, slot, .. } => stop_slot(docker, service, *slot).await,
        Command::StartSlot {
            service,
            slot,
            node,
            ..
        } => start_slot(docker, service, *slot, &node.0).await,
    }
}

async fn observe<D: DockerApi>(docker: &D) -> Result<Observed, Attempt> {
    Ok(Observed::new(docker.state().await.map_err(Attempt::from)?))
}

/// Scales the slot's service to 0 and waits until its task has stopped.
async fn stop_slot<D: DockerApi>(docker: &D, template: &str, slot: u64) -> Attempt {
    let o = match observe(docker).await {
        Ok(o) => o,
        Err(a) => return a,
    };
    let Some(s) = o
        .slots
        .values()
        .find(|s| s.slot == slot && o.owner_of(s).is_some_and(|t| t.name == template))
    else {
        return Attempt::Done; // no service: nothing runs
    };
    let mut spec = s.spec.clone();
    set_replicas(&mut spec, 0);
    if let Err(e) = docker.update_service(&s.id, s.version, spec).await {
        return e.into();
    }
    let id = s.id.clone();
    let stopped = wait_until(START_WITHIN, || async {
        matches!(running_task(docker, &id, None).await, Some(false))
    })
    .await;
    if stopped {
        Attempt::Done
    } else {
        Attempt::Failed(format!(
            "{template}-{slot} did not stop within {START_WITHIN:?}"
        ))
    }
}

fn set_replicas(spec: &mut bollard_stubs::models::ServiceSpec, n: i64) {
    spec.mode = Some(bollard_stubs::models::ServiceSpecMode {
        replicated: Some(bollard_stubs::models::ServiceSpecModeReplicated { replicas: Some(n) }),
        ..Default::default()
    });
}

/// Points the slot's service at `node` and waits until its task runs there. A service pinned
/// elsewhere is replaced (removed, then created on `node`) rather than updated: Swarm would
/// wait for the old task on a dead node to report its end before starting the new one.
async fn start_slot<D: DockerApi>(docker: &D, template: &str, slot: u64, node: &str) -> Attempt {
    let o = match observe(docker).await {
        Ok(o) => o,
        Err(a) => return a,
    };
    let Some(t) = o.templates.values().find(|t| t.name == template) else {
        return Attempt::Failed(format!("template {template} is gone"));
    };
    let want = slot_spec(t, slot, node);
    let current = o.slots.get(&(t.id.clone(), slot));
    let id = match current {
        Some(s) if s.node.as_deref() == Some(node) => {
            let running = s
                .spec
                .mode
                .as_ref()
                .and_then(|m| m.replicated.as_ref())
                .and_then(|r| r.replicas)
                .unwrap_or(1);
            if running == 0
                && let Err(e) = docker.update_service(&s.id, s.version, want).await
            {
                return e.into();
            }
            s.id.clone()
        }
        other => {
            if let Some(s) = other
                && let Err(e) = docker.remove_service(&s.id).await
            {
                return e.into();
            }
            match docker.create_service(want).await {
                Ok(id) => id,
                Err(e) => return e.into(),
            }
        }
    };
    let runs = wait_until(START_WITHIN, || async {
        running_task(docker, &id, Some(node)).await == Some(true)
    })
    .await;
    if runs {
        Attempt::Done
    } else {
        Attempt::Failed(format!(
            "{template}-{slot} did not run on {node} within {START_WITHIN:?}"
        ))
    }
}

/// Whether service `id` has a running task (on `node`, if given); `None` if Docker could
/// not be read.
async fn running_task<D: DockerApi>(docker: &D, id: &str, node: Option<&str>) -> Option<bool> {
    let st = docker.state().await.ok()?;
    Some(st.tasks.iter().any(|t| {
        t.service_id.as_deref() == Some(id)
            && node.is_none_or(|n| t.node_id.as_deref() == Some(n))
            && t.status
                .as_ref()
                .and_then(|s| s.state)
                .is_some_and(|s| s.to_string() == "running")
    }))
}

async fn wait_until<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + limit;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use berth_scheduler::model::NodeId;
    use bollard_stubs::models::ServiceSpec;
    use futures_util::stream::BoxStream;

    use super::*;
    use crate::control::{NodeLiveness, VolumeRecord};
    use crate::docker::SwarmState;

    /// Fence and assign touch no Docker: any call to it is a test failure.
    struct NoDocker;

    impl DockerApi for NoDocker {
        async fn state(&self) -> Result<SwarmState, DockerError> {
            panic!("no Docker call expected")
        }
        async fn create_service(&self, _: ServiceSpec) -> Result<String, DockerError> {
            panic!("no Docker call expected")
        }
        async fn update_service(&self, _: &str, _: u64, _: ServiceSpec) -> Result<(), DockerError> {
            panic!("no Docker call expected")
        }
        async fn remove_service(&self, _: &str) -> Result<(), DockerError> {
            panic!("no Docker call expected")
        }
        async fn set_node_label(
            &self,
            _: &str,
            _: &str,
            _: Option<&str>,
        ) -> Result<(), DockerError> {
            panic!("no Docker call expected")
        }
        fn changes(&self) -> BoxStream<'static, Result<(), DockerError>> {
            panic!("no Docker call expected")
        }
    }

    /// Answers fences from a script, in order, and counts the calls.
    #[derive(Default)]
    struct Script {
        fences: Mutex<VecDeque<Result<u64, ControlError>>>,
        calls: Mutex<u32>,
    }

    impl ControlApi for Script {
        async fn volumes(&self) -> Result<Vec<VolumeRecord>, ControlError> {
            Ok(Vec::new())
        }
        async fn liveness(&self) -> Result<Vec<NodeLiveness>, ControlError> {
            Ok(Vec::new())
        }
        async fn fence(&self, _: &str, _: &str, _: u64) -> Result<u64, ControlError> {
            *self.calls.lock().unwrap() += 1;
            self.fences
                .lock()
                .unwrap()
                .pop_front()
                .expect("no more fence answers scripted")
        }
        async fn assign(&self, _: &str, _: &str, _: u64, _: WireMode) -> Result<(), ControlError> {
            Ok(())
        }
    }

    fn fence() -> Command {
        Command::Fence {
            volume: "db-1".into(),
            node: NodeId::new("w1"),
            expect_epoch: 3,
        }
    }

    #[tokio::test]
    async fn a_fence_deferred_by_a_running_lease_is_retried_when_the_lease_ends() {
        let control = Script::default();
        control.fences.lock().unwrap().extend([
            Err(ControlError::NotYet {
                reason: "leased to w1".into(),
                retry_after: Some(Duration::from_millis(30)),
            }),
            Err(ControlError::Unavailable("connection refused".into())),
            Ok(4),
        ]);
        let out = perform(&NoDocker, Some(&control), &fence()).await;
        assert_eq!(out, Outcome::Done);
        assert_eq!(*control.calls.lock().unwrap(), 3);
    }

    #[tokio::test]
    async fn a_stale_epoch_is_a_refusal_with_the_current_epoch_never_retried() {
        let control = Script::default();
        control
            .fences
            .lock()
            .unwrap()
            .push_back(Err(ControlError::Refused {
                current_epoch: Some(5),
                reason: "the fence expected epoch 3".into(),
            }));
        let out = perform(&NoDocker, Some(&control), &fence()).await;
        assert!(
            matches!(
                out,
                Outcome::Refused {
                    current_epoch: Some(5),
                    ..
                }
            ),
            "{out:?}"
        );
        assert_eq!(*control.calls.lock().unwrap(), 1);
    }

    #[tokio::test]
    async fn without_a_control_service_a_fence_fails_at_once() {
        let out = perform::<NoDocker, Script>(&NoDocker, None, &fence()).await;
        assert!(matches!(out, Outcome::Failed { .. }), "{out:?}");
    }
}
