//! The shared handle the acting code asks whether it may act: `berth run`'s controller and API,
//! the control service's seat. Without an election it always leads; with one it leads while
//! its [`Election`] says so, measured on the injected [`Clock`], so a holder whose lock calls
//! hang stops on its own clock without waiting for any answer.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

use crate::clock::{Clock, SystemClock};
use crate::policy::{Change, Election, Policy};

/// What a readiness endpoint shows of the election.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// False without an election: always the leader.
    pub elected: bool,
    pub leader: bool,
    /// Who holds the lock, as its holder wrote itself in, when another does.
    pub holder: Option<String>,
    /// Why the last round failed; `None` after a good one.
    pub error: Option<String>,
}

/// Shared between the elector and whoever acts on its verdict.
pub struct Leadership {
    /// `None`: no election, always the leader.
    election: Mutex<Option<Election>>,
    clock: Arc<dyn Clock>,
    /// Wakes a standby when it becomes the leader, so it acts at once.
    gained: Notify,
    /// Wakes the elector when a write was refused as if deposed, so the next round comes now.
    resync: Notify,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("election", &*self.lock())
            .finish()
    }
}

impl Leadership {
    /// The only instance: always the leader.
    pub fn always() -> Arc<Leadership> {
        Arc::new(Leadership {
            election: Mutex::new(None),
            clock: Arc::new(SystemClock),
            gained: Notify::new(),
            resync: Notify::new(),
        })
    }

    /// One of several: standby until a round wins, then as `policy` says.
    pub fn elected(policy: Policy) -> Arc<Leadership> {
        Self::elected_on(policy, Arc::new(SystemClock))
    }

    /// [`Leadership::elected`] on `clock` (a test's).
    pub fn elected_on(policy: Policy, clock: Arc<dyn Clock>) -> Arc<Leadership> {
        Arc::new(Leadership {
            election: Mutex::new(Some(Election::new(policy))),
            clock,
            gained: Notify::new(),
            resync: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Election>> {
        self.election.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Now, on the clock leadership is measured on.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Whether this instance may act now.
    pub fn is_leader(&self) -> bool {
        self.leads_at(self.now())
    }

    /// Whether it may act at `now` (the deadline counts as lapsed).
    pub fn leads_at(&self, now: Instant) -> bool {
        self.lock().as_ref().is_none_or(|e| e.leads_at(now))
    }

    /// The election's policy; `None` without an election.
    pub fn policy(&self) -> Option<Policy> {
        self.lock().as_ref().map(Election::policy)
    }

    /// The deadline of the last winning round, if it did not step down since.
    pub fn until(&self) -> Option<Instant> {
        self.lock().as_ref().and_then(Election::until)
    }

    pub fn view(&self) -> View {
        let now = self.now();
        let e = self.lock();
        match e.as_ref() {
            None => View {
                elected: false,
                leader: true,
                holder: None,
                error: None,
            },
            Some(e) => View {
                elected: true,
                leader: e.leads_at(now),
                holder: e.holder().map(str::to_string),
                error: e.error().map(str::to_string),
            },
        }
    }

    /// Applies one of [`Election`]'s rules at now; wakes [`Leadership::gained`] on a gain. A
    /// no-op (`Kept`) without an election.
    pub fn apply(&self, rule: impl FnOnce(&mut Election, Instant) -> Change) -> Change {
        let now = self.now();
        let change = match self.lock().as_mut() {
            Some(e) => rule(e, now),
            None => Change::Kept,
        };
        if change == Change::Gained {
            self.gained.notify_one();
        }
        change
    }

    /// Not (or no longer) the leader: `holder` leads instead, if known; `error` says why, if
    /// this instance stands by for a reason of its own.
    pub fn stand_by(&self, holder: Option<String>, error: Option<String>) {
        self.apply(|e, now| e.stand_by(holder, error, now));
    }

    /// Leads until `until` (a grant whose deadline is already known; tests).
    pub fn lead_until(&self, until: Instant) {
        self.apply(|e, now| e.won(until, std::time::Duration::ZERO, now));
    }

    /// A write was refused as if this instance were deposed: stop now, and have the elector
    /// look again at once.
    pub fn lost(&self) {
        self.apply(|e, now| e.deposed(now));
        self.resync.notify_one();
    }

    /// Resolves when this instance becomes the leader (or became it since the last call).
    pub async fn gained(&self) {
        self.gained.notified().await;
    }

    /// Resolves when a write was refused as if deposed (or was since the last call).
    pub async fn resync_wanted(&self) {
        self.resync.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;
    use crate::lock::LockError;

    #[test]
    fn without_an_election_always_leads() {
        let l = Leadership::always();
        assert!(l.is_leader());
        assert!(!l.view().elected);
        l.lost();
        assert!(l.is_leader(), "nothing to lose");
    }

    #[test]
    fn an_elected_leader_stops_at_its_deadline_on_the_injected_clock() {
        let clock = Arc::new(ManualClock::default());
        let l = Leadership::elected_on(Policy::ServeToDeadline, clock.clone());
        assert!(!l.is_leader(), "standby until a round wins");
        let sent = l.now();
        clock.advance(Duration::from_secs(2));
        l.apply(|e, now| e.won(sent, Duration::from_secs(10), now));
        assert!(l.is_leader());
        let failed = l.apply(|e, now| e.failed(&LockError::Unavailable("down".into()), now));
        assert_eq!(failed, Change::Kept);
        clock.advance(Duration::from_secs(8) - Duration::from_millis(1));
        assert!(l.is_leader());
        clock.advance(Duration::from_millis(1));
        assert!(!l.is_leader(), "10 s after the send, not after the answer");
        assert_eq!(l.view().error.as_deref(), Some("down"));
    }

    #[test]
    fn a_refused_write_stops_the_leader_and_asks_for_a_round() {
        let l = Leadership::elected(Policy::ServeToDeadline);
        let now = l.now();
        l.apply(|e, n| e.won(now, Duration::from_secs(60), n));
        assert!(l.is_leader());
        l.lost();
        assert!(!l.is_leader());
        // The wake-up was stored for the elector's next wait.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(1), l.resync_wanted())
                .await
                .expect("woken");
        });
    }
}
