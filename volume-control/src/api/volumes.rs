//! Berth's volumes: mount claims and releases, the executor's fence and assign, standby
//! positions, and the volume records.

use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxState};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use berth_control_model::model::ControlError;
use berth_control_model::wire::{
    AssignRequest, ClaimMount, FenceRequest, StandbyReport, VolumeRecord,
};
use serde::Deserialize;

use super::Shared;
use super::auth::Caller;
use super::error::{ApiError, parse};

pub(super) async fn claim_mount(
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

pub(super) async fn release_mount(
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
pub(super) struct VolumeFilter {
    /// Only volumes `node` is the primary, a standby or the mount holder of.
    node: Option<String>,
}

pub(super) async fn list_volumes(
    AxState(c): AxState<Shared>,
    Query(f): Query<VolumeFilter>,
) -> Response {
    Json(c.volume_records_of(f.node.as_deref())).into_response()
}

pub(super) async fn get_volume(
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

pub(super) async fn fence_volume(
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
            let d = s.fence_checked(&n, &b.node, b.expect_epoch, t, &leases)?;
            Ok(VolumeRecord::of(&d, s, t))
        })
        .await?;
    tracing::warn!(volume = %name, from = ?r.fenced_from, epoch = r.epoch, "volume fenced");
    Ok(Json(r).into_response())
}

pub(super) async fn assign_volume(
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
            let before = s.by_name(&n).map(|d| d.version);
            let d = s.assign_checked(&n, &b.primary, b.epoch, b.mode, t, &leases)?;
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

pub(super) async fn report_standby(
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
