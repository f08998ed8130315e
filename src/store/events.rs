//! Business events: recorded once, leased to the node running their
//! follow-up rules until those have run (see `Store::insert_event`).

use sqlx::Row;

use super::{now_ms, Result, Store, EVENT_WORK};

impl Store {
    /// Records business event `id` once (false: already recorded). With
    /// `lease_until_ms` its rules are still to run: it is leased to this
    /// node until then ([`Store::event_done`] ends that), and a node that
    /// dies meanwhile leaves it to another ([`Store::lease_due_events`]).
    /// Without, it is only a record.
    pub async fn insert_event(
        &self,
        id: &str,
        kind: &str,
        customer_id: Option<&str>,
        payload: &serde_json::Value,
        lease_until_ms: Option<i64>,
    ) -> Result<bool> {
        let now = now_ms();
        let status = if lease_until_ms.is_some() {
            "pending"
        } else {
            "done"
        };
        let n = sqlx::query(
            "INSERT INTO events (id, kind, customer_id, payload, received_ms, status, \
             next_attempt_ms, lease_owner, lease_until_ms) \
             VALUES ($1,$2,$3,$4,$5,$8,$5,$6,$7) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(kind)
        .bind(customer_id.map(str::to_string))
        .bind(serde_json::to_string(payload)?)
        .bind(now)
        .bind(lease_until_ms.map(|_| self.node.to_string()))
        .bind(lease_until_ms)
        .bind(status)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    /// Event `id`'s rules have run.
    pub async fn event_done(&self, id: &str) -> Result<()> {
        sqlx::query(
            "UPDATE events SET status = 'done', lease_owner = NULL, lease_until_ms = NULL \
             WHERE id = $1",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Event `id`'s rules failed to run: anyone tries again at `retry_ms`.
    pub async fn event_failed(&self, id: &str, retry_ms: i64) -> Result<()> {
        sqlx::query(
            "UPDATE events SET next_attempt_ms = $2, lease_owner = NULL, lease_until_ms = NULL \
             WHERE id = $1 AND status = 'pending'",
        )
        .bind(id)
        .bind(retry_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Events whose rules have not run and whose lease is over (the node
    /// that took them died, or they failed): leased to `owner`, (id,
    /// payload), oldest first.
    pub async fn lease_due_events(
        &self,
        owner: &str,
        now: i64,
        lease_ms: i64,
    ) -> Result<Vec<(String, serde_json::Value)>> {
        let rows = self.lease(&EVENT_WORK, owner, now, lease_ms).await?;
        let mut due = rows
            .iter()
            .map(|r| {
                let at: i64 = r.try_get("received_ms")?;
                let id: String = r.try_get("id")?;
                let payload: String = r.try_get("payload")?;
                Ok((at, id, serde_json::from_str(&payload)?))
            })
            .collect::<Result<Vec<(i64, String, serde_json::Value)>>>()?;
        due.sort_by_key(|(at, _, _)| *at);
        Ok(due.into_iter().map(|(_, id, p)| (id, p)).collect())
    }
}
