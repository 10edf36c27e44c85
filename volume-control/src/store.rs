//! The control service's persistent store. The embedded one (redb) keeps one record per
//! dataset, node, lease, report and leader lock, and the document's counters, each in its own
//! table: a batch of accepted requests is one transaction of the records it changed
//! (`Store::save_change`), so a write costs the same at 100,000 datasets as at 100, and a crash
//! never leaves half a change.
//!
//! Before this layout (format 2) the whole state was one JSON document under `berth/state`;
//! opening such a file converts it in one transaction and leaves, under the old key, a string
//! that older binaries refuse to decode (a downgrade stops with that message rather than
//! serving an empty or stale state).
//!
//! [`Store`] is async because a store may be remote (Consul KV, `consul_store`): its calls are
//! network round trips, awaited where the runtime drives their IO, never a runtime worker
//! blocked on them. redb's calls stay synchronous: its futures do the whole read or
//! transaction when created, on the caller's thread (the control service's writer thread),
//! exactly as before the trait was async.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use berth_control_model::model::{Change, Records, State};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Format 1's table and key: the whole document.
const V1_TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("berth");
const V1_KEY: &str = "state";
/// What format 1's key holds once converted: not a document, so an older binary stops on it.
const V1_MOVED: &str = "this control state was converted to per-record tables (format 2) by a \
     newer berth-volume; this binary cannot read it: run the newer one (downgrades are not supported)";

/// Format 2: `format`, `generation` and `clock_ms`, JSON.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("berth_meta");
const DATASETS: TableDefinition<&str, &[u8]> = TableDefinition::new("berth_datasets");
const NODES: TableDefinition<&str, &[u8]> = TableDefinition::new("berth_nodes");
const LEASES: TableDefinition<&str, &[u8]> = TableDefinition::new("berth_leases");
const REPORTED: TableDefinition<&str, &[u8]> = TableDefinition::new("berth_reported");
const LEADERS: TableDefinition<&str, &[u8]> = TableDefinition::new("berth_leaders");
const JOURNALS: TableDefinition<&str, &[u8]> = TableDefinition::new("berth_leader_journals");
/// Lease closures (`berth_control_model::grants`), one row per closed node.
const CLOSED: TableDefinition<&str, &[u8]> = TableDefinition::new("berth_lease_closures");
const FORMAT: u32 = 2;

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
    #[error(
        "{path} holds control state of format {found}; this binary reads format {FORMAT} and older"
    )]
    Newer { path: String, found: u32 },
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
    /// Persists `change`, which made the state `next`; durable once the future resolves `Ok`.
    /// A store that keeps one document writes `next` whole (the default).
    fn save_change<'a>(&'a self, next: &'a State, change: &'a Change) -> StoreFuture<'a, ()> {
        let _ = change;
        match serde_json::to_vec(next) {
            Ok(doc) => Box::pin(async move { self.save(&doc).await }),
            Err(e) => Box::pin(std::future::ready(Err(StoreError::Decode(e)))),
        }
    }
}

/// A store shared with whoever else needs it (an elected instance fences its Consul store).
impl<T: Store + ?Sized> Store for std::sync::Arc<T> {
    fn load(&self) -> StoreFuture<'_, Option<Vec<u8>>> {
        (**self).load()
    }

    fn save<'a>(&'a self, doc: &'a [u8]) -> StoreFuture<'a, ()> {
        (**self).save(doc)
    }

    fn save_change<'a>(&'a self, next: &'a State, change: &'a Change) -> StoreFuture<'a, ()> {
        (**self).save_change(next, change)
    }
}

/// The default embedded store.
pub struct RedbStore {
    db: Database,
}

impl RedbStore {
    /// Opens (or creates) `DIR/berth.redb`, converting a format-1 document to records.
    pub fn open(dir: &Path) -> Result<RedbStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.display().to_string(),
            source,
        })?;
        let path = dir.join("berth.redb");
        let db = Database::create(&path).map_err(redb_err)?;
        let s = RedbStore { db };
        match s.format()? {
            Some(f) if f > FORMAT => {
                return Err(StoreError::Newer {
                    path: path.display().to_string(),
                    found: f,
                });
            }
            Some(_) => {}
            None => s.convert_v1()?,
        }
        Ok(s)
    }

    fn format(&self) -> Result<Option<u32>, StoreError> {
        let tx = self.db.begin_read().map_err(redb_err)?;
        let t = match tx.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(redb_err(e)),
        };
        t.get("format")
            .map_err(redb_err)?
            .map(|v| serde_json::from_slice(v.value()).map_err(StoreError::Decode))
            .transpose()
    }

    /// A format-1 file (or a new one): its document, if any, becomes records, in one
    /// transaction with the format mark.
    fn convert_v1(&self) -> Result<(), StoreError> {
        let doc = {
            let tx = self.db.begin_read().map_err(redb_err)?;
            match tx.open_table(V1_TABLE) {
                Ok(t) => t.get(V1_KEY).map_err(redb_err)?.map(|v| v.value().to_vec()),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(redb_err(e)),
            }
        };
        let tx = self.db.begin_write().map_err(redb_err)?;
        if let Some(doc) = doc {
            let state: State = serde_json::from_slice(&doc).map_err(StoreError::Decode)?;
            write_all(&tx, &state)?;
            let mut t = tx.open_table(V1_TABLE).map_err(redb_err)?;
            t.insert(
                V1_KEY,
                serde_json::to_vec(V1_MOVED)
                    .map_err(StoreError::Decode)?
                    .as_slice(),
            )
            .map_err(redb_err)?;
            tracing::info!(
                datasets = state.datasets.len(),
                "control state converted to per-record tables (format 2)"
            );
        }
        put(&tx, META, "format", Some(&FORMAT))?;
        tx.commit().map_err(redb_err)
    }

    fn load_now(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read().map_err(redb_err)?;
        let generation: Option<u64> = get(&tx, META, "generation")?;
        let Some(generation) = generation else {
            return Ok(None);
        };
        let mut s = State::default();
        s.generation = generation;
        s.clock_ms = get(&tx, META, "clock_ms")?.unwrap_or(0);
        s.datasets = all(&tx, DATASETS)?;
        s.nodes = all(&tx, NODES)?;
        s.leases = all(&tx, LEASES)?;
        s.reported = all(&tx, REPORTED)?;
        s.leaders = all(&tx, LEADERS)?;
        s.leader_journals = all(&tx, JOURNALS)?;
        s.closed = all(&tx, CLOSED)?;
        serde_json::to_vec(&s).map(Some).map_err(StoreError::Decode)
    }

    fn save_now(&self, doc: &[u8]) -> Result<(), StoreError> {
        let state: State = serde_json::from_slice(doc).map_err(StoreError::Decode)?;
        let tx = self.db.begin_write().map_err(redb_err)?;
        for t in [DATASETS, NODES, LEASES, REPORTED, LEADERS, JOURNALS, CLOSED] {
            tx.delete_table(t).map_err(redb_err)?;
        }
        write_all(&tx, &state)?;
        tx.commit().map_err(redb_err)
    }

    fn save_change_now(&self, c: &Change) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(redb_err)?;
        put_records(&tx, DATASETS, &c.datasets)?;
        put_records(&tx, NODES, &c.nodes)?;
        put_records(&tx, LEASES, &c.leases)?;
        put_records(&tx, REPORTED, &c.reported)?;
        put_records(&tx, LEADERS, &c.leaders)?;
        put_records(&tx, JOURNALS, &c.leader_journals)?;
        put_records(&tx, CLOSED, &c.closed)?;
        put(&tx, META, "generation", Some(&c.generation))?;
        put(&tx, META, "clock_ms", Some(&c.clock_ms))?;
        tx.commit().map_err(redb_err)
    }
}

type Table = TableDefinition<'static, &'static str, &'static [u8]>;

fn get<T: DeserializeOwned>(
    tx: &redb::ReadTransaction,
    table: Table,
    key: &str,
) -> Result<Option<T>, StoreError> {
    let t = match tx.open_table(table) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(redb_err(e)),
    };
    t.get(key)
        .map_err(redb_err)?
        .map(|v| serde_json::from_slice(v.value()).map_err(StoreError::Decode))
        .transpose()
}

fn all<T: DeserializeOwned, C: FromIterator<(String, T)>>(
    tx: &redb::ReadTransaction,
    table: Table,
) -> Result<C, StoreError> {
    let t = match tx.open_table(table) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => {
            return Ok(std::iter::empty::<(String, T)>().collect());
        }
        Err(e) => return Err(redb_err(e)),
    };
    t.iter()
        .map_err(redb_err)?
        .map(|row| {
            let (k, v) = row.map_err(redb_err)?;
            let v = serde_json::from_slice(v.value()).map_err(StoreError::Decode)?;
            Ok((k.value().to_string(), v))
        })
        .collect()
}

/// Sets `key` to `value` (`None`: removes it).
fn put<T: Serialize>(
    tx: &WriteTransaction,
    table: Table,
    key: &str,
    value: Option<&T>,
) -> Result<(), StoreError> {
    let mut t = tx.open_table(table).map_err(redb_err)?;
    match value {
        Some(v) => {
            let v = serde_json::to_vec(v).map_err(StoreError::Decode)?;
            t.insert(key, v.as_slice()).map_err(redb_err)?;
        }
        None => {
            t.remove(key).map_err(redb_err)?;
        }
    }
    Ok(())
}

fn put_records<T: Serialize>(
    tx: &WriteTransaction,
    table: Table,
    records: &Records<T>,
) -> Result<(), StoreError> {
    if records.is_empty() {
        return Ok(());
    }
    let mut t = tx.open_table(table).map_err(redb_err)?;
    for (k, v) in records {
        match v {
            Some(v) => {
                let v = serde_json::to_vec(v).map_err(StoreError::Decode)?;
                t.insert(k.as_str(), v.as_slice()).map_err(redb_err)?;
            }
            None => {
                t.remove(k.as_str()).map_err(redb_err)?;
            }
        }
    }
    Ok(())
}

/// Every record of `s`, and its counters, into (emptied) tables.
fn write_all(tx: &WriteTransaction, s: &State) -> Result<(), StoreError> {
    fn each<T: Serialize>(
        tx: &WriteTransaction,
        table: Table,
        m: &std::collections::BTreeMap<String, T>,
    ) -> Result<(), StoreError> {
        let mut t = tx.open_table(table).map_err(redb_err)?;
        for (k, v) in m {
            let v = serde_json::to_vec(v).map_err(StoreError::Decode)?;
            t.insert(k.as_str(), v.as_slice()).map_err(redb_err)?;
        }
        Ok(())
    }
    each(tx, DATASETS, &s.datasets)?;
    each(tx, NODES, &s.nodes)?;
    each(tx, LEASES, &s.leases)?;
    each(tx, REPORTED, &s.reported)?;
    each(tx, LEADERS, &s.leaders)?;
    each(tx, JOURNALS, &s.leader_journals)?;
    each(tx, CLOSED, &s.closed)?;
    put(tx, META, "generation", Some(&s.generation))?;
    put(tx, META, "clock_ms", Some(&s.clock_ms))
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

    fn save_change<'a>(&'a self, _next: &'a State, change: &'a Change) -> StoreFuture<'a, ()> {
        Box::pin(std::future::ready(self.save_change_now(change)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_control_model::model::NewDataset;

    fn named(s: &mut State, n: &str) {
        s.create(
            NewDataset {
                primary: "n1".into(),
                metadata: [("name".to_string(), n.to_string())].into(),
                ..NewDataset::default()
            },
            None,
        )
        .expect("create");
    }

    fn loaded(s: &RedbStore) -> Option<State> {
        s.load_now().expect("load").map(|d| {
            let mut s: State = serde_json::from_slice(&d).expect("decode");
            s.reindex();
            s
        })
    }

    #[tokio::test]
    async fn changes_survive_reopen() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut state = State::default();
        {
            let s = RedbStore::open(dir.path()).expect("open");
            assert_eq!(s.load().await.expect("load"), None);
            named(&mut state, "a");
            named(&mut state, "b");
            s.save(&serde_json::to_vec(&state).expect("doc"))
                .await
                .expect("save");
            state.settle();
            let id = state.id_of("a").expect("a");
            state.delete(&id, None).expect("delete");
            named(&mut state, "c");
            let (c, _) = state.take_change();
            assert_eq!(c.datasets.len(), 2);
            s.save_change(&state, &c).await.expect("save change");
        }
        let s = RedbStore::open(dir.path()).expect("reopen");
        assert_eq!(loaded(&s), Some(state));
    }

    /// Lease closures ("Fencing", rule 8) are records like any other: closed, reopened,
    /// persisted per node, found again on open.
    #[tokio::test]
    async fn lease_closures_survive_reopen() {
        use berth_control_model::grants::Closure;
        let dir = tempfile::tempdir().expect("tmp");
        let mut state = State::default();
        {
            let s = RedbStore::open(dir.path()).expect("open");
            let c = |left| Closure {
                lease_left_ms: left,
                unheard_ms: 2_000,
            };
            state.close_leases([("n1".to_string(), c(3_000)), ("n2".to_string(), c(0))]);
            let (ch, _) = state.take_change();
            assert_eq!(ch.closed.len(), 2);
            s.save_change(&state, &ch).await.expect("close");
            state.reopen_leases(&["n1".to_string()]);
            let (ch, _) = state.take_change();
            assert_eq!(ch.closed, [("n1".to_string(), None)].into());
            s.save_change(&state, &ch).await.expect("reopen");
        }
        let s = RedbStore::open(dir.path()).expect("reopen");
        let got = loaded(&s).expect("a state");
        assert_eq!(got.closed.keys().collect::<Vec<_>>(), ["n2"]);
        assert_eq!(got, state);
    }

    /// A file written by format 1 (one document) is converted on open; an older binary that
    /// opens it afterwards finds, under its key, a string it cannot decode as a state.
    #[test]
    fn a_format_1_document_is_converted_and_older_binaries_refuse_the_result() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut state = State::default();
        named(&mut state, "a");
        {
            let db = Database::create(dir.path().join("berth.redb")).expect("db");
            let tx = db.begin_write().expect("tx");
            tx.open_table(V1_TABLE)
                .expect("table")
                .insert(V1_KEY, serde_json::to_vec(&state).expect("doc").as_slice())
                .expect("insert");
            tx.commit().expect("commit");
        }
        let s = RedbStore::open(dir.path()).expect("open converts");
        assert_eq!(loaded(&s), Some(state));
        let tx = s.db.begin_read().expect("read");
        let old = tx.open_table(V1_TABLE).expect("v1 table");
        let v = old.get(V1_KEY).expect("get").expect("kept");
        let e = serde_json::from_slice::<State>(v.value()).expect_err("not a state");
        assert!(
            e.to_string().contains("downgrades are not supported"),
            "{e}"
        );
    }

    /// The redb store's work is done by the call itself, before any poll: the writer thread
    /// that calls it blocks on the disk, as it did behind the synchronous trait, and no
    /// runtime is needed to drive it.
    #[test]
    fn redb_saves_at_the_call_without_a_runtime() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = RedbStore::open(dir.path()).expect("open");
        let mut state = State::default();
        named(&mut state, "x");
        let (c, _) = state.take_change();
        let pending = s.save_change(&state, &c);
        assert_eq!(loaded(&s).as_ref(), Some(&state));
        drop(pending);
    }
}
