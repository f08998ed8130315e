//! Thin tokio driver for Twilio: the voice webhook (TwiML) and the Media
//! Streams WebSocket, wired to the sans-IO `StreamSession` and a call pipeline.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::body::{to_bytes, Body};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};

use super::admission::Ticket;
use super::Shared;
use crate::dialogue::CallMeta;
use crate::followup::FollowupError;
use crate::pipeline::{metrics::metrics, spawn_call, CallInput, CallOutput};
use crate::transport::budget::{Admit, MediaBudget};
use crate::transport::playout::{self, Control, Uplink};
use crate::transport::twilio::{signature, twiml, StreamEvent, StreamSession};

/// The `<Parameter>` carrying a call's stream token.
const STREAM_TOKEN: &str = "attendant_token";

/// The URL Twilio requested, as it signs it.
fn public_url(s: &Shared, headers: &HeaderMap, uri: &axum::http::Uri, ws: bool) -> String {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let base = if !s.cfg.server.public_url.is_empty() {
        s.cfg.server.public_url.trim_end_matches('/').to_string()
    } else {
        let host = headers
            .get("x-forwarded-host")
            .or_else(|| headers.get("host"))
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        let proto = headers
            .get("x-forwarded-proto")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("http");
        format!("{proto}://{host}")
    };
    let base = if ws {
        base.replacen("https://", "wss://", 1)
            .replacen("http://", "ws://", 1)
    } else {
        base
    };
    format!("{base}{path}")
}

/// Checks Twilio's signature on a `/twilio/*` request, for every webhook
/// and the stream upgrade in one place (the auth layer calls it): over the
/// URL as Twilio requested it (`wss://` for the upgrade) and a POST's form
/// fields. Without `twilio.auth_token` (a development set-up) every
/// request passes. A bad or missing signature gets 403 before any handler
/// reads the request.
pub(super) async fn signed(s: &Shared, req: Request) -> Result<Request, Response> {
    let token = &s.cfg.twilio.auth_token;
    if token.is_empty() {
        return Ok(req);
    }
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let url = public_url(s, req.headers(), req.uri(), upgrade);
    let (parts, body) = req.into_parts();
    let bytes = if parts.method == Method::POST {
        to_bytes(body, super::BODY_LIMIT)
            .await
            .map_err(|_| (StatusCode::PAYLOAD_TOO_LARGE, "body too large\n").into_response())?
    } else {
        Default::default()
    };
    let fields = Form::parse(&bytes);
    let sig = parts
        .headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok());
    if !sig.is_some_and(|sig| signature::validate(token, &url, &fields.0, sig)) {
        tracing::warn!(path = %parts.uri.path(), "rejected Twilio request: bad or missing X-Twilio-Signature");
        return Err((StatusCode::FORBIDDEN, "invalid signature\n").into_response());
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// A webhook's form fields.
struct Form(Vec<(String, String)>);

impl Form {
    fn parse(body: &[u8]) -> Self {
        Self(url::form_urlencoded::parse(body).into_owned().collect())
    }

    /// The first value of `key`, or "".
    fn get(&self, key: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| v.as_str())
    }
}

pub async fn voice_webhook(State(s): State<Shared>, headers: HeaderMap, body: String) -> Response {
    let form = Form::parse(body.as_bytes());
    let get = |k: &str| form.get(k);
    // A full node (or one draining) says so itself instead of letting the
    // caller hear silence; Twilio then hangs up.
    if let Err(why) = s.admission.check(get("From")) {
        metrics()
            .calls_refused_total
            .with_label_values(&[why.as_str()])
            .inc();
        tracing::warn!(reason = why.as_str(), "call refused at the webhook");
        return ([("content-type", "text/xml")], twiml::busy()).into_response();
    }
    let stream_url = {
        let base = public_url(
            &s,
            &headers,
            &"/twilio/stream".parse().expect("static URI"),
            true,
        );
        base.replacen("ws://", "wss://", 1)
    };
    let mut params = vec![
        ("From", get("From").to_string()),
        ("To", get("To").to_string()),
        ("CallSid", get("CallSid").to_string()),
    ];
    let token = &s.cfg.twilio.auth_token;
    if !token.is_empty() {
        let exp = crate::store::now_ms() / 1000 + s.cfg.twilio.stream_token_ttl_s;
        params.push((
            STREAM_TOKEN,
            signature::stream_token(token, get("CallSid"), exp),
        ));
    }
    let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let xml = twiml::connect_stream(&stream_url, &pairs);
    ([("content-type", "text/xml")], xml).into_response()
}

pub async fn stream_upgrade(State(s): State<Shared>, ws: WebSocketUpgrade) -> Response {
    if s.engines.get().is_none() {
        return (StatusCode::SERVICE_UNAVAILABLE, "models are loading\n").into_response();
    }
    if s.admission.draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    let max = s.cfg.twilio.max_message_bytes.max(1024);
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| drive(socket, s))
}

async fn close(
    ws: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    code: u16,
    reason: &str,
) {
    let _ = ws
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.chars().take(120).collect::<String>().into(),
        })))
        .await;
}

/// A stream's `start` must carry the token its webhook issued (when
/// signatures are on), each token opening one stream.
fn admit_stream(s: &Shared, call_sid: &str, token: &str) -> Result<(), &'static str> {
    let key = &s.cfg.twilio.auth_token;
    if key.is_empty() {
        return Ok(());
    }
    let now = crate::store::now_ms() / 1000;
    if !signature::stream_token_valid(key, call_sid, token, now) {
        return Err("bad_token");
    }
    let ttl = s.cfg.twilio.stream_token_ttl_s;
    if !s
        .replay
        .first_use(&format!("stream:{token}"), now, now, ttl.max(1))
    {
        return Err("bad_token");
    }
    Ok(())
}

async fn refuse(
    tx: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    why: &str,
    code: u16,
) {
    metrics()
        .calls_refused_total
        .with_label_values(&[why])
        .inc();
    tracing::warn!(reason = why, "Media Stream refused");
    close(tx, code, why).await;
}

async fn drive(socket: WebSocket, s: Shared) {
    let Some(engines) = s.engines.get().cloned() else {
        return;
    };
    let (mut tx, mut rx) = socket.split();
    let mut sess = StreamSession::new(s.cfg.twilio.prebuffer_frames);
    // The call's two directions: `up` to the pipeline (audio may drop,
    // control never), `down` its commands.
    let mut up: Option<Uplink> = None;
    let mut down: Option<tokio::sync::mpsc::Receiver<CallOutput>> = None;
    let mut announce: Option<u32> = None;
    let mut announced = 0u32;
    let mut hangup = false;
    let mut sess_call_sid = String::new();
    let tw = &s.cfg.twilio;
    let start_by = Instant::now() + std::time::Duration::from_millis(tw.start_timeout_ms.max(1));
    let mut budget = MediaBudget::new(tw.media_burst_ms, tw.media_close_after_ms);
    // Held for as long as the call lasts.
    let mut _ticket: Option<Ticket> = None;
    loop {
        let deadline = match (sess.poll_timeout(), up.is_none() && _ticket.is_none()) {
            (Some(d), true) => Some(d.min(start_by)),
            (None, true) => Some(start_by),
            (d, false) => d,
        };
        let deadline = playout::retry_at(deadline, up.as_ref());
        tokio::select! {
            msg = rx.next() => match msg {
                Some(Ok(Message::Text(text))) => match sess.handle_text(text.as_str()) {
                    Ok(Some(ev)) => match ev {
                        StreamEvent::Started(info) => {
                            let mut params: BTreeMap<String, String> = info.custom_parameters.clone();
                            let token = params.remove(STREAM_TOKEN).unwrap_or_default();
                            if let Err(why) = admit_stream(&s, &info.call_sid, &token) {
                                refuse(&mut tx, why, 1008).await;
                                break;
                            }
                            let from = params.get("From").cloned().unwrap_or_default();
                            match s.admission.admit(&from) {
                                Ok(t) => _ticket = Some(t),
                                Err(why) => {
                                    refuse(&mut tx, why.as_str(), 1013).await;
                                    break;
                                }
                            }
                            params.insert("streamSid".into(), info.stream_sid.clone());
                            sess_call_sid = info.call_sid.clone();
                            let meta = CallMeta {
                                call_id: if info.call_sid.is_empty() { info.stream_sid.clone() } else { info.call_sid.clone() },
                                channel: "twilio".into(),
                                from: params.get("From").filter(|v| !v.is_empty()).cloned(),
                                to: params.get("To").filter(|v| !v.is_empty()).cloned(),
                                params,
                            };
                            let h = spawn_call(engines.clone(), meta, s.calls.clone());
                            up = Some(Uplink::new(h.input));
                            down = Some(h.output);
                        }
                        StreamEvent::Audio { ulaw, .. } => {
                            match budget.admit(Instant::now(), ulaw.len() as u64 / 8) {
                                Admit::Take => {
                                    if let Some(u) = up.as_mut() {
                                        if !u.audio(ulaw) {
                                            metrics().media_dropped_ms_total.inc_by(20);
                                        }
                                    }
                                }
                                Admit::Drop => metrics().media_dropped_ms_total.inc_by(ulaw.len() as u64 / 8),
                                Admit::Close => {
                                    metrics().protocol_errors_total.inc();
                                    tracing::warn!(dropped_ms = budget.dropped_ms(), "closing Media Stream: audio faster than real time");
                                    close(&mut tx, 1008, "media faster than real time").await;
                                    break;
                                }
                            }
                        }
                        StreamEvent::Dtmf(d) => {
                            if let Some(u) = up.as_mut() {
                                u.control(CallInput::Dtmf(d));
                            }
                        }
                        StreamEvent::MarkPlayed(m) => {
                            if let Some(u) = up.as_mut() {
                                u.control(CallInput::MarkPlayed(m));
                            }
                        }
                        StreamEvent::Stopped => break,
                    },
                    Ok(None) => {}
                    Err(err) => {
                        metrics().protocol_errors_total.inc();
                        tracing::warn!(error = %err, code = err.close_code(), "closing Media Stream: malformed input");
                        close(&mut tx, err.close_code(), &err.to_string()).await;
                        break;
                    }
                },
                Some(Ok(Message::Binary(_))) => {
                    metrics().protocol_errors_total.inc();
                    tracing::warn!("closing Media Stream: binary frame");
                    close(&mut tx, 1003, "binary frames are not part of the protocol").await;
                    break;
                }
                Some(Err(e)) => {
                    // Too large a message or frame, or a broken connection.
                    metrics().protocol_errors_total.inc();
                    tracing::warn!(error = %e, "closing Media Stream");
                    close(&mut tx, 1009, "message too big or malformed").await;
                    break;
                }
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => {}
            },
            out = playout::next_command(&mut down) => match out {
                // The pipeline ended (it hung up, or failed): end the stream.
                None => {
                    while let Some(text) = sess.poll_transmit(Instant::now()) {
                        let _ = tx.send(Message::Text(text.into())).await;
                    }
                    close(&mut tx, 1000, "call ended").await;
                    break;
                }
                Some(out) => {
                    match &out {
                        CallOutput::Audio { reply, .. } if *reply != announced => announce = Some(*reply),
                        CallOutput::Clear => announce = None,
                        _ => {}
                    }
                    match playout::apply(&mut sess, out) {
                        None => {}
                        Some(Control::Hangup) => hangup = true,
                        Some(Control::Transfer { target, priority, .. }) => {
                            // The call leaves the stream when Twilio runs the new
                            // TwiML; the stream then stops by itself.
                            // If Twilio will not take it, the bot takes the caller
                            // back (as on SIP) instead of leaving them on hold.
                            let tw = s.cfg.twilio.clone();
                            let call_sid = sess_call_sid.clone();
                            let input = up.as_ref().map(|u| u.sender());
                            tokio::task::spawn_blocking(move || {
                                match transfer(&tw, &call_sid, &target, priority) {
                                    Ok(()) => tracing::info!(%target, priority, "transfer sent to Twilio"),
                                    Err((status, e)) => {
                                        tracing::warn!(%target, status, error = %e, "transfer not carried out; the bot takes the call back");
                                        if let Some(input) = input {
                                            let _ = input.blocking_send(CallInput::TransferFailed { status });
                                        }
                                    }
                                }
                            });
                        }
                    }
                }
            },
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
        let now = Instant::now();
        if up.is_none() && _ticket.is_none() && now >= start_by {
            refuse(&mut tx, "no_start", 1008).await;
            break;
        }
        while let Some(text) = sess.poll_transmit(now) {
            let is_media = text.starts_with("{\"event\":\"media\"");
            if tx.send(Message::Text(text.into())).await.is_err() {
                break;
            }
            if is_media {
                if let (Some(r), Some(u)) = (announce.take(), up.as_mut()) {
                    announced = r;
                    u.control(CallInput::ReplyStarted { reply: r, at: now });
                }
            }
        }
        if let Some(u) = up.as_mut() {
            u.flush();
        }
        if hangup && sess.queued().is_zero() {
            close(&mut tx, 1000, "call ended").await;
            break;
        }
    }
    if let Some(u) = up {
        u.close(vec![CallInput::Hangup]).await;
    }
}

/// TwiML that puts the caller through to `target`: `queue:NAME` enqueues
/// (as a TaskRouter task carrying priority and the hand-off id when a
/// workflow is configured), `tel:`/`sip:` dial out.
pub fn transfer_twiml(
    tw: &crate::config::TwilioConfig,
    call_sid: &str,
    target: &str,
    priority: i64,
) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let inner = if let Some(q) = target.strip_prefix("queue:") {
        if tw.workflow_sid.is_empty() {
            format!("<Enqueue>{}</Enqueue>", esc(q))
        } else {
            let attrs = serde_json::json!({
                "queue": q,
                "priority": priority,
                "handoff_call_id": call_sid,
            });
            format!(
                "<Enqueue workflowSid=\"{}\"><Task priority=\"{priority}\">{}</Task></Enqueue>",
                esc(&tw.workflow_sid),
                esc(&attrs.to_string())
            )
        }
    } else if let Some(n) = target.strip_prefix("tel:") {
        format!("<Dial>{}</Dial>", esc(n))
    } else if target.starts_with("sip:") {
        format!("<Dial><Sip>{}</Sip></Dial>", esc(target))
    } else {
        format!("<Enqueue>{}</Enqueue>", esc(target))
    };
    format!("<Response>{inner}</Response>")
}

/// Updates the live call through Twilio's REST API with the transfer TwiML.
/// A failure comes with the status to report to the call (Twilio's own, or
/// 503 when it was never asked).
pub fn transfer(
    tw: &crate::config::TwilioConfig,
    call_sid: &str,
    target: &str,
    priority: i64,
) -> Result<(), (u16, String)> {
    if tw.account_sid.is_empty() || tw.auth_token.is_empty() {
        return Err((503, "twilio.account_sid/auth_token not configured".into()));
    }
    if call_sid.is_empty() {
        return Err((503, "the stream carried no CallSid".into()));
    }
    let url = format!(
        "{}/2010-04-01/Accounts/{}/Calls/{}.json",
        tw.api_base.trim_end_matches('/'),
        tw.account_sid,
        call_sid
    );
    let auth = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{}:{}", tw.account_sid, tw.auth_token),
    );
    let twiml = transfer_twiml(tw, call_sid, target, priority);
    ureq::AgentBuilder::new()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .post(&url)
        .set("authorization", &format!("Basic {auth}"))
        .send_form(&[("Twiml", twiml.as_str())])
        .map(|_| ())
        .map_err(|e| match e {
            ureq::Error::Status(c, _) => (c, format!("Twilio answered {c}")),
            e => (503, format!("Twilio unreachable: {}", e.kind())),
        })
}

/// Twilio's inbound-SMS webhook: a customer's reply to a follow-up.
pub async fn sms_webhook(State(s): State<Shared>, body: String) -> Response {
    let form = Form::parse(body.as_bytes());
    let (from, text) = (form.get("From"), form.get("Body"));
    if from.is_empty() {
        return (StatusCode::BAD_REQUEST, "From is required\n").into_response();
    }
    let Some(f) = super::followups(&s) else {
        return super::followups_loading();
    };
    match f.handle_reply(from, text, "sms").await {
        // Any answer goes out through the outbox, not in this response. A
        // text from a number no customer has is not Twilio's error: an
        // error status would only fill its console with failed webhooks.
        Ok(_) | Err(FollowupError::UnknownCustomer) => (
            [("content-type", "text/xml")],
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response/>\n",
        )
            .into_response(),
        Err(e) => super::followup_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_twiml_by_target() {
        let mut tw = crate::config::TwilioConfig::default();
        assert_eq!(
            transfer_twiml(&tw, "CA1", "queue:care", 90),
            "<Response><Enqueue>care</Enqueue></Response>"
        );
        assert_eq!(
            transfer_twiml(&tw, "CA1", "tel:+15550001111", 0),
            "<Response><Dial>+15550001111</Dial></Response>"
        );
        assert!(transfer_twiml(&tw, "CA1", "sip:agent@pbx", 0).contains("<Sip>sip:agent@pbx</Sip>"));
        tw.workflow_sid = "WW1".into();
        let x = transfer_twiml(&tw, "CA1", "queue:priority_care", 90);
        assert!(
            x.contains("workflowSid=\"WW1\"") && x.contains("priority=\"90\""),
            "{x}"
        );
        assert!(x.contains("handoff_call_id&quot;:&quot;CA1"), "{x}");
    }
}
