//! Images of real databases — PostgreSQL 15, Redis 7, etcd 3.4 — for lab nodes, with no
//! registry: `images/build` unpacks Debian bookworm's packages into a root filesystem (see its
//! header), which is imported into each engine with `docker import` and the `--change`s of
//! `images/NAME/changes`.
//!
//! A build takes ~20 s and downloads ~50 MB, so its tarball is cached across processes and test
//! runs in [`cache_dir`], keyed by a hash of everything in `images/` that makes it: the same
//! recipe is never built twice on one machine (CI included), a changed one is built again and
//! the stale tarball removed. Concurrent builders of the same image wait for each other (a file
//! lock), and a tarball appears only whole (written beside it, then renamed).
//!
//! The host engine is never used: each lab node imports the tarball itself.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::engine::Engine;
use crate::swarm::Lab;

/// A database the lab has an image of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Db {
    Postgres,
    Redis,
    Etcd,
}

impl Db {
    pub const ALL: [Db; 3] = [Db::Postgres, Db::Redis, Db::Etcd];

    /// The recipe's directory under `images/`.
    pub fn name(self) -> &'static str {
        match self {
            Db::Postgres => "postgres",
            Db::Redis => "redis",
            Db::Etcd => "etcd",
        }
    }

    /// The image's tag on lab nodes.
    pub fn tag(self) -> String {
        format!("berth-{}:lab", self.name())
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Where built images are kept: `$BERTH_LAB_CACHE`, else `/var/cache/berth-lab`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("BERTH_LAB_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/berth-lab"))
}

fn images_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("lab/ sits in the workspace root")
        .join("images")
}

/// The files that make `db`'s image: the shared recipe and the database's own directory.
fn recipe_files(db: Db) -> Vec<PathBuf> {
    let root = images_dir();
    let mut files: Vec<PathBuf> = ["build", "provided", "passwd", "group"]
        .iter()
        .map(|f| root.join(f))
        .collect();
    let mut stack = vec![root.join(db.name())];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .flatten()
        {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

/// The first 16 hex digits of a SHA-256 over the recipe's paths (relative) and contents.
fn recipe_hash(db: Db) -> String {
    let root = images_dir();
    let rel: Vec<String> = recipe_files(db)
        .iter()
        .map(|p| {
            p.strip_prefix(&root)
                .expect("under images/")
                .display()
                .to_string()
        })
        .collect();
    // `sha256sum` prints each file's digest beside its relative path; the digest of that list
    // covers names and contents alike.
    let out = Command::new("sh")
        .current_dir(&root)
        .arg("-c")
        .arg(r#"sha256sum "$@" | sha256sum"#)
        .arg("sh")
        .args(&rel)
        .output()
        .expect("sha256sum runs");
    assert!(
        out.status.success(),
        "hashing images/{}: {}",
        db.name(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)[..16].to_string()
}

/// A built image: its root filesystem's tarball and the `docker import --change`s.
#[derive(Debug, Clone)]
pub struct Built {
    pub db: Db,
    pub tar: PathBuf,
    pub changes: Vec<String>,
    /// Whether this process built it (`false`: it came from the cache).
    pub fresh: bool,
}

/// `db`'s image, from the cache or built now (once per process).
pub fn built(db: Db) -> &'static Built {
    static BUILT: [OnceLock<Built>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    BUILT[db.index()].get_or_init(|| build_cached(db, &cache_dir()))
}

fn build_cached(db: Db, cache: &Path) -> Built {
    let dir = cache.join("images");
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let hash = recipe_hash(db);
    let tar = dir.join(format!("{}-{hash}.tar", db.name()));
    let changes: Vec<String> = fs::read_to_string(images_dir().join(db.name()).join("changes"))
        .expect("images/NAME/changes")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    let mut fresh = false;
    if !tar.exists() {
        let lock = File::create(dir.join(format!("{}.lock", db.name()))).expect("lock file");
        lock.lock().expect("lock the image's build");
        if !tar.exists() {
            let start = std::time::Instant::now();
            let out = Command::new(images_dir().join("build"))
                .args([db.name()])
                .arg(&tar)
                .output()
                .expect("images/build runs");
            assert!(
                out.status.success(),
                "images/build {} failed:\n{}{}",
                db.name(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            eprintln!(
                "berth-lab: built the {} image in {:.1} s ({})",
                db.name(),
                start.elapsed().as_secs_f64(),
                tar.display()
            );
            fresh = true;
            // Older recipes' tarballs (and the programs taken from them) are dead weight now.
            let keep = [tar.clone(), tar.with_extension("bin")];
            for e in fs::read_dir(&dir).expect("cache dir").flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with(&format!("{}-", db.name())) && !keep.contains(&e.path()) {
                    let _ = fs::remove_file(e.path()).or_else(|_| fs::remove_dir_all(e.path()));
                }
            }
        }
    }
    Built {
        db,
        tar,
        changes,
        fresh,
    }
}

/// Imports `db`'s image into `engine` as `tag`.
pub fn import(db: Db, engine: &Engine, tag: &str) {
    let b = built(db);
    let mut cmd = Command::new("docker");
    cmd.env("DOCKER_HOST", engine.docker_host()).arg("import");
    for c in &b.changes {
        cmd.args(["--change", c]);
    }
    let out = cmd
        .arg(&b.tar)
        .arg(tag)
        .output()
        .expect("docker import runs");
    assert!(
        out.status.success(),
        "importing {} into {}: {}",
        db.name(),
        engine.sock,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Imports each of `dbs` into every node of `lab` that is up (nodes in parallel), tagged
/// [`Db::tag`]. The images live on the nodes' disks, so a node that restarts keeps them; they go
/// with the lab.
pub fn load_into(lab: &Lab, dbs: &[Db]) {
    // Cold builds in parallel: each mostly waits on downloads and the disk.
    std::thread::scope(|s| {
        for db in dbs {
            s.spawn(move || built(*db));
        }
    });
    std::thread::scope(|s| {
        for node in lab.nodes.iter().filter(|n| n.is_up()) {
            s.spawn(move || {
                for db in dbs {
                    import(*db, &node.engine, &db.tag());
                }
            });
        }
    });
}

/// A program of `db`'s image, extracted beside the cached tarball for use on the host (the
/// database's own client: `etcdctl`, `redis-cli`, `psql` need only the host's libc or the
/// libraries the host has). `path` is inside the image, e.g. `usr/bin/etcdctl`.
pub fn program(db: Db, path: &str) -> PathBuf {
    let b = built(db);
    let dir = b.tar.with_extension("bin");
    let file = Path::new(path).file_name().expect("a file name");
    let dest = dir.join(file);
    if !dest.exists() {
        fs::create_dir_all(&dir).expect("program dir");
        let tmp = tempdir_in(&dir);
        crate::must(&format!(
            "tar -C {} -xf {} ./{path}",
            tmp.display(),
            b.tar.display()
        ));
        fs::rename(tmp.join(path), &dest).expect("program in place");
        let _ = fs::remove_dir_all(&tmp);
    }
    dest
}

fn tempdir_in(dir: &Path) -> PathBuf {
    let p = dir.join(crate::unique(".x"));
    fs::create_dir_all(&p).expect("temp dir");
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_image_has_a_recipe_and_a_stable_hash() {
        for db in Db::ALL {
            let files = recipe_files(db);
            assert!(
                files.iter().any(|f| f.ends_with("entrypoint")),
                "{}: {files:?}",
                db.name()
            );
            let h = recipe_hash(db);
            assert_eq!(h.len(), 16);
            assert_eq!(h, recipe_hash(db), "the same recipe, the same key");
        }
        assert_ne!(recipe_hash(Db::Postgres), recipe_hash(Db::Redis));
    }

    #[test]
    fn tags_are_per_database() {
        let tags: Vec<String> = Db::ALL.iter().map(|d| d.tag()).collect();
        assert_eq!(
            tags,
            ["berth-postgres:lab", "berth-redis:lab", "berth-etcd:lab"]
        );
    }
}
