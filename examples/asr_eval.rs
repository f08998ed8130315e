//! ASR accuracy and speed over the real speech in ../shared/data/speech,
//! sent through the phone path (8 kHz μ-law, then 16 kHz) as callers are:
//! `cargo run --release --example asr_eval [-- SHARED_DIR [ENGINE…]]`.
//! ENGINE is moonshine and/or whisper (default both). Prints per engine:
//! WER on the sentences, isolated-digit accuracy (FSDD, 100 files), and
//! 4-digit string accuracy (50 strings joined from one speaker's digits,
//! as a caller reads out account digits), with decode times.
//! Other settings come from the usual ATTENDANT__ASR__* variables.

use std::path::{Path, PathBuf};
use std::time::Instant;

use attendant::asr::{AsrConfig, AsrEngine, AsrPool};
use attendant::client::audio::read_wav;
use attendant::config::Config;
use attendant::eval::{edit_distance, normalize};
use attendant::media::{mulaw, resample::resample};
use attendant::nlu::numbers::spoken_digits;

/// 16 kHz audio as it reaches the recogniser from a phone call.
fn phone_path(pcm: &[f32], rate: u32) -> anyhow::Result<Vec<f32>> {
    let x8 = resample(pcm, rate, 8000)?;
    let mut mu = Vec::new();
    mulaw::encode_from_f32(&x8, &mut mu);
    let mut back = Vec::new();
    mulaw::decode_to_f32(&mu, &mut back);
    Ok(resample(&back, 8000, 16000)?)
}

struct Item {
    path: String,
    transcript: String,
    pcm16: Vec<f32>,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn main() -> anyhow::Result<()> {
    attendant::asr::configure_threads();
    let mut args = std::env::args().skip(1);
    let shared = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared/data/speech"));
    let engines: Vec<AsrEngine> = {
        let v: Vec<String> = args.collect();
        if v.is_empty() {
            vec![AsrEngine::Moonshine, AsrEngine::Whisper]
        } else {
            v.iter()
                .map(|e| serde_json::from_value(serde_json::Value::String(e.clone())))
                .collect::<Result<_, _>>()?
        }
    };
    let cfg = Config::load(None, std::env::vars())?;
    let (sentences, digits, strings) = load(&shared)?;
    println!(
        "{} sentences, {} digits, {} 4-digit strings, through 8 kHz μ-law",
        sentences.len(),
        digits.len(),
        strings.len()
    );
    for engine in engines {
        let mut c: AsrConfig = cfg.asr.clone();
        c.engine = engine;
        c.digits_engine = None;
        c.workers = 1;
        if engine == AsrEngine::Whisper {
            c.threads = c.threads.max(2);
        }
        let pool = AsrPool::start(&cfg.server.models_dir, &c)?;
        pool.transcribe_blocking(vec![0.0; 16000])?;
        let (mut errs, mut words, mut times) = (0usize, 0usize, Vec::new());
        for it in &sentences {
            let t = Instant::now();
            // Whisper's window is 30 s: longer recordings go in two pieces,
            // cut at the quietest point near the middle, for both engines.
            let mut text = String::new();
            for piece in halves(&it.pcm16) {
                text.push_str(&pool.transcribe_blocking(piece)?.text);
                text.push(' ');
            }
            let tr = attendant::asr::Transcript {
                text,
                audio_ms: 0,
                queue_ms: 0,
                decode_ms: 0,
                engine: engine.name(),
                language: None,
            };
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            let r = normalize(&it.transcript);
            let e = edit_distance(&r, &normalize(&tr.text));
            errs += e;
            words += r.len();
            if std::env::var_os("VERBOSE").is_some() {
                println!("  {:32} err {e}/{}  {:?}", it.path, r.len(), tr.text);
            }
        }
        let total: f64 = times.iter().sum();
        let med = median(&mut times);
        let mut ok_digits = 0;
        for it in &digits {
            let tr = pool.transcribe_blocking(it.pcm16.clone())?;
            ok_digits += usize::from(spoken_digits(&tr.text) == it.transcript);
        }
        let (mut ok_strings, mut dtimes) = (0, Vec::new());
        for it in &strings {
            let t = Instant::now();
            let tr = pool.transcribe_blocking(it.pcm16.clone())?;
            dtimes.push(t.elapsed().as_secs_f64() * 1000.0);
            let got = spoken_digits(&tr.text);
            ok_strings += usize::from(got == it.transcript);
            if std::env::var_os("VERBOSE").is_some() {
                println!(
                    "  {:32} want {} got {got} {:?}",
                    it.path, it.transcript, tr.text
                );
            }
        }
        println!(
            "{:9} WER {:5.1}% ({errs}/{words} words) decode {:6.0} ms total, {:4.0} ms median | digits {ok_digits}/{} | 4-digit strings {ok_strings}/{} ({:.0} ms median)",
            engine.name(),
            100.0 * errs as f64 / words.max(1) as f64,
            total,
            med,
            digits.len(),
            strings.len(),
            median(&mut dtimes)
        );
    }
    // The server's digits lane as configured (engine and prompt).
    if cfg.asr.separate_digits_engine().is_some() {
        let pool = AsrPool::start(&cfg.server.models_dir, &cfg.asr)?;
        let lane = attendant::asr::Purpose::Digits;
        let ok = |set: &[Item]| -> anyhow::Result<usize> {
            let mut ok = 0;
            for it in set {
                let tr = pool.transcribe_blocking_for(lane, it.pcm16.clone())?;
                ok += usize::from(spoken_digits(&tr.text) == it.transcript);
            }
            Ok(ok)
        };
        println!(
            "digits lane ({}, prompt {:?}): digits {}/{} | 4-digit strings {}/{}",
            pool.engine_for(lane).name(),
            cfg.asr.digits_prompt,
            ok(&digits)?,
            digits.len(),
            ok(&strings)?,
            strings.len()
        );
    }
    Ok(())
}

/// The recording whole, or cut in two at the quietest 100 ms between 40 %
/// and 60 % of it when longer than 28 s.
fn halves(x: &[f32]) -> Vec<Vec<f32>> {
    if x.len() <= 16000 * 28 {
        return vec![x.to_vec()];
    }
    let w = 1600;
    let (lo, hi) = (x.len() * 2 / 5, x.len() * 3 / 5);
    let cut = (lo..hi - w)
        .step_by(160)
        .min_by(|&a, &b| {
            let e = |i: usize| x[i..i + w].iter().map(|v| v * v).sum::<f32>();
            e(a).total_cmp(&e(b))
        })
        .unwrap_or(x.len() / 2)
        + w / 2;
    vec![x[..cut].to_vec(), x[cut..].to_vec()]
}

type Sets = (Vec<Item>, Vec<Item>, Vec<Item>);

fn load(shared: &Path) -> anyhow::Result<Sets> {
    let manifest = std::fs::read_to_string(shared.join("manifest.jsonl"))?;
    let (mut sentences, mut digits) = (Vec::new(), Vec::new());
    let mut by_speaker: std::collections::BTreeMap<String, Vec<(String, Vec<f32>)>> =
        Default::default();
    for (i, line) in manifest.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let path = v["path"].as_str().unwrap_or_default().to_string();
        if path.ends_with(".flac") {
            continue;
        }
        let transcript = v["transcript"].as_str().unwrap_or_default().to_string();
        let fsdd = path.starts_with("fsdd/");
        if fsdd && i % 20 != 0 {
            continue;
        }
        let (pcm, rate) = read_wav(&shared.join(&path))?;
        if fsdd {
            let speaker = v["speaker"].as_str().unwrap_or_default().to_string();
            by_speaker
                .entry(speaker)
                .or_default()
                .push((transcript.clone(), pcm.clone()));
            let d = spoken_digits(&transcript);
            digits.push(Item {
                path,
                transcript: d,
                pcm16: phone_path(&pcm, rate)?,
            });
        } else {
            sentences.push(Item {
                path,
                transcript,
                pcm16: phone_path(&pcm, rate)?,
            });
        }
    }
    // Four digits of one speaker in a row, 150 ms apart, 0.3 s lead-in.
    let mut strings = Vec::new();
    let mut rng = fastrand::Rng::with_seed(7);
    for (speaker, items) in &by_speaker {
        for k in 0..(50 / by_speaker.len().max(1)) {
            let mut pcm = vec![0.0f32; 2400];
            let mut want = String::new();
            for _ in 0..4 {
                let (t, a) = &items[rng.usize(..items.len())];
                want.push_str(&spoken_digits(t));
                pcm.extend_from_slice(a);
                pcm.extend(std::iter::repeat_n(0.0, 1200));
            }
            strings.push(Item {
                path: format!("{speaker}#{k}"),
                transcript: want,
                pcm16: phone_path(&pcm, 8000)?,
            });
        }
    }
    Ok((sentences, digits, strings))
}
