//! `berth-volume`: `control` runs the cluster's dataset service, `agent` runs one node's Docker
//! volume plugin and transfer endpoint. Both log to stderr and drain on SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use berth_volume::agent::Agent;
use berth_volume::backend::local::Layout;
use berth_volume::client::ControlClient;
use berth_volume::control::api::{self, Control};
use berth_volume::store::RedbStore;
use berth_volume::transfer::TransferOptions;
use berth_volume::{protocol, shutdown, transfer};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "berth-volume",
    about = "Berth's Flocker-compatible Docker volume driver"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The cluster's dataset configuration service (Flocker dataset API v1).
    Control {
        /// Address to listen on (loopback unless you mean otherwise).
        #[arg(long, default_value = "127.0.0.1:4523")]
        listen: String,
        /// Directory of the embedded store.
        #[arg(long)]
        state: PathBuf,
        /// File holding a bearer token every request must present.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Consul HTTP address for the clustered store (check-and-set on ModifyIndex); `--state`
        /// is then unused.
        #[arg(long)]
        consul: Option<String>,
    },
    /// One node's agent: the Docker volume plugin socket plus the transfer endpoint.
    Agent {
        /// This node's ID (the dataset primaries in the control API).
        #[arg(long)]
        node_id: Option<String>,
        /// Plugin socket; the file name is the driver name Docker uses.
        #[arg(long, default_value = "/run/docker/plugins/berth.sock")]
        socket: PathBuf,
        /// Where `local` datasets live.
        #[arg(long)]
        data_root: PathBuf,
        /// Where `shared` datasets live (storage every node mounts).
        #[arg(long)]
        shared_root: Option<PathBuf>,
        /// Control service URL.
        #[arg(long, default_value = "http://127.0.0.1:4523")]
        control: String,
        /// File holding the cluster's bearer token: sent to the control service and to other
        /// agents' transfer endpoints, and required by this agent's own.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Transfer endpoint other agents pull from (`host:port`).
        #[arg(long, default_value = "127.0.0.1:4524")]
        listen: String,
        /// Most bytes per second this node sends or receives when a dataset moves (Flocker size
        /// forms, e.g. `50MiB`), so a move does not starve the disk or link its services use.
        #[arg(long, value_parser = parse_rate)]
        transfer_rate: Option<u64>,
    },
}

fn parse_rate(s: &str) -> Result<u64, String> {
    match berth_volume::size::parse_bytes(s) {
        Ok(0) => Err("a transfer rate must be above zero".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn read_token(f: Option<PathBuf>) -> anyhow::Result<Option<String>> {
    f.map(|p| {
        std::fs::read_to_string(&p)
            .with_context(|| format!("reading token file {}", p.display()))
            .map(|s| s.trim().to_string())
    })
    .transpose()
}

/// The local engine's Swarm node ID, the default `--node-id`.
fn swarm_node_id() -> anyhow::Result<String> {
    let out = std::process::Command::new("docker")
        .args(["info", "--format", "{{.Swarm.NodeID}}"])
        .output()
        .context("running `docker info` for the Swarm node ID (or pass --node-id)")?;
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    anyhow::ensure!(
        out.status.success() && !id.is_empty(),
        "this engine is not in a swarm; pass --node-id"
    );
    Ok(id)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match Cli::parse().cmd {
        Cmd::Control {
            listen,
            state,
            token_file,
            consul,
        } => {
            let store: Box<dyn berth_volume::store::Store> = match consul {
                Some(url) => {
                    tracing::info!(%url, key = berth_volume::consul_store::KEY, "using the Consul KV store");
                    Box::new(
                        berth_volume::consul_store::ConsulStore::new(&url)
                            .context("Consul client")?,
                    )
                }
                None => Box::new(
                    RedbStore::open(&state)
                        .with_context(|| format!("opening store in {}", state.display()))?,
                ),
            };
            let c =
                Arc::new(Control::open(store, read_token(token_file)?).context("loading state")?);
            let l = tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("binding {listen}"))?;
            tracing::info!(addr = %l.local_addr()?, "control service listening");
            api::serve(l, c, shutdown::signal())
                .await
                .context("serving")?;
            tracing::info!("control service stopped");
        }
        Cmd::Agent {
            node_id,
            socket,
            data_root,
            shared_root,
            control,
            token_file,
            listen,
            transfer_rate,
        } => {
            let node = match node_id {
                Some(n) => n,
                None => swarm_node_id()?,
            };
            let token = read_token(token_file)?;
            let client = ControlClient::new(&control, token.clone())?;
            let layout = Arc::new(Layout::new(&data_root));
            let shared = shared_root.unwrap_or_else(|| data_root.join("shared"));
            let transfer_opts = TransferOptions {
                rate_limit: transfer_rate,
                token: token.clone(),
            };
            let agent = Arc::new(
                Agent::new(node.clone(), layout.clone(), shared, client.clone())
                    .with_transfer_options(transfer_opts.clone()),
            );
            let tl = tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("binding {listen}"))?;
            let transfer_addr = tl.local_addr()?.to_string();
            let host = std::fs::read_to_string("/etc/hostname")
                .unwrap_or_default()
                .trim()
                .to_string();
            // Registration retries: the control service may start after the agent.
            let mut delay = Duration::from_millis(100);
            loop {
                match client.register_node(&node, &host, &transfer_addr).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot register with control; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
            let ul =
                protocol::bind(&socket).with_context(|| format!("binding {}", socket.display()))?;
            tracing::info!(node = %node, socket = %socket.display(), transfer = %transfer_addr, "agent listening");
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
                let _ = rx.wait_for(|v| *v).await;
            };
            let t = tokio::spawn(
                axum::serve(tl, transfer::router(layout, &transfer_opts))
                    .with_graceful_shutdown(wait(stop_rx.clone()))
                    .into_future(),
            );
            let r = agent.clone();
            let mut rx = stop_rx.clone();
            let recon = tokio::spawn(async move {
                loop {
                    if let Err(e) = r.reconcile().await {
                        tracing::debug!(error = %e.chain(), "reconcile pass failed");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = rx.wait_for(|v| *v) => break,
                    }
                }
            });
            let p = tokio::spawn(protocol::serve(ul, agent, wait(stop_rx)));
            shutdown::signal().await;
            let _ = stop_tx.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(10), async {
                let _ = recon.await;
                let _ = p.await;
                let _ = t.await;
            })
            .await;
            let _ = std::fs::remove_file(&socket);
            tracing::info!("agent stopped");
        }
    }
    Ok(())
}
