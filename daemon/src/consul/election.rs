//! Leader election of `berth run` daemons through a Consul session lock: `berth_leadership`'s
//! (`consul::ConsulLock`, the recipe Consul documents), under `Policy::StepDown`: a daemon
//! leads until its last renewal's send time plus the session TTL, and stops at the first round
//! that fails. The session is the fencing token of the failover journal (`journal`).

use std::sync::Arc;

use berth_consul::Consul;
use berth_leadership::consul::ConsulLock;
use berth_leadership::{Leadership, Policy};

pub use berth_consul::ElectionConfig;

/// One daemon's side of the election.
pub type Elector = berth_leadership::Elector<ConsulLock>;

/// The elector and the leadership it decides (standby until a round wins).
pub fn elector(consul: Consul, config: ElectionConfig) -> (Elector, Arc<Leadership>) {
    let leadership = Leadership::elected(Policy::StepDown);
    let ttl = config.ttl;
    let lock = ConsulLock::new(consul, config, "berth run leader election");
    (Elector::new(lock, ttl, leadership.clone()), leadership)
}
