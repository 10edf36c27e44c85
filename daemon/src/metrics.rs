//! The daemon's Prometheus metrics (the `prometheus` crate), one registry served at `/metrics`.
//! Names follow Prometheus' conventions: `berth_` prefix, `_total` counters, `_seconds`
//! durations. The table of every metric is in docs/observability.md.

use berth_control_model::wire::VolumeRecord;
use berth_scheduler::executor::{Command as ExecCommand, FailoverRecord, Outcome, RunEnd};
use berth_scheduler::failover::Event;
use berth_scheduler::schedule::Plan;
use bollard_stubs::models::TaskState;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::controller::decide::Command;
use crate::slots::Observed;

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub reconciles: IntCounter,
    pub reconcile_errors: IntCounter,
    pub swarm_unavailable: IntCounter,
    pub reconcile_seconds: Histogram,
    pub pending_tasks: IntGauge,
    pub templates: IntGauge,
    pub slot_services: IntGauge,
    pub invalid_templates: IntGauge,
    pub slot_commands: IntCounterVec,
    pub leader: IntGauge,
    pub ready: IntGauge,
    pub insecure: IntGauge,
    pub last_success: Gauge,
    pub placements: IntGaugeVec,
    pub slot_running: IntGaugeVec,
    pub consul_instances: IntGaugeVec,
    pub consul_changes: IntCounterVec,
    pub consul_sync_errors: IntCounter,
    pub failover_commands: IntCounterVec,
    pub failover_seconds: HistogramVec,
    pub failovers_running: IntGauge,
    pub fence_epoch: IntGaugeVec,
    pub rebalance_moves: IntCounterVec,
    pub rebalance_bytes: IntCounter,
    pub rebalance_downtime: Histogram,
    pub rebalancing: IntGauge,
    /// Runs already counted in `failover_seconds`.
    counted_runs: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<u64>>>,
}

/// The `command` values of `berth_failover_commands_total`.
const EXEC_COMMANDS: [&str; 8] = [
    "fence",
    "assign",
    "pre-copy",
    "stop-slot",
    "start-slot",
    "drop-stale",
    "set-fence-label",
    "clear-fence-label",
];
const EXEC_OUTCOMES: [&str; 3] = ["done", "refused", "failed"];

/// The `result` values of `berth_rebalance_moves_total`.
pub const MOVE_RESULTS: [&str; 3] = ["moved", "rolled-back", "failed"];

fn command_kind(c: &ExecCommand) -> &'static str {
    match c {
        ExecCommand::Fence { .. } => "fence",
        ExecCommand::Assign { .. } => "assign",
        ExecCommand::PreCopy { .. } => "pre-copy",
        ExecCommand::StopSlot { .. } => "stop-slot",
        ExecCommand::StartSlot { .. } => "start-slot",
        ExecCommand::DropStale { .. } => "drop-stale",
        ExecCommand::SetFenceLabel { .. } => "set-fence-label",
        ExecCommand::ClearFenceLabel { .. } => "clear-fence-label",
    }
}

fn event_kind(e: &Event) -> &'static str {
    match e {
        Event::NodeDown(_) => "node-down",
        Event::NodeDrained(_) => "node-drained",
        Event::NodeBack(_) => "node-back",
    }
}

/// The `kind` values of `berth_slot_commands_total`. Every one is exported from the start (at
/// 0), so that `rate()` and `increase()` see a command's first occurrence.
const COMMAND_KINDS: [&str; 4] = ["create", "rollout", "remove", "quiesce"];

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("registers");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("registers");
            g
        };
        let reconcile_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "berth_reconcile_duration_seconds",
                "Time of one completed reconcile pass: read the swarm, plan, sync Consul, act.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )
        .expect("valid metric");
        registry
            .register(Box::new(reconcile_seconds.clone()))
            .expect("registers");
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("registers");
            g
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("registers");
            c
        };
        let last_success = Gauge::new(
            "berth_last_reconcile_success_timestamp_seconds",
            "When the last reconcile pass succeeded (Unix time); 0 before the first.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(last_success.clone()))
            .expect("registers");
        let placements = gauge_vec(
            "berth_placements",
            "Tasks (and stateful slots) placed in the last plan, by whether they already run there (kept) or the plan places them (new).",
            &["kind"],
        );
        for k in ["kept", "new"] {
            placements.with_label_values(&[k]).set(0);
        }
        let slot_running = gauge_vec(
            "berth_slot_running",
            "1 while the slot of the stateful template runs (its slot service's task is running), else 0; one series per slot of every template.",
            &["template", "slot"],
        );
        let consul_instances = gauge_vec(
            "berth_consul_instances",
            "Consul service instances berth run keeps registered (one per task), by the status of their check.",
            &["check"],
        );
        for c in ["passing", "critical"] {
            consul_instances.with_label_values(&[c]).set(0);
        }
        let consul_changes = counter_vec(
            "berth_consul_changes_total",
            "Registrations and deregistrations berth run made in Consul, by operation.",
            &["op"],
        );
        for op in ["register", "deregister"] {
            consul_changes.with_label_values(&[op]);
        }
        let slot_commands = IntCounterVec::new(
            Opts::new(
                "berth_slot_commands_total",
                "Operations on slot services and templates, by kind (create, rollout, remove, quiesce).",
            ),
            &["kind"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(slot_commands.clone()))
            .expect("registers");
        for k in COMMAND_KINDS {
            slot_commands.with_label_values(&[k]);
        }
        let failover_commands = counter_vec(
            "berth_failover_commands_total",
            "Commands the failover executor had performed, by command and outcome (done, refused: a precondition such as the epoch did not hold, failed).",
            &["command", "outcome"],
        );
        for c in EXEC_COMMANDS {
            for o in EXEC_OUTCOMES {
                failover_commands.with_label_values(&[c, o]);
            }
        }
        let failover_seconds = HistogramVec::new(
            HistogramOpts::new(
                "berth_failover_duration_seconds",
                "Time of one failover run, from the event (node lost, drained, back) to its last slot running or dropped, by event and end.",
            )
            .buckets(vec![1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0]),
            &["event", "end"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(failover_seconds.clone()))
            .expect("registers");
        for e in ["node-down", "node-drained", "node-back", "readmit"] {
            for end in ["completed", "dropped"] {
                failover_seconds.with_label_values(&[e, end]);
            }
        }
        let fence_epoch = gauge_vec(
            "berth_fence_epoch",
            "Each Berth volume's current epoch (fencing token) at the volume control service; with --volume-control only.",
            &["volume"],
        );
        let rebalance_moves = counter_vec(
            "berth_rebalance_moves_total",
            "Rescheduling moves that ended, by result: moved (the slot runs on its target), rolled-back (it failed after the stop and was restarted where it ran), failed (it failed before the stop; the slot kept serving).",
            &["result"],
        );
        for r in MOVE_RESULTS {
            rebalance_moves.with_label_values(&[r]);
        }
        let rebalance_downtime = Histogram::with_opts(
            HistogramOpts::new(
                "berth_rebalance_downtime_seconds",
                "Time one moved slot was down: from its task seen stopped to its task running again (on the target, or where it ran after a roll-back).",
            )
            .buckets(vec![
                0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0,
            ]),
        )
        .expect("valid metric");
        registry
            .register(Box::new(rebalance_downtime.clone()))
            .expect("registers");
        let build = IntGauge::with_opts(
            Opts::new("berth_build_info", "Berth's version; always 1.")
                .const_label("version", env!("CARGO_PKG_VERSION")),
        )
        .expect("valid metric");
        build.set(1);
        registry.register(Box::new(build)).expect("registers");
        Metrics {
            reconciles: counter(
                "berth_reconciles_total",
                "Reconcile passes that read the swarm and planned (a pass that cannot read it counts in berth_reconcile_errors_total only).",
            ),
            reconcile_errors: counter(
                "berth_reconcile_errors_total",
                "Reconcile passes that failed (Docker unreachable, a refused update, bad labels); each is retried with backoff.",
            ),
            swarm_unavailable: counter(
                "berth_swarm_unavailable_total",
                "Reconcile passes that failed because Swarm's API did not answer (a manager election, the local manager away); retried every second at most, also counted in berth_reconcile_errors_total.",
            ),
            pending_tasks: gauge(
                "berth_pending_tasks",
                "Tasks (and stateful slots) the engine could not place in the last pass.",
            ),
            templates: gauge(
                "berth_templates",
                "Stateful templates (berth.stateful services) Berth runs as slot services.",
            ),
            slot_services: gauge("berth_slot_services", "Slot services that exist."),
            invalid_templates: gauge(
                "berth_invalid_templates",
                "berth.stateful services Berth cannot run (see the log or /v1/plan).",
            ),
            leader: gauge(
                "berth_leader",
                "1 when this daemon is the active controller.",
            ),
            ready: gauge(
                "berth_ready",
                "1 while /v1/ready answers 200: a reconcile pass succeeded within the last 3 resync periods.",
            ),
            insecure: gauge(
                "berth_insecure",
                "1 when this daemon was started with --insecure: its API answers anyone, without the cluster token.",
            ),
            consul_sync_errors: counter(
                "berth_consul_sync_errors_total",
                "Reconcile passes whose Consul sync failed in part or whole (retried at the next pass).",
            ),
            failovers_running: gauge(
                "berth_failovers_running",
                "Failover runs the executor has not finished.",
            ),
            rebalance_bytes: counter(
                "berth_rebalance_bytes_total",
                "Bytes of the datasets rescheduling moves carried to their target (the plan's size of each moved dataset).",
            ),
            rebalancing: gauge(
                "berth_rebalance_running",
                "1 while a rescheduling run is under way.",
            ),
            rebalance_moves,
            rebalance_downtime,
            failover_commands,
            failover_seconds,
            fence_epoch,
            counted_runs: Default::default(),
            last_success,
            placements,
            slot_running,
            consul_instances,
            consul_changes,
            reconcile_seconds,
            slot_commands,
            registry,
        }
    }

    /// One performed failover command and its outcome.
    pub fn executor_command(&self, c: &ExecCommand, o: &Outcome) {
        let outcome = match o {
            Outcome::Done => "done",
            Outcome::Refused { .. } => "refused",
            Outcome::Failed { .. } => "failed",
        };
        self.failover_commands
            .with_label_values(&[command_kind(c), outcome])
            .inc();
    }

    /// The executor's history: runs still going, and each ended run's time, counted once.
    pub fn observe_failovers(&self, history: &[FailoverRecord]) {
        let mut counted = self.counted_runs.lock().expect("metrics lock");
        let mut running = 0;
        // Rescheduling runs have their own metrics (berth_rebalance_*).
        for r in history.iter().filter(|r| !r.rebalance) {
            let (Some(ended), Some(end)) = (r.ended_ms, r.end) else {
                running += 1;
                continue;
            };
            if !counted.insert(r.run) {
                continue;
            }
            let event = r.event.as_ref().map_or("readmit", event_kind);
            let end = match end {
                RunEnd::Completed => "completed",
                RunEnd::Dropped { .. } | RunEnd::Abandoned => "dropped",
            };
            let secs = ended.saturating_sub(r.started_ms) as f64 / 1000.0;
            self.failover_seconds
                .with_label_values(&[event, end])
                .observe(secs);
        }
        self.failovers_running.set(running);
    }

    /// Each volume's epoch, as the control service has it.
    pub fn observe_volumes(&self, records: &[VolumeRecord]) {
        self.fence_epoch.reset();
        for r in records {
            self.fence_epoch
                .with_label_values(&[&r.name])
                .set(i64::try_from(r.epoch).unwrap_or(i64::MAX));
        }
    }

    pub fn observe_plan(&self, plan: &Plan, observed: &Observed) {
        self.reconciles.inc();
        self.pending_tasks
            .set(i64::try_from(plan.pending.len()).unwrap_or(i64::MAX));
        self.templates
            .set(i64::try_from(observed.templates.len()).unwrap_or(i64::MAX));
        self.slot_services
            .set(i64::try_from(observed.slots.len()).unwrap_or(i64::MAX));
        self.invalid_templates
            .set(i64::try_from(observed.invalid.len()).unwrap_or(i64::MAX));
        let new = plan.new_placements().count();
        self.placements
            .with_label_values(&["new"])
            .set(i64::try_from(new).unwrap_or(i64::MAX));
        self.placements
            .with_label_values(&["kept"])
            .set(i64::try_from(plan.placements.len() - new).unwrap_or(i64::MAX));
        self.observe_slots(observed);
    }

    /// `berth_slot_running`: every slot of every template, 1 if its slot service's task runs.
    /// Rebuilt each pass, so a removed template's or slot's series goes with it.
    fn observe_slots(&self, observed: &Observed) {
        let running: std::collections::BTreeSet<&str> = observed
            .state()
            .tasks
            .iter()
            .filter(|t| {
                t.desired_state == Some(TaskState::RUNNING)
                    && t.status.as_ref().and_then(|s| s.state) == Some(TaskState::RUNNING)
            })
            .filter_map(|t| t.service_id.as_deref())
            .collect();
        let mut series = Vec::new();
        for t in observed.templates.values() {
            for slot in 1..=t.slots {
                let up = observed
                    .slots
                    .get(&(t.id.clone(), slot))
                    .is_some_and(|s| running.contains(s.id.as_str()));
                series.push((t.name.clone(), slot.to_string(), i64::from(up)));
            }
        }
        self.slot_running.reset();
        for (template, slot, up) in series {
            self.slot_running
                .with_label_values(&[template.as_str(), slot.as_str()])
                .set(up);
        }
    }

    /// A pass succeeded now.
    pub fn reconciled(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_success.set(now);
    }

    pub fn command(&self, c: &Command) {
        let kind = match c {
            Command::Quiesce { .. } => "quiesce",
            Command::Create { .. } => "create",
            Command::Rollout { .. } => "rollout",
            Command::Remove { .. } => "remove",
        };
        self.slot_commands.with_label_values(&[kind]).inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
