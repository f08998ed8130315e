//! The SIP user-agent core, sans-IO: datagrams/stream messages and `Instant`s
//! in; transmits, call events and the next timeout out. It answers calls as
//! a UAS (INVITE with or without an offer, ACK, BYE from either side,
//! CANCEL including its race with 200 OK, OPTIONS, re-INVITE for hold),
//! sends in-dialog requests as a UAC (BYE, REFER) and handles the NOTIFYs
//! of a transfer. Reliability follows RFC 3261 §17: 2xx and non-2xx final
//! responses to INVITE are retransmitted from T1 up to T2 until the ACK
//! (Timer G/H); our requests from T1 until a final response (Timer E/F);
//! retransmitted requests get the cached response again.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::auth::{Attempt, Authenticator, Verdict};
use super::config::SipConfig;
use super::message::{self, response_to, Message, Request, Response};
use super::sdp::{self, Direction, Negotiated, RemoteMedia};

mod uac;
mod uas;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    /// TCP carrying TLS: reliable like TCP; the driver owns the handshake.
    Tls,
}

impl Transport {
    /// The name in a Via header.
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    /// The `transport=` URI parameter (none for UDP, the default).
    fn uri_param(self) -> &'static str {
        match self {
            Transport::Udp => "",
            Transport::Tcp => ";transport=tcp",
            Transport::Tls => ";transport=tls",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    pub addr: SocketAddr,
    pub transport: Transport,
    /// Our local address the message arrived on (for Contact/SDP).
    pub local: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub to: Peer,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingCall {
    pub id: String,
    pub peer: Peer,
    pub trunk: String,
    /// Caller number: P-Asserted-Identity from a trusted trunk, else From.
    pub caller: Option<String>,
    pub display_name: Option<String>,
    /// Dialled number (Request-URI user part).
    pub dialled: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The caller sent BYE.
    RemoteBye,
    /// We sent BYE (answered or timed out).
    LocalBye,
    /// The caller cancelled before we answered.
    Cancelled,
    /// We answered but never got an ACK (Timer H).
    NoAck,
    /// The call was rejected before it started.
    Rejected(u16),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new call the application must `accept` or `reject`.
    Incoming(IncomingCall),
    /// Media can flow: where to send it and with what. Again after a
    /// re-INVITE (hold, unhold, new address).
    Media {
        id: String,
        remote: RemoteMedia,
        negotiated: Negotiated,
    },
    Dtmf {
        id: String,
        digit: char,
    },
    /// Transfer progress: the REFER's own answer, then the NOTIFY sipfrags.
    Transfer {
        id: String,
        status: u16,
        final_: bool,
    },
    Ended {
        id: String,
        reason: EndReason,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CoreError {
    #[error("no such call {0}")]
    NoCall(String),
    #[error("call {0} is not in a state for that")]
    State(String),
    #[error("media negotiation: {0}")]
    Sdp(#[from] sdp::SdpError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// INVITE received, waiting for the application.
    Pending,
    /// 2xx sent, waiting for ACK.
    Answered,
    Confirmed,
    /// Our BYE is out.
    Closing,
    /// Rejected or cancelled; kept until the final response is ACKed so a
    /// retransmitted INVITE is recognised.
    Over,
    /// Our INVITE is out (a call we place: the agent leg of a bridged
    /// transfer), no final response yet.
    Calling,
}

/// What a dialog we started (UAC) needs beyond the common fields.
struct Uac {
    /// A provisional response arrived: CANCEL may be sent (§9.1).
    provisional: bool,
    /// The application hung up before the far end answered.
    cancel_wanted: bool,
    cancel_sent: bool,
    /// Ringing ends here with a CANCEL.
    ring_deadline: Instant,
}

struct Dialog {
    peer: Peer,
    invite: Request,
    invite_branch: String,
    local_tag: String,
    remote_uri: String,
    remote_target: String,
    route_set: Vec<String>,
    local_cseq: u32,
    state: State,
    offer: Option<RemoteMedia>,
    negotiated: Option<Negotiated>,
    local_media: Option<SocketAddr>,
    sdp_version: u64,
    session_id: u64,
    /// Last response sent to the INVITE (for retransmitted INVITEs).
    last_invite_response: Option<Vec<u8>>,
    refer_pending: bool,
    /// From and To of the requests we send in this dialog (with tags).
    local_party: String,
    remote_party: String,
    uac: Option<Uac>,
}

/// A call to place (the agent leg of a bridged transfer).
#[derive(Debug, Clone)]
pub struct OutboundCall {
    pub uri: String,
    pub peer: Peer,
    pub local_media: SocketAddr,
    /// Shown to the agent as the caller (user part and display name).
    pub from_user: Option<String>,
    pub from_display: Option<String>,
    pub headers: Vec<(String, String)>,
    /// Ringing longer than this is given up with CANCEL.
    pub ring_timeout: Duration,
}

/// A final response to an INVITE, retransmitted until ACKed (Timer G/H).
struct Reliable {
    call_id: String,
    cseq: u32,
    data: Vec<u8>,
    to: Peer,
    interval: Duration,
    next: Instant,
    give_up: Instant,
    is_2xx: bool,
}

/// A request we sent, retransmitted until a final response (Timer E/F).
struct ClientTx {
    call_id: String,
    method: String,
    data: Vec<u8>,
    to: Peer,
    interval: Duration,
    next: Option<Instant>,
    give_up: Instant,
}

pub struct SipCore {
    cfg: SipConfig,
    auth: Authenticator,
    t1: Duration,
    dialogs: HashMap<String, Dialog>,
    reliable: Vec<Reliable>,
    /// Our client transactions by "branch METHOD" (a CANCEL shares its
    /// INVITE's branch).
    client: HashMap<String, ClientTx>,
    /// ACKs we sent for final responses to our INVITEs, by branch, resent
    /// when the response is retransmitted.
    acks: HashMap<String, (Peer, Vec<u8>, Instant)>,
    /// Responses to non-INVITE requests by (branch, method), for retransmits.
    cache: HashMap<(String, String), (Vec<u8>, Instant)>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    pub stats: CoreStats,
    /// Whether this node takes new calls now (not draining, not full): an
    /// out-of-dialog OPTIONS, which proxies use to probe (Kamailio's
    /// dispatcher), is answered 503 when not, so the proxy sends new calls
    /// elsewhere.
    available: bool,
}

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct CoreStats {
    pub requests: u64,
    pub malformed: u64,
    pub rejected_403: u64,
    pub challenged_401: u64,
    pub rejected_488: u64,
    pub answered: u64,
    pub retransmissions: u64,
}

fn token() -> String {
    format!("{:016x}", fastrand::u64(..))
}

fn branch() -> String {
    format!("z9hG4bK{}", token())
}

const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, NOTIFY, REFER";
/// Option tags a request may `Require` of us.
const SUPPORTED: [&str; 0] = [];
/// Most responses kept for retransmitted non-INVITE requests.
const RESPONSE_CACHE_CAP: usize = 8192;

impl SipCore {
    pub fn new(cfg: SipConfig) -> Self {
        Self {
            t1: Duration::from_millis(cfg.timers.t1_ms),
            auth: Authenticator::new(&cfg.listen.realm),
            cfg,
            dialogs: HashMap::new(),
            reliable: Vec::new(),
            client: HashMap::new(),
            acks: HashMap::new(),
            cache: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: CoreStats::default(),
            available: true,
        }
    }

    /// Whether the node takes new calls now (the driver's admission state).
    pub fn set_available(&mut self, available: bool) {
        self.available = available;
    }

    pub fn config(&self) -> &SipConfig {
        &self.cfg
    }

    /// Calls being set up or in progress.
    pub fn active_calls(&self) -> usize {
        self.dialogs
            .values()
            .filter(|d| d.state != State::Over)
            .count()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let a = self.reliable.iter().map(|r| r.next.min(r.give_up));
        let b = self
            .client
            .values()
            .map(|c| c.next.map_or(c.give_up, |n| n.min(c.give_up)));
        let c = self.cache.values().map(|(_, exp)| *exp);
        let d = self.acks.values().map(|(_, _, exp)| *exp);
        let e = self
            .dialogs
            .values()
            .filter_map(|d| d.uac.as_ref().filter(|_| d.state == State::Calling))
            .filter(|u| !u.cancel_sent)
            .map(|u| u.ring_deadline);
        a.chain(b).chain(c).chain(d).chain(e).min()
    }

    fn t2(&self) -> Duration {
        self.t1 * 8
    }

    fn timer_64(&self) -> Duration {
        self.t1 * 64
    }

    /// The address we advertise in Contact and SDP for a peer.
    fn public_ip(&self, peer: &Peer) -> IpAddr {
        self.cfg
            .listen
            .public_address
            .parse()
            .unwrap_or(peer.local.ip())
    }

    fn contact(&self, peer: &Peer) -> String {
        let ip = self.public_ip(peer);
        let host = match ip {
            IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        };
        let tp = peer.transport.uri_param();
        format!("<sip:attendant@{host}:{}{tp}>", peer.local.port())
    }

    fn send(&mut self, to: Peer, data: Vec<u8>) {
        self.transmits.push_back(Transmit { to, data });
    }

    fn respond(
        &mut self,
        now: Instant,
        peer: Peer,
        req: &Request,
        code: u16,
        tag: Option<&str>,
    ) -> Response {
        let resp = response_to(req, code, tag);
        self.send_response(now, peer, req, resp.clone());
        resp
    }

    fn send_response(&mut self, now: Instant, peer: Peer, req: &Request, resp: Response) {
        let data = resp.to_bytes();
        // Kept for retransmissions over UDP only (RFC 3261 Timer J is zero
        // on reliable transports), and never beyond a cap, so a flood of
        // requests cannot grow memory.
        if req.method != "INVITE"
            && req.method != "ACK"
            && peer.transport == Transport::Udp
            && self.cache.len() < RESPONSE_CACHE_CAP
        {
            if let Some(b) = req.top_via().and_then(|v| v.branch) {
                self.cache.insert(
                    (b, req.method.clone()),
                    (data.clone(), now + self.timer_64()),
                );
            }
        }
        self.send(peer, data);
    }

    /// Feeds one received message. Malformed requests get 400 (or 505/513)
    /// when enough of them is readable to answer; anything else is dropped.
    pub fn handle(&mut self, now: Instant, peer: Peer, data: &[u8]) {
        // Keep-alive CRLFs (RFC 5626) carry nothing.
        if data.iter().all(|b| *b == b'\r' || *b == b'\n') {
            return;
        }
        match message::parse(data) {
            Ok(Message::Request(req)) => {
                self.stats.requests += 1;
                self.on_request(now, peer, req)
            }
            Ok(Message::Response(resp)) => self.on_response(now, resp),
            Err(err) => {
                self.stats.malformed += 1;
                tracing::debug!(error = %err, peer = %peer.addr, "malformed SIP message");
                self.answer_malformed(peer, data, &err);
            }
        }
    }

    /// Answers a message that failed to parse, when it is a request whose
    /// routing headers can still be read; otherwise it is dropped.
    fn answer_malformed(&mut self, peer: Peer, data: &[u8], err: &message::ParseError) {
        let text = String::from_utf8_lossy(data);
        let mut lines = text.split('\n').map(|l| l.trim_end_matches('\r'));
        let first = lines.next().unwrap_or("");
        if first.starts_with("SIP/") || first.starts_with("ACK ") || first.is_empty() {
            return;
        }
        let mut headers = message::Headers::default();
        for line in lines.take_while(|l| !l.is_empty()) {
            if let Some((n, v)) = line.split_once(':') {
                let n = n.trim();
                let canonical = match n.to_ascii_lowercase().as_str() {
                    "v" | "via" => "Via",
                    "f" | "from" => "From",
                    "t" | "to" => "To",
                    "i" | "call-id" => "Call-ID",
                    "cseq" => "CSeq",
                    _ => continue,
                };
                headers.push(canonical, v.trim());
            }
        }
        // A response must carry all five; without them there is no one to
        // answer (RFC 4475 §4.2: drop).
        if ["Via", "From", "To", "Call-ID", "CSeq"]
            .iter()
            .any(|n| headers.get(n).is_none())
        {
            return;
        }
        let code = err.status();
        let mut h = message::Headers::default();
        for n in ["Via", "From", "To", "Call-ID", "CSeq"] {
            for v in headers.get_all(n) {
                h.push(n, v);
            }
        }
        h.push(
            "Warning",
            format!("399 attendant \"{}\"", err.to_string().replace('"', "'")),
        );
        let resp = Response {
            code,
            reason: message::reason_phrase(code).into(),
            headers: h,
            body: Vec::new(),
        };
        self.send(peer, resp.to_bytes());
    }

    fn on_request(&mut self, now: Instant, peer: Peer, req: Request) {
        let branch = req.top_via().and_then(|v| v.branch).unwrap_or_default();
        // A retransmitted non-INVITE request: the same answer again.
        if let Some((data, _)) = self.cache.get(&(branch.clone(), req.method.clone())) {
            self.stats.retransmissions += 1;
            let data = data.clone();
            self.send(peer, data);
            return;
        }
        let call_id = req.call_id().to_string();
        if !self.dialog_peer_allows(now, peer, &call_id, &req) {
            return;
        }
        if self.refuse_unsupported(now, peer, &req) {
            return;
        }
        match req.method.as_str() {
            "INVITE" => self.on_invite(now, peer, req, branch),
            "ACK" => self.on_ack(now, &call_id, &req),
            "CANCEL" => self.on_cancel(now, peer, &req, &branch),
            "BYE" => {
                if self.in_dialog(&call_id, &req) {
                    self.respond(now, peer, &req, 200, None);
                    self.dialogs.remove(&call_id);
                    self.reliable.retain(|r| r.call_id != call_id);
                    self.events.push_back(Event::Ended {
                        id: call_id,
                        reason: EndReason::RemoteBye,
                    });
                } else {
                    self.respond(now, peer, &req, 481, None);
                }
            }
            "OPTIONS" => {
                if req.to().is_some_and(|t| t.tag.is_none()) && !self.source_allowed(peer.addr.ip())
                {
                    self.stats.rejected_403 += 1;
                    self.respond(now, peer, &req, 403, None);
                    return;
                }
                let out_of_dialog = req.to().is_some_and(|t| t.tag.is_none());
                if out_of_dialog && !self.available {
                    let mut resp = response_to(&req, 503, Some(&token()));
                    resp.headers.push("Retry-After", "5");
                    self.send_response(now, peer, &req, resp);
                    return;
                }
                let mut resp = response_to(&req, 200, Some(&token()));
                resp.headers.push("Allow", ALLOW);
                resp.headers.push("Accept", "application/sdp");
                self.send_response(now, peer, &req, resp);
            }
            "INFO" => {
                if !self.in_dialog(&call_id, &req) {
                    self.respond(now, peer, &req, 481, None);
                    return;
                }
                self.respond(now, peer, &req, 200, None);
                // application/dtmf-relay: "Signal=5\r\nDuration=160".
                let body = String::from_utf8_lossy(&req.body);
                if let Some(sig) = body.lines().find_map(|l| {
                    let (k, v) = l.split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case("signal")
                        .then(|| v.trim().to_string())
                }) {
                    if let Some(d) = sig
                        .chars()
                        .next()
                        .filter(|c| c.is_ascii_digit() || "*#ABCD".contains(*c))
                    {
                        self.events.push_back(Event::Dtmf {
                            id: call_id,
                            digit: d,
                        });
                    }
                }
            }
            "NOTIFY" => {
                if !self.in_dialog(&call_id, &req) {
                    self.respond(now, peer, &req, 481, None);
                    return;
                }
                self.respond(now, peer, &req, 200, None);
                let is_refer = req
                    .headers
                    .get("Event")
                    .is_some_and(|e| e.trim().to_ascii_lowercase().starts_with("refer"));
                if is_refer {
                    // message/sipfrag: "SIP/2.0 200 OK".
                    let body = String::from_utf8_lossy(&req.body);
                    let status = body
                        .split_whitespace()
                        .nth(1)
                        .and_then(|c| c.parse::<u16>().ok());
                    let terminated = req
                        .headers
                        .get("Subscription-State")
                        .is_some_and(|s| s.trim().starts_with("terminated"));
                    if let Some(status) = status {
                        let final_ = status >= 200 || terminated;
                        if final_ {
                            if let Some(d) = self.dialogs.get_mut(&call_id) {
                                d.refer_pending = false;
                            }
                        }
                        self.events.push_back(Event::Transfer {
                            id: call_id,
                            status,
                            final_,
                        });
                    }
                }
            }
            "REGISTER" | "SUBSCRIBE" | "PUBLISH" | "MESSAGE" => {
                let mut resp = response_to(&req, 405, Some(&token()));
                resp.headers.push("Allow", ALLOW);
                self.send_response(now, peer, &req, resp);
            }
            _ => {
                let mut resp = response_to(&req, 501, Some(&token()));
                resp.headers.push("Allow", ALLOW);
                self.send_response(now, peer, &req, resp);
            }
        }
    }

    /// A request for a dialog we hold must come from that dialog's peer
    /// (its address; the port may change), or from a source the trunks
    /// admit with valid credentials: the Call-ID and tags alone are easy to
    /// learn, so they must not let a stranger hang up, key digits or
    /// re-INVITE someone else's call. Answers and returns false otherwise.
    fn dialog_peer_allows(
        &mut self,
        now: Instant,
        peer: Peer,
        call_id: &str,
        req: &Request,
    ) -> bool {
        let Some(d) = self.dialogs.get(call_id) else {
            return true;
        };
        if d.peer.addr.ip() == peer.addr.ip() {
            return true;
        }
        let attempt = Attempt {
            source: peer.addr.ip(),
            method: &req.method,
            uri: &req.uri,
            authorization: req.headers.get("Authorization"),
        };
        let code = match self.auth.check(now, &self.cfg.trunks, &attempt) {
            Verdict::Allowed(_) => return true,
            Verdict::Forbidden => 403,
            Verdict::Challenge { stale } => {
                if req.method != "ACK" {
                    self.stats.challenged_401 += 1;
                    let mut resp = response_to(req, 401, Some(&token()));
                    for c in self
                        .auth
                        .challenges(now, &self.cfg.trunks, peer.addr.ip(), stale)
                    {
                        resp.headers.push("WWW-Authenticate", c);
                    }
                    self.send(peer, resp.to_bytes());
                }
                return false;
            }
        };
        self.stats.rejected_403 += 1;
        tracing::info!(peer = %peer.addr, method = %req.method, "in-dialog request from a stranger: 403");
        if req.method != "ACK" {
            let resp = response_to(req, code, Some(&token()));
            self.send(peer, resp.to_bytes());
        }
        false
    }

    fn source_allowed(&self, ip: IpAddr) -> bool {
        self.cfg.trunks.iter().any(|t| t.admits(ip))
    }

    fn in_dialog(&self, call_id: &str, req: &Request) -> bool {
        let Some(d) = self.dialogs.get(call_id) else {
            return false;
        };
        req.to().and_then(|t| t.tag).as_deref() == Some(d.local_tag.as_str())
    }

    /// RFC 3261 §8.2 in its order, for what every method shares: a method
    /// we do not know is answered below (405/501); then a Request-URI scheme
    /// we cannot serve (416), then extensions the request requires (420).
    fn refuse_unsupported(&mut self, now: Instant, peer: Peer, req: &Request) -> bool {
        if req.method == "ACK" || req.method == "CANCEL" {
            return false;
        }
        // ACK and CANCEL returned above; what else we allow is checked here.
        let known = ALLOW.split(", ").any(|m| m == req.method);
        if !known {
            return false;
        }
        if !matches!(
            message::uri_scheme(&req.uri).as_str(),
            "sip" | "sips" | "tel"
        ) {
            self.respond(now, peer, req, 416, None);
            return true;
        }
        let unsupported: Vec<String> = req
            .headers
            .get_all("Require")
            .into_iter()
            .filter(|tag| !SUPPORTED.iter().any(|s| s.eq_ignore_ascii_case(tag)))
            .collect();
        if !unsupported.is_empty() {
            let mut resp = response_to(req, 420, Some(&token()));
            resp.headers.push("Unsupported", unsupported.join(", "));
            self.send_response(now, peer, req, resp);
            return true;
        }
        false
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.cache.retain(|_, (_, exp)| *exp > now);
        let t2 = self.t2();
        let mut resend = Vec::new();
        let mut no_ack = Vec::new();
        self.reliable.retain_mut(|r| {
            if now >= r.give_up {
                if r.is_2xx {
                    no_ack.push(r.call_id.clone());
                }
                return false;
            }
            if now >= r.next {
                resend.push((r.to, r.data.clone()));
                r.interval = (r.interval * 2).min(t2);
                r.next = now + r.interval;
            }
            true
        });
        for (to, data) in resend {
            self.stats.retransmissions += 1;
            self.send(to, data);
        }
        for id in no_ack {
            // Timer H: no ACK for our 2xx; the call is over (§13.3.1.4).
            tracing::info!("no ACK for 200 OK; ending the call");
            let _ = self.hangup(now, &id);
            self.events.push_back(Event::Ended {
                id,
                reason: EndReason::NoAck,
            });
        }
        let mut dead = Vec::new();
        let mut resend = Vec::new();
        for (br, tx) in self.client.iter_mut() {
            if now >= tx.give_up {
                dead.push(br.clone());
                continue;
            }
            if let Some(n) = tx.next {
                if now >= n {
                    resend.push((tx.to, tx.data.clone()));
                    // Timer A doubles without the T2 cap (§17.1.1.2).
                    tx.interval = if tx.method == "INVITE" {
                        tx.interval * 2
                    } else {
                        (tx.interval * 2).min(t2)
                    };
                    tx.next = Some(now + tx.interval);
                }
            }
        }
        for (to, data) in resend {
            self.stats.retransmissions += 1;
            self.send(to, data);
        }
        for br in dead {
            let Some(tx) = self.client.remove(&br) else {
                continue;
            };
            match tx.method.as_str() {
                // Timer F on our BYE or REFER: as if the far end said 408
                // (the call is over; the transfer failed).
                "BYE" | "REFER" => self.client_tx_done(tx, 408),
                // Timer B, or no answer to our CANCEL: the attempt is over.
                "INVITE" => {
                    if let Some(d) = self.dialogs.remove(&tx.call_id) {
                        let cancelled = d.uac.as_ref().is_some_and(|u| u.cancel_wanted);
                        self.events.push_back(Event::Ended {
                            id: tx.call_id,
                            reason: if cancelled {
                                EndReason::Cancelled
                            } else {
                                EndReason::Rejected(408)
                            },
                        });
                    }
                }
                _ => {}
            }
        }
        // Calls we place that ring too long are cancelled.
        let ringing: Vec<(String, bool)> = self
            .dialogs
            .iter()
            .filter(|(_, d)| d.state == State::Calling)
            .filter_map(|(id, d)| {
                let u = d.uac.as_ref()?;
                (!u.cancel_sent && now >= u.ring_deadline).then(|| (id.clone(), u.provisional))
            })
            .collect();
        for (id, provisional) in ringing {
            if provisional {
                self.send_cancel(now, &id);
            } else {
                // Nothing heard at all: give up without waiting for Timer B.
                let br = self.dialogs[&id].invite_branch.clone();
                self.client.remove(&format!("{br} INVITE"));
                self.dialogs.remove(&id);
                self.events.push_back(Event::Ended {
                    id,
                    reason: EndReason::Rejected(408),
                });
            }
        }
        self.acks.retain(|_, (_, _, exp)| *exp > now);
        // Dialogs whose INVITE was rejected and never ACKed are dropped
        // with the last retransmission.
        let reliable = &self.reliable;
        self.dialogs
            .retain(|id, d| d.state != State::Over || reliable.iter().any(|r| &r.call_id == id));
    }
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
