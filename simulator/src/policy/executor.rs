//! Executes a `failover::FailoverPlan` against the simulated world, step by step, with
//! modelled durations — the same plan the daemon would execute against Docker and the volume
//! driver.
//!
//! A plan's steps are grouped into *lanes*, one per slot, run in parallel; lanes of one wave
//! all finish before the next wave starts (the engine's rule). A step's effect happens when it
//! completes. A lane is dropped, not half-applied, when the world moved under it: its target
//! died, or its lost node came back during a `recreate` grace period.
//!
//! | step | duration |
//! |---|---|
//! | fence | `berth.fence` |
//! | stop-task | `berth.stop_latency` |
//! | wait-grace | the service's `berth.recreate-grace` |
//! | choose-target | `berth.plan` |
//! | move-dataset, shared | `berth.attach` |
//! | move-dataset, copy | bytes / `berth.move_bandwidth` (× slow disk); with `incremental`, the bulk is pre-copied while the task still runs and only the delta after it stops |
//! | promote-standby | `berth.promote` |
//! | start-task | `berth.start_latency` (× slow disk) |

use std::collections::BTreeMap;

use berth_scheduler::failover::{Action, Event, FailoverPlan, plan_failover};

use crate::clock::{Ms, transfer_ms};
use crate::policy::PolicyKind;
use crate::sim::{Ev, Sim};
use crate::world::TaskState;

#[derive(Clone, Debug)]
pub enum LaneStep {
    Engine(Action),
    /// Incremental move: the bulk copy while the old task still serves.
    PreCopy,
}

pub struct Lane {
    pub wave: u32,
    /// Global slot index; `None` for node-level steps.
    pub slot: Option<u32>,
    pub steps: Vec<LaneStep>,
    pub i: usize,
    /// The copy the new task will mount.
    pub copy: Option<u32>,
    /// Acknowledged writes when the pre-copy started (the delta is what came after).
    pub acked_mark: u64,
    /// The node this lane's slot was lost on (node-down plans).
    pub lost: Option<u32>,
    pub done: bool,
    /// Counted against the service's drain budget.
    pub stopped: bool,
}

pub struct PlanRun {
    pub generation: u64,
    pub lanes: Vec<Lane>,
    pub wave: u32,
    pub last_wave: u32,
    pub open: u32,
    pub drain: bool,
    /// Slots of each service stopped by this plan and not started yet.
    pub stopped: BTreeMap<u32, u32>,
}

/// Asks the engine for a plan and starts executing it. `manual`: only stateful lanes (Swarm
/// handles the stateless ones under the manual policy).
pub fn plan_and_launch(sim: &mut Sim, event: Event, manual: bool) {
    sim.metrics.engine_calls += 1;
    let result = plan_failover(sim.view(true), &event);
    match result {
        Ok(plan) => launch(sim, plan, manual),
        Err(e) => sim.log_event(format!("plan_failover({event:?}) failed: {e}")),
    }
}

fn launch(sim: &mut Sim, plan: FailoverPlan, manual: bool) {
    let lost = match &plan.event {
        Event::NodeDown(n) => sim.node_index(n.as_str()),
        _ => None,
    };
    let drain = matches!(plan.event, Event::NodeDrained(_));
    // Group steps into lanes, in plan order.
    let mut lanes: Vec<Lane> = Vec::new();
    let mut by_key: BTreeMap<(u32, Option<u32>), usize> = BTreeMap::new();
    let mut skipped = 0;
    for step in &plan.steps {
        let slot = match (&step.service, step.slot) {
            (Some(name), Some(slot)) => match sim.service_index(name) {
                Some(si) => Some(sim.services[si as usize].first_slot + (slot - 1) as u32),
                None => continue,
            },
            _ => None,
        };
        if let Some(s) = slot {
            let stateful = sim.services[sim.slots[s as usize].service as usize].stateful;
            if (manual && !stateful) || sim.slots[s as usize].busy {
                skipped += 1;
                continue;
            }
        }
        let key = (step.wave, slot);
        let idx = *by_key.entry(key).or_insert_with(|| {
            lanes.push(Lane {
                wave: step.wave,
                slot,
                steps: Vec::new(),
                i: 0,
                copy: None,
                acked_mark: 0,
                lost,
                done: false,
                stopped: false,
            });
            lanes.len() - 1
        });
        let lane = &mut lanes[idx];
        if sim.scn.berth.incremental
            && let Action::MoveDataset { copy: true, .. } = step.action
        {
            // Pre-copy right after the target is chosen, before the task stops.
            let at = lane
                .steps
                .iter()
                .position(|s| matches!(s, LaneStep::Engine(Action::StopTask { .. })))
                .unwrap_or(lane.steps.len());
            lane.steps.insert(at, LaneStep::PreCopy);
        }
        lane.steps.push(LaneStep::Engine(step.action.clone()));
    }
    if lanes.is_empty() {
        if skipped == 0 {
            sim.log_event(format!(
                "{}: nothing to do for {:?}",
                who(sim, manual),
                plan.event
            ));
        }
        return;
    }
    for l in &lanes {
        if let Some(s) = l.slot {
            sim.slots[s as usize].busy = true;
        }
    }
    let last_wave = lanes.iter().map(|l| l.wave).max().unwrap_or(0);
    let first_wave = lanes.iter().map(|l| l.wave).min().unwrap_or(0);
    let node_name = sim
        .node_index(plan.event.node().as_str())
        .map(|i| sim.node_names[i as usize].clone())
        .unwrap_or_else(|| plan.event.node().to_string());
    let label = format!(
        "{}: {} {} ({} steps)",
        who(sim, manual),
        event_name(&plan.event),
        node_name,
        lanes.iter().map(|l| l.steps.len()).sum::<usize>()
    );
    sim.markers.push((sim.now, label.clone()));
    sim.log_event(label);
    sim.metrics.failovers += 1;
    let run = sim.runs.len() as u32;
    sim.runs.push(PlanRun {
        generation: sim.sched_generation,
        lanes,
        wave: first_wave,
        last_wave,
        open: 0,
        drain,
        stopped: BTreeMap::new(),
    });
    start_wave(sim, run);
}

fn who(sim: &Sim, manual: bool) -> &'static str {
    if manual || sim.policy == PolicyKind::Manual {
        "operator"
    } else {
        "berth"
    }
}

fn event_name(e: &Event) -> &'static str {
    match e {
        Event::NodeDown(_) => "node-down",
        Event::NodeDrained(_) => "node-drained",
        Event::NodeBack(_) => "node-back",
    }
}

fn start_wave(sim: &mut Sim, run: u32) {
    loop {
        let r = &sim.runs[run as usize];
        if r.wave > r.last_wave {
            return;
        }
        let wave = r.wave;
        let ids: Vec<u32> = r
            .lanes
            .iter()
            .enumerate()
            .filter(|(_, l)| l.wave == wave && !l.done)
            .map(|(i, _)| i as u32)
            .collect();
        if ids.is_empty() {
            sim.runs[run as usize].wave += 1;
            continue;
        }
        sim.runs[run as usize].open = ids.len() as u32;
        let generation = sim.runs[run as usize].generation;
        for lane in ids {
            let d = duration(sim, run, lane);
            sim.q.push(
                sim.now + d,
                Ev::Lane {
                    run,
                    lane,
                    generation,
                },
            );
        }
        return;
    }
}

/// How long the lane's current step takes, decided when it starts.
fn duration(sim: &mut Sim, run: u32, lane: u32) -> Ms {
    let bt = &sim.scn.berth;
    let l = &sim.runs[run as usize].lanes[lane as usize];
    let Some(step) = l.steps.get(l.i) else {
        return 0;
    };
    let slow = |n: Option<u32>| n.map(|n| Ms::from(sim.nodes[n as usize].slow)).unwrap_or(1);
    let dataset = l.slot.and_then(|s| sim.slots[s as usize].dataset);
    match step {
        LaneStep::PreCopy => {
            let size = dataset
                .map(|d| sim.datasets[d as usize].size_bytes)
                .unwrap_or(0);
            let mark = dataset.map(|d| sim.datasets[d as usize].acked).unwrap_or(0);
            sim.runs[run as usize].lanes[lane as usize].acked_mark = mark;
            transfer_ms(size, sim.scn.berth.move_bandwidth)
        }
        LaneStep::Engine(a) => match a {
            Action::Fence { .. } => bt.fence,
            Action::StopTask { .. } => bt.stop_latency,
            Action::WaitGrace { seconds } => seconds * 1_000,
            Action::ChooseTarget { .. } => bt.plan,
            Action::MoveDataset { copy: false, .. } => bt.attach,
            Action::MoveDataset { from, to, .. } => {
                let bytes = move_bytes(sim, run, lane, dataset);
                let s = slow(sim.node_index(from.as_str())).max(slow(sim.node_index(to.as_str())));
                transfer_ms(bytes, sim.scn.berth.move_bandwidth) * s
            }
            Action::PromoteStandby { .. } => bt.promote,
            Action::StartTask { node } => bt.start_latency * slow(sim.node_index(node.as_str())),
            _ => 0,
        },
    }
}

/// Bytes the final copy of a move carries: everything, or only the delta after a pre-copy.
fn move_bytes(sim: &Sim, run: u32, lane: u32, dataset: Option<u32>) -> u64 {
    let Some(d) = dataset else { return 0 };
    let l = &sim.runs[run as usize].lanes[lane as usize];
    let ds = &sim.datasets[d as usize];
    let pre = l.steps.iter().any(|s| matches!(s, LaneStep::PreCopy));
    if pre {
        let wb = sim.scn.services[ds.service as usize].data.write_bytes;
        ds.acked.saturating_sub(l.acked_mark) * wb
    } else {
        ds.size_bytes
    }
}

/// A lane's current step completed: apply it, then schedule the next.
pub fn step(sim: &mut Sim, run: u32, lane: u32, generation: u64) {
    if generation != sim.sched_generation || sim.runs[run as usize].lanes[lane as usize].done {
        return;
    }
    let keep_going = apply(sim, run, lane);
    let l = &mut sim.runs[run as usize].lanes[lane as usize];
    l.i += 1;
    if keep_going && l.i < l.steps.len() {
        let d = duration(sim, run, lane);
        sim.q.push(
            sim.now + d,
            Ev::Lane {
                run,
                lane,
                generation,
            },
        );
        return;
    }
    finish_lane(sim, run, lane);
}

fn finish_lane(sim: &mut Sim, run: u32, lane: u32) {
    let l = &mut sim.runs[run as usize].lanes[lane as usize];
    if l.done {
        return;
    }
    l.done = true;
    let slot = l.slot;
    let stopped = std::mem::replace(&mut l.stopped, false);
    if let Some(s) = slot {
        sim.slots[s as usize].busy = false;
        if stopped {
            let svc = sim.slots[s as usize].service;
            if let Some(n) = sim.runs[run as usize].stopped.get_mut(&svc) {
                *n = n.saturating_sub(1);
            }
        }
    }
    let r = &mut sim.runs[run as usize];
    r.open = r.open.saturating_sub(1);
    if r.open == 0 {
        r.wave += 1;
        start_wave(sim, run);
    }
}

/// Drops the lanes still waiting out a `recreate` grace for `node`: it is back, its member
/// stays.
pub fn abort_grace_for(sim: &mut Sim, node: u32) {
    let mut hit = Vec::new();
    for (r, run) in sim.runs.iter().enumerate() {
        if run.generation != sim.sched_generation {
            continue;
        }
        for (i, l) in run.lanes.iter().enumerate() {
            if !l.done
                && l.lost == Some(node)
                && matches!(
                    l.steps.get(l.i),
                    Some(LaneStep::Engine(Action::WaitGrace { .. }))
                )
            {
                hit.push((r as u32, i as u32));
            }
        }
    }
    for (r, i) in hit {
        sim.log_event(format!(
            "berth: {} is back within the grace period; its member stays",
            sim.node_names[node as usize]
        ));
        finish_lane(sim, r, i);
    }
}

/// Applies the completed step; false ends the lane.
fn apply(sim: &mut Sim, run: u32, lane: u32) -> bool {
    let (slot, step, lost) = {
        let l = &sim.runs[run as usize].lanes[lane as usize];
        (l.slot, l.steps[l.i].clone(), l.lost)
    };
    let dataset = slot.and_then(|s| sim.slots[s as usize].dataset);
    let action = match step {
        LaneStep::PreCopy => {
            if let Some(d) = dataset {
                sim.metrics.bytes_moved += sim.datasets[d as usize].size_bytes;
            }
            return true;
        }
        LaneStep::Engine(a) => a,
    };
    match action {
        Action::Fence { epoch, .. } => {
            if let Some(d) = dataset {
                let ds = &mut sim.datasets[d as usize];
                ds.epoch = ds.epoch.max(epoch);
                sim.metrics.fences += 1;
            }
            true
        }
        Action::StopTask { node } => {
            let Some(s) = slot else { return true };
            let Some(n) = sim.node_index(node.as_str()) else {
                return true;
            };
            let victims: Vec<u32> = sim.slots[s as usize]
                .tasks
                .iter()
                .copied()
                .filter(|&t| sim.tasks[t as usize].node == n && sim.tasks[t as usize].desired)
                .collect();
            for t in victims {
                sim.retire_task(t);
            }
            if sim.runs[run as usize].drain {
                let svc = sim.slots[s as usize].service;
                let budget = sim.scn.services[svc as usize].policy.max_unavailable;
                let r = &mut sim.runs[run as usize];
                r.lanes[lane as usize].stopped = true;
                let n = r.stopped.entry(svc).or_default();
                *n += 1;
                let n = *n;
                if n > budget && sim.policy == PolicyKind::Berth {
                    let msg = format!(
                        "drain stopped {n} slots of {} at once (berth.max-unavailable={budget})",
                        sim.scn.services[svc as usize].name
                    );
                    sim.fail("budget", msg);
                }
            }
            true
        }
        Action::WaitGrace { .. } => {
            // Still waiting means the node did not come back (a return aborts the lane).
            lost.is_none_or(|n| {
                sim.nodes[n as usize].berth_down || sim.nodes[n as usize].swarm_down
            })
        }
        Action::ChooseTarget { .. } => true,
        Action::MoveDataset { to, copy, .. } => {
            let (Some(d), Some(to)) = (dataset, sim.node_index(to.as_str())) else {
                return false;
            };
            sim.metrics.moves += 1;
            let c = if copy {
                let src = sim.datasets[d as usize].current;
                let len = src.map(|c| sim.copies[c as usize].len).unwrap_or(0);
                let new = sim.new_copy(d, Some(to), len);
                if let Some(src) = src
                    && src != new
                {
                    sim.copies[src as usize].revoked = true;
                }
                let bytes = move_bytes(sim, run, lane, Some(d));
                sim.metrics.bytes_moved += bytes;
                new
            } else {
                sim.new_copy(d, None, 0)
            };
            sim.datasets[d as usize].current = Some(c);
            sim.runs[run as usize].lanes[lane as usize].copy = Some(c);
            true
        }
        Action::PromoteStandby { to, .. } => {
            let (Some(d), Some(to)) = (dataset, sim.node_index(to.as_str())) else {
                return false;
            };
            let sb = sim.datasets[d as usize].standby;
            let ok = sb.is_some_and(|c| {
                let c = &sim.copies[c as usize];
                c.alive && c.node == Some(to)
            });
            let Some(sb) = sb.filter(|_| ok) else {
                sim.log_event(format!(
                    "berth: standby of {} is not on {}: lane dropped",
                    sim.datasets[d as usize].name, sim.node_names[to as usize]
                ));
                if let Some(x) = lost {
                    sim.retry.insert(x);
                    sim.q.push(sim.now, Ev::Retry);
                }
                return false;
            };
            sim.metrics.moves += 1;
            let ds = &mut sim.datasets[d as usize];
            ds.current = Some(sb);
            ds.unreplicated.clear();
            ds.standby = None;
            let svc = ds.service;
            // A new standby elsewhere, usable once it has resynced.
            if let Some(n) = sim.pick_standby(svc, to) {
                let len = sim.copies[sb as usize].len;
                let c = sim.new_copy(d, Some(n), len);
                let size = sim.datasets[d as usize].size_bytes;
                sim.copies[c as usize].ready_at =
                    sim.now + transfer_ms(size, sim.scn.berth.move_bandwidth);
                sim.metrics.bytes_moved += size;
                sim.datasets[d as usize].standby = Some(c);
            }
            sim.runs[run as usize].lanes[lane as usize].copy = Some(sb);
            true
        }
        Action::RecreateDataset { node, .. } => {
            let (Some(d), Some(n)) = (dataset, sim.node_index(node.as_str())) else {
                return false;
            };
            sim.metrics.moves += 1;
            let c = sim.new_copy(d, Some(n), 0);
            sim.datasets[d as usize].current = Some(c);
            sim.runs[run as usize].lanes[lane as usize].copy = Some(c);
            true
        }
        Action::StartTask { node } => {
            let Some(s) = slot else { return false };
            start(sim, run, lane, s, node.as_str());
            false
        }
        Action::RevokeStale { node, .. } => {
            let (Some(d), Some(s), Some(n)) = (dataset, slot, sim.node_index(node.as_str())) else {
                return true;
            };
            let current = sim.datasets[d as usize].current;
            for (i, c) in sim.copies.iter_mut().enumerate() {
                if c.dataset == d && c.node == Some(n) && Some(i as u32) != current {
                    c.revoked = true;
                }
            }
            let victims: Vec<u32> = sim.slots[s as usize]
                .tasks
                .iter()
                .copied()
                .filter(|&t| sim.tasks[t as usize].node == n)
                .collect();
            for t in victims {
                sim.retire_task(t);
            }
            true
        }
        Action::Unfence { node } => {
            if let Some(n) = sim.node_index(node.as_str()) {
                sim.nodes[n as usize].fenced = false;
            }
            true
        }
        Action::WaitForOperator { reason }
        | Action::WaitForNode { reason, .. }
        | Action::Pending { reason } => {
            if let Some(s) = slot {
                let sl = &sim.slots[s as usize];
                let msg = format!(
                    "{} slot {} waits: {reason}",
                    sim.scn.services[sl.service as usize].name, sl.slot
                );
                sim.log_event(msg);
            }
            false
        }
    }
}

/// `start-task`: the new holder mounts the copy the lane prepared, or — for a plain restart
/// (node back) — the dataset's current copy if it is on that node. A `move` slot is never
/// started on an empty volume while its data exists elsewhere.
fn start(sim: &mut Sim, run: u32, lane: u32, s: u32, node: &str) {
    let Some(n) = sim.node_index(node) else {
        return;
    };
    let node = sim.node_names[n as usize].clone();
    let node = node.as_str();
    let rt = &sim.nodes[n as usize];
    if !rt.in_contact() || rt.berth_down || rt.swarm_down {
        sim.log_event(format!("start on {node} dropped: the node is gone"));
        if let Some(x) = sim.runs[run as usize].lanes[lane as usize].lost {
            sim.retry.insert(x);
            // Once this lane has released the slot (same instant, later in the queue).
            sim.q.push(sim.now, Ev::Retry);
        }
        return;
    }
    let mut copy = sim.runs[run as usize].lanes[lane as usize].copy;
    if let Some(d) = sim.slots[s as usize].dataset {
        if copy.is_none() {
            let ds = &sim.datasets[d as usize];
            let current = ds.current.filter(|&c| {
                let c = &sim.copies[c as usize];
                c.alive && !c.revoked && (c.node.is_none() || c.node == Some(n))
            });
            let self_rep = sim.services[ds.service as usize].self_replicating;
            copy = match current {
                Some(c) => Some(c),
                None if self_rep => {
                    // A member whose disk is gone rejoins empty and resyncs.
                    let c = sim.new_copy(d, Some(n), 0);
                    Some(c)
                }
                None => {
                    let elsewhere = sim.data_exists_elsewhere(d);
                    if elsewhere {
                        let msg = format!(
                            "{}: refusing to start on {node} without its data",
                            sim.datasets[d as usize].name
                        );
                        sim.log_event(msg);
                        return;
                    }
                    // The data is physically gone (disk lost): nothing better exists.
                    let c = sim.new_copy(d, Some(n), 0);
                    Some(c)
                }
            };
        }
        let self_rep = sim.services[sim.datasets[d as usize].service as usize].self_replicating;
        if let Some(c) = copy
            && !self_rep
            && sim.copies[c as usize].len == 0
            && sim.datasets[d as usize].acked > 0
            && sim.data_exists_elsewhere(d)
        {
            sim.metrics.empty_volume_starts += 1;
            if sim.policy == PolicyKind::Berth {
                let msg = format!(
                    "{} would start on an empty volume on {node} while its data exists",
                    sim.datasets[d as usize].name
                );
                sim.fail("no-empty-volume", msg);
            }
        }
    }
    sim.retire_slot_tasks(s);
    let t = sim.add_task(s, n, copy, TaskState::Running);
    let latency = sim.scn.berth.start_latency;
    sim.tasks[t as usize].started = sim.now.saturating_sub(latency);
    if let Some(c) = copy {
        // A recreated member resyncs from its peers first.
        let d = sim.copies[c as usize].dataset;
        let svc = sim.datasets[d as usize].service;
        if sim.services[svc as usize].self_replicating {
            let max = sim.service_max_len(svc);
            if sim.copies[c as usize].len < max {
                let size = sim.datasets[d as usize].size_bytes;
                let slow = Ms::from(sim.nodes[n as usize].slow);
                let done = sim.now + transfer_ms(size, sim.scn.berth.move_bandwidth) * slow;
                sim.copies[c as usize].ready_at = done;
                sim.copies[c as usize].len = max;
                sim.metrics.bytes_moved += size;
                sim.q.push(done, Ev::Resynced { copy: c });
            }
        }
    }
    let sl = &sim.slots[s as usize];
    let msg = format!(
        "{} slot {} running on {node}",
        sim.scn.services[sl.service as usize].name, sl.slot
    );
    sim.log_event(msg);
}
