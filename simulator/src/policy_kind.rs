//! Which reaction a run simulates.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyKind {
    SwarmDefault,
    Manual,
    Berth,
    /// Swarm, and at `[rebalance] force_at` an operator's `docker service update --force` of
    /// every service (SwarmKit's way to rebalance: every task restarted and placed anew, one
    /// at a time, on whatever volume its new node has).
    SwarmForce,
    /// Berth, but a rescheduling run moves every slot the planner proposes at once: no move
    /// limit, no limit in flight, no `berth.max-unavailable`.
    BerthMoveAll,
}

impl PolicyKind {
    /// The failover comparison every scenario runs.
    pub const ALL: [PolicyKind; 3] = [
        PolicyKind::SwarmDefault,
        PolicyKind::Manual,
        PolicyKind::Berth,
    ];

    /// A scenario with `[rebalance]`: how the cluster gets back into shape after a failover
    /// or when nodes join.
    pub const RESCHEDULING: [PolicyKind; 4] = [
        PolicyKind::SwarmDefault,
        PolicyKind::SwarmForce,
        PolicyKind::BerthMoveAll,
        PolicyKind::Berth,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::SwarmDefault => "swarm-default",
            PolicyKind::Manual => "manual",
            PolicyKind::Berth => "berth",
            PolicyKind::SwarmForce => "swarm-force",
            PolicyKind::BerthMoveAll => "berth-move-all",
        }
    }

    pub fn parse(s: &str) -> Option<PolicyKind> {
        PolicyKind::ALL
            .into_iter()
            .chain(PolicyKind::RESCHEDULING)
            .find(|p| p.as_str() == s)
    }

    /// Berth's detector, executor, leases and data path react to failures (the rescheduling
    /// budgets aside).
    pub fn is_berth(self) -> bool {
        matches!(self, PolicyKind::Berth | PolicyKind::BerthMoveAll)
    }

    /// Plain Swarm reacts to failures.
    pub fn is_swarm(self) -> bool {
        matches!(self, PolicyKind::SwarmDefault | PolicyKind::SwarmForce)
    }
}
