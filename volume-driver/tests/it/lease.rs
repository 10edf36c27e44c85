//! Node leases end to end through the real binaries: an agent cut off from the control service
//! (a proxy between them stops forwarding) stops its writer before its lease ends, the fence
//! that would hand its volume to another node is refused (423, with the time left) until the
//! lease has ended and accepted after, and the agent mounts again once it is back in contact.
//!
//! The agent reaches "Docker" through `--docker-socket`: here a stand-in of the Engine API's
//! two calls self-fencing makes (list the containers using a volume, stop one), which records
//! when the stop came. `tests/engine` does the same against the real engine.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{AgentSvc, ControlSvc, Proxy, api, free_port, raw, wait_until};

/// The Engine API stand-in: one running container, `writer`, mounting `volume` of `driver`
/// until it is stopped.
struct FakeEngine {
    stopped: Arc<Mutex<Option<Instant>>>,
}

impl FakeEngine {
    fn start(socket: &Path, volume: &str, driver: &str) -> FakeEngine {
        let l = UnixListener::bind(socket).expect("bind engine socket");
        let stopped = Arc::new(Mutex::new(None::<Instant>));
        let (st, volume, driver) = (stopped.clone(), volume.to_string(), driver.to_string());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut c) = conn else { continue };
                let mut head = String::new();
                let mut r = BufReader::new(c.try_clone().expect("clone"));
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                let first = head.lines().next().unwrap_or_default().to_string();
                let (code, body) = if first.starts_with("GET /containers/json") {
                    let running = st.lock().expect("lock").is_none();
                    let list = if running {
                        json!([{"Id": "writer", "Mounts": [
                            {"Type": "volume", "Name": volume, "Driver": driver},
                        ]}])
                    } else {
                        json!([])
                    };
                    (200, list.to_string())
                } else if first.starts_with("POST /containers/writer/stop") {
                    st.lock().expect("lock").get_or_insert_with(Instant::now);
                    (204, String::new())
                } else {
                    (404, r#"{"message":"not faked"}"#.to_string())
                };
                let _ = write!(
                    c,
                    "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        FakeEngine { stopped }
    }

    fn stopped_at(&self) -> Option<Instant> {
        *self.stopped.lock().expect("lock")
    }
}

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
fn an_agent_cut_off_from_control_stops_its_writer_before_its_lease_ends() {
    let dir = tempfile::tempdir().expect("tmp");
    let control = ControlSvc::start_with(
        &dir.path().join("state"),
        None,
        format!("127.0.0.1:{}", free_port()),
        &[
            "--heartbeat-interval",
            "200ms",
            "--heartbeat-misses",
            "3",
            "--lease",
            "2s",
        ],
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
        &[
            "--heartbeat-interval",
            "200ms",
            "--self-fence-deadline",
            "600ms",
            "--drift-margin",
            "200ms",
            "--docker-socket",
            &engine_arg,
        ],
    );
    assert_eq!(
        a.call("/VolumeDriver.Create", r#"{"Name":"w","Opts":{}}"#)["Err"],
        ""
    );
    let m = a.call("/VolumeDriver.Mount", r#"{"Name":"w","ID":"writer"}"#);
    assert_eq!(m["Err"], "", "{m}");
    let n = liveness(&control, "node-a");
    assert_eq!(n["alive"], true, "{n}");
    assert!(
        n["last_heartbeat_age_ms"].is_u64() && n["lease_expires_in_ms"].as_u64() > Some(0),
        "{n}"
    );
    let fence = r#"{"node":"node-a","expect_epoch":1}"#;
    let (st, _, v) = api(&control, "POST", "/v1/berth/volumes/w/fence", &[], fence);
    assert_eq!(st, 423, "a live holder's volume is not fenced: {v}");

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
    let stopped = engine
        .stopped_at()
        .expect("the agent stopped its writer while cut off");
    assert!(refusals > 0, "the fence waited for the lease");
    assert!(
        stopped < fenced,
        "the writer was stopped before the fence was accepted"
    );
    eprintln!(
        "lease test: after the cut, node-a reported not alive at {:?}, its writer stopped at \
         {:?}, the fence refused {refusals} times (last with {last_left} ms left) and accepted at \
         {:?}",
        detected.expect("detected before the fence"),
        stopped.duration_since(cut),
        fenced.duration_since(cut),
    );

    // Back in contact: heartbeats again, and its Mounts meet the fence, not a missing lease.
    proxy.heal();
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
    assert_eq!(metric(&text, "berth_self_fence_total"), Some(1.0), "{text}");
    assert_eq!(
        metric(&text, "berth_self_fence_containers_stopped_total"),
        Some(1.0),
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
