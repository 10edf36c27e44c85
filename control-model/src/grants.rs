//! What a control leader replicates of the node leases it grants, so that its successor need not
//! count every node as leased for a whole lease from its takeover ("Fencing", rule 8).
//!
//! Nothing is written per heartbeat. A leader *closes* a node that has gone quiet (no heartbeat
//! for [`crate::liveness::Timing::close_after_ms`]): it stops granting it leases, then commits
//! one [`Closure`] per node closed in that pass — how much longer the last lease it granted the
//! node can run, and how long it had not heard from it, both counted from before the record was
//! proposed. It grants a closed node a lease again only after a later record that *reopens* it
//! has committed (one write for every node reopened together). So the replicated state says,
//! for every node, either "open" — the old rule: leased for up to one lease from a takeover — or
//! "closed, and its lease ends at most `lease_left_ms` after this record was proposed".
//!
//! A successor cannot compare the old leader's clock with its own, so it counts from the moment
//! it *applied* the record on its own monotonic clock, which is no earlier than the moment the
//! record was proposed; and it adds a clock-rate margin over that span ([`Closure::lease_until`]).

use serde::{Deserialize, Serialize};

/// One closed node, as the leader that closed it proposed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closure {
    /// The most the last lease this leader granted the node (or one it knew a predecessor may
    /// have granted) could still run, in ms after the record was proposed; 0 if it had ended.
    pub lease_left_ms: u64,
    /// How long the leader had not heard from the node when it proposed the record.
    pub unheard_ms: u64,
}

impl Closure {
    /// Until when, on a successor's monotonic clock, the node may still hold a lease, given that
    /// the successor applied this record at `applied_ms` (never before it was proposed): the
    /// record's lease left plus `drift_per_mille` of it for the two clocks' rates (the
    /// liveness' `MIN_DRIFT_PER_MILLE`), and never past `cap_ms` (what the successor would
    /// assume without the record: one lease from its takeover).
    pub fn lease_until(&self, applied_ms: u64, cap_ms: u64, drift_per_mille: u64) -> u64 {
        let drift = self.lease_left_ms.div_ceil(1_000) * drift_per_mille;
        applied_ms
            .saturating_add(self.lease_left_ms)
            .saturating_add(drift)
            .min(cap_ms)
    }

    /// When, on a successor's clock, the node was last heard from at the latest: `unheard_ms`
    /// before the successor applied the record (it was proposed no later than that, and the
    /// node was not heard from for `unheard_ms` before the proposal).
    pub fn last_heard(&self, applied_ms: u64) -> u64 {
        applied_ms.saturating_sub(self.unheard_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closure_bounds_the_lease_from_when_it_was_applied_with_a_drift_margin() {
        let c = Closure {
            lease_left_ms: 2_500,
            unheard_ms: 2_500,
        };
        assert_eq!(
            c.lease_until(10_000, 15_000, 10),
            12_530,
            "2.5 s + 1 % (30 ms)"
        );
        assert_eq!(
            c.lease_until(14_000, 15_000, 10),
            15_000,
            "never past the old rule"
        );
        assert_eq!(c.last_heard(10_000), 7_500);
        let ended = Closure {
            lease_left_ms: 0,
            unheard_ms: 9_000,
        };
        assert_eq!(ended.lease_until(10_000, 15_000, 10), 10_000);
        assert_eq!(ended.last_heard(1_000), 0);
    }
}
