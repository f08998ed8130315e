//! Media: the caller's audio as it arrives (G.711 μ-law at 8 kHz) and the
//! conversions between that and the 16 kHz / 22.05 kHz float audio the models use.

pub mod alaw;
pub mod mulaw;
pub mod resample;
pub mod tones;

/// Telephony sample rate (Twilio Media Streams, G.711).
pub const PHONE_RATE: u32 = 8000;
/// Sample rate of the VAD, end-of-turn and ASR models.
pub const MODEL_RATE: u32 = 16000;
/// One telephony frame: 20 ms.
pub const FRAME_MS: u64 = 20;
/// Samples (and μ-law bytes) in one 20 ms frame at 8 kHz.
pub const PHONE_FRAME: usize = 160;
