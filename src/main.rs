//! The `attendant` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use attendant::client::{self, audio, CallOptions, Script};
use attendant::config::Config;
use attendant::learn::cli::open_configured_store;
use attendant::loadtest;

mod eval_cmd;
mod eval_understand;
mod eval_voice;
use eval_cmd::EvalCmd;

#[derive(Parser)]
#[command(
    name = "attendant",
    version,
    about = "Self-hosted voice-bot server for contact centers"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum DbCmd {
    /// Create the database if needed and apply pending migrations.
    Migrate {
        /// Database URL (default: store.url from the configuration).
        #[arg(long, env = "DATABASE_URL")]
        url: Option<String>,
        #[arg(long, env = "ATTENDANT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Load customers, accounts and orders (demo rows are replaced).
    Seed {
        /// The embedded demo data (db/demo.toml).
        #[arg(long)]
        demo: bool,
        /// A seed file in the same format instead.
        #[arg(long)]
        file: Option<PathBuf>,
        #[arg(long, env = "DATABASE_URL")]
        url: Option<String>,
        #[arg(long, env = "ATTENDANT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Re-seal every sealed value with the first data key, so older keys
    /// can be dropped from the keyring (key rotation).
    Rekey {
        #[arg(long, env = "DATABASE_URL")]
        url: Option<String>,
        #[arg(long, env = "ATTENDANT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print a fresh data key (base64, from the OS CSPRNG) for a keyring.
    NewKey,
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Make an API token (printed once; only its hash is stored). A name
    /// already in use is replaced: that is how a token is rotated.
    Create {
        name: String,
        /// admin, ops, supervisor, agent or integration.
        #[arg(long)]
        role: String,
        #[arg(long, env = "ATTENDANT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// List tokens (names, roles, last use; never values).
    List {
        #[arg(long, env = "ATTENDANT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Revoke a token by name.
    Revoke {
        name: String,
        #[arg(long, env = "ATTENDANT_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Add a person who signs in (POST /auth/login), or reset their password
    /// and role. The password is read from ATTENDANT_PASSWORD or standard input.
    Add {
        name: String,
        #[arg(long)]
        role: String,
        #[arg(long, env = "ATTENDANT_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server (Twilio webhook + Media Streams, health, metrics).
    Serve {
        /// Address to listen on (overrides server.listen).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Configuration file layered over the embedded defaults.
        #[arg(long, env = "ATTENDANT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Call a running server as Twilio would, and report what happened.
    Call {
        /// Media Streams WebSocket URL.
        #[arg(long, default_value = "ws://127.0.0.1:8080/twilio/stream")]
        url: String,
        /// Stream this WAV (any rate) from the first frame, in real time.
        #[arg(long, conflicts_with_all = ["replay", "turns"])]
        wav: Option<PathBuf>,
        /// Speak these WAVs one by one, each after the bot has finished.
        #[arg(long, num_args = 1.., conflicts_with = "replay")]
        turns: Vec<PathBuf>,
        /// Replay a recorded session (.jsonl of Twilio messages).
        #[arg(long)]
        replay: Option<PathBuf>,
        /// Start the --wav this many ms after the bot starts talking (barge-in).
        #[arg(long)]
        barge_in_after: Option<u64>,
        /// Write the call (caller left, bot right) to this WAV.
        #[arg(long)]
        record: Option<PathBuf>,
        /// Write the full report as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Caller ID to present.
        #[arg(long, default_value = "+15555550100")]
        from: String,
        /// Stay on the line this long after the script (ms).
        #[arg(long, default_value_t = 2000)]
        linger_ms: u64,
        #[arg(long, default_value_t = 300)]
        max_secs: u64,
        /// DTMF to press, as MS:DIGIT (e.g. 4000:1); repeatable.
        #[arg(long)]
        dtmf: Vec<String>,
        /// Sign the stream upgrade with this Twilio auth token, as Twilio
        /// does, for a server that enforces signatures.
        #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
        auth_token: Option<String>,
        /// The server's public stream URL that the signature covers
        /// (default: --url).
        #[arg(long)]
        public_url: Option<String>,
        /// API token (ops role) for reading the call's record afterwards.
        #[arg(long, env = "ATTENDANT_TOKEN", hide_env_values = true)]
        api_token: Option<String>,
    },
    /// Many simultaneous scripted callers against a running server, with a
    /// latency and quality report (docs/loadtest.md).
    Loadtest(LoadtestArgs),
    /// Install prerequisites and prepare models (runs scripts/setup.sh).
    Models {
        /// Also the multilingual models (Whisper base, multilingual-e5-small,
        /// the Kokoro-82M voice).
        #[arg(long)]
        with_base: bool,
        /// Also all-mpnet-base-v2, the larger English sentence encoder
        /// (`nlu.encoder`).
        #[arg(long)]
        with_mpnet: bool,
    },
    /// Synthesise what the agents say as written (greeting, prompts,
    /// articles, flow messages, templates' words), in every language they
    /// answer in, into the prompt cache (`tts.prompt_cache`), and exit. A
    /// server started afterwards on this models folder (a new node, a
    /// built image) reads them back and answers at once in every language,
    /// where it would otherwise warm its further languages in the
    /// background while idle.
    Warm {
        /// Configuration file layered over the embedded defaults.
        #[arg(long, env = "ATTENDANT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Speak TEXT with the configured Piper voice into an 8 kHz WAV.
    Say {
        text: String,
        #[arg(long)]
        out: PathBuf,
        /// Speak with this language's voice (`tts.voices`), e.g. es.
        #[arg(long)]
        language: Option<String>,
        #[arg(long, env = "ATTENDANT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// The review queue: stored turns the bot did not understand, was unsure
    /// of, asked again or escalated, grouped by what callers said (biggest
    /// group first) — what callers ask that the agent cannot answer yet.
    Review {
        #[command(subcommand)]
        label: Option<attendant::learn::cli::ReviewCmd>,
        /// Turns this alike (cosine of their embeddings) share a group.
        #[arg(long, default_value_t = 0.75)]
        similarity: f32,
        /// Only calls of the last N days (0: every call stored).
        #[arg(long, default_value_t = attendant::learn::QUEUE_DAYS)]
        days: u32,
        /// Show this many groups.
        #[arg(long, default_value_t = 20)]
        top: usize,
        /// Also write every group as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        #[arg(long, env = "ATTENDANT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Versions of an agent learned from labelled calls: retrain behind an
    /// evaluation gate, list, roll back.
    Agent {
        #[command(subcommand)]
        what: attendant::learn::cli::AgentCmd,
    },
    /// Talk to an agent in text: intent, slots, sentiment and action per turn.
    Chat {
        #[arg(long, default_value = "agents/bank")]
        agent: PathBuf,
        /// Run a file of turns instead of reading the keyboard: a conversation
        /// test (.toml, expectations checked) or one turn per line
        /// (`#1234` keys in digits).
        #[arg(long)]
        script: Option<PathBuf>,
        /// Pretend today is this date (YYYY-MM-DD).
        #[arg(long)]
        today: Option<chrono::NaiveDate>,
        /// Call as this caller ID (looked up in a scratch copy of the demo
        /// customers), e.g. +15555550110.
        #[arg(long)]
        from: Option<String>,
        #[arg(long, default_value = "models")]
        models_dir: PathBuf,
    },
    /// Customer store: create/migrate it, load the demo customers.
    Db {
        #[command(subcommand)]
        what: DbCmd,
    },
    /// API tokens for machines (docs/security.md).
    Token {
        #[command(subcommand)]
        what: TokenCmd,
    },
    /// People who sign in (supervisors, agents).
    User {
        #[command(subcommand)]
        what: UserCmd,
    },
    /// Evaluate a component on labelled data.
    Eval {
        #[command(subcommand)]
        what: EvalCmd,
    },
    /// Transcribe a WAV with the configured Whisper model (checks the conversion).
    Transcribe {
        wav: PathBuf,
        #[arg(long, env = "ATTENDANT_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct LoadtestArgs {
    /// Scenario file (YAML), e.g. loadtest/bank.yaml.
    #[arg(long)]
    scenario: PathBuf,
    /// Media Streams WebSocket URL of the server under test (for WebRTC
    /// its HTTP base, or this URL: the base is taken from it).
    #[arg(long, default_value = "ws://127.0.0.1:8080/twilio/stream")]
    url: String,
    /// How the callers reach the server.
    #[arg(long, value_enum, default_value_t = loadtest::Transport::Twilio)]
    transport: loadtest::Transport,
    /// The server's SIP/UDP address for --transport sip (default: asked of
    /// its GET /sip, which needs an ops token in ATTENDANT_TOKEN).
    #[arg(long)]
    sip: Option<std::net::SocketAddr>,
    /// Calls to place.
    #[arg(long, default_value_t = 10)]
    calls: usize,
    /// Calls in progress at once.
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
    /// New calls per second while ramping up (0: as fast as slots free up).
    #[arg(long, default_value_t = 2.0)]
    ramp: f64,
    /// Keep calling for this many seconds (then --calls is a minimum).
    #[arg(long)]
    duration: Option<u64>,
    /// Seed for choosing callers.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write every measurement as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the HTML report with plots.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Ramp concurrency until p95 voice-to-voice or the error rate breaks.
    #[arg(long)]
    find_capacity: bool,
    #[arg(long, default_value_t = 800)]
    p95_ms: u64,
    /// Largest share of failed calls a level may have and still hold.
    #[arg(long, default_value_t = 0.0)]
    max_error_rate: f64,
    #[arg(long, default_value_t = 32)]
    max_concurrency: usize,
    /// Calls per concurrency slot at each capacity level.
    #[arg(long, default_value_t = 2)]
    calls_per_slot: usize,
    /// Skip the uncounted warm-up call before a capacity search.
    #[arg(long)]
    no_warmup: bool,
    /// Skip transcribing the bot's replies (no reply checks).
    #[arg(long)]
    no_check: bool,
    /// Longest one call may last, in seconds.
    #[arg(long, default_value_t = 120)]
    max_call_secs: u64,
    /// Sign stream upgrades with this Twilio auth token.
    #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
    auth_token: Option<String>,
    /// The stream URL the signature covers (default: --url).
    #[arg(long)]
    public_url: Option<String>,
    /// API token (ops role) for reading each call's record from the server.
    #[arg(long, env = "ATTENDANT_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// Configuration for the checker's ASR (models folder).
    #[arg(long, env = "ATTENDANT_CONFIG")]
    config: Option<PathBuf>,
}

/// A progress bar fed from the run's live counters until `done`.
fn progress_bar(
    label: String,
    total: Option<usize>,
    p: std::sync::Arc<loadtest::Progress>,
) -> (indicatif::ProgressBar, tokio::task::JoinHandle<()>) {
    use std::sync::atomic::Ordering;
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(n as u64),
        None => indicatif::ProgressBar::new_spinner(),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_prefix(label);
    let b = bar.clone();
    let task = tokio::spawn(async move {
        loop {
            let mut lat = p.latencies.lock().clone();
            lat.sort_unstable();
            let pct = |q: f64| loadtest::report::nearest_rank(&lat, q);
            b.set_position(p.finished.load(Ordering::Relaxed) as u64);
            b.set_message(format!(
                "started {} failed {} | v2v p50 {} ms p95 {} ms",
                p.started.load(Ordering::Relaxed),
                p.failed.load(Ordering::Relaxed),
                pct(50.0),
                pct(95.0)
            ));
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    (bar, task)
}

async fn loadtest_cmd(a: LoadtestArgs) -> anyhow::Result<()> {
    let scenario = loadtest::Scenario::load(&a.scenario)?;
    let base = loadtest::RunOptions {
        url: a.url.clone(),
        transport: a.transport,
        sip: a.sip,
        signing: a.auth_token.clone().map(|auth_token| client::Signing {
            auth_token,
            public_url: a.public_url.clone().unwrap_or_else(|| a.url.clone()),
        }),
        api_token: a.api_token.clone(),
        calls: a.calls.max(1),
        concurrency: a.concurrency.max(1),
        ramp_per_s: a.ramp,
        duration_s: a.duration,
        seed: a.seed,
        max_call_s: a.max_call_secs,
    };
    let (mut runs, capacity) = if a.find_capacity {
        let c = loadtest::CapacityOptions {
            p95_ms: a.p95_ms,
            max_error_rate: a.max_error_rate,
            max_concurrency: a.max_concurrency,
            calls_per_slot: a.calls_per_slot,
            warmup: !a.no_warmup,
        };
        let mut bars = Vec::new();
        let (runs, cap) = loadtest::find_capacity(&scenario, &base, &c, |n| {
            let p = std::sync::Arc::new(loadtest::Progress::default());
            let calls = (n * c.calls_per_slot).max(loadtest::MIN_LEVEL_CALLS);
            bars.push(progress_bar(
                format!("{n:>3} at once"),
                Some(calls),
                p.clone(),
            ));
            p
        })
        .await;
        for (b, t) in bars {
            t.abort();
            b.finish();
        }
        (runs, Some(cap))
    } else {
        let p = std::sync::Arc::new(loadtest::Progress::default());
        let total = a.duration.is_none().then_some(base.calls);
        let (bar, task) = progress_bar(format!("{} at once", base.concurrency), total, p.clone());
        let r = loadtest::run(&scenario, &base, p).await;
        task.abort();
        bar.finish();
        (vec![r], None)
    };
    if !a.no_check {
        // After the calls: the checker's ASR never competes with them.
        eprintln!("transcribing the bot's replies to check them…");
        let cfg = Config::load(a.config.as_deref(), std::env::vars())?;
        let asr = loadtest::checker(&cfg.server.models_dir, &cfg.asr, &scenario)?;
        // The ASR pool's calls block; keep them off the async workers.
        tokio::task::block_in_place(|| {
            runs.iter_mut()
                .try_for_each(|r| loadtest::check_replies(r, &scenario, &asr))
        })?;
    }
    let report = loadtest::report::Report::new(runs, capacity);
    println!("{}", loadtest::report::console(&report));
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", p.display()))?;
        println!("JSON report: {}", p.display());
    }
    if let Some(p) = &a.html {
        std::fs::write(p, loadtest::report::html(&report))
            .with_context(|| format!("writing {}", p.display()))?;
        println!("HTML report: {}", p.display());
    }
    if report.summary.ok == 0 {
        bail!("every call failed");
    }
    Ok(())
}

fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ATTENDANT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,ort=warn,whisper_rs=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

fn main() -> anyhow::Result<()> {
    // Before any thread exists: ggml's OpenMP pool reads its wait policy once.
    attendant::asr::configure_threads();
    let cli = Cli::parse();
    init_logs();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Serve { listen, config } => {
            let cfg = Config::load(config.as_deref(), std::env::vars())?;
            let addr: SocketAddr = match listen {
                Some(a) => a,
                None => cfg.server.listen.parse().context("server.listen")?,
            };
            attendant::server::serve_until(
                cfg,
                addr,
                |a| println!("attendant listening on http://{a}"),
                attendant::server::termination(),
            )
            .await
        }
        Cmd::Call {
            url,
            wav,
            turns,
            replay,
            barge_in_after,
            record,
            json,
            from,
            linger_ms,
            max_secs,
            dtmf,
            auth_token,
            public_url,
            api_token,
        } => {
            let signing = auth_token.map(|auth_token| client::Signing {
                auth_token,
                public_url: public_url.unwrap_or_else(|| url.clone()),
            });
            let script = if let Some(p) = replay {
                Script::Replay(p)
            } else if !turns.is_empty() {
                let t = turns
                    .iter()
                    .map(|p| audio::read_wav_8k(p))
                    .collect::<Result<Vec<_>, _>>()?;
                Script::Turns {
                    turns: t,
                    quiet_ms: 700,
                }
            } else if let Some(p) = wav {
                let a = audio::read_wav_8k(&p)?;
                match barge_in_after {
                    Some(after_ms) => Script::BargeIn { audio: a, after_ms },
                    None => Script::Stream(a),
                }
            } else {
                bail!("give --wav, --turns or --replay");
            };
            let dtmf = dtmf
                .iter()
                .map(|s| {
                    let (ms, d) = s.split_once(':').context("--dtmf takes MS:DIGIT")?;
                    Ok((ms.parse::<u64>()?, d.chars().next().context("empty digit")?))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let report = client::run_call(CallOptions {
                url,
                http: String::new(),
                from,
                script,
                linger_ms,
                max_secs,
                dtmf,
                signing,
                api_token,
            })
            .await?;
            client::print_report(&report);
            if let Some(p) = record {
                audio::write_stereo(&p, &report.caller_audio, &report.bot_audio)?;
                println!("recorded {}", p.display());
            }
            if let Some(p) = json {
                std::fs::write(&p, serde_json::to_string_pretty(&report)?)?;
            }
            Ok(())
        }
        Cmd::Loadtest(a) => loadtest_cmd(a).await,
        Cmd::Models {
            with_base,
            with_mpnet,
        } => {
            let mut c = std::process::Command::new("scripts/setup.sh");
            if with_base {
                c.arg("--with-base");
            }
            if with_mpnet {
                c.arg("--with-mpnet");
            }
            let st = c
                .status()
                .context("running scripts/setup.sh (from the repository root)")?;
            if !st.success() {
                bail!("model preparation failed");
            }
            Ok(())
        }
        Cmd::Warm { config } => {
            let cfg = Config::load(config.as_deref(), std::env::vars())?;
            let dir = cfg.server.models_dir.join(&cfg.tts.prompt_cache);
            anyhow::ensure!(
                !cfg.tts.prompt_cache.is_empty(),
                "tts.prompt_cache is \"\": there is no prompt cache to fill"
            );
            let t = std::time::Instant::now();
            let (main, further) = tokio::task::spawn_blocking(move || {
                let e = attendant::pipeline::Engines::load(cfg, None, None)?;
                let main = e.prewarm();
                let further = e.prewarm_languages(&|| attendant::speech::Warm::Go);
                anyhow::Ok((main, further))
            })
            .await??;
            for (what, w) in [("main language", main), ("further languages", further)] {
                println!(
                    "{what}: {} sentences synthesised, {} read from disk, {} already cached",
                    w.synthesised, w.from_disk, w.cached
                );
            }
            println!(
                "prompt cache {} filled in {:.1} s",
                dir.display(),
                t.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Cmd::Say {
            text,
            out,
            language,
            config,
        } => {
            let cfg = Config::load(config.as_deref(), std::env::vars())?;
            let mut tcfg = cfg.tts.clone();
            if let Some(l) = language {
                tcfg.voice = cfg
                    .tts
                    .voices
                    .get(&l)
                    .with_context(|| format!("no voice for `{l}` in tts.voices"))?
                    .clone();
            }
            let tts = attendant::speech::TtsPool::start(&cfg.server.models_dir, &tcfg)?;
            let ulaw = tts.synthesize_blocking(&text)?;
            let pcm: Vec<i16> = ulaw
                .iter()
                .map(|&b| attendant::media::mulaw::decode(b))
                .collect();
            audio::write_mono_8k(&out, &pcm)?;
            println!("wrote {} ({} ms)", out.display(), pcm.len() / 8);
            Ok(())
        }
        Cmd::Chat {
            agent,
            script,
            today,
            from,
            models_dir,
        } => {
            tokio::task::spawn_blocking(move || chat(agent, script, today, from, models_dir))
                .await?
        }
        Cmd::Db { what } => {
            let (url, config) = match &what {
                DbCmd::Migrate { url, config }
                | DbCmd::Seed { url, config, .. }
                | DbCmd::Rekey { url, config } => (url.clone(), config.clone()),
                DbCmd::NewKey => {
                    println!("{}", attendant::store::new_key());
                    return Ok(());
                }
            };
            let cfg = Config::load(config.as_deref(), std::env::vars())?;
            let url = url.unwrap_or(cfg.store.url.clone());
            let keys = attendant::store::Keyring::for_store(&url, &cfg.store.key_file)?;
            let store = attendant::store::Store::open_with(&url, keys).await?;
            match what {
                DbCmd::Migrate { .. } => {
                    println!(
                        "{} store at {} is migrated ({} customers)",
                        store.url_kind,
                        redact_url(&url),
                        store.customer_count().await?
                    );
                }
                DbCmd::Seed { demo, file, .. } => {
                    let n = match (demo, file) {
                        (_, Some(f)) => {
                            let text = std::fs::read_to_string(&f)
                                .with_context(|| format!("reading {}", f.display()))?;
                            attendant::store::seed::seed_text(
                                &store,
                                &text,
                                &f.display().to_string(),
                            )
                            .await?
                        }
                        (true, None) => {
                            attendant::store::seed::seed_text(
                                &store,
                                attendant::store::seed::DEMO_TOML,
                                "db/demo.toml",
                            )
                            .await?
                        }
                        (false, None) => bail!("give --demo or --file PATH"),
                    };
                    println!("seeded {}: {n:?}", redact_url(&url));
                }
                DbCmd::Rekey { .. } => {
                    let n = store.rekey().await?;
                    println!(
                        "re-sealed {n} values in {} with data key {}; older keys can go",
                        redact_url(&url),
                        store.key_id()
                    );
                }
                DbCmd::NewKey => {} // answered above
            }
            Ok(())
        }
        Cmd::Token { what } => token_cmd(what).await,
        Cmd::Review {
            label: Some(attendant::learn::cli::ReviewCmd::Label(a)),
            ..
        } => attendant::learn::cli::label(a).await,
        Cmd::Review {
            label: None,
            similarity,
            days,
            top,
            json,
            config,
        } => attendant::learn::cli::review(config, similarity, days, top, json).await,
        Cmd::Agent { what } => attendant::learn::cli::agent(what).await,
        Cmd::User { what } => user_cmd(what).await,
        Cmd::Eval { what } => eval_cmd::run(what).await,
        Cmd::Transcribe { wav, config } => {
            let cfg = Config::load(config.as_deref(), std::env::vars())?;
            let (pcm, rate) = audio::read_wav(&wav)?;
            let pcm = attendant::media::resample::resample(&pcm, rate, 16000)?;
            let pool = attendant::asr::AsrPool::start(&cfg.server.models_dir, &cfg.asr)?;
            let t = tokio::task::spawn_blocking(move || pool.transcribe_blocking(pcm)).await??;
            println!("{}", t.text);
            eprintln!("({} ms audio, {} ms decode)", t.audio_ms, t.decode_ms);
            Ok(())
        }
    }
}

fn print_turn(t: &attendant::dialogue::manager::TurnTrace, call: &[String]) {
    let slots: Vec<String> = t.slots.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let senti = t
        .sentiment
        .map(|s| format!("{:?} {:+.2}", s.label, s.score))
        .unwrap_or_else(|| "-".into());
    println!(
        "  [intent {} {:.2} | slots {} | sentiment {} | action {}{}{}]",
        t.intent.as_deref().unwrap_or("none"),
        t.confidence,
        if slots.is_empty() {
            "-".into()
        } else {
            slots.join(" ")
        },
        senti,
        t.action,
        t.kb.as_ref()
            .map(|k| format!(" | kb {} {:.2}", k.id, k.confidence))
            .unwrap_or_default(),
        if call.is_empty() {
            String::new()
        } else {
            format!(" | call {}", call.join(","))
        },
    );
    println!("bot: {}", t.reply);
}

/// A database URL with any password blanked, for messages.
fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

fn chat(
    agent: PathBuf,
    script: Option<PathBuf>,
    today: Option<chrono::NaiveDate>,
    from: Option<String>,
    models_dir: PathBuf,
) -> anyhow::Result<()> {
    use attendant::agent::testing;
    use attendant::dialogue::manager::{AgentRuntime, Conversation};
    use attendant::dialogue::TurnInput;
    use std::io::BufRead;
    let rt = AgentRuntime::load(&agent, &models_dir)?;
    eprintln!(
        "agent {} loaded in {} ms",
        rt.agent.file.agent.name, rt.load_ms
    );
    let demo = testing::DemoStore::open()?;
    if let Some(p) = script
        .as_ref()
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
    {
        let mut last = String::new();
        let (turns, failures) = testing::run_file(&rt, &demo.services, p, |conv, r| {
            if conv != last {
                println!("== {conv}");
                last = conv.to_string();
            }
            match (&r.trace.dtmf, r.trace.text.is_empty()) {
                (Some(d), _) => println!("caller keys: {d}"),
                (None, _) => println!("caller: {}", r.trace.text),
            }
            print_turn(&r.trace, &r.call_actions);
            for f in &r.failures {
                println!("  FAIL {f}");
            }
        })?;
        println!("{turns} turns, {} failures", failures.len());
        if !failures.is_empty() {
            bail!("{} expectation(s) failed", failures.len());
        }
        return Ok(());
    }
    let mut conv = Conversation::with_services(rt.clone(), demo.services.clone());
    if let Some(d) = today {
        conv.set_today(d);
    }
    conv.begin(&attendant::dialogue::CallMeta {
        channel: "chat".into(),
        from,
        ..Default::default()
    });
    println!("bot: {}", conv.greeting().say);
    let lines: Box<dyn Iterator<Item = String>> = match &script {
        Some(p) => Box::new(
            std::fs::read_to_string(p)?
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
                .into_iter(),
        ),
        None => Box::new(std::io::stdin().lock().lines().map_while(Result::ok)),
    };
    for (i, line) in lines.enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let input = match line.strip_prefix('#') {
            Some(d) => TurnInput {
                dtmf: Some(d.trim().to_string()),
                index: i as u32 + 1,
                ..Default::default()
            },
            None => TurnInput {
                transcript: Some(line.to_string()),
                index: i as u32 + 1,
                ..Default::default()
            },
        };
        if script.is_some() {
            println!("caller: {line}");
        }
        let (reply, trace) = conv.turn(&input);
        print_turn(&trace, &testing::call_action_names(&reply.actions));
        if conv.state.ended {
            break;
        }
    }
    Ok(())
}

async fn token_cmd(what: TokenCmd) -> anyhow::Result<()> {
    use attendant::server::auth;
    match what {
        TokenCmd::Create { name, role, config } => {
            let role: auth::Role = role.parse().map_err(anyhow::Error::msg)?;
            let store = open_configured_store(config.as_deref()).await?;
            let token = auth::new_secret("att_");
            store
                .put_token(&name, &role.to_string(), &auth::hash_secret(&token))
                .await?;
            eprintln!("token {name:?} ({role}); it is shown only now:");
            println!("{token}");
        }
        TokenCmd::List { config } => {
            let store = open_configured_store(config.as_deref()).await?;
            for t in store.tokens().await? {
                println!(
                    "{:<24} {:<12} last used {:<14} {}",
                    t.name,
                    t.role,
                    if t.last_used_ms == 0 {
                        "never".to_string()
                    } else {
                        t.last_used_ms.to_string()
                    },
                    if t.revoked { "revoked" } else { "" }
                );
            }
        }
        TokenCmd::Revoke { name, config } => {
            let store = open_configured_store(config.as_deref()).await?;
            if !store.revoke_token(&name).await? {
                bail!("no live token named {name:?}");
            }
            println!("revoked {name:?}");
        }
    }
    Ok(())
}

async fn user_cmd(what: UserCmd) -> anyhow::Result<()> {
    use attendant::server::auth;
    let UserCmd::Add { name, role, config } = what;
    let role: auth::Role = role.parse().map_err(anyhow::Error::msg)?;
    let password = match std::env::var("ATTENDANT_PASSWORD") {
        Ok(p) => p,
        Err(_) => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            line.trim_end_matches(['\r', '\n']).to_string()
        }
    };
    if password.chars().count() < 12 {
        bail!("passwords have at least 12 characters");
    }
    let hash = auth::hash_password(&password).map_err(anyhow::Error::msg)?;
    let store = open_configured_store(config.as_deref()).await?;
    store.put_user(&name, &role.to_string(), &hash).await?;
    println!("{name:?} may sign in as {role}");
    Ok(())
}
