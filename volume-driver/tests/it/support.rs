//! Spawning the real binary (control + agents) and speaking raw HTTP to it, blocking, so the
//! tests depend on nothing but std and serde_json.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_berth-volume");

/// A child process stopped with SIGTERM on drop.
pub struct Proc {
    pub child: Child,
}

impl Proc {
    /// SIGTERM and wait; returns whether it exited cleanly.
    pub fn stop(&mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Polls `f` until it holds; fails the test naming `what` after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn spawn(args: &[String]) -> Proc {
    let child = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(if std::env::var_os("BERTH_TEST_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .expect("spawn berth-volume");
    Proc { child }
}

/// A control service on a fresh loopback port.
pub struct ControlSvc {
    pub proc: Proc,
    pub addr: String,
}

impl ControlSvc {
    pub fn start(state: &Path, token: Option<&Path>) -> ControlSvc {
        Self::start_on(state, token, format!("127.0.0.1:{}", free_port()))
    }

    pub fn start_on(state: &Path, token: Option<&Path>, addr: String) -> ControlSvc {
        Self::start_with(state, token, addr, &[])
    }

    /// `start_on` with more arguments (`--lease 2s`, …).
    pub fn start_with(
        state: &Path,
        token: Option<&Path>,
        addr: String,
        extra: &[&str],
    ) -> ControlSvc {
        let mut args = vec![
            "control".into(),
            "--listen".into(),
            addr.clone(),
            "--state".into(),
            state.display().to_string(),
        ];
        match token {
            Some(t) => args.extend(["--token-file".into(), t.display().to_string()]),
            // A test's own loopback service; a real one refuses to start without a token.
            None => args.push("--insecure".into()),
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let proc = spawn(&args);
        wait_until("control port", Duration::from_secs(20), || {
            std::net::TcpStream::connect(&addr).is_ok()
        });
        ControlSvc { proc, addr }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// One node's agent.
pub struct AgentSvc {
    proc: Proc,
    pub socket: PathBuf,
    pub data_root: PathBuf,
    /// Everything but `--listen`, which is fresh on every (re)start.
    args: Vec<String>,
}

impl AgentSvc {
    pub fn start(
        node: &str,
        socket: &Path,
        data_root: &Path,
        shared: &Path,
        control: &str,
        extra: &[&str],
    ) -> AgentSvc {
        let mut args: Vec<String> = vec![
            "agent".into(),
            "--node-id".into(),
            node.into(),
            "--socket".into(),
            socket.display().to_string(),
            "--data-root".into(),
            data_root.display().to_string(),
            "--shared-root".into(),
            shared.display().to_string(),
            "--control".into(),
            control.into(),
        ];
        // These tests are about the control rules and the copies: containers get the copy
        // itself, unless a test asks for the data path (`datapath.rs`). And the agent's engine
        // answers its ping and nothing else unless a test fakes more: the host's engine runs
        // none of these "containers", and an agent asking it would take every mount for an
        // orphan; an engine that does not answer at all would get the node no lease.
        if !extra.contains(&"--data-path") {
            args.extend(["--data-path".into(), "direct".into()]);
        }
        if !extra.contains(&"--docker-socket") {
            let engine = data_root.with_extension("engine.sock");
            ping_only_engine(&engine);
            args.extend(["--docker-socket".into(), engine.display().to_string()]);
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        AgentSvc {
            proc: Self::launch(socket, &args),
            socket: socket.into(),
            data_root: data_root.into(),
            args,
        }
    }

    fn launch(socket: &Path, args: &[String]) -> Proc {
        let _ = std::fs::remove_file(socket);
        let mut args = args.to_vec();
        args.extend(["--listen".into(), format!("127.0.0.1:{}", free_port())]);
        let proc = spawn(&args);
        wait_until("agent socket", Duration::from_secs(20), || {
            UnixStream::connect(socket).is_ok()
        });
        proc
    }

    /// SIGKILL: no cleanup, no flush, as a crash or an OOM kill would leave things.
    pub fn kill(&mut self) {
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
    }

    /// The agent's process ID (to freeze it with SIGSTOP, as a node that hangs).
    pub fn pid(&self) -> u32 {
        self.proc.child.id()
    }

    /// SIGTERM: the agent drains and removes its socket, as `docker plugin disable` or a
    /// service stop would.
    pub fn term(&mut self) {
        self.proc.stop();
    }

    /// Starts the agent again with the same node ID, socket and data root.
    pub fn restart(&mut self) {
        self.proc = Self::launch(&self.socket, &self.args);
    }

    /// One plugin call; returns the reply JSON.
    pub fn call(&self, endpoint: &str, body: &str) -> Value {
        let (_, _, v) = raw(Conn::Unix(&self.socket), "POST", endpoint, &[], body);
        v
    }
}

pub enum Conn<'a> {
    Unix(&'a Path),
    Tcp(&'a str),
}

/// A raw HTTP/1.1 exchange with `Connection: close`: (status, head, JSON body or Null).
pub fn raw(
    conn: Conn<'_>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, Value) {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    let mut out = Vec::new();
    match conn {
        Conn::Unix(p) => {
            let mut s = UnixStream::connect(p).expect("connect unix");
            s.write_all(req.as_bytes()).expect("write");
            s.read_to_end(&mut out).expect("read");
        }
        Conn::Tcp(a) => {
            let mut s = std::net::TcpStream::connect(a).expect("connect tcp");
            s.write_all(req.as_bytes()).expect("write");
            s.read_to_end(&mut out).expect("read");
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP reply");
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let v = if body.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).unwrap_or(Value::String(body.into()))
    };
    (status, head.to_ascii_lowercase(), v)
}

/// The control API over TCP.
pub fn api(
    c: &ControlSvc,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, Value) {
    raw(Conn::Tcp(&c.addr), method, path, headers, body)
}

/// A TCP forwarder on a fresh loopback port that can be cut: while cut, every connection is
/// closed unanswered, as a partition between an agent and the control service would leave it.
pub struct Proxy {
    pub addr: String,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Both ends of every connection it forwards, so a cut also breaks the ones already open
    /// (the agents' HTTP client keeps its connections).
    open: std::sync::Arc<Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    pub fn start(upstream: &str) -> Proxy {
        use std::sync::atomic::Ordering;
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = l.local_addr().expect("addr").to_string();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let open = std::sync::Arc::new(Mutex::new(Vec::new()));
        let (c, up, o) = (cut.clone(), upstream.to_string(), open.clone());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(down) = conn else { continue };
                if c.load(Ordering::SeqCst) {
                    drop(down);
                    continue;
                }
                let Ok(upc) = std::net::TcpStream::connect(&up) else {
                    continue;
                };
                {
                    let mut o = o.lock().expect("lock");
                    o.push(down.try_clone().expect("clone"));
                    o.push(upc.try_clone().expect("clone"));
                }
                let pipe = |mut from: std::net::TcpStream, mut to: std::net::TcpStream| {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                };
                pipe(
                    down.try_clone().expect("clone"),
                    upc.try_clone().expect("clone"),
                );
                pipe(upc, down);
            }
        });
        Proxy { addr, cut, open }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Refuses new connections and breaks the open ones.
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for s in self.open.lock().expect("lock").drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn heal(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `api`, repeated while the control service answers 423 (the volume's holder still has its
/// lease), after the wait the refusal names, as the executor does. Returns the first other
/// answer and how many refusals came before it.
pub fn api_after_lease(
    c: &ControlSvc,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> ((u16, String, Value), usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut refused = 0;
    loop {
        let r = api(c, method, path, headers, body);
        if r.0 != 423 {
            return (r, refused);
        }
        refused += 1;
        assert!(
            Instant::now() < deadline,
            "still locked after 60 s: {}",
            r.2
        );
        let ms = r.2["retry_after_ms"]
            .as_u64()
            .expect("a 423 says when to retry");
        std::thread::sleep(Duration::from_millis(ms.clamp(1, 1_000)));
    }
}

/// A temp dir, two agents (nodes A and B) with separate data roots and one shared root.
pub struct TwoNodes {
    _dir: tempfile::TempDir,
    /// `Bearer …` when the cluster runs with a token.
    pub auth: Option<String>,
    pub control: ControlSvc,
    pub a: AgentSvc,
    pub b: AgentSvc,
}

impl TwoNodes {
    pub fn start() -> TwoNodes {
        Self::start_with(&[], false)
    }

    /// Both agents get `extra` arguments; `secure` gives the control service and both agents
    /// one bearer token (so agent-to-agent transfers need it too).
    pub fn start_with(extra: &[&str], secure: bool) -> TwoNodes {
        let dir = tempfile::tempdir().expect("tmp");
        let token = dir.path().join("token");
        std::fs::write(&token, "cluster-s3cret\n").expect("token file");
        let control =
            ControlSvc::start(&dir.path().join("state"), secure.then_some(token.as_path()));
        let token_arg = token.display().to_string();
        let mut extra: Vec<&str> = extra.to_vec();
        if secure {
            extra.extend(["--token-file", &token_arg]);
        }
        let extra = &extra[..];
        let (sa, sb) = (dir.path().join("a.sock"), dir.path().join("b.sock"));
        let shared = dir.path().join("shared");
        let a = AgentSvc::start(
            "node-a",
            &sa,
            &dir.path().join("a"),
            &shared,
            &control.url(),
            extra,
        );
        let b = AgentSvc::start(
            "node-b",
            &sb,
            &dir.path().join("b"),
            &shared,
            &control.url(),
            extra,
        );
        TwoNodes {
            _dir: dir,
            auth: secure.then(|| "Bearer cluster-s3cret".to_string()),
            control,
            a,
            b,
        }
    }

    /// Headers every control API call of a test needs.
    pub fn headers(&self) -> Vec<(&str, &str)> {
        self.auth
            .as_deref()
            .map(|a| ("authorization", a))
            .into_iter()
            .collect()
    }

    /// The dataset configuration named `name`.
    pub fn dataset(&self, name: &str) -> Value {
        let (_, _, v) = api(
            &self.control,
            "GET",
            "/v1/configuration/datasets",
            &self.headers(),
            "",
        );
        v.as_array()
            .expect("list")
            .iter()
            .find(|d| d["metadata"]["name"] == name && d["deleted"] == false)
            .cloned()
            .unwrap_or(Value::Null)
    }
}

impl Drop for TwoNodes {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.a.socket);
        let _ = std::fs::remove_file(&self.b.socket);
    }
}

/// A control service with 2 s leases and 200 ms heartbeats: lease tests see a fence within
/// seconds.
pub const FAST_LEASE_CONTROL: &[&str] = &[
    "--heartbeat-interval",
    "200ms",
    "--heartbeat-misses",
    "3",
    "--lease",
    "2s",
];

/// An agent matching `FAST_LEASE_CONTROL`, serving its mounts through FUSE, its containers
/// those of the engine stand-in listening on `engine`.
pub fn fuse_agent(engine: &str) -> [&str; 10] {
    [
        "--heartbeat-interval",
        "200ms",
        "--self-fence-deadline",
        "600ms",
        "--drift-margin",
        "200ms",
        "--docker-socket",
        engine,
        "--data-path",
        "fuse",
    ]
}

/// Whether this machine can serve FUSE mounts (root and /dev/fuse). Outside CI a test that needs
/// it says NOT RUN and returns; under `CI=true` a missing prerequisite fails the test.
pub fn fuse_available(test: &str) -> bool {
    let root = rustix::process::geteuid().is_root();
    let dev = std::path::Path::new("/dev/fuse").exists();
    if root && dev {
        return true;
    }
    let why = if !root { "root" } else { "/dev/fuse" };
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test} needs {why} (CI=true: a test that did not run must not pass)"
    );
    eprintln!("NOT RUN: {test} needs {why}");
    false
}

/// A request line without the API version its path may start with (`GET /v1.53/_ping` →
/// `GET /_ping`): the engine answers both forms, and bollard sends the versioned one.
fn unversioned(line: &str) -> String {
    let Some((method, rest)) = line.split_once(' ') else {
        return line.to_string();
    };
    let path = match rest.strip_prefix("/v").and_then(|r| r.split_once('/')) {
        Some((v, p)) if !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.') => {
            format!("/{p}")
        }
        _ => rest.to_string(),
    };
    format!("{method} {path}")
}

/// An Engine API stand-in that answers `GET /_ping` and 404s every other call: an engine that
/// is up and runs no container the agent can see.
pub fn ping_only_engine(socket: &Path) {
    let _ = std::fs::remove_file(socket);
    let l = UnixListener::bind(socket).expect("bind engine socket");
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut r = BufReader::new(c.try_clone().expect("clone"));
            let mut first = String::new();
            let _ = r.read_line(&mut first);
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            let (code, body) = if unversioned(&first).starts_with("GET /_ping") {
                (200, "OK")
            } else {
                (404, r#"{"message":"not faked"}"#)
            };
            let _ = write!(
                c,
                "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
}

/// The Engine API stand-in: one running container, `writer`, mounting `volume` of `driver`
/// until it is stopped.
pub struct FakeEngine {
    stopped: Arc<Mutex<Option<Instant>>>,
}

impl FakeEngine {
    pub fn start(socket: &Path, volume: &str, driver: &str) -> FakeEngine {
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
                let first = unversioned(head.lines().next().unwrap_or_default());
                let (code, body) = if first.starts_with("GET /_ping") {
                    (200, "OK".to_string())
                } else if first.starts_with("GET /containers/json") {
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

    pub fn stopped_at(&self) -> Option<Instant> {
        *self.stopped.lock().expect("lock")
    }
}

/// A container's writer on a mountpoint, as a database's log: append a line, `fsync`, and only
/// then acknowledge it (a line on its stdout); on the first error it exits, saying why. A child
/// process, not a thread: a thread of the test process waiting on a mount whose server is
/// frozen would hang the test process's own process spawning.
pub struct Writer {
    acks: Arc<Mutex<Vec<Instant>>>,
    failed: Arc<Mutex<Option<(Instant, String)>>>,
    child: Child,
}

impl Writer {
    pub fn start(file: PathBuf) -> Writer {
        let mut child = Command::new("sh")
            .args([
                "-c",
                r#"n=0; while :; do echo "$n" >> "$1" && sync "$1" || exit 1; echo "$n"; n=$((n+1)); sleep 0.02; done"#,
                "writer",
            ])
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the writer");
        let acks = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(None));
        let (out, mut err) = (
            child.stdout.take().expect("stdout"),
            child.stderr.take().expect("stderr"),
        );
        let (a, f) = (acks.clone(), failed.clone());
        std::thread::spawn(move || {
            for _ in BufReader::new(out).lines().map_while(Result::ok) {
                a.lock().expect("lock").push(Instant::now());
            }
            let mut why = String::new();
            let _ = err.read_to_string(&mut why);
            *f.lock().expect("lock") = Some((Instant::now(), why));
        });
        Writer {
            acks,
            failed,
            child,
        }
    }

    pub fn acks(&self) -> Vec<Instant> {
        self.acks.lock().expect("lock").clone()
    }

    /// When the writer failed and what it said, once it has.
    pub fn failed(&self) -> Option<(Instant, String)> {
        self.failed.lock().expect("lock").clone()
    }

    /// Waits up to `limit` for the writer to fail.
    pub fn wait_failed(&self, limit: Duration) -> Option<(Instant, String)> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(f) = self.failed() {
                return Some(f);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
