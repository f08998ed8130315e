-- Each call's record (the JSON served at GET /calls/{id}), written as the
-- call goes, so a crash loses at most the turn in flight. Secrets are masked
-- before a record is built.

CREATE TABLE call_records (
    call_id TEXT PRIMARY KEY,
    record TEXT NOT NULL,
    started_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);

CREATE INDEX call_records_started ON call_records (started_ms);
