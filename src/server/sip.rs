//! Thin tokio driver for SIP trunks: sockets and timers around the sans-IO
//! `SipCore` (signalling) and, per call, the RTP cores (jitter buffer, DTMF,
//! paced sender, RTCP) wired to the same call pipeline as the Twilio path.
//!
//! A bridged transfer (B2BUA) adds a second leg to a call: we INVITE the
//! agent's URI, the bot briefs the agent with the hand-off summary on that
//! leg, then the two media tasks relay audio to each other until either side
//! hangs up. If the agent's leg fails first, the caller goes back to the bot.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

mod calls;
use calls::{connect_bridge, on_event, start_bridge};
mod media;

use super::Shared;
use crate::dialogue::CallMeta;
use crate::pipeline::{metrics::metrics, spawn_call, CallHandle, CallInput};
use crate::transport::rtp::rtcp;
use crate::transport::rtp::session::Command;
use crate::transport::sip::config::{SipConfig, Symmetric, TransferMode};
use crate::transport::sip::core::{
    CoreStats, EndReason, Event, IncomingCall, OutboundCall, Peer, SipCore, Transport,
};
use crate::transport::sip::flood::{FloodGuard, Limits, Verdict};
use crate::transport::sip::message;
use crate::transport::sip::sdp::{Negotiated, RemoteMedia};

/// What `GET /sip` reports.
#[derive(Debug, Default, Clone, Serialize)]
pub struct SipStatus {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
    pub active_calls: usize,
    pub calls_answered: u64,
    pub core: CoreStats,
    pub signalling: Signalling,
    /// Times the core was rebuilt after panicking again and again.
    pub core_restarts: u64,
}

/// The signalling task's state, for `/sip` and `/healthz`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Signalling {
    /// SIP is not configured.
    #[default]
    Off,
    Running,
    /// The task ended: the node can no longer take SIP calls.
    Stopped,
}

/// A core that panics this many times within `PANIC_WINDOW` is replaced.
const PANICS_BEFORE_REBUILD: usize = 5;
const PANIC_WINDOW: Duration = Duration::from_secs(10);

/// A message from the network for the signalling task. Its queue is
/// bounded (`limits.queue`): audio and retransmitted UDP may be dropped.
struct FromNet {
    peer: Peer,
    data: Vec<u8>,
}

/// The signalling task's inputs: control (and a sender for the media
/// tasks it starts) and the network's bounded queue.
struct Queues {
    tx: mpsc::Sender<ToCore>,
    rx: mpsc::Receiver<ToCore>,
    net: mpsc::Receiver<FromNet>,
}

/// Control from the call's own tasks. Unbounded on purpose: control is never
/// dropped, and there are at most a few per live call (not per packet).
enum ToCore {
    Hangup {
        id: String,
    },
    Transfer {
        id: String,
        target: String,
    },
    MediaStopped {
        id: String,
    },
    /// A mark queued on a leg without a pipeline (the agent's) was played.
    MediaMark {
        id: String,
        name: String,
    },
}

/// Commands a leg's media task may have waiting.
const MEDIA_COMMANDS: usize = 64;
/// Media tasks' messages to signalling waiting at once (hang-ups, transfers,
/// media stopped, briefing marks: a few per call over its life, never per
/// packet). Senders wait when it is full; signalling never sends here itself,
/// so that wait cannot block it.
const TO_CORE: usize = 1024;

/// Hands a command to a leg's media task without waiting: the signalling
/// loop never blocks on one call. A leg with `MEDIA_COMMANDS` waiting is not
/// keeping up: a key from the far end (SIP INFO) is dropped like late audio,
/// anything else is logged; memory stays bounded either way.
fn command(m: &mpsc::Sender<ToMedia>, c: ToMedia) {
    match m.try_send(c) {
        Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
        Err(mpsc::error::TrySendError::Full(ToMedia::Session(Command::Dtmf(_)))) => {
            metrics().protocol_errors_total.inc();
            tracing::warn!("a key arrived while its call's media was behind; dropped");
        }
        Err(mpsc::error::TrySendError::Full(_)) => {
            tracing::error!("a call's media task is not taking commands; one was dropped");
        }
    }
}

/// What signalling tells a leg's media task: most of it is for the leg's
/// `RtpSession` as is; a bridge also hands over the relay's channels.
enum ToMedia {
    Session(Command),
    /// Relay: what this leg hears goes to `to_peer`; what arrives on
    /// `from_peer` is played. A caller's pipeline ends here.
    Bridge {
        to_peer: mpsc::Sender<Vec<u8>>,
        from_peer: mpsc::Receiver<Vec<u8>>,
    },
    Stop,
}

/// Played on the agent's leg once the briefing has been heard.
const BRIEFED: &str = "attendant-briefed";

/// Writers of live stream connections (bounded: a peer that does not read
/// what we send is disconnected rather than buffered for).
type TcpConns = Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>>;

/// Messages queued for one stream connection's writer.
const CONN_QUEUE: usize = 256;

/// What every reader checks before a message costs anything.
#[derive(Clone)]
struct Gate {
    flood: Arc<Mutex<FloodGuard>>,
    limits: Limits,
    /// Sources some trunk admits: they get the trunk's allowance.
    trunks: Arc<Vec<crate::transport::sip::config::Trunk>>,
    /// Open stream connections: in all, and per address.
    conns: Arc<Mutex<(usize, HashMap<IpAddr, usize>)>>,
}

impl Gate {
    fn new(cfg: &SipConfig) -> Self {
        let limits = cfg.limits.clone();
        Self {
            flood: Arc::new(Mutex::new(FloodGuard::new(&limits))),
            trunks: Arc::new(cfg.trunks.clone()),
            limits,
            conns: Arc::default(),
        }
    }

    /// True when a message from `ip` may go on.
    fn admit(&self, ip: IpAddr) -> bool {
        let max = if self.trunks.iter().any(|t| t.admits(ip)) {
            self.limits.trunk_max_per_window
        } else {
            self.limits.max_per_window
        };
        match self.flood.lock().check(Instant::now(), ip, max) {
            Verdict::Pass => true,
            Verdict::Drop => {
                metrics().sip_dropped_total.inc();
                false
            }
            Verdict::Banned => {
                metrics().sip_bans_total.inc();
                metrics().sip_dropped_total.inc();
                tracing::warn!(source = %ip, ban_s = self.limits.ban_s, "SIP source over the rate limit: banned");
                false
            }
        }
    }

    /// Takes a connection place for `ip`, or None when over a cap.
    fn open_conn(&self, ip: IpAddr) -> Option<ConnPlace> {
        let mut g = self.conns.lock();
        let per = g.1.get(&ip).copied().unwrap_or(0);
        if g.0 >= self.limits.max_connections || per >= self.limits.max_connections_per_ip {
            return None;
        }
        g.0 += 1;
        *g.1.entry(ip).or_default() += 1;
        Some(ConnPlace {
            gate: self.clone(),
            ip,
        })
    }
}

/// A stream connection's place; freed on drop.
struct ConnPlace {
    gate: Gate,
    ip: IpAddr,
}

impl Drop for ConnPlace {
    fn drop(&mut self) {
        let mut g = self.gate.conns.lock();
        g.0 = g.0.saturating_sub(1);
        if let Some(n) = g.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                g.1.remove(&self.ip);
            }
        }
    }
}

/// Binds the configured SIP sockets and runs the signalling loop. Returns
/// once bound; the status handle is updated as calls come and go.
pub async fn start(
    state: Shared,
    cfg: SipConfig,
    status: Arc<Mutex<SipStatus>>,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel(TO_CORE);
    let (net_tx, net_rx) = mpsc::channel(cfg.limits.queue.max(16));
    let gate = Gate::new(&cfg);
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
        tokio::spawn(udp_reader(sock, local, net_tx.clone(), gate.clone()));
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
        bound_tcp.push(listen_stream(want, None, &net_tx, &conns, &gate).await?);
    }
    let mut bound_tls = Vec::new();
    if !cfg.listen.tls.is_empty() {
        let acceptor = tls_acceptor(&cfg.tls)?;
        for addr in &cfg.listen.tls {
            let tls = Some(acceptor.clone());
            bound_tls.push(listen_stream(*addr, tls, &net_tx, &conns, &gate).await?);
        }
    }
    {
        let mut st = status.lock();
        st.udp = bound_udp.clone();
        st.tcp = bound_tcp.clone();
        st.tls = bound_tls.clone();
    }
    tracing::info!(udp = ?bound_udp, tcp = ?bound_tcp, tls = ?bound_tls, "SIP listening");
    let core = SipCore::new(cfg);
    drop(net_tx);
    let queues = Queues {
        tx,
        rx,
        net: net_rx,
    };
    status.lock().signalling = Signalling::Running;
    let task = tokio::spawn(signalling(state, core, udp, conns, queues, status.clone()));
    tokio::spawn(watch(task, status));
    Ok(())
}

/// Marks SIP down when the signalling task ends (it runs for the node's
/// life, so an end is a failure), for `/healthz` to report.
async fn watch(task: tokio::task::JoinHandle<()>, status: Arc<Mutex<SipStatus>>) {
    let how = task.await;
    status.lock().signalling = Signalling::Stopped;
    match how {
        Err(e) if e.is_panic() => {
            crate::faults::contained(crate::faults::Part::SipCore, e.into_panic().as_ref())
        }
        _ => {}
    }
    tracing::error!("SIP signalling stopped; /healthz reports it");
}

async fn udp_reader(
    sock: Arc<UdpSocket>,
    local: SocketAddr,
    tx: mpsc::Sender<FromNet>,
    gate: Gate,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        match sock.recv_from(&mut buf).await {
            Ok((n, from)) => {
                if !gate.admit(from.ip()) {
                    continue;
                }
                let peer = Peer {
                    addr: from,
                    transport: Transport::Udp,
                    local,
                };
                match tx.try_send(FromNet {
                    peer,
                    data: buf[..n].to_vec(),
                }) {
                    Ok(()) => {}
                    // Overloaded: UDP peers retransmit what matters.
                    Err(mpsc::error::TrySendError::Full(_)) => metrics().sip_dropped_total.inc(),
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            // ICMP port unreachable from an earlier send shows up here on
            // Linux; it is not fatal to the socket.
            Err(e) => tracing::debug!(error = %e, "SIP UDP receive"),
        }
    }
}

/// The server side of SIP over TLS from the configured PEM files; read once
/// at start so a bad certificate stops the server with the file's name.
fn tls_acceptor(cfg: &crate::transport::sip::config::Tls) -> anyhow::Result<TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&cfg.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("SIP TLS certificate {}: {e}", cfg.cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!(
            "SIP TLS certificate {}: no certificate in it",
            cfg.cert.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(&cfg.key)
        .map_err(|e| anyhow::anyhow!("SIP TLS key {}: {e}", cfg.key.display()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let server = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            anyhow::anyhow!(
                "SIP TLS {} / {}: {e}",
                cfg.cert.display(),
                cfg.key.display()
            )
        })?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// Binds one TCP (or, with `tls`, TLS) listener and starts accepting on it.
async fn listen_stream(
    want: SocketAddr,
    tls: Option<TlsAcceptor>,
    net_tx: &mpsc::Sender<FromNet>,
    conns: &TcpConns,
    gate: &Gate,
) -> anyhow::Result<SocketAddr> {
    let kind = if tls.is_some() { "TLS" } else { "TCP" };
    let listener = TcpListener::bind(want).await.map_err(|e| {
        anyhow::anyhow!("cannot bind SIP {kind} {want}: {e} (see [sip] in the config)")
    })?;
    let local = listener.local_addr()?;
    let (tx, conns, gate) = (net_tx.clone(), conns.clone(), gate.clone());
    tokio::spawn(tcp_acceptor(listener, local, tx, conns, gate, tls));
    Ok(local)
}

/// Accepts stream connections; with `tls`, each one first completes a TLS
/// handshake (a peer that fails or stalls it is dropped, costing nothing).
async fn tcp_acceptor(
    listener: TcpListener,
    local: SocketAddr,
    tx: mpsc::Sender<FromNet>,
    conns: TcpConns,
    gate: Gate,
    tls: Option<TlsAcceptor>,
) {
    loop {
        let Ok((stream, from)) = listener.accept().await else {
            // Out of file descriptors, most likely: let some close first.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if !gate.admit(from.ip()) {
            continue;
        }
        let Some(place) = gate.open_conn(from.ip()) else {
            tracing::debug!(source = %from, "SIP connection refused: over the connection cap");
            metrics().sip_dropped_total.inc();
            continue;
        };
        let (tx, conns, gate) = (tx.clone(), conns.clone(), gate.clone());
        match tls.clone() {
            None => {
                tokio::spawn(async move {
                    stream_conn(stream, from, local, Transport::Tcp, tx, conns, gate).await;
                    drop(place);
                });
            }
            Some(acceptor) => {
                tokio::spawn(async move {
                    let shake =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                            .await;
                    match shake {
                        Ok(Ok(stream)) => {
                            stream_conn(stream, from, local, Transport::Tls, tx, conns, gate).await
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "SIP TLS handshake failed"),
                        Err(_) => tracing::debug!("SIP TLS handshake timed out"),
                    }
                    drop(place);
                });
            }
        }
    }
}

/// One SIP stream connection (TCP or TLS): frames messages to the core and
/// writes what the core sends to this peer.
async fn stream_conn<S>(
    stream: S,
    from: SocketAddr,
    local: SocketAddr,
    transport: Transport,
    tx: mpsc::Sender<FromNet>,
    conns: TcpConns,
    gate: Gate,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (wtx, mut wrx) = mpsc::channel::<Vec<u8>>(CONN_QUEUE);
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
        transport,
        local,
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16384];
    let idle = Duration::from_secs(gate.limits.idle_timeout_s.max(1));
    'read: loop {
        match tokio::time::timeout(idle, rd.read(&mut chunk)).await {
            Err(_) => {
                tracing::debug!(peer = %from, "SIP connection idle: closed");
                break;
            }
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
        loop {
            match message::parse_stream(&buf) {
                Ok(Some((_, used))) => {
                    let data: Vec<u8> = buf.drain(..used).collect();
                    if !gate.admit(from.ip()) {
                        // Banned mid-connection: nothing more is read.
                        break 'read;
                    }
                    // Back-pressure: a full queue slows this peer's reads.
                    if tx.send(FromNet { peer, data }).await.is_err() {
                        break 'read;
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    // Framing is lost on a stream: answer if we can, then close.
                    let _ = tx
                        .send(FromNet {
                            peer,
                            data: std::mem::take(&mut buf),
                        })
                        .await;
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
    leg: Leg,
    rtp: Option<std::net::UdpSocket>,
    rtcp: Option<std::net::UdpSocket>,
    media: Option<mpsc::Sender<ToMedia>>,
    /// The caller's place on this node (none on an agent's leg).
    _ticket: Option<super::admission::Ticket>,
}

enum Leg {
    /// A call we answered; `agent` is the leg of a bridged transfer.
    Caller {
        incoming: IncomingCall,
        agent: Option<String>,
        bridged: bool,
    },
    /// The call we placed to an agent for caller `caller`.
    Agent { caller: String, target: String },
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
    queues: Queues,
    status: Arc<Mutex<SipStatus>>,
) {
    let Queues {
        tx,
        mut rx,
        mut net,
    } = queues;
    let mut calls: HashMap<String, Slot> = HashMap::new();
    let cfg = core.config().clone();
    let mut panics = crate::faults::PanicWindow::new(PANICS_BEFORE_REBUILD, PANIC_WINDOW);
    loop {
        // A panic while handling one input (a bug a message found) drops
        // that input; the core carries on. One that keeps panicking is
        // replaced, ending the SIP calls it held.
        let step = std::panic::AssertUnwindSafe(async {
            let deadline = core.poll_timeout();
            tokio::select! {
                // Control first: a call's hang-up never waits behind a flood.
                biased;
                msg = rx.recv() => {
                    let Some(msg) = msg else { return false };
                    let now = Instant::now();
                    match msg {
                        ToCore::Hangup { id } => {
                            if let Err(e) = core.hangup(now, &id) {
                                tracing::debug!(error = %e, "hangup");
                            }
                        }
                        ToCore::Transfer { id, target } => {
                            let uri = core.config().transfer_uri(&target);
                            let mode = core.config().transfer_mode(&target);
                            let result = match uri {
                                Some(uri) if mode == TransferMode::Bridge => {
                                    start_bridge(&mut core, &mut calls, &udp, &id, &target, &uri).await
                                }
                                Some(uri) => core.refer(now, &id, &uri, Some(&id)).map_err(|e| e.to_string()),
                                None => Err(format!("no SIP URI for transfer target {target:?} in sip-config [transfer.targets]")),
                            };
                            if let Err(e) = result {
                                tracing::warn!(call = %id, error = %e, "transfer not started");
                                if let Some(m) = calls.get(&id).and_then(|s| s.media.as_ref()) {
                                    command(m, ToMedia::Session(Command::TransferFailed(500)));
                                }
                            }
                        }
                        ToCore::MediaStopped { id } => {
                            if let Some(slot) = calls.get_mut(&id) {
                                slot.media = None;
                            }
                        }
                        ToCore::MediaMark { id, name } if name == BRIEFED => connect_bridge(&mut calls, &id),
                        ToCore::MediaMark { .. } => {}
                    }
                }
                m = net.recv() => {
                    let Some(FromNet { peer, data }) = m else { return false };
                    // Probes (OPTIONS) say whether this node takes calls now.
                    core.set_available(state.engines.get().is_some() && state.admission.accepting());
                    core.handle(Instant::now(), peer, &data);
                }
                _ = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d.into()).await,
                        None => std::future::pending().await,
                    }
                } => core.handle_timeout(Instant::now()),
            }
            transmit(&mut core, &udp, &conns).await;
            while let Some(ev) = core.poll_event() {
                on_event(&state, &mut core, &mut calls, &tx, ev).await;
            }
            // Answers produced while handling events (200 OK, BYE) go out now.
            transmit(&mut core, &udp, &conns).await;
            true
        })
        .catch_unwind()
        .await;
        match step {
            Ok(true) => {}
            Ok(false) => return,
            Err(panic) => {
                crate::faults::contained(crate::faults::Part::SipCore, panic.as_ref());
                if panics.record(Instant::now()) {
                    tracing::error!(
                        calls = calls.len(),
                        "SIP core kept panicking; rebuilt it, its calls end"
                    );
                    calls.clear();
                    core = SipCore::new(cfg.clone());
                    status.lock().core_restarts += 1;
                }
            }
        }
        let mut st = status.lock();
        st.active_calls = core.active_calls();
        st.calls_answered = core.stats.answered;
        st.core = core.stats;
    }
}

/// Sends what the core has to send.
async fn transmit(core: &mut SipCore, udp: &HashMap<SocketAddr, Arc<UdpSocket>>, conns: &TcpConns) {
    while let Some(t) = core.poll_transmit() {
        match t.to.transport {
            Transport::Udp => {
                if let Some(sock) = udp.get(&t.to.local) {
                    let _ = sock.send_to(&t.data, t.to.addr).await;
                }
            }
            Transport::Tcp | Transport::Tls => send_stream(conns, t.to.addr, t.data),
        }
    }
}

/// Queues bytes for a stream connection; one whose peer stopped reading is
/// dropped (its writer ends with the last sender).
fn send_stream(conns: &TcpConns, to: SocketAddr, data: Vec<u8>) {
    let mut c = conns.lock();
    if let Some(w) = c.get(&to) {
        if let Err(mpsc::error::TrySendError::Full(_)) = w.try_send(data) {
            tracing::warn!(peer = %to, "SIP connection not reading: closed");
            c.remove(&to);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_signalling_task_that_dies_is_reported() {
        let status = Arc::new(Mutex::new(SipStatus {
            signalling: Signalling::Running,
            ..Default::default()
        }));
        let faults = crate::faults::count(crate::faults::Part::SipCore);
        let task = tokio::spawn(async {
            tokio::task::yield_now().await;
            panic!("signalling bug");
        });
        watch(task, status.clone()).await;
        assert_eq!(status.lock().signalling, Signalling::Stopped);
        assert!(crate::faults::count(crate::faults::Part::SipCore) > faults);
    }
}
