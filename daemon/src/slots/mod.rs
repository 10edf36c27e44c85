//! StatefulSet for Swarm. Swarm cannot pin one replica of a service to one node: a service's
//! constraints apply to all its tasks. So a service labelled `berth.stateful=true` is a
//! **template**, and `berth run` runs it as one Swarm service per slot, `<name>-<slot>`, each
//! with one replica, the template's task spec, the slot's own volume (`berth.volume`) and the
//! constraint `node.id==<node holding the slot's data>`.
//!
//! This module is the pure mapping between the three views:
//! - Swarm's objects ([`SwarmState`]): templates, slot services (labelled [`OWNER`], [`SLOT`],
//!   [`TEMPLATE_HASH`]) and everything else, which Berth never modifies;
//! - the engine's model ([`Observed::cluster`]): each template as one service of
//!   `berth.replicas` slots, whose tasks are the slot services' tasks — so the engine plans,
//!   explains and fails over slots as it would any replicated service's;
//! - the slot services Berth wants ([`slot_spec`]), given the node the engine chose per slot.
//!
//! State that must survive a restart of `berth run` lives on the Swarm objects themselves (the
//! labels above), so a restarted daemon adopts the slot services it finds.

mod datasets;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};

use berth_scheduler::ingest::docker as ingest;
use berth_scheduler::model::labels::{REPLICAS, STATEFUL, VOLUME};
use berth_scheduler::model::{Cluster, Mode, NodeId, Service, ServiceId, Task, TaskState};
use bollard_stubs::models::{
    NetworkAttachmentConfig, Service as DService, ServiceSpec, ServiceSpecMode,
    ServiceSpecModeReplicated, TaskSpecPlacement,
};

use crate::docker::SwarmState;

/// Label on a slot service: the template's service ID.
pub const OWNER: &str = "berth.owner";
/// Label on a slot service: the template's name, for people.
pub const OWNER_NAME: &str = "berth.owner-name";
/// Label on a slot service: its slot.
pub const SLOT: &str = "berth.slot";
/// Label on a slot service: the hash of the template's task spec it was made from; a template
/// whose hash differs (new image, env, …) rolls out to its slots.
pub const TEMPLATE_HASH: &str = "berth.template-hash";
/// Docker's stack label, which slot services must NOT carry (`docker stack deploy --prune`
/// would remove them); Berth copies it into [`STACK`].
const STACK_NAMESPACE: &str = "com.docker.stack.namespace";
/// Label on a slot service: the template's stack, if any.
pub const STACK: &str = "berth.stack";

const SWARM_SLOT: &str = "{{.Task.Slot}}";

/// Why a template cannot be run; reported per template, the others carry on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("template `{name}`: {why}")]
    Invalid { name: String, why: String },
}

/// A `berth.stateful` service that Berth runs as slot services.
#[derive(Debug, Clone)]
pub struct Template {
    pub id: String,
    pub name: String,
    /// The name without its stack prefix (`app_mongo` → `mongo`): the DNS alias stem, so
    /// slot 1 answers as `mongo-1` on the template's networks.
    pub short_name: String,
    pub version: u64,
    /// How many slots: `berth.replicas`, else the template's own replica count.
    pub slots: u64,
    /// The template's own replica count: Berth runs its slots instead, so a template should
    /// have 0 (else Berth scales it to 0 and records the count in `berth.replicas`).
    pub own_replicas: u64,
    pub spec: ServiceSpec,
    pub hash: String,
}

/// A Swarm service Berth made for one slot of a template.
#[derive(Debug, Clone)]
pub struct SlotService {
    pub id: String,
    pub name: String,
    pub version: u64,
    pub owner: String,
    pub slot: u64,
    /// The node its `node.id==` constraint pins it to.
    pub node: Option<String>,
    pub hash: String,
    pub spec: ServiceSpec,
}

/// The swarm seen through Berth's eyes.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// By template service ID.
    pub templates: BTreeMap<String, Template>,
    /// By (owner template ID, slot).
    pub slots: BTreeMap<(String, u64), SlotService>,
    /// Templates Berth cannot run, with why.
    pub invalid: Vec<TemplateError>,
    state: SwarmState,
}

fn labels(s: &DService) -> HashMap<String, String> {
    s.spec
        .as_ref()
        .and_then(|sp| sp.labels.clone())
        .unwrap_or_default()
}

fn labels_of(spec: &ServiceSpec) -> HashMap<String, String> {
    spec.labels.clone().unwrap_or_default()
}

fn version(s: &DService) -> u64 {
    s.version.as_ref().and_then(|v| v.index).unwrap_or(0)
}

fn replicas(spec: &ServiceSpec) -> Option<u64> {
    let m = spec.mode.as_ref()?;
    if m.global.is_some() || m.replicated_job.is_some() || m.global_job.is_some() {
        return None;
    }
    Some(
        m.replicated
            .as_ref()
            .and_then(|r| r.replicas)
            .and_then(|r| u64::try_from(r).ok())
            .unwrap_or(1),
    )
}

/// FNV-1a, 64 bits. Hand-written (six lines) rather than `DefaultHasher`, whose algorithm may
/// change between Rust releases: this hash is stored on Swarm objects, and a different value
/// after an upgrade of Berth would restart every slot.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The hash of what a slot service takes from its template: the task spec (image, env, mounts,
/// resources, …), endpoint and update settings. Through `serde_json::Value`, whose maps are
/// sorted, so Docker's label and option maps hash the same whatever their order.
pub fn template_hash(spec: &ServiceSpec) -> String {
    let parts = serde_json::json!({
        "task": spec.task_template,
        "endpoint": spec.endpoint_spec,
        "update": spec.update_config,
        "networks": spec.networks,
    });
    let canonical = serde_json::to_value(&parts)
        .expect("Docker's models always serialise")
        .to_string();
    format!("{:016x}", fnv1a(canonical.as_bytes()))
}

/// A node removed from the swarm (`docker node rm`) while tasks still name it — Swarm keeps
/// them as `orphaned`, and a slot service may still be pinned to it — is the engine's as a
/// node that is down: its tasks are lost, its slots are failed over, and nothing refuses the
/// whole swarm over a task on an "unknown node".
fn account_for_removed_nodes(nodes: &mut Vec<berth_scheduler::model::Node>, tasks: &[Task]) {
    let known: std::collections::BTreeSet<String> = nodes.iter().map(|n| n.id.0.clone()).collect();
    let gone: std::collections::BTreeSet<&str> = tasks
        .iter()
        .filter_map(|t| t.node_id.as_ref())
        .map(|n| n.0.as_str())
        .filter(|n| !known.contains(*n))
        .collect();
    for id in gone {
        let mut n = berth_scheduler::model::Node::new(id);
        n.hostname = format!("{id} (removed from the swarm)");
        n.state = berth_scheduler::model::NodeState::Down;
        nodes.push(n);
    }
}

fn node_constraint(spec: &ServiceSpec) -> Option<String> {
    spec.task_template
        .as_ref()?
        .placement
        .as_ref()?
        .constraints
        .as_ref()?
        .iter()
        .find_map(|c| {
            let (k, v) = c.split_once("==")?;
            (k.trim() == "node.id").then(|| v.trim().to_string())
        })
}

impl Observed {
    /// Sorts Swarm's services into templates, slot services and the rest.
    pub fn new(state: SwarmState) -> Observed {
        let mut out = Observed::default();
        for s in &state.services {
            let (Some(id), Some(spec)) = (s.id.clone(), s.spec.clone()) else {
                continue;
            };
            let labels = labels(s);
            let name = spec.name.clone().unwrap_or_default();
            if let Some(owner) = labels.get(OWNER) {
                let Some(slot) = labels.get(SLOT).and_then(|v| v.parse().ok()) else {
                    continue; // not one of ours after all: leave it alone
                };
                out.slots.insert(
                    (owner.clone(), slot),
                    SlotService {
                        id,
                        name,
                        version: version(s),
                        owner: owner.clone(),
                        slot,
                        node: node_constraint(&spec),
                        hash: labels.get(TEMPLATE_HASH).cloned().unwrap_or_default(),
                        spec,
                    },
                );
                continue;
            }
            if labels.get(STATEFUL).map(|v| v.trim()) != Some("true") {
                continue;
            }
            let invalid = |why: String| TemplateError::Invalid {
                name: name.clone(),
                why,
            };
            let Some(own) = replicas(&spec) else {
                out.invalid.push(invalid(
                    "a stateful template must be a replicated service".into(),
                ));
                continue;
            };
            let slots = match labels.get(REPLICAS) {
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) => n,
                    Err(_) => {
                        out.invalid.push(invalid(format!(
                            "{REPLICAS}: `{v}` is not a whole number of slots"
                        )));
                        continue;
                    }
                },
                None => own,
            };
            if let Err(why) = volume_mount(&spec, labels.get(VOLUME).map(String::as_str), 1) {
                out.invalid.push(invalid(why));
                continue;
            }
            let short_name = labels
                .get(STACK_NAMESPACE)
                .and_then(|ns| name.strip_prefix(&format!("{ns}_")))
                .unwrap_or(&name)
                .to_string();
            out.templates.insert(
                id.clone(),
                Template {
                    id,
                    hash: template_hash(&spec),
                    name,
                    short_name,
                    version: version(s),
                    slots,
                    own_replicas: own,
                    spec,
                },
            );
        }
        out.state = state;
        out
    }

    pub fn state(&self) -> &SwarmState {
        &self.state
    }

    /// The template a slot service belongs to, if it still exists.
    pub fn owner_of(&self, slot: &SlotService) -> Option<&Template> {
        self.templates.get(&slot.owner)
    }

    /// The engine's model of the swarm: every service but slot services as Swarm has it, each
    /// template as a service of its slot count, and each slot service's task as that slot's
    /// task (on the node its constraint names, if its task has not been scheduled yet). A
    /// service or node Docker describes in a way the engine cannot read is skipped and returned
    /// as a warning, so one odd object does not stop the controller.
    pub fn cluster(&self) -> (Cluster, Vec<String>) {
        let mut warnings = Vec::new();
        let mut nodes = Vec::new();
        for n in &self.state.nodes {
            match ingest::node(n.clone()) {
                Ok(n) => nodes.push(n),
                Err(e) => warnings.push(format!("node: {e}")),
            }
        }
        let mut services: Vec<Service> = Vec::new();
        let slot_ids: BTreeMap<&str, &SlotService> =
            self.slots.values().map(|s| (s.id.as_str(), s)).collect();
        for s in &self.state.services {
            let Some(id) = s.id.as_deref() else { continue };
            if slot_ids.contains_key(id) {
                continue;
            }
            match ingest::service(s.clone()) {
                Ok(mut svc) => {
                    if let Some(t) = self.templates.get(id) {
                        svc.mode = Mode::Replicated { replicas: t.slots };
                    }
                    services.push(svc);
                }
                Err(e) => warnings.push(format!("service: {e}")),
            }
        }
        let mut tasks = Vec::new();
        let mut has_task: BTreeMap<&str, bool> = BTreeMap::new();
        let known: std::collections::BTreeSet<&str> =
            services.iter().map(|s| s.id.0.as_str()).collect();
        for t in &self.state.tasks {
            let Some(sid) = t.service_id.as_deref() else {
                continue;
            };
            // Swarm's three list calls are no snapshot: a service removed between them leaves
            // tasks naming it for a while. They hold nothing the engine must plan around.
            if !known.contains(sid) && !slot_ids.contains_key(sid) {
                continue;
            }
            let Ok(mut task) = ingest::task(t.clone()) else {
                continue;
            };
            if let Some(slot) = slot_ids.get(sid) {
                if !self.templates.contains_key(&slot.owner) {
                    continue; // an orphan slot service: not part of any template's plan
                }
                // Only a task on the node the slot is pinned to is the slot's: when that node
                // goes down, Swarm replaces its task with one it cannot place (no node), which
                // would hide from the engine that the slot's node is lost. The pin stands
                // for the slot then (below), on its down node, and the node's failover plan
                // takes the slot with it.
                if slot.node.is_some() && t.node_id.as_deref() != slot.node.as_deref() {
                    continue;
                }
                task.service_id = ServiceId(slot.owner.clone());
                task.slot = Some(slot.slot);
                if task.is_active() {
                    has_task.insert(sid, true);
                }
            }
            tasks.push(task);
        }
        // A slot service whose task Swarm has not created or scheduled yet still holds its
        // slot on its node: without this the engine would place the slot a second time.
        for slot in self.slots.values() {
            if has_task.contains_key(slot.id.as_str()) || !self.templates.contains_key(&slot.owner)
            {
                continue;
            }
            tasks.push(Task {
                id: format!("berth-slot-{}", slot.id),
                service_id: ServiceId(slot.owner.clone()),
                slot: Some(slot.slot),
                node_id: slot.node.clone().map(NodeId),
                state: TaskState::Assigned,
                desired_state: TaskState::Running,
            });
        }
        account_for_removed_nodes(&mut nodes, &tasks);
        (
            Cluster {
                nodes,
                services,
                tasks,
                datasets: Vec::new(),
            },
            warnings,
        )
    }
}

/// The index of the template's mount that holds the slot's data: the volume mount whose source,
/// with `{{.Task.Slot}}` replaced by the slot, is the `berth.volume` name of that slot.
fn volume_mount(spec: &ServiceSpec, volume: Option<&str>, slot: u64) -> Result<usize, String> {
    let volume = volume.ok_or_else(|| format!("needs {VOLUME}"))?;
    let want = volume
        .replace(SWARM_SLOT, &slot.to_string())
        .replace("{slot}", &slot.to_string());
    let mounts = spec
        .task_template
        .as_ref()
        .and_then(|t| t.container_spec.as_ref())
        .and_then(|c| c.mounts.as_ref());
    mounts
        .into_iter()
        .flatten()
        .position(|m| {
            m.source
                .as_deref()
                .map(|s| s.replace(SWARM_SLOT, &slot.to_string()))
                .as_deref()
                == Some(want.as_str())
        })
        .ok_or_else(|| {
            format!(
                "no mount's source gives the slot's volume `{want}` ({VOLUME}={volume}); mount \
                 e.g. source={} with the berth volume driver",
                volume.replace("{slot}", SWARM_SLOT)
            )
        })
}

/// The Swarm service that runs `slot` of `template` on `node`: the template's spec with one
/// replica, the slot's volume written out, `node.id==node` added to its constraints, a DNS
/// alias `<short name>-<slot>` on each of its networks, and Berth's labels in place of the
/// template's `berth.*` ones.
pub fn slot_spec(template: &Template, slot: u64, node: &str) -> ServiceSpec {
    let mut spec = template.spec.clone();
    let name = slot_name(&template.name, slot);
    spec.name = Some(name);
    let mut labels: HashMap<String, String> = spec
        .labels
        .take()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("berth.") && k != STACK_NAMESPACE)
        .collect();
    if let Some(ns) = template
        .spec
        .labels
        .as_ref()
        .and_then(|l| l.get(STACK_NAMESPACE))
    {
        labels.insert(STACK.into(), ns.clone());
    }
    labels.insert(OWNER.into(), template.id.clone());
    labels.insert(OWNER_NAME.into(), template.name.clone());
    labels.insert(SLOT.into(), slot.to_string());
    labels.insert(TEMPLATE_HASH.into(), template.hash.clone());
    spec.labels = Some(labels);
    spec.mode = Some(ServiceSpecMode {
        replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
        ..Default::default()
    });
    let alias = format!("{}-{slot}", template.short_name);
    let task = spec.task_template.get_or_insert_with(Default::default);
    let placement = task
        .placement
        .get_or_insert_with(TaskSpecPlacement::default);
    let constraints = placement.constraints.get_or_insert_with(Vec::new);
    constraints.retain(|c| !c.replace(' ', "").starts_with("node.id=="));
    constraints.push(format!("node.id=={node}"));
    if let Some(mounts) = task.container_spec.as_mut().and_then(|c| c.mounts.as_mut()) {
        for m in mounts {
            if let Some(src) = &m.source {
                m.source = Some(src.replace(SWARM_SLOT, &slot.to_string()));
            }
        }
    }
    let add_alias = |nets: &mut Vec<NetworkAttachmentConfig>| {
        for n in nets {
            let aliases = n.aliases.get_or_insert_with(Vec::new);
            if !aliases.contains(&alias) {
                aliases.push(alias.clone());
            }
        }
    };
    if let Some(nets) = task.networks.as_mut() {
        add_alias(nets);
    }
    if let Some(nets) = spec.networks.as_mut() {
        add_alias(nets);
    }
    spec
}

/// `<template>-<slot>`.
pub fn slot_name(template: &str, slot: u64) -> String {
    format!("{template}-{slot}")
}

/// The template with 0 replicas of its own and its slot count recorded in `berth.replicas`:
/// what Berth writes when it adopts a template created with replicas > 0, so that its slots,
/// not its own tasks, hold the data.
pub fn quiesced_template(template: &Template) -> ServiceSpec {
    let mut spec = template.spec.clone();
    spec.labels
        .get_or_insert_with(HashMap::new)
        .insert(REPLICAS.into(), template.slots.to_string());
    spec.mode = Some(ServiceSpecMode {
        replicated: Some(ServiceSpecModeReplicated { replicas: Some(0) }),
        ..Default::default()
    });
    spec
}
