//! Thin tokio driver for Twilio: the voice webhook (TwiML) and the Media
//! Streams WebSocket, wired to the sans-IO `StreamSession` and a call pipeline.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};

use super::Shared;
use crate::dialogue::CallMeta;
use crate::pipeline::{metrics::metrics, spawn_call, CallHandle, CallInput, CallOutput};
use crate::transport::twilio::{signature, twiml, StreamEvent, StreamSession};

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

fn signature_ok(s: &Shared, headers: &HeaderMap, url: &str, params: &[(String, String)]) -> bool {
    let token = &s.cfg.twilio.auth_token;
    if token.is_empty() {
        return true;
    }
    let Some(sig) = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    signature::validate(token, url, params, sig)
}

pub async fn voice_webhook(
    State(s): State<Shared>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    body: String,
) -> Response {
    let params: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let url = public_url(&s, &headers, &uri, false);
    if !signature_ok(&s, &headers, &url, &params) {
        tracing::warn!("rejected /twilio/voice: bad or missing X-Twilio-Signature");
        return (StatusCode::FORBIDDEN, "invalid signature\n").into_response();
    }
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let stream_url = {
        let base = public_url(
            &s,
            &headers,
            &"/twilio/stream".parse().expect("static URI"),
            true,
        );
        base.replacen("ws://", "wss://", 1)
    };
    let xml = twiml::connect_stream(
        &stream_url,
        &[
            ("From", get("From")),
            ("To", get("To")),
            ("CallSid", get("CallSid")),
        ],
    );
    ([("content-type", "text/xml")], xml).into_response()
}

pub async fn stream_upgrade(
    State(s): State<Shared>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    ws: WebSocketUpgrade,
) -> Response {
    let url = public_url(&s, &headers, &uri, true);
    if !signature_ok(&s, &headers, &url, &[]) {
        tracing::warn!("rejected /twilio/stream upgrade: bad or missing X-Twilio-Signature");
        return (StatusCode::FORBIDDEN, "invalid signature\n").into_response();
    }
    if s.engines.get().is_none() {
        return (StatusCode::SERVICE_UNAVAILABLE, "models are loading\n").into_response();
    }
    ws.on_upgrade(move |socket| drive(socket, s))
}

async fn next_output(call: &mut Option<CallHandle>) -> Option<CallOutput> {
    match call {
        Some(c) => c.output.recv().await,
        None => std::future::pending().await,
    }
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

async fn drive(socket: WebSocket, s: Shared) {
    let Some(engines) = s.engines.get().cloned() else {
        return;
    };
    let (mut tx, mut rx) = socket.split();
    let mut sess = StreamSession::new(s.cfg.twilio.prebuffer_frames);
    let mut call: Option<CallHandle> = None;
    let mut announce: Option<u32> = None;
    let mut announced = 0u32;
    let mut hangup = false;
    loop {
        let deadline = sess.poll_timeout();
        tokio::select! {
            msg = rx.next() => match msg {
                Some(Ok(Message::Text(text))) => match sess.handle_text(text.as_str()) {
                    Ok(Some(ev)) => match ev {
                        StreamEvent::Started(info) => {
                            let mut params: BTreeMap<String, String> = info.custom_parameters.clone();
                            params.insert("streamSid".into(), info.stream_sid.clone());
                            let meta = CallMeta {
                                call_id: if info.call_sid.is_empty() { info.stream_sid.clone() } else { info.call_sid.clone() },
                                channel: "twilio".into(),
                                from: params.get("From").filter(|v| !v.is_empty()).cloned(),
                                to: params.get("To").filter(|v| !v.is_empty()).cloned(),
                                params,
                            };
                            call = Some(spawn_call(engines.clone(), meta, s.calls.clone()));
                        }
                        StreamEvent::Audio { ulaw, .. } => {
                            if let Some(c) = &call {
                                let _ = c.input.send(CallInput::Audio(ulaw)).await;
                            }
                        }
                        StreamEvent::Dtmf(d) => {
                            if let Some(c) = &call {
                                let _ = c.input.send(CallInput::Dtmf(d)).await;
                            }
                        }
                        StreamEvent::MarkPlayed(m) => {
                            if let Some(c) = &call {
                                let _ = c.input.send(CallInput::MarkPlayed(m)).await;
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
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            out = next_output(&mut call) => match out {
                // The pipeline ended (it hung up, or failed): end the stream.
                None => {
                    call = None;
                    while let Some(text) = sess.poll_transmit(Instant::now()) {
                        let _ = tx.send(Message::Text(text.into())).await;
                    }
                    close(&mut tx, 1000, "call ended").await;
                    break;
                }
                Some(out) => match out {
                CallOutput::Audio { reply, ulaw } => {
                    sess.send_audio(&ulaw);
                    if reply != announced {
                        announce = Some(reply);
                    }
                }
                CallOutput::Mark(m) => sess.send_mark(m),
                CallOutput::Pause => sess.set_paused(true),
                CallOutput::Resume => sess.set_paused(false),
                CallOutput::Clear => {
                    sess.set_paused(false);
                    let _ = sess.clear();
                    announce = None;
                }
                CallOutput::Hangup => hangup = true,
                CallOutput::Transfer { target, .. } => {
                    // Twilio transfers go through the REST API (call update with
                    // <Dial>/<Enqueue>); until that is configured, log it.
                    tracing::info!(%target, "transfer requested");
                }
            }},
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
        let now = Instant::now();
        while let Some(text) = sess.poll_transmit(now) {
            let is_media = text.starts_with("{\"event\":\"media\"");
            if tx.send(Message::Text(text.into())).await.is_err() {
                break;
            }
            if is_media {
                if let (Some(r), Some(c)) = (announce.take(), &call) {
                    announced = r;
                    let _ = c
                        .input
                        .try_send(CallInput::ReplyStarted { reply: r, at: now });
                }
            }
        }
        if hangup && sess.queued().is_zero() {
            close(&mut tx, 1000, "call ended").await;
            break;
        }
    }
    if let Some(c) = &call {
        let _ = c.input.send(CallInput::Hangup).await;
    }
}
