//! The processes of one lab node, read from `/proc`: what a node freeze stops and thaws.
//!
//! A node is a PID namespace. Its members are the processes whose `/proc/PID/ns/pid` is the
//! namespace's init's; containers run in PID namespaces nested inside it, so their processes
//! are found as descendants of members (a container's init is a child of its shim, a member).
//! A process started with `nsenter --pid` is a member too, though its parent (nsenter) is not.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::time::Duration;

/// Host PIDs of the members of `init`'s PID namespace and of their descendants, sorted.
pub fn members(init: u32) -> Vec<u32> {
    let Ok(ns) = fs::read_link(format!("/proc/{init}/ns/pid")) else {
        return Vec::new();
    };
    let mut parent: BTreeMap<u32, u32> = BTreeMap::new();
    let mut inside: BTreeSet<u32> = BTreeSet::new();
    for pid in all_pids() {
        if let Some(ppid) = ppid(pid) {
            parent.insert(pid, ppid);
        }
        if fs::read_link(format!("/proc/{pid}/ns/pid")).is_ok_and(|l| l == ns) {
            inside.insert(pid);
        }
    }
    closure(&parent, inside)
}

/// `roots` and every PID whose chain of parents (in `parent`) reaches one of them.
fn closure(parent: &BTreeMap<u32, u32>, roots: BTreeSet<u32>) -> Vec<u32> {
    let mut out = roots;
    // Parents may have a higher PID than their children (PIDs wrap), so repeat to a fixpoint.
    loop {
        let more: Vec<u32> = parent
            .iter()
            .filter(|(pid, pp)| out.contains(pp) && !out.contains(pid))
            .map(|(pid, _)| *pid)
            .collect();
        if more.is_empty() {
            return out.into_iter().collect();
        }
        out.extend(more);
    }
}

fn all_pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A process's parent and state from `/proc/PID/stat` (the fields after the command name,
/// which may itself hold spaces and parentheses).
fn stat(pid: u32) -> Option<(char, u32)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&s)
}

fn parse_stat(s: &str) -> Option<(char, u32)> {
    let rest = &s[s.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    Some((state, ppid))
}

fn ppid(pid: u32) -> Option<u32> {
    stat(pid).map(|(_, p)| p)
}

/// `kill -SIG` to every PID in one command.
pub fn signal(pids: &[u32], sig: &str) {
    if pids.is_empty() {
        return;
    }
    let list: Vec<String> = pids.iter().map(u32::to_string).collect();
    let _ = crate::sh(&format!("kill -{sig} {} 2>/dev/null", list.join(" ")));
}

/// SIGSTOP to every PID `list` returns, repeated until a new listing holds no process that
/// is not stopped: a process forked while the others were being stopped is stopped too.
pub fn stop_all(list: impl Fn() -> Vec<u32>) -> Vec<u32> {
    let mut stopped: BTreeSet<u32> = BTreeSet::new();
    for _ in 0..20 {
        let running: Vec<u32> = list()
            .into_iter()
            .filter(|p| !matches!(stat(*p), Some(('T' | 't', _)) | None))
            .collect();
        if running.is_empty() {
            break;
        }
        signal(&running, "STOP");
        stopped.extend(running);
        std::thread::sleep(Duration::from_millis(20));
    }
    stopped.into_iter().collect()
}

/// The child of `pid` whose command name is `name`.
pub fn child_named(pid: u32, name: &str) -> Option<u32> {
    let kids = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    kids.split_whitespace()
        .filter_map(|k| k.parse::<u32>().ok())
        .find(|k| fs::read_to_string(format!("/proc/{k}/comm")).is_ok_and(|c| c.trim() == name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_is_read_after_the_last_parenthesis_of_the_command_name() {
        assert_eq!(parse_stat("42 (a (b) c) S 7 42 42 0 -1"), Some(('S', 7)));
        assert_eq!(parse_stat("42 (sleep) T 1 1"), Some(('T', 1)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn descendants_of_members_are_members_whatever_their_pid_order() {
        // 10 is in the namespace; 5 is its child (a wrapped PID), 3 the child of 5 (a
        // container's process); 20 is unrelated, 21 its child.
        let parent = BTreeMap::from([(10, 1), (5, 10), (3, 5), (20, 1), (21, 20)]);
        assert_eq!(closure(&parent, BTreeSet::from([10])), vec![3, 5, 10]);
        assert_eq!(closure(&parent, BTreeSet::new()), Vec::<u32>::new());
    }

    #[test]
    fn this_process_is_among_the_members_of_its_own_namespace() {
        let me = std::process::id();
        let all = members(me);
        assert!(all.contains(&me), "{all:?}");
        assert!(members(u32::MAX).is_empty());
    }
}
