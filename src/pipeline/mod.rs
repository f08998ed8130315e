//! One pipeline per call: caller audio → VAD → end-of-turn → ASR → dialogue
//! → TTS → caller, with explicit interruption semantics (pause on onset,
//! clear on confirmed speech, resume on a false alarm).

pub mod call;
pub mod endpoint;
pub mod engines;
pub mod metrics;
pub mod record;

pub use call::{spawn_call, CallHandle, CallInput, CallOutput};
pub use engines::Engines;
pub use record::{CallRecord, CallStore, TurnRecord};
