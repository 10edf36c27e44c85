//! Berth's rescheduling, as `berth run --rebalance-auto` does it: at every controller pass
//! (`[rebalance] resync`) the quiet window starts again if a failover runs or a node joined,
//! left or changed state; once it has passed, the engine's planner
//! (`rebalance::plan_rebalance`) proposes moves within the budget and the executor carries
//! them out (`rebalance::move_steps`, `Driver::run_moves`) with the failover's epoch-fenced
//! commands, which [`crate::backend`] performs with their modelled durations. The next round
//! waits a whole quiet window again, as the daemon's does.
//!
//! `berth-move-all` plans the same way but without budgets: no move limit, no limit in flight,
//! and every service's `berth.max-unavailable` raised to its replicas, so every proposed move
//! runs in one wave.
//!
//! The window's rule mirrors `daemon/src/controller/rebalance.rs` (`Rebalancer::saw` and
//! `due`), which lives in the daemon, not the engine; the plan and the moves are the engine's.

use berth_scheduler::executor::{Actor, RunKind};
use berth_scheduler::model::labels::MAX_UNAVAILABLE;
use berth_scheduler::model::{Cluster, Mode};
use berth_scheduler::rebalance::{Budget, move_steps, plan_rebalance};

use crate::event::Ev;
use crate::policy_kind::PolicyKind;
use crate::state::Sim;

/// One controller pass; the next is scheduled `resync` later.
pub fn pass(sim: &mut Sim) {
    let Some(r) = sim.scn.rebalance.as_ref() else {
        return;
    };
    let (resync, quiet) = (r.resync, r.quiet);
    sim.q.push(sim.now + resync, Ev::RebalancePass);
    // `berth run` makes no pass without its leader, the swarm's managers or the control service.
    if !sim.quorum || !sim.scheduler_up || !sim.control_up {
        return;
    }
    let now = sim.now;
    if let Some(run) = sim.resched.run
        && !sim.driver.state().runs.contains_key(&run)
    {
        sim.resched.run = None;
        sim.resched.quiet_since = Some(now);
        sim.resched.targets.clear();
        sim.resched.stopped.clear();
    }
    let failover = sim
        .driver
        .state()
        .runs
        .values()
        .any(|r| r.kind != RunKind::Rebalance);
    sim.view(true);
    let nodes: Vec<_> = sim
        .view_berth
        .nodes
        .iter()
        .map(|n| (n.state, n.availability))
        .collect();
    let rt = &mut sim.resched;
    if failover || nodes != rt.nodes || rt.quiet_since.is_none() {
        rt.quiet_since = Some(now);
    }
    rt.nodes = nodes;
    let due = rt.run.is_none() && rt.quiet_since.is_some_and(|s| now - s >= quiet);
    if !due {
        return;
    }
    let move_all = sim.policy == PolicyKind::BerthMoveAll;
    let budget = budget(sim, move_all);
    let unbounded;
    let cluster: &Cluster = if move_all {
        unbounded = without_unavailability_limit(&sim.view_berth);
        &unbounded
    } else {
        &sim.view_berth
    };
    sim.metrics.engine_calls += 1;
    let plan = match plan_rebalance(cluster, &budget) {
        Ok(p) => p,
        Err(e) => {
            sim.resched.quiet_since = Some(now);
            sim.log_event(format!("rebalance: the engine could not plan: {e}"));
            return;
        }
    };
    if plan.moves.is_empty() {
        // Balanced: the next look is a whole quiet window away.
        sim.resched.quiet_since = Some(now);
        return;
    }
    let steps = move_steps(cluster, &plan);
    let run = sim.driver.run_moves(now, cluster, &steps, Actor::Berth);
    let Some(run) = run else {
        sim.resched.quiet_since = Some(now);
        return;
    };
    sim.resched.run = Some(run);
    sim.resched.out.runs += 1;
    for m in &plan.moves {
        sim.resched.targets.insert(
            (m.service.clone(), m.slot),
            (m.to.as_str().to_string(), m.bytes),
        );
    }
    let label = format!(
        "berth: rebalance, {} moves in {} waves ({} held back)",
        plan.moves.len(),
        plan.waves,
        plan.held.len()
    );
    sim.markers.push((now, label.clone()));
    sim.log_event(label);
    for m in &plan.moves {
        let (from, to) = (sim.display(m.from.as_str()), sim.display(m.to.as_str()));
        sim.log_event(format!(
            "berth: moves {} slot {} {from} → {to} ({}, wave {}): {}",
            m.service,
            m.slot,
            m.mode.as_str(),
            m.wave,
            m.reason
        ));
    }
    sim.pump();
}

fn budget(sim: &Sim, move_all: bool) -> Budget {
    let r = sim.scn.rebalance.as_ref().expect("[rebalance]");
    let base = Budget {
        max_in_flight: r.max_in_flight,
        // The executor does not pace copies: they run at `berth.move_bandwidth` each
        // (`backend.rs`); the plan's own copy-time estimate uses the same rate.
        bytes_per_sec: sim.scn.berth.move_bandwidth,
        max_moves: Some(r.max_moves),
        margin: r.margin,
    };
    if move_all {
        Budget {
            max_in_flight: u32::MAX,
            max_moves: None,
            ..base
        }
    } else {
        base
    }
}

/// The cluster with every service's `berth.max-unavailable` raised to its replicas.
fn without_unavailability_limit(c: &Cluster) -> Cluster {
    let mut c = c.clone();
    for s in &mut c.services {
        let n = match s.mode {
            Mode::Replicated { replicas } => replicas.max(1),
            Mode::Global => 1,
        };
        s.labels.insert(MAX_UNAVAILABLE.into(), n.to_string());
    }
    c
}
