//! Flocker's dataset API v1 over HTTP (plus a few `/v1/berth/*` endpoints for agents): the only
//! file that knows Flocker's JSON shapes, headers and status codes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, Request, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::model::{ControlError, Lease, NewDataset, Node, Reported, State};
use crate::store::{Store, StoreError};

/// Header carrying the configuration tag.
pub const TAG_HEADER: &str = "x-configuration-tag";
/// Header making a configuration change conditional.
pub const IF_MATCHES_HEADER: &str = "x-if-configuration-matches";

/// The running control service.
pub struct Control {
    state: Mutex<State>,
    store: Box<dyn Store>,
    token: Option<String>,
}

impl Control {
    /// Loads the persisted state (or starts empty).
    pub fn open(store: Box<dyn Store>, token: Option<String>) -> Result<Control, StoreError> {
        let state = match store.load()? {
            Some(doc) => serde_json::from_slice(&doc).map_err(StoreError::Decode)?,
            None => State::default(),
        };
        Ok(Control {
            state: Mutex::new(state),
            store,
            token,
        })
    }

    fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&s)
    }

    /// Applies a change to a copy, persists it, and only then makes it visible.
    fn write<T>(
        &self,
        f: impl FnOnce(&mut State) -> Result<T, ControlError>,
    ) -> Result<(T, String), ApiError> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = s.clone();
        let out = f(&mut next).map_err(ApiError::Control)?;
        if next != *s {
            let doc = serde_json::to_vec(&next).map_err(|e| ApiError::Store(e.to_string()))?;
            self.store
                .save(&doc)
                .map_err(|e| ApiError::Store(e.to_string()))?;
            *s = next;
        }
        Ok((out, s.tag()))
    }
}

/// An error reply in Flocker's `{"description": …}` form.
#[derive(Debug)]
pub enum ApiError {
    Control(ControlError),
    BadJson(String),
    Unauthorized,
    Store(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, desc) = match &self {
            ApiError::Control(e) => {
                let code = match e {
                    ControlError::Invalid(_) => StatusCode::BAD_REQUEST,
                    ControlError::NotFound(_) => StatusCode::NOT_FOUND,
                    ControlError::Deleted(_) => StatusCode::METHOD_NOT_ALLOWED,
                    ControlError::Conflict(_) | ControlError::Fence(_) => StatusCode::CONFLICT,
                    ControlError::TagMismatch { .. } => StatusCode::PRECONDITION_FAILED,
                };
                (code, e.to_string())
            }
            ApiError::BadJson(m) => (StatusCode::BAD_REQUEST, m.clone()),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token".into(),
            ),
            ApiError::Store(m) => (StatusCode::INTERNAL_SERVER_ERROR, format!("store: {m}")),
        };
        if code.is_server_error() {
            tracing::error!(%desc, "control request failed");
        } else {
            tracing::info!(status = code.as_u16(), %desc, "control request refused");
        }
        let body = if code == StatusCode::BAD_REQUEST {
            json!({"description": desc, "errors": [desc]})
        } else {
            json!({"description": desc})
        };
        (code, Json(body)).into_response()
    }
}

type Shared = Arc<Control>;

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadJson(format!("request body: {e}")))
}

fn if_matches(h: &HeaderMap) -> Option<String> {
    h.get(IF_MATCHES_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn tagged(code: StatusCode, tag: String, body: Value) -> Response {
    let mut r = (code, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&tag) {
        r.headers_mut().insert(TAG_HEADER, v);
    }
    r
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

async fn list_datasets(AxState(c): AxState<Shared>) -> Response {
    let (list, tag) = c.read(|s| (s.datasets.values().cloned().collect::<Vec<_>>(), s.tag()));
    tagged(StatusCode::OK, tag, to_json(&list))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    primary: String,
    dataset_id: Option<String>,
    maximum_size: Option<u64>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

async fn create_dataset(
    AxState(c): AxState<Shared>,
    h: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: CreateBody = parse(&body)?;
    let req = NewDataset {
        primary: b.primary,
        dataset_id: b.dataset_id,
        maximum_size: b.maximum_size,
        metadata: b.metadata,
    };
    let tag = if_matches(&h);
    let (d, tag) = c.write(|s| s.create(req, tag.as_deref()))?;
    tracing::info!(dataset = %d.dataset_id, primary = %d.primary, "dataset created");
    Ok(tagged(StatusCode::CREATED, tag, to_json(&d)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveBody {
    primary: String,
    #[serde(default)]
    force: bool,
}

async fn move_dataset(
    AxState(c): AxState<Shared>,
    Path(id): Path<String>,
    h: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: MoveBody = parse(&body)?;
    let tag = if_matches(&h);
    let (d, tag) = c.write(|s| s.move_to(&id, &b.primary, b.force, tag.as_deref(), now()))?;
    tracing::info!(dataset = %id, primary = %d.primary, epoch = d.epoch, "dataset moved");
    Ok(tagged(StatusCode::OK, tag, to_json(&d)))
}

async fn delete_dataset(
    AxState(c): AxState<Shared>,
    Path(id): Path<String>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    let tag = if_matches(&h);
    let (d, tag) = c.write(|s| s.delete(&id, tag.as_deref()))?;
    tracing::info!(dataset = %id, "dataset deleted");
    Ok(tagged(StatusCode::OK, tag, to_json(&d)))
}

async fn state_datasets(AxState(c): AxState<Shared>) -> Response {
    let list = c.read(|s| {
        s.reported
            .iter()
            .filter_map(|(id, r)| {
                let d = s.datasets.get(id)?;
                Some(json!({"dataset_id": id, "primary": r.node_uuid,
                            "maximum_size": d.maximum_size, "path": r.path}))
            })
            .collect::<Vec<_>>()
    });
    Json(list).into_response()
}

#[derive(Deserialize)]
struct ReportBody {
    node_uuid: String,
    datasets: Vec<ReportItem>,
}

#[derive(Deserialize)]
struct ReportItem {
    dataset_id: String,
    path: String,
    epoch: u64,
}

async fn report_state(AxState(c): AxState<Shared>, body: Bytes) -> Result<Response, ApiError> {
    let b: ReportBody = parse(&body)?;
    c.write(|s| {
        s.reported.retain(|_, r| r.node_uuid != b.node_uuid);
        for i in b.datasets {
            let current = s
                .datasets
                .get(&i.dataset_id)
                .is_some_and(|d| !d.deleted && d.primary == b.node_uuid && d.epoch == i.epoch);
            if current {
                s.reported.insert(
                    i.dataset_id,
                    Reported {
                        node_uuid: b.node_uuid.clone(),
                        path: i.path,
                        epoch: i.epoch,
                    },
                );
            }
        }
        Ok(())
    })?;
    Ok(Json(json!({})).into_response())
}

async fn list_nodes(AxState(c): AxState<Shared>) -> Response {
    let list = c.read(|s| {
        s.nodes
            .values()
            .map(
                |n| json!({"host": n.host, "uuid": n.uuid, "transfer": n.transfer, "dead": n.dead}),
            )
            .collect::<Vec<_>>()
    });
    Json(list).into_response()
}

#[derive(Deserialize)]
struct NodeBody {
    uuid: String,
    host: String,
    transfer: String,
}

async fn register_node(AxState(c): AxState<Shared>, body: Bytes) -> Result<Response, ApiError> {
    let b: NodeBody = parse(&body)?;
    if b.uuid.is_empty() {
        return Err(ApiError::Control(ControlError::Invalid(
            "uuid is required".into(),
        )));
    }
    tracing::info!(node = %b.uuid, transfer = %b.transfer, "node registered");
    c.write(|s| {
        s.register_node(Node {
            uuid: b.uuid,
            host: b.host,
            transfer: b.transfer,
            dead: false,
        });
        Ok(())
    })?;
    Ok(Json(json!({})).into_response())
}

async fn declare_dead(
    AxState(c): AxState<Shared>,
    Path(uuid): Path<String>,
) -> Result<Response, ApiError> {
    c.write(|s| s.declare_dead(&uuid))?;
    tracing::warn!(node = %uuid, "node declared dead");
    Ok(Json(json!({"uuid": uuid, "dead": true})).into_response())
}

fn lease_json(l: &Lease, now: f64) -> Value {
    json!({"dataset_id": l.dataset_id, "node_uuid": l.node_uuid,
           "expires": l.expires_at.map(|t| (t - now).max(0.0))})
}

async fn list_leases(AxState(c): AxState<Shared>) -> Response {
    let t = now();
    let list = c.read(|s| {
        s.leases
            .values()
            .map(|l| lease_json(l, t))
            .collect::<Vec<_>>()
    });
    Json(list).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseBody {
    dataset_id: String,
    node_uuid: String,
    expires: Option<f64>,
}

async fn acquire_lease(AxState(c): AxState<Shared>, body: Bytes) -> Result<Response, ApiError> {
    let b: LeaseBody = parse(&body)?;
    let t = now();
    let l = Lease {
        dataset_id: b.dataset_id,
        node_uuid: b.node_uuid,
        expires_at: b.expires.map(|e| t + e),
    };
    let (l, _) = c.write(|s| s.lease(l, t))?;
    Ok((StatusCode::CREATED, Json(lease_json(&l, t))).into_response())
}

async fn release_lease(
    AxState(c): AxState<Shared>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (l, _) = c.write(|s| s.release_lease(&id))?;
    Ok(Json(lease_json(&l, now())).into_response())
}

#[derive(Deserialize)]
struct ClaimBody {
    node_uuid: String,
    epoch: u64,
}

async fn claim_mount(
    AxState(c): AxState<Shared>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: ClaimBody = parse(&body)?;
    let (d, _) = c.write(|s| s.claim_mount(&id, &b.node_uuid, b.epoch))?;
    Ok(Json(to_json(&d)).into_response())
}

async fn release_mount(
    AxState(c): AxState<Shared>,
    Path((id, node)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    c.write(|s| s.release_mount(&id, &node))?;
    Ok(Json(json!({})).into_response())
}

async fn version() -> Json<Value> {
    Json(json!({"flocker": concat!("berth-volume ", env!("CARGO_PKG_VERSION"))}))
}

async fn auth(AxState(c): AxState<Shared>, req: Request, next: Next) -> Response {
    if let Some(tok) = &c.token {
        let ok = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|v| v == tok);
        if !ok {
            return ApiError::Unauthorized.into_response();
        }
    }
    next.run(req).await
}

/// The service's routes.
pub fn router(c: Shared) -> Router {
    Router::new()
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
        .route("/v1/berth/nodes/{uuid}/dead", post(declare_dead))
        .route(
            "/v1/configuration/leases",
            get(list_leases).post(acquire_lease),
        )
        .route("/v1/configuration/leases/{id}", delete(release_lease))
        .route("/v1/berth/mounts/{id}", post(claim_mount))
        .route("/v1/berth/mounts/{id}/{node}", delete(release_mount))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                Json(json!({"description": "no such endpoint"})),
            )
        })
        .layer(middleware::from_fn_with_state(c.clone(), auth))
        .with_state(c)
}

/// Serves until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    c: Shared,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(c))
        .with_graceful_shutdown(shutdown)
        .await
}
