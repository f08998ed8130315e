//! `attendant eval understand`: two ways to understand a caller in one of
//! an agent's further languages, measured on the same speech. Each
//! labelled request (`text,category`) is spoken by that language's voice
//! and heard as over the phone (8 kHz μ-law), then
//! - transcribed by Whisper in that language and read by the agent's
//!   intents in it (what a call does), and
//! - translated into English by Whisper itself (its translate task) and
//!   read by the agent's English intents.
//!
//! Both are scored with the agent's own rule (rejections count), beside the
//! written requests read directly, with the decoding time of each way.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::bail;

use attendant::asr::whisper::WhisperModel;
use attendant::asr::{AsrConfig, Recognizer};
use attendant::dialogue::manager::AgentRuntime;
use attendant::nlu::eval::{evaluate, read_csv, Labelled, NluReport};
use attendant::speech::TtsPool;

use crate::eval_voice::{phone_to_16k, HeardArgs};

#[derive(clap::Args)]
pub struct UnderstandArgs {
    /// The agent folder; its main language is the one translated into.
    #[arg(long)]
    pub agent: PathBuf,
    /// The callers' language, one of the agent's further languages.
    #[arg(long)]
    pub language: String,
    /// Labelled requests in that language (`text,category`).
    #[arg(long)]
    pub test: PathBuf,
    #[command(flatten)]
    pub heard: HeardArgs,
    /// Write every request, what each way heard, and the scores as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(serde::Serialize)]
struct Row {
    text: String,
    category: String,
    transcribed: String,
    translated: String,
}

#[derive(serde::Serialize)]
struct Score {
    way: &'static str,
    /// Right with the agent's rule (a rejection is right only for an
    /// out-of-scope request).
    accuracy: f64,
    /// Known requests on their intent, nothing rejected.
    top1: f64,
    /// Whisper's decoding per request, p50 (0 for the written text).
    decode_ms_p50: u64,
}

pub async fn run(a: UnderstandArgs) -> anyhow::Result<()> {
    let (cfg, tcfg) = a.heard.voice_for(Some(&a.language))?;
    let models = cfg.server.models_dir.clone();
    let rt = AgentRuntime::load(&a.agent, &models)?;
    let Some(local) = rt.locales.get(&a.language) else {
        bail!("{} does not answer in `{}`", a.agent.display(), a.language);
    };
    let test = read_csv(&a.test)?;
    if test.is_empty() {
        bail!("{} has no requests", a.test.display());
    }
    let t = Instant::now();
    let pool = TtsPool::start(&models, &tcfg)?;
    let mut audio = Vec::with_capacity(test.len());
    for item in &test {
        audio.push(phone_to_16k(&pool.synthesize_blocking(&item.text)?)?);
    }
    drop(pool);
    eprintln!(
        "{} requests spoken by {} in {:.1} s",
        test.len(),
        tcfg.voice,
        t.elapsed().as_secs_f64()
    );
    let hear = |translate: bool| -> anyhow::Result<(Vec<String>, u64)> {
        let asr = AsrConfig {
            model: a.heard.asr_model.clone(),
            language: a.language.clone(),
            translate,
            ..Default::default()
        };
        let whisper = WhisperModel::load(&models, &asr)?;
        let mut rec = whisper.recognizer(2)?;
        let mut texts = Vec::with_capacity(audio.len());
        let mut ms = Vec::with_capacity(audio.len());
        for x in &audio {
            let t = Instant::now();
            texts.push(rec.decode(&x[..x.len().min(16000 * 28)])?);
            ms.push(t.elapsed().as_millis() as u64);
        }
        ms.sort_unstable();
        Ok((texts, ms[ms.len() / 2]))
    };
    let (transcribed, transcribe_ms) = hear(false)?;
    let (translated, translate_ms) = hear(true)?;
    let relabel = |texts: &[String]| -> Vec<Labelled> {
        texts
            .iter()
            .zip(&test)
            .map(|(t, item)| Labelled {
                text: t.clone(),
                category: item.category.clone(),
            })
            .collect()
    };
    let score = |way, r: &NluReport, decode_ms_p50| Score {
        way,
        accuracy: r.accuracy,
        top1: r
            .trade_off
            .first()
            .map_or(r.in_scope_accuracy, |t| t.in_scope_accuracy),
        decode_ms_p50,
    };
    let scores = [
        score(
            "written, the language's intents",
            &evaluate(&local.intents, &test)?,
            0,
        ),
        score(
            "Whisper in the language, its intents",
            &evaluate(&local.intents, &relabel(&transcribed))?,
            transcribe_ms,
        ),
        score(
            "Whisper translating, the English intents",
            &evaluate(&rt.intents, &relabel(&translated))?,
            translate_ms,
        ),
    ];
    let rows: Vec<Row> = test
        .iter()
        .zip(transcribed.iter().zip(&translated))
        .map(|(item, (es, en))| Row {
            text: item.text.clone(),
            category: item.category.clone(),
            transcribed: es.clone(),
            translated: en.clone(),
        })
        .collect();
    for r in &rows {
        println!(
            "{:<20} {}\n{:<20}   heard: {}\n{:<20}   translated: {}",
            r.category, r.text, "", r.transcribed, "", r.translated
        );
    }
    println!(
        "\n{} requests in `{}`, voice {}, {}",
        test.len(),
        a.language,
        tcfg.voice,
        a.heard.asr_model
    );
    for s in &scores {
        println!(
            "{:<42} right {:>5.1} %   top-1 {:>5.1} %   decode p50 {:>4} ms",
            s.way,
            100.0 * s.accuracy,
            100.0 * s.top1,
            s.decode_ms_p50
        );
    }
    if let Some(p) = a.json {
        std::fs::write(
            &p,
            serde_json::to_vec_pretty(&serde_json::json!({ "scores": scores, "rows": rows }))?,
        )?;
    }
    Ok(())
}
