//! One running slot judged where it is against every node that could take it now: the
//! planner's own filters and spread levels, in the terms a rescheduling move is explained in.
//!
//! The slot's task is taken off its node first (as `explain` judges a running slot), so its
//! own node is compared on the same footing as the others.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::framework::{CycleState, DatasetHome, FilterKind, SlotDataset, SpreadLevel};
use crate::model::{Cluster, Mode, Strategy};
use crate::schedule::batch::{first_failure, key, pre_filter};
use crate::schedule::index::DomainTable;
use crate::schedule::run::{rebook, unbook};
use crate::schedule::{Index, task_spec};
use crate::snapshot::Snapshot;

/// How well a slot sits on a node, worst first: lower is better, compared in field order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct SlotScore {
    /// Tasks by which the service's domains exceed a topology spread's max skew
    /// (`berth.topology-spread`), summed over its levels.
    pub skew_excess: u32,
    /// Tasks by which the slot's domain holds more than the least loaded one, summed over
    /// the service's placement preferences (Swarm's `--placement-pref`, soft).
    pub preference_gap: u32,
    /// Tasks on the node besides this slot (0 under `binpack`, which never moves for load).
    pub load: u32,
}

/// What judging a slot found.
pub(super) struct Judged {
    pub before: SlotScore,
    /// The best node other than its own, if any node could take it.
    pub best: Option<Target>,
}

pub(super) struct Target {
    pub node: u32,
    pub after: SlotScore,
    /// In words: what moving there improves.
    pub why: String,
}

/// Per spread level: the service's tasks per domain (the slot taken off), and which domains
/// have a node that passes the static filters (only those count for the least loaded).
struct Level<'i> {
    spread: SpreadLevel,
    table: &'i DomainTable,
    counts: Vec<u32>,
    eligible: Vec<bool>,
    max: u32,
    min: u32,
    at_min: u32,
}

impl Level<'_> {
    /// The domains' spread once the slot is in domain `v`: (most loaded, least loaded).
    fn with_one_in(&self, v: u32) -> (u32, u32) {
        let c = self.counts[v as usize] + 1;
        let max = self.max.max(c);
        let only_least =
            self.eligible[v as usize] && self.counts[v as usize] == self.min && self.at_min == 1;
        let min = if only_least {
            // `v` was the only least loaded domain: the least is now one higher.
            self.min + 1
        } else {
            self.min
        };
        (max, min.min(max))
    }
}

/// What judging reads besides the snapshot, kept in step with the moves.
pub(super) struct Board {
    /// Nodes that take new tasks, by (load, dense index): the emptiest first. Built on the
    /// first judgement that needs more than the least load (a cluster at rest never does).
    by_load: Option<BTreeSet<(u32, u32)>>,
    /// The least load of a node that takes new tasks, while `by_load` is not built.
    min_load: Option<u32>,
    /// Per dense service (stateful ones): the nodes its tasks run on, one entry per task.
    members: Vec<Vec<u32>>,
    /// Per static class, per spread descriptor: which domains have a node the class passes.
    eligible: BTreeMap<u32, BTreeMap<String, Vec<bool>>>,
}

impl Board {
    /// `loads`: per dense node, its tasks and whether it takes new ones; `placed`: every task
    /// of a stateful service, (dense service, dense node).
    pub fn new(
        ix: &Index,
        loads: impl Iterator<Item = (u32, bool)>,
        placed: &[(usize, u32)],
    ) -> Board {
        let min_load = loads
            .filter(|(_, accepts)| *accepts)
            .map(|(total, _)| total)
            .min();
        let mut members = vec![Vec::new(); ix.services.len()];
        for &(s, ni) in placed {
            members[s].push(ni);
        }
        Board {
            by_load: None,
            min_load,
            members,
            eligible: BTreeMap::new(),
        }
    }

    /// Records a move made on the snapshot (its loads already updated).
    pub fn moved(&mut self, snap: &Snapshot, s: usize, from: u32, to: u32) {
        match &mut self.by_load {
            // Built from the snapshot as the move left it.
            None => {
                self.by_load(snap);
            }
            Some(by_load) => {
                for (ni, old) in [(from, 1i64), (to, -1)] {
                    let info = &snap.nodes[ni as usize];
                    let before = (i64::from(info.total_tasks) + old) as u32;
                    if by_load.remove(&(before, ni)) {
                        by_load.insert((info.total_tasks, ni));
                    }
                }
            }
        }
        if let Some(m) = self.members[s].iter_mut().find(|m| **m == from) {
            *m = to;
        }
    }

    fn least_load(&self) -> Option<u32> {
        match &self.by_load {
            Some(b) => b.first().map(|e| e.0),
            None => self.min_load,
        }
    }

    fn by_load(&mut self, snap: &Snapshot) -> &BTreeSet<(u32, u32)> {
        self.by_load.get_or_insert_with(|| {
            snap.nodes
                .iter()
                .filter(|info| info.node.accepts_tasks())
                .map(|info| (info.total_tasks, info.idx))
                .collect()
        })
    }

    fn eligible(&mut self, ix: &Index, class: u32, level: &SpreadLevel) -> &[bool] {
        let per_class = self.eligible.entry(class).or_default();
        // Looked up by reference first: the descriptor is cloned only when inserted.
        if !per_class.contains_key(&level.descriptor) {
            let table = ix.domain(level);
            let c = &ix.classes[class as usize];
            let mut el = vec![false; table.values.len()];
            for &ni in &c.passing {
                el[table.of_node[ni as usize] as usize] = true;
            }
            per_class.insert(level.descriptor.clone(), el);
        }
        &per_class[&level.descriptor]
    }
}

/// A slot's spread levels and score where it is, when they do not settle it.
pub(super) struct Open<'i> {
    levels: Vec<Level<'i>>,
    before: SlotScore,
    spread_off: bool,
}

pub(super) enum Screen<'i> {
    /// Nothing can improve: it stays.
    Settled,
    /// The nodes must be tried.
    Open(Open<'i>),
}

/// Judging slot `slot` of service `s`, running on node `at`, starts here: the cheap part
/// (its spread and the least load), which settles most slots. `own` is the tasks on node
/// `at`, the slot's included. `None` when the slot is not one the planner judges.
pub(super) fn screen<'i>(
    cluster: &Cluster,
    ix: &'i Index,
    board: &mut Board,
    s: usize,
    slot: u64,
    at: u32,
    own: u32,
) -> Option<Screen<'i>> {
    let policy = &ix.policies[s];
    policy.stateful.as_ref()?;
    if !matches!(ix.service(cluster, s).mode, Mode::Replicated { .. }) {
        return None;
    }
    let profile = &ix.profiles[&policy.strategy];
    // The spread levels read the service's policy and placement, never the slot's dataset:
    // they are worked out before the costlier per-node setup, which most slots never need.
    let plain = task_spec(cluster, ix, s, Some(slot), None);
    let mut levels: Vec<Level> = Vec::new();
    for spread in profile.spreads.iter().flat_map(|p| p.levels(&plain)) {
        let table = ix.domain(&spread);
        let eligible = board.eligible(ix, ix.class_of[s], &spread).to_vec();
        let mut counts = vec![0u32; table.values.len()];
        for &ni in &board.members[s] {
            counts[table.of_node[ni as usize] as usize] += 1;
        }
        // The slot itself is off its node.
        counts[table.of_node[at as usize] as usize] -= 1;
        let max = counts.iter().copied().max().unwrap_or(0);
        let mut min = u32::MAX;
        let mut at_min = 0;
        for (c, _) in counts.iter().zip(&eligible).filter(|(_, e)| **e) {
            match (*c).cmp(&min) {
                std::cmp::Ordering::Less => (min, at_min) = (*c, 1),
                std::cmp::Ordering::Equal => at_min += 1,
                std::cmp::Ordering::Greater => {}
            }
        }
        if at_min == 0 {
            min = 0;
        }
        levels.push(Level {
            spread,
            table,
            counts,
            eligible,
            max,
            min,
            at_min,
        });
    }
    let binpack = policy.strategy == Strategy::Binpack;
    // Its own node's load without the slot, as if unbooked (which takes exactly one task off).
    let own = own.saturating_sub(1);
    let before = score(&levels, if binpack { 0 } else { own }, at);
    // A spread can be improved only if it is off: a hard level beyond its skew, or a soft
    // level whose domain holds two more than the least (one more is as even as it gets).
    let spread_off = before.skew_excess > 0
        || levels.iter().any(|l| {
            let v = l.table.of_node[at as usize];
            l.spread.max_skew.is_none() && l.counts[v as usize] + 1 - l.with_one_in(v).1 >= 2
        });
    // Only the load can improve and no node is emptier than this one: the scan over the
    // emptiest nodes below would stop at its first node.
    if !spread_off
        && board
            .least_load()
            .is_none_or(|m| binpack || m >= before.load)
    {
        return Some(Screen::Settled);
    }
    Some(Screen::Open(Open {
        levels,
        before,
        spread_off,
    }))
}

/// The rest of judging a slot [`screen`] left open: every node it could go to, tried with
/// the slot taken off its node. `standby`: the node holding its dataset's standby copy,
/// preferred on ties (promoting it copies nothing); `avoid`: nodes holding the standby of
/// another of the service's slots (a replica there could not be promoted onto).
#[allow(clippy::too_many_arguments)]
pub(super) fn judge_open(
    cluster: &Cluster,
    ix: &Index,
    snap: &mut Snapshot,
    board: &mut Board,
    s: usize,
    slot: u64,
    at: u32,
    standby: Option<u32>,
    avoid: &[u32],
    open: Open,
) -> Option<Judged> {
    unbook(cluster, ix, snap, s, slot, at);
    let out = judge_off(
        cluster,
        ix,
        snap,
        board,
        s,
        slot,
        at,
        standby,
        avoid,
        &open.levels,
        open.before,
        open.spread_off,
    );
    rebook(cluster, ix, snap, s, slot, at);
    out
}

/// The slot's score on node `i` (`load`: the node's tasks besides the slot).
fn score(levels: &[Level], load: u32, i: u32) -> SlotScore {
    let mut sc = SlotScore {
        load,
        ..SlotScore::default()
    };
    for l in levels {
        let v = l.table.of_node[i as usize];
        let (max, min) = l.with_one_in(v);
        match l.spread.max_skew {
            Some(k) => sc.skew_excess += (max - min).saturating_sub(k),
            None => sc.preference_gap += l.counts[v as usize] + 1 - min,
        }
    }
    sc
}

#[allow(clippy::too_many_arguments)]
fn judge_off(
    cluster: &Cluster,
    ix: &Index,
    snap: &Snapshot,
    board: &mut Board,
    s: usize,
    slot: u64,
    at: u32,
    standby: Option<u32>,
    avoid: &[u32],
    levels: &[Level],
    before: SlotScore,
    spread_off: bool,
) -> Option<Judged> {
    let policy = &ix.policies[s];
    let st = policy.stateful.as_ref()?;
    let name = st.volume_for_slot(slot);
    let backend = ix.datasets.get(&name).map_or(st.backend, |d| d.backend);
    // `slot_dataset` without its home: a move carries the data with it (copy, promote or
    // re-point), so any node may take the slot, as for a slot placed the first time. Its
    // standby counts only on a node that can hold data, as there.
    let ds = SlotDataset {
        name,
        home: DatasetHome::New,
        backend,
        failover: st.failover,
        standby: standby.filter(|i| ix.node(cluster, *i).can_hold_data()),
    };
    let task = task_spec(cluster, ix, s, Some(slot), Some(&ds));
    let profile = &ix.profiles[&policy.strategy];
    let mut cx = CycleState::new();
    let filters = pre_filter(profile, &mut cx, &task).ok()?;
    // The static filters were run once per node for the service's class; the rest per node.
    let dynamic: Vec<_> = filters
        .iter()
        .copied()
        .filter(|f| f.kind() != FilterKind::Static)
        .collect();
    let class = &ix.classes[ix.class_of[s] as usize];

    let binpack = policy.strategy == Strategy::Binpack;
    let score_at = |i: u32| -> SlotScore {
        let load = if binpack {
            0
        } else {
            snap.nodes[i as usize].total_tasks
        };
        score(levels, load, i)
    };
    let mut best: Option<(SlotScore, bool, Reverse<crate::schedule::Key>, u32)> = None;
    let mut consider = |i: u32, sc: SlotScore| {
        let info = &snap.nodes[i as usize];
        let cand = (
            sc,
            standby != Some(i),
            Reverse(key(profile, &task, info)),
            i,
        );
        if best.as_ref().is_none_or(|b| cand < *b) {
            best = Some(cand);
        }
    };
    let feasible = |i: u32| {
        i != at
            && !avoid.contains(&i)
            && class.passes(i)
            && first_failure(&dynamic, &cx, &task, &snap.nodes[i as usize]).is_none()
    };
    if spread_off {
        let mut bound: Option<SlotScore> = None;
        for &i in &class.passing {
            if !feasible(i) {
                continue;
            }
            let sc = score_at(i);
            // A worse score never wins: the score plugins run only for contenders.
            if bound.is_some_and(|b| sc > b) {
                continue;
            }
            bound = Some(sc);
            consider(i, sc);
        }
    } else {
        // Only the load can improve, with the spread kept as it is: the emptiest nodes
        // first, until they are no emptier than this one or than the best found.
        let mut found: Option<u32> = None;
        for &(load, i) in board.by_load(snap) {
            let load = if binpack { 0 } else { load };
            if load >= before.load || found.is_some_and(|f| load > f) {
                break;
            }
            if !feasible(i) {
                continue;
            }
            let sc = score_at(i);
            if (sc.skew_excess, sc.preference_gap) != (before.skew_excess, before.preference_gap) {
                continue;
            }
            found = Some(load);
            consider(i, sc);
        }
    }
    let best = best.map(|(after, _, _, node)| Target {
        node,
        after,
        why: why(cluster, ix, snap, levels, s, at, node, &before, &after),
    });
    Some(Judged { before, best })
}
/// What a move from `from` to `to` improves, in words: the first score field that changes.
#[allow(clippy::too_many_arguments)]
fn why(
    cluster: &Cluster,
    ix: &Index,
    snap: &Snapshot,
    levels: &[Level],
    s: usize,
    from: u32,
    to: u32,
    before: &SlotScore,
    after: &SlotScore,
) -> String {
    let host = |i: u32| snap.nodes[i as usize].node.hostname.as_str();
    let service = &ix.service(cluster, s).name;
    let hard = before.skew_excess != after.skew_excess;
    let soft = before.preference_gap != after.preference_gap;
    if hard || soft {
        for l in levels {
            if l.spread.max_skew.is_some() != hard {
                continue;
            }
            let (vf, vt) = (l.table.of_node[from as usize], l.table.of_node[to as usize]);
            if vf == vt {
                continue;
            }
            let name = |v: u32| &l.table.values[v as usize];
            let (cf, ct) = (l.counts[vf as usize] + 1, l.counts[vt as usize]);
            return match l.spread.max_skew {
                Some(k) => format!(
                    "restores the topology spread on {} (max skew {k}): {}={} holds {cf} of \
                     {service}'s tasks, {}={} holds {ct}",
                    l.spread.descriptor,
                    l.spread.descriptor,
                    name(vf),
                    l.spread.descriptor,
                    name(vt)
                ),
                None => format!(
                    "evens out the placement preference spread={}: {}={} holds {cf} of \
                     {service}'s tasks, {}={} holds {ct}",
                    l.spread.descriptor,
                    l.spread.descriptor,
                    name(vf),
                    l.spread.descriptor,
                    name(vt)
                ),
            };
        }
    }
    let tasks = |n: u32| if n == 1 { "task" } else { "tasks" };
    format!(
        "evens out the load: {} runs {} other {}, {} runs {}",
        host(from),
        before.load,
        tasks(before.load),
        host(to),
        after.load
    )
}
