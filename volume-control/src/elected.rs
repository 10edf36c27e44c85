//! The control service on Consul KV, several instances, one elected (`control --consul`): each
//! holds a Consul session and tries to take the leader key with it every TTL/3; the one that
//! holds the key serves, the others answer 503 naming it (the key's value is the holder's URL).
//!
//! Why two holders never both write, or hand out leases that overlap:
//! - **The state.** Once elected, every write is a Consul transaction that also checks the
//!   session still holds the key (`consul::store`): after the session's end, or after another
//!   instance took the key, Consul itself refuses it, however late it arrives. A new holder
//!   takes the state up from Consul, on the writer thread, after every batch queued before.
//! - **Serving.** A holder serves until the moment its last successful renewal was *sent* plus
//!   the TTL (through rounds that fail to reach Consul, but not past a round that finds its
//!   session gone or the key held by another: `berth_leadership`'s deadline lease under
//!   `Policy::ServeToDeadline`); Consul never ends a session earlier than the TTL after a
//!   renewal, except on its
//!   node's failed health check, which is what the lock-delay covers: Consul keeps the key from
//!   any new holder for the lock-delay after a session ends, and the lock-delay must be at least
//!   the TTL (checked at start). So a new holder takes the key only after the old one stopped
//!   serving (on clocks that run at the same rate, the assumption of every TTL).
//! - **Leases.** A node's lease, or a leader lock, is granted only while this instance serves,
//!   so before any newer holder took over; the newer one counts every node as leased, and every
//!   lock as renewed, for one full term from its takeover (`Control::take_over_stored`).

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use berth_consul::{Consul, ElectionConfig};
use berth_leadership::consul::ConsulLock;
use berth_leadership::{Elector, Fence, Leadership, LockError, Policy, Takeover};

use crate::consul_store::ConsulStore;

/// Why a configuration cannot elect a control service safely; Consul's own bounds first.
pub fn validate(config: &ElectionConfig) -> Result<(), String> {
    config.validate()?;
    if config.lock_delay < config.ttl {
        return Err(format!(
            "the lock-delay ({:?}) must be at least the session TTL ({:?}): a session Consul ends \
             early (its node's health check failed) leaves its holder serving up to one TTL, \
             and the lock-delay is what keeps the next one off meanwhile",
            config.lock_delay, config.ttl
        ));
    }
    Ok(())
}

/// The service an elected instance serves: it takes up the shared state when it wins the key
/// (the control service, `api::Control`; a trait so this module does not import the API).
pub trait TakeUp: Send + Sync + 'static {
    /// Takes up the store's document, read after every write queued before, as the state to
    /// serve.
    fn take_over_stored(&self) -> impl Future<Output = Result<(), String>> + Send;
}

impl<T: TakeUp> TakeUp for Arc<T> {
    fn take_over_stored(&self) -> impl Future<Output = Result<(), String>> + Send {
        (**self).take_over_stored()
    }
}

/// This instance's side of the election.
pub struct Elected {
    elector: tokio::sync::Mutex<Elector<ConsulLock>>,
    leadership: Arc<Leadership>,
    /// The session, as the elector changes it.
    session: Fence<String>,
    store: Arc<ConsulStore>,
    key: String,
    identity: String,
}

/// What winning the key takes: the store fenced with the winning session, then the state.
struct Win<'a, T> {
    elected: &'a Elected,
    service: &'a T,
}

impl<T: TakeUp> Takeover<String> for Win<'_, T> {
    async fn take_over(&self, session: &String) -> Result<(), String> {
        self.elected.store.fence_with(&self.elected.key, session);
        self.service
            .take_over_stored()
            .await
            .map_err(|e| format!("cannot take up the state from Consul: {e}"))?;
        tracing::info!(key = %self.elected.key, %session, "leading the control service");
        Ok(())
    }
}

impl Elected {
    /// `store` is the one the control service writes through: it is fenced with the session
    /// once elected.
    pub fn new(
        consul: Consul,
        store: Arc<ConsulStore>,
        config: ElectionConfig,
    ) -> Result<Elected, String> {
        validate(&config)?;
        let leadership = Leadership::elected(Policy::ServeToDeadline);
        let (key, identity, ttl) = (config.key.clone(), config.identity.clone(), config.ttl);
        let lock = ConsulLock::new(consul, config, "berth control service leader election");
        let elector = Elector::new(lock, ttl, leadership.clone());
        Ok(Elected {
            session: elector.fence(),
            elector: tokio::sync::Mutex::new(elector),
            leadership,
            store,
            key,
            identity,
        })
    }

    pub fn serving(&self) -> bool {
        self.leadership.is_leader()
    }

    /// A write was refused as if deposed: stop serving, and look again at once.
    pub fn lost(&self) {
        self.leadership.lost();
    }

    /// Until when this instance serves, if a round won since it last stood by (for tests and
    /// logs).
    pub fn serving_until(&self) -> Option<Instant> {
        self.leadership.until()
    }

    pub fn leader_url(&self) -> Option<String> {
        if self.serving() {
            return Some(self.identity.clone());
        }
        self.leadership.view().holder
    }

    /// The current session, if any (for tests and logs).
    pub fn session(&self) -> Option<String> {
        self.session.get()
    }

    /// One round: renew (or create) the session, take or keep the key, and serve on winning
    /// once the state is taken up. A round that cannot reach Consul changes nothing: the holder
    /// serves on until its deadline, which Consul's promise covers (a Consul blip shorter than
    /// that does not cost every node its lease, and so its containers); a session Consul no
    /// longer knows, or a key another session holds, stops it at once.
    pub async fn round<T: TakeUp>(&self, service: &T) -> Result<(), LockError> {
        let win = Win {
            elected: self,
            service,
        };
        self.elector.lock().await.round_with(&win).await
    }

    /// Stops serving and leaves the election: releases the key (a standby takes it at its next
    /// round, no lock-delay) and destroys the session.
    pub async fn resign(&self) {
        self.elector.lock().await.resign().await;
    }

    /// Rounds every TTL/3 (at once after a refused write) until `stop` turns true, then resigns.
    pub async fn run<T: TakeUp>(
        self: Arc<Self>,
        service: Arc<T>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let win = Win {
            elected: &self,
            service: &*service,
        };
        self.elector.lock().await.run(win, stop).await;
    }
}

#[cfg(test)]
#[path = "elected_tests.rs"]
mod tests;
