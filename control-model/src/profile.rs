//! Timing profiles: the heartbeat interval, misses, lease, self-fence deadline and drift margin
//! as one set, chosen with `--timing default|fast` (`BERTH_TIMING`) on the control service, the
//! agents and `berth run`, so that the three agree and the set is checked as a whole at start.
//! An explicit flag overrides one value of the profile; the result is checked again, and a
//! set that breaks the safety rule is refused with the flag to change.
//!
//! The safety argument (ARCHITECTURE.md, "Fencing", rule 7): an agent's write gate closes
//! `drift_margin` before its lease ends on its own clock, counted from when it *sent* the
//! heartbeat; the control service's lease ends `lease` after it *received* it. So a handover
//! never overlaps a write as long as the two clocks' rates differ by less than
//! `drift_margin / lease` — required to be at least [`MIN_DRIFT_PER_MILLE`] ‰, about eight
//! times what NTP-disciplined clocks can differ by. On top, [`Timing::admits`]: the lease outlasts the
//! agent's self-fence deadline plus the drift margin plus one heartbeat interval, so an agent
//! that must stop its containers can do it before its lease ends, and one late heartbeat stops
//! nothing; and [`Timing::validate`]: a node still counted alive (`interval × misses`) is
//! never without its lease.

use std::time::Duration;

use crate::lease::AgentTiming;
use crate::liveness::Timing;

pub use crate::liveness::MIN_DRIFT_PER_MILLE;

/// A named set of timings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// 1 s heartbeats, 3 misses, a 5 s lease: a lost node's volumes move about 5 s after its
    /// last heartbeat.
    #[default]
    Default,
    /// 250 ms heartbeats, 3 misses, a 1.5 s lease: they move about 1.5 s after it, for four
    /// times the heartbeats at the control service.
    Fast,
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Profile, String> {
        match s {
            "default" => Ok(Profile::Default),
            "fast" => Ok(Profile::Fast),
            other => Err(format!(
                "unknown timing profile {other:?}: it is `default` (1 s heartbeats, 5 s lease) or \
                 `fast` (250 ms heartbeats, 1.5 s lease)"
            )),
        }
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Profile::Default => "default",
            Profile::Fast => "fast",
        })
    }
}

/// Every timing of one profile, after any override.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Values {
    pub interval: Duration,
    pub misses: u32,
    pub lease: Duration,
    pub self_fence_deadline: Duration,
    pub drift_margin: Duration,
}

/// Explicit flags, each overriding its value of the profile.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overrides {
    pub interval: Option<Duration>,
    pub misses: Option<u32>,
    pub lease: Option<Duration>,
    pub self_fence_deadline: Option<Duration>,
    pub drift_margin: Option<Duration>,
}

impl Profile {
    pub fn values(self) -> Values {
        match self {
            Profile::Default => Values {
                interval: Duration::from_secs(1),
                misses: 3,
                lease: Duration::from_secs(5),
                self_fence_deadline: Duration::from_secs(2),
                drift_margin: Duration::from_millis(500),
            },
            // 1.5 s > 1 s + 150 ms + 250 ms (`admits`, with 100 ms to spare), 750 ms of misses
            // ≤ 1.5 s (`validate`), 150 ms = 100 ‰ of the lease (≥ `MIN_DRIFT_PER_MILLE`). A
            // 1 s deadline leaves the engine no SIGTERM grace (whole seconds, one kept for the
            // SIGKILL): only containers whose data already moved away are stopped that way.
            Profile::Fast => Values {
                interval: Duration::from_millis(250),
                misses: 3,
                lease: Duration::from_millis(1_500),
                self_fence_deadline: Duration::from_secs(1),
                drift_margin: Duration::from_millis(150),
            },
        }
    }

    /// The profile's values with the explicit flags in place, checked as a whole.
    pub fn resolve(self, o: Overrides) -> Result<Values, String> {
        let p = self.values();
        let v = Values {
            interval: o.interval.unwrap_or(p.interval),
            misses: o.misses.unwrap_or(p.misses),
            lease: o.lease.unwrap_or(p.lease),
            self_fence_deadline: o.self_fence_deadline.unwrap_or(p.self_fence_deadline),
            drift_margin: o.drift_margin.unwrap_or(p.drift_margin),
        };
        v.check().map_err(|e| format!("--timing {self}: {e}"))?;
        Ok(v)
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Values {
    /// What the control service judges liveness and grants leases by.
    pub fn control(&self) -> Timing {
        Timing {
            interval_ms: ms(self.interval),
            misses: self.misses,
            lease_ms: ms(self.lease),
        }
    }

    /// What an agent heartbeats and fences by.
    pub fn agent(&self) -> AgentTiming {
        AgentTiming {
            interval: self.interval,
            misses: self.misses,
            self_fence_deadline: self.self_fence_deadline,
            drift_margin: self.drift_margin,
        }
    }

    /// Every rule at once: the control service's own ([`Timing::validate`]) and an agent with
    /// these values under it ([`Timing::admits`], which includes the clock-rate margin).
    pub fn check(&self) -> Result<(), String> {
        let c = self.control();
        c.validate()?;
        c.admits(
            c.interval_ms,
            ms(self.self_fence_deadline),
            ms(self.drift_margin),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_profiles_pass_every_rule() {
        for p in [Profile::Default, Profile::Fast] {
            let v = p.resolve(Overrides::default()).expect("a profile is safe");
            v.control().validate().expect("window within the lease");
            v.control()
                .admits(
                    ms(v.interval),
                    ms(v.self_fence_deadline),
                    ms(v.drift_margin),
                )
                .expect("the agent can honour the lease");
            assert_eq!(p.to_string().parse::<Profile>(), Ok(p));
        }
    }

    #[test]
    fn the_default_profile_is_todays_timing() {
        let v = Profile::Default.values();
        assert_eq!(v.control(), Timing::default());
        assert_eq!(v.agent(), AgentTiming::default());
    }

    #[test]
    fn fast_heartbeats_four_times_as_often_with_a_shorter_lease() {
        let (d, f) = (Profile::Default.values(), Profile::Fast.values());
        assert_eq!(f.interval * 4, d.interval);
        assert!(f.lease < d.lease / 3, "{:?}", f.lease);
    }

    #[test]
    fn an_override_that_breaks_a_rule_is_refused_with_the_flag_to_change() {
        let fast = Profile::Fast;
        // The default deadline does not fit the fast lease.
        let e = fast
            .resolve(Overrides {
                self_fence_deadline: Some(Duration::from_secs(2)),
                ..Overrides::default()
            })
            .expect_err("2 s + 150 ms ≥ 1.5 s");
        assert!(e.starts_with("--timing fast: "), "{e}");
        assert!(e.contains("--self-fence-deadline"), "{e}");
        let e = fast
            .resolve(Overrides {
                drift_margin: Some(Duration::from_millis(10)),
                ..Overrides::default()
            })
            .expect_err("10 ms is under 1 % of 1.5 s");
        assert!(e.contains("--drift-margin"), "{e}");
        let e = fast
            .resolve(Overrides {
                interval: Some(Duration::from_millis(600)),
                ..Overrides::default()
            })
            .expect_err("3 × 600 ms > 1.5 s");
        assert!(e.contains("--heartbeat-interval"), "{e}");
        let e = Profile::Default
            .resolve(Overrides {
                lease: Some(Duration::from_millis(3_500)),
                ..Overrides::default()
            })
            .expect_err("no heartbeat to spare");
        assert!(e.contains("one late heartbeat"), "{e}");
    }

    #[test]
    fn an_override_within_the_rules_is_kept() {
        let v = Profile::Fast
            .resolve(Overrides {
                lease: Some(Duration::from_secs(2)),
                ..Overrides::default()
            })
            .expect("a longer lease is safe");
        assert_eq!(v.lease, Duration::from_secs(2));
        assert_eq!(v.interval, Duration::from_millis(250));
    }

    #[test]
    fn an_unknown_profile_names_the_known_ones() {
        let e = "quick".parse::<Profile>().expect_err("unknown");
        assert!(e.contains("`default`") && e.contains("`fast`"), "{e}");
    }
}
