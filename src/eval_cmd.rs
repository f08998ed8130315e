//! `attendant eval`: the intent model scored on a labelled set, language
//! identification on recordings, a voice heard back.

use std::path::PathBuf;

use anyhow::bail;
use clap::Subcommand;

use attendant::nlu::intent::Scope;

#[derive(Subcommand)]
pub enum EvalCmd {
    /// Intent accuracy, macro-F1, out-of-scope precision/recall and latency.
    Nlu {
        /// Agent directory whose intents are evaluated.
        #[arg(long, conflicts_with = "train")]
        agent: Option<PathBuf>,
        /// Build a throwaway agent from this labelled CSV (text,category).
        #[arg(long)]
        train: Option<PathBuf>,
        /// Labelled CSV to test on (text,category).
        #[arg(long)]
        test: PathBuf,
        /// Use only the first K training examples of each category.
        #[arg(long)]
        shots: Option<usize>,
        /// Out-of-scope threshold on the top intent probability.
        #[arg(long, default_value_t = 0.0)]
        threshold: f32,
        /// Calibrate the out-of-scope rule on the training data instead
        /// (signal and threshold chosen on held-out training examples),
        /// giving up at most this much in-scope accuracy (e.g. 0.03).
        #[arg(long)]
        calibrate: Option<f64>,
        /// Hold this share of the training intents out as unknown (they are
        /// out of scope in the test set), e.g. 0.25.
        #[arg(long)]
        holdout_intents: Option<f64>,
        /// Seed of the held-out pick and the calibration's folds.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Write the report as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        #[arg(long, default_value = "models")]
        models_dir: PathBuf,
        /// The sentence encoder, a folder under `<models-dir>/nlu/`.
        /// Without it, as served: MiniLM for English, multilingual-e5 for
        /// an agent's other languages (see Embedder::for_language).
        #[arg(long)]
        encoder: Option<String>,
        /// With --agent: evaluate the agent in this further language (its
        /// `lang/<code>.toml` examples).
        #[arg(long, requires = "agent")]
        language: Option<String>,
        #[command(flatten)]
        tune: TuneArgs,
    },
    /// A voice's first audio, real-time factor, and word error rate when
    /// its phone audio is transcribed back (docs/languages.md).
    Voice(crate::eval_voice::VoiceArgs),
    /// Understanding a further language's speech two ways: Whisper in that
    /// language and the agent's intents in it, against Whisper translating
    /// into English and the English intents (docs/languages.md).
    Understand(crate::eval_understand::UnderstandArgs),
    /// Language identification on labelled recordings: accuracy, confusions
    /// and time per detection.
    Langid {
        /// CSV of `path,language` (ISO 639-1), paths relative to the file.
        #[arg(long)]
        manifest: PathBuf,
        /// The languages to choose among (comma-separated ISO codes).
        #[arg(long, value_delimiter = ',', default_value = "en,es")]
        among: Vec<String>,
        /// Longest stretch of each recording read, in milliseconds.
        #[arg(long, default_value_t = 10_000)]
        window_ms: u64,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// A multilingual Whisper model (`attendant models --with-base`).
        #[arg(long, default_value = "models/ggml-base.bin")]
        model: PathBuf,
        /// Write the report as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

/// Fine-tuning the encoder on the training examples before the classifier
/// is trained (see docs/agents.md).
#[derive(clap::Args)]
pub struct TuneArgs {
    /// Fine-tune the sentence encoder's top layers on the training set.
    #[arg(long)]
    fine_tune: bool,
    #[arg(long, default_value_t = attendant::nlu::tune::TuneParams::default().epochs)]
    tune_epochs: usize,
    #[arg(long, default_value_t = attendant::nlu::tune::TuneParams::default().layers)]
    tune_layers: usize,
    #[arg(long, default_value_t = attendant::nlu::tune::TuneParams::default().learning_rate)]
    tune_lr: f64,
    #[arg(long, default_value_t = attendant::nlu::tune::TuneParams::default().batch)]
    tune_batch: usize,
    #[arg(long, default_value_t = attendant::nlu::tune::TuneParams::default().scale)]
    tune_scale: f64,
    #[arg(long, default_value_t = attendant::nlu::tune::TuneParams::default().margin)]
    tune_margin: f64,
    /// Where tuned layers are cached (by a hash of model, examples and
    /// parameters).
    #[arg(long, default_value = "data/nlu-cache")]
    tune_cache: PathBuf,
}

pub async fn run(what: EvalCmd) -> anyhow::Result<()> {
    match what {
        EvalCmd::Nlu {
            agent,
            train,
            test,
            shots,
            threshold,
            calibrate,
            holdout_intents,
            seed,
            json,
            models_dir,
            encoder,
            language,
            tune,
        } => {
            let scope = match calibrate {
                Some(max_drop) => Scope::Calibrated { max_drop, seed },
                None => Scope::Fixed(threshold),
            };
            let how = NluEval {
                shots,
                scope,
                holdout: holdout_intents,
                seed,
                encoder,
                language,
                tune: tune.fine_tune.then(|| {
                    (
                        attendant::nlu::tune::TuneParams {
                            epochs: tune.tune_epochs,
                            layers: tune.tune_layers,
                            learning_rate: tune.tune_lr,
                            batch: tune.tune_batch,
                            scale: tune.tune_scale,
                            margin: tune.tune_margin,
                            ..Default::default()
                        },
                        tune.tune_cache,
                    )
                }),
            };
            tokio::task::spawn_blocking(move || eval_nlu(agent, train, test, how, json, models_dir))
                .await?
        }
        EvalCmd::Voice(a) => crate::eval_voice::run(a).await,
        EvalCmd::Understand(a) => crate::eval_understand::run(a).await,
        EvalCmd::Langid {
            manifest,
            among,
            window_ms,
            threads,
            model,
            json,
        } => {
            let lid = LangidEval {
                among,
                window: std::time::Duration::from_millis(window_ms),
                threads,
                model,
            };
            tokio::task::spawn_blocking(move || eval_langid(&manifest, &lid, json)).await?
        }
    }
}

struct LangidEval {
    among: Vec<String>,
    window: std::time::Duration,
    threads: usize,
    model: PathBuf,
}

/// One recording's detection, for the JSON report.
#[derive(serde::Serialize)]
struct LangidRow {
    path: String,
    expected: String,
    detected: String,
    probability: f32,
    ms: f64,
}

fn eval_langid(
    manifest: &std::path::Path,
    how: &LangidEval,
    json: Option<PathBuf>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    use attendant::asr::langid::LanguageId;
    let text = std::fs::read_to_string(manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    let base = manifest.parent().unwrap_or(std::path::Path::new("."));
    let t0 = std::time::Instant::now();
    let mut lid = LanguageId::load(&how.model, how.threads, how.window)?;
    eprintln!(
        "loaded {} in {} ms",
        how.model.display(),
        t0.elapsed().as_millis()
    );
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || (n == 0 && line == "path,language") {
            continue;
        }
        let Some((path, lang)) = line.rsplit_once(',') else {
            bail!("line {}: want path,language", n + 1);
        };
        let file = base.join(path.trim());
        let (pcm, rate) = attendant::client::audio::read_wav(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let pcm = attendant::media::resample::resample(&pcm, rate, 16_000)?;
        let d = lid.detect(&pcm, &how.among)?;
        rows.push(LangidRow {
            path: path.trim().to_string(),
            expected: lang.trim().to_string(),
            detected: d.language,
            probability: d.probability,
            ms: d.elapsed.as_secs_f64() * 1000.0,
        });
    }
    if rows.is_empty() {
        bail!("{} lists no recordings", manifest.display());
    }
    let mut langs: Vec<&str> = rows.iter().map(|r| r.expected.as_str()).collect();
    langs.sort();
    langs.dedup();
    println!("recordings        {}", rows.len());
    println!("choosing among    {}", how.among.join(", "));
    for l in &langs {
        let of: Vec<&LangidRow> = rows.iter().filter(|r| r.expected == *l).collect();
        let right = of.iter().filter(|r| r.detected == r.expected).count();
        println!(
            "{l:<17} {right}/{} right ({:.1} %)",
            of.len(),
            100.0 * right as f64 / of.len() as f64
        );
    }
    let right = rows.iter().filter(|r| r.detected == r.expected).count();
    println!(
        "accuracy          {:.1} %",
        100.0 * right as f64 / rows.len() as f64
    );
    let mut ms: Vec<f64> = rows.iter().map(|r| r.ms).collect();
    ms.sort_by(f64::total_cmp);
    let pct = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    println!(
        "time/detection    p50 {:.0} ms, p95 {:.0} ms ({} threads, window {} ms)",
        pct(0.5),
        pct(0.95),
        how.threads,
        how.window.as_millis()
    );
    for r in rows.iter().filter(|r| r.detected != r.expected) {
        println!(
            "  wrong: {} ({} heard as {}, p {:.2})",
            r.path, r.expected, r.detected, r.probability
        );
    }
    if let Some(p) = json {
        std::fs::write(&p, serde_json::to_string_pretty(&rows)?)?;
    }
    Ok(())
}

/// How `eval nlu` trains from a CSV.
struct NluEval {
    shots: Option<usize>,
    scope: Scope,
    holdout: Option<f64>,
    seed: u64,
    /// Fine-tune the encoder first, caching under the path.
    tune: Option<(attendant::nlu::tune::TuneParams, PathBuf)>,
    encoder: Option<String>,
    language: Option<String>,
}

fn eval_nlu(
    agent: Option<PathBuf>,
    train: Option<PathBuf>,
    test: PathBuf,
    how: NluEval,
    json: Option<PathBuf>,
    models_dir: PathBuf,
) -> anyhow::Result<()> {
    use attendant::nlu::{embed::Embedder, eval, intent::IntentModel};
    use std::sync::Arc;
    let name = how.encoder.as_deref().unwrap_or("all-MiniLM-L6-v2");
    let enc_dir = models_dir.join("nlu").join(name);
    let embedder = Arc::new(if name == attendant::nlu::embed::MULTILINGUAL {
        Embedder::load_multilingual(&enc_dir)?
    } else {
        Embedder::load(&enc_dir)?
    });
    let mut held_out = Vec::new();
    let model = match (agent, train) {
        (Some(dir), None) => {
            let mut agent = attendant::agent::Agent::load(&dir)?;
            if let Some(code) = &how.language {
                let Some(a) = agent.locales.remove(code) else {
                    bail!("{} has no language {code}", dir.display());
                };
                agent = a;
            }
            let base = match how.encoder {
                Some(_) => embedder,
                None => embedder.for_language(&agent.file.agent.language),
            };
            let encoder = agent.encoder(base)?;
            agent.build_intent_model(encoder)?
        }
        (None, Some(csv)) => {
            let mut data = eval::read_csv(&csv)?;
            if let Some(share) = how.holdout {
                held_out = eval::holdout_categories(&data, share, how.seed);
                data.retain(|d| !held_out.contains(&d.category));
            }
            if let Some(k) = how.shots {
                data = eval::first_k_per_category(&data, k);
            }
            let ex: Vec<(String, String)> =
                data.into_iter().map(|d| (d.text, d.category)).collect();
            eprintln!("training on {} examples", ex.len());
            let embedder = match &how.tune {
                None => embedder,
                Some((p, cache)) => {
                    let dir = enc_dir.clone();
                    let tune_on = match how.scope {
                        Scope::Calibrated { .. } => attendant::nlu::tune::for_calibration(&ex),
                        Scope::Fixed(_) => ex.clone(),
                    };
                    let (e, report) =
                        attendant::nlu::tune::tuned_embedder(&dir, cache, &tune_on, p)?;
                    match report {
                        Some(r) => eprintln!(
                            "fine-tuned {} layers on {} examples: {} steps, loss {:.3} -> {:.3}, {:.1} s",
                            p.layers, r.examples, r.steps, r.first_loss, r.last_loss,
                            r.ms as f64 / 1000.0
                        ),
                        None => eprintln!("fine-tuned encoder read from {}", cache.display()),
                    }
                    Arc::new(e)
                }
            };
            IntentModel::train_with(embedder, &ex, how.scope)?
        }
        _ => bail!("give --agent DIR or --train CSV"),
    };
    let test = eval::read_csv(&test)?;
    let mut report = eval::evaluate(&model, &test)?;
    report.held_out = held_out;
    eval::print_report(&report);
    if let Some(p) = json {
        std::fs::write(&p, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}
