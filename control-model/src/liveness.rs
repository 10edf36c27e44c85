//! Node liveness at the control service: each agent's last heartbeat and the lease it grants.
//! Pure, like the model: times are the control service's own monotonic milliseconds, passed in,
//! so no two machines' clocks are ever compared (an agent measures its lease on its own
//! monotonic clock from when it *sent* the heartbeat, which is never later than when this
//! service received it).
//!
//! Kept in memory, never persisted: a heartbeat a second per node must not cost a store write.
//! What is lost with a restart is made safe instead: a node this instance has not heard from
//! yet is treated as holding a lease until one full lease after the instance started, because
//! the previous instance may have granted it one just before it stopped — unless the state
//! holds a `grants::Closure` for it, which bounds that lease more tightly ("Fencing", rule 8):
//! this is where closed nodes are chosen and refused leases until they are reopened.
//!
//! The timing argument (ARCHITECTURE.md, "Fencing", rule 7; the checked sets are
//! `crate::profile`'s): an agent that cannot renew starts
//! stopping its containers `self_fence_deadline + drift_margin` before its lease ends on its own
//! clock, so they are stopped `drift_margin` before that; this service's view of the same lease
//! ends no earlier, so a fence that waits for the lease never overlaps a writer on the old node.

use std::collections::{BTreeMap, BTreeSet};

use super::grants::Closure;
use super::model::{ControlError, Node};
use super::wire::{Heartbeat, HeartbeatReply, NodeLiveness};

/// The least drift margin an agent may give, per mille of the lease. NTP and chrony slew a
/// clock's rate by at most 500 ppm and a quartz oscillator errs by about 100 ppm, so two nodes'
/// monotonic clocks differ in rate by about 1.2 ‰ at worst; 10 ‰ leaves eight times that.
pub const MIN_DRIFT_PER_MILLE: u64 = 10;

/// The control service's heartbeat and lease settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How often agents are expected to heartbeat.
    pub interval_ms: u64,
    /// Heartbeats a node may miss before it is reported not alive.
    pub misses: u32,
    /// How long one heartbeat keeps the node's lease.
    pub lease_ms: u64,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            interval_ms: 1_000,
            misses: 3,
            lease_ms: 5_000,
        }
    }
}

impl Timing {
    /// How long a node may go unheard before the leader closes it (`grants`): one heartbeat
    /// short of the detector's window, so a lost node is closed — and its closure committed —
    /// before `berth run` can see it lost and ask for its volumes.
    pub fn close_after_ms(&self) -> u64 {
        self.interval_ms * u64::from(self.misses.saturating_sub(1).max(1))
    }

    /// Checks the settings against each other; the error is worded for the operator.
    pub fn validate(&self) -> Result<(), String> {
        if self.interval_ms == 0 || self.misses == 0 || self.lease_ms == 0 {
            return Err("the heartbeat interval, misses and lease must be above zero".into());
        }
        let window = self.interval_ms * u64::from(self.misses);
        if self.lease_ms < window {
            return Err(format!(
                "--lease {} ms is shorter than --heartbeat-interval × --heartbeat-misses = {window} \
                 ms: a node would lose its lease while it still counts as alive",
                self.lease_ms
            ));
        }
        Ok(())
    }

    /// Whether an agent that needs `self_fence_deadline_ms + drift_margin_ms` to stop its
    /// containers, and renews every `interval_ms`, can honour a lease of this length. Its drift
    /// margin must cover the clocks' rates differing over one lease
    /// ([`MIN_DRIFT_PER_MILLE`]); the lease must outlast that reaction time
    /// (else the agent could not stop in time), with at least one heartbeat period to spare
    /// (else one late heartbeat would stop its containers).
    pub fn admits(
        &self,
        interval_ms: u64,
        self_fence_deadline_ms: u64,
        drift_margin_ms: u64,
    ) -> Result<(), String> {
        let react = self_fence_deadline_ms.saturating_add(drift_margin_ms);
        let least_drift = self.lease_ms * MIN_DRIFT_PER_MILLE / 1_000;
        if drift_margin_ms < least_drift {
            return Err(format!(
                "this agent's --drift-margin {drift_margin_ms} ms is under {} ‰ of the control \
                 service's {} ms lease ({least_drift} ms): two clocks whose rates differ that \
                 much could let a write through after the volume was handed away (raise \
                 --drift-margin, or shorten the control's --lease)",
                MIN_DRIFT_PER_MILLE, self.lease_ms
            ));
        }
        if self.lease_ms <= react {
            return Err(format!(
                "the control service grants leases of {} ms, not more than this agent's \
                 --self-fence-deadline + --drift-margin = {react} ms: it could not stop its \
                 containers before its lease ends (give the agent and the control service the same \
                 --timing, shorten them, or raise the control's --lease)",
                self.lease_ms
            ));
        }
        if self.lease_ms <= react.saturating_add(interval_ms) {
            return Err(format!(
                "the control service grants leases of {} ms, not more than this agent's \
                 --self-fence-deadline + --drift-margin + --heartbeat-interval = {} ms: one late \
                 heartbeat would stop its containers (give the agent and the control service the \
                 same --timing, shorten them, or raise the control's --lease)",
                self.lease_ms,
                react.saturating_add(interval_ms)
            ));
        }
        Ok(())
    }
}

/// What one node's liveness looks like now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeView {
    /// Heard from within `interval × misses`.
    pub alive: bool,
    /// Since its last heartbeat to this instance; `None` if it has sent none.
    pub last_heartbeat_age_ms: Option<u64>,
    /// How much longer its lease lasts (0: expired).
    pub lease_left_ms: u64,
    /// Not heard from at all since this instance started or took over, that long ago — set
    /// only once it is past `interval × misses`, when it is as much a verdict as a heartbeat
    /// that stopped: a node that died before a new leader took over is found lost too.
    pub unheard_ms: Option<u64>,
    /// What its last heartbeat said of its Docker Engine (`None`: no heartbeat yet).
    pub docker_reachable: Option<bool>,
}

/// Every node's last heartbeat and lease end, in this instance's monotonic ms.
#[derive(Debug, Clone, Default)]
pub struct Liveness {
    timing: Timing,
    beats: BTreeMap<String, Beat>,
    /// Until when a node this instance has not heard from counts as leased: one lease after the
    /// instance started (0 until `take_over`), or after it last became the Raft leader.
    unknown_until_ms: Option<u64>,
    /// When this instance started hearing heartbeats: its start (0), or its last takeover.
    listening_since_ms: u64,
    /// Nodes this instance grants no lease until a reopening record has committed: those the
    /// state held closed at the takeover and those it closed since (`grants`).
    closed: BTreeSet<String>,
    /// What the closures taken over say of each closed node not heard from since.
    inherited: BTreeMap<String, Inherited>,
}

/// A closed node as a takeover found it, on this instance's clock.
#[derive(Debug, Clone, Copy)]
struct Inherited {
    /// Its lease ends no later than this (instead of one lease after the takeover).
    lease_until_ms: u64,
    /// It was last heard from no later than this (instead of at the takeover).
    last_heard_ms: u64,
}

#[derive(Debug, Clone, Copy)]
struct Beat {
    at_ms: u64,
    lease_until_ms: u64,
    docker_reachable: bool,
}

impl Liveness {
    /// Liveness for an instance that started at monotonic 0.
    pub fn new(timing: Timing) -> Liveness {
        Liveness {
            timing,
            beats: BTreeMap::new(),
            unknown_until_ms: None,
            listening_since_ms: 0,
            closed: BTreeSet::new(),
            inherited: BTreeMap::new(),
        }
    }

    /// Forgets every heartbeat and counts every node as leased until one full lease after
    /// `now_ms`: a new leader (Raft's, or elected through Consul) knows nothing of the leases its
    /// predecessor granted but what the state's closures say, and the last of them ended no
    /// later than that (`control::replicated` and `control::elected` say why). `closures` are
    /// the state's, each with when this instance applied it (`grants`; an instant after
    /// `now_ms` counts as `now_ms`): each such node stays closed, its lease bounded by the
    /// closure, and is counted unheard since the closure says.
    pub fn take_over(
        &mut self,
        now_ms: u64,
        closures: impl IntoIterator<Item = (String, Closure, u64)>,
    ) {
        self.beats.clear();
        let cap = now_ms + self.timing.lease_ms;
        self.unknown_until_ms = Some(cap);
        self.listening_since_ms = now_ms;
        self.closed.clear();
        self.inherited.clear();
        for (node, c, applied_ms) in closures {
            let applied = applied_ms.min(now_ms);
            self.inherited.insert(
                node.clone(),
                Inherited {
                    lease_until_ms: c.lease_until(applied, cap, MIN_DRIFT_PER_MILLE),
                    last_heard_ms: c.last_heard(applied),
                },
            );
            self.closed.insert(node);
        }
    }

    /// Until when `node`, not heard from yet, may hold a lease a predecessor granted.
    fn unknown_until(&self, node: &str) -> u64 {
        match self.inherited.get(node) {
            Some(i) => i.lease_until_ms,
            None => self.unknown_until_ms.unwrap_or(self.timing.lease_ms),
        }
    }

    /// Since when `node`, not heard from yet, counts as unheard.
    fn unheard_since(&self, node: &str) -> u64 {
        self.inherited
            .get(node)
            .map_or(self.listening_since_ms, |i| i.last_heard_ms)
    }

    /// Whether `node` is closed: granted no lease until a record reopening it has committed.
    pub fn is_closed(&self, node: &str) -> bool {
        self.closed.contains(node)
    }

    /// Closes every node of `nodes` that is open and has not been heard from for
    /// [`Timing::close_after_ms`]: from now on it is granted no lease until [`Self::reopen`].
    /// Returns the closures to commit (empty: nothing to write). Call it, and propose what it
    /// returns, with no other closing or reopening in between (the service holds one lock
    /// across both), so the record committed last for a node is the one that holds.
    pub fn close_quiet(
        &mut self,
        nodes: impl IntoIterator<Item = String>,
        now_ms: u64,
    ) -> BTreeMap<String, Closure> {
        let after = self.timing.close_after_ms();
        let mut out = BTreeMap::new();
        for n in nodes {
            if self.closed.contains(&n) {
                continue;
            }
            let last = self
                .beats
                .get(&n)
                .map_or(self.unheard_since(&n), |b| b.at_ms);
            let unheard_ms = now_ms.saturating_sub(last);
            if unheard_ms < after {
                continue;
            }
            out.insert(
                n.clone(),
                Closure {
                    lease_left_ms: self.lease_left_ms(&n, now_ms),
                    unheard_ms,
                },
            );
            self.closed.insert(n);
        }
        out
    }

    /// The record reopening `nodes` has committed: they may be granted leases again. They are
    /// counted heard from now (each asked for a lease), so the next pass does not close them
    /// again before their heartbeat is admitted.
    pub fn reopen<'a>(&mut self, nodes: impl IntoIterator<Item = &'a String>, now_ms: u64) {
        for n in nodes {
            self.closed.remove(n);
            let kept = self.unknown_until(n);
            let b = self.beats.entry(n.clone()).or_insert(Beat {
                at_ms: now_ms,
                lease_until_ms: kept,
                docker_reachable: true,
            });
            b.at_ms = b.at_ms.max(now_ms);
        }
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// Records a heartbeat from `node`; `grant` says whether it gets a lease (a node declared
    /// dead does not). A closed node is heard from but granted nothing: what it may hold runs
    /// out. Returns the lease granted, in ms from now.
    pub fn heartbeat(&mut self, node: &str, now_ms: u64, grant: bool) -> u64 {
        if grant && self.closed.contains(node) {
            return self.heartbeat_unleased(node, now_ms);
        }
        let lease = if grant { self.timing.lease_ms } else { 0 };
        // A first heartbeat keeps what a node not heard from had: a lease a predecessor may
        // have granted runs on (a refused one, a node declared dead, had none to keep).
        let kept = if grant { self.unknown_until(node) } else { 0 };
        let b = self.beats.entry(node.to_string()).or_insert(Beat {
            at_ms: now_ms,
            lease_until_ms: kept,
            docker_reachable: true,
        });
        b.at_ms = now_ms;
        // A lease never shrinks by a heartbeat: one granted earlier still holds for the agent.
        b.lease_until_ms = b.lease_until_ms.max(now_ms + lease);
        lease
    }

    /// A registered node's heartbeat as the service answers it (`POST
    /// /v1/berth/nodes/{node}/heartbeat`): refused if the agent's own timings could not honour
    /// the lease ([`Timing::admits`]); a node declared `dead` is heard from but granted no lease;
    /// so is one whose agent cannot reach its Docker Engine (it could not stop its containers
    /// once its lease ended): the lease it holds, or a predecessor may have granted, runs out.
    /// Whoever serves heartbeats (the control service, the simulator) calls this one rule.
    pub fn admit(
        &mut self,
        node: &str,
        dead: bool,
        hb: &Heartbeat,
        now_ms: u64,
    ) -> Result<HeartbeatReply, ControlError> {
        self.timing
            .admits(
                hb.interval_ms,
                hb.self_fence_deadline_ms,
                hb.drift_margin_ms,
            )
            .map_err(ControlError::Invalid)?;
        let lease_ms = if hb.docker_reachable || dead {
            self.heartbeat(node, now_ms, !dead)
        } else {
            self.heartbeat_unleased(node, now_ms)
        };
        self.docker(node, hb.docker_reachable);
        Ok(HeartbeatReply {
            lease_ms,
            dead,
            nodes: 0,
        })
    }

    /// Records a heartbeat from a node that may not be granted a lease now (its agent cannot
    /// reach its Docker Engine, so could not stop its containers): heard from, and the lease it
    /// may already hold — one granted, or one a predecessor may have granted — runs out, but
    /// nothing is added. Returns 0, the lease granted.
    pub fn heartbeat_unleased(&mut self, node: &str, now_ms: u64) -> u64 {
        let kept = self.unknown_until(node);
        let b = self.beats.entry(node.to_string()).or_insert(Beat {
            at_ms: now_ms,
            lease_until_ms: kept,
            docker_reachable: false,
        });
        b.at_ms = now_ms;
        0
    }

    /// Records what `node`'s last heartbeat said of its Docker Engine (after [`Self::heartbeat`]).
    pub fn docker(&mut self, node: &str, reachable: bool) {
        if let Some(b) = self.beats.get_mut(node) {
            b.docker_reachable = reachable;
        }
    }

    /// How much longer `node`'s lease lasts (0: expired). A node not heard from since this
    /// instance started keeps the lease a previous instance might have given it.
    pub fn lease_left_ms(&self, node: &str, now_ms: u64) -> u64 {
        let until = self
            .beats
            .get(node)
            .map_or(self.unknown_until(node), |b| b.lease_until_ms);
        until.saturating_sub(now_ms)
    }

    pub fn view(&self, node: &str, now_ms: u64) -> NodeView {
        let age = self.beats.get(node).map(|b| now_ms.saturating_sub(b.at_ms));
        let window = self.timing.interval_ms * u64::from(self.timing.misses);
        let unheard = now_ms.saturating_sub(self.unheard_since(node));
        NodeView {
            alive: age.is_some_and(|a| a < window),
            last_heartbeat_age_ms: age,
            lease_left_ms: self.lease_left_ms(node, now_ms),
            unheard_ms: (age.is_none() && unheard >= window).then_some(unheard),
            docker_reachable: self.beats.get(node).map(|b| b.docker_reachable),
        }
    }

    /// Registered node `node`'s liveness as `GET /v1/berth/nodes` reports it.
    pub fn record(&self, node: &Node, now_ms: u64) -> NodeLiveness {
        let v = self.view(&node.uuid, now_ms);
        NodeLiveness {
            alive: v.alive && !node.dead,
            last_heartbeat_age_ms: v.last_heartbeat_age_ms,
            unheard_for_ms: v.unheard_ms,
            lease_expires_in_ms: v.lease_left_ms,
            dead: node.dead,
            docker_reachable: v.docker_reachable,
            node: node.uuid.clone(),
            host: node.host.clone(),
        }
    }

    /// Every lease still running, by node (what a fence or an assignment is checked against).
    pub fn leases(
        &self,
        nodes: impl IntoIterator<Item = String>,
        now_ms: u64,
    ) -> BTreeMap<String, u64> {
        nodes
            .into_iter()
            .map(|n| {
                let left = self.lease_left_ms(&n, now_ms);
                (n, left)
            })
            .filter(|(_, l)| *l > 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_runs_from_the_last_heartbeat_and_liveness_from_the_misses() {
        let t = Timing::default();
        let mut l = Liveness::new(t);
        // Never heard from: alive no, lease as a previous instance might have granted.
        assert_eq!(
            l.view("a", 1_000),
            NodeView {
                alive: false,
                last_heartbeat_age_ms: None,
                lease_left_ms: 4_000,
                unheard_ms: None,
                docker_reachable: None,
            }
        );
        assert_eq!(
            l.view("a", 3_000).unheard_ms,
            Some(3_000),
            "unheard for the whole detection window: a verdict"
        );
        assert_eq!(l.lease_left_ms("a", 5_000), 0);
        assert_eq!(l.heartbeat("a", 6_000, true), 5_000);
        assert!(l.view("a", 8_999).alive);
        assert!(!l.view("a", 9_000).alive, "three missed heartbeats");
        assert_eq!(l.lease_left_ms("a", 9_000), 2_000);
        assert_eq!(l.lease_left_ms("a", 11_000), 0);
        // Declared dead: heard from, but no lease, and an earlier one is not cut short.
        assert_eq!(l.heartbeat("a", 10_000, false), 0);
        assert_eq!(l.lease_left_ms("a", 10_500), 500);
        assert_eq!(
            l.leases(["a".to_string(), "b".to_string()], 10_500).len(),
            1
        );
    }

    /// A new Raft leader forgets heartbeats and holds every node leased for one lease from its
    /// takeover; a node that heartbeats then keeps at least that.
    #[test]
    fn a_takeover_counts_every_node_leased_for_one_lease() {
        let mut l = Liveness::new(Timing::default());
        l.heartbeat("a", 1_000, true);
        l.take_over(20_000, []);
        assert_eq!(l.view("a", 20_000).last_heartbeat_age_ms, None);
        assert_eq!(l.view("b", 22_999).unheard_ms, None, "not yet a verdict");
        assert_eq!(
            l.view("b", 23_000).unheard_ms,
            Some(3_000),
            "a node that died before the takeover is found lost one window after it"
        );
        assert_eq!(l.lease_left_ms("a", 20_000), 5_000);
        assert_eq!(l.lease_left_ms("b", 24_000), 1_000);
        assert_eq!(l.heartbeat("a", 20_100, true), 5_000);
        assert_eq!(l.lease_left_ms("a", 25_000), 100);
        assert_eq!(l.heartbeat("b", 20_100, false), 0);
        assert_eq!(
            l.lease_left_ms("b", 20_200),
            0,
            "a refused lease keeps nothing"
        );
        assert_eq!(l.leases(["b".to_string()], 25_000).len(), 0);
    }

    /// The heartbeat endpoint's rule and the detector's verdict on what the service reports,
    /// as `berth run` and the simulator both read it.
    #[test]
    fn a_heartbeat_is_admitted_and_the_verdict_follows_the_window() {
        let mut l = Liveness::new(Timing::default());
        let node = |dead| Node {
            uuid: "a".into(),
            host: "h".into(),
            transfer: String::new(),
            dead,
        };
        let agent = Heartbeat {
            interval_ms: 1_000,
            self_fence_deadline_ms: 2_000,
            drift_margin_ms: 500,
            docker_reachable: true,
        };
        assert_eq!(
            l.record(&node(false), 1_000).verdict(),
            None,
            "no verdict yet"
        );
        assert_eq!(
            l.record(&node(false), 3_000).verdict(),
            Some(true),
            "unheard"
        );
        let slow = Heartbeat {
            self_fence_deadline_ms: 4_500,
            ..agent
        };
        assert!(matches!(
            l.admit("a", false, &slow, 3_000),
            Err(ControlError::Invalid(_))
        ));
        assert_eq!(
            l.view("a", 3_000).last_heartbeat_age_ms,
            None,
            "a refusal is no heartbeat"
        );
        let r = l.admit("a", false, &agent, 4_000).expect("admitted");
        assert_eq!((r.lease_ms, r.dead), (5_000, false));
        assert_eq!(l.record(&node(false), 6_999).verdict(), Some(false));
        assert_eq!(
            l.record(&node(false), 7_000).verdict(),
            Some(true),
            "three misses"
        );
        assert_eq!(
            l.record(&node(true), 4_500).verdict(),
            Some(true),
            "declared dead"
        );
        let r = l.admit("a", true, &agent, 8_000).expect("heard, no lease");
        assert_eq!((r.lease_ms, r.dead), (0, true));
    }

    /// An agent without its Docker Engine is heard from (alive) but given no lease; the lease it
    /// holds, or might hold from a predecessor, still runs out before its volumes move.
    #[test]
    fn a_node_without_its_docker_engine_is_alive_but_gets_no_lease() {
        let mut l = Liveness::new(Timing::default());
        assert_eq!(l.heartbeat("a", 1_000, true), 5_000);
        assert_eq!(l.heartbeat_unleased("a", 2_000), 0);
        l.docker("a", false);
        let v = l.view("a", 2_500);
        assert!(v.alive);
        assert_eq!(v.docker_reachable, Some(false));
        assert_eq!(
            v.lease_left_ms, 3_500,
            "the lease granted at 1s runs on, not extended"
        );
        assert_eq!(l.lease_left_ms("a", 6_000), 0);
        assert_eq!(l.heartbeat("a", 7_000, true), 5_000);
        l.docker("a", true);
        assert_eq!(l.view("a", 7_000).docker_reachable, Some(true));
        // Not heard from since a takeover: the predecessor's possible lease is kept.
        l.take_over(20_000, []);
        assert_eq!(l.heartbeat_unleased("b", 20_100), 0);
        assert_eq!(l.lease_left_ms("b", 20_100), 4_900);
        assert_eq!(l.view("c", 20_100).docker_reachable, None);
    }

    #[test]
    fn timings_are_checked_against_each_other() {
        let t = Timing::default();
        t.validate().expect("defaults");
        t.admits(1_000, 2_000, 500).expect("the agent's defaults");
        let e = t
            .admits(1_000, 4_500, 500)
            .expect_err("cannot stop in time");
        assert!(e.contains("could not stop its containers"), "{e}");
        let e = t.admits(1_000, 3_500, 500).expect_err("one late beat");
        assert!(e.contains("one late heartbeat"), "{e}");
        let e = t.admits(1_000, 2_000, 49).expect_err("under 1 % of 5 s");
        assert!(e.contains("--drift-margin 49 ms"), "{e}");
        t.admits(1_000, 2_000, 50).expect("1 % of 5 s");
        let short = Timing {
            lease_ms: 2_000,
            ..t
        };
        assert!(
            short
                .validate()
                .expect_err("lease < window")
                .contains("--lease")
        );
    }
}
