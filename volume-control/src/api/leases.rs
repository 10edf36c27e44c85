//! Flocker's leases on datasets.

use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use berth_control_model::model::Lease;
use berth_control_model::wire::{LeaseRecord, LeaseRequest};

use super::Shared;
use super::auth::Caller;
use super::error::{ApiError, parse};

pub(super) fn lease_record(l: &Lease, now: f64) -> LeaseRecord {
    LeaseRecord {
        dataset_id: l.dataset_id.clone(),
        node_uuid: l.node_uuid.clone(),
        expires: l.expires_at.map(|t| (t - now).max(0.0)),
    }
}

pub(super) async fn list_leases(AxState(c): AxState<Shared>) -> Response {
    let t = c.clock.now_secs();
    let list = c.read(|s| {
        s.leases
            .values()
            .map(|l| lease_record(l, t))
            .collect::<Vec<_>>()
    });
    Json(list).into_response()
}

pub(super) async fn acquire_lease(
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

pub(super) async fn release_lease(
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
