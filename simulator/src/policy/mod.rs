//! The three reactions to the same faults, side by side:
//!
//! - `swarm_default`: what Swarm does — after a node is DOWN and the restart delay, every
//!   missing slot is placed anew (the engine with `berth.*` labels stripped is exactly Swarm's
//!   filters and spread), on whatever volume the new node has: for node-local data, an empty
//!   one.
//! - `manual`: Kubernetes StatefulSet behaviour — stateless services as Swarm; a stateful slot
//!   waits for a human, who after `operator_response` runs Berth's plan by hand (fencing at
//!   the storage, but no holder leases: a cut-off old holder keeps writing).
//! - `berth`: Berth's own detector, then the engine's executor (`berth_scheduler::executor`)
//!   running `failover::plan_failover` plans, its commands carried out by [`crate::backend`]
//!   with modelled durations; holders self-fence when their lease runs out.
//!
//! Architecture invariant: no policy decides a placement itself — every node choice comes
//! from `berth_scheduler::schedule::plan` or `berth_scheduler::failover::plan_failover`.

pub mod berth;
pub mod manual;
pub mod rebalance;
pub mod swarm_default;
pub mod swarm_force;

pub use crate::policy_kind::PolicyKind;
use crate::state::Sim;

/// The managers marked a node DOWN.
pub fn on_swarm_down(sim: &mut Sim, node: u32) {
    match sim.policy {
        PolicyKind::SwarmDefault | PolicyKind::SwarmForce => swarm_default::on_down(sim, node),
        PolicyKind::Manual => manual::on_down(sim, node),
        // Berth acts on its own, faster detector.
        PolicyKind::Berth | PolicyKind::BerthMoveAll => {}
    }
}

/// A node reaches the managers again.
pub fn on_node_back(sim: &mut Sim, node: u32, was_swarm_down: bool) {
    match sim.policy {
        PolicyKind::SwarmDefault | PolicyKind::SwarmForce => swarm_default::on_back(sim, node),
        PolicyKind::Manual => manual::on_back(sim, node, was_swarm_down),
        PolicyKind::Berth | PolicyKind::BerthMoveAll => berth::on_back(sim, node),
    }
}

pub fn on_drain(sim: &mut Sim, node: u32) {
    match sim.policy {
        PolicyKind::SwarmDefault | PolicyKind::SwarmForce => swarm_default::on_drain(sim),
        PolicyKind::Manual => manual::on_drain(sim, node),
        PolicyKind::Berth | PolicyKind::BerthMoveAll => berth::on_drain(sim, node),
    }
}

/// Quorum regained or Berth's scheduler restarted: level-triggered catch-up.
pub fn on_control_plane_back(sim: &mut Sim) {
    match sim.policy {
        PolicyKind::SwarmDefault | PolicyKind::SwarmForce | PolicyKind::Manual => {
            let at = sim.now + sim.scn.swarm.restart_delay;
            sim.q.push(at, crate::event::Ev::SwarmReconcile);
        }
        PolicyKind::Berth | PolicyKind::BerthMoveAll => berth::catch_up(sim),
    }
}
