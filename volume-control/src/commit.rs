//! Group commit: one writer thread applies the changes of concurrent requests in arrival order to
//! one copy of the state and persists them together, so a burst of N requests costs one store
//! write (one fsync) instead of N. Nobody sees a change before it is durable, and a failed write
//! fails every request of its batch and changes nothing.
//!
//! This relies on the model's rule that a refused change changes nothing: a refused request in
//! a batch leaves no trace in what the others commit.
//!
//! A batch costs what it changed, not what the state holds: the writer applies requests to a
//! working copy of its own, takes the records they changed (`State::take_change`), persists
//! those (`Store::save_change`), and only then applies the same change to the copy readers see;
//! a batch that cannot be persisted is undone on the working copy by the change's inverse.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use berth_control_model::model::{ControlError, State};

use crate::store::{Store, StoreError};

/// Most requests persisted by one store write.
const MAX_BATCH: usize = 512;

/// Why a write did not happen.
#[derive(Debug)]
pub enum WriteError {
    /// The model refused it.
    Control(ControlError),
    /// The store failed; nothing of its batch was applied.
    Store(String),
    /// A replicated store whose member is not the leader: nothing was written.
    NotLeader,
}

/// Why a batch was not persisted, as every request of it is told.
#[derive(Debug, Clone)]
enum Failed {
    Store(String),
    NotLeader,
}

type Finish = Box<dyn FnOnce(Result<String, Failed>) + Send>;
type Op = Box<dyn FnOnce(&mut State) -> Finish + Send>;

/// What the writer thread takes, in order.
enum Msg {
    Op(Op),
    /// Replace the state with one the store already holds (a new Raft leader's catch-up).
    Reset(Box<State>, tokio::sync::oneshot::Sender<()>),
    /// Replace the state with the store's document, read here, between two batches (a newly
    /// elected instance taking up the shared store's state).
    #[cfg(feature = "consul")]
    Reload(tokio::sync::oneshot::Sender<Result<(), String>>),
}

/// The committed state and the queue of changes to it.
pub struct Committer {
    state: Arc<Mutex<State>>,
    ops: Mutex<mpsc::Sender<Msg>>,
}

impl Committer {
    /// Starts the writer thread over `state`, which `store` already holds.
    pub fn start(state: State, store: Box<dyn Store>) -> std::io::Result<Committer> {
        let state = Arc::new(Mutex::new(state));
        let (tx, rx) = mpsc::channel::<Msg>();
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
            Box::new(move |commit: Result<String, Failed>| {
                let r = match (out, commit) {
                    (Err(e), _) => Err(WriteError::Control(e)),
                    (Ok(_), Err(Failed::Store(e))) => Err(WriteError::Store(e)),
                    (Ok(_), Err(Failed::NotLeader)) => Err(WriteError::NotLeader),
                    (Ok(v), Ok(tag)) => Ok((v, tag)),
                };
                let _ = tx.send(r);
            })
        });
        let sent = self
            .ops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(Msg::Op(op))
            .is_ok();
        if !sent {
            return Err(WriteError::Store("the writer thread has stopped".into()));
        }
        rx.await
            .unwrap_or_else(|_| Err(WriteError::Store("the writer thread has stopped".into())))
    }

    /// Replaces the committed state with `state`, which the store already holds, after every
    /// write queued before this call: how a new Raft leader takes up the replicated document.
    pub async fn reset(&self, state: State) -> Result<(), WriteError> {
        self.ask(|done| Msg::Reset(Box::new(state), done)).await
    }

    /// Sends the writer `msg`, made with the sender of its answer, and awaits that answer.
    async fn ask<T>(
        &self,
        msg: impl FnOnce(tokio::sync::oneshot::Sender<T>) -> Msg,
    ) -> Result<T, WriteError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sent = self
            .ops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(msg(tx))
            .is_ok();
        if !sent {
            return Err(WriteError::Store("the writer thread has stopped".into()));
        }
        rx.await
            .map_err(|_| WriteError::Store("the writer thread has stopped".into()))
    }
}

#[cfg(feature = "consul")]
impl Committer {
    /// Replaces the committed state with the store's current document, read on the writer
    /// thread after every write queued before this call, so no batch of an earlier term lands
    /// between the read and the replacement.
    pub async fn reload(&self) -> Result<(), WriteError> {
        self.ask(Msg::Reload).await?.map_err(WriteError::Store)
    }
}

#[cfg(feature = "consul")]
/// The store's document as a state, or `Default` when none was ever saved.
async fn load_state(store: &dyn Store) -> Result<State, String> {
    let mut s: State = match store.load().await.map_err(|e| e.to_string())? {
        Some(doc) => serde_json::from_slice(&doc).map_err(|e| format!("state document: {e}"))?,
        None => State::default(),
    };
    s.reindex();
    Ok(s)
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

fn writer(
    state: Arc<Mutex<State>>,
    store: Box<dyn Store>,
    rx: mpsc::Receiver<Msg>,
    driver: Driver,
) {
    // The writer's own copy, which batches change before they are persisted; equal to `state`
    // between batches.
    let mut working = state.lock().unwrap_or_else(|p| p.into_inner()).clone();
    working.settle();
    let mut next_msg = None;
    loop {
        let first = match next_msg.take() {
            Some(m) => m,
            None => match rx.recv() {
                Ok(m) => m,
                Err(_) => return,
            },
        };
        let first = match first {
            Msg::Op(op) => op,
            Msg::Reset(s, done) => {
                working = *s;
                working.settle();
                *state.lock().unwrap_or_else(|p| p.into_inner()) = working.clone();
                let _ = done.send(());
                continue;
            }
            #[cfg(feature = "consul")]
            Msg::Reload(done) => {
                let loaded = driver.block_on(load_state(store.as_ref()));
                let r = loaded.map(|s| {
                    working = s;
                    working.settle();
                    *state.lock().unwrap_or_else(|p| p.into_inner()) = working.clone();
                });
                let _ = done.send(r);
                continue;
            }
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Msg::Op(op)) => batch.push(op),
                // A reset or reload ends the batch: it applies after the writes queued before it.
                Ok(reset) => {
                    next_msg = Some(reset);
                    break;
                }
                Err(_) => break,
            }
        }
        let finish: Vec<Finish> = batch.into_iter().map(|op| op(&mut working)).collect();
        let (change, undo) = working.take_change();
        // Every accepted change bumps the generation (the model's rule), which spares looking
        // further; debug builds (every test) check the rule.
        let changed = change.generation != undo.generation;
        debug_assert_eq!(
            changed,
            !change.no_records() || change.clock_ms != undo.clock_ms,
            "a change that did not bump the generation, or a bump without a change"
        );
        let outcome = if changed {
            driver
                .block_on(store.save_change(&working, &change))
                .map_err(|e| match e {
                    StoreError::NotLeader => Failed::NotLeader,
                    e => Failed::Store(e.to_string()),
                })
        } else {
            Ok(())
        };
        let tag = match outcome {
            Ok(()) => {
                let mut cur = state.lock().unwrap_or_else(|p| p.into_inner());
                cur.apply(&change);
                // The change lists every record the batch changed, or a reader (and the store)
                // would miss one: checked in debug builds, where it costs a full comparison.
                debug_assert!(*cur == working, "a change the batch's record list missed");
                Ok(working.tag())
            }
            Err(e) => {
                tracing::error!(error = ?e, "control state not persisted; the batch is refused");
                working.apply(&undo);
                Err(e)
            }
        };
        for f in finish {
            f(tag.clone());
        }
    }
}
