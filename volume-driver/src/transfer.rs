//! Moving a `local` dataset's bytes between agents. The new primary pulls from the old one:
//! a manifest (path, size, mtime, blake3) and then each file that differs. Each file lands in a
//! temp file, is verified against its blake3, and is renamed into place atomically, so an
//! interrupted pull leaves only whole, verified files and simply resumes on the next try; the
//! source is only ever read. Files whose size, mtime and hash already match are skipped, which
//! makes a repeat move incremental.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path as AxPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper::Method;
use serde::{Deserialize, Serialize};

use crate::backend::local::Layout;
use crate::http_client::{self, HttpError, Target};

/// One regular file in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    pub mtime_ns: u128,
    pub mode: u32,
    pub blake3: String,
}

/// What a dataset holds, as its source sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub dirs: Vec<String>,
    pub files: Vec<FileEntry>,
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

/// blake3 of a file, hex.
pub fn hash_file(p: &Path) -> Result<String, TransferError> {
    let mut h = blake3::Hasher::new();
    let f = std::fs::File::open(p).map_err(io(p))?;
    h.update_reader(f).map_err(io(p))?;
    Ok(h.finalize().to_hex().to_string())
}

fn mtime_ns(m: &std::fs::Metadata) -> u128 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Walks `root` into a manifest (symlinks and special files are skipped with a log line).
pub fn manifest(root: &Path) -> Result<Manifest, TransferError> {
    use std::os::unix::fs::PermissionsExt;
    let mut m = Manifest::default();
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
                m.dirs.push(rs);
                stack.push(r);
            } else if md.is_file() {
                m.files.push(FileEntry {
                    blake3: hash_file(&e.path())?,
                    path: rs,
                    size: md.len(),
                    mtime_ns: mtime_ns(&md),
                    mode: md.permissions().mode() & 0o7777,
                });
            } else {
                tracing::warn!(path = %rs, "skipping non-regular file in transfer");
            }
        }
    }
    Ok(m)
}

/// What a pull did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PullStats {
    pub copied: u64,
    pub skipped: u64,
    pub bytes: u64,
    pub removed: u64,
}

/// Pulls dataset `id` from the agent at `source` (`host:port`) into `dest`, using `work` for
/// temp files (same filesystem as `dest`).
pub async fn pull(
    source: &str,
    id: &str,
    dest: &Path,
    work: &Path,
) -> Result<PullStats, TransferError> {
    let target = Target::Tcp(source.to_string());
    let r = http_client::send(
        &target,
        Method::GET,
        &format!("/v1/transfer/{id}/manifest"),
        &[],
        Vec::new(),
    )
    .await?;
    if !r.status.is_success() {
        return Err(TransferError::Status {
            status: r.status.as_u16(),
            what: "manifest".into(),
            body: String::from_utf8_lossy(&r.body).into_owned(),
        });
    }
    let m: Manifest =
        serde_json::from_slice(&r.body).map_err(|e| TransferError::Manifest(e.to_string()))?;
    for p in m.dirs.iter().chain(m.files.iter().map(|f| &f.path)) {
        if !safe_rel(p) {
            return Err(TransferError::UnsafePath(p.clone()));
        }
    }
    std::fs::create_dir_all(dest).map_err(io(dest))?;
    std::fs::create_dir_all(work).map_err(io(work))?;
    for d in &m.dirs {
        let p = dest.join(d);
        std::fs::create_dir_all(&p).map_err(io(&p))?;
    }
    let mut stats = PullStats::default();
    for (n, f) in m.files.iter().enumerate() {
        let local = dest.join(&f.path);
        let same = match std::fs::metadata(&local) {
            Ok(md) => {
                md.is_file()
                    && md.len() == f.size
                    && mtime_ns(&md) == f.mtime_ns
                    && hash_file(&local)? == f.blake3
            }
            Err(_) => false,
        };
        if same {
            stats.skipped += 1;
            continue;
        }
        let path = format!("/v1/transfer/{id}/file?path={}", encode(&f.path));
        let r = http_client::send(&target, Method::GET, &path, &[], Vec::new()).await?;
        if !r.status.is_success() {
            return Err(TransferError::Status {
                status: r.status.as_u16(),
                what: f.path.clone(),
                body: String::from_utf8_lossy(&r.body).into_owned(),
            });
        }
        let got = blake3::hash(&r.body).to_hex().to_string();
        if got != f.blake3 {
            return Err(TransferError::Checksum {
                path: f.path.clone(),
                expected: f.blake3.clone(),
                got,
            });
        }
        let tmp = work.join(format!("partial-{n}"));
        write_file(&tmp, &r.body, f)?;
        if let Some(parent) = local.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::rename(&tmp, &local).map_err(io(&local))?;
        stats.copied += 1;
        stats.bytes += f.size;
    }
    stats.removed = prune(dest, &m)?;
    Ok(stats)
}

fn write_file(tmp: &Path, bytes: &[u8], f: &FileEntry) -> Result<(), TransferError> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = std::fs::File::create(tmp).map_err(io(tmp))?;
    out.write_all(bytes).map_err(io(tmp))?;
    out.set_permissions(std::fs::Permissions::from_mode(f.mode))
        .map_err(io(tmp))?;
    let secs = u64::try_from(f.mtime_ns / 1_000_000_000).unwrap_or(0);
    let nanos = u32::try_from(f.mtime_ns % 1_000_000_000).unwrap_or(0);
    out.set_modified(UNIX_EPOCH + Duration::new(secs, nanos))
        .map_err(io(tmp))?;
    out.sync_all().map_err(io(tmp))
}

/// Removes what the source no longer has (only after every file arrived).
fn prune(dest: &Path, m: &Manifest) -> Result<u64, TransferError> {
    let keep: BTreeSet<&str> = m
        .dirs
        .iter()
        .chain(m.files.iter().map(|f| &f.path))
        .map(String::as_str)
        .collect();
    let local = manifest_paths(dest)?;
    let mut removed = 0;
    for rel in local.iter().rev() {
        if keep.contains(rel.as_str()) {
            continue;
        }
        let p = dest.join(rel);
        let md = std::fs::symlink_metadata(&p).map_err(io(&p))?;
        if md.is_dir() {
            std::fs::remove_dir_all(&p).map_err(io(&p))?;
        } else {
            std::fs::remove_file(&p).map_err(io(&p))?;
        }
        removed += 1;
    }
    Ok(removed)
}

fn manifest_paths(root: &Path) -> Result<Vec<String>, TransferError> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        for e in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let e = e.map_err(io(&dir))?;
            let r = rel.join(e.file_name());
            if e.file_type().map_err(io(&e.path()))?.is_dir() {
                stack.push(r.clone());
            }
            out.push(r.to_string_lossy().into_owned());
        }
    }
    out.sort();
    Ok(out)
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[derive(Deserialize)]
struct FileQuery {
    path: String,
}

fn fail(code: StatusCode, msg: String) -> Response {
    tracing::warn!(status = code.as_u16(), %msg, "transfer request refused");
    (code, msg).into_response()
}

fn dataset_dir(layout: &Layout, id: &str) -> Result<PathBuf, (StatusCode, String)> {
    if uuid::Uuid::parse_str(id).is_err() {
        return Err((StatusCode::BAD_REQUEST, format!("bad dataset id {id:?}")));
    }
    let d = layout.data_dir(id);
    if !d.is_dir() {
        return Err((
            StatusCode::NOT_FOUND,
            format!("dataset {id} is not held here"),
        ));
    }
    Ok(d)
}

async fn get_manifest(State(l): State<Arc<Layout>>, AxPath(id): AxPath<String>) -> Response {
    let dir = match dataset_dir(&l, &id) {
        Ok(d) => d,
        Err((code, msg)) => return fail(code, msg),
    };
    match tokio::task::spawn_blocking(move || manifest(&dir)).await {
        Ok(Ok(m)) => axum::Json(m).into_response(),
        Ok(Err(e)) => fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{e}: {:?}", std::error::Error::source(&e)),
        ),
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn get_file(
    State(l): State<Arc<Layout>>,
    AxPath(id): AxPath<String>,
    Query(q): Query<FileQuery>,
) -> Response {
    let dir = match dataset_dir(&l, &id) {
        Ok(d) => d,
        Err((code, msg)) => return fail(code, msg),
    };
    if !safe_rel(&q.path) {
        return fail(StatusCode::BAD_REQUEST, format!("unsafe path {:?}", q.path));
    }
    match tokio::fs::read(dir.join(&q.path)).await {
        Ok(b) => b.into_response(),
        Err(e) => fail(StatusCode::NOT_FOUND, format!("{}: {e}", q.path)),
    }
}

/// The transfer endpoint's routes, served on the agent's `--listen` address.
pub fn router(layout: Arc<Layout>) -> Router {
    Router::new()
        .route("/v1/transfer/{id}/manifest", get(get_manifest))
        .route("/v1/transfer/{id}/file", get(get_file))
        .with_state(layout)
}

#[cfg(test)]
mod tests;
