//! Berth's volume driver: a Docker volume plugin (the node agent), with per-dataset epochs that
//! fence stale holders and verified data moves. The binary also runs the control service
//! (`berth_volume_control`, `berth-volume control`).
//!
//! Only `protocol` knows the Docker plugin JSON; only `berth_volume_control::api` knows
//! Flocker's HTTP shapes.

pub mod agent;
pub mod backend;
pub mod clock;
pub mod datapath;
pub mod docker;
pub mod failsafe;
pub mod heartbeat;
pub mod metrics;
pub mod protocol;
pub mod replica;
pub mod shipper;
pub mod shutdown;
pub mod transfer;
