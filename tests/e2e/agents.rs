//! The demo agents' conversation tests (every `agents/*/tests/*.toml`), the
//! NLU on real Banking77 queries, and agent-file validation.

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use attendant::agent::testing;
use attendant::dialogue::manager::AgentRuntime;
use attendant::nlu::embed::Embedder;
use attendant::nlu::eval;
use attendant::nlu::intent::IntentModel;

fn embedder() -> Arc<Embedder> {
    Arc::new(
        Embedder::load(Path::new("models/nlu/all-MiniLM-L6-v2"))
            .expect("run scripts/setup.sh first"),
    )
}

fn agent_dirs() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir("agents")
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("agent.toml").exists())
        .collect();
    v.sort();
    v
}

#[test]
fn every_demo_agent_passes_its_conversation_tests() {
    let emb = embedder();
    let dirs = agent_dirs();
    assert!(
        dirs.len() >= 2,
        "bank and retailer agents expected: {dirs:?}"
    );
    let mut all = Vec::new();
    let mut total = 0;
    let demo = testing::DemoStore::open().expect("demo customer store");
    for dir in dirs {
        let rt = AgentRuntime::load_with(&dir, emb.clone())
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("tests"))
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        assert!(
            !files.is_empty(),
            "{} has no conversation tests",
            dir.display()
        );
        for f in files {
            let (turns, failures) = testing::run_file(&rt, &demo.services, &f, |_, _| {}).unwrap();
            total += turns;
            all.extend(
                failures
                    .into_iter()
                    .map(|x| format!("{}: {x}", f.display())),
            );
        }
        // Every flow is exercised by at least one test.
        let tests: String = std::fs::read_dir(dir.join("tests"))
            .unwrap()
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .collect();
        for flow in &rt.agent.flows {
            assert!(
                tests.contains(&format!("done:{}", flow.name))
                    || tests.contains(&format!("start:{}", flow.name))
                    || tests.contains(&format!("intent = \"{}\"", flow.intent)),
                "{}: flow {} has no conversation test",
                dir.display(),
                flow.name
            );
        }
    }
    assert!(total > 60, "only {total} turns ran");
    assert!(
        all.is_empty(),
        "{} failures:\n{}",
        all.len(),
        all.join("\n")
    );
}

#[test]
fn a_broken_agent_is_rejected_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["agent.toml", "intents.toml", "flows.toml"] {
        std::fs::copy(Path::new("agents/bank").join(f), dir.path().join(f)).unwrap();
    }
    let flows = std::fs::read_to_string(dir.path().join("flows.toml")).unwrap();
    std::fs::write(
        dir.path().join("flows.toml"),
        flows.replacen("collect = \"pin\"", "collect = \"pinn\"", 1),
    )
    .unwrap();
    let e = attendant::agent::Agent::load(dir.path())
        .unwrap_err()
        .to_string();
    let line = flows
        .lines()
        .position(|l| l.contains("collect = \"pin\""))
        .unwrap()
        + 1;
    assert!(
        e.contains(&format!("flows.toml:{line}")) && e.contains("pinn"),
        "{e}"
    );
}

/// Out-of-scope floors for the 10-shot, quarter-held-out check below: just
/// under what was measured (84.5 % in-scope, 41.7 % recall), so a
/// regression fails. Calibrating on 8 folds instead of 4 moved the point
/// along the same curve (from 84.0 % / 47.6 %): each fold's classifier
/// now knows more of the intents, as the served one knows them all, so
/// the accuracy it gives up is nearer what `max_drop` allows.
const IN_SCOPE_FLOOR: f64 = 0.83;
const RECALL_FLOOR: f64 = 0.38;

/// Banking77 (PolyAI, real customer queries), 10 examples per intent from
/// train.csv (the first in file order), test.csv scored. The floor sits just
/// under what we measured (84.9 %) so a regression fails; nothing was tuned
/// on test.csv. The full training set (89.9 %, 10,003 examples to embed) is
/// a figure for `attendant eval nlu`, too heavy for every test run.
#[test]
fn banking77_accuracy_ten_shot_and_out_of_scope() {
    let dir = Path::new("../shared/data/intents/banking77/banking_data");
    let train = eval::read_csv(&dir.join("train.csv")).unwrap();
    let test = eval::read_csv(&dir.join("test.csv")).unwrap();
    let emb = embedder();
    // 10-shot: the first 10 examples of each intent in file order.
    let mut seen = std::collections::BTreeMap::new();
    let fe: Vec<(String, String)> = train
        .iter()
        .filter(|d| {
            let c = seen.entry(d.category.clone()).or_insert(0);
            *c += 1;
            *c <= 10
        })
        .map(|d| (d.text.clone(), d.category.clone()))
        .collect();
    let embed = |texts: Vec<String>| emb.embed_many(&texts).unwrap();
    let fx = embed(fe.iter().map(|e| IntentModel::prepare(&e.0)).collect());
    let test_x = embed(test.iter().map(|d| IntentModel::prepare(&d.text)).collect());
    let acc = |model: &IntentModel| {
        let ok = test
            .iter()
            .zip(&test_x)
            .filter(|(d, x)| {
                model.classify_embedding(x).intent.as_deref() == Some(d.category.as_str())
            })
            .count();
        ok as f64 / test.len() as f64
    };
    let few = IntentModel::train_embedded(emb, &fx, &fe, 0.0).unwrap();
    let few_acc = acc(&few);
    eprintln!("banking77 accuracy: 10-shot {:.2} %", few_acc * 100.0);
    assert!(few_acc >= 0.82, "10-shot {few_acc}");

    // Out of scope, the standard way for a dataset without an out-of-scope
    // class: a quarter of the intents (seeded pick) never trained, their
    // test items out of scope. 10 examples per known intent; the rule is
    // calibrated on those examples only (at most 3 points of in-scope
    // accuracy given up on held-out training examples).
    let held = eval::holdout_categories(&train, 0.25, 1);
    let (mut kx, mut ke) = (Vec::new(), Vec::new());
    for (x, e) in fx.iter().zip(&fe) {
        if !held.contains(&e.1) {
            kx.push(x.clone());
            ke.push(e.clone());
        }
    }
    let scope = attendant::nlu::intent::Scope::Calibrated {
        max_drop: 0.03,
        seed: 1,
    };
    let emb2 = embedder();
    let m = IntentModel::train_embedded_with(emb2, &kx, &ke, scope).unwrap();
    let cal = m.calibration.clone().expect("58 intents calibrate");
    let (mut known, mut right, mut top1, mut unknown, mut caught) = (0, 0, 0, 0, 0);
    for (d, x) in test.iter().zip(&test_x) {
        let g = m.classify_embedding(x);
        if held.contains(&d.category) {
            unknown += 1;
            caught += usize::from(g.intent.is_none());
        } else {
            known += 1;
            right += usize::from(g.intent.as_deref() == Some(d.category.as_str()));
            top1 += usize::from(g.ranking.first().map(|r| r.0.as_str()) == Some(&d.category));
        }
    }
    let (in_acc, recall) = (right as f64 / known as f64, caught as f64 / unknown as f64);
    eprintln!(
        "banking77 out of scope, 25 % of intents held out, 10-shot: rule {:?} < {:.3} \
         (calibration, {} folds: {:.1} % recall at {:.1} % in-scope); test: in-scope accuracy \
         {:.1} % ({:.1} % with nothing rejected), out-of-scope recall {:.1} %",
        m.rule.score,
        m.rule.threshold,
        cal.folds,
        cal.oos_recall * 100.0,
        cal.in_scope_accuracy * 100.0,
        in_acc * 100.0,
        top1 as f64 / known as f64 * 100.0,
        recall * 100.0
    );
    assert!(in_acc >= IN_SCOPE_FLOOR, "in-scope {in_acc}");
    assert!(recall >= RECALL_FLOOR, "out-of-scope recall {recall}");
}

/// An agent with `nlu.fine_tune = true` is built on an encoder tuned on its
/// own examples: the tuned layers land in the cache under the model
/// directory, a second build reads them instead of training, and the agent
/// still understands its callers.
#[test]
fn an_agent_can_fine_tune_its_encoder_and_a_restart_reuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("bank");
    common::copy_dir(Path::new("agents/bank"), &copy);
    let toml = std::fs::read_to_string(copy.join("agent.toml")).unwrap();
    // Two passes: quicker, and a cache entry of this test's own (the
    // settings are part of its hash).
    let toml = toml.replace("[nlu]\n", "[nlu]\nfine_tune = true\nfine_tune_epochs = 2\n");
    std::fs::write(copy.join("agent.toml"), toml).unwrap();
    let agent = attendant::agent::Agent::load(&copy).unwrap();
    let base = embedder();
    // Where the build caches the tuned layers; removed first so this build
    // tunes even when an earlier run left them.
    let cached = attendant::nlu::tune::cache_path(
        Path::new("models/nlu/tuned"),
        base.dir(),
        &agent.training_examples(),
        &attendant::nlu::tune::TuneParams {
            epochs: 2,
            ..Default::default()
        },
    );
    let _ = std::fs::remove_file(&cached);
    let t0 = std::time::Instant::now();
    let rt = AgentRuntime::from_agent(agent, base.clone()).unwrap();
    let first = t0.elapsed();
    assert!(cached.exists(), "{} was not written", cached.display());
    let probe = "somebody has taken my bank card";
    let tuned = rt.intents.embedder().embed(probe).unwrap();
    let plain = base.embed(probe).unwrap();
    // The tuned network's half of the vector, beside the base network's.
    let (own, kept) = tuned.split_at(plain.len());
    let same = attendant::nlu::embed::dot(own, &plain) * std::f32::consts::SQRT_2;
    assert!(same < 0.999, "the encoder was not tuned (cosine {same})");
    let base_half = attendant::nlu::embed::dot(kept, &plain) * std::f32::consts::SQRT_2;
    assert!(
        base_half > 0.9999,
        "the base half is the base vector ({base_half})"
    );
    let g = rt.intents.classify(probe).unwrap();
    assert_eq!(g.intent.as_deref(), Some("lost_card"), "{g:?}");
    let t1 = std::time::Instant::now();
    let again =
        AgentRuntime::from_agent(attendant::agent::Agent::load(&copy).unwrap(), base).unwrap();
    let second = t1.elapsed();
    let v = again.intents.embedder().embed(probe).unwrap();
    assert_eq!(v, tuned, "the restart reads the same tuned layers");
    eprintln!("fine-tuned bank agent: first build {first:?}, from the cache {second:?}");
    assert!(second < first, "{second:?} vs {first:?}");
}

/// An agent that names the larger encoder (`nlu.encoder`) is built on it
/// whatever encoder the server loaded, keeps the multilingual one for its
/// Spanish, and passes the bank's conversation tests on it unchanged.
#[test]
fn an_agent_can_pick_the_larger_encoder() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("bank");
    common::copy_dir(Path::new("agents/bank"), &copy);
    let toml = std::fs::read_to_string(copy.join("agent.toml")).unwrap();
    let toml = toml.replace("[nlu]\n", "[nlu]\nencoder = \"all-mpnet-base-v2\"\n");
    std::fs::write(copy.join("agent.toml"), toml).unwrap();
    let t0 = std::time::Instant::now();
    let rt = AgentRuntime::load_with(&copy, embedder())
        .expect("scripts/setup.sh --with-mpnet prepares all-mpnet-base-v2");
    let built = t0.elapsed();
    let enc = rt.intents.embedder();
    assert!(enc.dir().ends_with("all-mpnet-base-v2"), "{:?}", enc.dir());
    assert_eq!(enc.embed("i lost my card").unwrap().len(), 768);
    assert!(rt.locales["es"].intents.embedder().is_multilingual());
    let demo = testing::DemoStore::open().unwrap();
    let mut failures = Vec::new();
    let mut turns = 0;
    for f in ["flows.toml", "spanish.toml"] {
        let (n, bad) =
            testing::run_file(&rt, &demo.services, &copy.join("tests").join(f), |_, _| {}).unwrap();
        turns += n;
        failures.extend(bad);
    }
    eprintln!("bank agent on all-mpnet-base-v2: built in {built:?}, {turns} turns");
    assert!(turns > 100, "{turns} turns");
    assert!(failures.is_empty(), "{failures:#?}");
}

/// `attendant review` on a store holding calls whose turns went wrong: the
/// turns are grouped by what was said (the real sentence embeddings), the
/// biggest group first, the turns that went well left out.
#[test]
fn the_review_queue_groups_what_callers_asked_that_the_bot_missed() {
    use attendant::store::{Interaction, LearnedTurn, Store};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // SQLite: the command finds the data key beside the file.
    let url = rt
        .block_on(attendant::store::scratch_url_on("", dir.path()))
        .unwrap();
    let missed = |text: &str| LearnedTurn {
        intents: vec![("card_lost".into(), 0.21)],
        ..missed_turn(text)
    };
    let calls = [
        ("c1", vec![missed("can i buy bitcoin with my account")]),
        ("c2", vec![missed("do you let me buy bitcoin")]),
        ("c3", vec![missed("i want to purchase bitcoin")]),
        ("c4", vec![missed("what's the weather tomorrow")]),
        // Forty days old: outside the queue's default 30-day window.
        ("old", vec![missed("how do i close my account")]),
        (
            "c5",
            vec![LearnedTurn {
                turn: 1,
                text: "what are your opening hours".into(),
                intents: vec![("hours".into(), 0.93)],
                intent: Some("hours".into()),
                action: "answer:hours".into(),
                followed: "resolved".into(),
                ..Default::default()
            }],
        ),
    ];
    rt.block_on(async {
        let s = Store::open(&url).await.unwrap();
        for (id, turns) in calls {
            let age = if id == "old" { 40 * 86_400_000 } else { 0 };
            s.save_interaction(&Interaction {
                id: id.into(),
                channel: "voice".into(),
                outcome: "transferred".into(),
                turns,
                started_ms: attendant::store::now_ms() - age,
                ..Default::default()
            })
            .await
            .unwrap();
        }
    });
    let json = dir.path().join("groups.json");
    let text = cli(
        &url,
        &[
            "review",
            "--similarity",
            "0.6",
            "--json",
            json.to_str().unwrap(),
        ],
    );
    eprintln!("{text}");
    assert!(text.contains("4 turns to review"), "{text}");
    let groups: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let first = &groups[0];
    assert_eq!(first["size"], 3, "{groups}");
    assert!(first["examples"][0].as_str().unwrap().contains("bitcoin"));
    assert_eq!(first["why"]["not understood"], 3);
    assert_eq!(groups.as_array().unwrap().len(), 2, "{groups}");
    // Every call stored: the old one's turn is back.
    let all = cli(&url, &["review", "--similarity", "0.6", "--days", "0"]);
    assert!(all.contains("5 turns to review"), "{all}");
}

/// A first turn the bot did not understand.
fn missed_turn(text: &str) -> attendant::store::LearnedTurn {
    attendant::store::LearnedTurn {
        turn: 1,
        text: text.into(),
        action: "fallback".into(),
        followed: "fell_back".into(),
        ..Default::default()
    }
}

/// Runs `attendant ARGS` on the store at `url`; its standard output.
fn cli(url: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_attendant"))
        .args(args)
        .env("ATTENDANT__STORE__URL", format!("\"{url}\""))
        .env(
            "ATTENDANT__SERVER__MODELS_DIR",
            format!(
                "\"{}\"",
                Path::new("models").canonicalize().unwrap().display()
            ),
        )
        .env("USER", "sam")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "attendant {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The version of the agent the server at `http` serves (its metrics).
fn served_version(http: std::net::SocketAddr) -> Option<i64> {
    let text = common::api_get(&format!("http://{http}/metrics"))
        .call()
        .ok()?
        .into_string()
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("attendant_agent_version "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as i64)
}

/// Learning from calls, end to end: 60 turns real bank customers typed
/// (Banking77's test set: lost or stolen cards, fees charged) reach the bank
/// agent as missed turns; a supervisor labels them from the command line
/// (by turn, and a group at once), retrains, and the gate promotes the new
/// version only because it does no worse (held-out labelled turns, the
/// agent's conversation tests). A running server serves it to new calls
/// within its check interval, and a rollback takes it back.
#[test]
fn labelled_turns_retrain_the_agent_behind_the_gate_and_the_server_follows() {
    use attendant::store::{Interaction, Store};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = rt
        .block_on(attendant::store::scratch_url_on("", dir.path()))
        .unwrap();
    let csv = Path::new("../shared/data/intents/banking77/banking_data/test.csv");
    let rows = eval::read_csv(csv).unwrap();
    let pick = |cat: &str, n: usize| -> Vec<String> {
        rows.iter()
            .filter(|d| d.category == cat)
            .take(n)
            .map(|d| d.text.clone())
            .collect()
    };
    let cards = pick("lost_or_stolen_card", 40);
    let mut fees = pick("card_payment_fee_charged", 10);
    fees.extend(pick("transfer_fee_charged", 10));
    let crypto = [
        "can i buy bitcoin with my account",
        "do you let me buy bitcoin",
        "i want to purchase bitcoin",
    ];
    let missed = missed_turn;
    let texts: Vec<String> = cards
        .iter()
        .chain(&fees)
        .cloned()
        .chain(crypto.iter().map(|s| s.to_string()))
        .collect();
    rt.block_on(async {
        let s = Store::open(&url).await.unwrap();
        for (n, t) in texts.iter().enumerate() {
            s.save_interaction(&Interaction {
                id: format!("c{n}"),
                channel: "voice".into(),
                outcome: "transferred".into(),
                turns: vec![missed(t)],
                started_ms: attendant::store::now_ms(),
                ..Default::default()
            })
            .await
            .unwrap();
        }
    });
    let turns = |from: usize, n: usize| -> Vec<String> {
        (from..from + n)
            .flat_map(|i| ["--turn".to_string(), format!("c{i}#1")])
            .collect()
    };
    let label = |args: Vec<String>, what: &[&str]| {
        let mut a: Vec<&str> = vec!["review", "label"];
        a.extend(args.iter().map(String::as_str));
        a.extend(what);
        cli(&url, &a)
    };
    label(turns(0, 40), &["--intent", "lost_card"]);
    // A server on the same store; its desk shows supervisors the queue.
    let http = common::start_server(common::config(&[
        ("ATTENDANT__DIALOGUE__AGENT", "\"agents/bank\""),
        ("ATTENDANT__STORE__URL", &format!("\"{url}\"")),
        ("ATTENDANT__DIALOGUE__VERSION_CHECK_MS", "200"),
    ]));
    let q: serde_json::Value =
        common::api_get(&format!("http://{http}/desk/review?similarity=0.6"))
            .call()
            .unwrap()
            .into_json()
            .unwrap();
    assert_eq!(q["turns"], 23, "{q}");
    // The fee questions labelled on the page (the bitcoin ones are left).
    let fee_turns: Vec<String> = (40..60).map(|i| format!("c{i}#1")).collect();
    let r: serde_json::Value = common::api_post(&format!("http://{http}/desk/review/labels"))
        .send_json(serde_json::json!({ "turns": fee_turns, "kind": "intent", "value": "kb:fees" }))
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(r["labelled"], 20);
    let bad = common::api_post(&format!("http://{http}/desk/review/labels"))
        .send_json(serde_json::json!({ "turns": ["nope#1"], "kind": "noise" }));
    assert!(matches!(bad, Err(ureq::Error::Status(400, _))), "{bad:?}");
    // What is left in the queue is the bitcoin group: one label for all.
    let left = cli(&url, &["review", "--similarity", "0.6"]);
    assert!(left.contains("3 turns to review"), "{left}");
    let out = label(
        vec![
            "--group".into(),
            "1".into(),
            "--similarity".into(),
            "0.6".into(),
        ],
        &["--new-intent", "buy_crypto"],
    );
    assert!(out.contains("labelled 3 turns"), "{out}");
    assert!(cli(&url, &["review"]).contains("0 turns to review"));

    let json = dir.path().join("gate.json");
    let t = std::time::Instant::now();
    let table = cli(
        &url,
        &[
            "agent",
            "retrain",
            "--agent",
            "agents/bank",
            "--json",
            json.to_str().unwrap(),
        ],
    );
    eprintln!("{table}(retrain took {:?})", t.elapsed());
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["promoted"], true, "{table}");
    assert_eq!(r["version"], 1);
    assert_eq!(r["labels"], 63);
    let (held, right_before, right_after) = (
        r["after"]["held_out"].as_u64().unwrap(),
        r["before"]["held_out_right"].as_u64().unwrap(),
        r["after"]["held_out_right"].as_u64().unwrap(),
    );
    assert!(held >= 5, "{table}");
    assert_eq!(r["examples_after"].as_u64().unwrap() + held, 60, "{table}");
    assert!(right_after >= right_before, "{table}");
    // Real learning, not only no harm: most held-out phrasings now land.
    assert!(right_after * 10 >= held * 7, "{table}");
    assert!(
        r["after"]["test_failures"].as_array().unwrap().is_empty(),
        "{table}"
    );
    assert_eq!(r["to_write"]["new_intent buy_crypto"], 3);
    // Nothing new: the gate does not make a version of nothing.
    let again = cli(&url, &["agent", "retrain", "--agent", "agents/bank"]);
    assert!(
        again.contains("NOT PROMOTED: no new labelled examples"),
        "{again}"
    );
    let versions = cli(&url, &["agent", "versions", "--agent", "agents/bank"]);
    assert!(versions.contains("* 1  promoted"), "{versions}");

    // The running server follows the promoted version, then the rollback.
    let wait_for = |v: i64| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while served_version(http) != Some(v) {
            assert!(
                std::time::Instant::now() < deadline,
                "never served version {v}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    wait_for(1);
    let back = cli(&url, &["agent", "rollback", "--agent", "agents/bank"]);
    assert!(back.contains("version 0 is served"), "{back}");
    let t = std::time::Instant::now();
    wait_for(0);
    eprintln!("rollback served after {:?}", t.elapsed());
}

/// A first turn is answered before its language is identified only when
/// the agent plainly understands it in English: Moonshine's transcripts of
/// the English fixtures pass, its English renderings of synthesised
/// Spanish requests (espeak-ng `es`, measured) and Spanish itself do not.
#[test]
fn only_plain_english_skips_waiting_for_the_callers_language() {
    use attendant::dialogue::manager::Conversation;
    let rt = AgentRuntime::load_with(Path::new("agents/bank"), embedder()).unwrap();
    let conv = Conversation::new(rt);
    let english = [
        "What is the balance of my account?",
        "Where's your office located?",
        "What are your opening hours on Saturday?",
        "I lost my credit card.",
        "Hello.",
        "Good afternoon.",
        "Thank you. goodbye.",
    ];
    for t in english {
        assert!(conv.understands(t), "{t:?} is plain English");
    }
    let spanish = [
        // Moonshine on "Quiero saber mi saldo, por favor.", "He perdido mi
        // tarjeta de crédito.", "Quiero hablar con un agente.", "¿Cuánto
        // tarda una transferencia internacional?", "Me han cobrado dos veces
        // la misma compra.", "No reconozco un cargo en mi cuenta.", "Mi
        // tarjeta no funciona en el cajero.", "¿Dónde está la sucursal más
        // cercana?", "Hola, buenas tardes.", "Sí, gracias, eso es todo."
        "He asked me to be a little bit more popular.",
        "I have a lot of money to make money.",
        "We have a lot of things.",
        "When the power of the person in the field of your world.",
        "I'm not going to put myself in a piece of a piece of my compass.",
        "Not a constant economic winter.",
        "And the first thing is not to be a cashier.",
        "Don't be a star, that's all you can want to tell me. My spare kind of thing.",
        "Oh, that way in a start of this.",
        "The first one is the first one.",
        // es_saldo.wav as espeak-ng spoke it (a whole turn): `help` at 0.84.
        "I don't know what to do. I don't know what to do.",
        "Quiero saber mi saldo, por favor.",
        "Hola, buenas tardes.",
        "",
    ];
    for t in spanish {
        assert!(!conv.understands(t), "{t:?} is not plainly English");
    }
}

/// A Spanish caller's requests are read by multilingual-e5 (installed by
/// `scripts/setup.sh --with-base`), not by the English MiniLM, and it
/// understands them far better: on `agents/bank/eval/intents_es.csv`
/// (written for this, never trained on) measured 95.7 % of known requests
/// on the right intent before rejection and 85.3 % of all items right with
/// the agent's rule, against 78.3 % and 62.7 % for MiniLM.
#[test]
fn spanish_requests_are_understood_by_the_multilingual_encoder() {
    let rt = AgentRuntime::load_with(Path::new("agents/bank"), embedder()).unwrap();
    let es = &rt.locales["es"];
    assert!(
        es.intents.embedder().is_multilingual(),
        "the Spanish agent must use models/nlu/multilingual-e5-small"
    );
    assert!(
        !rt.intents.embedder().is_multilingual(),
        "English stays on MiniLM"
    );
    let test = eval::read_csv(Path::new("agents/bank/eval/intents_es.csv")).unwrap();
    let served = eval::evaluate(&es.intents, &test).unwrap();
    let english = es.agent.build_intent_model(embedder()).unwrap();
    let before = eval::evaluate(&english, &test).unwrap();
    let top1 = |r: &eval::NluReport| r.trade_off.first().map_or(0.0, |t| t.in_scope_accuracy);
    eprintln!(
        "Spanish intents: multilingual-e5 {:.1} % right ({:.1} % top-1), MiniLM {:.1} % ({:.1} %), p50 {:.1} ms",
        100.0 * served.accuracy,
        100.0 * top1(&served),
        100.0 * before.accuracy,
        100.0 * top1(&before),
        served.latency_ms_p50
    );
    assert!(top1(&served) >= 0.9, "{served:?}");
    assert!(served.accuracy >= 0.8, "{served:?}");
    assert!(top1(&served) >= top1(&before) + 0.1);
    assert!(served.accuracy >= before.accuracy + 0.1);
}

/// The shop agent's Spanish, on requests written for this and never
/// trained on (`agents/retailer/eval/intents_es.csv`, Latin American words
/// among them): measured 89.7 % right with the agent's rule and 92.2 % of
/// known requests on their intent before rejection.
#[test]
fn the_shop_agent_understands_spanish_requests() {
    let rt = AgentRuntime::load_with(Path::new("agents/retailer"), embedder()).unwrap();
    let es = &rt.locales["es"];
    let test = eval::read_csv(Path::new("agents/retailer/eval/intents_es.csv")).unwrap();
    let r = eval::evaluate(&es.intents, &test).unwrap();
    let top1 = r.trade_off.first().map_or(0.0, |t| t.in_scope_accuracy);
    eprintln!(
        "shop agent, Spanish: {:.1} % right, {:.1} % top-1, out-of-scope recall {:.1} %",
        100.0 * r.accuracy,
        100.0 * top1,
        100.0 * r.oos_recall.unwrap_or(0.0)
    );
    assert!(r.accuracy >= 0.85, "{r:?}");
    assert!(top1 >= 0.88, "{r:?}");
}

/// The prompt cache is filled with what an agent says as written, in each
/// of its languages: the greeting first (it must be ready before the
/// server is), every article's answer (a knowledge-base answer was
/// synthesised per call, 0.6–0.75 s before its first audio), and every
/// flow message and prompt without a blank.
#[test]
fn every_fixed_reply_is_among_the_prompts_the_voice_caches() {
    use attendant::dialogue::manager::AgentFactory;
    use attendant::dialogue::DialogueFactory;
    let rt = AgentRuntime::load_with(Path::new("agents/bank"), embedder()).unwrap();
    let f = AgentFactory::new(rt.clone(), None);
    let mut langs = vec![(rt.clone(), f.prompts())];
    let localised = f.localised_prompts();
    assert!(!localised.is_empty(), "the bank answers in Spanish too");
    for (code, prompts) in localised {
        langs.push((rt.locales[&code].clone(), prompts));
    }
    for (rt, prompts) in langs {
        assert_eq!(prompts[0], rt.agent.file.agent.greeting);
        let answers: Vec<&str> = rt.kb.articles().iter().map(|a| a.answer.as_str()).collect();
        assert!(answers.len() >= 5);
        let p = &rt.agent.file.prompts;
        let fixed = rt
            .agent
            .flows
            .iter()
            .flat_map(|f| &f.step)
            .flat_map(|s| [&s.say, &s.confirm, &s.on_no, &s.on_fail])
            .flatten()
            .map(String::as_str)
            .chain([
                p.help.as_str(),
                p.clarify.as_str(),
                p.verify_failed.as_str(),
            ])
            .filter(|t| !t.contains('{'));
        for t in answers.into_iter().chain(fixed) {
            assert!(
                prompts.iter().any(|x| x == t),
                "{t:?} is not cached ({})",
                rt.agent.file.agent.language
            );
        }
        let mut unique = prompts.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), prompts.len(), "each prompt once");
    }
}

/// `attendant eval understand` hears the same Spanish requests two ways:
/// Whisper in Spanish (read by the Spanish intents) and Whisper
/// translating into English (read by the English ones). Six requests the
/// Spanish intents take in writing, which espeak-ng's voice says clearly
/// enough for Whisper base (all 102, with Kokoro, in docs/languages.md):
/// the transcripts are Spanish, the translations English, and the Spanish
/// way understands most of them.
#[test]
fn spanish_speech_is_understood_in_spanish_and_through_translation() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("six.csv");
    std::fs::write(
        &csv,
        "text,category\n\
         cuánto dinero me queda hasta fin de mes,check_balance\n\
         dígame cuánto dinero hay en la cuenta corriente,check_balance\n\
         buenos días quería saber cuánto dinero me queda en la cuenta,check_balance\n\
         cuánto tengo disponible ahora mismo,check_balance\n\
         se me cayó la tarjeta en la calle y no la encuentro,lost_card\n\
         alguien me quitó el bolso con la tarjeta dentro,lost_card\n",
    )
    .unwrap();
    let json = dir.path().join("out.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_attendant"))
        .args([
            "eval",
            "understand",
            "--agent",
            "agents/bank",
            "--language",
            "es",
        ])
        .arg("--test")
        .arg(&csv)
        .args(["--voice", "espeak-ng:es-419", "--json"])
        .arg(&json)
        .env(
            "ATTENDANT__SERVER__MODELS_DIR",
            format!("\"{}\"", common::repo().join("models").display()),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 6);
    let english = [
        "i", "the", "have", "money", "how", "much", "to", "my", "card", "someone",
    ];
    let spanish = ["dinero", "tengo", "tarjeta", "cuenta", "quería"];
    for r in rows {
        let words = |k: &str| -> Vec<String> {
            r[k].as_str()
                .unwrap()
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(str::to_lowercase)
                .collect()
        };
        assert!(
            words("translated")
                .iter()
                .any(|w| english.contains(&w.as_str())),
            "not English: {r}"
        );
        assert!(
            words("transcribed")
                .iter()
                .any(|w| spanish.contains(&w.as_str())),
            "not Spanish: {r}"
        );
    }
    let scores = v["scores"].as_array().unwrap();
    assert_eq!(scores.len(), 3);
    eprintln!("{scores:?}");
    assert_eq!(scores[0]["accuracy"].as_f64(), Some(1.0), "{scores:?}");
    // Heard in Spanish, at least four of the six are understood.
    assert!(
        scores[1]["accuracy"].as_f64().unwrap() >= 4.0 / 6.0,
        "{scores:?}"
    );
}
