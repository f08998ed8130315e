//! Conversation tests written as files next to an agent (`tests/*.toml`):
//! each turn gives what the caller says or keys in, and what must happen —
//! intent, slot values, action, reply fragment, sentiment, call actions.
//! `cargo test` runs every agent's tests; `attendant chat --script` runs one.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use chrono::NaiveDate;
use serde::Deserialize;

use super::{parse_toml, AgentError};
use crate::dialogue::manager::{AgentRuntime, Conversation, TurnTrace};
use crate::dialogue::{Action, CallMeta, Services, TurnInput};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    /// Anchors relative dates and the demo records' date rules.
    pub today: Option<NaiveDate>,
    pub conversation: Vec<ConversationTest>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversationTest {
    pub name: String,
    /// Caller ID the call comes from (looked up in the customer store).
    pub from: Option<String>,
    /// Expected fragment of the greeting …
    pub greeting: Option<String>,
    /// … and fragments it must not contain.
    #[serde(default)]
    pub greeting_not: Vec<String>,
    /// The language the caller speaks (one the agent answers in); the
    /// agent's own when not given.
    pub language: Option<String>,
    pub turn: Vec<TurnTest>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnTest {
    pub user: Option<String>,
    pub dtmf: Option<String>,
    /// Expected intent (`none` for out of scope).
    pub intent: Option<String>,
    /// Expected action (exact) …
    pub action: Option<String>,
    /// … and fragments the reply must contain / must not contain.
    pub reply: Option<String>,
    #[serde(default)]
    pub reply_not: Vec<String>,
    #[serde(default)]
    pub slots: BTreeMap<String, String>,
    /// negative / neutral / positive.
    pub sentiment: Option<String>,
    /// Expected call action: `hangup` or `transfer:QUEUE`.
    pub call: Option<String>,
    /// What the call then waits for, as the phone gathers it: `open`,
    /// `yes_no`, `value`, or `digits:N` / `digits:MIN-MAX` (keys gathered
    /// until `#` or that many).
    pub expects: Option<String>,
}

/// `Expect` as conversation tests write it.
fn expect_name(e: &crate::dialogue::Expect) -> String {
    use crate::dialogue::Expect;
    match e {
        Expect::Open => "open".into(),
        Expect::YesNo => "yes_no".into(),
        Expect::Value => "value".into(),
        Expect::Digits { min, max } if min == max => format!("digits:{min}"),
        Expect::Digits { min, max } => format!("digits:{min}-{max}"),
    }
}

/// One turn's result: what happened and what did not match.
pub struct TurnResult {
    pub trace: TurnTrace,
    pub call_actions: Vec<String>,
    pub failures: Vec<String>,
}

pub fn call_action_names(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .map(|a| match a {
            Action::Hangup => "hangup".to_string(),
            Action::Transfer { target, .. } => format!("transfer:{target}"),
        })
        .collect()
}

pub fn check_turn(t: &TurnTest, trace: &TurnTrace, actions: &[String]) -> Vec<String> {
    let mut f = Vec::new();
    if let Some(want) = &t.intent {
        let got = trace.intent.clone().unwrap_or_else(|| "none".into());
        if &got != want {
            f.push(format!(
                "intent: want {want}, got {got} ({:.2})",
                trace.confidence
            ));
        }
    }
    if let Some(want) = &t.action {
        if &trace.action != want {
            f.push(format!("action: want {want}, got {}", trace.action));
        }
    }
    if let Some(want) = &t.reply {
        if !trace.reply.to_lowercase().contains(&want.to_lowercase()) {
            f.push(format!(
                "reply should contain \"{want}\", got \"{}\"",
                trace.reply
            ));
        }
    }
    for no in &t.reply_not {
        if trace.reply.to_lowercase().contains(&no.to_lowercase()) {
            f.push(format!(
                "reply should not contain \"{no}\", got \"{}\"",
                trace.reply
            ));
        }
    }
    for (k, v) in &t.slots {
        match trace.slots.get(k) {
            Some(got) if got == v => {}
            got => f.push(format!("slot {k}: want {v}, got {got:?}")),
        }
    }
    if let Some(want) = &t.sentiment {
        let got = trace
            .sentiment
            .map(|s| format!("{:?}", s.label).to_lowercase())
            .unwrap_or_default();
        if &got != want {
            f.push(format!(
                "sentiment: want {want}, got {got} ({:.2})",
                trace.sentiment.map_or(0.0, |s| s.score)
            ));
        }
    }
    if let Some(want) = &t.call {
        if !actions.iter().any(|a| a == want) {
            f.push(format!("call action: want {want}, got {actions:?}"));
        }
    }
    f
}

pub fn load(path: &Path) -> Result<TestFile, AgentError> {
    let text = std::fs::read_to_string(path).map_err(|e| AgentError::File {
        file: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    parse_toml(path, &text)
}

/// Runs every conversation in a test file against the given customer
/// store; returns (turns run, failures as "conversation / turn N: problem").
pub fn run_file(
    rt: &Arc<AgentRuntime>,
    services: &Arc<Services>,
    path: &Path,
    mut each: impl FnMut(&str, &TurnResult),
) -> Result<(usize, Vec<String>), AgentError> {
    let file = load(path)?;
    let mut failures = Vec::new();
    let mut turns = 0;
    for conv in &file.conversation {
        // Each conversation is a scenario of its own (on the scratch demo
        // store): earlier ones' wrong PINs do not lock its account.
        services
            .store
            .wait(services.store.clear_pin_guards())
            .map_err(|e| AgentError::File {
                file: path.to_path_buf(),
                msg: format!("demo store: {e}"),
            })?;
        let mut c = Conversation::with_services(rt.clone(), services.clone());
        if let Some(d) = file.today {
            c.set_today(d);
        }
        c.begin(&CallMeta {
            channel: "test".into(),
            from: conv.from.clone(),
            ..Default::default()
        });
        if let Some(l) = &conv.language {
            if !c.set_language(l) {
                failures.push(format!("{}: the agent does not answer in `{l}`", conv.name));
                continue;
            }
        }
        let g = c.greeting();
        if let Some(want) = &conv.greeting {
            if !g.say.to_lowercase().contains(&want.to_lowercase()) {
                failures.push(format!(
                    "{} / greeting: want \"{want}\", got \"{}\"",
                    conv.name, g.say
                ));
            }
        }
        for not in &conv.greeting_not {
            if g.say.to_lowercase().contains(&not.to_lowercase()) {
                failures.push(format!(
                    "{} / greeting: must not say \"{not}\", got \"{}\"",
                    conv.name, g.say
                ));
            }
        }
        for (i, t) in conv.turn.iter().enumerate() {
            turns += 1;
            let input = TurnInput {
                transcript: t.user.clone(),
                dtmf: t.dtmf.clone(),
                speech_ms: 0,
                index: i as u32 + 1,
                language: None,
            };
            let (reply, trace) = c.turn(&input);
            let acts = call_action_names(&reply.actions);
            let mut fails = check_turn(t, &trace, &acts);
            if let Some(want) = &t.expects {
                let got = expect_name(&c.expecting());
                if &got != want {
                    fails.push(format!("expects: want {want}, got {got}"));
                }
            }
            let res = TurnResult {
                trace,
                call_actions: acts,
                failures: fails,
            };
            each(&conv.name, &res);
            failures.extend(
                res.failures
                    .iter()
                    .map(|f| format!("{} / turn {}: {f}", conv.name, i + 1)),
            );
        }
        // Stored like a real call's record, so later conversations in the
        // file from the same number see it as history.
        c.save_interaction(None);
    }
    Ok((turns, failures))
}

/// The customer store with the demo records, on a runtime of its own, for
/// conversation tests and `attendant chat` (which run outside the server).
pub struct DemoStore {
    pub services: Arc<Services>,
    _dir: tempfile::TempDir,
    // Declared last: dropped after the pool that runs on it.
    _rt: tokio::runtime::Runtime,
}

impl DemoStore {
    /// A scratch database (SQLite, or PostgreSQL under `DATABASE_URL`)
    /// seeded from `db/demo.toml`.
    pub fn open() -> anyhow::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let dir = tempfile::tempdir()?;
        let store = rt.block_on(async {
            let url = crate::store::scratch_url(dir.path()).await?;
            let store = crate::store::Store::open(&url).await?;
            crate::store::seed::seed_text(&store, crate::store::seed::DEMO_TOML, "db/demo.toml")
                .await?;
            Ok::<_, crate::store::StoreError>(store)
        })?;
        Ok(Self {
            services: Arc::new(Services {
                store,
                handoff: Default::default(),
                events: None,
            }),
            _dir: dir,
            _rt: rt,
        })
    }
}
