//! Plays Twilio's part against a Media Streams server: streams caller audio
//! in real time (20 ms μ-law frames), plays the bot's audio out of a playout
//! buffer like Twilio does (echoing marks when played, honouring `clear`),
//! records both sides, and measures what the caller experiences.

pub mod audio;
pub mod script;
pub mod sip;
pub mod webrtc;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::media::{mulaw, PHONE_FRAME};
use crate::pipeline::CallRecord;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("WebSocket error: {0}")]
    Ws(String),
    #[error("cannot read {path}: {reason}")]
    Input { path: String, reason: String },
}

/// What the simulated caller says.
#[derive(Debug, Clone)]
pub enum Script {
    /// One continuous stream of 8 kHz samples, from the first frame.
    Stream(Vec<f32>),
    /// Utterances spoken one by one, each once the bot has been quiet for
    /// `quiet_ms` (after its greeting or previous reply).
    Turns { turns: Vec<Vec<f32>>, quiet_ms: u64 },
    /// Speak over the bot: starts `after_ms` after the bot's audio begins.
    BargeIn { audio: Vec<f32>, after_ms: u64 },
    /// Replay a recorded session (.jsonl of Twilio messages), frame by frame.
    Replay(PathBuf),
    /// A mix of spoken turns, interruptions and key presses, in order.
    Steps { steps: Vec<Step>, quiet_ms: u64 },
}

/// One thing a scripted caller does.
#[derive(Debug, Clone)]
pub enum Step {
    /// Speak once the bot has answered and been quiet for `quiet_ms`.
    Say(Vec<f32>),
    /// Speak over the bot, `after_ms` into its next reply.
    Interrupt { audio: Vec<f32>, after_ms: u64 },
    /// Press keys once the bot has answered and is quiet.
    Dtmf(String),
}

impl Step {
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Say(_) => "say",
            Step::Interrupt { .. } => "interrupt",
            Step::Dtmf(_) => "dtmf",
        }
    }
}

/// How evenly the bot's audio arrived (measured on receipt, before playout).
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct Pacing {
    pub frames: u64,
    /// Playout ran dry in the middle of a reply for this long.
    pub underrun_ms: u64,
    /// Longest gap between frames of one reply.
    pub max_gap_ms: u64,
    pub gaps_over_60ms: u64,
    /// Interarrival jitter against the 20 ms frame clock (RFC 3550 estimator).
    pub jitter_ms: f64,
}

#[derive(Debug, Clone)]
pub struct CallOptions {
    pub url: String,
    /// Base URL for GET /calls/{id}; derived from `url` when empty.
    pub http: String,
    pub from: String,
    pub script: Script,
    /// How long to stay on the line after the script, once the bot is quiet.
    pub linger_ms: u64,
    pub max_secs: u64,
    /// Milliseconds into the call → DTMF digit.
    pub dtmf: Vec<(u64, char)>,
    /// Sign the WebSocket upgrade the way Twilio does, for servers that
    /// enforce `X-Twilio-Signature`.
    pub signing: Option<Signing>,
    /// API token for reading the server's call record (GET /calls/{id}).
    pub api_token: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Signing {
    pub auth_token: String,
    /// The stream URL as the server knows itself (its public `wss://` URL).
    pub public_url: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplyTiming {
    /// When the bot's reply began, ms since the call started.
    pub at_ms: u64,
    /// Caller's last voiced frame sent → first audible frame of this reply
    /// received (what the caller hears; leading silence does not count).
    pub voice_to_voice_ms: Option<u64>,
    /// Caller's last voiced frame sent → first frame of this reply received,
    /// audible or not.
    #[serde(default)]
    pub first_frame_ms: Option<u64>,
    /// The reply's μ-law audio as received.
    #[serde(skip)]
    pub audio: Vec<u8>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BargeInTiming {
    pub onset_ms: u64,
    /// Caller speech onset → bot audio stopped arriving.
    pub stop_ms: Option<u64>,
    /// Caller speech onset → `clear` received.
    pub clear_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CallReport {
    pub call_sid: String,
    pub stream_sid: String,
    pub duration_ms: u64,
    pub replies: Vec<ReplyTiming>,
    pub barge_ins: Vec<BargeInTiming>,
    pub clears: usize,
    pub marks_echoed: usize,
    pub closed_by_server: Option<u16>,
    /// For `Script::Steps`: when each step's audio or keys finished, ms
    /// since the call started.
    pub step_ends: Vec<u64>,
    pub pacing: Pacing,
    /// First bot frame after the call started (time to answer).
    pub first_audio_ms: Option<u64>,
    /// The media path came up (WebRTC: ICE + DTLS), ms after the offer.
    pub connect_ms: Option<u64>,
    /// What the server sent the caller's page (WebRTC data channel).
    pub page_messages: Vec<String>,
    pub record: Option<CallRecord>,
    #[serde(skip)]
    pub bot_audio: Vec<i16>,
    #[serde(skip)]
    pub caller_audio: Vec<i16>,
}

enum Playout {
    Audio(Vec<u8>),
    Mark(String),
}

/// Energy gate used to find the caller's voiced frames in our own source
/// audio (not on the bot's audio path, so it costs the measurement nothing).
/// A bot frame the caller can hear: above about -45 dBFS.
fn audible(ulaw: &[u8]) -> bool {
    let n = ulaw.len().max(1) as f64;
    let e: f64 = ulaw
        .iter()
        .map(|&b| (mulaw::decode(b) as f64 / 32768.0).powi(2))
        .sum();
    (e / n).sqrt() > 0.0056
}

fn voiced(frame: &[f32]) -> bool {
    let rms = (frame.iter().map(|x| x * x).sum::<f32>() / frame.len().max(1) as f32).sqrt();
    rms > 0.02
}

fn frames_of(samples: &[f32]) -> VecDeque<Vec<f32>> {
    samples
        .chunks(PHONE_FRAME)
        .map(|c| {
            let mut f = c.to_vec();
            f.resize(PHONE_FRAME, 0.0);
            f
        })
        .collect()
}

pub(crate) fn http_base(url: &str) -> String {
    let u = url
        .replacen("wss://", "https://", 1)
        .replacen("ws://", "http://", 1);
    match u.find("/twilio/") {
        Some(i) => u[..i].to_string(),
        None => u.trim_end_matches('/').to_string(),
    }
}

/// POSTs the voice webhook as Twilio would (signed) and returns the
/// `<Parameter>`s of the `<Stream>` it answers with.
async fn answer_webhook(
    opts: &CallOptions,
    s: &Signing,
    call_sid: &str,
) -> Result<Vec<(String, String)>, String> {
    let to_http = |u: &str| {
        u.replacen("wss://", "https://", 1)
            .replacen("ws://", "http://", 1)
            .replace("/twilio/stream", "/twilio/voice")
    };
    let url = to_http(&opts.url);
    let signed_url = to_http(&s.public_url);
    let form = vec![
        ("CallSid".to_string(), call_sid.to_string()),
        ("From".to_string(), opts.from.clone()),
        ("To".to_string(), "+15550000000".to_string()),
    ];
    let sig = crate::transport::twilio::signature::compute(&s.auth_token, &signed_url, &form);
    tokio::task::spawn_blocking(move || {
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let xml = ureq::post(&url)
            .timeout(Duration::from_secs(10))
            .set("X-Twilio-Signature", &sig)
            .send_form(&pairs)
            .map_err(|e| format!("voice webhook: {e}"))?
            .into_string()
            .map_err(|e| e.to_string())?;
        let params = crate::transport::twilio::twiml::stream_parameters(&xml);
        if params.is_empty() {
            return Err(format!("the voice webhook did not connect a stream: {xml}"));
        }
        Ok(params)
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Fetches the server's record of a call (transcripts and timings).
pub async fn fetch_record(
    http: &str,
    call_sid: &str,
    api_token: Option<&str>,
) -> Option<CallRecord> {
    let url = format!("{}/calls/{}", http.trim_end_matches('/'), call_sid);
    let auth = api_token.map(|t| format!("Bearer {t}"));
    tokio::task::spawn_blocking(move || {
        let mut req = ureq::get(&url).timeout(Duration::from_secs(5));
        if let Some(a) = &auth {
            req = req.set("authorization", a);
        }
        let resp = req.call().ok()?;
        resp.into_json::<CallRecord>().ok()
    })
    .await
    .ok()
    .flatten()
}

/// A recorded session: μ-law frames, and DTMF digits by the frame they follow.
struct Replay {
    frames: Vec<Vec<u8>>,
    dtmf: Vec<(usize, char)>,
}

/// Replay files carry their own start; their audio frames become the source.
fn load_replay(path: &PathBuf) -> Result<Replay, ClientError> {
    let text = std::fs::read_to_string(path).map_err(|e| ClientError::Input {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut frames = Vec::new();
    let mut dtmf = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line).map_err(|e| ClientError::Input {
            path: path.display().to_string(),
            reason: format!("line {}: {e}", n + 1),
        })?;
        match v["event"].as_str() {
            Some("media") => {
                let p = v["media"]["payload"].as_str().unwrap_or("");
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(p)
                    .map_err(|e| ClientError::Input {
                        path: path.display().to_string(),
                        reason: format!("line {}: {e}", n + 1),
                    })?;
                frames.push(bytes);
            }
            Some("dtmf") => {
                if let Some(d) = v["dtmf"]["digit"].as_str().and_then(|d| d.chars().next()) {
                    dtmf.push((frames.len(), d));
                }
            }
            _ => {}
        }
    }
    Ok(Replay { frames, dtmf })
}

pub async fn run_call(opts: CallOptions) -> Result<CallReport, ClientError> {
    let connect_err = |reason: String| ClientError::Connect {
        url: opts.url.clone(),
        reason,
    };
    let mut req = opts
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| connect_err(e.to_string()))?;
    if let Some(s) = &opts.signing {
        let sig = crate::transport::twilio::signature::compute(&s.auth_token, &s.public_url, &[]);
        let value = sig
            .parse()
            .map_err(|_| connect_err("bad signature".into()))?;
        req.headers_mut().insert("X-Twilio-Signature", value);
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    let stream_sid = format!("MZ{id}");
    let mut call_sid = format!("CA{id}");
    let mut custom = json!({"From": opts.from, "To": "+15550000000"});
    // A signing server wants what Twilio brings: the voice webhook first,
    // then a stream whose start carries the webhook's parameters (with the
    // per-call stream token).
    if let Some(s) = &opts.signing {
        let params = answer_webhook(&opts, s, &call_sid)
            .await
            .map_err(connect_err)?;
        let mut map = serde_json::Map::new();
        for (k, v) in params {
            if k == "CallSid" {
                call_sid = v.clone();
            }
            map.insert(k, Value::String(v));
        }
        custom = Value::Object(map);
    }
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .map_err(|e| connect_err(e.to_string()))?;
    let (mut tx, mut rx) = ws.split();
    let send = |v: Value| Message::Text(v.to_string().into());
    let werr = |e: tokio_tungstenite::tungstenite::Error| ClientError::Ws(e.to_string());
    tx.send(send(
        json!({"event":"connected","protocol":"Call","version":"1.0.0"}),
    ))
    .await
    .map_err(werr)?;
    tx.send(send(json!({
        "event":"start","sequenceNumber":"1","streamSid":stream_sid,
        "start":{"accountSid":"AC00000000000000000000000000000000","streamSid":stream_sid,"callSid":call_sid,
                 "tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},
                 "customParameters":custom}
    })))
    .await
    .map_err(werr)?;

    // Source frames as μ-law, plus per-frame "voiced" flags for measurement.
    let mut pending_steps: VecDeque<Step> = VecDeque::new();
    let mut source: VecDeque<(Vec<u8>, bool)> = VecDeque::new();
    let mut dtmf: Vec<(u64, char)> = opts.dtmf.clone();
    let mut quiet_ms = 0;
    let mut barge: Option<(Vec<f32>, u64)> = None;
    let enc = |f: &[f32]| {
        let mut u = Vec::with_capacity(f.len());
        mulaw::encode_from_f32(f, &mut u);
        u
    };
    match &opts.script {
        Script::Stream(s) => {
            for f in frames_of(s) {
                source.push_back((enc(&f), voiced(&f)));
            }
        }
        Script::Turns { turns, quiet_ms: q } => {
            pending_steps = turns.iter().cloned().map(Step::Say).collect();
            quiet_ms = *q;
        }
        Script::Steps { steps, quiet_ms: q } => {
            pending_steps = steps.iter().cloned().collect();
            quiet_ms = *q;
        }
        Script::BargeIn { audio, after_ms } => barge = Some((audio.clone(), *after_ms)),
        Script::Replay(p) => {
            let Replay { frames, dtmf: d } = load_replay(p)?;
            for f in frames {
                let pcm: Vec<f32> = f
                    .iter()
                    .map(|&b| mulaw::decode(b) as f32 / 32768.0)
                    .collect();
                let v = voiced(&pcm);
                source.push_back((f, v));
            }
            dtmf.extend(d.into_iter().map(|(i, c)| (i as u64 * 20, c)));
        }
    }
    dtmf.sort();

    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut playout: VecDeque<Playout> = VecDeque::new();
    let mut report = CallReport::new(call_sid.clone(), stream_sid.clone());
    let mut seq = 2u64;
    let mut last_voiced_sent: Option<u64> = None;
    // The reply in progress has had no audible frame yet: the caller's last
    // voiced frame it answers.
    let mut awaiting_audible: Option<u64> = None;
    let mut last_bot_rx: Option<u64> = None;
    let mut bot_started_at: Option<u64> = None;
    let mut script_done_at: Option<u64> = None;
    let mut caller_speaking_since: Option<u64> = None;
    let mut last_caller_voice: Option<u64> = None;
    let mut open_barge: Option<usize> = None;
    let mut frame_no = 0u64;
    let mut last_utterance_end: Option<u64> = None;
    // When the last keys step began: the call's end waits for their answer.
    let mut last_keys_at: Option<u64> = None;
    let mut starved_ms = 0u64;
    let mut last_frame_rx: Option<Instant> = None;
    let mut jitter = 0f64;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now_ms = start.elapsed().as_millis() as u64;
                // Caller side: the next source frame, or silence.
                if source.is_empty() {
                    if let Some(step) = pending_steps.front() {
                        let quiet = last_bot_rx.map(|l| now_ms.saturating_sub(l)).unwrap_or(0);
                        // Wait for the bot's answer to what we did last (or give up after 15 s).
                        let answered = match last_utterance_end {
                            None => bot_started_at.is_some(),
                            Some(end) => report.replies.last().is_some_and(|r| r.at_ms >= end) || now_ms > end + 15_000,
                        };
                        let ready = answered && playout.is_empty() && quiet >= quiet_ms;
                        match step {
                            Step::Say(t) if ready => {
                                for f in frames_of(t) {
                                    source.push_back((enc(&f), voiced(&f)));
                                }
                                // Answered from the last word on (see
                                // `ScriptedCaller::speak`).
                                let end = now_ms + script::voiced_span(t).1;
                                last_utterance_end = Some(end);
                                report.step_ends.push(end);
                                pending_steps.pop_front();
                            }
                            Step::Dtmf(keys) if ready => {
                                // Keys 150 ms apart, like a person pressing them.
                                for (i, d) in keys.chars().enumerate() {
                                    dtmf.push((now_ms + i as u64 * 150, d));
                                }
                                dtmf.sort();
                                // Answered by what is said once the first key
                                // is pressed (see `ScriptedCaller::keys_sent`).
                                last_utterance_end = Some(now_ms);
                                last_keys_at = Some(now_ms);
                                report.step_ends.push(now_ms);
                                pending_steps.pop_front();
                            }
                            Step::Interrupt { audio, after_ms } => {
                                // The reply to interrupt: the first one after our last input.
                                let reply = report.replies.iter().find(|r| last_utterance_end.is_none_or(|e| r.at_ms >= e));
                                if reply.is_some_and(|r| now_ms >= r.at_ms + after_ms) {
                                    for f in frames_of(audio) {
                                        source.push_back((enc(&f), voiced(&f)));
                                    }
                                    let end = now_ms + script::voiced_span(audio).1;
                                    last_utterance_end = Some(end);
                                    report.step_ends.push(end);
                                    pending_steps.pop_front();
                                }
                            }
                            _ => {}
                        }
                    }
                    if let (Some((audio, after)), Some(b)) = (&barge, bot_started_at) {
                        if now_ms >= b + after {
                            for f in frames_of(audio) {
                                source.push_back((enc(&f), voiced(&f)));
                            }
                            barge = None;
                        }
                    }
                }
                let (frame, is_voiced) = source.pop_front().unwrap_or_else(|| (vec![mulaw::SILENCE; PHONE_FRAME], false));
                if source.is_empty() && pending_steps.is_empty() && barge.is_none() && script_done_at.is_none() {
                    script_done_at = Some(now_ms);
                }
                report.caller_audio.extend(frame.iter().map(|&b| mulaw::decode(b)));
                if is_voiced {
                    last_voiced_sent = Some(now_ms);
                    if caller_speaking_since.is_none() || last_caller_voice.is_some_and(|l| now_ms - l > 300) {
                        caller_speaking_since = Some(now_ms);
                        // Speech onset while the bot is audible: a barge-in attempt.
                        if last_bot_rx.is_some_and(|l| now_ms.saturating_sub(l) <= 60) {
                            report.barge_ins.push(BargeInTiming { onset_ms: now_ms, stop_ms: None, clear_ms: None });
                            open_barge = Some(report.barge_ins.len() - 1);
                        }
                    }
                    last_caller_voice = Some(now_ms);
                }
                let payload = base64::engine::general_purpose::STANDARD.encode(&frame);
                let msg = json!({"event":"media","sequenceNumber":seq.to_string(),"streamSid":stream_sid,
                    "media":{"track":"inbound","chunk":(frame_no+1).to_string(),"timestamp":(frame_no*20).to_string(),"payload":payload}});
                seq += 1;
                frame_no += 1;
                if tx.send(send(msg)).await.is_err() { break; }
                while dtmf.first().is_some_and(|(at, _)| *at <= now_ms) {
                    let (_, d) = dtmf.remove(0);
                    let msg = json!({"event":"dtmf","sequenceNumber":seq.to_string(),"streamSid":stream_sid,"dtmf":{"track":"inbound_track","digit":d.to_string()}});
                    seq += 1;
                    if tx.send(send(msg)).await.is_err() { break; }
                }
                // Bot side: play 20 ms from the playout buffer, echo marks reached.
                let mut played = false;
                while let Some(item) = playout.pop_front() {
                    match item {
                        Playout::Mark(name) => {
                            let msg = json!({"event":"mark","sequenceNumber":seq.to_string(),"streamSid":stream_sid,"mark":{"name":name}});
                            seq += 1;
                            report.marks_echoed += 1;
                            let _ = tx.send(send(msg)).await;
                        }
                        Playout::Audio(a) => {
                            report.bot_audio.extend(a.iter().map(|&b| mulaw::decode(b)));
                            played = true;
                            break;
                        }
                    }
                }
                if !played {
                    report.bot_audio.extend(std::iter::repeat_n(0i16, PHONE_FRAME));
                    // Dry in the middle of a reply: counted once more audio of it arrives.
                    if last_bot_rx.is_some_and(|l| now_ms.saturating_sub(l) < 300) {
                        starved_ms += 20;
                    }
                }
                let quiet = last_bot_rx.map(|l| now_ms.saturating_sub(l)).unwrap_or(u64::MAX);
                if let Some(done) = script_done_at {
                    // Like a caller, wait for the answer to what was said or
                    // keyed in last (up to 15 s).
                    let answered = match last_voiced_sent.max(last_keys_at) {
                        Some(lv) => report.replies.last().is_some_and(|r| r.at_ms >= lv) || now_ms > lv + 15_000,
                        None => true,
                    };
                    let lingered = now_ms.saturating_sub(done) >= opts.linger_ms;
                    if answered && lingered && playout.is_empty() && quiet >= 1500 {
                        break;
                    }
                }
                if now_ms > opts.max_secs * 1000 { break; }
            }
            msg = rx.next() => {
                let now_ms = start.elapsed().as_millis() as u64;
                match msg {
                    Some(Ok(Message::Text(t))) => {
                        let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else { continue };
                        match v["event"].as_str() {
                            Some("media") => {
                                let Some(p) = v["media"]["payload"].as_str() else { continue };
                                let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(p) else { continue };
                                let gap = last_bot_rx.map(|l| now_ms.saturating_sub(l)).unwrap_or(u64::MAX);
                                let rx_at = Instant::now();
                                if gap > 300 {
                                    // A new reply starts; its latency runs to the first audible frame.
                                    awaiting_audible = last_voiced_sent
                                        .filter(|&lv| report.replies.last().is_none_or(|r| lv > r.at_ms));
                                    let first = awaiting_audible.map(|lv| now_ms.saturating_sub(lv));
                                    report.replies.push(ReplyTiming { at_ms: now_ms, voice_to_voice_ms: None, first_frame_ms: first, audio: Vec::new() });
                                    starved_ms = 0;
                                } else if let Some(prev) = last_frame_rx {
                                    // Within a reply: frames should arrive every 20 ms.
                                    let ia = rx_at.duration_since(prev).as_secs_f64() * 1000.0;
                                    let p = &mut report.pacing;
                                    p.max_gap_ms = p.max_gap_ms.max(ia as u64);
                                    if ia > 60.0 {
                                        p.gaps_over_60ms += 1;
                                    }
                                    jitter += ((ia - 20.0).abs() - jitter) / 16.0;
                                    p.jitter_ms = jitter;
                                    p.underrun_ms += starved_ms;
                                    starved_ms = 0;
                                }
                                if awaiting_audible.is_some() && audible(&bytes) {
                                    let lv = awaiting_audible.take().unwrap_or(now_ms);
                                    if let Some(r) = report.replies.last_mut() {
                                        r.voice_to_voice_ms = Some(now_ms.saturating_sub(lv));
                                    }
                                }
                                last_frame_rx = Some(rx_at);
                                report.pacing.frames += 1;
                                if let Some(r) = report.replies.last_mut() {
                                    r.audio.extend_from_slice(&bytes);
                                }
                                report.first_audio_ms.get_or_insert(now_ms);
                                bot_started_at.get_or_insert(now_ms);
                                last_bot_rx = Some(now_ms);
                                playout.push_back(Playout::Audio(bytes));
                            }
                            Some("mark") => {
                                let name = v["mark"]["name"].as_str().unwrap_or("").to_string();
                                playout.push_back(Playout::Mark(name));
                            }
                            Some("clear") => {
                                report.clears += 1;
                                if let Some(b) = report.barge_ins.last_mut().filter(|b| b.clear_ms.is_none()) {
                                    b.clear_ms = Some(now_ms.saturating_sub(b.onset_ms));
                                }
                                // Twilio empties its buffer and reports the marks it skipped.
                                let marks: Vec<String> = playout.drain(..).filter_map(|p| match p { Playout::Mark(m) => Some(m), _ => None }).collect();
                                for name in marks {
                                    let msg = json!({"event":"mark","sequenceNumber":seq.to_string(),"streamSid":stream_sid,"mark":{"name":name}});
                                    seq += 1;
                                    let _ = tx.send(send(msg)).await;
                                }
                            }
                            _ => {}
                        }
                    }
                    Some(Ok(Message::Close(f))) => {
                        report.closed_by_server = Some(f.map(|f| u16::from(f.code)).unwrap_or(1005));
                        break;
                    }
                    None | Some(Err(_)) => break,
                    _ => {}
                }
            }
        }
        // Barge-in stop: the first tick after onset with the bot's audio flow stopped.
        if let Some(i) = open_barge {
            let now_ms = start.elapsed().as_millis() as u64;
            let b = &mut report.barge_ins[i];
            if b.stop_ms.is_none() && last_bot_rx.is_some_and(|l| now_ms.saturating_sub(l) >= 60) {
                let stopped_at = last_bot_rx.unwrap_or(now_ms) + 20;
                b.stop_ms = Some(stopped_at.saturating_sub(b.onset_ms));
                open_barge = None;
            }
        }
    }
    let stop = json!({"event":"stop","sequenceNumber":seq.to_string(),"streamSid":stream_sid,
        "stop":{"accountSid":"AC00000000000000000000000000000000","callSid":call_sid}});
    let _ = tx.send(send(stop)).await;
    let _ = tx.close().await;
    report.duration_ms = start.elapsed().as_millis() as u64;
    let http = if opts.http.is_empty() {
        http_base(&opts.url)
    } else {
        opts.http.clone()
    };
    // The server finalises the record when it sees the stop.
    attach_record(&mut report, &http, opts.api_token.as_deref()).await;
    Ok(report)
}

/// Fetches the server's record of the call into `rep`, giving the server
/// up to 2 s to finish it after the hang-up.
pub(crate) async fn attach_record(rep: &mut CallReport, http: &str, api_token: Option<&str>) {
    if rep.call_sid.is_empty() {
        return;
    }
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(r) = fetch_record(http, &rep.call_sid, api_token).await {
            let done = r.ended_unix_ms.is_some();
            rep.record = Some(r);
            if done {
                break;
            }
        }
    }
}

impl CallReport {
    /// A call's report before anything is measured.
    pub fn new(call_sid: String, stream_sid: String) -> Self {
        Self {
            call_sid,
            stream_sid,
            duration_ms: 0,
            replies: Vec::new(),
            barge_ins: Vec::new(),
            clears: 0,
            marks_echoed: 0,
            closed_by_server: None,
            step_ends: Vec::new(),
            pacing: Pacing::default(),
            first_audio_ms: None,
            connect_ms: None,
            page_messages: Vec::new(),
            record: None,
            bot_audio: Vec::new(),
            caller_audio: Vec::new(),
        }
    }
}

/// Prints a human-readable summary of a call.
pub fn print_report(r: &CallReport) {
    println!("call {} ({} ms)", r.call_sid, r.duration_ms);
    if let Some(rec) = &r.record {
        println!("  bot: {}", rec.greeting);
        for t in &rec.turns {
            let said = if let Some(d) = &t.dtmf {
                format!("[DTMF {d}]")
            } else {
                t.caller_text.clone()
            };
            println!("  caller: {said}");
            let cut = if t.interrupted { " [interrupted]" } else { "" };
            println!("  bot: {}{cut}", t.bot_text);
            let tm = &t.timings;
            println!(
                "    voice-to-voice {:?} ms | end-of-turn {:?} ({}) | asr {:?} (decode {:?}) | tts first audio {:?} | speculative {}",
                tm.voice_to_voice_ms, tm.end_of_turn_ms, tm.end_reason, tm.asr_final_ms, tm.asr_decode_ms, tm.tts_first_audio_ms, tm.speculative_hit
            );
        }
        println!("  outcome: {}", rec.outcome);
    }
    for (i, rep) in r.replies.iter().enumerate() {
        println!(
            "  reply {i} at {} ms, caller-measured voice-to-voice {:?} ms",
            rep.at_ms, rep.voice_to_voice_ms
        );
    }
    for b in &r.barge_ins {
        println!(
            "  barge-in at {} ms: bot audio stopped after {:?} ms, clear after {:?} ms",
            b.onset_ms, b.stop_ms, b.clear_ms
        );
    }
}
