//! A call's time with the agent desk (`desk:QUEUE` transfers): on hold with
//! music, then bridged to the agent's audio leg, then hung up, returned to
//! the bot, or passed to another queue. Works the same whichever transport
//! the caller came in on, because it only speaks `CallInput`/`CallOutput`;
//! the desk itself and the agent's leg are the driver's (`DeskOp`,
//! `DeskInput`), so these rules run on simulated time in tests.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::core::{ms, Ask, CallCore, DeskInput, DeskOp, Effect};
use super::CallOutput;
use crate::desk::WaitingInfo;
use crate::dialogue::{HumanOutcome, Reply};
use crate::nlu::lang::Phrase;
use crate::pipeline::metrics::metrics;
use crate::pipeline::record::HumanRecord;

/// Hold music is sent this much at a time, each piece with a mark.
const HOLD_CHUNK: usize = 8000;
/// Pieces queued at the transport ahead of what is playing.
pub(super) const HOLD_AHEAD: usize = 2;

pub(super) struct Human {
    queue: String,
    reason: String,
    priority: i64,
    /// On hold since (`None` while with an agent).
    holding_since: Option<Instant>,
    /// Hold and talk time of earlier rounds (a caller passed on).
    held_ms: u64,
    talked_ms: u64,
    deadline: Option<Instant>,
    /// When the caller is next thanked for holding and told their place.
    remind_at: Option<Instant>,
    /// Hold music: the next piece to send, and the reply id it goes out as.
    hold_next: usize,
    hold_reply: Option<u32>,
    leg: Option<Bridge>,
    agent: Option<String>,
    take_to_audio_ms: Option<u64>,
}

/// The agent's leg, as the core sees it (its channels are the driver's).
struct Bridge {
    asked: Instant,
    /// The agent's first audio: both ways flow from here.
    started: Option<Instant>,
    reply: u32,
}

/// A transfer to the desk waiting for the desk's word (`DeskInput::Enqueued`).
pub(super) struct Enqueuing {
    queue: String,
    reason: String,
    priority: i64,
}

/// The next hold timer (the wait running out, or a reminder), while on hold.
pub(super) fn next_timer(h: &Option<Human>) -> Option<Instant> {
    let h = h.as_ref().filter(|h| h.leg.is_none())?;
    match (h.deadline, h.remind_at) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Eight seconds of a soft music-box arpeggio (8 kHz μ-law), looped while
/// the caller waits, so they know the line is alive.
fn hold_music() -> Arc<Vec<u8>> {
    static MUSIC: OnceLock<Arc<Vec<u8>>> = OnceLock::new();
    MUSIC
        .get_or_init(|| {
            const NOTES: [f32; 16] = [
                523.25, 659.25, 783.99, 659.25, 587.33, 698.46, 880.0, 698.46, 493.88, 587.33,
                783.99, 587.33, 523.25, 659.25, 783.99, 1046.5,
            ];
            let note = 4000; // 0.5 s at 8 kHz
            let mut pcm = vec![0f32; NOTES.len() * note];
            for (i, f) in NOTES.iter().enumerate() {
                // Each note rings on under the next ones, as a music box does.
                for n in 0..(note * 3) {
                    let t = n as f32 / 8000.0;
                    let env = (t / 0.01).min(1.0) * (-t / 0.35).exp();
                    let w = std::f32::consts::TAU * f * t;
                    let v = 0.12 * env * (w.sin() + 0.25 * (2.0 * w).sin());
                    let at = (i * note + n) % pcm.len();
                    pcm[at] += v;
                }
            }
            let mut ulaw = Vec::with_capacity(pcm.len());
            crate::media::mulaw::encode_from_f32(&pcm, &mut ulaw);
            Arc::new(ulaw)
        })
        .clone()
}

impl CallCore {
    /// The desk queue a transfer target names: `desk:QUEUE`, or on a browser
    /// call (which has no phone network to go to) `queue:QUEUE`.
    pub(super) fn desk_queue(&self, target: &str) -> Option<String> {
        self.cfg.desk.as_ref().filter(|d| d.enabled)?;
        target
            .strip_prefix("desk:")
            .or_else(|| {
                (self.meta.channel == "webrtc")
                    .then(|| target.strip_prefix("queue:"))
                    .flatten()
            })
            .map(str::to_string)
    }

    /// Asks the desk to queue the caller in `queue`; `on_enqueued` puts them
    /// on hold, or the bot keeps the call and says so.
    pub(super) fn hold_for_desk(&mut self, queue: String, reason: String, priority: i64) {
        let info = WaitingInfo {
            call_id: self.meta.call_id.clone(),
            channel: self.meta.channel.clone(),
            queue: queue.clone(),
            priority,
            reason: reason.clone(),
            since_unix_ms: self.unix_ms(),
        };
        self.enqueuing = Some(Enqueuing {
            queue,
            reason,
            priority,
        });
        self.emit(Effect::Desk(DeskOp::Enqueue(info)));
    }

    fn on_enqueued(&mut self, result: Result<(), String>) {
        let Some(Enqueuing {
            queue,
            reason,
            priority,
        }) = self.enqueuing.take()
        else {
            return;
        };
        if let Err(e) = result {
            tracing::warn!(call = %self.meta.call_id, %queue, error = %e, "the desk cannot take the call");
            self.human_over(true, "refused");
            return self.on_transfer_failed(503);
        }
        metrics().desk_waiting.inc();
        tracing::info!(call = %self.meta.call_id, %queue, priority, "on hold for the agent desk");
        let (max_wait, remind) = self
            .cfg
            .desk
            .as_ref()
            .map_or((0, 0), |d| (d.max_wait_s, d.hold_reminder_s));
        // A caller passed on keeps what they already waited and talked.
        let now = self.now;
        let (held_ms, talked_ms, agent) = self.human.as_ref().map_or((0, 0, None), |h| {
            (h.wait_ms(now), h.talk_ms(now).unwrap_or(0), h.agent.clone())
        });
        self.human = Some(Human {
            queue,
            reason,
            priority,
            holding_since: Some(now),
            held_ms,
            talked_ms,
            deadline: (max_wait > 0).then(|| now + Duration::from_secs(max_wait)),
            remind_at: (remind > 0).then(|| now + Duration::from_secs(remind)),
            hold_next: 0,
            hold_reply: None,
            leg: None,
            agent,
            take_to_audio_ms: None,
        });
        for _ in 0..HOLD_AHEAD {
            self.send_hold();
        }
    }

    /// Sends the next piece of hold music, marked so its playing asks for
    /// the one after.
    fn send_hold(&mut self) {
        let Some(h) = self.human.as_mut().filter(|h| h.leg.is_none()) else {
            return;
        };
        let reply = match h.hold_reply {
            Some(r) => r,
            None => {
                self.reply_seq += 1;
                h.hold_reply = Some(self.reply_seq);
                self.reply_seq
            }
        };
        let music = hold_music();
        let pieces = music.len() / HOLD_CHUNK;
        let i = h.hold_next % pieces;
        h.hold_next += 1;
        let ulaw = Arc::new(music[i * HOLD_CHUNK..(i + 1) * HOLD_CHUNK].to_vec());
        let mark = format!("hold-{}", h.hold_next);
        self.out(CallOutput::Audio { reply, ulaw });
        self.out(CallOutput::Mark(mark));
    }

    /// A hold-music mark played: keep `HOLD_AHEAD` pieces queued.
    pub(super) fn on_hold_mark(&mut self, name: &str) {
        let played: usize = name
            .strip_prefix("hold-")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if self
            .human
            .as_ref()
            .is_some_and(|h| h.leg.is_none() && h.hold_next < played + HOLD_AHEAD)
        {
            self.send_hold();
        }
    }

    pub(super) fn on_desk(&mut self, input: DeskInput) {
        match input {
            DeskInput::Enqueued(r) => self.on_enqueued(r),
            DeskInput::Place(place) => self.remind(place),
            DeskInput::Take { agent, asked } => self.take(agent, asked),
            DeskInput::AgentFrame(f) => self.on_agent_frame(f),
            DeskInput::Return => {
                tracing::info!(call = %self.meta.call_id, "the agent returned the caller to the bot");
                self.human_over(true, "returned");
                let reply = Reply {
                    say: self.voice_language().phrase(Phrase::BackWithBot).into(),
                    actions: Vec::new(),
                    source: "desk_returned".into(),
                };
                self.queue_reply(None, reply);
            }
            DeskInput::Requeue { queue } => {
                let Some(h) = self.human.as_mut() else { return };
                tracing::info!(call = %self.meta.call_id, from = %h.queue, to = %queue, "the agent passed the caller on");
                let (reason, priority) = (h.reason.clone(), h.priority);
                // Leaving ends the agent's leg; the caller waits again.
                self.emit(Effect::Desk(DeskOp::Leave("passed_on")));
                self.out(CallOutput::Clear);
                self.hold_for_desk(queue, reason, priority);
            }
        }
    }

    fn take(&mut self, agent: String, asked: Instant) {
        let now = self.now;
        let Some(h) = self.human.as_mut().filter(|h| h.leg.is_none()) else {
            // Not on hold (any more): the agent's leg has nobody to reach.
            return self.emit(Effect::Desk(DeskOp::EndLeg));
        };
        if let Some(since) = h.holding_since.take() {
            metrics().desk_waiting.dec();
            h.held_ms += ms(now.saturating_duration_since(since));
        }
        let waited = h.held_ms;
        h.agent = Some(agent.clone());
        h.hold_reply = None;
        self.reply_seq += 1;
        h.leg = Some(Bridge {
            asked,
            started: None,
            reply: self.reply_seq,
        });
        tracing::info!(call = %self.meta.call_id, %agent, wait_ms = waited, "an agent took the call");
        // A hold reminder in progress is cut off with the music.
        self.cut_playback(false);
        self.record.outcome = format!("with_agent:{agent}");
        self.record_human();
        // The hold music stops; the agent's voice follows as it comes.
        self.out(CallOutput::Clear);
    }

    /// The caller's voice, for the agent (only once the agent's leg is up;
    /// a slow leg loses frames rather than falling behind).
    pub(super) fn relay_to_agent(&mut self, ulaw: Vec<u8>) {
        let up = self
            .human
            .as_ref()
            .and_then(|h| h.leg.as_ref())
            .is_some_and(|b| b.started.is_some());
        if up {
            self.emit(Effect::ToAgent(ulaw));
        }
    }

    fn on_agent_frame(&mut self, frame: Option<Vec<u8>>) {
        let now = self.now;
        let Some(h) = self.human.as_mut() else { return };
        let Some(b) = h.leg.as_mut() else { return };
        let Some(ulaw) = frame else {
            if b.started.is_none() {
                // The agent's leg never carried audio (ICE/DTLS failed, or
                // they hung up at once): the caller waits again.
                tracing::warn!(call = %self.meta.call_id, "the agent's leg failed; back on hold");
                let (queue, reason, priority) = (h.queue.clone(), h.reason.clone(), h.priority);
                // The caller was waiting all along.
                h.held_ms += ms(now.saturating_duration_since(b.asked));
                h.leg = None;
                h.agent = None;
                self.emit(Effect::Desk(DeskOp::EndLeg));
                return self.hold_for_desk(queue, reason, priority);
            }
            tracing::info!(call = %self.meta.call_id, "the agent hung up");
            self.human_over(false, "agent_hung_up");
            self.record.outcome = "handled_by_agent".into();
            return self.hang_up();
        };
        let reply = b.reply;
        if b.started.is_none() {
            b.started = Some(now);
            let took = ms(now.saturating_duration_since(b.asked));
            h.take_to_audio_ms = Some(took);
            tracing::info!(call = %self.meta.call_id, take_to_audio_ms = took, "agent and caller connected");
            self.record_human();
        }
        self.out(CallOutput::Audio {
            reply,
            ulaw: Arc::new(ulaw),
        });
    }

    /// A hold timer fired: the wait ran out, or it is time for a reminder.
    pub(super) fn on_hold_timer(&mut self) {
        let now = self.now;
        let every = self.cfg.desk.as_ref().map_or(0, |d| d.hold_reminder_s);
        let Some(h) = self.human.as_mut() else { return };
        if h.deadline.is_some_and(|d| now >= d) {
            return self.on_hold_timeout();
        }
        h.remind_at = (every > 0).then(|| now + Duration::from_secs(every));
        if self.playing.is_none() {
            self.emit(Effect::Desk(DeskOp::Position));
        }
    }

    /// Thanks the caller for holding and tells them their place.
    fn remind(&mut self, place: Option<usize>) {
        let holding = self.human.as_ref().is_some_and(|h| h.leg.is_none());
        if !holding || self.playing.is_some() {
            return;
        }
        let lang = self.voice_language();
        let say = match place {
            Some(1) | None => lang.phrase(Phrase::NextInLine).to_string(),
            Some(n) => lang
                .phrase(Phrase::PlaceInQueue)
                .replace("{n}", &n.to_string()),
        };
        let reply = Reply {
            say,
            actions: Vec::new(),
            source: "desk_hold".into(),
        };
        self.start_reply(None, reply);
    }

    /// Nobody took the call in time: the bot takes the caller back.
    fn on_hold_timeout(&mut self) {
        tracing::info!(call = %self.meta.call_id, "nobody at the desk took the call in time");
        self.human_over(true, "timed_out");
        self.out(CallOutput::Clear);
        self.on_transfer_failed(408);
    }

    /// The desk part is over (`returned`: the bot goes on with the caller).
    fn human_over(&mut self, returned: bool, why: &'static str) {
        let Some(h) = self.human.take() else { return };
        if h.holding_since.is_some() {
            metrics().desk_waiting.dec();
        }
        self.emit(Effect::Desk(DeskOp::Leave(why)));
        let now = self.now;
        let outcome = HumanOutcome {
            queue: h.queue.clone(),
            agent: h.agent.clone(),
            wait_ms: h.wait_ms(now),
            talk_ms: h.talk_ms(now),
            returned,
        };
        self.record.human = Some(h.record(returned, now));
        if returned {
            self.record.outcome = "in_progress".into();
        }
        self.emit(Effect::Ask(Ask::Human(outcome)));
        self.save();
    }

    /// The call record shows the desk part as it goes.
    fn record_human(&mut self) {
        if let Some(h) = &self.human {
            self.record.human = Some(h.record(false, self.now));
            self.save();
        }
    }

    /// The caller hung up: the desk part ends with the call.
    pub(super) fn human_on_hangup(&mut self) {
        let Some(h) = &self.human else { return };
        let talked = h.leg.as_ref().is_some_and(|b| b.started.is_some());
        let taken = h.agent.is_some();
        self.human_over(false, "hung_up");
        self.record.outcome = if talked || taken {
            "handled_by_agent".into()
        } else {
            "abandoned_on_hold".into()
        };
    }
}

impl Human {
    /// The desk part as the call record shows it, so far.
    fn record(&self, returned: bool, now: Instant) -> HumanRecord {
        HumanRecord {
            queue: self.queue.clone(),
            agent: self.agent.clone(),
            wait_ms: self.wait_ms(now),
            take_to_audio_ms: self.take_to_audio_ms,
            talk_ms: self.talk_ms(now),
            returned,
        }
    }

    fn wait_ms(&self, now: Instant) -> u64 {
        self.held_ms
            + self
                .holding_since
                .map_or(0, |s| ms(now.saturating_duration_since(s)))
    }

    /// Time talking with agents, `None` if the caller never was.
    fn talk_ms(&self, now: Instant) -> Option<u64> {
        let current = self
            .leg
            .as_ref()
            .and_then(|b| b.started)
            .map(|s| ms(now.saturating_duration_since(s)));
        match (current, self.talked_ms) {
            (None, 0) => None,
            (n, before) => Some(before + n.unwrap_or(0)),
        }
    }
}
