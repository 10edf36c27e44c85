//! A plan's steps grouped into *lanes*: one per slot and wave (node-level steps such as
//! `unfence` form their own lane). Lanes of a wave run side by side; a lane's steps run one
//! after the other.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::failover::{Action, Step};
use crate::model::{Cluster, NodeId};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "step")]
pub enum LaneStep {
    Engine(Action),
    /// An incremental move's bulk copy while the old task still serves (placed before the
    /// stop, so the slot is down only for the delta).
    PreCopy,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lane {
    pub wave: u32,
    /// Service name and slot; `None` for node-level steps.
    pub slot: Option<(String, u64)>,
    pub steps: Vec<LaneStep>,
    /// The step under way.
    pub i: usize,
    /// The volume of the slot (stateful services) and the epoch its task must start at: the
    /// one this lane fences or assigns to, or the current one when it changes none.
    pub volume: Option<String>,
    pub epoch: Option<u64>,
    /// Drain budget of the slot's service (`berth.max-unavailable`).
    pub budget: u32,
    pub done: bool,
    /// Stopped by this lane and not started yet: counted against the drain budget.
    pub stopped: bool,
    /// Ended early (refused, failed, or the world moved under it).
    pub dropped: bool,
    /// A rescheduling move that failed after its slot stopped and now puts the slot back
    /// where it ran (its steps after the failed one were replaced).
    #[serde(default)]
    pub rolled_back: bool,
}

impl Lane {
    pub fn current(&self) -> Option<&LaneStep> {
        self.steps.get(self.i)
    }

    /// The target of the lane's move, for its pre-copy.
    pub fn move_ends(&self) -> Option<(&NodeId, &NodeId)> {
        self.steps.iter().find_map(|s| match s {
            LaneStep::Engine(Action::MoveDataset { from, to, .. }) => Some((from, to)),
            _ => None,
        })
    }
}

/// What a plan leaves out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scope {
    /// Only stateful slots (an operator following the plan by hand leaves the stateless ones
    /// to Swarm).
    pub stateful_only: bool,
    pub incremental: bool,
}

/// Groups the plan's steps into lanes, in plan order, leaving out slots already busy with
/// another plan. Returns the lanes and how many steps were left out.
pub fn build(
    cluster: &Cluster,
    steps: &[Step],
    scope: Scope,
    busy: &std::collections::BTreeSet<(String, u64)>,
) -> (Vec<Lane>, usize) {
    let mut lanes: Vec<Lane> = Vec::new();
    let mut by_key: BTreeMap<(u32, Option<(String, u64)>), usize> = BTreeMap::new();
    let mut skipped = 0;
    for step in steps {
        let mut policy = None;
        let slot = match (&step.service, step.slot) {
            (Some(name), Some(slot)) => match cluster.service_by_name(name) {
                Some(svc) => {
                    policy = svc.policy().ok();
                    Some((name.clone(), slot))
                }
                None => continue,
            },
            _ => None,
        };
        if let Some(s) = &slot {
            let stateful = policy.as_ref().is_some_and(|p| p.stateful.is_some());
            if (scope.stateful_only && !stateful) || busy.contains(s) {
                skipped += 1;
                continue;
            }
        }
        let key = (step.wave, slot.clone());
        let idx = *by_key.entry(key).or_insert_with(|| {
            let volume = policy
                .as_ref()
                .and_then(|p| p.stateful.as_ref())
                .zip(slot.as_ref())
                .map(|(st, (_, n))| st.volume_for_slot(*n));
            let epoch = volume
                .as_deref()
                .map(|v| cluster.dataset(v).map(|d| d.epoch).unwrap_or(0));
            lanes.push(Lane {
                wave: step.wave,
                slot: slot.clone(),
                steps: Vec::new(),
                i: 0,
                volume,
                epoch,
                budget: policy.as_ref().map(|p| p.max_unavailable).unwrap_or(1),
                done: false,
                stopped: false,
                dropped: false,
                rolled_back: false,
            });
            lanes.len() - 1
        });
        let lane = &mut lanes[idx];
        match &step.action {
            Action::Fence { epoch, .. }
            | Action::MoveDataset { epoch, .. }
            | Action::PromoteStandby { epoch, .. }
            | Action::RecreateDataset { epoch, .. } => {
                lane.epoch = Some(lane.epoch.unwrap_or(0).max(*epoch));
            }
            _ => {}
        }
        if scope.incremental
            && let Action::MoveDataset { copy: true, .. } = step.action
        {
            // Pre-copy right after the target is chosen, before the task stops.
            let at = lane
                .steps
                .iter()
                .position(|s| matches!(s, LaneStep::Engine(Action::StopTask { .. })))
                .unwrap_or(lane.steps.len());
            lane.steps.insert(at, LaneStep::PreCopy);
        }
        lane.steps.push(LaneStep::Engine(step.action.clone()));
    }
    (lanes, skipped)
}
