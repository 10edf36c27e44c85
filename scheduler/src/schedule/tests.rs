use super::*;
use crate::model::{Availability, Cluster, Dataset, Mode, NodeState, Role};
use crate::testing::*;

fn nodes_of(plan: &Plan, service: &str) -> Vec<String> {
    plan.placements
        .iter()
        .filter(|p| p.service == service)
        .map(|p| p.node.to_string())
        .collect()
}

fn cluster(nodes: Vec<crate::model::Node>, services: Vec<crate::model::Service>) -> Cluster {
    Cluster {
        nodes,
        services,
        ..Cluster::default()
    }
}

#[test]
fn empty_cluster_round_robins_like_swarm() {
    let c = cluster(
        vec![node("a"), node("b"), node("c")],
        vec![replicated("web", 5)],
    );
    let plan = plan(&c).unwrap();
    assert_eq!(nodes_of(&plan, "web"), ["a", "b", "c", "a", "b"]);
    assert!(plan.all_placed());
    assert!(plan.placements.iter().all(|p| p.new));
}

#[test]
fn fewer_service_tasks_then_fewer_tasks() {
    let mut c = cluster(
        vec![node("a"), node("b"), node("c")],
        vec![replicated("web", 2), replicated("db", 3)],
    );
    // a runs 3 db tasks, b runs none, c runs none: web goes to b and c.
    c.tasks = vec![
        running("db", 1, "a"),
        running("db", 2, "a"),
        running("db", 3, "a"),
    ];
    let plan = plan(&c).unwrap();
    assert_eq!(nodes_of(&plan, "web"), ["b", "c"]);
    assert_eq!(nodes_of(&plan, "db"), ["a", "a", "a"]);
    assert!(
        plan.placements
            .iter()
            .filter(|p| p.service == "db")
            .all(|p| !p.new)
    );
}

#[test]
fn pending_reasons_are_counted_like_kube() {
    let nodes = vec![
        node("a").label("zone", "a").memory_gib(1),
        node("b").label("zone", "a").memory_gib(1),
        node("c").label("zone", "a").memory_gib(1),
        node("d").label("zone", "c"),
        node("e").label("zone", "c"),
    ];
    let svc = replicated("db", 1)
        .reserve_memory_gib(2)
        .constraint("node.labels.zone==b");
    let plan = plan(&cluster(nodes, vec![svc])).unwrap();
    assert_eq!(plan.pending.len(), 1);
    assert_eq!(
        plan.pending[0].message(),
        "0/5 nodes available: 3 insufficient memory, 2 did not match constraint node.labels.zone==b"
    );
}

#[test]
fn resources_run_out_mid_batch() {
    let nodes = vec![node("a").memory_gib(4), node("b").memory_gib(2)];
    let svc = replicated("db", 4).reserve_memory_gib(2);
    let plan = plan(&cluster(nodes, vec![svc])).unwrap();
    assert_eq!(nodes_of(&plan, "db"), ["a", "b", "a"]);
    assert_eq!(plan.pending.len(), 1);
    assert_eq!(plan.pending[0].slot, Some(4));
    assert_eq!(
        plan.pending[0].message(),
        "0/2 nodes available: 2 insufficient memory"
    );
}

#[test]
fn down_drained_and_paused_nodes() {
    let nodes = vec![
        node("a").state(NodeState::Down),
        node("b").availability(Availability::Drain),
        node("c").availability(Availability::Pause),
        node("d"),
    ];
    let mut c = cluster(nodes, vec![replicated("web", 4)]);
    c.tasks = vec![
        running("web", 1, "a"),
        running("web", 2, "b"),
        running("web", 3, "c"),
    ];
    let plan = plan(&c).unwrap();
    // The paused node keeps its task; the others move to the only node taking new ones.
    let got: Vec<(Option<u64>, String, bool)> = plan
        .placements
        .iter()
        .map(|p| (p.slot, p.node.to_string(), p.new))
        .collect();
    assert_eq!(
        got,
        [
            (Some(1), "d".into(), true),
            (Some(2), "d".into(), true),
            (Some(3), "c".into(), false),
            (Some(4), "d".into(), true)
        ]
    );
}

#[test]
fn placement_preferences_split_branches_evenly() {
    let nodes = vec![
        node("a1").label("zone", "a"),
        node("a2").label("zone", "a"),
        node("a3").label("zone", "a"),
        node("b1").label("zone", "b"),
        node("x"), // no zone label: the "" branch
    ];
    let svc = replicated("web", 6).preference("spread=node.labels.zone");
    let plan = plan(&cluster(nodes, vec![svc])).unwrap();
    let ns = nodes_of(&plan, "web");
    let per_zone = |z: &str| ns.iter().filter(|n| n.starts_with(z)).count();
    assert_eq!((per_zone("a"), per_zone("b"), per_zone("x")), (2, 2, 2));
}

#[test]
fn preference_overflows_but_topology_spread_holds_the_skew() {
    let nodes = vec![
        node("a1").label("zone", "a"),
        node("a2").label("zone", "a"),
        node("a3").label("zone", "a"),
        node("b1").label("zone", "b"),
    ];
    // Soft: zone b has one node and anti-affinity lets it hold one replica; the rest overflow.
    let soft = replicated("soft", 4)
        .preference("spread=node.labels.zone")
        .label("berth.anti-affinity", "true");
    let plan_soft = plan(&cluster(nodes.clone(), vec![soft])).unwrap();
    assert!(plan_soft.all_placed());
    // Hard: after a=1,b=1 then a=2 (skew 1), a third in zone a would make the skew 2.
    let hard = replicated("hard", 4)
        .label("berth.topology-spread", "node.labels.zone:1")
        .label("berth.anti-affinity", "true");
    let plan_hard = plan(&cluster(nodes, vec![hard])).unwrap();
    assert_eq!(plan_hard.new_placements().count(), 2 + 1);
    let msg = plan_hard.pending[0].message();
    assert!(
        msg.contains("would exceed max skew 1 on node.labels.zone"),
        "{msg}"
    );
    assert!(
        msg.contains("already runs a replica (anti-affinity)"),
        "{msg}"
    );
}

#[test]
fn mongo_replica_set_over_two_zones() {
    let nodes = vec![
        node("m1").role(Role::Manager),
        node("w1").label("zone", "a"),
        node("w2").label("zone", "a"),
        node("w3").label("zone", "b"),
    ];
    let mongo = replicated("mongo", 3)
        .stateful("mongo-data-{slot}", "recreate")
        .constraint("node.role==worker")
        .label("berth.topology-spread", "node.labels.zone:1");
    let plan = plan(&cluster(nodes, vec![mongo])).unwrap();
    assert!(plan.all_placed(), "{:?}", plan.pending);
    let mut ns = nodes_of(&plan, "mongo");
    ns.sort();
    assert_eq!(
        ns,
        ["w1", "w2", "w3"],
        "anti-affinity: one member per worker"
    );
    assert_eq!(plan.datasets.len(), 3);
    assert!(
        plan.datasets
            .iter()
            .all(|d| d.action == DatasetAction::Create && d.epoch == 1)
    );
}

#[test]
fn stateful_slot_follows_its_dataset_or_waits() {
    let nodes = vec![node("w1"), node("w2").state(NodeState::Down), node("w3")];
    let db = |mode| replicated("db", 2).stateful("db-{slot}", mode);
    let datasets = vec![
        Dataset {
            name: "db-1".into(),
            service: "db".into(),
            slot: 1,
            primary: Some(NodeId::new("w3")),
            epoch: 4,
            ..Dataset::default()
        },
        Dataset {
            name: "db-2".into(),
            service: "db".into(),
            slot: 2,
            primary: Some(NodeId::new("w2")),
            epoch: 2,
            ..Dataset::default()
        },
    ];
    let with = |mode| Cluster {
        nodes: nodes.clone(),
        services: vec![db(mode)],
        tasks: vec![],
        datasets: datasets.clone(),
    };

    // Slot 1 restarts where its data is (w3), although w1 is emptier.
    let manual = plan(&with("manual")).unwrap();
    assert_eq!(nodes_of(&manual, "db"), ["w3"]);
    assert_eq!(manual.datasets[0].action, DatasetAction::Keep);
    // Slot 2's node is down: manual waits for an operator.
    assert!(manual.pending[0].unresolvable);
    assert!(
        manual.pending[0]
            .message()
            .contains("waiting for an operator"),
        "{}",
        manual.pending[0].message()
    );

    // move on local storage: the data cannot leave a dead node.
    let local = plan(&with("move")).unwrap();
    assert!(
        local.pending[0]
            .message()
            .contains("(local backend): waiting for the node")
    );

    // recreate: a fresh member on the free worker, epoch bumped, old node named.
    let recreate = plan(&with("recreate")).unwrap();
    assert!(recreate.all_placed());
    let d2 = recreate
        .datasets
        .iter()
        .find(|d| d.dataset == "db-2")
        .unwrap();
    assert_eq!((d2.node.as_str(), d2.epoch), ("w1", 3));
    assert_eq!(
        d2.action,
        DatasetAction::Recreate {
            lost: NodeId::new("w2")
        }
    );
}

#[test]
fn global_services_get_one_task_per_member_node() {
    let nodes = vec![
        node("a"),
        node("b").memory_gib(1),
        node("c").role(Role::Manager),
        node("d").state(NodeState::Down),
    ];
    let mut mon = replicated("mon", 0)
        .constraint("node.role==worker")
        .reserve_memory_gib(2);
    mon.mode = Mode::Global;
    let plan = plan(&cluster(nodes, vec![mon])).unwrap();
    let got: Vec<(Option<u64>, String)> = plan
        .placements
        .iter()
        .map(|p| (p.slot, p.node.to_string()))
        .collect();
    assert_eq!(got, [(None, "a".to_string())]);
    assert_eq!(plan.pending.len(), 1);
    assert_eq!(plan.pending[0].node.as_ref().map(|n| n.as_str()), Some("b"));
    assert_eq!(
        plan.pending[0].message(),
        "0/1 nodes available: 1 insufficient memory"
    );
}

#[test]
fn dependencies_are_placed_first() {
    // api depends on db; both want the only node with room for one.
    let nodes = vec![node("a").memory_gib(2)];
    let api = replicated("api", 1)
        .reserve_memory_gib(2)
        .label("berth.depends-on", "db");
    let db = replicated("db", 1).reserve_memory_gib(2);
    let plan = plan(&cluster(nodes, vec![api, db])).unwrap();
    assert_eq!(nodes_of(&plan, "db"), ["a"]);
    assert_eq!(plan.pending[0].service, "api");
}

#[test]
fn bad_input_is_a_clear_error() {
    let bad_constraint = cluster(
        vec![node("a")],
        vec![replicated("x", 1).constraint("node.labels.zone=a")],
    );
    assert_eq!(
        plan(&bad_constraint).unwrap_err().to_string(),
        "service `x`: constraint `node.labels.zone=a`: expected one operator from ==, !="
    );
    let mut unknown_node = cluster(vec![node("a")], vec![replicated("x", 1)]);
    unknown_node.tasks = vec![running("x", 1, "ghost")];
    assert_eq!(
        plan(&unknown_node).unwrap_err().to_string(),
        "task `x.1`: unknown node `ghost`"
    );
    let cycle = cluster(
        vec![node("a")],
        vec![
            replicated("x", 1).label("berth.depends-on", "y"),
            replicated("y", 1).label("berth.depends-on", "x"),
        ],
    );
    assert_eq!(
        plan(&cycle).unwrap_err().to_string(),
        "berth.depends-on forms a cycle: x -> y -> x"
    );
    let dup = cluster(vec![node("a"), node("a")], vec![]);
    assert_eq!(plan(&dup).unwrap_err().to_string(), "duplicate node id `a`");
}

#[test]
fn binpack_and_least_allocated() {
    let nodes = vec![node("a"), node("b")];
    let mut c = cluster(
        nodes,
        vec![
            replicated("filler", 1).reserve_memory_gib(4),
            replicated("x", 2).reserve_memory_gib(1),
        ],
    );
    c.tasks = vec![running("filler", 1, "b")];
    let packed = plan(&Cluster {
        services: vec![
            c.services[0].clone(),
            c.services[1].clone().label("berth.strategy", "binpack"),
        ],
        ..c.clone()
    })
    .unwrap();
    assert_eq!(nodes_of(&packed, "x"), ["b", "b"]);
    let spread = plan(&Cluster {
        services: vec![
            c.services[0].clone(),
            c.services[1]
                .clone()
                .label("berth.strategy", "least-allocated"),
        ],
        ..c
    })
    .unwrap();
    assert_eq!(nodes_of(&spread, "x"), ["a", "a"]);
}

#[test]
fn input_order_does_not_matter() {
    let mut c = synthetic(Shape {
        nodes: 30,
        tasks: 50,
        constraint: true,
        preference: true,
    });
    c.services
        .push(replicated("other", 7).preference("spread=node.labels.group"));
    let a = plan(&c).unwrap();
    c.nodes.reverse();
    c.services.reverse();
    let b = plan(&c).unwrap();
    assert_eq!(a, b);
}
