//! The one source of randomness: a ChaCha8 stream per subsystem, each seeded from the run's
//! single `u64` seed and the subsystem's name, so adding draws in one subsystem never shifts
//! another's (the fault schedule stays the same when, say, heartbeat jitter changes).

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

/// Subsystems with their own stream. The discriminant is part of the derived seed: never
/// renumber, only append.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stream {
    Faults = 1,
    SwarmHeartbeat = 2,
    BerthHeartbeat = 3,
}

pub struct SimRng(ChaCha8Rng);

impl SimRng {
    /// A stream for `subsystem`, with `index` for per-node streams (0 otherwise).
    pub fn derive(seed: u64, subsystem: Stream, index: u64) -> SimRng {
        // SplitMix64 finaliser over (seed, subsystem, index): cheap and well mixed, so nearby
        // seeds and node indices give unrelated streams.
        let mut z = seed
            ^ (subsystem as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        SimRng(ChaCha8Rng::seed_from_u64(z))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `lo..=hi` (inclusive); `lo` when the range is empty.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        let span = hi - lo + 1;
        // Rejection sampling: no modulo bias, so results do not depend on the span's shape.
        let zone = u64::MAX - (u64::MAX % span);
        loop {
            let v = self.next_u64();
            if v < zone {
                return lo + v % span;
            }
        }
    }

    /// Uniform in `centre - spread ..= centre + spread`, clamped at zero.
    pub fn jitter(&mut self, centre: u64, spread: u64) -> u64 {
        self.range(centre.saturating_sub(spread), centre + spread)
    }

    /// A gap uniform in `0..=2*mean`: mean `mean`, integer-only, so the fault schedule is
    /// identical on every platform (an exponential draw would need `ln`, whose last bit is
    /// libm's business).
    pub fn gap(&mut self, mean: u64) -> u64 {
        self.range(0, mean.saturating_mul(2))
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            return None;
        }
        let i = self.range(0, items.len() as u64 - 1) as usize;
        items.get(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_independent() {
        let a: Vec<u64> = (0..4)
            .map(|_| 0)
            .scan(SimRng::derive(7, Stream::Faults, 0), |r, _| {
                Some(r.range(0, 1000))
            })
            .collect();
        let b: Vec<u64> = (0..4)
            .scan(SimRng::derive(7, Stream::Faults, 0), |r, _| {
                Some(r.range(0, 1000))
            })
            .collect();
        assert_eq!(a, b);
        let mut c = SimRng::derive(7, Stream::SwarmHeartbeat, 0);
        let mut d = SimRng::derive(8, Stream::Faults, 0);
        assert_ne!(a[0..2], [c.range(0, 1000), c.range(0, 1000)]);
        assert_ne!(a[0..2], [d.range(0, 1000), d.range(0, 1000)]);
    }

    #[test]
    fn ranges_stay_in_bounds() {
        let mut r = SimRng::derive(1, Stream::Faults, 0);
        for _ in 0..1000 {
            let v = r.jitter(5_000, 500);
            assert!((4_500..=5_500).contains(&v));
        }
        assert_eq!(r.range(3, 3), 3);
    }
}
