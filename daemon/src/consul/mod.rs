//! Consul service registration, `berth run --consul`: Consul's catalog kept in line with the
//! swarm, level-triggered, at every reconcile pass. It replaces Registrator (which watches
//! containers and never understood Swarm services) and consul-notifier.
//!
//! - [`instances`] (pure): what should be registered, from what the pass observed: one Consul
//!   service instance per task Swarm wants running on a node, of every service but a stateful
//!   template (whose slots run as their own services): stateless services under their own name,
//!   slot services under their DNS alias (`mongo-1`).
//! - [`agent`]: the calls to the local Consul agent (consulrs, async).
//! - [`election`]: leader election of `berth run` daemons through a Consul session lock,
//!   `berth_leadership`'s; only the leader reconciles (the gate is
//!   [`berth_leadership::Leadership`]).
//! - [`journal`]: the failover executor's journal in a KV key, every write fenced by the
//!   leader session, read by each daemon as it takes the lead.
//! - [`Registrar`]: one pass's sync: register what is missing or changed, refresh every
//!   instance's TTL check with the task's state, deregister what went. Only instances carrying
//!   Berth's mark ([`MANAGED_BY`] = `berth` in their meta) are ever deregistered.
//!
//! **Why the agent API with a TTL check.** Berth registers with the Consul agent at `--consul`
//! (the manager's own agent), so the agent's anti-entropy keeps the catalog in step and no
//! other agent ever removes Berth's entries; registering on the task's node through the catalog
//! API would be undone by that node's agent, which does not know them. The check is a TTL check
//! that Berth sets each pass from Swarm's task state (passing while the task runs on a ready
//! node, critical otherwise, with the reason as its output) rather than an HTTP or TCP probe,
//! because that agent runs on a manager: it cannot reach a task's overlay address, and a port
//! published through Swarm's ingress mesh answers from whichever task the mesh picks, not from
//! this one. Swarm's state already includes the container's own HEALTHCHECK (a task counts as
//! running only once healthy, and an unhealthy one is replaced). And a TTL that lapses when
//! `berth run` stops vouching turns its instances critical instead of leaving a stale "passing".

pub mod agent;
pub mod election;
#[cfg(test)]
mod election_tests;
pub mod journal;
/// The documented-shapes fake of a Consul agent, for tests (it is shared with the volume
/// control service's).
#[cfg(any(test, feature = "testing"))]
pub use berth_consul_fake as fake;
mod registrar;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};

use bollard_stubs::models::{
    EndpointPortConfig, EndpointPortConfigPublishModeEnum, Node, NodeState, Service, Task,
    TaskState,
};

use crate::slots::{Observed, SlotService};

pub use agent::{Agent, AgentCheck, AgentService, ConsulError};
pub use registrar::{Registrar, SyncStatus};

/// Meta key (and value [`BERTH`]) on every instance Berth registers: the mark that lets Berth
/// remove it again, and nothing else.
pub const MANAGED_BY: &str = "managed-by";
pub const BERTH: &str = "berth";

/// Docker's stack label: a stack's services are named `<stack>_<name>` and reachable on the
/// stack's networks as `<name>`, which is the name Consul gets.
const STACK_NAMESPACE: &str = "com.docker.stack.namespace";

/// A check's status, in Consul's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Passing,
    Critical,
}

impl CheckStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Passing => "passing",
            CheckStatus::Critical => "critical",
        }
    }
}

/// One Consul service instance: one Swarm task.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Instance {
    /// `berth-<task ID>`: unique on the agent, and new for every task Swarm starts.
    pub id: String,
    /// The slot service's DNS alias (`mongo-1`) or the stateless service's name without its
    /// stack prefix (`app_api` → `api`).
    pub name: String,
    /// The address of the task's node (Swarm's node address).
    pub address: String,
    /// The task's host-mode published port, else the service's first port published through
    /// the ingress mesh; none when the service publishes no port.
    pub port: Option<u16>,
    /// `berth`, `node=<hostname>`, `slot=<n>` and `template=<name>` (slots), `stack=<stack>`.
    pub tags: Vec<String>,
    pub meta: BTreeMap<String, String>,
    pub status: CheckStatus,
    /// Why the check has its status: the task's state, its node, Swarm's message.
    pub output: String,
}

impl Instance {
    /// The ID of the instance's TTL check (Consul's own default for a service's only check).
    pub fn check_id(&self) -> String {
        check_id(&self.id)
    }
}

pub fn check_id(service_id: &str) -> String {
    format!("service:{service_id}")
}

fn labels(s: &Service) -> HashMap<String, String> {
    s.spec
        .as_ref()
        .and_then(|sp| sp.labels.clone())
        .unwrap_or_default()
}

fn strip_stack(name: &str, stack: Option<&String>) -> String {
    stack
        .and_then(|ns| name.strip_prefix(&format!("{ns}_")))
        .unwrap_or(name)
        .to_string()
}

/// Where a node is reached: Swarm's node address, except that a manager may report
/// `0.0.0.0` there (its listen address), when its manager address says where it is; the
/// hostname as a last resort, never an empty address (Consul would put the agent's own there).
fn node_address(n: &Node) -> String {
    let status = n
        .status
        .as_ref()
        .and_then(|s| s.addr.clone())
        .filter(|a| !a.is_empty() && a != "0.0.0.0");
    let manager = || {
        let addr = n.manager_status.as_ref()?.addr.as_deref()?;
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        Some(host.to_string()).filter(|h| !h.is_empty() && h != "0.0.0.0")
    };
    status.or_else(manager).unwrap_or_else(|| hostname(n))
}

fn hostname(n: &Node) -> String {
    n.description
        .as_ref()
        .and_then(|d| d.hostname.clone())
        .or_else(|| n.id.clone())
        .unwrap_or_default()
}

fn published(p: &EndpointPortConfig) -> Option<u16> {
    p.published_port
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
}

fn port(task: &Task, service: &Service) -> Option<u16> {
    let host = task
        .status
        .as_ref()
        .and_then(|s| s.port_status.as_ref())
        .and_then(|p| p.ports.as_ref())
        .into_iter()
        .flatten()
        .find_map(published);
    let ingress = || {
        service
            .endpoint
            .as_ref()?
            .ports
            .as_ref()?
            .iter()
            .filter(|p| {
                !matches!(
                    p.publish_mode,
                    Some(EndpointPortConfigPublishModeEnum::HOST)
                )
            })
            .find_map(published)
    };
    host.or_else(ingress)
}

/// What a service is to Consul: its name, and its slot tags if it is a slot service.
struct Named {
    name: String,
    stack: Option<String>,
    slot: Option<(u64, String)>,
}

fn named(observed: &Observed, slots: &BTreeMap<&str, &SlotService>, s: &Service) -> Option<Named> {
    let id = s.id.as_deref()?;
    if observed.templates.contains_key(id) {
        return None; // runs as its slot services; its own tasks are about to be scaled away
    }
    let labels = labels(s);
    let name = s.spec.as_ref()?.name.clone()?;
    if let Some(slot) = slots.get(id) {
        let stack = labels.get(crate::slots::STACK).cloned();
        let template = match observed.owner_of(slot) {
            Some(t) => t.short_name.clone(),
            None => strip_stack(
                labels
                    .get(crate::slots::OWNER_NAME)
                    .map_or(name.as_str(), String::as_str),
                stack.as_ref(),
            ),
        };
        return Some(Named {
            name: format!("{template}-{}", slot.slot),
            stack,
            slot: Some((slot.slot, template)),
        });
    }
    let stack = labels.get(STACK_NAMESPACE).cloned();
    Some(Named {
        name: strip_stack(&name, stack.as_ref()),
        stack,
        slot: None,
    })
}

/// Every instance Berth should have registered, by ID order.
pub fn instances(observed: &Observed) -> Vec<Instance> {
    let state = observed.state();
    let slots: BTreeMap<&str, &SlotService> = observed
        .slots
        .values()
        .map(|s| (s.id.as_str(), s))
        .collect();
    let services: BTreeMap<&str, (&Service, Named)> = state
        .services
        .iter()
        .filter_map(|s| Some((s.id.as_deref()?, (s, named(observed, &slots, s)?))))
        .collect();
    let nodes: BTreeMap<&str, &Node> = state
        .nodes
        .iter()
        .filter_map(|n| Some((n.id.as_deref()?, n)))
        .collect();
    let mut out = Vec::new();
    for t in &state.tasks {
        // A task Swarm no longer wants running is on its way out, whatever it does now.
        if t.desired_state != Some(TaskState::RUNNING) {
            continue;
        }
        let (Some(task_id), Some(sid), Some(node_id)) = (
            t.id.as_deref(),
            t.service_id.as_deref(),
            t.node_id.as_deref().filter(|n| !n.is_empty()),
        ) else {
            continue; // not yet on a node: nothing to reach
        };
        let Some((service, n)) = services.get(sid) else {
            continue;
        };
        let node = nodes.get(node_id);
        let host = node.map_or_else(|| node_id.to_string(), |n| hostname(n));
        let node_state = node.and_then(|n| n.status.as_ref()?.state);
        let state = t.status.as_ref().and_then(|s| s.state);
        let why = t
            .status
            .as_ref()
            .and_then(|s| s.err.clone().or_else(|| s.message.clone()))
            .unwrap_or_default();
        let (status, output) = match (state, node_state) {
            (_, Some(ns)) if ns != NodeState::READY => (
                CheckStatus::Critical,
                format!("node {host} is {ns} (Swarm's view)"),
            ),
            (Some(TaskState::RUNNING), _) => {
                (CheckStatus::Passing, format!("task running on {host}"))
            }
            (s, _) => (
                CheckStatus::Critical,
                format!(
                    "task {} on {host}{}",
                    s.map_or_else(|| "in an unknown state".to_string(), |s| s.to_string()),
                    if why.is_empty() {
                        String::new()
                    } else {
                        format!(": {why}")
                    }
                ),
            ),
        };
        let mut tags = vec![BERTH.to_string(), format!("node={host}")];
        let mut meta = BTreeMap::from([
            (MANAGED_BY.to_string(), BERTH.to_string()),
            (
                "swarm-service".to_string(),
                service
                    .spec
                    .as_ref()
                    .and_then(|s| s.name.clone())
                    .unwrap_or_default(),
            ),
            ("swarm-service-id".to_string(), sid.to_string()),
            ("swarm-task-id".to_string(), task_id.to_string()),
            ("swarm-node".to_string(), host.clone()),
            ("swarm-node-id".to_string(), node_id.to_string()),
        ]);
        if let Some((slot, template)) = &n.slot {
            tags.push(format!("slot={slot}"));
            tags.push(format!("template={template}"));
            meta.insert("slot".to_string(), slot.to_string());
        }
        if let Some(stack) = &n.stack {
            tags.push(format!("stack={stack}"));
        }
        tags.sort();
        out.push(Instance {
            id: format!("berth-{task_id}"),
            name: n.name.clone(),
            address: node.map_or_else(|| node_id.to_string(), |n| node_address(n)),
            port: port(t, service),
            tags,
            meta,
            status,
            output,
        });
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}
