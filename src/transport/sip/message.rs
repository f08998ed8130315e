//! SIP message syntax (RFC 3261 §7): parse untrusted bytes into requests and
//! responses, and write them back out. Tolerant where the RFC asks for
//! tolerance (header case, compact forms, folded lines, LWS around colons),
//! strict where a mistake would confuse the transaction layer (missing or
//! malformed Via/From/To/Call-ID/CSeq, Content-Length beyond the datagram).

use std::fmt::Write as _;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("message is not UTF-8 in its header section")]
    NotText,
    #[error("no blank line ends the header section")]
    Incomplete,
    #[error("malformed start line: {0}")]
    StartLine(String),
    #[error("unsupported SIP version {0}")]
    Version(String),
    #[error("malformed header line: {0}")]
    Header(String),
    #[error("missing mandatory header {0}")]
    Missing(&'static str),
    #[error("malformed {0} header")]
    Bad(&'static str),
    #[error("Content-Length {declared} but {actual} body bytes")]
    Length { declared: usize, actual: usize },
    #[error("message too large")]
    TooLarge,
}

impl ParseError {
    /// The status a UAS answers with when the bad message was a request.
    pub fn status(&self) -> u16 {
        match self {
            ParseError::Version(_) => 505,
            ParseError::TooLarge => 513,
            _ => 400,
        }
    }
}

/// Header fields a message may carry once only.
const SINGLE: [&str; 7] = [
    "To",
    "From",
    "Call-ID",
    "CSeq",
    "Max-Forwards",
    "Content-Length",
    "Content-Type",
];

/// Largest message accepted (UDP datagrams are smaller; TCP bounds buffering).
pub const MAX_MESSAGE: usize = 64 * 1024;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

/// Long form of a compact header name (RFC 3261 §7.3.3 and extensions).
fn canonical(name: &str) -> String {
    let long = match name.to_ascii_lowercase().as_str() {
        "i" | "call-id" => "Call-ID",
        "m" | "contact" => "Contact",
        "e" | "content-encoding" => "Content-Encoding",
        "l" | "content-length" => "Content-Length",
        "c" | "content-type" => "Content-Type",
        "f" | "from" => "From",
        "s" | "subject" => "Subject",
        "k" | "supported" => "Supported",
        "t" | "to" => "To",
        "v" | "via" => "Via",
        "r" | "refer-to" => "Refer-To",
        "b" | "referred-by" => "Referred-By",
        "o" | "event" => "Event",
        "cseq" => "CSeq",
        _ => return name.to_string(),
    };
    long.to_string()
}

impl Headers {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, comma-separated values split out (for Via,
    /// Record-Route and the like), in order.
    pub fn get_all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| split_commas(v))
            .collect()
    }

    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.0.push((name.to_string(), value.into()));
    }

    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.remove(name);
        self.push(name, value);
    }

    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

/// Splits a header value at commas that are outside quotes and angle brackets.
pub fn split_commas(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut depth, mut quoted, mut cur) = (0i32, false, String::new());
    let mut escaped = false;
    for ch in v.chars() {
        if escaped {
            escaped = false;
            cur.push(ch);
            continue;
        }
        match ch {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => depth += 1,
            '>' if !quoted => depth -= 1,
            ',' if !quoted && depth <= 0 => {
                out.push(cur.trim().to_string());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(ch);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub uri: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub code: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Request(Request),
    Response(Response),
}

impl Message {
    pub fn headers(&self) -> &Headers {
        match self {
            Message::Request(r) => &r.headers,
            Message::Response(r) => &r.headers,
        }
    }
}

/// The parts of a `Via` header value the transaction layer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    pub transport: String,
    pub host: String,
    pub port: Option<u16>,
    pub branch: Option<String>,
    pub rport: bool,
}

pub fn parse_via(v: &str) -> Option<Via> {
    // LWS may surround the slashes of the sent-protocol (RFC 3261 §25.1,
    // RFC 4475 wsinv).
    let mut parts = v.trim().splitn(3, '/');
    let (sip, ver, rest) = (parts.next()?.trim(), parts.next()?.trim(), parts.next()?);
    if !sip.eq_ignore_ascii_case("SIP") || ver != "2.0" {
        return None;
    }
    let (transport, rest) = rest.trim_start().split_once(char::is_whitespace)?;
    if !is_token(transport) {
        return None;
    }
    let mut params = rest.split(';');
    let sent_by = params.next()?.trim();
    let (host, port) = split_host_port(sent_by)?;
    let mut via = Via {
        transport: transport.to_ascii_uppercase(),
        host,
        port,
        branch: None,
        rport: false,
    };
    for p in params {
        let (k, val) = generic_param(p)?;
        match k.to_ascii_lowercase().as_str() {
            "branch" => via.branch = Some(val.to_string()),
            "rport" => via.rport = true,
            _ => {}
        }
    }
    Some(via)
}

/// One `name[=value]` parameter, LWS around `=` allowed; `None` when it is
/// empty or its name is not a token (RFC 4475 badinv01: `;;`).
fn generic_param(p: &str) -> Option<(&str, &str)> {
    let (k, v) = p.split_once('=').unwrap_or((p, ""));
    let (k, v) = (k.trim(), v.trim());
    is_token(k).then_some((k, v))
}

/// Splits at `sep` outside double quotes (backslash escapes honoured).
fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let (mut out, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, ch) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if quoted && ch == '\\' {
            escaped = true;
        } else if ch == '"' {
            quoted = !quoted;
        } else if ch == sep && !quoted {
            out.push(&s[start..i]);
            start = i + ch.len_utf8();
        }
    }
    out.push(&s[start..]);
    out
}

/// Index of the quote closing the quoted string that `s` starts with.
fn closing_quote(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, ch) in s.char_indices().skip(1) {
        match ch {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(i),
            _ => {}
        }
    }
    None
}

/// Whether `uri` starts with a URI scheme (`ALPHA *(ALPHA / DIGIT / "+" /
/// "-" / ".") ":"`).
pub fn has_scheme(uri: &str) -> bool {
    let Some((scheme, _)) = uri.split_once(':') else {
        return false;
    };
    let mut b = scheme.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphabetic())
        && b.all(|c| c.is_ascii_alphanumeric() || b"+-.".contains(&c))
}

/// The URI scheme, lower-cased.
pub fn uri_scheme(uri: &str) -> String {
    uri.split(':').next().unwrap_or("").to_ascii_lowercase()
}

/// `host[:port]`, with IPv6 references in brackets.
pub fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), Some(p.parse().ok()?))),
        None => Some((s.to_string(), None)),
    }
}

/// A From/To/Contact style value: the URI and its `tag` parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    pub display: Option<String>,
    pub uri: String,
    pub tag: Option<String>,
}

pub fn parse_name_addr(v: &str) -> Option<NameAddr> {
    let v = v.trim();
    // A display name: a quoted string, or tokens (RFC 4475 baddn, quotbal).
    let (display, rest) = if v.starts_with('"') {
        let end = closing_quote(v)?;
        let rest = v[end + 1..].trim_start();
        if !rest.starts_with('<') {
            return None;
        }
        let quoted = v[1..end].trim();
        (Some(unescape_quoted(quoted)), rest)
    } else if let Some(open) = v.find('<') {
        let name = v[..open].trim();
        if !name.split_whitespace().all(is_token) {
            return None;
        }
        ((!name.is_empty()).then(|| name.to_string()), &v[open..])
    } else {
        (None, v)
    };
    let (uri, params) = if let Some(inner) = rest.strip_prefix('<') {
        let close = inner.find('>')?;
        let after = inner[close + 1..].trim_start();
        if !(after.is_empty() || after.starts_with(';')) {
            return None;
        }
        (&inner[..close], after)
    } else {
        // addr-spec without brackets: header parameters follow the URI.
        match rest.find(';') {
            Some(i) => (rest[..i].trim(), &rest[i..]),
            None => (rest, ""),
        }
    };
    // No LWS inside an addr-spec (RFC 4475 badaspec).
    if uri.is_empty() || uri.contains(char::is_whitespace) || !has_scheme(uri) {
        return None;
    }
    let mut tag = None;
    if let Some(params) = params.strip_prefix(';') {
        for p in split_unquoted(params, ';') {
            let (k, val) = generic_param(p)?;
            if k.eq_ignore_ascii_case("tag") {
                tag = Some(val.to_string());
            }
        }
    }
    Some(NameAddr {
        display: display.filter(|d| !d.is_empty()),
        uri: uri.to_string(),
        tag,
    })
}

fn unescape_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The user part of a SIP/tel URI (`sip:+15550001@host` → `+15550001`).
pub fn uri_user(uri: &str) -> Option<String> {
    let rest = uri
        .strip_prefix("sips:")
        .or_else(|| uri.strip_prefix("sip:"))
        .or_else(|| uri.strip_prefix("tel:"))?;
    let user = match rest.split_once('@') {
        Some((u, _)) => u,
        None if uri.starts_with("tel:") => rest,
        None => return None,
    };
    let user = user.split([';', ':']).next().unwrap_or("");
    (!user.is_empty()).then(|| user.to_string())
}

/// `host:port` of a SIP URI.
pub fn uri_host_port(uri: &str) -> Option<(String, Option<u16>)> {
    let rest = uri
        .strip_prefix("sips:")
        .or_else(|| uri.strip_prefix("sip:"))?;
    let hostport = rest.rsplit_once('@').map(|(_, h)| h).unwrap_or(rest);
    let hostport = hostport.split([';', '?']).next()?;
    split_host_port(hostport)
}

pub fn parse_cseq(v: &str) -> Option<(u32, String)> {
    let mut it = v.split_whitespace();
    let n = it.next()?.parse().ok()?;
    let m = it.next()?.to_string();
    it.next().is_none().then_some((n, m))
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

/// Finds the end of the header section: index just past the blank line.
fn header_end(buf: &[u8]) -> Option<(usize, usize)> {
    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
        return Some((i, i + 4));
    }
    // Bare LF line ends are tolerated (RFC 3261 §7.5 asks for tolerance).
    buf.windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| (i, i + 2))
}

/// Parses one complete message from a datagram.
pub fn parse(buf: &[u8]) -> Result<Message, ParseError> {
    if buf.len() > MAX_MESSAGE {
        return Err(ParseError::TooLarge);
    }
    // Leading CRLFs are keep-alives or stray line ends (RFC 3261 §7.5).
    let start = buf
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(buf.len());
    let buf = &buf[start..];
    let (hend, body_start) = header_end(buf).ok_or(ParseError::Incomplete)?;
    let (msg, declared) = parse_head(&buf[..hend])?;
    let body = &buf[body_start..];
    let body = match declared {
        Some(n) if n > body.len() => {
            return Err(ParseError::Length {
                declared: n,
                actual: body.len(),
            })
        }
        // Extra bytes after the declared body are discarded (§18.3).
        Some(n) => &body[..n],
        None => body,
    };
    Ok(with_body(msg, body.to_vec()))
}

/// Parses the next message from a stream buffer (TCP): `Ok(None)` until a
/// whole message is there; on success also returns the bytes consumed.
pub fn parse_stream(buf: &[u8]) -> Result<Option<(Message, usize)>, ParseError> {
    let start = buf
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(buf.len());
    let Some((hend, body_start)) = header_end(&buf[start..]) else {
        if buf.len() > MAX_MESSAGE {
            return Err(ParseError::TooLarge);
        }
        return Ok(None);
    };
    let (msg, declared) = parse_head(&buf[start..start + hend])?;
    // On a stream Content-Length is mandatory (§18.3).
    let n = declared.ok_or(ParseError::Missing("Content-Length"))?;
    if n > MAX_MESSAGE {
        return Err(ParseError::TooLarge);
    }
    let body_from = start + body_start;
    if buf.len() < body_from + n {
        return Ok(None);
    }
    let body = buf[body_from..body_from + n].to_vec();
    Ok(Some((with_body(msg, body), body_from + n)))
}

fn with_body(msg: Message, body: Vec<u8>) -> Message {
    match msg {
        Message::Request(mut r) => {
            r.body = body;
            Message::Request(r)
        }
        Message::Response(mut r) => {
            r.body = body;
            Message::Response(r)
        }
    }
}

fn parse_head(head: &[u8]) -> Result<(Message, Option<usize>), ParseError> {
    let text = std::str::from_utf8(head).map_err(|_| ParseError::NotText)?;
    let mut lines: Vec<String> = Vec::new();
    for raw in text.split('\n') {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if (line.starts_with(' ') || line.starts_with('\t')) && !lines.is_empty() {
            // Folded continuation line.
            let last = lines.last_mut().expect("non-empty");
            last.push(' ');
            last.push_str(line.trim());
        } else {
            lines.push(line.to_string());
        }
    }
    let start = lines.first().ok_or(ParseError::Incomplete)?.clone();
    let mut headers = Headers::default();
    for line in &lines[1..] {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| ParseError::Header(clip(line)))?;
        let name = name.trim();
        if !is_token(name) {
            return Err(ParseError::Header(clip(line)));
        }
        headers.push(&canonical(name), value.trim());
    }
    let msg = if let Some(rest) = start.strip_prefix("SIP/") {
        let mut it = rest.splitn(3, ' ');
        let ver = it.next().unwrap_or("");
        if ver != "2.0" {
            return Err(ParseError::Version(clip(ver)));
        }
        let code: u16 = it
            .next()
            .and_then(|c| c.parse().ok())
            .filter(|c| (100..700).contains(c))
            .ok_or_else(|| ParseError::StartLine(clip(&start)))?;
        Message::Response(Response {
            code,
            reason: it.next().unwrap_or("").to_string(),
            headers,
            body: Vec::new(),
        })
    } else {
        let mut it = start.split(' ');
        let (method, uri, ver) = match (it.next(), it.next(), it.next(), it.next()) {
            (Some(m), Some(u), Some(v), None) => (m, u, v),
            _ => return Err(ParseError::StartLine(clip(&start))),
        };
        // A URI with a scheme; a SIP URI carries no headers (RFC 4475
        // ltgtruri, escruri).
        // (A `?` may appear in the user part: RFC 4475 intmeth.)
        let sip_uri = matches!(uri_scheme(uri).as_str(), "sip" | "sips");
        let uri_headers = uri.rsplit('@').next().is_some_and(|h| h.contains('?'));
        if !is_token(method) || !has_scheme(uri) || (sip_uri && uri_headers) {
            return Err(ParseError::StartLine(clip(&start)));
        }
        match ver.strip_prefix("SIP/") {
            Some("2.0") => {}
            _ => return Err(ParseError::Version(clip(ver))),
        }
        Message::Request(Request {
            method: method.to_string(),
            uri: uri.to_string(),
            headers,
            body: Vec::new(),
        })
    };
    let h = msg.headers();
    // Fields that hold one value must appear once (RFC 4475 multi01, mcl01).
    for name in SINGLE {
        if h.0
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
            > 1
        {
            return Err(ParseError::Bad(name));
        }
    }
    // Mandatory headers, checked here so the layers above can rely on them.
    let vias = h.get_all("Via");
    if vias.is_empty() {
        return Err(ParseError::Missing("Via"));
    }
    for via in &vias {
        parse_via(via).ok_or(ParseError::Bad("Via"))?;
    }
    if let Some(mf) = h.get("Max-Forwards") {
        // 0–255 (RFC 4475 scalar02).
        mf.trim()
            .parse::<u8>()
            .map_err(|_| ParseError::Bad("Max-Forwards"))?;
    }
    parse_name_addr(h.get("From").ok_or(ParseError::Missing("From"))?)
        .ok_or(ParseError::Bad("From"))?;
    parse_name_addr(h.get("To").ok_or(ParseError::Missing("To"))?).ok_or(ParseError::Bad("To"))?;
    if h.get("Call-ID").is_none_or(|c| c.is_empty()) {
        return Err(ParseError::Missing("Call-ID"));
    }
    let (_, cseq_method) = parse_cseq(h.get("CSeq").ok_or(ParseError::Missing("CSeq"))?)
        .ok_or(ParseError::Bad("CSeq"))?;
    if let Message::Request(r) = &msg {
        if cseq_method != r.method {
            return Err(ParseError::Bad("CSeq"));
        }
    }
    let declared = match h.get("Content-Length") {
        Some(v) => Some(
            v.trim()
                .parse()
                .map_err(|_| ParseError::Bad("Content-Length"))?,
        ),
        None => None,
    };
    Ok((msg, declared))
}

fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

fn write_headers(out: &mut String, headers: &Headers, body: &[u8]) {
    for (n, v) in headers.iter() {
        if n.eq_ignore_ascii_case("Content-Length") {
            continue;
        }
        let _ = write!(out, "{n}: {v}\r\n");
    }
    let _ = write!(out, "Content-Length: {}\r\n\r\n", body.len());
}

impl Request {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = format!("{} {} SIP/2.0\r\n", self.method, self.uri);
        write_headers(&mut s, &self.headers, &self.body);
        let mut b = s.into_bytes();
        b.extend_from_slice(&self.body);
        b
    }

    pub fn call_id(&self) -> &str {
        self.headers.get("Call-ID").unwrap_or("")
    }

    pub fn cseq(&self) -> (u32, String) {
        self.headers
            .get("CSeq")
            .and_then(parse_cseq)
            .unwrap_or((0, String::new()))
    }

    pub fn top_via(&self) -> Option<Via> {
        self.headers
            .get_all("Via")
            .first()
            .and_then(|v| parse_via(v))
    }

    pub fn from(&self) -> Option<NameAddr> {
        self.headers.get("From").and_then(parse_name_addr)
    }

    pub fn to(&self) -> Option<NameAddr> {
        self.headers.get("To").and_then(parse_name_addr)
    }
}

impl Response {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = format!("SIP/2.0 {} {}\r\n", self.code, self.reason);
        write_headers(&mut s, &self.headers, &self.body);
        let mut b = s.into_bytes();
        b.extend_from_slice(&self.body);
        b
    }

    pub fn cseq(&self) -> (u32, String) {
        self.headers
            .get("CSeq")
            .and_then(parse_cseq)
            .unwrap_or((0, String::new()))
    }

    pub fn top_branch(&self) -> Option<String> {
        self.headers
            .get_all("Via")
            .first()
            .and_then(|v| parse_via(v))
            .and_then(|v| v.branch)
    }
}

pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        406 => "Not Acceptable",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        481 => "Call/Transaction Does Not Exist",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        _ => "Unknown",
    }
}

/// A response to `req` as RFC 3261 §8.2.6 builds it: Via, From, To, Call-ID
/// and CSeq copied, a To tag added when given and absent.
pub fn response_to(req: &Request, code: u16, to_tag: Option<&str>) -> Response {
    let mut headers = Headers::default();
    for v in req.headers.get_all("Via") {
        headers.push("Via", v);
    }
    for n in ["From", "To", "Call-ID", "CSeq"] {
        if let Some(v) = req.headers.get(n) {
            let mut v = v.to_string();
            if n == "To" {
                if let Some(tag) = to_tag {
                    if req.to().is_some_and(|t| t.tag.is_none()) {
                        v = format!("{v};tag={tag}");
                    }
                }
            }
            headers.push(n, v);
        }
    }
    headers.push("Server", concat!("Attendant/", env!("CARGO_PKG_VERSION")));
    Response {
        code,
        reason: reason_phrase(code).to_string(),
        headers,
        body: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:1000@127.0.0.1:5060 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1;rport\r\n\
        f: \"Dana\" <sip:+15550100110@carrier.example>;tag=abc\r\n\
        t: <sip:1000@127.0.0.1>\r\n\
        i: call-1@127.0.0.1\r\n\
        CSeq: 1 INVITE\r\n\
        Contact: <sip:dana@127.0.0.1:5070>\r\n\
        Subject: folded\r\n  line\r\n\
        Content-Type: application/sdp\r\n\
        l: 4\r\n\r\nv=0\r\njunk";

    #[test]
    fn parses_compact_and_folded_headers() {
        let Message::Request(r) = parse(INVITE.as_bytes()).unwrap() else {
            panic!("request")
        };
        assert_eq!(r.method, "INVITE");
        assert_eq!(r.call_id(), "call-1@127.0.0.1");
        assert_eq!(r.headers.get("subject"), Some("folded line"));
        assert_eq!(r.body, b"v=0\r");
        let from = r.from().unwrap();
        assert_eq!(from.tag.as_deref(), Some("abc"));
        assert_eq!(from.display.as_deref(), Some("Dana"));
        assert_eq!(uri_user(&from.uri).as_deref(), Some("+15550100110"));
        let via = r.top_via().unwrap();
        assert_eq!((via.port, via.rport), (Some(5070), true));
        assert_eq!(via.branch.as_deref(), Some("z9hG4bK-1"));
        // Round trip keeps the meaning.
        let again = parse(&r.to_bytes()).unwrap();
        assert_eq!(again, Message::Request(r));
    }

    #[test]
    fn rejects_what_it_cannot_trust() {
        let cases: &[(&str, u16)] = &[
            // No Call-ID.
            ("OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCSeq: 1 OPTIONS\r\n\r\n", 400),
            // CSeq method differs from the request method.
            ("OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n", 400),
            // Content-Length larger than the datagram (RFC 4475 §3.1.2.7-like).
            ("OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 9999\r\n\r\nshort", 400),
            // Negative Content-Length (RFC 4475 §3.1.2.8-like).
            ("OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: -999\r\n\r\n", 400),
            // Unknown protocol version (RFC 4475 §3.3.14-like).
            ("OPTIONS sip:a@b SIP/7.0\r\nVia: SIP/7.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n", 505),
            // Spaces inside the Request-URI (RFC 4475 §3.1.2.11-like).
            ("INVITE sip:user@example.com; lr SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n", 400),
            // Non-numeric CSeq (RFC 4475 §3.1.2.4-like).
            ("OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 3g1 OPTIONS\r\n\r\n", 400),
        ];
        for (text, status) in cases {
            let err = parse(text.as_bytes()).expect_err(text);
            assert_eq!(err.status(), *status, "{text}: {err}");
        }
        // Garbage and truncation never panic.
        for text in [
            "",
            "\r\n\r\n",
            "INVITE\r\n\r\n",
            "SIP/2.0 99999 x\r\n\r\n",
            "\u{0}\u{1}",
        ] {
            assert!(parse(text.as_bytes()).is_err());
        }
        assert!(parse(&[0xff, 0xfe, b'\r', b'\n', b'\r', b'\n']).is_err());
    }

    #[test]
    fn stream_framing_waits_for_the_body() {
        let msg = "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 3\r\n\r\nabc";
        let mut buf = b"\r\n".to_vec();
        buf.extend_from_slice(msg.as_bytes());
        assert_eq!(parse_stream(&buf[..buf.len() - 1]).unwrap(), None);
        let (m, used) = parse_stream(&buf).unwrap().unwrap();
        assert_eq!(used, buf.len());
        let Message::Request(r) = m else { panic!() };
        assert_eq!(r.body, b"abc");
    }

    #[test]
    fn names_and_uris() {
        assert_eq!(
            uri_host_port("sip:agent@10.0.0.5:5080;transport=udp"),
            Some(("10.0.0.5".into(), Some(5080)))
        );
        assert_eq!(
            uri_user("tel:+15550001111").as_deref(),
            Some("+15550001111")
        );
        assert_eq!(
            split_host_port("[::1]:5060"),
            Some(("::1".into(), Some(5060)))
        );
        let na = parse_name_addr("sip:bob@h;tag=9").unwrap();
        assert_eq!(
            (na.uri.as_str(), na.tag.as_deref()),
            ("sip:bob@h", Some("9"))
        );
        assert_eq!(
            split_commas("<sip:a@b;lr>, \"x, y\" <sip:c@d>"),
            vec!["<sip:a@b;lr>".to_string(), "\"x, y\" <sip:c@d>".to_string()]
        );
    }
}
