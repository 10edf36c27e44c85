//! `berth-daemon`: Berth at the edge of the world. The engine (`berth_scheduler`) decides; this
//! crate observes Swarm and the volume control service, hands the engine what it saw, and
//! carries out what the engine decided.
//!
//! - [`docker`]: the Docker Engine seam ([`docker::DockerApi`]) and its `bollard` implementation.
//! - [`slots`]: StatefulSet for Swarm — a `berth.stateful` service is a template run as one
//!   pinned Swarm service per slot; how templates, slot services and the engine's model map
//!   onto each other (pure).
//! - [`control`]: the volume control service seam ([`control::ControlApi`]) over
//!   `berth-volume`'s own client and wire types.
//! - [`controller`]: `berth run`'s level-triggered loop; [`controller::decide`] turns the
//!   engine's plan into Swarm operations (pure).
//! - [`api`] and [`metrics`]: the HTTP API and Prometheus metrics.
//! - [`consul`] (feature `consul`, on by default): Consul service registration of every Swarm
//!   task, at every pass.
//! - [`elect`]: `--elect`, leadership through the volume control service's leader lock, and
//!   the failover journal kept there, fenced by the lock's epoch; whether this daemon may act
//!   now is `berth_leadership::Leadership`.
//! - [`cli`]: the `berth` command line (plan, explain, failover, rebalance, run, status…).

/// `--version`: the package version and the commit it was built from (`build.rs`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("BERTH_COMMIT"),
    ")"
);

pub mod api;
pub mod cli;
#[cfg(feature = "consul")]
pub mod consul;
pub mod control;
pub mod controller;
pub mod docker;
pub mod elect;
pub mod metrics;
pub mod slots;
