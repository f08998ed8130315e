//! The call core on simulated time: no runtime, no models, no sockets. A
//! test plays the driver — it feeds 20 ms μ-law frames and the results of
//! the work the core asked for, at the times it chooses, and reads the
//! effects.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::core::{
    Ask, AsrKind, CallCore, CoreConfig, DeskInput, DeskOp, Effect, Input, Job, Voice,
};
use super::{CallInput, CallOutput};
use crate::asr::Transcript;
use crate::desk::DeskConfig;
use crate::dialogue::{Action, CallMeta, Expect, Reply};
use crate::speech::TtsChunk;

mod language;

/// Loud frames are speech, quiet ones are not (Silero's job in the server).
struct Energy;

impl Voice for Energy {
    fn probability(&mut self, w: &[f32]) -> f32 {
        let rms = (w.iter().map(|x| x * x).sum::<f32>() / w.len() as f32).sqrt();
        if rms > 0.02 {
            0.95
        } else {
            0.02
        }
    }
}

fn frame(loud: bool, n: usize) -> Vec<u8> {
    let pcm: Vec<f32> = (0..160)
        .map(|i| {
            let t = (n * 160 + i) as f32 / 8000.0;
            if loud {
                0.3 * (std::f32::consts::TAU * 220.0 * t).sin()
            } else {
                0.0
            }
        })
        .collect();
    let mut ulaw = Vec::new();
    crate::media::mulaw::encode_from_f32(&pcm, &mut ulaw);
    ulaw
}

fn say(text: &str) -> Reply {
    Reply {
        say: text.into(),
        actions: Vec::new(),
        source: "test".into(),
    }
}

fn transcript(text: &str) -> Transcript {
    Transcript {
        text: text.into(),
        audio_ms: 0,
        queue_ms: 0,
        decode_ms: 40,
        engine: "test",
        language: None,
    }
}

/// The test's side of the call: its clock and everything the core did.
struct Sim {
    core: CallCore,
    t0: Instant,
    now: Instant,
    frames: usize,
    /// Every effect so far, with the simulated time (ms) it came out.
    log: Vec<(u64, Effect)>,
    seen: usize,
}

impl Sim {
    fn new(cfg: CoreConfig) -> Self {
        let t0 = Instant::now();
        let meta = CallMeta {
            call_id: "CA-sim".into(),
            channel: "sip".into(),
            ..Default::default()
        };
        let core = CallCore::new(cfg, meta, Box::new(Energy), t0, 1_700_000_000_000).unwrap();
        let mut s = Self {
            core,
            t0,
            now: t0,
            frames: 0,
            log: Vec::new(),
            seen: 0,
        };
        s.drain();
        s
    }

    /// A call whose greeting `text` is playing (synthesised, not yet heard).
    fn greeted(cfg: CoreConfig, text: &str, actions: Vec<Action>) -> Self {
        let mut s = Self::new(cfg);
        assert!(matches!(s.fresh()[..], [Effect::Ask(Ask::Greeting)]));
        let reply = Reply {
            actions,
            ..say(text)
        };
        s.input(Input::Answer {
            turn: None,
            reply,
            expect: Expect::Open,
            language: None,
        });
        s.synthesise(1, text);
        s
    }

    fn ms(&self) -> u64 {
        self.now.duration_since(self.t0).as_millis() as u64
    }

    fn drain(&mut self) {
        let at = self.ms();
        while let Some(e) = self.core.poll_effect() {
            self.log.push((at, e));
        }
    }

    /// Effects since the last look.
    fn fresh(&mut self) -> Vec<&Effect> {
        let from = self.seen;
        self.seen = self.log.len();
        self.log[from..].iter().map(|(_, e)| e).collect()
    }

    fn input(&mut self, i: Input) {
        self.core.handle(self.now, i);
        self.drain();
    }

    fn caller(&mut self, i: CallInput) {
        self.input(Input::Caller(i));
    }

    fn advance(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
        while let Some(t) = self.core.poll_timeout().filter(|t| *t <= self.now) {
            self.core.handle_timeout(t.max(self.now));
            self.drain();
        }
    }

    /// `ms` of the caller's audio, loud (speech) or quiet, in real time.
    fn audio(&mut self, loud: bool, ms: u64) {
        for _ in 0..ms / 20 {
            self.advance(20);
            let f = frame(loud, self.frames);
            self.frames += 1;
            self.caller(CallInput::Audio(f));
        }
    }

    /// The voice says `text` for reply `reply`: one 400 ms chunk per
    /// sentence, then done.
    fn synthesise(&mut self, reply: u32, text: &str) {
        let sentences = crate::speech::sentences::split(text);
        self.input(Input::Speaking {
            reply,
            sentences: sentences.clone(),
        });
        for (index, s) in sentences.iter().enumerate() {
            self.input(Input::Speech {
                reply,
                chunk: TtsChunk {
                    index,
                    text: s.clone(),
                    ulaw: Arc::new(vec![0xff; 3200]),
                    ready_ms: 0,
                    synth_ms: 0,
                    cached: false,
                    last: index + 1 == sentences.len(),
                },
            });
        }
        self.input(Input::SpeechDone { reply });
    }

    /// The transport played every mark it was given so far.
    fn play_marks(&mut self) {
        let marks: Vec<String> = self
            .log
            .iter()
            .filter_map(|(_, e)| match e {
                Effect::Out(CallOutput::Mark(m)) => Some(m.clone()),
                _ => None,
            })
            .collect();
        for m in marks {
            self.caller(CallInput::MarkPlayed(m));
        }
    }

    fn outputs(&self) -> Vec<(u64, &CallOutput)> {
        self.log
            .iter()
            .filter_map(|(t, e)| match e {
                Effect::Out(o) => Some((*t, o)),
                _ => None,
            })
            .collect()
    }

    fn first_out(&self, want: fn(&CallOutput) -> bool) -> Option<u64> {
        self.outputs()
            .into_iter()
            .find(|(_, o)| want(o))
            .map(|(t, _)| t)
    }

    fn jobs(&self) -> Vec<Job> {
        self.log
            .iter()
            .filter_map(|(_, e)| match e {
                Effect::Transcribe { job, .. } => Some(*job),
                _ => None,
            })
            .collect()
    }

    fn speaks(&self) -> Vec<(u32, String)> {
        self.log
            .iter()
            .filter_map(|(_, e)| match e {
                Effect::Speak { reply, text, .. } => Some((*reply, text.clone())),
                _ => None,
            })
            .collect()
    }

    fn asked_turns(&self) -> Vec<crate::dialogue::TurnInput> {
        self.log
            .iter()
            .filter_map(|(_, e)| match e {
                Effect::Ask(Ask::Turn(t)) => Some(t.clone()),
                _ => None,
            })
            .collect()
    }

    fn has(&self, want: impl Fn(&Effect) -> bool) -> bool {
        self.log.iter().any(|(_, e)| want(e))
    }
}

fn desk_cfg() -> CoreConfig {
    CoreConfig {
        closing_prompt: "We are closing now. Goodbye.".into(),
        desk: Some(DeskConfig {
            enabled: true,
            max_wait_s: 300,
            hold_reminder_s: 30,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn greeting_is_spoken_marked_and_timed() {
    let mut s = Sim::greeted(CoreConfig::default(), "Hello. How can I help?", Vec::new());
    assert_eq!(s.speaks(), vec![(1, "Hello. How can I help?".to_string())]);
    assert_eq!(s.core.record().greeting, "Hello. How can I help?");
    let marks: Vec<&CallOutput> = s.outputs().into_iter().map(|(_, o)| o).collect();
    // Audio then its mark for each sentence, then the reply's end.
    assert!(matches!(marks[0], CallOutput::Audio { reply: 1, .. }));
    assert!(matches!(marks[1], CallOutput::Mark(m) if m == "r1-s0"));
    assert!(matches!(marks.last(), Some(CallOutput::Mark(m)) if m == "r1-end"));
    s.advance(35);
    s.caller(CallInput::ReplyStarted {
        reply: 1,
        at: s.now,
    });
    assert_eq!(s.core.record().greeting_first_frame_ms, Some(35));
    assert!(
        s.core.poll_timeout().is_none(),
        "nothing is timed while the bot talks"
    );
    s.play_marks();
    assert!(
        s.core.playing.is_none(),
        "the greeting was heard to the end"
    );
    assert!(!s.core.is_done());
}

#[test]
fn a_turn_is_heard_understood_and_answered_with_its_latency() {
    let mut s = Sim::greeted(CoreConfig::default(), "Hello.", Vec::new());
    s.play_marks();
    s.audio(false, 200);
    s.audio(true, 800);
    let last_voice_ms = s.ms();
    s.audio(false, 300);
    // At the pause: a speculative transcript and Smart Turn, on the same audio.
    let jobs = s.jobs();
    let spec = *jobs.last().expect("a speculative transcript");
    assert!(matches!(spec.kind, AsrKind::Speculative { .. }), "{jobs:?}");
    let judged = s.log.iter().find_map(|(_, e)| match e {
        Effect::JudgeTurn { turn, pause, audio } => Some((*turn, *pause, audio.len())),
        _ => None,
    });
    let (turn, pause, samples) = judged.expect("Smart Turn asked");
    assert_eq!(turn, 1);
    // The turn's audio: pre-roll + 800 ms of speech + a 100 ms tail.
    assert!((15_000..=19_000).contains(&samples), "{samples} samples");
    s.input(Input::SmartTurn {
        turn,
        pause,
        prob: 0.9,
    });
    assert!(s.asked_turns().is_empty(), "the transcript is not back yet");
    s.advance(40);
    s.input(Input::Transcript {
        job: spec,
        result: Ok(transcript("What are your opening hours?")),
    });
    let asked = s.asked_turns();
    assert_eq!(asked.len(), 1);
    assert_eq!(
        asked[0].transcript.as_deref(),
        Some("What are your opening hours?")
    );
    assert!(
        (750..=850).contains(&asked[0].speech_ms),
        "{}",
        asked[0].speech_ms
    );
    s.advance(15);
    s.input(Input::Answer {
        turn: Some(1),
        reply: say("We are open nine to five."),
        expect: Expect::Open,
        language: None,
    });
    assert_eq!(s.speaks().last().unwrap().0, 2);
    s.advance(60);
    s.synthesise(2, "We are open nine to five.");
    s.advance(20);
    s.caller(CallInput::ReplyStarted {
        reply: 2,
        at: s.now,
    });
    let t = &s.core.record().turns[0].timings;
    assert_eq!(t.end_reason, "smart_turn");
    assert!(t.speculative_hit);
    assert_eq!(t.dialogue_ms, Some(15));
    assert_eq!(t.tts_first_audio_ms, Some(60));
    assert_eq!(t.first_frame_ms, Some(20));
    // Voice to voice as the core measures it: the caller's last voiced
    // window in → the first frame of the answer out.
    let v2v = t.voice_to_voice_ms.unwrap();
    let expected = s.ms() - last_voice_ms;
    assert!(v2v.abs_diff(expected) <= 64, "{v2v} vs {expected}");
    assert_eq!(
        s.core.record().turns[0].caller_text,
        "What are your opening hours?"
    );
}

#[test]
fn barge_in_pauses_at_once_then_cancels_once_speech_is_confirmed() {
    let mut s = Sim::greeted(
        CoreConfig::default(),
        "Welcome to the bank. Please tell me what you need.",
        vec![Action::Hangup],
    );
    s.caller(CallInput::ReplyStarted {
        reply: 1,
        at: s.now,
    });
    s.caller(CallInput::MarkPlayed("r1-s0".into()));
    let start = s.ms();
    s.audio(true, 500);
    let paused = s
        .first_out(|o| matches!(o, CallOutput::Pause))
        .expect("paused");
    let cleared = s
        .first_out(|o| matches!(o, CallOutput::Clear))
        .expect("cleared");
    // Paused after two voiced windows; cancelled after 300 ms of voice.
    assert!(paused - start <= 120, "paused {} ms in", paused - start);
    assert!(
        (300..=420).contains(&(cleared - start)),
        "cleared {} ms in",
        cleared - start
    );
    assert!(s.has(|e| matches!(e, Effect::CancelSpeech(1))));
    let heard = s.log.iter().find_map(|(_, e)| match e {
        Effect::Ask(Ask::Interrupted(i)) => Some(i.clone()),
        _ => None,
    });
    let heard = heard.expect("the dialogue hears of the interruption");
    assert_eq!(heard.heard_text, "Welcome to the bank.");
    assert_eq!(s.core.record().barge_ins, 1);
    // The interrupted reply's hang-up is dropped, and its late marks do nothing.
    s.play_marks();
    assert!(!s.has(|e| matches!(e, Effect::Out(CallOutput::Hangup))));
    assert!(!s.core.is_done());
}

#[test]
fn a_cough_pauses_the_bot_and_playback_resumes() {
    let mut s = Sim::greeted(
        CoreConfig::default(),
        "Your balance is ten pounds.",
        Vec::new(),
    );
    s.audio(true, 80);
    assert!(s.first_out(|o| matches!(o, CallOutput::Pause)).is_some());
    s.audio(false, 400);
    assert!(s.first_out(|o| matches!(o, CallOutput::Resume)).is_some());
    assert!(s.first_out(|o| matches!(o, CallOutput::Clear)).is_none());
    assert_eq!(s.core.record().barge_ins, 0);
    assert!(s.asked_turns().is_empty());
}

#[test]
fn a_backchannel_over_the_bot_is_not_a_turn() {
    let mut s = Sim::greeted(
        CoreConfig::default(),
        "Your balance is ten pounds.",
        Vec::new(),
    );
    // 200 ms of "mm-hm": longer than noise, shorter than a barge-in.
    s.audio(true, 200);
    s.audio(false, 1200);
    assert!(s.first_out(|o| matches!(o, CallOutput::Resume)).is_some());
    assert!(s.first_out(|o| matches!(o, CallOutput::Clear)).is_none());
    assert!(s.asked_turns().is_empty());
    let spec = s
        .jobs()
        .into_iter()
        .find(|j| matches!(j.kind, AsrKind::Speculative { .. }));
    let spec = spec.expect("a transcript was started at the pause");
    assert!(s.has(|e| matches!(e, Effect::CancelTranscribe(id) if *id == spec.id)));
}

/// A turn Smart Turn ended at a pause, its transcript not back yet when
/// the caller goes on: `(sim, turn 1's speculative job)`.
fn ended_at_a_pause_then_went_on(went_on_ms: u64) -> (Sim, Job) {
    let mut s = Sim::greeted(CoreConfig::default(), "Hello.", Vec::new());
    s.play_marks();
    s.audio(false, 200);
    s.audio(true, 800);
    s.audio(false, 300);
    let spec = *s.jobs().last().expect("a speculative transcript");
    s.input(Input::SmartTurn {
        turn: 1,
        pause: match spec.kind {
            AsrKind::Speculative { last_voice } => last_voice,
            _ => unreachable!(),
        },
        prob: 0.9,
    });
    assert!(s.asked_turns().is_empty(), "ended, the transcript not back");
    s.audio(true, went_on_ms);
    (s, spec)
}

#[test]
fn words_after_an_early_end_are_answered_with_the_turn_they_go_on_from() {
    let (mut s, spec) = ended_at_a_pause_then_went_on(500);
    s.input(Input::Transcript {
        job: spec,
        result: Ok(transcript("I want to speak to an agent.")),
    });
    assert!(
        s.asked_turns().is_empty(),
        "not answered alone while the caller goes on"
    );
    s.audio(false, 300);
    let spec2 = *s.jobs().last().unwrap();
    assert_eq!(spec2.turn, 2);
    let AsrKind::Speculative { last_voice } = spec2.kind else {
        panic!("{spec2:?}")
    };
    s.input(Input::SmartTurn {
        turn: 2,
        pause: last_voice,
        prob: 0.9,
    });
    // Its audio starts where the first part's did: one decode hears it all.
    let sizes: Vec<usize> = s
        .log
        .iter()
        .filter_map(|(_, e)| match e {
            Effect::Transcribe { job, audio, .. } if job.id == spec.id || job.id == spec2.id => {
                Some(audio.len())
            }
            _ => None,
        })
        .collect();
    assert_eq!(sizes.len(), 2);
    assert!(
        sizes[1] >= sizes[0] + 700 * 16,
        "the first part's {} samples, the whole {}",
        sizes[0],
        sizes[1]
    );
    s.input(Input::Transcript {
        job: spec2,
        result: Ok(transcript("I want to speak to an agent please.")),
    });
    let asked = s.asked_turns();
    assert_eq!(asked.len(), 1, "one answer for the whole utterance");
    assert_eq!(
        asked[0].transcript.as_deref(),
        Some("I want to speak to an agent please.")
    );
    // From the first word to the last, the pause included.
    assert!(
        (1500..=1700).contains(&asked[0].speech_ms),
        "{}",
        asked[0].speech_ms
    );
    s.input(Input::Answer {
        turn: Some(2),
        reply: say("Putting you through."),
        expect: Expect::Open,
        language: None,
    });
    let rec = &s.core.record().turns;
    assert_eq!(rec.len(), 1);
    assert_eq!(rec[0].caller_text, "I want to speak to an agent please.");
    assert!(rec[0].timings.cut_early);
}

#[test]
fn words_carried_into_a_noise_are_still_answered() {
    // 60 ms of noise after the pause: enough to start a turn, too little
    // to be one (it is discarded).
    let (mut s, spec) = ended_at_a_pause_then_went_on(60);
    s.input(Input::Transcript {
        job: spec,
        result: Ok(transcript("Opening hours.")),
    });
    assert!(s.asked_turns().is_empty());
    s.audio(false, 600);
    let asked = s.asked_turns();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].transcript.as_deref(), Some("Opening hours."));
}

#[test]
fn without_smart_turn_the_silence_fallback_ends_the_turn() {
    let mut s = Sim::greeted(CoreConfig::default(), "Hello.", Vec::new());
    s.play_marks();
    s.audio(true, 600);
    s.audio(false, 700);
    let spec = *s.jobs().last().unwrap();
    // A transcript that does not close a sentence does not end the turn early.
    s.input(Input::Transcript {
        job: spec,
        result: Ok(transcript("I want to")),
    });
    assert!(s.asked_turns().is_empty());
    s.audio(false, 400);
    let asked = s.asked_turns();
    assert_eq!(asked.len(), 1, "ended by the 1 s fallback");
    assert_eq!(asked[0].transcript.as_deref(), Some("I want to"));
    s.input(Input::Answer {
        turn: Some(1),
        reply: say("Go on."),
        expect: Expect::Open,
        language: None,
    });
    assert_eq!(s.core.record().turns[0].timings.end_reason, "silence");
}

#[test]
fn a_failed_speculative_transcript_is_decoded_again() {
    let mut s = Sim::greeted(CoreConfig::default(), "Hello.", Vec::new());
    s.play_marks();
    s.audio(true, 600);
    s.audio(false, 1100);
    let spec = *s.jobs().last().unwrap();
    s.input(Input::Transcript {
        job: spec,
        result: Err(crate::asr::AsrError::Busy),
    });
    let fin = *s.jobs().last().unwrap();
    assert_eq!(fin.kind, AsrKind::Final);
    s.input(Input::Transcript {
        job: fin,
        result: Ok(transcript("Opening hours please.")),
    });
    let asked = s.asked_turns();
    assert_eq!(asked.len(), 1);
    assert_eq!(
        asked[0].transcript.as_deref(),
        Some("Opening hours please.")
    );
    // The same audio, from the turn's pre-roll to its tail.
    let sizes: Vec<usize> = s
        .log
        .iter()
        .filter_map(|(_, e)| match e {
            Effect::Transcribe { audio, .. } => Some(audio.len()),
            _ => None,
        })
        .collect();
    assert_eq!(sizes[sizes.len() - 1], sizes[sizes.len() - 2]);
}

#[test]
fn keypad_answers_gather_until_the_gap_and_keep_no_digits() {
    let mut s = Sim::greeted(CoreConfig::default(), "Hello.", Vec::new());
    s.play_marks();
    // A menu key is a turn of its own.
    s.caller(CallInput::Dtmf('2'));
    assert_eq!(s.asked_turns()[0].dtmf.as_deref(), Some("2"));
    s.input(Input::Answer {
        turn: Some(1),
        reply: say("Please key in your PIN."),
        expect: Expect::Digits { min: 4, max: 4 },
        language: None,
    });
    s.synthesise(2, "Please key in your PIN.");
    s.play_marks();
    s.caller(CallInput::Dtmf('1'));
    s.advance(500);
    s.caller(CallInput::Dtmf('9'));
    assert_eq!(s.asked_turns().len(), 1, "still gathering");
    let due = s.core.poll_timeout().expect("the key gap is timed");
    assert_eq!(due.duration_since(s.now), Duration::from_secs(3));
    s.advance(3000);
    let asked = s.asked_turns();
    assert_eq!(asked.len(), 2);
    assert_eq!(asked[1].dtmf.as_deref(), Some("19"));
    s.input(Input::Answer {
        turn: Some(2),
        reply: say("Thanks."),
        expect: Expect::Digits { min: 4, max: 4 },
        language: None,
    });
    assert_eq!(s.core.record().turns[1].dtmf.as_deref(), Some("**"));
    // Four keys are the whole answer at once.
    for k in ['4', '3', '2', '1'] {
        s.caller(CallInput::Dtmf(k));
    }
    assert_eq!(s.asked_turns()[2].dtmf.as_deref(), Some("4321"));
    // A `#` after them ends nothing: no empty turn of its own, also when
    // the answer has already moved the dialogue past digits (the flow is
    // done, and a `#` alone would be a turn whose fallback cuts off the
    // reply the keys earned).
    s.input(Input::Answer {
        turn: Some(3),
        reply: say("Your balance is 20 dollars."),
        expect: Expect::Open,
        language: None,
    });
    s.advance(150);
    s.caller(CallInput::Dtmf('#'));
    assert_eq!(s.asked_turns().len(), 3);
    // Later, with nothing gathered, a key is a turn again.
    s.advance(5000);
    s.caller(CallInput::Dtmf('#'));
    assert_eq!(s.asked_turns().len(), 4);
    assert_eq!(s.asked_turns()[3].dtmf.as_deref(), Some("#"));
}

#[test]
fn a_hang_up_waits_for_the_goodbye_to_be_heard() {
    let mut s = Sim::greeted(CoreConfig::default(), "Goodbye.", vec![Action::Hangup]);
    assert!(!s.core.is_done());
    assert!(s.first_out(|o| matches!(o, CallOutput::Hangup)).is_none());
    s.play_marks();
    assert!(s.first_out(|o| matches!(o, CallOutput::Hangup)).is_some());
    assert!(s.core.is_done());
    assert_eq!(s.core.record().outcome, "bot_hung_up");
}

#[test]
fn slow_replies_wait_their_delay_on_the_clock() {
    let cfg = CoreConfig {
        slow_reply_ms: 500,
        ..Default::default()
    };
    let mut s = Sim::greeted(cfg, "Hello.", Vec::new());
    s.play_marks();
    s.caller(CallInput::Dtmf('1'));
    s.input(Input::Answer {
        turn: Some(1),
        reply: say("One moment."),
        expect: Expect::Open,
        language: None,
    });
    assert_eq!(s.speaks().len(), 1);
    s.advance(499);
    assert_eq!(s.speaks().len(), 1);
    s.advance(1);
    assert_eq!(s.speaks().len(), 2);
}

#[test]
fn closing_says_goodbye_ignores_the_caller_and_hangs_up() {
    let mut s = Sim::greeted(desk_cfg(), "Hello.", Vec::new());
    s.play_marks();
    s.input(Input::Closing);
    let (reply, text) = s.speaks().last().cloned().unwrap();
    assert_eq!(text, "We are closing now. Goodbye.");
    s.audio(true, 600);
    assert!(s.first_out(|o| matches!(o, CallOutput::Pause)).is_none());
    s.synthesise(reply, &text);
    s.play_marks();
    assert!(s.core.is_done());
    assert_eq!(s.core.record().outcome, "node_closed");
}

#[test]
fn a_failed_transfer_keeps_the_caller_with_the_bot() {
    let mut s = Sim::greeted(CoreConfig::default(), "Hello.", Vec::new());
    s.play_marks();
    s.caller(CallInput::TransferFailed { status: 486 });
    assert!(s.has(|e| matches!(e, Effect::Ask(Ask::TransferFailed(486)))));
    assert!(s
        .speaks()
        .last()
        .unwrap()
        .1
        .contains("couldn't reach an agent"));
    assert_eq!(s.core.record().transfer_failures, 1);
}

/// A caller whose greeting ends in a transfer to the desk's `support`
/// queue, which takes them.
fn on_hold() -> Sim {
    let transfer = Action::Transfer {
        target: "desk:support".into(),
        reason: "asked for a person".into(),
        priority: 50,
    };
    let mut s = Sim::greeted(desk_cfg(), "Let me get someone.", vec![transfer]);
    s.play_marks();
    let info = s.log.iter().find_map(|(_, e)| match e {
        Effect::Desk(DeskOp::Enqueue(i)) => Some(i.clone()),
        _ => None,
    });
    let info = info.expect("the call is offered to the desk");
    assert_eq!((info.queue.as_str(), info.priority), ("support", 50));
    s.input(Input::Desk(DeskInput::Enqueued(Ok(()))));
    s
}

fn hold_marks(s: &Sim) -> Vec<String> {
    s.outputs()
        .into_iter()
        .filter_map(|(_, o)| match o {
            CallOutput::Mark(m) if m.starts_with("hold-") => Some(m.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn on_hold_music_keeps_coming_reminders_tell_the_place_and_an_agent_takes_over() {
    let mut s = on_hold();
    assert_eq!(hold_marks(&s), ["hold-1", "hold-2"]);
    s.caller(CallInput::MarkPlayed("hold-1".into()));
    assert_eq!(hold_marks(&s), ["hold-1", "hold-2", "hold-3"]);
    // The caller's voice and keys go nowhere while on hold.
    s.audio(true, 400);
    assert!(s.jobs().is_empty() && s.first_out(|o| matches!(o, CallOutput::Pause)).is_none());
    // 30 s on: thanked, and told their place.
    s.advance(30_000);
    assert!(s.has(|e| matches!(e, Effect::Desk(DeskOp::Position))));
    s.input(Input::Desk(DeskInput::Place(Some(2))));
    let (reminder, text) = s.speaks().last().cloned().unwrap();
    assert!(text.contains("number 2 in the queue"), "{text}");
    // An agent takes the call mid-reminder: it stops with the music.
    s.advance(1_000);
    let asked = s.now;
    s.input(Input::Desk(DeskInput::Take {
        agent: "alice".into(),
        asked,
    }));
    assert!(s.has(|e| matches!(e, Effect::CancelSpeech(r) if *r == reminder)));
    assert_eq!(s.core.record().outcome, "with_agent:alice");
    let waited = s.core.record().human.as_ref().unwrap().wait_ms;
    assert!((31_000..=31_500).contains(&waited), "{waited}");
    // Nothing reaches the agent before their leg carries audio.
    s.audio(true, 100);
    assert!(!s.has(|e| matches!(e, Effect::ToAgent(_))));
    s.input(Input::Desk(DeskInput::AgentFrame(Some(vec![0x55; 160]))));
    let took = s.core.record().human.as_ref().unwrap().take_to_audio_ms;
    assert_eq!(took, Some(100));
    assert!(s
        .outputs()
        .iter()
        .any(|(_, o)| matches!(o, CallOutput::Audio { ulaw, .. } if ulaw[0] == 0x55)));
    s.audio(true, 100);
    assert!(s.has(|e| matches!(e, Effect::ToAgent(f) if f.len() == 160)));
    // They talk for ten seconds; the agent hangs up.
    s.advance(10_000);
    s.input(Input::Desk(DeskInput::AgentFrame(None)));
    assert!(s.has(|e| matches!(e, Effect::Desk(DeskOp::Leave("agent_hung_up")))));
    let outcome = s.log.iter().find_map(|(_, e)| match e {
        Effect::Ask(Ask::Human(o)) => Some(o.clone()),
        _ => None,
    });
    let outcome = outcome.expect("the dialogue hears how the desk went");
    assert_eq!(outcome.agent.as_deref(), Some("alice"));
    assert_eq!(outcome.talk_ms, Some(10_100));
    assert!(s.core.is_done());
    s.core.finish(s.now);
    assert_eq!(s.core.record().outcome, "handled_by_agent");
}

#[test]
fn nobody_taking_the_call_in_time_returns_it_to_the_bot() {
    let mut s = on_hold();
    s.advance(299_000);
    assert!(!s.has(|e| matches!(e, Effect::Desk(DeskOp::Leave(_)))));
    s.advance(1_000);
    assert!(s.has(|e| matches!(e, Effect::Desk(DeskOp::Leave("timed_out")))));
    assert!(s.has(|e| matches!(e, Effect::Ask(Ask::TransferFailed(408)))));
    assert!(s
        .speaks()
        .last()
        .unwrap()
        .1
        .contains("couldn't reach an agent"));
    assert_eq!(s.core.record().human.as_ref().unwrap().wait_ms, 300_000);
    assert_eq!(s.core.record().outcome, "in_progress");
}

#[test]
fn a_refused_hold_and_a_dead_agent_leg_are_recovered() {
    // The desk cannot take the call: the bot keeps it.
    let transfer = Action::Transfer {
        target: "desk:support".into(),
        reason: "".into(),
        priority: 0,
    };
    let mut s = Sim::greeted(desk_cfg(), "Let me get someone.", vec![transfer]);
    s.play_marks();
    s.input(Input::Desk(DeskInput::Enqueued(
        Err("nobody online".into()),
    )));
    assert!(s.has(|e| matches!(e, Effect::Ask(Ask::TransferFailed(503)))));
    assert!(hold_marks(&s).is_empty());

    // An agent's leg that never carries audio puts the caller back on hold.
    let mut s = on_hold();
    s.input(Input::Desk(DeskInput::Take {
        agent: "bob".into(),
        asked: s.now,
    }));
    s.advance(5_000);
    s.input(Input::Desk(DeskInput::AgentFrame(None)));
    assert!(s.has(|e| matches!(e, Effect::Desk(DeskOp::EndLeg))));
    let enqueued = s
        .log
        .iter()
        .filter(|(_, e)| matches!(e, Effect::Desk(DeskOp::Enqueue(_))))
        .count();
    assert_eq!(enqueued, 2);
    s.input(Input::Desk(DeskInput::Enqueued(Ok(()))));
    assert!(!s.core.is_done());
    // The caller gives up: abandoned on hold, after all the time waited
    // (the silence while the agent's leg failed included).
    s.advance(2_000);
    s.core.finish(s.now);
    let r = s.core.record();
    assert_eq!(r.outcome, "abandoned_on_hold");
    assert_eq!(r.human.as_ref().unwrap().wait_ms, 7_000);
}

#[test]
fn the_agent_returns_the_caller_to_the_bot() {
    let mut s = on_hold();
    s.input(Input::Desk(DeskInput::Take {
        agent: "alice".into(),
        asked: s.now,
    }));
    s.input(Input::Desk(DeskInput::AgentFrame(Some(vec![0xff; 160]))));
    s.advance(4_000);
    s.input(Input::Desk(DeskInput::Return));
    assert!(s.has(|e| matches!(e, Effect::Desk(DeskOp::Leave("returned")))));
    assert!(s
        .speaks()
        .last()
        .unwrap()
        .1
        .contains("back with the virtual assistant"));
    let h = s.core.record().human.clone().unwrap();
    assert!(h.returned);
    assert_eq!(h.talk_ms, Some(4_000));
    // The bot listens again.
    s.audio(true, 500);
    assert!(s.first_out(|o| matches!(o, CallOutput::Pause)).is_some());
}
