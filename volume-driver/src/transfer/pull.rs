//! The receiving side of a move: the new primary brings its copy of a dataset up to the source's.
//!
//! 1. Fetch the source's manifest (stat only, cached digests where it has them).
//! 2. Decide per file: a file whose size or mtime differs is fetched; one that matches is kept
//!    only if its digest equals the source's (each side's digest comes from its hash cache, or is
//!    computed when the cache cannot vouch for the file).
//! 3. Stream every file to fetch in one request; each lands in a temp file beside its final
//!    place, is verified against
//!    the source's digest of what it read, and is renamed into place, so an interrupted pull
//!    leaves only whole, verified files and the next pull resumes from them.
//! 4. Prune what the source no longer has, `syncfs` once, then record the digests.
//!
//! The source's files are only ever read.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use berth_volume_client::http_client;
use http_body_util::BodyExt;
use hyper::Method;
use hyper::body::Bytes;
use tokio::sync::mpsc;

use super::hash_cache::{HashCache, StatKey};
use super::pace::Pacer;
use super::wire::{self, Frame, WireError};
use super::{
    Manifest, Owner, PullStats, TransferError, TransferOptions, hash_file, io, mtime_ns, safe_rel,
};
use crate::backend::layout::Layout;

fn status_err(what: &str, r: &http_client::Reply) -> TransferError {
    TransferError::Status {
        status: r.status.as_u16(),
        what: what.into(),
        body: String::from_utf8_lossy(&r.body).into_owned(),
    }
}

/// How long the source may take to answer the manifest and the digests it is asked for: it
/// stats its whole tree, and reads whole each file whose digest it has not cached.
const SOURCE_WORK_LIMIT: std::time::Duration = std::time::Duration::from_secs(600);

/// Pulls dataset `id` from the agent at `source` (`host:port`) into this node's copy in `layout`.
/// With `source_epoch`, the source's copy must be the whole one of that epoch: a copy it never
/// finished is refused before a byte moves.
pub async fn pull(
    source: &str,
    id: &str,
    source_epoch: Option<u64>,
    layout: &Layout,
    opts: &TransferOptions,
) -> Result<PullStats, TransferError> {
    let stop = Arc::new(Mutex::new(Stop::default()));
    pull_inner(source, id, source_epoch, layout, opts, &stop).await
}

/// A pull that `cancel` stops: once it resolves, no further file is renamed into place, a
/// source that hangs (a dead node whose connection never closes) is no longer waited for, and
/// the call returns `Cancelled` once the pull's worker has stopped writing. A pull that already
/// finished its last file completes instead. Files already in place are whole and verified, as
/// after any interrupted pull; partial files may remain beside them (`remove_partials`).
pub async fn pull_until(
    source: &str,
    id: &str,
    source_epoch: Option<u64>,
    layout: &Layout,
    opts: &TransferOptions,
    cancel: impl std::future::Future<Output = ()>,
) -> Result<PullStats, TransferError> {
    let stop = Arc::new(Mutex::new(Stop::default()));
    let work = pull_inner(source, id, source_epoch, layout, opts, &stop);
    tokio::pin!(work);
    tokio::select! {
        r = &mut work => r,
        () = cancel => {
            let streaming = {
                let mut st = stop.lock().unwrap_or_else(|p| p.into_inner());
                st.stopped = true;
                st.pump.take().map(|p| p.abort()).is_some()
            };
            if streaming {
                // The stream's channel is closed: the worker returns within one chunk (or the
                // pull had already landed every file and completes).
                work.await.map_err(|_| TransferError::Cancelled)
            } else {
                // Nothing was being written (the worker had not started): drop the request.
                Err(TransferError::Cancelled)
            }
        }
    }
}

/// What cancelling a pull reaches: whether it was cancelled, and the task feeding its stream.
#[derive(Default)]
struct Stop {
    stopped: bool,
    pump: Option<tokio::task::AbortHandle>,
}

fn stopped(stop: &Mutex<Stop>) -> bool {
    stop.lock().unwrap_or_else(|p| p.into_inner()).stopped
}

async fn pull_inner(
    source: &str,
    id: &str,
    source_epoch: Option<u64>,
    layout: &Layout,
    opts: &TransferOptions,
    stop: &Arc<Mutex<Stop>>,
) -> Result<PullStats, TransferError> {
    let target = opts.peer(source);
    let base = format!("/v1/transfer/{id}");
    let auth: Vec<(&str, String)> = opts
        .token
        .iter()
        .map(|t| ("authorization", format!("Bearer {t}")))
        .collect();
    let r = http_client::send_within(
        SOURCE_WORK_LIMIT,
        &target,
        Method::GET,
        &format!("{base}/manifest"),
        &auth,
        vec![],
    )
    .await?;
    if !r.status.is_success() {
        return Err(status_err("manifest", &r));
    }
    let m: Manifest =
        serde_json::from_slice(&r.body).map_err(|e| TransferError::Manifest(e.to_string()))?;
    if let Some(want) = source_epoch
        && m.epoch != Some(want)
    {
        return Err(TransferError::NotNewest {
            have: m.epoch,
            want,
        });
    }
    for p in m.paths() {
        if !safe_rel(p) {
            return Err(TransferError::UnsafePath(p.clone()));
        }
    }
    // The root is named "", which `safe_rel` rightly refuses as a file's path; every other
    // directory whose owner is sent must be one the manifest lists (and so was checked above).
    {
        let dirs: BTreeSet<&str> = m.dirs.iter().map(String::as_str).collect();
        if let Some(d) = m
            .dir_meta
            .iter()
            .find(|d| !d.path.is_empty() && !dirs.contains(d.path.as_str()))
        {
            return Err(TransferError::UnsafePath(d.path.clone()));
        }
    }
    let dest = layout.data_dir(id);
    let cache_file = layout.hash_cache(id);

    // Step 2, on a blocking thread: it stats (and maybe hashes) every local file.
    let (m, mut plan) = {
        let dest = dest.clone();
        blocking(move || {
            let plan = Plan::make(&m, &dest, &cache_file)?;
            Ok((m, plan))
        })
        .await?
    };
    let unknown: Vec<String> = plan
        .candidates
        .iter()
        .filter(|(i, _)| m.files[*i].blake3.is_none())
        .map(|(i, _)| m.files[*i].path.clone())
        .collect();
    let source_hashes: BTreeMap<String, String> = if unknown.is_empty() {
        BTreeMap::new()
    } else {
        let body =
            serde_json::to_vec(&unknown).map_err(|e| TransferError::Manifest(e.to_string()))?;
        let r = http_client::send_within(
            SOURCE_WORK_LIMIT,
            &target,
            Method::POST,
            &format!("{base}/hashes"),
            &auth,
            body,
        )
        .await?;
        if !r.status.is_success() {
            return Err(status_err("hashes", &r));
        }
        serde_json::from_slice(&r.body).map_err(|e| TransferError::Manifest(e.to_string()))?
    };
    let mut fetch = std::mem::take(&mut plan.fetch);
    let mut kept = 0u64;
    for (i, local) in std::mem::take(&mut plan.candidates) {
        let f = &m.files[i];
        match f.blake3.as_ref().or_else(|| source_hashes.get(&f.path)) {
            Some(h) if *h == local => kept += 1,
            _ => fetch.push(i),
        }
    }
    fetch.sort_unstable();
    let mut stats = PullStats {
        hashed: plan.hashed,
        skipped: kept,
        ..PullStats::default()
    };

    let mut landed = BTreeMap::new();
    if !fetch.is_empty() {
        let paths: Vec<&str> = fetch.iter().map(|&i| m.files[i].path.as_str()).collect();
        let body =
            serde_json::to_vec(&paths).map_err(|e| TransferError::Manifest(e.to_string()))?;
        let resp = http_client::open(
            &target,
            Method::POST,
            &format!("{base}/stream"),
            &auth,
            body,
        )
        .await?;
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(TransferError::Status {
                status,
                what: "stream".into(),
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        let (tx, rx) = mpsc::channel::<Result<Bytes, String>>(8);
        let pump = tokio::spawn(async move {
            let mut body = resp.into_body();
            while let Some(fr) = body.frame().await {
                let msg = match fr {
                    Ok(fr) => match fr.into_data() {
                        Ok(d) => Ok(d),
                        Err(_) => continue,
                    },
                    Err(e) => Err(e.to_string()),
                };
                let last = msg.is_err();
                if tx.send(msg).await.is_err() || last {
                    break;
                }
            }
        });
        {
            let mut st = stop.lock().unwrap_or_else(|p| p.into_inner());
            if st.stopped {
                pump.abort();
                return Err(TransferError::Cancelled);
            }
            st.pump = Some(pump.abort_handle());
        }
        let want: BTreeSet<String> = paths.iter().map(|p| p.to_string()).collect();
        let (d, rate) = (dest.clone(), opts.rate_limit);
        let taken: BTreeSet<String> = m.paths().cloned().collect();
        let halt = stop.clone();
        let got = blocking(move || {
            let mut r = ChannelReader {
                rx,
                cur: Bytes::new(),
            };
            receive(&mut r, &want, &taken, &d, rate, &halt)
        })
        .await;
        pump.abort();
        let (files, bytes) = got?;
        stats.copied = files.len() as u64;
        stats.bytes = bytes;
        landed = files;
    }

    // Step 4.
    let d = dest.clone();
    stats.removed = blocking(move || {
        place_links(&d, &m)?;
        let removed = prune(&d, &m)?;
        for dm in &m.dir_meta {
            let p = d.join(&dm.path);
            let md = std::fs::symlink_metadata(&p).map_err(io(&p))?;
            if md.is_dir() && (super::mode(&md) != dm.mode || Owner::of(&md) != dm.owner) {
                set_owner_and_mode(&p, Some(dm.owner), dm.mode)?;
            }
        }
        let f = std::fs::File::open(&d).map_err(io(&d))?;
        rustix::fs::syncfs(&f).map_err(|e| TransferError::Io {
            path: d.display().to_string(),
            source: e.into(),
        })?;
        let mut cache = plan.cache;
        let known: BTreeSet<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
        cache.retain(|p| known.contains(p));
        // Kept files' entries were settled in step 2; only what landed is new.
        for (p, h) in landed {
            if let Ok(md) = std::fs::symlink_metadata(d.join(&p)) {
                cache.put(&p, StatKey::of(&md), h);
            }
        }
        if let Err(e) = cache.save() {
            tracing::warn!(error = %e, "hash cache not saved; the next move re-hashes");
        }
        Ok(removed)
    })
    .await?;
    Ok(stats)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, TransferError> + Send + 'static,
) -> Result<T, TransferError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(TransferError::Worker(e.to_string())))
}

/// What step 2 decided.
struct Plan {
    /// Manifest indices to fetch.
    fetch: Vec<usize>,
    /// Manifest indices held locally with matching size and mtime, and their local digests.
    candidates: Vec<(usize, String)>,
    hashed: u64,
    cache: HashCache,
}

impl Plan {
    fn make(m: &Manifest, dest: &Path, cache_file: &Path) -> Result<Plan, TransferError> {
        std::fs::create_dir_all(dest).map_err(io(dest))?;
        // Parents come before children in a manifest, so once this loop is done every
        // directory a file lands in is a real one: a symlink left where the source has a
        // directory cannot redirect a write outside the dataset.
        for d in &m.dirs {
            let p = dest.join(d);
            match std::fs::symlink_metadata(&p) {
                Ok(md) if md.is_dir() => continue,
                Ok(_) => std::fs::remove_file(&p).map_err(io(&p))?,
                Err(_) => {}
            }
            std::fs::create_dir(&p).map_err(io(&p))?;
        }
        let mut plan = Plan {
            fetch: Vec::new(),
            candidates: Vec::new(),
            hashed: 0,
            cache: HashCache::load(cache_file),
        };
        for (i, f) in m.files.iter().enumerate() {
            let local = dest.join(&f.path);
            match std::fs::symlink_metadata(&local) {
                Ok(md) if md.is_file() && md.len() == f.size && mtime_ns(&md) == f.mtime_ns => {
                    let key = StatKey::of(&md);
                    let h = match plan.cache.get(&f.path, &key).map(str::to_string) {
                        Some(h) => h,
                        None => {
                            plan.hashed += 1;
                            let h = hash_file(&local)?;
                            plan.cache.put(&f.path, key, h.clone());
                            h
                        }
                    };
                    let owner = f.owner.filter(|o| *o != Owner::of(&md));
                    if super::mode(&md) != f.mode || owner.is_some() {
                        set_owner_and_mode(&local, owner, f.mode)?;
                        // The chmod moved ctime; the bytes, and so the digest, are the same.
                        let md = std::fs::symlink_metadata(&local).map_err(io(&local))?;
                        plan.cache.put(&f.path, StatKey::of(&md), h.clone());
                    }
                    plan.candidates.push((i, h));
                }
                _ => plan.fetch.push(i),
            }
        }
        Ok(plan)
    }
}

/// A blocking `Read` over the body chunks the async side forwards.
struct ChannelReader {
    rx: mpsc::Receiver<Result<Bytes, String>>,
    cur: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

fn wire_err(e: WireError) -> TransferError {
    TransferError::Stream(e)
}

/// Where file `rel` is written before it is verified: beside its final place, so the rename is
/// within one directory and new inodes spread over the tree as a plain copy's do (one shared
/// temp directory made ext4 search a single block group, half the CPU time of a move). The
/// name is never one of the dataset's own paths, and a leftover from a killed pull is simply
/// overwritten, or pruned once a pull completes.
fn temp_for(rel: &str, taken: &BTreeSet<String>) -> String {
    let parent = Path::new(rel).parent().unwrap_or(Path::new(""));
    (0u32..)
        .map(|n| {
            let name = if n == 0 {
                ".berth-partial".to_string()
            } else {
                format!(".berth-partial-{n}")
            };
            parent.join(name).to_string_lossy().into_owned()
        })
        .find(|t| !taken.contains(t))
        .expect("some name is free")
}

/// Reads a stream of `want`ed files into `dest`; returns each landed path's digest and the bytes.
/// `taken` is every path of the dataset (no temp file may use one).
fn receive(
    r: &mut impl Read,
    want: &BTreeSet<String>,
    taken: &BTreeSet<String>,
    dest: &Path,
    rate: Option<u64>,
    stop: &Mutex<Stop>,
) -> Result<(BTreeMap<String, String>, u64), TransferError> {
    let mut pace = Pacer::new(rate);
    let mut landed = BTreeMap::new();
    let mut bytes = 0u64;
    let mut buf = vec![0u8; wire::CHUNK];
    loop {
        let head = match wire::decode(r).map_err(wire_err)? {
            Frame::File(h) => h,
            Frame::Error(msg) => return Err(TransferError::Source(msg)),
            Frame::End { files } => {
                if files as usize != landed.len() || landed.len() != want.len() {
                    return Err(wire_err(WireError::Bad(format!(
                        "stream ended after {files} files; {} asked, {} arrived",
                        want.len(),
                        landed.len()
                    ))));
                }
                return Ok((landed, bytes));
            }
        };
        if !want.contains(&head.path) || landed.contains_key(&head.path) {
            return Err(wire_err(WireError::Bad(format!(
                "unrequested or repeated file {:?}",
                head.path
            ))));
        }
        let tmp = dest.join(temp_for(&head.path, taken));
        let mut out = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        let mut h = blake3::Hasher::new();
        let mut left = head.size;
        let (mut written, mut flushed) = (0u64, 0u64);
        while left > 0 {
            let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            r.read_exact(&mut buf[..n]).map_err(|e| {
                wire_err(match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => WireError::Truncated,
                    _ => WireError::Io(e),
                })
            })?;
            h.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(io(&tmp))?;
            left -= n as u64;
            bytes += n as u64;
            written += n as u64;
            if written - flushed >= WRITEBACK_STEP {
                start_writeback(&out, flushed, written - flushed);
                flushed = written;
            }
            pace.add(n as u64);
        }
        let sent = wire::read_digest(r).map_err(wire_err)?;
        let got = h.finalize();
        if got.as_bytes() != &sent {
            return Err(TransferError::Checksum {
                path: head.path.clone(),
                expected: blake3::Hash::from(sent).to_hex().to_string(),
                got: got.to_hex().to_string(),
            });
        }
        {
            use std::os::unix::fs::PermissionsExt;
            // Owner before mode: a chown clears set-user-ID and set-group-ID bits.
            if let Some(o) = head.owner {
                give(
                    std::os::unix::fs::fchown(&out, Some(o.uid), Some(o.gid)),
                    &tmp,
                )?;
            }
            out.set_permissions(std::fs::Permissions::from_mode(head.mode))
                .map_err(io(&tmp))?;
            let secs = u64::try_from(head.mtime_ns / 1_000_000_000).unwrap_or(0);
            let nanos = u32::try_from(head.mtime_ns % 1_000_000_000).unwrap_or(0);
            out.set_modified(UNIX_EPOCH + Duration::new(secs, nanos))
                .map_err(io(&tmp))?;
        }
        if flushed > 0 {
            start_writeback(&out, flushed, written - flushed);
        }
        drop(out);
        if stopped(stop) {
            let _ = std::fs::remove_file(&tmp);
            return Err(TransferError::Cancelled);
        }
        let local = dest.join(&head.path);
        if std::fs::symlink_metadata(&local).is_ok_and(|md| md.is_dir()) {
            std::fs::remove_dir_all(&local).map_err(io(&local))?;
        }
        std::fs::rename(&tmp, &local).map_err(io(&local))?;
        landed.insert(head.path, got.to_hex().to_string());
    }
}

/// Whether `name` is one `temp_for` makes.
fn is_partial(name: &str) -> bool {
    name == ".berth-partial"
        || name
            .strip_prefix(".berth-partial-")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Removes the partial files an interrupted pull left under `root`: a copy that is about to be
/// used as it stands (a promoted standby) must not show them to its application. A dataset file
/// of the same name would go too; `temp_for` avoids names in use, so only a file created after
/// the pull could collide.
pub fn remove_partials(root: &Path) -> Result<u64, TransferError> {
    let mut removed = 0;
    for rel in local_paths(root)? {
        let p = root.join(&rel);
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
        if name.as_deref().is_some_and(is_partial)
            && std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_file())
        {
            std::fs::remove_file(&p).map_err(io(&p))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Bytes written between two writeback kicks on one file.
const WRITEBACK_STEP: u64 = 8 << 20;

/// Starts writing `len` bytes at `offset` back to disk now, without waiting, and lets the kernel
/// drop them from the page cache once written: the closing `syncfs` then waits for a tail, not
/// for the whole dataset, and a large move does not evict the node's running services' cache.
/// Advice only: a kernel that ignores it costs time, never correctness.
fn start_writeback(f: &std::fs::File, offset: u64, len: u64) {
    if let Some(len) = std::num::NonZeroU64::new(len) {
        let _ = rustix::fs::fadvise(f, offset, Some(len), rustix::fs::Advice::DontNeed);
    }
}

/// Makes each of the source's links, last, so no write of this pull can pass through one (and
/// the directories files landed in were made real ones first).
fn place_links(dest: &Path, m: &Manifest) -> Result<(), TransferError> {
    for l in &m.links {
        let p = dest.join(&l.path);
        match std::fs::symlink_metadata(&p) {
            Ok(md) if md.is_symlink() => {
                if std::fs::read_link(&p).is_ok_and(|t| t.as_os_str() == l.target.as_str()) {
                    continue;
                }
                std::fs::remove_file(&p).map_err(io(&p))?;
            }
            Ok(md) if md.is_dir() => std::fs::remove_dir_all(&p).map_err(io(&p))?,
            Ok(_) => std::fs::remove_file(&p).map_err(io(&p))?,
            Err(_) => {}
        }
        std::os::unix::fs::symlink(&l.target, &p).map_err(io(&p))?;
    }
    Ok(())
}

/// Removes what the source no longer has (only after every file arrived).
fn prune(dest: &Path, m: &Manifest) -> Result<u64, TransferError> {
    let keep: BTreeSet<&str> = m.paths().map(String::as_str).collect();
    let local = local_paths(dest)?;
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

fn local_paths(root: &Path) -> Result<Vec<String>, TransferError> {
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

/// A chown's result: refused for want of privilege (an agent not run as root cannot give files
/// away) the copy keeps this process's owner, as before owners were sent; any other failure is
/// the pull's.
fn give(r: std::io::Result<()>, path: &Path) -> Result<(), TransferError> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            tracing::debug!(path = %path.display(), "cannot give the copy its owner (not root)");
            Ok(())
        }
        r => r.map_err(io(path)),
    }
}

/// Gives `path` (never following a link) the source's owner, then its mode: owner first, as a
/// chown clears set-user-ID and set-group-ID bits.
fn set_owner_and_mode(path: &Path, owner: Option<Owner>, mode: u32) -> Result<(), TransferError> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(o) = owner {
        give(
            std::os::unix::fs::lchown(path, Some(o.uid), Some(o.gid)),
            path,
        )?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io(path))
}
