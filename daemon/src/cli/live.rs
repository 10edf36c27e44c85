//! `berth status`, `berth volumes` and `berth failovers [--watch]`: read-only views of a running
//! cluster, from the volume control service (nodes, leases, volumes) and from `berth run`'s API
//! (failovers). They change nothing, so they need only the cluster token to read.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use serde::{Deserialize, Serialize};

use berth_control_model::wire::{NodeLiveness, VolumeRecord};
use berth_scheduler::executor::history::{FailoverRecord, RunEnd};
use berth_volume_client::ControlClient;
use berth_volume_client::http_client::{self, Target};

use super::input::Loaded;
use super::{Input, Output};

/// Where the cluster's services are, and the token to read them with.
#[derive(Args, Debug, Clone)]
pub struct Endpoints {
    /// The volume control service (`berth-volume control`); for a replicated one, every
    /// member's URL, comma-separated.
    #[arg(
        long = "control",
        alias = "volume-control",
        env = "BERTH_CONTROL",
        default_value = "http://127.0.0.1:4523"
    )]
    control: String,
    /// `berth run`'s API (its `--listen`).
    #[arg(long, env = "BERTH_API", default_value = "http://127.0.0.1:9440")]
    api: String,
    /// File holding the cluster token (none: a cluster run with `--insecure`).
    #[arg(long, env = "BERTH_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// PEM CA certificate(s) trusted for an `https://` `--control` or `--api` (default: the
    /// system's roots).
    #[arg(long, env = "BERTH_TLS_CA")]
    tls_ca: Option<PathBuf>,
    #[arg(long, value_enum, env = "BERTH_OUTPUT", default_value_t = Output::Table)]
    output: Output,
}

/// `berth failovers`' own flags.
#[derive(Args, Debug, Clone)]
pub struct WatchArgs {
    /// Keep reading and print each change (a run started or ended, a command issued or done)
    /// as one line, until interrupted.
    #[arg(long, env = "BERTH_WATCH")]
    watch: bool,
    /// With `--watch`: how often to read (`2s`, `500ms`).
    #[arg(long, env = "BERTH_INTERVAL", default_value = "2s", value_parser = super::run::parse_duration)]
    interval: Duration,
    /// With `--watch`: stop after this many reads (for scripts; default: never).
    #[arg(long, hide = true)]
    polls: Option<u64>,
}

pub(super) fn token(file: &Option<PathBuf>) -> Result<Option<String>> {
    let Some(f) = file else { return Ok(None) };
    let t = std::fs::read_to_string(f)
        .with_context(|| format!("{}: cannot read the token", f.display()))?
        .trim()
        .to_string();
    anyhow::ensure!(!t.is_empty(), "{}: the token file is empty", f.display());
    Ok(Some(t))
}

/// What `GET /v1/failovers` answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failovers {
    pub runs: Vec<FailoverRecord>,
    pub in_flight: Vec<String>,
}

impl Failovers {
    /// Runs not yet ended, oldest first.
    fn in_progress(&self) -> Vec<&FailoverRecord> {
        self.runs.iter().filter(|r| r.ended_ms.is_none()).collect()
    }
}

async fn read_failovers(
    api: &str,
    token: Option<&str>,
    tls_ca: Option<&std::path::Path>,
) -> Result<Failovers> {
    let body = api_call(
        api,
        token,
        tls_ca,
        axum::http::Method::GET,
        "/v1/failovers",
        Vec::new(),
    )
    .await?;
    serde_json::from_slice(&body)
        .with_context(|| format!("berth run's API at {api}: /v1/failovers does not decode"))
}

/// One call to `berth run`'s API (`--api`, http:// or https://); the body of a 2xx answer,
/// else an error with the status and what the API said.
pub(super) async fn api_call(
    api: &str,
    token: Option<&str>,
    tls_ca: Option<&std::path::Path>,
    method: axum::http::Method,
    path: &str,
    body: Vec<u8>,
) -> Result<Vec<u8>> {
    let (https, rest) = match api.trim().strip_prefix("https://") {
        Some(r) => (true, Some(r)),
        None => (false, api.trim().strip_prefix("http://")),
    };
    let addr = rest
        .map(|a| a.trim_end_matches('/'))
        .filter(|a| !a.is_empty() && !a.contains('/'))
        .ok_or_else(|| anyhow!("--api {api:?}: give http://HOST:PORT or https://HOST:PORT"))?;
    let target = if https {
        Target::Tls(
            addr.to_string(),
            berth_volume_client::tls::ClientTls::new(tls_ca)?,
        )
    } else {
        Target::Tcp(addr.to_string())
    };
    let mut headers: Vec<(&str, String)> = token
        .map(|t| vec![("authorization", format!("Bearer {t}"))])
        .unwrap_or_default();
    if !body.is_empty() {
        headers.push(("content-type", "application/json".into()));
    }
    let reply = http_client::send(&target, method, path, &headers, body)
        .await
        .with_context(|| format!("berth run's API at {api}"))?;
    if !reply.status.is_success() {
        bail!(
            "berth run's API at {api} answered {}: {}",
            reply.status,
            String::from_utf8_lossy(&reply.body).trim()
        );
    }
    Ok(reply.body.to_vec())
}

fn control(e: &Endpoints) -> Result<ControlClient> {
    ControlClient::with_ca(&e.control, token(&e.token_file)?, e.tls_ca.as_deref())
        .with_context(|| format!("--control {}", e.control))
}

pub(super) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Everything `berth status` shows.
#[derive(Debug, Serialize)]
pub struct Status {
    pub nodes: Vec<NodeLiveness>,
    pub volumes: Vec<VolumeRecord>,
    /// Runs in progress and commands in flight; `None` when berth run's API did not answer.
    pub failovers: Option<Failovers>,
}

/// `berth status`. Fails (after printing what it read) when either service did not answer.
pub fn status(e: &Endpoints, out: &mut dyn Write) -> Result<()> {
    runtime()?.block_on(async {
        let c = control(e)?;
        let token = token(&e.token_file)?;
        let nodes = c
            .node_liveness()
            .await
            .with_context(|| format!("the volume control service at {}", e.control))?;
        let volumes = c
            .volumes()
            .await
            .with_context(|| format!("the volume control service at {}", e.control))?;
        let failovers = read_failovers(&e.api, token.as_deref(), e.tls_ca.as_deref()).await;
        let st = Status {
            nodes,
            volumes,
            failovers: failovers.as_ref().ok().map(|f| Failovers {
                runs: f.in_progress().into_iter().cloned().collect(),
                in_flight: f.in_flight.clone(),
            }),
        };
        match e.output {
            Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(&st)?)?,
            Output::Table => write!(out, "{}", status_table(&st))?,
        }
        failovers.map(|_| ())
    })
}

/// `berth volumes`.
pub fn volumes(e: &Endpoints, out: &mut dyn Write) -> Result<()> {
    runtime()?.block_on(async {
        let volumes = control(e)?
            .volumes()
            .await
            .with_context(|| format!("the volume control service at {}", e.control))?;
        match e.output {
            Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(&volumes)?)?,
            Output::Table => write!(out, "{}", volumes_table(&volumes))?,
        }
        Ok(())
    })
}

/// `berth failovers [--watch]`.
pub fn failovers(e: &Endpoints, w: &WatchArgs, out: &mut dyn Write) -> Result<()> {
    let token = token(&e.token_file)?;
    runtime()?.block_on(async {
        let first = read_failovers(&e.api, token.as_deref(), e.tls_ca.as_deref()).await?;
        if !w.watch {
            match e.output {
                Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(&first)?)?,
                Output::Table => write!(out, "{}", failovers_table(&first.runs, &first.in_flight))?,
            }
            return Ok(());
        }
        let mut seen = Failovers::default();
        let mut current = first;
        let mut polls = 0u64;
        loop {
            for change in changes(&seen, &current) {
                match e.output {
                    Output::Json => writeln!(out, "{}", serde_json::to_string(&change)?)?,
                    Output::Table => writeln!(out, "{change}")?,
                }
            }
            out.flush()?;
            seen = current;
            polls += 1;
            if w.polls.is_some_and(|n| polls >= n) {
                return Ok(());
            }
            tokio::select! {
                _ = tokio::time::sleep(w.interval) => {}
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
            // A read that fails is said once per failure and retried: a watch outlives a
            // restart of berth run.
            current = loop {
                match read_failovers(&e.api, token.as_deref(), e.tls_ca.as_deref()).await {
                    Ok(f) => break f,
                    Err(err) => {
                        eprintln!("berth: warning: {err:#}; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(w.interval) => {}
                            _ = tokio::signal::ctrl_c() => return Ok(()),
                        }
                    }
                }
            };
        }
    })
}

/// One line of `berth failovers --watch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "change")]
pub enum Change {
    Started {
        run: u64,
        event: String,
        steps: usize,
        waves: u32,
    },
    Ended {
        run: u64,
        end: String,
    },
    Issued {
        command: String,
    },
    Done {
        command: String,
    },
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Started {
                run,
                event,
                steps,
                waves,
            } => write!(
                f,
                "run {run} started: {event}, {steps} steps in {waves} waves"
            ),
            Change::Ended { run, end } => write!(f, "run {run} ended: {end}"),
            Change::Issued { command } => write!(f, "issued: {command}"),
            Change::Done { command } => write!(f, "done: {command}"),
        }
    }
}

fn event_of(r: &FailoverRecord) -> String {
    match &r.event {
        Some(e) => e.to_string(),
        None if r.rebalance => "rebalance".to_string(),
        None => "re-admission".to_string(),
    }
}

fn end_of(r: &FailoverRecord) -> String {
    match r.end {
        Some(RunEnd::Completed) => "completed".into(),
        Some(RunEnd::Dropped { lanes }) => format!("{lanes} lanes dropped, re-planned"),
        Some(RunEnd::Abandoned) => "abandoned".into(),
        None if r.ended_ms.is_some() => "ended".into(),
        None => "running".into(),
    }
}

fn waves(r: &FailoverRecord) -> u32 {
    r.steps.iter().map(|s| s.wave + 1).max().unwrap_or(0)
}

/// What changed from `before` to `after`, runs by number then commands by text. A run already
/// ended when first seen is not news; one that started and ended between two reads is.
pub fn changes(before: &Failovers, after: &Failovers) -> Vec<Change> {
    let old: BTreeMap<u64, &FailoverRecord> = before.runs.iter().map(|r| (r.run, r)).collect();
    let first_read = before.runs.is_empty() && before.in_flight.is_empty();
    let mut out = Vec::new();
    let mut runs: Vec<&FailoverRecord> = after.runs.iter().collect();
    runs.sort_by_key(|r| r.run);
    for r in runs {
        let was = old.get(&r.run);
        if was.is_none() && !(first_read && r.ended_ms.is_some()) {
            out.push(Change::Started {
                run: r.run,
                event: event_of(r),
                steps: r.steps.len(),
                waves: waves(r),
            });
        }
        let ended_before = was.is_some_and(|w| w.ended_ms.is_some());
        let known_ended = was.is_none() && first_read;
        if r.ended_ms.is_some() && !ended_before && !known_ended {
            out.push(Change::Ended {
                run: r.run,
                end: end_of(r),
            });
        }
    }
    let was: BTreeSet<&String> = before.in_flight.iter().collect();
    let now: BTreeSet<&String> = after.in_flight.iter().collect();
    for c in now.difference(&was) {
        out.push(Change::Issued {
            command: (*c).clone(),
        });
    }
    for c in was.difference(&now) {
        out.push(Change::Done {
            command: (*c).clone(),
        });
    }
    out
}

/// Columns padded to their widest cell.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut s = String::new();
    let line = |cells: Vec<String>, s: &mut String| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(&width).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<w$}  "));
            }
        }
        s.push_str(l.trim_end());
        s.push('\n');
    };
    line(header.iter().map(|h| h.to_string()).collect(), &mut s);
    for r in rows {
        line(r, &mut s);
    }
    s
}

fn ms(v: Option<u64>) -> String {
    v.map_or_else(
        || "-".to_string(),
        |ms| format!("{:.1}s", ms as f64 / 1000.0),
    )
}

pub fn nodes_table(nodes: &[NodeLiveness]) -> String {
    let mut nodes: Vec<&NodeLiveness> = nodes.iter().collect();
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    table(
        &[
            "NODE",
            "HOST",
            "ALIVE",
            "LAST HEARTBEAT",
            "LEASE LEFT",
            "FENCED",
            "DOCKER",
        ],
        nodes
            .into_iter()
            .map(|n| {
                vec![
                    n.node.clone(),
                    n.host.clone(),
                    if n.alive { "yes" } else { "no" }.into(),
                    n.last_heartbeat_age_ms
                        .map_or_else(|| "never".to_string(), |a| format!("{} ago", ms(Some(a)))),
                    ms(Some(n.lease_expires_in_ms)),
                    if n.dead { "yes (declared dead)" } else { "no" }.into(),
                    match n.docker_reachable {
                        Some(true) => "reachable",
                        Some(false) => "unreachable (no lease)",
                        None => "-",
                    }
                    .into(),
                ]
            })
            .collect(),
    )
}

pub fn volumes_table(volumes: &[VolumeRecord]) -> String {
    let mut volumes: Vec<&VolumeRecord> = volumes.iter().collect();
    volumes.sort_by(|a, b| a.name.cmp(&b.name));
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    table(
        &[
            "VOLUME",
            "BACKEND",
            "NODE",
            "EPOCH",
            "MOUNTED ON",
            "FENCED FROM",
            "STANDBYS",
        ],
        volumes
            .into_iter()
            .map(|v| {
                let standbys: Vec<String> = v.standbys.iter().map(|s| s.node.clone()).collect();
                vec![
                    v.name.clone(),
                    v.backend.clone(),
                    v.primary.clone().unwrap_or_else(|| "- (fenced)".into()),
                    v.epoch.to_string(),
                    dash(&v.mounted_on),
                    dash(&v.fenced_from),
                    if standbys.is_empty() {
                        "-".into()
                    } else {
                        standbys.join(",")
                    },
                ]
            })
            .collect(),
    )
}

pub fn failovers_table(runs: &[FailoverRecord], in_flight: &[String]) -> String {
    let mut runs: Vec<&FailoverRecord> = runs.iter().collect();
    runs.sort_by_key(|r| r.run);
    let mut s = table(
        &["RUN", "BY", "EVENT", "STEPS", "WAVES", "STATE"],
        runs.into_iter()
            .map(|r| {
                vec![
                    r.run.to_string(),
                    r.by.as_str().into(),
                    event_of(r),
                    r.steps.len().to_string(),
                    waves(r).to_string(),
                    end_of(r),
                ]
            })
            .collect(),
    );
    let mut flight: Vec<&String> = in_flight.iter().collect();
    flight.sort();
    for c in flight {
        s.push_str(&format!("in flight: {c}\n"));
    }
    s
}

pub fn status_table(st: &Status) -> String {
    let mut s = format!("Nodes ({}):\n", st.nodes.len());
    s.push_str(&nodes_table(&st.nodes));
    s.push_str(&format!("\nVolumes ({}):\n", st.volumes.len()));
    s.push_str(&volumes_table(&st.volumes));
    match &st.failovers {
        Some(f) if f.runs.is_empty() && f.in_flight.is_empty() => {
            s.push_str("\nFailovers in progress: none\n")
        }
        Some(f) => {
            s.push_str(&format!("\nFailovers in progress ({}):\n", f.runs.len()));
            s.push_str(&failovers_table(&f.runs, &f.in_flight));
        }
        None => s.push_str("\nFailovers in progress: unknown (berth run's API did not answer)\n"),
    }
    s
}

/// `--live`: the Swarm as `berth run` reads it at each pass (nodes, services with templates as
/// their slots, tasks), and the datasets from the volume control service with `--control`.
pub fn load_swarm(input: &Input) -> Result<Loaded> {
    use crate::docker::DockerApi;
    runtime()?.block_on(async {
        let docker = crate::docker::BollardDocker::connect(&input.docker)
            .await
            .with_context(|| format!("connecting to Docker at {}", input.docker))?;
        let state = docker
            .state()
            .await
            .with_context(|| format!("reading the swarm from Docker at {}", input.docker))?;
        let observed = crate::slots::Observed::new(state);
        let (mut cluster, warnings) = observed.cluster();
        for w in &warnings {
            eprintln!("berth: warning: skipped an object the engine cannot read: {w}");
        }
        for e in &observed.invalid {
            eprintln!("berth: warning: template not run: {e}");
        }
        if let Some(url) = &input.control {
            let client =
                ControlClient::with_ca(url, token(&input.token_file)?, input.tls_ca.as_deref())
                    .with_context(|| format!("--control {url}"))?;
            let records = client
                .volumes()
                .await
                .with_context(|| format!("the volume control service at {url}"))?;
            cluster.datasets = observed.datasets(&records);
        }
        Ok(Loaded::from_swarm(
            cluster,
            &format!("the swarm at {}", input.docker),
        ))
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use berth_control_model::wire::Heartbeat;
    use berth_scheduler::executor::history::Actor;
    use berth_scheduler::failover::Event;
    use berth_scheduler::model::NodeId;
    use berth_volume_control::api::{self, Control};
    use berth_volume_control::store::RedbStore;

    use super::*;

    fn record(run: u64, ended: bool) -> FailoverRecord {
        FailoverRecord {
            run,
            by: Actor::Berth,
            event: Some(Event::NodeDown(NodeId::new("w1"))),
            steps: Vec::new(),
            started_ms: 1_000,
            ended_ms: ended.then_some(2_000),
            end: ended.then_some(RunEnd::Completed),
            rebalance: false,
        }
    }

    #[test]
    fn a_run_without_an_event_is_a_rescheduling_run_or_a_re_admission() {
        let mut r = record(1, true);
        r.event = None;
        assert_eq!(event_of(&r), "re-admission");
        r.rebalance = true;
        assert_eq!(event_of(&r), "rebalance");
    }

    #[test]
    fn a_watch_prints_runs_started_and_ended_and_commands_issued_and_done() {
        let empty = Failovers::default();
        let first = Failovers {
            runs: vec![record(1, true), record(2, false)],
            in_flight: vec!["Fence(pg)".into()],
        };
        // The first read: what is under way, not the history.
        let c = changes(&empty, &first);
        assert_eq!(c.len(), 2, "{c:?}");
        assert!(matches!(c[0], Change::Started { run: 2, .. }), "{c:?}");
        assert_eq!(c[1].to_string(), "issued: Fence(pg)");
        assert!(changes(&first, &first).is_empty(), "no change, no line");
        let next = Failovers {
            runs: vec![record(1, true), record(2, true), record(3, true)],
            in_flight: vec!["Restart(pg)".into()],
        };
        let lines: Vec<String> = changes(&first, &next)
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(
            lines,
            [
                "run 2 ended: completed",
                "run 3 started: node-down=w1, 0 steps in 0 waves",
                "run 3 ended: completed",
                "issued: Restart(pg)",
                "done: Fence(pg)",
            ]
        );
    }

    /// A volume control service and a stand-in of `berth run`'s API answering `/v1/failovers`,
    /// served on `rt` while the test calls the commands (which run their own runtime).
    fn cluster(rt: &tokio::runtime::Runtime, dir: &std::path::Path) -> Endpoints {
        cluster_tls(rt, dir, None)
    }

    /// Certificate, key and CA files, as PEM.
    struct Pki {
        cert: std::path::PathBuf,
        key: std::path::PathBuf,
        ca: std::path::PathBuf,
    }

    /// A CA and a server certificate for 127.0.0.1 it signed, written in `dir`.
    fn pki(dir: &std::path::Path) -> Pki {
        let ca_key = rcgen::KeyPair::generate().expect("ca key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&ca_key).expect("ca");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .expect("params")
            .signed_by(&key, &ca, &ca_key)
            .expect("cert");
        let write = |name: &str, pem: String| {
            let p = dir.join(name);
            std::fs::write(&p, pem).expect("write");
            p
        };
        Pki {
            cert: write("cert.pem", cert.pem()),
            key: write("key.pem", key.serialize_pem()),
            ca: write("ca.pem", ca.pem()),
        }
    }

    /// `cluster`, both services over TLS with `pki`'s certificate when given.
    fn cluster_tls(
        rt: &tokio::runtime::Runtime,
        dir: &std::path::Path,
        pki: Option<&Pki>,
    ) -> Endpoints {
        let acceptor = || {
            pki.map(|p| {
                berth_volume_client::tls::server(Some(&p.cert), Some(&p.key))
                    .expect("tls")
                    .expect("given")
            })
        };
        let scheme = if pki.is_some() { "https" } else { "http" };
        let ca = pki.map(|p| p.ca.clone());
        let (control, api_addr) = rt.block_on(async {
            let store = RedbStore::open(dir).expect("store");
            let c = Arc::new(Control::open(Box::new(store), None).await.expect("control"));
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let control = format!("{scheme}://{}", l.local_addr().expect("addr"));
            tokio::spawn(api::serve_tls(l, c, acceptor(), std::future::pending()));
            let client = ControlClient::with_ca(&control, None, ca.as_deref()).expect("client");
            client
                .register_node("n1", "host1", "127.0.0.1:1")
                .await
                .expect("register");
            let hb = Heartbeat {
                interval_ms: 1_000,
                self_fence_deadline_ms: 2_000,
                drift_margin_ms: 500,
                docker_reachable: true,
            };
            client.heartbeat("n1", &hb).await.expect("heartbeat");
            let meta = BTreeMap::from([("name".to_string(), "pgdata".to_string())]);
            client
                .create("n1", None, &meta, None)
                .await
                .expect("create");
            let body = serde_json::to_string(&Failovers {
                runs: vec![record(1, true), record(2, false)],
                in_flight: vec!["Fence(pgdata)".into()],
            })
            .expect("json");
            let app = axum::Router::new().route(
                "/v1/failovers",
                axum::routing::get(move || {
                    let body = body.clone();
                    async move { body }
                }),
            );
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let api_addr = l.local_addr().expect("addr");
            match acceptor() {
                None => tokio::spawn(async move { axum::serve(l, app).await }),
                Some(a) => tokio::spawn(berth_volume_client::tls::serve(
                    l,
                    a,
                    app,
                    std::future::pending(),
                )),
            };
            (control, api_addr)
        });
        Endpoints {
            control,
            api: format!("{scheme}://{api_addr}"),
            token_file: None,
            tls_ca: ca,
            output: Output::Table,
        }
    }

    /// The control service and berth run's API both over TLS: `--tls-ca` trusts them, the
    /// system's roots do not.
    #[test]
    fn status_reads_both_services_over_tls_trusting_the_ca() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let dir = tempfile::tempdir().expect("tmp");
        let certs = tempfile::tempdir().expect("tmp");
        let pki = pki(certs.path());
        let e = cluster_tls(&rt, dir.path(), Some(&pki));
        assert!(e.control.starts_with("https://") && e.api.starts_with("https://"));
        let mut out = Vec::new();
        status(&e, &mut out).expect("status over TLS");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.contains("pgdata"), "{text}");
        assert!(text.contains("in flight: Fence(pgdata)"), "{text}");

        let untrusted = Endpoints {
            tls_ca: None,
            ..e.clone()
        };
        let err = status(&untrusted, &mut Vec::new()).expect_err("an unknown CA");
        assert!(format!("{err:?}").contains("UnknownIssuer"), "{err:?}");
    }

    #[test]
    fn status_shows_nodes_volumes_and_the_failovers_in_progress() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let dir = tempfile::tempdir().expect("tmp");
        let e = cluster(&rt, dir.path());
        let mut out = Vec::new();
        status(&e, &mut out).expect("status");
        let text = String::from_utf8(out).expect("utf-8");
        let row = |first: &str| {
            text.lines()
                .find(|l| l.starts_with(first))
                .unwrap_or_else(|| panic!("no {first} row in\n{text}"))
                .split_whitespace()
                .collect::<Vec<_>>()
        };
        let n1 = row("n1");
        assert_eq!(&n1[..3], ["n1", "host1", "yes"], "{text}");
        assert_eq!(n1.last(), Some(&"reachable"), "{text}");
        assert_eq!(
            &row("pgdata")[..4],
            ["pgdata", "local", "n1", "1"],
            "{text}"
        );
        assert_eq!(row("2")[2], "node-down=w1", "{text}");
        assert!(
            !text.lines().any(|l| l.starts_with("1 ")),
            "run 1 ended: not in progress\n{text}"
        );
        assert!(text.contains("in flight: Fence(pgdata)"), "{text}");

        let mut out = Vec::new();
        let json = Endpoints {
            output: Output::Json,
            ..e.clone()
        };
        status(&json, &mut out).expect("status");
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["nodes"][0]["node"], "n1");
        assert_eq!(v["volumes"][0]["name"], "pgdata");
        assert_eq!(v["failovers"]["runs"].as_array().map(Vec::len), Some(1));

        let mut out = Vec::new();
        volumes(&e, &mut out).expect("volumes");
        assert!(String::from_utf8(out).unwrap().contains("pgdata"));

        // berth run's API unreachable: what the control service says is still shown, and the
        // command fails.
        let gone = Endpoints {
            api: "http://127.0.0.1:1".into(),
            ..e.clone()
        };
        let mut out = Vec::new();
        let err = status(&gone, &mut out).expect_err("API down");
        assert!(format!("{err:#}").contains("berth run's API"), "{err:#}");
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("pgdata") && text.contains("unknown"),
            "{text}"
        );

        let w = WatchArgs {
            watch: true,
            interval: Duration::from_millis(10),
            polls: Some(2),
        };
        let mut out = Vec::new();
        failovers(&e, &w, &mut out).expect("watch");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "run 2 started: node-down=w1, 0 steps in 0 waves\nissued: Fence(pgdata)\n",
            "the second read changed nothing"
        );
    }
}
