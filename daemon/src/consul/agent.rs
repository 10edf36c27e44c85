//! The local Consul agent's service and check endpoints, through consulrs (async); the
//! session and KV calls of leader election are `berth_consul`'s, shared with the
//! volume control service's election.
//!
//! Two reads go around consulrs' types, `GET /v1/agent/services` and `/v1/agent/checks`. consulrs 0.1 types a
//! service's `TaggedAddresses` as strings, while Consul answers with objects (`{"lan":
//! {"address": …, "port": …}}`, documented since 1.x and filled in by the agent for any service
//! with an IP address), so consulrs' own `service::list` fails on every agent Berth registers
//! with. That read goes through consulrs' same client, middleware (API version, ACL token) and
//! error mapping, with a response type of ours that reads only what Berth compares.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use berth_consul::Consul;
pub use berth_consul::ConsulError;
use consulrs::api::Features;
use consulrs::api::check::common::AgentServiceCheck;
use consulrs::api::check::requests::TtlCheckUpdateRequest;
use consulrs::api::features::FeaturedEndpoint;
use consulrs::api::service::requests::RegisterServiceRequest;
use rustify::enums::{RequestMethod, RequestType, ResponseType};

use super::Instance;

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
    consul: Consul,
}

impl Agent {
    /// `address`: the agent's HTTP API (`http://127.0.0.1:8500`). `token`: an ACL token
    /// (`X-Consul-Token`); without one, consulrs' default applies (`CONSUL_HTTP_TOKEN`), as do
    /// Consul's TLS variables (`CONSUL_CACERT`, `CONSUL_CLIENT_CERT`, …). `timeout`: the
    /// longest wait for one call, so a hung agent does not hold the reconcile pass.
    pub fn new(
        address: &str,
        token: Option<String>,
        timeout: Duration,
    ) -> Result<Agent, ConsulError> {
        Ok(Agent {
            consul: Consul::new(address, token, timeout)?,
        })
    }

    pub fn address(&self) -> &str {
        self.consul.address()
    }

    /// The session and KV calls (leader election).
    pub fn consul(&self) -> &Consul {
        &self.consul
    }

    /// Every service registered with the agent, by ID (Berth's and everyone else's).
    pub async fn services(&self) -> Result<HashMap<String, AgentService>, ConsulError> {
        self.consul
            .call(
                "list agent services",
                consulrs::api::exec_with_result(self.consul.client(), ListServices),
            )
            .await
            .map(|r| r.response)
    }

    /// Every check registered with the agent, by check ID.
    pub async fn checks(&self) -> Result<HashMap<String, AgentCheck>, ConsulError> {
        self.consul
            .call(
                "list agent checks",
                consulrs::api::exec_with_result(self.consul.client(), ListChecks),
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
        self.consul
            .call(
                &call,
                consulrs::service::register(self.consul.client(), &i.name, Some(&mut req)),
            )
            .await?;
        self.update_check(i).await
    }

    /// Sets the TTL check of `i` to its status and output, which also restarts its TTL.
    pub async fn update_check(&self, i: &Instance) -> Result<(), ConsulError> {
        let mut req = TtlCheckUpdateRequest::builder();
        req.output(i.output.clone());
        let call = format!("update check {}", i.check_id());
        self.consul
            .call(
                &call,
                consulrs::check::set_status(
                    self.consul.client(),
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
        self.consul
            .call(
                &call,
                consulrs::service::deregister(self.consul.client(), id, None),
            )
            .await
            .map(|_| ())
    }
}
