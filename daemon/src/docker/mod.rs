//! The Docker Engine as the controller sees it: one trait, [`DockerApi`], so the controller's
//! logic runs against a real engine (`bollard`, [`BollardDocker`]) in production and tests, and
//! against anything else that can answer the same questions. Values are the Engine API's own
//! typed models (`bollard-stubs`), the same types the engine's `ingest` reads, so nothing is
//! re-serialised on the way to the engine.

mod bollard_impl;

use std::future::Future;

use bollard_stubs::models::{Node, Service, ServiceSpec, Task};
use futures_util::stream::BoxStream;

pub use bollard_impl::BollardDocker;

/// What a manager knows about the swarm at one moment.
#[derive(Debug, Clone, Default)]
pub struct SwarmState {
    pub nodes: Vec<Node>,
    pub services: Vec<Service>,
    pub tasks: Vec<Task>,
}

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The engine could not be reached, or answered with a server error: retry with backoff.
    #[error("docker engine unavailable: {0}")]
    Unavailable(String),
    /// An optimistic update lost a race (`update out of sequence`): re-read and retry.
    #[error("service {0} changed meanwhile (stale version)")]
    Conflict(String),
    /// The object is gone.
    #[error("no such {0}")]
    NotFound(String),
    /// The engine refused the request itself (a bad spec): retrying the same request is futile.
    #[error("docker refused the request: {0}")]
    Refused(String),
}

/// The calls the controller makes. `Send` futures, so the controller can run on any runtime
/// thread.
pub trait DockerApi: Send + Sync + 'static {
    /// Nodes, services and tasks, as one read (three API calls; Swarm offers no snapshot, so a
    /// task may name a service created between the calls — the controller tolerates that).
    fn state(&self) -> impl Future<Output = Result<SwarmState, DockerError>> + Send;

    /// Creates a service; returns its ID.
    fn create_service(
        &self,
        spec: ServiceSpec,
    ) -> impl Future<Output = Result<String, DockerError>> + Send;

    /// Replaces a service's spec if its version is still `version` (optimistic concurrency).
    fn update_service(
        &self,
        id: &str,
        version: u64,
        spec: ServiceSpec,
    ) -> impl Future<Output = Result<(), DockerError>> + Send;

    /// Removes a service (its volumes stay).
    fn remove_service(&self, id: &str) -> impl Future<Output = Result<(), DockerError>> + Send;

    /// Sets (`Some`) or removes (`None`) one label of a node, keeping its other labels, role
    /// and availability; retried by the caller on a version conflict.
    fn set_node_label(
        &self,
        node_id: &str,
        key: &str,
        value: Option<&str>,
    ) -> impl Future<Output = Result<(), DockerError>> + Send;

    /// Swarm's service and node events, as hints that something changed: the controller
    /// re-reads the whole state on each (level-triggered), so events may be lost or merged.
    fn changes(&self) -> BoxStream<'static, Result<(), DockerError>>;
}
