//! Browser calls: a WebRTC caller (the same str0m session on the calling
//! side, over real UDP on loopback) calls a real server with the real
//! models, speaks, presses a key, and hears the bot; headless Chromium does
//! the same through the caller page.

use crate::common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use attendant::client::{audio, webrtc, CallReport, Step};
use attendant::media::resample::resample;
use common::*;

fn call(http: SocketAddr, steps: Vec<Step>) -> CallReport {
    rt().block_on(webrtc::run_call(webrtc_line(http, steps, 2000, 60)))
        .expect("WebRTC call")
}

/// The first stretch of audible audio (the greeting), as 16-bit PCM.
fn first_spurt(pcm: &[i16]) -> &[i16] {
    let loud = |c: &[i16]| {
        let e: f64 = c.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / c.len() as f64;
        e.sqrt() > 300.0
    };
    let frames: Vec<&[i16]> = pcm.chunks(160).collect();
    let start = frames
        .iter()
        .position(|c| loud(c))
        .expect("something audible");
    let mut end = start;
    let mut quiet = 0;
    for (i, c) in frames.iter().enumerate().skip(start) {
        if loud(c) {
            end = i;
            quiet = 0;
        } else {
            quiet += 1;
            if quiet > 40 {
                break;
            }
        }
    }
    &pcm[start * 160..((end + 1) * 160).min(pcm.len())]
}

#[test]
fn a_webrtc_caller_hears_the_greeting_asks_a_question_and_keys_a_digit() {
    let http = server();
    let question = audio::read_wav_8k(&fixture("faq_hours.wav")).unwrap();
    let report = call(http, vec![Step::Say(question), Step::Dtmf("1".into())]);
    let v2v: Vec<u64> = report
        .replies
        .iter()
        .filter_map(|r| r.voice_to_voice_ms)
        .collect();
    eprintln!(
        "WebRTC: connect {:?} ms, greeting {:?} ms, voice-to-voice {:?} ms",
        report.connect_ms, report.first_audio_ms, v2v
    );
    let connect = report.connect_ms.expect("ICE and DTLS came up");
    assert!(connect < 2000, "ICE+DTLS took {connect} ms");
    assert!(
        !report.call_sid.is_empty(),
        "the page message names the call"
    );
    let id = report.call_sid.clone();
    let rec = ended_record(http, &id);
    assert_eq!(rec.channel, "webrtc");
    assert_eq!(rec.outcome, "caller_hung_up", "{rec:?}");
    let hours = rec
        .turns
        .iter()
        .find(|t| t.caller_text.to_lowercase().contains("opening hours"))
        .unwrap_or_else(|| panic!("question not heard: {:?}", rec.turns));
    assert_eq!(hours.source, "kb:opening_hours");
    assert!(
        rec.turns.iter().any(|t| t.dtmf.as_deref() == Some("1")),
        "the key reached the dialogue once: {:?}",
        rec.turns.iter().map(|t| &t.dtmf).collect::<Vec<_>>()
    );
    // What went over Opus is what the dialogue said.
    let greeting = transcribe(first_spurt(&report.bot_audio)).to_lowercase();
    assert!(
        words_found(&rec.greeting, &greeting) >= 0.6,
        "greeting heard as {greeting:?}, said {:?}",
        rec.greeting
    );
    assert_eq!(v2v.len(), 1, "the question was answered: {v2v:?}");
    assert!(v2v[0] < 3000, "{v2v:?}");
    // The page's live transcript: both sides' words.
    let said: Vec<serde_json::Value> = report
        .page_messages
        .iter()
        .filter_map(|t| serde_json::from_str(t).ok())
        .filter(|v: &serde_json::Value| v["type"] == "said")
        .collect();
    assert!(said.iter().any(|v| v["who"] == "bot"));
    assert!(said.iter().any(|v| v["who"] == "caller"
        && v["text"]
            .as_str()
            .unwrap_or("")
            .to_lowercase()
            .contains("hours")));
}

#[test]
fn speech_over_the_bot_stops_it_on_webrtc_too() {
    let http = server();
    // Real speech 1.5 s into the greeting.
    let speech = audio::read_wav_8k(&fixture("interrupt.wav")).unwrap();
    let report = call(
        http,
        vec![Step::Interrupt {
            audio: speech,
            after_ms: 1500,
        }],
    );
    let rec = ended_record(http, &report.call_sid);
    assert!(rec.barge_ins >= 1, "{rec:?}");
    let stop = report
        .barge_ins
        .first()
        .and_then(|b| b.stop_ms)
        .expect("the bot went quiet after the interruption");
    eprintln!("WebRTC barge-in: bot audio stopped {stop} ms after onset");
    assert!(stop < 1500, "the bot talked on for {stop} ms");
    assert!(
        rec.turns
            .iter()
            .any(|t| t.caller_text.to_lowercase().contains("question")),
        "the interruption was understood: {:?}",
        rec.turns
    );
}

#[test]
fn bad_offers_get_4xx_and_the_page_is_served_without_a_login() {
    let http = server();
    let page = ureq::get(&format!("http://{http}/")).call().unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.into_string().unwrap().contains("/rtc.js"));
    let js = ureq::get(&format!("http://{http}/rtc.js")).call().unwrap();
    assert!(js.into_string().unwrap().contains("RTCPeerConnection"));
    let post = |ct: &str, body: &str| match ureq::post(&format!("http://{http}/webrtc/offer"))
        .set("content-type", ct)
        .send_string(body)
    {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(c, _)) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(post("application/json", "{}"), 415);
    assert_eq!(post("application/sdp", "not sdp"), 400);
    let body = match ureq::post(&format!("http://{http}/webrtc/offer"))
        .set("content-type", "application/sdp")
        .send_string("v=0\r\nnonsense")
    {
        Err(ureq::Error::Status(400, r)) => r.into_string().unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        body, "malformed SDP offer\n",
        "no parser internals in the answer"
    );
    assert_eq!(post("application/sdp", &"a=x\r\n".repeat(3_500)), 413);
    // WHIP hang-up: the answer's Location ends the call, once.
    let (_caller, offer) = attendant::transport::webrtc::Session::offer(
        &["127.0.0.1:9".parse().unwrap()],
        Instant::now(),
    )
    .unwrap();
    let created = ureq::post(&format!("http://{http}/webrtc/offer"))
        .set("content-type", "application/sdp")
        .send_string(&offer)
        .unwrap();
    assert_eq!(created.status(), 201);
    let location = created.header("location").unwrap().to_string();
    assert!(location.starts_with("/webrtc/calls/webrtc-"), "{location}");
    let delete = || match ureq::delete(&format!("http://{http}{location}")).call() {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(c, _)) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(delete(), 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    while delete() != 404 {
        assert!(Instant::now() < deadline, "the call did not end");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The data routes stay closed.
    assert!(matches!(
        ureq::get(&format!("http://{http}/calls")).call(),
        Err(ureq::Error::Status(401, _))
    ));
}

/// The caller page in Debian's Chromium (driven by playwright-core from
/// npm, `web/tests`), its microphone a WAV: 14 s of quiet (the whole
/// greeting plays, about 11 s with its Spanish menu offer, so the question
/// does not interrupt it), the question, then quiet.
#[test]
fn chromium_calls_from_the_caller_page_and_hears_the_answer() {
    let http = server();
    let out = repo().join("target/browser");
    std::fs::create_dir_all(&out).unwrap();
    let q8 = audio::read_wav_8k(&fixture("faq_hours.wav")).unwrap();
    let q16 = resample(&q8, 8000, 16000).unwrap();
    let mut mic = vec![0f32; 16000 * 14];
    mic.extend(&q16);
    mic.extend(vec![0f32; 16000 * 30]);
    let mic_path = out.join("mic.wav");
    write_wav_16k(&mic_path, &mic);
    let prefix = out.join("caller-page");
    let run = std::process::Command::new("node")
        .arg(repo().join("web/tests/call.mjs"))
        .arg(format!("http://{http}/"))
        .arg(&mic_path)
        .arg(&prefix)
        .output()
        .expect("node (scripts/setup.sh installs it with Chromium and playwright-core)");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "browser run failed:\n{stderr}");
    let page: serde_json::Value =
        serde_json::from_slice(run.stdout.trim_ascii()).expect("page state");
    let id = page["callId"].as_str().expect("call id on the page");
    let rec = ended_record(http, id);
    assert_eq!(rec.channel, "webrtc");
    let hours = rec
        .turns
        .iter()
        .find(|t| t.caller_text.to_lowercase().contains("hours"))
        .unwrap_or_else(|| panic!("question not heard: {:?}", rec.turns));
    assert_eq!(hours.source, "kb:opening_hours");
    // The page showed both sides, and played what the dialogue said.
    let lines = page["lines"].as_array().unwrap();
    assert!(lines.iter().any(|l| l["who"] == "caller"
        && l["text"]
            .as_str()
            .unwrap_or("")
            .to_lowercase()
            .contains("hours")));
    let heard8 = read_wav_pcm8k(&prefix.with_extension("wav"));
    let greeting = transcribe(first_spurt(&heard8)).to_lowercase();
    eprintln!("Chromium heard the greeting as {greeting:?}");
    assert!(
        words_found(&rec.greeting, &greeting) >= 0.6,
        "greeting heard as {greeting:?}, said {:?}",
        rec.greeting
    );
}
