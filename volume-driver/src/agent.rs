//! The node agent's volume operations, independent of the plugin wire format: validate, consult
//! the control service, enforce fencing, bring data up to date, and count mounts per caller.
//!
//! Every Mount, a refcount increment included, is checked against the current epoch at the
//! control service (by re-claiming the mount), so a node that was fenced hands out nothing; the
//! reconcile pass drops the mounts of a node that learns it was fenced. Refcounts are kept in
//! `<data-root>/mounts/`, so an agent restart neither forgets a caller nor leaks a claim.

use backon::Retryable;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use berth_control_model::gate::MountGate;
use berth_control_model::name::{self, NameError};
use berth_control_model::options::{
    self, BackendKind, META_BACKEND, META_NAME, META_PROFILE, META_REPLICAS, OptionError,
};
use berth_control_model::wire::VolumeRecord;
use berth_volume_client::{ClientError, ControlClient};
use serde::{Deserialize, Serialize};

use crate::backend::layout::Layout;
use crate::backend::local;
use crate::backend::{BackendError, shared};
use crate::datapath::{DataPathMode, Session};
use crate::transfer::TransferOptions;

/// Why a volume operation failed; the Display text is the plugin's `Err`.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Option(#[from] OptionError),
    #[error("volume {0} not found")]
    NotFound(String),
    #[error("volume {name}: {source}")]
    Control {
        name: String,
        #[source]
        source: ClientError,
    },
    #[error("volume {name}: {source}")]
    Backend {
        name: String,
        #[source]
        source: Box<BackendError>,
    },
    #[error(
        "volume {name} is fenced on node {node}: current primary is {primary} at epoch {epoch}"
    )]
    Fenced {
        name: String,
        node: String,
        primary: String,
        epoch: u64,
    },
    #[error("volume {name}: node {node} refuses new mounts: {why}")]
    NoLease {
        name: String,
        node: String,
        why: String,
    },
    #[error("volume {name} is mounted on this node; unmount it first")]
    MountedHere { name: String },
    #[error("volume {name}: {source}")]
    DataPath {
        name: String,
        #[source]
        source: Box<crate::datapath::DataPathError>,
    },
    #[error("cannot record mounts in {path}")]
    Record {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl AgentError {
    /// The full cause chain, for the `Err` string and the log line.
    pub fn chain(&self) -> String {
        berth_volume_client::error_chain::chain(self)
    }
}

/// A volume as Docker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    pub name: String,
    pub mountpoint: String,
    pub status: BTreeMap<String, String>,
}

/// One volume mounted on this node: who holds it, at which epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct MountRef {
    dataset_id: String,
    /// What containers were given: the data path's mountpoint (or, without one, the copy).
    path: PathBuf,
    epoch: u64,
    callers: BTreeSet<String>,
    /// The copy served at `path`; absent in records an agent without the data path wrote,
    /// whose containers were given the copy itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    backing: Option<PathBuf>,
    /// When this agent last mounted it, on the boot clock (in memory only): a container that
    /// mounted it a moment ago may not be running yet.
    #[serde(skip)]
    mounted_at: Option<std::time::Duration>,
}

/// `<data-root>/mounts/<hash of the name>.json`: one mounted volume, valid only within the boot
/// that made it (a reboot unmounted everything). One file per volume, so that a Mount writes
/// a few hundred bytes whatever the number of volumes mounted, and mounts of different volumes
/// (each under its own lock) never share a file.
#[derive(Debug, Serialize, Deserialize)]
struct MountFile {
    boot_id: String,
    name: String,
    mount: MountRef,
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// One node's agent.
pub struct Agent {
    node: String,
    local: Arc<Layout>,
    shared_root: PathBuf,
    control: ControlClient,
    pull: TransferOptions,
    mounts: Mutex<BTreeMap<String, MountRef>>,
    mounts_dir: PathBuf,
    locks: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
    replica: crate::shipper::Shipper,
    passes: std::sync::atomic::AtomicU64,
    /// Ships into this node's standby copies, by dataset ID: one at a time, and a cancel
    /// count that `prepare` bumps to stop one (see `replica`).
    standby_ships: Mutex<BTreeMap<String, StandbyShip>>,
    /// The node's lease and how to stop its containers when it is lost (`lease`); `None`
    /// (library users, tests of other parts) never refuses a Mount for want of a lease.
    fence: Option<SelfFence>,
    /// How containers reach their data: through this agent (`datapath`), or directly.
    data_path: DataPathMode,
    /// The data path's live mounts, by volume name.
    sessions: Mutex<BTreeMap<String, Session>>,
    /// Since when (boot clock) no running container has used a mounted volume, by name.
    unused_since: Mutex<BTreeMap<String, std::time::Duration>>,
}

/// How long a mount may go unused by any running container before its claim counts as
/// orphaned (an engine restart sends no Unmount): longer than a container takes from its Mount
/// to running.
const ORPHAN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a Mount that comes before the agent's first lease waits for it.
const FIRST_LEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// What self-fencing needs: the lease, the local engine, and the driver name Docker knows this
/// agent by.
pub struct SelfFence {
    pub keeper: berth_control_model::lease::SharedKeeper,
    pub docker: crate::docker::Docker,
    pub driver: String,
}

/// The lock a ship into one standby copy holds, and the count that cancels it.
#[derive(Clone)]
pub(crate) struct StandbyShip {
    pub lock: Arc<tokio::sync::Mutex<()>>,
    pub cancels: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Agent {
    /// An agent for `node`; mounts recorded by an earlier run in this boot are taken back.
    pub fn new(
        node: String,
        local: Arc<Layout>,
        shared_root: PathBuf,
        control: ControlClient,
    ) -> Agent {
        let mounts_dir = local.root().join("mounts");
        let boot = boot_id();
        let mounts = std::fs::read_dir(&mounts_dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                    .filter_map(|e| std::fs::read(e.path()).ok())
                    .filter_map(|b| serde_json::from_slice::<MountFile>(&b).ok())
                    .filter(|f| f.boot_id == boot)
                    .map(|f| (f.name, f.mount))
                    .collect()
            })
            .unwrap_or_default();
        Agent {
            node,
            local,
            shared_root,
            control,
            pull: TransferOptions::default(),
            mounts: Mutex::new(mounts),
            mounts_dir,
            locks: Mutex::new(BTreeMap::new()),
            replica: crate::shipper::Shipper::default(),
            passes: std::sync::atomic::AtomicU64::new(0),
            standby_ships: Mutex::new(BTreeMap::new()),
            fence: None,
            data_path: DataPathMode::Direct,
            sessions: Mutex::new(BTreeMap::new()),
            unused_since: Mutex::new(BTreeMap::new()),
        }
    }

    /// Serves mounts through this agent (`DataPathMode::Fuse`), or hands containers the copy
    /// itself (`Direct`, the default for library users).
    pub fn with_data_path(mut self, mode: DataPathMode) -> Agent {
        self.data_path = mode;
        self
    }

    /// Holds a lease and fences itself when it is lost (see `lease`).
    pub fn with_self_fence(mut self, f: SelfFence) -> Agent {
        self.fence = Some(f);
        self
    }

    /// Checks that `--docker-socket` leads to this node's engine, since self-fencing stops the
    /// containers it lists: one in another swarm node's place is refused. An engine that does
    /// not answer is only reported: the agent still serves, and cannot self-fence until it does.
    /// Bounded in time: an engine that is itself starting waits for its volume plugins (this
    /// agent) before it answers, so waiting for it here would deadlock the two.
    pub async fn check_engine(&self) -> Result<(), String> {
        let Some(f) = &self.fence else {
            return Ok(());
        };
        let answer =
            tokio::time::timeout(std::time::Duration::from_secs(3), f.docker.swarm_node_id()).await;
        let Ok(answer) = answer else {
            tracing::warn!(
                "the Docker Engine at --docker-socket did not answer within 3 s (starting, and waiting for its plugins?); its identity is not checked"
            );
            return Ok(());
        };
        match answer {
            Ok(id) if !id.is_empty() && id != self.node => Err(format!(
                "the Docker Engine at --docker-socket is swarm node {id}, not node {}: \
                 self-fencing would stop another node's containers and miss this one's",
                self.node
            )),
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::error!(error = %berth_volume_client::error_chain::chain(&e),
                    "the Docker Engine at --docker-socket does not answer: if this node loses its lease, its containers cannot be stopped");
                Ok(())
            }
        }
    }

    /// Whether the node's Docker Engine answers within `within`. Without self-fencing there is
    /// no engine to ask, and nothing it would be needed for: true.
    pub async fn docker_answers(&self, within: std::time::Duration) -> bool {
        let Some(f) = &self.fence else {
            return true;
        };
        matches!(
            tokio::time::timeout(within, f.docker.ping()).await,
            Ok(Ok(()))
        )
    }

    pub fn keeper(&self) -> Option<&berth_control_model::lease::Keeper> {
        self.fence.as_ref().map(|f| &*f.keeper)
    }

    /// An agent serves its plugin socket before it first reaches the control service (the
    /// engine waits minutes on a missing plugin), so a Mount may come before the first lease:
    /// it waits for one a little, then is refused with the reason.
    async fn await_first_lease(&self) {
        let Some(k) = self.keeper() else { return };
        let deadline = tokio::time::Instant::now() + FIRST_LEASE_WAIT;
        while k.period() == 0 && !k.is_dead() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    fn lease_refusal(&self, name: &str) -> Result<(), AgentError> {
        let why = self
            .keeper()
            .and_then(|k| k.refuse_mount(crate::clock::now()));
        match why {
            Some(why) => {
                tracing::warn!(volume = name, reason = %why, "mount refused: no lease");
                Err(AgentError::NoLease {
                    name: name.to_string(),
                    node: self.node.clone(),
                    why,
                })
            }
            None => Ok(()),
        }
    }

    /// For a node declared dead: refuses every write through its mounts at once, then stops
    /// every running container that uses a volume mounted here, each with a SIGTERM and,
    /// within `deadline`, a SIGKILL; then forgets the mounts whose containers are all stopped.
    /// A mount whose containers could not be confirmed stopped stays recorded and claimed (and
    /// refused): its volume is never handed over on this node's word. Returns the containers
    /// stopped.
    pub async fn self_fence(&self, deadline: std::time::Duration) -> usize {
        for s in self.sessions().values() {
            s.gate().refuse("an operator declared this node dead");
        }
        let Some(f) = &self.fence else {
            return 0;
        };
        let started = std::time::Instant::now();
        let names: Vec<String> = self.mounts().keys().cloned().collect();
        // The engine's own grace period is in whole seconds; a second is left for the SIGKILL.
        let grace = deadline.as_secs().saturating_sub(1);
        let one = |name: String| async move {
            let ids = match f.docker.containers_using(&name, &f.driver).await {
                Ok(ids) => ids,
                Err(e) => {
                    tracing::error!(volume = %name, error = %berth_volume_client::error_chain::chain(&e),
                        "self-fence: cannot list the containers using it");
                    return (name, None);
                }
            };
            if ids.is_empty() {
                // Mounted here, so the engine that mounted it has a container using it: this
                // engine is not that one, or the container went away while its Unmount could
                // not reach the control service. The claim stays, for a person to look at.
                tracing::error!(volume = %name, "self-fence: the engine at --docker-socket shows no running container using a volume mounted here; is it this node's engine?");
                return (name, None);
            }
            let mut stopped = 0;
            for id in &ids {
                let left = deadline.saturating_sub(started.elapsed());
                let done = match tokio::time::timeout(left, f.docker.stop(id, grace)).await {
                    Ok(Ok(())) => true,
                    Ok(Err(e)) => {
                        tracing::error!(volume = %name, container = %id, error = %berth_volume_client::error_chain::chain(&e), "self-fence: stop failed; killing");
                        f.docker.kill(id).await.is_ok()
                    }
                    Err(_) => {
                        tracing::error!(volume = %name, container = %id, "self-fence: stop took too long; killing");
                        f.docker.kill(id).await.is_ok()
                    }
                };
                if done {
                    stopped += 1;
                }
            }
            let all = stopped == ids.len();
            (name, all.then_some(stopped))
        };
        // An engine that hangs must not hold the watchdog: what is not confirmed by the deadline
        // counts as not stopped.
        let bounded = |name: String| async move {
            let left =
                deadline.saturating_sub(started.elapsed()) + std::time::Duration::from_secs(1);
            match tokio::time::timeout(left, one(name.clone())).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::error!(volume = %name, "self-fence: the engine did not answer in time");
                    (name, None)
                }
            }
        };
        let results = futures_util::future::join_all(names.into_iter().map(bounded)).await;
        let mut total = 0;
        for (name, r) in results {
            let Some(n) = r else { continue };
            total += n;
            let l = self.lock_for(&name);
            let _g = l.lock().await;
            self.end_session(&name);
            if self.mounts().remove(&name).is_some()
                && let Err(e) = self.persist(&name)
            {
                tracing::warn!(error = %e.chain(), "mount record not saved");
            }
        }
        total
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops serving `name` through the data path (its held writes fail, its mount goes).
    fn end_session(&self, name: &str) {
        if let Some(s) = self.sessions().remove(name) {
            s.stop();
        }
    }

    /// The current lease period (0 without a lease kept).
    fn period(&self) -> u64 {
        self.keeper().map_or(0, |k| k.period())
    }

    /// What containers mounting `name` get for the copy at `backing`: with the data path, a
    /// mount served by this agent (started unless already served), whose writes wait for the
    /// lease period `validated`; without, the copy itself.
    fn serve(
        &self,
        name: &str,
        sync_writes: bool,
        backing: &std::path::Path,
        validated: u64,
    ) -> Result<PathBuf, AgentError> {
        if self.data_path == DataPathMode::Direct {
            return Ok(backing.to_path_buf());
        }
        if let Some(s) = self.sessions().get(name)
            && !s.gate().is_refused()
        {
            s.gate().validate(validated);
            return Ok(s.mountpoint().to_path_buf());
        }
        self.end_session(name);
        let mountpoint = self.local.root().join("mnt").join(name);
        let gate = MountGate::new(
            name,
            self.fence.as_ref().map(|f| f.keeper.clone()),
            validated,
        );
        let s = Session::serve(name, backing, &mountpoint, gate, sync_writes).map_err(|e| {
            AgentError::DataPath {
                name: name.to_string(),
                source: Box::new(e),
            }
        })?;
        self.sessions().insert(name.to_string(), s);
        Ok(mountpoint)
    }

    /// Stops, in the background, the running containers that use `name`: their data moved
    /// away, or their mount died with an earlier agent. Bounded by the self-fence deadline.
    fn stop_users(&self, name: &str, why: &'static str) {
        let Some(f) = &self.fence else { return };
        let (docker, driver, name) = (f.docker.clone(), f.driver.clone(), name.to_string());
        let deadline = f.keeper.timing().self_fence_deadline;
        let grace = deadline.as_secs().saturating_sub(1);
        tokio::spawn(async move {
            // The engine may be busy starting (it waits for its plugins): ten more tries, 2 s
            // apart.
            let listed = (|| docker.containers_using(&name, &driver))
                .retry(
                    backon::ConstantBuilder::default()
                        .with_delay(std::time::Duration::from_secs(2))
                        .with_max_times(10),
                )
                .notify(|e, _| {
                    tracing::debug!(volume = %name, error = %berth_volume_client::error_chain::chain(e), "cannot list the containers using it yet");
                })
                .await;
            let ids = match listed {
                Ok(ids) => ids,
                Err(e) => {
                    tracing::error!(volume = %name, error = %berth_volume_client::error_chain::chain(&e), "cannot list the containers using it to stop them");
                    return;
                }
            };
            for id in ids {
                let stopped = matches!(
                    tokio::time::timeout(deadline, docker.stop(&id, grace)).await,
                    Ok(Ok(()))
                );
                if !stopped {
                    let _ = docker.kill(&id).await;
                }
                crate::metrics::agent().containers_stopped.inc();
                tracing::warn!(volume = %name, container = %id, reason = why, "stopped a container using it");
            }
        });
    }

    /// Whether no running container uses the mounted volume `name` and none mounted it within
    /// `ORPHAN_GRACE`, as far as the local engine says (an engine that does not answer within
    /// 2 s, or no engine to ask, says nothing is unused).
    async fn unused(&self, name: &str) -> bool {
        let Some(f) = &self.fence else { return false };
        let recent = self
            .mounts()
            .get(name)
            .and_then(|m| m.mounted_at)
            .is_some_and(|at| crate::clock::now().saturating_sub(at) < ORPHAN_GRACE);
        if recent {
            return false;
        }
        let answer = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            f.docker.containers_using(name, &f.driver),
        )
        .await;
        matches!(answer, Ok(Ok(ids)) if ids.is_empty())
    }

    /// Releases the claims of mounts no running container has used for `ORPHAN_GRACE`: an
    /// engine that restarted (or lost a container) without an Unmount leaves them held, which
    /// would keep their volumes from ever moving while the node keeps its lease.
    async fn release_orphans(&self) {
        let names: Vec<String> = self.mounts().keys().cloned().collect();
        let now = crate::clock::now();
        for name in names {
            if !self.unused(&name).await {
                self.unused_since_map().remove(&name);
                continue;
            }
            let since = *self.unused_since_map().entry(name.clone()).or_insert(now);
            if now.saturating_sub(since) < ORPHAN_GRACE {
                continue;
            }
            let l = self.lock_for(&name);
            let _g = l.lock().await;
            if !self.unused(&name).await {
                continue;
            }
            let Some(r) = self.mounts().remove(&name) else {
                continue;
            };
            self.end_session(&name);
            if let Err(e) = self.persist(&name) {
                tracing::warn!(error = %e.chain(), "mount record not saved");
            }
            match self.control.release_mount(&r.dataset_id, &self.node).await {
                Ok(_) => {
                    self.unused_since_map().remove(&name);
                    crate::metrics::agent().orphans_released.inc();
                    tracing::warn!(volume = %name, callers = r.callers.len(), "released a mount no running container has used for a while (an engine restart sends no Unmount)");
                }
                Err(e) => {
                    tracing::warn!(volume = %name, error = %e, "releasing an orphaned mount failed; retrying");
                    self.mounts().insert(name.clone(), r);
                    let _ = self.persist(&name);
                }
            }
        }
    }

    fn unused_since_map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, std::time::Duration>> {
        self.unused_since.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims again, at the control service, every mount not yet claimed in the current lease
    /// period, so its held writes go on; a mount whose claim is refused lost its data to another
    /// node: its writes fail from now on and its containers are stopped. A claim that cannot be
    /// made (the control service does not answer) is tried again at the next heartbeat.
    pub async fn revalidate(&self) {
        let period = self.period();
        let stale: Vec<String> = self
            .sessions()
            .iter()
            .filter(|(_, s)| s.gate().validated() < period && !s.gate().is_refused())
            .map(|(n, _)| n.clone())
            .collect();
        for name in stale {
            let l = self.lock_for(&name);
            let _g = l.lock().await;
            let Some((ds, epoch)) = self
                .mounts()
                .get(&name)
                .map(|m| (m.dataset_id.clone(), m.epoch))
            else {
                continue;
            };
            match self.control.claim_mount(&ds, &self.node, epoch).await {
                Ok(_) => {
                    if let Some(s) = self.sessions().get(&name) {
                        s.gate().validate(period);
                    }
                    tracing::info!(volume = %name, epoch, period, "mount claimed again: its writes go on");
                }
                Err(e) if matches!(e.status(), Some(404 | 405 | 409)) => {
                    self.drop_fenced(&name, &e.to_string());
                }
                Err(e) => {
                    tracing::warn!(volume = %name, error = %e, "cannot claim the mount again yet; its writes stay held")
                }
            }
        }
    }

    /// How this node's moves behave (a rate limit, the cluster token).
    pub fn with_transfer_options(mut self, pull: TransferOptions) -> Agent {
        self.pull = pull;
        self
    }

    /// How this node ships `replicated` datasets to their standbys.
    pub fn with_shipper(mut self, s: crate::shipper::Shipper) -> Agent {
        self.replica = s;
        self
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub(crate) fn layout(&self) -> &Layout {
        &self.local
    }

    pub(crate) fn control(&self) -> &ControlClient {
        &self.control
    }

    pub(crate) fn transfer_options(&self) -> &TransferOptions {
        &self.pull
    }

    pub(crate) fn shipper(&self) -> &crate::shipper::Shipper {
        &self.replica
    }

    pub(crate) fn standby_ship(&self, id: &str) -> StandbyShip {
        let mut m = self.standby_ships.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(id.to_string())
            .or_insert_with(|| StandbyShip {
                lock: Arc::default(),
                cancels: Arc::new(tokio::sync::watch::channel(0).0),
            })
            .clone()
    }

    /// Stops a ship into this node's copy of `id` and waits until it has stopped writing: the
    /// copy is about to be the data (a promotion, or any pull as the primary). A ship from a
    /// dead primary whose connection hangs would otherwise hold the copy indefinitely.
    async fn stop_standby_ship(&self, id: &str) {
        let s = self.standby_ship(id);
        s.cancels.send_modify(|c| *c += 1);
        drop(s.lock.lock().await);
    }

    pub(crate) fn lock_for(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut l = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        l.entry(name.to_string()).or_default().clone()
    }

    fn mounts(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, MountRef>> {
        self.mounts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records volume `name`'s mount (or its absence) on disk: a temp file and a rename, so a
    /// crash leaves the old record or the new one. Called under the volume's lock.
    fn persist(&self, name: &str) -> Result<(), AgentError> {
        let f = self
            .mounts_dir
            .join(format!("{}.json", blake3::hash(name.as_bytes()).to_hex()));
        let rec = |source| AgentError::Record {
            path: f.display().to_string(),
            source,
        };
        let Some(mount) = self.mounts().get(name).cloned() else {
            return match std::fs::remove_file(&f) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(rec(e)),
                _ => Ok(()),
            };
        };
        let doc = MountFile {
            boot_id: boot_id(),
            name: name.to_string(),
            mount,
        };
        let bytes = serde_json::to_vec(&doc).unwrap_or_default();
        let tmp = f.with_extension("tmp");
        std::fs::create_dir_all(&self.mounts_dir).map_err(rec)?;
        std::fs::write(&tmp, bytes).map_err(rec)?;
        std::fs::rename(&tmp, &f).map_err(rec)
    }

    fn ctl(name: &str) -> impl FnOnce(ClientError) -> AgentError + '_ {
        move |source| AgentError::Control {
            name: name.to_string(),
            source,
        }
    }

    async fn find(&self, name: &str) -> Result<VolumeRecord, AgentError> {
        self.control
            .volume(name)
            .await
            .map_err(Self::ctl(name))?
            .ok_or_else(|| AgentError::NotFound(name.to_string()))
    }

    /// Creates the volume cluster-wide with this node as primary; an existing name is success
    /// (Swarm calls Create on every node that runs a task). Names are unique at the control
    /// service, so no configuration tag is needed and unrelated creates never conflict.
    pub async fn create(
        &self,
        name: &str,
        opts: &BTreeMap<String, String>,
    ) -> Result<(), AgentError> {
        name::validate(name)?;
        let o = options::parse(opts)?;
        let _g = self.lock_for(name);
        let _g = _g.lock().await;
        if self
            .control
            .volume(name)
            .await
            .map_err(Self::ctl(name))?
            .is_some()
        {
            return Ok(());
        }
        let mut meta = BTreeMap::from([
            (META_NAME.to_string(), name.to_string()),
            (META_BACKEND.to_string(), o.backend.as_str().to_string()),
        ]);
        if let Some(p) = &o.profile {
            meta.insert(META_PROFILE.to_string(), p.clone());
        }
        if let Some(r) = o.replicas {
            meta.insert(META_REPLICAS.to_string(), r.to_string());
        }
        match self.control.create(&self.node, o.size, &meta, None).await {
            Ok(d) => {
                tracing::info!(volume = name, dataset = %d.dataset_id, "volume created");
                Ok(())
            }
            // Another node created the name first.
            Err(e) if e.status() == Some(409) => Ok(()),
            Err(e) => Err(Self::ctl(name)(e)),
        }
    }

    /// Deletes the volume cluster-wide and this node's copy.
    pub async fn remove(&self, name: &str) -> Result<(), AgentError> {
        name::validate(name)?;
        let _g = self.lock_for(name);
        let _g = _g.lock().await;
        if self.mounts().contains_key(name) {
            return Err(AgentError::MountedHere {
                name: name.to_string(),
            });
        }
        let d = self.find(name).await?;
        self.control
            .delete(&d.dataset_id)
            .await
            .map_err(Self::ctl(name))?;
        if BackendKind::from_str_or_local(&d.backend).is_node_local() {
            self.local
                .remove(&d.dataset_id)
                .map_err(|source| AgentError::Backend {
                    name: name.to_string(),
                    source: Box::new(source),
                })?;
        }
        tracing::info!(volume = name, dataset = %d.dataset_id, "volume removed");
        Ok(())
    }

    /// Brings this node's copy up to `d`'s epoch and returns its path.
    async fn prepare(&self, name: &str, d: &VolumeRecord) -> Result<PathBuf, AgentError> {
        let be = |source| AgentError::Backend {
            name: name.to_string(),
            source: Box::new(source),
        };
        match BackendKind::from_str_or_local(&d.backend) {
            BackendKind::Shared => shared::prepare(
                &self.shared_root,
                &d.dataset_id,
                d.epoch,
                d.recreated.then_some(d.epoch),
            )
            .map_err(be),
            BackendKind::Local | BackendKind::Replicated => {
                if self.local.local_epoch(&d.dataset_id) != Some(d.epoch) {
                    self.stop_standby_ship(&d.dataset_id).await;
                }
                local::prepare(&self.local, d, &self.node, &self.pull)
                    .await
                    .map_err(be)
            }
        }
    }

    fn fenced(&self, name: &str, d: &VolumeRecord) -> AgentError {
        AgentError::Fenced {
            name: name.to_string(),
            node: self.node.clone(),
            primary: d
                .primary
                .clone()
                .unwrap_or_else(|| "nobody (fenced)".to_string()),
            epoch: d.epoch,
        }
    }

    /// Forgets this node's mount of `name`: it was fenced, so its copy is handed out no more.
    /// Writes through it fail from now on, and the containers using it are stopped.
    fn drop_fenced(&self, name: &str, why: &str) {
        if let Some(s) = self.sessions().get(name) {
            s.gate().refuse(why);
        }
        if self.mounts().remove(name).is_some() {
            crate::metrics::agent().mounts_refused.inc();
            tracing::error!(
                volume = name,
                reason = why,
                "fenced: this node no longer hands out its copy; its writes are refused and its containers stopped"
            );
            if let Err(e) = self.persist(name) {
                tracing::warn!(error = %e.chain(), "mount record not saved");
            }
            self.stop_users(name, "its data moved to another node");
        }
        self.end_session(name);
    }

    /// Mounts for caller `id`: only on the primary at the current epoch, claimed at the control
    /// service so no second writable mount can exist anywhere. A refcount increment re-claims
    /// too: the claim is granted only while this node is still the primary at its epoch.
    pub async fn mount(&self, name: &str, id: &str) -> Result<PathBuf, AgentError> {
        name::validate(name)?;
        self.await_first_lease().await;
        let _g = self.lock_for(name);
        let _g = _g.lock().await;
        let held = self
            .mounts()
            .get(name)
            .map(|m| (m.dataset_id.clone(), m.epoch));
        if let Some((ds, epoch)) = held {
            let period = self.period();
            match self.control.claim_mount(&ds, &self.node, epoch).await {
                Ok(d) => {
                    self.lease_refusal(name)?;
                    let backing = {
                        let m = self.mounts();
                        let r = m.get(name).expect("held under the volume's lock");
                        r.backing.clone().unwrap_or_else(|| r.path.clone())
                    };
                    let path =
                        self.serve(name, d.backend() == BackendKind::Shared, &backing, period)?;
                    {
                        let mut m = self.mounts();
                        let r = m.get_mut(name).expect("held under the volume's lock");
                        r.callers.insert(id.to_string());
                        r.path = path.clone();
                        r.backing = Some(backing);
                        r.mounted_at = Some(crate::clock::now());
                    }
                    self.persist(name)?;
                    tracing::info!(volume = name, caller = id, "mount reference added");
                    return Ok(path);
                }
                Err(e) if matches!(e.status(), Some(404 | 405 | 409)) => {
                    self.drop_fenced(name, &e.to_string());
                }
                Err(e) => return Err(Self::ctl(name)(e)),
            }
        }
        let d = self.find(name).await?;
        if !d.is_primary(&self.node) {
            let e = self.fenced(name, &d);
            tracing::warn!(volume = name, error = %e, "mount refused");
            return Err(e);
        }
        self.lease_refusal(name)?;
        let backing = self.prepare(name, &d).await?;
        // A pull can take long enough for the lease to lapse meanwhile.
        self.lease_refusal(name)?;
        // The period is read before the claim: a gap in the lease after it leaves the mount
        // waiting to be claimed again, never admitted on a claim older than the gap.
        let period = self.period();
        if let Err(e) = self
            .control
            .claim_mount(&d.dataset_id, &self.node, d.epoch)
            .await
        {
            tracing::warn!(volume = name, error = %e, "mount refused by control");
            return Err(Self::ctl(name)(e));
        }
        // Failsafe (rule 9): a vote this agent gave promised no write on a newly claimed mount
        // for one lease; the asker may still be writing this dataset until then.
        if let Some(hold) = self
            .keeper()
            .map(|k| k.failsafe_hold(crate::clock::now()))
            .filter(|h| !h.is_zero())
        {
            tracing::info!(
                volume = name,
                ms = hold.as_millis() as u64,
                "failsafe: the promise of this agent's last vote holds the new mount"
            );
            tokio::time::sleep(hold).await;
        }
        let shared = BackendKind::from_str_or_local(&d.backend) == BackendKind::Shared;
        let path = match self.serve(name, shared, &backing, period) {
            Ok(p) => p,
            Err(e) => {
                let _ = self.control.release_mount(&d.dataset_id, &self.node).await;
                return Err(e);
            }
        };
        self.mounts().insert(
            name.to_string(),
            MountRef {
                dataset_id: d.dataset_id.clone(),
                path: path.clone(),
                epoch: d.epoch,
                callers: BTreeSet::from([id.to_string()]),
                backing: Some(backing),
                mounted_at: Some(crate::clock::now()),
            },
        );
        if let Err(e) = self.persist(name) {
            // Unrecorded, the claim would outlive a restart: give it back and refuse.
            self.mounts().remove(name);
            self.end_session(name);
            let _ = self.control.release_mount(&d.dataset_id, &self.node).await;
            return Err(e);
        }
        tracing::info!(volume = name, dataset = %d.dataset_id, epoch = d.epoch, caller = id, "mounted");
        Ok(path)
    }

    /// Drops caller `id`'s reference; the last one releases the mount claim (then true: the
    /// caller ships a `replicated` volume's final state, `replica::ship_after_unmount`).
    pub async fn unmount(&self, name: &str, id: &str) -> Result<bool, AgentError> {
        name::validate(name)?;
        let released = {
            let _g = self.lock_for(name);
            let _g = _g.lock().await;
            let others = {
                let mut m = self.mounts();
                m.get_mut(name).map(|r| {
                    r.callers.remove(id);
                    r.callers.len()
                })
            };
            // Other callers left, yet no container runs with the volume: they are callers an
            // engine restart left behind (it sends no Unmount), and the claim goes with this one.
            if others.is_some_and(|n| n > 0) && !self.unused(name).await {
                self.persist(name)?;
                tracing::info!(volume = name, caller = id, "mount reference dropped");
                return Ok(false);
            }
            if others.is_some_and(|n| n > 0) {
                crate::metrics::agent().orphans_released.inc();
                tracing::warn!(
                    volume = name,
                    caller = id,
                    "no running container uses it: dropping the callers an engine restart left behind"
                );
            }
            let release = self.mounts().remove(name);
            match release {
                Some(r) => {
                    self.end_session(name);
                    self.persist(name)?;
                    if let Err(e) = self.control.release_mount(&r.dataset_id, &self.node).await {
                        // Put the reference back so a retry can release it; the claim still
                        // fences others.
                        let mut back = r;
                        back.callers = BTreeSet::from([id.to_string()]);
                        self.mounts().insert(name.to_string(), back);
                        let _ = self.persist(name);
                        return Err(Self::ctl(name)(e));
                    }
                    tracing::info!(volume = name, caller = id, "unmounted");
                    Some(r.dataset_id)
                }
                None => {
                    // No record (the table was lost, or this Unmount repeats one): a claim this
                    // node still holds has no local holder left, so it is released too.
                    match self.control.volume(name).await {
                        Ok(Some(d)) if d.mounted_on.as_deref() == Some(self.node.as_str()) => {
                            self.control
                                .release_mount(&d.dataset_id, &self.node)
                                .await
                                .map_err(Self::ctl(name))?;
                            tracing::warn!(
                                volume = name,
                                caller = id,
                                "released a claim with no local record"
                            );
                        }
                        _ => tracing::info!(
                            volume = name,
                            caller = id,
                            "unmount of a volume not mounted here"
                        ),
                    }
                    None
                }
            }
        };
        Ok(released.is_some())
    }

    /// The mountpoint if mounted here, else empty.
    pub async fn path(&self, name: &str) -> Result<String, AgentError> {
        name::validate(name)?;
        Ok(self
            .mounts()
            .get(name)
            .map(|m| m.path.display().to_string())
            .unwrap_or_default())
    }

    fn info(&self, d: &VolumeRecord) -> VolumeInfo {
        let mountpoint = self
            .mounts()
            .get(&d.name)
            .map(|m| m.path.display().to_string())
            .unwrap_or_default();
        let mut status = BTreeMap::from([
            ("dataset_id".to_string(), d.dataset_id.clone()),
            (
                "primary".to_string(),
                d.primary.clone().unwrap_or_else(|| "(fenced)".to_string()),
            ),
            ("epoch".to_string(), d.epoch.to_string()),
            ("backend".to_string(), d.backend.clone()),
        ]);
        if let Some(s) = d.maximum_size {
            status.insert("maximum_size".to_string(), s.to_string());
        }
        if let Some(p) = &d.profile {
            status.insert("profile".to_string(), p.clone());
        }
        if d.backend == BackendKind::Replicated.as_str() {
            status.insert("replicas".to_string(), d.replicas.to_string());
            let standbys: Vec<String> = d
                .standbys
                .iter()
                .map(|s| match s.lag_ms {
                    Some(l) => format!("{} (lag {l} ms)", s.node),
                    None => format!("{} (no copy yet)", s.node),
                })
                .collect();
            status.insert("standbys".to_string(), standbys.join(", "));
        }
        VolumeInfo {
            name: d.name.clone(),
            mountpoint,
            status,
        }
    }

    /// One volume.
    pub async fn get(&self, name: &str) -> Result<VolumeInfo, AgentError> {
        name::validate(name)?;
        let d = self.find(name).await?;
        Ok(self.info(&d))
    }

    /// Every live volume in the cluster.
    pub async fn list(&self) -> Result<Vec<VolumeInfo>, AgentError> {
        let all = self.control.volumes().await.map_err(Self::ctl("*"))?;
        Ok(all
            .iter()
            .filter(|d| !d.name.is_empty())
            .map(|d| self.info(d))
            .collect())
    }

    /// At start, before the plugin socket opens: the mounts an earlier agent served in this
    /// boot died with it (their containers see `ENOTCONN`), so each is detached and the
    /// containers still using it are stopped, to be started again on a mount this agent
    /// serves. Their records stay until Docker unmounts them. Without the data path the copy
    /// itself was mounted and nothing died.
    pub fn reattach(&self) {
        if self.data_path != DataPathMode::Fuse {
            return;
        }
        let recorded: Vec<(String, PathBuf, bool)> = self
            .mounts()
            .iter()
            .map(|(n, m)| (n.clone(), m.path.clone(), m.backing.is_some()))
            .collect();
        for (name, path, served) in recorded {
            if served && let Err(e) = crate::datapath::detach_stale(&path) {
                tracing::warn!(volume = %name, error = %e, "cannot detach the dead mount");
            }
            self.stop_users(
                &name,
                if served {
                    "its mount died with the previous agent"
                } else {
                    "it mounted the copy directly (an agent without the data path): restarted to go through it"
                },
            );
        }
    }

    /// At start, before serving: mounts recorded by an earlier run that were fenced meanwhile
    /// are dropped, and claims the control service holds for this node that no local record
    /// backs (the agent died between claiming and recording) are released. No Mount is in
    /// flight yet, so no claim can be mid-way.
    pub async fn recover(&self) -> Result<(), AgentError> {
        let mine = self
            .control
            .volumes_of(&self.node)
            .await
            .map_err(Self::ctl("*"))?;
        let recorded: BTreeMap<String, (String, u64)> = self
            .mounts()
            .iter()
            .map(|(n, m)| (n.clone(), (m.dataset_id.clone(), m.epoch)))
            .collect();
        for (name, (ds, epoch)) in &recorded {
            let ok = mine.iter().any(|d| {
                d.dataset_id == *ds
                    && d.epoch == *epoch
                    && d.is_primary(&self.node)
                    && d.mounted_on.as_deref() == Some(self.node.as_str())
            });
            if !ok {
                self.drop_fenced(name, "fenced or released while the agent was down");
            }
        }
        for d in &mine {
            let backed = recorded
                .get(&d.name)
                .is_some_and(|(ds, _)| *ds == d.dataset_id);
            if d.mounted_on.as_deref() == Some(self.node.as_str()) && !backed {
                self.control
                    .release_mount(&d.dataset_id, &self.node)
                    .await
                    .map_err(Self::ctl(&d.name))?;
                tracing::warn!(volume = %d.name, "released a claim no local mount backs");
            }
        }
        Ok(())
    }

    /// One level-triggered pass: drop mounts this node was fenced from; pre-pull node-local
    /// datasets this node is now primary of and whose newest copy is elsewhere (so a chain of
    /// moves never depends on a node that never mounted), each re-read under its lock so a
    /// stale list never resurrects a removed one; every `GC_EVERY` passes, remove copies of
    /// deleted datasets; report what is held.
    pub async fn reconcile(&self) -> Result<(), AgentError> {
        let mine = self
            .control
            .volumes_of(&self.node)
            .await
            .map_err(Self::ctl("*"))?;
        let by_id: BTreeMap<&str, &VolumeRecord> =
            mine.iter().map(|d| (d.dataset_id.as_str(), d)).collect();
        let mounted: Vec<(String, String, u64)> = self
            .mounts()
            .iter()
            .map(|(n, m)| (n.clone(), m.dataset_id.clone(), m.epoch))
            .collect();
        for (name, ds, epoch) in mounted {
            let suspicious = by_id
                .get(ds.as_str())
                .is_none_or(|d| d.epoch > epoch || (d.epoch == epoch && !d.is_primary(&self.node)));
            if !suspicious {
                continue;
            }
            let l = self.lock_for(&name);
            let _g = l.lock().await;
            match self.control.volume(&name).await {
                Ok(fresh) => {
                    let still = fresh.is_some_and(|d| {
                        d.dataset_id == ds && d.epoch == epoch && d.is_primary(&self.node)
                    });
                    if !still {
                        self.drop_fenced(&name, "the control service moved or fenced it");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "reconcile: cannot re-check a mount"),
            }
        }
        for d in mine.iter().filter(|d| {
            let pull = d.source.as_ref().is_some_and(|s| s.node != self.node);
            d.is_primary(&self.node)
                && BackendKind::from_str_or_local(&d.backend).is_node_local()
                && (pull || d.promoted)
                && self.local.local_epoch(&d.dataset_id) != Some(d.epoch)
        }) {
            let l = self.lock_for(&d.name);
            let _g = l.lock().await;
            let fresh = match self.control.volume(&d.name).await {
                Ok(Some(f)) if f.dataset_id == d.dataset_id && f.is_primary(&self.node) => f,
                _ => continue,
            };
            if let Err(e) = self.prepare(&d.name, &fresh).await {
                tracing::warn!(volume = %d.name, error = %e.chain(), "reconcile: pull failed; will retry");
            }
        }
        self.release_orphans().await;
        let pass = self
            .passes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if pass.is_multiple_of(GC_EVERY) {
            self.collect_garbage().await?;
        }
        let held: Vec<(String, String, u64)> = self
            .local
            .held()
            .into_iter()
            .map(|(id, ep)| {
                (
                    id.clone(),
                    self.local.data_dir(&id).display().to_string(),
                    ep,
                )
            })
            .collect();
        self.control
            .report(&self.node, &held)
            .await
            .map_err(Self::ctl("*"))
    }

    /// Removes this node's copies of deleted datasets (a Remove on another node, or one that
    /// raced a pull here). Deletion is final for a dataset ID, so a copy is removed only when
    /// the control service says its dataset is deleted, never because it is unknown.
    async fn collect_garbage(&self) -> Result<(), AgentError> {
        let present = self.local.present();
        if present.is_empty() {
            return Ok(());
        }
        let (all, _) = self.control.datasets().await.map_err(Self::ctl("*"))?;
        let deleted: BTreeMap<&str, &str> = all
            .iter()
            .filter(|d| d.deleted)
            .map(|d| (d.dataset_id.as_str(), d.name().unwrap_or_default()))
            .collect();
        for id in present {
            let Some(name) = deleted.get(id.as_str()) else {
                continue;
            };
            let l = self.lock_for(if name.is_empty() { &id } else { name });
            let _g = l.lock().await;
            match self.local.remove(&id) {
                Ok(()) => tracing::info!(dataset = %id, "removed the copy of a deleted dataset"),
                Err(e) => {
                    tracing::warn!(dataset = %id, error = %e, "cannot remove a deleted dataset's copy")
                }
            }
        }
        Ok(())
    }
}

/// Reconcile passes between two sweeps for copies of deleted datasets (each reads the whole
/// dataset list).
const GC_EVERY: u64 = 10;
