//! Failsafe mode (ARCHITECTURE.md, "Fencing", rule 9; off unless `--failsafe`): while the
//! control service answers nobody, an agent that reaches every other registered agent, each
//! saying it cannot reach the control service either, goes on admitting writes as if its lease
//! were renewed. The rules are `berth_control_model::lease` (`Keeper::vote`,
//! `Keeper::failsafe_round`, `Keeper::failsafe_hold`); this module asks the peers over their
//! own HTTP endpoints, answers their asks, and keeps the list of peers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_control_model::lease::{SharedKeeper, Vote};
use berth_volume_client::http_client;
use hyper::Method;

use crate::agent::Agent;

/// The peers' transfer addresses, as registered at the control service when it last answered.
#[derive(Debug, Clone, Default)]
pub struct Peers(Arc<Mutex<Option<Vec<String>>>>);

impl Peers {
    fn set(&self, addrs: Vec<String>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(addrs);
    }

    fn get(&self) -> Option<Vec<String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// `POST /v1/failsafe/vote`: this agent's vote (`Keeper::vote`). Asked for no token: a vote
/// grants nothing; an `unreachable` one only holds this node's next new mount for a lease.
pub fn router(keeper: SharedKeeper) -> axum::Router {
    axum::Router::new().route(
        "/v1/failsafe/vote",
        axum::routing::post(move || {
            let keeper = keeper.clone();
            async move { axum::Json(keeper.vote(crate::clock::now())) }
        }),
    )
}

/// Every interval: while the control service answers, refreshes the peer list when its
/// length disagrees with the registered count of the last answer (and every tenth interval,
/// for a changed address); while it does not and there is a lease to continue, asks every
/// peer's vote, each within one interval, and hands the round to the keeper.
pub async fn run(
    agent: Arc<Agent>,
    keeper: SharedKeeper,
    peers: Peers,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let t = keeper.timing();
    let m = crate::metrics::agent();
    let mut n: u64 = 0;
    let mut was = false;
    loop {
        let tick = tokio::time::Instant::now();
        let known = peers.get();
        if keeper.wants_failsafe(crate::clock::now()) {
            match known {
                Some(addrs) => {
                    let sent = crate::clock::now();
                    let votes = ask(&agent, &addrs, t.interval).await;
                    let ok = keeper.failsafe_round(sent, crate::clock::now(), &votes);
                    if ok != was {
                        if ok {
                            tracing::warn!(node = %agent.node(), peers = addrs.len(), "failsafe: the control service answers no agent; every peer says so: writes go on");
                        } else {
                            tracing::warn!(node = %agent.node(), ?votes, "failsafe ends: a peer reaches the control service or does not answer; writes are held once the lease ends");
                        }
                    }
                    was = ok;
                }
                None => tracing::debug!("failsafe: no peer list yet"),
            }
        } else {
            was = false;
            let registered = keeper.registered();
            let stale = known.is_none_or(|a| registered > 0 && a.len() as u64 + 1 != registered);
            if stale || n.is_multiple_of(10) {
                // Bounded: a service that stops answering mid-call must not keep the first
                // round waiting past the lease.
                match tokio::time::timeout(t.interval, agent.control().nodes()).await {
                    Ok(Ok(nodes)) => {
                        let addrs: Vec<String> = nodes
                            .into_iter()
                            .filter(|p| p.uuid != agent.node())
                            .map(|p| p.transfer)
                            .collect();
                        m.failsafe_peers.set(addrs.len() as i64);
                        peers.set(addrs);
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "failsafe: peer list not refreshed")
                    }
                    Err(_) => tracing::debug!("failsafe: peer list not refreshed in one interval"),
                }
            }
        }
        m.failsafe
            .set(i64::from(keeper.in_failsafe(crate::clock::now())));
        n += 1;
        tokio::select! {
            _ = tokio::time::sleep_until(tick + t.interval) => {}
            _ = stop.wait_for(|v| *v) => return,
        }
    }
}

/// Every peer's vote, asked at once; a peer that does not answer in time counts as `Off`.
async fn ask(agent: &Agent, addrs: &[String], within: Duration) -> Vec<Vote> {
    let opts = agent.transfer_options();
    let asks = addrs.iter().map(|a| {
        let target = opts.peer(a);
        async move {
            match http_client::send_within(
                within,
                &target,
                Method::POST,
                "/v1/failsafe/vote",
                &[],
                Vec::new(),
            )
            .await
            {
                Ok(r) if r.status.is_success() => {
                    serde_json::from_slice(&r.body).unwrap_or(Vote::Off)
                }
                _ => Vote::Off,
            }
        }
    });
    futures_util::future::join_all(asks).await
}
