//! The planner proper: replays the engine on the cluster as it is after the event, then turns
//! each affected slot's new placement (or pending reason) into steps, by failover mode and
//! storage backend.

use std::collections::BTreeMap;

use crate::model::FENCED_LABEL;
use crate::model::{
    Availability, Backend, Cluster, FailoverMode, Mode, NodeId, NodeState, Stateful,
};
use crate::schedule::{self, DatasetAction, Placement, Plan, Prepared};

use super::{Action, Event, FailoverError, FailoverPlan, Step};

pub fn plan_failover(cluster: &Cluster, event: &Event) -> Result<FailoverPlan, FailoverError> {
    let before = Prepared::new(cluster)?;
    let x = event.node();
    if before.cluster.node(x).is_none() {
        return Err(FailoverError::UnknownNode(x.clone()));
    }
    let steps = match event {
        Event::NodeDown(_) => node_down(&before, x)?,
        Event::NodeDrained(_) => node_drained(&before, x)?,
        Event::NodeBack(_) => node_back(&before, x)?,
    };
    Ok(FailoverPlan {
        event: event.clone(),
        steps,
    })
}

/// A replicated slot whose task ran on the event's node.
struct Affected {
    service: usize,
    slot: u64,
}

fn affected(prep: &Prepared, x: &NodeId) -> Vec<Affected> {
    let mut out: Vec<Affected> = prep
        .cluster
        .tasks
        .iter()
        .filter(|t| t.is_active() && t.node_id.as_ref() == Some(x))
        .filter_map(|t| {
            let si = *prep.service_by_id.get(&t.service_id)?;
            let replicated = matches!(prep.cluster.services[si].mode, Mode::Replicated { .. });
            Some(Affected {
                service: si,
                slot: t.slot.filter(|_| replicated)?,
            })
        })
        .collect();
    let rank: BTreeMap<usize, usize> = prep
        .order
        .sequence
        .iter()
        .enumerate()
        .map(|(r, s)| (*s, r))
        .collect();
    out.sort_by_key(|a| (rank[&a.service], a.slot));
    out.dedup_by_key(|a| (a.service, a.slot));
    out
}

fn with_node(prep: &Prepared, x: &NodeId, f: impl FnOnce(&mut crate::model::Node)) -> Cluster {
    let mut c = prep.cluster.clone();
    if let Some(n) = c.nodes.iter_mut().find(|n| &n.id == x) {
        f(n);
    }
    c
}

fn new_placement<'p>(plan: &'p Plan, service: &str, slot: u64) -> Option<&'p Placement> {
    plan.placements
        .iter()
        .find(|p| p.new && p.service == service && p.slot == Some(slot))
}

fn pending_reason(plan: &Plan, service: &str, slot: u64) -> String {
    plan.pending
        .iter()
        .find(|p| p.service == service && p.slot == Some(slot))
        .map(|p| p.message())
        .unwrap_or_else(|| "no placement".to_string())
}

fn why(p: &Placement) -> String {
    match &p.score {
        Some(card) => {
            let parts: Vec<String> = card
                .breakdown()
                .iter()
                .map(|s| format!("{} {}", s.plugin, s.normalized))
                .collect();
            format!("highest score: {}", parts.join(", "))
        }
        None => "already there".to_string(),
    }
}

/// The slot's dataset name, its current epoch and its backend (the label's default for a
/// dataset Berth has no record of yet).
fn slot_dataset(prep: &Prepared, st: &Stateful, slot: u64) -> (String, u64, Backend) {
    let name = st.volume_for_slot(slot);
    let (epoch, backend) = prep
        .datasets
        .get(&name)
        .map(|d| (d.epoch, d.backend))
        .unwrap_or((0, st.backend));
    (name, epoch, backend)
}

fn step(wave: u32, service: &str, slot: Option<u64>, action: Action) -> Step {
    Step {
        wave,
        service: Some(service.to_string()),
        slot,
        action,
    }
}

fn node_down(before: &Prepared, x: &NodeId) -> Result<Vec<Step>, FailoverError> {
    let after = Prepared::new(&with_node(before, x, |n| n.state = NodeState::Down))?;
    let (plan, _) = schedule::run(&after, None);
    let mut steps = Vec::new();
    for a in affected(before, x) {
        let service = &before.cluster.services[a.service];
        let name = service.name.as_str();
        let policy = &before.policies[a.service];
        let wave = before.order.depth[a.service];
        let slot = Some(a.slot);
        let target = new_placement(&plan, name, a.slot);
        let mut push = |action| steps.push(step(wave, name, slot, action));
        let Some(st) = &policy.stateful else {
            match target {
                Some(p) => {
                    push(Action::ChooseTarget {
                        node: p.node.clone(),
                        why: why(p),
                    });
                    push(Action::StartTask {
                        node: p.node.clone(),
                    });
                }
                None => push(Action::Pending {
                    reason: pending_reason(&plan, name, a.slot),
                }),
            }
            continue;
        };
        let (dataset, epoch, backend) = slot_dataset(before, st, a.slot);
        let fence = Action::Fence {
            dataset: dataset.clone(),
            node: x.clone(),
            epoch: epoch + 1,
        };
        match (st.failover, backend, target) {
            (FailoverMode::Manual, _, _) => push(Action::WaitForOperator {
                reason: pending_reason(&plan, name, a.slot),
            }),
            // Fencing a local dataset would lock out the only copy: wait for the node instead.
            (FailoverMode::Move, Backend::Local, _) => push(Action::WaitForNode {
                node: x.clone(),
                reason: pending_reason(&plan, name, a.slot),
            }),
            (_, _, None) => {
                push(fence);
                push(Action::Pending {
                    reason: pending_reason(&plan, name, a.slot),
                });
            }
            (mode, backend, Some(p)) => {
                let to = p.node.clone();
                // The old task is stopped before the data is handed over, but only once the
                // fence has gone through — that is, once the node's lease has ended: a node that
                // comes back within its lease (a link that flaps for a few seconds) keeps its
                // task running, untouched, and the plan is dropped. Safety does not rest on the
                // stop: from the lease's end the node's data path admits no write
                // (ARCHITECTURE.md, "Fencing"); the stop makes Swarm tidy the old task up. A
                // `recreate` member is stopped only once its grace is over: a node back in time
                // keeps it.
                let stop = Action::StopTask { node: x.clone() };
                push(fence);
                if mode == FailoverMode::Recreate {
                    push(Action::WaitGrace {
                        seconds: st.recreate_grace_secs,
                    });
                } else {
                    push(stop.clone());
                }
                push(Action::ChooseTarget {
                    node: to.clone(),
                    why: why(p),
                });
                if mode == FailoverMode::Recreate {
                    push(stop);
                }
                push(match (mode, backend) {
                    (FailoverMode::Recreate, _) => Action::RecreateDataset {
                        dataset,
                        node: to.clone(),
                        epoch: epoch + 1,
                    },
                    (_, Backend::Replicated) => Action::PromoteStandby {
                        dataset,
                        from: x.clone(),
                        to: to.clone(),
                        epoch: epoch + 1,
                    },
                    _ => Action::MoveDataset {
                        dataset,
                        from: x.clone(),
                        to: to.clone(),
                        epoch: epoch + 1,
                        backend,
                        copy: false,
                    },
                });
                push(Action::StartTask { node: to });
            }
        }
    }
    Ok(steps)
}

fn node_drained(before: &Prepared, x: &NodeId) -> Result<Vec<Step>, FailoverError> {
    let affected = affected(before, x);
    let mut cluster = with_node(before, x, |n| n.availability = Availability::Drain);
    // The node is alive, so every dataset on it can move (even `local`, by copy): free each
    // affected slot's dataset for placement by recording it without a primary.
    for a in &affected {
        if let Some(st) = &before.policies[a.service].stateful {
            let name = st.volume_for_slot(a.slot);
            if let Some(d) = before.datasets.get(&name) {
                cluster.datasets.retain(|e| e.name != name);
                cluster.datasets.push(crate::model::Dataset {
                    primary: None,
                    ..d.clone()
                });
            }
        }
    }
    let after = Prepared::new(&cluster)?;
    let (plan, _) = schedule::run(&after, None);

    // Waves: dependency depth first; within a depth, each service moves at most
    // `max-unavailable` slots per wave.
    let mut per_service: BTreeMap<usize, u32> = BTreeMap::new();
    let mut chunks_at_depth: BTreeMap<u32, u32> = BTreeMap::new();
    for a in &affected {
        let n = per_service.entry(a.service).or_default();
        *n += 1;
        let chunks = n.div_ceil(before.policies[a.service].max_unavailable);
        let d = chunks_at_depth
            .entry(before.order.depth[a.service])
            .or_default();
        *d = (*d).max(chunks);
    }
    let mut base: BTreeMap<u32, u32> = BTreeMap::new();
    let mut next = 0;
    for (depth, chunks) in &chunks_at_depth {
        base.insert(*depth, next);
        next += chunks;
    }

    let mut seen: BTreeMap<usize, u32> = BTreeMap::new();
    let mut steps = Vec::new();
    for a in affected {
        let service = &before.cluster.services[a.service];
        let name = service.name.as_str();
        let policy = &before.policies[a.service];
        let k = seen.entry(a.service).or_default();
        let wave = base[&before.order.depth[a.service]] + *k / policy.max_unavailable;
        *k += 1;
        let slot = Some(a.slot);
        let mut push = |action| steps.push(step(wave, name, slot, action));
        let Some(p) = new_placement(&plan, name, a.slot) else {
            // Nowhere to go: a stateful task keeps running on the draining node rather than
            // stopping with its data stranded.
            push(Action::Pending {
                reason: pending_reason(&plan, name, a.slot),
            });
            continue;
        };
        let to = p.node.clone();
        push(Action::ChooseTarget {
            node: to.clone(),
            why: why(p),
        });
        push(Action::StopTask { node: x.clone() });
        if let Some(st) = &policy.stateful {
            let (dataset, epoch, backend) = slot_dataset(before, st, a.slot);
            push(Action::Fence {
                dataset: dataset.clone(),
                node: x.clone(),
                epoch: epoch + 1,
            });
            // A drain is the operator's own request, so `manual` services move too.
            push(if st.failover == FailoverMode::Recreate {
                Action::RecreateDataset {
                    dataset,
                    node: to.clone(),
                    epoch: epoch + 1,
                }
            } else {
                Action::MoveDataset {
                    dataset,
                    from: x.clone(),
                    to: to.clone(),
                    epoch: epoch + 1,
                    backend,
                    copy: backend != Backend::Shared,
                }
            });
        }
        push(Action::StartTask { node: to });
    }
    Ok(steps)
}

fn node_back(before: &Prepared, x: &NodeId) -> Result<Vec<Step>, FailoverError> {
    let fenced = before.cluster.node(x).is_some_and(|n| n.is_fenced());
    let after = Prepared::new(&with_node(before, x, |n| {
        n.state = NodeState::Ready;
        n.labels.remove(FENCED_LABEL);
    }))?;
    let mut steps = Vec::new();
    if fenced {
        steps.push(Step {
            wave: 0,
            service: None,
            slot: None,
            action: Action::Unfence { node: x.clone() },
        });
    }
    // Copies on the returning node whose dataset moved on while it was away.
    for a in affected(before, x) {
        let name = &before.cluster.services[a.service].name;
        let Some(st) = &before.policies[a.service].stateful else {
            continue;
        };
        let dataset = st.volume_for_slot(a.slot);
        if let Some(d) = before.datasets.get(&dataset)
            && d.primary.as_ref().is_some_and(|p| p != x)
        {
            steps.push(step(
                0,
                name,
                Some(a.slot),
                Action::StopTask { node: x.clone() },
            ));
            steps.push(step(
                0,
                name,
                Some(a.slot),
                Action::RevokeStale {
                    dataset,
                    node: x.clone(),
                    epoch: d.epoch,
                },
            ));
        }
    }
    // Slots that waited for this node (manual, local data) or for room can start now. A slot
    // whose own node is still lost gets the dataset steps the plan's change implies.
    let (plan, _) = schedule::run(&after, None);
    for p in plan.new_placements() {
        let Some(si) = after
            .cluster
            .services
            .iter()
            .position(|s| s.name == p.service)
        else {
            continue;
        };
        let wave = 1 + after.order.depth[si];
        let change = plan
            .datasets
            .iter()
            .find(|d| d.service == p.service && Some(d.slot) == p.slot);
        let mut actions = vec![Action::ChooseTarget {
            node: p.node.clone(),
            why: why(p),
        }];
        if let Some(d) = change {
            let backend = after
                .datasets
                .get(&d.dataset)
                .map(|x| x.backend)
                .unwrap_or_default();
            let (dataset, to, epoch) = (d.dataset.clone(), p.node.clone(), d.epoch);
            let fence = |node: &NodeId| Action::Fence {
                dataset: dataset.clone(),
                node: node.clone(),
                epoch,
            };
            // The slot's old task, on the node its data leaves, stops before the data moves
            // (as in a node-down plan).
            let stop = |node: &NodeId| Action::StopTask { node: node.clone() };
            match &d.action {
                DatasetAction::Keep if before.datasets.get(&dataset).is_some_and(|x| x.fenced) => {
                    // Fenced away from its holder by a failover that never assigned it (no
                    // target, a lane lost, a `recreate` member kept through its grace): no
                    // node may mount it until an assignment at the fence's epoch, so the slot
                    // starts only once its holder is assigned it again there. The fence is a
                    // replay of the one made; the data stays where it is (move to itself).
                    let from = after
                        .datasets
                        .get(&dataset)
                        .and_then(|x| x.primary.clone())
                        .unwrap_or_else(|| to.clone());
                    let epoch = epoch + 1;
                    actions.insert(
                        0,
                        Action::Fence {
                            dataset: dataset.clone(),
                            node: from.clone(),
                            epoch,
                        },
                    );
                    actions.push(Action::MoveDataset {
                        dataset: dataset.clone(),
                        from,
                        to,
                        epoch,
                        backend,
                        copy: false,
                    });
                }
                DatasetAction::Create | DatasetAction::Keep => {}
                DatasetAction::Move { from } => {
                    actions.insert(0, fence(from));
                    actions.push(stop(from));
                    actions.push(Action::MoveDataset {
                        dataset: dataset.clone(),
                        from: from.clone(),
                        to,
                        epoch,
                        backend,
                        copy: false,
                    });
                }
                DatasetAction::Promote { from } => {
                    actions.insert(0, fence(from));
                    actions.push(stop(from));
                    actions.push(Action::PromoteStandby {
                        dataset: dataset.clone(),
                        from: from.clone(),
                        to,
                        epoch,
                    });
                }
                DatasetAction::Recreate { lost } => {
                    actions.insert(0, fence(lost));
                    actions.push(stop(lost));
                    actions.push(Action::RecreateDataset {
                        dataset: dataset.clone(),
                        node: to,
                        epoch,
                    });
                }
            }
        }
        actions.push(Action::StartTask {
            node: p.node.clone(),
        });
        steps.extend(
            actions
                .into_iter()
                .map(|a| step(wave, &p.service, p.slot, a)),
        );
    }
    Ok(steps)
}
