//! The scheduler's working view of the nodes: each node with the counters placement reads
//! (tasks per service, reserved resources, bound host ports), kept in step as tasks are added.
//! Nodes sit in a `Vec` sorted by node ID, so a node's index is also its tie-break rank.

use std::collections::BTreeMap;

use crate::model::{Node, NodeId, Protocol, Resources};

#[derive(Clone, Debug)]
pub struct NodeInfo<'a> {
    pub idx: u32,
    pub node: &'a Node,
    /// Active tasks of any service (Swarm's `ActiveTasksCount`).
    pub total_tasks: u32,
    tasks_by_service: BTreeMap<u32, u32>,
    pub reserved: Resources,
    pub host_ports: Vec<(Protocol, u16)>,
}

impl<'a> NodeInfo<'a> {
    pub fn new(idx: u32, node: &'a Node) -> Self {
        NodeInfo {
            idx,
            node,
            total_tasks: 0,
            tasks_by_service: BTreeMap::new(),
            reserved: Resources::default(),
            host_ports: Vec::new(),
        }
    }

    pub fn service_tasks(&self, service_idx: u32) -> u32 {
        self.tasks_by_service
            .get(&service_idx)
            .copied()
            .unwrap_or(0)
    }

    pub fn available(&self) -> Resources {
        self.node.resources - self.reserved
    }

    /// Counts a task of `service_idx` on this node (resources and ports are the reserve
    /// plugins' business).
    pub fn add_task(&mut self, service_idx: u32) {
        self.total_tasks += 1;
        *self.tasks_by_service.entry(service_idx).or_default() += 1;
    }

    pub fn remove_task(&mut self, service_idx: u32) {
        self.total_tasks = self.total_tasks.saturating_sub(1);
        if let Some(n) = self.tasks_by_service.get_mut(&service_idx) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.tasks_by_service.remove(&service_idx);
            }
        }
    }
}

pub struct Snapshot<'a> {
    pub nodes: Vec<NodeInfo<'a>>,
    by_id: BTreeMap<&'a NodeId, u32>,
}

impl<'a> Snapshot<'a> {
    /// `nodes` must be sorted by ID (see `Cluster::normalize`).
    pub fn new(nodes: &'a [Node]) -> Self {
        debug_assert!(nodes.windows(2).all(|w| w[0].id < w[1].id));
        let infos = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| NodeInfo::new(i as u32, n))
            .collect();
        let by_id = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (&n.id, i as u32))
            .collect();
        Snapshot {
            nodes: infos,
            by_id,
        }
    }

    pub fn index_of(&self, id: &NodeId) -> Option<u32> {
        self.by_id.get(id).copied()
    }
}
