//! Control time: the clock every instant the control state records is read on — when a volume
//! was fenced or released, a standby's position, a Flocker lease's expiry. It never goes back,
//! is never stepped by a machine's wall clock, and carries on across control leaders: it starts
//! at the wall clock once (a new cluster, or a state written before control time existed),
//! then counts each serving instance's monotonic time, and a new leader continues from the last
//! instant its predecessor recorded (`State::clock_ms`, written at least every `tick`) plus one
//! tick and one lease. So it counts the time writes were possible: an agent writes only under a
//! lease (ARCHITECTURE "Fencing"), leases are granted only while a leader serves, and none
//! outlives its grant by more than a lease — a standby's lag is therefore never measured
//! against two machines' wall clocks, and a staler standby never looks fresher for being
//! reported to a leader whose clock is ahead.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often the serving instance records the time it has reached.
pub const TICK: Duration = Duration::from_secs(5);

/// The serving instance's control clock.
#[derive(Debug)]
pub struct ControlClock {
    /// Control time at `at`.
    base: Mutex<(u64, Instant)>,
}

impl ControlClock {
    /// A clock continuing from a state whose last recorded instant is `recorded_ms` (0: none),
    /// where leases last `lease_ms`; `wall_ms` is the wall clock, read only to start a clock
    /// that has no past.
    pub fn continuing(recorded_ms: u64, lease_ms: u64, wall_ms: u64) -> ControlClock {
        ControlClock {
            base: Mutex::new((start_at(recorded_ms, lease_ms, wall_ms), Instant::now())),
        }
    }

    /// Now, in control ms.
    pub fn now_ms(&self) -> u64 {
        let (base, at) = *self.base.lock().unwrap_or_else(|p| p.into_inner());
        base + at.elapsed().as_millis() as u64
    }

    /// Now, in control seconds (Flocker's leases count in seconds).
    pub fn now_secs(&self) -> f64 {
        self.now_ms() as f64 / 1000.0
    }

    /// Takes over a state whose last recorded instant is `recorded_ms`: continues from it (plus
    /// a tick and a lease), never going back from where this clock already is.
    pub fn take_over(&self, recorded_ms: u64, lease_ms: u64, wall_ms: u64) {
        let now = self.now_ms();
        let from = start_at(recorded_ms, lease_ms, wall_ms).max(now);
        *self.base.lock().unwrap_or_else(|p| p.into_inner()) = (from, Instant::now());
    }
}

fn start_at(recorded_ms: u64, lease_ms: u64, wall_ms: u64) -> u64 {
    if recorded_ms == 0 {
        wall_ms
    } else {
        recorded_ms + TICK.as_millis() as u64 + lease_ms
    }
}

/// The wall clock in ms since the Unix epoch: only to start a clock with no past, and for
/// display.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_with_no_past_starts_at_the_wall_clock_and_one_with_a_past_continues_it() {
        assert_eq!(start_at(0, 5_000, 1_700_000_000_000), 1_700_000_000_000);
        assert_eq!(start_at(42_000, 5_000, 1_700_000_000_000), 52_000);
        let c = ControlClock::continuing(42_000, 5_000, 9);
        let t = c.now_ms();
        assert!((52_000..53_000).contains(&t), "{t}");
        std::thread::sleep(Duration::from_millis(5));
        assert!(c.now_ms() > t, "it counts");
    }

    #[test]
    fn a_takeover_never_moves_the_clock_back() {
        let c = ControlClock::continuing(100_000, 5_000, 0);
        let before = c.now_ms();
        c.take_over(1_000, 5_000, 0);
        assert!(
            c.now_ms() >= before,
            "an older record does not pull it back"
        );
        c.take_over(500_000, 5_000, 0);
        assert!(c.now_ms() >= 510_000, "a newer one moves it on");
    }
}
