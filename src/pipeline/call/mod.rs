//! The per-call pipeline task.
//!
//! Inputs are transport-neutral (`CallInput`: μ-law audio, DTMF, played
//! marks); outputs are `CallOutput` commands for the transport driver. Model
//! work runs on the shared ASR/TTS pools or the blocking pool; its results
//! come back to this task as internal events, so the task itself never waits
//! on a model.
//!
//! Interruption semantics: when the caller starts to speak over the bot the
//! bot's audio is paused at once; once the speech is confirmed (300 ms of
//! voice) the reply is cancelled and the far end's buffer cleared; if it was
//! only a cough or an "mm-hm", playback resumes where it stopped.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

mod human;
mod listen;

use super::endpoint::{self, Verdict};
use super::engines::Engines;
use super::metrics::metrics;
use super::record::{mask_phone, CallRecord, CallStore, Timings, TurnRecord};
use crate::asr::{Priority, Purpose, Transcript};
use crate::dialogue::{Action, CallMeta, Dialogue, Expect, Interruption, Reply, TurnInput};
use crate::media::{mulaw, resample::StreamResampler, MODEL_RATE, PHONE_FRAME, PHONE_RATE};
use crate::nlu::numbers::mask_digits;
use crate::speech::TtsChunk;
use crate::turn::vad::{VadState, WINDOW};
use crate::turn::{TurnDetector, TurnEvent};

/// Longest turn before it is cut (a monologue; and Whisper, on the digits lane, sees at most 30 s).
const MAX_TURN: Duration = Duration::from_secs(28);
/// Voiced audio kept after the last voiced window, so word endings survive.
const TAIL_SAMPLES: u64 = 16000 / 10;

#[derive(Debug)]
pub enum CallInput {
    Audio(Vec<u8>),
    Dtmf(char),
    MarkPlayed(String),
    /// The driver sent the first frame of reply `reply` at `at`.
    ReplyStarted {
        reply: u32,
        at: Instant,
    },
    Hangup,
    /// The transport could not carry out a transfer (e.g. the SIP REFER was
    /// refused or the agent's line was busy): the bot takes the call back.
    TransferFailed {
        status: u16,
    },
    /// The transport's latest media-quality figures (RTCP).
    MediaQuality(super::record::MediaQuality),
}

#[derive(Debug, Clone)]
pub enum CallOutput {
    Audio {
        reply: u32,
        ulaw: Arc<Vec<u8>>,
    },
    Mark(String),
    /// Hold queued audio (caller may be interrupting).
    Pause,
    Resume,
    /// Drop all queued audio, here and at the far end.
    Clear,
    Hangup,
    Transfer {
        target: String,
        reason: String,
        priority: i64,
    },
}

pub struct CallHandle {
    pub input: mpsc::Sender<CallInput>,
    pub output: mpsc::Receiver<CallOutput>,
}

enum Internal {
    Asr {
        kind: AsrKind,
        turn: u32,
        result: Result<Transcript, crate::asr::AsrError>,
    },
    SmartTurn {
        turn: u32,
        pause: u64,
        prob: f32,
    },
    Tts {
        reply: u32,
        chunk: TtsChunk,
    },
    TtsDone {
        reply: u32,
    },
    Reply {
        turn: Option<u32>,
        reply: Reply,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AsrKind {
    Partial,
    /// Started at a pause ending at `last_voice`, before end of turn was known.
    Speculative {
        last_voice: u64,
    },
    Final,
}

struct Playback {
    reply: u32,
    cancel: Arc<AtomicBool>,
    sentences: Vec<String>,
    heard: usize,
    synth_done: bool,
    paused: bool,
    first_frame: Option<Instant>,
    audio_ms: u64,
    actions: Vec<Action>,
    /// Index into `record.turns` this reply answers, if any.
    turn_slot: Option<usize>,
}

struct Spec {
    last_voice: u64,
    cancel: Arc<AtomicBool>,
    result: Option<Transcript>,
    /// What the transcript's words say about the turn being over.
    verdict: Option<Verdict>,
}

struct PendingTurn {
    index: u32,
    onset: u64,
    last_voice: u64,
    last_voice_at: Instant,
    eot_at: Option<Instant>,
    confirmed: bool,
    partials: Vec<String>,
    smart_turn_prob: Option<f32>,
    /// Smart Turn judged the turn complete at the pause ending here.
    smart_turn_yes: Option<u64>,
    end_reason: String,
    /// The speculative transcript started at this turn's latest pause.
    spec: Option<Spec>,
}

struct Call {
    e: Arc<Engines>,
    meta: CallMeta,
    dialogue: Box<dyn Dialogue>,
    out: mpsc::Sender<CallOutput>,
    /// Results of work this call started (one per ASR job, the chunks of a
    /// reply it is speaking, its own queued replies). Unbounded on purpose:
    /// the call task sends here itself, so a bounded queue could block it on
    /// its own channel; what arrives is capped by what the call asked for
    /// (ASR and TTS pools are bounded, replies are one per turn), never by
    /// the caller's packets.
    internal: mpsc::UnboundedSender<Internal>,
    store: Arc<CallStore>,
    record: CallRecord,
    started: Instant,

    up: StreamResampler,
    pcm8: Vec<f32>,
    pending16: Vec<f32>,
    vad: VadState,
    det: TurnDetector,
    /// 16 kHz audio from `buf_start` up to the detector's position.
    audio: Vec<f32>,
    buf_start: u64,
    /// Arrival time of recent windows, by end position.
    arrivals: VecDeque<(u64, Instant)>,

    turn_seq: u32,
    turn: Option<PendingTurn>,
    /// Turns that ended and wait for their final transcript.
    ended: Vec<PendingTurn>,
    /// Per answered turn: (caller's last voiced frame, reply decided).
    turn_timing: HashMap<u32, (Instant, Instant)>,
    /// Per reply: (TTS asked, turn it answers).
    reply_started_at: HashMap<u32, (Instant, Option<u32>)>,
    first_audio_at: HashMap<u32, Instant>,
    partial_inflight: bool,
    last_partial_pos: u64,
    /// What the bot's last question asked for.
    expect: Expect,
    /// The last turn ended early (not by the fallback): (index, its last
    /// voiced position), to notice a caller who was not finished.
    last_early_end: Option<(u32, u64)>,

    reply_seq: u32,
    playing: Option<Playback>,
    hangup_sent: bool,
    /// The node is closing: the goodbye plays and nothing the caller says
    /// starts another reply.
    closing: bool,
    /// Keys gathered for a digits question, and when they count as done.
    keys: String,
    keys_deadline: Option<Instant>,
    /// On hold for, or talking to, a desk agent.
    human: Option<human::Human>,
}

/// A keypad answer is over after this long without a key.
const KEY_GAP: Duration = Duration::from_secs(3);

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// Starts a call's pipeline; the greeting is spoken right away.
pub fn spawn_call(e: Arc<Engines>, meta: CallMeta, store: Arc<CallStore>) -> CallHandle {
    let (in_tx, in_rx) = mpsc::channel(256);
    let (out_tx, out_rx) = mpsc::channel(256);
    // A panic ends this call only (its transport sees the output close and
    // hangs up); it is logged and counted, and other calls go on.
    tokio::spawn(async move {
        use futures_util::FutureExt;
        let call = std::panic::AssertUnwindSafe(run(e, meta, store, in_rx, out_tx));
        if let Err(panic) = call.catch_unwind().await {
            crate::faults::contained(crate::faults::Part::Call, panic.as_ref());
        }
    });
    CallHandle {
        input: in_tx,
        output: out_rx,
    }
}

/// Runs a dialogue step (embeddings, knowledge search, store look-ups: tens
/// of ms) without holding up the other calls' tasks on this worker thread.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

async fn run(
    e: Arc<Engines>,
    meta: CallMeta,
    store: Arc<CallStore>,
    mut input: mpsc::Receiver<CallInput>,
    out: mpsc::Sender<CallOutput>,
) {
    let m = metrics();
    m.calls_total.inc();
    m.calls_active.inc();
    let (itx, mut irx) = mpsc::unbounded_channel();
    let turn_cfg = e.cfg.turn.clone();
    let record = CallRecord {
        call_id: meta.call_id.clone(),
        stream_id: meta.params.get("streamSid").cloned().unwrap_or_default(),
        channel: meta.channel.clone(),
        from_masked: meta.from.as_deref().map(mask_phone),
        started_unix_ms: unix_ms(),
        outcome: "in_progress".into(),
        ..Default::default()
    };
    let up = match StreamResampler::new(PHONE_RATE, MODEL_RATE, PHONE_FRAME) {
        Ok(r) => r,
        Err(err) => {
            tracing::error!(error = %err, "cannot start call");
            m.calls_active.dec();
            return;
        }
    };
    let mut c = Call {
        dialogue: meta
            .params
            .get("agent")
            .and_then(|a| e.agents.get(a))
            .unwrap_or(&e.dialogue)
            .new_dialogue(),
        e,
        meta,
        out,
        internal: itx,
        store,
        record,
        started: Instant::now(),
        up,
        pcm8: Vec::with_capacity(PHONE_FRAME),
        pending16: Vec::new(),
        vad: VadState::default(),
        det: TurnDetector::new(turn_cfg),
        audio: Vec::new(),
        buf_start: 0,
        arrivals: VecDeque::new(),
        turn_seq: 0,
        turn: None,
        ended: Vec::new(),
        turn_timing: HashMap::new(),
        reply_started_at: HashMap::new(),
        first_audio_at: HashMap::new(),
        partial_inflight: false,
        last_partial_pos: 0,
        expect: Expect::Open,
        last_early_end: None,
        reply_seq: 0,
        playing: None,
        hangup_sent: false,
        closing: false,
        keys: String::new(),
        keys_deadline: None,
        human: None,
    };
    // Counted until this task ends (after the interaction is saved), so a
    // draining node waits for it.
    let _live = c.store.begin();
    let mut closing = c.store.closing();
    tracing::info!(call = %c.meta.call_id, channel = %c.meta.channel, from = ?c.record.from_masked, "call started");
    if let Some(d) = &c.e.desk {
        d.call_started(&c.meta.call_id, &c.meta.channel);
    }
    let greeting = blocking(|| c.dialogue.greeting(&c.meta));
    c.expect = c.dialogue.expecting();
    c.record.greeting = greeting.say.clone();
    c.start_reply(None, greeting).await;
    c.store.upsert(c.record.clone());
    if *closing.borrow_and_update() {
        c.on_closing().await;
    }

    loop {
        let keys_at = c.keys_deadline;
        let hold_until = human::next_timer(&c.human);
        tokio::select! {
            msg = input.recv() => match msg {
                Some(CallInput::Audio(_)) if c.closing => {}
                // With the desk, the caller talks to a person, not the bot.
                Some(CallInput::Audio(ulaw)) if c.human.is_some() => c.relay_to_agent(ulaw),
                Some(CallInput::Dtmf(_)) if c.human.is_some() => {}
                Some(CallInput::Audio(ulaw)) => c.on_audio(&ulaw).await,
                Some(CallInput::Dtmf(d)) => c.on_dtmf(d).await,
                Some(CallInput::MarkPlayed(name)) => c.on_mark(&name).await,
                Some(CallInput::ReplyStarted { reply, at }) => c.on_reply_started(reply, at),
                Some(CallInput::TransferFailed { status }) => c.on_transfer_failed(status).await,
                Some(CallInput::MediaQuality(q)) => c.record.media = Some(q),
                Some(CallInput::Hangup) | None => break,
            },
            Some(ev) = irx.recv() => c.on_internal(ev).await,
            Ok(()) = closing.changed(), if !c.closing => c.on_closing().await,
            _ = sleep_until_some(keys_at) => c.flush_keys(false).await,
            ev = human::next(&mut c.human) => match ev {
                human::FromDesk::Command(cmd) => c.on_desk(cmd).await,
                human::FromDesk::AgentFrame(f) => c.on_agent_frame(f).await,
            },
            _ = sleep_until_some(hold_until) => c.on_hold_timer().await,
        }
        if c.hangup_sent && c.playing.is_none() {
            break;
        }
    }
    if let Some(p) = c.playing.take() {
        p.cancel.store(true, Ordering::Relaxed);
    }
    for t in c.turn.iter_mut().chain(c.ended.iter_mut()) {
        if let Some(s) = t.spec.take() {
            s.cancel.store(true, Ordering::Relaxed);
        }
    }
    c.human_on_hangup();
    if let Some(d) = &c.e.desk {
        d.call_ended(&c.meta.call_id);
    }
    c.record.ended_unix_ms = Some(unix_ms());
    c.record.dialogue = c.dialogue.state_json();
    if c.record.outcome == "in_progress" {
        c.record.outcome = "caller_hung_up".into();
    }
    let v2v: Vec<u64> = c
        .record
        .turns
        .iter()
        .filter_map(|t| t.timings.voice_to_voice_ms)
        .collect();
    let response_ms =
        (!v2v.is_empty()).then(|| (v2v.iter().sum::<u64>() / v2v.len() as u64) as i64);
    c.dialogue.on_call_end(response_ms);
    c.store.upsert(c.record.clone());
    m.calls_active.dec();
    tracing::info!(call = %c.meta.call_id, turns = c.record.turns.len(), outcome = %c.record.outcome, "call ended");
}

impl Call {
    /// A line of the live transcript for supervisors at the desk.
    fn desk_line(&self, speaker: &str, text: &str) {
        if let Some(d) = &self.e.desk {
            d.line(&self.meta.call_id, speaker, text);
        }
    }

    async fn send(&self, o: CallOutput) {
        let _ = self.out.send(o).await;
    }

    fn arrival_of(&self, pos: u64) -> Instant {
        self.arrivals
            .iter()
            .find(|(p, _)| *p >= pos)
            .map(|(_, t)| *t)
            .unwrap_or_else(Instant::now)
    }

    fn position(&self) -> u64 {
        self.buf_start + self.audio.len() as u64
    }

    /// Audio `from..to` (absolute positions), clamped to what is buffered.
    fn slice(&self, from: u64, to: u64) -> Vec<f32> {
        let a = from
            .saturating_sub(self.buf_start)
            .min(self.audio.len() as u64) as usize;
        let b = to
            .saturating_sub(self.buf_start)
            .min(self.audio.len() as u64) as usize;
        self.audio[a..b.max(a)].to_vec()
    }

    fn preroll(&self) -> u64 {
        self.det.config().preroll_ms * 16
    }

    /// The node is closing: say so, then hang up once it has been heard.
    async fn on_closing(&mut self) {
        self.closing = true;
        tracing::info!(call = %self.meta.call_id, "node closing: ending the call");
        let reply = Reply {
            say: self.e.cfg.server.closing_prompt.clone(),
            actions: vec![Action::Hangup],
            source: "closing".into(),
        };
        self.start_reply(None, reply).await;
    }

    async fn on_internal(&mut self, ev: Internal) {
        match ev {
            // What the caller said is no longer answered.
            Internal::Asr { .. } | Internal::SmartTurn { .. } | Internal::Reply { .. }
                if self.closing => {}
            Internal::Asr { kind, turn, result } => match kind {
                AsrKind::Partial => {
                    self.partial_inflight = false;
                    if let Ok(tr) = result {
                        if !tr.text.is_empty() {
                            tracing::debug!(call = %self.meta.call_id, turn, partial = %tr.text, "partial");
                            if let Some(t) = self.turn.as_mut().filter(|t| t.index == turn) {
                                t.partials.push(tr.text);
                            }
                        }
                    }
                }
                AsrKind::Speculative { last_voice } => {
                    let matches = |t: &PendingTurn| {
                        t.index == turn
                            && t.spec.as_ref().is_some_and(|s| s.last_voice == last_voice)
                    };
                    let expect = self.expect;
                    if let Some(t) = self.turn.as_mut().filter(|t| matches(t)) {
                        // The caller is still in the turn: keep it for the end,
                        // and let its words help decide when that is.
                        match result {
                            Ok(tr) => {
                                let s = t.spec.as_mut().expect("matched");
                                s.verdict = Some(endpoint::verdict(&tr.text, expect));
                                s.result = Some(tr);
                            }
                            Err(_) => t.spec = None,
                        }
                        self.check_endpoint(Instant::now()).await;
                    } else if let Some(t) = self.ended.iter_mut().find(|t| matches(t)) {
                        t.spec = None;
                        match result {
                            Ok(tr) => self.on_final(turn, tr, true).await,
                            Err(_) => self.retry_final(turn).await,
                        }
                    }
                }
                AsrKind::Final => match result {
                    Ok(tr) => self.on_final(turn, tr, false).await,
                    Err(err) => {
                        tracing::warn!(error = %err, "final ASR failed");
                        self.ended.retain(|t| t.index != turn);
                    }
                },
            },
            Internal::SmartTurn { turn, pause, prob } => {
                let yes = prob >= self.det.config().smart_turn_threshold;
                if let Some(t) = self.turn.as_mut().filter(|t| t.index == turn) {
                    t.smart_turn_prob = Some(prob);
                    if yes && t.last_voice == pause {
                        t.smart_turn_yes = Some(pause);
                    }
                }
                self.check_endpoint(Instant::now()).await;
            }
            Internal::Tts { reply, chunk } => self.on_tts_chunk(reply, chunk).await,
            Internal::TtsDone { reply } => {
                if let Some(p) = self.playing.as_mut().filter(|p| p.reply == reply) {
                    p.synth_done = true;
                    let end = format!("r{reply}-end");
                    self.send(CallOutput::Mark(end)).await;
                }
            }
            Internal::Reply { turn, reply } => self.start_reply(turn, reply).await,
        }
    }

    async fn retry_final(&mut self, turn: u32) {
        let Some(t) = self.ended.iter().find(|t| t.index == turn) else {
            return;
        };
        let audio = Arc::new(self.slice(
            t.onset.saturating_sub(self.preroll()),
            t.last_voice + TAIL_SAMPLES,
        ));
        match self
            .e
            .asr
            .submit_for(self.purpose(), audio, Priority::Final)
        {
            Ok(p) => self.forward_asr(AsrKind::Final, turn, p.result),
            Err(err) => {
                tracing::warn!(error = %err, "ASR unavailable");
                self.ended.retain(|t| t.index != turn);
                self.resume_if_paused().await;
            }
        }
    }

    async fn on_final(&mut self, turn: u32, tr: Transcript, speculative: bool) {
        let Some(pos) = self.ended.iter().position(|t| t.index == turn) else {
            return;
        };
        let t = self.ended.remove(pos);
        let now = Instant::now();
        let eot_at = t.eot_at.unwrap_or(now);
        // Callers read PINs and card numbers aloud: logs never hold the digits.
        tracing::info!(call = %self.meta.call_id, turn, text = %mask_digits(&tr.text), decode_ms = tr.decode_ms, speculative, "caller said");
        let answering_digits = matches!(self.expect, Expect::Digits { .. });
        if tr.text.is_empty() {
            self.resume_if_paused().await;
            return;
        }
        metrics()
            .asr_final
            .observe(now.duration_since(eot_at).as_secs_f64());
        let input = TurnInput {
            transcript: Some(tr.text.clone()),
            dtmf: None,
            speech_ms: (t.last_voice - t.onset) / 16,
            index: turn,
        };
        let reply = blocking(|| self.dialogue.on_turn(&self.meta, &input));
        self.expect = self.dialogue.expecting();
        let done = Instant::now();
        // The record of a turn that answered a digits question (a PIN, an
        // account or card number) keeps no digits.
        let keep = |s: &str| {
            if answering_digits {
                mask_digits(s)
            } else {
                s.to_string()
            }
        };
        let rec = TurnRecord {
            index: turn,
            caller_text: keep(&tr.text),
            partials: t.partials.iter().map(|p| keep(p)).collect(),
            dtmf: None,
            speech_ms: input.speech_ms,
            bot_text: reply.say.clone(),
            source: reply.source.clone(),
            timings: Timings {
                end_of_turn_ms: Some(ms(eot_at.duration_since(t.last_voice_at))),
                asr_final_ms: Some(ms(now.duration_since(eot_at))),
                asr_decode_ms: Some(tr.decode_ms),
                asr_engine: tr.engine.into(),
                dialogue_ms: Some(ms(done.duration_since(now))),
                smart_turn_probability: t.smart_turn_prob,
                end_reason: t.end_reason.clone(),
                speculative_hit: speculative,
                ..Default::default()
            },
            ..Default::default()
        };
        self.desk_line("caller", &rec.caller_text);
        self.record.turns.push(rec);
        // Stored now, not at the end: a crash loses at most the turn in flight.
        self.store.upsert(self.record.clone());
        self.turn_timing.insert(turn, (t.last_voice_at, done));
        metrics().turns_total.inc();
        self.queue_reply(Some(turn), reply);
    }

    fn queue_reply(&mut self, turn: Option<u32>, reply: Reply) {
        let delay = self.e.cfg.server.slow_reply_ms;
        let tx = self.internal.clone();
        if delay == 0 {
            let _ = tx.send(Internal::Reply { turn, reply });
        } else {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                let _ = tx.send(Internal::Reply { turn, reply });
            });
        }
    }

    /// Keys pressed for a digits question are one answer, as Twilio's
    /// `<Gather>` takes them: it ends with `#`, at the most digits asked
    /// for, or after `KEY_GAP` without a key. Other keys (a menu choice, 0
    /// for a person) are a turn each.
    async fn on_dtmf(&mut self, d: char) {
        tracing::info!(call = %self.meta.call_id, "DTMF digit received");
        let Expect::Digits { max, .. } = self.expect else {
            return self.keypad_turn(d.to_string()).await;
        };
        if self.bot_audible() {
            self.interrupt().await;
        }
        if d != '#' {
            self.keys.push(d);
        }
        if d == '#' || self.keys.len() >= max.max(1) {
            self.flush_keys(d == '#').await;
        } else {
            self.keys_deadline = Some(Instant::now() + KEY_GAP);
        }
    }

    async fn flush_keys(&mut self, hash: bool) {
        self.keys_deadline = None;
        let mut keys = std::mem::take(&mut self.keys);
        if keys.is_empty() && !hash {
            return;
        }
        if hash {
            keys.push('#');
        }
        self.keypad_turn(keys).await;
    }

    async fn keypad_turn(&mut self, keys: String) {
        if self.bot_audible() {
            self.interrupt().await;
        }
        self.turn_seq += 1;
        let index = self.turn_seq;
        // Keys pressed for a digits question (a PIN) are not recorded.
        let kept = if matches!(self.expect, Expect::Digits { .. }) {
            "*".repeat(keys.len())
        } else {
            keys.clone()
        };
        let input = TurnInput {
            transcript: None,
            dtmf: Some(keys),
            speech_ms: 0,
            index,
        };
        let now = Instant::now();
        let reply = blocking(|| self.dialogue.on_turn(&self.meta, &input));
        self.expect = self.dialogue.expecting();
        self.desk_line("caller", &format!("(keys {})", "•".repeat(kept.len())));
        self.record.turns.push(TurnRecord {
            index,
            dtmf: Some(kept),
            bot_text: reply.say.clone(),
            source: reply.source.clone(),
            timings: Timings {
                end_reason: "dtmf".into(),
                ..Default::default()
            },
            ..Default::default()
        });
        self.store.upsert(self.record.clone());
        self.turn_timing.insert(index, (now, Instant::now()));
        self.queue_reply(Some(index), reply);
    }

    /// The caller stays with the bot rather than being dropped.
    async fn on_transfer_failed(&mut self, status: u16) {
        tracing::info!(call = %self.meta.call_id, status, "transfer failed; the bot takes the call back");
        self.record.outcome = "in_progress".into();
        self.record.transfer_failures += 1;
        metrics().transfers_failed_total.inc();
        self.dialogue.on_transfer_failed(status);
        let reply = Reply {
            say: "I'm sorry, I couldn't reach an agent just now. I'm still here with you. \
                  What else can I help you with?"
                .into(),
            actions: Vec::new(),
            source: "transfer_failed".into(),
        };
        self.queue_reply(None, reply);
    }

    async fn start_reply(&mut self, turn: Option<u32>, reply: Reply) {
        if let Some(p) = self.playing.take() {
            p.cancel.store(true, Ordering::Relaxed);
            self.send(CallOutput::Clear).await;
        }
        self.desk_line("bot", &reply.say);
        self.reply_seq += 1;
        let id = self.reply_seq;
        let cancel = Arc::new(AtomicBool::new(false));
        let slot = turn.and_then(|t| self.record.turns.iter().position(|r| r.index == t));
        if crate::speech::sentences::split(&reply.say).is_empty() {
            self.run_actions(reply.actions).await;
            return;
        }
        match self.e.tts.speak(&reply.say, cancel.clone()) {
            Ok((mut rx, sentences)) => {
                let tx = self.internal.clone();
                tokio::spawn(async move {
                    while let Some(chunk) = rx.recv().await {
                        if tx.send(Internal::Tts { reply: id, chunk }).is_err() {
                            return;
                        }
                    }
                    let _ = tx.send(Internal::TtsDone { reply: id });
                });
                self.playing = Some(Playback {
                    reply: id,
                    cancel,
                    sentences,
                    heard: 0,
                    synth_done: false,
                    paused: false,
                    first_frame: None,
                    audio_ms: 0,
                    actions: reply.actions,
                    turn_slot: slot,
                });
                self.reply_started_at.insert(id, (Instant::now(), turn));
            }
            Err(err) => {
                tracing::warn!(error = %err, "TTS unavailable");
                self.run_actions(reply.actions).await;
            }
        }
    }

    async fn on_tts_chunk(&mut self, reply: u32, chunk: TtsChunk) {
        let Some(p) = self.playing.as_mut().filter(|p| p.reply == reply) else {
            return;
        };
        if chunk.index == 0 || p.audio_ms == 0 {
            if let Some((asked, turn)) = self.reply_started_at.get(&reply).copied() {
                let first_audio = ms(asked.elapsed());
                metrics()
                    .tts_first_audio
                    .observe(first_audio as f64 / 1000.0);
                if let Some(r) =
                    turn.and_then(|t| self.record.turns.iter_mut().find(|r| r.index == t))
                {
                    r.timings.tts_first_audio_ms = Some(first_audio);
                }
                self.first_audio_at.insert(reply, Instant::now());
            }
        }
        p.audio_ms += chunk.ulaw.len() as u64 / 8;
        let mark = format!("r{reply}-s{}", chunk.index);
        self.send(CallOutput::Audio {
            reply,
            ulaw: chunk.ulaw,
        })
        .await;
        self.send(CallOutput::Mark(mark)).await;
    }

    fn on_reply_started(&mut self, reply: u32, at: Instant) {
        if let Some(p) = self.playing.as_mut().filter(|p| p.reply == reply) {
            p.first_frame.get_or_insert(at);
        }
        let Some((_, turn)) = self.reply_started_at.get(&reply).copied() else {
            return;
        };
        let first_audio = self.first_audio_at.get(&reply).copied();
        match turn {
            None => {
                if self.record.greeting_first_frame_ms.is_none() {
                    self.record.greeting_first_frame_ms = Some(ms(at.duration_since(self.started)));
                }
            }
            Some(t) => {
                let Some((last_voice_at, _)) = self.turn_timing.get(&t).copied() else {
                    return;
                };
                let v2v = at.saturating_duration_since(last_voice_at);
                metrics().voice_to_voice.observe(v2v.as_secs_f64());
                if let Some(r) = self.record.turns.iter_mut().find(|r| r.index == t) {
                    r.timings.voice_to_voice_ms = Some(ms(v2v));
                    r.timings.first_frame_ms =
                        first_audio.map(|f| ms(at.saturating_duration_since(f)));
                    tracing::info!(
                        call = %self.meta.call_id,
                        turn = t,
                        voice_to_voice_ms = ms(v2v),
                        end_of_turn_ms = ?r.timings.end_of_turn_ms,
                        asr_final_ms = ?r.timings.asr_final_ms,
                        tts_first_audio_ms = ?r.timings.tts_first_audio_ms,
                        reason = %r.timings.end_reason,
                        speculative = r.timings.speculative_hit,
                        "turn latency"
                    );
                }
                self.store.upsert(self.record.clone());
            }
        }
    }

    async fn on_mark(&mut self, name: &str) {
        if name.starts_with("hold-") {
            return self.on_hold_mark(name).await;
        }
        let Some(p) = self.playing.as_mut() else {
            return;
        };
        let prefix = format!("r{}-", p.reply);
        let Some(rest) = name.strip_prefix(&prefix) else {
            return;
        };
        if rest == "end" {
            if p.synth_done {
                let p = self.playing.take().expect("checked above");
                if let Some(slot) = p.turn_slot {
                    if let Some(r) = self.record.turns.get_mut(slot) {
                        r.heard_text = p.sentences.join(" ");
                        r.heard_ms = p.audio_ms;
                    }
                }
                self.run_actions(p.actions).await;
            }
        } else if let Some(i) = rest.strip_prefix('s').and_then(|s| s.parse::<usize>().ok()) {
            p.heard = p.heard.max(i + 1);
        }
    }

    async fn interrupt(&mut self) {
        let Some(p) = self.playing.take() else { return };
        p.cancel.store(true, Ordering::Relaxed);
        self.send(CallOutput::Clear).await;
        let heard_ms = p
            .first_frame
            .map(|f| ms(f.elapsed()).min(p.audio_ms))
            .unwrap_or(0);
        let heard_text = p.sentences[..p.heard.min(p.sentences.len())].join(" ");
        metrics().barge_ins_total.inc();
        self.record.barge_ins += 1;
        if let Some(r) = p.turn_slot.and_then(|s| self.record.turns.get_mut(s)) {
            r.interrupted = true;
            r.heard_text = heard_text.clone();
            r.heard_ms = heard_ms;
        }
        tracing::info!(call = %self.meta.call_id, heard_ms, heard_sentences = p.heard, "caller interrupted the bot");
        self.dialogue.on_interrupted(&Interruption {
            heard_text,
            heard_ms,
        });
        // Actions of an interrupted reply (e.g. hang up after "goodbye") still
        // apply only if the caller let it finish; drop them.
    }

    async fn run_actions(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Hangup => {
                    self.record.outcome = if self.closing {
                        "node_closed".into()
                    } else {
                        "bot_hung_up".into()
                    };
                    self.send(CallOutput::Hangup).await;
                    self.hangup_sent = true;
                }
                Action::Transfer {
                    target,
                    reason,
                    priority,
                } if self.desk_queue(&target).is_some() => {
                    self.record.outcome = format!("transferred:{target}");
                    let queue = self.desk_queue(&target).unwrap_or_default();
                    self.hold_for_desk(queue, reason, priority).await;
                }
                Action::Transfer {
                    target,
                    reason,
                    priority,
                } => {
                    self.record.outcome = format!("transferred:{target}");
                    tracing::info!(call = %self.meta.call_id, %target, %reason, priority, "transfer to a human");
                    self.send(CallOutput::Transfer {
                        target,
                        reason,
                        priority,
                    })
                    .await;
                }
            }
        }
        self.store.upsert(self.record.clone());
    }
}
