//! Spoken numbers as ASR writes them ("four five six one", "twenty three",
//! "one hundred and fifty", "double oh seven", "4, 5, 6, 1") turned into
//! number tokens the entity extractors can read.

/// A token of a normalised utterance.
#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    Word(String),
    Num(Number),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Number {
    /// The digits as spoken in sequence ("four five six one" → "4561",
    /// "twenty three" → "23", "oh seven" → "07").
    pub digits: String,
    /// The value when it was said as one cardinal ("one hundred and fifty").
    pub value: Option<u64>,
    pub ordinal: bool,
    /// Decimal part written by the ASR ("12.50"), as a string of digits.
    pub fraction: Option<String>,
}

fn unit(w: &str) -> Option<u64> {
    Some(match w {
        "zero" | "oh" | "o" | "nought" => 0,
        "one" => 1,
        "two" => 2,
        "three" => 3,
        "four" => 4,
        "five" => 5,
        "six" => 6,
        "seven" => 7,
        "eight" => 8,
        "nine" => 9,
        _ => return None,
    })
}

fn teen(w: &str) -> Option<u64> {
    Some(match w {
        "ten" => 10,
        "eleven" => 11,
        "twelve" => 12,
        "thirteen" => 13,
        "fourteen" => 14,
        "fifteen" => 15,
        "sixteen" => 16,
        "seventeen" => 17,
        "eighteen" => 18,
        "nineteen" => 19,
        _ => return None,
    })
}

fn tens(w: &str) -> Option<u64> {
    Some(match w {
        "twenty" => 20,
        "thirty" => 30,
        "forty" => 40,
        "fifty" => 50,
        "sixty" => 60,
        "seventy" => 70,
        "eighty" => 80,
        "ninety" => 90,
        _ => return None,
    })
}

fn ordinal(w: &str) -> Option<(u64, bool)> {
    // (value, is a tens word) so "twenty first" composes.
    Some(match w {
        "first" => (1, false),
        "second" => (2, false),
        "third" => (3, false),
        "fourth" => (4, false),
        "fifth" => (5, false),
        "sixth" => (6, false),
        "seventh" => (7, false),
        "eighth" => (8, false),
        "ninth" => (9, false),
        "tenth" => (10, false),
        "eleventh" => (11, false),
        "twelfth" => (12, false),
        "thirteenth" => (13, false),
        "fourteenth" => (14, false),
        "fifteenth" => (15, false),
        "sixteenth" => (16, false),
        "seventeenth" => (17, false),
        "eighteenth" => (18, false),
        "nineteenth" => (19, false),
        "twentieth" => (20, true),
        "thirtieth" => (30, true),
        _ => return None,
    })
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Unit(u64),
    Teen(u64),
    Tens(u64),
    Hundred,
    Scale(u64),
    Ordinal(u64),
    Double,
    Triple,
    Digits,
}

fn kind(w: &str) -> Option<Kind> {
    if let Some(v) = unit(w) {
        return Some(Kind::Unit(v));
    }
    if let Some(v) = teen(w) {
        return Some(Kind::Teen(v));
    }
    if let Some(v) = tens(w) {
        return Some(Kind::Tens(v));
    }
    if let Some((v, _)) = ordinal(w) {
        return Some(Kind::Ordinal(v));
    }
    match w {
        "hundred" => Some(Kind::Hundred),
        "thousand" => Some(Kind::Scale(1_000)),
        "million" => Some(Kind::Scale(1_000_000)),
        "double" => Some(Kind::Double),
        "triple" => Some(Kind::Triple),
        _ if is_digit_word(w) => Some(Kind::Digits),
        _ => None,
    }
}

fn is_digit_word(w: &str) -> bool {
    let core = w.trim_end_matches(['s', 't', 'h', 'n', 'd', 'r']);
    !core.is_empty()
        && core.chars().all(|c| c.is_ascii_digit() || c == '.')
        && core.chars().next().is_some_and(|c| c.is_ascii_digit())
}

/// Splits text into lower-case words, keeping digits, `$`, `£`, `€`, `%`, `/`, `-`
/// and `.` inside numbers; other punctuation separates words.
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let next_digit = chars.get(i + 1).is_some_and(|n| n.is_ascii_digit());
        let prev_digit = i > 0 && chars[i - 1].is_ascii_digit();
        if c.is_alphanumeric() || c == '\'' {
            cur.extend(c.to_lowercase());
        } else if (c == '.' || c == '/' || c == '-' || c == ':') && prev_digit && next_digit {
            cur.push(c);
        } else if c == '$' || c == '£' || c == '€' || c == '%' {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            out.push(c.to_string());
        } else if c == ','
            && prev_digit
            && next_digit
            && chars.get(i + 2).is_some_and(|n| n.is_ascii_digit())
            && chars.get(i + 3).is_some_and(|n| n.is_ascii_digit())
        {
            // thousands separator "1,250"
        } else if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Every digit spoken in `text`, in order ("4 5, six one" → "4561"): how
/// an account number or PIN read out is scored.
pub fn spoken_digits(text: &str) -> String {
    tokenize(text)
        .into_iter()
        .filter_map(|t| match t {
            Tok::Num(n) => Some(n.digits),
            Tok::Word(_) => None,
        })
        .collect()
}

/// `text` with every run of three or more digits, written or spoken
/// ("4 5 6 1", "four five six one", "4561"), replaced by one `*` per digit:
/// what logs and records show of what a caller said, since callers read
/// PINs, card and account numbers aloud. Text without such a run is
/// returned as it was.
pub fn mask_digits(text: &str) -> String {
    let toks = tokenize(text);
    let mut out: Vec<String> = Vec::with_capacity(toks.len());
    let mut run: Vec<String> = Vec::new();
    let mut masked = false;
    let flush = |run: &mut Vec<String>, out: &mut Vec<String>, masked: &mut bool| {
        let n: usize = run.iter().map(|d| d.len()).sum();
        if n >= 3 {
            out.push("*".repeat(n));
            *masked = true;
        } else {
            out.append(run);
        }
        run.clear();
    };
    for t in toks {
        match t {
            Tok::Num(n) => run.push(n.digits),
            Tok::Word(w) => {
                flush(&mut run, &mut out, &mut masked);
                out.push(w);
            }
        }
    }
    flush(&mut run, &mut out, &mut masked);
    if masked {
        out.join(" ")
    } else {
        text.to_string()
    }
}

/// Tokenises and folds runs of number words into [`Number`]s.
pub fn tokenize(text: &str) -> Vec<Tok> {
    let ws = words(text);
    let mut out = Vec::new();
    let mut i = 0;
    while i < ws.len() {
        if kind(&ws[i]).is_some() && !(ws[i] == "o" || ws[i] == "oh") || starts_oh_run(&ws, i) {
            let (nums, used) = number_run(&ws[i..]);
            if used > 0 {
                out.extend(nums.into_iter().map(Tok::Num));
                i += used;
                continue;
            }
        }
        out.push(Tok::Word(ws[i].clone()));
        i += 1;
    }
    out
}

/// "oh" is only a zero next to other digits ("oh seven", "four oh one").
fn starts_oh_run(ws: &[String], i: usize) -> bool {
    (ws[i] == "oh" || ws[i] == "o")
        && ws
            .get(i + 1)
            .is_some_and(|n| matches!(kind(n), Some(Kind::Unit(_))))
}

/// Reads number words from the start of `ws`. Returns the numbers (one per
/// cardinal group; a string of single digits is one number) and how many
/// words were used.
fn number_run(ws: &[String]) -> (Vec<Number>, usize) {
    let mut groups: Vec<Number> = Vec::new();
    let mut i = 0;
    // A cardinal being built: total, current, last kind.
    let mut cur: Option<(u64, u64, Kind, String)> = None;
    let flush = |cur: &mut Option<(u64, u64, Kind, String)>, groups: &mut Vec<Number>| {
        if let Some((total, part, _, _)) = cur.take() {
            let v = total + part;
            groups.push(Number {
                digits: v.to_string(),
                value: Some(v),
                ordinal: false,
                fraction: None,
            });
        }
    };
    while i < ws.len() {
        let w = ws[i].as_str();
        // "and" inside a cardinal: "one hundred and fifty".
        if w == "and" {
            if let Some((_, _, Kind::Hundred | Kind::Scale(_), _)) = cur {
                if ws.get(i + 1).and_then(|n| kind(n)).is_some_and(|k| {
                    matches!(
                        k,
                        Kind::Unit(_) | Kind::Teen(_) | Kind::Tens(_) | Kind::Ordinal(_)
                    )
                }) {
                    i += 1;
                    continue;
                }
            }
            break;
        }
        let Some(k) = kind(w) else { break };
        if (w == "o" || w == "oh") && cur.is_none() && groups.is_empty() && !starts_oh_run(ws, i) {
            break;
        }
        match k {
            Kind::Digits => {
                flush(&mut cur, &mut groups);
                let core: String = w
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.')
                    .collect();
                let ord = w.len() > core.len();
                let (int, frac) = match core.split_once('.') {
                    Some((a, b)) => (a.to_string(), Some(b.to_string())),
                    None => (core.clone(), None),
                };
                groups.push(Number {
                    value: int.parse().ok(),
                    digits: int,
                    ordinal: ord,
                    fraction: frac,
                });
            }
            Kind::Double | Kind::Triple => {
                let n = if k == Kind::Double { 2 } else { 3 };
                match ws.get(i + 1).and_then(|n| unit(n)) {
                    Some(d) => {
                        flush(&mut cur, &mut groups);
                        let digits = d.to_string().repeat(n);
                        groups.push(Number {
                            value: None,
                            digits,
                            ordinal: false,
                            fraction: None,
                        });
                        i += 2;
                        continue;
                    }
                    None => break,
                }
            }
            Kind::Unit(v) => match cur {
                Some((t, p, Kind::Tens(_), s)) => cur = Some((t, p + v, Kind::Unit(v), s)),
                Some((t, p, Kind::Hundred | Kind::Scale(_), s)) if p % 100 == 0 || t > 0 => {
                    cur = Some((t, p + v, Kind::Unit(v), s))
                }
                _ => {
                    flush(&mut cur, &mut groups);
                    cur = Some((0, v, Kind::Unit(v), String::new()));
                }
            },
            Kind::Teen(v) | Kind::Tens(v) => match cur {
                Some((t, p, Kind::Hundred | Kind::Scale(_), s)) => cur = Some((t, p + v, k, s)),
                _ => {
                    flush(&mut cur, &mut groups);
                    cur = Some((0, v, k, String::new()));
                }
            },
            Kind::Ordinal(v) => {
                let (t, p) = match cur {
                    Some((t, p, Kind::Tens(_) | Kind::Hundred | Kind::Scale(_), _))
                        if v < 10 || p % 100 == 0 =>
                    {
                        (t, p)
                    }
                    _ => {
                        flush(&mut cur, &mut groups);
                        (0, 0)
                    }
                };
                cur = None;
                let val = t + p + v;
                groups.push(Number {
                    digits: val.to_string(),
                    value: Some(val),
                    ordinal: true,
                    fraction: None,
                });
            }
            Kind::Hundred => match cur {
                Some((t, p, Kind::Unit(_) | Kind::Teen(_) | Kind::Tens(_), s)) if p % 100 > 0 => {
                    cur = Some((t, p * 100, Kind::Hundred, s))
                }
                None if groups.is_empty() && i == 0 => {
                    cur = Some((0, 100, Kind::Hundred, String::new()))
                }
                _ => break,
            },
            Kind::Scale(m) => match cur {
                Some((t, p, _, s)) if p > 0 && p < m => {
                    cur = Some((t + p * m, 0, Kind::Scale(m), s))
                }
                None if groups.is_empty() && i == 0 => {
                    cur = Some((m, 0, Kind::Scale(m), String::new()))
                }
                _ => break,
            },
        }
        i += 1;
    }
    flush(&mut cur, &mut groups);
    if i == 0 {
        return (Vec::new(), 0);
    }
    // Several single digits in a row ("four five six one") are one digit
    // string; so are digit groups ("twenty three forty five").
    if groups.len() > 1 && groups.iter().all(|g| !g.ordinal && g.fraction.is_none()) {
        let digits: String = groups.iter().map(|g| g.digits.as_str()).collect();
        return (
            vec![Number {
                value: None,
                digits,
                ordinal: false,
                fraction: None,
            }],
            i,
        );
    }
    (groups, i)
}

/// The text with spoken numbers written as digits (for display and regexes).
pub fn normalize(text: &str) -> String {
    tokenize(text)
        .into_iter()
        .map(|t| match t {
            Tok::Word(w) => w,
            Tok::Num(n) => match n.fraction {
                Some(f) => format!("{}.{f}", n.digits),
                None => n.digits,
            },
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spoken_forms() {
        for (said, want) in [
            ("four five six one", "4561"),
            (
                "my card ends in four five six one please",
                "my card ends in 4561 please",
            ),
            ("twenty three", "23"),
            ("one hundred and fifty dollars", "150 dollars"),
            ("a hundred dollars", "a 100 dollars"),
            ("two thousand five hundred", "2500"),
            ("double five oh seven", "5507"),
            ("4, 5, 6, 1", "4561"),
            ("order 123456", "order 123456"),
            ("one two three four five six", "123456"),
            ("twenty three forty five", "2345"),
            ("the twenty first of march", "the 21 of march"),
            ("march third", "march 3"),
            ("i have one question", "i have 1 question"),
            ("oh no", "oh no"),
            ("$1,250.50", "$ 1250.50"),
            ("nineteen ninety", "1990"),
        ] {
            assert_eq!(normalize(said), want, "{said}");
        }
    }

    #[test]
    fn cardinal_values_survive() {
        let t = tokenize("one hundred and twenty five");
        assert_eq!(
            t,
            vec![Tok::Num(Number {
                digits: "125".into(),
                value: Some(125),
                ordinal: false,
                fraction: None
            })]
        );
    }

    #[test]
    fn digit_runs_are_masked_written_or_spoken() {
        assert_eq!(mask_digits("my pin is 4 5 6 1"), "my pin is ****");
        assert_eq!(mask_digits("four five six one"), "****");
        assert_eq!(
            mask_digits("card ending 4242 please"),
            "card ending **** please"
        );
        assert!(!mask_digits("it's 4 oh 7 2 and then 9 9 1").contains(char::is_numeric));
        // Small numbers and plain text stay as they were.
        assert_eq!(mask_digits("I have 2 cards."), "I have 2 cards.");
        assert_eq!(mask_digits("What's my balance?"), "What's my balance?");
    }
}
