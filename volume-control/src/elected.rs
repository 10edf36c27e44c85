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
//!   session gone or the key held by another); Consul never ends a session earlier than the TTL
//!   after a renewal, except on its
//!   node's failed health check, which is what the lock-delay covers: Consul keeps the key from
//!   any new holder for the lock-delay after a session ends, and the lock-delay must be at least
//!   the TTL (checked at start). So a new holder takes the key only after the old one stopped
//!   serving (on clocks that run at the same rate, the assumption of every TTL).
//! - **Leases.** A node's lease, or a leader lock, is granted only while this instance serves,
//!   so before any newer holder took over; the newer one counts every node as leased, and every
//!   lock as renewed, for one full term from its takeover (`Control::take_over_stored`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_consul::{Consul, ConsulError, ElectionConfig};

use crate::api::Shared;
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

#[derive(Default)]
struct Seat {
    session: Option<String>,
    /// Serving until then (the last renewal's send time plus the TTL).
    until: Option<Instant>,
    /// The holder's URL, as its key says.
    leader: Option<String>,
}

/// This instance's side of the election.
pub struct Elected {
    consul: Consul,
    store: Arc<ConsulStore>,
    config: ElectionConfig,
    seat: Mutex<Seat>,
    /// Woken when a write was refused as if deposed, so the next round comes at once.
    resync: tokio::sync::Notify,
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
        Ok(Elected {
            consul,
            store,
            config,
            seat: Mutex::new(Seat::default()),
            resync: tokio::sync::Notify::new(),
        })
    }

    fn seat(&self) -> std::sync::MutexGuard<'_, Seat> {
        self.seat.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn serving(&self) -> bool {
        self.seat().until.is_some_and(|u| Instant::now() < u)
    }

    pub fn lost(&self) {
        let mut s = self.seat();
        s.until = None;
        // Who holds the key now is for the next round to read.
        s.leader = None;
        drop(s);
        self.resync.notify_one();
    }

    /// Until when this instance serves, if it does (for tests and logs).
    pub fn serving_until(&self) -> Option<Instant> {
        self.seat().until
    }

    pub fn leader_url(&self) -> Option<String> {
        self.seat().leader.clone()
    }

    /// The current session, if any (for tests and logs).
    pub fn session(&self) -> Option<String> {
        self.seat().session.clone()
    }

    fn stand_by(&self, leader: Option<String>) {
        let mut s = self.seat();
        s.until = None;
        s.leader = leader;
    }

    /// One round: renew (or create) the session, take or keep the key, and serve on winning
    /// once the state is taken up. A round that cannot reach Consul changes nothing: the holder
    /// serves on until its deadline, which Consul's promise covers (a Consul blip shorter than
    /// that does not cost every node its lease, and so its containers); a session Consul no
    /// longer knows, or a key another session holds, stops it at once.
    pub async fn round(&self, c: &Shared) -> Result<(), ConsulError> {
        let sent = Instant::now();
        let session = self.seat().session.clone();
        let renewed = match &session {
            Some(id) => self.consul.renew_session(id).await?,
            None => false,
        };
        let session = match (renewed, session) {
            (true, Some(id)) => id,
            (_, old) => {
                if let Some(old) = old {
                    tracing::warn!(session = %old, "the control leader session is gone; a new one is made");
                }
                self.stand_by(None);
                let id = self
                    .consul
                    .create_session(
                        "berth control service leader election",
                        self.config.ttl,
                        self.config.lock_delay,
                    )
                    .await?;
                self.seat().session = Some(id.clone());
                id
            }
        };
        let acquired = match self
            .consul
            .acquire(&self.config.key, &session, self.config.identity.as_bytes())
            .await
        {
            Ok(a) => a,
            Err(e) => {
                // Consul answers 500 `invalid session` for a session it does not know: make a
                // new one next round, and stop serving, since the key is not this session's.
                if matches!(&e, ConsulError::Api { code: 500, message, .. } if message.contains("invalid session"))
                {
                    let mut s = self.seat();
                    s.session = None;
                    s.until = None;
                }
                return Err(e);
            }
        };
        if !acquired {
            let holder = match self.consul.lock_holder(&self.config.key).await {
                Ok(Some((Some(_), value))) => Some(String::from_utf8_lossy(&value).into_owned()),
                _ => None,
            };
            if self.serving() {
                tracing::warn!(leader = ?holder, "the control leader key is held by another instance; not serving");
            }
            self.stand_by(holder);
            return Ok(());
        }
        if !self.serving() {
            self.store.fence_with(&self.config.key, &session);
            if let Err(e) = c.take_over_stored().await {
                tracing::error!(error = %e, "cannot take up the state from Consul; not serving");
                self.stand_by(None);
                return Ok(());
            }
            tracing::info!(key = %self.config.key, session = %session, "leading the control service");
        }
        let mut s = self.seat();
        s.until = Some(sent + self.config.ttl);
        s.leader = Some(self.config.identity.clone());
        Ok(())
    }

    /// Stops serving and leaves the election: releases the key (a standby takes it at its next
    /// round, no lock-delay) and destroys the session.
    pub async fn resign(&self) {
        let session = {
            let mut s = self.seat();
            s.until = None;
            s.session.take()
        };
        let Some(id) = session else { return };
        if let Err(e) = self.consul.release(&self.config.key, &id).await {
            tracing::warn!(error = %e, "control leader key not released; a standby waits for the session to end");
        }
        if let Err(e) = self.consul.destroy_session(&id).await {
            tracing::warn!(error = %e, "control leader session not destroyed; it lapses after its TTL");
        }
    }

    /// Rounds every TTL/3 (at once after a refused write) until `stop` turns true, then resigns.
    pub async fn run(self: Arc<Self>, c: Shared, mut stop: tokio::sync::watch::Receiver<bool>) {
        tracing::info!(key = %self.config.key, ttl = ?self.config.ttl, lock_delay = ?self.config.lock_delay, "control leader election through Consul");
        loop {
            if let Err(e) = self.round(&c).await {
                let until = self
                    .serving_until()
                    .map(|u| u.saturating_duration_since(Instant::now()));
                tracing::warn!(error = %e, serving_for = ?until, "control leader election round failed; a holder serves on until its deadline only");
            }
            tokio::select! {
                _ = stopped(&mut stop) => break,
                _ = self.resync.notified() => {
                    // A refused write: let Consul settle for a moment before asking again.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                _ = tokio::time::sleep(self.config.interval()) => {}
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
#[path = "elected_tests.rs"]
mod tests;
