//! The local Consul agent's service and check endpoints, and the session and KV calls of
//! leader election, through consulrs (async).
//!
//! Two reads go around consulrs' types, `GET /v1/agent/services` and `/v1/agent/checks`. consulrs 0.1 types a
//! service's `TaggedAddresses` as strings, while Consul answers with objects (`{"lan":
//! {"address": …, "port": …}}`, documented since 1.x and filled in by the agent for any service
//! with an IP address), so consulrs' own `service::list` fails on every agent Berth registers
//! with. That read goes through consulrs' same client, middleware (API version, ACL token) and
//! error mapping, with a response type of ours that reads only what Berth compares.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use consulrs::api::Features;
use consulrs::api::check::common::AgentServiceCheck;
use consulrs::api::check::requests::TtlCheckUpdateRequest;
use consulrs::api::features::FeaturedEndpoint;
use consulrs::api::kv::requests::{SetKeyRequest, SetKeyRequestBuilder};
use consulrs::api::service::requests::RegisterServiceRequest;
use consulrs::api::session::requests::CreateSessionRequest;
use consulrs::client::{ConsulClient, ConsulClientSettingsBuilder};
use consulrs::error::ClientError;
use rustify::enums::{RequestMethod, RequestType, ResponseType};

use super::Instance;

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
    fn from_client(call: &str, e: ClientError) -> ConsulError {
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

/// A service instance as the agent lists it: only what Berth compares; every other field of
/// Consul's answer is ignored, whatever its shape.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AgentService {
    #[serde(rename = "ID")]
    pub id: String,
    /// The service's name (Consul calls it `Service` here).
    pub service: String,
    pub tags: Option<Vec<String>>,
    pub meta: Option<HashMap<String, String>>,
    pub address: String,
    pub port: u16,
}

impl AgentService {
    /// Whether this is the registration of `want` (the check aside).
    pub fn matches(&self, want: &Instance) -> bool {
        let mut tags = self.tags.clone().unwrap_or_default();
        tags.sort();
        let meta: BTreeMap<String, String> =
            self.meta.clone().unwrap_or_default().into_iter().collect();
        self.service == want.name
            && self.address == want.address
            && self.port == want.port.unwrap_or(0)
            && tags == want.tags
            && meta == want.meta
    }
}

/// A check as the agent lists it: only what Berth reads (consulrs' type also expects a
/// check definition's headers as strings, where Consul has lists).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AgentCheck {
    #[serde(rename = "CheckID")]
    pub check_id: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    pub status: String,
    pub output: String,
}

/// `GET /v1/agent/services`, answered as a map of service ID to service.
struct ListServices;

impl rustify::Endpoint for ListServices {
    type Response = HashMap<String, AgentService>;
    const REQUEST_BODY_TYPE: RequestType = RequestType::JSON;
    const RESPONSE_BODY_TYPE: ResponseType = ResponseType::JSON;

    fn path(&self) -> String {
        "agent/services".to_string()
    }

    fn method(&self) -> RequestMethod {
        RequestMethod::GET
    }
}

impl FeaturedEndpoint for ListServices {
    fn features(&self) -> Option<Features> {
        None
    }
}

/// `GET /v1/agent/checks`, answered as a map of check ID to check.
struct ListChecks;

impl rustify::Endpoint for ListChecks {
    type Response = HashMap<String, AgentCheck>;
    const REQUEST_BODY_TYPE: RequestType = RequestType::JSON;
    const RESPONSE_BODY_TYPE: ResponseType = ResponseType::JSON;

    fn path(&self) -> String {
        "agent/checks".to_string()
    }

    fn method(&self) -> RequestMethod {
        RequestMethod::GET
    }
}

impl FeaturedEndpoint for ListChecks {
    fn features(&self) -> Option<Features> {
        None
    }
}

/// The Consul agent Berth registers with.
pub struct Agent {
    client: ConsulClient,
    address: String,
    /// Longest wait for one call: a hung agent must not hold the reconcile pass.
    timeout: Duration,
}

impl Agent {
    /// `address`: the agent's HTTP API (`http://127.0.0.1:8500`). `token`: an ACL token
    /// (`X-Consul-Token`); without one, consulrs' default applies (`CONSUL_HTTP_TOKEN`), as do
    /// Consul's TLS variables (`CONSUL_CACERT`, `CONSUL_CLIENT_CERT`, …).
    pub fn new(
        address: &str,
        token: Option<String>,
        timeout: Duration,
    ) -> Result<Agent, ConsulError> {
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
        Ok(Agent {
            client,
            address: address.to_string(),
            timeout,
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    async fn call<T>(
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

    /// Every service registered with the agent, by ID (Berth's and everyone else's).
    pub async fn services(&self) -> Result<HashMap<String, AgentService>, ConsulError> {
        self.call(
            "list agent services",
            consulrs::api::exec_with_result(&self.client, ListServices),
        )
        .await
        .map(|r| r.response)
    }

    /// Every check registered with the agent, by check ID.
    pub async fn checks(&self) -> Result<HashMap<String, AgentCheck>, ConsulError> {
        self.call(
            "list agent checks",
            consulrs::api::exec_with_result(&self.client, ListChecks),
        )
        .await
        .map(|r| r.response)
    }

    /// Registers (or replaces) `i` with its TTL check, then sets the check's status and output
    /// (the registration's check takes a status but no output).
    pub async fn register(&self, i: &Instance, ttl: Duration) -> Result<(), ConsulError> {
        let check = AgentServiceCheck {
            check_id: Some(i.check_id()),
            name: Some("Swarm task state".to_string()),
            notes: Some(
                "Set by berth run from Swarm's task state at every reconcile pass; critical \
                 once berth run has not vouched for it within the TTL."
                    .to_string(),
            ),
            ttl: Some(format!("{}s", ttl.as_secs().max(1))),
            status: Some(i.status.as_str().to_string()),
            ..Default::default()
        };
        let mut req = RegisterServiceRequest::builder();
        req.id(i.id.clone())
            .address(i.address.clone())
            .tags(i.tags.clone())
            .meta(i.meta.clone().into_iter().collect::<HashMap<_, _>>())
            .check(check);
        if let Some(p) = i.port {
            req.port(u64::from(p));
        }
        let call = format!("register {} ({})", i.id, i.name);
        self.call(
            &call,
            consulrs::service::register(&self.client, &i.name, Some(&mut req)),
        )
        .await?;
        self.update_check(i).await
    }

    /// Sets the TTL check of `i` to its status and output, which also restarts its TTL.
    pub async fn update_check(&self, i: &Instance) -> Result<(), ConsulError> {
        let mut req = TtlCheckUpdateRequest::builder();
        req.output(i.output.clone());
        let call = format!("update check {}", i.check_id());
        self.call(
            &call,
            consulrs::check::set_status(
                &self.client,
                &i.check_id(),
                i.status.as_str(),
                Some(&mut req),
            ),
        )
        .await
        .map(|_| ())
    }

    /// Removes a service instance (and its checks) from the agent.
    pub async fn deregister(&self, id: &str) -> Result<(), ConsulError> {
        let call = format!("deregister {id}");
        self.call(&call, consulrs::service::deregister(&self.client, id, None))
            .await
            .map(|_| ())
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

    /// `GET /v1/kv/:key`: the session holding the key, if any, and its value; `None` for a key
    /// that does not exist.
    pub async fn lock_holder(
        &self,
        key: &str,
    ) -> Result<Option<(Option<String>, Vec<u8>)>, ConsulError> {
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
        Ok(Some((pair.session, value)))
    }
}
