//! Berth's test lab: everything a test needs to run against real Docker Engines without touching
//! the host engine's own state, and without any image from a registry.
//!
//! - [`gate`]: what a real-engine test needs (an engine, root, network tools); under `CI=true`
//!   a missing piece fails the test, elsewhere the test is reported as *ignored* with a
//!   `NOT RUN` line a person sees — never as passed.
//! - [`harness`]: runs a test binary's trials through `libtest-mimic`, so that gate decides per
//!   run whether its tests are ignored (libtest's own `#[ignore]` is fixed at compile time).
//! - [`image`]: the `berth-testapp` image, a static binary the workspace compiles, imported
//!   `FROM scratch` into any engine.
//! - [`dbclient`]: each database's own client from the host (the `postgres` and `redis`
//!   crates, `etcdctl`), a load that writes to every node at once, tagging each acknowledged
//!   write with the server that acknowledged it.
//! - [`dbimage`]: images of PostgreSQL, Redis and etcd made from Debian packages by
//!   `images/build`, cached on the machine by the recipe's hash, imported into lab nodes.
//! - [`gluster`]: a GlusterFS volume replicated across lab nodes, glusterd, bricks and FUSE
//!   clients inside the nodes, so a node's death or cut takes its brick with it.
//! - [`engine`]: a handle on one engine (its socket) for the docker CLI and raw API reads.
//! - [`swarm`]: a multi-node Swarm on one machine: one dockerd per network namespace (and
//!   private mount namespace, so each node has its own plugin directory) on a private bridge,
//!   with node faults (kill, partition, freeze, a dockerd restart) for the chaos harness. The host engine is never asked
//!   to join, init or leave a swarm.
//!
//! The recipe and its trap (iptables' FORWARD policy on a host with dockerd) come from running
//! Swarm this way on this kind of machine; see `ARCHITECTURE.md`, "Testing on real engines".

pub mod dbclient;
pub mod dbimage;
pub mod engine;
pub mod gate;
pub mod gluster;
pub mod harness;
pub mod image;
mod pidns;
pub mod swarm;

pub use engine::Engine;
pub use gate::Need;
pub use image::TestImage;
pub use swarm::{Lab, LabNode, Role};

use std::time::{Duration, Instant};

/// Polls `f` every 250 ms until it holds or `limit` passes.
pub fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A name unique to this process and call, for host-engine objects (volumes, images, plugins)
/// that concurrent tests and concurrent test binaries must not share.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs a shell command, returning its output (for cleanup, where failure is tolerated).
pub(crate) fn sh(cmd: &str) -> std::io::Result<std::process::Output> {
    std::process::Command::new("sh").args(["-c", cmd]).output()
}

/// Runs a shell command that must succeed; its stdout, trimmed.
pub(crate) fn must(cmd: &str) -> String {
    let out = sh(cmd).unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
