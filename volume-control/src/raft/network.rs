//! Raft's RPCs between control instances: JSON over the control service's own HTTP port, with
//! the cluster token, through `berth_volume_client`'s small HTTP client. The receiving side is
//! `replicated`'s `/v1/berth/raft/{append,vote,snapshot}`, which hands the request to openraft
//! and returns its `Result` as JSON.

use berth_volume_client::http_client::{self, Target};
use hyper::Method;
use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::TypeConfig;

/// The paths peers serve.
pub const APPEND: &str = "/v1/berth/raft/append";
pub const VOTE: &str = "/v1/berth/raft/vote";
pub const SNAPSHOT: &str = "/v1/berth/raft/snapshot";
/// A member's status (`Status`), which says the entry format it reads.
pub const STATUS: &str = "/v1/berth/raft";

/// Makes a client per peer.
#[derive(Clone)]
pub struct Network {
    token: Option<String>,
    tls: Option<berth_volume_client::tls::ClientTls>,
}

impl Network {
    /// `tls`: the members serve TLS, and peers are trusted by it.
    pub fn new(token: Option<String>, tls: Option<berth_volume_client::tls::ClientTls>) -> Network {
        Network { token, tls }
    }
}

/// One peer.
pub struct Peer {
    id: u64,
    target: Target,
    token: Option<String>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Peer {
        Peer {
            id: target,
            target: match &self.tls {
                Some(t) => Target::Tls(node.addr.clone(), t.clone()),
                None => Target::Tcp(node.addr.clone()),
            },
            token: self.token.clone(),
        }
    }
}

/// Why an RPC did not get the peer's answer.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failed(String);

impl Peer {
    async fn rpc<Req: Serialize, Resp: DeserializeOwned, E>(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, BasicNode, E>>
    where
        E: std::error::Error + DeserializeOwned,
    {
        let body = serde_json::to_vec(req)
            .map_err(|e| RPCError::Network(NetworkError::new(&Failed(e.to_string()))))?;
        let mut headers = vec![("content-type", "application/json".to_string())];
        if let Some(t) = &self.token {
            headers.push(("authorization", format!("Bearer {t}")));
        }
        let sent = http_client::send(&self.target, Method::POST, path, &headers, body);
        let reply = match tokio::time::timeout(option.hard_ttl(), sent).await {
            Err(_) => {
                let e = Failed(format!("peer {} did not answer {path} in time", self.id));
                return Err(RPCError::Unreachable(Unreachable::new(&e)));
            }
            // A peer that is down or cut off: openraft backs off before trying it again.
            Ok(Err(e)) => return Err(RPCError::Unreachable(Unreachable::new(&e))),
            Ok(Ok(r)) => r,
        };
        if !reply.status.is_success() {
            let e = Failed(format!(
                "peer {} answered {path} with {}: {}",
                self.id,
                reply.status,
                String::from_utf8_lossy(&reply.body)
            ));
            return Err(RPCError::Network(NetworkError::new(&e)));
        }
        let r: Result<Resp, E> = serde_json::from_slice(&reply.body).map_err(|e| {
            RPCError::Network(NetworkError::new(&Failed(format!(
                "peer {}'s answer to {path} does not decode: {e}",
                self.id
            ))))
        })?;
        r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.id, e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.rpc(APPEND, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.rpc(SNAPSHOT, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.rpc(VOTE, &rpc, &option).await
    }
}

/// The entry format the member at `addr` advertises on its status route (0: a member from
/// before format 2, whose status has no such field).
pub async fn entry_format(
    addr: &str,
    token: Option<&str>,
    tls: Option<&berth_volume_client::tls::ClientTls>,
) -> Result<u32, String> {
    #[derive(serde::Deserialize)]
    struct Advertised {
        #[serde(default)]
        entry_format: u32,
    }
    let target = match tls {
        Some(t) => Target::Tls(addr.to_string(), t.clone()),
        None => Target::Tcp(addr.to_string()),
    };
    let headers: Vec<(&str, String)> = token
        .map(|t| vec![("authorization", format!("Bearer {t}"))])
        .unwrap_or_default();
    let sent = http_client::send(&target, Method::GET, STATUS, &headers, Vec::new());
    let reply = tokio::time::timeout(std::time::Duration::from_secs(2), sent)
        .await
        .map_err(|_| format!("{addr} did not answer {STATUS} in time"))?
        .map_err(|e| e.to_string())?;
    if !reply.status.is_success() {
        return Err(format!("{addr} answered {STATUS} with {}", reply.status));
    }
    serde_json::from_slice::<Advertised>(&reply.body)
        .map(|a| a.entry_format)
        .map_err(|e| format!("{addr}'s status does not decode: {e}"))
}
