//! The caller's language on simulated time: a first turn understood in
//! the main language, one identified and decoded again in another, and a
//! call in another language throughout.

use super::*;

/// The spoken-language field of every transcription asked for so far.
fn spoken_of(s: &Sim) -> Vec<crate::asr::Spoken> {
    s.log
        .iter()
        .filter_map(|(_, e)| match e {
            Effect::Transcribe { spoken, job, .. } if job.kind != AsrKind::Partial => {
                Some(spoken.clone())
            }
            _ => None,
        })
        .collect()
}

fn two_languages(identify_ms: u64) -> CoreConfig {
    CoreConfig {
        languages: vec![crate::nlu::lang::Lang::En, crate::nlu::lang::Lang::Es],
        identify_ms,
        ..Default::default()
    }
}

/// Jobs of one kind, in order.
fn jobs_of(s: &Sim, want: fn(&AsrKind) -> bool) -> Vec<Job> {
    s.jobs().into_iter().filter(|j| want(&j.kind)).collect()
}

fn identified(lang: crate::nlu::lang::Lang) -> Result<Transcript, crate::asr::AsrError> {
    Ok(Transcript {
        language: Some(lang),
        ..transcript("")
    })
}

/// A first turn of 800 ms after the greeting, ended by Smart Turn at its
/// pause; its speculative job is returned, not answered.
fn first_turn(s: &mut Sim) -> Job {
    s.play_marks();
    s.audio(false, 200);
    s.audio(true, 800);
    s.audio(false, 300);
    end_at_pause(s)
}

/// Smart Turn ends the turn at its latest pause; its speculative job.
fn end_at_pause(s: &mut Sim) -> Job {
    let spec = *jobs_of(s, |k| matches!(k, AsrKind::Speculative { .. }))
        .last()
        .expect("a speculative transcript");
    let AsrKind::Speculative { last_voice } = spec.kind else {
        unreachable!()
    };
    s.input(Input::SmartTurn {
        turn: spec.turn,
        pause: last_voice,
        prob: 0.9,
    });
    spec
}

fn understands_asked(s: &Sim) -> Vec<String> {
    s.log
        .iter()
        .filter_map(|(_, e)| match e {
            Effect::Ask(Ask::Understands { text, .. }) => Some(text.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn an_english_first_turn_understood_is_answered_without_identifying_it() {
    use crate::asr::Spoken;
    let mut s = Sim::greeted(two_languages(3000), "Hello.", Vec::new());
    let spec = first_turn(&mut s);
    // The main lane hears the turn.
    assert_eq!(spoken_of(&s)[0], Spoken::Main);
    s.input(Input::Transcript {
        job: spec,
        result: Ok(transcript("What is my balance?")),
    });
    assert!(
        s.asked_turns().is_empty(),
        "held while the language is unknown"
    );
    assert_eq!(understands_asked(&s), vec!["What is my balance?"]);
    s.input(Input::Understood { turn: 1, yes: true });
    let asked = s.asked_turns();
    assert_eq!(asked.len(), 1, "answered without waiting");
    assert_eq!(asked[0].transcript.as_deref(), Some("What is my balance?"));
    assert_eq!(
        s.core.record().language.as_deref(),
        Some("en"),
        "plain English settles the call"
    );
    assert!(
        jobs_of(&s, |k| *k == AsrKind::Identify).is_empty(),
        "nothing identified: the voice has the CPU to itself"
    );
    s.input(Input::Answer {
        turn: Some(1),
        reply: say("Your balance is ten dollars."),
        expect: Expect::Open,
        language: None,
    });
    s.synthesise(2, "Your balance is ten dollars.");
    s.play_marks();
    let before = s.jobs().len();
    s.audio(false, 200);
    s.audio(true, 800);
    s.audio(false, 300);
    assert!(
        s.jobs()[before..]
            .iter()
            .all(|j| j.kind != AsrKind::Identify),
        "never identified later"
    );
    assert_eq!(understands_asked(&s).len(), 1, "nor asked about");
}

#[test]
fn a_first_turn_not_understood_waits_for_its_language_and_is_decoded_again_in_it() {
    use crate::asr::Spoken;
    use crate::nlu::lang::Lang;
    let mut s = Sim::greeted(two_languages(3000), "Hello.", Vec::new());
    let spec = first_turn(&mut s);
    // Moonshine's English for a Spanish request.
    s.input(Input::Transcript {
        job: spec,
        result: Ok(transcript("Key at a save or me sold up.")),
    });
    assert!(jobs_of(&s, |k| *k == AsrKind::Identify).is_empty());
    s.input(Input::Understood {
        turn: 1,
        yes: false,
    });
    let ident = jobs_of(&s, |k| *k == AsrKind::Identify);
    assert_eq!(ident.len(), 1, "not understood: identified");
    assert!(s.has(
        |e| matches!(e, Effect::Transcribe { spoken: Spoken::Identify(l), .. }
        if *l == vec![Lang::En, Lang::Es])
    ));
    assert!(s.asked_turns().is_empty(), "waits for identification");
    s.input(Input::Transcript {
        job: ident[0],
        result: identified(Lang::Es),
    });
    assert_eq!(s.core.record().language.as_deref(), Some("es"));
    assert!(s.asked_turns().is_empty(), "the English words are not used");
    let again = *s.jobs().last().unwrap();
    assert_eq!(again.kind, AsrKind::Final);
    assert_eq!(spoken_of(&s).last(), Some(&Spoken::In(Lang::Es)));
    s.input(Input::Transcript {
        job: again,
        result: Ok(Transcript {
            language: Some(Lang::Es),
            ..transcript("Quiero saber mi saldo.")
        }),
    });
    let asked = s.asked_turns();
    assert_eq!(asked.len(), 1);
    assert_eq!(
        asked[0].transcript.as_deref(),
        Some("Quiero saber mi saldo.")
    );
    assert_eq!(asked[0].language.as_deref(), Some("es"));
    s.input(Input::Answer {
        turn: Some(1),
        reply: say("Claro."),
        expect: Expect::Open,
        language: Some(Lang::Es),
    });
    assert!(
        s.has(|e| matches!(e, Effect::Speak { lang: Lang::Es, .. })),
        "the reply is spoken in Spanish"
    );
    s.synthesise(2, "Claro.");
    s.play_marks();
    let before = s.jobs().len();
    s.audio(false, 200);
    s.audio(true, 800);
    s.audio(false, 300);
    let later: Vec<Job> = s.jobs()[before..].to_vec();
    assert!(
        later.iter().all(|j| j.kind != AsrKind::Partial),
        "no partials from the main lane in another language: {later:?}"
    );
    assert_eq!(spoken_of(&s).last(), Some(&Spoken::In(Lang::Es)));
}

#[test]
fn a_long_turn_is_identified_while_the_caller_speaks() {
    use crate::asr::Spoken;
    use crate::nlu::lang::Lang;
    let mut s = Sim::greeted(two_languages(1000), "Hello.", Vec::new());
    s.play_marks();
    s.audio(false, 200);
    s.audio(true, 1400);
    let ident = jobs_of(&s, |k| *k == AsrKind::Identify);
    assert_eq!(ident.len(), 1, "asked once the turn had a second of audio");
    s.input(Input::Transcript {
        job: ident[0],
        result: identified(Lang::Es),
    });
    s.audio(true, 600);
    s.audio(false, 300);
    // The pause's transcript is already in the caller's language.
    let spec = *jobs_of(&s, |k| matches!(k, AsrKind::Speculative { .. }))
        .last()
        .unwrap();
    assert_eq!(spoken_of(&s).last(), Some(&Spoken::In(Lang::Es)));
    assert_eq!(jobs_of(&s, |k| *k == AsrKind::Identify).len(), 1);
    let AsrKind::Speculative { last_voice } = spec.kind else {
        unreachable!()
    };
    s.input(Input::SmartTurn {
        turn: 1,
        pause: last_voice,
        prob: 0.9,
    });
    s.input(Input::Transcript {
        job: spec,
        result: Ok(Transcript {
            language: Some(Lang::Es),
            ..transcript("Quiero saber mi saldo, por favor.")
        }),
    });
    assert!(understands_asked(&s).is_empty(), "nothing to wait for");
    assert_eq!(s.asked_turns()[0].language.as_deref(), Some("es"));
}

/// The speculative transcript at the turn's latest pause comes back with
/// `text`, which the dialogue does not understand.
fn pause_words(s: &mut Sim, text: &str) {
    let spec = *jobs_of(s, |k| matches!(k, AsrKind::Speculative { .. }))
        .last()
        .unwrap();
    s.input(Input::Transcript {
        job: spec,
        result: Ok(transcript(text)),
    });
    assert_eq!(understands_asked(s).last().map(String::as_str), Some(text));
    s.input(Input::Understood {
        turn: spec.turn,
        yes: false,
    });
}

#[test]
fn english_found_from_a_pause_the_caller_went_on_from_settles_nothing() {
    use crate::nlu::lang::Lang;
    let mut s = Sim::greeted(two_languages(3000), "Hello.", Vec::new());
    s.play_marks();
    s.audio(false, 200);
    // "Hola," … a pause … and the rest.
    s.audio(true, 400);
    s.audio(false, 300);
    pause_words(&mut s, "Oh la.");
    let ident = jobs_of(&s, |k| *k == AsrKind::Identify);
    assert_eq!(
        ident.len(),
        1,
        "identified from the pause it was not understood at"
    );
    s.audio(true, 900);
    s.input(Input::Transcript {
        job: ident[0],
        result: identified(Lang::En),
    });
    assert_eq!(
        s.core.record().language,
        None,
        "half a second of a turn that went on does not settle it"
    );
    s.audio(false, 300);
    pause_words(&mut s, "Oh la, key at a save or.");
    let ident = jobs_of(&s, |k| *k == AsrKind::Identify);
    assert_eq!(ident.len(), 2, "asked again at the next pause");
    s.input(Input::Transcript {
        job: ident[1],
        result: identified(Lang::Es),
    });
    assert_eq!(s.core.record().language.as_deref(), Some("es"));
}

#[test]
fn a_failed_identification_lets_the_turn_through_in_the_main_language() {
    let mut s = Sim::greeted(two_languages(3000), "Hello.", Vec::new());
    let spec = first_turn(&mut s);
    s.input(Input::Transcript {
        job: spec,
        result: Ok(transcript("Mm, well.")),
    });
    s.input(Input::Understood {
        turn: 1,
        yes: false,
    });
    let ident = jobs_of(&s, |k| *k == AsrKind::Identify);
    assert_eq!(ident.len(), 1);
    assert!(s.asked_turns().is_empty());
    s.input(Input::Transcript {
        job: ident[0],
        result: Err(crate::asr::AsrError::Busy),
    });
    assert_eq!(s.asked_turns().len(), 1, "the main lane's words are used");
    assert_eq!(s.core.record().language, None, "the next turn tries again");
}

#[test]
fn a_language_chosen_in_the_dialogue_needs_no_identification() {
    use crate::asr::Spoken;
    use crate::nlu::lang::Lang;
    let cfg = CoreConfig {
        languages: vec![Lang::En, Lang::Es],
        ..Default::default()
    };
    let mut s = Sim::new(cfg);
    // A known caller greeted in Spanish: the greeting's answer says so.
    s.input(Input::Answer {
        turn: None,
        reply: say("Hola Ana."),
        expect: Expect::Open,
        language: Some(Lang::Es),
    });
    assert!(s.has(|e| matches!(e, Effect::Speak { lang: Lang::Es, .. })));
    s.synthesise(1, "Hola Ana.");
    s.play_marks();
    s.audio(false, 200);
    s.audio(true, 800);
    s.audio(false, 300);
    assert_eq!(spoken_of(&s), vec![Spoken::In(Lang::Es)]);
    // What the call says of its own is said in the caller's language too.
    s.caller(CallInput::TransferFailed { status: 503 });
    assert!(
        s.has(|e| matches!(e, Effect::Speak { lang: Lang::Es, text, .. }
        if text.starts_with("Lo siento, ahora mismo no he podido pasarle")))
    );
    // One language only: never identified.
    let mut one = Sim::greeted(CoreConfig::default(), "Hello.", Vec::new());
    one.play_marks();
    one.audio(false, 200);
    one.audio(true, 800);
    one.audio(false, 300);
    assert_eq!(spoken_of(&one), vec![Spoken::Main]);
}

#[test]
fn a_caller_in_another_language_is_told_the_line_closes_in_it() {
    use crate::nlu::lang::Lang;
    let cfg = CoreConfig {
        languages: vec![Lang::En, Lang::Es],
        ..desk_cfg()
    };
    let mut s = Sim::new(cfg);
    s.input(Input::Answer {
        turn: None,
        reply: say("Hola."),
        expect: Expect::Open,
        language: Some(Lang::Es),
    });
    s.synthesise(1, "Hola.");
    s.play_marks();
    s.input(Input::Closing);
    assert!(
        s.has(|e| matches!(e, Effect::Speak { lang: Lang::Es, text, .. }
        if text.starts_with("Lo siento, esta línea tiene que cerrarse")))
    );
}

/// A first turn identified with no language sure enough (a lone "Hola."),
/// then the caller's request.
#[test]
fn an_unsure_identification_settles_nothing_until_a_sure_one_or_the_limit() {
    use crate::nlu::lang::Lang;
    let unsure = || {
        Ok(Transcript {
            language: None,
            ..transcript("")
        })
    };
    let mut s = Sim::greeted(two_languages(3000), "Hello.", Vec::new());
    let spec = first_turn(&mut s);
    // Moonshine's English for "Hola.".
    s.input(Input::Transcript {
        job: spec,
        result: Ok(transcript("If you don't know how to do it.")),
    });
    s.input(Input::Understood {
        turn: 1,
        yes: false,
    });
    let ident = jobs_of(&s, |k| *k == AsrKind::Identify);
    s.input(Input::Transcript {
        job: ident[0],
        result: unsure(),
    });
    assert_eq!(
        s.asked_turns().len(),
        1,
        "answered with the main lane's words"
    );
    assert_eq!(s.core.record().language, None, "nothing settled");
    s.input(Input::Answer {
        turn: Some(1),
        reply: say("Sorry, I didn't get that."),
        expect: Expect::Open,
        language: None,
    });
    s.synthesise(2, "Sorry, I didn't get that.");
    // The request: identified again, and sure this time.
    let spec = first_turn(&mut s);
    s.input(Input::Transcript {
        job: spec,
        result: Ok(transcript("Don't they start me peeling?")),
    });
    s.input(Input::Understood {
        turn: 2,
        yes: false,
    });
    let ident = jobs_of(&s, |k| *k == AsrKind::Identify);
    assert_eq!(ident.len(), 2, "identified again");
    s.input(Input::Transcript {
        job: ident[1],
        result: identified(Lang::Es),
    });
    assert_eq!(s.core.record().language.as_deref(), Some("es"));

    // Never sure: the main language is kept after MAX_UNSURE tries.
    let mut s = Sim::greeted(two_languages(3000), "Hello.", Vec::new());
    for n in 1..=super::super::identify::MAX_UNSURE as u32 {
        let spec = first_turn(&mut s);
        s.input(Input::Transcript {
            job: spec,
            result: Ok(transcript("Mm.")),
        });
        s.input(Input::Understood {
            turn: n,
            yes: false,
        });
        let ident = jobs_of(&s, |k| *k == AsrKind::Identify);
        assert_eq!(ident.len(), n as usize);
        s.input(Input::Transcript {
            job: ident[n as usize - 1],
            result: unsure(),
        });
        s.input(Input::Answer {
            turn: Some(n),
            reply: say("Sorry?"),
            expect: Expect::Open,
            language: None,
        });
        s.synthesise(n + 1, "Sorry?");
    }
    assert_eq!(s.core.record().language.as_deref(), Some("en"));
    let before = s.jobs().len();
    first_turn(&mut s);
    assert!(
        s.jobs()[before..]
            .iter()
            .all(|j| j.kind != AsrKind::Identify),
        "settled: not identified again"
    );
}

/// A first turn of `voiced_ms` up to a pause, whose words there are not
/// understood and whose language, identified from there, is unsure.
fn unsure_at_a_pause(voiced_ms: u64) -> Sim {
    let mut s = Sim::greeted(two_languages(3000), "Hello.", Vec::new());
    s.play_marks();
    s.audio(false, 200);
    s.audio(true, voiced_ms);
    s.audio(false, 300);
    pause_words(&mut s, "If you don't know.");
    let ident = jobs_of(&s, |k| *k == AsrKind::Identify);
    assert_eq!(ident.len(), 1);
    s.input(Input::Transcript {
        job: ident[0],
        result: Ok(Transcript {
            language: None,
            ..transcript("")
        }),
    });
    assert_eq!(s.core.record().language, None);
    s
}

#[test]
fn an_unsure_finding_at_a_pause_is_asked_again_with_more_of_the_turn() {
    use crate::nlu::lang::Lang;
    // "Hola." … a pause … "¿Dónde está mi pedido?"
    let mut s = unsure_at_a_pause(400);
    s.audio(true, 900);
    s.audio(false, 300);
    pause_words(&mut s, "If you don't know how to do it.");
    let ident = jobs_of(&s, |k| *k == AsrKind::Identify);
    assert_eq!(ident.len(), 2, "asked again with more of the turn");
    s.input(Input::Transcript {
        job: ident[1],
        result: identified(Lang::Es),
    });
    assert_eq!(s.core.record().language.as_deref(), Some("es"));
}

/// A turn that ends at the pause it was found unsure at is the same
/// audio: it is not identified again (about 120 ms of Whisper for the same
/// answer) but counted as unsure and answered with the main lane's words.
#[test]
fn a_turn_ending_at_its_unsure_pause_is_not_identified_twice() {
    let mut s = unsure_at_a_pause(800);
    let spec = end_at_pause(&mut s);
    s.input(Input::Understood {
        turn: spec.turn,
        yes: false,
    });
    assert_eq!(
        jobs_of(&s, |k| *k == AsrKind::Identify).len(),
        1,
        "the same audio is not identified again"
    );
    let asked = s.asked_turns();
    assert_eq!(asked.len(), 1, "answered with the main lane's words");
    assert_eq!(asked[0].transcript.as_deref(), Some("If you don't know."));
    assert_eq!(
        s.core.record().language,
        None,
        "one unsure finding settles nothing"
    );
}
