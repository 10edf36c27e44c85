//! The fast path of Docker's JSON: only the fields placement reads, strings borrowed from the
//! input where they have no escapes, everything else (certificates, versions, timestamps, the
//! container spec of every task) skipped without being built. Measured on 100k nodes
//! (BENCHMARKS.md), building Docker's whole model was most of `berth plan`'s time.
//!
//! Each mapping must agree with `docker::{node, task}` on everything both accept; a value it
//! does not recognise makes it return `None`, and the caller asks the precise path (Docker's
//! full model) instead, so error messages are never this file's business.

use std::collections::BTreeMap;

use bollard_stubs::models as docker;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::IngestError;
use super::stream::{Element, Refusal, Shared};
use crate::model::{
    Availability, Node, NodeId, NodeState, Platform, Resources, Role, Service, ServiceId, Task,
    TaskState,
};

/// Borrowed: a string with escapes makes the fast path refuse the element and the precise path
/// read it (an `Option<Cow<str>>` would always allocate: serde borrows a `Cow` only at the top
/// of a field).
type Str<'a> = &'a str;
type Labels = BTreeMap<String, String>;

#[derive(Deserialize)]
struct FNode<'a> {
    #[serde(rename = "ID", borrow)]
    id: Option<Str<'a>>,
    #[serde(rename = "Spec", borrow)]
    spec: Option<FNodeSpec<'a>>,
    #[serde(rename = "Description", borrow)]
    description: Option<FDescription<'a>>,
    #[serde(rename = "Status", borrow)]
    status: Option<FNodeStatus<'a>>,
}

#[derive(Deserialize)]
struct FNodeSpec<'a> {
    #[serde(rename = "Name", borrow)]
    name: Option<Str<'a>>,
    #[serde(rename = "Labels")]
    labels: Option<Labels>,
    #[serde(rename = "Role", borrow)]
    role: Option<Str<'a>>,
    #[serde(rename = "Availability", borrow)]
    availability: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct FDescription<'a> {
    #[serde(rename = "Hostname", borrow)]
    hostname: Option<Str<'a>>,
    #[serde(rename = "Platform", borrow)]
    platform: Option<FPlatform<'a>>,
    #[serde(rename = "Resources")]
    resources: Option<FResources>,
    #[serde(rename = "Engine", borrow)]
    engine: Option<FEngine<'a>>,
}

#[derive(Deserialize)]
struct FPlatform<'a> {
    #[serde(rename = "Architecture", borrow)]
    architecture: Option<Str<'a>>,
    #[serde(rename = "OS", borrow)]
    os: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct FResources {
    #[serde(rename = "NanoCPUs")]
    nano_cpus: Option<i64>,
    #[serde(rename = "MemoryBytes")]
    memory_bytes: Option<i64>,
}

#[derive(Deserialize)]
struct FEngine<'a> {
    #[serde(rename = "Labels")]
    labels: Option<Labels>,
    /// Kept as text: every node of one engine build lists the same 17 plugins, so the text is
    /// compared with the last list's before anything is parsed.
    #[serde(rename = "Plugins", borrow)]
    plugins: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct FPlugin<'a> {
    #[serde(rename = "Type", borrow)]
    typ: Option<Str<'a>>,
    #[serde(rename = "Name", borrow)]
    name: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct FNodeStatus<'a> {
    #[serde(rename = "State", borrow)]
    state: Option<Str<'a>>,
    #[serde(rename = "Addr", borrow)]
    addr: Option<Str<'a>>,
}

fn owned(s: Option<Str>) -> String {
    s.map(str::to_string).unwrap_or_default()
}

impl Element for Node {
    fn fast(bytes: &[u8], shared: &mut Shared) -> Option<Node> {
        let n: FNode = serde_json::from_slice(bytes).ok()?;
        let id = n.id.filter(|id| !id.is_empty())?;
        let (spec_name, labels, role, availability) = match n.spec {
            None => (None, None, None, None),
            Some(s) => (s.name, s.labels, s.role, s.availability),
        };
        let (hostname, platform, resources, engine) = match n.description {
            None => (None, None, None, None),
            Some(d) => (d.hostname, d.platform, d.resources, d.engine),
        };
        let (engine_labels, plugins) = match engine {
            None => (None, None),
            Some(e) => (e.labels, e.plugins),
        };
        let (state, addr) = match n.status {
            None => (None, None),
            Some(s) => (s.state, s.addr),
        };
        Some(Node {
            id: NodeId(id.to_string()),
            hostname: owned(hostname.or(spec_name)),
            role: match role {
                Some("manager") => Role::Manager,
                None | Some("worker" | "") => Role::Worker,
                Some(_) => return None,
            },
            availability: match availability {
                Some("pause") => Availability::Pause,
                Some("drain") => Availability::Drain,
                None | Some("active" | "") => Availability::Active,
                Some(_) => return None,
            },
            state: match state {
                Some("ready") => NodeState::Ready,
                Some("down") => NodeState::Down,
                Some("disconnected") => NodeState::Disconnected,
                None | Some("unknown") => NodeState::Unknown,
                Some(_) => return None,
            },
            addr: owned(addr),
            platform: platform
                .map(|p| Platform {
                    os: owned(p.os),
                    architecture: owned(p.architecture),
                })
                .unwrap_or_default(),
            labels: labels.unwrap_or_default(),
            engine_labels: engine_labels.unwrap_or_default(),
            resources: resources
                .map(|r| Resources {
                    nano_cpus: r.nano_cpus.unwrap_or(0),
                    memory_bytes: r.memory_bytes.unwrap_or(0),
                })
                .unwrap_or_default(),
            plugins: match plugins.map(RawValue::get) {
                None | Some("null") => None,
                Some(raw) => Some(shared.plugins(raw, |raw| {
                    let ps: Vec<FPlugin> = serde_json::from_str(raw).ok()?;
                    Some(
                        ps.iter()
                            .map(|p| (p.typ.unwrap_or_default(), p.name.unwrap_or_default()))
                            .collect(),
                    )
                })?),
            },
        })
    }

    fn precise(bytes: &[u8]) -> Result<Node, Refusal> {
        let n: docker::Node = precise_json(bytes)?;
        super::docker::node(n).map_err(Refusal::Field)
    }

    fn check_all(file: &str, all: &[Node]) -> Result<(), IngestError> {
        super::check_nodes(file, all)
    }
}

#[derive(Deserialize)]
struct FTask<'a> {
    #[serde(rename = "ID", borrow)]
    id: Option<Str<'a>>,
    #[serde(rename = "ServiceID", borrow)]
    service_id: Option<Str<'a>>,
    #[serde(rename = "Slot")]
    slot: Option<i64>,
    #[serde(rename = "NodeID", borrow)]
    node_id: Option<Str<'a>>,
    #[serde(rename = "Status", borrow)]
    status: Option<FTaskStatus<'a>>,
    #[serde(rename = "DesiredState", borrow)]
    desired_state: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct FTaskStatus<'a> {
    #[serde(rename = "State", borrow)]
    state: Option<Str<'a>>,
}

/// Docker's task state names, as `docker::task` maps them; `None` for a name Docker lacks.
fn task_state(s: Option<&str>) -> Option<TaskState> {
    Some(match s {
        None | Some("new") => TaskState::New,
        Some("allocated" | "pending") => TaskState::Pending,
        Some("assigned") => TaskState::Assigned,
        Some("accepted") => TaskState::Accepted,
        Some("preparing") => TaskState::Preparing,
        Some("ready") => TaskState::Ready,
        Some("starting") => TaskState::Starting,
        Some("running") => TaskState::Running,
        Some("complete") => TaskState::Complete,
        Some("shutdown") => TaskState::Shutdown,
        Some("failed") => TaskState::Failed,
        Some("rejected") => TaskState::Rejected,
        Some("remove") => TaskState::Remove,
        Some("orphaned") => TaskState::Orphaned,
        Some(_) => return None,
    })
}

impl Element for Task {
    fn fast(bytes: &[u8], _: &mut Shared) -> Option<Task> {
        let t: FTask = serde_json::from_slice(bytes).ok()?;
        let service = t.service_id.filter(|s| !s.is_empty())?;
        Some(Task {
            id: owned(t.id),
            service_id: ServiceId(service.to_string()),
            slot: t
                .slot
                .and_then(|s| u64::try_from(s).ok())
                .filter(|s| *s > 0),
            node_id: t
                .node_id
                .filter(|n| !n.is_empty())
                .map(|n| NodeId(n.to_string())),
            state: task_state(t.status.and_then(|s| s.state))?,
            desired_state: task_state(t.desired_state)?,
        })
    }

    fn precise(bytes: &[u8]) -> Result<Task, Refusal> {
        let t: docker::Task = precise_json(bytes)?;
        super::docker::task(t).map_err(Refusal::Field)
    }

    fn check_all(file: &str, all: &[Task]) -> Result<(), IngestError> {
        super::check_tasks(file, all)
    }
}

/// Services are few (one object per service, not per replica): Docker's full model is the
/// only path.
impl Element for Service {
    fn fast(_: &[u8], _: &mut Shared) -> Option<Service> {
        None
    }

    fn precise(bytes: &[u8]) -> Result<Service, Refusal> {
        let s: docker::Service = precise_json(bytes)?;
        super::docker::service(s).map_err(Refusal::Field)
    }

    fn check_all(file: &str, all: &[Service]) -> Result<(), IngestError> {
        super::check_services(file, all)
    }
}

fn precise_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Refusal> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v = serde_path_to_error::deserialize(&mut de).map_err(Refusal::json)?;
    de.end().map_err(|e| Refusal::Json {
        path: ".".into(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    Ok(v)
}
