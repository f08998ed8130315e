//! SIP trunk calls against a real server with real models, driven by sipp
//! (Debian `sip-tester`), a real SIP peer. sipp plays RTP from pcaps we make
//! from recordings (and SIPp's own RFC 4733 DTMF captures); the bot's RTP
//! goes to a socket this test owns (the SDP points there), so every reply is
//! captured, checked packet by packet and transcribed.

use crate::common;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use attendant::client::audio;
use attendant::eval::wer;
use attendant::media::{alaw, mulaw};
use attendant::pipeline::CallRecord;
use attendant::transport::rtp;
use common::sipp::*;
use common::*;

struct SipServer {
    http: SocketAddr,
    udp: SocketAddr,
    tcp: SocketAddr,
    tls: SocketAddr,
    /// The TLS listener's self-signed certificate (DER), for the client.
    tls_cert: Vec<u8>,
    dir: PathBuf,
    /// Where the sipp playing the customer-care agent listens.
    agent_port: u16,
}

const SIP_CONFIG: &str = r#"
[listen]
udp = ["127.0.0.1:0"]
tcp = ["127.0.0.1:0"]
tls = ["127.0.0.1:0"]

# Next to this file: made by the test for "localhost".
[tls]
cert = "cert.pem"
key = "key.pem"

[media]
rtp_ports = [0, 0]
codecs = ["pcmu", "pcma"]
jitter_ms = 60

# sipp's own address; 127.0.0.2 is kept out to see the 403.
[[trunks]]
name = "sipp"
sources = ["127.0.0.1/32"]

# A PBX that must authenticate; sipp answers only an MD5 challenge.
[[trunks]]
name = "pbx"
sources = ["127.0.0.3/32"]
username = "pbx"
password = "secret"
digest = ["MD5"]

# One that authenticates with the defaults (SHA-256 first).
[[trunks]]
name = "modern"
sources = ["127.0.0.5/32"]
username = "modern"
password = "secret5"

# Dialling 2000 reaches the retailer; anything else the server's bank agent.
[[numbers]]
number = "2000"
agent = "agents/retailer"

[[numbers]]
number = "*"
agent = ""

# The bank's 0 is a REFER; the shop's customer care is bridged to a sipp
# playing the agent.
[transfer]
mode = "refer"
ring_timeout_s = 10
[transfer.targets]
"queue:general" = "sip:general@127.0.0.1:5999"
"queue:customer_care" = "sip:care@127.0.0.1:AGENT_PORT"
[transfer.modes]
"queue:customer_care" = "bridge"
"#;

fn sip_server() -> &'static SipServer {
    static S: OnceLock<SipServer> = OnceLock::new();
    S.get_or_init(|| {
        init_logs();
        let dir = tempfile::tempdir().unwrap().keep();
        let cfg_path = dir.join("sip.toml");
        let agent_port = peer_port();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
        std::fs::write(
            &cfg_path,
            SIP_CONFIG.replace("AGENT_PORT", &agent_port.to_string()),
        )
        .unwrap();
        let http = start_server(config(&[
            ("ATTENDANT__SIP__ENABLED", "true"),
            (
                "ATTENDANT__SIP__CONFIG",
                &format!("\"{}\"", cfg_path.display()),
            ),
        ]));
        let st: serde_json::Value = api_get(&format!("http://{http}/sip"))
            .call()
            .unwrap()
            .into_json()
            .unwrap();
        let udp = st["udp"][0].as_str().unwrap().parse().unwrap();
        let tcp = st["tcp"][0].as_str().unwrap().parse().unwrap();
        let tls = st["tls"][0].as_str().unwrap().parse().unwrap();
        SipServer {
            http,
            udp,
            tcp,
            tls,
            tls_cert: cert.cert.der().to_vec(),
            dir,
            agent_port,
        }
    })
}

fn sipp_data() -> PathBuf {
    shared().join("sipp/sipp_upstream/pcap")
}

/// Takes the REFER (checking the context header), answers 202 and reports
/// the transfer's outcome in a NOTIFY sipfrag.
fn refer(sipfrag: &str) -> String {
    format!(
        r#"<recv request="REFER" timeout="40000">
  <action>
    <ereg regexp="X-Attendant-Context: (.+)" search_in="msg" check_it="true" assign_to="ctx"/>
    <ereg regexp="Refer-To: .sip:general@127.0.0.1:5999" search_in="msg" check_it="true" assign_to="rt"/>
  </action>
</recv>
<send><![CDATA[
SIP/2.0 202 Accepted
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
X-Seen: [$ctx] [$rt]
Content-Length: 0
]]></send>
<send retrans="500"><![CDATA[
NOTIFY sip:attendant@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: "Test Caller" <sip:+15550100123@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 2 NOTIFY
Event: refer
Subscription-State: terminated;reason=noresource
Max-Forwards: 70
Content-Type: message/sipfrag;version=2.0
Content-Length: [len]

SIP/2.0 {sipfrag}
]]></send>
<recv response="200"/>
"#
    )
}

/// Writes a one-call scenario; its Call-ID is `call_id_of(name)`, so the
/// test finds its own call record even with other calls running.
fn scenario(name: &str, body: &str) -> PathBuf {
    let path = sip_server().dir.join(format!("{name}.xml"));
    std::fs::write(&path, scenario_xml(name, body)).unwrap();
    path
}

/// Runs one sipp call; returns whether sipp counted it successful, and its log.
fn sipp(
    scenario: &Path,
    target: SocketAddr,
    transport: &str,
    local_ip: &str,
    extra: &[&str],
) -> (bool, String) {
    sipp_to("1000", scenario, target, transport, local_ip, extra)
}

/// Like `sipp`, dialling `number`.
fn sipp_to(
    number: &str,
    scenario: &Path,
    target: SocketAddr,
    transport: &str,
    local_ip: &str,
    extra: &[&str],
) -> (bool, String) {
    let dir = scenario.parent().unwrap();
    let name = scenario.file_stem().unwrap().to_string_lossy().to_string();
    let err_file = dir.join(format!("{name}_errors.log"));
    let out = Command::new("sipp")
        .arg(target.to_string())
        .args(["-sf", &scenario.display().to_string()])
        .args(["-s", number, "-m", "1", "-l", "1", "-t", transport])
        .args([
            "-cid_str",
            &format!("attendant-test-{name}-{}-%u@%s", std::process::id()),
        ])
        .args(["-i", local_ip, "-p", &peer_port().to_string()])
        .args(["-mp", &peer_port().to_string()])
        .args(["-timeout", "120s", "-timeout_error", "-nostdin"])
        .args(["-trace_err", "-error_file", &err_file.display().to_string()])
        .args(extra)
        .current_dir(dir)
        .output()
        .expect("sipp is installed (Debian sip-tester)");
    let log = format!(
        "{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n"),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&err_file).unwrap_or_default()
    );
    (out.status.success(), log)
}

/// The Call-ID sipp gives scenario `name`'s (first) call (`-cid_str`).
fn call_id_of(name: &str) -> String {
    format!("attendant-test-{name}-{}-1@127.0.0.1", std::process::id())
}

fn record(http: SocketAddr, id: &str) -> Option<CallRecord> {
    api_get(&format!("http://{http}/calls/{id}"))
        .call()
        .ok()?
        .into_json()
        .ok()
}

/// The record of scenario `name`'s call, once the call has ended.
/// Plays scenario `name` (`body`) from 127.0.0.1 to `to` over `transport`
/// while `cap` records the bot's RTP; once sipp reports success, what was
/// captured and the call's stored record.
fn trunk_call(
    cap: Capture,
    name: &str,
    body: &str,
    to: SocketAddr,
    transport: &str,
) -> (Vec<(Instant, Vec<u8>)>, CallRecord) {
    let (ok, log) = sipp(&scenario(name, body), to, transport, "127.0.0.1", &[]);
    let packets = cap.finish();
    assert!(ok, "sipp call {name} failed:\n{log}");
    (packets, record_of(sip_server().http, name))
}

fn record_of(http: SocketAddr, name: &str) -> CallRecord {
    let id = call_id_of(name);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(rec) = record(http, &id) {
            if rec.ended_unix_ms.is_some() {
                assert_eq!(rec.channel, "sip");
                return rec;
            }
        }
        assert!(Instant::now() < deadline, "no ended call record for {id}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn pcmu_call_over_udp_real_speech_is_transcribed_and_replies_flow_back_as_rtp() {
    let s = sip_server();
    let manifest = std::fs::read_to_string(shared().join("speech/manifest.jsonl")).unwrap();
    let reference = manifest
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["path"] == "osr_8k/OSR_us_000_0034_8k.wav")
        .expect("OSR entry")["transcript"]
        .as_str()
        .unwrap()
        .to_string();
    let pcap = s.dir.join("osr0034_pcmu.pcap");
    speech_pcap(
        &shared().join("speech/osr_8k/OSR_us_000_0034_8k.wav"),
        0,
        &pcap,
    );
    let cap = Capture::start();
    let body = [
        invite("PCMU", 0, cap.port),
        pause(6000),
        play(&pcap),
        pause(45_000),
        caller_bye(2),
    ]
    .concat();
    let (packets, rec) = trunk_call(cap, "pcmu_speech", &body, s.udp, "u1");
    assert_eq!(rec.outcome, "caller_hung_up");
    // RTCP receiver statistics of the caller's stream (a recorded pcap on
    // loopback: nothing lost, little jitter).
    let media = rec.media.expect("media quality in the record");
    assert!(media.lost < 5, "{media:?}");
    assert!(media.jitter_ms > 0.0 && media.jitter_ms < 30.0, "{media:?}");
    let hyp: Vec<String> = rec.turns.iter().map(|t| t.caller_text.clone()).collect();
    let w = wer(&reference, &hyp.join(" "));
    eprintln!("SIP OSR WER {:.1}%: {}", w * 100.0, hyp.join(" | "));
    assert!(w <= 0.15, "WER {:.1}% > 15%", w * 100.0);
    // The bot's audio: the greeting, then replies, each a talkspurt.
    let spurts = talkspurts(&packets, 0);
    assert!(spurts.len() >= 2, "{} talkspurts", spurts.len());
    let greeting = transcribe(&spurts[0]).to_lowercase();
    assert!(
        words_found(&rec.greeting, &greeting) >= 0.6,
        "greeting heard as {greeting:?}, said {:?}",
        rec.greeting
    );
    // Each reply the dialogue chose is what went out on the wire (the last
    // spoken reply that was not cut off by the caller's next sentence).
    let said: Vec<&String> = rec
        .turns
        .iter()
        .filter(|t| !t.interrupted && !t.bot_text.is_empty())
        .map(|t| &t.bot_text)
        .collect();
    let last_said = said.last().expect("a reply that played out");
    let last_heard = transcribe(spurts.last().unwrap());
    assert!(
        words_found(last_said, &last_heard) >= 0.6,
        "reply heard as {last_heard:?}, said {last_said:?}"
    );
}

#[test]
fn pcma_call_over_tcp_answers_a_question_takes_digits_once_and_the_bot_hangs_up() {
    let s = sip_server();
    let question = s.dir.join("faq_hours_pcma.pcap");
    speech_pcap(&fixture("faq_hours.wav"), 8, &question);
    let bye = s.dir.join("goodbye_pcma.pcap");
    speech_pcap(&fixture("goodbye.wav"), 8, &bye);
    let cap = Capture::start();
    let digit = sipp_data().join("dtmf_2833_1.pcap");
    let body = [
        invite("PCMA", 8, cap.port),
        pause(6000),
        play(&question),
        pause(12_000),
        play(&digit),
        pause(6000),
        play(&bye),
        bot_bye(),
    ]
    .concat();
    let (packets, rec) = trunk_call(cap, "pcma_tcp", &body, s.tcp, "t1");
    assert_eq!(rec.outcome, "bot_hung_up", "{rec:?}");
    let hours = rec
        .turns
        .iter()
        .find(|t| t.caller_text.to_lowercase().contains("opening hours"))
        .expect("question heard");
    assert_eq!(hours.source, "kb:opening_hours");
    let digits: Vec<&str> = rec.turns.iter().filter_map(|t| t.dtmf.as_deref()).collect();
    assert_eq!(digits, vec!["1"], "one digit per RFC 4733 event");
    let spurts = talkspurts(&packets, 8);
    let heard: Vec<String> = spurts
        .iter()
        .map(|s| transcribe(s).to_lowercase())
        .collect();
    // The answer went out as PCMA: most of its words come back through
    // Whisper tiny (which once heard "Saturday" as "insider day").
    let best = heard
        .iter()
        .map(|h| words_found(&hours.bot_text, h))
        .fold(0.0, f64::max);
    assert!(
        best >= 0.6,
        "{best:.2}: said {:?}, heard {heard:?}",
        hours.bot_text
    );
}

#[test]
fn refer_transfer_carries_the_context_and_a_failed_one_returns_to_the_bot() {
    let s = sip_server();
    let zero = sipp_data().join("dtmf_2833_0.pcap");
    // Accepted: the far end reports 200 in its NOTIFY; the bot leaves with BYE.
    let cap = Capture::start();
    let body = [
        invite("PCMU", 0, cap.port),
        pause(3000),
        play(&zero),
        refer("200 OK"),
        bot_bye(),
    ]
    .concat();
    let (_, rec) = trunk_call(cap, "refer_ok", &body, s.udp, "u1");
    assert!(
        rec.outcome.starts_with("transferred:queue:general"),
        "{}",
        rec.outcome
    );
    assert_eq!(rec.transfer_failures, 0);
    // The context id names a hand-off packet the agent side can fetch.
    let r = api_get(&format!("http://{}/calls/{}/handoff", s.http, rec.call_id)).call();
    assert!(r.is_ok(), "hand-off packet for the REFER's context id");

    // Refused: the agent's line is busy; the caller stays with the bot.
    let cap = Capture::start();
    let body = [
        invite("PCMU", 0, cap.port),
        pause(3000),
        play(&zero),
        refer("486 Busy Here"),
        pause(9000),
        caller_bye(3),
    ]
    .concat();
    let (packets, rec) = trunk_call(cap, "refer_busy", &body, s.udp, "u1");
    assert_eq!(rec.transfer_failures, 1);
    assert_eq!(
        rec.outcome, "caller_hung_up",
        "back with the bot, then the caller hung up"
    );
    let heard = transcribe(talkspurts(&packets, 0).last().unwrap()).to_lowercase();
    assert!(
        heard.contains("still here") || heard.contains("agent"),
        "{heard}"
    );
}

#[test]
fn the_dialled_number_picks_the_agent_and_the_caller_is_recognised() {
    let s = sip_server();
    let cap = Capture::start();
    // Dana, a demo customer of the shop, calls the shop's number.
    let body = [invite("PCMU", 0, cap.port), pause(5000), caller_bye(2)]
        .concat()
        .replace("+15550100123", "+15555550110");
    let (ok, log) = sipp_to(
        "2000",
        &scenario("retailer", &body),
        s.udp,
        "u1",
        "127.0.0.1",
        &[],
    );
    let packets = cap.finish();
    assert!(ok, "sipp call failed:\n{log}");
    let rec = record_of(s.http, "retailer");
    assert!(rec.greeting.contains("Northwind Shop"), "{}", rec.greeting);
    assert!(
        rec.greeting.contains("Dana"),
        "greeted by name: {}",
        rec.greeting
    );
    assert_eq!(
        rec.from_masked.as_deref(),
        Some("+*********10"),
        "the number is masked in records"
    );
    let heard = transcribe(&talkspurts(&packets, 0)[0]).to_lowercase();
    assert!(heard.contains("dana"), "{heard}");
}

#[test]
fn hold_and_unhold_by_re_invite() {
    let s = sip_server();
    let cap = Capture::start();
    let reinvite = |cseq: u32, dir: &str, expect: &str| {
        let msg = invite_msg("PCMU", 0, cap.port, cseq, false)
            .replace(
                "To: <sip:[service]@[remote_ip]:[remote_port]>\n",
                "To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]\n",
            )
            .replace("a=fmtp:101 0-15\n", &format!("a=fmtp:101 0-15\na={dir}\n"));
        format!(
            "{msg}<recv response=\"200\"><action><ereg regexp=\"a={expect}\" search_in=\"body\" check_it=\"true\" assign_to=\"d{cseq}\"/></action></recv>\n{}",
            ack_msg(cseq).replace("X-Unused", "")
        )
    };
    let body = [
        invite("PCMU", 0, cap.port),
        pause(2000),
        reinvite(2, "sendonly", "recvonly"),
        pause(3000),
        reinvite(3, "sendrecv", "sendrecv"),
        pause(2000),
        caller_bye(4),
    ]
    .concat();
    // The ereg variables must be used once to satisfy sipp.
    let body = body.replacen("CSeq: 4 BYE", "CSeq: 4 BYE\nX-Seen: [$d2] [$d3]", 1);
    let (ok, log) = sipp(&scenario("hold", &body), s.udp, "u1", "127.0.0.1", &[]);
    let packets = cap.finish();
    assert!(ok, "sipp hold call failed:\n{log}");
    // The bot's stream stops while held and resumes on the same clock.
    let rtp: Vec<(Instant, u32)> = packets
        .iter()
        .filter(|(_, d)| !rtp::is_rtcp(d))
        .map(|(t, d)| (*t, rtp::parse(d).unwrap().timestamp))
        .collect();
    let (gap_at, gap) = rtp
        .windows(2)
        .map(|w| (w[0], w[1].0.duration_since(w[0].0)))
        .max_by_key(|(_, g)| *g)
        .unwrap();
    assert!(
        gap >= Duration::from_millis(2500),
        "no silence on hold: largest gap {gap:?}"
    );
    let after = rtp.iter().find(|(t, _)| *t > gap_at.0).unwrap();
    let ts_jump = after.1.wrapping_sub(gap_at.1) as f64 / 8.0;
    let wall = after.0.duration_since(gap_at.0).as_millis() as f64;
    assert!(
        (ts_jump - wall).abs() < 200.0,
        "timestamps kept time on hold: {ts_jump} ms vs {wall} ms"
    );
}

#[test]
fn unacceptable_offers_and_strangers_are_refused() {
    let s = sip_server();
    // G.729 only: 488.
    let g729 = r#"<send retrans="500"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: sip:sipp@[local_ip]:[local_port]
Content-Type: application/sdp
Content-Length: [len]

v=0
o=- 1 1 IN IP4 [local_ip]
s=-
c=IN IP4 [local_ip]
t=0 0
m=audio [media_port] RTP/AVP 18
a=rtpmap:18 G729/8000
]]></send>
<recv response="100" optional="true"/>
<recv response="488"/>
<send><![CDATA[
ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Content-Length: 0
]]></send>
"#;
    let (ok, log) = sipp(&scenario("g729", g729), s.udp, "u1", "127.0.0.1", &[]);
    assert!(ok, "488 expected:\n{log}");
    // An address no trunk admits: 403, and no call is set up.
    let forbidden = g729.replace(
        "<recv response=\"100\" optional=\"true\"/>\n<recv response=\"488\"/>",
        "<recv response=\"403\"/>",
    );
    let (ok, log) = sipp(
        &scenario("stranger", &forbidden),
        s.udp,
        "u1",
        "127.0.0.2",
        &[],
    );
    assert!(ok, "403 expected:\n{log}");
    // The PBX trunk must authenticate: 401, then the digest answer gets in.
    let cap = Capture::start();
    let auth = [
        invite_msg("PCMU", 0, cap.port, 1, false),
        "<recv response=\"100\" optional=\"true\"/>\n<recv response=\"401\" auth=\"true\"/>\n"
            .to_string(),
        ack_msg(1),
        invite_msg("PCMU", 0, cap.port, 2, true),
        ANSWERED.to_string(),
        ack_msg(2),
        pause(1000),
        caller_bye(3),
    ]
    .concat();
    let (ok, log) = sipp(
        &scenario("digest", &auth),
        s.udp,
        "u1",
        "127.0.0.3",
        // The digest `uri` must be the Request-URI (sipp's default
        // leaves the user part out).
        &[
            "-au",
            "pbx",
            "-ap",
            "secret",
            "-auth_uri",
            &format!("1000@{}", s.udp),
        ],
    );
    cap.finish();
    assert!(ok, "digest call failed:\n{log}");
    let st: serde_json::Value = api_get(&format!("http://{}/sip", s.http))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert!(st["core"]["rejected_403"].as_u64().unwrap() >= 1);
    assert!(st["core"]["rejected_488"].as_u64().unwrap() >= 1);
    assert!(st["core"]["challenged_401"].as_u64().unwrap() >= 1);
}

#[test]
fn malformed_sip_gets_400_or_silence_and_never_a_crash() {
    let s = sip_server();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let local = sock.local_addr().unwrap();
    let head = |method: &str, extra: &str| {
        format!(
            "{method} sip:1000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{}\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:1000@127.0.0.1>\r\nCall-ID: torture-{}\r\n{extra}",
            fastrand::u32(..),
            fastrand::u32(..)
        )
    };
    // (message, expected status or None for "dropped")
    let cases: Vec<(Vec<u8>, Option<u16>)> = vec![
        // RFC 4475 §3.1.2.4-like: CSeq not a number.
        (format!("{}CSeq: 3g1 OPTIONS\r\nContent-Length: 0\r\n\r\n", head("OPTIONS", "")).into_bytes(), Some(400)),
        // §3.1.2.8-like: negative Content-Length.
        (format!("{}CSeq: 1 INVITE\r\nContent-Length: -999\r\n\r\n", head("INVITE", "")).into_bytes(), Some(400)),
        // §3.1.2.7-like: Content-Length larger than the datagram.
        (format!("{}CSeq: 1 INVITE\r\nContent-Type: application/sdp\r\nContent-Length: 9999\r\n\r\nv=0\r\n", head("INVITE", "")).into_bytes(), Some(400)),
        // §3.3.14-like: unknown protocol version.
        (format!("{}CSeq: 1 OPTIONS\r\n\r\n", head("OPTIONS", "")).replacen("SIP/2.0\r\n", "SIP/7.0\r\n", 1).into_bytes(), Some(505)),
        // §3.1.2.11-like: spaces in the Request-URI.
        (format!("{}CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n", head("INVITE", "")).replacen("sip:1000@127.0.0.1", "sip:1000@127.0.0.1; lr", 1).into_bytes(), Some(400)),
        // SDP that is not SDP.
        (format!("{}CSeq: 1 INVITE\r\nContent-Type: application/sdp\r\nContent-Length: 7\r\n\r\ngarbage", head("INVITE", "")).into_bytes(), Some(488)),
        // No From: nothing to answer with.
        (b"INVITE sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKq\r\nCSeq: 1 INVITE\r\n\r\n".to_vec(), None),
        // Binary noise and a lone response.
        (vec![0xff, 0x00, 0x13, 0x37, b'\r', b'\n', b'\r', b'\n'], None),
        (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKnone\r\n\r\n".to_vec(), None),
    ];
    let mut buf = [0u8; 4096];
    let call_id = |m: &str| {
        m.lines()
            .find_map(|l| l.strip_prefix("Call-ID: ").map(str::to_string))
    };
    let mut earlier: Vec<String> = Vec::new();
    for (msg, want) in cases {
        sock.send_to(&msg, s.udp).unwrap();
        // Retransmissions of earlier answers (Timer G) are not this answer.
        let deadline = Instant::now() + Duration::from_millis(800);
        let mut got = None;
        while Instant::now() < deadline {
            let Ok((n, _)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            if call_id(&text).is_some_and(|c| earlier.contains(&c)) {
                continue;
            }
            got = text
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse::<u16>().ok());
            break;
        }
        assert_eq!(got, want, "{}", String::from_utf8_lossy(&msg));
        earlier.extend(call_id(&String::from_utf8_lossy(&msg)));
    }
    // Still alive and answering.
    let opt = format!(
        "{}CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        head("OPTIONS", "")
    );
    sock.send_to(opt.as_bytes(), s.udp).unwrap();
    let id = call_id(&opt).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        assert!(
            Instant::now() < deadline,
            "OPTIONS answered after the torture"
        );
        let Ok((n, _)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        if call_id(&text).as_deref() == Some(id.as_str()) {
            assert!(text.starts_with("SIP/2.0 200"), "{text}");
            break;
        }
    }
}

/// Everything said on a leg: all its packets decoded in order, cut at
/// pauses of 600 ms or more, each piece transcribed.
fn all_speech(packets: &[(Instant, Vec<u8>)], pt: u8) -> String {
    let mut pcm: Vec<i16> = Vec::new();
    for (_, data) in packets {
        if rtp::is_rtcp(data) {
            continue;
        }
        let p = rtp::parse(data).expect("valid RTP");
        pcm.extend(p.payload.iter().map(|&b| match pt {
            8 => alaw::decode(b),
            _ => mulaw::decode(b),
        }));
    }
    let mut texts = Vec::new();
    let mut start: Option<usize> = None;
    let mut quiet = 0;
    for (i, frame) in pcm.chunks(160).enumerate() {
        let energy = frame.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / frame.len() as f64;
        if energy.sqrt() > 300.0 {
            start.get_or_insert(i);
            quiet = 0;
        } else if let Some(s0) = start {
            quiet += 1;
            if quiet >= 30 || (i - s0) >= 25 * 50 {
                texts.push(transcribe(&pcm[s0 * 160..(i + 1) * 160]));
                start = None;
            }
        }
    }
    if let Some(s0) = start {
        texts.push(transcribe(&pcm[s0 * 160..]));
    }
    texts.join(" ").to_lowercase()
}

/// A response from the agent's sipp to the INVITE, tagged like its 180.
fn agent_response(status: &str, rest: &str) -> String {
    format!(
        r#"<send retrans="500"><![CDATA[
SIP/2.0 {status}
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
{rest}
]]></send>
"#
    )
}

/// The customer-care agent, played by a sipp UAS on the configured port:
/// checks the INVITE carries the caller's hand-off context, then `answer`.
fn agent_scenario(name: &str, caller: &str, answer: &str) -> PathBuf {
    let ctx = caller.replace('.', "\\.");
    let uui: String = caller.bytes().map(|b| format!("{b:02x}")).collect();
    let ringing = agent_response("180 Ringing", "X-Seen: [$ctx] [$uui]\nContent-Length: 0")
        .replace(" retrans=\"500\"", "");
    let body = format!(
        r#"<recv request="INVITE" crlf="true">
  <action>
    <ereg regexp="X-Attendant-Context: {ctx}" search_in="msg" check_it="true" assign_to="ctx"/>
    <ereg regexp="User-to-User: {uui};encoding=hex" search_in="msg" check_it="true" assign_to="uui"/>
  </action>
</recv>
{ringing}<pause milliseconds="500"/>
{answer}"#
    );
    scenario(name, &body)
}

/// One caller (dialling the shop, pressing 0, then `after_zero`) bridged
/// to one agent (a sipp UAS answering with `answer`).
struct BridgeRun {
    caller_ok: bool,
    caller_log: String,
    caller_packets: Vec<(Instant, Vec<u8>)>,
    agent_ok: bool,
    agent_log: String,
}

fn bridge_run(name: &str, answer: &str, after_zero: &[String]) -> BridgeRun {
    let s = sip_server();
    let agent_name = format!("{name}_agent");
    let scenario_file = agent_scenario(&agent_name, &call_id_of(name), answer);
    let port = s.agent_port;
    let agent = std::thread::spawn(move || {
        let out = Command::new("sipp")
            .args(["-sf", &scenario_file.display().to_string()])
            .args(["-m", "1", "-t", "u1", "-i", "127.0.0.1"])
            .args(["-p", &port.to_string(), "-mp", &peer_port().to_string()])
            .args(["-timeout", "120s", "-timeout_error", "-nostdin"])
            .current_dir(scenario_file.parent().unwrap())
            .output()
            .expect("sipp is installed (Debian sip-tester)");
        let log = String::from_utf8_lossy(&out.stdout)
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n");
        (out.status.success(), log)
    });
    std::thread::sleep(Duration::from_millis(500));
    let cap = Capture::start();
    let zero = sipp_data().join("dtmf_2833_0.pcap");
    let mut steps = vec![invite("PCMU", 0, cap.port), pause(3000), play(&zero)];
    steps.extend_from_slice(after_zero);
    let (caller_ok, caller_log) = sipp_to(
        "2000",
        &scenario(name, &steps.concat()),
        s.udp,
        "u1",
        "127.0.0.1",
        &[],
    );
    let caller_packets = cap.finish();
    let (agent_ok, agent_log) = agent.join().unwrap();
    BridgeRun {
        caller_ok,
        caller_log,
        caller_packets,
        agent_ok,
        agent_log,
    }
}

#[test]
fn bridged_transfer_briefs_the_agent_then_relays_both_ways_and_busy_returns_to_the_bot() {
    let s = sip_server();
    let agent_says = s.dir.join("agent_cards.pcap");
    speech_pcap(&shared().join("speech/cmu/cards/005.wav"), 0, &agent_says);
    let caller_says = s.dir.join("caller_order.pcap");
    speech_pcap(&fixture("order_where.wav"), 0, &caller_says);

    // The agent answers, hears the briefing, speaks; later the caller speaks
    // to them and hangs up (we pass the BYE on).
    let agent_cap = Capture::start();
    let sdp = format!(
        "Contact: <sip:care@[local_ip]:[local_port];transport=[transport]>\n\
         Content-Type: application/sdp\nContent-Length: [len]\n\n\
         v=0\no=agent 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\n\
         m=audio {} RTP/AVP 0\na=rtpmap:0 PCMU/8000",
        agent_cap.port
    );
    let answer = [
        agent_response("200 OK", &sdp),
        "<recv request=\"ACK\"/>\n".into(),
        pause(12_000),
        play(&agent_says),
        "<recv request=\"BYE\" timeout=\"90000\"/>\n".into(),
        ANSWER_LAST.into(),
    ]
    .concat();
    let run = bridge_run(
        "bridge_ok",
        &answer,
        &[
            // sipp sends no RTP while it pauses: stay under media.rtp_timeout_s.
            pause(24_000),
            play(&caller_says),
            pause(6000),
            caller_bye(2),
        ],
    );
    let caller_heard = all_speech(&run.caller_packets, 0);
    let agent_heard = all_speech(&agent_cap.finish(), 0);
    assert!(run.caller_ok, "caller's sipp failed:\n{}", run.caller_log);
    assert!(
        run.agent_ok,
        "agent's sipp failed (context header?):\n{}",
        run.agent_log
    );
    let rec = record_of(s.http, "bridge_ok");
    assert_eq!(rec.outcome, "transferred:queue:customer_care", "{rec:?}");
    assert_eq!(rec.transfer_failures, 0);
    eprintln!("agent heard: {agent_heard}\ncaller heard: {caller_heard}");
    // The bot briefed the agent, then the caller's own words came through.
    assert!(
        agent_heard.contains("transferring") || agent_heard.contains("customer care"),
        "briefing: {agent_heard}"
    );
    assert!(
        words_found("calling to check where my order is", &agent_heard) >= 0.6,
        "caller relayed to the agent: {agent_heard}"
    );
    // And the caller heard the agent.
    assert!(
        words_found(
            "eight of spades four of clubs seven of hearts",
            &caller_heard
        ) >= 0.5,
        "agent relayed to the caller: {caller_heard}"
    );

    // Busy agent: the caller stays with the bot, which says so.
    let busy = [
        agent_response("486 Busy Here", "Content-Length: 0"),
        "<recv request=\"ACK\"/>\n".into(),
    ]
    .concat();
    let run = bridge_run("bridge_busy", &busy, &[pause(18_000), caller_bye(2)]);
    assert!(run.caller_ok, "caller's sipp failed:\n{}", run.caller_log);
    assert!(run.agent_ok, "busy agent's sipp failed:\n{}", run.agent_log);
    // While the agent's phone rang, the caller heard ringback.
    let ringback = attendant::media::tones::ringback_frame(0);
    assert!(
        run.caller_packets
            .iter()
            .any(|(_, d)| rtp::parse(d).is_ok_and(|p| p.marker && p.payload == &ringback[..])),
        "no ringback while the agent's phone rang"
    );
    let rec = record_of(s.http, "bridge_busy");
    assert_eq!(rec.transfer_failures, 1, "{rec:?}");
    assert_eq!(rec.outcome, "caller_hung_up");
    let heard = transcribe(talkspurts(&run.caller_packets, 0).last().unwrap()).to_lowercase();
    assert!(
        heard.contains("still here") || heard.contains("agent"),
        "{heard}"
    );
}

/// A SIP-over-TLS client with rustls (sipp in Debian is built without TLS),
/// trusting only the server's test certificate.
struct TlsPeer {
    stream: rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>,
    buf: Vec<u8>,
}

use tokio_rustls::rustls;

impl TlsPeer {
    fn connect(s: &SipServer) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(s.tls_cert.clone().into()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let conn =
            rustls::ClientConnection::new(Arc::new(cfg), "localhost".try_into().unwrap()).unwrap();
        let tcp = std::net::TcpStream::connect(s.tls).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Self {
            stream: rustls::StreamOwned::new(conn, tcp),
            buf: Vec::new(),
        }
    }

    fn send(&mut self, msg: &str) {
        use std::io::Write;
        self.stream.write_all(msg.as_bytes()).unwrap();
        self.stream.flush().unwrap();
    }

    /// The next whole SIP message (head and body).
    fn recv(&mut self) -> String {
        use std::io::Read;
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.trim()
                            .eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                if self.buf.len() >= end + 4 + len {
                    let msg: Vec<u8> = self.buf.drain(..end + 4 + len).collect();
                    return String::from_utf8_lossy(&msg).to_string();
                }
            }
            let mut chunk = [0u8; 4096];
            let n = self
                .stream
                .read(&mut chunk)
                .expect("a SIP message over TLS");
            assert!(n > 0, "server closed the TLS connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads until the final response to `method`, skipping provisionals.
    fn final_response(&mut self, method: &str) -> String {
        loop {
            let m = self.recv();
            let cseq_ok = m
                .lines()
                .any(|l| l.to_ascii_lowercase().starts_with("cseq:") && l.ends_with(method));
            let provisional = m.starts_with("SIP/2.0 1");
            if m.starts_with("SIP/2.0 ") && cseq_ok && !provisional {
                return m;
            }
        }
    }
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn a_call_over_tls_is_answered_and_plain_text_on_the_tls_port_costs_nothing() {
    use std::io::{Read, Write};
    let s = sip_server();
    // A peer speaking plain SIP to the TLS port gets no SIP answer and the
    // listener carries on.
    let mut plain = std::net::TcpStream::connect(s.tls).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    plain
        .write_all(b"OPTIONS sip:attendant@127.0.0.1 SIP/2.0\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    let mut junk = Vec::new();
    let _ = plain.read_to_end(&mut junk);
    assert!(
        !junk.starts_with(b"SIP/2.0"),
        "plain text answered over TLS port"
    );

    let mut peer = TlsPeer::connect(s);
    let local = peer.stream.sock.local_addr().unwrap();
    let cap = Capture::start();
    let call_id = format!("attendant-test-tls-{}@127.0.0.1", std::process::id());
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n",
        cap.port
    );
    let common = |method: &str, cseq: u32, branch: &str, to_tag: &str| {
        format!(
            "{method} sip:1000@localhost:{port};transport=tls SIP/2.0\r\n\
             Via: SIP/2.0/TLS {local};branch=z9hG4bK-tls-{branch}\r\n\
             Max-Forwards: 70\r\n\
             From: \"TLS Caller\" <sip:+15550100777@127.0.0.1>;tag=tls-caller\r\n\
             To: <sip:1000@localhost>{to_tag}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:caller@{local};transport=tls>\r\n",
            port = s.tls.port()
        )
    };
    peer.send(&format!(
        "{}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        common("INVITE", 1, "1", ""),
        sdp.len()
    ));
    let ok = peer.final_response("INVITE");
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    assert!(
        header(&ok, "Via").unwrap().starts_with("SIP/2.0/TLS"),
        "{ok}"
    );
    assert!(
        header(&ok, "Contact").unwrap().contains("transport=tls"),
        "{ok}"
    );
    assert!(ok.contains("RTP/AVP 0"), "PCMU answered: {ok}");
    let to = header(&ok, "To").unwrap();
    let to_tag = &to[to.find(";tag=").expect("To tag")..];
    peer.send(&format!(
        "{}Content-Length: 0\r\n\r\n",
        common("ACK", 1, "2", to_tag)
    ));
    // The greeting plays out over RTP (the sender fills gaps with silence,
    // so "done" is 1.5 s with no voiced packet after some voiced ones).
    let voiced = |p: &Vec<u8>| p.len() > 12 && p[12..].iter().any(|&b| b != 0xFF && b != 0x7F);
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (n, last) = {
            let p = cap.packets.lock().unwrap();
            let v: Vec<Instant> = p
                .iter()
                .filter(|(_, d)| voiced(d))
                .map(|(t, _)| *t)
                .collect();
            (v.len(), v.last().copied())
        };
        if n > 50 && last.is_some_and(|t| t.elapsed() > Duration::from_millis(1500)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "greeting did not finish: {n} voiced packets"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    peer.send(&format!(
        "{}Content-Length: 0\r\n\r\n",
        common("BYE", 2, "3", to_tag)
    ));
    let bye_ok = peer.final_response("BYE");
    assert!(bye_ok.starts_with("SIP/2.0 200"), "{bye_ok}");
    let packets = cap.finish();
    let deadline = Instant::now() + Duration::from_secs(20);
    let rec = loop {
        if let Some(rec) = record(s.http, &call_id).filter(|r| r.ended_unix_ms.is_some()) {
            break rec;
        }
        assert!(Instant::now() < deadline, "no ended record for {call_id}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(rec.outcome, "caller_hung_up");
    // The caller says nothing: all the bot's audio is the greeting (in more
    // than one talkspurt when a later sentence was synthesised under load).
    let spurts = talkspurts(&packets, 0);
    let greeting = transcribe(&spurts.concat()).to_lowercase();
    assert!(
        words_found(&rec.greeting, &greeting) >= 0.6,
        "greeting heard as {greeting:?}, said {:?}",
        rec.greeting
    );
}

/// Sends `wav` as live 20 ms PCMU RTP from `from` (any port) to `to`;
/// returns the packets sent.
fn send_speech(from: &str, to: SocketAddr, wav: &Path) -> usize {
    let sock = UdpSocket::bind((from, 0)).unwrap();
    let samples = audio::read_wav_8k(wav).unwrap();
    let start = Instant::now();
    let mut sent = 0;
    for (i, frame) in samples.chunks(160).enumerate() {
        let payload: Vec<u8> = frame
            .iter()
            .map(|&x| mulaw::encode((x * 32767.0) as i16))
            .collect();
        let pkt = rtp::write(&rtp::Packet {
            marker: i == 0,
            payload_type: 0,
            seq: 7000 + i as u16,
            timestamp: 90_000 + 160 * i as u32,
            ssrc: 0xbad,
            payload: &payload,
        });
        if sock.send_to(&pkt, to).is_ok() {
            sent += 1;
        }
        let next = start + Duration::from_millis(20 * (i as u64 + 1));
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    sent
}

fn foreign_rtp_dropped(http: SocketAddr) -> u64 {
    let text = api_get(&format!("http://{http}/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("attendant_rtp_foreign_dropped_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

#[test]
fn rtp_from_a_third_address_is_not_heard_once_the_peer_is_locked() {
    let s = sip_server();
    let question = s.dir.join("faq_hours_lock.pcap");
    speech_pcap(&fixture("faq_hours.wav"), 0, &question);
    let port_file = s.dir.join("rtp_lock_port.txt");
    let cap = Capture::start();
    // The scenario tells us the bot's RTP port, as a sniffing attacker
    // would learn it from the SDP answer.
    let body = [
        invite_msg("PCMU", 0, cap.port, 1, false),
        "<recv response=\"100\" optional=\"true\"/>\n<recv response=\"180\" optional=\"true\"/>\n".into(),
        "<recv response=\"200\" rtd=\"true\"><action><ereg regexp=\"m=audio ([0-9]+)\" search_in=\"body\" check_it=\"true\" assign_to=\"m,port\"/></action></recv>\n".into(),
        ack_msg(1),
        format!(
            "<nop><action><exec command=\"echo [$port] > {}; : '[$m]'\"/></action></nop>\n",
            port_file.display()
        ),
        play(&question),
        pause(12_000),
        caller_bye(2),
    ]
    .concat();
    let path = scenario("rtp_lock", &body);
    let dropped_before = foreign_rtp_dropped(s.http);
    let attacker = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Some(p) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|t| t.trim().parse::<u16>().ok())
            {
                break p;
            }
            if Instant::now() > deadline {
                return 0;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // After the caller's question has started (the peer is locked).
        std::thread::sleep(Duration::from_secs(4));
        let to: SocketAddr = ([127, 0, 0, 1], port).into();
        send_speech("127.0.0.9", to, &fixture("goodbye.wav"))
    });
    let (ok, log) = sipp(&path, s.udp, "u1", "127.0.0.1", &[]);
    let injected = attacker.join().unwrap();
    cap.finish();
    assert!(injected > 50, "sipp never noted the RTP port:\n{log}");
    // Had the injected "goodbye" been heard, the bot would have hung up and
    // the caller's BYE would have failed.
    assert!(ok, "sipp call failed:\n{log}");
    let rec = record_of(s.http, "rtp_lock");
    assert_eq!(rec.outcome, "caller_hung_up", "{rec:?}");
    let heard: Vec<String> = rec
        .turns
        .iter()
        .map(|t| t.caller_text.to_lowercase())
        .collect();
    assert!(
        heard.iter().any(|t| t.contains("opening hours")),
        "{heard:?}"
    );
    assert!(!heard.iter().any(|t| t.contains("bye")), "{heard:?}");
    assert!(
        foreign_rtp_dropped(s.http) - dropped_before >= injected as u64,
        "every injected packet is dropped and counted"
    );
}

/// One SIP exchange from a raw UDP socket: sends `msg`, returns the
/// responses that arrive within 2 s until a final one.
fn exchange(sock: &UdpSocket, to: SocketAddr, msg: &str) -> Vec<String> {
    sock.send_to(msg.as_bytes(), to).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            let code: u16 = text.get(8..11).and_then(|c| c.parse().ok()).unwrap_or(0);
            got.push(text);
            if code >= 200 {
                break;
            }
        }
    }
    got
}

#[test]
fn a_captured_sha256_digest_is_accepted_once_and_refused_on_replay() {
    use sha2::{Digest, Sha256};
    let s = sip_server();
    let sock = UdpSocket::bind("127.0.0.5:0").unwrap();
    let local = sock.local_addr().unwrap();
    let sha = |x: String| hex::encode(Sha256::digest(x.as_bytes()));
    let uri = format!("sip:1000@{}", s.udp);
    let invite = |call: &str, branch: &str, from: &str, auth: &str| {
        let body = format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.5\r\ns=-\r\nc=IN IP4 127.0.0.5\r\nt=0 0\r\nm=audio {} RTP/AVP 0\r\n",
            peer_port()
        );
        format!(
            "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch}\r\n\
             From: <sip:{from}@127.0.0.5>;tag=t{branch}\r\nTo: <{uri}>\r\nCall-ID: {call}\r\n\
             CSeq: 1 INVITE\r\nContact: <sip:modern@{local}>\r\n{auth}Max-Forwards: 70\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let pid = std::process::id();
    let first = format!("replay-a-{pid}");
    let r = exchange(
        &sock,
        s.udp,
        &invite(&first, "z9hG4bKr1", "+15550100123", ""),
    );
    let challenge = r.last().expect("a 401");
    assert!(challenge.starts_with("SIP/2.0 401"), "{challenge}");
    // The first challenge is SHA-256 (RFC 8760), MD5 after it.
    let offered = header(challenge, "WWW-Authenticate").unwrap();
    assert!(offered.contains("algorithm=SHA-256"), "{offered}");
    let nonce = offered
        .split("nonce=\"")
        .nth(1)
        .and_then(|n| n.split('"').next())
        .unwrap();
    let ha1 = sha("modern:attendant:secret5".into());
    let ha2 = sha(format!("INVITE:{uri}"));
    let resp = sha(format!("{ha1}:{nonce}:00000001:c0ffee:auth:{ha2}"));
    let auth = format!(
        "Authorization: Digest username=\"modern\", realm=\"attendant\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{resp}\", algorithm=SHA-256, qop=auth, nc=00000001, cnonce=\"c0ffee\"\r\n"
    );
    let r = exchange(
        &sock,
        s.udp,
        &invite(&first, "z9hG4bKr2", "+15550100123", &auth),
    );
    let ok = r.last().expect("an answer");
    assert!(ok.starts_with("SIP/2.0 200"), "{r:?}");
    let to = header(ok, "To").unwrap().to_string();
    let bye = format!(
        "BYE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKr3\r\n\
         From: <sip:+15550100123@127.0.0.5>;tag=tz9hG4bKr2\r\nTo: {to}\r\nCall-ID: {first}\r\n\
         CSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    let r = exchange(&sock, s.udp, &bye);
    assert!(
        r.last().is_some_and(|m| m.starts_with("SIP/2.0 200")),
        "{r:?}"
    );
    // The same Authorization on a new call with another caller: refused.
    let replay = invite(
        &format!("replay-b-{pid}"),
        "z9hG4bKr4",
        "+15550100666",
        &auth,
    );
    let r = exchange(&sock, s.udp, &replay);
    let last = r.last().expect("an answer");
    assert!(last.starts_with("SIP/2.0 401"), "{r:?}");
    assert!(header(last, "WWW-Authenticate")
        .unwrap()
        .contains("stale=true"));
    assert!(record(s.http, &format!("replay-b-{pid}")).is_none());
}
