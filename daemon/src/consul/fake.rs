//! A Consul agent's service and check endpoints, as Consul documents them, for tests (no Consul
//! binary can be had on the machines that run them). It keeps what it is told, answers in
//! Consul's documented shapes and refuses what Consul refuses, and records every request so a
//! test can assert what the client sent:
//!
//! - `GET /v1/agent/services` → `{"<ID>": {"ID", "Service", "Tags", "TaggedAddresses":
//!   {"lan_ipv4": {"Address", "Port"}, "wan_ipv4": …}, "Meta", "Port", "Address",
//!   "EnableTagOverride", "Datacenter", "Weights": {"Passing", "Warning"}}}` — the agent fills
//!   the tagged addresses in for a service registered with an IP address;
//! - `GET /v1/agent/checks` → `{"<CheckID>": {"Node", "CheckID", "Name", "Status", "Notes",
//!   "Output", "ServiceID", "ServiceName", "ServiceTags", "Type", "Definition", …}}`;
//! - `PUT /v1/agent/service/register` (body: `Name` required, `ID`, `Tags`, `Address`, `Port`,
//!   `Meta`, `Check` with one of `TTL`/`HTTP`/`TCP`…, optional `CheckID`, `Status`) → `200`, empty;
//!   `400` without a name or with a bad check status;
//! - `PUT /v1/agent/service/deregister/<ID>` → `200`, or `404` for an unknown ID;
//! - `PUT /v1/agent/check/update/<CheckID>` (body `{"Status", "Output"}`) → `200`; `404` for a
//!   check without a TTL; `400` for a status other than passing, warning, critical;
//! - with ACLs (a token given to [`FakeAgent::start`]): `403` `Permission denied` unless the
//!   request carries it in `X-Consul-Token`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde_json::{Value, json};

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub token: Option<String>,
    pub body: Value,
}

/// A TTL check the agent holds.
#[derive(Debug, Clone)]
pub struct Check {
    pub service_id: String,
    pub name: String,
    pub ttl: String,
    pub status: String,
    pub output: String,
}

#[derive(Debug, Default)]
pub struct AgentState {
    /// By service ID: the service as the agent lists it.
    pub services: BTreeMap<String, Value>,
    /// By check ID.
    pub checks: BTreeMap<String, Check>,
    pub requests: Vec<Request>,
}

impl AgentState {
    /// Requests other than reads, as `METHOD path`.
    pub fn writes(&self) -> Vec<String> {
        self.requests
            .iter()
            .filter(|r| r.method != "GET")
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }
}

#[derive(Clone)]
struct Ctx {
    state: Arc<Mutex<AgentState>>,
    token: Option<String>,
}

/// A fake agent serving on 127.0.0.1.
pub struct FakeAgent {
    /// `http://127.0.0.1:<port>`
    pub url: String,
    pub state: Arc<Mutex<AgentState>>,
}

fn text(code: StatusCode, msg: &str) -> Response {
    (code, msg.to_string()).into_response()
}

/// Records the request and checks its token; `Some` is the refusal to send.
fn refusal(
    c: &Ctx,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Option<Response> {
    let token = headers
        .get("x-consul-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body).unwrap_or_else(|_| json!(String::from_utf8_lossy(body)))
    };
    c.state.lock().expect("fake state").requests.push(Request {
        method: method.to_string(),
        path: uri.path().to_string(),
        token: token.clone(),
        body,
    });
    match &c.token {
        Some(want) if token.as_deref() != Some(want.as_str()) => {
            Some(text(StatusCode::FORBIDDEN, "Permission denied"))
        }
        _ => None,
    }
}

fn is_ip(s: &str) -> bool {
    s.parse::<std::net::IpAddr>().is_ok()
}

async fn list(State(c): State<Ctx>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    if let Some(r) = refusal(&c, &method, &uri, &headers, &[]) {
        return r;
    }
    let st = c.state.lock().expect("fake state");
    axum::Json(Value::Object(st.services.clone().into_iter().collect())).into_response()
}

async fn checks(State(c): State<Ctx>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    if let Some(r) = refusal(&c, &method, &uri, &headers, &[]) {
        return r;
    }
    let st = c.state.lock().expect("fake state");
    let listed: serde_json::Map<String, Value> = st
        .checks
        .iter()
        .map(|(id, ch)| {
            let service = &st.services[&ch.service_id];
            let v = json!({
                "Node": "fake", "CheckID": id, "Name": ch.name, "Status": ch.status,
                "Notes": "", "Output": ch.output, "ServiceID": ch.service_id,
                "ServiceName": service["Service"], "ServiceTags": service["Tags"],
                "Type": "ttl", "Definition": {}, "CreateIndex": 0, "ModifyIndex": 0,
            });
            (id.clone(), v)
        })
        .collect();
    axum::Json(Value::Object(listed)).into_response()
}

fn field<'a>(body: &'a Value, key: &str) -> Option<&'a Value> {
    // The register endpoint also accepts snake_case keys (config-file style); Berth sends
    // Consul's PascalCase, which is what the fake reads.
    body.get(key).filter(|v| !v.is_null())
}

async fn register(
    State(c): State<Ctx>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = refusal(&c, &method, &uri, &headers, &body) {
        return r;
    }
    let Ok(b) = serde_json::from_slice::<Value>(&body) else {
        return text(StatusCode::BAD_REQUEST, "Request decode failed");
    };
    let Some(name) = field(&b, "Name").and_then(Value::as_str) else {
        return text(StatusCode::BAD_REQUEST, "Missing service name");
    };
    let id = field(&b, "ID")
        .and_then(Value::as_str)
        .unwrap_or(name)
        .to_string();
    let address = field(&b, "Address")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let port = field(&b, "Port").and_then(Value::as_u64).unwrap_or(0);
    let mut check = None;
    if let Some(ch) = field(&b, "Check") {
        let kinds = ["TTL", "HTTP", "TCP", "GRPC", "Args", "AliasService"];
        if kinds.iter().filter(|k| field(ch, k).is_some()).count() != 1 {
            return text(
                StatusCode::BAD_REQUEST,
                "Invalid check: TTL must be > 0 for TTL checks",
            );
        }
        let status = field(ch, "Status")
            .and_then(Value::as_str)
            .unwrap_or("critical");
        if !["passing", "warning", "critical"].contains(&status) {
            return text(StatusCode::BAD_REQUEST, "Invalid check status");
        }
        let check_id = field(ch, "CheckID")
            .and_then(Value::as_str)
            .map_or_else(|| format!("service:{id}"), str::to_string);
        check = Some((
            check_id,
            Check {
                service_id: id.clone(),
                name: field(ch, "Name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                ttl: field(ch, "TTL")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                status: status.to_string(),
                output: String::new(),
            },
        ));
    }
    let tagged = if is_ip(&address) {
        json!({
            "lan_ipv4": {"Address": address, "Port": port},
            "wan_ipv4": {"Address": address, "Port": port},
        })
    } else {
        json!({})
    };
    let listed = json!({
        "ID": id,
        "Service": name,
        "Tags": field(&b, "Tags").cloned().unwrap_or(json!([])),
        "TaggedAddresses": tagged,
        "Meta": field(&b, "Meta").cloned().unwrap_or(json!({})),
        "Port": port,
        "Address": address,
        "EnableTagOverride": false,
        "Datacenter": "dc1",
        "Weights": {"Passing": 1, "Warning": 1},
    });
    let mut st = c.state.lock().expect("fake state");
    st.services.insert(id, listed);
    if let Some((cid, ch)) = check {
        st.checks.insert(cid, ch);
    }
    StatusCode::OK.into_response()
}

async fn deregister(
    State(c): State<Ctx>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = refusal(&c, &method, &uri, &headers, &[]) {
        return r;
    }
    let mut st = c.state.lock().expect("fake state");
    if st.services.remove(&id).is_none() {
        return text(
            StatusCode::NOT_FOUND,
            &format!(
                "Unknown service ID {id:?}. Ensure that the service ID is passed, not the service name."
            ),
        );
    }
    st.checks.retain(|_, ch| ch.service_id != id);
    StatusCode::OK.into_response()
}

async fn update(
    State(c): State<Ctx>,
    Path(check_id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = refusal(&c, &method, &uri, &headers, &body) {
        return r;
    }
    let b: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let status = field(&b, "Status").and_then(Value::as_str).unwrap_or("");
    if !["passing", "warning", "critical"].contains(&status) {
        return text(
            StatusCode::BAD_REQUEST,
            "Invalid status: must be passing, warning or critical",
        );
    }
    let mut st = c.state.lock().expect("fake state");
    let Some(ch) = st.checks.get_mut(&check_id).filter(|ch| !ch.ttl.is_empty()) else {
        return text(
            StatusCode::NOT_FOUND,
            &format!("CheckID {check_id:?} does not have associated TTL"),
        );
    };
    ch.status = status.to_string();
    ch.output = field(&b, "Output")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    StatusCode::OK.into_response()
}

impl FakeAgent {
    /// Serves on a free port of 127.0.0.1 on the current tokio runtime; with `token`, ACLs are
    /// on and every request must carry it.
    pub async fn start(token: Option<&str>) -> FakeAgent {
        let state = Arc::new(Mutex::new(AgentState::default()));
        let ctx = Ctx {
            state: state.clone(),
            token: token.map(str::to_string),
        };
        let app = Router::new()
            .route("/v1/agent/services", get(list))
            .route("/v1/agent/checks", get(checks))
            .route("/v1/agent/service/register", put(register))
            .route("/v1/agent/service/deregister/{id}", put(deregister))
            .route("/v1/agent/check/update/{check_id}", put(update))
            .with_state(ctx);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a free port");
        let url = format!("http://{}", l.local_addr().expect("local address"));
        tokio::spawn(async move { axum::serve(l, app).await });
        FakeAgent { url, state }
    }

    /// A service someone else registered (no Berth mark), as Consul would list it.
    pub fn add_foreign(&self, id: &str, name: &str, tags: &[&str]) {
        self.state.lock().expect("fake state").services.insert(
            id.to_string(),
            json!({"ID": id, "Service": name, "Tags": tags, "Meta": {}, "Port": 80,
                   "Address": "", "TaggedAddresses": {}, "EnableTagOverride": false,
                   "Datacenter": "dc1", "Weights": {"Passing": 1, "Warning": 1}}),
        );
    }
}
