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

/// When the caller hears `pieces`, synthesised one after another (a
/// `cached` one is ready at once) and each played once ready and the one
/// before it has played: the first audio, and the longest silence added
/// between pieces.
fn schedule(pieces: &[String], pace: Pace, cached: &impl Fn(&str) -> bool) -> (f32, f32) {
    let mut ready = 0.0f32;
    let mut played = 0.0f32;
    let mut first = 0.0;
    let mut worst = 0.0f32;
    for (i, p) in pieces.iter().enumerate() {
        let audio = pace.audio_ms(p);
        if !cached(p) {
            ready += pace.rtf * audio;
        }
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
/// played (a pause over [`GAP_MS`]) is cut after its cached lead
/// ([`cached_lead`]) or first clause, again while that helps. `cached`
/// pieces are ready at once.
pub fn plan(parts: Vec<String>, pace: Pace, cached: impl Fn(&str) -> bool) -> Vec<String> {
    let mut out = match parts.first() {
        Some(first) if !cached(first) => {
            let mut o = opening(&parts, pace, &cached);
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
            if let Some((head, tail)) =
                cached_lead(&out[i], &cached).or_else(|| first_clause(&out[i]))
            {
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
/// and/or its cached lead ([`cached_lead`]) and/or its first clause
/// ([`first_clause`]). Of the cuts whose pieces are each ready before the
/// one before has played (within [`GAP_MS`], at the voice's `pace`, the
/// next sentence included), the one heard first wins; a fast voice takes
/// the finest cut, a slow one a coarser one or none. Returns the pieces
/// that replace `parts[0]`.
fn opening(parts: &[String], pace: Pace, cached: &impl Fn(&str) -> bool) -> Vec<String> {
    let Some(first) = parts.first() else {
        return Vec::new();
    };
    let whole = vec![first.clone()];
    let mut cuts = cuts(first, cached);
    let inner = sentences(first);
    if let Some((lead, rest)) = inner.split_first() {
        if !rest.is_empty() && lead.split_whitespace().count() < 3 {
            let tail = first[first.find(lead.as_str()).unwrap_or(0) + lead.len()..].trim();
            cuts.extend(
                cuts_of(tail, cached)
                    .into_iter()
                    .map(|c| [vec![lead.clone()], c].concat()),
            );
        }
    }
    let heard = |cut: &Vec<String>| {
        let with_next: Vec<String> = cut.iter().chain(parts.get(1)).cloned().collect();
        schedule(&with_next, pace, cached)
    };
    let (_, base_gap) = heard(&whole);
    cuts.into_iter()
        .filter(|c| c.len() > 1)
        .map(|c| (heard(&c), c))
        .filter(|((_, gap), _)| *gap <= GAP_MS.max(base_gap))
        .min_by(|((a, _), _), ((b, _), _)| a.total_cmp(b))
        .map_or(whole, |(_, c)| c)
}

/// The ways `s` may be cut, finest first (a tie in first audio goes to
/// the finer cut, which leaves more room for what follows), `s` whole
/// last: after its cached lead and first clause, after its cached lead,
/// after its first clause.
fn cuts_of(s: &str, cached: &impl Fn(&str) -> bool) -> Vec<Vec<String>> {
    let clause = |s: &str| match first_clause(s) {
        Some((head, tail)) => vec![head, tail],
        None => vec![s.to_string()],
    };
    let mut out = Vec::new();
    if let Some((lead, rest)) = cached_lead(s, cached) {
        out.push([vec![lead.clone()], clause(&rest)].concat());
        out.push(vec![lead, rest]);
    }
    out.push(clause(s));
    out.push(vec![s.to_string()]);
    out
}

/// [`cuts_of`] without `s` whole.
fn cuts(s: &str, cached: &impl Fn(&str) -> bool) -> Vec<Vec<String>> {
    let mut out = cuts_of(s, cached);
    out.pop();
    out
}

/// Fewest words a cached lead has: a shorter one ("Gracias,") gains
/// little and leaves a seam where a name follows.
const LEAD_WORDS: usize = 3;
/// Words looked at for a cached lead (a lead is a template's words before
/// its first blank, so never long).
const LEAD_MAX_WORDS: usize = 24;

/// The longest start of `sentence` that is `cached` on its own — the
/// words of a reply template before its first blank, synthesised ahead
/// ([`template_pieces`]): "Voy a bloquear ahora mismo la tarjeta terminada
/// en" before "4821 para que nadie pueda usarla." Ends at a word boundary,
/// has at least [`LEAD_WORDS`] words and leaves at least one.
fn cached_lead(sentence: &str, cached: &impl Fn(&str) -> bool) -> Option<(String, String)> {
    let ends: Vec<usize> = sentence
        .char_indices()
        .filter(|(_, c)| c.is_whitespace())
        .map(|(i, _)| i)
        .take(LEAD_MAX_WORDS)
        .collect();
    ends.iter().rev().find_map(|&i| {
        let (head, tail) = (sentence[..i].trim_end(), sentence[i..].trim_start());
        (head.split_whitespace().count() >= LEAD_WORDS && !tail.is_empty() && cached(head))
            .then(|| (head.to_string(), tail.to_string()))
    })
}

/// What of a reply template (a text with `{blanks}`) can be synthesised
/// before it is filled in: each sentence without a blank, and the words
/// before a sentence's first blank when there are at least
/// [`LEAD_WORDS`] of them. A filled reply's sentences then start with a
/// cached piece ([`cached_lead`]) that plays while the rest is made.
pub fn template_pieces(template: &str) -> Vec<String> {
    // Sentences as a reply is cut into them, and each on its own: a short
    // one ("Hecho.") is joined to the next in a reply, then opens it.
    let mut out: Vec<String> = Vec::new();
    for s in split(template).into_iter().chain(sentences(template)) {
        let piece = match s.find('{') {
            None => Some(s),
            Some(i) => {
                let lead = s[..i].trim_end();
                (lead.split_whitespace().count() >= LEAD_WORDS).then(|| lead.to_string())
            }
        };
        if let Some(p) = piece.filter(|p| !out.contains(p)) {
            out.push(p);
        }
    }
    out
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
    use super::{
        cached_lead, first_clause, opening, plan, schedule, split, template_pieces, Pace, GAP_MS,
    };

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

    /// [`opening`] with nothing cached.
    fn open(parts: &[String], pace: Pace) -> Vec<String> {
        opening(parts, pace, &|_: &str| false)
    }

    #[test]
    fn a_fast_voice_opens_with_a_short_opener_then_a_clause() {
        let p = parts(
            "Gracias, Sam. Su saldo es de 2450 dólares con 75 centavos, y tiene 2200 dólares disponibles.",
        );
        assert_eq!(
            open(&p, FAST),
            vec![
                "Gracias, Sam.",
                "Su saldo es de 2450 dólares con 75 centavos,",
                "y tiene 2200 dólares disponibles."
            ]
        );
        assert_eq!(
            open(&parts("Sure. Dr. Smith sees patients on Mondays."), FAST),
            vec!["Sure.", "Dr. Smith sees patients on Mondays."],
            "a title's dot is not a sentence's end"
        );
        assert_eq!(
            open(&parts("Dr. Smith is in."), FAST),
            vec!["Dr. Smith is in."]
        );
        assert_eq!(open(&parts("Hello."), FAST), vec!["Hello."]);
        assert_eq!(
            open(
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
            open(&p, SLOW),
            vec![
                "Gracias, Sam. Su saldo es de 2450 dólares con 75 centavos,",
                "y tiene 2200 dólares disponibles."
            ]
        );
        // A short opener before a short sentence keeps up even so; before
        // a longer one it would leave a pause.
        assert_eq!(
            open(&parts("Claro. Diga su número."), SLOW),
            vec!["Claro.", "Diga su número."]
        );
        let longer = parts("Claro. Diga o marque los cuatro últimos dígitos de su cuenta.");
        assert_eq!(open(&longer, SLOW), longer);
        assert_eq!(open(&longer, FAST).len(), 2);
        // Far slower than real time: no cut keeps up, the sentence stays whole.
        let crawl = Pace { rtf: 2.5, ..SLOW };
        assert_eq!(open(&p, crawl), vec![p[0].clone()]);
    }

    #[test]
    fn a_later_sentence_the_voice_would_not_keep_up_with_is_cut_at_a_clause() {
        let greeting = "Gracias por llamar a Northwind Bank. Puedo ayudarle con su saldo, \
            sus movimientos recientes, una tarjeta perdida o robada, préstamos, comisiones \
            y horarios. ¿En qué puedo ayudarle?";
        let parts = split(greeting);
        let never = |_: &str| false;
        let (_, pause) = schedule(&parts, SLOW, &never);
        assert!(pause > 1000.0, "{pause}");
        let planned = plan(parts.clone(), SLOW, never);
        assert_eq!(planned[0], "Gracias por llamar a Northwind Bank.");
        assert_eq!(planned[1], "Puedo ayudarle con su saldo,");
        assert_eq!(planned.join(" "), parts.join(" "), "nothing lost");
        let (_, pause) = schedule(&planned, SLOW, &never);
        assert!(pause <= GAP_MS, "{pause} ms in {planned:?}");
        // A fast voice keeps up with whole sentences; cached ones are ready.
        assert_eq!(plan(parts.clone(), FAST, never), parts);
        assert_eq!(plan(parts.clone(), SLOW, |_| true), parts);
    }

    #[test]
    fn a_template_is_synthesised_up_to_its_first_blank() {
        assert_eq!(
            template_pieces(
                "Voy a bloquear ahora mismo la tarjeta terminada en {card_last4} para que \
                 nadie pueda usarla. ¿Sigo adelante?"
            ),
            vec![
                "Voy a bloquear ahora mismo la tarjeta terminada en",
                "¿Sigo adelante?"
            ]
        );
        assert_eq!(
            template_pieces(
                "Gracias, {customer_name}. Su saldo es de {balance}, y tiene {available} disponibles."
            ),
            vec!["Su saldo es de"],
            "a lead of one word is not worth a seam"
        );
        assert_eq!(
            template_pieces(
                "Hecho. Su tarjeta {card_type} terminada en {card_last4} está bloqueada."
            ),
            vec!["Hecho. Su tarjeta", "Hecho."]
        );
        assert!(template_pieces("{history}¿En qué puedo ayudarle hoy?").is_empty());
    }

    #[test]
    fn a_cached_lead_plays_while_the_rest_is_made() {
        let lead = "Voy a bloquear ahora mismo la tarjeta terminada en";
        let cached = |s: &str| s == lead || s == "Su saldo es de";
        let reply = format!("{lead} 4821 para que nadie pueda usarla. ¿Sigo adelante?");
        assert_eq!(
            cached_lead(&split(&reply)[0], &cached),
            Some((
                lead.to_string(),
                "4821 para que nadie pueda usarla.".to_string()
            ))
        );
        assert_eq!(cached_lead("Voy a bloquear ahora", &cached), None);
        assert_eq!(
            cached_lead("Su saldo es", &|s: &str| s == "Su saldo"),
            None,
            "too short a lead"
        );
        let never = |_: &str| false;
        let planned = plan(split(&reply), SLOW, cached);
        assert_eq!(planned[0], lead);
        assert_eq!(planned.join(" "), reply, "nothing lost");
        let (first, pause) = schedule(&planned, SLOW, &cached);
        assert_eq!(first, 0.0);
        assert!(pause <= GAP_MS, "{pause} ms in {planned:?}");
        let (uncached, _) = schedule(&plan(split(&reply), SLOW, never), SLOW, &never);
        assert!(uncached > 1500.0, "{uncached}");

        // After a short opener: the opener is made, the cached lead plays
        // while the amount is, each piece ready before the last has played.
        let balance = "Gracias, Sam. Su saldo es de 2450 dólares con 75 centavos, y tiene 2200 \
            dólares disponibles.";
        let planned = plan(split(balance), SLOW, cached);
        assert_eq!(
            planned,
            vec![
                "Gracias, Sam.",
                "Su saldo es de",
                "2450 dólares con 75 centavos,",
                "y tiene 2200 dólares disponibles."
            ]
        );
        let (first, pause) = schedule(&planned, SLOW, &cached);
        let (before, _) = schedule(&plan(split(balance), SLOW, never), SLOW, &never);
        assert!(first < 800.0 && before > 2000.0, "{first} / {before} ms");
        assert!(pause <= GAP_MS, "{pause} ms in {planned:?}");
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
