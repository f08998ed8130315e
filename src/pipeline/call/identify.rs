//! Which language a caller speaks, found beside their first turn rather
//! than in front of it.
//!
//! While a call's language is unknown (an agent with several, a caller
//! with none on record), the main lane hears every turn as in a call of
//! one language, and the dialogue is asked whether it plainly understands
//! the main lane's words (the speculative transcript at a pause, the final
//! one at the end). If it does, the turn is answered at once and the call
//! stays in the main language: an English caller's first turn waits for
//! nothing, and no identification competes with the voice for the CPU.
//! If it does not, the multilingual lane identifies the language (from a
//! pause on, so it is often known by the end of the turn) and the turn
//! waits for it. A turn that reaches `identify_ms` is identified while the
//! caller still speaks.
//!
//! When the language turns out to be another one, a held turn (or one the
//! wrong lane heard) is decoded again in it. A finding of the main
//! language from audio cut at a pause the caller went on from settles
//! nothing: a Spanish caller's "Hola," would otherwise keep them in English.
//! Nor does a finding no language is sure of (Whisper hears a lone "Hola."
//! as English at p 0.66): that turn is answered with the main lane's words
//! and the next one not understood is identified again, up to
//! [`MAX_UNSURE`] times before the main language is kept.

use std::sync::Arc;

use super::core::{Ask, AsrKind, CallCore, Effect, TAIL_SAMPLES};
use crate::asr::{AsrError, Priority, Purpose, Spoken, Transcript};
use crate::nlu::lang::Lang;

/// Identifications that settle nothing before the call stays in the main
/// language: each holds a turn not understood for a moment.
pub(super) const MAX_UNSURE: u8 = 3;

/// The identification in flight.
#[derive(Debug)]
pub(super) struct Identifying {
    pub(super) job: u64,
    turn: u32,
    /// It reads `identify_ms` of audio (or the whole turn).
    full: bool,
    /// Cut at a pause: the turn's last voiced sample then.
    pause: Option<u64>,
    /// The caller went on after the pause it was cut at.
    stale: bool,
}

/// Findings no language was sure of.
#[derive(Debug, Default)]
pub(super) struct Unsure {
    count: u8,
    /// The turn and pause of the latest one cut at a pause: a turn that
    /// ends there is the same audio, and would be found unsure again.
    at_pause: Option<(u32, u64)>,
}

impl CallCore {
    /// Whether the call's language is still to be found.
    pub(super) fn needs_language(&self) -> bool {
        self.language.is_none() && self.cfg.languages.len() > 1
    }

    fn main_language(&self) -> Lang {
        self.cfg.languages.first().copied().unwrap_or_default()
    }

    /// A turn in progress has reached identification's window.
    pub(super) fn identify_when_long(&mut self, onset: u64, pos: u64) {
        let window = self.cfg.identify_ms * 16;
        if window == 0 || pos.saturating_sub(onset) < window || !self.needs_language() {
            return;
        }
        let Some(index) = self
            .turn
            .as_ref()
            .filter(|t| !t.ident_asked)
            .map(|t| t.index)
        else {
            return;
        };
        let audio = Arc::new(self.slice(onset.saturating_sub(self.preroll()), pos));
        self.identify(index, audio, true);
    }

    /// The speculative transcript of a turn still in progress: does the
    /// dialogue understand it?
    pub(super) fn ask_understood(&mut self, turn: u32, text: &str) {
        let unasked = self
            .turn
            .as_ref()
            .is_some_and(|t| t.index == turn && !t.ident_asked);
        if self.needs_language() && unasked && !text.trim().is_empty() {
            self.emit(Effect::Ask(Ask::Understands {
                turn,
                text: text.to_string(),
            }));
        }
    }

    /// Identifies a turn still in progress from its audio up to its pause.
    fn identify_at_pause(&mut self, turn: u32) {
        let Some(t) = self.turn.as_ref().filter(|t| t.index == turn) else {
            return;
        };
        if t.ident_asked {
            return;
        }
        let (onset, last_voice) = (t.onset, t.last_voice);
        let full = last_voice.saturating_sub(onset) / 16 >= self.cfg.identify_ms;
        let audio = Arc::new(self.slice(
            onset.saturating_sub(self.preroll()),
            last_voice + TAIL_SAMPLES,
        ));
        self.identify(turn, audio, full);
        if let Some(i) = self.identifying.as_mut().filter(|i| i.turn == turn) {
            i.pause = Some(last_voice);
        }
    }

    /// Identifies an ended turn from all of its audio. False when that
    /// audio was already found unsure at a pause the turn ended at: that
    /// counts as an unsure whole turn, and nothing is asked again.
    fn identify_ended(&mut self, turn: u32) -> bool {
        let Some(t) = self
            .ended
            .iter()
            .find(|t| t.index == turn && !t.ident_asked)
        else {
            return true;
        };
        let (from, to) = (t.onset, t.last_voice);
        if self.unsure.at_pause == Some((turn, to)) {
            self.unsure.at_pause = None;
            tracing::debug!(call = %self.meta.call_id, turn, "the turn ended at the pause found unsure: not identified again");
            self.unsure_whole_turn(turn);
            return false;
        }
        let audio = Arc::new(self.slice(from.saturating_sub(self.preroll()), to + TAIL_SAMPLES));
        self.identify(turn, audio, true);
        true
    }

    /// A whole turn no language is sure of is taken as the main
    /// language's; after [`MAX_UNSURE`] of them the call stays in it.
    fn unsure_whole_turn(&mut self, turn: u32) {
        self.unsure.count = self.unsure.count.saturating_add(1);
        let settle = self.unsure.count >= MAX_UNSURE;
        tracing::info!(call = %self.meta.call_id, turn, unsure = self.unsure.count, settle, "no language sure enough: the turn is taken as the main language's");
        if settle && self.needs_language() {
            let main = self.main_language();
            self.set_language(main);
        }
    }

    /// The caller went on after a pause: an identification cut there says
    /// little about the rest.
    pub(super) fn identification_resumed(&mut self, turn: u32) {
        if let Some(i) = self
            .identifying
            .as_mut()
            .filter(|i| i.turn == turn && !i.full)
        {
            i.stale = true;
        }
    }

    /// Asks the multilingual lane which language `audio` is in (one
    /// identification at a time; its result settles the whole call).
    fn identify(&mut self, turn: u32, audio: Arc<Vec<f32>>, full: bool) {
        if !self.needs_language() || self.identifying.is_some() || self.closing {
            return;
        }
        let job = self.next_job(turn, AsrKind::Identify);
        self.identifying = Some(Identifying {
            job: job.id,
            turn,
            full,
            pause: None,
            stale: false,
        });
        if let Some(t) = self
            .turn
            .iter_mut()
            .chain(self.ended.iter_mut())
            .find(|t| t.index == turn)
        {
            t.ident_asked = true;
        }
        let among = self.cfg.languages.clone();
        self.emit(Effect::Transcribe {
            job,
            purpose: Purpose::General,
            spoken: Spoken::Identify(among),
            priority: Priority::Final,
            audio,
        });
    }

    /// Whether the final transcript of `turn` waits (or is decoded again)
    /// because of the call's language; see the module's notes.
    pub(super) fn hold_for_language(&mut self, turn: u32, tr: &Transcript, spec: bool) -> bool {
        let main = self.main_language();
        if let Some(l) = self.language {
            // Heard by the main lane before the language was known.
            let wrong_lane = self.cfg.languages.len() > 1 && tr.language.unwrap_or(main) != l;
            if wrong_lane && self.ended.iter().any(|t| t.index == turn) {
                tracing::debug!(call = %self.meta.call_id, turn, language = l.code(), "decoding the turn again in the caller's language");
                self.retry_final(turn);
                return true;
            }
            return false;
        }
        if !self.needs_language() || tr.text.trim().is_empty() {
            return false;
        }
        let Some(t) = self
            .ended
            .iter_mut()
            .find(|t| t.index == turn && !t.released)
        else {
            return false;
        };
        t.held = Some((tr.clone(), spec));
        self.emit(Effect::Ask(Ask::Understands {
            turn,
            text: tr.text.clone(),
        }));
        true
    }

    /// The dialogue's verdict on a turn's words in the main language.
    pub(super) fn on_understood(&mut self, turn: u32, yes: bool) {
        if !self.needs_language() {
            return;
        }
        if self.turn.as_ref().is_some_and(|t| t.index == turn) {
            // A pause's words: if they are not plainly the main language,
            // finding the language starts now rather than at the end.
            if !yes {
                self.identify_at_pause(turn);
            }
            return;
        }
        if !self
            .ended
            .iter()
            .any(|t| t.index == turn && t.held.is_some())
        {
            return;
        }
        if !yes {
            self.identify_ended(turn);
            if self.identifying.is_some() {
                return;
            }
            // Nothing can find it (or it was found unsure already): the
            // main language's words serve.
        } else if self.identifying.is_none() {
            tracing::info!(call = %self.meta.call_id, turn, "understood in the main language: the call goes on in it, unidentified");
            let main = self.main_language();
            self.set_language(main);
        }
        let Some(t) = self.ended.iter_mut().find(|t| t.index == turn) else {
            return;
        };
        t.released = true;
        if let Some((tr, spec)) = t.held.take() {
            self.on_final(turn, tr, spec);
        }
    }

    pub(super) fn on_identified(
        &mut self,
        job: super::core::Job,
        result: Result<Transcript, AsrError>,
    ) {
        let Some(id) = self.identifying.take_if(|i| i.job == job.id) else {
            return;
        };
        let main = self.main_language();
        // Which turn to ask about again, with more of it, before its words
        // are taken as the main language's.
        let mut again = false;
        let found = match result {
            Ok(Transcript {
                language: Some(l),
                decode_ms,
                ..
            }) => Some((l, decode_ms)),
            // Unsure from the audio up to a pause: the rest may tell.
            Ok(_) if !id.full => {
                again = true;
                self.unsure.at_pause = id.pause.map(|p| (id.turn, p));
                None
            }
            Ok(_) => {
                self.unsure_whole_turn(id.turn);
                None
            }
            Err(err) => {
                tracing::warn!(call = %self.meta.call_id, error = %err, "language identification failed: the turn is taken as the main language's");
                None
            }
        };
        if let (true, Some((l, ms))) = (self.needs_language(), found) {
            if l != main || !id.stale {
                tracing::info!(call = %self.meta.call_id, turn = id.turn, language = l.code(), ms, "caller's language identified");
                self.set_language(l);
            } else {
                again = true;
            }
        }
        if again {
            if let Some(t) = self
                .turn
                .iter_mut()
                .chain(self.ended.iter_mut())
                .find(|t| t.index == id.turn)
            {
                t.ident_asked = false;
            }
        }
        self.release_held(found.is_none() && !again);
    }

    /// Held turns go on once the language is known (or cannot be found);
    /// otherwise one is identified again from its whole audio.
    fn release_held(&mut self, failed: bool) {
        let held: Vec<u32> = self
            .ended
            .iter()
            .filter(|t| t.held.is_some())
            .map(|t| t.index)
            .collect();
        for turn in held {
            // Not settled: asked again from the whole turn (if nothing
            // else is being identified), unless that audio was found
            // unsure already.
            if self.language.is_none() && !failed && self.identify_ended(turn) {
                continue;
            }
            let Some(t) = self.ended.iter_mut().find(|t| t.index == turn) else {
                continue;
            };
            t.released = true;
            if let Some((tr, spec)) = t.held.take() {
                self.on_final(turn, tr, spec);
            }
        }
    }
}
