//! The control service: the cluster's dataset configuration (who is primary, at which epoch),
//! the agents' reported state, nodes, leases and standby positions. The rules are
//! `berth_control_model`'s; `commit` persists every accepted change before it is acknowledged
//! (batched), `api` is the HTTP surface, `store` and `raft` keep the state (`consul_store` in
//! Consul KV, behind the `consul` feature).

pub mod api;
pub mod clock;
mod commit;
#[cfg(feature = "consul")]
pub mod consul_store;
#[cfg(feature = "consul")]
pub mod elected;
pub mod metrics;
pub mod raft;
pub mod replicated;
pub mod seat;
pub mod store;
