//! Failover in `berth run`: the engine's executor (`berth_scheduler::executor`, driven by the
//! same `Driver` as in the simulator) decides; this module carries its commands out against
//! Docker and the volume control service. Every command is one idempotent call with the epoch
//! as precondition, so a command re-issued after a crash has no second effect. Every wait is on
//! the controller's monotonic [`Clock`].

use std::time::Duration;

use berth_control_model::wire::AssignMode as WireMode;
use berth_scheduler::executor::{AssignMode, Command, Outcome};
use berth_scheduler::model::FENCED_LABEL;

use super::clock::Clock;
use crate::control::{ControlApi, ControlError};
use crate::docker::{DockerApi, DockerError};
use crate::slots::{Observed, slot_spec};

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
    clock: &dyn Clock,
    command: &Command,
) -> Outcome {
    let retry_for = RETRY_FOR.as_millis() as u64;
    let started = clock.now_ms();
    let mut delay = Duration::from_millis(200);
    loop {
        let attempt = once(docker, control, clock, command).await;
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
                if clock.now_ms().saturating_sub(started) >= retry_for =>
            {
                return Outcome::Failed {
                    reason: format!("still failing after {RETRY_FOR:?}: {reason}"),
                };
            }
            Attempt::RetryAfter(reason, after) => {
                // A lease runs out at a known time: retry right then, not a backoff later.
                let after = after.max(Duration::from_millis(20));
                tracing::info!(?command, %reason, retry_in = ?after, "waiting for a lease to end");
                clock.sleep(after).await;
            }
            Attempt::Retry(reason) => {
                tracing::debug!(?command, %reason, retry_in = ?delay, "retrying");
                clock.sleep(delay).await;
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
    clock: &dyn Clock,
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
        Command::StopSlot {
            service,
            slot,
            node,
            wait_ms,
        } => {
            let lost = match wait_ms {
                Some(ms) => Some(lost_wait(control, &node.0, *ms).await),
                None => None,
            };
            stop_slot(docker, clock, service, *slot, &node.0, lost).await
        }
        Command::StartSlot {
            service,
            slot,
            node,
            ..
        } => start_slot(docker, clock, service, *slot, &node.0).await,
    }
}

async fn observe<D: DockerApi>(docker: &D) -> Result<Observed, Attempt> {
    Ok(Observed::new(docker.state().await.map_err(Attempt::from)?))
}

/// How long a lost node's stop may be waited for: `bound_ms`, cut to when the node's lease at
/// the control service ends (its agent, if alive, has stopped the task by then, and the fence
/// that follows waits for that end anyway). Without an answer on the lease, the bound alone.
async fn lost_wait<C: ControlApi>(control: Option<&C>, node: &str, bound_ms: u64) -> Duration {
    let lease_left = match control {
        Some(c) => match c.liveness().await {
            Ok(nodes) => nodes
                .iter()
                .find(|n| n.node == node)
                .map(|n| n.lease_expires_in_ms),
            Err(e) => {
                tracing::debug!(error = %e, %node, "lease not read: the stop waits its bound");
                None
            }
        },
        None => None,
    };
    Duration::from_millis(lease_left.map_or(bound_ms, |l| l.min(bound_ms)))
}

/// Scales the slot's service to 0 — the service stays, pinned to its node, so the slot is still
/// counted there until it starts elsewhere (`start_slot` replaces the service then) — and waits
/// to see its task stop:
///
/// - `lost: None` (the node is up): until Swarm reports no task of the service running, for
///   at most [`START_WITHIN`]; then the command fails and its lane is dropped.
/// - `lost: Some(bound)` (the node was declared lost): until Swarm reports the task on `node`
///   not running, or `node` not Ready (Swarm cannot reach it to stop it: the volume's fence
///   and the agent's lease are what stop it then), or `bound` passed ([`lost_wait`]: at most
///   the executor's bound, cut to the node's lease end); then done.
///
/// A replay finds the service at 0 replicas already and only waits.
async fn stop_slot<D: DockerApi>(
    docker: &D,
    clock: &dyn Clock,
    template: &str,
    slot: u64,
    node: &str,
    lost: Option<Duration>,
) -> Attempt {
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
    if replicas(&s.spec) != 0 {
        let mut spec = s.spec.clone();
        set_replicas(&mut spec, 0);
        if let Err(e) = docker.update_service(&s.id, s.version, spec).await {
            return e.into();
        }
    }
    let id = s.id.clone();
    match lost {
        None => {
            let stopped = wait_until(clock, START_WITHIN, || async {
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
        Some(bound) => {
            let seen = wait_until(clock, bound, || async {
                matches!(stop_seen(docker, &id, node).await, Some(true))
            })
            .await;
            if !seen {
                tracing::warn!(
                    service = %format!("{template}-{slot}"),
                    %node,
                    ?bound,
                    "the lost node's task was not seen to stop within the bound; going on \
                     (its fence and its agent's lease keep it from writing)"
                );
            }
            Attempt::Done
        }
    }
}

/// Whether the stop of service `id`'s task on `node` can be taken as done: Swarm reports none
/// running there, or `node` is not Ready (Swarm no longer reaches it). `None` if Docker could
/// not be read.
async fn stop_seen<D: DockerApi>(docker: &D, id: &str, node: &str) -> Option<bool> {
    let st = docker.state().await.ok()?;
    let ready = st.nodes.iter().any(|n| {
        n.id.as_deref() == Some(node)
            && n.status
                .as_ref()
                .and_then(|s| s.state)
                .is_some_and(|s| s == bollard_stubs::models::NodeState::READY)
    });
    Some(!ready || !running_in(&st, id, Some(node)))
}

fn replicas(spec: &bollard_stubs::models::ServiceSpec) -> i64 {
    spec.mode
        .as_ref()
        .and_then(|m| m.replicated.as_ref())
        .and_then(|r| r.replicas)
        .unwrap_or(1)
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
async fn start_slot<D: DockerApi>(
    docker: &D,
    clock: &dyn Clock,
    template: &str,
    slot: u64,
    node: &str,
) -> Attempt {
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
            if replicas(&s.spec) == 0
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
    let runs = wait_until(clock, START_WITHIN, || async {
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
    Some(running_in(&st, id, node))
}

fn running_in(st: &crate::docker::SwarmState, id: &str, node: Option<&str>) -> bool {
    st.tasks.iter().any(|t| {
        t.service_id.as_deref() == Some(id)
            && node.is_none_or(|n| t.node_id.as_deref() == Some(n))
            && t.status
                .as_ref()
                .and_then(|s| s.state)
                .is_some_and(|s| s == bollard_stubs::models::TaskState::RUNNING)
    })
}

/// Polls `f` every 250 ms of `clock` until it holds (true) or `limit` has passed (false); `f`
/// is always tried at least once, and once more at the limit.
async fn wait_until<F, Fut>(clock: &dyn Clock, limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = clock
        .now_ms()
        .saturating_add(u64::try_from(limit.as_millis()).unwrap_or(u64::MAX));
    loop {
        if f().await {
            return true;
        }
        let now = clock.now_ms();
        if now >= end {
            return false;
        }
        clock.sleep_until(end.min(now + 250)).await;
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
    use crate::controller::clock::SystemClock;
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
        let out = perform(&NoDocker, Some(&control), &SystemClock::new(), &fence()).await;
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
        let out = perform(&NoDocker, Some(&control), &SystemClock::new(), &fence()).await;
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
        let out = perform::<NoDocker, Script>(&NoDocker, None, &SystemClock::new(), &fence()).await;
        assert!(matches!(out, Outcome::Failed { .. }), "{out:?}");
    }
}
