//! The blocking side of a mount's gate (`berth_control_model::gate`): a write the gate holds
//! waits here, on the caller's thread, and one it refuses fails with `EIO`.

use std::time::Duration;

use berth_control_model::gate::MountGate;
use berth_control_model::lease::Admit;

/// How often a held write looks again.
const RECHECK: Duration = Duration::from_millis(20);

/// Blocks until a write through `gate` may go on; `EIO` when it never may. The check is made
/// right before the write it guards, on the caller's thread, so a write let through was let
/// through by a lease that held at that instant.
pub fn enter(gate: &MountGate) -> std::io::Result<()> {
    let m = crate::metrics::agent();
    let mut waited = false;
    loop {
        match gate.check(crate::clock::now()) {
            Admit::Go => {
                if waited {
                    m.writes_waiting.dec();
                    if gate.set_holding(false) {
                        tracing::warn!(volume = %gate.volume(), "writes go on again");
                    }
                }
                return Ok(());
            }
            Admit::Refuse(why) => {
                if waited {
                    m.writes_waiting.dec();
                }
                m.writes_refused.inc();
                tracing::debug!(volume = %gate.volume(), reason = %why, "write refused");
                return Err(rustix::io::Errno::IO.into());
            }
            Admit::Wait(why) => {
                if !waited {
                    waited = true;
                    m.writes_held.inc();
                    m.writes_waiting.inc();
                    if !gate.set_holding(true) {
                        tracing::warn!(volume = %gate.volume(), reason = why, "holding writes");
                    }
                }
                std::thread::sleep(RECHECK);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use berth_control_model::lease::{AgentTiming, Keeper, SharedKeeper};
    use berth_control_model::wire::HeartbeatReply;

    use super::*;

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
        assert!(enter(&g).is_ok());
        g.refuse("unmounted");
        g.refuse("a second reason does not replace the first");
        assert_eq!(g.check(Duration::ZERO), Admit::Refuse("unmounted".into()));
        let e = enter(&g).expect_err("refused");
        assert_eq!(e.raw_os_error(), Some(5), "EIO");
    }

    #[test]
    fn a_mount_validated_in_an_older_period_waits_until_claimed_again() {
        let now = crate::clock::now();
        let k = keeper_at(now);
        let g = MountGate::new("v", Some(k.clone()), 0);
        assert!(matches!(g.check(now), Admit::Wait(_)));
        g.validate(k.period());
        assert_eq!(g.check(now), Admit::Go);
        assert!(enter(&g).is_ok());
        g.validate(0);
        assert_eq!(g.validated(), 1, "validation never goes back");
    }

    #[test]
    fn a_held_write_fails_when_the_mount_is_refused_meanwhile() {
        let k = keeper_at(crate::clock::now());
        let g = MountGate::new("v", Some(k), 0);
        let g2 = g.clone();
        let t = std::thread::spawn(move || enter(&g2));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!t.is_finished(), "held while not validated");
        g.refuse("its data moved to another node");
        assert!(t.join().expect("joins").is_err());
    }

    #[test]
    fn a_held_write_goes_on_once_the_mount_is_claimed_again() {
        let k = keeper_at(crate::clock::now());
        let g = MountGate::new("v", Some(k.clone()), 0);
        let g2 = g.clone();
        let t = std::thread::spawn(move || enter(&g2));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!t.is_finished());
        g.validate(k.period());
        assert!(t.join().expect("joins").is_ok());
    }
}
