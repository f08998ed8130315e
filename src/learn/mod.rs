//! Learning from calls behind a gate: the intent labels supervisors gave
//! reviewed turns become a new version of the agent (examples learned on
//! top of its files), which is promoted only if it does no worse than the
//! version served now — on the labelled turns held out of training and on
//! the agent's own conversation tests. Versions live in the store, so every
//! node serving the agent follows a promotion or a rollback without a
//! restart; calls already running keep the version they started with.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::agent::{testing, Agent, AgentError};
use crate::dialogue::manager::{AgentRuntime, AgentSlot};
use crate::dialogue::Services;
use crate::nlu::embed::Embedder;
use crate::review;
use crate::store::{now_ms, AgentVersion, Interaction, Label, LabelKind, Store};

pub mod cli;

/// One labelled turn in this many (by a hash of its id, so the same turns
/// every time) is held out of training to judge the new version.
pub const HOLDOUT_EVERY: u8 = 5;

/// Whether labelled turn `l` is kept out of training for the gate.
pub fn held_out(l: &Label) -> bool {
    let h = Sha256::digest(format!("{}#{}", l.interaction_id, l.turn).as_bytes());
    h[0] % HOLDOUT_EVERY == 0
}

/// The intent labels that name something `agent` can be trained on (one
/// of its intents, or `kb:ARTICLE`), split into training and held out;
/// the rest (new intents not written yet, knowledge gaps) are only
/// counted.
#[derive(Debug, Default)]
pub struct Split {
    pub train: Vec<(String, String)>,
    pub held_out: Vec<(String, String)>,
    /// Intent labels naming an intent the agent lacks.
    pub unknown_intent: usize,
    /// New-intent and knowledge-gap labels, by what they were called.
    pub to_write: BTreeMap<String, usize>,
}

/// `languages`: the language of each labelled call (by interaction id);
/// a turn said in one of the agent's further languages is learned by that
/// language's agent, not as an example of the agent's own.
pub fn split(agent: &Agent, labels: &[Label], languages: &HashMap<String, String>) -> Split {
    let mut s = Split::default();
    for l in labels {
        match l.kind {
            LabelKind::Intent => {
                let lang = languages
                    .get(&l.interaction_id)
                    .filter(|lang| agent.locales.contains_key(lang.as_str()));
                let a = lang.map_or(agent, |lang| &agent.locales[lang]);
                let known = a.intent(&l.value).is_some()
                    || l.value
                        .strip_prefix("kb:")
                        .is_some_and(|id| a.kb.iter().any(|x| x.id == id));
                if !known {
                    s.unknown_intent += 1;
                    continue;
                }
                let value = match lang {
                    Some(lang) => format!("{lang}/{}", l.value),
                    None => l.value.clone(),
                };
                let pair = (l.text.clone(), value);
                if held_out(l) {
                    s.held_out.push(pair);
                } else {
                    s.train.push(pair);
                }
            }
            LabelKind::NewIntent | LabelKind::KbGap => {
                let what = format!("{} {}", l.kind.as_str(), l.value);
                *s.to_write.entry(what).or_insert(0) += 1;
            }
            LabelKind::Noise => {}
        }
    }
    s
}

/// `agent` with `examples` ((text, intent or kb:ARTICLE)) added to its own.
/// Examples for a further language (`LANG/NAME`) join that language's agent.
pub fn with_examples(agent: &Agent, examples: &[(String, String)]) -> Agent {
    let mut a = agent.clone();
    let mut further: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (text, name) in examples {
        if let (Some(lang), rest) = in_language(agent, name) {
            further
                .entry(lang.to_string())
                .or_default()
                .push((text.clone(), rest.to_string()));
        } else if let Some(id) = name.strip_prefix("kb:") {
            if let Some(art) = a.kb.iter_mut().find(|x| x.id == id) {
                if !art.questions.contains(text) {
                    art.questions.push(text.clone());
                }
            }
        } else if let Some(i) = a.intents.iter_mut().find(|i| &i.name == name) {
            if !i.examples.contains(text) {
                i.examples.push(text.clone());
            }
        }
    }
    for (lang, ex) in further {
        if let Some(loc) = a.locales.get(&lang) {
            let learned = with_examples(loc, &ex);
            a.locales.insert(lang, learned);
        }
    }
    a
}

/// `old` and `new` learned examples together; where both have a text, the
/// newer label wins.
pub fn merge(old: &[(String, String)], new: &[(String, String)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = old
        .iter()
        .filter(|(t, _)| !new.iter().any(|(n, _)| n == t))
        .cloned()
        .collect();
    for p in new {
        if !out.contains(p) {
            out.push(p.clone());
        }
    }
    out
}

/// The review queue now: the turns to look at that nobody labelled yet,
/// grouped by what was said.
#[derive(Debug, Clone, Serialize)]
pub struct Queue {
    /// Calls stored.
    pub calls: usize,
    /// Turns in the queue.
    pub turns: usize,
    pub groups: Vec<review::Group>,
}

/// How far back the review queue looks by default: older misses have
/// usually been fixed or forgotten, and reading every call ever stored on
/// each request would grow without bound.
pub const QUEUE_DAYS: u32 = 30;

/// The review queue over the calls of the last `days` days (0: all).
pub async fn queue(
    store: &Store,
    embedder: Arc<Embedder>,
    similarity: f32,
    days: u32,
) -> anyhow::Result<Queue> {
    let since = if days == 0 {
        0
    } else {
        now_ms() - i64::from(days) * 86_400_000
    };
    let calls = store.interactions_since(since).await?;
    let labelled: HashSet<(String, u32)> = store
        .labels()
        .await?
        .into_iter()
        .map(|l| (l.interaction_id, l.turn))
        .collect();
    let items: Vec<review::Item> = review::queue(&calls)
        .into_iter()
        .filter(|i| !labelled.contains(&(i.interaction.clone(), i.turn)))
        .collect();
    let texts: Vec<(String, String)> = items
        .iter()
        .map(|i| (i.language.clone(), i.text.to_lowercase()))
        .collect();
    let emb = tokio::task::spawn_blocking(move || embed_in_language(&embedder, &texts)).await??;
    Ok(Queue {
        calls: calls.len(),
        turns: items.len(),
        groups: review::group(&items, &emb, similarity),
    })
}

/// Each (language, text) embedded by its language's encoder
/// ([`Embedder::for_language`]), in order.
fn embed_in_language(
    embedder: &Arc<Embedder>,
    texts: &[(String, String)],
) -> Result<Vec<Vec<f32>>, crate::nlu::NluError> {
    let mut out = vec![Vec::new(); texts.len()];
    let mut langs: Vec<&str> = texts.iter().map(|(l, _)| l.as_str()).collect();
    langs.sort_unstable();
    langs.dedup();
    for lang in langs {
        let idx: Vec<usize> = (0..texts.len()).filter(|&i| texts[i].0 == lang).collect();
        let these: Vec<&str> = idx.iter().map(|&i| texts[i].1.as_str()).collect();
        let v = embedder.for_language(lang).embed_many(&these)?;
        for (i, e) in idx.into_iter().zip(v) {
            out[i] = e;
        }
    }
    Ok(out)
}

/// A learned example's target in a further language of the agent is
/// written `LANG/NAME` (`es/check_balance`, `es/kb:fees`); in the agent's
/// own language, `NAME`.
fn in_language<'a>(agent: &Agent, name: &'a str) -> (Option<&'a str>, &'a str) {
    match name.split_once('/') {
        Some((lang, rest)) if agent.locales.contains_key(lang) => (Some(lang), rest),
        _ => (None, name),
    }
}

/// A turn as people name it: `CALL#TURN`.
pub fn parse_turn(t: &str) -> Option<(String, u32)> {
    let (call, n) = t.rsplit_once('#')?;
    Some((call.to_string(), n.parse().ok()?)).filter(|(c, _)| !c.is_empty())
}

/// Labels stored turns ((call, turn)) `kind` `value`, by `by`; every turn
/// must exist. Returns how many were labelled.
pub async fn label(
    store: &Store,
    turns: &[(String, u32)],
    kind: LabelKind,
    value: &str,
    by: &str,
) -> anyhow::Result<usize> {
    // Each call named is read once, not every call stored.
    let mut calls: HashMap<String, Option<Interaction>> = HashMap::new();
    for (call, _) in turns {
        if !calls.contains_key(call) {
            calls.insert(call.clone(), store.interaction(call).await?);
        }
    }
    let mut labels = Vec::with_capacity(turns.len());
    for (call, n) in turns {
        let text = calls
            .get(call)
            .and_then(Option::as_ref)
            .and_then(|c| c.turns.iter().find(|t| t.turn == *n))
            .map(|t| t.text.clone())
            .ok_or_else(|| anyhow::anyhow!("no stored turn {call}#{n}"))?;
        labels.push(Label {
            interaction_id: call.clone(),
            turn: *n,
            text,
            kind,
            value: value.to_string(),
            labelled_by: by.to_string(),
            labelled_ms: now_ms(),
        });
    }
    for l in &labels {
        store.put_label(l).await?;
    }
    Ok(labels.len())
}

/// How one version does.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Figures {
    /// Held-out labelled turns it put on their label.
    pub held_out_right: usize,
    pub held_out: usize,
    /// Conversation-test turns run, and the failures.
    pub test_turns: usize,
    pub test_failures: Vec<String>,
}

impl Figures {
    pub fn held_out_accuracy(&self) -> f64 {
        if self.held_out == 0 {
            1.0
        } else {
            self.held_out_right as f64 / self.held_out as f64
        }
    }
}

/// The gate's report on a candidate version.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub agent: String,
    /// The version served when it was built, and its figures.
    pub before_version: i64,
    pub before: Figures,
    pub version: i64,
    pub after: Figures,
    /// Learned examples before and after.
    pub examples_before: usize,
    pub examples_after: usize,
    pub labels: usize,
    pub unknown_intent: usize,
    pub to_write: BTreeMap<String, usize>,
    pub promoted: bool,
    pub why: String,
    /// Building and judging both versions.
    pub ms: u64,
}

/// Whether `after` may replace `before`: nothing gets worse, and there is
/// something new.
pub fn judge(before: &Figures, after: &Figures, learned: bool) -> (bool, String) {
    if !learned {
        return (false, "no new labelled examples".into());
    }
    if after.test_failures.len() > before.test_failures.len() {
        return (
            false,
            format!(
                "conversation tests: {} failures after, {} before (first: {})",
                after.test_failures.len(),
                before.test_failures.len(),
                after.test_failures.first().cloned().unwrap_or_default()
            ),
        );
    }
    if after.held_out_right < before.held_out_right {
        return (
            false,
            format!(
                "held-out labelled turns: {}/{} right after, {}/{} before",
                after.held_out_right, after.held_out, before.held_out_right, before.held_out
            ),
        );
    }
    (true, "nothing got worse".into())
}

/// Runs the held-out turns and `agent`'s conversation tests on `rt`.
pub fn measure(
    rt: &Arc<AgentRuntime>,
    services: &Arc<Services>,
    held_out: &[(String, String)],
) -> Result<Figures, AgentError> {
    let mut f = Figures {
        held_out: held_out.len(),
        ..Default::default()
    };
    for (text, want) in held_out {
        let (rt, want) = match want.split_once('/') {
            Some((lang, rest)) if rt.locales.contains_key(lang) => (&rt.locales[lang], rest),
            _ => (rt, want.as_str()),
        };
        let g = rt.intents.classify(text)?;
        if g.intent.as_deref() == Some(want) {
            f.held_out_right += 1;
        }
    }
    let tests = rt.agent.dir.join("tests");
    let mut files: Vec<_> = std::fs::read_dir(&tests)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    for p in files {
        let (turns, fails) = testing::run_file(rt, services, &p, |_, _| {})?;
        f.test_turns += turns;
        f.test_failures.extend(fails);
    }
    Ok(f)
}

/// The examples learned in `version` of `agent` (none for 0).
pub async fn examples_of(
    store: &Store,
    agent: &str,
    version: i64,
) -> anyhow::Result<Vec<(String, String)>> {
    if version == 0 {
        return Ok(Vec::new());
    }
    store
        .agent_versions(agent)
        .await?
        .into_iter()
        .find(|v| v.version == version)
        .map(|v| v.examples)
        .ok_or_else(|| anyhow::anyhow!("{agent} has no version {version}"))
}

/// Builds a new version of the agent in `dir` from every label in `store`,
/// judges it against the version served now and stores it, promoted if it
/// passed. Blocking work runs off the async threads.
pub async fn retrain(
    store: &Store,
    dir: &Path,
    models_dir: &Path,
    by: &str,
) -> anyhow::Result<Report> {
    let t0 = Instant::now();
    let agent = Agent::load(dir)?;
    let name = agent.file.agent.name.clone();
    let current = store.agent_version(&name).await?;
    let old = examples_of(store, &name, current).await?;
    let labels = store.labels().await?;
    let mut languages = HashMap::new();
    for l in &labels {
        if !languages.contains_key(&l.interaction_id) {
            if let Some(call) = store.interaction(&l.interaction_id).await? {
                languages.insert(l.interaction_id.clone(), call.language);
            }
        }
    }
    let sp = split(&agent, &labels, &languages);
    let new = merge(&old, &sp.train);
    let learned = new.len() != old.len() || new.iter().any(|p| !old.contains(p));
    let version = store
        .agent_versions(&name)
        .await?
        .last()
        .map_or(1, |v| v.version + 1);
    let emb_dir = models_dir.join(crate::nlu::embed::DEFAULT_DIR.trim_start_matches("models/"));
    let held = sp.held_out.clone();
    let (n_old, n_new) = (old.len(), new.len());
    let (before, after) = tokio::task::spawn_blocking({
        let new = new.clone();
        move || -> anyhow::Result<(Figures, Figures)> {
            let emb = Arc::new(Embedder::load(&emb_dir)?);
            let demo = testing::DemoStore::open()?;
            let before = AgentRuntime::from_agent(with_examples(&agent, &old), emb.clone())?;
            let b = measure(&before, &demo.services, &held)?;
            let after = AgentRuntime::from_agent(with_examples(&agent, &new), emb)?;
            let a = measure(&after, &demo.services, &held)?;
            Ok((b, a))
        }
    })
    .await??;
    let (promoted, why) = judge(&before, &after, learned);
    let report = Report {
        agent: name.clone(),
        before_version: current,
        before,
        version,
        after,
        examples_before: n_old,
        examples_after: n_new,
        labels: labels.len(),
        unknown_intent: sp.unknown_intent,
        to_write: sp.to_write,
        promoted,
        why,
        ms: t0.elapsed().as_millis() as u64,
    };
    store
        .add_agent_version(&AgentVersion {
            agent: name,
            version,
            examples: new,
            report: serde_json::to_value(&report)?,
            created_by: by.to_string(),
            created_ms: now_ms(),
            promoted,
        })
        .await?;
    Ok(report)
}

/// Serves `to` (default: the promoted version before the current one, or
/// the agent's files alone) of `agent` on every node. Returns the version
/// now served.
pub async fn rollback(store: &Store, agent: &str, to: Option<i64>) -> anyhow::Result<i64> {
    let current = store.agent_version(agent).await?;
    let versions = store.agent_versions(agent).await?;
    let target = match to {
        Some(v) => v,
        None => versions
            .iter()
            .filter(|v| v.promoted && v.version < current)
            .map(|v| v.version)
            .max()
            .unwrap_or(0),
    };
    if target != 0 && !versions.iter().any(|v| v.version == target) {
        anyhow::bail!("{agent} has no version {target}");
    }
    store.set_agent_version(agent, target).await?;
    Ok(target)
}

/// The gate's figures as a table.
pub fn render(r: &Report) -> String {
    let pct = |f: &Figures| format!("{:.1} %", 100.0 * f.held_out_accuracy());
    let mut out = format!(
        "{} version {} from {} labels ({} learned examples, {} before)\n\n\
         | | version {} (served) | version {} |\n|---|---|---|\n\
         | held-out labelled turns right | {}/{} ({}) | {}/{} ({}) |\n\
         | conversation-test turns failed | {}/{} | {}/{} |\n\n{}: {} ({:.1} s)\n",
        r.agent,
        r.version,
        r.labels,
        r.examples_after,
        r.examples_before,
        r.before_version,
        r.version,
        r.before.held_out_right,
        r.before.held_out,
        pct(&r.before),
        r.after.held_out_right,
        r.after.held_out,
        pct(&r.after),
        r.before.test_failures.len(),
        r.before.test_turns,
        r.after.test_failures.len(),
        r.after.test_turns,
        if r.promoted {
            "PROMOTED"
        } else {
            "NOT PROMOTED"
        },
        r.why,
        r.ms as f64 / 1000.0
    );
    if r.unknown_intent > 0 {
        out.push_str(&format!(
            "{} labels name intents the agent lacks: add them to intents.toml\n",
            r.unknown_intent
        ));
    }
    for (what, n) in &r.to_write {
        out.push_str(&format!("to write: {what} ({n} turns)\n"));
    }
    out
}

/// Keeps `slot` on the version of its agent the store says to serve,
/// checking every `every`; a version is built from the agent's files in
/// `base` plus its learned examples. Runs until aborted.
pub async fn follow(store: Store, slot: AgentSlot, base: Agent, every: Duration) {
    let name = base.file.agent.name.clone();
    let mut served = 0i64;
    // A version that would not build (e.g. the agent's files changed under
    // it) is tried again later and later, not rebuilt at every check.
    let mut failed: Option<(i64, u32, Instant)> = None;
    loop {
        match store.agent_version(&name).await {
            Ok(v)
                if v != served
                    && !failed.is_some_and(|(f, _, at)| f == v && Instant::now() < at) =>
            {
                match examples_of(&store, &name, v).await {
                    Ok(ex) => {
                        let emb = slot.get().intents.embedder().clone();
                        let agent = with_examples(&base, &ex);
                        let t = Instant::now();
                        let built = tokio::task::spawn_blocking(move || {
                            AgentRuntime::from_agent(agent, emb)
                        })
                        .await;
                        match built {
                            Ok(Ok(rt)) => {
                                slot.set(rt);
                                served = v;
                                failed = None;
                                crate::pipeline::metrics::metrics()
                                    .agent_version
                                    .set(v as f64);
                                tracing::info!(agent = %name, version = v, ms = t.elapsed().as_millis() as u64,
                                    "agent version now served to new calls");
                            }
                            Ok(Err(e)) => {
                                let tries = match failed {
                                    Some((f, n, _)) if f == v => n + 1,
                                    _ => 1,
                                };
                                let wait = retry_after(every, tries);
                                failed = Some((v, tries, Instant::now() + wait));
                                tracing::error!(agent = %name, version = v, error = %e,
                                    retry_s = wait.as_secs(), "cannot build agent version");
                            }
                            Err(e) => tracing::error!(error = %e, "agent build task failed"),
                        }
                    }
                    Err(e) => {
                        tracing::warn!(agent = %name, error = %e, "cannot read agent version")
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(agent = %name, error = %e, "cannot read the served agent version")
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// How long after its `tries`-th failed build a version is tried again:
/// doubling from the check interval, at most ten minutes.
fn retry_after(every: Duration, tries: u32) -> Duration {
    every
        .saturating_mul(1u32 << tries.clamp(1, 16).saturating_sub(1))
        .min(Duration::from_secs(600))
        .max(every)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(call: &str, turn: u32, kind: LabelKind, value: &str, text: &str) -> Label {
        Label {
            interaction_id: call.into(),
            turn,
            text: text.into(),
            kind,
            value: value.into(),
            labelled_by: "sam".into(),
            labelled_ms: 0,
        }
    }

    #[test]
    fn failed_builds_are_retried_later_and_later() {
        let every = Duration::from_secs(5);
        assert_eq!(retry_after(every, 1), every);
        assert_eq!(retry_after(every, 2), Duration::from_secs(10));
        assert_eq!(retry_after(every, 4), Duration::from_secs(40));
        assert_eq!(retry_after(every, 30), Duration::from_secs(600));
        let slow = Duration::from_secs(900);
        assert_eq!(retry_after(slow, 3), slow, "never sooner than the interval");
    }

    /// Intent labels the agent can learn are split the same way every time
    /// (about one in five held out); the others are only counted.
    #[test]
    fn labels_split_into_training_held_out_and_work_to_write() {
        let agent = Agent::load(Path::new("agents/bank")).unwrap();
        let mut labels: Vec<Label> = (0..100)
            .map(|n| {
                label(
                    &format!("c{n}"),
                    1,
                    LabelKind::Intent,
                    "lost_card",
                    &format!("t{n}"),
                )
            })
            .collect();
        labels.push(label(
            "x",
            1,
            LabelKind::Intent,
            "kb:fees",
            "what do you charge",
        ));
        labels.push(label("x", 2, LabelKind::Intent, "crypto", "buy bitcoin"));
        labels.push(label("x", 3, LabelKind::NewIntent, "crypto", "buy bitcoin"));
        labels.push(label(
            "x",
            4,
            LabelKind::KbGap,
            "mortgage rates",
            "mortgage rate",
        ));
        labels.push(label("x", 5, LabelKind::Noise, "", "uh"));
        let s = split(&agent, &labels, &HashMap::new());
        let again = split(&agent, &labels, &HashMap::new());
        assert_eq!(s.train, again.train);
        assert_eq!(s.train.len() + s.held_out.len(), 101);
        assert!(
            (10..=32).contains(&s.held_out.len()),
            "{}",
            s.held_out.len()
        );
        assert_eq!(s.unknown_intent, 1);
        assert_eq!(s.to_write.len(), 2);
        assert_eq!(s.to_write["new_intent crypto"], 1);
    }

    /// Learned examples join the agent's intents and articles once; a text
    /// labelled again takes its newest label.
    #[test]
    fn learned_examples_join_the_agent_and_newer_labels_win() {
        let agent = Agent::load(Path::new("agents/bank")).unwrap();
        let ex = vec![
            (
                "my card got swallowed by the atm".to_string(),
                "lost_card".to_string(),
            ),
            ("what do you charge".to_string(), "kb:fees".to_string()),
        ];
        let a = with_examples(&agent, &merge(&ex, &ex));
        let n = |a: &Agent| a.training_examples().len();
        assert_eq!(n(&a), n(&agent) + 2);
        assert!(a.intent("lost_card").unwrap().examples.contains(&ex[0].0));
        let relabelled = merge(
            &ex,
            &[("what do you charge".into(), "check_balance".into())],
        );
        assert_eq!(relabelled.len(), 2);
        assert!(relabelled.contains(&("what do you charge".into(), "check_balance".into())));
    }

    /// A turn labelled in a Spanish call teaches the Spanish agent, and its
    /// name is checked against that agent; the English one is untouched.
    #[test]
    fn a_label_from_a_spanish_call_teaches_the_spanish_agent() {
        let agent = Agent::load(Path::new("agents/bank")).unwrap();
        let labels = vec![
            label(
                "es1",
                1,
                LabelKind::Intent,
                "lost_card",
                "se me cayó la tarjeta en el metro",
            ),
            label(
                "es1",
                2,
                LabelKind::Intent,
                "kb:fees",
                "cuánto cobran de comisión",
            ),
            label(
                "en1",
                1,
                LabelKind::Intent,
                "lost_card",
                "my card fell out of my pocket",
            ),
        ];
        let languages = HashMap::from([("es1".to_string(), "es".to_string())]);
        let s = split(&agent, &labels, &languages);
        let all: Vec<(String, String)> = s.train.iter().chain(&s.held_out).cloned().collect();
        assert!(all.contains(&(
            "se me cayó la tarjeta en el metro".into(),
            "es/lost_card".into()
        )));
        assert!(all.contains(&("cuánto cobran de comisión".into(), "es/kb:fees".into())));
        assert!(all.contains(&("my card fell out of my pocket".into(), "lost_card".into())));
        let a = with_examples(&agent, &all);
        let es = &a.locales["es"];
        let said = |a: &Agent, t: &str| a.training_examples().iter().any(|(x, _)| x == t);
        assert!(said(es, "se me cayó la tarjeta en el metro"));
        assert!(said(es, "cuánto cobran de comisión"));
        assert!(!said(&a, "se me cayó la tarjeta en el metro"));
        assert!(said(&a, "my card fell out of my pocket"));
        assert!(!said(es, "my card fell out of my pocket"));
    }

    /// The gate: more test failures or fewer held-out turns right is worse;
    /// nothing new is not worth a version.
    #[test]
    fn the_gate_promotes_only_what_does_no_worse() {
        let f = |right: usize, fails: usize| Figures {
            held_out_right: right,
            held_out: 10,
            test_turns: 20,
            test_failures: (0..fails).map(|i| format!("f{i}")).collect(),
        };
        assert!(judge(&f(7, 0), &f(8, 0), true).0);
        assert!(judge(&f(7, 1), &f(7, 1), true).0);
        assert!(!judge(&f(7, 0), &f(9, 1), true).0);
        assert!(!judge(&f(8, 0), &f(7, 0), true).0);
        assert!(!judge(&f(7, 0), &f(9, 0), false).0);
        assert_eq!(f(7, 0).held_out_accuracy(), 0.7);
    }

    #[test]
    fn turns_are_named_call_hash_turn() {
        assert_eq!(parse_turn("CA1#2"), Some(("CA1".into(), 2)));
        assert_eq!(parse_turn("a#b#3"), Some(("a#b".into(), 3)));
        for bad in [
            "",
            "#1",
            "CA1",
            "CA1#",
            "CA1#x",
            "CA1#-1",
            "CA1#99999999999",
        ] {
            assert_eq!(parse_turn(bad), None, "{bad}");
        }
    }
}
