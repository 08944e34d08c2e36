-- Guichet store, version 3: bodies encrypted at rest (gateway/payloads.py).
-- payloads.content now holds nonce (12 bytes) ‖ AES-256-GCM ciphertext ‖ tag (16 bytes), the
-- body's SHA-256 as associated data. Its data key is kept apart, wrapped by the hub's master key
-- (RFC 3394), so that deleting the wrapped key erases the body. Bodies kept in clear by version 1
-- are sealed by the hub when it first opens the store with its master key.
CREATE TABLE payload_keys (
    sha256          TEXT PRIMARY KEY,      -- the body's SHA-256 (hex), the AEAD associated data
    key_id          TEXT NOT NULL,         -- the master key that wraps it (rotation)
    wrapped_key     BLOB NOT NULL          -- RFC 3394 AES key wrap of the 256-bit data key
);
CREATE INDEX payload_keys_key_id ON payload_keys (key_id);

CREATE TABLE payload_purges (
    sha256          TEXT PRIMARY KEY,      -- a body erased past retention
    purged_at       TEXT NOT NULL,
    leaf_index      INTEGER NOT NULL       -- its payload.purged evidence record
);
