-- Failed PIN attempts per account, across calls: after too many the account
-- cannot be verified by phone for a while (a person can still help).

CREATE TABLE pin_guard (
    account_id TEXT PRIMARY KEY,
    failures BIGINT NOT NULL DEFAULT 0,
    locked_until_ms BIGINT NOT NULL DEFAULT 0
);
