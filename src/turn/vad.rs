//! Silero VAD (v5 ONNX) at 16 kHz: 512-sample windows (32 ms) with 64
//! samples of left context and a recurrent state carried per call.

use std::path::Path;

use ort::value::Tensor;

use super::onnx::{self, OnnxError, SessionPool};

pub const WINDOW: usize = 512;
const CONTEXT: usize = 64;
const STATE_LEN: usize = 2 * 128;

/// The model, shared by every call through a few sessions (not one lock
/// for all calls); each call owns a [`VadState`].
pub struct SileroVad {
    sessions: SessionPool,
}

/// Per-call recurrent state of the VAD.
#[derive(Clone)]
pub struct VadState {
    state: Vec<f32>,
    context: Vec<f32>,
}

impl Default for VadState {
    fn default() -> Self {
        Self {
            state: vec![0.0; STATE_LEN],
            context: vec![0.0; CONTEXT],
        }
    }
}

impl SileroVad {
    pub fn load(path: &Path) -> Result<Self, OnnxError> {
        Ok(Self {
            sessions: SessionPool::open(path, SessionPool::default_size())?,
        })
    }

    /// Speech probability of one 512-sample window at 16 kHz.
    pub fn probability(&self, st: &mut VadState, window: &[f32]) -> Result<f32, OnnxError> {
        debug_assert_eq!(window.len(), WINDOW);
        let mut input = Vec::with_capacity(CONTEXT + WINDOW);
        input.extend_from_slice(&st.context);
        input.extend_from_slice(window);
        let run = |e: ort::Error| OnnxError::Run(e.to_string());
        let x = Tensor::from_array(([1usize, CONTEXT + WINDOW], input)).map_err(run)?;
        let h = Tensor::from_array(([2usize, 1, 128], st.state.clone())).map_err(run)?;
        let sr = Tensor::from_array((Vec::<i64>::new(), vec![16000i64])).map_err(run)?;
        static VAD_SITE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
        let _g = onnx::InferenceGuard::enter(&VAD_SITE)?;
        let prob = self.sessions.with(|session| -> Result<f32, OnnxError> {
            let out = session
                .run(ort::inputs!["input" => x, "state" => h, "sr" => sr])
                .map_err(run)?;
            let (_, p) = out["output"].try_extract_tensor::<f32>().map_err(run)?;
            let (_, new_state) = out["stateN"].try_extract_tensor::<f32>().map_err(run)?;
            st.state.copy_from_slice(&new_state[..STATE_LEN]);
            Ok(p.first().copied().unwrap_or(0.0))
        })?;
        st.context.copy_from_slice(&window[WINDOW - CONTEXT..]);
        Ok(prob)
    }
}
