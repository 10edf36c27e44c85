//! Shrinking: a failing fault schedule is cut down, delta-debugging style (drop halves, then
//! quarters, … then single faults, keeping any cut that still fails), to a minimal schedule
//! whose every fault is needed. The seed is kept — it also drives heartbeat jitter — and the
//! result is written as `[[faults]]` TOML for `berth-sim run --faults`.

use std::fmt::Write as _;
use std::path::Path;

use crate::faults::Fault;
use crate::policy::PolicyKind;
use crate::runner::run_one;
use crate::scenario::Scenario;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shrunk {
    pub policy: PolicyKind,
    pub seed: u64,
    pub original: usize,
    pub faults: Vec<Fault>,
    /// Whether the input failed at all.
    pub failed: bool,
    /// What the minimal schedule breaks.
    pub what: String,
    pub runs: u32,
}

pub fn shrink(scn: &Scenario, policy: PolicyKind, seed: u64, faults: &[Fault]) -> Shrunk {
    let mut runs = 0u32;
    let mut fails = |fs: &[Fault]| -> Option<String> {
        runs += 1;
        let o = run_one(scn, policy, seed, fs).ok()?;
        if let Some(v) = &o.violation {
            return Some(format!("{}: {}", v.invariant, v.message));
        }
        o.bound_failures.first().cloned()
    };
    let Some(mut what) = fails(faults) else {
        return Shrunk {
            policy,
            seed,
            original: faults.len(),
            faults: faults.to_vec(),
            failed: false,
            what: String::new(),
            runs,
        };
    };
    let mut cur = faults.to_vec();
    if let Some(w) = fails(&[]) {
        cur.clear();
        what = w;
    }
    let mut n = 2usize;
    while cur.len() >= 2 {
        let chunk = cur.len().div_ceil(n);
        let mut reduced = false;
        let parts = n;
        for i in 0..parts {
            let lo = i * chunk;
            if lo >= cur.len() {
                break;
            }
            let hi = (lo + chunk).min(cur.len());
            let cand: Vec<Fault> = cur[..lo].iter().chain(&cur[hi..]).cloned().collect();
            if let Some(w) = fails(&cand) {
                cur = cand;
                what = w;
                n = (n - 1).max(2);
                reduced = true;
                break;
            }
        }
        if !reduced {
            if n >= cur.len() {
                break;
            }
            n = (n * 2).min(cur.len());
        }
    }
    Shrunk {
        policy,
        seed,
        original: faults.len(),
        faults: cur,
        failed: true,
        what,
        runs,
    }
}

pub fn to_toml(scn: &Scenario, s: &Shrunk) -> String {
    let names = scn.node_names();
    let mut o = format!(
        "# berth-sim shrink: scenario `{}`, seed {}, policy {}\n# {} of {} faults still fail: {}\n\n",
        scn.name,
        s.seed,
        s.policy.as_str(),
        s.faults.len(),
        s.original,
        s.what
    );
    for f in &s.faults {
        o.push_str(&f.to_toml(&names));
        o.push('\n');
    }
    o
}

pub fn write(scn: &Scenario, s: &Shrunk, path: &Path) -> std::io::Result<()> {
    std::fs::write(path, to_toml(scn, s))
}

pub fn summary(scn: &Scenario, s: &Shrunk, path: &Path) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "shrunk seed {} under {}: {} → {} faults ({} runs); still fails: {}",
        s.seed,
        s.policy.as_str(),
        s.original,
        s.faults.len(),
        s.runs,
        s.what
    );
    let names = scn.node_names();
    for f in &s.faults {
        let _ = writeln!(o, "  {}", f.describe(&names));
    }
    let _ = writeln!(
        o,
        "reproduce: berth-sim run {} --seed {} --policy {} --faults {}",
        scn.path,
        s.seed,
        s.policy.as_str(),
        path.display()
    );
    o
}
