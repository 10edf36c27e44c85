//! The failover executor's journal in Consul KV (`berth run --consul`, key `--journal-key`):
//! the daemons of one swarm share it, so a standby that takes the lead resumes the previous
//! leader's commands in flight exactly.
//!
//! Every write is one transaction (`PUT /v1/txn`): `check-session` on the leader key with this
//! daemon's election session, then `cas` of the journal key on the ModifyIndex this daemon last
//! read or wrote. Consul applies it only while the session holds the lock, so a deposed leader's
//! write is refused however late it arrives; and the check-and-set refuses a write over a state
//! some other leader wrote meanwhile (this daemon lost and regained the lead between two of its
//! passes). Either refusal, and any failed write, leaves the journal *unread*: the daemon reads
//! it again before it acts, so what it acts on is always what Consul holds.

use std::sync::Mutex;

use berth_consul::TxnOp;
use berth_scheduler::executor::ExecutorState;
use futures_util::future::BoxFuture;

use super::Agent;
use crate::controller::journal::{JournalError, JournalStore};
use berth_leadership::Fence;

/// The journal key, with the leader key and the session that fence its writes.
pub struct ConsulJournal {
    agent: Agent,
    key: String,
    leader_key: String,
    session: Fence<String>,
    /// ModifyIndex of the journal as this daemon last read or wrote it (0: absent); `None`: to
    /// be read before the next write.
    index: Mutex<Option<u64>>,
}

impl ConsulJournal {
    pub fn new(agent: Agent, key: &str, leader_key: &str, session: Fence<String>) -> ConsulJournal {
        ConsulJournal {
            agent,
            key: key.to_string(),
            leader_key: leader_key.to_string(),
            session,
            index: Mutex::new(None),
        }
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Option<u64>> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl JournalStore for ConsulJournal {
    fn needs_load(&self) -> bool {
        self.index().is_none()
    }

    fn forget(&self) {
        *self.index() = None;
    }

    /// `GET /v1/kv/<key>`: the state, `None` for a missing key. A value that is not an
    /// executor state is an error, and the journal stays unread.
    fn load(&self) -> BoxFuture<'_, anyhow::Result<Option<ExecutorState>>> {
        Box::pin(self.read())
    }

    fn save<'a>(&'a self, state: &'a [u8]) -> BoxFuture<'a, Result<(), JournalError>> {
        Box::pin(self.write(state))
    }
}

impl ConsulJournal {
    async fn read(&self) -> anyhow::Result<Option<ExecutorState>> {
        let got = self
            .agent
            .consul()
            .read(&self.key)
            .await
            .map_err(|e| anyhow::anyhow!("reading the failover journal: {e}"))?;
        let Some(got) = got else {
            *self.index() = Some(0);
            return Ok(None);
        };
        let state = serde_json::from_slice(&got.value).map_err(|e| {
            anyhow::anyhow!(
                "Consul key {}: not an executor state ({e}); left as it is, and this daemon does \
                 not act until it is repaired or deleted",
                self.key
            )
        })?;
        *self.index() = Some(got.modify_index);
        Ok(Some(state))
    }

    /// One transaction: the session still holds the leader key, and the journal is as this
    /// daemon last saw it; then it holds `state`.
    async fn write(&self, state: &[u8]) -> Result<(), JournalError> {
        let Some(index) = *self.index() else {
            return Err(JournalError::Unavailable(format!(
                "the failover journal ({}) was not read since this daemon took the lead",
                self.key
            )));
        };
        let Some(session) = self.session.get() else {
            return Err(JournalError::Deposed("no leader session".into()));
        };
        let ops = [
            TxnOp::CheckSession {
                key: self.leader_key.clone(),
                session: session.clone(),
            },
            TxnOp::Cas {
                key: self.key.clone(),
                value: state.to_vec(),
                index,
            },
        ];
        // Until it is known to have been written, the journal is unread: a write that timed out
        // may have applied (its index is unknown), and the executor's memory holds commands that
        // were handed out but never started.
        *self.index() = None;
        match self.agent.consul().txn(&ops).await {
            Ok(Ok(results)) => {
                let written = results
                    .into_iter()
                    .find(|(k, _)| *k == self.key)
                    .map(|(_, i)| i)
                    .ok_or_else(|| {
                        JournalError::Unavailable(format!(
                            "the transaction on {} succeeded but its answer has no ModifyIndex \
                             for the key",
                            self.key
                        ))
                    })?;
                *self.index() = Some(written);
                Ok(())
            }
            Ok(Err(f)) if f.op_index == 0 => Err(JournalError::Deposed(format!(
                "session {session} no longer holds {} ({})",
                self.leader_key, f.what
            ))),
            Ok(Err(f)) => Err(JournalError::Deposed(format!(
                "{} changed since this daemon read it (expected ModifyIndex {index}): another \
                 leader wrote it ({})",
                self.key, f.what
            ))),
            Err(e) => Err(JournalError::Unavailable(e.to_string())),
        }
    }
}
