//! The Raft log and vote, in redb: one table of entries by index, one of metadata (vote,
//! committed, last purged). Every write is one redb transaction, durable when it commits, so an
//! append is acknowledged to openraft only once it is on disk.

// openraft's storage traits return its `StorageError` (large); the helpers here return what
// the traits do rather than box and unbox it at every call.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::TypeConfig;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

type Err = StorageError<u64>;

fn any(e: impl std::fmt::Display) -> AnyError {
    AnyError::error(e.to_string())
}

fn read_err(e: impl std::fmt::Display) -> Err {
    StorageIOError::read_logs(any(e)).into()
}

fn write_err(e: impl std::fmt::Display) -> Err {
    StorageIOError::write_logs(any(e)).into()
}

/// The log store; clones share the database (openraft reads logs from replication tasks).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    pub fn new(db: Arc<Database>) -> LogStore {
        LogStore { db }
    }

    fn meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Err> {
        let tx = self.db.begin_read().map_err(read_err)?;
        let t = match tx.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(read_err(e)),
        };
        match t.get(key).map_err(read_err)? {
            Some(v) => serde_json::from_slice(v.value())
                .map(Some)
                .map_err(read_err),
            None => Ok(None),
        }
    }

    fn set_meta<T: Serialize>(&self, key: &str, v: &T) -> Result<(), Err> {
        self.set_meta_as(key, v, redb::Durability::Immediate)
    }

    fn set_meta_as<T: Serialize>(
        &self,
        key: &str,
        v: &T,
        durability: redb::Durability,
    ) -> Result<(), Err> {
        let doc = serde_json::to_vec(v).map_err(write_err)?;
        let mut tx = self.db.begin_write().map_err(write_err)?;
        tx.set_durability(durability).map_err(write_err)?;
        {
            let mut t = tx.open_table(META).map_err(write_err)?;
            t.insert(key, doc.as_slice()).map_err(write_err)?;
        }
        tx.commit().map_err(write_err)
    }

    fn last_entry(&self) -> Result<Option<Entry<TypeConfig>>, Err> {
        let tx = self.db.begin_read().map_err(read_err)?;
        let t = match tx.open_table(LOG) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(read_err(e)),
        };
        match t.last().map_err(read_err)? {
            Some((_, v)) => serde_json::from_slice(v.value())
                .map(Some)
                .map_err(read_err),
            None => Ok(None),
        }
    }

    /// Removes every entry whose index is in `range`.
    fn remove(&self, range: impl RangeBounds<u64>) -> Result<(), Err> {
        let tx = self.db.begin_write().map_err(write_err)?;
        {
            let mut t = tx.open_table(LOG).map_err(write_err)?;
            t.retain_in(range, |_, _| false).map_err(write_err)?;
        }
        tx.commit().map_err(write_err)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, Err> {
        let tx = self.db.begin_read().map_err(read_err)?;
        let t = match tx.open_table(LOG) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(read_err(e)),
        };
        let mut out = Vec::new();
        for row in t.range(range).map_err(read_err)? {
            let (_, v) = row.map_err(read_err)?;
            out.push(serde_json::from_slice(v.value()).map_err(read_err)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, Err> {
        let purged: Option<LogId<u64>> = self.meta("purged")?;
        // Entries at or below the purge marker may outlive a crash mid-purge; never above it.
        let last = self.last_entry()?.map(|e| e.log_id).max(purged);
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), Err> {
        self.set_meta("vote", vote)
            .map_err(|e| StorageIOError::write_vote(any(e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, Err> {
        self.meta("vote")
    }

    // Saved so that a restarted member re-applies what was committed before it stopped, instead
    // of waiting for a leader to tell it: restarting all three at once finds the state at once.
    // Durable: a commit with `Durability::None` lives in redb's memory until a later durable
    // commit, so a member killed after the last write of a burst lost its marker, and the
    // whole group killed and restarted served the state of its last snapshot until a new
    // leader committed again (volume-driver/tests/it/ha.rs caught it).
    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), Err> {
        self.set_meta_as("committed", &committed, redb::Durability::Immediate)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, Err> {
        Ok(self.meta::<Option<LogId<u64>>>("committed")?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), Err>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let tx = self.db.begin_write().map_err(write_err)?;
        {
            let mut t = tx.open_table(LOG).map_err(write_err)?;
            for e in entries {
                let v = serde_json::to_vec(&e).map_err(write_err)?;
                t.insert(e.log_id.index, v.as_slice()).map_err(write_err)?;
            }
        }
        let r = tx.commit();
        callback.log_io_completed(
            r.as_ref()
                .map(|_| ())
                .map_err(|e| std::io::Error::other(e.to_string())),
        );
        r.map_err(write_err)
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), Err> {
        self.remove(log_id.index..)
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), Err> {
        // The marker first: a crash between the two leaves entries the marker already covers,
        // which `get_log_state` never reports below it.
        self.set_meta("purged", &log_id)?;
        self.remove(..=log_id.index)
    }
}
