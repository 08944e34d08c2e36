-- Guichet store, version 1. One history for every backend: statements are portable SQL.
CREATE TABLE messages (
    id              TEXT PRIMARY KEY,      -- the sender's message id (UUID): the idempotency key
    sender          TEXT NOT NULL,
    type            TEXT NOT NULL,
    subject         TEXT NOT NULL,         -- case id, never a national number
    trace_id        TEXT NOT NULL,
    correlation_id  TEXT,
    received_at     TEXT NOT NULL,
    body_sha256     TEXT NOT NULL,
    leaf_index      INTEGER NOT NULL,
    receipt         TEXT NOT NULL          -- the signed receipt (JSON), given again to a retry
);
CREATE INDEX messages_subject ON messages (subject);

CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY,
    message_id      TEXT NOT NULL REFERENCES messages (id),
    receiver        TEXT NOT NULL,
    state           TEXT NOT NULL,         -- pending | delivering | delivered | retrying | dead
    payload_sha256  TEXT NOT NULL,
    content_type    TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    lease_until     TEXT,
    last_status     INTEGER,
    last_error      TEXT,
    delivered_at    TEXT,
    UNIQUE (message_id, receiver)
);
CREATE INDEX deliveries_due ON deliveries (state, next_attempt_at);

CREATE TABLE payloads (
    sha256          TEXT PRIMARY KEY,
    content         BLOB NOT NULL
);

CREATE TABLE evidence (
    leaf_index      INTEGER PRIMARY KEY,
    leaf_hash       BLOB NOT NULL,
    record          BLOB NOT NULL,         -- RFC 8785 canonical JSON: the leaf
    signed_at       TEXT NOT NULL,
    key_id          TEXT NOT NULL,
    signature       TEXT NOT NULL
);

CREATE TABLE checkpoints (
    tree_size       INTEGER PRIMARY KEY,
    root_hash       TEXT NOT NULL,
    time            TEXT NOT NULL,
    key_id          TEXT NOT NULL,
    signature       TEXT NOT NULL
);

CREATE TABLE cases (
    subject         TEXT PRIMARY KEY,
    competent_region TEXT,
    parties         TEXT NOT NULL,         -- JSON array of the parties that took part
    created_at      TEXT NOT NULL
);

CREATE TABLE artefacts (
    sha256          TEXT PRIMARY KEY,      -- schema and mapping files, every version ever used
    path            TEXT NOT NULL,
    content         BLOB NOT NULL
);
