//! Flocker's dataset API v1 over HTTP, plus Berth's `/v1/berth/*` endpoints (the executor
//! contract and the agents' calls): the only module that knows the routes, headers and status
//! codes. The bodies are `berth_control_model::wire`'s, shared with `berth_volume_client`. This
//! file holds the service (`Control`) and the router; the handlers are one file per resource
//! (`datasets`, `nodes`, `leaders`, `leases`, `volumes`, `metrics`; the Raft group's in
//! `group`), with `auth` (who is calling, whether this instance answers) and `error`.
//!
//! Who may do what: with a token configured, the cluster token is the operator's (and the
//! executor's) and may do anything; a node credential (`credential`) may read, and may act only
//! for its own node on the agent endpoints; anything else is 401.

pub mod auth;
mod datasets;
pub mod error;
mod group;
mod leaders;
mod leases;
mod metrics;
mod nodes;
mod volumes;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use berth_control_model::liveness::{Liveness, Timing};
use berth_control_model::model::{ControlError, Node, State};
use berth_control_model::wire::{ErrorBody, NodeLiveness, VolumeRecord};

use crate::clock::{ControlClock, TICK, wall_ms};
use crate::commit::{Committer, WriteError};
use crate::raft::Replica;
use crate::seat::Seat;
use crate::store::{Store, StoreError};

use self::auth::{auth, gate};
use self::datasets::{
    create_dataset, delete_dataset, list_datasets, move_dataset, report_state, state_datasets,
};
use self::error::ApiError;
use self::leaders::{read_journal, release_leader, take_leader, write_journal};
use self::leases::{acquire_lease, list_leases, release_lease};
use self::metrics::{count_requests, metrics};
use self::nodes::{
    declare_dead, heartbeat, list_nodes, node_liveness, register_node, verify_credential,
};
use self::volumes::{
    assign_volume, claim_mount, fence_volume, get_volume, list_volumes, release_mount,
    report_standby,
};

/// The running control service.
pub struct Control {
    state: Committer,
    token: Option<String>,
    /// Heartbeats and node leases, in memory only (see `liveness`).
    liveness: std::sync::Mutex<Liveness>,
    /// Monotonic 0 of `liveness`: node ages never come from a wall clock.
    started: std::time::Instant,
    /// What every instant in the state is read on (`control::clock`).
    clock: ControlClock,
    /// Whether this instance serves, among several sharing the state (`control::seat`).
    seat: Seat,
    /// When each leader lock lapses, on `mono_ms`; held across a lock's change so requests for
    /// locks are decided one at a time.
    lock_expiry: tokio::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    /// Held while nodes are closed or reopened (`grants`): from the liveness' choice to the
    /// record's commit, so the record committed last for a node is the one its liveness acts on.
    grants: tokio::sync::Mutex<()>,
    /// Nodes whose heartbeat waits for a reopening record: the next writer takes them all.
    reopening: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl Control {
    /// Loads the persisted state (or starts empty) and starts its writer, with the default
    /// heartbeat and lease timing.
    pub async fn open(store: Box<dyn Store>, token: Option<String>) -> Result<Control, StoreError> {
        Self::open_with(store, token, Timing::default()).await
    }

    /// `open`, granting node leases as `timing` says (already validated).
    pub async fn open_with(
        store: Box<dyn Store>,
        token: Option<String>,
        timing: Timing,
    ) -> Result<Control, StoreError> {
        let mut state: State = match store.load().await? {
            Some(doc) => serde_json::from_slice(&doc).map_err(StoreError::Decode)?,
            None => State::default(),
        };
        state.reindex();
        let expiry = lapse_all(&state, 0);
        let clock = ControlClock::continuing(state.clock_ms, timing.lease_ms, wall_ms());
        // A closure written by an earlier instance was proposed before this one started (0).
        let mut liveness = Liveness::new(timing);
        liveness.take_over(0, closures(&state, |_| 0));
        let state = Committer::start(state, store).map_err(|e| StoreError::Redb(e.to_string()))?;
        Ok(Control {
            clock,
            lock_expiry: tokio::sync::Mutex::new(expiry),
            grants: tokio::sync::Mutex::new(()),
            reopening: std::sync::Mutex::default(),
            state,
            token,
            liveness: std::sync::Mutex::new(liveness),
            started: std::time::Instant::now(),
            seat: Seat::Alone,
        })
    }

    /// `open_with` on a Raft member: the state is the group's, and this instance serves only
    /// while it leads (`control::replicated::lead` must run beside it).
    pub async fn open_replicated(
        replica: Replica,
        token: Option<String>,
        timing: Timing,
    ) -> Result<Control, StoreError> {
        let mut c = Self::open_with(replica.store(), token, timing).await?;
        c.seat = Seat::Raft(replica);
        Ok(c)
    }

    /// `open_with` on Consul KV shared by several instances: this one serves only while
    /// `elected` holds the leader key (`control::elected::Elected::run` must run beside it).
    #[cfg(feature = "consul")]
    pub async fn open_elected(
        store: std::sync::Arc<crate::consul_store::ConsulStore>,
        elected: std::sync::Arc<crate::elected::Elected>,
        token: Option<String>,
        timing: Timing,
    ) -> Result<Control, StoreError> {
        let mut c = Self::open_with(Box::new(store), token, timing).await?;
        c.seat = Seat::Elected(elected);
        Ok(c)
    }

    /// The Raft member, if replicated.
    pub fn replica(&self) -> Option<&Replica> {
        self.seat.replica()
    }

    /// How this instance decides whether it serves.
    pub fn seat(&self) -> &Seat {
        &self.seat
    }

    /// Takes up `doc`, the replicated document as of this leader's term, as the state to serve,
    /// and restarts node liveness as a new instance would.
    pub(super) async fn take_over(&self, doc: Option<String>) -> Result<(), String> {
        let mut state: State = match doc {
            Some(d) => serde_json::from_str(&d).map_err(|e| format!("state document: {e}"))?,
            None => State::default(),
        };
        state.reindex();
        let grants = self.grants.lock().await;
        // Held until the new state is in place, so no lock request is decided in between.
        let locks = self.lock_expiry.lock().await;
        self.state
            .reset(state)
            .await
            .map_err(|e| format!("{e:?}"))?;
        self.taken_over(locks);
        drop(grants);
        Ok(())
    }

    /// Takes up the store's document, read after every write queued before, as the state to
    /// serve, and restarts node liveness as a new instance would: how an instance elected on a
    /// shared store starts serving (`control::elected`).
    #[cfg(feature = "consul")]
    async fn take_over_stored(&self) -> Result<(), String> {
        let grants = self.grants.lock().await;
        let locks = self.lock_expiry.lock().await;
        self.state.reload().await.map_err(|e| format!("{e:?}"))?;
        self.taken_over(locks);
        drop(grants);
        Ok(())
    }

    /// After a takeover: every node counted as leased, every leader lock as renewed, from now
    /// (a closed node only as long as its closure says, counted from when this member applied
    /// it: "Fencing", rule 8).
    fn taken_over(
        &self,
        mut locks: tokio::sync::MutexGuard<'_, std::collections::BTreeMap<String, u64>>,
    ) {
        let t = self.mono_ms();
        let applied = self.seat.closures_applied();
        let started = self.started;
        let applied_ms = |n: &str| {
            applied.get(n).map_or(t, |i| {
                i.saturating_duration_since(started).as_millis() as u64
            })
        };
        let (summary, expiry, recorded, closed) = self.read(|s| {
            (
                (
                    s.datasets.len(),
                    s.nodes.len(),
                    s.leaders.len(),
                    s.generation,
                ),
                lapse_all(s, t),
                s.clock_ms,
                closures(s, applied_ms),
            )
        });
        let lease_ms = self.liveness().timing().lease_ms;
        self.clock.take_over(recorded, lease_ms, wall_ms());
        tracing::info!(
            datasets = summary.0,
            nodes = summary.1,
            leader_locks = summary.2,
            generation = summary.3,
            closed_nodes = closed.len(),
            "took up the shared state"
        );
        *locks = expiry;
        self.liveness().take_over(t, closed);
    }

    /// Closes the leases of the nodes gone quiet, and commits their closures in one write
    /// (`grants`). Nothing is written while every node heartbeats.
    async fn close_quiet(&self) {
        let _g = self.grants.lock().await;
        let nodes = self.read(|s| s.nodes.keys().cloned().collect::<Vec<_>>());
        let t = self.mono_ms();
        let closures = self.liveness().close_quiet(nodes, t);
        if closures.is_empty() {
            return;
        }
        let names: Vec<String> = closures.keys().cloned().collect();
        match self
            .write(move |s| {
                s.close_leases(closures);
                Ok(())
            })
            .await
        {
            Ok(_) => tracing::info!(nodes = ?names, "quiet nodes closed: no lease until reopened"),
            // They stay closed here either way: a lease is granted only after a reopening.
            Err(e) => tracing::debug!(error = ?e, "closing quiet nodes not recorded"),
        }
    }

    /// Commits a record reopening `node` (and every node waiting for the same), so it may be
    /// granted a lease again (`grants`). One write for all heartbeats waiting together.
    async fn reopen(&self, node: &str) -> Result<(), ApiError> {
        self.reopening_set().insert(node.to_string());
        let _g = self.grants.lock().await;
        if !self.liveness().is_closed(node) {
            return Ok(());
        }
        let mut batch = std::mem::take(&mut *self.reopening_set());
        batch.insert(node.to_string());
        batch.retain(|n| self.liveness().is_closed(n));
        let nodes = batch.clone();
        self.write(move |s| {
            s.reopen_leases(&nodes);
            Ok(())
        })
        .await?;
        let t = self.mono_ms();
        self.liveness().reopen(&batch, t);
        tracing::info!(nodes = ?batch, "nodes reopened: leases granted again");
        Ok(())
    }

    fn reopening_set(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<String>> {
        self.reopening.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The leader's URL as this instance knows it, for a client to go to.
    fn leader_url(&self) -> Option<String> {
        self.seat.leader_url()
    }

    fn mono_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn liveness(&self) -> std::sync::MutexGuard<'_, Liveness> {
        self.liveness.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every registered node's liveness as of now.
    pub fn node_liveness(&self) -> Vec<NodeLiveness> {
        let nodes = self.read(|s| s.nodes.values().cloned().collect::<Vec<Node>>());
        let t = self.mono_ms();
        let l = self.liveness();
        nodes.iter().map(|n| l.record(n, t)).collect()
    }

    /// The node leases still running (ms left by node), for a fence or an assignment.
    fn leases_now(&self) -> std::collections::BTreeMap<String, u64> {
        let nodes = self.read(|s| s.nodes.keys().cloned().collect::<Vec<_>>());
        let t = self.mono_ms();
        self.liveness().leases(nodes, t)
    }

    fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        self.state.read(f)
    }

    /// Every live volume's record as of now, standby lags included: what a metrics endpoint
    /// exports (`berth_volume_standby_lag_ms{volume, node}` and the like).
    pub fn volume_records(&self) -> Vec<VolumeRecord> {
        self.volume_records_of(None)
    }

    fn volume_records_of(&self, node: Option<&str>) -> Vec<VolumeRecord> {
        let t = self.clock.now_ms();
        self.read(|s| {
            s.datasets
                .values()
                .filter(|d| !d.deleted)
                .filter(|d| {
                    node.is_none_or(|n| {
                        d.primary == n
                            || d.standbys.contains_key(n)
                            || d.mounted_on.as_deref() == Some(n)
                    })
                })
                .map(|d| VolumeRecord::of(d, s, t))
                .collect()
        })
    }

    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut State) -> Result<T, ControlError> + Send + 'static,
    ) -> Result<(T, String), ApiError> {
        self.state.write(f).await.map_err(|e| match e {
            WriteError::Control(e) => ApiError::Control(e),
            WriteError::Store(m) => ApiError::Store(m),
            WriteError::NotLeader => {
                // Deposed: stop answering until the seat has been checked again.
                self.seat.lost();
                ApiError::NotLeader(self.leader_url())
            }
        })
    }
}

#[cfg(feature = "consul")]
impl crate::elected::TakeUp for Control {
    async fn take_over_stored(&self) -> Result<(), String> {
        Control::take_over_stored(self).await
    }
}

/// The state's lease closures, each with when it was applied on this instance's clock.
fn closures(
    s: &State,
    applied_ms: impl Fn(&str) -> u64,
) -> Vec<(String, berth_control_model::grants::Closure, u64)> {
    s.closed
        .iter()
        .map(|(n, c)| (n.clone(), *c, applied_ms(n)))
        .collect()
}

/// Every held leader lock counted as renewed at `now_ms`: what an instance that starts, or
/// takes over, must assume of renewals it did not see.
fn lapse_all(s: &State, now_ms: u64) -> std::collections::BTreeMap<String, u64> {
    s.leaders
        .iter()
        .map(|(n, l)| (n.clone(), now_ms + l.ttl_ms))
        .collect()
}

pub(super) type Shared = Arc<Control>;

async fn version() -> Json<serde_json::Value> {
    Json(serde_json::json!({"flocker": concat!("berth-volume ", env!("CARGO_PKG_VERSION"))}))
}

/// The service's routes.
pub fn router(c: Shared) -> Router {
    Router::new()
        .merge(group::routes())
        .route("/v1/version", get(version))
        .route(
            "/v1/configuration/datasets",
            get(list_datasets).post(create_dataset),
        )
        .route(
            "/v1/configuration/datasets/{id}",
            post(move_dataset).delete(delete_dataset),
        )
        .route("/v1/state/datasets", get(state_datasets).post(report_state))
        .route("/v1/state/nodes", get(list_nodes).post(register_node))
        .route("/v1/berth/nodes", get(node_liveness))
        .route("/v1/berth/nodes/{uuid}/dead", post(declare_dead))
        .route("/v1/berth/nodes/{uuid}/heartbeat", post(heartbeat))
        .route(
            "/v1/configuration/leases",
            get(list_leases).post(acquire_lease),
        )
        .route("/v1/configuration/leases/{id}", delete(release_lease))
        .route("/v1/berth/mounts/{id}", post(claim_mount))
        .route("/v1/berth/mounts/{id}/{node}", delete(release_mount))
        .route("/v1/berth/volumes", get(list_volumes))
        .route("/v1/berth/volumes/{name}", get(get_volume))
        .route("/v1/berth/volumes/{name}/fence", post(fence_volume))
        .route("/v1/berth/volumes/{name}/assign", post(assign_volume))
        .route(
            "/v1/berth/volumes/{name}/standbys/{node}",
            post(report_standby),
        )
        .route("/v1/berth/credentials/verify", post(verify_credential))
        .route("/v1/berth/leaders/{name}", post(take_leader))
        .route(
            "/v1/berth/journals/{name}",
            get(read_journal).put(write_journal),
        )
        .route("/v1/berth/leaders/{name}/{holder}", delete(release_leader))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                Json(ErrorBody {
                    description: "no such endpoint".into(),
                    ..ErrorBody::default()
                }),
            )
        })
        .layer(middleware::from_fn_with_state(c.clone(), gate))
        .layer(middleware::from_fn_with_state(c.clone(), auth))
        .route_layer(middleware::from_fn(count_requests))
        .with_state(c)
}

/// Serves until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    c: Shared,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_tls(listener, c, None, shutdown).await
}

/// [`serve`], over TLS when `tls` is given (`--tls-cert` and `--tls-key`).
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    c: Shared,
    tls: Option<berth_volume_client::tls::TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Aborted on drop too: a serve future dropped mid-way (its task aborted) must not leave an
    // instance that no longer serves recording time into the shared state.
    let _ticks = AbortOnDrop(tokio::spawn(record_time(c.clone())));
    let _closer = AbortOnDrop(tokio::spawn(close_quiet_nodes(c.clone())));
    match tls {
        None => {
            axum::serve(listener, router(c))
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(tls) => berth_volume_client::tls::serve(listener, tls, router(c), shutdown).await,
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// While this instance serves (and its seat closes leases), closes the nodes gone quiet every
/// half heartbeat interval (`grants`).
async fn close_quiet_nodes(c: Shared) {
    let every = std::time::Duration::from_millis((c.liveness().timing().interval_ms / 2).max(1));
    loop {
        tokio::time::sleep(every).await;
        if c.seat.serving() && c.seat.closes_leases() {
            c.close_quiet().await;
        }
    }
}

/// While this instance serves, records every `TICK` the control time it has reached, so the
/// next leader continues from there (`control::clock`).
async fn record_time(c: Shared) {
    loop {
        tokio::time::sleep(TICK).await;
        if c.seat.serving() {
            let t = c.clock.now_ms();
            if let Err(e) = c
                .write(move |s| {
                    s.tick(t);
                    Ok(())
                })
                .await
            {
                tracing::debug!(error = ?e, "control time not recorded");
            }
        }
    }
}
