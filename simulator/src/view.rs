//! The engine's input: the cluster as the managers see it right now, patched in place (nodes
//! are cloned once per run, not per decision).
//!
//! Architecture invariant: the engine never sees the world, only this view. A partitioned
//! node's containers still look running to the managers; a dead container on a reachable node
//! has been reported failed and is left out.

use berth_scheduler::model::{
    Availability, Cluster, Dataset, FENCED_LABEL, NodeId, NodeState, Task,
    TaskState as EngineTaskState,
};

use crate::policy::PolicyKind;
use crate::sim::Sim;
use crate::world::TaskState;

impl Sim<'_> {
    /// Patches the engine input to what the managers see now, and returns it.
    pub fn view(&mut self, berth_labels: bool) -> &Cluster {
        let berth = self.policy == PolicyKind::Berth;
        let mut c = if berth_labels {
            std::mem::take(&mut self.view_berth)
        } else {
            std::mem::take(&mut self.view_swarm)
        };
        for (i, n) in c.nodes.iter_mut().enumerate() {
            let rt = &self.nodes[i];
            n.state = if rt.swarm_down || (berth && rt.berth_down) {
                NodeState::Down
            } else {
                NodeState::Ready
            };
            n.availability = if rt.draining {
                Availability::Drain
            } else {
                Availability::Active
            };
            if rt.fenced {
                n.labels.insert(FENCED_LABEL.into(), "true".into());
            } else if !n.labels.is_empty() {
                n.labels.remove(FENCED_LABEL);
            }
        }
        c.tasks.clear();
        for slot in &self.slots {
            for &t in &slot.tasks {
                let task = &self.tasks[t as usize];
                let node = &self.nodes[task.node as usize];
                // A dead container on a reachable node has been reported failed.
                if !task.desired || (task.state == TaskState::Dead && node.in_contact()) {
                    continue;
                }
                c.tasks.push(Task {
                    id: format!("t{t}"),
                    service_id: self.scn.cluster.services[task.service as usize].id.clone(),
                    slot: Some(task.slot),
                    node_id: Some(NodeId::new(self.node_ids[task.node as usize].clone())),
                    state: EngineTaskState::Running,
                    desired_state: EngineTaskState::Running,
                });
            }
        }
        c.datasets.clear();
        if berth_labels {
            for ds in &self.datasets {
                let node =
                    |i: Option<u32>| i.map(|n| NodeId::new(self.node_ids[n as usize].clone()));
                let standby = ds
                    .standby
                    .filter(|s| self.copies[*s as usize].ready_at <= self.now)
                    .and_then(|s| self.copies[s as usize].node);
                c.datasets.push(Dataset {
                    name: ds.name.clone(),
                    service: self.scn.services[ds.service as usize].name.clone(),
                    slot: ds.slot,
                    primary: node(ds.home),
                    epoch: ds.epoch,
                    backend: ds.backend,
                    size_bytes: ds.size_bytes,
                    standby: node(standby),
                });
            }
        }
        if berth_labels {
            self.view_berth = c;
            &self.view_berth
        } else {
            self.view_swarm = c;
            &self.view_swarm
        }
    }
}
