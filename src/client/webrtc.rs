//! A WebRTC caller: offers to a server's `POST /webrtc/offer`, plays a
//! script in real time over Opus, records what it hears, and times each
//! reply as the caller hears it (last voiced frame sent → first audible bot
//! frame received). The same sans-IO `Session` the server uses, on the
//! calling side, over a real UDP socket. It returns the same `CallReport`
//! as the Twilio caller, so `attendant loadtest` measures both alike.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use super::{fetch_record, http_base, BargeInTiming, CallOptions, CallReport, ClientError};
use super::{ReplyTiming, Script, Step};
use crate::media::mulaw;
use crate::transport::playout::Playout;
use crate::transport::webrtc::{Event, Output, Session};

/// RMS (16-bit) above which a received frame counts as the bot talking.
const AUDIBLE: f64 = 300.0;
/// The bot's speech carries silence between replies (WebRTC keeps sending
/// frames): this much of it ends a reply.
const REPLY_GAP_MS: u64 = 600;
/// Quiet for this long after an interruption means the bot stopped.
const STOPPED_MS: u64 = 400;
/// A step waits this long for the bot's answer before going on anyway.
const ANSWER_TIMEOUT_MS: u64 = 15_000;

fn rms(ulaw: &[u8]) -> f64 {
    let s: f64 = ulaw
        .iter()
        .map(|&b| (mulaw::decode(b) as f64).powi(2))
        .sum();
    (s / ulaw.len().max(1) as f64).sqrt()
}

fn voiced(frame: &[f32]) -> bool {
    let e = frame.iter().map(|x| x * x).sum::<f32>() / frame.len().max(1) as f32;
    e.sqrt() > 0.01
}

/// (first voiced, end of last voiced) in ms from the start of `samples`.
fn voiced_span(samples: &[f32]) -> (u64, u64) {
    let frames: Vec<&[f32]> = samples.chunks(160).collect();
    let first = frames.iter().position(|f| voiced(f)).unwrap_or(0);
    let last = frames
        .iter()
        .rposition(|f| voiced(f))
        .map_or(frames.len(), |i| i + 1);
    (first as u64 * 20, last as u64 * 20)
}

fn to_ulaw(samples: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(samples.len());
    mulaw::encode_from_f32(samples, &mut out);
    out
}

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
    let (steps, quiet_ms) = match opts.script.clone() {
        Script::Steps { steps, quiet_ms } => (steps, quiet_ms),
        Script::Turns { turns, quiet_ms } => (turns.into_iter().map(Step::Say).collect(), quiet_ms),
        _ => {
            return Err(connect(
                "only scripted steps or turns run over WebRTC".into(),
            ))
        }
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

    let mut rep = CallReport {
        call_sid: String::new(),
        stream_sid: String::new(),
        duration_ms: 0,
        replies: Vec::new(),
        barge_ins: Vec::new(),
        clears: 0,
        marks_echoed: 0,
        closed_by_server: None,
        step_ends: Vec::new(),
        pacing: Default::default(),
        first_audio_ms: None,
        connect_ms: None,
        page_messages: Vec::new(),
        record: None,
        bot_audio: Vec::new(),
        caller_audio: Vec::new(),
    };
    let mut steps = VecDeque::from(steps);
    // Caller side: end of the last voiced frame sent, end of what we said
    // or keyed last, and until when we are still talking.
    let mut last_voiced_sent: Option<u64> = None;
    let mut last_input_end: Option<u64> = None;
    let mut speaking_until = 0u64;
    // Bot side: its last audible frame, and whether the open reply still
    // waits for its first audible frame.
    let mut last_audible: Option<u64> = None;
    let mut open_barge: Option<usize> = None;
    let mut done_at: Option<u64> = None;
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
                Output::Event(Event::Audio(ulaw)) => {
                    rep.bot_audio.extend(ulaw.iter().map(|&b| mulaw::decode(b)));
                    rep.pacing.frames += 1;
                    let loud = rms(&ulaw) > AUDIBLE;
                    if loud {
                        if last_audible.is_none_or(|l| now_ms.saturating_sub(l) > REPLY_GAP_MS) {
                            // A new reply; its latency runs from what it answers.
                            let answers = last_voiced_sent
                                .filter(|&lv| rep.replies.last().is_none_or(|r| lv > r.at_ms));
                            let v2v = answers.map(|lv| now_ms.saturating_sub(lv));
                            rep.replies.push(ReplyTiming {
                                at_ms: now_ms,
                                voice_to_voice_ms: v2v,
                                first_frame_ms: v2v,
                                audio: Vec::new(),
                            });
                        }
                        rep.first_audio_ms.get_or_insert(now_ms);
                        last_audible = Some(now_ms);
                    }
                    let open =
                        last_audible.is_some_and(|l| now_ms.saturating_sub(l) <= REPLY_GAP_MS);
                    if let (true, Some(r)) = (open, rep.replies.last_mut()) {
                        r.audio.extend_from_slice(&ulaw);
                    }
                }
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
        // The bot stopped talking over an interruption: its last audible
        // frame, once it has stayed quiet longer than a pause between its
        // sentences (silence keeps flowing on WebRTC, so a short gap is not
        // a stop).
        if let (Some(i), Some(l)) = (open_barge, last_audible) {
            let onset = rep.barge_ins[i].onset_ms;
            if now_ms >= onset && now_ms.saturating_sub(l) >= STOPPED_MS {
                rep.barge_ins[i].stop_ms = Some((l + 20).saturating_sub(onset));
                open_barge = None;
            }
        }
        let quiet = last_audible.is_some_and(|l| now_ms.saturating_sub(l) >= quiet_ms);
        let answered = match last_input_end {
            None => rep.first_audio_ms.is_some(),
            Some(end) => {
                rep.replies.last().is_some_and(|r| r.at_ms > end)
                    || now_ms > end + ANSWER_TIMEOUT_MS
            }
        };
        let idle = now_ms >= speaking_until;
        if sess.is_connected() && idle {
            match steps.front() {
                Some(Step::Say(audio)) if answered && quiet => {
                    let (_, voiced_end) = voiced_span(audio);
                    sess.send_audio(1, &to_ulaw(audio));
                    last_voiced_sent = Some(now_ms + voiced_end);
                    speaking_until = now_ms + audio.len() as u64 / 8;
                    last_input_end = Some(speaking_until);
                    rep.step_ends.push(speaking_until);
                    steps.pop_front();
                }
                Some(Step::Dtmf(keys)) if answered && quiet => {
                    // Keys 150 ms apart, like a person pressing them.
                    let keys = keys.clone();
                    for (i, k) in keys.chars().enumerate() {
                        if i > 0 {
                            tokio::time::sleep(Duration::from_millis(150)).await;
                        }
                        sess.send_dtmf(k, Instant::now());
                    }
                    let end = t0.elapsed().as_millis() as u64;
                    last_input_end = Some(end);
                    rep.step_ends.push(end);
                    steps.pop_front();
                }
                Some(Step::Interrupt { audio, after_ms }) => {
                    // `after_ms` into the first reply after our last input.
                    let reply = rep
                        .replies
                        .iter()
                        .find(|r| last_input_end.is_none_or(|e| r.at_ms > e));
                    if reply.is_some_and(|r| now_ms >= r.at_ms + after_ms) {
                        let (onset, voiced_end) = voiced_span(audio);
                        sess.send_audio(1, &to_ulaw(audio));
                        rep.barge_ins.push(BargeInTiming {
                            onset_ms: now_ms + onset,
                            stop_ms: None,
                            clear_ms: None,
                        });
                        open_barge = Some(rep.barge_ins.len() - 1);
                        last_voiced_sent = Some(now_ms + voiced_end);
                        speaking_until = now_ms + audio.len() as u64 / 8;
                        last_input_end = Some(speaking_until);
                        rep.step_ends.push(speaking_until);
                        steps.pop_front();
                    }
                }
                Some(_) => {}
                None => {
                    // Done once the last input is answered, quiet, and lingered on.
                    let d = *done_at.get_or_insert(now_ms);
                    let lingered = now_ms >= d + opts.linger_ms;
                    let long_quiet = last_audible.is_none_or(|l| now_ms.saturating_sub(l) >= 1500);
                    if answered && lingered && long_quiet {
                        break;
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
    hang_up(&mut sess, &sock).await;
    rep.duration_ms = t0.elapsed().as_millis() as u64;
    rep.stream_sid = rep.call_sid.clone();
    rep.page_messages = texts;
    if !rep.call_sid.is_empty() {
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Some(r) = fetch_record(&base, &rep.call_sid, opts.api_token.as_deref()).await {
                let done = r.ended_unix_ms.is_some();
                rep.record = Some(r);
                if done {
                    break;
                }
            }
        }
    }
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
