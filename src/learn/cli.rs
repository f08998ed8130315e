//! The command line of the review queue and of agent versions:
//! `attendant review [label …]`, `attendant agent retrain|versions|rollback`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use crate::config::Config;
use crate::nlu::embed::Embedder;
use crate::review;
use crate::store::{Keyring, LabelKind, Store};

#[derive(Debug, clap::Subcommand)]
pub enum ReviewCmd {
    /// Label turns of the queue: an intent the agent has, a new intent, a
    /// knowledge-base gap or noise. Labelled turns leave the queue; intent
    /// labels are what `attendant agent retrain` learns from.
    Label(LabelArgs),
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true)
    .args(["intent", "new_intent", "kb_gap", "noise"])))]
pub struct LabelArgs {
    /// A turn, as CALL#TURN (`attendant review --json` lists them).
    #[arg(long = "turn")]
    pub turns: Vec<String>,
    /// Every turn of group N (1: the biggest) as `attendant review` with the
    /// same --similarity shows it now.
    #[arg(long)]
    pub group: Option<usize>,
    #[arg(long, default_value_t = 0.75)]
    pub similarity: f32,
    /// With --group: the queue over this many days, as `attendant review`.
    #[arg(long, default_value_t = super::QUEUE_DAYS)]
    pub days: u32,
    /// An intent of the agent's (or kb:ARTICLE) the turns meant.
    #[arg(long)]
    pub intent: Option<String>,
    /// An intent the agent lacks yet.
    #[arg(long)]
    pub new_intent: Option<String>,
    /// A question the knowledge base should answer (a few words on what).
    #[arg(long)]
    pub kb_gap: Option<String>,
    /// Not a request.
    #[arg(long)]
    pub noise: bool,
    /// Who labels (default: $USER).
    #[arg(long)]
    pub by: Option<String>,
    #[arg(long, env = "ATTENDANT_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
pub enum AgentCmd {
    /// Build a new version of the agent from the intent labels; promote it
    /// (every node serves it to new calls) only if it does no worse than the
    /// version served on held-out labelled turns and the agent's tests.
    Retrain {
        #[arg(long, default_value = "agents/bank")]
        agent: PathBuf,
        /// Who retrains (default: $USER).
        #[arg(long)]
        by: Option<String>,
        /// Also write the gate's report as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        #[arg(long, env = "ATTENDANT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// The agent's versions with their gate figures; `*` marks the one served.
    Versions {
        #[arg(long, default_value = "agents/bank")]
        agent: PathBuf,
        #[arg(long, env = "ATTENDANT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Serve an earlier version: --to N (0: the agent's files alone), by
    /// default the promoted version before the one served.
    Rollback {
        #[arg(long, default_value = "agents/bank")]
        agent: PathBuf,
        #[arg(long)]
        to: Option<i64>,
        #[arg(long, env = "ATTENDANT_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// The store the configuration names, with its keyring.
pub async fn open_configured_store(config: Option<&Path>) -> anyhow::Result<Store> {
    let cfg = Config::load(config, std::env::vars())?;
    let keys = Keyring::for_store(&cfg.store.url, &cfg.store.key_file)?;
    Ok(Store::open_with(&cfg.store.url, keys).await?)
}

fn who(by: Option<String>) -> String {
    by.or_else(|| std::env::var("USER").ok())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "cli".into())
}

/// The sentence encoder, loaded off the async threads.
async fn embedder(cfg: &Config) -> anyhow::Result<Arc<Embedder>> {
    let dir = cfg
        .server
        .models_dir
        .join(crate::nlu::embed::DEFAULT_DIR.trim_start_matches("models/"));
    Ok(Arc::new(
        tokio::task::spawn_blocking(move || Embedder::load(&dir)).await??,
    ))
}

/// `attendant review`: prints the queue (and writes it as JSON).
pub async fn review(
    config: Option<PathBuf>,
    similarity: f32,
    days: u32,
    top: usize,
    json: Option<PathBuf>,
) -> anyhow::Result<()> {
    let cfg = Config::load(config.as_deref(), std::env::vars())?;
    let store = open_configured_store(config.as_deref()).await?;
    let q = super::queue(&store, embedder(&cfg).await?, similarity, days).await?;
    print!(
        "{}",
        review::render(q.calls, q.turns, &q.groups, similarity, top)
    );
    if let Some(p) = json {
        std::fs::write(&p, serde_json::to_string_pretty(&q.groups)?)?;
    }
    Ok(())
}

/// `attendant review label`.
pub async fn label(a: LabelArgs) -> anyhow::Result<()> {
    let cfg = Config::load(a.config.as_deref(), std::env::vars())?;
    let store = open_configured_store(a.config.as_deref()).await?;
    let (kind, value) = if let Some(i) = a.intent {
        (LabelKind::Intent, i)
    } else if let Some(i) = a.new_intent {
        (LabelKind::NewIntent, i)
    } else if let Some(g) = a.kb_gap {
        (LabelKind::KbGap, g)
    } else {
        (LabelKind::Noise, String::new())
    };
    let mut turns: Vec<(String, u32)> = Vec::new();
    for t in &a.turns {
        let (call, n) =
            super::parse_turn(t).with_context(|| format!("{t:?}: a turn is CALL#TURN"))?;
        turns.push((call, n));
    }
    if let Some(g) = a.group {
        let q = super::queue(&store, embedder(&cfg).await?, a.similarity, a.days).await?;
        let grp = g
            .checked_sub(1)
            .and_then(|i| q.groups.get(i))
            .with_context(|| format!("the queue has {} groups", q.groups.len()))?;
        turns.extend(grp.turns.iter().cloned());
    }
    if turns.is_empty() {
        anyhow::bail!("name turns with --turn CALL#TURN or --group N");
    }
    super::label(&store, &turns, kind, &value, &who(a.by)).await?;
    println!("labelled {} turns {} {value}", turns.len(), kind.as_str());
    Ok(())
}

/// `attendant agent …`.
pub async fn agent(cmd: AgentCmd) -> anyhow::Result<()> {
    match cmd {
        AgentCmd::Retrain {
            agent,
            by,
            json,
            config,
        } => {
            let cfg = Config::load(config.as_deref(), std::env::vars())?;
            let store = open_configured_store(config.as_deref()).await?;
            let r = super::retrain(&store, &agent, &cfg.server.models_dir, &who(by)).await?;
            print!("{}", super::render(&r));
            if let Some(p) = json {
                std::fs::write(&p, serde_json::to_string_pretty(&r)?)?;
            }
        }
        AgentCmd::Versions { agent, config } => {
            let store = open_configured_store(config.as_deref()).await?;
            let name = crate::agent::Agent::load(&agent)?.file.agent.name;
            let served = store.agent_version(&name).await?;
            let mark = |v: i64| if v == served { "*" } else { " " };
            println!("{} 0  the agent's files", mark(0));
            for v in store.agent_versions(&name).await? {
                let r: super::Report = serde_json::from_value(v.report).unwrap_or_default();
                println!(
                    "{} {:<2} {} by {:<10} {:>4} examples  held-out {}/{}  tests failed {}  {}",
                    mark(v.version),
                    v.version,
                    if v.promoted { "promoted" } else { "rejected" },
                    v.created_by,
                    v.examples.len(),
                    r.after.held_out_right,
                    r.after.held_out,
                    r.after.test_failures.len(),
                    r.why
                );
            }
        }
        AgentCmd::Rollback { agent, to, config } => {
            let store = open_configured_store(config.as_deref()).await?;
            let name = crate::agent::Agent::load(&agent)?.file.agent.name;
            let v = super::rollback(&store, &name, to).await?;
            println!("{name}: version {v} is served to new calls on every node");
        }
    }
    Ok(())
}
