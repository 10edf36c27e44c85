//! The data path (`datapath`): every mount served by the agent through FUSE, the lease checked
//! before each write. What the agent's own faults do to a writer on such a mount, through the
//! real binaries:
//! - killed: the mount dies with it (`ENOTCONN`) at once, and a restarted agent detaches the
//!   dead mount, stops the containers still on it, and serves the volume again to the next;
//! - frozen (SIGSTOP) past its lease: the writer's write waits in the kernel, the control
//!   service hands the volume over once the lease has ended, and when the agent runs again the
//!   write fails (`EIO`) — nothing is acknowledged after the handover.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{
    AgentSvc, ControlSvc, FAST_LEASE_CONTROL, FakeEngine, Writer, api, free_port, fuse_agent,
    fuse_available, wait_until,
};

struct Node {
    dir: tempfile::TempDir,
    control: ControlSvc,
    agent: AgentSvc,
    engine: FakeEngine,
}

/// One control service (2 s leases) and one agent serving through FUSE, whose engine is a
/// stand-in running one container, `writer`, that uses volume `w`.
fn node() -> Node {
    let dir = tempfile::tempdir().expect("tmp");
    let control = ControlSvc::start_with(
        &dir.path().join("state"),
        None,
        format!("127.0.0.1:{}", free_port()),
        FAST_LEASE_CONTROL,
    );
    let engine_sock = dir.path().join("engine.sock");
    let engine = FakeEngine::start(&engine_sock, "w", "a");
    let engine_arg = engine_sock.display().to_string();
    let agent = AgentSvc::start(
        "node-a",
        &dir.path().join("a.sock"),
        &dir.path().join("a"),
        &dir.path().join("shared"),
        &control.url(),
        &fuse_agent(&engine_arg),
    );
    Node {
        dir,
        control,
        agent,
        engine,
    }
}

impl Node {
    /// The agent's data root, holding the copies (and, under `mnt/`, the mounts).
    fn copy_root(&self) -> PathBuf {
        self.dir.path().join("a")
    }
}

/// The first file named `name` under `dir`, mounts (`mnt/`) left out.
fn find_file(dir: &std::path::Path, name: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        let ft = e.file_type().ok()?;
        if ft.is_dir() && e.file_name() != "mnt" {
            if let Some(f) = find_file(&p, name) {
                return Some(f);
            }
        } else if ft.is_file() && e.file_name() == name {
            return Some(p);
        }
    }
    None
}

fn mount(a: &AgentSvc, id: &str) -> PathBuf {
    let m = a.call(
        "/VolumeDriver.Mount",
        &format!(r#"{{"Name":"w","ID":"{id}"}}"#),
    );
    assert_eq!(m["Err"], "", "{m}");
    PathBuf::from(m["Mountpoint"].as_str().expect("mountpoint"))
}

struct Thaw(u32);

impl Drop for Thaw {
    fn drop(&mut self) {
        signal(self.0, rustix::process::Signal::CONT);
    }
}

/// A signal by system call: spawning `kill` can hang while a thread of this process is held in
/// the frozen agent's mount.
fn signal(pid: u32, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a pid");
    let _ = rustix::process::kill_process(pid, sig);
}

#[test]
fn a_killed_agent_takes_its_mounts_with_it_and_a_restarted_one_serves_them_again() {
    if !fuse_available("datapath::a_killed_agent…") {
        return;
    }
    let mut n = node();
    assert_eq!(
        n.agent
            .call("/VolumeDriver.Create", r#"{"Name":"w","Opts":{}}"#)["Err"],
        ""
    );
    let mp = mount(&n.agent, "c1");
    std::fs::write(mp.join("before"), b"kept").expect("write through the agent");
    let writer = Writer::start(mp.join("log"));
    wait_until("the writer writes", Duration::from_secs(10), || {
        writer.acks().len() >= 5
    });
    let killed = Instant::now();
    n.agent.kill();
    let (at, why) = writer
        .wait_failed(Duration::from_secs(5))
        .expect("the writer's next write failed with the agent");
    // ENOTCONN on a file it had open, ECONNABORTED on one it opens again.
    assert!(
        why.contains("Transport endpoint is not connected")
            || why.contains("Software caused connection abort"),
        "the connection to the agent is gone, not: {why}"
    );
    assert!(
        at.duration_since(killed) < Duration::from_secs(1),
        "at once, not at the lease's end: {:?}",
        at.duration_since(killed)
    );
    let acked = writer.acks().len();

    n.agent.restart();
    wait_until("the dead mount detached", Duration::from_secs(10), || {
        std::fs::metadata(&mp).is_ok()
    });
    wait_until(
        "the container on the dead mount stopped",
        Duration::from_secs(10),
        || n.engine.stopped_at().is_some(),
    );
    // Docker unmounts the stopped container and mounts the restarted one.
    let u = n
        .agent
        .call("/VolumeDriver.Unmount", r#"{"Name":"w","ID":"c1"}"#);
    assert_eq!(u["Err"], "", "{u}");
    let mp2 = mount(&n.agent, "c2");
    assert_eq!(
        std::fs::read(mp2.join("before")).expect("the data is there"),
        b"kept"
    );
    let log = std::fs::read_to_string(mp2.join("log")).expect("log");
    assert!(
        log.lines().count() >= acked,
        "every acknowledged line kept: {} < {acked}",
        log.lines().count()
    );
    std::fs::write(mp2.join("after"), b"x").expect("writes go on");
}

#[test]
fn a_frozen_agent_cannot_write_after_its_lease_has_ended() {
    if !fuse_available("datapath::a_frozen_agent…") {
        return;
    }
    let n = node();
    assert_eq!(
        n.agent
            .call("/VolumeDriver.Create", r#"{"Name":"w","Opts":{}}"#)["Err"],
        ""
    );
    let mp = mount(&n.agent, "c1");
    let writer = Writer::start(mp.join("log"));
    wait_until("the writer writes", Duration::from_secs(10), || {
        writer.acks().len() >= 5
    });
    let pid = n.agent.pid();
    let frozen = Instant::now();
    signal(pid, rustix::process::Signal::STOP);
    // However this test ends, the agent runs again: a frozen FUSE server hangs every process
    // that touches its mount, the test's own cleanup included.
    let _thaw = Thaw(pid);
    // The control service hands the volume over once the frozen node's lease has ended, as
    // `berth run` would for a node that stopped heartbeating.
    let fence = r#"{"node":"node-a","expect_epoch":1}"#;
    let fenced = loop {
        assert!(
            frozen.elapsed() < Duration::from_secs(30),
            "no fence accepted"
        );
        let (st, _, v) = api(&n.control, "POST", "/v1/berth/volumes/w/fence", &[], fence);
        match st {
            423 => std::thread::sleep(Duration::from_millis(20)),
            200 => break Instant::now(),
            _ => panic!("fence: {st} {v}"),
        }
    };
    // Frozen well past the lease, as a paused VM would be, then thawed.
    std::thread::sleep(Duration::from_secs(2));
    // What reached the storage, read beside the mount (never through it while it is frozen).
    let copy = find_file(&n.copy_root(), "log").expect("the copy's log");
    let lines = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let at_fence = lines(&copy);
    signal(pid, rustix::process::Signal::CONT);
    let (failed_at, why) = writer
        .wait_failed(Duration::from_secs(20))
        .expect("the held write failed after the thaw");
    assert!(
        why.contains("I/O error") || why.contains("Input/output error"),
        "EIO, not: {why}"
    );
    assert!(failed_at > fenced);
    assert_eq!(
        lines(&copy),
        at_fence,
        "nothing reached the storage after the handover"
    );
    assert!(
        writer.acks().len() <= at_fence,
        "every acknowledged record is in the copy"
    );
    wait_until("the container stopped", Duration::from_secs(10), || {
        n.engine.stopped_at().is_some()
    });
    let (_, _, d): (u16, String, Value) = api(&n.control, "GET", "/v1/berth/volumes/w", &[], "");
    assert_eq!(d["epoch"], 2, "{d}");
}
