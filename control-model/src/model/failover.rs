//! Failover at the control service: the executor's `fence` and `assign` (move, promote,
//! recreate), each with an epoch precondition and an idempotent replay, and the standby copies
//! of `replicated` datasets: which nodes hold them, how far each has caught up, which one a
//! promotion makes the data.
//!
//! A standby's *position* is the control-clock instant at which its last complete ship started
//! reading the primary: every write the primary acknowledged before then is in the standby's
//! copy. Writes happen only while the dataset is mounted, so a standby trails by the time writes
//! were possible after its position, not by wall time (an idle dataset's standby trails by 0).

use serde::{Deserialize, Serialize};

use super::{ControlError, Dataset, State};
use crate::options::BackendKind;

/// How an `assign` gives the dataset its data at the new epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssignMode {
    /// The newest whole copy comes to the new primary (`local`, `replicated`: pulled from the
    /// node holding it, which must be reachable; `shared`: re-pointed, nothing copied).
    Move,
    /// `replicated`: the new primary's standby copy becomes the data as it stands.
    Promote,
    /// A fresh empty copy, which the database refills from its own replicas.
    Recreate,
}

impl AssignMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AssignMode::Move => "move",
            AssignMode::Promote => "promote",
            AssignMode::Recreate => "recreate",
        }
    }
}

/// The assignment that ended a fence, kept so a replay of it answers the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub epoch: u64,
    pub primary: String,
    pub mode: AssignMode,
    /// `promote`: how many ms of possible writes the promoted copy lacked.
    #[serde(default)]
    pub lag_ms: Option<u64>,
    /// `promote`: how many bytes its last ship had to fetch (how far behind it was then).
    #[serde(default)]
    pub lag_bytes: Option<u64>,
}

/// One standby copy of a `replicated` dataset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Standby {
    /// The epoch of the primary copy its last complete ship came from; `None` while it holds
    /// nothing usable (new, or a copy that may hold writes the data never had, which the next
    /// ship replaces wholesale).
    pub epoch: Option<u64>,
    /// Control-clock ms at which that ship started reading the primary.
    pub position_ms: Option<u64>,
    /// Bytes that ship had to fetch.
    pub lag_bytes: Option<u64>,
}

impl Dataset {
    /// The latest instant a write could have been acknowledged on the primary's copy: now while
    /// mounted, else when the last mount ended (`None`: never mounted since the data began).
    fn writes_until(&self, now_ms: u64) -> Option<u64> {
        if self.mounted_on.is_some() {
            Some(now_ms)
        } else {
            self.released_at_ms
        }
    }

    /// How many ms of possible writes standby `node`'s copy lacks; `None` if it holds nothing
    /// usable.
    pub fn standby_lag_ms(&self, node: &str, now_ms: u64) -> Option<u64> {
        let pos = self.standbys.get(node)?.position_ms?;
        Some(
            self.writes_until(now_ms)
                .map_or(0, |w| w.saturating_sub(pos)),
        )
    }

    /// Nodes holding a whole copy at the current epoch (none while fenced; every live node for
    /// `shared`, whose one copy every node mounts).
    pub fn whole_copy_on(&self, s: &State) -> Vec<String> {
        if self.fenced {
            return Vec::new();
        }
        match self.backend() {
            BackendKind::Shared => s
                .nodes
                .values()
                .filter(|n| !n.dead)
                .map(|n| n.uuid.clone())
                .collect(),
            _ if self.primary_copy_whole(s.reported.get(&self.dataset_id)) => {
                vec![self.primary.clone()]
            }
            _ => Vec::new(),
        }
    }
}

fn stale(volume: &str, d: &Dataset, reason: String) -> ControlError {
    ControlError::Epoch {
        volume: volume.to_string(),
        epoch: d.epoch,
        reason,
    }
}

/// After a primary change: the new primary is no longer a standby; a `replicated` dataset's old
/// primary becomes one, holding nothing usable until the new primary's copy replaces its own
/// (it may hold writes past the new data: fenced, never merged); extra standbys beyond the
/// dataset's replicas are dropped, the least caught-up first (ties by node ID).
pub(super) fn rotate_standbys(d: &mut Dataset, old_primary: &str) {
    let new = d.primary.clone();
    d.standbys.remove(&new);
    if d.backend() != BackendKind::Replicated {
        d.standbys.clear();
        return;
    }
    if !old_primary.is_empty() && old_primary != new {
        d.standbys
            .insert(old_primary.to_string(), Standby::default());
    }
    let keep = d.replicas().saturating_sub(1) as usize;
    while d.standbys.len() > keep {
        let worst = d
            .standbys
            .iter()
            .min_by_key(|(n, s)| {
                (
                    s.position_ms.is_some(),
                    s.position_ms,
                    std::cmp::Reverse(*n),
                )
            })
            .map(|(n, _)| n.clone());
        match worst {
            Some(n) => d.standbys.remove(&n),
            None => break,
        };
    }
}

impl State {
    /// Refuses a fence of volume `name` from `from`, or an assignment of it to `to`, at `epoch`,
    /// that would take it from the node holding its mount while that node's lease runs
    /// (`leases`: ms left by node, as `control::liveness` says): until then the node may still
    /// be writing, and it stops its containers before its lease ends. A node declared dead is
    /// the operator's word that it is not writing. A request that `fence` or `assign` refuses
    /// anyway (another epoch, another holder) passes here, so that it gets their 409: waiting
    /// would not help it.
    pub fn check_handover(
        &self,
        name: &str,
        epoch: u64,
        from: Option<&str>,
        to: Option<&str>,
        leases: &std::collections::BTreeMap<String, u64>,
    ) -> Result<(), ControlError> {
        let Some(d) = self.by_name(name).filter(|d| d.epoch == epoch) else {
            return Ok(());
        };
        let Some(h) = d.mounted_on.as_deref() else {
            return Ok(());
        };
        if from.is_some_and(|f| f != h) || to == Some(h) {
            return Ok(());
        }
        let dead = self.nodes.get(h).is_some_and(|n| n.dead);
        match leases.get(h).copied().filter(|l| *l > 0) {
            Some(remaining_ms) if !dead => Err(ControlError::Leased {
                volume: name.to_string(),
                node: h.to_string(),
                epoch: d.epoch,
                remaining_ms,
            }),
            _ => Ok(()),
        }
    }

    /// The fence request as the service answers it (`POST /v1/berth/volumes/{name}/fence`):
    /// refused with `Leased` while the holder's lease runs (`leases`: ms left by node, as
    /// `control::liveness` says), else [`State::fence`]. Whoever serves fences (the control
    /// service, the simulator) calls this one composition.
    pub fn fence_checked(
        &mut self,
        name: &str,
        node: &str,
        expect_epoch: u64,
        now_ms: u64,
        leases: &std::collections::BTreeMap<String, u64>,
    ) -> Result<Dataset, ControlError> {
        self.check_handover(name, expect_epoch, Some(node), None, leases)?;
        self.fence(name, node, expect_epoch, now_ms)
    }

    /// The assign request as the service answers it: [`State::check_handover`], then
    /// [`State::assign`].
    pub fn assign_checked(
        &mut self,
        name: &str,
        primary: &str,
        epoch: u64,
        mode: AssignMode,
        now_ms: u64,
        leases: &std::collections::BTreeMap<String, u64>,
    ) -> Result<Dataset, ControlError> {
        self.check_handover(name, epoch, None, Some(primary), leases)?;
        self.assign(name, primary, epoch, mode, now_ms)
    }

    /// Gives a `replicated` dataset the standbys it lacks from registered live nodes: fewest
    /// roles (primary or standby of any dataset) first, ties by node ID. Returns whether any
    /// was added.
    pub(super) fn fill_standbys(&mut self, id: &str) -> bool {
        let Some(d) = self.datasets.get(id) else {
            return false;
        };
        let want = d.replicas().saturating_sub(1) as usize;
        if d.backend() != BackendKind::Replicated || d.standbys.len() >= want {
            return false;
        }
        let mut roles: std::collections::BTreeMap<&str, usize> = self
            .nodes
            .values()
            .filter(|n| !n.dead)
            .map(|n| (n.uuid.as_str(), 0))
            .collect();
        for o in self.datasets.values().filter(|o| !o.deleted) {
            for n in
                std::iter::once(o.primary.as_str()).chain(o.standbys.keys().map(String::as_str))
            {
                if let Some(c) = roles.get_mut(n) {
                    *c += 1;
                }
            }
        }
        let mut candidates: Vec<(usize, String)> = roles
            .into_iter()
            .filter(|(n, _)| {
                *n != d.primary
                    && !d.standbys.contains_key(*n)
                    && d.fenced_from.as_deref() != Some(*n)
            })
            .map(|(n, c)| (c, n.to_string()))
            .collect();
        candidates.sort();
        let need = want - d.standbys.len();
        let picked: Vec<String> = candidates.into_iter().take(need).map(|(_, n)| n).collect();
        if picked.is_empty() {
            return false;
        }
        let d = self.datasets.get_mut(id).expect("looked up above");
        for n in picked {
            d.standbys.insert(n, Standby::default());
        }
        true
    }

    /// Fences volume `name` away from `node`: epoch `expect_epoch` → +1, `node`'s mount claim
    /// and lease dropped, and no node may mount until an `assign` at the new epoch. Replaying a
    /// fence that already happened answers the same; any other epoch is refused with the
    /// current one.
    pub fn fence(
        &mut self,
        name: &str,
        node: &str,
        expect_epoch: u64,
        now_ms: u64,
    ) -> Result<Dataset, ControlError> {
        let id = self.id_of(name)?;
        let d = self.live(&id)?;
        if d.fenced && d.epoch == expect_epoch + 1 && d.fenced_from.as_deref() == Some(node) {
            return Ok(d.clone());
        }
        if d.epoch != expect_epoch {
            return Err(stale(
                name,
                d,
                format!("the fence expected epoch {expect_epoch}"),
            ));
        }
        if let Some(h) = d.mounted_on.as_deref()
            && h != node
        {
            return Err(stale(
                name,
                d,
                format!("it is mounted on {h}, not on {node}; fence the node that holds it"),
            ));
        }
        if let Some(h) = self.lease_holder(&id, now_ms as f64 / 1000.0)
            && h != node
        {
            return Err(stale(name, d, format!("it is leased to {h}")));
        }
        let whole = d.primary_copy_whole(self.reported.get(&id));
        if self.leases.get(&id).is_some_and(|l| l.node_uuid == node) {
            self.leases.remove(&id);
        }
        let d = self.live_mut(&id)?;
        if whole {
            d.previous_primary = Some(d.primary.clone());
            d.source_epoch = Some(d.epoch);
        }
        d.epoch += 1;
        d.fenced = true;
        d.fenced_from = Some(node.to_string());
        d.fenced_at_ms = Some(now_ms);
        if d.mounted_on.take().is_some() {
            d.mounted_since_ms = None;
            d.released_at_ms = Some(now_ms);
        }
        self.touch(&id);
        Ok(self.datasets[&id].clone())
    }

    /// Ends a fence: `primary` becomes the primary of volume `name` at `epoch` (which must be
    /// the current, fenced epoch), its data coming as `mode` says. Replaying the assignment that
    /// already happened answers the same; anything else is refused with the current epoch.
    pub fn assign(
        &mut self,
        name: &str,
        primary: &str,
        epoch: u64,
        mode: AssignMode,
        now_ms: u64,
    ) -> Result<Dataset, ControlError> {
        let id = self.id_of(name)?;
        let d = self.live(&id)?;
        if let Some(a) = &d.assignment
            && (a.epoch, a.primary.as_str(), a.mode) == (epoch, primary, mode)
            && d.epoch == epoch
            && !d.fenced
        {
            return Ok(d.clone());
        }
        if d.epoch != epoch {
            return Err(stale(
                name,
                d,
                format!("the assignment was for epoch {epoch}"),
            ));
        }
        if !d.fenced {
            let how = d
                .assignment
                .as_ref()
                .filter(|a| a.epoch == d.epoch)
                .map(|a| format!(" ({})", a.mode.as_str()))
                .unwrap_or_default();
            return Err(stale(
                name,
                d,
                format!(
                    "{} is already its primary at this epoch{how}; fence first",
                    d.primary
                ),
            ));
        }
        if self.nodes.get(primary).is_none_or(|n| n.dead) {
            return Err(ControlError::Invalid(format!(
                "node {primary} is not a registered live node"
            )));
        }
        let (mut lag_ms, mut lag_bytes) = (None, None);
        if mode == AssignMode::Promote {
            if d.backend() != BackendKind::Replicated {
                return Err(ControlError::Invalid(format!(
                    "promote needs a replicated dataset; {name} is {}",
                    d.backend().as_str()
                )));
            }
            let Some(sb) = d.standbys.get(primary).filter(|s| s.position_ms.is_some()) else {
                return Err(stale(
                    name,
                    d,
                    format!("{primary} holds no shipped standby copy to promote"),
                ));
            };
            lag_ms = d.standby_lag_ms(primary, d.fenced_at_ms.unwrap_or(now_ms));
            lag_bytes = Some(sb.lag_bytes.unwrap_or(0));
        }
        let d = self.live_mut(&id)?;
        let old = std::mem::replace(&mut d.primary, primary.to_string());
        let old = d.fenced_from.clone().unwrap_or(old);
        d.fenced = false;
        match mode {
            AssignMode::Move => {}
            AssignMode::Promote => {
                let mine = d.standbys.get(primary).and_then(|s| s.position_ms);
                // A standby that got further than the promoted one holds writes the data no
                // longer has: it counts again only once replaced by the new primary's copy.
                for s in d.standbys.values_mut() {
                    if s.position_ms > mine {
                        *s = Standby::default();
                    }
                }
                d.promoted_at = Some(epoch);
                d.previous_primary = Some(primary.to_string());
                d.source_epoch = Some(epoch);
            }
            AssignMode::Recreate => {
                for s in d.standbys.values_mut() {
                    *s = Standby::default();
                }
                d.recreated_at = Some(epoch);
                d.previous_primary = None;
                d.source_epoch = None;
            }
        }
        d.assignment = Some(Assignment {
            epoch,
            primary: primary.to_string(),
            mode,
            lag_ms,
            lag_bytes,
        });
        rotate_standbys(d, &old);
        self.fill_standbys(&id);
        self.touch(&id);
        Ok(self.datasets[&id].clone())
    }

    /// Records that standby `node` of dataset `id` finished a ship from the primary's copy at
    /// `epoch`, which started `age_ms` ago and fetched `bytes`. Refused (with the current epoch)
    /// if the copy it shipped from is no longer the data, or `node` is not a standby: a late
    /// report never makes a copy count.
    pub fn report_standby(
        &mut self,
        id: &str,
        node: &str,
        epoch: u64,
        age_ms: u64,
        bytes: u64,
        now_ms: u64,
    ) -> Result<Dataset, ControlError> {
        let d = self.live(id)?;
        let name = d.name().unwrap_or(id).to_string();
        if d.fenced || d.epoch != epoch {
            return Err(stale(&name, d, format!("the ship was from epoch {epoch}")));
        }
        let Some(sb) = d.standbys.get(node) else {
            return Err(stale(
                &name,
                d,
                format!("{node} is not one of its standbys"),
            ));
        };
        let position = now_ms.saturating_sub(age_ms);
        if sb.epoch == Some(epoch) && sb.position_ms >= Some(position) {
            return Ok(d.clone());
        }
        let d = self.live_mut(id)?;
        d.standbys.insert(
            node.to_string(),
            Standby {
                epoch: Some(epoch),
                position_ms: Some(position),
                lag_bytes: Some(bytes),
            },
        );
        self.touch(id);
        Ok(self.datasets[id].clone())
    }
}
