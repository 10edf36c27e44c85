//! The volume control service's rules, without I/O: datasets and their epochs, the fence and
//! assignment rules, failover, leader locks, node liveness and leases, names, sizes and
//! options, the wire types the service and its clients share, the node credential, and the
//! agent's lease keeper and mount gate. Everything here is decided on instants passed in, so
//! the simulator runs the same rules on its own clock.

pub mod credential;
pub mod fencing;
pub mod gate;
pub mod grants;
pub mod lease;
pub mod liveness;
pub mod model;
pub mod name;
pub mod options;
pub mod profile;
pub mod size;
pub mod wire;

pub use model::{ControlError, Dataset, Lease, Node, State};
