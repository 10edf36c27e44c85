//! `replicated` datasets between agents. The primary's agent ships its copy to each standby on a
//! short interval while the dataset is mounted (or a standby trails), and once more at the last
//! Unmount before answering it. A ship is the standby pulling with the verified incremental
//! transfer (`transfer::pull`, the move's own): only changed files travel, each verified and
//! renamed into place. The standby then reports its position (when the ship began reading) to
//! the control service, which is what a promotion goes by.
//!
//! A standby checks with the control service, before each ship, that the asking primary is the
//! primary at the current epoch and that it is itself a standby: a fenced primary can ship to
//! nobody. Each (dataset, standby) pair has at most one ship under way, bounded in time, so a
//! standby that hangs delays no other; and a ship into a copy that becomes the data (a
//! promotion) is stopped before the copy is used. A demoted primary (its copy may hold writes past the promoted position) withdraws its
//! epoch marker before its first ship, which then replaces its copy with the new primary's:
//! fenced, never merged.
//!
//! What a ship copies of a live dataset is each file whole as the primary held it at some instant
//! during the ship, not one instant for all files (there is no filesystem snapshot): an
//! application whose files must agree with each other is exactly consistent on a standby only as
//! of a ship at Unmount.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use berth_control_model::options::BackendKind;
use berth_control_model::wire::VolumeRecord;
use berth_volume_client::ClientError;
use berth_volume_client::http_client::{self, HttpError};
use hyper::Method;
use serde::{Deserialize, Serialize};

use crate::agent::Agent;
use crate::backend::BackendError;
pub use crate::shipper::{DEFAULT_INTERVAL, Shipper};
use crate::transfer::{self, TransferError, TransferOptions};

/// Longest an Unmount waits for its final ship before answering anyway.
pub const UNMOUNT_SHIP_LIMIT: Duration = Duration::from_secs(60);
/// Longest one ship on the interval may take before its standby is asked afresh (a standby
/// whose connection hangs must not keep its slot for ever; a first ship of a big dataset may
/// take minutes).
pub const SHIP_LIMIT: Duration = Duration::from_secs(600);

/// `POST /v1/replica/{id}/ship`: the primary asks a standby to ship now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShipRequest {
    pub name: String,
    pub epoch: u64,
}

/// What a ship did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShipReply {
    pub files: u64,
    pub bytes: u64,
    pub ms: u64,
}

/// A ship that did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("control service")]
    Control(#[from] ClientError),
    #[error("ship refused: {0}")]
    Refused(String),
    #[error("pulling from the primary failed")]
    Transfer(#[from] TransferError),
    #[error("standby copy")]
    Backend(#[from] BackendError),
    #[error("standby agent unreachable")]
    Http(#[from] HttpError),
    #[error("standby agent answered {status}: {body}")]
    Status { status: u16, body: String },
}

/// Whether `v`, of which this node is the primary, has anything a standby lacks.
fn due(v: &VolumeRecord, me: &str) -> bool {
    v.mounted_on.as_deref() == Some(me)
        || v.standbys
            .iter()
            .any(|s| s.epoch != Some(v.epoch) || s.lag_ms != Some(0))
}

/// One pass of the primary side: for every `replicated` dataset this node is the primary of and
/// whose standbys trail (or which is mounted here), starts a ship to each standby that has none
/// under way. Ships run on their own; the pass does not wait for them.
pub async fn ship_pass(agent: &Arc<Agent>) -> Result<(), ReplicaError> {
    let me = agent.node();
    let vols = agent.control().volumes_of(me).await?;
    for v in vols.into_iter().filter(|v| {
        v.backend == BackendKind::Replicated.as_str()
            && v.is_primary(me)
            && agent.layout().local_epoch(&v.dataset_id) == Some(v.epoch)
            && due(v, me)
    }) {
        let v = Arc::new(v);
        for s in &v.standbys {
            let Some(addr) = s.transfer.clone() else {
                continue;
            };
            let Ok(g) = agent
                .shipper()
                .lock(&v.dataset_id, &s.node)
                .try_lock_owned()
            else {
                continue;
            };
            let (agent, v, node) = (agent.clone(), v.clone(), s.node.clone());
            tokio::spawn(async move {
                let r = tokio::time::timeout(SHIP_LIMIT, ask(&agent, &addr, &v)).await;
                drop(g);
                log_ship(&v.name, &node, r);
            });
        }
    }
    Ok(())
}

fn log_ship(
    volume: &str,
    standby: &str,
    r: Result<Result<ShipReply, ReplicaError>, tokio::time::error::Elapsed>,
) {
    match r {
        Ok(Ok(r)) => tracing::debug!(
            volume,
            standby,
            files = r.files,
            bytes = r.bytes,
            ms = r.ms,
            "shipped"
        ),
        Ok(Err(e)) => {
            tracing::warn!(volume, standby, error = %berth_volume_client::error_chain::chain(&e), "ship failed; the next pass retries")
        }
        Err(_) => tracing::warn!(volume, standby, "ship timed out; the next pass asks again"),
    }
}

async fn ask(agent: &Agent, addr: &str, v: &VolumeRecord) -> Result<ShipReply, ReplicaError> {
    let opts = agent.transfer_options();
    let headers: Vec<(&str, String)> = opts
        .token
        .iter()
        .map(|t| ("authorization", format!("Bearer {t}")))
        .collect();
    let body = serde_json::to_vec(&ShipRequest {
        name: v.name.clone(),
        epoch: v.epoch,
    })
    .unwrap_or_default();
    // The standby answers once its pull is done; the caller bounds the whole ship.
    let r = http_client::send_within(
        SHIP_LIMIT,
        &opts.peer(addr),
        Method::POST,
        &format!("/v1/replica/{}/ship", v.dataset_id),
        &headers,
        body,
    )
    .await?;
    if !r.status.is_success() {
        return Err(ReplicaError::Status {
            status: r.status.as_u16(),
            body: String::from_utf8_lossy(&r.body).into_owned(),
        });
    }
    serde_json::from_slice(&r.body).map_err(|e| ReplicaError::Refused(format!("bad reply: {e}")))
}

/// The final ship after the last Unmount of `name`, if it is a `replicated` dataset this node is
/// the primary of: the writer has stopped, so each standby ends up exactly equal to the primary
/// (a ship already under way is waited for, then one more is made).
pub async fn ship_after_unmount(agent: &Agent, name: &str) {
    let v = match agent.control().volume(name).await {
        Ok(Some(v)) => v,
        _ => return,
    };
    if v.backend != BackendKind::Replicated.as_str()
        || !v.is_primary(agent.node())
        || v.standbys.is_empty()
    {
        return;
    }
    let asks = v.standbys.iter().filter_map(|s| {
        let addr = s.transfer.clone()?;
        let v = &v;
        Some(async move {
            let lock = agent.shipper().lock(&v.dataset_id, &s.node);
            let r = tokio::time::timeout(UNMOUNT_SHIP_LIMIT, async {
                let _g = lock.lock().await;
                ask(agent, &addr, v).await
            })
            .await;
            log_ship(&v.name, &s.node, r);
        })
    });
    futures_util::future::join_all(asks).await;
}

/// The standby side's route, behind the same guard as the transfer endpoint.
pub fn router(agent: Arc<Agent>, opts: &TransferOptions) -> Router {
    transfer::guard(
        Router::new()
            .route("/v1/replica/{id}/ship", post(handle))
            .with_state(agent),
        opts,
    )
}

async fn handle(
    State(agent): State<Arc<Agent>>,
    Path(id): Path<String>,
    axum::Json(req): axum::Json<ShipRequest>,
) -> Response {
    // Detached: a primary that stops waiting (its Unmount's limit) does not cut the ship short.
    let a = agent.clone();
    let r = tokio::spawn(async move { receive(&a, &id, &req).await }).await;
    match r {
        Ok(Ok(reply)) => axum::Json(reply).into_response(),
        Ok(Err(e)) => {
            let code = match e {
                ReplicaError::Refused(_) => StatusCode::CONFLICT,
                _ => StatusCode::BAD_GATEWAY,
            };
            (code, berth_volume_client::error_chain::chain(&e)).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// A standby ships dataset `id` from its primary, if the control service agrees that it is a
/// standby and the primary is current at `req.epoch`, and reports its new position. It holds
/// the copy's ship lock, not the volume's lock, so that `Agent::prepare` can stop it (a
/// promotion must not wait for a ship from a dead primary).
async fn receive(agent: &Agent, id: &str, req: &ShipRequest) -> Result<ShipReply, ReplicaError> {
    let me = agent.node();
    let slot = agent.standby_ship(id);
    let _g = slot.lock.lock().await;
    // Counted after taking the lock: a cancel before this point came with a control state
    // that the check below sees (this node the primary), so it refuses.
    let mut cancels = slot.cancels.subscribe();
    let start = *cancels.borrow_and_update();
    let v = agent
        .control()
        .volume(&req.name)
        .await?
        .ok_or_else(|| ReplicaError::Refused(format!("no volume {}", req.name)))?;
    let primary = match &v.primary {
        Some(p) if v.dataset_id == id && v.epoch == req.epoch && p != me => p.clone(),
        _ => {
            return Err(ReplicaError::Refused(format!(
                "volume {} is at epoch {} with primary {:?}; the ship was for epoch {}",
                req.name, v.epoch, v.primary, req.epoch
            )));
        }
    };
    if !v.standbys.iter().any(|s| s.node == me) {
        return Err(ReplicaError::Refused(format!(
            "{me} is not a standby of {}",
            req.name
        )));
    }
    let addr = agent
        .control()
        .nodes()
        .await?
        .into_iter()
        .find(|n| n.uuid == primary)
        .map(|n| n.transfer)
        .ok_or_else(|| ReplicaError::Refused(format!("primary {primary} is not registered")))?;
    let layout = agent.layout();
    if let Some(was) = layout.local_epoch(id) {
        layout.clear_epoch(id)?;
        tracing::warn!(volume = %req.name, epoch = was, "demoted to standby: this copy is replaced by the primary's; writes past the promoted position are discarded");
    }
    layout.clear_standby(id)?;
    let started = Instant::now();
    let cancel = async move {
        let _ = cancels.wait_for(|c| *c != start).await;
    };
    let stats = transfer::pull_until(
        &addr,
        id,
        Some(v.epoch),
        layout,
        agent.transfer_options(),
        cancel,
    )
    .await?;
    let ms = started.elapsed().as_millis() as u64;
    layout.set_standby(id, v.epoch)?;
    match agent
        .control()
        .report_standby(&req.name, me, v.epoch, ms, stats.bytes)
        .await
    {
        Ok(_) => Ok(ShipReply {
            files: stats.copied,
            bytes: stats.bytes,
            ms,
        }),
        Err(e) if e.status() == Some(409) => {
            // The copy it shipped from stopped being the data meanwhile: this one does not count.
            layout.clear_standby(id)?;
            Err(ReplicaError::Refused(e.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}
