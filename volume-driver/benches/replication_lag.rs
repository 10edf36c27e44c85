//! The RPO of `backend=replicated`, measured: a steady write load on the primary, the standby's
//! lag as the control service reports it (sampled every 100 ms), then the primary killed
//! (writer stopped, agent SIGKILLed at once), fenced, the standby promoted, and the acknowledged
//! writes missing from the promoted copy counted. The real binary (release): a control service
//! and two agents on this machine (so both ends share its cores and disk).
//!
//! Two loads, both 4 KiB writes each followed by `fsync` (a write is acknowledged when its
//! fsync returns), at `BERTH_BENCH_RATE` writes per second (default 100):
//! - `wal`: appends to 4 MiB segment files, a new segment when one is full (a database's log);
//!   a ship re-sends the active segment and any new ones, so at most ~4 MiB;
//! - `pages`: overwrites random 4 KiB pages of one 64 MiB file in place (a page store); a ship
//!   re-sends the whole file, since the transfer is incremental per file, not per block.
//!
//! Lost writes are counted for `wal` (the promoted log must be a gap-free prefix of what was
//! acknowledged; the test checks it); for `pages` only the lag is reported.
//!
//! `cargo bench -p berth-volume --bench replication_lag` (env `BERTH_BENCH_SECS` per run, default
//! 20; `BERTH_BENCH_FAILOVERS`, default 5; `BERTH_BENCH_INTERVAL`, the agents' `--ship-interval`,
//! default `1s`; `BERTH_BENCH_LOADS`, default `wal,pages`).

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_berth-volume");
const REC: usize = 4096;
const SEGMENT: u64 = 4 << 20;
const PAGES_FILE: u64 = 64 << 20;

struct Proc(Child);

impl Proc {
    fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.0.id().to_string()])
                .status();
            let _ = self.0.wait();
        }
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
        assert!(t.elapsed() < Duration::from_secs(60), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn http(conn: &mut dyn ReadWrite, method: &str, path: &str, body: &str) -> (u16, Value) {
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut out = String::new();
    conn.read_to_string(&mut out).expect("read");
    let (head, body) = out.split_once("\r\n\r\n").expect("reply");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn plugin(sock: &Path, ep: &str, body: &str) -> Value {
    let mut s = UnixStream::connect(sock).expect("connect");
    let (_, v) = http(&mut s, "POST", ep, body);
    assert_eq!(v["Err"], "", "{ep} {body}: {v}");
    v
}

fn api(addr: &str, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    http(&mut s, method, path, body)
}

struct Cluster {
    dir: tempfile::TempDir,
    addr: String,
    interval: String,
    _control: Proc,
    agents: Vec<(Proc, PathBuf)>,
}

impl Cluster {
    fn start(interval: &str) -> Cluster {
        let dir = tempfile::tempdir().expect("tmp");
        let addr = format!("127.0.0.1:{}", free_port());
        let control = spawn(&[
            "control".into(),
            "--listen".into(),
            addr.clone(),
            "--state".into(),
            dir.path().join("state").display().to_string(),
            "--insecure".into(),
        ]);
        wait("control", || std::net::TcpStream::connect(&addr).is_ok());
        let mut c = Cluster {
            dir,
            addr,
            interval: interval.to_string(),
            _control: control,
            agents: Vec::new(),
        };
        for n in ["a", "b"] {
            let p = c.agent(n);
            c.agents.push(p);
        }
        c
    }

    fn agent(&self, n: &str) -> (Proc, PathBuf) {
        let sock = self.dir.path().join(format!("{n}.sock"));
        let _ = std::fs::remove_file(&sock);
        let p = spawn(&[
            "agent".into(),
            "--node-id".into(),
            format!("node-{n}"),
            "--socket".into(),
            sock.display().to_string(),
            "--data-root".into(),
            self.dir.path().join(n).display().to_string(),
            "--control".into(),
            format!("http://{}", self.addr),
            "--listen".into(),
            format!("127.0.0.1:{}", free_port()),
            "--ship-interval".into(),
            self.interval.clone(),
        ]);
        wait("agent", || UnixStream::connect(&sock).is_ok());
        (p, sock)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Load {
    Wal,
    Pages,
}

/// The writer: returns the acknowledgement instant of every write, in order.
fn write_load(dir: &Path, load: Load, rate: u64, stop: &AtomicBool) -> Vec<Instant> {
    let gap = Duration::from_secs(1) / rate as u32;
    let mut acks = Vec::new();
    let mut rec = vec![b'.'; REC];
    let mut next = Instant::now();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut pages = match load {
        Load::Pages => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(dir.join("pages"))
                .expect("pages");
            f.set_len(PAGES_FILE).expect("size");
            Some(f)
        }
        Load::Wal => {
            std::fs::create_dir_all(dir.join("wal")).expect("wal dir");
            None
        }
    };
    let mut seg: Option<(u64, std::fs::File)> = None;
    while !stop.load(Ordering::Relaxed) {
        let seq = acks.len() as u64;
        rec[..20].copy_from_slice(format!("{seq:019}\n").as_bytes());
        match load {
            Load::Wal => {
                let n = seq * REC as u64 / SEGMENT;
                if seg.as_ref().is_none_or(|(s, _)| *s != n) {
                    let f = std::fs::File::create(dir.join(format!("wal/{n:08}.seg")))
                        .expect("segment");
                    seg = Some((n, f));
                }
                let f = &mut seg.as_mut().expect("segment").1;
                f.write_all(&rec).expect("append");
                f.sync_data().expect("fsync");
            }
            Load::Pages => {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let f = pages.as_mut().expect("pages");
                f.seek(SeekFrom::Start(
                    (x % (PAGES_FILE / REC as u64)) * REC as u64,
                ))
                .expect("seek");
                f.write_all(&rec).expect("write");
                f.sync_data().expect("fsync");
            }
        }
        acks.push(Instant::now());
        next += gap;
        if let Some(d) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    acks
}

/// The sequence numbers of the whole records in a copy's log, in order.
fn wal_records(dir: &Path) -> Vec<u64> {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir.join("wal"))
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    segs.sort();
    let mut out = Vec::new();
    for s in segs {
        let b = std::fs::read(&s).expect("segment");
        for r in b.chunks_exact(REC) {
            let seq = std::str::from_utf8(&r[..19])
                .ok()
                .and_then(|t| t.parse().ok())
                .expect("record");
            out.push(seq);
        }
    }
    out
}

fn pct(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[(sorted.len() * p).div_ceil(100).max(1) - 1]
}

fn main() {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let secs: u64 = env("BERTH_BENCH_SECS", "20")
        .parse()
        .expect("BERTH_BENCH_SECS");
    let runs: usize = env("BERTH_BENCH_FAILOVERS", "5")
        .parse()
        .expect("BERTH_BENCH_FAILOVERS");
    let rate: u64 = env("BERTH_BENCH_RATE", "100")
        .parse()
        .expect("BERTH_BENCH_RATE");
    let interval = env("BERTH_BENCH_INTERVAL", "1s");
    let loads: Vec<Load> = env("BERTH_BENCH_LOADS", "wal,pages")
        .split(',')
        .map(|l| match l {
            "wal" => Load::Wal,
            "pages" => Load::Pages,
            other => panic!("unknown load {other}"),
        })
        .collect();
    println!(
        "ship interval {interval}, {rate} writes/s of 4 KiB each fsynced, {secs} s per run, {runs} failovers per load"
    );
    println!(
        "| load | run | lag samples | lag min | lag p50 | lag p99 | lag max | reported at promotion | acknowledged | lost | loss window |\n|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for load in loads {
        let mut all_lags = Vec::new();
        let mut windows = Vec::new();
        let mut c = Cluster::start(&interval);
        for run in 0..runs {
            let name = format!("rep{run}");
            let (sock_a, sock_b) = (c.agents[0].1.clone(), c.agents[1].1.clone());
            plugin(
                &sock_a,
                "/VolumeDriver.Create",
                &format!(r#"{{"Name":"{name}","Opts":{{"backend":"replicated"}}}}"#),
            );
            let mp = plugin(
                &sock_a,
                "/VolumeDriver.Mount",
                &format!(r#"{{"Name":"{name}","ID":"w"}}"#),
            )["Mountpoint"]
                .as_str()
                .expect("mp")
                .to_string();
            let stop = Arc::new(AtomicBool::new(false));
            let writer = {
                let (mp, stop) = (PathBuf::from(&mp), stop.clone());
                std::thread::spawn(move || write_load(&mp, load, rate, &stop))
            };
            // Lag samples while the load runs (the first ship of an empty copy excluded).
            let mut lags = Vec::new();
            let started = Instant::now();
            // Runs end at different phases of the ship cycle.
            let run_for = Duration::from_secs(secs) + Duration::from_millis(run as u64 * 370);
            while started.elapsed() < run_for {
                std::thread::sleep(Duration::from_millis(100));
                let (_, v) = api(&c.addr, "GET", &format!("/v1/berth/volumes/{name}"), "");
                if started.elapsed() > Duration::from_secs(3)
                    && let Some(l) = v["standbys"][0]["lag_ms"].as_u64()
                {
                    lags.push(l);
                }
            }
            // The node dies: its writer stops and its agent is killed at the same instant.
            stop.store(true, Ordering::Relaxed);
            let acks = writer.join().expect("writer");
            let died = Instant::now();
            c.agents[0].0.kill9();
            // The operator's word that node-a is gone, as in a drill: without it the fence would
            // wait out node-a's lease (423), and the promotion's lag would count that wait.
            let (st, v) = api(&c.addr, "POST", "/v1/berth/nodes/node-a/dead", "");
            assert_eq!(st, 200, "{v}");
            let (st, v) = api(
                &c.addr,
                "POST",
                &format!("/v1/berth/volumes/{name}/fence"),
                r#"{"node":"node-a","expect_epoch":1}"#,
            );
            assert_eq!(st, 200, "{v}");
            let (st, v) = api(
                &c.addr,
                "POST",
                &format!("/v1/berth/volumes/{name}/assign"),
                r#"{"primary":"node-b","epoch":2,"mode":"promote"}"#,
            );
            assert_eq!(st, 200, "{v}");
            let reported = v["lag_ms"].as_u64().expect("lag_ms");
            let mpb = plugin(
                &sock_b,
                "/VolumeDriver.Mount",
                &format!(r#"{{"Name":"{name}","ID":"r"}}"#),
            )["Mountpoint"]
                .as_str()
                .expect("mp")
                .to_string();
            let (lost, window) = if load == Load::Wal {
                let have = wal_records(Path::new(&mpb));
                assert!(
                    have.iter().enumerate().all(|(i, s)| *s == i as u64),
                    "the promoted log is not a gap-free prefix"
                );
                let lost = acks.len() - have.len();
                let window = match have.len() {
                    0 => died.duration_since(acks[0]),
                    n if n == acks.len() => Duration::ZERO,
                    n => acks[acks.len() - 1].duration_since(acks[n - 1]),
                };
                windows.push(window.as_millis() as u64);
                (lost.to_string(), format!("{} ms", window.as_millis()))
            } else {
                ("—".into(), "—".into())
            };
            lags.sort();
            println!(
                "| {} | {run} | {} | {} ms | {} ms | {} ms | {} ms | {reported} ms | {} | {lost} | {window} |",
                if load == Load::Wal { "wal" } else { "pages" },
                lags.len(),
                lags.first().copied().unwrap_or(0),
                pct(&lags, 50),
                pct(&lags, 99),
                pct(&lags, 100),
                acks.len(),
            );
            all_lags.extend(lags);
            plugin(
                &sock_b,
                "/VolumeDriver.Unmount",
                &format!(r#"{{"Name":"{name}","ID":"r"}}"#),
            );
            plugin(
                &sock_b,
                "/VolumeDriver.Remove",
                &format!(r#"{{"Name":"{name}"}}"#),
            );
            c.agents[0] = c.agent("a");
        }
        all_lags.sort();
        windows.sort();
        let mean = all_lags.iter().sum::<u64>() / all_lags.len().max(1) as u64;
        println!(
            "\n{}: lag over all runs (n = {}): mean {mean} ms, p50 {} ms, p99 {} ms, max {} ms{}\n",
            if load == Load::Wal { "wal" } else { "pages" },
            all_lags.len(),
            pct(&all_lags, 50),
            pct(&all_lags, 99),
            pct(&all_lags, 100),
            if windows.is_empty() {
                String::new()
            } else {
                format!("; loss window per failover {:?} ms", windows)
            }
        );
    }
}
