//! What calls leave behind: interaction rows, tickets and hand-off packets
//! (their sealed columns opened and closed here).

use sqlx::any::AnyRow;
use sqlx::Row;

use super::*;

fn interaction_of(keys: &Keyring, r: &AnyRow) -> Result<Interaction> {
    let id: String = r.try_get("id")?;
    let open = |col: &str| -> Result<String> {
        Ok(keys.open(
            &format!("interactions.{col}/{id}"),
            &r.try_get::<String, _>(col)?,
        )?)
    };
    Ok(Interaction {
        transcript: serde_json::from_str(&open("transcript")?)?,
        slots: serde_json::from_str(&open("slots")?)?,
        summary: open("summary")?,
        id: id.clone(),
        customer_id: r.try_get("customer_id")?,
        channel: r.try_get("channel")?,
        agent: r.try_get("agent")?,
        started_ms: r.try_get("started_ms")?,
        ended_ms: r.try_get("ended_ms")?,
        intents: serde_json::from_str(&r.try_get::<String, _>("intents")?)?,
        sentiment: serde_json::from_str(&r.try_get::<String, _>("sentiment")?)?,
        outcome: r.try_get("outcome")?,
        handled_by: r.try_get("handled_by")?,
        csat: r.try_get("csat")?,
        response_ms: r.try_get("response_ms")?,
        priority: r.try_get("priority")?,
        human_agent: r.try_get("human_agent")?,
        wait_ms: r.try_get("wait_ms")?,
        talk_ms: r.try_get("talk_ms")?,
        turns: serde_json::from_str(&open("turns")?)?,
        language: r.try_get("language")?,
    })
}

fn handoff_of(keys: &Keyring, r: &AnyRow) -> Result<Handoff> {
    let call_id: String = r.try_get("call_id")?;
    let packet = keys.open(
        &format!("handoffs.packet/{call_id}"),
        &r.try_get::<String, _>("packet")?,
    )?;
    Ok(Handoff {
        packet: serde_json::from_str(&packet)?,
        call_id,
        created_ms: r.try_get("created_ms")?,
        webhook_status: r.try_get("webhook_status")?,
        attempts: r.try_get("attempts")?,
        next_attempt_ms: r.try_get("next_attempt_ms")?,
        last_error: r.try_get("last_error")?,
        delivered_ms: r.try_get("delivered_ms")?,
    })
}

fn ticket_of(keys: &Keyring, r: &AnyRow) -> Result<Ticket> {
    let id: String = r.try_get("id")?;
    Ok(Ticket {
        body: keys.open(
            &format!("tickets.body/{id}"),
            &r.try_get::<String, _>("body")?,
        )?,
        id,
        customer_id: r.try_get("customer_id")?,
        interaction_id: r.try_get("interaction_id")?,
        queue: r.try_get("queue")?,
        subject: r.try_get("subject")?,
        status: r.try_get("status")?,
        created_ms: r.try_get("created_ms")?,
    })
}

impl Store {
    // ---- interactions ----------------------------------------------------

    pub async fn save_interaction(&self, i: &Interaction) -> Result<()> {
        sqlx::query(
            "INSERT INTO interactions (id, customer_id, channel, agent, started_ms, ended_ms, \
             transcript, intents, slots, sentiment, outcome, handled_by, csat, response_ms, \
             priority, summary, human_agent, wait_ms, talk_ms, turns, language) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21) \
             ON CONFLICT (id) DO UPDATE SET customer_id = excluded.customer_id, \
             ended_ms = excluded.ended_ms, transcript = excluded.transcript, \
             intents = excluded.intents, slots = excluded.slots, sentiment = excluded.sentiment, \
             outcome = excluded.outcome, handled_by = excluded.handled_by, csat = excluded.csat, \
             response_ms = excluded.response_ms, priority = excluded.priority, \
             summary = excluded.summary, human_agent = excluded.human_agent, \
             wait_ms = excluded.wait_ms, talk_ms = excluded.talk_ms, turns = excluded.turns, \
             language = excluded.language",
        )
        .bind(&i.id)
        .bind(i.customer_id.clone())
        .bind(&i.channel)
        .bind(&i.agent)
        .bind(i.started_ms)
        .bind(i.ended_ms)
        .bind(self.seal(
            &format!("interactions.transcript/{}", i.id),
            &serde_json::to_string(&i.transcript)?,
        ))
        .bind(serde_json::to_string(&i.intents)?)
        .bind(self.seal(
            &format!("interactions.slots/{}", i.id),
            &serde_json::to_string(&i.slots)?,
        ))
        .bind(serde_json::to_string(&i.sentiment)?)
        .bind(&i.outcome)
        .bind(&i.handled_by)
        .bind(i.csat)
        .bind(i.response_ms)
        .bind(i.priority)
        .bind(self.seal(&format!("interactions.summary/{}", i.id), &i.summary))
        .bind(i.human_agent.clone())
        .bind(i.wait_ms)
        .bind(i.talk_ms)
        .bind(self.seal(
            &format!("interactions.turns/{}", i.id),
            &serde_json::to_string(&i.turns)?,
        ))
        .bind(&i.language)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn interaction(&self, id: &str) -> Result<Option<Interaction>> {
        let r = sqlx::query("SELECT * FROM interactions WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref()
            .map(|r| interaction_of(&self.keys, r))
            .transpose()
    }

    /// Newest first.
    pub async fn interactions_of(&self, customer_id: &str, limit: i64) -> Result<Vec<Interaction>> {
        let rows = sqlx::query(
            "SELECT * FROM interactions WHERE customer_id = $1 ORDER BY started_ms DESC LIMIT $2",
        )
        .bind(customer_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| interaction_of(&self.keys, r)).collect()
    }

    /// Those started at or after `since_ms`, oldest first.
    pub async fn interactions_since(&self, since_ms: i64) -> Result<Vec<Interaction>> {
        let rows =
            sqlx::query("SELECT * FROM interactions WHERE started_ms >= $1 ORDER BY started_ms")
                .bind(since_ms)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(|r| interaction_of(&self.keys, r)).collect()
    }

    pub async fn all_interactions(&self) -> Result<Vec<Interaction>> {
        let rows = sqlx::query("SELECT * FROM interactions ORDER BY started_ms")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| interaction_of(&self.keys, r)).collect()
    }

    // ---- tickets ---------------------------------------------------------

    pub async fn insert_ticket(&self, t: &Ticket) -> Result<()> {
        sqlx::query(
            "INSERT INTO tickets (id, customer_id, interaction_id, queue, subject, body, status, \
             created_ms) VALUES ($1,$2,$3,$4,$5,$6,$7,$8) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&t.id)
        .bind(t.customer_id.clone())
        .bind(t.interaction_id.clone())
        .bind(&t.queue)
        .bind(&t.subject)
        .bind(self.seal(&format!("tickets.body/{}", t.id), &t.body))
        .bind(&t.status)
        .bind(t.created_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn tickets(&self) -> Result<Vec<Ticket>> {
        let rows = sqlx::query("SELECT * FROM tickets ORDER BY created_ms")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| ticket_of(&self.keys, r)).collect()
    }

    // ---- hand-offs -------------------------------------------------------

    /// Stores a packet; a second transfer of the same call replaces it and
    /// queues it for delivery again.
    pub async fn save_handoff(&self, h: &Handoff) -> Result<()> {
        sqlx::query(
            "INSERT INTO handoffs (call_id, packet, created_ms, webhook_status, attempts, \
             next_attempt_ms, last_error, delivered_ms) VALUES ($1,$2,$3,$4,0,$5,'',NULL) \
             ON CONFLICT (call_id) DO UPDATE SET packet = excluded.packet, \
             webhook_status = excluded.webhook_status, attempts = 0, \
             next_attempt_ms = excluded.next_attempt_ms, delivered_ms = NULL",
        )
        .bind(&h.call_id)
        .bind(self.seal(
            &format!("handoffs.packet/{}", h.call_id),
            &serde_json::to_string(&h.packet)?,
        ))
        .bind(h.created_ms)
        .bind(&h.webhook_status)
        .bind(h.next_attempt_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn handoff(&self, call_id: &str) -> Result<Option<Handoff>> {
        let r = sqlx::query("SELECT * FROM handoffs WHERE call_id = $1")
            .bind(call_id)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(|r| handoff_of(&self.keys, r)).transpose()
    }

    /// Leases up to 20 due hand-off deliveries to `owner` until
    /// `now + lease_ms`: no other node gets them meanwhile (PostgreSQL skips
    /// rows another node is leasing at this instant; SQLite has one writer).
    /// A delivery's attempt ends the lease; a dead node's lease runs out.
    pub async fn lease_due_handoffs(
        &self,
        owner: &str,
        now: i64,
        lease_ms: i64,
    ) -> Result<Vec<Handoff>> {
        let rows = self.lease(&HANDOFF_WORK, owner, now, lease_ms).await?;
        let mut due: Vec<Handoff> = rows
            .iter()
            .map(|r| handoff_of(&self.keys, r))
            .collect::<Result<_>>()?;
        due.sort_by_key(|h| h.next_attempt_ms);
        Ok(due)
    }

    pub async fn handoff_attempted(
        &self,
        call_id: &str,
        delivered_at: Option<i64>,
        next_attempt_ms: i64,
        error: &str,
    ) -> Result<()> {
        let status = if delivered_at.is_some() {
            "delivered"
        } else {
            "pending"
        };
        sqlx::query(
            "UPDATE handoffs SET attempts = attempts + 1, webhook_status = $1, delivered_ms = $2, \
             next_attempt_ms = $3, last_error = $4, lease_owner = NULL, lease_until_ms = NULL \
             WHERE call_id = $5",
        )
        .bind(status)
        .bind(delivered_at)
        .bind(next_attempt_ms)
        .bind(error)
        .bind(call_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::super::{scratch_url, Handoff, OutboxMessage, Store};

    const LEASE: i64 = 60_000;

    async fn lease_all(s: &Store, now: i64) -> Vec<String> {
        let mut got = Vec::new();
        loop {
            let h = s.lease_due_handoffs(s.node_id(), now, LEASE).await.unwrap();
            let m = s.lease_due_outbox(s.node_id(), now, LEASE).await.unwrap();
            if h.is_empty() && m.is_empty() {
                return got;
            }
            got.extend(h.into_iter().map(|h| h.call_id));
            got.extend(m.into_iter().map(|m| m.id));
            tokio::task::yield_now().await;
        }
    }

    /// Two nodes on one store (SQLite, or PostgreSQL when `DATABASE_URL`
    /// names one) lease due work at the same moment: each piece goes to
    /// exactly one; a dead node's pieces go to the other once its lease
    /// runs out; an attempt ends the lease.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn due_work_is_leased_to_one_node_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let url = scratch_url(dir.path()).await.unwrap();
        let a = Store::open(&url).await.unwrap();
        let b = Store::open(&url).await.unwrap();
        assert_ne!(a.node_id(), b.node_id());
        let now = 1_800_000_000_000;
        for i in 0..60 {
            a.save_handoff(&Handoff {
                call_id: format!("CA{i:02}"),
                packet: serde_json::json!({"call_id": format!("CA{i:02}")}),
                created_ms: now - 1000 + i,
                webhook_status: "pending".into(),
                next_attempt_ms: now - 1000 + i,
                ..Default::default()
            })
            .await
            .unwrap();
            a.enqueue(&OutboxMessage {
                id: format!("OB{i:02}"),
                dedupe_key: format!("k{i}"),
                customer_id: "C1".into(),
                channel: "sms".into(),
                recipient: "+15555550100".into(),
                body: "hello".into(),
                next_attempt_ms: now - 1000 + i,
                created_ms: now - 1000 + i,
                ..Default::default()
            })
            .await
            .unwrap();
        }
        let (on_a, on_b) = tokio::join!(lease_all(&a, now), lease_all(&b, now));
        let (set_a, set_b): (HashSet<_>, HashSet<_>) = (
            on_a.iter().cloned().collect(),
            on_b.iter().cloned().collect(),
        );
        assert_eq!(on_a.len() + on_b.len(), 120, "every piece leased once");
        assert_eq!(set_a.len(), on_a.len());
        assert!(set_a.is_disjoint(&set_b), "a piece went to both nodes");
        eprintln!(
            "leased at once: node A {}, node B {}",
            on_a.len(),
            on_b.len()
        );

        // The hand-offs are attempted by whoever holds them: all delivered
        // but one, which failed and is retried later. The messages stay
        // unsent: their holders died.
        let holder = |id: &str| if set_a.contains(id) { &a } else { &b };
        let failed = "CA07".to_string();
        for i in 0..60 {
            let id = format!("CA{i:02}");
            if id == failed {
                holder(&id)
                    .handoff_attempted(&id, None, now + 5_000, "webhook answered 500")
                    .await
                    .unwrap();
            } else {
                holder(&id)
                    .handoff_attempted(&id, Some(now), now, "")
                    .await
                    .unwrap();
            }
        }
        // Nothing leased comes out again before its lease runs out.
        assert!(lease_all(&b, now + 1_000).await.is_empty());
        // The failed delivery is due again at its next attempt, for anyone.
        assert_eq!(lease_all(&b, now + 5_000).await, vec![failed.clone()]);
        // The unsent messages go to a live node once the leases have run out.
        let taken: HashSet<_> = lease_all(&b, now + LEASE).await.into_iter().collect();
        let messages: HashSet<_> = (0..60).map(|i| format!("OB{i:02}")).collect();
        assert_eq!(taken, messages);
        // Delivered work never comes back.
        let h = a.handoff("CA01").await.unwrap().unwrap();
        assert_eq!(h.webhook_status, "delivered");
        let later = lease_all(&a, now + 10 * LEASE).await;
        assert!(
            later.iter().all(|i| i.starts_with("OB") || *i == failed),
            "{later:?}"
        );
    }

    /// A business event taken by a node that died before running its rules
    /// is due for another node once the lease is over, to one node only;
    /// done events and plain records are never due; a failed run is due
    /// again at its retry time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unfinished_events_are_leased_after_their_takers_lease() {
        let dir = tempfile::tempdir().unwrap();
        let url = scratch_url(dir.path()).await.unwrap();
        let (dead, a, b) = (
            Store::open(&url).await.unwrap(),
            Store::open(&url).await.unwrap(),
            Store::open(&url).await.unwrap(),
        );
        let now = super::super::now_ms();
        let ev = |id: &str| serde_json::json!({"id": id, "type": "t"});
        for id in ["e1", "e2"] {
            assert!(dead
                .insert_event(id, "t", None, &ev(id), Some(now + 1_000))
                .await
                .unwrap());
        }
        assert!(dead
            .insert_event("record", "t", None, &ev("record"), None)
            .await
            .unwrap());
        // e2's taker finished it.
        dead.event_done("e2").await.unwrap();
        let due = |s: &Store, at: i64| {
            let s = s.clone();
            async move {
                s.lease_due_events(s.node_id(), at, LEASE)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|(id, _)| id)
                    .collect::<Vec<_>>()
            }
        };
        assert!(due(&a, now + 500).await.is_empty(), "still leased");
        let (on_a, on_b) = tokio::join!(due(&a, now + 1_500), due(&b, now + 1_500));
        let mut got = [on_a, on_b].concat();
        got.sort();
        assert_eq!(got, ["e1"], "one node takes the unfinished event");
        let (_, payload) = b
            .lease_due_events(b.node_id(), now + 1_500 + LEASE, LEASE)
            .await
            .unwrap()
            .pop()
            .expect("due again when the second lease ends unfinished");
        assert_eq!(payload["id"], "e1");
        b.event_failed("e1", now + 200_000).await.unwrap();
        assert!(due(&a, now + 199_000).await.is_empty());
        assert_eq!(due(&a, now + 200_000).await, ["e1"]);
        a.event_done("e1").await.unwrap();
        assert!(due(&b, now + 10_000_000).await.is_empty());
    }
}
