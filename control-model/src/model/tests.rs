use super::*;

fn named(primary: &str, name: &str) -> NewDataset {
    NewDataset {
        primary: primary.into(),
        metadata: [(META_NAME.to_string(), name.to_string())].into(),
        ..NewDataset::default()
    }
}

#[test]
fn create_is_unique_by_name_and_tag_checked() {
    let mut s = State::default();
    let d = s.create(named("a", "v1"), None).expect("create");
    assert_eq!(d.epoch, 1);
    assert!(matches!(
        s.create(named("a", "v1"), None),
        Err(ControlError::Conflict(_))
    ));
    assert!(matches!(
        s.create(named("a", "v2"), Some("0")),
        Err(ControlError::TagMismatch { .. })
    ));
    let tag = s.tag();
    s.create(named("a", "v2"), Some(&tag))
        .expect("matching tag");
    let bad = NewDataset {
        dataset_id: Some("NOT-A-UUID".into()),
        ..named("a", "v3")
    };
    assert!(matches!(s.create(bad, None), Err(ControlError::Invalid(_))));
    let small = NewDataset {
        maximum_size: Some(1024),
        ..named("a", "v4")
    };
    assert!(matches!(
        s.create(small, None),
        Err(ControlError::Invalid(_))
    ));
}

/// The API refuses what the plugin refuses: a name no agent could list or mount, and a size
/// no backend could hold. Nothing is recorded for a refused create.
#[test]
fn create_refuses_the_plugins_bad_names_and_sizes() {
    let mut s = State::default();
    for name in ["", "a/b", "..", "a..b", "a\nb", &"x".repeat(256)] {
        let e = s.create(named("a", name), None).expect_err(name);
        assert!(
            matches!(&e, ControlError::Invalid(m) if m.starts_with("metadata name: ")),
            "{name:?}: {e}"
        );
    }
    let huge = NewDataset {
        maximum_size: Some(1 << 60),
        ..named("a", "big")
    };
    let e = s.create(huge, None).expect_err("1 EiB");
    assert!(e.to_string().contains("1 PiB ceiling"), "{e}");
    assert!(s.datasets.is_empty(), "a refused create records nothing");
    let most = NewDataset {
        maximum_size: Some(crate::size::MAX_SIZE),
        ..named("a", "big")
    };
    s.create(most, None).expect("1 PiB is allowed");
    // A dataset without a name (Flocker's own API allows it) is still accepted.
    s.create(
        NewDataset {
            primary: "a".into(),
            ..NewDataset::default()
        },
        None,
    )
    .expect("unnamed");
}

#[test]
fn move_increments_epoch_and_fences() {
    let mut s = State::default();
    for n in ["a", "b"] {
        s.register_node(Node {
            uuid: n.into(),
            host: n.into(),
            transfer: String::new(),
            dead: false,
        });
    }
    let id = s.create(named("a", "v1"), None).expect("create").dataset_id;
    s.claim_mount(&id, "a", 1, 0).expect("a mounts");
    let e = s.move_to(&id, "b", false, None, 0.0).expect_err("in use");
    assert!(e.to_string().contains("mounted on a"), "{e}");
    assert!(
        s.move_to(&id, "b", true, None, 0.0).is_err(),
        "force needs a dead holder"
    );
    s.declare_dead("a").expect("dead");
    let d = s.move_to(&id, "b", true, None, 0.0).expect("failover");
    assert_eq!(
        (d.epoch, d.primary.as_str(), d.mounted_on.as_deref()),
        (2, "b", None)
    );
    assert_eq!(d.previous_primary.as_deref(), Some("a"));
    assert_eq!(d.source_epoch, Some(1));
    let e = s.claim_mount(&id, "a", 1, 0).expect_err("a is fenced");
    assert!(
        e.to_string().contains("current primary is b at epoch 2"),
        "{e}"
    );
    s.claim_mount(&id, "b", 2, 0).expect("b mounts");
    assert!(s.claim_mount(&id, "a", 2, 0).is_err(), "never two mounts");
}

#[test]
fn leases_block_moves_and_delete_is_idempotent() {
    let mut s = State::default();
    let id = s.create(named("a", "v1"), None).expect("create").dataset_id;
    s.lease(
        Lease {
            dataset_id: id.clone(),
            node_uuid: "a".into(),
            expires_at: Some(10.0),
        },
        0.0,
    )
    .expect("lease");
    assert!(s.move_to(&id, "b", false, None, 5.0).is_err());
    assert!(
        s.move_to(&id, "b", false, None, 11.0).is_ok(),
        "expired lease"
    );
    s.delete(&id, None).expect("delete");
    s.delete(&id, None).expect("delete again");
    assert!(matches!(
        s.move_to(&id, "a", false, None, 0.0),
        Err(ControlError::Deleted(_))
    ));
    assert!(matches!(
        s.delete("nope", None),
        Err(ControlError::NotFound(_))
    ));
    s.create(named("a", "v1"), None)
        .expect("name reusable after delete");
}

#[test]
fn a_primary_that_never_held_a_whole_copy_is_never_made_the_source() {
    let mut s = State::default();
    let id = s.create(named("a", "v1"), None).expect("create").dataset_id;
    let d = s.move_to(&id, "b", false, None, 0.0).expect("move");
    assert_eq!(
        (d.previous_primary, d.source_epoch),
        (None, None),
        "never mounted anywhere: b starts empty"
    );
    s.claim_mount(&id, "b", 2, 0).expect("b mounts");
    s.release_mount(&id, "b", 0).expect("release");
    let d = s.move_to(&id, "c", false, None, 0.0).expect("move");
    assert_eq!(
        (d.previous_primary.as_deref(), d.source_epoch),
        (Some("b"), Some(2))
    );
    // c dies before its pull finishes (no mount, no report); the next move still names b.
    let d = s.move_to(&id, "a", false, None, 0.0).expect("move");
    assert_eq!(
        (d.previous_primary.as_deref(), d.source_epoch),
        (Some("b"), Some(2))
    );
    // a reports a whole copy at epoch 4 without mounting: that is proof enough.
    s.reported.insert(
        id.clone(),
        Reported {
            node_uuid: "a".into(),
            path: "/x".into(),
            epoch: 4,
        },
    );
    let d = s.move_to(&id, "b", false, None, 0.0).expect("move");
    assert_eq!(
        (d.previous_primary.as_deref(), d.source_epoch),
        (Some("a"), Some(4))
    );
}

fn node(s: &mut State, n: &str) {
    s.register_node(Node {
        uuid: n.into(),
        host: n.into(),
        transfer: format!("{n}:4524"),
        dead: false,
    });
}

fn cluster(nodes: &[&str]) -> State {
    let mut s = State::default();
    for n in nodes {
        node(&mut s, n);
    }
    s
}

fn replicated(primary: &str, name: &str, replicas: u32) -> NewDataset {
    let mut d = named(primary, name);
    d.metadata
        .insert(crate::options::META_BACKEND.into(), "replicated".into());
    d.metadata
        .insert(crate::options::META_REPLICAS.into(), replicas.to_string());
    d
}

fn epoch_of(e: &ControlError) -> Option<u64> {
    match e {
        ControlError::Epoch { epoch, .. } => Some(*epoch),
        _ => None,
    }
}

#[test]
fn a_fence_lets_nobody_mount_until_an_assignment() {
    let mut s = cluster(&["a", "b"]);
    let id = s.create(named("a", "v"), None).expect("create").dataset_id;
    s.claim_mount(&id, "a", 1, 100).expect("a mounts");
    let d = s.fence("v", "a", 1, 200).expect("fence");
    assert_eq!(
        (d.epoch, d.fenced, d.mounted_on.as_deref()),
        (2, true, None)
    );
    assert_eq!(d.primary_now(), None);
    assert_eq!(
        (d.previous_primary.as_deref(), d.source_epoch),
        (Some("a"), Some(1))
    );
    for n in ["a", "b"] {
        let e = s.claim_mount(&id, n, 2, 300).expect_err("fenced");
        assert!(e.to_string().contains("nobody (fenced)"), "{e}");
    }
    let d = s
        .assign("v", "b", 2, AssignMode::Move, 400)
        .expect("assign");
    assert_eq!((d.primary_now(), d.epoch, d.fenced), (Some("b"), 2, false));
    assert!(s.claim_mount(&id, "a", 2, 500).is_err(), "a stays fenced");
    s.claim_mount(&id, "b", 2, 500).expect("b mounts");
}

#[test]
fn replays_answer_the_same_and_stale_commands_get_the_current_epoch() {
    let mut s = cluster(&["a", "b", "c"]);
    s.create(named("a", "v"), None).expect("create");
    let first = s.fence("v", "a", 1, 10).expect("fence");
    let again = s.fence("v", "a", 1, 20).expect("replayed fence");
    assert_eq!(first, again, "a replay changes nothing");
    let e = s
        .fence("v", "c", 1, 30)
        .expect_err("another node at the old epoch");
    assert_eq!(epoch_of(&e), Some(2), "{e}");
    let e = s.fence("v", "a", 7, 30).expect_err("a future epoch");
    assert_eq!(epoch_of(&e), Some(2), "{e}");
    let e = s
        .assign("v", "b", 1, AssignMode::Move, 40)
        .expect_err("old epoch");
    assert_eq!(epoch_of(&e), Some(2), "{e}");
    let d = s.assign("v", "b", 2, AssignMode::Move, 50).expect("assign");
    let r = s
        .assign("v", "b", 2, AssignMode::Move, 60)
        .expect("replayed assign");
    assert_eq!(d, r);
    for (who, mode) in [("c", AssignMode::Move), ("b", AssignMode::Recreate)] {
        let e = s
            .assign("v", who, 2, mode, 70)
            .expect_err("another assignment");
        assert_eq!(epoch_of(&e), Some(2), "{e}");
        assert!(e.to_string().contains("fence first"), "{e}");
    }
    assert!(matches!(
        s.assign("v", "zz", 2, AssignMode::Move, 70),
        Err(ControlError::Epoch { .. })
    ));
    assert!(matches!(
        s.fence("nope", "a", 1, 0),
        Err(ControlError::NotFound(_))
    ));
}

#[test]
fn a_fence_refuses_to_drop_another_nodes_mount_or_lease() {
    let mut s = cluster(&["a", "b"]);
    let id = s.create(named("a", "v"), None).expect("create").dataset_id;
    s.claim_mount(&id, "a", 1, 0).expect("a mounts");
    let e = s.fence("v", "b", 1, 0).expect_err("a holds it");
    assert!(e.to_string().contains("mounted on a"), "{e}");
    s.release_mount(&id, "a", 0).expect("release");
    s.lease(
        Lease {
            dataset_id: id.clone(),
            node_uuid: "a".into(),
            expires_at: None,
        },
        0.0,
    )
    .expect("lease");
    let e = s.fence("v", "b", 1, 0).expect_err("leased to a");
    assert!(e.to_string().contains("leased to a"), "{e}");
    s.fence("v", "a", 1, 0)
        .expect("a's own lease goes with the fence");
    assert!(s.leases.is_empty());
}

#[test]
fn refused_changes_change_nothing() {
    let mut s = cluster(&["a", "b", "c"]);
    let id = s
        .create(replicated("a", "r", 2), None)
        .expect("create")
        .dataset_id;
    s.create(named("a", "l"), None).expect("create");
    s.claim_mount(&id, "a", 1, 0).expect("mount");
    let before = s.clone();
    let refused: Vec<Result<(), ControlError>> = vec![
        s.fence("r", "b", 1, 1).map(drop),
        s.fence("r", "a", 9, 1).map(drop),
        s.assign("r", "b", 1, AssignMode::Move, 1).map(drop),
        s.assign("l", "b", 1, AssignMode::Promote, 1).map(drop),
        s.claim_mount(&id, "b", 1, 1).map(drop),
        s.report_standby(&id, "c", 1, 0, 0, 1).map(drop),
        s.report_standby(&id, "b", 9, 0, 0, 1).map(drop),
        s.move_to(&id, "b", false, None, 1.0).map(drop),
        s.delete(&id, None).map(drop),
        s.create(named("a", "l"), None).map(drop),
        s.create(named("a", "x"), Some("stale")).map(drop),
    ];
    for (i, r) in refused.iter().enumerate() {
        assert!(r.is_err(), "case {i} was accepted");
    }
    assert_eq!(s, before, "a refused request left a trace");
}

#[test]
fn unrelated_datasets_have_their_own_versions() {
    let mut s = cluster(&["a"]);
    let x = s.create(named("a", "x"), None).expect("x").dataset_id;
    let y = s.create(named("a", "y"), None).expect("y").dataset_id;
    let vy = s.datasets[&y].version;
    let vx = s.datasets[&x].version;
    s.claim_mount(&x, "a", 1, 0).expect("mount x");
    s.release_mount(&x, "a", 1).expect("release x");
    assert_eq!(s.datasets[&y].version, vy, "y untouched by x's changes");
    assert_eq!(s.datasets[&x].version, vx + 2);
    s.claim_mount(&x, "a", 1, 2).expect("mount x");
    let v = s.datasets[&x].version;
    s.claim_mount(&x, "a", 1, 3).expect("re-claim");
    assert_eq!(s.datasets[&x].version, v, "a re-claim changes nothing");
}

#[test]
fn standbys_are_picked_by_fewest_roles_then_node_id() {
    let mut s = cluster(&["a", "b", "c", "d"]);
    let d = s.create(replicated("a", "r1", 3), None).expect("r1");
    assert_eq!(d.standbys.keys().collect::<Vec<_>>(), ["b", "c"]);
    let d = s.create(replicated("b", "r2", 2), None).expect("r2");
    assert_eq!(
        d.standbys.keys().collect::<Vec<_>>(),
        ["d"],
        "d holds no role yet"
    );
    // Too few nodes: the standby comes when a node registers.
    let mut s = cluster(&["a"]);
    let id = s
        .create(replicated("a", "r", 2), None)
        .expect("r")
        .dataset_id;
    assert!(s.datasets[&id].standbys.is_empty());
    node(&mut s, "b");
    assert_eq!(s.datasets[&id].standbys.keys().collect::<Vec<_>>(), ["b"]);
    assert!(
        s.create(named("a", "l"), None)
            .expect("l")
            .standbys
            .is_empty(),
        "local keeps no standby"
    );
}

#[test]
fn a_standby_trails_by_the_writes_it_lacks_and_promotion_says_so() {
    let mut s = cluster(&["a", "b", "c"]);
    let id = s
        .create(replicated("a", "r", 2), None)
        .expect("r")
        .dataset_id;
    assert_eq!(s.datasets[&id].standbys.keys().collect::<Vec<_>>(), ["b"]);
    let d = &s.datasets[&id];
    assert_eq!(d.standby_lag_ms("b", 0), None, "nothing shipped yet");
    s.report_standby(&id, "b", 1, 0, 0, 1_000)
        .expect("first ship");
    assert_eq!(
        s.datasets[&id].standby_lag_ms("b", 5_000),
        Some(0),
        "never mounted: nothing to lack"
    );
    s.claim_mount(&id, "a", 1, 2_000).expect("a mounts");
    // A ship that began at 2.6 s and took 400 ms.
    s.report_standby(&id, "b", 1, 400, 4096, 3_000)
        .expect("ship");
    assert_eq!(s.datasets[&id].standby_lag_ms("b", 3_500), Some(900));
    // A late report of an older ship does not move the position back.
    s.report_standby(&id, "b", 1, 2_000, 1, 3_100)
        .expect("late");
    assert_eq!(s.datasets[&id].standbys["b"].position_ms, Some(2_600));
    let e = s
        .report_standby(&id, "c", 1, 0, 0, 3_100)
        .expect_err("not a standby");
    assert_eq!(epoch_of(&e), Some(1));
    // a dies at some point before the fence at 4 s: at most 1.4 s of writes are lost.
    s.fence("r", "a", 1, 4_000).expect("fence");
    let e = s
        .report_standby(&id, "b", 1, 0, 0, 4_100)
        .expect_err("a ship from the fenced copy");
    assert_eq!(epoch_of(&e), Some(2));
    let e = s
        .assign("r", "c", 2, AssignMode::Promote, 4_200)
        .expect_err("c holds nothing");
    assert!(e.to_string().contains("no shipped standby copy"), "{e}");
    let d = s
        .assign("r", "b", 2, AssignMode::Promote, 4_200)
        .expect("promote");
    let a = d.assignment.clone().expect("assignment");
    assert_eq!((a.lag_ms, a.lag_bytes), (Some(1_400), Some(4096)));
    assert_eq!((d.primary_now(), d.promoted_at), (Some("b"), Some(2)));
    assert_eq!(
        d.standbys.get("a"),
        Some(&Standby::default()),
        "the old primary rejoins holding nothing usable"
    );
    let replay = s
        .assign("r", "b", 2, AssignMode::Promote, 9_999)
        .expect("replay");
    assert_eq!(
        replay.assignment, d.assignment,
        "a replay says the same lag"
    );
}

#[test]
fn promote_needs_replicated_and_recreate_starts_empty() {
    let mut s = cluster(&["a", "b", "c"]);
    s.create(named("a", "l"), None).expect("l");
    s.fence("l", "a", 1, 0).expect("fence");
    let e = s
        .assign("l", "b", 2, AssignMode::Promote, 0)
        .expect_err("local");
    assert!(matches!(e, ControlError::Invalid(_)), "{e}");
    let d = s
        .assign("l", "b", 2, AssignMode::Recreate, 0)
        .expect("recreate");
    assert_eq!(
        (d.recreated_at, d.previous_primary.clone(), d.source_epoch),
        (Some(2), None, None)
    );
    let id = s
        .create(replicated("a", "r", 3), None)
        .expect("r")
        .dataset_id;
    for n in ["b", "c"] {
        s.report_standby(&id, n, 1, 0, 0, 10).expect("ship");
    }
    s.fence("r", "a", 1, 20).expect("fence");
    let d = s
        .assign("r", "b", 2, AssignMode::Recreate, 30)
        .expect("recreate");
    assert!(
        d.standbys.values().all(|sb| sb.position_ms.is_none()),
        "no standby holds the new (empty) data: {:?}",
        d.standbys
    );
    assert!(
        !d.standbys.contains_key("b"),
        "the new primary is not its own standby"
    );
}

#[test]
fn whole_copies_are_known_only_at_the_current_epoch() {
    let mut s = cluster(&["a", "b"]);
    let id = s.create(named("a", "l"), None).expect("l").dataset_id;
    assert!(s.datasets[&id].whole_copy_on(&s).is_empty(), "never held");
    s.claim_mount(&id, "a", 1, 0).expect("mount");
    assert_eq!(s.datasets[&id].whole_copy_on(&s), ["a"]);
    s.fence("l", "a", 1, 0).expect("fence");
    assert!(s.datasets[&id].whole_copy_on(&s).is_empty());
    let mut sh = named("a", "s");
    sh.metadata
        .insert(crate::options::META_BACKEND.into(), "shared".into());
    let sid = s.create(sh, None).expect("s").dataset_id;
    assert_eq!(s.datasets[&sid].whole_copy_on(&s), ["a", "b"]);
}

#[test]
fn a_mounted_volume_is_not_handed_over_while_its_holders_lease_runs() {
    let mut s = cluster(&["a", "b"]);
    let id = s.create(named("a", "v"), None).expect("create").dataset_id;
    s.claim_mount(&id, "a", 1, 0).expect("a mounts");
    let live = std::collections::BTreeMap::from([("a".to_string(), 1_200)]);
    let none = std::collections::BTreeMap::new();
    let before = s.clone();
    match s.check_handover("v", 1, Some("a"), None, &live) {
        Err(ControlError::Leased {
            node,
            epoch,
            remaining_ms,
            ..
        }) => assert_eq!((node.as_str(), epoch, remaining_ms), ("a", 1, 1_200)),
        other => panic!("a fence while a's lease runs: {other:?}"),
    }
    let e = s
        .check_handover("v", 1, None, Some("b"), &live)
        .expect_err("an assignment elsewhere");
    assert!(e.to_string().contains("1200 more ms"), "{e}");
    assert_eq!(s, before, "a refusal changes nothing");
    s.check_handover("v", 1, None, Some("a"), &live)
        .expect("to the holder itself is no handover");
    s.check_handover("v", 1, Some("a"), None, &none)
        .expect("the lease ran out: a has stopped its containers");
    // What fence refuses anyway gets fence's 409, not a wait.
    s.check_handover("v", 4, Some("a"), None, &live)
        .expect("another epoch");
    s.check_handover("v", 1, Some("b"), None, &live)
        .expect("another holder");
    s.check_handover("ghost", 1, None, None, &live)
        .expect("unknown names are fence's to refuse");

    // Declared dead: the operator's word stands in for the lease running out.
    s.declare_dead("a").expect("dead");
    s.check_handover("v", 1, Some("a"), None, &live)
        .expect("a is dead");
    s.fence("v", "a", 1, 10).expect("fence");
    // The fence dropped the claim: nothing mounted, nothing to wait for, replays included.
    s.check_handover("v", 2, None, Some("b"), &live)
        .expect("assign");
    s.check_handover("v", 1, Some("a"), None, &live)
        .expect("a replayed fence");

    // Not mounted at all: nothing can be writing, whatever the lease.
    let mut s = cluster(&["a", "b"]);
    s.create(named("a", "w"), None).expect("create");
    s.check_handover("w", 1, Some("a"), None, &live)
        .expect("unmounted");
}

/// The composed requests (what the service and the simulator both call): a wait while the
/// holder's lease runs, the fence itself once it has run out, and fence's own 409 for a
/// stale epoch.
#[test]
fn fence_and_assign_checked_wait_for_the_lease_then_apply_the_rule() {
    let mut s = cluster(&["a", "b"]);
    let id = s.create(named("a", "v"), None).expect("create").dataset_id;
    s.claim_mount(&id, "a", 1, 0).expect("a mounts");
    let live = std::collections::BTreeMap::from([("a".to_string(), 700)]);
    let none = std::collections::BTreeMap::new();
    let before = s.clone();
    match s.fence_checked("v", "a", 1, 5, &live) {
        Err(ControlError::Leased { remaining_ms, .. }) => assert_eq!(remaining_ms, 700),
        other => panic!("a fence while a's lease runs: {other:?}"),
    }
    assert_eq!(s, before, "a wait changes nothing");
    let e = s
        .fence_checked("v", "a", 4, 5, &none)
        .expect_err("a stale epoch");
    assert_eq!(epoch_of(&e), Some(1));
    assert_eq!(
        s.fence_checked("v", "a", 1, 5, &none).expect("fence").epoch,
        2
    );
    let d = s
        .assign_checked("v", "b", 2, AssignMode::Move, 6, &live)
        .expect("nothing mounted any more: no wait");
    assert_eq!((d.primary.as_str(), d.epoch, d.fenced), ("b", 2, false));
}

/// A node's report replaces what that node reported before and nothing another node did; only
/// copies current on their primary count; a report that changes nothing bumps no generation
/// and lists no record as changed.
#[test]
fn a_report_replaces_the_nodes_own_records_only() {
    let mut s = State::default();
    let a = s.create(named("n1", "a"), None).expect("a").dataset_id;
    let b = s.create(named("n1", "b"), None).expect("b").dataset_id;
    let c = s.create(named("n2", "c"), None).expect("c").dataset_id;
    let held = |node: &str, id: &str, epoch: u64| {
        (
            id.to_string(),
            Reported {
                node_uuid: node.into(),
                path: format!("/{node}/{id}"),
                epoch,
            },
        )
    };
    s.report_held("n2", vec![held("n2", &c, 1)]);
    s.report_held(
        "n1",
        vec![held("n1", &a, 1), held("n1", &b, 1), held("n1", &c, 1)],
    );
    assert_eq!(
        s.reported.keys().cloned().collect::<Vec<_>>(),
        {
            let mut k = vec![a.clone(), b.clone(), c.clone()];
            k.sort();
            k
        },
        "n1 is not c's primary: its copy of c does not count"
    );
    assert_eq!(s.reported[&c].node_uuid, "n2");
    s.settle();
    let g = s.generation;
    s.report_held("n1", vec![held("n1", &b, 1), held("n1", &a, 1)]);
    assert_eq!(s.generation, g, "the same report again changes nothing");
    let (same, _) = s.take_change();
    assert!(same.no_records());
    s.report_held("n1", vec![held("n1", &b, 1), held("n1", &a, 7)]);
    assert_eq!(s.generation, g + 1);
    assert!(!s.reported.contains_key(&a), "a stale epoch: a is dropped");
    assert_eq!(s.reported[&c].node_uuid, "n2", "n2's record stays");
    let (c1, _) = s.take_change();
    assert_eq!(c1.reported.keys().collect::<Vec<_>>(), vec![&a]);
}
