//! One run of one policy on one schedule, boiled down to what the report and the sweep need:
//! metrics, per-service outcomes, lost writes, the violation if any, bound failures, the
//! trace tail and the timeline for the plot.

use berth_scheduler::schedule;
use std::collections::BTreeMap;

use serde::Serialize;

use crate::checker::Violation;
use crate::clock::Ms;
use crate::faults::Fault;
use crate::metrics::{DataKind, Metrics, SlotOutages, percentile};
use crate::policy::PolicyKind;
use crate::scenario::{LostBound, Scenario};
use crate::sim::{NodeMark, Sim, SimError};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceOutcome {
    pub name: String,
    /// `None`: stateless.
    pub data: Option<DataKind>,
    pub unavailable_ms: Ms,
    pub acked_writes: u64,
    pub rejected_writes: u64,
    pub lost_writes: u64,
    /// Copies of its data that went with a lost disk.
    pub disks_lost: u64,
    /// Of `lost_writes`, those of datasets that lost more disks than their kind of data
    /// tolerates (`local`: any; `replicated`: primary and standby; `recreate`: a majority of
    /// members; `shared` storage is not lost in the model). `[bounds] lost_writes` limits the
    /// rest: what Berth gave up while the guarantee's premise held.
    pub lost_beyond_guarantee: u64,
    /// Fences of its datasets in the run (each a failover or planned move under Berth).
    pub fences: u64,
    /// What its standbys' lag allows to lose: per fence, the writes acknowledged in
    /// `replication_lag`, rounded up (0 unless `replicated`).
    pub lag_writes: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KindLost {
    pub lost_writes: u64,
    /// See [`ServiceOutcome::lost_beyond_guarantee`].
    pub beyond_guarantee: u64,
}

/// A slot that never ran in the whole run, with the engine's reason from the initial placement
/// (the one explanation a reader needs, and otherwise only in the trace).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PendingSlot {
    pub service: String,
    pub slot: u64,
    /// `0/6 nodes available: 3 did not match constraint node.role==worker, …`
    pub reason: String,
}

/// What the plot draws.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Timeline {
    pub end: Ms,
    pub node_log: Vec<(Ms, u32, NodeMark)>,
    /// (service, slot, node, start, end).
    pub tasks: Vec<(u32, u64, u32, Ms, Ms)>,
    pub outages: Vec<(u32, Ms, Ms)>,
    /// (service, slot, from, to): two holders accepted writes.
    pub double_writers: Vec<(u32, u64, Ms, Ms)>,
    pub markers: Vec<(Ms, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RunOutcome {
    pub policy: PolicyKind,
    pub seed: u64,
    pub unavailable_p50_ms: Ms,
    pub unavailable_p99_ms: Ms,
    /// Stateful slots' own outages (a service's is its last slot's).
    pub slot_outages: SlotOutages,
    pub lost_writes: u64,
    /// Lost writes per kind of stateful data present in the scenario.
    pub lost_writes_by_kind: BTreeMap<DataKind, KindLost>,
    pub acked_writes: u64,
    pub rejected_writes: u64,
    pub metrics: Metrics,
    pub services: Vec<ServiceOutcome>,
    pub violation: Option<Violation>,
    /// Services still unavailable when the run ended (a liveness signal: after the last
    /// recovery everything should be serving again).
    pub unavailable_at_end: Vec<String>,
    /// Slots pending from the start to the end of the run.
    pub pending: Vec<PendingSlot>,
    /// Rescheduling's numbers (a scenario with `[rebalance]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rescheduling: Option<crate::rescheduling::ReschedOutcome>,
    /// Scenario `[bounds]` this run broke (checked for `berth` only).
    pub bound_failures: Vec<String>,
    pub trace_tail: Vec<String>,
    /// The last `TRACE_LINES` lines, for `run --trace`.
    #[serde(skip)]
    pub trace: Vec<String>,
    #[serde(skip)]
    pub timeline: Timeline,
}

impl RunOutcome {
    /// A fatal invariant or a broken bound: what makes CI fail.
    pub fn failed(&self) -> bool {
        self.violation.is_some() || !self.bound_failures.is_empty()
    }
}

pub fn run_one(
    scn: &Scenario,
    policy: PolicyKind,
    seed: u64,
    faults: &[Fault],
) -> Result<RunOutcome, SimError> {
    let mut sim = Sim::new(scn, policy, seed, faults.to_vec())?;
    sim.run();
    Ok(outcome(&sim))
}

/// Each kind of data against its `lost_writes.<kind>` bound, naming the services that lost.
fn lost_bound_failures(
    services: &[ServiceOutcome],
    bounds: &crate::scenario::LostWritesBounds,
) -> Vec<String> {
    let mut out = Vec::new();
    for kind in DataKind::ALL {
        let bound = match kind {
            DataKind::Shared => bounds.shared,
            DataKind::Replicated => bounds.replicated,
            DataKind::Local => bounds.local,
            DataKind::Recreate => bounds.recreate,
        };
        let Some(bound) = bound else { continue };
        let of_kind: Vec<&ServiceOutcome> =
            services.iter().filter(|s| s.data == Some(kind)).collect();
        let lost: u64 = of_kind
            .iter()
            .map(|s| s.lost_writes - s.lost_beyond_guarantee)
            .sum();
        let (max, what) = match bound {
            LostBound::Max(n) => (n, format!("{n}")),
            LostBound::Lag => {
                let lag: u64 = of_kind.iter().map(|s| s.lag_writes).sum();
                let fences: u64 = of_kind.iter().map(|s| s.fences).sum();
                (
                    lag,
                    format!("\"lag\": {lag}, the standbys' lag over {fences} fence(s)"),
                )
            }
        };
        if lost > max {
            let who: Vec<String> = of_kind
                .iter()
                .filter(|s| s.lost_writes > s.lost_beyond_guarantee)
                .map(|s| format!("{} {}", s.name, s.lost_writes - s.lost_beyond_guarantee))
                .collect();
            out.push(format!(
                "berth lost {lost} acknowledged writes of `{}` data ({}) > bound lost_writes.{} \
                 = {what}",
                kind.as_str(),
                who.join(", "),
                kind.as_str()
            ));
        }
    }
    out
}

/// The initial plan's pending slots that no task ever ran for. The plan is asked again (it is
/// deterministic, so it is the one `Sim::new` placed from) only when some slot never ran, which
/// keeps the sweep's runs free of a second plan.
fn never_ran(sim: &Sim) -> Vec<PendingSlot> {
    let mut ran = vec![false; sim.slots.len()];
    for t in &sim.tasks {
        ran[t.slot_idx as usize] = true;
    }
    if ran.iter().all(|&r| r) {
        return Vec::new();
    }
    let Ok(plan) = schedule::plan(&sim.scn.cluster) else {
        return Vec::new();
    };
    plan.pending
        .iter()
        .filter_map(|p| {
            let slot = p.slot?;
            let si = sim.service_index(&p.service)?;
            let svc = &sim.services[si as usize];
            let idx = svc.first_slot as usize + usize::try_from(slot.checked_sub(1)?).ok()?;
            (slot <= svc.replicas && !ran[idx]).then(|| PendingSlot {
                service: p.service.clone(),
                slot,
                reason: p.message(),
            })
        })
        .collect()
}

fn outcome(sim: &Sim) -> RunOutcome {
    // Per dataset, its copies on lost disks.
    let mut dead = vec![0u64; sim.datasets.len()];
    for c in sim.copies.iter().filter(|c| !c.alive) {
        dead[c.dataset as usize] += 1;
    }
    let mut services = Vec::new();
    for (si, svc) in sim.services.iter().enumerate() {
        let spec = &sim.scn.services[si];
        let first = svc.first_slot as usize;
        let slots = &sim.slots[first..first + svc.replicas as usize];
        let data = DataKind::of(&spec.policy);
        let fences: u64 = slots
            .iter()
            .filter_map(|sl| sl.dataset)
            .map(|d| sim.datasets[d as usize].epoch.saturating_sub(1))
            .sum();
        let lag_writes = if data == Some(DataKind::Replicated) {
            fences * (spec.data.writes_per_sec * spec.data.replication_lag).div_ceil(1000)
        } else {
            0
        };
        let datasets: Vec<u32> = slots.iter().filter_map(|sl| sl.dataset).collect();
        let (acked, lost, disks_lost, lost_beyond_guarantee) = if svc.self_replicating {
            // A write needs a majority of members, so it survives while a majority of their
            // disks does: the service tolerates losing fewer than that.
            let best = sim.service_max_len(si as u32);
            let lost = svc.acked.saturating_sub(best);
            let disks: u64 = datasets.iter().map(|&d| dead[d as usize]).sum();
            let beyond = disks > (svc.replicas.saturating_sub(1)) / 2;
            (svc.acked, lost, disks, if beyond { lost } else { 0 })
        } else {
            let tolerated = match data {
                Some(DataKind::Replicated) => 1,
                Some(DataKind::Shared) => u64::MAX,
                _ => 0,
            };
            let (mut acked, mut lost, mut disks, mut beyond) = (0, 0, 0, 0);
            for &d in &datasets {
                let ds_lost = sim.dataset_lost(d);
                acked += sim.datasets[d as usize].acked;
                lost += ds_lost;
                disks += dead[d as usize];
                if dead[d as usize] > tolerated {
                    beyond += ds_lost;
                }
            }
            (acked, lost, disks, beyond)
        };
        services.push(ServiceOutcome {
            name: spec.name.clone(),
            data,
            fences,
            lag_writes,
            unavailable_ms: svc.unavailable_ms,
            acked_writes: acked,
            rejected_writes: svc.rejected,
            lost_writes: lost,
            disks_lost,
            lost_beyond_guarantee,
        });
    }
    let unavail: Vec<Ms> = services.iter().map(|s| s.unavailable_ms).collect();
    let p50 = percentile(&unavail, 50);
    let p99 = percentile(&unavail, 99);
    let lost: u64 = services.iter().map(|s| s.lost_writes).sum();
    let mut lost_writes_by_kind = BTreeMap::new();
    for s in &services {
        if let Some(k) = s.data {
            let e: &mut KindLost = lost_writes_by_kind.entry(k).or_default();
            e.lost_writes += s.lost_writes;
            e.beyond_guarantee += s.lost_beyond_guarantee;
        }
    }
    let mut bound_failures = Vec::new();
    if sim.policy == PolicyKind::Berth {
        let b = &sim.scn.bounds;
        bound_failures.extend(lost_bound_failures(&services, &b.lost_writes));
        if let Some(max) = b.berth_max_unavailable_p99
            && p99 > max
        {
            bound_failures.push(format!(
                "berth p99 unavailable {} ms > bound {} ms",
                p99, max
            ));
        }
        if let Some(max) = b.berth_max_lost_writes
            && lost > max
        {
            bound_failures.push(format!("berth lost writes {lost} > bound {max}"));
        }
        if let Some(max) = b.berth_max_double_writer_windows
            && sim.metrics.double_writer_windows > max
        {
            bound_failures.push(format!(
                "berth double-writer windows {} > bound {max}",
                sim.metrics.double_writer_windows
            ));
        }
    }
    let timeline = Timeline {
        end: sim.now,
        node_log: sim.node_log.clone(),
        tasks: sim
            .tasks
            .iter()
            .map(|t| {
                (
                    t.service,
                    t.slot,
                    t.node,
                    t.started,
                    t.ended.unwrap_or(sim.now),
                )
            })
            .collect(),
        outages: sim
            .services
            .iter()
            .enumerate()
            .flat_map(|(i, s)| s.outages.iter().map(move |(a, b)| (i as u32, *a, *b)))
            .collect(),
        double_writers: sim
            .double_log
            .iter()
            .map(|&(d, a, b)| {
                let ds = &sim.datasets[d as usize];
                (ds.service, ds.slot, a, b)
            })
            .collect(),
        markers: sim.markers.clone(),
    };
    RunOutcome {
        policy: sim.policy,
        seed: sim.seed,
        unavailable_p50_ms: p50,
        unavailable_p99_ms: p99,
        slot_outages: SlotOutages::of(sim.slots.iter().map(|s| s.outages.as_slice())),
        lost_writes: lost,
        lost_writes_by_kind,
        acked_writes: services.iter().map(|s| s.acked_writes).sum(),
        rejected_writes: services.iter().map(|s| s.rejected_writes).sum(),
        metrics: sim.metrics.clone(),
        services,
        violation: sim.violation.clone(),
        unavailable_at_end: sim
            .services
            .iter()
            .zip(&sim.scn.services)
            .filter(|(rt, _)| !rt.available)
            .map(|(_, spec)| spec.name.clone())
            .collect(),
        pending: never_ran(sim),
        rescheduling: sim.scn.rebalance.as_ref().map(|_| sim.resched.out.clone()),
        bound_failures,
        trace_tail: sim
            .trace
            .tail(if sim.violation.is_some() { 30 } else { 12 }),
        trace: sim.trace.tail(crate::sim::TRACE_LINES),
        timeline,
    }
}
