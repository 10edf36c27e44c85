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
//! - `PUT /v1/session/create` (body `Name`, `Behavior` `release`|`delete`, `TTL` 10s–24h,
//!   `LockDelay` ≤ 60s, default 15s; absent or `null` fields take Consul's defaults) → `{"ID"}`;
//!   `400` for a bad TTL, behaviour or lock-delay;
//! - `PUT /v1/session/renew/<ID>` → `[{"ID", "Name", "Node", "LockDelay" (ns), "Behavior",
//!   "TTL", "NodeChecks", "ServiceChecks", "CreateIndex", "ModifyIndex"}]`; `404` `Session id
//!   '<ID>' not found` for a session that expired or was destroyed;
//! - `PUT /v1/session/destroy/<ID>` → `true`; the session is invalidated: keys it held are
//!   released (behaviour `release`) and kept from any acquire for its lock-delay;
//! - `PUT /v1/kv/<key>` (body: the value) → `true`; with `?acquire=<session>`: `true` if the
//!   session now holds the key (`LockIndex` + 1 unless it held it already), `false` if another
//!   session holds it or its lock-delay runs, `500` `invalid session "<ID>"` for an unknown
//!   session; with `?release=<session>`: `true` and the key unlocked if that session held it,
//!   else `false`;
//! - `GET /v1/kv/<key>` → `[{"LockIndex", "Key", "Flags", "Value" (base64), "Session" (while
//!   held), "CreateIndex", "ModifyIndex"}]`; `404` for a missing key;
//! - `PUT /v1/txn` (body: `[{"KV": {"Verb", "Key", "Value" (base64), "Index", "Session"}}]`,
//!   verbs `set`, `cas`, `get`, `check-session`) → `200` `{"Results": [{"KV": {…, "Value":
//!   null for a write, "ModifyIndex"}}], "Errors": null}` with every operation applied at one
//!   index; or `409` `{"Results": null, "Errors": [{"OpIndex", "What"}]}` and nothing applied
//!   when one fails: `cas` on a stale index (`0`: the key must not exist), `check-session` when
//!   the key is not held by that session; `400` for an unknown verb;
//! - with ACLs (a token given to [`FakeAgent::start`]): `403` `Permission denied` unless the
//!   request carries it in `X-Consul-Token`.
//!
//! Time that only Consul's servers keep is the test's to move: [`FakeAgent::expire_session`] is
//! a session's TTL running out, [`FakeAgent::advance`] moves the clock lock-delays run on, and
//! [`AgentState::unavailable`] makes session and KV calls fail as Consul does without a leader.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde_json::{Value, json};

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// The query string, empty if none (`acquire=…`).
    pub query: String,
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

/// A session the servers hold.
#[derive(Debug, Clone)]
pub struct Session {
    pub name: String,
    pub behavior: String,
    pub ttl: String,
    pub lock_delay: Duration,
    pub create_index: u64,
}

/// A KV entry.
#[derive(Debug, Clone)]
pub struct KvEntry {
    pub value: Vec<u8>,
    /// The session holding the lock, if any.
    pub session: Option<String>,
    pub lock_index: u64,
    pub create_index: u64,
    pub modify_index: u64,
}

#[derive(Debug, Default)]
pub struct AgentState {
    /// By service ID: the service as the agent lists it.
    pub services: BTreeMap<String, Value>,
    /// By check ID.
    pub checks: BTreeMap<String, Check>,
    /// By session ID.
    pub sessions: BTreeMap<String, Session>,
    pub kv: BTreeMap<String, KvEntry>,
    /// Per key: until when (on [`AgentState::clock`]) no acquire succeeds.
    pub lock_delays: BTreeMap<String, Duration>,
    /// The servers' clock for lock-delays, moved by [`FakeAgent::advance`] only.
    pub clock: Duration,
    /// While set, session and KV calls answer `500 No cluster leader`, as Consul's do while its
    /// servers have no leader.
    pub unavailable: bool,
    /// Raft index of the last write.
    pub index: u64,
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
        query: uri.query().unwrap_or("").to_string(),
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

/// Parses Go's duration spelling as far as Berth and Consul's docs use it (`10s`, `15000ms`,
/// `1m`, `0`).
fn go_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = n.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n * 60)),
        "h" => Some(Duration::from_secs(n * 3600)),
        _ => None,
    }
}

fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ABC[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl AgentState {
    fn next_index(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    /// A session's end, by TTL or destroy: its locks released (behaviour `release`) or its
    /// keys deleted (`delete`), each kept from any acquire for the session's lock-delay.
    fn invalidate(&mut self, id: &str) -> bool {
        let Some(s) = self.sessions.remove(id) else {
            return false;
        };
        let held: Vec<String> = self
            .kv
            .iter()
            .filter(|(_, e)| e.session.as_deref() == Some(id))
            .map(|(k, _)| k.clone())
            .collect();
        for k in held {
            let index = self.next_index();
            if s.behavior == "delete" {
                self.kv.remove(&k);
            } else if let Some(e) = self.kv.get_mut(&k) {
                e.session = None;
                e.modify_index = index;
            }
            if !s.lock_delay.is_zero() {
                self.lock_delays.insert(k, self.clock + s.lock_delay);
            }
        }
        true
    }

    /// The entry at `key`, created empty at `index` if there is none.
    fn entry(&mut self, key: String, index: u64) -> &mut KvEntry {
        self.kv.entry(key).or_insert(KvEntry {
            value: Vec::new(),
            session: None,
            lock_index: 0,
            create_index: index,
            modify_index: index,
        })
    }

    /// The session holding `key`, if any.
    pub fn holder(&self, key: &str) -> Option<&str> {
        self.kv.get(key)?.session.as_deref()
    }
}

fn unavailable(c: &Ctx) -> Option<Response> {
    c.state
        .lock()
        .expect("fake state")
        .unavailable
        .then(|| text(StatusCode::INTERNAL_SERVER_ERROR, "No cluster leader"))
}

async fn session_create(
    State(c): State<Ctx>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = refusal(&c, &method, &uri, &headers, &body).or_else(|| unavailable(&c)) {
        return r;
    }
    let b: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(_) => return text(StatusCode::BAD_REQUEST, "Request decode failed"),
        }
    };
    let behavior = field(&b, "Behavior")
        .and_then(Value::as_str)
        .unwrap_or("release")
        .to_string();
    if !["release", "delete"].contains(&behavior.as_str()) {
        return text(
            StatusCode::BAD_REQUEST,
            &format!("Invalid Behavior setting '{behavior}'"),
        );
    }
    let ttl = field(&b, "TTL")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if !ttl.is_empty() {
        match go_duration(&ttl) {
            Some(d) if d >= Duration::from_secs(10) && d <= Duration::from_secs(86_400) => {}
            _ => {
                return text(
                    StatusCode::BAD_REQUEST,
                    &format!("Invalid Session TTL '{ttl}', must be between [10s=24h0m0s]"),
                );
            }
        }
    }
    let lock_delay = match field(&b, "LockDelay") {
        None => Duration::from_secs(15),
        Some(Value::String(s)) => match go_duration(s) {
            Some(d) => d,
            None => return text(StatusCode::BAD_REQUEST, "Request decode failed"),
        },
        // A number below 1000 is seconds, else nanoseconds (Consul's own reading).
        Some(v) => match v.as_u64() {
            Some(n) if n < 1000 => Duration::from_secs(n),
            Some(n) => Duration::from_nanos(n),
            None => return text(StatusCode::BAD_REQUEST, "Request decode failed"),
        },
    };
    if lock_delay > Duration::from_secs(60) {
        return text(
            StatusCode::BAD_REQUEST,
            "Invalid LockDelay: must be at most 60s",
        );
    }
    let mut st = c.state.lock().expect("fake state");
    let create_index = st.next_index();
    let id = format!("00000000-0000-4000-8000-{create_index:012}");
    st.sessions.insert(
        id.clone(),
        Session {
            name: field(&b, "Name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            behavior,
            ttl,
            lock_delay,
            create_index,
        },
    );
    axum::Json(json!({"ID": id})).into_response()
}

async fn session_renew(
    State(c): State<Ctx>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = refusal(&c, &method, &uri, &headers, &[]).or_else(|| unavailable(&c)) {
        return r;
    }
    let st = c.state.lock().expect("fake state");
    let Some(s) = st.sessions.get(&id) else {
        return text(
            StatusCode::NOT_FOUND,
            &format!("Session id '{id}' not found"),
        );
    };
    axum::Json(json!([{
        "ID": id, "Name": s.name, "Node": "fake", "LockDelay": s.lock_delay.as_nanos() as u64,
        "Behavior": s.behavior, "TTL": s.ttl, "NodeChecks": ["serfHealth"],
        "ServiceChecks": null, "CreateIndex": s.create_index, "ModifyIndex": s.create_index,
    }]))
    .into_response()
}

async fn session_destroy(
    State(c): State<Ctx>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = refusal(&c, &method, &uri, &headers, &[]).or_else(|| unavailable(&c)) {
        return r;
    }
    // Consul answers true whether or not it knew the session.
    c.state.lock().expect("fake state").invalidate(&id);
    axum::Json(json!(true)).into_response()
}

#[derive(serde::Deserialize)]
struct KvQuery {
    acquire: Option<String>,
    release: Option<String>,
}

async fn kv_put(
    State(c): State<Ctx>,
    Path(key): Path<String>,
    Query(q): Query<KvQuery>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = refusal(&c, &method, &uri, &headers, &body).or_else(|| unavailable(&c)) {
        return r;
    }
    let mut st = c.state.lock().expect("fake state");
    if let Some(id) = &q.acquire {
        if !st.sessions.contains_key(id) {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("invalid session \"{id}\""),
            );
        }
        if let Some(until) = st.lock_delays.get(&key)
            && st.clock < *until
        {
            return axum::Json(json!(false)).into_response();
        }
        let index = st.next_index();
        let e = st.entry(key, index);
        match &e.session {
            Some(other) if other != id => return axum::Json(json!(false)).into_response(),
            Some(_) => {}
            None => {
                e.session = Some(id.clone());
                e.lock_index += 1;
            }
        }
        e.value = body.to_vec();
        e.modify_index = index;
        return axum::Json(json!(true)).into_response();
    }
    if let Some(id) = &q.release {
        let index = st.next_index();
        return match st.kv.get_mut(&key) {
            Some(e) if e.session.as_deref() == Some(id.as_str()) => {
                e.session = None;
                e.value = body.to_vec();
                e.modify_index = index;
                axum::Json(json!(true)).into_response()
            }
            _ => axum::Json(json!(false)).into_response(),
        };
    }
    let index = st.next_index();
    let e = st.entry(key, index);
    e.value = body.to_vec();
    e.modify_index = index;
    axum::Json(json!(true)).into_response()
}

async fn kv_get(
    State(c): State<Ctx>,
    Path(key): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = refusal(&c, &method, &uri, &headers, &[]).or_else(|| unavailable(&c)) {
        return r;
    }
    let st = c.state.lock().expect("fake state");
    let Some(e) = st.kv.get(&key) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut pair = json!({
        "LockIndex": e.lock_index, "Key": key, "Flags": 0, "Value": base64(&e.value),
        "CreateIndex": e.create_index, "ModifyIndex": e.modify_index,
    });
    if let Some(s) = &e.session {
        pair["Session"] = json!(s);
    }
    axum::Json(json!([pair])).into_response()
}

/// One KV operation of a transaction, as Consul decodes it.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TxnKv {
    verb: String,
    key: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    index: u64,
    #[serde(default)]
    session: Option<String>,
}

#[derive(serde::Deserialize)]
struct TxnOp {
    #[serde(rename = "KV")]
    kv: TxnKv,
}

/// Why `op` cannot apply to `st`, in Consul's words; `Err` is a malformed operation (400).
fn txn_check(st: &AgentState, op: &TxnKv) -> Result<Option<String>, String> {
    let e = st.kv.get(&op.key);
    Ok(match op.verb.as_str() {
        "set" | "get" => None,
        "cas" => {
            let current = e.map_or(0, |e| e.modify_index);
            (current != op.index)
                .then(|| format!("failed to set key \"{}\", index is stale", op.key))
        }
        "check-session" => {
            let held = e.and_then(|e| e.session.as_deref());
            (held != op.session.as_deref()).then(|| {
                format!(
                    "failed session check for key \"{}\", current session {} != {}",
                    op.key,
                    held.unwrap_or(""),
                    op.session.as_deref().unwrap_or("")
                )
            })
        }
        other => return Err(format!("unknown KV verb \"{other}\"")),
    })
}

fn unbase64(s: &str) -> Option<Vec<u8>> {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = ABC.iter().position(|a| *a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

async fn txn(
    State(c): State<Ctx>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = refusal(&c, &method, &uri, &headers, &body).or_else(|| unavailable(&c)) {
        return r;
    }
    let Ok(ops) = serde_json::from_slice::<Vec<TxnOp>>(&body) else {
        return text(StatusCode::BAD_REQUEST, "Failed to parse body");
    };
    let mut st = c.state.lock().expect("fake state");
    let mut errors = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        match txn_check(&st, &op.kv) {
            Err(e) => return text(StatusCode::BAD_REQUEST, &e),
            Ok(Some(what)) => errors.push(json!({"OpIndex": i, "What": what})),
            Ok(None) => {}
        }
    }
    if !errors.is_empty() {
        return (
            StatusCode::CONFLICT,
            axum::Json(json!({"Results": null, "Errors": errors})),
        )
            .into_response();
    }
    let index = st.next_index();
    let mut results = Vec::new();
    for op in ops {
        let op = op.kv;
        if op.verb == "set" || op.verb == "cas" {
            let Some(value) = unbase64(op.value.as_deref().unwrap_or("")) else {
                return text(StatusCode::BAD_REQUEST, "Failed to parse body");
            };
            let e = st.entry(op.key.clone(), index);
            e.value = value;
            e.modify_index = index;
        }
        let e = st.kv.get(&op.key);
        let value = (op.verb == "get").then(|| e.map(|e| base64(&e.value)));
        results.push(json!({"KV": {
            "LockIndex": e.map_or(0, |e| e.lock_index), "Key": op.key, "Flags": 0,
            "Value": value.flatten(), "Session": e.and_then(|e| e.session.clone()),
            "CreateIndex": e.map_or(0, |e| e.create_index),
            "ModifyIndex": e.map_or(0, |e| e.modify_index),
        }}));
    }
    axum::Json(json!({"Results": results, "Errors": null})).into_response()
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
            .route("/v1/session/create", put(session_create))
            .route("/v1/session/renew/{id}", put(session_renew))
            .route("/v1/session/destroy/{id}", put(session_destroy))
            .route("/v1/kv/{*key}", put(kv_put).get(kv_get))
            .route("/v1/txn", put(txn))
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

impl FakeAgent {
    /// The session's TTL ran out on the servers: invalidated as by a destroy.
    pub fn expire_session(&self, id: &str) {
        let found = self.state.lock().expect("fake state").invalidate(id);
        assert!(found, "no session {id} to expire");
    }

    /// Moves the servers' clock on (lock-delays run out on it).
    pub fn advance(&self, by: Duration) {
        self.state.lock().expect("fake state").clock += by;
    }
}
