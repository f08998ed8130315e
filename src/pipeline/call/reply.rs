//! Speaking: replies started, queued or held, their synthesised parts sent
//! with marks, the marks played back, interruptions, and the actions a
//! reply carries (hang up, transfer) once it has been heard.

use std::time::{Duration, Instant};

use super::core::{ms, Ask, CallCore, Effect, Playback};
use super::CallOutput;
use crate::dialogue::{Action, Interruption, Reply};
use crate::pipeline::metrics::metrics;
use crate::speech::TtsChunk;

impl CallCore {
    pub(super) fn queue_reply(&mut self, turn: Option<u32>, reply: Reply) {
        let delay = self.cfg.slow_reply_ms;
        if delay == 0 {
            self.start_reply(turn, reply);
        } else {
            let due = self.now + Duration::from_millis(delay);
            self.delayed.push_back((due, turn, reply));
        }
    }

    /// Stops what is playing (and drops it at the far end) without
    /// counting an interruption.
    pub(super) fn cut_playback(&mut self, clear: bool) {
        if let Some(p) = self.playing.take() {
            self.emit(Effect::CancelSpeech(p.reply));
            if clear {
                self.out(CallOutput::Clear);
            }
        }
    }

    pub(super) fn start_reply(&mut self, turn: Option<u32>, reply: Reply) {
        self.cut_playback(true);
        self.line("bot", &reply.say);
        self.reply_seq += 1;
        let id = self.reply_seq;
        if crate::speech::sentences::split(&reply.say).is_empty() {
            self.run_actions(reply.actions);
            return;
        }
        let slot = turn.and_then(|t| self.record.turns.iter().position(|r| r.index == t));
        self.playing = Some(Playback {
            reply: id,
            sentences: Vec::new(),
            heard: 0,
            synth_done: false,
            paused: false,
            first_frame: None,
            audio_ms: 0,
            actions: reply.actions,
            turn_slot: slot,
        });
        self.reply_started_at.insert(id, (self.now, turn));
        let lang = self.voice_language();
        self.emit(Effect::Speak {
            reply: id,
            text: reply.say,
            lang,
        });
    }

    pub(super) fn on_tts_chunk(&mut self, reply: u32, chunk: TtsChunk) {
        let Some(p) = self.playing.as_mut().filter(|p| p.reply == reply) else {
            return;
        };
        let first = chunk.index == 0 || p.audio_ms == 0;
        p.audio_ms += chunk.ulaw.len() as u64 / 8;
        if first {
            if let Some((asked, turn)) = self.reply_started_at.get(&reply).copied() {
                let first_audio = ms(self.now.saturating_duration_since(asked));
                metrics()
                    .tts_first_audio
                    .observe(first_audio as f64 / 1000.0);
                if let Some(r) =
                    turn.and_then(|t| self.record.turns.iter_mut().find(|r| r.index == t))
                {
                    r.timings.tts_first_audio_ms = Some(first_audio);
                }
                self.first_audio_at.insert(reply, self.now);
            }
        }
        let mark = format!("r{reply}-s{}", chunk.index);
        self.out(CallOutput::Audio {
            reply,
            ulaw: chunk.ulaw,
        });
        self.out(CallOutput::Mark(mark));
    }

    pub(super) fn on_reply_started(&mut self, reply: u32, at: Instant) {
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
                    self.record.greeting_first_frame_ms =
                        Some(ms(at.saturating_duration_since(self.started)));
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
                self.save();
            }
        }
    }

    pub(super) fn on_mark(&mut self, name: &str) {
        if name.starts_with("hold-") {
            return self.on_hold_mark(name);
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
                if let Some(p) = self.playing.take() {
                    if let Some(r) = p.turn_slot.and_then(|s| self.record.turns.get_mut(s)) {
                        r.heard_text = p.sentences.join(" ");
                        r.heard_ms = p.audio_ms;
                    }
                    self.run_actions(p.actions);
                }
            }
        } else if let Some(i) = rest.strip_prefix('s').and_then(|s| s.parse::<usize>().ok()) {
            p.heard = p.heard.max(i + 1);
        }
    }

    pub(super) fn interrupt(&mut self) {
        let Some(p) = self.playing.take() else { return };
        self.emit(Effect::CancelSpeech(p.reply));
        self.out(CallOutput::Clear);
        let heard_ms = p
            .first_frame
            .map(|f| ms(self.now.saturating_duration_since(f)).min(p.audio_ms))
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
        self.emit(Effect::Ask(Ask::Interrupted(Interruption {
            heard_text,
            heard_ms,
        })));
        // Actions of an interrupted reply (e.g. hang up after "goodbye") still
        // apply only if the caller let it finish; drop them.
    }

    pub(super) fn run_actions(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Hangup => {
                    self.record.outcome = if self.closing {
                        "node_closed".into()
                    } else {
                        "bot_hung_up".into()
                    };
                    self.out(CallOutput::Hangup);
                    self.hangup_sent = true;
                }
                Action::Transfer {
                    target,
                    reason,
                    priority,
                } => {
                    self.record.outcome = format!("transferred:{target}");
                    if let Some(queue) = self.desk_queue(&target) {
                        self.hold_for_desk(queue, reason, priority);
                        continue;
                    }
                    tracing::info!(call = %self.meta.call_id, %target, %reason, priority, "transfer to a human");
                    self.out(CallOutput::Transfer {
                        target,
                        reason,
                        priority,
                    });
                }
            }
        }
        self.save();
    }

    /// The bot hung up: nothing more is said or asked.
    pub(super) fn hang_up(&mut self) {
        self.out(CallOutput::Hangup);
        self.hangup_sent = true;
    }
}
