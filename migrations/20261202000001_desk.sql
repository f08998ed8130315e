-- The agent desk: who took a call handed to a human, how long the caller
-- waited on hold, and how long they talked (NULL for calls never sent there).

ALTER TABLE interactions ADD COLUMN human_agent TEXT;
ALTER TABLE interactions ADD COLUMN wait_ms BIGINT;
ALTER TABLE interactions ADD COLUMN talk_ms BIGINT;
