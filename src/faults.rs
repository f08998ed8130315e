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
}
