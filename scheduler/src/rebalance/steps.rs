//! A rescheduling plan as the executor's steps: each move is the sequence a drain uses for a
//! live node — the target, the stop, the fence (epoch + 1), the data handed over at that epoch,
//! the start — so it is carried out by the same epoch-fenced commands as a failover
//! (`executor::Executor::run_moves`, which adds the pre-copy before the stop).

use crate::failover::{Action, Step};
use crate::model::{Backend, Cluster};

use super::{Move, MoveMode, RebalancePlan};

/// The steps of every move of `plan`, in plan order, each in its move's wave. The epoch is
/// the dataset's in `cluster` (the one the plan was made from): a dataset whose epoch moved
/// since has its fence refused, and its move is dropped before anything stops.
pub fn move_steps(cluster: &Cluster, plan: &RebalancePlan) -> Vec<Step> {
    plan.moves
        .iter()
        .flat_map(|m| steps_of(cluster, m))
        .collect()
}

fn steps_of(cluster: &Cluster, m: &Move) -> Vec<Step> {
    let ds = cluster.dataset(&m.dataset);
    let epoch = ds.map_or(0, |d| d.epoch) + 1;
    let backend = ds.map(|d| d.backend).unwrap_or(match m.mode {
        MoveMode::Repoint => Backend::Shared,
        MoveMode::PromoteStandby => Backend::Replicated,
        MoveMode::PreCopy | MoveMode::Resync => Backend::Local,
    });
    let data = match m.mode {
        MoveMode::PreCopy | MoveMode::Repoint => Action::MoveDataset {
            dataset: m.dataset.clone(),
            from: m.from.clone(),
            to: m.to.clone(),
            epoch,
            backend,
            copy: m.mode == MoveMode::PreCopy,
        },
        MoveMode::PromoteStandby => Action::PromoteStandby {
            dataset: m.dataset.clone(),
            from: m.from.clone(),
            to: m.to.clone(),
            epoch,
        },
        MoveMode::Resync => Action::RecreateDataset {
            dataset: m.dataset.clone(),
            node: m.to.clone(),
            epoch,
        },
    };
    [
        Action::ChooseTarget {
            node: m.to.clone(),
            why: m.reason.clone(),
        },
        Action::StopTask {
            node: m.from.clone(),
        },
        Action::Fence {
            dataset: m.dataset.clone(),
            node: m.from.clone(),
            epoch,
        },
        data,
        Action::StartTask { node: m.to.clone() },
    ]
    .into_iter()
    .map(|action| Step {
        wave: m.wave,
        service: Some(m.service.clone()),
        slot: Some(m.slot),
        action,
    })
    .collect()
}
