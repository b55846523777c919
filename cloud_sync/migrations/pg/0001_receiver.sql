-- The receiver's schema on PostgreSQL: the same tables and keys as on SQLite.
-- Every key starts with the gateway, so the tables can later be partitioned (or distributed, Citus)
-- by gateway without changing a key; see the README's "Scaling the receiver".
CREATE TABLE gateways (
    gateway text PRIMARY KEY,
    public_key text NOT NULL,
    token_sha256 text UNIQUE,          -- hex SHA-256 of the gateway's bearer token; NULL: none issued
    enrolled_ms bigint NOT NULL,
    revoked_ms bigint                  -- set: its batches are refused (403); its credits stay
);
-- No foreign key to gateways here: a credit is only inserted by a batch holding its gateway's row
-- (locked, found, active), and a per-row RI trigger would cost PostgreSQL about a fifth of its
-- work per credit. Gateways are never deleted (revocation keeps the row).
CREATE TABLE credits (
    gateway text NOT NULL,
    meter text NOT NULL,
    seq bigint NOT NULL,
    kind text NOT NULL,
    start bigint NOT NULL,
    wh bigint NOT NULL,
    hash text NOT NULL,
    wire text NOT NULL,                -- the wire credit as verified (JSON text)
    received_ms bigint NOT NULL,
    PRIMARY KEY (gateway, meter, seq)
);
-- The credits of one quarter-hour, to check that corrections add up.
CREATE INDEX credits_by_start ON credits (gateway, meter, start);
CREATE TABLE batches (
    gateway text NOT NULL REFERENCES gateways (gateway),
    batch_key text NOT NULL,
    request_sha256 text NOT NULL,
    response text NOT NULL,
    received_ms bigint NOT NULL,
    PRIMARY KEY (gateway, batch_key)
);
CREATE TABLE pull_cursors (
    gateway text PRIMARY KEY REFERENCES gateways (gateway),
    cursor bigint NOT NULL,            -- the gateway's pull API cursor: every credit up to it is stored
    updated_ms bigint NOT NULL
);
