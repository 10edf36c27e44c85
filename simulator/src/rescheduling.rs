//! What a run records of rescheduling (a scenario with `[rebalance]`): the books of Berth's
//! rebalancer — the quiet window and the moves of the run under way, kept as `berth run`'s
//! controller keeps them (`daemon/src/controller/rebalance.rs`) — a forced update's restarts,
//! and the balance measures sampled over time. A leaf: the world's state holds it; the
//! policies (`policy::rebalance`, `policy::swarm_force`), the backend and `balance` fill it.

use std::collections::BTreeMap;

use serde::Serialize;

use berth_scheduler::executor::{Command, Outcome};
use berth_scheduler::model::{Availability, NodeState};

use crate::clock::Ms;

/// The balance of the stateful slots at an instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BalanceSample {
    pub at_ms: Ms,
    /// Running stateful slots on the busiest eligible node minus on the emptiest one (nodes up,
    /// active, and matching some stateful service's constraints).
    pub load_spread: u32,
    /// Per stateful service, the zones its running slots could still spread to but do not
    /// (`min(replicas, zones available) − zones used`), summed.
    pub zone_skew: u32,
}

impl BalanceSample {
    pub fn balanced(&self) -> bool {
        self.load_spread <= 1 && self.zone_skew == 0
    }
}

/// One policy's rescheduling numbers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReschedOutcome {
    /// Rescheduling runs started (Berth), or slots restarted by the forced update (Swarm).
    pub runs: u64,
    /// Slots that ended on another node: Berth's completed moves; under `swarm-force`,
    /// restarted slots Swarm placed on another node (their data did not follow).
    pub moves: u64,
    /// Berth: moves put back where they ran after a failure past their stop.
    pub rolled_back: u64,
    /// Bytes the completed moves copied, counted as `berth_rebalance_bytes` is: each moved
    /// dataset's recorded size (a pre-copy carries it while the slot serves). Swarm copies
    /// nothing.
    pub bytes: u64,
    /// Per moved (or, under `swarm-force`, restarted) slot: from its old task seen stopped to
    /// the slot running again — Berth's `berth_rebalance_downtime_seconds`.
    pub downtime_ms: Vec<Ms>,
    /// The most slots stopped for a move at once, cluster-wide and of one service: what the
    /// budgets (`--rebalance-max-in-flight`, `berth.max-unavailable`) bound.
    pub peak_down: u32,
    pub peak_down_service: u32,
    /// From the instant the cluster could be balanced again (the last node back or joined) to
    /// the first sample from which every later one is balanced; `None`: not balanced at the end.
    pub time_to_balanced_ms: Option<Ms>,
    pub from_ms: Ms,
    /// The samples where the measures changed (the first one always).
    pub balance: Vec<BalanceSample>,
    pub end: BalanceSample,
}

impl ReschedOutcome {
    pub fn downtime_p50(&self) -> Ms {
        crate::metrics::percentile(&self.downtime_ms, 50)
    }

    pub fn downtime_max(&self) -> Ms {
        self.downtime_ms.iter().copied().max().unwrap_or(0)
    }
}

/// The run's rescheduling state.
#[derive(Debug, Default)]
pub struct ReschedRt {
    /// Since when no failover ran and the nodes did not change (`Rebalancer::saw`).
    pub quiet_since: Option<Ms>,
    pub nodes: Vec<(NodeState, Availability)>,
    /// The rescheduling run under way.
    pub run: Option<u64>,
    /// Per moving slot: where its move goes and the bytes the plan copies for it.
    pub targets: BTreeMap<(String, u64), (String, u64)>,
    /// Per moving slot: when its old task was seen stopped.
    pub stopped: BTreeMap<(String, u64), Ms>,
    /// Per slot index the forced update restarted: when its old task was shut down, and the
    /// node it ran on.
    pub forced: BTreeMap<u32, (Ms, u32)>,
    /// Per slot index the forced update shut down: the old task its replacement waits for
    /// (`swarm_default::reconcile`).
    pub replacing: BTreeMap<u32, u32>,
    pub samples: Vec<BalanceSample>,
    pub out: ReschedOutcome,
}

impl ReschedRt {
    /// Slots are down for a move right now: keep the peaks.
    pub fn note_down(&mut self) {
        let all = u32::try_from(self.stopped.len() + self.forced.len()).unwrap_or(u32::MAX);
        let mut per: BTreeMap<&str, u32> = BTreeMap::new();
        for (s, _) in self.stopped.keys() {
            *per.entry(s.as_str()).or_default() += 1;
        }
        let one = per.values().copied().max().unwrap_or(0);
        let one = one.max(u32::from(!self.forced.is_empty()));
        self.out.peak_down = self.out.peak_down.max(all);
        self.out.peak_down_service = self.out.peak_down_service.max(one);
    }

    /// A rescheduling run's command came back: a stop starts the slot's downtime, a start
    /// ends its move (moved, or rolled back to where it ran).
    pub fn command_done(&mut self, now: Ms, command: &Command, outcome: &Outcome) {
        if *outcome != Outcome::Done {
            return;
        }
        match command {
            Command::StopSlot { service, slot, .. } => {
                self.stopped.insert((service.clone(), *slot), now);
                self.note_down();
            }
            Command::StartSlot {
                service,
                slot,
                node,
                ..
            } => {
                let key = (service.clone(), *slot);
                let since = self.stopped.remove(&key);
                let Some((to, bytes)) = self.targets.remove(&key) else {
                    return;
                };
                if to == node.as_str() {
                    self.out.moves += 1;
                    self.out.bytes += bytes;
                    if let Some(t) = since {
                        self.out.downtime_ms.push(now.saturating_sub(t));
                    }
                } else {
                    self.out.rolled_back += 1;
                }
            }
            _ => {}
        }
    }
}
