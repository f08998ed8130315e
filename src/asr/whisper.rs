//! Whisper worker pool. Final transcripts (end of turn) always go before
//! partial hypotheses; partials are dropped rather than queued when the
//! pool is busy, so they never delay an answer.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use whisper_rs::{FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AsrConfig {
    /// ggml model file, relative to the models directory.
    pub model: String,
    /// Worker threads, each with its own decoder state.
    pub workers: usize,
    /// Compute threads per worker.
    pub threads: usize,
    pub language: String,
    /// Size the encoder's context to the utterance instead of 30 s.
    pub dynamic_audio_ctx: bool,
    /// Extra encoder context beyond the utterance, in ms.
    pub audio_ctx_margin_ms: u64,
    /// Smallest encoder window, in ms. Below about 10 s tiny.en's decoder
    /// often never emits end-of-text and repeats itself.
    pub audio_ctx_min_ms: u64,
    /// Partial hypothesis every this much speech (0 = off).
    pub partial_interval_ms: u64,
    /// Bias the decoder with the domain's vocabulary.
    pub initial_prompt: String,
    pub queue: usize,
}

impl Default for AsrConfig {
    fn default() -> Self {
        Self {
            model: "ggml-tiny.en-q8_0.bin".into(),
            workers: 1,
            threads: 2,
            language: "en".into(),
            dynamic_audio_ctx: true,
            audio_ctx_margin_ms: 1000,
            audio_ctx_min_ms: 10000,
            partial_interval_ms: 1000,
            initial_prompt: String::new(),
            queue: 64,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AsrError {
    #[error("cannot load Whisper model {path}: {reason}")]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Final,
    Partial,
}

#[derive(Debug, Clone, Serialize)]
pub struct Transcript {
    pub text: String,
    pub audio_ms: u64,
    /// Time spent waiting for a free worker.
    pub queue_ms: u64,
    /// Time spent in whisper.cpp.
    pub decode_ms: u64,
}

struct Job {
    audio: Arc<Vec<f32>>,
    cancel: Arc<AtomicBool>,
    enqueued: Instant,
    reply: oneshot::Sender<Result<Transcript, AsrError>>,
}

/// Handle to a running recognition; dropping it does not cancel.
pub struct Pending {
    pub cancel: Arc<AtomicBool>,
    pub result: oneshot::Receiver<Result<Transcript, AsrError>>,
}

pub struct AsrPool {
    finals: Sender<Job>,
    partials: Sender<Job>,
    /// Jobs queued or decoding; partials run only when a worker is idle.
    load: Arc<AtomicUsize>,
    workers: usize,
    pub uses_gpu: bool,
}

impl AsrPool {
    pub fn start(models_dir: &std::path::Path, cfg: &AsrConfig) -> Result<Self, AsrError> {
        let path: PathBuf = models_dir.join(&cfg.model);
        let mut params = WhisperContextParameters::default();
        let uses_gpu = gpu_present();
        params.use_gpu(uses_gpu);
        let ctx = WhisperContext::new_with_params(&path, params).map_err(|e| AsrError::Load {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let ctx = Arc::new(ctx);
        let (finals, final_rx) = bounded::<Job>(cfg.queue.max(1));
        let (partials, partial_rx) = bounded::<Job>(cfg.workers.max(1));
        let load = Arc::new(AtomicUsize::new(0));
        for i in 0..cfg.workers.max(1) {
            let state = ctx.create_state().map_err(|e| AsrError::Load {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            let (f, p, c, l) = (
                final_rx.clone(),
                partial_rx.clone(),
                cfg.clone(),
                load.clone(),
            );
            std::thread::Builder::new()
                .name(format!("asr-{i}"))
                .spawn(move || worker(state, f, p, c, l))
                .map_err(|e| AsrError::Load {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
        }
        Ok(Self {
            finals,
            partials,
            load,
            workers: cfg.workers.max(1),
            uses_gpu,
        })
    }

    /// Queues 16 kHz mono audio for recognition.
    pub fn submit(&self, audio: Arc<Vec<f32>>, prio: Priority) -> Result<Pending, AsrError> {
        let cancel = Arc::new(AtomicBool::new(false));
        let (tx, rx) = oneshot::channel();
        let job = Job {
            audio,
            cancel: cancel.clone(),
            enqueued: Instant::now(),
            reply: tx,
        };
        let q = match prio {
            Priority::Final => &self.finals,
            Priority::Partial => {
                // Partials only use idle capacity: on a busy pool a running
                // partial would delay someone's answer.
                if self.load.load(Ordering::SeqCst) >= self.workers {
                    return Err(AsrError::Busy);
                }
                &self.partials
            }
        };
        self.load.fetch_add(1, Ordering::SeqCst);
        q.try_send(job).map_err(|e| {
            self.load.fetch_sub(1, Ordering::SeqCst);
            match e {
                TrySendError::Full(_) => AsrError::Busy,
                TrySendError::Disconnected(_) => AsrError::Closed,
            }
        })?;
        Ok(Pending { cancel, result: rx })
    }

    /// Blocking convenience for tools and tests.
    pub fn transcribe_blocking(&self, audio: Vec<f32>) -> Result<Transcript, AsrError> {
        let p = self.submit(Arc::new(audio), Priority::Final)?;
        p.result.blocking_recv().map_err(|_| AsrError::Closed)?
    }
}

fn gpu_present() -> bool {
    cfg!(feature = "cuda")
        && (std::path::Path::new("/dev/nvidia0").exists()
            || std::path::Path::new("/proc/driver/nvidia/version").exists())
}

fn worker(
    mut state: whisper_rs::WhisperState,
    finals: Receiver<Job>,
    partials: Receiver<Job>,
    cfg: AsrConfig,
    load: Arc<AtomicUsize>,
) {
    loop {
        // Finals first; otherwise wait on both.
        let job = match finals.try_recv() {
            Ok(j) => j,
            Err(_) => crossbeam_channel::select! {
                recv(finals) -> j => match j { Ok(j) => j, Err(_) => return },
                recv(partials) -> j => match j { Ok(j) => j, Err(_) => return },
            },
        };
        if job.cancel.load(Ordering::Relaxed) {
            load.fetch_sub(1, Ordering::SeqCst);
            let _ = job.reply.send(Err(AsrError::Cancelled));
            continue;
        }
        let queue_ms = job.enqueued.elapsed().as_millis() as u64;
        let t = Instant::now();
        let res = decode(&mut state, &job.audio, &job.cancel, &cfg).map(|text| Transcript {
            text,
            audio_ms: job.audio.len() as u64 / 16,
            queue_ms,
            decode_ms: t.elapsed().as_millis() as u64,
        });
        load.fetch_sub(1, Ordering::SeqCst);
        let _ = job.reply.send(res);
    }
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
    _cancel: &Arc<AtomicBool>,
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

fn run_whisper(
    state: &mut whisper_rs::WhisperState,
    audio: &[f32],
    cfg: &AsrConfig,
    sized: bool,
) -> Result<(String, i32), AsrError> {
    let mut p = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
    p.set_n_threads(cfg.threads.max(1) as i32);
    p.set_language(Some(&cfg.language));
    p.set_translate(false);
    p.set_no_context(true);
    p.set_no_timestamps(true);
    p.set_single_segment(true);
    p.set_print_special(false);
    p.set_print_progress(false);
    p.set_print_realtime(false);
    p.set_print_timestamps(false);
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
    fn window_is_sized_to_the_utterance_with_a_floor() {
        let min = Duration::from_secs(10);
        let m = Duration::from_secs(1);
        assert_eq!(audio_ctx_for(16000 * 2, m, min), 500);
        assert_eq!(audio_ctx_for(16000 * 12, m, min), 650);
        assert_eq!(audio_ctx_for(16000 * 40, m, min), 1500);
    }
}
