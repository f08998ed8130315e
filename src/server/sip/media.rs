//! One SIP leg's media task: receives RTP (source lock, jitter buffer,
//! RFC 4733 digits), paces the bot's audio out, keeps RTCP, relays a bridged
//! leg, and turns the signalling task's commands into the pipeline's inputs.

use super::*;
use crate::transport::playout::{self, Control, Playout as _, Uplink};

pub(super) struct MediaArgs {
    pub(super) id: String,
    pub(super) rtp: std::net::UdpSocket,
    pub(super) rtcp: std::net::UdpSocket,
    pub(super) remote: RemoteMedia,
    pub(super) negotiated: Negotiated,
    pub(super) jitter: Duration,
    pub(super) symmetric: Symmetric,
    pub(super) rtp_timeout: Option<Duration>,
    /// The bot's pipeline; none on an agent's leg.
    pub(super) call: Option<CallHandle>,
    pub(super) cmds: mpsc::Receiver<ToMedia>,
    pub(super) to_core: mpsc::Sender<ToCore>,
}

fn silence(codec: Codec) -> u8 {
    match codec {
        Codec::Pcmu => crate::media::mulaw::SILENCE,
        Codec::Pcma => alaw::SILENCE,
    }
}

async fn next_relayed(rx: &mut Option<mpsc::Receiver<Vec<u8>>>) -> Option<Vec<u8>> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// One leg's media: RTP in and out, RTCP, DTMF, relay when bridged.
pub(super) async fn run(a: MediaArgs) {
    let MediaArgs {
        id,
        rtp: sock,
        rtcp: rtcp_sock,
        remote,
        mut negotiated,
        jitter,
        symmetric,
        rtp_timeout,
        call,
        mut cmds,
        to_core,
    } = a;
    let (sock, rtcp_sock) = match (UdpSocket::from_std(sock), UdpSocket::from_std(rtcp_sock)) {
        (Ok(a), Ok(b)) => (a, b),
        _ => {
            tracing::warn!(call = %id, "RTP sockets unusable; hanging up");
            let _ = to_core.send(ToCore::Hangup { id: id.clone() }).await;
            let _ = to_core.send(ToCore::MediaStopped { id }).await;
            return;
        }
    };
    // The bot's pipeline, both ways: `up` (audio may drop, control never)
    // and `down` (its commands).
    let (mut up, mut down) = match call {
        Some(c) => (Some(Uplink::new(c.input)), Some(c.output)),
        None => (None, None),
    };
    // Bridged: what we hear goes to the other leg, what it hears we play.
    let mut relay: Option<mpsc::Sender<Vec<u8>>> = None;
    let mut relay_in: Option<mpsc::Receiver<Vec<u8>>> = None;
    // Some while the agent's phone rings (and they are briefed): the caller's
    // audio does not reach the bot and they hear ringback instead of dead air.
    // The count is ringback frames sent so far.
    let mut awaiting_agent: Option<u64> = None;
    let mut sdp_addr = SocketAddr::new(remote.addr, remote.port);
    let mut dest = sdp_addr;
    let mut rtcp_dest = SocketAddr::new(remote.addr, remote.port.wrapping_add(1));
    let mut source = SourceLock::new(symmetric, sdp_addr);
    let ssrc = fastrand::u32(..);
    let mut out = outbound::Outbound::new(
        ssrc,
        fastrand::u16(..),
        fastrand::u32(..),
        negotiated.codec.payload_type(),
        negotiated.codec == Codec::Pcma,
    );
    let mut on_hold = remote.on_hold();
    out.set_muted(on_hold);
    out.start(Instant::now());
    let mut last_rx = Instant::now();
    let mut jb = JitterBuffer::new(jitter, silence(negotiated.codec));
    let mut dtmf = DtmfDecoder::default();
    let mut hangup_wanted = false;
    let mut hangup_sent = false;
    let mut reports = rtcp::Session::new(ssrc, 8000, Instant::now());
    let mut lost_counted = 0u32;
    let mut next_rtcp = Instant::now() + Duration::from_secs(5);
    let mut buf = vec![0u8; 2048];
    let mut rbuf = vec![0u8; 1500];
    let m = metrics();
    loop {
        let deadline = [jb.poll_timeout(), out.poll_timeout(), Some(next_rtcp)]
            .into_iter()
            .flatten()
            .min();
        let deadline = playout::retry_at(deadline, up.as_ref())
            .unwrap_or_else(|| Instant::now() + Duration::from_millis(20));
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                let Ok((n, src)) = r else { continue };
                let data = &buf[..n];
                if rtp::is_rtcp(data) {
                    continue;
                }
                let Ok(p) = rtp::parse(data) else {
                    m.protocol_errors_total.inc();
                    continue;
                };
                match source.admit(src) {
                    Admit::Foreign => {
                        m.rtp_foreign_dropped_total.inc();
                        continue;
                    }
                    Admit::Accept { send_to: Some(to) } => {
                        if to != dest {
                            tracing::info!(call = %id, "symmetric RTP: sending to the caller's source address");
                        }
                        dest = to;
                        rtcp_dest = SocketAddr::new(to.ip(), to.port().wrapping_add(1));
                    }
                    Admit::Accept { send_to: None } => {}
                }
                m.rtp_packets_received_total.inc();
                last_rx = Instant::now();
                let now = Instant::now();
                if Some(p.payload_type) == negotiated.dtmf_pt {
                    reports.on_rtp(p.ssrc, p.seq, None, now);
                    if let Some(d) = dtmf.push(p.timestamp, p.payload) {
                        if let Some(u) = up.as_mut().filter(|_| awaiting_agent.is_none()) {
                            u.control(CallInput::Dtmf(d));
                        }
                    }
                } else if p.payload_type == negotiated.codec.payload_type() {
                    reports.on_rtp(p.ssrc, p.seq, Some(p.timestamp), now);
                    jb.push(p.ssrc, p.seq, p.timestamp, p.payload, now);
                }
            }
            r = rtcp_sock.recv_from(&mut rbuf) => {
                if let Ok((n, _)) = r {
                    reports.on_rtcp(&rbuf[..n], Instant::now(), rtcp::Ntp::now());
                }
            }
            o = playout::next_command(&mut down) => match o {
                None => {
                    // The pipeline ended: hang up once our audio has gone out.
                    down = None;
                    hangup_wanted = true;
                }
                Some(o) => match playout::apply(&mut out, o) {
                    None => {}
                    Some(Control::Hangup) => hangup_wanted = true,
                    Some(Control::Transfer { target, .. }) => {
                        let _ = to_core.send(ToCore::Transfer { id: id.clone(), target }).await;
                    }
                },
            },
            f = next_relayed(&mut relay_in) => match f {
                Some(ulaw) => out.send_audio(RELAY_REPLY, &ulaw),
                // The other leg's media ended; signalling ends this one.
                None => relay_in = None,
            },
            c = cmds.recv() => match c {
                Some(ToMedia::Update { remote, negotiated: n }) => {
                    let named = SocketAddr::new(remote.addr, remote.port);
                    if source.locked().is_none() || symmetric == Symmetric::Never || named != sdp_addr {
                        dest = named;
                        rtcp_dest = SocketAddr::new(named.ip(), named.port().wrapping_add(1));
                    }
                    source.renegotiated(named);
                    sdp_addr = named;
                    on_hold = remote.on_hold();
                    out.set_muted(on_hold);
                    last_rx = Instant::now();
                    negotiated = n;
                }
                Some(ToMedia::Dtmf(d)) => {
                    if let Some(u) = up.as_mut() {
                        u.control(CallInput::Dtmf(d));
                    }
                }
                Some(ToMedia::TransferFailed(status)) => {
                    if awaiting_agent.take().is_some() {
                        out.clear();
                    }
                    if let Some(u) = up.as_mut() {
                        u.control(CallInput::TransferFailed { status });
                    }
                }
                Some(ToMedia::AwaitingAgent) => {
                    awaiting_agent = Some(0);
                }
                Some(ToMedia::Play(ulaw)) => out.send_audio(RELAY_REPLY, &ulaw),
                Some(ToMedia::Mark(name)) => out.send_mark(name),
                Some(ToMedia::Bridge { to_peer, from_peer }) => {
                    // The bot's part is done: its pipeline ends (the record
                    // keeps the transfer as the outcome) and its audio stops.
                    down = None;
                    if let Some(u) = up.take() {
                        u.close(vec![CallInput::Hangup]).await;
                    }
                    out.clear();
                    awaiting_agent = None;
                    relay = Some(to_peer);
                    relay_in = Some(from_peer);
                }
                Some(ToMedia::Stop) | None => break,
            },
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
        let now = Instant::now();
        while let Some(p) = jb.pop(now) {
            let bytes = match p {
                Playout::Audio(b) => b,
                Playout::Concealed(b) => {
                    m.rtp_packets_concealed_total.inc();
                    b
                }
            };
            let ulaw = match negotiated.codec {
                Codec::Pcmu => bytes,
                Codec::Pcma => alaw::to_ulaw(&bytes),
            };
            if let Some(r) = &relay {
                // Audio may drop: a stalled leg loses frames, never memory.
                let _ = r.try_send(ulaw);
            } else if let Some(u) = up.as_mut().filter(|_| awaiting_agent.is_none()) {
                if !u.audio(ulaw) {
                    m.media_dropped_ms_total.inc_by(20);
                }
            }
        }
        if let Some(n) = awaiting_agent.as_mut().filter(|_| !hangup_wanted) {
            // A few frames ahead only, so the tone stops at once when the
            // agent answers or the transfer fails.
            while out.queued() < Duration::from_millis(60) {
                let ulaw = tones::ringback_frame(*n);
                *n += 1;
                out.send_audio(RINGBACK_REPLY, &ulaw);
            }
        }
        while let Some(s) = out.poll(now) {
            match s {
                outbound::Sent::Packet(p) => {
                    if sock.send_to(&p, dest).await.is_ok() {
                        m.rtp_packets_sent_total.inc();
                    }
                }
                outbound::Sent::Mark(name) => {
                    if let Some(u) = up.as_mut() {
                        u.control(CallInput::MarkPlayed(name));
                    } else {
                        let _ = to_core
                            .send(ToCore::MediaMark {
                                id: id.clone(),
                                name,
                            })
                            .await;
                    }
                }
                outbound::Sent::ReplyStarted(reply) => {
                    if let Some(u) = up.as_mut() {
                        u.control(CallInput::ReplyStarted { reply, at: now });
                    }
                }
            }
        }
        if now >= next_rtcp {
            next_rtcp = now + Duration::from_secs(5);
            let sr = reports.sender_report(
                now,
                rtcp::Ntp::now(),
                out.rtp_timestamp(now),
                out.packets_sent as u32,
                (out.packets_sent * 160) as u32,
            );
            let _ = rtcp_sock.send_to(&sr, rtcp_dest).await;
            let q = reports.quality();
            m.rtp_packets_lost_total
                .inc_by(q.lost.saturating_sub(lost_counted) as u64);
            lost_counted = lost_counted.max(q.lost);
            m.rtp_jitter.observe(q.jitter_ms as f64 / 1000.0);
            if let Some(rtt) = q.rtt_ms {
                m.rtp_rtt.observe(rtt as f64 / 1000.0);
            }
            tracing::debug!(call = %id, lost = q.lost, jitter_ms = q.jitter_ms, rtt_ms = ?q.rtt_ms, "RTCP");
            if let Some(u) = up.as_mut() {
                // Figures: dropped if the call is busy; the next ones follow.
                u.offer(CallInput::MediaQuality(q));
            }
        }
        if let Some(t) = rtp_timeout {
            if !on_hold && !hangup_sent && now.duration_since(last_rx) > t {
                tracing::info!(call = %id, secs = t.as_secs(), "no RTP from the caller; hanging up");
                hangup_wanted = true;
                out.clear();
            }
        }
        if let Some(u) = up.as_mut() {
            u.flush();
        }
        if hangup_wanted && !hangup_sent && out.queued().is_zero() {
            hangup_sent = true;
            let _ = to_core.send(ToCore::Hangup { id: id.clone() }).await;
        }
    }
    if let Some(u) = up {
        let q = reports.quality();
        u.close(vec![CallInput::MediaQuality(q), CallInput::Hangup])
            .await;
    }
    if dtmf.flush().is_some() {
        tracing::debug!(call = %id, "DTMF event without an end at hang-up");
    }
    tracing::info!(call = %id, received = jb.stats.received, concealed = jb.stats.concealed, late = jb.stats.late, sent = out.packets_sent, "SIP media ended");
    let _ = to_core.send(ToCore::MediaStopped { id }).await;
}
