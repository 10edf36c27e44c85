//! A named lock held through a session: what an election contends for.
//!
//! **Which errors mean "the session is dead"** (the one rule, for every lock): only an answer
//! from the lock service saying that the session this process holds no longer exists, or is
//! not valid for the lock: Consul's `404` to a renewal, or its `500 invalid session` to an
//! acquire. Such a session can hold nothing any more, so its holder stops at once whatever the
//! [`Policy`](crate::Policy), and the lock replaces the session in the same round. Every other
//! failure (no answer, a timeout, any other status, `No cluster leader`) is
//! [`LockError::Unavailable`]: the lock service did not decide, the session may well be alive,
//! and the policy says what the holder does meanwhile. The control service's leader lock has no
//! session apart from the grant itself, so none of its errors is a dead session: a refusal is
//! an answer ([`Acquired::HeldBy`]), anything else is unavailability.

use std::future::Future;

/// What a round got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired<T> {
    /// This process holds the lock; the token fences the writes it makes as the holder (a
    /// newer holder's token differs, and the store refuses the older one).
    Held(T),
    /// Another holds it, named as it wrote itself in, if known.
    HeldBy(Option<String>),
}

/// Why a round did not decide.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    /// The lock service says this process's session is gone (see the module doc).
    #[error("the session is gone: {0}")]
    SessionDead(String),
    /// The lock service did not decide: unreachable, timed out, or answered an error.
    #[error("{0}")]
    Unavailable(String),
}

/// A lock taken through a session, one round at a time. Implementations keep their session
/// (if any) across rounds and replace it when it is dead.
pub trait SessionLock: Send + 'static {
    /// What fences the holder's writes: Consul's session ID, the control lock's epoch.
    type Token: Clone + Send + Sync + std::fmt::Debug + 'static;

    /// One round: renew the session (making one if there is none), then take the lock or keep
    /// it. A dead session is forgotten (so the next call makes a new one) and reported as
    /// [`LockError::SessionDead`].
    fn acquire(&mut self) -> impl Future<Output = Result<Acquired<Self::Token>, LockError>> + Send;

    /// Lets the lock go (so a standby takes it at its next round) and ends the session.
    /// Failures are logged: the lock then lapses on its TTL.
    fn release(&mut self) -> impl Future<Output = ()> + Send;

    /// The token of the session or grant the writes would carry now, if any.
    fn token(&self) -> Option<Self::Token>;

    /// For logs: which lock, and where.
    fn describe(&self) -> String;
}
