-- Customer store. Portable SQL: runs unchanged on SQLite and PostgreSQL.
-- Money is in cents (BIGINT), instants are Unix milliseconds (BIGINT),
-- calendar days are 'YYYY-MM-DD' text, flags are 0/1, JSON is text.

CREATE TABLE customers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    language TEXT NOT NULL DEFAULT 'en',
    tier TEXT NOT NULL DEFAULT 'standard',
    lifetime_value_cents BIGINT NOT NULL DEFAULT 0,
    predicted_value_cents BIGINT NOT NULL DEFAULT 0,
    customer_since TEXT NOT NULL,
    dob TEXT,
    consent_sms BIGINT NOT NULL DEFAULT 0,
    consent_calls BIGINT NOT NULL DEFAULT 0,
    reviews_left BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE customer_phones (
    phone TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers(id)
);

CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers(id),
    kind TEXT NOT NULL,
    currency TEXT NOT NULL,
    balance_cents BIGINT NOT NULL,
    available_cents BIGINT NOT NULL,
    pin_hash TEXT NOT NULL
);

CREATE TABLE transactions (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    day TEXT NOT NULL,
    description TEXT NOT NULL,
    amount_cents BIGINT NOT NULL
);
CREATE INDEX transactions_account ON transactions(account_id, day);

CREATE TABLE cards (
    last4 TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    kind TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'active'
);

CREATE TABLE loan_products (
    kind TEXT PRIMARY KEY,
    rate DOUBLE PRECISION NOT NULL,
    max_amount_cents BIGINT NOT NULL
);

CREATE TABLE loans (
    id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers(id),
    kind TEXT NOT NULL,
    amount_cents BIGINT NOT NULL,
    status TEXT NOT NULL,
    updated TEXT NOT NULL
);

CREATE TABLE orders (
    id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers(id),
    item TEXT NOT NULL,
    status TEXT NOT NULL,
    placed TEXT NOT NULL,
    promised TEXT,
    eta TEXT,
    delivered TEXT,
    total_cents BIGINT NOT NULL,
    currency TEXT NOT NULL,
    address TEXT NOT NULL DEFAULT '',
    reviewed BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX orders_customer ON orders(customer_id, placed);

CREATE TABLE returns (
    id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL REFERENCES orders(id),
    reason TEXT NOT NULL,
    status TEXT NOT NULL,
    refund_cents BIGINT NOT NULL,
    created_ms BIGINT NOT NULL
);

-- Every call: who, when, what was said and decided, and how it ended.
CREATE TABLE interactions (
    id TEXT PRIMARY KEY,
    customer_id TEXT,
    channel TEXT NOT NULL,
    agent TEXT NOT NULL,
    started_ms BIGINT NOT NULL,
    ended_ms BIGINT,
    transcript TEXT NOT NULL,
    intents TEXT NOT NULL,
    slots TEXT NOT NULL,
    sentiment TEXT NOT NULL,
    outcome TEXT NOT NULL,
    handled_by TEXT NOT NULL,
    csat BIGINT,
    response_ms BIGINT,
    priority BIGINT NOT NULL DEFAULT 0,
    summary TEXT NOT NULL DEFAULT ''
);
CREATE INDEX interactions_customer ON interactions(customer_id, started_ms);

CREATE TABLE tickets (
    id TEXT PRIMARY KEY,
    customer_id TEXT,
    interaction_id TEXT,
    queue TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);

-- Hand-off packets and their webhook delivery state (an outbox).
CREATE TABLE handoffs (
    call_id TEXT PRIMARY KEY,
    packet TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    webhook_status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    delivered_ms BIGINT
);

CREATE TABLE events (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    customer_id TEXT,
    payload TEXT NOT NULL,
    received_ms BIGINT NOT NULL
);

-- A proactive conversation: which rule started it and where it stands.
CREATE TABLE threads (
    id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    rule TEXT NOT NULL,
    step TEXT NOT NULL,
    vars TEXT NOT NULL,
    status TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);

-- Outgoing proactive messages. dedupe_key makes a message unique per cause,
-- so a repeated event or a crash between insert and send never sends twice.
CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    dedupe_key TEXT NOT NULL UNIQUE,
    thread_id TEXT,
    customer_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    recipient TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    created_ms BIGINT NOT NULL,
    sent_ms BIGINT,
    provider_id TEXT
);

CREATE TABLE inbound_messages (
    id TEXT PRIMARY KEY,
    thread_id TEXT,
    customer_id TEXT,
    channel TEXT NOT NULL,
    body TEXT NOT NULL,
    sentiment DOUBLE PRECISION,
    received_ms BIGINT NOT NULL
);
