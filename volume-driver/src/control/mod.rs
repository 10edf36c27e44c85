//! The control service: the cluster's dataset configuration (who is primary, at which epoch),
//! the agents' reported state, nodes and leases. `model` holds the rules, `api` the Flocker v1
//! HTTP surface, and every accepted change is persisted before it is acknowledged.

pub mod api;
pub mod model;

pub use model::{ControlError, Dataset, Lease, Node, State};
