//! Consul, through consulrs (async): the calls Berth makes of it, each bounded by a timeout and
//! named in its error. `berth_volume_control::consul_store` keeps the control state in KV; the
//! session and lock calls here elect one control service (`berth_volume_control::elected`) and
//! one `berth run` (the daemon's `consul::election`), by the recipe Consul documents (*Application leader election with
//! sessions*). `txn` is how a leader's write is fenced: it applies only while its session still
//! holds the lock.

use std::time::Duration;

use consulrs::api::Features;
use consulrs::api::features::FeaturedEndpoint;
use consulrs::api::kv::requests::{SetKeyRequest, SetKeyRequestBuilder};
use consulrs::api::session::requests::CreateSessionRequest;
use consulrs::client::{ConsulClient, ConsulClientSettingsBuilder};
use consulrs::error::ClientError;
use rustify::enums::{RequestMethod, RequestType, ResponseType};

/// What went wrong talking to Consul; each names the call.
#[derive(Debug, thiserror::Error)]
pub enum ConsulError {
    #[error("Consul client settings: {0}")]
    Settings(String),
    #[error("{call}: Consul answered {code}: {message}")]
    Api {
        call: String,
        code: u16,
        message: String,
    },
    #[error("{call}: {detail}")]
    Transport { call: String, detail: String },
    #[error("{call}: no answer from Consul within {after:?}")]
    Timeout { call: String, after: Duration },
}

impl ConsulError {
    pub fn from_client(call: &str, e: ClientError) -> ConsulError {
        match e {
            ClientError::APIError { code, message } => ConsulError::Api {
                call: call.to_string(),
                code,
                message: message.unwrap_or_default().trim().to_string(),
            },
            other => {
                // consulrs' errors say little at the top; the cause chain says what happened.
                let mut detail = other.to_string();
                let mut src = std::error::Error::source(&other);
                while let Some(s) = src {
                    detail.push_str(&format!(": {s}"));
                    src = s.source();
                }
                ConsulError::Transport {
                    call: call.to_string(),
                    detail,
                }
            }
        }
    }
}

/// One operation of a `PUT /v1/txn`, in Consul's documented shape (`{"KV": {"Verb", "Key",
/// …}}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    /// Fails the transaction unless `session` holds the lock on `key`.
    CheckSession { key: String, session: String },
    /// Sets `key` to `value` if its ModifyIndex is `index` (0: only if it does not exist).
    Cas {
        key: String,
        value: Vec<u8>,
        index: u64,
    },
}

impl TxnOp {
    fn to_json(&self) -> serde_json::Value {
        use base64::Engine as _;
        match self {
            TxnOp::CheckSession { key, session } => serde_json::json!({"KV": {
                "Verb": "check-session", "Key": key, "Session": session,
            }}),
            TxnOp::Cas { key, value, index } => serde_json::json!({"KV": {
                "Verb": "cas", "Key": key, "Index": index,
                "Value": base64::engine::general_purpose::STANDARD.encode(value),
            }}),
        }
    }
}

/// Why a transaction was rolled back: the index of the operation that failed, and Consul's
/// words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnFailed {
    pub op_index: usize,
    pub what: String,
}

#[derive(Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TxnResults {
    results: Option<Vec<TxnResult>>,
}

#[derive(serde::Deserialize)]
struct TxnResult {
    #[serde(rename = "KV")]
    kv: Option<TxnKv>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TxnKv {
    key: String,
    modify_index: u64,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TxnErrors {
    #[serde(default)]
    errors: Vec<TxnError>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TxnError {
    op_index: usize,
    #[serde(default)]
    what: String,
}

/// `PUT /v1/txn`: the body is the list of operations; 200 with `Results` when all applied.
struct Txn {
    body: Vec<u8>,
}

impl rustify::Endpoint for Txn {
    type Response = serde_json::Value;
    const REQUEST_BODY_TYPE: RequestType = RequestType::JSON;
    const RESPONSE_BODY_TYPE: ResponseType = ResponseType::JSON;

    fn path(&self) -> String {
        "txn".to_string()
    }

    fn method(&self) -> RequestMethod {
        RequestMethod::PUT
    }

    fn body(&self) -> Result<Option<Vec<u8>>, rustify::errors::ClientError> {
        Ok(Some(self.body.clone()))
    }
}

impl FeaturedEndpoint for Txn {
    fn features(&self) -> Option<Features> {
        None
    }
}

/// A Consul agent's HTTP API.
pub struct Consul {
    client: ConsulClient,
    address: String,
    /// Longest wait for one call: a hung agent must not hold a reconcile pass or a write.
    timeout: Duration,
}

impl Consul {
    /// `address`: the agent's HTTP API (`http://127.0.0.1:8500`). `token`: an ACL token
    /// (`X-Consul-Token`); without one, consulrs' default applies (`CONSUL_HTTP_TOKEN`), as do
    /// Consul's TLS variables (`CONSUL_CACERT`, `CONSUL_CLIENT_CERT`, …).
    pub fn new(
        address: &str,
        token: Option<String>,
        timeout: Duration,
    ) -> Result<Consul, ConsulError> {
        let mut settings = ConsulClientSettingsBuilder::default();
        settings.address(address.trim_end_matches('/'));
        if let Some(t) = token {
            settings.token(t);
        }
        let settings = settings
            .build()
            .map_err(|e| ConsulError::Settings(e.to_string()))?;
        let client =
            ConsulClient::new(settings).map_err(|e| ConsulError::Settings(e.to_string()))?;
        Ok(Consul {
            client,
            address: address.to_string(),
            timeout,
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// consulrs' client, for calls made elsewhere (the daemon's service registration).
    pub fn client(&self) -> &ConsulClient {
        &self.client
    }

    /// Awaits `f` for at most the timeout, naming `call` in its error.
    pub async fn call<T>(
        &self,
        call: &str,
        f: impl std::future::Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ConsulError> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(r) => r.map_err(|e| ConsulError::from_client(call, e)),
            Err(_) => Err(ConsulError::Timeout {
                call: call.to_string(),
                after: self.timeout,
            }),
        }
    }

    /// `PUT /v1/session/create`: a session of `ttl` that releases its locks when invalidated
    /// and keeps them from being taken again for `lock_delay`; returns its ID. Consul ties it to
    /// the agent's node health (`serfHealth`) as well, by default.
    pub async fn create_session(
        &self,
        name: &str,
        ttl: Duration,
        lock_delay: Duration,
    ) -> Result<String, ConsulError> {
        let mut req = CreateSessionRequest::builder();
        req.name(name)
            .behavior("release")
            .ttl(format!("{}s", ttl.as_secs()))
            .lock_delay(format!("{}ms", lock_delay.as_millis()));
        self.call(
            "create session",
            consulrs::session::create(&self.client, Some(&mut req)),
        )
        .await
        .map(|r| r.response.id)
    }

    /// `PUT /v1/session/renew/:id`: `false` when Consul no longer knows the session (404: it
    /// expired or was destroyed, and its locks are released).
    pub async fn renew_session(&self, id: &str) -> Result<bool, ConsulError> {
        let call = format!("renew session {id}");
        match self
            .call(&call, consulrs::session::renew(&self.client, id, None))
            .await
        {
            Ok(_) => Ok(true),
            Err(ConsulError::Api { code: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `PUT /v1/session/destroy/:id`.
    pub async fn destroy_session(&self, id: &str) -> Result<(), ConsulError> {
        let call = format!("destroy session {id}");
        self.call(&call, consulrs::session::delete(&self.client, id, None))
            .await
            .map(|_| ())
    }

    /// `PUT /v1/kv/:key?acquire=:session` with `value`: whether the session holds the lock now
    /// (also `true` when it held it already; `false` when another session holds it or its
    /// lock-delay runs).
    pub async fn acquire(
        &self,
        key: &str,
        session: &str,
        value: &[u8],
    ) -> Result<bool, ConsulError> {
        let mut req = SetKeyRequest::builder();
        req.key(key).value(value.to_vec()).acquire(session);
        self.put_kv(&format!("acquire {key}"), req).await
    }

    /// `PUT /v1/kv/:key?release=:session`: unlocks the key (no lock-delay follows an explicit
    /// release) and empties its value.
    pub async fn release(&self, key: &str, session: &str) -> Result<bool, ConsulError> {
        let mut req = SetKeyRequest::builder();
        req.key(key).value(Vec::new()).release(session);
        self.put_kv(&format!("release {key}"), req).await
    }

    async fn put_kv(&self, call: &str, req: SetKeyRequestBuilder) -> Result<bool, ConsulError> {
        let endpoint = req
            .build()
            .map_err(|e| ConsulError::Settings(e.to_string()))?;
        self.call(
            call,
            consulrs::api::exec_with_result(&self.client, endpoint),
        )
        .await
        .map(|r| r.response)
    }

    /// `GET /v1/kv/:key`: the key's value, its ModifyIndex and the session holding it, if any;
    /// `None` for a key that does not exist.
    pub async fn read(&self, key: &str) -> Result<Option<KvValue>, ConsulError> {
        let call = format!("read {key}");
        let pair = match self
            .call(&call, consulrs::kv::read(&self.client, key, None))
            .await
        {
            Ok(mut r) => r.response.pop(),
            Err(ConsulError::Api { code: 404, .. }) => None,
            Err(e) => return Err(e),
        };
        let Some(pair) = pair else { return Ok(None) };
        let value: Vec<u8> = match pair.value {
            Some(v) => v
                .try_into()
                .map_err(|e| ConsulError::from_client(&call, e))?,
            None => Vec::new(),
        };
        Ok(Some(KvValue {
            value,
            modify_index: pair.modify_index,
            session: pair.session,
        }))
    }

    /// `GET /v1/kv/:key`: the session holding the key, if any, and its value; `None` for a key
    /// that does not exist.
    pub async fn lock_holder(
        &self,
        key: &str,
    ) -> Result<Option<(Option<String>, Vec<u8>)>, ConsulError> {
        Ok(self.read(key).await?.map(|v| (v.session, v.value)))
    }

    /// `PUT /v1/txn`: every operation or none. `Ok(Err(_))` is a transaction Consul rolled
    /// back (409), naming the operation that failed.
    /// On success, the ModifyIndex of every key the transaction wrote or checked, by key.
    pub async fn txn(
        &self,
        ops: &[TxnOp],
    ) -> Result<Result<Vec<(String, u64)>, TxnFailed>, ConsulError> {
        let body = serde_json::to_vec(&ops.iter().map(TxnOp::to_json).collect::<Vec<_>>())
            .map_err(|e| ConsulError::Settings(e.to_string()))?;
        match self
            .call(
                "transaction",
                consulrs::api::exec_with_result(&self.client, Txn { body }),
            )
            .await
        {
            Ok(r) => {
                let results: TxnResults = serde_json::from_value(r.response).unwrap_or_default();
                Ok(Ok(results
                    .results
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|r| r.kv)
                    .map(|kv| (kv.key, kv.modify_index))
                    .collect()))
            }
            Err(ConsulError::Api {
                code: 409, message, ..
            }) => {
                let errors: TxnErrors =
                    serde_json::from_str(&message).unwrap_or(TxnErrors { errors: Vec::new() });
                Ok(Err(errors
                    .errors
                    .into_iter()
                    .next()
                    .map(|e| TxnFailed {
                        op_index: e.op_index,
                        what: e.what,
                    })
                    .unwrap_or(TxnFailed {
                        op_index: usize::MAX,
                        what: message,
                    })))
            }
            Err(e) => Err(e),
        }
    }
}

/// How an election through a session lock is run.
#[derive(Debug, Clone)]
pub struct ElectionConfig {
    /// The KV key every contender contends for (`--leader-key`).
    pub key: String,
    /// Session TTL: Consul allows 10 s to 24 h (`--leader-ttl`).
    pub ttl: Duration,
    /// How long Consul keeps the key from being taken after the session's invalidation; at
    /// most 60 s (`--leader-lock-delay`).
    pub lock_delay: Duration,
    /// Written into the key while its holder holds it: who leads (a standby names it).
    pub identity: String,
}

impl ElectionConfig {
    /// Consul's own bounds on a session, checked before the first call.
    pub fn validate(&self) -> Result<(), String> {
        if self.ttl < Duration::from_secs(10) || self.ttl > Duration::from_secs(86_400) {
            return Err(format!(
                "the leader session TTL ({:?}) must be between 10s and 24h (Consul's bounds)",
                self.ttl
            ));
        }
        if self.ttl.subsec_nanos() != 0 {
            return Err("the leader session TTL must be whole seconds".to_string());
        }
        if self.lock_delay > Duration::from_secs(60) {
            return Err(format!(
                "the lock-delay ({:?}) must be at most 60s (Consul's bound)",
                self.lock_delay
            ));
        }
        if self.key.is_empty() || self.key.starts_with('/') {
            return Err("the leader key must be a KV path without a leading /".to_string());
        }
        Ok(())
    }

    /// Time between rounds: a third of the TTL, so two rounds may fail before the session
    /// lapses (the leader steps down at the first anyway).
    pub fn interval(&self) -> Duration {
        self.ttl / 3
    }
}

/// A KV entry as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvValue {
    pub value: Vec<u8>,
    pub modify_index: u64,
    /// The session holding the key's lock, if any.
    pub session: Option<String>,
}
