//! One SIP leg's media task: the thin driver of its sans-IO
//! [`RtpSession`] (source lock, jitter buffer, RFC 4733 keys, paced stream,
//! ringback, relay, RTCP, RTP timeout). It moves datagrams, the signalling
//! task's commands, the bot's pipeline and the bridged leg's audio in and
//! out, and wakes the session on time.

use tracing::Instrument;

use super::*;
use crate::transport::playout::{self, Uplink};
use crate::transport::rtp::session::{Command, Output, RtpSession, SessionConfig};

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

async fn next_relayed(rx: &mut Option<mpsc::Receiver<Vec<u8>>>) -> Option<Vec<u8>> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// One leg's media: RTP in and out, RTCP, DTMF, relay when bridged.
pub(super) async fn run(a: MediaArgs) {
    let span = tracing::info_span!("sip_media", call = %a.id);
    leg(a).instrument(span).await
}

async fn leg(a: MediaArgs) {
    let MediaArgs {
        id,
        rtp: sock,
        rtcp: rtcp_sock,
        remote,
        negotiated,
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
            tracing::warn!("RTP sockets unusable; hanging up");
            let _ = to_core.send(ToCore::Hangup { id: id.clone() }).await;
            let _ = to_core.send(ToCore::MediaStopped { id }).await;
            return;
        }
    };
    let cfg = SessionConfig {
        symmetric,
        jitter,
        rtp_timeout,
        ssrc: fastrand::u32(..),
        first_seq: fastrand::u16(..),
        first_ts: fastrand::u32(..),
    };
    let mut s = RtpSession::new(cfg, &remote, negotiated, call.is_some(), Instant::now());
    // The bot's pipeline, both ways: `up` (audio may drop, control never)
    // and `down` (its commands).
    let (mut up, mut down) = match call {
        Some(c) => (Some(Uplink::new(c.input)), Some(c.output)),
        None => (None, None),
    };
    // Bridged: what we hear goes to the other leg, what it hears we play.
    let mut relay: Option<mpsc::Sender<Vec<u8>>> = None;
    let mut relay_in: Option<mpsc::Receiver<Vec<u8>>> = None;
    let mut buf = vec![0u8; 2048];
    let mut rbuf = vec![0u8; 1500];
    let m = metrics();
    loop {
        let deadline = playout::retry_at(s.poll_timeout(), up.as_ref())
            .unwrap_or_else(|| Instant::now() + Duration::from_millis(20));
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                if let Ok((n, src)) = r {
                    s.receive_rtp(Instant::now(), src, &buf[..n]);
                }
            }
            r = rtcp_sock.recv_from(&mut rbuf) => {
                if let Ok((n, _)) = r {
                    s.receive_rtcp(Instant::now(), rtcp::Ntp::now(), &rbuf[..n]);
                }
            }
            o = playout::next_command(&mut down) => match o {
                Some(o) => s.from_bot(Instant::now(), o),
                None => {
                    down = None;
                    s.bot_ended(Instant::now());
                }
            },
            f = next_relayed(&mut relay_in) => match f {
                Some(ulaw) => s.relayed(Instant::now(), &ulaw),
                // The other leg's media ended; signalling ends this one.
                None => relay_in = None,
            },
            c = cmds.recv() => match c {
                Some(ToMedia::Session(c)) => s.command(Instant::now(), c),
                Some(ToMedia::Bridge { to_peer, from_peer }) => {
                    // The bot's part is done: its pipeline ends (the record
                    // keeps the transfer as the outcome).
                    down = None;
                    if let Some(u) = up.take() {
                        u.close(vec![CallInput::Hangup]).await;
                    }
                    relay = Some(to_peer);
                    relay_in = Some(from_peer);
                    s.command(Instant::now(), Command::Bridge);
                }
                Some(ToMedia::Stop) | None => break,
            },
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
        // Inputs already ran the session's clock; only a deadline that has
        // passed (a frame to send, a report, the RTP time-out) needs it again.
        let now = Instant::now();
        if s.poll_timeout().is_some_and(|t| t <= now) {
            s.handle_timeout(now, Some(rtcp::Ntp::now()));
        }
        while let Some(o) = s.poll_output() {
            match o {
                Output::Rtp { to, packet } => {
                    if sock.send_to(&packet, to).await.is_ok() {
                        m.rtp_packets_sent_total.inc();
                    }
                }
                Output::Rtcp { to, packet } => {
                    let _ = rtcp_sock.send_to(&packet, to).await;
                }
                Output::Bot(input) => {
                    if let Some(u) = up.as_mut() {
                        match input {
                            CallInput::Audio(ulaw) => {
                                if !u.audio(ulaw) {
                                    m.media_dropped_ms_total.inc_by(20);
                                }
                            }
                            // Figures: dropped if the call is busy; the next ones follow.
                            CallInput::MediaQuality(q) => {
                                u.offer(CallInput::MediaQuality(q));
                            }
                            other => u.control(other),
                        }
                    }
                }
                Output::Peer(ulaw) => {
                    // Audio may drop: a stalled leg loses frames, never memory.
                    if let Some(r) = &relay {
                        let _ = r.try_send(ulaw);
                    }
                }
                Output::Mark(name) => {
                    let _ = to_core
                        .send(ToCore::MediaMark {
                            id: id.clone(),
                            name,
                        })
                        .await;
                }
                Output::Transfer(target) => {
                    let _ = to_core
                        .send(ToCore::Transfer {
                            id: id.clone(),
                            target,
                        })
                        .await;
                }
                Output::Hangup => {
                    let _ = to_core.send(ToCore::Hangup { id: id.clone() }).await;
                }
            }
        }
        if let Some(u) = up.as_mut() {
            u.flush();
        }
    }
    s.close();
    if let Some(u) = up {
        u.close(vec![
            CallInput::MediaQuality(s.quality()),
            CallInput::Hangup,
        ])
        .await;
    }
    let (received, concealed, late, sent) = s.stats();
    tracing::info!(received, concealed, late, sent, "SIP media ended");
    let _ = to_core.send(ToCore::MediaStopped { id }).await;
}
