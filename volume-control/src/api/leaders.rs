//! Leader locks (`berth run --elect`): granted to the holder, to anyone when free, or when the
//! holder's last renewal lapsed on this instance's clock; and each lock's journal, written only
//! by its holder at its epoch while its grant runs (the model's `write_leader_journal`).

use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use berth_control_model::model::ControlError;
use berth_control_model::wire::{LeaderJournal, LeaderReply, LeaderRequest};

use super::Shared;
use super::auth::Caller;
use super::error::{ApiError, parse};

/// Takes or renews a leader lock. Granted when the caller holds it, or when nobody does, or when
/// its holder's last renewal has lapsed on this instance's clock; the grant runs `ttl_ms` from
/// after this instance confirmed it leads (and the caller counts from when it sent the
/// request, earlier), so it never outlasts this instance's own view.
pub(super) async fn take_leader(
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
            epoch: 0,
        },
        current => {
            let expect = current.map(|l| l.holder);
            let changed = expect.as_deref() != Some(b.holder.as_str());
            let (n, h, ttl) = (name.clone(), b.holder.clone(), b.ttl_ms);
            let (epoch, _) = c
                .write(move |s| s.take_leader(&n, &h, ttl, expect.as_deref()))
                .await?;
            if changed {
                tracing::info!(lock = %name, holder = %b.holder, "leader lock taken");
            }
            locks.insert(name, t + b.ttl_ms);
            LeaderReply {
                holder: Some(b.holder),
                granted: true,
                ttl_ms: b.ttl_ms,
                epoch,
            }
        }
    };
    Ok(Json(reply).into_response())
}

/// Frees a leader lock its holder no longer wants, so another may take it at once.
pub(super) async fn release_leader(
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

/// Lock `name`'s journal, as its last holder wrote it; 404 when none was ever written.
pub(super) async fn read_journal(
    AxState(c): AxState<Shared>,
    Extension(who): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    who.operator("a leader lock's journal")?;
    match c.read(|s| s.leader_journals.get(&name).cloned()) {
        Some(j) => Ok(Json(j).into_response()),
        None => Err(ApiError::Control(ControlError::NotFound(format!(
            "no journal for leader lock {name}"
        )))),
    }
}

/// Writes lock `name`'s journal: only its holder, at its epoch, while its grant runs on this
/// instance's clock (409 otherwise), and only while this instance leads, as for a grant.
pub(super) async fn write_journal(
    AxState(c): AxState<Shared>,
    Extension(who): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    who.operator("a leader lock's journal")?;
    let b: LeaderJournal = parse(&body)?;
    if !c.seat.confirm().await {
        c.seat.lost();
        return Err(ApiError::NotLeader(c.leader_url()));
    }
    // Held across the write, so no grant is decided in between.
    let locks = c.lock_expiry.lock().await;
    let t = c.mono_ms();
    if locks.get(&name).is_none_or(|until| *until <= t) {
        return Err(ApiError::Control(ControlError::Conflict(format!(
            "leader lock {name}: {}'s grant has lapsed; its journal write at epoch {} is refused",
            b.holder, b.epoch
        ))));
    }
    c.write(move |s| s.write_leader_journal(&name, &b.holder, b.epoch, b.state))
        .await?;
    drop(locks);
    Ok(StatusCode::NO_CONTENT.into_response())
}
