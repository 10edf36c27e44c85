//! Docker's JSON, through `bollard-stubs`' generated models (the Engine API's own schema), to
//! the model. Only the fields placement reads are mapped.

use std::collections::{BTreeMap, HashMap};

use bollard_stubs::models as docker;
use serde::de::DeserializeOwned;

use super::IngestError;
use crate::model::{
    Availability, EnginePlugin, Mode, Mount, MountType, Node, NodeId, NodeState, Placement,
    Platform, PortConfig, Protocol, PublishMode, Resources, Role, Service, ServiceId, Task,
    TaskState,
};

fn parse<T: DeserializeOwned>(file: &str, text: &str) -> Result<Vec<T>, IngestError> {
    super::json(file, text)
}

fn labels(m: Option<HashMap<String, String>>) -> BTreeMap<String, String> {
    m.unwrap_or_default().into_iter().collect()
}

fn platform(p: Option<docker::Platform>) -> Platform {
    let p = p.unwrap_or_default();
    Platform {
        os: p.os.unwrap_or_default(),
        architecture: p.architecture.unwrap_or_default(),
    }
}

fn resources(r: Option<docker::ResourceObject>) -> Resources {
    let r = r.unwrap_or_default();
    Resources {
        nano_cpus: r.nano_cpus.unwrap_or(0),
        memory_bytes: r.memory_bytes.unwrap_or(0),
    }
}

/// A Docker object that does not fit the model: the field's path inside the object and why.
/// Callers reading an array prefix the element's index (`[3].Spec.Name`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {why}")]
pub struct FieldError {
    pub path: String,
    pub why: String,
}

fn field(path: &str, why: impl Into<String>) -> FieldError {
    FieldError {
        path: path.to_string(),
        why: why.into(),
    }
}

/// Maps each element of a JSON array through `f`, naming the element in errors.
fn each<M: DeserializeOwned, T>(
    file: &str,
    text: &str,
    f: fn(M) -> Result<T, FieldError>,
) -> Result<Vec<T>, IngestError> {
    let raw: Vec<M> = parse(file, text)?;
    raw.into_iter()
        .enumerate()
        .map(|(i, m)| {
            f(m).map_err(|e| IngestError::value(file, format!("[{i}].{}", e.path), e.why))
        })
        .collect()
}

pub fn nodes(file: &str, text: &str) -> Result<Vec<Node>, IngestError> {
    each(file, text, node)
}

pub fn services(file: &str, text: &str) -> Result<Vec<Service>, IngestError> {
    each(file, text, service)
}

pub fn tasks(file: &str, text: &str) -> Result<Vec<Task>, IngestError> {
    each(file, text, task)
}

/// One node from the Engine API's typed model (`GET /nodes`, bollard's `list_nodes`): the
/// controller feeds the engine from these directly, without re-serialising JSON.
pub fn node(n: docker::Node) -> Result<Node, FieldError> {
    let id =
        n.id.filter(|id| !id.is_empty())
            .ok_or_else(|| field("ID", "missing"))?;
    let spec = n.spec.unwrap_or_default();
    let desc = n.description.unwrap_or_default();
    let status = n.status.unwrap_or_default();
    let engine = desc.engine.unwrap_or_default();
    Ok(Node {
        id: NodeId(id),
        hostname: desc.hostname.or(spec.name).unwrap_or_default(),
        role: match spec.role {
            Some(docker::NodeSpecRoleEnum::MANAGER) => Role::Manager,
            _ => Role::Worker,
        },
        availability: match spec.availability {
            Some(docker::NodeSpecAvailabilityEnum::PAUSE) => Availability::Pause,
            Some(docker::NodeSpecAvailabilityEnum::DRAIN) => Availability::Drain,
            _ => Availability::Active,
        },
        state: match status.state {
            Some(docker::NodeState::READY) => NodeState::Ready,
            Some(docker::NodeState::DOWN) => NodeState::Down,
            Some(docker::NodeState::DISCONNECTED) => NodeState::Disconnected,
            _ => NodeState::Unknown,
        },
        addr: status.addr.unwrap_or_default(),
        platform: platform(desc.platform),
        labels: labels(spec.labels),
        engine_labels: labels(engine.labels),
        resources: resources(desc.resources),
        plugins: engine.plugins.map(|ps| {
            ps.into_iter()
                .map(|p| EnginePlugin {
                    kind: p.typ.unwrap_or_default(),
                    name: p.name.unwrap_or_default(),
                })
                .collect()
        }),
    })
}

/// One service from the Engine API's typed model (`GET /services`).
pub fn service(s: docker::Service) -> Result<Service, FieldError> {
    let id =
        s.id.filter(|id| !id.is_empty())
            .ok_or_else(|| field("ID", "missing"))?;
    let spec = s.spec.ok_or_else(|| field("Spec", "missing"))?;
    let name = spec
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| field("Spec.Name", "missing"))?;
    let mode = match spec.mode {
        None => Mode::Replicated { replicas: 1 },
        Some(m) if m.global.is_some() => Mode::Global,
        Some(m) if m.replicated_job.is_some() || m.global_job.is_some() => {
            return Err(field(
                "Spec.Mode",
                format!("service `{name}`: job modes are not placed by Berth"),
            ));
        }
        Some(m) => {
            let replicas = m.replicated.and_then(|r| r.replicas).unwrap_or(1);
            let replicas = u64::try_from(replicas)
                .map_err(|_| field("Spec.Mode.Replicated.Replicas", "negative"))?;
            Mode::Replicated { replicas }
        }
    };
    let template = spec.task_template.unwrap_or_default();
    let placement = template.placement.unwrap_or_default();
    let container = template.container_spec.unwrap_or_default();
    let mounts = container
        .mounts
        .unwrap_or_default()
        .into_iter()
        .map(|m| {
            let driver = m
                .volume_options
                .as_ref()
                .and_then(|v| v.driver_config.as_ref());
            Mount {
                kind: match m.typ {
                    Some(docker::MountType::BIND) => MountType::Bind,
                    Some(docker::MountType::TMPFS) => MountType::Tmpfs,
                    Some(docker::MountType::NPIPE) => MountType::Npipe,
                    Some(docker::MountType::CLUSTER) => MountType::Cluster,
                    _ => MountType::Volume,
                },
                source: m.source.clone().unwrap_or_default(),
                target: m.target.clone().unwrap_or_default(),
                driver: driver
                    .and_then(|d| d.name.clone())
                    .filter(|d| !d.is_empty()),
                options: labels(driver.and_then(|d| d.options.clone())),
            }
        })
        .collect();
    let ports = spec
        .endpoint_spec
        .and_then(|e| e.ports)
        .unwrap_or_default()
        .into_iter()
        .map(|p| PortConfig {
            protocol: match p.protocol {
                Some(docker::EndpointPortConfigProtocolEnum::UDP) => Protocol::Udp,
                Some(docker::EndpointPortConfigProtocolEnum::SCTP) => Protocol::Sctp,
                _ => Protocol::Tcp,
            },
            target_port: p
                .target_port
                .and_then(|v| u16::try_from(v).ok())
                .unwrap_or(0),
            published_port: p
                .published_port
                .and_then(|v| u16::try_from(v).ok())
                .unwrap_or(0),
            publish_mode: match p.publish_mode {
                Some(docker::EndpointPortConfigPublishModeEnum::HOST) => PublishMode::Host,
                _ => PublishMode::Ingress,
            },
        })
        .collect();
    Ok(Service {
        id: ServiceId(id),
        name,
        labels: labels(spec.labels),
        mode,
        placement: Placement {
            constraints: placement.constraints.unwrap_or_default(),
            preferences: placement
                .preferences
                .unwrap_or_default()
                .into_iter()
                .filter_map(|p| p.spread.and_then(|s| s.spread_descriptor))
                .collect(),
            max_replicas: placement
                .max_replicas
                .and_then(|m| u64::try_from(m).ok())
                .unwrap_or(0),
            platforms: placement
                .platforms
                .unwrap_or_default()
                .into_iter()
                .map(|p| platform(Some(p)))
                .collect(),
        },
        reservations: resources(template.resources.and_then(|r| r.reservations)),
        mounts,
        ports,
        log_driver: template
            .log_driver
            .and_then(|l| l.name)
            .filter(|n| !n.is_empty()),
    })
}

fn task_state(s: Option<docker::TaskState>) -> TaskState {
    use docker::TaskState as D;
    match s {
        Some(D::NEW) | None => TaskState::New,
        Some(D::ALLOCATED) | Some(D::PENDING) => TaskState::Pending,
        Some(D::ASSIGNED) => TaskState::Assigned,
        Some(D::ACCEPTED) => TaskState::Accepted,
        Some(D::PREPARING) => TaskState::Preparing,
        Some(D::READY) => TaskState::Ready,
        Some(D::STARTING) => TaskState::Starting,
        Some(D::RUNNING) => TaskState::Running,
        Some(D::COMPLETE) => TaskState::Complete,
        Some(D::SHUTDOWN) => TaskState::Shutdown,
        Some(D::FAILED) => TaskState::Failed,
        Some(D::REJECTED) => TaskState::Rejected,
        Some(D::REMOVE) => TaskState::Remove,
        Some(D::ORPHANED) => TaskState::Orphaned,
    }
}

/// One task from the Engine API's typed model (`GET /tasks`).
pub fn task(t: docker::Task) -> Result<Task, FieldError> {
    let service = t
        .service_id
        .filter(|s| !s.is_empty())
        .ok_or_else(|| field("ServiceID", "missing"))?;
    Ok(Task {
        id: t.id.unwrap_or_default(),
        service_id: ServiceId(service),
        slot: t
            .slot
            .and_then(|s| u64::try_from(s).ok())
            .filter(|s| *s > 0),
        node_id: t.node_id.filter(|n| !n.is_empty()).map(NodeId),
        state: task_state(t.status.and_then(|s| s.state)),
        desired_state: task_state(t.desired_state),
    })
}
