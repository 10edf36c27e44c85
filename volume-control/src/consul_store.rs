//! The clustered store: the control state document in one Consul KV key. Every write is a
//! transaction (`PUT /v1/txn`) that sets the key with check-and-set on the ModifyIndex this
//! process last read or wrote, so two control instances can never overwrite each other's change
//! unseen; and, once the instance is elected (`control::elected`), that also checks its session
//! still holds the leader lock, so a deposed leader's write is refused by Consul itself, however
//! late it arrives.

use std::sync::Mutex;
use std::time::Duration;

use berth_consul::{Consul, TxnOp};

use crate::store::{Store, StoreError, StoreFuture};

/// The KV key holding the document.
pub const KEY: &str = "berth/control/state";

/// How long one store call may take before the write is failed (and retried by its caller).
const TIMEOUT: Duration = Duration::from_secs(5);

/// A `Store` backed by Consul's KV API.
pub struct ConsulStore {
    consul: Consul,
    /// ModifyIndex of the version this process last read or wrote (0: key absent).
    index: Mutex<u64>,
    /// The lock key and session a write must still hold, once elected.
    fence: Mutex<Option<(String, String)>>,
}

fn consul_err(e: berth_consul::ConsulError) -> StoreError {
    StoreError::Consul(e.to_string())
}

impl ConsulStore {
    /// `address` is Consul's HTTP address, e.g. `http://127.0.0.1:8500`.
    pub fn new(address: &str) -> Result<ConsulStore, StoreError> {
        Ok(ConsulStore {
            consul: Consul::new(address, None, TIMEOUT).map_err(consul_err)?,
            index: Mutex::new(0),
            fence: Mutex::new(None),
        })
    }

    fn index(&self) -> std::sync::MutexGuard<'_, u64> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// From now on, every write also requires `session` to hold the lock on `key` (`None`:
    /// nothing is written until it is set again).
    pub fn fence_with(&self, key: &str, session: &str) {
        *self.fence.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((key.to_string(), session.to_string()));
    }

    async fn load_doc(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let got = self.consul.read(KEY).await.map_err(consul_err)?;
        *self.index() = got.as_ref().map_or(0, |v| v.modify_index);
        Ok(got.map(|v| v.value))
    }

    async fn save_doc(&self, doc: &[u8]) -> Result<(), StoreError> {
        serde_json::from_slice::<serde_json::Value>(doc).map_err(StoreError::Decode)?;
        let cas = *self.index();
        let fence = self.fence.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut ops = Vec::new();
        if let Some((key, session)) = &fence {
            ops.push(TxnOp::CheckSession {
                key: key.clone(),
                session: session.clone(),
            });
        }
        ops.push(TxnOp::Cas {
            key: KEY.to_string(),
            value: doc.to_vec(),
            index: cas,
        });
        let written = match self.consul.txn(&ops).await.map_err(consul_err)? {
            Ok(results) => results
                .into_iter()
                .find(|(k, _)| k == KEY)
                .map(|(_, index)| index),
            // The session no longer holds the lock: another instance may lead now.
            Err(f) if fence.is_some() && f.op_index == 0 => return Err(StoreError::NotLeader),
            // Someone else wrote since this instance read: an elected instance must take the
            // state up again before it serves, so it steps down as if deposed.
            Err(_) if fence.is_some() => return Err(StoreError::NotLeader),
            Err(f) => {
                return Err(StoreError::Consul(format!(
                    "check-and-set failed on {KEY} (expected ModifyIndex {cas}); another \
                     control instance changed it ({})",
                    f.what
                )));
            }
        };
        // The index the write made, from the transaction's own answer: a read after it could
        // see a later writer's index and so hide that writer's change from the next CAS.
        let index = written.ok_or_else(|| {
            StoreError::Consul(format!(
                "the transaction on {KEY} succeeded but its answer has no ModifyIndex for the key"
            ))
        })?;
        *self.index() = index;
        Ok(())
    }
}

impl Store for ConsulStore {
    fn load(&self) -> StoreFuture<'_, Option<Vec<u8>>> {
        Box::pin(self.load_doc())
    }

    fn save<'a>(&'a self, doc: &'a [u8]) -> StoreFuture<'a, ()> {
        Box::pin(self.save_doc(doc))
    }
}

#[cfg(test)]
#[path = "consul_store_tests.rs"]
mod tests;
