//! Faults: what a scenario (or the random generator) says happens, and their expansion into the
//! primitive actions the world applies — a crash with recovery becomes `Crash` then `Recover`,
//! a flap becomes a train of them, a zone loss a crash of every node in the zone.
//!
//! Faults are data, not closures, so a failing schedule can be shrunk (drop faults one by one)
//! and written back as `[[faults]]` TOML that reproduces it.

use std::fmt::Write as _;

use serde::Serialize;

use crate::clock::{Ms, fmt_ms};
use crate::rng::{SimRng, Stream};

/// One fault, as a scenario writes it. Node indices refer to the scenario's sorted node list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum FaultKind {
    /// The node powers off; its containers die; its disk survives.
    Crash {
        node: u32,
        recover_after: Option<Ms>,
    },
    /// Every node of a zone crashes at once.
    ZoneLoss {
        zone: String,
        nodes: Vec<u32>,
        recover_after: Option<Ms>,
    },
    /// The nodes lose the managers (and clients on the far side); with `storage`, they still
    /// reach shared storage — the case where only fencing at the storage stops a writer.
    Partition {
        nodes: Vec<u32>,
        storage: bool,
        duration: Ms,
    },
    /// The node crashes and comes back after `repair_after` with empty disks.
    DiskLoss { node: u32, repair_after: Ms },
    /// Starts and copies on the node take `factor` times longer.
    SlowDisk {
        node: u32,
        factor: u32,
        duration: Ms,
    },
    /// `count` cycles of `down` then `up`.
    Flap {
        node: u32,
        down: Ms,
        up: Ms,
        count: u32,
    },
    /// The managers lose Raft quorum: nothing is scheduled, no node is marked down.
    QuorumLoss { duration: Ms },
    /// Berth's scheduler process restarts; plans in flight are dropped and re-planned.
    SchedulerRestart { duration: Ms },
    /// Maintenance: the operator drains the node, and reactivates it after `duration`.
    Drain { node: u32, duration: Option<Ms> },
    /// The node's volume agent dies (SIGKILL, OOM); the node, dockerd and the containers run
    /// on. Started again after `restart_after` (absent: never).
    AgentCrash {
        node: u32,
        restart_after: Option<Ms>,
    },
    /// The node's volume agent is stopped (SIGSTOP, a hang) for `duration`.
    AgentPause { node: u32, duration: Ms },
    /// Every process on the node stops for `duration` (a paused VM, a stalled host), then runs
    /// on as if nothing happened; the boot clock counted the pause.
    NodeFreeze { node: u32, duration: Ms },
    /// The volume control service is unreachable (down, or cut off from every node and from
    /// `berth run`) for `duration`: no lease is renewed, no fence or move goes through.
    ControlLoss { duration: Ms },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Fault {
    pub at: Ms,
    #[serde(flatten)]
    pub kind: FaultKind,
}

/// What the world applies at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "action")]
pub enum FaultAction {
    Crash { node: u32 },
    Recover { node: u32 },
    WipeDisk { node: u32 },
    CutOff { node: u32, storage: bool },
    Heal { node: u32 },
    SlowDisk { node: u32, factor: u32 },
    FastDisk { node: u32 },
    QuorumLoss,
    QuorumBack,
    SchedulerDown,
    SchedulerUp,
    Drain { node: u32 },
    Activate { node: u32 },
    AgentKill { node: u32 },
    AgentStart { node: u32 },
    AgentStop { node: u32 },
    AgentCont { node: u32 },
    Freeze { node: u32 },
    Thaw { node: u32 },
    ControlDown,
    ControlUp,
}

impl Fault {
    /// Appends this fault's primitive actions, with their times.
    pub fn expand(&self, out: &mut Vec<(Ms, FaultAction)>) {
        use FaultAction as A;
        let t = self.at;
        match &self.kind {
            FaultKind::Crash {
                node,
                recover_after,
            } => {
                out.push((t, A::Crash { node: *node }));
                if let Some(r) = recover_after {
                    out.push((t + r, A::Recover { node: *node }));
                }
            }
            FaultKind::ZoneLoss {
                nodes,
                recover_after,
                ..
            } => {
                for n in nodes {
                    out.push((t, A::Crash { node: *n }));
                    if let Some(r) = recover_after {
                        out.push((t + r, A::Recover { node: *n }));
                    }
                }
            }
            FaultKind::Partition {
                nodes,
                storage,
                duration,
            } => {
                for n in nodes {
                    out.push((
                        t,
                        A::CutOff {
                            node: *n,
                            storage: *storage,
                        },
                    ));
                    out.push((t + duration, A::Heal { node: *n }));
                }
            }
            FaultKind::DiskLoss { node, repair_after } => {
                out.push((t, A::Crash { node: *node }));
                out.push((t, A::WipeDisk { node: *node }));
                out.push((t + repair_after, A::Recover { node: *node }));
            }
            FaultKind::SlowDisk {
                node,
                factor,
                duration,
            } => {
                out.push((
                    t,
                    A::SlowDisk {
                        node: *node,
                        factor: *factor,
                    },
                ));
                out.push((t + duration, A::FastDisk { node: *node }));
            }
            FaultKind::Flap {
                node,
                down,
                up,
                count,
            } => {
                let mut at = t;
                for _ in 0..*count {
                    out.push((at, A::Crash { node: *node }));
                    out.push((at + down, A::Recover { node: *node }));
                    at += down + up;
                }
            }
            FaultKind::QuorumLoss { duration } => {
                out.push((t, A::QuorumLoss));
                out.push((t + duration, A::QuorumBack));
            }
            FaultKind::SchedulerRestart { duration } => {
                out.push((t, A::SchedulerDown));
                out.push((t + duration, A::SchedulerUp));
            }
            FaultKind::Drain { node, duration } => {
                out.push((t, A::Drain { node: *node }));
                if let Some(d) = duration {
                    out.push((t + d, A::Activate { node: *node }));
                }
            }
            FaultKind::AgentCrash {
                node,
                restart_after,
            } => {
                out.push((t, A::AgentKill { node: *node }));
                if let Some(r) = restart_after {
                    out.push((t + r, A::AgentStart { node: *node }));
                }
            }
            FaultKind::AgentPause { node, duration } => {
                out.push((t, A::AgentStop { node: *node }));
                out.push((t + duration, A::AgentCont { node: *node }));
            }
            FaultKind::NodeFreeze { node, duration } => {
                out.push((t, A::Freeze { node: *node }));
                out.push((t + duration, A::Thaw { node: *node }));
            }
            FaultKind::ControlLoss { duration } => {
                out.push((t, A::ControlDown));
                out.push((t + duration, A::ControlUp));
            }
        }
    }

    /// The fault as a `[[faults]]` table, for a shrunk schedule that reproduces a failure.
    pub fn to_toml(&self, node_names: &[String]) -> String {
        let name = |i: &u32| {
            node_names
                .get(*i as usize)
                .cloned()
                .unwrap_or_else(|| format!("#{i}"))
        };
        let d = |ms: Ms| format!("\"{ms}ms\"");
        let mut s = format!("[[faults]]\nat = {}\n", d(self.at));
        let _ = match &self.kind {
            FaultKind::Crash {
                node,
                recover_after,
            } => {
                let _ = write!(s, "kind = \"crash\"\nnode = \"{}\"\n", name(node));
                match recover_after {
                    Some(r) => writeln!(s, "recover_after = {}", d(*r)),
                    None => Ok(()),
                }
            }
            FaultKind::ZoneLoss {
                zone,
                recover_after,
                ..
            } => {
                let _ = write!(s, "kind = \"zone-loss\"\nzone = \"{zone}\"\n");
                match recover_after {
                    Some(r) => writeln!(s, "recover_after = {}", d(*r)),
                    None => Ok(()),
                }
            }
            FaultKind::Partition {
                nodes,
                storage,
                duration,
            } => {
                let names: Vec<String> = nodes.iter().map(|n| format!("\"{}\"", name(n))).collect();
                write!(
                    s,
                    "kind = \"partition\"\nnodes = [{}]\nstorage = {storage}\nduration = {}\n",
                    names.join(", "),
                    d(*duration)
                )
            }
            FaultKind::DiskLoss { node, repair_after } => write!(
                s,
                "kind = \"disk-loss\"\nnode = \"{}\"\nrecover_after = {}\n",
                name(node),
                d(*repair_after)
            ),
            FaultKind::SlowDisk {
                node,
                factor,
                duration,
            } => write!(
                s,
                "kind = \"slow-disk\"\nnode = \"{}\"\nfactor = {factor}\nduration = {}\n",
                name(node),
                d(*duration)
            ),
            FaultKind::Flap {
                node,
                down,
                up,
                count,
            } => write!(
                s,
                "kind = \"flap\"\nnode = \"{}\"\ndown = {}\nup = {}\ncount = {count}\n",
                name(node),
                d(*down),
                d(*up)
            ),
            FaultKind::QuorumLoss { duration } => {
                write!(s, "kind = \"quorum-loss\"\nduration = {}\n", d(*duration))
            }
            FaultKind::SchedulerRestart { duration } => write!(
                s,
                "kind = \"scheduler-restart\"\nduration = {}\n",
                d(*duration)
            ),
            FaultKind::Drain { node, duration } => {
                let _ = write!(s, "kind = \"drain\"\nnode = \"{}\"\n", name(node));
                match duration {
                    Some(r) => writeln!(s, "duration = {}", d(*r)),
                    None => Ok(()),
                }
            }
            FaultKind::AgentCrash {
                node,
                restart_after,
            } => {
                let _ = write!(s, "kind = \"agent-crash\"\nnode = \"{}\"\n", name(node));
                match restart_after {
                    Some(r) => writeln!(s, "restart_after = {}", d(*r)),
                    None => Ok(()),
                }
            }
            FaultKind::AgentPause { node, duration } => write!(
                s,
                "kind = \"agent-pause\"\nnode = \"{}\"\nduration = {}\n",
                name(node),
                d(*duration)
            ),
            FaultKind::NodeFreeze { node, duration } => write!(
                s,
                "kind = \"node-freeze\"\nnode = \"{}\"\nduration = {}\n",
                name(node),
                d(*duration)
            ),
            FaultKind::ControlLoss { duration } => {
                write!(s, "kind = \"control-loss\"\nduration = {}\n", d(*duration))
            }
        };
        s
    }

    /// A one-line description for traces and reports.
    pub fn describe(&self, node_names: &[String]) -> String {
        let name = |i: &u32| {
            node_names
                .get(*i as usize)
                .cloned()
                .unwrap_or_else(|| format!("#{i}"))
        };
        let until = |r: &Option<Ms>| match r {
            Some(r) => format!(", back after {}", fmt_ms(*r)),
            None => ", for good".to_string(),
        };
        let what = match &self.kind {
            FaultKind::Crash {
                node,
                recover_after,
            } => format!("crash {}{}", name(node), until(recover_after)),
            FaultKind::ZoneLoss {
                zone,
                nodes,
                recover_after,
            } => format!(
                "zone-loss {zone} ({} nodes){}",
                nodes.len(),
                until(recover_after)
            ),
            FaultKind::Partition {
                nodes,
                storage,
                duration,
            } => format!(
                "partition {} from the managers{} for {}",
                nodes.iter().map(name).collect::<Vec<_>>().join(", "),
                if *storage {
                    " (storage still reachable)"
                } else {
                    ""
                },
                fmt_ms(*duration)
            ),
            FaultKind::DiskLoss { node, repair_after } => format!(
                "disk-loss {}, repaired after {}",
                name(node),
                fmt_ms(*repair_after)
            ),
            FaultKind::SlowDisk {
                node,
                factor,
                duration,
            } => format!(
                "slow-disk {} {factor}x for {}",
                name(node),
                fmt_ms(*duration)
            ),
            FaultKind::Flap {
                node,
                down,
                up,
                count,
            } => format!(
                "flap {} {count}x ({} down, {} up)",
                name(node),
                fmt_ms(*down),
                fmt_ms(*up)
            ),
            FaultKind::QuorumLoss { duration } => {
                format!("quorum-loss for {}", fmt_ms(*duration))
            }
            FaultKind::SchedulerRestart { duration } => {
                format!("scheduler-restart, away {}", fmt_ms(*duration))
            }
            FaultKind::Drain { node, duration } => match duration {
                Some(d) => format!("drain {} for {}", name(node), fmt_ms(*d)),
                None => format!("drain {}", name(node)),
            },
            FaultKind::AgentCrash {
                node,
                restart_after,
            } => match restart_after {
                Some(r) => format!(
                    "agent-crash on {}, restarted after {}",
                    name(node),
                    fmt_ms(*r)
                ),
                None => format!("agent-crash on {}, for good", name(node)),
            },
            FaultKind::AgentPause { node, duration } => {
                format!("agent-pause on {} for {}", name(node), fmt_ms(*duration))
            }
            FaultKind::NodeFreeze { node, duration } => {
                format!("node-freeze {} for {}", name(node), fmt_ms(*duration))
            }
            FaultKind::ControlLoss { duration } => {
                format!("control-loss for {}", fmt_ms(*duration))
            }
        };
        format!("{:>14}  {what}", fmt_ms(self.at))
    }
}

/// Kinds the random generator may draw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RandomKind {
    Crash,
    Partition,
    DiskLoss,
    SlowDisk,
    Flap,
    QuorumLoss,
    SchedulerRestart,
    AgentCrash,
    AgentPause,
    NodeFreeze,
    ControlLoss,
}

impl RandomKind {
    pub const ALL: &'static [(&'static str, RandomKind)] = &[
        ("crash", RandomKind::Crash),
        ("partition", RandomKind::Partition),
        ("disk-loss", RandomKind::DiskLoss),
        ("slow-disk", RandomKind::SlowDisk),
        ("flap", RandomKind::Flap),
        ("quorum-loss", RandomKind::QuorumLoss),
        ("scheduler-restart", RandomKind::SchedulerRestart),
        ("agent-crash", RandomKind::AgentCrash),
        ("agent-pause", RandomKind::AgentPause),
        ("node-freeze", RandomKind::NodeFreeze),
        ("control-loss", RandomKind::ControlLoss),
    ];
}

/// `[random]`: faults drawn from the run's seed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RandomFaults {
    pub every: Ms,
    pub kinds: Vec<RandomKind>,
    pub start_after: Ms,
    pub recover_min: Ms,
    pub recover_max: Ms,
    /// Node indices faults may hit.
    pub targets: Vec<u32>,
}

impl RandomFaults {
    /// The random part of a run's schedule: arrivals with mean gap `every` until `end`, each
    /// with a kind, a target node and a recovery time. Only the `Faults` stream is used, so
    /// the schedule depends on the seed and the scenario alone.
    pub fn draw(&self, seed: u64, end: Ms) -> Vec<Fault> {
        let mut rng = SimRng::derive(seed, Stream::Faults, 0);
        let mut out = Vec::new();
        if self.kinds.is_empty() || self.targets.is_empty() || self.every == 0 {
            return out;
        }
        let mut t = self.start_after;
        loop {
            t += rng.gap(self.every).max(1);
            if t >= end {
                break;
            }
            let kind = *rng.pick(&self.kinds).expect("kinds is not empty");
            let node = *rng.pick(&self.targets).expect("targets is not empty");
            let rec = rng.range(self.recover_min, self.recover_max.max(self.recover_min));
            let kind = match kind {
                RandomKind::Crash => FaultKind::Crash {
                    node,
                    recover_after: Some(rec),
                },
                RandomKind::Partition => FaultKind::Partition {
                    nodes: vec![node],
                    storage: rng.range(0, 1) == 1,
                    duration: rec,
                },
                RandomKind::DiskLoss => FaultKind::DiskLoss {
                    node,
                    repair_after: rec,
                },
                RandomKind::SlowDisk => FaultKind::SlowDisk {
                    node,
                    factor: rng.range(2, 10) as u32,
                    duration: rec,
                },
                RandomKind::Flap => FaultKind::Flap {
                    node,
                    down: rng.range(1_000, 20_000),
                    up: rng.range(1_000, 20_000),
                    count: rng.range(2, 6) as u32,
                },
                RandomKind::QuorumLoss => FaultKind::QuorumLoss {
                    duration: rng.range(5_000, 120_000),
                },
                RandomKind::SchedulerRestart => FaultKind::SchedulerRestart {
                    duration: rng.range(1_000, 30_000),
                },
                RandomKind::AgentCrash => FaultKind::AgentCrash {
                    node,
                    restart_after: Some(rec),
                },
                RandomKind::AgentPause => FaultKind::AgentPause {
                    node,
                    duration: rec,
                },
                RandomKind::NodeFreeze => FaultKind::NodeFreeze {
                    node,
                    duration: rec,
                },
                RandomKind::ControlLoss => FaultKind::ControlLoss {
                    duration: rng.range(5_000, 120_000),
                },
            };
            out.push(Fault { at: t, kind });
        }
        out
    }
}

/// Every primitive action of a schedule, in time order (stable: same-time actions keep the
/// order of the faults that produced them).
pub fn timeline(faults: &[Fault]) -> Vec<(Ms, FaultAction)> {
    let mut out = Vec::new();
    for f in faults {
        f.expand(&mut out);
    }
    out.sort_by_key(|(t, _)| *t);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_orders_actions_in_time() {
        let faults = vec![
            Fault {
                at: 10_000,
                kind: FaultKind::Flap {
                    node: 1,
                    down: 2_000,
                    up: 3_000,
                    count: 2,
                },
            },
            Fault {
                at: 0,
                kind: FaultKind::Crash {
                    node: 0,
                    recover_after: Some(11_000),
                },
            },
        ];
        let got: Vec<Ms> = timeline(&faults).iter().map(|(t, _)| *t).collect();
        assert_eq!(got, vec![0, 10_000, 11_000, 12_000, 15_000, 17_000]);
    }

    #[test]
    fn random_schedule_depends_on_seed() {
        let r = RandomFaults {
            every: 600_000,
            kinds: vec![RandomKind::Crash, RandomKind::Partition],
            start_after: 60_000,
            recover_min: 10_000,
            recover_max: 600_000,
            targets: vec![3, 4, 5],
        };
        let a = r.draw(1, 24 * 3_600_000);
        assert_eq!(a, r.draw(1, 24 * 3_600_000));
        assert_ne!(a, r.draw(2, 24 * 3_600_000));
        assert!(a.iter().all(|f| f.at > 60_000));
    }

    #[test]
    fn toml_round_trip_text() {
        let f = Fault {
            at: 1_500,
            kind: FaultKind::Crash {
                node: 0,
                recover_after: None,
            },
        };
        assert_eq!(
            f.to_toml(&["w1".into()]),
            "[[faults]]\nat = \"1500ms\"\nkind = \"crash\"\nnode = \"w1\"\n"
        );
    }
}
