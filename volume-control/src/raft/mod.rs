//! The control service replicated among the managers without Consul: its state document is
//! the state machine of a Raft group (openraft), its log and snapshots in redb beside it.
//!
//! Only the leader serves, and only once it has applied everything committed before its term
//! (`control::replicated` holds that rule). A write is acknowledged once a majority holds it,
//! so losing any minority of members loses no acknowledged change, and a leader that has lost
//! its majority cannot commit: two instances can never both change a dataset's primary.

pub mod log;
pub mod machine;
pub mod network;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use machine::Machine;
use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError, StoreFuture};

openraft::declare_raft_types!(
    /// Berth's Raft types: entries carry the whole control state document.
    pub TypeConfig:
        D = Doc,
        R = Applied,
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// One entry's payload: the control state document (JSON) after a committed batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Doc(pub String);

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
            // Every entry is a whole document: few per append (openraft gives an append one
            // heartbeat interval to finish), snapshot often, keep few entries behind a snapshot.
            max_payload_entries: 4,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(64),
            max_in_snapshot_log_to_keep: 16,
            ..Default::default()
        }
        .validate()
        .map_err(|e| StoreError::Raft(e.to_string()))?;
        let raft = Raft::new(
            settings.id,
            Arc::new(config),
            network::Network::new(token, settings.tls.clone()),
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
        Ok(Replica {
            id: settings.id,
            raft,
            machine,
            gate: Arc::default(),
            peers: settings.peers,
            tls: settings.tls.is_some(),
        })
    }

    /// The store the control service's writer saves through.
    pub fn store(&self) -> Box<dyn Store> {
        Box::new(RaftStore {
            raft: self.raft.clone(),
            machine: self.machine.clone(),
            gate: self.gate.clone(),
        })
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
            match self.raft.client_write(Doc(doc)).await {
                Ok(_) => Ok(()),
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
        })
    }
}
