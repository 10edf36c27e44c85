//! The replicated state machine: the control state, changed by each entry as the leader's
//! writer changed it (`Command::Change`: the records of one committed batch), or replaced whole
//! by a `Command::Doc` (what members before format 2 wrote, and what a leader writes while one
//! of them is still a member). Snapshots are the whole document, kept in redb beside the log in
//! the format they always had, so a member that restarts starts from its last snapshot and
//! re-applies the committed entries after it.

// openraft's storage traits return its `StorageError` (large); the helpers here return what
// the traits do rather than box and unbox it at every call.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};

use berth_control_model::model::State;

use super::{Applied, Command, TypeConfig};

const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_snapshot");

type Err = StorageError<u64>;

fn any(e: impl std::fmt::Display) -> AnyError {
    AnyError::error(e.to_string())
}

fn read_err(e: impl std::fmt::Display) -> Err {
    StorageIOError::read_snapshot(None, any(e)).into()
}

fn write_err(e: impl std::fmt::Display) -> Err {
    StorageIOError::write_snapshot(None, any(e)).into()
}

/// What the machine holds: the last applied entry, the membership and the state (`None`
/// before any entry or snapshot held one).
#[derive(Debug, Clone, Default)]
struct Current {
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    state: Option<State>,
    /// When this member applied each lease closure of `state` (`grants`), in memory only: a
    /// successor bounds a closed node's lease from here, which is never before the closure was
    /// proposed. A whole document (an entry of format 1, a snapshot, a restart) stamps every
    /// closure it holds anew: later is only more cautious.
    closures_applied: BTreeMap<String, Instant>,
}

impl Current {
    fn stamp_all(&mut self) {
        let now = Instant::now();
        self.closures_applied = self
            .state
            .iter()
            .flat_map(|s| s.closed.keys())
            .map(|n| (n.clone(), now))
            .collect();
    }
}

/// A document as the machine holds it: decoded, its name index built.
fn decode(doc: &str) -> Result<State, serde_json::Error> {
    let mut s: State = serde_json::from_str(doc)?;
    s.reindex();
    s.settle();
    Ok(s)
}

/// A snapshot as stored: its metadata and the document.
#[derive(Serialize, Deserialize)]
struct Stored {
    meta: SnapshotMeta<u64, BasicNode>,
    doc: Option<String>,
}

/// The state machine; clones share it (the control service reads the document from it).
#[derive(Clone)]
pub struct Machine {
    db: Arc<Database>,
    current: Arc<Mutex<Current>>,
}

impl Machine {
    /// The machine as of the last snapshot in `db` (empty without one).
    pub fn open(db: Arc<Database>) -> Result<Machine, Err> {
        let m = Machine {
            db,
            current: Arc::default(),
        };
        if let Some(s) = m.stored()? {
            let state = s.doc.as_deref().map(decode).transpose().map_err(read_err)?;
            let mut c = Current {
                last_applied: s.meta.last_log_id,
                membership: s.meta.last_membership,
                state,
                closures_applied: BTreeMap::new(),
            };
            c.stamp_all();
            *m.lock() = c;
        }
        Ok(m)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Current> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The document as of the last applied entry (written out whole: for a takeover, not per
    /// write).
    pub fn doc(&self) -> Option<String> {
        let state = self.lock().state.clone();
        state.map(|s| serde_json::to_string(&s).expect("a state always encodes"))
    }

    /// When each lease closure held was applied here.
    pub fn closures_applied(&self) -> BTreeMap<String, Instant> {
        self.lock().closures_applied.clone()
    }

    /// The index of the last applied entry.
    pub fn applied_index(&self) -> Option<u64> {
        self.lock().last_applied.map(|l| l.index)
    }

    fn stored(&self) -> Result<Option<Stored>, Err> {
        let tx = self.db.begin_read().map_err(read_err)?;
        let t = match tx.open_table(SNAPSHOT) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(x) => return Err(read_err(x)),
        };
        match t.get("current").map_err(read_err)? {
            Some(v) => serde_json::from_slice(v.value())
                .map(Some)
                .map_err(read_err),
            None => Ok(None),
        }
    }

    fn store(&self, s: &Stored) -> Result<(), Err> {
        let doc = serde_json::to_vec(s).map_err(write_err)?;
        let tx = self.db.begin_write().map_err(write_err)?;
        {
            let mut t = tx.open_table(SNAPSHOT).map_err(write_err)?;
            t.insert("current", doc.as_slice()).map_err(write_err)?;
        }
        tx.commit().map_err(write_err)
    }

    fn snapshot_of(s: Stored) -> Result<Snapshot<TypeConfig>, Err> {
        let data = serde_json::to_vec(&s.doc)
            .map_err(|e| StorageIOError::read_snapshot(Some(s.meta.signature()), any(e)))?;
        Ok(Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for Machine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, Err> {
        // Cloned under the lock, written out after it, so applying waits for a copy, not for
        // the encoding.
        let cur = self.lock().clone();
        let doc = cur
            .state
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(write_err)?;
        let snapshot_id = match cur.last_applied {
            Some(l) => format!("{}-{}", l.leader_id, l.index),
            None => "empty".to_string(),
        };
        let stored = Stored {
            meta: SnapshotMeta {
                last_log_id: cur.last_applied,
                last_membership: cur.membership,
                snapshot_id,
            },
            doc,
        };
        self.store(&stored)?;
        Machine::snapshot_of(stored)
    }
}

impl RaftStateMachine<TypeConfig> for Machine {
    type SnapshotBuilder = Machine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), Err> {
        let c = self.lock();
        Ok((c.last_applied, c.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, Err>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut c = self.lock();
        let mut out = Vec::new();
        for e in entries {
            c.last_applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(Command::Doc(d)) => {
                    let index = e.log_id.index;
                    let s = decode(&d).map_err(|x| {
                        StorageIOError::read_state_machine(any(format!(
                            "entry {index}: state document: {x}"
                        )))
                    })?;
                    c.state = Some(s);
                    c.stamp_all();
                }
                EntryPayload::Normal(Command::Change(ch)) => {
                    c.state.get_or_insert_with(State::default).apply(&ch);
                    let now = Instant::now();
                    for (node, closure) in &ch.closed {
                        match closure {
                            Some(_) => c.closures_applied.insert(node.clone(), now),
                            None => c.closures_applied.remove(node),
                        };
                    }
                }
                EntryPayload::Membership(m) => {
                    c.membership = StoredMembership::new(Some(e.log_id), m);
                }
            }
            out.push(Applied);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Machine {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, Err> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), Err> {
        let doc: Option<String> = serde_json::from_slice(snapshot.get_ref())
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), any(e)))?;
        let state = doc
            .as_deref()
            .map(decode)
            .transpose()
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), any(e)))?;
        let stored = Stored {
            meta: meta.clone(),
            doc,
        };
        self.store(&stored)?;
        let mut c = Current {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            state,
            closures_applied: BTreeMap::new(),
        };
        c.stamp_all();
        *self.lock() = c;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, Err> {
        self.stored()?.map(Machine::snapshot_of).transpose()
    }
}
