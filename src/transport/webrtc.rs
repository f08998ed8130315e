//! WebRTC as a transport: one browser (or any WebRTC peer) call.
//!
//! [`Session`] wraps str0m's sans-IO `Rtc` (ICE, DTLS-SRTP, SCTP data
//! channels) and adds what a voice call needs: Opus in and out, RFC 4733
//! keypad digits, the shared 20 ms [`Pacer`] for the bot's audio (so marks,
//! pause and clear behave exactly as on RTP), and a data channel for text
//! (the live transcript to the page, keys and hang-up from it). Like every
//! core here it reads no clock and owns no socket: packets and `now` in,
//! [`Output`]s out; `server::webrtc` is its tokio driver.
//!
//! Audio runs at the pipeline's 8 kHz: libopus resamples inside the codec
//! (Opus keeps its 48 kHz RTP clock, RFC 7587), so no extra resampler sits
//! on either path.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::format::{Codec, CodecExtra, FormatParams};
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid, Pt, TelephoneEvent};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event as RtcEvent, IceConnectionState, Input, Output as RtcOutput, Rtc};

use crate::media::mulaw;
use crate::transport::playout::{Paced, PacedOutput, Pacer};
use crate::transport::rtp::dtmf;

/// Payload type we offer for RFC 4733 events at Opus's clock.
const PT_TELE: u8 = 101;
/// Largest SDP offer taken (a browser's audio + data offer is ~3–5 KB).
pub const MAX_OFFER: usize = 16 * 1024;
/// Largest data-channel message taken from the page.
const MAX_TEXT: usize = 4096;
/// Opus samples per 20 ms at the 48 kHz RTP clock.
const RTP_FRAME: u64 = 960;
/// Pending text held for a data channel that is not open yet.
const MAX_PENDING_TEXT: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum WebrtcError {
    #[error("SDP offer larger than {MAX_OFFER} bytes")]
    OfferTooLarge,
    #[error("malformed SDP offer: {0}")]
    BadOffer(String),
    #[error("the offer has no audio to answer")]
    NoAudio,
    #[error("cannot use local address {0}")]
    Candidate(SocketAddr),
    #[error("Opus: {0}")]
    Opus(String),
}

/// What the call hears about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// ICE and DTLS are up: audio flows from now on.
    Connected,
    /// 20 ms (or the peer's frame length) of caller audio, 8 kHz μ-law.
    Audio(Vec<u8>),
    Dtmf(char),
    /// A mark queued after audio that has now been sent.
    Mark(String),
    /// The first frame of reply `reply` went out.
    ReplyStarted(u32),
    /// A text message from the page over the data channel.
    Text(String),
    /// The peer went away (ICE gave up, DTLS closed) or we closed.
    Closed,
}

#[derive(Debug)]
pub enum Output {
    Transmit {
        from: SocketAddr,
        to: SocketAddr,
        data: Vec<u8>,
    },
    Event(Event),
    /// Call `handle_timeout` at this time (or on the next packet).
    Timeout(Instant),
}

/// Counters a driver can report.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub packets_in: u64,
    pub audio_frames_in: u64,
    pub decode_errors: u64,
    pub frames_out: u64,
    pub audio_frames_out: u64,
}

pub struct Session {
    rtc: Rtc,
    mid: Option<Mid>,
    opus_pt: Option<Pt>,
    pacer: Pacer,
    enc: opus::Encoder,
    dec: opus::Decoder,
    rtp_time: u64,
    channel: Option<ChannelId>,
    /// Our offer, until the answer comes (the calling side).
    pending: Option<SdpPendingOffer>,
    text_out: VecDeque<String>,
    last_event_time: Option<MediaTime>,
    events: VecDeque<Event>,
    connected: bool,
    closed: bool,
    pub stats: Stats,
}

/// DTLS, SRTP and certificate generation, pure Rust (no C toolchain).
fn crypto() -> std::sync::Arc<str0m::crypto::CryptoProvider> {
    static P: std::sync::OnceLock<std::sync::Arc<str0m::crypto::CryptoProvider>> =
        std::sync::OnceLock::new();
    P.get_or_init(|| std::sync::Arc::new(str0m::crypto::from_feature_flags()))
        .clone()
}

impl Session {
    /// Answers a peer's offer. `locals` are the UDP addresses our sockets
    /// are bound to (host candidates); `public` adds, for each, the address
    /// a NAT in front of us maps it to. Returns the session and the SDP
    /// answer (with our candidates: no trickle needed).
    pub fn accept(
        offer: &str,
        locals: &[SocketAddr],
        public: &[SocketAddr],
        now: Instant,
    ) -> Result<(Self, String), WebrtcError> {
        if offer.len() > MAX_OFFER {
            return Err(WebrtcError::OfferTooLarge);
        }
        let offer =
            SdpOffer::from_sdp_string(offer).map_err(|e| WebrtcError::BadOffer(e.to_string()))?;
        let mut rtc = Self::rtc(locals, public, now)?;
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| WebrtcError::BadOffer(e.to_string()))?;
        let answer = answer.to_sdp_string();
        if !answer.contains("m=audio") || answer.contains("m=audio 0 ") {
            return Err(WebrtcError::NoAudio);
        }
        Self::new(rtc, answer)
    }

    /// The calling side (load tests, test callers): offers audio both ways
    /// and a data channel; finish with [`Session::accept_answer`].
    pub fn offer(locals: &[SocketAddr], now: Instant) -> Result<(Self, String), WebrtcError> {
        let mut rtc = Self::rtc(locals, &[], now)?;
        let mut api = rtc.sdp_api();
        let mid = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        api.add_channel("attendant".into());
        let Some((offer, pending)) = api.apply() else {
            return Err(WebrtcError::NoAudio);
        };
        let (mut s, sdp) = Self::new(rtc, offer.to_sdp_string())?;
        s.pending = Some(pending);
        // Our own media raises no MediaAdded: it is known from here.
        s.mid = Some(mid);
        Ok((s, sdp))
    }

    /// The answer to our offer.
    pub fn accept_answer(&mut self, answer: &str) -> Result<(), WebrtcError> {
        let bad = |e: String| WebrtcError::BadOffer(e);
        let answer = SdpAnswer::from_sdp_string(answer).map_err(|e| bad(e.to_string()))?;
        let pending = self
            .pending
            .take()
            .ok_or_else(|| bad("no offer pending".into()))?;
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| bad(e.to_string()))?;
        self.opus_pt = self.mid.and_then(|mid| self.opus_of(mid));
        Ok(())
    }

    fn opus_of(&mut self, mid: Mid) -> Option<Pt> {
        self.rtc.writer(mid).and_then(|w| {
            w.payload_params()
                .find(|p| p.spec().codec == Codec::Opus)
                .map(|p| p.pt())
        })
    }

    /// Presses a key (RFC 4733, 100 ms).
    pub fn send_dtmf(&mut self, key: char, now: Instant) -> bool {
        let Some(event) = dtmf::event_code(key) else {
            return false;
        };
        let (Some(mid), Some(pt)) = (self.mid, self.opus_pt) else {
            return false;
        };
        let time = MediaTime::new(self.rtp_time, Frequency::FORTY_EIGHT_KHZ);
        let Some(w) = self.rtc.writer(mid) else {
            return false;
        };
        let tele = TelephoneEvent {
            event,
            end: true,
            volume: 10,
            duration: Duration::from_millis(100),
        };
        w.telephone_event(tele)
            .write(pt, now, time, Vec::<u8>::new())
            .is_ok()
    }

    fn rtc(locals: &[SocketAddr], public: &[SocketAddr], now: Instant) -> Result<Rtc, WebrtcError> {
        let mut cfg = Rtc::builder()
            .set_crypto_provider(crypto())
            .clear_codecs()
            .enable_opus(true, false);
        cfg.codec_config().add_config(
            PT_TELE.into(),
            None,
            Codec::Tele,
            Frequency::FORTY_EIGHT_KHZ,
            None,
            FormatParams::parse_line("0-15"),
        );
        let mut rtc = cfg.build(now);
        for a in locals.iter().chain(public) {
            let c = Candidate::host(*a, "udp").map_err(|_| WebrtcError::Candidate(*a))?;
            rtc.add_local_candidate(c);
        }
        Ok(rtc)
    }

    fn new(rtc: Rtc, sdp: String) -> Result<(Self, String), WebrtcError> {
        let opus = |e: opus::Error| WebrtcError::Opus(e.to_string());
        let mut enc = opus::Encoder::new(8000, opus::Channels::Mono, opus::Application::Voip)
            .map_err(opus)?;
        // Speech from an 8 kHz source: 24 kbit/s is transparent for it.
        enc.set_bitrate(opus::Bitrate::Bits(24_000)).map_err(opus)?;
        let dec = opus::Decoder::new(8000, opus::Channels::Mono).map_err(opus)?;
        Ok((
            Self {
                rtc,
                mid: None,
                opus_pt: None,
                pacer: Pacer::new(mulaw::SILENCE),
                enc,
                dec,
                rtp_time: fastrand::u64(..u32::MAX as u64),
                channel: None,
                pending: None,
                text_out: VecDeque::new(),
                last_event_time: None,
                events: VecDeque::new(),
                connected: false,
                closed: false,
                stats: Stats::default(),
            },
            sdp,
        ))
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// A UDP datagram arrived on local address `to` from `from`. Input that
    /// is not WebRTC, or fails its checks (STUN integrity, SRTP auth), is
    /// dropped by str0m; it never ends the call.
    pub fn handle_receive(&mut self, now: Instant, from: SocketAddr, to: SocketAddr, data: &[u8]) {
        self.stats.packets_in += 1;
        let Ok(contents) = data.try_into() else {
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source: from,
                destination: to,
                contents,
            },
        );
        if self.rtc.accepts(&input) {
            if let Err(e) = self.rtc.handle_input(input) {
                tracing::debug!(error = %e, "WebRTC input dropped");
            }
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            tracing::debug!(error = %e, "WebRTC timeout handling failed");
            self.close();
        }
    }

    /// Sends text to the page (held until the data channel opens; the
    /// oldest is dropped past a bound).
    pub fn send_text(&mut self, text: String) {
        if self.text_out.len() >= MAX_PENDING_TEXT {
            self.text_out.pop_front();
        }
        self.text_out.push_back(text);
    }

    /// Ends the session (DTLS close is sent on the next polls).
    pub fn close(&mut self) {
        if !self.closed {
            self.closed = true;
            self.rtc.disconnect();
            self.events.push_back(Event::Closed);
        }
    }

    /// The next thing to do. Call until it returns `Timeout`.
    pub fn poll_output(&mut self, now: Instant) -> Output {
        loop {
            if let Some(e) = self.events.pop_front() {
                return Output::Event(e);
            }
            if self.closed {
                return Output::Timeout(now + Duration::from_secs(3600));
            }
            if self.connected && self.pace(now) {
                continue;
            }
            self.flush_text();
            match self.rtc.poll_output() {
                Ok(RtcOutput::Transmit(t)) => {
                    return Output::Transmit {
                        from: t.source,
                        to: t.destination,
                        data: t.contents.into(),
                    }
                }
                Ok(RtcOutput::Event(e)) => self.on_event(e),
                Ok(RtcOutput::Timeout(t)) => {
                    let t = match (self.connected, self.pacer.due()) {
                        (true, Some(d)) => t.min(d),
                        _ => t,
                    };
                    return Output::Timeout(t);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "WebRTC session failed");
                    self.close();
                }
            }
        }
    }

    /// Encodes and writes the frames due; true if it produced something.
    fn pace(&mut self, now: Instant) -> bool {
        // The 20 ms clock starts when media can flow.
        self.pacer.start(now);
        let Some(p) = self.pacer.poll(now) else {
            return false;
        };
        match p {
            Paced::Mark(m) => self.events.push_back(Event::Mark(m)),
            Paced::ReplyStarted(r) => self.events.push_back(Event::ReplyStarted(r)),
            Paced::Frame { reply, ulaw, muted } => {
                let time = MediaTime::new(self.rtp_time, Frequency::FORTY_EIGHT_KHZ);
                self.rtp_time += RTP_FRAME;
                self.stats.frames_out += 1;
                if reply.is_some() {
                    self.stats.audio_frames_out += 1;
                }
                if muted {
                    return true;
                }
                let pcm: Vec<i16> = ulaw.iter().map(|&b| mulaw::decode(b)).collect();
                let mut buf = [0u8; 512];
                let n = match self.enc.encode(&pcm, &mut buf) {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::debug!(error = %e, "Opus encode failed");
                        return true;
                    }
                };
                if let (Some(mid), Some(pt)) = (self.mid, self.opus_pt) {
                    if let Some(w) = self.rtc.writer(mid) {
                        if let Err(e) = w.write(pt, now, time, buf[..n].to_vec()) {
                            tracing::debug!(error = %e, "WebRTC write failed");
                        }
                    }
                }
            }
        }
        true
    }

    fn flush_text(&mut self) {
        let Some(id) = self.channel else {
            return;
        };
        while let Some(t) = self.text_out.front() {
            let Some(mut ch) = self.rtc.channel(id) else {
                return;
            };
            match ch.write(false, t.as_bytes()) {
                Ok(true) => {
                    self.text_out.pop_front();
                }
                // Buffer full: try again on a later poll.
                Ok(false) => return,
                Err(_) => {
                    self.text_out.pop_front();
                }
            }
        }
    }

    fn on_event(&mut self, e: RtcEvent) {
        match e {
            RtcEvent::Connected => {
                self.connected = true;
                self.events.push_back(Event::Connected);
            }
            RtcEvent::IceConnectionStateChange(IceConnectionState::Disconnected) => self.close(),
            RtcEvent::MediaAdded(m) if m.kind == MediaKind::Audio && self.mid.is_none() => {
                self.mid = Some(m.mid);
                self.opus_pt = self.opus_of(m.mid);
            }
            RtcEvent::MediaData(d) => {
                if Some(d.mid) != self.mid {
                    return;
                }
                if let CodecExtra::Tele(t) = d.codec_extra {
                    // Each event is reported several times; it counts once.
                    if self.last_event_time != Some(d.time) {
                        self.last_event_time = Some(d.time);
                        if let Some(c) = dtmf::digit(t.event) {
                            self.events.push_back(Event::Dtmf(c));
                        }
                    }
                    return;
                }
                if d.params.spec().codec != Codec::Opus {
                    return;
                }
                // Up to 120 ms per packet at 8 kHz.
                let mut pcm = [0i16; 960];
                match self.dec.decode(&d.data, &mut pcm, false) {
                    Ok(n) => {
                        self.stats.audio_frames_in += 1;
                        let ulaw = pcm[..n].iter().map(|&s| mulaw::encode(s)).collect();
                        self.events.push_back(Event::Audio(ulaw));
                    }
                    Err(_) => self.stats.decode_errors += 1,
                }
            }
            RtcEvent::ChannelOpen(id, _) if self.channel.is_none() => self.channel = Some(id),
            RtcEvent::ChannelData(d) => {
                if d.binary || d.data.len() > MAX_TEXT {
                    return;
                }
                if let Ok(t) = String::from_utf8(d.data) {
                    self.events.push_back(Event::Text(t));
                }
            }
            RtcEvent::ChannelClose(id) if Some(id) == self.channel => self.channel = None,
            _ => {}
        }
    }
}

impl PacedOutput for Session {
    fn pacer(&self) -> &Pacer {
        &self.pacer
    }
    fn pacer_mut(&mut self) -> &mut Pacer {
        &mut self.pacer
    }
}

#[cfg(test)]
mod tests {
    //! Two sessions wired back to back on simulated time: the calling side
    //! (as a load test or test caller uses it) and the bot's side.
    use super::*;
    use crate::transport::playout::Playout;

    struct Pair {
        caller: Session,
        bot: Session,
        caller_addr: SocketAddr,
        bot_addr: SocketAddr,
        now: Instant,
        caller_events: Vec<(Instant, Event)>,
        bot_events: Vec<(Instant, Event)>,
    }

    impl Pair {
        fn new() -> Self {
            let now = Instant::now();
            let caller_addr: SocketAddr = "10.0.0.1:40000".parse().unwrap();
            let bot_addr: SocketAddr = "10.0.0.2:50000".parse().unwrap();
            let (mut caller, offer) = Session::offer(&[caller_addr], now).unwrap();
            let (bot, answer) = Session::accept(&offer, &[bot_addr], &[], now).unwrap();
            caller.accept_answer(&answer).unwrap();
            Self {
                caller,
                bot,
                caller_addr,
                bot_addr,
                now,
                caller_events: Vec::new(),
                bot_events: Vec::new(),
            }
        }

        /// Runs both sides until `until`, delivering packets at once.
        fn run(&mut self, until: Instant) {
            while self.now < until {
                let mut next = until;
                for side in 0..2 {
                    loop {
                        let (me, other, events, other_addr) = if side == 0 {
                            (
                                &mut self.caller,
                                &mut self.bot,
                                &mut self.caller_events,
                                self.bot_addr,
                            )
                        } else {
                            (
                                &mut self.bot,
                                &mut self.caller,
                                &mut self.bot_events,
                                self.caller_addr,
                            )
                        };
                        match me.poll_output(self.now) {
                            Output::Transmit { from, to, data } => {
                                assert_eq!(to, other_addr);
                                other.handle_receive(self.now, from, to, &data);
                            }
                            Output::Event(e) => events.push((self.now, e)),
                            Output::Timeout(t) => {
                                next = next.min(t);
                                break;
                            }
                        }
                    }
                }
                self.now = next.max(self.now + Duration::from_millis(1)).min(until);
                self.caller.handle_timeout(self.now);
                self.bot.handle_timeout(self.now);
            }
        }

        fn connect(&mut self) {
            let t = self.now + Duration::from_secs(2);
            self.run(t);
            assert!(self.caller.is_connected() && self.bot.is_connected());
        }
    }

    fn tone(ms: usize) -> Vec<u8> {
        (0..ms * 8)
            .map(|i| {
                let s = (i as f32 * 2.0 * std::f32::consts::PI * 440.0 / 8000.0).sin();
                mulaw::encode((s * 8000.0) as i16)
            })
            .collect()
    }

    fn energy(ulaw: &[u8]) -> f64 {
        let sum: f64 = ulaw
            .iter()
            .map(|&b| (mulaw::decode(b) as f64).powi(2))
            .sum();
        (sum / ulaw.len().max(1) as f64).sqrt()
    }

    #[test]
    fn connects_and_the_bots_reply_is_heard_before_its_mark() {
        let mut p = Pair::new();
        p.connect();
        let start = p.now;
        p.bot.send_audio(1, &tone(400));
        p.bot.send_mark("r1-end".into());
        p.run(start + Duration::from_secs(1));
        let loud: Vec<Instant> = p
            .caller_events
            .iter()
            .filter_map(|(t, e)| match e {
                Event::Audio(a) if *t >= start && energy(a) > 2000.0 => Some(*t),
                _ => None,
            })
            .collect();
        assert!(
            (17..=22).contains(&loud.len()),
            "about 400 ms of tone heard, got {} frames",
            loud.len()
        );
        let mark = p
            .bot_events
            .iter()
            .find(|(_, e)| *e == Event::Mark("r1-end".into()))
            .map(|(t, _)| *t)
            .expect("the mark is reached");
        assert!(
            mark >= start + Duration::from_millis(380),
            "not before its audio"
        );
        assert!(p
            .bot_events
            .iter()
            .any(|(_, e)| *e == Event::ReplyStarted(1)));
        // Between replies the line carries silence, not nothing.
        let quiet = p
            .caller_events
            .iter()
            .filter(|(t, e)| {
                *t > start + Duration::from_millis(600) && matches!(e, Event::Audio(_))
            })
            .count();
        assert!(quiet >= 15, "silence keeps flowing: {quiet} frames");
    }

    #[test]
    fn pause_holds_the_reply_and_clear_drops_it() {
        let mut p = Pair::new();
        p.connect();
        let start = p.now;
        p.bot.send_audio(1, &tone(1000));
        p.bot.send_mark("r1-end".into());
        p.run(start + Duration::from_millis(200));
        p.bot.set_paused(true);
        let held = p.bot.queued();
        p.run(start + Duration::from_millis(500));
        assert_eq!(p.bot.queued(), held, "nothing sent while paused");
        assert_eq!(p.bot.clear(), vec!["r1-end".to_string()]);
        p.run(start + Duration::from_millis(900));
        let late_tone = p.caller_events.iter().any(|(t, e)| {
            *t > start + Duration::from_millis(600)
                && matches!(e, Event::Audio(a) if energy(a) > 2000.0)
        });
        assert!(!late_tone, "cleared audio is never heard");
    }

    #[test]
    fn keys_and_text_cross_once() {
        let mut p = Pair::new();
        p.connect();
        let t = p.now;
        assert!(p.caller.send_dtmf('5', t));
        p.caller.send_text(r#"{"type":"hello"}"#.into());
        p.bot.send_text("transcript".into());
        p.run(t + Duration::from_millis(600));
        assert!(p.caller.send_dtmf('#', p.now));
        let t = p.now;
        p.run(t + Duration::from_millis(600));
        let digits: String = p
            .bot_events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Dtmf(d) => Some(*d),
                _ => None,
            })
            .collect();
        assert_eq!(digits, "5#", "each key counts once");
        assert!(p
            .bot_events
            .iter()
            .any(|(_, e)| *e == Event::Text(r#"{"type":"hello"}"#.into())));
        assert!(p
            .caller_events
            .iter()
            .any(|(_, e)| *e == Event::Text("transcript".into())));
    }

    #[test]
    fn bad_offers_and_stray_packets_are_refused_not_fatal() {
        let now = Instant::now();
        let addr: SocketAddr = "10.0.0.2:50000".parse().unwrap();
        assert!(matches!(
            Session::accept(&"v=0\r\n".repeat(5000), &[addr], &[], now),
            Err(WebrtcError::OfferTooLarge)
        ));
        assert!(matches!(
            Session::accept("hello", &[addr], &[], now),
            Err(WebrtcError::BadOffer(_))
        ));
        let mut p = Pair::new();
        p.connect();
        let mut rng = fastrand::Rng::with_seed(7);
        for n in 0..2000 {
            let len = rng.usize(0..300);
            let mut junk: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            // Some look like RTP, STUN or DTLS to reach deeper.
            if let Some(b) = junk.first_mut() {
                *b = [0x80, 0x00, 0x16, 0x17][n % 4];
            }
            p.bot
                .handle_receive(p.now, p.caller_addr, p.bot_addr, &junk);
        }
        let t = p.now;
        p.bot.send_audio(2, &tone(100));
        p.run(t + Duration::from_millis(400));
        assert!(!p.bot.is_closed(), "junk does not end the call");
        assert!(p
            .caller_events
            .iter()
            .any(|(_, e)| matches!(e, Event::Audio(a) if energy(a) > 2000.0)));
    }
}
