//! Command-line surface. Exit codes are part of the interface: 0 when every task is placed,
//! 2 when some are pending (or a failover leaves slots waiting), 1 on bad input or a usage
//! error, with a message on stderr naming the file and the field.

mod input;
mod live;
mod manual;
mod rebalance;
pub mod render;
mod run;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};

use berth_scheduler::failover::{self, Action, Event};
use berth_scheduler::model::{Cluster, NodeId};
use berth_scheduler::{explain, schedule};

#[derive(Parser, Debug)]
#[command(
    name = "berth",
    version = crate::VERSION,
    about = "Berth: a placement engine for Docker Swarm's stateful services",
    after_help = ENV_HELP
)]
pub struct Args {
    /// A TOML file of flags, keys named like them (`token-file = "/etc/berth/token"`); the
    /// command line and the environment win over it.
    #[arg(long, global = true, env = "BERTH_CONFIG")]
    #[allow(dead_code)] // read before clap parses, by `config_file::args`
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Place every missing task and print placements and pending reasons.
    Plan {
        #[command(flatten)]
        input: Input,
        #[arg(long, value_enum, env = "BERTH_OUTPUT", default_value_t = Output::Table)]
        output: Output,
    },
    /// Every node's verdict for one service's next task: the filter that rejected it, or its
    /// scores.
    Explain {
        /// The service's name.
        #[arg(long, env = "BERTH_SERVICE")]
        service: String,
        #[command(flatten)]
        input: Input,
        #[arg(long, value_enum, env = "BERTH_OUTPUT", default_value_t = Output::Table)]
        output: Output,
    },
    /// Run the controller on a Swarm manager: keep stateful templates running as one pinned
    /// service per slot, serve the HTTP API and /metrics. Stops cleanly on SIGTERM.
    Run(run::RunArgs),
    /// A running cluster at a glance, read-only: every node's liveness, lease and fencing and
    /// every volume's node and epoch (from the volume control service), and the failovers in
    /// progress (from `berth run`'s API).
    Status(live::Endpoints),
    /// Every Berth volume: its node, epoch, mount, fencing and standbys (read-only).
    Volumes(live::Endpoints),
    /// `berth run`'s failover runs and the commands in flight; `--watch` prints each change.
    Failovers {
        #[command(flatten)]
        endpoints: live::Endpoints,
        #[command(flatten)]
        watch: live::WatchArgs,
    },
    /// Prints a completion script for SHELL (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Prints berth(1), or with --dir writes every page (berth.1, berth-SUBCOMMAND.1) there.
    Man {
        #[arg(long, env = "BERTH_DIR")]
        dir: Option<PathBuf>,
    },
    /// The ordered failover plan for an event: node-down=ID, node-drained=ID or node-back=ID.
    Failover {
        /// What happened: `node-down=NODE` (lost), `node-drained=NODE` (an operator drains it)
        /// or `node-back=NODE` (ready again). NODE is a Swarm node ID or a hostname.
        #[arg(long, value_name = "KIND=NODE", env = "BERTH_EVENT")]
        event: String,
        #[command(flatten)]
        input: Input,
        #[arg(long, value_enum, env = "BERTH_OUTPUT", default_value_t = Output::Table)]
        output: Output,
    },
    /// Which running stateful slots the engine would move back or onto new nodes, and why
    /// (`--dry-run`); with `--live`, has `berth run` carry the moves out and shows their
    /// progress.
    Rebalance(rebalance::RebalanceArgs),
}

/// Where the cluster comes from: separate files (each a `docker … inspect` JSON array, the
/// Engine API's `/tasks` array, or compact TOML), or one compact file with every section.
#[derive(ClapArgs, Debug)]
pub struct Input {
    /// `docker node inspect $(docker node ls -q)` output, or compact TOML with [[nodes]].
    #[arg(long, env = "BERTH_NODES", required_unless_present_any = ["cluster", "live"])]
    nodes: Option<PathBuf>,
    /// `docker service inspect $(docker service ls -q)` output, or compact TOML with [[services]].
    #[arg(long, env = "BERTH_SERVICES", required_unless_present_any = ["cluster", "live"])]
    services: Option<PathBuf>,
    /// The Engine API's `GET /tasks` output, or compact TOML with [[tasks]].
    #[arg(long, env = "BERTH_TASKS")]
    tasks: Option<PathBuf>,
    /// Berth's dataset records (compact TOML/JSON with [[datasets]]); inferred from the tasks
    /// when absent.
    #[arg(long, env = "BERTH_DATASETS")]
    datasets: Option<PathBuf>,
    /// One compact TOML file holding nodes, services, tasks and datasets.
    #[arg(long, env = "BERTH_CLUSTER", conflicts_with_all = ["nodes", "services"])]
    cluster: Option<PathBuf>,
    /// Read nodes, services and tasks from the running Swarm through a manager's Docker Engine
    /// API (`--docker`), as `berth run` does, instead of from files; with `--control`, the
    /// datasets from the volume control service. Changes nothing.
    #[arg(long, env = "BERTH_LIVE", conflicts_with_all = ["nodes", "services", "tasks", "datasets", "cluster"])]
    live: bool,
    /// With `--live`: the manager's Docker Engine API.
    #[arg(
        long,
        env = "DOCKER_HOST",
        default_value = "unix:///var/run/docker.sock"
    )]
    docker: String,
    /// With `--live`: the volume control service, for the datasets (without it they are
    /// inferred from the tasks).
    #[arg(long = "control", alias = "volume-control", env = "BERTH_CONTROL")]
    control: Option<String>,
    /// With `--live --control`: file holding the cluster token.
    #[arg(long, env = "BERTH_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// With `--live --control https://…`: PEM CA certificate(s) to trust (default: the
    /// system's roots).
    #[arg(long, env = "BERTH_TLS_CA")]
    tls_ca: Option<PathBuf>,
}

/// The cluster from files, or with `--live` from the Swarm.
fn load(input: &Input) -> Result<input::Loaded> {
    if input.live {
        live::load_swarm(input)
    } else {
        input::load(input)
    }
}

/// Every flag's variable: `BERTH_` and the flag's name in capitals, `-` as `_`
/// (`--token-file` → `BERTH_TOKEN_FILE`); the Docker endpoint also `DOCKER_HOST`. A flag given on
/// the command line wins over its variable.
const ENV_HELP: &str = "Every flag can also be set by an environment variable: BERTH_ and the \
flag's name in capitals with - as _ (--token-file: BERTH_TOKEN_FILE); --docker by DOCKER_HOST. \
A config file (--config FILE or BERTH_CONFIG) gives flags as TOML keys named like them \
(token-file = \"/etc/berth/token\"). The command line wins, then the environment, then the file.\n\nExit codes: 0 done (every task placed); 2 some tasks pending or slots \
waiting; 1 bad input, a usage error or a failure, with `error: ` and its causes on stderr.";

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Output {
    Table,
    Json,
}

pub enum Outcome {
    Complete,
    Incomplete,
}

impl Outcome {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Outcome::Complete => ExitCode::SUCCESS,
            Outcome::Incomplete => ExitCode::from(2),
        }
    }
}

/// The event's node by ID or, as the simulator accepts, by hostname; an unknown one is an error
/// that lists the nodes there are.
fn resolve_node(event: Event, cluster: &Cluster) -> Result<Event> {
    let named = event.node();
    if cluster.node(named).is_some() {
        return Ok(event);
    }
    let by_host: Vec<&NodeId> = cluster
        .nodes
        .iter()
        .filter(|n| n.hostname == named.as_str())
        .map(|n| &n.id)
        .collect();
    let id = match by_host[..] {
        [id] => id.clone(),
        [] => {
            let known: Vec<String> = cluster
                .nodes
                .iter()
                .map(|n| format!("{} ({})", n.hostname, n.id))
                .collect();
            bail!(
                "event names unknown node `{named}`: give a node ID or hostname, one of: {}",
                known.join(", ")
            );
        }
        _ => bail!(
            "event names hostname `{named}`, which {} nodes share: give the node ID",
            by_host.len()
        ),
    };
    Ok(match event {
        Event::NodeDown(_) => Event::NodeDown(id),
        Event::NodeDrained(_) => Event::NodeDrained(id),
        Event::NodeBack(_) => Event::NodeBack(id),
    })
}

pub fn run(args: Args) -> Result<Outcome> {
    match args.command {
        Command::Status(e) => {
            live::status(&e, &mut std::io::stdout().lock())?;
            Ok(Outcome::Complete)
        }
        Command::Volumes(e) => {
            live::volumes(&e, &mut std::io::stdout().lock())?;
            Ok(Outcome::Complete)
        }
        Command::Failovers { endpoints, watch } => {
            live::failovers(&endpoints, &watch, &mut std::io::stdout().lock())?;
            Ok(Outcome::Complete)
        }
        Command::Completions { shell } => {
            manual::completions(shell, &mut std::io::stdout().lock());
            Ok(Outcome::Complete)
        }
        Command::Man { dir } => {
            manual::man(dir.as_deref(), &mut std::io::stdout().lock())?;
            Ok(Outcome::Complete)
        }
        Command::Run(a) => {
            run::run(a)?;
            Ok(Outcome::Complete)
        }
        Command::Rebalance(a) => rebalance::run(a),
        Command::Plan { input, output } => {
            let loaded = load(&input)?;
            if loaded.cluster.tasks.is_empty() && !loaded.cluster.services.is_empty() {
                eprintln!(
                    "berth: warning: no tasks given: the plan creates every task of every \
                     service, including those already running (a stateful slot's as if it \
                     were new). Give --tasks (the Engine API's GET /tasks) or --live to plan \
                     only what is missing"
                );
            }
            let plan = schedule::plan(&loaded.cluster).map_err(|e| loaded.blame(&e))?;
            match output {
                Output::Json => {
                    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                    render::write_plan_json(&plan, &mut out)?;
                    out.flush()?;
                }
                Output::Table => print!("{}", render::plan_table(&plan, &loaded.cluster)),
            }
            Ok(if plan.all_placed() {
                Outcome::Complete
            } else {
                Outcome::Incomplete
            })
        }
        Command::Explain {
            service,
            input,
            output,
        } => {
            let loaded = load(&input)?;
            let e = explain::explain(&loaded.cluster, &service).map_err(|e| loaded.blame(&e))?;
            match output {
                Output::Json => println!("{}", render::explain_json(&e)),
                Output::Table => print!("{}", render::explain_table(&e)),
            }
            Ok(if e.pending.is_empty() {
                Outcome::Complete
            } else {
                Outcome::Incomplete
            })
        }
        Command::Failover {
            event,
            input,
            output,
        } => {
            let event = Event::parse(&event)?;
            let loaded = load(&input)?;
            let event = resolve_node(event, &loaded.cluster)?;
            let plan = failover::plan_failover(&loaded.cluster, &event).map_err(|e| match e {
                failover::FailoverError::Plan(p) => loaded.blame(&p),
                other => anyhow::Error::new(other),
            })?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
                Output::Table => print!("{}", render::failover_table(&plan)),
            }
            let waiting = plan.steps.iter().any(|s| {
                matches!(
                    s.action,
                    Action::Pending { .. }
                        | Action::WaitForNode { .. }
                        | Action::WaitForOperator { .. }
                )
            });
            Ok(if waiting {
                Outcome::Incomplete
            } else {
                Outcome::Complete
            })
        }
    }
}
