//! Where the failover executor's state is kept: written whole before any command it hands out
//! starts (the engine's [`berth_scheduler::executor::Driver`] says when), read back when this
//! daemon starts or takes the lead, so a daemon killed mid-failover (or the standby taking
//! over) resumes its commands in flight, each a no-op if it had taken effect.
//!
//! One trait, [`JournalStore`], three stores: a file ([`FileJournal`],
//! `--state-dir/executor.json`) for a daemon alone; with `--consul`, one Consul KV key fenced by
//! the leader session (`crate::consul::journal::ConsulJournal`); with `--elect`, the control
//! service's journal of the leader lock, fenced by the lock's epoch
//! (`crate::elect::ControlJournal`). Both shared stores implement the trait here, so this
//! module knows neither Consul nor the control service. The file is unfenced, and needs no
//! fence: only its own daemon, which is the only one acting, reads or writes it.

use std::path::{Path, PathBuf};

use berth_scheduler::executor::ExecutorState;
use futures_util::future::BoxFuture;

/// Why the executor's state was not persisted.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The store refused the write because this daemon no longer leads (its session does not
    /// hold the leader key) or another leader wrote the journal since this one read it.
    #[error("the journal write was refused: {0}")]
    Deposed(String),
    /// The store did not answer, or the journal was not read since this daemon took the lead.
    #[error("{0}")]
    Unavailable(String),
}

/// A place that keeps the executor's state.
pub trait JournalStore: Send + Sync + 'static {
    /// Whether the state must be read (again) before this daemon acts: a shared journal not
    /// read since this daemon took the lead, or whose last write failed.
    fn needs_load(&self) -> bool;

    /// Has the journal read again before the next write (a daemon that stops leading: another
    /// may write it meanwhile).
    fn forget(&self);

    /// The state last written; `None` if there is none. A state that does not decode is an
    /// error, never an empty state.
    fn load(&self) -> BoxFuture<'_, anyhow::Result<Option<ExecutorState>>>;

    /// Writes the state (serialised by the engine's driver); returns once it is durable.
    fn save<'a>(&'a self, state: &'a [u8]) -> BoxFuture<'a, Result<(), JournalError>>;
}

/// The journal of `berth run`.
pub struct Journal(Box<dyn JournalStore>);

impl Journal {
    /// `<state_dir>/executor.json`.
    pub fn new(state_dir: &Path) -> Journal {
        Journal::store(FileJournal::new(state_dir))
    }

    /// Any other store (the Consul journal).
    pub fn store(store: impl JournalStore) -> Journal {
        Journal(Box::new(store))
    }

    pub fn needs_load(&self) -> bool {
        self.0.needs_load()
    }

    pub fn forget(&self) {
        self.0.forget()
    }

    pub async fn load(&self) -> anyhow::Result<Option<ExecutorState>> {
        self.0.load().await
    }

    pub async fn save(&self, state: &[u8]) -> Result<(), JournalError> {
        self.0.save(state).await
    }
}

/// The state in one file, replaced whole (temp file, fsync, rename, fsync of the directory), so
/// a crash leaves the old or the new state, never a torn one. Read once, at start.
pub struct FileJournal {
    path: PathBuf,
}

impl FileJournal {
    /// `<state_dir>/executor.json`.
    pub fn new(state_dir: &Path) -> FileJournal {
        FileJournal {
            path: state_dir.join("executor.json"),
        }
    }
}

impl JournalStore for FileJournal {
    fn needs_load(&self) -> bool {
        false
    }

    fn forget(&self) {}

    fn load(&self) -> BoxFuture<'_, anyhow::Result<Option<ExecutorState>>> {
        Box::pin(async move {
            let path = &self.path;
            match std::fs::read(path) {
                Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(|e| {
                    anyhow::anyhow!("{}: not an executor state: {e}", path.display())
                })?)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
            }
        })
    }

    fn save<'a>(&'a self, state: &'a [u8]) -> BoxFuture<'a, Result<(), JournalError>> {
        Box::pin(async move {
            use std::io::Write;
            let path = &self.path;
            let tmp = path.with_extension("json.tmp");
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(state)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            if let Some(dir) = path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        })
    }
}
