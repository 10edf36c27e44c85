//! A Rust client for the control service, used by agents and by the executor (`berth run`):
//! typed calls whose bodies are `berth_control_model::wire`'s, the very types the service
//! decodes, with the service's error descriptions (and, on a refused executor command, its
//! current epoch) carried through. `http_client` is the pooled HTTP/1 client under it, shared
//! with the agent's other calls and with the control service's Raft messages.

pub mod config_file;
pub mod error_chain;
pub mod http_client;
mod pool;
pub mod tls;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use berth_control_model::wire::{
    AssignMode, AssignRequest, ClaimMount, CreateDataset, DatasetConfig, ErrorBody, FenceRequest,
    Heartbeat, HeartbeatReply, HeldCopy, HeldReport, IF_MATCHES_HEADER, LeaderJournal, LeaderReply,
    LeaderRequest, MoveDataset, NodeLiveness, NodeRecord, RegisterNode, StandbyReport, TAG_HEADER,
    VerifiedCredential, VerifyCredential, VolumeRecord,
};

use crate::http_client::{HttpError, Target};

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
    #[error("control URL {0:?} must look like http://HOST:PORT or https://HOST:PORT")]
    Url(String),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
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

/// How long a client of a replicated control service keeps looking for its leader before it
/// reports the service unreachable: a new leader serves about 1–2 s after the old one dies.
const FIND_LEADER_FOR: Duration = Duration::from_secs(5);
/// One attempt at one member, so a member cut off mid-connect does not hold the search.
const ATTEMPT: Duration = Duration::from_secs(2);
/// Between rounds over every member when none answered.
const ROUND_PAUSE: Duration = Duration::from_millis(100);

/// A handle on the control service: one instance, or the members of a replicated one (calls go
/// to whichever leads; the client follows it when it changes).
#[derive(Debug, Clone)]
pub struct ControlClient {
    targets: Arc<Vec<Target>>,
    /// Index of the member that answered last; shared by clones, so they all follow the leader.
    current: Arc<AtomicUsize>,
    token: Option<String>,
}

fn addr_of(url: &str) -> Result<String, ClientError> {
    let url = url.trim();
    url.strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .map(|a| a.trim_end_matches('/'))
        .filter(|a| !a.is_empty() && !a.contains('/'))
        .map(str::to_string)
        .ok_or_else(|| ClientError::Url(url.to_string()))
}

impl ControlClient {
    /// `urls` is `http://HOST:PORT`, or a comma-separated list of a replicated service's
    /// members; `token` is the cluster token or a node credential.
    /// An `https://` member is reached over TLS trusting the system's roots; see [`Self::with_ca`].
    pub fn new(urls: &str, token: Option<String>) -> Result<ControlClient, ClientError> {
        Self::with_ca(urls, token, None)
    }

    /// As [`Self::new`], `https://` members trusted when the CA in `ca` (`--tls-ca`) signed
    /// their certificate.
    pub fn with_ca(
        urls: &str,
        token: Option<String>,
        ca: Option<&std::path::Path>,
    ) -> Result<ControlClient, ClientError> {
        let tls = if urls.contains("https://") {
            Some(crate::tls::ClientTls::new(ca)?)
        } else {
            None
        };
        let targets = urls
            .split(',')
            .map(|u| {
                let a = addr_of(u)?;
                Ok(match &tls {
                    Some(t) if u.trim().starts_with("https://") => Target::Tls(a, t.clone()),
                    _ => Target::Tcp(a),
                })
            })
            .collect::<Result<Vec<_>, ClientError>>()?;
        Ok(ControlClient {
            targets: Arc::new(targets),
            current: Arc::default(),
            token,
        })
    }

    /// The same service, presenting `token` instead.
    pub fn with_token(&self, token: Option<String>) -> ControlClient {
        ControlClient {
            targets: self.targets.clone(),
            current: self.current.clone(),
            token,
        }
    }

    /// Sends to the member that answered last; with several members, moves on to the leader a
    /// member names, or to the next one, when one is unreachable or does not serve. A request
    /// retried on another member may have been applied by the one that failed: every call the
    /// executor and agents make is idempotent or carries its epoch as a precondition.
    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<http_client::Reply, ClientError> {
        let n = self.targets.len();
        if n == 1 {
            return Ok(http_client::send(&self.targets[0], method, path, headers, body).await?);
        }
        let deadline = Instant::now() + FIND_LEADER_FOR;
        let mut tried = 0;
        loop {
            let i = self.current.load(Ordering::Relaxed) % n;
            let attempt = http_client::send(
                &self.targets[i],
                method.clone(),
                path,
                headers,
                body.clone(),
            );
            let failed = match tokio::time::timeout(ATTEMPT, attempt).await {
                Ok(Ok(r)) if r.status == StatusCode::SERVICE_UNAVAILABLE => {
                    let e: ErrorBody = serde_json::from_slice(&r.body).unwrap_or_default();
                    let hint = e
                        .leader
                        .as_deref()
                        .and_then(|l| addr_of(l).ok())
                        .and_then(|a| {
                            self.targets.iter().position(
                                |t| matches!(t, Target::Tcp(x) | Target::Tls(x, _) if *x == a),
                            )
                        });
                    match hint {
                        Some(j) if j != i => {
                            self.current.store(j, Ordering::Relaxed);
                            continue;
                        }
                        _ => ClientError::Status {
                            status: 503,
                            description: e.description,
                            epoch: None,
                            retry_after_ms: None,
                        },
                    }
                }
                Ok(Ok(r)) => return Ok(r),
                Ok(Err(e)) => ClientError::Transport(e),
                Err(_) => ClientError::Transport(HttpError::Exchange {
                    target: format!("{:?}", self.targets[i]),
                    msg: format!("no answer within {ATTEMPT:?}"),
                }),
            };
            if Instant::now() >= deadline {
                return Err(failed);
            }
            let _ =
                self.current
                    .compare_exchange(i, (i + 1) % n, Ordering::Relaxed, Ordering::Relaxed);
            tried += 1;
            if tried % n == 0 {
                tokio::time::sleep(ROUND_PAUSE).await;
            }
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
        let r = self.send(method, path, &headers, body).await?;
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

    /// Takes or renews leader lock `name` for `holder`, kept `ttl` from when this call was sent.
    pub async fn take_leader(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<LeaderReply, ClientError> {
        let body = LeaderRequest {
            holder: holder.to_string(),
            ttl_ms: ttl.as_millis() as u64,
        };
        self.post(&format!("/v1/berth/leaders/{}", seg(name)), &body)
            .await
    }

    /// Frees leader lock `name` if `holder` holds it.
    pub async fn release_leader(&self, name: &str, holder: &str) -> Result<(), ClientError> {
        let _: serde_json::Value = self
            .call::<(), _>(
                Method::DELETE,
                &format!("/v1/berth/leaders/{}/{}", seg(name), seg(holder)),
                None,
                None,
            )
            .await?
            .0;
        Ok(())
    }

    /// Leader lock `name`'s journal as its last holder wrote it; `None` if none ever was.
    pub async fn leader_journal(&self, name: &str) -> Result<Option<LeaderJournal>, ClientError> {
        match self.get(&format!("/v1/berth/journals/{}", seg(name))).await {
            Ok(j) => Ok(Some(j)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes leader lock `name`'s journal as `holder` at `epoch` (the lock's fencing token);
    /// refused with 409 unless `holder` holds the lock at that epoch, its grant running.
    pub async fn write_leader_journal(
        &self,
        name: &str,
        holder: &str,
        epoch: u64,
        state: String,
    ) -> Result<(), ClientError> {
        let body = LeaderJournal {
            holder: holder.to_string(),
            epoch,
            state,
        };
        let _: serde_json::Value = self
            .call(
                Method::PUT,
                &format!("/v1/berth/journals/{}", seg(name)),
                None,
                Some(&body),
            )
            .await?
            .0;
        Ok(())
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
