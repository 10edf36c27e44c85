//! A per-dataset, per-node record of blake3 digests keyed by what `stat` says about each file, so
//! a repeat move compares digests without reading unchanged files on either side.
//!
//! An entry is trusted only while the file's size, mtime, ctime and inode all still match. ctime
//! cannot be set from user space, so any write or metadata change since the digest was taken
//! invalidates it. The cache is only ever an optimisation: a missing, stale or corrupt cache
//! costs a re-hash or a re-copy, never a wrong skip, and transferred bytes are verified
//! independently of it.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What must be unchanged for a cached digest to still describe a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatKey {
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    pub ino: u64,
}

impl StatKey {
    pub fn of(md: &std::fs::Metadata) -> StatKey {
        StatKey {
            size: md.len(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
            ino: md.ino(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    key: StatKey,
    blake3: String,
}

#[derive(Deserialize)]
struct OnDisk {
    version: u32,
    entries: BTreeMap<String, Entry>,
}

const VERSION: u32 = 1;

/// The cache of one dataset on one node, loaded from and saved to one JSON file.
#[derive(Debug)]
pub struct HashCache {
    file: PathBuf,
    entries: BTreeMap<String, Entry>,
    dirty: bool,
}

impl HashCache {
    /// Loads `file`; a missing or unreadable cache is an empty one (logged), never an error.
    pub fn load(file: &Path) -> HashCache {
        let entries = match std::fs::read(file) {
            Ok(b) => match serde_json::from_slice::<OnDisk>(&b) {
                Ok(d) if d.version == VERSION => d.entries,
                Ok(d) => {
                    tracing::info!(file = %file.display(), version = d.version, "hash cache of another version ignored");
                    BTreeMap::new()
                }
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "hash cache unreadable; starting empty");
                    BTreeMap::new()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "hash cache unreadable; starting empty");
                BTreeMap::new()
            }
        };
        HashCache {
            file: file.to_path_buf(),
            entries,
            dirty: false,
        }
    }

    /// The digest of `rel` if it was taken when the file looked exactly like `key`.
    pub fn get(&self, rel: &str, key: &StatKey) -> Option<&str> {
        self.entries
            .get(rel)
            .filter(|e| e.key == *key)
            .map(|e| e.blake3.as_str())
    }

    pub fn put(&mut self, rel: &str, key: StatKey, blake3: String) {
        let e = Entry { key, blake3 };
        if self.entries.get(rel) != Some(&e) {
            self.entries.insert(rel.to_string(), e);
            self.dirty = true;
        }
    }

    /// Drops entries for paths `keep` rejects (files the dataset no longer has).
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        let before = self.entries.len();
        self.entries.retain(|k, _| keep(k));
        self.dirty |= self.entries.len() != before;
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes the cache if it changed: a temp file renamed over the old one, so a reader sees
    /// either the old cache or the new one.
    pub fn save(&mut self) -> std::io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        #[derive(Serialize)]
        struct Borrowed<'a> {
            version: u32,
            entries: &'a BTreeMap<String, Entry>,
        }
        let body = serde_json::to_vec(&Borrowed {
            version: VERSION,
            entries: &self.entries,
        })
        .map_err(std::io::Error::other)?;
        let tmp = self
            .file
            .with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
        // No fsync: the data the entries describe was synced before they were recorded, the
        // rename is atomic, and a cache lost to a crash only costs a re-hash.
        std::fs::write(&tmp, &body)?;
        std::fs::rename(&tmp, &self.file)?;
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_holds_only_while_the_file_is_untouched() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("f");
        std::fs::write(&f, b"one").expect("w");
        let k1 = StatKey::of(&std::fs::metadata(&f).expect("md"));
        let mut c = HashCache::load(&dir.path().join("hashes.json"));
        assert!(c.is_empty());
        c.put("f", k1, "h1".into());
        c.save().expect("save");
        let c = HashCache::load(&dir.path().join("hashes.json"));
        assert_eq!(c.get("f", &k1), Some("h1"), "survives a reload");
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(&f, b"two").expect("w");
        let k2 = StatKey::of(&std::fs::metadata(&f).expect("md"));
        assert_ne!(k1, k2, "same size, but mtime/ctime moved");
        assert_eq!(c.get("f", &k2), None);
    }

    #[test]
    fn a_corrupt_cache_is_an_empty_one() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("hashes.json");
        std::fs::write(&p, b"{not json").expect("w");
        let mut c = HashCache::load(&p);
        assert!(c.is_empty());
        c.put(
            "x",
            StatKey::of(&std::fs::metadata(&p).expect("md")),
            "h".into(),
        );
        c.save().expect("overwrites the corrupt file");
        assert_eq!(HashCache::load(&p).len(), 1);
    }
}
