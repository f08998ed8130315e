//! Whisper (whisper.cpp via whisper-rs): multilingual, and CUDA with the
//! `cuda` feature. Each worker gets its own decoder state over one shared
//! model. Tiny models on short windows can run away (repeat forever), so
//! decoding here is bounded and retried with the full window.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use whisper_rs::{FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters};

use super::langid::LanguageId;
use super::{AsrConfig, AsrError, Heard, Recognizer, Spoken};
use crate::nlu::lang::Lang;

/// A loaded ggml model, shared by its workers.
pub struct WhisperModel {
    ctx: Arc<WhisperContext>,
    cfg: AsrConfig,
    path: PathBuf,
    pub uses_gpu: bool,
}

impl WhisperModel {
    pub fn load(models_dir: &Path, cfg: &AsrConfig) -> Result<Self, AsrError> {
        let path = models_dir.join(&cfg.model);
        let mut params = WhisperContextParameters::default();
        let uses_gpu = gpu_present();
        params.use_gpu(uses_gpu);
        let ctx = WhisperContext::new_with_params(&path, params).map_err(|e| AsrError::Load {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            ctx: Arc::new(ctx),
            cfg: cfg.clone(),
            path,
            uses_gpu,
        })
    }

    /// A decoder with its own state, computing on `threads` threads.
    pub fn recognizer(&self, threads: usize) -> Result<WhisperRecognizer, AsrError> {
        let state = self.ctx.create_state().map_err(|e| AsrError::Load {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        })?;
        let mut cfg = self.cfg.clone();
        cfg.threads = threads.max(1);
        Ok(WhisperRecognizer { state, cfg })
    }

    /// A decoder that also identifies languages (a multilingual model):
    /// `main` is the language the main lane decodes.
    pub fn multilingual(
        &self,
        threads: usize,
        main: Lang,
        hints: std::collections::HashMap<Lang, String>,
    ) -> Result<MultiRecognizer, AsrError> {
        let lid = LanguageId::with_context(
            &self.ctx,
            &self.path,
            threads,
            Duration::from_millis(self.cfg.langid_window_ms),
        )?;
        Ok(MultiRecognizer {
            rec: self.recognizer(threads)?,
            lid,
            main,
            switch_at: self.cfg.langid_switch_probability,
            hints,
        })
    }
}

/// Decodes the languages besides the main one, and finds which language a
/// caller speaks.
pub struct MultiRecognizer {
    rec: WhisperRecognizer,
    lid: LanguageId,
    main: Lang,
    /// Least probability (among the agent's languages) that moves a call
    /// away from the main language.
    switch_at: f32,
    /// Per language, the agent's words to expect (the initial prompt).
    hints: std::collections::HashMap<Lang, String>,
}

impl Recognizer for MultiRecognizer {
    fn decode(&mut self, audio: &[f32]) -> Result<String, AsrError> {
        self.rec.decode(audio)
    }

    fn decode_spoken(&mut self, audio: &[f32], spoken: &Spoken) -> Result<Heard, AsrError> {
        let lang = match spoken {
            Spoken::Main => self.main,
            Spoken::In(l) => *l,
            Spoken::Identify(among) => {
                let codes: Vec<String> = among.iter().map(|l| l.code().to_string()).collect();
                let found = self.lid.detect(audio, &codes)?;
                // A language only when Whisper is fairly sure: a caller
                // wrongly switched away from the main language hears an
                // agent they cannot follow, and one wrongly kept in it
                // never leaves it. `None` settles nothing.
                let lang = found.sure(self.switch_at);
                tracing::debug!(
                    language = %found.language,
                    p = found.probability,
                    sure = lang.is_some(),
                    ms = found.elapsed.as_millis() as u64,
                    "language identified"
                );
                return Ok(Heard {
                    text: String::new(),
                    language: lang,
                });
            }
        };
        self.rec.cfg.language = lang.code().to_string();
        self.rec.cfg.initial_prompt = self.hints.get(&lang).cloned().unwrap_or_default();
        let text = self.rec.decode(audio)?;
        Ok(Heard {
            text,
            language: Some(lang),
        })
    }
}

pub struct WhisperRecognizer {
    state: whisper_rs::WhisperState,
    cfg: AsrConfig,
}

impl Recognizer for WhisperRecognizer {
    fn decode(&mut self, audio: &[f32]) -> Result<String, AsrError> {
        decode(&mut self.state, audio, &self.cfg).map(|t| collapse_repeat(&t))
    }
}

/// Tiny Whisper sometimes writes a short utterance twice over ("3 4 9 9 3 4
/// 9 9" for "3 4 9 9"): a text that is one phrase of three or more words
/// exactly doubled is taken once. (A caller who really said it twice loses
/// nothing by it.)
fn collapse_repeat(text: &str) -> String {
    let norm = |w: &str| {
        w.trim_matches(|c: char| !c.is_alphanumeric())
            .to_lowercase()
    };
    let words: Vec<&str> = text.split_whitespace().collect();
    let n = words.len();
    if n >= 6 && n.is_multiple_of(2) {
        let (a, b) = words.split_at(n / 2);
        if a.iter().zip(b).all(|(x, y)| norm(x) == norm(y)) {
            return b.join(" ");
        }
    }
    text.to_string()
}

fn gpu_present() -> bool {
    cfg!(feature = "cuda")
        && (std::path::Path::new("/dev/nvidia0").exists()
            || std::path::Path::new("/proc/driver/nvidia/version").exists())
}

/// Encoder frames (one per 20 ms) for a window of `samples` at 16 kHz plus
/// `margin`, at least `min`.
pub fn audio_ctx_for(samples: usize, margin: Duration, min: Duration) -> i32 {
    let secs = (samples as f64 / 16000.0 + margin.as_secs_f64()).max(min.as_secs_f64());
    ((secs * 50.0).ceil() as i32).clamp(64, 1500)
}

/// Most tokens a turn of `samples` can plausibly need (fast speech is about
/// 4 tokens/s); a decoder that goes past this is repeating itself.
fn token_budget(samples: usize) -> i32 {
    (samples as f64 / 16000.0 * 6.0).ceil() as i32 + 16
}

fn decode(
    state: &mut whisper_rs::WhisperState,
    audio: &[f32],
    cfg: &AsrConfig,
) -> Result<String, AsrError> {
    if cfg.dynamic_audio_ctx {
        let (text, tokens) = run_whisper(state, audio, cfg, true)?;
        if tokens < token_budget(audio.len()) {
            return Ok(text);
        }
        tracing::debug!(
            tokens,
            "decoder ran away with a short window; retrying with 30 s"
        );
    }
    Ok(run_whisper(state, audio, cfg, false)?.0)
}

/// Greedy decoding of one segment in `language`, without timestamps and
/// without whisper.cpp printing to stdout.
pub(super) fn one_pass<'a, 'b>(threads: usize, language: &'a str) -> FullParams<'a, 'b> {
    let mut p = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
    p.set_n_threads(threads.max(1) as i32);
    p.set_language(Some(language));
    p.set_no_timestamps(true);
    p.set_single_segment(true);
    p.set_print_special(false);
    p.set_print_progress(false);
    p.set_print_realtime(false);
    p.set_print_timestamps(false);
    p
}

fn run_whisper(
    state: &mut whisper_rs::WhisperState,
    audio: &[f32],
    cfg: &AsrConfig,
    sized: bool,
) -> Result<(String, i32), AsrError> {
    let mut p = one_pass(cfg.threads, &cfg.language);
    p.set_translate(cfg.translate);
    p.set_no_context(true);
    p.set_suppress_blank(true);
    p.set_suppress_nst(true);
    // No temperature fallback: one greedy pass, predictable latency.
    p.set_temperature(0.0);
    p.set_temperature_inc(0.0);
    if !cfg.initial_prompt.is_empty() {
        p.set_initial_prompt(&cfg.initial_prompt);
    }
    // whisper.cpp wants at least 1 s of input.
    let mut input = audio.to_vec();
    if input.len() < 16000 + 1600 {
        input.resize(16000 + 1600, 0.0);
    }
    if sized {
        let ctx = audio_ctx_for(
            input.len(),
            Duration::from_millis(cfg.audio_ctx_margin_ms),
            Duration::from_millis(cfg.audio_ctx_min_ms),
        );
        p.set_audio_ctx(ctx);
        p.set_max_tokens(token_budget(audio.len()));
    }
    // No abort callback: whisper-rs 0.16's safe wrapper calls the boxed
    // closure through the wrong type. Stale jobs are dropped before decoding.
    state
        .full(p, &input)
        .map_err(|e| AsrError::Decode(e.to_string()))?;
    let mut text = String::new();
    let mut tokens = 0;
    for seg in state.as_iter() {
        tokens += seg.n_tokens();
        text.push_str(
            &seg.to_str_lossy()
                .map_err(|e| AsrError::Decode(e.to_string()))?,
        );
    }
    Ok((super::clean_transcript(&text), tokens))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_doubled_short_transcript_is_taken_once() {
        assert_eq!(collapse_repeat("3 4 9 9 3 4 9 9"), "3 4 9 9");
        assert_eq!(collapse_repeat("3 4 9 9, 3 4 9 9."), "3 4 9 9.");
        assert_eq!(collapse_repeat("1 2 1 2"), "1 2 1 2");
        assert_eq!(
            collapse_repeat("I want to check my balance please"),
            "I want to check my balance please"
        );
    }

    #[test]
    fn window_is_sized_to_the_utterance_with_a_floor() {
        let min = Duration::from_secs(10);
        let m = Duration::from_secs(1);
        assert_eq!(audio_ctx_for(16000 * 2, m, min), 500);
        assert_eq!(audio_ctx_for(16000 * 12, m, min), 650);
        assert_eq!(audio_ctx_for(16000 * 40, m, min), 1500);
    }
}
