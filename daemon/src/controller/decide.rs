//! What to do to the slot services, decided from what was observed and what the engine
//! planned. Pure: the engine chooses nodes (`schedule::plan`) and rollout order
//! (`rollout::next`); this turns those choices into Swarm service operations. Everything here
//! is idempotent: deciding again on the world the commands produced yields nothing.

use std::collections::BTreeMap;

use berth_scheduler::model::{Cluster, TaskState};
use berth_scheduler::rollout::{self, SlotState};
use berth_scheduler::schedule::{Plan, PlanError};
use bollard_stubs::models::ServiceSpec;

use crate::slots::{Observed, Template, quiesced_template, slot_spec};

/// One operation on a Swarm service.
#[derive(Debug, Clone)]
pub enum Command {
    /// A template still runs tasks of its own: scale it to 0 and record its slot count.
    Quiesce {
        template: String,
        id: String,
        version: u64,
        spec: ServiceSpec,
    },
    /// A slot has no service yet: create it on the node the engine placed it.
    Create {
        template: String,
        slot: u64,
        node: String,
        spec: ServiceSpec,
    },
    /// A slot's service runs an older template: update it in place (same node).
    Rollout {
        template: String,
        slot: u64,
        id: String,
        version: u64,
        spec: ServiceSpec,
    },
    /// A slot service whose template is gone, or whose slot is beyond the template's count.
    /// Its volume stays: Berth never removes a dataset.
    Remove {
        name: String,
        id: String,
        why: &'static str,
    },
}

impl Command {
    /// The template slot whose service this command changes, if it is one slot's.
    pub fn slot(&self) -> Option<(&str, u64)> {
        match self {
            Command::Create { template, slot, .. } | Command::Rollout { template, slot, .. } => {
                Some((template.as_str(), *slot))
            }
            Command::Quiesce { .. } | Command::Remove { .. } => None,
        }
    }

    /// One line for logs and `--dry-run`.
    pub fn describe(&self) -> String {
        match self {
            Command::Quiesce { template, .. } => {
                format!("scale template {template} to 0 (its slots run as their own services)")
            }
            Command::Create {
                template,
                slot,
                node,
                ..
            } => format!("create {template}-{slot} on node {node}"),
            Command::Rollout { template, slot, .. } => {
                format!("update {template}-{slot} to the template's new spec")
            }
            Command::Remove { name, why, .. } => format!("remove {name} ({why}; its volume stays)"),
        }
    }
}

fn available(cluster: &Cluster, template: &Template, slot: u64) -> bool {
    cluster.tasks.iter().any(|t| {
        t.service_id.0 == template.id
            && t.slot == Some(slot)
            && t.state == TaskState::Running
            && t.desired_state == TaskState::Running
    })
}

/// The commands that bring the slot services in line with the templates and the plan.
pub fn decide(
    observed: &Observed,
    cluster: &Cluster,
    plan: &Plan,
) -> Result<Vec<Command>, PlanError> {
    let mut out = Vec::new();
    for t in observed.templates.values() {
        if t.own_replicas > 0 {
            out.push(Command::Quiesce {
                template: t.name.clone(),
                id: t.id.clone(),
                version: t.version,
                spec: quiesced_template(t),
            });
        }
    }
    for s in observed.slots.values() {
        let why = match observed.owner_of(s) {
            None => "its template is gone",
            Some(t) if s.slot > t.slots => "beyond the template's slot count",
            Some(_) => continue,
        };
        out.push(Command::Remove {
            name: s.name.clone(),
            id: s.id.clone(),
            why,
        });
    }
    let by_name: BTreeMap<&str, &Template> = observed
        .templates
        .values()
        .map(|t| (t.name.as_str(), t))
        .collect();
    for p in plan.new_placements() {
        let (Some(t), Some(slot)) = (by_name.get(p.service.as_str()), p.slot) else {
            continue;
        };
        if observed.slots.contains_key(&(t.id.clone(), slot)) {
            continue;
        }
        out.push(Command::Create {
            template: t.name.clone(),
            slot,
            node: p.node.0.clone(),
            spec: slot_spec(t, slot, &p.node.0),
        });
    }
    let states: Vec<SlotState> = observed
        .slots
        .values()
        .filter_map(|s| {
            let t = observed.owner_of(s).filter(|t| s.slot <= t.slots)?;
            Some(SlotState {
                service: t.name.clone(),
                slot: s.slot,
                outdated: s.hash != t.hash,
                available: available(cluster, t, s.slot),
            })
        })
        .collect();
    for (name, slot) in rollout::next(cluster, &states)? {
        let t = by_name[name.as_str()];
        let s = &observed.slots[&(t.id.clone(), slot)];
        // Same node: a rollout changes what runs, never where (that is a failover's or a
        // drain's business, with its fencing).
        let Some(node) = s.node.as_deref() else {
            continue;
        };
        out.push(Command::Rollout {
            template: t.name.clone(),
            slot,
            id: s.id.clone(),
            version: s.version,
            spec: slot_spec(t, slot, node),
        });
    }
    Ok(out)
}
