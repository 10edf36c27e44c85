//! The test image: `berth-testapp`, compiled static by a nested `cargo build` (std only, so it
//! takes seconds) and imported `FROM scratch` into an engine. No registry, no Debian package.
//!
//! A nested build because a static binary needs `-C target-feature=+crt-static` with an
//! explicit `--target`, which must not apply to the rest of the workspace; it has its own target
//! directory, so it never waits on the outer `cargo test`'s lock.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::engine::Engine;

/// Where the static binary lands, inside the workspace's `target/`.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("lab/ sits in the workspace root")
        .to_path_buf()
}

fn host_triple() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc)
        .arg("-vV")
        .output()
        .expect("rustc -vV runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_string()
}

/// Builds (once per process) a static `berth-testapp` and returns its path.
pub fn static_testapp() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| static_binary("berth-testapp"))
}

/// Builds the workspace package `package`'s binary of the same name statically (release) and
/// returns its path. Used for the test app and, by the chaos harness, for Berth's own binaries
/// inside node images.
pub fn static_binary(package: &str) -> PathBuf {
    let root = workspace_root();
    let triple = host_triple();
    let target_dir = root.join("target").join("static");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(&root)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_TARGET_DIR")
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            package,
            "--bin",
            package,
        ])
        .args(["--target", &triple, "--target-dir"])
        .arg(&target_dir)
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "static build of {package}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    target_dir.join(&triple).join("release").join(package)
}

/// The test image's tarball (`/berth-testapp` and an empty `/data`), built once per process.
fn tarball() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let bin = static_testapp();
        let dir = bin.parent().expect("bin dir").join("testapp-rootfs");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).expect("rootfs");
        std::fs::create_dir_all(dir.join("tmp")).expect("rootfs");
        std::fs::copy(bin, dir.join("berth-testapp")).expect("copy testapp");
        let tar = dir.with_extension("tar");
        crate::must(&format!("tar -C {} -cf {} .", dir.display(), tar.display()));
        tar
    })
}

/// An image imported into one engine under a unique tag, removed again on drop. Its entry
/// point is `/berth-testapp`, so a container's command is a testapp subcommand
/// (`sleep 3600`, `cat /data/x`, …).
pub struct TestImage {
    pub tag: String,
    engine: Engine,
    keep: bool,
}

impl TestImage {
    /// Imports the test image into `engine` under a fresh tag.
    pub fn import(engine: &Engine) -> TestImage {
        let tag = format!("{}:1", crate::unique("berth-testapp"));
        Self::import_as(engine, &tag, false)
    }

    /// Imports under a fixed tag and leaves it there (a lab node's engine, which dies with the
    /// lab anyway).
    pub fn import_fixed(engine: &Engine, tag: &str) -> TestImage {
        Self::import_as(engine, tag, true)
    }

    fn import_as(engine: &Engine, tag: &str, keep: bool) -> TestImage {
        let tar = tarball();
        crate::must(&format!(
            "DOCKER_HOST={} docker import -c 'ENTRYPOINT [\"/berth-testapp\"]' {} {tag} >/dev/null",
            engine.docker_host(),
            tar.display()
        ));
        TestImage {
            tag: tag.to_string(),
            engine: engine.clone(),
            keep,
        }
    }
}

impl Drop for TestImage {
    fn drop(&mut self) {
        if !self.keep {
            let _ = self.engine.docker(&["rmi", "-f", &self.tag]);
        }
    }
}
