//! Smart Turn v3 end-of-turn model: the last 8 s of the caller's turn as
//! Whisper log-mel features in, probability that the turn is complete out.

use std::path::Path;

use ort::value::Tensor;

use super::mel;
use super::onnx::{self, OnnxError, SessionPool};

const SECONDS: usize = 8;
const SAMPLES: usize = 16000 * SECONDS;
const FRAMES: usize = SAMPLES / mel::HOP;

pub struct SmartTurn {
    sessions: SessionPool,
}

impl SmartTurn {
    pub fn load(path: &Path) -> Result<Self, OnnxError> {
        Ok(Self {
            sessions: SessionPool::open(path, SessionPool::default_size())?,
        })
    }

    /// Probability (0..1) that the turn in `audio` (16 kHz) is complete.
    pub fn completion_probability(&self, audio: &[f32]) -> Result<f32, OnnxError> {
        // Keep the most recent 8 s, zero-padded on the left.
        let tail = &audio[audio.len().saturating_sub(SAMPLES)..];
        let mut x = vec![0f32; SAMPLES - tail.len()];
        x.extend_from_slice(tail);
        let feats = mel::log_mel(&x, FRAMES, true);
        let run = |e: ort::Error| OnnxError::Run(e.to_string());
        let t = Tensor::from_array(([1usize, mel::N_MELS, FRAMES], feats)).map_err(run)?;
        static TURN_SITE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
        let _g = onnx::InferenceGuard::enter(&TURN_SITE)?;
        self.sessions.with(|s| {
            let out = s.run(ort::inputs!["input_features" => t]).map_err(run)?;
            let (_, p) = out["logits"].try_extract_tensor::<f32>().map_err(run)?;
            Ok(p.first().copied().unwrap_or(0.0))
        })
    }
}
