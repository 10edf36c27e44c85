//! The bodies of the control service's requests and replies, one set for both ends:
//! `control::api` serves them and `client` sends them, so the two cannot drift. Flocker's
//! dataset configuration is the model's `Dataset` as stored (`DatasetConfig`); the shapes under
//! `/v1/berth/` (the executor contract and the agents' calls) are defined here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::model::{AssignMode, Dataset as DatasetConfig, Node as NodeRecord};
use crate::model::{Dataset, State};
use crate::options::META_PROFILE;

/// `POST /v1/configuration/datasets`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateDataset {
    pub primary: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_id: Option<String>,
    #[serde(default)]
    pub maximum_size: Option<u64>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// `POST /v1/configuration/datasets/{id}`: a Flocker move (`force` for a failover from a node
/// declared dead).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveDataset {
    pub primary: String,
    #[serde(default)]
    pub force: bool,
}

/// `POST /v1/configuration/leases`; `expires` in seconds from now, `null` for never.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    pub dataset_id: String,
    pub node_uuid: String,
    pub expires: Option<f64>,
}

/// A lease as listed: `expires` is the seconds left.
pub type LeaseRecord = LeaseRequest;

/// `POST /v1/state/nodes`: an agent registering itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterNode {
    pub uuid: String,
    pub host: String,
    pub transfer: String,
}

/// `POST /v1/state/datasets`: the copies an agent holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldReport {
    pub node_uuid: String,
    pub datasets: Vec<HeldCopy>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldCopy {
    pub dataset_id: String,
    pub path: String,
    pub epoch: u64,
}

/// An entry of `GET /v1/state/datasets`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateDataset {
    pub dataset_id: String,
    pub primary: String,
    pub maximum_size: Option<u64>,
    pub path: String,
}

/// Every error reply: Flocker's `description` (and `errors` on a 400), plus the current
/// `epoch` on a 409 refusing an executor command, so the executor re-reads and re-plans.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// On a 423 refusing a fence or an assignment: how many ms until the lease of the node
    /// holding the mount runs out, after which the same request succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// On a 503 from a replicated member that does not serve: the leader's URL, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
}

/// `POST /v1/berth/nodes/{node}/heartbeat`: an agent renewing its node's lease, with what it
/// needs to honour one, so a lease it could not honour is refused (400) rather than granted.
// Unknown fields are allowed: agents and the control service are upgraded one at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// How often the agent heartbeats.
    pub interval_ms: u64,
    /// How long the agent allows itself to stop its containers.
    pub self_fence_deadline_ms: u64,
    /// How far the agent's clock may run apart from the control service's over one lease.
    pub drift_margin_ms: u64,
    /// Whether the agent reaches its node's Docker Engine. One that does not could not stop its
    /// containers if it lost its lease, so it is granted none. Absent (an older agent): true.
    #[serde(default = "reachable")]
    pub docker_reachable: bool,
}

fn reachable() -> bool {
    true
}

/// The reply to a heartbeat: the lease granted, in ms. The agent counts it from when it *sent*
/// the heartbeat, on its own monotonic clock, so its lease never ends after the control
/// service's (which counts from receipt). 0 for a node declared dead: it must stop now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    pub lease_ms: u64,
    /// The node was declared dead by an operator; only re-registering (an agent restart) undoes
    /// that.
    pub dead: bool,
    /// How many nodes are registered: an agent in failsafe mode refreshes its list of peers
    /// when this differs from the list it holds, and goes on in failsafe only with a list that
    /// matched the last grant ("Fencing", rule 9). 0 from a service that does not say.
    #[serde(default)]
    pub nodes: u64,
}

/// An entry of `GET /v1/berth/nodes`: one registered node's liveness, as of the reply, measured
/// on the control service's monotonic clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLiveness {
    pub node: String,
    pub host: String,
    /// Heartbeated within `--heartbeat-interval × --heartbeat-misses`, and not declared dead.
    pub alive: bool,
    /// Since its last heartbeat (`null`: none since the control service started).
    pub last_heartbeat_age_ms: Option<u64>,
    /// With no heartbeat since this control instance started or took over the lead: for how
    /// long, once that is a whole detection window (`null` before, and from older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unheard_for_ms: Option<u64>,
    /// Until its lease ends (0: ended; its agent has stopped every container using a Berth
    /// volume). A fence or an assignment taking a volume it holds waits for this.
    pub lease_expires_in_ms: u64,
    /// Declared dead by an operator (`POST /v1/berth/nodes/{node}/dead`).
    pub dead: bool,
    /// What its last heartbeat said of its Docker Engine: `false` while its agent cannot reach
    /// it, and is granted no lease (`null`: no heartbeat yet, or an older control service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_reachable: Option<bool>,
}

impl NodeLiveness {
    /// The failure detector's verdict on the node: `Some(true)` lost (declared dead, or not
    /// heard from within the window — including never, once a whole window has passed since
    /// the service started or took over), `Some(false)` alive, `None` no verdict yet (not heard
    /// from since the service started, for less than a window: a control service that just
    /// restarted must not read as every node dead). `berth run` and the simulator both judge by
    /// this.
    pub fn verdict(&self) -> Option<bool> {
        if self.last_heartbeat_age_ms.is_none() && self.unheard_for_ms.is_none() && !self.dead {
            return None;
        }
        Some(self.dead || !self.alive)
    }
}

/// `POST /v1/berth/mounts/{id}`: the single writable mount, for `node_uuid` at `epoch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimMount {
    pub node_uuid: String,
    pub epoch: u64,
}

/// `POST /v1/berth/volumes/{name}/fence`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FenceRequest {
    pub node: String,
    pub expect_epoch: u64,
}

/// `POST /v1/berth/volumes/{name}/assign`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignRequest {
    pub primary: String,
    pub epoch: u64,
    pub mode: AssignMode,
}

/// `POST /v1/berth/volumes/{name}/standbys/{node}`: a standby finished a ship from the
/// primary's copy at `epoch`, begun `age_ms` ago (the standby's own monotonic clock, so no two
/// clocks are compared), fetching `bytes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StandbyReport {
    pub epoch: u64,
    pub age_ms: u64,
    pub bytes: u64,
}

/// `POST /v1/berth/credentials/verify`: which node a presented credential belongs to (agents
/// check peers at their transfer endpoints this way, holding no cluster secret themselves).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyCredential {
    pub credential: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifiedCredential {
    pub node: String,
}

/// One standby copy as the read endpoints show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StandbyRecord {
    pub node: String,
    /// The epoch of the primary copy its last complete ship came from (`null`: nothing usable).
    pub epoch: Option<u64>,
    /// Milliseconds of possible writes it lacks: the RPO of promoting it now (`null`: unknown).
    pub lag_ms: Option<u64>,
    /// Bytes its last ship had to fetch.
    pub lag_bytes: Option<u64>,
    /// Its agent's transfer endpoint (`host:port`), where the primary asks it to ship.
    #[serde(default)]
    pub transfer: Option<String>,
}

/// The newest whole copy a move brings to the new primary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopySource {
    pub node: String,
    /// The epoch that copy is whole for; the puller refuses a source at any other.
    pub epoch: Option<u64>,
    /// Its agent's transfer endpoint, if registered.
    pub transfer: Option<String>,
}

/// `GET /v1/berth/volumes/{name}`, an entry of `GET /v1/berth/volumes`, and the reply to fence
/// and assign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub name: String,
    pub dataset_id: String,
    pub epoch: u64,
    /// The node that may mount at this epoch; `null` while fenced.
    pub primary: Option<String>,
    pub fenced_from: Option<String>,
    pub backend: String,
    pub mounted_on: Option<String>,
    pub standbys: Vec<StandbyRecord>,
    /// Nodes holding a whole copy at the current epoch.
    pub whole_copy_on: Vec<String>,
    pub replicas: u32,
    pub maximum_size: Option<u64>,
    pub profile: Option<String>,
    /// Bumped by every change to this volume alone.
    pub version: u64,
    /// Where the primary's copy at this epoch comes from, when it is not there yet.
    pub source: Option<CopySource>,
    /// The primary starts from a fresh empty copy at this epoch (`recreate`).
    pub recreated: bool,
    /// The primary's standby copy is the data at this epoch (`promote`).
    pub promoted: bool,
    /// The last assignment's mode, if one made this epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned: Option<AssignMode>,
    /// After a promotion: how many ms of possible writes the promoted copy lacked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_ms: Option<u64>,
    /// After a promotion: how many bytes its last ship had to fetch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<u64>,
}

impl VolumeRecord {
    /// The record of `d` as of `now_ms` (control clock).
    pub fn of(d: &Dataset, s: &State, now_ms: u64) -> VolumeRecord {
        let transfer = |n: &str| s.nodes.get(n).map(|n| n.transfer.clone());
        let end = if d.fenced {
            d.fenced_at_ms.unwrap_or(now_ms)
        } else {
            now_ms
        };
        let standbys = d
            .standbys
            .iter()
            .map(|(n, sb)| StandbyRecord {
                node: n.clone(),
                epoch: sb.epoch,
                lag_ms: d.standby_lag_ms(n, end),
                lag_bytes: sb.lag_bytes,
                transfer: transfer(n),
            })
            .collect();
        let promotion = d
            .assignment
            .as_ref()
            .filter(|a| a.epoch == d.epoch && a.mode == AssignMode::Promote);
        VolumeRecord {
            name: d.name().unwrap_or_default().to_string(),
            dataset_id: d.dataset_id.clone(),
            epoch: d.epoch,
            primary: d.primary_now().map(str::to_string),
            fenced_from: d.fenced_from.clone(),
            backend: d.backend().as_str().to_string(),
            mounted_on: d.mounted_on.clone(),
            standbys,
            whole_copy_on: d.whole_copy_on(s),
            replicas: d.replicas(),
            maximum_size: d.maximum_size,
            profile: d.metadata.get(META_PROFILE).cloned(),
            version: d.version,
            source: d.previous_primary.as_ref().map(|n| CopySource {
                node: n.clone(),
                epoch: d.source_epoch,
                transfer: transfer(n),
            }),
            recreated: d.recreated_at == Some(d.epoch),
            promoted: d.promoted_at == Some(d.epoch),
            assigned: d
                .assignment
                .as_ref()
                .filter(|a| a.epoch == d.epoch)
                .map(|a| a.mode),
            lag_ms: promotion.and_then(|a| a.lag_ms),
            lag_bytes: promotion.and_then(|a| a.lag_bytes),
        }
    }

    /// Whether `node` may mount at this epoch.
    pub fn is_primary(&self, node: &str) -> bool {
        self.primary.as_deref() == Some(node)
    }
}

/// `POST /v1/berth/leaders/{name}`: an instance asking for (or renewing) leader lock `name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderRequest {
    pub holder: String,
    /// How long this renewal keeps the lock, from when the caller sent it.
    pub ttl_ms: u64,
}

/// The answer: who holds the lock now; `granted` when it is the caller, until `ttl_ms` after
/// the caller sent the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderReply {
    pub holder: Option<String>,
    pub granted: bool,
    pub ttl_ms: u64,
    /// When granted, the lock's epoch: the fencing token of the holder's journal writes. 0
    /// from a control service older than epochs (whose locks have no journal).
    #[serde(default)]
    pub epoch: u64,
}

/// `PUT /v1/berth/journals/{name}`: the holder writes the lock's journal at its epoch
/// (refused with 409 unless it holds the lock at that epoch, its grant running); the same shape
/// comes back from `GET`.
pub use crate::model::LeaderJournal;

/// Header carrying the configuration tag.
pub const TAG_HEADER: &str = "x-configuration-tag";
/// Header making a configuration change conditional.
pub const IF_MATCHES_HEADER: &str = "x-if-configuration-matches";
