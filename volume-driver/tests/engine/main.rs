//! Against real Docker Engines. `create_write_read_move_and_fence` and `managed_plugin_from_rootfs`
//! use this machine's engine (the agents register by socket discovery in /run/docker/plugins
//! under unique names; every volume, container, image and plugin is removed even on failure);
//! `swarm_service_keeps_its_volume_across_update_force` runs on a Swarm of its own
//! (`berth_lab::Lab`, a dockerd in a network namespace), never on the host engine's.
//!
//! `a_node_cut_off_from_control_holds_its_writer_container_and_stops_it_once_fenced` cuts an
//! agent off from the control service (a proxy between them stops forwarding) while a container
//! writes to its volume through the agent's data path on the host engine: the fence is accepted
//! only once the lease has ended, nothing is acknowledged after it, the container is not
//! restarted while cut off, and once back in contact the agent finds the mount fenced and stops
//! it through the engine's API.
//!
//! One engine knows a volume name under one driver only, so in the first test the two "nodes"
//! share one driver name: `/run/docker/plugins/NAME.sock` is a symlink to node A's agent socket,
//! re-pointed to node B's to play "the engine on node B" (the agent closes every connection, so
//! the engine re-dials the path on each call).
//!
//! The test image is `berth-testapp` (built static by the workspace, imported FROM scratch):
//! a container's command is a testapp subcommand, chained with `+`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use berth_lab::harness::{self, Test};
use berth_lab::{Engine, Lab, Need, TestImage, unique};
use serde_json::json;

#[allow(dead_code)]
#[path = "../it/support.rs"]
mod support;

use support::{TwoNodes, api};

const PLUGINS: &str = "/run/docker/plugins";

fn main() {
    harness::run(
        &[Need::Docker, Need::Root, Need::LabTools],
        vec![
            Test {
                name: "create_write_read_move_and_fence",
                body: create_write_read_move_and_fence,
            },
            Test {
                name: "swarm_service_keeps_its_volume_across_update_force",
                body: swarm_service_keeps_its_volume_across_update_force,
            },
            Test {
                name: "managed_plugin_from_rootfs",
                body: managed_plugin_from_rootfs,
            },
            Test {
                name: "a_node_cut_off_from_control_holds_its_writer_container_and_stops_it_once_fenced",
                body:
                    a_node_cut_off_from_control_holds_its_writer_container_and_stops_it_once_fenced,
            },
        ],
    )
}

fn docker(args: &[&str]) -> std::process::Output {
    Engine::host().docker(args)
}

fn docker_ok(args: &[&str]) -> String {
    Engine::host().docker_ok(args)
}

/// Removes containers and volumes created under a test's names, even on panic.
/// Declared after the agents, so it runs while they still answer (a volume whose driver is gone
/// cannot be removed).
struct Cleanup {
    engine: Engine,
    containers: Vec<String>,
    volumes: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = self.engine.docker(&["rm", "-f", c]);
        }
        for v in &self.volumes {
            let _ = self.engine.docker(&["volume", "rm", "-f", v]);
        }
    }
}

fn run(img: &TestImage, name: &str, driver: &str, vol: &str, cmd: &[&str]) -> String {
    docker_ok(
        &[
            &[
                "run",
                "--name",
                name,
                "--network",
                "none",
                "--mount",
                &format!("type=volume,source={vol},target=/data,volume-driver={driver}"),
                &img.tag,
            ][..],
            cmd,
        ]
        .concat(),
    )
}

fn create_write_read_move_and_fence() {
    let drv = unique("berthtest");
    let t = TwoNodes::start();
    let link = PathBuf::from(PLUGINS).join(format!("{drv}.sock"));
    let point = |to: &Path| {
        let tmp = link.with_extension("tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(to, &tmp).expect("symlink");
        std::fs::rename(&tmp, &link).expect("re-point plugin socket");
    };
    let _unlink = Unlink(link.clone());
    point(&t.a.socket);
    let (na, nb) = (drv.clone(), drv.clone());
    let img = TestImage::import(&Engine::host());
    let vol = unique("bv");
    let ca = [
        unique("bw"),
        unique("br"),
        unique("bf"),
        unique("bm"),
        unique("bs"),
    ];
    let mut clean = Cleanup {
        engine: Engine::host(),
        containers: ca.to_vec(),
        volumes: Vec::new(),
    };

    docker_ok(&["volume", "create", "-d", &na, "-o", "size=1GiB", &vol]);
    clean.volumes.push(vol.clone());
    // Filtered by driver: an unfiltered `ls` also asks every legacy driver this engine has ever
    // seen, and each one whose socket is gone costs the engine a ~15 s retry.
    let by_driver = format!("driver={na}");
    let ls = docker_ok(&[
        "volume",
        "ls",
        "--filter",
        &by_driver,
        "--format",
        "{{.Driver}} {{.Name}}",
    ]);
    assert!(ls.lines().any(|l| l == format!("{na} {vol}")), "{ls}");
    let inspect = docker_ok(&["volume", "inspect", &vol]);
    let v: serde_json::Value = serde_json::from_str(&inspect).expect("inspect JSON");
    assert_eq!(v[0]["Driver"], na.as_str());
    assert_eq!(v[0]["Scope"], "global", "{inspect}");
    assert_eq!(v[0]["Status"]["maximum_size"], "1073741824", "{inspect}");

    run(
        &img,
        &ca[0],
        &na,
        &vol,
        &[
            "put",
            "/data/x",
            "berth-42",
            "+",
            "fill",
            "/data/blob",
            "65536",
        ],
    );
    let out = run(&img, &ca[1], &na, &vol, &["cat", "/data/x"]);
    assert_eq!(out, "berth-42");
    let blob_a = run(&img, &ca[4], &na, &vol, &["size", "/data/blob"]);
    assert_eq!(blob_a, "65536");

    // Move A -> B through the Flocker API; B reads the same bytes; A is fenced.
    let id = t.dataset(&vol)["dataset_id"]
        .as_str()
        .expect("dataset id")
        .to_string();
    let (st, _, mv) = api(
        &t.control,
        "POST",
        &format!("/v1/configuration/datasets/{id}"),
        &[],
        &json!({"primary": "node-b"}).to_string(),
    );
    assert_eq!((st, mv["epoch"].as_u64()), (200, Some(2)), "{mv}");
    point(&t.b.socket);
    let out = run(
        &img,
        &ca[2],
        &nb,
        &vol,
        &["cat", "/data/x", "+", "size", "/data/blob"],
    );
    assert_eq!(out, format!("berth-42\n{blob_a}"));
    point(&t.a.socket);
    let fenced = docker(&[
        "run",
        "--name",
        &ca[3],
        "--network",
        "none",
        "--mount",
        &format!("type=volume,source={vol},target=/data,volume-driver={na}"),
        &img.tag,
        "cat",
        "/data/x",
    ]);
    let stderr = String::from_utf8_lossy(&fenced.stderr);
    assert!(!fenced.status.success(), "A must not mount after the move");
    assert!(
        stderr.contains("current primary is node-b at epoch 2"),
        "{stderr}"
    );

    for c in &ca {
        let _ = docker(&["rm", "-f", c]);
    }
    point(&t.b.socket);
    docker_ok(&["volume", "rm", &vol]);
    clean.volumes.clear();
    let ls = docker_ok(&["volume", "ls", "-q", "--filter", &by_driver]);
    assert!(!ls.lines().any(|l| l == vol), "{ls}");
    let socks = [t.a.socket.clone(), t.b.socket.clone()];
    drop(t);
    for s in socks {
        assert!(
            !s.exists(),
            "agent removes its socket on SIGTERM: {}",
            s.display()
        );
    }
}

/// Removes the plugin socket link on drop.
struct Unlink(PathBuf);

impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn wait_for(what: &str, secs: u64, f: impl FnMut() -> bool) {
    assert!(
        berth_lab::wait_for(Duration::from_secs(secs), f),
        "timed out after {secs}s waiting for {what}"
    );
}

/// `wait_for`, printing Swarm's view of the tasks when it times out.
fn wait_for_or(
    what: &str,
    secs: u64,
    tasks: &dyn Fn() -> std::process::Output,
    f: impl FnMut() -> bool,
) {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| wait_for(what, secs, f)));
    if let Err(e) = r {
        eprintln!("tasks: {}", String::from_utf8_lossy(&tasks().stdout));
        std::panic::resume_unwind(e);
    }
}

fn running_container(engine: &Engine, service: &str) -> Option<String> {
    let out = engine.docker_ok(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.swarm.service.name={service}"),
    ]);
    out.lines().next().map(str::to_string)
}

fn swarm_service_keeps_its_volume_across_update_force() {
    let t0 = std::time::Instant::now();
    let step = |what: &str| eprintln!("swarm test: {what} at {:.1}s", t0.elapsed().as_secs_f64());
    // A Swarm of its own: one dockerd in a network namespace with its own plugin directory.
    let lab = Lab::start(1);
    let node = lab.manager();
    let engine = node.engine.clone();
    step("swarm ready");
    let service = unique("berthsvc");
    let drv = unique("berthswarm");
    let dir = tempfile::tempdir().expect("tmp");
    let control = support::ControlSvc::start(&dir.path().join("state"), None);
    let sock = node.plugin_dir.join(format!("{drv}.sock"));
    let node_id = lab.node_id(&node.name);
    let _agent = support::AgentSvc::start(
        &node_id,
        &sock,
        &dir.path().join("data"),
        &dir.path().join("shared"),
        &control.url(),
        &[],
    );
    let prefix = unique("bsv");
    let vol = format!("{prefix}-1");
    // A legacy plugin appears in the node description (and so passes Swarm's "missing plugin"
    // filter) only once the engine has loaded it, and the description refreshes every ~15 s.
    // Creating the slot's volume first loads it; the task's own Create then hits the
    // idempotent path, which is Swarm's call order on a node that already has the volume.
    engine.docker_ok(&["volume", "create", "-d", &drv, &vol]);
    engine.docker_ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        &service,
        "--no-resolve-image",
        "--stop-grace-period",
        "1s",
        "--mount",
        &format!("type=volume,volume-driver={drv},source={prefix}-{{{{.Task.Slot}}}},target=/data"),
        berth_lab::swarm::IMAGE,
        "append",
        "/data/log",
        "started",
        "+",
        "sleep",
        "infinity",
    ]);
    let tasks = || {
        engine.docker(&[
            "service",
            "ps",
            "--no-trunc",
            "--format",
            "{{.CurrentState}} {{.Error}}",
            &service,
        ])
    };
    let read_log = || {
        running_container(&engine, &service).and_then(|c| {
            let o = engine.docker(&["exec", &c, "/berth-testapp", "cat", "/data/log"]);
            o.status
                .success()
                .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
        })
    };
    wait_for_or("the first task to write", 60, &tasks, || {
        read_log().is_some_and(|l| l.lines().count() == 1)
    });
    step("first task wrote");
    let first = running_container(&engine, &service).expect("task container");
    engine.docker_ok(&["service", "update", "--detach", "--force", &service]);
    wait_for_or("the updated task to append", 60, &tasks, || {
        running_container(&engine, &service).is_some_and(|c| c != first)
            && read_log().is_some_and(|l| l.lines().count() == 2)
    });
    let v = engine.docker_ok(&[
        "volume",
        "inspect",
        "--format",
        "{{.Driver}} {{.Status.epoch}} {{.Status.primary}}",
        &vol,
    ]);
    assert_eq!(v, format!("{drv} 1 {node_id}"));
    step("updated task appended");
    // The lab (and the Swarm, its containers and volumes with it) goes when `lab` drops; the
    // agent and control service stop before it, which is fine: nothing outlives the lab's
    // dockerd, and nothing was made on the host engine.
}

/// Disables and removes a managed plugin on drop.
struct PluginGuard(String);

impl Drop for PluginGuard {
    fn drop(&mut self) {
        let _ = docker(&["plugin", "disable", "-f", &self.0]);
        let _ = docker(&["plugin", "rm", "-f", &self.0]);
    }
}

fn managed_plugin_from_rootfs() {
    let dir = tempfile::tempdir().expect("tmp");
    let control = crate::support::ControlSvc::start(&dir.path().join("state"), None);
    let pdir = dir.path().join("plugin");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/plugin/build-rootfs.sh");
    let st = Command::new("sh")
        .args([script, crate::support::BIN])
        .arg(&pdir)
        .status()
        .expect("build-rootfs.sh");
    assert!(st.success());
    let cfg = pdir.join("config.json");
    let text = std::fs::read_to_string(&cfg).expect("config.json");
    let port = crate::support::free_port();
    let text = text
        .replace("127.0.0.1:4523", &control.addr)
        .replace("127.0.0.1:4524", &format!("127.0.0.1:{port}"));
    std::fs::write(&cfg, text).expect("config.json");
    let name = format!("{}:1", unique("berthplugin"));
    docker_ok(&["plugin", "create", &name, &pdir.display().to_string()]);
    let _guard = PluginGuard(name.clone());
    // dockerd gives a managed plugin about 9.5 s to open its socket (moby's pluginPostStart:
    // 0.5 s, then 3 dials 3 s apart) and disables it otherwise. On a loaded 2-core CI machine
    // starting the plugin's container can take longer than that, so enabling is retried; it
    // must still succeed.
    let mut refused = String::new();
    for attempt in 0..3 {
        let out = docker(&["plugin", "enable", &name]);
        if out.status.success() {
            refused.clear();
            break;
        }
        refused = format!(
            "attempt {attempt}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
    assert!(refused.is_empty(), "docker plugin enable {name}: {refused}");
    let img = TestImage::import(&Engine::host());
    let vol = unique("bpv");
    let (w, r) = (unique("bpw"), unique("bpr"));
    let mut clean = Cleanup {
        engine: Engine::host(),
        containers: vec![w.clone(), r.clone()],
        volumes: Vec::new(),
    };
    docker_ok(&["volume", "create", "-d", &name, "-o", "size=1GiB", &vol]);
    clean.volumes.push(vol.clone());
    let mount = format!("type=volume,source={vol},target=/data,volume-driver={name}");
    let run = |c: &str, cmd: &[&str]| {
        docker_ok(
            &[
                &[
                    "run",
                    "--name",
                    c,
                    "--network",
                    "none",
                    "--mount",
                    &mount,
                    &img.tag,
                ][..],
                cmd,
            ]
            .concat(),
        )
    };
    run(&w, &["put", "/data/x", "managed"]);
    assert_eq!(run(&r, &["cat", "/data/x"]), "managed");
    for c in [&w, &r] {
        let _ = docker(&["rm", "-f", c]);
    }
    docker_ok(&["volume", "rm", &vol]);
    clean.volumes.clear();
}

/// Heals a cut proxy on drop, so that the cleanup after a failure still reaches the control
/// service (a volume is removed through its driver).
struct Heal<'a>(&'a support::Proxy);

impl Drop for Heal<'_> {
    fn drop(&mut self) {
        self.0.heal();
    }
}

fn a_node_cut_off_from_control_holds_its_writer_container_and_stops_it_once_fenced() {
    let drv = unique("berthlease");
    let dir = tempfile::tempdir().expect("tmp");
    let control = support::ControlSvc::start_with(
        &dir.path().join("state"),
        None,
        format!("127.0.0.1:{}", support::free_port()),
        &["--heartbeat-interval", "200ms", "--lease", "2s"],
    );
    let proxy = support::Proxy::start(&control.addr);
    // The agent knows its driver by its socket's name, which the engine's link repeats.
    let sock = dir.path().join(format!("{drv}.sock"));
    let agent = support::AgentSvc::start(
        "node-a",
        &sock,
        &dir.path().join("data"),
        &dir.path().join("shared"),
        &proxy.url(),
        &[
            "--heartbeat-interval",
            "200ms",
            "--self-fence-deadline",
            "1s",
            "--drift-margin",
            "200ms",
            "--docker-socket",
            "/var/run/docker.sock",
            "--data-path",
            "fuse",
        ],
    );
    let link = PathBuf::from(PLUGINS).join(format!("{drv}.sock"));
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&agent.socket, &link).expect("plugin socket link");
    let _unlink = Unlink(link);
    let img = TestImage::import(&Engine::host());
    let (vol, writer) = (unique("blv"), unique("blw"));
    let mut clean = Cleanup {
        engine: Engine::host(),
        containers: vec![writer.clone()],
        volumes: Vec::new(),
    };
    // The acknowledgements: `berth-testapp writer` appends a record, fsyncs it through the
    // agent's mount, and only then sends it here.
    let acks = Acks::listen();
    docker_ok(&["volume", "create", "-d", &drv, &vol]);
    clean.volumes.push(vol.clone());
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &writer,
        "--network",
        "host",
        "--mount",
        &format!("type=volume,source={vol},target=/data,volume-driver={drv}"),
        &img.tag,
        "writer",
        "/data",
        &acks.addr,
        &vol,
    ]);
    let _heal = Heal(&proxy);
    let running = || docker_ok(&["inspect", "-f", "{{.State.Running}}", &writer]) == "true";
    wait_for("the writer to acknowledge", 30, || acks.count() >= 10);
    let fence = r#"{"node":"node-a","expect_epoch":1}"#;
    let path = format!("/v1/berth/volumes/{vol}/fence");
    let (st, _, v) = api(&control, "POST", &path, &[], fence);
    assert_eq!(st, 423, "the writer's node holds its lease: {v}");

    let cut = std::time::Instant::now();
    proxy.cut();
    let mut refusals = 0;
    let fenced = loop {
        assert!(cut.elapsed() < Duration::from_secs(30), "no fence accepted");
        let (st, _, v) = api(&control, "POST", &path, &[], fence);
        match st {
            423 => refusals += 1,
            200 => break std::time::Instant::now(),
            _ => panic!("fence: {st} {v}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(refusals > 0, "the fence waited for the lease");
    std::thread::sleep(Duration::from_secs(1));
    let late: Vec<Duration> = acks
        .arrivals()
        .into_iter()
        .filter(|t| *t > fenced)
        .map(|t| t.duration_since(fenced))
        .collect();
    assert!(late.is_empty(), "acknowledged after the fence: {late:?}");
    assert!(
        running(),
        "a lapsed lease holds the container's writes; it does not stop it"
    );
    let last = acks.arrivals().last().copied().expect("acks");
    eprintln!(
        "engine lease test: last acknowledgement {:?} after the cut, fence refused {refusals} \
         times, accepted at {:?}",
        last.duration_since(cut),
        fenced.duration_since(cut)
    );
    // Back in contact: the mount is claimed again, refused (the epoch moved): the container's
    // held write fails, and the agent stops it.
    proxy.heal();
    wait_for("the fenced writer container stopped", 30, || !running());
    assert!(
        acks.arrivals().iter().all(|t| *t < fenced),
        "nothing acknowledged after the fence, the thaw included"
    );
    let _ = docker(&["rm", "-f", &writer]);
    docker_ok(&["volume", "rm", &vol]);
    clean.volumes.clear();
}

/// The host side of `berth-testapp writer`'s acknowledgements: one line per durable record,
/// kept with its arrival instant.
struct Acks {
    addr: String,
    at: std::sync::Arc<std::sync::Mutex<Vec<std::time::Instant>>>,
}

impl Acks {
    fn listen() -> Acks {
        use std::io::BufRead;
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        let at = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = at.clone();
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    for _ in std::io::BufReader::new(conn).lines().map_while(Result::ok) {
                        sink.lock().expect("lock").push(std::time::Instant::now());
                    }
                });
            }
        });
        Acks { addr, at }
    }

    fn arrivals(&self) -> Vec<std::time::Instant> {
        self.at.lock().expect("lock").clone()
    }

    fn count(&self) -> usize {
        self.at.lock().expect("lock").len()
    }
}
