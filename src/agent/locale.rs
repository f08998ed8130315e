//! One agent, several languages. The agent's own files are written in its
//! `language`; each further language listed in `languages` has a catalog,
//! `lang/<code>.toml`, and its knowledge articles under `lang/<code>/kb/`.
//! Flows, slots, lookups and routing are shared: only what is said and
//! what is heard changes.
//!
//! The catalog is keyed by the agent's own text, as gettext keys by the
//! source string: a translator sees both, and an edited prompt shows up as
//! a missing translation instead of a silently stale one. Loading refuses
//! a language with any spoken text untranslated, a translation of text the
//! agent no longer says, a placeholder (`{first_name}`) lost or invented in
//! translation, an intent or choice value without words in the language, or
//! a knowledge article missing from the language's folder.
//!
//! ```toml
//! [say]
//! "Is there anything else I can help you with?" = "¿Puedo ayudarle en algo más?"
//! [intent.check_balance]
//! examples = ["cuál es mi saldo", "cuánto dinero tengo"]
//! [slot.loan_type.values]
//! mortgage = ["hipoteca", "casa"]
//! [data]
//! debit = "de débito"
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;

use super::{kb, line_of, parse_toml, read, Agent, AgentError};
use crate::nlu::entities::SlotKind;
use crate::nlu::lang::Lang;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Catalog {
    /// The agent's text → what is said in this language.
    #[serde(default)]
    say: BTreeMap<String, String>,
    /// Each intent's examples in this language.
    #[serde(default)]
    intent: BTreeMap<String, IntentWords>,
    /// How a caller picks this language from the greeting.
    menu: Option<LanguageMenu>,
    /// Each choice slot's words per value in this language.
    #[serde(default)]
    slot: BTreeMap<String, SlotWords>,
    /// Words the lookups fill in from stored data ("debit", "approved"), as
    /// said in this language.
    #[serde(default)]
    data: BTreeMap<String, String>,
}

/// How a caller picks a language before saying anything in it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LanguageMenu {
    /// Said after the greeting, in that language ("Para español, oprima
    /// nueve.").
    pub offer: String,
    /// The keypad key that picks it.
    pub key: Option<String>,
    /// Words that pick it when the caller says one on its own.
    #[serde(default)]
    pub names: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IntentWords {
    examples: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlotWords {
    values: BTreeMap<String, Vec<String>>,
}

/// The `{name}` placeholders of a template.
fn placeholders(s: &str) -> BTreeSet<&str> {
    let mut out = BTreeSet::new();
    let mut rest = s;
    while let Some(a) = rest.find('{') {
        let Some(b) = rest[a..].find('}') else { break };
        out.insert(&rest[a..a + b + 1]);
        rest = &rest[a + b + 1..];
    }
    out
}

impl Agent {
    /// Everything the agent says, for translation: greetings, prompts,
    /// slot questions, flow messages, topics, routes' words, and the survey
    /// when it runs.
    fn spoken_mut(&mut self) -> Vec<&mut String> {
        let f = &mut self.file;
        let mut out: Vec<&mut String> = vec![&mut f.agent.greeting, &mut f.agent.history];
        out.extend(f.agent.greeting_known.as_mut());
        let p = &mut f.prompts;
        out.extend([
            &mut p.fallback,
            &mut p.help,
            &mut p.goodbye,
            &mut p.transfer,
            &mut p.anything_else,
            &mut p.what_else,
            &mut p.escalate,
            &mut p.clarify,
            &mut p.resume,
            &mut p.offer_human,
            &mut p.verify_failed,
        ]);
        if f.csat.enabled {
            out.extend([&mut f.csat.question, &mut f.csat.thanks]);
        }
        for s in f.slot.values_mut() {
            out.push(&mut s.prompt);
            out.extend(s.reprompt.as_mut());
        }
        for i in &mut self.intents {
            out.extend(i.topic.as_mut());
        }
        for r in &mut self.routing.route {
            out.extend(r.say.as_mut());
        }
        for fl in &mut self.flows {
            for s in &mut fl.step {
                out.extend(
                    [&mut s.confirm, &mut s.say, &mut s.on_no, &mut s.on_fail]
                        .into_iter()
                        .flat_map(Option::as_mut),
                );
            }
        }
        out
    }

    /// Everything the agent says, as [`Self::spoken_mut`] lists it.
    pub fn spoken(&self) -> Vec<String> {
        let mut copy = self.clone();
        copy.spoken_mut().into_iter().map(std::mem::take).collect()
    }

    /// This agent in `lang`, from `lang/<lang>.toml` and `lang/<lang>/kb/`
    /// (see the module's notes for what is refused).
    pub fn localised(&self, lang: &str) -> Result<Agent, AgentError> {
        let path = self.dir.join("lang").join(format!("{lang}.toml"));
        let text = read(&path)?;
        let cat: Catalog = parse_toml(&path, &text)?;
        let at = |needle: &str, msg: String| AgentError::At {
            file: path.clone(),
            line: line_of(&text, needle),
            msg,
        };
        let mut out = self.clone();
        out.locales.clear();
        out.file.agent.language = lang.to_string();
        let mut missing = Vec::new();
        let mut used = BTreeSet::new();
        for s in out.spoken_mut() {
            let Some(t) = cat.say.get(s.as_str()) else {
                missing.push(s.clone());
                continue;
            };
            if placeholders(s) != placeholders(t) {
                return Err(at(
                    t,
                    format!(
                        "the translation's placeholders {:?} differ from the text's {:?}",
                        placeholders(t),
                        placeholders(s)
                    ),
                ));
            }
            used.insert(s.clone());
            *s = t.clone();
        }
        if !missing.is_empty() {
            // All of them, so a translator fixes the file in one pass.
            let list: Vec<String> = missing
                .iter()
                .take(40)
                .map(|m| format!("\n  {m:?}"))
                .collect();
            return Err(AgentError::File {
                file: path.clone(),
                msg: format!(
                    "{} text(s) the agent says have no `{lang}` translation under [say]:{}",
                    missing.len(),
                    list.concat()
                ),
            });
        }
        if let Some(stale) = cat.say.keys().find(|k| !used.contains(*k)) {
            return Err(at(
                stale,
                format!("translates text the agent does not say (changed or removed?): {stale:?}"),
            ));
        }
        for name in cat.intent.keys() {
            if self.intent(name).is_none() {
                return Err(at(
                    &format!("[intent.{name}]"),
                    format!("unknown intent `{name}`"),
                ));
            }
        }
        for i in &mut out.intents {
            match cat.intent.get(&i.name) {
                Some(w) if w.examples.len() >= 2 => i.examples = w.examples.clone(),
                _ => {
                    return Err(AgentError::File {
                        file: path.clone(),
                        msg: format!(
                            "intent `{}` needs at least 2 `{lang}` examples under [intent.{}]",
                            i.name, i.name
                        ),
                    })
                }
            }
        }
        for (name, words) in &cat.slot {
            let Some(def) = out.file.slot.get_mut(name) else {
                return Err(at(
                    &format!("[slot.{name}"),
                    format!("unknown slot `{name}`"),
                ));
            };
            if let Some(v) = words
                .values
                .keys()
                .find(|v| !def.spec.values.contains_key(*v))
            {
                return Err(at(
                    &format!("{v} ="),
                    format!("slot `{name}` has no value `{v}`"),
                ));
            }
        }
        for (name, def) in &mut out.file.slot {
            if def.spec.kind != Some(SlotKind::Choice) {
                continue;
            }
            let words = cat.slot.get(name).map(|w| &w.values);
            for (value, syns) in &mut def.spec.values {
                match words.and_then(|w| w.get(value)) {
                    Some(w) if !w.is_empty() => {
                        def.said_as.insert(value.clone(), w[0].clone());
                        *syns = w.clone();
                    }
                    _ => {
                        return Err(AgentError::File {
                            file: path.clone(),
                            msg: format!(
                                "choice slot `{name}`: value `{value}` has no `{lang}` words under [slot.{name}.values]"
                            ),
                        })
                    }
                }
            }
        }
        out.data_words = cat.data.clone();
        out.menu = cat.menu.clone();
        let kb_dir = self.dir.join("lang").join(lang).join("kb");
        out.kb = if self.kb.is_empty() && !kb_dir.exists() {
            Vec::new()
        } else {
            kb::load_dir(&kb_dir)?
        };
        let ids = |a: &[kb::Article]| a.iter().map(|a| a.id.clone()).collect::<BTreeSet<_>>();
        let (want, got) = (ids(&self.kb), ids(&out.kb));
        if let Some(id) = want.difference(&got).next() {
            return Err(AgentError::File {
                file: kb_dir.clone(),
                msg: format!("knowledge article `{id}` has no `{lang}` version"),
            });
        }
        if let Some(id) = got.difference(&want).next() {
            return Err(AgentError::File {
                file: kb_dir,
                msg: format!("article `{id}` is not one of the agent's"),
            });
        }
        Ok(out)
    }

    /// Loads the localised agent of every further language the agent lists.
    pub(super) fn load_locales(&mut self, path: &Path) -> Result<(), AgentError> {
        let info = &self.file.agent;
        let mut seen = BTreeSet::new();
        for l in &info.languages {
            if Lang::parse(l).is_none() || !seen.insert(l) {
                let known: Vec<&str> = Lang::ALL.iter().map(|l| l.code()).collect();
                return Err(AgentError::File {
                    file: path.to_path_buf(),
                    msg: format!(
                        "languages: `{l}` is listed twice or is not one whose numbers, dates and lookup answers are known ({})",
                        known.join(", ")
                    ),
                });
            }
        }
        let extra: Vec<String> = info
            .languages
            .iter()
            .filter(|l| **l != info.language)
            .cloned()
            .collect();
        for l in extra {
            let loc = self.localised(&l)?;
            self.locales.insert(l, loc);
        }
        Ok(())
    }

    /// Every language the agent answers in, its own first.
    pub fn languages(&self) -> Vec<String> {
        std::iter::once(self.file.agent.language.clone())
            .chain(self.locales.keys().cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    const AGENT: &str = r#"
[agent]
name = "x"
greeting = "Hello {first_name}."
languages = ["en", "es"]
[prompts]
fallback = "Sorry?"
help = "I can help."
goodbye = "Bye."
transfer = "Hold on."
anything_else = "Anything else?"
what_else = "What else?"
escalate = "A colleague will help."
clarify = "About {title}?"
resume = "Back to it. {prompt}"
offer_human = "A person?"
verify_failed = "Not verified."
[slot.kind]
type = "choice"
prompt = "Which kind?"
values = { car = ["auto"], home = ["house"] }
"#;
    const INTENTS: &str = r#"
[[intent]]
name = "human"
builtin = "transfer"
examples = ["agent", "a person"]
[[intent]]
name = "repeat"
builtin = "repeat"
examples = ["say again", "repeat"]
[[intent]]
name = "goodbye"
builtin = "goodbye"
examples = ["bye", "that's all"]
"#;
    const FLOWS: &str = r#"
[[flow]]
name = "f"
intent = "human"
[[flow.step]]
collect = "kind"
[[flow.step]]
say = "Done with {kind}."
"#;
    const SPANISH: &str = r#"
[say]
"Hello {first_name}." = "Hola {first_name}."
"I see you called {when} about {topic}. " = "Veo que llamó {when} por {topic}. "
"Sorry?" = "¿Perdón?"
"I can help." = "Puedo ayudarle."
"Bye." = "Adiós."
"Hold on." = "Un momento."
"Anything else?" = "¿Algo más?"
"What else?" = "¿Qué más?"
"A colleague will help." = "Un compañero le ayudará."
"About {title}?" = "¿Sobre {title}?"
"Back to it. {prompt}" = "Volvamos. {prompt}"
"A person?" = "¿Una persona?"
"Not verified." = "No verificado."
"Which kind?" = "¿De qué tipo?"
"Done with {kind}." = "Hecho con {kind}."
[intent.human]
examples = ["agente", "una persona"]
[intent.repeat]
examples = ["otra vez", "repita"]
[intent.goodbye]
examples = ["adiós", "eso es todo"]
[slot.kind.values]
car = ["coche"]
home = ["casa"]
"#;

    fn agent(spanish: &str) -> Result<Agent, AgentError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        write(p, "agent.toml", AGENT);
        write(p, "intents.toml", INTENTS);
        write(p, "flows.toml", FLOWS);
        write(p, "lang/es.toml", spanish);
        std::fs::create_dir_all(p.join("kb")).unwrap();
        Agent::load(p)
    }

    #[test]
    fn a_complete_catalog_gives_the_agent_in_that_language() {
        let a = agent(SPANISH).unwrap();
        assert_eq!(a.languages(), ["en", "es"]);
        let es = &a.locales["es"];
        assert_eq!(es.file.agent.language, "es");
        assert_eq!(es.file.agent.greeting, "Hola {first_name}.");
        assert_eq!(
            es.flows[0].step[1].say.as_deref(),
            Some("Hecho con {kind}.")
        );
        assert_eq!(es.intents[2].examples, ["adiós", "eso es todo"]);
        assert_eq!(es.file.slot["kind"].spec.values["car"], ["coche"]);
        assert_eq!(es.file.slot["kind"].said_as["home"], "casa");
        // The agent's own language is untouched.
        assert_eq!(a.file.agent.greeting, "Hello {first_name}.");
        // Spanish decoding expects the Spanish examples' words; a limit
        // leaves out whole sentences only.
        let hint = es.speech_hint(300);
        assert!(hint.contains("adiós."), "{hint}");
        assert!(es.speech_hint(3).is_empty());
    }

    #[test]
    fn what_is_missing_stale_or_mistranslated_is_refused_at_load() {
        let cases = [
            (SPANISH.replace("\"Bye.\" = \"Adiós.\"\n", ""), "\"Bye.\""),
            (
                SPANISH.replace("[intent.human]", "\"Gone.\" = \"Ido.\"\n[intent.human]"),
                "does not say",
            ),
            (
                SPANISH.replace("Hola {first_name}.", "Hola {nombre}."),
                "placeholders",
            ),
            (
                SPANISH.replace(
                    "examples = [\"otra vez\", \"repita\"]",
                    "examples = [\"otra vez\"]",
                ),
                "intent `repeat`",
            ),
            (SPANISH.replace("home = [\"casa\"]\n", ""), "value `home`"),
            (
                SPANISH.replace(
                    "[intent.goodbye]",
                    "[intent.hello]\nexamples = [\"a\", \"b\"]\n[intent.goodbye]",
                ),
                "unknown intent `hello`",
            ),
        ];
        for (text, want) in cases {
            let e = agent(&text).unwrap_err().to_string();
            assert!(e.contains("es.toml") && e.contains(want), "{want}: {e}");
        }
    }

    #[test]
    fn placeholders_are_found_in_order_of_appearance() {
        let p = placeholders("Hi {a}, {b}{a} and {");
        assert_eq!(p.into_iter().collect::<Vec<_>>(), ["{a}", "{b}"]);
    }
}
