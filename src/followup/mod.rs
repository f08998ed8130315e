//! Proactive follow-up: business events in (`POST /events`), the next-best
//! message out, and the customer's reply continuing the conversation.
//!
//! Rules (`config/followups.toml`) match an event type and a condition over
//! the event and the customer's record, and open a thread with a first
//! message. A reply is scored for sentiment and picks the rule's positive,
//! neutral or negative branch: another message, optionally a ticket for a
//! team, a discount proportionate to the customer's predicted value, or a
//! review request. Messages go through the outbox (stored before sending,
//! unique per cause), so a repeated event never sends twice and a channel
//! outage only delays them.

pub mod channel;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::nlu::embed::Embedder;
use crate::nlu::sentiment::{Label, SentimentModel};
use crate::rules::{Condition, Facts, Value};
use crate::store::{now_ms, Customer, OutboxMessage, Store, StoreError, Thread, Ticket};

#[derive(Debug, thiserror::Error)]
pub enum FollowupError {
    #[error("{0}")]
    Invalid(String),
    #[error("no customer matches this event")]
    UnknownCustomer,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}:{line}: {msg}")]
    Rules {
        path: String,
        line: usize,
        msg: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FollowupConfig {
    pub rules: String,
    pub brand: String,
    pub tick_ms: u64,
}

impl Default for FollowupConfig {
    fn default() -> Self {
        Self {
            rules: "config/followups.toml".into(),
            brand: "Northwind Shop".into(),
            tick_ms: 500,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Discount {
    /// Percent per 100 of predicted customer value…
    pub percent_per_100: f64,
    /// …bounded to this range.
    pub min: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Branch {
    pub message: String,
    pub discount: Option<Discount>,
    /// Open a ticket for this team with the reply.
    pub ticket: Option<String>,
    /// The customer was asked for a review (counted on their record when
    /// they reply again).
    #[serde(default)]
    pub review_request: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Replies {
    pub positive: Option<Branch>,
    pub neutral: Option<Branch>,
    pub negative: Option<Branch>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    /// Event type that triggers it.
    pub on: String,
    #[serde(default)]
    pub when: Condition,
    /// sms or call.
    #[serde(default = "sms")]
    pub channel: String,
    pub message: String,
    pub reply: Option<Replies>,
}

fn sms() -> String {
    "sms".into()
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RulesFile {
    #[serde(default)]
    pub rule: Vec<Rule>,
    /// Added to review requests as `{review_link}`.
    #[serde(default)]
    pub review_link: String,
}

impl RulesFile {
    pub fn load(path: &Path) -> Result<Self, FollowupError> {
        let text = std::fs::read_to_string(path).map_err(|e| FollowupError::Rules {
            path: path.display().to_string(),
            line: 1,
            msg: e.to_string(),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, path: &str) -> Result<Self, FollowupError> {
        toml::from_str(text).map_err(|e: toml::de::Error| FollowupError::Rules {
            path: path.to_string(),
            line: e.span().map_or(1, |s| crate::agent::line_at(text, s.start)),
            msg: e.message().to_string(),
        })
    }
}

/// Scores a reply's sentiment with the same model the calls use.
pub struct Scorer {
    pub embedder: Arc<Embedder>,
    pub model: Arc<SentimentModel>,
}

impl Scorer {
    pub fn score(&self, text: &str) -> f32 {
        match self.embedder.embed(&text.to_lowercase()) {
            Ok(v) => self.model.score_embedding(&v).score,
            Err(e) => {
                tracing::warn!(error = %e, "embedding failed; reply scored neutral");
                0.0
            }
        }
    }
}

pub struct Followups {
    pub rules: RulesFile,
    pub brand: String,
    pub store: Store,
    pub scorer: Scorer,
    /// How long a node holds an event whose rules it is running before
    /// another node may run them (it died).
    pub lease_ms: i64,
}

/// An event whose rules failed to run is tried again this much later.
const EVENT_RETRY_MS: i64 = 60_000;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EventOutcome {
    pub event_id: String,
    pub duplicate: bool,
    pub threads: Vec<String>,
    pub messages: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReplyOutcome {
    pub thread: Option<String>,
    pub sentiment: f32,
    pub label: String,
    pub messages: Vec<String>,
    pub tickets: Vec<String>,
}

fn fill(template: &str, vars: &BTreeMap<String, String>) -> String {
    let mut s = template.to_string();
    for (k, v) in vars {
        s = s.replace(&format!("{{{k}}}"), v);
    }
    s
}

/// An event's fields and its `type`.
fn event_parts(
    ev: &serde_json::Value,
) -> Result<(&serde_json::Map<String, serde_json::Value>, &str), FollowupError> {
    let obj = ev
        .as_object()
        .ok_or_else(|| FollowupError::Invalid("an event is a JSON object".into()))?;
    let kind = obj
        .get("type")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| FollowupError::Invalid("`type` is required".into()))?;
    Ok((obj, kind))
}

/// The thread event `event` starts under rule `rule`: the same every time.
fn thread_id(event: &str, rule: &str) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(format!("{event}\n{rule}").as_bytes());
    format!("T-{}", &hex::encode(h)[..32])
}

fn json_fact(v: &serde_json::Value) -> Option<Value> {
    match v {
        serde_json::Value::Bool(b) => Some(Value::Bool(*b)),
        serde_json::Value::Number(n) => n.as_f64().map(Value::Num),
        serde_json::Value::String(s) => Some(Value::Str(s.clone())),
        _ => None,
    }
}

impl Followups {
    /// Takes one business event: records it once, then starts the threads
    /// whose rules match. The event is leased to this node until its rules
    /// have run, so if the node dies in between another runs them.
    pub async fn handle_event(
        &self,
        ev: &serde_json::Value,
    ) -> Result<EventOutcome, FollowupError> {
        let (obj, kind) = event_parts(ev)?;
        let customer = self.customer_of(obj).await?;
        let id = obj
            .get("id")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| format!("evt-{}", uuid::Uuid::new_v4().simple()));
        let lease = now_ms() + self.lease_ms;
        if !self
            .store
            .insert_event(&id, kind, Some(&customer.id), ev, Some(lease))
            .await?
        {
            return Ok(EventOutcome {
                event_id: id,
                duplicate: true,
                ..Default::default()
            });
        }
        self.finish(&id, kind, obj, &customer).await
    }

    /// Runs the rules of events another node took but did not finish (it
    /// died, or they failed): leased here first, so one node runs each.
    /// Returns how many ran.
    pub async fn run_unfinished(&self) -> Result<usize, FollowupError> {
        let st = &self.store;
        let due = st
            .lease_due_events(st.node_id(), now_ms(), self.lease_ms)
            .await?;
        let mut ran = 0;
        for (id, ev) in due {
            let run = async {
                let (obj, kind) = event_parts(&ev)?;
                let customer = self.customer_of(obj).await?;
                self.finish(&id, kind, obj, &customer).await
            };
            match run.await {
                Ok(out) => {
                    ran += 1;
                    tracing::info!(event = %id, threads = out.threads.len(), "unfinished event's rules ran");
                }
                Err(e) => {
                    tracing::warn!(event = %id, error = %e, "an event's rules failed; retried later");
                    st.event_failed(&id, now_ms() + EVENT_RETRY_MS).await?;
                }
            }
        }
        Ok(ran)
    }

    async fn customer_of(
        &self,
        obj: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Customer, FollowupError> {
        let st = &self.store;
        let customer = if let Some(id) = obj.get("customer_id").and_then(|v| v.as_str()) {
            st.customer(id).await?
        } else if let Some(p) = obj.get("phone").and_then(|v| v.as_str()) {
            st.customer_by_phone(p).await?
        } else if let Some(o) = obj.get("order_id").and_then(|v| v.as_str()) {
            match st.order(o).await? {
                Some(o) => st.customer(&o.customer_id).await?,
                None => None,
            }
        } else {
            None
        };
        customer.ok_or(FollowupError::UnknownCustomer)
    }

    /// Starts the threads of event `id`'s matching rules, then marks the
    /// event done. Running it twice (a node died after some of it) starts
    /// nothing twice: thread ids and message keys come from the event id.
    async fn finish(
        &self,
        id: &str,
        kind: &str,
        obj: &serde_json::Map<String, serde_json::Value>,
        customer: &Customer,
    ) -> Result<EventOutcome, FollowupError> {
        let st = &self.store;
        let mut out = EventOutcome {
            event_id: id.to_string(),
            ..Default::default()
        };
        let orders = st.orders_of(&customer.id).await?;
        let mut facts = Facts::new();
        for (k, v) in obj {
            if let Some(f) = json_fact(v) {
                facts.insert(k.clone(), f);
            }
        }
        facts.insert("tier".into(), Value::Str(customer.tier.clone()));
        facts.insert("lifetime_value".into(), Value::Num(customer.lifetime_value));
        facts.insert(
            "predicted_value".into(),
            Value::Num(customer.predicted_value),
        );
        facts.insert(
            "reviews_left".into(),
            Value::Num(customer.reviews_left as f64),
        );
        facts.insert("orders".into(), Value::Num(orders.len() as f64));
        facts.insert("consent_sms".into(), Value::Bool(customer.consent_sms));
        let mut vars = BTreeMap::new();
        vars.insert("first_name".into(), customer.first_name().to_string());
        vars.insert("brand".into(), self.brand.clone());
        vars.insert("review_link".into(), self.rules.review_link.clone());
        if let Some(oid) = obj.get("order_id").and_then(|v| v.as_str()) {
            if let Some(o) = orders.iter().find(|o| o.id == oid) {
                vars.insert("item".into(), o.item.clone());
                vars.insert("order_id".into(), o.id.clone());
            }
        }
        // The thing they bought before and haven't reviewed.
        if let Some(o) = orders
            .iter()
            .find(|o| o.status == "delivered" && !o.reviewed)
        {
            vars.insert("last_item".into(), o.item.clone());
            vars.insert("last_order_id".into(), o.id.clone());
        }
        for rule in self.rules.rule.iter().filter(|r| r.on == kind) {
            if !rule.when.eval(&facts) {
                continue;
            }
            let now = now_ms();
            let thread = Thread {
                id: thread_id(id, &rule.name),
                customer_id: customer.id.clone(),
                rule: rule.name.clone(),
                step: "awaiting_reply".into(),
                vars: vars.clone(),
                status: if rule.reply.is_some() {
                    "open"
                } else {
                    "closed"
                }
                .into(),
                created_ms: now,
                updated_ms: now,
            };
            st.save_thread(&thread).await?;
            let m = self
                .queue(
                    &customer.id,
                    customer.consent_sms,
                    &thread.id,
                    &rule.channel,
                    &fill(&rule.message, &vars),
                    &format!("event:{id}:rule:{}", rule.name),
                )
                .await?;
            tracing::info!(rule = %rule.name, customer = %customer.id, thread = %thread.id, "follow-up started");
            out.threads.push(thread.id);
            out.messages.extend(m);
        }
        st.event_done(id).await?;
        Ok(out)
    }

    async fn queue(
        &self,
        customer_id: &str,
        consent: bool,
        thread: &str,
        channel: &str,
        body: &str,
        key: &str,
    ) -> Result<Option<String>, FollowupError> {
        let recipient = self.store.phone_of(customer_id).await?.unwrap_or_default();
        let now = now_ms();
        let m = OutboxMessage {
            id: format!("M-{}", uuid::Uuid::new_v4().simple()),
            dedupe_key: key.to_string(),
            thread_id: Some(thread.to_string()),
            customer_id: customer_id.to_string(),
            channel: channel.to_string(),
            recipient,
            body: body.to_string(),
            status: "pending".into(),
            next_attempt_ms: now,
            created_ms: now,
            ..Default::default()
        };
        if !self.store.enqueue(&m).await? {
            return Ok(None);
        }
        if !consent {
            // Recorded, never sent: the customer has not opted in.
            self.store
                .outbox_attempted(&m.id, "suppressed", None, None, now, "no consent")
                .await?;
        }
        Ok(Some(m.id))
    }

    /// A customer's reply (SMS or any channel) to their open thread.
    pub async fn handle_reply(
        &self,
        from: &str,
        body: &str,
        channel: &str,
    ) -> Result<ReplyOutcome, FollowupError> {
        let st = &self.store;
        let customer = st
            .customer_by_phone(from)
            .await?
            .ok_or(FollowupError::UnknownCustomer)?;
        let score = self.scorer.score(body);
        let label = Label::of(score);
        let mut out = ReplyOutcome {
            sentiment: score,
            label: label.as_str().into(),
            ..Default::default()
        };
        let thread = st.open_thread_of(&customer.id).await?;
        st.record_inbound(
            thread.as_ref().map(|t| t.id.as_str()),
            Some(&customer.id),
            channel,
            body,
            Some(score as f64),
        )
        .await?;
        let Some(mut thread) = thread else {
            return Ok(out);
        };
        out.thread = Some(thread.id.clone());
        let Some(rule) = self.rules.rule.iter().find(|r| r.name == thread.rule) else {
            return Ok(out);
        };
        if thread.step == "review_requested" {
            // They answered the review request: count it and close.
            st.add_review(
                &customer.id,
                thread.vars.get("last_order_id").map(String::as_str),
            )
            .await?;
            thread.status = "closed".into();
            thread.step = "reviewed".into();
            thread.updated_ms = now_ms();
            st.save_thread(&thread).await?;
            return Ok(out);
        }
        let Some(replies) = &rule.reply else {
            return Ok(out);
        };
        let branch = match label {
            Label::Positive => replies.positive.as_ref(),
            Label::Neutral => replies.neutral.as_ref().or(replies.positive.as_ref()),
            Label::Negative => replies.negative.as_ref(),
        };
        let mut vars = thread.vars.clone();
        vars.insert("first_name".into(), customer.first_name().to_string());
        thread.step = format!("replied_{}", label.as_str());
        thread.status = "closed".into();
        if let Some(b) = branch {
            if let Some(d) = &b.discount {
                let pct = (customer.predicted_value / 100.0 * d.percent_per_100)
                    .round()
                    .clamp(d.min, d.max);
                vars.insert("discount_percent".into(), format!("{pct:.0}"));
                let code = format!(
                    "SORRY{pct:.0}-{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..6].to_uppercase()
                );
                vars.insert("discount_code".into(), code);
            }
            if let Some(team) = &b.ticket {
                let t = Ticket {
                    id: format!("K-{}", uuid::Uuid::new_v4().simple()),
                    customer_id: Some(customer.id.clone()),
                    interaction_id: None,
                    queue: team.clone(),
                    subject: format!("Follow-up {}: {} feedback", rule.name, label.as_str()),
                    body: body.to_string(),
                    status: "open".into(),
                    created_ms: now_ms(),
                };
                st.insert_ticket(&t).await?;
                out.tickets.push(t.id);
            }
            if b.review_request {
                thread.step = "review_requested".into();
                thread.status = "open".into();
            }
            let key = format!("thread:{}:{}", thread.id, thread.step);
            if let Some(m) = self
                .queue(
                    &customer.id,
                    customer.consent_sms,
                    &thread.id,
                    &rule.channel,
                    &fill(&b.message, &vars),
                    &key,
                )
                .await?
            {
                out.messages.push(m);
            }
        }
        thread.vars = vars;
        thread.updated_ms = now_ms();
        st.save_thread(&thread).await?;
        tracing::info!(thread = %thread.id, step = %thread.step, sentiment = score, "follow-up reply handled");
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_rules_parse() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/followups.toml");
        let r = RulesFile::load(&p).unwrap();
        assert!(r.rule.iter().any(|r| r.on == "return_processed"));
        assert!(r.rule.iter().any(|r| r.on == "conversation_resolved"));
        let e = RulesFile::parse(
            "[[rule]]\nname = \"x\"\non = \"a\"\nwhen = \"x >= y\"\nmessage = \"m\"\n",
            "f.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("f.toml:4"), "{e}");
    }
}
