//! The customer store: customers, their accounts and orders, every
//! interaction, tickets, hand-off packets and the proactive-message outbox.
//!
//! One schema (`migrations/`) in portable SQL runs on SQLite (the default: an
//! embedded file created and migrated on first use) and on PostgreSQL (when a
//! `postgres://` URL is configured), through sqlx's `Any` driver. Money is in
//! cents, instants in Unix milliseconds, so nothing depends on a database's
//! own date or decimal types.
//!
//! The dialogue runs synchronously inside a call's turn; [`Store::wait`] lets
//! it read and write without owning a runtime.

mod access;
mod bank;
mod bus;
mod events;
pub use bank::LOCKED_EVENT;
pub use bus::NodeRow;
mod calls;
mod history;
mod learning;
pub use learning::{AgentVersion, Label, LabelKind};
mod outbox;
mod pin;
mod seal;
pub use pin::{hash_pin, Guard, PIN_LOCK_MS, PIN_MAX_FAILURES};
pub mod seed;

pub use access::TokenInfo;
pub use seal::{new_key, Keyring, SealError, KEYS_ENV};

use std::future::Future;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("bad database URL {0:?}: expected sqlite://PATH, sqlite::memory: or postgres://…")]
    Url(String),
    #[error("cannot create {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("stored JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("seed file {path}: {message}")]
    Seed { path: String, message: String },
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error(
        "the database holds data sealed with data key(s) {0:?}, which this node lacks: \
         add them to its keyring (after the key that seals) or run `attendant db rekey` where they are"
    )]
    MissingKeys(Vec<String>),
}

pub type Result<T> = std::result::Result<T, StoreError>;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What a PIN check found.
#[derive(Debug, Clone)]
pub enum Verification {
    Verified(Account),
    NoMatch,
    /// No match, and this attempt locked these accounts (an alert).
    LockedNow(Vec<String>),
}

/// Masks all but the last two digits of a phone number for logs and records.
pub fn mask_phone(n: &str) -> String {
    let digits = n.chars().filter(|c| c.is_ascii_digit()).count();
    let mut seen = 0;
    n.chars()
        .map(|c| {
            if c.is_ascii_digit() {
                seen += 1;
                if seen + 2 > digits {
                    c
                } else {
                    '*'
                }
            } else {
                c
            }
        })
        .collect()
}

/// Phone numbers are compared in E.164-ish form: `+` and digits only.
pub fn normalize_phone(n: &str) -> String {
    let digits: String = n.chars().filter(|c| c.is_ascii_digit()).collect();
    if digits.is_empty() {
        String::new()
    } else {
        format!("+{digits}")
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Customer {
    pub id: String,
    pub name: String,
    pub language: String,
    pub tier: String,
    pub lifetime_value: f64,
    pub predicted_value: f64,
    pub customer_since: String,
    pub consent_sms: bool,
    pub consent_calls: bool,
    pub reviews_left: i64,
    /// Numbers on record, masked (the packet leaves the building).
    pub phones_masked: Vec<String>,
}

impl Customer {
    pub fn first_name(&self) -> &str {
        self.name.split_whitespace().next().unwrap_or("")
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Account {
    pub id: String,
    pub customer_id: String,
    pub kind: String,
    pub currency: String,
    pub balance: f64,
    pub available: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Transaction {
    pub day: String,
    pub description: String,
    pub amount: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Card {
    pub last4: String,
    pub account_id: String,
    pub kind: String,
    pub status: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LoanProduct {
    pub kind: String,
    pub rate: f64,
    pub max_amount: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Loan {
    pub id: String,
    pub kind: String,
    pub amount: f64,
    pub status: String,
    pub updated: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Order {
    pub id: String,
    pub customer_id: String,
    pub item: String,
    pub status: String,
    pub placed: String,
    pub promised: Option<String>,
    pub eta: Option<String>,
    pub delivered: Option<String>,
    pub total: f64,
    pub currency: String,
    pub address: String,
    pub reviewed: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ReturnRecord {
    pub id: String,
    pub order_id: String,
    pub reason: String,
    pub status: String,
    pub refund: f64,
    pub created_ms: i64,
}

/// One line of a conversation, as stored and as handed to a human.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Utterance {
    /// "caller" or "bot".
    pub speaker: String,
    pub text: String,
    /// Unix milliseconds.
    pub at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtmf: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SentimentSample {
    pub turn: u32,
    pub score: f32,
    pub label: String,
}

impl Interaction {
    /// Fills `turns` from the row's outcome.
    pub fn with_turns(mut self, turns: impl FnOnce(&str) -> Vec<LearnedTurn>) -> Self {
        self.turns = turns(&self.outcome);
        self
    }
}

/// One caller turn as the bot understood and handled it: what a reviewer
/// labels and a retrained model learns from.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LearnedTurn {
    pub turn: u32,
    /// What the caller said (digits of secret answers masked).
    pub text: String,
    /// The top intents with their probabilities, best first.
    pub intents: Vec<(String, f32)>,
    /// The intent acted on (`None`: out of scope).
    pub intent: Option<String>,
    /// The number the out-of-scope rule judged.
    pub scope_score: f32,
    /// Slots filled this turn (secret ones masked).
    pub slots: std::collections::BTreeMap<String, String>,
    /// The bot's action (collect:SLOT, answer:ARTICLE, fallback, …).
    pub action: String,
    /// What came of it: fell_back, re_asked, reprompted, transferred,
    /// continued; for the last turn, the call's outcome.
    pub followed: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Interaction {
    pub id: String,
    pub customer_id: Option<String>,
    pub channel: String,
    pub agent: String,
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
    pub transcript: Vec<Utterance>,
    pub intents: Vec<String>,
    pub slots: std::collections::BTreeMap<String, String>,
    pub sentiment: Vec<SentimentSample>,
    /// resolved, transferred, abandoned, …
    pub outcome: String,
    /// "bot" or "human".
    pub handled_by: String,
    pub csat: Option<i64>,
    /// Mean voice-to-voice response time of the call.
    pub response_ms: Option<i64>,
    pub priority: i64,
    pub summary: String,
    /// The desk agent who took the call, if one did.
    #[serde(default)]
    pub human_agent: Option<String>,
    /// On hold for the desk, when the call was sent there.
    #[serde(default)]
    pub wait_ms: Option<i64>,
    /// Caller and desk agent talking.
    #[serde(default)]
    pub talk_ms: Option<i64>,
    /// Each caller turn, for review and retraining.
    #[serde(default)]
    pub turns: Vec<LearnedTurn>,
    /// The language the call was held in (ISO 639-1).
    #[serde(default = "english")]
    pub language: String,
}

fn english() -> String {
    "en".into()
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Ticket {
    pub id: String,
    pub customer_id: Option<String>,
    pub interaction_id: Option<String>,
    pub queue: String,
    pub subject: String,
    pub body: String,
    pub status: String,
    pub created_ms: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Handoff {
    pub call_id: String,
    pub packet: serde_json::Value,
    pub created_ms: i64,
    /// pending, delivered, or disabled (no webhook configured).
    pub webhook_status: String,
    pub attempts: i64,
    pub next_attempt_ms: i64,
    pub last_error: String,
    pub delivered_ms: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Thread {
    pub id: String,
    pub customer_id: String,
    pub rule: String,
    pub step: String,
    pub vars: std::collections::BTreeMap<String, String>,
    /// open or closed.
    pub status: String,
    pub created_ms: i64,
    pub updated_ms: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct OutboxMessage {
    pub id: String,
    pub dedupe_key: String,
    pub thread_id: Option<String>,
    pub customer_id: String,
    /// sms or call.
    pub channel: String,
    /// Stored for sending; masked whenever shown.
    #[serde(skip_serializing)]
    pub recipient: String,
    pub body: String,
    /// pending, sent, failed (gave up).
    pub status: String,
    pub attempts: i64,
    pub next_attempt_ms: i64,
    pub last_error: String,
    pub created_ms: i64,
    pub sent_ms: Option<i64>,
    pub provider_id: Option<String>,
}

pub(crate) fn cents(v: f64) -> i64 {
    (v * 100.0).round() as i64
}

fn money(c: i64) -> f64 {
    c as f64 / 100.0
}

fn customer_of(r: &AnyRow) -> Result<Customer> {
    Ok(Customer {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        language: r.try_get("language")?,
        tier: r.try_get("tier")?,
        lifetime_value: money(r.try_get("lifetime_value_cents")?),
        predicted_value: money(r.try_get("predicted_value_cents")?),
        customer_since: r.try_get("customer_since")?,
        consent_sms: r.try_get::<i64, _>("consent_sms")? != 0,
        consent_calls: r.try_get::<i64, _>("consent_calls")? != 0,
        reviews_left: r.try_get("reviews_left")?,
        phones_masked: Vec::new(),
    })
}

fn order_of(r: &AnyRow) -> Result<Order> {
    Ok(Order {
        id: r.try_get("id")?,
        customer_id: r.try_get("customer_id")?,
        item: r.try_get("item")?,
        status: r.try_get("status")?,
        placed: r.try_get("placed")?,
        promised: r.try_get("promised")?,
        eta: r.try_get("eta")?,
        delivered: r.try_get("delivered")?,
        total: money(r.try_get("total_cents")?),
        currency: r.try_get("currency")?,
        address: r.try_get("address")?,
        reviewed: r.try_get::<i64, _>("reviewed")? != 0,
    })
}

fn account_of(r: &AnyRow) -> Result<Account> {
    Ok(Account {
        id: r.try_get("id")?,
        customer_id: r.try_get("customer_id")?,
        kind: r.try_get("kind")?,
        currency: r.try_get("currency")?,
        balance: money(r.try_get("balance_cents")?),
        available: money(r.try_get("available_cents")?),
    })
}

/// A database of its own for one test run: a fresh SQLite file under `dir`,
/// or, when `DATABASE_URL` names a PostgreSQL server, a new database created
/// on it (so parallel tests and earlier runs never see each other's rows).
pub async fn scratch_url(dir: &Path) -> Result<String> {
    let base = std::env::var("DATABASE_URL").unwrap_or_default();
    scratch_url_on(&base, dir).await
}

/// A database of its own on the PostgreSQL server `base` names, or a fresh
/// SQLite file under `dir` when `base` is empty. Anything else is refused:
/// a mangled URL must fail the run, not quietly test SQLite instead.
pub async fn scratch_url_on(base: &str, dir: &Path) -> Result<String> {
    let base = base.trim().to_string();
    if base.is_empty() {
        return Ok(format!("sqlite://{}", dir.join("attendant.db").display()));
    }
    if !(base.starts_with("postgres://") || base.starts_with("postgresql://")) {
        return Err(StoreError::Url(base));
    }
    sqlx::any::install_default_drivers();
    let mut url = url::Url::parse(&base).map_err(|_| StoreError::Url(base.clone()))?;
    let name = format!("attendant_t_{}", uuid::Uuid::new_v4().simple());
    let pool = AnyPoolOptions::new()
        .max_connections(1)
        .connect(&base)
        .await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&pool)
        .await?;
    pool.close().await;
    url.set_path(&format!("/{name}"));
    Ok(url.to_string())
}

/// A table of work that nodes sharing the store lease before doing it.
pub(crate) struct LeasedWork {
    table: &'static str,
    key: &'static str,
    /// The column that is 'pending' while the work is not done.
    status: &'static str,
    /// Oldest first by this column.
    order: &'static str,
}

pub(crate) const HANDOFF_WORK: LeasedWork = LeasedWork {
    table: "handoffs",
    key: "call_id",
    status: "webhook_status",
    order: "next_attempt_ms",
};

pub(crate) const EVENT_WORK: LeasedWork = LeasedWork {
    table: "events",
    key: "id",
    status: "status",
    order: "received_ms",
};

const OUTBOX_WORK: LeasedWork = LeasedWork {
    table: "outbox",
    key: "id",
    status: "status",
    order: "created_ms",
};

/// A connection pool plus the runtime it lives on.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    keys: Keyring,
    handle: tokio::runtime::Handle,
    pub url_kind: &'static str,
    /// This process, as the owner of the work it leases (host, pid and a
    /// random part, so a restarted node is a new owner).
    node: std::sync::Arc<str>,
    /// The PostgreSQL URL, for listening connections (never logged: it may
    /// hold a password).
    shared_url: Option<std::sync::Arc<str>>,
}

impl Store {
    /// Opens (creating and migrating if needed) the database at `url` with
    /// the keyring `ATTENDANT_DATA_KEYS` or the default key file names
    /// ([`Keyring::for_store`]). Must be called inside a Tokio runtime; that
    /// runtime serves later queries.
    pub async fn open(url: &str) -> Result<Store> {
        Store::open_with(url, Keyring::for_store(url, "")?).await
    }

    /// Opens the database at `url`, sealing with `keys`; refuses when the
    /// database holds data sealed with a key `keys` lacks.
    pub async fn open_with(url: &str, keys: Keyring) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let (url, kind) = if let Some(path) = url.strip_prefix("sqlite://") {
            let path = path.split('?').next().unwrap_or(path);
            if let Some(dir) = Path::new(path)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir).map_err(|e| StoreError::Dir {
                    path: dir.display().to_string(),
                    source: e,
                })?;
            }
            let sep = if url.contains('?') { '&' } else { '?' };
            (format!("{url}{sep}mode=rwc"), "sqlite")
        } else if url == "sqlite::memory:" {
            (url.to_string(), "sqlite")
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (url.to_string(), "postgres")
        } else {
            return Err(StoreError::Url(url.to_string()));
        };
        // One in-memory SQLite database exists per connection.
        let max = if url == "sqlite::memory:" { 1 } else { 8 };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .connect(&url)
            .await?;
        if kind == "sqlite" {
            // Concurrent readers beside the one writer; wait instead of failing.
            sqlx::query("PRAGMA journal_mode=WAL")
                .execute(&pool)
                .await
                .ok();
            sqlx::query("PRAGMA busy_timeout=5000")
                .execute(&pool)
                .await
                .ok();
        }
        MIGRATOR.run(&pool).await?;
        sqlx::query(
            "INSERT INTO data_keys (id, added_ms) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
        )
        .bind(keys.current_id())
        .bind(now_ms())
        .execute(&pool)
        .await?;
        let missing: Vec<String> = sqlx::query("SELECT id FROM data_keys ORDER BY added_ms")
            .fetch_all(&pool)
            .await?
            .iter()
            .map(|r| r.try_get::<String, _>("id"))
            .collect::<std::result::Result<Vec<_>, _>>()?
            .into_iter()
            .filter(|id| !keys.ids().any(|k| k == id))
            .collect();
        if !missing.is_empty() {
            return Err(StoreError::MissingKeys(missing));
        }
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "node".into());
        let node = format!("{host}-{}-{:08x}", std::process::id(), fastrand::u32(..));
        Ok(Store {
            pool,
            keys,
            handle: tokio::runtime::Handle::current(),
            url_kind: kind,
            node: node.into(),
            shared_url: (kind == "postgres").then(|| url.as_str().into()),
        })
    }

    /// Who this process is when it leases work (see `lease_due_handoffs`).
    pub fn node_id(&self) -> &str {
        &self.node
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The id of the data key that seals (never the key).
    pub fn key_id(&self) -> &str {
        self.keys.current_id()
    }

    fn seal(&self, place: &str, plain: &str) -> String {
        self.keys.seal(place, plain)
    }

    /// Runs a store future to completion from synchronous code: inside a
    /// multi-threaded runtime by lending the current worker, elsewhere on the
    /// store's own runtime.
    pub fn wait<F: Future>(&self, f: F) -> F::Output {
        match tokio::runtime::Handle::try_current() {
            Ok(h) => tokio::task::block_in_place(|| h.block_on(f)),
            Err(_) => self.handle.block_on(f),
        }
    }

    /// Leases up to 20 pending, due, unleased rows of `work`'s table to `owner` until `now + lease_ms`, in one
    /// statement; returns them. PostgreSQL nodes skip rows another node is
    /// leasing at this instant (`FOR UPDATE SKIP LOCKED`); SQLite has one
    /// writer.
    pub(crate) async fn lease(
        &self,
        work: &LeasedWork,
        owner: &str,
        now: i64,
        lease_ms: i64,
    ) -> Result<Vec<AnyRow>> {
        let LeasedWork {
            table,
            key,
            status,
            order,
        } = work;
        let skip = if self.url_kind == "postgres" {
            " FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let sql = format!(
            "UPDATE {table} SET lease_owner = $1, lease_until_ms = $2 WHERE {key} IN (\
             SELECT {key} FROM {table} WHERE {status} = 'pending' AND next_attempt_ms <= $3 \
             AND (lease_until_ms IS NULL OR lease_until_ms <= $3) \
             ORDER BY {order} LIMIT 20{skip}) RETURNING *"
        );
        Ok(sqlx::query(&sql)
            .bind(owner)
            .bind(now + lease_ms)
            .bind(now)
            .fetch_all(&self.pool)
            .await?)
    }

    // ---- customers -------------------------------------------------------

    pub async fn customer_count(&self) -> Result<i64> {
        let r = sqlx::query("SELECT COUNT(*) AS n FROM customers")
            .fetch_one(&self.pool)
            .await?;
        Ok(r.try_get("n")?)
    }

    pub async fn customer(&self, id: &str) -> Result<Option<Customer>> {
        let row = sqlx::query("SELECT * FROM customers WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let mut c = customer_of(&row)?;
        let phones = sqlx::query("SELECT phone FROM customer_phones WHERE customer_id = $1")
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        for p in phones {
            c.phones_masked
                .push(mask_phone(&p.try_get::<String, _>("phone")?));
        }
        Ok(Some(c))
    }

    pub async fn customer_by_phone(&self, phone: &str) -> Result<Option<Customer>> {
        let p = normalize_phone(phone);
        if p.is_empty() {
            return Ok(None);
        }
        let row = sqlx::query("SELECT customer_id FROM customer_phones WHERE phone = $1")
            .bind(&p)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => self.customer(&r.try_get::<String, _>("customer_id")?).await,
            None => Ok(None),
        }
    }

    /// A number to reach the customer on (first on record), for outbound
    /// messages only.
    pub async fn phone_of(&self, customer_id: &str) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT phone FROM customer_phones WHERE customer_id = $1 ORDER BY phone LIMIT 1",
        )
        .bind(customer_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => Some(r.try_get("phone")?),
            None => None,
        })
    }

    pub async fn add_review(&self, customer_id: &str, order_id: Option<&str>) -> Result<()> {
        sqlx::query("UPDATE customers SET reviews_left = reviews_left + 1 WHERE id = $1")
            .bind(customer_id)
            .execute(&self.pool)
            .await?;
        if let Some(o) = order_id {
            sqlx::query("UPDATE orders SET reviewed = 1 WHERE id = $1")
                .bind(o)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    // ---- retail ----------------------------------------------------------

    pub async fn order(&self, id: &str) -> Result<Option<Order>> {
        let r = sqlx::query("SELECT * FROM orders WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(order_of).transpose()
    }

    /// Newest first.
    pub async fn orders_of(&self, customer_id: &str) -> Result<Vec<Order>> {
        let rows = sqlx::query(
            "SELECT * FROM orders WHERE customer_id = $1 ORDER BY placed DESC, id DESC",
        )
        .bind(customer_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(order_of).collect()
    }

    pub async fn set_order_address(&self, id: &str, address: &str) -> Result<()> {
        sqlx::query("UPDATE orders SET address = $1 WHERE id = $2")
            .bind(address)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn insert_return(&self, r: &ReturnRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO returns (id, order_id, reason, status, refund_cents, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&r.id)
        .bind(&r.order_id)
        .bind(&r.reason)
        .bind(&r.status)
        .bind(cents(r.refund))
        .bind(r.created_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn returns_of_order(&self, order_id: &str) -> Result<Vec<ReturnRecord>> {
        let rows = sqlx::query("SELECT * FROM returns WHERE order_id = $1 ORDER BY created_ms")
            .bind(order_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ReturnRecord {
                    id: r.try_get("id")?,
                    order_id: r.try_get("order_id")?,
                    reason: r.try_get("reason")?,
                    status: r.try_get("status")?,
                    refund: money(r.try_get("refund_cents")?),
                    created_ms: r.try_get("created_ms")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_and_pins() {
        assert_eq!(normalize_phone("+1 (555) 555-0110"), "+15555550110");
        assert_eq!(normalize_phone("anonymous"), "");
    }

    /// A test URL with anything in front of it (a note a script printed)
    /// is refused rather than quietly replaced by SQLite.
    #[tokio::test]
    async fn scratch_urls_refuse_what_is_not_a_database() {
        let dir = tempfile::tempdir().unwrap();
        let empty = scratch_url_on("", dir.path()).await.unwrap();
        assert!(empty.starts_with("sqlite://"), "{empty}");
        let bad = "Removed stale pid file.\npostgres://a:b@127.0.0.1:5432/a";
        assert!(matches!(
            scratch_url_on(bad, dir.path()).await,
            Err(StoreError::Url(_))
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn migrates_seeds_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        // SQLite, or PostgreSQL when DATABASE_URL names one.
        let url = scratch_url(dir.path()).await.unwrap();
        let s = Store::open(&url).await.unwrap();
        seed::seed_text(&s, seed::DEMO_TOML, "db/demo.toml")
            .await
            .unwrap();
        // Opening again re-runs nothing and keeps the data.
        let s = Store::open(&url).await.unwrap();
        let c = s
            .customer_by_phone("+1 555 555 0110")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(c.first_name(), "Dana");
        assert!(c.phones_masked[0].ends_with("10") && c.phones_masked[0].contains('*'));
        let Verification::Verified(a) = s.verify_account("4561", "1234", None).await.unwrap()
        else {
            panic!("the demo PIN verifies")
        };
        assert!(a.balance > 0.0);
        assert!(matches!(
            s.verify_account("4561", "0000", None).await.unwrap(),
            Verification::NoMatch
        ));
        assert!(!s.transactions(&a.id, 3).await.unwrap().is_empty());
        // Events are taken once.
        let v = serde_json::json!({"x": 1});
        assert!(s.insert_event("e1", "k", None, &v, None).await.unwrap());
        assert!(!s.insert_event("e1", "k", None, &v, None).await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn seeding_the_demo_twice_keeps_what_calls_stored() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&scratch_url(dir.path()).await.unwrap())
            .await
            .unwrap();
        let first = seed::seed_text(&s, seed::DEMO_TOML, "db/demo.toml")
            .await
            .unwrap();
        let customers = s.customer_count().await.unwrap();
        // A call left an interaction and a return against demo rows.
        s.save_interaction(&Interaction {
            id: "call-after-seed".into(),
            customer_id: Some("C-2001".into()),
            channel: "voice".into(),
            outcome: "resolved".into(),
            ..Default::default()
        })
        .await
        .unwrap();
        s.insert_return(&ReturnRecord {
            id: "R-call".into(),
            order_id: "123456".into(),
            reason: "too loud".into(),
            status: "requested".into(),
            refund: 10.0,
            created_ms: 1,
        })
        .await
        .unwrap();
        let again = seed::seed_text(&s, seed::DEMO_TOML, "db/demo.toml")
            .await
            .expect("seeding twice");
        assert_eq!(again, first);
        assert_eq!(s.customer_count().await.unwrap(), customers);
        let history = s.interactions_of("C-2001", 50).await.unwrap();
        assert!(history.iter().any(|i| i.id == "call-after-seed"));
        let seeded = history.iter().filter(|i| i.id != "call-after-seed").count();
        assert_eq!(seeded, history.len() - 1, "no seeded row twice");
        let returns = s.returns_of_order("123456").await.unwrap();
        assert!(returns.iter().any(|r| r.id == "R-call"), "{returns:?}");
        assert!(matches!(
            s.verify_account("4561", "1234", None).await.unwrap(),
            Verification::Verified(_)
        ));
    }
}
