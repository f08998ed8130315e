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
use crate::nlu::numbers::tokenize;
use crate::nlu::sentiment::{trend, Sentiment, SentimentModel};
use crate::routing::{Decision, RouteAction};
use crate::rules::{Facts, Value};
use crate::store::{now_ms, Customer, Interaction, SentimentSample, Utterance};

/// Everything loaded once per agent and shared by its calls.
pub struct AgentRuntime {
    pub agent: Agent,
    pub intents: IntentModel,
    pub kb: KnowledgeBase,
    pub sentiment: Arc<SentimentModel>,
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
        let sentiment = Arc::new(SentimentModel::train(&embedder)?);
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
    pub csat: Option<i64>,
    pub csat_asked: bool,
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
    rt: Arc<AgentRuntime>,
    pub state: ConversationState,
    today: NaiveDate,
    services: Option<Arc<Services>>,
    pub caller: CallerContext,
    call: CallMeta,
    started_ms: i64,
    progress: Arc<Progress>,
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
            services: None,
            caller: CallerContext::default(),
            call: CallMeta::default(),
            started_ms: now_ms(),
            progress: Arc::default(),
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
                self.caller = ctx;
            }
            Err(e) => tracing::error!(error = %e, "caller lookup failed; continuing anonymously"),
        }
    }

    /// "earlier today", "yesterday", "on Tuesday", "on November third".
    fn when_phrase(&self, ms: i64) -> String {
        let Some(d) = chrono::DateTime::from_timestamp_millis(ms) else {
            return String::new();
        };
        let day = d.with_timezone(&chrono::Local).date_naive();
        let today = chrono::Local::now().date_naive();
        match (today - day).num_days() {
            0 => "earlier today".into(),
            1 => "yesterday".into(),
            2..=6 => format!("on {}", day.format("%A")),
            _ => format!("on {}", crate::nlu::entities::say_date(day)),
        }
    }

    /// "your order one two three…" from the last contact's intent topic.
    fn history_line(&self) -> String {
        let Some(last) = self.caller.history.first() else {
            return String::new();
        };
        if self.started_ms - last.started_ms > 14 * 86_400_000 {
            return String::new();
        }
        let topic = last
            .intents
            .iter()
            .find_map(|i| self.rt.agent.intent(i).and_then(|d| d.topic.clone()))
            .or_else(|| last.intents.first().map(|i| i.replace('_', " ")))
            .unwrap_or_default();
        if topic.is_empty() {
            return String::new();
        }
        let mut topic = topic;
        for (k, v) in &last.slots {
            topic = topic.replace(&format!("{{{k}}}"), &crate::nlu::entities::spell(v));
        }
        self.rt
            .agent
            .file
            .agent
            .history
            .replace("{when}", &self.when_phrase(last.started_ms))
            .replace("{topic}", &topic)
    }

    /// Routing facts for this moment of the call.
    fn facts(&self, intent: Option<&str>) -> Facts {
        let mut f = Facts::new();
        let c = self.caller.customer.as_ref();
        f.insert("known".into(), Value::Bool(c.is_some()));
        if let Some(c) = c {
            f.insert("tier".into(), Value::Str(c.tier.clone()));
            f.insert("lifetime_value".into(), Value::Num(c.lifetime_value));
            f.insert("predicted_value".into(), Value::Num(c.predicted_value));
            if let Ok(since) = NaiveDate::parse_from_str(&c.customer_since, "%Y-%m-%d") {
                f.insert(
                    "tenure_years".into(),
                    Value::Num((self.today - since).num_days() as f64 / 365.25),
                );
            }
        }
        f.insert(
            "recent_contacts".into(),
            Value::Num(self.caller.recent_contacts as f64),
        );
        if let Some(p) = self.state.sentiment.last() {
            f.insert("sentiment".into(), Value::Num(p.score as f64));
        }
        f.insert(
            "sentiment_trend".into(),
            Value::Num(self.state.sentiment_trend() as f64),
        );
        if let Some(m) = self
            .state
            .sentiment
            .iter()
            .map(|p| p.score)
            .reduce(f32::min)
        {
            f.insert("min_sentiment".into(), Value::Num(m as f64));
        }
        if let Some(i) = intent {
            f.insert("intent".into(), Value::Str(i.to_string()));
        }
        f.insert(
            "failed_attempts".into(),
            Value::Num(self.state.misses as f64),
        );
        f.insert(
            "turn".into(),
            Value::Num(self.state.turns.len() as f64 + 1.0),
        );
        f
    }

    fn route(&mut self, intent: Option<&str>) -> Decision {
        let d = self.rt.agent.routing.decide(&self.facts(intent));
        if d.action != RouteAction::Continue {
            tracing::info!(call = %self.call.call_id, score = d.score, action = ?d.action, route = ?d.route, "routing rule matched");
        }
        self.state.routing = Some(d.clone());
        d
    }

    fn fill_caller(&self, template: &str) -> String {
        let c = self.caller.customer.as_ref();
        template
            .replace("{first_name}", c.map(|c| c.first_name()).unwrap_or(""))
            .replace("{tier}", c.map(|c| c.tier.as_str()).unwrap_or(""))
    }

    /// Builds, stores and queues the hand-off packet for this call.
    pub fn handoff_packet(&self, target: &str, reason: &str) -> Packet {
        let d = self.state.routing.clone().unwrap_or_default();
        let mut slots = BTreeMap::new();
        for (k, v) in &self.state.slots {
            let secret = self.slot_def(k).is_some_and(|d| d.secret);
            slots.insert(
                k.clone(),
                if secret { "****".into() } else { v.canonical() },
            );
        }
        let sentiment: Vec<SentimentSample> = self.sentiment_samples();
        let intents: Vec<IntentMark> = self
            .state
            .turns
            .iter()
            .filter_map(|t| {
                t.intent.as_ref().map(|i| IntentMark {
                    turn: t.turn,
                    intent: i.clone(),
                    confidence: t.confidence,
                })
            })
            .collect();
        let current = self.state.sentiment.last().map_or(0.0, |p| p.score);
        let trend = self.state.sentiment_trend();
        let summary = self.summary(target, reason, &d, current, trend);
        Packet {
            schema: handoff::SCHEMA_ID.into(),
            call_id: self.call.call_id.clone(),
            created_at: handoff::rfc3339(now_ms()),
            channel: self.call.channel.clone(),
            agent: self.rt.agent.file.agent.name.clone(),
            target: target.to_string(),
            priority: Priority {
                score: d.score,
                level: Priority::level_of(d.score).into(),
                reason: reason.to_string(),
                signals: d.signals.clone(),
            },
            summary,
            customer: self.caller.customer.clone(),
            verified: self.state.verified_account.is_some(),
            transcript: handoff::timed(&self.transcript()),
            intents,
            slots,
            sentiment: SentimentInfo {
                current,
                trend,
                trajectory: sentiment,
            },
            previous_interactions: handoff::previous(&self.caller.history, &self.call.call_id),
            context_path: format!("/calls/{}/handoff", self.call.call_id),
        }
    }

    fn summary(
        &self,
        target: &str,
        reason: &str,
        d: &Decision,
        current: f32,
        trend: f32,
    ) -> String {
        let mut parts = Vec::new();
        match &self.caller.customer {
            Some(c) => parts.push(format!(
                "{} ({} tier, lifetime value {:.0}, customer since {}); {} earlier contact(s) in the last {} days.",
                c.name,
                c.tier,
                c.lifetime_value,
                c.customer_since,
                self.caller.recent_contacts,
                self.rt.agent.routing.window_days
            )),
            None => parts.push("Caller not recognised.".into()),
        }
        let intents: Vec<&str> = self
            .state
            .turns
            .iter()
            .filter_map(|t| t.intent.as_deref())
            .filter(|i| !i.starts_with("kb:") && *i != crate::nlu::intent::OUT_OF_SCOPE)
            .collect();
        if !intents.is_empty() {
            let mut seen = Vec::new();
            for i in intents {
                if !seen.contains(&i) {
                    seen.push(i);
                }
            }
            parts.push(format!(
                "Asked about: {}.",
                seen.join(", ").replace('_', " ")
            ));
        }
        let filled: Vec<String> = self
            .state
            .slots
            .iter()
            .filter(|(k, _)| !self.slot_def(k).is_some_and(|d| d.secret))
            .map(|(k, v)| format!("{k} {}", v.canonical()))
            .collect();
        if !filled.is_empty() {
            parts.push(format!("Details: {}.", filled.join(", ")));
        }
        if let Some(last) = self.caller.history.first() {
            if !last.summary.is_empty() {
                parts.push(format!("Previous contact: {}", last.summary));
            }
        }
        if !self.state.sentiment.is_empty() {
            parts.push(format!(
                "Sentiment {} ({current:+.2}), trend {trend:+.2}.",
                crate::nlu::sentiment::Label::of(current).as_str()
            ));
        }
        parts.push(format!(
            "Sent to {target} at {} priority: {reason}.",
            Priority::level_of(d.score)
        ));
        if self.state.verified_account.is_some() {
            parts.push("Identity verified.".into());
        }
        parts.join(" ")
    }

    fn sentiment_samples(&self) -> Vec<SentimentSample> {
        self.state
            .sentiment
            .iter()
            .map(|p| SentimentSample {
                turn: p.turn,
                score: p.score,
                label: p.label.as_str().into(),
            })
            .collect()
    }

    /// Per turn: whether it answered a question for a secret slot (a PIN)
    /// — filled it, or was said right after the bot asked for it, whether
    /// or not it was usable.
    fn secret_answers(&self) -> Vec<bool> {
        let mut asked = false;
        self.state
            .turns
            .iter()
            .map(|t| {
                let secret = asked || t.slots.values().any(|v| v == "****");
                asked = t.action.split_once(':').is_some_and(|(verb, slot)| {
                    matches!(verb, "collect" | "reprompt")
                        && self.slot_def(slot).is_some_and(|d| d.secret)
                });
                secret
            })
            .collect()
    }

    /// The call as lines with times: greeting, then each turn and reply.
    pub fn transcript(&self) -> Vec<Utterance> {
        let mut t = Vec::new();
        if !self.state.greeting.is_empty() {
            t.push(Utterance {
                speaker: "bot".into(),
                text: self.state.greeting.clone(),
                at_ms: self.state.greeting_at_ms,
                dtmf: None,
            });
        }
        let secrets = self.secret_answers();
        for (turn, &secret) in self.state.turns.iter().zip(&secrets) {
            if !turn.text.is_empty() || turn.dtmf.is_some() {
                t.push(Utterance {
                    speaker: "caller".into(),
                    // A PIN or number said aloud is not kept either.
                    text: if secret {
                        crate::nlu::numbers::mask_digits(&turn.text)
                    } else {
                        turn.text.clone()
                    },
                    at_ms: turn.at_ms,
                    dtmf: turn.dtmf.as_ref().map(|d| {
                        // Keypad digits of secret slots (PINs) are not kept.
                        if secret {
                            "*".repeat(d.len())
                        } else {
                            d.clone()
                        }
                    }),
                });
            }
            if !turn.reply.is_empty() {
                t.push(Utterance {
                    speaker: "bot".into(),
                    text: turn.reply.clone(),
                    at_ms: turn.at_ms,
                    dtmf: None,
                });
            }
        }
        t
    }

    /// The interaction row for this call.
    pub fn interaction(&self, ended_ms: i64, response_ms: Option<i64>) -> Interaction {
        let transferred = self.state.transferred.is_some();
        let resolved = self
            .state
            .turns
            .iter()
            .any(|t| t.action.starts_with("done:") || t.action.starts_with("answer:"));
        let mut intents: Vec<String> = Vec::new();
        for t in &self.state.turns {
            if let Some(i) = &t.intent {
                if !intents.contains(i) && i != crate::nlu::intent::OUT_OF_SCOPE {
                    intents.push(i.clone());
                }
            }
        }
        let slots = self
            .state
            .slots
            .iter()
            .filter(|(k, _)| !self.slot_def(k).is_some_and(|d| d.secret))
            .map(|(k, v)| (k.clone(), v.canonical()))
            .collect();
        let d = self.state.routing.clone().unwrap_or_default();
        let current = self.state.sentiment.last().map_or(0.0, |p| p.score);
        let summary = match &self.state.transferred {
            Some(t) => self.summary(
                t,
                &self.state.transfer_reason,
                &d,
                current,
                self.state.sentiment_trend(),
            ),
            None => {
                let topics = intents.join(", ").replace('_', " ");
                let mut s = if topics.is_empty() {
                    "Call with the bot.".to_string()
                } else {
                    format!("Asked about {topics}.")
                };
                for (k, v) in &self.state.vars {
                    if k == "item" || k == "status" {
                        s.push_str(&format!(" {k}: {v}."));
                    }
                }
                if self.state.transfer_failures > 0 {
                    s.push_str(&format!(
                        " Transfer failed {} time(s): {}.",
                        self.state.transfer_failures,
                        self.state.transfer_reason.trim()
                    ));
                }
                s
            }
        };
        Interaction {
            id: self.call.call_id.clone(),
            customer_id: self.state.customer_id.clone(),
            channel: self.call.channel.clone(),
            agent: self.rt.agent.file.agent.name.clone(),
            started_ms: self.started_ms,
            ended_ms: Some(ended_ms),
            transcript: self.transcript(),
            intents,
            slots,
            sentiment: self.sentiment_samples(),
            outcome: if transferred {
                "transferred".into()
            } else if resolved {
                "resolved".into()
            } else {
                "abandoned".into()
            },
            handled_by: if transferred { "human" } else { "bot" }.into(),
            csat: self.state.csat,
            response_ms,
            priority: d.score,
            summary,
        }
    }

    /// Writes the interaction row so far (outcome `in_progress`, no end),
    /// off the turn's path: a crash loses at most the turn in flight.
    pub fn save_progress(&self) {
        let Some(sv) = &self.services else { return };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut row = self.interaction(now_ms(), None);
        row.ended_ms = None;
        row.outcome = IN_PROGRESS.into();
        *self.progress.latest.lock() = Some(row);
        let (progress, store) = (self.progress.clone(), sv.store.clone());
        rt.spawn(async move {
            let finished = progress.writing.lock().await;
            let row = progress.latest.lock().take();
            if let (false, Some(row)) = (*finished, row) {
                if let Err(e) = store.save_interaction(&row).await {
                    tracing::warn!(error = %e, "interaction progress not saved");
                }
            }
        });
    }

    /// Saves this call's interaction row.
    pub fn save_interaction(&self, response_ms: Option<i64>) {
        let Some(sv) = &self.services else { return };
        let row = self.interaction(now_ms(), response_ms);
        // The final row; no progress write may land after it.
        let saved = sv.store.wait(async {
            let mut finished = self.progress.writing.lock().await;
            *finished = true;
            self.progress.latest.lock().take();
            sv.store.save_interaction(&row).await
        });
        if let Err(e) = saved {
            tracing::error!(error = %e, "cannot save interaction");
            return;
        }
        // A resolved call is a business event: follow-up rules may act on it.
        if let (Some(tx), Some(c), "resolved") =
            (&sv.events, &row.customer_id, row.outcome.as_str())
        {
            let n = row.sentiment.len().max(1) as f32;
            let mean = row.sentiment.iter().map(|s| s.score).sum::<f32>() / n;
            let ev = serde_json::json!({
                "id": format!("call:{}:resolved", row.id),
                "type": "conversation_resolved",
                "customer_id": c,
                "interaction_id": row.id,
                "sentiment": mean,
                "intents": row.intents,
            });
            // The interaction row is stored either way; only the follow-up
            // is lost if the rules have fallen this far behind.
            if tx.try_send(ev).is_err() {
                tracing::error!(call = %row.id, "follow-up queue full; no follow-up for this call");
            }
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
        self.state.greeting = g.clone();
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

    /// What the flow's current step asks the caller for.
    pub fn expecting(&self) -> Expect {
        match &self.state.pending {
            // "On a scale of one to five": one spoken digit.
            Some(Pending::Csat) => return Expect::Digits { min: 1, max: 1 },
            Some(_) => return Expect::YesNo,
            None => {}
        }
        let Some(step) = self.current_step() else {
            return Expect::Open;
        };
        if let Some(slot) = &step.collect {
            let Some(d) = self.slot_def(slot) else {
                return Expect::Open;
            };
            return match d.spec.kind {
                Some(SlotKind::Digits) => {
                    let min = d.spec.length.or(d.spec.min_length).unwrap_or(1);
                    let max = d.spec.length.or(d.spec.max_length).unwrap_or(usize::MAX);
                    Expect::Digits { min, max }
                }
                Some(SlotKind::YesNo) => Expect::YesNo,
                Some(SlotKind::Text) | None => Expect::Open,
                Some(_) => Expect::Value,
            };
        }
        if step.confirm.is_some() {
            return Expect::YesNo;
        }
        Expect::Open
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
        let priority = self.state.routing.as_ref().map_or(0, |d| d.score);
        self.state.transferred = Some(target.clone());
        self.state.transfer_reason = reason.to_string();
        // The packet is stored once this turn is in the transcript (see
        // `save_handoff`), before the transport acts on the transfer.
        out.actions.push(Action::Transfer {
            target,
            reason: reason.to_string(),
            priority,
        });
        self.state.flow = None;
        self.state.pending = None;
        self.state.ended = true;
    }

    /// The transfer did not happen: the conversation goes on, and the
    /// interaction will not count as transferred (its summary says why).
    pub fn transfer_failed(&mut self, status: u16) {
        if let Some(target) = self.state.transferred.take() {
            self.state.transfer_reason = format!(
                "{} (transfer to {target} failed: {status})",
                self.state.transfer_reason
            );
        }
        self.state.transfer_failures += 1;
        self.state.ended = false;
    }

    fn save_handoff(&self, target: &str, reason: &str) {
        if let Some(sv) = &self.services {
            let p = self.handoff_packet(target, reason);
            if let Err(e) = sv.store.wait(handoff::save(&sv.store, &sv.handoff, &p)) {
                tracing::error!(error = %e, "cannot store hand-off packet");
            }
        }
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
                let locked = name == "verify_account" && self.state.verify_failures >= tries_max;
                let res = match &self.services {
                    _ if locked => Err("I can't verify you automatically on this call".to_string()),
                    Some(sv) => Backend {
                        store: &sv.store,
                        today: self.today,
                        caller: self.caller.customer.as_ref(),
                        verified: self.state.verified_account.as_deref(),
                    }
                    .run(name, &slots),
                    None => Err("our records aren't available right now".to_string()),
                };
                match res {
                    Ok(mut vars) => {
                        if let Some(acc) = vars.remove(VERIFIED_KEY) {
                            self.state.verified_account = Some(acc);
                        }
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
                        self.state.misses += 1;
                        let mut failures = {
                            let f = self.state.flow.as_mut().expect("flow is active");
                            f.lookup_failures += 1;
                            f.lookup_failures
                        };
                        if name == "verify_account" {
                            self.state.verify_failures += 1;
                            failures = self.state.verify_failures;
                        }
                        if name == "verify_account" && failures >= tries_max {
                            // No account data without verification; a person
                            // can verify the caller another way.
                            self.state.flow = None;
                            out.push(self.rt.agent.file.prompts.verify_failed.clone());
                            out.action = "verify_failed".into();
                            self.state.pending = Some(Pending::OfferHuman);
                            return;
                        }
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
        // Take what the caller already said ("my order 123456 is late"):
        // one number fills one slot (a card's digits are not also the
        // account's), and a secret (a PIN) is only taken when asked for.
        let mut taken: Vec<String> = Vec::new();
        for step in &def.step {
            if let Some(slot) = &step.collect {
                if self.state.slots.contains_key(slot) {
                    continue;
                }
                if let Some(d) = self.slot_def(slot) {
                    if d.secret {
                        continue;
                    }
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
                        let canonical = v.canonical();
                        if taken.contains(&canonical) {
                            continue;
                        }
                        taken.push(canonical.clone());
                        filled.insert(slot.clone(), canonical);
                        self.state.slots.insert(slot.clone(), v);
                    }
                }
            }
        }
        // A recognised caller's record answers some questions ("which order?").
        for step in &def.step {
            let Some(slot) = &step.collect else { continue };
            let from = self.slot_def(slot).and_then(|d| d.from_caller.clone());
            let v = match from.as_deref() {
                Some("latest_order") => self.caller.open_order.clone(),
                Some("only_account") => self.caller.only_account.clone(),
                _ => None,
            };
            if let Some(v) = v {
                if !self.state.slots.contains_key(slot) {
                    filled.insert(slot.clone(), v.clone());
                    self.state.slots.insert(slot.clone(), SlotValue::Text(v));
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
        } else {
            self.decide(
                &text,
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
        self.state.misses += 1;
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

    fn on_call_end(&mut self, response_ms: Option<i64>) {
        self.conv.save_interaction(response_ms);
    }
}

pub struct AgentFactory {
    rt: Arc<AgentRuntime>,
    services: Option<Arc<Services>>,
}

impl AgentFactory {
    pub fn new(rt: Arc<AgentRuntime>, services: Option<Arc<Services>>) -> Self {
        Self { rt, services }
    }

    pub fn runtime(&self) -> &Arc<AgentRuntime> {
        &self.rt
    }
}

impl DialogueFactory for AgentFactory {
    fn new_dialogue(&self) -> Box<dyn Dialogue> {
        let conv = match &self.services {
            Some(s) => Conversation::with_services(self.rt.clone(), s.clone()),
            None => Conversation::new(self.rt.clone()),
        };
        Box::new(AgentDialogue { conv })
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
