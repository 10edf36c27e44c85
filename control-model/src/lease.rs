//! The agent's side of node leases: heartbeat the control service every `interval`, keep the
//! lease each answer grants, and admit a container's write only while that lease holds
//! (`datapath` asks [`Keeper::admit`] before every write it serves). This is what lets the
//! control service hand a volume to another node once the lease has ended without the old node
//! still writing (ARCHITECTURE.md, "Fencing"), whatever happens to the agent: dead, its mounts
//! die with it; paused or frozen, the writes wait in the kernel and are checked when it runs
//! again.
//!
//! The lease counts from the instant the heartbeat was *sent*, on this node's boot clock
//! (`clock`), which is never later than the control service's receipt: the agent's lease ends
//! first. The gate closes `drift_margin` before that end, which covers the two clocks' rates
//! drifting apart over one lease.
//!
//! **Lease periods.** A renewal whose answer arrives while the gate is still open continues the
//! lease: the control service received it before the lease it extends had ended on its clock,
//! so it never saw this node without a lease. Any other renewal starts a new period, and the
//! control service may have handed a volume away in the gap: a mount admits writes only in the
//! period it was validated in (claimed at the control service at its epoch), so after a gap
//! every mount waits until it is claimed again — or is refused, its data having moved.
//!
//! Containers are stopped only when their data is known to be gone (a mount refused, the node
//! declared dead), never because a lease lapsed: a short loss of contact holds writes instead of
//! restarting every stateful container on the node.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::wire::{Heartbeat, HeartbeatReply};

/// The agent's heartbeat and self-fence settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentTiming {
    pub interval: Duration,
    /// Heartbeats missed in a row before the agent says it lost contact.
    pub misses: u32,
    /// How long stopping the containers whose data moved away (or of a node declared dead) may
    /// take before they are killed.
    pub self_fence_deadline: Duration,
    /// How far the two monotonic clocks may drift apart over one lease: the gate closes this
    /// long before the lease ends on this node's clock.
    pub drift_margin: Duration,
}

impl Default for AgentTiming {
    fn default() -> AgentTiming {
        AgentTiming {
            interval: Duration::from_secs(1),
            misses: 3,
            self_fence_deadline: Duration::from_secs(2),
            drift_margin: Duration::from_millis(500),
        }
    }
}

impl AgentTiming {
    /// What a heartbeat tells the control service, which refuses a lease this agent could not
    /// honour.
    pub fn heartbeat(&self) -> Heartbeat {
        Heartbeat {
            interval_ms: self.interval.as_millis() as u64,
            self_fence_deadline_ms: self.self_fence_deadline.as_millis() as u64,
            drift_margin_ms: self.drift_margin.as_millis() as u64,
            docker_reachable: true,
        }
    }
}

/// Whether a write may go on now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    Go,
    /// Not now: no lease held, or the mount is not yet validated in this lease period. The
    /// write waits; the reason is for the log.
    Wait(&'static str),
    /// Never again on this mount: the node was declared dead (or the mount's data moved).
    Refuse(String),
}

/// Where the agent stands with its lease. Instants (`clock::now`) are passed in, so the rules
/// are tested without waiting.
#[derive(Debug)]
pub struct Keeper {
    timing: AgentTiming,
    failsafe: Failsafe,
    state: Mutex<KeeperState>,
}

#[derive(Debug, Default)]
struct KeeperState {
    /// Writes are admitted before this instant: the lease's end on this node's clock less the
    /// drift margin; `None` before the first lease and once declared dead.
    gate_until: Option<Duration>,
    /// The current lease period (see the module doc); 0 before the first lease.
    period: u64,
    /// The control service says an operator declared this node dead.
    dead: bool,
    /// Containers stopped (or being stopped) because the node was declared dead.
    stopping: bool,
    failures: u32,
    /// The last probe of the node's Docker Engine failed (the agent could not stop its
    /// containers): told to the control service, which grants no lease meanwhile.
    docker_unreachable: bool,
    /// The last heartbeat got no answer at all (refused connection, timeout): the control
    /// service may be down for everyone. An answer, even a refusal, is contact.
    unreached: bool,
    /// The lease of the last grant, which a failsafe round extends by and a vote promises for.
    last_lease: Option<Duration>,
    /// How many nodes were registered at the last answer (0: not said).
    registered: u64,
    /// The gate is held open by failsafe rounds, not by the control service: the next grant
    /// starts a new period whatever its timing (rule 9).
    failsafe_extended: bool,
    /// No write on a newly claimed mount before this instant: the promise this agent's last
    /// failsafe vote made (rule 9), or its start plus a lease (a predecessor's votes are
    /// unknown to it).
    promised_until: Option<Duration>,
}

/// Failsafe mode (ARCHITECTURE.md, "Fencing", rule 9): off, or on since the agent started at
/// the given instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Failsafe {
    #[default]
    Off,
    On {
        started: Duration,
    },
}

/// A peer's answer to a failsafe vote request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Vote {
    /// The control service does not answer this agent either; it promises no write on a newly
    /// claimed mount for one lease from now.
    Unreachable,
    /// The control service answers this agent: the asker must not go on in failsafe.
    Reachable,
    /// This agent runs without failsafe, or holds no lease to promise with.
    Off,
}

/// What a heartbeat's outcome changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// The lease runs on, without a gap.
    Renewed,
    /// A lease again after a gap the control service may have seen (or the first one): every
    /// mount must be claimed again before it admits writes.
    NewPeriod(u64),
    /// Declared dead: no lease, stop now.
    Dead,
    /// Heard, but no lease granted (this agent cannot reach its Docker Engine): the lease held
    /// runs out, and writes wait after it.
    Withheld,
}

impl Keeper {
    pub fn new(timing: AgentTiming) -> Keeper {
        Keeper {
            timing,
            failsafe: Failsafe::Off,
            state: Mutex::new(KeeperState::default()),
        }
    }

    /// A keeper that goes on in failsafe while every peer says the control service does not
    /// answer it either (rule 9).
    pub fn with_failsafe(timing: AgentTiming, failsafe: Failsafe) -> Keeper {
        Keeper {
            failsafe,
            ..Keeper::new(timing)
        }
    }

    pub fn failsafe(&self) -> Failsafe {
        self.failsafe
    }

    pub fn timing(&self) -> AgentTiming {
        self.timing
    }

    fn state(&self) -> std::sync::MutexGuard<'_, KeeperState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A heartbeat sent at `sent` was answered at `answered` with `r`.
    pub fn renewed(&self, sent: Duration, answered: Duration, r: HeartbeatReply) -> Renewal {
        let mut s = self.state();
        s.failures = 0;
        s.unreached = false;
        s.registered = r.nodes;
        if s.dead || r.dead {
            s.dead = true;
            s.gate_until = None;
            return Renewal::Dead;
        }
        if r.lease_ms == 0 {
            return Renewal::Withheld;
        }
        let lease = Duration::from_millis(r.lease_ms);
        s.last_lease = Some(lease);
        let gate = (sent + lease).saturating_sub(self.timing.drift_margin);
        // Answered while the gate was open: the control service got the heartbeat before the
        // lease it extends ended on its own (later-ending) clock, so it saw no gap. A gate held
        // open by failsafe is not the control service's lease: it may have seen the lease end
        // and handed a volume away meanwhile, so the mounts are claimed again.
        let continuous =
            s.period > 0 && !s.failsafe_extended && s.gate_until.is_some_and(|g| answered < g);
        s.failsafe_extended = false;
        if continuous {
            s.gate_until = s.gate_until.max(Some(gate));
            Renewal::Renewed
        } else {
            s.period += 1;
            s.gate_until = Some(gate);
            Renewal::NewPeriod(s.period)
        }
    }

    /// A heartbeat failed; returns whether this is the `misses`-th in a row (contact lost).
    pub fn failed(&self) -> bool {
        let mut s = self.state();
        s.failures += 1;
        s.failures == self.timing.misses
    }

    /// The control service answered the last heartbeat, if only to refuse it.
    pub fn answered(&self) {
        self.state().unreached = false;
    }

    /// The last heartbeat got no answer at all.
    pub fn unreached(&self) {
        self.state().unreached = true;
    }

    /// Whether a failsafe round is worth running now: failsafe on, the control service does
    /// not answer, and there is a lease to continue.
    pub fn wants_failsafe(&self, now: Duration) -> bool {
        let s = self.state();
        matches!(self.failsafe, Failsafe::On { .. })
            && s.unreached
            && !s.dead
            && !s.docker_unreachable
            && s.period > 0
            && s.gate_until.is_some_and(|g| now < g)
    }

    /// A peer asks this agent's vote at `now` (rule 9). `Unreachable` is a promise: no write on
    /// a mount claimed after it before one lease from `now` on this node's clock.
    pub fn vote(&self, now: Duration) -> Vote {
        let mut s = self.state();
        let Failsafe::On { .. } = self.failsafe else {
            return Vote::Off;
        };
        if !s.unreached {
            return Vote::Reachable;
        }
        let Some(lease) = s.last_lease else {
            return Vote::Off;
        };
        s.promised_until = s.promised_until.max(Some(now + lease));
        Vote::Unreachable
    }

    /// A failsafe round sent at `sent` to every peer was answered by the last of them at
    /// `answered`, each with `votes` (a peer that did not answer counts as `Off`). The gate
    /// goes on to one lease from `sent`, less the drift margin, only if every vote is
    /// `Unreachable`, the peers asked are every other node registered at the last grant, and
    /// the gate was still open at `answered`: failsafe continues a lease, it never revives one.
    /// Returns whether it did.
    pub fn failsafe_round(&self, sent: Duration, answered: Duration, votes: &[Vote]) -> bool {
        if !self.wants_failsafe(answered) || votes.iter().any(|v| *v != Vote::Unreachable) {
            return false;
        }
        let mut s = self.state();
        if s.registered == 0 || votes.len() as u64 + 1 != s.registered {
            return false;
        }
        let Some(lease) = s.last_lease else {
            return false;
        };
        let gate = (sent + lease).saturating_sub(self.timing.drift_margin);
        s.gate_until = s.gate_until.max(Some(gate));
        s.failsafe_extended = true;
        true
    }

    /// How many nodes the control service said were registered at its last answer (0: it did
    /// not say): a list of peers of another length is stale.
    pub fn registered(&self) -> u64 {
        self.state().registered
    }

    /// Whether the gate is held open by failsafe rounds now.
    pub fn in_failsafe(&self, now: Duration) -> bool {
        let s = self.state();
        s.failsafe_extended && s.gate_until.is_some_and(|g| now < g)
    }

    /// How long a newly claimed mount must wait at `now` before it serves writes: until the
    /// promise of this agent's last failsafe vote has run out, or one lease after its start (a
    /// predecessor's votes are unknown). Zero with failsafe off.
    pub fn failsafe_hold(&self, now: Duration) -> Duration {
        let Failsafe::On { started } = self.failsafe else {
            return Duration::ZERO;
        };
        let s = self.state();
        let after_start = s.last_lease.map(|l| started + l);
        let until = s.promised_until.max(after_start);
        match until {
            Some(u) => u.saturating_sub(now),
            // No lease yet: no mount is served before one anyway.
            None => Duration::ZERO,
        }
    }

    /// The current lease period (0: none yet).
    pub fn period(&self) -> u64 {
        self.state().period
    }

    /// Whether a write to a mount validated in lease period `validated` may go on at `now`.
    pub fn admit(&self, now: Duration, validated: u64) -> Admit {
        let s = self.state();
        if s.dead {
            return Admit::Refuse("an operator declared this node dead".into());
        }
        match s.gate_until {
            Some(g) if now < g => {
                if validated == s.period {
                    Admit::Go
                } else {
                    Admit::Wait("the mount is being claimed again after a gap in the lease")
                }
            }
            Some(_) => Admit::Wait("the lease ended and the control service has not renewed it"),
            None => Admit::Wait("no lease yet"),
        }
    }

    /// Whether the containers must be stopped now: declared dead. Answers `true` once.
    pub fn stop_due(&self) -> bool {
        let mut s = self.state();
        if s.dead && !s.stopping {
            s.stopping = true;
            return true;
        }
        false
    }

    /// Why a new Mount must be refused now, if it must: declared dead, or no lease safely held
    /// (none yet, or one about to end: a Mount needs at least one heartbeat interval of it).
    pub fn refuse_mount(&self, now: Duration) -> Option<String> {
        let s = self.state();
        if s.dead {
            return Some("an operator declared this node dead; restart the agent to rejoin".into());
        }
        match s.gate_until {
            None => Some("it has no lease yet".into()),
            Some(g) if now + self.timing.interval >= g => Some(
                "its lease is about to end or has ended and the control service does not answer"
                    .into(),
            ),
            Some(_) => None,
        }
    }

    /// How much longer writes are admitted at `now` (zero: none).
    pub fn left(&self, now: Duration) -> Duration {
        match self.state().gate_until {
            Some(g) => g.saturating_sub(now),
            None => Duration::ZERO,
        }
    }

    pub fn is_dead(&self) -> bool {
        self.state().dead
    }

    /// Records a probe of the node's Docker Engine; returns whether that changed anything.
    pub fn docker_probed(&self, reachable: bool) -> bool {
        let mut s = self.state();
        let changed = s.docker_unreachable == reachable;
        s.docker_unreachable = !reachable;
        changed
    }

    pub fn docker_reachable(&self) -> bool {
        !self.state().docker_unreachable
    }

    /// What the next heartbeat tells the control service.
    pub fn heartbeat(&self) -> Heartbeat {
        Heartbeat {
            docker_reachable: self.docker_reachable(),
            ..self.timing.heartbeat()
        }
    }

    /// Why this agent is not ready at `now`, if it is not: it cannot reach its Docker Engine,
    /// holds no lease, or was declared dead.
    pub fn not_ready(&self, now: Duration) -> Vec<&'static str> {
        let mut why = Vec::new();
        if !self.docker_reachable() {
            why.push("the Docker Engine does not answer: this node could not stop its containers, so it holds no lease");
        }
        if self.is_dead() {
            why.push("an operator declared this node dead");
        } else if self.left(now).is_zero() {
            why.push("no lease: the control service has not granted one");
        }
        why
    }
}

/// Shared handle.
pub type SharedKeeper = Arc<Keeper>;

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(lease_ms: u64) -> HeartbeatReply {
        HeartbeatReply {
            lease_ms,
            dead: false,
            nodes: 1,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn writes_are_admitted_only_while_the_lease_holds_less_the_drift_margin() {
        let k = Keeper::new(AgentTiming::default());
        assert_eq!(k.admit(ms(0), 0), Admit::Wait("no lease yet"));
        assert!(k.refuse_mount(ms(0)).is_some(), "no lease yet");
        assert_eq!(
            k.renewed(ms(0), ms(10), reply(5_000)),
            Renewal::NewPeriod(1)
        );
        assert_eq!(k.refuse_mount(ms(10)), None);
        assert_eq!(k.admit(ms(4_499), 1), Admit::Go);
        assert!(
            matches!(k.admit(ms(4_500), 1), Admit::Wait(_)),
            "the gate closes drift_margin before the lease ends"
        );
        assert!(
            k.refuse_mount(ms(3_500)).is_some(),
            "no new mount within one interval of the gate closing"
        );
        assert_eq!(k.left(ms(4_000)), ms(500));
    }

    /// Docker unreachable: the heartbeat says so, the control service answers lease 0 without
    /// `dead`, and the agent keeps the lease it holds (not dead, no new one), reports not ready,
    /// and renews as before once Docker answers again.
    #[test]
    fn without_its_docker_engine_the_agent_asks_for_no_lease_and_is_not_ready() {
        let k = Keeper::new(AgentTiming::default());
        k.renewed(ms(0), ms(5), reply(5_000));
        assert!(k.not_ready(ms(10)).is_empty());
        assert!(k.heartbeat().docker_reachable);
        assert!(k.docker_probed(false), "a change");
        assert!(!k.docker_probed(false), "no change");
        assert!(!k.heartbeat().docker_reachable);
        assert_eq!(k.renewed(ms(1_000), ms(1_010), reply(0)), Renewal::Withheld);
        assert!(!k.is_dead(), "a withheld lease is not a death");
        assert_eq!(
            k.left(ms(1_010)),
            ms(3_490),
            "the lease held runs on, not extended"
        );
        let why = k.not_ready(ms(1_010));
        assert_eq!(why.len(), 1, "{why:?}");
        assert!(why[0].contains("Docker Engine"), "{why:?}");
        assert_eq!(k.not_ready(ms(4_600)).len(), 2, "and then no lease either");
        assert!(k.docker_probed(true));
        assert_eq!(
            k.renewed(ms(2_000), ms(2_010), reply(5_000)),
            Renewal::Renewed,
            "answered while the gate was open: the same period"
        );
        assert!(k.not_ready(ms(2_010)).is_empty());
    }

    #[test]
    fn a_renewal_answered_while_the_gate_is_open_continues_the_period() {
        let k = Keeper::new(AgentTiming::default());
        k.renewed(ms(0), ms(5), reply(5_000));
        assert_eq!(
            k.renewed(ms(1_000), ms(1_900), reply(5_000)),
            Renewal::Renewed
        );
        assert_eq!(k.admit(ms(5_000), 1), Admit::Go, "extended to 5.5 s");
        // A late answer never shortens the lease it counts from.
        assert_eq!(k.renewed(ms(200), ms(300), reply(5_000)), Renewal::Renewed);
        assert_eq!(k.left(ms(5_000)), ms(500));
    }

    #[test]
    fn a_renewal_after_the_gate_closed_starts_a_period_that_needs_the_mounts_claimed_again() {
        let k = Keeper::new(AgentTiming::default());
        k.renewed(ms(0), ms(5), reply(5_000));
        // Sent before the gate closed, but answered after it: the control service may have seen
        // the lease end before it got the heartbeat, and handed a volume away meanwhile.
        assert_eq!(
            k.renewed(ms(4_400), ms(4_600), reply(5_000)),
            Renewal::NewPeriod(2)
        );
        assert!(
            matches!(k.admit(ms(4_700), 1), Admit::Wait(_)),
            "validated in period 1: waits"
        );
        assert_eq!(
            k.admit(ms(4_700), 2),
            Admit::Go,
            "claimed again in period 2"
        );
        assert_eq!(k.period(), 2);
    }

    #[test]
    fn declared_dead_refuses_every_write_and_stops_once() {
        let k = Keeper::new(AgentTiming::default());
        k.renewed(ms(0), ms(5), reply(5_000));
        let dead = HeartbeatReply {
            lease_ms: 0,
            dead: true,
            nodes: 1,
        };
        assert_eq!(k.renewed(ms(100), ms(105), dead), Renewal::Dead);
        assert!(matches!(k.admit(ms(200), 1), Admit::Refuse(_)));
        assert!(k.stop_due());
        assert!(!k.stop_due(), "once");
        assert_eq!(k.left(ms(200)), Duration::ZERO);
        assert!(
            k.refuse_mount(ms(200))
                .expect("refused")
                .contains("declared this node dead")
        );
        assert_eq!(
            k.renewed(ms(300), ms(305), reply(5_000)),
            Renewal::Dead,
            "a later lease does not bring a dead node back: its agent must restart"
        );
    }

    #[test]
    fn contact_is_lost_at_the_configured_miss() {
        let k = Keeper::new(AgentTiming::default());
        assert!(!k.failed());
        assert!(!k.failed());
        assert!(k.failed(), "the third miss");
        assert!(!k.failed(), "said once");
    }
}

/// Failsafe (rule 9) across several agents, each on its own drifting clock, against a control
/// service that hands a dataset away once its holder's lease ended on its own clock.
#[cfg(test)]
mod failsafe_tests;
