//! Voice-loop benchmark: `cargo bench --bench voice_loop`.
//!
//! Starts a real server with the real models, then calls it the way Twilio
//! would with real speech from `../shared/data/speech` (the OSR telephone
//! sentences, CMU commands, JFK, spoken digits), one caller at a time and then
//! 8 at once. Latency is measured as the caller hears it: the caller's last
//! voiced frame sent → the first frame of the bot's reply received. The bot's
//! fallback quotes each transcript back, so every reply is synthesised fresh
//! (no prompt cache). Also prints barge-in stop times and ASR/TTS real-time
//! factors. Figures, not assertions: nothing here fails on speed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use attendant::asr::AsrPool;
use attendant::client::{self, audio, CallOptions, CallReport, Script};
use attendant::config::Config;
use attendant::media::resample::resample;
use attendant::speech::TtsPool;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bench_config() -> (Config, tempfile::NamedTempFile) {
    let faq = tempfile::NamedTempFile::new().expect("temp file");
    let text = attendant::dialogue::faq::DEFAULT_FAQ
        .replace("max_misses = 2", "max_misses = 100000")
        .lines()
        .map(|l| {
            if l.starts_with("fallback = ") {
                "fallback = \"I heard: {transcript}\"".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(faq.path(), text).expect("write FAQ");
    let mut vars = vec![
        (
            "ATTENDANT__SERVER__MODELS_DIR".to_string(),
            format!("\"{}\"", repo().join("models").display()),
        ),
        // The FAQ bot with an echo fallback: every reply is synthesised fresh,
        // so the figures include TTS (an agent's cached prompts would hide it).
        ("ATTENDANT__DIALOGUE__AGENT".to_string(), "\"\"".to_string()),
        ("ATTENDANT__AUTH__ADMIN_TOKEN".to_string(), bench_token()),
        // Every benchmark caller has the same caller ID.
        (
            "ATTENDANT__SERVER__MAX_CALLS_PER_NUMBER".to_string(),
            "0".to_string(),
        ),
        (
            "ATTENDANT__DIALOGUE__FAQ".to_string(),
            format!("\"{}\"", faq.path().display()),
        ),
    ];
    vars.extend(std::env::vars().filter(|(k, _)| k.starts_with("ATTENDANT__")));
    (Config::load(None, vars).expect("config"), faq)
}

fn start_server(cfg: Config) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(attendant::server::serve(
            cfg,
            "127.0.0.1:0".parse().unwrap(),
            move |a| {
                let _ = tx.send(a);
            },
        ))
        .unwrap();
    });
    let addr = rx.recv().unwrap();
    while ureq::get(&format!("http://{addr}/healthz")).call().is_err() {
        std::thread::sleep(Duration::from_millis(200));
    }
    // Let the prompt cache fill so it does not compete with the first calls.
    std::thread::sleep(Duration::from_secs(10));
    addr
}

/// Splits a recording into utterances at pauses of ≥ 400 ms.
fn split_utterances(x: &[f32]) -> Vec<Vec<f32>> {
    let frame = 160;
    let loud: Vec<bool> = x
        .chunks(frame)
        .map(|c| (c.iter().map(|v| v * v).sum::<f32>() / c.len() as f32).sqrt() > 0.02)
        .collect();
    let mut out = Vec::new();
    let (mut start, mut last_loud, mut in_utt) = (0usize, 0usize, false);
    for (i, &l) in loud.iter().enumerate() {
        if l {
            if !in_utt {
                start = i.saturating_sub(10);
                in_utt = true;
            }
            last_loud = i;
        } else if in_utt && i - last_loud >= 20 {
            out.push(x[start * frame..((last_loud + 10) * frame).min(x.len())].to_vec());
            in_utt = false;
        }
    }
    if in_utt {
        out.push(x[start * frame..].to_vec());
    }
    out.into_iter().filter(|u| u.len() > 8000 / 2).collect()
}

fn utterances() -> Vec<Vec<f32>> {
    let speech = repo().join("../shared/data/speech");
    let mut u = split_utterances(
        &audio::read_wav_8k(&speech.join("osr_8k/OSR_us_000_0034_8k.wav")).unwrap(),
    );
    for f in [
        "cmu/cards/001.wav",
        "cmu/cards/002.wav",
        "cmu/cards/003.wav",
        "cmu/cards/004.wav",
        "cmu/cards/005.wav",
        "cmu/goforward.wav",
    ] {
        u.push(audio::read_wav_8k(&speech.join(f)).unwrap());
    }
    for f in [
        "fsdd/3_george_5.wav",
        "fsdd/7_jackson_12.wav",
        "fsdd/9_theo_20.wav",
    ] {
        if let Ok(a) = audio::read_wav_8k(&speech.join(f)) {
            u.push(a);
        }
    }
    u
}

/// The admin token of the benchmark's own server, fresh per run.
fn bench_token() -> String {
    static T: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    T.get_or_init(|| attendant::server::auth::new_secret("bench_"))
        .clone()
}

fn call(addr: SocketAddr, script: Script) -> CallOptions {
    CallOptions {
        url: format!("ws://{addr}/twilio/stream"),
        http: String::new(),
        from: "+15555550100".into(),
        script,
        linger_ms: 500,
        max_secs: 240,
        dtmf: vec![],
        signing: None,
        api_token: Some(bench_token()),
    }
}

/// Reports of the calls that worked, and how many failed.
async fn run_calls(addr: SocketAddr, scripts: Vec<Vec<Vec<f32>>>) -> (Vec<CallReport>, usize) {
    let mut handles = Vec::new();
    for (i, turns) in scripts.into_iter().enumerate() {
        let opts = call(
            addr,
            Script::Turns {
                turns,
                quiet_ms: 700,
            },
        );
        handles.push(tokio::spawn(async move {
            // Stagger starts a little, as real calls do.
            tokio::time::sleep(Duration::from_millis(150 * i as u64)).await;
            client::run_call(opts).await
        }));
    }
    let (mut out, mut failed) = (Vec::new(), 0);
    for h in handles {
        match h.await {
            Ok(Ok(r)) => out.push(r),
            Ok(Err(e)) => {
                failed += 1;
                eprintln!("call failed: {e}");
            }
            Err(e) => {
                failed += 1;
                eprintln!("call task failed: {e}");
            }
        }
    }
    (out, failed)
}

fn pct(v: &mut [u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    let idx = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[idx]
}

fn summarize(label: &str, reports: &[CallReport], failed: usize) {
    // Caller-side: replies after the greeting that follow caller speech.
    let mut caller: Vec<u64> = reports
        .iter()
        .flat_map(|r| r.replies.iter().skip(1).filter_map(|x| x.voice_to_voice_ms))
        .collect();
    let turns: Vec<&attendant::pipeline::TurnRecord> = reports
        .iter()
        .filter_map(|r| r.record.as_ref())
        .flat_map(|r| r.turns.iter())
        .collect();
    let mut server: Vec<u64> = turns
        .iter()
        .filter_map(|t| t.timings.voice_to_voice_ms)
        .collect();
    let mut eot: Vec<u64> = turns
        .iter()
        .filter_map(|t| t.timings.end_of_turn_ms)
        .collect();
    let mut asr: Vec<u64> = turns
        .iter()
        .filter_map(|t| t.timings.asr_final_ms)
        .collect();
    let mut tts: Vec<u64> = turns
        .iter()
        .filter_map(|t| t.timings.tts_first_audio_ms)
        .collect();
    let spec = turns.iter().filter(|t| t.timings.speculative_hit).count();
    let ended = |why: &str| turns.iter().filter(|t| t.timings.end_reason == why).count();
    let (smart, words, fallback) = (ended("smart_turn"), ended("transcript"), ended("silence"));
    let cut = turns.iter().filter(|t| t.timings.cut_early).count();
    let share = |n: usize| 100.0 * n as f64 / turns.len().max(1) as f64;
    println!(
        "{label}: {} calls ok, {failed} failed | {} turns | voice-to-voice (caller-measured) p50 {} ms p95 {} ms | server-measured p50 {} ms p95 {} ms",
        reports.len(),
        caller.len(),
        pct(&mut caller, 50.0),
        pct(&mut caller, 95.0),
        pct(&mut server, 50.0),
        pct(&mut server, 95.0)
    );
    println!(
        "{label}:   breakdown p50/p95: end-of-turn {}/{} ms, ASR final {}/{} ms, TTS first audio {}/{} ms; speculative ASR used {}/{}",
        pct(&mut eot, 50.0),
        pct(&mut eot, 95.0),
        pct(&mut asr, 50.0),
        pct(&mut asr, 95.0),
        pct(&mut tts, 50.0),
        pct(&mut tts, 95.0),
        spec,
        turns.len()
    );
    println!(
        "{label}:   turns ended by Smart Turn {smart} ({:.0}%), by the transcript {words} ({:.0}%), by the 1 s fallback {fallback} ({:.1}%); cut too early {cut} ({:.1}%)",
        share(smart),
        share(words),
        share(fallback),
        share(cut)
    );
}

fn main() {
    attendant::asr::configure_threads();
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let (cfg, _faq) = bench_config();
    let utts = utterances();
    let total_audio: f64 = utts.iter().map(|u| u.len() as f64 / 8000.0).sum();
    println!(
        "{} utterances of real speech, {:.1} s",
        utts.len(),
        total_audio
    );

    // ASR and TTS real-time factors, on an otherwise idle machine.
    {
        let asr = AsrPool::start(&cfg.server.models_dir, &cfg.asr).unwrap();
        asr.transcribe_blocking(vec![0.0; 16000]).unwrap();
        let (mut audio_s, mut busy_s) = (0.0, 0.0);
        for u in &utts {
            let x = resample(u, 8000, 16000).unwrap();
            let t = Instant::now();
            asr.transcribe_blocking(x).unwrap();
            busy_s += t.elapsed().as_secs_f64();
            audio_s += u.len() as f64 / 8000.0;
        }
        println!(
            "ASR {} ({} thread(s)): RTF {:.3} ({:.1} s audio in {:.1} s, {:.0} ms per utterance)",
            cfg.asr.engine.name(),
            cfg.asr.threads,
            busy_s / audio_s,
            audio_s,
            busy_s,
            busy_s * 1000.0 / utts.len() as f64
        );
        let tts = TtsPool::start(&cfg.server.models_dir, &cfg.tts).unwrap();
        let lines = [
            "We're open Monday to Friday from eight in the morning to eight in the evening.",
            "Our main office is at twelve Harbour Street, in the city centre.",
            "Standard delivery takes two to three working days and is free over fifty dollars.",
            "I heard: go forward ten meters.",
        ];
        let (mut audio_s, mut busy_s, mut first) = (0.0, 0.0, Vec::new());
        for l in lines {
            let t = Instant::now();
            let u = tts.synthesize_blocking(l).unwrap();
            let dt = t.elapsed().as_secs_f64();
            first.push((dt * 1000.0) as u64);
            busy_s += dt;
            audio_s += u.len() as f64 / 8000.0;
        }
        println!(
            "TTS Piper joe-medium ({} thread(s)): RTF {:.3} ({:.1} s audio in {:.2} s; per sentence {:?} ms)",
            cfg.tts.threads,
            busy_s / audio_s,
            audio_s,
            busy_s,
            first
        );
    }

    let addr = start_server(cfg);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // 1 call at a time: 22 turns over 4 calls.
    let mut scripts = Vec::new();
    let mut it = utts.iter().cycle();
    for n in [6, 6, 5, 5] {
        scripts.push(
            (0..n)
                .map(|_| it.next().unwrap().clone())
                .collect::<Vec<_>>(),
        );
    }
    let (mut reports, mut failed) = (Vec::new(), 0);
    for s in scripts {
        let (r, f) = rt.block_on(run_calls(addr, vec![s]));
        reports.extend(r);
        failed += f;
    }
    summarize("1 call", &reports, failed);
    let mut total_failed = failed;

    // 8 and then 16 concurrent calls, 3 turns each.
    for n in [8, 16] {
        let scripts: Vec<Vec<Vec<f32>>> = (0..n)
            .map(|i| {
                (0..3)
                    .map(|j| utts[(i * 3 + j) % utts.len()].clone())
                    .collect()
            })
            .collect();
        let (reports, failed) = rt.block_on(run_calls(addr, scripts));
        summarize(&format!("{n} calls"), &reports, failed);
        total_failed += failed;
    }

    // Barge-in: speech over the greeting, measured at the caller.
    let speech = audio::read_wav_8k(&repo().join("audio-fixtures/interrupt.wav")).unwrap();
    let mut stop = Vec::new();
    let mut clear = Vec::new();
    for i in 0..5 {
        let r = rt
            .block_on(client::run_call(call(
                addr,
                Script::BargeIn {
                    audio: speech.clone(),
                    after_ms: 1200 + 300 * i,
                },
            )))
            .unwrap();
        if let Some(b) = r.barge_ins.first() {
            stop.extend(b.stop_ms);
            clear.extend(b.clear_ms);
        }
    }
    println!(
        "barge-in ({} calls): caller onset → bot audio stops p50 {} ms (max {} ms); onset → clear p50 {} ms (max {} ms)",
        stop.len(),
        pct(&mut stop, 50.0),
        pct(&mut stop, 100.0),
        pct(&mut clear, 50.0),
        pct(&mut clear, 100.0)
    );
    if total_failed > 0 {
        eprintln!("{total_failed} call(s) failed: the figures above leave them out");
        std::process::exit(1);
    }
}
