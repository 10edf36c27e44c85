//! Counters a run accumulates, and the nearest-rank percentile used for p50/p99 (integers in,
//! integers out: no float rounding can make two machines disagree).

use berth_scheduler::model::{Backend, FailoverMode, Policy};
use serde::Serialize;

use crate::clock::Ms;

/// What a stateful service's data is, as far as a lost node goes: the guarantees on lost
/// acknowledged writes are stated (and bounded in `[bounds] lost_writes`) per kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataKind {
    /// `move` (or `manual`) on storage every node mounts: none lost.
    Shared,
    /// `move` by promoting a standby: at most the standby's lag.
    Replicated,
    /// `move` from a live source only: waits for the node; lost with its disk.
    Local,
    /// The database replicates itself; a lost member is recreated empty: none lost.
    Recreate,
}

impl DataKind {
    pub const ALL: [DataKind; 4] = [
        DataKind::Shared,
        DataKind::Replicated,
        DataKind::Local,
        DataKind::Recreate,
    ];

    /// `None` for a stateless service.
    pub fn of(policy: &Policy) -> Option<DataKind> {
        let st = policy.stateful.as_ref()?;
        Some(if st.failover == FailoverMode::Recreate {
            DataKind::Recreate
        } else {
            match st.backend {
                Backend::Shared => DataKind::Shared,
                Backend::Replicated => DataKind::Replicated,
                Backend::Local => DataKind::Local,
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DataKind::Shared => "shared",
            DataKind::Replicated => "replicated",
            DataKind::Local => "local",
            DataKind::Recreate => "recreate",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Metrics {
    /// Events popped from the queue (client writes included).
    pub events: u64,
    /// Calls into the engine (`schedule::plan`, `failover::plan_failover`).
    pub engine_calls: u64,
    /// Failover plans executed (Berth, or the operator under `manual`).
    pub failovers: u64,
    /// Datasets moved, promoted or recreated; under Swarm, stateful tasks rescheduled onto
    /// another node (the task moved, its data did not).
    pub moves: u64,
    pub bytes_moved: u64,
    /// Stateful tasks started on a fresh, empty volume while their data existed elsewhere.
    pub empty_volume_starts: u64,
    pub double_writer_windows: u64,
    pub double_writer_ms: Ms,
    /// Fences the control service took (each raised the volume's epoch).
    pub fences: u64,
    /// Fence or assign calls the control service answered "not yet" (423: the holder's lease
    /// still runs), each made again when it said.
    pub control_waits: u64,
    /// Fence or assign calls it refused (409, or another 4xx): the executor re-planned.
    pub control_refusals: u64,
    /// Mounts whose claim the control service refused (another primary or epoch, or held
    /// elsewhere), as the real agent refuses the Mount: a plan's start fails (nothing runs);
    /// a container started otherwise (Swarm's restart in place) is counted and runs without
    /// its claim.
    pub claims_refused: u64,
}

/// Stateful slots out of service (their dataset without a writer) after having served: how
/// many slots, how many spans, and the spans' p50, p99 and longest — a mass failover's time
/// per slot, the longest its last slot's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SlotOutages {
    pub slots: u64,
    pub outages: u64,
    pub p50_ms: Ms,
    pub p99_ms: Ms,
    pub max_ms: Ms,
}

impl SlotOutages {
    /// From each slot's spans `(from, to)`.
    pub fn of<'a>(per_slot: impl IntoIterator<Item = &'a [(Ms, Ms)]>) -> SlotOutages {
        let mut slots = 0;
        let mut spans = Vec::new();
        for s in per_slot {
            if !s.is_empty() {
                slots += 1;
                spans.extend(s.iter().map(|(a, b)| b - a));
            }
        }
        SlotOutages {
            slots,
            outages: spans.len() as u64,
            p50_ms: percentile(&spans, 50),
            p99_ms: percentile(&spans, 99),
            max_ms: spans.iter().copied().max().unwrap_or(0),
        }
    }
}

/// Nearest-rank percentile (`p` in 1..=100) of an unsorted slice; 0 when empty.
pub fn percentile(values: &[Ms], p: u64) -> Ms {
    if values.is_empty() {
        return 0;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let rank = (p * v.len() as u64).div_ceil(100).max(1) as usize;
    v[rank.min(v.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_outages_count_slots_with_a_span_and_their_spans() {
        let spans: [&[(Ms, Ms)]; 4] = [
            &[(100, 4_930)],
            &[],
            &[(100, 5_100), (9_000, 9_500)],
            &[(100, 6_927)],
        ];
        let o = SlotOutages::of(spans);
        assert_eq!((o.slots, o.outages), (3, 4));
        assert_eq!((o.p50_ms, o.p99_ms, o.max_ms), (4_830, 6_827, 6_827));
        assert_eq!(SlotOutages::of([]), SlotOutages::default());
    }

    #[test]
    fn nearest_rank() {
        assert_eq!(percentile(&[], 50), 0);
        assert_eq!(percentile(&[5], 99), 5);
        assert_eq!(percentile(&[4, 1, 3, 2], 50), 2);
        assert_eq!(percentile(&[4, 1, 3, 2], 99), 4);
        let hundred: Vec<Ms> = (1..=100).collect();
        assert_eq!(percentile(&hundred, 99), 99);
    }
}
