//! Intents: examples → embeddings → classifier, with an out-of-scope decision.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::classifier::{Classifier, TrainParams};
use super::embed::Embedder;
use super::scope::{self, Calibration, Gauss, Nearest, ScopeRule, ScopeScore};
use super::NluError;

/// The label an agent may give to examples of things it does not handle;
/// they train a real class so "what's the weather" lands somewhere harmless.
pub const OUT_OF_SCOPE: &str = "out_of_scope";

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IntentGuess {
    /// `None` when the utterance is out of scope.
    pub intent: Option<String>,
    pub confidence: f32,
    /// The best few (name, probability), best first.
    pub ranking: Vec<(String, f32)>,
    /// Cosine similarity to the nearest training example.
    pub nearest: f32,
    /// The number the scope rule judged (below its threshold: out of scope).
    pub scope_score: f32,
}

/// How the out-of-scope rule is set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scope {
    /// Out of scope below this top probability.
    Fixed(f32),
    /// Chosen on held-out training examples (see [`scope`]), giving up at
    /// most `max_drop` of in-scope accuracy.
    Calibrated { max_drop: f64, seed: u64 },
}

pub struct IntentModel {
    embedder: Arc<Embedder>,
    names: Vec<String>,
    clf: Classifier,
    nearest: Nearest,
    /// Only when the rule uses it (fitting costs a d × d factorisation).
    gauss: Option<Gauss>,
    /// What decides that a turn is out of scope.
    pub rule: ScopeRule,
    /// What calibration measured, when the rule was calibrated.
    pub calibration: Option<Calibration>,
    pub train_ms: u64,
}

impl IntentModel {
    /// Trains from `(text, intent)` pairs.
    pub fn train(
        embedder: Arc<Embedder>,
        examples: &[(String, String)],
        threshold: f32,
    ) -> Result<Self, NluError> {
        Self::train_with(embedder, examples, Scope::Fixed(threshold))
    }

    /// Trains from `(text, intent)` pairs with the given out-of-scope rule.
    pub fn train_with(
        embedder: Arc<Embedder>,
        examples: &[(String, String)],
        scope: Scope,
    ) -> Result<Self, NluError> {
        let t0 = Instant::now();
        let texts: Vec<String> = examples.iter().map(|(t, _)| prepare(t)).collect();
        let feats = embedder.embed_fixed(&texts)?;
        let mut m = Self::train_embedded_with(embedder, &feats, examples, scope)?;
        m.train_ms = t0.elapsed().as_millis() as u64;
        Ok(m)
    }

    /// Trains from examples whose embeddings are already known (evaluations
    /// that train several models on one embedded set).
    pub fn train_embedded(
        embedder: Arc<Embedder>,
        feats: &[Vec<f32>],
        examples: &[(String, String)],
        threshold: f32,
    ) -> Result<Self, NluError> {
        Self::train_embedded_with(embedder, feats, examples, Scope::Fixed(threshold))
    }

    pub fn train_embedded_with(
        embedder: Arc<Embedder>,
        feats: &[Vec<f32>],
        examples: &[(String, String)],
        scope: Scope,
    ) -> Result<Self, NluError> {
        let t0 = Instant::now();
        let mut index: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, label) in examples {
            let next = index.len();
            index.entry(label.as_str()).or_insert(next);
        }
        let mut names = vec![String::new(); index.len()];
        for (name, &i) in &index {
            names[i] = name.to_string();
        }
        let labels: Vec<usize> = examples.iter().map(|(_, l)| index[l.as_str()]).collect();
        let params = TrainParams::default();
        let clf = Classifier::train(feats, &labels, names.len(), &params)?;
        let fixed = |threshold| ScopeRule {
            score: ScopeScore::Probability,
            threshold,
        };
        let (rule, calibration) = match scope {
            Scope::Fixed(t) => (fixed(t), None),
            Scope::Calibrated { max_drop, seed } => {
                let skip = index.get(OUT_OF_SCOPE).copied();
                let signals = ScopeScore::calibration_signals(embedder.is_tuned());
                match scope::calibrate(feats, &labels, names.len(), skip, max_drop, seed, signals)?
                {
                    Some(c) => (c.rule, Some(c)),
                    // Too few intents to calibrate: nothing is rejected on
                    // score (the agent's own out-of-scope examples still are).
                    None => (fixed(0.0), None),
                }
            }
        };
        let gauss = (rule.score == ScopeScore::Distance)
            .then(|| Gauss::fit(feats, &labels, names.len()))
            .flatten();
        Ok(Self {
            embedder,
            names,
            clf,
            nearest: Nearest::new(feats),
            gauss,
            rule,
            calibration,
            train_ms: t0.elapsed().as_millis() as u64,
        })
    }

    pub fn intents(&self) -> &[String] {
        &self.names
    }

    pub fn embedder(&self) -> &Arc<Embedder> {
        &self.embedder
    }

    pub fn classify(&self, text: &str) -> Result<IntentGuess, NluError> {
        let v = self.embedder.embed(&prepare(text))?;
        Ok(self.classify_embedding(&v))
    }

    /// Prepares text the way [`classify`](Self::classify) does, for batch embedding.
    pub fn prepare(text: &str) -> String {
        prepare(text)
    }

    pub fn classify_embedding(&self, v: &[f32]) -> IntentGuess {
        let p = self.clf.predict(v);
        let mut ranked: Vec<(usize, f32)> = p.iter().copied().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        let (best, conf) = ranked.first().copied().unwrap_or((0, 0.0));
        let name = &self.names[best];
        let nearest = self.nearest.similarity(v);
        let distance = self.gauss.as_ref().map_or(0.0, |g| g.distance(v));
        let scope_score = self.rule.score.of(conf, nearest, distance);
        let intent =
            (scope_score >= self.rule.threshold && name != OUT_OF_SCOPE).then(|| name.clone());
        IntentGuess {
            intent,
            confidence: conf,
            ranking: ranked
                .iter()
                .take(3)
                .map(|&(i, p)| (self.names[i].clone(), p))
                .collect(),
            nearest,
            scope_score,
        }
    }
}

/// ASR output and typed examples should look alike to the model: lower case,
/// no trailing punctuation noise.
fn prepare(text: &str) -> String {
    text.trim().to_lowercase()
}
