//! A node agent's Prometheus metrics (`prometheus` crate), served at `/metrics` on its transfer
//! address. Process-wide, so the code that sees an event (a pull deep in `backend`) counts it
//! without plumbing. The lease gauge is kept current by the lease watchdog. The table is in
//! docs/observability.md.

use std::sync::LazyLock;

use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(c.clone())).expect("registers once");
    c
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("registers once");
    c
}

fn encode(r: &Registry) -> String {
    let mut buf = Vec::new();
    TextEncoder::new()
        .encode(&r.gather(), &mut buf)
        .expect("text encoding of gathered metrics");
    String::from_utf8(buf).expect("the text format is UTF-8")
}

/// A node agent's metrics.
pub struct AgentMetrics {
    registry: Registry,
    pub self_fences: IntCounter,
    pub containers_stopped: IntCounter,
    pub heartbeat_failures: IntCounter,
    pub moves: IntCounterVec,
    pub move_bytes: IntCounter,
    pub lease_left: prometheus::Gauge,
    pub self_fenced: IntGauge,
    pub failsafe: IntGauge,
    pub failsafe_peers: IntGauge,
    pub writes_held: IntCounter,
    pub writes_waiting: IntGauge,
    pub writes_refused: IntCounter,
    pub mounts_refused: IntCounter,
    pub orphans_released: IntCounter,
    pub docker_reachable: IntGauge,
}

impl AgentMetrics {
    fn new() -> AgentMetrics {
        let r = Registry::new();
        let lease_left = prometheus::Gauge::new(
            "berth_agent_lease_remaining_seconds",
            "How much longer this node's lease runs, on its own clock (0: none).",
        )
        .expect("valid metric");
        r.register(Box::new(lease_left.clone()))
            .expect("registers once");
        let self_fenced = IntGauge::new(
            "berth_agent_self_fenced",
            "1 once this agent, its node declared dead, has stopped its containers and refuses \
             every write and mount.",
        )
        .expect("valid metric");
        r.register(Box::new(self_fenced.clone()))
            .expect("registers once");
        let failsafe = IntGauge::new(
            "berth_agent_failsafe",
            "1 while this agent admits writes on failsafe rounds (every peer says the control \
             service answers it neither), not on a lease the control service granted.",
        )
        .expect("valid metric");
        r.register(Box::new(failsafe.clone()))
            .expect("registers once");
        let failsafe_peers = IntGauge::new(
            "berth_agent_failsafe_peers",
            "How many peers this agent's failsafe rounds ask (the other registered agents, as \
             the control service last listed them).",
        )
        .expect("valid metric");
        r.register(Box::new(failsafe_peers.clone()))
            .expect("registers once");
        let writes_waiting = IntGauge::new(
            "berth_agent_writes_waiting",
            "Writes to Berth volumes held at the data path now: the lease ended, or a mount is \
             being claimed again after a gap in it.",
        )
        .expect("valid metric");
        r.register(Box::new(writes_waiting.clone()))
            .expect("registers once");
        let docker_reachable = IntGauge::new(
            "berth_volume_docker_reachable",
            "1 while this agent's node's Docker Engine answers; 0 while it does not, when the \
             agent could not stop its containers and so is granted no lease.",
        )
        .expect("valid metric");
        r.register(Box::new(docker_reachable.clone()))
            .expect("registers once");
        docker_reachable.set(1);
        let m = AgentMetrics {
            self_fences: counter(
                &r,
                "berth_self_fence_total",
                "Times this agent stopped every container using a Berth volume on its node \
                 because the node was declared dead.",
            ),
            containers_stopped: counter(
                &r,
                "berth_self_fence_containers_stopped_total",
                "Containers stopped by self-fencing.",
            ),
            heartbeat_failures: counter(
                &r,
                "berth_agent_heartbeat_failures_total",
                "Heartbeats the control service did not answer with a lease.",
            ),
            moves: counter_vec(
                &r,
                "berth_dataset_moves_total",
                "Dataset copies pulled to this node as its new primary, by outcome.",
                &["outcome"],
            ),
            move_bytes: counter(
                &r,
                "berth_dataset_move_bytes_total",
                "Bytes pulled to this node by dataset moves.",
            ),
            lease_left,
            self_fenced,
            failsafe,
            failsafe_peers,
            writes_held: counter(
                &r,
                "berth_agent_writes_held_total",
                "Writes to Berth volumes the data path held until the lease was renewed or the \
                 mount claimed again.",
            ),
            writes_waiting,
            writes_refused: counter(
                &r,
                "berth_agent_writes_refused_total",
                "Writes to Berth volumes the data path refused (EIO): the mount's data moved to \
                 another node, the node was declared dead, or the volume was unmounted.",
            ),
            mounts_refused: counter(
                &r,
                "berth_agent_mounts_fenced_total",
                "Mounts found fenced (their data moved to another node) while served here: their \
                 writes refused and their containers stopped.",
            ),
            orphans_released: counter(
                &r,
                "berth_agent_orphan_claims_released_total",
                "Mount claims released because no container on this node used them any more \
                 (the engine restarted without an Unmount).",
            ),
            docker_reachable,
            registry: r,
        };
        for outcome in ["ok", "failed"] {
            m.moves.with_label_values(&[outcome]);
        }
        m
    }

    pub fn encode(&self) -> String {
        encode(&self.registry)
    }
}

static AGENT: LazyLock<AgentMetrics> = LazyLock::new(AgentMetrics::new);

pub fn agent() -> &'static AgentMetrics {
    &AGENT
}

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// An agent's `/metrics` route. With a token configured (the cluster token or this node's
/// credential), a scrape must present it or any bearer the control service accepts: the
/// cluster token (what Prometheus holds) or a node credential. Those the control service
/// accepted are remembered, as they stay valid as long as the cluster secret does.
pub fn agent_router(
    control: berth_volume_client::ControlClient,
    token: Option<String>,
) -> axum::Router {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let serve =
        axum::routing::get(|| async { ([(header::CONTENT_TYPE, CONTENT_TYPE)], agent().encode()) });
    let r = axum::Router::new().route("/metrics", serve);
    let Some(token) = token else {
        return r;
    };
    let accepted = std::sync::Arc::new(std::sync::Mutex::new(
        std::collections::BTreeSet::<String>::new(),
    ));
    r.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let (token, control, accepted) = (token.clone(), control.clone(), accepted.clone());
            async move {
                let given = req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::to_string);
                let known = |g: &str| {
                    accepted
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .contains(g)
                };
                let ok = match given {
                    None => false,
                    Some(g)
                        if berth_control_model::credential::same_token(&g, &token) || known(&g) =>
                    {
                        true
                    }
                    Some(g) => {
                        let yes = control
                            .with_token(Some(g.clone()))
                            .node_liveness()
                            .await
                            .is_ok();
                        if yes {
                            accepted.lock().unwrap_or_else(|p| p.into_inner()).insert(g);
                        }
                        yes
                    }
                };
                if ok {
                    next.run(req).await
                } else {
                    (
                        StatusCode::UNAUTHORIZED,
                        [(
                            axum::http::header::WWW_AUTHENTICATE,
                            berth_control_model::credential::BEARER_CHALLENGE,
                        )],
                        "missing or wrong bearer token",
                    )
                        .into_response()
                }
            }
        },
    ))
}
