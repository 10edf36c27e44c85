//! Load on the control path: `VolumeDriver.Create` and `VolumeDriver.Mount` per second, and their
//! latency, at 1, 10 and 100 concurrent callers. The real binary (release) as the control service
//! (redb store on disk, one fsync per commit batch) and two agents, driven over their plugin
//! sockets by caller threads split evenly between the two agents, each call on a fresh
//! connection as the engine makes it. A bench binary, not criterion: each point is one timed
//! burst of many calls, reported as throughput and latency percentiles (nearest rank).
//!
//! Phases per concurrency level: Create of distinct names (each is a lookup and a create at the
//! control service); Mount of each (lookup, an empty local copy made, the claim committed, the
//! agent's mount table rewritten); Unmount of each (not reported). Datasets accumulate across
//! levels, so the 100-caller level runs against the most state.
//!
//! `cargo bench -p berth-volume --bench control_load` (env `BERTH_BENCH_OPS`, default 2000: the
//! calls per phase at 10 and 100 callers; a tenth of that at 1 caller).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_berth-volume");

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        if !matches!(self.0.try_wait(), Ok(None)) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn spawn(args: &[String]) -> Proc {
    Proc(
        Command::new(BIN)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn berth-volume"),
    )
}

fn wait(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(30), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One plugin call on a fresh connection; panics unless `Err` is empty.
fn call(socket: &Path, endpoint: &str, body: &str) {
    let mut s = UnixStream::connect(socket).expect("connect");
    write!(
        s,
        "POST {endpoint} HTTP/1.1\r\nHost: plugin\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    assert!(
        out.contains("\"Err\":\"\""),
        "{endpoint} {body}: {}",
        out.lines().last().unwrap_or_default()
    );
}

/// Runs `per_caller` calls on each of `callers` threads; returns (wall time, sorted latencies).
fn burst(
    sockets: &[PathBuf],
    callers: usize,
    per_caller: usize,
    op: impl Fn(&Path, usize, usize) + Sync,
) -> (Duration, Vec<Duration>) {
    let start = Instant::now();
    let mut lat: Vec<Duration> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..callers)
            .map(|c| {
                let (sock, op) = (&sockets[c % sockets.len()], &op);
                s.spawn(move || {
                    (0..per_caller)
                        .map(|i| {
                            let t = Instant::now();
                            op(sock, c, i);
                            t.elapsed()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().expect("caller"))
            .collect()
    });
    let wall = start.elapsed();
    lat.sort();
    (wall, lat)
}

fn pct(sorted: &[Duration], p: usize) -> f64 {
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank - 1].as_secs_f64() * 1000.0
}

fn main() {
    // `cargo bench` passes `--bench`; this binary takes no other argument.
    let ops: usize = std::env::var("BERTH_BENCH_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let dir = tempfile::tempdir().expect("tmp");
    let addr = format!("127.0.0.1:{}", free_port());
    let _control = spawn(&[
        "control".into(),
        "--listen".into(),
        addr.clone(),
        "--state".into(),
        dir.path().join("state").display().to_string(),
        "--insecure".into(),
    ]);
    wait("control", || std::net::TcpStream::connect(&addr).is_ok());
    let mut agents = Vec::new();
    let mut sockets = Vec::new();
    for n in ["a", "b"] {
        let sock = dir.path().join(format!("{n}.sock"));
        agents.push(spawn(&[
            "agent".into(),
            "--node-id".into(),
            format!("node-{n}"),
            "--socket".into(),
            sock.display().to_string(),
            "--data-root".into(),
            dir.path().join(n).display().to_string(),
            "--control".into(),
            format!("http://{addr}"),
            "--listen".into(),
            format!("127.0.0.1:{}", free_port()),
        ]));
        wait("agent", || UnixStream::connect(&sock).is_ok());
        sockets.push(sock);
    }
    println!(
        "| callers | phase | calls | datasets before | per second | p50 | p99 | max |\n|---|---|---|---|---|---|---|---|"
    );
    let mut existing = 0usize;
    for callers in [1usize, 10, 100] {
        let calls = if callers == 1 { ops / 10 } else { ops };
        let per = calls / callers;
        let name = |c: usize, i: usize| format!("load-{callers}-{c}-{i}");
        let report = |phase: &str, (wall, lat): (Duration, Vec<Duration>), before: usize| {
            println!(
                "| {callers} | {phase} | {} | {before} | {:.0} | {:.1} ms | {:.1} ms | {:.1} ms |",
                lat.len(),
                lat.len() as f64 / wall.as_secs_f64(),
                pct(&lat, 50),
                pct(&lat, 99),
                pct(&lat, 100),
            );
        };
        let r = burst(&sockets, callers, per, |s, c, i| {
            call(
                s,
                "/VolumeDriver.Create",
                &format!(r#"{{"Name":"{}","Opts":{{}}}}"#, name(c, i)),
            )
        });
        report("Create", r, existing);
        existing += per * callers;
        let r = burst(&sockets, callers, per, |s, c, i| {
            call(
                s,
                "/VolumeDriver.Mount",
                &format!(r#"{{"Name":"{}","ID":"ctr-{c}-{i}"}}"#, name(c, i)),
            )
        });
        report("Mount", r, existing);
        burst(&sockets, callers, per, |s, c, i| {
            call(
                s,
                "/VolumeDriver.Unmount",
                &format!(r#"{{"Name":"{}","ID":"ctr-{c}-{i}"}}"#, name(c, i)),
            )
        });
    }
    drop(agents);
}
