//! Services as Swarm describes them (`docker service inspect`): mode, placement, reservations,
//! mounts and published ports — the fields placement reads.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::labels::{LabelError, Policy};
use super::node::{Platform, Resources};

#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ServiceId(pub String);

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Replicated { replicas: u64 },
    Global,
}

impl Default for Mode {
    fn default() -> Self {
        Mode::Replicated { replicas: 1 }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// Raw Swarm constraint expressions; parsed (and rejected with a clear error) by
    /// `constraint::parse` when the service is planned.
    #[serde(default)]
    pub constraints: Vec<String>,
    /// `spread=` descriptors, outermost first (Swarm's placement preferences).
    #[serde(default)]
    pub preferences: Vec<String>,
    /// `--replicas-max-per-node`; 0 means unlimited, as in Swarm.
    #[serde(default)]
    pub max_replicas: u64,
    /// Platforms the image supports; empty means any.
    #[serde(default)]
    pub platforms: Vec<Platform>,
}

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    Bind,
    #[default]
    Volume,
    Tmpfs,
    Npipe,
    Cluster,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    #[serde(default, rename = "type")]
    pub kind: MountType,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub target: String,
    /// Volume driver; `None` (or `local`) is the engine's built-in driver.
    #[serde(default)]
    pub driver: Option<String>,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    #[default]
    Ingress,
    Host,
}

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct PortConfig {
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default)]
    pub target_port: u16,
    #[serde(default)]
    pub published_port: u16,
    #[serde(default)]
    pub publish_mode: PublishMode,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub id: ServiceId,
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub placement: Placement,
    #[serde(default)]
    pub reservations: Resources,
    #[serde(default)]
    pub mounts: Vec<Mount>,
    #[serde(default)]
    pub ports: Vec<PortConfig>,
    /// Log driver, checked by the plugin filter like Swarm does.
    #[serde(default)]
    pub log_driver: Option<String>,
}

impl Service {
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        Service {
            id: ServiceId(name.clone()),
            name,
            ..Service::default()
        }
    }

    /// Berth's `berth.*` labels, validated.
    pub fn policy(&self) -> Result<Policy, LabelError> {
        Policy::from_labels(&self.labels)
    }

    /// Host-mode published ports: the only ports that bind on the node itself.
    pub fn host_ports(&self) -> impl Iterator<Item = (Protocol, u16)> + '_ {
        self.ports
            .iter()
            .filter(|p| p.publish_mode == PublishMode::Host && p.published_port != 0)
            .map(|p| (p.protocol, p.published_port))
    }

    /// Names of non-local volume drivers the tasks need on their node.
    pub fn volume_drivers(&self) -> impl Iterator<Item = &str> + '_ {
        self.mounts
            .iter()
            .filter(|m| m.kind == MountType::Volume)
            .filter_map(|m| m.driver.as_deref())
            .filter(|d| !d.is_empty() && *d != "local")
    }
}
