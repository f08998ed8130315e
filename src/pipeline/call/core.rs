//! The call core, sans-IO: [`Input`]s and the time they happened go in,
//! [`Effect`]s come out (send to the transport, transcribe, judge the turn's
//! end, speak, ask the dialogue, store the record, talk to the desk), and
//! `poll_timeout` says when it next needs the clock. It never reads a clock,
//! spawns a task or waits, so every rule below (pause, barge-in, resume,
//! marks, actions, keypad answers, the desk's hold) is tested on simulated
//! time in `tests.rs`; `super::run` is the thin tokio driver.
//!
//! Interruption semantics: when the caller starts to speak over the bot the
//! bot's audio is paused at once; once the speech is confirmed (300 ms of
//! voice) the reply is cancelled and the far end's buffer cleared; if it was
//! only a cough or an "mm-hm", playback resumes where it stopped.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::human::{Enqueuing, Human};
use super::{CallInput, CallOutput};
use crate::asr::{AsrError, Priority, Purpose, Spoken, Transcript};
use crate::desk::{DeskConfig, WaitingInfo};
use crate::dialogue::{Action, CallMeta, Expect, HumanOutcome, Interruption, Reply, TurnInput};
use crate::media::{mulaw, resample::StreamResampler, MODEL_RATE, PHONE_FRAME, PHONE_RATE};
use crate::nlu::lang::{Lang, Phrase};
use crate::nlu::numbers::mask_digits;
use crate::pipeline::endpoint::{self, Verdict};
use crate::pipeline::metrics::metrics;
use crate::pipeline::record::{mask_phone, CallRecord, Timings, TurnRecord};
use crate::speech::TtsChunk;
use crate::turn::{TurnConfig, TurnDetector};

/// Longest turn before it is cut (a monologue; and Whisper, on the digits lane, sees at most 30 s).
pub(super) const MAX_TURN: Duration = Duration::from_secs(28);
/// Voiced audio kept after the last voiced window, so word endings survive.
pub(super) const TAIL_SAMPLES: u64 = 16000 / 10;
/// A keypad answer is over after this long without a key.
pub(super) const KEY_GAP: Duration = Duration::from_secs(3);

/// The voice activity model the core listens with (Silero in the server;
/// anything deterministic in tests).
pub trait Voice: Send {
    /// Speech probability of one 512-sample window at 16 kHz.
    fn probability(&mut self, window: &[f32]) -> f32;
}

/// What a call's rules depend on, fixed for the call.
#[derive(Debug, Clone, Default)]
pub struct CoreConfig {
    pub turn: TurnConfig,
    /// Partial transcripts this often while the caller speaks (0: none).
    pub partial_interval_ms: u64,
    /// Hold each reply this long before speaking it (a slow back end, for tests).
    pub slow_reply_ms: u64,
    /// Said when the node closes, before hanging up.
    pub closing_prompt: String,
    /// The agent desk, when it takes `desk:QUEUE` transfers.
    pub desk: Option<DeskConfig>,
    /// The languages the call's agent answers in, the main lane's first;
    /// with more than one, the caller's is found (`identify.rs`).
    pub languages: Vec<Lang>,
    /// A turn this long is identified while the caller still speaks
    /// (shorter ones only when the dialogue does not understand them).
    pub identify_ms: u64,
}

/// One recognition the core asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Job {
    pub id: u64,
    pub turn: u32,
    pub kind: AsrKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsrKind {
    Partial,
    /// Started at a pause ending at `last_voice`, before end of turn was known.
    Speculative {
        last_voice: u64,
    },
    Final,
    /// Which of the agent's languages the turn is in (no transcript).
    Identify,
}

/// What happened, as the driver tells the core.
#[derive(Debug)]
pub enum Input {
    /// From the transport.
    Caller(CallInput),
    /// The node is closing.
    Closing,
    /// A recognition finished (or could not start).
    Transcript {
        job: Job,
        result: Result<Transcript, AsrError>,
    },
    /// Smart Turn's judgement of the pause ending at `pause`.
    SmartTurn {
        turn: u32,
        pause: u64,
        prob: f32,
    },
    /// Speech for reply `reply` started: it is said in these parts.
    Speaking {
        reply: u32,
        sentences: Vec<String>,
    },
    /// The voice could not say reply `reply`.
    SpeechFailed {
        reply: u32,
    },
    /// The next part of reply `reply`.
    Speech {
        reply: u32,
        chunk: TtsChunk,
    },
    /// Every part of reply `reply` has been given.
    SpeechDone {
        reply: u32,
    },
    /// The dialogue's answer to [`Ask::Greeting`] (`turn: None`) or
    /// [`Ask::Turn`], and what it expects next.
    Answer {
        turn: Option<u32>,
        reply: Reply,
        expect: Expect,
        /// The language the conversation is in now, when it knows.
        language: Option<Lang>,
    },
    Desk(DeskInput),
    /// The dialogue's answer to [`Ask::Understands`].
    Understood {
        turn: u32,
        yes: bool,
    },
}

/// What the agent desk says to a call it holds.
#[derive(Debug)]
pub enum DeskInput {
    /// The desk took the call into its queue, or could not (why).
    Enqueued(Result<(), String>),
    /// The caller's place in their queue, for a hold reminder.
    Place(Option<usize>),
    /// `agent` took the call at `asked`; the driver holds their audio leg.
    Take { agent: String, asked: Instant },
    /// Back to the bot.
    Return,
    /// On to another queue.
    Requeue { queue: String },
    /// The agent's next frame; `None`: their leg closed.
    AgentFrame(Option<Vec<u8>>),
}

/// What the core asks the driver to do, in order.
#[derive(Debug)]
pub enum Effect {
    /// To the transport (back-pressure: the driver waits, nothing is dropped).
    Out(CallOutput),
    Transcribe {
        job: Job,
        purpose: Purpose,
        /// The language to decode in, or to find out.
        spoken: Spoken,
        priority: Priority,
        audio: Arc<Vec<f32>>,
    },
    /// A recognition's result is no longer wanted.
    CancelTranscribe(u64),
    /// Is the turn over at the pause ending at `pause`? (Smart Turn)
    JudgeTurn {
        turn: u32,
        pause: u64,
        audio: Arc<Vec<f32>>,
    },
    Speak {
        reply: u32,
        text: String,
        /// The voice's language.
        lang: Lang,
    },
    /// Stop synthesising reply `reply`.
    CancelSpeech(u32),
    Ask(Ask),
    /// The call record changed: store it.
    Save,
    /// A line of the live transcript for supervisors at the desk.
    Line {
        speaker: &'static str,
        text: String,
    },
    Desk(DeskOp),
    /// The caller's voice for the agent (may be dropped if the leg is slow).
    ToAgent(Vec<u8>),
}

/// A question or news for the call's dialogue.
#[derive(Debug)]
pub enum Ask {
    Greeting,
    /// Answer with [`Input::Answer`].
    Turn(TurnInput),
    Interrupted(Interruption),
    TransferFailed(u16),
    Human(HumanOutcome),
    /// Does the dialogue plainly understand these words in its main
    /// language? Answer with [`Input::Understood`]; nothing changes.
    Understands {
        turn: u32,
        text: String,
    },
}

#[derive(Debug)]
pub enum DeskOp {
    /// Put the call in the desk's queue; answer with [`DeskInput::Enqueued`].
    Enqueue(WaitingInfo),
    /// The call leaves the desk (the agent's leg, if any, ends).
    Leave(&'static str),
    /// The agent's leg ends; the call stays with the desk.
    EndLeg,
    /// Answer with [`DeskInput::Place`].
    Position,
}

pub(super) struct Playback {
    pub(super) reply: u32,
    pub(super) sentences: Vec<String>,
    pub(super) heard: usize,
    pub(super) synth_done: bool,
    pub(super) paused: bool,
    pub(super) first_frame: Option<Instant>,
    pub(super) audio_ms: u64,
    pub(super) actions: Vec<Action>,
    /// Index into `record.turns` this reply answers, if any.
    pub(super) turn_slot: Option<usize>,
}

pub(super) struct Spec {
    pub(super) last_voice: u64,
    pub(super) job: u64,
    pub(super) result: Option<Transcript>,
    /// What the transcript's words say about the turn being over.
    pub(super) verdict: Option<Verdict>,
}

pub(super) struct PendingTurn {
    pub(super) index: u32,
    pub(super) onset: u64,
    pub(super) last_voice: u64,
    pub(super) last_voice_at: Instant,
    pub(super) eot_at: Option<Instant>,
    pub(super) confirmed: bool,
    pub(super) partials: Vec<String>,
    pub(super) smart_turn_prob: Option<f32>,
    /// Smart Turn judged the turn complete at the pause ending here.
    pub(super) smart_turn_yes: Option<u64>,
    pub(super) end_reason: &'static str,
    /// The speculative transcript started at this turn's latest pause.
    pub(super) spec: Option<Spec>,
    /// Identification was asked for this turn's audio.
    pub(super) ident_asked: bool,
    /// The main lane's transcript (and whether it was the speculative
    /// one), held while the call's language is being found.
    pub(super) held: Option<(Transcript, bool)>,
    /// Let through without its language: understood in the main one, or
    /// identification failed.
    pub(super) released: bool,
    /// The turn ended early (at a pause) that this one goes on from, while
    /// that one still waits for its transcript.
    pub(super) continues: Option<u32>,
    /// What that earlier turn said. This turn's audio starts where that
    /// one's did, so its own transcript covers those words (decoded with
    /// the rest, not in halves); these serve when it hears nothing more.
    pub(super) carried: Option<Carried>,
}

/// What a turn ended too early said, kept for the turn that goes on from it.
#[derive(Debug, Clone)]
pub(super) struct Carried {
    pub(super) text: String,
    pub(super) partials: Vec<String>,
}

/// A turn handed to the dialogue, waiting for its answer.
struct Asked {
    record: TurnRecord,
    /// Caller's last voiced frame (or key), for voice-to-voice.
    last_voice_at: Instant,
    at: Instant,
}

pub struct CallCore {
    pub(super) cfg: CoreConfig,
    pub(super) meta: CallMeta,
    pub(super) record: CallRecord,
    pub(super) started: Instant,
    /// The time of the input being handled.
    pub(super) now: Instant,
    effects: VecDeque<Effect>,

    voice: Box<dyn Voice>,
    up: StreamResampler,
    pcm8: Vec<f32>,
    pending16: Vec<f32>,
    pub(super) det: TurnDetector,
    /// 16 kHz audio from `buf_start` up to the detector's position.
    pub(super) audio: Vec<f32>,
    pub(super) buf_start: u64,
    /// Arrival time of recent windows, by end position.
    pub(super) arrivals: VecDeque<(u64, Instant)>,

    pub(super) turn_seq: u32,
    pub(super) turn: Option<PendingTurn>,
    /// Turns that ended and wait for their final transcript.
    pub(super) ended: Vec<PendingTurn>,
    asked: HashMap<u32, Asked>,
    /// Per answered turn: (caller's last voiced frame, reply decided).
    pub(super) turn_timing: HashMap<u32, (Instant, Instant)>,
    /// Per reply: (TTS asked, turn it answers).
    pub(super) reply_started_at: HashMap<u32, (Instant, Option<u32>)>,
    pub(super) first_audio_at: HashMap<u32, Instant>,
    pub(super) partial_inflight: bool,
    pub(super) last_partial_pos: u64,
    job_seq: u64,
    /// What the bot's last question asked for.
    pub(super) expect: Expect,
    /// The last turn ended early (not by the fallback): (index, its last
    /// voiced position), to notice a caller who was not finished.
    pub(super) last_early_end: Option<(u32, u64)>,

    pub(super) reply_seq: u32,
    pub(super) playing: Option<Playback>,
    /// Replies decided but held (`slow_reply_ms`): due time, turn, reply.
    pub(super) delayed: VecDeque<(Instant, Option<u32>, Reply)>,
    pub(super) hangup_sent: bool,
    /// The node is closing: the goodbye plays and nothing the caller says
    /// starts another reply.
    pub(super) closing: bool,
    /// Keys gathered for a digits question, and when they count as done.
    keys: String,
    keys_deadline: Option<Instant>,
    /// Until when a `#` ends the keys already taken as a full answer
    /// ("1234#" for a four-digit PIN): it is not a turn of its own.
    hash_ends_until: Option<Instant>,
    /// On hold for, or talking to, a desk agent.
    pub(super) human: Option<Human>,
    pub(super) enqueuing: Option<Enqueuing>,
    /// The caller's language, once identified or chosen.
    pub(super) language: Option<Lang>,
    /// The identification in flight, at most one per call.
    pub(super) identifying: Option<super::identify::Identifying>,
    /// Identifications that found no language sure enough.
    pub(super) unsure: super::identify::Unsure,
}

pub(super) fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl CallCore {
    /// A new call at `now` (`unix_ms`: the wall clock then); the first
    /// effect asks the dialogue for the greeting.
    pub fn new(
        cfg: CoreConfig,
        meta: CallMeta,
        voice: Box<dyn Voice>,
        now: Instant,
        unix_ms: u64,
    ) -> Result<Self, crate::media::resample::ResampleError> {
        let record = CallRecord {
            call_id: meta.call_id.clone(),
            stream_id: meta.params.get("streamSid").cloned().unwrap_or_default(),
            channel: meta.channel.clone(),
            from_masked: meta.from.as_deref().map(mask_phone),
            started_unix_ms: unix_ms,
            outcome: "in_progress".into(),
            ..Default::default()
        };
        let up = StreamResampler::new(PHONE_RATE, MODEL_RATE, PHONE_FRAME)?;
        let det = TurnDetector::new(cfg.turn.clone());
        let mut c = Self {
            cfg,
            meta,
            record,
            started: now,
            now,
            effects: VecDeque::new(),
            voice,
            up,
            pcm8: Vec::with_capacity(PHONE_FRAME),
            pending16: Vec::new(),
            det,
            audio: Vec::new(),
            buf_start: 0,
            arrivals: VecDeque::new(),
            turn_seq: 0,
            turn: None,
            ended: Vec::new(),
            asked: HashMap::new(),
            turn_timing: HashMap::new(),
            reply_started_at: HashMap::new(),
            first_audio_at: HashMap::new(),
            partial_inflight: false,
            last_partial_pos: 0,
            job_seq: 0,
            expect: Expect::Open,
            last_early_end: None,
            reply_seq: 0,
            playing: None,
            delayed: VecDeque::new(),
            hangup_sent: false,
            closing: false,
            keys: String::new(),
            keys_deadline: None,
            hash_ends_until: None,
            human: None,
            enqueuing: None,
            language: None,
            identifying: None,
            unsure: Default::default(),
        };
        c.emit(Effect::Ask(Ask::Greeting));
        Ok(c)
    }

    pub fn record(&self) -> &CallRecord {
        &self.record
    }

    /// The bot hung up and its last words were heard: the call is over.
    pub fn is_done(&self) -> bool {
        self.hangup_sent && self.playing.is_none()
    }

    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// When `handle_timeout` is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.keys_deadline,
            self.delayed.front().map(|d| d.0),
            super::human::next_timer(&self.human),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        if self.keys_deadline.is_some_and(|d| now >= d) {
            self.flush_keys(false);
        }
        while self.delayed.front().is_some_and(|d| now >= d.0) {
            if let Some((_, turn, reply)) = self.delayed.pop_front() {
                if !self.closing {
                    self.start_reply(turn, reply);
                }
            }
        }
        if super::human::next_timer(&self.human).is_some_and(|t| now >= t) {
            self.on_hold_timer();
        }
    }

    pub fn handle(&mut self, now: Instant, input: Input) {
        self.now = now;
        match input {
            Input::Caller(i) => self.on_caller(i),
            Input::Closing if !self.closing => self.on_closing(),
            Input::Closing => {}
            // What the caller said is no longer answered.
            Input::Transcript { job, .. } if self.closing => match job.kind {
                AsrKind::Partial => self.partial_inflight = false,
                AsrKind::Identify => self.identifying = None,
                _ => {}
            },
            Input::Understood { .. } if self.closing => {}
            Input::SmartTurn { .. } if self.closing => {}
            Input::Transcript { job, result } => self.on_transcript(job, result),
            Input::SmartTurn { turn, pause, prob } => self.on_smart_turn(turn, pause, prob),
            Input::Speaking { reply, sentences } => {
                if let Some(p) = self.playing.as_mut().filter(|p| p.reply == reply) {
                    p.sentences = sentences;
                }
            }
            Input::SpeechFailed { reply } => {
                if self.playing.as_ref().is_some_and(|p| p.reply == reply) {
                    tracing::warn!(call = %self.meta.call_id, "TTS unavailable");
                    if let Some(p) = self.playing.take() {
                        self.run_actions(p.actions);
                    }
                }
            }
            Input::Speech { reply, chunk } => self.on_tts_chunk(reply, chunk),
            Input::SpeechDone { reply } => {
                if let Some(p) = self.playing.as_mut().filter(|p| p.reply == reply) {
                    p.synth_done = true;
                    self.out(CallOutput::Mark(format!("r{reply}-end")));
                }
            }
            Input::Answer {
                turn,
                reply,
                expect,
                language,
            } => {
                // The dialogue moved the call to another language (the
                // caller's record, the greeting's menu): no need to find it.
                // Its own language is only a default and settles nothing.
                let main = self.cfg.languages.first().copied();
                if let Some(l) =
                    language.filter(|l| self.cfg.languages.len() > 1 && Some(*l) != main)
                {
                    self.set_language(l);
                }
                self.on_answer(turn, reply, expect)
            }
            Input::Desk(d) => self.on_desk(d),
            Input::Understood { turn, yes } => self.on_understood(turn, yes),
        }
    }

    /// The caller hung up (or the transport went away): close the record.
    /// The driver adds the dialogue's state and stores it.
    pub fn finish(&mut self, now: Instant) {
        self.now = now;
        if let Some(p) = self.playing.take() {
            self.emit(Effect::CancelSpeech(p.reply));
        }
        let specs: Vec<u64> = self
            .turn
            .iter_mut()
            .chain(self.ended.iter_mut())
            .filter_map(|t| t.spec.take().map(|s| s.job))
            .collect();
        let ident = self.identifying.take().map(|i| i.job);
        for job in specs.into_iter().chain(ident) {
            self.emit(Effect::CancelTranscribe(job));
        }
        self.human_on_hangup();
        self.record.ended_unix_ms = Some(self.unix_ms());
        if self.record.outcome == "in_progress" {
            self.record.outcome = "caller_hung_up".into();
        }
    }

    /// The call's mean voice-to-voice time, when any turn was answered.
    pub fn mean_voice_to_voice_ms(&self) -> Option<i64> {
        let v2v: Vec<u64> = self
            .record
            .turns
            .iter()
            .filter_map(|t| t.timings.voice_to_voice_ms)
            .collect();
        (!v2v.is_empty()).then(|| (v2v.iter().sum::<u64>() / v2v.len() as u64) as i64)
    }

    pub(super) fn emit(&mut self, e: Effect) {
        self.effects.push_back(e);
    }

    pub(super) fn out(&mut self, o: CallOutput) {
        self.emit(Effect::Out(o));
    }

    pub(super) fn save(&mut self) {
        self.emit(Effect::Save);
    }

    /// Wall-clock time now, from the call's start (the core reads no clock).
    pub(super) fn unix_ms(&self) -> u64 {
        self.record.started_unix_ms + ms(self.now.saturating_duration_since(self.started))
    }

    pub(super) fn line(&mut self, speaker: &'static str, text: &str) {
        if self.cfg.desk.is_some() && !text.is_empty() {
            self.emit(Effect::Line {
                speaker,
                text: text.to_string(),
            });
        }
    }

    pub(super) fn next_job(&mut self, turn: u32, kind: AsrKind) -> Job {
        self.job_seq += 1;
        Job {
            id: self.job_seq,
            turn,
            kind,
        }
    }

    fn on_caller(&mut self, i: CallInput) {
        match i {
            CallInput::Audio(_) if self.closing => {}
            // With the desk, the caller talks to a person, not the bot.
            CallInput::Audio(ulaw) if self.human.is_some() => self.relay_to_agent(ulaw),
            CallInput::Dtmf(_) if self.human.is_some() => {}
            CallInput::Audio(ulaw) => self.on_audio(&ulaw),
            CallInput::Dtmf(d) => self.on_dtmf(d),
            CallInput::MarkPlayed(name) => self.on_mark(&name),
            CallInput::ReplyStarted { reply, at } => self.on_reply_started(reply, at),
            CallInput::TransferFailed { status } => self.on_transfer_failed(status),
            CallInput::MediaQuality(q) => self.record.media = Some(q),
            // The driver ends the call (`finish`).
            CallInput::Hangup => {}
        }
    }

    /// μ-law from the caller, through the resampler into 32 ms windows.
    fn on_audio(&mut self, ulaw: &[u8]) {
        self.pcm8.clear();
        mulaw::decode_to_f32(ulaw, &mut self.pcm8);
        match self.up.push(&self.pcm8) {
            Ok(s) => self.pending16.extend(s),
            Err(err) => {
                tracing::warn!(error = %err, "resampling failed");
                return;
            }
        }
        while self.pending16.len() >= crate::turn::vad::WINDOW {
            let w: Vec<f32> = self.pending16.drain(..crate::turn::vad::WINDOW).collect();
            let prob = self.voice.probability(&w);
            self.on_window(w, prob);
        }
    }

    /// The node is closing: say so, then hang up once it has been heard.
    fn on_closing(&mut self) {
        self.closing = true;
        tracing::info!(call = %self.meta.call_id, "node closing: ending the call");
        // The configured prompt is the main language's; a caller in
        // another hears that language's.
        let lang = self.voice_language();
        let say = match self.cfg.languages.first() {
            Some(main) if *main != lang => lang.phrase(Phrase::Closing).to_string(),
            _ => self.cfg.closing_prompt.clone(),
        };
        let reply = Reply {
            say,
            actions: vec![Action::Hangup],
            source: "closing".into(),
        };
        self.start_reply(None, reply);
    }

    fn on_transcript(&mut self, job: Job, result: Result<Transcript, AsrError>) {
        let turn = job.turn;
        match job.kind {
            AsrKind::Partial => {
                self.partial_inflight = false;
                if let Ok(tr) = result {
                    if !tr.text.is_empty() {
                        tracing::debug!(call = %self.meta.call_id, turn, partial = %mask_digits(&tr.text), "partial");
                        if let Some(t) = self.turn.as_mut().filter(|t| t.index == turn) {
                            t.partials.push(tr.text);
                        }
                    }
                }
            }
            AsrKind::Speculative { .. } => {
                let matches = |t: &PendingTurn| {
                    t.index == turn && t.spec.as_ref().is_some_and(|s| s.job == job.id)
                };
                let expect = self.expect;
                if let Some(t) = self.turn.as_mut().filter(|t| matches(t)) {
                    // The caller is still in the turn: keep it for the end,
                    // and let its words help decide when that is.
                    let mut text = None;
                    match result {
                        Ok(tr) => {
                            if let Some(s) = t.spec.as_mut() {
                                s.verdict = Some(endpoint::verdict(&tr.text, expect));
                                text = Some(tr.text.clone());
                                s.result = Some(tr);
                            }
                        }
                        Err(_) => t.spec = None,
                    }
                    if let Some(text) = text {
                        self.ask_understood(turn, &text);
                    }
                    self.check_endpoint();
                } else if let Some(t) = self.ended.iter_mut().find(|t| matches(t)) {
                    t.spec = None;
                    match result {
                        Ok(tr) => self.on_final(turn, tr, true),
                        Err(_) => self.retry_final(turn),
                    }
                }
            }
            AsrKind::Identify => self.on_identified(job, result),
            AsrKind::Final => match result {
                Ok(tr) => self.on_final(turn, tr, false),
                Err(err) => {
                    tracing::warn!(call = %self.meta.call_id, error = %err, "final ASR failed");
                    self.ended.retain(|t| t.index != turn);
                    self.resume_if_paused();
                }
            },
        }
    }

    fn on_smart_turn(&mut self, turn: u32, pause: u64, prob: f32) {
        let yes = prob >= self.det.config().smart_turn_threshold;
        if let Some(t) = self.turn.as_mut().filter(|t| t.index == turn) {
            t.smart_turn_prob = Some(prob);
            if yes && t.last_voice == pause {
                t.smart_turn_yes = Some(pause);
            }
        }
        self.check_endpoint();
    }

    /// The final transcript missed (or failed): decode the turn again.
    pub(super) fn retry_final(&mut self, turn: u32) {
        let Some(t) = self.ended.iter().find(|t| t.index == turn) else {
            return;
        };
        let audio = Arc::new(self.slice(
            t.onset.saturating_sub(self.preroll()),
            t.last_voice + TAIL_SAMPLES,
        ));
        let job = self.next_job(turn, AsrKind::Final);
        let purpose = self.purpose();
        let spoken = self.spoken();
        self.emit(Effect::Transcribe {
            job,
            purpose,
            spoken,
            priority: Priority::Final,
            audio,
        });
    }

    pub(super) fn on_final(&mut self, turn: u32, tr: Transcript, speculative: bool) {
        if self.hold_for_language(turn, &tr, speculative) {
            return;
        }
        let Some(pos) = self.ended.iter().position(|t| t.index == turn) else {
            return;
        };
        let t = self.ended.remove(pos);
        // Callers read PINs and card numbers aloud: logs never hold the digits.
        tracing::info!(call = %self.meta.call_id, turn, text = %mask_digits(&tr.text), queue_ms = tr.queue_ms, decode_ms = tr.decode_ms, speculative, "caller said");
        self.answer(t, tr, speculative);
    }

    /// Hands an ended turn's words to the dialogue (a turn that went on
    /// from one cut too early heard the whole utterance; the earlier words
    /// serve only if it heard nothing); or, when the caller already went on
    /// from this one, keeps them with the turn in progress instead (one
    /// answer for the whole utterance, not one for each half).
    pub(super) fn answer(&mut self, t: PendingTurn, tr: Transcript, speculative: bool) {
        let turn = t.index;
        let (text, mut partials) = match &t.carried {
            Some(c) if tr.text.is_empty() => (c.text.clone(), c.partials.clone()),
            Some(c) => (tr.text.clone(), c.partials.clone()),
            None => (tr.text.clone(), Vec::new()),
        };
        partials.extend(t.partials.iter().cloned());
        if let Some(next) = self
            .turn
            .iter_mut()
            .chain(self.ended.iter_mut())
            .find(|n| n.continues == Some(turn))
        {
            if !text.is_empty() {
                tracing::debug!(call = %self.meta.call_id, turn, next = next.index, "the caller went on: this turn's words open the next one");
                next.carried = Some(Carried { text, partials });
                return;
            }
        }
        let now = self.now;
        let eot_at = t.eot_at.unwrap_or(now);
        if text.is_empty() {
            self.resume_if_paused();
            return;
        }
        let tr = Transcript { text, ..tr };
        metrics()
            .asr_final
            .observe(now.duration_since(eot_at).as_secs_f64());
        // The record of a turn that answered a digits question (a PIN, an
        // account or card number) keeps no digits.
        let answering_digits = matches!(self.expect, Expect::Digits { .. });
        let keep = |s: &str| {
            if answering_digits {
                mask_digits(s)
            } else {
                s.to_string()
            }
        };
        let input = TurnInput {
            transcript: Some(tr.text.clone()),
            dtmf: None,
            speech_ms: t.last_voice.saturating_sub(t.onset) / 16,
            index: turn,
            language: self.language.map(|l| l.code().to_string()),
        };
        let record = TurnRecord {
            index: turn,
            caller_text: keep(&tr.text),
            partials: partials.iter().map(|p| keep(p)).collect(),
            dtmf: None,
            speech_ms: input.speech_ms,
            timings: Timings {
                // Its first part was ended at a pause the caller went on from.
                cut_early: t.carried.is_some(),
                end_of_turn_ms: Some(ms(eot_at.duration_since(t.last_voice_at))),
                asr_final_ms: Some(ms(now.duration_since(eot_at))),
                asr_decode_ms: Some(tr.decode_ms),
                asr_engine: tr.engine.into(),
                smart_turn_probability: t.smart_turn_prob,
                end_reason: t.end_reason.into(),
                speculative_hit: speculative,
                ..Default::default()
            },
            ..Default::default()
        };
        self.ask_turn(input, record, t.last_voice_at);
    }

    /// Hands a turn to the dialogue; `on_answer` finishes its record.
    fn ask_turn(&mut self, input: TurnInput, record: TurnRecord, last_voice_at: Instant) {
        let index = input.index;
        self.asked.insert(
            index,
            Asked {
                record,
                last_voice_at,
                at: self.now,
            },
        );
        self.emit(Effect::Ask(Ask::Turn(input)));
    }

    /// The call goes on in `l`: its turns are decoded and its replies
    /// spoken in it.
    pub(super) fn set_language(&mut self, l: Lang) {
        self.language = Some(l);
        self.record.language = Some(l.code().to_string());
    }

    /// The language the caller's next words are decoded in.
    pub(super) fn spoken(&self) -> Spoken {
        let main = self.cfg.languages.first().copied().unwrap_or_default();
        match self.language {
            _ if self.cfg.languages.len() < 2 => Spoken::Main,
            // Not known yet: the main lane hears it while it is found.
            None => Spoken::Main,
            Some(l) if l == main => Spoken::Main,
            Some(l) => Spoken::In(l),
        }
    }

    /// The language replies are spoken in.
    pub(super) fn voice_language(&self) -> Lang {
        self.language
            .or(self.cfg.languages.first().copied())
            .unwrap_or_default()
    }

    fn on_answer(&mut self, turn: Option<u32>, reply: Reply, expect: Expect) {
        self.expect = expect;
        let Some(index) = turn else {
            // The greeting.
            self.record.greeting = reply.say.clone();
            self.start_reply(None, reply);
            self.save();
            return;
        };
        let Some(a) = self.asked.remove(&index) else {
            return;
        };
        let mut rec = a.record;
        rec.bot_text = reply.say.clone();
        rec.source = reply.source.clone();
        if rec.dtmf.is_none() {
            rec.timings.dialogue_ms = Some(ms(self.now.saturating_duration_since(a.at)));
        }
        let caller_line = match &rec.dtmf {
            Some(k) => format!("(keys {})", "•".repeat(k.len())),
            None => rec.caller_text.clone(),
        };
        self.line("caller", &caller_line);
        self.record.turns.push(rec);
        // Stored now, not at the end: a crash loses at most the turn in flight.
        self.save();
        self.turn_timing.insert(index, (a.last_voice_at, self.now));
        metrics().turns_total.inc();
        self.queue_reply(Some(index), reply);
    }

    /// Keys pressed for a digits question are one answer, as Twilio's
    /// `<Gather>` takes them: it ends with `#`, at the most digits asked
    /// for, or after `KEY_GAP` without a key. Other keys (a menu choice, 0
    /// for a person) are a turn each.
    fn on_dtmf(&mut self, d: char) {
        tracing::info!(call = %self.meta.call_id, "DTMF digit received");
        if self.closing {
            return;
        }
        // The `#` after keys that filled the answer: by now the answer may
        // have moved the dialogue on (the flow done, another question),
        // where a `#` alone would be a turn, and its fallback would cut off
        // the reply the keys earned.
        if self.hash_ends_until.take().is_some_and(|t| self.now <= t) && d == '#' {
            return;
        }
        let Expect::Digits { max, .. } = self.expect else {
            return self.keypad_turn(d.to_string());
        };
        if self.bot_audible() {
            self.interrupt();
        }
        if d != '#' {
            self.keys.push(d);
        }
        if d == '#' || self.keys.len() >= max.max(1) {
            if d != '#' {
                self.hash_ends_until = Some(self.now + KEY_GAP);
            }
            self.flush_keys(d == '#');
        } else {
            self.keys_deadline = Some(self.now + KEY_GAP);
        }
    }

    fn flush_keys(&mut self, hash: bool) {
        self.keys_deadline = None;
        let mut keys = std::mem::take(&mut self.keys);
        // Nothing to end: `#` after the keys that filled the answer.
        if keys.is_empty() {
            return;
        }
        if hash {
            keys.push('#');
        }
        self.keypad_turn(keys);
    }

    fn keypad_turn(&mut self, keys: String) {
        if self.bot_audible() {
            self.interrupt();
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
            language: self.language.map(|l| l.code().to_string()),
        };
        let record = TurnRecord {
            index,
            dtmf: Some(kept),
            timings: Timings {
                end_reason: "dtmf".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        self.ask_turn(input, record, self.now);
    }

    /// The caller stays with the bot rather than being dropped.
    pub(super) fn on_transfer_failed(&mut self, status: u16) {
        tracing::info!(call = %self.meta.call_id, status, "transfer failed; the bot takes the call back");
        self.record.outcome = "in_progress".into();
        self.record.transfer_failures += 1;
        metrics().transfers_failed_total.inc();
        self.emit(Effect::Ask(Ask::TransferFailed(status)));
        let reply = Reply {
            say: self.voice_language().phrase(Phrase::TransferFailed).into(),
            actions: Vec::new(),
            source: "transfer_failed".into(),
        };
        self.queue_reply(None, reply);
    }
}
