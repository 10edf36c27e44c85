//! The engine's datasets from the volume control service's records: one per slot of every
//! template whose volume exists, so the failover planner knows each slot's primary, epoch and
//! backend as the volume driver enforces them (not as inferred from where a task last ran).

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
    /// epoch before — so the plan's fence is a replay the control service answers as done, and
    /// the failover carries on from there instead of being refused as stale.
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
                let (primary, epoch) = match (&r.primary, &r.fenced_from) {
                    (Some(p), _) => (Some(p.clone()), r.epoch),
                    (None, Some(from)) => (Some(from.clone()), r.epoch.saturating_sub(1)),
                    (None, None) => (None, r.epoch),
                };
                out.push(Dataset {
                    name,
                    service: t.name.clone(),
                    slot,
                    primary: primary.map(NodeId),
                    epoch,
                    backend: backend(&r.backend),
                    size_bytes: r.maximum_size.unwrap_or(0),
                    standby: r.standbys.first().map(|s| NodeId(s.node.clone())),
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}
