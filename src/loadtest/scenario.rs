//! Load-test scenario files (YAML): callers, each a list of steps (say a
//! recorded WAV, interrupt the bot, press keys) with optional checks on the
//! bot's spoken reply.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::client::{audio, Step};
use crate::nlu::lang::Lang;

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

/// Words the transcribed reply must contain (case and punctuation ignored).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// At least one of these.
    #[serde(default)]
    pub any: Vec<String>,
    /// Every one of these.
    #[serde(default)]
    pub all: Vec<String>,
}

impl Expect {
    pub fn is_empty(&self) -> bool {
        self.any.is_empty() && self.all.is_empty()
    }

    /// Whether `heard` (a transcript) satisfies the expectation.
    pub fn matches(&self, heard: &str) -> bool {
        let norm = |s: &str| {
            s.to_lowercase()
                .chars()
                .map(|c| if c.is_alphanumeric() { c } else { ' ' })
                .collect::<String>()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        let h = format!(" {} ", norm(heard));
        let has = |w: &String| h.contains(&format!(" {} ", norm(w)));
        (self.any.is_empty() || self.any.iter().any(has)) && self.all.iter().all(has)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// A WAV (any sample rate) spoken once the bot has answered and is quiet.
    #[serde(default)]
    pub say: Option<PathBuf>,
    /// A WAV spoken over the bot's reply, `after_ms` into it.
    #[serde(default)]
    pub interrupt: Option<PathBuf>,
    #[serde(default)]
    pub after_ms: Option<u64>,
    /// Keypad digits, pressed once the bot is quiet.
    #[serde(default)]
    pub dtmf: Option<String>,
    /// Checks on the bot's reply to this step.
    #[serde(default)]
    pub expect: Option<Expect>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CallerSpec {
    pub name: String,
    /// Relative share of calls that play this caller.
    #[serde(default = "one")]
    pub weight: u32,
    /// Caller ID presented.
    #[serde(default = "default_from")]
    pub from: String,
    /// Checks on the greeting.
    #[serde(default)]
    pub greeting: Option<Expect>,
    pub steps: Vec<StepSpec>,
}

fn one() -> u32 {
    1
}

fn default_from() -> String {
    "+15555550100".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The language the bot answers these callers in ("en" when not
    /// given): their replies are transcribed in it for the checks.
    #[serde(default)]
    pub language: Option<String>,
    pub callers: Vec<CallerSpec>,
}

/// A caller with its audio loaded (8 kHz), ready to dial.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub weight: u32,
    pub from: String,
    pub greeting: Option<Expect>,
    pub steps: Vec<Step>,
    /// One per step: what its reply must contain.
    pub expects: Vec<Option<Expect>>,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    /// What the bot's replies are checked in.
    pub language: Lang,
    pub callers: Vec<Caller>,
}

impl Scenario {
    /// Reads a scenario; WAV paths are relative to the file's folder.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, &path.display().to_string(), base)
    }

    pub fn parse(text: &str, origin: &str, base: &Path) -> Result<Scenario, ScenarioError> {
        let invalid = |reason: String| ScenarioError::Invalid {
            path: origin.to_string(),
            reason,
        };
        let spec: ScenarioSpec =
            serde_norway::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if spec.callers.is_empty() {
            return Err(invalid("no callers".into()));
        }
        let language = match spec.language.as_deref() {
            None => Lang::En,
            Some(code) => Lang::parse(code).ok_or_else(|| {
                let known: Vec<&str> = Lang::ALL.iter().map(|l| l.code()).collect();
                invalid(format!("language {code:?} is not one of {known:?}"))
            })?,
        };
        let mut callers = Vec::new();
        for c in spec.callers {
            if c.steps.is_empty() {
                return Err(invalid(format!("caller {:?} has no steps", c.name)));
            }
            let mut steps = Vec::new();
            let mut expects = Vec::new();
            for (i, s) in c.steps.iter().enumerate() {
                let at = |m: &str| invalid(format!("caller {:?}, step {}: {m}", c.name, i + 1));
                let wav = |p: &PathBuf| {
                    let full = base.join(p);
                    audio::read_wav_8k(&full).map_err(|e| at(&e.to_string()))
                };
                let step = match (&s.say, &s.interrupt, &s.dtmf) {
                    (Some(p), None, None) => Step::Say(wav(p)?),
                    (None, Some(p), None) => Step::Interrupt {
                        audio: wav(p)?,
                        after_ms: s.after_ms.unwrap_or(1000),
                    },
                    (None, None, Some(d)) => {
                        if d.is_empty() || !d.chars().all(|c| "0123456789*#".contains(c)) {
                            return Err(at("dtmf takes digits, * and #"));
                        }
                        Step::Dtmf(d.clone())
                    }
                    _ => return Err(at("give exactly one of say, interrupt, dtmf")),
                };
                if s.after_ms.is_some() && s.interrupt.is_none() {
                    return Err(at("after_ms belongs to interrupt"));
                }
                steps.push(step);
                expects.push(s.expect.clone().filter(|e| !e.is_empty()));
            }
            callers.push(Caller {
                name: c.name,
                weight: c.weight.max(1),
                from: c.from,
                greeting: c.greeting.filter(|e| !e.is_empty()),
                steps,
                expects,
            });
        }
        Ok(Scenario {
            name: spec.name,
            language,
            callers,
        })
    }

    /// Picks a caller by weight.
    pub fn pick(&self, rng: &mut fastrand::Rng) -> usize {
        let total: u32 = self.callers.iter().map(|c| c.weight).sum();
        let mut r = rng.u32(0..total);
        for (i, c) in self.callers.iter().enumerate() {
            if r < c.weight {
                return i;
            }
            r -= c.weight;
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_match_words_not_substrings() {
        let e = Expect {
            any: vec!["saturday".into(), "weekend".into()],
            all: vec!["open".into()],
        };
        assert!(e.matches("We're open on Saturday, from nine."));
        assert!(!e.matches("We're opened on Saturday."));
        assert!(!e.matches("We are open on Sunday."));
        let phrase = Expect {
            any: vec!["main street".into()],
            all: vec![],
        };
        assert!(phrase.matches("One hundred Main Street, downtown."));
    }

    #[test]
    fn bad_scenarios_are_explained() {
        let base = Path::new(".");
        let err = |y: &str| Scenario::parse(y, "s.yaml", base).unwrap_err().to_string();
        assert!(err("name: x\ncallers: []\n").contains("no callers"));
        assert!(
            err("name: x\ncallers:\n  - name: a\n    steps:\n      - dtmf: '12x'\n")
                .contains("step 1: dtmf takes digits")
        );
        assert!(err(
            "name: x\ncallers:\n  - name: a\n    steps:\n      - {dtmf: '1', say: a.wav}\n"
        )
        .contains("exactly one"));
        assert!(
            err("name: x\ncallers:\n  - name: a\n    steps:\n      - say: missing.wav\n")
                .contains("missing.wav")
        );
        assert!(err("name: x\nbogus: 1\ncallers: []\n").contains("bogus"));
    }

    #[test]
    fn callers_are_picked_by_weight() {
        let s = Scenario {
            name: "x".into(),
            language: Lang::En,
            callers: ["a", "b"]
                .iter()
                .zip([1, 3])
                .map(|(n, w)| Caller {
                    name: n.to_string(),
                    weight: w,
                    from: String::new(),
                    greeting: None,
                    steps: vec![Step::Dtmf("1".into())],
                    expects: vec![None],
                })
                .collect(),
        };
        let mut rng = fastrand::Rng::with_seed(7);
        let b = (0..4000).filter(|_| s.pick(&mut rng) == 1).count();
        assert!((2700..3300).contains(&b), "{b}");
    }
}
