//! The node agent's volume operations, independent of the plugin wire format: validate, consult
//! the control service, enforce fencing, bring data up to date, and count mounts per caller.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::backend::local::{self, Layout};
use crate::backend::{BackendError, shared};
use crate::client::{ClientError, ControlClient};
use crate::control::Dataset;
use crate::name::{self, NameError};
use crate::options::{self, BackendKind, META_BACKEND, META_NAME, META_PROFILE, OptionError};
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
        source: BackendError,
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
}

impl AgentError {
    /// The full cause chain, for the `Err` string and the log line.
    pub fn chain(&self) -> String {
        let mut s = self.to_string();
        let mut cur = std::error::Error::source(self);
        while let Some(e) = cur {
            let t = e.to_string();
            if !s.contains(&t) {
                s.push_str(": ");
                s.push_str(&t);
            }
            cur = e.source();
        }
        s
    }
}

/// A volume as Docker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    pub name: String,
    pub mountpoint: String,
    pub status: BTreeMap<String, String>,
}

struct MountRef {
    dataset_id: String,
    path: PathBuf,
    callers: BTreeSet<String>,
}

/// One node's agent.
pub struct Agent {
    node: String,
    local: Arc<Layout>,
    shared_root: PathBuf,
    control: ControlClient,
    pull: TransferOptions,
    mounts: Mutex<BTreeMap<String, MountRef>>,
    locks: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Agent {
    pub fn new(
        node: String,
        local: Arc<Layout>,
        shared_root: PathBuf,
        control: ControlClient,
    ) -> Agent {
        Agent {
            node,
            local,
            shared_root,
            control,
            pull: TransferOptions::default(),
            mounts: Mutex::new(BTreeMap::new()),
            locks: Mutex::new(BTreeMap::new()),
        }
    }

    /// How this node's moves behave (a rate limit, the cluster token).
    pub fn with_transfer_options(mut self, pull: TransferOptions) -> Agent {
        self.pull = pull;
        self
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    fn lock_for(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut l = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        l.entry(name.to_string()).or_default().clone()
    }

    fn mounts(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, MountRef>> {
        self.mounts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ctl(name: &str) -> impl FnOnce(ClientError) -> AgentError + '_ {
        move |source| AgentError::Control {
            name: name.to_string(),
            source,
        }
    }

    async fn find(&self, name: &str) -> Result<Dataset, AgentError> {
        self.control
            .find_by_name(name)
            .await
            .map_err(Self::ctl(name))?
            .ok_or_else(|| AgentError::NotFound(name.to_string()))
    }

    /// Creates the volume cluster-wide with this node as primary; an existing name is success
    /// (Swarm calls Create on every node that runs a task).
    pub async fn create(
        &self,
        name: &str,
        opts: &BTreeMap<String, String>,
    ) -> Result<(), AgentError> {
        name::validate(name)?;
        let o = options::parse(opts)?;
        let _g = self.lock_for(name);
        let _g = _g.lock().await;
        let mut meta = BTreeMap::from([
            (META_NAME.to_string(), name.to_string()),
            (META_BACKEND.to_string(), o.backend.as_str().to_string()),
        ]);
        if let Some(p) = &o.profile {
            meta.insert(META_PROFILE.to_string(), p.clone());
        }
        for attempt in 0..10 {
            let (all, tag) = self.control.datasets().await.map_err(Self::ctl(name))?;
            if all
                .iter()
                .any(|d| !d.deleted && d.metadata.get(META_NAME).map(String::as_str) == Some(name))
            {
                return Ok(());
            }
            match self
                .control
                .create(&self.node, o.size, &meta, Some(&tag))
                .await
            {
                Ok(d) => {
                    tracing::info!(volume = name, dataset = %d.dataset_id, "volume created");
                    return Ok(());
                }
                // 409: someone else created the name first; 412: configuration moved on, retry.
                Err(e) if e.status() == Some(409) => return Ok(()),
                Err(e) if e.status() == Some(412) => {
                    tracing::debug!(
                        volume = name,
                        attempt,
                        "configuration changed; retrying create"
                    )
                }
                Err(e) => return Err(Self::ctl(name)(e)),
            }
        }
        Err(Self::ctl(name)(ClientError::Status {
            status: 412,
            description: "configuration kept changing; create gave up after 10 tries".into(),
        }))
    }

    /// Deletes the volume cluster-wide and this node's copy.
    pub async fn remove(&self, name: &str) -> Result<(), AgentError> {
        name::validate(name)?;
        let _g = self.lock_for(name);
        let _g = _g.lock().await;
        if self.mounts().contains_key(name) {
            return Err(AgentError::Control {
                name: name.to_string(),
                source: ClientError::Status {
                    status: 409,
                    description: "volume is mounted on this node".into(),
                },
            });
        }
        let d = self.find(name).await?;
        self.control
            .delete(&d.dataset_id)
            .await
            .map_err(Self::ctl(name))?;
        if BackendKind::from_metadata(&d.metadata) == BackendKind::Local {
            self.local
                .remove(&d.dataset_id)
                .map_err(|source| AgentError::Backend {
                    name: name.to_string(),
                    source,
                })?;
        }
        tracing::info!(volume = name, dataset = %d.dataset_id, "volume removed");
        Ok(())
    }

    /// Brings this node's copy up to `d`'s epoch and returns its path.
    async fn prepare(&self, name: &str, d: &Dataset) -> Result<PathBuf, AgentError> {
        let be = |source| AgentError::Backend {
            name: name.to_string(),
            source,
        };
        match BackendKind::from_metadata(&d.metadata) {
            BackendKind::Shared => shared::prepare(&self.shared_root, &d.dataset_id).map_err(be),
            BackendKind::Local => {
                let source = match d.previous_primary.as_deref() {
                    Some(prev)
                        if prev != self.node
                            && self.local.local_epoch(&d.dataset_id) != Some(d.epoch) =>
                    {
                        self.control
                            .nodes()
                            .await
                            .map_err(Self::ctl(name))?
                            .into_iter()
                            .find(|n| n.uuid == prev)
                            .map(|n| n.transfer)
                    }
                    _ => None,
                };
                local::prepare(&self.local, d, &self.node, source, &self.pull)
                    .await
                    .map_err(be)
            }
        }
    }

    fn fenced(&self, name: &str, d: &Dataset) -> AgentError {
        AgentError::Fenced {
            name: name.to_string(),
            node: self.node.clone(),
            primary: d.primary.clone(),
            epoch: d.epoch,
        }
    }

    /// Mounts for caller `id`: only on the primary at the current epoch, claimed at the control
    /// service so no second writable mount can exist anywhere.
    pub async fn mount(&self, name: &str, id: &str) -> Result<PathBuf, AgentError> {
        name::validate(name)?;
        let _g = self.lock_for(name);
        let _g = _g.lock().await;
        if let Some(m) = self.mounts().get_mut(name) {
            m.callers.insert(id.to_string());
            return Ok(m.path.clone());
        }
        let d = self.find(name).await?;
        if d.primary != self.node {
            let e = self.fenced(name, &d);
            tracing::warn!(volume = name, error = %e, "mount refused");
            return Err(e);
        }
        let path = self.prepare(name, &d).await?;
        match self
            .control
            .claim_mount(&d.dataset_id, &self.node, d.epoch)
            .await
        {
            Ok(_) => {}
            Err(e) if e.status() == Some(409) => {
                tracing::warn!(volume = name, error = %e, "mount refused by control");
                return Err(Self::ctl(name)(e));
            }
            Err(e) => return Err(Self::ctl(name)(e)),
        }
        tracing::info!(volume = name, dataset = %d.dataset_id, epoch = d.epoch, caller = id, "mounted");
        self.mounts().insert(
            name.to_string(),
            MountRef {
                dataset_id: d.dataset_id,
                path: path.clone(),
                callers: BTreeSet::from([id.to_string()]),
            },
        );
        Ok(path)
    }

    /// Drops caller `id`'s reference; the last one releases the mount claim.
    pub async fn unmount(&self, name: &str, id: &str) -> Result<(), AgentError> {
        name::validate(name)?;
        let _g = self.lock_for(name);
        let _g = _g.lock().await;
        let release = {
            let mut m = self.mounts();
            let Some(r) = m.get_mut(name) else {
                tracing::info!(
                    volume = name,
                    caller = id,
                    "unmount of a volume not mounted here"
                );
                return Ok(());
            };
            r.callers.remove(id);
            if r.callers.is_empty() {
                m.remove(name).map(|r| r.dataset_id)
            } else {
                None
            }
        };
        if let Some(ds) = release {
            if let Err(e) = self.control.release_mount(&ds, &self.node).await {
                // Put the reference back so a retry can release it; the claim still fences others.
                self.mounts().insert(
                    name.to_string(),
                    MountRef {
                        path: self.local.data_dir(&ds),
                        dataset_id: ds,
                        callers: BTreeSet::from([id.to_string()]),
                    },
                );
                return Err(Self::ctl(name)(e));
            }
            tracing::info!(volume = name, caller = id, "unmounted");
        }
        Ok(())
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

    fn info(&self, d: &Dataset) -> Option<VolumeInfo> {
        let name = d.metadata.get(META_NAME)?.clone();
        let mountpoint = self
            .mounts()
            .get(&name)
            .map(|m| m.path.display().to_string())
            .unwrap_or_default();
        let mut status = BTreeMap::from([
            ("dataset_id".to_string(), d.dataset_id.clone()),
            ("primary".to_string(), d.primary.clone()),
            ("epoch".to_string(), d.epoch.to_string()),
            (
                "backend".to_string(),
                BackendKind::from_metadata(&d.metadata).as_str().to_string(),
            ),
        ]);
        if let Some(s) = d.maximum_size {
            status.insert("maximum_size".to_string(), s.to_string());
        }
        if let Some(p) = d.metadata.get(META_PROFILE) {
            status.insert("profile".to_string(), p.clone());
        }
        Some(VolumeInfo {
            name,
            mountpoint,
            status,
        })
    }

    /// One volume.
    pub async fn get(&self, name: &str) -> Result<VolumeInfo, AgentError> {
        name::validate(name)?;
        let d = self.find(name).await?;
        self.info(&d)
            .ok_or_else(|| AgentError::NotFound(name.to_string()))
    }

    /// Every live volume in the cluster.
    pub async fn list(&self) -> Result<Vec<VolumeInfo>, AgentError> {
        let (all, _) = self.control.datasets().await.map_err(Self::ctl("*"))?;
        Ok(all
            .iter()
            .filter(|d| !d.deleted)
            .filter_map(|d| self.info(d))
            .collect())
    }

    /// One level-triggered pass: pre-pull local datasets this node is now primary of (so a
    /// chain of moves never depends on a node that never mounted), and report what is held.
    pub async fn reconcile(&self) -> Result<(), AgentError> {
        let (all, _) = self.control.datasets().await.map_err(Self::ctl("*"))?;
        for d in all.iter().filter(|d| !d.deleted && d.primary == self.node) {
            if BackendKind::from_metadata(&d.metadata) != BackendKind::Local
                || self.local.local_epoch(&d.dataset_id) == Some(d.epoch)
            {
                continue;
            }
            let name = d.metadata.get(META_NAME).cloned().unwrap_or_default();
            let l = self.lock_for(&name);
            let _g = l.lock().await;
            if let Err(e) = self.prepare(&name, d).await {
                tracing::warn!(volume = %name, error = %e.chain(), "reconcile: pull failed; will retry");
            }
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
}
