//! Per-source rate limiting with a temporary ban, in the spirit of
//! Kamailio's pike module: a source that sends more than `max` messages in
//! `window` is banned for `ban`, and while banned its packets are dropped
//! before they are parsed or queued. Sans-IO: time is passed in. Memory is
//! bounded: at most `cap` sources are tracked; idle ones are forgotten.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Messages one source may send per `window_ms` (0: no limit)…
    pub max_per_window: u32,
    /// …and one a trunk admits (a carrier or PBX carrying many calls).
    pub trunk_max_per_window: u32,
    pub window_ms: u64,
    /// How long a source over the limit is ignored.
    pub ban_s: u64,
    /// SIP over TCP/TLS: connections in all, and from one address.
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// A stream connection that sends nothing for this long is closed.
    pub idle_timeout_s: u64,
    /// Messages waiting for the signalling task; more are dropped (UDP
    /// peers retransmit) so a flood cannot grow memory.
    pub queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_per_window: 64,
            trunk_max_per_window: 1000,
            window_ms: 2000,
            ban_s: 60,
            max_connections: 1024,
            max_connections_per_ip: 32,
            idle_timeout_s: 300,
            queue: 2048,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop,
    /// Over the limit just now: banned from here on (and this one dropped).
    Banned,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    window_start: Instant,
    count: u32,
    banned_until: Option<Instant>,
}

pub struct FloodGuard {
    window: Duration,
    ban: Duration,
    cap: usize,
    sources: HashMap<IpAddr, Entry>,
    last_sweep: Option<Instant>,
}

impl FloodGuard {
    pub fn new(l: &Limits) -> Self {
        Self {
            window: Duration::from_millis(l.window_ms.max(1)),
            ban: Duration::from_secs(l.ban_s),
            cap: 65_536,
            sources: HashMap::new(),
            last_sweep: None,
        }
    }

    /// One message from `ip`, allowed `max` per window, arrived at `now`.
    pub fn check(&mut self, now: Instant, ip: IpAddr, max: u32) -> Verdict {
        if max == 0 {
            return Verdict::Pass;
        }
        self.sweep(now);
        if !self.sources.contains_key(&ip) && self.sources.len() >= self.cap {
            // Too many sources to track (spoofed floods): newcomers are not
            // remembered, and so not limited, rather than grow memory.
            return Verdict::Pass;
        }
        let e = self.sources.entry(ip).or_insert(Entry {
            window_start: now,
            count: 0,
            banned_until: None,
        });
        if let Some(until) = e.banned_until {
            if now < until {
                return Verdict::Drop;
            }
            e.banned_until = None;
            e.window_start = now;
            e.count = 0;
        }
        if now.saturating_duration_since(e.window_start) >= self.window {
            e.window_start = now;
            e.count = 0;
        }
        e.count += 1;
        if e.count > max {
            e.banned_until = Some(now + self.ban);
            return Verdict::Banned;
        }
        Verdict::Pass
    }

    /// Sources currently banned.
    pub fn banned(&self, now: Instant) -> usize {
        self.sources
            .values()
            .filter(|e| e.banned_until.is_some_and(|u| now < u))
            .count()
    }

    pub fn tracked(&self) -> usize {
        self.sources.len()
    }

    /// Forgets quiet, unbanned sources once per window.
    fn sweep(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|t| now.saturating_duration_since(t) < self.window)
        {
            return;
        }
        self.last_sweep = Some(now);
        let window = self.window;
        self.sources.retain(|_, e| match e.banned_until {
            Some(u) => now < u,
            None => now.saturating_duration_since(e.window_start) < window,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_flooder_is_banned_and_others_pass() {
        let mut g = FloodGuard::new(&Limits::default());
        let t0 = Instant::now();
        let bad = ip("10.0.0.66");
        let good = ip("10.0.0.1");
        let v: Vec<Verdict> = (0..1000)
            .map(|i| g.check(t0 + Duration::from_micros(i * 100), bad, 16))
            .collect();
        assert!(v[..16].iter().all(|v| *v == Verdict::Pass));
        assert_eq!(v[16], Verdict::Banned);
        assert!(v[17..].iter().all(|v| *v == Verdict::Drop));
        // Another source at a normal pace is untouched.
        for i in 0..100 {
            assert_eq!(
                g.check(t0 + Duration::from_millis(200 * i), good, 16),
                Verdict::Pass
            );
        }
        assert_eq!(g.banned(t0 + Duration::from_secs(1)), 1);
        // The ban lapses.
        assert_eq!(
            g.check(t0 + Duration::from_secs(61), bad, 16),
            Verdict::Pass
        );
    }

    #[test]
    fn steady_traffic_under_the_limit_is_never_banned() {
        let mut g = FloodGuard::new(&Limits::default());
        let t0 = Instant::now();
        // 30 messages a second for a minute, under 64 per 2 s.
        for i in 0..1800u64 {
            assert_eq!(
                g.check(t0 + Duration::from_micros(i * 33_333), ip("192.0.2.1"), 64),
                Verdict::Pass
            );
        }
    }

    #[test]
    fn memory_stays_bounded_under_spoofed_sources() {
        let mut g = FloodGuard::new(&Limits::default());
        g.cap = 1000;
        let t0 = Instant::now();
        for i in 0..100_000u32 {
            let a = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            g.check(t0, IpAddr::V4(a), 64);
        }
        assert!(g.tracked() <= 1000);
        // Once the window passes, idle sources are forgotten.
        g.check(t0 + Duration::from_secs(3), ip("10.9.9.9"), 64);
        assert_eq!(g.tracked(), 1);
    }
}
