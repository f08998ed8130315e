//! `attendant loadtest` against real servers: sane, non-empty measurements,
//! reply checks, and a deliberately slowed server showing up as slower.

use crate::common;

use std::sync::Arc;

use attendant::asr::AsrPool;
use attendant::loadtest::{self, report, RunOptions, Scenario, Transport};
use common::*;
use serde_json::Value;

fn options(addr: std::net::SocketAddr, calls: usize, concurrency: usize) -> RunOptions {
    RunOptions {
        url: ws_url(addr),
        transport: Transport::Twilio,
        sip: None,
        signing: None,
        api_token: Some(API_TOKEN.into()),
        calls,
        concurrency,
        ramp_per_s: 0.0,
        duration_s: None,
        seed: 3,
        max_call_s: 90,
    }
}

/// Each call in a line or two, for a failed assertion: its verdict, the
/// greeting and each reply as heard (the audio itself would drown the log).
fn outline(calls: &[loadtest::CallResult]) -> String {
    let mut o = String::new();
    for c in calls {
        o += &format!(
            "#{} {} [{}] ok={} failure={:?} answered={:?}ms greeting={:?}\n    server: {:?}\n    replies began {:?} ms, steps ended {:?} ms\n",
            c.index,
            c.caller,
            c.call_sid,
            c.ok,
            c.failure,
            c.time_to_answer_ms,
            c.greeting_heard,
            c.server,
            c.reply_starts_ms,
            c.step_ends_ms
        );
        for t in &c.turns {
            o += &format!(
                "    step {} {} at {} ms v2v={:?} heard={:?} correct={:?}\n",
                t.step, t.kind, t.at_ms, t.voice_to_voice_ms, t.heard, t.correct
            );
        }
    }
    o
}

/// One caller asking the opening hours, for like-for-like comparisons.
fn hours_only() -> Scenario {
    let yaml = "name: hours\ncallers:\n  - name: opening hours\n    greeting: { any: [northwind, bank] }\n    steps:\n      - say: faq_hours.wav\n        expect: { any: [saturday, open, seven] }\n";
    Scenario::parse(yaml, "inline", &repo().join("audio-fixtures")).expect("scenario")
}

#[test]
fn loadtest_measures_a_real_server_and_checks_replies() {
    let addr = server();
    let scenario = Scenario::load(&repo().join("loadtest/bank.yaml")).expect("bank scenario");
    let progress = Arc::new(loadtest::Progress::default());
    let mut result = rt().block_on(loadtest::run(
        &scenario,
        &options(addr, 4, 2),
        progress.clone(),
    ));
    let cfg = config(&[]);
    let asr = AsrPool::start(&cfg.server.models_dir, &cfg.asr).expect("ASR");
    loadtest::check_replies(&mut result, &scenario, &asr).expect("checks");
    let rep = report::Report::new(vec![result], None);
    println!("{}", report::console(&rep));
    let s = &rep.summary;
    assert_eq!(s.calls, 4);
    assert_eq!(
        progress.finished.load(std::sync::atomic::Ordering::Relaxed),
        4
    );
    assert_eq!(s.failed, 0, "{}", outline(&rep.runs[0].calls));
    let answer = s.time_to_answer_ms.as_ref().expect("time to answer");
    assert!(answer.p50 > 0 && answer.max < 10_000, "{answer:?}");
    let v2v = s.voice_to_voice_ms.as_ref().expect("voice-to-voice");
    assert!(v2v.n >= 1 && v2v.p50 > 100 && v2v.max < 15_000, "{v2v:?}");
    // Every spoken turn got its latency (key presses have none).
    for t in rep.runs[0].calls.iter().flat_map(|c| &c.turns) {
        assert_eq!(t.kind == "dtmf", t.voice_to_voice_ms.is_none(), "{t:?}");
    }
    assert!(s.pacing.frames > 100, "{:?}", s.pacing);
    assert!(
        s.pacing.jitter_ms.is_finite() && s.pacing.jitter_ms < 20.0,
        "{:?}",
        s.pacing
    );
    // Every reply with an expectation was transcribed and judged.
    let expected = rep.runs[0]
        .calls
        .iter()
        .flat_map(|c| &c.turns)
        .filter(|t| t.expect.is_some())
        .count();
    assert!(expected >= 1 && s.checked >= expected, "{s:?}");
    assert!(
        s.correct * 10 >= s.checked * 7,
        "most replies heard as expected:\n{}",
        outline(&rep.runs[0].calls)
    );
    // Every turn knows how many calls were in progress.
    for c in &rep.runs[0].calls {
        for t in &c.turns {
            assert!((1..=2).contains(&t.concurrency), "{t:?}");
        }
    }
    // The JSON report round-trips; the HTML has its four plots.
    let json = serde_json::to_string(&rep).unwrap();
    let back: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(back["summary"]["calls"], 4);
    assert_eq!(report::html(&rep).matches("<svg").count(), 4);
}

#[test]
fn a_slowed_server_shows_up_as_slower() {
    let fast = server();
    let slow = start_server(config(&[("ATTENDANT__SERVER__SLOW_REPLY_MS", "700")]));
    let scenario = hours_only();
    let p50 = |addr| {
        let r = rt().block_on(loadtest::run(
            &scenario,
            &options(addr, 2, 1),
            Arc::new(loadtest::Progress::default()),
        ));
        let s = report::summarize(&r);
        assert_eq!(s.failed, 0, "{}", outline(&r.calls));
        s.voice_to_voice_ms.expect("latency").p50
    };
    let (f, s) = (p50(fast), p50(slow));
    eprintln!("voice-to-voice p50: normal {f} ms, slowed by 700 ms: {s} ms");
    assert!(s >= f + 400, "normal {f} ms, slowed {s} ms");
}

#[test]
fn the_cli_writes_json_and_html_reports() {
    let addr = server();
    let dir = tempfile::tempdir().unwrap();
    let (json, html) = (dir.path().join("r.json"), dir.path().join("r.html"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_attendant"))
        .args(["loadtest", "--scenario"])
        .arg(repo().join("loadtest/bank.yaml"))
        .args([
            "--url",
            &ws_url(addr),
            "--calls",
            "2",
            "--concurrency",
            "2",
            "--no-check",
        ])
        .arg("--json")
        .arg(&json)
        .arg("--html")
        .arg(&html)
        .env("LD_LIBRARY_PATH", repo().join("models/lib"))
        .output()
        .expect("run attendant loadtest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("voice-to-voice"), "{stdout}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["summary"]["calls"], 2);
    assert_eq!(v["runs"][0]["calls"].as_array().unwrap().len(), 2);
    let page = std::fs::read_to_string(&html).unwrap();
    assert_eq!(page.matches("<svg").count(), 4);
}

/// Runs `opts` over the bank scenario, checks the replies, and returns the
/// report after the checks every transport must pass: all calls answered,
/// most replies heard as expected, the report naming `over`.
fn bank_run_over(opts: &RunOptions, over: &str) -> report::Report {
    let scenario = Scenario::load(&repo().join("loadtest/bank.yaml")).expect("bank scenario");
    let mut result = rt().block_on(loadtest::run(
        &scenario,
        opts,
        Arc::new(loadtest::Progress::default()),
    ));
    let cfg = config(&[]);
    let asr = AsrPool::start(&cfg.server.models_dir, &cfg.asr).expect("ASR");
    loadtest::check_replies(&mut result, &scenario, &asr).expect("checks");
    let rep = report::Report::new(vec![result], None);
    let text = report::console(&rep);
    println!("{text}");
    assert!(text.contains(over), "{text}");
    let s = &rep.summary;
    assert_eq!(s.calls, opts.calls);
    assert_eq!(s.failed, 0, "{}", outline(&rep.runs[0].calls));
    let v2v = s.voice_to_voice_ms.as_ref().expect("voice-to-voice");
    assert!(v2v.n >= 1 && v2v.p50 > 100 && v2v.max < 15_000, "{v2v:?}");
    assert!(
        s.correct * 10 >= s.checked * 7 && s.checked >= 1,
        "most replies heard as expected:\n{}",
        outline(&rep.runs[0].calls)
    );
    rep
}

/// The Spanish callers' scenario (identified by their first words, by their
/// record, or by the menu's key): every call answered, and the replies,
/// transcribed in Spanish, carry the Spanish words expected.
#[test]
fn spanish_callers_load_test_with_replies_checked_in_spanish() {
    let addr = server();
    let mut scenario =
        Scenario::load(&repo().join("loadtest/bank_es.yaml")).expect("Spanish scenario");
    assert_eq!(scenario.language, attendant::nlu::lang::Lang::Es);
    // The opening-hours caller is served right (its answer in Spanish),
    // but this test server's espeak-ng voice reads that 12 s answer in a
    // way Whisper base hears back as "más más más…", so it cannot be
    // checked here; with the shipped Kokoro voice it is (docs/languages.md).
    scenario.callers.retain(|c| c.name != "horario");
    let mut opts = options(addr, 4, 2);
    opts.seed = 5;
    let mut result = rt().block_on(loadtest::run(
        &scenario,
        &opts,
        Arc::new(loadtest::Progress::default()),
    ));
    let cfg = config(&[]);
    let asr = loadtest::checker(&cfg.server.models_dir, &cfg.asr, &scenario).expect("ASR");
    loadtest::check_replies(&mut result, &scenario, &asr).expect("checks");
    let rep = report::Report::new(vec![result], None);
    println!("{}", report::console(&rep));
    for c in &rep.runs[0].calls {
        let heard: Vec<_> = c.turns.iter().map(|t| (&t.heard, t.correct)).collect();
        eprintln!("{}: {:?} / {heard:?}", c.caller, c.greeting_heard);
    }
    let s = &rep.summary;
    assert_eq!(s.failed, 0, "{}", outline(&rep.runs[0].calls));
    // Test servers speak Spanish with espeak-ng (tests/common), which
    // comes back from Whisper with about 40 % of its words, so a check
    // passes on any one of a few expected words. (With the shipped Kokoro
    // voice 7 of 7 came back right when run alone; beside the rest of the
    // suite on 2 cores its one worker fell 15 s behind. The Spanish
    // caller's test in asr.rs runs it.)
    assert!(
        s.checked >= 3 && s.correct * 4 >= s.checked * 3,
        "replies heard in Spanish: {} of {}",
        s.correct,
        s.checked
    );
}

/// The same scenario over WebRTC: every call answered, replies checked by
/// what was heard over Opus, the report names the transport.
#[test]
fn loadtest_over_webrtc_measures_and_checks_like_twilio() {
    let addr = server();
    let opts = RunOptions {
        url: format!("http://{addr}"),
        transport: Transport::Webrtc,
        ..options(addr, 4, 2)
    };
    let rep = bank_run_over(&opts, "over WebRTC");
    for c in &rep.runs[0].calls {
        assert!(c.call_sid.starts_with("webrtc-"), "{c:?}");
    }
}

/// The same scenario as a SIP trunk's callers (our SipCore placing the
/// calls, G.711 RTP, RFC 4733 keys) against a server with SIP on: every call
/// answered, replies checked by what came back over RTP.
#[test]
fn loadtest_over_sip_measures_and_checks_like_twilio() {
    let dir = tempfile::tempdir().unwrap().keep();
    let sip_cfg = dir.join("sip.toml");
    std::fs::write(
        &sip_cfg,
        "[listen]\nudp = [\"127.0.0.1:0\"]\n[media]\nrtp_ports = [0, 0]\n\
         [[trunks]]\nname = \"load\"\nsources = [\"127.0.0.1/32\"]\n\
         [[numbers]]\nnumber = \"*\"\nagent = \"\"\n",
    )
    .unwrap();
    let addr = start_server(config(&[
        ("ATTENDANT__SIP__ENABLED", "true"),
        (
            "ATTENDANT__SIP__CONFIG",
            &format!("\"{}\"", sip_cfg.display()),
        ),
    ]));
    let opts = RunOptions {
        url: format!("http://{addr}"),
        transport: Transport::Sip,
        ..options(addr, 4, 2)
    };
    let rep = bank_run_over(&opts, "over SIP");
    // The server's records are SIP calls, under the Call-IDs we sent, and
    // it measured the turns too.
    for c in &rep.runs[0].calls {
        let rec: Value = api_get(&format!("http://{addr}/calls/{}", c.call_sid))
            .call()
            .expect("the server's record")
            .into_json()
            .unwrap();
        assert_eq!(rec["channel"], "sip", "{}", rec["channel"]);
        let heard: Vec<Option<u64>> = c.turns.iter().map(|t| t.voice_to_voice_ms).collect();
        eprintln!(
            "{}: caller heard replies after {heard:?} ms; the server measured {:?} ms ({:?})",
            c.caller, c.server.voice_to_voice_ms, c.server.end_reasons
        );
    }
    assert!(
        rep.runs[0]
            .calls
            .iter()
            .any(|c| !c.server.voice_to_voice_ms.is_empty()),
        "the server timed the spoken turns too"
    );
}
