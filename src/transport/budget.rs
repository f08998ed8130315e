//! How fast a caller's audio may arrive: real time plus a small burst (a
//! network hiccup delivers a few frames at once). Anything faster is dropped,
//! and a peer that keeps pushing is cut off, so one caller cannot fill the
//! recogniser's queue and starve the others. Sans-IO: time is passed in.

use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Take,
    Drop,
    /// Too much dropped: end the stream.
    Close,
}

#[derive(Debug, Clone)]
pub struct MediaBudget {
    burst_ms: f64,
    close_after_ms: u64,
    credit_ms: f64,
    last: Option<Instant>,
    dropped_ms: u64,
}

impl MediaBudget {
    /// `burst_ms` of audio may arrive ahead of the clock; more than
    /// `close_after_ms` dropped in all closes the stream (0: never).
    pub fn new(burst_ms: u64, close_after_ms: u64) -> Self {
        Self {
            burst_ms: burst_ms as f64,
            close_after_ms,
            credit_ms: burst_ms as f64,
            last: None,
            dropped_ms: 0,
        }
    }

    /// `ms` of audio arrived at `now`.
    pub fn admit(&mut self, now: Instant, ms: u64) -> Admit {
        if let Some(last) = self.last {
            let gained = now.saturating_duration_since(last).as_secs_f64() * 1000.0;
            self.credit_ms = (self.credit_ms + gained).min(self.burst_ms);
        }
        self.last = Some(now);
        let ms_f = ms as f64;
        if self.credit_ms >= ms_f {
            self.credit_ms -= ms_f;
            return Admit::Take;
        }
        self.dropped_ms += ms;
        if self.close_after_ms > 0 && self.dropped_ms > self.close_after_ms {
            Admit::Close
        } else {
            Admit::Drop
        }
    }

    pub fn dropped_ms(&self) -> u64 {
        self.dropped_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn real_time_passes_and_a_flood_is_cut() {
        let t0 = Instant::now();
        let mut b = MediaBudget::new(1000, 2000);
        // Ten minutes at the frame clock: everything is taken.
        for i in 0..30_000u64 {
            assert_eq!(b.admit(t0 + Duration::from_millis(20 * i), 20), Admit::Take);
        }
        assert_eq!(b.dropped_ms(), 0);
        // Then 10,000 frames at once: the burst is taken, the rest dropped,
        // and the stream is closed once 2 s have been dropped.
        let t = t0 + Duration::from_secs(700);
        let verdicts: Vec<Admit> = (0..10_000).map(|_| b.admit(t, 20)).collect();
        let taken = verdicts.iter().filter(|v| **v == Admit::Take).count();
        assert_eq!(taken, 50, "one second of burst");
        assert!(verdicts.contains(&Admit::Close));
        let first_close = verdicts.iter().position(|v| *v == Admit::Close).unwrap();
        assert_eq!(first_close, 50 + 100, "2 s of drops, then close");
    }

    #[test]
    fn a_late_burst_within_the_cushion_is_taken() {
        let t0 = Instant::now();
        let mut b = MediaBudget::new(500, 0);
        b.admit(t0, 20);
        // 400 ms of silence on the wire, then 20 frames at once.
        let t = t0 + Duration::from_millis(420);
        assert!((0..20).all(|_| b.admit(t, 20) == Admit::Take));
        // Never closes with close_after 0.
        assert!((0..1000).all(|_| b.admit(t, 20) != Admit::Close));
    }
}
