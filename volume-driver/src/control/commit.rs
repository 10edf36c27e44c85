//! Group commit: one writer thread applies the changes of concurrent requests in arrival order to
//! one copy of the state and persists them together, so a burst of N requests costs one store
//! write (one fsync) instead of N. Nobody sees a change before it is durable, and a failed write
//! fails every request of its batch and changes nothing.
//!
//! This relies on the model's rule that a refused change changes nothing: a refused request in
//! a batch leaves no trace in what the others commit.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use super::model::{ControlError, State};
use crate::store::Store;

/// Most requests persisted by one store write.
const MAX_BATCH: usize = 512;

/// Why a write did not happen.
#[derive(Debug)]
pub enum WriteError {
    /// The model refused it.
    Control(ControlError),
    /// The store failed; nothing of its batch was applied.
    Store(String),
}

type Finish = Box<dyn FnOnce(Result<String, String>) + Send>;
type Op = Box<dyn FnOnce(&mut State) -> Finish + Send>;

/// The committed state and the queue of changes to it.
pub struct Committer {
    state: Arc<Mutex<State>>,
    ops: Mutex<mpsc::Sender<Op>>,
}

impl Committer {
    /// Starts the writer thread over `state`, which `store` already holds.
    pub fn start(state: State, store: Box<dyn Store>) -> std::io::Result<Committer> {
        let state = Arc::new(Mutex::new(state));
        let (tx, rx) = mpsc::channel::<Op>();
        let shared = state.clone();
        // The writer is a thread of its own, so a local store's fsync never holds a runtime
        // worker; a remote store's save (Consul) is awaited there through the caller's runtime,
        // whose threads drive its IO (`Handle::block_on`: no worker is blocked, and a
        // current-thread runtime works too while its thread waits in `block_on`). Without a
        // runtime, the thread brings its own.
        let driver = match tokio::runtime::Handle::try_current() {
            Ok(h) => Driver::Caller(h),
            Err(_) => Driver::Own(
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?,
            ),
        };
        std::thread::Builder::new()
            .name("berth-commit".into())
            .spawn(move || writer(shared, store, rx, driver))?;
        Ok(Committer {
            state,
            ops: Mutex::new(tx),
        })
    }

    /// Runs `f` on the committed state.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&s)
    }

    /// Applies `f`, persists it with whatever else is queued, and returns its result and the
    /// configuration tag after the batch.
    pub async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut State) -> Result<T, ControlError> + Send + 'static,
    ) -> Result<(T, String), WriteError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let op: Op = Box::new(move |s: &mut State| {
            let out = f(s);
            Box::new(move |commit: Result<String, String>| {
                let r = match (out, commit) {
                    (Err(e), _) => Err(WriteError::Control(e)),
                    (Ok(_), Err(e)) => Err(WriteError::Store(e)),
                    (Ok(v), Ok(tag)) => Ok((v, tag)),
                };
                let _ = tx.send(r);
            })
        });
        let sent = self
            .ops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(op)
            .is_ok();
        if !sent {
            return Err(WriteError::Store("the writer thread has stopped".into()));
        }
        rx.await
            .unwrap_or_else(|_| Err(WriteError::Store("the writer thread has stopped".into())))
    }
}

/// What runs a store's futures on the writer thread.
enum Driver {
    Caller(tokio::runtime::Handle),
    Own(tokio::runtime::Runtime),
}

impl Driver {
    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        match self {
            Driver::Caller(h) => h.block_on(f),
            Driver::Own(rt) => rt.block_on(f),
        }
    }
}

fn writer(state: Arc<Mutex<State>>, store: Box<dyn Store>, rx: mpsc::Receiver<Op>, driver: Driver) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let mut next = state.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let finish: Vec<Finish> = batch.into_iter().map(|op| op(&mut next)).collect();
        // Every accepted change bumps the generation (the model's rule), which spares comparing
        // the whole document; debug builds (every test) check the rule.
        let changed = {
            let cur = state.lock().unwrap_or_else(|p| p.into_inner());
            debug_assert_eq!(
                cur.generation != next.generation,
                *cur != next,
                "a change that did not bump the generation, or a bump without a change"
            );
            cur.generation != next.generation
        };
        let outcome = if changed {
            serde_json::to_vec(&next)
                .map_err(|e| e.to_string())
                .and_then(|doc| driver.block_on(store.save(&doc)).map_err(|e| e.to_string()))
        } else {
            Ok(())
        };
        let tag = match outcome {
            Ok(()) => {
                let tag = next.tag();
                *state.lock().unwrap_or_else(|p| p.into_inner()) = next;
                Ok(tag)
            }
            Err(e) => {
                tracing::error!(error = %e, "control state not persisted; the batch is refused");
                Err(e)
            }
        };
        for f in finish {
            f(tag.clone());
        }
    }
}
