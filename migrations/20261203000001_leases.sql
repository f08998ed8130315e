-- Work that must happen once when several nodes share this database: a node
-- leases a due hand-off delivery or outbox message (lease_owner, until
-- lease_until_ms) before sending it, so no other node sends it too; a dead
-- node's lease runs out and another node takes the work over.

ALTER TABLE handoffs ADD COLUMN lease_owner TEXT;
ALTER TABLE handoffs ADD COLUMN lease_until_ms BIGINT;
ALTER TABLE outbox ADD COLUMN lease_owner TEXT;
ALTER TABLE outbox ADD COLUMN lease_until_ms BIGINT;
CREATE INDEX handoffs_due ON handoffs (webhook_status, next_attempt_ms);
CREATE INDEX outbox_due ON outbox (status, next_attempt_ms);
