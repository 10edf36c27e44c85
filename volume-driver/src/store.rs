//! The control service's persistent store: the whole cluster state as one JSON document in a
//! redb table, written in one transaction per change, so a restart loses nothing that was
//! acknowledged and a crash never leaves half a change.

use std::path::Path;

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
    #[error("stored state does not decode")]
    Decode(#[source] serde_json::Error),
}

fn redb_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Redb(e.to_string())
}

/// Anything that can hold the control state document.
pub trait Store: Send + Sync {
    fn load(&self) -> Result<Option<Vec<u8>>, StoreError>;
    fn save(&self, doc: &[u8]) -> Result<(), StoreError>;
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

impl Store for RedbStore {
    fn load(&self) -> Result<Option<Vec<u8>>, StoreError> {
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

    fn save(&self, doc: &[u8]) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(redb_err)?;
        {
            let mut table = tx.open_table(TABLE).map_err(redb_err)?;
            table.insert(KEY, doc).map_err(redb_err)?;
        }
        tx.commit().map_err(redb_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let s = RedbStore::open(dir.path()).expect("open");
            assert_eq!(s.load().expect("load"), None);
            s.save(b"{\"x\":1}").expect("save");
        }
        let s = RedbStore::open(dir.path()).expect("reopen");
        assert_eq!(s.load().expect("load").as_deref(), Some(&b"{\"x\":1}"[..]));
    }
}
