//! What supervisors taught the bot: labels on reviewed turns, the agent
//! versions retrained from them, and which version the nodes serve.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{now_ms, Result, Store};

/// What a reviewed turn was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelKind {
    /// An intent the agent has: the turn becomes one of its examples.
    Intent,
    /// An intent the agent lacks yet: counted for whoever writes it.
    NewIntent,
    /// A question the knowledge base should answer.
    KbGap,
    /// Not a request (noise, a cough, a half sentence): leaves the queue.
    Noise,
}

impl LabelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LabelKind::Intent => "intent",
            LabelKind::NewIntent => "new_intent",
            LabelKind::KbGap => "kb_gap",
            LabelKind::Noise => "noise",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "intent" => LabelKind::Intent,
            "new_intent" => LabelKind::NewIntent,
            "kb_gap" => LabelKind::KbGap,
            "noise" => LabelKind::Noise,
            _ => return None,
        })
    }
}

/// A supervisor's word on one turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Label {
    pub interaction_id: String,
    pub turn: u32,
    /// The turn's text as stored (secrets masked).
    pub text: String,
    pub kind: LabelKind,
    /// The intent's name for intent labels, a note otherwise.
    pub value: String,
    pub labelled_by: String,
    pub labelled_ms: i64,
}

impl Label {
    fn id(&self) -> String {
        format!("{}#{}", self.interaction_id, self.turn)
    }
}

/// One retrained version of an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentVersion {
    pub agent: String,
    pub version: i64,
    /// (text, intent) learned on top of the agent's own files.
    pub examples: Vec<(String, String)>,
    /// The gate's report (before/after figures), JSON.
    pub report: serde_json::Value,
    pub created_by: String,
    pub created_ms: i64,
    /// Whether the gate let it through.
    pub promoted: bool,
}

impl Store {
    /// Records (or replaces: the latest word wins) the label of a turn.
    pub async fn put_label(&self, l: &Label) -> Result<()> {
        let id = l.id();
        sqlx::query(
            "INSERT INTO labels (id, interaction_id, turn, text, kind, value, labelled_by, \
             labelled_ms) VALUES ($1,$2,$3,$4,$5,$6,$7,$8) ON CONFLICT (id) DO UPDATE SET \
             text = excluded.text, kind = excluded.kind, value = excluded.value, \
             labelled_by = excluded.labelled_by, labelled_ms = excluded.labelled_ms",
        )
        .bind(&id)
        .bind(&l.interaction_id)
        .bind(l.turn as i64)
        .bind(self.seal(&format!("labels.text/{id}"), &l.text))
        .bind(l.kind.as_str())
        .bind(&l.value)
        .bind(&l.labelled_by)
        .bind(l.labelled_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every label, oldest first.
    pub async fn labels(&self) -> Result<Vec<Label>> {
        let rows = sqlx::query("SELECT * FROM labels ORDER BY labelled_ms, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("id")?;
                let kind: String = r.try_get("kind")?;
                Ok(Label {
                    interaction_id: r.try_get("interaction_id")?,
                    turn: r.try_get::<i64, _>("turn")? as u32,
                    text: self.keys.open(
                        &format!("labels.text/{id}"),
                        &r.try_get::<String, _>("text")?,
                    )?,
                    kind: LabelKind::parse(&kind).unwrap_or(LabelKind::Noise),
                    value: r.try_get("value")?,
                    labelled_by: r.try_get("labelled_by")?,
                    labelled_ms: r.try_get("labelled_ms")?,
                })
            })
            .collect()
    }

    /// Stores a retrained version; if `promoted`, every node serves it from
    /// now on.
    pub async fn add_agent_version(&self, v: &AgentVersion) -> Result<()> {
        let id = format!("{}/{}", v.agent, v.version);
        sqlx::query(
            "INSERT INTO agent_versions (id, agent, version, examples, report, created_by, \
             created_ms, promoted) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
        )
        .bind(&id)
        .bind(&v.agent)
        .bind(v.version)
        .bind(self.seal(
            &format!("agent_versions.examples/{id}"),
            &serde_json::to_string(&v.examples)?,
        ))
        .bind(serde_json::to_string(&v.report)?)
        .bind(&v.created_by)
        .bind(v.created_ms)
        .bind(v.promoted as i64)
        .execute(&self.pool)
        .await?;
        if v.promoted {
            self.set_agent_version(&v.agent, v.version).await?;
        }
        Ok(())
    }

    /// `agent`'s versions, oldest first.
    pub async fn agent_versions(&self, agent: &str) -> Result<Vec<AgentVersion>> {
        let rows = sqlx::query("SELECT * FROM agent_versions WHERE agent = $1 ORDER BY version")
            .bind(agent)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("id")?;
                let examples = self.keys.open(
                    &format!("agent_versions.examples/{id}"),
                    &r.try_get::<String, _>("examples")?,
                )?;
                Ok(AgentVersion {
                    agent: r.try_get("agent")?,
                    version: r.try_get("version")?,
                    examples: serde_json::from_str(&examples)?,
                    report: serde_json::from_str(&r.try_get::<String, _>("report")?)?,
                    created_by: r.try_get("created_by")?,
                    created_ms: r.try_get("created_ms")?,
                    promoted: r.try_get::<i64, _>("promoted")? != 0,
                })
            })
            .collect()
    }

    /// The version of `agent` the nodes serve (0: its files alone).
    pub async fn agent_version(&self, agent: &str) -> Result<i64> {
        let row = sqlx::query("SELECT version FROM agent_current WHERE agent = $1")
            .bind(agent)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => r.try_get("version")?,
            None => 0,
        })
    }

    /// Makes the nodes serve `version` of `agent` (a promotion or a
    /// rollback).
    pub async fn set_agent_version(&self, agent: &str, version: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO agent_current (agent, version, changed_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (agent) DO UPDATE SET version = excluded.version, \
             changed_ms = excluded.changed_ms",
        )
        .bind(agent)
        .bind(version)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(call: &str, turn: u32, kind: LabelKind, value: &str) -> Label {
        Label {
            interaction_id: call.into(),
            turn,
            text: format!("what {call} said in turn {turn}"),
            kind,
            value: value.into(),
            labelled_by: "sam".into(),
            labelled_ms: turn as i64,
        }
    }

    /// Labels are replaced per turn and sealed; versions keep their
    /// examples and report; promotion and rollback move the current one.
    #[tokio::test]
    async fn labels_versions_and_the_served_version() {
        let dir = tempfile::tempdir().unwrap();
        let base = std::env::var("DATABASE_URL").unwrap_or_default();
        let s = Store::open(
            &super::super::scratch_url_on(&base, dir.path())
                .await
                .unwrap(),
        )
        .await
        .unwrap();
        s.put_label(&label("c1", 1, LabelKind::Noise, ""))
            .await
            .unwrap();
        s.put_label(&label("c1", 2, LabelKind::KbGap, "crypto"))
            .await
            .unwrap();
        // The supervisor changed their mind about turn 1.
        s.put_label(&label("c1", 1, LabelKind::Intent, "card_lost"))
            .await
            .unwrap();
        let got = s.labels().await.unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], label("c1", 1, LabelKind::Intent, "card_lost"));
        assert_eq!(got[1].kind, LabelKind::KbGap);
        // Sealed at rest.
        let raw: String = sqlx::query("SELECT text FROM labels WHERE id = 'c1#1'")
            .fetch_one(s.pool())
            .await
            .unwrap()
            .try_get("text")
            .unwrap();
        assert!(!raw.contains("c1 said"), "{raw}");

        assert_eq!(s.agent_version("bank").await.unwrap(), 0);
        let v = |n: i64, promoted: bool| AgentVersion {
            agent: "bank".into(),
            version: n,
            examples: vec![("i lost my card".into(), "card_lost".into())],
            report: serde_json::json!({"after": n}),
            created_by: "sam".into(),
            created_ms: n,
            promoted,
        };
        s.add_agent_version(&v(1, true)).await.unwrap();
        s.add_agent_version(&v(2, false)).await.unwrap();
        assert_eq!(s.agent_version("bank").await.unwrap(), 1);
        assert_eq!(
            s.agent_versions("bank").await.unwrap(),
            vec![v(1, true), v(2, false)]
        );
        assert!(
            s.add_agent_version(&v(2, true)).await.is_err(),
            "versions are unique"
        );
        s.set_agent_version("bank", 0).await.unwrap();
        assert_eq!(s.agent_version("bank").await.unwrap(), 0);
        assert!(s.agent_versions("other").await.unwrap().is_empty());
    }
}
