//! What a conversation tells the rest of the system: the caller's history
//! line, rule facts and routing, the hand-off packet, the summary, the
//! transcript and the stored interaction.

use super::*;

impl Conversation {
    /// "earlier today", "yesterday", "on Tuesday", "on November third".
    pub(super) fn when_phrase(&self, ms: i64) -> String {
        let Some(d) = chrono::DateTime::from_timestamp_millis(ms) else {
            return String::new();
        };
        let day = d.with_timezone(&chrono::Local).date_naive();
        let today = chrono::Local::now().date_naive();
        let lang = self.rt.lang;
        let on = |d: String| lang.phrase(Phrase::OnDay).replace("{day}", &d);
        match (today - day).num_days() {
            0 => lang.phrase(Phrase::EarlierToday).into(),
            1 => lang.phrase(Phrase::Yesterday).into(),
            2..=6 => on(lang.weekday(day)),
            _ => on(lang.say_date(day)),
        }
    }

    /// "your order one two three…" from the last contact's intent topic.
    pub(super) fn history_line(&self) -> String {
        let Some(last) = self.caller.history.first() else {
            return String::new();
        };
        if self.started_ms - last.started_ms > 14 * 86_400_000 {
            return String::new();
        }
        // Only a topic the agent wrote: an intent's bare name ("human")
        // is no phrase to greet anyone with, least of all in another language.
        let topic = last
            .intents
            .iter()
            .find_map(|i| self.rt.agent.intent(i).and_then(|d| d.topic.clone()))
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
    pub(super) fn facts(&self, intent: Option<&str>) -> Facts {
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
        f.insert("language".into(), Value::Str(self.state.language.clone()));
        f
    }

    pub(super) fn route(&mut self, intent: Option<&str>) -> Decision {
        let d = self.rt.agent.routing.decide(&self.facts(intent));
        if d.action != RouteAction::Continue {
            tracing::info!(call = %self.call.call_id, score = d.score, action = ?d.action, route = ?d.route, "routing rule matched");
        }
        self.state.routing = Some(d.clone());
        d
    }

    pub(super) fn fill_caller(&self, template: &str) -> String {
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
            language: self.state.language.clone(),
        }
    }

    pub(super) fn summary(
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

    pub(super) fn sentiment_samples(&self) -> Vec<SentimentSample> {
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
    pub(super) fn secret_answers(&self) -> Vec<bool> {
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

    /// Each caller turn with what the bot made of it and what came of it
    /// (`outcome`: the call's, for the last turn).
    pub fn learned_turns(&self, outcome: &str) -> Vec<LearnedTurn> {
        let secrets = self.secret_answers();
        let actions: Vec<(&str, Option<&str>)> = self
            .state
            .turns
            .iter()
            .map(|t| (t.action.as_str(), t.intent.as_deref()))
            .collect();
        let followed = followed(&actions, outcome);
        self.state
            .turns
            .iter()
            .zip(secrets)
            .zip(followed)
            .map(|((t, secret), followed)| LearnedTurn {
                turn: t.turn,
                text: if secret {
                    crate::nlu::numbers::mask_digits(&t.text)
                } else {
                    t.text.clone()
                },
                intents: t.ranking.clone(),
                intent: t.intent.clone(),
                scope_score: t.scope_score,
                slots: t.slots.clone(),
                action: t.action.clone(),
                followed,
            })
            .collect()
    }

    /// The interaction row for this call.
    pub fn interaction(&self, ended_ms: i64, response_ms: Option<i64>) -> Interaction {
        // A caller who hung up on hold was never handed over.
        let left_on_hold = self
            .state
            .human
            .as_ref()
            .is_some_and(|h| h.agent.is_none() && !h.returned);
        let transferred = self.state.transferred.is_some() && !left_on_hold;
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
            } else if left_on_hold {
                "abandoned".into()
            } else if resolved {
                "resolved".into()
            } else {
                "abandoned".into()
            },
            handled_by: if transferred { "human" } else { "bot" }.into(),
            csat: self.state.csat,
            response_ms,
            priority: d.score,
            summary: match &self.state.human {
                Some(h) => format!("{summary} {}", human_note(h)),
                None => summary,
            },
            human_agent: self.state.human.as_ref().and_then(|h| h.agent.clone()),
            wait_ms: self.state.human.as_ref().map(|h| h.wait_ms as i64),
            talk_ms: self
                .state
                .human
                .as_ref()
                .and_then(|h| h.talk_ms.map(|t| t as i64)),
            turns: Vec::new(),
            language: self.state.language.clone(),
        }
        .with_turns(|outcome| self.learned_turns(outcome))
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
}

/// What came of each turn, from the actions (and intents) of the turns and
/// the call's outcome: the bot fell back; the caller asked the same again;
/// the bot had to ask again; the call went to a person; or it went on. The
/// last turn gets the call's outcome.
pub(super) fn followed(turns: &[(&str, Option<&str>)], outcome: &str) -> Vec<String> {
    let to_person = |a: &str| {
        a.starts_with("transfer") || a.starts_with("escalate") || a.starts_with("offer_human")
    };
    turns
        .iter()
        .enumerate()
        .map(|(i, &(action, intent))| {
            if action == "fallback" {
                return "fell_back".into();
            }
            let Some(&(next, next_intent)) = turns.get(i + 1) else {
                return outcome.to_string();
            };
            if next.starts_with("reprompt:") {
                "reprompted"
            } else if intent.is_some() && intent == next_intent && !to_person(action) {
                "re_asked"
            } else if to_person(next) {
                "transferred"
            } else {
                "continued"
            }
            .into()
        })
        .collect()
}

/// One sentence on the desk hand-over, for the interaction's summary.
fn human_note(h: &crate::dialogue::HumanOutcome) -> String {
    let wait = h.wait_ms.div_ceil(1000);
    match (&h.agent, h.talk_ms) {
        (Some(a), Some(t)) if h.returned => format!(
            "{a} took the call from {} after {wait} s on hold, talked {} s and returned the caller to the bot.",
            h.queue,
            t.div_ceil(1000)
        ),
        (Some(a), Some(t)) => format!(
            "{a} took the call from {} after {wait} s on hold and talked {} s.",
            h.queue,
            t.div_ceil(1000)
        ),
        (Some(a), None) => format!("{a} took the call from {} but no audio connected.", h.queue),
        (None, _) if h.returned => format!(
            "Nobody in {} took the call within {wait} s; the bot took the caller back.",
            h.queue
        ),
        (None, _) => format!("The caller left after {wait} s on hold in {}.", h.queue),
    }
}

#[cfg(test)]
mod tests {
    use super::followed;

    #[test]
    fn what_followed_each_turn() {
        let turns = [
            ("fallback", None),
            ("answer:hours", Some("hours")),
            ("answer:hours", Some("hours")),
            ("collect:account", Some("balance")),
            ("reprompt:account", None),
            ("offer_human", None),
            ("transfer", Some("agent")),
        ];
        assert_eq!(
            followed(&turns, "transferred"),
            [
                "fell_back",
                "re_asked",
                "continued",
                "reprompted",
                "transferred",
                "transferred",
                "transferred"
            ]
        );
        assert_eq!(
            followed(&[("done:balance", Some("balance"))], "resolved"),
            ["resolved"]
        );
        assert!(followed(&[], "abandoned").is_empty());
    }
}
