//! Sentiment per turn: a three-way classifier (negative / neutral / positive)
//! over the same MiniLM embedding the intent model uses, trained at start-up
//! from seed phrases in `config/sentiment.toml` (ours, written for phone
//! calls). Score = P(positive) − P(negative), in [-1, 1].

use serde::{Deserialize, Serialize};

use super::classifier::{Classifier, TrainParams};
use super::embed::Embedder;
use super::NluError;

const SEEDS: &str = include_str!("../../config/sentiment.toml");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    Negative,
    Neutral,
    Positive,
}

impl Label {
    pub fn of(score: f32) -> Label {
        if score >= LABEL_AT {
            Label::Positive
        } else if score <= -LABEL_AT {
            Label::Negative
        } else {
            Label::Neutral
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Label::Negative => "negative",
            Label::Neutral => "neutral",
            Label::Positive => "positive",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sentiment {
    pub score: f32,
    pub label: Label,
}

#[derive(Deserialize)]
struct Seeds {
    negative: Vec<String>,
    neutral: Vec<String>,
    positive: Vec<String>,
}

pub struct SentimentModel {
    clf: Classifier,
}

/// Above this |score| a turn is labelled positive/negative.
const LABEL_AT: f32 = 0.3;

impl SentimentModel {
    pub fn train(embedder: &Embedder) -> Result<Self, NluError> {
        let seeds: Seeds = toml::from_str(SEEDS)
            .map_err(|e| NluError::Data(format!("config/sentiment.toml: {e}")))?;
        let mut texts = Vec::new();
        let mut labels = Vec::new();
        for (i, set) in [&seeds.negative, &seeds.neutral, &seeds.positive]
            .into_iter()
            .enumerate()
        {
            for t in set {
                texts.push(t.to_lowercase());
                labels.push(i);
            }
        }
        let feats = embedder.embed_fixed(&texts)?;
        let clf = Classifier::train(
            &feats,
            &labels,
            3,
            &TrainParams {
                l2: 1e-3,
                ..Default::default()
            },
        )?;
        Ok(Self { clf })
    }

    pub fn score_embedding(&self, v: &[f32]) -> Sentiment {
        let p = self.clf.predict(v);
        let score = p[2] - p[0];
        Sentiment {
            score,
            label: Label::of(score),
        }
    }
}

/// The direction of the last few turns: positive when the caller is calming
/// down, negative when they are getting more upset.
pub fn trend(scores: &[f32]) -> f32 {
    let n = scores.len().min(4);
    if n < 2 {
        return 0.0;
    }
    let tail = &scores[scores.len() - n..];
    // Least-squares slope over the tail.
    let mx = (n as f32 - 1.0) / 2.0;
    let my = tail.iter().sum::<f32>() / n as f32;
    let (mut num, mut den) = (0.0, 0.0);
    for (i, y) in tail.iter().enumerate() {
        num += (i as f32 - mx) * (y - my);
        den += (i as f32 - mx).powi(2);
    }
    num / den
}
