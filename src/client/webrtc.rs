//! A WebRTC caller: offers to a server's `POST /webrtc/offer`, plays a
//! script in real time over Opus, records what it hears, and times each
//! reply as the caller hears it (last voiced frame sent → first audible bot
//! frame received). The same sans-IO `Session` the server uses, on the
//! calling side, over a real UDP socket. It returns the same `CallReport`
//! as the Twilio caller, so `attendant loadtest` measures both alike.

use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use super::script::{Act, ScriptedCaller, KEY_GAP_MS};
use super::{attach_record, http_base, CallOptions, CallReport, ClientError};
use crate::transport::playout::Playout;
use crate::transport::webrtc::{Event, Output, Session};

/// Calls the server at `opts.url` (its HTTP base, or its Twilio stream URL)
/// over WebRTC and plays `opts.script` (`Steps` or `Turns`).
pub async fn run_call(opts: CallOptions) -> Result<CallReport, ClientError> {
    run(opts, "/webrtc/offer".into(), None).await
}

/// Plays a desk agent: takes waiting call `call_id` at the agent desk
/// (`opts.api_token` signs in) and plays `opts.script` to the caller,
/// recording what the caller says (`bot_audio`: what this side heard).
pub async fn run_agent(opts: CallOptions, call_id: &str) -> Result<CallReport, ClientError> {
    let token = opts.api_token.clone();
    run(opts, format!("/desk/calls/{call_id}/take"), token).await
}

async fn run(
    opts: CallOptions,
    path: String,
    bearer: Option<String>,
) -> Result<CallReport, ClientError> {
    let base = http_base(&opts.url);
    let connect = |reason: String| ClientError::Connect {
        url: base.clone(),
        reason,
    };
    let Some(mut script) = ScriptedCaller::new(&opts.script, opts.linger_ms) else {
        return Err(connect(
            "only scripted steps or turns run over WebRTC".into(),
        ));
    };
    let sock = UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(|e| connect(e.to_string()))?;
    let local = sock.local_addr().map_err(|e| connect(e.to_string()))?;
    let t0 = Instant::now();
    let (mut sess, offer) = Session::offer(&[local], t0).map_err(|e| connect(e.to_string()))?;
    let url = format!("{base}{path}");
    let answer = tokio::task::spawn_blocking(move || {
        let mut req = ureq::post(&url)
            .timeout(Duration::from_secs(10))
            .set("content-type", "application/sdp");
        if let Some(t) = bearer {
            req = req.set("authorization", &format!("Bearer {t}"));
        }
        req.send_string(&offer)
            .map_err(|e| e.to_string())
            .and_then(|r| r.into_string().map_err(|e| e.to_string()))
    })
    .await
    .map_err(|e| connect(e.to_string()))?
    .map_err(&connect)?;
    sess.accept_answer(&answer)
        .map_err(|e| connect(e.to_string()))?;

    let mut rep = CallReport::new(String::new(), String::new());
    let mut texts = Vec::new();
    let mut ended = false;
    let mut buf = vec![0u8; 2048];
    loop {
        let now = Instant::now();
        let now_ms = now.duration_since(t0).as_millis() as u64;
        if now_ms > opts.max_secs * 1000 {
            break;
        }
        sess.handle_timeout(now);
        let wake = loop {
            match sess.poll_output(now) {
                Output::Transmit { to, data, .. } => {
                    let _ = sock.send_to(&data, to).await;
                }
                Output::Timeout(t) => break t,
                Output::Event(Event::Connected) => rep.connect_ms = Some(now_ms),
                Output::Event(Event::Audio(ulaw)) => script.on_frame(now_ms, &ulaw),
                Output::Event(Event::Text(t)) => {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&t) {
                        if v["type"] == "call" {
                            rep.call_sid = v["id"].as_str().unwrap_or_default().to_string();
                        }
                        // The server ended the call (its last audio has gone out).
                        if v["type"] == "ended" {
                            ended = true;
                        }
                    }
                    texts.push(t);
                }
                Output::Event(Event::Closed) => {
                    rep.closed_by_server = Some(1000);
                    break now + Duration::from_secs(3600);
                }
                Output::Event(_) => {}
            }
        };
        if ended {
            rep.closed_by_server.get_or_insert(1000);
        }
        if sess.is_closed() || ended {
            break;
        }
        if sess.is_connected() {
            match script.poll(now_ms) {
                Some(Act::Say(ulaw)) => sess.send_audio(1, &ulaw),
                Some(Act::Keys(keys)) => {
                    let start = t0.elapsed().as_millis() as u64;
                    for (i, k) in keys.chars().enumerate() {
                        if i > 0 {
                            tokio::time::sleep(Duration::from_millis(KEY_GAP_MS)).await;
                        }
                        sess.send_dtmf(k, Instant::now());
                    }
                    script.keys_sent(start);
                }
                Some(Act::HangUp) => break,
                None => {}
            }
        }
        let wake = wake.min(now + Duration::from_millis(20));
        tokio::select! {
            res = sock.recv_from(&mut buf) => {
                if let Ok((n, from)) = res {
                    sess.handle_receive(Instant::now(), from, local, &buf[..n]);
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    }
    hang_up(&mut sess, &sock).await;
    rep.duration_ms = t0.elapsed().as_millis() as u64;
    script.report_into(&mut rep);
    rep.stream_sid = rep.call_sid.clone();
    rep.page_messages = texts;
    attach_record(&mut rep, &base, opts.api_token.as_deref()).await;
    Ok(rep)
}

/// Hangs up like the page does and lets the message go out.
async fn hang_up(sess: &mut Session, sock: &UdpSocket) {
    sess.send_text(r#"{"type":"hangup"}"#.into());
    let until = Instant::now() + Duration::from_millis(200);
    while Instant::now() < until {
        sess.handle_timeout(Instant::now());
        match sess.poll_output(Instant::now()) {
            Output::Transmit { to, data, .. } => {
                let _ = sock.send_to(&data, to).await;
            }
            Output::Timeout(t) => tokio::time::sleep_until(t.min(until).into()).await,
            Output::Event(_) => {}
        }
    }
}
