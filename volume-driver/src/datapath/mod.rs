//! The data path: every mount a container gets is a FUSE filesystem served by this agent over
//! the backend's directory, with the node's lease checked before every write (`admission`,
//! `fs`). This is the fencing that does not need the faulty node's cooperation to be *correct*
//! (ARCHITECTURE.md, "Fencing"):
//! - the agent dies (killed, crashed, out of memory): the kernel aborts the FUSE connection and
//!   every operation on the mount fails (`ENOTCONN`), so no container writes without it;
//! - the agent hangs or is paused, or the whole node freezes: writes wait in the kernel for the
//!   agent, and when it runs again it checks its lease (on the boot clock, which counted the
//!   freeze) before serving them — an ended lease holds them until the mount is claimed again,
//!   and a mount whose data moved meanwhile refuses them with `EIO`.
//!
//! The cost is one user-space hop per operation (BENCHMARKS.md, "Data path").

pub mod admission;
mod fs;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::passthrough::{CachePolicy, Config, PassthroughFs};
use fuse_backend_rs::transport::FuseSession;

use berth_control_model::gate::MountGate;

/// How containers reach their data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DataPathMode {
    /// Through this agent: a FUSE mount whose writes need the lease.
    Fuse,
    /// The copy itself: only a running agent can stop a writer.
    Direct,
}

/// Threads serving one mount's requests: a held write occupies one, so reads go on beside up
/// to this many held writes.
const THREADS: usize = 4;

/// Why serving a mount failed.
#[derive(Debug, thiserror::Error)]
pub enum DataPathError {
    #[error("serving {path} through FUSE: {why}")]
    Serve { path: String, why: String },
    #[error("detaching the mount at {path}")]
    Detach {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// One volume served at its mountpoint; unmounted when stopped or dropped.
pub struct Session {
    mountpoint: PathBuf,
    gate: Arc<MountGate>,
    session: Option<FuseSession>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Session {
    /// Serves `backing` at `mountpoint` (created if missing; a dead mount left there by an
    /// earlier agent is detached first). `sync_writes`: see `fs::GatedFs`.
    pub fn serve(
        volume: &str,
        backing: &Path,
        mountpoint: &Path,
        gate: Arc<MountGate>,
        sync_writes: bool,
    ) -> Result<Session, DataPathError> {
        let err = |why: String| DataPathError::Serve {
            path: mountpoint.display().to_string(),
            why,
        };
        detach_stale(mountpoint)?;
        std::fs::create_dir_all(mountpoint).map_err(|e| err(format!("creating it: {e}")))?;
        let cfg = Config {
            root_dir: backing.display().to_string(),
            do_import: true,
            xattr: true,
            writeback: false,
            // Cached pages are dropped at every open: a copy that changed under the mount (a
            // promoted standby, a pull) is read afresh.
            cache_policy: CachePolicy::Auto,
            ..Config::default()
        };
        let pfs = PassthroughFs::<()>::new(cfg).map_err(|e| err(format!("passthrough: {e}")))?;
        pfs.import()
            .map_err(|e| err(format!("opening {}: {e}", backing.display())))?;
        let server = Arc::new(Server::new(Arc::new(fs::GatedFs::new(
            pfs,
            gate.clone(),
            sync_writes,
        ))));
        let mut se = FuseSession::new(mountpoint, &format!("berth:{volume}"), "berth", false)
            .map_err(|e| err(e.to_string()))?;
        se.mount().map_err(|e| err(e.to_string()))?;
        let mut threads = Vec::with_capacity(THREADS);
        for i in 0..THREADS {
            let mut ch = match se.new_channel() {
                Ok(c) => c,
                Err(e) => {
                    let _ = se.umount();
                    return Err(err(e.to_string()));
                }
            };
            let server = server.clone();
            let volume = volume.to_string();
            let t = std::thread::Builder::new()
                .name(format!("fuse-{i}"))
                .spawn(move || {
                    loop {
                        match ch.get_request() {
                            Ok(Some((r, w))) => {
                                if let Err(e) = server.handle_message(r, w.into(), None, None) {
                                    tracing::debug!(volume = %volume, error = %e, "FUSE request");
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                tracing::debug!(volume = %volume, error = %e, "FUSE channel closed");
                                break;
                            }
                        }
                    }
                })
                .map_err(|e| err(format!("thread: {e}")))?;
            threads.push(t);
        }
        Ok(Session {
            mountpoint: mountpoint.to_path_buf(),
            gate,
            session: Some(se),
            threads,
        })
    }

    pub fn gate(&self) -> &Arc<MountGate> {
        &self.gate
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Refuses every write still held, unmounts (lazily: a container that still has it sees it
    /// fail) and ends the serving threads.
    pub fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        self.gate.refuse("the volume was unmounted");
        if let Some(mut se) = self.session.take() {
            if let Err(e) = se.umount() {
                tracing::warn!(mountpoint = %self.mountpoint.display(), error = %e, "unmounting the FUSE mount");
            }
            let _ = se.wake();
        }
        // Not joined: a thread inside a backing system call that hangs (a storage that went
        // away) must not hang the agent; each ends once its call returns and it sees the end.
        self.threads.clear();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.shut();
    }
}

/// Whether `path` is a mount whose server is gone (`ENOTCONN`), as an agent that died leaves
/// each of its mounts.
pub fn is_dead(path: &Path) -> bool {
    matches!(std::fs::metadata(path), Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOTCONN.raw_os_error()))
}

/// Detaches a dead mount at `mountpoint`, if there is one.
pub fn detach_stale(mountpoint: &Path) -> Result<(), DataPathError> {
    if !is_dead(mountpoint) {
        return Ok(());
    }
    rustix::mount::unmount(mountpoint, rustix::mount::UnmountFlags::DETACH).map_err(|e| {
        DataPathError::Detach {
            path: mountpoint.display().to_string(),
            source: e.into(),
        }
    })?;
    tracing::info!(mountpoint = %mountpoint.display(), "detached a mount its agent no longer serves");
    Ok(())
}
