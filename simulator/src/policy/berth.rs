//! Berth's reaction, wired: its own detector (`berth.heartbeat × berth.misses`, faster than
//! Swarm's 15 s) feeds the engine's executor, which decides what to plan and when —
//! fencing, node-down/drained/back plans, re-planning a lost node whose plan lost a lane,
//! re-admitting a fenced holder — and whose commands [`crate::backend`] carries out.
//! Level-triggered after a restart or a quorum loss: the executor catches up from the world
//! as it is, so a plan cut short half-way is finished by the next one, never replayed.

use crate::event::Ev;
use crate::state::Sim;

pub fn on_detect(sim: &mut Sim, _node: u32) {
    sim.observe();
}

/// Right after a lane was dropped (once it has released its slot).
pub fn retry_dropped(sim: &mut Sim) {
    if sim.policy.is_berth() && sim.quorum && sim.scheduler_up {
        sim.observe();
    }
}

/// Also without a leader: a `recreate` slot in its grace period for this node keeps its
/// member (the executor only records what it sees while paused).
pub fn on_back(sim: &mut Sim, _node: u32) {
    sim.observe();
}

pub fn on_drain(sim: &mut Sim, _node: u32) {
    if !sim.quorum || !sim.scheduler_up {
        return;
    }
    sim.observe();
}

/// After a scheduler restart or a quorum loss: re-arm detection for every silent node, then
/// let the executor catch up (re-plan every node already declared dead, restart what died on
/// reachable nodes, resume drains).
pub fn catch_up(sim: &mut Sim) {
    if !sim.quorum || !sim.scheduler_up || !sim.control_up {
        return;
    }
    for n in 0..sim.nodes.len() as u32 {
        let rt = &sim.nodes[n as usize];
        if !rt.berth_contact && !rt.berth_down {
            let generation = rt.berth_generation;
            // The control service's liveness kept counting while Berth could not act: the
            // verdict is read as soon as the service says the node is lost (at once, for a
            // node silent for a whole window already).
            let at = sim.detect_at(n);
            sim.q.push(
                at,
                Ev::BerthDetect {
                    node: n,
                    generation,
                },
            );
        }
    }
    sim.driver.set_active(true);
    sim.observe();
}
