//! The lock as the volume control service's leader lock (`POST /v1/berth/leaders/{name}`),
//! kept in its replicated state. The grant is the session: it runs the TTL from when the
//! control service confirmed it leads (after this process sent the request), and a new control
//! leader counts every lock as renewed when it takes over. The fencing token is the lock's
//! epoch, raised whenever the lock changes hands, which the control service checks on every
//! write the holder fences with it (the failover journal's).

use std::time::Duration;

use berth_volume_client::ControlClient;

use crate::lock::{Acquired, LockError, SessionLock};

pub struct ControlLock {
    control: ControlClient,
    name: String,
    identity: String,
    ttl: Duration,
    /// The epoch of the last grant; `None` when the last round did not grant.
    epoch: Option<u64>,
}

impl ControlLock {
    pub fn new(control: ControlClient, name: &str, identity: &str, ttl: Duration) -> ControlLock {
        ControlLock {
            control,
            name: name.to_string(),
            identity: identity.to_string(),
            ttl,
            epoch: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }
}

impl SessionLock for ControlLock {
    type Token = u64;

    /// No error is a dead session here (`lock`'s rule): a refusal is an answer, and a
    /// conflict (the lock changed hands while the request was decided) is no decision.
    async fn acquire(&mut self) -> Result<Acquired<u64>, LockError> {
        match self
            .control
            .take_leader(&self.name, &self.identity, self.ttl)
            .await
        {
            Ok(r) if r.granted => {
                self.epoch = Some(r.epoch);
                Ok(Acquired::Held(r.epoch))
            }
            Ok(r) => {
                self.epoch = None;
                Ok(Acquired::HeldBy(r.holder))
            }
            Err(e) => Err(LockError::Unavailable(e.to_string())),
        }
    }

    async fn release(&mut self) {
        self.epoch = None;
        if let Err(e) = self
            .control
            .release_leader(&self.name, &self.identity)
            .await
        {
            tracing::warn!(error = %e, lock = %self.name, "leader lock not released; a standby waits for its TTL");
        }
    }

    fn token(&self) -> Option<u64> {
        self.epoch
    }

    fn describe(&self) -> String {
        format!("control service leader lock {}", self.name)
    }
}
