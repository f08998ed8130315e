-- Which data keys have sealed rows (store/seal.rs): a node that lacks one
-- refuses to start; `attendant db rekey` re-seals everything with the
-- current key and forgets the others.
CREATE TABLE data_keys (
    id TEXT PRIMARY KEY,
    added_ms BIGINT NOT NULL
);
