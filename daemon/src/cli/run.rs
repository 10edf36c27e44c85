//! `berth run`: the controller as a long-running process on a Swarm manager.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

use crate::controller::journal::Journal;
use crate::controller::{Config, Controller};
use crate::docker::BollardDocker;
use crate::metrics::Metrics;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The manager's Docker Engine API.
    #[arg(
        long,
        env = "DOCKER_HOST",
        default_value = "unix:///var/run/docker.sock"
    )]
    docker: String,
    /// The volume control service (`berth-volume control`), e.g. http://127.0.0.1:4523; for a
    /// replicated one, every member's URL, comma-separated (calls follow its leader).
    /// (`--volume-control`, its old name, still works.)
    #[arg(long = "control", alias = "volume-control", env = "BERTH_CONTROL")]
    volume_control: Option<String>,
    /// The cluster token: presented to the volume control service, and asked of every caller
    /// of this daemon's API but its probes (`/v1/health`, `/v1/ready`). Required unless
    /// `--insecure`.
    #[arg(long, env = "BERTH_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Run without a token: the API (plan, explain, failovers, metrics) answers anyone who
    /// reaches `--listen`. For a test on one machine; said at every start and exported as
    /// `berth_insecure 1`.
    #[arg(long, env = "BERTH_INSECURE", conflicts_with = "token_file")]
    insecure: bool,
    /// Address of the HTTP API and /metrics (loopback unless you mean otherwise).
    #[arg(long, env = "BERTH_LISTEN", default_value = "127.0.0.1:9440")]
    listen: SocketAddr,
    /// Serve the API over HTTPS with this PEM certificate chain (with `--tls-key`).
    #[arg(long, env = "BERTH_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of `--tls-cert`.
    #[arg(long, env = "BERTH_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// PEM CA certificate(s) trusted for an `https://` `--control` (default: the system's
    /// roots).
    #[arg(long, env = "BERTH_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// Where the daemon keeps its state across restarts.
    #[arg(long, env = "BERTH_STATE_DIR", default_value = "/var/lib/berth")]
    state_dir: PathBuf,
    /// Full resync period (`10s`, `1m`); Swarm's events trigger passes in between.
    #[arg(long, env = "BERTH_RESYNC", default_value = "10s", value_parser = parse_duration)]
    resync: Duration,
    /// The timing profile of the control service and the agents (`--timing` there):
    /// `default` or `fast`. The agents' heartbeats are read every heartbeat interval of it
    /// (1s, 250ms), and a lost node's task is waited on at most one lease of it (5s, 1.5s).
    #[arg(long, env = "BERTH_TIMING", default_value = "default")]
    timing: berth_control_model::profile::Profile,
    /// Log what it would do; change nothing.
    #[arg(long, env = "BERTH_DRY_RUN")]
    dry_run: bool,
    /// Run beside other `berth run`s (one per manager) and act only while this one holds the
    /// volume control service's leader lock; needs --control (with --consul, Consul
    /// elects instead).
    #[arg(long, env = "BERTH_ELECT", requires = "volume_control")]
    elect: bool,
    /// With --elect: how long one renewal of the lock lasts; a standby takes over this long
    /// after a leader dies (at once after it stops cleanly).
    #[arg(long, env = "BERTH_ELECT_TTL", default_value = "10s", value_parser = parse_duration)]
    elect_ttl: Duration,
    /// Rebalance on its own: once the cluster has been quiet for --rebalance-quiet (no
    /// failover, no node joining, leaving or changing state), move running stateful slots back
    /// where the engine's rescheduling planner wants them, at most --rebalance-max-moves per
    /// run. Off by default; `berth rebalance` asks for one run at any time.
    #[arg(long, env = "BERTH_REBALANCE_AUTO")]
    rebalance_auto: bool,
    /// With --rebalance-auto: how long the cluster must be quiet before a run (`10m`).
    #[arg(long, env = "BERTH_REBALANCE_QUIET", default_value = "10m", value_parser = parse_duration)]
    rebalance_quiet: Duration,
    /// With --rebalance-auto: moves per run (the rest waits for the next quiet window).
    #[arg(long, env = "BERTH_REBALANCE_MAX_MOVES", default_value_t = 2)]
    rebalance_max_moves: u32,
    /// With --rebalance-auto: moves in flight at once, cluster-wide (a service's own limit is
    /// its `berth.max-unavailable`).
    #[arg(long, env = "BERTH_REBALANCE_MAX_IN_FLIGHT", default_value_t = 1)]
    rebalance_max_in_flight: u32,
    /// With --rebalance-auto: tasks of load a move must gain when it fixes no spread.
    #[arg(long, env = "BERTH_REBALANCE_MARGIN", default_value_t = 2)]
    rebalance_margin: u32,
    /// Log format on stderr.
    #[arg(long, value_enum, env = "BERTH_LOG_FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Register every Swarm task in Consul, through this agent (e.g. http://127.0.0.1:8500).
    /// The ACL token comes from CONSUL_HTTP_TOKEN, TLS settings from Consul's usual variables.
    #[cfg(feature = "consul")]
    #[arg(long, value_name = "URL", env = "BERTH_CONSUL")]
    consul: Option<String>,
    /// How long a registered instance stays passing unless berth run refreshes it (every pass
    /// does); then Consul marks it critical. Must exceed --resync.
    #[cfg(feature = "consul")]
    #[arg(long, env = "BERTH_CONSUL_TTL", default_value = "1m", value_parser = parse_duration)]
    consul_ttl: Duration,
    /// With --consul: the KV key the daemons of one swarm contend for; only its holder acts.
    #[cfg(feature = "consul")]
    #[arg(long, env = "BERTH_LEADER_KEY", default_value = "berth/leader")]
    leader_key: String,
    /// With --consul: the leader session's TTL (10s to 24h, whole seconds).
    #[cfg(feature = "consul")]
    #[arg(long, env = "BERTH_LEADER_TTL", default_value = "10s", value_parser = parse_duration)]
    leader_ttl: Duration,
    /// With --consul: how long Consul keeps the key from a new leader after the old leader's
    /// session ended (at most 60s); covers the old leader's last calls in flight.
    #[cfg(feature = "consul")]
    #[arg(long, env = "BERTH_LEADER_LOCK_DELAY", default_value = "15s", value_parser = parse_duration)]
    leader_lock_delay: Duration,
    /// With --consul: the KV key holding the failover executor's journal (instead of
    /// executor.json in --state-dir), shared by the daemons of one swarm so that a standby
    /// taking over resumes the old leader's failover commands in flight. Every write is a
    /// transaction that checks this daemon's session still holds --leader-key. Not used by a
    /// --dry-run, which keeps no journal in Consul.
    #[cfg(feature = "consul")]
    #[arg(long, env = "BERTH_JOURNAL_KEY", default_value = "berth/executor")]
    journal_key: String,
}

/// Who this daemon is, in the leader key or lock: enough for an operator to find it.
fn identity(listen: SocketAddr) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown host".to_string());
    format!("{host} (pid {}, API {listen})", std::process::id())
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

/// Longest wait for one call to Consul, so that a hung agent delays a pass by little.
#[cfg(feature = "consul")]
const CONSUL_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The Consul leader election's settings, checked against Consul's bounds.
#[cfg(feature = "consul")]
fn election_config(a: &RunArgs) -> Result<berth_consul::ElectionConfig> {
    let election = berth_consul::ElectionConfig {
        key: a.leader_key.clone(),
        ttl: a.leader_ttl,
        lock_delay: a.leader_lock_delay,
        identity: identity(a.listen),
    };
    election.validate().map_err(anyhow::Error::msg)?;
    Ok(election)
}

pub(super) fn parse_duration(s: &str) -> Result<Duration, String> {
    berth_units::parse_duration_ms(s)
        .map(Duration::from_millis)
        .map_err(|e| e.to_string())
}

fn init_logs(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // consulrs logs every call at INFO ("Executing …"): with the leader election that is
        // a few lines a second saying nothing, so its own lines start at WARN.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,consulrs=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal, never into a file or journald.
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("stopping");
}

pub fn run(a: RunArgs) -> Result<()> {
    anyhow::ensure!(
        a.token_file.is_some() || a.insecure,
        "no --token-file: without the cluster token the API would show this swarm's plans, \
         failovers and metrics to anyone who reaches {}. Give --token-file FILE (the cluster \
         token), or --insecure for a test on one machine",
        a.listen
    );
    // Before anything is made or connected: a half-given pair is a configuration error.
    let tls = berth_volume_client::tls::server(a.tls_cert.as_deref(), a.tls_key.as_deref())?;
    init_logs(a.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        std::fs::create_dir_all(&a.state_dir)
            .with_context(|| format!("{}: cannot create the state directory", a.state_dir.display()))?;
        let docker = BollardDocker::connect(&a.docker)
            .await
            .with_context(|| format!("connecting to Docker at {}", a.docker))?;
        let config = Config {
            dry_run: a.dry_run,
            resync: a.resync,
            rebalance: a.rebalance_auto.then(|| crate::controller::rebalance::Auto {
                budget: berth_scheduler::rebalance::Budget {
                    max_in_flight: a.rebalance_max_in_flight,
                    max_moves: Some(a.rebalance_max_moves),
                    margin: a.rebalance_margin,
                    ..berth_scheduler::rebalance::Budget::default()
                },
                quiet: a.rebalance_quiet,
            }),
            ..Config::for_timing(a.timing)
        };
        if let Some(auto) = &config.rebalance {
            tracing::info!(quiet = ?auto.quiet, max_moves = a.rebalance_max_moves, "automatic rescheduling on");
        }
        let metrics = Metrics::new();
        let token = match &a.token_file {
            Some(f) => {
                let t = std::fs::read_to_string(f)
                    .with_context(|| format!("{}: cannot read the token", f.display()))?
                    .trim()
                    .to_string();
                anyhow::ensure!(!t.is_empty(), "{}: the token file is empty", f.display());
                Some(t)
            }
            None => None,
        };
        if a.insecure {
            tracing::warn!(listen = %a.listen, "--insecure: no token; the API (plans, failovers, metrics) answers anyone who reaches this address");
            metrics.insecure.set(1);
        }
        let api_token: crate::api::ApiToken = token.as_deref().map(Arc::from);
        let control = match &a.volume_control {
            Some(url) => {
                Some(
                    berth_volume_client::ControlClient::with_ca(url, token.clone(), a.tls_ca.as_deref())
                        .with_context(|| format!("--control {url}"))?,
                )
            }
            None => {
                tracing::warn!("no --control: stateful slots are placed but never failed over");
                None
            }
        };
        // With --consul (and not a dry run) Consul elects the daemon that acts, and the
        // executor's journal is a KV key every write of which that election fences; with
        // --elect (no Consul) the control service's leader lock elects, and the journal is that
        // lock's, every write fenced by its epoch. The daemon reads a shared journal each time
        // it takes the lead (`Controller::run`), not here.
        #[cfg(feature = "consul")]
        let (mut consul_election, in_consul) = match &a.consul {
            Some(url) if !a.dry_run => {
                let config = election_config(&a)?;
                anyhow::ensure!(
                    !a.journal_key.is_empty() && !a.journal_key.starts_with('/') && a.journal_key != a.leader_key,
                    "--journal-key ({:?}) must be a KV path without a leading /, other than --leader-key",
                    a.journal_key
                );
                let token = std::env::var("CONSUL_HTTP_TOKEN").ok().filter(|t| !t.is_empty());
                let consul = berth_consul::Consul::new(url, token.clone(), CONSUL_CALL_TIMEOUT)
                    .map_err(|e| anyhow::anyhow!("Consul at {url}: {e}"))?;
                let (elector, leadership) = crate::consul::election::elector(consul, config);
                let agent = crate::consul::Agent::new(url, token, CONSUL_CALL_TIMEOUT)
                    .with_context(|| format!("Consul at {url}"))?;
                let journal = Journal::store(crate::consul::journal::ConsulJournal::new(
                    agent,
                    &a.journal_key,
                    &a.leader_key,
                    elector.fence(),
                ));
                tracing::info!(key = %a.journal_key, "the failover journal is kept in Consul");
                (Some((elector, leadership)), Some(journal))
            }
            _ => (None, None),
        };
        #[cfg(not(feature = "consul"))]
        let in_consul: Option<Journal> = None;
        #[cfg(feature = "consul")]
        let consul_elects = a.consul.is_some();
        #[cfg(not(feature = "consul"))]
        let consul_elects = false;
        let mut control_elector = None;
        let mut control_leadership = None;
        let in_control = match control.clone().filter(|_| a.elect && !a.dry_run && !consul_elects) {
            Some(client) => {
                let config = crate::elect::ElectConfig {
                    name: crate::elect::LOCK.into(),
                    ttl: a.elect_ttl,
                    identity: identity(a.listen),
                };
                config.validate().map_err(anyhow::Error::msg)?;
                let (elector, leadership) = crate::elect::elector(client.clone(), &config);
                let journal = Journal::store(crate::elect::ControlJournal::new(
                    client,
                    &config,
                    elector.fence(),
                    &a.state_dir,
                ));
                tracing::info!(lock = %config.name, "the failover journal is kept in the control service, fenced by the leader lock");
                control_elector = Some(elector);
                control_leadership = Some(leadership);
                Some(journal)
            }
            None => None,
        };
        let (journal, resumed) = match in_consul.or(in_control) {
            Some(j) => (j, None),
            None => {
                let journal = Journal::new(&a.state_dir);
                let resumed = journal.load().await?;
                if let Some(st) = &resumed {
                    tracing::info!(runs = st.runs.len(), in_flight = st.inflight.len(), "resuming the failover executor from its state");
                }
                (journal, resumed)
            }
        };
        let controller =
            Controller::with_control(docker, control, Some((journal, resumed)), config, metrics.clone());
        let (controller, leadership) = match control_leadership {
            Some(l) => (controller.with_leadership(l.clone()), l),
            None => (controller, berth_leadership::Leadership::always()),
        };
        #[cfg(feature = "consul")]
        let mut elector = None;
        #[cfg(feature = "consul")]
        let (controller, consul_status, leadership) = match &a.consul {
            Some(url) => {
                anyhow::ensure!(
                    a.consul_ttl > a.resync,
                    "--consul-ttl ({:?}) must exceed --resync ({:?}), or every instance turns critical between passes",
                    a.consul_ttl,
                    a.resync
                );
                let token = std::env::var("CONSUL_HTTP_TOKEN").ok().filter(|t| !t.is_empty());
                let agent = crate::consul::Agent::new(url, token, CONSUL_CALL_TIMEOUT)
                    .with_context(|| format!("Consul at {url}"))?;
                let registrar = crate::consul::Registrar::new(agent, a.consul_ttl, metrics.clone());
                let status = registrar.status();
                tracing::info!(consul = %url, ttl = ?a.consul_ttl, "registering the swarm's tasks in Consul");
                match consul_election.take() {
                    Some((e, leadership)) => {
                        elector = Some(e);
                        let controller = controller.with_consul(registrar).with_leadership(leadership.clone());
                        (controller, Some(status), leadership)
                    }
                    None => {
                        // A dry run changes nothing, so it needs no lock; taking one would keep
                        // the real leader from acting.
                        election_config(&a)?;
                        tracing::info!("dry run: not taking part in the leader election");
                        (controller.with_consul(registrar), Some(status), leadership)
                    }
                }
            }
            None => (controller, None, leadership),
        };
        let controller = Arc::new(controller);
        let app = crate::api::router(controller.status(), leadership, metrics, a.resync, api_token.clone())
            .merge(crate::api::rebalance_router(controller.status(), controller.waker(), api_token.clone()));
        #[cfg(feature = "consul")]
        let app = app.merge(crate::api::services_router(consul_status, api_token));
        let listener = tokio::net::TcpListener::bind(a.listen)
            .await
            .with_context(|| format!("listening on {}", a.listen))?;
        tracing::info!(listen = %a.listen, docker = %a.docker, dry_run = a.dry_run, "berth run started");
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(async move {
            let mut rx = stop_rx;
            let stopped = async move {
                let _ = rx.wait_for(|stop| *stop).await;
            };
            match tls {
                None => axum::serve(listener, app).with_graceful_shutdown(stopped).await,
                Some(tls) => berth_volume_client::tls::serve(listener, tls, app, stopped).await,
            }
        });
        #[cfg(feature = "consul")]
        let election = elector.map(|mut e| {
            let stop = stop_tx.subscribe();
            tokio::spawn(async move { e.run(berth_leadership::NoTakeover, stop).await })
        });
        let control_election = control_elector.map(|mut e| {
            let stop = stop_tx.subscribe();
            tokio::spawn(async move { e.run(berth_leadership::NoTakeover, stop).await })
        });
        controller.run(shutdown_signal()).await;
        let _ = stop_tx.send(true);
        // The controller has stopped acting: the election resigns (releases the key), so a
        // standby takes over at its next round rather than after the session's TTL.
        #[cfg(feature = "consul")]
        if let Some(e) = election {
            let _ = e.await;
        }
        if let Some(e) = control_election {
            let _ = e.await;
        }
        server.await.context("API server task")?.context("API server")?;
        Ok(())
    })
}
