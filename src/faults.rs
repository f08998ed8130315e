//! Faults contained at run time: a model worker, the SIP core or a call that
//! panicked is logged, counted here (served as
//! `attendant_faults_total{part=…}` on /metrics) and carried on from, so one
//! bad input or one broken decoder never takes the node down with it.

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// A speech-recognition worker (rebuilt after a panic).
    AsrWorker,
    /// A speech-synthesis worker (rebuilt after a panic).
    TtsWorker,
    /// The SIP signalling core (the input is dropped; rebuilt if it keeps
    /// panicking).
    SipCore,
    /// One call's task (that call ends; others go on).
    Call,
}

impl Part {
    pub const ALL: [Part; 4] = [Part::AsrWorker, Part::TtsWorker, Part::SipCore, Part::Call];

    pub fn name(self) -> &'static str {
        match self {
            Part::AsrWorker => "asr_worker",
            Part::TtsWorker => "tts_worker",
            Part::SipCore => "sip_core",
            Part::Call => "call",
        }
    }
}

static COUNTS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

/// Records a contained panic: an error log line and one count.
pub fn contained(part: Part, payload: &(dyn Any + Send)) {
    COUNTS[part as usize].fetch_add(1, Ordering::Relaxed);
    tracing::error!(
        part = part.name(),
        panic = %message(payload),
        "contained a panic; carrying on"
    );
}

/// Panics contained so far in `part` (this process).
pub fn count(part: Part) -> u64 {
    COUNTS[part as usize].load(Ordering::Relaxed)
}

fn message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Decides when a part that keeps panicking is rebuilt: `limit` panics
/// within `window`. Sans-IO (the caller passes the time), so the rule is
/// tested without making anything panic.
pub struct PanicWindow {
    limit: usize,
    window: std::time::Duration,
    recent: std::collections::VecDeque<std::time::Instant>,
}

impl PanicWindow {
    pub fn new(limit: usize, window: std::time::Duration) -> Self {
        Self {
            limit: limit.max(1),
            window,
            recent: std::collections::VecDeque::new(),
        }
    }

    /// Counts a panic at `now`; true when the part should be rebuilt (the
    /// count then starts again).
    pub fn record(&mut self, now: std::time::Instant) -> bool {
        self.recent.push_back(now);
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.window)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.limit {
            self.recent.clear();
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_names_the_panic() {
        let before = count(Part::Call);
        let p = std::panic::catch_unwind(|| panic!("boom {}", 1)).unwrap_err();
        assert_eq!(message(p.as_ref()), "boom 1");
        contained(Part::Call, p.as_ref());
        assert_eq!(count(Part::Call), before + 1);
    }

    #[test]
    fn five_panics_within_ten_seconds_rebuild_spread_out_ones_do_not() {
        use std::time::{Duration, Instant};
        let t0 = Instant::now();
        let mut w = PanicWindow::new(5, Duration::from_secs(10));
        for i in 0..4 {
            assert!(!w.record(t0 + Duration::from_secs(i)));
        }
        assert!(w.record(t0 + Duration::from_secs(4)), "the fifth rebuilds");
        assert!(
            !w.record(t0 + Duration::from_secs(5)),
            "and the count restarts"
        );
        // One panic every 3 s never reaches five in a 10 s window.
        let mut w = PanicWindow::new(5, Duration::from_secs(10));
        assert!((0..100).all(|i| !w.record(t0 + Duration::from_secs(3 * i))));
    }
}
