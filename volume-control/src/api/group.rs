//! The Raft group's own routes (entries, votes, snapshots from peers) and its status route,
//! on a replicated control service (`control --raft-id`).

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State as AxState};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};

use super::Shared;
use super::auth::Caller;
use super::error::{ApiError, parse};
use crate::raft::{Replica, network};

fn replica(c: &Shared) -> Result<&Replica, ApiError> {
    c.replica()
        .ok_or_else(|| ApiError::BadJson("this control instance is not replicated".into()))
}

async fn status(AxState(c): AxState<Shared>) -> Result<Response, ApiError> {
    Ok(Json(replica(&c)?.status()).into_response())
}

/// One Raft RPC from a peer: the cluster token only; openraft's `Result` goes back as JSON.
async fn rpc<Req, Resp, Fut>(
    c: &Shared,
    who: &Caller,
    body: &Bytes,
    call: impl FnOnce(Replica, Req) -> Fut,
) -> Result<Response, ApiError>
where
    Req: serde::de::DeserializeOwned,
    Resp: serde::Serialize,
    Fut: std::future::Future<Output = Resp>,
{
    who.operator("a raft RPC")?;
    let r = replica(c)?.clone();
    Ok(Json(call(r, parse(body)?).await).into_response())
}

async fn append(
    AxState(c): AxState<Shared>,
    Extension(who): Extension<Caller>,
    body: Bytes,
) -> Result<Response, ApiError> {
    rpc(&c, &who, &body, |r, req| async move {
        r.raft.append_entries(req).await
    })
    .await
}

async fn vote(
    AxState(c): AxState<Shared>,
    Extension(who): Extension<Caller>,
    body: Bytes,
) -> Result<Response, ApiError> {
    rpc(
        &c,
        &who,
        &body,
        |r, req| async move { r.raft.vote(req).await },
    )
    .await
}

async fn snapshot(
    AxState(c): AxState<Shared>,
    Extension(who): Extension<Caller>,
    body: Bytes,
) -> Result<Response, ApiError> {
    rpc(&c, &who, &body, |r, req| async move {
        r.raft.install_snapshot(req).await
    })
    .await
}

/// The group's routes; entries and snapshot chunks carry whole documents, so no body limit
/// (they need the cluster token).
pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route("/v1/berth/raft", get(status))
        .route(network::APPEND, post(append))
        .route(network::VOTE, post(vote))
        .route(network::SNAPSHOT, post(snapshot))
        .layer(DefaultBodyLimit::disable())
}
