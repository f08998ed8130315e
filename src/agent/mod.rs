//! An agent as contact-center teams write it: a directory of TOML files
//! (agent, intents, flows), Markdown knowledge articles and conversation
//! tests. Loading validates everything and names the file and line of the
//! first problem, so a typo never reaches a caller.
//!
//! ```text
//! agents/bank/
//!   agent.toml     name, greeting, prompts, thresholds, slots, transfer queues
//!   intents.toml   [[intent]] name, examples, builtin (transfer/repeat/help/goodbye)
//!   flows.toml     [[flow]] intent + [[flow.step]] collect/confirm/lookup/say/transfer
//!   kb/*.md        +++ TOML front matter (title, questions) +++ then the spoken answer
//!   routing.toml   priority routing: signals → score → continue / offer human / bypass
//!   tests/*.toml   conversation tests run by `cargo test` and `attendant chat --script`
//! ```

pub mod kb;
pub mod locale;
pub mod testing;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::nlu::embed::Embedder;
use crate::nlu::entities::{SlotKind, SlotSpec};
use crate::nlu::intent::{IntentModel, Scope, OUT_OF_SCOPE};
use crate::nlu::NluError;

#[derive(Debug, Error)]
pub enum AgentError {
    #[error("{file}:{line}: {msg}")]
    At {
        file: PathBuf,
        line: usize,
        msg: String,
    },
    #[error("{file}: {msg}")]
    File { file: PathBuf, msg: String },
    #[error(transparent)]
    Nlu(#[from] NluError),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    pub agent: AgentInfo,
    #[serde(default)]
    pub nlu: NluSettings,
    pub prompts: Prompts,
    #[serde(default)]
    pub slot: BTreeMap<String, SlotDef>,
    #[serde(default)]
    pub transfer: TransferSettings,
    #[serde(default)]
    pub csat: CsatSettings,
}

/// The opt-in satisfaction survey at the end of a call (1–5, keypad or voice).
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CsatSettings {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "default_csat_q")]
    pub question: String,
    #[serde(default = "default_csat_thanks")]
    pub thanks: String,
}

fn default_csat_q() -> String {
    "Before you go: on a scale of one to five, how satisfied were you with this call? Press or say a number.".into()
}
fn default_csat_thanks() -> String {
    "Thank you for your feedback.".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentInfo {
    pub name: String,
    pub greeting: String,
    /// Greeting for a caller recognised by caller ID. `{first_name}`,
    /// `{tier}` and `{history}` ("I see you called yesterday about …") are
    /// filled in.
    pub greeting_known: Option<String>,
    /// How `{history}` reads; `{when}` and `{topic}` are filled in.
    #[serde(default = "default_history")]
    pub history: String,
    /// The language the agent's own files are written in.
    #[serde(default = "default_lang")]
    pub language: String,
    /// Every language the agent answers in (`language` among them); each
    /// other one needs `lang/<code>.toml` (see `agent::locale`).
    #[serde(default)]
    pub languages: Vec<String>,
}

fn default_history() -> String {
    "I see you called {when} about {topic}. ".into()
}

fn default_lang() -> String {
    "en".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NluSettings {
    /// How a turn is judged out of scope.
    pub out_of_scope: OutOfScopeMode,
    /// `threshold`: below this top-intent probability the turn is out of
    /// scope.
    pub intent_threshold: f32,
    /// `calibrated`: the in-scope accuracy the rule may give up (on the
    /// held-out examples) to catch requests the agent does not handle.
    pub max_accuracy_drop: f64,
    /// A knowledge article is spoken at or above this confidence…
    pub kb_answer: f32,
    /// …and offered as a clarifying question at or above this one.
    pub kb_clarify: f32,
    /// Fine-tune the sentence encoder's top layers on this agent's examples
    /// when it is built (cached by a hash of model and examples under
    /// `models/nlu/tuned/`, so only the first start after a change pays).
    pub fine_tune: bool,
    /// Passes over the examples when fine-tuning.
    pub fine_tune_epochs: usize,
    /// The sentence encoder for the agent's own language, a folder under
    /// `models/nlu/` (default: the server's, all-MiniLM-L6-v2). Other
    /// languages keep the multilingual one.
    pub encoder: Option<String>,
}

/// `nlu.out_of_scope`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OutOfScopeMode {
    /// `intent_threshold` on the classifier's top probability.
    Threshold,
    /// Signal and threshold chosen at load on the agent's own examples,
    /// with some intents left out as unknown (see `nlu::scope`).
    Calibrated,
}

impl Default for NluSettings {
    fn default() -> Self {
        Self {
            out_of_scope: OutOfScopeMode::Threshold,
            intent_threshold: 0.45,
            max_accuracy_drop: 0.03,
            kb_answer: 0.62,
            kb_clarify: 0.45,
            fine_tune: false,
            fine_tune_epochs: crate::nlu::tune::TuneParams::default().epochs,
            encoder: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Prompts {
    pub fallback: String,
    pub help: String,
    pub goodbye: String,
    pub transfer: String,
    pub anything_else: String,
    pub what_else: String,
    /// Said when re-prompts run out and the caller goes to a person.
    pub escalate: String,
    /// `{title}` is the article's title.
    #[serde(default = "default_clarify")]
    pub clarify: String,
    /// Said before resuming a flow after a digression; `{prompt}` follows.
    #[serde(default = "default_resume")]
    pub resume: String,
    /// After `max_fallbacks` misses in a row, offer a person.
    #[serde(default = "default_offer")]
    pub offer_human: String,
    /// Said when identity verification failed too often; a yes reaches a
    /// person.
    #[serde(default = "default_verify_failed")]
    pub verify_failed: String,
}

fn default_verify_failed() -> String {
    "Sorry, I couldn't verify your identity, so I can't share any account details. Would you like to speak to a member of our team?".into()
}

fn default_clarify() -> String {
    "Are you asking about {title}?".into()
}
fn default_resume() -> String {
    "Now, back to where we were. {prompt}".into()
}
fn default_offer() -> String {
    "I'm having trouble helping with that. Would you like to speak to a person?".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransferSettings {
    /// Queue for "talk to a person" and escalations.
    pub default: String,
    /// Misses in a row before a person is offered.
    pub max_fallbacks: u32,
    /// Tries per slot before escalating.
    pub slot_tries: u32,
    /// Queue transfers go to when the call is in this language
    /// (`es = "queue:spanish"`), instead of the queue the flow names.
    pub language_queues: BTreeMap<String, String>,
}

impl Default for TransferSettings {
    fn default() -> Self {
        Self {
            default: "queue:general".into(),
            max_fallbacks: 2,
            slot_tries: 3,
            language_queues: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SlotDef {
    #[serde(flatten)]
    pub spec: SlotSpec,
    pub prompt: String,
    pub reprompt: Option<String>,
    /// Accept keypad digits for this slot.
    #[serde(default)]
    pub dtmf: bool,
    /// Never echo the value (PINs); logs and records mask it.
    #[serde(default)]
    pub secret: bool,
    /// Keep the value for the rest of the call (identity slots), instead of
    /// asking again when another flow starts.
    #[serde(default)]
    pub keep: bool,
    /// Fill from the recognised caller's record: `latest_order` (their
    /// newest open order) or `only_account` (last 4 digits of their account
    /// when they have exactly one).
    pub from_caller: Option<String>,
    /// Choice slots in another language: how each value is said (the
    /// first of its words there); the value itself otherwise.
    #[serde(skip)]
    pub said_as: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IntentDef {
    pub name: String,
    #[serde(default)]
    pub examples: Vec<String>,
    /// A global intent the manager handles itself, available everywhere.
    pub builtin: Option<Builtin>,
    /// How a later greeting refers to a call about this ("your order").
    pub topic: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Builtin {
    Transfer,
    Repeat,
    Help,
    Goodbye,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct IntentsFile {
    intent: Vec<IntentDef>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct FlowsFile {
    #[serde(default)]
    flow: Vec<FlowDef>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FlowDef {
    pub name: String,
    /// The intent that starts it.
    pub intent: String,
    #[serde(default)]
    pub step: Vec<Step>,
    /// Ask "anything else?" when done (default) or end the call.
    #[serde(default = "yes")]
    pub ask_anything_else: bool,
}

fn yes() -> bool {
    true
}

/// One step of a flow. Exactly one of the verbs is set.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Fill a slot (skipped when already filled).
    pub collect: Option<String>,
    /// Ask a yes/no question.
    pub confirm: Option<String>,
    /// Call a named lookup; its variables become usable in templates.
    pub lookup: Option<String>,
    /// Say something.
    pub say: Option<String>,
    /// Hand the call to this queue (after `say`, if given).
    pub transfer: Option<String>,
    /// Only run this step when the condition holds: `var`, `!var`, `var == value`.
    pub when: Option<String>,
    /// confirm: what to say when the caller says no…
    pub on_no: Option<String>,
    /// …and which slots to clear and ask again (else the flow ends).
    #[serde(default)]
    pub recollect: Vec<String>,
    /// lookup: what to say when it fails; `{reason}` is the lookup's reason.
    pub on_fail: Option<String>,
    /// lookup: slots to clear and re-collect after a failure (else escalate).
    #[serde(default)]
    pub retry: Vec<String>,
    /// transfer: the reason recorded with the hand-off.
    pub reason: Option<String>,
    /// End the call after this step.
    #[serde(default)]
    pub hangup: bool,
}

impl Step {
    pub fn verb(&self) -> &'static str {
        if self.collect.is_some() {
            "collect"
        } else if self.confirm.is_some() {
            "confirm"
        } else if self.lookup.is_some() {
            "lookup"
        } else if self.transfer.is_some() {
            "transfer"
        } else if self.say.is_some() {
            "say"
        } else {
            "none"
        }
    }
}

/// A loaded, validated agent.
#[derive(Debug, Clone)]
pub struct Agent {
    pub dir: PathBuf,
    pub file: AgentFile,
    pub intents: Vec<IntentDef>,
    pub flows: Vec<FlowDef>,
    pub kb: Vec<kb::Article>,
    pub routing: crate::routing::RoutingRules,
    /// The agent in each further language it answers in.
    pub locales: BTreeMap<String, Agent>,
    /// Words from stored data as said in this agent's language (from a
    /// language's catalog; empty for the agent's own).
    pub data_words: BTreeMap<String, String>,
    /// How a caller picks this language from the greeting (localised
    /// agents only).
    pub menu: Option<locale::LanguageMenu>,
}

impl Agent {
    /// A few of the agent's own sentences (one example per intent, in
    /// order, up to `max_chars`), for a recogniser to expect its words:
    /// Whisper reads it as the text said before, which favours "saldo"
    /// over "salvo" in a Spanish call.
    pub fn speech_hint(&self, max_chars: usize) -> String {
        let mut hint = String::new();
        let said = self
            .intents
            .iter()
            .filter(|i| i.name != "out_of_scope")
            .filter_map(|i| i.examples.first());
        for e in said {
            let e = e.trim().trim_end_matches(['.', '?', '!']);
            if e.is_empty() || hint.len() + e.len() + 2 > max_chars {
                continue;
            }
            if !hint.is_empty() {
                hint.push(' ');
            }
            hint.push_str(e);
            hint.push('.');
        }
        hint
    }
}

pub(crate) fn read(path: &Path) -> Result<String, AgentError> {
    std::fs::read_to_string(path).map_err(|e| AgentError::File {
        file: path.to_path_buf(),
        msg: e.to_string(),
    })
}

/// 1-based line of a byte offset.
pub fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Line of the first occurrence of `needle` (for semantic errors found after
/// parsing, where the parser's spans are gone).
pub(crate) fn line_of(text: &str, needle: &str) -> usize {
    text.find(needle).map_or(1, |o| line_at(text, o))
}

pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(
    path: &Path,
    text: &str,
) -> Result<T, AgentError> {
    toml::from_str(text).map_err(|e| AgentError::At {
        file: path.to_path_buf(),
        line: e.span().map_or(1, |s| line_at(text, s.start)),
        msg: e.message().to_string(),
    })
}

const SLOT_KEYS: &[&str] = &[
    "type",
    "length",
    "min_length",
    "max_length",
    "min",
    "max",
    "pattern",
    "values",
    "currency",
    "direction",
    "min_words",
    "prompt",
    "reprompt",
    "dtmf",
    "secret",
    "keep",
    "from_caller",
];

impl Agent {
    pub fn load(dir: &Path) -> Result<Self, AgentError> {
        let at = |file: &Path, text: &str, needle: &str, msg: String| AgentError::At {
            file: file.to_path_buf(),
            line: line_of(text, needle),
            msg,
        };
        let agent_path = dir.join("agent.toml");
        let agent_text = read(&agent_path)?;
        // Flattened structs can't deny unknown keys, so slots are checked here.
        let raw: toml::Table = parse_toml(&agent_path, &agent_text)?;
        if let Some(toml::Value::Table(slots)) = raw.get("slot") {
            for (name, def) in slots {
                if let toml::Value::Table(t) = def {
                    if let Some(k) = t.keys().find(|k| !SLOT_KEYS.contains(&k.as_str())) {
                        return Err(at(
                            &agent_path,
                            &agent_text,
                            &format!("{k} ="),
                            format!("slot `{name}`: unknown key `{k}`"),
                        ));
                    }
                }
            }
        }
        let file: AgentFile = parse_toml(&agent_path, &agent_text)?;
        for (name, s) in &file.slot {
            let needle = format!("[slot.{name}]");
            let Some(kind) = s.spec.kind else {
                return Err(at(
                    &agent_path,
                    &agent_text,
                    &needle,
                    format!("slot `{name}` needs a `type`"),
                ));
            };
            if kind == SlotKind::Choice && s.spec.values.is_empty() {
                return Err(at(
                    &agent_path,
                    &agent_text,
                    &needle,
                    format!("choice slot `{name}` needs `values`"),
                ));
            }
            if let Some(p) = &s.spec.pattern {
                if let Err(e) = regex::Regex::new(p) {
                    return Err(at(
                        &agent_path,
                        &agent_text,
                        p,
                        format!("slot `{name}`: bad pattern: {e}"),
                    ));
                }
            }
            if let Some(d) = &s.spec.direction {
                if d != "past" && d != "future" {
                    return Err(at(
                        &agent_path,
                        &agent_text,
                        &needle,
                        format!("slot `{name}`: direction is past or future"),
                    ));
                }
            }
        }

        let intents_path = dir.join("intents.toml");
        let intents_text = read(&intents_path)?;
        let intents: IntentsFile = parse_toml(&intents_path, &intents_text)?;
        let mut names = BTreeSet::new();
        for i in &intents.intent {
            let needle = format!("\"{}\"", i.name);
            if !names.insert(i.name.clone()) {
                return Err(at(
                    &intents_path,
                    &intents_text,
                    &needle,
                    format!("intent `{}` defined twice", i.name),
                ));
            }
            if i.examples.len() < 2 {
                return Err(at(
                    &intents_path,
                    &intents_text,
                    &needle,
                    format!("intent `{}` needs at least 2 examples", i.name),
                ));
            }
        }
        for b in [Builtin::Transfer, Builtin::Repeat, Builtin::Goodbye] {
            if !intents.intent.iter().any(|i| i.builtin == Some(b)) {
                return Err(AgentError::File {
                    file: intents_path.clone(),
                    msg: format!(
                        "no intent has builtin = \"{}\"",
                        serde_json::to_value(b)
                            .unwrap_or_default()
                            .as_str()
                            .unwrap_or("")
                    ),
                });
            }
        }

        let flows_path = dir.join("flows.toml");
        let flows_text = read(&flows_path)?;
        let flows: FlowsFile = parse_toml(&flows_path, &flows_text)?;
        let mut flow_intents = BTreeSet::new();
        for f in &flows.flow {
            let fneedle = format!("\"{}\"", f.name);
            if !names.contains(&f.intent) {
                return Err(at(
                    &flows_path,
                    &flows_text,
                    &format!("\"{}\"", f.intent),
                    format!("flow `{}`: unknown intent `{}`", f.name, f.intent),
                ));
            }
            if !flow_intents.insert(f.intent.clone()) {
                return Err(at(
                    &flows_path,
                    &flows_text,
                    &fneedle,
                    format!("intent `{}` starts two flows", f.intent),
                ));
            }
            if f.step.is_empty() {
                return Err(at(
                    &flows_path,
                    &flows_text,
                    &fneedle,
                    format!("flow `{}` has no steps", f.name),
                ));
            }
            for s in &f.step {
                let verbs = [s.collect.is_some(), s.confirm.is_some(), s.lookup.is_some()]
                    .iter()
                    .filter(|x| **x)
                    .count();
                if verbs > 1 || (verbs == 0 && s.say.is_none() && s.transfer.is_none() && !s.hangup)
                {
                    return Err(at(&flows_path, &flows_text, &fneedle, format!("flow `{}`: each step needs exactly one of collect, confirm, lookup, say, transfer", f.name)));
                }
                for slot in s.collect.iter().chain(&s.recollect).chain(&s.retry) {
                    if !file.slot.contains_key(slot) {
                        return Err(at(
                            &flows_path,
                            &flows_text,
                            &format!("\"{slot}\""),
                            format!("flow `{}`: unknown slot `{slot}`", f.name),
                        ));
                    }
                }
                if let Some(l) = &s.lookup {
                    if !crate::dialogue::backend::LOOKUPS.contains(&l.as_str()) {
                        return Err(at(
                            &flows_path,
                            &flows_text,
                            &format!("\"{l}\""),
                            format!(
                                "flow `{}`: unknown lookup `{l}` (known: {})",
                                f.name,
                                crate::dialogue::backend::LOOKUPS.join(", ")
                            ),
                        ));
                    }
                }
            }
        }

        for (name, s) in &file.slot {
            if let Some(f) = &s.from_caller {
                if f != "latest_order" && f != "only_account" {
                    return Err(at(
                        &agent_path,
                        &agent_text,
                        &format!("[slot.{name}]"),
                        format!("slot `{name}`: from_caller is latest_order or only_account"),
                    ));
                }
            }
        }
        let kb = kb::load_dir(&dir.join("kb"))?;
        let routing = crate::routing::RoutingRules::load(dir)?;
        if !file.agent.languages.is_empty() && !file.agent.languages.contains(&file.agent.language)
        {
            return Err(at(
                &agent_path,
                &agent_text,
                "languages",
                format!(
                    "languages must include the agent's own language `{}`",
                    file.agent.language
                ),
            ));
        }
        let mut agent = Self {
            dir: dir.to_path_buf(),
            file,
            intents: intents.intent,
            flows: flows.flow,
            kb,
            routing,
            locales: BTreeMap::new(),
            data_words: BTreeMap::new(),
            menu: None,
        };
        agent.load_locales(&agent_path)?;
        Ok(agent)
    }

    /// Training pairs: each intent's examples, plus every knowledge article's
    /// questions under `kb:<id>` so FAQ questions are not forced into a flow.
    pub fn training_examples(&self) -> Vec<(String, String)> {
        let mut ex = Vec::new();
        for i in &self.intents {
            for e in &i.examples {
                ex.push((e.clone(), i.name.clone()));
            }
        }
        for a in &self.kb {
            for q in a.questions.iter().chain(std::iter::once(&a.title)) {
                ex.push((q.clone(), format!("kb:{}", a.id)));
            }
        }
        ex
    }

    /// The encoder this agent's turns are embedded with: `base` (or the
    /// one `nlu.encoder` names beside it), fine-tuned on the agent's
    /// examples when `nlu.fine_tune` is set.
    pub fn encoder(&self, base: Arc<Embedder>) -> Result<Arc<Embedder>, AgentError> {
        // The multilingual encoder serves other languages as it is.
        if base.is_multilingual() {
            return Ok(base);
        }
        let base = match &self.file.nlu.encoder {
            Some(name) => base.named(name)?,
            None => base,
        };
        if !self.file.nlu.fine_tune {
            return Ok(base);
        }
        let params = crate::nlu::tune::TuneParams {
            epochs: self.file.nlu.fine_tune_epochs.max(1),
            ..Default::default()
        };
        let dir = base.dir().to_path_buf();
        let cache = dir
            .parent()
            .map_or_else(|| dir.join("tuned"), |p| p.join("tuned"));
        let mut examples = self.training_examples();
        if self.file.nlu.out_of_scope == OutOfScopeMode::Calibrated {
            examples = crate::nlu::tune::for_calibration(&examples);
        }
        let (tuned, report) = crate::nlu::tune::tuned_embedder(&dir, &cache, &examples, &params)?;
        if let Some(r) = report {
            tracing::info!(
                agent = %self.file.agent.name,
                examples = r.examples,
                steps = r.steps,
                loss = r.last_loss,
                ms = r.ms,
                "fine-tuned the encoder on the agent's examples"
            );
        }
        Ok(Arc::new(tuned))
    }

    pub fn build_intent_model(&self, embedder: Arc<Embedder>) -> Result<IntentModel, AgentError> {
        let nlu = &self.file.nlu;
        let scope = match nlu.out_of_scope {
            OutOfScopeMode::Threshold => Scope::Fixed(nlu.intent_threshold),
            OutOfScopeMode::Calibrated => Scope::Calibrated {
                max_drop: nlu.max_accuracy_drop,
                seed: 1,
            },
        };
        Ok(IntentModel::train_with(
            embedder,
            &self.training_examples(),
            scope,
        )?)
    }

    pub fn intent(&self, name: &str) -> Option<&IntentDef> {
        self.intents.iter().find(|i| i.name == name)
    }

    pub fn flow_for(&self, intent: &str) -> Option<&FlowDef> {
        self.flows.iter().find(|f| f.intent == intent)
    }

    pub fn builtin_of(&self, intent: &str) -> Option<Builtin> {
        if intent == OUT_OF_SCOPE {
            return None;
        }
        self.intent(intent).and_then(|i| i.builtin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::write(
            p.join("agent.toml"),
            "[agent]\nname = \"x\"\ngreeting = \"hi\"\n\n[prompts]\nfallback = 3\n",
        )
        .unwrap();
        let e = Agent::load(p).unwrap_err().to_string();
        assert!(e.contains("agent.toml:6"), "{e}");
        std::fs::write(
            p.join("agent.toml"),
            "[agent]\nname = \"x\"\ngreeting = \"hi\"\n[prompts]\nfallback = \"a\"\nhelp = \"a\"\ngoodbye = \"a\"\ntransfer = \"a\"\nanything_else = \"a\"\nwhat_else = \"a\"\nescalate = \"a\"\n[slot.pin]\ntype = \"digits\"\nprompt = \"pin?\"\nlenght = 4\n",
        )
        .unwrap();
        let e = Agent::load(p).unwrap_err().to_string();
        assert!(e.contains("agent.toml:15") && e.contains("lenght"), "{e}");
    }
}
