//! Leader locks (`berth run --elect`): granted to the holder, to anyone when free, or when the
//! holder's last renewal lapsed on this instance's clock.

use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use berth_control_model::wire::{LeaderReply, LeaderRequest};

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
