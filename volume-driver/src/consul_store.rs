//! The clustered store: the control state document in one Consul KV key, written with
//! check-and-set on its ModifyIndex so two control instances can never overwrite each other's
//! change unseen (the loser gets a conflict instead of silently winning).

use std::sync::Mutex;

use consulrs::api::kv::requests::SetKeyRequest;
use consulrs::client::{ConsulClient, ConsulClientSettingsBuilder};
use consulrs::error::ClientError;
use consulrs::kv;

use crate::store::{Store, StoreError, StoreFuture};

/// The KV key holding the document.
pub const KEY: &str = "berth/control/state";

/// A `Store` backed by Consul's KV API.
pub struct ConsulStore {
    client: ConsulClient,
    /// ModifyIndex of the version this process last read or wrote (0: key absent).
    index: Mutex<u64>,
}

fn consul_err(e: ClientError) -> StoreError {
    StoreError::Consul(e.to_string())
}

impl ConsulStore {
    /// `address` is Consul's HTTP address, e.g. `http://127.0.0.1:8500`.
    pub fn new(address: &str) -> Result<ConsulStore, StoreError> {
        let settings = ConsulClientSettingsBuilder::default()
            .address(address)
            .build()
            .map_err(|e| StoreError::Consul(format!("settings: {e}")))?;
        let client = ConsulClient::new(settings).map_err(consul_err)?;
        Ok(ConsulStore {
            client,
            index: Mutex::new(0),
        })
    }

    fn index(&self) -> std::sync::MutexGuard<'_, u64> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn read(&self) -> Result<Option<(Vec<u8>, u64)>, StoreError> {
        match kv::read(&self.client, KEY, None).await {
            Ok(mut r) => match r.response.pop() {
                Some(pair) => {
                    let bytes: Vec<u8> = match pair.value {
                        Some(v) => v.try_into().map_err(consul_err)?,
                        None => Vec::new(),
                    };
                    Ok(Some((bytes, pair.modify_index)))
                }
                None => Ok(None),
            },
            Err(ClientError::APIError { code: 404, .. }) => Ok(None),
            Err(e) => Err(consul_err(e)),
        }
    }
}

impl ConsulStore {
    async fn load_doc(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let got = self.read().await?;
        *self.index() = got.as_ref().map_or(0, |(_, i)| *i);
        Ok(got.map(|(b, _)| b))
    }

    async fn save_doc(&self, doc: &[u8]) -> Result<(), StoreError> {
        let value: serde_json::Value = serde_json::from_slice(doc).map_err(StoreError::Decode)?;
        let cas = *self.index();
        let mut opts = SetKeyRequest::builder();
        opts.cas(cas);
        let written = kv::set_json(&self.client, KEY, &value, Some(&mut opts))
            .await
            .map_err(consul_err)?;
        if !written.response {
            return Err(StoreError::Consul(format!(
                "check-and-set failed on {KEY} (expected ModifyIndex {cas}); another control instance changed it"
            )));
        }
        let after = self.read().await?;
        *self.index() = after.map_or(0, |(_, i)| i);
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
mod tests;
