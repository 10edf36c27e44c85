//! Invariants, checked after every event that can change who writes where.
//!
//! Which are fatal depends on the policy, on purpose: the point of running Swarm's behaviour is
//! to *show* its double writers and empty volumes, so for `swarm-default` and `manual` they
//! are counted, not fatal. For `berth` they stop the run:
//!
//! | invariant | swarm-default | manual | berth |
//! |---|---|---|---|
//! | a running task satisfies its service's constraints | fatal | fatal | fatal |
//! | at most one writer per dataset (self-replicating services excepted: their own protocol elects one primary) | counted | counted | fatal |
//! | a drain stops at most `berth.max-unavailable` slots of a service at once | — | — | fatal |
//! | a `move` slot never starts on an empty volume while its data exists elsewhere | counted | counted | fatal |
//!
//! Constraints are checked when a task starts running: node labels do not change during a
//! run (only Berth's own `berth.fenced`, which no constraint may name), so that is the same as
//! checking every running task after every event.

use crate::state::Sim;
pub use crate::violation::Violation;

pub fn after_event(sim: &mut Sim) {
    let now = sim.now;
    let fatal = sim.policy.is_berth();
    for d in 0..sim.datasets.len() {
        let ds = &sim.datasets[d];
        if sim.services[ds.service as usize].self_replicating {
            continue;
        }
        let double = ds.writers.len() >= 2;
        match (double, ds.double_since) {
            (true, None) => {
                let nodes: Vec<String> = ds
                    .writers
                    .iter()
                    .map(|&t| sim.node_names[sim.tasks[t as usize].node as usize].clone())
                    .collect();
                let msg = format!(
                    "dataset {} has {} writers: {}",
                    ds.name,
                    nodes.len(),
                    nodes.join(", ")
                );
                sim.datasets[d].double_since = Some(now);
                sim.metrics.double_writer_windows += 1;
                sim.log_event(format!("double writer opens: {msg}"));
                if fatal {
                    sim.fail("single-writer", msg);
                }
            }
            (false, Some(since)) => {
                sim.datasets[d].double_since = None;
                sim.metrics.double_writer_ms += now - since;
                sim.double_log.push((d as u32, since, now));
            }
            _ => {}
        }
    }
}
