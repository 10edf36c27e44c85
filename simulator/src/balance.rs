//! The balance measures of a rescheduling scenario, read from the world as it is: how
//! unevenly the stateful slots sit on the nodes that could run them, and how many zones the
//! replica sets leave unused. Sampled every `[rebalance] sample`; time to balanced is derived
//! from the samples at the end of the run.

use std::collections::BTreeSet;

use crate::event::Ev;
use crate::faults::FaultAction;
use crate::rescheduling::BalanceSample;
use crate::state::Sim;

impl Sim<'_> {
    /// Nodes that can run a stateful slot now: powered, in the swarm and active, matching
    /// some stateful service's constraints.
    fn eligible(&self, n: usize) -> bool {
        let rt = &self.nodes[n];
        if !rt.up || rt.swarm_down || rt.draining {
            return false;
        }
        let node = &self.scn.cluster.nodes[n];
        self.services
            .iter()
            .enumerate()
            .any(|(si, s)| s.stateful && self.constraints[si].iter().all(|c| c.matches(node)))
    }

    pub fn balance_now(&self) -> BalanceSample {
        let eligible: Vec<bool> = (0..self.nodes.len()).map(|n| self.eligible(n)).collect();
        let mut load = vec![0u32; self.nodes.len()];
        let mut zone_skew = 0u32;
        let zones_up: BTreeSet<&str> = (0..self.nodes.len())
            .filter(|&n| eligible[n])
            .map(|n| self.scn.nodes[n].zone.as_str())
            .collect();
        for s in &self.services {
            if !s.stateful {
                continue;
            }
            let first = s.first_slot as usize;
            let mut used = BTreeSet::new();
            for sl in &self.slots[first..first + s.replicas as usize] {
                for &t in &sl.tasks {
                    let task = &self.tasks[t as usize];
                    if task.desired && task.alive() && eligible[task.node as usize] {
                        load[task.node as usize] += 1;
                        used.insert(self.scn.nodes[task.node as usize].zone.as_str());
                    }
                }
            }
            let want = zones_up.len().min(s.replicas as usize);
            zone_skew += u32::try_from(want.saturating_sub(used.len())).unwrap_or(u32::MAX);
        }
        let on: Vec<u32> = (0..self.nodes.len())
            .filter(|&n| eligible[n])
            .map(|n| load[n])
            .collect();
        let spread = match (on.iter().max(), on.iter().min()) {
            (Some(a), Some(b)) => a - b,
            _ => 0,
        };
        BalanceSample {
            at_ms: self.now,
            load_spread: spread,
            zone_skew,
        }
    }

    /// Records a sample and schedules the next.
    pub fn sample_balance(&mut self) {
        let Some(r) = &self.scn.rebalance else { return };
        let s = self.balance_now();
        self.resched.samples.push(s);
        self.q.push(self.now + r.sample, Ev::Sample);
    }

    /// The run's rescheduling outcome: the measures' changes and the time to balanced,
    /// counted from the last node back or joined.
    pub fn finish_rescheduling(&mut self) {
        let Some(r) = &self.scn.rebalance else { return };
        let last = self.balance_now();
        let mut from = r.joins.iter().map(|&(t, _)| t).max().unwrap_or(0);
        let mut acts = Vec::new();
        for f in &self.faults {
            f.expand(&mut acts);
        }
        for (t, a) in acts {
            if matches!(
                a,
                FaultAction::Recover { .. } | FaultAction::Activate { .. }
            ) {
                from = from.max(t);
            }
        }
        let samples = &self.resched.samples;
        let mut changes: Vec<_> = Vec::new();
        for s in samples {
            let same = changes.last().is_some_and(|p: &BalanceSample| {
                p.load_spread == s.load_spread && p.zone_skew == s.zone_skew
            });
            if !same {
                changes.push(*s);
            }
        }
        let balanced_since = if last.balanced() {
            let mut since = self.now;
            for s in samples.iter().rev() {
                if !s.balanced() {
                    break;
                }
                since = s.at_ms;
            }
            Some(since.saturating_sub(from))
        } else {
            None
        };
        let out = &mut self.resched.out;
        out.from_ms = from;
        out.balance = changes;
        out.end = last;
        out.time_to_balanced_ms = balanced_since;
    }
}
