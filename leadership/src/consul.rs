//! The session lock as Consul documents it (*Application leader election with sessions*): a
//! session (TTL, behaviour `release`, a lock-delay) renewed every round, and
//! `PUT /v1/kv/<key>?acquire=<session>` with the holder's identity as the value. The fencing
//! token is the session ID: a transaction that `check-session`s the key with it applies only
//! while that session holds the lock. A session Consul no longer knows is replaced; the new one
//! cannot take the key during the lock-delay Consul keeps on it after the old session's end,
//! which covers the old holder's writes still in flight. Releasing (on purpose) frees the key
//! first, with no lock-delay, then destroys the session.

use berth_consul::{Consul, ConsulError, ElectionConfig};

use crate::lock::{Acquired, LockError, SessionLock};

pub struct ConsulLock {
    consul: Consul,
    config: ElectionConfig,
    /// The session's name in Consul, for an operator listing sessions.
    purpose: String,
    session: Option<String>,
}

impl ConsulLock {
    pub fn new(consul: Consul, config: ElectionConfig, purpose: &str) -> ConsulLock {
        ConsulLock {
            consul,
            config,
            purpose: purpose.to_string(),
            session: None,
        }
    }

    /// The current session, if any.
    pub fn session(&self) -> Option<&str> {
        self.session.as_deref()
    }

    pub fn config(&self) -> &ElectionConfig {
        &self.config
    }
}

/// Consul's errors, by the one rule (`lock`): only `500 invalid session` says the session is
/// dead (a `404` to a renewal is an answer, handled before); anything else is unavailability.
fn classify(e: ConsulError) -> LockError {
    match &e {
        ConsulError::Api {
            code: 500, message, ..
        } if message.contains("invalid session") => LockError::SessionDead(e.to_string()),
        _ => LockError::Unavailable(e.to_string()),
    }
}

impl SessionLock for ConsulLock {
    type Token = String;

    async fn acquire(&mut self) -> Result<Acquired<String>, LockError> {
        let session = match self.session.clone() {
            Some(id) => {
                if !self.consul.renew_session(&id).await.map_err(classify)? {
                    self.session = None;
                    return Err(LockError::SessionDead(format!(
                        "session {id} (expired or destroyed)"
                    )));
                }
                id
            }
            None => {
                let id = self
                    .consul
                    .create_session(&self.purpose, self.config.ttl, self.config.lock_delay)
                    .await
                    .map_err(classify)?;
                tracing::debug!(session = %id, key = %self.config.key, "session created");
                self.session = Some(id.clone());
                id
            }
        };
        match self
            .consul
            .acquire(&self.config.key, &session, self.config.identity.as_bytes())
            .await
        {
            Ok(true) => return Ok(Acquired::Held(session)),
            Ok(false) => {}
            Err(e) => {
                let e = classify(e);
                if matches!(e, LockError::SessionDead(_)) {
                    self.session = None;
                }
                return Err(e);
            }
        }
        let holder = match self.consul.lock_holder(&self.config.key).await {
            Ok(Some((Some(_), value))) => Some(String::from_utf8_lossy(&value).into_owned()),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(error = %e, "lock holder not read");
                None
            }
        };
        Ok(Acquired::HeldBy(holder))
    }

    async fn release(&mut self) {
        let Some(id) = self.session.take() else {
            return;
        };
        if let Err(e) = self.consul.release(&self.config.key, &id).await {
            tracing::warn!(error = %e, key = %self.config.key, "key not released; a standby waits for the session to end");
        }
        if let Err(e) = self.consul.destroy_session(&id).await {
            tracing::warn!(error = %e, "session not destroyed; it lapses after its TTL");
        }
    }

    fn token(&self) -> Option<String> {
        self.session.clone()
    }

    fn describe(&self) -> String {
        format!("Consul key {}", self.config.key)
    }
}
