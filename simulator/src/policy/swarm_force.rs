//! `docker service update --force` on every service, SwarmKit's way to rebalance: at
//! `[rebalance] force_at` an operator updates the services one after the other (the CLI waits
//! for each to converge), each with Swarm's update defaults — one task at a time, stop first,
//! the next after the replacement has run for the monitor period. Each replacement is placed
//! anew by Swarm's scheduler (`swarm_default::reconcile`: the engine with `berth.*` labels
//! stripped) and starts on whatever volume its new node has — for node-local data on another
//! node, an empty one.

use crate::clock::{Ms, SECOND};
use crate::event::Ev;
use crate::policy::swarm_default;
use crate::state::Sim;

/// SwarmKit's `--update-monitor` default: how long an updated task must run before the next.
const UPDATE_MONITOR: Ms = 5 * SECOND;

/// Restarts slot `step` (slots in service order, then slot order) and schedules the next.
pub fn step(sim: &mut Sim, step: u32) {
    let slot_idx = step;
    if slot_idx as usize >= sim.slots.len() {
        return;
    }
    if !sim.quorum {
        // Nothing is updated without a leader: the CLI retries.
        sim.q.push(sim.now + 10 * SECOND, Ev::ForceUpdate { step });
        return;
    }
    let old = sim.slots[slot_idx as usize]
        .tasks
        .iter()
        .map(|&t| &sim.tasks[t as usize])
        .find(|t| t.desired)
        .map(|t| t.node);
    let sw = &sim.scn.swarm;
    let next = sim.now + sw.stop_latency + sw.start_latency + UPDATE_MONITOR;
    sim.q.push(next, Ev::ForceUpdate { step: step + 1 });
    let Some(old) = old else {
        return;
    };
    let s = &sim.slots[slot_idx as usize];
    let msg = format!(
        "swarm: service update --force restarts {} slot {}",
        sim.scn.services[s.service as usize].name, s.slot
    );
    sim.log_event(msg);
    sim.resched.forced.insert(slot_idx, (sim.now, old));
    sim.resched.note_down();
    sim.resched.out.runs += 1;
    if let Some(t) = swarm_default::shut_down(sim, slot_idx) {
        sim.resched.replacing.insert(slot_idx, t);
    }
    swarm_default::reconcile(sim);
    sim.resched.replacing.remove(&slot_idx);
}

/// A task came up: the end of its slot's forced restart, if it had one.
pub fn on_ready(sim: &mut Sim, task: u32) {
    let t = &sim.tasks[task as usize];
    let Some((since, old)) = sim.resched.forced.remove(&t.slot_idx) else {
        return;
    };
    if !sim.services[t.service as usize].stateful {
        return;
    }
    let out = &mut sim.resched.out;
    out.downtime_ms.push(sim.now.saturating_sub(since));
    if t.node != old {
        out.moves += 1;
    }
}
