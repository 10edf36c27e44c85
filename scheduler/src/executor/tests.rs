use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::failover::Event;
use crate::model::{Availability, Cluster, Dataset, NodeState, Role, TaskState};
use crate::testing::*;

/// Four workers in two zones: a shared-storage service (move), a local one (move), a
/// replica set (recreate, 30 s grace) and a stateless API, all with a task on w1.
pub(super) fn world() -> Cluster {
    let nodes = vec![
        node("m1").role(Role::Manager),
        node("w1").label("zone", "a"),
        node("w2").label("zone", "a"),
        node("w3").label("zone", "b"),
        node("w4").label("zone", "b"),
    ];
    let services = vec![
        replicated("files", 1)
            .stateful("files-{slot}", "move")
            .label("berth.backend", "shared")
            .constraint("node.role==worker"),
        replicated("cache", 1)
            .stateful("cache-{slot}", "move")
            .constraint("node.role==worker"),
        replicated("mongo", 2)
            .stateful("mongo-{slot}", "recreate")
            .label("berth.recreate-grace", "30s")
            .constraint("node.role==worker"),
        replicated("api", 3)
            .constraint("node.role==worker")
            .label("berth.max-unavailable", "1"),
    ];
    let tasks = vec![
        running("files", 1, "w1"),
        running("cache", 1, "w1"),
        running("mongo", 1, "w1"),
        running("mongo", 2, "w3"),
        running("api", 1, "w1"),
        running("api", 2, "w1"),
        running("api", 3, "w2"),
    ];
    let ds = |name: &str, service: &str, slot, node: &str, backend| Dataset {
        name: name.into(),
        service: service.into(),
        slot,
        primary: Some(NodeId::new(node)),
        epoch: 4,
        backend,
        ..Dataset::default()
    };
    use crate::model::Backend;
    let datasets = vec![
        ds("files-1", "files", 1, "w1", Backend::Shared),
        ds("cache-1", "cache", 1, "w1", Backend::Local),
        ds("mongo-1", "mongo", 1, "w1", Backend::Local),
        ds("mongo-2", "mongo", 2, "w3", Backend::Local),
    ];
    Cluster {
        nodes,
        services,
        tasks,
        datasets,
    }
}

pub(super) fn set_node(c: &mut Cluster, id: &str, f: impl FnOnce(&mut crate::model::Node)) {
    f(c.nodes.iter_mut().find(|n| n.id.as_str() == id).unwrap());
}

/// A backend that applies what it is told to a cluster, as the daemon's would to Swarm and
/// the volume control service: epochs checked, fences and assignments replayable.
#[derive(Default)]
pub(super) struct Backend {
    pub log: Vec<Command>,
    epochs: BTreeMap<String, u64>,
    /// Commands to refuse, by position in the log.
    pub refuse: Vec<usize>,
}

impl Backend {
    pub(super) fn perform(&mut self, c: &mut Cluster, cmd: &Command) -> Outcome {
        let n = self.log.len();
        self.log.push(cmd.clone());
        if self.refuse.contains(&n) {
            return Outcome::Refused {
                current_epoch: None,
                reason: "test refuses".into(),
            };
        }
        let epoch_of = |c: &Cluster, v: &str| c.dataset(v).map(|d| d.epoch).unwrap_or(0);
        match cmd {
            Command::Fence {
                volume,
                expect_epoch,
                ..
            } => {
                let cur = epoch_of(c, volume);
                if cur == expect_epoch + 1 {
                    return Outcome::Done; // replay
                }
                if cur != *expect_epoch {
                    return Outcome::Refused {
                        current_epoch: Some(cur),
                        reason: "stale".into(),
                    };
                }
                if let Some(d) = c.datasets.iter_mut().find(|d| &d.name == volume) {
                    d.epoch += 1;
                }
                self.epochs.insert(volume.clone(), cur + 1);
            }
            Command::Assign {
                volume,
                primary,
                epoch,
                ..
            } => {
                if epoch_of(c, volume) != *epoch {
                    return Outcome::Refused {
                        current_epoch: Some(epoch_of(c, volume)),
                        reason: "epoch".into(),
                    };
                }
                if let Some(d) = c.datasets.iter_mut().find(|d| &d.name == volume) {
                    d.primary = Some(primary.clone());
                }
            }
            Command::StopSlot {
                service,
                slot,
                node,
                ..
            } => {
                // As `berth run` does: the task stops, and the slot's service stays pinned to
                // the node (scaled to 0) until the slot starts elsewhere, so the managers
                // still count the slot there. A replay finds it stopped already.
                for t in c.tasks.iter_mut().filter(|t| {
                    t.service_id.0 == *service
                        && t.slot == Some(*slot)
                        && t.node_id.as_ref() == Some(node)
                }) {
                    t.state = TaskState::Assigned;
                }
            }
            Command::StartSlot {
                service,
                slot,
                node,
                volume,
                epoch,
            } => {
                if let (Some(v), Some(e)) = (volume, epoch) {
                    assert_eq!(epoch_of(c, v), *e, "a slot never starts on a stale epoch");
                }
                if volume.is_some() {
                    let other = c.tasks.iter().find(|t| {
                        t.service_id.0 == *service
                            && t.slot == Some(*slot)
                            && t.node_id.as_ref() != Some(node)
                            && t.state == TaskState::Running
                    });
                    assert!(
                        other.is_none(),
                        "a stateful slot starts on {node} only once its old task is stopped: \
                         {other:?} still runs"
                    );
                }
                c.tasks
                    .retain(|t| !(t.service_id.0 == *service && t.slot == Some(*slot)));
                c.tasks.push(running(service, *slot, node.as_str()));
            }
            Command::SetFenceLabel { node } => set_node(c, node.as_str(), |n| {
                n.labels.insert("berth.fenced".into(), "true".into());
            }),
            Command::ClearFenceLabel { node } => set_node(c, node.as_str(), |n| {
                n.labels.remove("berth.fenced");
            }),
            Command::PreCopy { .. } | Command::DropStale { .. } => {}
        }
        Outcome::Done
    }
}

/// Observes, and once the fence labels it asked for are set, observes again: a node-down
/// plan is made for the cluster with the label.
fn observe(exec: &mut Executor, c: &mut Cluster, b: &mut Backend, now: u64) {
    exec.observe(now, Observation::of(c));
    if exec.state().fencing.is_empty() {
        return;
    }
    for (id, cmd) in exec.next(now) {
        assert!(matches!(cmd, Command::SetFenceLabel { .. }), "{cmd:?}");
        let o = b.perform(c, &cmd);
        exec.complete(id, o, now);
    }
    assert!(exec.wants_observation());
    exec.observe(now, Observation::of(c));
}

/// Runs every command to completion, timers included, observing after each round.
fn settle(exec: &mut Executor, c: &mut Cluster, b: &mut Backend, mut now: u64) -> u64 {
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
            let out = b.perform(c, &cmd);
            now += 10;
            if exec.complete(id, out, now) || exec.wants_observation() {
                exec.observe(now, Observation::of(c));
            }
        }
    }
    panic!("did not settle");
}

fn names(log: &[Command]) -> Vec<String> {
    log.iter()
        .map(|c| {
            let v = serde_json::to_value(c).unwrap();
            let mut s = v["command"].as_str().unwrap().to_string();
            if let Some(x) = v.get("volume").and_then(|x| x.as_str()) {
                s += &format!(":{x}");
            }
            if let Some(x) = v.get("service").and_then(|x| x.as_str()) {
                s += &format!(":{x}.{}", v["slot"]);
            }
            s
        })
        .collect()
}

#[test]
fn node_down_fences_moves_and_starts_at_the_new_epoch() {
    let mut c = world();
    let mut exec = Executor::new(Config::default());
    exec.observe(0, Observation::of(&c));
    assert!(exec.next(0).is_empty(), "nothing happened yet");
    set_node(&mut c, "w1", |n| n.state = NodeState::Down);
    let mut b = Backend::default();
    observe(&mut exec, &mut c, &mut b, 1_000);
    assert!(exec.is_busy("files", 1));
    let end = settle(&mut exec, &mut c, &mut b, 1_000);
    let got = names(&b.log);
    assert_eq!(got[0], "set-fence-label");
    for want in [
        "fence:files-1",
        "assign:files-1",
        "start-slot:files-1:files.1",
        "fence:mongo-1",
        "assign:mongo-1",
        "start-slot:mongo-1:mongo.1",
        "start-slot:api.1",
    ] {
        assert!(got.iter().any(|g| g == want), "{want} missing from {got:?}");
    }
    // `local` data waits for its node: no fence of cache-1.
    assert!(!got.iter().any(|g| g.contains("cache-1")), "{got:?}");
    // The lost node's task is stopped, waited for at most a lease, before the data moves.
    let at = |want: &str| got.iter().position(|g| g == want).unwrap();
    assert!(at("stop-slot:files.1") < at("assign:files-1"), "{got:?}");
    assert!(b.log.iter().any(|c| matches!(
        c,
        Command::StopSlot { service, node, wait_ms: Some(5_000), .. }
            if service == "files" && node.as_str() == "w1"
    )));
    // The recreate grace (30 s) was waited out.
    assert!(end >= 31_000, "{end}");
    assert_eq!(c.dataset("files-1").unwrap().epoch, 5);
    assert_eq!(exec.busy_slots().count(), 0);
    let h = exec.history();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].end, Some(RunEnd::Completed));
    assert_eq!(h[0].event, Some(Event::NodeDown(NodeId::new("w1"))));
}

#[test]
fn node_back_within_grace_keeps_the_member() {
    let mut c = world();
    let mut exec = Executor::new(Config::default());
    exec.observe(0, Observation::of(&c));
    set_node(&mut c, "w1", |n| n.state = NodeState::Down);
    let mut b = Backend::default();
    observe(&mut exec, &mut c, &mut b, 0);
    // Run everything but the grace timer.
    for _ in 0..10 {
        for (id, cmd) in exec.next(5_000) {
            let out = b.perform(&mut c, &cmd);
            exec.complete(id, out, 5_000);
        }
    }
    assert!(exec.wake_at().is_some_and(|t| t > 5_000));
    set_node(&mut c, "w1", |n| n.state = NodeState::Ready);
    exec.observe(6_000, Observation::of(&c));
    assert!(
        exec.take_notices()
            .iter()
            .any(|n| matches!(n, Notice::GraceKept { .. }))
    );
    settle(&mut exec, &mut c, &mut b, 6_000);
    assert!(
        !b.log.iter().any(|c| matches!(
            c,
            Command::Assign {
                mode: AssignMode::Recreate,
                ..
            }
        )),
        "the member was not recreated: {:?}",
        names(&b.log)
    );
    // It was fenced, so it is let back in at the new epoch, where it is.
    assert!(b.log.iter().any(|c| matches!(
        c,
        Command::StartSlot { node, epoch: Some(5), .. } if node.as_str() == "w1"
    )));
}

#[test]
fn refused_command_drops_the_lane_and_replans() {
    let mut c = world();
    let mut exec = Executor::new(Config::default());
    exec.observe(0, Observation::of(&c));
    set_node(&mut c, "w1", |n| n.state = NodeState::Down);
    let mut b = Backend {
        refuse: vec![1],
        ..Backend::default()
    };
    observe(&mut exec, &mut c, &mut b, 0);
    let first = exec.next(0);
    let mut retry = false;
    for (id, cmd) in first {
        let out = b.perform(&mut c, &cmd);
        retry |= exec.complete(id, out, 10);
    }
    assert!(
        retry,
        "a dropped lane of a lost node asks for an observation"
    );
    assert!(
        exec.take_notices()
            .iter()
            .any(|n| matches!(n, Notice::LaneDropped { .. }))
    );
    exec.observe(20, Observation::of(&c));
    settle(&mut exec, &mut c, &mut b, 20);
    let runs = exec.history().len();
    assert!(runs >= 2, "re-planned: {runs} runs");
    assert_eq!(
        exec.history()[0].end,
        Some(RunEnd::Dropped { lanes: 1 }),
        "{:?}",
        exec.history()[0]
    );
    // Whatever was refused, every stateful slot ends started at its volume's epoch.
    assert!(
        c.tasks
            .iter()
            .any(|t| t.service_id.0 == "files" && t.node_id.as_ref().unwrap().as_str() != "w1")
    );
}

#[test]
fn resumes_from_serialized_state_and_reissues_in_flight_commands() {
    let mut c = world();
    let mut exec = Executor::new(Config::default());
    exec.observe(0, Observation::of(&c));
    set_node(&mut c, "w1", |n| n.state = NodeState::Down);
    let mut b = Backend::default();
    observe(&mut exec, &mut c, &mut b, 0);
    let out = exec.next(0);
    assert!(!out.is_empty());
    let json = serde_json::to_string(exec.state()).unwrap();
    // kill -9: nothing completed; a new process resumes.
    let state: ExecutorState = serde_json::from_str(&json).unwrap();
    assert_eq!(&state, exec.state());
    let mut again = Executor::from_state(state);
    let reissued = again.next(0);
    assert_eq!(reissued, out, "the same commands, the same ids");
    // The first process had performed them already: the replays are no-ops.
    for (_, cmd) in &out {
        b.perform(&mut c, cmd);
    }
    for (id, cmd) in reissued {
        let o = b.perform(&mut c, &cmd);
        assert_eq!(o, Outcome::Done, "{cmd:?} replays");
        again.complete(id, o, 10);
    }
    settle(&mut again, &mut c, &mut b, 10);
    assert_eq!(c.dataset("files-1").unwrap().epoch, 5, "fenced once");
}

#[test]
fn drain_stops_at_most_max_unavailable_at_once() {
    let mut c = world();
    c.tasks.push(running("api", 4, "w1"));
    if let crate::model::Mode::Replicated { replicas } = &mut c.services[3].mode {
        *replicas = 4;
    }
    let mut exec = Executor::new(Config::default());
    exec.observe(0, Observation::of(&c));
    set_node(&mut c, "w1", |n| n.availability = Availability::Drain);
    exec.observe(0, Observation::of(&c));
    let mut b = Backend::default();
    let mut down = 0i32;
    let mut max_down = 0;
    let mut now = 0;
    loop {
        let cmds = exec.next(now);
        if cmds.is_empty() {
            match exec.wake_at() {
                Some(t) => {
                    now = t;
                    continue;
                }
                None => break,
            }
        }
        for (id, cmd) in cmds {
            if matches!(&cmd, Command::StopSlot { service, .. } if service == "api") {
                down += 1;
            }
            if matches!(&cmd, Command::StartSlot { service, .. } if service == "api") {
                down -= 1;
            }
            max_down = max_down.max(down);
            let o = b.perform(&mut c, &cmd);
            now += 1;
            exec.complete(id, o, now);
        }
    }
    assert_eq!(max_down, 1, "berth.max-unavailable=1");
    assert!(
        !exec
            .take_notices()
            .iter()
            .any(|n| matches!(n, Notice::DrainBudget { .. }))
    );
    // The node is up: its stops are waited for until they are seen, not bounded.
    assert!(
        b.log
            .iter()
            .filter(|c| matches!(c, Command::StopSlot { .. }))
            .all(|c| matches!(c, Command::StopSlot { wait_ms: None, .. })),
        "{:?}",
        b.log
    );
    // The local dataset was pre-copied, then moved by copy.
    let got = names(&b.log);
    let pre = got.iter().position(|g| g == "pre-copy:cache-1").unwrap();
    let stop = got.iter().position(|g| g == "stop-slot:cache.1").unwrap();
    assert!(pre < stop, "{got:?}");
}

#[test]
fn paused_executor_catches_up_after() {
    let mut c = world();
    let mut exec = Executor::new(Config::default());
    exec.observe(0, Observation::of(&c));
    exec.set_active(false);
    set_node(&mut c, "w1", |n| n.state = NodeState::Down);
    exec.observe(0, Observation::of(&c));
    assert!(exec.next(0).is_empty(), "no leader: nothing is done");
    exec.set_active(true);
    exec.observe(5, Observation::of(&c));
    let cmds = exec.next(5);
    assert!(
        cmds.iter().any(
            |(_, c)| matches!(c, Command::Fence { volume, .. } if volume.starts_with("files"))
        ),
        "the first step of the lost node's move: {cmds:?}"
    );
}

#[test]
fn abandoned_runs_ignore_late_outcomes() {
    let mut c = world();
    let mut exec = Executor::new(Config::default());
    exec.observe(0, Observation::of(&c));
    set_node(&mut c, "w1", |n| n.state = NodeState::Down);
    observe(&mut exec, &mut c, &mut Backend::default(), 0);
    let cmds = exec.next(0);
    exec.abandon_all(1);
    assert_eq!(exec.busy_slots().count(), 0);
    for (id, _) in cmds
        .iter()
        .filter(|(_, c)| !matches!(c, Command::SetFenceLabel { .. }))
    {
        assert!(!exec.is_in_flight(*id));
        assert!(!exec.complete(*id, Outcome::Done, 2));
    }
    assert_eq!(exec.history()[0].end, Some(RunEnd::Abandoned));
}

#[test]
fn standby_prefers_another_zone_then_fewest_copies() {
    let c = world();
    let free = StandbyFacts {
        free: true,
        copies: 0,
    };
    let mut facts = vec![free; c.nodes.len()];
    // m1 is no worker; w3 holds more copies than w4.
    facts[3].copies = 2;
    let got = pick_standby(&c, "cache", &NodeId::new("w1"), &facts);
    assert_eq!(got, Some(NodeId::new("w4")));
    facts[4].free = false;
    facts[3].free = false;
    let got = pick_standby(&c, "cache", &NodeId::new("w1"), &facts);
    assert_eq!(got, Some(NodeId::new("w2")), "same zone when nothing else");
}

/// Issue 22: a standby goes only where the service's tasks could run (its constraints, its
/// image's platforms), and its spread preferences, not a fixed label, keep it apart from the
/// primary; ties by node ID, whatever the input order.
#[test]
fn standby_follows_the_services_constraints_and_spread_preferences() {
    use crate::model::Platform;
    let nodes = vec![
        node("m1").role(Role::Manager).label("rack", "r1"),
        node("w1").label("rack", "r1").label("zone", "a"),
        node("w2")
            .label("rack", "r1")
            .label("zone", "b")
            .label("disk", "hdd"),
        node("w3")
            .label("rack", "r2")
            .label("zone", "a")
            .label("disk", "ssd"),
        node("w4")
            .label("rack", "r2")
            .label("zone", "b")
            .label("disk", "ssd"),
        node("w5")
            .label("rack", "r2")
            .label("zone", "b")
            .label("disk", "ssd"),
    ];
    let mut c = Cluster {
        nodes,
        services: vec![
            replicated("db", 1)
                .stateful("db-{slot}", "move")
                .label("berth.backend", "replicated")
                .constraint("node.role==worker")
                .constraint("node.labels.disk==ssd")
                .preference("spread=node.labels.rack"),
        ],
        tasks: vec![running("db", 1, "w3")],
        datasets: Vec::new(),
    };
    c.normalize();
    let free = StandbyFacts {
        free: true,
        copies: 0,
    };
    let mut facts = vec![free; c.nodes.len()];
    let w3 = NodeId::new("w3");
    // m1, w1 and w2 fail the constraints (w2: another zone, but an hdd); w4 and w5 are on
    // the same rack as w3 — the service spreads by rack, not zone — so the one with fewer
    // copies, then the lower ID, is taken.
    assert_eq!(pick_standby(&c, "db", &w3, &facts), Some(NodeId::new("w4")));
    facts[4].copies = 3;
    assert_eq!(pick_standby(&c, "db", &w3, &facts), Some(NodeId::new("w5")));
    // Another rack than the primary's outweighs fewer copies: w4 moved to rack r9 wins.
    c.nodes[4].labels.insert("rack".into(), "r9".into());
    assert_eq!(pick_standby(&c, "db", &w3, &facts), Some(NodeId::new("w4")));
    c.nodes[4].labels.insert("rack".into(), "r2".into());
    // The image's platform is a filter too.
    c.services[0].placement.platforms = vec![Platform {
        architecture: "arm64".into(),
        os: "linux".into(),
    }];
    c.nodes[4].platform = Platform {
        architecture: "aarch64".into(),
        os: "linux".into(),
    };
    assert_eq!(
        pick_standby(&c, "db", &w3, &facts),
        Some(NodeId::new("w4")),
        "w5 cannot run the image"
    );
    // No node fits: no standby, rather than one the service could never be promoted onto.
    facts[4].free = false;
    assert_eq!(pick_standby(&c, "db", &w3, &facts), None);
    // Constraints that do not parse place nothing.
    c.services[0].placement.constraints = vec!["node.labels.disk=ssd".into()];
    assert_eq!(pick_standby(&c, "db", &w3, &facts), None);
}

#[test]
fn stateful_only_leaves_stateless_tasks_to_swarm_and_history_is_capped() {
    let mut c = world();
    let mut exec = Executor::new(Config {
        stateful_only: true,
        history_limit: Some(1),
        ..Config::default()
    });
    exec.observe(0, Observation::of(&c));
    set_node(&mut c, "w1", |n| n.state = NodeState::Down);
    let mut b = Backend::default();
    observe(&mut exec, &mut c, &mut b, 1_000);
    settle(&mut exec, &mut c, &mut b, 1_000);
    let got = names(&b.log);
    assert!(
        got.iter().any(|g| g == "start-slot:files-1:files.1"),
        "{got:?}"
    );
    assert!(
        !got.iter().any(|g| g.contains("api.")),
        "a stateless task is Swarm's to reschedule: {got:?}"
    );
    // A second run (the node back), so the cap has something to drop.
    set_node(&mut c, "w1", |n| n.state = NodeState::Ready);
    observe(&mut exec, &mut c, &mut b, 100_000);
    settle(&mut exec, &mut c, &mut b, 100_000);
    let runs: BTreeSet<u64> = exec.history().iter().map(|h| h.run).collect();
    assert!(
        !runs.is_empty() && runs.iter().all(|r| *r >= 1),
        "the first run was dropped once a later one ended: {runs:?}"
    );
    assert!(
        exec.history()
            .iter()
            .filter(|h| h.ended_ms.is_some())
            .count()
            <= 1,
        "{:?}",
        exec.history()
    );
}

/// A grace timer restored from the journal by a new process (a monotonic clock starting
/// again near 0) waits what it had left, never less; the downtime is not counted.
#[test]
fn a_resumed_driver_keeps_each_timer_s_time_left_on_a_new_clock() {
    let mut c = world();
    let mut d = Driver::new(Config::default(), Timers::Polled, true);
    let t0 = 7_000_000; // the first process's monotonic clock
    d.observe(t0, Observation::of(&c));
    set_node(&mut c, "w1", |n| n.state = NodeState::Down);
    let mut b = Backend::default();
    let mut disk = None;
    // Run until the mongo lane waits out its 30 s grace.
    for _ in 0..20 {
        d.observe(t0, Observation::of(&c));
        let batch = d.poll(t0);
        if let Some(j) = batch.journal.clone() {
            disk = Some(j);
            d.persisted();
        }
        for job in batch.work {
            if let Job::Command(t, cmd) = job {
                let o = b.perform(&mut c, &cmd);
                d.complete(t, o, t0);
            }
        }
    }
    assert_eq!(d.wake_at(), Some(t0 + 30_000), "the grace timer");
    let batch = d.poll(t0 + 10_000);
    if let Some(j) = batch.journal {
        disk = Some(j);
    }
    // A new process, its clock at 500, 40 s of wall time later: 20 s of grace are left.
    let state: ExecutorState = serde_json::from_slice(&disk.unwrap()).unwrap();
    let mut again = Driver::new(Config::default(), Timers::Polled, true);
    again.resume(Some(state), Config::default(), 500);
    assert_eq!(again.wake_at(), Some(500 + 20_000));
    assert_eq!(again.incarnation(), 1);
    // Its history is on the executor's time, which went on from where the journal stopped.
    assert_eq!(again.executor_time(500), t0 + 10_000);
}

/// A journal written before the executor kept its clock or bounded its stops still resumes:
/// its time is its latest run's, and its stop commands wait until seen (as they were meant).
#[test]
fn a_journal_from_before_the_stop_bound_and_the_clock_resumes() {
    let mut c = world();
    let mut exec = Executor::new(Config::default());
    exec.observe(1_000, Observation::of(&c));
    set_node(&mut c, "w1", |n| n.availability = Availability::Drain);
    exec.observe(2_000, Observation::of(&c));
    let cmds = exec.next(2_000);
    assert!(!cmds.is_empty());
    let mut v = serde_json::to_value(exec.state()).unwrap();
    v.as_object_mut().unwrap().remove("clock_ms");
    v["config"].as_object_mut().unwrap().remove("stop_wait_ms");
    let old = serde_json::to_vec(&v).unwrap();
    assert!(!String::from_utf8_lossy(&old).contains("wait_ms"));
    let state: ExecutorState = serde_json::from_slice(&old).expect("an old journal decodes");
    assert_eq!(state.clock_ms, 0);
    assert_eq!(state.last_time(), 2_000, "its latest run's start");
    let mut d = Driver::new(Config::default(), Timers::Polled, true);
    d.resume(Some(state), Config::default(), 3);
    assert_eq!(d.executor_time(3), 2_000);
    let batch = d.poll(3);
    assert!(batch.journal.is_some());
    let again: Vec<Command> = batch
        .work
        .into_iter()
        .filter_map(|j| match j {
            Job::Command(_, c) => Some(c),
            Job::Timer(..) => None,
        })
        .collect();
    assert_eq!(
        again,
        cmds.into_iter().map(|(_, c)| c).collect::<Vec<_>>(),
        "handed out again"
    );
}

/// Without its journal written, no command starts; once a write succeeds, the same commands
/// are handed out, recorded as issued in what was written.
#[test]
fn a_failed_journal_write_starts_nothing_and_the_work_comes_back() {
    let mut c = world();
    let mut d = Driver::new(Config::default(), Timers::Polled, true);
    d.observe(0, Observation::of(&c));
    let first = d.poll(0);
    assert!(first.journal.is_some() && first.work.is_empty());
    d.persisted();
    assert!(
        d.poll(0).journal.is_none(),
        "nothing changed: nothing to write"
    );
    set_node(&mut c, "w1", |n| n.state = NodeState::Down);
    d.observe(10, Observation::of(&c));
    let batch = d.poll(10);
    let labels: Vec<Job> = batch.work.clone();
    assert!(!labels.is_empty() && batch.journal.is_some());
    d.not_persisted(batch);
    let batch = d.poll(11);
    assert_eq!(
        batch.work, labels,
        "the same work, once the state is written"
    );
    let written: ExecutorState = serde_json::from_slice(batch.journal.as_ref().unwrap()).unwrap();
    for job in &batch.work {
        if let Job::Command(t, _) = job {
            assert!(written.inflight[&t.id].issued);
        }
    }
    d.persisted();
}

/// Swarm's new leader (its old one died with w1) reports every node unknown until each
/// reconnects: the node-down plan finds no target and the slot waits. It is planned again as
/// soon as a node is Ready, not left pending until some other change.
#[test]
fn a_slot_without_a_target_is_planned_again_once_a_node_is_ready() {
    let mut c = world();
    let mut exec = Executor::new(Config::default());
    exec.observe(0, Observation::of(&c));
    set_node(&mut c, "w1", |n| n.state = NodeState::Down);
    for w in ["m1", "w2", "w3", "w4"] {
        set_node(&mut c, w, |n| n.state = NodeState::Unknown);
    }
    let mut b = Backend::default();
    observe(&mut exec, &mut c, &mut b, 1_000);
    settle(&mut exec, &mut c, &mut b, 1_000);
    let started = |b: &Backend| {
        b.log.iter().any(|c| {
            matches!(c, Command::StartSlot { service, node, .. }
                if service == "files" && node.as_str() != "w1")
        })
    };
    assert!(!started(&b), "no node to start on yet: {:?}", names(&b.log));
    assert!(exec.state().waiting.contains(&NodeId::new("w1")));
    // Nothing changed: nothing is planned again.
    let runs = exec.history().len();
    exec.observe(2_000, Observation::of(&c));
    settle(&mut exec, &mut c, &mut b, 2_000);
    assert_eq!(exec.history().len(), runs);
    // w2 reconnects to the new leader.
    set_node(&mut c, "w2", |n| n.state = NodeState::Ready);
    exec.observe(3_000, Observation::of(&c));
    settle(&mut exec, &mut c, &mut b, 3_000);
    assert!(started(&b), "{:?}", names(&b.log));
    assert!(
        c.tasks
            .iter()
            .any(|t| t.service_id.0 == "files" && t.node_id.as_ref().unwrap().as_str() == "w2"),
        "the slot runs on the one Ready node"
    );
    assert!(exec.state().waiting.is_empty());
}

/// A node back while its node-down run is still fencing (before the `recreate` grace began):
/// its node-back plan finds the member's slot busy and leaves it out. The grace then ends at
/// once and the return is planned again, so the member restarts where it is — not 30 s later,
/// nor never.
#[test]
fn a_node_back_before_its_grace_began_is_planned_back_once_the_lane_ends() {
    let mut c = world();
    let mut exec = Executor::new(Config::default());
    exec.observe(0, Observation::of(&c));
    set_node(&mut c, "w1", |n| n.state = NodeState::Down);
    let mut b = Backend::default();
    observe(&mut exec, &mut c, &mut b, 0);
    let out = exec.next(1_000);
    assert!(
        out.iter().any(
            |(_, c)| matches!(c, Command::Fence { volume, .. } if volume.starts_with("mongo"))
        ),
        "{out:?}"
    );
    // w1 returns, its containers gone with it, while those commands are out.
    set_node(&mut c, "w1", |n| n.state = NodeState::Ready);
    c.tasks
        .retain(|t| t.node_id.as_ref().is_none_or(|n| n.as_str() != "w1"));
    exec.observe(1_500, Observation::of(&c));
    let mut now = 2_000;
    for (id, cmd) in out {
        let o = b.perform(&mut c, &cmd);
        exec.complete(id, o, now);
    }
    for _ in 0..100 {
        let cmds = exec.next(now);
        let idle = cmds.is_empty();
        for (id, cmd) in cmds {
            let o = b.perform(&mut c, &cmd);
            now += 10;
            if exec.complete(id, o, now) {
                exec.observe(now, Observation::of(&c));
            }
        }
        if exec.wants_observation() {
            exec.observe(now, Observation::of(&c));
        } else if idle {
            match exec.wake_at() {
                Some(t) => now = now.max(t),
                None => break,
            }
        }
    }
    let start = b.log.iter().position(|c| {
        matches!(c, Command::StartSlot { service, node, .. }
            if service == "mongo" && node.as_str() == "w1")
    });
    assert!(start.is_some(), "{:?}", names(&b.log));
    assert!(
        !b.log.iter().any(|c| matches!(
            c,
            Command::Assign {
                mode: AssignMode::Recreate,
                ..
            }
        )),
        "{:?}",
        names(&b.log)
    );
    assert!(now < 30_000, "the grace was waited out: {now}");
}

/// A node holding thirty stateful slots of three services (`berth.max-unavailable=2` each)
/// dies: every slot is one lane of one wave, so each round of the backend carries all thirty
/// slots' current steps at once — the failover takes as many rounds as one slot's, not thirty
/// times that. The budget spaces out what a drain takes down; a dead node's slots are down
/// already, and holding them back would only keep them down.
#[test]
fn a_lost_node_s_thirty_slots_fail_over_side_by_side_in_one_wave() {
    use crate::model::Backend as Storage;
    let names = ["alpha", "beta", "gamma"];
    let mut services = Vec::new();
    let mut tasks = Vec::new();
    let mut datasets = Vec::new();
    for name in names {
        services.push(
            replicated(name, 10)
                .stateful(&format!("{name}-{{slot}}"), "move")
                .label("berth.backend", "shared")
                .label("berth.max-unavailable", "2")
                // Ten slots of a service on one node, as many on each node that remains.
                .label("berth.anti-affinity", "false")
                .constraint("node.role==worker"),
        );
        for slot in 1..=10 {
            tasks.push(running(name, slot, "w1"));
            datasets.push(Dataset {
                name: format!("{name}-{slot}"),
                service: name.into(),
                slot,
                primary: Some(NodeId::new("w1")),
                epoch: 1,
                backend: Storage::Shared,
                ..Dataset::default()
            });
        }
    }
    let mut c = Cluster {
        nodes: vec![
            node("m1").role(Role::Manager),
            node("w1"),
            node("w2"),
            node("w3"),
        ],
        services,
        tasks,
        datasets,
    };
    let plan = crate::failover::plan_failover(&c, &Event::NodeDown(NodeId::new("w1"))).unwrap();
    assert_eq!(plan.waves(), 1, "{:?}", plan.steps);
    let mut exec = Executor::new(Config::default());
    exec.observe(0, Observation::of(&c));
    set_node(&mut c, "w1", |n| n.state = NodeState::Down);
    let mut b = Backend::default();
    observe(&mut exec, &mut c, &mut b, 0);
    // The backend performs a round's commands together and answers them together.
    let (mut now, mut rounds) = (0, 0);
    let mut widest: BTreeMap<&'static str, usize> = BTreeMap::new();
    loop {
        let cmds = exec.next(now);
        if cmds.is_empty() {
            match exec.wake_at() {
                Some(t) if t > now => {
                    now = t;
                    continue;
                }
                _ => break,
            }
        }
        rounds += 1;
        assert!(rounds < 50, "did not settle");
        let mut kinds: BTreeMap<&'static str, usize> = BTreeMap::new();
        let mut outcomes = Vec::new();
        for (id, cmd) in cmds {
            let kind = match cmd {
                Command::Fence { .. } => "fence",
                Command::StopSlot { .. } => "stop",
                Command::Assign { .. } => "assign",
                Command::StartSlot { .. } => "start",
                _ => "other",
            };
            *kinds.entry(kind).or_default() += 1;
            outcomes.push((id, b.perform(&mut c, &cmd)));
        }
        for (k, n) in kinds {
            let w = widest.entry(k).or_default();
            *w = (*w).max(n);
        }
        now += 100;
        for (id, o) in outcomes {
            if exec.complete(id, o, now) || exec.wants_observation() {
                exec.observe(now, Observation::of(&c));
            }
        }
    }
    for kind in ["fence", "stop", "assign", "start"] {
        assert_eq!(widest.get(kind), Some(&30), "{kind}: {widest:?}");
    }
    assert!(rounds <= 6, "{rounds} rounds for thirty slots");
    for name in names {
        for slot in 1..=10u64 {
            let t = c
                .tasks
                .iter()
                .find(|t| t.service_id.0 == name && t.slot == Some(slot))
                .unwrap();
            assert_ne!(t.node_id.as_ref().map(NodeId::as_str), Some("w1"));
            assert_eq!(c.dataset(&format!("{name}-{slot}")).unwrap().epoch, 2);
        }
    }
}
