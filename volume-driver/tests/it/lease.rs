//! Node leases end to end through the real binaries: an agent cut off from the control service
//! (a proxy between them stops forwarding) holds its writer's writes from its lease's end, the
//! fence that would hand its volume to another node is refused (423, with the time left) until
//! the lease has ended and accepted after — with no write acknowledged after it —, and once back
//! in contact the agent finds the mount fenced, fails the held write and stops the container.
//!
//! The agent reaches "Docker" through `--docker-socket`: here a stand-in of the Engine API's
//! two calls the agent makes (list the containers using a volume, stop one), which records when
//! the stop came. `tests/engine` does the same against the real engine.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{
    AgentSvc, ControlSvc, FAST_LEASE_CONTROL, FakeEngine, Proxy, Writer, api, free_port,
    fuse_agent, raw, wait_until,
};

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

fn http_get(addr: &str, path: &str) -> String {
    let (st, _, v) = raw(crate::support::Conn::Tcp(addr), "GET", path, &[], "");
    assert_eq!(st, 200, "GET {path}: {v}");
    v.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

fn liveness(c: &ControlSvc, node: &str) -> Value {
    let (st, _, v) = api(c, "GET", "/v1/berth/nodes", &[], "");
    assert_eq!(st, 200, "{v}");
    v.as_array()
        .and_then(|a| a.iter().find(|n| n["node"] == node))
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn an_agent_cut_off_from_control_holds_writes_at_its_lease_end_and_refuses_them_once_fenced() {
    if !crate::support::fuse_available("lease::an_agent_cut_off…") {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let control = ControlSvc::start_with(
        &dir.path().join("state"),
        None,
        format!("127.0.0.1:{}", free_port()),
        FAST_LEASE_CONTROL,
    );
    let proxy = Proxy::start(&control.addr);
    let engine_sock = dir.path().join("engine.sock");
    // The driver is the plugin socket's name: `a.sock` → `a`.
    let engine = FakeEngine::start(&engine_sock, "w", "a");
    let engine_arg = engine_sock.display().to_string();
    let a = AgentSvc::start(
        "node-a",
        &dir.path().join("a.sock"),
        &dir.path().join("a"),
        &dir.path().join("shared"),
        &proxy.url(),
        &fuse_agent(&engine_arg),
    );
    assert_eq!(
        a.call("/VolumeDriver.Create", r#"{"Name":"w","Opts":{}}"#)["Err"],
        ""
    );
    let m = a.call("/VolumeDriver.Mount", r#"{"Name":"w","ID":"writer"}"#);
    assert_eq!(m["Err"], "", "{m}");
    let mp = PathBuf::from(m["Mountpoint"].as_str().expect("mountpoint"));
    let n = liveness(&control, "node-a");
    assert_eq!(n["alive"], true, "{n}");
    assert!(
        n["last_heartbeat_age_ms"].is_u64() && n["lease_expires_in_ms"].as_u64() > Some(0),
        "{n}"
    );
    let fence = r#"{"node":"node-a","expect_epoch":1}"#;
    let (st, _, v) = api(&control, "POST", "/v1/berth/volumes/w/fence", &[], fence);
    assert_eq!(st, 423, "a live holder's volume is not fenced: {v}");
    let writer = Writer::start(mp.join("log"));
    wait_until("the writer writes", Duration::from_secs(10), || {
        writer.acks().len() >= 5
    });

    let cut = Instant::now();
    proxy.cut();
    let (mut detected, mut refusals, mut last_left) = (None, 0, 0);
    let fenced = loop {
        assert!(cut.elapsed() < Duration::from_secs(30), "no fence accepted");
        if detected.is_none() && liveness(&control, "node-a")["alive"] == false {
            detected = Some(cut.elapsed());
        }
        let (st, h, v) = api(&control, "POST", "/v1/berth/volumes/w/fence", &[], fence);
        match st {
            423 => {
                refusals += 1;
                last_left = v["retry_after_ms"].as_u64().expect("the time left");
                assert!(h.contains("retry-after:"), "{h}");
                assert!(
                    v["description"]
                        .as_str()
                        .is_some_and(|d| d.contains("lease")),
                    "{v}"
                );
            }
            200 => break Instant::now(),
            _ => panic!("fence: {st} {v}"),
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(refusals > 0, "the fence waited for the lease");
    let acks = writer.acks();
    let last = *acks.last().expect("acks");
    assert!(
        acks.iter().all(|t| *t < fenced),
        "a write was acknowledged after the fence: last at {:?}, fence at {:?}",
        last.duration_since(cut),
        fenced.duration_since(cut)
    );
    assert!(writer.failed().is_none(), "held, not failed, while cut off");
    assert!(
        engine.stopped_at().is_none(),
        "a lapsed lease holds writes; it does not stop the container"
    );
    eprintln!(
        "lease test: after the cut, node-a reported not alive at {:?}, its last write was \
         acknowledged at {:?}, the fence refused {refusals} times (last with {last_left} ms left) \
         and accepted at {:?}",
        detected.expect("detected before the fence"),
        last.duration_since(cut),
        fenced.duration_since(cut),
    );

    // Back in contact: the mount is claimed again, refused (its epoch moved), so the held write
    // fails and the container is stopped; its Mounts meet the fence, not a missing lease.
    proxy.heal();
    let (failed_at, why) = writer
        .wait_failed(Duration::from_secs(20))
        .expect("the held write failed once the mount was found fenced");
    assert!(
        why.contains("I/O error") || why.contains("Input/output error"),
        "EIO, not: {why}"
    );
    assert!(failed_at > fenced);
    assert_eq!(
        writer.acks().len(),
        acks.len(),
        "nothing acknowledged after the fence"
    );
    wait_until("the container stopped", Duration::from_secs(10), || {
        engine.stopped_at().is_some()
    });
    wait_until("node-a alive again", Duration::from_secs(20), || {
        liveness(&control, "node-a")["alive"] == true
    });
    let e = a.call("/VolumeDriver.Mount", r#"{"Name":"w","ID":"again"}"#)["Err"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(e.contains("fenced"), "{e}");

    let transfer = {
        let (_, _, nodes) = api(&control, "GET", "/v1/state/nodes", &[], "");
        nodes[0]["transfer"].as_str().expect("transfer").to_string()
    };
    let text = http_get(&transfer, "/metrics");
    assert_eq!(metric(&text, "berth_self_fence_total"), Some(0.0), "{text}");
    assert_eq!(
        metric(&text, "berth_agent_mounts_fenced_total"),
        Some(1.0),
        "{text}"
    );
    assert!(
        metric(&text, "berth_agent_writes_held_total").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        metric(&text, "berth_agent_writes_refused_total").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    let text = http_get(&control.addr, "/metrics");
    assert_eq!(
        metric(&text, r#"berth_fence_epoch{volume="w"}"#),
        Some(2.0),
        "{text}"
    );
    assert!(
        metric(&text, "berth_handovers_refused_total").is_some_and(|n| n >= 2.0),
        "{text}"
    );
    assert!(
        metric(&text, r#"berth_node_heartbeat_age_seconds{node="node-a"}"#).is_some(),
        "{text}"
    );
    assert!(
        text.contains(
            r#"berth_control_requests_total{code="423",route="/v1/berth/volumes/{name}/fence"}"#
        ),
        "{text}"
    );
}

#[test]
fn an_agent_whose_lease_the_control_cannot_honour_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tmp");
    let control = ControlSvc::start_with(
        &dir.path().join("state"),
        None,
        format!("127.0.0.1:{}", free_port()),
        &["--lease", "3s"],
    );
    let out = std::process::Command::new(crate::support::BIN)
        .args(["agent", "--node-id", "n1", "--socket"])
        .arg(dir.path().join("n1.sock"))
        .arg("--data-root")
        .arg(dir.path().join("n1"))
        .args(["--control", &control.url(), "--listen", "127.0.0.1:0"])
        .output()
        .expect("run agent");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("lease timing") && err.contains("--self-fence-deadline"),
        "{err}"
    );
    // And the control service refuses a lease shorter than its own detection window.
    let out = std::process::Command::new(crate::support::BIN)
        .args([
            "control",
            "--insecure",
            "--listen",
            "127.0.0.1:0",
            "--lease",
            "1s",
            "--state",
        ])
        .arg(dir.path().join("s2"))
        .output()
        .expect("run control");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--lease"), "{err}");
}

/// An agent whose Docker Engine does not answer could not stop its containers: it says so in
/// its heartbeats, the control service counts it alive but grants it no lease, and the agent
/// reports not ready and `berth_volume_docker_reachable 0`. Its engine coming up gets it a lease.
#[test]
fn an_agent_without_its_docker_engine_holds_no_lease_and_is_not_ready() {
    let dir = tempfile::tempdir().expect("tmp");
    let control = ControlSvc::start(&dir.path().join("state"), None);
    let engine = dir.path().join("engine.sock");
    let transfer = format!("127.0.0.1:{}", free_port());
    let mut agent = crate::support::spawn(&[
        "agent".into(),
        "--node-id".into(),
        "n1".into(),
        "--socket".into(),
        dir.path().join("n1.sock").display().to_string(),
        "--data-root".into(),
        dir.path().join("n1").display().to_string(),
        "--data-path".into(),
        "direct".into(),
        "--control".into(),
        control.url(),
        "--listen".into(),
        transfer.clone(),
        "--docker-socket".into(),
        engine.display().to_string(),
    ]);
    let ready = || {
        raw(
            crate::support::Conn::Tcp(&transfer),
            "GET",
            "/v1/ready",
            &[],
            "",
        )
    };
    wait_until(
        "the agent reports not ready",
        Duration::from_secs(20),
        || std::net::TcpStream::connect(&transfer).is_ok() && ready().0 == 503,
    );
    let (_, _, why) = ready();
    assert_eq!(why["docker_reachable"], false, "{why}");
    assert!(
        why["reasons"].to_string().contains("Docker Engine"),
        "{why}"
    );
    let n = liveness(&control, "n1");
    assert_eq!(n["alive"], true, "{n}");
    assert_eq!(n["docker_reachable"], false, "{n}");
    wait_until("its lease runs out", Duration::from_secs(20), || {
        liveness(&control, "n1")["lease_expires_in_ms"] == 0
    });
    assert_eq!(
        metric(
            &http_get(&transfer, "/metrics"),
            "berth_volume_docker_reachable"
        ),
        Some(0.0)
    );
    // The engine answers: a lease again, and ready.
    crate::support::ping_only_engine(&engine);
    wait_until("the agent reports ready", Duration::from_secs(20), || {
        ready().0 == 200
    });
    let n = liveness(&control, "n1");
    assert_eq!(n["docker_reachable"], true, "{n}");
    assert!(n["lease_expires_in_ms"].as_u64().unwrap_or(0) > 0, "{n}");
    assert_eq!(
        metric(
            &http_get(&transfer, "/metrics"),
            "berth_volume_docker_reachable"
        ),
        Some(1.0)
    );
    agent.stop();
}

/// `--timing` sets the whole profile: a control service on `fast` (1.5 s lease) refuses an agent
/// left on `default` (2 s self-fence deadline), naming the profile; and an override that breaks
/// the profile's own rule stops the control service at start.
#[test]
fn a_fast_control_service_refuses_an_agent_on_the_default_timing() {
    let dir = tempfile::tempdir().expect("tmp");
    let control = ControlSvc::start_with(
        &dir.path().join("state"),
        None,
        format!("127.0.0.1:{}", free_port()),
        &["--timing", "fast"],
    );
    let out = std::process::Command::new(crate::support::BIN)
        .args(["agent", "--node-id", "n1", "--socket"])
        .arg(dir.path().join("n1.sock"))
        .arg("--data-root")
        .arg(dir.path().join("n1"))
        .args(["--control", &control.url(), "--listen", "127.0.0.1:0"])
        .output()
        .expect("run agent");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("lease timing") && err.contains("the same --timing"),
        "{err}"
    );
    let out = std::process::Command::new(crate::support::BIN)
        .args([
            "control",
            "--insecure",
            "--listen",
            "127.0.0.1:0",
            "--timing",
            "fast",
            "--lease",
            "500ms",
            "--state",
        ])
        .arg(dir.path().join("s2"))
        .output()
        .expect("run control");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--timing fast") && err.contains("--lease 500 ms"),
        "{err}"
    );
}
