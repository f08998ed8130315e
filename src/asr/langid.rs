//! Which language a caller speaks, from their first words: the language
//! token a multilingual Whisper predicts first (its encoder over the audio,
//! one decoder step), restricted to the languages an agent serves.
//!
//! whisper.cpp sizes the encoder window from the state's last decode, not
//! per detection; a state here is primed once with a short window so each
//! detection encodes `window` of audio, not the 30 s Whisper pads to (about
//! a third of the time for a 10 s window).

use std::path::Path;
use std::time::{Duration, Instant};

use whisper_rs::{WhisperContext, WhisperContextParameters};

use super::AsrError;

/// What a detection found.
#[derive(Debug, Clone, PartialEq)]
pub struct Detected {
    /// ISO 639-1 code ("en", "es"), the most likely of those asked about.
    pub language: String,
    /// Its probability among those asked about (they sum to 1).
    pub probability: f32,
    /// Every language asked about, most likely first.
    pub ranked: Vec<(String, f32)>,
    pub elapsed: Duration,
}

impl Detected {
    /// The language, if it is at least `at` likely and one of ours; `None`
    /// settles nothing. The main language gets no benefit of the doubt: a
    /// lone Spanish "Hola." is English at p 0.66, and a call settled on
    /// English then never hears the caller in Spanish.
    pub(crate) fn sure(&self, at: f32) -> Option<crate::nlu::lang::Lang> {
        crate::nlu::lang::Lang::parse(&self.language).filter(|_| self.probability >= at)
    }
}

/// A multilingual Whisper model with one state for detecting languages.
pub struct LanguageId {
    state: whisper_rs::WhisperState,
    threads: usize,
    /// Most samples (16 kHz) one detection reads.
    samples: usize,
}

impl LanguageId {
    /// Loads a multilingual ggml Whisper model (`ggml-base.bin`); an
    /// English-only model is refused, as it knows one language.
    pub fn load(path: &Path, threads: usize, window: Duration) -> Result<Self, AsrError> {
        let ctx = WhisperContext::new_with_params(path, WhisperContextParameters::default())
            .map_err(|e| AsrError::Load {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        Self::with_context(&ctx, path, threads, window)
    }

    /// A detector with its own state over a model already loaded from
    /// `path` (shared with the recognisers of the same model).
    pub fn with_context(
        ctx: &WhisperContext,
        path: &Path,
        threads: usize,
        window: Duration,
    ) -> Result<Self, AsrError> {
        let err = |reason: String| AsrError::Load {
            path: path.display().to_string(),
            reason,
        };
        if !ctx.is_multilingual() {
            return Err(err(
                "an English-only model cannot tell languages apart".into()
            ));
        }
        let mut state = ctx.create_state().map_err(|e| err(e.to_string()))?;
        let threads = threads.max(1);
        let window = window.clamp(Duration::from_secs(1), Duration::from_secs(30));
        // One short decode of silence leaves the encoder window at `window`
        // for the detections that follow (see the module's notes).
        let frames = ((window.as_secs_f64() * 50.0).ceil() as i32).clamp(64, 1500);
        let mut p = super::whisper::one_pass(threads, "en");
        p.set_audio_ctx(frames);
        p.set_max_tokens(1);
        state
            .full(p, &vec![0.0; 17_600])
            .map_err(|e| err(e.to_string()))?;
        Ok(Self {
            state,
            threads,
            samples: (window.as_secs_f64() * 16_000.0) as usize,
        })
    }

    /// The language of `pcm` (16 kHz mono) among `among` (ISO codes; all of
    /// Whisper's when empty). Reads at most the window given at load.
    pub fn detect(&mut self, pcm: &[f32], among: &[String]) -> Result<Detected, AsrError> {
        let t0 = Instant::now();
        let take = &pcm[..pcm.len().min(self.samples)];
        let mut input = take.to_vec();
        // whisper.cpp wants at least 1 s of input.
        if input.len() < 17_600 {
            input.resize(17_600, 0.0);
        }
        let dec = |e: whisper_rs::WhisperError| AsrError::Decode(e.to_string());
        self.state.pcm_to_mel(&input, self.threads).map_err(dec)?;
        let (_, probs) = self.state.lang_detect(0, self.threads).map_err(dec)?;
        Ok(rank(&probs, among, t0.elapsed()))
    }
}

/// Whisper's language probabilities (indexed by its language ids) kept to
/// `among` and normalised, most likely first.
fn rank(probs: &[f32], among: &[String], elapsed: Duration) -> Detected {
    let mut ranked: Vec<(String, f32)> = probs
        .iter()
        .enumerate()
        .filter_map(|(i, &p)| {
            let code = whisper_rs::get_lang_str(i32::try_from(i).ok()?)?;
            (among.is_empty() || among.iter().any(|a| a == code))
                .then(|| (code.to_string(), p.max(0.0)))
        })
        .collect();
    let total: f32 = ranked.iter().map(|r| r.1).sum();
    if total > 0.0 {
        for r in &mut ranked {
            r.1 /= total;
        }
    }
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    let (language, probability) = ranked
        .first()
        .cloned()
        .unwrap_or_else(|| (among.first().cloned().unwrap_or_default(), 0.0));
    Detected {
        language,
        probability,
        ranked,
        elapsed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only the languages asked about count, and they sum to one.
    #[test]
    fn probabilities_are_kept_to_the_languages_asked_about() {
        // Whisper's ids: 0 en, 1 zh, 2 de, 3 es.
        let probs = [0.2, 0.5, 0.1, 0.2];
        let d = rank(&probs, &["en".into(), "es".into()], Duration::ZERO);
        assert_eq!(d.ranked.len(), 2);
        assert!((d.ranked.iter().map(|r| r.1).sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((d.probability - 0.5).abs() < 1e-6);
        let all = rank(&probs, &[], Duration::ZERO);
        assert_eq!(all.language, "zh");
        assert_eq!(all.ranked.len(), 4);
        let none = rank(&[0.0; 4], &["es".into()], Duration::ZERO);
        assert_eq!((none.language.as_str(), none.probability), ("es", 0.0));
    }

    /// Whichever language wins, it settles a call only when it is sure.
    #[test]
    fn only_a_sure_finding_names_a_language() {
        use crate::nlu::lang::Lang;
        let among = ["en".to_string(), "es".to_string()];
        // Whisper's ids: 0 en, 1 zh, 2 de, 3 es. A lone "Hola.": en 0.66.
        let hola = rank(&[0.66, 0.0, 0.0, 0.34], &among, Duration::ZERO);
        assert_eq!(hola.language, "en");
        assert_eq!(hola.sure(0.7), None);
        let english = rank(&[0.95, 0.0, 0.0, 0.05], &among, Duration::ZERO);
        assert_eq!(english.sure(0.7), Some(Lang::En));
        let spanish = rank(&[0.2, 0.0, 0.0, 0.8], &among, Duration::ZERO);
        assert_eq!(spanish.sure(0.7), Some(Lang::Es));
        // German is no language of ours.
        let german = rank(&[0.0, 0.0, 1.0, 0.0], &[], Duration::ZERO);
        assert_eq!(german.sure(0.7), None);
    }
}
