//! Splits a reply into sentences so the first can be spoken while the rest
//! are still being synthesised.

/// Splits on `.`, `!`, `?` (and `;`) followed by whitespace, keeping very short
/// fragments ("Hi.") attached to the next sentence so prosody stays natural.
pub fn split(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in sentences(text) {
        match out.last_mut() {
            Some(prev) if prev.split_whitespace().count() < 3 => {
                prev.push(' ');
                prev.push_str(&s);
            }
            _ => out.push(s),
        }
    }
    out
}

/// The sentences of `text`, trimmed, short ones not yet joined.
fn sentences(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        cur.push(c);
        let end = matches!(c, '.' | '!' | '?' | ';')
            && chars.get(i + 1).is_none_or(|n| n.is_whitespace());
        // "e.g." / "Dr." style abbreviations: a single letter or a title before the dot.
        let abbrev = c == '.' && {
            let word: String = cur
                .trim_end_matches('.')
                .rsplit(|ch: char| ch.is_whitespace())
                .next()
                .unwrap_or("")
                .to_string();
            word.len() == 1
                || ["Mr", "Mrs", "Ms", "Dr", "St", "No", "vs", "e.g", "i.e"]
                    .contains(&word.as_str())
        };
        if end && !abbrev {
            push(&mut out, &mut cur);
        }
    }
    push(&mut out, &mut cur);
    out
}

fn push(out: &mut Vec<String>, cur: &mut String) {
    let s = cur.trim().to_string();
    cur.clear();
    if !s.is_empty() {
        out.push(s);
    }
}

/// How fast a voice speaks and synthesises, as far as cutting a reply
/// into pieces needs: measured by the pool, from a prior per engine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    /// Synthesis time per unit of audio (real-time factor).
    pub rtf: f32,
    /// Audio per character of text (a digit counts as several: "2450" is
    /// said in four words).
    pub ms_per_char: f32,
}

impl Default for Pace {
    /// A voice far faster than real time.
    fn default() -> Self {
        Self {
            rtf: 0.1,
            ms_per_char: 70.0,
        }
    }
}

impl Pace {
    /// Audio `text` is expected to last.
    pub fn audio_ms(&self, text: &str) -> f32 {
        self.ms_per_char * weight(text)
    }

    /// Folds one measured synthesis into the running estimate.
    pub fn observe(&mut self, text: &str, synth_ms: f32, audio_ms: f32) {
        const A: f32 = 0.25;
        let chars = weight(text);
        if audio_ms < 100.0 || chars < 1.0 {
            return;
        }
        self.rtf += A * (synth_ms / audio_ms - self.rtf);
        self.ms_per_char += A * (audio_ms / chars - self.ms_per_char);
    }
}

fn weight(text: &str) -> f32 {
    text.chars()
        .map(|c| if c.is_ascii_digit() { 5.0 } else { 1.0 })
        .sum()
}

/// Added silence between two pieces of one reply that is still heard as
/// one reply (a breath, not a stop: callers take a turn after ~0.5 s).
const GAP_MS: f32 = 250.0;

/// When the caller hears `pieces`, synthesised one after another and each
/// played once ready and the one before it has played: the first audio,
/// and the longest silence added between pieces.
fn schedule(pieces: &[String], pace: Pace) -> (f32, f32) {
    let mut ready = 0.0f32;
    let mut played = 0.0f32;
    let mut first = 0.0;
    let mut worst = 0.0f32;
    for (i, p) in pieces.iter().enumerate() {
        let audio = pace.audio_ms(p);
        ready += pace.rtf * audio;
        if i == 0 {
            first = ready;
            played = ready;
        } else {
            worst = worst.max(ready - played);
        }
        played = played.max(ready) + audio;
    }
    (first, worst)
}

/// Cuts a reply's sentences (as [`split`] gives them) into the pieces a
/// voice of `pace` speaks without the caller waiting longer than needed:
/// the uncached first sentence is opened as [`opening`] says; a later one
/// whose synthesis would not be done before the piece before it has
/// played (a pause over [`GAP_MS`]) is cut after its first clause, again
/// while that helps. `cached` pieces are ready at once.
pub fn plan(parts: Vec<String>, pace: Pace, cached: impl Fn(&str) -> bool) -> Vec<String> {
    let mut out = match parts.first() {
        Some(first) if !cached(first) => {
            let mut o = opening(&parts, pace);
            o.extend(parts.into_iter().skip(1));
            o
        }
        _ => parts,
    };
    let synth = |p: &str| {
        if cached(p) {
            0.0
        } else {
            pace.rtf * pace.audio_ms(p)
        }
    };
    let (mut ready, mut played) = (0.0f32, 0.0f32);
    let mut i = 0;
    while i < out.len() {
        let s = synth(&out[i]);
        if i > 0 && ready + s - played > GAP_MS {
            if let Some((head, tail)) = first_clause(&out[i]) {
                out.splice(i..=i, [head, tail]);
                continue;
            }
        }
        ready += s;
        let start = if i == 0 { ready } else { played.max(ready) };
        played = start + pace.audio_ms(&out[i]);
        i += 1;
    }
    out
}

/// How an uncached first sentence (`parts[0]`, as [`split`] gives them) is
/// cut so its first audio is ready sooner without a pause in the middle:
/// a short opener joined to it ("Claro.", "Gracias, Sam.") on its own,
/// and/or its first clause ([`first_clause`]). Of the cuts whose pieces
/// are each ready before the one before has played (within [`GAP_MS`], at
/// the voice's `pace`, the next sentence included), the one heard first
/// wins; a fast voice takes the finest cut, a slow one a coarser one or
/// none. Returns the pieces that replace `parts[0]`.
fn opening(parts: &[String], pace: Pace) -> Vec<String> {
    let Some(first) = parts.first() else {
        return Vec::new();
    };
    let clause = |s: &str| match first_clause(s) {
        Some((head, tail)) => vec![head, tail],
        None => vec![s.to_string()],
    };
    let whole = vec![first.clone()];
    let mut cuts = vec![clause(first)];
    let inner = sentences(first);
    if let Some((lead, rest)) = inner.split_first() {
        if !rest.is_empty() && lead.split_whitespace().count() < 3 {
            let tail = first[first.find(lead.as_str()).unwrap_or(0) + lead.len()..].trim();
            cuts.push([vec![lead.clone()], clause(tail)].concat());
            cuts.push(vec![lead.clone(), tail.to_string()]);
        }
    }
    let heard = |cut: &Vec<String>| {
        let with_next: Vec<String> = cut.iter().chain(parts.get(1)).cloned().collect();
        schedule(&with_next, pace)
    };
    let (_, base_gap) = heard(&whole);
    cuts.into_iter()
        .filter(|c| c.len() > 1)
        .map(|c| (heard(&c), c))
        .filter(|((_, gap), _)| *gap <= GAP_MS.max(base_gap))
        .min_by(|((a, _), _), ((b, _), _)| a.total_cmp(b))
        .map_or(whole, |(_, c)| c)
}

/// Splits a long sentence after its first clause (a comma after at least
/// four words, with at least three to follow), so the first audio of an
/// uncached reply is ready sooner. Short sentences are left whole.
fn first_clause(sentence: &str) -> Option<(String, String)> {
    const LONG: usize = 60;
    if sentence.len() < LONG {
        return None;
    }
    let mut words = 0;
    for (i, c) in sentence.char_indices() {
        if c.is_whitespace() {
            words += 1;
        }
        if c == ',' && words >= 3 {
            let (head, tail) = sentence.split_at(i + 1);
            if tail.split_whitespace().count() >= 3 {
                return Some((head.trim().to_string(), tail.trim().to_string()));
            }
            return None;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::{first_clause, opening, plan, schedule, split, Pace, GAP_MS};

    /// Piper's pace: synthesis far faster than speech.
    const FAST: Pace = Pace {
        rtf: 0.05,
        ms_per_char: 70.0,
    };
    /// Kokoro's on two cores.
    const SLOW: Pace = Pace {
        rtf: 0.55,
        ms_per_char: 70.0,
    };

    fn parts(text: &str) -> Vec<String> {
        split(text)
    }

    #[test]
    fn a_fast_voice_opens_with_a_short_opener_then_a_clause() {
        let p = parts(
            "Gracias, Sam. Su saldo es de 2450 dólares con 75 centavos, y tiene 2200 dólares disponibles.",
        );
        assert_eq!(
            opening(&p, FAST),
            vec![
                "Gracias, Sam.",
                "Su saldo es de 2450 dólares con 75 centavos,",
                "y tiene 2200 dólares disponibles."
            ]
        );
        assert_eq!(
            opening(&parts("Sure. Dr. Smith sees patients on Mondays."), FAST),
            vec!["Sure.", "Dr. Smith sees patients on Mondays."],
            "a title's dot is not a sentence's end"
        );
        assert_eq!(
            opening(&parts("Dr. Smith is in."), FAST),
            vec!["Dr. Smith is in."]
        );
        assert_eq!(opening(&parts("Hello."), FAST), vec!["Hello."]);
        assert_eq!(
            opening(
                &parts("Your balance is twelve dollars, and your last payment was on Monday."),
                FAST
            ),
            vec![
                "Your balance is twelve dollars,",
                "and your last payment was on Monday."
            ]
        );
    }

    #[test]
    fn a_slow_voice_cuts_only_where_the_next_piece_keeps_up() {
        // "Gracias, Sam." plays ~0.9 s; the balance clause after it takes
        // ~1.9 s to synthesise: a pause. Opening with the clause instead,
        // the rest is ready before it has played.
        let p = parts(
            "Gracias, Sam. Su saldo es de 2450 dólares con 75 centavos, y tiene 2200 dólares disponibles.",
        );
        assert_eq!(
            opening(&p, SLOW),
            vec![
                "Gracias, Sam. Su saldo es de 2450 dólares con 75 centavos,",
                "y tiene 2200 dólares disponibles."
            ]
        );
        // A short opener before a short sentence keeps up even so; before
        // a longer one it would leave a pause.
        assert_eq!(
            opening(&parts("Claro. Diga su número."), SLOW),
            vec!["Claro.", "Diga su número."]
        );
        let longer = parts("Claro. Diga o marque los cuatro últimos dígitos de su cuenta.");
        assert_eq!(opening(&longer, SLOW), longer);
        assert_eq!(opening(&longer, FAST).len(), 2);
        // Far slower than real time: no cut keeps up, the sentence stays whole.
        let crawl = Pace { rtf: 2.5, ..SLOW };
        assert_eq!(opening(&p, crawl), vec![p[0].clone()]);
    }

    #[test]
    fn a_later_sentence_the_voice_would_not_keep_up_with_is_cut_at_a_clause() {
        let greeting = "Gracias por llamar a Northwind Bank. Puedo ayudarle con su saldo, \
            sus movimientos recientes, una tarjeta perdida o robada, préstamos, comisiones \
            y horarios. ¿En qué puedo ayudarle?";
        let parts = split(greeting);
        let never = |_: &str| false;
        let (_, pause) = schedule(&parts, SLOW);
        assert!(pause > 1000.0, "{pause}");
        let planned = plan(parts.clone(), SLOW, never);
        assert_eq!(planned[0], "Gracias por llamar a Northwind Bank.");
        assert_eq!(planned[1], "Puedo ayudarle con su saldo,");
        assert_eq!(planned.join(" "), parts.join(" "), "nothing lost");
        let (_, pause) = schedule(&planned, SLOW);
        assert!(pause <= GAP_MS, "{pause} ms in {planned:?}");
        // A fast voice keeps up with whole sentences; cached ones are ready.
        assert_eq!(plan(parts.clone(), FAST, never), parts);
        assert_eq!(plan(parts.clone(), SLOW, |_| true), parts);
    }

    #[test]
    fn the_pace_follows_what_is_measured() {
        let mut pace = SLOW;
        for _ in 0..30 {
            pace.observe("Le paso ahora con uno de mis compañeros.", 1000.0, 4000.0);
        }
        assert!((pace.rtf - 0.25).abs() < 0.01, "{pace:?}");
        assert!((pace.ms_per_char - 100.0).abs() < 1.0, "{pace:?}");
        // Digits weigh as the words they are said in.
        assert!(pace.audio_ms("2450") > pace.audio_ms("dos"));
        let before = pace;
        pace.observe("", 10.0, 10.0);
        assert_eq!(pace, before, "nothing to learn from");
    }

    #[test]
    fn long_first_sentences_split_after_the_first_clause() {
        assert_eq!(
            first_clause("Your balance is twelve dollars, and your last payment was on Monday."),
            Some((
                "Your balance is twelve dollars,".to_string(),
                "and your last payment was on Monday.".to_string()
            ))
        );
        assert_eq!(first_clause("Sure, I can help."), None);
        assert_eq!(
            first_clause("Well, that is a question I can answer for you right away today."),
            None,
            "too few words before the comma"
        );
    }

    #[test]
    fn splits_sentences() {
        assert_eq!(
            split("We open at 8 am. We close at 6 pm! Anything else?"),
            vec!["We open at 8 am.", "We close at 6 pm!", "Anything else?"]
        );
    }

    #[test]
    fn keeps_short_openers_and_abbreviations_together() {
        assert_eq!(
            split("Sure. Dr. Smith sees patients on Mondays. Bye"),
            vec!["Sure. Dr. Smith sees patients on Mondays.", "Bye"]
        );
        assert_eq!(split("Version 2.5 is out."), vec!["Version 2.5 is out."]);
        assert!(split("   ").is_empty());
    }
}
