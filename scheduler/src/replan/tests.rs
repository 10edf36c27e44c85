use super::*;
use crate::model::Cluster;
use crate::schedule::plan;
use crate::testing::*;

fn cluster() -> Cluster {
    Cluster {
        nodes: vec![node("a"), node("b"), node("c").label("zone", "x")],
        services: vec![
            replicated("web", 4),
            replicated("db", 2).stateful("db-{slot}", "move"),
        ],
        tasks: vec![
            running("web", 1, "a"),
            running("web", 2, "b"),
            running("db", 1, "b"),
        ],
        ..Cluster::default()
    }
}

#[test]
fn each_delta_gives_the_plan_from_scratch() {
    let mut r = Replanner::new(cluster()).unwrap();
    assert_eq!(r.plan(), plan(r.cluster()).unwrap());
    let deltas = [
        Delta::NodeDown(NodeId::new("b")),
        Delta::ServiceScaled {
            service: "web".into(),
            replicas: 6,
        },
        Delta::NodeBack(NodeId::new("b")),
        Delta::TaskFailed("web.1".into()),
        Delta::TaskStarted(running("db", 2, "c")),
        Delta::ServiceScaled {
            service: "web".into(),
            replicas: 1,
        },
    ];
    for d in deltas {
        r.apply(d.clone()).unwrap();
        assert_eq!(r.plan(), plan(r.cluster()).unwrap(), "after {d:?}");
    }
}

#[test]
fn a_node_down_moves_its_slots_and_names_what_changed() {
    let mut r = Replanner::new(cluster()).unwrap();
    let before: Vec<_> = r
        .new_placements()
        .iter()
        .map(|p| (p.service.clone(), p.slot))
        .collect();
    assert_eq!(
        before,
        [
            ("db".into(), Some(2)),
            ("web".into(), Some(3)),
            ("web".into(), Some(4))
        ],
        "by service name, then slot"
    );
    let changed = r.apply(Delta::NodeDown(NodeId::new("b"))).unwrap();
    assert_eq!(changed.services, ["db", "web"]);
    let web2 = r
        .new_placements()
        .into_iter()
        .find(|p| p.service == "web" && p.slot == Some(2))
        .unwrap();
    assert_ne!(web2.node.as_str(), "b");
    // db 1's data is on b (local backend): it waits for the node.
    assert!(
        r.pending()
            .iter()
            .any(|p| p.service == "db" && p.slot == Some(1))
    );
}

#[test]
fn unknown_names_are_errors_and_change_nothing() {
    let mut r = Replanner::new(cluster()).unwrap();
    let before = r.plan();
    assert_eq!(
        r.apply(Delta::NodeDown(NodeId::new("zz"))),
        Err(ReplanError::UnknownNode(NodeId::new("zz")))
    );
    assert_eq!(
        r.apply(Delta::TaskFailed("nope".into())),
        Err(ReplanError::UnknownTask("nope".into()))
    );
    assert_eq!(r.plan(), before);
}
