//! SDP offer/answer (RFC 3264) for one audio stream: G.711 μ-law or A-law
//! plus RFC 4733 telephone-event. Anything else gets 488.

use std::fmt::Write as _;
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    Pcmu,
    Pcma,
}

impl Codec {
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn attr(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }
    /// What we answer to the offerer's direction (RFC 3264 §6.1).
    fn answer(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SdpError {
    #[error("SDP is not text")]
    NotText,
    #[error("malformed SDP line: {0}")]
    Line(String),
    #[error("no connection address")]
    NoConnection,
    #[error("no audio stream offered")]
    NoAudio,
    #[error("no codec in common (offered {0})")]
    NoCodec(String),
}

/// The remote side's audio description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteMedia {
    pub addr: IpAddr,
    pub port: u16,
    /// Offered payload types in order, with their rtpmap names when given.
    pub formats: Vec<(u8, Option<String>)>,
    pub direction: Direction,
    pub ptime: Option<u32>,
}

impl RemoteMedia {
    /// On hold: the far end will not receive, or pointed us at 0.0.0.0.
    pub fn on_hold(&self) -> bool {
        matches!(self.direction, Direction::SendOnly | Direction::Inactive)
            || self.addr.is_unspecified()
    }
}

pub fn parse(body: &[u8]) -> Result<RemoteMedia, SdpError> {
    let text = std::str::from_utf8(body).map_err(|_| SdpError::NotText)?;
    let mut session_addr: Option<IpAddr> = None;
    let mut session_dir = Direction::SendRecv;
    let mut audio: Option<RemoteMedia> = None;
    let mut in_audio = false;
    let mut seen_media = false;
    for raw in text.lines() {
        let line = raw.trim_end();
        if line.is_empty() {
            continue;
        }
        let (kind, value) = line
            .split_once('=')
            .filter(|(k, _)| k.len() == 1)
            .ok_or_else(|| SdpError::Line(clip(line)))?;
        match kind {
            "c" => {
                let addr = parse_connection(value).ok_or_else(|| SdpError::Line(clip(line)))?;
                match (&mut audio, in_audio) {
                    (Some(a), true) => a.addr = addr,
                    _ if !seen_media => session_addr = Some(addr),
                    _ => {}
                }
            }
            "m" => {
                seen_media = true;
                let mut it = value.split_whitespace();
                let media = it.next().unwrap_or("");
                let port: u16 = it
                    .next()
                    .and_then(|p| p.split('/').next())
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(|| SdpError::Line(clip(line)))?;
                let proto = it.next().unwrap_or("");
                in_audio =
                    media == "audio" && audio.is_none() && port != 0 && proto.starts_with("RTP/");
                if in_audio {
                    let formats = it
                        .filter_map(|f| f.parse::<u8>().ok())
                        .map(|pt| (pt, None))
                        .collect();
                    audio = Some(RemoteMedia {
                        addr: session_addr.unwrap_or(IpAddr::from([0, 0, 0, 0])),
                        port,
                        formats,
                        direction: session_dir,
                        ptime: None,
                    });
                }
            }
            "a" => {
                let (name, arg) = value.split_once(':').unwrap_or((value, ""));
                let dir = match name {
                    "sendrecv" => Some(Direction::SendRecv),
                    "sendonly" => Some(Direction::SendOnly),
                    "recvonly" => Some(Direction::RecvOnly),
                    "inactive" => Some(Direction::Inactive),
                    _ => None,
                };
                match (&mut audio, in_audio) {
                    (Some(a), true) => {
                        if let Some(d) = dir {
                            a.direction = d;
                        } else if name == "rtpmap" {
                            let mut it = arg.split_whitespace();
                            let pt = it.next().and_then(|p| p.parse::<u8>().ok());
                            let enc = it.next().map(|e| e.to_string());
                            if let (Some(pt), Some(enc)) = (pt, enc) {
                                if let Some(f) = a.formats.iter_mut().find(|(p, _)| *p == pt) {
                                    f.1 = Some(enc);
                                }
                            }
                        } else if name == "ptime" {
                            a.ptime = arg.trim().parse().ok();
                        }
                    }
                    _ if !seen_media => {
                        if let Some(d) = dir {
                            session_dir = d;
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    let audio = audio.ok_or(SdpError::NoAudio)?;
    if audio.addr.is_unspecified()
        && session_addr.is_none()
        && audio.direction == Direction::SendRecv
    {
        // No c= anywhere; 0.0.0.0 (hold) must be explicit.
        let has_c = text.lines().any(|l| l.starts_with("c="));
        if !has_c {
            return Err(SdpError::NoConnection);
        }
    }
    Ok(audio)
}

fn parse_connection(v: &str) -> Option<IpAddr> {
    let mut it = v.split_whitespace();
    let (net, _ty, addr) = (it.next()?, it.next()?, it.next()?);
    if net != "IN" {
        return None;
    }
    addr.split('/').next()?.parse().ok()
}

fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

/// What we agreed to send and receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub codec: Codec,
    /// Payload type of telephone-event, when the offer had it.
    pub dtmf_pt: Option<u8>,
    pub direction: Direction,
}

fn encoding_of(pt: u8, name: &Option<String>) -> Option<String> {
    match name {
        Some(n) => Some(n.split('/').next().unwrap_or("").to_ascii_uppercase()),
        // Static payload types need no rtpmap (RFC 3551).
        None => match pt {
            0 => Some("PCMU".into()),
            8 => Some("PCMA".into()),
            _ => None,
        },
    }
}

/// Picks our first preferred codec the offer has, and telephone-event.
pub fn negotiate(offer: &RemoteMedia, prefs: &[Codec], dtmf: bool) -> Result<Negotiated, SdpError> {
    let names: Vec<(u8, Option<String>)> = offer
        .formats
        .iter()
        .map(|(pt, n)| (*pt, encoding_of(*pt, n)))
        .collect();
    let codec = prefs
        .iter()
        .copied()
        .find(|c| {
            names
                .iter()
                .any(|(pt, n)| n.as_deref() == Some(c.name()) && *pt == c.payload_type())
        })
        .ok_or_else(|| {
            SdpError::NoCodec(
                names
                    .iter()
                    .map(|(pt, n)| n.clone().unwrap_or_else(|| pt.to_string()))
                    .collect::<Vec<_>>()
                    .join(" "),
            )
        })?;
    let dtmf_pt = dtmf
        .then(|| {
            names
                .iter()
                .find(|(_, n)| n.as_deref() == Some("TELEPHONE-EVENT"))
                .map(|(pt, _)| *pt)
        })
        .flatten();
    Ok(Negotiated {
        codec,
        dtmf_pt,
        direction: offer.direction.answer(),
    })
}

/// Our session description: an answer (one codec) or an offer (all of `codecs`).
pub fn write(
    session_id: u64,
    version: u64,
    addr: IpAddr,
    port: u16,
    codecs: &[Codec],
    dtmf_pt: Option<u8>,
    direction: Direction,
) -> Vec<u8> {
    let ip = if addr.is_ipv4() { "IP4" } else { "IP6" };
    let mut s = String::new();
    let _ = write!(
        s,
        "v=0\r\no=attendant {session_id} {version} IN {ip} {addr}\r\ns=Attendant\r\nc=IN {ip} {addr}\r\nt=0 0\r\n"
    );
    let mut fmts: Vec<String> = codecs
        .iter()
        .map(|c| c.payload_type().to_string())
        .collect();
    if let Some(pt) = dtmf_pt {
        fmts.push(pt.to_string());
    }
    let _ = write!(s, "m=audio {port} RTP/AVP {}\r\n", fmts.join(" "));
    for c in codecs {
        let _ = write!(s, "a=rtpmap:{} {}/8000\r\n", c.payload_type(), c.name());
    }
    if let Some(pt) = dtmf_pt {
        let _ = write!(
            s,
            "a=rtpmap:{pt} telephone-event/8000\r\na=fmtp:{pt} 0-15\r\n"
        );
    }
    let _ = write!(s, "a=ptime:20\r\na={}\r\n", direction.attr());
    s.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIPP_OFFER: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-11,16\r\n";

    #[test]
    fn answers_pcma_with_dtmf() {
        let offer = parse(SIPP_OFFER.as_bytes()).unwrap();
        assert_eq!(offer.port, 6000);
        let n = negotiate(&offer, &[Codec::Pcmu, Codec::Pcma], true).unwrap();
        assert_eq!((n.codec, n.dtmf_pt), (Codec::Pcma, Some(101)));
        let ans = write(
            1,
            1,
            "127.0.0.1".parse().unwrap(),
            20000,
            &[n.codec],
            n.dtmf_pt,
            n.direction,
        );
        let back = parse(&ans).unwrap();
        assert_eq!(
            back.formats.iter().map(|f| f.0).collect::<Vec<_>>(),
            vec![8, 101]
        );
        assert_eq!(back.port, 20000);
    }

    #[test]
    fn static_types_need_no_rtpmap_and_preference_wins() {
        let offer = parse(b"v=0\r\nc=IN IP4 10.0.0.9\r\nm=audio 4000 RTP/AVP 8 0\r\n").unwrap();
        let n = negotiate(&offer, &[Codec::Pcmu, Codec::Pcma], true).unwrap();
        assert_eq!((n.codec, n.dtmf_pt), (Codec::Pcmu, None));
        assert_eq!(offer.addr, "10.0.0.9".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn refuses_what_we_cannot_do() {
        let g729 = parse(
            b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n",
        )
        .unwrap();
        assert!(matches!(
            negotiate(&g729, &[Codec::Pcmu], true),
            Err(SdpError::NoCodec(_))
        ));
        // PT 0 remapped to another codec is not μ-law.
        let odd = parse(
            b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 opus/48000\r\n",
        )
        .unwrap();
        assert!(negotiate(&odd, &[Codec::Pcmu], true).is_err());
        assert_eq!(
            parse(b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=video 4000 RTP/AVP 96\r\n"),
            Err(SdpError::NoAudio)
        );
        assert!(parse(b"garbage").is_err());
        assert!(parse(&[0xff, 0x00]).is_err());
    }

    #[test]
    fn hold_is_seen() {
        let held =
            parse(b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 0\r\na=sendonly\r\n").unwrap();
        assert!(held.on_hold());
        let n = negotiate(&held, &[Codec::Pcmu], false).unwrap();
        assert_eq!(n.direction, Direction::RecvOnly);
        let old_style = parse(b"v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 4000 RTP/AVP 0\r\n").unwrap();
        assert!(old_style.on_hold());
    }
}
