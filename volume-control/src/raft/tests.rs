use std::sync::Arc;

use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};

use super::TypeConfig;
use super::log::LogStore;
use super::machine::Machine;

struct Redb;

impl StoreBuilder<TypeConfig, LogStore, Machine, tempfile::TempDir> for Redb {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, Machine), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("tmp");
        let db = Arc::new(redb::Database::create(dir.path().join("raft.redb")).expect("redb"));
        let machine = Machine::open(db.clone())?;
        Ok((dir, LogStore::new(db), machine))
    }
}

/// openraft's own conformance suite for log stores and state machines: vote, log state,
/// append, truncate, purge, apply, snapshots, and reopening.
#[test]
fn the_redb_log_and_machine_pass_openraft_s_suite() {
    Suite::test_all(Redb).expect("openraft storage suite");
}

/// A member restarted from its database finds its last snapshot's document before any entry
/// is re-applied.
#[tokio::test]
async fn the_machine_reopens_at_its_last_snapshot() {
    use openraft::storage::RaftStateMachine;
    use openraft::{Entry, EntryPayload, LogId, RaftSnapshotBuilder};
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("raft.redb");
    {
        let db = Arc::new(redb::Database::create(&path).expect("redb"));
        let mut m = Machine::open(db).expect("open");
        let e = Entry::<TypeConfig> {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), 3),
            payload: EntryPayload::Normal(super::Command::Doc(
                "{\"generation\":7,\"datasets\":{},\"nodes\":{},\"leases\":{},\"reported\":{}}"
                    .into(),
            )),
        };
        m.apply([e]).await.expect("apply");
        m.build_snapshot().await.expect("snapshot");
    }
    let db = Arc::new(redb::Database::create(&path).expect("reopen"));
    let m = Machine::open(db).expect("open");
    let doc = m.doc().expect("a document");
    let s: berth_control_model::State = serde_json::from_str(&doc).expect("decodes");
    assert_eq!(s.generation, 7);
    assert_eq!(m.applied_index(), Some(3));
}

/// One log may hold both formats: the whole documents an older leader wrote, then the changes
/// a newer one writes on top of the last of them.
#[tokio::test]
async fn the_machine_applies_whole_documents_then_changes() {
    use berth_control_model::model::{NewDataset, State};
    use openraft::storage::RaftStateMachine;
    use openraft::{Entry, EntryPayload, LogId};
    let dir = tempfile::tempdir().expect("tmp");
    let db = Arc::new(redb::Database::create(dir.path().join("raft.redb")).expect("redb"));
    let mut m = Machine::open(db).expect("open");
    let named = |n: &str| NewDataset {
        primary: "n1".into(),
        metadata: [("name".to_string(), n.to_string())].into(),
        ..NewDataset::default()
    };
    let mut s = State::default();
    s.create(named("a"), None).expect("a");
    let entry = |i: u64, c: super::Command| Entry::<TypeConfig> {
        log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), i),
        payload: EntryPayload::Normal(c),
    };
    let doc = super::Command::Doc(serde_json::to_string(&s).expect("doc"));
    s.settle();
    let a = s.id_of("a").expect("a");
    s.delete(&a, None).expect("delete");
    s.create(named("b"), None).expect("b");
    let (c, _) = s.take_change();
    m.apply([entry(1, doc), entry(2, super::Command::Change(Box::new(c)))])
        .await
        .expect("apply");
    let mut got: State = serde_json::from_str(&m.doc().expect("doc")).expect("decodes");
    got.reindex();
    assert_eq!(got, s);
    assert!(got.by_name("b").is_some() && got.by_name("a").is_none());
}

/// A lease closure is stamped when this member applies it, which is never before it was
/// proposed ("Fencing", rule 8); a reopening drops the stamp; a whole document stamps anew.
#[tokio::test]
async fn the_machine_stamps_lease_closures_when_it_applies_them() {
    use berth_control_model::grants::Closure;
    use berth_control_model::model::State;
    use openraft::storage::RaftStateMachine;
    use openraft::{Entry, EntryPayload, LogId};
    let dir = tempfile::tempdir().expect("tmp");
    let db = Arc::new(redb::Database::create(dir.path().join("raft.redb")).expect("redb"));
    let mut m = Machine::open(db).expect("open");
    let entry = |i: u64, c: super::Command| Entry::<TypeConfig> {
        log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), i),
        payload: EntryPayload::Normal(c),
    };
    let closure = Closure {
        lease_left_ms: 3_000,
        unheard_ms: 2_000,
    };
    let mut s = State::default();
    s.close_leases([("a".to_string(), closure), ("b".to_string(), closure)]);
    let (c, _) = s.take_change();
    let proposed = std::time::Instant::now();
    m.apply([entry(1, super::Command::Change(Box::new(c)))])
        .await
        .expect("apply");
    let stamps = m.closures_applied();
    assert_eq!(stamps.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert!(stamps.values().all(|at| *at >= proposed));
    s.reopen_leases(&["a".to_string()]);
    let (c, _) = s.take_change();
    m.apply([entry(2, super::Command::Change(Box::new(c)))])
        .await
        .expect("apply");
    assert_eq!(m.closures_applied().keys().collect::<Vec<_>>(), ["b"]);
    let later = std::time::Instant::now();
    let doc = super::Command::Doc(serde_json::to_string(&s).expect("doc"));
    m.apply([entry(3, doc)]).await.expect("apply");
    assert!(
        m.closures_applied()["b"] >= later,
        "a whole document stamps anew"
    );
}

/// An entry written by a member before format 2 (its payload a JSON string) reads as a whole
/// document; one of format 2 as a change.
#[test]
fn both_entry_formats_decode() {
    let old = r#"{"log_id":{"leader_id":{"term":1,"node_id":1},"index":2},"payload":{"Normal":"{\"generation\":1}"}}"#;
    let e: openraft::Entry<TypeConfig> = serde_json::from_str(old).expect("format 1");
    assert!(matches!(
        e.payload,
        openraft::EntryPayload::Normal(super::Command::Doc(_))
    ));
    let new = serde_json::to_string(&super::Command::Change(Box::default())).expect("json");
    let c: super::Command = serde_json::from_str(&new).expect("format 2");
    assert!(matches!(c, super::Command::Change(_)));
}
