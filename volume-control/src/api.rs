//! Flocker's dataset API v1 over HTTP, plus Berth's `/v1/berth/*` endpoints (the executor
//! contract and the agents' calls): the only file that knows the routes, headers and status
//! codes. The bodies are `control::wire`'s, shared with `client`.
//!
//! Who may do what: with a token configured, the cluster token is the operator's (and the
//! executor's) and may do anything; a node credential (`credential`) may read, and may act only
//! for its own node on the agent endpoints; anything else is 401.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use berth_control_model::credential;
use berth_control_model::liveness::{Liveness, Timing};
use berth_control_model::model::{ControlError, Lease, NewDataset, Node, Reported, State};
use berth_control_model::wire::{
    AssignRequest, ClaimMount, CreateDataset, ErrorBody, FenceRequest, Heartbeat, HeartbeatReply,
    HeldReport, IF_MATCHES_HEADER, LeaderReply, LeaderRequest, LeaseRecord, LeaseRequest,
    MoveDataset, NodeLiveness, RegisterNode, StandbyReport, StateDataset, TAG_HEADER,
    VerifiedCredential, VerifyCredential, VolumeRecord,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::clock::{ControlClock, TICK, wall_ms};
use crate::commit::{Committer, WriteError};
use crate::raft::Replica;
use crate::replicated;
use crate::seat::Seat;
use crate::store::{Store, StoreError};

/// The running control service.
pub struct Control {
    state: Committer,
    token: Option<String>,
    /// Heartbeats and node leases, in memory only (see `liveness`).
    liveness: std::sync::Mutex<Liveness>,
    /// Monotonic 0 of `liveness`: node ages never come from a wall clock.
    started: std::time::Instant,
    /// What every instant in the state is read on (`control::clock`).
    clock: ControlClock,
    /// Whether this instance serves, among several sharing the state (`control::seat`).
    seat: Seat,
    /// When each leader lock lapses, on `mono_ms`; held across a lock's change so requests for
    /// locks are decided one at a time.
    lock_expiry: tokio::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

impl Control {
    /// Loads the persisted state (or starts empty) and starts its writer, with the default
    /// heartbeat and lease timing.
    pub async fn open(store: Box<dyn Store>, token: Option<String>) -> Result<Control, StoreError> {
        Self::open_with(store, token, Timing::default()).await
    }

    /// `open`, granting node leases as `timing` says (already validated).
    pub async fn open_with(
        store: Box<dyn Store>,
        token: Option<String>,
        timing: Timing,
    ) -> Result<Control, StoreError> {
        let mut state: State = match store.load().await? {
            Some(doc) => serde_json::from_slice(&doc).map_err(StoreError::Decode)?,
            None => State::default(),
        };
        state.reindex();
        let expiry = lapse_all(&state, 0);
        let clock = ControlClock::continuing(state.clock_ms, timing.lease_ms, wall_ms());
        let state = Committer::start(state, store).map_err(|e| StoreError::Redb(e.to_string()))?;
        Ok(Control {
            clock,
            lock_expiry: tokio::sync::Mutex::new(expiry),
            state,
            token,
            liveness: std::sync::Mutex::new(Liveness::new(timing)),
            started: std::time::Instant::now(),
            seat: Seat::Alone,
        })
    }

    /// `open_with` on a Raft member: the state is the group's, and this instance serves only
    /// while it leads (`control::replicated::lead` must run beside it).
    pub async fn open_replicated(
        replica: Replica,
        token: Option<String>,
        timing: Timing,
    ) -> Result<Control, StoreError> {
        let mut c = Self::open_with(replica.store(), token, timing).await?;
        c.seat = Seat::Raft(replica);
        Ok(c)
    }

    /// `open_with` on Consul KV shared by several instances: this one serves only while
    /// `elected` holds the leader key (`control::elected::Elected::run` must run beside it).
    #[cfg(feature = "consul")]
    pub async fn open_elected(
        store: std::sync::Arc<crate::consul_store::ConsulStore>,
        elected: std::sync::Arc<crate::elected::Elected>,
        token: Option<String>,
        timing: Timing,
    ) -> Result<Control, StoreError> {
        let mut c = Self::open_with(Box::new(store), token, timing).await?;
        c.seat = Seat::Elected(elected);
        Ok(c)
    }

    /// The Raft member, if replicated.
    pub fn replica(&self) -> Option<&Replica> {
        self.seat.replica()
    }

    /// How this instance decides whether it serves.
    pub fn seat(&self) -> &Seat {
        &self.seat
    }

    /// Takes up `doc`, the replicated document as of this leader's term, as the state to serve,
    /// and restarts node liveness as a new instance would.
    pub(super) async fn take_over(&self, doc: Option<String>) -> Result<(), String> {
        let mut state: State = match doc {
            Some(d) => serde_json::from_str(&d).map_err(|e| format!("state document: {e}"))?,
            None => State::default(),
        };
        state.reindex();
        // Held until the new state is in place, so no lock request is decided in between.
        let locks = self.lock_expiry.lock().await;
        self.state
            .reset(state)
            .await
            .map_err(|e| format!("{e:?}"))?;
        self.taken_over(locks);
        Ok(())
    }

    /// Takes up the store's document, read after every write queued before, as the state to
    /// serve, and restarts node liveness as a new instance would: how an instance elected on a
    /// shared store starts serving (`control::elected`).
    #[cfg(feature = "consul")]
    pub(super) async fn take_over_stored(&self) -> Result<(), String> {
        let locks = self.lock_expiry.lock().await;
        self.state.reload().await.map_err(|e| format!("{e:?}"))?;
        self.taken_over(locks);
        Ok(())
    }

    /// After a takeover: every node counted as leased, every leader lock as renewed, from now.
    fn taken_over(
        &self,
        mut locks: tokio::sync::MutexGuard<'_, std::collections::BTreeMap<String, u64>>,
    ) {
        let t = self.mono_ms();
        let (summary, expiry, recorded) = self.read(|s| {
            (
                (
                    s.datasets.len(),
                    s.nodes.len(),
                    s.leaders.len(),
                    s.generation,
                ),
                lapse_all(s, t),
                s.clock_ms,
            )
        });
        let lease_ms = self.liveness().timing().lease_ms;
        self.clock.take_over(recorded, lease_ms, wall_ms());
        tracing::info!(
            datasets = summary.0,
            nodes = summary.1,
            leader_locks = summary.2,
            generation = summary.3,
            "took up the shared state"
        );
        *locks = expiry;
        self.liveness().take_over(t);
    }

    /// The leader's URL as this instance knows it, for a client to go to.
    fn leader_url(&self) -> Option<String> {
        self.seat.leader_url()
    }

    fn mono_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn liveness(&self) -> std::sync::MutexGuard<'_, Liveness> {
        self.liveness.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every registered node's liveness as of now.
    pub fn node_liveness(&self) -> Vec<NodeLiveness> {
        let nodes = self.read(|s| s.nodes.values().cloned().collect::<Vec<Node>>());
        let t = self.mono_ms();
        let l = self.liveness();
        nodes
            .into_iter()
            .map(|n| {
                let v = l.view(&n.uuid, t);
                NodeLiveness {
                    alive: v.alive && !n.dead,
                    last_heartbeat_age_ms: v.last_heartbeat_age_ms,
                    unheard_for_ms: v.unheard_ms,
                    lease_expires_in_ms: v.lease_left_ms,
                    dead: n.dead,
                    node: n.uuid,
                    host: n.host,
                }
            })
            .collect()
    }

    /// The node leases still running (ms left by node), for a fence or an assignment.
    fn leases_now(&self) -> std::collections::BTreeMap<String, u64> {
        let nodes = self.read(|s| s.nodes.keys().cloned().collect::<Vec<_>>());
        let t = self.mono_ms();
        self.liveness().leases(nodes, t)
    }

    fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        self.state.read(f)
    }

    /// Every live volume's record as of now, standby lags included: what a metrics endpoint
    /// exports (`berth_volume_standby_lag_ms{volume, node}` and the like).
    pub fn volume_records(&self) -> Vec<VolumeRecord> {
        self.volume_records_of(None)
    }

    fn volume_records_of(&self, node: Option<&str>) -> Vec<VolumeRecord> {
        let t = self.clock.now_ms();
        self.read(|s| {
            s.datasets
                .values()
                .filter(|d| !d.deleted)
                .filter(|d| {
                    node.is_none_or(|n| {
                        d.primary == n
                            || d.standbys.contains_key(n)
                            || d.mounted_on.as_deref() == Some(n)
                    })
                })
                .map(|d| VolumeRecord::of(d, s, t))
                .collect()
        })
    }

    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut State) -> Result<T, ControlError> + Send + 'static,
    ) -> Result<(T, String), ApiError> {
        self.state.write(f).await.map_err(|e| match e {
            WriteError::Control(e) => ApiError::Control(e),
            WriteError::Store(m) => ApiError::Store(m),
            WriteError::NotLeader => {
                // Deposed: stop answering until the seat has been checked again.
                self.seat.lost();
                ApiError::NotLeader(self.leader_url())
            }
        })
    }
}

/// Every held leader lock counted as renewed at `now_ms`: what an instance that starts, or
/// takes over, must assume of renewals it did not see.
fn lapse_all(s: &State, now_ms: u64) -> std::collections::BTreeMap<String, u64> {
    s.leaders
        .iter()
        .map(|(n, l)| (n.clone(), now_ms + l.ttl_ms))
        .collect()
}

/// Who is calling, from the bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Caller {
    /// The cluster token, or no token configured.
    Operator,
    /// A node credential.
    Node(String),
}

impl Caller {
    /// Refuses a node acting for another node.
    fn acts_for(&self, node: &str) -> Result<(), ApiError> {
        match self {
            Caller::Node(n) if n != node => Err(ApiError::Forbidden(format!(
                "node {n}'s credential may not act for node {node}"
            ))),
            _ => Ok(()),
        }
    }

    /// Refuses anyone but the operator.
    pub(super) fn operator(&self, what: &str) -> Result<(), ApiError> {
        match self {
            Caller::Node(n) => Err(ApiError::Forbidden(format!(
                "{what} needs the cluster token; node {n}'s credential may not"
            ))),
            Caller::Operator => Ok(()),
        }
    }
}

/// An error reply in Flocker's `{"description": …}` form.
#[derive(Debug)]
pub enum ApiError {
    Control(ControlError),
    BadJson(String),
    Unauthorized,
    Forbidden(String),
    Store(String),
    /// A replicated member that does not serve: the leader's URL, if known.
    NotLeader(Option<String>),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut epoch = None;
        let mut retry_after_ms = None;
        let (code, desc) = match &self {
            ApiError::Control(e) => {
                let code = match e {
                    ControlError::Invalid(_) => StatusCode::BAD_REQUEST,
                    ControlError::NotFound(_) => StatusCode::NOT_FOUND,
                    ControlError::Deleted(_) => StatusCode::METHOD_NOT_ALLOWED,
                    ControlError::Conflict(_) | ControlError::Fence(_) => StatusCode::CONFLICT,
                    ControlError::Epoch { epoch: e, .. } => {
                        epoch = Some(*e);
                        StatusCode::CONFLICT
                    }
                    ControlError::Leased {
                        epoch: e,
                        remaining_ms,
                        ..
                    } => {
                        epoch = Some(*e);
                        retry_after_ms = Some(*remaining_ms);
                        crate::metrics::control().handovers_refused.inc();
                        StatusCode::LOCKED
                    }
                    ControlError::TagMismatch { .. } => StatusCode::PRECONDITION_FAILED,
                };
                (code, e.to_string())
            }
            ApiError::BadJson(m) => (StatusCode::BAD_REQUEST, m.clone()),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token".into(),
            ),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, m.clone()),
            ApiError::Store(m) => (StatusCode::INTERNAL_SERVER_ERROR, format!("store: {m}")),
            ApiError::NotLeader(l) => (
                StatusCode::SERVICE_UNAVAILABLE,
                match l {
                    Some(l) => {
                        format!("this control instance is not the leader; the leader is {l}")
                    }
                    None => {
                        "this control instance is not the leader, and no leader is known yet".into()
                    }
                },
            ),
        };
        let leader = match &self {
            ApiError::NotLeader(l) => l.clone(),
            _ => None,
        };
        if leader.is_some() || matches!(self, ApiError::NotLeader(_)) {
            tracing::debug!(%desc, "control request sent to the leader");
        } else if code.is_server_error() {
            tracing::error!(%desc, "control request failed");
        } else {
            tracing::info!(status = code.as_u16(), %desc, "control request refused");
        }
        let body = ErrorBody {
            errors: (code == StatusCode::BAD_REQUEST).then(|| vec![desc.clone()]),
            description: desc,
            epoch,
            retry_after_ms,
            leader,
        };
        let mut r = (code, Json(body)).into_response();
        if code == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static(berth_control_model::credential::BEARER_CHALLENGE),
            );
        }
        if let Some(ms) = retry_after_ms {
            // HTTP's own header, in whole seconds rounded up; the body has the milliseconds.
            r.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                HeaderValue::from(ms.div_ceil(1000)),
            );
        }
        r
    }
}

pub(super) type Shared = Arc<Control>;

pub(super) fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadJson(format!("request body: {e}")))
}

fn if_matches(h: &HeaderMap) -> Option<String> {
    h.get(IF_MATCHES_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn tagged<T: serde::Serialize>(code: StatusCode, tag: String, body: &T) -> Response {
    let mut r = (code, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&tag) {
        r.headers_mut().insert(TAG_HEADER, v);
    }
    r
}

async fn list_datasets(AxState(c): AxState<Shared>) -> Response {
    let (list, tag) = c.read(|s| (s.datasets.values().cloned().collect::<Vec<_>>(), s.tag()));
    tagged(StatusCode::OK, tag, &list)
}

async fn create_dataset(
    AxState(c): AxState<Shared>,
    Extension(who): Extension<Caller>,
    h: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: CreateDataset = parse(&body)?;
    who.acts_for(&b.primary)?;
    let req = NewDataset {
        primary: b.primary,
        dataset_id: b.dataset_id,
        maximum_size: b.maximum_size,
        metadata: b.metadata,
    };
    let tag = if_matches(&h);
    let (d, tag) = c.write(move |s| s.create(req, tag.as_deref())).await?;
    tracing::info!(dataset = %d.dataset_id, primary = %d.primary, "dataset created");
    Ok(tagged(StatusCode::CREATED, tag, &d))
}

async fn move_dataset(
    AxState(c): AxState<Shared>,
    Extension(who): Extension<Caller>,
    Path(id): Path<String>,
    h: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    who.operator("moving a dataset")?;
    let b: MoveDataset = parse(&body)?;
    let tag = if_matches(&h);
    let i = id.clone();
    let now = c.clock.now_secs();
    let (d, tag) = c
        .write(move |s| {
            let before = s.datasets.get(&i).map(|d| d.epoch);
            let d = s.move_to(&i, &b.primary, b.force, tag.as_deref(), now)?;
            if before != Some(d.epoch) {
                crate::metrics::control()
                    .primary_changes
                    .with_label_values(&["move"])
                    .inc();
            }
            Ok(d)
        })
        .await?;
    tracing::info!(dataset = %id, primary = %d.primary, epoch = d.epoch, "dataset moved");
    Ok(tagged(StatusCode::OK, tag, &d))
}

async fn delete_dataset(
    AxState(c): AxState<Shared>,
    Path(id): Path<String>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    let tag = if_matches(&h);
    let i = id.clone();
    let (d, tag) = c.write(move |s| s.delete(&i, tag.as_deref())).await?;
    tracing::info!(dataset = %id, "dataset deleted");
    Ok(tagged(StatusCode::OK, tag, &d))
}

async fn state_datasets(AxState(c): AxState<Shared>) -> Response {
    let list = c.read(|s| {
        s.reported
            .iter()
            .filter_map(|(id, r)| {
                let d = s.datasets.get(id)?;
                Some(StateDataset {
                    dataset_id: id.clone(),
                    primary: r.node_uuid.clone(),
                    maximum_size: d.maximum_size,
                    path: r.path.clone(),
                })
            })
            .collect::<Vec<_>>()
    });
    Json(list).into_response()
}

async fn report_state(
    AxState(c): AxState<Shared>,
    Extension(who): Extension<Caller>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: HeldReport = parse(&body)?;
    who.acts_for(&b.node_uuid)?;
    c.write(move |s| {
        let held = b
            .datasets
            .into_iter()
            .map(|i| {
                let r = Reported {
                    node_uuid: b.node_uuid.clone(),
                    path: i.path,
                    epoch: i.epoch,
                };
                (i.dataset_id, r)
            })
            .collect();
        s.report_held(&b.node_uuid, held);
        Ok(())
    })
    .await?;
    Ok(Json(serde_json::json!({})).into_response())
}

async fn list_nodes(AxState(c): AxState<Shared>) -> Response {
    let list = c.read(|s| s.nodes.values().cloned().collect::<Vec<Node>>());
    Json(list).into_response()
}

async fn register_node(
    AxState(c): AxState<Shared>,
    Extension(who): Extension<Caller>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: RegisterNode = parse(&body)?;
    if b.uuid.is_empty() {
        return Err(ApiError::Control(ControlError::Invalid(
            "uuid is required".into(),
        )));
    }
    who.acts_for(&b.uuid)?;
    tracing::info!(node = %b.uuid, transfer = %b.transfer, "node registered");
    c.write(move |s| {
        s.register_node(Node {
            uuid: b.uuid,
            host: b.host,
            transfer: b.transfer,
            dead: false,
        });
        Ok(())
    })
    .await?;
    Ok(Json(serde_json::json!({})).into_response())
}

async fn declare_dead(
    AxState(c): AxState<Shared>,
    Extension(who): Extension<Caller>,
    Path(uuid): Path<String>,
) -> Result<Response, ApiError> {
    who.operator("declaring a node dead")?;
    let u = uuid.clone();
    c.write(move |s| s.declare_dead(&u)).await?;
    tracing::warn!(node = %uuid, "node declared dead");
    Ok(Json(serde_json::json!({"uuid": uuid, "dead": true})).into_response())
}

async fn heartbeat(
    AxState(c): AxState<Shared>,
    Extension(who): Extension<Caller>,
    Path(uuid): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    who.acts_for(&uuid)?;
    let b: Heartbeat = parse(&body)?;
    // A lease granted only while this instance may still serve cannot outlive the grace a
    // newer leader gives every node (`control::replicated`, `control::elected`).
    if !c.seat.confirm().await {
        c.seat.lost();
        return Err(ApiError::NotLeader(c.leader_url()));
    }
    let dead = c
        .read(|s| s.nodes.get(&uuid).map(|n| n.dead))
        .ok_or_else(|| {
            ApiError::Control(ControlError::NotFound(format!(
                "node {uuid} is not registered; register it first"
            )))
        })?;
    let mut l = c.liveness();
    l.timing()
        .admits(b.interval_ms, b.self_fence_deadline_ms, b.drift_margin_ms)
        .map_err(|e| ApiError::Control(ControlError::Invalid(e)))?;
    let t = c.mono_ms();
    let was_alive = l.view(&uuid, t).alive;
    let lease_ms = l.heartbeat(&uuid, t, !dead);
    drop(l);
    if !was_alive {
        tracing::info!(node = %uuid, dead, "node heartbeating");
    }
    Ok(Json(HeartbeatReply { lease_ms, dead }).into_response())
}

/// Takes or renews a leader lock. Granted when the caller holds it, or when nobody does, or when
/// its holder's last renewal has lapsed on this instance's clock; the grant runs `ttl_ms` from
/// after this instance confirmed it leads (and the caller counts from when it sent the
/// request, earlier), so it never outlasts this instance's own view.
async fn take_leader(
    AxState(c): AxState<Shared>,
    Extension(who): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    who.operator("a leader lock")?;
    let b: LeaderRequest = parse(&body)?;
    if !c.seat.confirm().await {
        c.seat.lost();
        return Err(ApiError::NotLeader(c.leader_url()));
    }
    let mut locks = c.lock_expiry.lock().await;
    let t = c.mono_ms();
    let current = c.read(|s| s.leaders.get(&name).cloned());
    let lapsed = locks.get(&name).is_none_or(|until| *until <= t);
    let reply = match current {
        Some(l) if l.holder != b.holder && !lapsed => LeaderReply {
            holder: Some(l.holder),
            granted: false,
            ttl_ms: l.ttl_ms,
        },
        current => {
            let expect = current.map(|l| l.holder);
            let changed = expect.as_deref() != Some(b.holder.as_str());
            let (n, h, ttl) = (name.clone(), b.holder.clone(), b.ttl_ms);
            c.write(move |s| s.take_leader(&n, &h, ttl, expect.as_deref()))
                .await?;
            if changed {
                tracing::info!(lock = %name, holder = %b.holder, "leader lock taken");
            }
            locks.insert(name, t + b.ttl_ms);
            LeaderReply {
                holder: Some(b.holder),
                granted: true,
                ttl_ms: b.ttl_ms,
            }
        }
    };
    Ok(Json(reply).into_response())
}

/// Frees a leader lock its holder no longer wants, so another may take it at once.
async fn release_leader(
    AxState(c): AxState<Shared>,
    Extension(who): Extension<Caller>,
    Path((name, holder)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    who.operator("a leader lock")?;
    let mut locks = c.lock_expiry.lock().await;
    let (n, h) = (name.clone(), holder.clone());
    c.write(move |s| {
        s.release_leader(&n, &h);
        Ok(())
    })
    .await?;
    if c.read(|s| !s.leaders.contains_key(&name)) {
        locks.remove(&name);
    }
    tracing::info!(lock = %name, %holder, "leader lock released");
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn node_liveness(AxState(c): AxState<Shared>) -> Response {
    Json(c.node_liveness()).into_response()
}

fn lease_record(l: &Lease, now: f64) -> LeaseRecord {
    LeaseRecord {
        dataset_id: l.dataset_id.clone(),
        node_uuid: l.node_uuid.clone(),
        expires: l.expires_at.map(|t| (t - now).max(0.0)),
    }
}

async fn list_leases(AxState(c): AxState<Shared>) -> Response {
    let t = c.clock.now_secs();
    let list = c.read(|s| {
        s.leases
            .values()
            .map(|l| lease_record(l, t))
            .collect::<Vec<_>>()
    });
    Json(list).into_response()
}

async fn acquire_lease(
    AxState(c): AxState<Shared>,
    Extension(who): Extension<Caller>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: LeaseRequest = parse(&body)?;
    who.acts_for(&b.node_uuid)?;
    let t = c.clock.now_secs();
    let l = Lease {
        dataset_id: b.dataset_id,
        node_uuid: b.node_uuid,
        expires_at: b.expires.map(|e| t + e),
    };
    let (l, _) = c.write(move |s| s.lease(l, t)).await?;
    Ok((StatusCode::CREATED, Json(lease_record(&l, t))).into_response())
}

async fn release_lease(
    AxState(c): AxState<Shared>,
    Extension(who): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if let Some(holder) = c.read(|s| s.leases.get(&id).map(|l| l.node_uuid.clone())) {
        who.acts_for(&holder)?;
    }
    let (l, _) = c.write(move |s| s.release_lease(&id)).await?;
    Ok(Json(lease_record(&l, c.clock.now_secs())).into_response())
}

async fn claim_mount(
    AxState(c): AxState<Shared>,
    Extension(who): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: ClaimMount = parse(&body)?;
    who.acts_for(&b.node_uuid)?;
    let t = c.clock.now_ms();
    let (d, _) = c
        .write(move |s| s.claim_mount(&id, &b.node_uuid, b.epoch, t))
        .await?;
    Ok(Json(d).into_response())
}

async fn release_mount(
    AxState(c): AxState<Shared>,
    Extension(who): Extension<Caller>,
    Path((id, node)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    who.acts_for(&node)?;
    let t = c.clock.now_ms();
    c.write(move |s| s.release_mount(&id, &node, t)).await?;
    Ok(Json(serde_json::json!({})).into_response())
}

#[derive(Deserialize)]
struct VolumeFilter {
    /// Only volumes `node` is the primary, a standby or the mount holder of.
    node: Option<String>,
}

async fn list_volumes(AxState(c): AxState<Shared>, Query(f): Query<VolumeFilter>) -> Response {
    Json(c.volume_records_of(f.node.as_deref())).into_response()
}

async fn get_volume(
    AxState(c): AxState<Shared>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let t = c.clock.now_ms();
    let r = c.read(|s| {
        s.by_name(&name)
            .map(|d| VolumeRecord::of(d, s, t))
            .ok_or_else(|| ControlError::NotFound(format!("named {name:?}")))
    });
    Ok(Json(r.map_err(ApiError::Control)?).into_response())
}

async fn fence_volume(
    AxState(c): AxState<Shared>,
    Extension(who): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    who.operator("fencing a volume")?;
    let b: FenceRequest = parse(&body)?;
    let t = c.clock.now_ms();
    let n = name.clone();
    let leases = c.leases_now();
    let (r, _) = c
        .write(move |s| {
            s.check_handover(&n, b.expect_epoch, Some(&b.node), None, &leases)?;
            let d = s.fence(&n, &b.node, b.expect_epoch, t)?;
            Ok(VolumeRecord::of(&d, s, t))
        })
        .await?;
    tracing::warn!(volume = %name, from = ?r.fenced_from, epoch = r.epoch, "volume fenced");
    Ok(Json(r).into_response())
}

async fn assign_volume(
    AxState(c): AxState<Shared>,
    Extension(who): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    who.operator("assigning a primary")?;
    let b: AssignRequest = parse(&body)?;
    let t = c.clock.now_ms();
    let n = name.clone();
    let leases = c.leases_now();
    let (r, _) = c
        .write(move |s| {
            s.check_handover(&n, b.epoch, None, Some(&b.primary), &leases)?;
            let before = s.by_name(&n).map(|d| d.version);
            let d = s.assign(&n, &b.primary, b.epoch, b.mode, t)?;
            if before != Some(d.version) {
                crate::metrics::control()
                    .primary_changes
                    .with_label_values(&[b.mode.as_str()])
                    .inc();
            }
            Ok(VolumeRecord::of(&d, s, t))
        })
        .await?;
    tracing::warn!(volume = %name, primary = ?r.primary, epoch = r.epoch, mode = ?r.assigned,
        lag_ms = ?r.lag_ms, lag_bytes = ?r.lag_bytes, "volume assigned");
    Ok(Json(r).into_response())
}

async fn report_standby(
    AxState(c): AxState<Shared>,
    Extension(who): Extension<Caller>,
    Path((name, node)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    who.acts_for(&node)?;
    let b: StandbyReport = parse(&body)?;
    let t = c.clock.now_ms();
    let (r, _) = c
        .write(move |s| {
            let id = s.id_of(&name)?;
            let d = s.report_standby(&id, &node, b.epoch, b.age_ms, b.bytes, t)?;
            Ok(VolumeRecord::of(&d, s, t))
        })
        .await?;
    Ok(Json(r).into_response())
}

async fn verify_credential(AxState(c): AxState<Shared>, body: Bytes) -> Result<Response, ApiError> {
    let b: VerifyCredential = parse(&body)?;
    let node = c
        .token
        .as_deref()
        .and_then(|t| credential::verify(t, &b.credential))
        .ok_or(ApiError::Unauthorized)?;
    Ok(Json(VerifiedCredential { node }).into_response())
}

/// `/metrics`: the counters as they stand, and the gauges set from the state now.
async fn metrics(AxState(c): AxState<Shared>) -> Response {
    let m = crate::metrics::control();
    // A member that does not serve holds no current state: only the leader exports it, so a
    // dashboard summing over instances never counts a follower's stale copy.
    let serving = c.seat.serving();
    m.leader.set(i64::from(serving));
    let epochs = c.read(|s| {
        s.datasets
            .values()
            .filter(|d| !d.deleted)
            .map(|d| (d.name().unwrap_or(&d.dataset_id).to_string(), d.epoch))
            .collect::<Vec<_>>()
    });
    let epochs = if serving { epochs } else { Vec::new() };
    m.fence_epoch.reset();
    for (name, epoch) in epochs {
        m.fence_epoch
            .with_label_values(&[name.as_str()])
            .set(epoch as i64);
    }
    m.heartbeat_age.reset();
    m.lease_left.reset();
    m.node_alive.reset();
    let nodes = if serving {
        c.node_liveness()
    } else {
        Vec::new()
    };
    for n in nodes {
        let node = [n.node.as_str()];
        if let Some(age) = n.last_heartbeat_age_ms {
            m.heartbeat_age
                .with_label_values(&node)
                .set(age as f64 / 1000.0);
        }
        m.lease_left
            .with_label_values(&node)
            .set(n.lease_expires_in_ms as f64 / 1000.0);
        m.node_alive
            .with_label_values(&node)
            .set(i64::from(n.alive));
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        m.encode(),
    )
        .into_response()
}

/// Counts every answered request by its route template (never the raw path, whose volume
/// names would make a series each) and status code.
async fn count_requests(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let r = next.run(req).await;
    crate::metrics::control()
        .requests
        .with_label_values(&[route.as_str(), r.status().as_str()])
        .inc();
    r
}

async fn version() -> Json<serde_json::Value> {
    Json(serde_json::json!({"flocker": concat!("berth-volume ", env!("CARGO_PKG_VERSION"))}))
}

async fn auth(AxState(c): AxState<Shared>, mut req: Request, next: Next) -> Response {
    let caller = match &c.token {
        None => Some(Caller::Operator),
        Some(tok) => req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .and_then(|given| {
                if credential::same_token(given, tok) {
                    Some(Caller::Operator)
                } else {
                    credential::verify(tok, given).map(Caller::Node)
                }
            }),
    };
    match caller {
        Some(who) => {
            req.extensions_mut().insert(who);
            next.run(req).await
        }
        None => ApiError::Unauthorized.into_response(),
    }
}

/// Among several instances, only the serving one answers the API; the Raft group's own routes,
/// the version and metrics are answered by every instance.
async fn gate(AxState(c): AxState<Shared>, req: Request, next: Next) -> Response {
    let p = req.uri().path();
    let open = p == "/metrics" || p == "/v1/version" || p.starts_with("/v1/berth/raft");
    if !open && !c.seat.serving() {
        return ApiError::NotLeader(c.leader_url()).into_response();
    }
    next.run(req).await
}

/// The service's routes.
pub fn router(c: Shared) -> Router {
    Router::new()
        .merge(replicated::routes())
        .route("/v1/version", get(version))
        .route(
            "/v1/configuration/datasets",
            get(list_datasets).post(create_dataset),
        )
        .route(
            "/v1/configuration/datasets/{id}",
            post(move_dataset).delete(delete_dataset),
        )
        .route("/v1/state/datasets", get(state_datasets).post(report_state))
        .route("/v1/state/nodes", get(list_nodes).post(register_node))
        .route("/v1/berth/nodes", get(node_liveness))
        .route("/v1/berth/nodes/{uuid}/dead", post(declare_dead))
        .route("/v1/berth/nodes/{uuid}/heartbeat", post(heartbeat))
        .route(
            "/v1/configuration/leases",
            get(list_leases).post(acquire_lease),
        )
        .route("/v1/configuration/leases/{id}", delete(release_lease))
        .route("/v1/berth/mounts/{id}", post(claim_mount))
        .route("/v1/berth/mounts/{id}/{node}", delete(release_mount))
        .route("/v1/berth/volumes", get(list_volumes))
        .route("/v1/berth/volumes/{name}", get(get_volume))
        .route("/v1/berth/volumes/{name}/fence", post(fence_volume))
        .route("/v1/berth/volumes/{name}/assign", post(assign_volume))
        .route(
            "/v1/berth/volumes/{name}/standbys/{node}",
            post(report_standby),
        )
        .route("/v1/berth/credentials/verify", post(verify_credential))
        .route("/v1/berth/leaders/{name}", post(take_leader))
        .route("/v1/berth/leaders/{name}/{holder}", delete(release_leader))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                Json(ErrorBody {
                    description: "no such endpoint".into(),
                    ..ErrorBody::default()
                }),
            )
        })
        .layer(middleware::from_fn_with_state(c.clone(), gate))
        .layer(middleware::from_fn_with_state(c.clone(), auth))
        .route_layer(middleware::from_fn(count_requests))
        .with_state(c)
}

/// Serves until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    c: Shared,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let ticks = tokio::spawn(record_time(c.clone()));
    let served = axum::serve(listener, router(c))
        .with_graceful_shutdown(shutdown)
        .await;
    ticks.abort();
    served
}

/// While this instance serves, records every `TICK` the control time it has reached, so the
/// next leader continues from there (`control::clock`).
async fn record_time(c: Shared) {
    loop {
        tokio::time::sleep(TICK).await;
        if c.seat.serving() {
            let t = c.clock.now_ms();
            if let Err(e) = c
                .write(move |s| {
                    s.tick(t);
                    Ok(())
                })
                .await
            {
                tracing::debug!(error = ?e, "control time not recorded");
            }
        }
    }
}
