//! The control service's persistent store: the whole cluster state as one JSON document in a
//! redb table, written in one transaction per change, so a restart loses nothing that was
//! acknowledged and a crash never leaves half a change.
//!
//! [`Store`] is async because a store may be remote (Consul KV, `consul_store`): its calls are
//! network round trips, awaited where the runtime drives their IO, never a runtime worker
//! blocked on them. redb's calls stay synchronous: its futures do the whole read or
//! transaction when created, on the caller's thread (the control service's writer thread),
//! exactly as before the trait was async.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use redb::{Database, ReadableDatabase, TableDefinition};

const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("berth");
const KEY: &str = "state";

/// Store failures, with the file they concern.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create state dir {path}")]
    Dir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("redb: {0}")]
    Redb(String),
    #[error("consul: {0}")]
    Consul(String),
    #[error("raft: {0}")]
    Raft(String),
    /// A replicated member that is not (or no longer) the leader: nothing was written here.
    #[error("not the leader")]
    NotLeader,
    #[error("stored state does not decode")]
    Decode(#[source] serde_json::Error),
}

fn redb_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Redb(e.to_string())
}

/// What a [`Store`] call returns: boxed, so that `Box<dyn Store>` can hold either store.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Anything that can hold the control state document.
pub trait Store: Send + Sync {
    /// The document, or `None` when none was ever saved.
    fn load(&self) -> StoreFuture<'_, Option<Vec<u8>>>;
    /// Replaces the document; durable once the future resolves `Ok`.
    fn save<'a>(&'a self, doc: &'a [u8]) -> StoreFuture<'a, ()>;
}

/// A store shared with whoever else needs it (an elected instance fences its Consul store).
impl<T: Store + ?Sized> Store for std::sync::Arc<T> {
    fn load(&self) -> StoreFuture<'_, Option<Vec<u8>>> {
        (**self).load()
    }

    fn save<'a>(&'a self, doc: &'a [u8]) -> StoreFuture<'a, ()> {
        (**self).save(doc)
    }
}

/// The default embedded store.
pub struct RedbStore {
    db: Database,
}

impl RedbStore {
    /// Opens (or creates) `DIR/berth.redb`.
    pub fn open(dir: &Path) -> Result<RedbStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.display().to_string(),
            source,
        })?;
        let db = Database::create(dir.join("berth.redb")).map_err(redb_err)?;
        Ok(RedbStore { db })
    }
}

impl RedbStore {
    fn load_now(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read().map_err(redb_err)?;
        let table = match tx.open_table(TABLE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(redb_err(e)),
        };
        Ok(table
            .get(KEY)
            .map_err(redb_err)?
            .map(|v| v.value().to_vec()))
    }

    fn save_now(&self, doc: &[u8]) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(redb_err)?;
        {
            let mut table = tx.open_table(TABLE).map_err(redb_err)?;
            table.insert(KEY, doc).map_err(redb_err)?;
        }
        tx.commit().map_err(redb_err)
    }
}

impl Store for RedbStore {
    // The work is done here, synchronously, not when the future is polled: a local store
    // behaves as it did behind the synchronous trait.
    fn load(&self) -> StoreFuture<'_, Option<Vec<u8>>> {
        Box::pin(std::future::ready(self.load_now()))
    }

    fn save<'a>(&'a self, doc: &'a [u8]) -> StoreFuture<'a, ()> {
        Box::pin(std::future::ready(self.save_now(doc)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn survives_reopen() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let s = RedbStore::open(dir.path()).expect("open");
            assert_eq!(s.load().await.expect("load"), None);
            s.save(b"{\"x\":1}").await.expect("save");
        }
        let s = RedbStore::open(dir.path()).expect("reopen");
        assert_eq!(
            s.load().await.expect("load").as_deref(),
            Some(&b"{\"x\":1}"[..])
        );
    }

    /// The redb store's work is done by the call itself, before any poll: the writer thread
    /// that calls it blocks on the disk, as it did behind the synchronous trait, and no
    /// runtime is needed to drive it.
    #[test]
    fn redb_saves_at_the_call_without_a_runtime() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = RedbStore::open(dir.path()).expect("open");
        let pending = s.save(b"{\"x\":2}");
        assert_eq!(
            s.load_now().expect("load").as_deref(),
            Some(&b"{\"x\":2}"[..])
        );
        drop(pending);
    }
}
