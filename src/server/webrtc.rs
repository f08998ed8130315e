//! Thin tokio driver for WebRTC calls: a WHIP-style endpoint (`POST` an SDP
//! offer, get the answer), one UDP socket per call, the sans-IO
//! `transport::webrtc::Session`, and the same call pipeline as Twilio and
//! SIP through the shared playout contract.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;

use super::admission::Ticket;
use super::Shared;
use crate::dialogue::CallMeta;
use crate::pipeline::{metrics::metrics, spawn_call, CallHandle, CallInput};
use crate::transport::budget::{Admit, MediaBudget};
use crate::transport::playout::{self, Control, Playout, Uplink};
use crate::transport::webrtc::{Event, Output, Session, WebrtcError, MAX_OFFER};

/// `[webrtc]`: browser calls.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebrtcConfig {
    /// Take browser calls at `POST /webrtc/offer` and serve the caller page at `/`.
    pub enabled: bool,
    /// Address the calls' UDP sockets bind to and offer as host candidates.
    pub ip: String,
    /// The address a 1:1 NAT maps `ip` to, offered as well (same port).
    pub public_ip: String,
    /// UDP ports for media (both 0: any free port).
    pub port_min: u16,
    pub port_max: u16,
    /// STUN/TURN servers the caller page gives its browser.
    pub ice_servers: Vec<IceServer>,
    /// ICE + DTLS must be up this soon after the offer.
    pub connect_timeout_ms: u64,
    /// No packet from the browser for this long ends the call.
    pub media_timeout_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub username: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub credential: String,
}

impl Default for WebrtcConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ip: "127.0.0.1".into(),
            public_ip: String::new(),
            port_min: 0,
            port_max: 0,
            ice_servers: Vec::new(),
            connect_timeout_ms: 10_000,
            media_timeout_ms: 30_000,
        }
    }
}

/// Live calls' hang-up switches, by call id.
#[derive(Default)]
pub struct Live(
    parking_lot::Mutex<std::collections::HashMap<String, tokio::sync::watch::Sender<bool>>>,
);

impl Live {
    pub(super) fn add(&self, id: &str) -> tokio::sync::watch::Receiver<bool> {
        let (tx, rx) = tokio::sync::watch::channel(false);
        self.0.lock().insert(id.to_string(), tx);
        rx
    }
    fn remove(&self, id: &str) {
        self.0.lock().remove(id);
    }
    /// Asks call `id` to hang up; false if there is no such live call.
    fn hang_up(&self, id: &str) -> bool {
        self.0
            .lock()
            .get(id)
            .is_some_and(|tx| tx.send(true).is_ok())
    }
}

/// `DELETE /webrtc/calls/{id}` (WHIP): the caller's side hangs up.
pub async fn hang_up(
    State(s): State<Shared>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: axum::http::HeaderMap,
) -> Response {
    if s.webrtc.hang_up(&id) {
        StatusCode::OK.into_response()
    } else if let Some(node) = s
        .desk
        .leg_owner(&id)
        .filter(|_| !super::cluster::forwarded(&headers))
    {
        // An agent's leg taken through this node for another node's caller.
        let path = format!("/webrtc/calls/{id}");
        super::cluster::forward(&node, "DELETE", &path, &headers, Default::default()).await
    } else {
        (StatusCode::NOT_FOUND, "no such call\n").into_response()
    }
}

/// The caller page: a call button, the keypad and the live transcript.
pub async fn page(State(s): State<Shared>) -> Response {
    if !s.cfg.webrtc.enabled {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    }
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        include_str!("../../web/call.html"),
    )
        .into_response()
}

/// What the page needs before it offers: the ICE servers.
pub async fn client_config(State(s): State<Shared>) -> Response {
    axum::Json(serde_json::json!({ "iceServers": s.cfg.webrtc.ice_servers })).into_response()
}

/// Binds one UDP socket for a call, inside the configured port range.
async fn bind(cfg: &WebrtcConfig) -> std::io::Result<UdpSocket> {
    let ip: IpAddr = cfg
        .ip
        .parse()
        .map_err(|_| std::io::Error::other("webrtc.ip is not an IP address"))?;
    if cfg.port_min == 0 || cfg.port_max < cfg.port_min {
        return UdpSocket::bind((ip, 0)).await;
    }
    let span = (cfg.port_max - cfg.port_min) as u32 + 1;
    let first = fastrand::u32(..span);
    for i in 0..span.min(64) {
        let port = cfg.port_min + ((first + i) % span) as u16;
        if let Ok(s) = UdpSocket::bind((ip, port)).await {
            return Ok(s);
        }
    }
    Err(std::io::Error::other(
        "no free UDP port in webrtc.port_min..port_max",
    ))
}

fn refuse(status: StatusCode, why: &'static str) -> Response {
    metrics()
        .calls_refused_total
        .with_label_values(&[why])
        .inc();
    tracing::warn!(reason = why, "WebRTC call refused");
    (status, format!("{why}\n")).into_response()
}

/// A browser's SDP offer taken: its session, socket and our answer.
pub(super) struct Accepted {
    pub sess: Session,
    pub sock: UdpSocket,
    pub answer: String,
}

/// Reads an `application/sdp` offer and answers it on a fresh socket; the
/// `Err` is the HTTP answer to give (fixed texts: a parser's detail can
/// name addresses, so it stays in the log).
pub(super) async fn accept(cfg: &WebrtcConfig, req: Request) -> Result<Accepted, Response> {
    let is_sdp = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/sdp"));
    if !is_sdp {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the offer as application/sdp\n",
        )
            .into_response());
    }
    let Ok(body) = axum::body::to_bytes(req.into_body(), MAX_OFFER).await else {
        return Err(refuse(StatusCode::PAYLOAD_TOO_LARGE, "offer_too_large"));
    };
    let Ok(sdp) = std::str::from_utf8(&body) else {
        return Err(refuse(StatusCode::BAD_REQUEST, "bad_offer"));
    };
    let no_port = || (StatusCode::SERVICE_UNAVAILABLE, "no media port\n").into_response();
    let sock = bind(cfg).await.map_err(|e| {
        tracing::error!(error = %e, "cannot bind a WebRTC media socket");
        no_port()
    })?;
    let local = sock.local_addr().map_err(|_| no_port())?;
    let public: Vec<SocketAddr> = cfg
        .public_ip
        .parse::<IpAddr>()
        .map(|ip| vec![SocketAddr::new(ip, local.port())])
        .unwrap_or_default();
    match Session::accept(sdp, &[local], &public, Instant::now()) {
        Ok((sess, answer)) => Ok(Accepted { sess, sock, answer }),
        Err(e) => {
            metrics().protocol_errors_total.inc();
            tracing::warn!(error = %e, "WebRTC offer refused");
            let (code, why) = match e {
                WebrtcError::OfferTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "offer too large"),
                WebrtcError::BadOffer(_) => (StatusCode::BAD_REQUEST, "malformed SDP offer"),
                WebrtcError::NoAudio => (StatusCode::BAD_REQUEST, "the offer has no audio"),
                WebrtcError::Candidate(_) | WebrtcError::Opus(_) => {
                    (StatusCode::SERVICE_UNAVAILABLE, "cannot take the call")
                }
            };
            Err((code, format!("{why}\n")).into_response())
        }
    }
}

/// `201 Created` with the SDP answer and the leg's WHIP resource.
pub(super) fn created(id: &str, answer: String) -> Response {
    (
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/sdp".to_string()),
            (header::LOCATION, format!("/webrtc/calls/{id}")),
        ],
        answer,
    )
        .into_response()
}

/// `POST /webrtc/offer` (WHIP style): an SDP offer in, `201 Created` with
/// the SDP answer out; the call starts when ICE and DTLS are up.
pub async fn offer(State(s): State<Shared>, req: Request) -> Response {
    let cfg = &s.cfg.webrtc;
    if !cfg.enabled {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    }
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    let Some(engines) = s.engines.get().cloned() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "models are loading\n").into_response();
    };
    if s.admission.draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    // One "number" per browser address, so one page cannot take every place.
    let ticket = match s.admission.admit(&format!("webrtc:{peer}")) {
        Ok(t) => t,
        Err(why) => {
            return refuse(StatusCode::SERVICE_UNAVAILABLE, why.as_str());
        }
    };
    let Accepted { sess, sock, answer } = match accept(cfg, req).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let id = format!("webrtc-{}", uuid::Uuid::new_v4().simple());
    let meta = CallMeta {
        call_id: id.clone(),
        channel: "webrtc".into(),
        from: None,
        to: None,
        params: Default::default(),
    };
    // Registered before the answer goes out, so its Location works at once.
    let hung_up = s.webrtc.add(&id);
    let leg = Leg::Caller {
        engines,
        meta,
        _ticket: ticket,
    };
    tokio::spawn(drive(s.clone(), id.clone(), leg, sess, sock, hung_up));
    created(&id, answer)
}

/// What the page shows: each side's words as the call goes.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum PageMsg<'a> {
    Call { id: &'a str },
    Said { who: &'a str, text: &'a str },
    Ended,
}

/// Sends the page what the call record has that the page has not seen.
fn transcript_news(s: &Shared, id: &str, sent: &mut (bool, usize, usize), sess: &mut Session) {
    let Some(rec) = s.calls.get(id) else {
        return;
    };
    let mut say = |who: &str, text: &str| {
        if !text.is_empty() {
            if let Ok(j) = serde_json::to_string(&PageMsg::Said { who, text }) {
                sess.send_text(j);
            }
        }
    };
    if !sent.0 && !rec.greeting.is_empty() {
        sent.0 = true;
        say("bot", &rec.greeting);
    }
    for t in rec.turns.iter().skip(sent.1) {
        let text = t
            .dtmf
            .as_deref()
            .map(|d| format!("(keys {})", "•".repeat(d.len())))
            .unwrap_or_else(|| t.caller_text.clone());
        say("caller", &text);
        sent.1 += 1;
    }
    for t in rec.turns.iter().skip(sent.2) {
        if t.bot_text.is_empty() {
            break;
        }
        say("bot", &t.bot_text);
        sent.2 += 1;
    }
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum FromPage {
    Dtmf { digit: String },
    Hangup,
}

/// What a WebRTC leg's audio connects to once it is up.
pub(super) enum Leg {
    /// A caller: a new call pipeline (the bot), holding a place on the node.
    Caller {
        engines: std::sync::Arc<crate::pipeline::Engines>,
        meta: CallMeta,
        _ticket: Ticket,
    },
    /// A desk agent: the waiting caller's call, through this handle.
    Agent(CallHandle),
}

pub(super) async fn drive(
    s: Shared,
    id: String,
    leg: Leg,
    mut sess: Session,
    sock: UdpSocket,
    mut hung_up: tokio::sync::watch::Receiver<bool>,
) {
    let is_caller = matches!(leg, Leg::Caller { .. });
    let cfg = s.cfg.webrtc.clone();
    let local = sock.local_addr().ok();
    let started = Instant::now();
    let connect_by = started + Duration::from_millis(cfg.connect_timeout_ms.max(1));
    let media_timeout = Duration::from_millis(cfg.media_timeout_ms.max(1000));
    let mut last_rx = started;
    let mut up: Option<Uplink> = None;
    let mut down = None;
    let mut leg = Some(leg);
    let mut hangup = false;
    let mut budget = MediaBudget::new(
        s.cfg.twilio.media_burst_ms,
        s.cfg.twilio.media_close_after_ms,
    );
    let mut shown = (false, 0usize, 0usize);
    // Held for the call's life: the node's place for this caller.
    let mut ticket: Option<Ticket> = None;
    let mut next_news = started;
    let mut buf = vec![0u8; 2048];
    let m = metrics();
    tracing::info!(call = %id, local = ?local, "WebRTC call offered");
    'call: loop {
        let now = Instant::now();
        sess.handle_timeout(now);
        let mut wake = now + Duration::from_secs(1);
        loop {
            match sess.poll_output(now) {
                Output::Transmit { to, data, .. } => {
                    let _ = sock.send_to(&data, to).await;
                }
                Output::Timeout(t) => {
                    wake = wake.min(t);
                    break;
                }
                Output::Event(e) => match e {
                    Event::Connected => {
                        if let Some(leg) = leg.take() {
                            tracing::info!(call = %id, ms = started.elapsed().as_millis() as u64, "WebRTC connected");
                            let h = match leg {
                                Leg::Caller {
                                    engines,
                                    meta,
                                    _ticket,
                                } => {
                                    ticket = Some(_ticket);
                                    spawn_call(engines, meta, s.calls.clone())
                                }
                                Leg::Agent(h) => h,
                            };
                            up = Some(Uplink::new(h.input));
                            down = Some(h.output);
                            sess.send_text(
                                serde_json::to_string(&PageMsg::Call { id: &id })
                                    .unwrap_or_default(),
                            );
                        }
                    }
                    Event::Audio(ulaw) => match budget.admit(now, ulaw.len() as u64 / 8) {
                        Admit::Take => {
                            if let Some(u) = up.as_mut() {
                                if !u.audio(ulaw) {
                                    m.media_dropped_ms_total.inc_by(20);
                                }
                            }
                        }
                        Admit::Drop => m.media_dropped_ms_total.inc_by(ulaw.len() as u64 / 8),
                        Admit::Close => {
                            tracing::warn!(call = %id, "ending WebRTC call: audio faster than real time");
                            m.protocol_errors_total.inc();
                            break 'call;
                        }
                    },
                    Event::Dtmf(d) => {
                        if let Some(u) = up.as_mut() {
                            u.control(CallInput::Dtmf(d));
                        }
                    }
                    Event::Mark(name) => {
                        if let Some(u) = up.as_mut() {
                            u.control(CallInput::MarkPlayed(name));
                        }
                    }
                    Event::ReplyStarted(reply) => {
                        if let Some(u) = up.as_mut() {
                            u.control(CallInput::ReplyStarted { reply, at: now });
                        }
                    }
                    Event::Text(t) => match serde_json::from_str::<FromPage>(&t) {
                        Ok(FromPage::Dtmf { digit }) => {
                            for d in digit
                                .chars()
                                .filter(|c| c.is_ascii_digit() || matches!(c, '*' | '#'))
                                .take(1)
                            {
                                if let Some(u) = up.as_mut() {
                                    u.control(CallInput::Dtmf(d));
                                }
                            }
                        }
                        Ok(FromPage::Hangup) => {
                            tracing::info!(call = %id, "the caller hung up");
                            break 'call;
                        }
                        Err(_) => m.protocol_errors_total.inc(),
                    },
                    Event::Closed => break 'call,
                },
            }
        }
        if let Some(u) = up.as_mut() {
            u.flush();
        }
        if hangup && sess.queued().is_zero() {
            // Let the last frames and the page's notice go out.
            sess.send_text(serde_json::to_string(&PageMsg::Ended).unwrap_or_default());
            let until = Instant::now() + Duration::from_millis(300);
            while Instant::now() < until {
                match sess.poll_output(Instant::now()) {
                    Output::Transmit { to, data, .. } => {
                        let _ = sock.send_to(&data, to).await;
                    }
                    Output::Timeout(t) => {
                        tokio::time::sleep_until(t.min(until).into()).await;
                        sess.handle_timeout(Instant::now());
                    }
                    Output::Event(_) => {}
                }
            }
            break;
        }
        if !sess.is_connected() && now >= connect_by {
            tracing::warn!(call = %id, "WebRTC call never connected (ICE/DTLS)");
            m.calls_refused_total
                .with_label_values(&["no_connect"])
                .inc();
            break;
        }
        if now.duration_since(last_rx) > media_timeout {
            tracing::info!(call = %id, "no packets from the browser; ending the call");
            break;
        }
        if is_caller && up.is_some() && now >= next_news {
            next_news = now + Duration::from_millis(250);
            transcript_news(&s, &id, &mut shown, &mut sess);
            continue;
        }
        let wake = playout::retry_at(
            Some(wake.min(next_news.max(now + Duration::from_millis(1)))),
            up.as_ref(),
        )
        .unwrap_or(wake);
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                if let Ok((n, from)) = r {
                    last_rx = Instant::now();
                    if let Some(to) = local {
                        sess.handle_receive(last_rx, from, to, &buf[..n]);
                    }
                }
            }
            o = playout::next_command(&mut down) => match o {
                None => {
                    down = None;
                    hangup = true;
                }
                Some(o) => match playout::apply(&mut sess, o) {
                    None => {}
                    Some(Control::Hangup) => hangup = true,
                    Some(Control::Transfer { target, .. }) => {
                        // Browser calls have no phone network to transfer
                        // into: `queue:`/`desk:` targets wait at the desk
                        // (the pipeline does that); others cannot be reached.
                        tracing::warn!(call = %id, %target, "a WebRTC call cannot be transferred there; the bot takes it back");
                        if let Some(u) = up.as_mut() {
                            u.control(CallInput::TransferFailed { status: 501 });
                        }
                    }
                },
            },
            _ = tokio::time::sleep_until(wake.into()) => {}
            _ = hung_up.changed() => {
                tracing::info!(call = %id, "the caller hung up (DELETE)");
                break;
            }
        }
    }
    s.webrtc.remove(&id);
    sess.close();
    if let Some(u) = up {
        u.close(vec![CallInput::Hangup]).await;
    }
    drop(ticket);
    let st = sess.stats;
    tracing::info!(call = %id, packets_in = st.packets_in, audio_in = st.audio_frames_in, frames_out = st.frames_out, audio_out = st.audio_frames_out, "WebRTC call ended");
}
