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
    s.claim_mount(&id, "a", 1).expect("a mounts");
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
    let e = s.claim_mount(&id, "a", 1).expect_err("a is fenced");
    assert!(
        e.to_string().contains("current primary is b at epoch 2"),
        "{e}"
    );
    s.claim_mount(&id, "b", 2).expect("b mounts");
    assert!(s.claim_mount(&id, "a", 2).is_err(), "never two mounts");
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
    s.claim_mount(&id, "b", 2).expect("b mounts");
    s.release_mount(&id, "b").expect("release");
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
