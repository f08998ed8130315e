-- The agent desk across nodes sharing this database: each node rewrites its
-- row every second and on every change — the callers it holds waiting for or
-- talking to an agent, who has the desk open there, its bot calls — so an
-- agent on any node sees and takes every caller. `version` grows with each
-- write (a reader keeps the newest); a row not refreshed for a few seconds
-- is a dead node's and is ignored.

CREATE TABLE desk_nodes (
    node TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    version BIGINT NOT NULL,
    state TEXT NOT NULL,
    seen_ms BIGINT NOT NULL
);
