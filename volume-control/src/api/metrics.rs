//! `/metrics` (the state's gauges computed at each scrape) and the per-route request counter.

use axum::extract::{Request, State as AxState};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::Shared;

/// `/metrics`: the counters as they stand, and the state's gauges computed now.
pub(super) async fn metrics(AxState(c): AxState<Shared>) -> Response {
    let serving = c.seat.serving();
    let (epochs, nodes) = if serving {
        let epochs = c.read(|s| {
            s.datasets
                .values()
                .filter(|d| !d.deleted)
                .map(|d| (d.name().unwrap_or(&d.dataset_id).to_string(), d.epoch))
                .collect::<Vec<_>>()
        });
        (epochs, c.node_liveness())
    } else {
        (Vec::new(), Vec::new())
    };
    let state = crate::metrics::StateGauges::new(serving, &epochs, &nodes);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        crate::metrics::control().encode(&state),
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
