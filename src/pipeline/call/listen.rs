//! Listening: the caller's audio through VAD and the turn detector, partial
//! and speculative transcripts, and the end-of-turn decision (Smart Turn,
//! the transcript's words, the silence fallback). Replying lives in
//! `core.rs`.

use std::sync::Arc;
use std::time::Instant;

use super::core::{AsrKind, CallCore, Effect, PendingTurn, Spec, MAX_TURN, TAIL_SAMPLES};
use super::CallOutput;
use crate::asr::{Priority, Purpose, Spoken, Transcript};
use crate::dialogue::Expect;
use crate::pipeline::endpoint;
use crate::pipeline::metrics::metrics;
use crate::turn::TurnEvent;

impl CallCore {
    fn arrival_of(&self, pos: u64) -> Instant {
        self.arrivals
            .iter()
            .find(|(p, _)| *p >= pos)
            .map(|(_, t)| *t)
            .unwrap_or(self.now)
    }

    fn position(&self) -> u64 {
        self.buf_start + self.audio.len() as u64
    }

    /// Audio `from..to` (absolute positions), clamped to what is buffered.
    pub(super) fn slice(&self, from: u64, to: u64) -> Vec<f32> {
        let a = from
            .saturating_sub(self.buf_start)
            .min(self.audio.len() as u64) as usize;
        let b = to
            .saturating_sub(self.buf_start)
            .min(self.audio.len() as u64) as usize;
        self.audio[a..b.max(a)].to_vec()
    }

    pub(super) fn preroll(&self) -> u64 {
        self.det.config().preroll_ms * 16
    }

    /// One 32 ms window of the caller's audio at 16 kHz with its speech
    /// probability.
    pub(super) fn on_window(&mut self, w: Vec<f32>, prob: f32) {
        self.audio.extend_from_slice(&w);
        let now = self.now;
        let pos = self.position();
        self.arrivals.push_back((pos, now));
        while self.arrivals.len() > 96 {
            self.arrivals.pop_front();
        }
        for ev in self.det.push(prob) {
            self.on_turn_event(ev, now);
        }
        self.check_endpoint();
        // Trim the buffer: keep the pre-roll when idle, the whole turn otherwise.
        // (A turn going on from one ended early starts before the detector's.)
        let live = match self.det.onset() {
            Some(onset) => self.turn.as_ref().map_or(onset, |t| t.onset.min(onset)),
            None => pos,
        };
        // Ended turns still waiting for a transcript keep their audio too.
        let oldest = self.ended.iter().map(|t| t.onset).min().unwrap_or(u64::MAX);
        let keep_from = live.min(oldest).saturating_sub(self.preroll());
        if keep_from > self.buf_start {
            let n = ((keep_from - self.buf_start) as usize).min(self.audio.len());
            self.audio.drain(..n);
            self.buf_start += n as u64;
        }
        if let Some(onset) = self.det.onset() {
            // The whole utterance, a part cut early included, is held to
            // the limit (Whisper sees at most 30 s).
            let start = self.turn.as_ref().map_or(onset, |t| t.onset.min(onset));
            if pos - start > MAX_TURN.as_millis() as u64 * 16 {
                if let Some(ev) = self.det.force_end() {
                    self.on_turn_event(ev, now);
                }
            } else {
                self.maybe_partial(onset, pos);
                self.identify_when_long(onset, pos);
            }
        }
    }

    pub(super) fn maybe_partial(&mut self, onset: u64, pos: u64) {
        let every = self.cfg.partial_interval_ms * 16;
        if every == 0 || self.partial_inflight || pos - self.last_partial_pos.max(onset) < every {
            return;
        }
        // Partials come from the main lane only; a call in another language
        // does without them rather than load the multilingual one.
        if matches!(self.spoken(), Spoken::In(_)) {
            return;
        }
        let Some(turn) = self.turn.as_ref().map(|t| t.index) else {
            return;
        };
        let audio = Arc::new(self.slice(onset.saturating_sub(self.preroll()), pos));
        // One partial at a time; a busy pool answers with an error, which
        // frees the slot again.
        self.partial_inflight = true;
        self.last_partial_pos = pos;
        let job = self.next_job(turn, AsrKind::Partial);
        self.emit(Effect::Transcribe {
            job,
            purpose: Purpose::General,
            spoken: Spoken::Main,
            priority: Priority::Partial,
            audio,
        });
    }

    pub(super) fn bot_audible(&self) -> bool {
        self.playing.is_some()
    }

    pub(super) fn on_turn_event(&mut self, ev: TurnEvent, now: Instant) {
        tracing::debug!(call = %self.meta.call_id, event = ?ev, bot_audible = self.bot_audible(), "turn event");
        match ev {
            TurnEvent::SpeechStarted { onset } => {
                // Going on from a turn ended early that is not answered yet:
                // this turn's audio starts where that one's did.
                let continues = self
                    .note_continuation(onset)
                    .and_then(|i| self.ended.iter().find(|t| t.index == i))
                    .map(|t| (t.index, t.onset));
                self.turn_seq += 1;
                self.turn = Some(PendingTurn {
                    index: self.turn_seq,
                    onset: continues.map_or(onset, |(_, o)| o),
                    last_voice: onset,
                    last_voice_at: now,
                    eot_at: None,
                    confirmed: false,
                    partials: Vec::new(),
                    smart_turn_prob: None,
                    smart_turn_yes: None,
                    end_reason: "",
                    spec: None,
                    ident_asked: false,
                    held: None,
                    released: false,
                    continues: continues.map(|(i, _)| i),
                    carried: None,
                });
                self.last_partial_pos = onset;
                if let Some(p) = self.playing.as_mut() {
                    if !p.paused {
                        p.paused = true;
                        self.out(CallOutput::Pause);
                    }
                }
            }
            TurnEvent::SpeechConfirmed => {
                if let Some(t) = self.turn.as_mut() {
                    t.confirmed = true;
                }
                if self.bot_audible() {
                    self.interrupt();
                }
            }
            TurnEvent::Discarded => match self.turn.take() {
                // A noise after words carried into it: those still get their answer.
                Some(t) if t.carried.is_some() => self.answer(t, Self::nothing_heard(), false),
                _ => self.resume_if_paused(),
            },
            TurnEvent::Resumed => {
                if let Some(s) = self.turn.as_mut().and_then(|t| t.spec.take()) {
                    self.emit(Effect::CancelTranscribe(s.job));
                }
                if let Some(index) = self.turn.as_ref().map(|t| t.index) {
                    self.identification_resumed(index);
                }
            }
            TurnEvent::Paused { last_voice } => {
                let at = self.arrival_of(last_voice);
                let Some(t) = self.turn.as_mut() else { return };
                t.last_voice = last_voice;
                t.last_voice_at = at;
                let (index, onset) = (t.index, t.onset);
                // Speculative final transcript and Smart Turn, in parallel.
                let audio = Arc::new(self.slice(
                    onset.saturating_sub(self.preroll()),
                    last_voice + TAIL_SAMPLES,
                ));
                let purpose = self.purpose();
                let spoken = self.spoken();
                let job = self.next_job(index, AsrKind::Speculative { last_voice });
                let spec = Spec {
                    last_voice,
                    job: job.id,
                    result: None,
                    verdict: None,
                };
                if let Some(old) = self.turn.as_mut().and_then(|t| t.spec.replace(spec)) {
                    self.emit(Effect::CancelTranscribe(old.job));
                }
                self.emit(Effect::Transcribe {
                    job,
                    purpose,
                    spoken,
                    priority: Priority::Speculative,
                    audio: audio.clone(),
                });
                self.emit(Effect::JudgeTurn {
                    turn: index,
                    pause: last_voice,
                    audio,
                });
            }
            TurnEvent::EndOfTurn { onset, last_voice } => {
                let reason = "silence";
                self.end_of_turn(onset, last_voice, reason, now);
            }
        }
    }

    /// The lane that should hear the caller's answer.
    pub(super) fn purpose(&self) -> Purpose {
        match self.expect {
            Expect::Digits { .. } => Purpose::Digits,
            _ => Purpose::General,
        }
    }

    /// Ends a paused turn once the silence so far is what the evidence
    /// (Smart Turn, the transcript's words, the question) asks for; the
    /// detector's own fallback covers the rest.
    pub(super) fn check_endpoint(&mut self) {
        let now = self.now;
        let Some(paused) = self.det.paused_at() else {
            return;
        };
        let Some(t) = self.turn.as_ref().filter(|t| t.last_voice == paused) else {
            return;
        };
        let smart = t.smart_turn_yes == Some(paused);
        let verdict = t
            .spec
            .as_ref()
            .filter(|s| s.last_voice == paused)
            .and_then(|s| s.verdict);
        let c = self.det.config();
        let need = endpoint::silence_needed(
            verdict,
            self.expect,
            smart,
            c.pause_ms,
            c.complete_silence_ms,
            c.max_silence_ms,
        );
        let silence_ms = self.det.position().saturating_sub(paused) / 16;
        if need >= c.max_silence_ms || silence_ms < need {
            return;
        }
        let reason = if smart { "smart_turn" } else { "transcript" };
        if let Some(TurnEvent::EndOfTurn { onset, last_voice }) = self.det.end_turn() {
            self.end_of_turn(onset, last_voice, reason, now);
        }
    }

    /// Speech that starts sooner after an early end than the fallback would
    /// have waited means the last turn was cut while the caller paused.
    /// Returns that turn's index.
    pub(super) fn note_continuation(&mut self, onset: u64) -> Option<u32> {
        let (index, last_voice) = self.last_early_end.take()?;
        let gap_ms = onset.saturating_sub(last_voice) / 16;
        if gap_ms >= self.det.config().max_silence_ms {
            return None;
        }
        metrics().turns_cut_early.inc();
        if let Some(r) = self.record.turns.iter_mut().find(|r| r.index == index) {
            r.timings.cut_early = true;
        }
        tracing::info!(call = %self.meta.call_id, turn = index, gap_ms, "caller went on after an early end of turn");
        Some(index)
    }

    /// The transcript of a turn with no words of its own.
    pub(super) fn nothing_heard() -> Transcript {
        Transcript {
            text: String::new(),
            audio_ms: 0,
            queue_ms: 0,
            decode_ms: 0,
            engine: "",
            language: None,
        }
    }

    pub(super) fn resume_if_paused(&mut self) {
        if let Some(p) = self.playing.as_mut() {
            if p.paused {
                p.paused = false;
                self.out(CallOutput::Resume);
            }
        }
    }

    pub(super) fn end_of_turn(
        &mut self,
        _onset: u64,
        last_voice: u64,
        reason: &'static str,
        now: Instant,
    ) {
        let at = self.arrival_of(last_voice);
        let Some(mut t) = self.turn.take() else {
            return;
        };
        t.last_voice = last_voice;
        t.last_voice_at = at;
        t.eot_at = Some(now);
        t.end_reason = reason;
        self.last_early_end = (reason != "silence").then_some((t.index, last_voice));
        // A short "yes"/"mm-hm" over the bot is a backchannel, not a turn.
        if !t.confirmed && self.bot_audible() {
            tracing::debug!(call = %self.meta.call_id, turn = t.index, "short sound over the bot: not a turn");
            if let Some(s) = t.spec.take() {
                self.emit(Effect::CancelTranscribe(s.job));
            }
            if t.carried.is_some() {
                self.answer(t, Self::nothing_heard(), false);
            } else {
                self.resume_if_paused();
            }
            return;
        }
        metrics()
            .end_of_turn
            .observe(now.saturating_duration_since(at).as_secs_f64());
        metrics().turn_ends_total.with_label_values(&[reason]).inc();
        let index = t.index;
        // The speculative transcript serves if it covers exactly this turn.
        let ready = match t.spec.as_mut() {
            Some(s) if s.last_voice == last_voice => Some(s.result.take()),
            _ => None,
        };
        match ready {
            Some(Some(tr)) => {
                t.spec = None;
                self.ended.push(t);
                self.on_final(index, tr, true);
            }
            // Still decoding: its result finishes the turn when it arrives.
            Some(None) => self.ended.push(t),
            None => {
                if let Some(s) = t.spec.take() {
                    self.emit(Effect::CancelTranscribe(s.job));
                }
                self.ended.push(t);
                self.retry_final(index);
            }
        }
    }
}
