//! Speaking back: Piper neural TTS (via sherpa-onnx), sentence by sentence,
//! converted to 8 kHz μ-law for the phone.

pub mod sentences;
pub mod tts;

pub use tts::{TtsChunk, TtsConfig, TtsError, TtsPool};
