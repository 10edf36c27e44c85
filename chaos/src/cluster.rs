//! The seed's topology as a real Swarm on one machine (`berth_lab::Lab`: 3 managers and 3
//! workers by default), with Berth's pieces where an operator runs them, each inside its node
//! (it dies with the node): a volume agent on every node (its own plugin socket), the volume
//! control service replicated on every manager (Raft; one member per manager, as the playbook
//! runs it) and `berth run --elect` on every manager, one leading. Shared storage is a GlusterFS
//! volume replicated across the workers ([`berth_lab::gluster`]): a brick and a glusterd in
//! every worker, a FUSE client in every node, all mounted at the lab's `shared` directory
//! (which agents serve the `shared` backend from, and plain Swarm services bind-mount), so a
//! worker killed or cut off takes its brick with it. (`--shared-storage host` keeps the old
//! host directory instead: storage that cannot fail.)
//!
//! The harness is the nodes' service manager: it starts, stops, kills, pauses and restarts
//! each of these processes on its own, as systemd would, and [`Cluster::restore`] brings back
//! whatever a fault left down.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use berth_control_model::profile::Profile;
use berth_lab::gluster::{Gluster, PRIVATE_DIRS};
use berth_lab::swarm::Role;
use berth_lab::{Lab, LabNode, wait_for};

use crate::http;
use crate::proc::Proc;

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
    /// The GlusterFS volume at the lab's `shared` directory (`None`: a host directory).
    pub gluster: Option<Gluster>,
    bins: Bins,
    /// Swarm node ID by lab node name.
    pub ids: BTreeMap<String, String>,
    token: PathBuf,
    logs: PathBuf,
    /// Whether Berth's pieces run (some run asked for Berth).
    berth: bool,
    /// Whether managers run a volume agent too (every node does by default).
    agents_on_managers: bool,
    /// Whether the agents run with `--failsafe` ("Fencing", rule 9).
    failsafe: bool,
    /// `berth run --elect-ttl`.
    elect_ttl: Duration,
    /// `--timing` of the control service, the agents and `berth run`.
    timing: Profile,
    /// The control service's members, by manager name.
    control: BTreeMap<String, Proc>,
    agents: BTreeMap<String, Proc>,
    /// `berth run`, by manager name.
    daemons: BTreeMap<String, Proc>,
}

const CONTROL_PORT: u16 = 4523;
const AGENT_PORT: u16 = 4524;
const API_PORT: u16 = 9440;

impl Cluster {
    pub fn start(
        managers: usize,
        workers: usize,
        bins: Bins,
        elect_ttl: Duration,
        timing: Profile,
        gluster: bool,
    ) -> Result<Cluster> {
        let mut b = Lab::builder().managers(managers).workers(workers);
        for i in 0..workers {
            b = b.label(managers + i, "zone", ["a", "b", "c"][i % 3]);
        }
        if gluster {
            // Each node's glusterd state, sockets and logs are its own.
            for d in PRIVATE_DIRS {
                b = b.private_dir(d);
            }
        }
        let lab = b.start();
        let ids = lab
            .nodes
            .iter()
            .map(|n| (n.name.clone(), lab.node_id(&n.name)))
            .collect();
        let logs = lab.dir.join("logs");
        fs::create_dir_all(&logs)?;
        let shared = lab.dir.join("shared");
        fs::create_dir_all(&shared)?;
        let gluster = gluster.then(|| {
            let servers: Vec<&str> = lab
                .nodes
                .iter()
                .filter(|n| n.role == Role::Worker)
                .map(|n| n.name.as_str())
                .collect();
            Gluster::start(&lab, &servers, "chaos", &shared)
        });
        let token = lab.dir.join("token");
        fs::write(&token, format!("chaos-{}\n", lab.id))?;
        Ok(Cluster {
            lab,
            gluster,
            bins,
            ids,
            token,
            logs,
            berth: false,
            agents_on_managers: true,
            failsafe: false,
            elect_ttl,
            timing,
            control: BTreeMap::new(),
            agents: BTreeMap::new(),
            daemons: BTreeMap::new(),
        })
    }

    /// A manager that is up, to talk to Swarm through (the first one, unless it is down).
    pub fn manager(&self) -> &LabNode {
        self.lab
            .nodes
            .iter()
            .find(|n| n.role == Role::Manager && n.is_up())
            .expect("a manager is up")
    }

    pub fn managers(&self) -> Vec<String> {
        self.lab
            .nodes
            .iter()
            .filter(|n| n.role == Role::Manager)
            .map(|n| n.name.clone())
            .collect()
    }

    /// Whether Berth's pieces run here.
    pub fn has_berth(&self) -> bool {
        self.berth
    }

    fn token(&self) -> Option<String> {
        Some(fs::read_to_string(&self.token).ok()?.trim().to_string())
    }

    // --- Swarm ---------------------------------------------------------------------------

    /// The lab node (name) running `service`'s task, and that task's container ID.
    pub fn running_on(&self, service: &str) -> Option<(String, String)> {
        let filter = format!(
            "%7B%22service%22:%5B%22{service}%22%5D,%22desired-state%22:%5B%22running%22%5D%7D"
        );
        let body = self
            .manager()
            .engine
            .api_get(&format!("/tasks?filters={filter}"))
            .ok()?;
        let tasks: serde_json::Value = serde_json::from_str(&body).ok()?;
        let t = tasks
            .as_array()?
            .iter()
            .find(|t| t["Status"]["State"] == "running")?;
        let node_id = t["NodeID"].as_str()?;
        let name = self.ids.iter().find(|(_, id)| *id == node_id)?.0.clone();
        let container = t["Status"]["ContainerStatus"]["ContainerID"]
            .as_str()?
            .to_string();
        Some((name, container))
    }

    /// The manager Swarm's Raft group is led by.
    pub fn swarm_leader(&self) -> Option<String> {
        let out =
            self.manager()
                .docker(&["node", "ls", "--format", "{{.Hostname}} {{.ManagerStatus}}"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_suffix(" Leader").map(str::to_string))
    }

    /// Waits until Swarm reports every node `Ready` (and every manager reachable).
    pub fn wait_swarm_ready(&self) -> Result<()> {
        let want = self.lab.nodes.len();
        let ready = wait_for(Duration::from_secs(120), || {
            let out = self.manager().docker(&[
                "node",
                "ls",
                "--format",
                "{{.Status}} {{.ManagerStatus}}",
            ]);
            let text = String::from_utf8_lossy(&out.stdout);
            out.status.success()
                && text
                    .lines()
                    .filter(|l| l.starts_with("Ready") && !l.contains("Unreachable"))
                    .count()
                    == want
        });
        if !ready {
            bail!("Swarm did not report every node ready within 120 s");
        }
        Ok(())
    }

    /// The `berth` binary the lab's daemons run (`berth rebalance` asks them to move slots).
    pub fn berth_bin(&self) -> &Path {
        &self.bins.berth
    }

    /// The cluster token's file, for a `berth` command against the daemons' API.
    pub fn token_file(&self) -> &Path {
        &self.token
    }

    // --- the volume control service ------------------------------------------------------

    fn control_addr(&self, manager: &str) -> String {
        format!("{}:{CONTROL_PORT}", self.lab.node(manager).addr)
    }

    /// Every member's URL: agents and `berth run` follow the leader among them.
    fn control_url(&self) -> String {
        self.managers()
            .iter()
            .map(|m| format!("http://{}", self.control_addr(m)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The volume's epoch at the control service (`None` without Berth, or unreachable).
    pub fn volume_epoch(&self, name: &str) -> Option<u64> {
        let token = self.token()?;
        // Only the serving member answers with the record; the others answer 503.
        self.control.keys().find_map(|m| {
            let v = http::get_json(
                &self.control_addr(m),
                &format!("/v1/berth/volumes/{name}"),
                Some(&token),
            )?;
            v["epoch"].as_u64()
        })
    }

    /// The volume's record at the control service (`None` without Berth, or unreachable).
    pub fn volume_record(&self, name: &str) -> Option<serde_json::Value> {
        let token = self.token()?;
        self.control.keys().find_map(|m| {
            http::get_json(
                &self.control_addr(m),
                &format!("/v1/berth/volumes/{name}"),
                Some(&token),
            )
            .filter(|v| v["epoch"].is_u64())
        })
    }

    /// Makes `<shared>/swarm/<name>-1 … -<members>` on the shared storage (through a worker's
    /// mount, which every node sees) for plain Swarm services to bind-mount, and returns the
    /// `--mount` source with `{{.Task.Slot}}` for the member's number.
    pub fn shared_dirs(&self, name: &str, members: u32) -> Result<String> {
        let root = self.lab.dir.join("shared/swarm");
        let dirs: Vec<String> = (1..=members)
            .map(|i| format!("{}/{name}-{i}", root.display()))
            .collect();
        let node = self
            .lab
            .nodes
            .iter()
            .find(|n| n.role == Role::Worker && n.is_up())
            .context("no worker is up")?;
        let out = node
            .command_inside("mkdir")
            .arg("-p")
            .args(&dirs)
            .output()?;
        if !out.status.success() {
            bail!(
                "mkdir {} on {}: {}",
                dirs.join(" "),
                node.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(format!("{}/{name}-{{{{.Task.Slot}}}}", root.display()))
    }

    /// The manager whose control member serves (the Raft leader, caught up), if one does.
    pub fn control_leader(&self) -> Option<String> {
        let token = self.token()?;
        self.control
            .keys()
            .find(|m| {
                http::get_json(&self.control_addr(m), "/v1/berth/raft", Some(&token))
                    .is_some_and(|v| v["serving"] == true)
            })
            .cloned()
    }

    /// Starts the control member on `manager` (Raft ID: its place among the managers).
    pub fn start_control(&mut self, manager: &str) -> Result<()> {
        let managers = self.managers();
        let id = managers
            .iter()
            .position(|n| n == manager)
            .context("not a manager")?
            + 1;
        let m = self.lab.node(manager);
        let mut cmd = m.command_inside(&self.bins.volume);
        cmd.args(["control", "--listen"])
            .arg(self.control_addr(manager))
            .arg("--state")
            .arg(m.dir.join("control-state"))
            .arg("--token-file")
            .arg(&self.token)
            .args(["--raft-id", &id.to_string()])
            .args(["--timing", &self.timing.to_string()]);
        for (i, peer) in managers.iter().enumerate() {
            cmd.args(["--peer", &format!("{}={}", i + 1, self.control_addr(peer))]);
        }
        let proc = Proc::spawn(
            cmd,
            &format!("control {manager}"),
            &self.logs.join(format!("{manager}-control.log")),
        )?;
        self.control.insert(manager.to_string(), proc);
        Ok(())
    }

    /// Restarts control members (SIGTERM, then started again; the others elect a leader
    /// meanwhile) until the serving member is on a manager `want` accepts.
    pub fn move_control_leader(&mut self, want: impl Fn(&str) -> bool) -> Result<()> {
        for _ in 0..8 {
            let mut leader = None;
            wait_for(Duration::from_secs(30), || {
                leader = self.control_leader();
                leader.is_some()
            });
            let Some(m) = leader else {
                bail!("no control member served; see {}", self.logs.display());
            };
            if want(&m) {
                return Ok(());
            }
            if let Some(mut p) = self.control.remove(&m) {
                p.stop();
            }
            wait_for(Duration::from_secs(30), || self.control_leader().is_some());
            self.start_control(&m)?;
        }
        bail!("the control service's leader did not move where wanted after 8 restarts")
    }

    /// kill -9 of the serving control member; returns its manager.
    pub fn kill_control_leader(&mut self) -> Option<String> {
        let m = self.control_leader()?;
        if let Some(mut p) = self.control.remove(&m) {
            p.kill();
        }
        Some(m)
    }

    /// kill -9 of every control member; returns their managers.
    pub fn kill_all_control(&mut self) -> Vec<String> {
        let managers: Vec<String> = self.control.keys().cloned().collect();
        for m in &managers {
            if let Some(mut p) = self.control.remove(m) {
                p.kill();
            }
        }
        managers
    }

    /// Starts every control member not running, and waits until one serves.
    pub fn start_missing_control(&mut self) -> Result<()> {
        for m in self.managers() {
            if !self.control.get_mut(&m).is_some_and(Proc::alive) {
                self.start_control(&m)?;
            }
        }
        if !wait_for(Duration::from_secs(30), || self.control_leader().is_some()) {
            bail!("no control member served; see {}", self.logs.display());
        }
        Ok(())
    }

    /// How many task containers of `service` died on the nodes that are up since `since_unix`
    /// (seconds), as their engines' event streams tell: stops, kills and crashes alike. Only
    /// that service's: the previous run's slot may still be stopping after its removal.
    pub fn task_containers_died(&self, service: &str, since_unix: u64) -> u64 {
        let label = format!("label=com.docker.swarm.service.name={service}");
        let until = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.lab
            .nodes
            .iter()
            .filter(|n| n.is_up())
            .map(|n| {
                let out = n.docker(&[
                    "events",
                    "--since",
                    &since_unix.to_string(),
                    "--until",
                    &until.to_string(),
                    "--filter",
                    "type=container",
                    "--filter",
                    "event=die",
                    "--filter",
                    &label,
                    "--format",
                    "{{.ID}}",
                ]);
                String::from_utf8_lossy(&out.stdout).lines().count() as u64
            })
            .sum()
    }

    // --- volume agents -------------------------------------------------------------------

    /// Volume agents on the workers only, from now on (before [`Cluster::start_berth`]). The
    /// control service picks a `replicated` volume's standbys among every node with an agent,
    /// whatever constraints the service has: with agents on managers and the slot confined to
    /// workers, the standby can be a manager, where the slot can never be promoted.
    pub fn agents_on_workers_only(&mut self) {
        self.agents_on_managers = false;
    }

    /// Agents started with `--failsafe` from now on (before [`Cluster::start_berth`]).
    pub fn agents_in_failsafe_mode(&mut self) {
        self.failsafe = true;
    }

    fn wants_agent(&self, name: &str) -> bool {
        self.agents_on_managers || self.lab.node(name).role == Role::Worker
    }

    /// Berth's pieces: the control service on every manager, an agent on every node, then
    /// `berth run` on every manager, and waits until one of them leads.
    pub fn start_berth(&mut self) -> Result<()> {
        self.berth = true;
        for m in self.managers() {
            self.start_control(&m)?;
        }
        if !wait_for(Duration::from_secs(30), || self.control_leader().is_some()) {
            bail!("no control member served; see {}", self.logs.display());
        }
        let names: Vec<String> = self
            .lab
            .nodes
            .iter()
            .map(|n| n.name.clone())
            .filter(|n| self.wants_agent(n))
            .collect();
        for n in &names {
            self.start_agent(n)?;
        }
        for n in &names {
            self.wait_plugin(n)?;
        }
        for m in self.managers() {
            self.start_daemon(&m)?;
        }
        if !wait_for(Duration::from_secs(60), || self.leading_daemon_ready()) {
            bail!("no berth run led and passed; see {}", self.logs.display());
        }
        Ok(())
    }

    /// Waits until Swarm's description of `name` lists the `berth` volume plugin: until then
    /// the scheduler places no task mounting a Berth volume there. A legacy plugin is listed
    /// once its engine has activated it, which a volume listing through the driver does (the
    /// agent's systemd unit does the same after the agent starts).
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
            .args(["--docker-socket", &node.engine.sock])
            .args(["--timing", &self.timing.to_string()]);
        if self.failsafe {
            cmd.arg("--failsafe");
        }
        let proc = Proc::spawn(
            cmd,
            &format!("agent {name}"),
            &self.logs.join(format!("{name}-agent.log")),
        )?;
        self.agents.insert(name.to_string(), proc);
        // Listening, not merely there: a killed agent leaves its socket file behind.
        let sock = node.plugin_dir.join("berth.sock");
        if !wait_for(Duration::from_secs(30), || {
            std::os::unix::net::UnixStream::connect(&sock).is_ok()
        }) {
            bail!(
                "the agent on {name} did not open its socket; see {}",
                self.logs.display()
            );
        }
        Ok(())
    }

    /// Restarts every agent that exited on its own (not killed by the harness, which forgets
    /// an agent it kills), as the agent's systemd unit would; says which.
    pub fn tend_agents(&mut self) -> Result<Vec<String>> {
        let exited: Vec<String> = self
            .agents
            .iter_mut()
            .filter_map(|(n, p)| (!p.alive()).then(|| n.clone()))
            .collect();
        for n in &exited {
            self.start_agent(n)?;
        }
        Ok(exited
            .into_iter()
            .map(|n| format!("the agent on {n} exited on its own; restarted"))
            .collect())
    }

    /// SIGKILL of `name`'s agent alone: its node, engine and containers run on.
    pub fn kill_agent(&mut self, name: &str) {
        if let Some(mut a) = self.agents.remove(name) {
            a.kill();
        }
    }

    /// SIGSTOP (`pause`) or SIGCONT of `name`'s agent alone.
    pub fn pause_agent(&self, name: &str, pause: bool) {
        if let Some(a) = self.agents.get(name) {
            a.signal(if pause { "STOP" } else { "CONT" });
        }
    }

    // --- berth run -----------------------------------------------------------------------

    /// `berth run`'s API on `manager`.
    pub fn daemon_api(&self, manager: &str) -> String {
        format!("{}:{API_PORT}", self.lab.node(manager).addr)
    }

    /// `berth run --elect` on `manager`, inside the node.
    pub fn start_daemon(&mut self, manager: &str) -> Result<()> {
        let m = self.lab.node(manager);
        let mut cmd = m.command_inside(&self.bins.berth);
        cmd.args([
            "run",
            "--docker",
            &m.engine.docker_host(),
            "--volume-control",
            &self.control_url(),
        ])
        .arg("--token-file")
        .arg(&self.token)
        .args(["--listen", &self.daemon_api(manager), "--resync", "2s"])
        .args(["--timing", &self.timing.to_string()])
        .args(["--elect", "--elect-ttl"])
        .arg(format!("{}ms", self.elect_ttl.as_millis()))
        .arg("--state-dir")
        .arg(m.dir.join("berth-state"));
        let proc = Proc::spawn(
            cmd,
            &format!("berth run {manager}"),
            &self.logs.join(format!("{manager}-daemon.log")),
        )?;
        self.daemons.insert(manager.to_string(), proc);
        Ok(())
    }

    /// kill -9 of `berth run` on `manager`.
    pub fn kill_daemon(&mut self, manager: &str) {
        if let Some(mut d) = self.daemons.remove(manager) {
            d.kill();
        }
    }

    /// The manager whose `berth run` leads: a standby's `/v1/ready` says `standby` (naming the
    /// leader); the leader's says `ready` or `not ready`.
    pub fn leading_daemon(&self) -> Option<String> {
        self.daemon_status()
            .into_iter()
            .find(|(_, s)| s != "standby")
            .map(|(m, _)| m)
    }

    fn leading_daemon_ready(&self) -> bool {
        self.daemon_status().iter().any(|(_, s)| s == "ready")
    }

    /// Each answering daemon's `/v1/ready` status.
    fn daemon_status(&self) -> Vec<(String, String)> {
        self.daemons
            .keys()
            .filter_map(|m| {
                let v = http::get_json(&self.daemon_api(m), "/v1/ready", None)?;
                Some((m.clone(), v["status"].as_str()?.to_string()))
            })
            .collect()
    }

    /// Makes `manager`'s `berth run` the leader, as an operator would: every other daemon
    /// stopped (a leader stopping cleanly hands the lock over at once), then started again as
    /// a standby once `manager`'s leads and has passed.
    pub fn lead_daemon_on(&mut self, manager: &str) -> Result<()> {
        if self.leading_daemon().as_deref() == Some(manager) {
            return Ok(());
        }
        let others: Vec<String> = self
            .daemons
            .keys()
            .filter(|m| *m != manager)
            .cloned()
            .collect();
        for m in &others {
            if let Some(mut d) = self.daemons.remove(m) {
                d.stop();
            }
        }
        let led = wait_for(Duration::from_secs(60), || {
            self.daemon_status() == [(manager.to_string(), "ready".to_string())]
        });
        for m in &others {
            self.start_daemon(m)?;
        }
        if !led {
            bail!("berth run on {manager} did not take the lead and pass within 60 s");
        }
        Ok(())
    }

    /// Whether `berth run` on `manager` has a failover command in flight.
    pub fn failover_in_flight(&self, manager: &str) -> bool {
        // A detailed endpoint: it asks for the cluster token.
        let token = self.token();
        http::get_json(&self.daemon_api(manager), "/v1/failovers", token.as_deref())
            .and_then(|v| v["in_flight"].as_array().map(|a| !a.is_empty()))
            .unwrap_or(false)
    }

    // --- nodes ---------------------------------------------------------------------------

    /// Power loss of a node: its dockerd, containers and Berth's processes die at once.
    pub fn kill_node(&mut self, name: &str) {
        self.lab.node_mut(name).kill();
        for procs in [&mut self.agents, &mut self.control, &mut self.daemons] {
            if let Some(mut p) = procs.remove(name) {
                p.kill();
            }
        }
    }

    /// Brings back whatever a fault left down: a node that is down boots (its agent before its
    /// engine, as a systemd unit ordered before docker would, since the engine restores
    /// containers that mount Berth volumes as it comes up), its link is restored, and every
    /// Berth process that is not running starts again. Then waits until Swarm lists the
    /// plugin on every node it touched and reports every node ready.
    pub fn restore(&mut self) -> Result<()> {
        let names: Vec<String> = self.lab.nodes.iter().map(|n| n.name.clone()).collect();
        let mut touched = Vec::new();
        for n in &names {
            self.lab.node(n).heal();
            if !self.lab.node(n).is_up() {
                self.lab.node_mut(n).boot();
                for procs in [&mut self.agents, &mut self.control, &mut self.daemons] {
                    procs.remove(n);
                }
                // Its brick and its mount first: the agent serves `shared` from the mount, and
                // the engine restores containers bind-mounting it.
                if let Some(g) = &self.gluster {
                    g.rejoin(&self.lab, n);
                }
                if self.berth && self.wants_agent(n) {
                    self.start_agent(n)?;
                }
                self.lab.node(n).wait_engine();
                touched.push(n.clone());
            }
        }
        if self.berth {
            let with_agent: Vec<&String> = names.iter().filter(|n| self.wants_agent(n)).collect();
            for n in with_agent {
                if !self.agents.get_mut(n).is_some_and(Proc::alive) {
                    self.start_agent(n)?;
                    touched.push(n.clone());
                }
            }
            for m in self.managers() {
                if !self.control.get_mut(&m).is_some_and(Proc::alive) {
                    self.start_control(&m)?;
                }
            }
            for m in self.managers() {
                if !self.daemons.get_mut(&m).is_some_and(Proc::alive) {
                    self.start_daemon(&m)?;
                }
            }
            touched.sort();
            touched.dedup();
            for n in &touched {
                self.wait_plugin(n)?;
            }
        }
        self.wait_swarm_ready()
    }

    // --- logs ----------------------------------------------------------------------------

    /// Copies the logs (control, agents, daemons) and each node's dockerd log into `dir`.
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

    /// The log directory (control, agents, daemons), kept until the lab is torn down.
    pub fn logs(&self) -> &Path {
        &self.logs
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Nothing may stay stopped: a paused process ignores the SIGTERM that follows.
        for n in &self.lab.nodes {
            n.thaw();
        }
        // The daemons first, so they do not react to the teardown.
        for procs in [&mut self.daemons, &mut self.agents, &mut self.control] {
            for (_, mut p) in std::mem::take(procs) {
                p.stop();
            }
        }
    }
}
