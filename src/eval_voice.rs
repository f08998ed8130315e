//! `attendant eval voice`: a voice as callers meet it. Each line of a text
//! file is spoken as an uncached reply through the TTS pool (first audio:
//! what a caller waits; the real-time factor: what it costs), then its
//! phone audio (8 kHz μ-law) is transcribed back with Whisper in that
//! language and scored (word error rate): how well it is understood.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};

use attendant::agent::Agent;
use attendant::asr::whisper::WhisperModel;
use attendant::asr::{AsrConfig, Recognizer};
use attendant::config::Config;
use attendant::eval::{edit_distance, normalize};
use attendant::media::{mulaw, resample};
use attendant::nlu::lang::Lang;
use attendant::speech::{TtsConfig, TtsPool};

#[derive(clap::Args)]
pub struct VoiceArgs {
    /// One reply per line (`#` starts a comment).
    #[arg(long)]
    pub text: PathBuf,
    /// The language's voice (`tts.voices`) and Whisper's language; without
    /// it, the main voice in English.
    #[arg(long)]
    pub language: Option<String>,
    #[command(flatten)]
    pub heard: HeardArgs,
    /// Write the report as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// An agent folder whose reply templates (in `--language`) are cached
    /// first, as a server caches them: a filled reply then starts with
    /// its template's written words while the rest is synthesised.
    #[arg(long)]
    pub agent: Option<PathBuf>,
}

/// What speaks and what listens, for the tools that speak text and hear
/// it back over the phone (`eval voice`, `eval understand`).
#[derive(clap::Args)]
pub struct HeardArgs {
    /// A `tts.voices`-style voice to use instead of the configured one,
    /// e.g. `espeak-ng:es-419` or `kokoro:es-419:jf_alpha`.
    #[arg(long)]
    pub voice: Option<String>,
    /// The Whisper model that listens, under the models directory (a
    /// multilingual one for other languages).
    #[arg(long, default_value = "ggml-base-q8_0.bin")]
    pub asr_model: String,
    #[arg(long, env = "ATTENDANT_CONFIG")]
    pub config: Option<PathBuf>,
}

impl HeardArgs {
    /// The configuration, and the voice that speaks `language` (`--voice`,
    /// else `tts.voices`, else the main voice when `None`) with no prompt
    /// cache: every text is synthesised.
    pub fn voice_for(&self, language: Option<&str>) -> anyhow::Result<(Config, TtsConfig)> {
        let cfg = Config::load(self.config.as_deref(), std::env::vars())?;
        let mut tcfg = cfg.tts.clone();
        tcfg.voice = match (&self.voice, language) {
            (Some(v), _) => v.clone(),
            (None, Some(l)) => cfg
                .tts
                .voices
                .get(l)
                .with_context(|| format!("no voice for `{l}` in tts.voices"))?
                .clone(),
            (None, None) => cfg.tts.voice.clone(),
        };
        tcfg.prompt_cache = String::new();
        Ok((cfg, tcfg))
    }
}

/// Phone audio (8 kHz μ-law) as Whisper takes it (16 kHz float).
pub fn phone_to_16k(ulaw: &[u8]) -> anyhow::Result<Vec<f32>> {
    let x: Vec<f32> = ulaw
        .iter()
        .map(|&b| mulaw::decode(b) as f32 / 32768.0)
        .collect();
    Ok(resample::resample(&x, 8000, 16000)?)
}

#[derive(serde::Serialize)]
struct Row {
    text: String,
    heard: String,
    /// Reply submitted → its first chunk ready.
    first_audio_ms: u64,
    /// Reply submitted → its last chunk ready.
    synth_ms: u64,
    audio_ms: u64,
    /// Longest silence added between the reply's pieces when each plays
    /// as soon as it is ready and the one before it has played.
    pause_ms: u64,
    words: usize,
    errors: usize,
}

pub async fn run(a: VoiceArgs) -> anyhow::Result<()> {
    let code = a.language.clone().unwrap_or_else(|| "en".into());
    let lang = Lang::parse(&code).with_context(|| format!("unknown language `{code}`"))?;
    let (cfg, tcfg) = a.heard.voice_for(a.language.as_deref())?;
    let lines: Vec<String> = std::fs::read_to_string(&a.text)
        .with_context(|| format!("reading {}", a.text.display()))?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    if lines.is_empty() {
        bail!("{} has no lines", a.text.display());
    }
    let models = cfg.server.models_dir.clone();
    let t0 = Instant::now();
    let pool = TtsPool::start(&models, &tcfg)?;
    eprintln!(
        "voice {} loaded in {} ms",
        tcfg.voice,
        t0.elapsed().as_millis()
    );
    // One reply first, so the measured ones do not pay for warm-up.
    let _ = speak(&pool, "Hola.").await?;
    if let Some(dir) = &a.agent {
        let agent = Agent::load(dir)?;
        let agent = match agent.locales.get(&code) {
            Some(l) => l.clone(),
            None if agent.file.agent.language == code => agent,
            None => bail!("{} does not answer in `{code}`", dir.display()),
        };
        let templates: Vec<String> = agent
            .spoken()
            .into_iter()
            .filter(|t| t.contains('{'))
            .collect();
        let t = Instant::now();
        pool.prewarm(&templates);
        eprintln!(
            "{} templates' written words cached in {} ms",
            templates.len(),
            t.elapsed().as_millis()
        );
    }
    let mut spoken = Vec::new();
    for line in &lines {
        spoken.push(speak(&pool, line).await?);
    }
    drop(pool);
    let asr = AsrConfig {
        model: a.heard.asr_model.clone(),
        language: code.clone(),
        ..Default::default()
    };
    let whisper = WhisperModel::load(&models, &asr)?;
    let mut rec = whisper.recognizer(2)?;
    let mut rows = Vec::new();
    for (
        line,
        Spoken {
            first,
            last: total,
            pause,
            ulaw,
        },
    ) in lines.iter().zip(spoken)
    {
        let x16 = phone_to_16k(&ulaw)?;
        let heard = rec.decode(&x16[..x16.len().min(16000 * 28)])?;
        // Number words and digits compare alike in every language.
        let r = normalize(&lang.heard(line));
        let h = normalize(&lang.heard(&heard));
        rows.push(Row {
            text: line.clone(),
            heard,
            first_audio_ms: first,
            synth_ms: total,
            audio_ms: ulaw.len() as u64 / 8,
            pause_ms: pause,
            words: r.len(),
            errors: edit_distance(&r, &h),
        });
    }
    for r in &rows {
        println!(
            "{:>5} ms first, {:>5} ms for {:>5} ms, pause {:>4} ms, {}/{} wrong: {}  <- {}",
            r.first_audio_ms,
            r.synth_ms,
            r.audio_ms,
            r.pause_ms,
            r.errors,
            r.words,
            r.heard,
            r.text
        );
    }
    let mut firsts: Vec<u64> = rows.iter().map(|r| r.first_audio_ms).collect();
    firsts.sort_unstable();
    let pct = |q: f64| firsts[((firsts.len() - 1) as f64 * q).round() as usize];
    let synth: u64 = rows.iter().map(|r| r.synth_ms).sum();
    let audio: u64 = rows.iter().map(|r| r.audio_ms).sum();
    let (errors, words) = rows
        .iter()
        .fold((0, 0), |(e, w), r| (e + r.errors, w + r.words));
    println!(
        "voice             {} ({} threads)",
        tcfg.voice, tcfg.threads
    );
    println!("replies           {}", rows.len());
    println!(
        "first audio       p50 {} ms, p95 {} ms",
        pct(0.5),
        pct(0.95)
    );
    let paused = rows.iter().filter(|r| r.pause_ms > 250).count();
    let longest = rows.iter().map(|r| r.pause_ms).max().unwrap_or(0);
    println!(
        "pauses            {paused} of {} replies pause > 250 ms between pieces; longest {longest} ms",
        rows.len()
    );
    println!(
        "real-time factor  {:.2} ({} ms of synthesis for {} ms of audio)",
        synth as f64 / audio.max(1) as f64,
        synth,
        audio
    );
    println!(
        "heard back        WER {:.1} % ({errors}/{words} words, {} in {code})",
        100.0 * errors as f64 / words.max(1) as f64,
        a.heard.asr_model
    );
    if let Some(p) = a.json {
        std::fs::write(&p, serde_json::to_vec_pretty(&rows)?)?;
    }
    Ok(())
}

/// One reply as the pool gave it.
struct Spoken {
    /// Submitted → first and last chunk ready.
    first: u64,
    last: u64,
    /// Longest silence added between chunks played back to back.
    pause: u64,
    ulaw: Vec<u8>,
}

/// Speaks one reply, timing its chunks as a line would play them.
async fn speak(pool: &TtsPool, text: &str) -> anyhow::Result<Spoken> {
    let (mut rx, _) = pool.speak(text, Arc::new(AtomicBool::new(false)))?;
    let mut out = Spoken {
        first: 0,
        last: 0,
        pause: 0,
        ulaw: Vec::new(),
    };
    let mut played: Option<u64> = None;
    while let Some(c) = rx.recv().await {
        let start = match played {
            None => {
                out.first = c.ready_ms;
                c.ready_ms
            }
            Some(end) => {
                out.pause = out.pause.max(c.ready_ms.saturating_sub(end));
                end.max(c.ready_ms)
            }
        };
        // 8 kHz μ-law: 8 bytes a millisecond.
        played = Some(start + c.ulaw.len() as u64 / 8);
        out.last = c.ready_ms;
        out.ulaw.extend_from_slice(&c.ulaw);
        if c.last {
            break;
        }
    }
    Ok(out)
}
