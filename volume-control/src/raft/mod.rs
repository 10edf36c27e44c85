//! The control service replicated among the managers without Consul: its state document is
//! the state machine of a Raft group (openraft), its log and snapshots in redb beside it.
//!
//! Only the leader serves, and only once it has applied everything committed before its term
//! (`control::replicated` holds that rule). A write is acknowledged once a majority holds it,
//! so losing any minority of members loses no acknowledged change, and a leader that has lost
//! its majority cannot commit: two instances can never both change a dataset's primary.
//!
//! An entry carries what one committed batch changed (`Command::Change`, format 2), so it costs
//! the same at 100,000 datasets as at 100; snapshots stay whole documents. Members before
//! format 2 wrote, and can read, only whole documents (`Command::Doc`): a leader writes those
//! until every member has advertised format 2 on its status route (`Formats`), so a group can
//! be upgraded one member at a time. Once all have, an older binary can no longer rejoin
//! (downgrades are not supported). Format 3 adds lease closures (`berth_control_model::grants`,
//! "Fencing", rule 8): a leader closes nodes only once every member advertises format 3, since
//! a leader of format 2 would grant a closed node a lease without reopening it.

pub mod log;
pub mod machine;
pub mod network;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_control_model::model::{Change, State};
pub use machine::Machine;
use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError, StoreFuture};

openraft::declare_raft_types!(
    /// Berth's Raft types: entries carry what a committed batch changed.
    pub TypeConfig:
        D = Command,
        R = Applied,
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// One entry's payload. Untagged, so the entries of format 1 (a JSON string: the document)
/// read as `Doc` and those of format 2 (an object) as `Change`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Command {
    /// The whole control state document (JSON) after a committed batch (format 1).
    Doc(String),
    /// The records a committed batch changed and the counters after it (format 2).
    Change(Box<Change>),
}

/// The entry format this binary writes once every member reads it.
pub const ENTRY_FORMAT: u32 = 3;

/// The first format whose entries carry changes rather than whole documents.
const CHANGE_FORMAT: u32 = 2;

/// The first format whose members honour lease closures.
const CLOSURE_FORMAT: u32 = 3;

/// What applying an entry returns: nothing beyond its having been applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied;

pub type Raft = openraft::Raft<TypeConfig>;

/// Who is in the group and how fast it reacts.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This member's ID.
    pub id: u64,
    /// Every member (this one included): ID → the `host:port` its control API listens on.
    pub peers: BTreeMap<u64, String>,
    /// How often the leader heartbeats its followers.
    pub heartbeat: Duration,
    /// A follower that hears no leader for a random time in `[election, 2 × election)` stands.
    pub election: Duration,
    /// Set when the members serve TLS (`--tls-cert`): peers are reached over it, trusting this.
    pub tls: Option<berth_volume_client::tls::ClientTls>,
    /// The entry format this member advertises and so is sent ([`ENTRY_FORMAT`]); 1 acts out a
    /// member from before format 2, for the rolling-upgrade test.
    pub entry_format: u32,
}

impl Settings {
    /// Defaults sized for agents' leases: with 150 ms heartbeats and 450–900 ms elections
    /// (openraft also lets a follower vote only once its leader has been silent for the
    /// longest election timeout), a new leader should serve 1–2 s after the old one dies,
    /// inside the 2.5 s an agent with the default lease (5 s) and self-fence deadline (2 s +
    /// 0.5 s drift) waits after its last renewal before it stops its containers.
    pub fn new(id: u64, peers: BTreeMap<u64, String>) -> Settings {
        Settings {
            id,
            peers,
            tls: None,
            entry_format: ENTRY_FORMAT,
            heartbeat: Duration::from_millis(150),
            election: Duration::from_millis(450),
        }
    }

    /// Checks the membership; the error is worded for the operator.
    pub fn validate(&self) -> Result<(), String> {
        if !self.peers.contains_key(&self.id) {
            return Err(format!(
                "--raft-id {} is not among the --peer IDs {:?}",
                self.id,
                self.peers.keys().collect::<Vec<_>>()
            ));
        }
        if self.peers.len() == 2 {
            return Err(
                "two members cannot outlive either one's loss (a majority of 2 is 2); \
                        give one or three (or five)"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Whether this member may serve, as the control service's leadership loop decides it.
#[derive(Default)]
pub struct Gate {
    /// The term this member serves as leader in, once caught up.
    serving: Mutex<Option<u64>>,
    /// Woken when a write fails, so the loop re-checks leadership and re-syncs.
    resync: tokio::sync::Notify,
}

impl Gate {
    /// The term this member serves in, if it does.
    pub fn serving(&self) -> Option<u64> {
        *self.serving.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn serve(&self, term: u64) {
        *self.serving.lock().unwrap_or_else(|p| p.into_inner()) = Some(term);
    }

    /// Stops serving until the leadership loop has checked and caught up again.
    pub fn stop(&self) {
        *self.serving.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub fn lost(&self) {
        self.stop();
        self.resync.notify_one();
    }

    /// Resolves when a write has failed since the last call.
    pub async fn resync_wanted(&self) {
        self.resync.notified().await
    }
}

/// What `GET /v1/berth/raft` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub id: u64,
    pub leader: Option<u64>,
    pub term: u64,
    /// Whether this member is serving the API (the leader, caught up).
    pub serving: bool,
    pub last_applied: Option<u64>,
    pub members: BTreeMap<u64, String>,
    /// The newest entry format this member reads; absent (0) from members before format 2,
    /// which read whole documents only.
    #[serde(default)]
    pub entry_format: u32,
}

/// A running member.
#[derive(Clone)]
pub struct Replica {
    pub id: u64,
    pub raft: Raft,
    machine: Machine,
    pub gate: Arc<Gate>,
    peers: BTreeMap<u64, String>,
    tls: bool,
    formats: Arc<Formats>,
    entry_format: u32,
}

/// Whether every member reads format-2 entries, as their status routes say; learnt once and
/// kept (a member's format only grows, downgrades being unsupported).
#[derive(Default)]
pub struct Formats {
    all_read_changes: AtomicBool,
    /// Every member honours lease closures (format 3).
    all_close_leases: AtomicBool,
    /// Whole documents written since the last snapshot this member asked for.
    docs_since_snapshot: AtomicU64,
}

impl Formats {
    /// Whether entries may carry changes rather than whole documents.
    pub fn changes(&self) -> bool {
        self.all_read_changes.load(Ordering::Acquire)
    }

    /// Whether a leader may close nodes' leases (`grants`).
    pub fn closures(&self) -> bool {
        self.all_close_leases.load(Ordering::Acquire)
    }
}

/// While a leader writes whole documents, it snapshots after this many of them, as it did
/// before format 2, so the log does not keep thousands of documents.
const DOCS_PER_SNAPSHOT: u64 = 64;

/// Asks every member's status route for its entry format until all advertise this binary's.
async fn learn_formats(
    formats: Arc<Formats>,
    me: u64,
    mine: u32,
    peers: BTreeMap<u64, String>,
    token: Option<String>,
    tls: Option<berth_volume_client::tls::ClientTls>,
) {
    let mut told = std::collections::BTreeSet::new();
    loop {
        let mut least = mine;
        for (id, addr) in &peers {
            if *id == me {
                continue;
            }
            let f = network::entry_format(addr, token.as_deref(), tls.as_ref()).await;
            match f {
                Ok(f) if f >= ENTRY_FORMAT => {}
                Ok(f) => {
                    least = least.min(f);
                    if f < CHANGE_FORMAT && told.insert(*id) {
                        tracing::warn!(
                            member = id,
                            addr = %addr,
                            entry_format = f,
                            "a control member runs an older berth-volume: Raft entries carry the \
                             whole state document until every member is upgraded"
                        );
                    }
                }
                // Unreachable for now: asked again.
                Err(_) => least = 0,
            }
        }
        if least >= CHANGE_FORMAT && !formats.changes() {
            formats.all_read_changes.store(true, Ordering::Release);
            tracing::info!(id = me, "every control member reads format-2 Raft entries");
        }
        if least >= CLOSURE_FORMAT {
            formats.all_close_leases.store(true, Ordering::Release);
            tracing::info!(id = me, "every control member honours lease closures");
        }
        if least >= ENTRY_FORMAT.min(mine) && least >= CHANGE_FORMAT {
            return;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

impl Replica {
    /// Opens `DIR/raft.redb` and starts the member; the first start of every member forms the
    /// group from `settings.peers` (each proposes the same membership, which is safe).
    pub async fn start(
        dir: &Path,
        settings: Settings,
        token: Option<String>,
    ) -> Result<Replica, StoreError> {
        settings.validate().map_err(StoreError::Raft)?;
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.display().to_string(),
            source,
        })?;
        let db = redb::Database::create(dir.join("raft.redb"))
            .map_err(|e| StoreError::Redb(e.to_string()))?;
        let db = Arc::new(db);
        let machine = Machine::open(db.clone()).map_err(|e| StoreError::Raft(e.to_string()))?;
        let hb = settings.heartbeat.as_millis() as u64;
        let el = settings.election.as_millis() as u64;
        let config = openraft::Config {
            cluster_name: "berth-control".into(),
            heartbeat_interval: hb,
            election_timeout_min: el,
            election_timeout_max: el * 2,
            // An entry is one batch's records (a whole document only while an older member
            // is in the group, which is why appends stay small: openraft gives one a heartbeat
            // interval to finish). A snapshot is the whole document, so it is taken after
            // thousands of entries, not tens; `RaftStore` asks for one every
            // `DOCS_PER_SNAPSHOT` while it writes whole documents.
            max_payload_entries: 16,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(4096),
            max_in_snapshot_log_to_keep: 256,
            ..Default::default()
        }
        .validate()
        .map_err(|e| StoreError::Raft(e.to_string()))?;
        let raft = Raft::new(
            settings.id,
            Arc::new(config),
            network::Network::new(token.clone(), settings.tls.clone()),
            log::LogStore::new(db),
            machine.clone(),
        )
        .await
        .map_err(|e| StoreError::Raft(e.to_string()))?;
        let members: BTreeMap<u64, BasicNode> = settings
            .peers
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr)))
            .collect();
        match raft.initialize(members).await {
            Ok(()) => tracing::info!(id = settings.id, "raft group formed"),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                tracing::info!(id = settings.id, "raft group already formed; rejoining")
            }
            Err(e) => return Err(StoreError::Raft(format!("forming the raft group: {e}"))),
        }
        let formats = Arc::new(Formats::default());
        tokio::spawn(learn_formats(
            formats.clone(),
            settings.id,
            settings.entry_format,
            settings.peers.clone(),
            token,
            settings.tls.clone(),
        ));
        Ok(Replica {
            id: settings.id,
            raft,
            machine,
            gate: Arc::default(),
            peers: settings.peers,
            tls: settings.tls.is_some(),
            formats,
            entry_format: settings.entry_format,
        })
    }

    /// The store the control service's writer saves through.
    pub fn store(&self) -> Box<dyn Store> {
        Box::new(RaftStore {
            raft: self.raft.clone(),
            machine: self.machine.clone(),
            gate: self.gate.clone(),
            formats: self.formats.clone(),
        })
    }

    /// Whether this member, leading, writes entries as changes (every member reads them) rather
    /// than whole documents.
    pub fn writes_changes(&self) -> bool {
        self.formats.changes()
    }

    /// Whether this member, leading, may close nodes' leases: every member honours closures.
    pub fn closes_leases(&self) -> bool {
        self.formats.closures()
    }

    /// When this member applied each lease closure it holds (`grants`): never before the
    /// closure was proposed.
    pub fn closures_applied(&self) -> BTreeMap<String, std::time::Instant> {
        self.machine.closures_applied()
    }

    /// The replicated document as this member has applied it.
    pub fn doc(&self) -> Option<String> {
        self.machine.doc()
    }

    /// Waits until this member, as leader, has applied everything committed before now; false
    /// if it is not the leader.
    pub async fn catch_up(&self) -> bool {
        self.raft.ensure_linearizable().await.is_ok()
    }

    /// Whether a majority still follows this member, asked of them now: a lease granted after a
    /// yes cannot overlap a newer leader's (see `control::replicated`).
    pub async fn confirm_leader(&self) -> bool {
        let ask = self.raft.get_read_log_id();
        matches!(
            tokio::time::timeout(Duration::from_secs(1), ask).await,
            Ok(Ok(_))
        )
    }

    /// The leader's API URL (`http://` or, when the members serve TLS, `https://`), as far as
    /// this member knows.
    pub fn leader_url(&self) -> Option<String> {
        let scheme = if self.tls { "https" } else { "http" };
        self.leader_addr().map(|a| format!("{scheme}://{a}"))
    }

    /// The leader's API address, as far as this member knows.
    pub fn leader_addr(&self) -> Option<String> {
        let leader = self.raft.metrics().borrow().current_leader?;
        self.peers.get(&leader).cloned()
    }

    /// This member's view of the group.
    pub fn status(&self) -> Status {
        let m = self.raft.metrics().borrow().clone();
        Status {
            id: self.id,
            leader: m.current_leader,
            term: m.current_term,
            serving: self.gate.serving().is_some(),
            last_applied: self.machine.applied_index(),
            members: self.peers.clone(),
            entry_format: self.entry_format,
        }
    }

    /// The term this member leads in, if it is the leader.
    pub fn leading_term(&self) -> Option<u64> {
        let m = self.raft.metrics().borrow().clone();
        (m.state == ServerState::Leader && m.current_leader == Some(self.id))
            .then_some(m.current_term)
    }
}

/// The control service's store on a Raft member: a save is one log entry, durable once a
/// majority holds it; refused on a member that is not the leader.
struct RaftStore {
    raft: Raft,
    machine: Machine,
    gate: Arc<Gate>,
    formats: Arc<Formats>,
}

impl RaftStore {
    async fn write(&self, c: Command) -> Result<(), StoreError> {
        let doc = matches!(c, Command::Doc(_));
        match self.raft.client_write(c).await {
            Ok(_) => {
                if doc
                    && self
                        .formats
                        .docs_since_snapshot
                        .fetch_add(1, Ordering::Relaxed)
                        + 1
                        >= DOCS_PER_SNAPSHOT
                {
                    self.formats.docs_since_snapshot.store(0, Ordering::Relaxed);
                    let _ = self.raft.trigger().snapshot().await;
                }
                Ok(())
            }
            Err(e) => {
                // Whatever failed, the writer's copy may now differ from the log's (an entry
                // may still commit): stop serving until the loop has re-read it.
                self.gate.lost();
                Err(match e {
                    RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
                        StoreError::NotLeader
                    }
                    e => StoreError::Raft(e.to_string()),
                })
            }
        }
    }
}

impl Store for RaftStore {
    fn load(&self) -> StoreFuture<'_, Option<Vec<u8>>> {
        let doc = self.machine.doc().map(String::into_bytes);
        Box::pin(std::future::ready(Ok(doc)))
    }

    fn save<'a>(&'a self, doc: &'a [u8]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let doc = String::from_utf8(doc.to_vec())
                .map_err(|e| StoreError::Raft(format!("state document is not UTF-8: {e}")))?;
            self.write(Command::Doc(doc)).await
        })
    }

    fn save_change<'a>(&'a self, next: &'a State, change: &'a Change) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let c = if self.formats.changes() {
                Command::Change(Box::new(change.clone()))
            } else {
                Command::Doc(serde_json::to_string(next).map_err(StoreError::Decode)?)
            };
            self.write(c).await
        })
    }
}
