//! The controller's clock, injected so a test can run the real controller on time it moves
//! itself. Monotonic time decides everything — executor timers, retry limits, how long a stop
//! or a start is waited for; the wall clock is read only to show a time to a person
//! (`/v1/failovers`).

use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::watch;

pub trait Clock: Send + Sync + 'static {
    /// Milliseconds on a monotonic clock: never goes back; its origin is arbitrary and starts
    /// again with the process (the executor's driver carries its timers across a restart).
    fn now_ms(&self) -> u64;

    /// Resolves once `now_ms() >= at_ms`.
    fn sleep_until(&self, at_ms: u64) -> BoxFuture<'static, ()>;

    /// Unix time in milliseconds, for display only.
    fn wall_ms(&self) -> u64;

    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        let at = self
            .now_ms()
            .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.sleep_until(at)
    }
}

/// The process's monotonic clock (tokio's, so a test may also pause it).
pub struct SystemClock {
    origin: tokio::time::Instant,
}

impl SystemClock {
    pub fn new() -> SystemClock {
        SystemClock {
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn sleep_until(&self, at_ms: u64) -> BoxFuture<'static, ()> {
        let at = self.origin + Duration::from_millis(at_ms);
        Box::pin(tokio::time::sleep_until(at))
    }

    fn wall_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that moves only when told ([`ManualClock::advance`]); sleepers wake as it passes
/// their time. For tests.
pub struct ManualClock {
    now: watch::Sender<u64>,
    wall_origin: u64,
}

impl ManualClock {
    /// Starts at monotonic `0`, showing `wall_origin` (Unix ms) as the wall time then.
    pub fn new(wall_origin: u64) -> ManualClock {
        ManualClock {
            now: watch::Sender::new(0),
            wall_origin,
        }
    }

    pub fn advance(&self, d: Duration) {
        let d = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.now.send_modify(|t| *t = t.saturating_add(d));
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        *self.now.borrow()
    }

    fn sleep_until(&self, at_ms: u64) -> BoxFuture<'static, ()> {
        let mut rx = self.now.subscribe();
        Box::pin(async move {
            // The sender lives as long as the clock; a clock dropped never wakes anyone.
            if rx.wait_for(|t| *t >= at_ms).await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }

    fn wall_ms(&self) -> u64 {
        self.wall_origin.saturating_add(self.now_ms())
    }
}
