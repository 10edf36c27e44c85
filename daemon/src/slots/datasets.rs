//! The engine's datasets from the volume control service's records: one per slot of every
//! template whose volume exists, so the failover planner knows each slot's primary, epoch and
//! backend as the volume driver enforces them (not as inferred from where a task last ran).

use berth_control_model::fencing::as_planned;
use berth_control_model::wire::VolumeRecord;
use berth_scheduler::model::labels::{SLOT_PLACEHOLDER, VOLUME};
use berth_scheduler::model::{Backend, Dataset, NodeId};

use super::{Observed, labels_of};

fn backend(s: &str) -> Backend {
    match s {
        "shared" => Backend::Shared,
        "replicated" => Backend::Replicated,
        _ => Backend::Local,
    }
}

impl Observed {
    /// One dataset per template slot with a volume record. A volume fenced and not assigned
    /// yet (a failover cut short) is given as it was before the fence — its last holder at the
    /// epoch before — and marked fenced (`fencing::as_planned`), so the plan's fence is a
    /// replay the control service answers as done, and the failover carries on from there
    /// (assigning before any start) instead of being refused as stale. The standby shown is one
    /// a promotion can use: the least behind of those holding a shipped copy (ties by node),
    /// never one the service would refuse to promote.
    pub fn datasets(&self, records: &[VolumeRecord]) -> Vec<Dataset> {
        let mut out = Vec::new();
        for t in self.templates.values() {
            let Some(pattern) = labels_of(&t.spec).get(VOLUME).cloned() else {
                continue;
            };
            for slot in 1..=t.slots {
                let name = pattern.replace(SLOT_PLACEHOLDER, &slot.to_string());
                let Some(r) = records.iter().find(|r| r.name == name) else {
                    continue;
                };
                let p = as_planned(r.primary.as_deref(), r.fenced_from.as_deref(), r.epoch);
                let standby = r
                    .standbys
                    .iter()
                    .filter(|s| s.epoch.is_some())
                    .min_by(|a, b| {
                        (a.lag_ms.unwrap_or(u64::MAX), &a.node)
                            .cmp(&(b.lag_ms.unwrap_or(u64::MAX), &b.node))
                    })
                    .map(|s| NodeId(s.node.clone()));
                out.push(Dataset {
                    name,
                    service: t.name.clone(),
                    slot,
                    primary: p.primary.map(|n| NodeId(n.to_string())),
                    epoch: p.epoch,
                    backend: backend(&r.backend),
                    size_bytes: r.maximum_size.unwrap_or(0),
                    standby,
                    fenced: p.fenced,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}
