//! What replicating lease closures ("Fencing", rule 8) costs at 1,000 nodes: the store writes
//! (Raft entries, when replicated) per second, counted on the control model's own rules over
//! ten simulated minutes, and the CPU time of one closing pass (the scan the service runs every
//! half heartbeat interval under the liveness lock).
//!
//! Writes are counted, not timed: a closing pass that closes any node is one write, and every
//! reopening is counted as its own write (the service coalesces reopenings that wait together,
//! so this over-counts). Printed before criterion's timings.

use std::collections::BTreeMap;

use berth_control_model::liveness::{Liveness, Timing};
use criterion::{Criterion, criterion_group, criterion_main};

const NODES: usize = 1_000;
const SIM_MS: u64 = 600_000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Writes per second over `SIM_MS` with `timing`, where each heartbeat is followed, with
/// probability 1 in `stall_one_in`, by a stall of `stall_ms` (0: never).
fn writes_per_second(timing: Timing, stall_one_in: u64, stall_ms: u64) -> (f64, u64, u64) {
    let mut rng = Rng(0x5eed);
    let nodes: Vec<String> = (0..NODES).map(|i| format!("node-{i:04}")).collect();
    let mut l = Liveness::new(timing);
    l.take_over(0, []);
    let mut next: BTreeMap<&str, u64> = nodes
        .iter()
        .map(|n| (n.as_str(), rng.below(timing.interval_ms)))
        .collect();
    let (mut closes, mut reopens) = (0u64, 0u64);
    let pass = timing.interval_ms / 2;
    let mut t = 0;
    while t < SIM_MS {
        for n in &nodes {
            if next[n.as_str()] <= t {
                if l.is_closed(n) {
                    reopens += 1;
                    l.reopen([n], t);
                }
                l.heartbeat(n, t, true);
                let jitter = rng.below(timing.interval_ms / 4 + 1);
                let stall = if stall_one_in > 0 && rng.below(stall_one_in) == 0 {
                    stall_ms
                } else {
                    0
                };
                next.insert(n, t + timing.interval_ms + jitter + stall);
            }
        }
        if t % pass == 0 && !l.close_quiet(nodes.iter().cloned(), t).is_empty() {
            closes += 1;
        }
        t += 10;
    }
    let secs = SIM_MS as f64 / 1_000.0;
    ((closes + reopens) as f64 / secs, closes, reopens)
}

fn bench(c: &mut Criterion) {
    let default = Timing::default();
    let fast = Timing {
        interval_ms: 250,
        misses: 3,
        lease_ms: 1_500,
    };
    for (name, t) in [("default", default), ("fast", fast)] {
        let (steady, ..) = writes_per_second(t, 0, 0);
        // Each node stalls past the closing threshold about once an hour.
        let beats_per_hour = 3_600_000 / t.interval_ms;
        let (churn, closes, reopens) =
            writes_per_second(t, beats_per_hour, t.close_after_ms() + t.interval_ms);
        println!(
            "lease closures, {NODES} nodes, {name} timing: {steady:.2} writes/s while all \
             heartbeat; {churn:.2} writes/s with each node stalling once an hour ({closes} \
             closing passes and {reopens} reopenings in {} s)",
            SIM_MS / 1_000
        );
    }

    let nodes: Vec<String> = (0..NODES).map(|i| format!("node-{i:04}")).collect();
    let mut l = Liveness::new(default);
    l.take_over(0, []);
    for n in &nodes {
        l.heartbeat(n, 1_000, true);
    }
    c.bench_function("closing pass, 1000 nodes all heartbeating", |b| {
        b.iter(|| l.close_quiet(nodes.iter().cloned(), 1_500))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
