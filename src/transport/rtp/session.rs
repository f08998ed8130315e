//! One SIP leg's media rules, sans-IO: datagrams, the signalling task's
//! commands and the bot's output go in with the time they happened; packets
//! to send, what the bot (or the bridged peer) should hear, and when the leg
//! wants to end come out; `poll_timeout` says when the clock is next needed.
//!
//! The rules: whose RTP we take (source lock, symmetric latching), a jitter
//! buffer in front of the bot, RFC 4733 keys, our paced stream (silence
//! between replies, muted while the caller holds us), ringback while an
//! agent's phone rings, relay once bridged, RTCP sender reports every 5 s,
//! hang-up when the caller's RTP stops (not while on hold) or when the bot
//! hung up and its last audio is out. `server/sip/media.rs` is the driver.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::dtmf::DtmfDecoder;
use super::jitter::{JitterBuffer, Playout};
use super::outbound::{Outbound, Sent};
use super::rtcp::{self, Ntp, Quality};
use super::source::{Admit, SourceLock};
use crate::media::{alaw, tones};
use crate::pipeline::metrics::metrics;
use crate::pipeline::{CallInput, CallOutput};
use crate::transport::playout::{self, Control, Playout as _};
use crate::transport::sip::config::Symmetric;
use crate::transport::sip::sdp::{Codec, Negotiated, RemoteMedia};

/// Reply number for audio that is not a bot reply (relay, briefing).
pub const RELAY_REPLY: u32 = u32::MAX;
pub const RINGBACK_REPLY: u32 = u32::MAX - 1;
/// Sender reports this often.
const RTCP_EVERY: Duration = Duration::from_secs(5);
/// Ringback is queued this far ahead only, so it stops at once.
const RINGBACK_AHEAD: Duration = Duration::from_millis(60);

/// What the leg is set up with.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub symmetric: Symmetric,
    pub jitter: Duration,
    /// Hang up after this long without the caller's RTP (not on hold).
    pub rtp_timeout: Option<Duration>,
    /// Our stream's SSRC, first sequence number and timestamp (random).
    pub ssrc: u32,
    pub first_seq: u16,
    pub first_ts: u32,
}

/// Who hears the caller now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listener {
    /// The bot's pipeline.
    Bot,
    /// Nobody: an agent's phone is ringing (the caller hears ringback).
    AwaitingAgent,
    /// The other leg of a bridged call.
    Peer,
    /// No pipeline on this leg (the agent's own leg before the bridge).
    Nobody,
}

/// What the driver should do.
#[derive(Debug)]
pub enum Output {
    /// An RTP packet for the peer.
    Rtp { to: SocketAddr, packet: Vec<u8> },
    /// An RTCP packet for the peer.
    Rtcp { to: SocketAddr, packet: Vec<u8> },
    /// For the bot's pipeline. Audio may be dropped by the driver when the
    /// call is behind; the rest never is.
    Bot(CallInput),
    /// The caller's audio for the bridged leg (may be dropped).
    Peer(Vec<u8>),
    /// A mark played on a leg without a pipeline (the agent's briefing).
    Mark(String),
    /// The bot asked for a transfer.
    Transfer(String),
    /// The leg should end now (our audio is out).
    Hangup,
}

/// A command from the signalling task.
#[derive(Debug)]
pub enum Command {
    /// A re-INVITE changed the far end's media.
    Update {
        remote: RemoteMedia,
        negotiated: Negotiated,
    },
    /// A key from SIP INFO.
    Dtmf(char),
    TransferFailed(u16),
    /// The caller is waiting for an agent: their audio is not the bot's.
    AwaitingAgent,
    /// μ-law audio to play on this leg (the briefing on the agent's leg).
    Play(std::sync::Arc<Vec<u8>>),
    Mark(String),
    /// Bridged: the caller's audio goes to the peer leg from now on; the
    /// bot's part is over.
    Bridge,
}

pub struct RtpSession {
    cfg: SessionConfig,
    negotiated: Negotiated,
    listener: Listener,
    sdp_addr: SocketAddr,
    dest: SocketAddr,
    rtcp_dest: SocketAddr,
    source: SourceLock,
    out: Outbound,
    jb: JitterBuffer,
    dtmf: DtmfDecoder,
    reports: rtcp::Session,
    on_hold: bool,
    last_rx: Instant,
    next_rtcp: Instant,
    lost_counted: u32,
    /// Ringback frames sent so far while an agent's phone rings.
    ringback: u64,
    hangup_wanted: bool,
    hangup_sent: bool,
    outputs: VecDeque<Output>,
}

fn silence(codec: Codec) -> u8 {
    match codec {
        Codec::Pcmu => crate::media::mulaw::SILENCE,
        Codec::Pcma => alaw::SILENCE,
    }
}

fn rtcp_of(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip(), a.port().wrapping_add(1))
}

impl RtpSession {
    /// A leg answered at `now`; `bot`: a pipeline listens to it.
    pub fn new(
        cfg: SessionConfig,
        remote: &RemoteMedia,
        negotiated: Negotiated,
        bot: bool,
        now: Instant,
    ) -> Self {
        let sdp_addr = SocketAddr::new(remote.addr, remote.port);
        let mut out = Outbound::new(
            cfg.ssrc,
            cfg.first_seq,
            cfg.first_ts,
            negotiated.codec.payload_type(),
            negotiated.codec == Codec::Pcma,
        );
        let on_hold = remote.on_hold();
        out.set_muted(on_hold);
        out.start(now);
        Self {
            source: SourceLock::new(cfg.symmetric, sdp_addr),
            jb: JitterBuffer::new(cfg.jitter, silence(negotiated.codec)),
            reports: rtcp::Session::new(cfg.ssrc, 8000, now),
            cfg,
            negotiated,
            listener: if bot { Listener::Bot } else { Listener::Nobody },
            sdp_addr,
            dest: sdp_addr,
            rtcp_dest: rtcp_of(sdp_addr),
            out,
            dtmf: DtmfDecoder::default(),
            on_hold,
            last_rx: now,
            next_rtcp: now + RTCP_EVERY,
            lost_counted: 0,
            ringback: 0,
            hangup_wanted: false,
            hangup_sent: false,
            outputs: VecDeque::new(),
        }
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When `handle_timeout` is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut at = [
            self.jb.poll_timeout(),
            self.out.poll_timeout(),
            Some(self.next_rtcp),
        ]
        .into_iter()
        .flatten()
        .min();
        // Not while the caller holds us (they send nothing then), nor once
        // we are hanging up.
        if let Some(t) = self
            .cfg
            .rtp_timeout
            .filter(|_| !self.hangup_sent && !self.on_hold)
        {
            at = at.map(|a| a.min(self.last_rx + t));
        }
        at
    }

    /// Where our RTP goes now (after latching).
    pub fn destination(&self) -> SocketAddr {
        self.dest
    }

    /// The RTCP figures so far.
    pub fn quality(&self) -> Quality {
        self.reports.quality()
    }

    /// Counters for the leg's closing log line: received, concealed, late, sent.
    pub fn stats(&self) -> (u64, u64, u64, u64) {
        let s = &self.jb.stats;
        (s.received, s.concealed, s.late, self.out.packets_sent)
    }

    /// A datagram on the RTP port from `src`.
    pub fn receive_rtp(&mut self, now: Instant, src: SocketAddr, data: &[u8]) {
        let m = metrics();
        if super::is_rtcp(data) {
            return;
        }
        let Ok(p) = super::parse(data) else {
            m.protocol_errors_total.inc();
            return;
        };
        match self.source.admit(src) {
            Admit::Foreign => {
                m.rtp_foreign_dropped_total.inc();
                return;
            }
            Admit::Accept { send_to: Some(to) } => {
                if to != self.dest {
                    tracing::info!("symmetric RTP: sending to the caller's source address");
                }
                self.dest = to;
                self.rtcp_dest = rtcp_of(to);
            }
            Admit::Accept { send_to: None } => {}
        }
        m.rtp_packets_received_total.inc();
        self.last_rx = now;
        if Some(p.payload_type) == self.negotiated.dtmf_pt {
            self.reports.on_rtp(p.ssrc, p.seq, None, now);
            if let Some(d) = self.dtmf.push(p.timestamp, p.payload) {
                if self.listener == Listener::Bot {
                    self.outputs.push_back(Output::Bot(CallInput::Dtmf(d)));
                }
            }
        } else if p.payload_type == self.negotiated.codec.payload_type() {
            self.reports.on_rtp(p.ssrc, p.seq, Some(p.timestamp), now);
            self.jb.push(p.ssrc, p.seq, p.timestamp, p.payload, now);
        }
        self.handle_timeout(now, None);
    }

    /// A datagram on the RTCP port.
    pub fn receive_rtcp(&mut self, now: Instant, ntp: Ntp, data: &[u8]) {
        self.reports.on_rtcp(data, now, ntp);
    }

    pub fn command(&mut self, now: Instant, c: Command) {
        match c {
            Command::Update { remote, negotiated } => {
                let named = SocketAddr::new(remote.addr, remote.port);
                if self.source.locked().is_none()
                    || self.cfg.symmetric == Symmetric::Never
                    || named != self.sdp_addr
                {
                    self.dest = named;
                    self.rtcp_dest = rtcp_of(named);
                }
                self.source.renegotiated(named);
                self.sdp_addr = named;
                self.on_hold = remote.on_hold();
                self.out.set_muted(self.on_hold);
                self.last_rx = now;
                self.negotiated = negotiated;
            }
            Command::Dtmf(d) => {
                if self.bot_listens() {
                    self.outputs.push_back(Output::Bot(CallInput::Dtmf(d)));
                }
            }
            Command::TransferFailed(status) => {
                if self.listener == Listener::AwaitingAgent {
                    self.listener = Listener::Bot;
                    self.out.clear();
                }
                if self.listener == Listener::Bot {
                    self.outputs
                        .push_back(Output::Bot(CallInput::TransferFailed { status }));
                }
            }
            Command::AwaitingAgent => {
                if self.listener == Listener::Bot {
                    self.listener = Listener::AwaitingAgent;
                    self.ringback = 0;
                }
            }
            Command::Play(ulaw) => self.out.send_audio(RELAY_REPLY, &ulaw),
            Command::Mark(name) => self.out.send_mark(name),
            Command::Bridge => {
                // The bot's part is done (the driver ends its pipeline; the
                // record keeps the transfer as the outcome).
                self.out.clear();
                self.listener = Listener::Peer;
            }
        }
        self.handle_timeout(now, None);
    }

    /// A command from the bot's pipeline.
    pub fn from_bot(&mut self, now: Instant, o: CallOutput) {
        if !self.bot_listens() {
            return;
        }
        match playout::apply(&mut self.out, o) {
            None => {}
            Some(Control::Hangup) => self.hangup_wanted = true,
            Some(Control::Transfer { target, .. }) => {
                self.outputs.push_back(Output::Transfer(target))
            }
        }
        self.handle_timeout(now, None);
    }

    /// The bot's pipeline ended: hang up once our audio has gone out.
    pub fn bot_ended(&mut self, now: Instant) {
        if self.bot_listens() {
            self.hangup_wanted = true;
        }
        self.handle_timeout(now, None);
    }

    /// Audio from the bridged leg, to play here.
    pub fn relayed(&mut self, now: Instant, ulaw: &[u8]) {
        self.out.send_audio(RELAY_REPLY, ulaw);
        self.handle_timeout(now, None);
    }

    /// The clock moved on: play out what the jitter buffer holds, send our
    /// due frames, report, and check the leg is alive. `ntp`: the wall
    /// clock, needed when a sender report is due.
    pub fn handle_timeout(&mut self, now: Instant, ntp: Option<Ntp>) {
        let m = metrics();
        while let Some(p) = self.jb.pop(now) {
            let bytes = match p {
                Playout::Audio(b) => b,
                Playout::Concealed(b) => {
                    m.rtp_packets_concealed_total.inc();
                    b
                }
            };
            let ulaw = match self.negotiated.codec {
                Codec::Pcmu => bytes,
                Codec::Pcma => alaw::to_ulaw(&bytes),
            };
            match self.listener {
                Listener::Bot => self.outputs.push_back(Output::Bot(CallInput::Audio(ulaw))),
                Listener::Peer => self.outputs.push_back(Output::Peer(ulaw)),
                Listener::AwaitingAgent | Listener::Nobody => {}
            }
        }
        if self.listener == Listener::AwaitingAgent && !self.hangup_wanted {
            while self.out.queued() < RINGBACK_AHEAD {
                let ulaw = tones::ringback_frame(self.ringback);
                self.ringback += 1;
                self.out.send_audio(RINGBACK_REPLY, &ulaw);
            }
        }
        while let Some(s) = self.out.poll(now) {
            match s {
                Sent::Packet(packet) => self.outputs.push_back(Output::Rtp {
                    to: self.dest,
                    packet,
                }),
                Sent::Mark(name) => self.outputs.push_back(if self.bot_listens() {
                    Output::Bot(CallInput::MarkPlayed(name))
                } else {
                    Output::Mark(name)
                }),
                Sent::ReplyStarted(reply) => {
                    if self.bot_listens() {
                        self.outputs
                            .push_back(Output::Bot(CallInput::ReplyStarted { reply, at: now }));
                    }
                }
            }
        }
        if let Some(ntp) = ntp.filter(|_| now >= self.next_rtcp) {
            self.report(now, ntp);
        }
        if let Some(t) = self.cfg.rtp_timeout {
            if !self.on_hold && !self.hangup_sent && now.duration_since(self.last_rx) >= t {
                tracing::info!(secs = t.as_secs(), "no RTP from the caller; hanging up");
                self.hangup_wanted = true;
                self.out.clear();
            }
        }
        if self.hangup_wanted && !self.hangup_sent && self.out.queued().is_zero() {
            self.hangup_sent = true;
            self.outputs.push_back(Output::Hangup);
        }
    }

    fn report(&mut self, now: Instant, ntp: Ntp) {
        let m = metrics();
        self.next_rtcp = now + RTCP_EVERY;
        let sr = self.reports.sender_report(
            now,
            ntp,
            self.out.rtp_timestamp(now),
            self.out.packets_sent as u32,
            (self.out.packets_sent * 160) as u32,
        );
        self.outputs.push_back(Output::Rtcp {
            to: self.rtcp_dest,
            packet: sr,
        });
        let q = self.reports.quality();
        m.rtp_packets_lost_total
            .inc_by(q.lost.saturating_sub(self.lost_counted) as u64);
        self.lost_counted = self.lost_counted.max(q.lost);
        m.rtp_jitter.observe(q.jitter_ms as f64 / 1000.0);
        if let Some(rtt) = q.rtt_ms {
            m.rtp_rtt.observe(rtt as f64 / 1000.0);
        }
        tracing::debug!(lost = q.lost, jitter_ms = q.jitter_ms, rtt_ms = ?q.rtt_ms, "RTCP");
        if self.bot_listens() {
            self.outputs
                .push_back(Output::Bot(CallInput::MediaQuality(q)));
        }
    }

    /// The bot's pipeline is on this leg (waiting for an agent included).
    fn bot_listens(&self) -> bool {
        matches!(self.listener, Listener::Bot | Listener::AwaitingAgent)
    }

    /// The leg is ending: a key still held down is dropped.
    pub fn close(&mut self) {
        if self.dtmf.flush().is_some() {
            tracing::debug!("DTMF event without an end at hang-up");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::rtp::{parse, write, Packet};
    use crate::transport::sip::sdp::Direction;

    const PCMU: u8 = 0;
    const EVENT: u8 = 101;

    fn remote(port: u16, direction: Direction) -> RemoteMedia {
        RemoteMedia {
            addr: "192.0.2.10".parse().unwrap(),
            port,
            formats: vec![(PCMU, None), (EVENT, Some("telephone-event/8000".into()))],
            direction,
            ptime: None,
        }
    }

    fn negotiated(codec: Codec) -> Negotiated {
        Negotiated {
            codec,
            dtmf_pt: Some(EVENT),
            direction: Direction::SendRecv,
        }
    }

    fn cfg(symmetric: Symmetric) -> SessionConfig {
        SessionConfig {
            symmetric,
            jitter: Duration::from_millis(40),
            rtp_timeout: Some(Duration::from_secs(10)),
            ssrc: 0x1234,
            first_seq: 100,
            first_ts: 1000,
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn packet(pt: u8, seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
        write(&Packet {
            marker: false,
            payload_type: pt,
            seq,
            timestamp: ts,
            ssrc: 0xcafe,
            payload,
        })
    }

    /// The caller's side on simulated time.
    struct Leg {
        s: RtpSession,
        t0: Instant,
        now: Instant,
        seq: u16,
        out: Vec<(u64, Output)>,
    }

    impl Leg {
        fn new(cfg: SessionConfig, remote: RemoteMedia, codec: Codec, bot: bool) -> Self {
            let t0 = Instant::now();
            let s = RtpSession::new(cfg, &remote, negotiated(codec), bot, t0);
            let mut l = Self {
                s,
                t0,
                now: t0,
                seq: 0,
                out: Vec::new(),
            };
            l.tick(0);
            l
        }

        fn collect(&mut self) {
            let at = self.now.duration_since(self.t0).as_millis() as u64;
            while let Some(o) = self.s.poll_output() {
                self.out.push((at, o));
            }
        }

        /// The clock runs `ms`, waking the session whenever it asked.
        fn tick(&mut self, ms: u64) {
            let end = self.now + Duration::from_millis(ms);
            loop {
                let next = self.s.poll_timeout().filter(|t| *t <= end);
                self.now = next.unwrap_or(end).max(self.now);
                self.s.handle_timeout(
                    self.now,
                    Some(Ntp::from_system(
                        std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
                    )),
                );
                self.collect();
                if next.is_none() {
                    break;
                }
            }
        }

        /// The caller sends `n` 20 ms voice packets from `src`.
        fn speak(&mut self, src: SocketAddr, n: usize, byte: u8) {
            for _ in 0..n {
                let p = packet(PCMU, self.seq, self.seq as u32 * 160, &[byte; 160]);
                self.seq += 1;
                self.s.receive_rtp(self.now, src, &p);
                self.collect();
                self.tick(20);
            }
        }

        fn rtp(&self) -> Vec<(SocketAddr, Vec<u8>)> {
            self.out
                .iter()
                .filter_map(|(_, o)| match o {
                    Output::Rtp { to, packet } => Some((*to, packet.clone())),
                    _ => None,
                })
                .collect()
        }

        fn heard_by_bot(&self) -> Vec<Vec<u8>> {
            self.out
                .iter()
                .filter_map(|(_, o)| match o {
                    Output::Bot(CallInput::Audio(a)) => Some(a.clone()),
                    _ => None,
                })
                .collect()
        }

        fn bot_inputs(&self) -> Vec<&CallInput> {
            self.out
                .iter()
                .filter_map(|(_, o)| match o {
                    Output::Bot(i) => Some(i),
                    _ => None,
                })
                .collect()
        }
    }

    #[test]
    fn silence_flows_at_20_ms_from_the_start_and_replies_replace_it() {
        let mut l = Leg::new(
            cfg(Symmetric::Auto),
            remote(4000, Direction::SendRecv),
            Codec::Pcmu,
            true,
        );
        l.tick(1000);
        let sent = l.rtp();
        assert!(
            (50..=51).contains(&sent.len()),
            "{} packets in 1 s",
            sent.len()
        );
        assert!(sent.iter().all(|(to, _)| *to == addr("192.0.2.10:4000")));
        let seqs: Vec<u16> = sent.iter().map(|(_, p)| parse(p).unwrap().seq).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)));
        l.s.from_bot(
            l.now,
            CallOutput::Audio {
                reply: 7,
                ulaw: std::sync::Arc::new(vec![0x11; 800]),
            },
        );
        l.s.from_bot(l.now, CallOutput::Mark("r7-end".into()));
        l.collect();
        l.tick(200);
        let loud: Vec<_> = l
            .rtp()
            .into_iter()
            .filter(|(_, p)| parse(p).unwrap().payload[0] == 0x11)
            .collect();
        assert_eq!(loud.len(), 5);
        assert!(
            parse(&loud[0].1).unwrap().marker,
            "a talkspurt starts with the marker bit"
        );
        let inputs = l.bot_inputs();
        assert!(inputs
            .iter()
            .any(|i| matches!(i, CallInput::ReplyStarted { reply: 7, .. })));
        assert!(inputs
            .iter()
            .any(|i| matches!(i, CallInput::MarkPlayed(m) if m == "r7-end")));
    }

    #[test]
    fn the_first_source_is_latched_and_strangers_are_ignored() {
        let mut l = Leg::new(
            cfg(Symmetric::Auto),
            remote(4000, Direction::SendRecv),
            Codec::Pcmu,
            true,
        );
        // Behind NAT: the packets come from the public address.
        l.speak(addr("198.51.100.7:31000"), 10, 0x22);
        assert_eq!(l.s.destination(), addr("198.51.100.7:31000"));
        let heard = l.heard_by_bot().len();
        // A third party cannot inject audio into the call.
        l.speak(addr("203.0.113.66:5000"), 10, 0x33);
        l.tick(200);
        assert!(l.heard_by_bot().iter().all(|f| f[0] != 0x33));
        assert_eq!(l.s.destination(), addr("198.51.100.7:31000"));
        assert!(
            l.heard_by_bot().len() > heard,
            "the jitter buffer conceals the gap"
        );
        // Our stream follows the latch.
        let last = l.rtp().last().unwrap().0;
        assert_eq!(last, addr("198.51.100.7:31000"));
    }

    #[test]
    fn audio_reaches_the_bot_in_order_after_the_jitter_delay_and_alaw_is_converted() {
        let mut l = Leg::new(
            cfg(Symmetric::Auto),
            remote(4000, Direction::SendRecv),
            Codec::Pcma,
            true,
        );
        let src = addr("192.0.2.10:4000");
        let a = alaw::from_ulaw(&[0x40; 160]);
        for (i, seq) in [0u16, 2, 1, 3].iter().enumerate() {
            let p = write(&Packet {
                marker: false,
                payload_type: 8,
                seq: *seq,
                timestamp: *seq as u32 * 160,
                ssrc: 9,
                payload: &a,
            });
            l.s.receive_rtp(l.now, src, &p);
            l.collect();
            if i == 0 {
                assert!(l.heard_by_bot().is_empty(), "held for the jitter delay");
            }
            l.tick(20);
        }
        l.tick(100);
        let heard = l.heard_by_bot();
        assert!(heard.len() >= 4);
        assert!(
            heard[..4].iter().all(|f| f.len() == 160 && f[0] == 0x40),
            "μ-law again"
        );
    }

    #[test]
    fn rfc4733_keys_reach_the_bot_once_and_not_while_an_agent_rings() {
        let mut l = Leg::new(
            cfg(Symmetric::Auto),
            remote(4000, Direction::SendRecv),
            Codec::Pcmu,
            true,
        );
        let src = addr("192.0.2.10:4000");
        let send_key = |l: &mut Leg, key: char, ts: u32| {
            for payload in crate::transport::rtp::dtmf::event_payloads(key, 100).unwrap() {
                let p = packet(EVENT, l.seq, ts, &payload);
                l.seq += 1;
                l.s.receive_rtp(l.now, src, &p);
                l.collect();
                l.tick(20);
            }
        };
        send_key(&mut l, '5', 8000);
        let keys = |l: &Leg| {
            l.bot_inputs()
                .iter()
                .filter(|i| matches!(i, CallInput::Dtmf(_)))
                .count()
        };
        assert_eq!(keys(&l), 1);
        assert!(l
            .bot_inputs()
            .iter()
            .any(|i| matches!(i, CallInput::Dtmf('5'))));
        l.s.command(l.now, Command::AwaitingAgent);
        send_key(&mut l, '9', 16000);
        assert_eq!(
            keys(&l),
            1,
            "the caller's keys are not the bot's while an agent rings"
        );
    }

    #[test]
    fn ringback_while_an_agent_rings_stops_when_the_transfer_fails() {
        let mut l = Leg::new(
            cfg(Symmetric::Auto),
            remote(4000, Direction::SendRecv),
            Codec::Pcmu,
            true,
        );
        l.s.command(l.now, Command::AwaitingAgent);
        l.speak(addr("192.0.2.10:4000"), 25, 0x22);
        assert!(
            l.heard_by_bot().is_empty(),
            "the caller's audio is not the bot's while waiting"
        );
        let tone = |p: &[u8]| {
            parse(p)
                .unwrap()
                .payload
                .iter()
                .any(|b| *b != crate::media::mulaw::SILENCE)
        };
        let during: usize = l.rtp().iter().filter(|(_, p)| tone(p)).count();
        assert!(during >= 20, "ringback is heard ({during} frames)");
        l.s.command(l.now, Command::TransferFailed(486));
        l.collect();
        assert!(l
            .bot_inputs()
            .iter()
            .any(|i| matches!(i, CallInput::TransferFailed { status: 486 })));
        let before = l.rtp().len();
        l.tick(2000);
        let after: Vec<_> = l.rtp()[before..].to_vec();
        // At most the frames already on their way; then silence, and the bot hears the caller again.
        assert!(after.iter().filter(|(_, p)| tone(p)).count() <= 1);
        l.speak(addr("192.0.2.10:4000"), 5, 0x22);
        l.tick(100);
        assert!(!l.heard_by_bot().is_empty());
    }

    #[test]
    fn bridged_legs_relay_both_ways() {
        let mut l = Leg::new(
            cfg(Symmetric::Auto),
            remote(4000, Direction::SendRecv),
            Codec::Pcmu,
            true,
        );
        l.s.command(l.now, Command::Bridge);
        l.speak(addr("192.0.2.10:4000"), 10, 0x22);
        l.tick(100);
        let to_peer = l
            .out
            .iter()
            .filter(|(_, o)| matches!(o, Output::Peer(f) if f[0] == 0x22))
            .count();
        assert!(to_peer >= 8, "{to_peer} frames to the peer");
        assert!(l.heard_by_bot().is_empty());
        let before = l.rtp().len();
        for _ in 0..5 {
            l.s.relayed(l.now, &[0x44; 160]);
            l.tick(20);
        }
        l.tick(100);
        let played = l.rtp()[before..]
            .iter()
            .filter(|(_, p)| parse(p).unwrap().payload[0] == 0x44)
            .count();
        assert_eq!(played, 5);
        // The bot's commands no longer reach this leg.
        l.s.from_bot(l.now, CallOutput::Hangup);
        l.tick(100);
        assert!(!l.out.iter().any(|(_, o)| matches!(o, Output::Hangup)));
    }

    #[test]
    fn on_hold_we_go_quiet_and_the_rtp_timeout_waits() {
        let mut l = Leg::new(
            cfg(Symmetric::Auto),
            remote(4000, Direction::SendRecv),
            Codec::Pcmu,
            true,
        );
        l.s.command(
            l.now,
            Command::Update {
                remote: remote(4000, Direction::SendOnly),
                negotiated: negotiated(Codec::Pcmu),
            },
        );
        let before = l.rtp().len();
        l.tick(30_000);
        assert!(
            l.rtp().len() - before <= 1,
            "muted while the caller holds us"
        );
        assert!(
            !l.out.iter().any(|(_, o)| matches!(o, Output::Hangup)),
            "held calls are not timed out"
        );
        // Taken off hold, at a new port: our stream resumes there.
        l.s.command(
            l.now,
            Command::Update {
                remote: remote(4002, Direction::SendRecv),
                negotiated: negotiated(Codec::Pcmu),
            },
        );
        l.tick(100);
        assert_eq!(l.rtp().last().unwrap().0, addr("192.0.2.10:4002"));
        // Then the caller goes silent for good: hung up at the timeout.
        l.tick(9_800);
        assert!(!l.out.iter().any(|(_, o)| matches!(o, Output::Hangup)));
        l.tick(200);
        assert!(l.out.iter().any(|(_, o)| matches!(o, Output::Hangup)));
    }

    #[test]
    fn the_bots_hang_up_waits_for_its_audio_and_rtcp_reports_every_5_s() {
        let mut l = Leg::new(
            cfg(Symmetric::Auto),
            remote(4000, Direction::SendRecv),
            Codec::Pcmu,
            true,
        );
        l.speak(addr("192.0.2.10:4000"), 300, 0x22);
        let reports: Vec<_> = l
            .out
            .iter()
            .filter_map(|(t, o)| match o {
                Output::Rtcp { to, packet } => Some((*t, *to, packet.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(reports.len(), 1, "one sender report in 6 s");
        assert_eq!(reports[0].0, 5000);
        assert_eq!(reports[0].1, addr("192.0.2.10:4001"));
        assert_eq!(reports[0].2[1], 200, "a sender report");
        assert!(l
            .bot_inputs()
            .iter()
            .any(|i| matches!(i, CallInput::MediaQuality(_))));
        l.s.from_bot(
            l.now,
            CallOutput::Audio {
                reply: 2,
                ulaw: std::sync::Arc::new(vec![0x11; 1600]),
            },
        );
        l.s.from_bot(l.now, CallOutput::Hangup);
        l.collect();
        let asked = l.now;
        l.tick(500);
        let hung = l
            .out
            .iter()
            .find(|(_, o)| matches!(o, Output::Hangup))
            .map(|(t, _)| *t)
            .unwrap();
        let asked_ms = asked.duration_since(l.t0).as_millis() as u64;
        assert!(
            (180..=220).contains(&(hung - asked_ms)),
            "hung up {} ms after asking",
            hung - asked_ms
        );
    }

    #[test]
    fn junk_never_panics_or_reaches_the_bot() {
        let mut l = Leg::new(
            cfg(Symmetric::Auto),
            remote(4000, Direction::SendRecv),
            Codec::Pcmu,
            true,
        );
        let mut rng = fastrand::Rng::with_seed(7);
        for n in 0..2000 {
            let len = rng.usize(0..200);
            let mut junk: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            if n % 2 == 0 && len > 12 {
                junk[0] = 0x80;
                junk[1] = 96; // a payload type we did not negotiate
            } else if len > 0 {
                junk[0] &= 0x3f; // not RTP version 2
            }
            l.s.receive_rtp(l.now, addr("192.0.2.10:4000"), &junk);
            l.s.receive_rtcp(
                l.now,
                Ntp::from_system(std::time::SystemTime::UNIX_EPOCH),
                &junk,
            );
        }
        l.tick(200);
        assert!(l.heard_by_bot().is_empty());
        assert!(l.rtp().len() >= 10, "our stream goes on");
    }
}
