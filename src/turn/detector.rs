//! Sans-IO turn detector: VAD probabilities per 32 ms window in, turn events
//! out. Positions are sample indices at 16 kHz since the call began, so the
//! core is deterministic and testable without clocks.
//!
//! Thresholds (defaults, all configurable under `[turn]`):
//! - a window is voiced when p ≥ 0.5 and stays voiced until p < 0.35;
//! - a segment starts after 2 voiced windows (64 ms);
//! - it counts as real speech — may interrupt the bot — once 300 ms are
//!   voiced, so a cough or "mm-hm" does not barge in;
//! - 200 ms of silence after speech is a pause: Smart Turn v3 decides whether
//!   the turn is complete (p ≥ 0.5);
//! - 1000 ms of silence ends the turn whatever Smart Turn said (fallback);
//! - a segment with under 120 ms voiced is discarded as noise.

use serde::{Deserialize, Serialize};

use super::vad::WINDOW;

const RATE: u64 = 16000;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct TurnConfig {
    pub vad_on: f32,
    pub vad_off: f32,
    pub start_ms: u64,
    pub barge_in_ms: u64,
    pub pause_ms: u64,
    pub max_silence_ms: u64,
    /// Silence that ends a turn whose transcript closes a sentence, when
    /// Smart Turn did not already end it.
    pub complete_silence_ms: u64,
    pub min_turn_ms: u64,
    pub smart_turn_threshold: f32,
    pub preroll_ms: u64,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            vad_on: 0.5,
            vad_off: 0.35,
            start_ms: 64,
            barge_in_ms: 300,
            pause_ms: 200,
            max_silence_ms: 1000,
            complete_silence_ms: 400,
            min_turn_ms: 120,
            smart_turn_threshold: 0.5,
            preroll_ms: 200,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnEvent {
    /// Voice began at sample `onset`.
    SpeechStarted { onset: u64 },
    /// The segment has enough voiced audio to be speech, not a noise.
    SpeechConfirmed,
    /// Silence after speech long enough to ask whether the turn is over.
    Paused { last_voice: u64 },
    /// Speech came back after a pause; the turn goes on.
    Resumed,
    /// The turn is over: `onset..last_voice` holds it.
    EndOfTurn { onset: u64, last_voice: u64 },
    /// A short noise ended; it was not a turn.
    Discarded,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Idle { run: u32 },
    Turn(Segment),
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Segment {
    onset: u64,
    voiced: u64,
    last_voice: u64,
    in_voice: bool,
    confirmed: bool,
    paused: bool,
}

pub struct TurnDetector {
    cfg: TurnConfig,
    state: State,
    pos: u64,
}

fn ms(samples: u64) -> u64 {
    samples * 1000 / RATE
}

impl TurnDetector {
    pub fn new(cfg: TurnConfig) -> Self {
        Self {
            cfg,
            state: State::Idle { run: 0 },
            pos: 0,
        }
    }

    pub fn config(&self) -> &TurnConfig {
        &self.cfg
    }

    /// Sample position after the last window pushed.
    pub fn position(&self) -> u64 {
        self.pos
    }

    pub fn in_turn(&self) -> bool {
        matches!(self.state, State::Turn(_))
    }

    pub fn is_confirmed(&self) -> bool {
        matches!(self.state, State::Turn(s) if s.confirmed)
    }

    /// Feeds the VAD probability of the next window.
    pub fn push(&mut self, prob: f32) -> Vec<TurnEvent> {
        let start = self.pos;
        self.pos += WINDOW as u64;
        let end = self.pos;
        let mut ev = Vec::new();
        match &mut self.state {
            State::Idle { run } => {
                if prob >= self.cfg.vad_on {
                    *run += 1;
                    let needed = (self.cfg.start_ms * RATE / 1000)
                        .div_ceil(WINDOW as u64)
                        .max(1);
                    if *run as u64 >= needed {
                        let onset = end - *run as u64 * WINDOW as u64;
                        self.state = State::Turn(Segment {
                            onset,
                            voiced: end - onset,
                            last_voice: end,
                            in_voice: true,
                            confirmed: false,
                            paused: false,
                        });
                        ev.push(TurnEvent::SpeechStarted { onset });
                        self.check_confirm(&mut ev);
                    }
                } else {
                    *run = 0;
                }
            }
            State::Turn(seg) => {
                let voiced = if seg.in_voice {
                    prob >= self.cfg.vad_off
                } else {
                    prob >= self.cfg.vad_on
                };
                seg.in_voice = voiced;
                if voiced {
                    seg.voiced += end - start;
                    seg.last_voice = end;
                    if seg.paused {
                        seg.paused = false;
                        ev.push(TurnEvent::Resumed);
                    }
                    self.check_confirm(&mut ev);
                } else {
                    let silence = ms(end - seg.last_voice);
                    if ms(seg.voiced) < self.cfg.min_turn_ms && silence >= self.cfg.pause_ms {
                        self.state = State::Idle { run: 0 };
                        ev.push(TurnEvent::Discarded);
                    } else if silence >= self.cfg.max_silence_ms {
                        let (onset, last_voice) = (seg.onset, seg.last_voice);
                        self.state = State::Idle { run: 0 };
                        ev.push(TurnEvent::EndOfTurn { onset, last_voice });
                    } else if silence >= self.cfg.pause_ms && !seg.paused {
                        seg.paused = true;
                        ev.push(TurnEvent::Paused {
                            last_voice: seg.last_voice,
                        });
                    }
                }
            }
        }
        ev
    }

    fn check_confirm(&mut self, ev: &mut Vec<TurnEvent>) {
        if let State::Turn(seg) = &mut self.state {
            if !seg.confirmed && ms(seg.voiced) >= self.cfg.barge_in_ms {
                seg.confirmed = true;
                ev.push(TurnEvent::SpeechConfirmed);
            }
        }
    }

    /// Ends the turn whatever its state (a caller who never pauses).
    pub fn force_end(&mut self) -> Option<TurnEvent> {
        match self.state {
            State::Turn(seg) => {
                self.state = State::Idle { run: 0 };
                Some(TurnEvent::EndOfTurn {
                    onset: seg.onset,
                    last_voice: seg.last_voice,
                })
            }
            _ => None,
        }
    }

    /// Onset of the current segment, if one is open.
    pub fn onset(&self) -> Option<u64> {
        match self.state {
            State::Turn(seg) => Some(seg.onset),
            _ => None,
        }
    }

    /// Last voiced position of the open segment, while it is paused.
    pub fn paused_at(&self) -> Option<u64> {
        match self.state {
            State::Turn(seg) if seg.paused => Some(seg.last_voice),
            _ => None,
        }
    }

    /// Ends the current turn now (Smart Turn said it is complete). Returns
    /// the turn's bounds, or `None` if speech resumed meanwhile.
    pub fn end_turn(&mut self) -> Option<TurnEvent> {
        match self.state {
            State::Turn(seg) if seg.paused => {
                self.state = State::Idle { run: 0 };
                Some(TurnEvent::EndOfTurn {
                    onset: seg.onset,
                    last_voice: seg.last_voice,
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs windows of (prob, count) and collects events with their window index.
    fn run(d: &mut TurnDetector, script: &[(f32, usize)]) -> Vec<(usize, TurnEvent)> {
        let mut out = Vec::new();
        let mut i = 0;
        for &(p, n) in script {
            for _ in 0..n {
                for e in d.push(p) {
                    out.push((i, e));
                }
                i += 1;
            }
        }
        out
    }

    fn kinds(ev: &[(usize, TurnEvent)]) -> Vec<&'static str> {
        ev.iter()
            .map(|(_, e)| match e {
                TurnEvent::SpeechStarted { .. } => "start",
                TurnEvent::SpeechConfirmed => "confirm",
                TurnEvent::Paused { .. } => "pause",
                TurnEvent::Resumed => "resume",
                TurnEvent::EndOfTurn { .. } => "end",
                TurnEvent::Discarded => "discard",
            })
            .collect()
    }

    #[test]
    fn a_short_cough_neither_interrupts_nor_makes_a_turn() {
        let mut d = TurnDetector::new(TurnConfig::default());
        // 6 windows = 192 ms of voice, then silence.
        let ev = run(&mut d, &[(0.0, 5), (0.9, 6), (0.0, 40)]);
        assert_eq!(kinds(&ev), vec!["start", "pause", "end"]);
        // 192 ms ≥ 120 ms min turn: it ends as a (short) turn, never confirmed.
        let mut d = TurnDetector::new(TurnConfig::default());
        let ev = run(&mut d, &[(0.9, 3), (0.0, 40)]);
        assert_eq!(kinds(&ev), vec!["start", "discard"]);
    }

    #[test]
    fn speech_over_300ms_is_confirmed_then_pause_then_fallback_end() {
        let mut d = TurnDetector::new(TurnConfig::default());
        let ev = run(&mut d, &[(0.0, 3), (0.9, 30), (0.0, 40)]);
        assert_eq!(kinds(&ev), vec!["start", "confirm", "pause", "end"]);
        let confirm_at = ev[1].0;
        // 300 ms voiced = 10 windows (9.4 rounded up), counted from the onset.
        assert_eq!(confirm_at, 3 + 9);
        let (end_at, end) = ev[3];
        match end {
            TurnEvent::EndOfTurn { onset, last_voice } => {
                assert_eq!(onset, 3 * 512);
                assert_eq!(last_voice, 33 * 512);
            }
            _ => unreachable!(),
        }
        // Fallback fires at 1000 ms silence: 32 windows after the last voice.
        assert_eq!(end_at, 33 + 31);
    }

    #[test]
    fn hysteresis_keeps_a_dip_inside_the_turn() {
        let mut d = TurnDetector::new(TurnConfig::default());
        let ev = run(&mut d, &[(0.9, 12), (0.4, 3), (0.9, 12), (0.0, 40)]);
        assert_eq!(kinds(&ev), vec!["start", "confirm", "pause", "end"]);
    }

    #[test]
    fn resumed_speech_cancels_the_pause_and_end_turn() {
        let mut d = TurnDetector::new(TurnConfig::default());
        let ev = run(&mut d, &[(0.9, 15), (0.0, 8), (0.9, 10)]);
        assert_eq!(kinds(&ev), vec!["start", "confirm", "pause", "resume"]);
        assert!(d.end_turn().is_none(), "no end while speaking");
        run(&mut d, &[(0.0, 8)]);
        assert!(matches!(d.end_turn(), Some(TurnEvent::EndOfTurn { .. })));
        assert!(!d.in_turn());
    }
}
