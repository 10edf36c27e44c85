//! `[rebalance]`: rescheduling in a scenario — `berth run --rebalance-auto`'s knobs for the
//! `berth` policy (and `berth-move-all`'s instant), when an operator runs `docker service
//! update --force` under `swarm-force`, and nodes that join the swarm during the run. A
//! scenario with this section is run under the rescheduling policies
//! ([`crate::policy_kind::PolicyKind::RESCHEDULING`]).

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Serialize;

use crate::clock::{Ms, SECOND};

use super::ScenarioError;
use super::file::{Dur, RebalanceFile};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rescheduling {
    pub quiet: Ms,
    pub max_moves: u32,
    pub max_in_flight: u32,
    pub margin: u32,
    pub resync: Ms,
    pub force_at: Ms,
    pub sample: Ms,
    /// (when, node index), by time then node.
    pub joins: Vec<(Ms, u32)>,
}

impl Rescheduling {
    /// Whether the node joins the swarm only during the run.
    pub fn joins_later(&self, node: u32) -> bool {
        self.joins.iter().any(|&(_, n)| n == node)
    }
}

pub fn resolve(
    f: Option<&RebalanceFile>,
    index: &BTreeMap<String, u32>,
    err: &dyn Fn(Range<usize>, String) -> ScenarioError,
) -> Result<Option<Rescheduling>, ScenarioError> {
    let Some(f) = f else { return Ok(None) };
    let mut joins = Vec::new();
    for j in &f.join {
        for n in &j.nodes {
            let i = index
                .get(n.get_ref())
                .copied()
                .ok_or_else(|| err(n.span(), format!("unknown node `{}`", n.get_ref())))?;
            joins.push((j.at.ms(), i));
        }
    }
    joins.sort_unstable();
    let positive = |v: Option<u32>, d: u32| v.unwrap_or(d).max(1);
    Ok(Some(Rescheduling {
        quiet: f.quiet.map_or(600 * SECOND, Dur::ms),
        max_moves: positive(f.max_moves, 2),
        max_in_flight: positive(f.max_in_flight, 1),
        margin: positive(f.margin, 2),
        resync: f.resync.map_or(10 * SECOND, Dur::ms).max(1),
        force_at: f.force_at.ms(),
        sample: f.sample.map_or(10 * SECOND, Dur::ms).max(1),
        joins,
    }))
}
