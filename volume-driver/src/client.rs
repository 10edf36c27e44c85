//! A Rust client for the control service, used by agents and meant for the scheduler: typed
//! calls over Flocker's dataset API, with Flocker's error descriptions carried through.

use std::collections::BTreeMap;

use hyper::Method;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::control::api::{IF_MATCHES_HEADER, TAG_HEADER};
use crate::control::{Dataset, Node};
use crate::http_client::{self, HttpError, Target};

/// A control-service failure.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("control service unreachable")]
    Transport(#[from] HttpError),
    #[error("control service said {status}: {description}")]
    Status { status: u16, description: String },
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
}

/// A handle on one control service.
#[derive(Debug, Clone)]
pub struct ControlClient {
    target: Target,
    token: Option<String>,
}

impl ControlClient {
    /// `url` is `http://HOST:PORT`.
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

    async fn call(
        &self,
        method: Method,
        path: &str,
        tag: Option<&str>,
        body: Option<Value>,
    ) -> Result<(Value, Option<String>), ClientError> {
        let mut headers = Vec::new();
        if let Some(t) = &self.token {
            headers.push(("authorization", format!("Bearer {t}")));
        }
        if let Some(t) = tag {
            headers.push((IF_MATCHES_HEADER, t.to_string()));
        }
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let r = http_client::send(&self.target, method, path, &headers, body).await?;
        let v: Value = if r.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&r.body).map_err(|e| ClientError::Decode(e.to_string()))?
        };
        if !r.status.is_success() {
            let description = v
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&r.body).into_owned());
            return Err(ClientError::Status {
                status: r.status.as_u16(),
                description,
            });
        }
        let tag = r
            .headers
            .get(TAG_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok((v, tag))
    }

    fn decode<T: DeserializeOwned>(v: Value) -> Result<T, ClientError> {
        serde_json::from_value(v).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// All dataset configurations and the configuration tag.
    pub async fn datasets(&self) -> Result<(Vec<Dataset>, String), ClientError> {
        let (v, tag) = self
            .call(Method::GET, "/v1/configuration/datasets", None, None)
            .await?;
        Ok((Self::decode(v)?, tag.unwrap_or_default()))
    }

    /// The live dataset carrying Docker volume `name`, if any.
    pub async fn find_by_name(&self, name: &str) -> Result<Option<Dataset>, ClientError> {
        let (all, _) = self.datasets().await?;
        Ok(all.into_iter().find(|d| {
            !d.deleted
                && d.metadata
                    .get(crate::options::META_NAME)
                    .map(String::as_str)
                    == Some(name)
        }))
    }

    /// Creates a dataset, conditionally on `tag` when given.
    pub async fn create(
        &self,
        primary: &str,
        maximum_size: Option<u64>,
        metadata: &BTreeMap<String, String>,
        tag: Option<&str>,
    ) -> Result<Dataset, ClientError> {
        let body = json!({"primary": primary, "maximum_size": maximum_size, "metadata": metadata});
        let (v, _) = self
            .call(Method::POST, "/v1/configuration/datasets", tag, Some(body))
            .await?;
        Self::decode(v)
    }

    /// Moves a dataset to `primary` (`force` for a failover from a dead node).
    pub async fn move_to(
        &self,
        id: &str,
        primary: &str,
        force: bool,
    ) -> Result<Dataset, ClientError> {
        let (v, _) = self
            .call(
                Method::POST,
                &format!("/v1/configuration/datasets/{id}"),
                None,
                Some(json!({"primary": primary, "force": force})),
            )
            .await?;
        Self::decode(v)
    }

    /// Marks a dataset deleted.
    pub async fn delete(&self, id: &str) -> Result<Dataset, ClientError> {
        let (v, _) = self
            .call(
                Method::DELETE,
                &format!("/v1/configuration/datasets/{id}"),
                None,
                None,
            )
            .await?;
        Self::decode(v)
    }

    /// Registers this node's agent and its transfer address.
    pub async fn register_node(
        &self,
        uuid: &str,
        host: &str,
        transfer: &str,
    ) -> Result<(), ClientError> {
        let body = json!({"uuid": uuid, "host": host, "transfer": transfer});
        self.call(Method::POST, "/v1/state/nodes", None, Some(body))
            .await?;
        Ok(())
    }

    /// Registered nodes.
    pub async fn nodes(&self) -> Result<Vec<Node>, ClientError> {
        let (v, _) = self
            .call(Method::GET, "/v1/state/nodes", None, None)
            .await?;
        Self::decode(v)
    }

    /// Declares a node dead, allowing forced failover of its mounts.
    pub async fn declare_dead(&self, uuid: &str) -> Result<(), ClientError> {
        self.call(
            Method::POST,
            &format!("/v1/berth/nodes/{uuid}/dead"),
            None,
            None,
        )
        .await?;
        Ok(())
    }

    /// Claims the dataset's single writable mount for `node` at `epoch`.
    pub async fn claim_mount(
        &self,
        id: &str,
        node: &str,
        epoch: u64,
    ) -> Result<Dataset, ClientError> {
        let (v, _) = self
            .call(
                Method::POST,
                &format!("/v1/berth/mounts/{id}"),
                None,
                Some(json!({"node_uuid": node, "epoch": epoch})),
            )
            .await?;
        Self::decode(v)
    }

    /// Releases `node`'s mount claim.
    pub async fn release_mount(&self, id: &str, node: &str) -> Result<(), ClientError> {
        self.call(
            Method::DELETE,
            &format!("/v1/berth/mounts/{id}/{node}"),
            None,
            None,
        )
        .await?;
        Ok(())
    }

    /// Reports which datasets this node holds, at which epoch.
    pub async fn report(
        &self,
        node: &str,
        held: &[(String, String, u64)],
    ) -> Result<(), ClientError> {
        let datasets: Vec<Value> = held
            .iter()
            .map(|(id, path, epoch)| json!({"dataset_id": id, "path": path, "epoch": epoch}))
            .collect();
        self.call(
            Method::POST,
            "/v1/state/datasets",
            None,
            Some(json!({"node_uuid": node, "datasets": datasets})),
        )
        .await?;
        Ok(())
    }
}
