//! Flocker's datasets: the configuration (create, move, delete, under the configuration tag)
//! and the state the agents report.

use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use berth_control_model::model::{NewDataset, Reported};
use berth_control_model::wire::{
    CreateDataset, HeldReport, IF_MATCHES_HEADER, MoveDataset, StateDataset, TAG_HEADER,
};

use super::Shared;
use super::auth::Caller;
use super::error::{ApiError, parse};

pub(super) fn if_matches(h: &HeaderMap) -> Option<String> {
    h.get(IF_MATCHES_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

pub(super) fn tagged<T: serde::Serialize>(code: StatusCode, tag: String, body: &T) -> Response {
    let mut r = (code, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&tag) {
        r.headers_mut().insert(TAG_HEADER, v);
    }
    r
}

pub(super) async fn list_datasets(AxState(c): AxState<Shared>) -> Response {
    let (list, tag) = c.read(|s| (s.datasets.values().cloned().collect::<Vec<_>>(), s.tag()));
    tagged(StatusCode::OK, tag, &list)
}

pub(super) async fn create_dataset(
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

pub(super) async fn move_dataset(
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

pub(super) async fn delete_dataset(
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

pub(super) async fn state_datasets(AxState(c): AxState<Shared>) -> Response {
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

pub(super) async fn report_state(
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
