//! The review queue: the stored turns a supervisor should look at — the bot
//! did not understand, was unsure, had to ask again, the caller asked the
//! same again, or the call was escalated — grouped by what was said (the
//! sentence embeddings' cosine similarity), so one label covers a group and
//! the biggest groups show what callers ask that the agent cannot answer.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::store::{Interaction, LearnedTurn};

/// A top-intent probability under this on a turn the bot acted on is worth
/// a look.
const UNSURE: f32 = 0.5;
/// Examples shown per group.
const EXAMPLES: usize = 5;

/// Why a turn is in the queue, or `None` when it went well.
pub fn reason(t: &LearnedTurn) -> Option<&'static str> {
    if t.text.trim().is_empty() {
        return None;
    }
    let a = t.action.as_str();
    Some(if a == "fallback" || a == "offer_human" {
        "not understood"
    } else if a.starts_with("clarify:") {
        "unsure (asked to clarify)"
    } else if a == "escalate" {
        "escalated"
    } else if t.followed == "re_asked" {
        "caller asked again"
    } else if t.followed == "reprompted" {
        "bot asked again"
    } else if t.intent.is_some() && t.intents.first().is_some_and(|(_, p)| *p < UNSURE) {
        "low confidence"
    } else {
        return None;
    })
}

/// One turn to review.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub interaction: String,
    pub turn: u32,
    pub text: String,
    pub why: &'static str,
    pub top_intent: Option<String>,
    pub at_ms: i64,
    /// The call's language: turns group with their own language only.
    pub language: String,
}

/// The turns of `calls` that need a look, oldest call first.
pub fn queue(calls: &[Interaction]) -> Vec<Item> {
    calls
        .iter()
        .flat_map(|i| {
            i.turns.iter().filter_map(move |t| {
                Some(Item {
                    interaction: i.id.clone(),
                    turn: t.turn,
                    text: t.text.clone(),
                    why: reason(t)?,
                    top_intent: t.intents.first().map(|(n, _)| n.clone()),
                    at_ms: i.started_ms,
                    language: i.language.clone(),
                })
            })
        })
        .collect()
}

/// Turns that say much the same thing.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub size: usize,
    /// The language its turns were said in.
    pub language: String,
    /// A few of the texts, the first one the group's seed.
    pub examples: Vec<String>,
    /// Why its turns were queued, with counts.
    pub why: BTreeMap<&'static str, usize>,
    /// The intents the model leaned to, with counts, most first: a label
    /// to start from (or a sign the intent needs more examples).
    pub leaned_to: Vec<(String, usize)>,
    /// (interaction, turn) of every member.
    pub turns: Vec<(String, u32)>,
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut ab, mut aa, mut bb) = (0f32, 0f32, 0f32);
    for (x, y) in a.iter().zip(b) {
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    ab / (aa.sqrt() * bb.sqrt()).max(1e-12)
}

/// Groups `items` (with `emb[i]` the embedding of `items[i].text`, by the
/// encoder of its language): each joins the first group of its language
/// whose seed is at least `min_similarity` alike, else starts one. Biggest
/// groups first.
pub fn group(items: &[Item], emb: &[Vec<f32>], min_similarity: f32) -> Vec<Group> {
    let mut seeds: Vec<usize> = Vec::new();
    let mut members: Vec<Vec<usize>> = Vec::new();
    for (i, e) in emb.iter().enumerate().take(items.len()) {
        match seeds.iter().position(|&s| {
            items[s].language == items[i].language && cosine(&emb[s], e) >= min_similarity
        }) {
            Some(g) => members[g].push(i),
            None => {
                seeds.push(i);
                members.push(vec![i]);
            }
        }
    }
    let mut groups: Vec<Group> = members
        .into_iter()
        .map(|m| {
            let mut why = BTreeMap::new();
            let mut leaned: BTreeMap<String, usize> = BTreeMap::new();
            for &i in &m {
                *why.entry(items[i].why).or_insert(0) += 1;
                if let Some(t) = &items[i].top_intent {
                    *leaned.entry(t.clone()).or_insert(0) += 1;
                }
            }
            let mut leaned_to: Vec<(String, usize)> = leaned.into_iter().collect();
            leaned_to.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let mut examples: Vec<String> = Vec::new();
            for &i in &m {
                if examples.len() < EXAMPLES && !examples.contains(&items[i].text) {
                    examples.push(items[i].text.clone());
                }
            }
            Group {
                size: m.len(),
                language: items[m[0]].language.clone(),
                examples,
                why,
                leaned_to,
                turns: m
                    .iter()
                    .map(|&i| (items[i].interaction.clone(), items[i].turn))
                    .collect(),
            }
        })
        .collect();
    groups.sort_by_key(|g| std::cmp::Reverse(g.size));
    groups
}

/// The queue as a supervisor reads it in a terminal: the `top` biggest
/// groups with why their turns were queued, what the model leaned to, and
/// examples.
pub fn render(calls: usize, turns: usize, groups: &[Group], similarity: f32, top: usize) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "{calls} calls, {turns} turns to review in {} groups (similarity ≥ {similarity})\n",
        groups.len()
    );
    for (n, g) in groups.iter().take(top).enumerate() {
        let why: Vec<String> = g.why.iter().map(|(w, c)| format!("{w} {c}")).collect();
        let leaned: Vec<String> = g
            .leaned_to
            .iter()
            .take(3)
            .map(|(i, c)| format!("{i} {c}"))
            .collect();
        let leaned = if leaned.is_empty() {
            "-".to_string()
        } else {
            leaned.join(", ")
        };
        let _ = writeln!(
            out,
            "\n#{:<3} {} turns [{}]  ({})  model leaned to: {leaned}",
            n + 1,
            g.size,
            g.language,
            why.join(", ")
        );
        for e in &g.examples {
            let _ = writeln!(out, "       \"{e}\"");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(text: &str, action: &str, followed: &str, top: f32) -> LearnedTurn {
        LearnedTurn {
            turn: 1,
            text: text.into(),
            intents: vec![("hours".into(), top)],
            intent: Some("hours".into()),
            action: action.into(),
            followed: followed.into(),
            ..Default::default()
        }
    }

    #[test]
    fn turns_that_went_wrong_are_queued_with_why() {
        assert_eq!(
            reason(&turn("what is bitcoin", "fallback", "fell_back", 0.2)),
            Some("not understood")
        );
        assert_eq!(
            reason(&turn("hours?", "answer:hours", "re_asked", 0.9)),
            Some("caller asked again")
        );
        assert_eq!(
            reason(&turn("hours", "answer:hours", "continued", 0.4)),
            Some("low confidence")
        );
        assert_eq!(
            reason(&turn("hours", "answer:hours", "continued", 0.9)),
            None
        );
        assert_eq!(reason(&turn("", "fallback", "fell_back", 0.1)), None);
    }

    #[test]
    fn alike_turns_form_one_group_biggest_first() {
        let i = Interaction {
            id: "c1".into(),
            turns: vec![
                turn("crypto", "fallback", "fell_back", 0.2),
                turn("bitcoin", "fallback", "fell_back", 0.3),
                turn("mortgage", "fallback", "fell_back", 0.2),
                turn("fine", "answer:hours", "continued", 0.9),
            ],
            ..Default::default()
        };
        let q = queue(&[i]);
        assert_eq!(q.len(), 3, "the turn that went well is not queued");
        let emb = vec![vec![1.0, 0.1], vec![0.9, 0.2], vec![0.0, 1.0]];
        let g = group(&q, &emb, 0.8);
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].size, 2);
        assert_eq!(g[0].examples, ["crypto", "bitcoin"]);
        assert_eq!(g[0].why["not understood"], 2);
        assert_eq!(g[0].leaned_to, [("hours".to_string(), 2)]);
        assert_eq!(g[1].examples, ["mortgage"]);

        // A Spanish call's turn never joins an English group, however
        // alike the numbers (each language has its own encoder).
        let es = Interaction {
            id: "c2".into(),
            language: "es".into(),
            turns: vec![turn("criptomonedas", "fallback", "fell_back", 0.2)],
            ..Default::default()
        };
        let mut q2 = q.clone();
        q2.extend(queue(&[es]));
        let mut emb2 = emb.clone();
        emb2.push(vec![1.0, 0.1]);
        let g = group(&q2, &emb2, 0.8);
        assert_eq!(g.len(), 3);
        assert_eq!(g[0].size, 2);
        let es = g.iter().find(|g| g.language == "es").unwrap();
        assert_eq!(es.examples, ["criptomonedas"]);
    }
}
