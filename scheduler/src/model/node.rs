//! Nodes as Swarm describes them (`docker node inspect`), minus what placement never reads.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Swarm's node ID. Ordering by ID is the engine's final tie-break, as a stable key.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub String);

impl NodeId {
    pub fn new(id: impl Into<String>) -> Self {
        NodeId(id.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Manager,
    #[default]
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Manager => "manager",
            Role::Worker => "worker",
        }
    }
}

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Availability {
    #[default]
    Active,
    Pause,
    Drain,
}

impl Availability {
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::Active => "active",
            Availability::Pause => "pause",
            Availability::Drain => "drain",
        }
    }
}

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    #[default]
    Ready,
    Down,
    Unknown,
    Disconnected,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Ready => "ready",
            NodeState::Down => "down",
            NodeState::Unknown => "unknown",
            NodeState::Disconnected => "disconnected",
        }
    }
}

/// OS and architecture as the node's engine reports them (`x86_64`, not `amd64`: Swarm's
/// constraint matcher compares the raw string, only the platform filter normalises).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
}

/// CPU in NanoCPUs (1e9 = one core) and memory in bytes, Swarm's units.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Resources {
    #[serde(default)]
    pub nano_cpus: i64,
    #[serde(default)]
    pub memory_bytes: i64,
}

impl Resources {
    pub fn is_zero(&self) -> bool {
        self.nano_cpus == 0 && self.memory_bytes == 0
    }
}

impl std::ops::Add for Resources {
    type Output = Resources;
    fn add(self, o: Resources) -> Resources {
        Resources {
            nano_cpus: self.nano_cpus + o.nano_cpus,
            memory_bytes: self.memory_bytes + o.memory_bytes,
        }
    }
}

impl std::ops::Sub for Resources {
    type Output = Resources;
    fn sub(self, o: Resources) -> Resources {
        Resources {
            nano_cpus: self.nano_cpus - o.nano_cpus,
            memory_bytes: self.memory_bytes - o.memory_bytes,
        }
    }
}

/// A plugin the node's engine has (`Description.Engine.Plugins`), e.g. `Volume`/`berth`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EnginePlugin {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub id: NodeId,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub role: Role,
    #[serde(default)]
    pub availability: Availability,
    #[serde(default)]
    pub state: NodeState,
    #[serde(default)]
    pub addr: String,
    #[serde(default)]
    pub platform: Platform,
    /// Node labels (`docker node update --label-add`), what `node.labels.*` matches.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Engine labels (daemon.json `labels`), what `engine.labels.*` matches.
    #[serde(default)]
    pub engine_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub resources: Resources,
    /// `None` when the input did not say (hand-written scenarios): the plugin filter then
    /// assumes every plugin is present rather than rejecting every node. Shared: nodes of one
    /// engine build list the same plugins, and ingest keeps one copy of each distinct list
    /// (17 plugins on a stock engine; 100k nodes would otherwise hold 3.4M strings).
    #[serde(default)]
    pub plugins: Option<Arc<[EnginePlugin]>>,
}

/// Node label that Berth's daemon sets on a node it has declared dead and fenced out; an
/// operator removes it once the node is repaired. Datasets never stay on a fenced node.
pub const FENCED_LABEL: &str = "berth.fenced";

impl Node {
    pub fn new(id: impl Into<String>) -> Self {
        let id = id.into();
        Node {
            hostname: id.clone(),
            id: NodeId(id),
            ..Node::default()
        }
    }

    /// Whether Swarm would give this node new tasks (its Ready filter).
    pub fn accepts_tasks(&self) -> bool {
        self.state == NodeState::Ready && self.availability == Availability::Active
    }

    pub fn is_fenced(&self) -> bool {
        self.labels.get(FENCED_LABEL).is_some_and(|v| v == "true")
    }

    /// Whether the node can hold a dataset's live copy: up and not fenced out.
    pub fn can_hold_data(&self) -> bool {
        self.state == NodeState::Ready && !self.is_fenced()
    }
}
