//! The cluster as Berth sees it: Swarm's nodes, services and tasks, plus Berth's datasets.
//!
//! These types are Berth's own, not Docker's wire shapes: `ingest` maps `docker inspect` JSON
//! and the compact TOML form onto them, so the engine never depends on a wire format.
//! Collections are `Vec`s kept sorted by a stable key (see [`Cluster::normalize`]) and maps are
//! `BTreeMap`s, so nothing downstream can depend on input order or hash order.

mod dataset;
pub mod labels;
mod node;
mod service;
mod task;

pub use dataset::{Backend, Dataset};
pub use labels::{FailoverMode, LabelError, Pin, Policy, Stateful, Strategy, TopologySpread};
pub use node::{
    Availability, EnginePlugin, FENCED_LABEL, Node, NodeId, NodeState, Platform, Resources, Role,
};
pub use service::{
    Mode, Mount, MountType, Placement, PortConfig, Protocol, PublishMode, Service, ServiceId,
};
pub use task::{Task, TaskState};

use serde::{Deserialize, Serialize};

/// A snapshot of everything the engine decides from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub services: Vec<Service>,
    #[serde(default)]
    pub tasks: Vec<Task>,
    #[serde(default)]
    pub datasets: Vec<Dataset>,
}

impl Cluster {
    /// Sorts every collection by its stable key so that permuting the input changes nothing.
    pub fn normalize(&mut self) {
        self.nodes.sort_by(|a, b| a.id.cmp(&b.id));
        self.services
            .sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
        self.tasks.sort_by(|a, b| {
            (&a.service_id, a.slot, &a.node_id, &a.id).cmp(&(
                &b.service_id,
                b.slot,
                &b.node_id,
                &b.id,
            ))
        });
        self.datasets.sort_by(|a, b| a.name.cmp(&b.name));
    }

    pub fn node(&self, id: &NodeId) -> Option<&Node> {
        self.nodes.iter().find(|n| &n.id == id)
    }

    pub fn service_by_name(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    pub fn service(&self, id: &ServiceId) -> Option<&Service> {
        self.services.iter().find(|s| &s.id == id)
    }

    pub fn dataset(&self, name: &str) -> Option<&Dataset> {
        self.datasets.iter().find(|d| d.name == name)
    }
}
