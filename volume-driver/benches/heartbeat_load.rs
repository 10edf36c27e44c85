//! Heartbeat load on the control service: what 1,000 nodes' agents cost it under each timing
//! profile (`--timing default|fast`). The real binary as a single embedded control service
//! (redb store on disk; a heartbeat writes nothing to it), 1,000 registered nodes, and caller
//! threads that heartbeat every node once per interval of the profile, each on its own
//! keep-alive connection as an agent's client keeps one. A bench binary, not criterion: each
//! point is one timed run, reported as heartbeats/s answered, latency percentiles (nearest
//! rank) and the control process's CPU (user + system time over the run, from /proc).
//!
//! Then the same without pacing (every caller sends back to back) for the ceiling on this
//! machine: the heartbeats/s one instance answers at most, and how many nodes that is at each
//! profile's interval.
//!
//! `cargo bench -p berth-volume --bench heartbeat_load` (env `BERTH_BENCH_NODES`, default 1000;
//! `BERTH_BENCH_SECS`, default 10: the length of each timed run).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_control_model::profile::Profile;

const BIN: &str = env!("CARGO_BIN_EXE_berth-volume");
const CALLERS: usize = 8;

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

/// One HTTP/1.1 client connection, kept alive across requests.
struct Conn {
    r: BufReader<TcpStream>,
    addr: String,
}

impl Conn {
    fn open(addr: &str) -> Conn {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_nodelay(true).expect("nodelay");
        Conn {
            r: BufReader::new(s),
            addr: addr.to_string(),
        }
    }

    /// POSTs `body` to `path`; returns the status.
    fn post(&mut self, path: &str, body: &str) -> u16 {
        write!(
            self.r.get_mut(),
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .expect("write");
        let mut line = String::new();
        self.r.read_line(&mut line).expect("status line");
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {line:?}"));
        let mut len = 0usize;
        loop {
            line.clear();
            self.r.read_line(&mut line).expect("header");
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().expect("length");
            }
        }
        let mut buf = vec![0; len];
        self.r.read_exact(&mut buf).expect("body");
        status
    }
}

/// The control process's user + system CPU time so far.
fn cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime), counted from the state field (3).
    let ticks: u64 = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    let hz = 100; // USER_HZ on Linux
    Duration::from_millis(ticks * 1000 / hz)
}

fn heartbeat_body(p: Profile) -> String {
    let v = p.values();
    format!(
        r#"{{"interval_ms":{},"self_fence_deadline_ms":{},"drift_margin_ms":{},"docker_reachable":true}}"#,
        v.interval.as_millis(),
        v.self_fence_deadline.as_millis(),
        v.drift_margin.as_millis()
    )
}

struct Point {
    sent: usize,
    per_sec: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    cpu_share: f64,
}

/// Heartbeats `nodes` nodes for `secs`, each once per `every` (`None`: back to back).
fn run(
    addr: &str,
    pid: u32,
    p: Profile,
    nodes: usize,
    every: Option<Duration>,
    secs: u64,
) -> Point {
    let body = heartbeat_body(p);
    let cpu0 = cpu(pid);
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs(secs);
    let threads: Vec<_> = (0..CALLERS)
        .map(|c| {
            let (addr, body) = (addr.to_string(), body.clone());
            std::thread::spawn(move || {
                let mut conn = Conn::open(&addr);
                let mine: Vec<usize> = (c..nodes).step_by(CALLERS).collect();
                let mut lat = Vec::new();
                let mut round = 0u32;
                'out: loop {
                    let start = Instant::now();
                    for n in &mine {
                        if Instant::now() >= end {
                            break 'out;
                        }
                        let t = Instant::now();
                        let status = conn.post(&format!("/v1/berth/nodes/n{n}/heartbeat"), &body);
                        assert_eq!(status, 200, "heartbeat of n{n}");
                        lat.push(t.elapsed());
                    }
                    round += 1;
                    if let Some(every) = every {
                        let next = t0 + every * round;
                        if next > start {
                            std::thread::sleep(next.saturating_duration_since(Instant::now()));
                        }
                    }
                }
                lat
            })
        })
        .collect();
    let mut lat: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("caller"))
        .collect();
    let wall = t0.elapsed();
    let used = cpu(pid) - cpu0;
    lat.sort();
    let rank = |q: f64| lat[((q * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1];
    Point {
        sent: lat.len(),
        per_sec: lat.len() as f64 / wall.as_secs_f64(),
        p50: rank(0.50),
        p99: rank(0.99),
        max: *lat.last().expect("a heartbeat"),
        cpu_share: used.as_secs_f64() / wall.as_secs_f64(),
    }
}

fn main() {
    let nodes: usize = std::env::var("BERTH_BENCH_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let secs: u64 = std::env::var("BERTH_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    println!(
        "| profile | nodes | pacing | heartbeats | per second | p50 | p99 | max | control CPU (cores) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for p in [Profile::Default, Profile::Fast] {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr = format!("127.0.0.1:{}", free_port());
        let ctl = Proc(
            Command::new(BIN)
                .args(["control", "--insecure", "--listen", &addr, "--timing"])
                .arg(p.to_string())
                .arg("--state")
                .arg(dir.path().join("state"))
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn berth-volume control"),
        );
        let t = Instant::now();
        let mut conn = loop {
            if TcpStream::connect(&addr).is_ok() {
                break Conn::open(&addr);
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "control never listened"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        for n in 0..nodes {
            let body = format!(r#"{{"uuid":"n{n}","host":"h{n}","transfer":"10.0.0.1:4524"}}"#);
            let s = conn.post("/v1/state/nodes", &body);
            assert!((200..300).contains(&s), "register n{n}: {s}");
        }
        let interval = p.values().interval;
        for (pacing, every) in [
            (format!("every {} ms", interval.as_millis()), Some(interval)),
            ("back to back".to_string(), None),
        ] {
            let pt = run(&addr, ctl.0.id(), p, nodes, every, secs);
            println!(
                "| {p} | {nodes} | {pacing} | {} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} |",
                pt.sent,
                pt.per_sec,
                pt.p50.as_secs_f64() * 1e3,
                pt.p99.as_secs_f64() * 1e3,
                pt.max.as_secs_f64() * 1e3,
                pt.cpu_share
            );
        }
    }
}
