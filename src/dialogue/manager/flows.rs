//! Running an agent's declarative flows: slots and their prompts, step
//! conditions and templates, starting, advancing and leaving a flow,
//! transfers and knowledge-base answers.

use super::*;

impl Conversation {
    pub(super) fn slot_def(&self, name: &str) -> Option<&SlotDef> {
        self.rt.agent.file.slot.get(name)
    }

    pub(super) fn flow_def(&self) -> Option<&FlowDef> {
        let f = self.state.flow.as_ref()?;
        self.rt.agent.flows.iter().find(|d| d.name == f.name)
    }

    pub(super) fn current_step(&self) -> Option<&Step> {
        let f = self.state.flow.as_ref()?;
        self.flow_def()?.step.get(f.step)
    }

    /// Fills `{name}` from slots (said for the ear) and lookup variables.
    pub(super) fn render(&self, template: &str) -> String {
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
                    Some(d) if d.said_as.contains_key(&v.canonical()) => {
                        d.said_as[&v.canonical()].clone()
                    }
                    d => v.spoken(d.and_then(|d| d.spec.kind), self.rt.lang),
                }
            } else {
                let v = self.state.vars.get(key).map_or("", String::as_str);
                let words = &self.rt.agent.data_words;
                words.get(v).cloned().unwrap_or_else(|| v.to_string())
            };
            out.push_str(&val);
            rest = &rest[i + j + 1..];
        }
        out.push_str(rest);
        out
    }

    pub(super) fn truthy(&self, name: &str) -> bool {
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

    pub(super) fn condition(&self, cond: &str) -> bool {
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

    pub(super) fn slot_prompt(&self, slot: &str, again: bool) -> String {
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
            // An order number keyed in is gathered up to `#` like a PIN,
            // not taken one key at a time.
            if let Some((min, max)) = d.spec.digit_string() {
                return Expect::Digits { min, max };
            }
            return match d.spec.kind {
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
    pub(super) fn waiting_prompt(&self) -> Option<String> {
        let step = self.current_step()?;
        if let Some(slot) = &step.collect {
            return Some(self.slot_prompt(slot, false));
        }
        step.confirm.as_ref().map(|c| self.render(c))
    }

    pub(super) fn transfer(
        &mut self,
        out: &mut Out,
        target: Option<&str>,
        reason: &str,
        say: &str,
    ) {
        let settings = &self.rt.agent.file.transfer;
        // A caller in a language with its own queue reaches people who
        // speak it, whichever topic queue the flow names.
        let target = match settings.language_queues.get(&self.state.language) {
            Some(q) if target.is_none_or(|t| t.starts_with("queue:")) => q.clone(),
            _ => target.map_or_else(|| settings.default.clone(), str::to_string),
        };
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

    /// The desk is done with the caller: if the agent gave them back (or
    /// nobody took them), the conversation goes on with the bot.
    pub fn human_done(&mut self, o: &crate::dialogue::HumanOutcome) {
        if o.returned {
            if let Some(target) = self.state.transferred.take() {
                let by = o.agent.as_deref().unwrap_or("nobody (wait ran out)");
                self.state.transfer_reason = format!(
                    "{} (back from {target}, returned by {by})",
                    self.state.transfer_reason
                );
            }
            self.state.ended = false;
        }
        self.state.human = Some(o.clone());
    }

    pub(super) fn save_handoff(&self, target: &str, reason: &str) {
        if let Some(sv) = &self.services {
            let p = self.handoff_packet(target, reason);
            if let Err(e) = sv.store.wait(handoff::save(&sv.store, &sv.handoff, &p)) {
                tracing::error!(error = %e, "cannot store hand-off packet");
            }
        }
    }

    pub(super) fn escalate(&mut self, out: &mut Out, reason: &str) {
        let p = self.rt.agent.file.prompts.escalate.clone();
        self.transfer(out, None, reason, &p);
        out.action = "escalate".into();
    }

    /// Runs the active flow from its current step until it needs the caller.
    pub(super) fn run_flow(&mut self, out: &mut Out) {
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
                    _ if locked => Err(self.rt.lang.phrase(Phrase::CannotVerify).to_string()),
                    Some(sv) => Backend {
                        store: &sv.store,
                        today: self.today,
                        caller: self.caller.customer.as_ref(),
                        verified: self.state.verified_account.as_deref(),
                        lang: self.rt.lang,
                    }
                    .run(name, &slots),
                    None => Err(self.rt.lang.phrase(Phrase::Unavailable).to_string()),
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
                            .unwrap_or_else(|| self.rt.lang.phrase(Phrase::LookupFailed).into());
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

    pub(super) fn start_flow(
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

    pub(super) fn answer(&mut self, out: &mut Out, hit: &KbHit, digression: bool) {
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
}
