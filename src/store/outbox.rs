//! Follow-up threads and the outbox of messages to send (SMS, calls),
//! leased to one node at a time.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{now_ms, OutboxMessage, Result, Store, Thread, OUTBOX_WORK};

fn thread_of(r: &AnyRow) -> Result<Thread> {
    Ok(Thread {
        id: r.try_get("id")?,
        customer_id: r.try_get("customer_id")?,
        rule: r.try_get("rule")?,
        step: r.try_get("step")?,
        vars: serde_json::from_str(&r.try_get::<String, _>("vars")?)?,
        status: r.try_get("status")?,
        created_ms: r.try_get("created_ms")?,
        updated_ms: r.try_get("updated_ms")?,
    })
}

fn outbox_of(r: &AnyRow) -> Result<OutboxMessage> {
    Ok(OutboxMessage {
        id: r.try_get("id")?,
        dedupe_key: r.try_get("dedupe_key")?,
        thread_id: r.try_get("thread_id")?,
        customer_id: r.try_get("customer_id")?,
        channel: r.try_get("channel")?,
        recipient: r.try_get("recipient")?,
        body: r.try_get("body")?,
        status: r.try_get("status")?,
        attempts: r.try_get("attempts")?,
        next_attempt_ms: r.try_get("next_attempt_ms")?,
        last_error: r.try_get("last_error")?,
        created_ms: r.try_get("created_ms")?,
        sent_ms: r.try_get("sent_ms")?,
        provider_id: r.try_get("provider_id")?,
    })
}

impl Store {
    pub async fn save_thread(&self, t: &Thread) -> Result<()> {
        sqlx::query(
            "INSERT INTO threads (id, customer_id, rule, step, vars, status, created_ms, \
             updated_ms) VALUES ($1,$2,$3,$4,$5,$6,$7,$8) ON CONFLICT (id) DO UPDATE SET \
             step = excluded.step, vars = excluded.vars, status = excluded.status, \
             updated_ms = excluded.updated_ms",
        )
        .bind(&t.id)
        .bind(&t.customer_id)
        .bind(&t.rule)
        .bind(&t.step)
        .bind(serde_json::to_string(&t.vars)?)
        .bind(&t.status)
        .bind(t.created_ms)
        .bind(t.updated_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn thread(&self, id: &str) -> Result<Option<Thread>> {
        let r = sqlx::query("SELECT * FROM threads WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(thread_of).transpose()
    }

    /// The customer's newest open thread: where a reply belongs.
    pub async fn open_thread_of(&self, customer_id: &str) -> Result<Option<Thread>> {
        let r = sqlx::query(
            "SELECT * FROM threads WHERE customer_id = $1 AND status = 'open' \
             ORDER BY updated_ms DESC LIMIT 1",
        )
        .bind(customer_id)
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(thread_of).transpose()
    }

    pub async fn threads(&self) -> Result<Vec<Thread>> {
        let rows = sqlx::query("SELECT * FROM threads ORDER BY created_ms")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(thread_of).collect()
    }

    /// Queues a message; false when one with the same key was queued before.
    pub async fn enqueue(&self, m: &OutboxMessage) -> Result<bool> {
        let n = sqlx::query(
            "INSERT INTO outbox (id, dedupe_key, thread_id, customer_id, channel, recipient, \
             body, status, attempts, next_attempt_ms, last_error, created_ms) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,'pending',0,$8,'',$9) \
             ON CONFLICT (dedupe_key) DO NOTHING",
        )
        .bind(&m.id)
        .bind(&m.dedupe_key)
        .bind(m.thread_id.clone())
        .bind(&m.customer_id)
        .bind(&m.channel)
        .bind(&m.recipient)
        .bind(&m.body)
        .bind(m.next_attempt_ms)
        .bind(m.created_ms)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    /// Leases up to 20 due outbox messages to `owner` until `now +
    /// lease_ms` (see `lease_due_handoffs`): each is sent by one node.
    pub async fn lease_due_outbox(
        &self,
        owner: &str,
        now: i64,
        lease_ms: i64,
    ) -> Result<Vec<OutboxMessage>> {
        let rows = self.lease(&OUTBOX_WORK, owner, now, lease_ms).await?;
        let mut due: Vec<OutboxMessage> = rows.iter().map(outbox_of).collect::<Result<_>>()?;
        due.sort_by_key(|m| m.created_ms);
        Ok(due)
    }

    pub async fn outbox(&self) -> Result<Vec<OutboxMessage>> {
        let rows = sqlx::query("SELECT * FROM outbox ORDER BY created_ms, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(outbox_of).collect()
    }

    pub async fn outbox_attempted(
        &self,
        id: &str,
        status: &str,
        sent_ms: Option<i64>,
        provider_id: Option<&str>,
        next_attempt_ms: i64,
        error: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, status = $1, sent_ms = $2, \
             provider_id = $3, next_attempt_ms = $4, last_error = $5, lease_owner = NULL, \
             lease_until_ms = NULL WHERE id = $6",
        )
        .bind(status)
        .bind(sent_ms)
        .bind(provider_id.map(str::to_string))
        .bind(next_attempt_ms)
        .bind(error)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn record_inbound(
        &self,
        thread_id: Option<&str>,
        customer_id: Option<&str>,
        channel: &str,
        body: &str,
        sentiment: Option<f64>,
    ) -> Result<()> {
        let id = uuid::Uuid::new_v4().to_string();
        sqlx::query(
            "INSERT INTO inbound_messages (id, thread_id, customer_id, channel, body, sentiment, \
             received_ms) VALUES ($1,$2,$3,$4,$5,$6,$7)",
        )
        .bind(&id)
        .bind(thread_id.map(str::to_string))
        .bind(customer_id.map(str::to_string))
        .bind(channel)
        .bind(self.seal(&format!("inbound_messages.body/{id}"), body))
        .bind(sentiment)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
