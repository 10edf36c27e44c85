//! Moving a `local` dataset's bytes between agents: the new primary pulls from the old one.
//!
//! - `serve`: the source's endpoint (manifest by `stat`, digests on demand, one framed stream);
//! - `pull`: the receiver's side (decide, stream, verify, rename, prune, one `syncfs`);
//! - `wire`: the stream's framing;
//! - `hash_cache`: per-node digests keyed by `stat`, which make a repeat move incremental
//!   without reading unchanged files on either side.
//!
//! A full move reads the source once and writes the destination once, hashing on both sides as
//! the bytes pass. An interrupted move leaves only whole, verified files and resumes from them.

mod hash_cache;
mod pace;
mod pull;
mod serve;
pub mod wire;

pub use hash_cache::{HashCache, StatKey};
pub use pull::{pull, pull_until, remove_partials};
pub use serve::{guard, router};

use std::path::{Component, Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use berth_volume_client::http_client::HttpError;

/// How this node's moves behave, in both directions.
#[derive(Debug, Clone, Default)]
pub struct TransferOptions {
    /// Most bytes per second this node sends or receives for moves, so a move does not starve
    /// the disk or link its running services use (`None`: as fast as it goes).
    pub rate_limit: Option<u64>,
    /// What this node presents to other nodes' transfer endpoints: the cluster token, or this
    /// node's credential. With one set, this node's own endpoint requires the same token, or
    /// another node's credential as `peers` vouches for it.
    pub token: Option<String>,
    /// Checks other nodes' credentials (at the control service) for this node's endpoint.
    pub peers: Option<PeerCheck>,
    /// Set when this node's endpoint serves TLS (`--tls-cert`): the cluster's agents all do or
    /// none does, so peers are reached over TLS too, trusted by `--tls-ca`.
    pub peer_tls: Option<berth_volume_client::tls::ClientTls>,
}

impl TransferOptions {
    /// Where to reach the peer agent at `addr` (`host:port`).
    pub fn peer(&self, addr: &str) -> berth_volume_client::http_client::Target {
        use berth_volume_client::http_client::Target;
        match &self.peer_tls {
            Some(t) => Target::Tls(addr.to_string(), t.clone()),
            None => Target::Tcp(addr.to_string()),
        }
    }
}

/// Checks a peer's node credential with the control service, remembering the ones it accepted
/// (a credential is valid as long as the cluster secret is, so a positive answer can be kept).
#[derive(Clone)]
pub struct PeerCheck {
    control: berth_volume_client::ControlClient,
    accepted: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
}

impl std::fmt::Debug for PeerCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerCheck").finish_non_exhaustive()
    }
}

impl PeerCheck {
    pub fn new(control: berth_volume_client::ControlClient) -> PeerCheck {
        PeerCheck {
            control,
            accepted: Default::default(),
        }
    }

    /// Whether `presented` is some node's valid credential.
    pub async fn allows(&self, presented: &str) -> bool {
        let known = |a: &Self| {
            a.accepted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(presented)
        };
        if known(self) {
            return true;
        }
        match self.control.verify_credential(presented).await {
            Ok(Some(node)) => {
                tracing::debug!(%node, "peer credential accepted");
                self.accepted
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(presented.to_string());
                true
            }
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(error = %e, "cannot check a peer's credential");
                false
            }
        }
    }
}

/// One regular file in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    pub mtime_ns: u128,
    pub mode: u32,
    /// The file's owner on the source (absent from a sender that predates it: the receiver
    /// then leaves ownership alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// Present when the sender knows it without reading the file (its hash cache vouches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
}

/// Who owns a file or directory. A copy must keep it: a database that runs as its own user
/// (PostgreSQL refuses a data directory it does not own) cannot start on a copy owned by root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    pub fn of(md: &std::fs::Metadata) -> Owner {
        use std::os::unix::fs::MetadataExt;
        Owner {
            uid: md.uid(),
            gid: md.gid(),
        }
    }
}

/// A directory's owner and mode (the dataset's root is `""`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirMeta {
    pub path: String,
    pub mode: u32,
    pub owner: Owner,
}

/// A symbolic link in a manifest, copied as a link (its target is data, never followed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkEntry {
    pub path: String,
    pub target: String,
}

/// What a dataset holds, as its source sees it. Parents precede their children in `dirs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The epoch the sender's copy is whole for (`None`: it never finished one). Set by the
    /// transfer endpoint, not by `scan`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    pub dirs: Vec<String>,
    pub files: Vec<FileEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<LinkEntry>,
    /// Owner and mode of the root and of every directory, parents first (absent from a sender
    /// that predates it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dir_meta: Vec<DirMeta>,
}

impl Manifest {
    /// Every path the dataset has: directories, files and links.
    pub fn paths(&self) -> impl Iterator<Item = &String> {
        self.dirs
            .iter()
            .chain(self.files.iter().map(|f| &f.path))
            .chain(self.links.iter().map(|l| &l.path))
    }
}

/// A failed transfer.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("IO on {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("source agent unreachable")]
    Http(#[from] HttpError),
    #[error("source agent answered {status} for {what}: {body}")]
    Status {
        status: u16,
        what: String,
        body: String,
    },
    #[error("manifest does not decode: {0}")]
    Manifest(String),
    #[error("unsafe path {0:?} in manifest")]
    UnsafePath(String),
    #[error("transfer stream broken")]
    Stream(#[source] wire::WireError),
    #[error("transfer worker failed: {0}")]
    Worker(String),
    #[error("source agent stopped the stream: {0}")]
    Source(String),
    #[error(
        "the source's copy is whole for epoch {have:?}, not {want}: it is not the newest copy, so nothing is taken from it"
    )]
    NotNewest { have: Option<u64>, want: u64 },
    #[error("the pull was cancelled: this copy is wanted as it stands")]
    Cancelled,
    #[error("checksum mismatch on {path}: expected {expected}, got {got}")]
    Checksum {
        path: String,
        expected: String,
        got: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TransferError + '_ {
    move |source| TransferError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// True when `rel` is a plain relative path (no `..`, no root), safe to join under a root.
pub fn safe_rel(rel: &str) -> bool {
    !rel.is_empty()
        && Path::new(rel)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// blake3 of everything `r` yields, hex.
pub fn hash_reader(r: impl std::io::Read) -> std::io::Result<String> {
    let mut h = blake3::Hasher::new();
    h.update_reader(r)?;
    Ok(h.finalize().to_hex().to_string())
}

/// blake3 of a file, hex.
pub fn hash_file(p: &Path) -> Result<String, TransferError> {
    let f = std::fs::File::open(p).map_err(io(p))?;
    hash_reader(f).map_err(io(p))
}

fn mtime_ns(m: &std::fs::Metadata) -> u128 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn mode(m: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    m.permissions().mode() & 0o7777
}

/// Walks `root` by `stat` alone (never following a link), filling digests the `cache` vouches
/// for. Special files (sockets, devices, FIFOs) are skipped with a log line.
pub fn scan(root: &Path, cache: Option<&HashCache>) -> Result<Manifest, TransferError> {
    let mut m = Manifest::default();
    let top = std::fs::metadata(root).map_err(io(root))?;
    m.dir_meta.push(DirMeta {
        path: String::new(),
        mode: mode(&top),
        owner: Owner::of(&top),
    });
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(io(&dir))?
            .collect::<Result<_, _>>()
            .map_err(io(&dir))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let r = rel.join(e.file_name());
            let rs = r.to_string_lossy().into_owned();
            let md = e.metadata().map_err(io(&e.path()))?;
            if md.is_dir() {
                m.dir_meta.push(DirMeta {
                    path: rs.clone(),
                    mode: mode(&md),
                    owner: Owner::of(&md),
                });
                m.dirs.push(rs);
                stack.push(r);
            } else if md.is_file() {
                let blake3 = cache
                    .and_then(|c| c.get(&rs, &StatKey::of(&md)))
                    .map(str::to_string);
                m.files.push(FileEntry {
                    blake3,
                    path: rs,
                    size: md.len(),
                    mtime_ns: mtime_ns(&md),
                    mode: mode(&md),
                    owner: Some(Owner::of(&md)),
                });
            } else if md.is_symlink() {
                let target = std::fs::read_link(e.path()).map_err(io(&e.path()))?;
                match target.into_os_string().into_string() {
                    Ok(target) => m.links.push(LinkEntry { path: rs, target }),
                    Err(_) => {
                        tracing::warn!(path = %rs, "skipping a link whose target is not UTF-8")
                    }
                }
            } else {
                tracing::warn!(path = %rs, "skipping special file in transfer");
            }
        }
    }
    Ok(m)
}

/// The manifest with every file's digest computed: what two copies must agree on to be equal.
pub fn manifest(root: &Path) -> Result<Manifest, TransferError> {
    let mut m = scan(root, None)?;
    for f in &mut m.files {
        f.blake3 = Some(hash_file(&root.join(&f.path))?);
    }
    Ok(m)
}

/// What a pull did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PullStats {
    /// Files streamed from the source.
    pub copied: u64,
    /// Files already current here.
    pub skipped: u64,
    /// Of those checked, files whose digest had to be computed (no cache entry vouched).
    pub hashed: u64,
    pub bytes: u64,
    pub removed: u64,
}

#[cfg(test)]
mod tests;
