//! Which reaction a run simulates.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyKind {
    SwarmDefault,
    Manual,
    Berth,
}

impl PolicyKind {
    pub const ALL: [PolicyKind; 3] = [
        PolicyKind::SwarmDefault,
        PolicyKind::Manual,
        PolicyKind::Berth,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::SwarmDefault => "swarm-default",
            PolicyKind::Manual => "manual",
            PolicyKind::Berth => "berth",
        }
    }

    pub fn parse(s: &str) -> Option<PolicyKind> {
        PolicyKind::ALL.into_iter().find(|p| p.as_str() == s)
    }
}
