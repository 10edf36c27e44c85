//! The control service: the cluster's dataset configuration (who is primary, at which epoch),
//! the agents' reported state, nodes, leases and standby positions. `model` holds the rules,
//! `commit` persists every accepted change before it is acknowledged (batched), `api` is the
//! HTTP surface and `wire` the request and reply bodies it shares with `client`.

pub mod api;
pub mod clock;
mod commit;
#[cfg(feature = "consul")]
pub mod elected;
pub mod liveness;
pub mod model;
pub mod replicated;
pub mod seat;
pub mod wire;

pub use model::{ControlError, Dataset, Lease, Node, State};
