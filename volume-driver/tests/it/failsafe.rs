//! Failsafe ("Fencing", rule 9) through the real binary: the votes travel between the agents'
//! own HTTP endpoints, and a lease goes on past its end only while every peer answers.

use std::time::{Duration, Instant};

use crate::support::{ControlSvc, Proc, free_port, ping_only_engine, raw, wait_until};

fn agent(dir: &std::path::Path, node: &str, control: &str, transfer: &str, failsafe: bool) -> Proc {
    let engine = dir.join(format!("{node}-engine.sock"));
    ping_only_engine(&engine);
    let mut args: Vec<String> = [
        "agent",
        "--node-id",
        node,
        "--timing",
        "fast",
        "--data-path",
        "direct",
        "--control",
        control,
        "--listen",
        transfer,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend([
        "--socket".into(),
        dir.join(format!("{node}.sock")).display().to_string(),
        "--data-root".into(),
        dir.join(node).display().to_string(),
        "--docker-socket".into(),
        engine.display().to_string(),
    ]);
    if failsafe {
        args.push("--failsafe".into());
    }
    crate::support::spawn(&args)
}

fn ready(transfer: &str) -> bool {
    std::net::TcpStream::connect(transfer).is_ok()
        && raw(
            crate::support::Conn::Tcp(transfer),
            "GET",
            "/v1/ready",
            &[],
            "",
        )
        .0 == 200
}

fn peers(transfer: &str) -> Option<f64> {
    let (_, _, v) = raw(
        crate::support::Conn::Tcp(transfer),
        "GET",
        "/metrics",
        &[],
        "",
    );
    v.as_str()?.lines().find_map(|l| {
        l.strip_prefix("berth_agent_failsafe_peers ")?
            .trim()
            .parse()
            .ok()
    })
}

fn vote(transfer: &str) -> String {
    let (st, _, v) = raw(
        crate::support::Conn::Tcp(transfer),
        "POST",
        "/v1/failsafe/vote",
        &[],
        "",
    );
    assert_eq!(st, 200, "{v}");
    v.as_str().unwrap_or_default().to_string()
}

/// Two agents on the fast profile (1.5 s lease) with `--failsafe`; the control service stops:
/// each keeps its lease (ready, so writes admitted) for four leases on the other's votes. Then
/// one agent stops: the other's failsafe ends and its lease runs out.
#[test]
fn with_failsafe_agents_that_reach_each_other_keep_their_lease_while_control_is_down() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut control = ControlSvc::start_with(
        &dir.path().join("state"),
        None,
        format!("127.0.0.1:{}", free_port()),
        &["--timing", "fast"],
    );
    let (t1, t2) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let _a1 = agent(dir.path(), "n1", &control.url(), &t1, true);
    let mut a2 = agent(dir.path(), "n2", &control.url(), &t2, true);
    wait_until("both agents ready", Duration::from_secs(20), || {
        ready(&t1) && ready(&t2)
    });
    // Each knows the other: an agent registered after another's last grant is in none of its
    // rounds (rule 9's gap), which this test is not about.
    wait_until("each agent lists its peer", Duration::from_secs(20), || {
        [&t1, &t2].iter().all(|t| peers(t) == Some(1.0))
    });
    assert_eq!(vote(&t1), "reachable", "the control service answers it");
    control.proc.stop();
    wait_until("a vote says unreachable", Duration::from_secs(10), || {
        vote(&t2) == "unreachable"
    });
    // Four fast leases with no control service: both stay ready all along.
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        assert!(ready(&t1), "n1 lost its lease with failsafe on");
        assert!(ready(&t2), "n2 lost its lease with failsafe on");
        std::thread::sleep(Duration::from_millis(100));
    }
    a2.stop();
    wait_until(
        "n1's lease runs out once a peer does not answer",
        Duration::from_secs(10),
        || !ready(&t1),
    );
}

/// The same without `--failsafe`: the lease runs out once the control service is gone, and a
/// vote answers `off`.
#[test]
fn without_failsafe_the_lease_runs_out_when_control_is_down() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut control = ControlSvc::start_with(
        &dir.path().join("state"),
        None,
        format!("127.0.0.1:{}", free_port()),
        &["--timing", "fast"],
    );
    let (t1, t2) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let _a1 = agent(dir.path(), "n1", &control.url(), &t1, false);
    let _a2 = agent(dir.path(), "n2", &control.url(), &t2, false);
    wait_until("both agents ready", Duration::from_secs(20), || {
        ready(&t1) && ready(&t2)
    });
    control.proc.stop();
    wait_until("n1's lease runs out", Duration::from_secs(10), || {
        !ready(&t1)
    });
    assert_eq!(vote(&t2), "off");
}
