//! TTS worker pool. Each worker owns an engine — a Piper voice in
//! sherpa-onnx, or espeak-ng for a language no packaged neural voice covers;
//! a job is a reply, synthesised sentence by sentence, and can be cancelled
//! between and during sentences (barge-in). Sentences already synthesised are
//! cached as μ-law, so fixed prompts (greeting, FAQ answers) start instantly.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sherpa_onnx::{
    GenerationConfig, OfflineTts, OfflineTtsConfig, OfflineTtsModelConfig,
    OfflineTtsVitsModelConfig,
};
use tokio::sync::mpsc;

use super::kokoro::{self, Kokoro, VoiceName, KOKORO};
use super::sentences::{self, Pace};
use crate::derived::{self, DiskCache};
use crate::media::{mulaw, resample, PHONE_RATE};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TtsConfig {
    /// Voice directory (model.onnx + tokens.txt) relative to the models
    /// dir, `kokoro:LANGUAGE:SPEAKER` for Kokoro-82M speaking espeak-ng's
    /// phonemes of LANGUAGE, or `espeak-ng:VOICE` for espeak-ng's formant
    /// voice.
    pub voice: String,
    /// The voice for each further language an agent answers in (same
    /// forms as `voice`); the rest of these settings are shared.
    pub voices: std::collections::BTreeMap<String, String>,
    pub espeak_data: String,
    pub workers: usize,
    pub threads: usize,
    /// 1.0 = the voice's natural pace; above 1 is faster.
    pub speed: f32,
    /// Sentences kept in the μ-law cache.
    pub cache_sentences: usize,
    /// Where the agent's fixed prompts are kept once synthesised, relative
    /// to the models dir, so a restart is ready at once ("" keeps none).
    pub prompt_cache: String,
    pub queue: usize,
}

impl Default for TtsConfig {
    fn default() -> Self {
        Self {
            voice: "tts/joe".into(),
            // No Spanish Piper voice ships in a package we can fetch:
            // Kokoro-82M reads espeak-ng's Spanish phonemes, understood far
            // better than espeak-ng's own voice (docs/languages.md).
            voices: [("es".to_string(), "kokoro:es-419:jm_kumo".to_string())].into(),
            espeak_data: "tts/espeak-ng-data".into(),
            workers: 1,
            threads: 2,
            speed: 1.0,
            cache_sentences: 512,
            prompt_cache: "cache/tts".into(),
            queue: 64,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TtsError {
    #[error("cannot load the TTS voice from {0}")]
    Load(String),
    #[error("TTS queue is full")]
    Busy,
    #[error("TTS pool has shut down")]
    Closed,
    #[error("resampling TTS audio failed: {0}")]
    Resample(#[from] resample::ResampleError),
    #[error("synthesis failed: {0}")]
    Synth(String),
}

/// One synthesised sentence, ready for the phone.
#[derive(Debug, Clone)]
pub struct TtsChunk {
    pub index: usize,
    pub text: String,
    pub ulaw: Arc<Vec<u8>>,
    /// Time from job submission to this chunk being ready.
    pub ready_ms: u64,
    pub synth_ms: u64,
    pub cached: bool,
    pub last: bool,
}

struct Job {
    sentences: Vec<String>,
    /// The next sentence to synthesise (those before were sent).
    next: usize,
    cancel: Arc<AtomicBool>,
    out: mpsc::Sender<TtsChunk>,
    submitted: Instant,
}

#[derive(Default)]
struct Cache {
    map: HashMap<String, Arc<Vec<u8>>>,
    order: VecDeque<String>,
    /// Sentences another voice says for this one (a language menu inside
    /// the greeting), never evicted.
    pinned: HashMap<String, Arc<Vec<u8>>>,
    /// How fast this voice speaks and synthesises, as measured: how a
    /// reply is cut into pieces ([`sentences::plan`]).
    pace: Pace,
}

impl Cache {
    fn get(&self, s: &str) -> Option<&Arc<Vec<u8>>> {
        self.pinned.get(s).or_else(|| self.map.get(s))
    }
}

/// Whether background prompt synthesis may take the cores now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warm {
    Go,
    /// Something more urgent is running (a call).
    Wait,
    /// The process is leaving.
    Stop,
}

/// What a prompt warm-up did with each sentence it was given.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Warmed {
    /// Synthesised now (and written to disk when the pool keeps prompts).
    pub synthesised: usize,
    /// Read back from the disk cache.
    pub from_disk: usize,
    /// Already in memory.
    pub cached: usize,
}

impl std::ops::AddAssign for Warmed {
    fn add_assign(&mut self, o: Self) {
        self.synthesised += o.synthesised;
        self.from_disk += o.from_disk;
        self.cached += o.cached;
    }
}

/// Replies whose first audio is still to come go to `firsts`; a worker
/// synthesises one sentence of a job, then puts it on `rests`. Workers take
/// firsts before rests, so a new reply's first sentence never waits behind
/// another call's third.
pub struct TtsPool {
    jobs: Sender<Job>,
    cache: Arc<Mutex<Cache>>,
    cap: usize,
    engine: Arc<Mutex<Option<Arc<Engine>>>>,
    /// Workers still running (one whose engine cannot be reloaded stops).
    alive: Arc<AtomicUsize>,
    /// Fixed prompts' audio on disk, and what identifies this voice.
    prompts_on_disk: Option<(DiskCache, Vec<u8>)>,
}

/// What a worker synthesises with (the Piper engine; a fake in tests).
trait Synth: Send + Sync + 'static {
    /// One sentence to 8 kHz μ-law; `None` if cancelled.
    fn speak(&self, text: &str, cancel: &Arc<AtomicBool>) -> Result<Option<Vec<u8>>, TtsError>;
}

/// Loads a fresh engine for a worker whose engine panicked.
type Loader<E> = Arc<dyn Fn() -> Result<E, TtsError> + Send + Sync>;

/// The engine behind one voice.
enum Engine {
    Piper(Piper),
    Kokoro(Kokoro),
    Espeak(Espeak),
}

impl Engine {
    /// The pace to plan with before any synthesis is measured (2-core
    /// figures; the pool then follows what it measures).
    fn pace(&self) -> Pace {
        let rtf = match self {
            Self::Piper(_) => 0.08,
            Self::Kokoro(_) => 0.55,
            Self::Espeak(_) => 0.01,
        };
        Pace {
            rtf,
            ms_per_char: 70.0,
        }
    }

    fn load(models: &Path, cfg: &TtsConfig) -> Result<Self, TtsError> {
        if let Some(voice) = cfg.voice.strip_prefix(ESPEAK) {
            return Ok(Self::Espeak(Espeak::new(voice, cfg.speed)?));
        }
        if let Some(voice) = cfg.voice.strip_prefix(KOKORO) {
            return Ok(Self::Kokoro(Kokoro::load(
                models,
                voice,
                cfg.threads,
                cfg.speed,
            )?));
        }
        Ok(Self::Piper(Piper::load(models, cfg)?))
    }
}

impl Synth for Engine {
    fn speak(&self, text: &str, cancel: &Arc<AtomicBool>) -> Result<Option<Vec<u8>>, TtsError> {
        match self {
            Self::Piper(p) => p.speak(text, cancel),
            Self::Kokoro(k) => k.speak(text, cancel),
            Self::Espeak(e) => e.speak(text, cancel),
        }
    }
}

/// What a sentence's audio depends on besides its text: the voice (its
/// model file's identity for Piper), the pace, and how it is made phone
/// audio.
fn voice_identity(models: &Path, cfg: &TtsConfig) -> Vec<u8> {
    let mut id = format!("ulaw8k-v1|{}|{}", cfg.voice, cfg.speed).into_bytes();
    if let Some(name) = cfg.voice.strip_prefix(KOKORO).and_then(VoiceName::parse) {
        let dir = models.join(kokoro::DIR);
        id.extend(derived::model_identity(&dir.join("model.onnx")));
        id.extend(derived::model_identity(&dir.join("vocab.json")));
        id.extend(derived::model_identity(
            &dir.join("voices").join(format!("{}.bin", name.speaker)),
        ));
    } else if !cfg.voice.starts_with(ESPEAK) {
        let voice = models.join(&cfg.voice);
        id.extend(derived::model_identity(&voice.join("model.onnx")));
        id.extend(derived::model_identity(&voice.join("tokens.txt")));
    }
    id
}

/// The model file a voice needs, relative to the models directory (none
/// for espeak-ng, which is a Debian package).
pub fn voice_model(voice: &str) -> Option<std::path::PathBuf> {
    if voice.starts_with(ESPEAK) {
        None
    } else if voice.starts_with(KOKORO) {
        Some(Path::new(kokoro::DIR).join("model.onnx"))
    } else {
        Some(Path::new(voice).join("model.onnx"))
    }
}

/// `voice` prefix of an espeak-ng voice.
pub const ESPEAK: &str = "espeak-ng:";

/// espeak-ng, run once per sentence (it starts in a few milliseconds).
struct Espeak {
    voice: String,
    /// Words per minute.
    wpm: u32,
}

impl Espeak {
    fn new(voice: &str, speed: f32) -> Result<Self, TtsError> {
        // A voice name is letters, digits and dashes ("es-419"): nothing
        // that could be read as another option.
        if voice.is_empty()
            || !voice
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '+')
        {
            return Err(TtsError::Load(format!("{ESPEAK}{voice}")));
        }
        let e = Self {
            voice: voice.to_string(),
            wpm: (165.0 * speed.clamp(0.5, 2.0)) as u32,
        };
        // Fail at start, not on the first call, when espeak-ng or the voice
        // is missing.
        e.pcm("a")
            .map_err(|_| TtsError::Load(format!("{ESPEAK}{voice}")))?;
        Ok(e)
    }

    /// The sentence as 22.05 kHz samples.
    fn pcm(&self, text: &str) -> Result<(Vec<f32>, u32), TtsError> {
        let wpm = self.wpm.to_string();
        let out = espeak(&["-v", &self.voice, "-s", &wpm, "--stdout", "--", text])?;
        let wav = hound::WavReader::new(std::io::Cursor::new(out))
            .map_err(|e| TtsError::Synth(format!("espeak-ng output: {e}")))?;
        let rate = wav.spec().sample_rate;
        let pcm = wav
            .into_samples::<i16>()
            .map_while(Result::ok)
            .map(|v| v as f32 / 32768.0)
            .collect();
        Ok((pcm, rate))
    }

    fn speak(&self, text: &str, cancel: &Arc<AtomicBool>) -> Result<Option<Vec<u8>>, TtsError> {
        let (pcm, rate) = self.pcm(text)?;
        if cancel.load(Ordering::Relaxed) {
            return Ok(None);
        }
        to_phone(&pcm, rate).map(Some)
    }
}

/// Runs espeak-ng with `args` (text after a `--`), its standard output.
pub(super) fn espeak(args: &[&str]) -> Result<Vec<u8>, TtsError> {
    let out = std::process::Command::new("espeak-ng")
        .args(args)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .map_err(|e| TtsError::Synth(format!("espeak-ng: {e}")))?;
    if !out.status.success() {
        return Err(TtsError::Synth(format!(
            "espeak-ng exited with {}",
            out.status
        )));
    }
    Ok(out.stdout)
}

/// Synthesised samples at `rate` to 8 kHz μ-law, leading silence trimmed.
pub(super) fn to_phone(pcm: &[f32], rate: u32) -> Result<Vec<u8>, TtsError> {
    let pcm = resample::resample(pcm, rate, PHONE_RATE)?;
    let pcm = trim_leading_silence(&pcm);
    let mut out = Vec::with_capacity(pcm.len());
    mulaw::encode_from_f32(pcm, &mut out);
    Ok(out)
}

struct Piper {
    tts: OfflineTts,
    rate: u32,
    speed: f32,
}

impl Piper {
    fn load(models: &Path, cfg: &TtsConfig) -> Result<Self, TtsError> {
        crate::turn::onnx::install_exit_guard();
        let voice = models.join(&cfg.voice);
        let tts_cfg = OfflineTtsConfig {
            model: OfflineTtsModelConfig {
                vits: OfflineTtsVitsModelConfig {
                    model: Some(voice.join("model.onnx").to_string_lossy().into()),
                    tokens: Some(voice.join("tokens.txt").to_string_lossy().into()),
                    data_dir: Some(models.join(&cfg.espeak_data).to_string_lossy().into()),
                    ..Default::default()
                },
                num_threads: cfg.threads.max(1) as i32,
                debug: false,
                provider: Some("cpu".into()),
                ..Default::default()
            },
            max_num_sentences: 1,
            ..Default::default()
        };
        let tts = OfflineTts::create(&tts_cfg)
            .ok_or_else(|| TtsError::Load(voice.display().to_string()))?;
        let rate = tts.sample_rate() as u32;
        Ok(Self {
            tts,
            rate,
            speed: cfg.speed,
        })
    }
}

impl Piper {
    fn speak(&self, text: &str, cancel: &Arc<AtomicBool>) -> Result<Option<Vec<u8>>, TtsError> {
        let gen = GenerationConfig {
            speed: self.speed,
            ..Default::default()
        };
        static SITE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
        let Ok(_guard) = crate::turn::onnx::InferenceGuard::enter(&SITE) else {
            return Ok(None);
        };
        let c = cancel.clone();
        let audio = self.tts.generate_with_config(
            text,
            &gen,
            Some(move |_: &[f32], _: f32| {
                !c.load(Ordering::Relaxed) && !crate::turn::onnx::shutting_down()
            }),
        );
        if cancel.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let Some(audio) = audio else {
            return Ok(Some(Vec::new()));
        };
        to_phone(audio.samples(), self.rate).map(Some)
    }
}

/// Piper starts each sentence with ~0.1–0.2 s of near-silence; the caller
/// hears that as latency. Keep 10 ms before the first audible sample.
fn trim_leading_silence(pcm: &[f32]) -> &[f32] {
    const AUDIBLE: f32 = 0.01; // about -40 dBFS
    const KEEP: usize = PHONE_RATE as usize / 100;
    let first = pcm.iter().position(|x| x.abs() >= AUDIBLE).unwrap_or(0);
    &pcm[first.saturating_sub(KEEP)..]
}

/// Whether `text` ends where a speaker pauses anyway (a sentence or a
/// clause); a template's lead ("Su saldo es de") does not, and the rest
/// of its sentence follows straight on.
fn ends_a_phrase(text: &str) -> bool {
    text.trim_end()
        .ends_with(['.', '!', '?', ';', ':', ',', '…', '"', ')'])
}

/// A voice ends each text with a fall to silence (~0.1–0.3 s); where the
/// words go on in the next piece that is a pause mid-sentence. Keep 30 ms
/// after the last audible sample of phone audio.
fn trim_trailing_silence(ulaw: &mut Vec<u8>) {
    const AUDIBLE: i16 = 328; // about -40 dBFS, as `trim_leading_silence`
    const KEEP: usize = PHONE_RATE as usize * 3 / 100;
    if let Some(last) = ulaw
        .iter()
        .rposition(|&b| mulaw::decode(b).saturating_abs() >= AUDIBLE)
    {
        ulaw.truncate((last + 1 + KEEP).min(ulaw.len()));
    }
}

impl TtsPool {
    pub fn start(models: &Path, cfg: &TtsConfig) -> Result<Self, TtsError> {
        let (jobs, rx) = bounded::<Job>(cfg.queue.max(1));
        let (rest_tx, rest_rx) = bounded::<Job>(cfg.queue.max(1));
        let first = Arc::new(Engine::load(models, cfg)?);
        let cache = Arc::new(Mutex::new(Cache {
            pace: first.pace(),
            ..Cache::default()
        }));
        let engine = Arc::new(Mutex::new(Some(first.clone())));
        let alive = Arc::new(AtomicUsize::new(0));
        let (m, c) = (models.to_path_buf(), cfg.clone());
        let load: Loader<Engine> = Arc::new(move || Engine::load(&m, &c));
        for i in 0..cfg.workers.max(1) {
            let e = if i == 0 {
                first.clone()
            } else {
                Arc::new(Engine::load(models, cfg)?)
            };
            let q = Queues {
                firsts: rx.clone(),
                rests: rest_rx.clone(),
                requeue: rest_tx.clone(),
            };
            let (cache, cap) = (cache.clone(), cfg.cache_sentences);
            let (load, alive2) = (load.clone(), alive.clone());
            alive.fetch_add(1, Ordering::SeqCst);
            std::thread::Builder::new()
                .name(format!("tts-{i}"))
                .spawn(move || {
                    worker(e, load, q, cache, cap);
                    alive2.fetch_sub(1, Ordering::SeqCst);
                })
                .map_err(|e| TtsError::Load(e.to_string()))?;
        }
        let prompts_on_disk = (!cfg.prompt_cache.is_empty()).then(|| {
            (
                DiskCache::new(
                    models.join(&cfg.prompt_cache),
                    "ulaw",
                    cfg.cache_sentences.saturating_mul(4),
                ),
                voice_identity(models, cfg),
            )
        });
        Ok(Self {
            jobs,
            cache,
            cap: cfg.cache_sentences,
            engine,
            alive,
            prompts_on_disk,
        })
    }

    /// Whether a worker is still running.
    pub fn healthy(&self) -> bool {
        self.alive.load(Ordering::SeqCst) > 0
    }

    /// Starts speaking `text`; chunks arrive on the returned channel in
    /// order, one per returned part (chunk `index` = position in it).
    pub fn speak(
        &self,
        text: &str,
        cancel: Arc<AtomicBool>,
    ) -> Result<(mpsc::Receiver<TtsChunk>, Vec<String>), TtsError> {
        // Cut where the voice keeps up: an uncached first sentence opens
        // with a short opener or clause, a later one that would leave a
        // pause is cut at a clause.
        let parts = {
            let c = self.cache.lock();
            sentences::plan(sentences::split(text), c.pace, |s| c.get(s).is_some())
        };
        let (tx, rx) = mpsc::channel(parts.len().max(1) + 1);
        let submitted = Instant::now();
        // Serve a cached prefix at once, without waiting for a worker.
        let mut first_uncached = 0;
        {
            let cache = self.cache.lock();
            for (i, s) in parts.iter().enumerate() {
                let Some(u) = cache.get(s) else { break };
                let _ = tx.try_send(TtsChunk {
                    index: i,
                    text: s.clone(),
                    ulaw: u.clone(),
                    ready_ms: 0,
                    synth_ms: 0,
                    cached: true,
                    last: i + 1 == parts.len(),
                });
                first_uncached = i + 1;
            }
        }
        if first_uncached < parts.len() {
            let job = Job {
                sentences: parts.clone(),
                next: first_uncached,
                cancel,
                out: tx,
                submitted,
            };
            self.jobs.try_send(job).map_err(|e| match e {
                TrySendError::Full(_) => TtsError::Busy,
                TrySendError::Disconnected(_) => TtsError::Closed,
            })?;
        }
        Ok((rx, parts))
    }

    /// `texts` are said in `other`'s voice wherever this voice's replies
    /// hold them: another language's words inside this one's prompt (the
    /// greeting's "Para español, oprima nueve."), which this voice would
    /// mispronounce. `other` synthesises (or already cached) them.
    pub fn say_as(&self, other: &TtsPool, texts: &[String]) -> Warmed {
        let done = other.prewarm(texts);
        let theirs = other.cache.lock();
        let mut mine = self.cache.lock();
        for s in texts.iter().flat_map(|t| sentences::split(t)) {
            if let Some(u) = theirs.get(&s) {
                mine.pinned.insert(s, u.clone());
            }
        }
        done
    }

    /// Synthesises and caches prompts ahead of time (greeting, FAQ answers).
    /// A text with `{blanks}` is a reply template: its sentences without a
    /// blank and the words before a sentence's first blank are cached
    /// ([`sentences::template_pieces`]), so a filled reply starts with them.
    pub fn prewarm(&self, texts: &[String]) -> Warmed {
        self.prewarm_when(texts, &|| Warm::Go)
    }

    /// As [`Self::prewarm`], each sentence not on disk synthesised only
    /// once `when()` says nothing more urgent wants the cores (asked every
    /// 100 ms meanwhile), and none once it says stop.
    pub fn prewarm_when(&self, texts: &[String], when: &dyn Fn() -> Warm) -> Warmed {
        let mut done = Warmed::default();
        let Some(engine) = self.engine.lock().clone() else {
            return done;
        };
        let never = Arc::new(AtomicBool::new(false));
        for t in texts {
            let pieces = if t.contains('{') {
                // A template: what it says before it is filled in.
                sentences::template_pieces(t)
            } else {
                sentences::split(t)
            };
            for s in pieces {
                if self.cache.lock().get(&s).is_some() {
                    done.cached += 1;
                    continue;
                }
                let key = self
                    .prompts_on_disk
                    .as_ref()
                    .map(|(_, voice)| derived::key([voice.as_slice(), s.as_bytes()]));
                let stored = self
                    .prompts_on_disk
                    .as_ref()
                    .zip(key.as_deref())
                    .and_then(|((disk, _), k)| disk.get(k));
                if let Some(u) = stored {
                    // Read from disk: cheap, so never held back.
                    insert(&self.cache, self.cap, s, Arc::new(u));
                    done.from_disk += 1;
                    continue;
                }
                loop {
                    match when() {
                        Warm::Go => break,
                        Warm::Wait => std::thread::sleep(std::time::Duration::from_millis(100)),
                        Warm::Stop => return done,
                    }
                }
                if let Ok(Some(mut u)) = timed(&self.cache, &s, || engine.speak(&s, &never)) {
                    if !ends_a_phrase(&s) {
                        trim_trailing_silence(&mut u);
                    }
                    if let (Some((disk, _)), Some(k)) = (&self.prompts_on_disk, &key) {
                        disk.put(k, &u);
                    }
                    insert(&self.cache, self.cap, s, Arc::new(u));
                    done.synthesised += 1;
                }
            }
        }
        done
    }

    /// Synthesises a whole text to μ-law, blocking (tools, tests, benchmarks).
    pub fn synthesize_blocking(&self, text: &str) -> Result<Vec<u8>, TtsError> {
        let engine = self.engine.lock().clone().ok_or(TtsError::Closed)?;
        let never = Arc::new(AtomicBool::new(false));
        let mut out = Vec::new();
        for s in sentences::split(text) {
            out.extend(engine.speak(&s, &never)?.unwrap_or_default());
        }
        Ok(out)
    }
}

/// Runs one synthesis of `text`, folding its speed into the voice's pace.
fn timed(
    cache: &Mutex<Cache>,
    text: &str,
    speak: impl FnOnce() -> Result<Option<Vec<u8>>, TtsError>,
) -> Result<Option<Vec<u8>>, TtsError> {
    let t = Instant::now();
    let out = speak();
    if let Ok(Some(u)) = &out {
        let synth_ms = t.elapsed().as_secs_f32() * 1000.0;
        // 8 kHz μ-law: 8 bytes a millisecond.
        cache
            .lock()
            .pace
            .observe(text, synth_ms, u.len() as f32 / 8.0);
    }
    out
}

fn insert(cache: &Mutex<Cache>, cap: usize, key: String, val: Arc<Vec<u8>>) {
    let mut c = cache.lock();
    if c.map.insert(key.clone(), val).is_none() {
        c.order.push_back(key);
    }
    while c.order.len() > cap {
        if let Some(old) = c.order.pop_front() {
            c.map.remove(&old);
        }
    }
}

struct Queues {
    firsts: Receiver<Job>,
    rests: Receiver<Job>,
    requeue: Sender<Job>,
}

/// What became of a job's next sentence.
#[derive(Debug, PartialEq)]
enum Next {
    /// Sent; more sentences to go.
    More,
    /// Finished, cancelled, failed or nobody listening.
    Done,
    /// The engine panicked: the job is dropped (its reply ends) and the
    /// engine is not trusted again.
    Broken,
}

/// Serves jobs until the pool closes, or until an engine that panicked
/// cannot be reloaded.
fn worker<E: Synth>(
    mut engine: Arc<E>,
    load: Loader<E>,
    q: Queues,
    cache: Arc<Mutex<Cache>>,
    cap: usize,
) {
    loop {
        let mut job = match q.firsts.try_recv() {
            Ok(j) => j,
            Err(_) => crossbeam_channel::select! {
                recv(q.firsts) -> j => match j { Ok(j) => j, Err(_) => return },
                recv(q.rests) -> j => match j { Ok(j) => j, Err(_) => return },
            },
        };
        // One sentence, then back in line behind waiting first sentences;
        // with no room in line, carry on with this reply.
        loop {
            match synth_next(engine.as_ref(), &mut job, &cache, cap) {
                Next::More => {}
                Next::Done => break,
                Next::Broken => {
                    match load() {
                        Ok(e) => engine = Arc::new(e),
                        Err(e) => {
                            tracing::error!(error = %e, "TTS worker could not reload its voice; it stops");
                            return;
                        }
                    }
                    break;
                }
            }
            match q.requeue.try_send(job) {
                Ok(()) => break,
                Err(TrySendError::Full(j)) | Err(TrySendError::Disconnected(j)) => job = j,
            }
        }
    }
}

/// Synthesises and sends the job's next sentence.
fn synth_next<E: Synth>(engine: &E, job: &mut Job, cache: &Mutex<Cache>, cap: usize) -> Next {
    let n = job.sentences.len();
    let i = job.next;
    if i >= n || job.cancel.load(Ordering::Relaxed) || job.out.is_closed() {
        return Next::Done;
    }
    let s = &job.sentences[i];
    let cached = cache.lock().get(s).cloned();
    let t = Instant::now();
    let (ulaw, was_cached) = match cached {
        Some(u) => (u, true),
        None => {
            let spoken = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                timed(cache, s, || engine.speak(s, &job.cancel))
            }));
            match spoken {
                Ok(Ok(Some(u))) => {
                    let u = Arc::new(u);
                    insert(cache, cap, s.clone(), u.clone());
                    (u, false)
                }
                Ok(Ok(None)) => return Next::Done,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "TTS failed");
                    return Next::Done;
                }
                Err(panic) => {
                    crate::faults::contained(crate::faults::Part::TtsWorker, panic.as_ref());
                    return Next::Broken;
                }
            }
        }
    };
    let chunk = TtsChunk {
        index: i,
        text: s.clone(),
        ulaw,
        ready_ms: job.submitted.elapsed().as_millis() as u64,
        synth_ms: t.elapsed().as_millis() as u64,
        cached: was_cached,
        last: i + 1 == n,
    };
    job.next += 1;
    // The channel holds every chunk of the reply, so this never waits.
    if job.out.try_send(chunk).is_ok() && job.next < n {
        Next::More
    } else {
        Next::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Says each sentence's length as one byte; panics on "boom".
    struct Fragile;
    impl Synth for Fragile {
        fn speak(&self, text: &str, _: &Arc<AtomicBool>) -> Result<Option<Vec<u8>>, TtsError> {
            assert_ne!(text, "boom", "voice state corrupted");
            Ok(Some(vec![text.len() as u8]))
        }
    }

    fn job(sentences: &[&str]) -> (Job, mpsc::Receiver<TtsChunk>) {
        let (out, rx) = mpsc::channel(8);
        let job = Job {
            sentences: sentences.iter().map(|s| s.to_string()).collect(),
            next: 0,
            cancel: Arc::new(AtomicBool::new(false)),
            out,
            submitted: Instant::now(),
        };
        (job, rx)
    }

    fn heard(mut rx: mpsc::Receiver<TtsChunk>) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(c) = rx.blocking_recv() {
            out.extend(c.ulaw.iter());
        }
        out
    }

    #[test]
    fn a_panicking_voice_ends_that_reply_and_is_reloaded() {
        let (jobs, firsts) = bounded(4);
        let (requeue, rests) = bounded(4);
        let loads = Arc::new(AtomicUsize::new(0));
        let l = loads.clone();
        let load: Loader<Fragile> = Arc::new(move || {
            l.fetch_add(1, Ordering::SeqCst);
            Ok(Fragile)
        });
        let q = Queues {
            firsts,
            rests,
            requeue,
        };
        let cache = Arc::new(Mutex::new(Cache::default()));
        let w = std::thread::spawn(move || worker(Arc::new(Fragile), load, q, cache, 16));
        let faults = crate::faults::count(crate::faults::Part::TtsWorker);
        let (j, rx) = job(&["hello", "boom", "never"]);
        jobs.send(j).unwrap();
        // The sentence before the panic is heard; the reply then ends.
        assert_eq!(heard(rx), vec![5]);
        let (j, rx) = job(&["after", "it"]);
        jobs.send(j).unwrap();
        assert_eq!(heard(rx), vec![5, 2]);
        assert_eq!(loads.load(Ordering::SeqCst), 1, "reloaded once");
        assert!(crate::faults::count(crate::faults::Part::TtsWorker) > faults);
        drop(jobs);
        w.join().unwrap();
    }

    /// The greeting's "Para español, oprima nueve." is said by the Spanish
    /// voice inside the English one's greeting, and stays so however many
    /// other sentences pass through the cache.
    #[test]
    fn another_languages_sentence_is_said_in_its_own_voice() {
        let pool = |voice: &str| {
            let cfg = TtsConfig {
                voice: format!("{ESPEAK}{voice}"),
                workers: 1,
                cache_sentences: 2,
                prompt_cache: String::new(),
                ..TtsConfig::default()
            };
            TtsPool::start(Path::new("models"), &cfg).expect("espeak-ng")
        };
        let (en, es) = (pool("en-us"), pool("es-419"));
        let offer = "Para español, oprima nueve.".to_string();
        en.say_as(&es, std::slice::from_ref(&offer));
        let spanish = es.cache.lock().get(&offer).cloned().expect("synthesised");
        // Fill the English cache past its size.
        en.prewarm(&["One. Two. Three.".to_string()]);
        let (rx, parts) = en
            .speak(
                "How can I help? Para español, oprima nueve.",
                Arc::default(),
            )
            .unwrap();
        assert_eq!(parts[parts.len() - 1], offer);
        let mut rx = rx;
        let mut got = None;
        while let Some(c) = rx.blocking_recv() {
            if c.text == offer {
                got = Some(c);
            }
        }
        let got = got.expect("the offer is said");
        assert!(got.cached);
        assert_eq!(got.ulaw, spanish, "in the Spanish voice");
        let english = Espeak::new("en-us", 1.0)
            .unwrap()
            .speak(&offer, &Arc::default())
            .unwrap()
            .unwrap();
        assert_ne!(*got.ulaw, english);
    }

    /// A reply template's written words are cached ahead; the filled
    /// reply opens with them (ready at once), trimmed of the voice's
    /// closing silence so the rest follows on as one sentence.
    #[test]
    fn a_filled_reply_opens_with_its_templates_cached_words() {
        let cfg = TtsConfig {
            voice: format!("{ESPEAK}es-419"),
            workers: 1,
            prompt_cache: String::new(),
            ..TtsConfig::default()
        };
        let pool = TtsPool::start(Path::new("models"), &cfg).expect("espeak-ng");
        let lead = "Voy a bloquear ahora mismo la tarjeta terminada en";
        pool.prewarm(&[format!(
            "{lead} {{card_last4}} para que nadie pueda usarla. ¿Sigo adelante?"
        )]);
        let said = pool.cache.lock().get(lead).cloned().expect("lead cached");
        let whole = Espeak::new("es-419", 1.0)
            .unwrap()
            .speak(lead, &Arc::default())
            .unwrap()
            .unwrap();
        assert!(
            said.len() + 400 < whole.len(),
            "closing silence trimmed: {} of {} bytes",
            said.len(),
            whole.len()
        );
        assert!(pool.cache.lock().get("¿Sigo adelante?").is_some());
        let reply = format!("{lead} 4821 para que nadie pueda usarla. ¿Sigo adelante?");
        let (mut rx, parts) = pool.speak(&reply, Arc::default()).unwrap();
        assert_eq!(parts[0], lead);
        assert_eq!(parts.join(" "), reply);
        let first = rx.blocking_recv().expect("first piece");
        assert!(first.cached && first.ready_ms == 0, "{first:?}");
        let mut n = 1;
        while let Some(c) = rx.blocking_recv() {
            n += 1;
            if c.last {
                break;
            }
        }
        assert_eq!(n, parts.len());
    }

    #[test]
    fn only_closing_silence_is_trimmed() {
        let loud = mulaw::encode(8000);
        let quiet = mulaw::encode(0);
        let mut u = [vec![quiet; 100], vec![loud; 800], vec![quiet; 2000]].concat();
        trim_trailing_silence(&mut u);
        assert_eq!(u.len(), 900 + 240);
        let mut silent = vec![quiet; 50];
        trim_trailing_silence(&mut silent);
        assert_eq!(silent.len(), 50, "nothing audible: left as it is");
        assert!(ends_a_phrase("¿Sigo adelante?") && ends_a_phrase("centavos,"));
        assert!(!ends_a_phrase("Su saldo es de"));
    }
}
