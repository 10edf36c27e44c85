//! One run of one policy on one schedule, boiled down to what the report and the sweep need:
//! metrics, per-service outcomes, lost writes, the violation if any, bound failures, the
//! trace tail and the timeline for the plot.

use berth_scheduler::schedule;
use serde::Serialize;

use crate::checker::Violation;
use crate::clock::Ms;
use crate::faults::Fault;
use crate::metrics::{Metrics, percentile};
use crate::policy::PolicyKind;
use crate::scenario::Scenario;
use crate::sim::{NodeMark, Sim, SimError};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceOutcome {
    pub name: String,
    pub unavailable_ms: Ms,
    pub acked_writes: u64,
    pub rejected_writes: u64,
    pub lost_writes: u64,
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
    pub lost_writes: u64,
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
    let mut services = Vec::new();
    for (si, svc) in sim.services.iter().enumerate() {
        let spec = &sim.scn.services[si];
        let first = svc.first_slot as usize;
        let slots = &sim.slots[first..first + svc.replicas as usize];
        let (acked, lost) = if svc.self_replicating {
            let best = sim.service_max_len(si as u32);
            (svc.acked, svc.acked.saturating_sub(best))
        } else {
            let mut acked = 0;
            let mut lost = 0;
            for sl in slots {
                if let Some(d) = sl.dataset {
                    let ds = &sim.datasets[d as usize];
                    acked += ds.acked;
                    lost += sim.dataset_lost(d);
                }
            }
            (acked, lost)
        };
        services.push(ServiceOutcome {
            name: spec.name.clone(),
            unavailable_ms: svc.unavailable_ms,
            acked_writes: acked,
            rejected_writes: svc.rejected,
            lost_writes: lost,
        });
    }
    let unavail: Vec<Ms> = services.iter().map(|s| s.unavailable_ms).collect();
    let p50 = percentile(&unavail, 50);
    let p99 = percentile(&unavail, 99);
    let lost: u64 = services.iter().map(|s| s.lost_writes).sum();
    let mut bound_failures = Vec::new();
    if sim.policy == PolicyKind::Berth {
        let b = &sim.scn.bounds;
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
        lost_writes: lost,
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
        bound_failures,
        trace_tail: sim
            .trace
            .tail(if sim.violation.is_some() { 30 } else { 12 }),
        trace: sim.trace.tail(crate::sim::TRACE_LINES),
        timeline,
    }
}
