//! A small but real dialogue: greeting, FAQ answers by best match, "repeat
//! that", "goodbye", a human on request or by pressing 0, DTMF shortcuts,
//! and a fallback prompt (escalating to a human after repeated misses).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::Deserialize;

use super::{Action, CallMeta, Dialogue, DialogueFactory, Reply, TurnInput};

#[derive(Debug, thiserror::Error)]
pub enum FaqError {
    #[error("cannot read FAQ file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("FAQ file {path} is invalid: {message}")]
    Parse { path: String, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaqFile {
    pub greeting: String,
    pub fallback: String,
    pub goodbye: String,
    pub transfer: String,
    #[serde(default = "default_target")]
    pub transfer_target: String,
    #[serde(default = "default_misses")]
    pub max_misses: u32,
    #[serde(default = "default_threshold")]
    pub threshold: f32,
    #[serde(default)]
    pub faq: Vec<FaqEntry>,
}

fn default_target() -> String {
    "agents".into()
}
fn default_misses() -> u32 {
    2
}
fn default_threshold() -> f32 {
    0.35
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaqEntry {
    pub id: String,
    pub questions: Vec<String>,
    pub answer: String,
    #[serde(default)]
    pub dtmf: Option<String>,
}

pub const DEFAULT_FAQ: &str = include_str!("../../config/faq.toml");

impl FaqFile {
    pub fn parse(text: &str, origin: &str) -> Result<Self, FaqError> {
        let f: FaqFile = toml::from_str(text).map_err(|e| FaqError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
        let mut ids = HashSet::new();
        for e in &f.faq {
            if !ids.insert(e.id.clone()) {
                return Err(FaqError::Parse {
                    path: origin.into(),
                    message: format!("duplicate FAQ id {:?}", e.id),
                });
            }
            if e.questions.is_empty() || e.answer.trim().is_empty() {
                return Err(FaqError::Parse {
                    path: origin.into(),
                    message: format!("FAQ {:?} needs questions and an answer", e.id),
                });
            }
        }
        Ok(f)
    }

    pub fn load(path: Option<&Path>) -> Result<Self, FaqError> {
        match path {
            None => Self::parse(DEFAULT_FAQ, "<embedded faq.toml>"),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| FaqError::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                Self::parse(&text, &p.display().to_string())
            }
        }
    }
}

const STOPWORDS: &[&str] = &[
    "a", "an", "the", "i", "me", "my", "you", "your", "we", "our", "is", "are", "am", "was", "be",
    "do", "does", "did", "to", "of", "in", "on", "for", "at", "it", "its", "and", "or", "can",
    "could", "would", "will", "please", "what", "whats", "how", "hi", "hello", "um", "uh", "so",
    "just", "like", "there", "this", "that", "with", "about", "tell", "know", "want", "need", "id",
    "im", "get", "have", "has", "hey", "okay", "ok", "yeah", "well",
];

/// Lower-case words without punctuation, as ASR and people both produce them.
pub fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .map(|w| w.replace('\'', ""))
        .filter(|w| !w.is_empty())
        .collect()
}

/// Light stemming so "opening"/"open", "hours"/"hour" meet.
fn stem(w: &str) -> String {
    for suf in ["ing", "ed", "es", "s"] {
        if w.len() > suf.len() + 2 && w.ends_with(suf) {
            return w[..w.len() - suf.len()].to_string();
        }
    }
    w.to_string()
}

fn terms(text: &str) -> Vec<String> {
    words(text)
        .into_iter()
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .map(|w| stem(&w))
        .collect()
}

/// TF-IDF cosine matcher over the FAQ's example questions.
pub struct FaqIndex {
    docs: Vec<(usize, HashMap<String, f32>)>,
    idf: HashMap<String, f32>,
}

impl FaqIndex {
    pub fn new(entries: &[FaqEntry]) -> Self {
        let mut raw = Vec::new();
        let mut df: HashMap<String, f32> = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            for q in &e.questions {
                let t = terms(q);
                for w in t.iter().collect::<HashSet<_>>() {
                    *df.entry(w.clone()).or_default() += 1.0;
                }
                raw.push((i, t));
            }
        }
        let n = raw.len() as f32;
        let idf: HashMap<String, f32> = df
            .into_iter()
            .map(|(w, d)| (w, (1.0 + n / d).ln()))
            .collect();
        let docs = raw
            .into_iter()
            .map(|(i, t)| (i, Self::vector(&t, &idf)))
            .collect();
        Self { docs, idf }
    }

    fn vector(t: &[String], idf: &HashMap<String, f32>) -> HashMap<String, f32> {
        let mut v: HashMap<String, f32> = HashMap::new();
        for w in t {
            *v.entry(w.clone()).or_default() += idf.get(w).copied().unwrap_or(0.0);
        }
        let norm = v.values().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.values_mut().for_each(|x| *x /= norm);
        }
        v
    }

    /// Best entry and its cosine similarity.
    pub fn best(&self, text: &str) -> Option<(usize, f32)> {
        let q = Self::vector(&terms(text), &self.idf);
        if q.is_empty() {
            return None;
        }
        self.docs
            .iter()
            .map(|(i, d)| {
                (
                    *i,
                    q.iter()
                        .map(|(w, x)| x * d.get(w).copied().unwrap_or(0.0))
                        .sum::<f32>(),
                )
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }
}

fn has_phrase(text: &str, phrases: &[&str]) -> bool {
    let w = format!(" {} ", words(text).join(" "));
    phrases.iter().any(|p| w.contains(&format!(" {p} ")))
}

const REPEAT: &[&str] = &[
    "repeat",
    "say that again",
    "say again",
    "pardon",
    "come again",
    "didnt catch",
    "one more time",
];
const GOODBYE: &[&str] = &[
    "goodbye",
    "good bye",
    "bye",
    "thats all",
    "that is all",
    "hang up",
    "nothing else",
    "no thanks bye",
];
const HUMAN: &[&str] = &[
    "agent",
    "human",
    "representative",
    "real person",
    "operator",
    "someone",
    "speak to a person",
    "talk to a person",
];

pub struct FaqBot {
    cfg: std::sync::Arc<FaqFile>,
    index: std::sync::Arc<FaqIndex>,
    last: Option<Reply>,
    misses: u32,
}

impl FaqBot {
    fn reply(&mut self, r: Reply) -> Reply {
        if !r.actions.is_empty() || r.source != "repeat" {
            self.last = Some(r.clone());
        }
        r
    }

    fn answer(&mut self, i: usize) -> Reply {
        self.misses = 0;
        let e = &self.cfg.faq[i];
        self.reply(Reply {
            say: e.answer.clone(),
            actions: vec![],
            source: format!("faq:{}", e.id),
        })
    }

    fn transfer(&mut self, reason: &str) -> Reply {
        self.reply(Reply {
            say: self.cfg.transfer.clone(),
            actions: vec![Action::Transfer {
                priority: 0,
                target: self.cfg.transfer_target.clone(),
                reason: reason.into(),
            }],
            source: "transfer".into(),
        })
    }
}

impl Dialogue for FaqBot {
    fn greeting(&mut self, _call: &CallMeta) -> Reply {
        let r = Reply {
            say: self.cfg.greeting.clone(),
            actions: vec![],
            source: "greeting".into(),
        };
        self.reply(r)
    }

    fn on_turn(&mut self, _call: &CallMeta, turn: &TurnInput) -> Reply {
        if let Some(d) = &turn.dtmf {
            if d == "0" {
                return self.transfer("caller pressed 0");
            }
            if let Some(i) = self
                .cfg
                .faq
                .iter()
                .position(|e| e.dtmf.as_deref() == Some(d.as_str()))
            {
                return self.answer(i);
            }
        }
        let text = turn.transcript.clone().unwrap_or_default();
        if has_phrase(&text, REPEAT) {
            if let Some(last) = self.last.clone() {
                return Reply {
                    source: "repeat".into(),
                    ..last
                };
            }
        }
        if has_phrase(&text, GOODBYE) {
            return self.reply(Reply {
                say: self.cfg.goodbye.clone(),
                actions: vec![Action::Hangup],
                source: "goodbye".into(),
            });
        }
        if has_phrase(&text, HUMAN) {
            return self.transfer("caller asked for a person");
        }
        if let Some((i, score)) = self.index.best(&text) {
            if score >= self.cfg.threshold {
                return self.answer(i);
            }
        }
        self.misses += 1;
        if self.misses > self.cfg.max_misses {
            self.misses = 0;
            return self.transfer("bot could not help");
        }
        // `{transcript}` in the fallback quotes what was heard back.
        self.reply(Reply {
            say: self.cfg.fallback.replace("{transcript}", text.trim()),
            actions: vec![],
            source: "fallback".into(),
        })
    }
}

pub struct FaqFactory {
    cfg: std::sync::Arc<FaqFile>,
    index: std::sync::Arc<FaqIndex>,
}

impl FaqFactory {
    pub fn new(cfg: FaqFile) -> Self {
        let index = std::sync::Arc::new(FaqIndex::new(&cfg.faq));
        Self {
            cfg: std::sync::Arc::new(cfg),
            index,
        }
    }
}

impl DialogueFactory for FaqFactory {
    fn new_dialogue(&self) -> Box<dyn Dialogue> {
        Box::new(FaqBot {
            cfg: self.cfg.clone(),
            index: self.index.clone(),
            last: None,
            misses: 0,
        })
    }

    fn prompts(&self) -> Vec<String> {
        let mut p = vec![
            self.cfg.greeting.clone(),
            self.cfg.fallback.clone(),
            self.cfg.goodbye.clone(),
            self.cfg.transfer.clone(),
        ];
        p.extend(self.cfg.faq.iter().map(|e| e.answer.clone()));
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bot() -> Box<dyn Dialogue> {
        FaqFactory::new(FaqFile::load(None).unwrap()).new_dialogue()
    }

    fn say(b: &mut Box<dyn Dialogue>, text: &str) -> Reply {
        b.on_turn(
            &CallMeta::default(),
            &TurnInput {
                transcript: Some(text.into()),
                ..Default::default()
            },
        )
    }

    #[test]
    fn answers_faq_questions_phrased_like_asr_output() {
        let mut b = bot();
        assert_eq!(
            say(&mut b, "what time do you open on saturday").source,
            "faq:opening-hours"
        );
        assert_eq!(
            say(&mut b, "When are you open?").source,
            "faq:opening-hours"
        );
        assert_eq!(
            say(&mut b, "how do i reset my password").source,
            "faq:password-reset"
        );
        assert_eq!(say(&mut b, "I lost my card").source, "faq:lost-card");
        assert_eq!(
            say(&mut b, "where is your office located").source,
            "faq:address"
        );
    }

    #[test]
    fn repeat_goodbye_human_and_fallback() {
        let mut b = bot();
        let a = say(&mut b, "what are your opening hours");
        let r = say(&mut b, "sorry can you repeat that");
        assert_eq!(r.say, a.say);
        assert_eq!(r.source, "repeat");
        let g = say(&mut b, "ok thanks goodbye");
        assert_eq!(g.actions, vec![Action::Hangup]);
        let h = say(&mut b, "let me talk to a real person");
        assert!(matches!(h.actions[0], Action::Transfer { .. }));
        let f = say(&mut b, "the purple elephant sings");
        assert_eq!(f.source, "fallback");
    }

    #[test]
    fn repeated_misses_escalate_to_a_human() {
        let mut b = bot();
        assert_eq!(say(&mut b, "blah blah").source, "fallback");
        assert_eq!(say(&mut b, "zebra crossing").source, "fallback");
        assert_eq!(say(&mut b, "quantum soup").source, "transfer");
    }

    #[test]
    fn fallback_can_quote_the_caller() {
        let mut f = FaqFile::load(None).unwrap();
        f.fallback = "Did you say {transcript}?".into();
        let mut b = FaqFactory::new(f).new_dialogue();
        assert_eq!(
            say(&mut b, "purple elephants ").say,
            "Did you say purple elephants?"
        );
    }

    #[test]
    fn dtmf_reaches_the_dialogue() {
        let mut b = bot();
        let r = b.on_turn(
            &CallMeta::default(),
            &TurnInput {
                dtmf: Some("1".into()),
                ..Default::default()
            },
        );
        assert_eq!(r.source, "faq:opening-hours");
        let r = b.on_turn(
            &CallMeta::default(),
            &TurnInput {
                dtmf: Some("0".into()),
                ..Default::default()
            },
        );
        assert!(matches!(r.actions[0], Action::Transfer { .. }));
    }

    #[test]
    fn invalid_faq_files_are_rejected_with_the_file_name() {
        let e = FaqFile::parse("greeting = 1", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.toml"), "{e}");
        let dup = r#"greeting="g"
fallback="f"
goodbye="b"
transfer="t"
[[faq]]
id="a"
questions=["q"]
answer="x"
[[faq]]
id="a"
questions=["q"]
answer="y"
"#;
        assert!(FaqFile::parse(dup, "d.toml")
            .unwrap_err()
            .to_string()
            .contains("duplicate"));
    }
}
