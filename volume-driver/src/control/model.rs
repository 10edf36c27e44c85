//! The control state and the rules that change it. Pure: no IO, no clock (times are passed in),
//! so every rule is tested without a server.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::fencing::{self, Fence, FenceError};
use crate::options::META_NAME;

/// One dataset's configuration, Flocker's fields plus Berth's epoch and mount holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dataset {
    pub dataset_id: String,
    pub primary: String,
    pub maximum_size: Option<u64>,
    pub metadata: BTreeMap<String, String>,
    pub deleted: bool,
    /// Incremented by every primary change; mounts must present it.
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
    pub generation: u64,
    pub datasets: BTreeMap<String, Dataset>,
    pub nodes: BTreeMap<String, Node>,
    pub leases: BTreeMap<String, Lease>,
    pub reported: BTreeMap<String, Reported>,
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

impl State {
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
        if let Some(sz) = req.maximum_size
            && (sz < crate::size::MIN_SIZE || !sz.is_multiple_of(1024))
        {
            return Err(ControlError::Invalid(format!(
                "maximum_size {sz} must be at least 67108864 and a multiple of 1024"
            )));
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
        if let Some(name) = req.metadata.get(META_NAME)
            && let Some(other) = self
                .datasets
                .values()
                .find(|d| !d.deleted && d.metadata.get(META_NAME) == Some(name))
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
        };
        self.datasets.insert(id, d.clone());
        self.generation += 1;
        Ok(d)
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
        if d.primary == primary {
            return Ok(d.clone());
        }
        let holder_dead = d
            .mounted_on
            .as_ref()
            .and_then(|h| self.nodes.get(h))
            .is_some_and(|n| n.dead);
        let fence = Fence {
            primary: &d.primary,
            epoch: d.epoch,
            mounted_on: d.mounted_on.as_deref(),
        };
        fencing::check_move(id, &fence, self.lease_holder(id, now), holder_dead, force)?;
        let whole = d.last_mount_epoch == Some(d.epoch)
            || self
                .reported
                .get(id)
                .is_some_and(|r| r.node_uuid == d.primary && r.epoch == d.epoch);
        let d = self
            .datasets
            .get_mut(id)
            .ok_or_else(|| ControlError::NotFound(id.into()))?;
        let old = std::mem::replace(&mut d.primary, primary.to_string());
        if whole {
            d.previous_primary = Some(old);
            d.source_epoch = Some(d.epoch);
        }
        d.epoch += 1;
        d.mounted_on = None;
        let out = d.clone();
        self.generation += 1;
        Ok(out)
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
            .get_mut(id)
            .ok_or_else(|| ControlError::NotFound(id.to_string()))?;
        if let Some(h) = &d.mounted_on {
            return Err(ControlError::Conflict(format!(
                "dataset {id} is mounted on {h}; unmount it first"
            )));
        }
        if !d.deleted {
            d.deleted = true;
            self.generation += 1;
        }
        self.reported.remove(id);
        self.datasets
            .get(id)
            .cloned()
            .ok_or_else(|| ControlError::NotFound(id.into()))
    }

    /// Records that `node` holds the dataset's writable mount, if fencing allows it.
    pub fn claim_mount(
        &mut self,
        id: &str,
        node: &str,
        epoch: u64,
    ) -> Result<Dataset, ControlError> {
        let d = self.live(id)?;
        let fence = Fence {
            primary: &d.primary,
            epoch: d.epoch,
            mounted_on: d.mounted_on.as_deref(),
        };
        fencing::check_mount(id, &fence, node, epoch)?;
        let d = self
            .datasets
            .get_mut(id)
            .ok_or_else(|| ControlError::NotFound(id.into()))?;
        d.mounted_on = Some(node.to_string());
        d.last_mount_epoch = Some(d.epoch);
        self.generation += 1;
        Ok(d.clone())
    }

    /// Releases `node`'s mount (idempotent; a release from a fenced node changes nothing).
    pub fn release_mount(&mut self, id: &str, node: &str) -> Result<(), ControlError> {
        if let Some(d) = self.datasets.get_mut(id)
            && d.mounted_on.as_deref() == Some(node)
        {
            d.mounted_on = None;
            self.generation += 1;
        }
        Ok(())
    }

    /// Registers (or re-registers, reviving) a node agent.
    pub fn register_node(&mut self, node: Node) {
        self.nodes.insert(
            node.uuid.clone(),
            Node {
                dead: false,
                ..node
            },
        );
    }

    /// Declares a node dead so its mounts may be failed over.
    pub fn declare_dead(&mut self, uuid: &str) -> Result<(), ControlError> {
        let n = self
            .nodes
            .get_mut(uuid)
            .ok_or_else(|| ControlError::Invalid(format!("unknown node {uuid}")))?;
        n.dead = true;
        Ok(())
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
        self.leases.insert(l.dataset_id.clone(), l.clone());
        Ok(l)
    }

    /// Releases a lease.
    pub fn release_lease(&mut self, id: &str) -> Result<Lease, ControlError> {
        self.leases
            .remove(id)
            .ok_or_else(|| ControlError::NotFound(format!("lease on {id}")))
    }
}

#[cfg(test)]
mod tests;
