//! Property-based fuzzing of every parser that reads what the network sends:
//! SIP messages (and the whole SIP core), SDP, digest headers, RTP, RTCP,
//! RFC 4733 events and Twilio Media Streams messages. Inputs are random
//! bytes and mutations (flips, inserts, deletions, truncations, repeats) of
//! a seed corpus taken from ../shared/data (sipp scenarios and pcaps,
//! Twilio's documented messages and a recorded session). The property is
//! the one untrusted input must meet: no panic, and bounded output.
//!
//! `FUZZ_CASES` sets the cases per target (default 1,500, a few seconds);
//! `scripts/fuzz.sh` runs long campaigns and prints executions per target.

use crate::common;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use attendant::transport::rtp::{self, dtmf::DtmfDecoder, rtcp};
use attendant::transport::sip::config::{SipConfig, DEFAULT_TOML};
use attendant::transport::sip::core::{Peer, SipCore, Transport};
use attendant::transport::sip::{auth, message, sdp};
use attendant::transport::twilio::stream::StreamSession;
use attendant::transport::webrtc;
use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500)
}

fn config() -> Config {
    Config {
        cases: cases(),
        // Failures are reported with the minimal input, not stored in the
        // tree.
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..Config::default()
    }
}

struct Corpus {
    sip: Vec<Vec<u8>>,
    sdp: Vec<Vec<u8>>,
    rtp: Vec<Vec<u8>>,
    twilio: Vec<Vec<u8>>,
    /// WebRTC offers (audio + data channel, as a caller sends) and the SIP SDP bodies.
    webrtc: Vec<Vec<u8>>,
}

/// SIP messages of the sipp scenarios with their keywords filled in.
fn sip_seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let dirs = [
        shared().join("sipp/sipp_upstream"),
        shared().join("sipp/asterisk_testsuite"),
    ];
    let mut files = Vec::new();
    for d in dirs {
        collect(&d, "xml", &mut files);
    }
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for block in text.split("<![CDATA[").skip(1) {
            let Some((msg, _)) = block.split_once("]]>") else {
                continue;
            };
            let filled = fill_keywords(msg.trim());
            if filled.starts_with("SIP/2.0") || filled.contains(" SIP/2.0") {
                let lines: Vec<&str> = filled.lines().map(str::trim).collect();
                let mut msg = format!("{}\r\n", lines.join("\r\n"));
                if !msg.contains("\r\n\r\n") {
                    msg.push_str("\r\n");
                }
                let body = msg.split_once("\r\n\r\n").map_or(0, |(_, b)| b.len());
                out.push(msg.replace("{LEN}", &body.to_string()).into_bytes());
            }
        }
    }
    assert!(out.len() >= 10, "sipp scenario seeds: {}", out.len());
    out
}

fn fill_keywords(msg: &str) -> String {
    let mut s = String::new();
    let mut rest = msg;
    while let Some(i) = rest.find('[') {
        s.push_str(&rest[..i]);
        match rest[i..].find(']') {
            Some(j) => {
                let key = &rest[i + 1..i + j];
                let header = |name: &str| {
                    let name = name.trim_end_matches(':');
                    let value = match name.to_ascii_lowercase().as_str() {
                        "via" => "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKseed",
                        "from" => "<sip:caller@127.0.0.1>;tag=1",
                        "to" => "<sip:1000@127.0.0.1>;tag=2",
                        "call-id" => "fuzz-1@127.0.0.1",
                        "cseq" => "1 INVITE",
                        _ => "1",
                    };
                    format!("{name}: {value}")
                };
                let last = key.strip_prefix("last_").map(header);
                s.push_str(match key {
                    _ if last.is_some() => last.as_deref().unwrap_or_default(),
                    "peer_tag_param" => ";tag=peer1",
                    "pid" | "call_number" | "cseq" => "1",
                    "media_ip_type" => "4",
                    "service" => "1000",
                    "remote_ip" | "local_ip" | "media_ip" => "127.0.0.1",
                    "remote_port" | "local_port" => "5060",
                    "media_port" => "6000",
                    "transport" => "UDP",
                    "len" => "{LEN}",
                    "call_id" => "fuzz-1@127.0.0.1",
                    "branch" => "z9hG4bKfuzz",
                    _ => "x1",
                });
                rest = &rest[i + j + 1..];
            }
            None => {
                s.push_str(&rest[i..]);
                rest = "";
            }
        }
    }
    s.push_str(rest);
    s
}

fn collect(dir: &std::path::Path, ext: &str, out: &mut Vec<std::path::PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, ext, out);
        } else if p.extension().is_some_and(|x| x == ext) {
            out.push(p);
        }
    }
}

/// UDP payloads of the sipp pcaps (RTP and RFC 4733 events).
fn rtp_seeds() -> Vec<Vec<u8>> {
    let mut files = Vec::new();
    collect(&shared().join("sipp"), "pcap", &mut files);
    let mut out = Vec::new();
    for f in files {
        let b = std::fs::read(&f).unwrap();
        let mut at = 24;
        while at + 16 <= b.len() {
            let len = u32::from_le_bytes(b[at + 8..at + 12].try_into().unwrap()) as usize;
            let pkt = &b[(at + 16).min(b.len())..(at + 16 + len).min(b.len())];
            // Ethernet + IPv4 (IHL) + UDP.
            if pkt.len() > 14 + 20 + 8 {
                let ihl = (pkt[14] & 0x0f) as usize * 4;
                if let Some(udp) = pkt.get(14 + ihl + 8..) {
                    out.push(udp.to_vec());
                }
            }
            at += 16 + len;
        }
    }
    assert!(out.len() >= 10, "pcap seeds: {}", out.len());
    out
}

fn twilio_seeds() -> Vec<Vec<u8>> {
    let mut files = Vec::new();
    collect(&shared().join("twilio"), "json", &mut files);
    collect(&shared().join("twilio"), "jsonl", &mut files);
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        if f.extension().is_some_and(|x| x == "jsonl") {
            out.extend(text.lines().take(200).map(|l| l.as_bytes().to_vec()));
        } else {
            out.push(text.into_bytes());
        }
    }
    assert!(out.len() >= 5, "twilio seeds: {}", out.len());
    out
}

fn corpus() -> &'static Corpus {
    static C: OnceLock<Corpus> = OnceLock::new();
    C.get_or_init(|| {
        let sip = sip_seeds();
        let sdp = sip
            .iter()
            .filter_map(|m| {
                let s = String::from_utf8_lossy(m);
                s.split_once("\r\n\r\n")
                    .map(|(_, b)| b.as_bytes().to_vec())
                    .filter(|b| b.starts_with(b"v=0"))
            })
            .collect::<Vec<_>>();
        assert!(!sdp.is_empty(), "SDP seeds from the sipp scenarios");
        let addr: std::net::SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let mut webrtc: Vec<Vec<u8>> = (0..4)
            .map(|_| {
                let (_, offer) =
                    webrtc::Session::offer(&[addr], std::time::Instant::now()).expect("offer");
                offer.into_bytes()
            })
            .collect();
        webrtc.extend(sdp.iter().cloned());
        Corpus {
            sip,
            sdp,
            webrtc,
            rtp: rtp_seeds(),
            twilio: twilio_seeds(),
        }
    })
}

/// One mutation: (what, where, a byte).
type Op = (u8, u16, u8);

fn mutate(seed: &[u8], ops: &[Op]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for &(kind, pos, byte) in ops {
        let at = if v.is_empty() {
            0
        } else {
            pos as usize % v.len()
        };
        match kind % 6 {
            0 if !v.is_empty() => v[at] ^= byte | 1,
            1 => v.insert(at, byte),
            2 if !v.is_empty() => {
                v.remove(at);
            }
            3 => v.truncate(at),
            // Repeat a stretch (long headers, many lines).
            4 if !v.is_empty() => {
                let end = (at + byte as usize + 1).min(v.len());
                let chunk = v[at..end].to_vec();
                for _ in 0..(byte % 8 + 1) {
                    v.splice(at..at, chunk.iter().copied());
                }
            }
            // Interesting bytes: separators and digits.
            _ => {
                const SPECIAL: &[u8] = b"\r\n:;,=\"<>@ 0123456789/";
                v.insert(at, SPECIAL[byte as usize % SPECIAL.len()]);
            }
        }
    }
    v
}

fn input(seeds: fn(&Corpus) -> &Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let n = seeds(corpus()).len();
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..1500),
        4 => (0..n, proptest::collection::vec(any::<Op>(), 0..12))
            .prop_map(move |(i, ops)| mutate(&seeds(corpus())[i], &ops)),
    ]
}

fn core() -> SipCore {
    let mut cfg = SipConfig::parse(DEFAULT_TOML, "default").unwrap();
    cfg.timers.t1_ms = 100;
    SipCore::new(cfg)
}

fn peer() -> Peer {
    Peer {
        addr: "127.0.0.1:5070".parse::<SocketAddr>().unwrap(),
        transport: Transport::Udp,
        local: "127.0.0.1:5060".parse().unwrap(),
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn sip_parser(data in input(|c| &c.sip)) {
        let _ = message::parse(&data);
    }

    /// Several messages into one core: whatever they are, the core answers
    /// at most a few datagrams per message and keeps no unbounded state.
    #[test]
    fn sip_core(msgs in proptest::collection::vec(input(|c| &c.sip), 1..6)) {
        let mut c = core();
        let t0 = Instant::now();
        let mut sent = 0;
        for (i, m) in msgs.iter().enumerate() {
            c.handle(t0 + Duration::from_millis(i as u64 * 10), peer(), m);
            while c.poll_transmit().is_some() {
                sent += 1;
            }
            while c.poll_event().is_some() {}
        }
        c.handle_timeout(t0 + Duration::from_secs(40));
        while c.poll_transmit().is_some() {
            sent += 1;
        }
        prop_assert!(sent <= msgs.len() * 12, "{sent} datagrams for {} messages", msgs.len());
    }

    #[test]
    fn sdp_parser(data in input(|c| &c.sdp)) {
        if let Ok(offer) = sdp::parse(&data) {
            let _ = sdp::negotiate(&offer, &[sdp::Codec::Pcmu, sdp::Codec::Pcma], true);
        }
    }

    #[test]
    fn webrtc_offer(data in input(|c| &c.webrtc)) {
        let addr: std::net::SocketAddr = "127.0.0.1:50000".parse().unwrap();
        let text = String::from_utf8_lossy(&data);
        let _ = webrtc::Session::accept(&text, &[addr], &[], std::time::Instant::now());
    }

    #[test]
    fn digest_header(data in input(|c| &c.sip)) {
        let text = String::from_utf8_lossy(&data);
        let _ = auth::parse_digest(&text);
        let _ = auth::parse_digest(&format!("Digest {text}"));
    }

    #[test]
    fn rtp_rtcp_and_events(data in input(|c| &c.rtp)) {
        if let Ok(p) = rtp::parse(&data) {
            let mut d = DtmfDecoder::default();
            let _ = d.push(p.timestamp, p.payload);
            let _ = d.push(p.timestamp, p.payload);
            let _ = d.flush();
        }
        let mut reports = rtcp::Session::new(1, 8000, std::time::Instant::now());
        reports.on_rtcp(&data, std::time::Instant::now(), rtcp::Ntp::now());
        let _ = reports.quality();
        let mut d = DtmfDecoder::default();
        let _ = d.push(0, &data);
    }

    #[test]
    fn twilio_messages(msgs in proptest::collection::vec(input(|c| &c.twilio), 1..8)) {
        let mut s = StreamSession::new(2);
        for m in msgs {
            let _ = s.handle_text(&String::from_utf8_lossy(&m));
        }
        let now = Instant::now();
        let mut out = 0;
        while s.poll_transmit(now).is_some() {
            out += 1;
            prop_assert!(out < 10_000);
        }
    }
}

/// The corpus reaches past the first check: most seeds are valid input.
#[test]
fn seeds_are_mostly_valid() {
    let c = corpus();
    let ok = |v: &Vec<Vec<u8>>, f: &dyn Fn(&[u8]) -> bool| v.iter().filter(|s| f(s)).count();
    let sip = ok(&c.sip, &|s| message::parse(s).is_ok());
    let sdp = ok(&c.sdp, &|s| sdp::parse(s).is_ok());
    let addr: std::net::SocketAddr = "127.0.0.1:50000".parse().unwrap();
    let rtc = ok(&c.webrtc[..4].to_vec(), &|s| {
        webrtc::Session::accept(
            &String::from_utf8_lossy(s),
            &[addr],
            &[],
            std::time::Instant::now(),
        )
        .is_ok()
    });
    assert_eq!(rtc, 4, "the WebRTC offer seeds are answered");
    let rtp_ok = ok(&c.rtp, &|s| rtp::parse(s).is_ok());
    // Each message as the next one of a started stream.
    let start = c
        .twilio
        .iter()
        .find(|s| String::from_utf8_lossy(s).contains("\"event\":\"start\""))
        .expect("a start message");
    let tw = ok(&c.twilio, &|s| {
        let mut session = StreamSession::new(2);
        let _ = session.handle_text(&String::from_utf8_lossy(start));
        session.handle_text(&String::from_utf8_lossy(s)).is_ok()
    });
    eprintln!(
        "seeds valid: SIP {sip}/{}, SDP {sdp}/{}, RTP {rtp_ok}/{}, Twilio {tw}/{}",
        c.sip.len(),
        c.sdp.len(),
        c.rtp.len(),
        c.twilio.len()
    );
    assert!(sip * 2 > c.sip.len());
    assert!(sdp * 2 > c.sdp.len());
    assert!(rtp_ok * 2 > c.rtp.len());
    assert!(tw * 2 > c.twilio.len());
}
