//! Issue 9's data-safety defects, each through the real binary: a fenced node handing out its
//! copy, a mount claim lost with an agent's memory, parallel creates giving up, a fractional size
//! slipping through, removed datasets coming back, a second agent stealing a live socket, one
//! node acting for another, and a request body sent in a second write.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{AgentSvc, BIN, ControlSvc, TwoNodes, api, wait_until};

fn ok(v: &Value) {
    assert_eq!(v["Err"], "", "expected success, got {v}");
}

fn err_of(v: &Value) -> String {
    let e = v["Err"].as_str().unwrap_or_default().to_string();
    assert!(!e.is_empty(), "expected an Err, got {v}");
    e
}

fn create(a: &AgentSvc, name: &str, opts: Value) -> Value {
    a.call(
        "/VolumeDriver.Create",
        &json!({"Name": name, "Opts": opts}).to_string(),
    )
}

fn mount(a: &AgentSvc, name: &str, caller: &str) -> Value {
    a.call(
        "/VolumeDriver.Mount",
        &json!({"Name": name, "ID": caller}).to_string(),
    )
}

fn unmount(a: &AgentSvc, name: &str, caller: &str) -> Value {
    a.call(
        "/VolumeDriver.Unmount",
        &json!({"Name": name, "ID": caller}).to_string(),
    )
}

fn path_of(a: &AgentSvc, name: &str) -> String {
    a.call("/VolumeDriver.Path", &json!({"Name": name}).to_string())["Mountpoint"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Defect 1: A mounted (ctr1), A declared dead, the dataset force-moved to B and mounted there;
/// a new caller on A must be refused, and A stops handing out its copy at all.
#[test]
fn a_fenced_node_accepts_no_new_mount() {
    let t = TwoNodes::start();
    ok(&create(&t.a, "f1", json!({})));
    ok(&mount(&t.a, "f1", "ctr1"));
    let id = t.dataset("f1")["dataset_id"]
        .as_str()
        .expect("id")
        .to_string();
    let (st, _, v) = api(&t.control, "POST", "/v1/berth/nodes/node-a/dead", &[], "");
    assert_eq!(st, 200, "{v}");
    let (st, _, v) = api(
        &t.control,
        "POST",
        &format!("/v1/configuration/datasets/{id}"),
        &[],
        r#"{"primary":"node-b","force":true}"#,
    );
    assert_eq!((st, v["epoch"].as_u64()), (200, Some(2)), "{v}");
    ok(&mount(&t.b, "f1", "ctr2"));
    let e = err_of(&mount(&t.a, "f1", "ctr3"));
    assert!(
        e.contains("fenced") && e.contains("epoch 2"),
        "a second writer on node A: {e}"
    );
    assert_eq!(
        path_of(&t.a, "f1"),
        "",
        "A still hands out its copy after learning it was fenced"
    );
    let e = err_of(&mount(&t.a, "f1", "ctr1"));
    assert!(e.contains("fenced"), "the old caller too: {e}");
    assert_eq!(t.dataset("f1")["mounted_on"], "node-b");
}

/// Defect 1, the agent's own reconcile: without any Mount call, an agent whose mount was fenced
/// stops answering Path with its copy within a few reconcile passes.
#[test]
fn an_agent_that_learns_it_was_fenced_stops_handing_out_its_copy() {
    let t = TwoNodes::start();
    ok(&create(&t.a, "f2", json!({})));
    let mp = mount(&t.a, "f2", "ctr1")["Mountpoint"]
        .as_str()
        .expect("mp")
        .to_string();
    assert_eq!(path_of(&t.a, "f2"), mp);
    let id = t.dataset("f2")["dataset_id"]
        .as_str()
        .expect("id")
        .to_string();
    api(&t.control, "POST", "/v1/berth/nodes/node-a/dead", &[], "");
    let (st, _, v) = api(
        &t.control,
        "POST",
        &format!("/v1/configuration/datasets/{id}"),
        &[],
        r#"{"primary":"node-b","force":true}"#,
    );
    assert_eq!(st, 200, "{v}");
    wait_until(
        "A to drop its fenced mount",
        Duration::from_secs(10),
        || path_of(&t.a, "f2").is_empty(),
    );
}

/// Defect 2: a claim taken before an agent restart is released by the Unmount after it.
#[test]
fn a_mount_claim_survives_an_agent_restart() {
    let mut t = TwoNodes::start();
    for (name, kill) in [("r-kill", true), ("r-term", false)] {
        ok(&create(&t.b, name, json!({})));
        ok(&mount(&t.b, name, "c1"));
        ok(&mount(&t.b, name, "c2"));
        assert_eq!(t.dataset(name)["mounted_on"], "node-b");
        if kill {
            t.b.kill();
        } else {
            t.b.term();
        }
        t.b.restart();
        ok(&unmount(&t.b, name, "c1"));
        assert_eq!(
            t.dataset(name)["mounted_on"],
            "node-b",
            "{name}: c2 still holds it"
        );
        assert!(!path_of(&t.b, name).is_empty(), "{name}: refcount lost");
        ok(&unmount(&t.b, name, "c2"));
        assert_eq!(
            t.dataset(name)["mounted_on"],
            Value::Null,
            "{name}: the claim leaked across the restart"
        );
        let id = t.dataset(name)["dataset_id"]
            .as_str()
            .expect("id")
            .to_string();
        let (st, _, v) = api(
            &t.control,
            "POST",
            &format!("/v1/configuration/datasets/{id}"),
            &[],
            r#"{"primary":"node-a"}"#,
        );
        assert_eq!(st, 200, "{name}: still cannot move: {v}");
    }
}

/// Defect 2 under load: mounts of many volumes at once are all recorded, and all released after
/// a kill -9 and restart.
#[test]
fn parallel_mounts_are_all_recorded_across_a_restart() {
    let mut t = TwoNodes::start();
    let names: Vec<String> = (0..40).map(|i| format!("pm-{i}")).collect();
    std::thread::scope(|s| {
        for n in &names {
            let a = &t.a;
            s.spawn(move || {
                ok(&create(a, n, json!({})));
                ok(&mount(a, n, "c"));
            });
        }
    });
    t.a.kill();
    t.a.restart();
    std::thread::scope(|s| {
        for n in &names {
            let a = &t.a;
            s.spawn(move || ok(&unmount(a, n, "c")));
        }
    });
    let (_, _, all) = api(&t.control, "GET", "/v1/configuration/datasets", &[], "");
    let held: Vec<&Value> = all
        .as_array()
        .expect("list")
        .iter()
        .filter(|d| !d["mounted_on"].is_null())
        .collect();
    assert!(held.is_empty(), "claims left: {held:?}");
}

/// Defect 2, the crash window: a claim the control service granted but the agent never
/// recorded (it died in between) is released when the agent starts again.
#[test]
fn a_claim_the_agent_never_recorded_is_released_at_start() {
    let mut t = TwoNodes::start();
    ok(&create(&t.b, "orphan", json!({})));
    let id = t.dataset("orphan")["dataset_id"]
        .as_str()
        .expect("id")
        .to_string();
    let (st, _, v) = api(
        &t.control,
        "POST",
        &format!("/v1/berth/mounts/{id}"),
        &[],
        r#"{"node_uuid":"node-b","epoch":1}"#,
    );
    assert_eq!(st, 200, "{v}");
    t.b.kill();
    t.b.restart();
    wait_until(
        "B to release the claim it never handed out",
        Duration::from_secs(10),
        || t.dataset("orphan")["mounted_on"].is_null(),
    );
}

/// Defect 3: 200 parallel Creates of distinct names, 100 on each of two agents, all succeed.
#[test]
fn two_hundred_parallel_creates_all_succeed() {
    let t = TwoNodes::start();
    let failures: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..200)
            .map(|i| {
                let agent = if i % 2 == 0 { &t.a } else { &t.b };
                s.spawn(move || {
                    let v = create(agent, &format!("par-{i}"), json!({}));
                    (v["Err"] != "").then(|| format!("par-{i}: {v}"))
                })
            })
            .collect();
        hs.into_iter()
            .filter_map(|h| h.join().expect("thread"))
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} of 200 creates failed, e.g. {:?}",
        failures.len(),
        failures.first()
    );
    let (_, _, all) = api(&t.control, "GET", "/v1/configuration/datasets", &[], "");
    let n = all
        .as_array()
        .expect("list")
        .iter()
        .filter(|d| {
            d["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("par-"))
        })
        .count();
    assert_eq!(n, 200);
}

/// Defect 4 at the Create level: the size that once overflowed into 64 GiB is refused and makes
/// no dataset; its whole-byte neighbour is accepted.
#[test]
fn a_fractional_size_is_refused_at_create() {
    let t = TwoNodes::start();
    for size in [
        "64.00000000316912650057057350374175801344G",
        "64.0000000001G",
    ] {
        let e = err_of(&create(&t.a, "frac", json!({"size": size})));
        assert!(e.contains(size), "{e}");
        assert_eq!(t.dataset("frac"), Value::Null, "{size} made a dataset");
    }
    ok(&create(&t.a, "frac", json!({"size": "64.5G"})));
    assert_eq!(t.dataset("frac")["maximum_size"], 129u64 << 29);
}

fn dataset_dirs(root: &Path) -> Vec<String> {
    std::fs::read_dir(root.join("datasets"))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Smaller defect: after 100 parallel Create→Remove pairs, no removed dataset comes back as an
/// empty directory with an epoch file (the reconcile pass worked from a stale list).
#[test]
fn removed_datasets_do_not_come_back() {
    let t = TwoNodes::start();
    std::thread::scope(|s| {
        for i in 0..100 {
            let agent = if i % 2 == 0 { &t.a } else { &t.b };
            s.spawn(move || {
                let name = format!("cr-{i}");
                // Retried here so this test is about Remove alone, whatever Create does.
                let mut v = create(agent, &name, json!({}));
                for _ in 0..100 {
                    if v["Err"] == "" {
                        break;
                    }
                    v = create(agent, &name, json!({}));
                }
                ok(&v);
                ok(&agent.call("/VolumeDriver.Remove", &json!({"Name": name}).to_string()));
            });
        }
    });
    // Three reconcile passes (one a second) to bring anything back, then none may be there.
    std::thread::sleep(Duration::from_millis(3500));
    let (_, _, all) = api(&t.control, "GET", "/v1/configuration/datasets", &[], "");
    let live: Vec<&Value> = all
        .as_array()
        .expect("list")
        .iter()
        .filter(|d| d["deleted"] == false)
        .collect();
    assert!(live.is_empty(), "{live:?}");
    for root in [&t.a.data_root, &t.b.data_root] {
        let left = dataset_dirs(root);
        assert!(
            left.is_empty(),
            "{} removed datasets came back under {}: {left:?}",
            left.len(),
            root.display()
        );
    }
}

/// Smaller defect: a second agent on a live socket is refused and the first keeps answering.
#[test]
fn a_second_agent_on_a_live_socket_is_refused() {
    let t = TwoNodes::start();
    let dir = tempfile::tempdir().expect("tmp");
    let mut second = Command::new(BIN)
        .args([
            "agent",
            "--node-id",
            "node-x",
            "--socket",
            &t.a.socket.display().to_string(),
            "--data-root",
            &dir.path().join("x").display().to_string(),
            "--control",
            &t.control.url(),
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(st) = second.try_wait().expect("wait") {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            let _ = second.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    if let Some(mut e) = second.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let st = status.expect("the second agent kept running on a live socket");
    assert_eq!(st.code(), Some(1), "{stderr}");
    assert!(stderr.contains("already"), "{stderr}");
    assert_eq!(
        t.a.call("/Plugin.Activate", ""),
        json!({"Implements": ["VolumeDriver"]}),
        "the first agent lost its socket"
    );
    let (_, _, nodes) = api(&t.control, "GET", "/v1/state/nodes", &[], "");
    assert!(
        !nodes.to_string().contains("node-x"),
        "the refused agent registered anyway: {nodes}"
    );
}

fn credential(token_file: &Path, node: &str) -> String {
    let out = Command::new(BIN)
        .args([
            "credential",
            "--node-id",
            node,
            "--token-file",
            &token_file.display().to_string(),
        ])
        .output()
        .expect("run credential");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Smaller defect: with per-node credentials, a node acts only for itself on the agent-only
/// endpoints, and only the cluster token may declare a node dead.
#[test]
fn a_node_credential_acts_only_for_its_node() {
    let dir = tempfile::tempdir().expect("tmp");
    let tok = dir.path().join("token");
    std::fs::write(&tok, "cluster-s3cret\n").expect("token");
    let c = ControlSvc::start(&dir.path().join("state"), Some(&tok));
    let admin = "Bearer cluster-s3cret".to_string();
    let cred_a = format!("Bearer {}", credential(&tok, "node-a"));
    let cred_b = format!("Bearer {}", credential(&tok, "node-b"));
    assert_ne!(cred_a, cred_b);
    let as_ = |who: &str, m: &str, p: &str, b: &str| {
        let (st, _, v) = api(&c, m, p, &[("authorization", who)], b);
        (st, v)
    };
    for (who, node) in [(&cred_a, "node-a"), (&cred_b, "node-b")] {
        let (st, v) = as_(
            who,
            "POST",
            "/v1/state/nodes",
            &json!({"uuid": node, "host": node, "transfer": "127.0.0.1:1"}).to_string(),
        );
        assert_eq!(st, 200, "{node} registers itself: {v}");
    }
    let (st, _) = as_(
        &cred_a,
        "POST",
        "/v1/state/nodes",
        r#"{"uuid":"node-b","host":"evil","transfer":"127.0.0.1:2"}"#,
    );
    assert_eq!(st, 403, "node-a re-registered node-b");
    let (st, v) = as_(
        &admin,
        "POST",
        "/v1/configuration/datasets",
        r#"{"primary":"node-b","metadata":{"name":"v"}}"#,
    );
    assert_eq!(st, 201, "{v}");
    let id = v["dataset_id"].as_str().expect("id").to_string();
    let claim = |node: &str| json!({"node_uuid": node, "epoch": 1}).to_string();
    let (st, _) = as_(
        &cred_a,
        "POST",
        &format!("/v1/berth/mounts/{id}"),
        &claim("node-b"),
    );
    assert_eq!(st, 403, "node-a claimed for node-b");
    let (st, v) = as_(
        &cred_b,
        "POST",
        &format!("/v1/berth/mounts/{id}"),
        &claim("node-b"),
    );
    assert_eq!(st, 200, "{v}");
    let (st, _) = as_(
        &cred_a,
        "DELETE",
        &format!("/v1/berth/mounts/{id}/node-b"),
        "",
    );
    assert_eq!(st, 403, "node-a released node-b's claim");
    let (st, _) = as_(&cred_a, "POST", "/v1/berth/nodes/node-b/dead", "");
    assert_eq!(st, 403, "node-a declared node-b dead");
    let (st, _) = as_(
        &cred_a,
        "POST",
        "/v1/state/datasets",
        r#"{"node_uuid":"node-b","datasets":[]}"#,
    );
    assert_eq!(st, 403, "node-a reported for node-b");
    let (st, _) = as_(&cred_a, "GET", "/v1/configuration/datasets", "");
    assert_eq!(st, 200, "a node reads the configuration");
    let (st, _) = as_(
        &cred_a,
        "POST",
        &format!("/v1/configuration/datasets/{id}"),
        r#"{"primary":"node-a","force":true}"#,
    );
    assert_eq!(st, 403, "a node moves no dataset; the operator does");
    let forged = format!("Bearer berth-node.node-b.{}", "0".repeat(64));
    let (st, _) = as_(&forged, "GET", "/v1/configuration/datasets", "");
    assert_eq!(st, 401, "a forged credential");
    let (st, _) = as_(
        &cred_b,
        "DELETE",
        &format!("/v1/berth/mounts/{id}/node-b"),
        "",
    );
    assert_eq!(st, 200);
    let (st, _) = as_(&admin, "POST", "/v1/berth/nodes/node-b/dead", "");
    assert_eq!(st, 200, "the cluster token may");
}

/// Smaller defect: a client that sends its body in a second write still gets its reply (the
/// agent used to answer some requests without reading the body and close: EPIPE).
#[test]
fn a_body_sent_in_a_second_write_is_read() {
    let t = TwoNodes::start();
    for ep in [
        "/Plugin.Activate",
        "/VolumeDriver.Capabilities",
        "/VolumeDriver.List",
        "/VolumeDriver.Nope",
    ] {
        let body = "{}";
        let mut s = UnixStream::connect(&t.a.socket).expect("connect");
        write!(
            s,
            "POST {ep} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .expect("head");
        s.flush().expect("flush");
        std::thread::sleep(Duration::from_millis(300));
        s.write_all(body.as_bytes())
            .unwrap_or_else(|e| panic!("{ep}: body write after the head: {e}"));
        let mut out = String::new();
        s.read_to_string(&mut out)
            .unwrap_or_else(|e| panic!("{ep}: reading the reply: {e}"));
        assert!(out.starts_with("HTTP/1.1 200"), "{ep}: {out}");
    }
}

/// Agents holding only their own credentials: each acts for itself, a move between them works
/// (the source's transfer endpoint accepts the puller's credential, checked at the control
/// service), and a forged credential is refused there.
#[test]
fn agents_with_node_credentials_move_data_between_them() {
    let dir = tempfile::tempdir().expect("tmp");
    let tok = dir.path().join("token");
    std::fs::write(&tok, "cluster-s3cret\n").expect("token");
    let c = ControlSvc::start(&dir.path().join("state"), Some(&tok));
    let mut agents = Vec::new();
    for n in ["node-a", "node-b"] {
        let cred = dir.path().join(format!("{n}.cred"));
        std::fs::write(&cred, credential(&tok, n)).expect("credential file");
        let cred_arg = cred.display().to_string();
        agents.push(AgentSvc::start(
            n,
            &dir.path().join(format!("{n}.sock")),
            &dir.path().join(n),
            &dir.path().join("shared"),
            &c.url(),
            &["--credential-file", &cred_arg],
        ));
    }
    let (a, b) = (&agents[0], &agents[1]);
    ok(&create(a, "cv", json!({})));
    let mp = mount(a, "cv", "c1")["Mountpoint"]
        .as_str()
        .expect("mp")
        .to_string();
    std::fs::write(format!("{mp}/row"), b"moved with credentials").expect("write");
    ok(&unmount(a, "cv", "c1"));
    let admin = [("authorization", "Bearer cluster-s3cret")];
    let (_, _, v) = api(&c, "GET", "/v1/berth/volumes/cv", &admin, "");
    let id = v["dataset_id"].as_str().expect("id").to_string();
    let (st, _, v) = api(
        &c,
        "POST",
        &format!("/v1/configuration/datasets/{id}"),
        &admin,
        r#"{"primary":"node-b"}"#,
    );
    assert_eq!(st, 200, "{v}");
    let mb = mount(b, "cv", "c2");
    ok(&mb);
    assert_eq!(
        std::fs::read(format!("{}/row", mb["Mountpoint"].as_str().expect("mp"))).expect("read"),
        b"moved with credentials"
    );
    let (_, _, nodes) = api(&c, "GET", "/v1/state/nodes", &admin, "");
    let a_addr = nodes
        .as_array()
        .and_then(|n| n.iter().find(|n| n["uuid"] == "node-a"))
        .and_then(|n| n["transfer"].as_str())
        .expect("A's transfer address")
        .to_string();
    let forged = format!("Bearer berth-node.node-b.{}", "0".repeat(64));
    let (st, _, _) = crate::support::raw(
        crate::support::Conn::Tcp(&a_addr),
        "GET",
        &format!("/v1/transfer/{id}/manifest"),
        &[("authorization", forged.as_str())],
        "",
    );
    assert_eq!(st, 401, "a forged credential at a transfer endpoint");
    // Its /metrics: Prometheus holds the cluster token, which this agent does not; a peer's
    // credential works too; a forged one does not.
    let cred_b = format!("Bearer {}", credential(&tok, "node-b"));
    for (who, bearer, want) in [
        ("the cluster token", admin[0].1, 200),
        ("a peer's credential", cred_b.as_str(), 200),
        ("a forged credential", forged.as_str(), 401),
    ] {
        let (st, _, _) = crate::support::raw(
            crate::support::Conn::Tcp(&a_addr),
            "GET",
            "/metrics",
            &[("authorization", bearer)],
            "",
        );
        assert_eq!(st, want, "{who} at an agent's /metrics");
    }
}
