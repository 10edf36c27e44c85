//! The control service's Prometheus metrics (`prometheus` crate), served at `/metrics` on its
//! API address. Process-wide, so the code that sees an event (a request in a middleware) counts
//! it without plumbing. Gauges describing state (epochs, node liveness, leadership) are not
//! kept here: `StateGauges`, a `Collector`, computes them from the state at each scrape, so they
//! are never stale and a series whose volume or node went away is gone. The table is in
//! docs/observability.md.

use std::sync::LazyLock;

use berth_control_model::wire::NodeLiveness;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
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

fn encode(families: &[MetricFamily]) -> String {
    let mut buf = Vec::new();
    TextEncoder::new()
        .encode(families, &mut buf)
        .expect("text encoding of gathered metrics");
    String::from_utf8(buf).expect("the text format is UTF-8")
}

/// The control service's metrics.
pub struct ControlMetrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub primary_changes: IntCounterVec,
    pub handovers_refused: IntCounter,
    pub insecure: IntGauge,
}

/// The `mode` values of `berth_primary_changes_total`, exported at 0 from the start so that
/// `increase()` sees the first one.
pub const CHANGE_MODES: [&str; 3] = ["move", "promote", "recreate"];

impl ControlMetrics {
    fn new() -> ControlMetrics {
        let r = Registry::new();
        let m = ControlMetrics {
            requests: counter_vec(
                &r,
                "berth_control_requests_total",
                "Control API requests answered, by route template and status code.",
                &["route", "code"],
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

    /// The text exposition: the counters as they stand, and `state`'s gauges.
    pub fn encode(&self, state: &StateGauges) -> String {
        let mut families = self.registry.gather();
        // A vector with no series yet collects as an empty family, which the text format
        // refuses (the registry's own `gather` drops them the same way).
        families.extend(
            state
                .collect()
                .into_iter()
                .filter(|f| !f.get_metric().is_empty()),
        );
        families.sort_by(|a, b| a.name().cmp(b.name()));
        encode(&families)
    }
}

/// The gauges that describe the control state, computed from one reading of it at a scrape.
/// A member that does not serve holds no current state: it exports only `berth_control_leader`
/// 0, so a dashboard summing over instances never counts a follower's stale copy.
pub struct StateGauges {
    leader: IntGauge,
    fence_epoch: IntGaugeVec,
    heartbeat_age: GaugeVec,
    lease_left: GaugeVec,
    node_alive: IntGaugeVec,
}

impl StateGauges {
    /// `epochs`: each live volume's name and epoch; `nodes`: each registered node's liveness.
    pub fn new(serving: bool, epochs: &[(String, u64)], nodes: &[NodeLiveness]) -> StateGauges {
        let g = StateGauges {
            leader: IntGauge::new(
                "berth_control_leader",
                "1 while this control instance serves the API: always when it runs alone, \
                 only as the caught-up Raft leader when replicated.",
            )
            .expect("valid metric"),
            fence_epoch: IntGaugeVec::new(
                Opts::new(
                    "berth_fence_epoch",
                    "Each live volume's current epoch (fencing token).",
                ),
                &["volume"],
            )
            .expect("valid metric"),
            heartbeat_age: GaugeVec::new(
                Opts::new(
                    "berth_node_heartbeat_age_seconds",
                    "Since each registered node's last heartbeat (control clock); absent before \
                     its first since the control service started.",
                ),
                &["node"],
            )
            .expect("valid metric"),
            lease_left: GaugeVec::new(
                Opts::new(
                    "berth_node_lease_remaining_seconds",
                    "How much longer each registered node's lease runs (0: ended).",
                ),
                &["node"],
            )
            .expect("valid metric"),
            node_alive: IntGaugeVec::new(
                Opts::new(
                    "berth_node_alive",
                    "1 while a node heartbeats within interval × misses and is not declared dead.",
                ),
                &["node"],
            )
            .expect("valid metric"),
        };
        g.leader.set(i64::from(serving));
        if !serving {
            return g;
        }
        for (name, epoch) in epochs {
            g.fence_epoch
                .with_label_values(&[name.as_str()])
                .set(i64::try_from(*epoch).unwrap_or(i64::MAX));
        }
        for n in nodes {
            let node = [n.node.as_str()];
            if let Some(age) = n.last_heartbeat_age_ms {
                g.heartbeat_age
                    .with_label_values(&node)
                    .set(age as f64 / 1000.0);
            }
            g.lease_left
                .with_label_values(&node)
                .set(n.lease_expires_in_ms as f64 / 1000.0);
            g.node_alive
                .with_label_values(&node)
                .set(i64::from(n.alive));
        }
        g
    }
}

impl Collector for StateGauges {
    fn desc(&self) -> Vec<&Desc> {
        let mut d = self.leader.desc();
        d.extend(self.fence_epoch.desc());
        d.extend(self.heartbeat_age.desc());
        d.extend(self.lease_left.desc());
        d.extend(self.node_alive.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut f = self.leader.collect();
        f.extend(self.fence_epoch.collect());
        f.extend(self.heartbeat_age.collect());
        f.extend(self.lease_left.collect());
        f.extend(self.node_alive.collect());
        f
    }
}

static CONTROL: LazyLock<ControlMetrics> = LazyLock::new(ControlMetrics::new);

pub fn control() -> &'static ControlMetrics {
    &CONTROL
}

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use berth_control_model::wire::NodeLiveness;

    use super::{StateGauges, control};

    fn node(name: &str, alive: bool, age_ms: Option<u64>) -> NodeLiveness {
        NodeLiveness {
            node: name.into(),
            host: "h".into(),
            alive,
            last_heartbeat_age_ms: age_ms,
            unheard_for_ms: None,
            lease_expires_in_ms: 1500,
            dead: false,
            docker_reachable: None,
        }
    }

    #[test]
    fn the_serving_member_exports_the_state_it_reads_now() {
        let nodes = [node("n1", true, Some(250)), node("n2", false, None)];
        let text = control().encode(&StateGauges::new(true, &[("w".into(), 3)], &nodes));
        assert!(text.contains("berth_control_leader 1\n"), "{text}");
        assert!(
            text.contains("berth_fence_epoch{volume=\"w\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("berth_node_alive{node=\"n1\"} 1\n"), "{text}");
        assert!(text.contains("berth_node_alive{node=\"n2\"} 0\n"), "{text}");
        assert!(
            text.contains("berth_node_heartbeat_age_seconds{node=\"n1\"} 0.25\n"),
            "{text}"
        );
        assert!(
            !text.contains("berth_node_heartbeat_age_seconds{node=\"n2\"}"),
            "no heartbeat yet, no series: {text}"
        );
        assert!(
            text.contains("berth_node_lease_remaining_seconds{node=\"n2\"} 1.5\n"),
            "{text}"
        );
        // The counters come along, in name order with the gauges.
        assert!(text.contains("berth_handovers_refused_total"), "{text}");
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap_or_default())
            .collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
    }

    #[test]
    fn a_later_scrape_forgets_what_went_away_and_a_follower_exports_no_state() {
        let first = control().encode(&StateGauges::new(
            true,
            &[("gone".into(), 1)],
            &[node("n1", true, Some(1))],
        ));
        assert!(first.contains("volume=\"gone\""), "{first}");
        let later = control().encode(&StateGauges::new(true, &[], &[]));
        assert!(!later.contains("volume=\"gone\""), "{later}");
        assert!(!later.contains("node=\"n1\""), "{later}");
        let follower = control().encode(&StateGauges::new(
            false,
            &[("w".into(), 2)],
            &[node("n1", true, Some(1))],
        ));
        assert!(follower.contains("berth_control_leader 0\n"), "{follower}");
        assert!(!follower.contains("berth_fence_epoch{"), "{follower}");
        assert!(!follower.contains("berth_node_alive{"), "{follower}");
    }
}
