//! Kubernetes StatefulSet behaviour: stateless services are rescheduled like Swarm's; a
//! stateful slot on a lost node is not replaced until a human acts. After
//! `manual.operator_response` the operator runs Berth's own plan by hand (so the comparison
//! isolates the waiting), with two differences from Berth: no holder leases (a cut-off old
//! holder of a local or replicated dataset keeps writing), and nothing happens at all if the
//! node came back first.

use berth_scheduler::executor::Actor;
use berth_scheduler::failover::Event;
use berth_scheduler::model::NodeId;

use crate::event::Ev;
use crate::policy::swarm_default;
use crate::state::Sim;

fn hosts_stateful(sim: &Sim, node: u32) -> bool {
    sim.tasks
        .iter()
        .any(|t| t.node == node && t.desired && sim.services[t.service as usize].stateful)
}

/// A human answers after `operator_response`; the generation ties the answer to this outage.
fn page_operator(sim: &mut Sim, node: u32, drain: bool) {
    let generation = sim.nodes[node as usize].generation;
    let at = sim.now + sim.scn.manual.operator_response;
    sim.q.push(
        at,
        Ev::Operator {
            node,
            generation,
            drain,
        },
    );
}

pub fn on_down(sim: &mut Sim, node: u32) {
    swarm_default::on_down(sim, node);
    sim.observe();
    if hosts_stateful(sim, node) {
        page_operator(sim, node, false);
        sim.log_event(format!(
            "manual: operator paged for {}",
            sim.node_names[node as usize]
        ));
    }
}

pub fn on_back(sim: &mut Sim, node: u32, _was_down: bool) {
    swarm_default::on_back(sim, node);
    // The executor keeps what it knows of the node (a `recreate` grace ends with it back).
    sim.observe();
    // The kubelet restarts the node's pods where their volumes are.
    if hosts_stateful(sim, node) || sim.has_missing_slots() {
        let id = NodeId::new(sim.node_ids[node as usize].clone());
        sim.run_plan(Event::NodeBack(id), Actor::Operator);
    }
}

pub fn on_drain(sim: &mut Sim, node: u32) {
    swarm_default::on_drain(sim);
    if hosts_stateful(sim, node) {
        page_operator(sim, node, true);
    }
}

pub fn on_operator(sim: &mut Sim, node: u32, generation: u64, drain: bool) {
    if !sim.quorum {
        // Nothing can be changed without a leader; the operator tries again.
        let at = sim.now + 60_000;
        sim.q.push(
            at,
            Ev::Operator {
                node,
                generation,
                drain,
            },
        );
        return;
    }
    let n = &sim.nodes[node as usize];
    let id = NodeId::new(sim.node_ids[node as usize].clone());
    if drain {
        if n.draining {
            sim.log_event(format!("manual: operator moves stateful tasks off {id}"));
            sim.run_plan(Event::NodeDrained(id), Actor::Operator);
        }
    } else if n.generation == generation && n.swarm_down {
        sim.log_event(format!("manual: operator fails over {id}"));
        sim.run_plan(Event::NodeDown(id), Actor::Operator);
    }
}
