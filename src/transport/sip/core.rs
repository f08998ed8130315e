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
        }
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
        let known = matches!(
            req.method.as_str(),
            "INVITE" | "BYE" | "OPTIONS" | "INFO" | "NOTIFY" | "REFER"
        );
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

    fn on_invite(&mut self, now: Instant, peer: Peer, req: Request, branch: String) {
        let call_id = req.call_id().to_string();
        if let Some(d) = self.dialogs.get(&call_id) {
            if d.invite_branch == branch {
                // Retransmission of the INVITE we are working on.
                self.stats.retransmissions += 1;
                if let Some(last) = d.last_invite_response.clone() {
                    self.send(peer, last);
                }
                return;
            }
            if req.to().and_then(|t| t.tag).as_deref() == Some(d.local_tag.as_str()) {
                self.on_reinvite(now, peer, req, branch);
                return;
            }
        }
        if req.to().is_some_and(|t| t.tag.is_some()) {
            // A re-INVITE for a dialog we do not know.
            self.respond(now, peer, &req, 481, None);
            return;
        }
        // Who is calling: decided before any state is kept.
        let attempt = Attempt {
            source: peer.addr.ip(),
            method: "INVITE",
            uri: &req.uri,
            authorization: req.headers.get("Authorization"),
        };
        let verdict = self.auth.check(now, &self.cfg.trunks, &attempt);
        let trunk = match verdict {
            Verdict::Allowed(t) => t.clone(),
            Verdict::Forbidden => {
                self.stats.rejected_403 += 1;
                tracing::info!(peer = %peer.addr, "INVITE from a source no trunk admits: 403");
                let resp = response_to(&req, 403, Some(&token()));
                self.send(peer, resp.to_bytes());
                return;
            }
            Verdict::Challenge { stale } => {
                self.stats.challenged_401 += 1;
                let mut resp = response_to(&req, 401, Some(&token()));
                for c in self
                    .auth
                    .challenges(now, &self.cfg.trunks, peer.addr.ip(), stale)
                {
                    resp.headers.push("WWW-Authenticate", c);
                }
                self.send(peer, resp.to_bytes());
                return;
            }
        };
        let local_tag = token();
        // The offer, if any, must be something we can answer.
        let offer = if req.body.is_empty() {
            None
        } else {
            let is_sdp = req
                .headers
                .get("Content-Type")
                .is_some_and(|c| c.to_ascii_lowercase().starts_with("application/sdp"));
            let parsed = if is_sdp {
                sdp::parse(&req.body).and_then(|o| {
                    sdp::negotiate(&o, &self.cfg.media.codecs, self.dtmf_enabled()).map(|_| o)
                })
            } else {
                Err(sdp::SdpError::NoAudio)
            };
            match parsed {
                Ok(o) => Some(o),
                Err(e) => {
                    self.stats.rejected_488 += 1;
                    tracing::info!(error = %e, "INVITE offer not acceptable: 488");
                    let mut resp =
                        response_to(&req, if is_sdp { 488 } else { 415 }, Some(&local_tag));
                    resp.headers
                        .push("Warning", format!("305 attendant \"{e}\""));
                    if !is_sdp {
                        resp.headers.push("Accept", "application/sdp");
                    }
                    self.final_invite_response(now, peer, &req, resp);
                    return;
                }
            }
        };
        // Our answer carries SDP; a caller that accepts none of it cannot
        // take it (RFC 4475 sdp01).
        let accepts = req.headers.get_all("Accept");
        if !accepts.is_empty()
            && !accepts.iter().any(|a| {
                let t = a
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                matches!(t.as_str(), "application/sdp" | "application/*" | "*/*")
            })
        {
            let mut resp = response_to(&req, 406, Some(&local_tag));
            resp.headers.push("Accept", "application/sdp");
            self.final_invite_response(now, peer, &req, resp);
            return;
        }
        let from = req.from();
        let pai = req
            .headers
            .get("P-Asserted-Identity")
            .and_then(|v| message::split_commas(v).into_iter().next())
            .and_then(|v| message::parse_name_addr(&v));
        let identity = match (&pai, trunk.trust_identity) {
            (Some(p), true) => Some(p.clone()),
            _ => from.clone(),
        };
        let caller = identity.as_ref().and_then(|n| message::uri_user(&n.uri));
        let dialled = message::uri_user(&req.uri)
            .or_else(|| req.to().and_then(|t| message::uri_user(&t.uri)));
        let remote_target = req
            .headers
            .get("Contact")
            .and_then(message::parse_name_addr)
            .map(|n| n.uri)
            .unwrap_or_else(|| from.as_ref().map(|f| f.uri.clone()).unwrap_or_default());

        let trying = response_to(&req, 100, None).to_bytes();
        self.send(peer, trying.clone());
        let dialog = Dialog {
            peer,
            invite_branch: branch,
            local_tag: local_tag.clone(),
            remote_uri: from.as_ref().map(|f| f.uri.clone()).unwrap_or_default(),
            remote_target,
            route_set: req.headers.get_all("Record-Route"),
            local_cseq: fastrand::u32(1..10_000),
            state: State::Pending,
            offer,
            negotiated: None,
            local_media: None,
            sdp_version: 1,
            session_id: fastrand::u64(1..u32::MAX as u64),
            last_invite_response: Some(trying),
            refer_pending: false,
            local_party: format!("{};tag={local_tag}", req.headers.get("To").unwrap_or("")),
            remote_party: req.headers.get("From").unwrap_or("").to_string(),
            uac: None,
            invite: req,
        };
        self.dialogs.insert(call_id.clone(), dialog);
        self.events.push_back(Event::Incoming(IncomingCall {
            id: call_id,
            peer,
            trunk: trunk.name,
            caller,
            display_name: identity.and_then(|n| n.display),
            dialled,
        }));
    }

    fn dtmf_enabled(&self) -> bool {
        self.cfg.media.dtmf == super::config::DtmfMode::Rfc4733
    }

    /// Sends a final response to an INVITE and keeps retransmitting it.
    fn final_invite_response(&mut self, now: Instant, peer: Peer, req: &Request, resp: Response) {
        let data = resp.to_bytes();
        let is_2xx = (200..300).contains(&resp.code);
        self.send(peer, data.clone());
        // Over TCP only 2xx are retransmitted (RFC 3261 §13.3.1.4, §17.2.1).
        if is_2xx || peer.transport == Transport::Udp {
            self.reliable.push(Reliable {
                call_id: req.call_id().to_string(),
                cseq: req.cseq().0,
                data: data.clone(),
                to: peer,
                interval: self.t1,
                next: now + self.t1,
                give_up: now + self.timer_64(),
                is_2xx,
            });
        }
        if let Some(d) = self.dialogs.get_mut(req.call_id()) {
            if d.invite_branch == req.top_via().and_then(|v| v.branch).unwrap_or_default() {
                d.last_invite_response = Some(data);
            }
        }
    }

    /// Answers a pending call with our media at `local_media`.
    pub fn accept(
        &mut self,
        now: Instant,
        id: &str,
        local_media: SocketAddr,
    ) -> Result<(), CoreError> {
        let codecs = self.cfg.media.codecs.clone();
        let dtmf = self.dtmf_enabled();
        let d = self
            .dialogs
            .get_mut(id)
            .ok_or_else(|| CoreError::NoCall(id.into()))?;
        if d.state != State::Pending {
            return Err(CoreError::State(id.into()));
        }
        let ip = local_media.ip();
        let (body, negotiated) = match &d.offer {
            Some(offer) => {
                let n = sdp::negotiate(offer, &codecs, dtmf)?;
                let body = sdp::write(
                    d.session_id,
                    d.sdp_version,
                    ip,
                    local_media.port(),
                    &[n.codec],
                    n.dtmf_pt,
                    n.direction,
                );
                (body, Some(n))
            }
            // No offer: we offer everything we do; the ACK carries the answer.
            None => (
                sdp::write(
                    d.session_id,
                    d.sdp_version,
                    ip,
                    local_media.port(),
                    &codecs,
                    dtmf.then_some(101),
                    Direction::SendRecv,
                ),
                None,
            ),
        };
        d.local_media = Some(local_media);
        d.negotiated = negotiated.clone();
        d.state = State::Answered;
        let mut resp = response_to(&d.invite, 200, Some(&d.local_tag));
        for rr in &d.route_set {
            resp.headers.push("Record-Route", rr.clone());
        }
        let peer = d.peer;
        let invite = d.invite.clone();
        let offer = d.offer.clone();
        resp.headers.push("Contact", self.contact(&peer));
        resp.headers.push("Allow", ALLOW);
        resp.headers.push("Content-Type", "application/sdp");
        resp.body = body;
        self.stats.answered += 1;
        self.final_invite_response(now, peer, &invite, resp);
        if let (Some(remote), Some(negotiated)) = (offer, negotiated) {
            self.events.push_back(Event::Media {
                id: id.into(),
                remote,
                negotiated,
            });
        }
        Ok(())
    }

    /// Rejects a pending call (e.g. 503 while models load, 486 when full).
    pub fn reject(&mut self, now: Instant, id: &str, code: u16) -> Result<(), CoreError> {
        let d = self
            .dialogs
            .get(id)
            .ok_or_else(|| CoreError::NoCall(id.into()))?;
        if d.state != State::Pending {
            return Err(CoreError::State(id.into()));
        }
        let mut resp = response_to(&d.invite, code, Some(&d.local_tag));
        if code == 503 {
            // Overloaded or draining: a proxy fails over, a trunk retries later.
            resp.headers.push("Retry-After", "30");
        }
        let (peer, invite) = (d.peer, d.invite.clone());
        self.final_invite_response(now, peer, &invite, resp);
        if let Some(d) = self.dialogs.get_mut(id) {
            d.state = State::Over;
        }
        self.events.push_back(Event::Ended {
            id: id.into(),
            reason: EndReason::Rejected(code),
        });
        Ok(())
    }

    fn on_reinvite(&mut self, now: Instant, peer: Peer, req: Request, branch: String) {
        let call_id = req.call_id().to_string();
        let codecs = self.cfg.media.codecs.clone();
        let dtmf = self.dtmf_enabled();
        let Some(d) = self.dialogs.get_mut(&call_id) else {
            return;
        };
        if d.state != State::Confirmed {
            // An INVITE while ours is unfinished (RFC 3261 §14.2).
            let resp = response_to(&req, 491, None);
            self.final_invite_response(now, peer, &req, resp);
            return;
        }
        let Some(local) = d.local_media else {
            return;
        };
        let offer = if req.body.is_empty() {
            None
        } else {
            Some(sdp::parse(&req.body))
        };
        let (body, media) = match offer {
            Some(Ok(o)) => match sdp::negotiate(&o, &codecs, dtmf) {
                Ok(n) => {
                    d.sdp_version += 1;
                    let body = sdp::write(
                        d.session_id,
                        d.sdp_version,
                        local.ip(),
                        local.port(),
                        &[n.codec],
                        n.dtmf_pt,
                        n.direction,
                    );
                    (body, Some((o, n)))
                }
                Err(e) => {
                    let mut resp = response_to(&req, 488, None);
                    resp.headers
                        .push("Warning", format!("305 attendant \"{e}\""));
                    self.final_invite_response(now, peer, &req, resp);
                    return;
                }
            },
            Some(Err(e)) => {
                let mut resp = response_to(&req, 488, None);
                resp.headers
                    .push("Warning", format!("305 attendant \"{e}\""));
                self.final_invite_response(now, peer, &req, resp);
                return;
            }
            // Offerless re-INVITE: offer the current session again.
            None => {
                let n = d.negotiated.clone();
                let body = sdp::write(
                    d.session_id,
                    d.sdp_version,
                    local.ip(),
                    local.port(),
                    &n.as_ref().map(|n| vec![n.codec]).unwrap_or(codecs),
                    n.as_ref().and_then(|n| n.dtmf_pt),
                    Direction::SendRecv,
                );
                (body, None)
            }
        };
        d.invite_branch = branch;
        d.state = State::Answered;
        if let Some(c) = req
            .headers
            .get("Contact")
            .and_then(message::parse_name_addr)
        {
            d.remote_target = c.uri;
        }
        let mut resp = response_to(&req, 200, None);
        let contact_peer = d.peer;
        if let Some((o, n)) = media {
            d.negotiated = Some(n.clone());
            self.events.push_back(Event::Media {
                id: call_id.clone(),
                remote: o,
                negotiated: n,
            });
        }
        resp.headers.push("Contact", self.contact(&contact_peer));
        resp.headers.push("Content-Type", "application/sdp");
        resp.body = body;
        self.final_invite_response(now, peer, &req, resp);
    }

    fn on_ack(&mut self, _now: Instant, call_id: &str, req: &Request) {
        let (cseq, _) = req.cseq();
        let before = self.reliable.len();
        let mut acked_2xx = false;
        self.reliable.retain(|r| {
            let hit = r.call_id == call_id && r.cseq == cseq;
            if hit && r.is_2xx {
                acked_2xx = true;
            }
            !hit
        });
        let matched = before != self.reliable.len();
        let Some(d) = self.dialogs.get_mut(call_id) else {
            return;
        };
        if !acked_2xx {
            // ACK of a rejection (487, 488, …): the attempt is over.
            if matched && d.state == State::Over {
                self.dialogs.remove(call_id);
            }
            return;
        }
        if d.state == State::Answered {
            d.state = State::Confirmed;
        }
        // Offerless INVITE: the answer arrives in the ACK.
        if d.negotiated.is_none() {
            let codecs = self.cfg.media.codecs.clone();
            let dtmf = self.cfg.media.dtmf == super::config::DtmfMode::Rfc4733;
            match sdp::parse(&req.body)
                .and_then(|a| sdp::negotiate(&a, &codecs, dtmf).map(|n| (a, n)))
            {
                Ok((remote, n)) => {
                    d.negotiated = Some(n.clone());
                    self.events.push_back(Event::Media {
                        id: call_id.into(),
                        remote,
                        negotiated: n,
                    });
                }
                Err(e) => {
                    tracing::info!(error = %e, "ACK carried no usable answer; hanging up");
                    let _ = self.hangup(_now, call_id);
                }
            }
        }
    }

    fn on_cancel(&mut self, now: Instant, peer: Peer, req: &Request, branch: &str) {
        let call_id = req.call_id().to_string();
        let pending = match self.dialogs.get(&call_id) {
            Some(d) if d.invite_branch == branch => Some(d.state == State::Pending),
            _ => None,
        };
        match pending {
            None => {
                self.respond(now, peer, req, 481, None);
            }
            Some(true) => {
                self.respond(now, peer, req, 200, None);
                let d = self.dialogs.get(&call_id).expect("checked");
                let resp = response_to(&d.invite, 487, Some(&d.local_tag));
                let (p, invite) = (d.peer, d.invite.clone());
                self.final_invite_response(now, p, &invite, resp);
                if let Some(d) = self.dialogs.get_mut(&call_id) {
                    d.state = State::Over;
                }
                self.events.push_back(Event::Ended {
                    id: call_id,
                    reason: EndReason::Cancelled,
                });
            }
            // Already answered: the CANCEL lost the race and changes nothing
            // (RFC 3261 §9.2); the caller will ACK and BYE.
            Some(false) => {
                self.respond(now, peer, req, 200, None);
            }
        }
    }

    fn on_response(&mut self, now: Instant, resp: Response) {
        let Some(branch) = resp.top_branch() else {
            return;
        };
        let (_, method) = resp.cseq();
        let key = format!("{branch} {method}");
        if method == "INVITE" {
            if !self.client.contains_key(&key) {
                // A retransmitted final response: our ACK again (§17.1.1.2,
                // §13.2.2.4).
                if resp.code >= 200 {
                    if let Some((peer, ack, _)) = self.acks.get(&branch) {
                        let (peer, ack) = (*peer, ack.clone());
                        self.stats.retransmissions += 1;
                        self.send(peer, ack);
                    }
                }
                return;
            }
            self.on_invite_response(now, &key, &branch, resp);
            return;
        }
        if resp.code < 200 {
            if let Some(tx) = self.client.get_mut(&key) {
                // Provisional: stop retransmitting faster than T2 (§17.1.2.2).
                if let Some(n) = tx.next.as_mut() {
                    *n = now + self.t1 * 8;
                }
            }
            return;
        }
        let Some(tx) = self.client.remove(&key) else {
            return;
        };
        match tx.method.as_str() {
            "BYE" if self.dialogs.remove(&tx.call_id).is_some() => {
                self.events.push_back(Event::Ended {
                    id: tx.call_id,
                    reason: EndReason::LocalBye,
                });
            }
            "REFER" => {
                let failed = resp.code >= 300;
                if failed {
                    if let Some(d) = self.dialogs.get_mut(&tx.call_id) {
                        d.refer_pending = false;
                    }
                }
                self.events.push_back(Event::Transfer {
                    id: tx.call_id,
                    status: resp.code,
                    final_: failed,
                });
            }
            _ => {}
        }
    }

    /// A response to an INVITE we sent (client INVITE transaction, §17.1.1).
    fn on_invite_response(&mut self, now: Instant, key: &str, branch: &str, resp: Response) {
        let call_id = self.client[key].call_id.clone();
        if resp.code < 200 {
            // Proceeding: no more retransmissions, no Timer B; ringing is
            // bounded by the ring timeout instead.
            if let Some(tx) = self.client.get_mut(key) {
                tx.next = None;
                tx.give_up = now + Duration::from_secs(24 * 3600);
            }
            let send_cancel = match self.dialogs.get_mut(&call_id).and_then(|d| d.uac.as_mut()) {
                Some(u) => {
                    u.provisional = true;
                    u.cancel_wanted && !u.cancel_sent
                }
                None => false,
            };
            if send_cancel {
                self.send_cancel(now, &call_id);
            }
            return;
        }
        self.client.remove(key);
        let Some(d) = self.dialogs.get_mut(&call_id) else {
            return;
        };
        let cancelled = d.uac.as_ref().is_some_and(|u| u.cancel_wanted);
        let to = resp.headers.get("To").unwrap_or("").to_string();
        if resp.code >= 300 {
            // The ACK of a failure is part of the INVITE transaction: same
            // branch, same Request-URI, the response's To (§17.1.1.3).
            let mut h = message::Headers::default();
            for v in d.invite.headers.get_all("Via").into_iter().take(1) {
                h.push("Via", v);
            }
            h.push("Max-Forwards", "70");
            h.push("From", d.local_party.clone());
            h.push("To", to);
            h.push("Call-ID", call_id.clone());
            h.push("CSeq", format!("{} ACK", d.invite.cseq().0));
            for r in d.invite.headers.get_all("Route") {
                h.push("Route", r);
            }
            let ack = Request {
                method: "ACK".into(),
                uri: d.invite.uri.clone(),
                headers: h,
                body: Vec::new(),
            }
            .to_bytes();
            let peer = d.peer;
            self.dialogs.remove(&call_id);
            self.acks.insert(
                branch.to_string(),
                (peer, ack.clone(), now + self.timer_64()),
            );
            self.send(peer, ack);
            let reason = if cancelled && resp.code == 487 {
                EndReason::Cancelled
            } else {
                EndReason::Rejected(resp.code)
            };
            self.events.push_back(Event::Ended {
                id: call_id,
                reason,
            });
            return;
        }
        // 2xx: the dialog is established; the ACK is a request of its own
        // (new branch, the route set and remote target of the dialog).
        d.remote_party = to;
        d.route_set = resp.headers.get_all("Record-Route");
        d.route_set.reverse();
        if let Some(c) = resp
            .headers
            .get("Contact")
            .and_then(message::parse_name_addr)
        {
            d.remote_target = c.uri;
        }
        d.state = State::Confirmed;
        let cseq = d.invite.cseq().0;
        let local_cseq = d.local_cseq;
        let Some((mut ack, peer, _)) = self.dialog_request(&call_id, "ACK") else {
            return;
        };
        ack.headers.set("CSeq", format!("{cseq} ACK"));
        if let Some(d) = self.dialogs.get_mut(&call_id) {
            // ACK does not use up a sequence number.
            d.local_cseq = local_cseq;
        }
        let ack = ack.to_bytes();
        self.acks.insert(
            branch.to_string(),
            (peer, ack.clone(), now + self.timer_64()),
        );
        self.send(peer, ack);
        let codecs = self.cfg.media.codecs.clone();
        let dtmf = self.dtmf_enabled();
        let answer =
            sdp::parse(&resp.body).and_then(|a| sdp::negotiate(&a, &codecs, dtmf).map(|n| (a, n)));
        match answer {
            // The CANCEL lost the race with the 200: the call is answered
            // and must be ended with BYE (§9.1).
            _ if cancelled => {
                let _ = self.hangup(now, &call_id);
            }
            Ok((remote, negotiated)) => {
                if let Some(d) = self.dialogs.get_mut(&call_id) {
                    d.negotiated = Some(negotiated.clone());
                }
                self.stats.answered += 1;
                self.events.push_back(Event::Media {
                    id: call_id,
                    remote,
                    negotiated,
                });
            }
            Err(e) => {
                tracing::info!(error = %e, "answer to our INVITE is unusable; hanging up");
                let _ = self.hangup(now, &call_id);
            }
        }
    }

    /// Places a call: sends an INVITE offering our codecs and returns its
    /// Call-ID. Progress comes back as events: `Media` once answered,
    /// `Ended` if it fails, is cancelled or rings too long.
    pub fn invite(&mut self, now: Instant, call: OutboundCall) -> Result<String, CoreError> {
        let id = format!("{}@attendant", token());
        let local_tag = token();
        let br = branch();
        let peer = call.peer;
        let ip = self.public_ip(&peer);
        let host = match ip {
            IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        };
        let user = call
            .from_user
            .as_deref()
            .filter(|u| {
                !u.is_empty()
                    && u.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+-_.*#".contains(c))
            })
            .unwrap_or("attendant");
        let display = call
            .from_display
            .as_deref()
            .map(|d| d.replace(['"', '\\', '\r', '\n'], ""))
            .filter(|d| !d.is_empty())
            .map(|d| format!("\"{d}\" "))
            .unwrap_or_default();
        let from = format!("{display}<sip:{user}@{host}>;tag={local_tag}");
        let to = format!("<{}>", call.uri);
        let tp = peer.transport.via_name();
        let cseq = 1;
        let mut h = message::Headers::default();
        h.push(
            "Via",
            format!("SIP/2.0/{tp} {};branch={br};rport", peer.local),
        );
        h.push("Max-Forwards", "70");
        h.push("From", from.clone());
        h.push("To", to.clone());
        h.push("Call-ID", id.clone());
        h.push("CSeq", format!("{cseq} INVITE"));
        h.push("Contact", self.contact(&peer));
        h.push("Allow", ALLOW);
        for (k, v) in &call.headers {
            h.push(k, v.clone());
        }
        h.push("Content-Type", "application/sdp");
        let session_id = fastrand::u64(1..u32::MAX as u64);
        let dtmf = self.dtmf_enabled();
        let body = sdp::write(
            session_id,
            1,
            call.local_media.ip(),
            call.local_media.port(),
            &self.cfg.media.codecs,
            dtmf.then_some(101),
            Direction::SendRecv,
        );
        let req = Request {
            method: "INVITE".into(),
            uri: call.uri.clone(),
            headers: h,
            body,
        };
        let dialog = Dialog {
            peer,
            invite: req.clone(),
            invite_branch: br.clone(),
            local_tag,
            remote_uri: call.uri.clone(),
            remote_target: call.uri.clone(),
            route_set: Vec::new(),
            local_cseq: cseq,
            state: State::Calling,
            offer: None,
            negotiated: None,
            local_media: Some(call.local_media),
            sdp_version: 1,
            session_id,
            last_invite_response: None,
            refer_pending: false,
            local_party: from,
            remote_party: to,
            uac: Some(Uac {
                provisional: false,
                cancel_wanted: false,
                cancel_sent: false,
                ring_deadline: now + call.ring_timeout,
            }),
        };
        self.dialogs.insert(id.clone(), dialog);
        self.start_client(now, &id, req, peer, br);
        Ok(id)
    }

    /// CANCEL for our INVITE: same branch, Request-URI, From, To and
    /// CSeq number (§9.1).
    fn send_cancel(&mut self, now: Instant, id: &str) {
        let Some(d) = self.dialogs.get_mut(id) else {
            return;
        };
        if let Some(u) = d.uac.as_mut() {
            u.cancel_wanted = true;
            u.cancel_sent = true;
        }
        let mut h = message::Headers::default();
        for v in d.invite.headers.get_all("Via").into_iter().take(1) {
            h.push("Via", v);
        }
        h.push("Max-Forwards", "70");
        h.push("From", d.local_party.clone());
        h.push("To", d.invite.headers.get("To").unwrap_or("").to_string());
        h.push("Call-ID", id);
        h.push("CSeq", format!("{} CANCEL", d.invite.cseq().0));
        let req = Request {
            method: "CANCEL".into(),
            uri: d.invite.uri.clone(),
            headers: h,
            body: Vec::new(),
        };
        let (peer, br) = (d.peer, d.invite_branch.clone());
        // Without a final response 64·T1 after the CANCEL, the attempt is
        // over (§9.1).
        let give_up = now + self.timer_64();
        if let Some(tx) = self.client.get_mut(&format!("{br} INVITE")) {
            tx.give_up = give_up;
        }
        self.start_client(now, id, req, peer, br);
    }

    /// Builds an in-dialog request from us (either side of the dialog).
    fn dialog_request(&mut self, id: &str, method: &str) -> Option<(Request, Peer, String)> {
        let d = self.dialogs.get_mut(id)?;
        d.local_cseq += 1;
        let br = branch();
        let mut h = message::Headers::default();
        let tp = d.peer.transport.via_name();
        let local = d.peer.local;
        h.push("Via", format!("SIP/2.0/{tp} {local};branch={br};rport"));
        h.push("Max-Forwards", "70");
        h.push("From", d.local_party.clone());
        h.push("To", d.remote_party.clone());
        h.push("Call-ID", id);
        h.push("CSeq", format!("{} {method}", d.local_cseq));
        for r in &d.route_set {
            h.push("Route", r.clone());
        }
        let target = if d.remote_target.is_empty() {
            d.remote_uri.clone()
        } else {
            d.remote_target.clone()
        };
        let peer = d.peer;
        h.push("Contact", self.contact(&peer));
        Some((
            Request {
                method: method.into(),
                uri: target,
                headers: h,
                body: Vec::new(),
            },
            peer,
            br,
        ))
    }

    fn start_client(&mut self, now: Instant, id: &str, req: Request, peer: Peer, br: String) {
        let data = req.to_bytes();
        self.send(peer, data.clone());
        let next = (peer.transport == Transport::Udp).then_some(now + self.t1);
        self.client.insert(
            format!("{br} {}", req.method),
            ClientTx {
                call_id: id.into(),
                method: req.method,
                data,
                to: peer,
                interval: self.t1,
                next,
                give_up: now + self.timer_64(),
            },
        );
    }

    /// Ends an established call with BYE (or a pending one with 480).
    pub fn hangup(&mut self, now: Instant, id: &str) -> Result<(), CoreError> {
        let state = self
            .dialogs
            .get(id)
            .map(|d| d.state.clone())
            .ok_or_else(|| CoreError::NoCall(id.into()))?;
        match state {
            State::Pending => return self.reject(now, id, 480),
            State::Closing | State::Over => return Ok(()),
            State::Calling => {
                let send_now = match self.dialogs.get_mut(id).and_then(|d| d.uac.as_mut()) {
                    Some(u) if !u.cancel_sent => {
                        u.cancel_wanted = true;
                        u.provisional
                    }
                    _ => false,
                };
                // Else the CANCEL waits for a provisional response (§9.1).
                if send_now {
                    self.send_cancel(now, id);
                }
                return Ok(());
            }
            _ => {}
        }
        self.reliable.retain(|r| r.call_id != id || !r.is_2xx);
        let (req, peer, br) = self
            .dialog_request(id, "BYE")
            .ok_or_else(|| CoreError::NoCall(id.into()))?;
        if let Some(d) = self.dialogs.get_mut(id) {
            d.state = State::Closing;
        }
        self.start_client(now, id, req, peer, br);
        Ok(())
    }

    /// Blind transfer: REFER the caller to `target`, carrying the hand-off
    /// context id in the configured header and in User-to-User.
    pub fn refer(
        &mut self,
        now: Instant,
        id: &str,
        target: &str,
        context: Option<&str>,
    ) -> Result<(), CoreError> {
        match self.dialogs.get(id) {
            None => return Err(CoreError::NoCall(id.into())),
            Some(d) if d.state != State::Confirmed || d.refer_pending => {
                return Err(CoreError::State(id.into()))
            }
            _ => {}
        }
        let header = self.cfg.transfer.context_header.clone();
        let (mut req, peer, br) = self
            .dialog_request(id, "REFER")
            .ok_or_else(|| CoreError::NoCall(id.into()))?;
        let mut refer_to = target.to_string();
        if let Some(ctx) = context {
            req.headers.push(&header, ctx);
            let uui = hex::encode(ctx.as_bytes());
            req.headers
                .push("User-to-User", format!("{uui};encoding=hex"));
            // The header also rides inside Refer-To so the new INVITE has it.
            let sep = if refer_to.contains('?') { '&' } else { '?' };
            refer_to = format!("{refer_to}{sep}{header}={}", url_escape(ctx));
        }
        req.headers.push("Refer-To", format!("<{refer_to}>"));
        req.headers.push("Referred-By", self.contact(&peer));
        if let Some(d) = self.dialogs.get_mut(id) {
            d.refer_pending = true;
        }
        self.start_client(now, id, req, peer, br);
        Ok(())
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
                // Timer F on our BYE: the far end is gone; so is the call.
                "BYE" if self.dialogs.remove(&tx.call_id).is_some() => {
                    self.events.push_back(Event::Ended {
                        id: tx.call_id,
                        reason: EndReason::LocalBye,
                    });
                }
                "REFER" => {
                    if let Some(d) = self.dialogs.get_mut(&tx.call_id) {
                        d.refer_pending = false;
                    }
                    self.events.push_back(Event::Transfer {
                        id: tx.call_id,
                        status: 408,
                        final_: true,
                    });
                }
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
