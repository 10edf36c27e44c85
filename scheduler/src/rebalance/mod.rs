//! Rescheduling: which running stateful slots to move, and where, once the cluster is
//! lopsided — after a failover (the returned node sits empty, two slots of a replica set share
//! a zone a topology spread meant to keep apart), or when nodes are added. Failover moves a
//! slot off a node that died or drains; this planner is the way back.
//!
//! Pure and explainable like placement: each running slot is judged where it runs against
//! every node the planner's own filters let it go to ([`SlotScore`]: topology spread first,
//! then placement preferences, then the node's load), and a move is proposed only when it
//! fixes a spread or lowers the load gap by at least [`Budget::margin`] tasks. Moves are tried
//! on a working snapshot one at a time (busiest node's slots first, then the slot whose dataset
//! moved last, by its epoch) and passes repeat until
//! one proposes nothing, so planning again after the plan is carried out proposes nothing:
//! every move lowers the spread excess, else the spread gaps, else the load's sum of squares.
//!
//! Never moved: a pinned slot (`berth.pin`), a `berth.failover=manual` service's, a slot
//! whose data is not safe elsewhere during the move (a `replicated` dataset without a live
//! standby, a `recreate` member while a peer is missing, a dataset whose primary is not the
//! slot's node), and a slot of a service already at `berth.max-unavailable` — each listed in
//! [`RebalancePlan::held`] with the reason, when it would otherwise have moved.
//!
//! The plan's moves are grouped into waves: at most `berth.max-unavailable` slots of a
//! service and [`Budget::max_in_flight`] in all per wave, a move onto a node only after the
//! move that frees it.
//!
//! [`plan_rebalance`] starts from the cluster each time (index, kept tasks, the placement run's
//! loads); [`RebalanceIndex`] keeps those between node events, for the automatic mode's check
//! after each event ([`RebalanceIndex::worth_moving`]). Both judge with the same code: most
//! slots are settled by their spread and the least loaded node alone (`score::screen`).

mod incremental;
mod score;
mod steps;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::Serialize;

pub use incremental::{NodeEvent, RebalanceIndex};
pub use score::SlotScore;
pub use steps::move_steps;

use crate::executor::standby::{StandbyFacts, pick_standby};
use crate::model::{Backend, Cluster, FailoverMode, Mode, NodeId};
use crate::schedule::run::{self, Kept, rebook, unbook};
use crate::schedule::{Index, PlanError};
use crate::snapshot::{Load, Snapshot};

/// Passes over every slot before the planner gives up on reaching a fixpoint. Each move lowers
/// a bounded potential, so this only caps the work on a pathological input.
const MAX_PASSES: usize = 16;

/// The limits a rescheduling plan keeps to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Budget {
    /// Moves in flight at once, cluster-wide (slots of one service are further limited by its
    /// `berth.max-unavailable`).
    pub max_in_flight: u32,
    /// Cluster-wide copy rate, for the plan's time estimate.
    pub bytes_per_sec: u64,
    /// Moves in one plan; the rest is held back (`None`: no limit).
    pub max_moves: Option<u32>,
    /// Tasks by which a move must lower its slot's node load when it fixes no spread (at
    /// least 1: a move that gains nothing would be undone by the next plan).
    pub margin: u32,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            max_in_flight: 2,
            bytes_per_sec: 100 << 20,
            max_moves: None,
            margin: 2,
        }
    }
}

/// How a move carries the slot's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MoveMode {
    /// `local` (and `replicated` onto a node without its standby): copy to the target while
    /// the slot serves, stop, copy the last delta, fence, start there.
    PreCopy,
    /// `replicated` onto the standby's node: stop, let the standby catch up, promote it.
    PromoteStandby,
    /// `shared`: stop, fence, attach the same storage on the target.
    Repoint,
    /// `berth.failover=recreate`: a fresh member on the target resyncs from its peers.
    Resync,
}

impl MoveMode {
    pub fn as_str(self) -> &'static str {
        match self {
            MoveMode::PreCopy => "pre-copy",
            MoveMode::PromoteStandby => "promote-standby",
            MoveMode::Repoint => "re-point",
            MoveMode::Resync => "resync",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Move {
    pub service: String,
    pub slot: u64,
    pub dataset: String,
    pub from: NodeId,
    pub to: NodeId,
    pub mode: MoveMode,
    /// Bytes the move copies before the slot stops (the dataset's recorded size; 0 when the
    /// record has none).
    pub bytes: u64,
    /// Moves of one wave run together; a wave starts when the one before it is done.
    pub wave: u32,
    pub reason: String,
    pub before: SlotScore,
    pub after: SlotScore,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HoldKind {
    /// `berth.pin`.
    Pinned,
    /// `berth.failover=manual`: an operator moves it.
    Manual,
    DataNotSafe,
    /// `berth.max-unavailable` already used by slots that are down, or the plan's move limit.
    Budget,
    /// It would gain fewer tasks of load than the margin.
    Margin,
}

impl HoldKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldKind::Pinned => "pinned",
            HoldKind::Manual => "manual",
            HoldKind::DataNotSafe => "data-not-safe",
            HoldKind::Budget => "budget",
            HoldKind::Margin => "margin",
        }
    }
}

/// A slot that would have moved, and why it does not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Held {
    pub service: String,
    pub slot: u64,
    pub node: NodeId,
    /// Where it would have gone.
    pub to: NodeId,
    pub kind: HoldKind,
    pub reason: String,
}

/// A `replicated` dataset without a live standby, and where its standby copy goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NewStandby {
    pub dataset: String,
    pub service: String,
    pub slot: u64,
    /// The primary once the plan's moves are done.
    pub primary: NodeId,
    pub node: NodeId,
    pub bytes: u64,
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RebalancePlan {
    /// In the order they were chosen; `wave` groups them.
    pub moves: Vec<Move>,
    /// By service, then slot.
    pub held: Vec<Held>,
    /// By dataset name.
    pub standbys: Vec<NewStandby>,
    /// Bytes the moves and the new standbys copy.
    pub bytes: u64,
    pub waves: u32,
    /// `bytes` at the budget's copy rate, rounded up.
    pub copy_secs: u64,
}

impl RebalancePlan {
    pub fn is_balanced(&self) -> bool {
        self.moves.is_empty() && self.standbys.is_empty()
    }
}

/// One running stateful slot the planner may move, with what judging it reads that no move
/// changes (worked out once, not on every pass).
struct Cand {
    s: usize,
    slot: u64,
    origin: u32,
    at: u32,
    /// Its dataset's epoch (0 without a record).
    epoch: u64,
    /// The node of its dataset's recorded standby.
    standby: Option<u32>,
    /// Nodes holding the standby of another of the service's slots (`replicated` only).
    avoid: Vec<u32>,
}

struct Chosen {
    cand: usize,
    before: score::SlotScore,
    after: score::SlotScore,
    reason: String,
}

/// What judging one slot where it is now decides.
enum Verdict {
    /// Not a slot the planner judges.
    Skip,
    /// Nothing to gain.
    Stay,
    /// It would move, but must not (or not by enough).
    Hold(Held),
    /// Worth moving to `target`.
    Move {
        before: score::SlotScore,
        target: score::Target,
    },
}

/// What judging a slot reads from its dataset's record, which no node event changes.
#[derive(Clone, Copy)]
struct SlotFacts {
    /// The dataset's epoch (0 without a record).
    epoch: u64,
    /// The node of its recorded standby.
    standby: Option<u32>,
    replicated: bool,
}

/// Per dense service (stateful and replicated), per slot (slot `k` at `k - 1`).
struct Facts(Vec<Vec<SlotFacts>>);

impl Facts {
    fn new(cluster: &Cluster, ix: &Index) -> Facts {
        let node_of = |id: &NodeId| ix.node_index(cluster, id);
        Facts(
            (0..ix.services.len())
                .map(|s| {
                    let (Some(st), Mode::Replicated { replicas }) =
                        (&ix.policies[s].stateful, ix.service(cluster, s).mode)
                    else {
                        return Vec::new();
                    };
                    (1..=replicas)
                        .map(|slot| {
                            let ds = ix.datasets.get(&st.volume_for_slot(slot));
                            SlotFacts {
                                epoch: ds.map_or(0, |d| d.epoch),
                                standby: ds.and_then(|d| d.standby.as_ref()).and_then(node_of),
                                replicated: ds.is_some_and(|d| d.backend == Backend::Replicated),
                            }
                        })
                        .collect()
                })
                .collect(),
        )
    }
}

/// The planner's working state: the cluster's loads as the placement run leaves them, and the
/// moves tried on them.
struct Work<'c> {
    cluster: &'c Cluster,
    ix: &'c Index,
    kept: &'c Kept,
    /// The loads as a snapshot: given, or made from `loads` when a slot needs its nodes tried
    /// (a check on a cluster at rest never does).
    snap: Option<Snapshot<'c>>,
    loads: &'c [Load],
    board: score::Board,
    cands: Vec<Cand>,
}

/// Plans the moves that rebalance `cluster`'s running stateful slots within `budget`.
pub fn plan_rebalance(cluster: &Cluster, budget: &Budget) -> Result<RebalancePlan, PlanError> {
    let ix = Index::new(cluster)?;
    let kept = Kept::new(cluster, &ix);
    // The loads as the cluster will be once the missing tasks are placed too: the placement
    // run's phases, without the whole plan it would emit.
    let mut snap = Snapshot::new(ix.node_refs(cluster));
    run::book(cluster, &ix, &kept, &mut snap);
    let mut new = Vec::new();
    for &s in &ix.order.sequence {
        let sp = run::place_service(cluster, &ix, &kept, &mut snap, s);
        if ix.policies[s].stateful.is_some() {
            new.extend(sp.placed.iter().map(|p| (s, p.node)));
        }
    }
    let facts = Facts::new(cluster, &ix);
    Ok(Work::new(cluster, &ix, &kept, &facts, Ok(snap), &new).plan(budget))
}

impl<'c> Work<'c> {
    /// `new`: the tasks of stateful services the placement run placed, (dense service, dense
    /// node), which count in their spreads.
    /// `loads`: the placement run's snapshot, or the loads to make it from.
    fn new(
        cluster: &'c Cluster,
        ix: &'c Index,
        kept: &'c Kept,
        facts: &Facts,
        loads: Result<Snapshot<'c>, &'c [Load]>,
        new: &[(usize, u32)],
    ) -> Work<'c> {
        let mut cands: Vec<Cand> = Vec::new();
        for &s in &ix.order.sequence {
            if facts.0[s].is_empty() {
                continue;
            }
            let first = cands.len();
            let mut replicated = Vec::new();
            for (k, f) in facts.0[s].iter().enumerate() {
                let slot = k as u64 + 1;
                let Some(ni) = kept.slot_node(ix, s, slot) else {
                    continue;
                };
                replicated.push(f.replicated);
                cands.push(Cand {
                    s,
                    slot,
                    origin: ni,
                    at: ni,
                    epoch: f.epoch,
                    standby: f.standby,
                    avoid: Vec::new(),
                });
            }
            // Only a service with standbys has nodes to avoid.
            for (k, _) in replicated.iter().enumerate().filter(|(_, r)| **r) {
                let slot = cands[first + k].slot;
                cands[first + k].avoid = cands[first..]
                    .iter()
                    .filter(|o| o.slot != slot)
                    .filter_map(|o| o.standby)
                    .collect();
            }
        }
        // Every task of a stateful service, for its spread counts: the running slots and those
        // the placement run just placed.
        let mut placed: Vec<(usize, u32)> = cands.iter().map(|c| (c.s, c.at)).collect();
        placed.extend_from_slice(new);
        let (snap, loads) = match loads {
            Ok(snap) => (Some(snap), &[][..]),
            Err(loads) => (None, loads),
        };
        let board = match &snap {
            Some(snap) => score::Board::new(
                ix,
                snap.nodes
                    .iter()
                    .map(|i| (i.total_tasks, i.node.accepts_tasks())),
                &placed,
            ),
            None => score::Board::new(
                ix,
                loads
                    .iter()
                    .enumerate()
                    .map(|(i, l)| (l.total_tasks, ix.node(cluster, i as u32).accepts_tasks())),
                &placed,
            ),
        };
        Work {
            cluster,
            ix,
            kept,
            snap,
            loads,
            board,
            cands,
        }
    }

    /// Tasks on dense node `ni`.
    fn total(&self, ni: u32) -> u32 {
        match &self.snap {
            Some(snap) => snap.nodes[ni as usize].total_tasks,
            None => self.loads[ni as usize].total_tasks,
        }
    }

    fn snap(&mut self) -> &mut Snapshot<'c> {
        let (cluster, ix, loads) = (self.cluster, self.ix, self.loads);
        self.snap
            .get_or_insert_with(|| Snapshot::with_loads(ix.node_refs(cluster), loads.to_vec()))
    }

    fn held(&self, c: usize, to: u32, kind: HoldKind, reason: String) -> Held {
        let cand = &self.cands[c];
        Held {
            service: self.ix.service(self.cluster, cand.s).name.clone(),
            slot: cand.slot,
            node: self.ix.node(self.cluster, cand.at).id.clone(),
            to: self.ix.node(self.cluster, to).id.clone(),
            kind,
            reason,
        }
    }

    /// Judges candidate `c` where it is now.
    fn verdict(&mut self, c: usize, margin: u32) -> Verdict {
        let (cluster, ix) = (self.cluster, self.ix);
        let own = self.total(self.cands[c].at);
        let cand = &self.cands[c];
        let open = match score::screen(
            cluster,
            ix,
            &mut self.board,
            cand.s,
            cand.slot,
            cand.at,
            own,
        ) {
            None => return Verdict::Skip,
            Some(score::Screen::Settled) => return Verdict::Stay,
            Some(score::Screen::Open(open)) => open,
        };
        self.snap();
        let snap = self.snap.as_mut().expect("made above");
        let cand = &self.cands[c];
        let Some(j) = score::judge_open(
            cluster,
            ix,
            snap,
            &mut self.board,
            cand.s,
            cand.slot,
            cand.at,
            cand.standby,
            &cand.avoid,
            open,
        ) else {
            return Verdict::Skip;
        };
        let Some(t) = j.best else {
            return Verdict::Stay;
        };
        let structural = (t.after.skew_excess, t.after.preference_gap)
            < (j.before.skew_excess, j.before.preference_gap);
        let same = (t.after.skew_excess, t.after.preference_gap)
            == (j.before.skew_excess, j.before.preference_gap);
        let gain = j.before.load.saturating_sub(t.after.load);
        if !(structural || same && gain >= margin) {
            if same && gain > 0 {
                let r = format!(
                    "{}; a gain of {gain} is below the margin of {margin}",
                    t.why
                );
                return Verdict::Hold(self.held(c, t.node, HoldKind::Margin, r));
            }
            return Verdict::Stay;
        }
        if let Some((kind, why)) = blocked(cluster, ix, self.kept, cand) {
            return Verdict::Hold(self.held(c, t.node, kind, why));
        }
        Verdict::Move {
            before: j.before,
            target: t,
        }
    }

    /// Whether the plan would move anything: before any move, every slot is judged on the
    /// same state, so the first slot worth moving decides it. Each move lowers a potential
    /// (see the module's doc), so a plan that starts moving never ends where it began.
    fn worth(mut self, budget: &Budget) -> bool {
        if budget.max_moves == Some(0) {
            return false;
        }
        let margin = budget.margin.max(1);
        (0..self.cands.len()).any(|c| matches!(self.verdict(c, margin), Verdict::Move { .. }))
    }

    fn plan(mut self, budget: &Budget) -> RebalancePlan {
        let (cluster, ix) = (self.cluster, self.ix);
        let margin = budget.margin.max(1);
        let mut chosen: Vec<Chosen> = Vec::new();
        let mut chosen_of: Vec<Option<usize>> = vec![None; self.cands.len()];
        let mut held: BTreeMap<(usize, u64), Held> = BTreeMap::new();
        for _ in 0..MAX_PASSES {
            // The busiest nodes' slots first; among equals, the slot whose data moved last (a
            // failover raises the epoch), so a slot moved away by a failover is the one that
            // returns.
            let mut order: Vec<usize> = (0..self.cands.len()).collect();
            order.sort_by_key(|&c| {
                let cand = &self.cands[c];
                (
                    std::cmp::Reverse(self.total(cand.at)),
                    std::cmp::Reverse(cand.epoch),
                    c,
                )
            });
            let mut moved = false;
            for c in order {
                let key = (self.cands[c].s, self.cands[c].slot);
                let (before, t) = match self.verdict(c, margin) {
                    Verdict::Skip => continue,
                    Verdict::Stay => {
                        held.remove(&key);
                        continue;
                    }
                    Verdict::Hold(h) => {
                        held.insert(key, h);
                        continue;
                    }
                    Verdict::Move { before, target } => (before, target),
                };
                let moves = chosen.len() as u32;
                if chosen_of[c].is_none() && budget.max_moves.is_some_and(|m| moves >= m) {
                    let r = format!("the plan's limit of {moves} moves is reached");
                    held.insert(key, self.held(c, t.node, HoldKind::Budget, r));
                    continue;
                }
                held.remove(&key);
                let (s, slot, at) = (self.cands[c].s, self.cands[c].slot, self.cands[c].at);
                let snap = self.snap();
                unbook(cluster, ix, snap, s, slot, at);
                rebook(cluster, ix, snap, s, slot, t.node);
                let snap = self.snap.as_ref().expect("made above");
                self.board.moved(snap, s, at, t.node);
                self.cands[c].at = t.node;
                moved = true;
                match chosen_of[c] {
                    Some(k) => {
                        chosen[k].after = t.after;
                        chosen[k].reason = t.why;
                    }
                    None => {
                        chosen_of[c] = Some(chosen.len());
                        chosen.push(Chosen {
                            cand: c,
                            before,
                            after: t.after,
                            reason: t.why,
                        });
                    }
                }
            }
            if !moved {
                break;
            }
        }

        let mut plan = RebalancePlan::default();
        for ch in &chosen {
            let cand = &self.cands[ch.cand];
            if cand.at == cand.origin {
                continue;
            }
            plan.moves.push(make_move(cluster, ix, cand, ch));
        }
        assign_waves(cluster, ix, self.kept, budget, &mut plan.moves);
        plan.held = held.into_values().collect();
        plan.held
            .sort_by(|a, b| (&a.service, a.slot).cmp(&(&b.service, b.slot)));
        self.snap();
        let snap = self.snap.as_ref().expect("made above");
        plan.standbys = standbys(cluster, ix, snap, &self.cands);
        plan.bytes = plan.moves.iter().map(|m| m.bytes).sum::<u64>()
            + plan.standbys.iter().map(|s| s.bytes).sum::<u64>();
        plan.waves = plan.moves.iter().map(|m| m.wave + 1).max().unwrap_or(0);
        plan.copy_secs = plan.bytes.div_ceil(budget.bytes_per_sec.max(1));
        plan
    }
}

/// Why a slot that would move must stay, if it must.
fn blocked(cluster: &Cluster, ix: &Index, kept: &Kept, c: &Cand) -> Option<(HoldKind, String)> {
    let policy = &ix.policies[c.s];
    let st = policy.stateful.as_ref()?;
    if policy.pin.pins(c.slot) {
        return Some((HoldKind::Pinned, "pinned by berth.pin".into()));
    }
    if st.failover == FailoverMode::Manual {
        return Some((
            HoldKind::Manual,
            "berth.failover=manual: an operator moves it".into(),
        ));
    }
    let here = &ix.node(cluster, c.origin).id;
    let name = st.volume_for_slot(c.slot);
    let ds = ix.datasets.get(&name);
    let unsafe_data = |why: String| Some((HoldKind::DataNotSafe, why));
    match ds.and_then(|d| d.primary.as_ref()) {
        Some(p) if p == here => {}
        Some(p) => return unsafe_data(format!("dataset {name}'s primary is {p}, not {here}")),
        None => return unsafe_data(format!("dataset {name} has no primary on record")),
    }
    if !ix.node(cluster, c.origin).can_hold_data() {
        return unsafe_data(format!(
            "{here} is fenced: its copy of {name} is not to be read"
        ));
    }
    let backend = ds.map(|d| d.backend).unwrap_or(st.backend);
    if st.failover == FailoverMode::Move && backend == Backend::Replicated {
        let live = ds
            .and_then(|d| d.standby.as_ref())
            .and_then(|id| ix.node_index(cluster, id))
            .is_some_and(|i| ix.node(cluster, i).can_hold_data());
        if !live {
            return unsafe_data(format!(
                "dataset {name} has no live standby: its data would have no other copy"
            ));
        }
    }
    let replicas = match ix.service(cluster, c.s).mode {
        Mode::Replicated { replicas } => replicas,
        Mode::Global => 0,
    };
    let down = replicas - kept.count[c.s];
    if st.failover == FailoverMode::Recreate && down > 0 {
        return unsafe_data(format!(
            "{down} of its peers not running: a new member resyncs from its peers"
        ));
    }
    if down >= u64::from(policy.max_unavailable) {
        return Some((
            HoldKind::Budget,
            format!(
                "{down} slots already down, berth.max-unavailable={}",
                policy.max_unavailable
            ),
        ));
    }
    None
}

fn make_move(cluster: &Cluster, ix: &Index, cand: &Cand, ch: &Chosen) -> Move {
    let st = ix.policies[cand.s].stateful.as_ref().expect("stateful");
    let name = st.volume_for_slot(cand.slot);
    let ds = ix.datasets.get(&name);
    let to = ix.node(cluster, cand.at).id.clone();
    let size = ds.map(|d| d.size_bytes).unwrap_or(0);
    let backend = ds.map(|d| d.backend).unwrap_or(st.backend);
    let (mode, bytes) = match (st.failover, backend) {
        (_, Backend::Shared) => (MoveMode::Repoint, 0),
        (FailoverMode::Recreate, _) => (MoveMode::Resync, size),
        (_, Backend::Replicated) if ds.and_then(|d| d.standby.as_ref()) == Some(&to) => {
            (MoveMode::PromoteStandby, 0)
        }
        _ => (MoveMode::PreCopy, size),
    };
    Move {
        service: ix.service(cluster, cand.s).name.clone(),
        slot: cand.slot,
        dataset: name,
        from: ix.node(cluster, cand.origin).id.clone(),
        to,
        mode,
        bytes,
        wave: 0,
        reason: ch.reason.clone(),
        before: ch.before,
        after: ch.after,
    }
}

/// Groups the moves into waves: a move goes in the first wave after every earlier move off
/// its target, with room under the cluster-wide limit and its service's
/// `berth.max-unavailable` (less the slots already down).
fn assign_waves(cluster: &Cluster, ix: &Index, kept: &Kept, budget: &Budget, moves: &mut [Move]) {
    let max_in_flight = budget.max_in_flight.max(1);
    let mut size: Vec<u32> = Vec::new();
    let mut per_service: BTreeMap<(u32, &str), u32> = BTreeMap::new();
    // Per node a move leaves: the last wave of those moves.
    let mut freed: BTreeMap<NodeId, u32> = BTreeMap::new();
    let allowance: BTreeMap<&str, u32> = (0..ix.services.len())
        .map(|s| {
            let svc = ix.service(cluster, s);
            let replicas = match svc.mode {
                Mode::Replicated { replicas } => replicas,
                Mode::Global => 0,
            };
            let down = u32::try_from(replicas - kept.count[s]).unwrap_or(u32::MAX);
            let room = ix.policies[s].max_unavailable.saturating_sub(down).max(1);
            (svc.name.as_str(), room)
        })
        .collect();
    for m in moves.iter_mut() {
        let mut w = freed.get(&m.to).map_or(0, |w| w + 1);
        let room = allowance.get(m.service.as_str()).copied().unwrap_or(1);
        loop {
            let used = size.get(w as usize).copied().unwrap_or(0);
            let mine = per_service
                .get(&(w, m.service.as_str()))
                .copied()
                .unwrap_or(0);
            if used < max_in_flight && mine < room {
                break;
            }
            w += 1;
        }
        if size.len() <= w as usize {
            size.resize(w as usize + 1, 0);
        }
        size[w as usize] += 1;
        m.wave = w;
        let last = freed.entry(m.from.clone()).or_insert(w);
        *last = (*last).max(w);
        // The per-service count borrows the service name from the index, not the move.
        let svc = ix
            .service_index(cluster, &m.service)
            .map(|s| ix.service(cluster, s).name.as_str())
            .expect("a planned service");
        *per_service.entry((w, svc)).or_default() += 1;
    }
}

/// A standby for every `replicated` dataset of a running slot that has none alive, on the
/// node the failover executor would choose (`executor::standby`), against the placement the
/// moves leave.
fn standbys(
    cluster: &Cluster,
    ix: &Index,
    snap: &crate::snapshot::Snapshot,
    cands: &[Cand],
) -> Vec<NewStandby> {
    let n = ix.nodes.len();
    // Built for the first slot that needs a standby (most plans have none): the nodes in ID
    // order, the index's dense order, which `pick_standby` reads; the copies per node.
    let mut lazy: Option<(Cluster, Vec<u32>)> = None;
    let mut out: Vec<NewStandby> = Vec::new();
    for c in cands {
        let st = ix.policies[c.s].stateful.as_ref().expect("stateful");
        let name = st.volume_for_slot(c.slot);
        let ds = ix.datasets.get(&name);
        let backend = ds.map(|d| d.backend).unwrap_or(st.backend);
        if st.failover != FailoverMode::Move || backend != Backend::Replicated {
            continue;
        }
        let primary = ix.node(cluster, c.at).id.clone();
        let standby = ds.and_then(|d| d.standby.as_ref());
        let live = standby
            .and_then(|id| ix.node_index(cluster, id))
            .is_some_and(|i| ix.node(cluster, i).can_hold_data());
        // A standby promoted by a move is the new primary: the slot needs another.
        if live && standby != Some(&primary) {
            continue;
        }
        let service = &ix.service(cluster, c.s).name;
        // The service's other standbys, recorded or proposed here: one copy per node.
        let mut taken: Vec<&NodeId> = cands
            .iter()
            .filter(|o| o.s == c.s)
            .filter_map(|o| {
                ix.datasets
                    .get(&st.volume_for_slot(o.slot))?
                    .standby
                    .as_ref()
            })
            .collect();
        taken.extend(
            out.iter()
                .filter(|x| &x.service == service)
                .map(|x| &x.node),
        );
        let (sorted, copies) = lazy.get_or_insert_with(|| {
            let sorted = Cluster {
                nodes: ix.node_refs(cluster).into_iter().cloned().collect(),
                services: cluster.services.clone(),
                ..Cluster::default()
            };
            let mut copies = vec![0u32; n];
            for d in ix.datasets.values() {
                for id in d.primary.iter().chain(&d.standby) {
                    if let Some(i) = ix.node_index(cluster, id) {
                        copies[i as usize] += 1;
                    }
                }
            }
            (sorted, copies)
        });
        let facts: Vec<StandbyFacts> = (0..n as u32)
            .map(|i| {
                let node = ix.node(cluster, i);
                StandbyFacts {
                    free: node.accepts_tasks()
                        && node.can_hold_data()
                        && snap.nodes[i as usize].service_tasks(c.s as u32) == 0
                        && !taken.contains(&&node.id),
                    copies: copies[i as usize],
                }
            })
            .collect();
        if let Some(node) = pick_standby(sorted, service, &primary, &facts) {
            if let Some(i) = ix.node_index(cluster, &node) {
                copies[i as usize] += 1;
            }
            let why = match standby {
                None => "it has no standby".to_string(),
                Some(s) if *s == primary => "its standby is promoted by a move".to_string(),
                Some(s) => format!("its standby's node {s} cannot hold data"),
            };
            out.push(NewStandby {
                dataset: name.clone(),
                service: service.clone(),
                slot: c.slot,
                primary,
                node,
                bytes: ds.map(|d| d.size_bytes).unwrap_or(0),
                reason: why,
            });
        }
    }
    out.sort_by(|a, b| a.dataset.cmp(&b.dataset));
    out
}
