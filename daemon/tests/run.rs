//! `berth run` on a real Swarm of its own (a manager and two workers, dockerds in network
//! namespaces): stateful templates run as one pinned service per slot, from the compose form a
//! user writes; a re-deploy and a restarted daemon change nothing; a template change rolls out
//! within `berth.max-unavailable`; removing the template removes its slot services and never a
//! volume; a service without `berth.*` labels is never touched. Two daemons with `--consul`
//! (against the documented-shapes fake agent) elect one leader, and a stopped leader hands over.
//! Three daemons with `--elect` through a replicated control service (three Raft members): one
//! leads; killed (SIGKILL), another takes over; the control leader killed, the lock stays with
//! the daemon that holds it.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_daemon::consul::fake::FakeAgent;
use berth_lab::harness::{self, Test};
use berth_lab::swarm::IMAGE;
use berth_lab::{Lab, LabNode, Need, wait_for};
use serde_json::Value;

fn main() {
    harness::run(
        &[Need::Docker, Need::Root, Need::LabTools],
        vec![
            Test {
                name: "stateful_templates_run_as_pinned_slot_services",
                body: stateful_templates_run_as_pinned_slot_services,
            },
            Test {
                name: "two_daemons_elect_one_leader_and_a_stopped_leader_hands_over",
                body: two_daemons_elect_one_leader_and_a_stopped_leader_hands_over,
            },
            Test {
                name: "three_daemons_elect_through_a_replicated_control_and_outlive_both_leaders",
                body: three_daemons_elect_through_a_replicated_control_and_outlive_both_leaders,
            },
        ],
    )
}

/// The cluster token every test daemon is started with.
const API_TOKEN: &str = "run-test-token";

/// `berth run` as a child process, stopped with SIGTERM on drop.
struct Daemon {
    child: Child,
    api: String,
}

impl Daemon {
    fn start(m: &LabNode, state: &std::path::Path) -> Daemon {
        Daemon::start_with(m, state, &[])
    }

    fn start_with(m: &LabNode, state: &std::path::Path, extra: &[&str]) -> Daemon {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // The cluster token its API asks for (and the control service, when it has one).
        let token = state.join("api-token");
        std::fs::write(&token, format!("{API_TOKEN}\n")).expect("token file");
        let child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["run", "--docker", &m.engine.docker_host(), "--resync", "1s"])
            .args(["--listen", &format!("127.0.0.1:{port}"), "--state-dir"])
            .arg(state)
            .arg("--token-file")
            .arg(&token)
            .args(extra)
            .stdin(Stdio::null())
            .spawn()
            .expect("berth run starts");
        let d = Daemon {
            child,
            api: format!("127.0.0.1:{port}"),
        };
        assert!(
            wait_for(Duration::from_secs(30), || d.get("/v1/ready").is_some()),
            "berth run did not become ready"
        );
        d
    }

    /// GET on the daemon's API with the cluster token; `None` unless 200.
    fn get(&self, path: &str) -> Option<String> {
        let (head, body) = self.get_as(path, Some(API_TOKEN))?;
        (head.split(' ').nth(1) == Some("200")).then_some(body)
    }

    /// GET on the daemon's API presenting `token` (if any): (head, body).
    fn get_as(&self, path: &str, token: Option<&str>) -> Option<(String, String)> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&self.api).ok()?;
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n{auth}\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        Some((head.to_string(), body.to_string()))
    }

    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let done = wait_for(Duration::from_secs(10), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        assert!(done, "berth run stops on SIGTERM");
        let st = self.child.wait().expect("wait");
        assert!(st.success(), "berth run exits 0 on SIGTERM: {st}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Each service's name → (ID, version index, labels), from the manager.
fn services(m: &LabNode) -> BTreeMap<String, (String, u64, Value)> {
    let ids = m.docker_ok(&["service", "ls", "-q"]);
    if ids.is_empty() {
        return BTreeMap::new();
    }
    let mut args = vec!["service", "inspect"];
    args.extend(ids.lines());
    let v: Value = serde_json::from_str(&m.docker_ok(&args)).expect("inspect JSON");
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["Spec"]["Name"].as_str().unwrap().to_string(),
                (
                    s["ID"].as_str().unwrap().to_string(),
                    s["Version"]["Index"].as_u64().unwrap(),
                    s["Spec"]["Labels"].clone(),
                ),
            )
        })
        .collect()
}

/// Running tasks: service name → hostnames of the nodes they run on.
fn running(m: &LabNode, names: &BTreeMap<String, String>) -> BTreeMap<String, Vec<String>> {
    let svcs: BTreeMap<String, String> = services(m)
        .into_iter()
        .map(|(name, (id, _, _))| (id, name))
        .collect();
    let tasks: Value = serde_json::from_str(&m.api_get("/tasks")).expect("tasks JSON");
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in tasks.as_array().unwrap() {
        if t["Status"]["State"] == "running" && t["DesiredState"] == "running" {
            let svc = svcs
                .get(t["ServiceID"].as_str().unwrap())
                .cloned()
                .unwrap_or_default();
            let node = t["NodeID"].as_str().unwrap();
            out.entry(svc)
                .or_default()
                .push(names.get(node).cloned().unwrap_or_else(|| node.to_string()));
        }
    }
    out
}

const STACK: &str = r#"
version: "3.8"
services:
  db:
    image: IMAGE
    command: ["append", "/data/log", "started", "+", "sleep", "infinity"]
    environment:
      GENERATION: "1"
    volumes:
      - type: volume
        source: db-data
        target: /data
    deploy:
      replicas: 0
      labels:
        berth.stateful: "true"
        berth.replicas: "2"
        berth.volume: "db-data-{slot}"
        berth.max-unavailable: "1"
      placement:
        constraints: [node.role==worker]
      update_config:
        order: stop-first
volumes:
  db-data:
    name: "db-data-{{.Task.Slot}}"
"#;

fn deploy(m: &LabNode, dir: &std::path::Path, generation: u32) {
    let file = dir.join("stack.yml");
    std::fs::write(
        &file,
        STACK.replace("IMAGE", IMAGE).replace(
            "GENERATION: \"1\"",
            &format!("GENERATION: \"{generation}\""),
        ),
    )
    .unwrap();
    m.docker_ok(&[
        "stack",
        "deploy",
        "--resolve-image",
        "never",
        "-c",
        &file.display().to_string(),
        "app",
    ]);
}

fn stateful_templates_run_as_pinned_slot_services() {
    let lab = Lab::builder().managers(1).workers(2).start();
    let m = lab.manager();
    let names: BTreeMap<String, String> = lab
        .nodes
        .iter()
        .map(|n| (lab.node_id(&n.name), n.name.clone()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    // A service Berth must never touch.
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
    let mut daemon = Daemon::start(m, dir.path());
    deploy(m, dir.path(), 1);

    // Two slot services, one per worker, each running.
    let settled = wait_for(Duration::from_secs(120), || {
        let r = running(m, &names);
        r.get("app_db-1").is_some_and(|n| n.len() == 1)
            && r.get("app_db-2").is_some_and(|n| n.len() == 1)
    });
    let r = running(m, &names);
    assert!(settled, "slot services never ran: {r:?}");
    assert!(
        !r.contains_key("app_db"),
        "the template itself runs nothing: {r:?}"
    );
    let mut hosts = vec![r["app_db-1"][0].clone(), r["app_db-2"][0].clone()];
    hosts.sort();
    let workers: Vec<String> = lab.nodes[1..].iter().map(|n| n.name.clone()).collect();
    assert_eq!(
        hosts, workers,
        "one slot per worker (stateful ⇒ anti-affinity)"
    );
    let svc = services(m);
    let slot1 = &svc["app_db-1"].2;
    assert_eq!(slot1["berth.slot"], "1");
    assert_eq!(
        slot1["berth.owner"].as_str(),
        Some(svc["app_db"].0.as_str())
    );
    assert!(slot1.get("com.docker.stack.namespace").is_none());
    let plain_before = svc["plain"].1;

    // `berth plan --live` reads the same Swarm through the Engine API: the running slots fold
    // into their template and are planned where they run, nothing created anew.
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["plan", "--live", "--docker", &m.engine.docker_host()])
        .output()
        .expect("berth plan --live runs");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "berth plan --live: {}\n{table}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        table.contains("app_db") && table.contains("(0 new,"),
        "the live plan re-creates running slots:\n{table}"
    );

    // The plan and the metrics need the cluster token; the probes do not.
    for path in [
        "/v1/plan",
        "/metrics",
        "/v1/failovers",
        "/v1/explain/app_db",
    ] {
        for token in [None, Some("wrong")] {
            let (head, _) = daemon.get_as(path, token).expect("an answer");
            assert_eq!(
                head.split(' ').nth(1),
                Some("401"),
                "{path} {token:?}: {head}"
            );
            assert!(
                head.to_ascii_lowercase()
                    .contains("www-authenticate: bearer realm=\"berth\""),
                "{path}: {head}"
            );
        }
    }
    let (head, _) = daemon.get_as("/v1/health", None).expect("an answer");
    assert_eq!(head.split(' ').nth(1), Some("200"), "{head}");

    // The API answers with the plan, and the metrics name what Berth runs.
    let plan: Value = serde_json::from_str(&daemon.get("/v1/plan").unwrap()).unwrap();
    assert_eq!(
        plan["placements"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["service"] == "app_db")
            .count(),
        2,
        "{plan}"
    );
    let metrics = daemon.get("/metrics").unwrap();
    assert!(metrics.contains("berth_templates 1"), "{metrics}");
    assert!(metrics.contains("berth_slot_services 2"), "{metrics}");

    // A re-deploy of the same file and a restarted daemon change nothing.
    let versions = |m: &LabNode| -> BTreeMap<String, u64> {
        services(m)
            .into_iter()
            .map(|(n, (_, v, _))| (n, v))
            .collect()
    };
    let before = versions(m);
    deploy(m, dir.path(), 1);
    daemon.stop();
    let mut daemon = Daemon::start(m, dir.path());
    std::thread::sleep(Duration::from_secs(4));
    let after = versions(m);
    for name in ["app_db-1", "app_db-2", "plain"] {
        assert_eq!(before[name], after[name], "{name} was modified");
    }
    assert_eq!(after.len(), before.len(), "no duplicate service: {after:?}");

    // A changed template rolls out one slot at a time (max-unavailable 1), on the same nodes.
    deploy(m, dir.path(), 2);
    let start = Instant::now();
    let mut worst = 0;
    let rolled = loop {
        let svc = services(m);
        let r = running(m, &names);
        let up = ["app_db-1", "app_db-2"]
            .iter()
            .filter(|s| r.get(**s).is_some_and(|n| n.len() == 1))
            .count();
        worst = worst.max(2 - up);
        let hash_of = |n: &str| svc[n].2["berth.template-hash"].clone();
        let updated = hash_of("app_db-1") != slot1["berth.template-hash"]
            && hash_of("app_db-2") != slot1["berth.template-hash"];
        if updated && up == 2 {
            break true;
        }
        if start.elapsed() > Duration::from_secs(120) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        rolled,
        "the rollout did not finish: {:?}",
        running(m, &names)
    );
    assert!(worst <= 1, "two slots were down at once during the rollout");
    let r = running(m, &names);
    let mut after_hosts = vec![r["app_db-1"][0].clone(), r["app_db-2"][0].clone()];
    after_hosts.sort();
    assert_eq!(after_hosts, hosts, "a rollout changes what runs, not where");
    assert_eq!(services(m)["plain"].1, plain_before, "plain was modified");

    // Removing the template removes its slot services, and no volume.
    m.docker_ok(&["service", "rm", "app_db"]);
    let gone = wait_for(Duration::from_secs(60), || {
        let s = services(m);
        !s.contains_key("app_db-1") && !s.contains_key("app_db-2")
    });
    assert!(
        gone,
        "slot services outlived their template: {:?}",
        services(m).keys()
    );
    for w in &lab.nodes[1..] {
        let vols = w.docker_ok(&["volume", "ls", "-q"]);
        assert!(
            vols.lines().any(|v| v.starts_with("db-data-")),
            "{}: the slot's volume must stay: {vols}",
            w.name
        );
    }
    daemon.stop();
}

/// The value of an unlabelled metric on the daemon's `/metrics`.
fn metric(d: &Daemon, name: &str) -> Option<f64> {
    d.get("/metrics")?
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} "))?.trim().parse().ok())
}

fn two_daemons_elect_one_leader_and_a_stopped_leader_hands_over() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let consul = rt.block_on(FakeAgent::start(None));
    let lab = Lab::builder().managers(1).start();
    let m = lab.manager();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let args = ["--consul", consul.url.as_str(), "--consul-ttl", "10s"];
    let mut a = Daemon::start_with(m, da.path(), &args);
    assert!(
        wait_for(Duration::from_secs(30), || metric(&a, "berth_leader")
            == Some(1.0)),
        "the first daemon leads"
    );
    let b = Daemon::start_with(m, db.path(), &args);
    // A standby names the leader from its first election round on, which may come after its
    // API answers.
    let ready_of = |d: &Daemon| -> Value {
        serde_json::from_str(&d.get("/v1/ready").expect("standby ready")).unwrap()
    };
    wait_for(Duration::from_secs(15), || {
        ready_of(&b)["leader"].as_str().is_some()
    });
    let ready = ready_of(&b);
    assert_eq!(ready["status"], "standby", "{ready}");
    assert!(
        ready["leader"].as_str().is_some_and(|l| l.contains(&a.api)),
        "the standby names the leader: {ready}"
    );
    assert_eq!(metric(&b, "berth_leader"), Some(0.0));
    assert_eq!(metric(&a, "berth_leader"), Some(1.0));
    let standby_passes = metric(&b, "berth_reconciles_total");
    assert_eq!(standby_passes, Some(0.0), "a standby makes no pass");

    // SIGTERM: the leader releases the key and destroys its session; the standby takes over at
    // its next round (every TTL/3, 3.3 s), with no lock-delay.
    let stopped = Instant::now();
    a.stop();
    assert!(
        wait_for(Duration::from_secs(30), || metric(&b, "berth_leader")
            == Some(1.0)),
        "the standby takes over"
    );
    let took = stopped.elapsed();
    eprintln!("takeover after the leader's SIGTERM: {took:?}");
    assert!(
        wait_for(Duration::from_secs(30), || b
            .get("/v1/ready")
            .is_some_and(|r| r.contains("\"ready\""))),
        "the new leader makes a pass"
    );
    let st = consul.state.lock().unwrap();
    assert_eq!(st.sessions.len(), 1, "the old leader destroyed its session");
    assert_eq!(
        st.holder("berth/leader"),
        st.sessions.keys().next().map(String::as_str),
        "the remaining session holds the key"
    );
    // The failover journal is in Consul, not in either daemon's state directory, and the new
    // leader's writes of it are fenced by its session.
    let journal = st
        .kv
        .get("berth/executor")
        .expect("the leaders' passes wrote the failover journal in Consul");
    let journal: Value = serde_json::from_slice(&journal.value).expect("the journal is JSON");
    assert!(
        journal.get("inflight").is_some(),
        "an executor state: {journal}"
    );
    let fenced = st
        .requests
        .iter()
        .rfind(|r| r.path == "/v1/txn")
        .expect("journal writes are transactions");
    assert_eq!(fenced.body[0]["KV"]["Verb"], "check-session");
    assert_eq!(
        fenced.body[0]["KV"]["Session"].as_str(),
        st.holder("berth/leader"),
        "fenced by the leader's session"
    );
    assert_eq!(fenced.body[1]["KV"]["Key"], "berth/executor");
    for dir in [&da, &db] {
        assert!(!dir.path().join("executor.json").exists());
    }
}

/// One in-process member of a replicated control service.
struct Member {
    replica: berth_volume_control::raft::Replica,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Member {
    async fn start(id: u64, addrs: &[String], dir: &std::path::Path) -> Member {
        use berth_control_model::liveness::Timing;
        use berth_volume_control::{api, replicated};
        let peers = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| (i as u64 + 1, a.clone()))
            .collect();
        let settings = berth_volume_control::raft::Settings::new(id, peers);
        let replica = berth_volume_control::raft::Replica::start(dir, settings, None)
            .await
            .expect("raft member");
        let c = std::sync::Arc::new(
            api::Control::open_replicated(replica.clone(), None, Timing::default())
                .await
                .expect("control"),
        );
        let l = tokio::net::TcpListener::bind(&addrs[id as usize - 1])
            .await
            .expect("bind");
        let lead = tokio::spawn(replicated::lead(c.clone()));
        let serve = tokio::spawn(async move {
            let _ = api::serve(l, c, std::future::pending()).await;
        });
        Member {
            replica,
            tasks: vec![lead, serve],
        }
    }

    /// Gone at once, as a crash leaves it: its API and its Raft member stop.
    async fn kill(self) {
        for t in &self.tasks {
            t.abort();
        }
        let _ = self.replica.raft.shutdown().await;
    }
}

fn three_daemons_elect_through_a_replicated_control_and_outlive_both_leaders() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let addrs: Vec<String> = (0..3)
        .map(|_| {
            let p = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            format!("127.0.0.1:{p}")
        })
        .collect();
    let mut members: Vec<Option<Member>> = (0..3)
        .map(|i| Some(rt.block_on(Member::start(i as u64 + 1, &addrs, dirs[i].path()))))
        .collect();
    let serving = |members: &[Option<Member>]| {
        members.iter().position(|m| {
            m.as_ref()
                .is_some_and(|m| m.replica.gate.serving().is_some())
        })
    };
    assert!(
        wait_for(Duration::from_secs(30), || serving(&members).is_some()),
        "a control member serves"
    );
    let urls = addrs
        .iter()
        .map(|a| format!("http://{a}"))
        .collect::<Vec<_>>()
        .join(",");

    let lab = Lab::builder().managers(1).start();
    let m = lab.manager();
    let states: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let args = [
        "--volume-control",
        urls.as_str(),
        "--elect",
        "--elect-ttl",
        "3s",
    ];
    let mut daemons: Vec<Option<Daemon>> = states
        .iter()
        .map(|s| Some(Daemon::start_with(m, s.path(), &args)))
        .collect();
    let leaders = |daemons: &[Option<Daemon>]| -> Vec<usize> {
        (0..daemons.len())
            .filter(|i| {
                daemons[*i]
                    .as_ref()
                    .is_some_and(|d| metric(d, "berth_leader") == Some(1.0))
            })
            .collect()
    };
    assert!(
        wait_for(Duration::from_secs(30), || leaders(&daemons).len() == 1),
        "one daemon leads"
    );
    let first = leaders(&daemons)[0];
    for (i, d) in daemons.iter().enumerate() {
        if i != first {
            let d = d.as_ref().unwrap();
            let ready: Value = serde_json::from_str(&d.get("/v1/ready").expect("ready")).unwrap();
            assert_eq!(ready["status"], "standby", "{ready}");
        }
    }

    // The leading daemon killed: another takes the lock once its TTL has run out.
    let killed = Instant::now();
    let mut gone = daemons[first].take().unwrap();
    let _ = gone.child.kill();
    let _ = gone.child.wait();
    assert!(
        wait_for(Duration::from_secs(30), || leaders(&daemons).len() == 1),
        "another daemon takes over"
    );
    let second = leaders(&daemons)[0];
    eprintln!(
        "daemon takeover after SIGKILL of the leader (TTL 3 s): {:?}",
        killed.elapsed()
    );

    // The control leader killed: the lock stays with the daemon that holds it.
    let ctl = serving(&members).expect("a serving control member");
    let victim = members[ctl].take().unwrap();
    rt.block_on(victim.kill());
    let until = Instant::now() + Duration::from_secs(9);
    while Instant::now() < until {
        let l = leaders(&daemons);
        assert!(
            l.iter().all(|i| *i == second),
            "daemon(s) {l:?} lead while {second} holds the lock"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        wait_for(Duration::from_secs(10), || leaders(&daemons)
            == vec![second]),
        "the lock's holder leads again after the control leader's death"
    );
    assert!(
        serving(&members).is_some_and(|i| i != ctl),
        "another control member serves"
    );
    drop(daemons);
    for m in members.into_iter().flatten() {
        rt.block_on(m.kill());
    }
}
