//! The per-call pipeline: a sans-IO [`core::CallCore`] holding every rule
//! of the call, and this thin tokio driver that runs its effects — model
//! work on the shared ASR/TTS pools or the blocking pool (results come back
//! as inputs, so the task never waits on a model), the dialogue, the store,
//! the desk — and feeds it the transport's input and the clock.
//!
//! Inputs are transport-neutral (`CallInput`: μ-law audio, DTMF, played
//! marks); outputs are `CallOutput` commands for the transport driver.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

mod core;
mod human;
mod identify;
mod listen;
mod reply;
#[cfg(test)]
mod tests;

use self::core::{Ask, CallCore, CoreConfig, DeskInput, DeskOp, Effect, Input, Voice};
use super::engines::Engines;
use super::metrics::metrics;
use super::record::CallStore;
use crate::asr::{AsrError, Priority, Purpose, Spoken, Transcript};
use crate::desk::{AgentLeg, ToCall};
use crate::dialogue::{CallMeta, Dialogue};
use crate::nlu::lang::Lang;
use crate::turn::vad::{SileroVad, VadState};

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

/// Silero with this call's recurrent state.
struct Silero {
    e: Arc<Engines>,
    state: VadState,
}

impl Voice for Silero {
    fn probability(&mut self, window: &[f32]) -> f32 {
        let vad: &SileroVad = &self.e.vad;
        vad.probability(&mut self.state, window)
            .unwrap_or_else(|err| {
                tracing::warn!(error = %err, "VAD failed");
                0.0
            })
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

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// What the driver holds for the core: the engines, the dialogue, the
/// transport's output, and the handles of work in flight.
struct Driver {
    e: Arc<Engines>,
    meta: CallMeta,
    dialogue: Box<dyn Dialogue>,
    out: mpsc::Sender<CallOutput>,
    /// Results of work this call started (one per ASR job, the chunks of a
    /// reply it is speaking). Unbounded on purpose: what arrives is capped
    /// by what the call asked for (ASR and TTS pools are bounded, replies
    /// are one per turn), never by the caller's packets, and a bounded
    /// queue here could block the forwarders of the call's own work.
    results: mpsc::UnboundedSender<Input>,
    store: Arc<CallStore>,
    /// Cancel flags of recognitions and speech in flight.
    asr_jobs: HashMap<u64, Arc<AtomicBool>>,
    speech: HashMap<u32, Arc<AtomicBool>>,
    /// The desk's line to this call while it is there, and the agent's leg.
    desk_rx: Option<mpsc::Receiver<ToCall>>,
    leg: Option<AgentLeg>,
}

/// A recognition's result, as it will come.
type ResultFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Transcript, AsrError>> + Send>>;

enum Woke {
    Desk(ToCall),
    Agent(Option<Vec<u8>>),
}

/// The desk's next word, or the agent's next frame (never, when neither).
async fn from_desk(rx: &mut Option<mpsc::Receiver<ToCall>>, leg: &mut Option<AgentLeg>) -> Woke {
    let command = async {
        match rx.as_mut() {
            Some(rx) => match rx.recv().await {
                Some(c) => Woke::Desk(c),
                // The desk keeps its end while the call is listed.
                None => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    };
    match leg.as_mut() {
        Some(l) => tokio::select! {
            c = command => c,
            f = l.from_agent.recv() => Woke::Agent(f),
        },
        None => command.await,
    }
}

async fn run(
    e: Arc<Engines>,
    meta: CallMeta,
    store: Arc<CallStore>,
    mut input: mpsc::Receiver<CallInput>,
    out: mpsc::Sender<CallOutput>,
) {
    let m = metrics();
    let factory = meta
        .params
        .get("agent")
        .and_then(|a| e.agents.get(a))
        .unwrap_or(&e.dialogue);
    // Identification needs the multilingual lane; without it the call
    // stays in the main language.
    let languages: Vec<Lang> = if e.asr.multilingual() {
        factory
            .languages()
            .iter()
            .filter_map(|l| Lang::parse(l))
            .collect()
    } else {
        Vec::new()
    };
    let dialogue = factory.new_dialogue();
    let cfg = CoreConfig {
        turn: e.cfg.turn.clone(),
        partial_interval_ms: e.cfg.asr.partial_interval_ms,
        slow_reply_ms: e.cfg.server.slow_reply_ms,
        closing_prompt: e.cfg.server.closing_prompt.clone(),
        desk: e
            .desk
            .as_ref()
            .map(|d| d.config().clone())
            .filter(|d| d.enabled),
        languages,
        identify_ms: e.cfg.asr.langid_window_ms,
    };
    let voice = Box::new(Silero {
        e: e.clone(),
        state: VadState::default(),
    });
    let mut core = match CallCore::new(cfg, meta.clone(), voice, Instant::now(), unix_ms()) {
        Ok(c) => c,
        Err(err) => {
            tracing::error!(error = %err, "cannot start call");
            return;
        }
    };
    m.calls_total.inc();
    m.calls_active.inc();
    let (results, mut irx) = mpsc::unbounded_channel();
    let mut d = Driver {
        dialogue,
        e,
        meta,
        out,
        results,
        store,
        asr_jobs: HashMap::new(),
        speech: HashMap::new(),
        desk_rx: None,
        leg: None,
    };
    // Counted until this task ends (after the interaction is saved), so a
    // draining node waits for it.
    let _live = d.store.begin();
    let mut closing = d.store.closing();
    tracing::info!(call = %d.meta.call_id, channel = %d.meta.channel, from = ?core.record().from_masked, "call started");
    if let Some(desk) = &d.e.desk {
        desk.call_started(&d.meta.call_id, &d.meta.channel);
    }
    d.apply(&mut core).await;
    if *closing.borrow_and_update() {
        core.handle(Instant::now(), Input::Closing);
        d.apply(&mut core).await;
    }
    while !core.is_done() {
        let timeout = core.poll_timeout();
        tokio::select! {
            msg = input.recv() => match msg {
                Some(CallInput::Hangup) | None => break,
                Some(i) => core.handle(Instant::now(), Input::Caller(i)),
            },
            Some(ev) = irx.recv() => {
                d.settled(&ev);
                core.handle(Instant::now(), ev);
            }
            Ok(()) = closing.changed() => core.handle(Instant::now(), Input::Closing),
            _ = sleep_until_some(timeout) => core.handle_timeout(Instant::now()),
            w = from_desk(&mut d.desk_rx, &mut d.leg) => {
                let input = match w {
                    Woke::Desk(ToCall::Take { agent, leg, asked }) => {
                        d.leg = Some(leg);
                        DeskInput::Take { agent, asked }
                    }
                    Woke::Desk(ToCall::Return) => DeskInput::Return,
                    Woke::Desk(ToCall::Requeue { queue }) => DeskInput::Requeue { queue },
                    Woke::Agent(f) => {
                        if f.is_none() {
                            d.leg = None;
                        }
                        DeskInput::AgentFrame(f)
                    }
                };
                core.handle(Instant::now(), Input::Desk(input));
            }
        }
        d.apply(&mut core).await;
    }
    core.finish(Instant::now());
    d.apply(&mut core).await;
    for cancel in d.asr_jobs.values().chain(d.speech.values()) {
        cancel.store(true, Ordering::Relaxed);
    }
    if let Some(desk) = &d.e.desk {
        desk.call_ended(&d.meta.call_id);
    }
    let mut record = core.record().clone();
    record.dialogue = d.dialogue.state_json();
    d.dialogue.on_call_end(core.mean_voice_to_voice_ms());
    d.store.upsert(record);
    m.calls_active.dec();
    tracing::info!(call = %d.meta.call_id, turns = core.record().turns.len(), outcome = %core.record().outcome, "call ended");
}

impl Driver {
    /// Work whose result is in no longer needs its cancel flag.
    fn settled(&mut self, ev: &Input) {
        match ev {
            Input::Transcript { job, .. } => {
                self.asr_jobs.remove(&job.id);
            }
            Input::SpeechDone { reply } => {
                self.speech.remove(reply);
            }
            _ => {}
        }
    }

    /// Carries out the core's effects in order (answers to synchronous
    /// questions go straight back in), then stores the record once if it
    /// changed.
    async fn apply(&mut self, core: &mut CallCore) {
        let mut changed = false;
        while let Some(effect) = core.poll_effect() {
            match effect {
                // Control and audio alike wait for room: the transport's
                // playout is where audio may be dropped, never here.
                Effect::Out(o) => {
                    let _ = self.out.send(o).await;
                }
                Effect::Transcribe {
                    job,
                    purpose,
                    spoken,
                    priority,
                    audio,
                } => match self.transcribe(purpose, spoken, audio, priority) {
                    Ok((cancel, result)) => {
                        self.asr_jobs.insert(job.id, cancel);
                        let tx = self.results.clone();
                        tokio::spawn(async move {
                            let result = result.await;
                            let _ = tx.send(Input::Transcript { job, result });
                        });
                    }
                    Err(result) => {
                        // A busy pool refuses partials and guesses by design.
                        if priority == Priority::Final {
                            tracing::warn!(error = %result, "ASR unavailable");
                        }
                        core.handle(
                            Instant::now(),
                            Input::Transcript {
                                job,
                                result: Err(result),
                            },
                        );
                    }
                },
                Effect::CancelTranscribe(id) => {
                    if let Some(c) = self.asr_jobs.remove(&id) {
                        c.store(true, Ordering::Relaxed);
                    }
                }
                Effect::JudgeTurn { turn, pause, audio } => {
                    let e = self.e.clone();
                    let tx = self.results.clone();
                    tokio::task::spawn_blocking(move || {
                        let prob =
                            e.smart_turn
                                .completion_probability(&audio)
                                .unwrap_or_else(|err| {
                                    tracing::warn!(error = %err, "Smart Turn failed");
                                    0.0
                                });
                        let _ = tx.send(Input::SmartTurn { turn, pause, prob });
                    });
                }
                Effect::Speak { reply, text, lang } => {
                    let cancel = Arc::new(AtomicBool::new(false));
                    let input = match self.e.voice(lang).speak(&text, cancel.clone()) {
                        Ok((mut rx, sentences)) => {
                            self.speech.insert(reply, cancel);
                            let tx = self.results.clone();
                            tokio::spawn(async move {
                                while let Some(chunk) = rx.recv().await {
                                    if tx.send(Input::Speech { reply, chunk }).is_err() {
                                        return;
                                    }
                                }
                                let _ = tx.send(Input::SpeechDone { reply });
                            });
                            Input::Speaking { reply, sentences }
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, "TTS unavailable");
                            Input::SpeechFailed { reply }
                        }
                    };
                    core.handle(Instant::now(), input);
                }
                Effect::CancelSpeech(reply) => {
                    if let Some(c) = self.speech.remove(&reply) {
                        c.store(true, Ordering::Relaxed);
                    }
                }
                Effect::Ask(ask) => self.ask(core, ask),
                Effect::Save => changed = true,
                Effect::Line { speaker, text } => {
                    if let Some(desk) = &self.e.desk {
                        desk.line(&self.meta.call_id, speaker, &text);
                    }
                }
                Effect::Desk(op) => self.desk(core, op),
                Effect::ToAgent(frame) => {
                    let sent = self.leg.as_ref().map(|l| l.to_agent.try_send(frame));
                    if matches!(sent, Some(Err(_))) {
                        metrics().media_dropped_ms_total.inc_by(20);
                    }
                }
            }
        }
        if changed {
            self.store.upsert(core.record().clone());
        }
    }

    /// Queues a recognition: on the main lane, or on the multilingual lane
    /// (a turn in another language, or which language it is). Its cancel
    /// flag, and the result.
    fn transcribe(
        &self,
        purpose: Purpose,
        spoken: Spoken,
        audio: Arc<Vec<f32>>,
        priority: Priority,
    ) -> Result<(Arc<AtomicBool>, ResultFuture), AsrError> {
        let asr = &self.e.asr;
        let p = match spoken {
            Spoken::Main => asr.submit_for(purpose, audio, priority)?,
            Spoken::In(_) | Spoken::Identify(_) => asr.submit_spoken(spoken, audio, priority)?,
        };
        let cancel = p.cancel.clone();
        Ok((
            cancel,
            Box::pin(async move { p.result.await.unwrap_or(Err(AsrError::Closed)) }),
        ))
    }

    fn ask(&mut self, core: &mut CallCore, ask: Ask) {
        let (dialogue, meta) = (&mut self.dialogue, &self.meta);
        let (turn, reply) = match ask {
            Ask::Greeting => (None, blocking(|| dialogue.greeting(meta))),
            Ask::Turn(input) => (
                Some(input.index),
                blocking(|| dialogue.on_turn(meta, &input)),
            ),
            Ask::Interrupted(i) => return dialogue.on_interrupted(&i),
            Ask::TransferFailed(status) => return dialogue.on_transfer_failed(status),
            Ask::Human(outcome) => return dialogue.on_human(&outcome),
            Ask::Understands { turn, text } => {
                let yes = blocking(|| dialogue.understands(&text));
                return core.handle(Instant::now(), Input::Understood { turn, yes });
            }
        };
        let expect = dialogue.expecting();
        let language = dialogue.language().and_then(|l| Lang::parse(&l));
        core.handle(
            Instant::now(),
            Input::Answer {
                turn,
                reply,
                expect,
                language,
            },
        );
    }

    fn desk(&mut self, core: &mut CallCore, op: DeskOp) {
        let id = &self.meta.call_id;
        match op {
            DeskOp::Enqueue(info) => {
                let result = match &self.e.desk {
                    Some(desk) => {
                        let (tx, rx) = mpsc::channel(8);
                        let r = desk.enqueue(info, tx).map_err(|e| e.to_string());
                        if r.is_ok() {
                            self.desk_rx = Some(rx);
                        }
                        r
                    }
                    None => Err("no agent desk".to_string()),
                };
                core.handle(Instant::now(), Input::Desk(DeskInput::Enqueued(result)));
            }
            DeskOp::Leave(why) => {
                if let Some(desk) = &self.e.desk {
                    desk.leave(id, why);
                }
                self.desk_rx = None;
                self.leg = None;
            }
            DeskOp::EndLeg => self.leg = None,
            DeskOp::Position => {
                let place = self.e.desk.as_ref().and_then(|d| d.position(id));
                core.handle(Instant::now(), Input::Desk(DeskInput::Place(place)));
            }
        }
    }
}
