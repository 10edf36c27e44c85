use super::*;
use crate::model::{Dataset, NodeState, Task};
use crate::testing::*;

fn ds(name: &str, service: &str, slot: u64, primary: &str, backend: Backend) -> Dataset {
    Dataset {
        name: name.into(),
        service: service.into(),
        slot,
        primary: Some(NodeId::new(primary)),
        epoch: 2,
        backend,
        size_bytes: 10 << 30,
        standby: None,
        fenced: false,
    }
}

/// A stateless task, for a node's load.
fn filler(service: &str, slot: u64, node: &str) -> Task {
    running(service, slot, node)
}

/// Carries a plan out on the input: each moved slot's task and dataset primary on its target.
fn apply(c: &Cluster, plan: &RebalancePlan) -> Cluster {
    let mut c = c.clone();
    for m in &plan.moves {
        let svc = c.service_by_name(&m.service).unwrap().id.clone();
        let t = c
            .tasks
            .iter_mut()
            .find(|t| t.service_id == svc && t.slot == Some(m.slot) && t.is_active())
            .unwrap();
        t.node_id = Some(m.to.clone());
        if let Some(d) = c.datasets.iter_mut().find(|d| d.name == m.dataset) {
            d.primary = Some(m.to.clone());
            d.epoch += 1;
            if d.standby.as_ref() == Some(&m.to) {
                d.standby = Some(m.from.clone());
            }
        }
    }
    c
}

fn summary(plan: &RebalancePlan) -> Vec<(String, u64, String, String)> {
    plan.moves
        .iter()
        .map(|m| {
            (
                m.service.clone(),
                m.slot,
                m.from.to_string(),
                m.to.to_string(),
            )
        })
        .collect()
}

/// Three zones, db spread one slot per zone (max skew 1). c1 died, slot 3 failed over to a2
/// in zone a (next to slot 1), and c1 is back.
fn node_back() -> Cluster {
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
                .label("berth.topology-spread", "node.labels.zone:1"),
            replicated("web", 2),
        ],
        tasks: vec![
            running("db", 1, "a1"),
            running("db", 2, "b1"),
            running("db", 3, "a2"),
            filler("web", 1, "a2"),
            filler("web", 2, "b1"),
        ],
        datasets: vec![
            ds("db-1", "db", 1, "a1", Backend::Local),
            ds("db-2", "db", 2, "b1", Backend::Local),
            ds("db-3", "db", 3, "a2", Backend::Local),
        ],
    }
}

#[test]
fn a_node_back_after_a_failover_takes_its_slot_back() {
    let c = node_back();
    let plan = plan_rebalance(&c, &Budget::default()).unwrap();
    assert_eq!(summary(&plan), [("db".into(), 3, "a2".into(), "c1".into())]);
    let m = &plan.moves[0];
    assert_eq!(m.mode, MoveMode::PreCopy);
    assert_eq!(m.bytes, 10 << 30);
    assert_eq!((m.before.skew_excess, m.after.skew_excess), (1, 0));
    assert_eq!(
        m.reason,
        "restores the topology spread on node.labels.zone (max skew 1): \
         node.labels.zone=a holds 2 of db's tasks, node.labels.zone=c holds 0"
    );
    assert_eq!(plan.copy_secs, (10u64 << 30).div_ceil(100 << 20));
    // Carried out, the cluster is balanced: the next plan proposes nothing.
    let again = plan_rebalance(&apply(&c, &plan), &Budget::default()).unwrap();
    assert!(again.is_balanced(), "{again:?}");
}

#[test]
fn a_balanced_cluster_proposes_nothing() {
    let mut c = node_back();
    c.tasks[2] = running("db", 3, "c1");
    c.datasets[2].primary = Some(NodeId::new("c1"));
    let plan = plan_rebalance(&c, &Budget::default()).unwrap();
    assert_eq!(plan, RebalancePlan::default());
}

/// Six nodes full of one service's slots, three empty nodes added: the load evens out, never
/// more than the service's max-unavailable per wave, and planning again proposes nothing.
fn added_nodes(max_unavailable: &str) -> Cluster {
    let mut nodes: Vec<_> = (1..=6).map(|i| node(&format!("n{i}"))).collect();
    nodes.extend((7..=9).map(|i| node(&format!("n{i}"))));
    let mut tasks = Vec::new();
    for i in 1..=6 {
        tasks.push(running("db", i, &format!("n{i}")));
        for k in 0..3 {
            tasks.push(filler("web", (i - 1) * 3 + k + 1, &format!("n{i}")));
        }
    }
    Cluster {
        nodes,
        services: vec![
            replicated("db", 6)
                .stateful("db-{slot}", "move")
                .label("berth.max-unavailable", max_unavailable),
            replicated("web", 18),
        ],
        tasks,
        datasets: Vec::new(),
    }
}

#[test]
fn added_nodes_take_slots_within_the_budget() {
    let c = added_nodes("1");
    let plan = plan_rebalance(&c, &Budget::default()).unwrap();
    // Each move leaves 3 tasks behind and lands on an empty node (a gain of 3 ≥ margin 2);
    // once the three new nodes hold one slot each, replica anti-affinity leaves the other
    // slots only the nodes just emptied, as busy as their own.
    let targets: Vec<String> = plan.moves.iter().map(|m| m.to.to_string()).collect();
    assert_eq!(targets, ["n7", "n8", "n9"], "{plan:#?}");
    let waves: Vec<u32> = plan.moves.iter().map(|m| m.wave).collect();
    assert_eq!(waves, [0, 1, 2], "max-unavailable 1: one db slot at a time");
    assert!(
        plan.moves
            .iter()
            .all(|m| m.reason.starts_with("evens out the load"))
    );
    assert_eq!(plan.moves[0].before.load, 3);
    assert_eq!(plan.moves[0].after.load, 0);
    assert!(plan.held.is_empty(), "{:?}", plan.held);

    let wide = plan_rebalance(&added_nodes("2"), &Budget::default()).unwrap();
    let waves: Vec<u32> = wide.moves.iter().map(|m| m.wave).collect();
    assert_eq!(
        waves,
        [0, 0, 1],
        "two per wave: max-unavailable 2, max in flight 2"
    );

    let after = apply(&c, &plan);
    assert!(
        plan_rebalance(&after, &Budget::default())
            .unwrap()
            .is_balanced()
    );
}

#[test]
fn the_margin_holds_back_small_gains() {
    // n1 runs the slot and one other task, n2 nothing: a gain of 1 task.
    let c = Cluster {
        nodes: vec![node("n1"), node("n2")],
        services: vec![
            replicated("db", 1).stateful("db-{slot}", "move"),
            replicated("web", 1),
        ],
        tasks: vec![running("db", 1, "n1"), filler("web", 1, "n1")],
        datasets: Vec::new(),
    };
    let plan = plan_rebalance(&c, &Budget::default()).unwrap();
    assert!(plan.moves.is_empty());
    assert_eq!(plan.held.len(), 1);
    assert_eq!(plan.held[0].kind, HoldKind::Margin);
    assert!(
        plan.held[0]
            .reason
            .ends_with("a gain of 1 is below the margin of 2")
    );
    let eager = Budget {
        margin: 1,
        ..Budget::default()
    };
    let plan = plan_rebalance(&c, &eager).unwrap();
    assert_eq!(summary(&plan), [("db".into(), 1, "n1".into(), "n2".into())]);
    // Margin 0 is taken as 1: the slot moved does not come back.
    let zero = Budget {
        margin: 0,
        ..Budget::default()
    };
    assert!(
        plan_rebalance(&apply(&c, &plan), &zero)
            .unwrap()
            .is_balanced()
    );
}

#[test]
fn pinned_manual_and_unsafe_slots_stay_and_say_why() {
    let base = node_back();
    let with_label = |k: &str, v: &str| {
        let mut c = base.clone();
        c.services[0] = c.services[0].clone().label(k, v);
        c
    };
    for (c, kind, reason) in [
        (
            with_label("berth.pin", "true"),
            HoldKind::Pinned,
            "pinned by berth.pin",
        ),
        (
            with_label("berth.failover", "manual"),
            HoldKind::Manual,
            "berth.failover=manual: an operator moves it",
        ),
        (
            {
                let mut c = with_label("berth.backend", "replicated");
                for d in &mut c.datasets {
                    d.backend = Backend::Replicated;
                }
                c
            },
            HoldKind::DataNotSafe,
            "dataset db-1 has no live standby",
        ),
    ] {
        let plan = plan_rebalance(&c, &Budget::default()).unwrap();
        assert!(plan.moves.is_empty(), "{plan:#?}");
        assert_eq!(plan.held[0].kind, kind, "{plan:#?}");
        assert!(plan.held[0].reason.starts_with(reason), "{plan:#?}");
    }
}

#[test]
fn a_pinned_slot_leaves_the_move_to_another() {
    let mut c = node_back();
    c.services[0] = c.services[0].clone().label("berth.pin", "3");
    let plan = plan_rebalance(&c, &Budget::default()).unwrap();
    assert_eq!(summary(&plan), [("db".into(), 1, "a1".into(), "c1".into())]);
    // Once slot 1 has moved, slot 3 would only move for load, less than the margin gains.
    let held: Vec<(u64, HoldKind)> = plan.held.iter().map(|h| (h.slot, h.kind)).collect();
    assert_eq!(held, [(3, HoldKind::Margin)], "{plan:#?}");
}

#[test]
fn a_replicated_dataset_without_standby_gets_one_and_does_not_move() {
    let mut c = node_back();
    for d in &mut c.datasets {
        d.backend = Backend::Replicated;
    }
    c.datasets[0].standby = Some(NodeId::new("b1"));
    c.datasets[1].standby = Some(NodeId::new("c1"));
    c.nodes.push(node("c2").label("zone", "c"));
    let plan = plan_rebalance(&c, &Budget::default()).unwrap();
    // db-3 has no standby, so slot 3 stays; slot 1 (whose data has a standby) restores the
    // spread instead, onto c2: c1 holds db-2's standby, where a replica could not be promoted.
    assert_eq!(summary(&plan), [("db".into(), 1, "a1".into(), "c2".into())]);
    // A standby for db-3 on the one node running no db slot and holding no db standby.
    let sb: Vec<(String, String)> = plan
        .standbys
        .iter()
        .map(|s| (s.dataset.clone(), s.node.to_string()))
        .collect();
    assert_eq!(sb, [("db-3".to_string(), "a1".to_string())], "{plan:#?}");
    assert_eq!(plan.standbys[0].bytes, 10 << 30);
    assert_eq!(
        plan.bytes,
        2 * (10 << 30),
        "slot 1's copy and the standby's"
    );
}

#[test]
fn a_replicated_slot_moves_onto_its_standby_without_copying() {
    let mut c = node_back();
    for d in &mut c.datasets {
        d.backend = Backend::Replicated;
    }
    c.datasets[0].standby = Some(NodeId::new("b1"));
    c.datasets[1].standby = Some(NodeId::new("a1"));
    c.datasets[2].standby = Some(NodeId::new("c1"));
    let plan = plan_rebalance(&c, &Budget::default()).unwrap();
    assert_eq!(summary(&plan), [("db".into(), 3, "a2".into(), "c1".into())]);
    assert_eq!(plan.moves[0].mode, MoveMode::PromoteStandby);
    assert_eq!(plan.moves[0].bytes, 0);
    // The promoted standby is the primary now: a new standby is proposed.
    assert_eq!(plan.standbys.len(), 1, "{plan:#?}");
    assert_eq!(plan.standbys[0].dataset, "db-3");
}

#[test]
fn max_unavailable_already_used_holds_moves_back() {
    let mut c = added_nodes("1");
    // db slot 6 is not running: the service's one unavailable slot is used.
    c.tasks
        .retain(|t| !(t.service_id.0 == "db" && t.slot == Some(6)));
    c.nodes[5] = c.nodes[5].clone().state(crate::model::NodeState::Down);
    let plan = plan_rebalance(&c, &Budget::default()).unwrap();
    assert!(plan.moves.is_empty(), "{plan:#?}");
    assert!(plan.held.iter().all(|h| h.kind == HoldKind::Budget));
    assert!(
        plan.held[0].reason.contains("1 slots already down"),
        "{plan:#?}"
    );
}

#[test]
fn the_move_limit_holds_the_rest_back() {
    let budget = Budget {
        max_moves: Some(1),
        ..Budget::default()
    };
    let plan = plan_rebalance(&added_nodes("1"), &budget).unwrap();
    assert_eq!(plan.moves.len(), 1);
    assert!(
        plan.held
            .iter()
            .any(|h| h.kind == HoldKind::Budget && h.reason.contains("limit of 1 moves")),
        "{plan:#?}"
    );
}

#[test]
fn the_plan_is_deterministic_and_ties_go_to_the_lowest_node_id() {
    let c = added_nodes("1");
    let mut shuffled = c.clone();
    shuffled.nodes.reverse();
    shuffled.tasks.reverse();
    shuffled.services.reverse();
    let a = plan_rebalance(&c, &Budget::default()).unwrap();
    let b = plan_rebalance(&shuffled, &Budget::default()).unwrap();
    assert_eq!(a, b);
    // n7, n8, n9 are equally empty: the first move takes n7.
    assert_eq!(a.moves[0].to.to_string(), "n7");
}

#[test]
fn a_zone_back_gets_its_share_under_a_preference() {
    // Zone b's nodes were lost, its slots went to zone a; b is back.
    let c = Cluster {
        nodes: vec![
            node("a1").label("zone", "a"),
            node("a2").label("zone", "a"),
            node("a3").label("zone", "a"),
            node("a4").label("zone", "a"),
            node("b1").label("zone", "b"),
            node("b2").label("zone", "b"),
        ],
        services: vec![
            replicated("db", 4)
                .stateful("db-{slot}", "move")
                .preference("spread=node.labels.zone")
                .label("berth.max-unavailable", "2"),
        ],
        tasks: (1..=4)
            .map(|i| running("db", i, &format!("a{i}")))
            .collect(),
        datasets: Vec::new(),
    };
    let plan = plan_rebalance(&c, &Budget::default()).unwrap();
    let to: Vec<String> = plan.moves.iter().map(|m| m.to.to_string()).collect();
    assert_eq!(to, ["b1", "b2"], "{plan:#?}");
    assert!(
        plan.moves[0]
            .reason
            .starts_with("evens out the placement preference")
    );
    assert!(
        plan_rebalance(&apply(&c, &plan), &Budget::default())
            .unwrap()
            .is_balanced()
    );
}

#[test]
fn binpack_services_do_not_move_for_load() {
    let mut c = added_nodes("1");
    c.services[0] = c.services[0].clone().label("berth.strategy", "binpack");
    assert!(
        plan_rebalance(&c, &Budget::default())
            .unwrap()
            .moves
            .is_empty()
    );
}

#[test]
fn among_equals_the_slot_that_failed_over_returns() {
    let mut c = node_back();
    // a1 and a2 equally busy: the epoch tells which slot's data moved last.
    c.tasks.push(filler("web", 3, "a1"));
    c.services[1] = replicated("web", 3);
    c.datasets[2].epoch = 3;
    let plan = plan_rebalance(&c, &Budget::default()).unwrap();
    assert_eq!(summary(&plan), [("db".into(), 3, "a2".into(), "c1".into())]);
    c.datasets[0].epoch = 4;
    let plan = plan_rebalance(&c, &Budget::default()).unwrap();
    assert_eq!(summary(&plan), [("db".into(), 1, "a1".into(), "c1".into())]);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    /// A random lopsided cluster: `n` nodes over three zones, a stateful service whose slots
    /// run on distinct nodes, stateless tasks for load.
    fn cluster(n: usize, slots: Vec<usize>, fill: Vec<u8>, spread: bool) -> Cluster {
        let nodes: Vec<_> = (0..n)
            .map(|i| node(&format!("n{i}")).label("zone", ["a", "b", "c"][i % 3]))
            .collect();
        let mut db = replicated("db", slots.len() as u64).stateful("db-{slot}", "move");
        if spread {
            db = db.label("berth.topology-spread", "node.labels.zone:1");
        }
        let mut tasks: Vec<Task> = slots
            .iter()
            .enumerate()
            .map(|(k, &i)| running("db", k as u64 + 1, &format!("n{i}")))
            .collect();
        let mut web = 0;
        for (i, f) in fill.iter().enumerate().take(n) {
            for _ in 0..*f {
                web += 1;
                tasks.push(filler("web", web, &format!("n{i}")));
            }
        }
        Cluster {
            nodes,
            services: vec![db, replicated("web", web)],
            tasks,
            datasets: Vec::new(),
        }
    }

    fn excess(c: &Cluster) -> u32 {
        let mut zones = [0u32; 3];
        for t in c.tasks.iter().filter(|t| t.service_id.0 == "db") {
            let i: usize = t.node_id.as_ref().unwrap().as_str()[1..].parse().unwrap();
            zones[i % 3] += 1;
        }
        (zones.iter().max().unwrap() - zones.iter().min().unwrap()).saturating_sub(1)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn applying_the_plan_keeps_constraints_and_settles(
            n in 3usize..9,
            picks in proptest::collection::vec(0usize..9, 1..5),
            fill in proptest::collection::vec(0u8..5, 9),
            spread in any::<bool>(),
        ) {
            let mut slots: Vec<usize> = picks.into_iter().map(|p| p % n).collect();
            slots.sort_unstable();
            slots.dedup();
            let c = cluster(n, slots, fill, spread);
            let plan = plan_rebalance(&c, &Budget::default()).unwrap();
            let after = apply(&c, &plan);
            // Replica anti-affinity holds: no two db slots on one node.
            let mut on: Vec<&NodeId> = after
                .tasks
                .iter()
                .filter(|t| t.service_id.0 == "db")
                .map(|t| t.node_id.as_ref().unwrap())
                .collect();
            on.sort();
            let len = on.len();
            on.dedup();
            prop_assert_eq!(on.len(), len);
            // The planner keeps every moved slot where it is (none is left pending).
            let p = crate::schedule::plan(&after).unwrap();
            prop_assert!(p.all_placed() && p.new_placements().next().is_none());
            // The spread never gets worse, every move's score is better, and the next plan
            // proposes nothing.
            if spread {
                prop_assert!(excess(&after) <= excess(&c));
            }
            for m in &plan.moves {
                prop_assert!(m.after < m.before, "{:?}", m);
            }
            let again = plan_rebalance(&after, &Budget::default()).unwrap();
            prop_assert!(again.moves.is_empty(), "{:#?} then {:#?}", plan, again);
        }
    }
}

#[test]
fn the_index_sees_a_node_come_back_and_plans_as_from_scratch() {
    let back = node_back();
    let mut down = back.clone();
    down.nodes[3].state = NodeState::Down;
    let budget = Budget::default();
    let mut r = RebalanceIndex::new(down.clone()).unwrap();
    let full = plan_rebalance(&down, &budget).unwrap();
    assert_eq!(r.plan(&budget), full);
    assert_eq!(r.worth_moving(&budget), !full.moves.is_empty());
    r.apply(NodeEvent::Back(NodeId::new("c1"))).unwrap();
    assert_eq!(r.cluster(), &back);
    assert!(r.worth_moving(&budget));
    let plan = r.plan(&budget);
    assert_eq!(plan, plan_rebalance(&back, &budget).unwrap());
    assert_eq!(summary(&plan), [("db".into(), 3, "a2".into(), "c1".into())]);
    // With no move allowed, nothing is worth proposing.
    let none = Budget {
        max_moves: Some(0),
        ..Budget::default()
    };
    assert!(!r.worth_moving(&none));
    assert!(r.plan(&none).moves.is_empty());
}

#[test]
fn the_index_takes_added_and_changed_nodes() {
    let mut c = added_nodes("2");
    let nine = c.nodes.split_off(6);
    let budget = Budget::default();
    let mut r = RebalanceIndex::new(c.clone()).unwrap();
    assert!(!r.worth_moving(&budget), "{:?}", r.plan(&budget).moves);
    for n in nine {
        r.apply(NodeEvent::Added(n)).unwrap();
    }
    assert!(r.worth_moving(&budget));
    assert_eq!(
        r.plan(&budget),
        plan_rebalance(&added_nodes("2"), &budget).unwrap()
    );
    // A node drained through a change: the plan is the one for the changed cluster.
    let drained = node("n7").availability(crate::model::Availability::Drain);
    r.apply(NodeEvent::Changed(drained)).unwrap();
    assert_eq!(
        r.plan(&budget),
        plan_rebalance(r.cluster(), &budget).unwrap()
    );
    // An unknown node is an error and changes nothing.
    let before = r.cluster().clone();
    assert!(r.apply(NodeEvent::Changed(node("zz"))).is_err());
    assert!(r.apply(NodeEvent::Down(NodeId::new("zz"))).is_err());
    assert_eq!(r.cluster(), &before);
}

mod incremental_props {
    use super::*;
    use crate::model::Availability;
    use proptest::prelude::*;

    /// A random cluster: `n` nodes over three zones, a spread stateful service (`replicated`
    /// datasets with standbys when `standbys`), a plain stateful one, stateless load; some
    /// slots not running, so the placement run places them.
    fn cluster(n: usize, db: Vec<usize>, kv: Vec<usize>, fill: Vec<u8>, standbys: bool) -> Cluster {
        let name = |i: usize| format!("n{i}");
        let nodes: Vec<_> = (0..n)
            .map(|i| node(&name(i)).label("zone", ["a", "b", "c"][i % 3]))
            .collect();
        let mut tasks = Vec::new();
        let mut datasets = Vec::new();
        let backend = if standbys {
            Backend::Replicated
        } else {
            Backend::Local
        };
        for (k, &i) in db.iter().enumerate() {
            let slot = k as u64 + 1;
            tasks.push(running("db", slot, &name(i % n)));
            let mut d = ds(&format!("db-{slot}"), "db", slot, &name(i % n), backend);
            if standbys {
                d.standby = Some(NodeId::new(name((i + 1 + k) % n)));
            }
            datasets.push(d);
        }
        for (k, &i) in kv.iter().enumerate() {
            tasks.push(running("kv", k as u64 + 1, &name(i % n)));
        }
        let mut web = 0;
        for (i, f) in fill.iter().enumerate().take(n) {
            for _ in 0..*f {
                web += 1;
                tasks.push(filler("web", web, &name(i)));
            }
        }
        Cluster {
            nodes,
            services: vec![
                replicated("db", db.len() as u64 + 1)
                    .stateful("db-{slot}", "move")
                    .label("berth.topology-spread", "node.labels.zone:1"),
                replicated("kv", kv.len() as u64).stateful("kv-{slot}", "move"),
                replicated("web", web + 1),
            ],
            tasks,
            datasets,
        }
    }

    fn event(c: &Cluster, kind: u8, i: usize, zone: u8) -> NodeEvent {
        let n = &c.nodes[i % c.nodes.len()];
        let z = ["a", "b", "c"][zone as usize % 3];
        match kind % 5 {
            0 => NodeEvent::Down(n.id.clone()),
            1 => NodeEvent::Back(n.id.clone()),
            2 => NodeEvent::Added(node(&format!("m{}", c.nodes.len())).label("zone", z)),
            3 => NodeEvent::Changed(n.clone().label("zone", z)),
            _ => NodeEvent::Changed(n.clone().availability(if zone.is_multiple_of(2) {
                Availability::Drain
            } else {
                Availability::Active
            })),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(150))]
        #[test]
        fn incremental_equals_a_full_plan_after_every_event(
            n in 3usize..8,
            db in proptest::collection::vec(0usize..8, 0..4),
            kv in proptest::collection::vec(0usize..8, 0..4),
            fill in proptest::collection::vec(0u8..5, 8),
            standbys in any::<bool>(),
            events in proptest::collection::vec((0u8..5, 0usize..10, 0u8..3), 0..8),
            margin in 1u32..4,
            max_moves in proptest::option::of(0u32..3),
        ) {
            let c = cluster(n, db, kv, fill, standbys);
            let budget = Budget { margin, max_moves, ..Budget::default() };
            let mut r = RebalanceIndex::new(c).unwrap();
            let mut steps = vec![None];
            steps.extend(events.into_iter().map(Some));
            for step in steps {
                if let Some((kind, i, zone)) = step {
                    let e = event(r.cluster(), kind, i, zone);
                    r.apply(e).unwrap();
                }
                let full = plan_rebalance(r.cluster(), &budget).unwrap();
                prop_assert_eq!(&r.plan(&budget), &full);
                prop_assert_eq!(r.worth_moving(&budget), !full.moves.is_empty());
            }
        }
    }
}
