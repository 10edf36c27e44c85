//! Leader election of `berth run` daemons through a Consul session lock, the recipe Consul
//! documents (*Application leader election with sessions*): each daemon holds a session (TTL,
//! behaviour `release`, a lock-delay) and tries `PUT /v1/kv/<key>?acquire=<session>` every
//! round; the one whose acquire succeeds leads until its session ends.
//!
//! A round renews the session first, so the leadership it grants is bounded by what Consul
//! promises: a session renewed at `t` is not invalidated before `t + TTL`, hence the daemon
//! leads until the moment its renewal was *sent* plus the TTL ([`Leadership::lead_until`]) and
//! stops on its own clock if no later round succeeds. Any failed renewal or acquire steps down
//! at once. A session Consul no longer knows (404) is replaced; a new one cannot take the lock
//! during the lock-delay Consul keeps on the key after the old session's invalidation, which
//! covers the old leader's commands still in flight when it stopped. A daemon stopping on
//! purpose releases the key first (no lock-delay follows a release), then destroys its session.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{Agent, ConsulError};
use crate::leader::Leadership;

pub use berth_consul::ElectionConfig;

/// One daemon's side of the election.
pub struct Elector {
    agent: Agent,
    config: ElectionConfig,
    session: Option<String>,
    /// The same session, for the writes fenced by it (the failover journal's).
    shared: SharedSession,
    leadership: Arc<Leadership>,
}

/// The election's current session, read by whoever fences a write with it (a transaction that
/// applies only while that session holds the leader key).
#[derive(Debug, Clone, Default)]
pub struct SharedSession(Arc<Mutex<Option<String>>>);

impl SharedSession {
    pub fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, session: Option<String>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = session;
    }
}

impl Elector {
    pub fn new(agent: Agent, config: ElectionConfig, leadership: Arc<Leadership>) -> Elector {
        Elector {
            agent,
            config,
            session: None,
            shared: SharedSession::default(),
            leadership,
        }
    }

    /// The current session, as it changes: for the writes that must fail once this daemon is
    /// deposed.
    pub fn shared_session(&self) -> SharedSession {
        self.shared.clone()
    }

    fn set_session(&mut self, session: Option<String>) {
        self.shared.set(session.clone());
        self.session = session;
    }

    /// The current session, if any (for tests and logs).
    pub fn session(&self) -> Option<&str> {
        self.session.as_deref()
    }

    /// Steps down with `e` as the reason, and hands `e` back.
    fn lose(&self, e: ConsulError) -> ConsulError {
        self.leadership.stand_by(None, Some(e.to_string()));
        e
    }

    /// One round: renew (or create) the session, then try to take or keep the lock.
    pub async fn round(&mut self) -> Result<(), ConsulError> {
        let sent = Instant::now();
        let renewed = match &self.session {
            Some(id) => self
                .agent
                .consul()
                .renew_session(id)
                .await
                .map_err(|e| self.lose(e))?,
            None => false,
        };
        if !renewed {
            if let Some(old) = self.session.clone() {
                self.set_session(None);
                tracing::warn!(session = %old, "the leader session is gone (expired or destroyed); a new one is made");
                self.leadership.stand_by(None, None);
            }
            let id = self
                .agent
                .consul()
                .create_session(
                    "berth run leader election",
                    self.config.ttl,
                    self.config.lock_delay,
                )
                .await
                .map_err(|e| self.lose(e))?;
            tracing::debug!(session = %id, "leader session created");
            self.set_session(Some(id));
        }
        let session = self.session.clone().unwrap_or_default();
        let acquired = match self
            .agent
            .consul()
            .acquire(&self.config.key, &session, self.config.identity.as_bytes())
            .await
        {
            Ok(a) => a,
            Err(e) => {
                // Consul answers 500 for a session it does not know: make a new one next round.
                if matches!(e, ConsulError::Api { code: 500, .. }) {
                    self.set_session(None);
                }
                return Err(self.lose(e));
            }
        };
        if acquired {
            self.leadership.lead_until(sent + self.config.ttl);
            return Ok(());
        }
        let holder = match self.agent.consul().lock_holder(&self.config.key).await {
            Ok(Some((Some(_), value))) => Some(String::from_utf8_lossy(&value).into_owned()),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(error = %e, "leader key not read");
                None
            }
        };
        self.leadership.stand_by(holder, None);
        Ok(())
    }

    /// Stops leading and leaves the election: releases the key (so a standby takes over at
    /// its next round, with no lock-delay) and destroys the session.
    pub async fn resign(&mut self) {
        self.leadership.stand_by(None, None);
        let Some(id) = self.session.clone() else {
            return;
        };
        self.set_session(None);
        if let Err(e) = self.agent.consul().release(&self.config.key, &id).await {
            tracing::warn!(error = %e, "leader key not released; a standby waits for the session to end");
        }
        if let Err(e) = self.agent.consul().destroy_session(&id).await {
            tracing::warn!(error = %e, "leader session not destroyed; it lapses after its TTL");
        }
    }

    /// Rounds every [`ElectionConfig::interval`] until `stop` turns true, then resigns.
    pub async fn run(mut self, mut stop: tokio::sync::watch::Receiver<bool>) {
        tracing::info!(key = %self.config.key, ttl = ?self.config.ttl, lock_delay = ?self.config.lock_delay, "leader election through Consul");
        loop {
            if let Err(e) = self.round().await {
                tracing::warn!(error = %e, "leader election round failed; this daemon does not act");
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                _ = tokio::time::sleep(self.config.interval()) => {}
            }
        }
        self.resign().await;
    }
}
