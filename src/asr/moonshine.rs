//! Moonshine tiny-en (v2: encoder + merged decoder) through sherpa-onnx.
//! Its encoder takes the utterance as it is — no 30 s window to pad — so a
//! 3 s turn decodes in tens of milliseconds on one thread. English only.
//!
//! sherpa-onnx 1.13.8 returns empty text for Moonshine input past about
//! 9.2 s (fixed in 2.0, which however dropped the espeak-ng front end our
//! Piper voice needs), so longer turns are cut at their quietest points into
//! pieces of at most [`MAX_PIECE`] samples, decoded in order and joined.

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

/// Longest piece given to the decoder at once (8.5 s).
pub const MAX_PIECE: usize = 16000 * 17 / 2;
/// Shortest piece a long turn is cut into (4 s), so cuts fall between words.
const MIN_PIECE: usize = 16000 * 4;
/// Window over which quietness is judged (100 ms).
const QUIET_WINDOW: usize = 1600;

/// Where to cut `audio` so that no piece is longer than `MAX_PIECE`: at the
/// middle of the quietest 100 ms window 4–8.5 s into what is left.
pub fn cut_points(audio: &[f32]) -> Vec<usize> {
    let mut cuts = Vec::new();
    let mut start = 0;
    while audio.len() - start > MAX_PIECE {
        let lo = start + MIN_PIECE;
        let hi = start + MAX_PIECE - QUIET_WINDOW;
        let energy = |i: usize| {
            audio[i..i + QUIET_WINDOW]
                .iter()
                .map(|v| v * v)
                .sum::<f32>()
        };
        let best = (lo..=hi)
            .step_by(160)
            .min_by(|&a, &b| energy(a).total_cmp(&energy(b)))
            .unwrap_or(hi);
        start = best + QUIET_WINDOW / 2;
        cuts.push(start);
    }
    cuts
}

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

    /// Text of `audio`, cut into pieces the decoder handles when long.
    pub fn transcribe(&self, audio: &[f32]) -> Result<String, AsrError> {
        let mut bounds = vec![0];
        bounds.extend(cut_points(audio));
        bounds.push(audio.len());
        let mut text = String::new();
        for w in bounds.windows(2) {
            let piece = self.transcribe_piece(&audio[w[0]..w[1]])?;
            if !piece.is_empty() {
                if !text.is_empty() {
                    text.push(' ');
                }
                text.push_str(&piece);
            }
        }
        Ok(text)
    }

    fn transcribe_piece(&self, audio: &[f32]) -> Result<String, AsrError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_audio_is_cut_at_its_quiet_points_into_decodable_pieces() {
        // 20 s of "speech" (noise-like tone) with quiet gaps at 6 s and 13 s.
        let mut x: Vec<f32> = (0..16000 * 20)
            .map(|i| (i as f32 * 0.3).sin() * 0.5)
            .collect();
        for gap in [6 * 16000, 13 * 16000] {
            x[gap..gap + 3200].iter_mut().for_each(|v| *v = 0.0);
        }
        let cuts = cut_points(&x);
        assert_eq!(cuts.len(), 2, "{cuts:?}");
        assert!((6 * 16000..6 * 16000 + 3200).contains(&cuts[0]), "{cuts:?}");
        assert!(
            (13 * 16000..13 * 16000 + 3200).contains(&cuts[1]),
            "{cuts:?}"
        );
        let mut prev = 0;
        for c in cuts.iter().copied().chain([x.len()]) {
            assert!(c - prev <= MAX_PIECE);
            prev = c;
        }
        assert!(cut_points(&x[..MAX_PIECE]).is_empty());
    }
}
