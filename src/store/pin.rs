//! PINs: stored as argon2id with a random salt (a four-digit PIN under a
//! fast hash falls to 10⁴ guesses), checked in constant time, and guarded
//! across calls: failed attempts per account lock phone verification for a
//! while, so guessing cannot simply continue on the next call.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use sqlx::Row;
use subtle::ConstantTimeEq;

use super::{now_ms, Result, Store};

/// Failed attempts, across calls, before an account is locked.
pub const PIN_MAX_FAILURES: i64 = 5;
/// How long a locked account cannot be verified by phone.
pub const PIN_LOCK_MS: i64 = 60 * 60 * 1000;

/// The PHC string stored for `pin`.
pub fn hash_pin(pin: &str) -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the operating system's random source");
    let salt = SaltString::encode_b64(&b).expect("16 bytes is a valid salt");
    argon2::Argon2::default()
        .hash_password(pin.as_bytes(), &salt)
        .expect("argon2 with default parameters")
        .to_string()
}

/// Whether `pin` is the one `stored` was made from. Rows written before
/// argon2 (salted SHA-256, hex) still verify; `upgrade` says to rehash.
pub fn pin_matches(stored: &str, account_id: &str, pin: &str) -> (bool, bool) {
    if let Ok(h) = PasswordHash::new(stored) {
        let ok = argon2::Argon2::default()
            .verify_password(pin.as_bytes(), &h)
            .is_ok();
        return (ok, false);
    }
    let legacy = legacy_hash(account_id, pin);
    let ok = bool::from(legacy.as_bytes().ct_eq(stored.as_bytes()));
    (ok, ok)
}

fn legacy_hash(account_id: &str, pin: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"attendant-pin\0");
    h.update(account_id.as_bytes());
    h.update(b"\0");
    h.update(pin.as_bytes());
    hex::encode(h.finalize())
}

/// An account's standing before a PIN is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    Open,
    Locked,
}

impl Store {
    pub async fn pin_guard(&self, account_id: &str) -> Result<Guard> {
        let r = sqlx::query("SELECT locked_until_ms FROM pin_guard WHERE account_id = $1")
            .bind(account_id)
            .fetch_optional(&self.pool)
            .await?;
        let until: i64 = match r {
            Some(r) => r.try_get("locked_until_ms")?,
            None => 0,
        };
        Ok(if until > now_ms() {
            Guard::Locked
        } else {
            Guard::Open
        })
    }

    /// Counts a failed attempt; true when this one locked the account.
    pub async fn pin_failed(&self, account_id: &str) -> Result<bool> {
        sqlx::query(
            "INSERT INTO pin_guard (account_id, failures, locked_until_ms) VALUES ($1, 1, 0) \
             ON CONFLICT (account_id) DO UPDATE SET failures = pin_guard.failures + 1",
        )
        .bind(account_id)
        .execute(&self.pool)
        .await?;
        let r = sqlx::query("SELECT failures FROM pin_guard WHERE account_id = $1")
            .bind(account_id)
            .fetch_one(&self.pool)
            .await?;
        let failures: i64 = r.try_get("failures")?;
        if failures >= PIN_MAX_FAILURES {
            sqlx::query(
                "UPDATE pin_guard SET failures = 0, locked_until_ms = $1 WHERE account_id = $2",
            )
            .bind(now_ms() + PIN_LOCK_MS)
            .bind(account_id)
            .execute(&self.pool)
            .await?;
            return Ok(true);
        }
        Ok(false)
    }

    pub async fn pin_succeeded(&self, account_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM pin_guard WHERE account_id = $1")
            .bind(account_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Forgets every failed attempt and lock (scratch stores of tests).
    pub async fn clear_pin_guards(&self) -> Result<()> {
        sqlx::query("DELETE FROM pin_guard")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_pin_hash(&self, account_id: &str, hash: &str) -> Result<()> {
        sqlx::query("UPDATE accounts SET pin_hash = $1 WHERE id = $2")
            .bind(hash)
            .bind(account_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Verification;
    use sqlx::Row;

    /// Five wrong PINs over any number of calls lock the account: then even
    /// the right PIN fails, sounding the same, until the lock expires.
    #[tokio::test]
    async fn wrong_pins_across_calls_lock_the_account() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&crate::store::scratch_url(dir.path()).await.unwrap())
            .await
            .unwrap();
        crate::store::seed::seed_text(&s, crate::store::seed::DEMO_TOML, "demo")
            .await
            .unwrap();
        let ok = s.verify_account("4561", "1234", None).await.unwrap();
        assert!(matches!(ok, Verification::Verified(_)));
        for i in 1..PIN_MAX_FAILURES {
            let r = s.verify_account("4561", "0000", None).await.unwrap();
            assert!(matches!(r, Verification::NoMatch), "attempt {i}: {r:?}");
        }
        let r = s.verify_account("4561", "0000", None).await.unwrap();
        assert!(
            matches!(&r, Verification::LockedNow(ids) if ids == &["20004561"]),
            "{r:?}"
        );
        // One ops event, without the account number.
        assert_eq!(s.count_events(crate::store::LOCKED_EVENT).await.unwrap(), 1);
        let payload: String = sqlx::query("SELECT payload FROM events")
            .fetch_one(&s.pool)
            .await
            .unwrap()
            .try_get("payload")
            .unwrap();
        assert!(
            payload.contains("****4561") && !payload.contains("2000"),
            "{payload}"
        );
        let r = s.verify_account("4561", "1234", None).await.unwrap();
        assert!(matches!(r, Verification::NoMatch), "locked: {r:?}");
        // The lock lapses (moved into the past here); the right PIN works
        // and starts the count afresh.
        sqlx::query("UPDATE pin_guard SET locked_until_ms = 1")
            .execute(&s.pool)
            .await
            .unwrap();
        let r = s.verify_account("4561", "1234", None).await.unwrap();
        assert!(matches!(r, Verification::Verified(_)), "{r:?}");
        assert_eq!(s.pin_guard("20004561").await.unwrap(), Guard::Open);
    }

    #[test]
    fn argon2_pins_and_legacy_rows() {
        let h = hash_pin("1234");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert_ne!(h, hash_pin("1234"), "a salt of its own");
        assert_eq!(pin_matches(&h, "a", "1234"), (true, false));
        assert_eq!(pin_matches(&h, "a", "1235"), (false, false));
        let old = legacy_hash("a", "1234");
        assert_eq!(pin_matches(&old, "a", "1234"), (true, true));
        assert_eq!(pin_matches(&old, "b", "1234"), (false, false));
    }
}
