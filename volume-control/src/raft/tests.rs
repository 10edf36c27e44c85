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
            payload: EntryPayload::Normal(super::Doc("{\"generation\":7}".into())),
        };
        m.apply([e]).await.expect("apply");
        m.build_snapshot().await.expect("snapshot");
    }
    let db = Arc::new(redb::Database::create(&path).expect("reopen"));
    let m = Machine::open(db).expect("open");
    assert_eq!(m.doc().as_deref(), Some("{\"generation\":7}"));
    assert_eq!(m.applied_index(), Some(3));
}
