//! The election's rules, without I/O: what one round's outcome does to this process's
//! leadership, under the one setting that differs between users, [`Policy`].
//!
//! - A round that wins leads until its send time plus the TTL ([`DeadlineLease`]).
//! - A round that finds the lock held by another stops leading at once.
//! - A round whose session is dead ([`LockError::SessionDead`]) stops leading at once, under
//!   either policy: that session can hold nothing any more.
//! - A round that could not reach the lock service ([`LockError::Unavailable`]): under
//!   [`Policy::StepDown`] stops leading at once; under [`Policy::ServeToDeadline`] leaves the
//!   deadline as it was (a holder serves on to it, and no further, as the lock service's own
//!   promise covers: it frees the lock no earlier than the TTL after the last renewal).
//! - A write the store refused as if deposed ([`Election::deposed`]) stops leading at once.

use std::ops::Add;
use std::time::{Duration, Instant};

use crate::lease::DeadlineLease;
use crate::lock::LockError;

/// What a holder does when a round could not reach the lock service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Stop acting at the first failed round (`berth run`: a daemon that cannot reach its
    /// lock service stops changing the swarm; the standby that takes over acts soon enough).
    StepDown,
    /// Serve on until the deadline the last good round earned, and no further (the control
    /// service: a lock-service blip shorter than the TTL does not cost every node its lease,
    /// and so its containers).
    ServeToDeadline,
}

/// What a round changed, for the caller's logs and wake-ups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Leads now, and did not just before.
    Gained,
    /// Led and still leads.
    Kept,
    /// Led and no longer does.
    SteppedDown,
    /// Did not lead and still does not.
    Standby,
}

/// One process's standing in an election.
#[derive(Debug, Clone)]
pub struct Election<T = Instant> {
    policy: Policy,
    lease: DeadlineLease<T>,
    /// Who holds the lock, as its holder wrote itself in, when another does.
    holder: Option<String>,
    /// Why the last round did not decide; `None` after one that did.
    error: Option<String>,
}

impl<T: Copy + Ord + Add<Duration, Output = T>> Election<T> {
    pub fn new(policy: Policy) -> Self {
        Election {
            policy,
            lease: DeadlineLease::default(),
            holder: None,
            error: None,
        }
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Whether this process may act at `now`.
    pub fn leads_at(&self, now: T) -> bool {
        self.lease.holds(now)
    }

    /// The current deadline, if a round won since the last step-down (it may have passed).
    pub fn until(&self) -> Option<T> {
        self.lease.until()
    }

    pub fn holder(&self) -> Option<&str> {
        self.holder.as_deref()
    }

    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    fn change(&self, was: bool, now: T) -> Change {
        match (was, self.leads_at(now)) {
            (false, true) => Change::Gained,
            (true, true) => Change::Kept,
            (true, false) => Change::SteppedDown,
            (false, false) => Change::Standby,
        }
    }

    /// The round sent at `sent` won the lock for `ttl`.
    pub fn won(&mut self, sent: T, ttl: Duration, now: T) -> Change {
        let was = self.leads_at(now);
        self.lease.grant(sent, ttl);
        self.holder = None;
        self.error = None;
        self.change(was, now)
    }

    /// The lock is held by another (`holder`, if known), or this process must not lead for a
    /// reason of its own (`error`: it could not take up the state it would serve).
    pub fn stand_by(&mut self, holder: Option<String>, error: Option<String>, now: T) -> Change {
        let was = self.leads_at(now);
        self.lease.end();
        self.holder = holder;
        self.error = error;
        self.change(was, now)
    }

    /// The round failed with `e`: the policy decides, but a dead session always stops.
    pub fn failed(&mut self, e: &LockError, now: T) -> Change {
        let was = self.leads_at(now);
        let stop = match e {
            LockError::SessionDead(_) => true,
            LockError::Unavailable(_) => self.policy == Policy::StepDown,
        };
        if stop {
            self.lease.end();
            // Who holds the lock now is for the next round to read.
            self.holder = None;
        }
        self.error = Some(e.to_string());
        self.change(was, now)
    }

    /// A store refused a write as if this process were deposed (or it resigns): stop at once.
    pub fn deposed(&mut self, now: T) -> Change {
        let was = self.leads_at(now);
        self.lease.end();
        self.holder = None;
        self.change(was, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(10);

    fn t(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn unavailable() -> LockError {
        LockError::Unavailable("No cluster leader".into())
    }

    #[test]
    fn a_win_leads_until_the_send_time_plus_the_ttl() {
        let mut e = Election::new(Policy::StepDown);
        assert!(!e.leads_at(t(0)));
        // Sent at 0, answered at 3: leads until 10, not 13.
        assert_eq!(e.won(t(0), TTL, t(3)), Change::Gained);
        assert!(e.leads_at(t(9)));
        assert!(!e.leads_at(t(10)), "stops on its own clock, with no answer");
        assert_eq!(e.won(t(5), TTL, t(6)), Change::Kept);
        assert_eq!(e.until(), Some(t(15)));
    }

    #[test]
    fn an_answer_that_came_after_the_ttl_grants_nothing_usable() {
        let mut e = Election::new(Policy::ServeToDeadline);
        assert_eq!(e.won(t(0), TTL, t(11)), Change::Standby);
        assert!(!e.leads_at(t(11)));
    }

    #[test]
    fn step_down_stops_at_the_first_failed_round() {
        let mut e = Election::new(Policy::StepDown);
        e.won(t(0), TTL, t(0));
        assert_eq!(e.failed(&unavailable(), t(1)), Change::SteppedDown);
        assert!(!e.leads_at(t(1)));
        assert_eq!(e.error(), Some("No cluster leader"));
        assert_eq!(e.won(t(2), TTL, t(2)), Change::Gained);
        assert_eq!(e.error(), None, "a good round clears the error");
    }

    #[test]
    fn serve_to_deadline_serves_through_failed_rounds_and_no_further() {
        let mut e = Election::new(Policy::ServeToDeadline);
        e.won(t(0), TTL, t(0));
        assert_eq!(e.failed(&unavailable(), t(3)), Change::Kept);
        assert_eq!(e.failed(&unavailable(), t(6)), Change::Kept);
        assert_eq!(e.until(), Some(t(10)), "a failed round extends nothing");
        assert!(e.leads_at(t(9)));
        assert!(!e.leads_at(t(10)));
        assert_eq!(e.failed(&unavailable(), t(10)), Change::Standby);
    }

    #[test]
    fn a_dead_session_stops_the_holder_under_either_policy() {
        for policy in [Policy::StepDown, Policy::ServeToDeadline] {
            let mut e = Election::new(policy);
            e.won(t(0), TTL, t(0));
            let dead = LockError::SessionDead("404".into());
            assert_eq!(e.failed(&dead, t(1)), Change::SteppedDown, "{policy:?}");
            assert!(!e.leads_at(t(1)));
        }
    }

    #[test]
    fn another_holder_or_a_refused_write_stops_the_holder_at_once() {
        let mut e = Election::new(Policy::ServeToDeadline);
        e.won(t(0), TTL, t(0));
        assert_eq!(
            e.stand_by(Some("m2".into()), None, t(1)),
            Change::SteppedDown
        );
        assert_eq!(e.holder(), Some("m2"));
        e.won(t(2), TTL, t(2));
        assert_eq!(e.deposed(t(3)), Change::SteppedDown);
        assert!(!e.leads_at(t(3)));
        assert_eq!(e.deposed(t(4)), Change::Standby);
    }
}
