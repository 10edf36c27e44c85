//! The scheduler's working view of the nodes: each node with the counters placement reads
//! (tasks per service, reserved resources, bound host ports), kept in step as tasks are added.
//! Nodes sit in a `Vec` in ID order, so a node's index is also its tie-break rank.
//!
//! The counters ([`Load`]) can be taken out of a snapshot and put back into a new one over
//! the same nodes, so the incremental planner keeps them between calls while the nodes
//! themselves stay in the cluster it owns.

use crate::model::{Node, Protocol, Resources};

/// A node's counters, without the node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Load {
    pub total_tasks: u32,
    /// (service, tasks) sorted by service, no zero counts: a node runs few services.
    tasks_by_service: Vec<(u32, u32)>,
    pub reserved: Resources,
    pub host_ports: Vec<(Protocol, u16)>,
}

#[derive(Clone, Debug)]
pub struct NodeInfo<'a> {
    pub idx: u32,
    pub node: &'a Node,
    /// Active tasks of any service (Swarm's `ActiveTasksCount`).
    pub total_tasks: u32,
    tasks_by_service: Vec<(u32, u32)>,
    pub reserved: Resources,
    pub host_ports: Vec<(Protocol, u16)>,
}

impl<'a> NodeInfo<'a> {
    pub fn new(idx: u32, node: &'a Node) -> Self {
        Self::with_load(idx, node, Load::default())
    }

    pub fn with_load(idx: u32, node: &'a Node, load: Load) -> Self {
        NodeInfo {
            idx,
            node,
            total_tasks: load.total_tasks,
            tasks_by_service: load.tasks_by_service,
            reserved: load.reserved,
            host_ports: load.host_ports,
        }
    }

    pub fn into_load(self) -> Load {
        Load {
            total_tasks: self.total_tasks,
            tasks_by_service: self.tasks_by_service,
            reserved: self.reserved,
            host_ports: self.host_ports,
        }
    }

    pub fn service_tasks(&self, service_idx: u32) -> u32 {
        match self
            .tasks_by_service
            .binary_search_by_key(&service_idx, |e| e.0)
        {
            Ok(i) => self.tasks_by_service[i].1,
            Err(_) => 0,
        }
    }

    pub fn available(&self) -> Resources {
        self.node.resources - self.reserved
    }

    /// Counts a task of `service_idx` on this node (resources and ports are the reserve
    /// plugins' business).
    pub fn add_task(&mut self, service_idx: u32) {
        self.total_tasks += 1;
        match self
            .tasks_by_service
            .binary_search_by_key(&service_idx, |e| e.0)
        {
            Ok(i) => self.tasks_by_service[i].1 += 1,
            Err(i) => self.tasks_by_service.insert(i, (service_idx, 1)),
        }
    }

    pub fn remove_task(&mut self, service_idx: u32) {
        self.total_tasks = self.total_tasks.saturating_sub(1);
        if let Ok(i) = self
            .tasks_by_service
            .binary_search_by_key(&service_idx, |e| e.0)
        {
            self.tasks_by_service[i].1 -= 1;
            if self.tasks_by_service[i].1 == 0 {
                self.tasks_by_service.remove(i);
            }
        }
    }
}

pub struct Snapshot<'a> {
    pub nodes: Vec<NodeInfo<'a>>,
}

impl<'a> Snapshot<'a> {
    /// `nodes` in ID order (see `schedule::Index`), with nothing booked.
    pub fn new(nodes: Vec<&'a Node>) -> Self {
        debug_assert!(nodes.windows(2).all(|w| w[0].id < w[1].id));
        Snapshot {
            nodes: nodes
                .into_iter()
                .enumerate()
                .map(|(i, n)| NodeInfo::new(i as u32, n))
                .collect(),
        }
    }

    /// The same nodes with the counters a previous snapshot left ([`Snapshot::into_loads`]).
    pub fn with_loads(nodes: Vec<&'a Node>, loads: Vec<Load>) -> Self {
        assert_eq!(nodes.len(), loads.len(), "one load per node");
        Snapshot {
            nodes: nodes
                .into_iter()
                .zip(loads)
                .enumerate()
                .map(|(i, (n, l))| NodeInfo::with_load(i as u32, n, l))
                .collect(),
        }
    }

    pub fn into_loads(self) -> Vec<Load> {
        self.nodes.into_iter().map(NodeInfo::into_load).collect()
    }
}
