//! The failover history: one record per plan run, for the controller's API and the
//! simulator's report.

use serde::{Deserialize, Serialize};

use crate::failover::{Event, Step};

/// Who ran a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Actor {
    Berth,
    /// A human following Berth's plan by hand.
    Operator,
}

impl Actor {
    pub fn as_str(self) -> &'static str {
        match self {
            Actor::Berth => "berth",
            Actor::Operator => "operator",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "end")]
pub enum RunEnd {
    /// Every lane ran to its end.
    Completed,
    /// Some lanes were dropped (refused, failed, or overtaken by the world); their slots are
    /// re-planned.
    Dropped { lanes: u32 },
    /// The run was dropped as a whole (a restart without state).
    Abandoned,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverRecord {
    pub run: u64,
    pub by: Actor,
    /// `None` for a re-admission or a rescheduling run.
    pub event: Option<Event>,
    pub steps: Vec<Step>,
    pub started_ms: u64,
    pub ended_ms: Option<u64>,
    pub end: Option<RunEnd>,
    /// A rescheduling run (`event` is `None`): moves of running slots, not a failover.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rebalance: bool,
}
