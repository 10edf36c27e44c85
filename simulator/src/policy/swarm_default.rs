//! Swarm's own reaction (also used for the stateless services under `manual`): after a node
//! is DOWN plus the restart delay, place every missing slot with the engine on the cluster
//! *without* `berth.*` labels — Swarm's filters and spread — and start it on whatever volume
//! of that name the chosen node has. For node-local data that is a new, empty volume: the
//! writes acknowledged on the old one are lost (moby#33080).
//!
//! A replacement starts only once the task it replaces has stopped, as SwarmKit's restart
//! supervisor does (`manager/orchestrator/restart/restart.go`, `Supervisor::Restart` and
//! `Supervisor::DelayStart`): it shuts the old task down and creates the new one at once,
//! but with `waitStop` — unless the old task is already dead or its node is DOWN — the new
//! task is started only when the old one is reported past running, its node goes DOWN, or
//! `TaskTimeout` (1 min) has passed. On a drained node there is no restart delay either, so a
//! drain costs the old task's stop (`swarm.stop_latency`) and then the new one's start.

use berth_scheduler::schedule;

use crate::clock::Ms;
use crate::event::Ev;
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
    // Swarm shuts a drained node's tasks down and creates their replacements at once, all of
    // them, with no restart delay (restart.go: "Restart delay is not applied to drained
    // nodes"); each replacement starts once its old task has stopped (`reconcile`).
    let at = sim.now;
    sim.q.push(at, Ev::SwarmReconcile);
}

/// Swarm's orchestrator: every missing slot gets a new task where plain Swarm would put it.
pub fn reconcile(sim: &mut Sim) {
    if !sim.quorum {
        return;
    }
    let only_stateless = !sim.policy.is_swarm();
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
        // A forced update shut the old task down already; its replacement waits for it too.
        let wait_for = shut_down(sim, slot_idx).or_else(|| sim.resched.replacing.remove(&slot_idx));
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
        let to = &sim.node_names[node as usize];
        let Some(old) = wait_for else {
            let msg = format!("swarm: {} slot {slot} → {to}", p.service);
            let latency = sim.scn.swarm.start_latency;
            sim.start_task(slot_idx, node, copy, latency);
            sim.log_event(msg);
            continue;
        };
        let msg = format!(
            "swarm: {} slot {slot} goes to {to} once its task on {} has stopped",
            p.service, sim.node_names[sim.tasks[old as usize].node as usize]
        );
        // Assigned, not started (SwarmKit's desired state READY): it counts in its slot, so no
        // later reconcile places the slot again, but runs nothing until `release`.
        let t = sim.add_task(slot_idx, node, copy, TaskState::Starting);
        sim.swarm_waits.push((t, old));
        let at = sim.now + OLD_TASK_TIMEOUT;
        sim.q.push(at, Ev::SwarmWaitOver { task: t });
        sim.log_event(msg);
    }
}

/// How long SwarmKit waits at most for an old task to stop before it starts the replacement
/// anyway (restart.go: `defaultOldTaskTimeout`, the supervisor's `TaskTimeout`).
const OLD_TASK_TIMEOUT: Ms = 60_000;

/// Shuts down the tasks the managers want in the slot (`Supervisor::Restart` sets each one's
/// desired state to shutdown). Returns the one a replacement must wait for: a task still
/// alive on a node that is not DOWN (`waitStop`). It writes until its stop lands,
/// `swarm.stop_latency` after its node hears of it — now if the managers reach the node, else
/// when it is back (`contact_back`). A dead task, or one on a DOWN node, is retired at once.
pub fn shut_down(sim: &mut Sim, slot_idx: u32) -> Option<u32> {
    let old: Vec<u32> = sim.slots[slot_idx as usize]
        .tasks
        .iter()
        .copied()
        .filter(|&t| sim.tasks[t as usize].desired)
        .collect();
    let mut wait_for = None;
    for t in old {
        let task = &sim.tasks[t as usize];
        let node = &sim.nodes[task.node as usize];
        if !task.alive() || node.swarm_down {
            sim.retire_task(t);
            continue;
        }
        let reachable = node.in_contact();
        sim.tasks[t as usize].desired = false;
        sim.tasks_gen += 1;
        if reachable {
            let at = sim.now + sim.scn.swarm.stop_latency;
            sim.q.push(at, Ev::StopTask { task: t });
        }
        wait_for = Some(t);
    }
    wait_for
}

/// Starts Swarm's waiting replacements whose wait is over (`Supervisor::DelayStart`): the
/// task each replaces has ended and the managers reach its node to hear so, or that node is
/// DOWN; `timed_out`, the one whose `TaskTimeout` has passed, starts in any case. Started at
/// once even without a leader: SwarmKit's supervisor would start it when one is back, and the
/// scenarios' quorum losses outlast no stop.
pub fn release(sim: &mut Sim, timed_out: Option<u32>) {
    if sim.swarm_waits.is_empty() {
        return;
    }
    let waits = std::mem::take(&mut sim.swarm_waits);
    for (t, old) in waits {
        let o = &sim.tasks[old as usize];
        let on = &sim.nodes[o.node as usize];
        let from = &sim.node_names[o.node as usize];
        let why = if timed_out == Some(t) {
            format!("waited 1m for its task on {from} to stop")
        } else if on.swarm_down {
            format!("{from}, where its task ran, is DOWN")
        } else if !o.alive() && on.in_contact() {
            format!("its task on {from} has stopped")
        } else {
            sim.swarm_waits.push((t, old));
            continue;
        };
        let task = &sim.tasks[t as usize];
        // Replaced meanwhile (its own node went DOWN, say): nothing to start.
        if !task.desired || task.state != TaskState::Starting {
            continue;
        }
        let (node, slot, service) = (task.node, task.slot, task.service);
        let slow = Ms::from(sim.nodes[node as usize].slow);
        let latency = sim.scn.swarm.start_latency * slow;
        // Its container starts now (the plot's bar begins here).
        sim.tasks[t as usize].started = sim.now;
        sim.q.push(sim.now + latency, Ev::TaskReady { task: t });
        let msg = format!(
            "swarm: {} slot {slot} → {} ({why})",
            sim.scn.services[service as usize].name, sim.node_names[node as usize]
        );
        sim.log_event(msg);
    }
}
