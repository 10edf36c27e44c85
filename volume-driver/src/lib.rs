//! Berth's volume driver: a Docker volume plugin (the node agent) plus a Flocker-compatible
//! control service, with per-dataset epochs that fence stale holders and verified data moves.
//!
//! Only `protocol` knows the Docker plugin JSON; only `control::api` knows Flocker's HTTP shapes.

pub mod agent;
pub mod backend;
pub mod client;
pub mod clock;
#[cfg(feature = "consul")]
pub mod consul;
pub mod control;
pub mod credential;
pub mod datapath;
pub mod docker;
pub mod fencing;
pub mod http_client;
pub mod lease;
pub mod metrics;
pub mod name;
pub mod options;
pub mod protocol;
pub mod raft;
pub mod replica;
pub mod shutdown;
pub mod size;
pub mod store;
pub mod transfer;
