//! Moonshine tiny-en (v2: encoder + merged decoder) through sherpa-onnx.
//! Its encoder takes the utterance as it is — no 30 s window to pad — so a
//! 3 s turn decodes in tens of milliseconds on one thread. English only.

use std::path::Path;
use std::sync::Arc;

use sherpa_onnx::{OfflineRecognizer, OfflineRecognizerConfig};

use super::{AsrError, Recognizer};
use crate::turn::onnx;

/// Files of a Moonshine v2 model folder.
pub const FILES: [&str; 3] = [
    "encoder_model.ort",
    "decoder_model_merged.ort",
    "tokens.txt",
];

/// Shortest input the encoder is given; shorter turns are padded with
/// silence (a clipped "no" would otherwise have too few frames).
const MIN_SAMPLES: usize = 16000 / 2;

/// The model, shared by the workers: the recogniser is thread-safe and
/// each decode uses its own stream.
pub struct MoonshineModel {
    rec: OfflineRecognizer,
}

impl MoonshineModel {
    pub fn load(dir: &Path, threads: usize) -> Result<Self, AsrError> {
        onnx::install_exit_guard();
        for f in FILES {
            if !dir.join(f).exists() {
                return Err(AsrError::Load {
                    path: dir.join(f).display().to_string(),
                    reason: "missing; run `python3 models/fetch.py`".into(),
                });
            }
        }
        let s = |f: &str| Some(dir.join(f).to_string_lossy().into_owned());
        let mut cfg = OfflineRecognizerConfig::default();
        cfg.model_config.moonshine.encoder = s(FILES[0]);
        cfg.model_config.moonshine.merged_decoder = s(FILES[1]);
        cfg.model_config.tokens = s(FILES[2]);
        cfg.model_config.provider = Some("cpu".into());
        cfg.model_config.num_threads = threads.max(1) as i32;
        let rec = OfflineRecognizer::create(&cfg).ok_or_else(|| AsrError::Load {
            path: dir.display().to_string(),
            reason: "sherpa-onnx could not create a Moonshine recogniser".into(),
        })?;
        Ok(Self { rec })
    }

    pub fn transcribe(&self, audio: &[f32]) -> Result<String, AsrError> {
        static SITE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
        let _g = onnx::InferenceGuard::enter(&SITE).map_err(|e| AsrError::Decode(e.to_string()))?;
        let stream = self.rec.create_stream();
        if audio.len() < MIN_SAMPLES {
            let mut padded = audio.to_vec();
            padded.resize(MIN_SAMPLES, 0.0);
            stream.accept_waveform(16000, &padded);
        } else {
            stream.accept_waveform(16000, audio);
        }
        self.rec.decode(&stream);
        let text = stream
            .get_result()
            .ok_or_else(|| AsrError::Decode("Moonshine returned no result".into()))?
            .text;
        Ok(super::clean_transcript(&text))
    }
}

/// One worker's handle on the shared model.
pub struct MoonshineRecognizer {
    model: Arc<MoonshineModel>,
}

impl MoonshineRecognizer {
    pub fn new(model: Arc<MoonshineModel>) -> Self {
        Self { model }
    }
}

impl Recognizer for MoonshineRecognizer {
    fn decode(&mut self, audio: &[f32]) -> Result<String, AsrError> {
        self.model.transcribe(audio)
    }
}
