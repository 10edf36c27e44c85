//! The seed's topology as a real Swarm on one machine (`berth_lab::Lab`: 3 managers and 3
//! workers by default), with Berth's pieces where an operator would run them: a volume agent
//! inside every node (its own plugin socket; it dies with its node), the volume control service
//! replicated on every manager (Raft; one member per manager, as the playbook runs it) and
//! `berth run` on the first manager. Shared storage is one host directory every agent
//! mounts from, as an NFS or GlusterFS mount would be.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use berth_lab::swarm::Role;
use berth_lab::{Lab, LabNode, wait_for};

/// A process started with `nsenter`: the process itself is nsenter's child when a PID
/// namespace was entered, so signals go to it, not to nsenter.
pub struct Proc {
    child: Child,
    what: String,
}

impl Proc {
    fn spawn(mut cmd: Command, what: &str, log: &Path) -> Result<Proc> {
        let out = fs::OpenOptions::new().create(true).append(true).open(log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        Ok(Proc {
            child,
            what: what.into(),
        })
    }

    /// The PIDs to signal: nsenter's children (the program, inside the node's PID namespace)
    /// and nsenter itself.
    fn pids(&self) -> Vec<u32> {
        let me = self.child.id();
        let mut pids: Vec<u32> = fs::read_to_string(format!("/proc/{me}/task/{me}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        pids.push(me);
        pids
    }

    pub fn signal(&self, sig: &str) {
        for pid in self.pids() {
            let _ = Command::new("kill")
                .args([&format!("-{sig}"), &pid.to_string()])
                .status();
        }
    }

    /// SIGKILL, no goodbye: a crash.
    pub fn kill(&mut self) {
        self.signal("KILL");
        let _ = self.child.wait();
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        self.signal("TERM");
        let done = wait_for(Duration::from_secs(15), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        if !done {
            eprintln!("chaos: {} ignored SIGTERM; killing it", self.what);
            self.kill();
        }
        let _ = self.child.wait();
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.alive() {
            self.kill();
        }
    }
}

/// The binaries the harness runs, found beside its own executable (one `cargo build`).
pub struct Bins {
    pub berth: PathBuf,
    pub volume: PathBuf,
}

impl Bins {
    pub fn beside_me() -> Result<Bins> {
        let dir = std::env::current_exe()?
            .parent()
            .context("the harness's directory")?
            .to_path_buf();
        let bins = Bins {
            berth: dir.join("berth"),
            volume: dir.join("berth-volume"),
        };
        for b in [&bins.berth, &bins.volume] {
            if !b.exists() {
                bail!(
                    "{} is missing: build it with `cargo build --release -p berth-chaos -p berth-daemon -p berth-volume`",
                    b.display()
                );
            }
        }
        Ok(bins)
    }
}

pub struct Cluster {
    pub lab: Lab,
    bins: Bins,
    /// Swarm node ID by lab node name.
    pub ids: BTreeMap<String, String>,
    token: PathBuf,
    logs: PathBuf,
    /// The control service's members, by manager name.
    control: BTreeMap<String, Proc>,
    agents: BTreeMap<String, Proc>,
    daemon: Option<Proc>,
    /// `--listen` of `berth run`.
    pub api: String,
}

const CONTROL_PORT: u16 = 4523;
const AGENT_PORT: u16 = 4524;
const API_PORT: u16 = 9440;

impl Cluster {
    pub fn start(managers: usize, workers: usize, bins: Bins) -> Result<Cluster> {
        let mut b = Lab::builder().managers(managers).workers(workers);
        for i in 0..workers {
            b = b.label(managers + i, "zone", ["a", "b", "c"][i % 3]);
        }
        let lab = b.start();
        let ids = lab
            .nodes
            .iter()
            .map(|n| (n.name.clone(), lab.node_id(&n.name)))
            .collect();
        let logs = lab.dir.join("logs");
        fs::create_dir_all(&logs)?;
        fs::create_dir_all(lab.dir.join("shared"))?;
        let token = lab.dir.join("token");
        fs::write(&token, format!("chaos-{}\n", lab.id))?;
        let api = format!("{}:{API_PORT}", lab.nodes[0].addr);
        Ok(Cluster {
            lab,
            bins,
            ids,
            token,
            logs,
            control: BTreeMap::new(),
            agents: BTreeMap::new(),
            daemon: None,
            api,
        })
    }

    pub fn manager(&self) -> &LabNode {
        self.lab.manager()
    }

    /// The volume's epoch at the control service (`None` without Berth, or unreachable).
    pub fn volume_epoch(&self, name: &str) -> Option<u64> {
        let token = fs::read_to_string(&self.token).ok()?;
        // Only the serving member answers with the record; the others answer 503.
        self.control.keys().find_map(|m| {
            let v = crate::run::http_get_json(
                &self.control_addr(m),
                &format!("/v1/berth/volumes/{name}"),
                Some(token.trim()),
            )?;
            v["epoch"].as_u64()
        })
    }

    /// A GET on `berth run`'s API with the cluster token (its detailed endpoints ask for it).
    pub fn daemon_get(&self, path: &str) -> Option<serde_json::Value> {
        let token = fs::read_to_string(&self.token).ok()?;
        crate::run::http_get_json(&self.api, path, Some(token.trim()))
    }

    fn managers(&self) -> Vec<&LabNode> {
        self.lab
            .nodes
            .iter()
            .filter(|n| n.role == Role::Manager)
            .collect()
    }

    fn control_addr(&self, manager: &str) -> String {
        format!("{}:{CONTROL_PORT}", self.lab.node(manager).addr)
    }

    /// Every member's URL: agents and `berth run` follow the leader among them.
    fn control_url(&self) -> String {
        self.managers()
            .iter()
            .map(|m| format!("http://{}:{CONTROL_PORT}", m.addr))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The manager whose control member serves (the Raft leader, caught up), if one does.
    pub fn control_leader(&self) -> Option<String> {
        let token = fs::read_to_string(&self.token).ok()?;
        self.control
            .keys()
            .find(|m| {
                crate::run::http_get_json(
                    &self.control_addr(m),
                    "/v1/berth/raft",
                    Some(token.trim()),
                )
                .is_some_and(|v| v["serving"] == true)
            })
            .cloned()
    }

    /// Starts the control member on `manager` (Raft ID: its place among the managers).
    pub fn start_control(&mut self, manager: &str) -> Result<()> {
        let managers: Vec<(String, String)> = self
            .managers()
            .iter()
            .map(|m| (m.name.clone(), format!("{}:{CONTROL_PORT}", m.addr)))
            .collect();
        let id = managers
            .iter()
            .position(|(n, _)| n == manager)
            .context("not a manager")?
            + 1;
        let m = self.lab.node(manager);
        let mut cmd = m.command_inside(&self.bins.volume);
        cmd.args(["control", "--listen"])
            .arg(format!("{}:{CONTROL_PORT}", m.addr))
            .arg("--state")
            .arg(m.dir.join("control-state"))
            .arg("--token-file")
            .arg(&self.token)
            .args(["--raft-id", &id.to_string()]);
        for (i, (_, addr)) in managers.iter().enumerate() {
            cmd.args(["--peer", &format!("{}={addr}", i + 1)]);
        }
        let proc = Proc::spawn(
            cmd,
            &format!("control {manager}"),
            &self.logs.join(format!("{manager}-control.log")),
        )?;
        self.control.insert(manager.to_string(), proc);
        Ok(())
    }

    /// kill -9 of the serving control member; returns its manager.
    pub fn kill_control_leader(&mut self) -> Option<String> {
        let m = self.control_leader()?;
        if let Some(mut p) = self.control.remove(&m) {
            p.kill();
        }
        Some(m)
    }

    /// The volume control service on every manager and an agent on every node that is up.
    pub fn start_berth_volumes(&mut self) -> Result<()> {
        let managers: Vec<String> = self.managers().iter().map(|m| m.name.clone()).collect();
        for m in &managers {
            self.start_control(m)?;
        }
        if !wait_for(Duration::from_secs(30), || self.control_leader().is_some()) {
            bail!("no control member served; see {}", self.logs.display());
        }
        let names: Vec<String> = self.lab.nodes.iter().map(|n| n.name.clone()).collect();
        for n in &names {
            self.start_agent(n)?;
        }
        for n in &names {
            self.wait_plugin(n)?;
        }
        Ok(())
    }

    /// Waits until Swarm's description of `name` lists the `berth` volume plugin: until then
    /// the scheduler places no task mounting a Berth volume there. A legacy plugin is listed
    /// once its engine has activated it, which a volume listing through the driver does.
    pub fn wait_plugin(&self, name: &str) -> Result<()> {
        let node = self.lab.node(name);
        let listed = wait_for(Duration::from_secs(60), || {
            let _ = node.docker(&["volume", "ls", "--quiet", "--filter", "driver=berth"]);
            let out = self.manager().docker(&[
                "node",
                "inspect",
                &self.ids[name],
                "--format",
                "{{range .Description.Engine.Plugins}}{{.Type}}/{{.Name}} {{end}}",
            ]);
            String::from_utf8_lossy(&out.stdout).contains("Volume/berth")
        });
        if !listed {
            bail!("Swarm never listed the berth volume plugin on {name}");
        }
        Ok(())
    }

    pub fn start_agent(&mut self, name: &str) -> Result<()> {
        let node = self.lab.node(name);
        let mut cmd = node.command_inside(&self.bins.volume);
        cmd.args(["agent", "--node-id", &self.ids[name]])
            .args(["--socket", "/run/docker/plugins/berth.sock", "--data-root"])
            .arg(node.dir.join("berth-data"))
            .arg("--shared-root")
            .arg(self.lab.dir.join("shared"))
            .args(["--control", &self.control_url(), "--listen"])
            .arg(format!("{}:{AGENT_PORT}", node.addr))
            .arg("--token-file")
            .arg(&self.token)
            // Its own node's engine, whose containers it stops when it loses its lease.
            .args(["--docker-socket", &node.engine.sock]);
        let proc = Proc::spawn(
            cmd,
            &format!("agent {name}"),
            &self.logs.join(format!("{name}-agent.log")),
        )?;
        self.agents.insert(name.to_string(), proc);
        let sock = node.plugin_dir.join("berth.sock");
        if !wait_for(Duration::from_secs(30), || sock.exists()) {
            bail!(
                "the agent on {name} did not open its socket; see {}",
                self.logs.display()
            );
        }
        Ok(())
    }

    /// `berth run` on the first manager.
    pub fn start_daemon(&mut self) -> Result<()> {
        let m = self.lab.manager();
        let mut cmd = m.command(&self.bins.berth);
        cmd.args([
            "run",
            "--docker",
            &m.engine.docker_host(),
            "--volume-control",
            &self.control_url(),
        ])
        .arg("--token-file")
        .arg(&self.token)
        .args(["--listen", &self.api, "--resync", "2s", "--state-dir"])
        .arg(m.dir.join("berth-state"));
        self.daemon = Some(Proc::spawn(
            cmd,
            "berth run",
            &self.logs.join("daemon.log"),
        )?);
        Ok(())
    }

    /// kill -9 of `berth run`.
    pub fn kill_daemon(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.kill();
        }
    }

    /// Power loss of a node: its dockerd, containers and agent die at once.
    pub fn kill_node(&mut self, name: &str) {
        self.lab.node_mut(name).kill();
        if let Some(mut a) = self.agents.remove(name) {
            a.kill();
        }
    }

    /// Boots a killed node again, and its agent (if Berth runs here).
    pub fn restart_node(&mut self, name: &str, with_agent: bool) -> Result<()> {
        if !self.lab.node(name).is_up() {
            // The agent starts with the engine, as a systemd unit ordered before docker would:
            // the engine restores containers that mount Berth volumes as it comes up.
            self.lab.node_mut(name).boot();
            if with_agent {
                self.agents.remove(name);
                self.start_agent(name)?;
            }
            self.lab.node(name).wait_engine();
        }
        if with_agent && !self.agents.contains_key(name) {
            self.start_agent(name)?;
        }
        if with_agent {
            self.wait_plugin(name)?;
        }
        Ok(())
    }

    /// Whether Berth's volume agents run here (any system that needs them was asked for).
    pub fn has_agents(&self) -> bool {
        !self.control.is_empty()
    }

    /// Copies the logs (control, agents, daemon) and each node's dockerd log into `dir`.
    pub fn copy_logs(&self, dir: &Path) -> Result<()> {
        fs::create_dir_all(dir)?;
        for e in fs::read_dir(&self.logs)? {
            let e = e?;
            fs::copy(e.path(), dir.join(e.file_name()))?;
        }
        for n in &self.lab.nodes {
            let _ = fs::copy(
                n.dir.join("dockerd.log"),
                dir.join(format!("{}-dockerd.log", n.name)),
            );
        }
        Ok(())
    }

    /// The log directory (control, agents, daemon), kept until the lab is torn down.
    pub fn logs(&self) -> &Path {
        &self.logs
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The daemon first, so it does not react to the teardown.
        if let Some(mut d) = self.daemon.take() {
            d.stop();
        }
        for (_, mut a) in std::mem::take(&mut self.agents) {
            a.stop();
        }
        for (_, mut c) in std::mem::take(&mut self.control) {
            c.stop();
        }
    }
}
