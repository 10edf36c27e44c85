//! A real Swarm of several nodes on one machine. Each node is a dockerd in its own network
//! namespace (a veth on a private bridge), UTS namespace (its hostname), mount namespace (its own
//! `/run/docker/plugins`, so each node has its own volume-plugin agent) and PID namespace (so a
//! node can die whole: killing its first process kills its dockerd, containerd, shims and every
//! container at once, as a power loss would).
//!
//! The host engine is never involved: no `swarm init/join/leave` on it, no network on it.
//! Everything is torn down on drop, by PID and by name, even after a failed test.
//!
//! Two things the recipe must get right on this kind of machine: `nsenter --net=…` rather than
//! `ip netns exec` (which remounts /sys, and dockerd then stops with "Devices cgroup isn't
//! mounted"), and an iptables FORWARD accept rule for the lab bridge, because a dockerd on the
//! host sets FORWARD's policy to DROP and bridged traffic passes iptables.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::engine::Engine;
use crate::image::TestImage;
use crate::{must, sh, wait_for};

/// The plugin directory every engine searches (legacy plugin discovery).
pub const PLUGIN_DIR: &str = "/run/docker/plugins";

/// The test image's tag on every lab node.
pub const IMAGE: &str = "berth-testapp:lab";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Manager,
    Worker,
}

pub struct LabNode {
    /// Hostname, also the Swarm node's hostname (`lab<id>-m1`, `lab<id>-w2`, …).
    pub name: String,
    pub role: Role,
    pub netns: String,
    /// Address on the lab bridge.
    pub addr: String,
    pub engine: Engine,
    /// This node's own plugin directory, seen by its dockerd as `/run/docker/plugins`: an agent
    /// serving `<plugin_dir>/berth.sock` is this node's `berth` volume driver.
    pub plugin_dir: PathBuf,
    pub dir: PathBuf,
    /// Host-side end of the node's link, for partitions.
    veth: String,
    /// `unshare` (the node's PID namespace's parent); `None` while the node is down.
    child: Option<Child>,
    /// Directories this node has its own copy of (see [`LabBuilder::private_dir`]).
    private_dirs: Vec<PathBuf>,
}

impl LabNode {
    pub fn docker(&self, args: &[&str]) -> std::process::Output {
        self.engine.docker(args)
    }

    pub fn docker_ok(&self, args: &[&str]) -> String {
        self.engine.docker_ok(args)
    }

    pub fn api_get(&self, path: &str) -> String {
        self.engine.api_get_ok(path)
    }

    /// A command that runs inside this node's network namespace (an agent, a control service):
    /// it shares the node's address and is cut off with it.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/var/run/netns/{}", self.netns))
            .arg("--")
            .arg(program);
        c
    }

    /// A command that runs inside the node itself — its network, mount, UTS and PID namespaces
    /// — so it sees the node's `/run/docker/plugins`, and dies with the node when the node is
    /// killed (a volume agent, a control service, `berth run`). Panics if the node is down.
    pub fn command_inside(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        // Right after a boot the namespace's first process may not be forked yet, or not have
        // made its mounts: a program entering before then would see the host's
        // `/run/docker/plugins` (an agent's socket would land there, in the host engine's
        // plugin directory).
        let _ = self.child.is_some() && wait_for(Duration::from_secs(5), || self.is_set_up());
        let pid = self
            .init_pid()
            .unwrap_or_else(|| panic!("{} is down: nothing can run inside it", self.name));
        assert!(
            self.is_set_up(),
            "{}: its first process did not mount {PLUGIN_DIR} within 5 s",
            self.name
        );
        let mut c = Command::new("nsenter");
        c.arg(format!("--target={pid}"))
            .args(["--net", "--mount", "--uts", "--pid", "--"])
            .arg(program);
        c
    }

    /// Whether the node's first process has made the node's mounts (the resolver's is last).
    fn is_set_up(&self) -> bool {
        self.init_pid().is_some_and(|pid| {
            fs::read_to_string(format!("/proc/{pid}/mountinfo")).is_ok_and(|m| {
                let points: Vec<&str> = m.lines().filter_map(|l| l.split(' ').nth(4)).collect();
                points.contains(&PLUGIN_DIR) && points.contains(&"/etc/resolv.conf")
            })
        })
    }

    /// Whether the node's engine is running (it may have been killed).
    pub fn is_up(&self) -> bool {
        self.child.is_some()
    }

    /// PID (host view) of the node's first process, its PID namespace's init.
    fn init_pid(&self) -> Option<u32> {
        let parent = self.child.as_ref()?.id();
        let kids = fs::read_to_string(format!("/proc/{parent}/task/{parent}/children")).ok()?;
        kids.split_whitespace().next()?.parse().ok()
    }

    /// The node's first process: it sets the node up, then runs dockerd as systemd would with
    /// `Restart=no`, except that while the file `dockerd.hold` exists (see
    /// [`LabNode::restart_dockerd`]) an exited dockerd is started again once the file is
    /// gone, so the engine restarts while everything else in the node (a volume agent) runs
    /// on. Otherwise dockerd's end is the node's end.
    fn init_script(&self) -> String {
        let d = self.dir.display();
        let private: String = self
            .private_dirs
            .iter()
            .enumerate()
            .map(|(i, target)| {
                let own = self.dir.join("private").join(i.to_string());
                fs::create_dir_all(&own).expect("the node's private directory");
                format!(
                    "mkdir -p {t} && mount --bind {own} {t} && ",
                    t = target.display(),
                    own = own.display()
                )
            })
            .collect();
        format!(
            "hostname {name} && mount --bind {plugins} {PLUGIN_DIR} && {private}\
             mount --bind {d}/resolv.conf /etc/resolv.conf || exit 1; \
             trap 'kill -TERM $dockerd_pid; wait $dockerd_pid; exit 0' TERM INT; \
             while :; do \
             {{ dockerd --config-file {d}/daemon.json --data-root {d}/data --exec-root {d}/exec \
             -H unix://{d}/docker.sock --pidfile {d}/dockerd.pid --storage-driver vfs \
             --bridge none --iptables=false --ip-masq=false & }}; \
             dockerd_pid=$!; wait $dockerd_pid; \
             [ -e {d}/{HOLD} ] || exit 0; \
             while [ -e {d}/{HOLD} ]; do sleep 0.1; done; \
             rm -f {d}/dockerd.pid {d}/exec/containerd/containerd.pid; \
             done",
            name = self.name,
            plugins = self.plugin_dir.display(),
        )
    }

    fn spawn(&mut self) {
        let script = self.init_script();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dockerd.log"))
            .expect("dockerd log");
        let child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", self.netns))
            .args([
                "--",
                "unshare",
                "--uts",
                "--mount",
                "--propagation",
                "slave",
                "--pid",
                "--fork",
                "--mount-proc",
                "--kill-child=SIGKILL",
                "sh",
                "-c",
            ])
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the node's dockerd starts");
        self.child = Some(child);
    }

    /// Waits until the node's engine answers; panics with the tail of its log if it does not.
    pub fn wait_engine(&self) {
        let up = wait_for(Duration::from_secs(90), || {
            self.docker(&["info"]).status.success()
        });
        if up {
            return;
        }
        let log = fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "dockerd of {} did not come up; the end of {}/dockerd.log:\n{}",
            self.name,
            self.dir.display(),
            tail.join("\n")
        );
    }

    /// Power loss: every process of the node dies at once (SIGKILL to its PID namespace's
    /// init). Its disk (data root, volumes) stays, as a real node's would.
    pub fn kill(&mut self) {
        if let Some(pid) = self.init_pid() {
            let _ = sh(&format!("kill -KILL {pid}"));
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A clean shutdown: dockerd stops its containers and exits.
    pub fn stop(&mut self) {
        if let Some(pid) = self.init_pid() {
            let _ = sh(&format!("kill -TERM {pid}"));
        }
        if let Some(mut c) = self.child.take() {
            let done = wait_for(Duration::from_secs(30), || {
                matches!(c.try_wait(), Ok(Some(_)))
            });
            if !done {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }

    /// Boots a stopped or killed node again from its disk; it rejoins the swarm by itself.
    pub fn start(&mut self) {
        self.boot();
        self.wait_engine();
    }

    /// Starts a stopped or killed node without waiting for its engine, so that what must run
    /// beside the engine from the start (a volume plugin its containers need while the engine
    /// restores them) can be started inside it first; then [`LabNode::wait_engine`].
    pub fn boot(&mut self) {
        assert!(self.child.is_none(), "{} is already up", self.name);
        // A killed dockerd leaves its pidfile, naming a PID of the dead namespace that may be
        // some other process's now: dockerd would refuse to start ("docker is running").
        let _ = fs::remove_file(self.dir.join("dockerd.pid"));
        let _ = fs::remove_file(self.dir.join("exec/containerd/containerd.pid"));
        self.spawn();
    }

    /// Cuts the node's link: it keeps running (and its containers keep writing) but reaches no
    /// one and no one reaches it — a partition, not a death.
    pub fn cut(&self) {
        must(&format!("ip link set {} down", self.veth));
    }

    /// Restores the node's link.
    pub fn heal(&self) {
        must(&format!("ip link set {} up", self.veth));
    }

    /// Every process of the node (host PIDs): its PID namespace's members and their
    /// descendants (containers, whose own PID namespaces nest in the node's), including what
    /// was started inside it with [`LabNode::command_inside`]. Empty while the node is down.
    pub fn pids(&self) -> Vec<u32> {
        match self.init_pid() {
            Some(init) => crate::pidns::members(init),
            None => Vec::new(),
        }
    }

    /// SIGSTOP to every process of the node, as a paused VM or a stalled host: nothing in it
    /// runs until [`LabNode::thaw`], while its link and its kernel-side sockets stay up.
    /// Returns the processes stopped.
    pub fn freeze(&self) -> Vec<u32> {
        crate::pidns::stop_all(|| self.pids())
    }

    /// SIGCONT to every process of the node.
    pub fn thaw(&self) {
        crate::pidns::signal(&self.pids(), "CONT");
    }

    /// The node's dockerd stopped (SIGTERM: it stops its containers, as `systemctl restart
    /// docker` without live-restore) and started again, with the rest of the node left
    /// running. Returns once the old dockerd has exited; the new one comes up in the
    /// background ([`LabNode::wait_engine`]).
    pub fn restart_dockerd(&self) {
        let hold = self.dir.join(HOLD);
        fs::write(&hold, "").expect("dockerd hold file");
        let dockerd = self
            .init_pid()
            .and_then(|init| crate::pidns::child_named(init, "dockerd"));
        if let Some(pid) = dockerd {
            let _ = sh(&format!("kill -TERM {pid}"));
            let gone = wait_for(Duration::from_secs(60), || {
                !Path::new(&format!("/proc/{pid}")).exists()
            });
            assert!(gone, "dockerd of {} did not stop within 60 s", self.name);
        }
        let _ = fs::remove_file(&hold);
    }
}

/// While this file exists in a node's directory, an exited dockerd is started again.
const HOLD: &str = "dockerd.hold";

/// How a lab is made.
pub struct LabBuilder {
    managers: usize,
    workers: usize,
    labels: Vec<(usize, String, String)>,
    private_dirs: Vec<PathBuf>,
}

impl LabBuilder {
    pub fn managers(mut self, n: usize) -> Self {
        assert!(n >= 1, "a swarm needs a manager");
        self.managers = n;
        self
    }

    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// A node label (`docker node update --label-add`), by node index (managers first).
    pub fn label(mut self, node: usize, key: &str, value: &str) -> Self {
        self.labels.push((node, key.into(), value.into()));
        self
    }

    /// A directory every node has its own (empty at first, kept across the node's restarts,
    /// in its directory), bound over `path` in its mount namespace: for a daemon that keeps its
    /// state, sockets or logs at a fixed path, such as glusterd's `/var/lib/glusterd`.
    pub fn private_dir(mut self, path: impl Into<PathBuf>) -> Self {
        self.private_dirs.push(path.into());
        self
    }

    pub fn start(self) -> Lab {
        Lab::start_with(self)
    }
}

pub struct Lab {
    pub id: u32,
    pub dir: PathBuf,
    pub bridge: String,
    /// The bridge's own address: the host as the nodes see it.
    pub gateway: String,
    pub nodes: Vec<LabNode>,
    _image_guards: Vec<TestImage>,
}

fn next_id() -> u32 {
    static N: AtomicU32 = AtomicU32::new(0);
    // Unique per process and call; 4 digits keep interface names within 15 bytes.
    (std::process::id() * 7 + N.fetch_add(1, Ordering::Relaxed) * 131) % 9000 + 1000
}

impl Lab {
    pub fn builder() -> LabBuilder {
        LabBuilder {
            managers: 1,
            workers: 0,
            labels: Vec::new(),
            private_dirs: Vec::new(),
        }
    }

    /// One manager and `n - 1` workers.
    pub fn start(n: usize) -> Lab {
        Lab::builder()
            .managers(1)
            .workers(n.saturating_sub(1))
            .start()
    }

    fn start_with(b: LabBuilder) -> Lab {
        let mut id = next_id();
        while Path::new(&format!("/sys/class/net/blab{id}")).exists() {
            id = (id + 1) % 9000 + 1000;
        }
        let dir = std::env::temp_dir().join(format!("berth-lab-{id}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("lab dir");
        fs::create_dir_all(PLUGIN_DIR).expect("plugin dir");
        let bridge = format!("blab{id}");
        let subnet = format!("10.{}.{}", 200 + id / 1000, id % 250);
        let gateway = format!("{subnet}.1");
        let mut lab = Lab {
            id,
            dir: dir.clone(),
            bridge: bridge.clone(),
            gateway: gateway.clone(),
            nodes: Vec::new(),
            _image_guards: Vec::new(),
        };
        must(&format!(
            "ip link add {bridge} type bridge && ip addr add {gateway}/24 dev {bridge} && ip link set {bridge} up"
        ));
        must(&format!(
            "iptables -I FORWARD -i {bridge} -o {bridge} -j ACCEPT"
        ));
        let roles = std::iter::repeat_n(Role::Manager, b.managers)
            .chain(std::iter::repeat_n(Role::Worker, b.workers));
        let (mut m, mut w) = (0, 0);
        for (i, role) in roles.enumerate() {
            let tag = match role {
                Role::Manager => {
                    m += 1;
                    format!("m{m}")
                }
                Role::Worker => {
                    w += 1;
                    format!("w{w}")
                }
            };
            let name = format!("lab{id}-{tag}");
            let netns = format!("blab{id}{tag}");
            let addr = format!("{subnet}.{}", 10 + i);
            let ndir = dir.join(&tag);
            let plugin_dir = ndir.join("plugins");
            fs::create_dir_all(&plugin_dir).expect("node dir");
            fs::write(ndir.join("daemon.json"), "{}").expect("daemon.json");
            // No registry is reachable from a lab: a name server that refuses at once (nothing
            // listens on the node's loopback) makes Swarm's image lookups fail in milliseconds
            // instead of waiting out the host resolver's timeouts, ~20 s per service update.
            fs::write(
                ndir.join("resolv.conf"),
                "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
            )
            .expect("resolv.conf");
            let (veth, peer) = (format!("v{id}{tag}"), format!("e{id}{tag}"));
            must(&format!(
                "ip netns add {netns} && ip link add {veth} type veth peer name {peer} && \
                 ip link set {veth} master {bridge} up && ip link set {peer} netns {netns} && \
                 ip netns exec {netns} sh -c 'ip addr add {addr}/24 dev {peer} && ip link set {peer} up && ip link set lo up && ip route add default via {gateway}'"
            ));
            let mut node = LabNode {
                name,
                role,
                netns,
                addr,
                engine: Engine {
                    sock: ndir.join("docker.sock").display().to_string(),
                },
                plugin_dir,
                dir: ndir,
                veth,
                child: None,
                private_dirs: b.private_dirs.clone(),
            };
            node.spawn();
            lab.nodes.push(node);
        }
        for node in &lab.nodes {
            node.wait_engine();
        }
        let first = &lab.nodes[0];
        first.docker_ok(&["swarm", "init", "--advertise-addr", &first.addr]);
        let manager_token = first.docker_ok(&["swarm", "join-token", "-q", "manager"]);
        let worker_token = first.docker_ok(&["swarm", "join-token", "-q", "worker"]);
        let join_addr = format!("{}:2377", first.addr);
        for node in &lab.nodes[1..] {
            let token = match node.role {
                Role::Manager => &manager_token,
                Role::Worker => &worker_token,
            };
            node.docker_ok(&[
                "swarm",
                "join",
                "--advertise-addr",
                &node.addr,
                "--token",
                token,
                &join_addr,
            ]);
        }
        for (i, k, v) in &b.labels {
            let name = lab.nodes[*i].name.clone();
            lab.manager()
                .docker_ok(&["node", "update", "--label-add", &format!("{k}={v}"), &name]);
        }
        for node in &lab.nodes {
            let img = TestImage::import_fixed(&node.engine, IMAGE);
            lab._image_guards.push(img);
        }
        lab
    }

    /// The first manager (the one that initialised the swarm).
    pub fn manager(&self) -> &LabNode {
        &self.nodes[0]
    }

    pub fn node(&self, name: &str) -> &LabNode {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no lab node {name}"))
    }

    pub fn node_mut(&mut self, name: &str) -> &mut LabNode {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no lab node {name}"))
    }

    /// The Swarm node ID of a lab node, by hostname.
    pub fn node_id(&self, name: &str) -> String {
        self.manager()
            .docker_ok(&["node", "inspect", name, "--format", "{{.ID}}"])
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Services first, while the managers answer, so no task is rescheduled mid-teardown.
        if let Some(m) = self.nodes.first().filter(|n| n.is_up()) {
            let ids = m.docker(&["service", "ls", "-q"]);
            let ids = String::from_utf8_lossy(&ids.stdout).into_owned();
            if !ids.trim().is_empty() {
                let mut args = vec!["service", "rm"];
                args.extend(ids.lines());
                let _ = m.docker(&args);
            }
        }
        for node in &mut self.nodes {
            node.kill();
            let _ = sh(&format!("ip netns del {}", node.netns));
            let _ = sh(&format!("ip link del {}", node.veth));
        }
        let _ = sh(&format!(
            "iptables -D FORWARD -i {b} -o {b} -j ACCEPT; ip link del {b}",
            b = self.bridge
        ));
        // The node's mounts lived in its own mount namespace and died with it; a bind mount seen
        // here would be a leak, so look before removing the tree.
        let _ = sh(&format!(
            "grep ' {}' /proc/mounts | cut -d' ' -f2 | sort -r | xargs -r -n1 umount -l",
            self.dir.display()
        ));
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Tears down what lab `id` left on the host, from its name alone: for a process interrupted
/// before its `Lab` could drop (SIGTERM, Ctrl-C). Every process that names the lab's directory
/// (its dockerds, agents, `berth run`), its network namespaces, links, firewall rule and
/// directory.
pub fn teardown(id: u32) {
    let dir = std::env::temp_dir().join(format!("berth-lab-{id}"));
    let _ = sh(&format!("pkill -KILL -f '{}/'", dir.display()));
    std::thread::sleep(Duration::from_millis(300));
    let _ = sh(&format!(
        "for n in $(ip netns list | awk '{{print $1}}' | grep '^blab{id}'); do ip netns del $n; done; \
         for l in $(ip -o link | awk -F': ' '{{print $2}}' | cut -d@ -f1 | grep -E '^(v{id}|blab{id}$)'); do ip link del $l; done; \
         iptables -D FORWARD -i blab{id} -o blab{id} -j ACCEPT"
    ));
    let _ = sh(&format!(
        "grep ' {}' /proc/mounts | cut -d' ' -f2 | sort -r | xargs -r -n1 umount -l",
        dir.display()
    ));
    let _ = fs::remove_dir_all(&dir);
}
