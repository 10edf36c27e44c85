//! The executor carrying out a rescheduling plan's moves (`Executor::run_moves`): the step
//! sequence, a restart from the journal half-way, and a failure after the stop.

use super::tests::Backend;
use super::*;
use crate::model::{Backend as Storage, Cluster, Dataset, TaskState};
use crate::rebalance::{Budget, move_steps, plan_rebalance};
use crate::testing::*;

/// Three zones, db spread one slot per zone: c1 died, slot 3 failed over to a2 (next to slot
/// 1 in zone a), c1 is back. The planner moves slot 3 back to c1.
fn node_back(backend: Storage) -> Cluster {
    // Slot 3's failover raised its epoch: the slot the planner sends back.
    let ds = |name: &str, slot, primary: &str| Dataset {
        name: name.into(),
        service: "db".into(),
        slot,
        primary: Some(NodeId::new(primary)),
        epoch: if slot == 3 { 3 } else { 2 },
        backend,
        size_bytes: 10 << 30,
        standby: None,
        fenced: false,
    };
    Cluster {
        nodes: vec![
            node("a1").label("zone", "a"),
            node("a2").label("zone", "a"),
            node("b1").label("zone", "b"),
            node("c1").label("zone", "c"),
        ],
        services: vec![
            replicated("db", 3)
                .stateful("db-{slot}", "move")
                .label("berth.backend", backend.as_str())
                .label("berth.topology-spread", "node.labels.zone:1"),
        ],
        tasks: vec![
            running("db", 1, "a1"),
            running("db", 2, "b1"),
            running("db", 3, "a2"),
        ],
        datasets: vec![
            ds("db-1", 1, "a1"),
            ds("db-2", 2, "b1"),
            ds("db-3", 3, "a2"),
        ],
    }
}

fn start(c: &Cluster) -> Executor {
    let plan = plan_rebalance(c, &Budget::default()).unwrap();
    assert_eq!(plan.moves.len(), 1, "{plan:?}");
    let mut exec = Executor::new(Config::default());
    let run = exec.run_moves(0, c, &move_steps(c, &plan), Actor::Berth);
    assert_eq!(run, Some(0));
    assert!(exec.is_busy("db", 3), "{:#?}", exec.state().runs);
    assert!(exec.rebalancing());
    exec
}

/// The slot's task nodes still running.
fn running_on(c: &Cluster, slot: u64) -> Vec<String> {
    c.tasks
        .iter()
        .filter(|t| t.slot == Some(slot) && t.state == TaskState::Running)
        .filter_map(|t| t.node_id.as_ref().map(|n| n.to_string()))
        .collect()
}

/// Performs every command ready, one at a time, checking before each that the slot never
/// runs in two places and that nothing starts before the old task stopped and was fenced.
fn run_to_end(exec: &mut Executor, c: &mut Cluster, b: &mut Backend, mut now: u64) -> u64 {
    for _ in 0..100 {
        let cmds = exec.next(now);
        if cmds.is_empty() {
            match exec.wake_at() {
                Some(t) => {
                    now = now.max(t);
                    continue;
                }
                None => return now,
            }
        }
        for (id, cmd) in cmds {
            if let Command::PreCopy { from, .. } = &cmd {
                assert_eq!(
                    running_on(c, 3),
                    [from.to_string()],
                    "pre-copy while serving"
                );
            }
            let out = b.perform(c, &cmd);
            assert!(
                running_on(c, 3).len() <= 1,
                "two writers: {:?}",
                running_on(c, 3)
            );
            now += 10;
            exec.complete(id, out, now);
        }
    }
    panic!("did not settle");
}

fn names(log: &[Command]) -> Vec<String> {
    log.iter()
        .map(|c| match c {
            Command::PreCopy { from, to, .. } => format!("pre-copy {from}->{to}"),
            Command::StopSlot { node, wait_ms, .. } => format!("stop {node} wait={wait_ms:?}"),
            Command::Fence {
                node, expect_epoch, ..
            } => format!("fence {node} @{expect_epoch}"),
            Command::Assign {
                primary,
                epoch,
                mode,
                ..
            } => format!("assign {} {primary} @{epoch} {mode:?}", mode.as_str()),
            Command::StartSlot { node, epoch, .. } => format!("start {node} @{epoch:?}"),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn a_move_pre_copies_while_serving_then_stops_fences_assigns_and_starts() {
    let mut c = node_back(Storage::Local);
    let mut exec = start(&c);
    let mut b = Backend::default();
    run_to_end(&mut exec, &mut c, &mut b, 0);
    assert_eq!(
        names(&b.log),
        [
            "pre-copy a2->c1",
            "stop a2 wait=None",
            "fence a2 @3",
            "assign move c1 @4 Move { from: NodeId(\"a2\"), copy: true }",
            "start c1 @Some(4)",
        ]
    );
    assert_eq!(running_on(&c, 3), ["c1"]);
    let d = c.dataset("db-3").unwrap();
    assert_eq!((d.primary.as_ref().unwrap().as_str(), d.epoch), ("c1", 4));
    assert!(!exec.is_busy("db", 3));
    assert!(!exec.rebalancing());
    let h = &exec.history()[0];
    assert!(h.rebalance);
    assert_eq!(h.end, Some(RunEnd::Completed));
    // Carried out, the cluster is balanced.
    assert!(
        plan_rebalance(&c, &Budget::default())
            .unwrap()
            .is_balanced()
    );
}

#[test]
fn a_shared_move_re_points_without_a_copy() {
    let mut c = node_back(Storage::Shared);
    let mut exec = start(&c);
    let mut b = Backend::default();
    run_to_end(&mut exec, &mut c, &mut b, 0);
    assert_eq!(
        names(&b.log),
        [
            "stop a2 wait=None",
            "fence a2 @3",
            "assign move c1 @4 Move { from: NodeId(\"a2\"), copy: false }",
            "start c1 @Some(4)",
        ]
    );
}

#[test]
fn a_move_resumes_from_the_journal_after_a_crash_mid_move() {
    let mut c = node_back(Storage::Local);
    let mut exec = start(&c);
    let mut b = Backend::default();
    // Pre-copy and stop come back; the fence is handed out, takes effect, and the controller
    // dies before its outcome is recorded.
    for _ in 0..2 {
        let (id, cmd) = exec.next(0).remove(0);
        let out = b.perform(&mut c, &cmd);
        exec.complete(id, out, 5);
    }
    let fence = exec.next(5);
    assert!(
        matches!(fence[..], [(_, Command::Fence { .. })]),
        "{fence:?}"
    );
    b.perform(&mut c, &fence[0].1);
    let journal = serde_json::to_string(exec.state()).unwrap();
    drop(exec);

    let mut exec = Executor::from_state(serde_json::from_str(&journal).unwrap());
    assert!(exec.is_busy("db", 3), "the move is still under way");
    run_to_end(&mut exec, &mut c, &mut b, 10);
    let got = names(&b.log);
    // The fence is replayed (a no-op at the control service), then the move goes on.
    assert_eq!(
        got[2..],
        [
            "fence a2 @3",
            "fence a2 @3",
            "assign move c1 @4 Move { from: NodeId(\"a2\"), copy: true }",
            "start c1 @Some(4)",
        ]
    );
    assert_eq!(running_on(&c, 3), ["c1"]);
    assert_eq!(c.dataset("db-3").unwrap().epoch, 4);
    assert_eq!(exec.history()[0].end, Some(RunEnd::Completed));
}

#[test]
fn an_assign_refused_after_the_fence_puts_the_slot_back_at_the_new_epoch() {
    let mut c = node_back(Storage::Local);
    let mut exec = start(&c);
    let mut b = Backend::default();
    b.refuse = vec![3];
    run_to_end(&mut exec, &mut c, &mut b, 0);
    assert_eq!(
        names(&b.log),
        [
            "pre-copy a2->c1",
            "stop a2 wait=None",
            "fence a2 @3",
            "assign move c1 @4 Move { from: NodeId(\"a2\"), copy: true }",
            // The target never got the data: the old holder is assigned again at the
            // fence's epoch and restarted where it ran.
            "assign move a2 @4 Move { from: NodeId(\"a2\"), copy: false }",
            "start a2 @Some(4)",
        ]
    );
    assert_eq!(running_on(&c, 3), ["a2"]);
    let d = c.dataset("db-3").unwrap();
    assert_eq!((d.primary.as_ref().unwrap().as_str(), d.epoch), ("a2", 4));
    assert!(
        exec.take_notices()
            .iter()
            .any(|n| matches!(n, Notice::RolledBack { slot: 3, .. }))
    );
    assert_eq!(
        exec.history()[0].end,
        Some(RunEnd::Dropped { lanes: 1 }),
        "the move did not happen"
    );
    assert!(!exec.is_busy("db", 3));
}

#[test]
fn a_fence_refused_restarts_the_slot_at_its_old_epoch() {
    let mut c = node_back(Storage::Local);
    let mut exec = start(&c);
    let mut b = Backend::default();
    b.refuse = vec![2];
    run_to_end(&mut exec, &mut c, &mut b, 0);
    assert_eq!(
        names(&b.log)[2..],
        ["fence a2 @3", "start a2 @Some(3)"],
        "never assigned to the target"
    );
    assert_eq!(running_on(&c, 3), ["a2"]);
}

#[test]
fn a_failed_pre_copy_leaves_the_slot_serving_where_it_is() {
    let mut c = node_back(Storage::Local);
    let mut exec = start(&c);
    let mut b = Backend::default();
    b.refuse = vec![0];
    run_to_end(&mut exec, &mut c, &mut b, 0);
    assert_eq!(names(&b.log), ["pre-copy a2->c1"]);
    assert_eq!(running_on(&c, 3), ["a2"]);
    assert_eq!(c.dataset("db-3").unwrap().epoch, 3);
    assert!(!exec.is_busy("db", 3));
}

#[test]
fn a_slot_another_run_works_on_is_left_out() {
    let c = node_back(Storage::Local);
    let plan = plan_rebalance(&c, &Budget::default()).unwrap();
    let steps = move_steps(&c, &plan);
    let mut exec = Executor::new(Config::default());
    assert!(exec.run_moves(0, &c, &steps, Actor::Operator).is_some());
    assert_eq!(exec.run_moves(0, &c, &steps, Actor::Operator), None);
}

#[test]
fn a_replicated_move_onto_its_standby_promotes_it_without_a_copy() {
    let mut c = node_back(Storage::Replicated);
    for d in &mut c.datasets {
        // Each slot's standby on another node; slot 3's on c1, where it goes back.
        d.standby = Some(NodeId::new(match d.slot {
            1 => "b1",
            2 => "a1",
            _ => "c1",
        }));
    }
    let mut exec = start(&c);
    let mut b = Backend::default();
    run_to_end(&mut exec, &mut c, &mut b, 0);
    assert_eq!(
        names(&b.log),
        [
            "stop a2 wait=None",
            "fence a2 @3",
            "assign promote c1 @4 Promote { from: NodeId(\"a2\") }",
            "start c1 @Some(4)",
        ]
    );
    assert_eq!(running_on(&c, 3), ["c1"]);
}
