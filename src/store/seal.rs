//! Encryption at rest for what calls leave behind: transcripts, slot values,
//! summaries, hand-off packets, call records, ticket bodies and inbound
//! messages are sealed with AES-256-GCM before they reach the database.
//!
//! A stored value reads `enc1:<key id>:<base64 nonce ‖ ciphertext ‖ tag>`.
//! The key id is derived from the key itself (the first 8 hex digits of its
//! SHA-256), so nothing about keys is configured twice. The associated data
//! names the column and the row (`interactions.slots/<id>`), so a sealed value
//! copied into another row or column does not open.
//!
//! A keyring is one or more keys; the first seals, all of them open. Rotation:
//! put a new key first, keep the old one after it, run `attendant db rekey`
//! (which re-seals every row with the first key), then drop the old key.
//! The database remembers which keys have sealed data (`data_keys`), so a
//! node that lacks one refuses to start instead of failing call by call.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use sha2::{Digest, Sha256};

const PREFIX: &str = "enc1:";
const NONCE_LEN: usize = 12;
/// Where the keys come from when no file is configured: base64 keys,
/// separated by commas or whitespace, the sealing key first.
pub const KEYS_ENV: &str = "ATTENDANT_DATA_KEYS";

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("data key {0}: not 32 bytes of base64")]
    BadKey(String),
    #[error("no data key in {0}")]
    NoKey(String),
    #[error("data key file {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("{0} was sealed with data key {1}, which is not in the keyring")]
    UnknownKey(String, String),
    #[error("{0} does not open with its data key (altered, or moved from another row)")]
    Tampered(String),
}

struct DataKey {
    id: String,
    cipher: Aes256Gcm,
}

/// The data keys; cheap to clone.
#[derive(Clone)]
pub struct Keyring {
    keys: Arc<Vec<DataKey>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Ids only: never the keys.
        f.debug_list()
            .entries(self.keys.iter().map(|k| &k.id))
            .finish()
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// A fresh key from the OS CSPRNG, base64.
pub fn new_key() -> String {
    let mut k = [0u8; 32];
    getrandom::fill(&mut k).expect("the OS random source");
    b64().encode(k)
}

impl Keyring {
    /// Keys in base64, separated by commas, whitespace or lines; `#` starts
    /// a comment. The first seals.
    pub fn parse(text: &str, source: &str) -> Result<Keyring, SealError> {
        let mut keys = Vec::new();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            for word in line.split(|c: char| c == ',' || c.is_whitespace()) {
                if word.is_empty() {
                    continue;
                }
                let raw = b64()
                    .decode(word)
                    .ok()
                    .filter(|k| k.len() == 32)
                    // The error names the source, never the key.
                    .ok_or_else(|| SealError::BadKey(source.to_string()))?;
                let id = hex::encode(&Sha256::digest(&raw)[..4]);
                let cipher = Aes256Gcm::new_from_slice(&raw).expect("32-byte key");
                if !keys.iter().any(|k: &DataKey| k.id == id) {
                    keys.push(DataKey { id, cipher });
                }
            }
        }
        if keys.is_empty() {
            return Err(SealError::NoKey(source.to_string()));
        }
        Ok(Keyring {
            keys: Arc::new(keys),
        })
    }

    /// One fresh key held in memory only (an in-memory database, tests).
    pub fn ephemeral() -> Keyring {
        Keyring::parse(&new_key(), "a fresh key").expect("a fresh key parses")
    }

    /// The keyring for the store at `url`: `ATTENDANT_DATA_KEYS` when set;
    /// else `key_file` (empty: `attendant.key` beside an SQLite database,
    /// `data/attendant.key` for PostgreSQL), created with one fresh key,
    /// readable by its owner only, the first time.
    pub fn for_store(url: &str, key_file: &str) -> Result<Keyring, SealError> {
        if let Ok(text) = std::env::var(KEYS_ENV) {
            if !text.trim().is_empty() {
                return Keyring::parse(&text, KEYS_ENV);
            }
        }
        if url == "sqlite::memory:" && key_file.is_empty() {
            return Ok(Keyring::ephemeral());
        }
        let path = if key_file.is_empty() {
            default_key_file(url)
        } else {
            PathBuf::from(key_file)
        };
        let shown = path.display().to_string();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                create_key_file(&path).map_err(|source| SealError::File {
                    path: shown.clone(),
                    source,
                })?
            }
            Err(source) => {
                return Err(SealError::File {
                    path: shown,
                    source,
                })
            }
        };
        Keyring::parse(&text, &shown)
    }

    /// The id of the key that seals.
    pub fn current_id(&self) -> &str {
        &self.keys[0].id
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    /// Seals `plain` for the value at `place` (column and row).
    pub fn seal(&self, place: &str, plain: &str) -> String {
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the OS random source");
        let sealed = key
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad: place.as_bytes(),
                },
            )
            .expect("AES-GCM seals any length we store");
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        format!("{PREFIX}{}:{}", key.id, b64().encode(out))
    }

    /// Opens a stored value. Values written before sealing existed (no
    /// prefix) read as they are; `attendant db rekey` seals them.
    pub fn open(&self, place: &str, stored: &str) -> Result<String, SealError> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_string());
        };
        let tampered = || SealError::Tampered(place.to_string());
        let (id, body) = rest.split_once(':').ok_or_else(tampered)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| SealError::UnknownKey(place.to_string(), id.to_string()))?;
        let raw = b64().decode(body).map_err(|_| tampered())?;
        if raw.len() < NONCE_LEN {
            return Err(tampered());
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let plain = key
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: place.as_bytes(),
                },
            )
            .map_err(|_| tampered())?;
        String::from_utf8(plain).map_err(|_| tampered())
    }

    /// Whether `stored` is already sealed with the key that seals now.
    pub fn is_current(&self, stored: &str) -> bool {
        stored
            .strip_prefix(PREFIX)
            .and_then(|r| r.split_once(':'))
            .is_some_and(|(id, _)| id == self.current_id())
    }
}

fn default_key_file(url: &str) -> PathBuf {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let path = path.split('?').next().unwrap_or(path);
        if let Some(dir) = Path::new(path)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            return dir.join("attendant.key");
        }
        return PathBuf::from("attendant.key");
    }
    PathBuf::from("data/attendant.key")
}

/// Writes a new key file atomically: several processes starting at once
/// all end up with the one that landed first.
fn create_key_file(path: &Path) -> std::io::Result<String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let text = format!(
        "# Attendant data key (AES-256-GCM), made {}. Keep it apart from\n\
         # database backups; see docs/security.md for rotation.\n{}\n",
        super::now_ms(),
        new_key()
    );
    let tmp = path.with_extension(format!("key.{}", uuid::Uuid::new_v4().simple()));
    {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            tracing::warn!(
                file = %path.display(),
                "created a new data key; back it up apart from the database"
            );
            Ok(text)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read_to_string(path),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_opens_and_binds_to_its_place() {
        let k = Keyring::ephemeral();
        let s = k.seal("interactions.slots/c1", r#"{"pin":"****"}"#);
        assert!(s.starts_with("enc1:") && !s.contains("pin"));
        assert_eq!(
            k.open("interactions.slots/c1", &s).unwrap(),
            r#"{"pin":"****"}"#
        );
        // The same value twice seals differently (fresh nonce).
        assert_ne!(s, k.seal("interactions.slots/c1", r#"{"pin":"****"}"#));
        // Moved to another row or column: refused.
        assert!(matches!(
            k.open("interactions.slots/c2", &s),
            Err(SealError::Tampered(_))
        ));
        // One bit flipped: refused.
        let mut raw = b64().decode(s.rsplit(':').next().unwrap()).unwrap();
        raw[20] ^= 1;
        let bad = format!("enc1:{}:{}", k.current_id(), b64().encode(raw));
        assert!(k.open("interactions.slots/c1", &bad).is_err());
        // Rows from before sealing read as they are.
        assert_eq!(k.open("x/1", "[1,2]").unwrap(), "[1,2]");
    }

    #[test]
    fn rotation_keeps_old_keys_for_reading() {
        let old_key = new_key();
        let new = new_key();
        let old = Keyring::parse(&old_key, "old").unwrap();
        let sealed = old.seal("t/1", "hello");
        let both = Keyring::parse(&format!("{new}\n# kept to read\n{old_key}"), "f").unwrap();
        assert_ne!(both.current_id(), old.current_id());
        assert_eq!(both.open("t/1", &sealed).unwrap(), "hello");
        assert!(!both.is_current(&sealed));
        assert!(both.is_current(&both.seal("t/1", "hello")));
        let only_new = Keyring::parse(&new, "new").unwrap();
        assert!(matches!(
            only_new.open("t/1", &sealed),
            Err(SealError::UnknownKey(_, id)) if id == old.current_id()
        ));
    }

    #[test]
    fn bad_keys_are_refused_without_showing_them() {
        let e = Keyring::parse("c2hvcnQ=", "ATTENDANT_DATA_KEYS").unwrap_err();
        assert!(!e.to_string().contains("c2hvcnQ"));
        assert!(Keyring::parse("# nothing\n", "f").is_err());
    }

    #[test]
    fn key_file_is_created_once_private() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/a.db", dir.path().display());
        let a = Keyring::for_store(&url, "").unwrap();
        let b = Keyring::for_store(&url, "").unwrap();
        assert_eq!(a.current_id(), b.current_id());
        let file = dir.path().join("attendant.key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "key file readable by others: {mode:o}");
        }
    }
}
