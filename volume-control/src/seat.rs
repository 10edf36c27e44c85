//! Which instance serves, when several control instances share one state: the seat an instance
//! holds. Alone, it always serves. As a Raft member (`replicated`), it serves while it leads its
//! term, caught up. Elected through a Consul session lock (`elected`), it serves until its last
//! renewal's send time plus the session TTL. Whichever the seat, the API asks it the same three
//! things: whether to answer at all, whether a lease may be granted now, and where the leader is.

use crate::raft::Replica;

/// How this instance decides whether it serves.
#[derive(Clone, Default)]
pub enum Seat {
    /// The only instance: it always serves.
    #[default]
    Alone,
    /// A member of a Raft group (`control --raft-id`).
    Raft(Replica),
    /// One of several instances on Consul KV, elected by a session lock (`control --consul`).
    #[cfg(feature = "consul")]
    Elected(std::sync::Arc<crate::elected::Elected>),
}

impl Seat {
    /// Whether this instance answers the API now.
    pub fn serving(&self) -> bool {
        match self {
            Seat::Alone => true,
            Seat::Raft(r) => r.gate.serving().is_some(),
            #[cfg(feature = "consul")]
            Seat::Elected(e) => e.serving(),
        }
    }

    /// Whether it may grant a lease (a node's, a leader lock's) now: one a newer leader will
    /// honour, because it takes over only after this instance has stopped granting.
    pub async fn confirm(&self) -> bool {
        match self {
            Seat::Alone => true,
            Seat::Raft(r) => r.confirm_leader().await,
            #[cfg(feature = "consul")]
            Seat::Elected(e) => e.serving(),
        }
    }

    /// Whether this instance, serving, closes quiet nodes' leases (`grants`, "Fencing", rule 8):
    /// alone, always; a Raft member once every member honours closures; an instance elected
    /// through Consul never (an older instance there would not honour them, and each of its
    /// writes is the whole document).
    pub fn closes_leases(&self) -> bool {
        match self {
            Seat::Alone => true,
            Seat::Raft(r) => r.closes_leases(),
            #[cfg(feature = "consul")]
            Seat::Elected(_) => false,
        }
    }

    /// When this instance applied each lease closure it holds, if it knows (a Raft member);
    /// otherwise a closure counts as applied when the state was taken up.
    pub fn closures_applied(&self) -> std::collections::BTreeMap<String, std::time::Instant> {
        match self {
            Seat::Raft(r) => r.closures_applied(),
            _ => std::collections::BTreeMap::new(),
        }
    }

    /// A write failed as if deposed: stop serving until the seat is checked again.
    pub fn lost(&self) {
        match self {
            Seat::Alone => {}
            Seat::Raft(r) => r.gate.lost(),
            #[cfg(feature = "consul")]
            Seat::Elected(e) => e.lost(),
        }
    }

    /// The serving instance's URL, as this one knows it, for a client to go to.
    pub fn leader_url(&self) -> Option<String> {
        match self {
            Seat::Alone => None,
            Seat::Raft(r) => r.leader_url(),
            #[cfg(feature = "consul")]
            Seat::Elected(e) => e.leader_url(),
        }
    }

    /// The Raft member, if this is one.
    pub fn replica(&self) -> Option<&Replica> {
        match self {
            Seat::Raft(r) => Some(r),
            _ => None,
        }
    }
}
