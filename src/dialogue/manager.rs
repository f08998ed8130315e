//! The dialogue manager: runs an agent's declarative flows turn by turn.
//!
//! Per turn: the slot being collected gets first claim on the caller's words
//! (or keypad digits); then global intents (person, repeat, help, goodbye);
//! then a new flow; then the knowledge base (inside a flow that is a
//! digression: answer, then resume the flow); then a re-prompt or fallback.
//! Re-prompts and fallbacks are counted and escalate to a person. All state
//! lives in [`ConversationState`], which serialises to JSON.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::backend::{Backend, Vars};
use super::{Action, CallMeta, Dialogue, DialogueFactory, Interruption, Reply, TurnInput};
use crate::agent::kb::{KbHit, KnowledgeBase};
use crate::agent::{Agent, AgentError, Builtin, FlowDef, SlotDef, Step};
use crate::nlu::embed::{Embedder, DEFAULT_DIR};
use crate::nlu::entities::{extract, yes_no, Extracted, SlotValue};
use crate::nlu::intent::IntentModel;
use crate::nlu::numbers::tokenize;
use crate::nlu::sentiment::{trend, Sentiment, SentimentModel};

/// Everything loaded once per agent and shared by its calls.
pub struct AgentRuntime {
    pub agent: Agent,
    pub intents: IntentModel,
    pub kb: KnowledgeBase,
    pub sentiment: SentimentModel,
    pub load_ms: u64,
}

impl AgentRuntime {
    pub fn load(dir: &Path, models_dir: &Path) -> Result<Arc<Self>, AgentError> {
        let embedder = Arc::new(Embedder::load(
            &models_dir.join(DEFAULT_DIR.trim_start_matches("models/")),
        )?);
        Self::load_with(dir, embedder)
    }

    pub fn load_with(dir: &Path, embedder: Arc<Embedder>) -> Result<Arc<Self>, AgentError> {
        let t0 = Instant::now();
        let agent = Agent::load(dir)?;
        let intents = agent.build_intent_model(embedder.clone())?;
        let kb = KnowledgeBase::build(agent.kb.clone(), &embedder)?;
        let sentiment = SentimentModel::train(&embedder)?;
        Ok(Arc::new(Self {
            agent,
            intents,
            kb,
            sentiment,
            load_ms: t0.elapsed().as_millis() as u64,
        }))
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FlowState {
    pub name: String,
    pub step: usize,
    /// Misses on the current step.
    pub tries: u32,
    /// Failed lookups in this flow.
    pub lookup_failures: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Pending {
    AnythingElse,
    Clarify { article: String },
    OfferHuman,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SentimentPoint {
    pub turn: u32,
    pub score: f32,
    pub label: crate::nlu::sentiment::Label,
}

/// What happened in one turn, for `attendant chat`, tests and call records.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TurnTrace {
    pub turn: u32,
    pub text: String,
    pub dtmf: Option<String>,
    pub intent: Option<String>,
    pub confidence: f32,
    /// Slots filled this turn (secret ones masked).
    pub slots: BTreeMap<String, String>,
    pub sentiment: Option<Sentiment>,
    /// collect:SLOT, reprompt:SLOT, confirm, answer:ARTICLE, digression:ARTICLE,
    /// clarify:ARTICLE, start:FLOW, done:FLOW, transfer, escalate, fallback,
    /// offer_human, repeat, help, goodbye, lookup_failed:NAME, …
    pub action: String,
    pub reply: String,
    pub kb: Option<KbHit>,
    pub nlu_ms: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConversationState {
    pub flow: Option<FlowState>,
    pub slots: BTreeMap<String, SlotValue>,
    pub vars: Vars,
    pub pending: Option<Pending>,
    pub fallbacks: u32,
    pub last_reply: String,
    pub sentiment: Vec<SentimentPoint>,
    pub turns: Vec<TurnTrace>,
    pub ended: bool,
    /// Where the last answer came from.
    pub last_source: String,
}

impl ConversationState {
    pub fn sentiment_trend(&self) -> f32 {
        trend(&self.sentiment.iter().map(|p| p.score).collect::<Vec<_>>())
    }
}

/// One call's conversation with an agent.
pub struct Conversation {
    rt: Arc<AgentRuntime>,
    pub state: ConversationState,
    today: NaiveDate,
}

/// What one turn produces while it is being built.
#[derive(Default)]
struct Out {
    say: Vec<String>,
    actions: Vec<Action>,
    action: String,
    source: String,
}

impl Out {
    fn push(&mut self, s: impl Into<String>) {
        let s = s.into();
        if !s.trim().is_empty() {
            self.say.push(s);
        }
    }
}

impl Conversation {
    pub fn new(rt: Arc<AgentRuntime>) -> Self {
        Self {
            rt,
            state: ConversationState::default(),
            today: chrono::Local::now().date_naive(),
        }
    }

    /// Fixes "today" (tests and replays).
    pub fn set_today(&mut self, d: NaiveDate) {
        self.today = d;
    }

    pub fn greeting(&mut self) -> Reply {
        let g = self.rt.agent.file.agent.greeting.clone();
        self.state.last_reply = g.clone();
        Reply {
            say: g,
            actions: Vec::new(),
            source: "greeting".into(),
        }
    }

    fn slot_def(&self, name: &str) -> Option<&SlotDef> {
        self.rt.agent.file.slot.get(name)
    }

    fn flow_def(&self) -> Option<&FlowDef> {
        let f = self.state.flow.as_ref()?;
        self.rt.agent.flows.iter().find(|d| d.name == f.name)
    }

    fn current_step(&self) -> Option<&Step> {
        let f = self.state.flow.as_ref()?;
        self.flow_def()?.step.get(f.step)
    }

    /// Fills `{name}` from slots (said for the ear) and lookup variables.
    fn render(&self, template: &str) -> String {
        let mut out = String::new();
        let mut rest = template;
        while let Some(i) = rest.find('{') {
            out.push_str(&rest[..i]);
            let Some(j) = rest[i..].find('}') else {
                out.push_str(&rest[i..]);
                return out;
            };
            let key = &rest[i + 1..i + j];
            let val = if let Some(v) = self.state.slots.get(key) {
                match self.slot_def(key) {
                    Some(d) if d.secret => String::new(),
                    d => v.spoken(d.and_then(|d| d.spec.kind)),
                }
            } else {
                self.state.vars.get(key).cloned().unwrap_or_default()
            };
            out.push_str(&val);
            rest = &rest[i + j + 1..];
        }
        out.push_str(rest);
        out
    }

    fn truthy(&self, name: &str) -> bool {
        match self.state.slots.get(name) {
            Some(SlotValue::Bool(b)) => *b,
            Some(_) => true,
            None => self
                .state
                .vars
                .get(name)
                .is_some_and(|v| !v.is_empty() && v != "false"),
        }
    }

    fn condition(&self, cond: &str) -> bool {
        if cond.contains("&&") {
            return cond.split("&&").all(|c| self.condition(c));
        }
        let cond = cond.trim();
        if let Some((k, v)) = cond.split_once("==") {
            let (k, v) = (k.trim(), v.trim().trim_matches('"'));
            let got = self
                .state
                .slots
                .get(k)
                .map(|s| s.canonical())
                .or_else(|| self.state.vars.get(k).cloned());
            return got.as_deref() == Some(v);
        }
        match cond.strip_prefix('!') {
            Some(k) => !self.truthy(k.trim()),
            None => self.truthy(cond),
        }
    }

    fn slot_prompt(&self, slot: &str, again: bool) -> String {
        let d = self.slot_def(slot);
        let p = match (again, d) {
            (
                true,
                Some(SlotDef {
                    reprompt: Some(r), ..
                }),
            ) => r.clone(),
            (_, Some(d)) => d.prompt.clone(),
            (_, None) => String::new(),
        };
        self.render(&p)
    }

    /// The question the flow is waiting on, if any (for resume and help).
    fn waiting_prompt(&self) -> Option<String> {
        let step = self.current_step()?;
        if let Some(slot) = &step.collect {
            return Some(self.slot_prompt(slot, false));
        }
        step.confirm.as_ref().map(|c| self.render(c))
    }

    fn transfer(&mut self, out: &mut Out, target: Option<&str>, reason: &str, say: &str) {
        let target = target
            .map(str::to_string)
            .unwrap_or_else(|| self.rt.agent.file.transfer.default.clone());
        out.push(say.to_string());
        out.actions.push(Action::Transfer {
            target,
            reason: reason.to_string(),
        });
        self.state.flow = None;
        self.state.pending = None;
        self.state.ended = true;
    }

    fn escalate(&mut self, out: &mut Out, reason: &str) {
        let p = self.rt.agent.file.prompts.escalate.clone();
        self.transfer(out, None, reason, &p);
        out.action = "escalate".into();
    }

    /// Runs the active flow from its current step until it needs the caller.
    fn run_flow(&mut self, out: &mut Out) {
        let tries_max = self.rt.agent.file.transfer.slot_tries;
        loop {
            let Some(def) = self.flow_def().cloned() else {
                return;
            };
            let Some(fs) = self.state.flow.clone() else {
                return;
            };
            let Some(step) = def.step.get(fs.step).cloned() else {
                // Done.
                self.state.flow = None;
                if out.action.is_empty()
                    || out.action.starts_with("start")
                    || out.action.starts_with("filled")
                    || out.action == "confirmed"
                {
                    out.action = format!("done:{}", def.name);
                }
                if def.ask_anything_else && !self.state.ended {
                    out.push(self.rt.agent.file.prompts.anything_else.clone());
                    self.state.pending = Some(Pending::AnythingElse);
                }
                return;
            };
            let advance = |s: &mut Self| {
                if let Some(f) = s.state.flow.as_mut() {
                    f.step += 1;
                    f.tries = 0;
                }
            };
            if let Some(c) = &step.when {
                if !self.condition(c) {
                    advance(self);
                    continue;
                }
            }
            if let Some(slot) = &step.collect {
                if self.state.slots.contains_key(slot) {
                    advance(self);
                    continue;
                }
                out.push(self.slot_prompt(slot, false));
                if out.action.is_empty()
                    || out.action.starts_with("start")
                    || out.action.starts_with("filled")
                {
                    out.action = format!("collect:{slot}");
                }
                return;
            }
            if let Some(c) = &step.confirm {
                out.push(self.render(c));
                out.action = "confirm".into();
                return;
            }
            if let Some(name) = &step.lookup {
                let slots: Vars = self
                    .state
                    .slots
                    .iter()
                    .map(|(k, v)| (k.clone(), v.canonical()))
                    .collect();
                let res = Backend {
                    data: &self.rt.agent.data,
                    today: self.today,
                }
                .run(name, &slots);
                match res {
                    Ok(vars) => {
                        self.state.vars.extend(vars);
                        advance(self);
                        continue;
                    }
                    Err(reason) => {
                        self.state.vars.insert("reason".into(), reason.clone());
                        let msg = step
                            .on_fail
                            .clone()
                            .unwrap_or_else(|| "Sorry, {reason}.".into());
                        out.push(self.render(&msg));
                        out.action = format!("lookup_failed:{name}");
                        let failures = {
                            let f = self.state.flow.as_mut().expect("flow is active");
                            f.lookup_failures += 1;
                            f.lookup_failures
                        };
                        if step.retry.is_empty() || failures >= tries_max {
                            self.escalate(out, &format!("lookup {name} failed: {reason}"));
                            return;
                        }
                        for s in &step.retry {
                            self.state.slots.remove(s);
                        }
                        let first = def
                            .step
                            .iter()
                            .position(|s| {
                                s.collect.as_ref().is_some_and(|c| step.retry.contains(c))
                            })
                            .unwrap_or(0);
                        if let Some(f) = self.state.flow.as_mut() {
                            f.step = first;
                            f.tries = 0;
                        }
                        continue;
                    }
                }
            }
            if let Some(s) = &step.say {
                out.push(self.render(s));
            }
            if let Some(t) = &step.transfer {
                let reason = step
                    .reason
                    .clone()
                    .unwrap_or_else(|| format!("flow {}", def.name));
                self.transfer(out, Some(t), &reason, "");
                out.action = "transfer".into();
                return;
            }
            if step.hangup {
                out.actions.push(Action::Hangup);
                self.state.flow = None;
                self.state.ended = true;
                out.action = "hangup".into();
                return;
            }
            advance(self);
        }
    }

    fn start_flow(
        &mut self,
        out: &mut Out,
        def: &FlowDef,
        text: &str,
        filled: &mut BTreeMap<String, String>,
    ) {
        self.state.flow = Some(FlowState {
            name: def.name.clone(),
            ..Default::default()
        });
        self.state.pending = None;
        // A new request starts clean, except for what identifies the caller.
        self.state.vars.clear();
        let keep: Vec<String> = self
            .rt
            .agent
            .file
            .slot
            .iter()
            .filter(|(_, d)| d.keep)
            .map(|(k, _)| k.clone())
            .collect();
        self.state.slots.retain(|k, _| keep.contains(k));
        out.action = format!("start:{}", def.name);
        // Take what the caller already said ("my order 123456 is late").
        for step in &def.step {
            if let Some(slot) = &step.collect {
                if self.state.slots.contains_key(slot) {
                    continue;
                }
                if let Some(d) = self.slot_def(slot) {
                    if matches!(
                        d.spec.kind,
                        Some(
                            crate::nlu::entities::SlotKind::Text
                                | crate::nlu::entities::SlotKind::YesNo
                        )
                    ) {
                        continue;
                    }
                    if let Extracted::Value(v) = extract(&d.spec, text, self.today) {
                        filled.insert(
                            slot.clone(),
                            if d.secret {
                                "****".into()
                            } else {
                                v.canonical()
                            },
                        );
                        self.state.slots.insert(slot.clone(), v);
                    }
                }
            }
        }
        self.run_flow(out);
    }

    fn answer(&mut self, out: &mut Out, hit: &KbHit, digression: bool) {
        let Some(a) = self.rt.kb.article(&hit.id) else {
            return;
        };
        out.push(a.answer.clone());
        out.source = format!("kb:{}", a.id);
        if digression {
            out.action = format!("digression:{}", a.id);
            if let Some(p) = self.waiting_prompt() {
                let resume = self.rt.agent.file.prompts.resume.replace("{prompt}", &p);
                out.push(resume);
            }
        } else {
            out.action = format!("answer:{}", a.id);
            out.push(self.rt.agent.file.prompts.anything_else.clone());
            self.state.pending = Some(Pending::AnythingElse);
        }
        self.state.fallbacks = 0;
    }

    /// One caller turn.
    pub fn turn(&mut self, input: &TurnInput) -> (Reply, TurnTrace) {
        let t0 = Instant::now();
        let text = input
            .transcript
            .clone()
            .unwrap_or_default()
            .trim()
            .to_string();
        let dtmf = input.dtmf.clone().filter(|d| !d.is_empty());
        let emb = if text.is_empty() {
            None
        } else {
            match self.rt.intents.embedder().embed(&text.to_lowercase()) {
                Ok(v) => Some(v),
                Err(e) => {
                    // Without an embedding the turn is handled as not understood.
                    tracing::warn!(error = %e, "embedding failed");
                    None
                }
            }
        };
        let guess = emb.as_ref().map(|v| self.rt.intents.classify_embedding(v));
        let sentiment = emb.as_ref().map(|v| self.rt.sentiment.score_embedding(v));
        let kb = emb.as_ref().and_then(|v| self.rt.kb.search(&text, v));
        let nlu_ms = t0.elapsed().as_secs_f64() * 1000.0;
        if let Some(s) = sentiment {
            self.state.sentiment.push(SentimentPoint {
                turn: input.index,
                score: s.score,
                label: s.label,
            });
        }
        let mut out = Out::default();
        let mut filled = BTreeMap::new();
        self.decide(
            &text,
            dtmf.as_deref(),
            guess.as_ref(),
            kb.as_ref(),
            &mut out,
            &mut filled,
        );
        let say = out.say.join(" ");
        if !say.is_empty() {
            self.state.last_reply = say.clone();
        }
        let source = if out.source.is_empty() {
            out.action.clone()
        } else {
            out.source.clone()
        };
        self.state.last_source = source.clone();
        let trace = TurnTrace {
            turn: input.index,
            text,
            dtmf,
            intent: guess.as_ref().and_then(|g| g.intent.clone()),
            confidence: guess.as_ref().map_or(0.0, |g| g.confidence),
            slots: filled,
            sentiment,
            action: out.action.clone(),
            reply: say.clone(),
            kb,
            nlu_ms,
        };
        self.state.turns.push(trace.clone());
        (
            Reply {
                say,
                actions: out.actions,
                source,
            },
            trace,
        )
    }

    fn decide(
        &mut self,
        text: &str,
        dtmf: Option<&str>,
        guess: Option<&crate::nlu::intent::IntentGuess>,
        kb: Option<&KbHit>,
        out: &mut Out,
        filled: &mut BTreeMap<String, String>,
    ) {
        let prompts = self.rt.agent.file.prompts.clone();
        let settings = self.rt.agent.file.nlu.clone();
        let intent = guess.and_then(|g| g.intent.clone());
        let builtin = intent.as_deref().and_then(|i| self.rt.agent.builtin_of(i));
        let yn = if let Some(d) = dtmf {
            match d {
                "1" => Some(true),
                "2" => Some(false),
                _ => None,
            }
        } else {
            yes_no(&tokenize(text))
        };

        // 0 on the keypad always reaches a person.
        if dtmf == Some("0") {
            self.transfer(out, None, "caller pressed 0", &prompts.transfer);
            out.action = "transfer".into();
            return;
        }

        // 1. The question the flow is waiting on.
        if let Some(step) = self.current_step().cloned() {
            if let Some(slot) = &step.collect {
                let def = self.slot_def(slot).cloned();
                if let Some(def) = def {
                    let source = match dtmf {
                        Some(d) if def.dtmf => Some(d.trim_end_matches('#').to_string()),
                        Some(_) => None,
                        None => Some(text.to_string()),
                    };
                    // A global intent said clearly wins over a free-text slot.
                    let clear_global =
                        builtin.is_some() && guess.is_some_and(|g| g.confidence >= 0.7);
                    let got = match source {
                        Some(s)
                            if !(clear_global
                                && def.spec.kind == Some(crate::nlu::entities::SlotKind::Text)) =>
                        {
                            extract(&def.spec, &s, self.today)
                        }
                        _ => Extracted::Nothing,
                    };
                    match got {
                        Extracted::Value(v) => {
                            filled.insert(
                                slot.clone(),
                                if def.secret {
                                    "****".into()
                                } else {
                                    v.canonical()
                                },
                            );
                            self.state.slots.insert(slot.clone(), v);
                            if let Some(f) = self.state.flow.as_mut() {
                                f.step += 1;
                                f.tries = 0;
                            }
                            out.action = format!("filled:{slot}");
                            self.run_flow(out);
                            return;
                        }
                        Extracted::Invalid(reason) => {
                            self.reprompt(out, slot, Some(&reason));
                            return;
                        }
                        Extracted::Nothing => {}
                    }
                }
            } else if step.confirm.is_some() {
                if let Some(yes) = yn {
                    if yes {
                        if let Some(f) = self.state.flow.as_mut() {
                            f.step += 1;
                            f.tries = 0;
                        }
                        out.action = "confirmed".into();
                        self.run_flow(out);
                    } else {
                        if let Some(no) = &step.on_no {
                            out.push(self.render(no));
                        }
                        out.action = "declined".into();
                        if step.recollect.is_empty() {
                            let flow = self.flow_def().map(|f| f.ask_anything_else).unwrap_or(true);
                            self.state.flow = None;
                            if flow {
                                out.push(prompts.anything_else.clone());
                                self.state.pending = Some(Pending::AnythingElse);
                            }
                        } else {
                            for s in &step.recollect {
                                self.state.slots.remove(s);
                            }
                            let first = self
                                .flow_def()
                                .and_then(|d| {
                                    d.step.iter().position(|s| {
                                        s.collect
                                            .as_ref()
                                            .is_some_and(|c| step.recollect.contains(c))
                                    })
                                })
                                .unwrap_or(0);
                            if let Some(f) = self.state.flow.as_mut() {
                                f.step = first;
                            }
                            self.run_flow(out);
                        }
                    }
                    return;
                }
            }
        }

        // 2. Answers to a question we asked outside a flow.
        if let Some(p) = self.state.pending.clone() {
            if let Some(yes) = yn {
                let plain =
                    builtin.is_none() && (intent.is_none() || text.split_whitespace().count() <= 4);
                if plain || dtmf.is_some() {
                    self.state.pending = None;
                    match (p, yes) {
                        (Pending::AnythingElse, true) => {
                            out.push(prompts.what_else.clone());
                            out.action = "what_else".into();
                        }
                        (Pending::AnythingElse, false) => {
                            out.push(prompts.goodbye.clone());
                            out.actions.push(Action::Hangup);
                            self.state.ended = true;
                            out.action = "goodbye".into();
                        }
                        (Pending::Clarify { article }, true) => {
                            let hit = KbHit {
                                id: article,
                                title: String::new(),
                                confidence: 1.0,
                                bm25: 0.0,
                            };
                            self.answer(out, &hit, false);
                        }
                        (Pending::Clarify { .. }, false) => {
                            out.push(prompts.fallback.clone());
                            out.action = "fallback".into();
                        }
                        (Pending::OfferHuman, true) => {
                            self.transfer(
                                out,
                                None,
                                "caller accepted a person after bot misses",
                                &prompts.transfer,
                            );
                            out.action = "transfer".into();
                        }
                        (Pending::OfferHuman, false) => {
                            self.state.fallbacks = 0;
                            out.push(prompts.help.clone());
                            out.action = "help".into();
                        }
                    }
                    return;
                }
            }
        }

        // 3. Global intents. While a question is open, a soft "repeat" or
        // "help" guess is more likely a failed answer than a request.
        let waiting = self
            .current_step()
            .is_some_and(|s| s.collect.is_some() || s.confirm.is_some());
        let soft = guess.is_some_and(|g| g.confidence < 0.65);
        let builtin = match builtin {
            Some(Builtin::Repeat | Builtin::Help) if waiting && soft => None,
            b => b,
        };
        match builtin {
            Some(Builtin::Transfer) => {
                self.transfer(out, None, "caller asked for a person", &prompts.transfer);
                out.action = "transfer".into();
                return;
            }
            Some(Builtin::Repeat) => {
                out.push(self.state.last_reply.clone());
                out.action = "repeat".into();
                return;
            }
            Some(Builtin::Help) => {
                out.push(prompts.help.clone());
                if let Some(p) = self.waiting_prompt() {
                    out.push(p);
                }
                out.action = "help".into();
                return;
            }
            Some(Builtin::Goodbye) => {
                out.push(prompts.goodbye.clone());
                out.actions.push(Action::Hangup);
                self.state.ended = true;
                self.state.flow = None;
                out.action = "goodbye".into();
                return;
            }
            None => {}
        }

        // 4. A new flow.
        if let Some(i) = &intent {
            if let Some(def) = self.rt.agent.flow_for(i).cloned() {
                let same = self.state.flow.as_ref().is_some_and(|f| f.name == def.name);
                if !same {
                    self.start_flow(out, &def, text, filled);
                    return;
                }
            }
        }

        // 5. Knowledge: an answer, or a digression inside a flow.
        let in_flow = self.state.flow.is_some();
        let kb_intent = intent.as_deref().and_then(|i| i.strip_prefix("kb:"));
        if let Some(hit) = kb {
            let agrees = kb_intent == Some(hit.id.as_str());
            if hit.confidence >= settings.kb_answer
                || (agrees && hit.confidence >= settings.kb_clarify)
            {
                self.answer(out, hit, in_flow);
                return;
            }
            if !in_flow && hit.confidence >= settings.kb_clarify {
                out.push(
                    prompts
                        .clarify
                        .replace("{title}", &hit.title.to_lowercase()),
                );
                out.action = format!("clarify:{}", hit.id);
                self.state.pending = Some(Pending::Clarify {
                    article: hit.id.clone(),
                });
                return;
            }
        }

        // 6. Nothing understood.
        if let Some(step) = self.current_step().cloned() {
            match (&step.collect, &step.confirm) {
                (Some(slot), _) => self.reprompt(out, slot, None),
                (None, Some(c)) => {
                    let c = self.render(c);
                    self.bump_tries(out, "confirm", |o| {
                        o.push("Sorry, was that a yes or a no?");
                        o.push(c);
                    });
                }
                _ => {}
            }
            return;
        }
        if text.is_empty() && dtmf.is_none() {
            return;
        }
        self.state.fallbacks += 1;
        self.state.pending = None;
        if self.state.fallbacks >= self.rt.agent.file.transfer.max_fallbacks {
            out.push(prompts.offer_human.clone());
            out.action = "offer_human".into();
            self.state.pending = Some(Pending::OfferHuman);
        } else {
            out.push(prompts.fallback.clone());
            out.action = "fallback".into();
        }
    }

    fn bump_tries(&mut self, out: &mut Out, what: &str, say: impl FnOnce(&mut Out)) {
        let max = self.rt.agent.file.transfer.slot_tries;
        let tries = match self.state.flow.as_mut() {
            Some(f) => {
                f.tries += 1;
                f.tries
            }
            None => return,
        };
        if tries >= max {
            self.escalate(
                out,
                &format!("{what}: no usable answer after {tries} tries"),
            );
        } else {
            say(out);
            out.action = format!("reprompt:{what}");
        }
    }

    fn reprompt(&mut self, out: &mut Out, slot: &str, reason: Option<&str>) {
        let p = self.slot_prompt(slot, true);
        let reason = reason.map(|r| {
            let mut c = r.chars();
            c.next()
                .map(|f| f.to_uppercase().collect::<String>() + c.as_str() + ".")
                .unwrap_or_default()
        });
        self.bump_tries(out, slot, |o| {
            if let Some(r) = reason {
                o.push(format!("Sorry. {r}"));
            }
            o.push(p);
        });
    }
}

/// The voice loop's view of a conversation.
pub struct AgentDialogue {
    conv: Conversation,
}

impl Dialogue for AgentDialogue {
    fn greeting(&mut self, _call: &CallMeta) -> Reply {
        self.conv.greeting()
    }

    fn on_turn(&mut self, _call: &CallMeta, turn: &TurnInput) -> Reply {
        let (reply, trace) = self.conv.turn(turn);
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

    fn state_json(&self) -> Option<serde_json::Value> {
        serde_json::to_value(&self.conv.state).ok()
    }
}

pub struct AgentFactory {
    rt: Arc<AgentRuntime>,
}

impl AgentFactory {
    pub fn new(rt: Arc<AgentRuntime>) -> Self {
        Self { rt }
    }
}

impl DialogueFactory for AgentFactory {
    fn new_dialogue(&self) -> Box<dyn Dialogue> {
        Box::new(AgentDialogue {
            conv: Conversation::new(self.rt.clone()),
        })
    }

    fn prompts(&self) -> Vec<String> {
        let a = &self.rt.agent;
        let p = &a.file.prompts;
        let mut v = vec![
            a.file.agent.greeting.clone(),
            p.fallback.clone(),
            p.goodbye.clone(),
            p.transfer.clone(),
            p.anything_else.clone(),
            p.what_else.clone(),
            p.escalate.clone(),
        ];
        v.extend(
            a.file
                .slot
                .values()
                .map(|s| s.prompt.clone())
                .filter(|s| !s.contains('{')),
        );
        v
    }
}
