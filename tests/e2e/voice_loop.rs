//! End-to-end calls against a real server with real models: Twilio's side is
//! played by `attendant::client`, the bot's audio is transcribed back.

use crate::common;

use attendant::asr::AsrPool;
use attendant::client::{self, audio, CallOptions, Script};
use attendant::eval::wer;
use attendant::media::resample::resample;
use common::*;

fn options(url: String, script: Script) -> CallOptions {
    CallOptions {
        url,
        http: String::new(),
        from: "+15555550123".into(),
        script,
        linger_ms: 1500,
        max_secs: 120,
        dtmf: vec![],
        signing: None,
        api_token: Some(API_TOKEN.into()),
    }
}

/// Transcribes a stretch of the bot's recorded 8 kHz audio.
fn transcribe_bot(pcm: &[i16], from_ms: u64, to_ms: u64) -> String {
    let cfg = config(&[]);
    let asr = AsrPool::start(&cfg.server.models_dir, &cfg.asr).expect("ASR");
    let a = (from_ms * 8) as usize;
    let b = ((to_ms * 8) as usize).min(pcm.len());
    let x: Vec<f32> = pcm[a.min(b)..b]
        .iter()
        .map(|&s| s as f32 / 32768.0)
        .collect();
    let x16 = resample(&x, 8000, 16000).unwrap();
    // Whisper's window is 30 s; the answers are much shorter.
    asr.transcribe_blocking(x16[..x16.len().min(16000 * 28)].to_vec())
        .unwrap()
        .text
}

#[test]
fn replayed_twilio_session_is_transcribed_within_15_percent_wer() {
    let addr = server();
    let shared = shared();
    let manifest = std::fs::read_to_string(shared.join("speech/manifest.jsonl")).unwrap();
    let reference = manifest
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["path"] == "osr_8k/OSR_us_000_0034_8k.wav")
        .expect("OSR entry")["transcript"]
        .as_str()
        .unwrap()
        .to_string();
    // Two callers at once: the ASR pool is contended, so a turn's transcript
    // often arrives after the caller has started the next sentence.
    let session = shared.join("twilio/derived_session_osr0034_inbound.jsonl");
    let reports = rt().block_on(async {
        let a = client::run_call(options(ws_url(addr), Script::Replay(session.clone())));
        let b = client::run_call(options(ws_url(addr), Script::Replay(session.clone())));
        let (a, b) = tokio::join!(a, b);
        vec![a.expect("call"), b.expect("call")]
    });
    for report in reports {
        check_osr(report, &reference);
    }
}

fn check_osr(report: client::CallReport, reference: &str) {
    let rec = report.record.expect("call record");
    let heard: Vec<String> = rec.turns.iter().map(|t| t.caller_text.clone()).collect();
    let hyp = heard.join(" ");
    let w = wer(reference, &hyp);
    eprintln!("OSR WER {:.1}%\nref: {reference}\nhyp: {hyp}", w * 100.0);
    assert!(w <= 0.15, "WER {:.1}% > 15%: {hyp:?}", w * 100.0);
    // The session's DTMF "1" reached the dialogue.
    assert!(
        rec.turns.iter().any(|t| t.dtmf.as_deref() == Some("1")),
        "DTMF turn missing"
    );
    // Every answered turn has its latency marks.
    for t in rec
        .turns
        .iter()
        .filter(|t| !t.caller_text.is_empty() && !t.interrupted)
    {
        if t.timings.voice_to_voice_ms.is_some() {
            assert!(t.timings.end_of_turn_ms.is_some() && t.timings.asr_final_ms.is_some());
        }
    }
}

#[test]
fn faq_question_gets_the_spoken_answer() {
    let addr = server();
    let turns = vec![audio::read_wav_8k(&fixture("faq_hours.wav")).unwrap()];
    let report = rt()
        .block_on(client::run_call(options(
            ws_url(addr),
            Script::Turns {
                turns,
                quiet_ms: 700,
            },
        )))
        .expect("call");
    let rec = report.record.clone().expect("record");
    assert_eq!(rec.turns.len(), 1, "{rec:?}");
    let t = &rec.turns[0];
    assert!(
        t.caller_text.to_lowercase().contains("opening hours"),
        "{:?}",
        t.caller_text
    );
    assert_eq!(t.source, "kb:opening_hours");
    assert!(t.timings.voice_to_voice_ms.is_some());
    // The caller side heard the greeting, then the answer; transcribe the answer.
    assert!(report.replies.len() >= 2, "{:?}", report.replies);
    let start = report.replies[1].at_ms;
    let heard = transcribe_bot(&report.bot_audio, start, start + 12_000).to_lowercase();
    eprintln!("bot said: {heard}");
    assert!(heard.contains("saturday"), "{heard}");
    assert!(heard.contains("nine") || heard.contains('9'), "{heard}");
    // And the greeting was real speech too.
    let greeting = transcribe_bot(
        &report.bot_audio,
        report.replies[0].at_ms,
        report.replies[0].at_ms + 6000,
    );
    // (The brand name is invented, so tiny.en may not spell it; check the rest.)
    let g = greeting.to_lowercase();
    assert!(
        g.contains("for calling") && g.contains("balance"),
        "{greeting}"
    );
}

#[test]
fn caller_speech_over_the_bot_interrupts_it_but_a_short_hm_does_not() {
    let addr = server();
    // Real speech 1.5 s into the greeting.
    let speech = audio::read_wav_8k(&fixture("interrupt.wav")).unwrap();
    let report = rt()
        .block_on(client::run_call(options(
            ws_url(addr),
            Script::BargeIn {
                audio: speech,
                after_ms: 1500,
            },
        )))
        .expect("call");
    assert!(report.clears >= 1, "no clear was sent: {report:?}");
    let rec = report.record.clone().expect("record");
    assert!(rec.barge_ins >= 1);
    let b = report
        .barge_ins
        .first()
        .expect("barge-in measured by the caller");
    eprintln!(
        "barge-in: bot audio stopped {:?} ms, clear {:?} ms after onset",
        b.stop_ms, b.clear_ms
    );
    assert!(b.stop_ms.is_some() && b.clear_ms.is_some());
    // The interrupted question was still understood and answered.
    assert!(
        rec.turns
            .iter()
            .any(|t| t.caller_text.to_lowercase().contains("question")),
        "{rec:?}"
    );

    // A 180 ms "hm" in the same place: no clear, the greeting plays on.
    let hm = audio::read_wav_8k(&fixture("short_hm.wav")).unwrap();
    let report = rt()
        .block_on(client::run_call(options(
            ws_url(addr),
            Script::BargeIn {
                audio: hm,
                after_ms: 1500,
            },
        )))
        .expect("call");
    assert_eq!(report.clears, 0, "a short hm interrupted the bot");
    let rec = report.record.expect("record");
    assert_eq!(rec.barge_ins, 0);
    assert!(
        rec.turns.is_empty(),
        "a backchannel became a turn: {:?}",
        rec.turns
    );
    // The whole greeting (about 9 s) reached the caller.
    let voiced_ms = report
        .bot_audio
        .chunks(160)
        .filter(|f| f.iter().any(|s| s.abs() > 300))
        .count()
        * 20;
    assert!(
        voiced_ms > 5000,
        "greeting cut short: {voiced_ms} ms of bot audio"
    );
}

#[test]
fn dtmf_reaches_the_dialogue_and_a_failed_twilio_transfer_returns_to_the_bot() {
    let addr = server();
    let mut opts = options(ws_url(addr), Script::Stream(vec![0.0; 8000 * 8]));
    // 0 on the keypad reaches a person from anywhere.
    opts.dtmf = vec![(2000, '0')];
    let report = rt().block_on(client::run_call(opts)).expect("call");
    let rec = report.record.expect("record");
    let t = rec
        .turns
        .iter()
        .find(|t| t.dtmf.is_some())
        .expect("a DTMF turn");
    assert_eq!(t.dtmf.as_deref(), Some("0"));
    assert_eq!(t.source, "transfer");
    // The test server has no Twilio account: the transfer cannot happen,
    // so the caller is taken back and told, not left on hold in silence.
    assert_eq!(rec.transfer_failures, 1, "{rec:?}");
    assert_ne!(rec.outcome, "transferred", "{rec:?}");
    let row: serde_json::Value = api_get(&format!(
        "http://{addr}/calls/{}/interaction",
        report.call_sid
    ))
    .call()
    .expect("the interaction row")
    .into_json()
    .unwrap();
    assert_ne!(row["outcome"], "transferred", "{row}");
    assert!(
        row["summary"].as_str().unwrap_or("").contains("failed"),
        "{row}"
    );
    // What the caller heard last: the apology, not silence.
    let total_ms = report.bot_audio.len() as u64 / 8;
    let spoken =
        transcribe_bot(&report.bot_audio, total_ms.saturating_sub(20_000), total_ms).to_lowercase();
    assert!(
        spoken.contains("couldn't reach") || spoken.contains("still here"),
        "the bot said: {spoken}"
    );
}

#[test]
fn health_metrics_and_call_records_are_served() {
    let addr = server();
    let r = ureq::get(&format!("http://{addr}/healthz")).call().unwrap();
    assert_eq!(r.status(), 200);
    let m = api_get(&format!("http://{addr}/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(m.contains("attendant_voice_to_voice_seconds"), "{m}");
    let e = api_get(&format!("http://{addr}/calls/CAnope"))
        .call()
        .unwrap_err();
    assert!(matches!(e, ureq::Error::Status(404, _)));
}

/// `attendant warm` fills the prompt cache for every language the agents
/// answer in and exits; run again, it reads everything back from disk and
/// synthesises nothing (a server started on that folder does the same).
#[test]
fn warm_fills_the_prompt_cache_once_for_every_language() {
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_attendant"))
            .arg("warm")
            .env(
                "ATTENDANT__SERVER__MODELS_DIR",
                format!("\"{}\"", repo().join("models").display()),
            )
            .env(
                "ATTENDANT__TTS__PROMPT_CACHE",
                format!("\"{}\"", dir.path().display()),
            )
            // The formant voice: the same path as Kokoro's, in a second.
            .env("ATTENDANT__TTS__VOICES__ES", "espeak-ng:es-419")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // "<what>: N sentences synthesised, M read from disk, K already cached"
        let counts = |what: &str| -> (usize, usize) {
            let line = text
                .lines()
                .find(|l| l.starts_with(what))
                .unwrap_or_else(|| panic!("no {what} line in {text}"));
            let n: Vec<usize> = line
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|w| w.parse().ok())
                .collect();
            (n[0], n[1])
        };
        (counts("main language"), counts("further languages"))
    };
    let ((main, _), (further, _)) = run();
    assert!(main >= 40, "the bank's English prompts: {main}");
    assert!(further >= 40, "and its Spanish ones: {further}");
    let files = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(files, main + further, "one file a sentence");
    let again = run();
    assert_eq!(again, ((0, main), (0, further)), "read back, none made");
}
