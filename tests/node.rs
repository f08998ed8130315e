//! A server process of its own, one test at a time (its memory measured
//! apart from the test's, no other calls sharing the CPU): SIP floods (a
//! stranger's 10 s INVITE flood and an admitted trunk address's OPTIONS
//! flood are both banned within 2 s while another trunk's sipp calls all
//! succeed), and SIGTERM with live calls (drained, goodbyes said, stored,
//! exit 0).

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use attendant::client::{self, CallOptions, Script, Step};
use common::sipp::*;
use common::*;

const SIP: &str = r#"
[listen]
udp = ["127.0.0.1:0"]

[media]
rtp_ports = [0, 0]

[[trunks]]
name = "sipp"
sources = ["127.0.0.1/32"]

[[trunks]]
name = "noisy"
sources = ["127.0.0.4/32"]
"#;

struct Flood {
    sent: usize,
    answered: usize,
    last_answer: Duration,
}

/// `method` requests from `from` to `to` for `seconds`, paced at about
/// `per_s` (bounded), counting the answers that come back.
fn flood(from: &str, to: SocketAddr, method: &str, seconds: u64, per_s: u64) -> Flood {
    let sock = UdpSocket::bind((from, 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let rx = sock.try_clone().unwrap();
    let local = sock.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_rx = stop.clone();
    let t0 = Instant::now();
    let listener = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let (mut n, mut last) = (0usize, Duration::ZERO);
        while !stop_rx.load(Ordering::Relaxed) {
            if rx.recv(&mut buf).is_ok() {
                n += 1;
                last = t0.elapsed();
            }
        }
        (n, last)
    });
    let mut sent = 0u64;
    while t0.elapsed() < Duration::from_secs(seconds) {
        // Pacing: never ahead of per_s.
        if sent * 1000 > t0.elapsed().as_millis() as u64 * per_s {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let body = if method == "INVITE" {
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
        } else {
            ""
        };
        let msg = format!(
            "{method} sip:1000@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKflood{sent}\r\n\
             From: <sip:flood@{local}>;tag=f{sent}\r\nTo: <sip:1000@{to}>\r\nCall-ID: flood-{sent}@{local}\r\n\
             CSeq: 1 {method}\r\nContact: <sip:flood@{local}>\r\nMax-Forwards: 70\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = sock.send_to(msg.as_bytes(), to);
        sent += 1;
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let (answered, last_answer) = listener.join().unwrap();
    Flood {
        sent: sent as usize,
        answered,
        last_answer,
    }
}

fn sipp_call(dir: &std::path::Path, to: SocketAddr, i: usize) -> (bool, String) {
    let body = [
        invite("PCMU", 0, "[media_port]"),
        pause(1000),
        caller_bye(2),
    ]
    .concat();
    sipp_run(dir, to, &format!("call{i}"), &body)
}

/// Runs scenario `body` once as `name` (its Call-ID is `name@127.0.0.1`).
fn sipp_run(dir: &std::path::Path, to: SocketAddr, name: &str, body: &str) -> (bool, String) {
    let path = dir.join(format!("{name}.xml"));
    std::fs::write(&path, scenario_xml(name, body)).unwrap();
    let out = Command::new("sipp")
        .arg(to.to_string())
        .args(["-sf", &path.display().to_string()])
        .args(["-s", "1000", "-m", "1", "-l", "1", "-t", "u1"])
        .args(["-cid_str", &format!("{name}@%s")])
        .args(["-i", "127.0.0.1", "-p", &peer_port().to_string()])
        .args(["-mp", &peer_port().to_string()])
        .args(["-timeout", "60s", "-timeout_error", "-nostdin"])
        .current_dir(dir)
        .output()
        .expect("sipp is installed (Debian sip-tester)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// A Twilio caller who says `turns`, then stays on the line (up to 60 s)
/// until the server ends the call.
fn lingering_call(
    http: SocketAddr,
    turns: Vec<Vec<f32>>,
) -> std::thread::JoinHandle<Result<client::CallReport, client::ClientError>> {
    std::thread::spawn(move || {
        rt().block_on(client::run_call(CallOptions {
            url: ws_url(http),
            http: String::new(),
            from: "+15555550123".into(),
            script: Script::Turns {
                turns,
                quiet_ms: 700,
            },
            linger_ms: 60_000,
            max_secs: 90,
            dtmf: vec![],
            signing: None,
            api_token: Some(API_TOKEN.into()),
        }))
    })
}

/// One server process at a time: the figures are about the server alone.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A server process with SIP on (the trunks above), its scratch folder and
/// its UDP address.
fn sip_node(env: &[(&str, &str)]) -> (std::path::PathBuf, ServerProcess, SocketAddr) {
    let dir = tempfile::tempdir().unwrap().keep();
    let cfg_path = dir.join("sip.toml");
    std::fs::write(&cfg_path, SIP).unwrap();
    let quoted = format!("\"{}\"", cfg_path.display());
    let mut vars = vec![
        ("ATTENDANT__SIP__ENABLED", "true"),
        ("ATTENDANT__SIP__CONFIG", quoted.as_str()),
    ];
    vars.extend_from_slice(env);
    let server = ServerProcess::start(&vars);
    let udp = sip_status(&server);
    (dir, server, udp)
}

fn sip_status(server: &ServerProcess) -> SocketAddr {
    let st: serde_json::Value = api_get(&format!("http://{}/sip", server.addr))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    st["udp"][0].as_str().unwrap().parse().unwrap()
}

#[test]
fn sigterm_refuses_new_calls_lets_live_ones_end_says_goodbye_stores_them_and_exits_0() {
    let _one = one_at_a_time();
    let (dir, mut server, udp) = sip_node(&[("ATTENDANT__SERVER__DRAIN_TIMEOUT_MS", "3000")]);
    let http = server.addr;

    // A SIP caller who stays on the line until the bot hangs up, and a
    // Twilio caller who asks a question and then waits.
    let sip_dir = dir.clone();
    let sip_call = std::thread::spawn(move || {
        let body = [invite("PCMU", 0, "[media_port]"), pause(1000), bot_bye()].concat();
        sipp_run(&sip_dir, udp, "draining-sip", &body)
    });
    let question = client::audio::read_wav_8k(&fixture("faq_hours.wav")).unwrap();
    let twilio_call = lingering_call(http, vec![question]);
    // Both calls live, the question answered.
    std::thread::sleep(Duration::from_secs(9));
    let term = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    std::thread::sleep(Duration::from_millis(300));

    // Draining: health says so, a new SIP call gets 503 with Retry-After.
    let health = ureq::get(&format!("http://{http}/healthz")).call();
    assert!(
        matches!(health, Err(ureq::Error::Status(503, _))),
        "{health:?}"
    );
    let refused = format!(
        "{}<recv response=\"100\" optional=\"true\"/>\n<recv response=\"503\"/>\n{}",
        invite_msg("PCMU", 0, "[media_port]", 1, false),
        ack_msg(1)
    );
    let (ok, log) = sipp_run(&dir, udp, "refused-while-draining", &refused);
    assert!(ok, "503 expected:\n{log}");

    // After the drain deadline the bot says goodbye and ends both calls.
    let (ok, log) = sip_call.join().unwrap();
    assert!(ok, "the SIP caller gets the bot's BYE:\n{log}");
    let report = twilio_call.join().unwrap().expect("twilio call");
    assert_eq!(
        report.closed_by_server,
        Some(1000),
        "WebSocket closed normally"
    );
    let status = loop {
        if let Some(st) = server.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            term.elapsed() < Duration::from_secs(40),
            "server still running 40 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let took = term.elapsed();
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(
        took >= Duration::from_secs(3),
        "the live calls had their 3 s: {took:?}"
    );
    eprintln!("SIGTERM → exit 0 in {} ms", took.as_millis());

    // Both calls reached the store.
    let store = rt()
        .block_on(attendant::store::Store::open(&server.store_url))
        .unwrap();
    for id in [
        "draining-sip@127.0.0.1".to_string(),
        report.call_sid.clone(),
    ] {
        let row = rt().block_on(store.interaction(&id)).unwrap();
        assert!(row.is_some(), "interaction {id} stored");
    }
}

#[test]
fn floods_are_banned_within_2_s_while_another_sources_calls_succeed() {
    let _one = one_at_a_time();
    let (dir, server, udp) = sip_node(&[]);
    // One call first, so what a first call allocates is not counted.
    let warm = sipp_call(&dir, udp, 8);
    assert!(warm.0, "{}", warm.1);
    std::thread::sleep(Duration::from_secs(2));
    let rss_before = server.rss_mb();

    // A stranger's INVITE flood for 10 s (20,000 a second) while the
    // loopback trunk places three calls.
    let invites = std::thread::spawn(move || flood("127.0.0.2", udp, "INVITE", 10, 20_000));
    std::thread::sleep(Duration::from_millis(500));
    let calls: Vec<(bool, String)> = (0..3).map(|i| sipp_call(&dir, udp, i)).collect();
    let invites = invites.join().unwrap();
    // Then an admitted trunk address floods OPTIONS (its allowance is
    // larger, a flood is still a flood).
    let options = flood("127.0.0.4", udp, "OPTIONS", 3, 20_000);
    let after = sipp_call(&dir, udp, 9);
    let rss_after = server.rss_mb();
    eprintln!(
        "INVITE flood from a stranger: {} sent, {} answered, last answer at {:?}; \
         OPTIONS flood from a trunk address: {} sent, {} answered, last at {:?}; \
         calls during {}/3, after {}; server RSS {rss_before:.0} → {rss_after:.0} MB",
        invites.sent,
        invites.answered,
        invites.last_answer,
        options.sent,
        options.answered,
        options.last_answer,
        calls.iter().filter(|(ok, _)| *ok).count(),
        after.0
    );
    for (ok, log) in calls.iter().chain([&after]) {
        assert!(ok, "a call failed:\n{log}");
    }
    assert!(invites.sent > 100_000, "a weak flood: {}", invites.sent);
    // 64 allowed per 2 s (each gets a 403, perhaps after a 100).
    assert!(invites.answered <= 2 * 65, "{}", invites.answered);
    assert!(
        invites.last_answer < Duration::from_secs(2),
        "{:?}",
        invites.last_answer
    );
    assert!(options.answered <= 1001, "{}", options.answered);
    assert!(
        options.last_answer < Duration::from_secs(2),
        "{:?}",
        options.last_answer
    );
    assert!(
        rss_after - rss_before < 30.0,
        "server RSS {rss_before:.0} → {rss_after:.0} MB"
    );
    let m = api_get(&format!("http://{}/metrics", server.addr))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(m.contains("attendant_sip_bans_total 2"), "two bans");
}

#[test]
fn after_kill_9_mid_call_every_answered_turn_is_in_the_store() {
    let _one = one_at_a_time();
    let server = ServerProcess::start(&[]);
    let http = server.addr;
    let turns: Vec<Vec<f32>> = ["faq_hours.wav", "balance.wav"]
        .iter()
        .map(|f| client::audio::read_wav_8k(&fixture(f)).unwrap())
        .collect();
    let call = lingering_call(http, turns);
    // Wait until both questions have been answered (the record says so),
    // then kill the node without warning.
    let deadline = Instant::now() + Duration::from_secs(60);
    let id = loop {
        let ids: Vec<String> = api_get(&format!("http://{http}/calls"))
            .call()
            .unwrap()
            .into_json()
            .unwrap();
        let answered = ids.last().and_then(|id| {
            let rec: attendant::pipeline::CallRecord =
                api_get(&format!("http://{http}/calls/{id}"))
                    .call()
                    .ok()?
                    .into_json()
                    .ok()?;
            // Acknowledged: the caller is hearing the second answer.
            let heard = rec.turns.len() >= 2 && rec.turns[1].timings.voice_to_voice_ms.is_some();
            heard.then(|| id.clone())
        });
        if let Some(id) = answered {
            break id;
        }
        assert!(Instant::now() < deadline, "two answered turns");
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_millis(200));
    let store = server.store_url.clone();
    let mut server = server;
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    let _ = call.join();

    // A new node on the same database serves the call as it stood.
    let again = ServerProcess::start(&[("ATTENDANT__STORE__URL", &format!("\"{store}\""))]);
    let ids: Vec<String> = api_get(&format!("http://{}/calls", again.addr))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert!(ids.contains(&id), "{ids:?}");
    let rec: attendant::pipeline::CallRecord =
        api_get(&format!("http://{}/calls/{id}", again.addr))
            .call()
            .unwrap()
            .into_json()
            .unwrap();
    assert_eq!(rec.turns.len(), 2, "{rec:?}");
    assert!(
        rec.turns[0].caller_text.to_lowercase().contains("hours"),
        "{rec:?}"
    );
    assert!(!rec.turns[1].bot_text.is_empty());
    assert_eq!(rec.outcome, "in_progress", "it never ended");
    // The interaction row (what KPIs, history and agents read) was written
    // per turn too: both questions are in its transcript.
    let row: serde_json::Value = api_get(&format!("http://{}/calls/{id}/interaction", again.addr))
        .call()
        .expect("the interaction row")
        .into_json()
        .unwrap();
    assert_eq!(row["outcome"], "in_progress", "{row}");
    assert!(row["ended_ms"].is_null(), "{row}");
    let said: Vec<String> = row["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["speaker"] == "caller")
        .map(|u| u["text"].as_str().unwrap_or("").to_lowercase())
        .collect();
    assert_eq!(said.len(), 2, "{row}");
    assert!(said[0].contains("hours"), "{said:?}");
}

/// Where `pin` appears in `text` as a number of its own, spoken digit by
/// digit, or in words. Sealed values (`enc1:<key>:<base64>`) are left out:
/// their ciphertext holds any four digits now and then ("…f9876W…"), which
/// is chance, not the PIN.
fn pin_in(text: &str, pin: &str) -> Option<String> {
    let sealed = regex::Regex::new(r"enc1:[A-Za-z0-9_.-]*:[A-Za-z0-9+/=]+").unwrap();
    let text = sealed.replace_all(text, "enc1:sealed");
    let text = text.as_ref();
    let b = text.as_bytes();
    for (i, _) in text.match_indices(pin) {
        let before = i.checked_sub(1).map(|j| b[j].is_ascii_digit());
        let after = b.get(i + pin.len()).map(|c| c.is_ascii_digit());
        if before != Some(true) && after != Some(true) {
            let from = i.saturating_sub(80);
            return Some(String::from_utf8_lossy(&b[from..(i + 80).min(b.len())]).into());
        }
    }
    let spaced: String = pin.chars().map(|c| format!("{c} ")).collect();
    let words = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    ];
    let worded: Vec<&str> = pin
        .chars()
        .map(|c| words[c.to_digit(10).unwrap() as usize])
        .collect();
    let lower = text.to_lowercase();
    [
        spaced.trim().to_string(),
        worded.join(" "),
        worded.join("-"),
    ]
    .into_iter()
    .find(|p| lower.contains(p.as_str()))
}

fn spoken_digits(digits: &str) -> Vec<f32> {
    let mut pcm = vec![0.0f32; 2400];
    for d in digits.chars() {
        let f = shared().join(format!("speech/fsdd/{d}_george_3.wav"));
        pcm.extend(client::audio::read_wav_8k(&f).unwrap());
        pcm.extend(std::iter::repeat_n(0.0, 1200));
    }
    pcm
}

#[test]
fn a_pin_spoken_and_keyed_is_in_no_log_record_or_database_row() {
    let _one = one_at_a_time();
    // Everything logged, at every level.
    let server = ServerProcess::start(&[("ATTENDANT_LOG", "trace,ort=warn")]);
    let http = server.addr;
    let pin = "9876"; // Priya's, on the account ending 7788
    let balance = client::audio::read_wav_8k(&fixture("balance.wav")).unwrap();
    let call = |pin_step: Step| {
        rt().block_on(client::run_call(CallOptions {
            url: ws_url(http),
            http: String::new(),
            from: "+15555550999".into(),
            script: Script::Steps {
                steps: vec![
                    Step::Say(balance.clone()),
                    Step::Say(spoken_digits("7788")),
                    pin_step,
                ],
                quiet_ms: 700,
            },
            linger_ms: 3000,
            max_secs: 90,
            dtmf: vec![],
            signing: None,
            api_token: Some(API_TOKEN.into()),
        }))
        .expect("call")
    };
    let spoken = call(Step::Say(spoken_digits(pin)));
    let keyed = call(Step::Dtmf(format!("{pin}#")));
    // The keyed PIN was taken and checked: the balance was read out.
    let rec = keyed.record.clone().expect("record");
    assert!(
        rec.turns
            .iter()
            .any(|t| t.source.contains("balance") || t.bot_text.contains("dollars")),
        "{rec:?}"
    );
    let mut seen = String::new();
    for r in [&spoken, &keyed] {
        let id = &r.call_sid;
        for path in [format!("/calls/{id}"), format!("/calls/{id}/interaction")] {
            if let Ok(resp) = api_get(&format!("http://{http}{path}")).call() {
                seen.push_str(&resp.into_string().unwrap());
            }
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let logs = server.logs.lock().unwrap().clone();
    assert!(
        logs.len() > 10_000,
        "trace logs captured: {} bytes",
        logs.len()
    );
    assert!(
        logs.contains("caller said"),
        "transcripts are logged (masked)"
    );
    let store_url = server.store_url.clone();
    drop(server);
    let db = server_db_text(&store_url);
    for (what, text) in [("logs", &logs), ("records", &seen), ("database", &db)] {
        assert_eq!(pin_in(text, pin), None, "the PIN in the {what}");
    }
    // Transcripts and answers are sealed at rest: neither what the caller
    // said nor what the bot answered is readable in the database file.
    if !db.is_empty() {
        let asked = &rec.turns[0];
        for text in [&asked.caller_text, &asked.bot_text] {
            assert!(text.len() > 8, "{asked:?}");
            assert!(!db.contains(text.as_str()), "{text:?} readable at rest");
        }
    }
}

/// A SQLite scratch database's bytes as text: every table, every row, its
/// write-ahead log too. (On PostgreSQL the records read back above stand
/// for it.)
fn server_db_text(url: &str) -> String {
    let Some(path) = url.strip_prefix("sqlite://") else {
        return String::new();
    };
    let path = path.split('?').next().unwrap_or(path);
    let mut text = String::new();
    for suffix in ["", "-wal"] {
        if let Ok(b) = std::fs::read(format!("{path}{suffix}")) {
            text.push_str(&String::from_utf8_lossy(&b));
        }
    }
    assert!(!text.is_empty(), "database file at {path}");
    text
}

/// Kamailio as shipped in `deploy/kamailio`, listening on `port` in front
/// of `nodes` (dispatcher set 1); killed on drop.
struct Kamailio(std::process::Child);

impl Kamailio {
    fn start(dir: &std::path::Path, port: u16, nodes: &[SocketAddr]) -> Kamailio {
        let list: String = nodes.iter().map(|n| format!("1 sip:{n}\n")).collect();
        let list_path = dir.join("dispatcher.list");
        std::fs::write(&list_path, list).unwrap();
        let run = dir.join("kamailio-run");
        std::fs::create_dir_all(&run).unwrap();
        let child = Command::new("kamailio")
            .arg("-f")
            .arg(repo().join("deploy/kamailio/kamailio.cfg"))
            .args(["-A", &format!("LISTEN=udp:127.0.0.1:{port}")])
            .args(["-A", &format!("DS_LIST=\"{}\"", list_path.display())])
            .args(["-A", "NODE_TIMEOUT_MS=1000"])
            .arg("-Y")
            .arg(&run)
            .args(["-D", "-E"])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("kamailio.log")).unwrap())
            .spawn()
            .expect("kamailio is installed (Debian kamailio; scripts/setup.sh)");
        Kamailio(child)
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// `calls` sipp calls of `body`, `at_once` at a time, to `to`.
fn sipp_calls(
    dir: &std::path::Path,
    to: SocketAddr,
    name: &str,
    body: &str,
    calls: usize,
    at_once: usize,
) -> (bool, String) {
    let path = dir.join(format!("{name}.xml"));
    std::fs::write(&path, scenario_xml(name, body)).unwrap();
    let out = Command::new("sipp")
        .arg(to.to_string())
        .args(["-sf", &path.display().to_string()])
        .args([
            "-s",
            "1000",
            "-m",
            &calls.to_string(),
            "-l",
            &at_once.to_string(),
        ])
        .args(["-r", "10", "-t", "u1"])
        .args(["-cid_str", &format!("{name}-%u@%s")])
        .args(["-i", "127.0.0.1", "-p", &peer_port().to_string()])
        .args(["-mp", &peer_port().to_string()])
        .args([
            "-timeout",
            "60s",
            "-timeout_error",
            "-nostdin",
            "-trace_err",
        ])
        .current_dir(dir)
        .output()
        .expect("sipp is installed (Debian sip-tester)");
    (
        out.status.success(),
        format!(
            "{} (in {})",
            String::from_utf8_lossy(&out.stdout),
            dir.display()
        )
        .lines()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .join("\n"),
    )
}

/// A caller behind a proxy, as a real UA does it: the dialog's ACK and BYE
/// go to the node's Contact along the Record-Route the proxy put in. With
/// `speech`, they say it (RTP from the pcap) while on the line.
fn proxied_call(talk_ms: u64, speech: Option<&std::path::Path>) -> String {
    let in_dialog = |method: &str, cseq: u32| {
        format!(
            r#"<send><![CDATA[
{method} [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: "Test Caller" <sip:+15550100123@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: {cseq} {method}
[routes]
Max-Forwards: 70
Content-Length: 0
]]></send>
"#
        )
    };
    [
        invite_msg("PCMU", 0, "[media_port]", 1, false),
        "<recv response=\"100\" optional=\"true\"/>\n<recv response=\"180\" optional=\"true\"/>\n"
            .into(),
        "<recv response=\"200\" rtd=\"true\" rrs=\"true\"/>\n".into(),
        in_dialog("ACK", 1),
        speech.map(play).unwrap_or_default(),
        pause(talk_ms),
        in_dialog("BYE", 2).replace("<send>", "<send retrans=\"500\">"),
        "<recv response=\"200\"/>\n".into(),
    ]
    .concat()
}

/// A stand-in hand-off webhook: answers 200 after `delay` and counts each
/// delivery by its id (`X-Attendant-Delivery`).
fn webhook_receiver(
    delay: Duration,
) -> (
    SocketAddr,
    Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let counted = hits.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let hits = counted.clone();
            std::thread::spawn(move || {
                let mut w = conn.try_clone().unwrap();
                let mut r = BufReader::new(conn);
                loop {
                    let (mut len, mut id) = (0usize, String::new());
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let l = line.trim_end();
                        if l.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = l.split_once(':') {
                            match k.to_ascii_lowercase().as_str() {
                                "content-length" => len = v.trim().parse().unwrap_or(0),
                                "x-attendant-delivery" => id = v.trim().to_string(),
                                _ => {}
                            }
                        }
                    }
                    let mut body = vec![0u8; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    // A message to Twilio's API (no delivery id): its text.
                    if id.is_empty() {
                        let form = String::from_utf8_lossy(&body).to_string();
                        id = form
                            .split('&')
                            .find_map(|kv| kv.strip_prefix("Body="))
                            .unwrap_or_default()
                            .to_string();
                    }
                    std::thread::sleep(delay);
                    let answer = r#"{"sid":"SM0123","status":"queued"}"#;
                    let head = format!(
                        "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                        answer.len()
                    );
                    if w.write_all(head.as_bytes()).is_err()
                        || w.write_all(answer.as_bytes()).is_err()
                    {
                        return;
                    }
                    *hits.lock().unwrap().entry(id).or_insert(0) += 1;
                }
            });
        }
    });
    (addr, hits)
}

/// `n` hand-offs due now, named `prefix00`…, straight into the shared store.
fn due_handoffs(url: &str, prefix: &str, n: usize) -> Vec<String> {
    rt().block_on(async {
        let store = attendant::store::Store::open(url).await.unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let mut ids = Vec::new();
        for i in 0..n {
            let id = format!("{prefix}{i:02}");
            store
                .save_handoff(&attendant::store::Handoff {
                    call_id: id.clone(),
                    packet: serde_json::json!({ "call_id": id }),
                    created_ms: now,
                    webhook_status: "pending".into(),
                    next_attempt_ms: now,
                    ..Default::default()
                })
                .await
                .unwrap();
            ids.push(id);
        }
        ids
    })
}

/// `n` text messages due now, their text `prefix00`…, straight into the
/// shared store's outbox.
fn due_messages(url: &str, prefix: &str, n: usize) -> Vec<String> {
    rt().block_on(async {
        let store = attendant::store::Store::open(url).await.unwrap();
        let now = attendant::store::now_ms();
        let mut ids = Vec::new();
        for i in 0..n {
            let id = format!("{prefix}{i:02}");
            let queued = store
                .enqueue(&attendant::store::OutboxMessage {
                    id: id.clone(),
                    dedupe_key: id.clone(),
                    customer_id: "C-1001".into(),
                    channel: "sms".into(),
                    recipient: "+15555550101".into(),
                    body: id.clone(),
                    status: "pending".into(),
                    next_attempt_ms: now,
                    created_ms: now,
                    ..Default::default()
                })
                .await
                .unwrap();
            assert!(queued);
            ids.push(id);
        }
        ids
    })
}

fn answered(server: &ServerProcess) -> u64 {
    let st: serde_json::Value = api_get(&format!("http://{}/sip", server.addr))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    st["calls_answered"].as_u64().unwrap_or(0)
}

#[test]
fn kamailio_spreads_calls_over_two_nodes_fails_over_and_skips_a_draining_node() {
    let _one = one_at_a_time();
    // Both nodes share one store — a database of its own on the PostgreSQL
    // `CLUSTER_DATABASE_URL` names (scripts/test.sh starts one), else one
    // SQLite file — and deliver hand-offs to one webhook.
    let shared = tempfile::tempdir().unwrap().keep();
    let pg = std::env::var("CLUSTER_DATABASE_URL").unwrap_or_default();
    let store_url = rt()
        .block_on(attendant::store::scratch_url_on(&pg, &shared))
        .expect("a database for the cluster");
    eprintln!(
        "kamailio: nodes share {}",
        store_url.split(':').next().unwrap_or_default()
    );
    // Made (migrated, its data key written beside it) before the nodes
    // start, as an operator does: nodes sharing a store share its keys.
    rt().block_on(attendant::store::Store::open(&store_url))
        .expect("the shared store");
    let (hook, hits) = webhook_receiver(Duration::from_millis(40));
    let env: Vec<(&'static str, String)> = vec![
        ("ATTENDANT__STORE__URL", format!("\"{store_url}\"")),
        (
            "ATTENDANT__HANDOFF__WEBHOOK_URL",
            format!("\"http://{hook}/handoff\""),
        ),
        ("ATTENDANT__HANDOFF__TIMEOUT_MS", "1000".into()),
        ("ATTENDANT__HANDOFF__LEASE_MS", "3000".into()),
        ("ATTENDANT__SERVER__DRAIN_TIMEOUT_MS", "20000".into()),
        ("ATTENDANT__FOLLOWUP__TICK_MS", "200".into()),
        // Text messages go to the same stand-in, as Twilio's API.
        ("ATTENDANT__TWILIO__API_BASE", format!("\"http://{hook}\"")),
        (
            "ATTENDANT__TWILIO__ACCOUNT_SID",
            "\"AC00000000000000000000000000000001\"".into(),
        ),
        ("ATTENDANT__TWILIO__AUTH_TOKEN", "\"cluster-test\"".into()),
        ("ATTENDANT__TWILIO__FROM_NUMBER", "\"+15550009999\"".into()),
    ];
    let b_env = env.clone();
    let b_node = std::thread::spawn(move || {
        let vars: Vec<(&str, &str)> = b_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        sip_node(&vars)
    });
    let vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (dir, mut a, a_udp) = sip_node(&vars);
    let (_b_dir, mut b, b_udp) = b_node.join().unwrap();
    let delivered = |ids: &[String]| {
        let h = hits.lock().unwrap();
        ids.iter().filter(|i| h.contains_key(*i)).count()
    };
    let wait_delivered = |ids: &[String], within: Duration| {
        let until = Instant::now() + within;
        while delivered(ids) < ids.len() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
        delivered(ids)
    };

    // Work that must happen once: 30 hand-offs and 30 text messages due at
    // once, both nodes polling the shared store: each reaches the stand-in
    // (webhook / Twilio API) exactly once.
    let mut first = due_handoffs(&store_url, "CA-both-", 30);
    first.extend(due_messages(&store_url, "SMS-both-", 30));
    assert_eq!(wait_delivered(&first, Duration::from_secs(20)), 60);
    {
        let h = hits.lock().unwrap();
        let twice: Vec<_> = first.iter().filter(|i| h[*i] > 1).collect();
        assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    }
    let port = peer_port();
    let proxy: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let _kamailio = Kamailio::start(&dir, port, &[a_udp, b_udp]);
    // Both nodes answer their first probes.
    std::thread::sleep(Duration::from_millis(2500));

    // 12 calls through the proxy, 4 at a time: both nodes take calls.
    // Callers who ask a question (real RTP both ways) and hang up.
    let question = dir.join("question.pcap");
    speech_pcap(&fixture("faq_hours.wav"), 0, &question);
    let asking = proxied_call(3000, Some(&question));
    let call = proxied_call(1500, None);
    let t0 = Instant::now();
    let (ok, out) = sipp_calls(&dir, proxy, "spread", &asking, 50, 8);
    assert!(ok, "calls through Kamailio failed:\n{out}");
    let (on_a, on_b) = (answered(&a), answered(&b));
    eprintln!(
        "kamailio: 50 calls with speech in {:.1} s, node A {on_a}, node B {on_b}",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(on_a + on_b, 50);
    assert!(
        on_a >= 20 && on_b >= 20,
        "calls were not spread: {on_a} / {on_b}"
    );
    // Node B answers for every call, node A's included: the records are
    // written through to the shared store as the calls change them.
    let ids: Vec<String> = api_get(&format!("http://{}/calls", b.addr))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(ids.len(), 50, "B lists both nodes' calls: {ids:?}");
    // Each with its final outcome, once its node has written it (the
    // writer runs beside the calls, so the last hang-ups take a moment).
    for id in &ids {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let rec: serde_json::Value = api_get(&format!("http://{}/calls/{id}", b.addr))
                .call()
                .expect("node B answers for any node's call")
                .into_json()
                .unwrap();
            assert_eq!(rec["channel"], "sip", "{rec}");
            if rec["outcome"] != "in_progress" {
                break;
            }
            assert!(Instant::now() < until, "never ended in the store: {rec}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // Node A dies (kill -9) in the middle of deliveries: new calls go to
    // B, none fails, and A's leased deliveries are B's once the lease ends.
    let mut second = due_handoffs(&store_url, "CA-kill-", 40);
    second.extend(due_messages(&store_url, "SMS-kill-", 40));
    let until = Instant::now() + Duration::from_secs(10);
    while delivered(&second) < 8 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    a.child.kill().unwrap();
    let _ = a.child.wait();
    let killed = Instant::now();
    // When the last of A's deliveries reaches the webhook, measured while
    // the calls below run.
    let (watch_hits, watch_ids) = (hits.clone(), second.clone());
    let all_delivered = std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            let h = watch_hits.lock().unwrap();
            if watch_ids.iter().all(|i| h.contains_key(i)) {
                return Some(killed.elapsed());
            }
            drop(h);
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    });
    let (ok, out) = sipp_calls(&dir, proxy, "failover", &call, 8, 2);
    assert!(ok, "calls failed after node A died:\n{out}");
    let took = killed.elapsed();
    assert_eq!(answered(&b), on_b + 8, "the survivor took every new call");
    eprintln!(
        "kamailio: node A killed; 8 calls, 0 failed, all on B, in {:.1} s",
        took.as_secs_f64()
    );
    assert_eq!(
        ureq::get(&format!("http://{}/readyz", b.addr))
            .call()
            .unwrap()
            .status(),
        200
    );
    let recovered = all_delivered.join().unwrap();
    assert_eq!(
        delivered(&second),
        80,
        "A's leased deliveries and messages were taken over"
    );
    let redelivered = {
        let h = hits.lock().unwrap();
        second.iter().filter(|i| h[*i] > 1).count()
    };
    eprintln!(
        "kamailio: 40 hand-offs + 40 text messages, node A killed mid-way: all delivered {:.1} s after the kill, {redelivered} twice",
        recovered.unwrap_or_default().as_secs_f64()
    );
    // At most what A was sending when it died, one of each kind (the
    // receiver answered, A never recorded it): hand-off deliveries carry
    // their id for receivers to drop repeats.
    assert!(redelivered <= 2, "{redelivered} delivered twice");

    // B drains (SIGTERM) with a live call: its probes and new calls get
    // 503, so the proxy has nowhere to send a new caller and says so; the
    // live call goes on to its end and B exits 0.
    let live_dir = dir.clone();
    let long = proxied_call(5000, None);
    let live = std::thread::spawn(move || sipp_calls(&live_dir, proxy, "live", &long, 1, 1));
    std::thread::sleep(Duration::from_millis(1500));
    let term = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &b.child.id().to_string()])
        .status()
        .unwrap()
        .success());
    std::thread::sleep(Duration::from_millis(300));
    let ready = ureq::get(&format!("http://{}/readyz", b.addr)).call();
    assert!(
        matches!(ready, Err(ureq::Error::Status(503, _))),
        "{ready:?}"
    );
    let live_ok = ureq::get(&format!("http://{}/livez", b.addr))
        .call()
        .unwrap()
        .status();
    assert_eq!(live_ok, 200, "draining is alive, just not ready");
    let refused = [
        invite_msg("PCMU", 0, "[media_port]", 1, false),
        "<recv response=\"100\" optional=\"true\"/>\n<recv response=\"503\"/>\n".to_string(),
        ack_msg(1),
    ]
    .concat();
    let (ok, out) = sipp_calls(&dir, proxy, "refused", &refused, 1, 1);
    assert!(
        ok,
        "a new call during the drain was not refused with 503:\n{out}"
    );
    let (ok, out) = live.join().unwrap();
    assert!(ok, "the live call did not finish:\n{out}");
    let status = b.child.wait().unwrap();
    assert!(status.success(), "node B exited {status:?}");
    eprintln!(
        "kamailio: node B drained with a live call in {:.1} s, exit 0",
        term.elapsed().as_secs_f64()
    );
}
