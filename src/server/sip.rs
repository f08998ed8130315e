//! Thin tokio driver for SIP trunks: sockets and timers around the sans-IO
//! `SipCore` (signalling) and, per call, the RTP cores (jitter buffer, DTMF,
//! paced sender, RTCP) wired to the same call pipeline as the Twilio path.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use super::Shared;
use crate::dialogue::CallMeta;
use crate::media::alaw;
use crate::pipeline::{metrics::metrics, spawn_call, CallHandle, CallInput, CallOutput};
use crate::transport::rtp::{
    self, dtmf::DtmfDecoder, jitter::JitterBuffer, jitter::Playout, outbound, rtcp,
};
use crate::transport::sip::config::{SipConfig, Symmetric};
use crate::transport::sip::core::{
    CoreStats, EndReason, Event, IncomingCall, Peer, SipCore, Transport,
};
use crate::transport::sip::message;
use crate::transport::sip::sdp::{Codec, Negotiated, RemoteMedia};

/// What `GET /sip` reports.
#[derive(Debug, Default, Clone, Serialize)]
pub struct SipStatus {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub active_calls: usize,
    pub calls_answered: u64,
    pub core: CoreStats,
}

enum ToCore {
    Message { peer: Peer, data: Vec<u8> },
    Hangup { id: String },
    Transfer { id: String, target: String },
    MediaStopped { id: String },
}

enum ToMedia {
    Update {
        remote: RemoteMedia,
        negotiated: Negotiated,
    },
    Dtmf(char),
    TransferFailed(u16),
    Stop,
}

type TcpConns = Arc<Mutex<HashMap<SocketAddr, mpsc::UnboundedSender<Vec<u8>>>>>;

/// Binds the configured SIP sockets and runs the signalling loop. Returns
/// once bound; the status handle is updated as calls come and go.
pub async fn start(
    state: Shared,
    cfg: SipConfig,
    status: Arc<Mutex<SipStatus>>,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut udp: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut bound_udp = Vec::new();
    for addr in &cfg.listen.udp {
        let sock = UdpSocket::bind(addr).await.map_err(|e| {
            anyhow::anyhow!("cannot bind SIP UDP {addr}: {e} (see [sip] in the config)")
        })?;
        let local = sock.local_addr()?;
        let sock = Arc::new(sock);
        udp.insert(local, sock.clone());
        bound_udp.push(local);
        tokio::spawn(udp_reader(sock, local, tx.clone()));
    }
    let conns: TcpConns = Arc::default();
    let mut bound_tcp = Vec::new();
    for addr in &cfg.listen.tcp {
        // Port 0 follows the UDP port on the same IP, so both share a number.
        let mut want = *addr;
        if want.port() == 0 {
            if let Some(u) = bound_udp.iter().find(|u| u.ip() == want.ip()) {
                want.set_port(u.port());
            }
        }
        let listener = TcpListener::bind(want).await.map_err(|e| {
            anyhow::anyhow!("cannot bind SIP TCP {want}: {e} (see [sip] in the config)")
        })?;
        let local = listener.local_addr()?;
        bound_tcp.push(local);
        tokio::spawn(tcp_acceptor(listener, local, tx.clone(), conns.clone()));
    }
    {
        let mut st = status.lock();
        st.udp = bound_udp.clone();
        st.tcp = bound_tcp.clone();
    }
    tracing::info!(udp = ?bound_udp, tcp = ?bound_tcp, "SIP listening");
    let core = SipCore::new(cfg);
    tokio::spawn(signalling(state, core, udp, conns, tx, rx, status));
    Ok(())
}

async fn udp_reader(sock: Arc<UdpSocket>, local: SocketAddr, tx: mpsc::UnboundedSender<ToCore>) {
    let mut buf = vec![0u8; 65536];
    loop {
        match sock.recv_from(&mut buf).await {
            Ok((n, from)) => {
                let peer = Peer {
                    addr: from,
                    transport: Transport::Udp,
                    local,
                };
                if tx
                    .send(ToCore::Message {
                        peer,
                        data: buf[..n].to_vec(),
                    })
                    .is_err()
                {
                    return;
                }
            }
            // ICMP port unreachable from an earlier send shows up here on
            // Linux; it is not fatal to the socket.
            Err(e) => tracing::debug!(error = %e, "SIP UDP receive"),
        }
    }
}

async fn tcp_acceptor(
    listener: TcpListener,
    local: SocketAddr,
    tx: mpsc::UnboundedSender<ToCore>,
    conns: TcpConns,
) {
    loop {
        let Ok((stream, from)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(tcp_conn(stream, from, local, tx.clone(), conns.clone()));
    }
}

async fn tcp_conn(
    stream: TcpStream,
    from: SocketAddr,
    local: SocketAddr,
    tx: mpsc::UnboundedSender<ToCore>,
    conns: TcpConns,
) {
    let (mut rd, mut wr) = stream.into_split();
    let (wtx, mut wrx) = mpsc::unbounded_channel::<Vec<u8>>();
    conns.lock().insert(from, wtx);
    let writer = tokio::spawn(async move {
        while let Some(data) = wrx.recv().await {
            if wr.write_all(&data).await.is_err() {
                break;
            }
        }
    });
    let peer = Peer {
        addr: from,
        transport: Transport::Tcp,
        local,
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16384];
    'read: loop {
        match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        loop {
            match message::parse_stream(&buf) {
                Ok(Some((_, used))) => {
                    let data: Vec<u8> = buf.drain(..used).collect();
                    let _ = tx.send(ToCore::Message { peer, data });
                }
                Ok(None) => break,
                Err(_) => {
                    // Framing is lost on a stream: answer if we can, then close.
                    let _ = tx.send(ToCore::Message {
                        peer,
                        data: std::mem::take(&mut buf),
                    });
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    break 'read;
                }
            }
        }
    }
    conns.lock().remove(&from);
    writer.abort();
}

struct Slot {
    incoming: IncomingCall,
    rtp: Option<std::net::UdpSocket>,
    rtcp: Option<std::net::UdpSocket>,
    media: Option<mpsc::UnboundedSender<ToMedia>>,
}

/// Binds an even RTP port and the RTCP port above it, inside the range.
/// Plain std sockets: they are registered with the media runtime that
/// drives them, not with the signalling one.
fn bind_media(
    ip: IpAddr,
    range: [u16; 2],
) -> std::io::Result<(std::net::UdpSocket, std::net::UdpSocket)> {
    let open = |port: u16| -> std::io::Result<std::net::UdpSocket> {
        let s = std::net::UdpSocket::bind((ip, port))?;
        s.set_nonblocking(true)?;
        Ok(s)
    };
    let [lo, hi] = range;
    if lo == 0 {
        return Ok((open(0)?, open(0)?));
    }
    let pairs = ((hi - lo) / 2).max(1);
    for _ in 0..64 {
        let port = lo + (lo % 2) + 2 * fastrand::u16(0..pairs);
        if port >= hi {
            continue;
        }
        let Ok(rtp) = open(port) else {
            continue;
        };
        if let Ok(rtcp) = open(port + 1) {
            return Ok((rtp, rtcp));
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no free RTP port pair in media.rtp_ports",
    ))
}

/// RTP runs on a runtime of its own, so the 20 ms clock of every call keeps
/// time even while the call pipelines keep the main workers busy.
fn media_runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("attendant-rtp")
            .enable_all()
            .build()
            .expect("RTP runtime")
    })
}

async fn signalling(
    state: Shared,
    mut core: SipCore,
    udp: HashMap<SocketAddr, Arc<UdpSocket>>,
    conns: TcpConns,
    tx: mpsc::UnboundedSender<ToCore>,
    mut rx: mpsc::UnboundedReceiver<ToCore>,
    status: Arc<Mutex<SipStatus>>,
) {
    let mut calls: HashMap<String, Slot> = HashMap::new();
    loop {
        let deadline = core.poll_timeout();
        tokio::select! {
            msg = rx.recv() => {
                let Some(msg) = msg else { return };
                let now = Instant::now();
                match msg {
                    ToCore::Message { peer, data } => core.handle(now, peer, &data),
                    ToCore::Hangup { id } => {
                        if let Err(e) = core.hangup(now, &id) {
                            tracing::debug!(error = %e, "hangup");
                        }
                    }
                    ToCore::Transfer { id, target } => {
                        let uri = core.config().transfer_uri(&target);
                        let result = match uri {
                            Some(uri) => core.refer(now, &id, &uri, Some(&id)).map_err(|e| e.to_string()),
                            None => Err(format!("no SIP URI for transfer target {target:?} in sip-config [transfer.targets]")),
                        };
                        if let Err(e) = result {
                            tracing::warn!(call = %id, error = %e, "transfer not started");
                            if let Some(m) = calls.get(&id).and_then(|s| s.media.as_ref()) {
                                let _ = m.send(ToMedia::TransferFailed(500));
                            }
                        }
                    }
                    ToCore::MediaStopped { id } => {
                        if let Some(slot) = calls.get_mut(&id) {
                            slot.media = None;
                        }
                    }
                }
            }
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            } => core.handle_timeout(Instant::now()),
        }
        while let Some(t) = core.poll_transmit() {
            match t.to.transport {
                Transport::Udp => {
                    if let Some(sock) = udp.get(&t.to.local) {
                        let _ = sock.send_to(&t.data, t.to.addr).await;
                    }
                }
                Transport::Tcp => {
                    if let Some(w) = conns.lock().get(&t.to.addr) {
                        let _ = w.send(t.data);
                    }
                }
            }
        }
        while let Some(ev) = core.poll_event() {
            on_event(&state, &mut core, &mut calls, &tx, ev).await;
        }
        // Answers produced while handling events (200 OK, BYE) go out now.
        while let Some(t) = core.poll_transmit() {
            match t.to.transport {
                Transport::Udp => {
                    if let Some(sock) = udp.get(&t.to.local) {
                        let _ = sock.send_to(&t.data, t.to.addr).await;
                    }
                }
                Transport::Tcp => {
                    if let Some(w) = conns.lock().get(&t.to.addr) {
                        let _ = w.send(t.data);
                    }
                }
            }
        }
        let mut st = status.lock();
        st.active_calls = core.active_calls();
        st.calls_answered = core.stats.answered;
        st.core = core.stats;
    }
}

async fn on_event(
    state: &Shared,
    core: &mut SipCore,
    calls: &mut HashMap<String, Slot>,
    tx: &mpsc::UnboundedSender<ToCore>,
    ev: Event,
) {
    let now = Instant::now();
    match ev {
        Event::Incoming(inc) => {
            let id = inc.id.clone();
            if state.engines.get().is_none() {
                let _ = core.reject(now, &id, 503);
                return;
            }
            let public: IpAddr = core
                .config()
                .listen
                .public_address
                .parse()
                .unwrap_or(inc.peer.local.ip());
            match bind_media(inc.peer.local.ip(), core.config().media.rtp_ports) {
                Ok((rtp_sock, rtcp_sock)) => {
                    let port = rtp_sock.local_addr().map(|a| a.port()).unwrap_or(0);
                    if let Err(e) = core.accept(now, &id, SocketAddr::new(public, port)) {
                        tracing::warn!(error = %e, "cannot answer");
                        let _ = core.reject(now, &id, 500);
                        return;
                    }
                    tracing::info!(call = %id, trunk = %inc.trunk, "SIP call answered");
                    calls.insert(
                        id,
                        Slot {
                            incoming: inc,
                            rtp: Some(rtp_sock),
                            rtcp: Some(rtcp_sock),
                            media: None,
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no RTP port; rejecting the call");
                    let _ = core.reject(now, &id, 503);
                }
            }
        }
        Event::Media {
            id,
            remote,
            negotiated,
        } => {
            let Some(slot) = calls.get_mut(&id) else {
                return;
            };
            if let Some(m) = &slot.media {
                let _ = m.send(ToMedia::Update { remote, negotiated });
                return;
            }
            let (Some(rtp_sock), Some(rtcp_sock)) = (slot.rtp.take(), slot.rtcp.take()) else {
                return;
            };
            let Some(engines) = state.engines.get().cloned() else {
                return;
            };
            let inc = &slot.incoming;
            let mut params = std::collections::BTreeMap::new();
            params.insert("trunk".to_string(), inc.trunk.clone());
            if let Some(d) = &inc.display_name {
                params.insert("display_name".to_string(), d.clone());
            }
            if let Some(agent) = core
                .config()
                .agent_for(inc.dialled.as_deref().unwrap_or(""))
            {
                params.insert("agent".to_string(), agent.to_string());
            }
            let meta = CallMeta {
                call_id: id.clone(),
                channel: "sip".into(),
                from: inc.caller.clone(),
                to: inc.dialled.clone(),
                params,
            };
            let call = spawn_call(engines, meta, state.calls.clone());
            let (mtx, mrx) = mpsc::unbounded_channel();
            slot.media = Some(mtx);
            let cfg = core.config().media.clone();
            media_runtime().spawn(media(MediaArgs {
                id,
                rtp: rtp_sock,
                rtcp: rtcp_sock,
                remote,
                negotiated,
                jitter: Duration::from_millis(cfg.jitter_ms),
                symmetric: cfg.symmetric_rtp,
                rtp_timeout: (cfg.rtp_timeout_s > 0)
                    .then(|| Duration::from_secs(cfg.rtp_timeout_s)),
                call,
                cmds: mrx,
                to_core: tx.clone(),
            }));
        }
        Event::Dtmf { id, digit } => {
            if let Some(m) = calls.get(&id).and_then(|s| s.media.as_ref()) {
                let _ = m.send(ToMedia::Dtmf(digit));
            }
        }
        Event::Transfer { id, status, final_ } => {
            tracing::info!(call = %id, status, final_, "transfer progress");
            if !final_ {
                return;
            }
            if (200..300).contains(&status) {
                // The caller is with the agent now; our leg ends.
                let _ = core.hangup(now, &id);
            } else if let Some(m) = calls.get(&id).and_then(|s| s.media.as_ref()) {
                let _ = m.send(ToMedia::TransferFailed(status));
            }
        }
        Event::Ended { id, reason } => {
            tracing::info!(call = %id, ?reason, "SIP call ended");
            if let Some(slot) = calls.remove(&id) {
                if let Some(m) = slot.media {
                    let _ = m.send(ToMedia::Stop);
                }
            }
            if matches!(reason, EndReason::NoAck) {
                metrics().protocol_errors_total.inc();
            }
        }
    }
}

struct MediaArgs {
    id: String,
    rtp: std::net::UdpSocket,
    rtcp: std::net::UdpSocket,
    remote: RemoteMedia,
    negotiated: Negotiated,
    jitter: Duration,
    symmetric: Symmetric,
    rtp_timeout: Option<Duration>,
    call: CallHandle,
    cmds: mpsc::UnboundedReceiver<ToMedia>,
    to_core: mpsc::UnboundedSender<ToCore>,
}

/// Where to send after the first packet from `src` (symmetric RTP).
pub fn latch(policy: Symmetric, sdp: SocketAddr, src: SocketAddr) -> SocketAddr {
    match policy {
        Symmetric::Always => src,
        Symmetric::Auto if src.ip() != sdp.ip() => src,
        _ => sdp,
    }
}

fn silence(codec: Codec) -> u8 {
    match codec {
        Codec::Pcmu => 0xff,
        Codec::Pcma => alaw::SILENCE,
    }
}

async fn next_output(call: &mut Option<CallHandle>) -> Option<CallOutput> {
    match call {
        Some(c) => c.output.recv().await,
        None => std::future::pending().await,
    }
}

async fn media(a: MediaArgs) {
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
            let _ = to_core.send(ToCore::Hangup { id: id.clone() });
            let _ = to_core.send(ToCore::MediaStopped { id });
            return;
        }
    };
    let mut call = Some(call);
    let sdp_addr = SocketAddr::new(remote.addr, remote.port);
    let mut dest = sdp_addr;
    let mut rtcp_dest = SocketAddr::new(remote.addr, remote.port.wrapping_add(1));
    let mut latched = false;
    let ssrc = fastrand::u32(..);
    let mut out = outbound::Outbound::new(
        ssrc,
        fastrand::u16(..),
        fastrand::u32(..),
        negotiated.codec.payload_type(),
        silence(negotiated.codec),
    );
    let mut on_hold = remote.on_hold();
    out.set_muted(on_hold);
    out.start(Instant::now());
    let mut last_rx = Instant::now();
    let mut jb = JitterBuffer::new(jitter, silence(negotiated.codec));
    let mut dtmf = DtmfDecoder::default();
    let mut hangup_wanted = false;
    let mut hangup_sent = false;
    let mut rx_ssrc = 0u32;
    let mut rx_highest = 0u32;
    let mut next_rtcp = Instant::now() + Duration::from_secs(5);
    let mut buf = vec![0u8; 2048];
    let mut rbuf = vec![0u8; 1500];
    let m = metrics();
    loop {
        let deadline = [jb.poll_timeout(), out.poll_timeout(), Some(next_rtcp)]
            .into_iter()
            .flatten()
            .min()
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
                m.rtp_packets_received_total.inc();
                last_rx = Instant::now();
                if !latched {
                    dest = latch(symmetric, sdp_addr, src);
                    if dest != sdp_addr {
                        rtcp_dest = SocketAddr::new(dest.ip(), dest.port().wrapping_add(1));
                        tracing::info!(call = %id, "symmetric RTP: sending to the caller's source address");
                    }
                    latched = true;
                }
                let now = Instant::now();
                if Some(p.payload_type) == negotiated.dtmf_pt {
                    if let Some(d) = dtmf.push(p.timestamp, p.payload) {
                        if let Some(c) = &call {
                            let _ = c.input.send(CallInput::Dtmf(d)).await;
                        }
                    }
                } else if p.payload_type == negotiated.codec.payload_type() {
                    rx_ssrc = p.ssrc;
                    rx_highest = rx_highest.max(p.seq as u32);
                    jb.push(p.ssrc, p.seq, p.timestamp, p.payload, now);
                }
            }
            r = rtcp_sock.recv_from(&mut rbuf) => {
                if let Ok((n, _)) = r {
                    for rep in rtcp::parse_reports(&rbuf[..n]) {
                        tracing::debug!(call = %id, lost = rep.cumulative_lost, jitter = rep.jitter, "RTCP report");
                    }
                }
            }
            o = next_output(&mut call) => match o {
                None => {
                    // The pipeline ended: hang up once our audio has gone out.
                    call = None;
                    hangup_wanted = true;
                }
                Some(o) => match o {
                    CallOutput::Audio { reply, ulaw } => {
                        let bytes = match negotiated.codec {
                            Codec::Pcmu => ulaw.to_vec(),
                            Codec::Pcma => alaw::from_ulaw(&ulaw),
                        };
                        out.send_audio(reply, &bytes);
                    }
                    CallOutput::Mark(name) => out.send_mark(name),
                    CallOutput::Pause => out.set_paused(true),
                    CallOutput::Resume => out.set_paused(false),
                    CallOutput::Clear => {
                        out.clear();
                    }
                    CallOutput::Hangup => hangup_wanted = true,
                    CallOutput::Transfer { target, .. } => {
                        let _ = to_core.send(ToCore::Transfer { id: id.clone(), target });
                    }
                },
            },
            c = cmds.recv() => match c {
                Some(ToMedia::Update { remote, negotiated: n }) => {
                    if !latched || symmetric == Symmetric::Never {
                        dest = SocketAddr::new(remote.addr, remote.port);
                    }
                    on_hold = remote.on_hold();
                    out.set_muted(on_hold);
                    last_rx = Instant::now();
                    negotiated = n;
                }
                Some(ToMedia::Dtmf(d)) => {
                    if let Some(c) = &call {
                        let _ = c.input.send(CallInput::Dtmf(d)).await;
                    }
                }
                Some(ToMedia::TransferFailed(status)) => {
                    if let Some(c) = &call {
                        let _ = c.input.send(CallInput::TransferFailed { status }).await;
                    }
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
            if let Some(c) = &call {
                let _ = c.input.try_send(CallInput::Audio(ulaw));
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
                    if let Some(c) = &call {
                        let _ = c.input.try_send(CallInput::MarkPlayed(name));
                    }
                }
                outbound::Sent::ReplyStarted(reply) => {
                    if let Some(c) = &call {
                        let _ = c.input.try_send(CallInput::ReplyStarted { reply, at: now });
                    }
                }
            }
        }
        if now >= next_rtcp {
            next_rtcp = now + Duration::from_secs(5);
            let rx = (rx_ssrc != 0).then_some(rtcp::Reception {
                ssrc: rx_ssrc,
                highest_seq: rx_highest,
                lost: jb.stats.concealed as u32,
                fraction_lost: 0,
                jitter: 0,
            });
            let sr = rtcp::sender_report(
                ssrc,
                0,
                out.packets_sent as u32,
                (out.packets_sent * 160) as u32,
                rx,
            );
            let _ = rtcp_sock.send_to(&sr, rtcp_dest).await;
        }
        if let Some(t) = rtp_timeout {
            if !on_hold && !hangup_sent && now.duration_since(last_rx) > t {
                tracing::info!(call = %id, secs = t.as_secs(), "no RTP from the caller; hanging up");
                hangup_wanted = true;
                out.clear();
            }
        }
        if hangup_wanted && !hangup_sent && out.queued().is_zero() {
            hangup_sent = true;
            let _ = to_core.send(ToCore::Hangup { id: id.clone() });
        }
    }
    if let Some(c) = &call {
        let _ = c.input.send(CallInput::Hangup).await;
    }
    if let Some(d) = dtmf.flush() {
        tracing::debug!(call = %id, digit = %d, "DTMF event without an end at hang-up");
    }
    tracing::info!(call = %id, received = jb.stats.received, concealed = jb.stats.concealed, late = jb.stats.late, sent = out.packets_sent, "SIP media ended");
    let _ = to_core.send(ToCore::MediaStopped { id });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_rtp_policy() {
        let sdp: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        let nat: SocketAddr = "203.0.113.7:61000".parse().unwrap();
        let same_ip: SocketAddr = "10.0.0.5:4002".parse().unwrap();
        assert_eq!(
            latch(Symmetric::Auto, sdp, nat),
            nat,
            "NAT rewrote the address"
        );
        assert_eq!(latch(Symmetric::Auto, sdp, same_ip), sdp);
        assert_eq!(latch(Symmetric::Always, sdp, same_ip), same_ip);
        assert_eq!(latch(Symmetric::Never, sdp, nat), sdp);
    }
}
