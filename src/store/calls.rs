//! Call records as the calls go (opaque JSON: what a record holds is the
//! pipeline's business), so GET /calls/{id} survives a restart or a crash.

use sqlx::Row;

use super::{now_ms, Result, Store};

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
        .bind(serde_json::to_string(record)?)
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
            Some(r) => Ok(Some(serde_json::from_str(
                &r.try_get::<String, _>("record")?,
            )?)),
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
        ] {
            n += sqlx::query(sql)
                .bind(cutoff_ms)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
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
}
