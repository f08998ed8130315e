//! Speech recognition behind one [`Recognizer`] trait: Moonshine tiny-en
//! (sherpa-onnx, the default: fast and accurate on phone speech) or Whisper
//! (whisper.cpp via whisper-rs: multilingual, CUDA). Both run on the same
//! worker pool, shared by every call. A second, optional lane decodes turns
//! that answer a digits question with the engine measured best at digits.

pub mod langid;
pub mod moonshine;
pub mod pool;
pub mod whisper;

use serde::{Deserialize, Serialize};

pub use pool::{AsrPool, Pending, Priority, Purpose, Transcript};

use crate::nlu::lang::Lang;

/// Which recogniser decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AsrEngine {
    Moonshine,
    Whisper,
}

impl AsrEngine {
    pub fn name(self) -> &'static str {
        match self {
            Self::Moonshine => "moonshine",
            Self::Whisper => "whisper",
        }
    }
}

/// A decoder of whole utterances. Each pool worker owns one.
pub trait Recognizer: Send + 'static {
    /// Text of 16 kHz mono `audio`, non-speech annotations removed.
    fn decode(&mut self, audio: &[f32]) -> Result<String, AsrError>;

    /// `audio` as `spoken` says; a recogniser of one language decodes
    /// everything in it.
    fn decode_spoken(&mut self, audio: &[f32], _spoken: &Spoken) -> Result<Heard, AsrError> {
        Ok(Heard {
            text: self.decode(audio)?,
            language: None,
        })
    }
}

/// Which language a turn is decoded in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Spoken {
    /// The main lane's (English).
    #[default]
    Main,
    /// A language the multilingual lane decodes.
    In(Lang),
    /// Not known yet: find which of these it is (the multilingual lane),
    /// without decoding; the [`Heard`] carries only the language.
    Identify(Vec<Lang>),
}

/// What a recogniser heard, and in which language when it had to find out.
#[derive(Debug, Clone, PartialEq)]
pub struct Heard {
    pub text: String,
    pub language: Option<Lang>,
}

pub const DIGITS_PROMPT: &str = "Account number: 4 0 7 2. PIN: 9 1 5 8.";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AsrConfig {
    /// The recogniser for callers' turns.
    pub engine: AsrEngine,
    /// Engine for turns answering a digits question (account numbers,
    /// PINs); `None` uses `engine`.
    pub digits_engine: Option<AsrEngine>,
    /// Moonshine folder (encoder_model.ort, decoder_model_merged.ort,
    /// tokens.txt), relative to the models directory.
    pub moonshine_model: String,
    /// ggml Whisper model file, relative to the models directory.
    pub model: String,
    /// Worker threads of the main engine, each decoding one turn at a time.
    pub workers: usize,
    /// Compute threads per worker.
    pub threads: usize,
    /// Workers and threads of the digits lane, when it has its own engine.
    pub digits_workers: usize,
    pub digits_threads: usize,
    pub language: String,
    /// Whisper: size the encoder's context to the utterance instead of 30 s.
    pub dynamic_audio_ctx: bool,
    /// Whisper: extra encoder context beyond the utterance, in ms.
    pub audio_ctx_margin_ms: u64,
    /// Whisper: smallest encoder window, in ms. Below about 10 s tiny.en's
    /// decoder often never emits end-of-text and repeats itself.
    pub audio_ctx_min_ms: u64,
    /// Partial hypothesis every this much speech (0 = off).
    pub partial_interval_ms: u64,
    /// Whisper: bias the decoder with the domain's vocabulary.
    pub initial_prompt: String,
    /// Whisper on the digits lane: a prompt that makes it write digits as
    /// digits (measured: isolated FSDD digits 69 → 85 of 100).
    pub digits_prompt: String,
    pub queue: usize,
    /// The multilingual Whisper that identifies a caller's language and
    /// decodes the languages besides English, when an agent answers in
    /// more than one (relative to the models directory).
    pub multilingual_model: String,
    pub multilingual_workers: usize,
    pub multilingual_threads: usize,
    /// Smallest encoder window of the multilingual lane, in ms (base does
    /// not run away on short windows the way tiny.en does).
    pub multilingual_audio_ctx_min_ms: u64,
    /// How much of a first turn language identification reads.
    pub langid_window_ms: u64,
    /// Least probability of another language (among the agent's) that
    /// moves a call away from the main one; below it the call stays.
    pub langid_switch_probability: f32,
    /// Whisper writes English whatever `language` is spoken (its translate
    /// task). Measurement tools only (`attendant eval understand`); not a
    /// setting: calls are understood in their own language.
    #[serde(skip)]
    pub translate: bool,
}

impl Default for AsrConfig {
    fn default() -> Self {
        Self {
            engine: AsrEngine::Moonshine,
            digits_engine: Some(AsrEngine::Whisper),
            moonshine_model: "moonshine/tiny-en".into(),
            model: "ggml-tiny.en-q8_0.bin".into(),
            workers: 2,
            threads: 1,
            digits_workers: 1,
            digits_threads: 2,
            language: "en".into(),
            dynamic_audio_ctx: true,
            audio_ctx_margin_ms: 1000,
            audio_ctx_min_ms: 10000,
            partial_interval_ms: 300,
            initial_prompt: String::new(),
            digits_prompt: DIGITS_PROMPT.into(),
            queue: 64,
            multilingual_model: "ggml-base-q8_0.bin".into(),
            multilingual_workers: 1,
            multilingual_threads: 2,
            multilingual_audio_ctx_min_ms: 6000,
            // 3 s: English 100 %, Spanish 90 % of 88 recordings, 209 ms
            // (docs/languages.md).
            langid_window_ms: 3000,
            langid_switch_probability: 0.7,
            translate: false,
        }
    }
}

impl AsrConfig {
    /// The engine of the digits lane, if it differs from the main one.
    pub fn separate_digits_engine(&self) -> Option<AsrEngine> {
        self.digits_engine.filter(|e| *e != self.engine)
    }

    /// Model files an engine needs, relative to the models directory.
    pub fn files(&self, engine: AsrEngine) -> Vec<std::path::PathBuf> {
        match engine {
            AsrEngine::Whisper => vec![self.model.clone().into()],
            AsrEngine::Moonshine => moonshine::FILES
                .iter()
                .map(|f| std::path::Path::new(&self.moonshine_model).join(f))
                .collect(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AsrError {
    #[error("cannot load ASR model {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("recognition failed: {0}")]
    Decode(String),
    #[error("ASR queue is full")]
    Busy,
    #[error("ASR job was cancelled")]
    Cancelled,
    #[error("ASR pool has shut down")]
    Closed,
}

/// ggml's OpenMP pool spin-waits by default, which starves the other calls'
/// work on a small machine; make it sleep unless the operator chose otherwise.
/// Call before any thread is started.
#[allow(unsafe_code)]
pub fn configure_threads() {
    if std::env::var_os("OMP_WAIT_POLICY").is_none() {
        // SAFETY: called at start-up, before other threads exist.
        unsafe { std::env::set_var("OMP_WAIT_POLICY", "passive") };
    }
}

/// Strips non-speech annotations ("[BLANK_AUDIO]", "(coughs)", "♪") and
/// surrounding whitespace.
pub fn clean_transcript(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut depth = 0i32;
    for c in text.chars() {
        match c {
            '[' | '(' | '*' if depth == 0 || c != '*' => depth += 1,
            ']' | ')' => depth = (depth - 1).max(0),
            '♪' => {}
            c if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_annotations() {
        assert_eq!(clean_transcript(" [BLANK_AUDIO]"), "");
        assert_eq!(clean_transcript(" (coughs) Hello there."), "Hello there.");
        assert_eq!(clean_transcript("♪ la la ♪"), "la la");
        assert_eq!(
            clean_transcript("What are your hours?"),
            "What are your hours?"
        );
    }

    #[test]
    fn digits_lane_only_when_its_engine_differs() {
        let mut c = AsrConfig::default();
        assert_eq!(c.separate_digits_engine(), Some(AsrEngine::Whisper));
        c.engine = AsrEngine::Whisper;
        assert_eq!(c.separate_digits_engine(), None);
        c.digits_engine = None;
        assert_eq!(c.separate_digits_engine(), None);
        let files = AsrConfig::default().files(AsrEngine::Moonshine);
        assert!(files.iter().any(|f| f.ends_with("tokens.txt")), "{files:?}");
    }
}
