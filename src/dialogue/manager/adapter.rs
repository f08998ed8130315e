//! The voice loop's side: a conversation behind the `Dialogue` trait, and
//! the factory the call pipeline makes them with.

use super::*;

/// The voice loop's view of a conversation.
pub struct AgentDialogue {
    conv: Conversation,
}

impl Dialogue for AgentDialogue {
    fn greeting(&mut self, call: &CallMeta) -> Reply {
        self.conv.begin(call);
        self.conv.greeting()
    }

    fn on_turn(&mut self, _call: &CallMeta, turn: &TurnInput) -> Reply {
        let (reply, trace) = self.conv.turn(turn);
        self.conv.save_progress();
        tracing::info!(
            turn = trace.turn,
            intent = trace.intent.as_deref().unwrap_or("-"),
            confidence = format!("{:.2}", trace.confidence),
            action = %trace.action,
            sentiment = trace.sentiment.map(|s| s.score).unwrap_or(0.0),
            nlu_ms = format!("{:.1}", trace.nlu_ms),
            "dialogue turn"
        );
        reply
    }

    fn on_interrupted(&mut self, what: &Interruption) {
        // The caller cut in: "repeat" should give the whole reply again, and
        // nothing else changes — the flow still waits on the same answer.
        tracing::debug!(heard_ms = what.heard_ms, "reply interrupted");
    }

    fn expecting(&self) -> Expect {
        self.conv.expecting()
    }

    /// The state as call records show it: secret slots masked, and the
    /// turns that filled one keep no digits.
    fn state_json(&self) -> Option<serde_json::Value> {
        let mut v = serde_json::to_value(&self.conv.state).ok()?;
        if let Some(slots) = v.get_mut("slots").and_then(|s| s.as_object_mut()) {
            for (k, val) in slots.iter_mut() {
                if self.conv.slot_def(k).is_some_and(|d| d.secret) {
                    *val = serde_json::Value::String("****".into());
                }
            }
        }
        let secrets = self.conv.secret_answers();
        if let Some(turns) = v.get_mut("turns").and_then(|t| t.as_array_mut()) {
            for (t, &secret) in turns.iter_mut().zip(&secrets) {
                if !secret {
                    continue;
                }
                if let Some(text) = t.get("text").and_then(|x| x.as_str()) {
                    t["text"] = serde_json::Value::String(crate::nlu::numbers::mask_digits(text));
                }
                if let Some(d) = t.get("dtmf").and_then(|x| x.as_str()) {
                    t["dtmf"] = serde_json::Value::String("*".repeat(d.len()));
                }
            }
        }
        Some(v)
    }

    fn on_transfer_failed(&mut self, status: u16) {
        self.conv.transfer_failed(status);
    }

    fn on_human(&mut self, outcome: &crate::dialogue::HumanOutcome) {
        self.conv.human_done(outcome);
    }

    fn on_call_end(&mut self, response_ms: Option<i64>) {
        self.conv.save_interaction(response_ms);
    }

    fn language(&self) -> Option<String> {
        Some(self.conv.state.language.clone())
    }

    fn understands(&self, text: &str) -> bool {
        self.conv.understands(text)
    }
}

pub struct AgentFactory {
    slot: AgentSlot,
    services: Option<Arc<Services>>,
}

impl AgentFactory {
    pub fn new(rt: Arc<AgentRuntime>, services: Option<Arc<Services>>) -> Self {
        Self {
            slot: AgentSlot::new(rt),
            services,
        }
    }

    /// Where another version is put for new calls.
    pub fn slot(&self) -> AgentSlot {
        self.slot.clone()
    }
}

impl DialogueFactory for AgentFactory {
    fn new_dialogue(&self) -> Box<dyn Dialogue> {
        let rt = self.slot.get();
        let conv = match &self.services {
            Some(s) => Conversation::with_services(rt, s.clone()),
            None => Conversation::new(rt),
        };
        Box::new(AgentDialogue { conv })
    }

    fn prompts(&self) -> Vec<String> {
        let rt = self.slot.get();
        fixed_prompts(&rt)
    }

    /// The greeting's language menu: each offer in its own language.
    fn foreign_prompts(&self) -> Vec<(String, String)> {
        self.slot
            .get()
            .locales
            .iter()
            .filter_map(|(l, r)| r.agent.menu.as_ref().map(|m| (l.clone(), m.offer.clone())))
            .collect()
    }

    fn languages(&self) -> Vec<String> {
        let rt = self.slot.get();
        if rt.locales.is_empty() {
            return Vec::new();
        }
        std::iter::once(rt.agent.file.agent.language.clone())
            .chain(rt.locales.keys().cloned())
            .collect()
    }

    fn speech_hints(&self) -> Vec<(String, String)> {
        self.slot
            .get()
            .locales
            .iter()
            .map(|(l, r)| (l.clone(), r.agent.speech_hint(SPEECH_HINT_CHARS)))
            .collect()
    }

    fn localised_prompts(&self) -> Vec<(String, Vec<String>)> {
        let rt = self.slot.get();
        rt.locales
            .iter()
            .map(|(l, r)| (l.clone(), fixed_prompts(r)))
            .collect()
    }
}

/// Whisper's prompt takes at most 224 tokens; a few sentences do.
const SPEECH_HINT_CHARS: usize = 300;

/// What an agent says with nothing filled in, for the prompt cache, the
/// replies a call most often opens with first (they are ready before the
/// server says so): the greeting, the greeting back to a caller who only
/// greeted, the fixed prompts; then its articles' answers (a question the
/// knowledge base answers is most calls' reason to ring); then everything
/// else it says (slot questions, flow messages, routes' words) and its
/// templates (texts with `{blanks}`, of which the voice caches what is
/// said as written).
fn fixed_prompts(rt: &AgentRuntime) -> Vec<String> {
    let a = &rt.agent;
    let p = &a.file.prompts;
    let mut v = vec![
        a.file.agent.greeting.clone(),
        rt.lang.phrase(Phrase::GreetBack).to_string(),
        p.fallback.clone(),
        p.goodbye.clone(),
        p.transfer.clone(),
        p.anything_else.clone(),
        p.what_else.clone(),
        p.escalate.clone(),
    ];
    v.extend(rt.kb.articles().iter().map(|x| x.answer.clone()));
    v.extend(a.spoken());
    let mut seen = std::collections::HashSet::new();
    v.retain(|t| !t.trim().is_empty() && seen.insert(t.clone()));
    v
}
