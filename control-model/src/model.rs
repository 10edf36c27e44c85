//! The control state and the rules that change it. Pure: no IO, no clock (times are passed in),
//! so every rule is tested without a server.
//!
//! Every rule checks everything before it changes anything: a refused request leaves the state
//! exactly as it was, which is what lets the service apply a batch of requests to one copy and
//! persist them together (`control::commit`).
//!
//! The failover operations of the executor contract (fence, assign) and the standby positions
//! of `replicated` datasets live in `failover`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::fencing::{self, Fence, FenceError};
use crate::grants::Closure;
use crate::options::{self, BackendKind, META_NAME};

mod change;
mod failover;
mod leaders;

pub use change::{Change, Records, Tracked};

pub use leaders::{LeaderJournal, LeaderLock};

pub use failover::{AssignMode, Assignment, Standby};

/// One dataset's configuration, Flocker's fields plus Berth's epoch and mount holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dataset {
    pub dataset_id: String,
    /// The node last made primary (Flocker's field). While `fenced`, it is *not* the primary:
    /// nobody is until an assignment at the current epoch.
    pub primary: String,
    pub maximum_size: Option<u64>,
    pub metadata: BTreeMap<String, String>,
    pub deleted: bool,
    /// Incremented by every primary change and every fence; mounts must present it.
    pub epoch: u64,
    /// Where a `local` dataset's newest bytes are pulled from: the primary before the last move
    /// if that node ever held a complete copy, else whichever node this already named. A node
    /// that was made primary but never finished its copy (it died mid-pull, say) cannot have
    /// taken a write, so moving on from it must not make its partial copy the source.
    pub previous_primary: Option<String>,
    /// The epoch at which `previous_primary` held the newest copy; the puller checks the
    /// source's own epoch against it. `None` in state written before it was recorded.
    #[serde(default)]
    pub source_epoch: Option<u64>,
    /// The latest epoch at which a mount was granted (proof that the primary's copy was whole).
    #[serde(default)]
    pub last_mount_epoch: Option<u64>,
    /// The node holding the dataset's only writable mount, if any.
    pub mounted_on: Option<String>,
    /// Incremented by every change to this dataset alone: unrelated datasets never conflict.
    #[serde(default)]
    pub version: u64,
    /// No node is primary at the current epoch (a `fence` happened and no `assign` yet).
    #[serde(default)]
    pub fenced: bool,
    /// The node the last fence was against.
    #[serde(default)]
    pub fenced_from: Option<String>,
    /// When the last fence happened (control clock, ms): no write was acknowledged after it.
    #[serde(default)]
    pub fenced_at_ms: Option<u64>,
    /// The assignment that ended the last fence, replayed as is.
    #[serde(default)]
    pub assignment: Option<Assignment>,
    /// The epoch at which the primary was given a fresh empty copy (`recreate`).
    #[serde(default)]
    pub recreated_at: Option<u64>,
    /// The epoch at which the primary's standby copy became the data (`promote`).
    #[serde(default)]
    pub promoted_at: Option<u64>,
    /// `replicated`: the standby copies by node.
    #[serde(default)]
    pub standbys: BTreeMap<String, Standby>,
    /// When the current mount claim was granted (control clock, ms).
    #[serde(default)]
    pub mounted_since_ms: Option<u64>,
    /// When the last mount claim ended (released, or dropped by a fence).
    #[serde(default)]
    pub released_at_ms: Option<u64>,
}

impl Dataset {
    /// The Docker volume name.
    pub fn name(&self) -> Option<&str> {
        self.metadata.get(META_NAME).map(String::as_str)
    }

    pub fn backend(&self) -> BackendKind {
        BackendKind::from_metadata(&self.metadata)
    }

    /// The node that may mount at the current epoch; `None` while fenced.
    pub fn primary_now(&self) -> Option<&str> {
        (!self.fenced).then_some(self.primary.as_str())
    }

    /// How many copies the dataset keeps (primary plus standbys).
    pub fn replicas(&self) -> u32 {
        options::replicas_of(&self.metadata)
    }

    fn fence_view(&self) -> Fence<'_> {
        Fence {
            primary: self.primary_now().unwrap_or("nobody (fenced)"),
            epoch: self.epoch,
            mounted_on: self.mounted_on.as_deref(),
        }
    }

    /// Whether the current primary's copy is known to be whole at the current epoch.
    fn primary_copy_whole(&self, reported: Option<&Reported>) -> bool {
        !self.fenced
            && (self.last_mount_epoch == Some(self.epoch)
                || reported.is_some_and(|r| r.node_uuid == self.primary && r.epoch == self.epoch))
    }
}

/// A registered node agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub uuid: String,
    pub host: String,
    /// `host:port` of the agent's transfer endpoint.
    pub transfer: String,
    pub dead: bool,
}

/// A Flocker lease: the dataset is pinned to a node until it expires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    pub dataset_id: String,
    pub node_uuid: String,
    /// Unix seconds at which the lease lapses; `None` never.
    pub expires_at: Option<f64>,
}

/// What an agent reports holding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reported {
    pub node_uuid: String,
    pub path: String,
    pub epoch: u64,
}

/// The whole persisted document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Flocker's configuration tag: any change anywhere bumps it. Berth's own clients never
    /// make a change conditional on it (each dataset has its own `version`).
    pub generation: u64,
    pub datasets: Tracked<Dataset>,
    pub nodes: Tracked<Node>,
    pub leases: Tracked<Lease>,
    pub reported: Tracked<Reported>,
    /// Leader locks by name (`leaders`); absent from documents written before they existed.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub leaders: Tracked<LeaderLock>,
    /// Each leader lock's journal, by lock name (`leaders`): kept across releases, so the next
    /// holder resumes it. Absent from documents written before it existed. Tracked like the
    /// other records, so a journal write persists (and replicates) that one journal.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub leader_journals: Tracked<LeaderJournal>,
    /// The latest control-clock instant a serving instance recorded (`control::clock`); 0 in
    /// documents written before control time existed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub clock_ms: u64,
    /// Nodes the leader has stopped granting leases to, by node (`grants`, "Fencing", rule 8);
    /// absent from documents written before they existed (every node open).
    #[serde(default, skip_serializing_if = "is_empty")]
    pub closed: Tracked<Closure>,
    /// Live dataset IDs by volume name; derived from `datasets` (`reindex`), never stored.
    #[serde(skip)]
    names: BTreeMap<String, String>,
    /// The counters as of the last `take_change` (`change`).
    #[serde(skip)]
    taken: change::Taken,
}

/// A refused request, each mapped to Flocker's status code by `api`.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ControlError {
    #[error("{0}")]
    Invalid(String),
    #[error("dataset {0} not found")]
    NotFound(String),
    #[error("dataset {0} has been deleted")]
    Deleted(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Fence(#[from] FenceError),
    #[error("configuration changed: tag is {current}, request expected {expected}")]
    TagMismatch { current: String, expected: String },
    /// A fence or assignment that would take a mounted dataset from a node whose lease still
    /// runs: that node may still be writing. The same request succeeds once the lease has run
    /// out (the node stops its containers before then) or once the node is declared dead.
    #[error(
        "volume {volume} is mounted on {node}, whose lease runs for {remaining_ms} more ms: it may \
         still be writing; retry after that (its data path admits no write after it) or declare {node} dead"
    )]
    Leased {
        volume: String,
        node: String,
        epoch: u64,
        remaining_ms: u64,
    },
    /// An executor command whose precondition no longer holds: it must re-read and re-plan.
    #[error("volume {volume} is at epoch {epoch}: {reason}")]
    Epoch {
        volume: String,
        epoch: u64,
        reason: String,
    },
}

/// A create request after schema validation.
#[derive(Debug, Clone, Default)]
pub struct NewDataset {
    pub primary: String,
    pub dataset_id: Option<String>,
    pub maximum_size: Option<u64>,
    pub metadata: BTreeMap<String, String>,
}

fn is_uuid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok() && s.len() == 36 && s == s.to_ascii_lowercase()
}

fn is_empty<V>(m: &Tracked<V>) -> bool {
    m.is_empty()
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl State {
    /// Records that control time has reached `now_ms` (`control::clock`): a successor
    /// continues from it. A change like any other, so it is persisted (and replicated).
    pub fn tick(&mut self, now_ms: u64) {
        if now_ms > self.clock_ms {
            self.clock_ms = now_ms;
            self.generation += 1;
        }
    }

    /// Records that the leader has stopped granting leases to these nodes (`grants`): a
    /// successor bounds their leases by the closures instead of by a whole lease.
    pub fn close_leases(&mut self, closures: impl IntoIterator<Item = (String, Closure)>) {
        for (node, c) in closures {
            self.closed.insert(node, c);
        }
        self.generation += 1;
    }

    /// Records that the leader may grant these nodes leases again (`grants`).
    pub fn reopen_leases<'a>(&mut self, nodes: impl IntoIterator<Item = &'a String>) {
        for node in nodes {
            self.closed.remove(node);
        }
        self.generation += 1;
    }

    /// Rebuilds what is derived rather than stored; call after loading a document.
    pub fn reindex(&mut self) {
        self.names = self
            .datasets
            .values()
            .filter(|d| !d.deleted)
            .filter_map(|d| Some((d.name()?.to_string(), d.dataset_id.clone())))
            .collect();
    }

    /// The configuration tag clients compare against (`X-Configuration-Tag`).
    pub fn tag(&self) -> String {
        self.generation.to_string()
    }

    fn check_tag(&self, expected: Option<&str>) -> Result<(), ControlError> {
        match expected {
            Some(e) if e != self.tag() => Err(ControlError::TagMismatch {
                current: self.tag(),
                expected: e.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// Records that dataset `id` changed.
    fn touch(&mut self, id: &str) {
        self.generation += 1;
        if let Some(d) = self.datasets.get_mut(id) {
            d.version += 1;
        }
    }

    fn live(&self, id: &str) -> Result<&Dataset, ControlError> {
        let d = self
            .datasets
            .get(id)
            .ok_or_else(|| ControlError::NotFound(id.to_string()))?;
        if d.deleted {
            return Err(ControlError::Deleted(id.to_string()));
        }
        Ok(d)
    }

    fn live_mut(&mut self, id: &str) -> Result<&mut Dataset, ControlError> {
        self.datasets
            .get_mut(id)
            .filter(|d| !d.deleted)
            .ok_or_else(|| ControlError::NotFound(id.to_string()))
    }

    /// The live dataset carrying Docker volume `name`.
    pub fn by_name(&self, name: &str) -> Option<&Dataset> {
        self.names.get(name).and_then(|id| self.datasets.get(id))
    }

    /// The live dataset's ID for volume `name`, or `NotFound`.
    pub fn id_of(&self, name: &str) -> Result<String, ControlError> {
        self.names
            .get(name)
            .cloned()
            .ok_or_else(|| ControlError::NotFound(format!("named {name:?}")))
    }

    fn lease_holder(&self, id: &str, now: f64) -> Option<&str> {
        self.leases
            .get(id)
            .filter(|l| l.expires_at.is_none_or(|t| t > now))
            .map(|l| l.node_uuid.as_str())
    }

    /// Creates a dataset. Names (metadata `name`) are unique among live datasets, so
    /// concurrent Docker Creates of one name yield exactly one dataset.
    pub fn create(
        &mut self,
        req: NewDataset,
        expected_tag: Option<&str>,
    ) -> Result<Dataset, ControlError> {
        self.check_tag(expected_tag)?;
        if req.primary.is_empty() {
            return Err(ControlError::Invalid("primary is required".into()));
        }
        if let Some(sz) = req.maximum_size {
            crate::size::check(sz, &sz.to_string()).map_err(|e| {
                ControlError::Invalid(format!(
                    "maximum_size: {e} (at least 67108864, at most {}, a multiple of 1024)",
                    crate::size::MAX_SIZE
                ))
            })?;
        }
        if req.metadata.len() > 16
            || req
                .metadata
                .iter()
                .any(|(k, v)| k.len() > 256 || v.len() > 256)
        {
            return Err(ControlError::Invalid(
                "metadata holds at most 16 properties of at most 256 characters".into(),
            ));
        }
        let id = match req.dataset_id {
            Some(id) if !is_uuid(&id) => {
                return Err(ControlError::Invalid(format!(
                    "dataset_id {id:?} is not a lowercase UUID"
                )));
            }
            Some(id) => id,
            None => uuid::Uuid::new_v4().to_string(),
        };
        if self.datasets.contains_key(&id) {
            return Err(ControlError::Conflict(format!(
                "dataset {id} already exists"
            )));
        }
        let name = req.metadata.get(META_NAME).cloned();
        // The plugin's rules: the name becomes a directory key and Docker's volume name, so a
        // dataset the API accepted is one every agent can list and mount.
        if let Some(name) = &name {
            crate::name::validate(name)
                .map_err(|e| ControlError::Invalid(format!("metadata name: {e}")))?;
        }
        if let Some(name) = &name
            && let Some(other) = self.by_name(name)
        {
            return Err(ControlError::Conflict(format!(
                "a dataset named {name:?} already exists: {}",
                other.dataset_id
            )));
        }
        let d = Dataset {
            dataset_id: id.clone(),
            primary: req.primary,
            maximum_size: req.maximum_size,
            metadata: req.metadata,
            deleted: false,
            epoch: 1,
            previous_primary: None,
            source_epoch: None,
            last_mount_epoch: None,
            mounted_on: None,
            version: 0,
            fenced: false,
            fenced_from: None,
            fenced_at_ms: None,
            assignment: None,
            recreated_at: None,
            promoted_at: None,
            standbys: BTreeMap::new(),
            mounted_since_ms: None,
            released_at_ms: None,
        };
        self.datasets.insert(id.clone(), d);
        if let Some(name) = name {
            self.names.insert(name, id.clone());
        }
        self.fill_standbys(&id);
        self.touch(&id);
        Ok(self.datasets[&id].clone())
    }

    /// Moves a dataset to `primary`, incrementing its epoch. A mounted dataset moves only as a
    /// forced failover from a node declared dead, which clears (fences) that mount.
    pub fn move_to(
        &mut self,
        id: &str,
        primary: &str,
        force: bool,
        expected_tag: Option<&str>,
        now: f64,
    ) -> Result<Dataset, ControlError> {
        self.check_tag(expected_tag)?;
        let d = self.live(id)?;
        if d.primary_now() == Some(primary) {
            return Ok(d.clone());
        }
        let holder_dead = d
            .mounted_on
            .as_ref()
            .and_then(|h| self.nodes.get(h))
            .is_some_and(|n| n.dead);
        fencing::check_move(
            id,
            &d.fence_view(),
            self.lease_holder(id, now),
            holder_dead,
            force,
        )?;
        let whole = d.primary_copy_whole(self.reported.get(id));
        let now_ms = (now * 1000.0) as u64;
        let d = self.live_mut(id)?;
        let old = std::mem::replace(&mut d.primary, primary.to_string());
        if whole {
            d.previous_primary = Some(old.clone());
            d.source_epoch = Some(d.epoch);
        }
        d.epoch += 1;
        d.fenced = false;
        if d.mounted_on.take().is_some() {
            d.mounted_since_ms = None;
            d.released_at_ms = Some(now_ms);
        }
        failover::rotate_standbys(d, &old);
        self.fill_standbys(id);
        self.touch(id);
        Ok(self.datasets[id].clone())
    }

    /// Marks a dataset deleted (idempotent). A mounted dataset is not deleted.
    pub fn delete(
        &mut self,
        id: &str,
        expected_tag: Option<&str>,
    ) -> Result<Dataset, ControlError> {
        self.check_tag(expected_tag)?;
        let d = self
            .datasets
            .get(id)
            .ok_or_else(|| ControlError::NotFound(id.to_string()))?;
        if let Some(h) = &d.mounted_on {
            return Err(ControlError::Conflict(format!(
                "dataset {id} is mounted on {h}; unmount it first"
            )));
        }
        if !d.deleted {
            let name = d.name().map(str::to_string);
            if let Some(d) = self.datasets.get_mut(id) {
                d.deleted = true;
            }
            if let Some(n) = name
                && self.names.get(&n).map(String::as_str) == Some(id)
            {
                self.names.remove(&n);
            }
            self.touch(id);
        }
        if self.reported.remove(id).is_some() {
            self.generation += 1;
        }
        self.datasets
            .get(id)
            .cloned()
            .ok_or_else(|| ControlError::NotFound(id.into()))
    }

    /// Records that `node` holds the dataset's writable mount, if fencing allows it. Claiming a
    /// mount this node already holds at this epoch changes nothing (an agent re-checks its claim
    /// at every Mount, refcount increments included).
    pub fn claim_mount(
        &mut self,
        id: &str,
        node: &str,
        epoch: u64,
        now_ms: u64,
    ) -> Result<Dataset, ControlError> {
        self.check_claim(id, node, epoch)?;
        let d = self.live(id)?;
        if d.mounted_on.as_deref() == Some(node) && d.last_mount_epoch == Some(epoch) {
            return Ok(d.clone());
        }
        let d = self.live_mut(id)?;
        if d.mounted_on.is_none() {
            d.mounted_since_ms = Some(now_ms);
        }
        d.mounted_on = Some(node.to_string());
        d.last_mount_epoch = Some(d.epoch);
        self.touch(id);
        Ok(self.datasets[id].clone())
    }

    /// Whether [`State::claim_mount`] would grant `node` the mount at `epoch`, changing nothing
    /// (what an agent's Mount would be answered).
    pub fn check_claim(&self, id: &str, node: &str, epoch: u64) -> Result<(), ControlError> {
        let d = self.live(id)?;
        fencing::check_mount(id, &d.fence_view(), node, epoch)?;
        Ok(())
    }

    /// Releases `node`'s mount (idempotent; a release from a fenced node changes nothing).
    pub fn release_mount(&mut self, id: &str, node: &str, now_ms: u64) -> Result<(), ControlError> {
        if let Some(d) = self.datasets.get_mut(id)
            && d.mounted_on.as_deref() == Some(node)
        {
            d.mounted_on = None;
            d.mounted_since_ms = None;
            d.released_at_ms = Some(now_ms);
            self.touch(id);
        }
        Ok(())
    }

    /// Registers (or re-registers, reviving) a node agent; `replicated` datasets short of
    /// standbys take it as one.
    pub fn register_node(&mut self, node: Node) {
        let known = self
            .nodes
            .get(&node.uuid)
            .is_some_and(|n| !n.dead && n.host == node.host && n.transfer == node.transfer);
        if known {
            return;
        }
        self.nodes.insert(
            node.uuid.clone(),
            Node {
                dead: false,
                ..node
            },
        );
        self.generation += 1;
        let short: Vec<String> = self
            .datasets
            .values()
            .filter(|d| !d.deleted && (d.standbys.len() as u32) + 1 < d.replicas())
            .map(|d| d.dataset_id.clone())
            .collect();
        for id in short {
            if self.fill_standbys(&id) {
                self.touch(&id);
            }
        }
    }

    /// Declares a node dead so its mounts may be failed over.
    pub fn declare_dead(&mut self, uuid: &str) -> Result<(), ControlError> {
        let n = self
            .nodes
            .get_mut(uuid)
            .ok_or_else(|| ControlError::Invalid(format!("unknown node {uuid}")))?;
        if !n.dead {
            n.dead = true;
            self.generation += 1;
        }
        Ok(())
    }

    /// Records what `node` holds, by dataset ID: only copies current at their dataset's epoch
    /// on its primary count.
    pub fn report_held(&mut self, node: &str, held: Vec<(String, Reported)>) {
        // Only the records that differ are written: no copy of the whole map to compare with.
        let now: BTreeMap<String, Reported> = held
            .into_iter()
            .filter(|(id, r)| {
                r.node_uuid == node
                    && self.datasets.get(id).is_some_and(|d| {
                        !d.deleted && d.primary_now() == Some(node) && d.epoch == r.epoch
                    })
            })
            .collect();
        let gone: Vec<String> = self
            .reported
            .iter()
            .filter(|(id, r)| r.node_uuid == node && !now.contains_key(*id))
            .map(|(id, _)| id.clone())
            .collect();
        let mut changed = !gone.is_empty();
        for id in gone {
            self.reported.remove(&id);
        }
        for (id, r) in now {
            if self.reported.get(&id) != Some(&r) {
                self.reported.insert(id, r);
                changed = true;
            }
        }
        if changed {
            self.generation += 1;
        }
    }

    /// Acquires or renews a lease; refused if another node holds it.
    pub fn lease(&mut self, l: Lease, now: f64) -> Result<Lease, ControlError> {
        self.live(&l.dataset_id)?;
        if let Some(h) = self.lease_holder(&l.dataset_id, now)
            && h != l.node_uuid
        {
            return Err(ControlError::Conflict(format!(
                "dataset {} is leased to {h}",
                l.dataset_id
            )));
        }
        if self.leases.get(&l.dataset_id) != Some(&l) {
            self.leases.insert(l.dataset_id.clone(), l.clone());
            self.generation += 1;
        }
        Ok(l)
    }

    /// Releases a lease.
    pub fn release_lease(&mut self, id: &str) -> Result<Lease, ControlError> {
        let l = self
            .leases
            .remove(id)
            .ok_or_else(|| ControlError::NotFound(format!("lease on {id}")))?;
        self.generation += 1;
        Ok(l)
    }
}

#[cfg(test)]
mod tests;
