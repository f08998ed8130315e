//! Turn-taking: when is the caller speaking, when have they finished their
//! turn, and when does their speech interrupt the bot.

pub mod detector;
pub mod mel;
pub mod onnx;
pub mod smart_turn;
pub mod vad;

pub use detector::{TurnConfig, TurnDetector, TurnEvent};
