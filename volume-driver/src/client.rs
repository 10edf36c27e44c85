//! A Rust client for the control service, used by agents and by the executor (`berth run`):
//! typed calls whose bodies are `control::wire`'s, the very types the service decodes, with the
//! service's error descriptions (and, on a refused executor command, its current epoch) carried
//! through.

use std::collections::BTreeMap;

use hyper::Method;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::control::api::{IF_MATCHES_HEADER, TAG_HEADER};
use crate::control::wire::{
    AssignMode, AssignRequest, ClaimMount, CreateDataset, DatasetConfig, ErrorBody, FenceRequest,
    Heartbeat, HeartbeatReply, HeldCopy, HeldReport, MoveDataset, NodeLiveness, NodeRecord,
    RegisterNode, StandbyReport, VerifiedCredential, VerifyCredential, VolumeRecord,
};
use crate::http_client::{self, HttpError, Target};

/// A control-service failure.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("control service unreachable")]
    Transport(#[from] HttpError),
    #[error("control service said {status}: {description}")]
    Status {
        status: u16,
        description: String,
        /// On a 409 or 423 refusing an executor command: the volume's current epoch.
        epoch: Option<u64>,
        /// On a 423: ms until the same request can succeed (a node lease running out).
        retry_after_ms: Option<u64>,
    },
    #[error("control service reply does not decode: {0}")]
    Decode(String),
    #[error("control URL {0:?} must look like http://HOST:PORT")]
    Url(String),
}

impl ClientError {
    /// The HTTP status the service replied with, if it replied.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// How long to wait before retrying a fence or an assignment refused with 423 because the
    /// node holding the volume still has a lease (it may be writing until it ends).
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            ClientError::Status {
                retry_after_ms: Some(ms),
                ..
            } => Some(std::time::Duration::from_millis(*ms)),
            _ => None,
        }
    }

    /// The current epoch a refused fence or assignment reported.
    pub fn current_epoch(&self) -> Option<u64> {
        match self {
            ClientError::Status { epoch, .. } => *epoch,
            _ => None,
        }
    }
}

/// What a volume name must escape to be one path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn seg(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// A handle on one control service.
#[derive(Debug, Clone)]
pub struct ControlClient {
    target: Target,
    token: Option<String>,
}

impl ControlClient {
    /// `url` is `http://HOST:PORT`; `token` is the cluster token or a node credential.
    pub fn new(url: &str, token: Option<String>) -> Result<ControlClient, ClientError> {
        let addr = url
            .strip_prefix("http://")
            .map(|a| a.trim_end_matches('/'))
            .filter(|a| !a.is_empty() && !a.contains('/'))
            .ok_or_else(|| ClientError::Url(url.to_string()))?;
        Ok(ControlClient {
            target: Target::Tcp(addr.to_string()),
            token,
        })
    }

    /// The same service, presenting `token` instead.
    pub fn with_token(&self, token: Option<String>) -> ControlClient {
        ControlClient {
            target: self.target.clone(),
            token,
        }
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        tag: Option<&str>,
        body: Option<&B>,
    ) -> Result<(T, Option<String>), ClientError> {
        let mut headers = Vec::new();
        if let Some(t) = &self.token {
            headers.push(("authorization", format!("Bearer {t}")));
        }
        if let Some(t) = tag {
            headers.push((IF_MATCHES_HEADER, t.to_string()));
        }
        let body = match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| ClientError::Decode(e.to_string()))?,
            None => Vec::new(),
        };
        let r = http_client::send(&self.target, method, path, &headers, body).await?;
        if !r.status.is_success() {
            let e: ErrorBody = serde_json::from_slice(&r.body).unwrap_or_else(|_| ErrorBody {
                description: String::from_utf8_lossy(&r.body).into_owned(),
                ..ErrorBody::default()
            });
            return Err(ClientError::Status {
                status: r.status.as_u16(),
                description: e.description,
                epoch: e.epoch,
                retry_after_ms: e.retry_after_ms,
            });
        }
        let tag = r
            .headers
            .get(TAG_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let v = serde_json::from_slice(if r.body.is_empty() { b"null" } else { &r.body })
            .map_err(|e| ClientError::Decode(format!("{path}: {e}")))?;
        Ok((v, tag))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        Ok(self.call::<(), T>(Method::GET, path, None, None).await?.0)
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        Ok(self.call(Method::POST, path, None, Some(body)).await?.0)
    }

    /// All dataset configurations and the configuration tag.
    pub async fn datasets(&self) -> Result<(Vec<DatasetConfig>, String), ClientError> {
        let (v, tag) = self
            .call::<(), _>(Method::GET, "/v1/configuration/datasets", None, None)
            .await?;
        Ok((v, tag.unwrap_or_default()))
    }

    /// The live dataset carrying Docker volume `name`, if any.
    pub async fn find_by_name(&self, name: &str) -> Result<Option<DatasetConfig>, ClientError> {
        let (all, _) = self.datasets().await?;
        Ok(all
            .into_iter()
            .find(|d| !d.deleted && d.name() == Some(name)))
    }

    /// Creates a dataset, conditionally on `tag` when given.
    pub async fn create(
        &self,
        primary: &str,
        maximum_size: Option<u64>,
        metadata: &BTreeMap<String, String>,
        tag: Option<&str>,
    ) -> Result<DatasetConfig, ClientError> {
        let body = CreateDataset {
            primary: primary.to_string(),
            dataset_id: None,
            maximum_size,
            metadata: metadata.clone(),
        };
        let (v, _) = self
            .call(Method::POST, "/v1/configuration/datasets", tag, Some(&body))
            .await?;
        Ok(v)
    }

    /// Moves a dataset to `primary` (`force` for a failover from a dead node).
    pub async fn move_to(
        &self,
        id: &str,
        primary: &str,
        force: bool,
    ) -> Result<DatasetConfig, ClientError> {
        let body = MoveDataset {
            primary: primary.to_string(),
            force,
        };
        self.post(&format!("/v1/configuration/datasets/{}", seg(id)), &body)
            .await
    }

    /// Marks a dataset deleted.
    pub async fn delete(&self, id: &str) -> Result<DatasetConfig, ClientError> {
        Ok(self
            .call::<(), _>(
                Method::DELETE,
                &format!("/v1/configuration/datasets/{}", seg(id)),
                None,
                None,
            )
            .await?
            .0)
    }

    /// Registers this node's agent and its transfer address.
    pub async fn register_node(
        &self,
        uuid: &str,
        host: &str,
        transfer: &str,
    ) -> Result<(), ClientError> {
        let body = RegisterNode {
            uuid: uuid.to_string(),
            host: host.to_string(),
            transfer: transfer.to_string(),
        };
        let _: serde_json::Value = self.post("/v1/state/nodes", &body).await?;
        Ok(())
    }

    /// Registered nodes.
    pub async fn nodes(&self) -> Result<Vec<NodeRecord>, ClientError> {
        self.get("/v1/state/nodes").await
    }

    /// Renews `node`'s lease. The lease in the reply counts from before this call was made.
    pub async fn heartbeat(
        &self,
        node: &str,
        hb: &Heartbeat,
    ) -> Result<HeartbeatReply, ClientError> {
        self.post(&format!("/v1/berth/nodes/{}/heartbeat", seg(node)), hb)
            .await
    }

    /// Every registered node's liveness (`GET /v1/berth/nodes`): whether it heartbeats, how long
    /// ago it last did, and how long its lease still runs, all on the control service's clock.
    /// A controller polls this to see a node lost well before Swarm does.
    pub async fn node_liveness(&self) -> Result<Vec<NodeLiveness>, ClientError> {
        self.get("/v1/berth/nodes").await
    }

    /// Declares a node dead, allowing forced failover of its mounts.
    pub async fn declare_dead(&self, uuid: &str) -> Result<(), ClientError> {
        let _: serde_json::Value = self
            .post(&format!("/v1/berth/nodes/{}/dead", seg(uuid)), &())
            .await?;
        Ok(())
    }

    /// Claims the dataset's single writable mount for `node` at `epoch` (re-claiming one this
    /// node holds is how an agent re-checks it at every Mount).
    pub async fn claim_mount(
        &self,
        id: &str,
        node: &str,
        epoch: u64,
    ) -> Result<DatasetConfig, ClientError> {
        let body = ClaimMount {
            node_uuid: node.to_string(),
            epoch,
        };
        self.post(&format!("/v1/berth/mounts/{}", seg(id)), &body)
            .await
    }

    /// Releases `node`'s mount claim.
    pub async fn release_mount(&self, id: &str, node: &str) -> Result<(), ClientError> {
        let _: serde_json::Value = self
            .call::<(), _>(
                Method::DELETE,
                &format!("/v1/berth/mounts/{}/{}", seg(id), seg(node)),
                None,
                None,
            )
            .await?
            .0;
        Ok(())
    }

    /// Reports which datasets this node holds: (dataset ID, path, epoch).
    pub async fn report(
        &self,
        node: &str,
        held: &[(String, String, u64)],
    ) -> Result<(), ClientError> {
        let body = HeldReport {
            node_uuid: node.to_string(),
            datasets: held
                .iter()
                .map(|(id, path, epoch)| HeldCopy {
                    dataset_id: id.clone(),
                    path: path.clone(),
                    epoch: *epoch,
                })
                .collect(),
        };
        let _: serde_json::Value = self.post("/v1/state/datasets", &body).await?;
        Ok(())
    }

    /// Volume `name`'s record; `None` if no live dataset carries that name.
    pub async fn volume(&self, name: &str) -> Result<Option<VolumeRecord>, ClientError> {
        match self.get(&format!("/v1/berth/volumes/{}", seg(name))).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every live volume's record.
    pub async fn volumes(&self) -> Result<Vec<VolumeRecord>, ClientError> {
        self.get("/v1/berth/volumes").await
    }

    /// The live volumes `node` is the primary, a standby or the mount holder of.
    pub async fn volumes_of(&self, node: &str) -> Result<Vec<VolumeRecord>, ClientError> {
        self.get(&format!("/v1/berth/volumes?node={}", seg(node)))
            .await
    }

    /// Fences volume `name` away from `node` (`expect_epoch` → +1). A refusal carries the
    /// current epoch (`ClientError::current_epoch`); a 423 refusal (the volume is mounted on
    /// `node`, whose lease still runs) says when to retry (`ClientError::retry_after`).
    pub async fn fence(
        &self,
        name: &str,
        node: &str,
        expect_epoch: u64,
    ) -> Result<VolumeRecord, ClientError> {
        let body = FenceRequest {
            node: node.to_string(),
            expect_epoch,
        };
        self.post(&format!("/v1/berth/volumes/{}/fence", seg(name)), &body)
            .await
    }

    /// Makes `primary` the primary of fenced volume `name` at `epoch`, its data coming as
    /// `mode` says. A promotion's reply says how far behind the promoted copy was.
    pub async fn assign(
        &self,
        name: &str,
        primary: &str,
        epoch: u64,
        mode: AssignMode,
    ) -> Result<VolumeRecord, ClientError> {
        let body = AssignRequest {
            primary: primary.to_string(),
            epoch,
            mode,
        };
        self.post(&format!("/v1/berth/volumes/{}/assign", seg(name)), &body)
            .await
    }

    /// Records that standby `node` of volume `name` finished a ship from the copy of `epoch`,
    /// begun `age_ms` ago, that fetched `bytes`.
    pub async fn report_standby(
        &self,
        name: &str,
        node: &str,
        epoch: u64,
        age_ms: u64,
        bytes: u64,
    ) -> Result<VolumeRecord, ClientError> {
        let body = StandbyReport {
            epoch,
            age_ms,
            bytes,
        };
        self.post(
            &format!("/v1/berth/volumes/{}/standbys/{}", seg(name), seg(node)),
            &body,
        )
        .await
    }

    /// The node `credential` belongs to, as the control service checks it (`None`: not one).
    pub async fn verify_credential(&self, credential: &str) -> Result<Option<String>, ClientError> {
        let body = VerifyCredential {
            credential: credential.to_string(),
        };
        match self
            .post::<_, VerifiedCredential>("/v1/berth/credentials/verify", &body)
            .await
        {
            Ok(v) => Ok(Some(v.node)),
            Err(e) if e.status() == Some(401) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
