//! The observability kit against the real things: a real Prometheus (Debian's package) scrapes
//! a real `berth run` on a one-node lab Swarm, the volume control service it uses and the node's
//! volume agent (`berth-volume`, as processes), with Berth's alert rules loaded; every query of
//! the Grafana dashboard returns data, every alert rule evaluates cleanly, the alerts for the
//! situation the test sets up (a stateful slot that cannot be placed) are the ones that come
//! up, and docs/observability.md's metrics table names exactly the metrics the daemon exports. The same daemon
//! registers the swarm's tasks with a Consul agent (the documented-shapes fake: no Consul binary
//! can be had here) and deregisters a removed service's. `promtool` checks and unit-tests the
//! rules.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use berth_daemon::consul::fake::FakeAgent;
use berth_lab::harness::{self, Test};
use berth_lab::swarm::IMAGE;
use berth_lab::{Lab, LabNode, Need, wait_for};
use serde_json::Value;

fn main() {
    harness::run(
        &[
            Need::Docker,
            Need::Root,
            Need::LabTools,
            Need::Program("prometheus", "prometheus"),
            Need::Program("promtool", "prometheus"),
        ],
        vec![
            Test {
                name: "alert_rules_and_config_pass_promtool",
                body: alert_rules_and_config_pass_promtool,
            },
            Test {
                name: "prometheus_scrapes_berth_run_and_every_query_and_rule_evaluates",
                body: prometheus_scrapes_berth_run_and_every_query_and_rule_evaluates,
            },
        ],
    )
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

fn kit(file: &str) -> PathBuf {
    repo().join("observability").join(file)
}

fn promtool(args: &[&str], dir: &Path) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn alert_rules_and_config_pass_promtool() {
    let dir = kit("prometheus");
    promtool(&["check", "rules", "alerts.yml"], &dir);
    promtool(&["test", "rules", "alerts_test.yml"], &dir);
    // Syntax only: a full check stats the token files it names, which live on a monitoring host
    // (the live test below fully checks the same file with its own token files).
    promtool(
        &["check", "config", "--syntax-only", "prometheus.yml"],
        &dir,
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.0 GET; `None` when nothing answers.
/// The cluster token of this test's daemon and volume services.
const TOKEN: &str = "obs-cluster-token";

/// GET presenting the cluster token (`berth run`'s API asks for it; Prometheus ignores it).
fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split(' ').nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

fn get_json(addr: &str, path: &str) -> Value {
    let (code, body) = http_get(addr, path).unwrap_or_else(|| panic!("{addr}{path}: no answer"));
    assert_eq!(code, 200, "{addr}{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{addr}{path}: {e}: {body}"))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.0.id().to_string()])
                .status();
            if !wait_for(Duration::from_secs(10), || {
                matches!(self.0.try_wait(), Ok(Some(_)))
            }) {
                let _ = self.0.kill();
            }
            let _ = self.0.wait();
        }
    }
}

/// `berth-volume`, built by the lab's nested build: a binary of another package, which this
/// test cannot name through `CARGO_BIN_EXE_*`, and a nested build in the outer `cargo test`'s
/// own target directory would wait for its lock.
fn berth_volume() -> &'static Path {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| berth_lab::image::static_binary("berth-volume"))
}

fn spawn_logged(args: &[&str], log: &Path) -> Proc {
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new(berth_volume())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("berth-volume starts");
    Proc(child)
}

/// `berth-volume credential`: the credential of `node`, derived from the cluster token.
fn credential(node: &str, token_file: &Path, out: &Path) {
    let o = Command::new(berth_volume())
        .args(["credential", "--node-id", node, "--token-file"])
        .arg(token_file)
        .output()
        .expect("berth-volume credential runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::write(out, &o.stdout).unwrap();
}

/// The volume control service, and the manager's agent holding only its node credential (as
/// ansible/ deploys them), heartbeating it; then one Berth volume, created through the agent's
/// plugin socket as Docker would, so that the per-volume series exist. Returns the control's
/// address and the agent's transfer address.
fn start_volume_services(
    m: &LabNode,
    node_id: &str,
    dir: &Path,
    token_file: &Path,
) -> (Vec<Proc>, String, String) {
    let control = format!("127.0.0.1:{}", free_port());
    let state = dir.join("control");
    let ctl = spawn_logged(
        &[
            "control",
            "--listen",
            &control,
            "--state",
            &state.display().to_string(),
            "--token-file",
            &token_file.display().to_string(),
        ],
        &dir.join("control.log"),
    );
    assert!(
        wait_for(Duration::from_secs(30), || std::net::TcpStream::connect(
            &control
        )
        .is_ok()),
        "the control service did not listen; see {}",
        dir.join("control.log").display()
    );
    let cred = dir.join("node.cred");
    credential(node_id, token_file, &cred);
    let agent = format!("127.0.0.1:{}", free_port());
    let sock = dir.join("agent").join("berth.sock");
    std::fs::create_dir_all(dir.join("agent").join("data")).unwrap();
    let ag = spawn_logged(
        &[
            "agent",
            "--node-id",
            node_id,
            "--socket",
            &sock.display().to_string(),
            "--data-root",
            &dir.join("agent").join("data").display().to_string(),
            "--control",
            &format!("http://{control}"),
            "--credential-file",
            &cred.display().to_string(),
            "--listen",
            &agent,
            // Its own node's engine, which self-fencing would stop containers through.
            "--docker-socket",
            &m.engine.sock,
        ],
        &dir.join("agent.log"),
    );
    assert!(
        wait_for(Duration::from_secs(30), || {
            std::os::unix::net::UnixStream::connect(&sock).is_ok()
        }),
        "the agent did not open its socket; see {}",
        dir.join("agent.log").display()
    );
    let created = plugin_call(
        &sock,
        "/VolumeDriver.Create",
        r#"{"Name":"obs-data","Opts":{}}"#,
    );
    assert_eq!(created["Err"].as_str().unwrap_or(""), "", "{created}");
    (vec![ag, ctl], control, agent)
}

/// One Docker volume plugin call on the agent's socket.
fn plugin_call(sock: &Path, endpoint: &str, body: &str) -> Value {
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST {endpoint} HTTP/1.0\r\nHost: plugin\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (_, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{endpoint}: {e}: {body}"))
}

fn start_daemon(
    m: &LabNode,
    state: &Path,
    consul: &str,
    token: &str,
    control: &str,
    token_file: &Path,
) -> (Proc, String) {
    let api = format!("127.0.0.1:{}", free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["run", "--docker", &m.engine.docker_host(), "--resync", "1s"])
        .args(["--listen", &api, "--consul", consul, "--consul-ttl", "10s"])
        .args(["--volume-control", &format!("http://{control}")])
        .arg("--token-file")
        .arg(token_file)
        .arg("--state-dir")
        .arg(state)
        .env("CONSUL_HTTP_TOKEN", token)
        .stdin(Stdio::null())
        .spawn()
        .expect("berth run starts");
    let p = Proc(child);
    assert!(
        wait_for(Duration::from_secs(30), || http_get(&api, "/v1/ready")
            .is_some_and(|(c, _)| c == 200)),
        "berth run did not become ready"
    );
    (p, api)
}

/// Prometheus on the kit's own prometheus.yml, pointed at the daemon, the control service and
/// the agent, with the token files given, scraping and evaluating every second.
fn start_prometheus(
    dir: &Path,
    [daemon, control, agent]: [&str; 3],
    [token, agent_credential]: [&Path; 2],
) -> (Proc, String) {
    let example = std::fs::read_to_string(kit("prometheus/prometheus.yml")).unwrap();
    let rules = kit("prometheus/alerts.yml");
    let rules = rules.display().to_string();
    let (token, agent_credential) = (
        token.display().to_string(),
        agent_credential.display().to_string(),
    );
    // Quoted targets whole, so that no address put in is rewritten again.
    let rewrites = [
        ("15s", "1s".to_string()),
        ("\"127.0.0.1:9440\"", format!("\"{daemon}\"")),
        ("\"127.0.0.1:4523\"", format!("\"{control}\"")),
        ("\"127.0.0.1:4524\"", format!("\"{agent}\"")),
        ("/etc/prometheus/berth-token", token.clone()),
        (
            "/etc/prometheus/berth-agent-credential",
            agent_credential.clone(),
        ),
        ("- alerts.yml", format!("- {rules}")),
    ];
    let mut config = example.clone();
    for (from, to) in &rewrites {
        assert!(
            example.contains(from),
            "prometheus.yml no longer has the shape this test rewrites ({from}): {example}"
        );
        config = config.replace(from, to);
    }
    let file = dir.join("prometheus.yml");
    std::fs::write(&file, config).unwrap();
    promtool(&["check", "config", &file.display().to_string()], dir);
    let addr = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", file.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("prometheus starts");
    let p = Proc(child);
    assert!(
        wait_for(Duration::from_secs(60), || http_get(&addr, "/-/ready")
            .is_some_and(|(c, _)| c == 200)),
        "prometheus did not become ready; see {}",
        dir.join("prometheus.log").display()
    );
    (p, addr)
}

/// An instant query's result vector (asserting the query itself succeeded).
fn query(prom: &str, expr: &str) -> Vec<Value> {
    let v = get_json(prom, &format!("/api/v1/query?query={}", urlencode(expr)));
    assert_eq!(v["status"], "success", "{expr}: {v}");
    match &v["data"]["result"] {
        Value::Array(a) => a.clone(),
        // A scalar (`time()`) is data too.
        other => vec![other.clone()],
    }
}

/// Every PromQL query of the dashboard, with Grafana's variables given values: its panels'
/// targets (rows' nested panels included) and its query variables.
fn dashboard_queries(d: &Value) -> Vec<(String, String)> {
    fn walk(v: &Value, title: &str, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(o) => {
                let title = o.get("title").and_then(Value::as_str).unwrap_or(title);
                if let Some(Value::Array(targets)) = o.get("targets") {
                    for t in targets {
                        let expr = t["expr"].as_str().unwrap_or_else(|| {
                            panic!("panel {title}: a target without a PromQL expr")
                        });
                        out.push((title.to_string(), expr.to_string()));
                    }
                }
                for (k, child) in o {
                    if k != "targets" {
                        walk(child, title, out);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|c| walk(c, title, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&d["panels"], "", &mut out);
    for var in d["templating"]["list"].as_array().unwrap() {
        if var["type"] == "query" {
            let q = var["query"]["query"].as_str().unwrap();
            // Grafana's label_values(metric, label) asks for the metric's series.
            let metric = q
                .strip_prefix("label_values(")
                .and_then(|r| r.split(',').next())
                .unwrap_or_else(|| panic!("variable query {q}: not label_values(…)"));
            out.push((format!("variable {}", var["name"]), metric.to_string()));
        }
    }
    out.into_iter()
        .map(|(t, e)| {
            (
                t,
                e.replace("$__rate_interval", "15s")
                    .replace("$instance", ".*"),
            )
        })
        .collect()
}

/// The metric names of the table in docs/observability.md → Metrics of `berth run` (the volume
/// services' are in a part of their own).
fn readme_metrics() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(repo().join("docs/observability.md")).unwrap();
    let metrics = doc
        .split("\n## Metrics of `berth run`")
        .nth(1)
        .expect("docs/observability.md has a part on berth run's metrics");
    let metrics = metrics.split("\n## ").next().unwrap();
    metrics
        .lines()
        .filter(|l| l.starts_with("| `berth_"))
        .map(|l| l[3..].split('`').next().unwrap().to_string())
        .collect()
}

/// Rows of the exported table (docs/observability.md) that say they exist only with `--volume-control` (a gauge
/// per volume has no series without volumes); this test's daemon runs with one, and a volume.
fn readme_control_only() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(repo().join("docs/observability.md")).unwrap();
    doc.lines()
        .filter(|l| l.starts_with("| `berth_") && l.contains("with `--volume-control` only"))
        .map(|l| l[3..].split('`').next().unwrap().to_string())
        .collect()
}

fn prometheus_scrapes_berth_run_and_every_query_and_rule_evaluates() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let token = "e2e-token";
    let consul = rt.block_on(FakeAgent::start(Some(token)));
    let lab = Lab::builder().managers(1).start();
    let m = lab.manager();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    // Prometheus' own credential, for a node that does not exist (prometheus.yml says why).
    let prom_cred = dir.path().join("prometheus.cred");
    credential("prometheus", &token_file, &prom_cred);
    let node_id = lab.node_id(&m.name);
    let (_volume_services, control, agent) =
        start_volume_services(m, &node_id, dir.path(), &token_file);
    m.docker_ok(&[
        "service",
        "create",
        "--detach",
        "--quiet",
        "--name",
        "plain",
        "--replicas",
        "1",
        IMAGE,
        "sleep",
        "infinity",
    ]);
    // Two slots on one node: stateful means one slot per node, so slot 2 stays pending.
    m.docker_ok(&[
        "service",
        "create",
        "--detach",
        "--quiet",
        "--name",
        "db",
        "--replicas",
        "0",
        "--label",
        "berth.stateful=true",
        "--label",
        "berth.replicas=2",
        "--label",
        "berth.volume=db-data-{slot}",
        "--mount",
        "type=volume,source=db-data-{{.Task.Slot}},target=/data",
        IMAGE,
        "sleep",
        "infinity",
    ]);
    let (_daemon, api) = start_daemon(
        m,
        &dir.path().join("berth-state"),
        &consul.url,
        token,
        &control,
        &token_file,
    );
    let (_prom, prom) = start_prometheus(
        dir.path(),
        [&api, &control, &agent],
        [&token_file, &prom_cred],
    );

    // Consul: one instance per running task, slot services under their DNS alias.
    let passing = |name: &str| {
        let st = consul.state.lock().unwrap();
        st.services.values().any(|s| {
            s["Service"] == name
                && st
                    .checks
                    .get(&format!("service:{}", s["ID"].as_str().unwrap()))
                    .is_some_and(|c| c.status == "passing")
        })
    };
    let registered = wait_for(Duration::from_secs(90), || {
        passing("plain") && passing("db-1")
    });
    let names = |st: &berth_daemon::consul::fake::AgentState| -> Vec<String> {
        st.services
            .values()
            .map(|s| s["Service"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        registered,
        "not registered, or not passing: {:?}",
        consul.state.lock().unwrap().checks
    );
    {
        let st = consul.state.lock().unwrap();
        let mut got = names(&st);
        got.sort();
        assert_eq!(
            got,
            ["db-1", "plain"],
            "the template and its pending slot are not registered"
        );
        let db1 = st
            .services
            .values()
            .find(|s| s["Service"] == "db-1")
            .unwrap();
        let tags: Vec<&str> = db1["Tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(
            tags,
            [
                "berth",
                &format!("node={}", m.name),
                "slot=1",
                "template=db"
            ]
        );
        assert_eq!(
            db1["Address"], m.addr,
            "the address of the node the task runs on"
        );
        assert_eq!(db1["Meta"]["managed-by"], "berth");
        assert!(
            st.requests
                .iter()
                .all(|r| r.token.as_deref() == Some(token)),
            "CONSUL_HTTP_TOKEN reaches every call"
        );
    }
    let services = get_json(&api, "/v1/services");
    assert_eq!(services["last_error"], Value::Null, "{services}");
    assert_eq!(services["instances"].as_array().unwrap().len(), 2);

    // A removed service's instance goes; nothing else does.
    m.docker_ok(&["service", "rm", "plain"]);
    let gone = wait_for(Duration::from_secs(30), || {
        !names(&consul.state.lock().unwrap()).contains(&"plain".to_string())
    });
    assert!(gone, "plain was not deregistered");
    assert!(passing("db-1"));

    // Prometheus has scraped enough for every rate window, and the rules have run.
    let scraped = wait_for(Duration::from_secs(60), || {
        query(
            &prom,
            "count_over_time(berth_reconciles_total[15s]) >= 5 and on() berth_slot_running{slot=\"1\"} == 1",
        )
        .len()
            == 1
    });
    assert!(scraped, "Prometheus did not scrape berth run");
    // The volume services too, for as long as the dashboard's rate windows, with the token and
    // the credential; and berth run reads the volume's epoch from the control service.
    let volume_scraped = wait_for(Duration::from_secs(60), || {
        query(
            &prom,
            "count(up{job=~\"berth-volume-control|berth-volume-agent\"} == 1) == 2 \
             and on() min(count_over_time(up{job=~\"berth-volume-.*\"}[15s])) >= 5 \
             and on() berth_fence_epoch{job=\"berth\", volume=\"obs-data\"}",
        )
        .len()
            == 1
    });
    assert!(
        volume_scraped,
        "Prometheus did not scrape the volume services, or berth run has no epoch for obs-data: {:#?}",
        get_json(&prom, "/api/v1/targets")["data"]["activeTargets"]
    );
    let rules_evaluated = wait_for(Duration::from_secs(30), || {
        let r = get_json(&prom, "/api/v1/rules");
        r["data"]["groups"].as_array().is_some_and(|g| {
            !g.is_empty()
                && g.iter().all(|g| {
                    g["rules"].as_array().unwrap().iter().all(|r| {
                        r["lastEvaluation"]
                            .as_str()
                            .is_some_and(|t| !t.starts_with("0001"))
                    })
                })
        })
    });
    assert!(rules_evaluated, "the rules never ran");

    // Every dashboard query returns data.
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(kit("grafana/berth.json")).unwrap())
            .expect("berth.json is JSON");
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 15, "only {} queries found", queries.len());
    let empty: Vec<&(String, String)> = queries
        .iter()
        .filter(|(_, e)| query(&prom, e).is_empty())
        .collect();
    assert!(
        empty.is_empty(),
        "dashboard queries without data: {empty:#?}"
    );

    // Every alert rule loaded, healthy and evaluated; their expressions evaluate.
    let in_file: BTreeSet<String> = std::fs::read_to_string(kit("prometheus/alerts.yml"))
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(str::to_string)
        .collect();
    let rules = get_json(&prom, "/api/v1/rules");
    let mut loaded: BTreeMap<String, String> = BTreeMap::new();
    for g in rules["data"]["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            let name = r["name"].as_str().unwrap().to_string();
            assert_eq!(r["health"], "ok", "{name}: {r}");
            loaded.insert(name, r["query"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(
        loaded.keys().cloned().collect::<BTreeSet<_>>(),
        in_file,
        "Prometheus loaded every rule of alerts.yml"
    );
    let with_data: BTreeSet<&str> = loaded
        .iter()
        .filter(|(_, expr)| !query(&prom, expr).is_empty())
        .map(|(n, _)| n.as_str())
        .collect();
    for (alert, why) in [
        ("BerthSlotDown", "slot 2 of db has no node"),
        ("BerthTasksPending", "slot 2 of db is pending"),
    ] {
        assert!(with_data.contains(alert), "{alert} must see that {why}");
    }
    for alert in [
        "BerthDown",
        "BerthNoLeader",
        "BerthSeveralLeaders",
        "BerthReconcileStalled",
        "BerthInvalidTemplate",
        "BerthVolumeServiceDown",
        "BerthNodeNotHeartbeating",
        "BerthNodeSelfFenced",
        "BerthFailoverSlow",
        "BerthFailoverCommandsFailing",
        "BerthControlNoLeader",
    ] {
        assert!(
            !with_data.contains(alert),
            "{alert} has data on a healthy daemon"
        );
    }
    let pending = wait_for(Duration::from_secs(30), || {
        let a = get_json(&prom, "/api/v1/alerts");
        a["data"]["alerts"].as_array().unwrap().iter().any(|a| {
            a["labels"]["alertname"] == "BerthSlotDown"
                && a["labels"]["slot"] == "2"
                && a["state"] == "pending"
        })
    });
    assert!(
        pending,
        "Prometheus' own rule engine holds BerthSlotDown for slot 2 (pending its 2m)"
    );

    // docs/observability.md's metrics table names exactly what the daemon exports: with --volume-control and a
    // volume, the rows marked for it included.
    let (_, text) = http_get(&api, "/metrics").unwrap();
    let exported: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    let documented = readme_metrics();
    let control_only = readme_control_only();
    assert!(
        !control_only.is_empty() && control_only.is_subset(&documented),
        "docs/observability.md marks its `--volume-control` only rows in the Metrics table: {control_only:?}"
    );
    assert_eq!(
        documented, exported,
        "docs/observability.md's metrics table vs /metrics of a berth run with --volume-control"
    );
}
