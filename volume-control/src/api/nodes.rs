//! Nodes: registration, heartbeats (each granting a lease, once the timing is admitted), the
//! liveness view, declaring a node dead, and checking a node credential.

use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use berth_control_model::credential;
use berth_control_model::model::{ControlError, Node};
use berth_control_model::wire::{
    Heartbeat, HeartbeatReply, RegisterNode, VerifiedCredential, VerifyCredential,
};

use super::Shared;
use super::auth::Caller;
use super::error::{ApiError, parse};

pub(super) async fn list_nodes(AxState(c): AxState<Shared>) -> Response {
    let list = c.read(|s| s.nodes.values().cloned().collect::<Vec<Node>>());
    Json(list).into_response()
}

pub(super) async fn register_node(
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

pub(super) async fn declare_dead(
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

pub(super) async fn heartbeat(
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
    let (dead, nodes) = c
        .read(|s| s.nodes.get(&uuid).map(|n| (n.dead, s.nodes.len() as u64)))
        .ok_or_else(|| {
            ApiError::Control(ControlError::NotFound(format!(
                "node {uuid} is not registered; register it first"
            )))
        })?;
    // A closed node is granted a lease only once a record reopening it has committed
    // ("Fencing", rule 8). A closing pass may close it again between the reopening and the
    // admission (its last heartbeat was long ago): then it is reopened once more.
    let wants_lease = b.docker_reachable && !dead;
    let mut tries = 0;
    let (was, HeartbeatReply { lease_ms, dead, .. }) = loop {
        if wants_lease && c.liveness().is_closed(&uuid) {
            c.reopen(&uuid).await?;
        }
        tries += 1;
        let mut l = c.liveness();
        if wants_lease && l.is_closed(&uuid) && tries < 3 {
            continue;
        }
        let t = c.mono_ms();
        let was = l.view(&uuid, t);
        break (was, l.admit(&uuid, dead, &b, t).map_err(ApiError::Control)?);
    };
    if !was.alive {
        tracing::info!(node = %uuid, dead, "node heartbeating");
    }
    if was.docker_reachable != Some(b.docker_reachable) && !b.docker_reachable {
        tracing::warn!(node = %uuid, "the node's agent cannot reach its Docker Engine: no lease granted until it can");
    }
    Ok(Json(HeartbeatReply {
        lease_ms,
        dead,
        nodes,
    })
    .into_response())
}

pub(super) async fn node_liveness(AxState(c): AxState<Shared>) -> Response {
    Json(c.node_liveness()).into_response()
}

pub(super) async fn verify_credential(
    AxState(c): AxState<Shared>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: VerifyCredential = parse(&body)?;
    let node = c
        .token
        .as_deref()
        .and_then(|t| credential::verify(t, &b.credential))
        .ok_or(ApiError::Unauthorized)?;
    Ok(Json(VerifiedCredential { node }).into_response())
}
