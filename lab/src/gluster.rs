//! Storage that can really fail: a GlusterFS volume replicated across lab nodes, each brick and
//! each client inside its own node. Per server node a `glusterd` runs in the node's network,
//! mount and PID namespaces with its own state (`/var/lib/glusterd`, `/run/gluster` and
//! `/var/log/glusterfs` are the node's own, see [`PRIVATE_DIRS`]) and its own socket; the
//! volume's bricks are directories of the nodes' disks; every node mounts the volume through
//! its own FUSE client at one path (the same path on every node, e.g. the lab's `shared` root
//! that `berth-volume agent --shared-root` serves from). So killing a node takes its glusterd,
//! its brick and its client with it, and cutting its link cuts them off — the volume serves on
//! with the bricks that remain while a majority of them does (replica 3: client quorum `auto`).
//!
//! The host sees none of the mounts (each lives in a node's mount namespace); the host engine
//! and any glusterd of the host are untouched.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use crate::swarm::{Lab, LabNode};
use crate::wait_for;

/// The directories glusterd, its bricks and its clients keep at fixed paths; a lab that runs
/// GlusterFS gives every node its own ([`crate::swarm::LabBuilder::private_dir`]).
pub const PRIVATE_DIRS: [&str; 3] = ["/var/lib/glusterd", "/run/gluster", "/var/log/glusterfs"];

/// How long a client waits for a brick that stopped answering before it carries on without it
/// (GlusterFS's `network.ping-timeout`, 42 s by default). A killed node's bricks refuse at once;
/// this bounds the pause a cut link causes.
pub const PING_TIMEOUT_SECS: u32 = 5;

/// A replicated GlusterFS volume over some of a lab's nodes, mounted on all of them.
pub struct Gluster {
    pub volume: String,
    /// The nodes with a brick (and a glusterd), by name, in brick order.
    pub servers: Vec<String>,
    /// Where every node mounts the volume.
    pub mount_point: PathBuf,
    /// The `nsenter`s that started each glusterd (reaped on drop; glusterd itself dies with
    /// its node).
    started: Mutex<Vec<Child>>,
}

impl Gluster {
    /// Starts glusterd on each of `servers`, makes them one trusted pool, creates and starts a
    /// volume with one brick per server (replica = their number), and mounts it on every node
    /// that is up at `mount_point`. The lab must have been built with [`PRIVATE_DIRS`].
    pub fn start(lab: &Lab, servers: &[&str], volume: &str, mount_point: &Path) -> Gluster {
        assert!(!servers.is_empty(), "a volume needs a brick");
        let g = Gluster {
            volume: volume.to_string(),
            servers: servers.iter().map(|s| s.to_string()).collect(),
            mount_point: mount_point.to_path_buf(),
            started: Mutex::new(Vec::new()),
        };
        for s in servers {
            g.start_glusterd(lab.node(s));
        }
        let first = lab.node(servers[0]);
        for s in &servers[1..] {
            g.cli_ok(first, &["peer", "probe", &lab.node(s).addr]);
        }
        let connected = wait_for(Duration::from_secs(60), || {
            let out = g.cli(first, &["pool", "list"]);
            let text = String::from_utf8_lossy(&out.stdout);
            text.lines().filter(|l| l.contains("Connected")).count() == servers.len()
        });
        assert!(
            connected,
            "the glusterds never became one pool:\n{}",
            String::from_utf8_lossy(&g.cli(first, &["pool", "list"]).stdout)
        );
        let mut create = vec!["volume".to_string(), "create".into(), volume.into()];
        if servers.len() > 1 {
            create.extend(["replica".into(), servers.len().to_string()]);
        }
        for s in servers {
            let n = lab.node(s);
            create.push(format!("{}:{}", n.addr, brick(n).display()));
        }
        // Bricks on the root filesystem are refused without `force`.
        create.push("force".into());
        let create: Vec<&str> = create.iter().map(String::as_str).collect();
        // Right after a probe the peers may still be exchanging their state.
        let created = wait_for(Duration::from_secs(30), || {
            g.cli(first, &create).status.success()
        });
        assert!(
            created,
            "gluster volume create failed: {}",
            String::from_utf8_lossy(&g.cli(first, &create).stderr)
        );
        g.cli_ok(
            first,
            &[
                "volume",
                "set",
                volume,
                "network.ping-timeout",
                &PING_TIMEOUT_SECS.to_string(),
            ],
        );
        g.cli_ok(first, &["volume", "start", volume]);
        for n in lab.nodes.iter().filter(|n| n.is_up()) {
            g.mount(lab, n);
        }
        g
    }

    /// Brings a node that was restarted back into the volume: its glusterd (its brick follows,
    /// and self-heal refills it) if it is a server, then its mount.
    pub fn rejoin(&self, lab: &Lab, name: &str) {
        let node = lab.node(name);
        if self.servers.iter().any(|s| s == name) {
            self.start_glusterd(node);
        }
        self.mount(lab, node);
    }

    /// Mounts the volume on `node` at the mount point, from any server that answers (its own
    /// glusterd first, if it is a server).
    pub fn mount(&self, lab: &Lab, node: &LabNode) {
        let mut servers: Vec<&LabNode> = self.servers.iter().map(|s| lab.node(s)).collect();
        servers.sort_by_key(|s| s.name != node.name);
        let servers: Vec<&LabNode> = servers.into_iter().filter(|s| s.is_up()).collect();
        assert!(!servers.is_empty(), "no server of {} is up", self.volume);
        let backups: Vec<&str> = servers[1..].iter().map(|s| s.addr.as_str()).collect();
        let mp = self.mount_point.display().to_string();
        let mut opts = format!("log-file=/var/log/glusterfs/mount-{}.log", self.volume);
        if !backups.is_empty() {
            opts.push_str(&format!(",backup-volfile-servers={}", backups.join(":")));
        }
        let spec = format!("{}:/{}", servers[0].addr, self.volume);
        let mounted = wait_for(Duration::from_secs(60), || {
            let out = inside(node, "sh")
                .args([
                    "-c",
                    &format!(
                        "mkdir -p {mp} && {{ grep -q ' {mp} fuse.glusterfs ' /proc/mounts || \
                         timeout 30 mount -t glusterfs -o {opts} {spec} {mp}; }}"
                    ),
                ])
                .output()
                .expect("nsenter runs");
            out.status.success()
        });
        assert!(
            mounted,
            "{} could not mount {spec} at {mp}; see {}/private/2/",
            node.name,
            node.dir.display()
        );
    }

    /// `gluster --mode=script …` run inside `node`, against its own glusterd.
    pub fn cli(&self, node: &LabNode, args: &[&str]) -> std::process::Output {
        inside(node, "gluster")
            .args(["--mode=script", "--timeout=60"])
            .arg(format!("--glusterd-sock={}", socket(node).display()))
            .args(args)
            .output()
            .expect("nsenter runs")
    }

    fn cli_ok(&self, node: &LabNode, args: &[&str]) -> String {
        let out = self.cli(node, args);
        assert!(
            out.status.success(),
            "gluster {} on {}: {}{}\nthe end of its glusterd.log:\n{}",
            args.join(" "),
            node.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            log_tail(node)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Starts glusterd inside `node` (in the foreground of a process of the node's PID
    /// namespace, so it dies with the node) and waits until it answers.
    fn start_glusterd(&self, node: &LabNode) {
        let vol = node.dir.join("glusterd.vol");
        // The package's own glusterd.vol (its keepalive options are needed to probe a peer),
        // with the CLI's socket moved: by default it is /run/glusterd.socket, one path for every
        // node and the host.
        let stock = fs::read_to_string("/etc/glusterfs/glusterd.vol")
            .expect("/etc/glusterfs/glusterd.vol (glusterfs-server)");
        let at = stock
            .rfind("end-volume")
            .expect("glusterd.vol ends its volume");
        fs::write(
            &vol,
            format!(
                "{}    option glusterd-sockfile {}\n{}",
                &stock[..at],
                socket(node).display(),
                &stock[at..]
            ),
        )
        .expect("glusterd.vol");
        fs::create_dir_all(brick(node)).expect("brick dir");
        // The node's /var/lib/glusterd starts empty; the package ships its hooks and option
        // groups there, and geo-replication's helper (which the CLI runs) needs its directory.
        let state = node.dir.join("private/0");
        crate::must(&format!(
            "mkdir -p {s}/geo-replication && for d in groups hooks; do \
             [ -e {s}/$d ] || [ ! -d /var/lib/glusterd/$d ] || cp -a /var/lib/glusterd/$d {s}/; done",
            s = state.display()
        ));
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.join("glusterd.out"))
            .expect("glusterd.out");
        let child: Child = inside(node, "glusterd")
            .args(["-N", "-f"])
            .arg(&vol)
            .args(["-l", "/var/log/glusterfs/glusterd.log"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("glusterd starts");
        self.started.lock().expect("started").push(child);
        let up = wait_for(Duration::from_secs(30), || {
            self.cli(node, &["pool", "list"]).status.success()
        });
        assert!(
            up,
            "glusterd on {} never answered; see {}/private/2/glusterd.log",
            node.name,
            node.dir.display()
        );
    }
}

impl Drop for Gluster {
    fn drop(&mut self) {
        // glusterd, its bricks and the FUSE clients live in the nodes' PID namespaces and end
        // with the nodes (the lab kills them); what is left here is each nsenter to reap.
        for mut c in self
            .started
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The last lines of `node`'s glusterd log (its private `/var/log/glusterfs`), for a failure.
fn log_tail(node: &LabNode) -> String {
    let log = node.dir.join("private/2/glusterd.log");
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Where `node`'s brick lives (on its disk, in the lab's directory).
pub fn brick(node: &LabNode) -> PathBuf {
    node.dir.join("brick")
}

fn socket(node: &LabNode) -> PathBuf {
    node.dir.join("glusterd.socket")
}

/// `program` inside `node`'s namespaces.
fn inside(node: &LabNode, program: &str) -> Command {
    node.command_inside(program)
}
