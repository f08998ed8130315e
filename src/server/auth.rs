//! Who may use which route: one axum layer in front of every handler.
//!
//! - Twilio's webhooks and stream upgrade (`/twilio/*`) carry Twilio's own
//!   signature, checked here for all of them (`twilio::signed`); the
//!   browser's phone line, `/healthz` and sign-in are open.
//! - Everything else needs a principal: an API token (`Authorization:
//!   Bearer …`, for machines) or a sign-in session cookie (for people), with a
//!   role the route allows. No credentials → 401, wrong role → 403, and in
//!   neither case any data.
//! - Business events and inbound messages may instead be signed like our
//!   outgoing webhooks (`X-Attendant-Signature: t=…,v1=HMAC-SHA256`), so a
//!   shop system can post without holding a token; a signature is accepted
//!   once, within `auth.signature_tolerance_s`.
//! - A cookie-authenticated request that changes something must come from
//!   the server's own origin (CSRF); other origins get CORS headers only when
//!   listed in `auth.allowed_origins`.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::time::Instant;

use axum::body::{to_bytes, Body};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::signin::Refused;
use super::Shared;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "attendant_session";
/// Largest body the signature check reads (events and messages are small).
const SIGNED_BODY_LIMIT: usize = 64 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// A token with the admin role taken from the configuration or the
    /// environment (`ATTENDANT__AUTH__ADMIN_TOKEN`); never stored.
    pub admin_token: String,
    /// When the store holds no token and no person, and `admin_token` is
    /// empty, the first start writes a fresh admin token to this file
    /// (mode 0600) so the operator has a way in. Empty: no bootstrap.
    pub bootstrap_token_file: String,
    /// HMAC-SHA256 key for signed `POST /events` and `/messages/inbound`.
    pub inbound_secret: String,
    pub signature_tolerance_s: i64,
    pub session_hours: i64,
    /// Origins (`https://desk.example.com`) whose pages may call the API.
    pub allowed_origins: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            admin_token: String::new(),
            bootstrap_token_file: "data/admin.token".into(),
            inbound_secret: String::new(),
            signature_tolerance_s: 300,
            session_hours: 8,
            allowed_origins: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including tokens and people.
    Admin,
    /// Running the service: metrics, SIP status, KPIs, call records.
    Ops,
    /// Contact-center supervisors: calls, customers, KPIs, follow-ups.
    Supervisor,
    /// Human agents: calls, hand-off packets and the customers behind them.
    Agent,
    /// Other systems: business events and inbound messages.
    Integration,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Ops,
        Role::Supervisor,
        Role::Agent,
        Role::Integration,
    ];
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Admin => "admin",
            Role::Ops => "ops",
            Role::Supervisor => "supervisor",
            Role::Agent => "agent",
            Role::Integration => "integration",
        })
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.to_string() == s)
            .ok_or_else(|| {
                format!("unknown role {s:?} (admin, ops, supervisor, agent, integration)")
            })
    }
}

/// Who made a request; handlers may read it from the request extensions.
#[derive(Debug, Clone, Serialize)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    /// Came with a session cookie (a person's browser), not a token.
    #[serde(skip)]
    pub by_cookie: bool,
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Open,
    /// A phone line (the browser's): open like a phone number, capped by
    /// admission like any call.
    Telephony,
    /// Twilio's `X-Twilio-Signature` over the URL and form fields.
    Twilio,
    /// A principal with one of these roles (admin always passes).
    Roles(&'static [Role]),
    /// An integration token or a valid `X-Attendant-Signature`.
    Signed,
}

use Role::*;

/// The policy, in one place.
pub fn need(method: &Method, path: &str) -> Need {
    let seg: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, seg.as_slice()) {
        (_, ["healthz" | "livez" | "readyz"]) => Need::Open,
        // The caller page and its signalling are the browser's phone line:
        // open like a phone number, capped by admission like any call.
        (&Method::GET, [""]) | (&Method::GET, ["webrtc", "config"]) => Need::Telephony,
        (&Method::POST, ["webrtc", "offer"]) => Need::Telephony,
        // WHIP's hang-up: the call's unguessable resource URL is the capability.
        (&Method::DELETE, ["webrtc", "calls", _]) => Need::Telephony,
        (_, ["auth", "login"]) | (_, ["auth", "logout"]) => Need::Open,
        // The desk page is a sign-in form and a script: it holds no data.
        // Everything it then loads or does needs an agent's session.
        (&Method::GET, ["desk"]) | (&Method::GET, ["rtc.js"]) => Need::Open,
        // What the bot missed, and teaching it: supervisors.
        (_, ["desk", "review", ..]) => Need::Roles(&[Supervisor]),
        (_, ["desk", ..]) => Need::Roles(&[Supervisor, Agent]),
        (_, ["twilio", ..]) => Need::Twilio,
        (_, ["metrics"]) | (_, ["sip"]) => Need::Roles(&[Ops]),
        (_, ["kpis"]) => Need::Roles(&[Ops, Supervisor]),
        (&Method::GET, ["calls"]) | (&Method::GET, ["calls", _]) => {
            Need::Roles(&[Ops, Supervisor, Agent])
        }
        (&Method::GET, ["calls", _, "handoff"]) | (&Method::GET, ["calls", _, "interaction"]) => {
            Need::Roles(&[Supervisor, Agent])
        }
        (&Method::GET, ["customers", _]) => Need::Roles(&[Supervisor, Agent]),
        (&Method::POST, ["events"]) | (&Method::POST, ["messages", "inbound"]) => Need::Signed,
        (&Method::GET, ["outbox"]) | (&Method::GET, ["threads"]) | (&Method::GET, ["tickets"]) => {
            Need::Roles(&[Supervisor])
        }
        (_, ["auth", "whoami"]) => Need::Roles(&Role::ALL),
        // Anything else (including paths that do not exist) answers only to
        // the admin, so probing reveals nothing.
        _ => Need::Roles(&[]),
    }
}

/// SHA-256 of a secret, hex: how tokens and session ids are looked up.
pub fn hash_secret(secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"attendant-token\0");
    h.update(secret.as_bytes());
    hex::encode(h.finalize())
}

/// A fresh 256-bit secret from the operating system's CSPRNG, URL-safe.
pub fn new_secret(prefix: &str) -> String {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("the operating system's random source");
    format!(
        "{prefix}{}",
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, b)
    )
}

/// Argon2id (the crate's defaults: 19 MiB, 2 passes) with a random salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| e.to_string())?;
    let salt = SaltString::encode_b64(&b).map_err(|e| e.to_string())?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

pub fn password_ok(password: &str, hash: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(hash)
        .map(|h| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Signatures seen recently, so a captured signed request is taken once.
#[derive(Default)]
pub struct ReplayGuard {
    seen: Mutex<Seen>,
}

/// Signatures by first use, and in the order they came (for expiry).
#[derive(Default)]
struct Seen {
    set: HashMap<String, i64>,
    order: VecDeque<(i64, String)>,
}

impl ReplayGuard {
    /// Records `sig` at `t`; false when it was already used. Entries older
    /// than the tolerance are forgotten (they fail the time check anyway),
    /// and at most `cap` are kept.
    pub fn first_use(&self, sig: &str, t: i64, now: i64, tolerance: i64) -> bool {
        const CAP: usize = 100_000;
        let mut g = self.seen.lock();
        let Seen { set, order } = &mut *g;
        while let Some((t0, s)) = order.front() {
            if *t0 >= now - tolerance && order.len() < CAP {
                break;
            }
            set.remove(s);
            order.pop_front();
        }
        if set.contains_key(sig) {
            return false;
        }
        set.insert(sig.to_string(), t);
        order.push_back((t, sig.to_string()));
        true
    }
}

fn unix_now() -> i64 {
    crate::store::now_ms() / 1000
}

/// Checks `X-Attendant-Signature` over `body` at `now` (Unix seconds).
pub fn signature_valid(
    cfg: &AuthConfig,
    replay: &ReplayGuard,
    header: &str,
    body: &[u8],
    now: i64,
) -> bool {
    if cfg.inbound_secret.is_empty() {
        return false;
    }
    let t = header
        .split(',')
        .find_map(|p| p.strip_prefix("t="))
        .and_then(|t| t.parse::<i64>().ok());
    let Some(t) = t else { return false };
    if (now - t).abs() > cfg.signature_tolerance_s {
        return false;
    }
    crate::handoff::verify(&cfg.inbound_secret, header, body)
        && replay.first_use(header, t, now, cfg.signature_tolerance_s)
}

fn deny(status: StatusCode, why: &str) -> Response {
    let mut r = (status, format!("{why}\n")).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"attendant\""),
        );
    }
    r
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// The principal behind a request's credentials, if any.
async fn principal(s: &Shared, headers: &HeaderMap) -> Result<Option<Principal>, Response> {
    if let Some(tok) = bearer(headers) {
        let admin = &s.cfg.auth.admin_token;
        if !admin.is_empty() && bool::from(tok.as_bytes().ct_eq(admin.as_bytes())) {
            return Ok(Some(Principal {
                name: "admin (configured)".into(),
                role: Admin,
                by_cookie: false,
            }));
        }
        let h = hash_secret(tok);
        return match s.services.store.token_role(&h).await {
            Ok(Some(role)) => Ok(role.parse().ok().map(|role| Principal {
                name: "token".into(),
                role,
                by_cookie: false,
            })),
            Ok(None) => Ok(None),
            Err(e) => Err(super::store_error(e)),
        };
    }
    if let Some(sid) = cookie(headers, SESSION_COOKIE) {
        return match s.services.store.session(&hash_secret(sid)).await {
            Ok(Some((user, role))) => Ok(role.parse().ok().map(|role| Principal {
                name: user,
                role,
                by_cookie: true,
            })),
            Ok(None) => Ok(None),
            Err(e) => Err(super::store_error(e)),
        };
    }
    Ok(None)
}

/// The request's `Origin` when it is not this server's own.
fn foreign_origin(headers: &HeaderMap) -> Option<String> {
    let origin = headers.get(header::ORIGIN)?.to_str().ok()?;
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or(origin);
    (origin_host != host).then(|| origin.to_string())
}

fn allow_origin(cfg: &AuthConfig, origin: &str, resp: &mut Response) {
    if cfg.allowed_origins.iter().any(|o| o == origin) {
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(origin) {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        }
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type, x-attendant-signature"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST"),
        );
        h.insert(header::VARY, HeaderValue::from_static("origin"));
    }
}

/// The layer: authenticates, authorizes, and guards cookies against CSRF.
pub async fn layer(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let cfg = &s.cfg.auth;
    let foreign = foreign_origin(req.headers());
    if req.method() == Method::OPTIONS {
        let mut r = StatusCode::NO_CONTENT.into_response();
        if let Some(o) = &foreign {
            allow_origin(cfg, o, &mut r);
        }
        return r;
    }
    let need = need(req.method(), req.uri().path());
    let mut resp = match need {
        Need::Open | Need::Telephony => next.run(req).await,
        Need::Twilio => match super::twilio::signed(&s, req).await {
            Ok(req) => next.run(req).await,
            Err(refused) => return refused,
        },
        Need::Roles(roles) => {
            let p = match principal(&s, req.headers()).await {
                Ok(Some(p)) => p,
                Ok(None) => return deny(StatusCode::UNAUTHORIZED, "authentication required"),
                Err(r) => return r,
            };
            if p.role != Admin && !roles.contains(&p.role) {
                return deny(StatusCode::FORBIDDEN, "this role may not use this route");
            }
            let changes = !matches!(*req.method(), Method::GET | Method::HEAD);
            if p.by_cookie && changes && foreign.is_some() {
                return deny(StatusCode::FORBIDDEN, "cross-site request refused");
            }
            let mut req = req;
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        Need::Signed => {
            match principal(&s, req.headers()).await {
                Err(r) => return r,
                Ok(Some(p)) if matches!(p.role, Admin | Integration) && !p.by_cookie => {
                    let mut req = req;
                    req.extensions_mut().insert(p);
                    return finish(cfg, foreign.as_deref(), next.run(req).await);
                }
                Ok(Some(_)) => {
                    return deny(StatusCode::FORBIDDEN, "this role may not use this route")
                }
                Ok(None) => {}
            }
            let Some(sig) = req
                .headers()
                .get("x-attendant-signature")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
            else {
                return deny(StatusCode::UNAUTHORIZED, "authentication required");
            };
            let (parts, body) = req.into_parts();
            let Ok(bytes) = to_bytes(body, SIGNED_BODY_LIMIT).await else {
                return deny(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
            };
            if !signature_valid(cfg, &s.replay, &sig, &bytes, unix_now()) {
                tracing::warn!(path = %parts.uri.path(), "rejected signed request: bad, stale or replayed signature");
                return deny(StatusCode::UNAUTHORIZED, "invalid signature");
            }
            let mut req = Request::from_parts(parts, Body::from(bytes));
            req.extensions_mut().insert(Principal {
                name: "signed".into(),
                role: Integration,
                by_cookie: false,
            });
            next.run(req).await
        }
    };
    if let Some(o) = &foreign {
        allow_origin(cfg, o, &mut resp);
    }
    resp
}

fn finish(cfg: &AuthConfig, foreign: Option<&str>, mut resp: Response) -> Response {
    if let Some(o) = foreign {
        allow_origin(cfg, o, &mut resp);
    }
    resp
}

#[derive(Deserialize)]
pub struct Login {
    user: String,
    password: String,
}

/// `POST /auth/login {"user", "password"}` → a session cookie (HttpOnly,
/// SameSite=Strict; Secure when the public URL is HTTPS).
///
/// Guessing is slowed per name and per address, and only a few Argon2
/// checks run at once (`signin`): 429 with `Retry-After` while a name or
/// address must wait, 503 while every check is taken.
pub async fn login(
    State(s): State<Shared>,
    peer: Option<axum::Extension<ConnectInfo<std::net::SocketAddr>>>,
    Json(l): Json<Login>,
) -> Response {
    let from = peer.map(|axum::Extension(ConnectInfo(a))| a.ip());
    let _check = match s.sign_in.admit(&l.user, from, Instant::now()).await {
        Ok(permit) => permit,
        Err(Refused::Wait(w)) => {
            tracing::warn!("sign-in refused: too many recent failures");
            let secs = w.as_secs() + 1;
            let mut r = deny(
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed sign-ins; try again later",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            return r;
        }
        Err(Refused::Busy) => {
            let mut r = deny(StatusCode::SERVICE_UNAVAILABLE, "busy; try again");
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
        }
    };
    let st = &s.services.store;
    let found = match st.user(&l.user).await {
        Ok(u) => u,
        Err(e) => return super::store_error(e),
    };
    let pw = l.password.clone();
    let hash = found.as_ref().map(|(_, h)| h.clone());
    // Argon2 is slow on purpose: off the async workers. An unknown user
    // costs the same as a wrong password, so timing reveals nothing.
    let ok = tokio::task::spawn_blocking(move || match hash {
        Some(h) => password_ok(&pw, &h),
        None => {
            let _ = hash_password(&pw);
            false
        }
    })
    .await
    .unwrap_or(false);
    s.sign_in.outcome(&l.user, from, ok, Instant::now());
    let Some((role, _)) = found.filter(|_| ok) else {
        tracing::warn!("sign-in refused");
        return deny(StatusCode::UNAUTHORIZED, "wrong user or password");
    };
    let sid = new_secret("");
    let hours = s.cfg.auth.session_hours.max(1);
    let expires = crate::store::now_ms() + hours * 3_600_000;
    if let Err(e) = st
        .open_session(&hash_secret(&sid), &l.user, &role, expires)
        .await
    {
        return super::store_error(e);
    }
    let secure = if s.cfg.server.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{SESSION_COOKIE}={sid}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
        hours * 3600
    );
    (
        [(header::SET_COOKIE, cookie)],
        Json(serde_json::json!({"user": l.user, "role": role})),
    )
        .into_response()
}

pub async fn logout(State(s): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(sid) = cookie(&headers, SESSION_COOKIE) {
        if let Err(e) = s.services.store.close_session(&hash_secret(sid)).await {
            return super::store_error(e);
        }
    }
    (
        [(
            header::SET_COOKIE,
            format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
        )],
        StatusCode::NO_CONTENT,
    )
        .into_response()
}

pub async fn whoami(p: axum::Extension<Principal>) -> Json<Principal> {
    Json(p.0)
}

/// First start with nobody able to sign in: mint an admin token into a
/// file only the server's user can read, and say where it is (not what).
pub async fn bootstrap(s: &crate::store::Store, cfg: &AuthConfig) -> anyhow::Result<()> {
    if !cfg.admin_token.is_empty() || cfg.bootstrap_token_file.is_empty() {
        return Ok(());
    }
    if s.token_count().await? > 0 {
        return Ok(());
    }
    let path = std::path::Path::new(&cfg.bootstrap_token_file);
    let token = new_secret("att_");
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        writeln!(f, "{token}")?;
    }
    s.put_token("admin", "admin", &hash_secret(&token)).await?;
    tracing::warn!(
        file = %path.display(),
        "no API token existed: an admin token was written to this file (send it as `Authorization: Bearer …`; `attendant token` makes more)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_covers_every_data_route() {
        let g = Method::GET;
        assert_eq!(need(&g, "/healthz"), Need::Open);
        assert_eq!(need(&g, "/livez"), Need::Open);
        assert_eq!(need(&g, "/readyz"), Need::Open);
        assert_eq!(need(&Method::POST, "/twilio/voice"), Need::Twilio);
        for p in [
            "/calls",
            "/calls/CA1",
            "/calls/CA1/handoff",
            "/customers/c1",
            "/outbox",
            "/threads",
            "/tickets",
            "/kpis",
            "/metrics",
            "/sip",
            "/desk/state",
            "/desk/events",
            "/nothing/here",
        ] {
            assert!(matches!(need(&g, p), Need::Roles(_)), "{p}");
        }
        assert_eq!(need(&g, "/desk"), Need::Open);
        for p in ["/desk/calls/c1/take", "/desk/calls/c1/return"] {
            assert_eq!(
                need(&Method::POST, p),
                Need::Roles(&[Supervisor, Agent]),
                "{p}"
            );
        }
        // Agents take calls; supervisors review and label what the bot missed.
        assert_eq!(need(&g, "/desk/review"), Need::Roles(&[Supervisor]));
        assert_eq!(
            need(&Method::POST, "/desk/review/labels"),
            Need::Roles(&[Supervisor])
        );
        assert_eq!(need(&Method::POST, "/events"), Need::Signed);
        assert_eq!(need(&Method::POST, "/messages/inbound"), Need::Signed);
        // Agents see calls and customers, not the follow-up outbox.
        let Need::Roles(r) = need(&g, "/outbox") else {
            panic!()
        };
        assert!(!r.contains(&Agent) && !r.contains(&Ops));
        let Need::Roles(r) = need(&g, "/customers/c1") else {
            panic!()
        };
        assert!(!r.contains(&Ops) && !r.contains(&Integration));
    }

    #[test]
    fn signatures_are_fresh_and_single_use() {
        let cfg = AuthConfig {
            inbound_secret: "k".into(),
            ..Default::default()
        };
        let replay = ReplayGuard::default();
        let now = 1_800_000_000;
        let h = crate::handoff::sign("k", now - 10, b"{}");
        assert!(signature_valid(&cfg, &replay, &h, b"{}", now));
        assert!(!signature_valid(&cfg, &replay, &h, b"{}", now), "replay");
        let old = crate::handoff::sign("k", now - 301, b"{}");
        assert!(!signature_valid(&cfg, &replay, &old, b"{}", now), "stale");
        let other = crate::handoff::sign("x", now, b"{}");
        assert!(!signature_valid(&cfg, &replay, &other, b"{}", now), "key");
        let unset = AuthConfig::default();
        let h = crate::handoff::sign("", now, b"{}");
        assert!(
            !signature_valid(&unset, &replay, &h, b"{}", now),
            "no secret"
        );
    }

    #[test]
    fn secrets_and_passwords() {
        let a = new_secret("att_");
        assert!(a.starts_with("att_") && a.len() > 40);
        assert_ne!(a, new_secret("att_"));
        assert_eq!(hash_secret(&a), hash_secret(&a));
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(password_ok("correct horse", &h));
        assert!(!password_ok("wrong", &h));
        assert!(!password_ok("x", "not a hash"));
        assert_eq!("supervisor".parse::<Role>(), Ok(Supervisor));
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn cookies_and_origins() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; attendant_session=xyz".parse().unwrap(),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("xyz"));
        h.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        h.insert(header::ORIGIN, "http://127.0.0.1:8080".parse().unwrap());
        assert_eq!(foreign_origin(&h), None);
        h.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert_eq!(foreign_origin(&h).as_deref(), Some("https://evil.example"));
    }
}
