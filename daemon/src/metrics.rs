//! The daemon's Prometheus metrics (the `prometheus` crate), one registry served at `/metrics`.
//! Names follow Prometheus' conventions: `berth_` prefix, `_total` counters, `_seconds`
//! durations. The table of every metric is in README.md's operations section.

use berth_scheduler::schedule::Plan;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::controller::decide::Command;
use crate::slots::Observed;

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub reconciles: IntCounter,
    pub reconcile_errors: IntCounter,
    pub reconcile_seconds: Histogram,
    pub pending_tasks: IntGauge,
    pub templates: IntGauge,
    pub slot_services: IntGauge,
    pub invalid_templates: IntGauge,
    pub slot_commands: IntCounterVec,
    pub leader: IntGauge,
}

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
                "Time of one reconcile pass: read the swarm, plan, act.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )
        .expect("valid metric");
        registry
            .register(Box::new(reconcile_seconds.clone()))
            .expect("registers");
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
        let build = IntGauge::with_opts(
            Opts::new("berth_build_info", "Berth's version; always 1.")
                .const_label("version", env!("CARGO_PKG_VERSION")),
        )
        .expect("valid metric");
        build.set(1);
        registry.register(Box::new(build)).expect("registers");
        Metrics {
            reconciles: counter("berth_reconciles_total", "Reconcile passes started."),
            reconcile_errors: counter(
                "berth_reconcile_errors_total",
                "Reconcile passes that failed (Docker unreachable, a refused update, bad labels); each is retried with backoff.",
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
            reconcile_seconds,
            slot_commands,
            registry,
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
