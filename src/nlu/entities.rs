//! Slot values from spoken-form transcripts: digit strings, numbers, money,
//! dates (absolute and relative), identifiers, yes/no, names and choices,
//! each with per-slot validation.

use std::collections::BTreeMap;

use chrono::{Datelike, Duration, NaiveDate, Weekday};
use serde::{Deserialize, Serialize};

use super::lang::Lang;
use super::numbers::{tokenize, Number, Tok};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotKind {
    Number,
    Digits,
    Money,
    Date,
    Identifier,
    YesNo,
    Name,
    Choice,
    Text,
}

/// A slot's type and validation rules, as written in an agent's files.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotSpec {
    #[serde(rename = "type")]
    pub kind: Option<SlotKind>,
    /// Digits: exact length.
    pub length: Option<usize>,
    pub min_length: Option<usize>,
    pub max_length: Option<usize>,
    /// Number / money bounds.
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Identifier: a regex the whole (compacted) value must match.
    pub pattern: Option<String>,
    /// Choice: canonical value → words that mean it.
    #[serde(default)]
    pub values: BTreeMap<String, Vec<String>>,
    /// Money: currency when the caller names none (ISO code).
    pub currency: Option<String>,
    /// Date: "past" or "future" resolves a bare weekday that way; also
    /// rejects dates on the wrong side of today.
    pub direction: Option<String>,
    /// Text: the fewest words accepted.
    pub min_words: Option<usize>,
}

impl SlotSpec {
    /// The fewest and most digits of a value made of digits only: a digits
    /// slot, an identifier without a pattern, or one whose pattern is
    /// `[0-9]{n}`, `[0-9]{a,b}` or `\d{n}` (an order number). `None` for
    /// anything else.
    pub(crate) fn digit_string(&self) -> Option<(usize, usize)> {
        match (self.kind, self.pattern.as_deref()) {
            // An identifier without a pattern is read as digits.
            (Some(SlotKind::Digits), _) | (Some(SlotKind::Identifier), None) => Some((
                self.length.or(self.min_length).unwrap_or(1),
                self.length.or(self.max_length).unwrap_or(usize::MAX),
            )),
            (Some(SlotKind::Identifier), Some(p)) => {
                let p = p.strip_prefix('^').unwrap_or(p);
                let p = p.strip_suffix('$').unwrap_or(p);
                let count = p
                    .strip_prefix("[0-9]")
                    .or_else(|| p.strip_prefix("\\d"))?
                    .strip_prefix('{')?
                    .strip_suffix('}')?;
                let (a, b) = count.split_once(',').unwrap_or((count, count));
                let min: usize = a.trim().parse().ok()?;
                let max: usize = b.trim().parse().ok()?;
                (min <= max).then_some((min, max))
            }
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SlotValue {
    Bool(bool),
    Number(f64),
    Money { amount: f64, currency: String },
    Date(NaiveDate),
    Text(String),
}

impl SlotValue {
    /// A stable string for tests, logs and templates.
    pub fn canonical(&self) -> String {
        match self {
            SlotValue::Bool(b) => if *b { "yes" } else { "no" }.into(),
            SlotValue::Number(n) if n.fract() == 0.0 => format!("{}", *n as i64),
            SlotValue::Number(n) => format!("{n}"),
            SlotValue::Money { amount, currency } => format!("{amount:.2} {currency}"),
            SlotValue::Date(d) => d.format("%Y-%m-%d").to_string(),
            SlotValue::Text(t) => t.clone(),
        }
    }

    /// How to say it in `lang`: digit strings one digit at a time, money
    /// and dates as a person would read them.
    pub fn spoken(&self, kind: Option<SlotKind>, lang: Lang) -> String {
        match (self, kind) {
            (SlotValue::Text(t), Some(SlotKind::Digits | SlotKind::Identifier)) => spell(t),
            (SlotValue::Money { amount, currency }, _) => lang.say_money(*amount, currency),
            (SlotValue::Date(d), _) => lang.say_date(*d),
            (SlotValue::Bool(b), _) if lang == Lang::Es => if *b { "sí" } else { "no" }.into(),
            _ => self.canonical(),
        }
    }
}

/// "4561" → "4 5 6 1" so TTS reads digits, not "four thousand…".
pub fn spell(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why a value of the right shape was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    /// A digit string of the wrong length.
    Digits {
        heard: usize,
        min: usize,
        max: usize,
    },
    BelowMin(f64),
    AboveMax(f64),
    InFuture,
    InPast,
}

impl Problem {
    /// The reason, fit to be spoken in `lang`.
    pub fn say(&self, lang: Lang) -> String {
        match (self, lang) {
            (Self::Digits { heard, min, max }, Lang::En) if min == max => {
                format!("I heard {heard} digits, and I need {min}")
            }
            (Self::Digits { heard, min, max }, Lang::En) => {
                format!("I heard {heard} digits, and I need between {min} and {max}")
            }
            (Self::Digits { heard, min, max }, Lang::Es) if min == max => {
                format!("he oído {heard} dígitos y necesito {min}")
            }
            (Self::Digits { heard, min, max }, Lang::Es) => {
                format!("he oído {heard} dígitos y necesito entre {min} y {max}")
            }
            (Self::BelowMin(m), Lang::En) => format!("that is less than the minimum of {m}"),
            (Self::BelowMin(m), Lang::Es) => format!("es menos del mínimo de {m}"),
            (Self::AboveMax(m), Lang::En) => format!("that is more than the maximum of {m}"),
            (Self::AboveMax(m), Lang::Es) => format!("es más del máximo de {m}"),
            (Self::InFuture, Lang::En) => "that date is in the future".into(),
            (Self::InFuture, Lang::Es) => "esa fecha todavía no ha llegado".into(),
            (Self::InPast, Lang::En) => "that date has already passed".into(),
            (Self::InPast, Lang::Es) => "esa fecha ya ha pasado".into(),
        }
    }
}

/// What an utterance gave for a slot.
#[derive(Debug, Clone, PartialEq)]
pub enum Extracted {
    Value(SlotValue),
    /// Something of the right shape that fails validation, with a reason
    /// fit to be spoken ("that was 3 digits; I need 4").
    Invalid(Problem),
    Nothing,
}

/// Extracts one slot from a transcript. `today` anchors relative dates.
pub fn extract(spec: &SlotSpec, text: &str, today: NaiveDate) -> Extracted {
    let toks = tokenize(text);
    match spec.kind.unwrap_or(SlotKind::Text) {
        SlotKind::Digits => digits(spec, &toks),
        SlotKind::Number => number(spec, &toks),
        SlotKind::Money => money(spec, &toks),
        SlotKind::Date => date(spec, &toks, today),
        SlotKind::Identifier => identifier(spec, &toks),
        SlotKind::YesNo => {
            yes_no(&toks).map_or(Extracted::Nothing, |b| Extracted::Value(SlotValue::Bool(b)))
        }
        SlotKind::Name => name(&toks),
        SlotKind::Choice => choice(spec, &toks),
        SlotKind::Text => {
            let words: Vec<&str> = text.split_whitespace().collect();
            if words.len() >= spec.min_words.unwrap_or(1) {
                Extracted::Value(SlotValue::Text(words.join(" ")))
            } else {
                Extracted::Nothing
            }
        }
    }
}

/// Runs of adjacent numbers joined ("4 5 6 1" → "4561").
fn digit_runs(toks: &[Tok]) -> Vec<String> {
    let mut runs = Vec::new();
    let mut cur = String::new();
    for t in toks {
        match t {
            Tok::Num(n) if n.fraction.is_none() => cur.push_str(&n.digits),
            _ => {
                if !cur.is_empty() {
                    runs.push(std::mem::take(&mut cur));
                }
            }
        }
    }
    if !cur.is_empty() {
        runs.push(cur);
    }
    runs
}

fn digits(spec: &SlotSpec, toks: &[Tok]) -> Extracted {
    let runs = digit_runs(toks);
    let (lo, hi) = spec.digit_string().unwrap_or((1, usize::MAX));
    if let Some(r) = runs.iter().find(|r| (lo..=hi).contains(&r.len())) {
        return Extracted::Value(SlotValue::Text(r.clone()));
    }
    match runs.last() {
        Some(r) if lo == hi => Extracted::Invalid(Problem::Digits {
            heard: r.len(),
            min: lo,
            max: hi,
        }),
        Some(r) => Extracted::Invalid(Problem::Digits {
            heard: r.len(),
            min: lo,
            max: hi,
        }),
        None => Extracted::Nothing,
    }
}

fn in_bounds(spec: &SlotSpec, v: f64) -> Result<(), Problem> {
    if let Some(min) = spec.min {
        if v < min {
            return Err(Problem::BelowMin(min));
        }
    }
    if let Some(max) = spec.max {
        if v > max {
            return Err(Problem::AboveMax(max));
        }
    }
    Ok(())
}

fn number(spec: &SlotSpec, toks: &[Tok]) -> Extracted {
    let Some(n) = toks.iter().find_map(|t| match t {
        Tok::Num(n) => Some(n),
        _ => None,
    }) else {
        return Extracted::Nothing;
    };
    let v = num_value(n);
    match in_bounds(spec, v) {
        Ok(()) => Extracted::Value(SlotValue::Number(v)),
        Err(e) => Extracted::Invalid(e),
    }
}

fn num_value(n: &Number) -> f64 {
    let whole = n.value.unwrap_or_else(|| n.digits.parse().unwrap_or(0)) as f64;
    match &n.fraction {
        Some(f) => format!("{whole}.{f}").parse().unwrap_or(whole),
        None => whole,
    }
}

fn currency_of(w: &str) -> Option<&'static str> {
    Some(match w {
        "$" | "dollar" | "dollars" | "buck" | "bucks" | "usd" => "USD",
        "£" | "pound" | "pounds" | "quid" | "gbp" => "GBP",
        "€" | "euro" | "euros" | "eur" => "EUR",
        _ => return None,
    })
}

fn money(spec: &SlotSpec, toks: &[Tok]) -> Extracted {
    let default_cur = spec.currency.clone().unwrap_or_else(|| "USD".into());
    let word = |i: usize| match toks.get(i) {
        Some(Tok::Word(w)) => Some(w.as_str()),
        _ => None,
    };
    let mut found: Option<(f64, String)> = None;
    for (i, t) in toks.iter().enumerate() {
        let Tok::Num(n) = t else { continue };
        let mut amount = num_value(n);
        let before = i.checked_sub(1).and_then(word).and_then(currency_of);
        let after = word(i + 1).and_then(currency_of);
        let Some(cur) = before.or(after) else {
            continue;
        };
        // "twenty dollars and fifty cents"
        let mut j = i + 2;
        if word(j) == Some("and") {
            j += 1;
        }
        if let (Some(Tok::Num(c)), Some("cents" | "cent" | "pence" | "p")) =
            (toks.get(j), word(j + 1))
        {
            amount += num_value(c) / 100.0;
        }
        found = Some((amount, cur.to_string()));
        break;
    }
    if found.is_none() {
        // A bare number when the slot is money: "about two hundred".
        let nums: Vec<&Number> = toks
            .iter()
            .filter_map(|t| match t {
                Tok::Num(n) => Some(n),
                _ => None,
            })
            .collect();
        if nums.len() == 1 {
            found = Some((num_value(nums[0]), default_cur));
        }
    }
    match found {
        Some((amount, currency)) => match in_bounds(spec, amount) {
            Ok(()) => Extracted::Value(SlotValue::Money { amount, currency }),
            Err(e) => Extracted::Invalid(e),
        },
        None => Extracted::Nothing,
    }
}

fn month(w: &str) -> Option<u32> {
    // Full names, or the usual three-letter abbreviations ("sept" too).
    super::lang::EN_MONTHS
        .iter()
        .position(|m| {
            *m == w || (w.len() == 3 && m.starts_with(w)) || (w == "sept" && *m == "september")
        })
        .map(|i| i as u32 + 1)
}

fn weekday(w: &str) -> Option<Weekday> {
    Some(match w.trim_end_matches('s') {
        "monday" => Weekday::Mon,
        "tuesday" => Weekday::Tue,
        "wednesday" => Weekday::Wed,
        "thursday" => Weekday::Thu,
        "friday" => Weekday::Fri,
        "saturday" => Weekday::Sat,
        "sunday" => Weekday::Sun,
        _ => return None,
    })
}

fn date(spec: &SlotSpec, toks: &[Tok], today: NaiveDate) -> Extracted {
    let past = spec.direction.as_deref() == Some("past");
    let future = spec.direction.as_deref() == Some("future");
    let Some(d) = find_date(toks, today, past) else {
        return Extracted::Nothing;
    };
    if past && d > today {
        return Extracted::Invalid(Problem::InFuture);
    }
    if future && d < today {
        return Extracted::Invalid(Problem::InPast);
    }
    Extracted::Value(SlotValue::Date(d))
}

fn find_date(toks: &[Tok], today: NaiveDate, prefer_past: bool) -> Option<NaiveDate> {
    let w = |i: usize| match toks.get(i) {
        Some(Tok::Word(w)) => Some(w.as_str()),
        _ => None,
    };
    let n = |i: usize| match toks.get(i) {
        Some(Tok::Num(n)) => n.value.or_else(|| n.digits.parse().ok()),
        _ => None,
    };
    let ymd = |y: i32, m: u32, d: u32| NaiveDate::from_ymd_opt(y, m, d);
    // The next (or, for the past, previous) occurrence of month/day.
    let anchor = |m: u32, d: u32, year: Option<u64>| -> Option<NaiveDate> {
        if let Some(y) = year {
            return ymd(y as i32, m, d);
        }
        let this = ymd(today.year(), m, d)?;
        Some(if prefer_past && this > today {
            ymd(today.year() - 1, m, d)?
        } else if !prefer_past && this < today - Duration::days(31) {
            ymd(today.year() + 1, m, d)?
        } else {
            this
        })
    };
    let year_at = |i: usize| n(i).filter(|y| (1900..=2100).contains(y));
    for i in 0..toks.len() {
        match w(i) {
            Some("today" | "tonight") => return Some(today),
            Some("tomorrow") => return Some(today + Duration::days(1)),
            Some("yesterday") => return Some(today - Duration::days(1)),
            Some("day") if w(i + 1) == Some("after") && w(i + 2) == Some("tomorrow") => {
                return Some(today + Duration::days(2))
            }
            Some("day") if w(i + 1) == Some("before") && w(i + 2) == Some("yesterday") => {
                return Some(today - Duration::days(2))
            }
            Some("next" | "last" | "this" | "on" | "coming" | "past") | None => {}
            Some(word) => {
                if word.starts_with(|c: char| c.is_ascii_digit()) {
                    if let Some(d) = parse_numeric_date(word, today) {
                        return Some(d);
                    }
                }
                if let Some(wd) = weekday(word) {
                    let prev = i.checked_sub(1).and_then(w);
                    let fwd = (7 + wd.num_days_from_monday() as i64
                        - today.weekday().num_days_from_monday() as i64)
                        % 7;
                    let back = (7 - fwd) % 7;
                    let d = match prev {
                        Some("next" | "coming") => {
                            today + Duration::days(if fwd == 0 { 7 } else { fwd })
                        }
                        Some("last" | "past") => {
                            today - Duration::days(if back == 0 { 7 } else { back })
                        }
                        Some("this") => today + Duration::days(fwd),
                        _ if prefer_past => today - Duration::days(back),
                        _ => today + Duration::days(fwd),
                    };
                    return Some(d);
                }
                if let Some(m) = month(word) {
                    // "march 3rd (2026)"
                    if let Some(d) = n(i + 1) {
                        if (1..=31).contains(&d) {
                            return anchor(m, d as u32, year_at(i + 2));
                        }
                    }
                    // "3rd of march" / "3 march"
                    let back = if i >= 1 && w(i - 1) == Some("of") {
                        2
                    } else {
                        1
                    };
                    if let Some(d) = i.checked_sub(back).and_then(n) {
                        if (1..=31).contains(&d) {
                            return anchor(m, d as u32, year_at(i + 1));
                        }
                    }
                }
                if matches!(word, "week" | "weeks" | "day" | "days") {
                    let k = if word.starts_with("week") { 7 } else { 1 };
                    let count =
                        // Bounded so "ninety billion days ago" can't overflow the calendar.
                        i.checked_sub(1).and_then(n).filter(|c| *c <= 36_500).map(|c| c as i64).or_else(|| {
                            (i >= 1 && matches!(w(i - 1), Some("a" | "one"))).then_some(1)
                        });
                    match (i.checked_sub(1).and_then(w), count) {
                        (Some("next"), _) if k == 7 => return Some(today + Duration::days(7)),
                        (Some("last"), _) if k == 7 => return Some(today - Duration::days(7)),
                        _ => {}
                    }
                    if let Some(c) = count {
                        let before = i
                            .checked_sub(2)
                            .and_then(w)
                            .or_else(|| i.checked_sub(3).and_then(w));
                        if w(i + 1) == Some("ago") {
                            return Some(today - Duration::days(c * k));
                        }
                        if before == Some("in") || w(i + 1) == Some("from") {
                            return Some(today + Duration::days(c * k));
                        }
                    }
                }
            }
        }
        if let Some(Tok::Num(num)) = toks.get(i) {
            // ISO or US numeric dates as the ASR may write them.
            if let Some(t) = num_text(num) {
                if let Some(d) = parse_numeric_date(&t, today) {
                    return Some(d);
                }
            }
            // "the 3rd" with no month: this month, or next if passed.
            if num.ordinal
                && i >= 1
                && w(i - 1) == Some("the")
                && !toks[i + 1..]
                    .iter()
                    .any(|t| matches!(t, Tok::Word(x) if month(x).is_some()))
            {
                let d = num.value? as u32;
                let this = ymd(today.year(), today.month(), d)?;
                if this >= today || prefer_past {
                    return Some(this);
                }
                let (y, m) = if today.month() == 12 {
                    (today.year() + 1, 1)
                } else {
                    (today.year(), today.month() + 1)
                };
                return ymd(y, m, d);
            }
        }
    }
    None
}

fn num_text(n: &Number) -> Option<String> {
    n.fraction.as_ref().map(|f| format!("{}.{f}", n.digits))
}

fn parse_numeric_date(t: &str, today: NaiveDate) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(t, "%Y-%m-%d")
        .ok()
        .or_else(|| NaiveDate::parse_from_str(t, "%m/%d/%Y").ok())
        .or_else(|| NaiveDate::parse_from_str(&format!("{t}/{}", today.year()), "%m/%d/%Y").ok())
}

fn identifier(spec: &SlotSpec, toks: &[Tok]) -> Extracted {
    let Some(p) = &spec.pattern else {
        return digits(spec, toks);
    };
    let Ok(re) = regex::Regex::new(&format!("^(?i:{p})$")) else {
        return Extracted::Nothing;
    };
    let mut candidates = digit_runs(toks);
    // Spelled letters + digits: "n w one two three" → "NW123".
    let compact: String = toks
        .iter()
        .map(|t| match t {
            Tok::Word(w) => w.clone(),
            Tok::Num(n) => n.digits.clone(),
        })
        .collect();
    for t in toks {
        if let Tok::Word(w) = t {
            candidates.push(w.clone());
        }
    }
    for start in 0..toks.len() {
        let mut s = String::new();
        for t in &toks[start..] {
            match t {
                Tok::Word(w) if w.len() <= 2 || w.chars().any(|c| c.is_ascii_digit()) => {
                    s.push_str(w)
                }
                Tok::Num(n) => s.push_str(&n.digits),
                _ => break,
            }
            candidates.push(s.clone());
        }
    }
    candidates.push(compact);
    match candidates.into_iter().find(|c| re.is_match(c)) {
        Some(c) => Extracted::Value(SlotValue::Text(c.to_uppercase())),
        None => Extracted::Nothing,
    }
}

/// Yes / no, with negation winning ("no that's not right").
pub fn yes_no(toks: &[Tok]) -> Option<bool> {
    let ws: Vec<&str> = toks
        .iter()
        .filter_map(|t| match t {
            Tok::Word(w) => Some(w.as_str()),
            _ => None,
        })
        .collect();
    let has = |x: &str| ws.contains(&x);
    let pair = |a: &str, b: &str| ws.windows(2).any(|p| p[0] == a && p[1] == b);
    let neg = [
        "no",
        "nope",
        "nah",
        "not",
        "don't",
        "dont",
        "wrong",
        "incorrect",
        "negative",
        "cancel",
    ]
    .iter()
    .any(|w| has(w));
    let pos = [
        "yes",
        "yeah",
        "yep",
        "yup",
        "correct",
        "right",
        "sure",
        "ok",
        "okay",
        "absolutely",
        "definitely",
        "affirmative",
        "please",
        "exactly",
        "alright",
    ]
    .iter()
    .any(|w| has(w))
        || pair("go", "ahead")
        || pair("do", "it")
        || pair("that's", "it");
    if pair("no", "problem") && pos {
        return Some(true);
    }
    match (pos, neg) {
        (_, true) => Some(false),
        (true, false) => Some(true),
        _ => None,
    }
}

const NOT_NAMES: &[&str] = &[
    "calling", "here", "and", "i", "i'm", "im", "is", "the", "a", "please", "thanks", "thank",
    "you", "yes", "no", "from", "about", "with", "my", "it", "it's", "speaking", "hi", "hello",
    "um", "uh", "so", "well", "just", "to", "for", "okay", "ok", "sure", "yeah", "right", "that",
    "this", "not", "want", "need", "would", "like", "can", "on", "in", "at", "of", "have", "had",
    "was", "calling", "again", "today",
];

fn name(toks: &[Tok]) -> Extracted {
    let ws: Vec<&str> = toks
        .iter()
        .map(|t| match t {
            Tok::Word(w) => w.as_str(),
            Tok::Num(_) => "#",
        })
        .collect();
    let cue_end = ws
        .windows(3)
        .position(|p| p == ["my", "name", "is"] || p == ["name", "is", "a"])
        .map(|i| i + 3)
        .or_else(|| {
            ws.windows(2)
                .position(|p| {
                    p == ["this", "is"]
                        || p == ["name's", "is"]
                        || p == ["it", "is"]
                        || p == ["i", "am"]
                })
                .map(|i| i + 2)
                .or_else(|| {
                    ws.iter()
                        .position(|w| matches!(*w, "i'm" | "it's" | "name's" | "im"))
                        .map(|i| i + 1)
                })
        });
    let (start, bare) = match cue_end {
        Some(i) => (i, false),
        None => (0, true),
    };
    let taken: Vec<&str> = ws[start..]
        .iter()
        .take_while(|w| {
            !NOT_NAMES.contains(w)
                && w.chars()
                    .all(|c| c.is_alphabetic() || c == '\'' || c == '-')
        })
        .take(3)
        .copied()
        .collect();
    // Without a cue, only a short answer that is nothing but a name counts.
    if taken.is_empty() || (bare && (taken.len() != ws.len() || ws.len() > 3)) {
        return Extracted::Nothing;
    }
    let cap = |w: &str| {
        let mut c = w.chars();
        c.next()
            .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
            .unwrap_or_default()
    };
    Extracted::Value(SlotValue::Text(
        taken.iter().map(|w| cap(w)).collect::<Vec<_>>().join(" "),
    ))
}

fn choice(spec: &SlotSpec, toks: &[Tok]) -> Extracted {
    let text = format!(
        " {} ",
        toks.iter()
            .map(|t| match t {
                Tok::Word(w) => w.clone(),
                Tok::Num(n) => n.digits.clone(),
            })
            .collect::<Vec<_>>()
            .join(" ")
    );
    // Longest synonym wins so "credit card" beats "card".
    let mut best: Option<(&String, usize)> = None;
    for (canon, syns) in &spec.values {
        for s in syns.iter().chain(std::iter::once(canon)) {
            let s = s.to_lowercase().replace('_', " ");
            if text.contains(&format!(" {s} ")) && best.is_none_or(|(_, l)| s.len() > l) {
                best = Some((canon, s.len()));
            }
        }
    }
    match best {
        Some((c, _)) => Extracted::Value(SlotValue::Text(c.clone())),
        None => Extracted::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        // A Sunday.
        NaiveDate::from_ymd_opt(2026, 11, 22).unwrap()
    }

    fn spec(kind: SlotKind) -> SlotSpec {
        SlotSpec {
            kind: Some(kind),
            ..Default::default()
        }
    }

    fn val(s: &SlotSpec, text: &str) -> String {
        match extract(s, text, today()) {
            Extracted::Value(v) => v.canonical(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn digit_strings() {
        let s = SlotSpec {
            length: Some(4),
            ..spec(SlotKind::Digits)
        };
        assert_eq!(val(&s, "it ends in four five six one"), "4561");
        assert_eq!(val(&s, "4561"), "4561");
        assert_eq!(val(&s, "four, five, six, one."), "4561");
        assert_eq!(val(&s, "double four six one"), "4461");
        assert_eq!(val(&s, "forty five sixty one"), "4561");
        assert!(matches!(
            extract(&s, "four five six", today()),
            Extracted::Invalid(_)
        ));
        assert_eq!(extract(&s, "i don't know", today()), Extracted::Nothing);
    }

    #[test]
    fn money_amounts() {
        let s = spec(SlotKind::Money);
        assert_eq!(val(&s, "one hundred and fifty dollars"), "150.00 USD");
        assert_eq!(val(&s, "$150"), "150.00 USD");
        assert_eq!(val(&s, "twenty dollars and fifty cents"), "20.50 USD");
        assert_eq!(val(&s, "about two thousand pounds"), "2000.00 GBP");
        assert_eq!(val(&s, "$12.99"), "12.99 USD");
        assert_eq!(val(&s, "five thousand"), "5000.00 USD");
        let bounded = SlotSpec {
            min: Some(1000.0),
            ..spec(SlotKind::Money)
        };
        assert!(matches!(
            extract(&bounded, "fifty dollars", today()),
            Extracted::Invalid(_)
        ));
    }

    #[test]
    fn dates_relative_and_absolute() {
        let s = spec(SlotKind::Date);
        assert_eq!(val(&s, "tomorrow"), "2026-11-23");
        assert_eq!(val(&s, "yesterday"), "2026-11-21");
        assert_eq!(val(&s, "next friday"), "2026-11-27");
        assert_eq!(val(&s, "last tuesday"), "2026-11-17");
        assert_eq!(val(&s, "on the third of december"), "2026-12-03");
        assert_eq!(val(&s, "march twenty first"), "2027-03-21");
        assert_eq!(val(&s, "in two weeks"), "2026-12-06");
        assert_eq!(val(&s, "three days ago"), "2026-11-19");
        assert_eq!(val(&s, "the day after tomorrow"), "2026-11-24");
        assert_eq!(val(&s, "2026-12-01"), "2026-12-01");
        // Absurd spans are not dates (and must not panic).
        assert_eq!(
            extract(&s, "999999999999 days ago", today()),
            Extracted::Nothing
        );
        let past = SlotSpec {
            direction: Some("past".into()),
            ..spec(SlotKind::Date)
        };
        assert_eq!(val(&past, "on tuesday"), "2026-11-17");
        assert_eq!(val(&past, "march fifth"), "2026-03-05");
        assert!(matches!(
            extract(&past, "next friday", today()),
            Extracted::Invalid(_)
        ));
    }

    #[test]
    fn identifiers() {
        let s = SlotSpec {
            pattern: Some("[0-9]{6}".into()),
            ..spec(SlotKind::Identifier)
        };
        assert_eq!(
            val(&s, "my order number is one two three four five six"),
            "123456"
        );
        let s = SlotSpec {
            pattern: Some("NW[0-9]{5}".into()),
            ..spec(SlotKind::Identifier)
        };
        assert_eq!(val(&s, "it's n w one two three four five"), "NW12345");
        assert_eq!(val(&s, "NW12345"), "NW12345");
    }

    /// Which slots are asked for as a string of digits (keys gathered until
    /// `#`, the digits recogniser).
    #[test]
    fn digit_strings_are_told_from_other_identifiers() {
        let id = |p: &str| SlotSpec {
            pattern: Some(p.into()),
            ..spec(SlotKind::Identifier)
        };
        assert_eq!(id("[0-9]{6}").digit_string(), Some((6, 6)));
        assert_eq!(id("^\\d{8,10}$").digit_string(), Some((8, 10)));
        assert_eq!(id("NW[0-9]{5}").digit_string(), None);
        assert_eq!(id("[0-9]{6}[A-Z]").digit_string(), None);
        assert_eq!(id("[0-9]{9,3}").digit_string(), None);
        let four = SlotSpec {
            length: Some(4),
            ..spec(SlotKind::Digits)
        };
        assert_eq!(four.digit_string(), Some((4, 4)));
        let bare = SlotSpec {
            min_length: Some(8),
            ..spec(SlotKind::Identifier)
        };
        assert_eq!(bare.digit_string(), Some((8, usize::MAX)));
        assert_eq!(spec(SlotKind::Number).digit_string(), None);
    }

    #[test]
    fn yes_no_and_names_and_choices() {
        let s = spec(SlotKind::YesNo);
        assert_eq!(val(&s, "yes please"), "yes");
        assert_eq!(val(&s, "yeah go ahead"), "yes");
        assert_eq!(val(&s, "no that's not right"), "no");
        assert_eq!(val(&s, "nope"), "no");
        assert_eq!(
            extract(&s, "what are your hours", today()),
            Extracted::Nothing
        );
        let n = spec(SlotKind::Name);
        assert_eq!(val(&n, "my name is john smith"), "John Smith");
        assert_eq!(
            val(&n, "hi this is maria garcia calling about my card"),
            "Maria Garcia"
        );
        assert_eq!(val(&n, "peter"), "Peter");
        assert_eq!(
            extract(&n, "i want to check my balance please", today()),
            Extracted::Nothing
        );
        let mut c = spec(SlotKind::Choice);
        c.values
            .insert("mortgage".into(), vec!["home loan".into(), "house".into()]);
        c.values
            .insert("personal".into(), vec!["personal loan".into()]);
        c.values.insert(
            "car".into(),
            vec!["auto loan".into(), "car loan".into(), "vehicle".into()],
        );
        assert_eq!(val(&c, "a home loan i think"), "mortgage");
        assert_eq!(val(&c, "for a car"), "car");
        assert_eq!(extract(&c, "i'm not sure", today()), Extracted::Nothing);
    }

    #[test]
    fn spoken_forms_for_the_ear() {
        assert_eq!(
            SlotValue::Text("4561".into()).spoken(Some(SlotKind::Digits), Lang::Es),
            "4 5 6 1"
        );
        let money = SlotValue::Money {
            amount: 1250.5,
            currency: "USD".into(),
        };
        assert_eq!(money.spoken(None, Lang::En), "1250 dollars and 50 cents");
        let day = SlotValue::Date(NaiveDate::from_ymd_opt(2026, 11, 23).unwrap());
        assert_eq!(day.spoken(None, Lang::En), "Monday November the 23rd");
        assert_eq!(SlotValue::Bool(true).spoken(None, Lang::Es), "sí");
    }
}
