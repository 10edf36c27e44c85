//! Swarm's own reaction (also used for the stateless services under `manual`): after a node
//! is DOWN plus the restart delay, place every missing slot with the engine on the cluster
//! *without* `berth.*` labels — Swarm's filters and spread — and start it on whatever volume
//! of that name the chosen node has. For node-local data that is a new, empty volume: the
//! writes acknowledged on the old one are lost (moby#33080).

use berth_scheduler::schedule;

use crate::event::Ev;
use crate::policy_kind::PolicyKind;
use crate::state::Sim;
use crate::world::TaskState;

pub fn on_down(sim: &mut Sim, node: u32) {
    if sim.hosts_desired(node) || sim.has_missing_slots() {
        let at = sim.now + sim.scn.swarm.restart_delay;
        sim.q.push(at, Ev::SwarmReconcile);
    }
}

pub fn on_back(sim: &mut Sim, node: u32) {
    // Containers that died with the node are reported failed and restarted after the delay.
    let dead = sim
        .tasks
        .iter()
        .any(|t| t.node == node && t.desired && t.state == TaskState::Dead);
    if dead {
        let at = sim.now + sim.scn.swarm.restart_delay;
        sim.q.push(at, Ev::SwarmReconcile);
    }
}

pub fn on_drain(sim: &mut Sim) {
    // Swarm shuts a drained node's tasks down and replaces them at once, all of them.
    let at = sim.now;
    sim.q.push(at, Ev::SwarmReconcile);
}

/// Swarm's orchestrator: every missing slot gets a new task where plain Swarm would put it.
pub fn reconcile(sim: &mut Sim) {
    if !sim.quorum {
        return;
    }
    let only_stateless = sim.policy != PolicyKind::SwarmDefault;
    sim.metrics.engine_calls += 1;
    let plan = match schedule::plan(sim.view(false)) {
        Ok(p) => p,
        Err(e) => {
            sim.log_event(format!("swarm: plan failed: {e}"));
            return;
        }
    };
    for p in plan.new_placements() {
        let (Some(si), Some(slot), Some(node)) = (
            sim.service_index(&p.service),
            p.slot,
            sim.node_index(p.node.as_str()),
        ) else {
            continue;
        };
        let svc = &sim.services[si as usize];
        if only_stateless && svc.stateful {
            continue;
        }
        let slot_idx = svc.first_slot + (slot - 1) as u32;
        if sim.driver.executor().is_busy(
            &sim.scn.services[si as usize].name,
            sim.slots[slot_idx as usize].slot,
        ) {
            continue;
        }
        sim.retire_slot_tasks(slot_idx);
        let copy = match sim.slots[slot_idx as usize].dataset {
            Some(d) => {
                let home = sim.datasets[d as usize].home;
                let (c, empty) = sim.local_volume(d, node);
                if home != Some(node) {
                    sim.metrics.moves += 1;
                }
                // A self-replicating member on an empty volume is a normal resync, not a loss.
                let self_rep = sim.services[si as usize].self_replicating;
                if empty && !self_rep && sim.data_exists_elsewhere(d) {
                    sim.metrics.empty_volume_starts += 1;
                    let msg = format!(
                        "swarm: {} slot {slot} starts on {} on an EMPTY volume {}",
                        p.service, sim.node_names[node as usize], sim.datasets[d as usize].name
                    );
                    sim.log_event(msg);
                }
                Some(c)
            }
            None => None,
        };
        let latency = sim.scn.swarm.start_latency;
        sim.start_task(slot_idx, node, copy, latency);
        let msg = format!(
            "swarm: {} slot {slot} → {}",
            p.service, sim.node_names[node as usize]
        );
        sim.log_event(msg);
    }
}
