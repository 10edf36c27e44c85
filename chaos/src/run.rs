//! One chaos run, and the report of many.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use berth_lab::swarm::IMAGE;
use berth_lab::wait_for;
use serde::Serialize;

use crate::checker::{Ack, Checker};
use crate::cluster::Cluster;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// kill -9 of the writer's node: its dockerd, containers and volume agent.
    KillWorker,
    /// The writer's node loses its link for `--partition-secs` and keeps running.
    Partition,
    /// kill-worker, then kill -9 of `berth run` once it has a failover command in flight,
    /// restarted 1 s later (it must carry on from its journal).
    KillDaemon,
    /// `docker node update --availability drain` of the writer's node.
    Drain,
    /// kill-worker, then kill -9 of the serving control member (the Raft leader) once berth run
    /// has a failover command in flight; restarted when the run heals.
    KillControl,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum System {
    Berth,
    Swarm,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Fault::KillWorker => "kill-worker",
            Fault::Partition => "partition",
            Fault::KillDaemon => "kill-daemon",
            Fault::Drain => "drain",
            Fault::KillControl => "kill-control",
        })
    }
}

impl std::fmt::Display for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            System::Berth => "berth",
            System::Swarm => "swarm",
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub fault: Fault,
    pub system: System,
    pub seed: u64,
    /// Fault → first acknowledgement from the slot's new task; `null` if it never served again
    /// within the run's limit.
    pub seconds_to_serve: Option<f64>,
    pub acked: usize,
    pub lost_acked: usize,
    /// The first few lost records (`SEQ HOST`), to look for in the logs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lost_examples: Vec<String>,
    pub double_writers: usize,
    /// Under Berth: how many times the slot's volume was fenced (its epoch's rise); 1 for a
    /// failover, never 2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fences: Option<u64>,
    /// Tasks that wrote records for the slot during the run.
    pub writers: usize,
    pub node: String,
    pub storage: &'static str,
}

impl RunResult {
    pub fn summary(&self) -> String {
        format!(
            "{} / {}: serves again after {}, {} acked, {} lost, {} double writers{}",
            self.system,
            self.fault,
            self.seconds_to_serve
                .map(|s| format!("{s:.1} s"))
                .unwrap_or_else(|| "never".into()),
            self.acked,
            self.lost_acked,
            self.double_writers,
            self.fences
                .map(|f| format!(", fenced {f}x"))
                .unwrap_or_default()
        )
    }
}

/// How long a run waits for the slot to serve again.
const SERVE_LIMIT: Duration = Duration::from_secs(150);

/// Names of one run's workload.
struct Workload {
    id: String,
    /// The Swarm service whose task writes (the slot service under Berth).
    service: String,
    /// What to remove afterwards (the template under Berth).
    remove: String,
}

fn deploy(c: &Cluster, system: System, seed: u64, checker: &str) -> Result<Workload> {
    let m = c.manager();
    let common = |name: &str| -> Vec<String> {
        [
            "service",
            "create",
            "--detach",
            "--quiet",
            "--no-resolve-image",
            "--name",
            name,
            "--constraint",
            "node.role==worker",
            "--network",
            "host",
            "--stop-grace-period",
            "1s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let w = match system {
        System::Berth => {
            let name = format!("cb{seed}");
            let mut args = common(&name);
            args.extend(
                [
                    "--replicas",
                    "0",
                    "--label",
                    "berth.stateful=true",
                    "--label",
                    "berth.replicas=1",
                    "--label",
                    &format!("berth.volume={name}-{{slot}}"),
                    "--label",
                    "berth.backend=shared",
                    "--label",
                    "berth.failover=move",
                    "--update-order",
                    "start-first",
                    "--mount",
                    &format!(
                        "type=volume,source={name}-{{{{.Task.Slot}}}},target=/data,volume-driver=berth,volume-opt=backend=shared"
                    ),
                ]
                .map(String::from),
            );
            args.extend([IMAGE, "writer", "/data", checker, &name].map(String::from));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            m.docker_ok(&args);
            Workload {
                id: name.clone(),
                service: format!("{name}-1"),
                remove: name,
            }
        }
        System::Swarm => {
            let name = format!("cs{seed}");
            let mut args = common(&name);
            args.extend(
                [
                    "--replicas",
                    "1",
                    "--mount",
                    &format!("type=volume,source={name},target=/data"),
                ]
                .map(String::from),
            );
            args.extend([IMAGE, "writer", "/data", checker, &name].map(String::from));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            m.docker_ok(&args);
            Workload {
                id: name.clone(),
                service: name.clone(),
                remove: name,
            }
        }
    };
    Ok(w)
}

/// `GET path` on `addr` (HTTP/1.0, bounded in time), its body as JSON.
pub fn http_get_json(addr: &str, path: &str, token: Option<&str>) -> Option<serde_json::Value> {
    use std::io::{Read, Write};
    let sock = addr.parse().ok()?;
    let mut s = std::net::TcpStream::connect_timeout(&sock, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    let (_, json) = body.split_once("\r\n\r\n")?;
    serde_json::from_str(json).ok()
}

/// Whether `berth run` (API at `addr`) has a failover command in flight.
/// Kills `node`, then waits until the failover is mid-way: as soon as berth run has a failover
/// command in flight (the fence waiting out the lost node's lease, typically), or 10 s at the
/// latest, after which `next` (what the caller kills then) is killed anyway.
fn kill_node_until_mid_failover(c: &mut Cluster, node: &str, next: &str) {
    c.kill_node(node);
    if !wait_for(Duration::from_secs(10), || failover_in_flight(c)) {
        eprintln!("berth-chaos:   no failover command seen in flight; killing {next} anyway");
    }
}

fn failover_in_flight(c: &Cluster) -> bool {
    c.daemon_get("/v1/failovers")
        .and_then(|v| v["in_flight"].as_array().map(|a| !a.is_empty()))
        .unwrap_or(false)
}

/// The lab node (name) running `service`'s task, and that task's container ID.
fn running_on(c: &Cluster, service: &str) -> Option<(String, String)> {
    let m = c.manager();
    let filter = format!(
        "%7B%22service%22:%5B%22{service}%22%5D,%22desired-state%22:%5B%22running%22%5D%7D"
    );
    let tasks: serde_json::Value =
        serde_json::from_str(&m.engine.api_get(&format!("/tasks?filters={filter}")).ok()?).ok()?;
    let t = tasks
        .as_array()?
        .iter()
        .find(|t| t["Status"]["State"] == "running")?;
    let node_id = t["NodeID"].as_str()?;
    let name = c.ids.iter().find(|(_, id)| *id == node_id)?.0.clone();
    let container = t["Status"]["ContainerStatus"]["ContainerID"]
        .as_str()?
        .to_string();
    Some((name, container))
}

fn records(text: &str, id: &str) -> Vec<(u64, String, u128)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            match f[..] {
                [seq, host, ms, rid] if rid == id => {
                    Some((seq.parse().ok()?, host.to_string(), ms.parse().ok()?))
                }
                _ => None,
            }
        })
        .collect()
}

/// Every `records` file under `dir` (each a copy of some slot's data).
fn copies(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            copies(&e.path(), out);
        } else if ft.is_file() && e.file_name() == "records" {
            out.push(e.path());
        }
    }
}

/// Pairs of writers whose record intervals overlap in time: two tasks writing the slot at once.
fn overlapping_writers(all: &[(u64, String, u128)]) -> (usize, usize) {
    let mut span: BTreeMap<&str, (u128, u128)> = BTreeMap::new();
    for (_, host, ms) in all {
        let e = span.entry(host.as_str()).or_insert((*ms, *ms));
        e.0 = e.0.min(*ms);
        e.1 = e.1.max(*ms);
    }
    let spans: Vec<(u128, u128)> = span.values().copied().collect();
    let mut pairs = 0;
    for i in 0..spans.len() {
        for j in i + 1..spans.len() {
            if spans[i].0 < spans[j].1 && spans[j].0 < spans[i].1 {
                pairs += 1;
            }
        }
    }
    (pairs, spans.len())
}

pub fn one(
    c: &mut Cluster,
    checker: &Checker,
    system: System,
    fault: Fault,
    seed: u64,
    partition_secs: u64,
) -> Result<RunResult> {
    let w = deploy(c, system, seed, &checker.addr)?;
    if !wait_for(Duration::from_secs(120), || checker.acks(&w.id).len() >= 25) {
        bail!(
            "{}: the writer never acknowledged 25 records (logs in {})",
            w.service,
            c.logs().display()
        );
    }
    let (node, _) = running_on(c, &w.service).context("the writer's task")?;
    let volume = format!("{}-1", w.id);
    let epoch_before = c.volume_epoch(&volume);
    std::thread::sleep(Duration::from_millis(1000 + (seed % 3) * 1000));
    let before: BTreeSet<String> = checker.acks(&w.id).into_iter().map(|a| a.host).collect();
    let t0 = Instant::now();
    let mut killed_control = None;
    match fault {
        Fault::KillWorker => c.kill_node(&node),
        Fault::Partition => c.lab.node(&node).cut(),
        Fault::KillDaemon => {
            kill_node_until_mid_failover(c, &node, "berth run");
            c.kill_daemon();
            std::thread::sleep(Duration::from_secs(1));
            c.start_daemon()?;
        }
        Fault::Drain => {
            c.manager()
                .docker_ok(&["node", "update", "--availability", "drain", &node]);
        }
        Fault::KillControl => {
            kill_node_until_mid_failover(c, &node, "the control leader");
            match c.kill_control_leader() {
                Some(m) => {
                    eprintln!("berth-chaos:   killed the control leader on {m}");
                    killed_control = Some(m);
                }
                None => eprintln!("berth-chaos:   no control member served; nothing killed"),
            }
        }
    }
    let mut healed = false;
    let served = loop {
        let first_new = checker
            .acks(&w.id)
            .into_iter()
            .filter(|a| a.at >= t0 && !before.contains(&a.host))
            .map(|a: Ack| a.at)
            .min();
        if let Some(at) = first_new {
            break Some(at.duration_since(t0).as_secs_f64());
        }
        if fault == Fault::Partition
            && !healed
            && t0.elapsed() >= Duration::from_secs(partition_secs)
        {
            c.lab.node(&node).heal();
            healed = true;
        }
        if t0.elapsed() > SERVE_LIMIT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Keep writing a little on the new task, then end the fault.
    std::thread::sleep(Duration::from_secs(3));
    match fault {
        Fault::Partition => {
            if !healed {
                let left = Duration::from_secs(partition_secs).saturating_sub(t0.elapsed());
                std::thread::sleep(left);
                c.lab.node(&node).heal();
            }
        }
        Fault::KillWorker | Fault::KillDaemon | Fault::KillControl => {
            let agent = c.has_agents();
            c.restart_node(&node, agent)?;
            if let Some(m) = killed_control.take() {
                c.start_control(&m)?;
            }
        }
        Fault::Drain => {
            c.manager()
                .docker_ok(&["node", "update", "--availability", "active", &node]);
        }
    }
    // Let a returning node's old task be stopped (Swarm stops it once it reconnects).
    std::thread::sleep(Duration::from_secs(5));
    // The acknowledgements first: each was sent after its record was synced, so every one
    // taken now must be in the copy read next. (Taken after, a record the running writer
    // appended meanwhile would count as lost.)
    let acks = checker.acks(&w.id);
    let final_copy = running_on(c, &w.service)
        .and_then(|(n, container)| {
            let out = c.lab.node(&n).docker(&[
                "exec",
                &container,
                "/berth-testapp",
                "cat",
                "/data/records",
            ]);
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        })
        .unwrap_or_default();
    let kept: BTreeSet<(u64, String)> = records(&final_copy, &w.id)
        .into_iter()
        .map(|(s, h, _)| (s, h))
        .collect();
    let missing: Vec<&Ack> = acks
        .iter()
        .filter(|a| !kept.contains(&(a.seq, a.host.clone())))
        .collect();
    let lost = missing.len();
    let lost_examples = missing
        .iter()
        .take(5)
        .map(|a| format!("{} {}", a.seq, a.host))
        .collect();
    let mut files = Vec::new();
    copies(&c.lab.dir, &mut files);
    let mut all = Vec::new();
    for f in files {
        if let Ok(text) = std::fs::read_to_string(&f) {
            all.extend(records(&text, &w.id));
        }
    }
    let (double, writers) = overlapping_writers(&all);
    // One fence per failover: a daemon killed mid-failover that fenced or moved again after
    // its restart would show here as two.
    let fences = match (epoch_before, c.volume_epoch(&volume)) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    // Clean up: the workload goes (Berth removes the slot service with its template), its
    // volumes stay on the lab's disk until the lab goes.
    c.manager().docker_ok(&["service", "rm", &w.remove]);
    let gone = wait_for(Duration::from_secs(60), || {
        running_on(c, &w.service).is_none()
    });
    if !gone {
        bail!("{}: its task outlived the service", w.service);
    }
    Ok(RunResult {
        fault,
        system,
        seed,
        seconds_to_serve: served,
        acked: acks.len(),
        lost_acked: lost,
        lost_examples,
        fences,
        double_writers: double,
        writers,
        node,
        storage: match system {
            System::Berth => "berth shared",
            System::Swarm => "local volume",
        },
    })
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub system: System,
    pub fault: Fault,
    pub runs: usize,
    pub never_served: usize,
    pub p50_seconds_to_serve: Option<f64>,
    pub p99_seconds_to_serve: Option<f64>,
    pub max_seconds_to_serve: Option<f64>,
    pub lost_acked: usize,
    pub double_writers: usize,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub runs: Vec<RunResult>,
    pub summary: Vec<Summary>,
}

/// Nearest-rank percentile.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

impl Report {
    pub fn new(runs: Vec<RunResult>) -> Report {
        let mut groups: BTreeMap<(System, Fault), Vec<&RunResult>> = BTreeMap::new();
        for r in &runs {
            groups.entry((r.system, r.fault)).or_default().push(r);
        }
        let summary = groups
            .into_iter()
            .map(|((system, fault), rs)| {
                let mut t: Vec<f64> = rs.iter().filter_map(|r| r.seconds_to_serve).collect();
                t.sort_by(f64::total_cmp);
                Summary {
                    system,
                    fault,
                    runs: rs.len(),
                    never_served: rs.iter().filter(|r| r.seconds_to_serve.is_none()).count(),
                    p50_seconds_to_serve: percentile(&t, 50.0),
                    p99_seconds_to_serve: percentile(&t, 99.0),
                    max_seconds_to_serve: t.last().copied(),
                    lost_acked: rs.iter().map(|r| r.lost_acked).sum(),
                    double_writers: rs.iter().map(|r| r.double_writers).sum(),
                }
            })
            .collect();
        Report { runs, summary }
    }

    pub fn berth_ok(&self) -> bool {
        self.runs
            .iter()
            .filter(|r| r.system == System::Berth)
            .all(|r| {
                r.seconds_to_serve.is_some()
                    && r.lost_acked == 0
                    && r.double_writers == 0
                    && r.fences.is_none_or(|f| f <= 1)
            })
    }

    pub fn table(&self) -> String {
        let f = |v: Option<f64>| v.map(|s| format!("{s:.1}")).unwrap_or_else(|| "-".into());
        let mut out = String::from(
            "system  fault        runs  never  p50 s  p99 s  max s  lost acked  double writers\n",
        );
        for s in &self.summary {
            out.push_str(&format!(
                "{:<7} {:<12} {:>4}  {:>5}  {:>5}  {:>5}  {:>5}  {:>10}  {:>14}\n",
                s.system.to_string(),
                s.fault.to_string(),
                s.runs,
                s.never_served,
                f(s.p50_seconds_to_serve),
                f(s.p99_seconds_to_serve),
                f(s.max_seconds_to_serve),
                s.lost_acked,
                s.double_writers
            ));
        }
        out
    }
}
