//! Priority routing, declared in an agent's `routing.toml`.
//!
//! Signals are conditions over what we know of the caller and the call
//! (tier, value, sentiment and its trend, repeat contacts, intent, failed
//! bot attempts); each that holds adds its points to a priority score
//! (capped at 100). Routes are then tried in order; the first whose
//! condition holds (it may read `score`) decides: carry on with the bot,
//! offer a human, or bypass the bot to a queue at a priority.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::agent::{parse_toml, AgentError};
use crate::rules::{Condition, Facts, Value};

/// Every fact a routing condition may read.
pub const FACTS: &[&str] = &[
    "known",
    "tier",
    "lifetime_value",
    "predicted_value",
    "tenure_years",
    "recent_contacts",
    "sentiment",
    "sentiment_trend",
    "min_sentiment",
    "intent",
    "failed_attempts",
    "turn",
    "score",
    "language",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RouteAction {
    #[default]
    Continue,
    OfferHuman,
    Bypass,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Signal {
    pub name: String,
    pub when: Condition,
    pub points: i64,
    /// Shown to the human agent when this signal contributed.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub name: String,
    pub when: Condition,
    pub action: RouteAction,
    /// Bypass: where to send the caller (default: the agent's default queue).
    pub queue: Option<String>,
    /// Said to the caller; `{first_name}` is filled in.
    pub say: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RoutingRules {
    /// How far back a previous contact counts as a repeat.
    #[serde(default = "three")]
    pub window_days: i64,
    #[serde(default)]
    pub signal: Vec<Signal>,
    #[serde(default)]
    pub route: Vec<Route>,
}

fn three() -> i64 {
    3
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub score: i64,
    pub action: RouteAction,
    pub route: Option<String>,
    pub queue: Option<String>,
    pub say: Option<String>,
    /// Names of the signals that held (machine-readable).
    pub signals: Vec<String>,
    /// Why, for people: the reasons of the signals that held.
    pub reasons: Vec<String>,
}

impl RoutingRules {
    /// `routing.toml` is optional: without it every call stays with the bot.
    pub fn load(dir: &Path) -> Result<Self, AgentError> {
        let path = dir.join("routing.toml");
        if !path.exists() {
            return Ok(Self::default());
        }
        let text = std::fs::read_to_string(&path).map_err(|e| AgentError::File {
            file: path.clone(),
            msg: e.to_string(),
        })?;
        let rules: RoutingRules = parse_toml(&path, &text)?;
        let conds = rules
            .signal
            .iter()
            .map(|s| (&s.name, &s.when))
            .chain(rules.route.iter().map(|r| (&r.name, &r.when)));
        for (name, c) in conds {
            if let Some(bad) = c.names().into_iter().find(|n| !FACTS.contains(n)) {
                return Err(AgentError::At {
                    file: path.clone(),
                    line: text
                        .find(c.source())
                        .map_or(1, |o| crate::agent::line_at(&text, o)),
                    msg: format!(
                        "`{name}`: unknown fact `{bad}` (known: {})",
                        FACTS.join(", ")
                    ),
                });
            }
        }
        Ok(rules)
    }

    pub fn decide(&self, facts: &Facts) -> Decision {
        let mut score = 0;
        let mut reasons = Vec::new();
        let mut signals = Vec::new();
        for s in &self.signal {
            if s.when.eval(facts) {
                score += s.points;
                signals.push(s.name.clone());
                reasons.push(s.reason.clone().unwrap_or_else(|| s.name.clone()));
            }
        }
        let score = score.clamp(0, 100);
        let mut f = facts.clone();
        f.insert("score".into(), Value::Num(score as f64));
        for r in &self.route {
            if r.when.eval(&f) {
                return Decision {
                    score,
                    action: r.action,
                    route: Some(r.name.clone()),
                    queue: r.queue.clone(),
                    say: r.say.clone(),
                    signals,
                    reasons,
                };
            }
        }
        Decision {
            score,
            signals,
            reasons,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = r#"
window_days = 3
[[signal]]
name = "high_value"
when = "lifetime_value >= 1000 || tier in [gold, platinum]"
points = 30
reason = "high-value customer"
[[signal]]
name = "repeat"
when = "recent_contacts >= 1"
points = 30
[[signal]]
name = "unhappy"
when = "sentiment <= -0.3"
points = 30
[[signal]]
name = "struggling"
when = "failed_attempts >= 2"
points = 25
[[route]]
name = "vip_rescue"
when = "score >= 80"
action = "bypass"
queue = "queue:priority_care"
[[route]]
name = "offer"
when = "score >= 50"
action = "offer_human"
"#;

    fn facts(pairs: &[(&str, Value)]) -> Facts {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn table_of_callers() {
        let rules: RoutingRules = toml::from_str(RULES).unwrap();
        use RouteAction::*;
        use Value::*;
        type Row<'a> = (&'a str, Vec<(&'a str, Value)>, i64, RouteAction);
        let table: Vec<Row> = vec![
            ("unknown, calm", vec![("known", Bool(false))], 0, Continue),
            (
                "gold, first call, calm",
                vec![("tier", Str("gold".into())), ("sentiment", Num(0.2))],
                30,
                Continue,
            ),
            (
                "gold, repeat, calm",
                vec![("tier", Str("gold".into())), ("recent_contacts", Num(1.0))],
                60,
                OfferHuman,
            ),
            (
                "gold, repeat, angry: the late order",
                vec![
                    ("lifetime_value", Num(2400.0)),
                    ("recent_contacts", Num(1.0)),
                    ("sentiment", Num(-0.7)),
                ],
                90,
                Bypass,
            ),
            (
                "standard, repeat, angry",
                vec![
                    ("tier", Str("standard".into())),
                    ("recent_contacts", Num(2.0)),
                    ("sentiment", Num(-0.5)),
                ],
                60,
                OfferHuman,
            ),
            (
                "everything at once is capped",
                vec![
                    ("tier", Str("platinum".into())),
                    ("recent_contacts", Num(3.0)),
                    ("sentiment", Num(-0.9)),
                    ("failed_attempts", Num(4.0)),
                ],
                100,
                Bypass,
            ),
        ];
        for (name, f, score, action) in table {
            let d = rules.decide(&facts(&f));
            assert_eq!((d.score, d.action), (score, action), "{name}");
        }
        let d = rules.decide(&facts(&[
            ("tier", Str("gold".into())),
            ("recent_contacts", Num(1.0)),
            ("sentiment", Num(-0.7)),
        ]));
        assert_eq!(d.queue.as_deref(), Some("queue:priority_care"));
        assert!(d.reasons.contains(&"high-value customer".to_string()));
        assert!(d.signals.contains(&"high_value".to_string()));
    }

    #[test]
    fn unknown_facts_are_load_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("routing.toml"),
            "[[signal]]\nname = \"x\"\nwhen = \"lifetime >= 3\"\npoints = 1\n",
        )
        .unwrap();
        let e = RoutingRules::load(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("routing.toml:3") && e.contains("lifetime"),
            "{e}"
        );
    }
}
