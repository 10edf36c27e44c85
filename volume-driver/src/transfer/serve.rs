//! The source side of a move, served on the agent's `--listen` address:
//!
//! - `GET  /v1/transfer/{id}/manifest`: the tree by `stat` alone, with digests only where the
//!   hash cache still vouches for them (building it never reads file contents);
//! - `POST /v1/transfer/{id}/hashes` (JSON list of paths): digests the puller needs to decide
//!   whether a file it already has is current (computed and cached here);
//! - `POST /v1/transfer/{id}/stream` (JSON list of paths): those files in one framed body
//!   (see `wire`), each hashed as it is read, so a full move reads the source exactly once.
//!
//! Files are opened without following symlinks at any component, so a link planted inside a
//! dataset cannot make the endpoint serve a file from outside it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path as AxPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper::body::Bytes;
use tokio::sync::mpsc;

use super::hash_cache::{HashCache, StatKey};
use super::pace::Pacer;
use super::wire::{self, CHUNK, FileHead, Frame};
use super::{TransferOptions, hash_reader, safe_rel, scan};
use crate::backend::layout::Layout;

/// Path lists can be long (one entry per file of a large dataset).
const BODY_LIMIT: usize = 256 << 20;

fn fail(code: StatusCode, msg: String) -> Response {
    tracing::warn!(status = code.as_u16(), %msg, "transfer request refused");
    if code == StatusCode::UNAUTHORIZED {
        let challenge = [(
            hyper::header::WWW_AUTHENTICATE,
            berth_control_model::credential::BEARER_CHALLENGE,
        )];
        return (code, challenge, msg).into_response();
    }
    (code, msg).into_response()
}

/// A refused request, answered (and logged) by `fail`.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        fail(self.0, self.1)
    }
}

fn dataset_dir(layout: &Layout, id: &str) -> Result<PathBuf, Refusal> {
    if uuid::Uuid::parse_str(id).is_err() {
        return Err(Refusal(
            StatusCode::BAD_REQUEST,
            format!("bad dataset id {id:?}"),
        ));
    }
    let d = layout.data_dir(id);
    if !d.is_dir() {
        return Err(Refusal(
            StatusCode::NOT_FOUND,
            format!("dataset {id} is not held here"),
        ));
    }
    Ok(d)
}

/// The data directory and hash-cache file a request for `paths` of dataset `id` works on.
fn requested(s: &Source, id: &str, paths: &[String]) -> Result<(PathBuf, PathBuf), Refusal> {
    let dir = dataset_dir(&s.layout, id)?;
    match paths.iter().find(|p| !safe_rel(p)) {
        Some(p) => Err(Refusal(
            StatusCode::BAD_REQUEST,
            format!("unsafe path {p:?}"),
        )),
        None => Ok((dir, s.layout.hash_cache(id))),
    }
}

/// Opens regular file `rel` under `root`, refusing a symlink anywhere on the way.
pub(super) fn open_inside(root: &Path, rel: &str) -> std::io::Result<(File, std::fs::Metadata)> {
    let mut p = root.to_path_buf();
    let parts: Vec<Component> = Path::new(rel).components().collect();
    let (last, parents) = parts
        .split_last()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty path"))?;
    for c in parents {
        p.push(c);
        if !std::fs::symlink_metadata(&p)?.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} is not a directory", p.display()),
            ));
        }
    }
    p.push(last);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&p)?;
    let md = f.metadata()?;
    if !md.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", p.display()),
        ));
    }
    Ok((f, md))
}

/// What the endpoint serves from, and how fast it may send.
struct Source {
    layout: Arc<Layout>,
    rate: Option<u64>,
}

async fn get_manifest(State(s): State<Arc<Source>>, AxPath(id): AxPath<String>) -> Response {
    let l = &s.layout;
    let dir = match dataset_dir(l, &id) {
        Ok(d) => d,
        Err(r) => return r.into_response(),
    };
    let cache = l.hash_cache(&id);
    let epoch = l.local_epoch(&id);
    let r = tokio::task::spawn_blocking(move || scan(&dir, Some(&HashCache::load(&cache)))).await;
    match r.map(|m| m.map(|m| super::Manifest { epoch, ..m })) {
        Ok(Ok(m)) => axum::Json(m).into_response(),
        Ok(Err(e)) => fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            berth_volume_client::error_chain::chain(&e),
        ),
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn post_hashes(
    State(s): State<Arc<Source>>,
    AxPath(id): AxPath<String>,
    axum::Json(paths): axum::Json<Vec<String>>,
) -> Response {
    let (dir, cache_file) = match requested(&s, &id, &paths) {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let work = move || {
        let mut cache = HashCache::load(&cache_file);
        let mut out = BTreeMap::new();
        for p in paths {
            // A path gone since the manifest is simply absent from the answer; the puller
            // then fetches it and the stream reports the real state.
            let Ok((f, md)) = open_inside(&dir, &p) else {
                continue;
            };
            let key = StatKey::of(&md);
            let h = match cache.get(&p, &key) {
                Some(h) => h.to_string(),
                None => {
                    let h = hash_reader(f).map_err(|e| format!("{p}: {e}"))?;
                    cache.put(&p, key, h.clone());
                    h
                }
            };
            out.insert(p, h);
        }
        if let Err(e) = cache.save() {
            tracing::warn!(error = %e, "hash cache not saved");
        }
        Ok::<_, String>(out)
    };
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(m)) => axum::Json(m).into_response(),
        Ok(Err(e)) => fail(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

type Chunk = Result<Bytes, std::io::Error>;

/// Why the producer stopped early.
enum Stop {
    /// The puller hung up.
    Gone,
    /// Before a file's bytes began: reported in an `Error` frame.
    Refused(String),
    /// In the middle of a file's bytes: the only honest signal left is cutting the stream.
    Abort(std::io::Error),
}

struct Producer {
    tx: mpsc::Sender<Chunk>,
    out: Vec<u8>,
    pace: Pacer,
}

impl Producer {
    fn flush(&mut self) -> Result<(), Stop> {
        if self.out.is_empty() {
            return Ok(());
        }
        let b = std::mem::replace(&mut self.out, Vec::with_capacity(CHUNK + 4096));
        self.tx
            .blocking_send(Ok(Bytes::from(b)))
            .map_err(|_| Stop::Gone)
    }

    fn frame(&mut self, f: &Frame) {
        wire::encode(f, &mut self.out);
    }

    fn file(&mut self, dir: &Path, rel: &str, cache: &mut HashCache) -> Result<(), Stop> {
        let (mut f, before) =
            open_inside(dir, rel).map_err(|e| Stop::Refused(format!("{rel}: {e}")))?;
        let size = before.len();
        self.frame(&Frame::File(FileHead {
            path: rel.to_string(),
            size,
            mtime_ns: super::mtime_ns(&before),
            mode: super::mode(&before),
            owner: Some(super::Owner::of(&before)),
        }));
        // A digest the cache vouches for is sent as is: the file is read but not hashed here,
        // and the receiver's hash of what arrives then also checks the disk did not rot it.
        let known = cache
            .get(rel, &StatKey::of(&before))
            .and_then(|h| blake3::Hash::from_hex(h).ok());
        let mut h = blake3::Hasher::new();
        let mut left = size;
        while left > 0 {
            let want = usize::try_from(left.min(CHUNK as u64)).unwrap_or(CHUNK);
            let start = self.out.len();
            self.out.resize(start + want, 0);
            let mut got = 0;
            while got < want {
                match f.read(&mut self.out[start + got..]) {
                    Ok(0) => {
                        return Err(Stop::Abort(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            format!("{rel} shrank while being sent"),
                        )));
                    }
                    Ok(n) => got += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Stop::Abort(e)),
                }
            }
            if known.is_none() {
                h.update(&self.out[start..]);
            }
            left -= want as u64;
            self.pace.add(want as u64);
            if self.out.len() >= CHUNK {
                self.flush()?;
            }
        }
        let unchanged = f
            .metadata()
            .is_ok_and(|after| StatKey::of(&after) == StatKey::of(&before));
        let digest = match known {
            Some(d) if unchanged => d,
            Some(_) => {
                return Err(Stop::Abort(std::io::Error::other(format!(
                    "{rel} changed while being sent"
                ))));
            }
            None => {
                let d = h.finalize();
                if unchanged {
                    cache.put(rel, StatKey::of(&before), d.to_hex().to_string());
                }
                d
            }
        };
        self.out.extend_from_slice(digest.as_bytes());
        if self.out.len() >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }
}

/// Sends `paths` from `dir` down `tx`, then records every digest it took in the hash cache.
fn produce(
    dir: PathBuf,
    cache_file: PathBuf,
    paths: Vec<String>,
    rate: Option<u64>,
    tx: mpsc::Sender<Chunk>,
) {
    let mut cache = HashCache::load(&cache_file);
    let mut p = Producer {
        tx,
        out: Vec::with_capacity(CHUNK + 4096),
        pace: Pacer::new(rate),
    };
    let mut sent = 0u64;
    let res = paths.iter().try_for_each(|rel| {
        p.file(&dir, rel, &mut cache)?;
        sent += 1;
        Ok(())
    });
    let res = match res {
        Ok(()) => {
            p.frame(&Frame::End { files: sent });
            p.flush()
        }
        Err(Stop::Refused(msg)) => {
            tracing::warn!(%msg, "transfer stream stopped");
            p.frame(&Frame::Error(msg));
            p.flush()
        }
        Err(e) => Err(e),
    };
    match res {
        Ok(()) => tracing::info!(dir = %dir.display(), files = sent, "transfer stream sent"),
        Err(Stop::Gone) => {
            tracing::warn!(dir = %dir.display(), files = sent, "puller hung up mid-stream")
        }
        Err(Stop::Abort(e)) => {
            tracing::warn!(dir = %dir.display(), error = %e, "transfer stream cut");
            let _ = p.tx.blocking_send(Err(e));
        }
        Err(Stop::Refused(_)) => {}
    }
    if let Err(e) = cache.save() {
        tracing::warn!(error = %e, "hash cache not saved");
    }
}

async fn post_stream(
    State(s): State<Arc<Source>>,
    AxPath(id): AxPath<String>,
    axum::Json(paths): axum::Json<Vec<String>>,
) -> Response {
    let (dir, cache_file) = match requested(&s, &id, &paths) {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let (tx, rx) = mpsc::channel::<Chunk>(8);
    let rate = s.rate;
    tokio::task::spawn_blocking(move || produce(dir, cache_file, paths, rate, tx));
    let body =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    Response::builder()
        .header("content-type", "application/x-berth-transfer")
        .body(Body::from_stream(body))
        .unwrap_or_else(|e| fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// The transfer endpoint's routes, guarded by `guard`. A rate limit holds what this node sends
/// as well as what it pulls.
pub fn router(layout: Arc<Layout>, opts: &TransferOptions) -> Router {
    let r = Router::new()
        .route("/v1/transfer/{id}/manifest", get(get_manifest))
        .route("/v1/transfer/{id}/hashes", post(post_hashes))
        .route("/v1/transfer/{id}/stream", post(post_stream))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(Arc::new(Source {
            layout,
            rate: opts.rate_limit,
        }));
    guard(r, opts)
}

/// With a token (the cluster token or this node's credential), every request to `r` must
/// present it, or another node's credential the control service vouches for: a dataset's bytes
/// are no less secret than its configuration.
pub fn guard(r: Router, opts: &TransferOptions) -> Router {
    let Some(token) = opts.token.clone().map(Arc::<str>::from) else {
        return r;
    };
    let peers = opts.peers.clone();
    r.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let (token, peers) = (token.clone(), peers.clone());
            async move {
                let given = req
                    .headers()
                    .get(hyper::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::to_string);
                let ok = match (&given, &peers) {
                    (Some(g), _) if berth_control_model::credential::same_token(g, &token) => true,
                    (Some(g), Some(p)) => p.allows(g).await,
                    _ => false,
                };
                if ok {
                    next.run(req).await
                } else {
                    fail(
                        StatusCode::UNAUTHORIZED,
                        "missing or wrong bearer token".into(),
                    )
                }
            }
        },
    ))
}
