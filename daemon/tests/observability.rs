//! The observability kit against the real things: a real Prometheus (Debian's package) scrapes
//! a real `berth run` on a one-node lab Swarm, with Berth's alert rules loaded; every query of
//! the Grafana dashboard returns data, every alert rule evaluates cleanly, the alerts for the
//! situation the test sets up (a stateful slot that cannot be placed) are the ones that come
//! up, and README's metrics table names exactly the metrics the daemon exports. The same daemon
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
    promtool(&["check", "config", "prometheus.yml"], &dir);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.0 GET; `None` when nothing answers.
fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
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

fn start_daemon(m: &LabNode, state: &Path, consul: &str, token: &str) -> (Proc, String) {
    let api = format!("127.0.0.1:{}", free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["run", "--docker", &m.engine.docker_host(), "--resync", "1s"])
        .args(["--listen", &api, "--consul", consul, "--consul-ttl", "10s"])
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

/// Prometheus on the kit's own prometheus.yml, pointed at `target`, scraping and evaluating
/// every second.
fn start_prometheus(dir: &Path, target: &str) -> (Proc, String) {
    let example = std::fs::read_to_string(kit("prometheus/prometheus.yml")).unwrap();
    let rules = kit("prometheus/alerts.yml");
    let config = example
        .replace("15s", "1s")
        .replace("127.0.0.1:9440", target)
        .replace("- alerts.yml", &format!("- {}", rules.display()));
    assert!(
        config.contains(target) && config.contains(&rules.display().to_string()),
        "prometheus.yml no longer has the shape this test rewrites: {config}"
    );
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

/// The metric names of README's Operations section: (exported, planned), from its two tables.
fn readme_metrics() -> (BTreeSet<String>, BTreeSet<String>) {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let ops = readme
        .split("\n## Operations")
        .nth(1)
        .expect("README has an Operations section");
    let ops = ops.split("\n## ").next().unwrap();
    let metrics = ops
        .split("\n### Metrics")
        .nth(1)
        .expect("Operations has a Metrics part");
    let metrics = metrics.split("\n### ").next().unwrap();
    let (exported, planned) = metrics
        .split_once("\nPlanned")
        .expect("the planned metrics follow the exported ones");
    let names = |t: &str| -> BTreeSet<String> {
        t.lines()
            .filter(|l| l.starts_with("| `berth_"))
            .map(|l| l[3..].split('`').next().unwrap().to_string())
            .collect()
    };
    (names(exported), names(planned))
}

/// Rows of README's exported table that say they exist only with `--volume-control` (a gauge
/// per volume has no series without volumes); this test's daemon runs without one.
fn readme_control_only() -> BTreeSet<String> {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    readme
        .lines()
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
    let (_daemon, api) = start_daemon(m, dir.path(), &consul.url, token);
    let (_prom, prom) = start_prometheus(dir.path(), &api);

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

    // README's metrics table names exactly what the daemon exports.
    let (_, text) = http_get(&api, "/metrics").unwrap();
    let exported: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    let (documented, planned) = readme_metrics();
    let control_only = readme_control_only();
    let expected: BTreeSet<String> = documented.difference(&control_only).cloned().collect();
    assert_eq!(
        expected, exported,
        "README's Operations metrics table vs /metrics (rows marked `--volume-control` only left out)"
    );
    assert!(!planned.is_empty(), "{planned:?}");
    assert!(
        planned.is_disjoint(&exported),
        "a planned metric is exported now: move it to the table above"
    );
}
