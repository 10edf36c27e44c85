use super::*;
use crate::model::{Cluster, Dataset, NodeState, Role};
use crate::testing::*;

fn actions(plan: &FailoverPlan) -> Vec<(u32, Option<u64>, String)> {
    plan.steps
        .iter()
        .map(|s| {
            let name = serde_json::to_value(&s.action).unwrap()["action"]
                .as_str()
                .unwrap()
                .to_string();
            (
                s.wave,
                s.slot,
                format!("{}:{name}", s.service.as_deref().unwrap_or("-")),
            )
        })
        .collect()
}

/// Three workers in two zones, a Mongo replica set (recreate), an API depending on it, a
/// shared-storage service (move) and a local-storage one (move).
fn seed() -> Cluster {
    let nodes = vec![
        node("m1").role(Role::Manager),
        node("w1").label("zone", "a"),
        node("w2").label("zone", "a"),
        node("w3").label("zone", "b"),
        node("w4").label("zone", "b"),
    ];
    let services = vec![
        replicated("mongo", 3)
            .stateful("mongo-{slot}", "recreate")
            .constraint("node.role==worker"),
        replicated("api", 2)
            .constraint("node.role==worker")
            .label("berth.depends-on", "mongo"),
        replicated("files", 1)
            .stateful("files-{slot}", "move")
            .label("berth.backend", "shared")
            .constraint("node.role==worker"),
        replicated("cache", 1)
            .stateful("cache-{slot}", "move")
            .constraint("node.role==worker"),
        replicated("ledger", 1)
            .stateful("ledger-{slot}", "manual")
            .constraint("node.role==worker"),
    ];
    let tasks = vec![
        running("mongo", 1, "w1"),
        running("mongo", 2, "w2"),
        running("mongo", 3, "w3"),
        running("api", 1, "w1"),
        running("api", 2, "w2"),
        running("files", 1, "w1"),
        running("cache", 1, "w1"),
        running("ledger", 1, "w1"),
    ];
    let datasets = vec![Dataset {
        name: "mongo-1".into(),
        service: "mongo".into(),
        slot: 1,
        primary: Some(NodeId::new("w1")),
        epoch: 7,
        ..Dataset::default()
    }];
    Cluster {
        nodes,
        services,
        tasks,
        datasets,
    }
}

#[test]
fn node_down_plan_per_mode() {
    let plan = plan_failover(&seed(), &Event::NodeDown(NodeId::new("w1"))).unwrap();
    let got = actions(&plan);
    let want: Vec<(u32, Option<u64>, String)> = [
        // Dependencies first: mongo, cache, files, ledger (depth 0) before api (depth 1).
        (0, 1, "cache:wait-for-node"),
        // The old task stops before its data moves (on a node Swarm still reaches, it would
        // otherwise keep writing), while the fence would wait for its lease anyway.
        (0, 1, "files:fence"),
        (0, 1, "files:stop-task"),
        (0, 1, "files:choose-target"),
        (0, 1, "files:move-dataset"),
        (0, 1, "files:start-task"),
        (0, 1, "ledger:wait-for-operator"),
        (0, 1, "mongo:fence"),
        (0, 1, "mongo:wait-grace"),
        (0, 1, "mongo:choose-target"),
        (0, 1, "mongo:stop-task"),
        (0, 1, "mongo:recreate-dataset"),
        (0, 1, "mongo:start-task"),
        (1, 1, "api:choose-target"),
        (1, 1, "api:start-task"),
    ]
    .iter()
    .map(|(w, s, a)| (*w, Some(*s), a.to_string()))
    .collect();
    assert_eq!(got, want);
    // Mongo's fresh member lands on the only worker without a member, with the epoch bumped.
    let recreate = plan.steps.iter().find_map(|s| match &s.action {
        Action::RecreateDataset { node, epoch, .. } => Some((node.to_string(), *epoch)),
        _ => None,
    });
    assert_eq!(recreate, Some(("w4".to_string(), 8)));
    assert_eq!(plan.waves(), 2);
}

#[test]
fn drain_honours_max_unavailable() {
    let mut c = seed();
    c.services[1] = replicated("api", 3)
        .constraint("node.role==worker")
        .label("berth.depends-on", "mongo")
        .label("berth.max-unavailable", "2");
    c.tasks.push(running("api", 3, "w1"));
    c.tasks
        .retain(|t| t.slot != Some(2) || t.service_id.0 != "api");
    c.tasks.push(running("api", 2, "w1"));
    let plan = plan_failover(&c, &Event::NodeDrained(NodeId::new("w1"))).unwrap();
    let api_waves: Vec<u32> = plan
        .steps
        .iter()
        .filter(|s| s.service.as_deref() == Some("api"))
        .map(|s| s.wave)
        .collect();
    // Three api slots on w1, two at a time, after the depth-0 wave.
    assert_eq!(
        api_waves
            .iter()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        [1, 2].into()
    );
    let local_move = plan.steps.iter().find_map(|s| match &s.action {
        Action::MoveDataset { dataset, copy, .. } if dataset == "cache-1" => Some(*copy),
        _ => None,
    });
    assert_eq!(
        local_move,
        Some(true),
        "a drained node is alive: local data is copied off it"
    );
    assert!(
        plan.steps
            .iter()
            .any(|s| matches!(&s.action, Action::StopTask { node } if node.as_str() == "w1"))
    );
}

#[test]
fn node_back_revokes_stale_copies_and_restarts_waiting_slots() {
    let mut c = seed();
    // w1 went down; mongo-1 was recreated on w4 at epoch 8; cache-1 waited for w1.
    c.nodes[1].state = NodeState::Down;
    c.nodes[1]
        .labels
        .insert("berth.fenced".into(), "true".into());
    c.datasets[0].primary = Some(NodeId::new("w4"));
    c.datasets[0].epoch = 8;
    c.tasks.push(running("mongo", 1, "w4"));
    // Swarm shut down the tasks it saw on the dead node.
    for t in c
        .tasks
        .iter_mut()
        .filter(|t| t.node_id.as_ref().is_some_and(|n| n.as_str() == "w1"))
    {
        if t.service_id.0 == "cache" {
            t.desired_state = crate::model::TaskState::Shutdown;
        }
    }
    let plan = plan_failover(&c, &Event::NodeBack(NodeId::new("w1"))).unwrap();
    let got = actions(&plan);
    assert_eq!(got[0], (0, None, "-:unfence".to_string()));
    assert!(
        got.contains(&(0, Some(1), "mongo:revoke-stale".to_string())),
        "{got:?}"
    );
    assert!(
        got.contains(&(1, Some(1), "cache:start-task".to_string())),
        "{got:?}"
    );
    let cache_node = plan
        .steps
        .iter()
        .find_map(|s| match (&s.service, &s.action) {
            (Some(n), Action::StartTask { node }) if n == "cache" => Some(node.to_string()),
            _ => None,
        });
    assert_eq!(
        cache_node.as_deref(),
        Some("w1"),
        "the slot restarts where its data is"
    );
}

#[test]
fn errors() {
    assert_eq!(
        plan_failover(&seed(), &Event::NodeDown(NodeId::new("nope")))
            .unwrap_err()
            .to_string(),
        "event names unknown node `nope`"
    );
    assert!(Event::parse("node-gone=w1").is_err());
    assert_eq!(
        Event::parse("node-down=w1").unwrap(),
        Event::NodeDown(NodeId::new("w1"))
    );
    let mut c = seed();
    c.services[0] = c.services[0].clone().label("berth.depends-on", "api");
    assert!(
        plan_failover(&c, &Event::NodeDown(NodeId::new("w1")))
            .unwrap_err()
            .to_string()
            .contains("cycle")
    );
}

#[test]
fn deterministic_under_permutation() {
    let a = plan_failover(&seed(), &Event::NodeDown(NodeId::new("w2"))).unwrap();
    let mut c = seed();
    c.nodes.reverse();
    c.tasks.reverse();
    c.services.reverse();
    assert_eq!(
        a,
        plan_failover(&c, &Event::NodeDown(NodeId::new("w2"))).unwrap()
    );
}

#[test]
fn node_back_keeps_dataset_steps_for_slots_of_other_lost_nodes() {
    // w1 and w2 are both down; w2 comes back. Mongo's member on w1 is recreated on w2 — with
    // its fence and a fresh dataset, not as a bare start.
    let mut c = seed();
    c.nodes[1].state = NodeState::Down;
    c.nodes[2].state = NodeState::Down;
    c.tasks
        .retain(|t| t.node_id.as_ref().is_none_or(|n| n.as_str() != "w2"));
    let plan = plan_failover(&c, &Event::NodeBack(NodeId::new("w2"))).unwrap();
    let mongo: Vec<String> = actions(&plan)
        .into_iter()
        .filter(|(_, s, a)| *s == Some(1) && a.starts_with("mongo:"))
        .map(|(_, _, a)| a)
        .collect();
    assert_eq!(
        mongo,
        [
            "mongo:fence",
            "mongo:choose-target",
            "mongo:stop-task",
            "mongo:recreate-dataset",
            "mongo:start-task"
        ]
    );
    let stop = plan.steps.iter().find_map(|s| match &s.action {
        Action::StopTask { node } if s.service.as_deref() == Some("mongo") => Some(node.as_str()),
        _ => None,
    });
    assert_eq!(stop, Some("w1"), "the old task, on the lost node");
    let epoch = plan.steps.iter().find_map(|s| match &s.action {
        Action::Fence {
            dataset,
            node,
            epoch,
        } if dataset == "mongo-1" => Some((node.to_string(), *epoch)),
        _ => None,
    });
    assert_eq!(epoch, Some(("w1".to_string(), 8)));
}

#[test]
fn node_back_assigns_a_fenced_members_volume_again_before_starting_it() {
    // w1 went down and came back: its node-down plan fenced mongo-1 (epoch 7 → 8) and found
    // no target (or kept the member through its grace), so nothing was assigned at epoch 8.
    // The member's task ended with the node. A bare start would mount at a fenced epoch, which
    // the agent refuses: the plan re-assigns the volume to w1 at 8 first.
    let mut c = seed();
    c.datasets[0].fenced = true;
    c.tasks
        .retain(|t| !(t.service_id.0 == "mongo" && t.slot == Some(1)));
    let plan = plan_failover(&c, &Event::NodeBack(NodeId::new("w1"))).unwrap();
    let mongo: Vec<&Action> = plan
        .steps
        .iter()
        .filter(|s| s.service.as_deref() == Some("mongo") && s.slot == Some(1))
        .map(|s| &s.action)
        .collect();
    let w1 = NodeId::new("w1");
    assert!(
        matches!(
            mongo.as_slice(),
            [
                Action::Fence { dataset, node, epoch: 8 },
                Action::ChooseTarget { node: target, .. },
                Action::MoveDataset { from, to, epoch: 8, copy: false, .. },
                Action::StartTask { node: start },
            ] if dataset == "mongo-1" && *node == w1 && *target == w1 && *from == w1
                && *to == w1 && *start == w1
        ),
        "{mongo:#?}"
    );

    // Not fenced: the slot only restarts where its data is, at the current epoch.
    c.datasets[0].fenced = false;
    let plan = plan_failover(&c, &Event::NodeBack(NodeId::new("w1"))).unwrap();
    let mongo: Vec<String> = actions(&plan)
        .into_iter()
        .filter(|(_, s, a)| *s == Some(1) && a.starts_with("mongo:"))
        .map(|(_, _, a)| a)
        .collect();
    assert_eq!(mongo, ["mongo:choose-target", "mongo:start-task"]);
}
