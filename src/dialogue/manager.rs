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

use super::backend::{Backend, Vars, VERIFIED_KEY};
use super::{
    Action, CallMeta, Dialogue, DialogueFactory, Expect, Interruption, Reply, Services, TurnInput,
};
use crate::agent::kb::{KbHit, KnowledgeBase};
use crate::agent::{Agent, AgentError, Builtin, FlowDef, SlotDef, Step};
use crate::handoff::{self, IntentMark, Packet, Priority, SentimentInfo};
use crate::nlu::embed::{Embedder, DEFAULT_DIR};
use crate::nlu::entities::{extract, yes_no, Extracted, SlotKind, SlotValue};
use crate::nlu::intent::IntentModel;
use crate::nlu::lang::{Lang, Phrase};
use crate::nlu::numbers::tokenize;
use crate::nlu::sentiment::{trend, Sentiment, SentimentModel};
use crate::routing::{Decision, RouteAction};
use crate::rules::{Facts, Value};
use crate::store::{now_ms, Customer, Interaction, LearnedTurn, SentimentSample, Utterance};

mod adapter;
mod flows;
mod language;
mod report;

pub use adapter::{AgentDialogue, AgentFactory};

/// Everything loaded once per agent and shared by its calls.
pub struct AgentRuntime {
    pub agent: Agent,
    pub intents: IntentModel,
    pub kb: KnowledgeBase,
    pub sentiment: Arc<SentimentModel>,
    pub load_ms: u64,
    /// The language this runtime hears and speaks.
    pub lang: Lang,
    /// The agent in each further language it answers in, with its own
    /// intent model and articles.
    pub locales: BTreeMap<String, Arc<AgentRuntime>>,
}

impl AgentRuntime {
    pub fn load(dir: &Path, models_dir: &Path) -> Result<Arc<Self>, AgentError> {
        let embedder = Arc::new(Embedder::load(
            &models_dir.join(DEFAULT_DIR.trim_start_matches("models/")),
        )?);
        Self::load_with(dir, embedder)
    }

    pub fn load_with(dir: &Path, embedder: Arc<Embedder>) -> Result<Arc<Self>, AgentError> {
        Self::from_agent(Agent::load(dir)?, embedder)
    }

    /// Trains the models of an agent already loaded (a retrained version:
    /// its files plus learned examples).
    pub fn from_agent(mut agent: Agent, embedder: Arc<Embedder>) -> Result<Arc<Self>, AgentError> {
        let t0 = Instant::now();
        let mut locales = BTreeMap::new();
        for (lang, a) in std::mem::take(&mut agent.locales) {
            locales.insert(lang, Self::from_agent(a, embedder.clone())?);
        }
        // Intents, articles and sentiment read one embedding per turn, so
        // all three are built on the encoder the agent asks for, in its
        // language.
        let embedder = embedder.for_language(&agent.file.agent.language);
        let embedder = agent.encoder(embedder)?;
        let intents = agent.build_intent_model(embedder.clone())?;
        let lang = Lang::parse(&agent.file.agent.language).unwrap_or_default();
        let kb = KnowledgeBase::build(agent.kb.clone(), &embedder, lang)?;
        let sentiment = Arc::new(SentimentModel::train(&embedder)?);
        Ok(Arc::new(Self {
            intents,
            kb,
            sentiment,
            load_ms: t0.elapsed().as_millis() as u64,
            lang,
            agent,
            locales,
        }))
    }
}

/// The version of an agent new calls get; swapped when another version is
/// promoted or rolled back to (calls running keep theirs).
#[derive(Clone)]
pub struct AgentSlot(Arc<parking_lot::RwLock<Arc<AgentRuntime>>>);

impl AgentSlot {
    pub fn new(rt: Arc<AgentRuntime>) -> Self {
        Self(Arc::new(parking_lot::RwLock::new(rt)))
    }

    pub fn get(&self) -> Arc<AgentRuntime> {
        self.0.read().clone()
    }

    pub fn set(&self, rt: Arc<AgentRuntime>) {
        *self.0.write() = rt;
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
    Csat,
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
    /// The top intents with their probabilities, best first.
    #[serde(default)]
    pub ranking: Vec<(String, f32)>,
    /// The number the out-of-scope rule judged.
    #[serde(default)]
    pub scope_score: f32,
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
    /// Unix milliseconds when the turn was handled.
    #[serde(default)]
    pub at_ms: i64,
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
    pub greeting: String,
    pub greeting_at_ms: i64,
    /// The recognised caller's customer id.
    pub customer_id: Option<String>,
    /// Set only by a successful `verify_account`.
    pub verified_account: Option<String>,
    /// Re-prompts, fallbacks and failed lookups so far.
    pub misses: u32,
    /// Failed identity checks in this call; at the agent's `slot_tries` the
    /// call is locked out of account data whichever flow asks.
    #[serde(default)]
    pub verify_failures: u32,
    /// The latest routing decision.
    pub routing: Option<Decision>,
    pub routing_offered: bool,
    pub transferred: Option<String>,
    pub transfer_reason: String,
    /// Transfers the transport could not carry out.
    #[serde(default)]
    pub transfer_failures: u32,
    /// The call's time with the agent desk, once over.
    #[serde(default)]
    pub human: Option<crate::dialogue::HumanOutcome>,
    pub csat: Option<i64>,
    pub csat_asked: bool,
    /// The language the call is in (ISO 639-1).
    #[serde(default)]
    pub language: String,
}

impl ConversationState {
    pub fn sentiment_trend(&self) -> f32 {
        trend(&self.sentiment.iter().map(|p| p.score).collect::<Vec<_>>())
    }
}

/// What we know of the caller when the call starts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CallerContext {
    pub customer: Option<Customer>,
    /// Earlier interactions, newest first.
    pub history: Vec<Interaction>,
    /// Earlier contacts within the routing window.
    pub recent_contacts: i64,
    pub open_order: Option<String>,
    pub only_account: Option<String>,
}

/// One call's conversation with an agent.
pub struct Conversation {
    /// The agent in the language the call is in…
    rt: Arc<AgentRuntime>,
    /// …and in its own, which holds the other languages.
    home: Arc<AgentRuntime>,
    pub state: ConversationState,
    today: NaiveDate,
    services: Option<Arc<Services>>,
    pub caller: CallerContext,
    call: CallMeta,
    started_ms: i64,
    progress: Arc<Progress>,
    /// The main language's last embedding (lower-cased text, vector): the
    /// words `understands` was asked about are not embedded again when
    /// the turn is answered.
    last_embedding: parking_lot::Mutex<Option<(String, Vec<f32>)>>,
}

/// The interaction row as the call goes: the newest version waits here and
/// one write at a time takes it, so a slow store never holds a turn up and
/// an older version never lands after a newer one or after the final row.
#[derive(Default)]
struct Progress {
    latest: parking_lot::Mutex<Option<Interaction>>,
    writing: tokio::sync::Mutex<bool>,
}

/// The outcome of an interaction row written while its call goes on (left
/// as it is if the node dies mid-call).
pub const IN_PROGRESS: &str = "in_progress";

/// What one turn produces while it is being built.
#[derive(Default)]
struct Out {
    /// The caller's own words, before [`crate::nlu::lang::Lang::heard`]
    /// rewrote them for the extractors: a free-text slot (a street) keeps
    /// "calle mayor doce", not "calle mayor twelve".
    said: String,
    /// The call's language is neither known nor chosen: a fallback also
    /// says how to pick another (a Spanish caller heard as English).
    language_open: bool,
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
            state: ConversationState {
                language: rt.agent.file.agent.language.clone(),
                ..Default::default()
            },
            home: rt.clone(),
            rt,
            today: chrono::Local::now().date_naive(),
            services: None,
            caller: CallerContext::default(),
            call: CallMeta::default(),
            started_ms: now_ms(),
            progress: Arc::default(),
            last_embedding: parking_lot::Mutex::new(None),
        }
    }

    /// A conversation backed by the customer store.
    pub fn with_services(rt: Arc<AgentRuntime>, services: Arc<Services>) -> Self {
        let mut c = Self::new(rt);
        c.services = Some(services);
        c
    }

    /// Takes the call's metadata and looks the caller up by caller ID.
    pub fn begin(&mut self, call: &CallMeta) {
        self.call = call.clone();
        if self.call.call_id.is_empty() {
            self.call.call_id = format!("chat-{}", uuid::Uuid::new_v4().simple());
        }
        let (Some(sv), Some(from)) = (self.services.clone(), call.from.as_deref()) else {
            return;
        };
        let st = &sv.store;
        let window = self.rt.agent.routing.window_days.max(0) * 86_400_000;
        let since = self.started_ms - window;
        let ctx = st.wait(async {
            let Some(c) = st.customer_by_phone(from).await? else {
                return Ok::<_, crate::store::StoreError>(CallerContext::default());
            };
            let history = st.interactions_of(&c.id, 10).await?;
            let orders = st.orders_of(&c.id).await?;
            let accounts = st.accounts_of(&c.id).await?;
            Ok(CallerContext {
                recent_contacts: history.iter().filter(|i| i.started_ms >= since).count() as i64,
                open_order: orders
                    .iter()
                    .find(|o| o.status != "delivered" && o.status != "cancelled")
                    .or(orders.first())
                    .map(|o| o.id.clone()),
                only_account: (accounts.len() == 1).then(|| {
                    let id = &accounts[0].id;
                    id[id.len().saturating_sub(4)..].to_string()
                }),
                customer: Some(c),
                history,
            })
        });
        match ctx {
            Ok(ctx) => {
                self.state.customer_id = ctx.customer.as_ref().map(|c| c.id.clone());
                if let Some(c) = &ctx.customer {
                    tracing::info!(call = %self.call.call_id, customer = %c.id, tier = %c.tier, recent = ctx.recent_contacts, "caller recognised");
                }
                let preferred = ctx.customer.as_ref().map(|c| c.language.clone());
                self.caller = ctx;
                // A known caller is greeted in the language on their record.
                if let Some(l) = preferred.filter(|l| !l.is_empty()) {
                    self.set_language(&l);
                }
            }
            Err(e) => tracing::error!(error = %e, "caller lookup failed; continuing anonymously"),
        }
    }

    /// Fixes "today" (tests and replays).
    pub fn set_today(&mut self, d: NaiveDate) {
        self.today = d;
    }

    pub fn greeting(&mut self) -> Reply {
        let info = &self.rt.agent.file.agent;
        let g = match (&self.caller.customer, &info.greeting_known) {
            (Some(_), Some(known)) => self
                .fill_caller(known)
                .replace("{history}", &self.history_line()),
            _ => info.greeting.clone(),
        };
        self.state.greeting_at_ms = now_ms();
        // Some callers go straight to a person (e.g. a valuable customer on
        // their third call this week).
        let d = self.route(None);
        if d.action == RouteAction::Bypass {
            let mut out = Out::default();
            let say = self.fill_caller(
                d.say
                    .as_deref()
                    .unwrap_or(&self.rt.agent.file.prompts.transfer),
            );
            let reason = format!("routing rule {}", d.route.clone().unwrap_or_default());
            self.transfer(&mut out, d.queue.as_deref(), &reason, &say);
            let say = out.say.join(" ");
            self.state.greeting = say.clone();
            self.state.last_reply = say.clone();
            if let Some(t) = self.state.transferred.clone() {
                self.save_handoff(&t, &reason);
            }
            return Reply {
                say,
                actions: out.actions,
                source: "routing".into(),
            };
        }
        let mut g = g;
        // Callers in the agent's own language hear how to pick another.
        if Arc::ptr_eq(&self.rt, &self.home) {
            for offer in self.menu_offers() {
                g = format!("{g} {offer}");
            }
        }
        self.state.greeting = g.clone();
        self.state.last_reply = g.clone();
        Reply {
            say: g,
            actions: Vec::new(),
            source: "greeting".into(),
        }
    }

    /// One caller turn.
    pub fn turn(&mut self, input: &TurnInput) -> (Reply, TurnTrace) {
        let t0 = Instant::now();
        if let Some(l) = &input.language {
            self.set_language(l);
        }
        let text = input
            .transcript
            .clone()
            .unwrap_or_default()
            .trim()
            .to_string();
        let dtmf = input.dtmf.clone().filter(|d| !d.is_empty());
        let chosen = self.menu_choice(&text, dtmf.as_deref());
        if let Some(code) = &chosen {
            self.set_language(code);
        }
        let emb = if text.is_empty() || chosen.is_some() {
            None
        } else {
            let v = if Arc::ptr_eq(&self.rt, &self.home) {
                self.embed_home(&text)
            } else {
                self.rt.intents.embedder().embed(&text.to_lowercase())
            };
            match v {
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
        let intent = guess.as_ref().and_then(|g| g.intent.clone());
        let decision = if self.state.ended {
            Decision::default()
        } else {
            self.route(intent.as_deref())
        };
        if decision.action == RouteAction::Bypass && self.state.pending != Some(Pending::Csat) {
            let say = self.fill_caller(
                decision
                    .say
                    .as_deref()
                    .unwrap_or(&self.rt.agent.file.prompts.transfer),
            );
            let reason = format!(
                "routing rule {}: {}",
                decision.route.clone().unwrap_or_default(),
                decision.reasons.join(", ")
            );
            self.transfer(&mut out, decision.queue.as_deref(), &reason, &say);
            out.action = "routed".into();
        } else if let Some(code) = &chosen {
            // The caller picked a language: greet them again in it.
            out.push(self.rt.agent.file.agent.greeting.clone());
            out.action = format!("language:{code}");
        } else {
            let heard = self.rt.lang.heard(&text);
            out.said = text.to_string();
            out.language_open = input.language.is_none() && Arc::ptr_eq(&self.rt, &self.home);
            self.decide(
                &heard,
                dtmf.as_deref(),
                guess.as_ref(),
                kb.as_ref(),
                &mut out,
                &mut filled,
            );
            // Offer a person once, when the rules say so and the bot is not
            // in the middle of something.
            if decision.action == RouteAction::OfferHuman
                && !self.state.routing_offered
                && !self.state.ended
                && self.state.flow.is_none()
                && self.state.pending != Some(Pending::Csat)
                && !out
                    .actions
                    .iter()
                    .any(|a| matches!(a, Action::Transfer { .. }))
            {
                self.state.routing_offered = true;
                let say = self.fill_caller(
                    decision
                        .say
                        .as_deref()
                        .unwrap_or(&self.rt.agent.file.prompts.offer_human),
                );
                // The offer replaces a dangling "anything else?".
                if self.state.pending == Some(Pending::AnythingElse) {
                    let ae = self.rt.agent.file.prompts.anything_else.clone();
                    out.say.retain(|s| *s != ae);
                }
                out.push(say);
                self.state.pending = Some(Pending::OfferHuman);
                if out.action.is_empty() {
                    out.action = "offer_human".into();
                }
            }
        }
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
            ranking: guess
                .as_ref()
                .map(|g| g.ranking.clone())
                .unwrap_or_default(),
            scope_score: guess.as_ref().map_or(0.0, |g| g.scope_score),
            slots: filled,
            sentiment,
            action: out.action.clone(),
            reply: say.clone(),
            kb,
            nlu_ms,
            at_ms: now_ms(),
        };
        self.state.turns.push(trace.clone());
        if let Some(Action::Transfer { target, reason, .. }) = out
            .actions
            .iter()
            .find(|a| matches!(a, Action::Transfer { .. }))
        {
            self.save_handoff(target, reason);
        }
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

        // The end-of-call survey answer.
        if self.state.pending == Some(Pending::Csat) {
            self.state.pending = None;
            let score = dtmf
                .and_then(|d| d.trim_end_matches('#').parse::<i64>().ok())
                .or_else(|| {
                    tokenize(text).iter().find_map(|t| match t {
                        crate::nlu::numbers::Tok::Num(n) => n.digits.parse::<i64>().ok(),
                        _ => None,
                    })
                })
                .filter(|n| (1..=5).contains(n));
            if let Some(n) = score {
                self.state.csat = Some(n);
                out.push(self.rt.agent.file.csat.thanks.clone());
            }
            out.push(prompts.goodbye.clone());
            out.actions.push(Action::Hangup);
            self.state.ended = true;
            out.action = if score.is_some() { "csat" } else { "goodbye" }.into();
            return;
        }

        // 0 on the keypad always reaches a person.
        if dtmf == Some("0") {
            self.transfer(out, None, "caller pressed 0", &prompts.transfer);
            out.action = "transfer".into();
            return;
        }

        // A greeting alone ("Hi, good afternoon.") is no request and no
        // miss: greet back, or ask an open question again without counting
        // a try. Callers often greet first and ask after.
        if dtmf.is_none() && self.rt.lang.greeting_only(text) {
            match self.waiting_prompt() {
                Some(p) => out.push(p),
                None => out.push(self.rt.lang.phrase(Phrase::GreetBack).to_string()),
            }
            out.action = "greet".into();
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
                        None if def.spec.kind == Some(crate::nlu::entities::SlotKind::Text) => {
                            Some(out.said.clone())
                        }
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
                        Extracted::Invalid(problem) => {
                            let reason = problem.say(self.rt.lang);
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
                            self.goodbye(out);
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
                        (Pending::Csat, _) => {}
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
                self.state.flow = None;
                self.goodbye(out);
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
                    let ask = self.rt.lang.phrase(Phrase::YesOrNo);
                    self.bump_tries(out, "confirm", |o| {
                        o.push(ask);
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
        self.state.misses += 1;
        self.state.pending = None;
        if self.state.fallbacks >= self.rt.agent.file.transfer.max_fallbacks {
            out.push(prompts.offer_human.clone());
            out.action = "offer_human".into();
            self.state.pending = Some(Pending::OfferHuman);
        } else {
            out.push(prompts.fallback.clone());
            if out.language_open {
                for offer in self.menu_offers() {
                    out.push(offer);
                }
            }
            out.action = "fallback".into();
        }
    }

    /// Ends the call, with the satisfaction survey first when the agent
    /// opted in.
    fn goodbye(&mut self, out: &mut Out) {
        let csat = &self.rt.agent.file.csat;
        if csat.enabled && !self.state.csat_asked {
            self.state.csat_asked = true;
            out.push(csat.question.clone());
            self.state.pending = Some(Pending::Csat);
            out.action = "csat_survey".into();
            return;
        }
        out.push(self.rt.agent.file.prompts.goodbye.clone());
        out.actions.push(Action::Hangup);
        self.state.ended = true;
        out.action = "goodbye".into();
    }

    fn bump_tries(&mut self, out: &mut Out, what: &str, say: impl FnOnce(&mut Out)) {
        let max = self.rt.agent.file.transfer.slot_tries;
        self.state.misses += 1;
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
        let sorry = self.rt.lang.phrase(Phrase::Sorry);
        self.bump_tries(out, slot, |o| {
            if let Some(r) = reason {
                o.push(format!("{sorry} {r}"));
            }
            o.push(p);
        });
    }
}
