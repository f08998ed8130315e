//! A call's time with the agent desk (`desk:QUEUE` transfers): on hold with
//! music, then bridged to the agent's audio leg, then hung up, returned to
//! the bot, or passed to another queue. Works the same whichever transport
//! the caller came in on, because it only speaks `CallInput`/`CallOutput`.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{unix_ms, Call, CallOutput};
use crate::desk::{AgentLeg, ToCall, WaitingInfo};
use crate::dialogue::{HumanOutcome, Reply};
use crate::pipeline::metrics::metrics;
use crate::pipeline::record::HumanRecord;

/// Hold music is sent this much at a time, each piece with a mark.
const HOLD_CHUNK: usize = 8000;
/// Pieces queued at the transport ahead of what is playing.
const HOLD_AHEAD: usize = 2;

pub(super) struct Human {
    queue: String,
    reason: String,
    priority: i64,
    rx: mpsc::Receiver<ToCall>,
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

struct Bridge {
    from_agent: mpsc::Receiver<Vec<u8>>,
    to_agent: mpsc::Sender<Vec<u8>>,
    asked: Instant,
    /// The agent's first audio: both ways flow from here.
    started: Option<Instant>,
    reply: u32,
}

pub(super) enum FromDesk {
    Command(ToCall),
    /// The agent's next audio frame; `None`: the agent hung up.
    AgentFrame(Option<Vec<u8>>),
}

/// The desk's next word to a call on hold, or the agent's next frame.
pub(super) async fn next(h: &mut Option<Human>) -> FromDesk {
    let Some(h) = h else {
        return std::future::pending().await;
    };
    let command = async {
        match h.rx.recv().await {
            Some(c) => FromDesk::Command(c),
            // The desk keeps its end while the call is listed.
            None => std::future::pending().await,
        }
    };
    match h.leg.as_mut() {
        Some(b) => tokio::select! {
            c = command => c,
            f = b.from_agent.recv() => FromDesk::AgentFrame(f),
        },
        None => command.await,
    }
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

impl Call {
    /// The desk queue a transfer target names: `desk:QUEUE`, or on a browser
    /// call (which has no phone network to go to) `queue:QUEUE`.
    pub(super) fn desk_queue(&self, target: &str) -> Option<String> {
        self.e.desk.as_ref().filter(|d| d.config().enabled)?;
        target
            .strip_prefix("desk:")
            .or_else(|| {
                (self.meta.channel == "webrtc")
                    .then(|| target.strip_prefix("queue:"))
                    .flatten()
            })
            .map(str::to_string)
    }

    /// Puts the caller on hold in `queue` for a desk agent to take. If the
    /// desk cannot take them, the bot keeps the call and says so.
    pub(super) async fn hold_for_desk(&mut self, queue: String, reason: String, priority: i64) {
        let Some(desk) = self.e.desk.clone() else {
            return self.on_transfer_failed(503).await;
        };
        let (tx, rx) = mpsc::channel(8);
        let info = WaitingInfo {
            call_id: self.meta.call_id.clone(),
            channel: self.meta.channel.clone(),
            queue: queue.clone(),
            priority,
            reason: reason.clone(),
            since_unix_ms: unix_ms(),
        };
        if let Err(e) = desk.enqueue(info, tx) {
            tracing::warn!(call = %self.meta.call_id, %queue, error = %e, "the desk cannot take the call");
            self.human_over(true, "refused");
            return self.on_transfer_failed(503).await;
        }
        metrics().desk_waiting.inc();
        tracing::info!(call = %self.meta.call_id, %queue, priority, "on hold for the agent desk");
        let max_wait = desk.config().max_wait_s;
        let remind = desk.config().hold_reminder_s;
        // A caller passed on keeps what they already waited and talked.
        let (held_ms, talked_ms, agent) = self.human.as_ref().map_or((0, 0, None), |h| {
            (h.wait_ms(), h.talk_ms().unwrap_or(0), h.agent.clone())
        });
        self.human = Some(Human {
            queue,
            reason,
            priority,
            rx,
            holding_since: Some(Instant::now()),
            held_ms,
            talked_ms,
            deadline: (max_wait > 0).then(|| Instant::now() + Duration::from_secs(max_wait)),
            remind_at: (remind > 0).then(|| Instant::now() + Duration::from_secs(remind)),
            hold_next: 0,
            hold_reply: None,
            leg: None,
            agent,
            take_to_audio_ms: None,
        });
        for _ in 0..HOLD_AHEAD {
            self.send_hold().await;
        }
    }

    /// Sends the next piece of hold music, marked so its playing asks for
    /// the one after.
    async fn send_hold(&mut self) {
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
        self.send(CallOutput::Audio { reply, ulaw }).await;
        self.send(CallOutput::Mark(mark)).await;
    }

    /// A hold-music mark played: keep `HOLD_AHEAD` pieces queued.
    pub(super) async fn on_hold_mark(&mut self, name: &str) {
        let played: usize = name
            .strip_prefix("hold-")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if self
            .human
            .as_ref()
            .is_some_and(|h| h.leg.is_none() && h.hold_next < played + HOLD_AHEAD)
        {
            self.send_hold().await;
        }
    }

    pub(super) async fn on_desk(&mut self, cmd: ToCall) {
        match cmd {
            ToCall::Take { agent, leg, asked } => self.take(agent, leg, asked).await,
            ToCall::Return => {
                tracing::info!(call = %self.meta.call_id, "the agent returned the caller to the bot");
                self.human_over(true, "returned");
                let reply = Reply {
                    say: "Thanks for your patience. You're back with the virtual assistant. \
                          What else can I help you with?"
                        .into(),
                    actions: Vec::new(),
                    source: "desk_returned".into(),
                };
                self.queue_reply(None, reply);
            }
            ToCall::Requeue { queue } => {
                let Some(h) = self.human.as_mut() else { return };
                tracing::info!(call = %self.meta.call_id, from = %h.queue, to = %queue, "the agent passed the caller on");
                let (reason, priority) = (h.reason.clone(), h.priority);
                if let Some(d) = &self.e.desk {
                    d.leave(&self.meta.call_id, "passed_on");
                }
                self.send(CallOutput::Clear).await;
                // The agent's leg ends when `hold_for_desk` replaces it.
                self.hold_for_desk(queue, reason, priority).await;
            }
        }
    }

    async fn take(&mut self, agent: String, leg: AgentLeg, asked: Instant) {
        // A hold reminder in progress is cut off with the music.
        if let Some(p) = self.playing.take() {
            p.cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let Some(h) = self.human.as_mut() else { return };
        if let Some(since) = h.holding_since.take() {
            metrics().desk_waiting.dec();
            h.held_ms += ms(since.elapsed());
        }
        let waited = h.held_ms;
        h.agent = Some(agent.clone());
        h.hold_reply = None;
        self.reply_seq += 1;
        h.leg = Some(Bridge {
            from_agent: leg.from_agent,
            to_agent: leg.to_agent,
            asked,
            started: None,
            reply: self.reply_seq,
        });
        tracing::info!(call = %self.meta.call_id, %agent, wait_ms = waited, "an agent took the call");
        self.record.outcome = format!("with_agent:{agent}");
        self.record_human();
        // The hold music stops; the agent's voice follows as it comes.
        self.send(CallOutput::Clear).await;
    }

    /// The caller's voice, for the agent (only once the agent's leg is up;
    /// a slow leg loses frames rather than falling behind).
    pub(super) fn relay_to_agent(&mut self, ulaw: Vec<u8>) {
        if let Some(b) = self
            .human
            .as_mut()
            .and_then(|h| h.leg.as_mut())
            .filter(|b| b.started.is_some())
        {
            if b.to_agent.try_send(ulaw).is_err() {
                metrics().media_dropped_ms_total.inc_by(20);
            }
        }
    }

    pub(super) async fn on_agent_frame(&mut self, frame: Option<Vec<u8>>) {
        let Some(h) = self.human.as_mut() else { return };
        let Some(b) = h.leg.as_mut() else { return };
        let Some(ulaw) = frame else {
            if b.started.is_none() {
                // The agent's leg never carried audio (ICE/DTLS failed, or
                // they hung up at once): the caller waits again.
                tracing::warn!(call = %self.meta.call_id, "the agent's leg failed; back on hold");
                let (queue, reason, priority) = (h.queue.clone(), h.reason.clone(), h.priority);
                h.leg = None;
                h.agent = None;
                return self.hold_for_desk(queue, reason, priority).await;
            }
            tracing::info!(call = %self.meta.call_id, "the agent hung up");
            self.human_over(false, "agent_hung_up");
            self.record.outcome = "handled_by_agent".into();
            self.send(CallOutput::Hangup).await;
            self.hangup_sent = true;
            return;
        };
        if b.started.is_none() {
            let now = Instant::now();
            b.started = Some(now);
            let took = ms(now.duration_since(b.asked));
            h.take_to_audio_ms = Some(took);
            tracing::info!(call = %self.meta.call_id, take_to_audio_ms = took, "agent and caller connected");
        }
        let (reply, first) = (b.reply, b.started.is_some() && h.take_to_audio_ms.is_some());
        if first
            && self
                .record
                .human
                .as_ref()
                .is_some_and(|r| r.take_to_audio_ms.is_none())
        {
            self.record_human();
        }
        self.send(CallOutput::Audio {
            reply,
            ulaw: Arc::new(ulaw),
        })
        .await;
    }

    /// A hold timer fired: the wait ran out, or it is time for a reminder.
    pub(super) async fn on_hold_timer(&mut self) {
        let now = Instant::now();
        let Some(h) = self.human.as_mut() else { return };
        if h.deadline.is_some_and(|d| now >= d) {
            return self.on_hold_timeout().await;
        }
        let every = self
            .e
            .desk
            .as_ref()
            .map_or(0, |d| d.config().hold_reminder_s);
        h.remind_at = (every > 0).then(|| now + Duration::from_secs(every));
        if self.playing.is_some() {
            return;
        }
        let place = self
            .e
            .desk
            .as_ref()
            .and_then(|d| d.position(&self.meta.call_id));
        let say = match place {
            Some(1) | None => "Thanks for holding. You're next in line, and an agent will be \
                               with you shortly."
                .to_string(),
            Some(n) => format!(
                "Thanks for holding. You are number {n} in the queue. An agent will be with \
                 you as soon as possible."
            ),
        };
        let reply = Reply {
            say,
            actions: Vec::new(),
            source: "desk_hold".into(),
        };
        self.start_reply(None, reply).await;
    }

    /// Nobody took the call in time: the bot takes the caller back.
    async fn on_hold_timeout(&mut self) {
        tracing::info!(call = %self.meta.call_id, "nobody at the desk took the call in time");
        self.human_over(true, "timed_out");
        self.send(CallOutput::Clear).await;
        self.on_transfer_failed(408).await;
    }

    /// The desk part is over (`returned`: the bot goes on with the caller).
    pub(super) fn human_over(&mut self, returned: bool, why: &str) {
        let Some(h) = self.human.take() else { return };
        if h.holding_since.is_some() {
            metrics().desk_waiting.dec();
        }
        if let Some(d) = &self.e.desk {
            d.leave(&self.meta.call_id, why);
        }
        let outcome = HumanOutcome {
            queue: h.queue.clone(),
            agent: h.agent.clone(),
            wait_ms: h.wait_ms(),
            talk_ms: h.talk_ms(),
            returned,
        };
        self.record.human = Some(h.record(returned));
        if returned {
            self.record.outcome = "in_progress".into();
        }
        self.dialogue.on_human(&outcome);
        self.store.upsert(self.record.clone());
    }

    /// The call record shows the desk part as it goes.
    fn record_human(&mut self) {
        if let Some(h) = &self.human {
            self.record.human = Some(h.record(false));
            self.store.upsert(self.record.clone());
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
    fn record(&self, returned: bool) -> HumanRecord {
        HumanRecord {
            queue: self.queue.clone(),
            agent: self.agent.clone(),
            wait_ms: self.wait_ms(),
            take_to_audio_ms: self.take_to_audio_ms,
            talk_ms: self.talk_ms(),
            returned,
        }
    }

    fn wait_ms(&self) -> u64 {
        self.held_ms + self.holding_since.map_or(0, |s| ms(s.elapsed()))
    }

    /// Time talking with agents, `None` if the caller never was.
    fn talk_ms(&self) -> Option<u64> {
        let now = self
            .leg
            .as_ref()
            .and_then(|b| b.started)
            .map(|s| ms(s.elapsed()));
        match (now, self.talked_ms) {
            (None, 0) => None,
            (n, before) => Some(before + n.unwrap_or(0)),
        }
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}
