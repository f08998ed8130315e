//! Splits a reply into sentences so the first can be spoken while the rest
//! are still being synthesised.

/// Splits on `.`, `!`, `?` (and `;`) followed by whitespace, keeping very short
/// fragments ("Hi.") attached to the next sentence so prosody stays natural.
pub fn split(text: &str) -> Vec<String> {
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
    if s.is_empty() {
        return;
    }
    match out.last_mut() {
        Some(prev) if prev.split_whitespace().count() < 3 => {
            prev.push(' ');
            prev.push_str(&s);
        }
        _ => out.push(s),
    }
}

/// Splits a long sentence after its first clause (a comma after at least
/// four words, with at least three to follow), so the first audio of an
/// uncached reply is ready sooner. Short sentences are left whole.
pub fn first_clause(sentence: &str) -> Option<(String, String)> {
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
    use super::{first_clause, split};

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
