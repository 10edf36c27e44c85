//! `/metrics` (gauges set from the state at each scrape) and the per-route request counter.

use axum::extract::{Request, State as AxState};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::Shared;

/// `/metrics`: the counters as they stand, and the gauges set from the state now.
pub(super) async fn metrics(AxState(c): AxState<Shared>) -> Response {
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
pub(super) async fn count_requests(req: Request, next: Next) -> Response {
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
