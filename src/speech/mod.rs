//! Speaking back: Piper neural TTS (via sherpa-onnx), or Kokoro for the
//! languages no packaged Piper voice covers, sentence by sentence,
//! converted to 8 kHz μ-law for the phone.

pub mod kokoro;
pub mod sentences;
pub mod tts;

pub use tts::{TtsChunk, TtsConfig, TtsError, TtsPool, Warm, Warmed};
