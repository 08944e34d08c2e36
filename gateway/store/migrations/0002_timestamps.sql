-- Guichet store, version 2: RFC 3161 timestamps of checkpoints.
-- A row per checkpoint sent (or to be sent) to a timestamping authority: while token is NULL the
-- checkpoint waits in the queue, and the queue survives a restart. Kept forever, like checkpoints.
CREATE TABLE checkpoint_timestamps (
    tree_size       INTEGER PRIMARY KEY REFERENCES checkpoints (tree_size),
    queued_at       TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    last_error      TEXT,                  -- our own words, e.g. "tsa-1: HTTP 503"
    tsa_url         TEXT,                  -- the authority that granted the token
    token           BLOB,                  -- DER TimeStampToken (CMS ContentInfo), RFC 3161
    gen_time        TEXT,                  -- the token's genTime, as the authority wrote it
    stamped_at      TEXT
);
CREATE INDEX checkpoint_timestamps_waiting ON checkpoint_timestamps (next_attempt_at)
    WHERE token IS NULL
