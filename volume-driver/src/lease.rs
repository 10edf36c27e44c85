//! The agent's side of node leases: heartbeat the control service every `interval`, keep the
//! lease each answer grants, and, when it cannot be renewed, stop every container that uses one
//! of this driver's volumes on this node *before* the lease ends, refusing new Mounts until a
//! heartbeat gets a lease again. This is what lets the control service hand a volume to another
//! node once the lease has ended without the old node still writing (ARCHITECTURE.md,
//! invariants; README, "Leases and self-fencing").
//!
//! The lease counts from the instant the heartbeat was *sent*, on this node's monotonic clock,
//! which is never later than the control service's receipt: the agent's lease ends first.
//! Self-fencing starts `self_fence_deadline + drift_margin` before that end, so containers are
//! stopped `drift_margin` before it, which covers the two clocks' rates drifting apart.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::agent::Agent;
use crate::control::wire::{Heartbeat, HeartbeatReply};

/// The agent's heartbeat and self-fence settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentTiming {
    pub interval: Duration,
    /// Heartbeats missed in a row before the agent says it lost contact.
    pub misses: u32,
    /// How long stopping the containers may take.
    pub self_fence_deadline: Duration,
    /// How far the two monotonic clocks may drift apart over one lease.
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
        }
    }

    /// How long before its lease ends the agent starts stopping containers.
    fn react(&self) -> Duration {
        self.self_fence_deadline + self.drift_margin
    }
}

/// Where the agent stands with its lease. Instants are passed in, so the rules are tested
/// without waiting.
#[derive(Debug)]
pub struct Keeper {
    timing: AgentTiming,
    state: Mutex<KeeperState>,
}

#[derive(Debug, Default)]
struct KeeperState {
    /// When the lease ends on this node's clock; `None` before the first one.
    until: Option<Instant>,
    last_ok: Option<Instant>,
    /// Self-fenced: containers stopped (or being stopped), Mounts refused.
    fenced: bool,
    /// The control service says an operator declared this node dead.
    dead: bool,
    failures: u32,
}

/// What a heartbeat's outcome changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// The lease runs on.
    Renewed,
    /// A lease again after self-fencing: back in contact.
    Recovered,
    /// Declared dead: no lease, stop now.
    Dead,
}

impl Keeper {
    pub fn new(timing: AgentTiming) -> Keeper {
        Keeper {
            timing,
            state: Mutex::new(KeeperState::default()),
        }
    }

    pub fn timing(&self) -> AgentTiming {
        self.timing
    }

    fn state(&self) -> std::sync::MutexGuard<'_, KeeperState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A heartbeat sent at `sent` was answered with `r`.
    pub fn renewed(&self, sent: Instant, r: HeartbeatReply) -> Renewal {
        let mut s = self.state();
        s.failures = 0;
        if r.dead || r.lease_ms == 0 {
            s.dead = true;
            return Renewal::Dead;
        }
        let until = sent + Duration::from_millis(r.lease_ms);
        s.until = Some(s.until.map_or(until, |u| u.max(until)));
        s.last_ok = Some(sent);
        if s.fenced {
            s.fenced = false;
            Renewal::Recovered
        } else {
            Renewal::Renewed
        }
    }

    /// A heartbeat failed; returns whether this is the `misses`-th in a row (contact lost).
    pub fn failed(&self) -> bool {
        let mut s = self.state();
        s.failures += 1;
        s.failures == self.timing.misses
    }

    /// Whether self-fencing must start now: declared dead, or the lease ends within the time
    /// stopping the containers may take plus the drift margin. Marks the agent fenced, so it
    /// answers `true` once per loss.
    pub fn fence_due(&self, now: Instant) -> bool {
        let mut s = self.state();
        if s.fenced {
            return false;
        }
        let due = s.dead || s.until.is_some_and(|u| now + self.timing.react() >= u);
        if due {
            s.fenced = true;
        }
        due
    }

    /// Why a new Mount must be refused now, if it must: self-fenced, declared dead, or no lease
    /// safely held (none yet, or one about to end).
    pub fn refuse_mount(&self, now: Instant) -> Option<String> {
        let s = self.state();
        if s.dead {
            return Some("an operator declared this node dead; restart the agent to rejoin".into());
        }
        if s.fenced {
            return Some(
                "it lost its lease and stopped its containers; it mounts again once a heartbeat \
                 reaches the control service"
                    .into(),
            );
        }
        match s.until {
            None => Some("it has no lease yet".into()),
            Some(u) if now + self.timing.react() >= u => {
                Some("its lease is about to end and the control service does not answer".into())
            }
            Some(_) => None,
        }
    }

    /// How much longer the lease runs at `now` (zero: none).
    pub fn left(&self, now: Instant) -> Duration {
        let s = self.state();
        match s.until {
            Some(u) if !s.dead => u.saturating_duration_since(now),
            _ => Duration::ZERO,
        }
    }

    pub fn is_fenced(&self) -> bool {
        self.state().fenced
    }
}

/// Shared handle.
pub type SharedKeeper = Arc<Keeper>;

/// What the agent registered as, to register again if the control service lost it.
#[derive(Debug, Clone)]
pub struct Registration {
    pub host: String,
    pub transfer: String,
}

/// Heartbeats every `interval` and fences the agent when its lease is about to end, until
/// `stop` turns true. Two loops: a heartbeat may hang as long as the control service does, the
/// watchdog that fences never waits on one.
pub async fn run(
    agent: Arc<Agent>,
    keeper: SharedKeeper,
    reg: Registration,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    tokio::join!(
        heartbeats(agent.clone(), keeper.clone(), reg, stop.clone()),
        watchdog(agent, keeper, stop)
    );
}

async fn heartbeats(
    agent: Arc<Agent>,
    keeper: SharedKeeper,
    reg: Registration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let t = keeper.timing();
    let m = crate::metrics::agent();
    let control = agent.control().clone();
    let node = agent.node().to_string();
    let mut told_dead = false;
    loop {
        let sent = Instant::now();
        let ok = match tokio::time::timeout(t.interval, control.heartbeat(&node, &t.heartbeat()))
            .await
        {
            Ok(Ok(r)) => {
                // Back from a self-fence: release the claims its stopped containers held before
                // any Mount is let through (the keeper refuses them until `renewed`).
                let back = keeper.is_fenced() && !r.dead && r.lease_ms > 0;
                let recovered = !back
                    || {
                        match agent.recover().await {
                            Ok(()) => true,
                            Err(e) => {
                                tracing::warn!(error = %e.chain(), "lease regained, but the mounts could not be reconciled; retrying");
                                false
                            }
                        }
                    };
                if recovered {
                    match keeper.renewed(sent, r) {
                        Renewal::Recovered => {
                            m.self_fenced.set(0);
                            tracing::warn!(node = %node, "lease regained: mounting again");
                        }
                        Renewal::Dead if !told_dead => {
                            told_dead = true;
                            tracing::error!(node = %node, "the control service says this node was declared dead: stopping its containers");
                        }
                        _ => {}
                    }
                }
                recovered
            }
            Ok(Err(e)) if e.status() == Some(404) => {
                tracing::warn!(node = %node, "the control service does not know this node; registering again");
                if let Err(e) = control.register_node(&node, &reg.host, &reg.transfer).await {
                    tracing::warn!(error = %e, "registering again failed");
                }
                false
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "heartbeat failed");
                if e.status() == Some(400) {
                    tracing::error!(error = %e, "the control service refuses this agent's lease timing");
                }
                false
            }
            Err(_) => {
                tracing::debug!("heartbeat unanswered within one interval");
                false
            }
        };
        if !ok {
            m.heartbeat_failures.inc();
            if keeper.failed() {
                tracing::warn!(node = %node, misses = t.misses, left_ms = keeper.left(Instant::now()).as_millis() as u64,
                    "lost contact with the control service");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep_until((sent + t.interval).into()) => {}
            _ = stop.wait_for(|v| *v) => return,
        }
    }
}

async fn watchdog(
    agent: Arc<Agent>,
    keeper: SharedKeeper,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let t = keeper.timing();
    let tick = (t.interval / 10).clamp(Duration::from_millis(10), Duration::from_millis(100));
    let m = crate::metrics::agent();
    loop {
        let now = Instant::now();
        m.lease_left.set(keeper.left(now).as_secs_f64());
        if keeper.fence_due(now) {
            m.self_fences.inc();
            m.self_fenced.set(1);
            tracing::error!(node = %agent.node(), left_ms = keeper.left(now).as_millis() as u64,
                "self-fencing: no lease renewal; stopping every container using a Berth volume here and refusing mounts");
            let stopped = agent.self_fence(t.self_fence_deadline).await;
            m.containers_stopped.inc_by(stopped as u64);
            tracing::warn!(node = %agent.node(), containers = stopped, ms = now.elapsed().as_millis() as u64,
                left_ms = keeper.left(Instant::now()).as_millis() as u64, "self-fenced");
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.wait_for(|v| *v) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(lease_ms: u64) -> HeartbeatReply {
        HeartbeatReply {
            lease_ms,
            dead: false,
        }
    }

    #[test]
    fn the_agent_fences_itself_before_its_lease_ends_and_recovers_with_the_next_one() {
        let k = Keeper::new(AgentTiming::default());
        let t0 = Instant::now();
        assert!(k.refuse_mount(t0).is_some(), "no lease yet");
        assert_eq!(k.renewed(t0, reply(5_000)), Renewal::Renewed);
        assert_eq!(k.refuse_mount(t0), None);
        let ms = |n| t0 + Duration::from_millis(n);
        // Lease ends at 5 s; stopping may take 2 s, drift 0.5 s: due at 2.5 s.
        assert!(!k.fence_due(ms(2_499)));
        assert!(k.refuse_mount(ms(2_499)).is_none());
        assert!(
            k.refuse_mount(ms(2_500)).is_some(),
            "no new mount this late"
        );
        assert!(k.fence_due(ms(2_500)));
        assert!(!k.fence_due(ms(2_600)), "once per loss");
        assert!(k.refuse_mount(ms(2_600)).is_some());
        assert_eq!(k.renewed(ms(3_000), reply(5_000)), Renewal::Recovered);
        assert_eq!(k.refuse_mount(ms(3_000)), None);
        assert_eq!(k.left(ms(4_000)), Duration::from_secs(4));
        // A renewal answered late never shortens the lease it counts from.
        assert_eq!(k.renewed(ms(1_000), reply(5_000)), Renewal::Renewed);
        assert_eq!(k.left(ms(4_000)), Duration::from_secs(4));
    }

    #[test]
    fn declared_dead_means_stop_now_and_stay_stopped() {
        let k = Keeper::new(AgentTiming::default());
        let t0 = Instant::now();
        k.renewed(t0, reply(5_000));
        let dead = HeartbeatReply {
            lease_ms: 0,
            dead: true,
        };
        assert_eq!(k.renewed(t0, dead), Renewal::Dead);
        assert!(k.fence_due(t0));
        assert_eq!(k.left(t0), Duration::ZERO);
        assert!(
            k.refuse_mount(t0)
                .expect("refused")
                .contains("declared this node dead")
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
