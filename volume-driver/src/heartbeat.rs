//! The agent's heartbeat loop: heartbeat the control service every `interval` and keep the
//! lease each answer grants in the `Keeper` (whose rules are `berth_control_model::lease`),
//! and stop this node's containers once it is declared dead.

use std::sync::Arc;
use std::time::Duration;

use berth_control_model::lease::{Renewal, SharedKeeper};

use crate::agent::Agent;

/// What the agent registered as, to register again if the control service lost it.
#[derive(Debug, Clone)]
pub struct Registration {
    pub host: String,
    pub transfer: String,
}

/// Heartbeats every `interval` and fences the agent when its lease is about to end, until
/// `stop` turns true. Two loops: a heartbeat may hang as long as the control service does, the
/// watchdog that fences never waits on one.
pub async fn run(
    agent: Arc<Agent>,
    keeper: SharedKeeper,
    reg: Registration,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    tokio::join!(
        heartbeats(agent.clone(), keeper.clone(), reg, stop.clone()),
        docker_probe(agent.clone(), keeper.clone(), stop.clone()),
        watchdog(agent, keeper, stop)
    );
}

async fn heartbeats(
    agent: Arc<Agent>,
    keeper: SharedKeeper,
    reg: Registration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let t = keeper.timing();
    let m = crate::metrics::agent();
    let control = agent.control().clone();
    let node = agent.node().to_string();
    let mut told_dead = false;
    loop {
        let tick = tokio::time::Instant::now();
        let sent = crate::clock::now();
        let ok = match tokio::time::timeout(
            t.interval,
            control.heartbeat(&node, &keeper.heartbeat()),
        )
        .await
        {
            Ok(Ok(r)) => {
                match keeper.renewed(sent, crate::clock::now(), r) {
                    Renewal::Renewed => {}
                    Renewal::NewPeriod(p) => {
                        tracing::info!(node = %node, period = p, "lease granted after a gap: claiming every mount again before it takes writes")
                    }
                    Renewal::Dead if !told_dead => {
                        told_dead = true;
                        tracing::error!(node = %node, "the control service says this node was declared dead: refusing every write and stopping its containers");
                    }
                    Renewal::Dead => {}
                    Renewal::Withheld => {
                        tracing::debug!(node = %node, "no lease granted: the Docker Engine does not answer")
                    }
                }
                // A mount not yet claimed in this lease period holds its writes until it is;
                // one whose claim is refused lost its data to another node and is stopped.
                agent.revalidate().await;
                true
            }
            Ok(Err(e)) if e.status() == Some(404) => {
                keeper.answered();
                tracing::warn!(node = %node, "the control service does not know this node; registering again");
                if let Err(e) = control.register_node(&node, &reg.host, &reg.transfer).await {
                    tracing::warn!(error = %e, "registering again failed");
                }
                false
            }
            Ok(Err(e)) => {
                // A refusal is contact: failsafe is for a service that grants nobody a lease
                // (rule 9). A 5xx is not: a replicated member without a leader answers 503.
                if e.status().is_some_and(|s| s < 500) {
                    keeper.answered();
                } else {
                    keeper.unreached();
                }
                tracing::debug!(error = %e, "heartbeat failed");
                if e.status() == Some(400) {
                    tracing::error!(error = %e, "the control service refuses this agent's lease timing");
                }
                false
            }
            Err(_) => {
                keeper.unreached();
                tracing::debug!("heartbeat unanswered within one interval");
                false
            }
        };
        if !ok {
            m.heartbeat_failures.inc();
            if keeper.failed() {
                tracing::warn!(node = %node, misses = t.misses, left_ms = keeper.left(crate::clock::now()).as_millis() as u64,
                    "lost contact with the control service: writes are held once the lease ends");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep_until(tick + t.interval) => {}
            _ = stop.wait_for(|v| *v) => return,
        }
    }
}

/// Probes the node's Docker Engine every interval (each probe given one interval to answer),
/// so that the heartbeats say whether it answers and `/v1/ready` and the gauge show it.
async fn docker_probe(
    agent: Arc<Agent>,
    keeper: SharedKeeper,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let t = keeper.timing();
    let m = crate::metrics::agent();
    loop {
        let tick = tokio::time::Instant::now();
        let reachable = agent.docker_answers(t.interval).await;
        m.docker_reachable.set(i64::from(reachable));
        if keeper.docker_probed(reachable) {
            if reachable {
                tracing::info!(node = %agent.node(), "the Docker Engine answers again");
            } else {
                tracing::error!(node = %agent.node(), "the Docker Engine does not answer: this node could not stop its containers, so it asks for no lease (writes wait once the one held ends) and reports not ready");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep_until(tick + t.interval) => {}
            _ = stop.wait_for(|v| *v) => return,
        }
    }
}

/// Stops the containers of a node declared dead; keeps the lease gauge current.
async fn watchdog(
    agent: Arc<Agent>,
    keeper: SharedKeeper,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let t = keeper.timing();
    let tick = (t.interval / 10).clamp(Duration::from_millis(10), Duration::from_millis(100));
    let m = crate::metrics::agent();
    loop {
        let now = crate::clock::now();
        m.lease_left.set(keeper.left(now).as_secs_f64());
        if keeper.stop_due() {
            m.self_fences.inc();
            m.self_fenced.set(1);
            let started = std::time::Instant::now();
            let stopped = agent.self_fence(t.self_fence_deadline).await;
            m.containers_stopped.inc_by(stopped as u64);
            tracing::warn!(node = %agent.node(), containers = stopped, ms = started.elapsed().as_millis() as u64, "self-fenced");
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.wait_for(|v| *v) => return,
        }
    }
}

/// The agent's probes on its transfer listener, asked for no token (like `berth run`'s):
/// `/v1/health` answers while the process serves; `/v1/ready` 200 only while the node holds a
/// lease and reaches its Docker Engine, else 503 with the reasons.
pub fn probes_router(keeper: SharedKeeper) -> axum::Router {
    use axum::http::StatusCode;
    use axum::routing::get;
    axum::Router::new()
        .route(
            "/v1/health",
            get(|| async { axum::Json(serde_json::json!({"ok": true})) }),
        )
        .route(
            "/v1/ready",
            get(move || {
                let keeper = keeper.clone();
                async move {
                    let why = keeper.not_ready(crate::clock::now());
                    let code = if why.is_empty() {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    let body = serde_json::json!({
                        "ready": why.is_empty(),
                        "docker_reachable": keeper.docker_reachable(),
                        "reasons": why,
                    });
                    (code, axum::Json(body))
                }
            }),
        )
}
