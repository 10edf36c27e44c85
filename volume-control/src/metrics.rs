//! The control service's Prometheus metrics (`prometheus` crate), served at `/metrics` on its
//! API address. Process-wide, so the code that sees an event (a request in a middleware) counts
//! it without plumbing. Gauges describing state (epochs, node liveness) are set at each scrape
//! from the state itself, so they are never stale. The table is in docs/observability.md.

use std::sync::LazyLock;

use prometheus::{
    Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(c.clone())).expect("registers once");
    c
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("registers once");
    c
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("registers once");
    g
}

fn encode(r: &Registry) -> String {
    let mut buf = Vec::new();
    TextEncoder::new()
        .encode(&r.gather(), &mut buf)
        .expect("text encoding of gathered metrics");
    String::from_utf8(buf).expect("the text format is UTF-8")
}

/// The control service's metrics.
pub struct ControlMetrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub fence_epoch: IntGaugeVec,
    pub primary_changes: IntCounterVec,
    pub handovers_refused: IntCounter,
    pub heartbeat_age: prometheus::GaugeVec,
    pub lease_left: prometheus::GaugeVec,
    pub node_alive: IntGaugeVec,
    pub leader: IntGauge,
    pub insecure: IntGauge,
}

/// The `mode` values of `berth_primary_changes_total`, exported at 0 from the start so that
/// `increase()` sees the first one.
pub const CHANGE_MODES: [&str; 3] = ["move", "promote", "recreate"];

impl ControlMetrics {
    fn new() -> ControlMetrics {
        let r = Registry::new();
        let fgauge = |name: &str, help: &str| {
            let g =
                prometheus::GaugeVec::new(Opts::new(name, help), &["node"]).expect("valid metric");
            r.register(Box::new(g.clone())).expect("registers once");
            g
        };
        let m = ControlMetrics {
            requests: counter_vec(
                &r,
                "berth_control_requests_total",
                "Control API requests answered, by route template and status code.",
                &["route", "code"],
            ),
            fence_epoch: gauge_vec(
                &r,
                "berth_fence_epoch",
                "Each live volume's current epoch (fencing token).",
                &["volume"],
            ),
            primary_changes: counter_vec(
                &r,
                "berth_primary_changes_total",
                "Volumes given a new primary: a Flocker move or a failover assignment, by mode.",
                &["mode"],
            ),
            handovers_refused: counter(
                &r,
                "berth_handovers_refused_total",
                "Fences and assignments refused (423) because the node holding the volume \
                 still had its lease.",
            ),
            heartbeat_age: fgauge(
                "berth_node_heartbeat_age_seconds",
                "Since each registered node's last heartbeat (control clock); absent before \
                 its first since the control service started.",
            ),
            lease_left: fgauge(
                "berth_node_lease_remaining_seconds",
                "How much longer each registered node's lease runs (0: ended).",
            ),
            node_alive: gauge_vec(
                &r,
                "berth_node_alive",
                "1 while a node heartbeats within interval × misses and is not declared dead.",
                &["node"],
            ),
            leader: {
                let g = IntGauge::new(
                    "berth_control_leader",
                    "1 while this control instance serves the API: always when it runs alone, \
                     only as the caught-up Raft leader when replicated.",
                )
                .expect("valid metric");
                r.register(Box::new(g.clone())).expect("registers once");
                g
            },
            insecure: {
                let g = IntGauge::new(
                    "berth_control_insecure",
                    "1 when this control instance was started with --insecure: no token, every \
                     request is the operator's.",
                )
                .expect("valid metric");
                r.register(Box::new(g.clone())).expect("registers once");
                g
            },
            registry: r,
        };
        for mode in CHANGE_MODES {
            m.primary_changes.with_label_values(&[mode]);
        }
        m
    }

    pub fn encode(&self) -> String {
        encode(&self.registry)
    }
}

static CONTROL: LazyLock<ControlMetrics> = LazyLock::new(ControlMetrics::new);

pub fn control() -> &'static ControlMetrics {
    &CONTROL
}

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
