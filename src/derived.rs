//! Files derived from a model and fixed input (a prompt's audio, an agent's
//! example embeddings), kept next to the models so a restart reads them
//! instead of computing them again. A key hashes everything the result
//! depends on, so a changed model or input simply misses. Only fixed texts
//! of an agent go here, never what a caller said or a lookup filled in.
//! Nothing here is needed: a cache that cannot be read or written is
//! skipped.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// A folder of derived files of one kind, at most `keep` of them.
#[derive(Debug, Clone)]
pub struct DiskCache {
    dir: PathBuf,
    ext: &'static str,
    keep: usize,
}

/// What identifies a model file: the pinned wheel's hash its fetch stamp
/// names, and its size (a hand-replaced file differs in one or the other).
pub fn model_identity(path: &Path) -> Vec<u8> {
    let mut id = std::fs::read(stamp_of(path)).unwrap_or_default();
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    id.extend(len.to_le_bytes());
    id
}

fn stamp_of(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".stamp");
    PathBuf::from(s)
}

/// A key over `parts`, each length-prefixed so no two lists collide.
pub fn key<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex::encode(&h.finalize()[..16])
}

impl DiskCache {
    pub fn new(dir: PathBuf, ext: &'static str, keep: usize) -> Self {
        Self {
            dir,
            ext,
            keep: keep.max(1),
        }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.{}", self.ext))
    }

    /// The stored bytes under `key`, if any.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.path(key)).ok().filter(|b| !b.is_empty())
    }

    /// Stores `bytes` under `key` (whole or not at all: written aside,
    /// then renamed), then drops the oldest files past `keep`.
    pub fn put(&self, key: &str, bytes: &[u8]) {
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&self.dir)?;
            let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
            std::io::Write::write_all(&mut tmp, bytes)?;
            tmp.persist(self.path(key)).map_err(|e| e.error)?;
            Ok(())
        };
        if let Err(e) = write() {
            tracing::debug!(dir = %self.dir.display(), error = %e, "derived file not kept");
            return;
        }
        self.prune();
    }

    fn prune(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == self.ext))
            .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
            .collect();
        if files.len() <= self.keep {
            return;
        }
        files.sort();
        let extra = files.len() - self.keep;
        for (_, p) in files.into_iter().take(extra) {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_file_is_read_back_and_the_oldest_go_past_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::new(dir.path().join("c"), "bin", 2);
        assert_eq!(c.get("a"), None);
        c.put("a", b"one");
        assert_eq!(c.get("a").as_deref(), Some(&b"one"[..]));
        // Older modification times, so the order is certain.
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(dir.path().join("c/a.bin"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        c.put("b", b"two");
        c.put("c", b"three");
        assert_eq!(c.get("a"), None, "the oldest went");
        assert!(c.get("b").is_some() && c.get("c").is_some());
    }

    #[test]
    fn keys_differ_when_any_part_or_the_split_differs() {
        let k = key([&b"ab"[..], b"c"]);
        assert_eq!(k, key([&b"ab"[..], b"c"]));
        assert_ne!(k, key([&b"a"[..], b"bc"]));
        assert_ne!(k, key([&b"ab"[..], b"d"]));
    }

    #[test]
    fn an_unwritable_folder_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        // A folder path under a plain file cannot be created.
        let c = DiskCache::new(file.join("sub"), "bin", 4);
        c.put("k", b"v");
        assert_eq!(c.get("k"), None);
    }
}
