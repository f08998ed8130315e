-- Learning from calls. A supervisor labels a turn from the review queue: an
-- existing intent, a new intent, a knowledge-base gap or noise (the turn's
-- text, secrets already masked, sealed like the transcript). `attendant
-- agent retrain` turns intent labels into a new agent version: the examples
-- learned on top of the agent's files (sealed), the evaluation gate's
-- before/after report, and whether it was promoted. `agent_current` says
-- which version every node serves (0: the files alone); rollback rewrites it.

CREATE TABLE labels (
    id TEXT PRIMARY KEY,
    interaction_id TEXT NOT NULL,
    turn BIGINT NOT NULL,
    text TEXT NOT NULL,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    labelled_by TEXT NOT NULL,
    labelled_ms BIGINT NOT NULL
);

CREATE TABLE agent_versions (
    id TEXT PRIMARY KEY,
    agent TEXT NOT NULL,
    version BIGINT NOT NULL,
    examples TEXT NOT NULL,
    report TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    promoted BIGINT NOT NULL
);
CREATE UNIQUE INDEX agent_versions_by_agent ON agent_versions (agent, version);

CREATE TABLE agent_current (
    agent TEXT PRIMARY KEY,
    version BIGINT NOT NULL,
    changed_ms BIGINT NOT NULL
);
