//! The deadline lease: a grant that holds until the moment its request was *sent* plus the TTL.
//!
//! Why the send time: the lock service (Consul, the control service) starts its own TTL when it
//! receives, or later when it has confirmed it may grant; both are after the send. Counting from
//! the send on this process's monotonic clock ends the lease here no later than there, on
//! clocks that run at the same rate (the assumption of every TTL), however long the answer
//! took to come back. The deadline itself counts as lapsed.
//!
//! Generic over the instant, so the same rule serves [`std::time::Instant`] and a boot-clock
//! offset (a `Duration`); pure, so tests pass instants in.

use std::ops::Add;
use std::time::Duration;

/// Held until `until` (exclusive); `None`: not held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadlineLease<T> {
    until: Option<T>,
}

impl<T> Default for DeadlineLease<T> {
    fn default() -> Self {
        DeadlineLease { until: None }
    }
}

impl<T: Copy + Ord + Add<Duration, Output = T>> DeadlineLease<T> {
    /// A request sent at `sent` was granted for `ttl`: held until `sent + ttl`. A grant never
    /// moves the deadline earlier than an earlier grant already promised.
    pub fn grant(&mut self, sent: T, ttl: Duration) {
        let until = sent + ttl;
        self.until = Some(self.until.map_or(until, |u| u.max(until)));
    }

    /// Whether the lease holds at `now`.
    pub fn holds(&self, now: T) -> bool {
        self.until.is_some_and(|u| now < u)
    }

    /// Ends the lease now, whatever its deadline.
    pub fn end(&mut self) {
        self.until = None;
    }

    /// The deadline, if granted (it may have passed).
    pub fn until(&self) -> Option<T> {
        self.until
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn a_grant_holds_from_the_send_until_the_ttl_and_not_at_the_deadline() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        let mut l = DeadlineLease::default();
        assert!(!l.holds(t0), "nothing granted yet");
        // The answer came 4 s after the send: the deadline still counts from the send.
        l.grant(t0, ttl);
        assert!(l.holds(t0 + Duration::from_secs(4)));
        assert!(l.holds(t0 + ttl - Duration::from_nanos(1)));
        assert!(!l.holds(t0 + ttl), "the deadline counts as lapsed");
        l.end();
        assert!(!l.holds(t0));
        assert_eq!(l.until(), None);
    }

    #[test]
    fn a_later_grant_extends_and_an_older_one_never_shortens() {
        let t0 = Duration::from_secs(100);
        let ttl = Duration::from_secs(10);
        let mut l = DeadlineLease::default();
        l.grant(t0 + Duration::from_secs(3), ttl);
        l.grant(t0, ttl);
        assert_eq!(l.until(), Some(t0 + Duration::from_secs(13)));
    }
}
