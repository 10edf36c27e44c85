//! The volume control service as the controller sees it: one trait, [`ControlApi`], so the
//! failover effects run against the real service (`berth-volume control`, through its own
//! [`ControlClient`] and wire types) in production and tests, and against anything else that
//! answers the same three questions. Every call is idempotent with the epoch as precondition
//! (the control service's contract), so a call re-issued after a crash has no second effect.

use std::future::Future;

pub use berth_control_model::wire::{AssignMode, NodeLiveness, VolumeRecord};
use berth_volume_client::{ClientError, ControlClient};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The precondition failed: the volume is at another epoch (or held elsewhere). Retrying
    /// the same call is futile; the executor re-plans from the current state.
    #[error("refused: {reason}")]
    Refused {
        current_epoch: Option<u64>,
        reason: String,
    },
    /// Not now: the holder's lease still runs (its agent stops its containers before it
    /// ends) or a copy is not there yet. Retry after `retry_after`, if given.
    #[error("not yet: {reason}")]
    NotYet {
        reason: String,
        retry_after: Option<std::time::Duration>,
    },
    /// The service could not be reached, or failed: retry with backoff.
    #[error("volume control unavailable: {0}")]
    Unavailable(String),
}

impl From<ClientError> for ControlError {
    fn from(e: ClientError) -> ControlError {
        match e.status() {
            Some(409) => ControlError::Refused {
                current_epoch: e.current_epoch(),
                reason: e.to_string(),
            },
            Some(423) | Some(425) | Some(503) => ControlError::NotYet {
                retry_after: e.retry_after(),
                reason: e.to_string(),
            },
            Some(s) if (400..500).contains(&s) => ControlError::Refused {
                current_epoch: e.current_epoch(),
                reason: e.to_string(),
            },
            _ => ControlError::Unavailable(e.to_string()),
        }
    }
}

/// The calls the failover effects make.
pub trait ControlApi: Send + Sync + 'static {
    /// Every live volume's record.
    fn volumes(&self) -> impl Future<Output = Result<Vec<VolumeRecord>, ControlError>> + Send;

    /// Each registered node's liveness, from its agent's heartbeats (the failure detector).
    fn liveness(&self) -> impl Future<Output = Result<Vec<NodeLiveness>, ControlError>> + Send;

    /// Fences volume `name` away from `node`: epoch `expect_epoch` → `expect_epoch + 1`.
    /// Returns the new epoch. A replay of the same fence succeeds without a second bump.
    fn fence(
        &self,
        name: &str,
        node: &str,
        expect_epoch: u64,
    ) -> impl Future<Output = Result<u64, ControlError>> + Send;

    /// Makes `node` the primary of fenced volume `name` at `epoch`, its data coming as `mode`
    /// says. A replay succeeds without a second effect.
    fn assign(
        &self,
        name: &str,
        node: &str,
        epoch: u64,
        mode: AssignMode,
    ) -> impl Future<Output = Result<(), ControlError>> + Send;
}

impl ControlApi for ControlClient {
    async fn volumes(&self) -> Result<Vec<VolumeRecord>, ControlError> {
        Ok(ControlClient::volumes(self).await?)
    }

    async fn liveness(&self) -> Result<Vec<NodeLiveness>, ControlError> {
        Ok(ControlClient::node_liveness(self).await?)
    }

    async fn fence(&self, name: &str, node: &str, expect_epoch: u64) -> Result<u64, ControlError> {
        Ok(ControlClient::fence(self, name, node, expect_epoch)
            .await?
            .epoch)
    }

    async fn assign(
        &self,
        name: &str,
        node: &str,
        epoch: u64,
        mode: AssignMode,
    ) -> Result<(), ControlError> {
        ControlClient::assign(self, name, node, epoch, mode).await?;
        Ok(())
    }
}
