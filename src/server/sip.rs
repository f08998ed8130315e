//! Thin tokio driver for SIP trunks: sockets and timers around the sans-IO
//! `SipCore` (signalling) and, per call, the RTP cores (jitter buffer, DTMF,
//! paced sender, RTCP) wired to the same call pipeline as the Twilio path.
//!
//! A bridged transfer (B2BUA) adds a second leg to a call: we INVITE the
//! agent's URI, the bot briefs the agent with the hand-off summary on that
//! leg, then the two media tasks relay audio to each other until either side
//! hangs up. If the agent's leg fails first, the caller goes back to the bot.

use std::collections::{HashMap, VecDeque};
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

use super::Shared;
use crate::dialogue::CallMeta;
use crate::media::{alaw, tones};
use crate::pipeline::{metrics::metrics, spawn_call, CallHandle, CallInput, CallOutput};
use crate::transport::rtp::{
    self,
    dtmf::DtmfDecoder,
    jitter::JitterBuffer,
    jitter::Playout,
    outbound, rtcp,
    source::{Admit, SourceLock},
};
use crate::transport::sip::config::{SipConfig, Symmetric, TransferMode};
use crate::transport::sip::core::{
    CoreStats, EndReason, Event, IncomingCall, OutboundCall, Peer, SipCore, Transport,
};
use crate::transport::sip::flood::{FloodGuard, Limits, Verdict};
use crate::transport::sip::message;
use crate::transport::sip::sdp::{Codec, Negotiated, RemoteMedia};

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
    tx: mpsc::UnboundedSender<ToCore>,
    rx: mpsc::UnboundedReceiver<ToCore>,
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

enum ToMedia {
    Update {
        remote: RemoteMedia,
        negotiated: Negotiated,
    },
    Dtmf(char),
    TransferFailed(u16),
    /// The caller is waiting for an agent: their audio is not the bot's.
    AwaitingAgent,
    /// μ-law audio to play on this leg (the briefing on the agent's leg).
    Play(Arc<Vec<u8>>),
    Mark(String),
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
/// Reply number for audio that is not a bot reply (relay, briefing).
const RELAY_REPLY: u32 = u32::MAX;
const RINGBACK_REPLY: u32 = u32::MAX - 1;

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
    let (tx, rx) = mpsc::unbounded_channel();
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
        let listener = TcpListener::bind(want).await.map_err(|e| {
            anyhow::anyhow!("cannot bind SIP TCP {want}: {e} (see [sip] in the config)")
        })?;
        let local = listener.local_addr()?;
        bound_tcp.push(local);
        tokio::spawn(tcp_acceptor(
            listener,
            local,
            net_tx.clone(),
            conns.clone(),
            gate.clone(),
            None,
        ));
    }
    let mut bound_tls = Vec::new();
    if !cfg.listen.tls.is_empty() {
        let acceptor = tls_acceptor(&cfg.tls)?;
        for addr in &cfg.listen.tls {
            let listener = TcpListener::bind(addr).await.map_err(|e| {
                anyhow::anyhow!("cannot bind SIP TLS {addr}: {e} (see [sip] in the config)")
            })?;
            let local = listener.local_addr()?;
            bound_tls.push(local);
            tokio::spawn(tcp_acceptor(
                listener,
                local,
                net_tx.clone(),
                conns.clone(),
                gate.clone(),
                Some(acceptor.clone()),
            ));
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
    media: Option<mpsc::UnboundedSender<ToMedia>>,
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
    let mut panics: VecDeque<Instant> = VecDeque::new();
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
                                    let _ = m.send(ToMedia::TransferFailed(500));
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
                let now = Instant::now();
                panics.push_back(now);
                while panics.front().is_some_and(|t| now - *t > PANIC_WINDOW) {
                    panics.pop_front();
                }
                if panics.len() >= PANICS_BEFORE_REBUILD {
                    tracing::error!(
                        calls = calls.len(),
                        "SIP core kept panicking; rebuilt it, its calls end"
                    );
                    panics.clear();
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

/// Places the agent's leg of a bridged transfer (over UDP, from the socket
/// the caller came in on when it is UDP).
async fn start_bridge(
    core: &mut SipCore,
    calls: &mut HashMap<String, Slot>,
    udp: &HashMap<SocketAddr, Arc<UdpSocket>>,
    id: &str,
    target: &str,
    uri: &str,
) -> Result<(), String> {
    let Some(Slot {
        leg: Leg::Caller {
            incoming, agent, ..
        },
        media,
        ..
    }) = calls.get(id)
    else {
        return Err("no such call".into());
    };
    if agent.is_some() {
        return Err("a transfer is already under way".into());
    }
    let (host, port) =
        message::uri_host_port(uri).ok_or_else(|| format!("{uri:?} names no host"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let addr = tokio::net::lookup_host((host.as_str(), port.unwrap_or(5060)))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))?;
    let local = if incoming.peer.transport == Transport::Udp
        && incoming.peer.local.is_ipv4() == addr.is_ipv4()
    {
        incoming.peer.local
    } else {
        *udp.keys()
            .find(|l| l.is_ipv4() == addr.is_ipv4())
            .ok_or("no SIP UDP socket to call the agent from")?
    };
    let (rtp_sock, rtcp_sock) = bind_media(local.ip(), core.config().media.rtp_ports)
        .map_err(|e| format!("no RTP port for the agent's leg: {e}"))?;
    let port = rtp_sock.local_addr().map(|a| a.port()).unwrap_or(0);
    let public: IpAddr = core
        .config()
        .listen
        .public_address
        .parse()
        .unwrap_or(local.ip());
    let header = core.config().transfer.context_header.clone();
    let call = OutboundCall {
        uri: uri.to_string(),
        peer: Peer {
            addr,
            transport: Transport::Udp,
            local,
        },
        local_media: SocketAddr::new(public, port),
        from_user: incoming.caller.clone(),
        from_display: incoming.display_name.clone(),
        headers: vec![
            (header, id.to_string()),
            (
                "User-to-User".into(),
                format!("{};encoding=hex", hex::encode(id.as_bytes())),
            ),
        ],
        ring_timeout: Duration::from_secs(core.config().transfer.ring_timeout_s.max(1)),
    };
    if let Some(m) = media {
        let _ = m.send(ToMedia::AwaitingAgent);
    }
    let agent_id = core
        .invite(Instant::now(), call)
        .map_err(|e| e.to_string())?;
    tracing::info!(call = %id, agent_leg = %agent_id, %target, "bridged transfer: calling the agent");
    if let Some(Slot {
        leg: Leg::Caller { agent, .. },
        ..
    }) = calls.get_mut(id)
    {
        *agent = Some(agent_id.clone());
    }
    calls.insert(
        agent_id,
        Slot {
            leg: Leg::Agent {
                caller: id.to_string(),
                target: target.to_string(),
            },
            rtp: Some(rtp_sock),
            rtcp: Some(rtcp_sock),
            media: None,
            _ticket: None,
        },
    );
    Ok(())
}

/// Frames (20 ms) a bridged leg may fall behind before its audio drops.
const RELAY_FRAMES: usize = 50;

/// The agent has heard the briefing: each leg now plays what the other hears.
fn connect_bridge(calls: &mut HashMap<String, Slot>, agent_id: &str) {
    let Some(Slot {
        leg: Leg::Agent { caller, .. },
        media: Some(agent_media),
        ..
    }) = calls.get(agent_id)
    else {
        return;
    };
    let agent_media = agent_media.clone();
    let caller = caller.clone();
    let Some(Slot {
        leg: Leg::Caller { bridged, .. },
        media: Some(caller_media),
        ..
    }) = calls.get_mut(&caller)
    else {
        return;
    };
    let (c2a_tx, c2a_rx) = mpsc::channel(RELAY_FRAMES);
    let (a2c_tx, a2c_rx) = mpsc::channel(RELAY_FRAMES);
    *bridged = true;
    let _ = caller_media.send(ToMedia::Bridge {
        to_peer: c2a_tx,
        from_peer: a2c_rx,
    });
    let _ = agent_media.send(ToMedia::Bridge {
        to_peer: a2c_tx,
        from_peer: c2a_rx,
    });
    tracing::info!(call = %caller, agent_leg = %agent_id, "bridged: caller and agent connected");
}

/// What the bot tells the agent before connecting the caller: the hand-off
/// packet's summary, so nobody has to ask the caller to repeat themselves.
async fn briefing(state: &Shared, caller: &str, target: &str) -> String {
    let queue = target.trim_start_matches("queue:").replace('_', " ");
    let summary = match state.services.store.handoff(caller).await {
        Ok(Some(h)) => serde_json::from_value::<crate::handoff::Packet>(h.packet)
            .map(|p| p.summary)
            .unwrap_or_default(),
        _ => String::new(),
    };
    // Read aloud: "queue:customer_care" is said as "customer care".
    let summary = summary.replace("queue:", "").replace('_', " ");
    format!("Attendant transferring a caller to {queue}. {summary}")
        .trim()
        .to_string()
}

/// Speaks the briefing on the agent's leg, then a mark that says it was heard.
fn brief_agent(
    state: Shared,
    caller: String,
    target: String,
    media: mpsc::UnboundedSender<ToMedia>,
) {
    tokio::spawn(async move {
        let text = briefing(&state, &caller, &target).await;
        let engines = state.engines.get().cloned();
        match engines.map(|e| e.tts.speak(&text, Arc::new(AtomicBool::new(false)))) {
            Some(Ok((mut rx, _))) => {
                while let Some(chunk) = rx.recv().await {
                    if media.send(ToMedia::Play(chunk.ulaw)).is_err() {
                        return;
                    }
                }
            }
            Some(Err(e)) => tracing::warn!(call = %caller, error = %e, "no briefing for the agent"),
            None => {}
        }
        let _ = media.send(ToMedia::Mark(BRIEFED.into()));
    });
}

/// The status a failed agent leg reports to the caller's pipeline.
fn failure_status(reason: EndReason) -> u16 {
    match reason {
        EndReason::Rejected(code) => code,
        EndReason::Cancelled => 408,
        EndReason::RemoteBye => 480,
        EndReason::LocalBye | EndReason::NoAck => 500,
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
            let ticket = match state.admission.admit(inc.caller.as_deref().unwrap_or("")) {
                Ok(t) => t,
                Err(why) => {
                    metrics()
                        .calls_refused_total
                        .with_label_values(&[why.as_str()])
                        .inc();
                    tracing::warn!(call = %id, reason = why.as_str(), "SIP call refused");
                    // 486 for one caller's too many calls; 503 + Retry-After
                    // sends a proxy to another node.
                    let code = if why == super::admission::Refusal::NumberBusy {
                        486
                    } else {
                        503
                    };
                    let _ = core.reject(now, &id, code);
                    return;
                }
            };
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
                            leg: Leg::Caller {
                                incoming: inc,
                                agent: None,
                                bridged: false,
                            },
                            rtp: Some(rtp_sock),
                            rtcp: Some(rtcp_sock),
                            media: None,
                            _ticket: Some(ticket),
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
            let cfg = core.config().media.clone();
            let (mtx, mrx) = mpsc::unbounded_channel();
            slot.media = Some(mtx.clone());
            let mut args = MediaArgs {
                id: id.clone(),
                rtp: rtp_sock,
                rtcp: rtcp_sock,
                remote,
                negotiated,
                jitter: Duration::from_millis(cfg.jitter_ms),
                symmetric: cfg.symmetric_rtp,
                rtp_timeout: (cfg.rtp_timeout_s > 0)
                    .then(|| Duration::from_secs(cfg.rtp_timeout_s)),
                call: None,
                cmds: mrx,
                to_core: tx.clone(),
            };
            let inc = match &slot.leg {
                Leg::Caller { incoming, .. } => incoming,
                // The agent answered: brief them, then bridge.
                Leg::Agent { caller, target } => {
                    tracing::info!(call = %caller, agent_leg = %id, "agent answered; briefing");
                    media_runtime().spawn(media(args));
                    brief_agent(state.clone(), caller.clone(), target.clone(), mtx);
                    return;
                }
            };
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
            args.call = Some(spawn_call(engines, meta, state.calls.clone()));
            media_runtime().spawn(media(args));
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
                match slot.leg {
                    // The caller left: so does the agent's leg (CANCEL or BYE).
                    Leg::Caller {
                        agent: Some(agent), ..
                    } => {
                        let _ = core.hangup(now, &agent);
                    }
                    Leg::Caller { .. } => {}
                    Leg::Agent { caller, .. } => {
                        if let Some(Slot {
                            leg: Leg::Caller { agent, bridged, .. },
                            media,
                            ..
                        }) = calls.get_mut(&caller)
                        {
                            *agent = None;
                            if *bridged {
                                // The agent hung up on a bridged call: it is over.
                                let _ = core.hangup(now, &caller);
                            } else if let Some(m) = media {
                                // Busy, no answer, or gone during the briefing:
                                // the bot takes the caller back.
                                tracing::info!(call = %caller, ?reason, "bridged transfer failed");
                                let _ = m.send(ToMedia::TransferFailed(failure_status(reason)));
                            }
                        }
                    }
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
    /// The bot's pipeline; none on an agent's leg.
    call: Option<CallHandle>,
    cmds: mpsc::UnboundedReceiver<ToMedia>,
    to_core: mpsc::UnboundedSender<ToCore>,
}

fn silence(codec: Codec) -> u8 {
    match codec {
        Codec::Pcmu => 0xff,
        Codec::Pcma => alaw::SILENCE,
    }
}

async fn next_relayed(rx: &mut Option<mpsc::Receiver<Vec<u8>>>) -> Option<Vec<u8>> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
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
    let mut call = call;
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
                        if let Some(c) = call.as_ref().filter(|_| awaiting_agent.is_none()) {
                            let _ = c.input.send(CallInput::Dtmf(d)).await;
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
            f = next_relayed(&mut relay_in) => match f {
                Some(ulaw) => {
                    let bytes = match negotiated.codec {
                        Codec::Pcmu => ulaw,
                        Codec::Pcma => alaw::from_ulaw(&ulaw),
                    };
                    out.send_audio(RELAY_REPLY, &bytes);
                }
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
                    if let Some(c) = &call {
                        let _ = c.input.send(CallInput::Dtmf(d)).await;
                    }
                }
                Some(ToMedia::TransferFailed(status)) => {
                    if awaiting_agent.take().is_some() {
                        out.clear();
                    }
                    if let Some(c) = &call {
                        let _ = c.input.send(CallInput::TransferFailed { status }).await;
                    }
                }
                Some(ToMedia::AwaitingAgent) => {
                    awaiting_agent = Some(0);
                }
                Some(ToMedia::Play(ulaw)) => {
                    let bytes = match negotiated.codec {
                        Codec::Pcmu => ulaw.to_vec(),
                        Codec::Pcma => alaw::from_ulaw(&ulaw),
                    };
                    out.send_audio(RELAY_REPLY, &bytes);
                }
                Some(ToMedia::Mark(name)) => out.send_mark(name),
                Some(ToMedia::Bridge { to_peer, from_peer }) => {
                    // The bot's part is done: its pipeline ends (the record
                    // keeps the transfer as the outcome) and its audio stops.
                    if let Some(c) = call.take() {
                        let _ = c.input.send(CallInput::Hangup).await;
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
            } else if let Some(c) = call.as_ref().filter(|_| awaiting_agent.is_none()) {
                let _ = c.input.try_send(CallInput::Audio(ulaw));
            }
        }
        if let Some(n) = awaiting_agent.as_mut().filter(|_| !hangup_wanted) {
            // A few frames ahead only, so the tone stops at once when the
            // agent answers or the transfer fails.
            while out.queued() < Duration::from_millis(60) {
                let ulaw = tones::ringback_frame(*n);
                *n += 1;
                let bytes = match negotiated.codec {
                    Codec::Pcmu => ulaw,
                    Codec::Pcma => alaw::from_ulaw(&ulaw),
                };
                out.send_audio(RINGBACK_REPLY, &bytes);
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
                    } else {
                        let _ = to_core.send(ToCore::MediaMark {
                            id: id.clone(),
                            name,
                        });
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
            if let Some(c) = &call {
                // Figures: dropped if the call is busy; the next ones follow.
                let _ = c.input.try_send(CallInput::MediaQuality(q));
            }
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
        let q = reports.quality();
        let _ = c.input.send(CallInput::MediaQuality(q)).await;
        let _ = c.input.send(CallInput::Hangup).await;
    }
    if dtmf.flush().is_some() {
        tracing::debug!(call = %id, "DTMF event without an end at hang-up");
    }
    tracing::info!(call = %id, received = jb.stats.received, concealed = jb.stats.concealed, late = jb.stats.late, sent = out.packets_sent, "SIP media ended");
    let _ = to_core.send(ToCore::MediaStopped { id });
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
