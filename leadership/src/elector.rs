//! The election's I/O shell: one round every TTL/3 against a [`SessionLock`], its outcome
//! handed to [`Election`](crate::Election)'s rules through [`Leadership`], and the lock's
//! fencing token published ([`Fence`]) for the writes only the holder may make.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::leadership::Leadership;
use crate::lock::{Acquired, LockError, SessionLock};
use crate::policy::Change;

/// What a process must do between winning the lock and acting on it (the control service
/// takes up the shared state, fenced by the new token); an error keeps it standing by.
pub trait Takeover<T>: Send + Sync {
    fn take_over(&self, token: &T) -> impl Future<Output = Result<(), String>> + Send;
}

/// Nothing to take up: act as soon as the lock is won.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTakeover;

impl<T: Sync> Takeover<T> for NoTakeover {
    async fn take_over(&self, _token: &T) -> Result<(), String> {
        Ok(())
    }
}

/// The token the holder's writes carry now (`None`: no session or grant), as the elector
/// changes it.
#[derive(Debug)]
pub struct Fence<T>(Arc<Mutex<Option<T>>>);

impl<T> Clone for Fence<T> {
    fn clone(&self) -> Self {
        Fence(self.0.clone())
    }
}

impl<T> Default for Fence<T> {
    fn default() -> Self {
        Fence(Arc::default())
    }
}

impl<T: Clone> Fence<T> {
    pub fn get(&self) -> Option<T> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, token: Option<T>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = token;
    }
}

/// One process's side of an election.
pub struct Elector<L: SessionLock> {
    lock: L,
    ttl: Duration,
    leadership: Arc<Leadership>,
    fence: Fence<L::Token>,
}

impl<L: SessionLock> Elector<L> {
    /// `ttl`: how long one won round leads, from its send (the lock's own TTL).
    pub fn new(lock: L, ttl: Duration, leadership: Arc<Leadership>) -> Elector<L> {
        Elector {
            lock,
            ttl,
            leadership,
            fence: Fence::default(),
        }
    }

    pub fn lock(&self) -> &L {
        &self.lock
    }

    pub fn leadership(&self) -> &Arc<Leadership> {
        &self.leadership
    }

    /// The token of the current session or grant, as it changes.
    pub fn fence(&self) -> Fence<L::Token> {
        self.fence.clone()
    }

    /// A third of the TTL, so two rounds may fail before a grant lapses.
    pub fn interval(&self) -> Duration {
        self.ttl / 3
    }

    /// One round with nothing to take up on winning.
    pub async fn round(&mut self) -> Result<(), LockError> {
        self.round_with(&NoTakeover).await
    }

    /// One round: take or keep the lock, and lead (after `takeover`, on a gain) or stand by.
    /// A dead session stops this process at once and is replaced in the same round.
    pub async fn round_with<G: Takeover<L::Token>>(
        &mut self,
        takeover: &G,
    ) -> Result<(), LockError> {
        match self.attempt(takeover).await {
            Err(LockError::SessionDead(e)) => {
                tracing::warn!(lock = %self.lock.describe(), error = %e, "the session is gone; a new one is made");
                self.attempt(takeover).await
            }
            done => done,
        }
    }

    async fn attempt<G: Takeover<L::Token>>(&mut self, takeover: &G) -> Result<(), LockError> {
        let sent = self.leadership.now();
        let got = self.lock.acquire().await;
        self.fence.set(self.lock.token());
        let change = match &got {
            Ok(Acquired::Held(token)) => {
                if !self.leadership.is_leader()
                    && let Err(e) = takeover.take_over(token).await
                {
                    tracing::error!(lock = %self.lock.describe(), error = %e, "won the lock but cannot take over; not leading");
                    self.leadership
                        .apply(|el, now| el.stand_by(None, Some(e), now));
                    return Ok(());
                }
                let ttl = self.ttl;
                self.leadership.apply(|el, now| el.won(sent, ttl, now))
            }
            Ok(Acquired::HeldBy(holder)) => {
                let holder = holder.clone();
                self.leadership
                    .apply(|el, now| el.stand_by(holder, None, now))
            }
            Err(e) => self.leadership.apply(|el, now| el.failed(e, now)),
        };
        match change {
            Change::Gained => tracing::info!(lock = %self.lock.describe(), "leading"),
            Change::SteppedDown => match &got {
                Err(e) => {
                    tracing::warn!(lock = %self.lock.describe(), error = %e, "no longer the leader: stops acting")
                }
                Ok(_) => {
                    tracing::info!(lock = %self.lock.describe(), holder = ?self.leadership.view().holder, "no longer the leader: the lock is another's")
                }
            },
            Change::Kept | Change::Standby => {}
        }
        got.map(|_| ())
    }

    /// Stops leading and leaves the election: releases the lock (a standby takes it at its next
    /// round) and ends the session.
    pub async fn resign(&mut self) {
        self.leadership.apply(|el, now| el.deposed(now));
        self.lock.release().await;
        self.fence.set(None);
    }

    /// Rounds every TTL/3 (at once after a write refused as if deposed) until `stop` turns
    /// true or its sender is gone, then resigns.
    pub async fn run<G: Takeover<L::Token>>(
        &mut self,
        takeover: G,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        tracing::info!(lock = %self.lock.describe(), ttl = ?self.ttl, policy = ?self.leadership.policy(), "leader election");
        loop {
            if let Err(e) = self.round_with(&takeover).await {
                let left = self
                    .leadership
                    .is_leader()
                    .then(|| self.leadership.until())
                    .flatten()
                    .map(|u| u.saturating_duration_since(self.leadership.now()));
                tracing::warn!(lock = %self.lock.describe(), error = %e, leading_for = ?left, "leader election round failed");
            }
            let leadership = self.leadership.clone();
            tokio::select! {
                _ = stopped(&mut stop) => break,
                _ = leadership.resync_wanted() => {
                    // A refused write: let the lock service settle a moment before asking again.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                _ = tokio::time::sleep(self.interval()) => {}
            }
        }
        self.resign().await;
    }
}

/// Resolves once `stop` turns true, or its sender is gone (holding no borrow across an await,
/// so the loop can be spawned).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        let done = *stop.borrow_and_update();
        if done || stop.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::policy::Policy;

    const TTL: Duration = Duration::from_secs(9);

    /// A lock whose answers are scripted, each taking `latency` on the test's clock.
    struct Scripted {
        answers: VecDeque<Result<Acquired<u64>, LockError>>,
        clock: Arc<ManualClock>,
        latency: Duration,
        token: Option<u64>,
        calls: u32,
    }

    impl SessionLock for Scripted {
        type Token = u64;

        async fn acquire(&mut self) -> Result<Acquired<u64>, LockError> {
            self.calls += 1;
            self.clock.advance(self.latency);
            let a = self.answers.pop_front().expect("a scripted answer");
            self.token = match &a {
                Ok(Acquired::Held(t)) => Some(*t),
                _ => None,
            };
            a
        }

        async fn release(&mut self) {
            self.token = None;
        }

        fn token(&self) -> Option<u64> {
            self.token
        }

        fn describe(&self) -> String {
            "scripted".into()
        }
    }

    fn elector(
        policy: Policy,
        answers: Vec<Result<Acquired<u64>, LockError>>,
    ) -> (Elector<Scripted>, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::default());
        let lock = Scripted {
            answers: answers.into(),
            clock: clock.clone(),
            latency: Duration::from_secs(2),
            token: None,
            calls: 0,
        };
        let l = Leadership::elected_on(policy, clock.clone());
        (Elector::new(lock, TTL, l), clock)
    }

    fn down() -> Result<Acquired<u64>, LockError> {
        Err(LockError::Unavailable("no answer".into()))
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn the_deadline_counts_from_the_send_not_the_answer() {
        let (mut e, clock) = elector(Policy::ServeToDeadline, vec![Ok(Acquired::Held(7)), down()]);
        let sent = clock.now();
        block_on(e.round()).expect("won");
        assert_eq!(e.leadership().until(), Some(sent + TTL));
        assert_eq!(e.fence().get(), Some(7));
        assert!(block_on(e.round()).is_err());
        assert!(e.leadership().is_leader(), "serves on to its deadline");
        clock.advance(TTL - Duration::from_secs(4));
        assert!(!e.leadership().is_leader(), "and no further");
    }

    #[test]
    fn step_down_stops_at_the_first_failed_round_and_clears_the_fence() {
        let (mut e, _clock) = elector(
            Policy::StepDown,
            vec![
                Ok(Acquired::Held(7)),
                down(),
                Ok(Acquired::HeldBy(Some("m2".into()))),
            ],
        );
        block_on(e.round()).expect("won");
        assert!(e.leadership().is_leader());
        assert!(block_on(e.round()).is_err());
        assert!(!e.leadership().is_leader());
        assert_eq!(e.fence().get(), None);
        block_on(e.round()).expect("answered");
        assert_eq!(e.leadership().view().holder.as_deref(), Some("m2"));
    }

    #[test]
    fn a_dead_session_is_replaced_in_the_same_round() {
        let (mut e, _clock) = elector(
            Policy::ServeToDeadline,
            vec![
                Ok(Acquired::Held(1)),
                Err(LockError::SessionDead("404".into())),
                Ok(Acquired::HeldBy(None)),
            ],
        );
        block_on(e.round()).expect("won");
        block_on(e.round()).expect("the second try answered");
        assert_eq!(e.lock().calls, 3, "retried at once");
        assert!(
            !e.leadership().is_leader(),
            "stopped despite serve-to-deadline"
        );
    }

    struct Refuse;

    impl Takeover<u64> for Refuse {
        async fn take_over(&self, _token: &u64) -> Result<(), String> {
            Err("state unreadable".into())
        }
    }

    #[test]
    fn a_failed_takeover_keeps_the_winner_standing_by() {
        let (mut e, _clock) = elector(Policy::ServeToDeadline, vec![Ok(Acquired::Held(1))]);
        block_on(e.round_with(&Refuse)).expect("the round itself worked");
        assert!(!e.leadership().is_leader());
        assert_eq!(
            e.leadership().view().error.as_deref(),
            Some("state unreadable")
        );
        block_on(e.resign());
        assert_eq!(e.fence().get(), None);
    }
}
