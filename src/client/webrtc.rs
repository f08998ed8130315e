//! A WebRTC caller: offers to a server's `POST /webrtc/offer`, speaks a
//! script in real time over Opus, records what it hears, and times each
//! reply as the caller hears it (last voiced frame sent → first audible bot
//! frame received). The same sans-IO `Session` the server uses, on the
//! calling side, over a real UDP socket.

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::net::UdpSocket;

use super::{ClientError, Step};
use crate::media::mulaw;
use crate::transport::playout::Playout;
use crate::transport::webrtc::{Event, Output, Session};

/// RMS (16-bit) above which a received frame counts as the bot talking.
const AUDIBLE: f64 = 300.0;

#[derive(Debug, Clone, Serialize, Default)]
pub struct WebrtcReport {
    /// Offer posted → ICE and DTLS up.
    pub connect_ms: u64,
    /// Offer posted → first audible frame of the greeting.
    pub greeting_ms: Option<u64>,
    /// Per spoken step (not keys): last voiced frame sent → first audible
    /// reply frame.
    pub voice_to_voice_ms: Vec<u64>,
    /// Per interruption: speech onset → the bot's last audible frame.
    pub barge_in_stop_ms: Vec<u64>,
    /// Everything heard, 8 kHz μ-law, one entry per received frame.
    #[serde(skip)]
    pub heard: Vec<u8>,
    /// Text the server sent over the data channel (transcript lines).
    pub texts: Vec<String>,
    pub call_id: Option<String>,
}

fn rms(ulaw: &[u8]) -> f64 {
    let s: f64 = ulaw
        .iter()
        .map(|&b| (mulaw::decode(b) as f64).powi(2))
        .sum();
    (s / ulaw.len().max(1) as f64).sqrt()
}

fn to_ulaw(samples: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(samples.len());
    mulaw::encode_from_f32(samples, &mut out);
    out
}

/// Last sample index above the speech floor, in 8 kHz samples.
fn last_voiced(samples: &[f32]) -> usize {
    samples
        .chunks(160)
        .enumerate()
        .filter(|(_, c)| {
            let e: f32 = c.iter().map(|x| x * x).sum::<f32>() / c.len().max(1) as f32;
            e.sqrt() > 0.01
        })
        .map(|(i, c)| i * 160 + c.len())
        .next_back()
        .unwrap_or(samples.len())
}

/// Calls `base` (e.g. `http://127.0.0.1:8080`) and runs `steps`, each once
/// the bot has been quiet `quiet_ms` after it last spoke; hangs up `tail`
/// after the last reply ended (or at `max`).
pub async fn call(
    base: &str,
    steps: Vec<Step>,
    quiet_ms: u64,
    tail: Duration,
    max: Duration,
) -> Result<WebrtcReport, ClientError> {
    let connect = |reason: String| ClientError::Connect {
        url: base.to_string(),
        reason,
    };
    let sock = UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(|e| connect(e.to_string()))?;
    let local = sock.local_addr().map_err(|e| connect(e.to_string()))?;
    let t0 = Instant::now();
    let (mut sess, offer) = Session::offer(&[local], t0).map_err(|e| connect(e.to_string()))?;
    let url = format!("{}/webrtc/offer", base.trim_end_matches('/'));
    let u = url.clone();
    let answer = tokio::task::spawn_blocking(move || {
        ureq::post(&u)
            .set("content-type", "application/sdp")
            .send_string(&offer)
            .map_err(|e| e.to_string())
            .and_then(|r| r.into_string().map_err(|e| e.to_string()))
    })
    .await
    .map_err(|e| connect(e.to_string()))?
    .map_err(connect)?;
    sess.accept_answer(&answer)
        .map_err(|e| connect(e.to_string()))?;

    let mut r = WebrtcReport::default();
    let mut steps = std::collections::VecDeque::from(steps);
    let mut last_audible: Option<Instant> = None;
    // When the last voiced frame of the current utterance goes out, and
    // whether its reply has been heard.
    let mut speaking_until: Option<Instant> = None;
    let mut waiting_reply: Option<Instant> = None;
    let mut done_at: Option<Instant> = None;
    // When the bot's current stretch of speech began, and an interruption
    // we are timing (its onset).
    let mut spurt_start: Option<Instant> = None;
    let mut interrupted_at: Option<Instant> = None;
    let mut buf = vec![0u8; 2048];
    loop {
        let now = Instant::now();
        if now.duration_since(t0) > max {
            break;
        }
        if done_at.is_some_and(|d| now >= d) {
            break;
        }
        sess.handle_timeout(now);
        let wake = loop {
            match sess.poll_output(now) {
                Output::Transmit { to, data, .. } => {
                    let _ = sock.send_to(&data, to).await;
                }
                Output::Timeout(t) => break t,
                Output::Event(e) => match e {
                    Event::Connected => r.connect_ms = now.duration_since(t0).as_millis() as u64,
                    Event::Audio(ulaw) => {
                        let loud = rms(&ulaw) > AUDIBLE;
                        r.heard.extend_from_slice(&ulaw);
                        if loud {
                            if last_audible
                                .is_none_or(|t| now.duration_since(t) > Duration::from_millis(300))
                            {
                                spurt_start = Some(now);
                            }
                            if r.greeting_ms.is_none() {
                                r.greeting_ms = Some(now.duration_since(t0).as_millis() as u64);
                            }
                            if let Some(sent) = waiting_reply.take() {
                                if now >= sent {
                                    r.voice_to_voice_ms
                                        .push(now.duration_since(sent).as_millis() as u64);
                                } else {
                                    // Heard before we finished: a barge-in reply.
                                    waiting_reply = Some(sent);
                                }
                            }
                            last_audible = Some(now);
                        }
                    }
                    Event::Text(t) => {
                        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&t) {
                            if v["type"] == "call" {
                                r.call_id = v["id"].as_str().map(str::to_string);
                            }
                        }
                        r.texts.push(t);
                    }
                    Event::Closed => return Ok(r),
                    _ => {}
                },
            }
        };
        if let (Some(at), Some(last)) = (interrupted_at, last_audible) {
            // The bot has been quiet a while since the interruption began.
            if now.duration_since(last) > Duration::from_millis(500) {
                r.barge_in_stop_ms
                    .push(last.saturating_duration_since(at).as_millis() as u64);
                interrupted_at = None;
            }
        }
        // An interruption goes in `after_ms` into the bot's speech.
        let talking =
            last_audible.is_some_and(|t| now.duration_since(t) < Duration::from_millis(100));
        if let Some(Step::Interrupt { after_ms, .. }) = steps.front() {
            let due =
                spurt_start.is_some_and(|s| now.duration_since(s).as_millis() as u64 >= *after_ms);
            if talking && due && speaking_until.is_none_or(|t| now >= t) {
                if let Some(Step::Interrupt { audio, .. }) = steps.pop_front() {
                    sess.send_audio(1, &to_ulaw(&audio));
                    speaking_until = Some(now + Duration::from_millis(audio.len() as u64 / 8));
                    // Onset: the first voiced frame of the interruption.
                    let lead = audio
                        .chunks(160)
                        .position(|c| {
                            let e = c.iter().map(|x| x * x).sum::<f32>() / c.len().max(1) as f32;
                            e.sqrt() > 0.01
                        })
                        .unwrap_or(0);
                    interrupted_at = Some(now + Duration::from_millis(lead as u64 * 20));
                }
            }
        }
        // The next step, once the bot has answered and gone quiet.
        let quiet =
            last_audible.is_some_and(|t| now.duration_since(t).as_millis() as u64 >= quiet_ms);
        let idle = speaking_until.is_none_or(|t| now >= t) && waiting_reply.is_none();
        let next_is_interrupt = matches!(steps.front(), Some(Step::Interrupt { .. }));
        if quiet && idle && sess.is_connected() && !next_is_interrupt {
            match steps.pop_front() {
                Some(Step::Say(audio)) => {
                    let voiced = last_voiced(&audio);
                    sess.send_audio(1, &to_ulaw(&audio));
                    let end = now + Duration::from_millis(voiced as u64 / 8);
                    speaking_until = Some(now + Duration::from_millis(audio.len() as u64 / 8));
                    waiting_reply = Some(end);
                }
                Some(Step::Dtmf(keys)) => {
                    for k in keys.chars() {
                        sess.send_dtmf(k, now);
                        tokio::time::sleep(Duration::from_millis(150)).await;
                    }
                    // Wait for the bot's answer before the next step.
                    last_audible = None;
                }
                Some(Step::Interrupt { .. }) => {}
                None => {
                    if done_at.is_none() {
                        done_at = Some(now + tail);
                    }
                }
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
    // Hang up like the page does, then let it go out.
    sess.send_text(r#"{"type":"hangup"}"#.into());
    let until = Instant::now() + Duration::from_millis(200);
    while Instant::now() < until {
        sess.handle_timeout(Instant::now());
        match sess.poll_output(Instant::now()) {
            Output::Transmit { to, data, .. } => {
                let _ = sock.send_to(&data, to).await;
            }
            Output::Timeout(t) => {
                tokio::time::sleep_until(t.min(until).into()).await;
            }
            Output::Event(_) => {}
        }
    }
    Ok(r)
}

/// Where a report's audio is: for tests that transcribe it.
pub fn heard_pcm(r: &WebrtcReport) -> Vec<i16> {
    r.heard.iter().map(|&b| mulaw::decode(b)).collect()
}
