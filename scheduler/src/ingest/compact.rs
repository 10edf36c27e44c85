//! The compact form for hand-written clusters: TOML (or a JSON object) with `[[nodes]]`,
//! `[[services]]`, `[[tasks]]` and `[[datasets]]` tables and friendly fields (`cpus = 2`,
//! `memory = "4GiB"`, `replicas = 3`). Unknown fields are errors, so a typo is reported with its
//! line and column instead of being ignored.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::IngestError;
use crate::model::{
    Availability, Backend, Dataset, EnginePlugin, Mode, Mount, MountType, Node, NodeId, NodeState,
    Placement, Platform, PortConfig, Protocol, PublishMode, Resources, Role, Service, ServiceId,
    Task, TaskState,
};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    nodes: Option<Vec<CNode>>,
    services: Option<Vec<CService>>,
    tasks: Option<Vec<CTask>>,
    datasets: Option<Vec<CDataset>>,
}

/// A size written `4GiB`, `512MiB`, `1.5G`, `1024` (bytes) or as a plain integer.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CNode {
    id: String,
    hostname: Option<String>,
    #[serde(default)]
    role: Role,
    #[serde(default)]
    availability: Availability,
    #[serde(default)]
    state: NodeState,
    #[serde(default)]
    addr: String,
    os: Option<String>,
    arch: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    engine_labels: BTreeMap<String, String>,
    cpus: Option<f64>,
    memory: Option<Size>,
    /// `"Volume/berth"`, `"Log/loki"`.
    plugins: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CService {
    name: String,
    id: Option<String>,
    replicas: Option<u64>,
    /// `replicated` (default) or `global`.
    mode: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    constraints: Vec<String>,
    #[serde(default)]
    preferences: Vec<String>,
    #[serde(default)]
    max_replicas_per_node: u64,
    /// `"linux/amd64"`.
    #[serde(default)]
    platforms: Vec<String>,
    reserve_cpus: Option<f64>,
    reserve_memory: Option<Size>,
    #[serde(default)]
    mounts: Vec<CMount>,
    #[serde(default)]
    ports: Vec<CPort>,
    log_driver: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CMount {
    #[serde(rename = "type", default)]
    kind: MountType,
    #[serde(default)]
    source: String,
    #[serde(default)]
    target: String,
    driver: Option<String>,
    #[serde(default)]
    options: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CPort {
    published: u16,
    target: Option<u16>,
    #[serde(default)]
    mode: PublishMode,
    #[serde(default)]
    protocol: Protocol,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CTask {
    id: Option<String>,
    /// The service's name (or ID).
    service: String,
    slot: Option<u64>,
    node: Option<String>,
    #[serde(default)]
    state: TaskState,
    desired_state: Option<TaskState>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CDataset {
    name: String,
    service: String,
    slot: u64,
    primary: Option<String>,
    #[serde(default)]
    epoch: u64,
    #[serde(default)]
    backend: Backend,
    size: Option<Size>,
    standby: Option<String>,
    #[serde(default)]
    fenced: bool,
}

pub fn from_toml(file: &str, text: &str) -> Result<File, IngestError> {
    toml::from_str(text).map_err(|e| IngestError::Toml {
        file: file.to_string(),
        message: e.to_string().trim_end().to_string(),
    })
}

pub fn from_json(file: &str, text: &str) -> Result<File, IngestError> {
    super::json(file, text)
}

pub fn datasets_from_json_array(file: &str, text: &str) -> Result<Vec<Dataset>, IngestError> {
    let raw: Vec<CDataset> = super::json(file, text)?;
    raw.into_iter()
        .enumerate()
        .map(|(i, d)| dataset(file, i, d))
        .collect()
}

/// Parses a size into bytes: Berth's one reading (`berth_units`), binary multiples as Docker's
/// `RAMInBytes`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    berth_units::parse_size(s).map_err(|e| e.to_string())
}

fn size(file: &str, path: String, s: &Option<Size>) -> Result<u64, IngestError> {
    match s {
        None => Ok(0),
        Some(Size::Bytes(b)) => Ok(*b),
        Some(Size::Text(t)) => parse_size(t).map_err(|m| IngestError::value(file, path, m)),
    }
}

fn cpus(file: &str, path: String, c: Option<f64>) -> Result<i64, IngestError> {
    match c {
        None => Ok(0),
        Some(c) if (0.0..1e9).contains(&c) => Ok((c * 1e9).round() as i64),
        Some(c) => Err(IngestError::value(
            file,
            path,
            format!("`{c}`: expected a CPU count such as 0.5 or 4"),
        )),
    }
}

fn platform(file: &str, path: String, s: &str) -> Result<Platform, IngestError> {
    let (os, arch) = s.split_once('/').ok_or_else(|| {
        IngestError::value(
            file,
            path,
            format!("`{s}`: expected os/arch such as linux/amd64"),
        )
    })?;
    Ok(Platform {
        os: os.to_string(),
        architecture: arch.to_string(),
    })
}

fn dataset(file: &str, i: usize, d: CDataset) -> Result<Dataset, IngestError> {
    Ok(Dataset {
        size_bytes: size(file, format!("datasets[{i}].size"), &d.size)?,
        name: d.name,
        service: d.service,
        slot: d.slot,
        primary: d.primary.map(NodeId),
        epoch: d.epoch,
        backend: d.backend,
        standby: d.standby.map(NodeId),
        fenced: d.fenced,
    })
}

impl File {
    fn section<T>(file: &str, name: &str, s: &Option<Vec<T>>) -> Result<(), IngestError> {
        match s {
            Some(_) => Ok(()),
            None => Err(IngestError::value(
                file,
                name,
                format!("no [[{name}]] section"),
            )),
        }
    }

    pub fn nodes(&self, file: &str) -> Result<Vec<Node>, IngestError> {
        Self::section(file, "nodes", &self.nodes)?;
        let nodes = self.nodes.as_deref().unwrap_or_default();
        nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let plugins = match &n.plugins {
                    None => None,
                    Some(ps) => Some(
                        ps.iter()
                            .map(|p| {
                                let (kind, name) = p.split_once('/').ok_or_else(|| {
                                    IngestError::value(
                                        file,
                                        format!("nodes[{i}].plugins"),
                                        format!("`{p}`: expected Type/name such as Volume/berth"),
                                    )
                                })?;
                                Ok(EnginePlugin {
                                    kind: kind.to_string(),
                                    name: name.to_string(),
                                })
                            })
                            .collect::<Result<Vec<_>, IngestError>>()?
                            .into(),
                    ),
                };
                Ok(Node {
                    id: NodeId(n.id.clone()),
                    hostname: n.hostname.clone().unwrap_or_else(|| n.id.clone()),
                    role: n.role,
                    availability: n.availability,
                    state: n.state,
                    addr: n.addr.clone(),
                    platform: Platform {
                        os: n.os.clone().unwrap_or_else(|| "linux".into()),
                        architecture: n.arch.clone().unwrap_or_else(|| "x86_64".into()),
                    },
                    labels: n.labels.clone(),
                    engine_labels: n.engine_labels.clone(),
                    resources: Resources {
                        nano_cpus: cpus(file, format!("nodes[{i}].cpus"), n.cpus)?,
                        memory_bytes: size(file, format!("nodes[{i}].memory"), &n.memory)? as i64,
                    },
                    plugins,
                })
            })
            .collect()
    }

    pub fn services(&self, file: &str) -> Result<Vec<Service>, IngestError> {
        Self::section(file, "services", &self.services)?;
        let services = self.services.as_deref().unwrap_or_default();
        services
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let at = |f: &str| format!("services[{i}] ({}).{f}", s.name);
                let mode = match (s.mode.as_deref(), s.replicas) {
                    (None | Some("replicated"), r) => Mode::Replicated {
                        replicas: r.unwrap_or(1),
                    },
                    (Some("global"), None) => Mode::Global,
                    (Some("global"), Some(_)) => {
                        return Err(IngestError::value(
                            file,
                            at("replicas"),
                            "a global service has no replica count",
                        ));
                    }
                    (Some(m), _) => {
                        return Err(IngestError::value(
                            file,
                            at("mode"),
                            format!("`{m}`: expected replicated or global"),
                        ));
                    }
                };
                Ok(Service {
                    id: ServiceId(s.id.clone().unwrap_or_else(|| s.name.clone())),
                    name: s.name.clone(),
                    labels: s.labels.clone(),
                    mode,
                    placement: Placement {
                        constraints: s.constraints.clone(),
                        // `spread=` as `docker service create --placement-pref` takes it; the
                        // model holds the descriptor alone, as Docker's JSON does.
                        preferences: s
                            .preferences
                            .iter()
                            .map(|p| p.strip_prefix("spread=").unwrap_or(p).trim().to_string())
                            .collect(),
                        max_replicas: s.max_replicas_per_node,
                        platforms: s
                            .platforms
                            .iter()
                            .map(|p| platform(file, at("platforms"), p))
                            .collect::<Result<_, _>>()?,
                    },
                    reservations: Resources {
                        nano_cpus: cpus(file, at("reserve_cpus"), s.reserve_cpus)?,
                        memory_bytes: size(file, at("reserve_memory"), &s.reserve_memory)? as i64,
                    },
                    mounts: s
                        .mounts
                        .iter()
                        .map(|m| Mount {
                            kind: m.kind,
                            source: m.source.clone(),
                            target: m.target.clone(),
                            driver: m.driver.clone(),
                            options: m.options.clone(),
                        })
                        .collect(),
                    ports: s
                        .ports
                        .iter()
                        .map(|p| PortConfig {
                            protocol: p.protocol,
                            target_port: p.target.unwrap_or(p.published),
                            published_port: p.published,
                            publish_mode: p.mode,
                        })
                        .collect(),
                    log_driver: s.log_driver.clone(),
                })
            })
            .collect()
    }

    pub fn tasks(&self, _file: &str) -> Result<Vec<Task>, IngestError> {
        let tasks = self.tasks.as_deref().unwrap_or_default();
        Ok(tasks
            .iter()
            .map(|t| Task {
                id: t.id.clone().unwrap_or_else(|| match t.slot {
                    Some(s) => format!("{}.{s}", t.service),
                    None => format!("{}.{}", t.service, t.node.as_deref().unwrap_or("")),
                }),
                service_id: ServiceId(t.service.clone()),
                slot: t.slot,
                node_id: t.node.clone().map(NodeId),
                state: t.state,
                desired_state: t.desired_state.unwrap_or(TaskState::Running),
            })
            .collect())
    }

    pub fn datasets(&self, file: &str) -> Result<Vec<Dataset>, IngestError> {
        let datasets = self.datasets.as_deref().unwrap_or_default();
        datasets
            .iter()
            .enumerate()
            .map(|(i, d)| {
                dataset(
                    file,
                    i,
                    CDataset {
                        name: d.name.clone(),
                        service: d.service.clone(),
                        slot: d.slot,
                        primary: d.primary.clone(),
                        epoch: d.epoch,
                        backend: d.backend,
                        size: d.size.clone(),
                        standby: d.standby.clone(),
                        fenced: d.fenced,
                    },
                )
            })
            .collect()
    }
}
