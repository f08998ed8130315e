//! One output contract for every transport.
//!
//! The call pipeline speaks in `CallOutput` commands (audio, marks, pause,
//! resume, clear, hang-up, transfer). Every transport holds a [`Playout`] —
//! Twilio's `StreamSession`, RTP's `Outbound`, WebRTC's `Session` — and its
//! driver hands each command to [`apply`], which does the playout part the
//! same way everywhere and returns what is left for the driver ([`Control`]).
//!
//! [`Pacer`] is the 20 ms frame clock that RTP and WebRTC share: reply audio
//! queued as 20 ms μ-law frames, marks in order with it, pause (hold the
//! queue, send silence), clear (drop it), mute (hold, clock runs on), and a
//! frame due every 20 ms whether or not the bot is talking. Sans-IO: the
//! caller passes `now`.
//!
//! [`Uplink`] is the one back-pressure rule on the way back to the pipeline:
//! audio may drop when the call is behind, control (marks played, replies
//! started, digits, transfer results) never does.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::pipeline::{CallInput, CallOutput};

/// 20 ms of 8 kHz μ-law.
pub const FRAME: usize = 160;
pub const PTIME: Duration = Duration::from_millis(20);
/// Falling further behind than this skips ahead instead of bursting.
const MAX_LAG: Duration = Duration::from_millis(200);

/// What every transport's output side does with the pipeline's commands.
pub trait Playout {
    /// Queues reply audio (8 kHz μ-law).
    fn send_audio(&mut self, reply: u32, ulaw: &[u8]);
    /// Queues a mark after the audio queued so far.
    fn send_mark(&mut self, name: String);
    /// Holds queued audio (the caller may be starting to talk) or lets it go.
    fn set_paused(&mut self, paused: bool);
    /// Drops queued audio (here and, where the protocol can, at the far
    /// end); returns the marks that will never be played.
    fn clear(&mut self) -> Vec<String>;
    /// Audio queued, not yet sent.
    fn queued(&self) -> Duration;
    /// When the transport next has something to send.
    fn poll_timeout(&self) -> Option<Instant>;
}

/// A transport whose output is the shared [`Pacer`] plus its own framing
/// (RTP headers, Opus): its [`Playout`] is the pacer's.
pub trait PacedOutput {
    fn pacer(&self) -> &Pacer;
    fn pacer_mut(&mut self) -> &mut Pacer;
}

impl<T: PacedOutput> Playout for T {
    fn send_audio(&mut self, reply: u32, ulaw: &[u8]) {
        self.pacer_mut().send_audio(reply, ulaw);
    }
    fn send_mark(&mut self, name: String) {
        self.pacer_mut().send_mark(name);
    }
    fn set_paused(&mut self, paused: bool) {
        self.pacer_mut().set_paused(paused);
    }
    fn clear(&mut self) -> Vec<String> {
        self.pacer_mut().clear()
    }
    fn queued(&self) -> Duration {
        self.pacer().queued()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.pacer().poll_timeout()
    }
}

/// What a command leaves for the driver once the playout has its part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Hang up once the queued audio has been sent.
    Hangup,
    Transfer {
        target: String,
        reason: String,
        priority: i64,
    },
}

/// Applies one pipeline command to a transport's playout.
pub fn apply(p: &mut dyn Playout, out: CallOutput) -> Option<Control> {
    match out {
        CallOutput::Audio { reply, ulaw } => p.send_audio(reply, &ulaw),
        CallOutput::Mark(m) => p.send_mark(m),
        CallOutput::Pause => p.set_paused(true),
        CallOutput::Resume => p.set_paused(false),
        CallOutput::Clear => {
            p.set_paused(false);
            let _ = p.clear();
        }
        CallOutput::Hangup => return Some(Control::Hangup),
        CallOutput::Transfer {
            target,
            reason,
            priority,
        } => {
            return Some(Control::Transfer {
                target,
                reason,
                priority,
            })
        }
    }
    None
}

enum Item {
    Frame { reply: u32, ulaw: Vec<u8> },
    Mark(String),
}

/// What the pacer produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Paced {
    /// The 20 ms frame due now: reply audio, or silence (`reply: None`).
    /// `muted` frames keep the clock but are not to be sent.
    Frame {
        reply: Option<u32>,
        ulaw: Vec<u8>,
        muted: bool,
    },
    /// A mark queued after audio that has now been sent.
    Mark(String),
    /// The first frame of reply `reply` went out with the frame before.
    ReplyStarted(u32),
}

/// The 20 ms frame clock RTP and WebRTC share.
pub struct Pacer {
    queue: VecDeque<Item>,
    partial: Option<(u32, Vec<u8>)>,
    silence: u8,
    paused: bool,
    muted: bool,
    next: Option<Instant>,
    talking: Option<u32>,
    events: VecDeque<Paced>,
    pub frames: u64,
    pub audio_frames: u64,
}

impl Pacer {
    /// `silence`: the codec's silent byte (μ-law 0xff unless A-law).
    pub fn new(silence: u8) -> Self {
        Self {
            queue: VecDeque::new(),
            partial: None,
            silence,
            paused: false,
            muted: false,
            next: None,
            talking: None,
            events: VecDeque::new(),
            frames: 0,
            audio_frames: 0,
        }
    }

    /// Starts the clock; the first frame is due now.
    pub fn start(&mut self, now: Instant) {
        if self.next.is_none() {
            self.next = Some(now);
        }
    }

    /// When the next frame is due (`now` if events wait).
    pub fn due(&self) -> Option<Instant> {
        self.next
    }

    /// The far end asked us not to send (hold): frames keep their clock.
    pub fn set_muted(&mut self, muted: bool) {
        self.muted = muted;
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Whether the last frame carried reply audio.
    pub fn talking(&self) -> Option<u32> {
        self.talking
    }

    fn flush_partial(&mut self) {
        if let Some((r, mut b)) = self.partial.take() {
            b.resize(FRAME, self.silence);
            self.queue.push_back(Item::Frame { reply: r, ulaw: b });
        }
    }

    /// Next frame, mark or reply start due at `now`.
    pub fn poll(&mut self, now: Instant) -> Option<Paced> {
        if let Some(e) = self.events.pop_front() {
            return Some(e);
        }
        let due = self.next?;
        if now < due {
            return None;
        }
        self.next = Some(if now.duration_since(due) > MAX_LAG {
            now + PTIME
        } else {
            due + PTIME
        });
        // Marks at the head of the queue are reached without sending audio.
        while !self.paused {
            match self.queue.front() {
                Some(Item::Mark(_)) => {
                    if let Some(Item::Mark(m)) = self.queue.pop_front() {
                        self.events.push_back(Paced::Mark(m));
                    }
                }
                _ => break,
            }
        }
        if self.queue.is_empty() && self.partial.is_some() && !self.paused {
            self.flush_partial();
        }
        let (ulaw, reply) = match (self.paused, self.queue.front()) {
            (false, Some(Item::Frame { .. })) => match self.queue.pop_front() {
                Some(Item::Frame { reply, ulaw }) => (ulaw, Some(reply)),
                _ => (vec![self.silence; FRAME], None),
            },
            _ => (vec![self.silence; FRAME], None),
        };
        if let Some(r) = reply {
            if self.talking != Some(r) {
                self.events.push_back(Paced::ReplyStarted(r));
            }
            self.audio_frames += 1;
        }
        self.frames += 1;
        self.talking = reply;
        self.events.push_front(Paced::Frame {
            reply,
            ulaw,
            muted: self.muted,
        });
        self.events.pop_front()
    }
}

impl Pacer {
    pub fn send_audio(&mut self, reply: u32, ulaw: &[u8]) {
        let mut buf = match self.partial.take() {
            Some((r, b)) if r == reply => b,
            Some((r, mut b)) => {
                // A new reply: pad the old one's last frame.
                b.resize(FRAME, self.silence);
                self.queue.push_back(Item::Frame { reply: r, ulaw: b });
                Vec::new()
            }
            None => Vec::new(),
        };
        buf.extend_from_slice(ulaw);
        let mut chunks = buf.chunks_exact(FRAME);
        for c in &mut chunks {
            self.queue.push_back(Item::Frame {
                reply,
                ulaw: c.to_vec(),
            });
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            self.partial = Some((reply, rest.to_vec()));
        }
    }

    pub fn send_mark(&mut self, name: String) {
        self.flush_partial();
        self.queue.push_back(Item::Mark(name));
    }

    pub fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
    }

    pub fn clear(&mut self) -> Vec<String> {
        self.partial = None;
        self.paused = false;
        self.queue
            .drain(..)
            .filter_map(|i| match i {
                Item::Mark(m) => Some(m),
                Item::Frame { .. } => None,
            })
            .collect()
    }

    pub fn queued(&self) -> Duration {
        let frames = self
            .queue
            .iter()
            .filter(|i| matches!(i, Item::Frame { .. }))
            .count()
            + usize::from(self.partial.is_some());
        PTIME * frames as u32
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        if let (false, Some(next)) = (self.events.is_empty(), self.next) {
            return Some(next.min(Instant::now()));
        }
        self.next
    }
}

impl PacedOutput for Pacer {
    fn pacer(&self) -> &Pacer {
        self
    }
    fn pacer_mut(&mut self) -> &mut Pacer {
        self
    }
}

/// The way back from a transport to its call: audio is offered and dropped
/// when the call is behind (counted), control inputs wait in order until
/// the call takes them, so a reply's last mark — which its hang-up or
/// transfer waits for — is never lost.
pub struct Uplink {
    tx: mpsc::Sender<CallInput>,
    /// Bounded by what the pipeline itself sent (one mark per sentence).
    control: VecDeque<CallInput>,
    pub audio_dropped: u64,
    pub keys_dropped: u64,
}

/// Control inputs waiting past which keys from the far end are dropped.
const MAX_CONTROL: usize = 256;

impl Uplink {
    pub fn new(tx: mpsc::Sender<CallInput>) -> Self {
        Self {
            tx,
            control: VecDeque::new(),
            audio_dropped: 0,
            keys_dropped: 0,
        }
    }

    /// Caller audio: dropped if the call's queue is full (returns false).
    pub fn audio(&mut self, ulaw: Vec<u8>) -> bool {
        let taken = self.offer(CallInput::Audio(ulaw));
        if !taken {
            self.audio_dropped += 1;
        }
        taken
    }

    /// Anything that may be dropped when the call is behind (figures).
    pub fn offer(&mut self, input: CallInput) -> bool {
        self.tx.try_send(input).is_ok()
    }

    /// Anything else: kept until the call has room. Keys come from the far
    /// end, so past `MAX_CONTROL` waiting they are dropped (a stuck call
    /// cannot be made to hold unbounded input); what the transport itself
    /// reports (marks, reply starts, transfer results) is bounded by what the
    /// pipeline sent and always kept.
    pub fn control(&mut self, input: CallInput) {
        if self.control.len() >= MAX_CONTROL && matches!(input, CallInput::Dtmf(_)) {
            self.keys_dropped += 1;
            return;
        }
        self.control.push_back(input);
        self.flush();
    }

    /// Hands queued control inputs over while the call has room; call it
    /// on every turn of the driver's loop.
    pub fn flush(&mut self) {
        while let Some(i) = self.control.pop_front() {
            match self.tx.try_send(i) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(i)) => {
                    self.control.push_front(i);
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.control.clear();
                    break;
                }
            }
        }
    }

    pub fn pending(&self) -> usize {
        self.control.len()
    }

    /// A clone of the sender, for tasks that report later (transfers).
    pub fn sender(&self) -> mpsc::Sender<CallInput> {
        self.tx.clone()
    }

    /// Ends the call's input: what control is pending goes first.
    pub async fn close(mut self, last: Vec<CallInput>) {
        self.control.extend(last);
        for i in self.control.drain(..) {
            if self.tx.send(i).await.is_err() {
                break;
            }
        }
    }
}

/// The pipeline's next command; pending forever while there is no call.
pub async fn next_command(down: &mut Option<mpsc::Receiver<CallOutput>>) -> Option<CallOutput> {
    match down {
        Some(d) => d.recv().await,
        None => std::future::pending().await,
    }
}

/// How soon a driver should come back to hand over waiting control inputs.
const RETRY: Duration = Duration::from_millis(5);

/// A driver's next wake-up, brought forward while control inputs wait.
pub fn retry_at(deadline: Option<Instant>, up: Option<&Uplink>) -> Option<Instant> {
    match up.filter(|u| u.pending() > 0) {
        Some(_) => {
            let soon = Instant::now() + RETRY;
            Some(deadline.map_or(soon, |d| d.min(soon)))
        }
        None => deadline,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn drain(p: &mut Pacer, t: Instant) -> Vec<Paced> {
        std::iter::from_fn(|| p.poll(t)).collect()
    }

    fn frames(v: &[Paced]) -> Vec<(Option<u32>, Vec<u8>)> {
        v.iter()
            .filter_map(|s| match s {
                Paced::Frame {
                    reply,
                    ulaw,
                    muted: false,
                } => Some((*reply, ulaw.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn one_frame_per_20ms_marks_after_their_audio() {
        let t0 = Instant::now();
        let mut p = Pacer::new(0xff);
        p.start(t0);
        p.send_audio(1, &[1u8; 400]);
        p.send_mark("m1".into());
        let mut all = Vec::new();
        for i in 0..6 {
            all.extend(drain(&mut p, t0 + PTIME * i));
        }
        let f = frames(&all);
        assert_eq!(f.len(), 6, "one frame per 20 ms, silence when idle");
        assert_eq!(f[2].1[..80], [1u8; 80]);
        assert_eq!(f[2].1[80..], [0xffu8; 80], "last frame padded");
        assert_eq!(f[3].0, None);
        let mark = all.iter().position(|s| *s == Paced::Mark("m1".into()));
        let third = all
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s, Paced::Frame { .. }))
            .nth(2)
            .map(|(i, _)| i);
        assert!(mark > third, "the mark follows its audio");
        assert_eq!(
            all.iter()
                .filter(|s| matches!(s, Paced::ReplyStarted(1)))
                .count(),
            1
        );
        assert!(p.poll(t0 + PTIME * 5).is_none(), "nothing before the tick");
    }

    #[test]
    fn pause_holds_clear_drops_and_reports_marks_mute_keeps_the_clock() {
        let t0 = Instant::now();
        let mut p = Pacer::new(0xd5);
        p.start(t0);
        p.send_audio(1, &[7u8; 320]);
        p.set_paused(true);
        assert_eq!(frames(&drain(&mut p, t0))[0], (None, vec![0xd5; FRAME]));
        assert_eq!(p.queued(), PTIME * 2, "paused audio is kept");
        p.set_paused(false);
        assert_eq!(frames(&drain(&mut p, t0 + PTIME))[0].0, Some(1));
        p.send_mark("x".into());
        assert_eq!(p.clear(), vec!["x".to_string()]);
        assert!(p.queued().is_zero());
        p.set_muted(true);
        let muted = drain(&mut p, t0 + PTIME * 2);
        assert!(frames(&muted).is_empty(), "nothing sent on hold");
        assert_eq!(p.frames, 3, "but the clock ran");
    }

    #[test]
    fn a_late_clock_skips_ahead_instead_of_bursting() {
        let t0 = Instant::now();
        let mut p = Pacer::new(0xff);
        p.start(t0);
        assert_eq!(frames(&drain(&mut p, t0)).len(), 1);
        let late = t0 + Duration::from_secs(1);
        assert_eq!(frames(&drain(&mut p, late)).len(), 1);
        assert_eq!(p.due(), Some(late + PTIME));
    }

    #[test]
    fn apply_does_the_playout_part_and_returns_the_rest() {
        let mut p = Pacer::new(0xff);
        let a = |r| CallOutput::Audio {
            reply: r,
            ulaw: Arc::new(vec![1; 320]),
        };
        assert_eq!(apply(&mut p, a(1)), None);
        assert_eq!(apply(&mut p, CallOutput::Mark("r1-end".into())), None);
        assert_eq!(apply(&mut p, CallOutput::Pause), None);
        assert!(p.is_paused());
        assert_eq!(apply(&mut p, CallOutput::Clear), None);
        assert!(!p.is_paused() && p.queued().is_zero());
        assert_eq!(apply(&mut p, CallOutput::Hangup), Some(Control::Hangup));
        let t = CallOutput::Transfer {
            target: "desk:billing".into(),
            reason: "asked".into(),
            priority: 2,
        };
        assert!(matches!(
            apply(&mut p, t),
            Some(Control::Transfer { ref target, .. }) if target == "desk:billing"
        ));
    }

    #[tokio::test]
    async fn audio_may_drop_control_never() {
        let (tx, mut rx) = mpsc::channel(2);
        let mut up = Uplink::new(tx);
        up.audio(vec![1]);
        up.audio(vec![2]);
        up.audio(vec![3]);
        assert_eq!(up.audio_dropped, 1, "a full queue drops audio");
        up.control(CallInput::MarkPlayed("r1-s0".into()));
        up.control(CallInput::MarkPlayed("r1-end".into()));
        assert_eq!(up.pending(), 2, "control waits");
        assert!(matches!(rx.recv().await, Some(CallInput::Audio(_))));
        assert!(matches!(rx.recv().await, Some(CallInput::Audio(_))));
        up.flush();
        assert_eq!(up.pending(), 0);
        let names: Vec<String> = [rx.recv().await, rx.recv().await]
            .into_iter()
            .filter_map(|i| match i {
                Some(CallInput::MarkPlayed(m)) => Some(m),
                _ => None,
            })
            .collect();
        assert_eq!(names, ["r1-s0", "r1-end"], "in order, none lost");
    }

    #[test]
    fn a_stuck_call_holds_a_bounded_number_of_keys_but_every_mark() {
        let (tx, _rx) = mpsc::channel(1);
        let mut up = Uplink::new(tx);
        for _ in 0..10_000 {
            up.control(CallInput::Dtmf('1'));
        }
        assert!(up.pending() <= MAX_CONTROL + 1);
        assert!(up.keys_dropped > 9_000);
        up.control(CallInput::MarkPlayed("r1-end".into()));
        assert_eq!(up.pending(), MAX_CONTROL + 1, "the mark is kept");
    }
}
