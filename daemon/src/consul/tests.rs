//! What Berth registers (pure, from Docker's own JSON shapes), and contract tests of the sync
//! against [`FakeAgent`], which answers in Consul's documented request and response shapes.

use std::time::Duration;

use serde_json::{Value, json};

use super::fake::FakeAgent;
use super::*;
use crate::docker::SwarmState;
use crate::metrics::Metrics;

fn node(id: &str, host: &str, state: &str, addr: &str) -> Value {
    json!({"ID": id, "Description": {"Hostname": host},
           "Spec": {"Role": "worker", "Availability": "active"},
           "Status": {"State": state, "Addr": addr}})
}

fn service(id: &str, name: &str, labels: Value) -> Value {
    json!({"ID": id, "Version": {"Index": 1},
           "Spec": {"Name": name, "Labels": labels,
                    "TaskTemplate": {"ContainerSpec": {"Image": "img"}},
                    "Mode": {"Replicated": {"Replicas": 1}}}})
}

fn task(id: &str, service: &str, node: &str, state: &str, desired: &str) -> Value {
    json!({"ID": id, "ServiceID": service, "NodeID": node, "Slot": 1,
           "Status": {"State": state, "Message": state},
           "DesiredState": desired})
}

fn de<T: serde::de::DeserializeOwned>(v: Vec<Value>) -> Vec<T> {
    serde_json::from_value(Value::Array(v)).expect("Docker's shapes")
}

fn observed(nodes: Vec<Value>, services: Vec<Value>, tasks: Vec<Value>) -> Observed {
    Observed::new(SwarmState {
        nodes: de(nodes),
        services: de(services),
        tasks: de(tasks),
    })
}

/// A stack `app` with a stateless `api` (port 8080 through the mesh), a stateful template `db`
/// of two slots (slot 1 running on n1), and `exporter` outside any stack with a host-mode port.
fn swarm() -> Observed {
    let mut api = service(
        "svc-api",
        "app_api",
        json!({"com.docker.stack.namespace": "app"}),
    );
    api["Endpoint"] = json!({"Ports": [
        {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"}]});
    let mut template = service(
        "svc-db",
        "app_db",
        json!({"com.docker.stack.namespace": "app", "berth.stateful": "true",
               "berth.replicas": "2", "berth.volume": "db-data-{slot}"}),
    );
    template["Spec"]["Mode"] = json!({"Replicated": {"Replicas": 0}});
    template["Spec"]["TaskTemplate"]["ContainerSpec"]["Mounts"] =
        json!([{"Type": "volume", "Source": "db-data-{{.Task.Slot}}", "Target": "/data"}]);
    let slot = service(
        "svc-db-1",
        "app_db-1",
        json!({"berth.owner": "svc-db", "berth.owner-name": "app_db", "berth.slot": "1",
               "berth.stack": "app", "berth.template-hash": "x"}),
    );
    let exporter = service("svc-exp", "exporter", json!({}));
    let mut exp_task = task("t-exp", "svc-exp", "n2", "running", "running");
    exp_task["Status"]["PortStatus"] = json!({"Ports": [
        {"Protocol": "tcp", "TargetPort": 9100, "PublishedPort": 9100, "PublishMode": "host"}]});
    observed(
        vec![
            node("n1", "w1", "ready", "10.0.0.11"),
            node("n2", "w2", "ready", "10.0.0.12"),
        ],
        vec![api, template, slot, exporter],
        vec![
            task("t-api-1", "svc-api", "n1", "running", "running"),
            task("t-api-2", "svc-api", "n2", "running", "running"),
            task("t-db-1", "svc-db-1", "n1", "running", "running"),
            exp_task,
        ],
    )
}

#[test]
fn every_task_of_stateless_and_slot_services_under_its_dns_name() {
    let got = instances(&swarm());
    let summary: Vec<(String, String, String, Option<u16>)> = got
        .iter()
        .map(|i| (i.id.clone(), i.name.clone(), i.address.clone(), i.port))
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "berth-t-api-1".into(),
                "api".into(),
                "10.0.0.11".into(),
                Some(8080)
            ),
            (
                "berth-t-api-2".into(),
                "api".into(),
                "10.0.0.12".into(),
                Some(8080)
            ),
            (
                "berth-t-db-1".into(),
                "db-1".into(),
                "10.0.0.11".into(),
                None
            ),
            (
                "berth-t-exp".into(),
                "exporter".into(),
                "10.0.0.12".into(),
                Some(9100)
            ),
        ],
        "the template itself is not registered; its slot is, as its DNS alias"
    );
    let db = &got[2];
    assert_eq!(
        db.tags,
        ["berth", "node=w1", "slot=1", "stack=app", "template=db"]
    );
    assert_eq!(db.meta[MANAGED_BY], BERTH);
    assert_eq!(db.meta["swarm-service"], "app_db-1");
    assert_eq!(db.meta["swarm-task-id"], "t-db-1");
    assert_eq!(db.meta["slot"], "1");
    assert_eq!(db.status, CheckStatus::Passing);
    assert_eq!(db.output, "task running on w1");
    assert_eq!(got[3].tags, ["berth", "node=w2"], "no stack, no slot");
}

#[test]
fn the_check_follows_the_task_and_its_node() {
    let mut t = task("t-start", "svc", "n1", "starting", "running");
    t["Status"]["Err"] = json!("pulling image");
    let o = observed(
        vec![
            node("n1", "w1", "ready", "10.0.0.11"),
            node("n2", "w2", "down", "10.0.0.12"),
        ],
        vec![service("svc", "web", json!({}))],
        vec![
            t,
            task("t-lost", "svc", "n2", "running", "running"),
            task("t-old", "svc", "n1", "running", "shutdown"),
            task("t-failed", "svc", "n1", "failed", "shutdown"),
            json!({"ID": "t-unassigned", "ServiceID": "svc", "Status": {"State": "pending"},
                   "DesiredState": "running"}),
        ],
    );
    let got = instances(&o);
    let ids: Vec<&str> = got.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(
        ids,
        ["berth-t-lost", "berth-t-start"],
        "tasks Swarm stops, and tasks on no node yet, are not registered"
    );
    assert_eq!(got[0].status, CheckStatus::Critical);
    assert_eq!(got[0].output, "node w2 is down (Swarm's view)");
    assert_eq!(got[1].status, CheckStatus::Critical);
    assert_eq!(got[1].output, "task starting on w1: pulling image");
}

#[test]
fn an_orphan_slot_keeps_its_alias_and_a_manager_its_real_address() {
    let mut m = node("m1", "mgr", "ready", "0.0.0.0");
    m["ManagerStatus"] =
        json!({"Leader": true, "Reachability": "reachable", "Addr": "10.0.0.5:2377"});
    let o = observed(
        vec![m],
        vec![service(
            "svc-db-3",
            "app_db-3",
            json!({"berth.owner": "gone", "berth.owner-name": "app_db", "berth.slot": "3",
                   "berth.stack": "app"}),
        )],
        vec![task("t3", "svc-db-3", "m1", "running", "running")],
    );
    let got = instances(&o);
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].name, "db-3",
        "template gone: the alias comes from the slot's own labels"
    );
    assert_eq!(
        got[0].address, "10.0.0.5",
        "0.0.0.0 is a listen address, not where the node is"
    );
}

fn instance(id: &str, name: &str, status: CheckStatus) -> Instance {
    Instance {
        id: id.to_string(),
        name: name.to_string(),
        address: "10.0.0.11".to_string(),
        port: Some(8080),
        tags: vec!["berth".into(), "node=w1".into()],
        meta: BTreeMap::from([
            (MANAGED_BY.to_string(), BERTH.to_string()),
            ("swarm-task-id".to_string(), id.to_string()),
        ]),
        status,
        output: format!("{name} is {}", status.as_str()),
    }
}

fn registrar(url: &str, token: Option<&str>) -> (Registrar, Metrics) {
    let metrics = Metrics::new();
    let agent = Agent::new(url, token.map(str::to_string), Duration::from_secs(5)).expect("client");
    (
        Registrar::new(agent, Duration::from_secs(60), metrics.clone()),
        metrics,
    )
}

#[tokio::test]
async fn registers_each_instance_with_a_ttl_check_in_consuls_documented_shapes() {
    let fake = FakeAgent::start(Some("s3cret")).await;
    let (r, _) = registrar(&fake.url, Some("s3cret"));
    let want = vec![
        instance("berth-t1", "api", CheckStatus::Passing),
        instance("berth-t2", "api", CheckStatus::Critical),
    ];
    let report = r.sync(&want, false).await.expect("sync");
    assert_eq!(report.registered, ["berth-t1", "berth-t2"]);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    {
        let st = fake.state.lock().unwrap();
        assert!(
            st.requests
                .iter()
                .all(|q| q.token.as_deref() == Some("s3cret")),
            "every call carries the ACL token"
        );
        let reg = st
            .requests
            .iter()
            .find(|q| q.path == "/v1/agent/service/register" && q.body["ID"] == "berth-t1")
            .expect("a register call");
        assert_eq!(reg.method, "PUT");
        let b = &reg.body;
        assert_eq!(b["Name"], "api");
        assert_eq!(b["Address"], "10.0.0.11");
        assert_eq!(b["Port"], 8080);
        assert_eq!(b["Tags"], json!(["berth", "node=w1"]));
        assert_eq!(b["Meta"][MANAGED_BY], BERTH);
        assert_eq!(b["Check"]["CheckID"], "service:berth-t1");
        assert_eq!(b["Check"]["TTL"], "60s");
        assert_eq!(b["Check"]["Status"], "passing");
        assert_eq!(st.checks["service:berth-t2"].status, "critical");
        assert_eq!(
            st.checks["service:berth-t2"].output, "api is critical",
            "the reason reaches the check's output"
        );
        assert_eq!(st.services["berth-t1"]["Service"], "api");
    }
    let agent = Agent::new(&fake.url, Some("s3cret".into()), Duration::from_secs(5)).unwrap();
    let checks = agent.checks().await.expect("list checks");
    let c2 = &checks["service:berth-t2"];
    assert_eq!(
        (
            c2.service_id.as_str(),
            c2.status.as_str(),
            c2.output.as_str()
        ),
        ("berth-t2", "critical", "api is critical")
    );
}

#[tokio::test]
async fn a_pass_over_an_unchanged_swarm_only_refreshes_the_checks() {
    let fake = FakeAgent::start(None).await;
    let (r, _) = registrar(&fake.url, None);
    let want = vec![
        instance("berth-t1", "api", CheckStatus::Passing),
        instance("berth-t2", "db-1", CheckStatus::Passing),
    ];
    r.sync(&want, false).await.expect("first sync");
    let before = fake.state.lock().unwrap().requests.len();
    let report = r.sync(&want, false).await.expect("second sync");
    assert!(report.registered.is_empty() && report.deregistered.is_empty());
    assert_eq!(report.refreshed, 2);
    let st = fake.state.lock().unwrap();
    let mut writes: Vec<String> = st.requests[before..]
        .iter()
        .filter(|q| q.method != "GET")
        .map(|q| format!("{} {}", q.method, q.path))
        .collect();
    writes.sort();
    assert_eq!(
        writes,
        [
            "PUT /v1/agent/check/update/service:berth-t1",
            "PUT /v1/agent/check/update/service:berth-t2"
        ]
    );
}

#[tokio::test]
async fn gone_tasks_are_deregistered_and_nobody_elses_services_ever() {
    let fake = FakeAgent::start(None).await;
    fake.add_foreign("redis", "redis", &[]);
    // Tagged `berth` by someone, but without Berth's mark: not Berth's to remove.
    fake.add_foreign("lookalike", "api", &["berth"]);
    let (r, metrics) = registrar(&fake.url, None);
    let one = instance("berth-t1", "api", CheckStatus::Passing);
    let two = instance("berth-t2", "api", CheckStatus::Passing);
    r.sync(&[one.clone(), two], false).await.expect("sync");
    let report = r.sync(&[one], false).await.expect("sync");
    assert_eq!(report.deregistered, ["berth-t2"]);
    let st = fake.state.lock().unwrap();
    let ids: Vec<&String> = st.services.keys().collect();
    assert_eq!(ids, ["berth-t1", "lookalike", "redis"]);
    assert!(!st.checks.contains_key("service:berth-t2"));
    drop(st);
    let text = metrics.render();
    assert!(
        text.contains("berth_consul_changes_total{op=\"deregister\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("berth_consul_changes_total{op=\"register\"} 2"),
        "{text}"
    );
}

#[tokio::test]
async fn a_changed_instance_or_a_lost_check_is_registered_again() {
    let fake = FakeAgent::start(None).await;
    let (r, _) = registrar(&fake.url, None);
    let mut a = instance("berth-t1", "api", CheckStatus::Passing);
    let b = instance("berth-t2", "api", CheckStatus::Passing);
    r.sync(&[a.clone(), b.clone()], false).await.expect("sync");
    a.port = Some(9090);
    fake.state.lock().unwrap().checks.remove("service:berth-t2");
    let report = r.sync(&[a, b], false).await.expect("sync");
    assert_eq!(report.registered, ["berth-t1", "berth-t2"]);
    let st = fake.state.lock().unwrap();
    assert_eq!(st.services["berth-t1"]["Port"], 9090);
    assert_eq!(st.checks["service:berth-t2"].status, "passing");
}

#[tokio::test]
async fn a_dry_run_writes_nothing() {
    let fake = FakeAgent::start(None).await;
    let (r, _) = registrar(&fake.url, None);
    let report = r
        .sync(&[instance("berth-t1", "api", CheckStatus::Passing)], true)
        .await
        .expect("sync");
    assert_eq!(report.registered, ["berth-t1"], "what it would register");
    assert!(fake.state.lock().unwrap().writes().is_empty());
}

#[tokio::test]
async fn a_refused_token_is_reported_with_consuls_answer() {
    let fake = FakeAgent::start(Some("right")).await;
    let (r, _) = registrar(&fake.url, Some("wrong"));
    let e = r.sync(&[], false).await.expect_err("403");
    assert!(
        matches!(&e, ConsulError::Api { code: 403, message, .. } if message == "Permission denied"),
        "{e}"
    );
}

#[tokio::test]
async fn consul_down_fails_the_sync_never_the_pass() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (r, metrics) = registrar(&format!("http://127.0.0.1:{port}"), None);
    r.pass(&swarm(), false).await;
    let st = r.status();
    let st = st.lock().unwrap();
    assert!(st.last_error.is_some());
    assert!(st.last_success.is_none());
    assert_eq!(st.instances.len(), 4, "what it wants is known all the same");
    assert!(
        metrics
            .render()
            .contains("berth_consul_sync_errors_total 1")
    );
}

#[tokio::test]
async fn a_hung_agent_costs_one_timeout() {
    // Accepts connections and never answers.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    let agent = Agent::new(&url, None, Duration::from_millis(200)).unwrap();
    let r = Registrar::new(agent, Duration::from_secs(60), Metrics::new());
    let e = r.sync(&[], false).await.expect_err("no answer");
    assert!(matches!(e, ConsulError::Timeout { .. }), "{e}");
}

#[tokio::test]
async fn a_pass_registers_the_observed_swarm_and_counts_by_status() {
    let fake = FakeAgent::start(None).await;
    let (r, metrics) = registrar(&fake.url, None);
    r.pass(&swarm(), false).await;
    let st = fake.state.lock().unwrap();
    let names: Vec<&str> = st
        .services
        .values()
        .map(|s| s["Service"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["api", "api", "db-1", "exporter"]);
    drop(st);
    let status = r.status();
    let status = status.lock().unwrap();
    assert!(status.last_error.is_none(), "{:?}", status.last_error);
    assert!(status.last_success.is_some());
    let text = metrics.render();
    assert!(
        text.contains("berth_consul_instances{check=\"passing\"} 4"),
        "{text}"
    );
    assert!(
        text.contains("berth_consul_instances{check=\"critical\"} 0"),
        "{text}"
    );
}

/// Why `/v1/agent/services` is read with a type of Berth's: consulrs' own cannot read what
/// Consul answers for a service registered with an IP address.
#[tokio::test]
async fn consulrs_own_service_list_fails_on_consuls_answer() {
    let fake = FakeAgent::start(None).await;
    let (r, _) = registrar(&fake.url, None);
    r.sync(&[instance("berth-t1", "api", CheckStatus::Passing)], false)
        .await
        .expect("sync");
    let settings = consulrs::client::ConsulClientSettingsBuilder::default()
        .address(fake.url.as_str())
        .build()
        .unwrap();
    let client = consulrs::client::ConsulClient::new(settings).unwrap();
    let e = consulrs::service::list(&client, None)
        .await
        .expect_err("if consulrs reads TaggedAddresses now, agent.rs can use its list again");
    let mut chain = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        chain.push_str(&format!(": {s}"));
        src = s.source();
    }
    assert!(
        chain.contains("expected a string"),
        "fails on the tagged addresses' objects: {chain}"
    );
    let ours = Agent::new(&fake.url, None, Duration::from_secs(5))
        .unwrap()
        .services()
        .await
        .expect("Berth's read");
    assert_eq!(ours["berth-t1"].port, 8080);
}
