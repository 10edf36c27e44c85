//! The engine's input: the cluster as the managers see it right now, patched in place (nodes
//! are cloned once per run, not per decision).
//!
//! Architecture invariant: the engine never sees the world, only this view. A partitioned
//! node's containers still look running to the managers; a dead container on a reachable node
//! has been reported failed and is left out.

use berth_control_model::fencing::as_planned;
use berth_scheduler::model::{
    Availability, Cluster, Dataset, FENCED_LABEL, NodeId, NodeState, Task,
    TaskState as EngineTaskState,
};

use crate::state::Sim;
use crate::world::TaskState;

impl Sim<'_> {
    /// Patches the engine input to what the managers see now, and returns it.
    pub fn view(&mut self, berth_labels: bool) -> &Cluster {
        let berth = self.policy.is_berth();
        let mut c = if berth_labels {
            std::mem::take(&mut self.view_berth)
        } else {
            std::mem::take(&mut self.view_swarm)
        };
        let bit = 1u8 << u8::from(berth_labels);
        self.view_fenced.resize(c.nodes.len(), 0);
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
            // Only a change touches the labels: views are built at every observation.
            let applied = self.view_fenced[i] & bit != 0;
            if rt.fenced && !applied {
                n.labels.insert(FENCED_LABEL.into(), "true".into());
                self.view_fenced[i] |= bit;
            } else if !rt.fenced && applied {
                n.labels.remove(FENCED_LABEL);
                self.view_fenced[i] &= !bit;
            }
        }
        // The task list changes only with tasks and contact (faults); the executor observes at
        // every contact change, so rebuilding it each time would dominate a 10k-node day.
        let k = usize::from(berth_labels);
        let rebuild = self.view_gen[k] != self.tasks_gen;
        if rebuild {
            self.view_gen[k] = self.tasks_gen;
            c.tasks.clear();
        }
        for slot in self.slots.iter().filter(|_| rebuild) {
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
        if berth_labels {
            let node = |i: Option<u32>| i.map(|n| NodeId::new(self.node_ids[n as usize].clone()));
            let same = |a: &Option<NodeId>, b: Option<u32>| match (a, b) {
                (Some(a), Some(b)) => a.as_str() == self.node_ids[b as usize],
                (None, None) => true,
                _ => false,
            };
            let patch = c.datasets.len() == self.datasets.len();
            if !patch {
                c.datasets.clear();
            }
            for (i, ds) in self.datasets.iter().enumerate() {
                // A standby a promotion can use: its disk there and its first sync over (what
                // the control service is told of it before a promotion).
                let standby = ds
                    .standby
                    .filter(|s| {
                        let c = &self.copies[*s as usize];
                        c.alive && c.ready_at <= self.now
                    })
                    .and_then(|s| self.copies[s as usize].node);
                // A volume the service holds fenced and unassigned is shown as `berth run`
                // shows it (`fencing::as_planned`): its last holder, the epoch before.
                let (home, epoch, fenced) = match self
                    .control
                    .dataset_of(i as u32)
                    .map(|m| as_planned(m.primary_now(), m.fenced_from.as_deref(), m.epoch))
                {
                    Some(p) if p.fenced => (
                        p.primary.and_then(|n| self.node_index(n)).or(ds.home),
                        p.epoch,
                        true,
                    ),
                    _ => (ds.home, ds.epoch, false),
                };
                if patch {
                    // Names never change; only what failover moves is patched.
                    let v = &mut c.datasets[i];
                    v.epoch = epoch;
                    v.fenced = fenced;
                    if !same(&v.primary, home) {
                        v.primary = node(home);
                    }
                    if !same(&v.standby, standby) {
                        v.standby = node(standby);
                    }
                    continue;
                }
                c.datasets.push(Dataset {
                    name: ds.name.clone(),
                    service: self.scn.services[ds.service as usize].name.clone(),
                    slot: ds.slot,
                    primary: node(home),
                    epoch,
                    backend: ds.backend,
                    size_bytes: ds.size_bytes,
                    standby: node(standby),
                    fenced,
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
