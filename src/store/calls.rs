//! Call records as the calls go (opaque JSON: what a record holds is the
//! pipeline's business), so GET /calls/{id} survives a restart or a crash.

use sqlx::Row;

use super::{now_ms, Result, Store};

/// Every sealed column: table, its key column, the sealed columns.
const SEALED: &[(&str, &str, &[&str])] = &[
    (
        "interactions",
        "id",
        &["transcript", "slots", "summary", "turns"],
    ),
    ("handoffs", "call_id", &["packet"]),
    ("call_records", "call_id", &["record"]),
    ("tickets", "id", &["body"]),
    ("inbound_messages", "id", &["body"]),
    ("labels", "id", &["text"]),
    ("agent_versions", "id", &["examples"]),
];

impl Store {
    /// Writes the latest version of a call's record.
    pub async fn put_call_record(
        &self,
        call_id: &str,
        started_ms: i64,
        record: &serde_json::Value,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO call_records (call_id, record, started_ms, updated_ms) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (call_id) DO UPDATE SET \
             record = excluded.record, updated_ms = excluded.updated_ms",
        )
        .bind(call_id)
        .bind(self.seal(
            &format!("call_records.record/{call_id}"),
            &serde_json::to_string(record)?,
        ))
        .bind(started_ms)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn call_record(&self, call_id: &str) -> Result<Option<serde_json::Value>> {
        let row = sqlx::query("SELECT record FROM call_records WHERE call_id = $1")
            .bind(call_id)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => Ok(Some(serde_json::from_str(&self.keys.open(
                &format!("call_records.record/{call_id}"),
                &r.try_get::<String, _>("record")?,
            )?)?)),
            None => Ok(None),
        }
    }

    /// Deletes what calls left behind before `cutoff_ms` (unix ms): call
    /// records, interactions (transcripts, slots) and hand-off packets.
    /// Returns the rows deleted.
    pub async fn purge_before(&self, cutoff_ms: i64) -> Result<u64> {
        let mut n = 0;
        for sql in [
            "DELETE FROM call_records WHERE started_ms < $1",
            "DELETE FROM interactions WHERE started_ms < $1",
            "DELETE FROM handoffs WHERE created_ms < $1",
            // A label holds what a caller said: it goes with its call.
            "DELETE FROM labels WHERE labelled_ms < $1 AND NOT EXISTS \
             (SELECT 1 FROM interactions i WHERE i.id = labels.interaction_id)",
        ] {
            n += sqlx::query(sql)
                .bind(cutoff_ms)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(n)
    }

    /// Re-seals every sealed column with the keyring's first key (rows from
    /// before sealing included) and forgets the other keys, so they can be
    /// dropped from the keyring. Returns the values re-sealed.
    pub async fn rekey(&self) -> Result<u64> {
        let mut n = 0;
        for (table, id_col, cols) in SEALED {
            let select = format!("SELECT {id_col}, {} FROM {table}", cols.join(", "));
            for row in sqlx::query(&select).fetch_all(&self.pool).await? {
                let id: String = row.try_get(*id_col)?;
                for col in *cols {
                    let stored: String = row.try_get(*col)?;
                    if self.keys.is_current(&stored) {
                        continue;
                    }
                    let place = format!("{table}.{col}/{id}");
                    let plain = self.keys.open(&place, &stored)?;
                    // Only if nobody rewrote it meanwhile (a live call).
                    n += sqlx::query(&format!(
                        "UPDATE {table} SET {col} = $1 WHERE {id_col} = $2 AND {col} = $3"
                    ))
                    .bind(self.seal(&place, &plain))
                    .bind(&id)
                    .bind(&stored)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                }
            }
        }
        sqlx::query("DELETE FROM data_keys WHERE id <> $1")
            .bind(self.keys.current_id())
            .execute(&self.pool)
            .await?;
        Ok(n)
    }

    /// The most recent calls' ids, oldest first.
    pub async fn recent_call_ids(&self, limit: i64) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT call_id FROM call_records ORDER BY started_ms DESC, call_id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut ids = rows
            .iter()
            .map(|r| r.try_get::<String, _>("call_id"))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        ids.reverse();
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_are_replaced_and_listed_by_start() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&super::super::scratch_url(dir.path()).await.unwrap())
            .await
            .unwrap();
        s.put_call_record("b", 2, &serde_json::json!({"turns": 0}))
            .await
            .unwrap();
        s.put_call_record("a", 1, &serde_json::json!({"turns": 0}))
            .await
            .unwrap();
        s.put_call_record("b", 2, &serde_json::json!({"turns": 1}))
            .await
            .unwrap();
        assert_eq!(
            s.call_record("b").await.unwrap(),
            Some(serde_json::json!({"turns": 1}))
        );
        assert_eq!(s.call_record("c").await.unwrap(), None);
        assert_eq!(s.recent_call_ids(10).await.unwrap(), vec!["a", "b"]);
        assert_eq!(s.recent_call_ids(1).await.unwrap(), vec!["b"]);
        // Retention: what started before the cutoff goes, the rest stays.
        assert_eq!(s.purge_before(2).await.unwrap(), 1);
        assert_eq!(s.recent_call_ids(10).await.unwrap(), vec!["b"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sealed_at_rest_and_rotated() {
        use crate::store::{new_key, Interaction, Keyring, StoreError, Utterance};
        let dir = tempfile::tempdir().unwrap();
        let url = super::super::scratch_url(dir.path()).await.unwrap();
        let (old, new) = (new_key(), new_key());
        let ring = |text: &str| Keyring::parse(text, "test").unwrap();
        let s = Store::open_with(&url, ring(&old)).await.unwrap();
        let mut i = Interaction {
            id: "call-1".into(),
            channel: "voice".into(),
            summary: "asked about the Lisbon flat".into(),
            ..Default::default()
        };
        i.transcript.push(Utterance {
            speaker: "caller".into(),
            text: "my name is Quentin Zebulon".into(),
            ..Default::default()
        });
        i.slots.insert("city".into(), "Lisbon".into());
        i.turns.push(crate::store::LearnedTurn {
            turn: 1,
            text: "my name is Quentin Zebulon".into(),
            intents: vec![("give_name".into(), 0.9)],
            followed: "continued".into(),
            ..Default::default()
        });
        s.save_interaction(&i).await.unwrap();
        let back = s.interaction("call-1").await.unwrap();
        assert_eq!(back.map(|b| b.turns), Some(i.turns.clone()));
        s.put_call_record("call-1", 1, &serde_json::json!({"said": "Quentin Zebulon"}))
            .await
            .unwrap();
        // Nothing readable in the database itself.
        let raw: Vec<String> = sqlx::query(
            "SELECT transcript || slots || summary || turns AS v FROM interactions \
             UNION ALL SELECT record AS v FROM call_records",
        )
        .fetch_all(s.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get("v").unwrap())
        .collect();
        assert_eq!(raw.len(), 2);
        for v in &raw {
            assert!(!v.contains("Quentin") && !v.contains("Lisbon"), "{v}");
        }
        // A value moved to another row does not open.
        sqlx::query(
            "INSERT INTO call_records (call_id, record, started_ms, updated_ms) \
                     SELECT 'call-2', record, 2, 2 FROM call_records WHERE call_id = 'call-1'",
        )
        .execute(s.pool())
        .await
        .unwrap();
        assert!(s.call_record("call-2").await.is_err());
        sqlx::query("DELETE FROM call_records WHERE call_id = 'call-2'")
            .execute(s.pool())
            .await
            .unwrap();
        // A node with only the new key refuses to start.
        assert!(matches!(
            Store::open_with(&url, ring(&new)).await,
            Err(StoreError::MissingKeys(ids)) if ids == vec![ring(&old).current_id().to_string()]
        ));
        // Rotation: new key first, old kept to read, rekey, old dropped.
        let s = Store::open_with(&url, ring(&format!("{new}\n{old}")))
            .await
            .unwrap();
        assert_eq!(s.interaction("call-1").await.unwrap().unwrap(), i);
        assert_eq!(s.rekey().await.unwrap(), 5);
        assert_eq!(s.rekey().await.unwrap(), 0);
        let s = Store::open_with(&url, ring(&new)).await.unwrap();
        assert_eq!(s.interaction("call-1").await.unwrap().unwrap(), i);
        assert_eq!(
            s.call_record("call-1").await.unwrap().unwrap()["said"],
            "Quentin Zebulon"
        );
    }
}
