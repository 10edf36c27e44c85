//! Holding a byte stream to a rate, on either end of a move.

use std::time::{Duration, Instant};

/// Sleeps the calling (blocking) thread whenever the stream gets ahead of `rate` bytes per
/// second, measured from the first byte; `None` or 0 never sleeps.
pub(super) struct Pacer {
    rate: Option<u64>,
    started: Instant,
    bytes: u64,
}

impl Pacer {
    pub(super) fn new(rate: Option<u64>) -> Pacer {
        Pacer {
            rate: rate.filter(|r| *r > 0),
            started: Instant::now(),
            bytes: 0,
        }
    }

    /// Counts `n` more bytes, then waits until they are due.
    pub(super) fn add(&mut self, n: u64) {
        self.bytes += n;
        if let Some(rate) = self.rate {
            let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(self.started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
}
