//! Transcript normalisation and word error rate, for tests, benchmarks and
//! load-test reports.

const SMALL: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
const TENS: [&str; 10] = [
    "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];

fn number_words(n: u64) -> String {
    match n {
        0..=19 => SMALL[n as usize].to_string(),
        20..=99 => {
            let t = TENS[(n / 10) as usize];
            if n.is_multiple_of(10) {
                t.to_string()
            } else {
                format!("{t} {}", SMALL[(n % 10) as usize])
            }
        }
        100..=999 => {
            let rest = n % 100;
            let h = format!("{} hundred", SMALL[(n / 100) as usize]);
            if rest == 0 {
                h
            } else {
                format!("{h} {}", number_words(rest))
            }
        }
        _ => n
            .to_string()
            .chars()
            .map(|c| SMALL[(c as u8 - b'0') as usize])
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// Lower-case words, punctuation dropped, digits spelled out, so "10 meters."
/// and "ten meters" compare equal.
pub fn normalize(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for raw in text
        .to_lowercase()
        .split(|c: char| c.is_whitespace() || c == '-' || c == ',')
    {
        let w: String = raw
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == '\'')
            .collect();
        let w = w.trim_matches('\'').to_string();
        if w.is_empty() {
            continue;
        }
        if w.chars().all(|c| c.is_ascii_digit()) && w.len() <= 18 {
            if let Ok(n) = w.parse::<u64>() {
                out.extend(number_words(n).split(' ').map(String::from));
                continue;
            }
        }
        out.push(w);
    }
    out
}

/// Word-level edit distance between reference and hypothesis.
pub fn edit_distance(reference: &[String], hypothesis: &[String]) -> usize {
    let mut prev: Vec<usize> = (0..=hypothesis.len()).collect();
    for (i, r) in reference.iter().enumerate() {
        let mut cur = vec![i + 1; hypothesis.len() + 1];
        for (j, h) in hypothesis.iter().enumerate() {
            let sub = prev[j] + usize::from(r != h);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[hypothesis.len()]
}

/// WER of `hypothesis` against `reference`, after normalisation.
pub fn wer(reference: &str, hypothesis: &str) -> f64 {
    let r = normalize(reference);
    let h = normalize(hypothesis);
    if r.is_empty() {
        return if h.is_empty() { 0.0 } else { 1.0 };
    }
    edit_distance(&r, &h) as f64 / r.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_numbers_and_punctuation() {
        assert_eq!(
            normalize("Go forward 10 meters."),
            vec!["go", "forward", "ten", "meters"]
        );
        assert_eq!(normalize("It's 42!"), vec!["it's", "forty", "two"]);
    }

    #[test]
    fn wer_counts_edits() {
        assert_eq!(wer("a b c d", "a b c d"), 0.0);
        assert_eq!(wer("a b c d", "a x c"), 0.5);
        assert_eq!(wer("go forward ten meters", "Go forward 10 meters."), 0.0);
        assert_eq!(wer("", "x"), 1.0);
    }
}
