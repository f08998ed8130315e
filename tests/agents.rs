//! The demo agents' conversation tests (every `agents/*/tests/*.toml`), the
//! NLU on real Banking77 queries, and agent-file validation.

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

/// Banking77 (PolyAI, real customer queries): train.csv as examples, test.csv
/// scored. Floors sit just under what we measured (89.9 % full, 84.9 %
/// 10-shot) so a regression fails; nothing was tuned on test.csv.
#[test]
fn banking77_accuracy_full_and_ten_shot() {
    let dir = Path::new("../shared/data/intents/banking77/banking_data");
    let train = eval::read_csv(&dir.join("train.csv")).unwrap();
    let test = eval::read_csv(&dir.join("test.csv")).unwrap();
    let emb = embedder();
    let train_x = emb
        .embed_many(
            &train
                .iter()
                .map(|d| IntentModel::prepare(&d.text))
                .collect::<Vec<_>>(),
        )
        .unwrap();
    let test_x = emb
        .embed_many(
            &test
                .iter()
                .map(|d| IntentModel::prepare(&d.text))
                .collect::<Vec<_>>(),
        )
        .unwrap();
    let examples: Vec<(String, String)> = train
        .iter()
        .map(|d| (d.text.clone(), d.category.clone()))
        .collect();
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
    let full = IntentModel::train_embedded(emb.clone(), &train_x, &examples, 0.0).unwrap();
    let full_acc = acc(&full);
    // 10-shot: the first 10 examples of each intent in file order.
    let mut seen = std::collections::BTreeMap::new();
    let (mut fx, mut fe) = (Vec::new(), Vec::new());
    for (x, e) in train_x.iter().zip(&examples) {
        let c = seen.entry(e.1.clone()).or_insert(0);
        *c += 1;
        if *c <= 10 {
            fx.push(x.clone());
            fe.push(e.clone());
        }
    }
    let few = IntentModel::train_embedded(emb, &fx, &fe, 0.0).unwrap();
    let few_acc = acc(&few);
    eprintln!(
        "banking77 accuracy: full {:.2} %, 10-shot {:.2} %",
        full_acc * 100.0,
        few_acc * 100.0
    );
    assert!(full_acc >= 0.88, "full {full_acc}");
    assert!(few_acc >= 0.82, "10-shot {few_acc}");
}
