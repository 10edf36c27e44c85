//! One node's verdict on one task, shared by every way of placing a batch (the spread tree in
//! `batch`, SwarmKit's fill in `swarm_fill`) and by the static classes of `index`: the filter
//! pass (`pre_filter`, `first_failure`), the score key a node ranks by, and the pending reasons
//! of a batch that could not place everything.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use crate::framework::{Code, CycleState, FilterPlugin, MAX_SCORERS, Profile, Reason, TaskSpec};
use crate::snapshot::{NodeInfo, Snapshot};

/// A node's rank for one task: weighted normalised total, then each plugin's raw score, then
/// the lowest node index (= lowest node ID). Larger is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub total: u64,
    pub raw: [i64; MAX_SCORERS],
    pub rank: Reverse<u32>,
}

impl Key {
    pub fn node(&self) -> u32 {
        self.rank.0
    }
}

pub fn key(profile: &Profile, task: &TaskSpec, info: &NodeInfo) -> Key {
    let mut raw = [0i64; MAX_SCORERS];
    let mut total = 0u64;
    for (i, (plugin, weight)) in profile.scorers.iter().enumerate() {
        let r = plugin.score(task, info);
        raw[i] = r;
        total += u64::from(*weight) * u64::from(plugin.normalize(r));
    }
    Key {
        total,
        raw,
        rank: Reverse(info.idx),
    }
}

/// Why tasks of a batch stayed pending: the first failing reason of every node, counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reasons {
    pub counts: BTreeMap<Reason, u32>,
    /// An operator or a returning node must act; retrying will not help.
    pub unresolvable: bool,
}

pub struct Outcome {
    /// Chosen nodes in placement order, with the key they won with.
    pub placed: Vec<Key>,
    /// Set when fewer tasks than asked could be placed.
    pub pending: Option<Reasons>,
}

/// Runs pre-filter for every filter plugin; returns the active filters, or a rejection that
/// applies to every node.
pub fn pre_filter<'p>(
    profile: &'p Profile,
    cx: &mut CycleState,
    task: &TaskSpec,
) -> Result<Vec<&'p dyn FilterPlugin>, (Reason, bool)> {
    let mut active = Vec::with_capacity(profile.filters.len());
    for f in &profile.filters {
        let st = f.pre_filter(cx, task);
        match st.code {
            Code::Success => active.push(f.as_ref()),
            Code::Skip => {}
            Code::Unschedulable | Code::UnschedulableAndUnresolvable => {
                let reason = st.reason.unwrap_or(Reason::Static("rejected"));
                return Err((reason, st.code == Code::UnschedulableAndUnresolvable));
            }
        }
    }
    Ok(active)
}

/// The first failing filter on a node, in registry order.
pub fn first_failure(
    filters: &[&dyn FilterPlugin],
    cx: &CycleState,
    task: &TaskSpec,
    info: &NodeInfo,
) -> Option<(Reason, &'static str)> {
    for f in filters {
        let st = f.filter(cx, task, info);
        if !st.is_success() {
            return Some((st.reason.unwrap_or(Reason::Static("rejected")), f.name()));
        }
    }
    None
}

pub fn reject_all(n: usize, reason: Reason, unresolvable: bool) -> Outcome {
    let mut counts = BTreeMap::new();
    if n > 0 {
        counts.insert(reason, n as u32);
    }
    Outcome {
        placed: Vec::new(),
        pending: Some(Reasons {
            counts,
            unresolvable,
        }),
    }
}

/// Why a node cannot take the batch's next task.
#[derive(Clone)]
pub enum Failed {
    No,
    Because(Reason),
    /// A static filter: its reason in registry order is worked out only if the batch ends
    /// pending (the node is never chosen, so its state is the same then).
    Static,
}

/// The pending reasons of a batch: each node's first failing filter, or `blocked` for a node
/// that could still take a task but was not reached.
pub fn count_reasons(
    failed: Vec<Failed>,
    blocked: Reason,
    snap: &Snapshot,
    cx: &CycleState,
    task: &TaskSpec,
    active: &[&dyn FilterPlugin],
) -> Reasons {
    let mut counts = BTreeMap::new();
    for (i, f) in failed.into_iter().enumerate() {
        let reason = match f {
            Failed::No => blocked.clone(),
            Failed::Because(r) => r,
            Failed::Static => first_failure(active, cx, task, &snap.nodes[i])
                .map(|(r, _)| r)
                .unwrap_or_else(|| blocked.clone()),
        };
        *counts.entry(reason).or_insert(0) += 1;
    }
    Reasons {
        counts,
        unresolvable: false,
    }
}
