-- Charter's event log on PostgreSQL (migration 1).
-- One row per frame: `frame` holds the file log's frame bytes unchanged
-- (header, seq, previous hash, JSON payload, hash), so the hash chain is
-- the file log's and an export of `frame` in seq order after the log
-- magic verifies with `charter audit verify`. `kind`, `run` and `plugin`
-- are copies of the payload's fields for filtered reads; a reader checks
-- every row it returns against the decoded frame.
CREATE TABLE charter_events (
    log     TEXT   NOT NULL,
    seq     BIGINT NOT NULL CHECK (seq > 0),
    time_ms BIGINT NOT NULL,
    kind    TEXT   NOT NULL,
    run     TEXT,
    plugin  TEXT,
    frame   BYTEA  NOT NULL,
    PRIMARY KEY (log, seq)
);
CREATE INDEX charter_events_run ON charter_events (log, run, seq) WHERE run IS NOT NULL;
CREATE INDEX charter_events_kind ON charter_events (log, kind, seq);
