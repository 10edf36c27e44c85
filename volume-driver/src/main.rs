//! `berth-volume`: `control` runs the cluster's dataset service, `agent` runs one node's Docker
//! volume plugin and transfer endpoint, `credential` issues a node's credential. The services
//! log to stderr and drain on SIGTERM.
//!
//! Exit codes: 0 success; 1 a usage error, a configuration error or a failure while running
//! (the error and its causes on stderr, one line, never a backtrace).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use backon::{ExponentialBuilder, Retryable};
use berth_control_model::credential;
use berth_control_model::lease::{AgentTiming, Failsafe, Keeper};
use berth_control_model::profile::{Overrides, Profile};
use berth_volume::agent::{Agent, SelfFence};
use berth_volume::backend::layout::Layout;
use berth_volume::datapath::DataPathMode;
use berth_volume::docker::Docker;
use berth_volume::heartbeat::{self, Registration};
use berth_volume::replica::{self, Shipper};
use berth_volume::transfer::{PeerCheck, TransferOptions};
use berth_volume::{protocol, shutdown, transfer};
use berth_volume_client::{ControlClient, tls};
use berth_volume_control::api::{self, Control};
use berth_volume_control::store::RedbStore;
use clap::{Parser, Subcommand};

/// `--version`: the package version and the commit it was built from (`build.rs`).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("BERTH_COMMIT"),
    ")"
);

const ENV_HELP: &str = "Every flag can also be set by an environment variable: BERTH_ and the \
flag's name in capitals with - as _ (--token-file: BERTH_TOKEN_FILE); --docker by DOCKER_HOST. \
A config file (--config FILE or BERTH_CONFIG) gives flags as TOML keys named like them \
(token-file = \"/etc/berth/token\"). The command line wins, then the environment, then the file.\n\nExit codes: 0 success; 1 a usage error, a configuration error or a \
failure while running, with `berth-volume: error: ` and its causes on stderr.";

#[derive(Parser)]
#[command(
    name = "berth-volume",
    version = VERSION,
    about = "Berth's Flocker-compatible Docker volume driver",
    after_help = ENV_HELP
)]
struct Cli {
    /// Log format on stderr: `text`, or `json` (one object a line, for a log shipper).
    #[arg(long, global = true, value_enum, env = "BERTH_LOG_FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// A TOML file of flags, keys named like them (`token-file = "/etc/berth/token"`); the
    /// command line and the environment win over it.
    #[arg(long, global = true, env = "BERTH_CONFIG")]
    #[allow(dead_code)] // read before clap parses, by `config_file::args`
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// The cluster's dataset configuration service (Flocker dataset API v1).
    Control {
        /// Address to listen on (loopback unless you mean otherwise).
        #[arg(long, env = "BERTH_LISTEN", default_value = "127.0.0.1:4523")]
        listen: String,
        /// Directory of the embedded store (not needed with `--consul`).
        #[arg(long, env = "BERTH_STATE", required_unless_present = "consul")]
        state: Option<PathBuf>,
        /// File holding the cluster token: the operator's bearer token, and the secret node
        /// credentials are derived from. Required unless `--insecure`.
        #[arg(long, env = "BERTH_TOKEN_FILE")]
        token_file: Option<PathBuf>,
        /// Serve without a token: every request, from anyone who can reach `--listen`, acts as
        /// the operator (fence, assign, declare a node dead). For a test on one machine only;
        /// said at every start and exported as `berth_control_insecure 1`.
        #[arg(long, env = "BERTH_INSECURE", conflicts_with = "token_file")]
        insecure: bool,
        /// Consul HTTP address: the state in Consul KV instead of `--state`, and one of several
        /// instances elected to serve through a session lock on `--leader-key`.
        #[arg(long, env = "BERTH_CONSUL", conflicts_with = "state")]
        consul: Option<String>,
        /// With `--consul`: the URL clients reach this instance at, written into the leader
        /// key while it serves (the others' 503 names it). Default: `http://` + `--listen`.
        #[arg(long, env = "BERTH_ADVERTISE", requires = "consul")]
        advertise: Option<String>,
        /// With `--consul`: the KV key the instances contend for.
        #[arg(
            long,
            env = "BERTH_LEADER_KEY",
            requires = "consul",
            default_value = "berth/control/leader"
        )]
        leader_key: String,
        /// With `--consul`: the leader session's TTL (Consul allows 10s to 24h); a leader
        /// serves until its last renewal's send time plus this.
        #[arg(long, env = "BERTH_LEADER_TTL", requires = "consul", value_parser = parse_interval, default_value = "10s")]
        leader_ttl: Duration,
        /// With `--consul`: how long Consul keeps the key from a new holder after a session
        /// ends; at least `--leader-ttl`, at most 60s.
        #[arg(long, env = "BERTH_LEADER_LOCK_DELAY", requires = "consul", value_parser = parse_interval, default_value = "10s")]
        leader_lock_delay: Duration,
        /// This instance's ID in a replicated control service (Raft among the managers, state
        /// under `--state`); needs `--peer` for every member, itself included.
        #[arg(
            long,
            env = "BERTH_RAFT_ID",
            requires = "peer",
            requires = "state",
            conflicts_with = "consul"
        )]
        raft_id: Option<u64>,
        /// A member of the replicated control service, `ID=HOST:PORT` (its `--listen`
        /// address); repeat for each, this instance included. One or three members (or five).
        #[arg(long, env = "BERTH_PEER", value_delimiter = ',', value_parser = parse_peer, requires = "raft_id")]
        peer: Vec<(u64, String)>,
        /// The timing profile: `default` (1s heartbeats, 3 misses, 5s lease) or `fast` (250ms
        /// heartbeats, 3 misses, 1.5s lease). Give the agents and `berth run` the same one; the
        /// flags below override its values, and the result is checked at start.
        #[arg(long, env = "BERTH_TIMING", default_value = "default")]
        timing: Profile,
        /// How often agents heartbeat (a node's liveness is judged against it). Default: the
        /// profile's.
        #[arg(long, env = "BERTH_HEARTBEAT_INTERVAL", value_parser = parse_interval)]
        heartbeat_interval: Option<Duration>,
        /// Heartbeats a node may miss before `GET /v1/berth/nodes` reports it not alive.
        /// Default: the profile's.
        #[arg(long, env = "BERTH_HEARTBEAT_MISSES", value_parser = clap::value_parser!(u32).range(1..))]
        heartbeat_misses: Option<u32>,
        /// How long one heartbeat keeps a node's lease; a volume mounted on a node is handed to
        /// another only once this has run out (or the node is declared dead). Must outlast
        /// interval × misses, and each agent's self-fence deadline + drift margin + interval;
        /// each agent's drift margin must be at least 1 % of it. Default: the profile's.
        #[arg(long, env = "BERTH_LEASE", value_parser = parse_interval)]
        lease: Option<Duration>,
        /// Serve HTTPS with this PEM certificate chain (with `--tls-key`).
        #[arg(long, env = "BERTH_TLS_CERT")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key of `--tls-cert`.
        #[arg(long, env = "BERTH_TLS_KEY")]
        tls_key: Option<PathBuf>,
        /// With `--raft-id` and `--tls-cert`: PEM CA certificate(s) trusted for the other
        /// members (default: the system's roots).
        #[arg(long, env = "BERTH_TLS_CA")]
        tls_ca: Option<PathBuf>,
    },
    /// One node's agent: the Docker volume plugin socket plus the transfer endpoint.
    Agent {
        /// This node's ID (the dataset primaries in the control API).
        #[arg(long, env = "BERTH_NODE_ID")]
        node_id: Option<String>,
        /// Plugin socket; the file name is the driver name Docker uses.
        #[arg(
            long,
            env = "BERTH_SOCKET",
            default_value = "/run/docker/plugins/berth.sock"
        )]
        socket: PathBuf,
        /// Where `local` and `replicated` datasets live.
        #[arg(long, env = "BERTH_DATA_ROOT")]
        data_root: PathBuf,
        /// Where `shared` datasets live (storage every node mounts).
        #[arg(long, env = "BERTH_SHARED_ROOT")]
        shared_root: Option<PathBuf>,
        /// Control service URL; for a replicated one, every member's URL, comma-separated (calls
        /// follow its leader).
        #[arg(long, env = "BERTH_CONTROL", default_value = "http://127.0.0.1:4523")]
        control: String,
        /// File holding the cluster token, presented to the control service and other agents.
        #[arg(long, env = "BERTH_TOKEN_FILE", conflicts_with = "credential_file")]
        token_file: Option<PathBuf>,
        /// File holding this node's credential (`berth-volume credential`): it acts only for
        /// this node, and holds no secret that could act for another.
        #[arg(long, env = "BERTH_CREDENTIAL_FILE")]
        credential_file: Option<PathBuf>,
        /// Transfer endpoint other agents pull from (`host:port`).
        #[arg(long, env = "BERTH_LISTEN", default_value = "127.0.0.1:4524")]
        listen: String,
        /// The address other agents reach the transfer endpoint at, registered with the control
        /// service (`host:port`, or a host alone for `--listen`'s port). Default: `--listen`.
        /// Needed when `--listen` is 0.0.0.0 or ::.
        #[arg(long, env = "BERTH_ADVERTISE")]
        advertise: Option<String>,
        /// Every agent runs on this one machine: a loopback or unspecified transfer address is
        /// accepted (else refused when the control service is on another machine).
        /// Serve the transfer endpoint over HTTPS with this PEM certificate chain (with
        /// `--tls-key`); other agents are then reached over HTTPS too.
        #[arg(long, env = "BERTH_TLS_CERT")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key of `--tls-cert`.
        #[arg(long, env = "BERTH_TLS_KEY")]
        tls_key: Option<PathBuf>,
        /// PEM CA certificate(s) trusted for an `https://` `--control` and for other agents'
        /// HTTPS endpoints (default: the system's roots).
        #[arg(long, env = "BERTH_TLS_CA")]
        tls_ca: Option<PathBuf>,
        #[arg(long, env = "BERTH_SINGLE_NODE")]
        single_node: bool,
        /// Most bytes per second this node sends or receives when a dataset moves (Flocker size
        /// forms, e.g. `50MiB`), so a move does not starve the disk or link its services use.
        #[arg(long, env = "BERTH_TRANSFER_RATE", value_parser = parse_rate)]
        transfer_rate: Option<u64>,
        /// How often a mounted `replicated` dataset is shipped to its standbys (`500ms`, `2s`).
        #[arg(long, env = "BERTH_SHIP_INTERVAL", value_parser = parse_interval, default_value = "1s")]
        ship_interval: Duration,
        /// The timing profile, the control service's (`--timing` there): `default` (1s
        /// heartbeats, 2s self-fence deadline, 500ms drift margin) or `fast` (250ms, 1s,
        /// 150ms). The flags below override its values; the control service refuses, at the
        /// first heartbeat, a set that could not honour its lease.
        #[arg(long, env = "BERTH_TIMING", default_value = "default")]
        timing: Profile,
        /// How often to heartbeat the control service, renewing this node's lease. Default:
        /// the profile's.
        #[arg(long, env = "BERTH_HEARTBEAT_INTERVAL", value_parser = parse_interval)]
        heartbeat_interval: Option<Duration>,
        /// Heartbeats missed in a row before the agent reports lost contact. Default: the
        /// profile's.
        #[arg(long, env = "BERTH_HEARTBEAT_MISSES", value_parser = clap::value_parser!(u32).range(1..))]
        heartbeat_misses: Option<u32>,
        /// How long stopping this node's containers may take when its lease cannot be renewed:
        /// they are stopped (SIGTERM, SIGKILL after all but the last second of it) starting this
        /// long, plus the drift margin, before the lease ends. Default: the profile's.
        #[arg(long, env = "BERTH_SELF_FENCE_DEADLINE", value_parser = parse_interval)]
        self_fence_deadline: Option<Duration>,
        /// How far this node's clock and the control service's may drift apart over one lease
        /// (at least 1 % of the lease); the write gate closes this long before the lease ends.
        /// Default: the profile's.
        #[arg(long, env = "BERTH_DRIFT_MARGIN", value_parser = parse_duration)]
        drift_margin: Option<Duration>,
        /// Failsafe mode (ARCHITECTURE.md, "Fencing", rule 9): while the control service
        /// answers no agent, keep admitting writes as long as every other registered agent
        /// answers, each saying it cannot reach the control service either. Off by default:
        /// with it, a node lost during a control outage stops every node's writes (as
        /// without it), and a new mount waits up to one lease after the agent starts or after
        /// it last voted. Every agent of a cluster must run it, or no agent goes on.
        #[arg(long, env = "BERTH_FAILSAFE")]
        failsafe: bool,
        /// The local Docker Engine's API (`unix:///PATH`), through which the agent stops the
        /// containers whose data moved away, and finds mounts no container uses any more.
        #[arg(
            long,
            env = "DOCKER_HOST",
            default_value = "unix:///var/run/docker.sock"
        )]
        docker: String,
        /// The engine's socket as a path: `--docker`'s old form, kept for existing unit files;
        /// wins over `--docker`.
        #[arg(long, env = "BERTH_DOCKER_SOCKET", hide = true)]
        docker_socket: Option<PathBuf>,
        /// How containers reach their data: `fuse` serves every mount through this agent, which
        /// checks the node's lease before each write, so a dead, hung or frozen agent or node
        /// cannot write after its lease (needs /dev/fuse); `direct` hands them the copy itself,
        /// and then only a running agent stops a writer (README, "Guarantees").
        #[arg(long, env = "BERTH_DATA_PATH", value_enum, default_value_t = DataPathMode::Fuse)]
        data_path: DataPathMode,
    },
    /// Prints node NODE's credential, derived from the cluster token; give it to that node's
    /// agent as `--credential-file`.
    Credential {
        #[arg(long, env = "BERTH_NODE_ID")]
        node_id: String,
        /// File holding the cluster token.
        #[arg(long, env = "BERTH_TOKEN_FILE")]
        token_file: PathBuf,
    },
    /// Prints a completion script for SHELL (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Prints berth-volume(1), or with --dir writes every page (berth-volume.1,
    /// berth-volume-SUBCOMMAND.1) there.
    Man {
        #[arg(long, env = "BERTH_DIR")]
        dir: Option<PathBuf>,
    },
}

/// `completions` and `man`: generated from the clap definition, answered before any logging
/// or runtime is set up.
fn manual(cmd: &Cmd) -> Option<anyhow::Result<()>> {
    use clap::CommandFactory;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match cmd {
        Cmd::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "berth-volume", &mut out);
            Some(Ok(()))
        }
        Cmd::Man { dir } => Some((|| {
            let mut top = Cli::command();
            top.build();
            let mut pages: Vec<(String, clap::Command)> = top
                .get_subcommands()
                .filter(|s| s.get_name() != "help")
                .map(|s| {
                    let name = format!("berth-volume-{}", s.get_name());
                    (name.clone(), s.clone().name(name))
                })
                .collect();
            let Some(dir) = dir else {
                clap_mangen::Man::new(top).render(&mut out)?;
                return out.flush().map_err(anyhow::Error::from);
            };
            pages.insert(0, ("berth-volume".into(), top));
            std::fs::create_dir_all(dir)
                .with_context(|| format!("{}: cannot create", dir.display()))?;
            for (name, page) in pages {
                let path = dir.join(format!("{name}.1"));
                let mut buf = Vec::new();
                clap_mangen::Man::new(page).render(&mut buf)?;
                std::fs::write(&path, buf)
                    .with_context(|| format!("{}: cannot write", path.display()))?;
            }
            Ok(())
        })()),
        _ => None,
    }
}

/// A directory holding a single instance's state is not silently left behind by a new Raft
/// group (which would start empty and serve no dataset the cluster has): the operator decides.
async fn refuse_single_store(dir: &std::path::Path) -> anyhow::Result<()> {
    use berth_volume_control::store::Store;
    if dir.join("raft.redb").exists() || !dir.join("berth.redb").exists() {
        return Ok(());
    }
    let held = RedbStore::open(dir)
        .with_context(|| format!("reading {}", dir.join("berth.redb").display()))?
        .load()
        .await?
        .is_some();
    anyhow::ensure!(
        !held,
        "{} holds a single-instance control state (berth.redb) and a replicated control service \
         does not import it: keep running without --raft-id, or move berth.redb away to start an \
         empty replicated state",
        dir.display()
    );
    Ok(())
}

/// `--leader-*`: how an instance on Consul KV is elected.
#[cfg_attr(not(feature = "consul"), allow(dead_code))]
struct Election {
    key: String,
    ttl: Duration,
    lock_delay: Duration,
    identity: String,
}

/// A control instance on Consul KV, and its side of the election running (validated before
/// any call).
#[cfg(feature = "consul")]
async fn elected(
    url: &str,
    seat: Election,
    token: Option<String>,
    timing: berth_control_model::liveness::Timing,
    stopped: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<(Arc<Control>, tokio::task::JoinHandle<()>)> {
    use berth_consul::{Consul, ElectionConfig};
    use berth_volume_control::consul_store::ConsulStore;
    use berth_volume_control::elected::Elected;
    let config = ElectionConfig {
        key: seat.key,
        ttl: seat.ttl,
        lock_delay: seat.lock_delay,
        identity: seat.identity,
    };
    berth_volume_control::elected::validate(&config)
        .map_err(|e| anyhow::anyhow!("--leader-*: {e}"))?;
    tracing::info!(%url, key = berth_volume_control::consul_store::KEY, leader_key = %config.key, advertise = %config.identity, "using the Consul KV store, elected");
    let store = Arc::new(ConsulStore::new(url).context("Consul client")?);
    let consul = Consul::new(url, None, Duration::from_secs(5))
        .map_err(|e| anyhow::anyhow!("Consul client: {e}"))?;
    let e = Arc::new(
        Elected::new(consul, store.clone(), config)
            .map_err(|e| anyhow::anyhow!("--leader-*: {e}"))?,
    );
    let c = Arc::new(
        Control::open_elected(store, e.clone(), token, timing)
            .await
            .context("loading state")?,
    );
    let running = tokio::spawn(e.run(c.clone(), stopped));
    Ok((c, running))
}

#[cfg(not(feature = "consul"))]
async fn elected(
    _url: &str,
    _seat: Election,
    _token: Option<String>,
    _timing: berth_control_model::liveness::Timing,
    _stopped: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<(Arc<Control>, tokio::task::JoinHandle<()>)> {
    anyhow::bail!("--consul: this berth-volume was built without the `consul` feature")
}

fn parse_peer(s: &str) -> Result<(u64, String), String> {
    let (id, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not ID=HOST:PORT"))?;
    let id: u64 = id
        .parse()
        .map_err(|_| format!("{id:?} in {s:?} is not a number"))?;
    match addr.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => Ok((id, addr.to_string())),
        _ => Err(format!("{addr:?} in {s:?} is not HOST:PORT")),
    }
}

fn parse_rate(s: &str) -> Result<u64, String> {
    match berth_control_model::size::parse_bytes(s) {
        Ok(0) => Err("a transfer rate must be above zero".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// The control service's liveness and lease timing: the profile's, with the explicit flags in
/// place. Its own rule (a node counted alive holds its lease) is an error; an agent on the same
/// profile that this lease would refuse is a warning, since the agents may override theirs.
fn control_timing(
    profile: Profile,
    interval: Option<Duration>,
    misses: Option<u32>,
    lease: Option<Duration>,
) -> anyhow::Result<berth_control_model::liveness::Timing> {
    let o = Overrides {
        interval,
        misses,
        lease,
        ..Overrides::default()
    };
    let p = profile.values();
    let v = berth_control_model::profile::Values {
        interval: o.interval.unwrap_or(p.interval),
        misses: o.misses.unwrap_or(p.misses),
        lease: o.lease.unwrap_or(p.lease),
        ..p
    };
    let timing = v.control();
    timing
        .validate()
        .map_err(|e| anyhow::anyhow!("lease timing (--timing {profile}): {e}"))?;
    if let Err(e) = profile.resolve(o) {
        tracing::warn!(
            "{e}: agents on --timing {profile} without their own --self-fence-deadline and \
             --drift-margin will be refused"
        );
    }
    Ok(timing)
}

/// The agent's heartbeat and self-fence timing: the profile's, with the explicit flags in
/// place. Checked against the profile's lease here only as a warning: the control service,
/// whose lease it is, refuses a set it cannot admit at the first heartbeat, an error at start.
fn agent_timing(profile: Profile, o: Overrides) -> AgentTiming {
    let p = profile.values();
    let v = berth_control_model::profile::Values {
        interval: o.interval.unwrap_or(p.interval),
        misses: o.misses.unwrap_or(p.misses),
        self_fence_deadline: o.self_fence_deadline.unwrap_or(p.self_fence_deadline),
        drift_margin: o.drift_margin.unwrap_or(p.drift_margin),
        lease: p.lease,
    };
    if let Err(e) = v.check() {
        tracing::warn!(
            "--timing {profile}: {e}; a control service on --timing {profile} will refuse this agent"
        );
    }
    v.agent()
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    match berth_units::parse_duration_ms(s) {
        Ok(0) => Err("must be above zero".into()),
        Ok(ms) => Ok(Duration::from_millis(ms)),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    berth_units::parse_duration_ms(s)
        .map(Duration::from_millis)
        .map_err(|e| e.to_string())
}

fn read_secret(f: Option<PathBuf>) -> anyhow::Result<Option<String>> {
    f.map(|p| {
        let s = std::fs::read_to_string(&p)
            .with_context(|| format!("reading {}", p.display()))?
            .trim()
            .to_string();
        anyhow::ensure!(!s.is_empty(), "{} is empty", p.display());
        Ok(s)
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

/// The engine's socket from `--docker`: the agent speaks to its own node's engine over a unix
/// socket only (it stops that node's containers), so a TCP endpoint is refused.
fn docker_socket_path(docker: &str) -> anyhow::Result<PathBuf> {
    match docker.strip_prefix("unix://") {
        Some(path) if path.starts_with('/') => Ok(PathBuf::from(path)),
        _ if docker.starts_with('/') => Ok(PathBuf::from(docker)),
        _ => anyhow::bail!(
            "--docker {docker:?} (or DOCKER_HOST): the agent needs its own node's engine at a \
             unix socket, unix:///PATH"
        ),
    }
}

/// Whether `url`'s host (`http://HOST:PORT`) is this machine's loopback.
fn loopback_url(url: &str) -> bool {
    let authority = url
        .trim()
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/');
    let host = match authority.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    loopback_host(host)
}

fn loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The transfer address this agent registers, which the other agents dial to pull from it or
/// ask it to ship: `--advertise` (a host alone takes the bound port), else what `--listen`
/// bound. Refused when another machine could not reach it: an unspecified address always, and
/// a loopback one when the control service is elsewhere (so the cluster spans machines),
/// unless `--single-node`.
fn transfer_address(
    bound: std::net::SocketAddr,
    advertise: Option<&str>,
    control: &str,
    single_node: bool,
) -> anyhow::Result<String> {
    let addr = match advertise.map(str::trim) {
        None => bound.to_string(),
        Some(a) if a.parse::<std::net::SocketAddr>().is_ok() => a.to_string(),
        Some(a) => match a.parse::<std::net::IpAddr>() {
            Ok(ip) => std::net::SocketAddr::new(ip, bound.port()).to_string(),
            Err(_) => match a.rsplit_once(':') {
                Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => a.to_string(),
                _ if !a.is_empty() && !a.contains(':') => format!("{a}:{}", bound.port()),
                _ => anyhow::bail!("--advertise {a:?} is not HOST:PORT or HOST"),
            },
        },
    };
    if single_node {
        return Ok(addr);
    }
    let host = match addr.parse::<std::net::SocketAddr>() {
        Ok(s) => s.ip().to_string(),
        Err(_) => addr
            .rsplit_once(':')
            .map_or(addr.clone(), |(h, _)| h.to_string()),
    };
    if host
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified())
    {
        anyhow::bail!(
            "the transfer address {addr} names no machine: other agents would be told to pull \
             from it. Give --advertise with this node's own address (as they reach it), or \
             --single-node when every agent runs on this machine"
        );
    }
    let remote = control.split(',').find(|u| !loopback_url(u));
    if let (true, Some(remote)) = (loopback_host(&host), remote) {
        anyhow::bail!(
            "the transfer address {addr} is loopback, but the control service ({}) is on another \
             machine: agents elsewhere could not pull from this one. Give --listen or --advertise \
             with this node's own address, or --single-node when every agent runs on this machine",
            remote.trim()
        );
    }
    Ok(addr)
}

/// The agent's socket file, removed however the agent stops (once it is ours).
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The data path holds a descriptor for every file and directory its containers have looked up
/// and one for every open file, on behalf of every container on the node: a database copying a
/// few hundred files (PostgreSQL's CREATE DATABASE) passes the 1,024 a service gets by default
/// and sees EMFILE on close. The soft limit goes up to the hard one (524,288 under systemd), as
/// a server that multiplexes its clients' files should.
fn raise_open_file_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let l = getrlimit(Resource::Nofile);
    if l.current == l.maximum {
        return;
    }
    let want = Rlimit {
        current: l.maximum,
        maximum: l.maximum,
    };
    match setrlimit(Resource::Nofile, want) {
        Ok(()) => {
            tracing::info!(from = ?l.current, to = ?l.maximum, "open file limit raised for the data path")
        }
        Err(e) => {
            tracing::warn!(error = %e, limit = ?l.current, "cannot raise the open file limit: the data path may run out of descriptors")
        }
    }
}

fn main() -> ExitCode {
    let args = match berth_volume_client::config_file::args(
        &<Cli as clap::CommandFactory>::command(),
        std::env::args_os().collect(),
    ) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("berth-volume: error: {e}");
            return ExitCode::from(1);
        }
    };
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            // Help and --version are answers, not errors; a usage error exits 1 like any other.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if let Some(done) = manual(&cli.cmd) {
        return match done {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("berth-volume: error: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter({
            // The FUSE library logs every mount's negotiation at INFO; its warnings are kept.
            let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
            let spec = if spec.contains("fuse_backend_rs") {
                spec
            } else {
                format!("{spec},fuse_backend_rs=warn")
            };
            tracing_subscriber::EnvFilter::try_new(&spec)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        });
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth-volume: error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli.cmd)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The chain only: a configuration error is not a crash, whatever RUST_BACKTRACE says.
            eprintln!("berth-volume: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Completions { .. } | Cmd::Man { .. } => unreachable!("answered by `manual`"),
        Cmd::Credential {
            node_id,
            token_file,
        } => {
            let token = read_secret(Some(token_file))?.context("no cluster token")?;
            anyhow::ensure!(!node_id.is_empty(), "--node-id is empty");
            println!("{}", credential::issue(&token, &node_id));
        }
        Cmd::Control {
            listen,
            state,
            token_file,
            insecure,
            consul,
            advertise,
            leader_key,
            leader_ttl,
            leader_lock_delay,
            raft_id,
            peer,
            timing: profile,
            heartbeat_interval,
            heartbeat_misses,
            lease,
            tls_cert,
            tls_key,
            tls_ca,
        } => {
            let tls = tls::server(tls_cert.as_deref(), tls_key.as_deref())?;
            anyhow::ensure!(
                token_file.is_some() || insecure,
                "no --token-file: without the cluster token the control service would let anyone \
                 who reaches {listen} fence, assign and declare nodes dead. Give --token-file FILE \
                 (the cluster token), or --insecure for a test on one machine"
            );
            let timing = control_timing(profile, heartbeat_interval, heartbeat_misses, lease)?;
            let token = read_secret(token_file)?;
            if insecure {
                tracing::warn!(
                    listen = %listen,
                    "--insecure: no token; anyone who reaches this address can fence, assign \
                     and declare nodes dead. Give --token-file on any real cluster"
                );
                berth_volume_control::metrics::control().insecure.set(1);
            }
            let (stop_election, stopped) = tokio::sync::watch::channel(false);
            let mut election = None;
            let c = match (raft_id, &state) {
                (Some(id), Some(dir)) => {
                    let mut peers = std::collections::BTreeMap::new();
                    for (pid, addr) in peer {
                        anyhow::ensure!(
                            peers.insert(pid, addr).is_none(),
                            "--peer {pid} is given twice"
                        );
                    }
                    refuse_single_store(dir).await?;
                    let mut settings = berth_volume_control::raft::Settings::new(id, peers);
                    if tls.is_some() {
                        settings.tls = Some(tls::ClientTls::new(tls_ca.as_deref())?);
                    }
                    tracing::info!(id, peers = ?settings.peers, "joining the replicated control service");
                    let replica =
                        berth_volume_control::raft::Replica::start(dir, settings, token.clone())
                            .await
                            .context("starting the raft member")?;
                    let c = Arc::new(
                        Control::open_replicated(replica, token, timing)
                            .await
                            .context("loading state")?,
                    );
                    tokio::spawn(berth_volume_control::replicated::lead(c.clone()));
                    c
                }
                (_, None) => {
                    let url = consul.context("give --state DIR or --consul URL")?;
                    let seat = Election {
                        key: leader_key,
                        ttl: leader_ttl,
                        lock_delay: leader_lock_delay,
                        identity: advertise.unwrap_or_else(|| {
                            let scheme = if tls.is_some() { "https" } else { "http" };
                            format!("{scheme}://{listen}")
                        }),
                    };
                    let (c, e) = elected(&url, seat, token, timing, stopped).await?;
                    election = Some(e);
                    c
                }
                (_, Some(state)) => Arc::new(
                    Control::open_with(
                        Box::new(
                            RedbStore::open(state)
                                .with_context(|| format!("opening store in {}", state.display()))?,
                        ),
                        token,
                        timing,
                    )
                    .await
                    .context("loading state")?,
                ),
            };
            let l = tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("binding {listen}"))?;
            tracing::info!(addr = %l.local_addr()?, "control service listening");
            let served = api::serve_tls(l, c.clone(), tls, shutdown::signal()).await;
            if let Some(r) = c.replica() {
                let _ = r.raft.shutdown().await;
            }
            // Released after the last request is answered: a standby takes over at its next
            // round, with no lock-delay.
            let _ = stop_election.send(true);
            if let Some(e) = election {
                let _ = e.await;
            }
            served.context("serving")?;
            tracing::info!("control service stopped");
        }
        Cmd::Agent {
            node_id,
            socket,
            data_root,
            shared_root,
            control,
            token_file,
            credential_file,
            listen,
            advertise,
            tls_cert,
            tls_key,
            tls_ca,
            single_node,
            transfer_rate,
            ship_interval,
            timing: profile,
            heartbeat_interval,
            heartbeat_misses,
            self_fence_deadline,
            drift_margin,
            failsafe,
            docker,
            docker_socket,
            data_path,
        } => {
            let docker_socket = match docker_socket {
                Some(path) => path,
                None => docker_socket_path(&docker)?,
            };
            if data_path == DataPathMode::Fuse {
                raise_open_file_limit();
            }
            if data_path == DataPathMode::Direct {
                tracing::warn!(
                    "--data-path direct: containers write to their volumes without this agent; a dead, hung or frozen agent cannot stop them after its lease ends"
                );
            }
            // Refused before anything is bound or asked: the address is wrong whatever port
            // --listen binds.
            if let Ok(l) = listen.parse::<std::net::SocketAddr>() {
                transfer_address(l, advertise.as_deref(), &control, single_node)?;
            }
            let lease_timing = agent_timing(
                profile,
                Overrides {
                    interval: heartbeat_interval,
                    misses: heartbeat_misses,
                    self_fence_deadline,
                    drift_margin,
                    lease: None,
                },
            );
            let heartbeat_interval = lease_timing.interval;
            let node = match node_id {
                Some(n) => n,
                None => swarm_node_id()?,
            };
            let token = match (read_secret(token_file)?, read_secret(credential_file)?) {
                (Some(t), _) => Some(t),
                (None, Some(c)) => {
                    let named = c
                        .strip_prefix("berth-node.")
                        .and_then(|r| r.rsplit_once('.'))
                        .map(|(n, _)| n);
                    anyhow::ensure!(
                        named == Some(node.as_str()),
                        "the credential file holds a credential for {named:?}, not for node {node}"
                    );
                    Some(c)
                }
                (None, None) => None,
            };
            let tls = tls::server(tls_cert.as_deref(), tls_key.as_deref())?;
            let peer_tls = match tls {
                Some(_) => Some(tls::ClientTls::new(tls_ca.as_deref())?),
                None => None,
            };
            let client = ControlClient::with_ca(&control, token.clone(), tls_ca.as_deref())?;
            // Refuse a live socket before anything else: a second agent must change nothing.
            let ul =
                protocol::bind(&socket).with_context(|| format!("binding {}", socket.display()))?;
            let _socket_file = SocketFile(socket.clone());
            let layout = Arc::new(Layout::new(&data_root));
            let shared = shared_root.unwrap_or_else(|| data_root.join("shared"));
            let transfer_opts = TransferOptions {
                rate_limit: transfer_rate,
                peers: token.as_ref().map(|_| PeerCheck::new(client.clone())),
                token: token.clone(),
                peer_tls,
            };
            let keeper = Arc::new(Keeper::with_failsafe(
                lease_timing,
                if failsafe {
                    Failsafe::On {
                        started: berth_volume::clock::now(),
                    }
                } else {
                    Failsafe::Off
                },
            ));
            let driver = socket
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let agent = Arc::new(
                Agent::new(node.clone(), layout.clone(), shared, client.clone())
                    .with_transfer_options(transfer_opts.clone())
                    .with_shipper(Shipper::new(ship_interval))
                    .with_self_fence(SelfFence {
                        keeper: keeper.clone(),
                        docker: Docker::new(docker_socket),
                        driver,
                    })
                    .with_data_path(data_path),
            );
            agent.check_engine().await.map_err(|e| anyhow::anyhow!(e))?;
            // The first heartbeat already says whether the engine answers.
            let reachable = agent.docker_answers(heartbeat_interval).await;
            keeper.docker_probed(reachable);
            berth_volume::metrics::agent()
                .docker_reachable
                .set(i64::from(reachable));
            agent.reattach();
            // The plugin socket opens before the control service is reached: the engine asks
            // its plugins at every volume listing and waits minutes for a missing one. Until
            // the first lease every Mount is refused, with the reason.
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
                let _ = rx.wait_for(|v| *v).await;
            };
            let p = tokio::spawn(protocol::serve(ul, agent.clone(), wait(stop_rx.clone())));
            let tl = tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("binding {listen}"))?;
            let transfer_addr = transfer_address(
                tl.local_addr()?,
                advertise.as_deref(),
                &control,
                single_node,
            )?;
            let host = std::fs::read_to_string("/etc/hostname")
                .unwrap_or_default()
                .trim()
                .to_string();
            // Registration retries, 100 ms doubling to 5 s, for ever: the control service may
            // start after the agent. The first lease comes before serving: a Mount needs one,
            // and a lease timing or a token the control service refuses is a configuration
            // error, said once, at start.
            let register = || async {
                match client.register_node(&node, &host, &transfer_addr).await {
                    Ok(()) => {
                        let sent = berth_volume::clock::now();
                        match client.heartbeat(&node, &keeper.heartbeat()).await {
                            Ok(reply) => {
                                keeper.renewed(sent, berth_volume::clock::now(), reply);
                                agent
                                    .recover()
                                    .await
                                    .map_err(|e| Register::Retry(e.chain()))
                            }
                            Err(e) if e.status() == Some(400) => {
                                Err(Register::Fatal(anyhow::anyhow!("lease timing: {e}")))
                            }
                            Err(e) => Err(Register::Retry(e.to_string())),
                        }
                    }
                    Err(e) if matches!(e.status(), Some(401 | 403)) => Err(Register::Fatal(
                        anyhow::anyhow!("the control service refused this agent: {e}"),
                    )),
                    Err(e) => Err(Register::Retry(e.to_string())),
                }
            };
            register
                .retry(
                    ExponentialBuilder::default()
                        .with_min_delay(Duration::from_millis(100))
                        .with_max_delay(Duration::from_secs(5))
                        .without_max_times(),
                )
                .when(|e| matches!(e, Register::Retry(_)))
                .notify(|e, _| {
                    if let Register::Retry(e) = e {
                        tracing::warn!(error = %e, "cannot register with control; retrying");
                    }
                })
                .await
                .map_err(|e| match e {
                    Register::Fatal(e) => e,
                    Register::Retry(e) => anyhow::anyhow!(e),
                })?;
            tracing::info!(node = %node, socket = %socket.display(), transfer = %transfer_addr, "agent listening");
            let routes = transfer::router(layout, &transfer_opts)
                .merge(replica::router(agent.clone(), &transfer_opts))
                .merge(berth_volume::metrics::agent_router(
                    client.clone(),
                    token.clone(),
                ))
                .merge(heartbeat::probes_router(keeper.clone()))
                .merge(berth_volume::failsafe::router(keeper.clone()));
            let peers = tokio::spawn(berth_volume::failsafe::run(
                agent.clone(),
                keeper.clone(),
                berth_volume::failsafe::Peers::default(),
                stop_rx.clone(),
            ));
            let leases = tokio::spawn(heartbeat::run(
                agent.clone(),
                keeper.clone(),
                Registration {
                    host: host.clone(),
                    transfer: transfer_addr.clone(),
                },
                stop_rx.clone(),
            ));
            let served = wait(stop_rx.clone());
            let t = tokio::spawn(async move {
                match tls {
                    None => axum::serve(tl, routes).with_graceful_shutdown(served).await,
                    Some(tls) => tls::serve(tl, tls, routes, served).await,
                }
            });
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
            let s = agent.clone();
            let mut rx = stop_rx.clone();
            let ship = tokio::spawn(async move {
                loop {
                    if let Err(e) = replica::ship_pass(&s).await {
                        tracing::debug!(error = %berth_volume_client::error_chain::chain(&e), "ship pass failed");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(ship_interval) => {}
                        _ = rx.wait_for(|v| *v) => break,
                    }
                }
            });
            shutdown::signal().await;
            let _ = stop_tx.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(10), async {
                let _ = recon.await;
                let _ = ship.await;
                let _ = leases.await;
                let _ = peers.await;
                let _ = p.await;
                let _ = t.await;
            })
            .await;
            tracing::info!("agent stopped");
        }
    }
    Ok(())
}

/// Why registering at start failed: worth retrying (the control service is not up yet, or
/// recovering the mounts failed), or a refusal retrying cannot change.
enum Register {
    Retry(String),
    Fatal(anyhow::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> std::net::SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_transfer_address_must_be_reachable_from_other_machines() {
        let local = "http://127.0.0.1:4523";
        let remote = "http://127.0.0.1:4523,http://10.0.0.1:4523";
        // Today's defaults on one machine, and a node's own address on a cluster.
        assert_eq!(
            transfer_address(addr("127.0.0.1:4524"), None, local, false).unwrap(),
            "127.0.0.1:4524"
        );
        assert_eq!(
            transfer_address(addr("10.0.0.5:4524"), None, remote, false).unwrap(),
            "10.0.0.5:4524"
        );
        // Every address: refused without --advertise, whatever the control's.
        for control in [local, remote] {
            let e = transfer_address(addr("0.0.0.0:4524"), None, control, false).unwrap_err();
            assert!(e.to_string().contains("--advertise"), "{e}");
            assert!(transfer_address(addr("[::]:4524"), None, control, false).is_err());
        }
        // --advertise names the node: a host alone takes the bound port.
        assert_eq!(
            transfer_address(addr("0.0.0.0:4524"), Some("10.0.0.5"), remote, false).unwrap(),
            "10.0.0.5:4524"
        );
        assert_eq!(
            transfer_address(
                addr("0.0.0.0:4524"),
                Some("node5.example:7000"),
                remote,
                false
            )
            .unwrap(),
            "node5.example:7000"
        );
        // Loopback on a cluster: refused, naming the remote control.
        let e = transfer_address(addr("127.0.0.1:4524"), None, remote, false).unwrap_err();
        assert!(e.to_string().contains("http://10.0.0.1:4523"), "{e}");
        assert!(transfer_address(addr("0.0.0.0:4524"), Some("localhost"), remote, false).is_err());
        // Unless every agent runs here.
        assert!(transfer_address(addr("127.0.0.1:4524"), None, remote, true).is_ok());
        assert!(transfer_address(addr("0.0.0.0:4524"), None, local, true).is_ok());
        assert!(transfer_address(addr("0.0.0.0:4524"), Some("a:b"), local, false).is_err());
    }
}
