//! The daemon's HTTP API: JSON under versioned paths, plus Prometheus' `/metrics`.
//!
//! | path | answer |
//! |---|---|
//! | `GET /v1/health` | `200 {"status":"ok"}` while the process serves |
//! | `GET /v1/ready` | `200` once a reconcile pass succeeded within the last 3 resync periods, else `503` with the last error; a standby (leader election) answers `200 {"status":"standby"}` with the leader while its last election round reached Consul, else `503` |
//! | `GET /v1/plan` | the last pass's plan: placements and pending tasks with reasons (`berth plan --output json`'s shape), the commands it issued, templates it cannot run |
//! | `GET /v1/explain/{service}` | every node's verdict for the service's next task (`berth explain --output json`'s shape) |
//! | `GET /v1/failovers` | the failover executor's runs (event, steps, start and end in Unix ms, how each ended) and the commands in flight |
//! | `GET /v1/rebalance` | the current or last rescheduling run: each move (from, to, mode, bytes, wave, its step or how it ended, its downtime), whether the automatic mode is on, whether a request waits |
//! | `POST /v1/rebalance` | asks for a rescheduling run at the next pass (body: `{"max_in_flight", "bytes_per_sec", "max_moves", "margin"}`, each optional): `202 {"request": N}`; `409` while a failover or another rescheduling run is under way |
//! | `GET /v1/services` | with `--consul`: the Consul instances Berth keeps registered (one per Swarm task), their check status and the last sync's outcome; `404` without `--consul` |
//! | `GET /metrics` | Prometheus text format |
//!
//! Every path but `/v1/health` and `/v1/ready` (the probes a supervisor or a load balancer
//! polls) needs the cluster token as `Authorization: Bearer <token>`, since plans, failovers and
//! metrics describe the cluster's nodes and volumes; a missing or wrong token gets `401` with
//! `WWW-Authenticate: Bearer`. Only a daemon started with `--insecure` (no token) answers anyone.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::cli::render;
use crate::controller::Status;
use crate::metrics::Metrics;
use berth_leadership::Leadership;

#[derive(Clone)]
struct Ctx {
    status: Arc<Mutex<Status>>,
    leadership: Arc<Leadership>,
    metrics: Metrics,
    resync: Duration,
}

fn json_response(code: StatusCode, body: Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn health() -> Response {
    json_response(StatusCode::OK, json!({"status": "ok"}))
}

/// Ready (`/v1/ready` and `berth_ready`): the leader, once a pass succeeded within the last 3
/// resync periods; a standby, while its last election round reached Consul (it can take over).
fn is_ready(st: &Status, leadership: &Leadership, resync: Duration) -> bool {
    let v = leadership.view();
    if v.elected && !v.leader {
        return v.error.is_none();
    }
    st.last_success.is_some_and(|t| t.elapsed() <= resync * 3)
}

async fn ready(State(c): State<Ctx>) -> Response {
    let v = c.leadership.view();
    if v.elected && !v.leader {
        return match v.error {
            None => json_response(
                StatusCode::OK,
                json!({"status": "standby", "leader": v.holder}),
            ),
            Some(e) => json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"status": "standby", "last_error": e}),
            ),
        };
    }
    let st = c.status.lock().expect("status lock");
    if is_ready(&st, &c.leadership, c.resync) {
        json_response(StatusCode::OK, json!({"status": "ready"}))
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "not ready", "last_error": st.last_error}),
        )
    }
}

async fn plan(State(c): State<Ctx>) -> Response {
    let st = c.status.lock().expect("status lock");
    let Some(plan) = &st.plan else {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "no reconcile pass has completed yet", "last_error": st.last_error}),
        );
    };
    let mut body: Value =
        serde_json::from_str(&render::plan_json(plan)).expect("plan_json is JSON");
    body["commands"] = json!(st.last_commands);
    body["invalid_templates"] = json!(st.invalid_templates);
    json_response(StatusCode::OK, body)
}

async fn explain(State(c): State<Ctx>, Path(service): Path<String>) -> Response {
    let cluster = {
        let st = c.status.lock().expect("status lock");
        st.cluster.clone()
    };
    let Some(cluster) = cluster else {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "no reconcile pass has completed yet"}),
        );
    };
    match berth_scheduler::explain::explain(&cluster, &service) {
        Ok(e) => json_response(
            StatusCode::OK,
            serde_json::from_str(&render::explain_json(&e)).expect("explain_json is JSON"),
        ),
        Err(e) => json_response(StatusCode::NOT_FOUND, json!({"error": e.to_string()})),
    }
}

async fn failovers(State(c): State<Ctx>) -> Response {
    let st = c.status.lock().expect("status lock");
    json_response(
        StatusCode::OK,
        json!({"runs": st.failovers, "in_flight": st.failover_commands}),
    )
}

async fn metrics(State(c): State<Ctx>) -> Response {
    // Computed at the scrape, so the gauge and /v1/ready always agree.
    let ready = is_ready(
        &c.status.lock().expect("status lock"),
        &c.leadership,
        c.resync,
    );
    c.metrics.ready.set(i64::from(ready));
    c.metrics.leader.set(i64::from(c.leadership.is_leader()));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        c.metrics.render(),
    )
        .into_response()
}

/// The cluster token the detailed endpoints ask for; `None` only with `--insecure`.
pub type ApiToken = Option<Arc<str>>;

/// Lets a request through only with the cluster token as its bearer token.
async fn require_token(State(token): State<ApiToken>, req: Request, next: Next) -> Response {
    let Some(token) = token else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if berth_control_model::credential::same_token(g, &token) => next.run(req).await,
        _ => {
            let mut r = json_response(
                StatusCode::UNAUTHORIZED,
                json!({"error": "missing or wrong bearer token: this endpoint needs the cluster token (--token-file)"}),
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static(berth_control_model::credential::BEARER_CHALLENGE),
            );
            r
        }
    }
}

pub fn router(
    status: Arc<Mutex<Status>>,
    leadership: Arc<Leadership>,
    metrics: Metrics,
    resync: Duration,
    token: ApiToken,
) -> Router {
    Router::new()
        .route("/v1/plan", get(plan))
        .route("/v1/explain/{service}", get(explain))
        .route("/v1/failovers", get(failovers))
        .route("/metrics", get(self::metrics))
        .route_layer(middleware::from_fn_with_state(token, require_token))
        .route("/v1/health", get(health))
        .route("/v1/ready", get(ready))
        .with_state(Ctx {
            status,
            leadership,
            metrics,
            resync,
        })
}

#[cfg(feature = "consul")]
type ConsulStatus = Option<Arc<Mutex<crate::consul::SyncStatus>>>;

#[cfg(feature = "consul")]
async fn services(State(c): State<ConsulStatus>) -> Response {
    let Some(c) = c else {
        return json_response(
            StatusCode::NOT_FOUND,
            json!({"error": "berth run was started without --consul"}),
        );
    };
    let st = c.lock().expect("consul status lock");
    json_response(
        StatusCode::OK,
        json!({
            "consul": st.address,
            "last_success_seconds_ago": st.last_success.map(|t| t.elapsed().as_secs_f64()),
            "last_error": st.last_error,
            "instances": st.instances,
        }),
    )
}

#[derive(Clone)]
struct Rebalance {
    status: Arc<Mutex<Status>>,
    wake: Arc<Notify>,
}

async fn rebalance_progress(State(c): State<Rebalance>) -> Response {
    let st = c.status.lock().expect("status lock");
    json_response(
        StatusCode::OK,
        serde_json::to_value(&st.rebalance).expect("progress is JSON"),
    )
}

async fn rebalance_request(State(c): State<Rebalance>, body: axum::body::Bytes) -> Response {
    let mut req: crate::controller::rebalance::Request = if body.is_empty() {
        Default::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    json!({"error": format!("the request does not decode: {e}")}),
                );
            }
        }
    };
    let id = {
        let mut st = c.status.lock().expect("status lock");
        if let Some(r) = st
            .failovers
            .iter()
            .find(|r| r.ended_ms.is_none() && !r.rebalance)
        {
            return json_response(
                StatusCode::CONFLICT,
                json!({"error": format!("failover run {} is under way: rebalance once it has ended", r.run)}),
            );
        }
        if st.rebalance.running {
            return json_response(
                StatusCode::CONFLICT,
                json!({"error": format!("rescheduling run {} is under way", st.rebalance.run.unwrap_or_default())}),
            );
        }
        // Ids go up from the last one taken or waiting, so a client can tell its answer.
        req.id = st
            .rebalance_request
            .as_ref()
            .map(|r| r.id)
            .max(st.rebalance.request)
            .unwrap_or(0)
            + 1;
        st.rebalance_request = Some(req.clone());
        st.rebalance.requested = true;
        req.id
    };
    c.wake.notify_one();
    json_response(StatusCode::ACCEPTED, json!({"request": id}))
}

/// `/v1/rebalance`, merged into [`router`]'s by `berth run`.
pub fn rebalance_router(status: Arc<Mutex<Status>>, wake: Arc<Notify>, token: ApiToken) -> Router {
    Router::new()
        .route(
            "/v1/rebalance",
            get(rebalance_progress).post(rebalance_request),
        )
        .route_layer(middleware::from_fn_with_state(token, require_token))
        .with_state(Rebalance { status, wake })
}

/// `/v1/services`, merged into [`router`]'s by `berth run`.
#[cfg(feature = "consul")]
pub fn services_router(consul: ConsulStatus, token: ApiToken) -> Router {
    Router::new()
        .route("/v1/services", get(services))
        .route_layer(middleware::from_fn_with_state(token, require_token))
        .with_state(consul)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn ctx(leadership: Arc<Leadership>, last_success: Option<Instant>) -> Ctx {
        let status = Status {
            last_success,
            ..Status::default()
        };
        Ctx {
            status: Arc::new(Mutex::new(status)),
            leadership,
            metrics: Metrics::new(),
            resync: Duration::from_secs(10),
        }
    }

    async fn body(r: Response) -> (StatusCode, Value) {
        let code = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20)
            .await
            .expect("body");
        (code, serde_json::from_slice(&bytes).expect("JSON"))
    }

    #[tokio::test]
    async fn a_standby_is_ready_and_names_the_leader_while_consul_answers_it() {
        let l = Leadership::elected(berth_leadership::Policy::StepDown);
        l.stand_by(Some("m1 (pid 7, API 10.0.0.1:9440)".into()), None);
        let (code, b) = body(ready(State(ctx(l.clone(), None))).await).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(
            b,
            json!({"status": "standby", "leader": "m1 (pid 7, API 10.0.0.1:9440)"})
        );
        let c = ctx(l.clone(), None);
        let text = {
            let r = self::metrics(State(c.clone())).await;
            let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
            String::from_utf8(bytes.to_vec()).unwrap()
        };
        assert!(text.contains("\nberth_leader 0\n"), "{text}");
        assert!(text.contains("\nberth_ready 1\n"), "{text}");
        l.stand_by(None, Some("create session: no answer".into()));
        let (code, b) = body(ready(State(ctx(l, None))).await).await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            b,
            json!({"status": "standby", "last_error": "create session: no answer"})
        );
    }

    /// The probes answer anyone; everything that describes the cluster needs the cluster
    /// token, and a 401 says how to authenticate.
    #[tokio::test]
    async fn detailed_endpoints_need_the_cluster_token_and_probes_do_not() {
        use tower::ServiceExt;
        let app = router(
            Arc::new(Mutex::new(Status {
                last_success: Some(Instant::now()),
                ..Status::default()
            })),
            Leadership::always(),
            Metrics::new(),
            Duration::from_secs(10),
            Some(Arc::from("s3cret")),
        );
        let call = |path: &str, auth: Option<&str>| {
            let mut req = axum::http::Request::get(path);
            if let Some(a) = auth {
                req = req.header(header::AUTHORIZATION, a);
            }
            app.clone()
                .oneshot(req.body(axum::body::Body::empty()).unwrap())
        };
        for path in ["/v1/health", "/v1/ready"] {
            let r = call(path, None).await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{path}");
        }
        for path in ["/v1/plan", "/v1/explain/db", "/v1/failovers", "/metrics"] {
            for auth in [
                None,
                Some("Bearer wrong"),
                Some("s3cret"),
                Some("Basic s3cret"),
            ] {
                let r = call(path, auth).await.unwrap();
                assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path} {auth:?}");
                assert_eq!(
                    r.headers()[header::WWW_AUTHENTICATE],
                    "Bearer realm=\"berth\"",
                    "{path}"
                );
            }
            let r = call(path, Some("Bearer s3cret")).await.unwrap();
            assert_ne!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        }
        let r = call("/metrics", Some("Bearer s3cret")).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn the_leader_is_ready_after_a_recent_pass_and_reports_berth_leader_1() {
        let l = Leadership::elected(berth_leadership::Policy::StepDown);
        l.lead_until(Instant::now() + Duration::from_secs(3600));
        let c = ctx(l, Some(Instant::now()));
        let (code, b) = body(ready(State(c.clone())).await).await;
        assert_eq!((code, b), (StatusCode::OK, json!({"status": "ready"})));
        let r = self::metrics(State(c)).await;
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        assert!(String::from_utf8_lossy(&bytes).contains("\nberth_leader 1\n"));
    }

    #[tokio::test]
    async fn a_rebalance_request_is_taken_once_and_refused_during_a_failover() {
        use tower::ServiceExt;
        let status = Arc::new(Mutex::new(Status::default()));
        let wake = Arc::new(Notify::new());
        let app = rebalance_router(status.clone(), wake.clone(), Some(Arc::from("s3cret")));
        let post = |body: &str| {
            axum::http::Request::post("/v1/rebalance")
                .header("authorization", "Bearer s3cret")
                .body(axum::body::Body::from(body.to_string()))
                .unwrap()
        };
        let (code, v) = body(
            app.clone()
                .oneshot(post(r#"{"max_moves": 1}"#))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (code, v["request"].as_u64()),
            (StatusCode::ACCEPTED, Some(1))
        );
        let req = status.lock().unwrap().rebalance_request.clone().unwrap();
        assert_eq!((req.id, req.max_moves), (1, Some(1)));
        // The loop is woken for a pass.
        tokio::time::timeout(Duration::from_secs(1), wake.notified())
            .await
            .expect("woken");
        let (code, _) = body(app.clone().oneshot(post("{bad")).await.unwrap()).await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        let get = axum::http::Request::get("/v1/rebalance")
            .header("authorization", "Bearer s3cret")
            .body(axum::body::Body::empty())
            .unwrap();
        let (code, v) = body(app.clone().oneshot(get).await.unwrap()).await;
        assert_eq!(
            (code, v["requested"].as_bool()),
            (StatusCode::OK, Some(true))
        );

        status.lock().unwrap().failovers = vec![berth_scheduler::executor::FailoverRecord {
            run: 4,
            by: berth_scheduler::executor::Actor::Berth,
            event: None,
            steps: Vec::new(),
            started_ms: 0,
            ended_ms: None,
            end: None,
            rebalance: false,
        }];
        let (code, v) = body(app.clone().oneshot(post("")).await.unwrap()).await;
        assert_eq!(code, StatusCode::CONFLICT, "{v}");
        assert!(
            v["error"].as_str().unwrap().contains("failover run 4"),
            "{v}"
        );
        // Without the token: refused.
        let anon = axum::http::Request::post("/v1/rebalance")
            .body(axum::body::Body::empty())
            .unwrap();
        assert_eq!(
            app.oneshot(anon).await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
    }
}
