//! Counters a run accumulates, and the nearest-rank percentile used for p50/p99 (integers in,
//! integers out: no float rounding can make two machines disagree).

use serde::Serialize;

use crate::clock::Ms;

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
    pub fences: u64,
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
    fn nearest_rank() {
        assert_eq!(percentile(&[], 50), 0);
        assert_eq!(percentile(&[5], 99), 5);
        assert_eq!(percentile(&[4, 1, 3, 2], 50), 2);
        assert_eq!(percentile(&[4, 1, 3, 2], 99), 4);
        let hundred: Vec<Ms> = (1..=100).collect();
        assert_eq!(percentile(&hundred, 99), 99);
    }
}
