//! Does the running transcript say the caller has finished? Smart Turn
//! hears prosody; this reads the words, so a finished sentence whose tune
//! Smart Turn misjudges does not wait for the silence fallback. Pure
//! functions: the call task passes the text, the question and the silence.

use crate::dialogue::Expect;
use crate::nlu::entities::yes_no;
use crate::nlu::numbers::{tokenize, Tok};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The words answer the question or close a sentence.
    Complete,
    /// The words stop mid-thought ("…and", too few digits).
    Incomplete,
    Unsure,
}

/// Words a finished utterance does not end on.
const DANGLING: &[&str] = &[
    "a", "an", "the", "and", "or", "but", "so", "because", "to", "of", "for", "in", "on", "at",
    "with", "from", "my", "your", "our", "their", "his", "her", "its", "is", "are", "was", "i",
    "um", "uh", "er", "erm", "hmm", "like", "if", "that", "which", "about", "into", "than", "then",
    "as", "by", "we", "you", "it's", "i'm", "can", "could", "would", "should", "will", "want",
    "need", "just", "also", "actually", "well", "what", "when", "where", "how", "why",
];

fn words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric() && c != '\'')
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// Reads `text` (the transcript up to the pause) against what was asked.
pub fn verdict(text: &str, expect: Expect) -> Verdict {
    let ws = words(text);
    let Some(last) = ws.last() else {
        return Verdict::Unsure;
    };
    if DANGLING.contains(&last.as_str()) || text.trim_end().ends_with(',') {
        return Verdict::Incomplete;
    }
    let toks = tokenize(text);
    match expect {
        Expect::Digits { min, max } => {
            let digits: usize = toks
                .iter()
                .map(|t| match t {
                    Tok::Num(n) => n.digits.len(),
                    _ => 0,
                })
                .sum();
            if digits == 0 {
                // Words, not digits ("I don't know it"): read as a sentence.
                return sentence(text, ws.len());
            }
            let longest = toks
                .iter()
                .filter_map(|t| match t {
                    Tok::Num(n) => Some(n.digits.len()),
                    _ => None,
                })
                .max()
                .unwrap_or(0);
            if (min..=max).contains(&longest) || (min..=max).contains(&digits) {
                Verdict::Complete
            } else if digits < min {
                Verdict::Incomplete
            } else {
                Verdict::Unsure
            }
        }
        Expect::YesNo => match yes_no(&toks) {
            Some(_) if ws.len() <= 6 => Verdict::Complete,
            _ => sentence(text, ws.len()),
        },
        Expect::Value => Verdict::Complete,
        Expect::Open => sentence(text, ws.len()),
    }
}

/// An open answer is complete when the recogniser closed the sentence.
fn sentence(text: &str, n_words: usize) -> Verdict {
    let closed = text.trim_end().ends_with(['.', '?', '!']);
    if closed && n_words >= 2 {
        Verdict::Complete
    } else {
        Verdict::Unsure
    }
}

/// Silence, in ms, after which the turn ends given the evidence so far:
/// Smart Turn's yes ends it at the pause; words that answer the question or
/// close a sentence end it a little later; otherwise the fallback.
pub fn silence_needed(
    verdict: Option<Verdict>,
    expect: Expect,
    smart_turn_complete: bool,
    pause_ms: u64,
    complete_ms: u64,
    max_ms: u64,
) -> u64 {
    if smart_turn_complete {
        return pause_ms;
    }
    match (verdict, expect) {
        // A direct answer to a closed question: nothing more is coming.
        (Some(Verdict::Complete), Expect::Digits { .. } | Expect::YesNo | Expect::Value) => {
            pause_ms
        }
        (Some(Verdict::Complete), Expect::Open) => complete_ms.max(pause_ms),
        _ => max_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D4: Expect = Expect::Digits { min: 4, max: 4 };

    #[test]
    fn digits_are_complete_at_the_asked_length() {
        assert_eq!(verdict("4 5 6 1.", D4), Verdict::Complete);
        assert_eq!(verdict("four five six one", D4), Verdict::Complete);
        assert_eq!(verdict("It's 4561.", D4), Verdict::Complete);
        assert_eq!(verdict("four five", D4), Verdict::Incomplete);
        assert_eq!(verdict("I don't have it.", D4), Verdict::Complete);
        assert_eq!(verdict("um", D4), Verdict::Incomplete);
    }

    #[test]
    fn open_answers_need_a_closed_sentence_not_a_dangling_word() {
        let o = Expect::Open;
        assert_eq!(
            verdict("What are your opening hours?", o),
            Verdict::Complete
        );
        assert_eq!(verdict("I lost my card.", o), Verdict::Complete);
        assert_eq!(verdict("I want to check my.", o), Verdict::Incomplete);
        assert_eq!(verdict("I lost my card and", o), Verdict::Incomplete);
        assert_eq!(verdict("I lost my card,", o), Verdict::Incomplete);
        assert_eq!(verdict("Hello", o), Verdict::Unsure);
        assert_eq!(verdict("", o), Verdict::Unsure);
    }

    #[test]
    fn yes_and_no_close_a_confirmation() {
        assert_eq!(verdict("Yes.", Expect::YesNo), Verdict::Complete);
        assert_eq!(verdict("no thanks", Expect::YesNo), Verdict::Complete);
        assert_eq!(verdict("Yes, but", Expect::YesNo), Verdict::Incomplete);
    }

    #[test]
    fn silence_shrinks_with_the_evidence() {
        let c = Some(Verdict::Complete);
        assert_eq!(
            silence_needed(None, Expect::Open, true, 200, 400, 1000),
            200
        );
        assert_eq!(silence_needed(c, D4, false, 200, 400, 1000), 200);
        assert_eq!(silence_needed(c, Expect::Open, false, 200, 400, 1000), 400);
        let i = Some(Verdict::Incomplete);
        assert_eq!(silence_needed(i, Expect::Open, false, 200, 400, 1000), 1000);
        assert_eq!(
            silence_needed(None, Expect::Open, false, 200, 400, 1000),
            1000
        );
    }
}
