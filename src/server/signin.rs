//! Sign-in throttling. Password guesses slow down per user name and per
//! client address (the wait doubles with each failure past a few free
//! ones), and only a few Argon2 checks run at once, so sign-in can be
//! neither brute-forced nor used to take memory and cores from calls.
//!
//! [`Failures`] is the policy, sans-IO: the time is passed in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{Semaphore, SemaphorePermit};

/// The longest a name or address is made to wait.
const MAX_WAIT: Duration = Duration::from_secs(15 * 60);
/// A name or address with no failure for this long starts afresh.
const FORGET: Duration = Duration::from_secs(60 * 60);
/// Names and addresses remembered at most (the oldest are forgotten first).
const CAP: usize = 10_000;
/// Longest user name kept as a key (longer ones are cut).
const KEY_CHARS: usize = 128;
/// Failures for one user name before it must wait.
const FREE_PER_USER: u32 = 5;
/// Failures from one address before it must wait: more than per name,
/// since people behind one proxy or office address share it.
const FREE_PER_ADDRESS: u32 = 20;
/// Argon2 checks at once (19 MiB each).
const AT_ONCE: usize = 2;
/// How long a sign-in waits for a free check before being told to retry.
const QUEUE_WAIT: Duration = Duration::from_secs(2);

/// Recent failures of a set of keys.
pub struct Failures {
    free: u32,
    map: HashMap<String, Strike>,
}

#[derive(Clone, Copy)]
struct Strike {
    count: u32,
    last: Instant,
}

impl Failures {
    pub fn new(free: u32) -> Self {
        Self {
            free,
            map: HashMap::new(),
        }
    }

    /// How long `key` must still wait before its next attempt, if at all.
    pub fn wait(&self, key: &str, now: Instant) -> Option<Duration> {
        let s = self.map.get(key)?;
        let over = s.count.checked_sub(self.free)?;
        let wait = Duration::from_secs(1u64 << over.min(20)).min(MAX_WAIT);
        wait.checked_sub(now.saturating_duration_since(s.last))
            .filter(|d| !d.is_zero())
    }

    pub fn failed(&mut self, key: &str, now: Instant) {
        if !self.map.contains_key(key) && self.map.len() >= CAP {
            self.map
                .retain(|_, s| now.saturating_duration_since(s.last) < FORGET);
            if self.map.len() >= CAP {
                if let Some(oldest) = self
                    .map
                    .iter()
                    .min_by_key(|(_, s)| s.last)
                    .map(|(k, _)| k.clone())
                {
                    self.map.remove(&oldest);
                }
            }
        }
        let s = self.map.entry(key.to_string()).or_insert(Strike {
            count: 0,
            last: now,
        });
        if now.saturating_duration_since(s.last) >= FORGET {
            s.count = 0;
        }
        s.count = s.count.saturating_add(1);
        s.last = now;
    }

    pub fn forget(&mut self, key: &str) {
        self.map.remove(key);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

/// Why a sign-in is not tried now.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Too many recent failures for this name or address.
    Wait(Duration),
    /// Every Argon2 check is taken; try again shortly.
    Busy,
}

/// The server's throttle: failures by name and by address, and the cap on
/// checks at once.
pub struct Throttle {
    users: Mutex<Failures>,
    addresses: Mutex<Failures>,
    checks: Semaphore,
}

impl Default for Throttle {
    fn default() -> Self {
        Self {
            users: Mutex::new(Failures::new(FREE_PER_USER)),
            addresses: Mutex::new(Failures::new(FREE_PER_ADDRESS)),
            checks: Semaphore::new(AT_ONCE),
        }
    }
}

fn user_key(user: &str) -> String {
    user.chars().take(KEY_CHARS).collect()
}

impl Throttle {
    /// May `user` from `from` try a password now? The permit is held
    /// while the password is checked.
    pub async fn admit(
        &self,
        user: &str,
        from: Option<IpAddr>,
        now: Instant,
    ) -> Result<SemaphorePermit<'_>, Refused> {
        self.must_wait(user, from, now)?;
        let permit = match tokio::time::timeout(QUEUE_WAIT, self.checks.acquire()).await {
            Ok(Ok(permit)) => permit,
            _ => return Err(Refused::Busy),
        };
        // Again once a check is free: guesses sent all at once pass the
        // first look together, and the failures of those checked before
        // them must still count.
        self.must_wait(user, from, now)?;
        Ok(permit)
    }

    fn must_wait(&self, user: &str, from: Option<IpAddr>, now: Instant) -> Result<(), Refused> {
        let by_user = self.users.lock().wait(&user_key(user), now);
        let by_address = from.and_then(|a| self.addresses.lock().wait(&a.to_string(), now));
        by_user
            .max(by_address)
            .map_or(Ok(()), |w| Err(Refused::Wait(w)))
    }

    /// Records the outcome of a check: a failure counts against the name
    /// and the address; a success clears the name only, so one good
    /// account does not reset an address's count of guesses.
    pub fn outcome(&self, user: &str, from: Option<IpAddr>, ok: bool, now: Instant) {
        let key = user_key(user);
        if ok {
            self.users.lock().forget(&key);
            return;
        }
        self.users.lock().failed(&key, now);
        if let Some(a) = from {
            self.addresses.lock().failed(&a.to_string(), now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_past_the_free_failures_and_success_clears_it() {
        let t0 = Instant::now();
        let mut f = Failures::new(3);
        for i in 0..3 {
            assert_eq!(f.wait("ana", t0), None, "failure {i} is free");
            f.failed("ana", t0);
        }
        // The fourth failure onwards: 1 s, 2 s, 4 s … after the last one.
        assert_eq!(f.wait("ana", t0), Some(Duration::from_secs(1)));
        assert_eq!(
            f.wait("ana", t0 + Duration::from_millis(400)),
            Some(Duration::from_millis(600))
        );
        assert_eq!(f.wait("ana", t0 + Duration::from_secs(1)), None);
        let t1 = t0 + Duration::from_secs(1);
        f.failed("ana", t1);
        assert_eq!(f.wait("ana", t1), Some(Duration::from_secs(2)));
        f.failed("ana", t1);
        assert_eq!(f.wait("ana", t1), Some(Duration::from_secs(4)));
        assert_eq!(f.wait("ben", t1), None, "other names are not slowed");
        // Capped, however many failures.
        for _ in 0..100 {
            f.failed("ana", t1);
        }
        assert_eq!(f.wait("ana", t1), Some(MAX_WAIT));
        // An hour without failures starts afresh.
        let later = t1 + FORGET;
        f.failed("ana", later);
        assert_eq!(f.wait("ana", later), None);
        f.forget("ana");
        assert_eq!(f.len(), 0);
    }

    #[test]
    fn endless_new_names_keep_the_table_bounded() {
        let t0 = Instant::now();
        let mut f = Failures::new(0);
        for i in 0..CAP + 500 {
            f.failed(&format!("guess{i}"), t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(f.len(), CAP);
        // The oldest went first; the newest are still slowed.
        assert_eq!(f.wait("guess0", t0 + Duration::from_secs(20)), None);
        let last = format!("guess{}", CAP + 499);
        assert!(f.wait(&last, t0 + Duration::from_secs(10)).is_some());
    }

    #[tokio::test]
    async fn a_guessed_name_waits_and_checks_are_capped() {
        let th = Throttle::default();
        let t0 = Instant::now();
        let addr: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..FREE_PER_USER {
            let p = th.admit("ana", Some(addr), t0).await.expect("free tries");
            drop(p);
            th.outcome("ana", Some(addr), false, t0);
        }
        assert_eq!(
            th.admit("ana", Some(addr), t0).await.unwrap_err(),
            Refused::Wait(Duration::from_secs(1))
        );
        // Another name from the same address still may, until the
        // address's own free failures are spent.
        assert!(th.admit("ben", Some(addr), t0).await.is_ok());
        for i in 0..FREE_PER_ADDRESS {
            th.outcome(&format!("n{i}"), Some(addr), false, t0);
        }
        assert!(matches!(
            th.admit("ben", Some(addr), t0).await,
            Err(Refused::Wait(_))
        ));
        assert!(th.admit("ben", None, t0).await.is_ok());
        // A guess that was let in while the checks were taken is looked
        // at again when one frees: the guesses checked meanwhile count.
        let first = th.admit("dee", None, t0).await.unwrap();
        let second = th.admit("dee", None, t0).await.unwrap();
        for _ in 0..FREE_PER_USER - 1 {
            th.outcome("dee", None, false, t0);
        }
        let queued = th.admit("dee", None, t0);
        tokio::pin!(queued);
        assert!(
            futures_util::poll!(&mut queued).is_pending(),
            "waits for a check"
        );
        th.outcome("dee", None, false, t0);
        drop(first);
        assert_eq!(
            queued.await.unwrap_err(),
            Refused::Wait(Duration::from_secs(1))
        );
        drop(second);
        // With every check taken, the next is told to come back (after
        // waiting its 2 s for one).
        let held: Vec<_> =
            futures_util::future::join_all((0..AT_ONCE).map(|_| th.admit("cy", None, t0))).await;
        assert!(held.iter().all(Result::is_ok));
        assert_eq!(th.admit("cy", None, t0).await.unwrap_err(), Refused::Busy);
    }
}
