//! The agent desk end to end, with the real models: a caller asks for a
//! person, waits on hold in the desk queue with their context card, an agent
//! takes the call over WebRTC, both talk (each side's recording is
//! transcribed), the agent hangs up, and the interaction and KPIs show the
//! human outcome. The caller is the WebRTC client here (any transport's
//! call goes through the same pipeline) and a sipp SIP caller with a
//! headless-Chromium agent in the browser test.

use crate::common;

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use attendant::client::{audio, webrtc, Step};
use attendant::media::resample::resample;
use attendant::pipeline::CallRecord;
use common::sipp::*;
use common::*;

/// The bank agent, sending callers who ask for a person to the desk.
fn desk_agent() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep().join("bank");
        common::copy_dir(&repo().join("agents/bank"), &dir);
        let toml = dir.join("agent.toml");
        let text = std::fs::read_to_string(&toml).unwrap();
        assert!(text.contains("default = \"queue:general\""));
        std::fs::write(
            &toml,
            text.replace("default = \"queue:general\"", "default = \"desk:general\""),
        )
        .unwrap();
        dir
    })
}

struct DeskServer {
    http: SocketAddr,
    sip: SocketAddr,
    dir: PathBuf,
}

const SIP_CONFIG: &str = r#"
[listen]
udp = ["127.0.0.1:0"]

[media]
rtp_ports = [0, 0]
codecs = ["pcmu"]

[[trunks]]
name = "sipp"
sources = ["127.0.0.1/32"]

[[numbers]]
number = "*"
agent = ""
"#;

/// Alice takes the general queue's callers at the desk.
const AGENT_USER: &str = "alice";
const AGENT_PASSWORD: &str = "correct horse battery staple";

fn desk_server() -> &'static DeskServer {
    static S: OnceLock<DeskServer> = OnceLock::new();
    S.get_or_init(|| {
        init_logs();
        let dir = tempfile::tempdir().unwrap().keep();
        let sip_cfg = dir.join("sip.toml");
        std::fs::write(&sip_cfg, SIP_CONFIG).unwrap();
        let url = scratch_store();
        rt().block_on(async {
            let store = attendant::store::Store::open(&url).await.unwrap();
            let hash = attendant::server::auth::hash_password(AGENT_PASSWORD).unwrap();
            store.put_user(AGENT_USER, "agent", &hash).await.unwrap();
        });
        let agent = format!("\"{}\"", desk_agent().display());
        let http = start_server(config(&[
            ("ATTENDANT__DIALOGUE__AGENT", &agent),
            ("ATTENDANT__STORE__URL", &format!("\"{url}\"")),
            ("ATTENDANT__DESK__QUEUES", "{ general = [\"alice\"] }"),
            // A reminder soon enough for a test to hear one.
            ("ATTENDANT__DESK__HOLD_REMINDER_S", "4"),
            ("ATTENDANT__SIP__ENABLED", "true"),
            (
                "ATTENDANT__SIP__CONFIG",
                &format!("\"{}\"", sip_cfg.display()),
            ),
        ]));
        let sip = sip_udp(http);
        DeskServer { http, sip, dir }
    })
}

fn speech(path: &Path) -> Vec<f32> {
    let (x, rate) = audio::read_wav(path).unwrap();
    if rate == 8000 {
        x
    } else {
        resample(&x, rate, 8000).unwrap()
    }
}

/// The agent heard the caller ask about opening hours; the caller heard the
/// agent's recording (`agent_rel` under the shared speech) after asking.
fn heard_both_ways(
    agent: &attendant::client::CallReport,
    caller: &attendant::client::CallReport,
    agent_rel: &str,
) {
    let heard_by_agent = transcribe(&agent.bot_audio).to_lowercase();
    assert!(
        words_found("What are your opening hours on Saturday?", &heard_by_agent) >= 0.6,
        "the agent heard: {heard_by_agent}"
    );
    let asked_end = *caller.step_ends.last().expect("the caller spoke") as usize * 8;
    let after = &caller.bot_audio[asked_end.min(caller.bot_audio.len())..];
    let heard_by_caller = transcribe(after).to_lowercase();
    let expected = manifest_transcript(agent_rel);
    assert!(
        words_found(&expected, &heard_by_caller) >= 0.6,
        "the caller heard: {heard_by_caller} (agent said: {expected})"
    );
}

/// The desk's live feed, read as a signed-in client would (SSE).
fn follow_feed(http: SocketAddr) -> mpsc::Receiver<serde_json::Value> {
    follow(api_get(&format!("http://{http}/desk/events")))
}

fn follow(req: ureq::Request) -> mpsc::Receiver<serde_json::Value> {
    let (tx, rx) = mpsc::channel();
    let r = req.call().expect("desk feed");
    assert_eq!(r.content_type(), "text/event-stream");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(r.into_reader()).lines() {
            let Ok(line) = line else { return };
            if let Some(data) = line.strip_prefix("data:") {
                if let Ok(mut v) = serde_json::from_str::<serde_json::Value>(data.trim()) {
                    // When this side heard of it.
                    v["_heard_unix_ms"] = attendant::store::now_ms().into();
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// What `/desk/state` on `http` shows now.
fn desk_state(http: SocketAddr) -> serde_json::Value {
    api_get(&format!("http://{http}/desk/state"))
        .call()
        .unwrap()
        .into_json()
        .unwrap()
}

/// The first caller from `channel` waiting at the desk, once one is.
fn waiting_call(http: SocketAddr, channel: &str, within: Duration) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let s = desk_state(http);
        let first = s["waiting"]
            .as_array()
            .and_then(|w| w.iter().find(|w| w["channel"] == channel));
        if let Some(w) = first {
            return w.clone();
        }
        assert!(Instant::now() < deadline, "nobody reached the desk: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_browser_caller_waits_at_the_desk_and_talks_to_the_agent_who_takes_the_call() {
    let http = desk_server().http;
    let feed = follow_feed(http);
    let question = speech(&fixture("faq_hours.wav"));
    let agent_rel = "cmu/cards/005.wav";
    let agent_says = speech(&shared().join("speech").join(agent_rel));

    // The caller presses 0 (a person, from anywhere), hears the bot hand
    // them over and the hold music; once the agent is on, asks their question.
    let caller = std::thread::spawn(move || {
        rt().block_on(webrtc::run_call(webrtc_line(
            http,
            vec![Step::Dtmf("0".into()), Step::Say(question)],
            1000,
            90,
        )))
        .expect("caller")
    });

    let w = waiting_call(http, "webrtc", Duration::from_secs(40));
    let id = w["call_id"].as_str().unwrap().to_string();
    assert_eq!(w["queue"], "general");
    assert_eq!(w["channel"], "webrtc");
    // The context card behind the queue entry.
    let card: serde_json::Value = api_get(&format!("http://{http}/calls/{id}/handoff"))
        .call()
        .expect("hand-off packet")
        .into_json()
        .unwrap();
    assert_eq!(card["target"], "desk:general", "{card}");
    assert!(!card["transcript"].as_array().unwrap().is_empty(), "{card}");
    // Let the hold music play a moment, as a queue would.
    std::thread::sleep(Duration::from_millis(1500));

    let agent = rt()
        .block_on(webrtc::run_agent(
            webrtc_line(http, vec![Step::Say(agent_says)], 1500, 60),
            &id,
        ))
        .expect("agent");
    let caller = caller.join().unwrap();
    assert!(agent.connect_ms.is_some(), "the agent's leg never came up");

    // Audio both ways: the agent heard the caller's question, the caller
    // heard the agent's answer after their question.
    heard_both_ways(&agent, &caller, agent_rel);

    // The agent hung up: the caller's call ended with them, recorded as a
    // human's call with its wait and talk times.
    let rec = ended_record(http, &id);
    assert_eq!(rec.outcome, "handled_by_agent", "{rec:?}");
    let h = rec.human.clone().expect("the desk part of the record");
    assert_eq!(h.queue, "general");
    assert_eq!(h.agent.as_deref(), Some("admin (configured)"));
    assert!(h.wait_ms >= 1500, "{h:?}");
    let take_ms = h.take_to_audio_ms.expect("two-way audio");
    assert!(
        take_ms < 3000,
        "take call → two-way audio took {take_ms} ms"
    );
    assert!(h.talk_ms.unwrap_or(0) >= 3000, "{h:?}");
    eprintln!(
        "desk: waited {} ms, take → two-way audio {take_ms} ms, talked {} ms",
        h.wait_ms,
        h.talk_ms.unwrap_or(0)
    );

    let row: serde_json::Value = api_get(&format!("http://{http}/calls/{id}/interaction"))
        .call()
        .expect("interaction")
        .into_json()
        .unwrap();
    assert_eq!(row["outcome"], "transferred", "{row}");
    assert_eq!(row["handled_by"], "human", "{row}");
    assert_eq!(row["human_agent"], "admin (configured)", "{row}");
    assert!(row["wait_ms"].as_i64().unwrap_or(0) >= 1500, "{row}");
    assert!(row["talk_ms"].as_i64().unwrap_or(0) >= 3000, "{row}");
    let k: serde_json::Value = api_get(&format!("http://{http}/kpis"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert!(k["desk_handled"].as_u64().unwrap_or(0) >= 1, "{k}");

    // The feed told the desk as it happened: the call, its live lines, the
    // caller waiting, the take, and the end.
    let mut kinds = Vec::new();
    while let Ok(e) = feed.recv_timeout(Duration::from_millis(500)) {
        if e["call_id"] == id.as_str() {
            kinds.push(e["type"].as_str().unwrap_or_default().to_string());
        }
    }
    for k in ["started", "line", "waiting", "taken", "ended"] {
        assert!(kinds.iter().any(|x| x == k), "no {k} event: {kinds:?}");
    }
}

#[test]
fn desk_routes_need_an_agent_and_a_taken_caller_cannot_be_taken_twice() {
    let http = desk_server().http;
    // The page is open (a sign-in form); its data is not.
    let page = ureq::get(&format!("http://{http}/desk"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(page.contains("agent desk"));
    for path in ["/desk/state", "/desk/events"] {
        let e = ureq::get(&format!("http://{http}{path}"))
            .call()
            .unwrap_err();
        assert!(matches!(e, ureq::Error::Status(401, _)), "{path}: {e:?}");
    }
    let e = ureq::post(&format!("http://{http}/desk/calls/nobody/return"))
        .call()
        .unwrap_err();
    assert!(matches!(e, ureq::Error::Status(401, _)), "{e:?}");
    // Nobody is waiting under this id: the take is refused with 409 after
    // the offer is read, and nothing is left behind.
    let (_, offer) = attendant::transport::webrtc::Session::offer(
        &["127.0.0.1:9".parse().unwrap()],
        Instant::now(),
    )
    .unwrap();
    let e = api_post(&format!("http://{http}/desk/calls/nobody/take"))
        .set("content-type", "application/sdp")
        .send_string(&offer)
        .unwrap_err();
    assert!(matches!(e, ureq::Error::Status(409, _)), "{e:?}");
    let e = api_post(&format!("http://{http}/desk/calls/nobody/return"))
        .call()
        .unwrap_err();
    assert!(matches!(e, ureq::Error::Status(403, _)), "{e:?}");
}

/// The test's SIP caller (sipp), its RTP captured: presses 0 for a person,
/// waits on hold, asks its question twice once the agent should be on, and
/// hangs up. Chromium plays the agent at the desk page.
#[test]
fn a_sip_caller_reaches_an_agent_in_chromium_at_the_desk() {
    let s = desk_server();
    let out = repo().join("target/browser");
    std::fs::create_dir_all(&out).unwrap();
    // The caller's question, as RTP sipp replays.
    let question = s.dir.join("question.pcap");
    speech_pcap(&fixture("faq_hours.wav"), 0, &question);
    let zero = shared().join("sipp/sipp_upstream/pcap/dtmf_2833_0.pcap");
    let cap = Capture::start();
    let body = [
        invite("PCMU", 0, cap.port),
        pause(3000),
        play(&zero),
        pause(14000),
        play(&question),
        pause(4000),
        play(&question),
        pause(4000),
        caller_bye(2),
    ]
    .concat()
    // A known customer (Alex Morgan in the demo data) calling.
    .replace("+15550100123", "+15555550101");
    let scenario = s.dir.join("desk_caller.xml");
    std::fs::write(&scenario, scenario_xml("desk_caller", &body)).unwrap();
    // The agent's microphone: a real recording, looped by Chromium.
    let agent_rel = "cmu/cards/005.wav";
    let (x, rate) = audio::read_wav(&shared().join("speech").join(agent_rel)).unwrap();
    let mut mic = resample(&x, rate, 16000).unwrap();
    mic.extend(vec![0f32; 16000]);
    let mic_path = out.join("agent-mic.wav");
    write_wav_16k(&mic_path, &mic);

    // Alice opens the desk first: callers wait only while someone is there.
    let prefix = out.join("desk");
    let http = s.http;
    let (mic, pre) = (mic_path.clone(), prefix.clone());
    let browser = std::thread::spawn(move || {
        std::process::Command::new("node")
            .arg(repo().join("web/tests/desk.mjs"))
            .arg(format!("http://{http}"))
            .args([AGENT_USER, AGENT_PASSWORD])
            .arg(&mic)
            .arg(&pre)
            .output()
            .expect("node (scripts/setup.sh installs it with Chromium and playwright-core)")
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = desk_state(http);
        if st["online"]
            .as_array()
            .is_some_and(|o| o.iter().any(|n| n == AGENT_USER))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alice never reached the desk: {st}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let sip = s.sip;
    let sipp = std::thread::spawn(move || {
        std::process::Command::new("sipp")
            .arg(sip.to_string())
            .args(["-sf", &scenario.display().to_string()])
            .args(["-s", "1000", "-m", "1", "-l", "1", "-t", "u1"])
            .args(["-i", "127.0.0.1", "-p", &peer_port().to_string()])
            .args(["-mp", &peer_port().to_string()])
            .args(["-timeout", "120s", "-timeout_error", "-nostdin"])
            .output()
            .expect("sipp is installed (Debian sip-tester)")
    });

    let w = waiting_call(s.http, "sip", Duration::from_secs(40));
    let waiting_seen = Instant::now();
    let id = w["call_id"].as_str().unwrap().to_string();
    let run = browser.join().unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    let sipp = sipp.join().unwrap();
    let packets = cap.finish();
    assert!(run.status.success(), "browser run failed:\n{stderr}");
    assert!(
        sipp.status.success(),
        "sipp failed:\n{}",
        String::from_utf8_lossy(&sipp.stdout)
    );
    let page: serde_json::Value =
        serde_json::from_slice(run.stdout.trim_ascii()).expect("page state");
    assert_eq!(page["callId"], id.as_str(), "{page}");
    assert_eq!(page["me"]["name"], AGENT_USER, "{page}");
    // The context card was on the queue: the reason and the queue.
    let card = page["card"].as_str().unwrap_or_default();
    assert!(
        card.contains("Alex Morgan") && card.contains("general") && card.contains("Take call"),
        "{card}"
    );

    // The agent heard the caller's question.
    let heard8 = read_wav_pcm8k(&prefix.with_extension("wav"));
    let by_agent = transcribe(&heard8).to_lowercase();
    assert!(
        words_found("What are your opening hours on Saturday?", &by_agent) >= 0.6,
        "the agent heard: {by_agent}"
    );

    // The caller heard the agent, over RTP, once the agent took the call.
    let rec = ended_record(s.http, &id);
    let h = rec.human.clone().expect("desk part of the record");
    assert_eq!(h.agent.as_deref(), Some(AGENT_USER));
    assert_eq!(rec.outcome, "handled_by_agent", "{rec:?}");
    // Hold started about when the call was seen waiting.
    let bridged = waiting_seen + Duration::from_millis(h.wait_ms + 300);
    let pcm: Vec<i16> = packets
        .iter()
        .filter(|(at, d)| *at >= bridged && !attendant::transport::rtp::is_rtcp(d))
        .filter_map(|(_, d)| attendant::transport::rtp::parse(d).ok())
        .flat_map(|p| {
            p.payload
                .iter()
                .map(|&b| attendant::media::mulaw::decode(b))
                .collect::<Vec<_>>()
        })
        .collect();
    let by_caller = transcribe(&pcm[..pcm.len().min(8000 * 25)]).to_lowercase();
    let expected = manifest_transcript(agent_rel);
    assert!(
        words_found(&expected, &by_caller) >= 0.5,
        "the caller heard: {by_caller} (agent said: {expected})"
    );
    let take_ms = h.take_to_audio_ms.expect("two-way audio");
    eprintln!(
        "desk (Chromium agent, SIP caller): waited {} ms, take → two-way audio {take_ms} ms \
         (page: clicked → talking {} ms), talked {} ms",
        h.wait_ms,
        page["takeToTalkingMs"],
        h.talk_ms.unwrap_or(0)
    );
    let row: serde_json::Value = api_get(&format!("http://{}/calls/{id}/interaction", s.http))
        .call()
        .expect("interaction")
        .into_json()
        .unwrap();
    assert_eq!(row["human_agent"], AGENT_USER, "{row}");
    assert_eq!(row["handled_by"], "human", "{row}");
}

/// The agent gives the caller back to the bot: the agent's leg ends, the
/// bot says so and the conversation goes on; the interaction stays the
/// bot's, with the agent's talk time on it.
#[test]
fn an_agent_returns_the_caller_to_the_bot() {
    let http = desk_server().http;
    // Someone is at the desk (the admin's feed), so callers may wait.
    let _feed = follow_feed(http);
    let question = speech(&fixture("faq_hours.wav"));
    let caller = std::thread::spawn(move || {
        rt().block_on(webrtc::run_call(webrtc_line(
            http,
            vec![Step::Dtmf("0".into()), Step::Say(question)],
            1500,
            90,
        )))
        .expect("caller")
    });
    let w = waiting_call(http, "webrtc", Duration::from_secs(40));
    let id = w["call_id"].as_str().unwrap().to_string();
    // On hold long enough for a reminder of the caller's place (every 4 s
    // here), which the take then cuts short if it is still playing.
    std::thread::sleep(Duration::from_millis(7000));
    // A silent agent: takes the call, listens, and is sent away by the return.
    let agent_id = id.clone();
    let agent = std::thread::spawn(move || {
        rt().block_on(webrtc::run_agent(
            webrtc_line(http, vec![], 60_000, 60),
            &agent_id,
        ))
        .expect("agent")
    });
    // Talking (two-way audio), then the caller's question reaches the agent.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rec: CallRecord = api_get(&format!("http://{http}/calls/{id}"))
            .call()
            .unwrap()
            .into_json()
            .unwrap();
        if rec
            .human
            .as_ref()
            .is_some_and(|h| h.take_to_audio_ms.is_some())
        {
            break;
        }
        assert!(Instant::now() < deadline, "the agent never connected");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(5));
    let r = api_post(&format!("http://{http}/desk/calls/{id}/return"))
        .call()
        .expect("return to the bot");
    assert_eq!(r.status(), 200);
    let agent = agent.join().unwrap();
    let caller = caller.join().unwrap();
    assert_eq!(
        agent.closed_by_server,
        Some(1000),
        "the agent's leg ended with the return"
    );
    let heard_by_agent = transcribe(&agent.bot_audio).to_lowercase();
    assert!(
        words_found("What are your opening hours on Saturday?", &heard_by_agent) >= 0.6,
        "the agent heard: {heard_by_agent}"
    );
    // On hold the caller was told their place in the queue.
    let keyed = caller.step_ends[0];
    let held: Vec<i16> = caller.replies[..caller.replies.len() - 1]
        .iter()
        .filter(|r| r.at_ms > keyed)
        .flat_map(|r| r.audio.iter().map(|&b| attendant::media::mulaw::decode(b)))
        .collect();
    let on_hold = transcribe(&held).to_lowercase();
    eprintln!("on hold the caller heard: {on_hold}");
    assert!(
        on_hold.contains("holding") || on_hold.contains("next in line"),
        "on hold the caller heard: {on_hold}"
    );
    // What the caller heard last: the bot again.
    let last = caller.replies.last().expect("the bot spoke");
    let pcm: Vec<i16> = last
        .audio
        .iter()
        .map(|&b| attendant::media::mulaw::decode(b))
        .collect();
    let back = transcribe(&pcm).to_lowercase();
    assert!(
        back.contains("back with") || back.contains("assistant"),
        "the caller heard: {back}"
    );
    let rec = ended_record(http, &id);
    let h = rec.human.clone().expect("desk part");
    assert!(h.returned, "{h:?}");
    assert_eq!(rec.outcome, "caller_hung_up", "back with the bot: {rec:?}");
    let row: serde_json::Value = api_get(&format!("http://{http}/calls/{id}/interaction"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(row["handled_by"], "bot", "{row}");
    assert_eq!(row["human_agent"], "admin (configured)", "{row}");
    assert!(row["talk_ms"].as_i64().unwrap_or(0) >= 4000, "{row}");
    assert!(
        row["summary"]
            .as_str()
            .unwrap_or("")
            .contains("returned the caller"),
        "{row}"
    );
}

/// Signs `user` in at `http`: their session cookie.
fn sign_in(http: SocketAddr, user: &str, password: &str) -> String {
    let r = ureq::post(&format!("http://{http}/auth/login"))
        .send_json(serde_json::json!({ "user": user, "password": password }))
        .expect("sign-in");
    let set = r.header("set-cookie").expect("a session cookie");
    set.split(';').next().unwrap().to_string()
}

/// Two nodes sharing one PostgreSQL store (scripts/test.sh provides one as
/// `CLUSTER_DATABASE_URL`): Alice has the desk open on node B; a caller on
/// node A asks for a person. A lets the caller wait because Alice (on B)
/// serves the queue; B's page shows the caller as soon as A does; the agent
/// takes the call through B, which passes the take to A, and the two talk
/// (each side's audio transcribed); the record, read from B, is a human's.
#[test]
fn an_agent_on_one_node_takes_a_caller_waiting_on_another() {
    let pg = std::env::var("CLUSTER_DATABASE_URL").unwrap_or_default();
    if pg.is_empty() {
        eprintln!("skipped: no CLUSTER_DATABASE_URL (scripts/test.sh starts a PostgreSQL)");
        return;
    }
    let dir = tempfile::tempdir().unwrap().keep();
    let url = rt()
        .block_on(attendant::store::scratch_url_on(&pg, &dir))
        .unwrap();
    rt().block_on(async {
        let store = attendant::store::Store::open(&url).await.unwrap();
        let hash = attendant::server::auth::hash_password(AGENT_PASSWORD).unwrap();
        store.put_user(AGENT_USER, "agent", &hash).await.unwrap();
    });
    let node = |url: String| {
        std::thread::spawn(move || {
            let agent = format!("\"{}\"", desk_agent().display());
            start_server(config(&[
                ("ATTENDANT__DIALOGUE__AGENT", &agent),
                ("ATTENDANT__STORE__URL", &format!("\"{url}\"")),
                ("ATTENDANT__DESK__QUEUES", "{ general = [\"alice\"] }"),
            ]))
        })
    };
    let (a, b) = (node(url.clone()), node(url.clone()));
    let (a, b) = (a.join().unwrap(), b.join().unwrap());

    // Alice opens the desk on B (her own session, not a token).
    let alice = sign_in(b, AGENT_USER, AGENT_PASSWORD);
    let feed = follow(ureq::get(&format!("http://{b}/desk/events")).set("cookie", &alice));
    let t_online = Instant::now();
    let deadline = t_online + Duration::from_secs(30);
    loop {
        let st = desk_state(a);
        if st["online"]
            .as_array()
            .is_some_and(|o| o.contains(&"alice".into()))
        {
            break;
        }
        if Instant::now() >= deadline {
            // What each side and the shared table say, to tell a node that
            // did not publish from one that did not read.
            let on_b = desk_state(b);
            let now = attendant::store::now_ms();
            let (rows, fresh) = rt().block_on(async {
                let s = attendant::store::Store::open(&url).await.unwrap();
                let all = s.node_rows(0, "").await.unwrap();
                (all, s.node_rows(now - 5_000, "").await.unwrap().len())
            });
            panic!("node A never saw Alice: A {st}; B {on_b}; rows ({fresh} fresh): {rows:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Normally one row write and one read (≤ 1 s each).
    eprintln!("node A saw Alice (on B) after {:?}", t_online.elapsed());

    let question = speech(&fixture("faq_hours.wav"));
    let agent_rel = "cmu/cards/005.wav";
    let agent_says = speech(&shared().join("speech").join(agent_rel));
    let caller = std::thread::spawn(move || {
        rt().block_on(webrtc::run_call(webrtc_line(
            a,
            vec![Step::Dtmf("0".into()), Step::Say(question)],
            1000,
            90,
        )))
        .expect("caller")
    });
    let on_a = waiting_call(a, "webrtc", Duration::from_secs(40));
    let w = waiting_call(b, "webrtc", Duration::from_secs(5));
    let id = w["call_id"].as_str().unwrap().to_string();
    assert_eq!(on_a["call_id"], id.as_str());
    assert_eq!(w["queue"], "general");
    // Alice's page on B was told as it happened.
    let waiting_event = loop {
        let e = feed
            .recv_timeout(Duration::from_secs(5))
            .expect("Alice's feed on B never showed the caller");
        if e["call_id"] == id.as_str() && e["type"] == "waiting" {
            break e;
        }
    };
    assert_eq!(waiting_event["queue"], "general");
    // From A putting the caller on hold to Alice's page on B hearing of it.
    // Only A's NOTIFY puts the event on B's feed (rows update the state,
    // not the feed); it is one database round trip, tens of ms when idle.
    // The bound leaves room for a loaded 2-core machine running the call's
    // speech models beside PostgreSQL.
    let seen_ms = waiting_event["_heard_unix_ms"].as_i64().unwrap()
        - waiting_event["since_unix_ms"].as_i64().unwrap();
    eprintln!("B heard of A's caller {seen_ms} ms after A put it on hold");
    assert!(seen_ms < 1500, "B heard of A's caller {seen_ms} ms later");
    // The context card is in the shared store.
    let card: serde_json::Value = api_get(&format!("http://{b}/calls/{id}/handoff"))
        .call()
        .expect("hand-off packet from B")
        .into_json()
        .unwrap();
    assert_eq!(card["target"], "desk:general", "{card}");
    std::thread::sleep(Duration::from_millis(1000));

    // The agent takes the call through B; the take runs on A.
    let t0 = Instant::now();
    let agent_id = id.clone();
    let agent = std::thread::spawn(move || {
        rt().block_on(webrtc::run_agent(
            webrtc_line(b, vec![Step::Say(agent_says)], 1500, 60),
            &agent_id,
        ))
        .expect("agent")
    });
    // B shows the call as talking; Alice (signed in on B, not on this call)
    // cannot give it back: her request reaches A with her session, and A
    // says it is not hers (403, not 401).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = desk_state(b);
        let talking = st["talking"].as_array().unwrap();
        if talking.iter().any(|t| t[0]["call_id"] == id.as_str()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B never showed the call taken: {st}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let not_hers = ureq::post(&format!("http://{b}/desk/calls/{id}/return"))
        .set("cookie", &alice)
        .call()
        .unwrap_err();
    assert!(
        matches!(not_hers, ureq::Error::Status(403, _)),
        "{not_hers:?}"
    );
    let agent = agent.join().unwrap();
    let caller = caller.join().unwrap();
    let connect = agent.connect_ms.expect("the agent's leg never came up");
    eprintln!(
        "desk across nodes: caller on A shown on B within {seen_ms} ms of A; \
         take through B → agent leg up in {connect} ms; call {} s",
        t0.elapsed().as_secs()
    );
    heard_both_ways(&agent, &caller, agent_rel);

    // Read from B: a human's call, handled on A.
    let rec = ended_record(b, &id);
    assert_eq!(rec.outcome, "handled_by_agent", "{rec:?}");
    let h = rec.human.expect("the desk part of the record");
    assert_eq!(h.agent.as_deref(), Some("admin (configured)"));
    assert!(h.take_to_audio_ms.is_some(), "{h:?}");
    // Alice's page saw the take and the end; nobody waits on either node.
    let mut kinds = Vec::new();
    while let Ok(e) = feed.recv_timeout(Duration::from_millis(1500)) {
        if e["call_id"] == id.as_str() {
            kinds.push(e["type"].as_str().unwrap_or_default().to_string());
        }
    }
    for k in ["taken", "left"] {
        assert!(kinds.iter().any(|x| x == k), "no {k} event on B: {kinds:?}");
    }
    for node in [a, b] {
        let st = desk_state(node);
        assert!(st["waiting"].as_array().unwrap().is_empty(), "{st}");
        assert!(st["talking"].as_array().unwrap().is_empty(), "{st}");
    }
}
