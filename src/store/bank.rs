//! The bank's data: PIN verification (with the lock-out of `pin`), accounts,
//! transactions, cards and loans.

use sqlx::Row;

use super::*;

/// The event kind written when wrong PINs lock an account.
pub const LOCKED_EVENT: &str = "account_locked";

impl Store {
    /// How many events of `kind` the store holds.
    pub async fn count_events(&self, kind: &str) -> Result<i64> {
        let r = sqlx::query("SELECT COUNT(*) AS n FROM events WHERE kind = $1")
            .bind(kind)
            .fetch_one(&self.pool)
            .await?;
        Ok(r.try_get("n")?)
    }

    /// The account ending in `last4` whose PIN matches, preferring the
    /// caller's own accounts when the caller is known. Locked accounts never
    /// match; a miss counts against every account ending in `last4` (across
    /// calls), and the answer never says which of these happened.
    pub async fn verify_account(
        &self,
        last4: &str,
        pin: &str,
        customer_id: Option<&str>,
    ) -> Result<Verification> {
        if last4.is_empty() {
            return Ok(Verification::NoMatch);
        }
        let rows = sqlx::query("SELECT * FROM accounts ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        let mut candidates = Vec::new();
        let mut found = None;
        for r in rows {
            let id: String = r.try_get("id")?;
            if !id.ends_with(last4) {
                continue;
            }
            candidates.push((id.clone(), r.try_get::<String, _>("customer_id")?));
            if self.pin_guard(&id).await? == Guard::Locked {
                continue;
            }
            let hash: String = r.try_get("pin_hash")?;
            let (ok, upgrade) = pin::pin_matches(&hash, &id, pin);
            if !ok {
                continue;
            }
            if upgrade {
                self.set_pin_hash(&id, &hash_pin(pin)).await?;
            }
            let a = account_of(&r)?;
            let mine = customer_id.is_some_and(|c| c == a.customer_id);
            if mine || found.is_none() {
                found = Some(a);
            }
            if mine {
                break;
            }
        }
        if let Some(a) = found {
            self.pin_succeeded(&a.id).await?;
            return Ok(Verification::Verified(a));
        }
        let mut locked = Vec::new();
        for (id, customer) in candidates {
            if self.pin_guard(&id).await? == Guard::Open && self.pin_failed(&id).await? {
                // An ops event (and, from it, the lock-out metric): who was
                // locked and for how long, never the account number.
                let tail: String = id
                    .chars()
                    .rev()
                    .take(4)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                let masked = format!("****{tail}");
                let payload = serde_json::json!({
                    "account": masked,
                    "failures": PIN_MAX_FAILURES,
                    "locked_for_ms": PIN_LOCK_MS,
                });
                let event = uuid::Uuid::new_v4().to_string();
                self.insert_event(&event, LOCKED_EVENT, Some(&customer), &payload, None)
                    .await?;
                locked.push(id);
            }
        }
        Ok(if locked.is_empty() {
            Verification::NoMatch
        } else {
            Verification::LockedNow(locked)
        })
    }

    /// The card ending in `last4` on one of `customer_id`'s accounts.
    pub async fn card_of(&self, customer_id: &str, last4: &str) -> Result<Option<Card>> {
        let r = sqlx::query(
            "SELECT cards.* FROM cards JOIN accounts ON cards.account_id = accounts.id \
             WHERE accounts.customer_id = $1 AND cards.last4 = $2",
        )
        .bind(customer_id)
        .bind(last4)
        .fetch_optional(&self.pool)
        .await?;
        r.map(|r| {
            Ok(Card {
                last4: r.try_get("last4")?,
                account_id: r.try_get("account_id")?,
                kind: r.try_get("kind")?,
                status: r.try_get("status")?,
            })
        })
        .transpose()
    }

    pub async fn account(&self, id: &str) -> Result<Option<Account>> {
        let r = sqlx::query("SELECT * FROM accounts WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(account_of).transpose()
    }

    pub async fn accounts_of(&self, customer_id: &str) -> Result<Vec<Account>> {
        let rows = sqlx::query("SELECT * FROM accounts WHERE customer_id = $1 ORDER BY id")
            .bind(customer_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(account_of).collect()
    }

    pub async fn transactions(&self, account_id: &str, limit: i64) -> Result<Vec<Transaction>> {
        let rows = sqlx::query(
            "SELECT * FROM transactions WHERE account_id = $1 ORDER BY day DESC, id DESC LIMIT $2",
        )
        .bind(account_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Transaction {
                    day: r.try_get("day")?,
                    description: r.try_get("description")?,
                    amount: money(r.try_get("amount_cents")?),
                })
            })
            .collect()
    }

    pub async fn block_card(&self, account_id: &str, last4: &str) -> Result<()> {
        sqlx::query("UPDATE cards SET status = 'blocked' WHERE account_id = $1 AND last4 = $2")
            .bind(account_id)
            .bind(last4)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn loan_product(&self, kind: &str) -> Result<Option<LoanProduct>> {
        let r = sqlx::query("SELECT * FROM loan_products WHERE kind = $1")
            .bind(kind)
            .fetch_optional(&self.pool)
            .await?;
        r.map(|r| {
            Ok(LoanProduct {
                kind: r.try_get("kind")?,
                rate: r.try_get("rate")?,
                max_amount: money(r.try_get("max_amount_cents")?),
            })
        })
        .transpose()
    }

    pub async fn loans_of(&self, customer_id: &str) -> Result<Vec<Loan>> {
        let rows = sqlx::query("SELECT * FROM loans WHERE customer_id = $1 ORDER BY updated DESC")
            .bind(customer_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Loan {
                    id: r.try_get("id")?,
                    kind: r.try_get("kind")?,
                    amount: money(r.try_get("amount_cents")?),
                    status: r.try_get("status")?,
                    updated: r.try_get("updated")?,
                })
            })
            .collect()
    }
}
