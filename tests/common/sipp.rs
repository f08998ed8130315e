//! sipp scenario pieces shared by the SIP test binaries (adapted from
//! SIPp's uac_pcap.xml and the Asterisk test suite's REFER alice.xml).

use std::net::UdpSocket;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use attendant::client::audio;
use attendant::media::{alaw, mulaw};
use attendant::transport::rtp;

/// A whole scenario file's text around `body`.
pub fn scenario_xml(name: &str, body: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"ISO-8859-1\" ?>\n<scenario name=\"{name}\">\n{body}</scenario>\n"
    )
}

/// The caller's INVITE with one codec and RFC 4733 events.
pub fn invite_msg(
    codec: &str,
    pt: u8,
    media_port: impl std::fmt::Display,
    cseq: u32,
    auth: bool,
) -> String {
    let auth = if auth { "[authentication]\n" } else { "" };
    format!(
        r#"<send retrans="500"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: "Test Caller" <sip:+15550100123@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: {cseq} INVITE
{auth}Contact: sip:sipp@[local_ip]:[local_port];transport=[transport]
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

v=0
o=user1 53655765 2353687637 IN IP4 [local_ip]
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio {media_port} RTP/AVP {pt} 101
a=rtpmap:{pt} {codec}/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
]]></send>
"#
    )
}

pub fn ack_msg(cseq: u32) -> String {
    format!(
        r#"<send><![CDATA[
ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: "Test Caller" <sip:+15550100123@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: {cseq} ACK
Max-Forwards: 70
Content-Length: 0
]]></send>
"#
    )
}

pub const ANSWERED: &str = "<recv response=\"100\" optional=\"true\"/>\n<recv response=\"180\" optional=\"true\"/>\n<recv response=\"200\" rtd=\"true\"/>\n";

pub fn invite(codec: &str, pt: u8, media_port: impl std::fmt::Display) -> String {
    [
        invite_msg(codec, pt, media_port, 1, false),
        ANSWERED.to_string(),
        ack_msg(1),
    ]
    .concat()
}

pub fn pause(ms: u64) -> String {
    format!("<pause milliseconds=\"{ms}\"/>\n")
}

pub fn play(pcap: &Path) -> String {
    format!(
        "<nop><action><exec play_pcap_audio=\"{}\"/></action></nop>\n",
        pcap.display()
    )
}

pub fn caller_bye(cseq: u32) -> String {
    format!(
        r#"<send retrans="500"><![CDATA[
BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: "Test Caller" <sip:+15550100123@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: {cseq} BYE
Max-Forwards: 70
Content-Length: 0
]]></send>
<recv response="200"/>
"#
    )
}

pub const ANSWER_LAST: &str = r#"<send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]></send>
"#;

pub fn bot_bye() -> String {
    format!("<recv request=\"BYE\" timeout=\"40000\"/>\n{ANSWER_LAST}")
}

/// Datagrams with their arrival time.
pub type Captured = Arc<Mutex<Vec<(Instant, Vec<u8>)>>>;

/// RTP the bot sends us, as it arrived.
pub struct Capture {
    pub port: u16,
    pub packets: Captured,
    stop: Arc<AtomicBool>,
}

impl Capture {
    pub fn start() -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let port = sock.local_addr().unwrap().port();
        let packets: Captured = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (packets.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                if let Ok((n, _)) = sock.recv_from(&mut buf) {
                    p.lock().unwrap().push((Instant::now(), buf[..n].to_vec()));
                }
            }
        });
        Self {
            port,
            packets,
            stop,
        }
    }

    pub fn finish(self) -> Vec<(Instant, Vec<u8>)> {
        self.stop.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(150));
        std::mem::take(&mut *self.packets.lock().unwrap())
    }
}

/// The bot's talkspurts (marker bit to the next marker), decoded to PCM.
pub fn talkspurts(packets: &[(Instant, Vec<u8>)], pt: u8) -> Vec<Vec<i16>> {
    let mut spurts: Vec<Vec<i16>> = Vec::new();
    let mut prev: Option<(u16, u32)> = None;
    for (_, data) in packets {
        if rtp::is_rtcp(data) {
            continue;
        }
        let p = rtp::parse(data).expect("the bot sends valid RTP");
        assert_eq!(p.payload_type, pt, "negotiated payload type");
        assert_eq!(p.payload.len(), 160, "20 ms packets");
        if let Some((seq, ts)) = prev {
            assert_eq!(
                p.seq,
                seq.wrapping_add(1),
                "sequence numbers are continuous"
            );
            assert_eq!(
                p.timestamp,
                ts.wrapping_add(160),
                "timestamps advance 160 per packet"
            );
        }
        prev = Some((p.seq, p.timestamp));
        if p.marker {
            spurts.push(Vec::new());
        }
        if let Some(s) = spurts.last_mut() {
            s.extend(p.payload.iter().map(|&b| match pt {
                8 => alaw::decode(b),
                _ => mulaw::decode(b),
            }));
        }
    }
    spurts
}

/// Writes 20 ms G.711 frames of `wav` as an Ethernet/IPv4/UDP/RTP pcap that
/// sipp's play_pcap_audio replays (it rewrites addresses and ports).
pub fn speech_pcap(wav: &Path, pt: u8, out: &Path) {
    let samples = audio::read_wav_8k(wav).unwrap();
    let mut pcm: Vec<i16> = samples.iter().map(|&x| (x * 32767.0) as i16).collect();
    pcm.resize(pcm.len().div_ceil(160) * 160, 0);
    let mut f = Vec::new();
    f.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
    f.extend_from_slice(&2u16.to_le_bytes());
    f.extend_from_slice(&4u16.to_le_bytes());
    f.extend_from_slice(&[0u8; 8]);
    f.extend_from_slice(&65535u32.to_le_bytes());
    f.extend_from_slice(&1u32.to_le_bytes());
    for (i, frame) in pcm.chunks(160).enumerate() {
        let payload: Vec<u8> = frame
            .iter()
            .map(|&s| {
                if pt == 8 {
                    alaw::encode(s)
                } else {
                    mulaw::encode(s)
                }
            })
            .collect();
        let rtp = rtp::write(&rtp::Packet {
            marker: i == 0,
            payload_type: pt,
            seq: 1000 + i as u16,
            timestamp: 5000 + 160 * i as u32,
            ssrc: 0x5eed,
            payload: &payload,
        });
        let udp_len = 8 + rtp.len();
        let ip_len = 20 + udp_len;
        let mut pkt = vec![0u8; 12];
        pkt.extend_from_slice(&[0x08, 0x00]);
        let mut ip = vec![
            0x45,
            0,
            (ip_len >> 8) as u8,
            ip_len as u8,
            0,
            0,
            0,
            0,
            64,
            17,
            0,
            0,
            127,
            0,
            0,
            1,
            127,
            0,
            0,
            1,
        ];
        let sum: u32 = ip
            .chunks(2)
            .map(|w| u16::from_be_bytes([w[0], w[1]]) as u32)
            .sum();
        let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        pkt.extend_from_slice(&ip);
        pkt.extend_from_slice(&6000u16.to_be_bytes());
        pkt.extend_from_slice(&20000u16.to_be_bytes());
        pkt.extend_from_slice(&(udp_len as u16).to_be_bytes());
        pkt.extend_from_slice(&[0, 0]);
        pkt.extend_from_slice(&rtp);
        let t_us = i as u64 * 20_000;
        f.extend_from_slice(&((t_us / 1_000_000) as u32).to_le_bytes());
        f.extend_from_slice(&((t_us % 1_000_000) as u32).to_le_bytes());
        f.extend_from_slice(&(pkt.len() as u32).to_le_bytes());
        f.extend_from_slice(&(pkt.len() as u32).to_le_bytes());
        f.extend_from_slice(&pkt);
    }
    std::fs::write(out, f).unwrap();
}
