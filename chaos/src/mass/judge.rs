//! A mass run's report and the arithmetic that judges it: services laid out, each slot's
//! outages, the most slots of a service down at once, and the run's verdict from its slots'.
//! A leaf: `run.rs` carries a [`MassReport`] in its result without depending on the runner.

use serde::Serialize;

use crate::verdict::{GAP, Verdict};
use crate::workload::Backend;

/// Slots per service: a service of ten slots, then the rest.
const PER_SERVICE: u32 = 10;
/// One service of a mass run.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceReport {
    pub service: String,
    pub backend: Backend,
    pub slots: u32,
    /// `berth.max-unavailable` (Berth); `null` under plain Swarm.
    pub max_unavailable: Option<u32>,
    /// Its slots on the faulted node when the fault came: the fault takes these down itself.
    pub slots_on_faulted_node: u32,
    /// The most of its slots unavailable at once, from the fault to the end.
    pub max_unavailable_seen: u32,
    /// No slot went down beyond what the fault took and the budget allows.
    pub budget_honoured: bool,
}

/// What a mass run adds to a run's report.
#[derive(Debug, Clone, Serialize)]
pub struct MassReport {
    pub slots: u32,
    pub slots_served: u32,
    /// Each slot's seconds from the fault to serving again, in slot order (`null`: never).
    pub slot_seconds: Vec<Option<f64>>,
    pub p50_slot_seconds: Option<f64>,
    pub p99_slot_seconds: Option<f64>,
    pub services: Vec<ServiceReport>,
    /// The largest epoch rise of any slot's volume (Berth): 1 for a failover, never 2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_fences: Option<u64>,
}

impl MassReport {
    pub fn budgets_honoured(&self) -> bool {
        self.services.iter().all(|s| s.budget_honoured)
    }
}

/// The services a mass run of `slots` slots deploys: name suffix, slot count, backend.
pub fn layout(slots: u32, backends: &[Backend]) -> Vec<(u32, Backend)> {
    let mut out = Vec::new();
    let mut left = slots;
    let mut j = 0usize;
    while left > 0 {
        let n = left.min(PER_SERVICE);
        out.push((n, backends[j % backends.len()]));
        left -= n;
        j += 1;
    }
    out
}

/// Outages of one slot, as (from, to) ms after the fault: every gap over [`GAP`] between its
/// acknowledgements (`arrivals`, ms after the fault, sorted), counting from `from` (the last
/// acknowledgement before the fault, negative or zero) to `end`.
pub fn outages(arrivals: &[i64], from: i64, end: i64) -> Vec<(i64, i64)> {
    let gap = GAP.as_millis() as i64;
    let mut points = vec![from];
    points.extend(arrivals.iter().copied().filter(|&a| a > from && a <= end));
    points.push(end);
    points
        .windows(2)
        .filter(|p| p[1] - p[0] > gap)
        .map(|p| (p[0], p[1]))
        .collect()
}

/// The most intervals open at one instant (an interval ending where another begins does not
/// overlap it).
pub fn max_concurrent(intervals: &[(i64, i64)]) -> u32 {
    let mut edges: Vec<(i64, i32)> = intervals
        .iter()
        .flat_map(|&(a, b)| [(a, 1), (b, -1)])
        .collect();
    // Ends before starts at the same instant.
    edges.sort();
    let (mut open, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        open += d;
        most = most.max(open);
    }
    most as u32
}

/// Nearest-rank percentile.
pub(super) fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

/// The run's verdict from its slots': the last slot's time to serve (none if any slot never
/// served), sums of what was acknowledged, lost and overlapped, every problem.
pub fn combine(slots: &[Verdict]) -> Verdict {
    let last = slots
        .iter()
        .map(|v| v.seconds_to_serve)
        .try_fold(0.0f64, |m, s| s.map(|s| m.max(s)));
    Verdict {
        seconds_to_serve: if slots.is_empty() { None } else { last },
        served_by: slots.iter().find_map(|v| v.served_by),
        acked: slots.iter().map(|v| v.acked).sum(),
        lost_acked: slots.iter().map(|v| v.lost_acked).sum(),
        lost_examples: slots
            .iter()
            .flat_map(|v| v.lost_examples.iter().cloned())
            .take(5)
            .collect(),
        double_writers: slots.iter().map(|v| v.double_writers).sum(),
        overlap_seconds: slots.iter().map(|v| v.overlap_seconds).fold(0.0, f64::max),
        writers: slots.iter().map(|v| v.writers).sum(),
        tasks: Vec::new(),
        max_gap_seconds: slots.iter().map(|v| v.max_gap_seconds).fold(0.0, f64::max),
        down_seconds: slots.iter().map(|v| v.down_seconds).fold(0.0, f64::max),
        problems: slots.iter().flat_map(|v| v.problems.clone()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_split_into_services_of_ten_taking_the_backends_in_turn() {
        let b = [Backend::Shared, Backend::Replicated];
        assert_eq!(
            layout(25, &b),
            vec![
                (10, Backend::Shared),
                (10, Backend::Replicated),
                (5, Backend::Shared)
            ]
        );
        assert_eq!(layout(3, &b[..1]), vec![(3, Backend::Shared)]);
        assert!(layout(0, &b).is_empty());
    }

    #[test]
    fn an_outage_is_a_gap_over_a_second_up_to_the_end() {
        // Writing every 20 ms until the fault, silent 4.5 s, writing again, silent at the end.
        let mut a: Vec<i64> = (-200..=0).step_by(20).collect();
        a.extend((4500..6000).step_by(20));
        assert_eq!(outages(&a, 0, 6000), vec![(0, 4500)]);
        // Never writing again: out to the end.
        assert_eq!(outages(&a[..11], 0, 6000), vec![(0, 6000)]);
        let b: Vec<i64> = vec![0, 4500, 4520];
        assert_eq!(outages(&b, 0, 9000), vec![(0, 4500), (4520, 9000)]);
        // A gap of exactly a second is not an outage.
        assert_eq!(outages(&[0, 1000], 0, 1000), Vec::<(i64, i64)>::new());
    }

    #[test]
    fn the_most_outages_at_once_counts_overlaps_not_touches() {
        assert_eq!(max_concurrent(&[]), 0);
        assert_eq!(max_concurrent(&[(0, 10), (2, 5), (4, 12)]), 3);
        assert_eq!(max_concurrent(&[(0, 10), (10, 20), (20, 30)]), 1);
        assert_eq!(max_concurrent(&[(0, 10), (5, 20), (15, 30)]), 2);
    }

    fn v(s: Option<f64>, lost: usize, two: usize) -> Verdict {
        Verdict {
            seconds_to_serve: s,
            served_by: None,
            acked: 100,
            lost_acked: lost,
            lost_examples: Vec::new(),
            double_writers: two,
            overlap_seconds: 0.0,
            writers: 2,
            tasks: Vec::new(),
            max_gap_seconds: s.unwrap_or(0.0),
            down_seconds: 0.0,
            problems: Vec::new(),
        }
    }

    #[test]
    fn the_run_serves_when_its_last_slot_does_and_fails_on_any_slot() {
        let ok = combine(&[v(Some(4.0), 0, 0), v(Some(7.5), 0, 0), v(Some(5.0), 0, 0)]);
        assert_eq!(ok.seconds_to_serve, Some(7.5));
        assert_eq!(ok.acked, 300);
        assert!(ok.safe_and_serving());
        let never = combine(&[v(Some(4.0), 0, 0), v(None, 0, 0)]);
        assert_eq!(never.seconds_to_serve, None);
        assert!(!never.safe_and_serving());
        let lost = combine(&[v(Some(4.0), 0, 0), v(Some(4.0), 3, 0)]);
        assert_eq!(lost.lost_acked, 3);
        assert!(!lost.safe_and_serving());
        let two = combine(&[v(Some(4.0), 0, 1), v(Some(4.0), 0, 0)]);
        assert!(!two.safe_and_serving());
        assert_eq!(combine(&[]).seconds_to_serve, None);
    }
}
