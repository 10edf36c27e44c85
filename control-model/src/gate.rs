//! The admission rule one mount applies before every write it serves: the node's lease must hold,
//! the mount must have been claimed at the control service in the current lease period, and it
//! must not have been refused (its data moved to another node, the node declared dead, or the
//! mount ended). A write that may not go on *now* waits — a paused agent or a short loss of
//! contact holds writes instead of failing them — and one that may never go on fails with `EIO`,
//! as a dead disk would.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::lease::{Admit, SharedKeeper};

/// One mount's gate.
pub struct MountGate {
    volume: String,
    /// `None`: no lease is kept (a library user, a test of other parts): always open.
    keeper: Option<SharedKeeper>,
    validated: AtomicU64,
    refused: Mutex<Option<String>>,
    /// Whether writes are being held now (logged once per hold).
    holding: AtomicBool,
}

impl MountGate {
    /// A gate for `volume`, claimed at the control service in lease period `validated`.
    pub fn new(volume: &str, keeper: Option<SharedKeeper>, validated: u64) -> Arc<MountGate> {
        Arc::new(MountGate {
            volume: volume.to_string(),
            keeper,
            validated: AtomicU64::new(validated),
            refused: Mutex::new(None),
            holding: AtomicBool::new(false),
        })
    }

    /// The mount was claimed again in lease period `period`: its held writes may go on.
    pub fn validate(&self, period: u64) {
        self.validated.fetch_max(period, Ordering::SeqCst);
    }

    /// The lease period the mount was last claimed in.
    pub fn validated(&self) -> u64 {
        self.validated.load(Ordering::SeqCst)
    }

    /// No write goes on through this mount any more; held ones fail.
    pub fn refuse(&self, why: &str) {
        let mut r = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_none() {
            *r = Some(why.to_string());
        }
    }

    pub fn is_refused(&self) -> bool {
        self.refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// What a write would be told now.
    pub fn check(&self, now: Duration) -> Admit {
        if let Some(why) = self
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Admit::Refuse(why);
        }
        match &self.keeper {
            None => Admit::Go,
            Some(k) => k.admit(now, self.validated()),
        }
    }

    pub fn volume(&self) -> &str {
        &self.volume
    }

    /// Marks writes as being held now (or not); returns whether they were.
    pub fn set_holding(&self, on: bool) -> bool {
        self.holding.swap(on, Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::{AgentTiming, Keeper};
    use crate::wire::HeartbeatReply;

    fn keeper_at(period_start: Duration) -> SharedKeeper {
        let k = Arc::new(Keeper::new(AgentTiming::default()));
        k.renewed(
            period_start,
            period_start,
            HeartbeatReply {
                lease_ms: 60_000,
                dead: false,
                nodes: 1,
            },
        );
        k
    }

    #[test]
    fn without_a_keeper_the_gate_is_open_until_refused() {
        let g = MountGate::new("v", None, 0);
        assert_eq!(g.check(Duration::ZERO), Admit::Go);
        g.refuse("unmounted");
        g.refuse("a second reason does not replace the first");
        assert!(g.is_refused());
        assert_eq!(g.check(Duration::ZERO), Admit::Refuse("unmounted".into()));
    }

    #[test]
    fn a_mount_validated_in_an_older_period_waits_until_claimed_again() {
        let now = Duration::from_secs(100);
        let k = keeper_at(now);
        let g = MountGate::new("v", Some(k.clone()), 0);
        assert!(matches!(g.check(now), Admit::Wait(_)));
        g.validate(k.period());
        assert_eq!(g.check(now), Admit::Go);
        g.validate(0);
        assert_eq!(g.validated(), 1, "validation never goes back");
    }

    #[test]
    fn holding_is_reported_once_per_hold() {
        let g = MountGate::new("v", None, 0);
        assert!(!g.set_holding(true));
        assert!(g.set_holding(true), "already holding");
        assert!(g.set_holding(false));
        assert_eq!(g.volume(), "v");
    }
}
