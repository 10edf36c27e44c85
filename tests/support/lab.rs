//! A real Swarm of several nodes on one machine: one dockerd per network namespace on a
//! private bridge, as `shared/reference/local-swarm.md` describes (nsenter, not `ip netns
//! exec`; a FORWARD accept rule for the lab bridge; each dockerd with its own empty config).
//! Everything is torn down on drop, by PID and by name.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

pub struct Lab {
    pub dir: PathBuf,
    bridge: String,
    subnet: String,
    pub nodes: Vec<LabNode>,
}

pub struct LabNode {
    pub name: String,
    pub netns: String,
    pub addr: String,
    pub sock: String,
    child: Option<Child>,
}

fn sh(cmd: &str) -> std::io::Result<std::process::Output> {
    Command::new("sh").args(["-c", cmd]).output()
}

fn must(cmd: &str) -> String {
    let out = sh(cmd).unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl LabNode {
    /// A `docker` command against this node's engine.
    pub fn docker(&self, args: &[&str]) -> std::process::Output {
        Command::new("docker")
            .env("DOCKER_HOST", format!("unix://{}", self.sock))
            .args(args)
            .output()
            .expect("docker CLI runs")
    }

    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} on {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Raw Engine API GET, for endpoints the CLI has no inspect for (`/tasks`).
    pub fn api_get(&self, path: &str) -> String {
        must(&format!(
            "curl -sf --unix-socket {} http://localhost{path}",
            self.sock
        ))
    }
}

impl Lab {
    /// Starts `n` dockerds (the first initialises the swarm, the others join as workers) and
    /// loads a busybox image into each.
    pub fn start(n: usize) -> Lab {
        let id = std::process::id() % 10_000;
        let dir = std::env::temp_dir().join(format!("berth-lab-{id}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("lab dir");
        let bridge = format!("blab{id}");
        let octet = 100 + (id % 150);
        let subnet = format!("10.231.{octet}");
        let mut lab = Lab {
            dir,
            bridge: bridge.clone(),
            subnet: subnet.clone(),
            nodes: Vec::new(),
        };
        must(&format!(
            "ip link add {bridge} type bridge && ip addr add {subnet}.1/24 dev {bridge} && ip link set {bridge} up"
        ));
        must(&format!(
            "iptables -I FORWARD -i {bridge} -o {bridge} -j ACCEPT"
        ));
        for i in 1..=n {
            let name = format!("lab{id}-n{i}");
            let netns = format!("blab{id}n{i}");
            let addr = format!("{subnet}.{}", 10 + i);
            let ndir = lab.dir.join(format!("n{i}"));
            fs::create_dir_all(&ndir).expect("node dir");
            fs::write(ndir.join("daemon.json"), "{}").expect("daemon.json");
            let (veth, peer) = (format!("v{id}n{i}"), format!("e{id}n{i}"));
            must(&format!(
                "ip netns add {netns} && ip link add {veth} type veth peer name {peer} && \
                 ip link set {veth} master {bridge} up && ip link set {peer} netns {netns} && \
                 ip netns exec {netns} sh -c 'ip addr add {addr}/24 dev {peer} && ip link set {peer} up && ip link set lo up && ip route add default via {subnet}.1'"
            ));
            let d = ndir.display();
            let log = fs::File::create(ndir.join("dockerd.log")).expect("log");
            let child = Command::new("nsenter")
                .arg(format!("--net=/var/run/netns/{netns}"))
                .args(["unshare", "--uts", "sh", "-c"])
                .arg(format!(
                    "hostname {name}; exec dockerd --config-file {d}/daemon.json --data-root {d}/data --exec-root {d}/exec \
                     -H unix://{d}/docker.sock --pidfile {d}/pid --storage-driver vfs --bridge none --iptables=false"
                ))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("dockerd starts");
            lab.nodes.push(LabNode {
                name,
                netns,
                addr,
                sock: format!("{d}/docker.sock"),
                child: Some(child),
            });
        }
        for node in &lab.nodes {
            wait_for(Duration::from_secs(60), || {
                node.docker(&["info"]).status.success()
            })
            .unwrap_or_else(|| {
                panic!(
                    "dockerd {} did not come up; see {}",
                    node.name,
                    lab.dir.display()
                )
            });
        }
        let manager = &lab.nodes[0];
        manager.docker_ok(&["swarm", "init", "--advertise-addr", &manager.addr]);
        let token = manager.docker_ok(&["swarm", "join-token", "-q", "worker"]);
        for node in &lab.nodes[1..] {
            node.docker_ok(&[
                "swarm",
                "join",
                "--token",
                &token,
                &format!("{}:2377", manager.addr),
            ]);
        }
        let image = lab.dir.join("busybox.tar");
        build_busybox_tar(&lab.dir.join("rootfs"), &image);
        for node in &lab.nodes {
            must(&format!(
                "DOCKER_HOST=unix://{} docker import {} {IMAGE} >/dev/null",
                node.sock,
                image.display()
            ));
        }
        lab
    }

    pub fn manager(&self) -> &LabNode {
        &self.nodes[0]
    }

    /// The Swarm node ID of a lab node, by hostname.
    pub fn node_id(&self, name: &str) -> String {
        self.manager()
            .docker_ok(&["node", "inspect", name, "--format", "{{.ID}}"])
    }
}

pub const IMAGE: &str = "berth-test/busybox:1";

/// A root filesystem with Debian's static busybox and its applet links, tarred for `docker import`.
fn build_busybox_tar(root: &Path, tar: &Path) {
    fs::create_dir_all(root.join("bin")).expect("rootfs");
    fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copy busybox");
    for applet in ["sh", "sleep", "cat", "ls", "echo", "true"] {
        let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
    }
    must(&format!(
        "tar -C {} -cf {} .",
        root.display(),
        tar.display()
    ));
}

pub fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> Option<()> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return Some(());
        }
        sleep(Duration::from_millis(250));
    }
    None
}

impl Drop for Lab {
    fn drop(&mut self) {
        let manager_sock = self.nodes.first().map(|n| n.sock.clone());
        if let Some(sock) = manager_sock {
            let _ = sh(&format!(
                "DOCKER_HOST=unix://{sock} docker service rm $(DOCKER_HOST=unix://{sock} docker service ls -q) >/dev/null 2>&1"
            ));
        }
        for node in &self.nodes {
            let _ = sh(&format!(
                "DOCKER_HOST=unix://{s} docker rm -f $(DOCKER_HOST=unix://{s} docker ps -aq) >/dev/null 2>&1",
                s = node.sock
            ));
        }
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = sh(&format!("kill -TERM {}", child.id()));
                let deadline = Instant::now() + Duration::from_secs(20);
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = child.try_wait() {
                        break;
                    }
                    sleep(Duration::from_millis(200));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
            let _ = sh(&format!("ip netns del {}", node.netns));
        }
        // A container whose dockerd died first keeps its shim; nothing of the lab may outlive it.
        let _ = sh(&format!(
            "pkill -f 'containerd-shim-runc-v2 .*-address {}/'",
            self.dir.display()
        ));
        let _ = sh(&format!(
            "iptables -D FORWARD -i {b} -o {b} -j ACCEPT; ip link del {b}",
            b = self.bridge
        ));
        let _ = sh(&format!(
            "grep ' {}' /proc/mounts | cut -d' ' -f2 | sort -r | xargs -r -n1 umount -l",
            self.dir.display()
        ));
        let _ = fs::remove_dir_all(&self.dir);
        let _ = &self.subnet;
    }
}
