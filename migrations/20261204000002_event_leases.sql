-- Business events are taken once (their id is unique) and then run through
-- the follow-up rules. A node that dies in between left the event recorded
-- but its threads never started: the event stays 'pending', leased to the
-- node that took it, until its rules have run; another node runs them once
-- the lease is over. Events recorded before this change are done.

ALTER TABLE events ADD COLUMN status TEXT NOT NULL DEFAULT 'done';
ALTER TABLE events ADD COLUMN next_attempt_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN lease_owner TEXT;
ALTER TABLE events ADD COLUMN lease_until_ms BIGINT;
CREATE INDEX events_due ON events (status, next_attempt_ms);
