//! `attendant db seed --demo`: loads `db/demo.toml` (customers, accounts,
//! orders, earlier interactions) so the demo agents and the scenarios work.
//! Re-seeding resets the demo rows and leaves every other row alone.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{cents, hash_pin, normalize_phone, now_ms, Result, Store, StoreError, Utterance};

pub const DEMO_TOML: &str = include_str!("../../db/demo.toml");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Seed {
    #[serde(default)]
    customer: Vec<SeedCustomer>,
    #[serde(default)]
    account: Vec<SeedAccount>,
    #[serde(default)]
    card: Vec<SeedCard>,
    #[serde(default)]
    loan_product: Vec<SeedLoanProduct>,
    #[serde(default)]
    loan: Vec<SeedLoan>,
    #[serde(default)]
    order: Vec<SeedOrder>,
    #[serde(default, rename = "return")]
    returns: Vec<SeedReturn>,
    #[serde(default)]
    interaction: Vec<SeedInteraction>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedCustomer {
    id: String,
    name: String,
    #[serde(default)]
    phones: Vec<String>,
    #[serde(default = "en")]
    language: String,
    #[serde(default = "standard")]
    tier: String,
    #[serde(default)]
    lifetime_value: f64,
    #[serde(default)]
    predicted_value: f64,
    customer_since: String,
    dob: Option<String>,
    #[serde(default)]
    consent_sms: bool,
    #[serde(default)]
    consent_calls: bool,
    #[serde(default)]
    reviews_left: i64,
}

fn en() -> String {
    "en".into()
}
fn standard() -> String {
    "standard".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedTx {
    day: String,
    description: String,
    amount: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedAccount {
    id: String,
    customer: String,
    kind: String,
    currency: String,
    balance: f64,
    available: Option<f64>,
    pin: String,
    #[serde(default)]
    transactions: Vec<SeedTx>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedCard {
    last4: String,
    account: String,
    kind: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedLoanProduct {
    kind: String,
    rate: f64,
    max_amount: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedLoan {
    id: String,
    customer: String,
    kind: String,
    amount: f64,
    status: String,
    updated: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedOrder {
    id: String,
    customer: String,
    item: String,
    status: String,
    placed: String,
    promised: Option<String>,
    eta: Option<String>,
    delivered: Option<String>,
    total: f64,
    currency: String,
    #[serde(default)]
    address: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedReturn {
    id: String,
    order: String,
    reason: String,
    status: String,
    refund: f64,
    #[serde(default)]
    days_ago: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedInteraction {
    id: String,
    customer: String,
    channel: String,
    agent: String,
    #[serde(default)]
    days_ago: i64,
    #[serde(default)]
    intents: Vec<String>,
    outcome: String,
    handled_by: String,
    csat: Option<i64>,
    #[serde(default)]
    summary: String,
    #[serde(default)]
    sentiment: Vec<f32>,
    #[serde(default)]
    transcript: Vec<(String, String)>,
}

const DAY_MS: i64 = 86_400_000;

/// Seeds from a TOML file; `path` only names it in errors when `text` is given.
pub async fn seed_text(store: &Store, text: &str, path: &str) -> Result<SeedCounts> {
    let seed: Seed = toml::from_str(text).map_err(|e| StoreError::Seed {
        path: path.to_string(),
        message: e.to_string(),
    })?;
    let pool = store.pool();
    let mut tx = pool.begin().await?;
    let mut n = SeedCounts::default();
    // Upserts, parents first: rows that calls created (interactions, returns,
    // threads) keep pointing at the same customers, accounts and orders, so
    // seeding twice is the same as seeding once.
    for c in &seed.customer {
        sqlx::query("DELETE FROM customer_phones WHERE customer_id = $1")
            .bind(&c.id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO customers (id, name, language, tier, lifetime_value_cents, \
             predicted_value_cents, customer_since, dob, consent_sms, consent_calls, reviews_left) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11) ON CONFLICT (id) DO UPDATE SET \
             name = excluded.name, language = excluded.language, tier = excluded.tier, \
             lifetime_value_cents = excluded.lifetime_value_cents, \
             predicted_value_cents = excluded.predicted_value_cents, \
             customer_since = excluded.customer_since, dob = excluded.dob, \
             consent_sms = excluded.consent_sms, consent_calls = excluded.consent_calls, \
             reviews_left = excluded.reviews_left",
        )
        .bind(&c.id)
        .bind(&c.name)
        .bind(&c.language)
        .bind(&c.tier)
        .bind(cents(c.lifetime_value))
        .bind(cents(c.predicted_value))
        .bind(&c.customer_since)
        .bind(c.dob.clone())
        .bind(c.consent_sms as i64)
        .bind(c.consent_calls as i64)
        .bind(c.reviews_left)
        .execute(&mut *tx)
        .await?;
        for p in &c.phones {
            let p = normalize_phone(p);
            sqlx::query("DELETE FROM customer_phones WHERE phone = $1")
                .bind(&p)
                .execute(&mut *tx)
                .await?;
            sqlx::query("INSERT INTO customer_phones (phone, customer_id) VALUES ($1, $2)")
                .bind(&p)
                .bind(&c.id)
                .execute(&mut *tx)
                .await?;
        }
        n.customers += 1;
    }
    for a in &seed.account {
        sqlx::query("DELETE FROM transactions WHERE account_id = $1")
            .bind(&a.id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM cards WHERE account_id = $1")
            .bind(&a.id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO accounts (id, customer_id, kind, currency, balance_cents, \
             available_cents, pin_hash) VALUES ($1,$2,$3,$4,$5,$6,$7) \
             ON CONFLICT (id) DO UPDATE SET customer_id = excluded.customer_id, \
             kind = excluded.kind, currency = excluded.currency, \
             balance_cents = excluded.balance_cents, available_cents = excluded.available_cents, \
             pin_hash = excluded.pin_hash",
        )
        .bind(&a.id)
        .bind(&a.customer)
        .bind(&a.kind)
        .bind(&a.currency)
        .bind(cents(a.balance))
        .bind(cents(a.available.unwrap_or(a.balance)))
        .bind(hash_pin(&a.pin))
        .execute(&mut *tx)
        .await?;
        for (i, t) in a.transactions.iter().enumerate() {
            sqlx::query(
                "INSERT INTO transactions (id, account_id, day, description, amount_cents) \
                 VALUES ($1,$2,$3,$4,$5)",
            )
            .bind(format!("{}-{:04}", a.id, a.transactions.len() - i))
            .bind(&a.id)
            .bind(&t.day)
            .bind(&t.description)
            .bind(cents(t.amount))
            .execute(&mut *tx)
            .await?;
        }
        n.accounts += 1;
    }
    for c in &seed.card {
        sqlx::query("DELETE FROM cards WHERE last4 = $1")
            .bind(&c.last4)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO cards (last4, account_id, kind, status) VALUES ($1,$2,$3,'active')",
        )
        .bind(&c.last4)
        .bind(&c.account)
        .bind(&c.kind)
        .execute(&mut *tx)
        .await?;
    }
    for l in &seed.loan_product {
        sqlx::query("DELETE FROM loan_products WHERE kind = $1")
            .bind(&l.kind)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO loan_products (kind, rate, max_amount_cents) VALUES ($1,$2,$3)")
            .bind(&l.kind)
            .bind(l.rate)
            .bind(cents(l.max_amount))
            .execute(&mut *tx)
            .await?;
    }
    for l in &seed.loan {
        sqlx::query(
            "INSERT INTO loans (id, customer_id, kind, amount_cents, status, updated) \
             VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT (id) DO UPDATE SET \
             customer_id = excluded.customer_id, kind = excluded.kind, \
             amount_cents = excluded.amount_cents, status = excluded.status, \
             updated = excluded.updated",
        )
        .bind(&l.id)
        .bind(&l.customer)
        .bind(&l.kind)
        .bind(cents(l.amount))
        .bind(&l.status)
        .bind(&l.updated)
        .execute(&mut *tx)
        .await?;
    }
    let now = now_ms();
    for r in &seed.returns {
        sqlx::query("DELETE FROM returns WHERE id = $1")
            .bind(&r.id)
            .execute(&mut *tx)
            .await?;
    }
    for o in &seed.order {
        sqlx::query(
            "INSERT INTO orders (id, customer_id, item, status, placed, promised, eta, delivered, \
             total_cents, currency, address, reviewed) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,0) \
             ON CONFLICT (id) DO UPDATE SET customer_id = excluded.customer_id, \
             item = excluded.item, status = excluded.status, placed = excluded.placed, \
             promised = excluded.promised, eta = excluded.eta, delivered = excluded.delivered, \
             total_cents = excluded.total_cents, currency = excluded.currency, \
             address = excluded.address, reviewed = 0",
        )
        .bind(&o.id)
        .bind(&o.customer)
        .bind(&o.item)
        .bind(&o.status)
        .bind(&o.placed)
        .bind(o.promised.clone())
        .bind(o.eta.clone())
        .bind(o.delivered.clone())
        .bind(cents(o.total))
        .bind(&o.currency)
        .bind(&o.address)
        .execute(&mut *tx)
        .await?;
        n.orders += 1;
    }
    for r in &seed.returns {
        sqlx::query(
            "INSERT INTO returns (id, order_id, reason, status, refund_cents, created_ms) \
             VALUES ($1,$2,$3,$4,$5,$6)",
        )
        .bind(&r.id)
        .bind(&r.order)
        .bind(&r.reason)
        .bind(&r.status)
        .bind(cents(r.refund))
        .bind(now - r.days_ago * DAY_MS)
        .execute(&mut *tx)
        .await?;
    }
    // Seeded history is replaced by id; calls' own rows stay.
    for i in &seed.interaction {
        let started = now - i.days_ago * DAY_MS - 10 * 60_000;
        let transcript: Vec<Utterance> = i
            .transcript
            .iter()
            .enumerate()
            .map(|(k, (who, text))| Utterance {
                speaker: who.clone(),
                text: text.clone(),
                at_ms: started + k as i64 * 5000,
                dtmf: None,
            })
            .collect();
        let sentiment: Vec<super::SentimentSample> = i
            .sentiment
            .iter()
            .enumerate()
            .map(|(k, s)| super::SentimentSample {
                turn: k as u32 + 1,
                score: *s,
                label: crate::nlu::sentiment::Label::of(*s).as_str().to_string(),
            })
            .collect();
        let rec = super::Interaction {
            id: i.id.clone(),
            customer_id: Some(i.customer.clone()),
            channel: i.channel.clone(),
            agent: i.agent.clone(),
            started_ms: started,
            ended_ms: Some(started + transcript.len() as i64 * 5000),
            transcript,
            intents: i.intents.clone(),
            slots: BTreeMap::new(),
            sentiment,
            outcome: i.outcome.clone(),
            handled_by: i.handled_by.clone(),
            csat: i.csat,
            response_ms: None,
            priority: 0,
            summary: i.summary.clone(),
            ..Default::default()
        };
        sqlx::query(
            "INSERT INTO interactions (id, customer_id, channel, agent, started_ms, ended_ms, \
             transcript, intents, slots, sentiment, outcome, handled_by, csat, response_ms, \
             priority, summary) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,NULL,0,$14) \
             ON CONFLICT (id) DO UPDATE SET customer_id = excluded.customer_id, \
             channel = excluded.channel, agent = excluded.agent, \
             started_ms = excluded.started_ms, ended_ms = excluded.ended_ms, \
             transcript = excluded.transcript, intents = excluded.intents, \
             slots = excluded.slots, sentiment = excluded.sentiment, outcome = excluded.outcome, \
             handled_by = excluded.handled_by, csat = excluded.csat, summary = excluded.summary",
        )
        .bind(&rec.id)
        .bind(rec.customer_id.clone())
        .bind(&rec.channel)
        .bind(&rec.agent)
        .bind(rec.started_ms)
        .bind(rec.ended_ms)
        .bind(store.seal(
            &format!("interactions.transcript/{}", rec.id),
            &serde_json::to_string(&rec.transcript)?,
        ))
        .bind(serde_json::to_string(&rec.intents)?)
        .bind(store.seal(
            &format!("interactions.slots/{}", rec.id),
            &serde_json::to_string(&rec.slots)?,
        ))
        .bind(serde_json::to_string(&rec.sentiment)?)
        .bind(&rec.outcome)
        .bind(&rec.handled_by)
        .bind(rec.csat)
        .bind(store.seal(&format!("interactions.summary/{}", rec.id), &rec.summary))
        .execute(&mut *tx)
        .await?;
        n.interactions += 1;
    }
    tx.commit().await?;
    Ok(n)
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SeedCounts {
    pub customers: usize,
    pub accounts: usize,
    pub orders: usize,
    pub interactions: usize,
}
