//! Berth's reaction: its own detector (`berth.heartbeat × berth.misses`, faster than Swarm's
//! 15 s), then `failover::plan_failover` for the event, executed by [`super::executor`].
//! Level-triggered after a restart or a quorum loss: it re-plans from the world as it is, so a
//! plan cut short half-way is finished by the next one, never replayed.

use berth_scheduler::failover::Event;
use berth_scheduler::model::NodeId;

use crate::policy::executor;
use crate::sim::{Ev, Sim};
use crate::world::TaskState;

fn id(sim: &Sim, node: u32) -> NodeId {
    NodeId::new(sim.node_ids[node as usize].clone())
}

pub fn on_detect(sim: &mut Sim, node: u32) {
    sim.nodes[node as usize].fenced = true;
    // A node without tasks needs no plan (the engine would return no steps); most random
    // faults in a large cluster hit such nodes.
    if sim.hosts_desired(node) {
        let id = id(sim, node);
        executor::plan_and_launch(sim, Event::NodeDown(id), false);
    }
    retry(sim);
}

/// Right after a lane was dropped (once it has released its slot).
pub fn retry_dropped(sim: &mut Sim) {
    if sim.policy == crate::policy::PolicyKind::Berth && sim.quorum && sim.scheduler_up {
        retry(sim);
    }
}

/// Re-plans lost nodes whose plan lost a target half-way: the world changed, so the engine
/// is asked again (level-triggered), rather than replaying the old plan.
fn retry(sim: &mut Sim) {
    let nodes = std::mem::take(&mut sim.retry);
    for n in nodes {
        if sim.nodes[n as usize].berth_down {
            let id = id(sim, n);
            executor::plan_and_launch(sim, Event::NodeDown(id), false);
        }
    }
}

/// A holder fenced by a node-down plan whose move never completed (its target was lost
/// half-way) is still the dataset's primary when its node returns, but its epoch is stale and
/// the driver refuses it. The engine's node-back plan does not cover this (it only revokes
/// copies whose primary moved elsewhere), so the simulator re-admits it: the container is
/// restarted in place at the current epoch.
fn readmit(sim: &mut Sim, node: u32) {
    let mut stale = Vec::new();
    for (i, t) in sim.tasks.iter().enumerate() {
        if t.node != node || !t.desired || !t.alive() {
            continue;
        }
        if let Some(d) = sim.slots[t.slot_idx as usize].dataset {
            let ds = &sim.datasets[d as usize];
            if t.epoch < ds.epoch && ds.home == Some(node) && !sim.slots[t.slot_idx as usize].busy {
                stale.push((i as u32, t.slot_idx, t.copy));
            }
        }
    }
    for (t, slot, copy) in stale {
        sim.retire_task(t);
        let latency = sim.scn.berth.start_latency;
        sim.start_task(slot, node, copy, latency);
        let msg = format!(
            "berth: re-admits {} slot {} on {} at the current epoch",
            sim.scn.services[sim.slots[slot as usize].service as usize].name,
            sim.slots[slot as usize].slot,
            sim.node_names[node as usize]
        );
        sim.log_event(msg);
    }
}

pub fn on_back(sim: &mut Sim, node: u32, was_down: bool) {
    // A `recreate` slot still in its grace period for this node keeps its member.
    executor::abort_grace_for(sim, node);
    if !sim.quorum || !sim.scheduler_up {
        return;
    }
    let dead = sim
        .tasks
        .iter()
        .any(|t| t.node == node && t.desired && t.state == TaskState::Dead);
    let fenced = sim.nodes[node as usize].fenced;
    if dead || ((was_down || fenced) && (sim.hosts_desired(node) || sim.has_missing_slots())) {
        let id = id(sim, node);
        executor::plan_and_launch(sim, Event::NodeBack(id), false);
    } else if fenced {
        // What the plan's `unfence` step would do, without asking the engine for nothing.
        sim.nodes[node as usize].fenced = false;
    }
    readmit(sim, node);
    retry(sim);
}

pub fn on_drain(sim: &mut Sim, node: u32) {
    if !sim.quorum || !sim.scheduler_up {
        return;
    }
    let id = id(sim, node);
    executor::plan_and_launch(sim, Event::NodeDrained(id), false);
}

/// After a scheduler restart or a quorum loss: re-arm detection for every silent node,
/// re-plan every node already declared dead, restart what died on reachable nodes, and
/// resume drains.
pub fn catch_up(sim: &mut Sim) {
    if !sim.quorum || !sim.scheduler_up {
        return;
    }
    let bt = &sim.scn.berth;
    let wait = bt.heartbeat * bt.misses;
    for n in 0..sim.nodes.len() as u32 {
        let rt = &sim.nodes[n as usize];
        if !rt.in_contact() && !rt.berth_down {
            let generation = rt.generation;
            sim.q.push(
                sim.now + wait,
                Ev::BerthDetect {
                    node: n,
                    generation,
                },
            );
        }
    }
    // One pass over the tasks, not one per node: 10k nodes × tasks would dominate a run.
    let mut hosts = vec![false; sim.nodes.len()];
    let mut dead = vec![false; sim.nodes.len()];
    for t in sim.tasks.iter().filter(|t| t.desired) {
        hosts[t.node as usize] = true;
        dead[t.node as usize] |= t.state == TaskState::Dead;
    }
    for n in 0..sim.nodes.len() as u32 {
        let rt = &sim.nodes[n as usize];
        let event = if rt.berth_down && hosts[n as usize] {
            Event::NodeDown(id(sim, n))
        } else if rt.draining && hosts[n as usize] {
            Event::NodeDrained(id(sim, n))
        } else if rt.in_contact() && dead[n as usize] {
            Event::NodeBack(id(sim, n))
        } else {
            continue;
        };
        executor::plan_and_launch(sim, event, false);
    }
}
