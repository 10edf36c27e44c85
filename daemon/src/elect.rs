//! `berth run --elect`: one acting daemon among several (one per manager) without Consul,
//! through the volume control service's leader lock (`POST /v1/berth/leaders/{name}`), which
//! the control service keeps in its replicated state; and the failover journal that lock fences.
//!
//! The election is `berth_leadership`'s: the lock is `control::ControlLock`, the policy
//! `Policy::StepDown` (as with Consul), and a round that wins leads until the moment its
//! request was *sent* plus the TTL. The control service measures the same TTL from later (after
//! it received the request and confirmed it leads its Raft group), and a new control leader
//! counts every lock as renewed when it takes over, so no other daemon is granted the lock
//! before this one has stopped acting on its own clock.
//!
//! **The journal** ([`ControlJournal`]) is the lock's journal in the control service
//! (`/v1/berth/journals/{name}`), shared by the daemons of one swarm like `--journal-key` with
//! Consul: a standby that takes over resumes the old leader's commands in flight. Every write
//! carries the lock's epoch, raised whenever the lock changes hands; the control service
//! applies it only while this daemon holds the lock at that epoch with its grant running, so a
//! deposed leader's write is refused however late it arrives. A refused or failed write leaves
//! the journal unread: the daemon reads it again before it acts.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_leadership::control::ControlLock;
use berth_leadership::{Elector, Fence, Leadership, Policy};
use berth_scheduler::executor::ExecutorState;
use berth_volume_client::ControlClient;
use futures_util::future::BoxFuture;

use crate::controller::journal::{FileJournal, JournalError, JournalStore};

/// The lock every `berth run --elect` of a swarm contends for.
pub const LOCK: &str = "berth-run";

/// How the election is run.
#[derive(Debug, Clone)]
pub struct ElectConfig {
    /// The lock every daemon of a swarm contends for.
    pub name: String,
    /// How long one round's grant lasts.
    pub ttl: Duration,
    /// This daemon, as the lock's holder and in a standby's `/v1/ready`.
    pub identity: String,
}

impl ElectConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.ttl < Duration::from_secs(3) {
            return Err(format!(
                "the leader TTL ({:?}) must be at least 3s: a round runs every third of it",
                self.ttl
            ));
        }
        Ok(())
    }
}

/// This daemon's side of the election, and the leadership it decides (standby until a round
/// wins; any failed round steps down at once).
pub fn elector(
    control: ControlClient,
    config: &ElectConfig,
) -> (Elector<ControlLock>, Arc<Leadership>) {
    let leadership = Leadership::elected(Policy::StepDown);
    let lock = ControlLock::new(control, &config.name, &config.identity, config.ttl);
    (
        Elector::new(lock, config.ttl, leadership.clone()),
        leadership,
    )
}

/// The failover journal in the control service, fenced by the leader lock's epoch.
pub struct ControlJournal {
    control: ControlClient,
    name: String,
    holder: String,
    epoch: Fence<u64>,
    /// The epoch at which this daemon last read or wrote the journal; `None`: to be read
    /// before the next write.
    loaded: Mutex<Option<u64>>,
    /// `executor.json` in `--state-dir`, where this daemon kept its journal before the journal
    /// moved to the control service: read once, if the control service has none yet.
    local: FileJournal,
}

impl ControlJournal {
    /// `epoch`: the elector's fence ([`Elector::fence`]).
    pub fn new(
        control: ControlClient,
        config: &ElectConfig,
        epoch: Fence<u64>,
        state_dir: &std::path::Path,
    ) -> ControlJournal {
        ControlJournal {
            control,
            name: config.name.clone(),
            holder: config.identity.clone(),
            epoch,
            loaded: Mutex::new(None),
            local: FileJournal::new(state_dir),
        }
    }

    fn loaded(&self) -> std::sync::MutexGuard<'_, Option<u64>> {
        self.loaded.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn read(&self) -> anyhow::Result<Option<ExecutorState>> {
        let Some(epoch) = self.epoch.get() else {
            anyhow::bail!("the failover journal is read only by the leader lock's holder");
        };
        let got = self
            .control
            .leader_journal(&self.name)
            .await
            .map_err(|e| anyhow::anyhow!("reading the failover journal: {e}"))?;
        let state = match got {
            Some(j) => Some(serde_json::from_str(&j.state).map_err(|e| {
                anyhow::anyhow!(
                    "the journal of leader lock {} (written by {} at epoch {}): not an executor \
                     state ({e}); this daemon does not act until it is repaired",
                    self.name,
                    j.holder,
                    j.epoch
                )
            })?),
            None => {
                // The first leader since the journal moved here carries its own over.
                let local = self.local.load().await?;
                if local.is_some() {
                    tracing::info!(
                        "no failover journal in the control service yet: resuming from this daemon's executor.json"
                    );
                }
                local
            }
        };
        *self.loaded() = Some(epoch);
        Ok(state)
    }

    async fn write(&self, state: &[u8]) -> Result<(), JournalError> {
        let Some(epoch) = self.epoch.get() else {
            return Err(JournalError::Deposed("no grant of the leader lock".into()));
        };
        // Until it is known to have been written, the journal is unread: a write that timed out
        // may have applied, and another leader may write it once this one's grant lapses.
        let loaded = self.loaded().take();
        if loaded != Some(epoch) {
            return Err(JournalError::Unavailable(format!(
                "the failover journal was not read since this daemon took the lead (epoch {epoch})"
            )));
        }
        let text = String::from_utf8(state.to_vec()).map_err(|e| {
            JournalError::Unavailable(format!("the executor state is not text: {e}"))
        })?;
        match self
            .control
            .write_leader_journal(&self.name, &self.holder, epoch, text)
            .await
        {
            Ok(()) => {
                *self.loaded() = Some(epoch);
                Ok(())
            }
            Err(e) if e.status() == Some(409) => Err(JournalError::Deposed(e.to_string())),
            // A control service older than the journal (upgraded after this daemon): nothing is
            // started until it has one.
            Err(e) if e.status() == Some(404) => Err(JournalError::Unavailable(format!(
                "the control service keeps no leader-lock journal ({e}): upgrade it before \
                 `berth run --elect`; no failover command starts meanwhile"
            ))),
            Err(e) => Err(JournalError::Unavailable(e.to_string())),
        }
    }
}

impl JournalStore for ControlJournal {
    fn needs_load(&self) -> bool {
        self.loaded().is_none()
    }

    fn forget(&self) {
        *self.loaded() = None;
    }

    fn load(&self) -> BoxFuture<'_, anyhow::Result<Option<ExecutorState>>> {
        Box::pin(self.read())
    }

    fn save<'a>(&'a self, state: &'a [u8]) -> BoxFuture<'a, Result<(), JournalError>> {
        Box::pin(self.write(state))
    }
}

#[cfg(test)]
#[path = "elect_tests.rs"]
mod tests;
