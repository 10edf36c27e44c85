//! Placing a batch of identical tasks (one service's missing replicas, or one stateful slot).
//!
//! Nodes that pass every filter at the start of the batch go into a spread tree: one level per
//! spread descriptor (Swarm's placement preferences, then Berth's topology spreads), leaves
//! holding a max-heap of nodes by score. Each task walks down the tree to the least loaded
//! branch that still has room (and, on a hard level, stays within the skew), pops the best
//! node, re-checks the monotone filters on it alone, places, and pushes it back with its new
//! score. Placing changes only the chosen node's score, which is what makes the heap valid:
//! O(N) to start, then O(depth × branches + log N) per task.

use std::collections::{BTreeMap, BinaryHeap};

use super::index::{DomainTable, Index};
use super::swarm_fill;
use super::verdict::{Failed, Key, Outcome, count_reasons, reject_all};
// Where `explain` finds the filter pass; the definitions are `verdict`'s.
pub use super::verdict::{first_failure, key, pre_filter};
use crate::framework::{
    CycleState, FilterKind, FilterPlugin, Profile, Reason, SpreadLevel, TaskSpec,
};
use crate::model::Strategy;
use crate::plugins::topology_spread::within_skew;
use crate::snapshot::Snapshot;

struct Branch {
    parent: Option<usize>,
    depth: usize,
    /// This branch's value id of its parent's level (0 for the root).
    value: u32,
    /// Children by value id, which is the values' order.
    children: BTreeMap<u32, usize>,
    /// Tasks of this service on every node below, feasible or not (Swarm counts them all).
    count: u32,
    /// Candidate nodes below that may still take a task.
    live: u32,
    /// Some node below passes the static filters: the branch counts for the skew minimum.
    eligible: bool,
    heap: BinaryHeap<Key>,
    /// Keys gathered while the tree is built, heapified once.
    pending_keys: Vec<Key>,
}

impl Branch {
    fn new(parent: Option<usize>, depth: usize, value: u32) -> Self {
        Branch {
            parent,
            depth,
            value,
            children: BTreeMap::new(),
            count: 0,
            live: 0,
            eligible: false,
            heap: BinaryHeap::new(),
            pending_keys: Vec::new(),
        }
    }
}

/// One label value of a hard (max-skew) level, counted over the whole cluster: the skew is
/// between domains, whatever branch of an outer level a domain's nodes also sit in.
#[derive(Clone, Default)]
struct Domain {
    count: u32,
    eligible: bool,
}

struct Tree<'i> {
    branches: Vec<Branch>,
    levels: Vec<SpreadLevel>,
    /// Per level: every node's value id.
    tables: Vec<&'i DomainTable>,
    /// Per level: `Some` for a hard level, its domains by value id.
    domains: Vec<Option<Vec<Domain>>>,
}

enum Stuck {
    NoRoom,
    Skew(usize),
}

impl Tree<'_> {
    fn up(&mut self, mut b: usize, f: impl Fn(&mut Branch)) {
        loop {
            f(&mut self.branches[b]);
            match self.branches[b].parent {
                Some(p) => b = p,
                None => return,
            }
        }
    }

    /// The leaf to place the next task in: least loaded child first (by value on ties),
    /// falling back to the next when a subtree is blocked further down.
    fn pick(&self, b: usize) -> Result<usize, Stuck> {
        let br = &self.branches[b];
        if br.children.is_empty() {
            return if br.live > 0 {
                Ok(b)
            } else {
                Err(Stuck::NoRoom)
            };
        }
        let level = &self.levels[br.depth];
        let domains = self.domains[br.depth].as_ref();
        let min = domains.map(|d| {
            d.iter()
                .filter(|d| d.eligible)
                .map(|d| d.count)
                .min()
                .unwrap_or(0)
        });
        let mut order: Vec<(u32, usize)> = Vec::with_capacity(br.children.len());
        let mut skewed = false;
        for &c in br.children.values() {
            let child = &self.branches[c];
            if child.live == 0 {
                continue;
            }
            if let (Some(skew), Some(min), Some(d)) = (level.max_skew, min, domains)
                && !within_skew(d[child.value as usize].count, min, skew)
            {
                skewed = true;
                continue;
            }
            order.push((child.count, c));
        }
        // Stable sort keeps the value order among equal counts.
        order.sort_by_key(|(count, _)| *count);
        let mut stuck = if skewed {
            Stuck::Skew(br.depth)
        } else {
            Stuck::NoRoom
        };
        for (_, c) in order {
            match self.pick(c) {
                Ok(leaf) => return Ok(leaf),
                Err(Stuck::Skew(d)) => stuck = Stuck::Skew(d),
                Err(Stuck::NoRoom) => {}
            }
        }
        Err(stuck)
    }

    /// Counts `n` more tasks in the hard-level domains on the path from the root to `leaf`.
    fn count_domains(&mut self, leaf: usize, n: u32, eligible: bool) {
        let mut b = leaf;
        while let Some(p) = self.branches[b].parent {
            let (value, depth) = (self.branches[b].value, self.branches[p].depth);
            if let Some(d) = self.domains[depth].as_mut() {
                let dom = &mut d[value as usize];
                dom.count += n;
                dom.eligible |= eligible;
            }
            b = p;
        }
    }
}

pub fn place(
    ix: &Index,
    profile: &Profile,
    snap: &mut Snapshot,
    task: &TaskSpec,
    count: usize,
) -> Outcome {
    let n = snap.nodes.len();
    let mut cx = CycleState::new();
    let active = match pre_filter(profile, &mut cx, task) {
        Ok(a) => a,
        Err((reason, unresolvable)) => return reject_all(n, reason, unresolvable),
    };
    let class = &ix.classes[ix.class_of[task.service_idx as usize] as usize];
    // The class answers for the static filters; the rest run per node.
    let rest: Vec<&dyn FilterPlugin> = active
        .iter()
        .copied()
        .filter(|f| f.kind() != FilterKind::Static)
        .collect();
    let monotone: Vec<&dyn FilterPlugin> = active
        .iter()
        .copied()
        .filter(|f| f.kind() == FilterKind::Monotone)
        .collect();
    let slot_statics: Vec<&dyn FilterPlugin> = active
        .iter()
        .copied()
        .filter(|f| f.kind() == FilterKind::Slot)
        .collect();

    let levels: Vec<SpreadLevel> = profile
        .spreads
        .iter()
        .flat_map(|s| s.levels(task))
        .collect();
    if levels.is_empty() && profile.strategy == Strategy::Spread {
        return swarm_fill::place(profile, snap, task, count, &cx, &active, &rest, class);
    }
    let tables: Vec<&DomainTable> = levels.iter().map(|l| ix.domain(l)).collect();
    let domains = levels
        .iter()
        .zip(&tables)
        .map(|(l, t)| l.max_skew.map(|_| vec![Domain::default(); t.values.len()]))
        .collect();
    let mut tree = Tree {
        branches: vec![Branch::new(None, 0, 0)],
        levels,
        tables,
        domains,
    };
    let mut failed: Vec<Failed> = vec![Failed::No; n];
    for (i, info) in snap.nodes.iter().enumerate() {
        let mut cur = 0;
        for depth in 0..tree.levels.len() {
            let value = tree.tables[depth].of_node[i];
            cur = match tree.branches[cur].children.get(&value) {
                Some(&c) => c,
                None => {
                    let c = tree.branches.len();
                    tree.branches.push(Branch::new(Some(cur), depth + 1, value));
                    tree.branches[cur].children.insert(value, c);
                    c
                }
            };
        }
        let here = info.service_tasks(task.service_idx);
        if here > 0 {
            tree.up(cur, |b| b.count += here);
        }
        let class_ok = class.passes(i as u32);
        let static_ok = class_ok && first_failure(&slot_statics, &cx, task, info).is_none();
        if static_ok {
            tree.up(cur, |b| b.eligible = true);
        }
        tree.count_domains(cur, here, static_ok);
        if !class_ok {
            failed[i] = Failed::Static;
            continue;
        }
        match first_failure(&rest, &cx, task, info) {
            Some((reason, _)) => failed[i] = Failed::Because(reason),
            None => {
                tree.branches[cur]
                    .pending_keys
                    .push(key(profile, task, info));
                tree.up(cur, |b| b.live += 1);
            }
        }
    }
    for b in &mut tree.branches {
        if !b.pending_keys.is_empty() {
            b.heap = BinaryHeap::from(std::mem::take(&mut b.pending_keys));
        }
    }

    let mut placed = Vec::with_capacity(count.min(1 << 20));
    let mut stuck = None;
    while placed.len() < count {
        let leaf = match tree.pick(0) {
            Ok(leaf) => leaf,
            Err(s) => {
                stuck = Some(s);
                break;
            }
        };
        let top = tree.branches[leaf]
            .heap
            .pop()
            .expect("a live leaf has a candidate");
        let i = top.node() as usize;
        if let Some((reason, _)) = first_failure(&monotone, &cx, task, &snap.nodes[i]) {
            failed[i] = Failed::Because(reason);
            tree.up(leaf, |b| b.live -= 1);
            continue;
        }
        let info = &mut snap.nodes[i];
        info.add_task(task.service_idx);
        for r in &profile.reserves {
            r.reserve(task, info);
        }
        placed.push(top);
        tree.up(leaf, |b| b.count += 1);
        tree.count_domains(leaf, 1, false);
        tree.branches[leaf]
            .heap
            .push(key(profile, task, &snap.nodes[i]));
    }

    let pending = stuck.map(|s| {
        let blocked = match s {
            Stuck::Skew(depth) => {
                let l = &tree.levels[depth];
                Reason::from(format!(
                    "would exceed max skew {} on {}",
                    l.max_skew.unwrap_or(0),
                    l.descriptor
                ))
            }
            Stuck::NoRoom => Reason::Static("no room left"),
        };
        count_reasons(failed, blocked, snap, &cx, task, &active)
    });
    Outcome { placed, pending }
}

/// Places one task on a given node (a global service's task), or says why not.
pub fn place_on(
    profile: &Profile,
    snap: &mut Snapshot,
    task: &TaskSpec,
    node: u32,
) -> Result<Key, (Reason, bool)> {
    let mut cx = CycleState::new();
    let active = pre_filter(profile, &mut cx, task)?;
    let i = node as usize;
    if let Some((reason, _)) = first_failure(&active, &cx, task, &snap.nodes[i]) {
        return Err((reason, false));
    }
    let k = key(profile, task, &snap.nodes[i]);
    let info = &mut snap.nodes[i];
    info.add_task(task.service_idx);
    for r in &profile.reserves {
        r.reserve(task, info);
    }
    Ok(k)
}
