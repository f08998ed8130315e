//! `attendant eval nlu`: accuracy, macro-F1, out-of-scope precision/recall,
//! worst confusions and per-utterance latency of an intent model on a
//! labelled CSV (`text,category`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use super::intent::IntentModel;
use super::scope::{Calibration, ScopeRule};
use super::NluError;

/// Gold or predicted label for "not one of the agent's intents".
pub const OOS: &str = "<out-of-scope>";

#[derive(Debug, Clone, Serialize)]
pub struct Labelled {
    pub text: String,
    pub category: String,
}

pub fn read_csv(path: &Path) -> Result<Vec<Labelled>, NluError> {
    let mut rd = csv::Reader::from_path(path)
        .map_err(|e| NluError::Data(format!("{}: {e}", path.display())))?;
    let headers = rd
        .headers()
        .map_err(|e| NluError::Data(format!("{}: {e}", path.display())))?
        .clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim() == name)
            .ok_or_else(|| {
                NluError::Data(format!(
                    "{}: no `{name}` column (need text,category)",
                    path.display()
                ))
            })
    };
    let (ti, ci) = (col("text")?, col("category")?);
    let mut out = Vec::new();
    for (n, rec) in rd.records().enumerate() {
        let rec =
            rec.map_err(|e| NluError::Data(format!("{}: row {}: {e}", path.display(), n + 2)))?;
        let (Some(t), Some(c)) = (rec.get(ti), rec.get(ci)) else {
            return Err(NluError::Data(format!(
                "{}: row {}: missing field",
                path.display(),
                n + 2
            )));
        };
        out.push(Labelled {
            text: t.to_string(),
            category: c.to_string(),
        });
    }
    Ok(out)
}

/// Picks `share` of the categories (at least one, never all) as unknown,
/// by a shuffle seeded with `seed`: the standard way to test out-of-scope
/// detection on a dataset that has no out-of-scope class. Sorted.
pub fn holdout_categories(data: &[Labelled], share: f64, seed: u64) -> Vec<String> {
    let mut cats: Vec<String> = data
        .iter()
        .map(|d| d.category.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let n = ((cats.len() as f64 * share).round() as usize).clamp(1, cats.len().saturating_sub(1));
    fastrand::Rng::with_seed(seed).shuffle(&mut cats);
    let mut out: Vec<String> = cats.into_iter().take(n).collect();
    out.sort();
    out
}

/// Keeps the first `k` examples of each category (file order, so the subset
/// is reproducible and not picked by looking at test results).
pub fn first_k_per_category(data: &[Labelled], k: usize) -> Vec<Labelled> {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    data.iter()
        .filter(|d| {
            let c = seen.entry(d.category.as_str()).or_default();
            *c += 1;
            *c <= k
        })
        .cloned()
        .collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct Confusion {
    pub gold: String,
    pub predicted: String,
    pub count: usize,
    pub example: String,
}

/// One point of the out-of-scope trade-off, measured on the test set for
/// the report (the rule itself was set without it).
#[derive(Debug, Clone, Serialize)]
pub struct TradeOff {
    pub threshold: f32,
    /// Known-intent items answered with their intent (rejections count as
    /// wrong).
    pub in_scope_accuracy: f64,
    pub oos_recall: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct NluReport {
    pub utterances: usize,
    pub intents: usize,
    pub accuracy: f64,
    /// Accuracy on the items whose intent the model knows (rejections count
    /// as wrong).
    pub in_scope_accuracy: f64,
    pub rule: ScopeRule,
    pub calibration: Option<Calibration>,
    /// Intents held out of training as unknown (`--holdout-intents`).
    pub held_out: Vec<String>,
    /// In-scope accuracy against out-of-scope recall at other thresholds of
    /// the same signal (only when the test has out-of-scope items).
    pub trade_off: Vec<TradeOff>,
    pub macro_f1: f64,
    /// `None` when there were no out-of-scope predictions / gold items.
    pub oos_precision: Option<f64>,
    pub oos_recall: Option<f64>,
    pub oos_gold: usize,
    pub confusions: Vec<Confusion>,
    pub latency_ms_p50: f64,
    pub latency_ms_p95: f64,
    pub latency_ms_mean: f64,
    pub train_ms: u64,
}

pub fn evaluate(model: &IntentModel, test: &[Labelled]) -> Result<NluReport, NluError> {
    let known: BTreeSet<&str> = model.intents().iter().map(|s| s.as_str()).collect();
    let mut lat = Vec::with_capacity(test.len());
    let mut pairs = Vec::with_capacity(test.len());
    // (known intent, top intent right, scope score)
    let mut scored = Vec::with_capacity(test.len());
    for item in test {
        let t0 = Instant::now();
        let guess = model.classify(&item.text)?;
        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
        let is_known =
            known.contains(item.category.as_str()) && item.category != super::intent::OUT_OF_SCOPE;
        let gold = if is_known {
            item.category.clone()
        } else {
            OOS.to_string()
        };
        let top_right = guess
            .ranking
            .first()
            .is_some_and(|(n, _)| *n == item.category);
        scored.push((is_known, top_right, guess.scope_score));
        let pred = guess.intent.unwrap_or_else(|| OOS.to_string());
        pairs.push((gold, pred, item.text.clone()));
    }
    let mut r = score(&pairs, lat, model.intents().len(), model.train_ms);
    r.rule = model.rule;
    r.calibration = model.calibration.clone();
    r.trade_off = trade_off(&scored);
    Ok(r)
}

/// In-scope accuracy and out-of-scope recall at the deciles of the known
/// items' scores.
fn trade_off(scored: &[(bool, bool, f32)]) -> Vec<TradeOff> {
    let n_in = scored.iter().filter(|s| s.0).count();
    let n_oos = scored.len() - n_in;
    if n_in == 0 || n_oos == 0 {
        return Vec::new();
    }
    let mut known: Vec<f32> = scored.iter().filter(|s| s.0).map(|s| s.2).collect();
    known.sort_by(f32::total_cmp);
    (0..10)
        .map(|d| {
            let t = if d == 0 {
                0.0
            } else {
                known[(known.len() * d / 20).min(known.len() - 1)]
            };
            let right = scored.iter().filter(|s| s.0 && s.1 && s.2 >= t).count();
            let caught = scored.iter().filter(|s| !s.0 && s.2 < t).count();
            TradeOff {
                threshold: t,
                in_scope_accuracy: right as f64 / n_in as f64,
                oos_recall: caught as f64 / n_oos as f64,
            }
        })
        .collect()
}

fn score(
    pairs: &[(String, String, String)],
    mut lat: Vec<f64>,
    intents: usize,
    train_ms: u64,
) -> NluReport {
    let n = pairs.len().max(1);
    let correct = pairs.iter().filter(|(g, p, _)| g == p).count();
    let labels: BTreeSet<&str> = pairs.iter().map(|(g, _, _)| g.as_str()).collect();
    let mut f1s = Vec::new();
    for l in &labels {
        let tp = pairs.iter().filter(|(g, p, _)| g == l && p == l).count() as f64;
        let fp = pairs.iter().filter(|(g, p, _)| g != l && p == l).count() as f64;
        let fn_ = pairs.iter().filter(|(g, p, _)| g == l && p != l).count() as f64;
        let f1 = if tp == 0.0 {
            0.0
        } else {
            2.0 * tp / (2.0 * tp + fp + fn_)
        };
        f1s.push(f1);
    }
    let oos_tp = pairs
        .iter()
        .filter(|(g, p, _)| g == OOS && p == OOS)
        .count() as f64;
    let oos_pred = pairs.iter().filter(|(_, p, _)| p == OOS).count() as f64;
    let oos_gold = pairs.iter().filter(|(g, _, _)| g == OOS).count();
    let in_right = pairs.iter().filter(|(g, p, _)| g != OOS && g == p).count();
    let mut conf: BTreeMap<(String, String), (usize, String)> = BTreeMap::new();
    for (g, p, t) in pairs.iter().filter(|(g, p, _)| g != p) {
        let e = conf.entry((g.clone(), p.clone())).or_insert((0, t.clone()));
        e.0 += 1;
    }
    let mut confusions: Vec<Confusion> = conf
        .into_iter()
        .map(|((gold, predicted), (count, example))| Confusion {
            gold,
            predicted,
            count,
            example,
        })
        .collect();
    confusions.sort_by(|a, b| b.count.cmp(&a.count).then(a.gold.cmp(&b.gold)));
    confusions.truncate(10);
    lat.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        lat.get(((lat.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    NluReport {
        utterances: pairs.len(),
        intents,
        accuracy: correct as f64 / n as f64,
        in_scope_accuracy: in_right as f64 / (pairs.len() - oos_gold).max(1) as f64,
        rule: ScopeRule {
            score: super::scope::ScopeScore::Probability,
            threshold: 0.0,
        },
        calibration: None,
        held_out: Vec::new(),
        trade_off: Vec::new(),
        macro_f1: if f1s.is_empty() {
            0.0
        } else {
            f1s.iter().sum::<f64>() / f1s.len() as f64
        },
        oos_precision: (oos_pred > 0.0).then(|| oos_tp / oos_pred),
        oos_recall: (oos_gold > 0).then(|| oos_tp / oos_gold as f64),
        oos_gold,
        confusions,
        latency_ms_p50: pct(0.5),
        latency_ms_p95: pct(0.95),
        latency_ms_mean: lat.iter().sum::<f64>() / lat.len().max(1) as f64,
        train_ms,
    }
}

pub fn print_report(r: &NluReport) {
    println!("utterances        {}", r.utterances);
    println!("intents           {}", r.intents);
    println!("accuracy          {:.2} %", r.accuracy * 100.0);
    println!(
        "in-scope accuracy {:.2} % (known intents; rejected counts as wrong)",
        r.in_scope_accuracy * 100.0
    );
    if !r.held_out.is_empty() {
        println!(
            "held out          {} intents as unknown: {}",
            r.held_out.len(),
            r.held_out.join(", ")
        );
    }
    println!(
        "out-of-scope rule {:?} < {:.3}",
        r.rule.score, r.rule.threshold
    );
    if let Some(c) = &r.calibration {
        println!(
            "  calibrated on training data only ({} folds of intents left out, {} ms): \
             {} known / {} unknown held-out examples; in-scope accuracy {:.1} % -> {:.1} %, \
             out-of-scope recall {:.1} %",
            c.folds,
            c.ms,
            c.in_scope,
            c.unknown,
            c.base_accuracy * 100.0,
            c.in_scope_accuracy * 100.0,
            c.oos_recall * 100.0
        );
        for (kind, t, acc, rec) in &c.candidates {
            println!(
                "    {:<12} < {:.3}: in-scope {:.1} %, out-of-scope recall {:.1} %",
                format!("{kind:?}"),
                t,
                acc * 100.0,
                rec * 100.0
            );
        }
    }
    println!("macro-F1          {:.2} %", r.macro_f1 * 100.0);
    let opt = |v: Option<f64>| {
        v.map(|x| format!("{:.2} %", x * 100.0))
            .unwrap_or_else(|| "n/a".into())
    };
    println!(
        "out-of-scope      {} gold; precision {}, recall {}",
        r.oos_gold,
        opt(r.oos_precision),
        opt(r.oos_recall)
    );
    println!("training          {} ms", r.train_ms);
    println!(
        "latency/utterance p50 {:.1} ms, p95 {:.1} ms, mean {:.1} ms",
        r.latency_ms_p50, r.latency_ms_p95, r.latency_ms_mean
    );
    if !r.trade_off.is_empty() {
        println!("trade-off on this test set (same signal, other thresholds; report only):");
        for p in &r.trade_off {
            println!(
                "  < {:.3}: in-scope accuracy {:.1} %, out-of-scope recall {:.1} %",
                p.threshold,
                p.in_scope_accuracy * 100.0,
                p.oos_recall * 100.0
            );
        }
    }
    println!("worst confusions (gold -> predicted, count, example):");
    for c in &r.confusions {
        println!(
            "  {:>3}  {} -> {}   \"{}\"",
            c.count, c.gold, c.predicted, c.example
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_count_oos_and_macro_f1() {
        let p = |g: &str, p: &str| (g.to_string(), p.to_string(), "x".to_string());
        let pairs = vec![
            p("a", "a"),
            p("a", "b"),
            p("b", "b"),
            p(OOS, OOS),
            p(OOS, "a"),
        ];
        let r = score(&pairs, vec![1.0, 2.0, 3.0, 4.0, 5.0], 2, 0);
        assert!((r.accuracy - 0.6).abs() < 1e-9);
        assert_eq!(r.oos_precision, Some(1.0));
        assert_eq!(r.oos_recall, Some(0.5));
        assert_eq!(r.confusions.len(), 2);
        assert_eq!(r.latency_ms_p50, 3.0);
    }

    #[test]
    fn held_out_categories_are_a_seeded_share() {
        let d = |c: &str| Labelled {
            text: "x".into(),
            category: c.into(),
        };
        let data: Vec<Labelled> = (0..8).map(|i| d(&format!("c{i}"))).collect();
        let a = holdout_categories(&data, 0.25, 3);
        assert_eq!(a.len(), 2);
        assert_eq!(
            a,
            holdout_categories(&data, 0.25, 3),
            "same seed, same pick"
        );
        assert_ne!(a, holdout_categories(&data, 0.25, 4));
        assert_eq!(holdout_categories(&data, 1.0, 1).len(), 7, "never all");
    }

    #[test]
    fn first_k_keeps_file_order() {
        let d = |t: &str, c: &str| Labelled {
            text: t.into(),
            category: c.into(),
        };
        let data = vec![d("1", "a"), d("2", "a"), d("3", "b"), d("4", "a")];
        let k = first_k_per_category(&data, 2);
        assert_eq!(
            k.iter().map(|x| x.text.as_str()).collect::<Vec<_>>(),
            ["1", "2", "3"]
        );
    }
}
